//! MongoDB decoder (plugins/mongodb): golden tests on every capture in
//! tests/pcaps/mongodb/ against the DeepFlow expectations of the shared
//! MANIFEST, and per-capture summaries in tests/golden/mongodb/ (regenerate
//! with `UPDATE_EXPECT=1`). There is no MongoDB server in Debian, so there is
//! no real-server capture test for this decoder: captures only.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::{attr, replay_spans, root};

fn spans(path: &Path) -> Vec<Value> {
    replay_spans(path, &[])
}

fn pcap(file: &str) -> std::path::PathBuf {
    root().join("tests/pcaps/mongodb").join(file)
}

/// Span status per span ("ok" for unset: server spans leave success unset).
fn statuses(spans: &[Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for s in spans {
        let st = match s["status"]["code"].as_str().unwrap_or("") {
            "error" => "error",
            _ => "ok",
        };
        *counts.entry(st.to_string()).or_default() += 1;
    }
    counts
}

fn map(items: &[(&str, usize)]) -> BTreeMap<String, usize> {
    items.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

#[test]
fn mongo_shell_session_matches_deepflow() {
    // DeepFlow mongo.result: Request 15 / Response 15, status Ok 14,
    // ClientError 1 (replSetGetStatus answered ok: 0, code 76).
    // tshark: 30 messages (OP_QUERY 1, OP_REPLY 1, OP_MSG 28): the same.
    let spans = spans(&pcap("deepflow__mongo.pcap"));
    assert_eq!(spans.len(), 15);
    assert_eq!(statuses(&spans), map(&[("ok", 14), ("error", 1)]));
    let ops: Vec<String> = spans.iter().map(|s| attr(s, "db.operation.name")).collect();
    assert_eq!(
        ops,
        [
            "isMaster",
            "saslContinue",
            "saslContinue",
            "whatsmyuri",
            "buildinfo",
            "getLog",
            "isMaster",
            "buildInfo",
            "getCmdLineOpts",
            "buildInfo",
            "isMaster",
            "replSetGetStatus",
            "getLog",
            "isMaster",
            "endSessions"
        ]
    );
    // The first exchange is legacy OP_QUERY on admin.$cmd, answered by OP_REPLY.
    assert_eq!(attr(&spans[0], "mongodb.op_code"), "OP_QUERY");
    assert_eq!(attr(&spans[0], "db.namespace"), "admin");
    assert_eq!(attr(&spans[0], "db.response.returned_rows"), "1");
    let err = &spans[11];
    assert_eq!(err["status"]["code"], "error");
    assert_eq!(attr(err, "db.response.status_code"), "76");
    assert_eq!(attr(err, "error.type"), "NoReplicationEnabled");
    for s in &spans {
        assert_eq!(attr(s, "db.system.name"), "mongodb");
        assert_eq!(attr(s, "server.port"), "27017");
    }
}

#[test]
fn mongo_single_find_matches_deepflow() {
    // DeepFlow mongo-msg.result: Request 1 / Response 1, Ok; port 3717, no
    // handshake (the flow starts with the request).
    let spans = spans(&pcap("deepflow__mongo-msg.pcap"));
    assert_eq!(spans.len(), 1);
    let s = &spans[0];
    assert_eq!(s["name"], "find");
    assert_eq!(statuses(&spans), map(&[("ok", 1)]));
    assert_eq!(attr(s, "db.operation.name"), "find");
    assert_eq!(attr(s, "db.collection.name"), "query");
    assert_eq!(attr(s, "db.namespace"), "sky-test");
    assert_eq!(attr(s, "server.port"), "3717");
}

fn summary(spans: &[Value]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "{} {} {} op_code={} ns={} coll={} status={} code={} error={} rows={} dur_ns={}\n",
                s["start_unix_nano"],
                s["resource"]["service.name"].as_str().unwrap_or(""),
                s["name"].as_str().unwrap_or(""),
                attr(s, "mongodb.op_code"),
                attr(s, "db.namespace"),
                attr(s, "db.collection.name"),
                s["status"]["code"].as_str().unwrap_or(""),
                attr(s, "db.response.status_code"),
                attr(s, "error.type"),
                attr(s, "db.response.returned_rows"),
                s["end_unix_nano"].as_u64().unwrap_or(0)
                    - s["start_unix_nano"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn mongodb_golden_summaries() {
    crate::check_golden("mongodb", summary);
}
