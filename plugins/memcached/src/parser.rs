//! Pure memcached parser (text, meta and binary protocols): reassembled TCP
//! bytes in, [`Msg`]s out.
//!
//! One [`Parser`] per flow holds a state machine for each direction. The host
//! offers bytes with [`Parser::feed`]; `data` is the unconsumed remainder of
//! the previous offer of that direction followed by new bytes. A command or
//! response line is consumed only once complete; value data blocks (storage
//! commands, `VALUE`/`VA` responses, binary bodies) are consumed as they
//! stream in, so the host never buffers a large value.
//!
//! * Text protocol: every request line is a request (unknown commands too:
//!   the server answers them with `ERROR`); storage commands (`set`, `add`,
//!   `replace`, `append`, `prepend`, `cas`, meta `ms`) carry a data block.
//!   Commands with `noreply`, meta commands with the `q` flag, and `quit`
//!   expect no answer and are reported as one-way messages, so the host's
//!   in-order pairing stays aligned (limitation: a quiet meta command that
//!   still gets an answer, e.g. an `mg ... q` hit, leaves that answer to pair
//!   with the next request). A `get`/`gets`/`gat`/`gats` answer (any
//!   number of `VALUE` blocks, then `END`) is one response whose
//!   `returned_rows` counts the hits; `stats` (`STAT` lines then `END`) is one
//!   response too.
//! * Binary protocol (first byte `0x80`): 24-byte header; a request's opaque
//!   is its correlation key, echoed by the response. Quiet opcodes (`getq`,
//!   `setq`, ...) are answered only on a miss or failure: when a later
//!   request's response shows the server moved past a quiet request, the
//!   parser reports a synthetic empty response for it (a miss for the
//!   get-family, success otherwise). A `stat` answer (one packet per
//!   statistic, ended by one with an empty key) is one response.
//! * A direction's first bytes, and the bytes after a gap that broke framing,
//!   are scanned for a line that starts with a known command (request side) or
//!   response word (response side), or, in binary mode, for a plausible
//!   header. Skipped bytes are consumed.
//!
//! Nothing here panics on input and every buffer is bounded.

use std::collections::VecDeque;

wasmtap_sdk::stream_parser!(Parser, Dir, Msg, ParseError);

#[cfg(test)]
mod tests;

/// Longest text line (command or response line) before the parser gives up
/// on the line and resynchronises.
pub const MAX_LINE: usize = 8 * 1024;

/// Binary requests remembered while awaiting their responses.
pub const MAX_PENDING: usize = 1024;

/// Largest binary body accepted as plausible while resynchronising.
const MAX_RESYNC_BODY: u32 = 64 * 1024 * 1024;

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
    /// A request that expects no response (`noreply`, `quit`, meta `q`).
    OneWay,
}

/// One memcached message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    /// Request, response or one-way.
    pub kind: Kind,
    /// Binary protocol: the opaque (pairs a response with its request).
    pub correlation: Option<u64>,
    /// Timestamp of the feed that offered the first byte.
    pub start_ns: u64,
    /// Timestamp of the feed that completed the message.
    pub end_ns: u64,
    /// Bytes on the wire (lines and data blocks, binary header and body).
    pub size: u64,
    /// Requests: the command (`get`, `set`, binary `getq`...), or `_OTHER`.
    pub op: String,
    /// Requests: the command line with every argument replaced by `?`
    /// (`noreply` kept), or the raw line when asked for.
    pub query: Option<String>,
    /// Number of keys a request names.
    pub keys: u32,
    /// Responses: the status word (`STORED`, `END`, `NOT_FOUND`, binary
    /// `KEY_NOT_FOUND`...); empty for a numeric `incr`/`decr` result.
    pub status: String,
    /// Responses: the server reports an error (`ERROR`, `CLIENT_ERROR`,
    /// `SERVER_ERROR`, binary error statuses).
    pub error: bool,
    /// Responses to retrievals: values returned.
    pub rows: Option<u64>,
    /// Binary protocol message.
    pub binary: bool,
    /// Binary protocol: the opcode.
    pub opcode: Option<u8>,
    /// A gap or the end of the flow cut the message short.
    pub truncated: bool,
}

impl Msg {
    fn new(kind: Kind, ts: u64) -> Self {
        Self {
            kind,
            correlation: None,
            start_ns: ts,
            end_ns: ts,
            size: 0,
            op: String::new(),
            query: None,
            keys: 0,
            status: String::new(),
            error: false,
            rows: None,
            binary: false,
            opcode: None,
            truncated: false,
        }
    }
}

/// Why a direction's bytes could not be parsed (never returned today: the
/// parser resynchronises instead; kept for the session glue).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError {
    /// A stable kebab-case reason.
    pub reason: &'static str,
    /// Offset in the direction's stream.
    pub offset: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Unknown,
    Text,
    Binary,
}

/// What to do with the current message once its data block is consumed.
#[derive(Debug)]
enum Pending {
    /// Report it.
    Emit(Msg),
    /// A text multi-line response (`VALUE`/`STAT` lines until `END`).
    Multi(Msg),
    /// Consume silently (a non-final binary `stat` packet); the message is
    /// the one being accumulated.
    Quiet(Msg),
}

#[derive(Debug)]
struct Side {
    mode: Mode,
    synced: bool,
    /// Unsynchronised, and the bytes consumed so far ended inside a line.
    mid_line: bool,
    skip: u64,
    cur: Option<Pending>,
    offset: u64,
}

impl Side {
    fn new() -> Self {
        Self {
            mode: Mode::Unknown,
            synced: false,
            mid_line: false,
            skip: 0,
            cur: None,
            offset: 0,
        }
    }
}

/// A binary request awaiting its response.
#[derive(Debug, Clone, Copy)]
struct BinPending {
    opaque: u32,
    opcode: u8,
}

/// Per-flow parser.
#[derive(Debug)]
pub struct Parser {
    raw: bool,
    sides: [Side; 2],
    bin_pending: VecDeque<BinPending>,
    /// Binary `stat` response being accumulated (multi-packet).
    bin_stat: Option<Msg>,
}

const STORAGE: [&str; 6] = ["set", "add", "replace", "append", "prepend", "cas"];

const COMMANDS: [&str; 29] = [
    "get",
    "gets",
    "gat",
    "gats",
    "set",
    "add",
    "replace",
    "append",
    "prepend",
    "cas",
    "delete",
    "incr",
    "decr",
    "touch",
    "stats",
    "version",
    "flush_all",
    "quit",
    "verbosity",
    "mg",
    "ms",
    "md",
    "ma",
    "mn",
    "me",
    "shutdown",
    "cache_memlimit",
    "lru_crawler",
    "slabs",
];

const RESPONSES: [&str; 25] = [
    "VALUE",
    "END",
    "STORED",
    "NOT_STORED",
    "EXISTS",
    "NOT_FOUND",
    "DELETED",
    "TOUCHED",
    "OK",
    "VERSION",
    "STAT",
    "ITEM",
    "PREFIX",
    "ERROR",
    "CLIENT_ERROR",
    "SERVER_ERROR",
    "RESET",
    "HD",
    "NF",
    "NS",
    "EX",
    "EN",
    "MN",
    "VA",
    "ME",
];

/// Lines that continue a multi-line response.
const MULTI: [&str; 4] = ["VALUE", "STAT", "ITEM", "PREFIX"];

fn known_word(line: &[u8], words: &[&str]) -> Option<&'static str> {
    let end = line
        .iter()
        .position(|&b| b == b' ' || b == b'\r' || b == b'\n')
        .unwrap_or(line.len());
    let w = line.get(..end)?;
    words
        .iter()
        .find(|k| k.as_bytes() == w)
        .map(|k| static_word(k))
}

/// Maps a word of one of the tables to its `'static` copy.
fn static_word(w: &str) -> &'static str {
    COMMANDS
        .iter()
        .chain(RESPONSES.iter())
        .find(|k| **k == w)
        .copied()
        .unwrap_or("_OTHER")
}

fn tokens(line: &[u8]) -> Vec<&[u8]> {
    line.split(|&b| b == b' ' || b == b'\t')
        .filter(|t| !t.is_empty())
        .take(1024)
        .collect()
}

fn parse_u64(t: Option<&&[u8]>) -> Option<u64> {
    let t = t?;
    if t.is_empty() || t.len() > 19 || !t.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(t).ok()?.parse().ok()
}

/// Binary opcode names (text-protocol spelling) and whether they are quiet.
fn bin_op(op: u8) -> Option<(&'static str, bool)> {
    Some(match op {
        0x00 => ("get", false),
        0x01 => ("set", false),
        0x02 => ("add", false),
        0x03 => ("replace", false),
        0x04 => ("delete", false),
        0x05 => ("incr", false),
        0x06 => ("decr", false),
        0x07 => ("quit", false),
        0x08 => ("flush", false),
        0x09 => ("getq", true),
        0x0a => ("noop", false),
        0x0b => ("version", false),
        0x0c => ("getk", false),
        0x0d => ("getkq", true),
        0x0e => ("append", false),
        0x0f => ("prepend", false),
        0x10 => ("stat", false),
        0x11 => ("setq", true),
        0x12 => ("addq", true),
        0x13 => ("replaceq", true),
        0x14 => ("deleteq", true),
        0x15 => ("incrq", true),
        0x16 => ("decrq", true),
        0x17 => ("quitq", true),
        0x18 => ("flushq", true),
        0x19 => ("appendq", true),
        0x1a => ("prependq", true),
        0x1b => ("verbosity", false),
        0x1c => ("touch", false),
        0x1d => ("gat", false),
        0x1e => ("gatq", true),
        0x20 => ("sasl_list_mechs", false),
        0x21 => ("sasl_auth", false),
        0x22 => ("sasl_step", false),
        0x23 => ("gatk", false),
        0x24 => ("gatkq", true),
        _ => return None,
    })
}

/// Get-family opcodes (a silent quiet one is a miss; a success is a hit).
fn bin_is_get(op: u8) -> bool {
    matches!(op, 0x00 | 0x09 | 0x0c | 0x0d | 0x1d | 0x1e | 0x23 | 0x24)
}

/// Binary status name and whether it is an error.
fn bin_status(s: u16) -> (String, bool) {
    let (name, err) = match s {
        0x00 => ("NO_ERROR", false),
        0x01 => ("KEY_NOT_FOUND", false),
        0x02 => ("KEY_EXISTS", false),
        0x03 => ("VALUE_TOO_LARGE", true),
        0x04 => ("INVALID_ARGUMENTS", true),
        0x05 => ("ITEM_NOT_STORED", false),
        0x06 => ("NON_NUMERIC_VALUE", true),
        0x07 => ("VBUCKET_MISMATCH", true),
        0x08 => ("AUTH_ERROR", true),
        0x09 => ("AUTH_CONTINUE", false),
        0x20 => ("AUTH_ERROR", true),
        0x81 => ("UNKNOWN_COMMAND", true),
        0x82 => ("OUT_OF_MEMORY", true),
        0x83 => ("NOT_SUPPORTED", true),
        0x84 => ("INTERNAL_ERROR", true),
        0x85 => ("BUSY", true),
        0x86 => ("TEMPORARY_FAILURE", true),
        _ => return (format!("0x{s:04x}"), true),
    };
    (name.to_string(), err)
}

/// A parsed binary header.
#[derive(Debug, Clone, Copy)]
struct BinHeader {
    opcode: u8,
    key_len: u16,
    status: u16,
    body_len: u32,
    opaque: u32,
}

fn bin_header(h: &[u8], magic: u8) -> Option<BinHeader> {
    let h: &[u8; 24] = h.get(..24)?.try_into().ok()?;
    if h[0] != magic {
        return None;
    }
    let key_len = u16::from_be_bytes([h[2], h[3]]);
    let extras = u32::from(h[4]);
    let body_len = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
    if extras + u32::from(key_len) > body_len {
        return None;
    }
    Some(BinHeader {
        opcode: h[1],
        key_len,
        status: u16::from_be_bytes([h[6], h[7]]),
        body_len,
        opaque: u32::from_be_bytes([h[12], h[13], h[14], h[15]]),
    })
}

/// A header good enough to resynchronise on.
fn plausible(h: &[u8], magic: u8) -> bool {
    bin_header(h, magic).is_some_and(|b| {
        bin_op(b.opcode).is_some() && h.get(5) == Some(&0) && b.body_len <= MAX_RESYNC_BODY
    })
}

impl Parser {
    /// A parser; `raw` keeps the raw command line in [`Msg::query`].
    pub fn new(raw: bool) -> Self {
        Self {
            raw,
            sides: [Side::new(), Side::new()],
            bin_pending: VecDeque::new(),
            bin_stat: None,
        }
    }

    /// Whether `dir` is inside a message (a data block or a multi-line
    /// response) that needs more bytes.
    pub fn mid_value(&self, dir: Dir) -> bool {
        self.sides[dir as usize].cur.is_some()
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
        let mut pos = 0;
        loop {
            let side = &mut self.sides[dir as usize];
            // Stream a data block.
            if side.skip > 0 {
                let left = data.len().saturating_sub(pos);
                let n = usize::try_from(side.skip).unwrap_or(usize::MAX).min(left);
                side.skip -= n as u64;
                pos += n;
                side.offset += n as u64;
                if let Some(Pending::Emit(m) | Pending::Multi(m) | Pending::Quiet(m)) =
                    side.cur.as_mut()
                {
                    m.size += n as u64;
                    m.end_ns = ts;
                }
                if side.skip > 0 {
                    return Ok(pos);
                }
                match side.cur.take() {
                    Some(Pending::Emit(m)) => self.finish(dir, m, out),
                    Some(Pending::Quiet(m)) => self.bin_stat = Some(m),
                    other => side.cur = other,
                }
                continue;
            }
            let rest = data.get(pos..).unwrap_or_default();
            if rest.is_empty() {
                return Ok(pos);
            }
            let side = &mut self.sides[dir as usize];
            if side.mode == Mode::Unknown {
                let magic = if dir == Dir::ToServer { 0x80 } else { 0x81 };
                if rest.first() == Some(&magic) {
                    if rest.len() < 24 {
                        return Ok(pos);
                    }
                    if plausible(rest, magic) {
                        side.mode = Mode::Binary;
                        side.synced = true;
                    } else {
                        side.mode = Mode::Text;
                    }
                } else {
                    side.mode = Mode::Text;
                }
            }
            let used = match side.mode {
                Mode::Binary => self.binary(dir, ts, rest, out),
                _ => self.text(dir, ts, rest, out),
            };
            let Some(used) = used else {
                return Ok(pos);
            };
            pos += used;
            self.sides[dir as usize].offset += used as u64;
        }
    }

    /// `len` bytes of `dir` were never captured.
    pub fn gap(&mut self, dir: Dir, len: u64, out: &mut Vec<Msg>) -> Result<(), ParseError> {
        let side = &mut self.sides[dir as usize];
        side.offset += len;
        if side.skip > 0 && len <= side.skip {
            // The hole is inside a data block: framing survives.
            side.skip -= len;
            if let Some(Pending::Emit(m) | Pending::Multi(m) | Pending::Quiet(m)) =
                side.cur.as_mut()
            {
                m.size += len;
                m.truncated = true;
            }
            if side.skip == 0 {
                match side.cur.take() {
                    Some(Pending::Emit(m)) => self.finish(dir, m, out),
                    Some(Pending::Quiet(m)) => self.bin_stat = Some(m),
                    other => side.cur = other,
                }
            }
            return Ok(());
        }
        side.skip = 0;
        side.synced = false;
        side.mid_line = false;
        if let Some(Pending::Emit(mut m) | Pending::Multi(mut m)) = side.cur.take() {
            m.truncated = true;
            self.finish(dir, m, out);
        }
        Ok(())
    }

    /// The flow ended: reports messages cut short.
    pub fn close(&mut self, ts: u64, out: &mut Vec<Msg>) {
        for dir in [Dir::ToServer, Dir::ToClient] {
            if let Some(Pending::Emit(mut m) | Pending::Multi(mut m)) =
                self.sides[dir as usize].cur.take()
            {
                m.truncated = true;
                m.end_ns = m.end_ns.max(ts);
                self.finish(dir, m, out);
            }
        }
    }

    /// Reports a completed message; binary responses settle quiet requests.
    fn finish(&mut self, dir: Dir, m: Msg, out: &mut Vec<Msg>) {
        if !m.binary {
            out.push(m);
            return;
        }
        let Some(key) = m.correlation else {
            out.push(m);
            return;
        };
        let opaque = u32::try_from(key).unwrap_or(0);
        match (dir, m.kind) {
            (Dir::ToServer, Kind::Request) => {
                if self.bin_pending.len() >= MAX_PENDING {
                    self.bin_pending.pop_front();
                }
                let opcode = m.opcode.unwrap_or(0xff);
                self.bin_pending.push_back(BinPending { opaque, opcode });
                out.push(m);
            }
            (Dir::ToClient, Kind::Response) => {
                if let Some(i) = self.bin_pending.iter().position(|p| p.opaque == opaque) {
                    // Quiet requests sent before this one were answered by silence.
                    let before: Vec<BinPending> = self.bin_pending.drain(..i).collect();
                    let mut keep = VecDeque::new();
                    for p in before {
                        if bin_op(p.opcode).is_some_and(|(_, quiet)| quiet) {
                            let mut r = Msg::new(Kind::Response, m.start_ns);
                            r.binary = true;
                            r.correlation = Some(u64::from(p.opaque));
                            if bin_is_get(p.opcode) {
                                r.status = "KEY_NOT_FOUND".to_string();
                                r.rows = Some(0);
                            } else {
                                r.status = "NO_ERROR".to_string();
                            }
                            out.push(r);
                        } else {
                            keep.push_back(p);
                        }
                    }
                    self.bin_pending.pop_front();
                    keep.extend(self.bin_pending.drain(..));
                    self.bin_pending = keep;
                }
                out.push(m);
            }
            _ => out.push(m),
        }
    }

    /// Parses one text element at the start of `rest`; returns bytes used
    /// (`None`: need more data).
    fn text(&mut self, dir: Dir, ts: u64, rest: &[u8], out: &mut Vec<Msg>) -> Option<usize> {
        let words: &[&str] = if dir == Dir::ToServer {
            &COMMANDS
        } else {
            &RESPONSES
        };
        let side = &mut self.sides[dir as usize];
        let window = rest.get(..MAX_LINE).unwrap_or(rest);
        let Some(nl) = window.iter().position(|&b| b == b'\n') else {
            if rest.len() >= MAX_LINE {
                // Overlong line: drop it and look for the next line start.
                side.synced = false;
                side.mid_line = true;
                return Some(rest.len());
            }
            if !side.synced {
                // Keep a remainder only while it may begin a known word.
                let prefix_ok = words.iter().any(|w| {
                    let w = w.as_bytes();
                    let n = w.len().min(rest.len());
                    w.get(..n) == rest.get(..n)
                });
                if side.mid_line || !prefix_ok {
                    side.mid_line = true;
                    return Some(rest.len());
                }
            }
            return None;
        };
        let line_len = nl + 1;
        let line = rest.get(..nl).unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !side.synced {
            if side.mid_line || known_word(line, words).is_none() {
                side.mid_line = false;
                return Some(line_len);
            }
            side.synced = true;
        }
        match dir {
            Dir::ToServer => self.request_line(ts, line, line_len as u64, out),
            Dir::ToClient => self.response_line(ts, line, line_len as u64, out),
        }
        Some(line_len)
    }

    fn request_line(&mut self, ts: u64, line: &[u8], len: u64, out: &mut Vec<Msg>) {
        let toks = tokens(line);
        let cmd = known_word(line, &COMMANDS).unwrap_or("_OTHER");
        let mut m = Msg::new(Kind::Request, ts);
        m.size = len;
        m.op = cmd.to_string();
        let last = toks.last().copied().unwrap_or_default();
        let noreply = toks.len() > 1 && last == b"noreply";
        let meta = cmd.len() == 2 && cmd.starts_with('m');
        let quiet_meta = meta && toks.iter().skip(2).any(|t| *t == b"q");
        if noreply || quiet_meta || cmd == "quit" {
            m.kind = Kind::OneWay;
        }
        m.keys = match cmd {
            "get" | "gets" => toks.len().saturating_sub(1) as u32,
            "gat" | "gats" => toks.len().saturating_sub(2) as u32,
            "mn" | "me" | "stats" | "version" | "flush_all" | "quit" | "verbosity" => 0,
            "_OTHER" => 0,
            _ => u32::from(toks.len() > 1),
        };
        m.query = Some(if self.raw {
            String::from_utf8_lossy(line).into_owned()
        } else {
            let mut q = String::from(if cmd == "_OTHER" { "?" } else { cmd });
            for t in toks.iter().skip(1) {
                q.push_str(if *t == b"noreply" { " noreply" } else { " ?" });
            }
            q
        });
        let data = if STORAGE.contains(&cmd) {
            parse_u64(toks.get(4))
        } else if cmd == "ms" {
            parse_u64(toks.get(2))
        } else {
            None
        };
        let side = &mut self.sides[Dir::ToServer as usize];
        match data {
            Some(n) => {
                side.skip = n.saturating_add(2);
                side.cur = Some(Pending::Emit(m));
            }
            None => out.push(m),
        }
    }

    fn response_line(&mut self, ts: u64, line: &[u8], len: u64, out: &mut Vec<Msg>) {
        let toks = tokens(line);
        let word = known_word(line, &RESPONSES);
        let side = &mut self.sides[Dir::ToClient as usize];
        // Inside a multi-line response.
        if let Some(Pending::Multi(mut m)) = side.cur.take() {
            m.size += len;
            m.end_ns = ts;
            match word {
                Some("VALUE") => {
                    m.rows = Some(m.rows.unwrap_or(0) + 1);
                    side.skip = parse_u64(toks.get(3)).unwrap_or(0).saturating_add(2);
                    side.cur = Some(Pending::Multi(m));
                }
                Some("END") => out.push(m),
                Some(w @ ("ERROR" | "CLIENT_ERROR" | "SERVER_ERROR")) => {
                    m.status = w.to_string();
                    m.error = true;
                    out.push(m);
                }
                Some(w) if !MULTI.contains(&w) => {
                    // Another response began: the multi-line one ended early.
                    m.size -= len;
                    m.truncated = true;
                    out.push(m);
                    self.response_line(ts, line, len, out);
                }
                _ => side.cur = Some(Pending::Multi(m)),
            }
            return;
        }
        let mut m = Msg::new(Kind::Response, ts);
        m.size = len;
        match word {
            Some("VALUE") => {
                m.status = "VALUE".to_string();
                m.rows = Some(1);
                side.skip = parse_u64(toks.get(3)).unwrap_or(0).saturating_add(2);
                side.cur = Some(Pending::Multi(m));
            }
            Some(w @ ("STAT" | "ITEM" | "PREFIX")) => {
                m.status = w.to_string();
                side.cur = Some(Pending::Multi(m));
            }
            Some("END") => {
                m.status = "END".to_string();
                m.rows = Some(0);
                out.push(m);
            }
            Some("VA") => {
                m.status = "VA".to_string();
                m.rows = Some(1);
                match parse_u64(toks.get(1)) {
                    Some(n) => {
                        side.skip = n.saturating_add(2);
                        side.cur = Some(Pending::Emit(m));
                    }
                    None => out.push(m),
                }
            }
            Some("EN") => {
                m.status = "EN".to_string();
                m.rows = Some(0);
                out.push(m);
            }
            Some(w) => {
                m.status = w.to_string();
                m.error = matches!(w, "ERROR" | "CLIENT_ERROR" | "SERVER_ERROR");
                out.push(m);
            }
            // incr/decr result, or something unknown.
            None => out.push(m),
        }
    }

    /// Parses one binary element at the start of `rest`.
    fn binary(&mut self, dir: Dir, ts: u64, rest: &[u8], out: &mut Vec<Msg>) -> Option<usize> {
        let magic = if dir == Dir::ToServer { 0x80 } else { 0x81 };
        let side = &mut self.sides[dir as usize];
        if !side.synced {
            // Look for a plausible header.
            let mut i = 0;
            while i + 24 <= rest.len() {
                if plausible(rest.get(i..).unwrap_or_default(), magic) {
                    side.synced = true;
                    return Some(i);
                }
                i += 1;
            }
            return match rest.len().saturating_sub(23) {
                0 => None,
                n => Some(n),
            };
        }
        if rest.len() < 24 {
            return None;
        }
        let Some(h) = bin_header(rest, magic) else {
            side.synced = false;
            return Some(0);
        };
        let Some((name, _)) = bin_op(h.opcode) else {
            side.synced = false;
            return Some(0);
        };
        let mut m = Msg::new(
            if dir == Dir::ToServer {
                if h.opcode == 0x17 {
                    Kind::OneWay
                } else {
                    Kind::Request
                }
            } else {
                Kind::Response
            },
            ts,
        );
        m.binary = true;
        m.opcode = Some(h.opcode);
        m.size = 24;
        m.correlation = Some(u64::from(h.opaque));
        side.skip = u64::from(h.body_len);
        if dir == Dir::ToServer {
            m.op = name.to_string();
            m.keys = u32::from(h.key_len > 0);
            m.query = Some(if h.key_len > 0 {
                format!("{name} ?")
            } else {
                name.to_string()
            });
            side.cur = Some(Pending::Emit(m));
        } else {
            let (status, error) = bin_status(h.status);
            m.status = status;
            m.error = error;
            if bin_is_get(h.opcode) {
                m.rows = Some(u64::from(h.status == 0));
            }
            if h.opcode == 0x10 && h.status == 0 {
                // stat: one packet per statistic, an empty key ends it.
                let acc = match self.bin_stat.take() {
                    Some(mut acc) => {
                        acc.size += 24;
                        acc.end_ns = ts;
                        acc
                    }
                    None => m,
                };
                let side = &mut self.sides[dir as usize];
                side.cur = Some(if h.key_len == 0 {
                    Pending::Emit(acc)
                } else {
                    Pending::Quiet(acc)
                });
            } else {
                side.cur = Some(Pending::Emit(m));
            }
        }
        let side = &mut self.sides[dir as usize];
        if side.skip == 0 {
            match side.cur.take() {
                Some(Pending::Emit(m)) => self.finish(dir, m, out),
                Some(Pending::Quiet(m)) => self.bin_stat = Some(m),
                other => side.cur = other,
            }
        }
        Some(24)
    }
}
