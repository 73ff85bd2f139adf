//! One direction of a TCP connection: sequence tracking and reassembly.
//!
//! Sequence numbers map to a 64-bit stream offset (offset 0 = the first data
//! byte: ISN+1, or the first segment seen when the handshake was missed), with
//! 32-bit wrapping arithmetic relative to the next offset to deliver.
//!
//! Data at the next offset goes straight from the packet to the sink. Data
//! beyond it is copied into a buffer of non-overlapping segments (first copy
//! wins). The hole at the head is skipped, and reported as a gap, only when:
//! it waited `gap_timeout_ns` (a), the per-direction buffer is full (b), the
//! peer acknowledged data beyond it while the capture shows data or a cut
//! segment after it (c), or the flow closes (d).
//!
//! An answer never overtakes what it answers: when a segment carrying data
//! acknowledges bytes of the other direction that were not delivered yet
//! (lost in capture, or reordered by a mirror port), this direction is
//! *held*: its data waits in the buffer until the other direction catches
//! up (the bytes arrive, or their loss is reported as a gap by the rules
//! above), so a request whose tail was lost is still decoded, and paired,
//! before the response that follows it.

use std::collections::BTreeMap;

use crate::FlowStats;

/// Bytes charged per buffered segment on top of its payload (tree node,
/// vector header), so that tiny segments cannot use unbounded memory.
pub(crate) const SEG_OVERHEAD: usize = 64;

/// Receives a direction's reassembled stream.
pub(crate) trait Sink {
    /// Next bytes of the stream.
    fn data(&mut self, ts_ns: u64, data: &[u8]);
    /// `len` bytes are missing.
    fn gap(&mut self, ts_ns: u64, len: u64);
}

/// Reassembly bounds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) gap_timeout_ns: u64,
    pub(crate) per_direction: usize,
    pub(crate) total: usize,
}

/// What reassembly shares with the rest of the table.
pub(crate) struct Cx<'a> {
    pub(crate) lim: &'a Limits,
    pub(crate) stats: &'a mut FlowStats,
    /// Bytes charged over all flows.
    pub(crate) ooo_total: &'a mut usize,
}

#[derive(Debug)]
struct Seg {
    data: Vec<u8>,
    /// Capture time it arrived.
    ts: u64,
    /// Buffered in order while the direction was held: delivered with its
    /// own capture time.
    held: bool,
}

/// Reassembly state of one direction.
#[derive(Debug, Default)]
pub(crate) struct Stream {
    init: bool,
    /// Sequence number of offset 0.
    seq0: u32,
    /// Next offset to deliver (bytes delivered + bytes reported as gaps).
    next: u64,
    /// Furthest offset seen in a segment (captured or cut by the capture).
    seen_end: u64,
    /// Furthest offset acknowledged by the peer.
    acked: u64,
    /// Offset of the FIN.
    fin: Option<u64>,
    /// Out-of-order segments by offset; all start after `next`.
    segs: BTreeMap<u64, Seg>,
    /// Bytes charged for `segs`.
    buffered: usize,
    /// When the hole at `hole_at` started waiting.
    hole_since: Option<u64>,
    hole_at: u64,
    /// Bytes received again after delivery (this direction's share of
    /// [`FlowStats::retransmitted_bytes`]).
    pub(crate) retransmitted: u64,
    /// Gaps reported in this direction.
    pub(crate) gaps: u64,
    /// Bytes reported as gaps in this direction.
    pub(crate) gap_bytes: u64,
    /// Data waits: it answers bytes of the other direction not yet delivered.
    held: bool,
    /// Capture time of the latest delivery.
    last_ts: u64,
}

fn sub(d: &[u8], a: u64, b: u64) -> &[u8] {
    let (Ok(a), Ok(b)) = (usize::try_from(a), usize::try_from(b)) else {
        return &[];
    };
    d.get(a..b).unwrap_or_default()
}

fn charge(len: usize) -> usize {
    len.saturating_add(SEG_OVERHEAD)
}

fn count_overlap(stats: &mut FlowStats, new: &[u8], old: &[u8]) {
    stats.overlap_bytes += new.len() as u64;
    if new != old {
        stats.overlap_mismatches += 1;
    }
}

impl Stream {
    /// Whether the sequence base is known.
    pub(crate) fn is_init(&self) -> bool {
        self.init
    }

    /// Sets the sequence number of offset 0 (once).
    pub(crate) fn init(&mut self, seq: u32) {
        if !self.init {
            self.init = true;
            self.seq0 = seq;
        }
    }

    /// Stream offset of `seq`, relative to the next offset (±2^31).
    fn off(&self, seq: u32) -> i64 {
        let base = self.seq0.wrapping_add(self.next as u32);
        let rel = i64::from(seq.wrapping_sub(base) as i32);
        i64::try_from(self.next)
            .unwrap_or(i64::MAX)
            .saturating_add(rel)
    }

    /// How far the stream is known to extend.
    fn horizon(&self) -> u64 {
        let h = self.seen_end.max(self.acked);
        self.fin.map_or(h, |f| h.min(f))
    }

    fn first_start(&self) -> Option<u64> {
        self.segs.first_key_value().map(|(k, _)| *k)
    }

    /// Whether bytes before the known end are missing.
    pub(crate) fn has_hole(&self) -> bool {
        !self.segs.is_empty() || self.horizon() > self.next
    }

    /// Whether the peer acknowledged bytes of this stream that were not
    /// delivered yet (missing from the capture, or still to come).
    pub(crate) fn lagging(&self) -> bool {
        self.init && self.acked > self.next
    }

    /// Holds this direction's data back (see the module documentation).
    pub(crate) fn hold(&mut self) {
        self.held = true;
    }

    /// Whether this direction's data is held back.
    pub(crate) fn is_held(&self) -> bool {
        self.held
    }

    /// Ends a hold: delivers what waited.
    pub(crate) fn unhold(&mut self, cx: &mut Cx<'_>, sink: &mut impl Sink, ts: u64) {
        if self.held {
            self.held = false;
            self.drain(cx, sink, ts);
        }
    }

    /// Whether a FIN was seen.
    pub(crate) fn fin_seen(&self) -> bool {
        self.fin.is_some()
    }

    /// Whether a segment at `seq` carrying `len` bytes lies beyond the end
    /// of this (finished) stream.
    pub(crate) fn is_beyond_end(&self, seq: u32, len: u64) -> bool {
        let end = self.fin.unwrap_or(self.next).max(self.next);
        self.init && len > 0 && self.off(seq) >= i64::try_from(end).unwrap_or(i64::MAX)
    }

    fn deliver(&mut self, cx: &mut Cx<'_>, sink: &mut impl Sink, ts: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        sink.data(ts, data);
        self.last_ts = ts;
        self.next = self.next.saturating_add(data.len() as u64);
        cx.stats.bytes_delivered += data.len() as u64;
    }

    fn uncharge(&mut self, cx: &mut Cx<'_>, len: usize) {
        let c = charge(len);
        self.buffered = self.buffered.saturating_sub(c);
        *cx.ooo_total = cx.ooo_total.saturating_sub(c);
    }

    /// Delivers buffered segments that became contiguous.
    fn drain(&mut self, cx: &mut Cx<'_>, sink: &mut impl Sink, ts: u64) {
        if self.held {
            return;
        }
        while let Some(e) = self.segs.first_entry() {
            let start = *e.key();
            if start > self.next {
                break;
            }
            let seg = e.remove();
            self.uncharge(cx, seg.data.len());
            let end = start.saturating_add(seg.data.len() as u64);
            if end > self.next {
                let rest = sub(&seg.data, self.next - start, seg.data.len() as u64);
                let t = if seg.held {
                    seg.ts.max(self.last_ts)
                } else {
                    ts
                };
                self.deliver(cx, sink, t, rest);
            }
        }
    }

    /// Reports `[next, target)` as a gap and continues after it.
    fn skip_to(&mut self, cx: &mut Cx<'_>, sink: &mut impl Sink, ts: u64, target: u64) {
        if target <= self.next {
            return;
        }
        let len = target - self.next;
        sink.gap(ts, len);
        cx.stats.gaps += 1;
        cx.stats.gap_bytes += len;
        self.gaps += 1;
        self.gap_bytes += len;
        self.next = target;
        self.drain(cx, sink, ts);
    }

    /// A segment: `data` (captured) at sequence `seq`, followed by `missing`
    /// bytes the capture lacks; `fin` if it carries a FIN.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn segment(
        &mut self,
        cx: &mut Cx<'_>,
        sink: &mut impl Sink,
        ts: u64,
        seq: u32,
        data: &[u8],
        missing: u32,
        fin: bool,
    ) {
        self.init(seq);
        let start = self.off(seq);
        let total = data.len() as u64 + u64::from(missing);
        let end = start.saturating_add(i64::try_from(total).unwrap_or(i64::MAX));
        let end_u = u64::try_from(end).unwrap_or(0);
        if fin && self.fin.is_none() {
            self.fin = Some(end_u.max(self.next));
        }
        let end_u = self.fin.map_or(end_u, |f| end_u.min(f));
        self.seen_end = self.seen_end.max(end_u);

        // The captured part, cut at the FIN.
        let mut d = data;
        if let Some(f) = self.fin {
            let room = (i64::try_from(f).unwrap_or(i64::MAX)).saturating_sub(start);
            let room = u64::try_from(room).unwrap_or(0);
            d = sub(d, 0, room.min(d.len() as u64));
        }
        // Already delivered (or before the stream start): retransmission.
        let next = i64::try_from(self.next).unwrap_or(i64::MAX);
        let mut s = start;
        if s < next {
            let dup = u64::try_from(next - s).unwrap_or(u64::MAX);
            cx.stats.retransmitted_bytes += dup.min(total);
            self.retransmitted += dup.min(total);
            let cut = dup.min(d.len() as u64);
            d = sub(d, cut, d.len() as u64);
            s = next;
        }
        if !d.is_empty() {
            let s = u64::try_from(s).unwrap_or(0);
            self.place(cx, sink, ts, s, d);
        }
        self.settle(cx, sink, ts);
    }

    /// Places captured bytes at offset `s >= next`.
    fn place(&mut self, cx: &mut Cx<'_>, sink: &mut impl Sink, ts: u64, mut s: u64, mut d: &[u8]) {
        while !d.is_empty() {
            if s < self.next {
                let cut = (self.next - s).min(d.len() as u64);
                cx.stats.retransmitted_bytes += cut;
                self.retransmitted += cut;
                d = sub(d, cut, d.len() as u64);
                s += cut;
                continue;
            }
            if s == self.next && !self.held {
                let take = match self.first_start() {
                    Some(f) => f.saturating_sub(s).min(d.len() as u64),
                    None => d.len() as u64,
                };
                if take > 0 {
                    // In order: straight from the packet.
                    self.deliver(cx, sink, ts, sub(d, 0, take));
                    d = sub(d, take, d.len() as u64);
                    s += take;
                    continue;
                }
                // The packet runs into a buffered segment: the earlier copy
                // wins.
                let Some((_, seg)) = self.segs.pop_first() else {
                    break;
                };
                self.uncharge(cx, seg.data.len());
                let n = seg.data.len().min(d.len()) as u64;
                count_overlap(cx.stats, sub(d, 0, n), sub(&seg.data, 0, n));
                self.deliver(cx, sink, ts, &seg.data);
                d = sub(d, n, d.len() as u64);
                s += n;
                continue;
            }
            // Out of order (or held).
            let c = charge(d.len());
            if self.held
                && (self.buffered.saturating_add(c) > cx.lim.per_direction
                    || cx.ooo_total.saturating_add(c) > cx.lim.total)
            {
                // Holding more would break a bound: deliver in capture order.
                cx.stats.holds_given_up += 1;
                self.unhold(cx, sink, ts);
                continue;
            }
            if self.buffered.saturating_add(c) > cx.lim.per_direction {
                // (b) Too much waits behind the hole: give up on it.
                let target = self.first_start().map_or(s, |f| f.min(s));
                cx.stats.ooo_direction_flushes += 1;
                self.skip_to(cx, sink, ts, target);
                continue;
            }
            if cx.ooo_total.saturating_add(c) > cx.lim.total {
                // Dropped: its bytes stay a hole, reported later.
                cx.stats.ooo_cap_drops += 1;
                break;
            }
            self.insert(cx, ts, s, d);
            break;
        }
        self.drain(cx, sink, ts);
    }

    /// Buffers `d` at `s > next`, keeping earlier copies where they overlap.
    fn insert(&mut self, cx: &mut Cx<'_>, ts: u64, s: u64, d: &[u8]) {
        cx.stats.ooo_segments += 1;
        let end = s + d.len() as u64;
        let mut pos = s;
        if let Some((&ps, seg)) = self.segs.range(..pos).next_back() {
            let pe = ps + seg.data.len() as u64;
            if pe > pos {
                let o_end = pe.min(end);
                count_overlap(
                    cx.stats,
                    sub(d, 0, o_end - s),
                    sub(&seg.data, pos - ps, o_end - ps),
                );
                pos = o_end;
            }
        }
        while pos < end {
            let next = self
                .segs
                .range(pos..)
                .next()
                .map(|(&k, v)| (k, k + v.data.len() as u64));
            match next {
                Some((ns, ne)) if ns < end => {
                    if ns > pos && !self.add_piece(cx, ts, pos, sub(d, pos - s, ns - s)) {
                        return;
                    }
                    let o_end = ne.min(end);
                    if let Some(seg) = self.segs.get(&ns) {
                        count_overlap(
                            cx.stats,
                            sub(d, ns - s, o_end - s),
                            sub(&seg.data, 0, o_end - ns),
                        );
                    }
                    pos = o_end;
                }
                _ => {
                    self.add_piece(cx, ts, pos, sub(d, pos - s, end - s));
                    return;
                }
            }
        }
    }

    /// Buffers one piece; false (and counted) if a cap does not allow it.
    fn add_piece(&mut self, cx: &mut Cx<'_>, ts: u64, at: u64, piece: &[u8]) -> bool {
        if piece.is_empty() {
            return true;
        }
        let c = charge(piece.len());
        if self.buffered.saturating_add(c) > cx.lim.per_direction
            || cx.ooo_total.saturating_add(c) > cx.lim.total
        {
            // Only when a segment is cut into many pieces by what is
            // already buffered: the rest stays a hole.
            cx.stats.ooo_cap_drops += 1;
            return false;
        }
        self.buffered = self.buffered.saturating_add(c);
        *cx.ooo_total = cx.ooo_total.saturating_add(c);
        let held = self.held;
        self.segs.insert(
            at,
            Seg {
                data: piece.to_vec(),
                ts,
                held,
            },
        );
        true
    }

    /// The peer acknowledged up to `ack`.
    pub(crate) fn ack(&mut self, cx: &mut Cx<'_>, sink: &mut impl Sink, ts: u64, ack: u32) {
        if !self.init {
            return;
        }
        let a = self.off(ack);
        let Ok(a) = u64::try_from(a) else {
            return;
        };
        if a <= self.next {
            return;
        }
        // The FIN takes one sequence number that is not data.
        let a = self.fin.map_or(a, |f| a.min(f));
        self.acked = self.acked.max(a);
        self.settle(cx, sink, ts);
    }

    /// Applies the gap rules (a) and (c) at time `ts`.
    pub(crate) fn settle(&mut self, cx: &mut Cx<'_>, sink: &mut impl Sink, ts: u64) {
        loop {
            if !self.has_hole() {
                self.hole_since = None;
                return;
            }
            let hole_end = self.first_start().unwrap_or_else(|| self.horizon());
            if hole_end <= self.next {
                self.hole_since = None;
                return;
            }
            let since = match self.hole_since {
                Some(t) if self.hole_at == self.next => t,
                _ => {
                    // A new head hole: it has waited since the earliest
                    // segment behind it arrived (or from now).
                    let t = self.segs.values().map(|s| s.ts).min().unwrap_or(ts).min(ts);
                    self.hole_since = Some(t);
                    self.hole_at = self.next;
                    t
                }
            };
            let seen = self.fin.map_or(self.seen_end, |f| self.seen_end.min(f));
            let confirmed = !self.segs.is_empty() || seen > self.next;
            if confirmed && self.acked > self.next {
                // (c) The receiver has what the capture missed.
                let target = self.acked.min(hole_end);
                self.skip_to(cx, sink, ts, target);
                continue;
            }
            if ts.saturating_sub(since) >= cx.lim.gap_timeout_ns {
                // (a) Waited long enough.
                self.skip_to(cx, sink, ts, hole_end);
                continue;
            }
            return;
        }
    }

    /// (d) Gives up on every hole: delivers everything buffered, with gaps.
    pub(crate) fn flush(&mut self, cx: &mut Cx<'_>, sink: &mut impl Sink, ts: u64) {
        self.unhold(cx, sink, ts);
        while self.has_hole() {
            let hole_end = self.first_start().unwrap_or_else(|| self.horizon());
            if hole_end <= self.next {
                break;
            }
            self.skip_to(cx, sink, ts, hole_end);
        }
        self.hole_since = None;
        self.release(cx);
    }

    /// When the head hole (if any) will have waited `gap_timeout_ns`.
    pub(crate) fn deadline(&self, gap_timeout_ns: u64) -> Option<u64> {
        if self.has_hole() {
            self.hole_since.map(|t| t.saturating_add(gap_timeout_ns))
        } else {
            None
        }
    }

    /// Frees the buffer without delivering it.
    pub(crate) fn release(&mut self, cx: &mut Cx<'_>) {
        let segs = std::mem::take(&mut self.segs);
        for seg in segs.into_values() {
            self.uncharge(cx, seg.data.len());
        }
        self.buffered = 0;
    }

    /// Bytes charged for buffered segments.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.buffered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Rec {
        out: Vec<(u64, Result<Vec<u8>, u64>)>,
    }

    impl Sink for Rec {
        fn data(&mut self, ts: u64, data: &[u8]) {
            self.out.push((ts, Ok(data.to_vec())));
        }
        fn gap(&mut self, ts: u64, len: u64) {
            self.out.push((ts, Err(len)));
        }
    }

    impl Rec {
        fn bytes(&self) -> Vec<u8> {
            let mut v = Vec::new();
            for (_, o) in &self.out {
                match o {
                    Ok(d) => v.extend_from_slice(d),
                    Err(n) => v.extend(std::iter::repeat_n(b'?', *n as usize)),
                }
            }
            v
        }
    }

    struct T {
        s: Stream,
        rec: Rec,
        stats: FlowStats,
        total: usize,
        lim: Limits,
    }

    impl T {
        fn new(seq0: u32) -> Self {
            let mut s = Stream::default();
            s.init(seq0);
            T {
                s,
                rec: Rec::default(),
                stats: FlowStats::default(),
                total: 0,
                lim: Limits {
                    gap_timeout_ns: 100,
                    per_direction: 1 << 20,
                    total: 1 << 30,
                },
            }
        }
        fn seg(&mut self, ts: u64, seq: u32, d: &[u8]) {
            self.seg2(ts, seq, d, 0, false);
        }
        fn seg2(&mut self, ts: u64, seq: u32, d: &[u8], missing: u32, fin: bool) {
            let mut cx = Cx {
                lim: &self.lim,
                stats: &mut self.stats,
                ooo_total: &mut self.total,
            };
            self.s
                .segment(&mut cx, &mut self.rec, ts, seq, d, missing, fin);
        }
        fn ack(&mut self, ts: u64, a: u32) {
            let mut cx = Cx {
                lim: &self.lim,
                stats: &mut self.stats,
                ooo_total: &mut self.total,
            };
            self.s.ack(&mut cx, &mut self.rec, ts, a);
        }
        fn settle(&mut self, ts: u64) {
            let mut cx = Cx {
                lim: &self.lim,
                stats: &mut self.stats,
                ooo_total: &mut self.total,
            };
            self.s.settle(&mut cx, &mut self.rec, ts);
        }
        fn flush(&mut self, ts: u64) {
            let mut cx = Cx {
                lim: &self.lim,
                stats: &mut self.stats,
                ooo_total: &mut self.total,
            };
            self.s.flush(&mut cx, &mut self.rec, ts);
        }
    }

    #[test]
    fn in_order_and_reordered() {
        let mut t = T::new(1000);
        t.seg(0, 1000, b"abc");
        t.seg(0, 1006, b"ghi");
        assert_eq!(t.rec.bytes(), b"abc");
        t.seg(0, 1003, b"def");
        assert_eq!(t.rec.bytes(), b"abcdefghi");
        assert_eq!(t.stats.ooo_segments, 1);
        assert_eq!(t.total, 0);
        assert_eq!(t.s.buffered(), 0);
    }

    #[test]
    fn retransmission_trimmed() {
        let mut t = T::new(0);
        t.seg(0, 0, b"abcd");
        t.seg(0, 0, b"abcd");
        t.seg(0, 2, b"cdef");
        assert_eq!(t.rec.bytes(), b"abcdef");
        assert_eq!(t.stats.retransmitted_bytes, 6);
    }

    #[test]
    fn overlap_first_copy_wins() {
        let mut t = T::new(0);
        t.seg(0, 4, b"EFGH");
        t.seg(0, 6, b"xxIJ");
        assert_eq!(t.stats.overlap_bytes, 2);
        assert_eq!(t.stats.overlap_mismatches, 1);
        // In-order data running into the buffer: buffered copy wins.
        t.seg(0, 0, b"abcdzz");
        assert_eq!(t.rec.bytes(), b"abcdEFGHIJ");
        assert_eq!(t.stats.overlap_mismatches, 2);
        assert_eq!(t.total, 0);
    }

    #[test]
    fn wraparound() {
        let mut t = T::new(u32::MAX - 2);
        t.seg(0, 1, b"45");
        t.seg(0, u32::MAX - 2, b"0123");
        assert_eq!(t.rec.bytes(), b"012345");
        t.ack(0, 3);
        assert!(!t.s.has_hole());
    }

    #[test]
    fn gap_timeout() {
        let mut t = T::new(0);
        t.seg(10, 0, b"ab");
        t.seg(20, 5, b"fg");
        t.settle(119);
        assert_eq!(t.rec.bytes(), b"ab");
        t.settle(120);
        assert_eq!(
            t.rec.out.last().map(|o| o.1.clone()),
            Some(Ok(b"fg".to_vec()))
        );
        assert_eq!(t.rec.bytes(), b"ab???fg");
        assert_eq!((t.stats.gaps, t.stats.gap_bytes), (1, 3));
        // The late segment is a retransmission now.
        t.seg(130, 2, b"cde");
        assert_eq!(t.rec.bytes(), b"ab???fg");
    }

    #[test]
    fn ack_beyond_hole() {
        let mut t = T::new(0);
        t.seg(0, 0, b"ab");
        t.seg(1, 4, b"ef");
        // Peer acks up to 3: only part of the hole.
        t.ack(2, 3);
        assert_eq!(t.rec.bytes(), b"ab?");
        t.ack(2, 6);
        assert_eq!(t.rec.bytes(), b"ab??ef");
    }

    #[test]
    fn ack_without_data_waits() {
        let mut t = T::new(0);
        t.seg(0, 0, b"ab");
        t.ack(1, 10);
        assert_eq!(t.rec.bytes(), b"ab");
        // The data shows up after the ACK: fine.
        t.seg(2, 2, b"cd");
        assert_eq!(t.rec.bytes(), b"abcd");
        t.settle(101);
        assert_eq!(t.rec.bytes(), b"abcd");
        t.settle(102);
        assert_eq!(t.rec.bytes(), b"abcd??????");
    }

    #[test]
    fn truncated_tail_is_a_hole() {
        let mut t = T::new(0);
        t.seg2(0, 0, b"ab", 3, false);
        assert_eq!(t.rec.bytes(), b"ab");
        assert!(t.s.has_hole());
        t.ack(1, 5);
        assert_eq!(t.rec.bytes(), b"ab???");
        // Next truncated segment, peer acks it too.
        t.seg2(2, 5, b"", 4, false);
        t.ack(3, 9);
        assert_eq!(t.rec.bytes(), b"ab???????");
    }

    #[test]
    fn per_direction_cap_skips_hole() {
        let mut t = T::new(0);
        t.lim.per_direction = 2 * SEG_OVERHEAD + 8;
        t.seg(0, 10, b"klmn");
        t.seg(0, 20, b"uvwx");
        assert_eq!(t.rec.bytes(), b"");
        t.seg(0, 30, b"EFGH");
        // First hole given up: 10 bytes of gap, then klmn.
        assert_eq!(&t.rec.bytes()[..14], b"??????????klmn");
        assert_eq!(t.stats.ooo_direction_flushes, 1);
        t.flush(0);
        assert_eq!(t.rec.bytes().len(), 34);
        assert_eq!(t.total, 0);
    }

    #[test]
    fn total_cap_drops_newest() {
        let mut t = T::new(0);
        t.lim.total = SEG_OVERHEAD + 4;
        t.seg(0, 10, b"klmn");
        t.seg(0, 20, b"uvwx");
        assert_eq!(t.stats.ooo_cap_drops, 1);
        t.flush(5);
        assert_eq!(t.rec.bytes(), b"??????????klmn??????????");
        assert_eq!(t.stats.gaps, 2);
    }

    #[test]
    fn fin_bounds_stream() {
        let mut t = T::new(0);
        t.seg2(0, 0, b"abc", 0, true);
        assert!(t.s.fin_seen());
        // data past the FIN is ignored; the ACK of the FIN is not a hole.
        t.seg(0, 3, b"zz");
        t.ack(0, 4);
        assert!(!t.s.has_hole());
        assert_eq!(t.rec.bytes(), b"abc");
        assert!(t.s.is_beyond_end(3, 1));
        assert!(!t.s.is_beyond_end(1, 1));
    }
}
