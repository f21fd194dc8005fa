//! Round-trip statistics: percentiles from every recorded sample, and a log2 histogram.
//!
//! Kept by hand rather than taken from `hdrhistogram`: the report's p50/p99 are exact
//! nearest-rank values of the recorded samples (one sort of at most `--count` `u64`s, once per
//! run, off the hot path), and its min/max/mean exact too. An HDR histogram stores values in
//! buckets of a chosen precision (at most 5 significant digits), so its percentiles are
//! bucket bounds, not samples, and the ping ratios the report compares would carry that
//! quantisation. The log2 histogram below is twenty lines and exact in its counts.

use serde::Serialize;

/// Summary of round-trip samples, in counter ticks.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RttSummary {
    /// Number of samples.
    pub samples: u64,
    /// Median (nearest-rank).
    pub p50: u64,
    /// 99th percentile (nearest-rank).
    pub p99: u64,
    /// Largest sample.
    pub max: u64,
    /// Smallest sample.
    pub min: u64,
    /// Arithmetic mean.
    pub mean: f64,
}

/// One histogram bucket: samples in `[low, high)` ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// Inclusive lower bound.
    pub low: u64,
    /// Exclusive upper bound (`u64::MAX` for the last possible bucket).
    pub high: u64,
    /// Samples in the bucket.
    pub count: u64,
}

/// Every round-trip sample of a run, kept so that percentiles are exact.
#[derive(Debug, Clone, Default)]
pub struct RttSamples {
    samples: Vec<u64>,
}

impl RttSamples {
    /// Room for `capacity` samples, so recording does not allocate on the hot path.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            samples: Vec::with_capacity(capacity),
        }
    }

    /// Records one round trip.
    pub fn record(&mut self, ticks: u64) {
        self.samples.push(ticks);
    }

    /// Number of samples so far.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Percentiles and extremes; `None` without samples.
    pub fn summary(&self) -> Option<RttSummary> {
        if self.samples.is_empty() {
            return None;
        }
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        let total: u128 = sorted.iter().map(|&sample| u128::from(sample)).sum();
        Some(RttSummary {
            samples: sorted.len() as u64,
            p50: nearest_rank(&sorted, 50),
            p99: nearest_rank(&sorted, 99),
            max: sorted[sorted.len() - 1],
            min: sorted[0],
            mean: total as f64 / sorted.len() as f64,
        })
    }

    /// Power-of-two buckets (`[0,1)`, `[1,2)`, `[2,4)`, ...), only the non-empty ones.
    pub fn histogram(&self) -> Vec<Bucket> {
        let mut counts = [0u64; 65];
        for &sample in &self.samples {
            let index = if sample == 0 {
                0
            } else {
                64 - sample.leading_zeros() as usize
            };
            counts[index] += 1;
        }
        counts
            .iter()
            .enumerate()
            .filter(|(_, count)| **count > 0)
            .map(|(index, &count)| {
                let (low, high) = match index {
                    0 => (0, 1),
                    64 => (1 << 63, u64::MAX),
                    _ => (1u64 << (index - 1), 1u64 << index),
                };
                Bucket { low, high, count }
            })
            .collect()
    }
}

/// Nearest-rank percentile of a sorted, non-empty slice: the smallest sample such that at
/// least `percent`% of the samples are less than or equal to it.
fn nearest_rank(sorted: &[u64], percent: usize) -> u64 {
    let rank = (percent * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_one_to_hundred() {
        let mut samples = RttSamples::default();
        for sample in (1..=100).rev() {
            samples.record(sample);
        }
        let summary = samples.summary().expect("samples");
        assert_eq!(summary.samples, 100);
        assert_eq!(summary.p50, 50);
        assert_eq!(summary.p99, 99);
        assert_eq!(summary.min, 1);
        assert_eq!(summary.max, 100);
        assert_eq!(summary.mean, 50.5);
    }

    #[test]
    fn single_sample_and_empty() {
        assert_eq!(RttSamples::default().summary(), None);
        let mut samples = RttSamples::default();
        samples.record(7);
        let summary = samples.summary().expect("one");
        assert_eq!(
            (summary.p50, summary.p99, summary.min, summary.max),
            (7, 7, 7, 7)
        );
    }

    #[test]
    fn histogram_buckets_by_power_of_two() {
        let mut samples = RttSamples::default();
        for sample in [0, 1, 2, 3, 4, 7, 8, u64::MAX] {
            samples.record(sample);
        }
        let buckets = samples.histogram();
        let expected = [
            (0, 1, 1),
            (1, 2, 1),
            (2, 4, 2),
            (4, 8, 2),
            (8, 16, 1),
            (1 << 63, u64::MAX, 1),
        ];
        assert_eq!(buckets.len(), expected.len());
        for (bucket, (low, high, count)) in buckets.iter().zip(expected) {
            assert_eq!((bucket.low, bucket.high, bucket.count), (low, high, count));
        }
    }
}
