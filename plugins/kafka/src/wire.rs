//! Kafka's primitive types: big-endian integers, unsigned varints, classic
//! (int16/int32-length) and compact (varint length + 1) strings, bytes and
//! arrays, and tagged-field sections. A [`Reader`] never panics: reading past
//! the end is an error, so a frame cut to its head simply stops the walk.

/// Ran past the end of the bytes (or met a negative length where none may be).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Short;

/// A length, and the bytes when they are all in view.
pub type Bytes<'a> = (usize, Option<&'a [u8]>);

/// A cursor over a frame's bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    /// Flexible (compact) encoding of strings, bytes and arrays.
    pub compact: bool,
}

impl<'a> Reader<'a> {
    /// A reader at `pos` of `data`.
    pub fn new(data: &'a [u8], pos: usize, compact: bool) -> Self {
        Self { data, pos, compact }
    }

    /// Bytes read so far.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    pub fn left(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Short> {
        let end = self.pos.checked_add(n).ok_or(Short)?;
        let s = self.data.get(self.pos..end).ok_or(Short)?;
        self.pos = end;
        Ok(s)
    }

    /// Skips `n` bytes.
    pub fn skip(&mut self, n: usize) -> Result<(), Short> {
        self.take(n).map(|_| ())
    }

    /// An int8.
    pub fn i8(&mut self) -> Result<i8, Short> {
        Ok(self.take(1)?[0] as i8)
    }

    /// An int16.
    pub fn i16(&mut self) -> Result<i16, Short> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    /// An int32.
    pub fn i32(&mut self) -> Result<i32, Short> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// An int64.
    pub fn i64(&mut self) -> Result<i64, Short> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    /// An unsigned varint (at most 5 bytes for 32 bits).
    pub fn uvarint(&mut self) -> Result<u64, Short> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Short)
    }

    /// The length of a string or bytes: `None` for null.
    fn len(&mut self, wide: bool) -> Result<Option<usize>, Short> {
        if self.compact {
            let n = self.uvarint()?;
            return Ok(if n == 0 {
                None
            } else {
                Some(usize::try_from(n - 1).map_err(|_| Short)?)
            });
        }
        let n = if wide {
            i64::from(self.i32()?)
        } else {
            i64::from(self.i16()?)
        };
        match n {
            -1 => Ok(None),
            n if n < 0 => Err(Short),
            n => Ok(Some(usize::try_from(n).map_err(|_| Short)?)),
        }
    }

    /// A nullable string (classic int16 length, or compact).
    pub fn string(&mut self) -> Result<Option<&'a [u8]>, Short> {
        match self.len(false)? {
            None => Ok(None),
            Some(n) => self.take(n).map(Some),
        }
    }

    /// A nullable string always in the classic int16-length form (the
    /// request header's client id, even in flexible versions).
    pub fn classic_string(&mut self) -> Result<Option<&'a [u8]>, Short> {
        let compact = std::mem::replace(&mut self.compact, false);
        let r = self.string();
        self.compact = compact;
        r
    }

    /// Nullable bytes (int32 length, or compact): returns the length, and
    /// the bytes when they are all here.
    pub fn bytes(&mut self) -> Result<Option<Bytes<'a>>, Short> {
        match self.len(true)? {
            None => Ok(None),
            Some(n) => {
                if n <= self.left() {
                    Ok(Some((n, Some(self.take(n)?))))
                } else {
                    self.pos = self.data.len();
                    Ok(Some((n, None)))
                }
            }
        }
    }

    /// An array's element count: `None` for null.
    pub fn array(&mut self) -> Result<Option<usize>, Short> {
        let n = self.len(true)?;
        // Every element takes at least one byte: a count beyond the frame is corrupt.
        match n {
            Some(n) if n > self.data.len() => Err(Short),
            n => Ok(n),
        }
    }

    /// A tagged-field section (flexible versions only; nothing otherwise).
    pub fn tags(&mut self) -> Result<(), Short> {
        if !self.compact {
            return Ok(());
        }
        let n = self.uvarint()?;
        for _ in 0..n {
            self.uvarint()?;
            let size = usize::try_from(self.uvarint()?).map_err(|_| Short)?;
            self.skip(size)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_and_classic_forms() {
        let data = [0x03, b'h', b'i', 0x00, 0x00, 0x02, b'o', b'k', 0x96, 0x01];
        let mut r = Reader::new(&data, 0, true);
        assert_eq!(r.string(), Ok(Some(&b"hi"[..])));
        assert_eq!(r.string(), Ok(None));
        assert_eq!(r.classic_string(), Ok(Some(&b"ok"[..])));
        assert_eq!(r.uvarint(), Ok(150));
        assert_eq!(r.i8(), Err(Short));
        let mut r = Reader::new(&[0xff, 0xff, 0, 0, 0, 9], 0, false);
        assert_eq!(r.string(), Ok(None));
        assert_eq!(r.array(), Err(Short));
    }
}
