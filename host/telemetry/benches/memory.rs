//! Memory and time of the telemetry stage holding many services and
//! operations: `cargo bench -p wasmtap-telemetry --bench memory [SERVICES [OPS]]`.
//!
//! Records one exchange per (service, operation) three times (ok, client
//! error, server error: three RED series per operation), plus an L4 flow and
//! an edge per service, takes two snapshots, and prints the resident memory
//! it added (from /proc/self/statm) per service and per operation.

// A benchmark times itself.
#![allow(clippy::disallowed_methods)]
#![allow(missing_docs, clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use wasmtap_telemetry::exchange::{Exchange, ExchangeKind, Message, MessageKind, Outcome};
use wasmtap_telemetry::graph::FlowEnd;
use wasmtap_telemetry::model::KeyValue;
use wasmtap_telemetry::red::{FlowCtx, Telemetry, TelemetryConfig};
use wasmtap_telemetry::services::ServiceMap;

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn msg(kind: MessageKind, t: u64, op: &str, status: Outcome, code: &str) -> Message {
    Message {
        kind,
        correlation: None,
        start_ns: t,
        end_ns: t + 1000,
        size: 100,
        operation: op.into(),
        status,
        status_code: code.into(),
        attributes: Vec::new(),
    }
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let services = args.first().copied().unwrap_or(10_000);
    let ops = args.get(1).copied().unwrap_or(20);
    let series = services * ops * 3;
    let cfg = TelemetryConfig {
        max_series: series as usize + 1,
        max_services: services as usize + 1,
        max_edges: services as usize + 1,
        max_l4_pairs: services as usize + 1,
        ..Default::default()
    };
    let before = rss_bytes();
    let mut t = Telemetry::new(ServiceMap::new(vec![], vec![]), cfg);
    let started = Instant::now();
    let mut n = 0u64;
    for s in 0..services {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + s as u32));
        let server = SocketAddr::new(ip, 8080);
        let client = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1)), 40000);
        let ctx = FlowCtx {
            client,
            server,
            protocol: "http",
            transport: "tcp",
            flow_id: s,
        };
        t.flow_opened(client, server, "tcp", 1);
        for o in 0..ops {
            for (code, outcome) in [
                ("200", Outcome::Ok),
                ("404", Outcome::Ok),
                ("500", Outcome::Error),
            ] {
                n += 1;
                let mut req = msg(MessageKind::Request, n * 1000, "GET", Outcome::Unset, "");
                req.attributes
                    .push(KeyValue::str("url.path", format!("/api/op{o}/items/{n}")));
                req.attributes
                    .push(KeyValue::str("http.request.method", "GET"));
                let ex = Exchange {
                    kind: ExchangeKind::Complete,
                    request: req,
                    response: Some(msg(
                        MessageKind::Response,
                        n * 1000 + 500,
                        "",
                        outcome,
                        code,
                    )),
                };
                t.record(ex, &ctx, false);
            }
        }
        t.flow_closed(&FlowEnd {
            client,
            server,
            transport: "tcp",
            reason: "fin",
            start_ns: 1,
            end_ns: n * 1000,
            packets: [10, 10],
            bytes: [1000, 1000],
            retransmitted: [0, 0],
            gaps: [0, 0],
            gap_bytes: [0, 0],
            handshake_rtt_ns: Some(100_000),
        });
    }
    let record = started.elapsed();
    let held = rss_bytes().saturating_sub(before);
    let started = Instant::now();
    let snap = t.snapshot(n * 1000 + 1);
    let snap_time = started.elapsed();
    let points = snap.points.len();
    drop(snap);
    let stats = t.stats();
    println!(
        "services {services}, operations {}, RED series {series}, exchanges {n}",
        services * ops
    );
    println!(
        "resident memory held: {:.1} MiB ({:.0} bytes per operation, {:.1} KiB per service)",
        held as f64 / (1 << 20) as f64,
        held as f64 / (services * ops) as f64,
        held as f64 / services as f64 / 1024.0
    );
    println!(
        "record: {:.0} ns per exchange; snapshot: {points} points in {:.2} s; series held {}",
        record.as_nanos() as f64 / n as f64,
        snap_time.as_secs_f64(),
        stats.series_held
    );
    assert_eq!(stats.series_overflowed, 0);
}
