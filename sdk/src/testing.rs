//! Test a decoder's stream parser natively (no Wasm), the way the host will
//! drive it: per direction the unconsumed remainder is kept and offered again
//! with the next bytes, gaps drop it, and `close` ends the flow. [`check`]
//! runs a script of events whole, byte by byte and at many random split
//! points, and fails unless every way gives the same outcome, so a parser
//! that depends on how TCP happened to segment the stream is caught.
//!
//! ```
//! use wasmtap_sdk::testing::{Event, StreamParser, check};
//!
//! /// Lines to the server are requests, lines back are responses.
//! #[derive(Default)]
//! struct Lines;
//!
//! impl StreamParser for Lines {
//!     type Dir = bool; // true: to the server
//!     type Message = (bool, String);
//!     type Error = String;
//!     fn index(dir: bool) -> usize { usize::from(!dir) }
//!     fn feed(&mut self, dir: bool, _ts: u64, data: &[u8], out: &mut Vec<(bool, String)>)
//!         -> Result<usize, String> {
//!         let mut used = 0;
//!         while let Some(n) = data[used..].iter().position(|&b| b == b'\n') {
//!             out.push((dir, String::from_utf8_lossy(&data[used..used + n]).into()));
//!             used += n + 1;
//!         }
//!         Ok(used)
//!     }
//!     fn gap(&mut self, _: bool, _: u64, _: &mut Vec<(bool, String)>) -> Result<(), String> { Ok(()) }
//!     fn close(&mut self, _: u64, _: &mut Vec<(bool, String)>) {}
//! }
//!
//! let outcome = check(Lines::default, &[
//!     Event::Data(true, b"GET a\nGET b\n"),
//!     Event::Data(false, b"ok a\n"),
//!     Event::Close,
//! ], 64);
//! assert_eq!(outcome.error, None);
//! assert_eq!(outcome.messages.len(), 3);
//! ```

use std::fmt::Debug;

/// A stream parser as the host drives it: `feed` reports how many bytes it
/// consumed (the rest is offered again with more), `gap` reports bytes the
/// capture lost, `close` ends the flow.
pub trait StreamParser {
    /// The parser's direction type.
    type Dir: Copy + Debug;
    /// What it produces.
    type Message: Debug + PartialEq;
    /// Its error.
    type Error: Debug + PartialEq;
    /// 0 or 1: which remainder buffer a direction uses.
    fn index(dir: Self::Dir) -> usize;
    /// Parses what it can of `data`; returns the bytes consumed.
    fn feed(
        &mut self,
        dir: Self::Dir,
        timestamp_ns: u64,
        data: &[u8],
        out: &mut Vec<Self::Message>,
    ) -> Result<usize, Self::Error>;
    /// `len` bytes of `dir` are missing.
    fn gap(
        &mut self,
        dir: Self::Dir,
        len: u64,
        out: &mut Vec<Self::Message>,
    ) -> Result<(), Self::Error>;
    /// The flow ended.
    fn close(&mut self, timestamp_ns: u64, out: &mut Vec<Self::Message>);
}

/// Implements [`StreamParser`] for a parser whose inherent `feed`, `gap`
/// and `close` already have the host's shape, with `$dir as usize` as the
/// direction index:
/// `wasmtap_sdk::stream_parser!(Parser, Dir, Message, ParseError);`
#[macro_export]
macro_rules! stream_parser {
    ($parser:ty, $dir:ty, $msg:ty, $err:ty) => {
        impl $crate::testing::StreamParser for $parser {
            type Dir = $dir;
            type Message = $msg;
            type Error = $err;
            fn index(dir: $dir) -> usize {
                dir as usize
            }
            fn feed(
                &mut self,
                dir: $dir,
                ts: u64,
                data: &[u8],
                out: &mut Vec<$msg>,
            ) -> Result<usize, $err> {
                <$parser>::feed(self, dir, ts, data, out)
            }
            fn gap(&mut self, dir: $dir, len: u64, out: &mut Vec<$msg>) -> Result<(), $err> {
                <$parser>::gap(self, dir, len, out)
            }
            fn close(&mut self, ts: u64, out: &mut Vec<$msg>) {
                <$parser>::close(self, ts, out)
            }
        }
    };
}

/// One host call of a script.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a, D> {
    /// Bytes of one direction.
    Data(D, &'a [u8]),
    /// One datagram (UDP): offered whole, and it must be consumed whole.
    Datagram(D, &'a [u8]),
    /// Bytes of one direction lost by the capture.
    Gap(D, u64),
    /// The flow ends.
    Close,
}

/// What a script produced: the messages, and the error that stopped it.
#[derive(Debug, PartialEq)]
pub struct Outcome<M, E> {
    /// Messages, in order.
    pub messages: Vec<M>,
    /// The error returned by `feed` or `gap`, which ends the run.
    pub error: Option<E>,
}

/// Declares a decoder's attribute keys for native tests, as the host's
/// `describe` call does in the component: `testing::declare(&MyDecoder::describe())`.
/// Until then attributes carry no key (and undeclared keys are not caught).
pub fn declare(d: &crate::Descriptor) {
    crate::__set_attribute_keys(&d.attribute_keys);
}

/// Timestamp handed to every call of a script.
pub const TS: u64 = 1_000;

/// A small deterministic xorshift64 generator, for split points.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// Runs `events` once, cutting each data event into pieces whose lengths
/// `piece` picks (from the bytes left of the event), as a simulated host
/// that keeps at most `bound` unconsumed bytes per direction (it panics if
/// asked to keep more: the parser must consume or fail).
pub fn run<P: StreamParser>(
    parser: &mut P,
    events: &[Event<'_, P::Dir>],
    bound: usize,
    piece: &mut dyn FnMut(usize) -> usize,
) -> Outcome<P::Message, P::Error> {
    let mut pending: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut messages = Vec::new();
    for ev in events {
        match *ev {
            Event::Data(dir, mut bytes) => {
                let Some(buf) = pending.get_mut(P::index(dir)) else {
                    panic!("direction index out of range");
                };
                while !bytes.is_empty() {
                    let n = piece(bytes.len()).clamp(1, bytes.len());
                    let (now, later) = bytes.split_at(n);
                    bytes = later;
                    buf.extend_from_slice(now);
                    match parser.feed(dir, TS, buf, &mut messages) {
                        Ok(used) => {
                            assert!(used <= buf.len(), "consumed more than offered");
                            buf.drain(..used);
                            assert!(buf.len() <= bound, "host asked to buffer {}", buf.len());
                        }
                        Err(error) => {
                            return Outcome {
                                messages,
                                error: Some(error),
                            };
                        }
                    }
                }
            }
            Event::Datagram(dir, bytes) => match parser.feed(dir, TS, bytes, &mut messages) {
                Ok(used) => assert_eq!(used, bytes.len(), "a datagram is always consumed"),
                Err(error) => {
                    return Outcome {
                        messages,
                        error: Some(error),
                    };
                }
            },
            Event::Gap(dir, len) => {
                if let Some(buf) = pending.get_mut(P::index(dir)) {
                    buf.clear();
                }
                if let Err(error) = parser.gap(dir, len, &mut messages) {
                    return Outcome {
                        messages,
                        error: Some(error),
                    };
                }
            }
            Event::Close => parser.close(TS, &mut messages),
        }
    }
    Outcome {
        messages,
        error: None,
    }
}

/// Runs `events` whole, byte by byte and at `rounds` random split points
/// (pieces of 1 to 64 bytes) on fresh parsers from `make`; panics unless
/// all agree. Returns the outcome.
pub fn check_rounds<P: StreamParser>(
    make: impl Fn() -> P,
    events: &[Event<'_, P::Dir>],
    bound: usize,
    rounds: u32,
) -> Outcome<P::Message, P::Error> {
    let whole = run(&mut make(), events, bound, &mut |left| left);
    let bytewise = run(&mut make(), events, bound, &mut |_| 1);
    assert_eq!(whole, bytewise, "byte-by-byte feeding differs");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..rounds {
        let max = 1 + rng.below(64);
        let split = run(&mut make(), events, bound, &mut |left| {
            1 + rng.below(left.min(max))
        });
        assert_eq!(whole, split, "random split round {round} differs");
    }
    whole
}

/// [`check_rounds`] with 50 random rounds.
pub fn check<P: StreamParser>(
    make: impl Fn() -> P,
    events: &[Event<'_, P::Dir>],
    bound: usize,
) -> Outcome<P::Message, P::Error> {
    check_rounds(make, events, bound, 50)
}

/// Drives any [`crate::Session`] (a [`crate::framing::Framed`] handler, or a
/// hand-written session) through [`check`] and [`run`]:
/// `check(|| Host(Framed::new(MyHandler::default())), &events, 256 << 10)`.
#[derive(Debug)]
pub struct Host<S>(pub S);

impl<S: crate::Session> StreamParser for Host<S> {
    type Dir = crate::Direction;
    type Message = crate::Message;
    type Error = crate::DecodeError;
    fn index(dir: crate::Direction) -> usize {
        dir.index()
    }
    fn feed(
        &mut self,
        dir: crate::Direction,
        ts: u64,
        data: &[u8],
        out: &mut Vec<crate::Message>,
    ) -> Result<usize, crate::DecodeError> {
        self.0.feed(dir, ts, data, out)
    }
    fn gap(
        &mut self,
        dir: crate::Direction,
        len: u64,
        out: &mut Vec<crate::Message>,
    ) -> Result<(), crate::DecodeError> {
        self.0.gap(dir, len, out)
    }
    fn close(&mut self, ts: u64, out: &mut Vec<crate::Message>) {
        self.0.close(crate::CloseReason::Fin, ts, out);
    }
}

/// An attribute of `m` printed as the tests compare it (`Str("orders")`,
/// `Int(3)`, `Boolean(true)`), or `None` when `m` does not carry `key`.
pub fn attr(m: &crate::Message, key: &str) -> Option<String> {
    m.attributes
        .iter()
        .find(|a| a.key_name() == Some(key))
        .map(|a| format!("{:?}", a.value).replace("AttributeValue::", ""))
}

/// Runs `events` through [`check`] on a fresh session of decoder `D` for a
/// TCP flow to `port`, its attribute keys declared, with the host's default
/// pending bound (256 KiB); panics if the session fails. Returns the messages.
pub fn decode<D: crate::Decoder>(
    port: u16,
    events: &[Event<'_, crate::Direction>],
) -> Vec<crate::Message> {
    declare(&D::describe());
    let o = check(
        || Host(D::new_session(crate::Transport::Tcp, port)),
        events,
        256 << 10,
    );
    assert_eq!(o.error, None);
    o.messages
}
