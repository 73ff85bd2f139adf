//! Pure HTTP/1.x parser (RFC 9112): reassembled TCP bytes in, [`Message`]s out.
//!
//! One [`Parser`] per flow holds a state machine for each direction. The host
//! offers bytes with [`Parser::feed`]; `data` is the unconsumed remainder of
//! the previous offer of that direction followed by new bytes. A header block
//! (or a chunk-size line, or a trailer line) is consumed only once complete;
//! body bytes are consumed as they arrive, so the host never buffers a body.
//!
//! * Framing: `Content-Length`, `Transfer-Encoding: chunked` (extensions and
//!   trailers), close-delimited response bodies (finished by
//!   [`Parser::close`]); requests without either have no body.
//! * Responses are matched in order against a bounded queue of the requests
//!   seen (pipelining): responses to `HEAD`, and 1xx/204/304, have no body; a
//!   2xx to `CONNECT` and a `101` start a tunnel, after which both directions
//!   are consumed and ignored. Interim 1xx responses produce no message; their
//!   bytes count into the final response.
//! * A direction's first bytes, and the bytes after a gap that broke framing,
//!   are scanned for something that looks like a start line (a flow may be
//!   captured mid-stream); junk is consumed, up to [`MAX_RESYNC_BYTES`].
//!   Between messages of a synchronised stream a bad start line is an error.
//! * Malformed request lines are still requests when they are text (as in
//!   Zeek): a line of at most [`MAX_LENIENT_LINE`] bytes without control
//!   bytes, followed by a header block, where a message starts (between
//!   messages, or as the very first bytes of the request direction, where it
//!   must also look like a request). Binary bytes, control bytes and
//!   overlong lines stay errors.
//! * HTTP/0.9 simple requests (RFC 1945 §4.1: exactly `GET SP target CRLF`,
//!   the target starting with `/`), where a message starts (between messages,
//!   or as the very first bytes of the request direction): the request is
//!   reported at once (version `0.9`, no headers, no body), and the request
//!   direction is ignored afterwards (an HTTP/0.9 client cannot pipeline).
//!   Its response has no status line and no headers: everything the server
//!   sends until the connection closes is the body, reported by
//!   [`Parser::close`] with no status code. Response bytes that arrived
//!   before the request and were skipped as junk count into that body.
//! * A header block cut short by the end of the capture (its start line
//!   complete) is reported, truncated, by [`Parser::close`]: the parser keeps
//!   a bounded copy of such a remainder, made only while a head is
//!   incomplete at the end of a feed.
//! * After [`Parser::gap`], the next `feed` of that direction must start with
//!   the first byte after the hole (the host drops any remainder it kept).
//!
//! Nothing here panics on input, every buffer is bounded, and the values of
//! `Authorization`, `Cookie` and `Set-Cookie` are never extracted.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;

wasmtap_sdk::stream_parser!(Parser, Dir, Message, ParseError);

#[cfg(test)]
mod tests;

/// Stable, kebab-case reasons carried by [`ParseError`].
pub mod reason {
    /// A request line is malformed where a request must start.
    pub const BAD_REQUEST_LINE: &str = "bad-request-line";
    /// A status line is malformed where a response must start.
    pub const BAD_STATUS_LINE: &str = "bad-status-line";
    /// A header line is malformed (no colon, bad name, fold without field).
    pub const BAD_HEADER: &str = "bad-header";
    /// A header block or trailer section exceeds `Limits::max_header_bytes`.
    pub const HEADER_TOO_LARGE: &str = "header-too-large";
    /// More header (or trailer) lines than `Limits::max_headers`.
    pub const TOO_MANY_HEADERS: &str = "too-many-headers";
    /// A `Content-Length` value is not a decimal number.
    pub const BAD_CONTENT_LENGTH: &str = "bad-content-length";
    /// `Content-Length` values that differ.
    pub const CONFLICTING_CONTENT_LENGTH: &str = "conflicting-content-length";
    /// A request whose `Transfer-Encoding` does not end in `chunked`.
    pub const BAD_TRANSFER_ENCODING: &str = "bad-transfer-encoding";
    /// Malformed chunked framing (size line, chunk terminator).
    pub const BAD_CHUNK: &str = "bad-chunk";
    /// HTTP/2 (prior-knowledge preface) or another major version.
    pub const NOT_HTTP1: &str = "not-http1";
    /// No start line found within [`super::MAX_RESYNC_BYTES`] of junk.
    pub const RESYNC_FAILED: &str = "resync-failed";
}

/// Requests remembered while awaiting their responses; the oldest is
/// forgotten when a new one would exceed this.
pub const MAX_PENDING_REQUESTS: usize = 1024;

/// Bytes of junk skipped while looking for a start line (mid-stream start or
/// after a gap) before the parser gives up with `resync-failed`.
pub const MAX_RESYNC_BYTES: u64 = 64 * 1024;

/// Longest malformed request line (LF included) still taken for a request.
pub const MAX_LENIENT_LINE: usize = 8 * 1024;

/// Bytes of an incomplete start line checked for validity before it is
/// complete (so binary garbage fails fast instead of being buffered).
const EARLY_CHECK_BYTES: usize = 512;

/// Methods recognised mid-line while resynchronising the request direction.
const KNOWN_METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"HEAD ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];

/// Direction of a flow's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Client to server: requests.
    ToServer,
    /// Server to client: responses.
    ToClient,
}

/// Whether a [`Message`] is a request or a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Sent to the server.
    Request,
    /// Sent to the client.
    Response,
}

/// One HTTP message (for responses: one exchange's final response).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Request or response.
    pub kind: Kind,
    /// Timestamp of the feed call that first offered the message's first byte
    /// (for a response after interim 1xx responses: the first interim's).
    pub start_ns: u64,
    /// Timestamp of the feed (or close) call that completed the message; for
    /// a message completed by a gap, the last feed of its direction.
    pub end_ns: u64,
    /// Header block plus body bytes on the wire, chunk framing and trailers
    /// included, plus the bytes of interim 1xx responses before a final
    /// response. Gap bytes inside a `Content-Length` or close-delimited body
    /// are included.
    pub size: u64,
    /// Decoded body length (chunk payloads only). Gap bytes inside a
    /// `Content-Length` or close-delimited body are included.
    pub body_size: u64,
    /// Request method (any RFC 9110 token); `None` for responses.
    pub method: Option<String>,
    /// Request-target path without query (for absolute-form targets only the
    /// path, `/` when empty; `*` kept); `None` for responses and for
    /// authority-form (`CONNECT`) targets.
    pub path: Option<String>,
    /// Query with every value masked (`a=1&b` -> `a=?&b`); `None` when absent
    /// or empty.
    pub query: Option<String>,
    /// Protocol version, e.g. `1.1` (`0.9` for HTTP/0.9 simple requests and
    /// their responses; empty for a malformed request line without one).
    pub version: &'static str,
    /// Final status code; `None` for requests and HTTP/0.9 responses.
    pub status_code: Option<u16>,
    /// Requests: the authority of an absolute-form or authority-form target,
    /// else the first `Host` header.
    pub host: Option<String>,
    /// Requests: the first `User-Agent` header.
    pub user_agent: Option<String>,
    /// The caller's trace context (W3C `traceparent` form) and `tracestate`.
    pub trace: Option<(String, Option<String>)>,
    /// Part of the body was never captured (a gap), or the flow closed before
    /// the body's framing completed.
    pub truncated: bool,
}

/// Why a direction's bytes could not be parsed. The session should end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError {
    /// One of the stable kebab-case strings in [`reason`].
    pub reason: &'static str,
    /// Offset in the direction's stream (bytes consumed plus gap bytes) of
    /// the element that failed.
    pub offset: u64,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at offset {}", self.reason, self.offset)
    }
}

impl std::error::Error for ParseError {}

/// Bounds applied to each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest header block (start line through the blank line), and largest
    /// trailer section. Default 64 KiB.
    pub max_header_bytes: usize,
    /// Most header lines in a block (and trailer lines). Default 256.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 * 1024,
            max_headers: 256,
        }
    }
}

/// What the response framing needs to know about its request.
#[derive(Debug, Clone, Copy, Default)]
struct ReqInfo {
    head: bool,
    connect: bool,
    upgrade: bool,
    /// The upgrade asked for is HTTP/2 (`Upgrade: h2c`).
    h2c: bool,
    /// An HTTP/0.9 simple request: the response is all body, until close.
    simple: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// Inside the trailer section: bytes and lines so far.
    Trailers { bytes: usize, lines: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a header block. `tentative`: found by resynchronisation, so
    /// an invalid block resumes scanning instead of failing. `lenient`: a
    /// request line at the very start of the direction that only the lenient
    /// rules accept (see [`lenient_request`]). `scan_from`: where the search
    /// for the block's end resumes in a re-offered remainder.
    Start {
        tentative: bool,
        lenient: bool,
        scan_from: usize,
    },
    /// Scanning for a start line. `initial`: nothing of the direction has
    /// been consumed yet (HTTP/2, HTTP/0.9 and lenient request lines are
    /// recognised there).
    Resync {
        skipped: u64,
        at_line_start: bool,
        initial: bool,
    },
    /// `Content-Length` body, bytes left.
    Body(u64),
    /// Chunked body.
    Chunked(Chunk),
    /// Response body delimited by the connection's end.
    CloseDelimited,
    /// Everything is consumed and ignored (tunnel, upgrade).
    Ignore,
    /// An error ended the direction; repeated on every later call.
    Failed(ParseError),
}

impl State {
    /// Expecting the next message of a synchronised stream.
    const NEXT: Self = Self::Start {
        tentative: false,
        lenient: false,
        scan_from: 0,
    };
}

#[derive(Debug)]
struct Side {
    state: State,
    /// Message whose body is in progress.
    msg: Option<Message>,
    /// Interim 1xx responses before the final one: (start_ns, bytes).
    interim: Option<(u64, u64)>,
    /// Stream offset of the next offer's first byte.
    offset: u64,
    /// Bytes left unconsumed by the last feed, and when their first byte was
    /// first offered.
    rem_len: usize,
    rem_ts: u64,
    /// Timestamp of the last feed.
    last_ts: u64,
    /// Copy of the incomplete header block left unconsumed by the last feed,
    /// once it holds a complete line (at most `Limits::max_header_bytes`), so
    /// that [`Parser::close`] can report a message cut short by the end of
    /// the capture. Empty otherwise; never touched for complete messages.
    cut_head: Vec<u8>,
    /// Length of that unconsumed remainder already examined for `cut_head`.
    cut_seen: usize,
    /// When the direction's first byte was offered.
    first_ns: Option<u64>,
    /// Everything consumed so far was skipped by resynchronisation: no start
    /// line was parsed and no gap reported.
    junk_only: bool,
}

impl Side {
    fn new() -> Self {
        Self {
            state: State::Resync {
                skipped: 0,
                at_line_start: true,
                initial: true,
            },
            msg: None,
            interim: None,
            offset: 0,
            rem_len: 0,
            rem_ts: 0,
            last_ts: 0,
            cut_head: Vec::new(),
            cut_seen: 0,
            first_ns: None,
            junk_only: true,
        }
    }

    /// Updates `cut_head` after a feed that left `rest` unconsumed.
    /// `reoffered`: when nothing was consumed, the length of the previous
    /// remainder, which the host re-offered at the start of this feed; only
    /// the bytes after it are examined (so a head trickling in byte by byte
    /// costs linear time).
    fn keep_cut_head(&mut self, rest: &[u8], reoffered: Option<usize>, max: usize) {
        if rest.is_empty() || !matches!(self.state, State::Start { .. }) {
            self.forget_cut_head();
            return;
        }
        let reuse = reoffered == Some(self.cut_seen)
            && self.cut_seen <= rest.len()
            && (self.cut_head.is_empty() || self.cut_head.len() == self.cut_seen);
        if !reuse {
            self.forget_cut_head();
        }
        let new = rest.get(self.cut_seen..).unwrap_or_default();
        if !self.cut_head.is_empty() {
            self.cut_head.extend_from_slice(new);
        } else if new.contains(&b'\n') {
            // The examined part had no line end: the first line just completed.
            self.cut_head.extend_from_slice(rest);
        }
        self.cut_head.truncate(max);
        self.cut_seen = rest.len();
    }

    fn forget_cut_head(&mut self) {
        self.cut_head.clear();
        self.cut_seen = 0;
    }

    fn finish(&mut self, out: &mut Vec<Message>, end_ns: u64, truncated: bool) {
        if let Some(mut m) = self.msg.take() {
            m.end_ns = end_ns;
            m.truncated |= truncated;
            out.push(m);
        }
    }

    fn add_body(&mut self, n: u64) {
        if let Some(m) = self.msg.as_mut() {
            m.size = m.size.saturating_add(n);
            m.body_size = m.body_size.saturating_add(n);
        }
    }

    fn add_framing(&mut self, n: usize) {
        if let Some(m) = self.msg.as_mut() {
            m.size = m.size.saturating_add(n as u64);
        }
    }
}

/// When the bytes of the current offer were first offered.
#[derive(Debug, Clone, Copy)]
struct Clock {
    now: u64,
    rem: usize,
    rem_ts: u64,
}

impl Clock {
    fn at(self, pos: usize) -> u64 {
        if pos < self.rem {
            self.rem_ts
        } else {
            self.now
        }
    }
}

/// Outcome of one state-machine step on the bytes from the current position.
enum Step {
    /// Consumed this many bytes (possibly 0 with a state change); continue.
    Advance(usize),
    /// Consumed this many bytes; wait for more data.
    Wait(usize),
}

/// A failure: reason and offset relative to the current position.
type Fail = (&'static str, usize);

/// How a message's body is delimited.
enum Framing {
    NoBody,
    Length(u64),
    Chunked,
    Close,
    Interim,
    Tunnel,
}

/// Per-flow HTTP/1.x parser with a state machine for each direction.
#[derive(Debug)]
pub struct Parser {
    limits: Limits,
    req: Side,
    resp: Side,
    pending: VecDeque<ReqInfo>,
    tunnel: bool,
    /// The tunnel is HTTP/2 after an `Upgrade: h2c` (see [`Parser::h2c`]).
    h2c: bool,
    /// The tunnel is a `CONNECT`'s (see [`Parser::connect_tunnel`]).
    connect: bool,
    closed: bool,
}

impl Parser {
    /// Creates the parser for one flow.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            req: Side::new(),
            resp: Side::new(),
            pending: VecDeque::new(),
            tunnel: false,
            h2c: false,
            connect: false,
            closed: false,
        }
    }

    fn side_mut(&mut self, dir: Dir) -> &mut Side {
        match dir {
            Dir::ToServer => &mut self.req,
            Dir::ToClient => &mut self.resp,
        }
    }

    /// Parses `data` (the unconsumed remainder of `dir`'s previous offer
    /// followed by new bytes, last captured at `ts_ns`), pushes completed
    /// messages to `out` and returns how many bytes were consumed. An error
    /// means the direction is not (or no longer) HTTP/1.x; it is repeated on
    /// later calls.
    pub fn feed(
        &mut self,
        dir: Dir,
        ts_ns: u64,
        data: &[u8],
        out: &mut Vec<Message>,
    ) -> Result<usize, ParseError> {
        let side = self.side_mut(dir);
        if let State::Failed(e) = side.state {
            return Err(e);
        }
        let clock = Clock {
            now: ts_ns,
            rem: side.rem_len.min(data.len()),
            rem_ts: side.rem_ts,
        };
        side.last_ts = ts_ns;
        if side.first_ns.is_none() && !data.is_empty() {
            side.first_ns = Some(clock.at(0));
        }
        let mut pos = 0usize;
        let result = self.run(dir, clock, data, &mut pos, out);
        let max = self.limits.max_header_bytes;
        let side = self.side_mut(dir);
        match result {
            Ok(consumed) => {
                let consumed = consumed.min(data.len());
                let left = data.len() - consumed;
                if left > 0 && consumed >= clock.rem {
                    side.rem_ts = ts_ns;
                }
                let reoffered = (consumed == 0).then_some(clock.rem);
                let rest = data.get(consumed..).unwrap_or_default();
                side.keep_cut_head(rest, reoffered, max);
                side.rem_len = left;
                side.offset = side.offset.saturating_add(consumed as u64);
                Ok(consumed)
            }
            Err((reason, at)) => {
                let offset = side.offset.saturating_add(pos.saturating_add(at) as u64);
                let err = ParseError { reason, offset };
                side.state = State::Failed(err);
                side.msg = None;
                side.interim = None;
                side.forget_cut_head();
                Err(err)
            }
        }
    }

    /// Runs the state machine of `dir` until it needs more data.
    fn run(
        &mut self,
        dir: Dir,
        clock: Clock,
        data: &[u8],
        pos: &mut usize,
        out: &mut Vec<Message>,
    ) -> Result<usize, Fail> {
        loop {
            if self.tunnel || self.closed {
                // After an h2c upgrade, or into a CONNECT tunnel, the rest
                // is left unconsumed for the decoder to look at.
                return Ok(if self.h2c || self.connect {
                    *pos
                } else {
                    data.len()
                });
            }
            let rest = data.get(*pos..).unwrap_or_default();
            if dir == Dir::ToClient
                && !rest.is_empty()
                && self.simple_response(Some((clock.at(*pos), *pos as u64)))
            {
                continue;
            }
            let state = self.side_mut(dir).state;
            let step = match state {
                State::Failed(e) => return Err((e.reason, 0)),
                State::Ignore => return Ok(data.len()),
                State::Resync {
                    skipped,
                    at_line_start,
                    initial,
                } => self.step_resync(dir, rest, skipped, at_line_start, initial)?,
                State::Start {
                    tentative,
                    lenient,
                    scan_from,
                } => {
                    let at = (tentative, lenient, scan_from);
                    self.step_start(dir, rest, *pos, clock, at, out)?
                }
                State::Body(remaining) => self.step_body(dir, rest, remaining, clock, out),
                State::Chunked(chunk) => self.step_chunk(dir, rest, chunk, clock, out)?,
                State::CloseDelimited => {
                    let side = self.side_mut(dir);
                    side.add_body(rest.len() as u64);
                    Step::Wait(rest.len())
                }
            };
            match step {
                Step::Advance(n) => *pos = pos.saturating_add(n).min(data.len()),
                Step::Wait(n) => return Ok(pos.saturating_add(n).min(data.len())),
            }
        }
    }

    fn step_resync(
        &mut self,
        dir: Dir,
        rest: &[u8],
        skipped: u64,
        at_line_start: bool,
        initial: bool,
    ) -> Result<Step, Fail> {
        let max_line = self.limits.max_header_bytes;
        let mut p = 0usize;
        // `Some(c)`: a start line (`Match` or `Lenient`) or a possible one
        // (`NeedMore`) at `p`; `None`: everything offered is junk.
        let found = loop {
            if skipped.saturating_add(p as u64) > MAX_RESYNC_BYTES {
                return Err((reason::RESYNC_FAILED, p));
            }
            if p >= rest.len() {
                break None;
            }
            let line_start = if p == 0 {
                at_line_start
            } else {
                rest.get(p - 1) == Some(&b'\n')
            };
            let here = rest.get(p..).unwrap_or_default();
            match candidate(dir, here, line_start, initial && p == 0, max_line) {
                Cand::NotHttp1 => return Err((reason::NOT_HTTP1, p)),
                Cand::No => p += 1,
                c => break Some(c),
            }
        };
        let skipped = skipped.saturating_add(p as u64);
        let side = self.side_mut(dir);
        match found {
            Some(c @ (Cand::Match | Cand::Lenient)) => {
                side.state = State::Start {
                    tentative: true,
                    lenient: c == Cand::Lenient,
                    scan_from: 0,
                };
                Ok(Step::Advance(p))
            }
            // An HTTP/0.9 request as the very first bytes: a message starts.
            Some(Cand::Simple) => {
                side.state = State::NEXT;
                Ok(Step::Advance(p))
            }
            Some(_) => {
                let line_start = if p == 0 {
                    at_line_start
                } else {
                    rest.get(p - 1) == Some(&b'\n')
                };
                side.state = State::Resync {
                    skipped,
                    at_line_start: line_start,
                    initial: initial && p == 0,
                };
                Ok(Step::Wait(p))
            }
            None => {
                let line_start = match rest.last() {
                    Some(&b) => b == b'\n',
                    None => at_line_start,
                };
                side.state = State::Resync {
                    skipped,
                    at_line_start: line_start,
                    initial: initial && rest.is_empty(),
                };
                Ok(Step::Wait(rest.len()))
            }
        }
    }

    /// A strict start line failed. While an upgrade or `CONNECT` is awaiting
    /// its response the client may already speak the new protocol: ignore the
    /// request direction from here on instead of failing.
    fn strict_failure(&mut self, dir: Dir, reason: &'static str) -> Result<Step, Fail> {
        if dir == Dir::ToServer && self.pending.iter().any(|r| r.upgrade || r.connect) {
            self.req.state = State::Ignore;
            return Ok(Step::Advance(0));
        }
        Err((reason, 0))
    }

    /// Whether a request line of `dir` that fails the strict rules may still
    /// be taken by the lenient ones: only for requests, and not while an
    /// upgrade or `CONNECT` awaits its response (see [`Self::strict_failure`]).
    fn lenient_allowed(&self, dir: Dir) -> bool {
        dir == Dir::ToServer && !self.pending.iter().any(|r| r.upgrade || r.connect)
    }

    /// `(tentative, lenient, scan_from)` are the fields of [`State::Start`].
    fn step_start(
        &mut self,
        dir: Dir,
        rest: &[u8],
        pos: usize,
        clock: Clock,
        (tentative, lenient, scan_from): (bool, bool, usize),
        out: &mut Vec<Message>,
    ) -> Result<Step, Fail> {
        // RFC 9112 §2.2: empty lines before a start line are ignored.
        let skip = rest
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        if skip > 0 {
            self.side_mut(dir).state = State::Start {
                tentative,
                lenient,
                scan_from: 0,
            };
            return Ok(Step::Advance(skip));
        }
        if rest.is_empty() {
            return Ok(Step::Wait(0));
        }
        let max = self.limits.max_header_bytes;
        // Checked first, complete or not, so the outcome does not depend on
        // how the bytes were split into offers. Both checks end at the first
        // line's end: once an earlier offer held it, they passed for good.
        let line_checked = scan_from > 0
            && rest
                .get(..scan_from)
                .is_some_and(|seen| seen.contains(&b'\n'));
        if !tentative
            && !line_checked
            && let Err(r) = early_check(dir, rest, EARLY_CHECK_BYTES.min(max))
            && !(self.lenient_allowed(dir) && lenient_line_possible(rest, max))
        {
            return self.strict_failure(dir, r);
        }
        if !tentative
            && !line_checked
            && self.lenient_allowed(dir)
            && let Some(nl) = find_line_end(rest, scan_from)
            && let Some(target) =
                simple_request_target(strip_cr(rest.get(..nl).unwrap_or_default()))
        {
            let start_ns = clock.at(pos);
            self.simple_request(target, start_ns, clock.now, nl + 1, out);
            return Ok(Step::Advance(nl + 1));
        }
        let Some(end) = find_head_end(rest, scan_from.min(rest.len())) else {
            if rest.len() >= max {
                return self.head_too_large(dir, rest, lenient);
            }
            self.side_mut(dir).state = State::Start {
                tentative,
                lenient,
                scan_from: rest.len().saturating_sub(2),
            };
            return Ok(Step::Wait(0));
        };
        if end > max {
            return self.head_too_large(dir, rest, lenient);
        }
        let block = rest.get(..end).unwrap_or_default();
        let req = self.pending.front().copied().unwrap_or_default();
        let mut parsed = parse_head(block, dir, &self.limits);
        if matches!(parsed, Err(reason::BAD_REQUEST_LINE))
            && (lenient || !tentative && self.lenient_allowed(dir))
        {
            parsed = lenient_request(block, &self.limits, lenient);
        }
        let parsed = parsed.and_then(|head| framing(&head, req).map(|f| (head, f)));
        let (head, framing) = match parsed {
            Ok(v) => v,
            Err(r)
                if tentative
                    && (lenient
                        || matches!(
                            r,
                            reason::BAD_HEADER | reason::BAD_REQUEST_LINE | reason::BAD_STATUS_LINE
                        )) =>
            {
                return Ok(self.false_start(dir, rest));
            }
            Err(r) => return self.strict_failure(dir, r),
        };
        let start_ns = clock.at(pos);
        self.side_mut(dir).junk_only = false;
        let (mut msg, info) = head_message(head, start_ns, clock.now, end as u64);
        if let Some(info) = info {
            if self.pending.len() >= MAX_PENDING_REQUESTS {
                self.pending.pop_front();
            }
            self.pending.push_back(info);
        } else {
            if matches!(framing, Framing::Interim) {
                let side = self.side_mut(dir);
                let (s, b) = side.interim.unwrap_or((start_ns, 0));
                side.interim = Some((s, b.saturating_add(end as u64)));
                side.state = State::NEXT;
                return Ok(Step::Advance(end));
            }
            self.pending.pop_front();
            if let Some((s, b)) = self.side_mut(dir).interim.take() {
                msg.start_ns = s;
                msg.size = msg.size.saturating_add(b);
            }
        }
        if matches!(framing, Framing::Tunnel) {
            if dir == Dir::ToClient && req.h2c && msg.status_code == Some(101) {
                // HTTP/2 takes over: the 101 only switches protocols, the
                // upgrade request's answer comes on stream 1.
                self.h2c = true;
            } else {
                // A CONNECT tunnel may carry HTTP/2 (the decoder looks at
                // its first bytes); anything else in it is opaque.
                self.connect = req.connect;
                out.push(msg);
            }
            self.start_tunnel(out);
            return Ok(Step::Advance(end));
        }
        let side = self.side_mut(dir);
        side.state = match framing {
            Framing::NoBody | Framing::Interim | Framing::Tunnel => {
                out.push(msg);
                State::NEXT
            }
            Framing::Length(n) => {
                side.msg = Some(msg);
                State::Body(n)
            }
            Framing::Chunked => {
                side.msg = Some(msg);
                State::Chunked(Chunk::Size)
            }
            Framing::Close => {
                side.msg = Some(msg);
                State::CloseDelimited
            }
        };
        Ok(Step::Advance(end))
    }

    /// Reports the HTTP/0.9 simple request `GET target` (`len` bytes, line
    /// ending included), queues it, and ignores the request direction from
    /// here on (the server closes the connection after the response).
    fn simple_request(
        &mut self,
        target: &[u8],
        start_ns: u64,
        end_ns: u64,
        len: usize,
        out: &mut Vec<Message>,
    ) {
        let head = Head {
            line: StartLine::Request {
                method: b"GET",
                target,
            },
            version: "0.9",
            content_length: Ok(None),
            chunked: None,
            host: None,
            user_agent: None,
            upgrade: false,
            h2c: false,
            trace: None,
            lines: 0,
            lenient: false,
        };
        let (msg, info) = head_message(head, start_ns, end_ns, len as u64);
        out.push(msg);
        if self.pending.len() >= MAX_PENDING_REQUESTS {
            self.pending.pop_front();
        }
        self.pending.push_back(ReqInfo {
            simple: true,
            ..info.unwrap_or_default()
        });
        self.req.junk_only = false;
        self.req.state = State::Ignore;
        // The response may have arrived first (and been skipped as junk).
        self.simple_response(None);
    }

    /// When the oldest pending request is an HTTP/0.9 one and the response
    /// direction awaits a response, starts its response: no status line, no
    /// headers, a body delimited by the connection's end. Returns whether it
    /// did. If everything the response direction consumed so far was skipped
    /// as junk (it arrived before the request), that is the body's start.
    /// `now`: called from a feed of the response direction with bytes
    /// offered, the first one's timestamp and the bytes consumed so far in
    /// that feed; `None` elsewhere (then it only starts if bytes were seen).
    fn simple_response(&mut self, now: Option<(u64, u64)>) -> bool {
        if !self.pending.front().is_some_and(|r| r.simple) {
            return false;
        }
        let side = &mut self.resp;
        if !matches!(side.state, State::Resync { .. } | State::Start { .. }) {
            return false;
        }
        let consumed = side.offset.saturating_add(now.map_or(0, |(_, c)| c));
        let junk = if side.junk_only { consumed } else { 0 };
        let start_ns = if junk > 0 {
            side.first_ns
        } else if let Some((at, _)) = now {
            Some(at)
        } else {
            // Bytes offered but left unconsumed (re-offered later).
            (side.rem_len > 0).then_some(side.rem_ts)
        };
        let Some(start_ns) = start_ns else {
            return false;
        };
        self.pending.pop_front();
        side.msg = Some(Message {
            kind: Kind::Response,
            start_ns,
            end_ns: start_ns,
            size: junk,
            body_size: junk,
            method: None,
            path: None,
            query: None,
            version: "0.9",
            status_code: None,
            host: None,
            user_agent: None,
            trace: None,
            truncated: false,
        });
        side.interim = None;
        side.junk_only = false;
        side.forget_cut_head();
        side.state = State::CloseDelimited;
        true
    }

    /// A tentative start line (found by resynchronisation) was not followed
    /// by a valid header block: skip the line and keep scanning.
    fn false_start(&mut self, dir: Dir, rest: &[u8]) -> Step {
        let line = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        self.side_mut(dir).state = State::Resync {
            skipped: line as u64,
            at_line_start: true,
            initial: false,
        };
        Step::Advance(line)
    }

    /// The header block exceeds `Limits::max_header_bytes`. A leniently
    /// accepted line at the start of the direction was a false start; any
    /// other is an error.
    fn head_too_large(&mut self, dir: Dir, rest: &[u8], lenient: bool) -> Result<Step, Fail> {
        if lenient {
            Ok(self.false_start(dir, rest))
        } else {
            Err((reason::HEADER_TOO_LARGE, 0))
        }
    }

    /// At close: reports the message whose header block the capture cut
    /// short (see [`Side::cut_head`]) if its start line and complete header
    /// lines are valid. Interim 1xx responses are not reported.
    fn report_cut_head(&mut self, dir: Dir, ts_ns: u64, out: &mut Vec<Message>) {
        let limits = self.limits;
        let side = self.side_mut(dir);
        if !matches!(side.state, State::Start { .. }) {
            return;
        }
        let seen = std::mem::take(&mut side.cut_head);
        side.cut_seen = 0;
        let start_ns = side.rem_ts;
        let Some(nl) = seen.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        // Complete lines only; the blank line that would end them is missing.
        let Ok(head) = parse_head(seen.get(..=nl).unwrap_or_default(), dir, &limits) else {
            return;
        };
        if matches!(head.line, StartLine::Status(code) if code < 200 && code != 101) {
            return;
        }
        let (mut msg, info) = head_message(head, start_ns, ts_ns, seen.len() as u64);
        msg.truncated = true;
        if info.is_none() {
            self.pending.pop_front();
            if let Some((s, b)) = self.resp.interim.take() {
                msg.start_ns = s;
                msg.size = msg.size.saturating_add(b);
            }
        }
        out.push(msg);
    }

    /// Whether the connection was upgraded to HTTP/2 (`Upgrade: h2c`, then
    /// `101`): `feed` then leaves every byte after the switch unconsumed,
    /// for an HTTP/2 decoder to take.
    pub fn h2c(&self) -> bool {
        self.h2c
    }

    /// Whether a `CONNECT` tunnel was opened: `feed` then leaves every byte
    /// inside it unconsumed (HTTP/2 with prior knowledge, or opaque).
    pub fn connect_tunnel(&self) -> bool {
        self.tunnel && self.connect
    }

    /// 101 or a 2xx to CONNECT: the connection stops being HTTP/1.x.
    fn start_tunnel(&mut self, out: &mut Vec<Message>) {
        self.tunnel = true;
        for side in [&mut self.req, &mut self.resp] {
            let end = side.last_ts;
            side.finish(out, end, true);
            side.interim = None;
            side.state = State::Ignore;
        }
    }

    fn step_body(
        &mut self,
        dir: Dir,
        rest: &[u8],
        remaining: u64,
        clock: Clock,
        out: &mut Vec<Message>,
    ) -> Step {
        let take = remaining.min(rest.len() as u64);
        let side = self.side_mut(dir);
        side.add_body(take);
        let left = remaining - take;
        // `take` <= rest.len(), so it fits in usize.
        let n = usize::try_from(take).unwrap_or(rest.len());
        if left == 0 {
            side.finish(out, clock.now, false);
            side.state = State::NEXT;
            Step::Advance(n)
        } else {
            side.state = State::Body(left);
            Step::Wait(n)
        }
    }

    fn step_chunk(
        &mut self,
        dir: Dir,
        rest: &[u8],
        chunk: Chunk,
        clock: Clock,
        out: &mut Vec<Message>,
    ) -> Result<Step, Fail> {
        let limits = self.limits;
        let side = self.side_mut(dir);
        match chunk {
            Chunk::Size => {
                let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                    if rest.len() >= limits.max_header_bytes {
                        return Err((reason::BAD_CHUNK, 0));
                    }
                    return Ok(Step::Wait(0));
                };
                if nl >= limits.max_header_bytes {
                    return Err((reason::BAD_CHUNK, 0));
                }
                let line = strip_cr(rest.get(..nl).unwrap_or_default());
                let size = parse_chunk_size(line).ok_or((reason::BAD_CHUNK, 0))?;
                side.add_framing(nl + 1);
                side.state = State::Chunked(if size == 0 {
                    Chunk::Trailers { bytes: 0, lines: 0 }
                } else {
                    Chunk::Data(size)
                });
                Ok(Step::Advance(nl + 1))
            }
            Chunk::Data(remaining) => {
                let take = remaining.min(rest.len() as u64);
                side.add_body(take);
                let left = remaining - take;
                let n = usize::try_from(take).unwrap_or(rest.len());
                if left == 0 {
                    side.state = State::Chunked(Chunk::DataEnd);
                    Ok(Step::Advance(n))
                } else {
                    side.state = State::Chunked(Chunk::Data(left));
                    Ok(Step::Wait(n))
                }
            }
            Chunk::DataEnd => {
                let n = match (rest.first(), rest.get(1)) {
                    (None, _) | (Some(b'\r'), None) => return Ok(Step::Wait(0)),
                    (Some(b'\n'), _) => 1,
                    (Some(b'\r'), Some(b'\n')) => 2,
                    _ => return Err((reason::BAD_CHUNK, 0)),
                };
                side.add_framing(n);
                side.state = State::Chunked(Chunk::Size);
                Ok(Step::Advance(n))
            }
            Chunk::Trailers { bytes, lines } => {
                let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                    if bytes.saturating_add(rest.len()) >= limits.max_header_bytes {
                        return Err((reason::HEADER_TOO_LARGE, 0));
                    }
                    return Ok(Step::Wait(0));
                };
                let bytes = bytes.saturating_add(nl + 1);
                if bytes > limits.max_header_bytes {
                    return Err((reason::HEADER_TOO_LARGE, 0));
                }
                side.add_framing(nl + 1);
                if strip_cr(rest.get(..nl).unwrap_or_default()).is_empty() {
                    side.finish(out, clock.now, false);
                    side.state = State::NEXT;
                } else {
                    let lines = lines + 1;
                    if lines > limits.max_headers {
                        return Err((reason::TOO_MANY_HEADERS, 0));
                    }
                    side.state = State::Chunked(Chunk::Trailers { bytes, lines });
                }
                Ok(Step::Advance(nl + 1))
            }
        }
    }

    /// Reports that `len` bytes of `dir`'s stream were never captured. Inside
    /// a `Content-Length` body shorter than the rest, the body shrinks and the
    /// message is marked truncated; inside a close-delimited body the body
    /// just continues (truncated). Anywhere else the message in progress is
    /// finished (truncated) and the direction resynchronises on the next
    /// start line. Only repeats an earlier error; never fails by itself.
    pub fn gap(&mut self, dir: Dir, len: u64, out: &mut Vec<Message>) -> Result<(), ParseError> {
        if self.tunnel || self.closed {
            return Ok(());
        }
        if dir == Dir::ToClient && len > 0 {
            // The hole may start an HTTP/0.9 response.
            let at = if self.resp.rem_len > 0 {
                self.resp.rem_ts
            } else {
                self.resp.last_ts.max(self.req.last_ts)
            };
            self.simple_response(Some((at, 0)));
        }
        let side = self.side_mut(dir);
        side.offset = side.offset.saturating_add(len);
        // The host drops the remainder it kept: in a close-delimited body
        // (only an HTTP/0.9 response started while bytes were left) those
        // bytes were body too.
        let dropped = std::mem::take(&mut side.rem_len) as u64;
        if side.state == State::CloseDelimited {
            side.add_body(dropped);
        }
        side.forget_cut_head();
        if len == 0 {
            return Ok(());
        }
        side.junk_only = false;
        let resync = State::Resync {
            skipped: 0,
            at_line_start: true,
            initial: false,
        };
        let end = side.last_ts;
        match side.state {
            State::Failed(e) => return Err(e),
            State::Ignore => {}
            State::Start { .. } => {
                side.interim = None;
                side.state = resync;
            }
            State::Resync { skipped, .. } => {
                side.state = State::Resync {
                    skipped,
                    at_line_start: true,
                    initial: false,
                };
            }
            State::Body(remaining) => {
                if let Some(m) = side.msg.as_mut() {
                    m.truncated = true;
                }
                if len < remaining {
                    side.add_body(len);
                    side.state = State::Body(remaining - len);
                } else {
                    side.add_body(remaining);
                    side.finish(out, end, true);
                    side.state = resync;
                }
            }
            State::Chunked(_) => {
                side.finish(out, end, true);
                side.state = resync;
            }
            State::CloseDelimited => {
                if let Some(m) = side.msg.as_mut() {
                    m.truncated = true;
                }
                side.add_body(len);
            }
        }
        Ok(())
    }

    /// The flow ended at `ts_ns`: pushes the close-delimited response in
    /// progress, any other message whose body had started but not finished,
    /// and any message whose header block was cut short after at least its
    /// start line (the last remainder left unconsumed; reported when its
    /// start line and complete header lines are valid, with a body size of
    /// 0). All but the close-delimited response are marked truncated; for
    /// each direction, requests first. Later calls consume and ignore.
    pub fn close(&mut self, ts_ns: u64, out: &mut Vec<Message>) {
        if self.closed {
            return;
        }
        self.closed = true;
        for dir in [Dir::ToServer, Dir::ToClient] {
            self.report_cut_head(dir, ts_ns, out);
            let side = self.side_mut(dir);
            let truncated = side.state != State::CloseDelimited;
            if !truncated {
                // Left unconsumed only by an HTTP/0.9 response started from
                // the request direction; never re-offered now.
                side.add_body(side.rem_len as u64);
                side.rem_len = 0;
            }
            side.finish(out, ts_ns, truncated);
            side.interim = None;
            side.forget_cut_head();
            if !matches!(side.state, State::Failed(_)) {
                side.state = State::Ignore;
            }
        }
    }
}

/// Finds the end (exclusive, after the blank line) of a header block,
/// resuming the search at `from`. Lines end in LF, optionally preceded by CR.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(off) = buf
        .get(i..)
        .and_then(|t| t.iter().position(|&b| b == b'\n'))
    {
        let nl = i + off;
        match (buf.get(nl + 1), buf.get(nl + 2)) {
            (Some(b'\n'), _) => return Some(nl + 2),
            (Some(b'\r'), Some(b'\n')) => return Some(nl + 3),
            _ => i = nl + 1,
        }
    }
    None
}

/// Finds the LF ending the first line, resuming the search at `from` (the
/// bytes before it hold none).
fn find_line_end(buf: &[u8], from: usize) -> Option<usize> {
    let from = from.min(buf.len());
    let off = buf.get(from..)?.iter().position(|&b| b == b'\n')?;
    Some(from + off)
}

/// Validates the available prefix of an incomplete start line.
fn early_check(dir: Dir, buf: &[u8], budget: usize) -> Result<(), &'static str> {
    match dir {
        Dir::ToServer => match walk_request_line(buf, budget) {
            Walk::Invalid => Err(reason::BAD_REQUEST_LINE),
            Walk::Line(_) | Walk::Partial => Ok(()),
        },
        Dir::ToClient => match status_prefix(buf.get(..budget).unwrap_or(buf), false) {
            Cand::No => Err(reason::BAD_STATUS_LINE),
            _ => Ok(()),
        },
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `tchar` (RFC 9110 §5.6.2) as a table: one load per byte on the hot path.
const TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        i += 1;
    }
    t
};

fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// Request-target bytes: visible ASCII and obs-text (raw UTF-8 is tolerated).
fn is_target_char(b: u8) -> bool {
    b > b' ' && b != 0x7f
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cand {
    Match,
    /// An HTTP/0.9 simple request (see [`simple_request_target`]).
    Simple,
    /// A request line only the lenient rules accept (see [`lenient_request`]).
    Lenient,
    NeedMore,
    No,
    NotHttp1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// A complete line; index of its LF.
    Line(usize),
    /// Valid so far (or the budget ran out).
    Partial,
    Invalid,
}

/// Walks a request line (`token SP target SP HTTP/d.d CRLF`, or the
/// HTTP/0.9 shape `token SP target CRLF`) over at most `budget` bytes,
/// stopping at the first byte that cannot belong to one.
fn walk_request_line(buf: &[u8], budget: usize) -> Walk {
    const VERSION: &[u8] = b"HTTP/";
    let mut phase = 0u8;
    let mut n = 0usize;
    for (i, &b) in buf.iter().enumerate().take(budget) {
        match phase {
            0 => match b {
                b' ' if n > 0 => (phase, n) = (1, 0),
                _ if is_tchar(b) => n += 1,
                _ => return Walk::Invalid,
            },
            1 => match b {
                b' ' if n > 0 => (phase, n) = (2, 0),
                b'\r' if n > 0 => phase = 3,
                b'\n' if n > 0 => return Walk::Line(i),
                _ if is_target_char(b) => n += 1,
                _ => return Walk::Invalid,
            },
            2 => {
                let ok = match n {
                    0..=4 => VERSION.get(n) == Some(&b),
                    5 | 7 => b.is_ascii_digit(),
                    6 => b == b'.',
                    _ => match b {
                        b'\r' => {
                            phase = 3;
                            continue;
                        }
                        b'\n' => return Walk::Line(i),
                        _ => false,
                    },
                };
                if !ok {
                    return Walk::Invalid;
                }
                n += 1;
            }
            _ => {
                return if b == b'\n' {
                    Walk::Line(i)
                } else {
                    Walk::Invalid
                };
            }
        }
    }
    Walk::Partial
}

/// Matches the first 13 bytes of a status line (`HTTP/d.d ddd` then SP, CR
/// or LF); `major_one` requires `HTTP/1.`.
fn status_prefix(buf: &[u8], major_one: bool) -> Cand {
    for (i, &b) in buf.iter().enumerate().take(13) {
        let ok = match i {
            0..=4 => b"HTTP/".get(i) == Some(&b),
            5 => {
                if major_one {
                    b == b'1'
                } else {
                    b.is_ascii_digit()
                }
            }
            6 => b == b'.',
            7 | 9..=11 => b.is_ascii_digit(),
            8 => b == b' ',
            _ => matches!(b, b' ' | b'\r' | b'\n'),
        };
        if !ok {
            return Cand::No;
        }
    }
    if buf.len() >= 13 {
        Cand::Match
    } else {
        Cand::NeedMore
    }
}

/// Whether the start line at `buf` is where resynchronisation should stop.
fn candidate(dir: Dir, buf: &[u8], line_start: bool, initial: bool, max_line: usize) -> Cand {
    let Some(&first) = buf.first() else {
        return Cand::NeedMore;
    };
    match dir {
        Dir::ToClient => {
            if first == b'H' {
                status_prefix(buf, true)
            } else {
                Cand::No
            }
        }
        Dir::ToServer => {
            let strict = request_candidate(buf, first, line_start, initial, max_line);
            if strict != Cand::No || !initial {
                return strict;
            }
            // The very first bytes of the direction: a malformed but textual
            // request line may still start a request, unless resynchronising
            // would find a valid one later in the line (`...x=2POST / HTTP/1.1`).
            match walk_text_line(buf, lenient_line_budget(max_line)) {
                Walk::Invalid => Cand::No,
                Walk::Partial => Cand::NeedMore,
                Walk::Line(nl) => {
                    let line = strip_cr(buf.get(..nl).unwrap_or_default());
                    let inside = (1..nl).any(|q| {
                        let here = buf.get(q..).unwrap_or_default();
                        here.first().is_some_and(|&b| {
                            request_candidate(here, b, false, false, max_line) == Cand::Match
                        })
                    });
                    if flow_start_line(line) && !inside {
                        Cand::Lenient
                    } else {
                        Cand::No
                    }
                }
            }
        }
    }
}

/// [`candidate`] for a strictly valid request line.
fn request_candidate(buf: &[u8], first: u8, line_start: bool, initial: bool, max: usize) -> Cand {
    let known = || {
        KNOWN_METHODS.iter().any(|m| {
            let n = m.len().min(buf.len());
            buf.get(..n) == m.get(..n)
        })
    };
    if !(known() || line_start && is_tchar(first)) {
        return Cand::No;
    }
    match walk_request_line(buf, max) {
        Walk::Invalid => Cand::No,
        Walk::Partial => {
            if buf.len() >= max {
                Cand::No
            } else {
                Cand::NeedMore
            }
        }
        Walk::Line(nl) => {
            let line = strip_cr(buf.get(..nl).unwrap_or_default());
            if initial && simple_request_target(line).is_some() {
                return Cand::Simple;
            }
            match parse_request_line(line) {
                Ok(_) => Cand::Match,
                Err(reason::NOT_HTTP1) if initial => Cand::NotHttp1,
                Err(_) => Cand::No,
            }
        }
    }
}

/// Longest method-like first word of a lenient line at the start of a
/// direction.
const MAX_LENIENT_METHOD: usize = 32;

fn lenient_line_budget(max_header_bytes: usize) -> usize {
    MAX_LENIENT_LINE.min(max_header_bytes)
}

/// Walks a textual line: no NUL and no byte below 0x20 but HTAB (bytes from
/// 0x80 are allowed), CR only right before the LF, and the LF within the
/// first `budget` bytes.
fn walk_text_line(buf: &[u8], budget: usize) -> Walk {
    for (i, &b) in buf.iter().enumerate() {
        if i >= budget {
            return Walk::Invalid;
        }
        match b {
            b'\n' => return Walk::Line(i),
            // A CR not followed by the LF (the last byte offered may be one).
            b'\r' if buf.get(i + 1).is_some_and(|&n| n != b'\n') => return Walk::Invalid,
            b'\r' | b'\t' => {}
            _ if b < 0x20 => return Walk::Invalid,
            _ => {}
        }
    }
    if buf.len() >= budget {
        Walk::Invalid
    } else {
        Walk::Partial
    }
}

/// Whether the (possibly incomplete) start line at `buf` may still turn out
/// to be a lenient request line.
fn lenient_line_possible(buf: &[u8], max_header_bytes: usize) -> bool {
    !buf.starts_with(b"HTTP/")
        && walk_text_line(buf, lenient_line_budget(max_header_bytes)) != Walk::Invalid
}

/// The words of a lenient request line (separated by runs of SP or HTAB).
fn words(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|&b| b == b' ' || b == b'\t')
        .filter(|w| !w.is_empty())
}

/// Whether `b` mentions HTTP/1 (`GET /HTTP/1.1`, `OPTIONSHTTP/1.1`).
fn names_http1(b: &[u8]) -> bool {
    b.windows(6).any(|w| w == b"HTTP/1")
}

/// Looks like a method: 1 to [`MAX_LENIENT_METHOD`] letters, digits, `_`
/// or `-`, starting with a letter (so not a multipart boundary).
fn is_methodish(w: &[u8]) -> bool {
    (1..=MAX_LENIENT_METHOD).contains(&w.len())
        && w.first().is_some_and(u8::is_ascii_alphabetic)
        && w.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether a complete textual line (without its line ending) may start a
/// request leniently at the very start of a direction, where it may as well
/// be the middle of a body: its first word looks like a method or the line
/// mentions HTTP/1, and it is not a status line.
fn flow_start_line(line: &[u8]) -> bool {
    let Some(first) = words(line).next() else {
        return false;
    };
    !first.starts_with(b"HTTP/") && (is_methodish(first) || names_http1(line))
}

enum StartLine<'a> {
    Request { method: &'a [u8], target: &'a [u8] },
    Status(u16),
}

struct Head<'a> {
    line: StartLine<'a>,
    version: &'static str,
    content_length: Result<Option<u64>, &'static str>,
    /// `Some(chunked is the final coding)` when Transfer-Encoding is present.
    chunked: Option<bool>,
    host: Option<String>,
    user_agent: Option<String>,
    upgrade: bool,
    /// `Upgrade: h2c`.
    h2c: bool,
    /// The caller's trace context (W3C form) and its `tracestate`.
    trace: Option<(String, Option<String>)>,
    /// Header lines (obs-fold continuations excluded).
    lines: usize,
    /// A request line accepted by [`lenient_request`].
    lenient: bool,
}

/// Parses `HTTP/d.d` into (major, minor).
fn parse_version(v: &[u8]) -> Option<(u8, u8)> {
    match v {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Some((major - b'0', minor - b'0'))
        }
        _ => None,
    }
}

/// `major.minor` for single digits, without formatting or allocating.
fn version_text(major: u8, minor: u8) -> &'static str {
    let i = (usize::from(major) * 10 + usize::from(minor)) * 3;
    VERSIONS.get(i..i + 3).unwrap_or_default()
}

/// "0.0" "0.1" ... "9.9", back to back.
const VERSIONS: &str = {
    const D: [u8; 300] = {
        let mut d = [0u8; 300];
        let mut i = 0;
        while i < 100 {
            d[i * 3] = b'0' + (i / 10) as u8;
            d[i * 3 + 1] = b'.';
            d[i * 3 + 2] = b'0' + (i % 10) as u8;
            i += 1;
        }
        d
    };
    match core::str::from_utf8(&D) {
        Ok(s) => s,
        Err(_) => "",
    }
};

fn version_string(v: &[u8], bad: &'static str) -> Result<&'static str, &'static str> {
    match parse_version(v) {
        Some((1, minor)) => Ok(version_text(1, minor)),
        Some(_) => Err(reason::NOT_HTTP1),
        None => Err(bad),
    }
}

/// Parses a complete request line (without its line ending).
fn parse_request_line(line: &[u8]) -> Result<(&[u8], &[u8], &'static str), &'static str> {
    let bad = reason::BAD_REQUEST_LINE;
    let mut parts = line.split(|&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().ok_or(bad)?;
    let version = parts.next();
    if parts.next().is_some()
        || method.is_empty()
        || !method.iter().all(|&b| is_tchar(b))
        || target.is_empty()
        || !target.iter().all(|&b| is_target_char(b))
    {
        return Err(bad);
    }
    // No version: HTTP/0.9 (see `simple_request_target`) where a message
    // starts, else malformed.
    let version = version.ok_or(bad)?;
    Ok((method, target, version_string(version, bad)?))
}

/// The target of an HTTP/0.9 simple request line (without its line ending):
/// exactly `GET SP target` with a target starting with `/` (RFC 1945 §4.1).
/// `GET /HTTP/1.1` is a malformed HTTP/1 line instead.
fn simple_request_target(line: &[u8]) -> Option<&[u8]> {
    let target = line.strip_prefix(b"GET ")?;
    let simple = target.starts_with(b"/")
        && target.iter().all(|&b| is_target_char(b))
        && !names_http1(target);
    simple.then_some(target)
}

/// Parses a complete status line (without its line ending).
fn parse_status_line(line: &[u8]) -> Result<(u16, &'static str), &'static str> {
    let bad = reason::BAD_STATUS_LINE;
    let version = version_string(line.get(..8).ok_or(bad)?, bad)?;
    let code = match line.get(8..) {
        Some([b' ', a, b, c, rest @ ..])
            if (b'1'..=b'9').contains(a)
                && b.is_ascii_digit()
                && c.is_ascii_digit()
                && matches!(rest.first(), None | Some(b' ')) =>
        {
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
        }
        _ => return Err(bad),
    };
    Ok((code, version))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    ContentLength,
    TransferEncoding,
    Host,
    UserAgent,
    Upgrade,
    /// A trace-context header (`traceparent`, `tracestate`, B3), by name.
    Trace(&'static str),
}

fn field(name: &[u8]) -> Option<Field> {
    const FIELDS: [(&[u8], Field); 11] = [
        (b"content-length", Field::ContentLength),
        (b"transfer-encoding", Field::TransferEncoding),
        (b"host", Field::Host),
        (b"user-agent", Field::UserAgent),
        (b"upgrade", Field::Upgrade),
        (b"traceparent", Field::Trace("traceparent")),
        (b"tracestate", Field::Trace("tracestate")),
        (b"b3", Field::Trace("b3")),
        (b"x-b3-traceid", Field::Trace("x-b3-traceid")),
        (b"x-b3-spanid", Field::Trace("x-b3-spanid")),
        (b"x-b3-sampled", Field::Trace("x-b3-sampled")),
    ];
    FIELDS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|&(_, f)| f)
}

/// Parses a complete header block (start line through the blank line).
/// Only framing fields, `Host`, `User-Agent` and `Upgrade` are kept.
fn parse_head<'a>(block: &'a [u8], dir: Dir, limits: &Limits) -> Result<Head<'a>, &'static str> {
    let mut lines = block.split(|&b| b == b'\n').map(strip_cr);
    let first = lines.next().unwrap_or_default();
    let (line, version) = match dir {
        Dir::ToServer => {
            let (method, target, version) = parse_request_line(first)?;
            (StartLine::Request { method, target }, version)
        }
        Dir::ToClient => {
            let (code, version) = parse_status_line(first)?;
            (StartLine::Status(code), version)
        }
    };
    parse_fields(line, version, lines, limits, false)
}

/// Parses the header block of a request whose request line fails the strict
/// rules but is a textual line (see [`walk_text_line`]) of at most
/// [`MAX_LENIENT_LINE`] bytes, as Zeek does: the method is the first word
/// (whatever its bytes), the target the second word if it starts with `/` or
/// `*`, the version that of the last word if it is `HTTP/d.d`, else empty.
/// Header lines without a colon or with an invalid name are skipped, and the
/// body is framed only by `Content-Length` or a final `chunked` coding.
///
/// `flow_start`: the block is at the very start of the direction, where it
/// may as well be the middle of a body, so it must look like a request: the
/// line passes [`flow_start_line`], the block is textual, its header lines
/// are valid, and there is at least one unless the line mentions HTTP/1.
fn lenient_request<'a>(
    block: &'a [u8],
    limits: &Limits,
    flow_start: bool,
) -> Result<Head<'a>, &'static str> {
    let bad = reason::BAD_REQUEST_LINE;
    let Walk::Line(nl) = walk_text_line(block, lenient_line_budget(limits.max_header_bytes)) else {
        return Err(bad);
    };
    let line = strip_cr(block.get(..nl).unwrap_or_default());
    let mut w = words(line);
    let method = w.next().ok_or(bad)?;
    if method.starts_with(b"HTTP/") || flow_start && !flow_start_line(line) {
        return Err(bad);
    }
    let second = w.next();
    let version = w
        .last()
        .or(second)
        .and_then(parse_version)
        .map(|(major, minor)| version_text(major, minor))
        .unwrap_or_default();
    let target = second
        .filter(|t| t.starts_with(b"/") || t.starts_with(b"*"))
        .unwrap_or_default();
    let fields = block.get(nl + 1..).unwrap_or_default();
    if flow_start
        && !fields
            .iter()
            .all(|&b| b >= 0x20 || matches!(b, b'\t' | b'\r' | b'\n'))
    {
        return Err(reason::BAD_HEADER);
    }
    let lines = fields.split(|&b| b == b'\n').map(strip_cr);
    let line_kind = StartLine::Request { method, target };
    let head = parse_fields(line_kind, version, lines, limits, !flow_start)?;
    if flow_start && head.lines == 0 && !names_http1(line) {
        return Err(reason::BAD_HEADER);
    }
    Ok(Head {
        lenient: true,
        ..head
    })
}

/// Parses the header lines after a start line, up to the blank line.
/// `lenient`: lines without a colon, with an invalid name, or folding onto
/// no field are skipped instead of failing.
fn parse_fields<'a>(
    line: StartLine<'a>,
    version: &'static str,
    lines: impl Iterator<Item = &'a [u8]>,
    limits: &Limits,
    lenient: bool,
) -> Result<Head<'a>, &'static str> {
    // Borrowed from the block; owned only when obs-fold continues a value.
    let mut fields: Vec<(Field, Cow<'a, [u8]>)> = Vec::new();
    let mut count = 0usize;
    let mut last_kept = false;
    for l in lines {
        if l.is_empty() {
            break;
        }
        if matches!(l.first(), Some(b' ' | b'\t')) {
            // obs-fold (RFC 9112 §5.2): continue the previous field's value.
            if count == 0 {
                if lenient {
                    continue;
                }
                return Err(reason::BAD_HEADER);
            }
            if last_kept && let Some((_, v)) = fields.last_mut() {
                let v = v.to_mut();
                v.push(b' ');
                v.extend_from_slice(trim_ows(l));
            }
            continue;
        }
        count += 1;
        if count > limits.max_headers {
            return Err(reason::TOO_MANY_HEADERS);
        }
        last_kept = false;
        let colon = l.iter().position(|&b| b == b':');
        let name = colon.and_then(|c| l.get(..c)).unwrap_or_default();
        let Some(colon) = colon.filter(|_| !name.is_empty() && name.iter().all(|&b| is_tchar(b)))
        else {
            if lenient {
                continue;
            }
            return Err(reason::BAD_HEADER);
        };
        if let Some(f) = field(name) {
            let value = trim_ows(l.get(colon + 1..).unwrap_or_default());
            fields.push((f, Cow::Borrowed(value)));
            last_kept = true;
        }
    }
    let values = |want: Field| {
        fields
            .iter()
            .filter(move |(f, _)| *f == want)
            .map(|(_, v)| v)
    };
    let first_value = |want: Field| values(want).next().map(|v| lossy(trim_ows(v)));
    let chunked = if values(Field::TransferEncoding).next().is_some() {
        let codings: Vec<&[u8]> = values(Field::TransferEncoding)
            .flat_map(|v| v.split(|&b| b == b','))
            .map(|c| trim_ows(c.split(|&b| b == b';').next().unwrap_or_default()))
            .filter(|c| !c.is_empty())
            .collect();
        if codings.iter().all(|c| c.eq_ignore_ascii_case(b"identity")) && !codings.is_empty() {
            None // the obsolete `identity` coding means no transfer coding
        } else {
            Some(
                codings
                    .last()
                    .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked")),
            )
        }
    } else {
        None
    };
    Ok(Head {
        line,
        version,
        content_length: content_length(values(Field::ContentLength)),
        chunked,
        host: first_value(Field::Host).filter(|h| !h.is_empty()),
        user_agent: first_value(Field::UserAgent),
        upgrade: values(Field::Upgrade).next().is_some(),
        h2c: values(Field::Upgrade).any(|v| {
            v.split(|&b| b == b',')
                .any(|t| trim_ows(t).eq_ignore_ascii_case(b"h2c"))
        }),
        trace: {
            let trace_values: Vec<(&str, String)> = fields
                .iter()
                .filter_map(|(f, v)| match f {
                    Field::Trace(n) => Some((*n, lossy(trim_ows(v)))),
                    _ => None,
                })
                .collect();
            let get = |n: &str| {
                trace_values
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| v.as_str())
            };
            wasmtap_sdk::trace::traceparent(get)
                .map(|tp| (tp, get("tracestate").map(str::to_string)))
        },
        lines: count,
        lenient: false,
    })
}

/// Parses all `Content-Length` values: each a comma list of identical
/// decimal numbers (RFC 9110 §8.6); different values are an error.
fn content_length<'v>(
    values: impl Iterator<Item = &'v Cow<'v, [u8]>>,
) -> Result<Option<u64>, &'static str> {
    let mut length = None;
    for v in values {
        let mut any = false;
        for part in v
            .split(|&b| b == b',')
            .map(trim_ows)
            .filter(|p| !p.is_empty())
        {
            any = true;
            let n = parse_decimal(part).ok_or(reason::BAD_CONTENT_LENGTH)?;
            match length {
                None => length = Some(n),
                Some(l) if l == n => {}
                Some(_) => return Err(reason::CONFLICTING_CONTENT_LENGTH),
            }
        }
        if !any {
            return Err(reason::BAD_CONTENT_LENGTH);
        }
    }
    Ok(length)
}

fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Parses `1*HEXDIG [BWS ; ext]` (RFC 9112 §7.1).
fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return None;
    }
    let (hex, rest) = line.split_at_checked(digits)?;
    let size = hex.iter().try_fold(0u64, |acc, &b| {
        let d = char::from(b).to_digit(16)?;
        acc.checked_mul(16)?.checked_add(u64::from(d))
    })?;
    match trim_ows(rest).first() {
        None | Some(b';') => Some(size),
        Some(_) => None,
    }
}

/// Body framing of a parsed head (RFC 9112 §6.3). `req` is the request a
/// response answers (a non-HEAD, non-CONNECT request when none was seen).
fn framing(head: &Head<'_>, req: ReqInfo) -> Result<Framing, &'static str> {
    let by_length = |cl: Result<Option<u64>, &'static str>, otherwise: Framing| match cl? {
        Some(0) => Ok(Framing::NoBody),
        Some(n) => Ok(Framing::Length(n)),
        None => Ok(otherwise),
    };
    match head.line {
        StartLine::Request { .. } if head.lenient => {
            Ok(match (head.chunked, head.content_length) {
                (Some(true), _) => Framing::Chunked,
                (None, Ok(Some(n))) if n > 0 => Framing::Length(n),
                _ => Framing::NoBody,
            })
        }
        StartLine::Request { .. } => match head.chunked {
            Some(true) => Ok(Framing::Chunked),
            Some(false) => Err(reason::BAD_TRANSFER_ENCODING),
            None => by_length(head.content_length, Framing::NoBody),
        },
        StartLine::Status(code) => {
            if code == 101 {
                return Ok(Framing::Tunnel);
            }
            if code < 200 {
                return Ok(Framing::Interim);
            }
            if req.connect && code < 300 {
                return Ok(Framing::Tunnel);
            }
            if req.head || code == 204 || code == 304 {
                return Ok(Framing::NoBody);
            }
            match head.chunked {
                Some(true) => Ok(Framing::Chunked),
                Some(false) => Ok(Framing::Close),
                None => by_length(head.content_length, Framing::Close),
            }
        }
    }
}

#[derive(Default)]
struct Target {
    path: Option<String>,
    query: Option<String>,
    authority: Option<String>,
}

/// The message for a parsed head (before any body) and, for a request, what
/// its response's framing needs to know.
fn head_message(
    head: Head<'_>,
    start_ns: u64,
    end_ns: u64,
    size: u64,
) -> (Message, Option<ReqInfo>) {
    let mut msg = Message {
        kind: Kind::Response,
        start_ns,
        end_ns,
        size,
        body_size: 0,
        method: None,
        path: None,
        query: None,
        version: head.version,
        status_code: None,
        host: None,
        user_agent: None,
        trace: None,
        truncated: false,
    };
    match head.line {
        StartLine::Request { method, target } => {
            let info = ReqInfo {
                head: method == b"HEAD",
                connect: method == b"CONNECT",
                upgrade: head.upgrade,
                h2c: head.h2c,
                simple: false,
            };
            let t = if !head.lenient {
                split_target(target, info.connect)
            } else if target.is_empty() {
                Target::default()
            } else {
                split_target(target, false)
            };
            msg.kind = Kind::Request;
            msg.method = Some(lossy(method));
            msg.path = t.path;
            msg.query = t.query;
            msg.host = t.authority.or(head.host);
            msg.user_agent = head.user_agent;
            msg.trace = head.trace;
            (msg, Some(info))
        }
        StartLine::Status(code) => {
            msg.status_code = Some(code);
            (msg, None)
        }
    }
}

/// Splits a request-target into path, masked query and authority.
fn split_target(target: &[u8], connect: bool) -> Target {
    if target == b"*" {
        return Target {
            path: Some("*".into()),
            query: None,
            authority: None,
        };
    }
    let scheme_end = target.windows(3).position(|w| w == b"://").filter(|&i| {
        let scheme = target.get(..i).unwrap_or_default();
        scheme.first().is_some_and(u8::is_ascii_alphabetic)
            && scheme
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    });
    let (authority, rest) = match scheme_end {
        Some(i) => {
            let after = target.get(i + 3..).unwrap_or_default();
            let end = after
                .iter()
                .position(|&b| matches!(b, b'/' | b'?' | b'#'))
                .unwrap_or(after.len());
            let (auth, rest) = after.split_at_checked(end).unwrap_or((after, &[]));
            // Drop any userinfo (`user:password@`).
            let host = auth.rsplit(|&b| b == b'@').next().unwrap_or_default();
            let host = (!host.is_empty()).then(|| lossy(host));
            (host, Some(rest))
        }
        // authority-form (`CONNECT host:port`).
        None if connect => (Some(lossy(target)), None),
        None => (None, Some(target)),
    };
    let Some(rest) = rest else {
        return Target {
            path: None,
            query: None,
            authority,
        };
    };
    let rest = rest.split(|&b| b == b'#').next().unwrap_or_default();
    let (path, query) = match rest.iter().position(|&b| b == b'?') {
        Some(q) => (rest.get(..q).unwrap_or_default(), rest.get(q + 1..)),
        None => (rest, None),
    };
    let path = if path.is_empty() {
        "/".to_string()
    } else {
        lossy(path)
    };
    let query = query.filter(|q| !q.is_empty()).map(mask_query);
    Target {
        path: Some(path),
        query,
        authority,
    }
}

/// Masks every value of a query: `a=1&b=xyz&c` -> `a=?&b=?&c`.
fn mask_query(query: &[u8]) -> String {
    let mut out = String::with_capacity(query.len().min(1024));
    for (i, pair) in query.split(|&b| b == b'&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.iter().position(|&b| b == b'=') {
            Some(eq) => {
                out.push_str(&String::from_utf8_lossy(pair.get(..eq).unwrap_or_default()));
                out.push_str("=?");
            }
            None => out.push_str(&String::from_utf8_lossy(pair)),
        }
    }
    out
}
