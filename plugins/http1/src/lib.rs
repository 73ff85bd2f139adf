//! HTTP/1.x decoder plugin for wasmtap.
//!
//! `parser` is pure bytes-to-structs code (tested natively); this file maps
//! its messages to the SDK's messages with OpenTelemetry semantic-convention
//! attributes. Authorization, Cookie and Set-Cookie values are never read.

pub mod parser;

use wasmtap_sdk::framing::Framed;
use wasmtap_sdk::parsed::{Convert, Parsed};
use wasmtap_sdk::{
    Attribute, CloseReason, DecodeError, Decoder, Descriptor, Direction, Message, Session,
    Transport,
};

/// The HTTP/1.x decoder.
pub struct Http1;

/// Methods named by RFC 9110 and RFC 5789; others are reported as `_OTHER`
/// (OpenTelemetry semantic conventions keep `http.request.method` bounded).
const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Every attribute this decoder sets (semantic-convention names).
const ATTRIBUTE_KEYS: [&str; 13] = [
    "http.request.method",
    "http.request.method_original",
    "url.path",
    "url.query",
    "server.address",
    "user_agent.original",
    "network.protocol.version",
    "http.request.body.size",
    "http.response.status_code",
    "http.response.body.size",
    "wasmtap.truncated",
    wasmtap_sdk::trace::PARENT,
    wasmtap_sdk::trace::STATE,
];

impl Decoder for Http1 {
    type Session = Http1Session;

    fn describe() -> Descriptor {
        Descriptor::new("http1", env!("CARGO_PKG_VERSION"))
            .protocol("http")
            .transport(Transport::Tcp)
            .port(80)
            .port(8080)
            .port(8000)
            .port(8008)
            .port(8081)
            .port(8888)
            .attribute_keys(&ATTRIBUTE_KEYS)
            // After an `Upgrade: h2c`, the HTTP/2 decoder's keys too.
            .attribute_keys(
                &wasmtap_plugin_http2::keys::ALL
                    .into_iter()
                    .filter(|k| !ATTRIBUTE_KEYS.contains(k))
                    .collect::<Vec<_>>(),
            )
    }

    fn probe(transport: Transport, _dir: Direction, data: &[u8]) -> u8 {
        if transport != Transport::Tcp {
            return 0;
        }
        if data.starts_with(b"HTTP/1.") {
            return 90;
        }
        let line_end = data
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(data.len())
            .min(8192);
        let line = &data[..line_end];
        let Some(sp) = line.iter().position(|&b| b == b' ') else {
            return 0;
        };
        let method = &line[..sp];
        let token = !method.is_empty()
            && method
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        let has_version = line.windows(7).any(|w| w == b" HTTP/1");
        if token && has_version {
            return 90;
        }
        // HTTP/0.9 simple request: `GET /path` alone on its line.
        let complete = line_end < data.len();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if complete && line.starts_with(b"GET /") && !line[4..].contains(&b' ') {
            return 60;
        }
        0
    }

    fn new_session(_transport: Transport, _server_port: u16) -> Http1Session {
        Http1Session {
            inner: Parsed::new(parser::Parser::new(parser::Limits::default()), ToHost),
            h2: None,
            opaque: false,
        }
    }
}

/// Per-flow HTTP/1.x state.
pub struct Http1Session {
    /// The HTTP/1 parser, its messages converted by [`ToHost`].
    inner: Parsed<ToHost>,
    /// HTTP/2 after an `Upgrade: h2c`, or inside a `CONNECT` tunnel.
    h2: Option<wasmtap_plugin_http2::Http2Session>,
    /// A `CONNECT` tunnel that does not carry HTTP/2: consumed unread.
    opaque: bool,
}

/// Bytes of a `CONNECT` tunnel's response side held while its client side
/// has not told whether it speaks HTTP/2.
const TUNNEL_UNDECIDED_MAX: usize = 16 << 10;

wasmtap_sdk::parser_types!(parser::Dir, parser::ParseError);

/// Parsed messages to the host's ([`to_message`]).
pub struct ToHost;

impl Convert for ToHost {
    type Parser = parser::Parser;

    fn message(&mut self, m: parser::Message, _timestamp_ns: u64) -> Message {
        to_message(m)
    }
}

/// Maps a parsed message to a wasmtap message with semantic-convention attributes.
pub fn to_message(m: parser::Message) -> Message {
    match m.kind {
        parser::Kind::Request => {
            let method = m.method.unwrap_or_default();
            let known = KNOWN_METHODS.contains(&method.as_str());
            // Span names must stay low-cardinality: unknown methods are `HTTP`.
            let op = if known { method.as_str() } else { "HTTP" };
            let mut msg = Message::request(m.start_ns, m.end_ns, m.size, op);
            if known {
                msg = msg.attribute(Attribute::str("http.request.method", method.clone()));
            } else {
                msg = msg
                    .attribute(Attribute::str("http.request.method", "_OTHER"))
                    .attribute(Attribute::str(
                        "http.request.method_original",
                        method.clone(),
                    ));
            }
            if let Some(p) = m.path {
                msg = msg.attribute(Attribute::str("url.path", p));
            }
            if let Some(q) = m.query {
                msg = msg.attribute(Attribute::str("url.query", q));
            }
            if let Some(h) = m.host {
                msg = msg.attribute(Attribute::str("server.address", strip_port(&h)));
            }
            if let Some(ua) = m.user_agent {
                msg = msg.attribute(Attribute::str("user_agent.original", ua));
            }
            if !m.version.is_empty() {
                msg = msg.attribute(Attribute::str("network.protocol.version", m.version));
            }
            if let Some((parent, state)) = m.trace {
                msg = msg.attribute(Attribute::str(wasmtap_sdk::trace::PARENT, parent));
                if let Some(st) = state {
                    msg = msg.attribute(Attribute::str(wasmtap_sdk::trace::STATE, st));
                }
            }
            msg.attribute(Attribute::int("http.request.body.size", m.body_size as i64))
        }
        parser::Kind::Response => {
            let msg = Message::response(m.start_ns, m.end_ns, m.size);
            // HTTP/0.9 responses have no status line, hence no status code.
            let msg = match m.status_code {
                // Server spans: 5xx is an error, 4xx is the client's (semantic conventions).
                Some(code) if code >= 500 => msg.error(status_text(code, &mut [0; 3])),
                Some(code) => msg.ok(status_text(code, &mut [0; 3])),
                None => msg.ok(""),
            };
            let msg = match m.status_code {
                Some(code) => {
                    msg.attribute(Attribute::int("http.response.status_code", i64::from(code)))
                }
                None => msg,
            };
            let msg = msg.attribute(Attribute::int(
                "http.response.body.size",
                m.body_size as i64,
            ));
            if m.truncated {
                msg.attribute(Attribute::boolean("wasmtap.truncated", true))
            } else {
                msg
            }
        }
    }
}

/// A status code's three digits (the parser only yields 100..=999), without
/// going through `fmt`.
fn status_text(code: u16, buf: &mut [u8; 3]) -> &str {
    let code = code.min(999);
    *buf = [
        b'0' + (code / 100) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
    ];
    std::str::from_utf8(buf).unwrap_or_default()
}

fn strip_port(host: &str) -> String {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest).to_string();
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h.to_string(),
        _ => host.to_string(),
    }
}

impl Session for Http1Session {
    fn feed(
        &mut self,
        dir: Direction,
        timestamp_ns: u64,
        data: &[u8],
        out: &mut Vec<Message>,
    ) -> Result<usize, DecodeError> {
        if let Some(h2) = self.h2.as_mut() {
            return h2.feed(dir, timestamp_ns, data, out);
        }
        if self.opaque {
            return Ok(data.len());
        }
        let used = self.inner.feed(dir, timestamp_ns, data, out)?;
        if self.inner.parser().h2c() {
            // Upgraded: the rest of the stream is HTTP/2's.
            let mut h2 = Framed::new(wasmtap_plugin_http2::Http2Handler::upgraded());
            let rest = data.get(used..).unwrap_or_default();
            let n = h2.feed(dir, timestamp_ns, rest, out)?;
            self.h2 = Some(h2);
            return Ok(used + n);
        }
        if self.inner.parser().connect_tunnel() {
            // HTTP/2 with prior knowledge inside the tunnel, or opaque (TLS).
            let rest = data.get(used..).unwrap_or_default();
            let preface = wasmtap_plugin_http2::PREFACE;
            match dir {
                Direction::ToServer if rest.starts_with(preface) => {
                    let mut h2 = Framed::new(wasmtap_plugin_http2::Http2Handler::default());
                    let n = h2.feed(dir, timestamp_ns, rest, out)?;
                    self.h2 = Some(h2);
                    return Ok(used + n);
                }
                Direction::ToServer if preface.starts_with(rest) => return Ok(used),
                Direction::ToClient if rest.len() <= TUNNEL_UNDECIDED_MAX => return Ok(used),
                _ => {
                    self.opaque = true;
                    return Ok(data.len());
                }
            }
        }
        Ok(used)
    }

    fn gap(&mut self, dir: Direction, len: u64, out: &mut Vec<Message>) -> Result<(), DecodeError> {
        if let Some(h2) = self.h2.as_mut() {
            return h2.gap(dir, len, out);
        }
        self.inner.gap(dir, len, out)
    }

    fn close(&mut self, reason: CloseReason, timestamp_ns: u64, out: &mut Vec<Message>) {
        if let Some(h2) = self.h2.as_mut() {
            h2.close(reason, timestamp_ns, out);
        }
        self.inner.close(reason, timestamp_ns, out);
    }
}

#[cfg(feature = "export")]
wasmtap_sdk::export_decoder!(Http1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_accepts_http_and_rejects_other() {
        // HTTP/0.9 (also a valid Redis inline command: on port 80, HTTP must keep the flow).
        assert!(Http1::probe(Transport::Tcp, Direction::ToServer, b"GET /bad.html\r\n") >= 50);
        assert_eq!(
            Http1::probe(Transport::Tcp, Direction::ToServer, b"GET /bad.html"),
            0
        );
        assert!(Http1::probe(Transport::Tcp, Direction::ToServer, b"GET / HTTP/1.1\r\n") >= 50);
        assert!(Http1::probe(Transport::Tcp, Direction::ToClient, b"HTTP/1.1 200 OK\r\n") >= 50);
        assert_eq!(
            Http1::probe(Transport::Tcp, Direction::ToServer, b"\x16\x03\x01\x02\x00"),
            0
        );
        assert_eq!(
            Http1::probe(Transport::Udp, Direction::ToServer, b"GET / HTTP/1.1\r\n"),
            0
        );
    }

    /// `Upgrade: h2c`, `101`, then HTTP/2: the upgrade request pairs (by
    /// order) with its answer on stream 1; the 101 is not an exchange.
    #[test]
    fn h2c_upgrade_hands_over_to_http2() {
        use wasmtap_plugin_http2::frame;
        use wasmtap_sdk::testing::{Event, decode};
        let req = b"GET /r HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n";
        let mut c = req.to_vec();
        c.extend(wasmtap_plugin_http2::PREFACE);
        c.extend(frame(4, 0, 0, &[]));
        let mut s =
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
                .to_vec();
        s.extend(frame(4, 0, 0, &[]));
        s.extend(frame(1, 0x5, 1, &[0x8a])); // :status 206, end of stream
        let messages = decode::<Http1>(
            80,
            &[
                Event::Data(Direction::ToServer, req),
                Event::Data(Direction::ToClient, &s),
                Event::Data(Direction::ToServer, &c[req.len()..]),
            ],
        );
        let got: Vec<_> = messages
            .iter()
            .map(|m| (m.kind, m.correlation, m.status_code.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (wasmtap_sdk::MessageKind::Request, None, ""),
                (wasmtap_sdk::MessageKind::Response, None, "206"),
            ]
        );
    }

    /// A CONNECT tunnel carrying HTTP/2 with prior knowledge is decoded;
    /// one carrying TLS is consumed unread.
    #[test]
    fn connect_tunnels_carry_http2_or_stay_opaque() {
        use wasmtap_plugin_http2::frame;
        use wasmtap_sdk::testing::{Event, decode};
        let connect = b"CONNECT api:80 HTTP/1.1\r\nHost: api:80\r\n\r\n";
        let ok = b"HTTP/1.1 200 Connection established\r\n\r\n";
        let mut c = wasmtap_plugin_http2::PREFACE.to_vec();
        c.extend(frame(4, 0, 0, &[]));
        c.extend(frame(1, 0x5, 1, &[0x82, 0x86, 0x84])); // GET http /
        let mut s = frame(4, 0, 0, &[]);
        s.extend(frame(1, 0x5, 1, &[0x8d])); // :status 404
        let run = |inner_c: &[u8], inner_s: &[u8]| {
            decode::<Http1>(
                3128,
                &[
                    Event::Data(Direction::ToServer, connect),
                    Event::Data(Direction::ToClient, ok),
                    Event::Data(Direction::ToServer, inner_c),
                    Event::Data(Direction::ToClient, inner_s),
                ],
            )
            .iter()
            .map(|m| (m.operation.clone(), m.status_code.clone(), m.correlation))
            .collect::<Vec<_>>()
        };
        assert_eq!(
            run(&c, &s),
            [
                ("CONNECT".to_string(), String::new(), None),
                (String::new(), "200".to_string(), None),
                ("GET".to_string(), String::new(), Some(1)),
                (String::new(), "404".to_string(), Some(1)),
            ]
        );
        let tls = b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00";
        assert_eq!(run(tls, b"\x16\x03\x03\x00\x02\x02\x00").len(), 2);
    }

    #[test]
    fn status_codes_print_as_three_digits() {
        for code in [100, 200, 204, 404, 500, 599, 999] {
            assert_eq!(status_text(code, &mut [0; 3]), code.to_string());
        }
    }

    #[test]
    fn host_port_is_stripped() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("example.com"), "example.com");
    }
}
