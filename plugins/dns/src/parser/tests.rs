//! Unit tests for the DNS parser. Every TCP scenario is also replayed with
//! byte-by-byte and random split points through a simulated host that keeps
//! the unconsumed remainder, and must give identical results. UDP datagrams
//! are never split (the host offers each one whole).
//!
//! Messages from real captures are copied from the shared test pcaps
//! (`tests/pcaps/dns/`, see its README for sources and licenses).

use super::*;
use wasmtap_sdk::testing::{self, Event, Rng};

const TS: u64 = 1_000;

/// One host call (the SDK's simulated host: `wasmtap_sdk::testing`; UDP
/// datagrams are `Event::Datagram`).
type Ev<'a> = Event<'a, Dir>;
use Dir::{ToClient as C, ToServer as S};

#[derive(Debug, PartialEq)]
struct Outcome {
    messages: Vec<Msg>,
    error: Option<ParseError>,
    malformed: u64,
}

/// Largest remainder the simulated host accepts to keep: one whole message.
const HOST_BOUND: usize = 2 + MAX_MESSAGE;

fn framing(events: &[Ev<'_>]) -> Framing {
    if events.iter().any(|e| matches!(e, Ev::Datagram(..))) {
        Framing::Udp
    } else {
        Framing::Tcp
    }
}

/// One run of the simulated host with pieces chosen by `piece`.
fn host(events: &[Ev<'_>], piece: &mut dyn FnMut(usize) -> usize) -> Outcome {
    let mut p = Parser::new(framing(events));
    let o = testing::run(&mut p, events, HOST_BOUND, piece);
    Outcome {
        messages: o.messages,
        error: o.error,
        malformed: p.malformed(),
    }
}

/// Runs `events` whole, byte by byte and with random splits; all must agree.
fn check(events: &[Ev<'_>]) -> Outcome {
    let f = framing(events);
    let o = testing::check(|| Parser::new(f), events, HOST_BOUND);
    let whole = host(events, &mut |left| left);
    assert_eq!(
        whole.malformed,
        host(events, &mut |_| 1).malformed,
        "byte-by-byte counters differ"
    );
    assert_eq!((&whole.messages, &whole.error), (&o.messages, &o.error));
    whole
}

fn ok(events: &[Ev<'_>]) -> Vec<Msg> {
    let o = check(events);
    assert_eq!(
        o.error, None,
        "unexpected error; messages: {:?}",
        o.messages
    );
    o.messages
}

/// A compact view: `>QTYPE name` for queries, `<RCODE QTYPE name` for
/// responses (`-` when there is no question); `!` marks incomplete ones.
fn summary(ms: &[Msg]) -> Vec<String> {
    ms.iter()
        .map(|m| {
            let q = m.question.as_ref().map_or("-".to_string(), |q| {
                format!("{} {}", type_name(q.qtype), q.name)
            });
            let cut = if m.incomplete { "!" } else { "" };
            match m.kind {
                Kind::Request => format!(">{q}{cut}"),
                Kind::Response => format!("<{} {q}{cut}", rcode_name(m.header.rcode)),
            }
        })
        .collect()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Wire form of a dotted name.
fn wire_name(name: &str) -> Vec<u8> {
    let mut v = Vec::new();
    for l in name.split('.').filter(|l| !l.is_empty()) {
        v.push(l.len() as u8);
        v.extend_from_slice(l.as_bytes());
    }
    v.push(0);
    v
}

/// A message: header fields, then `body` (question and records) as is.
fn msg(id: u16, flags: u16, counts: [u16; 4], body: &[u8]) -> Vec<u8> {
    let mut v = id.to_be_bytes().to_vec();
    v.extend_from_slice(&flags.to_be_bytes());
    for c in counts {
        v.extend_from_slice(&c.to_be_bytes());
    }
    v.extend_from_slice(body);
    v
}

fn question(name: &str, qtype: u16) -> Vec<u8> {
    let mut v = wire_name(name);
    v.extend_from_slice(&qtype.to_be_bytes());
    v.extend_from_slice(&1u16.to_be_bytes());
    v
}

/// A standard query (RD set).
fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    msg(id, 0x0100, [1, 0, 0, 0], &question(name, qtype))
}

/// A standard query with an EDNS OPT record (RFC 6891), as resolvers send.
fn edns_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let opt = [0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0];
    msg(
        id,
        0x0100,
        [1, 0, 0, 1],
        &[question(name, qtype), opt.to_vec()].concat(),
    )
}

/// A response with `rcode` and no records.
fn answer(id: u16, name: &str, qtype: u16, rcode: u16) -> Vec<u8> {
    msg(id, 0x8180 | rcode, [1, 0, 0, 0], &question(name, qtype))
}

fn tcp(m: &[u8]) -> Vec<u8> {
    let mut v = (m.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(m);
    v
}

// zeek/zeek testing/btest/Traces/dns/long-connection.pcap, frames 1-2: an MX
// query for google.com and its answer (6 MX and 6 A records, every owner
// and exchange name compressed).
const ZEEK_MX_QUERY: &str = "f76f0100000100000000000006676f6f676c6503636f6d00000f0001";
const ZEEK_MX_ANSWER: &str = "f76f8180000100060000000606676f6f676c6503636f6d00000f0001c00c000f000100000228000a002805736d747034c00cc00c000f000100000228000a000a05736d747035c00cc00c000f000100000228000a000a05736d747036c00cc00c000f000100000228000a000a05736d747031c00cc00c000f000100000228000a000a05736d747032c00cc00c000f000100000228000a002805736d747033c00cc02a00010001000002580004d8ef251ac0400001000100000258000440e9a719c0560001000100000258000442660919c06c00010001000002580004d8ef3919c08200010001000002580004d8ef2519c09800010001000002580004d8ef391a";

// deepflowio/deepflow agent/resources/test/flow_generator/dns/dns-tcp-multi.pcap,
// frames 4, 6, 8: an A and an AAAA query in one segment, then their answers.
const DEEPFLOW_TCP_QUERIES: &str = "0044e831010000010000000000000764657461696c731864656570666c6f772d656270662d697374696f2d64656d6f0373766307636c7573746572056c6f63616c000001000100445939010000010000000000000764657461696c731864656570666c6f772d656270662d697374696f2d64656d6f0373766307636c7573746572056c6f63616c00001c0001";
const DEEPFLOW_TCP_ANSWER_A: &str = "0086e831850000010001000000000764657461696c731864656570666c6f772d656270662d697374696f2d64656d6f0373766307636c7573746572056c6f63616c00000100010764657461696c731864656570666c6f772d656270662d697374696f2d64656d6f0373766307636c7573746572056c6f63616c00000100010000000c0004c0a83b16";
const DEEPFLOW_TCP_ANSWER_AAAA: &str = "00a15939850000010000000100000764657461696c731864656570666c6f772d656270662d697374696f2d64656d6f0373766307636c7573746572056c6f63616c00001c000107636c7573746572056c6f63616c00000600010000000c0044026e7303646e7307636c7573746572056c6f63616c000a686f73746d617374657207636c7573746572056c6f63616c0067e60f0b00001c2000000708000151800000001e";

// deepflowio/deepflow agent/resources/test/flow_generator/dns/dns.pcap,
// frames 1-2: an A query (with EDNS) answered NXDOMAIN over TCP.
const DEEPFLOW_NX_QUERY: &str =
    "002bdfe3012000010000000000010a67756f796f6e6778696e03636f6d00000100010000291000000000000000";
const DEEPFLOW_NX_ANSWER: &str = "0074dfe3818300010000000100010a67756f796f6e6778696e03636f6d0000010001c0170006000100000384003d01610c67746c642d73657276657273036e657400056e73746c640c766572697369676e2d677273c0175ef17d43000007080000038400093a80000151800000291000000000000000";

const DK: &str = "details.deepflow-ebpf-istio-demo.svc.cluster.local";

#[test]
fn udp_query_and_response_from_a_capture() {
    let (q, r) = (hex(ZEEK_MX_QUERY), hex(ZEEK_MX_ANSWER));
    let ms = ok(&[Ev::Datagram(S, &q), Ev::Datagram(C, &r)]);
    assert_eq!(summary(&ms), [">MX google.com", "<NOERROR MX google.com"]);
    assert_eq!(ms[0].correlation, ms[1].correlation);
    assert_eq!(ms[0].correlation & 0xffff, 0xf76f);
    assert_eq!(ms[0].size, q.len() as u64);
    assert_eq!(ms[1].size, r.len() as u64);
    let h = ms[1].header;
    assert!(h.qr && h.rd && h.ra && !h.aa && !h.tc);
    assert_eq!((h.ancount, h.nscount, h.arcount), (6, 0, 6));
    assert_eq!(ms[1].question.as_ref().map(|q| q.qclass), Some(1));
}

#[test]
fn tcp_pipelined_queries_then_responses_from_a_capture() {
    let q = hex(DEEPFLOW_TCP_QUERIES);
    let (a, aaaa) = (hex(DEEPFLOW_TCP_ANSWER_A), hex(DEEPFLOW_TCP_ANSWER_AAAA));
    let ms = ok(&[Ev::Data(S, &q), Ev::Data(C, &a), Ev::Data(C, &aaaa)]);
    assert_eq!(
        summary(&ms),
        [
            format!(">A {DK}"),
            format!(">AAAA {DK}"),
            format!("<NOERROR A {DK}"),
            format!("<NOERROR AAAA {DK}"),
        ]
    );
    assert_eq!(ms[0].correlation, ms[2].correlation);
    assert_eq!(ms[1].correlation, ms[3].correlation);
    assert_ne!(ms[0].correlation, ms[1].correlation);
    assert_eq!(ms[0].size, 2 + 0x44);
    assert_eq!(ms[3].size, 2 + 0xa1);
    assert!(ms[2].header.aa);
}

#[test]
fn tcp_two_queries_in_one_segment_then_two_responses_in_one() {
    let qs = [
        tcp(&query(1, "a.example", 1)),
        tcp(&query(2, "b.example", 28)),
    ]
    .concat();
    let rs = [
        tcp(&answer(1, "a.example", 1, 0)),
        tcp(&answer(2, "b.example", 28, 3)),
    ]
    .concat();
    let ms = ok(&[Ev::Data(S, &qs), Ev::Data(C, &rs)]);
    assert_eq!(
        summary(&ms),
        [
            ">A a.example",
            ">AAAA b.example",
            "<NOERROR A a.example",
            "<NXDOMAIN AAAA b.example"
        ]
    );
}

#[test]
fn message_split_across_segments_is_not_consumed_until_complete() {
    let m = tcp(&query(7, "split.example", 1));
    let mut p = Parser::new(Framing::Tcp);
    let mut out = Vec::new();
    for n in [1, 2, 13, m.len() - 1] {
        assert_eq!(p.feed(S, TS, &m[..n], &mut out), Ok(0));
        assert!(out.is_empty());
    }
    assert_eq!(p.feed(S, TS + 5, &m, &mut out), Ok(m.len()));
    assert_eq!(summary(&out), [">A split.example"]);
    // It started with the first feed that offered its first byte.
    assert_eq!((out[0].start_ns, out[0].end_ns), (TS, TS + 5));
    // A message of the largest size, streamed in pieces.
    let pad = 0xffff - 12 - question("big.example", 16).len() - 11;
    let mut rr = vec![0u8, 0, 16, 0, 1, 0, 0, 0, 0];
    rr.extend_from_slice(&(pad as u16).to_be_bytes());
    rr.resize(11 + pad, b'x');
    let big = msg(
        8,
        0x8180,
        [1, 1, 0, 0],
        &[question("big.example", 16), rr].concat(),
    );
    assert_eq!(big.len(), MAX_MESSAGE);
    let big = tcp(&big);
    for step in [1400, 65_536] {
        let o = host(&[Ev::Data(C, &big), Ev::Data(C, &big)], &mut |l| {
            l.min(step)
        });
        assert_eq!(o.error, None);
        assert_eq!(
            summary(&o.messages),
            ["<NOERROR TXT big.example", "<NOERROR TXT big.example"]
        );
        assert_eq!(o.messages[0].size, 2 + 0xffff);
    }
}

#[test]
fn compression_pointers_in_question_and_answers() {
    // The question's name is `www` then a pointer forward to `example.com`
    // written in the answer's RDATA (a CNAME); the answer's owner points
    // back at the question.
    let mut body = vec![3, b'w', b'w', b'w', 0xc0, 0];
    body.extend_from_slice(&[0, 5, 0, 1]);
    let owner = HEADER_LEN as u8;
    body.extend_from_slice(&[0xc0, owner, 0, 5, 0, 1, 0, 0, 0, 60, 0, 13]);
    let target = HEADER_LEN + body.len();
    body.extend_from_slice(&wire_name("example.com"));
    body[5] = target as u8;
    let m = msg(0x55, 0x8180, [1, 1, 0, 0], &body);
    let ms = ok(&[Ev::Datagram(C, &m)]);
    assert_eq!(summary(&ms), ["<NOERROR CNAME www.example.com"]);
    let q = ms[0].question.as_ref().unwrap();
    assert_eq!((q.qtype, q.qclass), (5, 1));
    // The same through TCP, and the MX answer of a real capture: every
    // compressed owner and exchange is walked and the records fit.
    let ms = ok(&[
        Ev::Data(C, &tcp(&m)),
        Ev::Data(C, &tcp(&hex(ZEEK_MX_ANSWER))),
    ]);
    assert_eq!(
        summary(&ms),
        ["<NOERROR CNAME www.example.com", "<NOERROR MX google.com"]
    );
}

#[test]
fn pointer_loops_are_rejected_without_hanging() {
    // A pointer to itself, and two pointers pointing at each other.
    let self_loop = msg(1, 0x0100, [1, 0, 0, 0], &[0xc0, 12, 0, 1, 0, 1]);
    let pair = msg(2, 0x0100, [1, 0, 0, 0], &[0xc0, 14, 0xc0, 12, 0, 1, 0, 1]);
    // A label then a pointer back to it: every hop adds the label, so the
    // length bound ends it.
    let growing = msg(3, 0x0100, [1, 0, 0, 0], &[1, b'a', 0xc0, 12, 0, 1, 0, 1]);
    assert_eq!(read_name(&self_loop, 12), Err(NameError::PointerLoop));
    assert_eq!(read_name(&pair, 12), Err(NameError::PointerLoop));
    assert!(read_name(&growing, 12).is_err());
    let good = query(4, "after.example", 1);
    let o = check(&[
        Ev::Datagram(S, &self_loop),
        Ev::Datagram(S, &pair),
        Ev::Datagram(S, &growing),
        Ev::Datagram(S, &good),
    ]);
    assert_eq!(summary(&o.messages), [">A after.example"]);
    assert_eq!(o.malformed, 3);
    // Over TCP the looping frame is skipped while resynchronising.
    let stream = [tcp(&self_loop), tcp(&good)].concat();
    let ms = ok(&[Ev::Data(S, &stream)]);
    assert_eq!(summary(&ms), [">A after.example"]);
    // Pointers out of bounds, reserved label types, names over 255 octets.
    let oob = msg(5, 0x0100, [1, 0, 0, 0], &[0xc1, 0, 0, 1, 0, 1]);
    assert_eq!(read_name(&oob, 12), Err(NameError::OutOfBounds));
    let reserved = msg(6, 0x0100, [1, 0, 0, 0], &[0x41, 0, 0, 1, 0, 1]);
    assert_eq!(read_name(&reserved, 12), Err(NameError::BadLabel));
    let long = [[63u8; 1].as_slice(), &[b'x'; 63]].concat().repeat(4);
    let m = msg(
        7,
        0x0100,
        [1, 0, 0, 0],
        &[long.as_slice(), &[0, 0, 1, 0, 1]].concat(),
    );
    assert_eq!(read_name(&m, 12), Err(NameError::TooLong));
    // 253 characters (255 octets) is the longest name.
    let max = [[63u8; 1].as_slice(), &[b'x'; 63]].concat().repeat(3);
    let mut max = [max.as_slice(), &[61], &[b'y'; 61], &[0]].concat();
    assert_eq!(max.len(), MAX_NAME_LEN);
    max.extend_from_slice(&[0, 1, 0, 1]);
    let (name, end) = read_name(&max, 0).unwrap();
    assert_eq!((name.len(), end), (253, MAX_NAME_LEN));
}

#[test]
fn truncated_datagrams_are_skipped() {
    let full = query(9, "cut.example", 1);
    let mut events = Vec::new();
    for n in [0, 5, 11, 12, 15, full.len() - 1] {
        events.push(Ev::Datagram(S, &full[..n]));
    }
    events.push(Ev::Datagram(S, &full));
    let o = check(&events);
    assert_eq!(summary(&o.messages), [">A cut.example"]);
    assert_eq!(o.malformed, 6);
    // Cut inside the records (a snap length): reported, but incomplete.
    let r = hex(ZEEK_MX_ANSWER);
    let ms = ok(&[Ev::Datagram(C, &r[..100])]);
    assert_eq!(summary(&ms), ["<NOERROR MX google.com!"]);
}

#[test]
fn tc_bit_and_rcodes() {
    let tc = msg(3, 0x8380, [1, 0, 0, 0], &question("big.example", 16));
    let nx = answer(4, "nope.example", 1, 3);
    let sf = answer(5, "broken.example", 1, 2);
    let ms = ok(&[
        Ev::Datagram(C, &tc),
        Ev::Datagram(C, &nx),
        Ev::Datagram(C, &sf),
    ]);
    assert_eq!(
        summary(&ms),
        [
            "<NOERROR TXT big.example",
            "<NXDOMAIN A nope.example",
            "<SERVFAIL A broken.example"
        ]
    );
    assert!(ms[0].header.tc);
    assert!(!ms[1].header.tc);
    assert_eq!(
        ms.iter()
            .map(|m| server_error(m.header.rcode))
            .collect::<Vec<_>>(),
        [false, false, true]
    );
}

#[test]
fn nxdomain_over_tcp_from_a_capture() {
    let (q, r) = (hex(DEEPFLOW_NX_QUERY), hex(DEEPFLOW_NX_ANSWER));
    let ms = ok(&[Ev::Data(S, &q), Ev::Data(C, &r)]);
    assert_eq!(
        summary(&ms),
        [">A guoyongxin.com", "<NXDOMAIN A guoyongxin.com"]
    );
    assert_eq!(ms[0].correlation, ms[1].correlation);
    assert_eq!((ms[1].header.nscount, ms[1].header.arcount), (1, 1));
}

#[test]
fn gap_inside_a_message_keeps_framing() {
    let q1 = tcp(&query(1, "one.example", 1));
    let q2 = tcp(&query(2, "two.example", 1));
    let q3 = tcp(&query(3, "three.example", 1));
    // The hole takes q2's last 6 bytes: its question was not all seen, so
    // it is not reported, but the next message is found right after it.
    let cut = q2.len() - 6;
    let ms = ok(&[
        Ev::Data(S, &[q1.as_slice(), &q2[..cut]].concat()),
        Ev::Gap(S, 6),
        Ev::Data(S, &q3),
    ]);
    assert_eq!(summary(&ms), [">A one.example", ">A three.example"]);
    // A longer message whose question was seen is reported, incomplete,
    // and pairs with its query; the hole may span several gap calls. (The
    // direction is synchronised first: a direction's first message is
    // trusted only once whole.)
    let r1 = tcp(&hex(ZEEK_MX_ANSWER));
    let r2 = tcp(&answer(3, "three.example", 1, 0));
    let r4 = tcp(&answer(4, "four.example", 1, 0));
    let ms = ok(&[
        Ev::Data(S, &tcp(&hex(ZEEK_MX_QUERY))),
        Ev::Data(S, &q3),
        Ev::Data(C, &[r2.as_slice(), &r1[..60]].concat()),
        Ev::Gap(C, 100),
        Ev::Gap(C, 50),
        Ev::Data(C, &[&r1[210..], r4.as_slice()].concat()),
    ]);
    assert_eq!(
        summary(&ms),
        [
            ">MX google.com",
            ">A three.example",
            "<NOERROR A three.example",
            "<NOERROR MX google.com!",
            "<NOERROR A four.example"
        ]
    );
    assert_eq!(ms[0].correlation, ms[3].correlation);
    assert_eq!(ms[3].size, r1.len() as u64);
}

#[test]
fn gap_across_messages_resyncs() {
    let q1 = tcp(&query(1, "one.example", 1));
    let q2 = tcp(&edns_query(2, "two.example", 1));
    let q3 = tcp(&query(3, "three.example", 28));
    // The hole swallows the end of q2 (its question was seen: reported,
    // incomplete) and the start of a message that followed it; the stream
    // resumes mid-message, then q3.
    let ms = ok(&[
        Ev::Data(S, &[q1.as_slice(), &q2[..35]].concat()),
        Ev::Gap(S, 40),
        Ev::Data(S, &[&q2[7..], q3.as_slice()].concat()),
    ]);
    assert_eq!(
        summary(&ms),
        [">A one.example", ">A two.example!", ">AAAA three.example"]
    );
    // A hole at a message boundary: what follows is not trusted until a
    // plausible message is found.
    let ms = ok(&[
        Ev::Data(S, &q1),
        Ev::Gap(S, 10),
        Ev::Data(S, &[&q2[9..], q3.as_slice()].concat()),
        Ev::Close,
    ]);
    assert_eq!(summary(&ms), [">A one.example", ">AAAA three.example"]);
}

#[test]
fn mid_stream_start_resyncs_and_partial_at_close_is_reported() {
    let q1 = tcp(&query(1, "one.example", 1));
    let q2 = tcp(&query(2, "two.example", 15));
    let q3 = tcp(&edns_query(3, "three.example", 1));
    let ms = ok(&[
        Ev::Data(S, &[&q1[5..], q2.as_slice(), &q3[..q3.len() - 1]].concat()),
        Ev::Close,
    ]);
    assert_eq!(summary(&ms), [">MX two.example", ">A three.example!"]);
    // A message cut before its question was all seen is not reported.
    let ms = ok(&[Ev::Data(S, &[q2.as_slice(), &q1[..20]].concat()), Ev::Close]);
    assert_eq!(summary(&ms), [">MX two.example"]);
}

#[test]
fn non_query_opcodes() {
    // NOTIFY (RFC 1996): AA set, an SOA question; UPDATE (RFC 2136): the
    // zone in the question section, one prerequisite and one update RR.
    let notify = msg(0x10, 0x2400, [1, 0, 0, 0], &question("example.com", 6));
    let notify_ok = msg(0x10, 0xa400, [1, 0, 0, 0], &question("example.com", 6));
    let mut rrs = Vec::new();
    for _ in 0..2 {
        rrs.extend_from_slice(&[0xc0, 12, 0, 1, 0, 0xff, 0, 0, 0, 0, 0, 0]);
    }
    let update = msg(
        0x11,
        0x2800,
        [1, 1, 1, 0],
        &[question("example.com", 6), rrs].concat(),
    );
    let refused = msg(0x11, 0xa805, [1, 0, 0, 0], &question("example.com", 6));
    let ms = ok(&[
        Ev::Data(S, &[tcp(&notify), tcp(&update)].concat()),
        Ev::Data(C, &[tcp(&notify_ok), tcp(&refused)].concat()),
    ]);
    let ops: Vec<_> = ms.iter().map(|m| opcode_name(m.header.opcode)).collect();
    assert_eq!(ops, ["NOTIFY", "UPDATE", "NOTIFY", "UPDATE"]);
    assert_eq!(ms[0].correlation, ms[2].correlation);
    assert_eq!(ms[1].correlation, ms[3].correlation);
    assert_eq!(ms[3].header.rcode, 5);
    assert!(ms.iter().all(|m| !m.incomplete));
}

#[test]
fn names_with_non_printable_bytes_are_escaped() {
    let mut body = vec![4, b'a', 0x07, b'.', b'"', 3, b'x', b'\t', 0xc8, 0];
    body.extend_from_slice(&[0, 16, 0, 1]);
    let q = msg(0x77, 0x0100, [1, 0, 0, 0], &body);
    let ms = ok(&[Ev::Datagram(S, &q)]);
    let name = &ms[0].question.as_ref().unwrap().name;
    assert_eq!(name, "a\\007\\.\\\".x\\t\\200");
    // The root name.
    let root = msg(0x78, 0x0100, [1, 0, 0, 0], &[0, 0, 2, 0, 1]);
    let ms = ok(&[Ev::Datagram(S, &root)]);
    assert_eq!(summary(&ms), [">NS ."]);
}

#[test]
fn correlation_keys() {
    // A reused id for another question does not pair wrongly.
    let a = query(42, "a.example", 1);
    let b = query(42, "b.example", 1);
    let rb = answer(42, "b.example", 1, 0);
    let ms = ok(&[
        Ev::Datagram(S, &a),
        Ev::Datagram(S, &b),
        Ev::Datagram(C, &rb),
    ]);
    assert_ne!(ms[0].correlation, ms[1].correlation);
    assert_eq!(ms[1].correlation, ms[2].correlation);
    // The case of the echoed name does not matter (0x20 randomisation).
    let upper = answer(42, "A.EXAMPLE", 1, 0);
    assert_eq!(
        ok(&[Ev::Datagram(C, &upper)])[0].correlation,
        ms[0].correlation
    );
    // A response without a question answers the oldest query with its id.
    let formerr = msg(42, 0x8181, [0, 0, 0, 0], &[]);
    let ms = ok(&[
        Ev::Datagram(S, &a),
        Ev::Datagram(S, &query(43, "c.example", 1)),
        Ev::Datagram(C, &formerr),
        Ev::Datagram(C, &formerr),
    ]);
    assert_eq!(summary(&ms)[2], "<FORMERR -");
    assert_eq!(ms[2].correlation, ms[0].correlation);
    assert_ne!(ms[3].correlation, ms[0].correlation);
}

#[test]
fn long_junk_ends_the_session_cleanly() {
    let junk = vec![0u8; MAX_RESYNC_BYTES as usize + 100];
    let o = host(&[Ev::Data(S, &junk)], &mut |l| l.min(64 * 1024));
    assert_eq!(o.error.map(|e| e.reason), Some(reason::RESYNC_FAILED));
    assert!(o.messages.is_empty());
}

#[test]
fn junk_never_panics_and_is_bounded() {
    let mut rng = Rng(7);
    let real = [
        hex(ZEEK_MX_ANSWER),
        hex(DEEPFLOW_TCP_QUERIES),
        hex(DEEPFLOW_NX_ANSWER),
    ];
    for round in 0..300 {
        let n = rng.below(400);
        let mut junk: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
        if round % 2 == 0 {
            // Real messages with a few bytes flipped.
            junk = real[round % 3].clone();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(junk.len());
                junk[i] = rng.next_u64() as u8;
            }
        }
        for dir in [S, C] {
            let _ = host(&[Ev::Datagram(dir, &junk), Ev::Close], &mut |l| l);
            let _ = host(
                &[
                    Ev::Data(dir, &junk),
                    Ev::Gap(dir, 3),
                    Ev::Data(dir, &junk),
                    Ev::Close,
                ],
                &mut |l| 1 + (l % 17),
            );
        }
    }
}
