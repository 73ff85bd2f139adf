//! Pure Redis protocol parser (RESP2 and RESP3): reassembled TCP bytes in,
//! [`Message`]s out.
//!
//! One [`Parser`] per flow holds a small state machine for each direction:
//! a stack of open aggregates (elements left in each) and, inside a bulk
//! value, the bytes of payload left. Header lines (`*3`, `$5`, `+OK`) are
//! consumed only once complete (at most [`MAX_LINE`] bytes); bulk payloads
//! are consumed as they arrive, so a 500 KB value or a 240 KB `COMMAND`
//! reply never makes the host buffer more than a line.
//!
//! * Requests: arrays of bulk strings (any RESP value is tolerated), and
//!   inline commands (a text line such as `PING\r\n`, split on blanks with
//!   `"..."`/`'...'` quoting, as `redis-server` does). Only the first
//!   [`MAX_CAPTURED_ELEMS`] elements are kept, each cut to
//!   [`MAX_ELEM_BYTES`], all within [`MAX_CAPTURE_BYTES`].
//! * Replies: every RESP2/RESP3 type (`+ - : $ * _ # , ( ! = % ~ > |`). An
//!   attribute (`|`) precedes a value and is not a value itself: neither at
//!   the top level (it is part of the reply that follows) nor inside an
//!   aggregate (it does not count as an element).
//! * Pushes are not replies: RESP3 `>` values, and in RESP2 subscribed mode
//!   arrays headed `message`/`pmessage`/`smessage`, become [`Push`]es.
//!   Subscription confirmations (`subscribe`, `psubscribe`, `ssubscribe`
//!   and the `un` forms) answer the oldest pending command of the same name:
//!   the first confirmation is its [`Reply`], the others (one per channel)
//!   are absorbed; confirmations that answer nothing pending are dropped.
//!   Every other reply answers the oldest pending command, so the host's
//!   in-order pairing stays aligned.
//! * A direction's first bytes, and the bytes after a [`Parser::gap`] that
//!   broke framing, are scanned line by line for a plausible value start
//!   (requests: `*N\r\n$`, or an inline command as the very first line;
//!   replies: a valid header line). Junk is consumed, up to
//!   [`MAX_RESYNC_BYTES`]. A gap inside a bulk payload only shortens it.
//!   A message cut by a gap or by the end of the flow is still reported,
//!   marked truncated, so pairing by order stays aligned.
//!
//! Nothing here panics on input and every buffer is bounded.

use std::collections::VecDeque;

wasmtap_sdk::stream_parser!(Parser, Dir, Message, ParseError);

#[cfg(test)]
mod tests;

/// Stable, kebab-case reasons carried by [`ParseError`].
pub mod reason {
    /// A byte that starts no RESP value where a value must start.
    pub const BAD_TYPE: &str = "bad-type";
    /// A length or count that is not a decimal number, or is out of range.
    pub const BAD_LENGTH: &str = "bad-length";
    /// A bulk payload not followed by CRLF.
    pub const BAD_TERMINATOR: &str = "bad-terminator";
    /// A header or inline line longer than [`super::MAX_LINE`].
    pub const LINE_TOO_LONG: &str = "line-too-long";
    /// Aggregates nested deeper than [`super::MAX_DEPTH`].
    pub const TOO_DEEP: &str = "too-deep";
    /// No value start found within [`super::MAX_RESYNC_BYTES`] of junk.
    pub const RESYNC_FAILED: &str = "resync-failed";
}

/// Longest header line or inline command (LF included), as `redis-server`'s
/// inline limit.
pub const MAX_LINE: usize = 64 * 1024;
/// Deepest aggregate nesting accepted.
pub const MAX_DEPTH: usize = 128;
/// Commands remembered while awaiting replies; the oldest is forgotten when
/// a new one would exceed this.
pub const MAX_PENDING: usize = 4096;
/// Bytes skipped while looking for a value start before giving up.
pub const MAX_RESYNC_BYTES: u64 = 4 * 1024 * 1024;
/// Top-level elements (command name and arguments) kept per message.
pub const MAX_CAPTURED_ELEMS: usize = 32;
/// Bytes kept of each captured element.
pub const MAX_ELEM_BYTES: usize = 128;
/// Bytes kept of all captured elements of a message together.
pub const MAX_CAPTURE_BYTES: usize = 1024;
/// Largest bulk length accepted (Redis' own limit is 512 MB by default).
const MAX_BULK: u64 = 1 << 40;
/// Largest aggregate count accepted.
const MAX_COUNT: u64 = 1 << 32;
/// Bytes of a reply line checked while resynchronising.
const MAX_RESYNC_LINE: usize = 4096;

/// Direction of a flow's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Client to server: commands.
    ToServer,
    /// Server to client: replies and pushes.
    ToClient,
}

/// A command sent to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Timestamp of the feed that first offered the command's first byte.
    pub start_ns: u64,
    /// Timestamp of the feed (or close) that completed it.
    pub end_ns: u64,
    /// Bytes on the wire (gap bytes inside it included).
    pub size: u64,
    /// The command name, upper-cased; empty when it is not a plausible
    /// command token (binary, too long).
    pub name: String,
    /// The first arguments (after the name), each cut to [`MAX_ELEM_BYTES`].
    pub args: Vec<Vec<u8>>,
    /// Number of arguments (after the name), captured or not.
    pub argc: u64,
    /// An inline (plain text) command.
    pub inline: bool,
    /// Cut short by a gap or by the end of the flow.
    pub truncated: bool,
}

/// A reply to the oldest pending command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Timestamp of the feed that first offered the reply's first byte.
    pub start_ns: u64,
    /// Timestamp of the feed (or close) that completed it.
    pub end_ns: u64,
    /// Bytes on the wire, attributes included.
    pub size: u64,
    /// RESP type byte of the reply (`+`, `$`, `*`...), 0 if unknown.
    pub kind: u8,
    /// For error replies (`-`, `!`): the error code, the first word
    /// (`ERR`, `NOAUTH`, `WRONGTYPE`), or `ERR` when it is not a code.
    pub error: Option<String>,
    /// Top-level elements for aggregates (as requests' `args`).
    pub elems: usize,
    /// Cut short by a gap or by the end of the flow.
    pub truncated: bool,
}

/// An out-of-band message from the server (pub/sub message, RESP3 push).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// Timestamp of the feed that first offered the push's first byte.
    pub start_ns: u64,
    /// Timestamp of the feed (or close) that completed it.
    pub end_ns: u64,
    /// Bytes on the wire.
    pub size: u64,
    /// The push kind, lower-cased (`message`, `pmessage`, `invalidate`),
    /// or `push` when it is not a plausible token.
    pub name: String,
    /// Cut short by a gap or by the end of the flow.
    pub truncated: bool,
}

/// A message found in a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A command.
    Request(Request),
    /// A reply.
    Reply(Reply),
    /// A push (one-way).
    Push(Push),
}

/// Why parsing stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError {
    /// One of [`reason`].
    pub reason: &'static str,
    /// Offset in the direction's stream.
    pub offset: u64,
}

/// An open aggregate.
#[derive(Debug, Clone, Copy)]
struct Frame {
    left: u64,
    attr: bool,
}

/// Where a bulk payload's bytes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    None,
    Elem,
    Text,
}

#[derive(Debug, Clone, Copy)]
struct Bulk {
    payload_left: u64,
    crlf_left: u8,
    target: Target,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sync {
    Synced,
    Resync {
        skipped: u64,
        line_start: bool,
        allow_inline: bool,
    },
}

/// The top-level message being parsed.
#[derive(Debug, Clone, Default)]
struct Cur {
    start_ns: u64,
    size: u64,
    top: u8,
    elems: Vec<Vec<u8>>,
    captured: usize,
    text: Vec<u8>,
    count: u64,
    inline: bool,
    truncated: bool,
}

impl Cur {
    fn new(start_ns: u64) -> Self {
        Self {
            start_ns,
            ..Self::default()
        }
    }

    fn keep(&mut self, target: Target, bytes: &[u8]) {
        match target {
            Target::None => {}
            Target::Elem => {
                let room = MAX_CAPTURE_BYTES.saturating_sub(self.captured);
                if let Some(e) = self.elems.last_mut() {
                    let n = bytes
                        .len()
                        .min(MAX_ELEM_BYTES.saturating_sub(e.len()))
                        .min(room);
                    e.extend_from_slice(bytes.get(..n).unwrap_or_default());
                    self.captured += n;
                }
            }
            Target::Text => {
                let n = bytes
                    .len()
                    .min(MAX_ELEM_BYTES.saturating_sub(self.text.len()));
                self.text
                    .extend_from_slice(bytes.get(..n).unwrap_or_default());
            }
        }
    }
}

/// One direction's state.
#[derive(Debug, Clone)]
struct Side {
    sync: Sync,
    stack: Vec<Frame>,
    cur: Option<Cur>,
    bulk: Option<Bulk>,
    offset: u64,
    first_offer: Option<u64>,
    last_ts: u64,
}

enum Step {
    Need,
    Consumed(usize),
    Complete(usize, Cur),
}

fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c)
}

fn find_lf(d: &[u8], limit: usize) -> Option<usize> {
    d.iter().take(limit).position(|&b| b == b'\n')
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Parses a decimal length (`-1` allowed for nulls).
fn parse_len(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.strip_prefix(b"-") {
        Some(d) => (true, d),
        None => (false, s),
    };
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v = digits
        .iter()
        .fold(0i64, |a, &b| a * 10 + i64::from(b - b'0'));
    Some(if neg { -v } else { v })
}

/// Splits an inline command line as `sdssplitargs` does (approximately).
fn split_inline(line: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < line.len() {
        while line.get(i).is_some_and(|&b| is_blank(b)) {
            i += 1;
        }
        let Some(&first) = line.get(i) else { break };
        let mut tok = Vec::new();
        if first == b'"' || first == b'\'' {
            i += 1;
            while let Some(&b) = line.get(i) {
                i += 1;
                if b == first {
                    break;
                }
                if b == b'\\' && first == b'"' {
                    if let Some(&n) = line.get(i) {
                        tok.push(n);
                        i += 1;
                    }
                    continue;
                }
                tok.push(b);
            }
        } else {
            while let Some(&b) = line.get(i) {
                if is_blank(b) {
                    break;
                }
                tok.push(b);
                i += 1;
            }
        }
        out.push(tok);
    }
    out
}

/// A plausible command or push token: `[A-Za-z0-9_.|:-]{1,32}` starting
/// with a letter.
pub fn is_token(t: &[u8]) -> bool {
    !t.is_empty()
        && t.len() <= 32
        && t.first().is_some_and(u8::is_ascii_alphabetic)
        && t.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"_.|:-".contains(&b))
}

fn printable(s: &[u8]) -> bool {
    s.iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80)
}

enum Cand {
    Yes,
    No,
    Wait,
    /// A blank line of `n` bytes (LF included) before an inline command.
    Blank(usize),
}

/// Does `d` (at a line start) look like the start of a value?
fn candidate(dir: Dir, d: &[u8], allow_inline: bool) -> Cand {
    let Some(&t) = d.first() else {
        return Cand::Wait;
    };
    let lf = find_lf(d, MAX_RESYNC_LINE);
    match dir {
        Dir::ToServer if t == b'*' => {
            let Some(lf) = lf else {
                return if d.len() > 24 { Cand::No } else { Cand::Wait };
            };
            let line = d.get(1..lf).unwrap_or_default();
            let ok = line.ends_with(b"\r")
                && parse_len(strip_cr(line)).is_some_and(|n| (1..1 << 20).contains(&n));
            if !ok {
                return Cand::No;
            }
            match d.get(lf + 1) {
                None => Cand::Wait,
                Some(b'$') => Cand::Yes,
                Some(_) => Cand::No,
            }
        }
        Dir::ToServer => {
            if !allow_inline {
                return Cand::No;
            }
            let Some(lf) = find_lf(d, MAX_LINE) else {
                return if d.len() >= MAX_LINE {
                    Cand::No
                } else {
                    Cand::Wait
                };
            };
            let line = strip_cr(d.get(..lf).unwrap_or_default());
            let toks = split_inline(line);
            if toks.is_empty() && line.iter().all(|&b| is_blank(b)) {
                return Cand::Blank(lf + 1);
            }
            let ok = printable(line) && toks.first().is_some_and(|n| is_token(n));
            if ok { Cand::Yes } else { Cand::No }
        }
        Dir::ToClient => {
            if !b"+-:$*%~>|_#,(!=".contains(&t) {
                return Cand::No;
            }
            let Some(lf) = lf else {
                return if d.len() >= MAX_RESYNC_LINE {
                    Cand::No
                } else {
                    Cand::Wait
                };
            };
            let line = d.get(1..lf).unwrap_or_default();
            let Some(body) = line.strip_suffix(b"\r") else {
                return Cand::No;
            };
            let ok = match t {
                b'+' | b'-' => printable(body),
                b':' | b'(' => parse_len(body).is_some(),
                b'_' => body.is_empty(),
                b'#' => body == b"t" || body == b"f",
                b',' => {
                    !body.is_empty()
                        && body
                            .iter()
                            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(b))
                }
                _ => parse_len(body).is_some_and(|n| n >= -1),
            };
            if ok { Cand::Yes } else { Cand::No }
        }
    }
}

impl Side {
    fn new(dir: Dir) -> Self {
        Self {
            sync: Sync::Resync {
                skipped: 0,
                line_start: true,
                allow_inline: dir == Dir::ToServer,
            },
            stack: Vec::new(),
            cur: None,
            bulk: None,
            offset: 0,
            first_offer: None,
            last_ts: 0,
        }
    }

    /// Where the value starting now is kept (and records a new top-level
    /// element).
    fn open_value(&mut self, t: u8) -> Target {
        let Some(cur) = self.cur.as_mut() else {
            return Target::None;
        };
        match self.stack.as_slice() {
            [] if t != b'|' => {
                cur.top = t;
                Target::Text
            }
            [f] if !f.attr => {
                if cur.elems.len() < MAX_CAPTURED_ELEMS {
                    cur.elems.push(Vec::new());
                    Target::Elem
                } else {
                    Target::None
                }
            }
            _ => Target::None,
        }
    }

    /// A value ended: pops finished aggregates. True when the top-level
    /// message is complete.
    fn value_done(&mut self) -> bool {
        loop {
            let Some(f) = self.stack.last_mut() else {
                return true;
            };
            f.left = f.left.saturating_sub(1);
            if f.left > 0 {
                return false;
            }
            let attr = f.attr;
            self.stack.pop();
            if attr {
                return false;
            }
        }
    }

    /// Handles one header line (without LF; `wire` bytes on the wire).
    fn header(&mut self, ts: u64, line: &[u8], wire: usize) -> Result<bool, &'static str> {
        let line = strip_cr(line);
        let Some((&t, rest)) = line.split_first() else {
            return Err(reason::BAD_TYPE);
        };
        if !b"+-:$*%~>|_#,(!=".contains(&t) {
            return Err(reason::BAD_TYPE);
        }
        let aggregate = b"*%~>|".contains(&t);
        if aggregate && self.stack.len() >= MAX_DEPTH {
            return Err(reason::TOO_DEEP);
        }
        let len = if aggregate || b"$!=".contains(&t) {
            match parse_len(rest) {
                Some(n) if n >= -1 => Some(n),
                _ => return Err(reason::BAD_LENGTH),
            }
        } else {
            None
        };
        if self.cur.is_none() {
            self.cur = Some(Cur::new(self.first_offer.take().unwrap_or(ts)));
        }
        let top_level = self.stack.is_empty();
        let target = self.open_value(t);
        let Some(cur) = self.cur.as_mut() else {
            return Err(reason::BAD_TYPE);
        };
        cur.size += wire as u64;
        match (t, len) {
            (b'$' | b'!' | b'=', Some(n)) if n >= 0 => {
                let n = n.unsigned_abs();
                if n > MAX_BULK {
                    return Err(reason::BAD_LENGTH);
                }
                self.bulk = Some(Bulk {
                    payload_left: n,
                    crlf_left: 2,
                    target,
                });
                Ok(false)
            }
            (b'*' | b'%' | b'~' | b'>' | b'|', Some(n)) if n >= 0 => {
                let n = n.unsigned_abs();
                if n > MAX_COUNT {
                    return Err(reason::BAD_LENGTH);
                }
                let attr = t == b'|';
                let count = if t == b'%' || attr { n * 2 } else { n };
                if top_level && !attr {
                    cur.count = n;
                }
                if count == 0 {
                    return Ok(!attr && self.value_done());
                }
                self.stack.push(Frame { left: count, attr });
                Ok(false)
            }
            (_, Some(_)) => Ok(self.value_done()), // null (-1)
            (_, None) => {
                cur.keep(target, rest);
                Ok(self.value_done())
            }
        }
    }

    /// One step of parsing `d` (the unconsumed bytes of the offer).
    fn step(&mut self, dir: Dir, ts: u64, d: &[u8]) -> Result<Step, &'static str> {
        if let Some(mut b) = self.bulk {
            let Some(cur) = self.cur.as_mut() else {
                self.bulk = None;
                return Ok(Step::Consumed(0));
            };
            let mut n = 0usize;
            if b.payload_left > 0 {
                let take = usize::try_from(b.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(d.len());
                cur.keep(b.target, d.get(..take).unwrap_or_default());
                b.payload_left -= take as u64;
                n = take;
            }
            let mut bad = false;
            while b.payload_left == 0 && b.crlf_left > 0 {
                let Some(&c) = d.get(n) else { break };
                let want = if b.crlf_left == 2 { b'\r' } else { b'\n' };
                if c != want {
                    bad = true;
                    break;
                }
                b.crlf_left -= 1;
                n += 1;
            }
            cur.size += n as u64;
            if bad && n == 0 {
                return Err(reason::BAD_TERMINATOR);
            }
            if b.payload_left == 0 && b.crlf_left == 0 {
                self.bulk = None;
                if self.value_done() {
                    return Ok(self.complete(n));
                }
                return Ok(Step::Consumed(n));
            }
            self.bulk = Some(b);
            return Ok(if n == 0 {
                Step::Need
            } else {
                Step::Consumed(n)
            });
        }
        let Some(&first) = d.first() else {
            return Ok(Step::Need);
        };
        if let Sync::Resync {
            skipped,
            line_start,
            allow_inline,
        } = self.sync
        {
            return self.resync(dir, d, skipped, line_start, allow_inline);
        }
        let idle = self.stack.is_empty() && self.cur.is_none();
        if idle && (first == b'\r' || first == b'\n') {
            return Ok(Step::Consumed(1));
        }
        if idle && dir == Dir::ToServer && first != b'*' {
            return self.inline(ts, d);
        }
        let Some(lf) = find_lf(d, MAX_LINE) else {
            return if d.len() >= MAX_LINE {
                Err(reason::LINE_TOO_LONG)
            } else {
                Ok(Step::Need)
            };
        };
        let line = d.get(..lf).unwrap_or_default();
        if self.header(ts, line, lf + 1)? {
            Ok(self.complete(lf + 1))
        } else {
            Ok(Step::Consumed(lf + 1))
        }
    }

    fn complete(&mut self, n: usize) -> Step {
        match self.cur.take() {
            Some(c) => Step::Complete(n, c),
            None => Step::Consumed(n),
        }
    }

    fn inline(&mut self, ts: u64, d: &[u8]) -> Result<Step, &'static str> {
        let Some(lf) = find_lf(d, MAX_LINE) else {
            return if d.len() >= MAX_LINE {
                Err(reason::LINE_TOO_LONG)
            } else {
                Ok(Step::Need)
            };
        };
        let toks = split_inline(d.get(..lf).unwrap_or_default());
        if toks.is_empty() {
            // A blank line: redis-server ignores it.
            return Ok(Step::Consumed(lf + 1));
        }
        let mut cur = Cur::new(self.first_offer.take().unwrap_or(ts));
        cur.inline = true;
        cur.top = b'*';
        cur.size = lf as u64 + 1;
        cur.count = toks.len() as u64;
        for t in toks.iter().take(MAX_CAPTURED_ELEMS) {
            cur.elems.push(Vec::new());
            cur.keep(Target::Elem, t);
        }
        Ok(Step::Complete(lf + 1, cur))
    }

    fn resync(
        &mut self,
        dir: Dir,
        d: &[u8],
        skipped: u64,
        line_start: bool,
        allow_inline: bool,
    ) -> Result<Step, &'static str> {
        let skip = |s: &mut Self, n: usize, line_start: bool| {
            let skipped = skipped + n as u64;
            s.sync = Sync::Resync {
                skipped,
                line_start,
                allow_inline: false,
            };
            if skipped > MAX_RESYNC_BYTES {
                Err(reason::RESYNC_FAILED)
            } else {
                Ok(Step::Consumed(n))
            }
        };
        if !line_start {
            return match find_lf(d, usize::MAX) {
                Some(i) => skip(self, i + 1, true),
                None => skip(self, d.len(), false),
            };
        }
        if matches!(d.first(), Some(b'\r' | b'\n')) {
            self.sync = Sync::Resync {
                skipped: skipped + 1,
                line_start: true,
                allow_inline,
            };
            return Ok(Step::Consumed(1));
        }
        match candidate(dir, d, allow_inline) {
            Cand::Yes => {
                self.sync = Sync::Synced;
                Ok(Step::Consumed(0))
            }
            Cand::Wait => Ok(Step::Need),
            Cand::Blank(n) => {
                self.sync = Sync::Resync {
                    skipped: skipped + n as u64,
                    line_start: true,
                    allow_inline,
                };
                Ok(Step::Consumed(n))
            }
            Cand::No => skip(self, 0, false),
        }
    }
}

/// Pending command awaiting its reply.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pending {
    Normal,
    /// A (un)subscribe command, answered by one confirmation per channel
    /// (`left == None`: unknown count, for an unsubscribe from all).
    Sub {
        family: String,
        left: Option<u64>,
        answered: bool,
    },
}

const SUBSCRIBE: [&str; 3] = ["subscribe", "psubscribe", "ssubscribe"];
const UNSUBSCRIBE: [&str; 3] = ["unsubscribe", "punsubscribe", "sunsubscribe"];
const MESSAGES: [&str; 3] = ["message", "pmessage", "smessage"];

/// The per-flow parser.
#[derive(Debug, Clone)]
pub struct Parser {
    sides: [Side; 2],
    pending: VecDeque<Pending>,
    subscribed: bool,
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

fn idx(dir: Dir) -> usize {
    match dir {
        Dir::ToServer => 0,
        Dir::ToClient => 1,
    }
}

fn lower(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_lowercase()
}

/// A message cut inside its first element's payload has no name yet.
fn drop_partial_name(cur: &mut Cur, cut: Option<Bulk>) {
    if let Some(b) = cut
        && b.target == Target::Elem
        && b.payload_left > 0
        && cur.elems.len() == 1
    {
        cur.elems.clear();
    }
}

/// The error code of an error reply's text.
fn error_code(text: &[u8]) -> String {
    let word = text.split(|&b| b == b' ').next().unwrap_or_default();
    let code = !word.is_empty()
        && word.len() <= 32
        && word
            .iter()
            .all(|&b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if code {
        String::from_utf8_lossy(word).into_owned()
    } else {
        "ERR".to_string()
    }
}

impl Parser {
    /// A parser for a new flow.
    pub fn new() -> Self {
        Self {
            sides: [Side::new(Dir::ToServer), Side::new(Dir::ToClient)],
            pending: VecDeque::new(),
            subscribed: false,
        }
    }

    /// Offers `data` (the unconsumed remainder of the previous offer of `dir`
    /// followed by new bytes). Returns the bytes consumed; completed
    /// messages are appended to `out`.
    pub fn feed(
        &mut self,
        dir: Dir,
        ts: u64,
        data: &[u8],
        out: &mut Vec<Message>,
    ) -> Result<usize, ParseError> {
        let i = idx(dir);
        let mut pos = 0usize;
        let mut guard = 0usize;
        let result = loop {
            guard += 1;
            // Every step consumes, completes or stops, except a resync
            // decision (at most two in a row); the guard is a safety net.
            if guard > 4 * data.len() + 16 {
                break Ok(());
            }
            let side = &mut self.sides[i];
            match side.step(dir, ts, data.get(pos..).unwrap_or_default()) {
                Ok(Step::Need) => break Ok(()),
                Ok(Step::Consumed(n)) => pos += n,
                Ok(Step::Complete(n, cur)) => {
                    pos += n;
                    self.finish(dir, cur, ts, out);
                }
                Err(reason) => {
                    break Err(ParseError {
                        reason,
                        offset: self.sides[i].offset.saturating_add(pos as u64),
                    });
                }
            }
            if pos >= data.len() {
                break Ok(());
            }
        };
        let side = &mut self.sides[i];
        side.offset = side.offset.saturating_add(pos as u64);
        side.last_ts = ts;
        if pos < data.len() && side.cur.is_none() && side.first_offer.is_none() {
            side.first_offer = Some(ts);
        }
        result.map(|()| pos)
    }

    /// `len` bytes of `dir` were never captured. The next `feed` of `dir`
    /// starts right after the hole (the host drops any remainder it kept).
    pub fn gap(&mut self, dir: Dir, len: u64, out: &mut Vec<Message>) -> Result<(), ParseError> {
        let i = idx(dir);
        let ts = self.sides[i].last_ts;
        let side = &mut self.sides[i];
        side.offset = side.offset.saturating_add(len);
        side.first_offer = None;
        if let (Some(mut b), Some(cur)) = (side.bulk, side.cur.as_mut())
            && len <= b.payload_left + u64::from(b.crlf_left)
        {
            // The hole is inside a bulk value: framing survives.
            cur.truncated = true;
            cur.size = cur.size.saturating_add(len);
            let from_payload = len.min(b.payload_left);
            b.payload_left -= from_payload;
            let from_crlf = u8::try_from(len - from_payload).unwrap_or(2);
            b.crlf_left = b.crlf_left.saturating_sub(from_crlf);
            if b.payload_left > 0 || b.crlf_left > 0 {
                side.bulk = Some(b);
                return Ok(());
            }
            side.bulk = None;
            if side.value_done()
                && let Some(cur) = side.cur.take()
            {
                self.finish(dir, cur, ts, out);
            }
            return Ok(());
        }
        // Framing is lost: report what was cut, then look for a value start.
        side.stack.clear();
        side.sync = Sync::Resync {
            skipped: 0,
            line_start: true,
            allow_inline: false,
        };
        let cut = side.bulk.take();
        if let Some(mut cur) = side.cur.take() {
            cur.truncated = true;
            cur.size = cur.size.saturating_add(len);
            drop_partial_name(&mut cur, cut);
            self.finish(dir, cur, ts, out);
        }
        Ok(())
    }

    /// The flow ended: messages cut short are reported, truncated.
    pub fn close(&mut self, ts: u64, out: &mut Vec<Message>) {
        for dir in [Dir::ToServer, Dir::ToClient] {
            let side = &mut self.sides[idx(dir)];
            side.stack.clear();
            let cut = side.bulk.take();
            if let Some(mut cur) = side.cur.take() {
                cur.truncated = true;
                drop_partial_name(&mut cur, cut);
                self.finish(dir, cur, ts, out);
            }
        }
    }

    fn finish(&mut self, dir: Dir, cur: Cur, ts: u64, out: &mut Vec<Message>) {
        match dir {
            Dir::ToServer => self.finish_request(cur, ts, out),
            Dir::ToClient => self.finish_reply(cur, ts, out),
        }
    }

    fn finish_request(&mut self, cur: Cur, ts: u64, out: &mut Vec<Message>) {
        let mut elems = cur.elems.into_iter();
        // `*0` and empty arrays are ignored by the server (no reply).
        let Some(name) = elems.next() else { return };
        let name = if is_token(&name) {
            String::from_utf8_lossy(&name).to_ascii_uppercase()
        } else {
            String::new()
        };
        let argc = cur.count.saturating_sub(1);
        let lname = name.to_ascii_lowercase();
        let pending = if SUBSCRIBE.contains(&lname.as_str()) {
            self.subscribed = true;
            Pending::Sub {
                family: lname,
                left: Some(argc.max(1)),
                answered: false,
            }
        } else if UNSUBSCRIBE.contains(&lname.as_str()) {
            Pending::Sub {
                family: lname,
                left: (argc > 0).then_some(argc),
                answered: false,
            }
        } else {
            if lname == "reset" {
                self.subscribed = false;
            }
            Pending::Normal
        };
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back(pending);
        out.push(Message::Request(Request {
            start_ns: cur.start_ns,
            end_ns: ts,
            size: cur.size,
            name,
            args: elems.collect(),
            argc,
            inline: cur.inline,
            truncated: cur.truncated,
        }));
    }

    fn finish_reply(&mut self, cur: Cur, ts: u64, out: &mut Vec<Message>) {
        let head = cur.elems.first().map(|h| lower(h)).unwrap_or_default();
        let aggregate = cur.top == b'*' || cur.top == b'>';
        let confirmation = aggregate
            && (SUBSCRIBE.contains(&head.as_str()) || UNSUBSCRIBE.contains(&head.as_str()));
        let reply = Reply {
            start_ns: cur.start_ns,
            end_ns: ts,
            size: cur.size,
            kind: cur.top,
            error: (cur.top == b'-' || cur.top == b'!').then(|| error_code(&cur.text)),
            elems: usize::try_from(cur.count).unwrap_or(usize::MAX),
            truncated: cur.truncated,
        };
        if confirmation {
            if UNSUBSCRIBE.contains(&head.as_str())
                && cur.elems.get(2).is_some_and(|c| c.as_slice() == b"0")
            {
                self.subscribed = false;
            }
            let mut emit = false;
            if let Some(Pending::Sub {
                family,
                left,
                answered,
            }) = self.pending.front_mut()
                && *family == head
            {
                emit = !*answered;
                *answered = true;
                let done = match left {
                    Some(n) => {
                        *n = n.saturating_sub(1);
                        *n == 0
                    }
                    None => true,
                };
                if done {
                    self.pending.pop_front();
                }
            }
            if emit {
                out.push(Message::Reply(reply));
            }
            return;
        }
        let push = cur.top == b'>'
            || (cur.top == b'*' && self.subscribed && MESSAGES.contains(&head.as_str()));
        if push {
            out.push(Message::Push(Push {
                start_ns: cur.start_ns,
                end_ns: ts,
                size: cur.size,
                name: if is_token(head.as_bytes()) {
                    head
                } else {
                    "push".to_string()
                },
                truncated: cur.truncated,
            }));
            return;
        }
        // Subscriptions already answered whose other confirmations never came.
        while matches!(
            self.pending.front(),
            Some(Pending::Sub { answered: true, .. })
        ) {
            self.pending.pop_front();
        }
        self.pending.pop_front();
        out.push(Message::Reply(reply));
    }
}
