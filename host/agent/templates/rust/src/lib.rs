//! A wasmtap decoder for `{{name}}`, made by `wasmtap plugin new`.
//!
//! The protocol it decodes as shipped (edit it into yours): frames of a
//! 4-byte big-endian length followed by that many bytes of text,
//! `REQ <id> <operation> <key>` from the client and `RES <id> <status>` from
//! the server. Responses may come in any order: the id pairs them (the host
//! does the pairing; the decoder only says which id a message carries).
//! A status of `OK` or `NOTFOUND` is a success, anything else an error.
//!
//! `cargo test` runs the tests below natively, through the SDK's simulated
//! host (whole, byte by byte, random splits). `wasmtap plugin build` makes
//! the component; `wasmtap plugin test` runs it on a capture.

use wasmtap_sdk::{
    Attribute, CloseReason, DecodeError, Decoder, Descriptor, Direction, Message, Session,
    Transport,
};

/// The decoder's name (its config section is `[plugins.config.{{name}}]`).
pub const NAME: &str = "{{name}}";
/// The port it claims (a hint: other ports work when `probe` recognises the bytes).
pub const PORT: u16 = {{port}};
/// Largest frame accepted; a bigger length means the stream is not this protocol.
pub const MAX_FRAME: usize = 64 * 1024;

/// Attribute keys, declared once (in `describe`) and used by name.
pub const KEY: &str = "{{name}}.key";
/// The response's status word.
pub const STATUS: &str = "{{name}}.status";

/// The decoder.
pub struct Plugin;

impl Decoder for Plugin {
    type Session = Parser;

    fn describe() -> Descriptor {
        Descriptor::new(NAME, env!("CARGO_PKG_VERSION"))
            .protocol(NAME)
            .transport(Transport::Tcp)
            .port(PORT)
            .attribute_keys(&[KEY, STATUS])
    }

    fn probe(_transport: Transport, _dir: Direction, data: &[u8]) -> u8 {
        match frame(data) {
            Frame::Whole(body, _) if body.starts_with(b"REQ ") || body.starts_with(b"RES ") => 90,
            _ => 0,
        }
    }

    fn new_session(_transport: Transport, _server_port: u16) -> Parser {
        Parser::default()
    }
}

enum Frame<'a> {
    /// A whole frame: its body, and its size on the wire.
    Whole(&'a [u8], usize),
    /// More bytes are needed.
    Partial,
    /// Not a frame of this protocol.
    Bad,
}

fn frame(data: &[u8]) -> Frame<'_> {
    let Some(head) = data.get(..4) else {
        return Frame::Partial;
    };
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len == 0 || len > MAX_FRAME {
        return Frame::Bad;
    }
    match data.get(4..4 + len) {
        Some(body) => Frame::Whole(body, 4 + len),
        None => Frame::Partial,
    }
}

/// Per-flow state: per direction, whether the stream must be searched for a
/// frame start (after a gap).
#[derive(Default)]
pub struct Parser {
    lost: [bool; 2],
}

impl Session for Parser {
    fn feed(
        &mut self,
        dir: Direction,
        ts: u64,
        data: &[u8],
        out: &mut Vec<Message>,
    ) -> Result<usize, DecodeError> {
        let mut used = 0;
        while used < data.len() {
            let rest = &data[used..];
            if self.lost[dir.index()] {
                // Resynchronise: the next place where a plausible frame starts.
                match (0..rest.len().saturating_sub(8)).find(|&i| {
                    matches!(frame(&rest[i..]), Frame::Whole(b, _) if b.starts_with(b"REQ ") || b.starts_with(b"RES "))
                }) {
                    Some(i) => {
                        used += i;
                        self.lost[dir.index()] = false;
                        continue;
                    }
                    // Keep the last bytes: a frame may start in them.
                    None => return Ok(used + rest.len().saturating_sub(MAX_FRAME + 4)),
                }
            }
            match frame(rest) {
                Frame::Partial => break,
                Frame::Bad => return Err(DecodeError::new("bad frame length", used as u64)),
                Frame::Whole(body, size) => {
                    used += size;
                    if let Some(m) = message(dir, ts, body, size as u64) {
                        out.push(m);
                    }
                }
            }
        }
        Ok(used)
    }

    fn gap(
        &mut self,
        dir: Direction,
        _len: u64,
        _out: &mut Vec<Message>,
    ) -> Result<(), DecodeError> {
        self.lost[dir.index()] = true;
        Ok(())
    }

    fn close(&mut self, _reason: CloseReason, _ts: u64, _out: &mut Vec<Message>) {}
}

/// One frame's body as a message (`None` for a body this protocol does not know).
fn message(dir: Direction, ts: u64, body: &[u8], size: u64) -> Option<Message> {
    let text = std::str::from_utf8(body).ok()?;
    let mut words = text.split_ascii_whitespace();
    match (dir, words.next()?) {
        (Direction::ToServer, "REQ") => {
            let id: u64 = words.next()?.parse().ok()?;
            let op = words.next().unwrap_or("UNKNOWN").to_ascii_uppercase();
            let mut m = Message::request(ts, ts, size, &op).correlate(id);
            if let Some(k) = words.next() {
                m = m.attribute(Attribute::str(KEY, k));
            }
            Some(m)
        }
        (Direction::ToClient, "RES") => {
            let id: u64 = words.next()?.parse().ok()?;
            let status = words.next().unwrap_or("");
            let m = Message::response(ts, ts, size).correlate(id);
            let m = if matches!(status, "OK" | "NOTFOUND") {
                m.ok(status)
            } else {
                m.error(status)
            };
            Some(m.attribute(Attribute::str(STATUS, status)))
        }
        _ => None,
    }
}

wasmtap_sdk::export_decoder!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtap_sdk::testing::{self, Event, StreamParser};

    /// The SDK's simulated host drives the session as the agent would.
    struct Host(Parser);

    /// A fresh session, with the attribute keys declared as the host's
    /// `describe` call would.
    fn session() -> Host {
        testing::declare(&Plugin::describe());
        Host(Parser::default())
    }

    impl StreamParser for Host {
        type Dir = Direction;
        type Message = Message;
        type Error = DecodeError;
        fn index(dir: Direction) -> usize {
            usize::from(dir == Direction::ToClient)
        }
        fn feed(
            &mut self,
            d: Direction,
            ts: u64,
            b: &[u8],
            o: &mut Vec<Message>,
        ) -> Result<usize, DecodeError> {
            self.0.feed(d, ts, b, o)
        }
        fn gap(&mut self, d: Direction, n: u64, o: &mut Vec<Message>) -> Result<(), DecodeError> {
            self.0.gap(d, n, o)
        }
        fn close(&mut self, ts: u64, o: &mut Vec<Message>) {
            self.0.close(CloseReason::Fin, ts, o)
        }
    }

    fn framed(s: &str) -> Vec<u8> {
        let mut v = (s.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v
    }

    #[test]
    fn requests_and_out_of_order_responses() {
        let (a, b) = (framed("REQ 1 get user:1"), framed("REQ 2 put user:2"));
        let (r2, r1) = (framed("RES 2 OK"), framed("RES 1 FAIL"));
        let o = testing::check(
            session,
            &[
                Event::Data(Direction::ToServer, &[a, b].concat()),
                Event::Data(Direction::ToClient, &[r2, r1].concat()),
                Event::Close,
            ],
            MAX_FRAME + 4,
        );
        assert_eq!(o.error, None);
        assert_eq!(o.messages.len(), 4);
        assert_eq!(o.messages[0].operation, "GET");
        assert_eq!(o.messages[0].correlation, Some(1));
        assert_eq!(o.messages[3].correlation, Some(1));
    }

    #[test]
    fn a_gap_is_resynchronised() {
        let req = framed("REQ 7 get k");
        let o = testing::check(
            session,
            &[
                Event::Gap(Direction::ToServer, 10),
                Event::Data(
                    Direction::ToServer,
                    &[&b"tail of a lost frame"[..], &req].concat(),
                ),
            ],
            MAX_FRAME + 4,
        );
        assert_eq!(o.error, None);
        assert_eq!(o.messages.len(), 1);
        assert_eq!(o.messages[0].correlation, Some(7));
    }

    #[test]
    fn probe_knows_the_protocol() {
        assert_eq!(
            Plugin::probe(Transport::Tcp, Direction::ToServer, &framed("REQ 1 get k")),
            90
        );
        assert_eq!(
            Plugin::probe(Transport::Tcp, Direction::ToServer, b"GET / HTTP/1.1\r\n"),
            0
        );
    }
}
