//! The decoder natively, through the SDK's host simulation.

use wasmtap_sdk::testing::{Event, attr, decode};
use wasmtap_sdk::{Direction, Message, MessageKind, StatusClass};

use crate::{Http2, PREFACE, frame, keys};

const TO_S: Direction = Direction::ToServer;
const TO_C: Direction = Direction::ToClient;

/// A literal with incremental indexing, name from the static table.
fn lit(name_index: u8, value: &str) -> Vec<u8> {
    let mut v = vec![0x40 | name_index, value.len() as u8];
    v.extend(value.as_bytes());
    v
}

fn grpc_msg(compressed: bool, body: &[u8]) -> Vec<u8> {
    let mut v = vec![u8::from(compressed)];
    v.extend((body.len() as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// Client: preface, SETTINGS, stream 1 (a gRPC call, two messages), stream
/// 3 (the same path by its dynamic-table index).
fn client() -> Vec<u8> {
    let mut c = PREFACE.to_vec();
    c.extend(frame(4, 0, 0, &[]));
    let mut h = vec![0x83, 0x86]; // :method POST, :scheme http
    h.extend(lit(4, "/pkg.Svc/Do")); // :path -> dynamic 62
    h.extend(lit(31, "application/grpc")); // content-type -> dynamic 62, path 63
    c.extend(frame(1, 0x4, 1, &h));
    let mut d = grpc_msg(false, b"hello");
    d.extend(grpc_msg(true, b"zz"));
    c.extend(frame(0, 0x1, 1, &d));
    // Stream 3: :method POST, :scheme http, :path (63), content-type (62).
    c.extend(frame(1, 0x4, 3, &[0x83, 0x86, 0xbf, 0xbe]));
    c.extend(frame(0, 0x1, 3, &grpc_msg(false, b"x")));
    c
}

fn server() -> Vec<u8> {
    let mut s = frame(4, 0, 0, &[]);
    s.extend(frame(4, 0x1, 0, &[]));
    // Stream 3 answered first: trailers-only, grpc-status 0.
    let mut t = vec![0x88]; // :status 200
    t.extend([0x40, 11]);
    t.extend(b"grpc-status");
    t.extend([1, b'0']);
    s.extend(frame(1, 0x5, 3, &t));
    // Stream 1: headers, one message, trailers grpc-status 13.
    s.extend(frame(1, 0x4, 1, &[0x88]));
    s.extend(frame(0, 0, 1, &grpc_msg(false, b"ok")));
    s.extend(frame(
        1,
        0x5,
        1,
        &[
            0x00, 11, b'g', b'r', b'p', b'c', b'-', b's', b't', b'a', b't', b'u', b's', 2, b'1',
            b'3',
        ],
    ));
    s
}

fn run(events: &[Event<'_, Direction>]) -> Vec<Message> {
    decode::<Http2>(50051, events)
}

#[test]
fn grpc_calls_from_the_preface_are_exact() {
    let (c, s) = (client(), server());
    let out = run(&[Event::Data(TO_S, &c), Event::Data(TO_C, &s)]);
    let got: Vec<_> = out
        .iter()
        .map(|m| {
            (
                m.kind,
                m.correlation,
                m.operation.as_str(),
                m.status,
                m.status_code.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                MessageKind::Request,
                Some(1),
                "pkg.Svc/Do",
                StatusClass::Unset,
                ""
            ),
            (
                MessageKind::Request,
                Some(3),
                "pkg.Svc/Do",
                StatusClass::Unset,
                ""
            ),
            (MessageKind::Response, Some(3), "", StatusClass::Ok, "0"),
            (MessageKind::Response, Some(1), "", StatusClass::Error, "13"),
        ]
    );
    assert_eq!(
        attr(&out[0], keys::REQUEST_MESSAGES).as_deref(),
        Some("Int(2)")
    );
    assert_eq!(
        attr(&out[0], keys::COMPRESSED).as_deref(),
        Some("Boolean(true)")
    );
    assert_eq!(
        attr(&out[0], keys::RPC_SERVICE).as_deref(),
        Some("Str(\"pkg.Svc\")")
    );
    assert_eq!(
        attr(&out[3], keys::ERROR_TYPE).as_deref(),
        Some("Str(\"INTERNAL\")")
    );
    assert_eq!(
        attr(&out[3], keys::RESPONSE_MESSAGES).as_deref(),
        Some("Int(1)")
    );
    assert_eq!(attr(&out[3], keys::HPACK_UNKNOWN), None);
}

#[test]
fn a_capture_started_mid_connection_never_misnames() {
    let c = client();
    // Start at stream 3's HEADERS: its :path and content-type refer to
    // entries inserted before the capture.
    let at = c
        .windows(4)
        .position(|w| w == [0x83, 0x86, 0xbf, 0xbe])
        .unwrap()
        - 9;
    let out = run(&[Event::Data(TO_S, &c[at..])]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].operation, "POST");
    assert_eq!(attr(&out[0], keys::PATH), None);
    assert_eq!(attr(&out[0], keys::RPC_SYSTEM), None);
}

#[test]
fn a_server_reset_is_an_error_and_a_client_cancel_is_not() {
    let mut c = PREFACE.to_vec();
    c.extend(frame(1, 0x5, 1, &[0x82, 0x86, 0x84]));
    c.extend(frame(1, 0x5, 3, &[0x82, 0x86, 0x84]));
    c.extend(frame(3, 0, 3, &8u32.to_be_bytes()));
    let s = frame(3, 0, 1, &2u32.to_be_bytes());
    let out = run(&[Event::Data(TO_S, &c), Event::Data(TO_C, &s)]);
    let resp: Vec<_> = out
        .iter()
        .filter(|m| m.kind == MessageKind::Response)
        .map(|m| (m.correlation, m.status, m.status_code.as_str()))
        .collect();
    assert_eq!(
        resp,
        [
            (Some(3), StatusClass::Ok, "CANCEL"),
            (Some(1), StatusClass::Error, "INTERNAL_ERROR")
        ]
    );
}

#[test]
fn probe_takes_http2_only() {
    assert_eq!(crate::probe(PREFACE), 100);
    assert!(crate::probe(&server()) >= 50);
    assert_eq!(crate::probe(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
    assert_eq!(
        crate::probe(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
        0
    );
}
