//! The observed-service metrics through a real Prometheus, on real traffic.
//!
//! Three network namespaces stand in for pods on a node (scripts/netns-pods.sh):
//! a client (curl) in pod C calls a proxy nginx in pod A, which passes every
//! request to an upstream nginx in pod B (one connection per request on both
//! sides, no retries). One host-mode agent in the root namespace captures the
//! pods' host-side interfaces, names the three addresses with its service map
//! and serves its metrics on `--metrics-listen`; a Prometheus on loopback
//! scrapes it every second and evaluates deploy/prometheus/wasmtap-alerts.yaml.
//!
//! Everything is checked through Prometheus's HTTP API, against what the client
//! saw (curl's status codes) and what the proxy logged (its access log, one line
//! per request with the upstream's address and status): 20 good requests give
//! exactly the two service-graph edges client→proxy and proxy→upstream, 20 each,
//! no failures and no consecutive-failures alert; 10 requests to /fail (the
//! upstream answers 500, the proxy passes it on) give 10 failed calls on each
//! edge, 10 consecutive failures on both servers, and WasmtapConsecutiveFailures
//! firing for both (after the rule's `for`, read from Prometheus's rules API).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{LiveAgent, bin, free_port, root};

/// Namespaces wtpm{a,b,c}, host-side interfaces wtpmh{a,b,c} (modes.rs uses numeric tags).
const TAG: &str = "pm";
/// Pods at 10.77.78.{1,2,3}.
const NET: u32 = 78;
/// Deadline of every wait (a busy 2-core machine).
const WAIT: Duration = Duration::from_secs(60);
/// The alert under test, from deploy/prometheus/wasmtap-alerts.yaml.
const ALERT: &str = "WasmtapConsecutiveFailures";

fn ns(pod: char) -> String {
    format!("wt{TAG}{pod}")
}

fn ip(host: u8) -> String {
    format!("10.77.{NET}.{host}")
}

/// Everything the test starts, torn down by Drop even when an assertion fails.
struct Setup {
    dir: PathBuf,
    agent: Option<LiveAgent>,
    prometheus: Option<Child>,
    prom_port: u16,
    metrics_port: u16,
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(agent) = self.agent.take() {
            let _ = agent.stop();
        }
        if let Some(mut p) = self.prometheus.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
        // The scripts only kill the pid in the pid file: no namespace needed.
        let _ = Command::new(root().join("scripts/nginx-proxy.sh"))
            .arg("stop")
            .arg(self.dir.join("proxy"))
            .status();
        let _ = Command::new(root().join("scripts/nginx-serve.sh"))
            .arg("stop")
            .arg(self.dir.join("upstream"))
            .status();
        let _ = Command::new(root().join("scripts/netns-pods.sh"))
            .args(["down", TAG])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `curl -s` of `url` with extra `args`: (HTTP status, body); status 0 when it failed.
fn curl(args: &[&str], url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "10",
            "-o",
            "/dev/stderr",
            "-w",
            "%{http_code}",
        ])
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (code, String::from_utf8_lossy(&out.stderr).to_string())
}

/// A GET from the client pod (C) to the proxy (pod A): the HTTP status, 0 when it failed.
fn client_get(path: &str) -> u16 {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns('c'), "curl", "-s", "--max-time", "10"])
        .args(["-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://{}:8080{path}", ip(1)))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Calls `f` every 250 ms until it returns `Ok`; after `wait`, its last `Err`.
fn poll<T>(wait: Duration, mut f: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let deadline = Instant::now() + wait;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// Series keyed by label values joined with "→" (e.g. "client→proxy").
type Series = BTreeMap<String, f64>;

fn want(pairs: &[(&str, f64)]) -> Series {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// Every wanted series is there with at least its value (counters only grow).
fn reached(got: &Series, wanted: &Series) -> bool {
    wanted
        .iter()
        .all(|(k, v)| got.get(k).is_some_and(|g| g >= v))
}

impl Setup {
    /// `GET path` on Prometheus's API (`query` URL-encoded): its `data`, or why not.
    fn api(&self, path: &str, query: Option<&str>) -> Result<Value, String> {
        let url = format!("http://127.0.0.1:{}{path}", self.prom_port);
        let q = query.map(|q| format!("query={q}"));
        let mut args: Vec<&str> = Vec::new();
        if let Some(q) = &q {
            args.extend(["-G", "--data-urlencode", q]);
        }
        let (code, body) = curl(&args, &url);
        let v: Value = serde_json::from_str(&body)
            .map_err(|e| format!("{path}: HTTP {code}, not JSON ({e}): {body}"))?;
        if code != 200 || v["status"] != "success" {
            return Err(format!("{path}: HTTP {code}: {body}"));
        }
        Ok(v["data"].clone())
    }

    /// An instant query: each series' value, keyed by the values of `labels`.
    fn series(&self, query: &str, labels: &[&str]) -> Result<Series, String> {
        let data = self.api("/api/v1/query", Some(query))?;
        let mut out = Series::new();
        for r in data["result"].as_array().cloned().unwrap_or_default() {
            let key: Vec<&str> = labels
                .iter()
                .map(|l| r["metric"][l].as_str().unwrap_or(""))
                .collect();
            let v: f64 = r["value"][1]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("{query}: bad sample {r}"))?;
            if out.insert(key.join("→"), v).is_some() {
                return Err(format!("{query}: two series for {key:?}"));
            }
        }
        Ok(out)
    }

    /// The active alerts named `name`: (service_name, state, value).
    fn alerts(&self, name: &str) -> Result<Vec<(String, String, f64)>, String> {
        let data = self.api("/api/v1/alerts", None)?;
        Ok(data["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|a| a["labels"]["alertname"] == name)
            .map(|a| {
                (
                    a["labels"]["service_name"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    a["state"].as_str().unwrap_or("").to_string(),
                    a["value"]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(f64::NAN),
                )
            })
            .collect())
    }

    /// What to show when a wait times out: the agent's scrape page (the
    /// relevant families), the scrape target's health, the proxy's access log.
    fn diagnostics(&self) -> String {
        let (code, metrics) = curl(
            &[],
            &format!("http://127.0.0.1:{}/metrics", self.metrics_port),
        );
        let metrics: Vec<&str> = metrics
            .lines()
            .filter(|l| {
                !l.starts_with('#')
                    && (l.contains("service_graph_request")
                        || l.contains("consecutive_failures")
                        || l.starts_with("wasmtap_server_requests_total")
                        || l.starts_with("wasmtap_agent_"))
            })
            .collect();
        let targets = self
            .api("/api/v1/targets", None)
            .map(|d| d["activeTargets"].to_string())
            .unwrap_or_else(|e| e);
        let log = std::fs::read_to_string(self.dir.join("proxy/access.log")).unwrap_or_default();
        format!(
            "agent /metrics (HTTP {code}):\n{}\nPrometheus targets: {targets}\nproxy access log:\n{log}",
            metrics.join("\n")
        )
    }
}

/// The proxy's access log: (client address, status, upstream address, upstream status) per request.
fn access_log(path: &Path) -> Vec<[String; 4]> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert!(f.len() >= 4, "unexpected access log line {l:?}");
            [f[0], f[1], f[2], f[3]].map(str::to_string)
        })
        .collect()
}

/// Counts of one run in the proxy's log: (requests from the client pod,
/// requests passed to the upstream, and those that failed with a 5xx, each).
fn logged(lines: &[[String; 4]]) -> (usize, usize, usize, usize) {
    let upstream = format!("{}:8080", ip(2));
    let from_client: Vec<_> = lines.iter().filter(|l| l[0] == ip(3)).collect();
    let to_upstream: Vec<_> = lines.iter().filter(|l| l[2] == upstream).collect();
    (
        from_client.len(),
        to_upstream.len(),
        from_client.iter().filter(|l| l[1].starts_with('5')).count(),
        to_upstream.iter().filter(|l| l[3].starts_with('5')).count(),
    )
}

#[test]
fn prometheus_scrapes_the_service_graph_and_fires_the_consecutive_failures_alert() {
    let rules = root().join("deploy/prometheus/wasmtap-alerts.yaml");
    assert!(rules.is_file(), "missing {}", rules.display());
    let dir = std::env::temp_dir().join(format!("wasmtap-prometheus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // nginx's workers (www-data) read below it.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Namespaces left by an interrupted run would make `up` fail; their
    // host-side interfaces go away asynchronously once they are deleted.
    let _ = Command::new(root().join("scripts/netns-pods.sh"))
        .args(["down", TAG])
        .status();
    poll(WAIT, || {
        let left: Vec<String> = ['a', 'b', 'c']
            .iter()
            .map(|p| format!("wt{TAG}h{p}"))
            .filter(|i| {
                Command::new("ip")
                    .args(["link", "show", i])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    })
    .unwrap_or_else(|e| panic!("interfaces of an earlier run never went away: {e}"));
    let mut s = Setup {
        dir: dir.clone(),
        agent: None,
        prometheus: None,
        prom_port: free_port(),
        metrics_port: free_port(),
    };
    let st = Command::new(root().join("scripts/netns-pods.sh"))
        .args(["up", TAG, &NET.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "netns set-up failed");

    // Pod B: the upstream nginx. Pod A: the proxy in front of it.
    let st = Command::new("ip")
        .args(["netns", "exec", &ns('b')])
        .arg(root().join("scripts/nginx-serve.sh"))
        .arg("start")
        .arg(dir.join("upstream"))
        .env("LISTEN", format!("{}:8080", ip(2)))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "upstream nginx did not start");
    let st = Command::new("ip")
        .args(["netns", "exec", &ns('a')])
        .arg(root().join("scripts/nginx-proxy.sh"))
        .arg("start")
        .arg(dir.join("proxy"))
        .arg(format!("{}:8080", ip(2)))
        .env("LISTEN", format!("{}:8080", ip(1)))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "proxy nginx did not start");
    // The whole chain answers before the agent starts (so it sees none of this).
    poll(WAIT, || match client_get("/") {
        200 => Ok(()),
        c => Err(format!("HTTP {c}")),
    })
    .unwrap_or_else(|e| panic!("client → proxy → upstream never answered: {e}"));

    // Prometheus: scrapes the agent every second, evaluates the alert rules every second.
    let prom_cfg = dir.join("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {:?}\n\
             scrape_configs:\n  - job_name: wasmtap\n    metrics_path: /metrics\n    \
             static_configs:\n      - targets: [\"127.0.0.1:{}\"]\n",
            rules.to_str().unwrap(),
            s.metrics_port
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let listen = format!("127.0.0.1:{}", s.prom_port);
    s.prometheus = Some(
        Command::new("prometheus")
            .arg(format!("--config.file={}", prom_cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg("--storage.tsdb.retention.time=1h")
            .arg(format!("--web.listen-address={listen}"))
            .arg(format!("--web.external-url=http://{listen}/"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus is not installed: run scripts/setup.sh --test"),
    );
    let exited = poll(WAIT, || {
        if let Some(st) = s.prometheus.as_mut().unwrap().try_wait().unwrap() {
            return Ok(Some(st));
        }
        match curl(&[], &format!("http://{listen}/-/ready")) {
            (200, _) => Ok(None),
            (c, body) => Err(format!("HTTP {c}: {body}")),
        }
    })
    .unwrap_or_else(|e| panic!("prometheus never ready: {e}"));
    if let Some(st) = exited {
        let log = std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
        panic!("prometheus exited ({st}):\n{log}");
    }
    // The rule is loaded; its `for` bounds the wait for it to fire.
    let rule_for = {
        // Loaded at start, healthy once first evaluated (a loaded machine may
        // take a few evaluation intervals).
        let rule = poll(WAIT, || {
            let data = s.api("/api/v1/rules", None)?;
            let rule = data["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .find(|r| r["name"] == ALERT && r["type"] == "alerting")
                .ok_or_else(|| format!("{ALERT} is not in {}: {data}", rules.display()))?;
            if rule["health"] == "ok" {
                Ok(rule)
            } else {
                Err(format!("{rule}"))
            }
        })
        .unwrap_or_else(|e| panic!("the rule never evaluated healthy: {e}"));
        assert!(
            rule["query"]
                .as_str()
                .is_some_and(|q| q.contains("wasmtap_service_consecutive_failures")),
            "{rule}"
        );
        Duration::from_secs_f64(rule["duration"].as_f64().unwrap_or(0.0))
    };

    // The agent: host mode on the pods' host-side interfaces, a service map, metrics every second.
    let cfg = dir.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[services]]\nmatch = \"{}\"\nname = \"proxy\"\n\
             [[services]]\nmatch = \"{}\"\nname = \"upstream\"\n\
             [[services]]\nmatch = \"{}\"\nname = \"client\"\n\
             [telemetry]\nexport_interval_secs = 1\n",
            ip(1),
            ip(2),
            ip(3)
        ),
    )
    .unwrap();
    s.agent = Some(LiveAgent::spawn(
        Command::new(bin())
            .args(["run", "--mode", "host", "-i", &format!("^wt{TAG}h")])
            .args(["--format", "none", "--config", cfg.to_str().unwrap()])
            .arg("--admin-listen")
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--metrics-listen")
            .arg(format!("127.0.0.1:{}", s.metrics_port)),
    ));
    // Prometheus scrapes it.
    poll(WAIT, || {
        let up = s.series("up{job=\"wasmtap\"}", &[])?;
        if up.get("") == Some(&1.0) {
            Ok(())
        } else {
            Err(format!("up = {up:?}"))
        }
    })
    .unwrap_or_else(|e| {
        panic!(
            "Prometheus never scraped the agent: {e}\n{}",
            s.diagnostics()
        )
    });

    let edges = "sum by (client, server) (traces_service_graph_request_total)";
    let failed = "sum by (client, server) (traces_service_graph_request_failed_total)";
    let streak = "wasmtap_service_consecutive_failures";
    let access = dir.join("proxy/access.log");
    let before = access_log(&access).len();

    // Run 1: 20 good requests.
    for i in 0..20 {
        assert_eq!(client_get("/"), 200, "request {i}");
    }
    let want_edges = want(&[("client→proxy", 20.0), ("proxy→upstream", 20.0)]);
    let got = poll(WAIT, || {
        let got = s.series(edges, &["client", "server"])?;
        if reached(&got, &want_edges) {
            Ok(got)
        } else {
            Err(format!("{got:?}"))
        }
    })
    .unwrap_or_else(|e| {
        panic!(
            "the edges never reached {want_edges:?}: last {e}\n{}",
            s.diagnostics()
        )
    });
    assert_eq!(
        got,
        want_edges,
        "exactly two edges, no duplicates\n{}",
        s.diagnostics()
    );
    // The proxy's own log says the same: 20 requests in, 20 passed on, none failed.
    let lines = access_log(&access);
    let (from_client, to_upstream, fail_in, fail_out) = logged(&lines[before..]);
    assert_eq!(
        (got["client→proxy"], got["proxy→upstream"]),
        (from_client as f64, to_upstream as f64),
        "edges vs the proxy's access log"
    );
    assert_eq!((fail_in, fail_out), (0, 0), "{lines:?}");
    // The edges are labelled with the server they belong to.
    let by_service = s
        .series(
            "sum by (service_name, client, server) (traces_service_graph_request_total)",
            &["service_name", "client", "server"],
        )
        .unwrap();
    assert_eq!(
        by_service,
        want(&[
            ("proxy→client→proxy", 20.0),
            ("upstream→proxy→upstream", 20.0)
        ])
    );
    let no_failures = s.series(failed, &["client", "server"]).unwrap();
    assert!(no_failures.values().all(|v| *v == 0.0), "{no_failures:?}");
    assert_eq!(
        s.series(streak, &["service_name"]).unwrap(),
        want(&[("proxy", 0.0), ("upstream", 0.0)])
    );
    let alerts = s.alerts(ALERT).unwrap();
    assert!(alerts.is_empty(), "nothing failed yet: {alerts:?}");

    // Run 2: 10 requests to /fail; the upstream answers 500, the proxy passes it on.
    let before = lines.len();
    for i in 0..10 {
        assert_eq!(client_get("/fail"), 500, "failing request {i}");
    }
    let want_failed = want(&[("client→proxy", 10.0), ("proxy→upstream", 10.0)]);
    let got_failed = poll(WAIT, || {
        let got = s.series(failed, &["client", "server"])?;
        if reached(&got, &want_failed) {
            Ok(got)
        } else {
            Err(format!("{got:?}"))
        }
    })
    .unwrap_or_else(|e| {
        panic!(
            "the failed edges never reached {want_failed:?}: last {e}\n{}",
            s.diagnostics()
        )
    });
    assert_eq!(got_failed, want_failed, "{}", s.diagnostics());
    let lines = access_log(&access);
    let (from_client, to_upstream, fail_in, fail_out) = logged(&lines[before..]);
    assert_eq!((from_client, to_upstream), (10, 10), "{lines:?}");
    assert_eq!(
        (got_failed["client→proxy"], got_failed["proxy→upstream"]),
        (fail_in as f64, fail_out as f64),
        "failed edges vs the proxy's access log"
    );
    assert_eq!(
        s.series(edges, &["client", "server"]).unwrap(),
        want(&[("client→proxy", 30.0), ("proxy→upstream", 30.0)]),
        "{}",
        s.diagnostics()
    );
    // Ten failures in a row on both servers (the gauge follows the same export).
    let want_streak = want(&[("proxy", 10.0), ("upstream", 10.0)]);
    poll(WAIT, || {
        let got = s.series(streak, &["service_name"])?;
        if got == want_streak {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
    .unwrap_or_else(|e| {
        panic!(
            "{streak} never became {want_streak:?}: last {e}\n{}",
            s.diagnostics()
        )
    });

    // The alert fires for both servers once the rule's `for` has passed.
    let firing = poll(rule_for + WAIT, || {
        let alerts = s.alerts(ALERT)?;
        let firing: Series = alerts
            .iter()
            .filter(|a| a.1 == "firing")
            .map(|a| (a.0.clone(), a.2))
            .collect();
        if firing.len() >= 2 {
            Ok(firing)
        } else {
            Err(format!("{alerts:?}"))
        }
    })
    .unwrap_or_else(|e| {
        panic!(
            "{ALERT} never fired for both servers (for: {rule_for:?}): last {e}\n{}",
            s.diagnostics()
        )
    });
    assert_eq!(firing, want(&[("proxy", 10.0), ("upstream", 10.0)]));

    // Both services have been silent since the failure run: the time since
    // their last call grows, live, by at least the time that passed.
    let silence = "wasmtap_service_time_since_last_call_seconds";
    let first = s.series(silence, &["service_name"]).unwrap();
    let t0 = std::time::Instant::now();
    assert!(
        first
            .get("proxy")
            .is_some_and(|v| *v >= rule_for.as_secs_f64() / 2.0),
        "silent for about as long as the alert waited: {first:?}"
    );
    let later = poll(WAIT, || {
        let got = s.series(silence, &["service_name"])?;
        let grown = ["proxy", "upstream"]
            .iter()
            .all(|k| got.get(*k).unwrap_or(&0.0) >= &(first.get(*k).unwrap_or(&f64::MAX) + 3.0));
        if grown {
            Ok(got)
        } else {
            Err(format!("{got:?}"))
        }
    })
    .unwrap_or_else(|e| panic!("{silence} did not grow from {first:?}: last {e}"));
    let waited = t0.elapsed().as_secs_f64();
    for k in ["proxy", "upstream"] {
        let grew = later[k] - first[k];
        assert!(grew <= waited + 3.0, "{k}: grew {grew} s in {waited} s");
    }

    let stopped = s.agent.take().unwrap().stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
}
