//! PostgreSQL (frontend/backend protocol v3) decoder plugin for wasmtap.
//!
//! `parser` is pure bytes-to-structs code (tested natively); this file maps
//! its messages to the SDK's messages with OpenTelemetry semantic-convention
//! attributes. Passwords and SASL/GSSAPI payloads are never read; query
//! text has its literals masked unless the plugin's configuration says
//! `{"raw_query_text": true}`. Connections that switch to TLS (SSLRequest
//! answered `S`) or GSSAPI encryption are ignored after that answer.
//!
//! Exchanges: one per simple query (`Q`, even with several statements), one
//! per `Execute` of the extended protocol, one for the startup/authentication
//! phase (`STARTUP`), one per `SSL_REQUEST` / `GSSENC_REQUEST`; a
//! `CancelRequest` is a one-way `CANCEL`.

pub mod parser;

use wasmtap_sdk::parsed::{Map, Parsed};
use wasmtap_sdk::{Attribute, Decoder, Descriptor, Direction, Message, Transport};

/// The PostgreSQL decoder.
pub struct Pgsql;

/// Every attribute this decoder sets.
const ATTRIBUTE_KEYS: [&str; 10] = [
    "db.system.name",
    "db.operation.name",
    "db.query.text",
    "db.namespace",
    "user.name",
    "db.response.status_code",
    "db.response.returned_rows",
    "db.response.affected_rows",
    "error.type",
    "wasmtap.truncated",
];

impl Decoder for Pgsql {
    type Session = PgsqlSession;

    fn describe() -> Descriptor {
        Descriptor::new("pgsql", env!("CARGO_PKG_VERSION"))
            .protocol("postgresql")
            .transport(Transport::Tcp)
            .port(5432)
            .attribute_keys(&ATTRIBUTE_KEYS)
    }

    fn probe(transport: Transport, dir: Direction, data: &[u8]) -> u8 {
        if transport != Transport::Tcp {
            return 0;
        }
        parser::probe(parser::Dir::from(dir), data)
    }

    fn new_session(_transport: Transport, _server_port: u16) -> PgsqlSession {
        let opts = parser::Options {
            raw_query_text: wasmtap_sdk::QueryTextConfig::from_config(&wasmtap_sdk::config())
                .raw_query_text,
        };
        Parsed::new(parser::Parser::new(opts), Map(to_message))
    }
}

/// Per-flow state: the parser, its messages converted by [`to_message`].
pub type PgsqlSession = Parsed<Map<parser::Parser>>;

wasmtap_sdk::parser_types!(parser::Dir, parser::ParseError);

/// Maps a parsed message to a wasmtap message with semantic-convention attributes.
pub fn to_message(m: parser::Message) -> Message {
    match m.kind {
        parser::Kind::Request | parser::Kind::OneWay => {
            let mut msg = if m.kind == parser::Kind::OneWay {
                Message::one_way(m.start_ns, m.end_ns, m.size, &m.operation)
            } else {
                Message::request(m.start_ns, m.end_ns, m.size, &m.operation)
            }
            .correlate(m.id)
            .attribute(Attribute::str("db.system.name", "postgresql"))
            .attribute(Attribute::str("db.operation.name", m.operation.clone()));
            if let Some(q) = m.query {
                msg = msg.attribute(Attribute::str("db.query.text", q));
            }
            if m.query_truncated {
                msg = msg.attribute(Attribute::boolean("wasmtap.truncated", true));
            }
            if let Some(db) = m.database {
                msg = msg.attribute(Attribute::str("db.namespace", db));
            }
            if let Some(u) = m.user {
                msg = msg.attribute(Attribute::str("user.name", u));
            }
            msg
        }
        parser::Kind::Response => {
            let mut msg = Message::response(m.start_ns, m.end_ns, m.size).correlate(m.id);
            if m.error {
                let code = if m.status_code.is_empty() {
                    m.error_kind.unwrap_or("error").to_string()
                } else {
                    msg = msg.attribute(Attribute::str(
                        "db.response.status_code",
                        m.status_code.clone(),
                    ));
                    m.status_code.clone()
                };
                msg = msg
                    .error(&code)
                    .attribute(Attribute::str("error.type", code.clone()));
            } else {
                msg = msg.ok(&m.status_code);
            }
            if let Some(n) = m.returned_rows {
                msg = msg.attribute(Attribute::int("db.response.returned_rows", n));
            }
            if let Some(n) = m.affected_rows {
                msg = msg.attribute(Attribute::int("db.response.affected_rows", n));
            }
            msg
        }
    }
}

wasmtap_sdk::export_decoder!(Pgsql);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_switch() {}

    #[test]
    fn probe_accepts_postgres_and_rejects_other() {
        let mut startup = vec![0, 0, 0, 0, 0, 3, 0, 0];
        startup.extend_from_slice(b"user\0bob\0\0");
        let n = startup.len() as u8;
        startup[3] = n;
        assert!(Pgsql::probe(Transport::Tcp, Direction::ToServer, &startup) >= 50);
        let ssl = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
        assert!(Pgsql::probe(Transport::Tcp, Direction::ToServer, &ssl) >= 50);
        assert!(
            Pgsql::probe(
                Transport::Tcp,
                Direction::ToServer,
                b"Q\0\0\0\x0dSELECT 1\0"
            ) >= 50
        );
        assert!(Pgsql::probe(Transport::Tcp, Direction::ToClient, b"Z\0\0\0\x05I") >= 50);
        assert_eq!(
            Pgsql::probe(Transport::Tcp, Direction::ToServer, b"GET / HTTP/1.1\r\n"),
            0
        );
        assert_eq!(
            Pgsql::probe(Transport::Tcp, Direction::ToClient, b"HTTP/1.1 200 OK\r\n"),
            0
        );
        assert_eq!(Pgsql::probe(Transport::Udp, Direction::ToServer, &ssl), 0);
    }
}
