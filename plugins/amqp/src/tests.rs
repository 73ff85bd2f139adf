//! The decoder natively, through the SDK's host simulation.

use wasmtap_sdk::testing::{Event, TS, attr, decode};
use wasmtap_sdk::{Direction, Message, MessageKind, StatusClass};

use crate::{Amqp, keys};

const TO_S: Direction = Direction::ToServer;
const TO_C: Direction = Direction::ToClient;

fn frame(kind: u8, ch: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![kind];
    v.extend(ch.to_be_bytes());
    v.extend((payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v.push(0xCE);
    v
}

fn method(ch: u16, class: u16, method: u16, args: &[u8]) -> Vec<u8> {
    let mut p = class.to_be_bytes().to_vec();
    p.extend(method.to_be_bytes());
    p.extend_from_slice(args);
    frame(1, ch, &p)
}

fn short(s: &str) -> Vec<u8> {
    let mut v = vec![s.len() as u8];
    v.extend(s.as_bytes());
    v
}

/// exchange.declare "x" of type "topic" (no-wait when asked), empty table.
fn declare_exchange(ch: u16, no_wait: bool) -> Vec<u8> {
    let mut a = vec![0, 0];
    a.extend(short("x"));
    a.extend(short("topic"));
    a.push(if no_wait { 0x10 } else { 0 });
    a.extend([0, 0, 0, 0]);
    method(ch, 40, 10, &a)
}

fn close(ch: u16, class: u16, code: u16, failed: (u16, u16)) -> Vec<u8> {
    let mut a = code.to_be_bytes().to_vec();
    a.extend(short("PRECONDITION_FAILED - inequivalent arg 'type'"));
    a.extend(failed.0.to_be_bytes());
    a.extend(failed.1.to_be_bytes());
    method(ch, class, if class == 10 { 50 } else { 40 }, &a)
}

fn header(ch: u16, body: u64) -> Vec<u8> {
    let mut p = vec![0, 60, 0, 0];
    p.extend(body.to_be_bytes());
    p.extend([0, 0]);
    frame(2, ch, &p)
}

fn deliver(ch: u16, tag: u64) -> Vec<u8> {
    let mut a = short("ctag");
    a.extend(tag.to_be_bytes());
    a.push(0);
    a.extend(short(""));
    a.extend(short("jobs"));
    let mut v = method(ch, 60, 60, &a);
    v.extend(header(ch, 3));
    v.extend(frame(3, ch, b"abc"));
    v
}

fn ack(ch: u16, tag: u64, nack: bool) -> Vec<u8> {
    let mut a = tag.to_be_bytes().to_vec();
    a.push(if nack { 0x02 } else { 0 });
    method(ch, 60, if nack { 120 } else { 80 }, &a)
}

fn run(events: &[Event<'_, Direction>]) -> Vec<Message> {
    decode::<Amqp>(5672, events)
}

#[test]
fn a_declare_answered_by_a_channel_close_is_an_error_of_that_declare() {
    let (ok_decl, bad_decl) = (declare_exchange(1, false), declare_exchange(1, false));
    let ok = method(1, 40, 11, &[]);
    let err = close(1, 20, 406, (40, 10));
    let close_ok = method(1, 20, 41, &[]);
    let mut preamble = b"AMQP\x00\x00\x09\x01".to_vec();
    preamble.extend(&ok_decl);
    let out = run(&[
        Event::Data(TO_S, &preamble),
        Event::Data(TO_C, &ok),
        Event::Data(TO_S, &bad_decl),
        Event::Data(TO_C, &err),
        Event::Data(TO_S, &close_ok),
    ]);
    let got: Vec<_> = out
        .iter()
        .map(|m| {
            (
                m.kind,
                m.operation.as_str(),
                m.status,
                m.status_code.as_str(),
                m.correlation,
            )
        })
        .collect();
    let k1 = (1u64 << 32) | 1;
    let k2 = (1u64 << 32) | 2;
    assert_eq!(
        got,
        [
            (
                MessageKind::Request,
                "exchange.declare",
                StatusClass::Unset,
                "",
                Some(k1)
            ),
            (MessageKind::Response, "", StatusClass::Ok, "200", Some(k1)),
            (
                MessageKind::Request,
                "exchange.declare",
                StatusClass::Unset,
                "",
                Some(k2)
            ),
            (
                MessageKind::Response,
                "",
                StatusClass::Error,
                "406",
                Some(k2)
            ),
        ]
    );
    assert_eq!(
        attr(&out[3], keys::ERROR_TYPE).as_deref(),
        Some("Str(\"PRECONDITION_FAILED\")")
    );
    assert_eq!(
        attr(&out[0], keys::EXCHANGE_TYPE).as_deref(),
        Some("Str(\"topic\")")
    );
}

#[test]
fn no_wait_requests_are_one_way() {
    let d = declare_exchange(2, true);
    let out = run(&[Event::Data(TO_S, &d)]);
    assert_eq!(
        (out[0].kind, out[0].correlation),
        (MessageKind::OneWay, None)
    );
}

#[test]
fn a_consumers_ack_spans_from_the_delivery() {
    let (d1, d2) = (deliver(1, 1), deliver(1, 2));
    let (a1, n2) = (ack(1, 1, false), ack(1, 2, true));
    let out = run(&[
        Event::Data(TO_C, &d1),
        Event::Data(TO_C, &d2),
        Event::Data(TO_S, &a1),
        Event::Data(TO_S, &n2),
    ]);
    let ops: Vec<_> = out.iter().map(|m| m.operation.as_str()).collect();
    assert_eq!(
        ops,
        ["basic.deliver", "basic.deliver", "basic.ack", "basic.nack"]
    );
    assert_eq!(attr(&out[0], keys::BODY_SIZE).as_deref(), Some("Int(3)"));
    assert_eq!(
        attr(&out[0], keys::ROUTING_KEY).as_deref(),
        Some("Str(\"jobs\")")
    );
    assert_eq!(
        attr(&out[0], keys::DESTINATION).as_deref(),
        Some("Str(\"amq.default\")")
    );
    assert_eq!(attr(&out[2], keys::SETTLED).as_deref(), Some("Int(1)"));
    assert_eq!(
        attr(&out[3], keys::OUTCOME).as_deref(),
        Some("Str(\"declined\")")
    );
    assert_eq!(out[2].start_ns, TS);
}

#[test]
fn a_capture_starting_mid_frame_resynchronises() {
    let d = declare_exchange(1, false);
    let mut stream = d[5..].to_vec();
    stream.extend(&d);
    stream.extend(&d);
    let out = run(&[Event::Data(TO_S, &stream)]);
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|m| m.operation == "exchange.declare"));
}

#[test]
fn probe_takes_amqp_only() {
    assert_eq!(crate::probe(b"AMQP\x00\x00\x09\x01"), 100);
    assert!(crate::probe(&declare_exchange(1, false)) >= 50);
    assert_eq!(crate::probe(b"GET / HTTP/1.1\r\n\r\n"), 0);
    assert_eq!(crate::probe(b"*1\r\n$4\r\nPING\r\n"), 0);
}
