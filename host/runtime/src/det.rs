//! What a decoder reads of time and chance, made deterministic: the WASI
//! wall and monotonic clocks read the capture time of the packets being
//! decoded, and both WASI random sources are a generator seeded per flow.
//! A decoder that looks at a clock or draws a random number gives the same
//! output on every replay of a capture.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

/// The capture time and generator state a store's WASI context reads; the
/// worker sets them before each call.
#[derive(Debug, Default)]
pub(crate) struct Det {
    now_ns: AtomicU64,
    rng: AtomicU64,
}

impl Det {
    /// Before a call: capture time `now_ns`, generator state `rng`.
    pub(crate) fn enter(&self, now_ns: u64, rng: u64) {
        self.now_ns.store(now_ns, Ordering::Relaxed);
        self.rng.store(rng, Ordering::Relaxed);
    }

    /// After a call: the generator state to keep for the flow.
    pub(crate) fn rng(&self) -> u64 {
        self.rng.load(Ordering::Relaxed)
    }
}

/// A flow's first generator state, from its endpoints (or any identity).
pub(crate) fn seed(identity: impl std::hash::Hash) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x7261_6e64_6f6d_2121).hash_one(identity)
}

/// `wasi:clocks/wall-clock`: the capture time.
pub(crate) struct Wall(pub(crate) Arc<Det>);

impl HostWallClock for Wall {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }
    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.now_ns.load(Ordering::Relaxed))
    }
}

/// `wasi:clocks/monotonic-clock`: the capture time, in ns.
pub(crate) struct Mono(pub(crate) Arc<Det>);

impl HostMonotonicClock for Mono {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        self.0.now_ns.load(Ordering::Relaxed)
    }
}

/// `wasi:random`: SplitMix64 over the flow's state.
pub(crate) struct Random(pub(crate) Arc<Det>);

impl rand_core::TryRng for Random {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok((self.try_next_u64()? >> 32) as u32)
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let s = self
            .0
            .rng
            .load(Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        self.0.rng.store(s, Ordering::Relaxed);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Ok(z ^ (z >> 31))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let v = self.try_next_u64()?.to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::Rng;

    #[test]
    fn clocks_read_capture_time_and_random_follows_the_flow() {
        let det = Arc::new(Det::default());
        det.enter(
            1_354_328_870_000_000_000,
            seed(("10.0.0.1:4", "10.0.0.2:80")),
        );
        assert_eq!(
            Wall(det.clone()).now(),
            Duration::from_nanos(1_354_328_870_000_000_000)
        );
        assert_eq!(Mono(det.clone()).now(), 1_354_328_870_000_000_000);
        let mut r = Random(det.clone());
        let a = (r.next_u64(), r.next_u64());
        let kept = det.rng();
        // The same flow's state gives the same numbers; another flow's not.
        det.enter(0, seed(("10.0.0.1:4", "10.0.0.2:80")));
        assert_eq!((r.next_u64(), r.next_u64()), a);
        assert_eq!(det.rng(), kept);
        det.enter(0, seed(("10.0.0.1:5", "10.0.0.2:80")));
        assert_ne!(r.next_u64(), a.0);
    }
}
