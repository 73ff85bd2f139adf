//! Reassembly against a naive model: random streams cut into segments,
//! shuffled, duplicated and re-sent with overlaps.

mod common;

use common::*;
use proptest::prelude::*;
use wasmtap_flow::{CloseReason, Direction, FlowConfig, FlowTable};

const C: &str = "10.0.0.1:40000";
const S: &str = "10.0.0.2:80";

/// One direction's data and how it is sent.
#[derive(Debug, Clone)]
struct Side {
    isn: u32,
    data: Vec<u8>,
    /// Segment sizes cutting `data`.
    cuts: Vec<usize>,
    /// Extra re-sends: (start, len) ranges of `data`, same bytes.
    resends: Vec<(usize, usize)>,
    /// Segment indexes sent twice.
    dups: Vec<usize>,
    /// Segment indexes never sent (only used by the lossy test).
    drops: Vec<usize>,
}

fn isn() -> impl Strategy<Value = u32> {
    prop_oneof![any::<u32>(), (u32::MAX - 3000)..=u32::MAX]
}

fn side() -> impl Strategy<Value = Side> {
    (
        isn(),
        proptest::collection::vec(any::<u8>(), 0..2500),
        proptest::collection::vec(1usize..300, 1..40),
        proptest::collection::vec((any::<usize>(), 1usize..400), 0..8),
        proptest::collection::vec(any::<usize>(), 0..6),
        proptest::collection::vec(any::<usize>(), 0..5),
    )
        .prop_map(|(isn, data, cuts, resends, dups, drops)| Side {
            isn,
            data,
            cuts,
            resends,
            dups,
            drops,
        })
}

/// (seq, bytes) segments of a side.
fn segments(s: &Side, lossy: bool) -> Vec<(u32, Vec<u8>)> {
    let mut base = Vec::new();
    let mut at = 0;
    let mut k = 0;
    while at < s.data.len() {
        let n = s.cuts[k % s.cuts.len()].min(s.data.len() - at);
        base.push((at, n));
        at += n;
        k += 1;
    }
    let dropped =
        |i: usize| lossy && !base.is_empty() && s.drops.iter().any(|d| d % base.len() == i);
    let mut out = Vec::new();
    for (i, &(a, n)) in base.iter().enumerate() {
        if dropped(i) {
            continue;
        }
        out.push((a, n));
        if !base.is_empty() && s.dups.iter().any(|d| d % base.len() == i) {
            out.push((a, n));
        }
    }
    if !s.data.is_empty() {
        for &(start, len) in &s.resends {
            let a = start % s.data.len();
            let n = len.min(s.data.len() - a);
            // In the lossy test a re-send must not fill a dropped segment
            // completely by accident... it may: that is fine, the model
            // only checks positions.
            out.push((a, n));
        }
    }
    out.into_iter()
        .map(|(a, n)| {
            (
                s.isn.wrapping_add(1).wrapping_add(a as u32),
                s.data[a..a + n].to_vec(),
            )
        })
        .collect()
}

/// Deterministic shuffle (xorshift).
fn shuffle<T>(v: &mut [T], mut seed: u64) {
    seed |= 1;
    for i in (1..v.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

struct Pkt {
    from_client: bool,
    seq: u32,
    data: Vec<u8>,
}

fn packets(c: &Side, s: &Side, lossy: bool, seed: u64) -> Vec<Pkt> {
    let mut v: Vec<Pkt> = segments(c, lossy)
        .into_iter()
        .map(|(seq, data)| Pkt {
            from_client: true,
            seq,
            data,
        })
        .chain(segments(s, lossy).into_iter().map(|(seq, data)| Pkt {
            from_client: false,
            seq,
            data,
        }))
        .collect();
    shuffle(&mut v, seed);
    v
}

fn send(t: &mut FlowTable<u64>, r: &mut Rec, p: &Pkt, ts: u64) {
    let (src, dst) = if p.from_client { (C, S) } else { (S, C) };
    // No ACK flag on data: acknowledgements are sent explicitly.
    t.process(&tcp(src, dst, p.seq, 0, "", &p.data), ts, r);
}

fn handshake(t: &mut FlowTable<u64>, r: &mut Rec, c: &Side, s: &Side) {
    t.process(&tcp(C, S, c.isn, 0, "S", b""), 0, r);
    t.process(&tcp(S, C, s.isn, c.isn.wrapping_add(1), "SA", b""), 0, r);
}

fn end_seq(s: &Side) -> u32 {
    s.isn.wrapping_add(1).wrapping_add(s.data.len() as u32)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Everything is eventually sent: the delivered streams equal the
    /// originals exactly, with no gap.
    #[test]
    fn complete_streams_are_reassembled_exactly(c in side(), s in side(), seed in any::<u64>(), fin in any::<bool>()) {
        let mut t: FlowTable<u64> = FlowTable::new(FlowConfig::default());
        let mut r = Rec::default();
        handshake(&mut t, &mut r, &c, &s);
        for p in packets(&c, &s, false, seed) {
            send(&mut t, &mut r, &p, 1);
        }
        if fin {
            t.process(&tcp(C, S, end_seq(&c), end_seq(&s), "FA", b""), 2, &mut r);
            t.process(&tcp(S, C, end_seq(&s), end_seq(&c).wrapping_add(1), "FA", b""), 2, &mut r);
            prop_assert_eq!(r.closes(), vec![(1, CloseReason::Fin)]);
        } else {
            t.close_all(CloseReason::EndOfCapture, 2, &mut r);
        }
        prop_assert_eq!(r.stream(1, Direction::ToServer), c.data.clone());
        prop_assert_eq!(r.stream(1, Direction::ToClient), s.data.clone());
        prop_assert_eq!(t.stats().gaps, 0);
        prop_assert_eq!(t.stats().overlap_mismatches, 0);
        prop_assert_eq!(t.stats().bytes_delivered, (c.data.len() + s.data.len()) as u64);
        prop_assert_eq!(t.ooo_bytes(), 0);
        r.check_lifecycle();
    }

    /// Some segments never arrive, time passes (gap timeouts fire), small
    /// buffers overflow: every delivered byte is at its offset, and data
    /// plus gaps cover the whole stream.
    #[test]
    fn lossy_streams_keep_offsets(
        c in side(),
        s in side(),
        seed in any::<u64>(),
        steps in proptest::collection::vec(0u64..700_000_000, 1..64),
        small_cap in any::<bool>(),
        ending in 0u8..3,
    ) {
        let cfg = FlowConfig {
            max_ooo_bytes_per_direction: if small_cap { 1500 } else { 1 << 20 },
            ..FlowConfig::default()
        };
        let mut t: FlowTable<u64> = FlowTable::new(cfg);
        let mut r = Rec::default();
        handshake(&mut t, &mut r, &c, &s);
        let mut ts = 0;
        for (k, p) in packets(&c, &s, true, seed).iter().enumerate() {
            ts += steps[k % steps.len()];
            send(&mut t, &mut r, p, ts);
            t.advance(ts, &mut r);
        }
        ts += 1;
        match ending {
            0 => {
                // Both sides acknowledge everything, then the capture ends.
                t.process(&tcp(C, S, end_seq(&c), end_seq(&s), "A", b""), ts, &mut r);
                t.process(&tcp(S, C, end_seq(&s), end_seq(&c), "A", b""), ts, &mut r);
                t.close_all(CloseReason::EndOfCapture, ts, &mut r);
            }
            1 => {
                t.process(&tcp(C, S, end_seq(&c), end_seq(&s), "FA", b""), ts, &mut r);
                t.process(&tcp(S, C, end_seq(&s), end_seq(&c).wrapping_add(1), "FA", b""), ts, &mut r);
            }
            _ => {
                t.process(&tcp(C, S, end_seq(&c), end_seq(&s), "A", b""), ts, &mut r);
                t.process(&tcp(S, C, end_seq(&s), end_seq(&c), "A", b""), ts, &mut r);
                t.process(&tcp(C, S, end_seq(&c), 0, "R", b""), ts, &mut r);
            }
        }
        prop_assert_eq!(r.closes().len(), 1);
        for (side, dir) in [(&c, Direction::ToServer), (&s, Direction::ToClient)] {
            let got = r.stream_opt(1, dir);
            prop_assert_eq!(got.len(), side.data.len());
            for (i, b) in got.iter().enumerate() {
                if let Some(b) = b {
                    prop_assert_eq!(*b, side.data[i], "offset {}", i);
                }
            }
        }
        let st = t.stats();
        let delivered: u64 = st.bytes_delivered;
        prop_assert_eq!(delivered + st.gap_bytes, (c.data.len() + s.data.len()) as u64);
        prop_assert_eq!(st.overlap_mismatches, 0);
        prop_assert_eq!(t.ooo_bytes(), 0);
        r.check_lifecycle();
    }
}
