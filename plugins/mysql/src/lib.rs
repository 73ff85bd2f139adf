//! MySQL client/server protocol decoder plugin for wasmtap.
//!
//! `parser` is pure bytes-to-structs code (tested natively); this file maps
//! its messages to the SDK's messages with OpenTelemetry semantic-convention
//! attributes. User names, passwords and auth payloads are never read; SQL
//! text is sanitised (literals replaced by `?`) unless the plugin config is
//! `{"raw_query_text": true}`.

pub mod parser;

use wasmtap_sdk::parsed::{Map, Parsed};
use wasmtap_sdk::{Attribute, Decoder, Descriptor, Direction, Message, Transport};

/// The MySQL decoder.
pub struct Mysql;

/// Every attribute this decoder sets (semantic-convention names).
const ATTRIBUTE_KEYS: [&str; 8] = [
    "db.system.name",
    "db.operation.name",
    "db.query.text",
    "db.namespace",
    "db.collection.name",
    "db.response.status_code",
    "db.response.returned_rows",
    "error.type",
];

impl Decoder for Mysql {
    type Session = MysqlSession;

    fn describe() -> Descriptor {
        Descriptor::new("mysql", env!("CARGO_PKG_VERSION"))
            .protocol("mysql")
            .transport(Transport::Tcp)
            .port(3306)
            .port(3307)
            .port(6033)
            .attribute_keys(&ATTRIBUTE_KEYS)
    }

    fn probe(transport: Transport, dir: Direction, data: &[u8]) -> u8 {
        if transport != Transport::Tcp {
            return 0;
        }
        probe_bytes(dir, data)
    }

    fn new_session(_transport: Transport, _server_port: u16) -> MysqlSession {
        let config = parser::Config {
            raw_query_text: wasmtap_sdk::QueryTextConfig::from_config(&wasmtap_sdk::config())
                .raw_query_text,
        };
        Parsed::new(parser::Parser::new(config), Map(to_message))
    }
}

/// Confidence that `data`, the first bytes of `dir`, is MySQL.
pub fn probe_bytes(dir: Direction, data: &[u8]) -> u8 {
    let header = |d: &[u8]| -> Option<(usize, u8)> {
        let h = d.get(..4)?;
        Some((
            usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16,
            h[3],
        ))
    };
    let Some((len, seq)) = header(data) else {
        return 0;
    };
    let payload = data.get(4..).unwrap_or(&[]);
    match dir {
        Direction::ToClient => {
            // Server greeting: protocol 10, a printable version, NUL.
            let version_ok = payload.get(1..).is_some_and(|v| {
                let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
                end > 0 && v[..end].iter().all(|b| b.is_ascii_graphic())
            });
            if seq == 0 && payload.first() == Some(&10) && (20..1024).contains(&len) && version_ok {
                90
            } else {
                0
            }
        }
        Direction::ToServer => {
            if seq != 0 || len == 0 {
                // A compressed command (mid-stream): header(7) + plain packet.
                return 0;
            }
            // The packet ends the sample, runs past it, or is followed by
            // another command packet (pipelining).
            let exact = len + 4 == data.len()
                || data
                    .get(len + 4..)
                    .and_then(header)
                    .is_some_and(|(next, seq)| next > 0 && seq == 0);
            match payload.first() {
                Some(0x03 | 0x16) => {
                    let sql = payload.get(1..).unwrap_or(&[]);
                    if parser::sql_keyword(sql).is_some() && (exact || len + 4 > data.len()) {
                        85
                    } else {
                        0
                    }
                }
                Some(0x01 | 0x0e) if len == 1 && exact => 60,
                Some(0x00) => {
                    // Compressed packet carrying an uncompressed command.
                    let ulen = payload.get(..3).map_or(1, |u| {
                        usize::from(u[0]) | usize::from(u[1]) << 8 | usize::from(u[2]) << 16
                    });
                    let inner = data.get(7..).unwrap_or(&[]);
                    match (ulen, header(inner), inner.get(4)) {
                        (0, Some((ilen, 0)), Some(0x03 | 0x16))
                            if ilen + 4 <= len
                                && parser::sql_keyword(inner.get(5..).unwrap_or(&[])).is_some() =>
                        {
                            80
                        }
                        _ => 0,
                    }
                }
                _ => 0,
            }
        }
    }
}

/// Per-flow state: the parser, its messages converted by [`to_message`].
pub type MysqlSession = Parsed<Map<parser::Parser>>;

wasmtap_sdk::parser_types!(parser::Dir, parser::ParseError);

/// Maps a parsed message to a wasmtap message with semantic-convention attributes.
pub fn to_message(m: parser::Message) -> Message {
    let mut msg = match m.kind {
        parser::Kind::Request | parser::Kind::OneWay => {
            let mut msg = if m.kind == parser::Kind::Request {
                Message::request(m.start_ns, m.end_ns, m.size, &m.operation)
            } else {
                Message::one_way(m.start_ns, m.end_ns, m.size, &m.operation)
            };
            msg = msg
                .attribute(Attribute::str("db.system.name", "mysql"))
                .attribute(Attribute::str("db.operation.name", m.operation.clone()));
            if let Some(q) = m.query {
                msg = msg.attribute(Attribute::str("db.query.text", q));
            }
            if let Some(ns) = m.namespace {
                msg = msg.attribute(Attribute::str("db.namespace", ns));
            }
            if let Some(c) = m.collection {
                msg = msg.attribute(Attribute::str("db.collection.name", c));
            }
            msg
        }
        parser::Kind::Response => {
            let mut msg = Message::response(m.start_ns, m.end_ns, m.size);
            msg = match m.error_code {
                Some(code) => {
                    let code = code.to_string();
                    msg.error(&code)
                        .attribute(Attribute::str("db.response.status_code", code.clone()))
                        .attribute(Attribute::str("error.type", code))
                }
                None => msg.ok(""),
            };
            if let Some(rows) = m.rows {
                msg = msg.attribute(Attribute::int(
                    "db.response.returned_rows",
                    i64::try_from(rows).unwrap_or(i64::MAX),
                ));
            }
            msg
        }
    };
    if let Some(c) = m.correlation {
        msg = msg.correlate(c);
    }
    msg
}

wasmtap_sdk::export_decoder!(Mysql);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_accepts_mysql_and_rejects_other() {
        let greeting = b"\x4a\x00\x00\x00\x0a8.0.21\x00rest-of-greeting-bytes-here..........";
        assert!(probe_bytes(Direction::ToClient, greeting) >= 50);
        assert!(probe_bytes(Direction::ToServer, b"\x09\x00\x00\x00\x03SELECT 1") >= 50);
        assert!(probe_bytes(Direction::ToServer, b"\x01\x00\x00\x00\x0e") >= 50);
        let pipelined = b"\x09\x00\x00\x00\x03SELECT 1\x09\x00\x00\x00\x03SELECT 2";
        assert!(probe_bytes(Direction::ToServer, pipelined) >= 50);
        assert_eq!(
            probe_bytes(Direction::ToServer, b"\x09\x00\x00\x00\x03SELECT 1junkjunk"),
            0
        );
        let compressed = b"\x0d\x00\x00\x00\x00\x00\x00\x09\x00\x00\x00\x03SELECT 1";
        assert!(probe_bytes(Direction::ToServer, compressed) >= 50);
        assert_eq!(probe_bytes(Direction::ToServer, b"GET / HTTP/1.1\r\n"), 0);
        assert_eq!(probe_bytes(Direction::ToServer, b"*1\r\n$4\r\nPING\r\n"), 0);
        assert_eq!(probe_bytes(Direction::ToServer, b"\x16\x03\x01\x02\x00"), 0);
        assert_eq!(
            Mysql::probe(
                Transport::Udp,
                Direction::ToServer,
                b"\x09\x00\x00\x00\x03SELECT 1"
            ),
            0
        );
    }
}
