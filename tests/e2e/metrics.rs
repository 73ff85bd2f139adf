//! The metrics a replay writes (`--metrics-out`, JSON lines) against what
//! follows independently from its spans, on real captures; the indicators
//! on synthetic captures whose outcome is known exactly (consecutive
//! failures, silence, 100,000 distinct paths); the console's two tables.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::synth::{Conn, Pcap};
use crate::{replay_spans, root, run};

const S: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;
/// 2026-01-01, so timestamps look real.
const T0: u64 = 1_767_225_600 * S;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wasmtap-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn read_metrics(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Replays with `--metrics-out` and returns (spans, metric lines).
fn replay_both(file: &Path, extra: &[&str]) -> (Vec<Value>, Vec<Value>) {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out = tmp(&format!(
        "{}.{n}.metrics.jsonl",
        file.file_name().unwrap().to_str().unwrap()
    ));
    let mut args = vec!["--metrics-out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let spans = replay_spans(file, &args);
    (spans, read_metrics(&out))
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

fn service(m: &Value) -> String {
    s(&m["resource"]["service.name"])
}

/// Sum of `name` over the lines whose attributes include every `(key, value)`.
fn total(metrics: &[Value], svc: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    metrics
        .iter()
        .filter(|m| m["name"] == name && service(m) == svc)
        .filter(|m| want.iter().all(|(k, v)| s(&m["attributes"][*k]) == *v))
        .map(|m| m["value"].as_f64().or(m["count"].as_f64()).unwrap_or(0.0))
        .sum()
}

/// Bucket index of a duration, as the agent counts it (inclusive upper bounds).
fn bucket(bounds: &[f64], secs: f64) -> usize {
    bounds.partition_point(|&ub| ub < secs)
}

/// Everything the metrics file says per (service, operation) must follow
/// from the spans of the same replay: requests, errors, answered, SLA met
/// (default 500 ms, exact), and the duration histogram bucket by bucket.
fn check_against_spans(spans: &[Value], metrics: &[Value], sla_s: f64) {
    #[derive(Default, Debug, PartialEq)]
    struct Agg {
        requests: u64,
        errors: u64,
        unanswered: u64,
        sla_met: u64,
        buckets: BTreeMap<usize, u64>,
    }
    let bounds: Vec<f64> = metrics
        .iter()
        .find(|m| {
            m["type"] == "histogram"
                && s(&m["name"]).ends_with(".duration")
                && !s(&m["name"]).starts_with("wasmtap.l4")
        })
        .map(|m| {
            m["bounds"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_f64().unwrap())
                .collect()
        })
        .unwrap_or_default();
    let mut from_spans: BTreeMap<(String, String), Agg> = BTreeMap::new();
    for sp in spans {
        let a = from_spans
            .entry((s(&sp["resource"]["service.name"]), s(&sp["name"])))
            .or_default();
        let dur = (sp["end_unix_nano"].as_u64().unwrap() - sp["start_unix_nano"].as_u64().unwrap())
            as f64
            / 1e9;
        let err = sp["status"]["code"] == "error";
        let no_resp = s(&sp["attributes"]["error.type"]) == "no_response";
        a.requests += 1;
        a.errors += u64::from(err);
        a.unanswered += u64::from(no_resp);
        let one_way = sp["attributes"]["wasmtap.one_way"] == true;
        a.sla_met += u64::from(!no_resp && !one_way && dur <= sla_s);
        *a.buckets.entry(bucket(&bounds, dur)).or_default() += 1;
    }
    let mut from_metrics: BTreeMap<(String, String), Agg> = BTreeMap::new();
    for m in metrics {
        let op = s(&m["attributes"]["wasmtap.operation"]);
        if op.is_empty() || m["type"] == "gauge" {
            continue;
        }
        let a = from_metrics.entry((service(m), op)).or_default();
        let v = m["value"].as_u64().unwrap_or(0);
        match m["name"].as_str().unwrap() {
            "wasmtap.server.requests" => a.requests += v,
            "wasmtap.server.errors" => a.errors += v,
            "wasmtap.server.unanswered" => a.unanswered += v,
            "wasmtap.server.sla.met" => a.sla_met += v,
            n if n.ends_with(".duration") && m["type"] == "histogram" => {
                for (i, c) in m["bucket_counts"].as_array().unwrap().iter().enumerate() {
                    let c = c.as_u64().unwrap();
                    if c > 0 {
                        *a.buckets.entry(i).or_default() += c;
                    }
                }
            }
            _ => {}
        }
    }
    assert!(!from_spans.is_empty(), "no spans");
    assert_eq!(from_metrics, from_spans, "metrics file vs spans");
}

#[test]
fn metrics_file_follows_exactly_from_the_spans_on_real_captures() {
    let cfg = tmp("sla.toml");
    std::fs::write(&cfg, "[telemetry.sla]\ndefault_ms = 5\n").unwrap();
    let cfg = cfg.to_str().unwrap().to_string();
    for f in [
        "mixed/sandbox-mix.pcap",
        "http/zeek__http-pipelined-requests.pcap",
        "http/zeek__http-methods.pcap",
        "http/suricata__http-gap-simple.pcap",
        "redis/zeek__redis-pipelining-example.pcap",
        "dns/deepflow__dns.pcap",
    ] {
        let (spans, metrics) =
            replay_both(&root().join("tests/pcaps").join(f), &["--config", &cfg]);
        check_against_spans(&spans, &metrics, 0.005);
    }
}

/// A stable text of every counter and histogram in the metrics file (gauges
/// of time since the last call aside, as they depend on the capture's end).
fn golden_text(metrics: &[Value]) -> String {
    let mut lines: Vec<String> = metrics
        .iter()
        .filter(|m| m["type"] != "gauge" || !s(&m["name"]).contains("time_since"))
        .map(|m| {
            let attrs: BTreeMap<String, String> = m["attributes"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), s(v)))
                .collect();
            let attrs: Vec<String> = attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let value = if m["type"] == "histogram" {
                format!("count={} buckets={}", m["count"], m["bucket_counts"])
            } else {
                s(&m["value"])
            };
            format!(
                "{} [{}] {} {}",
                service(m),
                s(&m["name"]),
                attrs.join(","),
                value
            )
        })
        .collect();
    lines.sort();
    lines.join("\n") + "\n"
}

#[test]
fn metrics_golden_on_the_mixed_capture() {
    let (_, metrics) = replay_both(&root().join("tests/pcaps/mixed/sandbox-mix.pcap"), &[]);
    let text = golden_text(&metrics);
    let path = root().join("tests/golden/metrics/sandbox-mix.pcap.txt");
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("missing {}; run with UPDATE_EXPECT=1", path.display()));
    assert_eq!(
        want, text,
        "metrics golden differs (UPDATE_EXPECT=1 regenerates)"
    );
    // Every family the README promises is there.
    for name in [
        "http.server.request.duration",
        "http.server.request.body.size",
        "http.server.response.body.size",
        "db.client.operation.duration",
        "wasmtap.server.requests",
        "wasmtap.server.sla.met",
        "wasmtap.server.consecutive_failures",
        "wasmtap.service.time_since_last_call",
        "traces_service_graph_request_total",
        "traces_service_graph_request_server_seconds",
        "wasmtap.l4.connections.opened",
        "wasmtap.l4.bytes",
        "wasmtap.l4.handshake.rtt",
    ] {
        assert!(metrics.iter().any(|m| m["name"] == name), "no {name}");
    }
}

const API: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 0, 0, 1), 8080);
const OTHER: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 0, 0, 2), 8080);

fn client(n: u16) -> (Ipv4Addr, u16) {
    (Ipv4Addr::new(10, 0, 1, 1), 40_000 + n)
}

#[test]
fn consecutive_failures_five_then_a_success_resets() {
    let mut p = Pcap::new();
    let mut c = Conn::open(&mut p, T0, client(1), API);
    for i in 0..5 {
        c.http(&mut p, T0 + (i + 1) * S, "GET", "/pay", 500, 10 * MS);
    }
    let five = tmp("five-failures.pcap");
    p.write(&five);
    let mut p2 = Pcap::new();
    let mut c2 = Conn::open(&mut p2, T0, client(1), API);
    for i in 0..5 {
        c2.http(&mut p2, T0 + (i + 1) * S, "GET", "/pay", 500, 10 * MS);
    }
    c2.http(&mut p2, T0 + 7 * S, "GET", "/pay", 200, 10 * MS);
    c2.close(&mut p2, T0 + 8 * S);
    let then_ok = tmp("five-then-ok.pcap");
    p2.write(&then_ok);

    let op = [("wasmtap.operation", "GET /pay")];
    let (spans, m) = replay_both(&five, &[]);
    assert_eq!(spans.len(), 5);
    assert_eq!(
        total(
            &m,
            "10.0.0.1:8080",
            "wasmtap.server.consecutive_failures",
            &op
        ),
        5.0
    );
    assert_eq!(
        total(
            &m,
            "10.0.0.1:8080",
            "wasmtap.service.consecutive_failures",
            &[]
        ),
        5.0
    );
    let (_, m) = replay_both(&then_ok, &[]);
    assert_eq!(
        total(
            &m,
            "10.0.0.1:8080",
            "wasmtap.server.consecutive_failures",
            &op
        ),
        0.0
    );
    assert_eq!(
        total(
            &m,
            "10.0.0.1:8080",
            "wasmtap.service.consecutive_failures",
            &[]
        ),
        0.0
    );
    assert_eq!(
        total(&m, "10.0.0.1:8080", "wasmtap.server.errors", &op),
        5.0
    );
    // The connection itself: opened once, handshake RTT seen (200 µs).
    let l4 = [("client", "10.0.1.1"), ("server", "10.0.0.1:8080")];
    assert_eq!(
        total(&m, "10.0.0.1:8080", "wasmtap.l4.connections.opened", &l4),
        1.0
    );
    let fin = [("client", "10.0.1.1"), ("wasmtap.close_reason", "fin")];
    assert_eq!(
        total(&m, "10.0.0.1:8080", "wasmtap.l4.connections.closed", &fin),
        1.0
    );
    let rtt = m
        .iter()
        .find(|x| x["name"] == "wasmtap.l4.handshake.rtt")
        .unwrap();
    assert_eq!(rtt["count"], 1);
    assert!(
        (rtt["sum"].as_f64().unwrap() - 0.0002).abs() < 1e-9,
        "{rtt}"
    );
}

#[test]
fn time_since_the_last_call_grows_for_a_silent_service() {
    let mut p = Pcap::new();
    let mut a = Conn::open(&mut p, T0, client(1), API);
    let mut b = Conn::open(&mut p, T0, client(2), OTHER);
    a.http(&mut p, T0 + S, "GET", "/", 200, MS);
    a.http(&mut p, T0 + 2 * S, "GET", "/", 200, MS);
    for i in 1..=100 {
        b.http(&mut p, T0 + i * S, "GET", "/", 200, MS);
    }
    let f = tmp("silence.pcap");
    p.write(&f);
    let (_, m) = replay_both(&f, &[]);
    let quiet = total(
        &m,
        "10.0.0.1:8080",
        "wasmtap.service.time_since_last_call",
        &[],
    );
    let busy = total(
        &m,
        "10.0.0.2:8080",
        "wasmtap.service.time_since_last_call",
        &[],
    );
    // The capture ends with the busy service's last response (100 s + 1 ms).
    assert!((quiet - 98.001).abs() < 1e-6, "{quiet}");
    assert!(busy < 0.01, "{busy}");
}

#[test]
fn a_hundred_thousand_distinct_paths_stay_within_the_caps() {
    let mut p = Pcap::new();
    let mut c = Conn::open(&mut p, T0, client(1), API);
    let n = 100_000u64;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for i in 0..n {
        let path = if i % 2 == 0 {
            format!("/users/{}", 1_000_000 + i)
        } else {
            // Words the heuristic cannot tell from routes: only the cap holds them.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let w: String = (0..8)
                .map(|k| (b'a' + ((rng >> (k * 5)) % 26) as u8) as char)
                .collect();
            format!("/w/{w}")
        };
        c.http(&mut p, T0 + i * 100_000, "GET", &path, 200, 50_000);
    }
    let f = tmp("paths.pcap");
    p.write(&f);
    let cfg = tmp("caps.toml");
    std::fs::write(&cfg, "[telemetry]\nmax_series = 2000\n").unwrap();
    let out = tmp("paths.metrics.jsonl");
    let r = run(&[
        "replay",
        f.to_str().unwrap(),
        "--format",
        "none",
        "--stats",
        "--config",
        cfg.to_str().unwrap(),
        "--metrics-out",
        out.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let m = read_metrics(&out);
    let series: Vec<&Value> = m
        .iter()
        .filter(|x| x["name"] == "wasmtap.server.requests")
        .collect();
    assert!(series.len() <= 2001, "{} series", series.len());
    let sum: u64 = series.iter().map(|x| x["value"].as_u64().unwrap()).sum();
    assert_eq!(sum, n, "totals add up");
    let ids = total(
        &m,
        "10.0.0.1:8080",
        "wasmtap.server.requests",
        &[("wasmtap.operation", "GET /users/{id}")],
    );
    assert_eq!(ids, (n / 2) as f64, "ids collapse into one route");
    let overflow: u64 = series
        .iter()
        .filter(|x| x["attributes"]["otel.metric.overflow"] == true)
        .map(|x| x["value"].as_u64().unwrap())
        .sum();
    assert!(
        overflow > 40_000,
        "overflow series holds the rest: {overflow}"
    );
    assert_eq!(overflow + ids as u64 + (series.len() as u64 - 2), n);
    let stats = String::from_utf8_lossy(&r.stderr);
    assert!(stats.contains("wasmtap.agent.metrics.overflow"), "{stats}");
}

#[test]
fn the_table_shows_indicators_and_the_service_graph() {
    let out = run(&[
        "replay",
        root()
            .join("tests/pcaps/mixed/sandbox-mix.pcap")
            .to_str()
            .unwrap(),
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for col in [
        "TPS", "SUCCESS%", "RESP%", "SLA%", "CONSEC", "LAST", "P99", "CLIENT", "SERVER",
    ] {
        assert!(text.contains(col), "no {col} in\n{text}");
    }
    assert!(text.contains(" -> "), "no edge rows in\n{text}");
}
