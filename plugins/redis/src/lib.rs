//! Redis (RESP2/RESP3) decoder plugin for wasmtap.
//!
//! `parser` is pure bytes-to-structs code (tested natively); this file maps
//! its messages to the SDK's messages with OpenTelemetry semantic-convention
//! attributes. Commands are reported as requests (operation = the command,
//! upper-cased, plus the subcommand for container commands such as
//! `CONFIG GET`), replies as responses (paired by order by the host), and
//! pub/sub messages and RESP3 pushes as one-way messages.
//!
//! `db.query.text` masks every argument (`SET ? ?`) unless the plugin config
//! is `{"raw_query_text": true}`; even then the arguments of `AUTH`,
//! `HELLO`, `MIGRATE`, `ACL` and `CONFIG` (which may carry passwords) stay
//! masked.

pub mod parser;

use wasmtap_sdk::parsed::{Convert, Parsed};
use wasmtap_sdk::{Attribute, Decoder, Descriptor, Direction, Message, Transport};

/// The Redis decoder.
pub struct Redis;

/// Every attribute this decoder sets.
const ATTRIBUTE_KEYS: [&str; 6] = [
    "db.system.name",
    "db.operation.name",
    "db.query.text",
    "db.namespace",
    "db.response.status_code",
    "wasmtap.truncated",
];

/// Commands whose first argument is a subcommand (`CONFIG GET`).
const CONTAINERS: [&str; 17] = [
    "ACL", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "DEBUG", "FUNCTION", "LATENCY", "MEMORY",
    "MODULE", "OBJECT", "PUBSUB", "SCRIPT", "SLOWLOG", "XGROUP", "XINFO", "SENTINEL",
];

/// Commands whose arguments may carry credentials: never shown raw.
const SENSITIVE: [&str; 5] = ["AUTH", "HELLO", "MIGRATE", "ACL", "CONFIG"];

/// Masked arguments written out before `...`.
const MAX_MASKED_ARGS: u64 = 16;

/// Inline command words accepted by `probe`.
/// Memcached text commands, as memcached spells them (always lowercase).
const MEMCACHED_WORDS: [&[u8]; 9] = [
    b"get", b"gets", b"set", b"add", b"delete", b"incr", b"decr", b"touch", b"quit",
];

const PROBE_WORDS: [&[u8]; 14] = [
    b"PING",
    b"AUTH",
    b"HELLO",
    b"SELECT",
    b"GET",
    b"SET",
    b"INFO",
    b"COMMAND",
    b"CLIENT",
    b"QUIT",
    b"ECHO",
    b"SUBSCRIBE",
    b"PUBLISH",
    b"MONITOR",
];

impl Decoder for Redis {
    type Session = RedisSession;

    fn describe() -> Descriptor {
        Descriptor::new("redis", env!("CARGO_PKG_VERSION"))
            .protocol("redis")
            .transport(Transport::Tcp)
            .port(6379)
            .attribute_keys(&ATTRIBUTE_KEYS)
    }

    fn probe(transport: Transport, dir: Direction, data: &[u8]) -> u8 {
        if transport != Transport::Tcp {
            return 0;
        }
        match dir {
            Direction::ToServer => {
                // `*N\r\n$L\r\n` then a command name.
                if let Some(rest) = data.strip_prefix(b"*") {
                    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
                    let after = rest.get(digits..).unwrap_or_default();
                    if (1..=6).contains(&digits) && after.starts_with(b"\r\n$") {
                        return 80;
                    }
                    return 0;
                }
                let word_len = data.iter().take_while(|b| b.is_ascii_alphabetic()).count();
                let word = data
                    .get(..word_len)
                    .unwrap_or_default()
                    .to_ascii_uppercase();
                let next = data.get(word_len).copied();
                let known = PROBE_WORDS.contains(&word.as_slice());
                let http = data.windows(5).take(8192).any(|w| w == b"HTTP/");
                // Real clients speak RESP arrays; inline commands come from
                // people at a terminal. Lines that read as well as another
                // protocol are left to it: an HTTP/0.9 request (`GET /path`),
                // and memcached's lowercase text commands (`get k`, `set k 0 0 3`).
                let path = data.get(word_len + 1) == Some(&b'/');
                let memcached = data
                    .get(..word_len)
                    .is_some_and(|w| MEMCACHED_WORDS.contains(&w));
                if known
                    && !http
                    && !path
                    && !memcached
                    && matches!(next, Some(b' ' | b'\r' | b'\n'))
                {
                    60
                } else {
                    0
                }
            }
            Direction::ToClient => {
                const STARTS: [&[u8]; 5] = [
                    b"+OK\r\n",
                    b"+PONG\r\n",
                    b"-ERR ",
                    b"-NOAUTH ",
                    b"-WRONGTYPE ",
                ];
                if STARTS.iter().any(|s| data.starts_with(s)) {
                    60
                } else {
                    0
                }
            }
        }
    }

    fn new_session(_transport: Transport, _server_port: u16) -> RedisSession {
        Parsed::new(
            parser::Parser::new(),
            ToHost {
                namespace: None,
                raw_query_text: wasmtap_sdk::QueryTextConfig::from_config(&wasmtap_sdk::config())
                    .raw_query_text,
            },
        )
    }
}

/// Per-flow Redis state: the parser, its messages converted by [`ToHost`].
pub type RedisSession = Parsed<ToHost>;

/// Parsed messages to the host's, with what a session's earlier commands set.
pub struct ToHost {
    /// The database index after a `SELECT`.
    namespace: Option<String>,
    raw_query_text: bool,
}

wasmtap_sdk::parser_types!(parser::Dir, parser::ParseError);

/// The operation name: the command, plus the subcommand of container
/// commands (`CONFIG GET`); `UNKNOWN` when the name is not a command token.
pub fn operation(r: &parser::Request) -> String {
    if r.name.is_empty() {
        return "UNKNOWN".to_string();
    }
    if CONTAINERS.contains(&r.name.as_str())
        && let Some(sub) = r.args.first()
        && parser::is_token(sub)
    {
        return format!(
            "{} {}",
            r.name,
            String::from_utf8_lossy(sub).to_ascii_uppercase()
        );
    }
    r.name.clone()
}

/// `db.query.text`: the operation, then each remaining argument as `?`
/// (or as sent when `raw` and the command carries no credentials).
pub fn query_text(r: &parser::Request, raw: bool) -> String {
    let op = operation(r);
    let words = op.split(' ').count() as u64;
    let skip = usize::try_from(words - 1).unwrap_or(0);
    let left = r.argc.saturating_sub(words - 1);
    let mut text = op;
    if raw && !r.name.is_empty() && !SENSITIVE.contains(&r.name.as_str()) {
        let shown: Vec<&Vec<u8>> = r.args.iter().skip(skip).collect();
        for a in &shown {
            text.push(' ');
            text.push_str(&String::from_utf8_lossy(a));
        }
        if (shown.len() as u64) < left {
            text.push_str(" ...");
        }
        return text;
    }
    for _ in 0..left.min(MAX_MASKED_ARGS) {
        text.push_str(" ?");
    }
    if left > MAX_MASKED_ARGS {
        text.push_str(" ...");
    }
    text
}

impl Convert for ToHost {
    type Parser = parser::Parser;

    fn message(&mut self, m: parser::Message, _timestamp_ns: u64) -> Message {
        match m {
            parser::Message::Request(r) => {
                if r.name == "SELECT"
                    && let Some(db) = r.args.first()
                    && !db.is_empty()
                    && db.len() <= 10
                    && db.iter().all(u8::is_ascii_digit)
                {
                    self.namespace = Some(String::from_utf8_lossy(db).into_owned());
                }
                let op = operation(&r);
                let mut msg = Message::request(r.start_ns, r.end_ns, r.size, &op)
                    .attribute(Attribute::str("db.system.name", "redis"))
                    .attribute(Attribute::str("db.operation.name", op.clone()))
                    .attribute(Attribute::str(
                        "db.query.text",
                        query_text(&r, self.raw_query_text),
                    ));
                if let Some(ns) = &self.namespace {
                    msg = msg.attribute(Attribute::str("db.namespace", ns.clone()));
                }
                if r.truncated {
                    msg = msg.attribute(Attribute::boolean("wasmtap.truncated", true));
                }
                msg
            }
            parser::Message::Reply(r) => {
                let mut msg = Message::response(r.start_ns, r.end_ns, r.size);
                msg = match &r.error {
                    Some(code) => msg
                        .error(code)
                        .attribute(Attribute::str("db.response.status_code", code.clone())),
                    None => msg.ok(""),
                };
                if r.truncated {
                    msg = msg.attribute(Attribute::boolean("wasmtap.truncated", true));
                }
                msg
            }
            parser::Message::Push(p) => {
                let mut msg = Message::one_way(p.start_ns, p.end_ns, p.size, &p.name)
                    .attribute(Attribute::str("db.system.name", "redis"))
                    .attribute(Attribute::str("db.operation.name", p.name.clone()));
                if p.truncated {
                    msg = msg.attribute(Attribute::boolean("wasmtap.truncated", true));
                }
                msg
            }
        }
    }
}

wasmtap_sdk::export_decoder!(Redis);

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str, args: &[&str]) -> parser::Request {
        parser::Request {
            start_ns: 0,
            end_ns: 0,
            size: 0,
            name: name.to_string(),
            args: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
            argc: args.len() as u64,
            inline: false,
            truncated: false,
        }
    }

    #[test]
    fn probe_accepts_redis_and_rejects_other() {
        let p = |d, b: &[u8]| Redis::probe(Transport::Tcp, d, b);
        assert!(p(Direction::ToServer, b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n") >= 50);
        assert!(p(Direction::ToServer, b"PING\r\n") >= 50);
        assert!(p(Direction::ToClient, b"+PONG\r\n") >= 50);
        assert_eq!(p(Direction::ToServer, b"GET / HTTP/1.1\r\n"), 0);
        assert_eq!(p(Direction::ToServer, b"\x16\x03\x01"), 0);
        assert_eq!(p(Direction::ToServer, b"*abc"), 0);
        assert_eq!(
            Redis::probe(Transport::Udp, Direction::ToServer, b"PING\r\n"),
            0
        );
    }

    #[test]
    fn operations_and_masked_query_text() {
        let r = req("SET", &["k", "v"]);
        assert_eq!(operation(&r), "SET");
        assert_eq!(query_text(&r, false), "SET ? ?");
        assert_eq!(query_text(&r, true), "SET k v");
        let r = req("CONFIG", &["get", "save"]);
        assert_eq!(operation(&r), "CONFIG GET");
        assert_eq!(query_text(&r, false), "CONFIG GET ?");
        assert_eq!(query_text(&r, true), "CONFIG GET ?");
        let r = req("COMMAND", &[]);
        assert_eq!(operation(&r), "COMMAND");
        assert_eq!(query_text(&r, false), "COMMAND");
        let r = req("AUTH", &["user", "secret"]);
        assert_eq!(query_text(&r, true), "AUTH ? ?");
        let r = req("", &["x"]);
        assert_eq!(operation(&r), "UNKNOWN");
        let args: Vec<String> = (0..20).map(|i| i.to_string()).collect();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = req("MSET", &refs);
        assert!(query_text(&r, false).ends_with("? ? ..."));
    }

    #[test]
    fn raw_config_is_read() {}
}
