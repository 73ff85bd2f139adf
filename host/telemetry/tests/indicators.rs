//! The operators' indicators, the service graph, L4 metrics and cardinality
//! caps, through the public API with hand-made exchanges.

#![allow(missing_docs, clippy::unwrap_used)]

use std::net::SocketAddr;

use wasmtap_telemetry::exchange::{Exchange, ExchangeKind, Message, MessageKind, Outcome};
use wasmtap_telemetry::graph::FlowEnd;
use wasmtap_telemetry::model::{AttrValue, KeyValue, MetricData, MetricsSnapshot, Temporality};
use wasmtap_telemetry::red::{FlowCtx, SlaRule, Telemetry, TelemetryConfig};
use wasmtap_telemetry::services::{ServiceMap, ServiceRule};

const S: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;

fn msg(kind: MessageKind, start: u64, end: u64, op: &str, status: Outcome, code: &str) -> Message {
    Message {
        kind,
        correlation: None,
        start_ns: start,
        end_ns: end,
        size: 10,
        operation: op.into(),
        status,
        status_code: code.into(),
        attributes: Vec::new(),
    }
}

/// An answered exchange starting at `start`, lasting `dur`.
fn answered(op: &str, start: u64, dur: u64, ok: bool, code: &str) -> Exchange {
    Exchange {
        kind: ExchangeKind::Complete,
        request: msg(
            MessageKind::Request,
            start,
            start + 1,
            op,
            Outcome::Unset,
            "",
        ),
        response: Some(msg(
            MessageKind::Response,
            start + dur - 1,
            start + dur,
            "",
            if ok { Outcome::Ok } else { Outcome::Error },
            code,
        )),
    }
}

fn unanswered(op: &str, start: u64) -> Exchange {
    Exchange {
        kind: ExchangeKind::Unanswered,
        request: msg(
            MessageKind::Request,
            start,
            start + 1,
            op,
            Outcome::Unset,
            "",
        ),
        response: None,
    }
}

fn ctx<'a>(client: &str, server: &str, protocol: &'a str) -> FlowCtx<'a> {
    FlowCtx {
        client: client.parse::<SocketAddr>().unwrap(),
        server: server.parse::<SocketAddr>().unwrap(),
        protocol,
        transport: "tcp",
        flow_id: 1,
    }
}

fn telemetry(cfg: TelemetryConfig) -> Telemetry {
    let rules = vec![
        ServiceRule::parse("10.0.0.1", "api").unwrap(),
        ServiceRule::parse("10.0.0.2", "db").unwrap(),
        ServiceRule::parse("10.0.0.9", "web").unwrap(),
    ];
    Telemetry::new(ServiceMap::new(rules, vec![]), cfg)
}

fn has(attrs: &[KeyValue], key: &str, value: &str) -> bool {
    attrs.iter().any(|kv| {
        &*kv.key == key
            && match &kv.value {
                AttrValue::Str(s) => s == value,
                AttrValue::Int(i) => i.to_string() == value,
                AttrValue::Bool(b) => b.to_string() == value,
                AttrValue::Float(f) => f.to_string() == value,
            }
    })
}

/// The value of the one point named `name` whose attributes include every `(key, value)`.
fn value(snap: &MetricsSnapshot, service: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = snap
        .points
        .iter()
        .filter(|p| {
            p.name == name
                && p.resource.service_name() == service
                && want.iter().all(|(k, v)| has(&p.attributes, k, v))
        })
        .map(|p| match &p.data {
            MetricData::Sum { value } => *value as f64,
            MetricData::Gauge { value } => *value,
            MetricData::Histogram { count, .. } => *count as f64,
        })
        .collect();
    assert_eq!(found.len(), 1, "{name} {want:?} for {service}: {found:?}");
    found[0]
}

fn sum_all(snap: &MetricsSnapshot, name: &str) -> u64 {
    snap.points
        .iter()
        .filter(|p| p.name == name)
        .map(|p| match &p.data {
            MetricData::Sum { value } => *value,
            _ => 0,
        })
        .sum()
}

#[test]
fn consecutive_failures_count_up_and_a_success_resets_them() {
    let mut t = telemetry(TelemetryConfig::default());
    let c = ctx("10.1.1.1:40000", "10.0.0.1:80", "http");
    let op = [("wasmtap.operation", "GET")];
    for i in 0..5 {
        t.record(answered("GET", i * S, 10 * MS, false, "503"), &c, false);
    }
    let snap = t.snapshot(5 * S);
    assert_eq!(
        value(&snap, "api", "wasmtap.server.consecutive_failures", &op),
        5.0
    );
    assert_eq!(
        value(&snap, "api", "wasmtap.service.consecutive_failures", &[]),
        5.0
    );
    assert_eq!(value(&snap, "api", "wasmtap.server.success_rate", &op), 0.0);
    t.record(answered("GET", 6 * S, 10 * MS, true, "200"), &c, false);
    let snap = t.snapshot(7 * S);
    assert_eq!(
        value(&snap, "api", "wasmtap.server.consecutive_failures", &op),
        0.0
    );
    assert_eq!(
        value(&snap, "api", "wasmtap.service.consecutive_failures", &[]),
        0.0
    );
    // Over the last interval only the success happened.
    assert_eq!(value(&snap, "api", "wasmtap.server.success_rate", &op), 1.0);
    // A timeout is a failure too; a 4xx is not (the client's outcome).
    t.record(unanswered("GET", 8 * S), &c, false);
    t.record(answered("GET", 9 * S, 10 * MS, true, "404"), &c, false);
    t.record(unanswered("GET", 10 * S), &c, false);
    let snap = t.snapshot(11 * S);
    assert_eq!(
        value(&snap, "api", "wasmtap.server.consecutive_failures", &op),
        1.0
    );
    assert_eq!(
        value(
            &snap,
            "api",
            "wasmtap.server.requests",
            &[("wasmtap.status_class", "client_error")]
        ),
        1.0
    );
    assert_eq!(
        value(&snap, "api", "wasmtap.server.response_rate", &op),
        1.0 / 3.0
    );
}

#[test]
fn time_since_the_last_call_grows_for_a_silent_service() {
    let mut t = telemetry(TelemetryConfig::default());
    let api = ctx("10.1.1.1:40000", "10.0.0.1:80", "http");
    let db = ctx("10.1.1.1:40001", "10.0.0.2:6379", "redis");
    t.record(answered("GET", 2 * S, MS, true, "200"), &api, false);
    for i in 0..100 {
        t.record(answered("GET", i * S, MS, true, ""), &db, false);
    }
    let snap = t.snapshot(100 * S);
    assert_eq!(
        value(&snap, "api", "wasmtap.service.time_since_last_call", &[]),
        98.0
    );
    assert_eq!(
        value(&snap, "db", "wasmtap.service.time_since_last_call", &[]),
        1.0
    );
    let snap = t.snapshot(160 * S);
    assert_eq!(
        value(&snap, "api", "wasmtap.service.time_since_last_call", &[]),
        158.0
    );
    // Past the expiry the silent service is no longer reported.
    let mut t = telemetry(TelemetryConfig {
        silence_expiry_ns: 60 * S,
        ..Default::default()
    });
    t.record(answered("GET", 2 * S, MS, true, "200"), &api, false);
    t.record(answered("GET", 90 * S, MS, true, ""), &db, false);
    let snap = t.snapshot(100 * S);
    assert!(
        !snap
            .points
            .iter()
            .any(|p| p.resource.service_name() == "api" && p.name.contains("time_since")),
        "expired service still reported"
    );
    assert!(t.stats().stale_dropped >= 2);
}

#[test]
fn sla_is_counted_exactly_per_operation() {
    let mut t = telemetry(TelemetryConfig {
        sla_default_ns: 500 * MS,
        sla_rules: vec![SlaRule {
            service: "api".into(),
            operation: Some("POST".into()),
            threshold_ns: 100 * MS,
        }],
        ..Default::default()
    });
    let c = ctx("10.1.1.1:40000", "10.0.0.1:80", "http");
    // Exactly at the threshold meets it; just above does not.
    for d in [100 * MS, 100 * MS + 1, 499 * MS, 500 * MS, 501 * MS] {
        t.record(answered("GET", S, d, true, "200"), &c, false);
        t.record(answered("POST", S, d, true, "200"), &c, false);
    }
    t.record(unanswered("GET", 2 * S), &c, false);
    let snap = t.snapshot(3 * S);
    let get = [("wasmtap.operation", "GET"), ("wasmtap.status_class", "ok")];
    let post = [
        ("wasmtap.operation", "POST"),
        ("wasmtap.status_class", "ok"),
    ];
    assert_eq!(value(&snap, "api", "wasmtap.server.sla.met", &get), 4.0);
    assert_eq!(value(&snap, "api", "wasmtap.server.sla.met", &post), 1.0);
    let g = [("wasmtap.operation", "GET")];
    assert_eq!(value(&snap, "api", "wasmtap.server.sla.threshold", &g), 0.5);
    assert_eq!(
        value(&snap, "api", "wasmtap.server.sla.compliance", &g),
        4.0 / 6.0
    );
    assert_eq!(
        value(
            &snap,
            "api",
            "wasmtap.server.sla.threshold",
            &[("wasmtap.operation", "POST")]
        ),
        0.1
    );
    // The duration histogram: exact bucket counts (bounds are inclusive).
    let p = snap
        .points
        .iter()
        .find(|p| {
            p.name == "http.server.request.duration"
                && has(&p.attributes, "wasmtap.operation", "POST")
        })
        .unwrap();
    let MetricData::Histogram {
        bucket_counts,
        bounds,
        ..
    } = &p.data
    else {
        panic!()
    };
    let at = |b: f64| bounds.iter().position(|x| *x == b).unwrap();
    assert_eq!(bucket_counts[at(0.1)], 1);
    assert_eq!(bucket_counts[at(0.25)], 1);
    assert_eq!(bucket_counts[at(0.5)], 2);
    assert_eq!(bucket_counts[at(0.75)], 1);
}

#[test]
fn http_operations_are_route_templates_and_series_are_capped() {
    let mut t = telemetry(TelemetryConfig {
        max_series: 50,
        ..Default::default()
    });
    let c = ctx("10.1.1.1:40000", "10.0.0.1:80", "http");
    let n = 10_000u64;
    for i in 0..n {
        let mut ex = answered("GET", S + i, MS, true, "200");
        let path = if i % 2 == 0 {
            format!("/users/{i}")
        } else {
            // Distinct words the heuristic cannot collapse.
            format!("/page-{}", (b'a' + (i % 26) as u8) as char).repeat(1 + (i as usize % 7))
                + &format!("/w{}x", i % 997)
        };
        ex.request.attributes.push(KeyValue::str("url.path", path));
        ex.request
            .attributes
            .push(KeyValue::str("http.request.method", "GET"));
        let span = t.record(ex, &c, i == 0).map(|s| s.name);
        if i == 0 {
            assert_eq!(span.as_deref(), Some("GET /users/{id}"));
        }
    }
    let snap = t.snapshot(10 * S);
    let series = snap
        .points
        .iter()
        .filter(|p| p.name == "wasmtap.server.requests")
        .count();
    assert!(series <= 51, "{series} series");
    assert_eq!(sum_all(&snap, "wasmtap.server.requests"), n);
    assert_eq!(
        value(
            &snap,
            "api",
            "wasmtap.server.requests",
            &[("wasmtap.operation", "GET /users/{id}")]
        ),
        (n / 2) as f64
    );
    let overflow = snap
        .points
        .iter()
        .filter(|p| {
            p.name == "wasmtap.server.requests"
                && has(&p.attributes, "otel.metric.overflow", "true")
        })
        .count();
    assert_eq!(overflow, 1);
    assert!(t.overflowed() > 0);
    // The route is on metrics, the raw path only on spans.
    let h = snap
        .points
        .iter()
        .find(|p| {
            p.name == "http.server.request.duration"
                && has(&p.attributes, "http.route", "/users/{id}")
        })
        .unwrap();
    assert!(!h.attributes.iter().any(|kv| &*kv.key == "url.path"));
}

#[test]
fn service_graph_edges_and_database_instruments() {
    let mut t = telemetry(TelemetryConfig::default());
    let web_api = ctx("10.0.0.9:40000", "10.0.0.1:80", "http");
    let api_db = ctx("10.0.0.1:40000", "10.0.0.2:6379", "redis");
    for i in 0..7 {
        t.record(
            answered("GET", i * S, MS, i != 3, if i == 3 { "500" } else { "200" }),
            &web_api,
            false,
        );
    }
    for i in 0..3 {
        t.record(answered("GET", i * S, MS, true, ""), &api_db, false);
    }
    let snap = t.snapshot(10 * S);
    let e = [("client", "web"), ("server", "api")];
    assert_eq!(
        value(&snap, "api", "traces_service_graph_request_total", &e),
        7.0
    );
    assert_eq!(
        value(
            &snap,
            "api",
            "traces_service_graph_request_failed_total",
            &e
        ),
        1.0
    );
    assert_eq!(
        value(
            &snap,
            "api",
            "traces_service_graph_request_server_seconds",
            &e
        ),
        7.0
    );
    let d = [
        ("client", "api"),
        ("server", "db"),
        ("connection_type", "database"),
    ];
    assert_eq!(
        value(&snap, "db", "traces_service_graph_request_total", &d),
        3.0
    );
    assert_eq!(
        value(
            &snap,
            "db",
            "db.client.operation.duration",
            &[
                ("db.system.name", "redis"),
                ("db.operation.name", "GET"),
                ("server.port", "6379")
            ]
        ),
        3.0
    );
    let rows = t.edge_summary();
    assert_eq!(rows.len(), 2);
}

#[test]
fn l4_metrics_for_every_flow_and_edges_are_capped() {
    let mut t = telemetry(TelemetryConfig {
        max_edges: 1,
        ..Default::default()
    });
    let c: SocketAddr = "10.0.0.9:40000".parse().unwrap();
    let s: SocketAddr = "10.0.0.1:80".parse().unwrap();
    for i in 0..3u64 {
        t.flow_opened(c, s, "tcp", i * S);
        t.flow_closed(&FlowEnd {
            client: c,
            server: s,
            transport: "tcp",
            reason: if i == 0 { "reset" } else { "fin" },
            start_ns: i * S,
            end_ns: i * S + 2 * S,
            packets: [5, 4],
            bytes: [100, 1000],
            retransmitted: [0, 10],
            gaps: [0, 1],
            gap_bytes: [0, 20],
            handshake_rtt_ns: Some(300_000),
        });
    }
    let snap = t.snapshot(10 * S);
    let p = [
        ("client", "web"),
        ("server", "api"),
        ("network.transport", "tcp"),
    ];
    assert_eq!(
        value(&snap, "api", "wasmtap.l4.connections.opened", &p),
        3.0
    );
    let mut reset = p.to_vec();
    reset.push(("wasmtap.close_reason", "reset"));
    assert_eq!(
        value(&snap, "api", "wasmtap.l4.connections.closed", &reset),
        1.0
    );
    let mut tx = p.to_vec();
    tx.push(("network.io.direction", "transmit"));
    assert_eq!(value(&snap, "api", "wasmtap.l4.bytes", &tx), 3000.0);
    assert_eq!(
        value(&snap, "api", "wasmtap.l4.retransmitted_bytes", &tx),
        30.0
    );
    assert_eq!(value(&snap, "api", "wasmtap.l4.gap_bytes", &tx), 60.0);
    assert_eq!(value(&snap, "api", "wasmtap.l4.handshake.rtt", &p), 3.0);
    // Edges beyond the cap share the overflow edge; totals still add up.
    let a = ctx("10.0.0.9:40000", "10.0.0.1:80", "http");
    let b = ctx("10.7.7.7:40000", "10.0.0.1:80", "http");
    t.record(answered("GET", S, MS, true, "200"), &a, false);
    t.record(answered("GET", S, MS, true, "200"), &b, false);
    t.record(answered("GET", S, MS, true, "200"), &b, false);
    let snap = t.snapshot(11 * S);
    assert_eq!(sum_all(&snap, "traces_service_graph_request_total"), 3);
    assert_eq!(
        value(
            &snap,
            "api",
            "traces_service_graph_request_total",
            &[("otel.metric.overflow", "true")]
        ),
        2.0
    );
    assert_eq!(t.stats().edges_overflowed, 2);
}

#[test]
fn stale_series_are_dropped_and_delta_restarts() {
    let mut t = telemetry(TelemetryConfig {
        stale_after_ns: 60 * S,
        ..Default::default()
    });
    let c = ctx("10.1.1.1:40000", "10.0.0.1:80", "http");
    t.record(answered("GET", S, MS, true, "200"), &c, false);
    assert_eq!(sum_all(&t.snapshot(2 * S), "wasmtap.server.requests"), 1);
    assert_eq!(sum_all(&t.snapshot(100 * S), "wasmtap.server.requests"), 0);
    assert!(t.stats().stale_dropped >= 2);

    let mut t = telemetry(TelemetryConfig {
        temporality: Temporality::Delta,
        ..Default::default()
    });
    t.record(answered("GET", S, MS, true, "200"), &c, false);
    t.record(answered("GET", S, MS, true, "200"), &c, false);
    let s1 = t.snapshot(2 * S);
    assert_eq!(s1.temporality, Temporality::Delta);
    assert_eq!(sum_all(&s1, "wasmtap.server.requests"), 2);
    t.record(answered("GET", 3 * S, MS, true, "200"), &c, false);
    let s2 = t.snapshot(4 * S);
    assert_eq!(sum_all(&s2, "wasmtap.server.requests"), 1);
    assert_eq!(s2.start_unix_nano, 2 * S);
    // Nothing new: no sums at all.
    assert_eq!(sum_all(&t.snapshot(5 * S), "wasmtap.server.requests"), 0);
}

#[test]
fn credentials_never_reach_a_span() {
    let mut t = telemetry(TelemetryConfig::default());
    let c = ctx("10.1.1.1:40000", "10.0.0.1:80", "http");
    let mut ex = answered("GET", S, MS, true, "200");
    ex.request.attributes.push(KeyValue::str(
        "http.request.header.Authorization",
        "Bearer s3cr3t",
    ));
    ex.request
        .attributes
        .push(KeyValue::str("http.request.header.x-trace", "keep"));
    let span = t.record(ex, &c, true).unwrap();
    assert!(
        !span
            .attributes
            .iter()
            .any(|kv| matches!(&kv.value, AttrValue::Str(s) if s.contains("s3cr3t")))
    );
    assert!(has(&span.attributes, "http.request.header.x-trace", "keep"));
    assert_eq!(t.stats().redacted, 1);
}

/// `deploy/prometheus/exported-metrics.txt` (what dashboards and alert rules
/// may use) lists exactly the observed-service families the agent exports.
#[test]
fn exported_metrics_list_matches_the_code() {
    let mut t = telemetry(TelemetryConfig::default());
    for (server, protocol) in [
        ("10.0.0.1:80", "http"),
        ("10.0.0.2:6379", "redis"),
        ("10.0.0.3:53", "dns"),
        ("10.0.0.4:9000", "custom"),
    ] {
        let c = ctx("10.1.1.1:40000", server, protocol);
        t.record(answered("GET", S, MS, false, "500"), &c, false);
        t.record(unanswered("GET", S), &c, false);
        t.flow_opened(c.client, c.server, "tcp", S);
        t.flow_closed(&FlowEnd {
            client: c.client,
            server: c.server,
            transport: "tcp",
            reason: "reset",
            start_ns: S,
            end_ns: 2 * S,
            packets: [1, 1],
            bytes: [1, 1],
            retransmitted: [0, 0],
            gaps: [0, 0],
            gap_bytes: [0, 0],
            handshake_rtt_ns: None,
        });
    }
    let mut text = String::new();
    wasmtap_telemetry::prom::write_prometheus(&t.snapshot(3 * S), &mut text);
    let mut exported: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (n, k) = l.split_once(' ').unwrap();
            (n.to_string(), k.to_string())
        })
        .collect();
    exported.sort();
    let list = include_str!("../../../deploy/prometheus/exported-metrics.txt");
    let mut listed: Vec<(String, String)> = list
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#') && !l.starts_with("wasmtap_agent_"))
        .map(|l| {
            let mut it = l.split_whitespace();
            (
                it.next().unwrap().to_string(),
                it.next().unwrap().to_string(),
            )
        })
        .collect();
    listed.sort();
    assert_eq!(exported, listed);
    // Every label the code writes is listed for its family.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, rest) = line.split_once('{').unwrap();
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|b| listed.iter().any(|(n, _)| n == b))
            })
            .unwrap_or(name);
        let labels = list
            .lines()
            .find(|l| l.split_whitespace().next() == Some(base))
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap_or("");
        for kv in rest.split("\",") {
            let k = kv.split('=').next().unwrap().trim_start_matches(',');
            if k == "le" || k == "otel_metric_overflow" || k.is_empty() || k.starts_with('}') {
                continue;
            }
            assert!(
                labels.split(',').any(|l| l == k),
                "{base}: label {k} not listed"
            );
        }
    }
}

#[test]
fn a_key_set_by_both_sides_appears_once_with_the_response_value() {
    let mut t = telemetry(TelemetryConfig::default());
    let c = ctx("10.1.1.1:40000", "10.0.0.1:6379", "redis");
    let mut ex = answered("GET", S, MS, true, "");
    ex.request
        .attributes
        .push(KeyValue::str("db.namespace", "0"));
    ex.request
        .attributes
        .push(KeyValue::str("db.query.text", "GET ?"));
    if let Some(r) = ex.response.as_mut() {
        r.attributes.push(KeyValue::str("db.namespace", "1"));
    }
    let span = t.record(ex, &c, true).unwrap();
    let ns: Vec<_> = span
        .attributes
        .iter()
        .filter(|kv| &*kv.key == "db.namespace")
        .collect();
    assert_eq!(ns.len(), 1, "{:?}", span.attributes);
    assert!(has(&span.attributes, "db.namespace", "1"));
    assert!(has(&span.attributes, "db.query.text", "GET ?"));
    let mut keys: Vec<&str> = span.attributes.iter().map(|kv| &*kv.key).collect();
    let n = keys.len();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), n, "unique keys");
}

#[test]
fn a_declined_card_is_the_clients_outcome_not_a_service_error() {
    let mut t = telemetry(TelemetryConfig::default());
    let c = ctx("10.1.1.1:40000", "10.0.0.1:8583", "iso8583");
    let mut declined = answered("0200 purchase", S, MS, true, "51");
    if let Some(r) = declined.response.as_mut() {
        r.attributes
            .push(KeyValue::str("wasmtap.iso8583.outcome", "declined"));
    }
    t.record(declined, &c, false);
    t.record(answered("0200 purchase", S, MS, false, "96"), &c, false);
    let snap = t.snapshot(2 * S);
    let op = ("wasmtap.operation", "0200 purchase");
    assert_eq!(
        value(
            &snap,
            "api",
            "wasmtap.server.requests",
            &[op, ("wasmtap.status_class", "client_error")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &snap,
            "api",
            "wasmtap.server.errors",
            &[op, ("wasmtap.status_class", "error")]
        ),
        1.0
    );
    assert_eq!(
        value(&snap, "api", "wasmtap.server.success_rate", &[op]),
        0.5
    );
}

#[test]
fn a_request_cut_by_the_capture_is_a_span_but_no_metric() {
    let mut t = telemetry(TelemetryConfig::default());
    let c = ctx("10.1.1.1:40000", "10.0.0.1:80", "http");
    let ex = Exchange {
        kind: ExchangeKind::Cut(wasmtap_telemetry::exchange::Missing::CaptureEnd),
        request: msg(MessageKind::Request, S, S + 1, "GET", Outcome::Unset, ""),
        response: None,
    };
    let span = t.record(ex, &c, true).unwrap();
    assert_eq!(span.status, wasmtap_telemetry::model::StatusCode::Unset);
    assert!(has(
        &span.attributes,
        "wasmtap.response_missing",
        "capture_end"
    ));
    let snap = t.snapshot(2 * S);
    assert_eq!(sum_all(&snap, "wasmtap.server.requests"), 0);
    assert_eq!(sum_all(&snap, "wasmtap.server.errors"), 0);
    assert!(t.edge_summary().is_empty());
}

#[test]
fn sampling_keeps_a_share_of_spans_and_every_failure_and_breach_but_metrics_count_all() {
    use wasmtap_telemetry::red::Sampling;
    let mut t = telemetry(TelemetryConfig {
        sampling: Sampling {
            ratio: 0.25,
            keep_errors: true,
            keep_sla_breaches: true,
        },
        sla_default_ns: 100 * MS,
        ..TelemetryConfig::default()
    });
    let (mut ok_kept, mut failed_kept, mut slow_kept) = (0, 0, 0);
    for i in 0..4000u64 {
        let mut c = ctx("10.0.0.5:4000", "10.0.0.1:80", "http");
        c.flow_id = i;
        let start = S + i * MS;
        // Every 10th fails, every 10th (others) is slow, the rest are fast successes.
        let (ex, kind) = match i % 10 {
            0 => (answered("GET", start, MS, false, "500"), 1),
            5 => (answered("GET", start, 200 * MS, true, "200"), 2),
            _ => (answered("GET", start, MS, true, "200"), 0),
        };
        if t.record(ex, &c, true).is_some() {
            match kind {
                0 => ok_kept += 1,
                1 => failed_kept += 1,
                _ => slow_kept += 1,
            }
        }
    }
    assert_eq!(failed_kept, 400, "every failure kept");
    assert_eq!(slow_kept, 400, "every SLA breach kept");
    // A quarter of the 3,200 ordinary spans, give or take chance.
    assert!((650..=950).contains(&ok_kept), "kept {ok_kept} of 3200");
    assert_eq!(t.stats().sampled_out, 3200 - ok_kept);
    let snap = t.final_snapshot(10 * S);
    assert_eq!(
        sum_all(&snap, "wasmtap.server.requests"),
        4000,
        "metrics count every exchange"
    );

    // Consistent with the caller's trace: the same trace id, the same verdict.
    let s = Sampling {
        ratio: 0.5,
        ..Sampling::default()
    };
    let low = [0u8; 16];
    let mut high = [0xffu8; 16];
    assert!(s.keeps_trace(&low));
    assert!(!s.keeps_trace(&high));
    high[9] = 0x7f;
    assert!(s.keeps_trace(&high), "0x7fff... is below half of 2^56");
    assert!(Sampling::default().keeps_trace(&[0xff; 16]));
}
