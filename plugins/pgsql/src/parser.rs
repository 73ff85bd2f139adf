//! Pure PostgreSQL frontend/backend protocol v3 parser: reassembled TCP bytes
//! in, [`Message`]s out.
//!
//! One [`Parser`] per flow holds the state of both directions. The host offers
//! bytes with [`Parser::feed`]; `data` is the unconsumed remainder of the
//! previous offer of that direction followed by new bytes. A message is
//! consumed once the part of it the parser reads is complete (at most a
//! per-type prefix, e.g. [`MAX_QUERY_BYTES`] of a query); everything else (data
//! rows, COPY data, long queries' tails) is skipped as it streams in, so the
//! host never buffers a big message.
//!
//! Exchanges (one request and one response each, paired by a correlation id
//! the parser assigns, so that skipped or unanswered requests never shift the
//! pairing):
//! * `SSLRequest` / `GSSENCRequest`, answered by one byte (`S`/`G` accepted,
//!   `N` refused). Once accepted, the flow is encrypted: both directions are
//!   consumed and ignored from then on (nothing more is reported).
//! * `StartupMessage` (`user`, `database` kept; password and SASL messages
//!   are never read), answered by everything up to the first `ReadyForQuery`
//!   (success) or `ErrorResponse` (failed login, with its SQLSTATE).
//! * Simple query `Q`: one exchange per `Q`, even when it holds several
//!   statements; the response is everything up to `ReadyForQuery`. Row counts
//!   of all `CommandComplete` tags are summed; the first `ErrorResponse` makes
//!   it an error. `FunctionCall` (`F`) is handled the same way.
//! * Extended query: one exchange per `Execute`. `Parse` ties a statement
//!   name to its SQL text, `Bind` a portal to a statement (bounded maps), so
//!   that `Execute` carries the query text. The backend answers each
//!   `Execute` with `CommandComplete`, `EmptyQueryResponse`,
//!   `PortalSuspended` or `ErrorResponse`; after an error it skips every
//!   message up to `Sync`, so the remaining `Execute`s of that batch get an
//!   error response of kind [`ABORTED`] when `ReadyForQuery` arrives.
//! * `CancelRequest` is a one-way message. COPY sub-protocol messages are
//!   consumed (the `COPY n` tag gives the row count).
//! * A direction that does not start with a connection's first message (a
//!   flow picked up mid-stream), or that lost bytes in a gap, is scanned for a
//!   plausible message boundary: a valid type byte and length, checked
//!   against the next message (or the message's own structure when it ends
//!   the data) before it is trusted, up to [`MAX_RESYNC_BYTES`]. A gap
//!   inside a message being skipped keeps the stream synchronised. Server
//!   messages that answer nothing seen (mid-stream start) are dropped. After a
//!   gap in the client direction, the next response batch (up to
//!   `ReadyForQuery`) is assumed to answer the lost requests and is dropped.
//!
//! Nothing here panics on input, and every buffer and map is bounded.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

wasmtap_sdk::stream_parser!(Parser, Dir, Message, ParseError);

#[cfg(test)]
mod tests;

/// Stable decode-error reasons.
pub mod reason {
    /// No plausible message boundary within [`super::MAX_RESYNC_BYTES`].
    pub const RESYNC_FAILED: &str = "resync-failed";
}

/// Error kind given to `Execute`s the server skipped after an earlier error
/// of the same `Sync` batch.
pub const ABORTED: &str = "pipeline_aborted";

/// Bytes of SQL text read from a `Query` or `Parse` (the rest is skipped and
/// the text is reported truncated).
pub const MAX_QUERY_BYTES: usize = 16 * 1024;

/// Bytes scanned for a message boundary before giving up on a direction.
pub const MAX_RESYNC_BYTES: u64 = 256 * 1024;

/// Prepared statements remembered per flow.
pub const MAX_STATEMENTS: usize = 256;

/// Portals remembered per flow.
pub const MAX_PORTALS: usize = 64;

/// Requests awaiting their response per flow.
pub const MAX_PENDING: usize = 4096;

/// Length of a message while resynchronising beyond which it is not
/// believed.
const RESYNC_MAX_LEN: u32 = 1 << 24;

/// Largest message length accepted at all.
const MAX_LEN: u32 = 1 << 30;

/// Bytes of other messages' bodies read (error fields, tags, names).
const SMALL_CAP: usize = 2048;

/// Bytes a candidate message may occupy before resynchronisation stops
/// waiting for its end and tries the next offset.
const RESYNC_WINDOW: usize = 32 * 1024;

/// Protocol codes of untyped (first) messages.
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;
const PROTOCOL_3: u32 = 0x0003_0000;

/// Which way bytes travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Client (frontend) to server (backend).
    ToServer = 0,
    /// Server (backend) to client (frontend).
    ToClient = 1,
}

/// What a parsed message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Kind {
    /// A request; its response carries the same `id`.
    #[default]
    Request,
    /// A response to the request with the same `id`.
    Response,
    /// A message expecting no answer (`CancelRequest`).
    OneWay,
}

/// A parsed message.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Message {
    /// Request, response or one-way.
    pub kind: Kind,
    /// Correlation id pairing a response with its request.
    pub id: u64,
    /// Timestamp of the first byte.
    pub start_ns: u64,
    /// Timestamp of the last byte.
    pub end_ns: u64,
    /// Bytes on the wire (for an `Execute`, the `Parse`/`Bind`/`Describe`
    /// before it count too; for a response, every backend message since the
    /// previous response).
    pub size: u64,
    /// Requests: low-cardinality operation (`SELECT`, `STARTUP`, ...).
    pub operation: String,
    /// Requests: SQL text (sanitised unless configured raw), when known.
    pub query: Option<String>,
    /// Requests: the query text was cut at [`MAX_QUERY_BYTES`].
    pub query_truncated: bool,
    /// Requests: the database of the session, when known.
    pub database: Option<String>,
    /// Requests: the user of the session, when known.
    pub user: Option<String>,
    /// Responses: `true` when the server reported an error.
    pub error: bool,
    /// Responses: the SQLSTATE of an error, or `S`/`N`/`G` for an SSL or
    /// GSSAPI encryption answer.
    pub status_code: String,
    /// Responses: error kind when there is no SQLSTATE ([`ABORTED`]).
    pub error_kind: Option<&'static str>,
    /// Responses: rows returned (`SELECT`, `FETCH`, `COPY` out, or data rows
    /// counted when no tag gives it).
    pub returned_rows: Option<i64>,
    /// Responses: rows affected (`INSERT`, `UPDATE`, `DELETE`, `MERGE`,
    /// `COPY` in).
    pub affected_rows: Option<i64>,
}

/// Why the parser gave up on a flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// Stable reason (see [`reason`]).
    pub reason: &'static str,
    /// Offset in the direction's stream.
    pub offset: u64,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at offset {}", self.reason, self.offset)
    }
}

impl std::error::Error for ParseError {}

/// Parser options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Report SQL text as sent instead of with literals masked.
    pub raw_query_text: bool,
}

/// Counters of things the parser dropped (for diagnostics and tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Backend messages that answered no request the parser saw.
    pub unmatched: u64,
    /// Times a direction lost its message boundaries.
    pub resyncs: u64,
}

/// A request awaiting its response, in the order the backend answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    /// SSLRequest (`gss = false`) or GSSENCRequest.
    Encrypt { id: u64, gss: bool },
    /// StartupMessage: answered at ReadyForQuery or ErrorResponse.
    Startup { id: u64 },
    /// Simple query or function call: answered at ReadyForQuery.
    Query { id: u64 },
    /// Execute: answered by CommandComplete & co.
    Execute { id: u64 },
    /// Sync: ends a batch at ReadyForQuery.
    Sync,
    /// Requests lost in a gap: the next batch's answers are dropped.
    Lost,
}

/// A prepared statement.
#[derive(Clone, Debug)]
struct Stmt {
    op: &'static str,
    text: String,
    truncated: bool,
}

/// Per-direction framing state.
#[derive(Debug, Default)]
struct Side {
    /// Stream offset of the first byte of the next offer.
    offset: u64,
    /// Message boundaries known.
    synced: bool,
    /// Bytes of a message still to skip.
    skip: u64,
    /// Bytes scanned without finding a boundary.
    scanned: u64,
    /// Time the first byte of the incomplete message at the start of the
    /// next offer was seen.
    partial_ts: Option<u64>,
}

/// Backend answers accumulated for the current response.
#[derive(Debug, Default)]
struct Acc {
    start_ns: Option<u64>,
    size: u64,
    error: Option<String>,
    returned: Option<i64>,
    affected: Option<i64>,
    data_rows: i64,
    copy_out: bool,
    /// An error happened in the current Sync batch.
    batch_failed: bool,
}

/// Client bytes accumulated for the next request.
#[derive(Debug, Default)]
struct ReqAcc {
    start_ns: Option<u64>,
    size: u64,
}

/// The parser for one flow.
#[derive(Debug)]
pub struct Parser {
    opts: Options,
    sides: [Side; 2],
    /// Both directions are encrypted (TLS or GSSAPI): ignore everything.
    opaque: bool,
    next_id: u64,
    pending: VecDeque<Pending>,
    statements: BTreeMap<Vec<u8>, Stmt>,
    portals: BTreeMap<Vec<u8>, Option<Stmt>>,
    user: Option<String>,
    database: Option<String>,
    req: ReqAcc,
    resp: Acc,
    stats: Stats,
}

/// Outcome of looking for a message boundary.
enum Scan {
    /// A boundary at this offset.
    Found(usize),
    /// Nothing before this offset; wait for more bytes.
    Wait(usize),
}

/// Whether a candidate boundary holds.
#[derive(PartialEq, Eq, Debug)]
enum Cand {
    Yes,
    No,
    Unknown,
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// The NUL-terminated string at the start of `b`, and the rest after it.
fn cstr(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let n = b.iter().position(|&c| c == 0)?;
    Some((b.get(..n)?, b.get(n + 1..)?))
}

/// The string at the start of `b` up to a NUL or the end (a truncated body).
fn cstr_lossy(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(n) => b.get(..n).unwrap_or(b),
        None => b,
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Frontend message types (after the startup phase).
fn client_type(t: u8) -> bool {
    b"QPBEDCSHFXpdcf".contains(&t)
}

/// Backend message types.
fn server_type(t: u8) -> bool {
    b"RSKZCDENTtn123IsGHWdcVAv".contains(&t)
}

/// Whether a typed header is valid for `dir` (type-specific lengths).
fn header_ok(dir: Dir, t: u8, len: u32, max: u32) -> bool {
    if !(4..=max).contains(&len) {
        return false;
    }
    match dir {
        Dir::ToServer => {
            client_type(t)
                && match t {
                    b'S' | b'H' | b'X' | b'c' => len == 4,
                    b'Q' => len >= 5,
                    b'E' => len >= 9,
                    b'D' | b'C' => len >= 6,
                    b'P' => len >= 8,
                    b'B' => len >= 12,
                    _ => true,
                }
        }
        Dir::ToClient => {
            server_type(t)
                && match t {
                    b'1' | b'2' | b'3' | b'n' | b'I' | b's' | b'c' => len == 4,
                    b'Z' => len == 5,
                    b'K' => len == 12,
                    b'R' => len >= 8,
                    b'C' | b'E' | b'N' => len >= 5,
                    b'D' | b'T' | b't' => len >= 6,
                    b'S' => len >= 6,
                    _ => true,
                }
        }
    }
}

/// Structural check of a complete message body: `Some(true)` when it
/// validates a type with a strong structure, `Some(false)` when it fails,
/// `None` when the type has no checkable structure.
fn structure_ok(dir: Dir, t: u8, body: &[u8]) -> Option<bool> {
    let printable = |s: &[u8]| {
        s.iter()
            .all(|&c| c >= 0x20 || c == b'\n' || c == b'\t' || c == b'\r')
    };
    match (dir, t) {
        (Dir::ToServer, b'Q') => Some(
            body.last() == Some(&0)
                && cstr(body).is_some_and(|(s, r)| r.is_empty() && printable(s)),
        ),
        (Dir::ToServer, b'S' | b'H' | b'X') => Some(body.is_empty()),
        (Dir::ToClient, b'Z') => Some(matches!(body, [b'I' | b'T' | b'E'])),
        (Dir::ToClient, b'C') => Some(cstr(body).is_some_and(|(s, r)| {
            r.is_empty() && !s.is_empty() && s.iter().all(|&c| c.is_ascii_graphic() || c == b' ')
        })),
        (Dir::ToClient, b'E' | b'N') => Some(fields_ok(body)),
        (Dir::ToClient, b'1' | b'2' | b'3' | b'n' | b'I' | b's') => Some(body.is_empty()),
        (Dir::ToClient, b'S') => Some(
            cstr(body)
                .and_then(|(_, r)| cstr(r))
                .is_some_and(|(_, r)| r.is_empty()),
        ),
        (Dir::ToClient, b'D') => {
            // Column count then (length, bytes) per column.
            let Some(n) = body.get(..2).map(|s| u16::from_be_bytes([s[0], s[1]])) else {
                return Some(false);
            };
            let mut at = 2usize;
            for _ in 0..n {
                let Some(l) = be32(body, at) else {
                    return Some(false);
                };
                at += 4;
                if l != u32::MAX {
                    at = match at.checked_add(l as usize) {
                        Some(a) if a <= body.len() => a,
                        _ => return Some(false),
                    };
                }
            }
            Some(at == body.len())
        }
        _ => None,
    }
}

/// ErrorResponse / NoticeResponse fields: (code, cstring)* then NUL.
fn fields_ok(body: &[u8]) -> bool {
    let mut rest = body;
    let mut n = 0;
    loop {
        match rest.split_first() {
            Some((0, r)) => return r.is_empty() && n > 0,
            Some((c, r)) if c.is_ascii_alphabetic() => match cstr(r) {
                Some((_, r2)) => {
                    rest = r2;
                    n += 1;
                }
                None => return false,
            },
            _ => return false,
        }
    }
}

/// Whether `b` starts with an untyped startup-phase message.
fn untyped_ok(b: &[u8]) -> Cand {
    let (Some(len), Some(code)) = (be32(b, 0), be32(b, 4)) else {
        return if b.first().is_some_and(|&c| c != 0) {
            Cand::No
        } else {
            Cand::Unknown
        };
    };
    let ok = match code {
        SSL_REQUEST | GSSENC_REQUEST => len == 8,
        CANCEL_REQUEST => len == 16,
        // Protocol 3.0 (3.2 since PostgreSQL 18): its parameters must read
        // as one (a Kafka Metadata request also starts `00 03 00 0v`).
        c if c >> 16 == PROTOCOL_3 >> 16 && c & 0xffff <= 2 => {
            if !(9..=10_000).contains(&len) {
                false
            } else {
                match b.get(8..len as usize) {
                    None => return Cand::Unknown,
                    Some(params) => startup_params_ok(params),
                }
            }
        }
        _ => false,
    };
    if ok { Cand::Yes } else { Cand::No }
}

/// A StartupMessage's parameters: NUL-terminated name/value strings of
/// printable text, one of them `user` (required by the protocol), and a
/// final NUL.
fn startup_params_ok(p: &[u8]) -> bool {
    let Some(body) = p.strip_suffix(&[0]) else {
        return false;
    };
    let mut strings = body.split(|&c| c == 0);
    let mut user = false;
    let mut pairs = 0;
    while let Some(name) = strings.next() {
        if name.is_empty() && pairs > 0 {
            // The terminator of the list (a value may be empty, a name not).
            return user && strings.next().is_none();
        }
        let Some(value) = strings.next() else {
            return false;
        };
        let printable = |s: &[u8]| s.iter().all(|&c| c >= 0x20 && c != 0x7f);
        if name.is_empty() || !printable(name) || !printable(value) {
            return false;
        }
        user |= name == b"user";
        pairs += 1;
    }
    user
}

/// Whether a message boundary at the start of `b` is believable.
fn candidate(dir: Dir, b: &[u8]) -> Cand {
    let Some(&t) = b.first() else {
        return Cand::Unknown;
    };
    if !(match dir {
        Dir::ToServer => client_type(t),
        Dir::ToClient => server_type(t),
    }) {
        return Cand::No;
    }
    let Some(len) = be32(b, 1) else {
        // Type plausible; the length bytes seen so far must allow a sane one.
        let ok = b.get(1).is_none_or(|&c| c == 0);
        return if ok { Cand::Unknown } else { Cand::No };
    };
    if !header_ok(dir, t, len, RESYNC_MAX_LEN) {
        return Cand::No;
    }
    let end = 1 + len as usize;
    let Some(body) = b.get(5..end) else {
        return Cand::Unknown;
    };
    let strong = match structure_ok(dir, t, body) {
        Some(false) => return Cand::No,
        Some(true) => true,
        None => false,
    };
    let next = b.get(end..).unwrap_or_default();
    if next.is_empty() {
        return if strong { Cand::Yes } else { Cand::Unknown };
    }
    let Some(&nt) = next.first() else {
        return Cand::Unknown;
    };
    let nt_ok = match dir {
        Dir::ToServer => client_type(nt),
        Dir::ToClient => server_type(nt),
    };
    if !nt_ok {
        return Cand::No;
    }
    match be32(next, 1) {
        Some(nl) if header_ok(dir, nt, nl, RESYNC_MAX_LEN) => Cand::Yes,
        Some(_) => Cand::No,
        None => Cand::Unknown,
    }
}

/// Whether the start of a message too long to check whole (at least
/// [`RESYNC_WINDOW`] bytes are there) looks right: query text, or data.
fn long_prefix_ok(dir: Dir, b: &[u8]) -> bool {
    let (Some(&t), Some(body)) = (b.first(), b.get(5..)) else {
        return false;
    };
    let text = |s: &[u8]| s.iter().all(|&c| c >= 0x20 || c.is_ascii_whitespace());
    match (dir, t) {
        (Dir::ToServer, b'Q') => text(body),
        (Dir::ToServer, b'P') => cstr(body).is_some_and(|(n, r)| text(n) && text(r)),
        (Dir::ToServer, b'd') | (Dir::ToClient, b'd') => true,
        (Dir::ToClient, b'D') => {
            body.len() >= 6 && be32(body, 2).is_some_and(|l| l == u32::MAX || l < RESYNC_MAX_LEN)
        }
        _ => false,
    }
}

/// Bytes of a typed message's body the parser reads.
fn body_cap(dir: Dir, t: u8) -> usize {
    match (dir, t) {
        (Dir::ToServer, b'Q' | b'P') => MAX_QUERY_BYTES,
        (Dir::ToServer, b'B' | b'E' | b'C' | b'F') => SMALL_CAP,
        (Dir::ToClient, b'C' | b'E' | b'Z' | b'H' | b'G') => SMALL_CAP,
        _ => 0,
    }
}

impl Parser {
    /// A parser for a new flow.
    pub fn new(opts: Options) -> Self {
        Self {
            opts,
            sides: [Side::default(), Side::default()],
            opaque: false,
            next_id: 0,
            pending: VecDeque::new(),
            statements: BTreeMap::new(),
            portals: BTreeMap::new(),
            user: None,
            database: None,
            req: ReqAcc::default(),
            resp: Acc::default(),
            stats: Stats::default(),
        }
    }

    /// Counters of dropped input.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether the flow turned encrypted (everything after is ignored).
    pub fn is_opaque(&self) -> bool {
        self.opaque
    }

    /// Parses the next bytes of `dir`; returns how many were consumed and
    /// appends completed messages to `out`.
    pub fn feed(
        &mut self,
        dir: Dir,
        ts: u64,
        data: &[u8],
        out: &mut Vec<Message>,
    ) -> Result<usize, ParseError> {
        let r = self.feed_inner(dir, ts, data, out);
        if let Ok(n) = r {
            let side = &mut self.sides[dir as usize];
            side.offset += n as u64;
            side.partial_ts = if n >= data.len() || side.skip > 0 {
                None
            } else if n == 0 {
                Some(side.partial_ts.unwrap_or(ts))
            } else {
                Some(ts)
            };
        }
        r
    }

    fn feed_inner(
        &mut self,
        dir: Dir,
        ts: u64,
        data: &[u8],
        out: &mut Vec<Message>,
    ) -> Result<usize, ParseError> {
        let d = dir as usize;
        let mut pos = 0usize;
        loop {
            if self.opaque {
                return Ok(data.len());
            }
            let rest = data.get(pos..).unwrap_or_default();
            let side = &mut self.sides[d];
            if side.skip > 0 {
                let n = side.skip.min(rest.len() as u64);
                side.skip -= n;
                pos += n as usize;
                if side.skip > 0 {
                    return Ok(pos);
                }
                continue;
            }
            if rest.is_empty() {
                return Ok(pos);
            }
            let first_ts = side.partial_ts.filter(|_| pos == 0).unwrap_or(ts);
            if !side.synced {
                let at_start = side.offset == 0 && pos == 0;
                match self.resync(dir, rest, at_start) {
                    Scan::Found(i) => {
                        let side = &mut self.sides[d];
                        side.synced = true;
                        side.scanned = 0;
                        pos += i;
                        continue;
                    }
                    Scan::Wait(i) => {
                        let side = &mut self.sides[d];
                        side.scanned += i as u64;
                        if side.scanned > MAX_RESYNC_BYTES {
                            return Err(ParseError {
                                reason: reason::RESYNC_FAILED,
                                offset: side.offset + pos as u64,
                            });
                        }
                        return Ok(pos + i);
                    }
                }
            }
            // The one-byte answer to an SSLRequest / GSSENCRequest.
            if dir == Dir::ToClient
                && let Some(&Pending::Encrypt { id, gss }) = self.pending.front()
                && let Some(&c) = rest.first()
                && (c == b'N' || c == if gss { b'G' } else { b'S' })
            {
                self.pending.pop_front();
                let mut m = self.response(ts, ts, 1, id);
                m.status_code = (c as char).to_string();
                out.push(m);
                pos += 1;
                if c != b'N' {
                    self.opaque = true;
                }
                continue;
            }
            if dir == Dir::ToServer && rest.first() == Some(&0) {
                match untyped_ok(rest) {
                    Cand::No => {
                        self.lose_sync(dir);
                        continue;
                    }
                    Cand::Unknown => return Ok(pos),
                    Cand::Yes => {}
                }
                let len = be32(rest, 0).unwrap_or(8) as usize;
                let Some(msg) = rest.get(..len) else {
                    return Ok(pos);
                };
                self.untyped(first_ts, ts, msg, out);
                // A connection's start was seen: the server side starts here too.
                if self.sides[1].offset == 0 {
                    self.sides[1].synced = true;
                }
                pos += len;
                continue;
            }
            let (Some(&t), Some(len)) = (rest.first(), be32(rest, 1)) else {
                return Ok(pos);
            };
            if !header_ok(dir, t, len, MAX_LEN) {
                self.lose_sync(dir);
                continue;
            }
            let total = 1 + len as usize;
            let need = total.min(5 + body_cap(dir, t));
            let Some(body) = rest.get(5..need) else {
                return Ok(pos);
            };
            let truncated = need < total;
            match dir {
                Dir::ToServer => {
                    self.client_msg(t, body, truncated, total as u64, first_ts, ts, out)
                }
                Dir::ToClient => self.server_msg(t, body, total as u64, first_ts, ts, out),
            }
            let take = total.min(rest.len());
            pos += take;
            self.sides[d].skip = (total - take) as u64;
        }
    }

    fn lose_sync(&mut self, dir: Dir) {
        self.stats.resyncs += 1;
        self.sides[dir as usize].synced = false;
        if dir == Dir::ToServer {
            self.mark_lost();
        }
    }

    fn mark_lost(&mut self) {
        if self.pending.back() != Some(&Pending::Lost) {
            self.push(Pending::Lost);
        }
    }

    fn resync(&self, dir: Dir, b: &[u8], at_start: bool) -> Scan {
        if dir == Dir::ToServer && at_start {
            match untyped_ok(b) {
                Cand::Yes => return Scan::Found(0),
                Cand::Unknown => return Scan::Wait(0),
                Cand::No => {}
            }
        }
        for i in 0..b.len() {
            let rest = b.get(i..).unwrap_or_default();
            match candidate(dir, rest) {
                Cand::Yes => return Scan::Found(i),
                Cand::No => {}
                // A long message: believe it if what is there looks right.
                Cand::Unknown if rest.len() >= RESYNC_WINDOW => {
                    if long_prefix_ok(dir, rest) {
                        return Scan::Found(i);
                    }
                }
                Cand::Unknown => return Scan::Wait(i),
            }
        }
        Scan::Wait(b.len())
    }

    /// Reports that `len` bytes of `dir` were never captured.
    pub fn gap(&mut self, dir: Dir, len: u64, _out: &mut Vec<Message>) -> Result<(), ParseError> {
        let side = &mut self.sides[dir as usize];
        side.offset += len;
        side.partial_ts = None;
        if self.opaque {
            return Ok(());
        }
        if side.skip >= len && side.synced {
            // The hole is inside a message being skipped.
            side.skip -= len;
            return Ok(());
        }
        side.skip = 0;
        self.lose_sync(dir);
        Ok(())
    }

    /// The flow ended. A simple query or startup whose answer began but
    /// never reached `ReadyForQuery` (capture cut short) is reported with
    /// what was seen; other requests still waiting are left to the host.
    pub fn close(&mut self, ts: u64, out: &mut Vec<Message>) {
        if let Some(Pending::Query { id } | Pending::Startup { id }) = self.pending.front().copied()
            && let Some(start) = self.resp.start_ns
        {
            let m = self.response(start, ts, 0, id);
            out.push(m);
        }
        self.pending.clear();
    }

    fn push(&mut self, p: Pending) {
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back(p);
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn request(&mut self, start: u64, end: u64, size: u64, op: &str) -> (u64, Message) {
        let id = self.id();
        let (start, size) = match self.req.start_ns.take() {
            Some(s) => (s, size + std::mem::take(&mut self.req.size)),
            None => (start, size),
        };
        self.req.size = 0;
        let m = Message {
            kind: Kind::Request,
            id,
            start_ns: start,
            end_ns: end,
            size,
            operation: op.to_string(),
            database: self.database.clone(),
            user: self.user.clone(),
            ..Message::default()
        };
        (id, m)
    }

    fn response(&mut self, start: u64, end: u64, size: u64, id: u64) -> Message {
        let acc = std::mem::take(&mut self.resp);
        let (start, size) = match acc.start_ns {
            Some(s) => (s, acc.size),
            None => (start, size),
        };
        self.resp.batch_failed = acc.batch_failed;
        let returned = acc
            .returned
            .or(if acc.data_rows > 0 && acc.affected.is_none() {
                Some(acc.data_rows)
            } else {
                None
            });
        Message {
            kind: Kind::Response,
            id,
            start_ns: start,
            end_ns: end,
            size,
            error: acc.error.is_some(),
            status_code: acc.error.unwrap_or_default(),
            returned_rows: returned,
            affected_rows: acc.affected,
            ..Message::default()
        }
    }

    fn query_text(&self, sql: &[u8]) -> String {
        let sql = cstr_lossy(sql);
        if self.opts.raw_query_text {
            lossy(sql)
        } else {
            sanitize(sql)
        }
    }

    /// StartupMessage, SSLRequest, GSSENCRequest, CancelRequest.
    fn untyped(&mut self, start: u64, ts: u64, msg: &[u8], out: &mut Vec<Message>) {
        let size = msg.len() as u64;
        match be32(msg, 4).unwrap_or(0) {
            SSL_REQUEST | GSSENC_REQUEST => {
                let gss = be32(msg, 4) == Some(GSSENC_REQUEST);
                let op = if gss { "GSSENC_REQUEST" } else { "SSL_REQUEST" };
                let (id, m) = self.request(start, ts, size, op);
                out.push(m);
                self.push(Pending::Encrypt { id, gss });
            }
            CANCEL_REQUEST => {
                let (_, mut m) = self.request(start, ts, size, "CANCEL");
                m.kind = Kind::OneWay;
                out.push(m);
            }
            code => {
                let mut params = msg.get(8..).unwrap_or_default();
                while let Some((k, r)) = cstr(params) {
                    if k.is_empty() {
                        break;
                    }
                    let Some((v, r)) = cstr(r) else { break };
                    match k {
                        b"user" => self.user = Some(lossy(v)),
                        b"database" => self.database = Some(lossy(v)),
                        _ => {}
                    }
                    params = r;
                }
                if self.database.is_none() {
                    self.database.clone_from(&self.user);
                }
                let _ = code;
                let (id, m) = self.request(start, ts, size, "STARTUP");
                out.push(m);
                self.push(Pending::Startup { id });
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn client_msg(
        &mut self,
        t: u8,
        body: &[u8],
        truncated: bool,
        size: u64,
        start: u64,
        ts: u64,
        out: &mut Vec<Message>,
    ) {
        match t {
            b'Q' => {
                let sql = cstr_lossy(body);
                let op = operation(sql);
                let text = self.query_text(sql);
                let (id, mut m) = self.request(start, ts, size, op);
                m.query = Some(text);
                m.query_truncated = truncated;
                out.push(m);
                self.push(Pending::Query { id });
            }
            b'F' => {
                let (id, m) = self.request(start, ts, size, "FUNCTION_CALL");
                out.push(m);
                self.push(Pending::Query { id });
            }
            b'P' => {
                self.acc_req(start, size);
                let Some((name, rest)) = cstr(body) else {
                    return;
                };
                let sql = cstr_lossy(rest);
                let stmt = Stmt {
                    op: operation(sql),
                    text: self.query_text(sql),
                    truncated,
                };
                if self.statements.len() >= MAX_STATEMENTS && !self.statements.contains_key(name) {
                    self.statements.pop_first();
                }
                self.statements.insert(name.to_vec(), stmt);
            }
            b'B' => {
                self.acc_req(start, size);
                let Some((portal, rest)) = cstr(body) else {
                    return;
                };
                let stmt_name = cstr_lossy(rest);
                let stmt = self.statements.get(stmt_name).cloned();
                if self.portals.len() >= MAX_PORTALS && !self.portals.contains_key(portal) {
                    self.portals.pop_first();
                }
                self.portals.insert(portal.to_vec(), stmt);
            }
            b'E' => {
                let portal = cstr_lossy(body);
                let stmt = self.portals.get(portal).cloned().flatten();
                let op = stmt.as_ref().map_or("EXECUTE", |s| s.op);
                let (id, mut m) = self.request(start, ts, size, op);
                if let Some(s) = stmt {
                    m.query = Some(s.text);
                    m.query_truncated = s.truncated;
                }
                out.push(m);
                self.push(Pending::Execute { id });
            }
            b'C' => {
                self.acc_req(start, size);
                if let Some((&kind, rest)) = body.split_first() {
                    let name = cstr_lossy(rest);
                    match kind {
                        b'S' => {
                            self.statements.remove(name);
                        }
                        b'P' => {
                            self.portals.remove(name);
                        }
                        _ => {}
                    }
                }
            }
            b'S' => {
                self.push(Pending::Sync);
                // A Sync's bytes start no request.
            }
            _ => {
                // Describe, Flush: part of the next request. Terminate,
                // password/SASL and COPY data: nothing to report.
                if matches!(t, b'D' | b'H') {
                    self.acc_req(start, size);
                }
            }
        }
    }

    fn acc_req(&mut self, start: u64, size: u64) {
        self.req.start_ns.get_or_insert(start);
        self.req.size += size;
    }

    fn server_msg(
        &mut self,
        t: u8,
        body: &[u8],
        size: u64,
        start: u64,
        ts: u64,
        out: &mut Vec<Message>,
    ) {
        // Asynchronous messages belong to no exchange.
        if matches!(t, b'N' | b'A')
            || (t == b'S' && !matches!(self.pending.front(), Some(Pending::Startup { .. })))
        {
            return;
        }
        let Some(&head) = self.pending.front() else {
            if matches!(t, b'C' | b'E' | b'I' | b's') {
                self.stats.unmatched += 1;
            }
            self.resp = Acc::default();
            return;
        };
        self.resp.start_ns.get_or_insert(start);
        self.resp.size += size;
        match t {
            b'C' => {
                let tag = cstr_lossy(body);
                let copy_out = self.resp.copy_out;
                add_rows(&mut self.resp, tag, copy_out);
            }
            b'D' => self.resp.data_rows += 1,
            b'H' => self.resp.copy_out = true,
            b'E' => {
                let code = sqlstate(body);
                self.resp.error.get_or_insert(code);
            }
            _ => {}
        }
        match head {
            Pending::Lost => {
                if t == b'Z' {
                    self.pending.pop_front();
                    self.resp = Acc::default();
                }
            }
            Pending::Encrypt { .. } => {
                // Not the one-byte answer: an old server's error. Give up on it.
                self.pending.pop_front();
                self.resp = Acc::default();
            }
            Pending::Startup { id } => {
                if matches!(t, b'Z' | b'E') {
                    self.pending.pop_front();
                    let m = self.response(start, ts, size, id);
                    out.push(m);
                }
            }
            Pending::Query { id } => {
                if t == b'Z' {
                    self.pending.pop_front();
                    let m = self.response(start, ts, size, id);
                    out.push(m);
                    self.resp.batch_failed = false;
                }
            }
            Pending::Execute { .. } | Pending::Sync => match t {
                b'C' | b'I' | b's' | b'E' => {
                    let exec = self
                        .pending
                        .iter()
                        .take_while(|p| **p != Pending::Sync)
                        .position(|p| matches!(p, Pending::Execute { .. }));
                    match exec.and_then(|i| self.pending.remove(i)) {
                        Some(Pending::Execute { id }) => {
                            let failed = t == b'E';
                            let m = self.response(start, ts, size, id);
                            out.push(m);
                            if failed {
                                self.resp.batch_failed = true;
                            }
                        }
                        _ => {
                            if t == b'E' {
                                self.resp.batch_failed = true;
                            }
                            self.stats.unmatched += 1;
                            // Keep the bytes counted for the next response,
                            // but not an error that answered no Execute.
                            self.resp.error = None;
                        }
                    }
                }
                b'Z' => {
                    let failed = self.resp.batch_failed;
                    while let Some(&p) = self.pending.front() {
                        match p {
                            Pending::Sync => {
                                self.pending.pop_front();
                                break;
                            }
                            Pending::Execute { id } => {
                                self.pending.pop_front();
                                // Skipped by the server after the batch's error.
                                if failed {
                                    out.push(Message {
                                        kind: Kind::Response,
                                        id,
                                        start_ns: ts,
                                        end_ns: ts,
                                        error: true,
                                        error_kind: Some(ABORTED),
                                        ..Message::default()
                                    });
                                }
                            }
                            _ => break,
                        }
                    }
                    self.resp = Acc::default();
                }
                _ => {}
            },
        }
    }
}

/// The SQLSTATE (field `C`) of an ErrorResponse body.
fn sqlstate(body: &[u8]) -> String {
    let mut rest = body;
    while let Some((&c, r)) = rest.split_first() {
        if c == 0 {
            break;
        }
        let v = cstr_lossy(r);
        if c == b'C' {
            return lossy(v);
        }
        rest = r.get(v.len() + 1..).unwrap_or_default();
    }
    String::new()
}

/// Adds a CommandComplete tag's row count to the response.
fn add_rows(acc: &mut Acc, tag: &[u8], copy_out: bool) {
    let tag = String::from_utf8_lossy(tag);
    let mut words = tag.split(' ');
    let verb = words.next().unwrap_or_default();
    let Some(n) = tag.rsplit(' ').next().and_then(|w| w.parse::<i64>().ok()) else {
        return;
    };
    let slot = match verb {
        "SELECT" | "FETCH" => &mut acc.returned,
        "COPY" if copy_out => &mut acc.returned,
        "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "COPY" => &mut acc.affected,
        _ => return,
    };
    *slot = Some(slot.unwrap_or(0).saturating_add(n));
}

/// SQL keywords reported as operations; anything else is `OTHER`.
const KEYWORDS: &[&str] = &[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "MERGE",
    "WITH",
    "VALUES",
    "TABLE",
    "BEGIN",
    "START",
    "COMMIT",
    "END",
    "ROLLBACK",
    "ABORT",
    "SAVEPOINT",
    "RELEASE",
    "PREPARE",
    "EXECUTE",
    "DEALLOCATE",
    "CREATE",
    "ALTER",
    "DROP",
    "TRUNCATE",
    "COPY",
    "SET",
    "SHOW",
    "RESET",
    "EXPLAIN",
    "ANALYZE",
    "VACUUM",
    "GRANT",
    "REVOKE",
    "LOCK",
    "DECLARE",
    "FETCH",
    "MOVE",
    "CLOSE",
    "LISTEN",
    "NOTIFY",
    "UNLISTEN",
    "DISCARD",
    "CALL",
    "DO",
    "COMMENT",
    "REFRESH",
    "REINDEX",
    "CLUSTER",
    "CHECKPOINT",
    "LOAD",
    "IMPORT",
    "REASSIGN",
    "SECURITY",
];

/// Low-cardinality operation: the SQL's first keyword (after blanks,
/// comments and parentheses), `OTHER` when unknown, `EMPTY` for no SQL.
pub fn operation(sql: &[u8]) -> &'static str {
    let mut i = 0usize;
    loop {
        match (sql.get(i), sql.get(i + 1)) {
            (Some(c), _) if c.is_ascii_whitespace() || *c == b'(' => i += 1,
            (Some(b'-'), Some(b'-')) => {
                while sql.get(i).is_some_and(|&c| c != b'\n') {
                    i += 1;
                }
            }
            (Some(b'/'), Some(b'*')) => {
                i += 2;
                while i < sql.len() && !(sql.get(i) == Some(&b'*') && sql.get(i + 1) == Some(&b'/'))
                {
                    i += 1;
                }
                i += 2;
            }
            _ => break,
        }
    }
    let rest = sql.get(i..).unwrap_or_default();
    let n = rest.iter().take_while(|c| c.is_ascii_alphabetic()).count();
    if n == 0 {
        return if rest.iter().all(|&c| c == b';' || c.is_ascii_whitespace()) {
            "EMPTY"
        } else {
            "OTHER"
        };
    }
    let word = rest.get(..n).unwrap_or_default().to_ascii_uppercase();
    KEYWORDS
        .iter()
        .find(|k| k.as_bytes() == word.as_slice())
        .copied()
        .unwrap_or("OTHER")
}

/// Masks literals (`?`) and removes comments with the SDK's shared masker
/// ([`wasmtap_sdk::mask`], PostgreSQL dialect); the query itself is already
/// bounded by [`MAX_QUERY_BYTES`].
pub fn sanitize(sql: &[u8]) -> String {
    wasmtap_sdk::mask::sql(sql, wasmtap_sdk::mask::Dialect::Postgres, MAX_QUERY_BYTES)
}

/// Confidence (0-100) that `data`, the first bytes of `dir` on a flow, is
/// PostgreSQL: a startup-phase message from the client, or a believable
/// typed message (checked against the next one or its own structure).
pub fn probe(dir: Dir, data: &[u8]) -> u8 {
    if dir == Dir::ToServer && untyped_ok(data) == Cand::Yes {
        return 95;
    }
    if candidate(dir, data) == Cand::Yes {
        70
    } else {
        0
    }
}
