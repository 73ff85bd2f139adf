//! AMQP 0-9-1: the shared captures (what tshark decodes in them, method by
//! method), and real traffic: Debian's RabbitMQ (a node of its own, started
//! by `scripts/capture-amqp.sh`) with a pika client that declares, publishes
//! with confirms, gets, acks, nacks, consumes and provokes a channel error.
//! Counts must equal what the client logged, and the channel errors what the
//! broker's own log says. The capture made once is kept in
//! `tests/pcaps/amqp/rabbitmq-pika.pcap` with both logs, so the comparison
//! also runs without RabbitMQ.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::{attr, replay_spans, root};

/// "operation outcome": `ok`, the reply code of an error, `one-way`.
fn outcomes(spans: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in spans {
        let outcome = if s["status"]["code"] == "error" {
            s["status"]["message"].as_str().unwrap_or("?").to_string()
        } else if attr(s, "wasmtap.one_way") == "true" {
            "one-way".to_string()
        } else {
            "ok".to_string()
        };
        *m.entry(format!("{} {outcome}", s["name"].as_str().unwrap()))
            .or_insert(0) += 1;
    }
    m
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// Each client method tshark decodes (`amqp.method.class`/`method`) is one
/// span here: handshakes, declares, publish, consume, deliver, closes; the
/// broker's 530 NOT_ALLOWED (bad vhost), 406 PRECONDITION_FAILED and 312
/// NO_ROUTE are errors of the requests (or the message) they answer.
#[test]
fn shared_captures_decode_every_method() {
    let dir = root().join("tests/pcaps/amqp");
    let handshake = [
        ("connection.start-ok ok", 1),
        ("connection.open ok", 1),
        ("channel.open ok", 1),
    ];
    let cases: Vec<(&str, BTreeMap<String, usize>)> = vec![
        (
            "deepflow__amqp1.pcap",
            counts(&[
                ("connection.start-ok ok", 2),
                ("connection.open ok", 2),
                ("channel.open ok", 2),
                ("queue.declare ok", 2),
                ("exchange.declare ok", 2),
                ("queue.bind ok", 1),
                ("basic.consume ok", 1),
                ("basic.publish one-way", 1),
                ("basic.deliver one-way", 1),
                ("channel.close ok", 1),
                ("connection.close ok", 1),
            ]),
        ),
        ("deepflow__amqp2.pcap", {
            let mut c = counts(&handshake);
            c.extend(counts(&[
                ("exchange.declare ok", 1),
                ("basic.publish one-way", 1),
                ("basic.deliver one-way", 1),
            ]));
            c
        }),
        (
            "deepflow__amqp-error.pcap",
            counts(&[
                ("connection.start-ok ok", 4),
                ("connection.open 530", 2),
                ("connection.open ok", 2),
                ("channel.open ok", 2),
                ("exchange.declare ok", 2),
                ("exchange.declare 406", 1),
                ("basic.publish one-way", 1),
                ("basic.return 312", 1),
                ("channel.close ok", 1),
                ("connection.close ok", 2),
            ]),
        ),
    ];
    for (file, want) in cases {
        let spans = replay_spans(&dir.join(file), &[]);
        assert_eq!(outcomes(&spans), want, "{file}");
        for s in &spans {
            assert_eq!(attr(s, "messaging.system"), "rabbitmq", "{file}");
            assert_ne!(attr(s, "error.type"), "no_response", "{file}: {s}");
        }
    }
    let spans = replay_spans(&dir.join("deepflow__amqp-error.pcap"), &[]);
    let errs: Vec<String> = spans
        .iter()
        .map(|s| attr(s, "error.type"))
        .filter(|e| !e.is_empty())
        .collect();
    assert_eq!(
        errs,
        [
            "NOT_ALLOWED",
            "NOT_ALLOWED",
            "PRECONDITION_FAILED",
            "NO_ROUTE"
        ]
    );
}

fn check(pcap: &Path, log: &Path, broker_errors: usize) {
    let log: Value = serde_json::from_str(&std::fs::read_to_string(log).unwrap()).unwrap();
    let n = |k: &str| log[k].as_u64().unwrap() as usize;
    assert!(n("published") > 10);
    let spans = replay_spans(pcap, &[]);
    let got = outcomes(&spans);
    let count = |k: &str| got.get(k).copied().unwrap_or(0);
    let ctx = format!("{}: {got:#?}", pcap.display());
    assert_eq!(count("basic.publish one-way"), n("published"), "{ctx}");
    assert_eq!(count("basic.return 312"), n("returned"), "{ctx}");
    assert_eq!(count("basic.get ok"), n("got") + n("get_empty"), "{ctx}");
    assert_eq!(count("basic.ack one-way"), n("acked"), "{ctx}");
    assert_eq!(count("basic.nack one-way"), n("nacked"), "{ctx}");
    assert_eq!(count("basic.deliver one-way"), n("delivered"), "{ctx}");
    assert_eq!(count("exchange.declare 406"), n("channel_errors"), "{ctx}");
    assert_eq!(n("channel_errors"), broker_errors, "the broker's log");
    // Publisher confirms: every publish settled by the broker's acks.
    let confirmed: i64 = spans
        .iter()
        .filter(|s| s["name"] == "confirm.ack")
        .map(|s| {
            attr(s, "wasmtap.amqp.settled_count")
                .parse::<i64>()
                .unwrap()
        })
        .sum();
    assert_eq!(confirmed as usize, n("published"), "{ctx}");
    // A nack is the consumer's "no": declined, never a broker error.
    for s in spans.iter().filter(|s| s["name"] == "basic.nack") {
        assert_eq!(attr(s, "wasmtap.amqp.outcome"), "declined");
        assert_ne!(s["status"]["code"], "error");
    }
    // Nothing unanswered; the only errors are the 406 and the 312.
    for s in &spans {
        assert_ne!(attr(s, "error.type"), "no_response", "{s}");
    }
    let errors = spans
        .iter()
        .filter(|s| s["status"]["code"] == "error")
        .count();
    assert_eq!(errors, n("channel_errors") + n("returned"), "{ctx}");
}

#[test]
fn bundled_rabbitmq_capture_matches_the_client_and_broker_logs() {
    let g = root().join("tests/golden/amqp");
    let broker = std::fs::read_to_string(g.join("rabbitmq-pika.rabbit-errors.log")).unwrap();
    check(
        &root().join("tests/pcaps/amqp/rabbitmq-pika.pcap"),
        &g.join("rabbitmq-pika.log.json"),
        broker
            .matches("caused a channel exception precondition_failed")
            .count(),
    );
}

#[test]
fn real_rabbitmq_with_pika_matches_the_client_and_broker_logs() {
    let dir = std::env::temp_dir().join(format!("wasmtap-amqp-live-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let o = Command::new(root().join("scripts/capture-amqp.sh"))
        .arg(&dir)
        .args(["30", "17"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "capture-amqp.sh: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let broker = std::fs::read_to_string(dir.join("rabbit.log")).unwrap();
    check(
        &dir.join("amqp.pcap"),
        &dir.join("amqp.log.json"),
        broker
            .matches("caused a channel exception precondition_failed")
            .count(),
    );
    let _ = std::fs::remove_dir_all(&dir);
}
