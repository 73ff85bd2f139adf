//! Kafka: the shared captures against the peer's expectations (DeepFlow's
//! `.result` files, in the MANIFEST), and real protocol traffic from a
//! third-party library (kafka-python's client protocol against a stub broker
//! answering with kafka-python's response structs, `scripts/capture-kafka.sh`):
//! every request, error code, one-way Produce and record count must equal
//! what the stub logged. The capture made once is kept in
//! `tests/pcaps/kafka/kafka-python.pcap` with its log, so the comparison
//! also runs without Python.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::{attr, replay_spans, root};

const NAMES: [(i64, &str); 13] = [
    (0, "Produce"),
    (1, "Fetch"),
    (2, "ListOffsets"),
    (3, "Metadata"),
    (8, "OffsetCommit"),
    (9, "OffsetFetch"),
    (10, "FindCoordinator"),
    (11, "JoinGroup"),
    (12, "Heartbeat"),
    (13, "LeaveGroup"),
    (14, "SyncGroup"),
    (18, "ApiVersions"),
    (19, "CreateTopics"),
];

/// "operation outcome": outcome is `ok`, the error code, `one-way` or `-` (no response).
fn outcomes(spans: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in spans {
        let outcome = if attr(s, "wasmtap.one_way") == "true" {
            "one-way".to_string()
        } else if s["status"]["code"] == "error" {
            s["status"]["message"].as_str().unwrap_or("?").to_string()
        } else {
            "ok".to_string()
        };
        *m.entry(format!("{} {outcome}", s["name"].as_str().unwrap()))
            .or_insert(0) += 1;
    }
    m
}

fn config(ports: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("wasmtap-kafka-{}.toml", std::process::id()));
    std::fs::write(&p, format!("[plugins.ports]\nkafka = [{ports}]\n")).unwrap();
    p
}

/// A capture, its expected "operation outcome" counts, and its first topic.
type Case = (&'static str, &'static [(&'static str, usize)], &'static str);

/// DeepFlow's expectations (agent/resources/test/flow_generator/kafka/*.result).
#[test]
fn shared_captures_match_the_peer() {
    // The join-group capture has no handshake and a client port below the
    // ephemeral range: the ports guess the roles backwards, and the Kafka
    // probe, recognising a request in the "to client" direction, reverses
    // them (no configuration needed; `[plugins.ports]` gives the same).
    let cfg = config("9092, 36333");
    let cases: &[Case] = &[
        (
            "deepflow__00-produce-v2.pcap",
            &[("Produce ok", 1)],
            "topic2",
        ),
        (
            "deepflow__01-fetch-v12-ok.pcap",
            &[("Fetch ok", 1)],
            "zqy-test",
        ),
        (
            "deepflow__11-join-group-v7.pcap",
            &[("JoinGroup -1", 1)],
            "",
        ),
        (
            "deepflow__18-api-versions-v3.pcap",
            &[("ApiVersions ok", 1)],
            "",
        ),
        (
            "deepflow__mixed-with-unsupported.pcap",
            &[("Fetch ok", 1), ("Heartbeat ok", 1), ("OffsetCommit ok", 1)],
            "",
        ),
    ];
    for (file, want, topic) in cases {
        let path = root().join("tests/pcaps/kafka").join(file);
        let spans = replay_spans(&path, &[]);
        let configured = replay_spans(&path, &["--config", cfg.to_str().unwrap()]);
        assert_eq!(outcomes(&spans), outcomes(&configured), "{file}");
        let want: BTreeMap<String, usize> = want.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        assert_eq!(outcomes(&spans), want, "{file}: {spans:#?}");
        for s in &spans {
            assert_eq!(attr(s, "messaging.system"), "kafka", "{file}");
            assert_eq!(attr(s, "network.protocol.name"), "kafka", "{file}");
        }
        if !topic.is_empty() {
            assert_eq!(
                attr(&spans[0], "messaging.destination.name"),
                *topic,
                "{file}"
            );
        }
    }
    // JoinGroup v7: flexible header and body, group and client named.
    let spans = replay_spans(
        &root().join("tests/pcaps/kafka/deepflow__11-join-group-v7.pcap"),
        &["--config", cfg.to_str().unwrap()],
    );
    assert_eq!(attr(&spans[0], "messaging.consumer.group.name"), "zzzz12");
    assert_eq!(attr(&spans[0], "error.type"), "UNKNOWN_SERVER_ERROR");
    let unconfigured = replay_spans(
        &root().join("tests/pcaps/kafka/deepflow__11-join-group-v7.pcap"),
        &[],
    );
    assert_eq!(attr(&unconfigured[0], "server.port"), "36333");
    assert_eq!(attr(&unconfigured[0], "client.port"), "30120");
}

/// Compares the spans of `pcap` with the stub's log.
fn check(pcap: &Path, log: &Path) {
    let names: BTreeMap<i64, &str> = NAMES.into_iter().collect();
    let logged: Vec<Value> = std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(logged.len() > 20, "{} entries", logged.len());
    let mut want = BTreeMap::new();
    let mut records: BTreeMap<String, i64> = BTreeMap::new();
    for e in &logged {
        let op = names[&e["api"].as_i64().unwrap()];
        let outcome = match e.get("error") {
            None => "one-way".to_string(),
            Some(Value::Null) => "ok".to_string(),
            Some(c) => c.to_string(),
        };
        *want.entry(format!("{op} {outcome}")).or_insert(0) += 1;
        if let Some(n) = e.get("records").and_then(Value::as_i64) {
            *records.entry(op.to_string()).or_insert(0) += n;
        }
    }
    let spans = replay_spans(pcap, &[]);
    assert_eq!(outcomes(&spans), want, "{}", pcap.display());
    let mut got: BTreeMap<String, i64> = BTreeMap::new();
    for s in &spans {
        let n = attr(s, "messaging.batch.message_count");
        if !n.is_empty() {
            *got.entry(s["name"].as_str().unwrap().to_string())
                .or_insert(0) += n.parse::<i64>().unwrap();
        }
        assert_eq!(attr(s, "messaging.client.id"), "wasmtap-test");
        assert_ne!(attr(s, "error.type"), "no_response", "{s}");
    }
    // Error responses with a failed fetch carry no records: only the non-zero sums count.
    records.retain(|_, n| *n > 0);
    assert_eq!(got, records, "records produced and fetched");
    // Error codes are named.
    assert!(
        spans
            .iter()
            .any(|s| attr(s, "error.type") == "UNKNOWN_TOPIC_OR_PARTITION")
    );
    assert!(
        spans
            .iter()
            .any(|s| attr(s, "error.type") == "REBALANCE_IN_PROGRESS")
    );
    assert!(
        spans
            .iter()
            .any(|s| attr(s, "error.type") == "OFFSET_OUT_OF_RANGE")
    );
}

#[test]
fn bundled_kafka_python_capture_matches_the_stub_log() {
    check(
        &root().join("tests/pcaps/kafka/kafka-python.pcap"),
        &root().join("tests/golden/kafka/kafka-python.log.jsonl"),
    );
}

#[test]
fn real_kafka_python_traffic_matches_the_stub_log() {
    let dir = std::env::temp_dir().join(format!("wasmtap-kafka-live-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let o = Command::new(root().join("scripts/capture-kafka.sh"))
        .arg(&dir)
        .arg("4")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "capture-kafka.sh: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    check(&dir.join("kafka.pcap"), &dir.join("kafka.log.jsonl"));
    let _ = std::fs::remove_dir_all(&dir);
}
