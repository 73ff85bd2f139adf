//! Explicit-bucket histograms (the OTLP kind) and the bucket boundaries used.

use std::sync::Arc;

use crate::model::MetricData;

/// The OpenTelemetry semantic-convention bucket boundaries for request durations, in seconds.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The OpenTelemetry Collector service-graph connector's default buckets, in seconds.
pub const SERVICE_GRAPH_BUCKETS: [f64; 16] = [
    0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.4, 2.0, 5.0, 10.0, 15.0,
];

/// Body sizes, in bytes (powers of four from 64 B to 16 MiB).
pub const BODY_SIZE_BUCKETS: [f64; 11] = [
    0.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
];

/// TCP handshake round trips, in seconds (100 µs .. 3 s).
pub const RTT_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 3.0,
];

/// Connection lifetimes, in seconds (10 ms .. 1 h).
pub const CONNECTION_DURATION_BUCKETS: [f64; 10] =
    [0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 1800.0, 3600.0];

/// An explicit-bucket histogram with fixed boundaries.
#[derive(Debug, Clone)]
pub struct Hist {
    bounds: Arc<[f64]>,
    /// Observations.
    pub count: u64,
    sum: f64,
    min: f64,
    max: f64,
    buckets: Box<[u64]>,
}

impl Hist {
    /// An empty histogram over `bounds` (sorted upper bounds; the last bucket is unbounded).
    pub fn new(bounds: Arc<[f64]>) -> Self {
        let n = bounds.len() + 1;
        Self {
            bounds,
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            buckets: vec![0; n].into_boxed_slice(),
        }
    }

    /// Records one value (counted exactly: a value equal to a bound falls in that bound's bucket).
    pub fn record(&mut self, v: f64) {
        let v = if v.is_finite() { v } else { 0.0 };
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        let b = self.bounds.partition_point(|&ub| ub < v);
        if let Some(c) = self.buckets.get_mut(b) {
            *c += 1;
        }
    }

    /// Forgets every observation (delta temporality, after an export).
    pub fn reset(&mut self) {
        self.count = 0;
        self.sum = 0.0;
        self.min = f64::INFINITY;
        self.max = f64::NEG_INFINITY;
        self.buckets.iter_mut().for_each(|c| *c = 0);
    }

    /// The OTLP data of this histogram.
    pub fn data(&self) -> MetricData {
        let empty = self.count == 0;
        MetricData::Histogram {
            count: self.count,
            sum: self.sum,
            min: if empty { 0.0 } else { self.min },
            max: if empty { 0.0 } else { self.max },
            bounds: self.bounds.clone(),
            bucket_counts: self.buckets.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_inclusive_upper_bounds() {
        let mut h = Hist::new(Arc::from([1.0, 2.0].as_slice()));
        for v in [0.5, 1.0, 1.5, 2.0, 3.0, f64::NAN] {
            h.record(v);
        }
        let MetricData::Histogram {
            count,
            bucket_counts,
            min,
            max,
            ..
        } = h.data()
        else {
            panic!()
        };
        assert_eq!(count, 6);
        assert_eq!(bucket_counts, vec![3, 2, 1]);
        assert_eq!((min, max), (0.0, 3.0));
        h.reset();
        assert_eq!(h.count, 0);
    }
}

/// A compact quantile sketch for the console's percentiles: logarithmic
/// buckets 2% wide (so a quantile is within 1% of the true value), stored
/// densely over the range of values seen only. An operation whose
/// durations span 1 ms to 100 ms costs about 1 KiB, where an HDR histogram
/// covering 1 µs to 1 h at 3 digits costs about 190 KiB.
#[derive(Debug, Clone, Default)]
pub struct Sketch {
    offset: i32,
    counts: Vec<u32>,
    total: u64,
}

/// Bucket growth factor.
const GAMMA: f64 = 1.02;
/// Widest span of buckets kept (1.02^4096 covers any ratio of u64 nanoseconds).
const MAX_BUCKETS: usize = 4096;

impl Sketch {
    fn index(v: u64) -> i32 {
        ((v.max(1) as f64).ln() / GAMMA.ln()).ceil() as i32
    }

    /// Records one value (nanoseconds).
    pub fn record(&mut self, v: u64) {
        let i = Self::index(v);
        if self.counts.is_empty() {
            self.offset = i;
            self.counts.push(0);
        }
        if i < self.offset {
            let grow = (self.offset - i) as usize;
            if self.counts.len() + grow > MAX_BUCKETS {
                return;
            }
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = i;
        }
        let at = (i - self.offset) as usize;
        if at >= self.counts.len() {
            if at + 1 > MAX_BUCKETS {
                return;
            }
            self.counts.resize(at + 1, 0);
        }
        if let Some(c) = self.counts.get_mut(at) {
            *c = c.saturating_add(1);
            self.total += 1;
        }
    }

    /// The value at quantile `q` (0..1), nanoseconds; 0 when empty.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (k, c) in self.counts.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= rank {
                let upper = GAMMA.powi(self.offset + k as i32);
                // The middle of the bucket (lower = upper / GAMMA).
                return 2.0 * upper / (GAMMA + 1.0);
            }
        }
        GAMMA.powi(self.offset + self.counts.len() as i32 - 1)
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.counts.capacity() * 4
    }
}

#[cfg(test)]
mod sketch_tests {
    use super::*;

    #[test]
    fn quantiles_are_within_one_percent() {
        let mut s = Sketch::default();
        for v in 1..=100_000u64 {
            s.record(v * 1000);
        }
        for (q, want) in [
            (0.5, 50_000_000.0),
            (0.95, 95_000_000.0),
            (0.99, 99_000_000.0),
        ] {
            let got = s.quantile(q);
            assert!((got - want).abs() / want < 0.011, "q{q}: {got} vs {want}");
        }
        assert!(s.heap_bytes() < 8 * 1024, "{}", s.heap_bytes());
        assert_eq!(Sketch::default().quantile(0.5), 0.0);
        let mut one = Sketch::default();
        one.record(0);
        assert!(one.quantile(0.99) <= 1.0);
    }
}
