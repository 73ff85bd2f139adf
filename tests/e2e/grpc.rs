//! Real gRPC: a grpcio server and client (`scripts/capture-grpc.sh`): unary,
//! server-streaming, client-streaming and bidi calls, some failing with
//! chosen codes, many concurrent on one channel. Captured from the
//! connection's start, every call's method, status code and message count
//! equals what the client recorded. Captured from the middle (after the
//! channel warmed its HPACK tables up), every call is still one exchange,
//! nothing is mis-attributed (a method or status reported is the true one),
//! and what cannot be known is counted. The captures made once are kept in
//! `tests/pcaps/grpc/` with the client's logs.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use wasmtap_plugin_http2::GRPC_CODES as CODES;

use crate::{attr, replay_spans, root};

fn log(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// "Method CODE responses" per call.
fn logged(calls: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for c in calls {
        let k = format!(
            "{} {} {}",
            c["method"].as_str().unwrap(),
            c["code"].as_str().unwrap(),
            c["responses"]
        );
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

fn decoded(spans: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in spans {
        let code: usize = attr(s, "rpc.grpc.status_code").parse().unwrap_or(99);
        let k = format!(
            "{} {} {}",
            attr(s, "rpc.method"),
            CODES.get(code).copied().unwrap_or("?"),
            attr(s, "wasmtap.grpc.response_messages")
        );
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

fn check_full(pcap: &Path, log_path: &Path) {
    let calls = log(log_path);
    assert!(calls.len() > 30);
    let spans = replay_spans(pcap, &[]);
    assert_eq!(decoded(&spans), logged(&calls), "{}", pcap.display());
    for s in &spans {
        assert_eq!(attr(s, "rpc.system"), "grpc");
        assert_eq!(attr(s, "rpc.service"), "demo.Echo");
        assert_eq!(
            s["name"].as_str().unwrap(),
            format!("demo.Echo/{}", attr(s, "rpc.method"))
        );
        let code: i64 = attr(s, "rpc.grpc.status_code").parse().unwrap();
        // Server-span errors per the semantic conventions.
        let error = matches!(code, 2 | 4 | 12 | 13 | 14 | 15);
        assert_eq!(s["status"]["code"] == "error", error, "{s}");
    }
    // Client-streaming requests carried their four messages.
    assert!(
        spans
            .iter()
            .filter(|s| attr(s, "rpc.method") == "ClientStream")
            .all(|s| attr(s, "wasmtap.grpc.request_messages") == "4")
    );
}

fn check_mid(pcap: &Path, log_path: &Path) {
    let calls = log(log_path);
    let spans = replay_spans(pcap, &[]);
    // Every call is one exchange, none blamed on the service.
    assert_eq!(spans.len(), calls.len(), "{}", pcap.display());
    let truth = logged(&calls);
    let mut unknown = 0;
    for s in &spans {
        assert_ne!(attr(s, "error.type"), "no_response");
        unknown += attr(s, "wasmtap.http2.hpack_unknown")
            .parse::<u64>()
            .unwrap_or(0);
        // A method named is a method called; a status named is one it got.
        let method = attr(s, "rpc.method");
        if !method.is_empty() {
            assert!(
                truth.keys().any(|k| k.starts_with(&format!("{method} "))),
                "{s}"
            );
            let code = attr(s, "rpc.grpc.status_code");
            if let Ok(c) = code.parse::<usize>() {
                let name = CODES[c];
                assert!(
                    truth
                        .keys()
                        .any(|k| k.starts_with(&format!("{method} {name} "))),
                    "{s}"
                );
            }
        }
    }
    assert!(unknown > 0, "entries older than the capture are counted");
    // The method first called inside the capture is decoded exactly.
    let late = calls.iter().filter(|c| c["method"] == "Late").count();
    assert!(late > 0);
    assert_eq!(
        spans
            .iter()
            .filter(|s| attr(s, "rpc.method") == "Late")
            .count(),
        late
    );
}

#[test]
fn bundled_grpcio_captures_match_the_client_log() {
    let (p, g) = (
        root().join("tests/pcaps/grpc"),
        root().join("tests/golden/grpc"),
    );
    check_full(
        &p.join("grpcio-full.pcap"),
        &g.join("grpcio-full.log.jsonl"),
    );
    check_mid(&p.join("grpcio-mid.pcap"), &g.join("grpcio-mid.log.jsonl"));
}

#[test]
fn real_grpcio_traffic_matches_the_client_log() {
    let dir = std::env::temp_dir().join(format!("wasmtap-grpc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let o = Command::new(root().join("scripts/capture-grpc.sh"))
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "capture-grpc.sh: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    check_full(&dir.join("full.pcap"), &dir.join("full.log.jsonl"));
    check_mid(&dir.join("mid.pcap"), &dir.join("mid.log.jsonl"));
    let _ = std::fs::remove_dir_all(&dir);
}
