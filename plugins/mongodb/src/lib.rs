//! MongoDB wire-protocol decoder plugin for wasmtap.
//!
//! `parser` is pure bytes-to-structs code (tested natively); this file maps
//! its messages to the SDK's messages with OpenTelemetry semantic-convention
//! attributes. Only the command name, database, collection and the reply's
//! `ok`/`code`/`codeName` are read: no filter, document or authentication
//! payload is ever exported (`db.query.text` is not set).

pub mod parser;

use wasmtap_sdk::parsed::{Map, Parsed};
use wasmtap_sdk::{Attribute, Decoder, Descriptor, Direction, Message, Transport};

/// The MongoDB decoder.
pub struct MongoDb;

/// Every attribute this decoder sets (semantic-convention names).
const ATTRIBUTE_KEYS: [&str; 9] = [
    "db.system.name",
    "db.operation.name",
    "db.namespace",
    "db.collection.name",
    "db.response.status_code",
    "db.response.returned_rows",
    "error.type",
    "mongodb.op_code",
    "wasmtap.truncated",
];

impl Decoder for MongoDb {
    type Session = MongoDbSession;

    fn describe() -> Descriptor {
        Descriptor::new("mongodb", env!("CARGO_PKG_VERSION"))
            .protocol("mongodb")
            .transport(Transport::Tcp)
            .port(27017)
            .port(27018)
            .port(27019)
            .port(3717)
            .attribute_keys(&ATTRIBUTE_KEYS)
    }

    fn probe(transport: Transport, dir: Direction, data: &[u8]) -> u8 {
        if transport != Transport::Tcp {
            return 0;
        }
        if parser::probe(data, parser::Dir::from(dir)) {
            70
        } else {
            0
        }
    }

    fn new_session(_transport: Transport, _server_port: u16) -> MongoDbSession {
        Parsed::new(parser::Parser::new(), Map(to_message))
    }
}

/// Per-flow state: the parser, its messages converted by [`to_message`].
pub type MongoDbSession = Parsed<Map<parser::Parser>>;

wasmtap_sdk::parser_types!(parser::Dir, parser::ParseError);

fn op_code_name(op: i32) -> &'static str {
    match op {
        1 => "OP_REPLY",
        2001 => "OP_UPDATE",
        2002 => "OP_INSERT",
        2004 => "OP_QUERY",
        2005 => "OP_GET_MORE",
        2006 => "OP_DELETE",
        2007 => "OP_KILL_CURSORS",
        2013 => "OP_MSG",
        _ => "OP_UNKNOWN",
    }
}

/// Maps a parsed message to a wasmtap message with semantic-convention attributes.
pub fn to_message(m: parser::Msg) -> Message {
    let op = if m.command.is_empty() {
        if m.compressed {
            "compressed"
        } else {
            "unknown"
        }
    } else {
        m.command.as_str()
    };
    let mut msg = match m.kind {
        parser::Kind::Request => Message::request(m.start_ns, m.end_ns, m.size, op),
        parser::Kind::OneWay => Message::one_way(m.start_ns, m.end_ns, m.size, op),
        parser::Kind::Response => {
            let code = m.code.map(|c| c.to_string()).unwrap_or_default();
            let r = Message::response(m.start_ns, m.end_ns, m.size);
            if m.is_error() {
                r.error(&code)
            } else {
                r.ok(&code)
            }
        }
    }
    .correlate(m.correlation);
    let opcode = if m.compressed {
        format!("OP_COMPRESSED({})", op_code_name(m.opcode))
    } else {
        op_code_name(m.opcode).to_string()
    };
    match m.kind {
        parser::Kind::Request | parser::Kind::OneWay => {
            msg = msg
                .attribute(Attribute::str("db.system.name", "mongodb"))
                .attribute(Attribute::str("mongodb.op_code", opcode));
            if !m.command.is_empty() {
                msg = msg.attribute(Attribute::str("db.operation.name", m.command.clone()));
            }
            if let Some(db) = m.database {
                msg = msg.attribute(Attribute::str("db.namespace", db));
            }
            if let Some(c) = m.collection {
                msg = msg.attribute(Attribute::str("db.collection.name", c));
            }
        }
        parser::Kind::Response => {
            if let Some(c) = m.code {
                msg = msg.attribute(Attribute::str("db.response.status_code", c.to_string()));
            }
            if m.is_error() {
                let t = m
                    .code_name
                    .clone()
                    .or(m.code.map(|c| c.to_string()))
                    .unwrap_or_else(|| "_OTHER".to_string());
                msg = msg.attribute(Attribute::str("error.type", t));
            }
            if let Some(n) = m.returned {
                msg = msg.attribute(Attribute::int("db.response.returned_rows", n));
            }
        }
    }
    if m.truncated {
        msg = msg.attribute(Attribute::boolean("wasmtap.truncated", true));
    }
    msg
}

wasmtap_sdk::export_decoder!(MongoDb);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_accepts_mongodb_and_rejects_other() {
        let t = Transport::Tcp;
        // OP_MSG ping: length 26... built by hand: header, flags 0, kind 0, {}.
        let mut m = 26i32.to_le_bytes().to_vec();
        m.extend_from_slice(&7i32.to_le_bytes());
        m.extend_from_slice(&0i32.to_le_bytes());
        m.extend_from_slice(&2013i32.to_le_bytes());
        m.extend_from_slice(&[0, 0, 0, 0, 0, 5, 0, 0, 0, 0]);
        assert!(MongoDb::probe(t, Direction::ToServer, &m) >= 50);
        assert_eq!(
            MongoDb::probe(t, Direction::ToServer, b"GET / HTTP/1.1\r\nHost: x\r\n"),
            0
        );
        assert_eq!(MongoDb::probe(Transport::Udp, Direction::ToServer, &m), 0);
    }
}
