//! Pure MongoDB wire-protocol parser: reassembled TCP bytes in, [`Msg`]s out.
//!
//! One [`Parser`] per flow holds a state machine for each direction. The host
//! offers bytes with [`Parser::feed`]; `data` is the unconsumed remainder of
//! the previous offer of that direction followed by new bytes. Every message
//! is framed by its header's `messageLength`; inside it only the fields the
//! decoder reports are read, element by element, and everything else (large
//! documents, arrays, binary payloads, document sequences) is skipped by its
//! length as it streams in, so the host never buffers a large message.
//!
//! * `OP_MSG` (2013): the command name is the first key of the kind-0 body
//!   document; `$db` is the database; the command's value, when a string and
//!   the command names a collection, is the collection (`getMore` names it in
//!   `collection`). Responses: `ok` (double, int or bool) `0` is an error,
//!   with `code` and `codeName`. `moreToCome` on a request means no response
//!   (a one-way message).
//! * Legacy `OP_QUERY` (2004, `db.$cmd` queries are commands named by the
//!   first key, other namespaces are `find`), `OP_GET_MORE` (2005) and
//!   `OP_REPLY` (1: `QueryFailure` or `ok: 0` in the first document is an
//!   error); `OP_INSERT`/`OP_UPDATE`/`OP_DELETE`/`OP_KILL_CURSORS` have no
//!   response (one-way). `OP_COMPRESSED` (2012) is reported by its original
//!   opcode, without looking inside.
//! * Pairing: a request's `requestID` and a response's `responseTo` are the
//!   correlation key. An exhaust cursor's later replies answer a reply, not a
//!   request: the host counts them as unmatched.
//! * BSON is read at the top level only (no recursion); element keys and the
//!   few string values kept are bounded.
//! * A direction's first bytes, and the bytes after a gap that broke framing,
//!   are scanned for a plausible header (sane length, known opcode, for
//!   `OP_MSG` known flag bits); skipped bytes are consumed.
//!
//! Nothing here panics on input and every buffer is bounded.

wasmtap_sdk::stream_parser!(Parser, Dir, Msg, ParseError);

#[cfg(test)]
mod tests;

/// Largest message accepted (MongoDB's `maxMessageSizeBytes`).
pub const MAX_MESSAGE: u32 = 48_000_000;

/// Longest element key read; a longer one ends the reading of a document.
const MAX_KEY: usize = 256;

/// Longest string value kept (command collection, `$db`, `codeName`).
const MAX_STRING: usize = 1024;

/// Longest `fullCollectionName` read in legacy messages.
const MAX_NS: usize = 1024;

/// Direction of a flow's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Client to server: requests.
    ToServer,
    /// Server to client: responses.
    ToClient,
}

/// What a [`Msg`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A request expecting a response.
    Request,
    /// A response.
    Response,
    /// A message that expects no response.
    OneWay,
}

/// One MongoDB message.
#[derive(Debug, Clone, PartialEq)]
pub struct Msg {
    /// Request, response or one-way.
    pub kind: Kind,
    /// `requestID` of a request, `responseTo` of a response.
    pub correlation: u64,
    /// Timestamp of the feed that offered the first byte.
    pub start_ns: u64,
    /// Timestamp of the feed that completed the message.
    pub end_ns: u64,
    /// `messageLength`.
    pub size: u64,
    /// Wire opcode (`2013` for `OP_MSG`); for `OP_COMPRESSED` the original.
    pub opcode: i32,
    /// The message was `OP_COMPRESSED`.
    pub compressed: bool,
    /// Requests: the command (`find`, `isMaster`...), or the legacy
    /// operation (`find`, `insert`, `getMore`...); empty when unknown.
    pub command: String,
    /// Requests: the database (`$db`, or the `fullCollectionName` prefix).
    pub database: Option<String>,
    /// Requests: the collection, when the command names one.
    pub collection: Option<String>,
    /// Responses: the `ok` field, when present.
    pub ok: Option<bool>,
    /// Responses: `code`.
    pub code: Option<i64>,
    /// Responses: `codeName`.
    pub code_name: Option<String>,
    /// `OP_REPLY`: the `QueryFailure` flag.
    pub query_failure: bool,
    /// `OP_REPLY`: `numberReturned`.
    pub returned: Option<i64>,
    /// The message's bytes did not all arrive (gap or end of flow).
    pub truncated: bool,
}

impl Msg {
    /// Whether the response reports an error.
    pub fn is_error(&self) -> bool {
        self.query_failure || self.ok == Some(false)
    }
}

/// Why a direction's bytes could not be parsed (never returned today: the
/// parser resynchronises instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError {
    /// A stable kebab-case reason.
    pub reason: &'static str,
    /// Offset in the direction's stream.
    pub offset: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Between messages.
    Header,
    /// `OP_MSG` flagBits.
    MsgFlags,
    /// `OP_MSG` section kind byte.
    Section,
    /// Legacy fixed prefix: `skip` bytes then, if `ns`, a cstring namespace.
    Legacy { pre: usize, ns: bool, post: usize },
    /// A document's length.
    DocLen,
    /// The next element of the body document.
    Elem,
    /// Skip to the end of the message.
    Rest,
}

#[derive(Debug)]
struct Side {
    synced: bool,
    stage: Stage,
    /// Bytes of the current message not yet consumed.
    msg_left: u64,
    /// Bytes of the body document not yet consumed.
    doc_left: u64,
    /// Bytes to skip before resuming `stage`.
    skip: u64,
    /// Elements read from the body document.
    elems: u32,
    cur: Option<Msg>,
}

impl Side {
    fn new() -> Self {
        Self {
            synced: false,
            stage: Stage::Header,
            msg_left: 0,
            doc_left: 0,
            skip: 0,
            elems: 0,
            cur: None,
        }
    }
}

/// Per-flow parser.
#[derive(Debug)]
pub struct Parser {
    sides: [Side; 2],
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

fn i32_at(b: &[u8], at: usize) -> Option<i32> {
    let s: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(i32::from_le_bytes(s))
}

fn known_opcode(op: i32) -> bool {
    matches!(op, 1 | 2001 | 2002 | 2004..=2007 | 2012 | 2013)
}

/// A header good enough to start (or resynchronise) on.
fn plausible(b: &[u8], dir: Dir) -> bool {
    let (Some(len), Some(_id), Some(to), Some(op)) =
        (i32_at(b, 0), i32_at(b, 4), i32_at(b, 8), i32_at(b, 12))
    else {
        return false;
    };
    if len < 21 || len as u32 > MAX_MESSAGE || !known_opcode(op) {
        return false;
    }
    match dir {
        // Requests answer nothing; only replies come back.
        // (`responseTo` may be 0 in a reply: the first request's ID often is.)
        Dir::ToServer if to != 0 || op == 1 => return false,
        Dir::ToClient if !matches!(op, 1 | 2012 | 2013) => return false,
        _ => {}
    }
    match op {
        2013 => {
            len >= 21
                && i32_at(b, 16).is_some_and(|f| {
                    (f as u32) & !(1 | 2 | (1 << 16)) == 0 && b.get(20) <= Some(&1)
                })
        }
        1 => len >= 36,
        _ => true,
    }
}

fn legacy_name(op: i32) -> &'static str {
    match op {
        2001 => "update",
        2002 => "insert",
        2004 => "find",
        2005 => "getMore",
        2006 => "delete",
        2007 => "killCursors",
        1 => "reply",
        2012 => "compressed",
        _ => "msg",
    }
}

/// Commands whose string value is a collection name.
const COLLECTION_COMMANDS: [&str; 19] = [
    "find",
    "insert",
    "update",
    "delete",
    "aggregate",
    "count",
    "distinct",
    "findAndModify",
    "findandmodify",
    "mapReduce",
    "create",
    "drop",
    "createIndexes",
    "listIndexes",
    "dropIndexes",
    "collStats",
    "validate",
    "compact",
    "collMod",
];

/// A top-level element read at the start of a buffer.
enum Elem<'a> {
    /// Not enough bytes yet.
    More,
    /// Malformed or unsupported: stop reading the document.
    Stop,
    /// The document's terminating zero.
    End,
    /// An element: its key, its value (when small and kept), the bytes
    /// consumed now and the bytes to skip after.
    Item {
        key: &'a [u8],
        value: Value<'a>,
        used: usize,
        skip: u64,
    },
}

enum Value<'a> {
    Str(&'a [u8]),
    Num(f64),
    Int(i64),
    Bool(bool),
    Other,
}

/// Reads one element; `limit` = bytes the element may occupy (document and
/// message bounds).
fn element(b: &[u8], limit: u64) -> Elem<'_> {
    let Some(&t) = b.first() else {
        return Elem::More;
    };
    if t == 0 {
        return Elem::End;
    }
    let window = b.get(1..(1 + MAX_KEY + 1).min(b.len())).unwrap_or_default();
    let Some(nul) = window.iter().position(|&c| c == 0) else {
        return if window.len() > MAX_KEY || window.len() as u64 + 1 >= limit {
            Elem::Stop
        } else {
            Elem::More
        };
    };
    let key = window.get(..nul).unwrap_or_default();
    let v = 1 + nul + 1; // value offset
    let fixed = |n: usize| -> Elem<'_> {
        if (v + n) as u64 > limit {
            return Elem::Stop;
        }
        let Some(bytes) = b.get(v..v + n) else {
            return Elem::More;
        };
        let value = match (t, n) {
            (0x01, 8) => Value::Num(f64::from_le_bytes(bytes.try_into().unwrap_or([0; 8]))),
            (0x10, 4) => Value::Int(i64::from(i32::from_le_bytes(
                bytes.try_into().unwrap_or([0; 4]),
            ))),
            (0x12, 8) => Value::Int(i64::from_le_bytes(bytes.try_into().unwrap_or([0; 8]))),
            (0x08, 1) => Value::Bool(bytes.first() != Some(&0)),
            _ => Value::Other,
        };
        Elem::Item {
            key,
            value,
            used: v + n,
            skip: 0,
        }
    };
    match t {
        0x01 | 0x09 | 0x11 | 0x12 => fixed(8),
        0x10 => fixed(4),
        0x08 => fixed(1),
        0x07 => fixed(12),
        0x13 => fixed(16),
        0x06 | 0x0a | 0x7f | 0xff => fixed(0),
        0x02 | 0x0d | 0x0e | 0x03 | 0x04 | 0x05 | 0x0c | 0x0f => {
            let Some(n) = i32_at(b, v) else {
                return if (v + 4) as u64 > limit {
                    Elem::Stop
                } else {
                    Elem::More
                };
            };
            let Ok(n) = u64::try_from(n) else {
                return Elem::Stop;
            };
            // Bytes after the 4-byte length (and subtype for binary).
            let (head, tail) = match t {
                0x03 | 0x04 | 0x0f => (4, n.saturating_sub(4)),
                0x05 => (5, n),
                0x0c => (4, n.saturating_add(12)),
                _ => (4, n),
            };
            if (v + head) as u64 + tail > limit || (matches!(t, 0x03 | 0x04 | 0x0f) && n < 5) {
                return Elem::Stop;
            }
            if t == 0x02 && n >= 1 && n as usize <= MAX_STRING {
                let Some(s) = b.get(v + 4..v + 4 + n as usize) else {
                    return Elem::More;
                };
                return Elem::Item {
                    key,
                    value: Value::Str(s.strip_suffix(&[0]).unwrap_or(s)),
                    used: v + 4 + n as usize,
                    skip: 0,
                };
            }
            if b.len() < v + head {
                return Elem::More;
            }
            Elem::Item {
                key,
                value: Value::Other,
                used: v + head,
                skip: tail,
            }
        }
        0x0b => {
            // Regex: two cstrings, bounded.
            let rest = b.get(v..).unwrap_or_default();
            let mut nuls = rest
                .iter()
                .enumerate()
                .filter(|(_, c)| **c == 0)
                .map(|(i, _)| i);
            match (nuls.next(), nuls.next()) {
                (Some(_), Some(j)) if (v + j + 1) as u64 <= limit => Elem::Item {
                    key,
                    value: Value::Other,
                    used: v + j + 1,
                    skip: 0,
                },
                _ if rest.len() > 2 * MAX_STRING || (v + rest.len()) as u64 >= limit => Elem::Stop,
                _ => Elem::More,
            }
        }
        _ => Elem::Stop,
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Parser {
    /// A parser for one flow.
    pub fn new() -> Self {
        Self {
            sides: [Side::new(), Side::new()],
        }
    }

    /// Parses `data` (remainder plus new bytes of `dir`); pushes completed
    /// messages to `out` and returns the bytes consumed.
    pub fn feed(
        &mut self,
        dir: Dir,
        ts: u64,
        data: &[u8],
        out: &mut Vec<Msg>,
    ) -> Result<usize, ParseError> {
        let side = &mut self.sides[dir as usize];
        let mut pos = 0;
        loop {
            if side.stage != Stage::Header && side.msg_left == 0 {
                if let Some(mut m) = side.cur.take() {
                    m.end_ns = ts;
                    out.push(m);
                }
                side.stage = Stage::Header;
                side.skip = 0;
            }
            let rest = data.get(pos..).unwrap_or_default();
            if side.skip > 0 {
                let n = usize::try_from(side.skip.min(side.msg_left))
                    .unwrap_or(usize::MAX)
                    .min(rest.len());
                if n == 0 && side.msg_left > 0 {
                    return Ok(pos);
                }
                side.skip = side.skip.saturating_sub(n as u64);
                side.msg_left -= n as u64;
                pos += n;
                if side.msg_left == 0 {
                    side.skip = 0;
                }
                continue;
            }
            match step(side, dir, ts, rest) {
                Some(n) => pos += n,
                None => return Ok(pos),
            }
        }
    }

    /// `len` bytes of `dir` were never captured.
    pub fn gap(&mut self, dir: Dir, len: u64, out: &mut Vec<Msg>) -> Result<(), ParseError> {
        let side = &mut self.sides[dir as usize];
        if side.stage == Stage::Header {
            side.synced = false;
            return Ok(());
        }
        if len < side.msg_left {
            // Inside a message: framing survives; what we skipped is lost.
            side.msg_left -= len;
            if let Some(m) = side.cur.as_mut() {
                m.truncated = true;
            }
            if len <= side.skip {
                side.skip -= len;
            } else {
                side.skip = 0;
                side.stage = Stage::Rest;
            }
            return Ok(());
        }
        if let Some(mut m) = side.cur.take() {
            m.truncated = true;
            out.push(m);
        }
        side.msg_left = 0;
        side.skip = 0;
        side.stage = Stage::Header;
        side.synced = false;
        Ok(())
    }

    /// The flow ended: reports messages cut short.
    pub fn close(&mut self, ts: u64, out: &mut Vec<Msg>) {
        for side in &mut self.sides {
            if let Some(mut m) = side.cur.take() {
                m.truncated = true;
                m.end_ns = m.end_ns.max(ts);
                out.push(m);
            }
            side.stage = Stage::Header;
        }
    }
}

/// One step of the state machine at the start of `rest`: `Some(bytes used)`
/// (possibly 0 when only the stage changed), `None` to wait for more data.
fn step(side: &mut Side, dir: Dir, ts: u64, rest: &[u8]) -> Option<usize> {
    match side.stage {
        Stage::Header => {
            if rest.len() < 21 {
                // Every message is at least 21 bytes (OP_MSG's minimum).
                return None;
            }
            if !side.synced {
                if !plausible(rest, dir) {
                    // Scan for the next plausible header.
                    let mut i = 1;
                    while i + 21 <= rest.len() {
                        if plausible(rest.get(i..).unwrap_or_default(), dir) {
                            return Some(i);
                        }
                        i += 1;
                    }
                    return Some(i);
                }
                side.synced = true;
            }
            if !plausible(rest, dir) {
                side.synced = false;
                return Some(0);
            }
            start(side, dir, ts, rest)
        }
        Stage::MsgFlags => {
            let f = i32_at(rest, 0)? as u32;
            if f & 2 != 0
                && dir == Dir::ToServer
                && let Some(m) = side.cur.as_mut()
            {
                // moreToCome: the server sends no reply.
                m.kind = Kind::OneWay;
            }
            side.msg_left = side.msg_left.saturating_sub(4);
            side.stage = Stage::Section;
            Some(4)
        }
        Stage::Section => {
            let kind = *rest.first()?;
            match kind {
                0 => {
                    side.msg_left -= 1;
                    side.stage = Stage::DocLen;
                    Some(1)
                }
                1 => {
                    // Document sequence: size (covers itself), skipped.
                    let n = i32_at(rest, 1)?;
                    let n = u64::try_from(n).unwrap_or(0);
                    if n < 4 || n + 1 > side.msg_left {
                        side.stage = Stage::Rest;
                        return Some(0);
                    }
                    side.msg_left -= 5;
                    side.skip = n - 4;
                    Some(5)
                }
                _ => {
                    side.stage = Stage::Rest;
                    Some(0)
                }
            }
        }
        Stage::Legacy { pre, ns, post } => {
            if side.msg_left < pre as u64 {
                side.stage = Stage::Rest;
                return Some(0);
            }
            let mut used = pre;
            if ns {
                let window = rest
                    .get(pre..(pre + MAX_NS + 1).min(rest.len()))
                    .unwrap_or_default();
                let Some(nul) = window.iter().position(|&c| c == 0) else {
                    if window.len() > MAX_NS || (pre + window.len()) as u64 >= side.msg_left {
                        side.stage = Stage::Rest;
                        return Some(0);
                    }
                    return None;
                };
                let name = window.get(..nul).unwrap_or_default();
                if let Some(m) = side.cur.as_mut() {
                    let (db, coll) = match name.iter().position(|&c| c == b'.') {
                        Some(d) => (
                            name.get(..d).unwrap_or_default(),
                            name.get(d + 1..).unwrap_or_default(),
                        ),
                        None => (name, &[][..]),
                    };
                    m.database = Some(text(db));
                    if coll != b"$cmd" && !coll.is_empty() {
                        m.collection = Some(text(coll));
                    } else if m.opcode == 2004 {
                        // A command: named by the query document's first key.
                        m.command.clear();
                    }
                }
                used += nul + 1;
            }
            if rest.len() < used + post {
                return None;
            }
            if let Some(m) = side.cur.as_mut()
                && m.opcode == 1
            {
                let flags = i32_at(rest, 0).unwrap_or(0);
                m.query_failure = flags & 2 != 0;
                m.returned = i32_at(rest, 16).map(i64::from);
            }
            used += post;
            if used as u64 > side.msg_left {
                side.stage = Stage::Rest;
                return Some(0);
            }
            side.msg_left -= used as u64;
            let wants_doc = side
                .cur
                .as_ref()
                .is_some_and(|m| m.opcode == 1 || (m.opcode == 2004 && m.command.is_empty()));
            side.stage = if wants_doc && side.msg_left > 0 {
                Stage::DocLen
            } else {
                Stage::Rest
            };
            Some(used)
        }
        Stage::DocLen => {
            let n = i32_at(rest, 0)?;
            let n = u64::try_from(n).unwrap_or(0);
            if n < 5 || n > side.msg_left {
                side.stage = Stage::Rest;
                return Some(0);
            }
            side.msg_left -= 4;
            side.doc_left = n - 4;
            side.elems = 0;
            side.stage = Stage::Elem;
            Some(4)
        }
        Stage::Elem => {
            let limit = side.doc_left.saturating_sub(1).min(side.msg_left);
            match element(rest, limit) {
                Elem::More => None,
                Elem::Stop | Elem::End => {
                    side.stage = Stage::Rest;
                    Some(0)
                }
                Elem::Item {
                    key,
                    value,
                    used,
                    skip,
                } => {
                    if let Some(m) = side.cur.as_mut() {
                        record(m, side.elems, key, &value);
                    }
                    side.elems = side.elems.saturating_add(1);
                    side.msg_left -= used as u64;
                    side.doc_left = side.doc_left.saturating_sub(used as u64 + skip);
                    side.skip = skip;
                    Some(used)
                }
            }
        }
        Stage::Rest => {
            let n = usize::try_from(side.msg_left)
                .unwrap_or(usize::MAX)
                .min(rest.len());
            if n == 0 {
                return None;
            }
            side.msg_left -= n as u64;
            Some(n)
        }
    }
}

/// Starts a message at a header (known plausible).
fn start(side: &mut Side, dir: Dir, ts: u64, rest: &[u8]) -> Option<usize> {
    let len = i32_at(rest, 0)?;
    let id = i32_at(rest, 4)?;
    let to = i32_at(rest, 8)?;
    let mut op = i32_at(rest, 12)?;
    let mut compressed = false;
    let mut used = 16;
    if op == 2012 {
        // originalOpcode, uncompressedSize, compressorId: the rest is opaque.
        op = i32_at(rest, 16)?;
        compressed = true;
    }
    let kind = match (dir, op) {
        (Dir::ToClient, _) => Kind::Response,
        (Dir::ToServer, 2001 | 2002 | 2006 | 2007) => Kind::OneWay,
        _ => Kind::Request,
    };
    let m = Msg {
        kind,
        correlation: u64::from((if dir == Dir::ToServer { id } else { to }) as u32),
        start_ns: ts,
        end_ns: ts,
        size: len as u64,
        opcode: op,
        compressed,
        command: if op == 2013 || kind == Kind::Response {
            String::new()
        } else {
            legacy_name(op).to_string()
        },
        database: None,
        collection: None,
        ok: None,
        code: None,
        code_name: None,
        query_failure: false,
        returned: None,
        truncated: false,
    };
    side.cur = Some(m);
    side.msg_left = (len as u64).saturating_sub(16);
    side.skip = 0;
    side.stage = if compressed {
        Stage::Rest
    } else {
        match op {
            2013 => Stage::MsgFlags,
            // flags, fullCollectionName, numberToSkip, numberToReturn, query.
            2004 => Stage::Legacy {
                pre: 4,
                ns: true,
                post: 8,
            },
            // ZERO, fullCollectionName, then the rest is not read.
            2001 | 2005 | 2006 => Stage::Legacy {
                pre: 4,
                ns: true,
                post: 0,
            },
            // flags, fullCollectionName.
            2002 => Stage::Legacy {
                pre: 4,
                ns: true,
                post: 0,
            },
            // responseFlags, cursorID, startingFrom, numberReturned, docs.
            1 => Stage::Legacy {
                pre: 20,
                ns: false,
                post: 0,
            },
            _ => Stage::Rest,
        }
    };
    if side.msg_left == 0 {
        side.stage = Stage::Rest;
    }
    used = used.min(rest.len());
    Some(used)
}

/// Keeps what the decoder reports from a body element.
fn record(m: &mut Msg, index: u32, key: &[u8], value: &Value<'_>) {
    if m.kind != Kind::Response {
        if index == 0 {
            if m.opcode == 2004 && key == b"$query" {
                m.command = "find".to_string();
                return;
            }
            m.command = text(key);
            if let Value::Str(s) = value
                && COLLECTION_COMMANDS.contains(&m.command.as_str())
            {
                m.collection = Some(text(s));
            }
            return;
        }
        match (key, value) {
            (b"$db", Value::Str(s)) => m.database = Some(text(s)),
            (b"collection", Value::Str(s)) if m.command == "getMore" => {
                m.collection = Some(text(s));
            }
            _ => {}
        }
        return;
    }
    match (key, value) {
        (b"ok", Value::Num(f)) => m.ok = Some(*f != 0.0),
        (b"ok", Value::Int(i)) => m.ok = Some(*i != 0),
        (b"ok", Value::Bool(b)) => m.ok = Some(*b),
        (b"code", Value::Int(i)) => m.code = Some(*i),
        (b"code", Value::Num(f)) if f.is_finite() => m.code = Some(*f as i64),
        (b"codeName", Value::Str(s)) => m.code_name = Some(text(s)),
        _ => {}
    }
}

/// Whether `data`, the first bytes of a flow in `dir`, starts with a
/// plausible MongoDB message header.
pub fn probe(data: &[u8], dir: Dir) -> bool {
    plausible(data, dir)
}
