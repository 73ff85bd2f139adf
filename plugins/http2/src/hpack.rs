//! HPACK (RFC 7541) for a capture, not for a peer: one decoder per
//! direction, that recovers from a capture that starts mid-connection.
//!
//! A connection seen from its start decodes exactly. Seen from the middle,
//! the dynamic table's older entries are unknown: static-table references
//! always decode; entries inserted since the capture started are exact
//! (insertions are replayed in the same order as the encoder's, so the
//! k-th newest entry is the same one on both sides while both still hold
//! it); a reference past what was seen decodes as *unknown* and is counted,
//! never as another entry's value. Entries are evicted by their exact sizes
//! under the last table size the block announced (4096 until then): if the
//! encoder's real size is larger, entries are forgotten early (unknown, not
//! wrong); an encoder only references entries it holds, so a smaller real
//! size never makes a reference land on another entry.

use std::collections::VecDeque;

use fluke_hpack::huffman::HuffmanDecoder;

/// The static table (RFC 7541 Appendix A), index 1 to 61.
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// Longest header value kept (longer ones are cut); sizes still count whole.
pub const MAX_VALUE: usize = 4096;
/// Largest dynamic table accepted (a size update beyond it is an error).
pub const MAX_TABLE: usize = 1 << 20;

/// A header field; `None` where the capture cannot know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The name (lowercase on the wire in HTTP/2).
    pub name: Option<String>,
    /// The value.
    pub value: Option<String>,
}

#[derive(Debug, Clone)]
struct Entry {
    field: Field,
    /// RFC 7541 §4.1: name + value + 32.
    size: usize,
}

/// Why a header block could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The block ended inside a representation.
    Truncated,
    /// An integer too large.
    Overflow,
    /// A bad Huffman string.
    Huffman,
    /// Index 0, or a size update beyond the bound.
    Invalid,
}

/// One direction's decoding context.
#[derive(Debug)]
pub struct Decoder {
    table: VecDeque<Entry>,
    size: usize,
    max: usize,
    /// Whether the table's whole history was seen (the connection's start).
    exact: bool,
    /// References that could not be resolved (entries older than the capture).
    pub unknown: u64,
}

fn int(b: &[u8], pos: &mut usize, prefix: u8) -> Result<usize, Error> {
    let mask = (1u16 << prefix) as u8 - 1;
    let first = *b.get(*pos).ok_or(Error::Truncated)? & mask;
    *pos += 1;
    if first < mask {
        return Ok(usize::from(first));
    }
    let mut v = usize::from(mask);
    let mut shift = 0u32;
    loop {
        let c = *b.get(*pos).ok_or(Error::Truncated)?;
        *pos += 1;
        if shift > 28 {
            return Err(Error::Overflow);
        }
        v = v
            .checked_add(usize::from(c & 0x7f) << shift)
            .ok_or(Error::Overflow)?;
        shift += 7;
        if c & 0x80 == 0 {
            return Ok(v);
        }
    }
}

/// A string literal: its bytes (decoded), and its size on the table's terms.
fn string(b: &[u8], pos: &mut usize) -> Result<Vec<u8>, Error> {
    let huffman = *b.get(*pos).ok_or(Error::Truncated)? & 0x80 != 0;
    let len = int(b, pos, 7)?;
    let end = pos.checked_add(len).ok_or(Error::Overflow)?;
    let raw = b.get(*pos..end).ok_or(Error::Truncated)?;
    *pos = end;
    if huffman {
        HuffmanDecoder::new()
            .decode(raw)
            .map_err(|_| Error::Huffman)
    } else {
        Ok(raw.to_vec())
    }
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(&v[..v.len().min(MAX_VALUE)]).into_owned()
}

impl Decoder {
    /// A decoder; `exact` when the connection's start is seen.
    pub fn new(exact: bool) -> Self {
        Self {
            table: VecDeque::new(),
            size: 0,
            max: 4096,
            exact,
            unknown: 0,
        }
    }

    /// Whether every reference so far resolved (the whole history is known).
    pub fn exact(&self) -> bool {
        self.exact
    }

    fn evict(&mut self) {
        while self.size > self.max {
            match self.table.pop_back() {
                Some(e) => self.size -= e.size,
                None => {
                    self.size = 0;
                    break;
                }
            }
        }
    }

    fn insert(&mut self, field: Field, name_len: usize, value_len: usize) {
        let size = name_len + value_len + 32;
        if size > self.max {
            // RFC 7541 §4.4: an entry larger than the table empties it.
            self.table.clear();
            self.size = 0;
            return;
        }
        self.table.push_front(Entry { field, size });
        self.size += size;
        self.evict();
    }

    fn get(&mut self, index: usize) -> Result<(Field, usize), Error> {
        if index == 0 {
            return Err(Error::Invalid);
        }
        if let Some((n, v)) = STATIC.get(index - 1) {
            let f = Field {
                name: Some((*n).to_string()),
                value: Some((*v).to_string()),
            };
            return Ok((f, n.len()));
        }
        match self.table.get(index - 62) {
            Some(e) => {
                let name_len = e.field.name.as_ref().map_or(0, String::len);
                Ok((e.field.clone(), name_len))
            }
            None if self.exact => Err(Error::Invalid),
            None => {
                self.unknown += 1;
                Ok((
                    Field {
                        name: None,
                        value: None,
                    },
                    0,
                ))
            }
        }
    }

    /// Decodes one header block into `out`.
    pub fn decode(&mut self, b: &[u8], out: &mut Vec<Field>) -> Result<(), Error> {
        let mut pos = 0;
        while pos < b.len() {
            let c = b[pos];
            if c & 0x80 != 0 {
                // Indexed field.
                let i = int(b, &mut pos, 7)?;
                out.push(self.get(i)?.0);
            } else if c & 0xe0 == 0x20 {
                // Dynamic table size update.
                let max = int(b, &mut pos, 5)?;
                if max > MAX_TABLE {
                    return Err(Error::Invalid);
                }
                self.max = max;
                self.evict();
            } else {
                // Literal: with incremental indexing (01), without (0000),
                // never indexed (0001).
                let (prefix, index) = if c & 0x40 != 0 { (6, true) } else { (4, false) };
                let i = int(b, &mut pos, prefix)?;
                let (name, name_len) = if i == 0 {
                    let n = string(b, &mut pos)?;
                    (Some(text(&n)), n.len())
                } else {
                    let (f, len) = self.get(i)?;
                    // A name from an unknown entry stays unknown; its size
                    // is then unknown too (the entry is kept as unknown).
                    (f.name, len)
                };
                let v = string(b, &mut pos)?;
                let field = Field {
                    name,
                    value: Some(text(&v)),
                };
                if index {
                    if field.name.is_none() {
                        // Its true size is unknown: entries may now be
                        // evicted on the encoder's side that are kept here,
                        // but a kept entry is never wrong (see the module).
                        self.insert(field.clone(), 0, v.len());
                    } else {
                        self.insert(field.clone(), name_len, v.len());
                    }
                }
                out.push(field);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(fields: &[Field]) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|f| {
                (
                    f.name.clone().unwrap_or_else(|| "*".into()),
                    f.value.clone().unwrap_or_else(|| "*".into()),
                )
            })
            .collect()
    }

    /// RFC 7541 C.3: three requests without Huffman coding, one context.
    #[test]
    fn rfc_7541_c3() {
        let mut d = Decoder::new(true);
        let mut out = Vec::new();
        let b1 = [
            0x82, 0x86, 0x84, 0x41, 0x0f, b'w', b'w', b'w', b'.', b'e', b'x', b'a', b'm', b'p',
            b'l', b'e', b'.', b'c', b'o', b'm',
        ];
        d.decode(&b1, &mut out).unwrap();
        assert_eq!(
            names(&out)[3],
            (":authority".into(), "www.example.com".into())
        );
        out.clear();
        let b2 = [
            0x82, 0x86, 0x84, 0xbe, 0x58, 0x08, b'n', b'o', b'-', b'c', b'a', b'c', b'h', b'e',
        ];
        d.decode(&b2, &mut out).unwrap();
        assert_eq!(
            names(&out)[3],
            (":authority".into(), "www.example.com".into())
        );
        assert_eq!(names(&out)[4], ("cache-control".into(), "no-cache".into()));
        assert_eq!(d.size, 110);
    }

    /// RFC 7541 C.4.1: the same with Huffman coding.
    #[test]
    fn rfc_7541_c4_huffman() {
        let mut d = Decoder::new(true);
        let mut out = Vec::new();
        let b = [
            0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab,
            0x90, 0xf4, 0xff,
        ];
        d.decode(&b, &mut out).unwrap();
        assert_eq!(
            names(&out)[3],
            (":authority".into(), "www.example.com".into())
        );
    }

    /// Mid-stream: a reference to an entry older than the capture is
    /// unknown; entries inserted since are exact.
    #[test]
    fn mid_stream_references_are_unknown_never_wrong() {
        let mut d = Decoder::new(false);
        let mut out = Vec::new();
        // Index 62 before anything was inserted: unknown.
        d.decode(&[0xbe], &mut out).unwrap();
        assert_eq!(names(&out), [("*".to_string(), "*".to_string())]);
        assert_eq!(d.unknown, 1);
        out.clear();
        // Insert :path /a (literal, indexed name 4), then reference it (62)
        // and one past it (63: older than the capture).
        d.decode(&[0x44, 0x02, b'/', b'a', 0xbe, 0xbf], &mut out)
            .unwrap();
        assert_eq!(
            names(&out),
            [
                (":path".to_string(), "/a".to_string()),
                (":path".to_string(), "/a".to_string()),
                ("*".to_string(), "*".to_string()),
            ]
        );
        assert_eq!(d.unknown, 2);
        // Exact mode refuses what cannot exist.
        assert_eq!(
            Decoder::new(true).decode(&[0xbe], &mut out),
            Err(Error::Invalid)
        );
    }

    #[test]
    fn hostile_blocks_are_errors_not_panics() {
        let mut d = Decoder::new(false);
        let mut out = Vec::new();
        assert_eq!(
            d.decode(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], &mut out),
            Err(Error::Overflow)
        );
        assert_eq!(
            d.decode(&[0x40, 0x85, 0xff], &mut out),
            Err(Error::Truncated)
        );
        assert_eq!(
            d.decode(&[0x3f, 0xff, 0xff, 0x7f], &mut out),
            Err(Error::Invalid)
        );
    }
}
