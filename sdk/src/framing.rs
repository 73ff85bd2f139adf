//! Framing helpers and [`Framed`], the adapter that turns a frame handler
//! into a [`Session`].
//!
//! Most binary protocols cut their streams into frames whose length is a
//! field of a fixed header (Kafka, AMQP, MongoDB, MySQL, PostgreSQL, most
//! in-house protocols); text protocols end frames with a delimiter. A
//! decoder for such a protocol need not manage buffers: describe the frame
//! with [`Framing`], implement [`FrameHandler`] (one call per whole frame)
//! and wrap it in [`Framed`]. The adapter
//!
//! - keeps partial frames (the host offers the rest again with new bytes),
//!   and reports each frame's **first** byte's time as its start, even when
//!   the frame spans many segments;
//! - streams frames longer than [`FrameHandler::head_limit`]: the handler
//!   sees their first bytes and their full length, the rest is skipped as it
//!   arrives, never buffered;
//! - checks a flow's first frame with [`FrameHandler::plausible`], so a
//!   capture that starts in the middle of a message resynchronises instead of
//!   decoding garbage, and does the same after bytes lost in capture (a
//!   candidate boundary is accepted when the frame after it is believable
//!   too);
//! - counts bytes lost inside a frame as a truncated frame
//!   ([`Frame::truncated`]) instead of losing the frame.
//!
//! ```
//! use wasmtap_sdk::framing::{Frame, FrameHandler, Framed, Framing, LengthField};
//! use wasmtap_sdk::{DecodeError, Direction, Message};
//!
//! /// A 2-byte big-endian length of what follows it: a 4-byte request id,
//! /// then the body.
//! struct Rpc;
//!
//! impl FrameHandler for Rpc {
//!     fn framing(&self, _dir: Direction) -> Framing {
//!         Framing::Length(LengthField::new(0, 2, true))
//!     }
//!     const RESYNC: bool = true;
//!     fn plausible(&self, _dir: Direction, head: &[u8], len: u64) -> bool {
//!         (6..=1024).contains(&len)
//!     }
//!     fn frame(&mut self, dir: Direction, f: Frame<'_>, out: &mut Vec<Message>) -> Result<(), DecodeError> {
//!         let id = f.head.get(2..6).ok_or(DecodeError::new("short-frame", f.offset))?;
//!         let id = u64::from(u32::from_be_bytes([id[0], id[1], id[2], id[3]]));
//!         out.push(match dir {
//!             Direction::ToServer => Message::request(f.start_ns, f.end_ns, f.len, "CALL"),
//!             Direction::ToClient => Message::response(f.start_ns, f.end_ns, f.len).ok(""),
//!         }.correlate(id));
//!         Ok(())
//!     }
//! }
//!
//! # use wasmtap_sdk::Session;
//! let mut s = Framed::new(Rpc);
//! let mut out = Vec::new();
//! // A frame split across two segments: nothing is consumed from the first.
//! assert_eq!(s.feed(Direction::ToServer, 10, &[0, 5, 0, 0], &mut out).unwrap(), 0);
//! assert_eq!(s.feed(Direction::ToServer, 20, &[0, 5, 0, 0, 0, 7, b'x'], &mut out).unwrap(), 7);
//! assert_eq!((out[0].start_ns, out[0].end_ns, out[0].correlation), (10, 20, Some(7)));
//! ```

use crate::{CloseReason, DecodeError, Direction, Message, Session};

/// Where a frame's length is and what it counts: total frame length =
/// `offset + width + value + adjust` (the length field's own position,
/// plus the value, plus a correction for what the value does not count, or
/// counts twice).
///
/// | protocol | field |
/// |---|---|
/// | Kafka | `LengthField::new(0, 4, true)` |
/// | AMQP 0-9-1 | `LengthField::new(3, 4, true).adjust(1)` (frame-end octet) |
/// | MongoDB | `LengthField::new(0, 4, false).adjust(-4)` (counts itself) |
/// | PostgreSQL | `LengthField::new(1, 4, true).adjust(-4)` |
/// | MySQL | `LengthField::new(0, 3, false).adjust(1)` (sequence id) |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthField {
    /// Bytes before the length field.
    pub offset: usize,
    /// Width of the length field in bytes: 1 to 8.
    pub width: usize,
    /// Byte order of the length field.
    pub big_endian: bool,
    /// Added to `offset + width + value` to give the frame's total length.
    pub adjust: i64,
}

impl LengthField {
    /// A length field `width` bytes wide, `offset` bytes into the frame.
    pub const fn new(offset: usize, width: usize, big_endian: bool) -> Self {
        Self {
            offset,
            width,
            big_endian,
            adjust: 0,
        }
    }

    /// Sets the adjustment (see the type's documentation).
    pub const fn adjust(mut self, adjust: i64) -> Self {
        self.adjust = adjust;
        self
    }

    /// Bytes needed before the frame's length is known.
    pub const fn header_len(&self) -> usize {
        self.offset + self.width
    }

    /// The total length of the frame starting at `data[0]`: `Ok(None)` when
    /// `data` is too short to tell, an error when the field gives a length
    /// shorter than the header itself.
    pub fn frame_len(&self, data: &[u8]) -> Result<Option<u64>, &'static str> {
        if !(1..=8).contains(&self.width) {
            return Err("bad-length-field");
        }
        let Some(field) = data.get(self.offset..self.header_len()) else {
            return Ok(None);
        };
        let mut v: u64 = 0;
        for i in 0..self.width {
            let b = if self.big_endian {
                field[i]
            } else {
                field[self.width - 1 - i]
            };
            v = (v << 8) | u64::from(b);
        }
        let total = i128::from(v) + self.header_len() as i128 + i128::from(self.adjust);
        if total < self.header_len() as i128 || total > i128::from(u64::MAX) {
            return Err("bad-frame-length");
        }
        Ok(Some(total as u64))
    }
}

/// How a stream is cut into frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// A length field in a fixed header.
    Length(LengthField),
    /// Frames end with a delimiter (included in the frame): `b"\r\n"`.
    Delimiter(&'static [u8]),
}

/// Where the next frame of a stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// A frame of this many bytes (possibly more than offered).
    Frame(u64),
    /// Not enough bytes to tell.
    NeedMore,
    /// The bytes cannot start a frame (reason).
    Invalid(&'static str),
}

impl Framing {
    /// Where the frame starting at `data[0]` ends. A delimited frame longer
    /// than `max` without its delimiter is [`Cut::Invalid`].
    pub fn cut(&self, data: &[u8], max: u64) -> Cut {
        match self {
            Framing::Length(f) => match f.frame_len(data) {
                Ok(Some(n)) if n > max => Cut::Invalid("frame-too-long"),
                Ok(Some(n)) => Cut::Frame(n),
                Ok(None) => Cut::NeedMore,
                Err(e) => Cut::Invalid(e),
            },
            Framing::Delimiter([]) => Cut::Invalid("empty-delimiter"),
            Framing::Delimiter(d) => match data.windows(d.len()).position(|w| w == *d) {
                Some(i) => Cut::Frame((i + d.len()) as u64),
                None if data.len() as u64 > max => Cut::Invalid("frame-too-long"),
                None => Cut::NeedMore,
            },
        }
    }
}

/// One whole frame, as [`FrameHandler::frame`] sees it.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// The frame's bytes, header included; only the first
    /// [`FrameHandler::head_limit`] bytes of a longer frame.
    pub head: &'a [u8],
    /// The frame's full length on the wire.
    pub len: u64,
    /// Time of the packet that carried the frame's first byte.
    pub start_ns: u64,
    /// Time of the packet that carried its last byte.
    pub end_ns: u64,
    /// Offset of the frame's first byte in its direction's stream.
    pub offset: u64,
    /// Bytes of the frame after `head` were lost in capture (the frame's
    /// end was still found by its length).
    pub truncated: bool,
}

/// A protocol's frames, one call per whole frame. Wrap it in [`Framed`] to
/// get a [`Session`].
pub trait FrameHandler: 'static {
    /// How `dir`'s stream is cut into frames.
    fn framing(&self, dir: Direction) -> Framing;

    /// How many bytes of a frame the handler needs to see: longer frames
    /// are offered cut to this length and their rest skipped. Default
    /// 64 KiB; keep it below the host's pending bound (256 KiB by default).
    fn head_limit(&self) -> usize {
        64 << 10
    }

    /// Longest believable frame; a longer length field is invalid (and a
    /// reason to resynchronise). Default 64 MiB.
    fn max_frame(&self) -> u64 {
        64 << 20
    }

    /// Whether the handler checks frames with [`FrameHandler::plausible`]
    /// and can therefore resynchronise. When `false` (the default) a flow's
    /// first bytes are trusted to start a frame, and bytes lost in capture
    /// (outside a frame being skipped) end the session.
    const RESYNC: bool = false;

    /// Whether `head` starts a frame of `len` bytes of the protocol. `head`
    /// holds the framing header and at most [`FrameHandler::head_limit`]
    /// bytes, fewer while the rest has not arrived: answer `false` only
    /// when what is there rules the frame out (it is asked again with more).
    /// With [`FrameHandler::RESYNC`], checked on a flow's first frame in
    /// each direction and on candidate boundaries after a gap: a boundary is
    /// accepted when the frame after it is plausible too. Be strict: this is
    /// what keeps garbage from being decoded. Default: `true`.
    fn plausible(&self, dir: Direction, head: &[u8], len: u64) -> bool {
        let _ = (dir, head, len);
        true
    }

    /// One whole frame of `dir`. An error ends the session.
    fn frame(
        &mut self,
        dir: Direction,
        frame: Frame<'_>,
        out: &mut Vec<Message>,
    ) -> Result<(), DecodeError>;

    /// `len` bytes of `dir` were lost between frames (or across a frame
    /// boundary): drop state that depended on them. Default: nothing.
    fn lost(&mut self, dir: Direction, len: u64, out: &mut Vec<Message>) {
        let _ = (dir, len, out);
    }

    /// The flow ended. Default: nothing.
    fn close(&mut self, reason: CloseReason, timestamp_ns: u64, out: &mut Vec<Message>) {
        let _ = (reason, timestamp_ns, out);
    }
}

/// A frame whose head was kept while its rest streams past.
#[derive(Debug)]
struct Skipping {
    head: Vec<u8>,
    len: u64,
    left: u64,
    start_ns: u64,
    offset: u64,
    truncated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sync {
    /// On frame boundaries.
    InSync,
    /// Looking for a boundary: a flow's start (for handlers that check),
    /// or after lost bytes or an implausible frame.
    Lost,
}

#[derive(Debug)]
struct DirState {
    /// Stream offset of the first byte the host offers next.
    offset: u64,
    /// Time the unconsumed bytes the host still holds started to arrive.
    pending_since: Option<u64>,
    skipping: Option<Skipping>,
    sync: Sync,
    /// Bytes discarded while resynchronising.
    discarded: u64,
}

impl DirState {
    fn new(check_start: bool) -> Self {
        Self {
            offset: 0,
            pending_since: None,
            skipping: None,
            sync: if check_start {
                Sync::Lost
            } else {
                Sync::InSync
            },
            discarded: 0,
        }
    }
}

/// A [`Session`] made of a [`FrameHandler`]: see the module documentation.
#[derive(Debug)]
pub struct Framed<H> {
    handler: H,
    dirs: [DirState; 2],
}

impl<H: FrameHandler> Framed<H> {
    /// Wraps a handler.
    pub fn new(handler: H) -> Self {
        Self {
            handler,
            dirs: [DirState::new(H::RESYNC), DirState::new(H::RESYNC)],
        }
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The handler, mutably.
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }

    /// Bytes of `dir` discarded while looking for a frame boundary (a
    /// mid-stream start, or after bytes lost in capture).
    pub fn discarded(&self, dir: Direction) -> u64 {
        self.dirs[dir.index()].discarded
    }

    /// Whether a frame of the protocol starts at `data[at..]` and, when the
    /// bytes reach that far, another right after it. `None`: not enough
    /// bytes to tell.
    fn boundary_at(&self, dir: Direction, data: &[u8], at: usize) -> Option<bool> {
        let framing = self.handler.framing(dir);
        let max = self.handler.max_frame();
        let here = &data[at..];
        let len = match framing.cut(here, max) {
            Cut::Frame(n) => n,
            Cut::NeedMore => return None,
            Cut::Invalid(_) => return Some(false),
        };
        let want = self.handler.head_limit().min(len as usize);
        if !self
            .handler
            .plausible(dir, &here[..want.min(here.len())], len)
        {
            return Some(false);
        }
        if here.len() < want {
            // Believable so far: judge it on its whole head.
            return None;
        }
        // Confirm with the next frame when it is in view.
        let next = at as u64 + len;
        if next == data.len() as u64 {
            return Some(true);
        }
        if next > data.len() as u64 {
            // The frame runs past the offered bytes, its head in view.
            return Some(true);
        }
        let rest = &data[next as usize..];
        match framing.cut(rest, max) {
            // The next frame only has to be believable as far as it is in
            // view (its framing header at least): it confirms, it is not
            // judged whole.
            Cut::Frame(n) => {
                let want = self.handler.head_limit().min(n as usize);
                Some(
                    self.handler
                        .plausible(dir, &rest[..want.min(rest.len())], n),
                )
            }
            Cut::NeedMore => None,
            Cut::Invalid(_) => Some(false),
        }
    }

    /// Finds a frame boundary in `data`: `Ok(at)` to resume there, `Err(n)`
    /// to discard `n` bytes and wait for more.
    fn resync(&self, dir: Direction, data: &[u8]) -> Result<usize, usize> {
        // The first candidate that needs more bytes to be judged; a later
        // candidate confirmed now wins over it (a long frame's length can be
        // any four bytes; two believable frames in a row are evidence).
        let mut undecided = None;
        for at in 0..data.len() {
            match self.boundary_at(dir, data, at) {
                Some(true) => return Ok(at),
                Some(false) => {}
                None => {
                    undecided.get_or_insert(at);
                }
            }
        }
        Err(undecided.unwrap_or(data.len()))
    }
}

impl<H: FrameHandler> Session for Framed<H> {
    fn feed(
        &mut self,
        dir: Direction,
        ts: u64,
        data: &[u8],
        out: &mut Vec<Message>,
    ) -> Result<usize, DecodeError> {
        let i = dir.index();
        let mut used = 0usize;
        // Finish a frame being skipped.
        if let Some(sk) = self.dirs[i].skipping.as_mut() {
            let n = sk.left.min(data.len() as u64);
            sk.left -= n;
            used = n as usize;
            if sk.left == 0 {
                let sk = self.dirs[i].skipping.take().expect("checked above");
                self.handler.frame(
                    dir,
                    Frame {
                        head: &sk.head,
                        len: sk.len,
                        start_ns: sk.start_ns,
                        end_ns: ts,
                        offset: sk.offset,
                        truncated: sk.truncated,
                    },
                    out,
                )?;
            }
        }
        let framing = self.handler.framing(dir);
        let max = self.handler.max_frame();
        let limit = self.handler.head_limit();
        while self.dirs[i].skipping.is_none() && used < data.len() {
            let rest = &data[used..];
            let d = &mut self.dirs[i];
            if d.sync == Sync::Lost {
                let found = self.resync(dir, rest);
                let d = &mut self.dirs[i];
                match found {
                    Ok(at) => {
                        d.discarded += at as u64;
                        used += at;
                        d.sync = Sync::InSync;
                        if at > 0 {
                            d.pending_since = None;
                        }
                        continue;
                    }
                    Err(skip) => {
                        d.discarded += skip as u64;
                        used += skip;
                        break;
                    }
                }
            }
            let len = match framing.cut(rest, max) {
                Cut::Frame(n) => n,
                Cut::NeedMore => break,
                Cut::Invalid(reason) if !H::RESYNC => {
                    return Err(DecodeError::new(reason, d.offset + used as u64));
                }
                Cut::Invalid(_) => {
                    d.sync = Sync::Lost;
                    continue;
                }
            };
            let start_ns = if used == 0 {
                d.pending_since.unwrap_or(ts)
            } else {
                ts
            };
            let offset = d.offset + used as u64;
            if len <= rest.len() as u64 {
                let len_us = len as usize;
                let frame = Frame {
                    head: &rest[..len_us.min(limit)],
                    len,
                    start_ns,
                    end_ns: ts,
                    offset,
                    truncated: false,
                };
                used += len_us;
                self.handler.frame(dir, frame, out)?;
                continue;
            }
            if rest.len() >= limit {
                // Longer than the head limit and not all here: keep the head,
                // skip the rest as it arrives.
                d.skipping = Some(Skipping {
                    head: rest[..limit].to_vec(),
                    len,
                    left: len - rest.len() as u64,
                    start_ns,
                    offset,
                    truncated: false,
                });
                used = data.len();
                break;
            }
            break;
        }
        let d = &mut self.dirs[i];
        d.offset += used as u64;
        if used == data.len() {
            d.pending_since = None;
        } else if used > 0 || d.pending_since.is_none() {
            d.pending_since = Some(ts);
        }
        Ok(used)
    }

    fn gap(&mut self, dir: Direction, len: u64, out: &mut Vec<Message>) -> Result<(), DecodeError> {
        let i = dir.index();
        let d = &mut self.dirs[i];
        d.offset += len;
        d.pending_since = None;
        if let Some(sk) = d.skipping.as_mut()
            && len <= sk.left
        {
            // Lost inside a frame whose end the length still gives.
            sk.left -= len;
            sk.truncated = true;
            return Ok(());
        }
        // A frame being skipped ran into the loss: its head is still worth
        // reporting, as truncated. Anything the host held unconsumed is
        // dropped with the gap.
        if let Some(sk) = d.skipping.take() {
            let frame = Frame {
                head: &sk.head,
                len: sk.len,
                start_ns: sk.start_ns,
                end_ns: sk.start_ns,
                offset: sk.offset,
                truncated: true,
            };
            self.handler.frame(dir, frame, out)?;
        }
        let d = &mut self.dirs[i];
        if !H::RESYNC {
            return Err(DecodeError::new("gap", d.offset));
        }
        d.sync = Sync::Lost;
        self.handler.lost(dir, len, out);
        Ok(())
    }

    fn close(&mut self, reason: CloseReason, timestamp_ns: u64, out: &mut Vec<Message>) {
        self.handler.close(reason, timestamp_ns, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Event, Host, check, run};

    /// 2-byte length of what follows, a 1-byte tag that must be `R`, a body.
    struct Tagged {
        limit: usize,
    }

    impl FrameHandler for Tagged {
        const RESYNC: bool = true;
        fn framing(&self, _dir: Direction) -> Framing {
            Framing::Length(LengthField::new(0, 2, true))
        }
        fn head_limit(&self) -> usize {
            self.limit
        }
        fn plausible(&self, _dir: Direction, head: &[u8], len: u64) -> bool {
            len >= 3 && head.get(2).is_none_or(|&b| b == b'R')
        }
        fn frame(
            &mut self,
            _dir: Direction,
            f: Frame<'_>,
            out: &mut Vec<Message>,
        ) -> Result<(), DecodeError> {
            let mut m = Message::request(f.start_ns, f.end_ns, f.len, "R");
            m.status_code = format!("{}:{}:{}", f.offset, f.head.len(), f.truncated);
            out.push(m);
            Ok(())
        }
    }

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 1) as u16).to_be_bytes().to_vec();
        v.push(b'R');
        v.extend_from_slice(body);
        v
    }

    fn codes(out: &[Message]) -> Vec<String> {
        out.iter().map(|m| m.status_code.clone()).collect()
    }

    #[test]
    fn frames_survive_any_segmentation_and_long_ones_stream() {
        let mut bytes = frame(b"abc");
        bytes.extend(frame(&[7u8; 300]));
        bytes.extend(frame(b""));
        let o = check(
            || Host(Framed::new(Tagged { limit: 16 })),
            &[Event::Data(Direction::ToServer, &bytes)],
            64,
        );
        assert_eq!(o.error, None);
        assert_eq!(
            codes(&o.messages),
            ["0:6:false", "6:16:false", "309:3:false"]
        );
        assert_eq!(o.messages[1].size, 303);
    }

    #[test]
    fn a_mid_stream_start_resynchronises_on_two_believable_frames() {
        let mut bytes = b"\x00\x09ju".to_vec(); // not a frame
        let start = bytes.len();
        bytes.extend(frame(b"one"));
        bytes.extend(frame(b"two"));
        let o = check(
            || Host(Framed::new(Tagged { limit: 64 })),
            &[Event::Data(Direction::ToServer, &bytes)],
            64,
        );
        assert_eq!(o.error, None);
        assert_eq!(
            codes(&o.messages),
            [format!("{start}:6:false"), format!("{}:6:false", start + 6)]
        );
    }

    #[test]
    fn loss_inside_a_skipped_frame_truncates_it_and_loss_between_frames_resyncs() {
        let big = frame(&[1u8; 100]);
        let mut s = Host(Framed::new(Tagged { limit: 8 }));
        let events = [
            Event::Data(Direction::ToServer, &big[..50]),
            Event::Gap(Direction::ToServer, 20),
            Event::Data(Direction::ToServer, &big[70..]),
            Event::Gap(Direction::ToServer, 5),
            Event::Data(Direction::ToServer, b"tail of something"),
            Event::Data(Direction::ToServer, &frame(b"x")),
            Event::Data(Direction::ToServer, &frame(b"y")),
        ];
        let o = run(&mut s, &events, 64, &mut |left| left);
        assert_eq!(o.error, None);
        assert_eq!(
            codes(&o.messages),
            ["0:8:true", "125:4:false", "129:4:false"]
        );
        assert_eq!(s.0.discarded(Direction::ToServer), 17);
    }

    #[test]
    fn a_handler_that_does_not_check_ends_the_session_on_loss() {
        struct Plain;
        impl FrameHandler for Plain {
            fn framing(&self, _dir: Direction) -> Framing {
                Framing::Delimiter(b"\n")
            }
            fn frame(
                &mut self,
                _: Direction,
                f: Frame<'_>,
                out: &mut Vec<Message>,
            ) -> Result<(), DecodeError> {
                out.push(Message::request(f.start_ns, f.end_ns, f.len, "L"));
                Ok(())
            }
        }
        let o = check(
            || Host(Framed::new(Plain)),
            &[
                Event::Data(Direction::ToServer, b"a\nbb\n"),
                Event::Gap(Direction::ToServer, 3),
                Event::Data(Direction::ToServer, b"c\n"),
            ],
            64,
        );
        assert_eq!(o.messages.len(), 2);
        assert_eq!(o.error.map(|e| e.reason), Some("gap".to_string()));
    }
}
