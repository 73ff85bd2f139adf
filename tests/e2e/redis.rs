//! Redis decoder (plugins/redis): golden tests on every capture in
//! tests/pcaps/redis/, and real traffic from redis-server + redis-benchmark.
//!
//! Layer 1: the exchanges (operation, outcome, error code) must equal the
//! peer tool's expectation from the shared MANIFEST (Zeek, DeepFlow; where
//! tshark disagrees, the peer wins). Layer 2: a per-span summary is compared
//! with `tests/golden/redis/<file>.txt` (regenerate with `UPDATE_EXPECT=1`).

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::{attr, replay_spans, root};

fn spans_of(path: &Path, extra: &[&str]) -> Vec<Value> {
    replay_spans(path, extra)
}

fn capture(file: &str) -> Vec<Value> {
    spans_of(&root().join("tests/pcaps/redis").join(file), &[])
}

/// "OPERATION OUTCOME" per span: OUTCOME is `ok`, the error code for error
/// replies, or the span status for anything else (one-way pushes: `push`).
fn key(s: &Value) -> String {
    let code = attr(s, "db.response.status_code");
    let status = s["status"]["code"].as_str().unwrap_or("");
    let outcome = if !code.is_empty() {
        code
    } else if attr(s, "db.query.text").is_empty() {
        "push".to_string()
    } else if status == "error" {
        "error".to_string()
    } else {
        "ok".to_string()
    };
    format!("{} {outcome}", s["name"].as_str().unwrap_or(""))
}

fn counts(spans: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in spans {
        *m.entry(key(s)).or_default() += 1;
    }
    m
}

/// (file, expected exchanges with counts).
const PEER: &[(&str, &[(&str, usize)])] = &[
    // DeepFlow redis-error.result: get abcd answered -NOAUTH.
    ("deepflow__redis-error.pcap", &[("GET NOAUTH", 1)]),
    // DeepFlow redis.result: 10 requests (GET x7, EXISTS x3). Its 18
    // "Response" lines are the 10 replies plus 8 records with
    // is_redis=false: DeepFlow parses per packet, and the 8 TCP segments
    // that continue the 490493-byte bulk reply of the last GET each become a
    // non-Redis record. tshark counts 9 server values because that last
    // reply lacks its final CRLF (the capture ends first). We report 10
    // exchanges: the last reply is completed at close, marked truncated.
    ("deepflow__redis.pcap", &[("GET ok", 7), ("EXISTS ok", 3)]),
    // Zeek pipelined baseline: 3 x PING -> PONG (inline commands).
    ("zeek__redis-pipelining-example.pcap", &[("PING ok", 3)]),
    // Zeek pubsub baseline: redis.log has 7 rows (PUBLISH x2, SET, SUBSCRIBE,
    // PSUBSCRIBE, RESET, GET) and the script output shows the 3 published
    // messages (1 message, 2 pmessage) as pushes. Zeek logs SUBSCRIBE and
    // PSUBSCRIBE without a reply; we pair each with its confirmation.
    (
        "zeek__redis-pubsub.pcap",
        &[
            ("PUBLISH ok", 2),
            ("SET ok", 1),
            ("SUBSCRIBE ok", 1),
            ("PSUBSCRIBE ok", 1),
            ("RESET ok", 1),
            ("GET ok", 1),
            ("message push", 1),
            ("pmessage push", 2),
        ],
    ),
    // Zeek start-with-server: Zeek deliberately reports nothing when the
    // capture starts with server data. We differ on purpose: the leading
    // +OK answers nothing we saw (the host counts it as an unmatched
    // response), and the complete SET -> +OK that follows is reported.
    ("zeek__redis-start-with-server.pcapng", &[("SET ok", 1)]),
    // Zeek large-requests-responses: COMMAND (the client sent COMMAND DOCS;
    // we name container commands with their subcommand), SET x2, GET x2.
    (
        "zeek__redis-large-requests-responses.pcap",
        &[("COMMAND DOCS ok", 1), ("SET ok", 2), ("GET ok", 2)],
    ),
    // Zeek attributes baseline: FAKE and FAKE2, each with one reply (the
    // RESP3 attributes are part of the reply, not replies themselves).
    ("zeek__redis-attr.pcap", &[("FAKE ok", 1), ("FAKE2 ok", 1)]),
];

#[test]
fn redis_captures_match_peer_expectations() {
    let mut failures = Vec::new();
    for (file, want) in PEER {
        let got = counts(&capture(file));
        let want: BTreeMap<String, usize> = want.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        if got != want {
            failures.push(format!("{file}: want {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn redis_every_capture_has_a_peer_expectation() {
    let mut files: Vec<String> = std::fs::read_dir(root().join("tests/pcaps/redis"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().to_string())
        .collect();
    files.sort();
    let mut listed: Vec<String> = PEER.iter().map(|(f, _)| f.to_string()).collect();
    listed.sort();
    assert_eq!(files, listed);
}

#[test]
fn redis_large_reply_is_streamed_and_truncated_at_close() {
    let spans = capture("deepflow__redis.pcap");
    let big: Vec<&Value> = spans
        .iter()
        .filter(|s| s["attributes"]["client.port"] == 60314)
        .collect();
    assert_eq!(big.len(), 1);
    assert_eq!(attr(big[0], "wasmtap.truncated"), "true");
    assert_eq!(attr(big[0], "db.query.text"), "GET ?");
    // Every other exchange is complete.
    let others = spans
        .iter()
        .filter(|s| attr(s, "wasmtap.truncated").is_empty())
        .count();
    assert_eq!(others, 9);
}

#[test]
fn redis_query_text_is_masked_unless_configured() {
    let f = root().join("tests/pcaps/redis/zeek__redis-large-requests-responses.pcap");
    let masked = spans_of(&f, &[]);
    let texts: Vec<String> = masked.iter().map(|s| attr(s, "db.query.text")).collect();
    assert_eq!(
        texts,
        ["COMMAND DOCS", "SET ? ?", "SET ? ?", "GET ?", "GET ?"]
    );
    let text = serde_json::to_string(&masked).unwrap();
    assert!(!text.contains("FIVE_HUNDRED_X"), "{text}");

    let cfg = std::env::temp_dir().join(format!("wasmtap-redis-{}.toml", std::process::id()));
    std::fs::write(&cfg, "[plugins.config.redis]\nraw_query_text = true\n").unwrap();
    let raw = spans_of(&f, &["--config", cfg.to_str().unwrap()]);
    std::fs::remove_file(&cfg).ok();
    let texts: Vec<String> = raw.iter().map(|s| attr(s, "db.query.text")).collect();
    assert!(texts[1].starts_with("SET FIVE_HUNDRED_X XXXX"), "{texts:?}");
    assert_eq!(texts[3], "GET FIVE_HUNDRED_X");
}

#[test]
fn redis_error_reply_sets_status_code() {
    let spans = capture("deepflow__redis-error.pcap");
    assert_eq!(spans.len(), 1);
    let s = &spans[0];
    assert_eq!(s["status"]["code"], "error");
    assert_eq!(attr(s, "db.system.name"), "redis");
    assert_eq!(attr(s, "db.operation.name"), "GET");
    assert_eq!(attr(s, "db.response.status_code"), "NOAUTH");
    assert_eq!(attr(s, "network.protocol.name"), "redis");
}

/// One line per span: what a reviewer needs to see a regression.
fn summary_line(s: &Value) -> String {
    format!(
        "{} {} {} client={} query={:?} code={} status={} dur_ns={} truncated={}",
        s["start_unix_nano"],
        s["resource"]["service.name"].as_str().unwrap_or(""),
        s["name"].as_str().unwrap_or(""),
        s["attributes"]["client.port"],
        attr(s, "db.query.text"),
        attr(s, "db.response.status_code"),
        s["status"]["code"].as_str().unwrap_or(""),
        s["end_unix_nano"].as_u64().unwrap_or(0) - s["start_unix_nano"].as_u64().unwrap_or(0),
        attr(s, "wasmtap.truncated"),
    )
}

#[test]
fn redis_golden_summaries() {
    crate::check_golden("redis", |spans| {
        spans.iter().map(|s| summary_line(s) + "\n").collect()
    });
}

/// Captures redis-benchmark traffic (`pipeline` commands per write) and
/// checks one span per benchmarked command, all answered without error.
fn benchmark_counts_equal_commands_sent(pipeline: &str) {
    const N: usize = 2000;
    let pcap = std::env::temp_dir().join(format!(
        "wasmtap-redis-{}-p{pipeline}.pcap",
        std::process::id()
    ));
    let st = Command::new(root().join("scripts/capture-redis.sh"))
        .arg(&pcap)
        .args([&N.to_string(), pipeline, "4"])
        .status()
        .unwrap();
    assert!(st.success(), "capture-redis.sh failed");
    let spans = spans_of(&pcap, &[]);
    std::fs::remove_file(&pcap).ok();
    let mut ops: BTreeMap<String, usize> = BTreeMap::new();
    for s in &spans {
        *ops.entry(attr(s, "db.operation.name")).or_default() += 1;
    }
    // redis-benchmark sends N of each benchmarked command; its setup
    // commands (CONFIG GET save/appendonly) are reported too, not counted.
    for op in ["SET", "GET", "INCR", "LPUSH"] {
        assert_eq!(ops.get(op), Some(&N), "{op}: {ops:?}");
    }
    let benchmarked = 4 * N;
    let others: usize = ops
        .iter()
        .filter(|(k, _)| !["SET", "GET", "INCR", "LPUSH"].contains(&k.as_str()))
        .map(|(_, n)| n)
        .sum();
    assert!(others <= 10, "unexpected extra commands: {ops:?}");
    assert_eq!(spans.len(), benchmarked + others);
    let bad: Vec<&Value> = spans
        .iter()
        .filter(|s| s["status"]["code"] == "error")
        .collect();
    assert!(bad.is_empty(), "errors: {:?}", bad.first());
    for s in &spans {
        // Arguments are masked by default.
        assert!(attr(s, "db.query.text").ends_with('?'), "{s}");
    }
}

#[test]
fn redis_benchmark_capture_counts_equal_commands_sent() {
    benchmark_counts_equal_commands_sent("1");
}

#[test]
fn redis_benchmark_pipelined_capture_counts_equal_commands_sent() {
    benchmark_counts_equal_commands_sent("8");
}
