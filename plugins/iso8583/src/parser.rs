//! ISO 8583 on a byte stream: framing (detected or configured), the message
//! (MTI, bitmaps, data elements) under a field specification, and what a
//! monitor needs of it. Pure code, tested natively.

use std::collections::BTreeMap;

use crate::ebcdic;

/// Direction of bytes on the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Client (acquirer) to server (issuer, switch).
    ToServer = 0,
    /// Server to client.
    ToClient = 1,
}

/// How messages are delimited on the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// 2-byte big-endian length of what follows (the most common).
    Bin2,
    /// 2-byte little-endian length.
    Bin2Le,
    /// 4 ASCII decimal digits of length.
    Ascii4,
}

/// How the message itself is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// MTI, lengths, numbers and text in ASCII; bitmaps and binary fields as
    /// hexadecimal ASCII.
    Ascii,
    /// ASCII, with bitmaps and binary fields as raw bytes.
    Binary,
    /// MTI, lengths and numeric fields packed BCD; text ASCII; binary raw.
    Bcd,
    /// MTI, lengths, numbers and text in EBCDIC code page 037 (IBM hosts,
    /// US); bitmaps and binary fields as raw bytes.
    Ebcdic,
    /// [`Encoding::Ebcdic`] with code page 500 (EBCDIC International).
    Ebcdic500,
}

/// Which edition of the standard a message follows: its field set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// ISO 8583:1987 (MTIs `0xxx`).
    V1987,
    /// ISO 8583:1993 (MTIs `1xxx`).
    V1993,
}

/// A field specification: index = field number (0 unused; 129..=192 are
/// the tertiary bitmap's fields).
pub type Fields = [Option<Field>; 193];

/// What a data element holds, which decides how it is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Digits (`n`): BCD-packed in the BCD encoding.
    Numeric,
    /// Text (`an`, `ans`, `z`...): ASCII.
    Text,
    /// Bytes (`b`): raw, or hexadecimal in the ASCII encoding. Lengths count bytes.
    Binary,
}

/// A data element's definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// 0: fixed length; 2: LLVAR; 3: LLLVAR.
    pub len_digits: u8,
    /// The fixed length, or the largest variable length (digits, characters or bytes).
    pub max: u16,
    /// Its class.
    pub class: Class,
}

const fn f(len_digits: u8, max: u16, class: Class) -> Option<Field> {
    Some(Field {
        len_digits,
        max,
        class,
    })
}

use Class::{Binary as B, Numeric as N, Text as T};

/// `s` with fields `from..=to` all defined as `v`.
const fn fill(mut s: Fields, from: usize, to: usize, v: Option<Field>) -> Fields {
    let mut i = from;
    while i <= to {
        s[i] = v;
        i += 1;
    }
    s
}

/// Fields 129..=192 (announced by a tertiary bitmap in field 65): reserved
/// for private use, read as LLLVAR text; 192 is a MAC.
const fn tertiary(mut s: Fields) -> Fields {
    s = fill(s, 129, 191, f(3, 999, T));
    s[192] = f(0, 8, B);
    s
}

/// ISO 8583:1987 data elements 1..=192 (index = field number; 0 unused).
pub const ISO_1987: Fields = {
    let mut s: Fields = [None; 193];
    s[1] = f(0, 8, B);
    s[2] = f(2, 19, N);
    s[3] = f(0, 6, N);
    s[4] = f(0, 12, N);
    s[5] = f(0, 12, N);
    s[6] = f(0, 12, N);
    s[7] = f(0, 10, N);
    s[8] = f(0, 8, N);
    s[9] = f(0, 8, N);
    s[10] = f(0, 8, N);
    s[11] = f(0, 6, N);
    s[12] = f(0, 6, N);
    s[13] = f(0, 4, N);
    s[14] = f(0, 4, N);
    s[15] = f(0, 4, N);
    s[16] = f(0, 4, N);
    s[17] = f(0, 4, N);
    s[18] = f(0, 4, N);
    s[19] = f(0, 3, N);
    s[20] = f(0, 3, N);
    s[21] = f(0, 3, N);
    s[22] = f(0, 3, N);
    s[23] = f(0, 3, N);
    s[24] = f(0, 3, N);
    s[25] = f(0, 2, N);
    s[26] = f(0, 2, N);
    s[27] = f(0, 1, N);
    s[28] = f(0, 9, T);
    s[29] = f(0, 9, T);
    s[30] = f(0, 9, T);
    s[31] = f(0, 9, T);
    s[32] = f(2, 11, N);
    s[33] = f(2, 11, N);
    s[34] = f(2, 28, T);
    s[35] = f(2, 37, T);
    s[36] = f(3, 104, T);
    s[37] = f(0, 12, T);
    s[38] = f(0, 6, T);
    s[39] = f(0, 2, T);
    s[40] = f(0, 3, T);
    s[41] = f(0, 8, T);
    s[42] = f(0, 15, T);
    s[43] = f(0, 40, T);
    s[44] = f(2, 25, T);
    s[45] = f(2, 76, T);
    s[46] = f(3, 999, T);
    s[47] = f(3, 999, T);
    s[48] = f(3, 999, T);
    s[49] = f(0, 3, T);
    s[50] = f(0, 3, T);
    s[51] = f(0, 3, T);
    s[52] = f(0, 8, B);
    s[53] = f(0, 16, N);
    s[54] = f(3, 120, T);
    s[55] = f(3, 999, B);
    s = fill(s, 56, 63, f(3, 999, T));
    s[64] = f(0, 8, B);
    s[65] = f(0, 8, B);
    s[66] = f(0, 1, N);
    s[67] = f(0, 2, N);
    s[68] = f(0, 3, N);
    s[69] = f(0, 3, N);
    s[70] = f(0, 3, N);
    s[71] = f(0, 4, N);
    s[72] = f(0, 4, N);
    s[73] = f(0, 6, N);
    s = fill(s, 74, 81, f(0, 10, N));
    s = fill(s, 82, 85, f(0, 12, N));
    s = fill(s, 86, 89, f(0, 16, N));
    s[90] = f(0, 42, N);
    s[91] = f(0, 1, T);
    s[92] = f(0, 2, T);
    s[93] = f(0, 5, T);
    s[94] = f(0, 7, T);
    s[95] = f(0, 42, T);
    s[96] = f(0, 8, B);
    s[97] = f(0, 17, T);
    s[98] = f(0, 25, T);
    s[99] = f(2, 11, N);
    s[100] = f(2, 11, N);
    s[101] = f(2, 17, T);
    s[102] = f(2, 28, T);
    s[103] = f(2, 28, T);
    s[104] = f(3, 100, T);
    s = fill(s, 105, 127, f(3, 999, T));
    s[128] = f(0, 8, B);
    tertiary(s)
};

/// ISO 8583:1993 data elements 1..=192: the lengths and types of the 1993
/// edition (as jPOS's `ISO93APackager` lists them), where they differ from
/// 1987: local date and time `n12` (12), point-of-service data code `an12`
/// (22), function code `n3` (24, which names network management), message
/// reason code `n4` (25), action code `n3` (39), original data elements
/// LLVAR `n35` (56), and the reconciliation totals.
pub const ISO_1993: Fields = {
    let mut s = ISO_1987;
    s[12] = f(0, 12, N);
    s[15] = f(0, 6, N);
    s[22] = f(0, 12, T);
    s[24] = f(0, 3, N);
    s[25] = f(0, 4, N);
    s[26] = f(0, 4, N);
    s[28] = f(0, 6, N);
    s[29] = f(0, 3, N);
    s[30] = f(0, 24, N);
    s[31] = f(2, 99, T);
    s[39] = f(0, 3, N);
    s[40] = f(0, 3, N);
    s[43] = f(2, 99, T);
    s[44] = f(2, 99, T);
    s[46] = f(3, 204, T);
    s[53] = f(2, 48, B);
    s[55] = f(3, 255, B);
    s[56] = f(2, 35, N);
    s[57] = f(0, 3, N);
    s[58] = f(2, 11, N);
    s[66] = f(3, 204, T);
    s[71] = f(0, 8, N);
    s[72] = f(3, 999, T);
    s = fill(s, 82, 85, f(0, 10, N));
    s[90] = f(0, 10, N);
    s[91] = f(0, 3, N);
    s[92] = f(0, 3, N);
    s[93] = f(2, 11, N);
    s[94] = f(2, 11, N);
    s[95] = f(2, 99, T);
    s[96] = f(3, 999, B);
    s[99] = f(2, 11, T);
    s = fill(s, 105, 106, f(0, 16, N));
    s = fill(s, 107, 108, f(0, 10, N));
    s = fill(s, 109, 110, f(2, 84, T));
    s
};

/// Everything the parser needs to know of the link.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Framing; `None`: detected on the flow's first bytes.
    pub framing: Option<Framing>,
    /// A 5-byte TPDU after the length; `None`: detected.
    pub tpdu: Option<bool>,
    /// Bytes of a vendor header after the length (and TPDU), skipped.
    pub header_len: usize,
    /// Encoding; `None`: detected per message.
    pub encoding: Option<Encoding>,
    /// The edition whose field set applies; `None`: by each message's MTI
    /// (`0xxx` 1987, `1xxx` 1993).
    pub version: Option<Version>,
    /// The ISO 8583:1987 field specification (index = field number).
    pub fields: Fields,
    /// The ISO 8583:1993 field specification.
    pub fields93: Fields,
    /// Whether field 65 holds a tertiary bitmap (fields 129..=192) when set.
    pub tertiary: bool,
}

impl Default for Profile {
    fn default() -> Self {
        Self {
            framing: None,
            tpdu: None,
            header_len: 0,
            encoding: None,
            version: None,
            fields: ISO_1987,
            fields93: ISO_1993,
            tertiary: true,
        }
    }
}

/// A parse failure: the stream is not ISO 8583 as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// What was wrong.
    pub reason: &'static str,
    /// Stream offset (within the bytes offered).
    pub offset: u64,
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    /// Direction it travelled.
    pub dir: Dir,
    /// Message type indicator, 4 digits.
    pub mti: String,
    /// Data elements decoded (numeric and text ones; binary ones are only
    /// noted present, never kept).
    pub fields: BTreeMap<u8, String>,
    /// Bytes on the wire, framing included.
    pub size: u64,
    /// A field the spec could not walk past (unknown or malformed): the
    /// fields after it are missing.
    pub incomplete: Option<u8>,
}

impl Msg {
    /// A data element's text.
    pub fn get(&self, n: u8) -> Option<&str> {
        self.fields.get(&n).map(String::as_str)
    }

    /// Whether it answers a request (third MTI digit odd: 1 response, 3
    /// advice response, 5 notification acknowledgement, 7 instruction acknowledgement).
    pub fn is_response(&self) -> bool {
        self.mti
            .as_bytes()
            .get(2)
            .is_some_and(|d| (d - b'0') % 2 == 1)
    }
}

fn be16(b: &[u8], at: usize) -> Option<usize> {
    Some(usize::from(u16::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
    ])))
}

fn ascii_num(b: &[u8]) -> Option<usize> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// BCD digits of `b` (two per byte), or `None` if a nibble is not a digit.
fn bcd(b: &[u8]) -> Option<String> {
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        for n in [x >> 4, x & 0x0f] {
            if n > 9 {
                return None;
            }
            s.push(char::from(b'0' + n));
        }
    }
    Some(s)
}

/// How an MTI is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MtiEnc {
    Ascii,
    Bcd,
    Ebcdic,
}

/// A plausible MTI at the start of `b`: its digits and how they are written.
fn mti_at(b: &[u8]) -> Option<([u8; 4], MtiEnc)> {
    let ok = |d: [u8; 4]| {
        // Version 0-2 (1987, 1993, 2003), class 1-9, function 0-9, origin 0-5.
        (d[0] <= 2 && (1..=9).contains(&d[1]) && d[2] <= 9 && d[3] <= 5).then_some(d)
    };
    let four = |conv: fn(u8) -> Option<u8>| -> Option<[u8; 4]> {
        let a = b.get(..4)?;
        ok([conv(a[0])?, conv(a[1])?, conv(a[2])?, conv(a[3])?])
    };
    if let Some(d) = four(|c| c.is_ascii_digit().then(|| c - b'0')) {
        return Some((d, MtiEnc::Ascii));
    }
    if let Some(d) = four(ebcdic::digit) {
        return Some((d, MtiEnc::Ebcdic));
    }
    let p = b.get(..2)?;
    let d = ok([p[0] >> 4, p[0] & 0x0f, p[1] >> 4, p[1] & 0x0f])?;
    Some((d, MtiEnc::Bcd))
}

/// What the start of a stream says about its framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detect {
    /// A whole frame of this framing (and TPDU or not) holds exactly one
    /// message, its fields walked to the frame's last byte.
    Found(Framing, bool),
    /// A framing is plausible but its frame is not complete yet.
    NeedMore,
    /// Not ISO 8583 as known.
    No,
}

/// Largest first frame waited for while detecting (bigger ones are
/// believed only once whole).
const DETECT_WAIT: usize = 8 * 1024;

/// The stream's framing, from the frame at the start of `b`: a candidate
/// counts only if its length holds exactly one message whose fields end on
/// the frame's last byte, so a length read with the wrong framing (or
/// bytes of another protocol) are not taken.
pub fn detect(b: &[u8], header_len: usize, p: &Profile) -> Detect {
    detect_only(b, header_len, p, None)
}

/// [`detect`], considering only `only` (the framing a flow already has) when given.
/// A candidate whose fields cannot be walked to the end (a private field
/// the spec does not know) is taken only when nothing walks exactly and
/// its frame ends where the bytes end or where another message starts.
pub fn detect_only(
    b: &[u8],
    header_len: usize,
    p: &Profile,
    only: Option<(Framing, bool)>,
) -> Detect {
    detect_with(b, header_len, p, only, true)
}

/// [`detect_only`]; `weak`: whether a candidate that cannot be walked to
/// its end may be taken.
fn detect_with(
    b: &[u8],
    header_len: usize,
    p: &Profile,
    only: Option<(Framing, bool)>,
    allow_weak: bool,
) -> Detect {
    if b.len() < 4 {
        return Detect::NeedMore;
    }
    let mut weak = None;
    let cands = [
        (Framing::Ascii4, ascii_num(&b[..4]), 4usize),
        (Framing::Bin2, be16(b, 0), 2),
        (
            Framing::Bin2Le,
            Some(usize::from(u16::from_le_bytes([b[0], b[1]]))),
            2,
        ),
    ];
    let mut wait = false;
    for (framing, len, hl) in cands {
        let Some(len) = len else { continue };
        if len < 12 {
            continue;
        }
        for tpdu in [false, true] {
            if only.is_some_and(|o| o != (framing, tpdu)) {
                continue;
            }
            let skip = hl + if tpdu { 5 } else { 0 } + header_len;
            if tpdu && b.get(hl).is_some_and(|&x| x != 0x60) {
                continue;
            }
            let Some(head) = b.get(skip..) else {
                wait = true;
                continue;
            };
            if head.len() >= 4 && mti_at(head).is_none() {
                continue;
            }
            match b.get(skip..hl + len) {
                Some(body) if hl + len >= skip => {
                    if let Ok((m, walked)) = parse_message(body, p, Dir::ToServer, 0) {
                        if m.incomplete.is_none() && walked == body.len() {
                            return Detect::Found(framing, tpdu);
                        }
                        let next = b.get(hl + len..).unwrap_or_default();
                        let next_ok = next.is_empty()
                            || next.get(skip..).is_some_and(|h| mti_at(h).is_some());
                        if allow_weak && m.incomplete.is_some() && next_ok && weak.is_none() {
                            weak = Some((framing, tpdu));
                        }
                    }
                }
                _ if len <= DETECT_WAIT => wait = true,
                _ => {}
            }
        }
    }
    match weak {
        Some((f, t)) => Detect::Found(f, t),
        None if wait => Detect::NeedMore,
        None => Detect::No,
    }
}

/// Confidence that `b` (a flow's first bytes) is ISO 8583.
///
/// Only a message walked exactly to its frame's end counts (a private field
/// the bundled spec does not know is taken on a configured port, not on a
/// guess), and TLS records are declined outright: binary bitmaps and BCD
/// fields make random bytes walk by chance more often than text protocols.
pub fn probe(b: &[u8]) -> u8 {
    if b.len() >= 3 && (20..=23).contains(&b[0]) && b[1] == 3 && b[2] <= 4 {
        return 0;
    }
    match detect_with(b, 0, &Profile::default(), None, false) {
        Detect::Found(..) => 80,
        _ => 0,
    }
}

/// Splits a frame off the start of `b`: (header bytes, payload length),
/// or `None` if more bytes are needed.
fn frame_len(framing: Framing, b: &[u8]) -> Result<Option<(usize, usize)>, &'static str> {
    Ok(match framing {
        Framing::Bin2 => be16(b, 0).map(|n| (2, n)),
        Framing::Bin2Le => b
            .get(..2)
            .map(|x| (2, usize::from(u16::from_le_bytes([x[0], x[1]])))),
        Framing::Ascii4 => match b.get(..4) {
            None => None,
            Some(h) => Some((4, ascii_num(h).ok_or("bad ASCII length header")?)),
        },
    })
}

/// Parses one message body (after framing, TPDU and header); returns it and
/// the bytes its fields covered.
pub fn parse_message(
    body: &[u8],
    p: &Profile,
    dir: Dir,
    size: u64,
) -> Result<(Msg, usize), &'static str> {
    let (digits, mti_enc) = mti_at(body).ok_or("no message type indicator")?;
    let mti: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
    let mut at = if mti_enc == MtiEnc::Bcd { 2 } else { 4 };
    // Bitmap: hexadecimal ASCII if it reads as such, else raw bytes.
    let hex_bitmap = match p.encoding {
        Some(Encoding::Ascii) => true,
        Some(_) => false,
        None => {
            mti_enc == MtiEnc::Ascii
                && body
                    .get(at..at + 16)
                    .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
        }
    };
    let encoding = p.encoding.unwrap_or(match mti_enc {
        MtiEnc::Bcd => Encoding::Bcd,
        MtiEnc::Ebcdic => Encoding::Ebcdic,
        MtiEnc::Ascii if hex_bitmap => Encoding::Ascii,
        MtiEnc::Ascii => Encoding::Binary,
    });
    let version = p.version.unwrap_or(if digits[0] == 1 {
        Version::V1993
    } else {
        Version::V1987
    });
    let spec = match version {
        Version::V1987 => &p.fields,
        Version::V1993 => &p.fields93,
    };
    let read_bitmap = |at: &mut usize| -> Option<u64> {
        if hex_bitmap {
            let h = body.get(*at..*at + 16)?;
            *at += 16;
            u64::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()
        } else {
            let b = body.get(*at..*at + 8)?;
            *at += 8;
            Some(u64::from_be_bytes(b.try_into().ok()?))
        }
    };
    // Bit 1 of each bitmap announces the next one: the secondary right after
    // the primary, the tertiary in field 65's place.
    let mut bitmaps = [0u64; 3];
    bitmaps[0] = read_bitmap(&mut at).ok_or("short or bad bitmap")?;
    if bitmaps[0] >> 63 == 1 {
        bitmaps[1] = read_bitmap(&mut at).ok_or("short or bad secondary bitmap")?;
    }
    let mut msg = Msg {
        dir,
        mti,
        fields: BTreeMap::new(),
        size,
        incomplete: None,
    };
    let mut n = 2u8;
    while n <= 192 {
        let (map, bit) = (usize::from(n - 1) / 64, u32::from(n - 1) % 64);
        if n > 128 && bitmaps[2] == 0 {
            break;
        }
        let set = bitmaps[map] >> (63 - bit) & 1 == 1;
        n += 1;
        if !set {
            continue;
        }
        let num = n - 1;
        if num == 65 && p.tertiary {
            match read_bitmap(&mut at) {
                Some(t) => bitmaps[2] = t,
                None => {
                    msg.incomplete = Some(num);
                    break;
                }
            }
            continue;
        }
        let Some(def) = spec.get(usize::from(num)).copied().flatten() else {
            msg.incomplete = Some(num);
            break;
        };
        match field(body, &mut at, def, encoding) {
            Some(Value::Text(s)) => {
                msg.fields.insert(num, s);
            }
            Some(Value::Opaque) => {}
            None => {
                msg.incomplete = Some(num);
                break;
            }
        }
    }
    Ok((msg, at))
}

enum Value {
    Text(String),
    Opaque,
}

/// A number written in EBCDIC digits.
fn ebcdic_num(b: &[u8]) -> Option<usize> {
    if b.is_empty() {
        return None;
    }
    b.iter().try_fold(0usize, |acc, &x| {
        Some(acc * 10 + usize::from(ebcdic::digit(x)?))
    })
}

/// Reads one data element at `at`.
fn field(body: &[u8], at: &mut usize, spec: Field, enc: Encoding) -> Option<Value> {
    let bcd_enc = enc == Encoding::Bcd;
    let table = match enc {
        Encoding::Ebcdic => Some(&ebcdic::CP037),
        Encoding::Ebcdic500 => Some(&ebcdic::CP500),
        _ => None,
    };
    // The length: fixed, or an LL/LLL prefix (ASCII or EBCDIC digits, or BCD bytes).
    let len = if spec.len_digits == 0 {
        usize::from(spec.max)
    } else if bcd_enc {
        let nb = usize::from(spec.len_digits).div_ceil(2);
        let p = body.get(*at..*at + nb)?;
        *at += nb;
        bcd(p)?.parse().ok()?
    } else {
        let nd = usize::from(spec.len_digits);
        let p = body.get(*at..*at + nd)?;
        *at += nd;
        if table.is_some() {
            ebcdic_num(p)?
        } else {
            ascii_num(p)?
        }
    };
    if len > usize::from(spec.max).max(1) * 2 {
        return None;
    }
    match spec.class {
        Class::Binary => {
            // Hexadecimal in the ASCII encoding: two characters a byte
            // (a variable length then counts characters).
            let n = if enc == Encoding::Ascii && spec.len_digits == 0 {
                len * 2
            } else {
                len
            };
            body.get(*at..*at + n)?;
            *at += n;
            Some(Value::Opaque)
        }
        Class::Numeric if bcd_enc => {
            let nb = len.div_ceil(2);
            let p = body.get(*at..*at + nb)?;
            *at += nb;
            let digits = bcd(p)?;
            // Odd lengths are padded with a leading 0 nibble.
            Some(Value::Text(digits[digits.len() - len..].to_string()))
        }
        Class::Numeric | Class::Text => {
            let p = body.get(*at..*at + len)?;
            *at += len;
            Some(Value::Text(match table {
                Some(t) => ebcdic::decode(p, t),
                None => String::from_utf8_lossy(p).into_owned(),
            }))
        }
    }
}

/// The stream parser of one flow.
#[derive(Debug, Clone)]
pub struct Parser {
    profile: Profile,
    framing: Option<(Framing, bool)>,
    lost: [bool; 2],
    /// Zero-length frames seen (keep-alives).
    pub keepalives: u64,
    /// Frames that did not parse as a message (counted, skipped).
    pub malformed: u64,
}

/// Largest frame accepted (the length headers allow 64 KiB; more means the
/// stream is not what it seems).
pub const MAX_FRAME: usize = 65_535 + 4;

impl Parser {
    /// A parser for one flow.
    pub fn new(profile: Profile) -> Self {
        let framing = profile.framing.map(|f| (f, profile.tpdu.unwrap_or(false)));
        Self {
            profile,
            framing,
            lost: [false; 2],
            keepalives: 0,
            malformed: 0,
        }
    }

    /// Parses whole frames of `data`; returns the bytes consumed.
    pub fn feed(
        &mut self,
        dir: Dir,
        _ts: u64,
        data: &[u8],
        out: &mut Vec<Msg>,
    ) -> Result<usize, ParseError> {
        let mut used = 0;
        loop {
            let rest = &data[used..];
            if self.lost[dir as usize] {
                // After a gap: the next offset where a believable frame starts
                // (of the flow's framing once known).
                let hl = self.profile.header_len;
                let mut i = 0;
                let found = loop {
                    if i >= rest.len() {
                        break None;
                    }
                    match detect_only(&rest[i..], hl, &self.profile, self.framing) {
                        Detect::Found(..) => break Some(Ok(i)),
                        Detect::NeedMore if rest.len() - i < DETECT_WAIT => break Some(Err(i)),
                        _ => i += 1,
                    }
                };
                match found {
                    Some(Ok(i)) => {
                        used += i;
                        self.lost[dir as usize] = false;
                        if self.framing.is_none()
                            && let Detect::Found(f, t) =
                                detect(&data[used..], self.profile.header_len, &self.profile)
                        {
                            self.framing = Some((f, t));
                        }
                        continue;
                    }
                    // A frame may start here: wait for its bytes.
                    Some(Err(i)) => return Ok(used + i),
                    None => return Ok(used + rest.len()),
                }
            }
            let (framing, tpdu) = match self.framing {
                Some(f) => f,
                None => match detect(rest, self.profile.header_len, &self.profile) {
                    Detect::NeedMore => return Ok(used),
                    Detect::No => {
                        return Err(ParseError {
                            reason: "not ISO 8583 (no known framing)",
                            offset: used as u64,
                        });
                    }
                    Detect::Found(f, t) => {
                        let t = self.profile.tpdu.unwrap_or(t);
                        self.framing = Some((f, t));
                        (f, t)
                    }
                },
            };
            let (hl, len) = match frame_len(framing, rest) {
                Ok(Some(x)) => x,
                Ok(None) => return Ok(used),
                Err(reason) => {
                    return Err(ParseError {
                        reason,
                        offset: used as u64,
                    });
                }
            };
            if len == 0 {
                self.keepalives += 1;
                used += hl;
                continue;
            }
            let Some(frame) = rest.get(hl..hl + len) else {
                return Ok(used);
            };
            used += hl + len;
            let skip = if tpdu { 5 } else { 0 } + self.profile.header_len;
            match frame
                .get(skip..)
                .ok_or("frame shorter than its headers")
                .and_then(|b| parse_message(b, &self.profile, dir, (hl + len) as u64))
            {
                Ok((m, _)) => out.push(m),
                Err(_) => self.malformed += 1,
            }
        }
    }

    /// Bytes of `dir` were lost: resynchronise on the next frame.
    pub fn gap(&mut self, dir: Dir, _len: u64, _out: &mut Vec<Msg>) -> Result<(), ParseError> {
        self.lost[dir as usize] = true;
        Ok(())
    }

    /// The flow ended.
    pub fn close(&mut self, _ts: u64, _out: &mut Vec<Msg>) {}
}

/// The PAN masked to its first 6 and last 4 digits (shorter ones keep only the last 4).
pub fn mask_pan(pan: &str) -> String {
    let digits: Vec<char> = pan.chars().filter(char::is_ascii_digit).collect();
    let n = digits.len();
    if n >= 13 {
        let mut s: String = digits[..6].iter().collect();
        s.push_str(&"*".repeat(n - 10));
        s.extend(&digits[n - 4..]);
        s
    } else if n > 4 {
        let mut s = "*".repeat(n - 4);
        s.extend(&digits[n - 4..]);
        s
    } else {
        "*".repeat(n)
    }
}

/// The PAN inside track 2 data (before the `=` or `D` separator).
pub fn track2_pan(track: &str) -> Option<&str> {
    let end = track.find(['=', 'D', 'd'])?;
    let pan = track.get(..end)?.trim_start_matches(';');
    (pan.len() >= 12 && pan.bytes().all(|c| c.is_ascii_digit())).then_some(pan)
}

wasmtap_sdk::stream_parser!(Parser, Dir, Msg, ParseError);

#[cfg(test)]
mod tests;
