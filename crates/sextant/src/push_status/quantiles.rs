//! Durations in logarithmic buckets, for the quantiles of one version's sends and ACKs in a
//! fixed space whatever the number of proxies.

use std::time::Duration;

/// Buckets per doubling: a quantile is read within 2^(1/8), about 9 %.
const PER_OCTAVE: f64 = 8.0;
/// The first bucket holds everything up to 100 µs.
const FLOOR: f64 = 1e-4;
/// 8 buckets for each of 21 doublings: 100 µs to 210 s; the last holds everything longer.
const BUCKETS: usize = 8 * 21 + 1;

/// A histogram of durations with the exact maximum.
#[derive(Clone)]
pub(super) struct Quantiles {
    counts: [u32; BUCKETS],
    count: u32,
    max: Duration,
}

impl Default for Quantiles {
    fn default() -> Self {
        Quantiles {
            counts: [0; BUCKETS],
            count: 0,
            max: Duration::ZERO,
        }
    }
}

fn bucket(d: Duration) -> usize {
    let ratio = d.as_secs_f64() / FLOOR;
    if ratio <= 1.0 {
        return 0;
    }
    ((ratio.log2() * PER_OCTAVE).ceil() as usize).min(BUCKETS - 1)
}

/// The longest duration of bucket `i`.
fn upper(i: usize) -> f64 {
    FLOOR * (i as f64 / PER_OCTAVE).exp2()
}

impl Quantiles {
    /// Counts `d`.
    pub(super) fn record(&mut self, d: Duration) {
        self.counts[bucket(d)] += 1;
        self.count += 1;
        self.max = self.max.max(d);
    }

    /// Durations counted.
    pub(super) fn count(&self) -> u32 {
        self.count
    }

    /// The longest duration counted, in seconds.
    pub(super) fn max(&self) -> f64 {
        self.max.as_secs_f64()
    }

    /// The `q` quantile in seconds (`0 < q <= 1`): the upper end of the bucket holding it, never
    /// more than the maximum; `None` when nothing was counted.
    pub(super) fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * f64::from(self.count)).ceil() as u32).clamp(1, self.count);
        let mut seen = 0;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                // The last bucket has no upper end but the maximum.
                let end = if i == BUCKETS - 1 { f64::MAX } else { upper(i) };
                return Some(end.min(self.max()));
            }
        }
        Some(self.max())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_a_bucket_and_never_past_the_maximum() {
        let mut q = Quantiles::default();
        assert_eq!(q.quantile(0.5), None);
        for ms in 1..=100 {
            q.record(Duration::from_millis(ms));
        }
        let p50 = q.quantile(0.5).expect("counted");
        assert!((0.050..=0.050 * 1.1).contains(&p50), "{p50}");
        let p99 = q.quantile(0.99).expect("counted");
        assert!((0.099..=0.100).contains(&p99), "{p99}");
        assert_eq!(q.quantile(1.0), Some(0.1));
        assert_eq!(q.max(), 0.1);
        assert_eq!(q.count(), 100);
    }

    #[test]
    fn tiny_and_huge_durations_land_in_the_end_buckets() {
        let mut q = Quantiles::default();
        q.record(Duration::ZERO);
        q.record(Duration::from_secs(100_000));
        assert_eq!(q.quantile(0.5), Some(FLOOR));
        assert_eq!(q.quantile(1.0), Some(100_000.0));
    }
}
