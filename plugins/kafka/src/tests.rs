//! The decoder natively, through the SDK's host simulation.

use wasmtap_sdk::testing::{Event, attr, decode};
use wasmtap_sdk::{Direction, Message, MessageKind, StatusClass};

use crate::{Kafka, keys};

const TO_S: Direction = Direction::ToServer;
const TO_C: Direction = Direction::ToClient;

fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

/// Request header v1: key, version, correlation, client id "app".
fn header(key: i16, version: i16, corr: i32) -> Vec<u8> {
    let mut v = key.to_be_bytes().to_vec();
    v.extend(version.to_be_bytes());
    v.extend(corr.to_be_bytes());
    v.extend([0, 3, b'a', b'p', b'p']);
    v
}

/// Produce v3 to topic "orders", partition 2, one v2 batch of `n` records.
fn produce(corr: i32, acks: i16, n: u32) -> Vec<u8> {
    let mut b = header(0, 3, corr);
    b.extend([0xff, 0xff]); // no transactional id
    b.extend(acks.to_be_bytes());
    b.extend(30_000i32.to_be_bytes());
    b.extend(1i32.to_be_bytes());
    b.extend([0, 6]);
    b.extend(b"orders");
    b.extend(1i32.to_be_bytes());
    b.extend(2i32.to_be_bytes());
    let mut batch = vec![0u8; 61];
    batch[8..12].copy_from_slice(&49u32.to_be_bytes());
    batch[16] = 2;
    batch[57..61].copy_from_slice(&n.to_be_bytes());
    b.extend((batch.len() as i32).to_be_bytes());
    b.extend(batch);
    frame(&b)
}

/// Produce v3 response: topic "orders", partition 2 with `code`.
fn produce_response(corr: i32, code: i16) -> Vec<u8> {
    let mut b = corr.to_be_bytes().to_vec();
    b.extend(1i32.to_be_bytes());
    b.extend([0, 6]);
    b.extend(b"orders");
    b.extend(1i32.to_be_bytes());
    b.extend(2i32.to_be_bytes());
    b.extend(code.to_be_bytes());
    b.extend([0u8; 16]);
    b.extend(0i32.to_be_bytes());
    frame(&b)
}

/// Heartbeat v1 for group "g" and its response.
fn heartbeat(corr: i32) -> Vec<u8> {
    let mut b = header(12, 1, corr);
    b.extend([0, 1, b'g', 0, 0, 0, 1, 0, 1, b'm']);
    frame(&b)
}

fn heartbeat_response(corr: i32, code: i16) -> Vec<u8> {
    let mut b = corr.to_be_bytes().to_vec();
    b.extend(0i32.to_be_bytes());
    b.extend(code.to_be_bytes());
    frame(&b)
}

fn run(events: &[Event<'_, Direction>]) -> Vec<Message> {
    decode::<Kafka>(9092, events)
}

#[test]
fn responses_pair_by_correlation_in_any_order() {
    let (p, h) = (produce(5, 1, 3), heartbeat(6));
    let (hr, pr) = (heartbeat_response(6, 27), produce_response(5, 0));
    let out = run(&[
        Event::Data(TO_S, &p),
        Event::Data(TO_S, &h),
        Event::Data(TO_C, &hr),
        Event::Data(TO_C, &pr),
    ]);
    assert_eq!(out.len(), 4);
    assert_eq!(
        (out[0].operation.as_str(), out[0].correlation),
        ("Produce", Some(5))
    );
    assert_eq!(
        attr(&out[0], keys::DESTINATION).as_deref(),
        Some("Str(\"orders\")")
    );
    assert_eq!(
        attr(&out[0], keys::MESSAGE_COUNT).as_deref(),
        Some("Int(3)")
    );
    assert_eq!(
        attr(&out[0], keys::PARTITION).as_deref(),
        Some("Str(\"2\")")
    );
    assert_eq!(
        attr(&out[0], keys::CLIENT_ID).as_deref(),
        Some("Str(\"app\")")
    );
    assert_eq!(attr(&out[1], keys::GROUP).as_deref(), Some("Str(\"g\")"));
    // The heartbeat's answer comes first: REBALANCE_IN_PROGRESS.
    assert_eq!(
        (
            out[2].correlation,
            out[2].status,
            out[2].status_code.as_str()
        ),
        (Some(6), StatusClass::Error, "27")
    );
    assert_eq!(
        attr(&out[2], keys::ERROR_TYPE).as_deref(),
        Some("Str(\"REBALANCE_IN_PROGRESS\")")
    );
    assert_eq!(
        (out[3].correlation, out[3].status),
        (Some(5), StatusClass::Ok)
    );
}

#[test]
fn acks_zero_produce_is_one_way() {
    let p = produce(9, 0, 1);
    let out = run(&[Event::Data(TO_S, &p)]);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].kind, out[0].correlation),
        (MessageKind::OneWay, None)
    );
}

#[test]
fn partition_errors_are_errors() {
    let (p, pr) = (produce(1, -1, 1), produce_response(1, 3));
    let out = run(&[Event::Data(TO_S, &p), Event::Data(TO_C, &pr)]);
    assert_eq!(out[1].status_code, "3");
    assert_eq!(
        attr(&out[1], keys::ERROR_TYPE).as_deref(),
        Some("Str(\"UNKNOWN_TOPIC_OR_PARTITION\")")
    );
}

#[test]
fn a_capture_starting_mid_request_resynchronises() {
    let first = produce(1, 1, 1);
    let (h, h2) = (heartbeat(2), heartbeat(3));
    let mut stream = first[20..].to_vec();
    stream.extend(&h);
    stream.extend(&h2);
    let out = run(&[Event::Data(TO_S, &stream)]);
    let ops: Vec<_> = out
        .iter()
        .map(|m| (m.operation.as_str(), m.correlation))
        .collect();
    assert_eq!(ops, [("Heartbeat", Some(2)), ("Heartbeat", Some(3))]);
}

#[test]
fn bytes_lost_between_requests_resynchronise() {
    let (a, b, c) = (heartbeat(1), heartbeat(2), heartbeat(3));
    let out = run(&[
        Event::Data(TO_S, &a),
        Event::Data(TO_S, &b[..7]),
        Event::Gap(TO_S, (b.len() - 7) as u64 + 3),
        Event::Data(TO_S, &c[3..]),
        Event::Data(TO_S, &a),
        Event::Data(TO_S, &c),
    ]);
    let ids: Vec<_> = out.iter().map(|m| m.correlation).collect();
    assert_eq!(ids, [Some(1), Some(1), Some(3)]);
}

#[test]
fn probe_takes_kafka_and_not_others() {
    assert!(crate::probe(&heartbeat(1)) >= 50);
    assert!(crate::probe(&produce(1, 1, 1)[..30]) >= 50);
    assert_eq!(crate::probe(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
    let pg = b"\x00\x00\x00\x29\x00\x03\x00\x00user\x00postgres\x00database\x00postgres\x00\x00";
    assert_eq!(crate::probe(pg), 0);
    assert_eq!(crate::probe(b"*1\r\n$4\r\nPING\r\n"), 0);
}
