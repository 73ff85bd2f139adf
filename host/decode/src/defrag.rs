//! Bounded IPv4/IPv6 fragment reassembly.
//!
//! Datagrams are keyed by (source, destination, identification, protocol).
//! Where fragments overlap the first copy wins. Bounds: the number of
//! datagrams in progress, the bytes buffered over all of them, the fragments
//! per datagram, and a timeout in capture time from the first fragment.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::{DecodeError, DecoderConfig};

/// Largest reassembled IP payload.
const MAX_DATAGRAM: u32 = 65_535;
/// Buffers kept for reuse after a datagram completes or is dropped.
const MAX_SPARE: usize = 8;
/// Longest time between two sweeps for timed-out datagrams.
const MAX_SWEEP_INTERVAL_NS: u64 = 1_000_000_000;

/// IP fragmentation counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FragStats {
    /// Fragments seen (IPv4 with MF or offset; IPv6 non-atomic fragment
    /// header).
    pub fragments: u64,
    /// Datagrams reassembled and handed on.
    pub reassembled: u64,
    /// Fragments thrown away, for any reason (including those of datagrams
    /// that timed out or were discarded).
    pub dropped: u64,
    /// Datagrams discarded because they were not complete in time.
    pub timeouts: u64,
    /// Fragments dropped because `max_fragment_sets` datagrams were already
    /// in progress.
    pub pool_full: u64,
    /// Fragments dropped because `max_fragment_bytes` were already buffered.
    pub bytes_full: u64,
    /// Fragments dropped as inconsistent (unaligned, past 64 KiB, conflicting
    /// end, cut by the capture) and datagrams dropped for having more than
    /// `max_fragments_per_set` fragments.
    pub invalid: u64,
}

/// Identifies the datagram a fragment belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FragKey {
    pub(crate) src: IpAddr,
    pub(crate) dst: IpAddr,
    pub(crate) id: u32,
    pub(crate) proto: u8,
}

#[derive(Debug)]
struct FragSet {
    created_ns: u64,
    /// Payload bytes, as long as the furthest fragment end seen.
    data: Vec<u8>,
    /// Received ranges: sorted, disjoint, not touching.
    have: Vec<(u32, u32)>,
    /// End of the datagram, once the last fragment was seen.
    end: Option<u32>,
    fragments: u64,
}

impl FragSet {
    fn is_complete(&self) -> bool {
        matches!((self.end, self.have.as_slice()), (Some(e), [(0, he)]) if *he == e)
    }

    /// Adds `data` at `off..end`; `Err` if inconsistent with what is known.
    fn add(&mut self, off: u32, end: u32, more: bool, data: &[u8]) -> Result<(), ()> {
        if let Some(e) = self.end
            && (end > e || (!more && end != e))
        {
            return Err(());
        }
        if !more && self.have.last().is_some_and(|&(_, he)| he > end) {
            return Err(());
        }
        let end_us = end as usize;
        if self.data.len() < end_us {
            self.data.resize(end_us, 0);
        }
        // Copy only what no earlier fragment covered: first copy wins.
        let mut pos = off;
        for &(s, e) in &self.have {
            if e <= pos {
                continue;
            }
            if s >= end {
                break;
            }
            if s > pos {
                copy(&mut self.data, data, off, pos, s);
            }
            pos = pos.max(e);
            if pos >= end {
                break;
            }
        }
        if pos < end {
            copy(&mut self.data, data, off, pos, end);
        }
        // Merge the new range in.
        let at = self.have.partition_point(|&(s, _)| s < off);
        self.have.insert(at, (off, end));
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(self.have.len());
        for &(s, e) in &self.have {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.have = merged;
        if !more {
            self.end = Some(end);
        }
        Ok(())
    }
}

/// Copies `src[a - off .. b - off]` into `dst[a..b]` (no-op if out of range).
fn copy(dst: &mut [u8], src: &[u8], off: u32, a: u32, b: u32) {
    let (a, b, off) = (a as usize, b as usize, off as usize);
    if let (Some(d), Some(s)) = (
        dst.get_mut(a..b),
        src.get(a.saturating_sub(off)..b.saturating_sub(off)),
    ) && d.len() == s.len()
    {
        d.copy_from_slice(s);
    }
}

/// The reassembly pool.
#[derive(Debug)]
pub(crate) struct Defrag {
    sets: HashMap<FragKey, FragSet, foldhash::fast::RandomState>,
    /// Sum of `data.len()` over `sets`.
    bytes: usize,
    spare: Vec<Vec<u8>>,
    /// The last reassembled datagram (what a returned packet borrows).
    out: Vec<u8>,
    next_sweep_ns: u64,
    max_sets: usize,
    timeout_ns: u64,
    max_bytes: usize,
    max_fragments: u64,
}

impl Defrag {
    pub(crate) fn new(cfg: &DecoderConfig) -> Self {
        Self {
            sets: HashMap::default(),
            bytes: 0,
            spare: Vec::new(),
            out: Vec::new(),
            next_sweep_ns: 0,
            max_sets: cfg.max_fragment_sets,
            timeout_ns: cfg.fragment_timeout_ns,
            max_bytes: cfg.max_fragment_bytes,
            max_fragments: cfg.max_fragments_per_set as u64,
        }
    }

    pub(crate) fn sets(&self) -> usize {
        self.sets.len()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Drops timed-out datagrams; cheap unless a sweep is due.
    pub(crate) fn expire(&mut self, now_ns: u64, fs: &mut FragStats) {
        if !self.sets.is_empty() && now_ns >= self.next_sweep_ns {
            self.sweep(now_ns, fs);
        }
    }

    fn sweep(&mut self, now_ns: u64, fs: &mut FragStats) {
        let timeout = self.timeout_ns;
        let spare = &mut self.spare;
        let bytes = &mut self.bytes;
        let mut next = u64::MAX;
        self.sets.retain(|_, s| {
            if now_ns.saturating_sub(s.created_ns) < timeout {
                next = next.min(s.created_ns.saturating_add(timeout));
                return true;
            }
            fs.timeouts += 1;
            fs.dropped += s.fragments;
            *bytes = bytes.saturating_sub(s.data.len());
            recycle(spare, std::mem::take(&mut s.data));
            false
        });
        // The earliest deadline, but at least once a second (timestamps may
        // go backwards).
        self.next_sweep_ns = next.min(now_ns.saturating_add(MAX_SWEEP_INTERVAL_NS));
    }

    fn discard(&mut self, key: &FragKey, fs: &mut FragStats) {
        if let Some(s) = self.sets.remove(key) {
            fs.dropped += s.fragments;
            self.bytes = self.bytes.saturating_sub(s.data.len());
            recycle(&mut self.spare, s.data);
        }
    }

    /// Adds a fragment with payload `data` at byte offset `off`. Returns the
    /// reassembled IP payload once the datagram is complete.
    pub(crate) fn push(
        &mut self,
        fs: &mut FragStats,
        ts_ns: u64,
        key: FragKey,
        off: u32,
        more: bool,
        data: &[u8],
    ) -> Result<Option<&[u8]>, DecodeError> {
        fs.fragments += 1;
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let end = off.saturating_add(len);
        if end > MAX_DATAGRAM || (more && (len == 0 || len % 8 != 0)) {
            fs.invalid += 1;
            fs.dropped += 1;
            return Err(DecodeError::FragmentDropped);
        }
        // A datagram that outlived the timeout starts over.
        let timeout = self.timeout_ns;
        if self
            .sets
            .get(&key)
            .is_some_and(|s| ts_ns.saturating_sub(s.created_ns) >= timeout)
        {
            fs.timeouts += 1;
            self.discard(&key, fs);
        }
        let cur_len = match self.sets.get(&key) {
            Some(s) => s.data.len(),
            None => {
                if self.sets.len() >= self.max_sets {
                    self.sweep(ts_ns, fs);
                }
                if self.sets.len() >= self.max_sets {
                    fs.pool_full += 1;
                    fs.dropped += 1;
                    return Err(DecodeError::FragmentDropped);
                }
                0
            }
        };
        let growth = (end as usize).saturating_sub(cur_len);
        if self.bytes.saturating_add(growth) > self.max_bytes {
            fs.bytes_full += 1;
            fs.dropped += 1;
            return Err(DecodeError::FragmentDropped);
        }
        if !self.sets.contains_key(&key) {
            self.next_sweep_ns = self
                .next_sweep_ns
                .min(ts_ns.saturating_add(self.timeout_ns));
        }
        let spare = &mut self.spare;
        let set = self.sets.entry(key).or_insert_with(|| FragSet {
            created_ns: ts_ns,
            data: spare.pop().unwrap_or_default(),
            have: Vec::new(),
            end: None,
            fragments: 0,
        });
        let before = set.data.len();
        let added = set.add(off, end, more, data);
        let after = set.data.len();
        let empty = set.have.is_empty();
        if added.is_ok() {
            set.fragments += 1;
        }
        let (fragments, complete) = (set.fragments, set.is_complete());
        self.bytes = self.bytes.saturating_add(after.saturating_sub(before));
        if added.is_err() {
            fs.invalid += 1;
            fs.dropped += 1;
            if empty {
                self.discard(&key, fs);
            }
            return Err(DecodeError::FragmentDropped);
        }
        if fragments > self.max_fragments {
            fs.invalid += 1;
            self.discard(&key, fs);
            return Err(DecodeError::FragmentDropped);
        }
        if !complete {
            return Ok(None);
        }
        let Some(set) = self.sets.remove(&key) else {
            return Ok(None);
        };
        self.bytes = self.bytes.saturating_sub(set.data.len());
        fs.reassembled += 1;
        let old = std::mem::replace(&mut self.out, set.data);
        recycle(&mut self.spare, old);
        Ok(Some(&self.out))
    }
}

fn recycle(spare: &mut Vec<Vec<u8>>, mut buf: Vec<u8>) {
    if spare.len() < MAX_SPARE && buf.capacity() > 0 {
        buf.clear();
        spare.push(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> FragKey {
        FragKey {
            src: IpAddr::from([10, 0, 0, 1]),
            dst: IpAddr::from([10, 0, 0, 2]),
            id: 7,
            proto: 17,
        }
    }

    fn pool(cfg: DecoderConfig) -> (Defrag, FragStats) {
        (Defrag::new(&cfg), FragStats::default())
    }

    #[test]
    fn in_order_and_reverse() {
        let data: Vec<u8> = (0..40u8).collect();
        for order in [[0usize, 1, 2], [2, 1, 0], [1, 2, 0]] {
            let (mut d, mut fs) = pool(DecoderConfig::default());
            let mut got = None;
            for i in order {
                let off = (i * 16) as u32;
                let chunk = &data[i * 16..((i + 1) * 16).min(40)];
                if let Some(b) = d.push(&mut fs, 0, key(), off, i != 2, chunk).unwrap() {
                    got = Some(b.to_vec());
                }
            }
            assert_eq!(got.as_deref(), Some(&data[..]));
            assert_eq!(fs.reassembled, 1);
            assert_eq!(d.sets(), 0);
            assert_eq!(d.bytes(), 0);
        }
    }

    #[test]
    fn overlap_first_copy_wins() {
        let (mut d, mut fs) = pool(DecoderConfig::default());
        assert!(
            d.push(&mut fs, 0, key(), 0, true, &[1; 16])
                .unwrap()
                .is_none()
        );
        assert!(
            d.push(&mut fs, 0, key(), 8, true, &[2; 16])
                .unwrap()
                .is_none()
        );
        let out = d
            .push(&mut fs, 0, key(), 24, false, &[3; 4])
            .unwrap()
            .unwrap();
        let mut want = vec![1u8; 16];
        want.extend([2; 8]);
        want.extend([3; 4]);
        assert_eq!(out, &want[..]);
    }

    #[test]
    fn inconsistent_end_dropped() {
        let (mut d, mut fs) = pool(DecoderConfig::default());
        // The last fragment sets the end to 24; a fragment past it is invalid.
        d.push(&mut fs, 0, key(), 16, false, &[0; 8]).unwrap();
        assert_eq!(
            d.push(&mut fs, 0, key(), 24, true, &[0; 8]),
            Err(DecodeError::FragmentDropped)
        );
        // Unaligned non-last fragment.
        assert_eq!(
            d.push(&mut fs, 0, key(), 0, true, &[0; 7]),
            Err(DecodeError::FragmentDropped)
        );
        assert_eq!(fs.invalid, 2);
    }

    #[test]
    fn bounds() {
        let cfg = DecoderConfig {
            max_fragment_sets: 2,
            max_fragment_bytes: 64,
            max_fragments_per_set: 3,
            ..DecoderConfig::default()
        };
        let (mut d, mut fs) = pool(cfg);
        let mut k = key();
        for id in 0..3 {
            k.id = id;
            let r = d.push(&mut fs, 0, k, 0, true, &[0; 16]);
            assert_eq!(r.is_err(), id == 2);
        }
        assert_eq!(fs.pool_full, 1);
        // byte cap: set 0 would grow to 80 bytes total.
        k.id = 0;
        assert!(d.push(&mut fs, 0, k, 48, true, &[0; 16]).is_err());
        assert_eq!(fs.bytes_full, 1);
        // fragment count cap.
        k.id = 1;
        d.push(&mut fs, 0, k, 16, true, &[0; 8]).unwrap();
        d.push(&mut fs, 0, k, 24, true, &[0; 8]).unwrap();
        assert!(d.push(&mut fs, 0, k, 8, true, &[0; 8]).is_err());
        assert_eq!(d.sets(), 1);
        assert_eq!(d.bytes(), 16);
    }

    #[test]
    fn timeout() {
        let cfg = DecoderConfig {
            fragment_timeout_ns: 100,
            ..DecoderConfig::default()
        };
        let (mut d, mut fs) = pool(cfg);
        d.push(&mut fs, 0, key(), 0, true, &[0; 16]).unwrap();
        d.expire(50, &mut fs);
        assert_eq!(d.sets(), 1);
        d.expire(100, &mut fs);
        assert_eq!(d.sets(), 0);
        assert_eq!(d.bytes(), 0);
        assert_eq!(fs.timeouts, 1);
        assert_eq!(fs.dropped, 1);
        // A late second half cannot complete the expired datagram.
        assert!(
            d.push(&mut fs, 150, key(), 16, false, &[0; 4])
                .unwrap()
                .is_none()
        );
        // ... and on arrival, an expired datagram is restarted.
        assert!(
            d.push(&mut fs, 300, key(), 0, true, &[0; 16])
                .unwrap()
                .is_none()
        );
        assert_eq!(fs.timeouts, 2);
    }
}
