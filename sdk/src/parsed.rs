//! A stream parser as a [`Session`]: for decoders whose parser already has the
//! host's shape ([`StreamParser`]: `feed` returns the bytes consumed, `gap`,
//! `close`) and produces messages of its own type. [`Parsed`] maps the host's
//! directions to the parser's, converts each message with a [`Convert`] (which
//! may keep state across messages, such as the database a session selected),
//! and turns a parse error into the [`DecodeError`] that ends the session.
//!
//! ```
//! use wasmtap_sdk::parsed::{Convert, Parsed};
//! use wasmtap_sdk::testing::StreamParser;
//! use wasmtap_sdk::{DecodeError, Direction, Message, Session};
//!
//! /// One request per line to the server, one response per line back.
//! #[derive(Default)]
//! struct Lines;
//! #[derive(Debug, Clone, Copy)]
//! enum Dir { Up, Down }
//! impl From<Direction> for Dir {
//!     fn from(d: Direction) -> Self {
//!         if d == Direction::ToServer { Dir::Up } else { Dir::Down }
//!     }
//! }
//! #[derive(Debug, PartialEq)]
//! struct Bad;
//! impl From<Bad> for DecodeError {
//!     fn from(_: Bad) -> Self { DecodeError::new("not a line protocol", 0) }
//! }
//! impl StreamParser for Lines {
//!     type Dir = Dir;
//!     type Message = (bool, usize);
//!     type Error = Bad;
//!     fn index(d: Dir) -> usize { d as usize }
//!     fn feed(&mut self, d: Dir, _ts: u64, data: &[u8], out: &mut Vec<(bool, usize)>)
//!         -> Result<usize, Bad> {
//!         let mut used = 0;
//!         while let Some(n) = data[used..].iter().position(|&b| b == b'\n') {
//!             out.push((matches!(d, Dir::Up), n + 1));
//!             used += n + 1;
//!         }
//!         Ok(used)
//!     }
//!     fn gap(&mut self, _: Dir, _: u64, _: &mut Vec<(bool, usize)>) -> Result<(), Bad> { Ok(()) }
//!     fn close(&mut self, _: u64, _: &mut Vec<(bool, usize)>) {}
//! }
//!
//! /// Parsed lines to the host's messages.
//! struct ToHost;
//! impl Convert for ToHost {
//!     type Parser = Lines;
//!     fn message(&mut self, (request, size): (bool, usize), ts: u64) -> Message {
//!         if request {
//!             Message::request(ts, ts, size as u64, "LINE")
//!         } else {
//!             Message::response(ts, ts, size as u64).ok("")
//!         }
//!     }
//! }
//!
//! let mut s = Parsed::new(Lines, ToHost);
//! let mut out = Vec::new();
//! assert_eq!(s.feed(Direction::ToServer, 7, b"a\nb", &mut out), Ok(2));
//! assert_eq!(out.len(), 1);
//! ```

use crate::testing::StreamParser;
use crate::{CloseReason, DecodeError, Direction, Message, Session};

/// Turns what a [`StreamParser`] produces into the host's messages.
pub trait Convert {
    /// The parser whose messages it converts.
    type Parser: StreamParser;

    /// One parsed message as the host takes it; `timestamp_ns` is the time
    /// of the call that completed it (messages that carry their own times
    /// should use those).
    fn message(&mut self, m: <Self::Parser as StreamParser>::Message, timestamp_ns: u64)
    -> Message;

    /// Called after each `feed` with the parser, for what a decoder reports
    /// beside messages (a log line on a skipped malformed message, say).
    fn after_feed(&mut self, _parser: &Self::Parser) {}
}

/// A [`StreamParser`] and its [`Convert`] as a [`Session`].
pub struct Parsed<C: Convert> {
    parser: C::Parser,
    convert: C,
    buf: Vec<<C::Parser as StreamParser>::Message>,
    last_ts: u64,
}

impl<C: Convert> Parsed<C> {
    /// A session of `parser`, its messages converted by `convert`.
    pub fn new(parser: C::Parser, convert: C) -> Self {
        Self {
            parser,
            convert,
            buf: Vec::new(),
            last_ts: 0,
        }
    }

    /// The parser (for the state a decoder asks of it between calls).
    pub fn parser(&self) -> &C::Parser {
        &self.parser
    }

    fn drain(&mut self, out: &mut Vec<Message>) {
        let ts = self.last_ts;
        for m in self.buf.drain(..) {
            out.push(self.convert.message(m, ts));
        }
    }
}

impl<C> Session for Parsed<C>
where
    C: Convert + 'static,
    <C::Parser as StreamParser>::Dir: From<Direction>,
    <C::Parser as StreamParser>::Error: Into<DecodeError>,
{
    fn feed(
        &mut self,
        dir: Direction,
        timestamp_ns: u64,
        data: &[u8],
        out: &mut Vec<Message>,
    ) -> Result<usize, DecodeError> {
        self.last_ts = timestamp_ns;
        let r = self
            .parser
            .feed(dir.into(), timestamp_ns, data, &mut self.buf);
        self.drain(out);
        self.convert.after_feed(&self.parser);
        r.map_err(Into::into)
    }

    fn gap(&mut self, dir: Direction, len: u64, out: &mut Vec<Message>) -> Result<(), DecodeError> {
        let r = self.parser.gap(dir.into(), len, &mut self.buf);
        self.drain(out);
        r.map_err(Into::into)
    }

    fn close(&mut self, _reason: CloseReason, timestamp_ns: u64, out: &mut Vec<Message>) {
        self.last_ts = timestamp_ns;
        self.parser.close(timestamp_ns, &mut self.buf);
        self.drain(out);
    }
}

/// A stateless [`Convert`]: each message through a function.
pub struct Map<P: StreamParser>(pub fn(P::Message) -> Message);

impl<P: StreamParser> Convert for Map<P> {
    type Parser = P;

    fn message(&mut self, m: P::Message, _timestamp_ns: u64) -> Message {
        (self.0)(m)
    }
}

/// Connects a parser's own direction and error types to the host's, for
/// [`Parsed`]: `$dir` has the variants `ToServer` and `ToClient`, `$err` the
/// fields `reason` (`&str`) and `offset` (`u64`).
/// `wasmtap_sdk::parser_types!(parser::Dir, parser::ParseError);`
#[macro_export]
macro_rules! parser_types {
    ($dir:ty, $err:ty) => {
        impl ::core::convert::From<$crate::Direction> for $dir {
            fn from(d: $crate::Direction) -> Self {
                match d {
                    $crate::Direction::ToServer => <$dir>::ToServer,
                    $crate::Direction::ToClient => <$dir>::ToClient,
                }
            }
        }

        impl ::core::convert::From<$err> for $crate::DecodeError {
            fn from(e: $err) -> Self {
                $crate::DecodeError::new(e.reason, e.offset)
            }
        }
    };
}
