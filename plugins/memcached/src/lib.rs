//! memcached decoder plugin for wasmtap (text, meta and binary protocols).
//!
//! `parser` is pure bytes-to-structs code (tested natively); this file maps
//! its messages to the SDK's messages with OpenTelemetry semantic-convention
//! attributes. Keys are masked in `db.query.text` unless the plugin config
//! says `{"raw_query_text": true}`; values are never read.

pub mod parser;

use wasmtap_sdk::parsed::{Map, Parsed};
use wasmtap_sdk::{Attribute, Decoder, Descriptor, Direction, Message, Transport};

/// The memcached decoder.
pub struct Memcached;

/// Every attribute this decoder sets (semantic-convention names).
const ATTRIBUTE_KEYS: [&str; 8] = [
    "db.system.name",
    "db.operation.name",
    "db.query.text",
    "db.operation.batch.size",
    "db.response.status_code",
    "db.response.returned_rows",
    "error.type",
    "wasmtap.truncated",
];

impl Decoder for Memcached {
    type Session = MemcachedSession;

    fn describe() -> Descriptor {
        Descriptor::new("memcached", env!("CARGO_PKG_VERSION"))
            .protocol("memcached")
            .transport(Transport::Tcp)
            .port(11211)
            .attribute_keys(&ATTRIBUTE_KEYS)
    }

    fn probe(transport: Transport, dir: Direction, data: &[u8]) -> u8 {
        if transport != Transport::Tcp {
            return 0;
        }
        let mut p = parser::Parser::new(false);
        let mut out = Vec::new();
        let d = parser::Dir::from(dir);
        // Binary: a plausible first header.
        let magic = if d == parser::Dir::ToServer {
            0x80
        } else {
            0x81
        };
        if data.first() == Some(&magic) {
            return if data.len() >= 24 && p.feed(d, 0, data, &mut out).is_ok() && !out.is_empty() {
                70
            } else {
                0
            };
        }
        // Text: the first line must be a known command / response.
        let line_end = data.iter().position(|&b| b == b'\n');
        match line_end {
            Some(n) if n < parser::MAX_LINE => {
                let Some(first) = data.get(..=n) else {
                    return 0;
                };
                let _ = p.feed(d, 0, first, &mut out);
                if out.is_empty() && !p.mid_value(d) {
                    return 0;
                }
                if out.first().is_some_and(|m| m.op == "_OTHER") {
                    return 0;
                }
                60
            }
            _ => 0,
        }
    }

    fn new_session(_transport: Transport, _server_port: u16) -> MemcachedSession {
        Parsed::new(
            parser::Parser::new(
                wasmtap_sdk::QueryTextConfig::from_config(&wasmtap_sdk::config()).raw_query_text,
            ),
            Map(to_message),
        )
    }
}

/// Per-flow state: the parser, its messages converted by [`to_message`].
pub type MemcachedSession = Parsed<Map<parser::Parser>>;

wasmtap_sdk::parser_types!(parser::Dir, parser::ParseError);

/// Maps a parsed message to a wasmtap message with semantic-convention attributes.
pub fn to_message(m: parser::Msg) -> Message {
    let mut msg = match m.kind {
        parser::Kind::Request => Message::request(m.start_ns, m.end_ns, m.size, &m.op),
        parser::Kind::OneWay => Message::one_way(m.start_ns, m.end_ns, m.size, &m.op),
        parser::Kind::Response => {
            let r = Message::response(m.start_ns, m.end_ns, m.size);
            if m.error {
                r.error(&m.status)
            } else {
                r.ok(&m.status)
            }
        }
    };
    if let Some(c) = m.correlation {
        msg = msg.correlate(c);
    }
    match m.kind {
        parser::Kind::Request | parser::Kind::OneWay => {
            msg = msg
                .attribute(Attribute::str("db.system.name", "memcached"))
                .attribute(Attribute::str("db.operation.name", m.op.clone()));
            if let Some(q) = m.query {
                msg = msg.attribute(Attribute::str("db.query.text", q));
            }
            if m.keys > 1 {
                msg = msg.attribute(Attribute::int("db.operation.batch.size", i64::from(m.keys)));
            }
        }
        parser::Kind::Response => {
            if !m.status.is_empty() {
                msg = msg.attribute(Attribute::str("db.response.status_code", m.status.clone()));
            }
            if m.error {
                let t = if m.status.is_empty() {
                    "_OTHER".to_string()
                } else {
                    m.status.clone()
                };
                msg = msg.attribute(Attribute::str("error.type", t));
            }
            if let Some(rows) = m.rows {
                msg = msg.attribute(Attribute::int(
                    "db.response.returned_rows",
                    i64::try_from(rows).unwrap_or(i64::MAX),
                ));
            }
        }
    }
    if m.truncated {
        msg = msg.attribute(Attribute::boolean("wasmtap.truncated", true));
    }
    msg
}

wasmtap_sdk::export_decoder!(Memcached);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_accepts_memcached_and_rejects_other() {
        let t = Transport::Tcp;
        assert!(Memcached::probe(t, Direction::ToServer, b"get foo\r\n") >= 50);
        assert!(Memcached::probe(t, Direction::ToServer, b"set foo 0 0 3\r\nbar\r\n") >= 50);
        assert!(Memcached::probe(t, Direction::ToClient, b"STORED\r\n") >= 50);
        assert!(Memcached::probe(t, Direction::ToClient, b"VALUE foo 0 3\r\nbar\r\n") >= 50);
        let mut bin = vec![0x80u8, 0x00, 0x00, 0x03, 0, 0, 0, 0, 0, 0, 0, 3];
        bin.extend_from_slice(&[0; 12]);
        bin.extend_from_slice(b"foo");
        assert!(Memcached::probe(t, Direction::ToServer, &bin) >= 50);
        assert_eq!(
            Memcached::probe(t, Direction::ToServer, b"GET / HTTP/1.1\r\n"),
            0
        );
        assert_eq!(
            Memcached::probe(t, Direction::ToServer, b"\x16\x03\x01\x02\x00"),
            0
        );
        assert_eq!(
            Memcached::probe(Transport::Udp, Direction::ToServer, b"get foo\r\n"),
            0
        );
    }
}
