//! End to end with a real OpenTelemetry collector: rotel (PyPI), over gRPC and HTTP.
//!
//! rotel prints what it receives (`--debug-log traces --debug-log metrics`);
//! every span wasmtap reports on its JSON-lines output must arrive, by span id.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, replay_spans, root};

/// The rotel-agent binary shipped in the `rotel` wheel (installed by scripts/setup.sh).
pub(crate) fn rotel_agent() -> PathBuf {
    if let Some(p) = std::env::var_os("WASMTAP_ROTEL") {
        return PathBuf::from(p);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import rotel, os; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "rotel is not installed: run scripts/setup.sh --test"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

pub(crate) struct Collector {
    child: Child,
    log: PathBuf,
    pub(crate) grpc: u16,
    pub(crate) http: u16,
}

impl Collector {
    pub(crate) fn start(tag: &str) -> Self {
        Self::start_on(tag, free_port(), free_port())
    }

    /// A collector on given ports (a restart after an outage).
    pub(crate) fn start_on(tag: &str, grpc: u16, http: u16) -> Self {
        let log =
            std::env::temp_dir().join(format!("wasmtap-rotel-{tag}-{}.log", std::process::id()));
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new(rotel_agent())
            .args([
                "start",
                "--otlp-grpc-endpoint",
                &format!("127.0.0.1:{grpc}"),
            ])
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http}")])
            .args([
                "--exporter",
                "blackhole",
                "--debug-log",
                "traces",
                "--debug-log",
                "metrics",
            ])
            .args(["--debug-log-verbosity", "detailed"])
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .stdin(Stdio::null())
            .spawn()
            .expect("start rotel-agent");
        let c = Self {
            child,
            log,
            grpc,
            http,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", grpc)).is_err()
            || TcpStream::connect(("127.0.0.1", http)).is_err()
        {
            assert!(Instant::now() < deadline, "rotel did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    /// Waits until the collector's log satisfies `done`, then returns it.
    pub(crate) fn wait_for(&self, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if done(&text) || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
        std::fs::remove_file(&self.log).ok();
    }
}

fn check(protocol: &str) {
    let c = Collector::start(protocol);
    let port = if protocol == "grpc" { c.grpc } else { c.http };
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut ids = Vec::new();
    for file in [
        "zeek__http-pipelined-requests.pcap",
        "zeek__http-http-post-large.pcap",
        "zeek__http-methods.pcap",
    ] {
        let spans = replay_spans(
            &root().join("tests/pcaps/http").join(file),
            &["--otlp-endpoint", &endpoint, "--otlp-protocol", protocol],
        );
        assert!(!spans.is_empty(), "{file}: no spans");
        ids.extend(
            spans
                .iter()
                .map(|s| s["span_id"].as_str().unwrap().to_string()),
        );
    }
    let text = c.wait_for(|t| {
        ids.iter().all(|id| t.contains(id.as_str())) && t.contains("wasmtap.agent.frames")
    });
    let missing: Vec<_> = ids
        .iter()
        .filter(|id| !text.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{protocol}: {} of {} spans never reached the collector",
        missing.len(),
        ids.len()
    );
    // Each span exactly once.
    for id in &ids {
        assert_eq!(
            text.matches(&format!("ID             : {id}")).count(),
            1,
            "{protocol}: span {id} not exactly once"
        );
    }
    // RED metrics with semantic-convention names, under the observed service's resource.
    assert!(
        text.contains("http.server.request.duration"),
        "{protocol}: no duration histogram"
    );
    assert!(
        text.contains("service.name: Str(63.245.209.11:80)"),
        "{protocol}: observed service missing"
    );
    // The agent's own telemetry, through the OpenTelemetry SDK.
    assert!(
        text.contains("service.name: Str(wasmtap-agent)"),
        "{protocol}: agent self-metrics missing"
    );
}

#[test]
fn spans_and_metrics_reach_a_real_collector_over_grpc() {
    check("grpc");
}

#[test]
fn spans_and_metrics_reach_a_real_collector_over_http() {
    check("http");
}

/// (metric name, sorted `key=value` attributes, value or count) of every
/// Sum and Histogram point in rotel's detailed debug log.
fn points_in_rotel_log(text: &str) -> Vec<(String, String, u64)> {
    let mut out = Vec::new();
    let mut name = String::new();
    let mut attrs: Vec<String> = Vec::new();
    let mut in_attrs = false;
    let mut gauge = false;
    for line in text.lines() {
        let t = line.trim();
        if let Some(n) = t.strip_prefix("-> Name: ") {
            name = n.to_string();
            continue;
        }
        if let Some(d) = t.strip_prefix("-> DataType: ") {
            gauge = d == "Gauge";
            continue;
        }
        if t == "Data point attributes:" {
            in_attrs = true;
            attrs.clear();
            continue;
        }
        if in_attrs {
            if let Some(kv) = t.strip_prefix("-> ") {
                let (k, v) = kv.split_once(": ").unwrap_or((kv, ""));
                // Str(x), Int(1), Bool(true) -> x, 1, true
                let v = v
                    .split_once('(')
                    .map_or(v, |(_, r)| r.strip_suffix(')').unwrap_or(r));
                attrs.push(format!("{k}={v}"));
                continue;
            }
            in_attrs = false;
        }
        let value = t
            .strip_prefix("Value: ")
            .or_else(|| t.strip_prefix("Count: "));
        if let Some(v) = value.and_then(|v| v.parse::<u64>().ok())
            && !gauge
            && !name.starts_with("wasmtap.agent.")
        {
            let mut a = attrs.clone();
            a.sort();
            out.push((name.clone(), a.join(","), v));
        }
    }
    out
}

/// The same from a `--metrics-out` file.
fn points_in_metrics_file(text: &str) -> Vec<(String, String, u64)> {
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|m| m["type"] != "gauge")
        .map(|m| {
            let mut a: Vec<String> = m["attributes"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => format!("{k}={s}"),
                    v => format!("{k}={v}"),
                })
                .collect();
            a.sort();
            let v = m["value"].as_u64().or(m["count"].as_u64()).unwrap();
            (m["name"].as_str().unwrap().to_string(), a.join(","), v)
        })
        .collect()
}

/// Golden metrics as received by a real collector: every counter and
/// histogram count at rotel equals the metrics file of the same replay
/// (which the metrics tests check against the spans and a golden).
#[test]
fn metrics_at_the_collector_equal_the_metrics_file() {
    let c = Collector::start("metrics");
    let dir = std::env::temp_dir().join(format!("wasmtap-otlp-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("m.jsonl");
    let spans = replay_spans(
        &root().join("tests/pcaps/mixed/sandbox-mix.pcap"),
        &[
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{}", c.http),
            "--otlp-protocol",
            "http",
            "--metrics-out",
            file.to_str().unwrap(),
        ],
    );
    assert!(!spans.is_empty());
    let mut want = points_in_metrics_file(&std::fs::read_to_string(&file).unwrap());
    want.sort();
    let text = c.wait_for(|t| points_in_rotel_log(t).len() >= want.len());
    let mut got = points_in_rotel_log(&text);
    got.sort();
    assert!(want.len() > 100, "{} points", want.len());
    assert_eq!(got, want, "points at the collector vs the metrics file");
    std::fs::remove_dir_all(&dir).ok();
}
