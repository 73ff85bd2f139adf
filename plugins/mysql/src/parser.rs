//! Pure MySQL client/server protocol parser: reassembled TCP bytes in,
//! [`Message`]s out.
//!
//! One [`Parser`] per flow. The host offers each direction's bytes with
//! [`Parser::feed`]; `data` is the unconsumed remainder of the previous offer
//! of that direction followed by new bytes.
//!
//! * Framing: packets are a 3-byte little-endian length, a sequence id and a
//!   payload. A packet is handled once its first bytes are available (up to
//!   [`REQUEST_PREFIX`] bytes of a request, [`RESPONSE_PREFIX`] of a
//!   response); the rest of a large packet (a long row, a long query) is
//!   consumed as it streams in. Payloads of `0xFFFFFF` bytes continue in the
//!   next packet, which is skipped.
//! * Connection phase: the server greeting (protocol 10) gives the server's
//!   capabilities; the client's HandshakeResponse41 is a `LOGIN` request (its
//!   user name and auth data are never read; the schema, when
//!   `CLIENT_CONNECT_WITH_DB`, is). Auth switch / auth-more-data packets are
//!   skipped; the final OK or ERR answers the login. An SSL request (a short
//!   HandshakeResponse with `CLIENT_SSL`) is followed by TLS: the whole flow
//!   is then consumed and ignored.
//! * Commands (sequence id 0) become requests; `COM_QUIT`,
//!   `COM_STMT_CLOSE` and `COM_STMT_SEND_LONG_DATA` (no response) are
//!   one-way. Every request carries a correlation key (a per-flow counter)
//!   that its response repeats, so a response lost to a gap leaves its request
//!   unanswered instead of shifting the pairing of later ones.
//! * Responses: OK, ERR, EOF, result sets (column count, column definitions,
//!   an optional EOF, rows, a terminating EOF or OK; multi-result sets when
//!   `SERVER_MORE_RESULTS_EXISTS`), prepare responses (statement id kept in a
//!   bounded map to name later `COM_STMT_EXECUTE`s), field lists, statistics
//!   text. Whether `CLIENT_DEPRECATE_EOF` is in use need not be known: an EOF
//!   packet is at most 5 bytes, an OK packet with the `0xFE` header at least 7.
//!   A response must start with the sequence id that follows its request's;
//!   other packets between responses (a trailing EOF) are skipped.
//! * Compressed protocol (`CLIENT_COMPRESS`, negotiated in the handshake, or
//!   recognised on a mid-stream flow): 7-byte headers, zlib payloads inflated
//!   with [`MAX_INFLATED`] bytes at most; after a gap a compressed direction
//!   is consumed and ignored.
//! * Mid-stream starts and gaps: the request direction looks for a
//!   plausible command packet (sequence id 0, known command byte, sane
//!   length); the response direction for a packet with the expected sequence
//!   id and a plausible first byte. Response bytes that arrive while no
//!   request is waiting answer requests never seen and are dropped.
//! * After [`Parser::gap`], the next `feed` of that direction must start with
//!   the first byte after the hole (the host drops any remainder it kept).
//!
//! Nothing here panics on input, every buffer is bounded, and passwords and
//! auth payloads are never read.

use std::collections::VecDeque;
use std::fmt;

wasmtap_sdk::stream_parser!(Parser, Dir, Message, ParseError);

#[cfg(test)]
mod tests;

/// Stable, kebab-case reasons carried by [`ParseError`].
pub mod reason {
    /// No plausible packet found within [`super::MAX_RESYNC_BYTES`] of junk.
    pub const RESYNC_FAILED: &str = "resync-failed";
}

/// Requests remembered while awaiting their responses; the oldest is
/// forgotten when a new one would exceed this.
pub const MAX_PENDING_REQUESTS: usize = 1024;

/// Prepared statements remembered per flow (oldest forgotten first).
pub const MAX_STATEMENTS: usize = 256;

/// Longest `db.query.text` produced, in bytes.
pub const MAX_QUERY_TEXT: usize = 2048;

/// Bytes of a request payload read before the request is reported (the
/// query text is cut there).
pub const REQUEST_PREFIX: usize = 8192;

/// Bytes of a response packet read before it is handled.
pub const RESPONSE_PREFIX: usize = 512;

/// Junk bytes skipped in the request direction while looking for a command
/// (mid-stream start, gap) before the parser gives up with `resync-failed`.
pub const MAX_RESYNC_BYTES: u64 = 1 << 20;

/// Largest compressed packet decoded; larger ones are skipped (and the
/// stream inside resynchronised). Below the host's 256 KiB buffer bound.
pub const MAX_COMPRESSED: usize = 192 * 1024;

/// Largest inflated payload of one compressed packet.
pub const MAX_INFLATED: usize = 1 << 20;

const MULTI: usize = 0xFF_FFFF;

/// Waiting requests whose response start is looked for while resynchronising.
const RESYNC_CANDIDATES: usize = 4;

/// MySQL's limit on columns in a result set.
const MAX_COLUMNS: u64 = 4096;

const CLIENT_CONNECT_WITH_DB: u32 = 0x8;
const CLIENT_COMPRESS: u32 = 0x20;
const CLIENT_PROTOCOL_41: u32 = 0x200;
const CLIENT_SSL: u32 = 0x800;
const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
const CLIENT_PLUGIN_AUTH_LENENC: u32 = 0x20_0000;
const CLIENT_ZSTD_COMPRESSION: u32 = 1 << 26;
const CLIENT_QUERY_ATTRIBUTES: u32 = 1 << 27;
const SERVER_MORE_RESULTS_EXISTS: u16 = 0x8;

/// Direction of a flow's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Client to server: commands.
    ToServer = 0,
    /// Server to client: responses.
    ToClient = 1,
}

/// What a [`Message`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A command (or the login) awaiting a response.
    Request,
    /// The response to the request with the same correlation key.
    Response,
    /// A command the server never answers (`COM_QUIT`, `COM_STMT_CLOSE`).
    OneWay,
}

/// One protocol message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Request, response or one-way.
    pub kind: Kind,
    /// Key shared by a request and its response (`None` for one-way).
    pub correlation: Option<u64>,
    /// Timestamp of the feed that offered the message's first packet.
    pub start_ns: u64,
    /// Timestamp of the feed that completed the message.
    pub end_ns: u64,
    /// Packet bytes on the wire (headers included; inflated bytes under
    /// compression). A request counts its first packet only.
    pub size: u64,
    /// Requests: low-cardinality operation (`SELECT`, `LOGIN`, `INIT_DB`).
    pub operation: String,
    /// Requests: the SQL text (sanitised unless configured raw), cut at
    /// [`MAX_QUERY_TEXT`] bytes.
    pub query: Option<String>,
    /// Requests: the schema in use (or being selected).
    pub namespace: Option<String>,
    /// Requests: the table of a `COM_FIELD_LIST`.
    pub collection: Option<String>,
    /// Responses: the ERR packet's error code.
    pub error_code: Option<u16>,
    /// Responses: rows of the result set(s), when the response has any.
    pub rows: Option<u64>,
}

/// Why a direction's bytes could not be parsed. The session should end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError {
    /// One of the stable kebab-case strings in [`reason`].
    pub reason: &'static str,
    /// Offset in the direction's stream where it failed.
    pub offset: u64,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at offset {}", self.reason, self.offset)
    }
}

impl std::error::Error for ParseError {}

/// Parser options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Config {
    /// Report SQL text as sent instead of with literals replaced by `?`.
    pub raw_query_text: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing seen yet.
    Start,
    /// Server greeting seen; the client's HandshakeResponse comes next.
    Greeted,
    /// Commands (or the login still in progress).
    Command,
    /// TLS or replication: everything is consumed and ignored.
    Opaque,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReqKind {
    /// Login or change-user: auth packets until OK or ERR.
    Login,
    /// OK, ERR or result set(s).
    Query,
    /// Prepare OK plus parameter and column definitions, or ERR.
    Prepare,
    /// Rows until EOF (`COM_STMT_FETCH`).
    Fetch,
    /// Column definitions until EOF (`COM_FIELD_LIST`).
    FieldList,
    /// One text packet (`COM_STATISTICS`).
    Stats,
    /// One OK, EOF or ERR packet.
    Simple,
}

#[derive(Debug, Clone)]
struct Pending {
    corr: u64,
    kind: ReqKind,
    expect_seq: u8,
    /// Schema selected if the response is OK (`COM_INIT_DB`, `USE`).
    schema: Option<String>,
    /// For a prepare: operation and text to remember under the statement id.
    stmt: Option<(String, Option<String>)>,
    /// For a login: what its OK switches on.
    after_login: AfterLogin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterLogin {
    /// Plain packets go on.
    Plain,
    /// zlib-compressed protocol.
    Zlib,
    /// zstd-compressed protocol: not decoded, the flow becomes opaque.
    Zstd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RState {
    Login,
    First,
    Columns(u64),
    AfterColumns,
    Rows,
    PrepareOk,
    Defs(u64),
    FieldList,
    Stats,
    Simple,
    Final,
}

#[derive(Debug)]
struct Cur {
    req: Pending,
    state: RState,
    start_ns: u64,
    size: u64,
    rows: u64,
    result_set: bool,
}

#[derive(Debug, Default)]
struct Side {
    synced: bool,
    /// Bytes of the current packet still to consume.
    skip: usize,
    /// The previous packet was `0xFFFFFF` long: the next one continues it.
    cont: bool,
    /// Offset in the stream (consumed plus gap bytes).
    offset: u64,
    /// Junk skipped since the last loss of synchronisation.
    junk: u64,
    compressed: bool,
    /// Inflated bytes not yet consumed by the packet layer.
    zbuf: Vec<u8>,
    /// Bytes of an oversized compressed packet still to skip.
    zskip: usize,
    /// Compressed stream lost (gap): everything is consumed and ignored.
    lost: bool,
}

enum Sync {
    /// A packet starts at this offset.
    At(usize),
    /// Consume this much and wait for more bytes.
    Wait(usize),
}

enum Check {
    Yes,
    No,
    More,
}

/// Per-flow MySQL parser.
#[derive(Debug)]
pub struct Parser {
    config: Config,
    phase: Phase,
    server_caps: u32,
    /// Client capabilities from the HandshakeResponse; `None` mid-stream.
    client_caps: Option<u32>,
    sides: [Side; 2],
    pending: VecDeque<Pending>,
    cur: Option<Cur>,
    next_corr: u64,
    last_req_corr: Option<u64>,
    schema: Option<String>,
    stmts: VecDeque<(u32, String, Option<String>)>,
}

fn u16le(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at + 2)?;
    Some(u16::from_le_bytes([s[0], s[1]]))
}

fn u24le(b: &[u8]) -> Option<usize> {
    let s = b.get(..3)?;
    Some(usize::from(s[0]) | usize::from(s[1]) << 8 | usize::from(s[2]) << 16)
}

fn u32le(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Reads a length-encoded integer at `at`; returns it and its size.
fn lenenc(b: &[u8], at: usize) -> Option<(u64, usize)> {
    let first = *b.get(at)?;
    let wide = |n: usize| -> Option<(u64, usize)> {
        let s = b.get(at + 1..at + 1 + n)?;
        let v = s
            .iter()
            .rev()
            .fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
        Some((v, n + 1))
    };
    match first {
        0..=0xFA => Some((u64::from(first), 1)),
        0xFC => wide(2),
        0xFD => wide(3),
        0xFE => wide(8),
        _ => None,
    }
}

/// Status flags of an OK packet (header byte included in `p`).
fn ok_status(p: &[u8]) -> u16 {
    let Some((_, a)) = lenenc(p, 1) else { return 0 };
    let Some((_, b)) = lenenc(p, 1 + a) else {
        return 0;
    };
    u16le(p, 1 + a + b).unwrap_or(0)
}

/// Status flags of an EOF (`len <= 5`) or `0xFE` OK packet.
fn terminator_status(p: &[u8], len: usize) -> u16 {
    if len <= 5 {
        u16le(p, 3).unwrap_or(0)
    } else {
        ok_status(p)
    }
}

fn cstr(b: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = b.get(at..)?;
    let end = rest.iter().position(|&c| c == 0)?;
    Some((&rest[..end], at + end + 1))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Cuts `s` to at most `max` bytes on a char boundary.
fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while end > 0 && !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// SQL statement keywords used as operation names; anything else is `QUERY`.
const KEYWORDS: &[&str] = &[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "REPLACE",
    "CREATE",
    "DROP",
    "ALTER",
    "TRUNCATE",
    "RENAME",
    "SET",
    "SHOW",
    "DESCRIBE",
    "DESC",
    "EXPLAIN",
    "USE",
    "BEGIN",
    "START",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT",
    "RELEASE",
    "LOCK",
    "UNLOCK",
    "GRANT",
    "REVOKE",
    "CALL",
    "DO",
    "HANDLER",
    "LOAD",
    "WITH",
    "VALUES",
    "TABLE",
    "ANALYZE",
    "OPTIMIZE",
    "REPAIR",
    "CHECK",
    "CHECKSUM",
    "FLUSH",
    "KILL",
    "RESET",
    "PREPARE",
    "EXECUTE",
    "DEALLOCATE",
    "XA",
    "INSTALL",
    "UNINSTALL",
    "PURGE",
    "CHANGE",
    "STOP",
    "HELP",
    "BINLOG",
    "CACHE",
    "SIGNAL",
    "RESIGNAL",
    "GET",
];

/// Skips whitespace, comments and opening parentheses at the start of SQL.
fn sql_start(sql: &[u8]) -> &[u8] {
    let mut s = sql;
    loop {
        match s {
            [c, rest @ ..] if c.is_ascii_whitespace() || *c == b'(' => s = rest,
            [b'/', b'*', rest @ ..] => {
                let end = rest.windows(2).position(|w| w == b"*/");
                s = match end {
                    Some(e) => rest.get(e + 2..).unwrap_or(&[]),
                    None => &[],
                };
            }
            [b'-', b'-', rest @ ..] | [b'#', rest @ ..] => {
                let end = rest.iter().position(|&c| c == b'\n');
                s = match end {
                    Some(e) => rest.get(e + 1..).unwrap_or(&[]),
                    None => &[],
                };
            }
            _ => return s,
        }
    }
}

/// First word of `sql`, upper-cased, if it is a known statement keyword.
pub fn sql_keyword(sql: &[u8]) -> Option<&'static str> {
    let s = sql_start(sql);
    let end = s
        .iter()
        .position(|c| !c.is_ascii_alphabetic())
        .unwrap_or(s.len());
    let word = s.get(..end)?;
    KEYWORDS
        .iter()
        .find(|k| k.as_bytes().eq_ignore_ascii_case(word))
        .copied()
}

/// Operation name for SQL text: its statement keyword, or `QUERY`.
pub fn sql_operation(sql: &[u8]) -> &'static str {
    sql_keyword(sql).unwrap_or("QUERY")
}

/// The schema named by `USE name` (backticks removed).
fn use_schema(sql: &[u8]) -> Option<String> {
    let s = sql_start(sql);
    let rest = s.get(3..)?;
    if !s.get(..3)?.eq_ignore_ascii_case(b"USE") || !rest.first()?.is_ascii_whitespace() {
        return None;
    }
    let name = rest.trim_ascii();
    let name = name.strip_suffix(b";").unwrap_or(name).trim_ascii();
    let name = name
        .strip_prefix(b"`")
        .and_then(|n| n.strip_suffix(b"`"))
        .unwrap_or(name);
    (!name.is_empty() && name.len() <= 64).then(|| text(name))
}

/// Masks literals (`?`) and removes comments with the SDK's shared masker
/// ([`wasmtap_sdk::mask`], MySQL dialect); output cut at [`MAX_QUERY_TEXT`].
pub fn sanitize(sql: &[u8]) -> String {
    wasmtap_sdk::mask::sql(sql, wasmtap_sdk::mask::Dialect::MySql, MAX_QUERY_TEXT)
}

/// Skips the query attributes that precede the SQL of a `COM_QUERY` when
/// `CLIENT_QUERY_ATTRIBUTES` is in use (MySQL 8.0.23+). Mid-stream (caps
/// unknown), the common empty block `00 01` is recognised.
fn skip_query_attributes(body: &[u8], caps: Option<u32>) -> &[u8] {
    match caps {
        Some(c) if c & CLIENT_QUERY_ATTRIBUTES != 0 => {
            query_attributes_end(body).map_or(&[][..], |at| body.get(at..).unwrap_or(&[]))
        }
        None if body.starts_with(&[0, 1]) => body.get(2..).unwrap_or(&[]),
        _ => body,
    }
}

/// Offset of the SQL after a query-attribute block.
fn query_attributes_end(b: &[u8]) -> Option<usize> {
    let (n, a) = lenenc(b, 0)?;
    let (_sets, s) = lenenc(b, a)?;
    let mut at = a + s;
    if n == 0 {
        return Some(at);
    }
    let n = usize::try_from(n).ok().filter(|&n| n <= 4096)?;
    let bitmap = b.get(at..at + n.div_ceil(8))?;
    at += n.div_ceil(8);
    let bound = *b.get(at)?;
    at += 1;
    if bound != 1 {
        return None;
    }
    let mut types = Vec::with_capacity(n);
    for _ in 0..n {
        types.push(*b.get(at)?);
        at += 2;
        let (len, s) = lenenc(b, at)?;
        at += s + usize::try_from(len).ok()?;
    }
    for (i, t) in types.into_iter().enumerate() {
        if bitmap.get(i / 8).is_some_and(|m| m & (1 << (i % 8)) != 0) {
            continue;
        }
        at += match t {
            6 => 0,
            1 => 1,
            2 | 13 => 2,
            3 | 4 | 9 => 4,
            5 | 8 => 8,
            7 | 10 | 11 | 12 => 1 + usize::from(*b.get(at)?),
            _ => {
                let (len, s) = lenenc(b, at)?;
                s + usize::try_from(len).ok()?
            }
        };
    }
    (at <= b.len()).then_some(at)
}

/// Whether `b` is a byte of SQL text (printable ASCII, whitespace, UTF-8).
fn sql_byte(b: u8) -> bool {
    b.is_ascii_graphic() || b.is_ascii_whitespace() || b >= 0x80
}

/// Whether `d` starts with a plausible command packet (sequence id 0).
fn check_command(d: &[u8]) -> Check {
    let (Some(len), Some(&seq), Some(&cmd)) = (u24le(d), d.get(3), d.get(4)) else {
        return if d.len() < 5 { Check::More } else { Check::No };
    };
    if seq != 0 || len == 0 {
        return Check::No;
    }
    let ok = match cmd {
        0x01 | 0x09 | 0x0a | 0x0d | 0x0e | 0x1f => len == 1,
        0x19 | 0x1a => len == 5,
        0x1c => len == 9,
        0x1b => len == 3,
        0x0c => len == 5,
        0x17 => len >= 10,
        0x02 | 0x03 | 0x04 | 0x16 => {
            let attrs = if cmd == 0x03 && d.get(5..7) == Some(&[0, 1][..]) {
                2
            } else {
                0
            };
            let want = (len - 1).saturating_sub(attrs).min(8);
            let Some(t) = d.get(5 + attrs..5 + attrs + want) else {
                return Check::More;
            };
            // COM_FIELD_LIST: table NUL wildcard.
            let nul_ok = |b: u8| cmd == 0x04 && b == 0;
            len >= 2
                && t.first().is_some_and(|&b| sql_byte(b) && b != 0)
                && t.iter().all(|&b| sql_byte(b) || nul_ok(b))
        }
        _ => false,
    };
    if ok { Check::Yes } else { Check::No }
}

/// Whether `d` starts with a compressed packet holding a command.
fn check_compressed(d: &[u8]) -> Check {
    let (Some(clen), Some(&cseq), Some(ulen)) = (u24le(d), d.get(3), d.get(4..).and_then(u24le))
    else {
        return if d.len() < 7 { Check::More } else { Check::No };
    };
    if cseq != 0 || clen < 5 {
        return Check::No;
    }
    if ulen == 0 {
        let inner = d.get(7..).unwrap_or(&[]);
        match (check_command(inner), u24le(inner)) {
            (Check::Yes, Some(ilen)) if ilen + 4 <= clen => Check::Yes,
            (Check::More, _) => Check::More,
            _ => Check::No,
        }
    } else {
        let (Some(&cmf), Some(&flg)) = (d.get(7), d.get(8)) else {
            return Check::More;
        };
        if cmf == 0x78 && (u16::from(cmf) << 8 | u16::from(flg)) % 31 == 0 && ulen >= 5 {
            Check::Yes
        } else {
            Check::No
        }
    }
}

/// Whether `d` starts with the first packet of a response (sequence `seq`).
fn check_response(d: &[u8], seq: u8, kind: ReqKind) -> Check {
    let (Some(len), Some(&s), Some(&b0)) = (u24le(d), d.get(3), d.get(4)) else {
        return if d.len() < 5 { Check::More } else { Check::No };
    };
    if s != seq || len == 0 {
        return Check::No;
    }
    let ok = match b0 {
        0x00 => len >= 7,
        0xFF => len >= 3,
        0xFE => len <= 5 && kind == ReqKind::Simple,
        0x03 if kind == ReqKind::FieldList => true,
        1..=0xFB => matches!(kind, ReqKind::Query) && (len <= 9 || b0 == 0xFB),
        _ => false,
    } || kind == ReqKind::Stats;
    if ok { Check::Yes } else { Check::No }
}

impl Parser {
    /// A parser for one flow.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            phase: Phase::Start,
            server_caps: 0,
            client_caps: None,
            sides: [Side::default(), Side::default()],
            pending: VecDeque::new(),
            cur: None,
            next_corr: 0,
            last_req_corr: None,
            schema: None,
            stmts: VecDeque::new(),
        }
    }

    /// Offers `data` (remainder of earlier offers plus new bytes) of `dir`;
    /// pushes completed messages to `out` and returns the bytes consumed.
    pub fn feed(
        &mut self,
        dir: Dir,
        ts_ns: u64,
        data: &[u8],
        out: &mut Vec<Message>,
    ) -> Result<usize, ParseError> {
        let d = dir as usize;
        let mut pos = 0;
        loop {
            let rest = data.get(pos..).unwrap_or(&[]);
            if self.phase == Phase::Opaque || self.sides[d].lost {
                self.sides[d].offset += rest.len() as u64;
                return Ok(data.len());
            }
            if self.sides[d].compressed {
                return Ok(pos + self.run_compressed(dir, ts_ns, rest, out)?);
            }
            pos += self.run(dir, ts_ns, rest, out)?;
            // A login OK (or a mid-stream guess) may switch the rest of the
            // stream to the compressed protocol.
            if !(self.sides[d].compressed || self.phase == Phase::Opaque) || pos >= data.len() {
                return Ok(pos);
            }
        }
    }

    /// `len` bytes of `dir` were never captured.
    pub fn gap(&mut self, dir: Dir, len: u64, _out: &mut Vec<Message>) -> Result<(), ParseError> {
        let d = dir as usize;
        let side = &mut self.sides[d];
        side.offset += len;
        if self.phase == Phase::Opaque {
            return Ok(());
        }
        if side.compressed {
            if side.zskip as u64 >= len {
                side.zskip -= len as usize;
            } else {
                side.lost = true;
            }
            return Ok(());
        }
        if side.skip as u64 >= len {
            // The hole is inside a packet being skipped: framing holds.
            side.skip -= len as usize;
            return Ok(());
        }
        self.desync(dir);
        if dir == Dir::ToServer && self.phase == Phase::Greeted {
            self.phase = Phase::Command;
        }
        Ok(())
    }

    /// The flow ended. Nothing is pending completion in this protocol: a
    /// response cut short leaves its request unanswered.
    pub fn close(&mut self, _ts_ns: u64, _out: &mut Vec<Message>) {
        self.cur = None;
    }

    fn desync(&mut self, dir: Dir) {
        let side = &mut self.sides[dir as usize];
        side.synced = false;
        side.skip = 0;
        side.cont = false;
        side.junk = 0;
        if dir == Dir::ToClient {
            // The response in progress is lost; its request stays unanswered.
            self.cur = None;
        }
    }

    /// A compressed packet could not be decoded. Between responses, its
    /// bytes began the answer to the oldest waiting request, which is left
    /// unanswered.
    fn lose_packet(&mut self, dir: Dir) {
        if dir == Dir::ToClient && self.cur.is_none() {
            self.pending.pop_front();
        }
        self.desync(dir);
    }

    /// The packet layer over plain bytes.
    fn run(
        &mut self,
        dir: Dir,
        ts: u64,
        data: &[u8],
        out: &mut Vec<Message>,
    ) -> Result<usize, ParseError> {
        let d = dir as usize;
        let mode = self.sides[d].compressed;
        let mut pos = 0;
        loop {
            if self.phase == Phase::Opaque {
                return Ok(data.len());
            }
            if self.sides[d].compressed != mode {
                return Ok(pos);
            }
            let rest = data.get(pos..).unwrap_or(&[]);
            let side = &mut self.sides[d];
            if side.skip > 0 {
                let n = side.skip.min(rest.len());
                side.skip -= n;
                side.offset += n as u64;
                pos += n;
                if side.skip > 0 {
                    return Ok(pos);
                }
                continue;
            }
            if !side.synced {
                match self.resync(dir, rest)? {
                    Sync::At(i) => {
                        let side = &mut self.sides[d];
                        side.offset += i as u64;
                        side.synced = true;
                        pos += i;
                    }
                    Sync::Wait(i) => {
                        self.sides[d].offset += i as u64;
                        return Ok(pos + i);
                    }
                }
                continue;
            }
            let (Some(len), Some(&seq)) = (u24le(rest), rest.get(3)) else {
                return Ok(pos);
            };
            let limit = match dir {
                Dir::ToServer => REQUEST_PREFIX,
                Dir::ToClient => RESPONSE_PREFIX,
            };
            let need = len.min(limit);
            let Some(prefix) = rest.get(4..4 + need) else {
                return Ok(pos);
            };
            let take = (4 + len).min(rest.len());
            let side = &mut self.sides[d];
            let cont = side.cont;
            side.cont = len == MULTI;
            side.skip = 4 + len - take;
            side.offset += take as u64;
            pos += take;
            match dir {
                Dir::ToServer => self.request_packet(ts, seq, len, prefix, cont, out),
                Dir::ToClient => self.response_packet(ts, seq, len, prefix, cont, out),
            }
        }
    }

    /// The compressed-protocol layer: inflates packets and runs the packet
    /// layer over the result.
    fn run_compressed(
        &mut self,
        dir: Dir,
        ts: u64,
        data: &[u8],
        out: &mut Vec<Message>,
    ) -> Result<usize, ParseError> {
        let d = dir as usize;
        let mut pos = 0;
        loop {
            let rest = data.get(pos..).unwrap_or(&[]);
            if self.phase == Phase::Opaque || self.sides[d].lost {
                self.sides[d].offset += rest.len() as u64;
                return Ok(data.len());
            }
            let side = &mut self.sides[d];
            if side.zskip > 0 {
                let n = side.zskip.min(rest.len());
                side.zskip -= n;
                pos += n;
                if side.zskip > 0 {
                    return Ok(pos);
                }
                continue;
            }
            let (Some(clen), Some(ulen)) = (u24le(rest), rest.get(4..).and_then(u24le)) else {
                return Ok(pos);
            };
            if clen > MAX_COMPRESSED || ulen > MAX_INFLATED {
                self.sides[d].zskip = 7 + clen;
                self.sides[d].zbuf.clear();
                self.lose_packet(dir);
                continue;
            }
            let Some(payload) = rest.get(7..7 + clen) else {
                return Ok(pos);
            };
            pos += 7 + clen;
            let plain = if ulen == 0 {
                payload.to_vec()
            } else {
                match miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(payload, ulen) {
                    Ok(v) => v,
                    Err(_) => {
                        self.sides[d].zbuf.clear();
                        self.lose_packet(dir);
                        continue;
                    }
                }
            };
            let mut buf = std::mem::take(&mut self.sides[d].zbuf);
            buf.extend_from_slice(&plain);
            let n = self.run(dir, ts, &buf, out)?;
            buf.drain(..n.min(buf.len()));
            if buf.len() > 2 * REQUEST_PREFIX {
                buf.clear();
                self.desync(dir);
            }
            self.sides[d].zbuf = buf;
        }
    }

    /// Finds where the next packet starts after a loss of synchronisation.
    fn resync(&mut self, dir: Dir, data: &[u8]) -> Result<Sync, ParseError> {
        let d = dir as usize;
        match dir {
            Dir::ToClient => {
                if self.phase == Phase::Start {
                    match (data.get(3), data.get(4)) {
                        (Some(0), Some(10)) => return Ok(Sync::At(0)),
                        (Some(_), Some(_)) => self.phase = Phase::Command,
                        _ => return Ok(Sync::Wait(0)),
                    }
                }
                if self.pending.is_empty() {
                    // Answers to requests never seen.
                    return Ok(Sync::Wait(data.len()));
                }
                for i in 0..data.len() {
                    // The answers to the first waiting requests may be lost
                    // too: try the next few, and forget those skipped.
                    for k in 0..self.pending.len().min(RESYNC_CANDIDATES) {
                        let Some(p) = self.pending.get(k) else { break };
                        match check_response(&data[i..], p.expect_seq, p.kind) {
                            Check::Yes => {
                                self.pending.drain(..k);
                                return Ok(Sync::At(i));
                            }
                            Check::More => return Ok(Sync::Wait(i)),
                            Check::No => {}
                        }
                    }
                }
                Ok(Sync::Wait(data.len()))
            }
            Dir::ToServer => {
                if self.phase == Phase::Greeted {
                    return Ok(Sync::At(0));
                }
                if self.phase == Phase::Start {
                    self.phase = Phase::Command;
                }
                for i in 0..data.len() {
                    let at = &data[i..];
                    // Compressed first: its plain reading is a COM_SLEEP.
                    // (Not inside an already inflated stream.)
                    let compressed = if self.sides[d].compressed {
                        Check::No
                    } else {
                        check_compressed(at)
                    };
                    match compressed {
                        Check::Yes => {
                            for s in &mut self.sides {
                                s.compressed = true;
                                s.synced = true;
                            }
                            return Ok(Sync::At(i));
                        }
                        Check::More => return Ok(Sync::Wait(i)),
                        Check::No => {}
                    }
                    match check_command(at) {
                        Check::Yes => return Ok(Sync::At(i)),
                        Check::More => return Ok(Sync::Wait(i)),
                        Check::No => {}
                    }
                    self.sides[d].junk += 1;
                    if self.sides[d].junk > MAX_RESYNC_BYTES {
                        return Err(ParseError {
                            reason: reason::RESYNC_FAILED,
                            offset: self.sides[d].offset + i as u64,
                        });
                    }
                }
                Ok(Sync::Wait(data.len()))
            }
        }
    }

    fn push_request(
        &mut self,
        ts: u64,
        len: usize,
        kind: ReqKind,
        seq: u8,
        mut msg: Message,
        out: &mut Vec<Message>,
    ) -> Pending {
        let corr = self.next_corr;
        self.next_corr += 1;
        msg.correlation = Some(corr);
        msg.start_ns = ts;
        msg.end_ns = ts;
        msg.size = 4 + len as u64;
        if msg.namespace.is_none() {
            msg.namespace.clone_from(&self.schema);
        }
        out.push(msg);
        self.last_req_corr = Some(corr);
        Pending {
            corr,
            kind,
            expect_seq: seq.wrapping_add(1),
            schema: None,
            stmt: None,
            after_login: AfterLogin::Plain,
        }
    }

    fn request_packet(
        &mut self,
        ts: u64,
        seq: u8,
        len: usize,
        p: &[u8],
        cont: bool,
        out: &mut Vec<Message>,
    ) {
        if cont {
            // Continuation of a 16 MiB payload: the response follows the last part.
            if let Some(back) = self.pending.back_mut()
                && Some(back.corr) == self.last_req_corr
            {
                back.expect_seq = seq.wrapping_add(1);
            }
            return;
        }
        if self.phase == Phase::Greeted {
            self.handshake_response(ts, seq, len, p, out);
            return;
        }
        if seq != 0 {
            // Auth data, LOCAL INFILE contents: not commands.
            return;
        }
        let Some((&cmd, body)) = p.split_first() else {
            return;
        };
        let req = |op: &str| Message {
            kind: Kind::Request,
            correlation: None,
            start_ns: ts,
            end_ns: ts,
            size: 4 + len as u64,
            operation: op.to_string(),
            query: None,
            namespace: None,
            collection: None,
            error_code: None,
            rows: None,
        };
        let (kind, msg) = match cmd {
            0x01 | 0x18 | 0x19 => {
                let op = match cmd {
                    0x01 => "QUIT",
                    0x18 => "STMT_SEND_LONG_DATA",
                    _ => "STMT_CLOSE",
                };
                if cmd == 0x19
                    && let Some(id) = u32le(body, 0)
                {
                    self.stmts.retain(|s| s.0 != id);
                }
                let mut m = req(op);
                m.kind = Kind::OneWay;
                m.namespace.clone_from(&self.schema);
                out.push(m);
                return;
            }
            0x02 => {
                let name = cut(text(body), 64);
                let mut m = req("INIT_DB");
                m.namespace = Some(name.clone());
                let mut pend = self.push_request(ts, len, ReqKind::Simple, seq, m, out);
                pend.schema = Some(name);
                self.queue(pend);
                return;
            }
            0x03 | 0x16 => {
                let body = if cmd == 0x03 {
                    skip_query_attributes(body, self.client_caps)
                } else {
                    body
                };
                let op = sql_operation(body);
                let mut m = req(if cmd == 0x03 { op } else { "PREPARE" });
                let q = self.query_text(body);
                m.query = Some(q.clone());
                let kind = if cmd == 0x03 {
                    ReqKind::Query
                } else {
                    ReqKind::Prepare
                };
                let mut pend = self.push_request(ts, len, kind, seq, m, out);
                if cmd == 0x03 {
                    pend.schema = use_schema(body);
                } else {
                    pend.stmt = Some((op.to_string(), Some(q)));
                }
                self.queue(pend);
                return;
            }
            0x04 => {
                let table = cstr(body, 0).map_or(body, |(t, _)| t);
                let mut m = req("FIELD_LIST");
                m.collection = Some(cut(text(table), 64));
                (ReqKind::FieldList, m)
            }
            0x09 => (ReqKind::Stats, req("STATISTICS")),
            0x0a => (ReqKind::Query, req("PROCESS_INFO")),
            0x11 => (ReqKind::Login, req("CHANGE_USER")),
            0x12 | 0x1e => {
                // Replication stream: not request/response any more.
                self.phase = Phase::Opaque;
                return;
            }
            0x17 => {
                let id = u32le(body, 0);
                let stmt = id.and_then(|id| self.stmts.iter().find(|s| s.0 == id));
                let mut m = req(stmt.map_or("EXECUTE", |s| s.1.as_str()));
                m.query = stmt.and_then(|s| s.2.clone());
                (ReqKind::Query, m)
            }
            0x1c => (ReqKind::Fetch, req("STMT_FETCH")),
            0x05 => (ReqKind::Simple, req("CREATE_DB")),
            0x06 => (ReqKind::Simple, req("DROP_DB")),
            0x07 => (ReqKind::Simple, req("REFRESH")),
            0x08 => (ReqKind::Simple, req("SHUTDOWN")),
            0x0c => (ReqKind::Simple, req("PROCESS_KILL")),
            0x0d => (ReqKind::Simple, req("DEBUG")),
            0x0e => (ReqKind::Simple, req("PING")),
            0x15 => (ReqKind::Simple, req("REGISTER_SLAVE")),
            0x1a => (ReqKind::Simple, req("STMT_RESET")),
            0x1b => (ReqKind::Simple, req("SET_OPTION")),
            0x1f => (ReqKind::Simple, req("RESET_CONNECTION")),
            // COM_SLEEP, COM_TIME, COM_CONNECT, COM_DAEMON...: internal, never
            // sent by clients; skipped.
            _ => return,
        };
        let pend = self.push_request(ts, len, kind, seq, msg, out);
        self.queue(pend);
    }

    fn queue(&mut self, p: Pending) {
        if self.pending.len() >= MAX_PENDING_REQUESTS {
            self.pending.pop_front();
        }
        self.pending.push_back(p);
    }

    fn query_text(&self, sql: &[u8]) -> String {
        if self.config.raw_query_text {
            cut(text(sql), MAX_QUERY_TEXT)
        } else {
            sanitize(sql)
        }
    }

    fn handshake_response(
        &mut self,
        ts: u64,
        seq: u8,
        len: usize,
        p: &[u8],
        out: &mut Vec<Message>,
    ) {
        self.phase = Phase::Command;
        let caps = match (u32le(p, 0), u16le(p, 0)) {
            (Some(c), _) if c & CLIENT_PROTOCOL_41 != 0 => c,
            (_, Some(c)) => u32::from(c),
            _ => 0,
        };
        if caps & CLIENT_SSL != 0 && len <= 32 {
            // SSL request: TLS follows in both directions.
            self.phase = Phase::Opaque;
            return;
        }
        self.client_caps = Some(caps);
        let mut schema = None;
        if caps & CLIENT_PROTOCOL_41 != 0 && caps & CLIENT_CONNECT_WITH_DB != 0 {
            // caps(4) max-packet(4) charset(1) filler(23) user NUL auth db NUL
            if let Some((_, at)) = cstr(p, 32) {
                let at = if caps & CLIENT_PLUGIN_AUTH_LENENC != 0 {
                    lenenc(p, at).map(|(n, s)| at + s + n as usize)
                } else if caps & CLIENT_SECURE_CONNECTION != 0 {
                    p.get(at).map(|&n| at + 1 + usize::from(n))
                } else {
                    cstr(p, at).map(|(_, e)| e)
                };
                schema = at
                    .and_then(|at| cstr(p, at))
                    .map(|(db, _)| cut(text(db), 64))
                    .filter(|s| !s.is_empty());
            }
        }
        let compress = caps & CLIENT_COMPRESS != 0
            && (self.server_caps == 0 || self.server_caps & CLIENT_COMPRESS != 0);
        let zstd = caps & CLIENT_ZSTD_COMPRESSION != 0
            && (self.server_caps == 0 || self.server_caps & CLIENT_ZSTD_COMPRESSION != 0);
        let m = Message {
            kind: Kind::Request,
            correlation: None,
            start_ns: ts,
            end_ns: ts,
            size: 0,
            operation: "LOGIN".to_string(),
            query: None,
            namespace: schema.clone(),
            collection: None,
            error_code: None,
            rows: None,
        };
        let mut pend = self.push_request(ts, len, ReqKind::Login, seq, m, out);
        pend.schema = schema;
        pend.after_login = match (compress, zstd) {
            (_, true) => AfterLogin::Zstd,
            (true, _) => AfterLogin::Zlib,
            _ => AfterLogin::Plain,
        };
        self.queue(pend);
    }

    fn response_packet(
        &mut self,
        ts: u64,
        seq: u8,
        len: usize,
        p: &[u8],
        cont: bool,
        out: &mut Vec<Message>,
    ) {
        if cont {
            if let Some(cur) = &mut self.cur {
                cur.size += 4 + len as u64;
            }
            return;
        }
        if self.phase == Phase::Start {
            if seq == 0 && p.first() == Some(&10) {
                self.greeting(p);
                return;
            }
            self.phase = Phase::Command;
        }
        if self.phase == Phase::Greeted {
            // An ERR instead of a greeting, or noise: no request to answer.
            return;
        }
        let b0 = p.first().copied().unwrap_or(0);
        let mut cur = match self.cur.take() {
            Some(c) => c,
            None => {
                let Some(head) = self.pending.front() else {
                    return;
                };
                if head.kind != ReqKind::Login && seq != head.expect_seq {
                    // Not the start of the next response (a trailing EOF).
                    return;
                }
                let Some(req) = self.pending.pop_front() else {
                    return;
                };
                let state = match req.kind {
                    ReqKind::Login => RState::Login,
                    ReqKind::Query => RState::First,
                    ReqKind::Prepare => RState::PrepareOk,
                    ReqKind::Fetch => RState::Rows,
                    ReqKind::FieldList => RState::FieldList,
                    ReqKind::Stats => RState::Stats,
                    ReqKind::Simple => RState::Simple,
                };
                Cur {
                    req,
                    state,
                    start_ns: ts,
                    size: 0,
                    rows: 0,
                    result_set: false,
                }
            }
        };
        cur.size += 4 + len as u64;
        let is_eof = b0 == 0xFE && len <= 5;
        let is_term = b0 == 0xFE && len < MULTI;
        enum Next {
            Stay,
            Ok,
            Err,
        }
        let next = match cur.state {
            RState::Login => match b0 {
                0x00 => Next::Ok,
                0xFF => Next::Err,
                _ => Next::Stay,
            },
            RState::Simple | RState::Stats => {
                if b0 == 0xFF && cur.state == RState::Simple {
                    Next::Err
                } else {
                    Next::Ok
                }
            }
            RState::First | RState::Final => match b0 {
                0x00 => {
                    if ok_status(p) & SERVER_MORE_RESULTS_EXISTS != 0 {
                        cur.state = RState::First;
                        Next::Stay
                    } else {
                        Next::Ok
                    }
                }
                0xFF => Next::Err,
                _ if cur.state == RState::Final => Next::Stay,
                0xFE if len < MULTI => Next::Ok,
                0xFB => {
                    cur.state = RState::Final;
                    Next::Stay
                }
                _ => {
                    cur.result_set = true;
                    let n = lenenc(p, 0).map_or(0, |(n, _)| n);
                    cur.state = if n > MAX_COLUMNS {
                        // Not a column count: framing is lost somewhere.
                        RState::Rows
                    } else if n == 0 {
                        RState::AfterColumns
                    } else {
                        RState::Columns(n)
                    };
                    Next::Stay
                }
            },
            RState::Columns(n) => {
                if b0 == 0xFF {
                    Next::Err
                } else {
                    cur.state = if n <= 1 {
                        RState::AfterColumns
                    } else {
                        RState::Columns(n - 1)
                    };
                    Next::Stay
                }
            }
            RState::AfterColumns | RState::Rows => {
                if is_eof && cur.state == RState::AfterColumns {
                    cur.state = RState::Rows;
                    Next::Stay
                } else if is_term {
                    if terminator_status(p, len) & SERVER_MORE_RESULTS_EXISTS != 0 {
                        cur.state = RState::First;
                        Next::Stay
                    } else {
                        Next::Ok
                    }
                } else if b0 == 0xFF {
                    Next::Err
                } else {
                    cur.rows += 1;
                    cur.result_set = true;
                    cur.state = RState::Rows;
                    Next::Stay
                }
            }
            RState::PrepareOk => match b0 {
                0x00 => {
                    let id = u32le(p, 1);
                    let cols = u16le(p, 5).unwrap_or(0);
                    let params = u16le(p, 7).unwrap_or(0);
                    if let (Some(id), Some((op, q))) = (id, cur.req.stmt.take()) {
                        self.stmts.retain(|s| s.0 != id);
                        if self.stmts.len() >= MAX_STATEMENTS {
                            self.stmts.pop_front();
                        }
                        self.stmts.push_back((id, op, q));
                    }
                    let n = u64::from(cols) + u64::from(params);
                    if n == 0 {
                        Next::Ok
                    } else {
                        cur.state = RState::Defs(n);
                        Next::Stay
                    }
                }
                0xFF => Next::Err,
                _ => Next::Ok,
            },
            RState::Defs(n) => {
                if is_eof {
                    Next::Stay
                } else if n <= 1 {
                    Next::Ok
                } else {
                    cur.state = RState::Defs(n - 1);
                    Next::Stay
                }
            }
            RState::FieldList => match b0 {
                0xFE if len < MULTI => Next::Ok,
                0xFF => Next::Err,
                _ => Next::Stay,
            },
        };
        let (error_code, ok) = match next {
            Next::Stay => {
                self.cur = Some(cur);
                return;
            }
            Next::Ok => (None, true),
            Next::Err => (u16le(p, 1), false),
        };
        if ok {
            if let Some(s) = cur.req.schema.take() {
                self.schema = Some(s);
            }
            if cur.req.kind == ReqKind::Login {
                match cur.req.after_login {
                    AfterLogin::Zlib => {
                        for s in &mut self.sides {
                            s.compressed = true;
                        }
                    }
                    AfterLogin::Zstd => self.phase = Phase::Opaque,
                    AfterLogin::Plain => {}
                }
            }
        }
        out.push(Message {
            kind: Kind::Response,
            correlation: Some(cur.req.corr),
            start_ns: cur.start_ns,
            end_ns: ts,
            size: cur.size,
            operation: String::new(),
            query: None,
            namespace: None,
            collection: None,
            error_code: if ok {
                None
            } else {
                Some(error_code.unwrap_or(0))
            },
            rows: cur.result_set.then_some(cur.rows),
        });
    }

    fn greeting(&mut self, p: &[u8]) {
        self.phase = Phase::Greeted;
        // protocol(1) version NUL thread-id(4) auth-1(8) filler(1) caps-low(2)
        // charset(1) status(2) caps-high(2)
        let Some((_, at)) = cstr(p, 1) else { return };
        let low = u16le(p, at + 13).unwrap_or(0);
        let high = u16le(p, at + 18).unwrap_or(0);
        self.server_caps = u32::from(low) | u32::from(high) << 16;
    }
}
