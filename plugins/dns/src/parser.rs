//! Pure DNS message parser (RFC 1035) over UDP and TCP: datagrams or
//! reassembled TCP bytes in, [`Msg`]s out.
//!
//! One [`Parser`] per flow. What is read of each message: the 12-byte header
//! (RFC 1035 §4.1.1) and the first question (§4.1.2): its name, decoded label
//! by label with compression pointers (§4.1.4) followed, and its QTYPE and
//! QCLASS. The remaining questions and the resource records are walked (names
//! skipped, RDLENGTH honoured) but not decoded, only to tell whether the
//! message is complete.
//!
//! * UDP: every [`Parser::feed`] is exactly one datagram holding one message.
//!   A datagram that does not parse (cut in its header or question, a bad
//!   name) is skipped: it is consumed, produces nothing and is counted in
//!   [`Parser::malformed`]. It is *not* an error, because an error ends the
//!   flow's session and one bad datagram must not cost the later ones. A
//!   message whose record sections run past the datagram's end (a capture
//!   snap length) is still reported, marked [`Msg::incomplete`].
//! * TCP (RFC 1035 §4.2.2, RFC 7766 §8): each message is preceded by a
//!   2-byte big-endian length. Several messages may share a segment
//!   (pipelining) and a message may span segments: an incomplete message is
//!   not consumed (the host keeps it and offers it again with more bytes;
//!   at most 2 + 65535 bytes). A direction's first bytes, and the bytes after
//!   a gap that broke framing, are scanned for a plausible message start: a
//!   length prefix followed by a sane header, a question that parses and
//!   records that fit the length exactly ([`MAX_RESYNC_BYTES`] of junk at
//!   most, then the session ends with [`reason::RESYNC_FAILED`]). So a
//!   direction's first message is taken only once whole, and only if it has
//!   a question or is a DSO message (a zone transfer's later messages, which
//!   may have no question, are fine once synchronised). After that, any frame whose header and
//!   question parse is accepted; one that does not is counted as malformed
//!   and the direction resynchronises.
//! * Gaps (TCP): when the hole falls inside a message whose length is known,
//!   framing survives: the rest of that message is skipped and the next one
//!   starts after it. Otherwise the direction resynchronises. Either way, a
//!   message cut by the gap (or by the end of the flow) whose header and
//!   question had been seen, in a synchronised direction, is still
//!   reported, marked incomplete, so its request or response is not lost.
//! * Correlation: the host pairs a response with the request that has the
//!   same key, so the key is computed identically on both sides from what a
//!   response echoes: the transaction id in the low 16 bits, a hash of the
//!   question (name case-folded, as resolvers may randomise its case, type
//!   and class) above. A reused id for another question therefore does not
//!   pair wrongly. A response without a question section takes the key of the
//!   oldest waiting request with its id (a bounded list per flow).
//!
//! Nothing here panics on input and every buffer is bounded.

use std::borrow::Cow;
use std::collections::VecDeque;

wasmtap_sdk::stream_parser!(Parser, Dir, Msg, ParseError);

#[cfg(test)]
mod tests;

/// Stable, kebab-case reasons: [`ParseError`]s (which end the session) and
/// the reasons a message was skipped as malformed (which do not).
pub mod reason {
    /// No plausible message start found within [`super::MAX_RESYNC_BYTES`]
    /// of junk (TCP). Ends the session.
    pub const RESYNC_FAILED: &str = "resync-failed";
    /// Fewer than 12 bytes: no complete header.
    pub const SHORT_HEADER: &str = "short-header";
    /// The question's name or its type and class run past the message's end.
    pub const SHORT_QUESTION: &str = "short-question";
    /// A label with a reserved type (top bits `01` or `10`).
    pub const BAD_LABEL: &str = "bad-label";
    /// A name longer than 255 octets (RFC 1035 §2.3.4).
    pub const NAME_TOO_LONG: &str = "name-too-long";
    /// More than [`super::MAX_POINTER_HOPS`] compression pointers in a name.
    pub const POINTER_LOOP: &str = "pointer-loop";
}

/// Size of the DNS header (RFC 1035 §4.1.1).
pub const HEADER_LEN: usize = 12;

/// Longest name in wire form, length octets and root included (RFC 1035
/// §2.3.4).
pub const MAX_NAME_LEN: usize = 255;

/// Compression pointers followed in one name before it is rejected as a
/// loop. Real names need a handful; the bound makes loops cheap to reject.
pub const MAX_POINTER_HOPS: usize = 32;

/// Largest DNS message over TCP (the 2-byte length prefix).
pub const MAX_MESSAGE: usize = u16::MAX as usize;

/// Requests remembered to key responses that carry no question; the oldest
/// is forgotten when a new one would exceed this.
pub const MAX_PENDING: usize = 1024;

/// Junk bytes skipped in a TCP direction while looking for a message start
/// before the session ends with [`reason::RESYNC_FAILED`].
pub const MAX_RESYNC_BYTES: u64 = 1 << 20;

/// Questions accepted in a message when judging whether bytes are DNS
/// (probe, resynchronisation); real messages carry one.
pub const MAX_PROBE_QUESTIONS: u16 = 4;

/// How many bytes of a flow the host offers to `probe`: a UDP sample this
/// long may be a cut datagram, so its record sections are not checked.
pub const PROBE_SAMPLE: usize = 1024;

/// Opcode of a standard query.
pub const OPCODE_QUERY: u8 = 0;
/// Opcode of DNS Stateful Operations (RFC 8490), TCP only, no sections.
pub const OPCODE_DSO: u8 = 6;

/// Smallest resource record: a root name, then type, class, TTL, RDLENGTH.
const MIN_RR: u64 = 11;

/// Direction of a flow's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Client to server.
    ToServer,
    /// Server to client.
    ToClient,
}

/// How messages are framed on the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Framing {
    /// One message per datagram.
    Udp,
    /// A 2-byte length before each message.
    Tcp,
}

/// The DNS header (RFC 1035 §4.1.1; AD and CD from RFC 4035 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Transaction id.
    pub id: u16,
    /// QR: a response.
    pub qr: bool,
    /// OPCODE (4 bits).
    pub opcode: u8,
    /// AA: authoritative answer.
    pub aa: bool,
    /// TC: truncated (the answer did not fit; retry over TCP).
    pub tc: bool,
    /// RD: recursion desired.
    pub rd: bool,
    /// RA: recursion available.
    pub ra: bool,
    /// Z: reserved, must be zero.
    pub z: bool,
    /// AD: authentic data.
    pub ad: bool,
    /// CD: checking disabled.
    pub cd: bool,
    /// RCODE (4 bits; extended RCODEs in an OPT record are not read).
    pub rcode: u8,
    /// QDCOUNT.
    pub qdcount: u16,
    /// ANCOUNT.
    pub ancount: u16,
    /// NSCOUNT.
    pub nscount: u16,
    /// ARCOUNT.
    pub arcount: u16,
}

impl Header {
    /// Reads the header at the start of `b`; `None` if `b` is shorter.
    pub fn parse(b: &[u8]) -> Option<Self> {
        let h: [u8; HEADER_LEN] = b.get(..HEADER_LEN)?.try_into().ok()?;
        let [i0, i1, f0, f1, q0, q1, a0, a1, n0, n1, r0, r1] = h;
        Some(Self {
            id: u16::from_be_bytes([i0, i1]),
            qr: f0 & 0x80 != 0,
            opcode: (f0 >> 3) & 0x0f,
            aa: f0 & 0x04 != 0,
            tc: f0 & 0x02 != 0,
            rd: f0 & 0x01 != 0,
            ra: f1 & 0x80 != 0,
            z: f1 & 0x40 != 0,
            ad: f1 & 0x20 != 0,
            cd: f1 & 0x10 != 0,
            rcode: f1 & 0x0f,
            qdcount: u16::from_be_bytes([q0, q1]),
            ancount: u16::from_be_bytes([a0, a1]),
            nscount: u16::from_be_bytes([n0, n1]),
            arcount: u16::from_be_bytes([r0, r1]),
        })
    }

    /// Resource records announced in the answer, authority and additional
    /// sections together.
    fn records(&self) -> u64 {
        u64::from(self.ancount) + u64::from(self.nscount) + u64::from(self.arcount)
    }
}

/// The first entry of the question section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The name in presentation form, escaped (see [`escape_label`]); `.`
    /// for the root.
    pub name: String,
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS.
    pub qclass: u16,
}

/// What a [`Msg`] is (from the QR bit, not the direction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A query (QR = 0).
    Request,
    /// A response (QR = 1).
    Response,
}

/// One DNS message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    /// Query or response.
    pub kind: Kind,
    /// Pairs a response with its query (see the module docs).
    pub correlation: u64,
    /// Timestamp of the feed that first offered the message's first byte.
    pub start_ns: u64,
    /// Timestamp of the feed (or close) that completed it.
    pub end_ns: u64,
    /// Bytes on the wire (a TCP message's length prefix included).
    pub size: u64,
    /// The header.
    pub header: Header,
    /// The first question; `None` when QDCOUNT is 0.
    pub question: Option<Question>,
    /// The message is not whole: its records run past its end, or a gap or
    /// the end of the flow cut it short.
    pub incomplete: bool,
    /// The addresses of the answer section (see [`Answers`]).
    pub answers: Answers,
}

/// Most addresses kept from one answer.
pub const MAX_ANSWER_ADDRS: usize = 16;

/// The addresses an answer resolved its question to: the A and AAAA records
/// of the answer section (reached through the question's CNAME chain, which
/// resolvers put in the same section), in order, at most
/// [`MAX_ANSWER_ADDRS`], and the smallest TTL of the records read (CNAMEs
/// included: the mapping expires with the first link that does).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answers {
    /// The addresses.
    pub addrs: Vec<std::net::IpAddr>,
    /// The smallest TTL, in seconds; `None` without addresses.
    pub min_ttl: Option<u32>,
}

/// Reads the answer section of `msg`, which starts at `pos` (after the
/// questions): records that do not fit end the walk, keeping what was read.
fn read_answers(msg: &[u8], mut pos: usize, h: &Header) -> Answers {
    let mut a = Answers::default();
    let mut min_ttl = u32::MAX;
    for _ in 1..h.qdcount {
        match skip_name(msg, pos) {
            Ok(p) => pos = p + 4,
            Err(_) => return a,
        }
    }
    for _ in 0..h.ancount {
        let Ok(p) = skip_name(msg, pos) else { break };
        let (Some(rtype), Some(class), Some(ttl_hi), Some(ttl_lo), Some(rdlength)) = (
            be16(msg, p),
            be16(msg, p + 2),
            be16(msg, p + 4),
            be16(msg, p + 6),
            be16(msg, p + 8),
        ) else {
            break;
        };
        let rdata = p + 10;
        let Some(data) = msg.get(rdata..rdata + usize::from(rdlength)) else {
            break;
        };
        pos = rdata + usize::from(rdlength);
        if class != 1 {
            continue;
        }
        let addr = match (rtype, data.len()) {
            (1, 4) => Some(std::net::IpAddr::from(
                <[u8; 4]>::try_from(data).unwrap_or_default(),
            )),
            (28, 16) => Some(std::net::IpAddr::from(
                <[u8; 16]>::try_from(data).unwrap_or_default(),
            )),
            (5, _) => None,
            _ => continue,
        };
        // RFC 2181 §8: a TTL with the top bit set is read as zero.
        let ttl = (u32::from(ttl_hi) << 16) | u32::from(ttl_lo);
        min_ttl = min_ttl.min(if ttl > i32::MAX as u32 { 0 } else { ttl });
        if let Some(addr) = addr
            && a.addrs.len() < MAX_ANSWER_ADDRS
        {
            a.addrs.push(addr);
        }
    }
    if !a.addrs.is_empty() {
        a.min_ttl = Some(min_ttl);
    }
    a
}

/// Why a direction's bytes could not be parsed (ends the session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError {
    /// One of [`reason`].
    pub reason: &'static str,
    /// Offset in the direction's stream.
    pub offset: u64,
}

/// Why a name could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// The name (or a pointer's target) runs past the end of the message.
    OutOfBounds,
    /// A label type other than a length or a pointer.
    BadLabel,
    /// Longer than [`MAX_NAME_LEN`] octets.
    TooLong,
    /// More than [`MAX_POINTER_HOPS`] pointers.
    PointerLoop,
}

impl NameError {
    /// The stable reason for a message skipped because of this.
    pub fn reason(self) -> &'static str {
        match self {
            Self::OutOfBounds => reason::SHORT_QUESTION,
            Self::BadLabel => reason::BAD_LABEL,
            Self::TooLong => reason::NAME_TOO_LONG,
            Self::PointerLoop => reason::POINTER_LOOP,
        }
    }
}

/// Appends one label to `out` in presentation form, as the OpenTelemetry
/// `dns.question.name` note asks: bytes below 32 or above 126 as `\DDD`
/// (decimal), except tab, carriage return and line feed as `\t`, `\r`,
/// `\n`; backslash and double quote escaped (`\\`, `\"`). A dot inside a
/// label is written `\.` (RFC 1035 §5.1) so it cannot pass for a label
/// separator.
pub fn escape_label(label: &[u8], out: &mut String) {
    for &b in label {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            b'.' => out.push_str("\\."),
            b'\t' => out.push_str("\\t"),
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                out.push('\\');
                out.push(char::from(b'0' + b / 100));
                out.push(char::from(b'0' + b / 10 % 10));
                out.push(char::from(b'0' + b % 10));
            }
        }
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let end = at.checked_add(2)?;
    let &[hi, lo] = b.get(at..end)? else {
        return None;
    };
    Some(u16::from_be_bytes([hi, lo]))
}

/// Reads the name at `start` of `msg`, following compression pointers
/// anywhere inside `msg`. Returns it in presentation form (see
/// [`escape_label`]; `.` for the root) and the offset just after the name
/// where it began (after its first pointer, if any).
pub fn read_name(msg: &[u8], start: usize) -> Result<(String, usize), NameError> {
    let mut name = String::new();
    let mut pos = start;
    let mut end = None;
    let mut wire = 0usize;
    let mut hops = 0usize;
    loop {
        let len = *msg.get(pos).ok_or(NameError::OutOfBounds)?;
        match len & 0xc0 {
            0x00 => {
                let n = usize::from(len);
                wire += 1 + n;
                if wire > MAX_NAME_LEN {
                    return Err(NameError::TooLong);
                }
                if n == 0 {
                    if name.is_empty() {
                        name.push('.');
                    }
                    return Ok((name, end.unwrap_or(pos + 1)));
                }
                let label = msg
                    .get(pos + 1..pos + 1 + n)
                    .ok_or(NameError::OutOfBounds)?;
                if !name.is_empty() {
                    name.push('.');
                }
                escape_label(label, &mut name);
                pos += 1 + n;
            }
            0xc0 => {
                let lo = *msg.get(pos + 1).ok_or(NameError::OutOfBounds)?;
                hops += 1;
                if hops > MAX_POINTER_HOPS {
                    return Err(NameError::PointerLoop);
                }
                end.get_or_insert(pos + 2);
                pos = (usize::from(len & 0x3f) << 8) | usize::from(lo);
            }
            _ => return Err(NameError::BadLabel),
        }
    }
}

/// Skips the name at `start` without following pointers; returns the offset
/// after it.
fn skip_name(msg: &[u8], start: usize) -> Result<usize, NameError> {
    let mut pos = start;
    let mut wire = 0usize;
    loop {
        let len = *msg.get(pos).ok_or(NameError::OutOfBounds)?;
        match len & 0xc0 {
            0x00 if len == 0 => return Ok(pos + 1),
            0x00 => {
                wire += 1 + usize::from(len);
                if wire > MAX_NAME_LEN {
                    return Err(NameError::TooLong);
                }
                pos += 1 + usize::from(len);
            }
            0xc0 if pos + 2 <= msg.len() => return Ok(pos + 2),
            0xc0 => return Err(NameError::OutOfBounds),
            _ => return Err(NameError::BadLabel),
        }
    }
}

/// Reads the question at `start`; returns it and the offset after it.
fn read_question(msg: &[u8], start: usize) -> Result<(Question, usize), &'static str> {
    let (name, end) = read_name(msg, start).map_err(NameError::reason)?;
    let qtype = be16(msg, end).ok_or(reason::SHORT_QUESTION)?;
    let qclass = be16(msg, end + 2).ok_or(reason::SHORT_QUESTION)?;
    Ok((
        Question {
            name,
            qtype,
            qclass,
        },
        end + 4,
    ))
}

/// Walks the questions after the first and every resource record from
/// `pos`; whether they all fit in `msg`.
fn records_fit(msg: &[u8], mut pos: usize, h: &Header) -> bool {
    for _ in 1..h.qdcount {
        match skip_name(msg, pos) {
            Ok(p) if p + 4 <= msg.len() => pos = p + 4,
            _ => return false,
        }
    }
    // Each record takes at least 11 bytes, so this loop is bounded by the
    // message's length whatever the counts say.
    for _ in 0..h.records() {
        let Ok(p) = skip_name(msg, pos) else {
            return false;
        };
        let Some(rdlength) = be16(msg, p + 8) else {
            return false;
        };
        pos = p + 10 + usize::from(rdlength);
        if pos > msg.len() {
            return false;
        }
    }
    true
}

/// A message read from a whole datagram or TCP frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The header.
    pub header: Header,
    /// The first question, if QDCOUNT > 0.
    pub question: Option<Question>,
    /// The records do not fit in the message.
    pub incomplete: bool,
    /// The answer section's addresses (responses only).
    pub answers: Answers,
}

/// Parses one whole message (no TCP length prefix). `Err` carries the
/// reason it is malformed: no header, or a first question that cannot be
/// read. Records that do not fit only mark it incomplete.
pub fn parse_message(msg: &[u8]) -> Result<Parsed, &'static str> {
    let header = Header::parse(msg).ok_or(reason::SHORT_HEADER)?;
    let (question, end) = if header.qdcount > 0 {
        let (q, end) = read_question(msg, HEADER_LEN)?;
        (Some(q), end)
    } else {
        (None, HEADER_LEN)
    };
    let incomplete = !records_fit(msg, end, &header);
    let answers = if header.qr && header.ancount > 0 {
        read_answers(msg, end, &header)
    } else {
        Answers::default()
    };
    Ok(Parsed {
        header,
        question,
        incomplete,
        answers,
    })
}

/// A header that looks like DNS: a known opcode, Z clear, a sane RCODE, one
/// to [`MAX_PROBE_QUESTIONS`] questions (a DSO message has none, and no
/// records), and a standard query with no answer or authority records.
pub fn plausible_header(h: &Header) -> bool {
    if h.z || !matches!(h.opcode, 0 | 1 | 2 | 4 | 5 | OPCODE_DSO) {
        return false;
    }
    if h.opcode == OPCODE_DSO {
        return h.qdcount == 0 && h.records() == 0;
    }
    if !(1..=MAX_PROBE_QUESTIONS).contains(&h.qdcount) {
        return false;
    }
    if h.qr {
        h.rcode <= 11
    } else {
        h.rcode == 0 && (h.opcode != OPCODE_QUERY || (h.ancount == 0 && h.nscount == 0))
    }
}

/// QCLASS values seen in practice: IN, CH, HS, NONE, ANY.
fn plausible_class(c: u16) -> bool {
    matches!(c, 1 | 3 | 4 | 254 | 255)
}

/// A whole message that looks like DNS: a plausible header, the question
/// it announces with a known class, and records that fit.
fn plausible_parsed(p: &Parsed) -> bool {
    plausible_header(&p.header)
        && !p.incomplete
        && (p.header.qdcount == 0) == p.question.is_none()
        && p.question
            .as_ref()
            .is_none_or(|q| plausible_class(q.qclass))
}

/// Whether the first bytes of a message (possibly cut) look like DNS: a
/// plausible header and question, with room for the announced records in
/// `room` bytes (the message's length when known).
fn plausible_prefix(msg: &[u8], room: usize) -> bool {
    let Some(h) = Header::parse(msg) else {
        return false;
    };
    if !plausible_header(&h) || h.qdcount == 0 {
        return false;
    }
    let Ok((q, end)) = read_question(msg, HEADER_LEN) else {
        return false;
    };
    let left = room.saturating_sub(end) as u64;
    plausible_class(q.qclass) && end <= room && h.records() * MIN_RR <= left
}

/// Whether `data`, a flow's first bytes, look like DNS. `Some(qr)` (the
/// message's QR bit) when they do. UDP: one datagram (a sample of
/// [`PROBE_SAMPLE`] bytes may be cut, and then only its header and question
/// are judged). TCP: a length prefix that matches the message after it.
pub fn probe(framing: Framing, data: &[u8]) -> Option<bool> {
    let (msg, complete, room) = match framing {
        Framing::Udp => (data, data.len() < PROBE_SAMPLE, data.len()),
        Framing::Tcp => {
            let len = usize::from(be16(data, 0)?);
            let body = data.get(2..).unwrap_or_default();
            match body.get(..len) {
                Some(msg) => (msg, true, len),
                None => (body, false, len),
            }
        }
    };
    let ok = if complete {
        parse_message(msg).is_ok_and(|p| plausible_parsed(&p) && p.header.opcode != OPCODE_DSO)
    } else {
        plausible_prefix(msg, room)
    };
    if ok {
        Header::parse(msg).map(|h| h.qr)
    } else {
        None
    }
}

/// Result of checking for a message start while resynchronising.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Yes,
    No,
    More,
}

/// Whether a plausible TCP message (length prefix and whole message) starts
/// at `at`. Decides only once every byte it looks at is present, so the
/// answer does not depend on how the stream was split.
fn check_start(at: &[u8]) -> Check {
    if at.len() < 2 + HEADER_LEN {
        return Check::More;
    }
    let Some(len) = be16(at, 0).map(usize::from) else {
        return Check::More;
    };
    let header = at.get(2..).and_then(Header::parse);
    if len < HEADER_LEN || !header.as_ref().is_some_and(plausible_header) {
        return Check::No;
    }
    let Some(msg) = at.get(2..2 + len) else {
        return Check::More;
    };
    match parse_message(msg) {
        Ok(p) if plausible_parsed(&p) => Check::Yes,
        _ => Check::No,
    }
}

/// FNV-1a, 64 bits.
fn fnv1a(h: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(h, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The correlation key of a message: the id in the low 16 bits, a hash of
/// the question (case-folded name, type, class) in the high 48.
pub fn correlation(id: u16, question: Option<&Question>) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325;
    if let Some(q) = question {
        h = fnv1a(h, q.name.to_ascii_lowercase().as_bytes());
        h = fnv1a(h, &q.qtype.to_be_bytes());
        h = fnv1a(h, &q.qclass.to_be_bytes());
    }
    (h << 16) | u64::from(id)
}

/// Mnemonic of a TYPE / QTYPE (IANA "Resource Record (RR) TYPEs"), or
/// `TYPE<n>` (RFC 3597 §5) for one not listed here.
pub fn type_name(t: u16) -> Cow<'static, str> {
    Cow::Borrowed(match t {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        10 => "NULL",
        11 => "WKS",
        12 => "PTR",
        13 => "HINFO",
        15 => "MX",
        16 => "TXT",
        17 => "RP",
        18 => "AFSDB",
        24 => "SIG",
        25 => "KEY",
        28 => "AAAA",
        29 => "LOC",
        33 => "SRV",
        35 => "NAPTR",
        36 => "KX",
        37 => "CERT",
        39 => "DNAME",
        41 => "OPT",
        42 => "APL",
        43 => "DS",
        44 => "SSHFP",
        45 => "IPSECKEY",
        46 => "RRSIG",
        47 => "NSEC",
        48 => "DNSKEY",
        49 => "DHCID",
        50 => "NSEC3",
        51 => "NSEC3PARAM",
        52 => "TLSA",
        53 => "SMIMEA",
        55 => "HIP",
        59 => "CDS",
        60 => "CDNSKEY",
        61 => "OPENPGPKEY",
        62 => "CSYNC",
        63 => "ZONEMD",
        64 => "SVCB",
        65 => "HTTPS",
        99 => "SPF",
        108 => "EUI48",
        109 => "EUI64",
        249 => "TKEY",
        250 => "TSIG",
        251 => "IXFR",
        252 => "AXFR",
        253 => "MAILB",
        254 => "MAILA",
        255 => "ANY",
        256 => "URI",
        257 => "CAA",
        32768 => "TA",
        32769 => "DLV",
        _ => return Cow::Owned(format!("TYPE{t}")),
    })
}

/// Name of an OPCODE (IANA "DNS OpCodes"), or `OPCODE<n>`.
pub fn opcode_name(op: u8) -> Cow<'static, str> {
    Cow::Borrowed(match op {
        0 => "QUERY",
        1 => "IQUERY",
        2 => "STATUS",
        4 => "NOTIFY",
        5 => "UPDATE",
        6 => "DSO",
        _ => return Cow::Owned(format!("OPCODE{op}")),
    })
}

/// Name of a header RCODE (RFC 1035 §4.1.1, RFC 2136 §2.2), or `RCODE<n>`.
pub fn rcode_name(rcode: u8) -> Cow<'static, str> {
    Cow::Borrowed(match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        _ => return Cow::Owned(format!("RCODE{rcode}")),
    })
}

/// Whether an RCODE is the server's failure (an error on a server span):
/// SERVFAIL, NOTIMP and every RCODE without a name here. The others (no
/// error, or a problem with the client's query: FORMERR, NXDOMAIN, REFUSED,
/// and the UPDATE prerequisite and zone answers YXDOMAIN to NOTZONE) are
/// successes, as an HTTP 4xx is on a server span.
pub fn server_error(rcode: u8) -> bool {
    matches!(rcode, 2 | 4) || rcode > 10
}

/// Where a TCP direction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sync {
    /// At a message boundary.
    Synced,
    /// Looking for a plausible message start.
    Resync,
}

/// The incomplete message the host holds for a synchronised TCP direction.
#[derive(Debug)]
struct Partial {
    /// Its length prefix plus message, once the prefix is known.
    total: Option<usize>,
    /// Header and question, once they are among the held bytes (marked
    /// incomplete, to be reported if a gap or the flow's end cuts it).
    summary: Option<Parsed>,
    start_ns: u64,
    end_ns: u64,
}

#[derive(Debug)]
struct Side {
    sync: Sync,
    /// Stream offset of the first unconsumed byte.
    offset: u64,
    /// Bytes the host holds (not consumed by the last feed).
    held: usize,
    /// Bytes of a message cut by a gap still to skip.
    skip: u64,
    /// Junk skipped since synchronisation was lost.
    junk: u64,
    partial: Option<Partial>,
    /// Timestamp of the feed that first offered the first held byte.
    held_ts: Option<u64>,
}

impl Side {
    fn new() -> Self {
        Self {
            sync: Sync::Resync,
            offset: 0,
            held: 0,
            skip: 0,
            junk: 0,
            partial: None,
            held_ts: None,
        }
    }

    fn lose_sync(&mut self) {
        self.sync = Sync::Resync;
        self.junk = 0;
    }
}

/// Per-flow parser.
#[derive(Debug)]
pub struct Parser {
    framing: Framing,
    sides: [Side; 2],
    /// Requests awaiting a response: (id, correlation key), oldest first.
    pending: VecDeque<(u16, u64)>,
    malformed: u64,
    last_malformed: Option<&'static str>,
}

impl Parser {
    /// A parser for a flow with the given framing.
    pub fn new(framing: Framing) -> Self {
        Self {
            framing,
            sides: [Side::new(), Side::new()],
            pending: VecDeque::new(),
            malformed: 0,
            last_malformed: None,
        }
    }

    /// Messages skipped as malformed so far.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// Why the last malformed message was skipped (one of [`reason`]).
    pub fn last_malformed(&self) -> Option<&'static str> {
        self.last_malformed
    }

    /// Parses `data` of `dir`: one datagram (UDP), or the unconsumed
    /// remainder of the previous offer followed by new bytes (TCP). Pushes
    /// completed messages to `out` and returns the bytes consumed.
    pub fn feed(
        &mut self,
        dir: Dir,
        ts: u64,
        data: &[u8],
        out: &mut Vec<Msg>,
    ) -> Result<usize, ParseError> {
        match self.framing {
            Framing::Udp => {
                match parse_message(data) {
                    Ok(p) => self.emit(p, ts, ts, data.len() as u64, out),
                    Err(r) => self.skip_malformed(r),
                }
                Ok(data.len())
            }
            Framing::Tcp => self.stream(dir, ts, data, out),
        }
    }

    /// `len` bytes of `dir` were never captured; the host dropped what it
    /// held of `dir`.
    pub fn gap(&mut self, dir: Dir, len: u64, out: &mut Vec<Msg>) -> Result<(), ParseError> {
        if self.framing == Framing::Udp {
            return Ok(());
        }
        let side = &mut self.sides[dir as usize];
        let held = std::mem::take(&mut side.held);
        side.offset += held as u64 + len;
        side.held_ts = None;
        let partial = side.partial.take();
        if side.skip > 0 {
            if len <= side.skip {
                // The hole is inside a message already being skipped.
                side.skip -= len;
                return Ok(());
            }
            side.skip = 0;
            side.lose_sync();
            return Ok(());
        }
        let Some(p) = partial.filter(|_| side.sync == Sync::Synced) else {
            side.lose_sync();
            return Ok(());
        };
        let lost = held as u64 + len;
        match p.total.map(|t| t as u64) {
            // The hole ends inside the held message: the next one starts
            // right after it.
            Some(total) if lost <= total => side.skip = total - lost,
            _ => side.lose_sync(),
        }
        if let (Some(summary), Some(total)) = (p.summary, p.total) {
            self.emit(summary, p.start_ns, p.end_ns, total as u64, out);
        }
        Ok(())
    }

    /// The flow ended: reports messages cut short whose header and question
    /// were seen.
    pub fn close(&mut self, ts: u64, out: &mut Vec<Msg>) {
        for d in 0..2 {
            let side = &mut self.sides[d];
            side.held = 0;
            side.held_ts = None;
            if let Some(p) = side.partial.take()
                && let (Some(summary), Some(total)) = (p.summary, p.total)
            {
                let end = p.end_ns.max(ts);
                self.emit(summary, p.start_ns, end, total as u64, out);
            }
        }
    }

    fn skip_malformed(&mut self, reason: &'static str) {
        self.malformed += 1;
        self.last_malformed = Some(reason);
    }

    /// TCP: frames, resynchronises, parses.
    fn stream(
        &mut self,
        dir: Dir,
        ts: u64,
        data: &[u8],
        out: &mut Vec<Msg>,
    ) -> Result<usize, ParseError> {
        let d = dir as usize;
        let mut pos = 0;
        loop {
            let rest = data.get(pos..).unwrap_or_default();
            let side = &mut self.sides[d];
            if side.skip > 0 {
                let n = usize::try_from(side.skip)
                    .unwrap_or(usize::MAX)
                    .min(rest.len());
                side.skip -= n as u64;
                pos += n;
                if side.skip > 0 {
                    break;
                }
                continue;
            }
            if rest.is_empty() {
                break;
            }
            match side.sync {
                Sync::Resync => {
                    let (skipped, found) = self.resync(d, rest)?;
                    pos += skipped;
                    if !found {
                        break;
                    }
                    self.sides[d].sync = Sync::Synced;
                }
                Sync::Synced => {
                    let Some(len) = be16(rest, 0).map(usize::from) else {
                        break;
                    };
                    if len < HEADER_LEN {
                        self.skip_malformed(reason::SHORT_HEADER);
                        self.sides[d].lose_sync();
                        continue;
                    }
                    let Some(msg) = rest.get(2..2 + len) else {
                        break;
                    };
                    match parse_message(msg) {
                        Ok(p) => {
                            let start = if pos == 0 {
                                side.held_ts.unwrap_or(ts)
                            } else {
                                ts
                            };
                            self.emit(p, start, ts, 2 + len as u64, out);
                            pos += 2 + len;
                        }
                        Err(r) => {
                            // Framing is suspect: look again for a start
                            // (the same frame cannot pass the stricter check).
                            self.skip_malformed(r);
                            self.sides[d].lose_sync();
                        }
                    }
                }
            }
        }
        let side = &mut self.sides[d];
        let rest = data.get(pos..).unwrap_or_default();
        side.offset += pos as u64;
        side.held = rest.len();
        side.held_ts = match (rest.is_empty(), pos) {
            (true, _) => None,
            (false, 0) => side.held_ts.or(Some(ts)),
            (false, _) => Some(ts),
        };
        side.partial = (side.sync == Sync::Synced && !rest.is_empty()).then(|| {
            let total = be16(rest, 0).map(|l| 2 + usize::from(l));
            // Header and question of the held message, if already here
            // (kept to report it should a gap or the flow's end cut it).
            let summary = total.and_then(|t| {
                let msg = rest.get(2..t.min(rest.len()))?;
                let header = Header::parse(msg)?;
                let question = if header.qdcount == 0 {
                    None
                } else {
                    Some(read_question(msg, HEADER_LEN).ok()?.0)
                };
                Some(Parsed {
                    header,
                    question,
                    incomplete: true,
                    answers: Answers::default(),
                })
            });
            Partial {
                total,
                summary,
                start_ns: side.held_ts.unwrap_or(ts),
                end_ns: ts,
            }
        });
        Ok(pos)
    }

    /// Scans `rest` for a plausible message start; returns the junk bytes
    /// before it and whether it was found (else more bytes are needed).
    fn resync(&mut self, d: usize, rest: &[u8]) -> Result<(usize, bool), ParseError> {
        let side = &mut self.sides[d];
        let mut i = 0;
        loop {
            match check_start(rest.get(i..).unwrap_or_default()) {
                Check::Yes => {
                    side.junk = 0;
                    return Ok((i, true));
                }
                Check::More => return Ok((i, false)),
                Check::No => {}
            }
            side.junk += 1;
            if side.junk > MAX_RESYNC_BYTES {
                return Err(ParseError {
                    reason: reason::RESYNC_FAILED,
                    offset: side.offset + i as u64,
                });
            }
            i += 1;
        }
    }

    /// Reports a message, keyed as the module docs describe.
    fn emit(&mut self, p: Parsed, start_ns: u64, end_ns: u64, size: u64, out: &mut Vec<Msg>) {
        let Parsed {
            header,
            question,
            incomplete,
            answers,
        } = p;
        let key = correlation(header.id, question.as_ref());
        let (kind, correlation) = if header.qr {
            let at = if question.is_some() {
                self.pending.iter().position(|&(_, k)| k == key)
            } else {
                // No question echoed: answer the oldest query with this id.
                self.pending.iter().position(|&(id, _)| id == header.id)
            };
            let key = at
                .and_then(|i| self.pending.remove(i))
                .map_or(key, |(_, k)| k);
            (Kind::Response, key)
        } else {
            if self.pending.len() >= MAX_PENDING {
                self.pending.pop_front();
            }
            self.pending.push_back((header.id, key));
            (Kind::Request, key)
        };
        out.push(Msg {
            kind,
            correlation,
            start_ns,
            end_ns,
            size,
            header,
            question,
            incomplete,
            answers,
        });
    }
}
