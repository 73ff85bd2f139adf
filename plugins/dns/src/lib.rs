//! DNS decoder plugin for wasmtap: DNS over UDP and over TCP (port 53).
//!
//! `parser` is pure bytes-to-structs code (tested natively); this file maps
//! its messages to the SDK's messages.
//!
//! * A query (QR = 0) is a request, a response (QR = 1) a response. Both
//!   carry the same correlation key: the transaction id combined with a hash
//!   of the question the response echoes, so a reused id for another
//!   question does not pair wrongly (see the `parser` docs).
//! * Operation (the span name, low cardinality): the QTYPE mnemonic (`A`,
//!   `AAAA`, `MX`, ..., `_OTHER` for unlisted types); for an opcode other
//!   than QUERY, the opcode's name (`NOTIFY`, `UPDATE`, `IQUERY`, `STATUS`,
//!   `DSO`, `_OTHER`); `QUERY` for a standard query without a question.
//! * Status: the status code is the RCODE's name (`NOERROR`, `NXDOMAIN`, ...,
//!   `RCODE<n>`). The span is the server's, so only the server's failures
//!   are errors: SERVFAIL, NOTIMP and RCODEs without a name (11 to 15), each
//!   with `error.type` = the code. NOERROR, and the answers that describe a
//!   problem with the client's query (FORMERR, NXDOMAIN, REFUSED, and the
//!   UPDATE answers YXDOMAIN, YXRRSET, NXRRSET, NOTAUTH, NOTZONE) are `ok`,
//!   as an HTTP 4xx is on a server span. Extended RCODEs (EDNS OPT) are not
//!   read.
//! * Attributes: `dns.question.name` (semantic conventions, escaped as their
//!   note asks) on queries and responses; `wasmtap.dns.question.type` (the
//!   QTYPE mnemonic; no semantic-convention key exists); on responses
//!   `wasmtap.dns.response_code` (the RCODE name) and
//!   `wasmtap.dns.answer_count` (ANCOUNT); `wasmtap.truncated` when the TC
//!   bit is set or the message is not whole (cut by the capture, a gap or the
//!   flow's end); `error.type` on error responses. A NOERROR response's
//!   addresses (the A and AAAA records of its answer section, at most 16) in
//!   `wasmtap.dns.answers`, separated by spaces (the semantic conventions'
//!   `dns.answers` is an array, which attribute values cannot carry), with
//!   `wasmtap.dns.ttl`, the smallest TTL of the answer's records in seconds:
//!   the host learns names from them (`[names] dns`).
//! * A UDP datagram that is not a readable DNS message is skipped (consumed,
//!   nothing reported, logged at debug level) rather than failing: a `feed`
//!   error ends the flow's session, and later datagrams of the flow are
//!   still good.

pub mod parser;

use wasmtap_sdk::parsed::{Convert, Parsed};
use wasmtap_sdk::{Attribute, Decoder, Descriptor, Direction, Level, Message, Transport};

/// The DNS decoder.
pub struct Dns;

/// Every attribute this decoder sets.
const ATTRIBUTE_KEYS: [&str; 8] = [
    "dns.question.name",
    "wasmtap.dns.question.type",
    "wasmtap.dns.response_code",
    "wasmtap.dns.answer_count",
    "wasmtap.truncated",
    "error.type",
    "wasmtap.dns.answers",
    "wasmtap.dns.ttl",
];

fn framing(t: Transport) -> parser::Framing {
    match t {
        Transport::Udp => parser::Framing::Udp,
        Transport::Tcp => parser::Framing::Tcp,
    }
}

impl Decoder for Dns {
    type Session = DnsSession;

    fn describe() -> Descriptor {
        Descriptor::new("dns", env!("CARGO_PKG_VERSION"))
            .protocol("dns")
            .transport(Transport::Tcp)
            .transport(Transport::Udp)
            .port(53)
            .attribute_keys(&ATTRIBUTE_KEYS)
    }

    fn probe(transport: Transport, dir: Direction, data: &[u8]) -> u8 {
        match parser::probe(framing(transport), data) {
            // A query towards the server or a response towards the client.
            Some(qr) if qr == (dir == Direction::ToClient) => 80,
            // DNS, the other way round (a capture that starts mid-exchange).
            Some(_) => 60,
            None => 0,
        }
    }

    fn new_session(transport: Transport, _server_port: u16) -> DnsSession {
        Parsed::new(parser::Parser::new(framing(transport)), ToHost::default())
    }
}

/// Per-flow state: the parser, its messages converted by [`ToHost`].
pub type DnsSession = Parsed<ToHost>;

/// Parsed messages to the host's ([`to_message`]); logs the malformed
/// messages the parser skipped.
#[derive(Default)]
pub struct ToHost {
    /// Malformed messages already logged.
    malformed: u64,
}

impl Convert for ToHost {
    type Parser = parser::Parser;

    fn message(&mut self, m: parser::Msg, _timestamp_ns: u64) -> Message {
        to_message(m)
    }

    fn after_feed(&mut self, parser: &parser::Parser) {
        if parser.malformed() > self.malformed {
            self.malformed = parser.malformed();
            let why = parser.last_malformed().unwrap_or("malformed");
            wasmtap_sdk::log(
                Level::Debug,
                &format!("skipped a malformed DNS message: {why}"),
            );
        }
    }
}

wasmtap_sdk::parser_types!(parser::Dir, parser::ParseError);

/// The operation name of a query (see the crate docs): a listed mnemonic,
/// else `_OTHER`, so span names stay bounded whatever the wire carries
/// (`wasmtap.dns.question.type` keeps `TYPE<n>`).
pub fn operation(h: &parser::Header, q: Option<&parser::Question>) -> String {
    let name = match q {
        Some(q) if h.opcode == parser::OPCODE_QUERY => parser::type_name(q.qtype),
        _ => parser::opcode_name(h.opcode),
    };
    match name {
        std::borrow::Cow::Borrowed(n) => n.to_string(),
        std::borrow::Cow::Owned(_) => "_OTHER".to_string(),
    }
}

/// Maps a parsed message to a wasmtap message.
pub fn to_message(m: parser::Msg) -> Message {
    let q = m.question.as_ref();
    let mut msg = match m.kind {
        parser::Kind::Request => {
            Message::request(m.start_ns, m.end_ns, m.size, &operation(&m.header, q))
        }
        parser::Kind::Response => {
            let code = parser::rcode_name(m.header.rcode);
            let r = Message::response(m.start_ns, m.end_ns, m.size);
            let r = if parser::server_error(m.header.rcode) {
                r.error(&code)
                    .attribute(Attribute::str("error.type", code.clone()))
            } else {
                r.ok(&code)
            };
            let r = r
                .attribute(Attribute::str("wasmtap.dns.response_code", code))
                .attribute(Attribute::int(
                    "wasmtap.dns.answer_count",
                    i64::from(m.header.ancount),
                ));
            match m.answers.min_ttl {
                Some(ttl) if m.header.rcode == 0 => {
                    let mut list = String::new();
                    for a in &m.answers.addrs {
                        if !list.is_empty() {
                            list.push(' ');
                        }
                        list.push_str(&a.to_string());
                    }
                    r.attribute(Attribute::str("wasmtap.dns.answers", list))
                        .attribute(Attribute::int("wasmtap.dns.ttl", i64::from(ttl)))
                }
                _ => r,
            }
        }
    }
    .correlate(m.correlation);
    if let Some(q) = q {
        msg = msg
            .attribute(Attribute::str("dns.question.name", q.name.clone()))
            .attribute(Attribute::str(
                "wasmtap.dns.question.type",
                parser::type_name(q.qtype),
            ));
    }
    if m.header.tc || m.incomplete {
        msg = msg.attribute(Attribute::boolean("wasmtap.truncated", true));
    }
    msg
}

wasmtap_sdk::export_decoder!(Dns);

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtap_sdk::Session;
    use wasmtap_sdk::{AttributeValue, MessageKind, StatusClass};

    /// A query for `www.example.com` (QTYPE `qtype`, class IN).
    fn query(id: u16, qtype: u16) -> Vec<u8> {
        let mut m = id.to_be_bytes().to_vec();
        m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        m.extend_from_slice(b"\x03www\x07example\x03com\x00");
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        m
    }

    /// The answer to [`query`], with header flags byte 3 = `flags` (RA, rcode).
    fn response(id: u16, qtype: u16, flags: u8) -> Vec<u8> {
        let mut m = query(id, qtype);
        m[2] = 0x81;
        m[3] = flags;
        m
    }

    fn tcp(m: &[u8]) -> Vec<u8> {
        let mut v = (m.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(m);
        v
    }

    /// The value of `key` on `m`, rendered as text.
    fn attr(m: &Message, key: &str) -> Option<String> {
        m.attributes
            .iter()
            .find(|a| a.key_name() == Some(key))
            .map(|a| match &a.value {
                AttributeValue::Str(s) => s.clone(),
                AttributeValue::Int(i) => i.to_string(),
                AttributeValue::Float(f) => f.to_string(),
                AttributeValue::Boolean(b) => b.to_string(),
            })
    }

    fn feed_udp(s: &mut DnsSession, dir: Direction, d: &[u8]) -> Vec<Message> {
        let mut out = Vec::new();
        assert_eq!(s.feed(dir, 7, d, &mut out).unwrap(), d.len());
        out
    }

    #[test]
    fn answers_report_their_addresses_and_smallest_ttl() {
        // www.example.com CNAME edge.example.net (TTL 300), edge A 192.0.2.7
        // (TTL 60), edge AAAA 2001:db8::7 (TTL 120), an MX (ignored), and an
        // additional-section A (not an answer).
        let mut m = response(9, 1, 0x80);
        m[7] = 4; // ANCOUNT
        m[11] = 1; // ARCOUNT
        m.extend_from_slice(b"\xc0\x0c\x00\x05\x00\x01\x00\x00\x01\x2c\x00\x12");
        let edge = m.len() as u8;
        m.extend_from_slice(b"\x04edge\x07example\x03net\x00");
        m.extend_from_slice(&[0xc0, edge, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7]);
        m.extend_from_slice(&[0xc0, edge, 0, 28, 0, 1, 0, 0, 0, 120, 0, 16]);
        m.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
        m.extend_from_slice(&[0xc0, edge, 0, 15, 0, 1, 0, 0, 0, 5, 0, 3, 0, 1, 0]);
        m.extend_from_slice(&[0xc0, edge, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 10, 9, 9, 9]);
        wasmtap_sdk::__set_attribute_keys(&Dns::describe().attribute_keys);
        let mut s = Dns::new_session(Transport::Udp, 53);
        feed_udp(&mut s, Direction::ToServer, &query(9, 1));
        let out = feed_udp(&mut s, Direction::ToClient, &m);
        assert_eq!(out.len(), 1);
        assert_eq!(
            attr(&out[0], "wasmtap.dns.answers").as_deref(),
            Some("192.0.2.7 2001:db8::7")
        );
        // The MX's 5 s does not count: it maps no address.
        assert_eq!(attr(&out[0], "wasmtap.dns.ttl").as_deref(), Some("60"));
        assert!(attr(&out[0], "wasmtap.truncated").is_none());

        // NXDOMAIN, or an answer cut short, reports what it can and no more.
        let nx = response(10, 1, 0x83);
        let out = feed_udp(&mut s, Direction::ToClient, &nx);
        assert!(attr(&out[0], "wasmtap.dns.answers").is_none());
        let cut = &m[..m.len() - 59];
        let out = feed_udp(&mut s, Direction::ToClient, cut);
        assert_eq!(
            attr(&out[0], "wasmtap.dns.answers").as_deref(),
            Some("192.0.2.7")
        );
        assert_eq!(attr(&out[0], "wasmtap.dns.ttl").as_deref(), Some("60"));
    }

    #[test]
    fn describes_dns_on_port_53_over_udp_and_tcp() {
        let d = Dns::describe();
        assert_eq!(d.name, "dns");
        assert_eq!(d.protocols, ["dns"]);
        assert_eq!(d.default_ports, [53]);
        assert!(d.transports.contains(&Transport::Udp));
        assert!(d.transports.contains(&Transport::Tcp));
        assert_eq!(d.attribute_keys, ATTRIBUTE_KEYS);
    }

    #[test]
    fn probe_accepts_dns_and_rejects_other() {
        let (u, t) = (Transport::Udp, Transport::Tcp);
        let (s, c) = (Direction::ToServer, Direction::ToClient);
        assert_eq!(Dns::probe(u, s, &query(1, 1)), 80);
        assert_eq!(Dns::probe(u, c, &response(1, 28, 0x83)), 80);
        assert_eq!(Dns::probe(u, c, &query(1, 1)), 60);
        assert_eq!(Dns::probe(t, s, &tcp(&query(1, 1))), 80);
        // First segment of a TCP message, cut after the question.
        let mut long = query(1, 1);
        long[11] = 1;
        let mut framed = ((long.len() + 11) as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&long);
        assert_eq!(Dns::probe(t, s, &framed), 80);
        // A length prefix that does not match.
        let mut bad = tcp(&query(1, 1));
        bad[1] -= 3;
        assert_eq!(Dns::probe(t, s, &bad), 0);
        assert_eq!(Dns::probe(t, s, &query(1, 1)), 0);
        assert_eq!(Dns::probe(u, s, &tcp(&query(1, 1))), 0);
        for junk in [
            &b""[..],
            b"\x12",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00\x00\x00",
            b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n",
            &[0; 40],
            &[0xff; 40],
        ] {
            assert_eq!(Dns::probe(u, s, junk), 0, "{junk:?}");
            assert_eq!(Dns::probe(t, s, junk), 0, "{junk:?}");
        }
        // Header only, question count 0, or too many questions.
        assert_eq!(Dns::probe(u, s, &query(1, 1)[..12]), 0);
        let mut none = query(1, 1);
        none[5] = 0;
        assert_eq!(Dns::probe(u, s, &none), 0);
        let mut many = query(1, 1);
        many[4] = 1;
        assert_eq!(Dns::probe(u, s, &many), 0);
    }

    #[test]
    fn probe_never_panics_on_prefixes() {
        let m = tcp(&response(9, 1, 0x80));
        for n in 0..m.len() {
            let _ = Dns::probe(Transport::Tcp, Direction::ToClient, &m[..n]);
            let _ = Dns::probe(Transport::Udp, Direction::ToClient, &m[..n]);
        }
    }

    #[test]
    fn names_are_escaped() {
        let mut s = String::new();
        parser::escape_label(b"a\x07b\tc\"d\\e.f g\xff\x00\r\n~", &mut s);
        assert_eq!(s, "a\\007b\\tc\\\"d\\\\e\\.f g\\255\\000\\r\\n~");
    }

    #[test]
    fn udp_exchange_maps_to_sdk_messages() {
        wasmtap_sdk::__set_attribute_keys(&Dns::describe().attribute_keys);
        let mut s = Dns::new_session(Transport::Udp, 53);
        let q = feed_udp(&mut s, Direction::ToServer, &query(0x1234, 28));
        let r = feed_udp(&mut s, Direction::ToClient, &response(0x1234, 28, 0x83));
        assert_eq!(q.len(), 1);
        assert_eq!(r.len(), 1);
        let (q, r) = (&q[0], &r[0]);
        assert_eq!(q.kind, MessageKind::Request);
        assert_eq!(q.operation, "AAAA");
        assert_eq!(q.status, StatusClass::Unset);
        assert_eq!(r.kind, MessageKind::Response);
        assert_eq!(r.operation, "");
        assert!(q.correlation.is_some());
        assert_eq!(q.correlation, r.correlation);
        assert_eq!(q.correlation.map(|k| k & 0xffff), Some(0x1234));
        assert_eq!(attr(q, "dns.question.name"), Some("www.example.com".into()));
        assert_eq!(attr(q, "wasmtap.dns.question.type"), Some("AAAA".into()));
        assert_eq!(attr(q, "wasmtap.dns.response_code"), None);
        // NXDOMAIN: the client's problem, not a server error.
        assert_eq!(r.status, StatusClass::Ok);
        assert_eq!(r.status_code, "NXDOMAIN");
        assert_eq!(
            attr(r, "wasmtap.dns.response_code"),
            Some("NXDOMAIN".into())
        );
        assert_eq!(attr(r, "wasmtap.dns.answer_count"), Some("0".into()));
        assert_eq!(attr(r, "error.type"), None);
        assert_eq!(attr(r, "wasmtap.truncated"), None);
        assert!(r.attributes.iter().all(|a| a.key_name().is_some()));
    }

    #[test]
    fn servfail_is_an_error_and_tc_is_truncated() {
        wasmtap_sdk::__set_attribute_keys(&Dns::describe().attribute_keys);
        let mut s = Dns::new_session(Transport::Udp, 53);
        let r = feed_udp(&mut s, Direction::ToClient, &response(5, 1, 0x82));
        assert_eq!(r[0].status, StatusClass::Error);
        assert_eq!(r[0].status_code, "SERVFAIL");
        assert_eq!(attr(&r[0], "error.type"), Some("SERVFAIL".into()));
        let mut tc = response(6, 1, 0x80);
        tc[2] |= 0x02;
        let r = feed_udp(&mut s, Direction::ToClient, &tc);
        assert_eq!(r[0].status, StatusClass::Ok);
        assert_eq!(r[0].status_code, "NOERROR");
        assert_eq!(attr(&r[0], "wasmtap.truncated"), Some("true".into()));
        // A malformed datagram is skipped, the session goes on.
        assert!(feed_udp(&mut s, Direction::ToClient, &tc[..20]).is_empty());
        assert_eq!(s.parser().malformed(), 1);
        assert_eq!(feed_udp(&mut s, Direction::ToServer, &query(7, 1)).len(), 1);
    }

    #[test]
    fn status_mapping() {
        let cases: [(u8, &str, bool); 16] = [
            (0, "NOERROR", false),
            (1, "FORMERR", false),
            (2, "SERVFAIL", true),
            (3, "NXDOMAIN", false),
            (4, "NOTIMP", true),
            (5, "REFUSED", false),
            (6, "YXDOMAIN", false),
            (7, "YXRRSET", false),
            (8, "NXRRSET", false),
            (9, "NOTAUTH", false),
            (10, "NOTZONE", false),
            (11, "RCODE11", true),
            (12, "RCODE12", true),
            (13, "RCODE13", true),
            (14, "RCODE14", true),
            (15, "RCODE15", true),
        ];
        for (rcode, name, error) in cases {
            assert_eq!(parser::rcode_name(rcode), name);
            assert_eq!(parser::server_error(rcode), error, "{name}");
        }
    }

    #[test]
    fn operations() {
        let mut h = parser::Header::parse(&query(1, 1)).unwrap();
        let q = |t| parser::Question {
            name: "x".into(),
            qtype: t,
            qclass: 1,
        };
        for (t, name) in [
            (1, "A"),
            (28, "AAAA"),
            (5, "CNAME"),
            (15, "MX"),
            (2, "NS"),
            (12, "PTR"),
            (6, "SOA"),
            (33, "SRV"),
            (16, "TXT"),
            (255, "ANY"),
            (65, "HTTPS"),
            (64, "SVCB"),
            (257, "CAA"),
            (43, "DS"),
            (48, "DNSKEY"),
            (46, "RRSIG"),
            (47, "NSEC"),
            (41, "OPT"),
            (29, "LOC"),
            (252, "AXFR"),
            (251, "IXFR"),
            (999, "_OTHER"),
        ] {
            assert_eq!(operation(&h, Some(&q(t))), name);
        }
        assert_eq!(operation(&h, None), "QUERY");
        for (op, name) in [
            (1, "IQUERY"),
            (2, "STATUS"),
            (4, "NOTIFY"),
            (5, "UPDATE"),
            (6, "DSO"),
            (9, "_OTHER"),
        ] {
            h.opcode = op;
            assert_eq!(operation(&h, Some(&q(6))), name);
        }
    }
}
