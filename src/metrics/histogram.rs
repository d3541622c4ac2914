//! A lock-free latency histogram with fixed buckets.
//!
//! prometheus-client's `Histogram` takes a mutex per observation and does
//! not expose its buckets, which the dashboard summary needs for quantile
//! estimates. This one is a row of atomics: an observation is one bucket
//! search, one `fetch_add` and one compare-and-swap on the sum, and a
//! snapshot can be read at any time. It encodes through prometheus-client's
//! own `MetricEncoder::encode_histogram`, so both text formats stay theirs.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds (seconds) of the latency buckets, `+Inf` implied.
///
/// From 0.5 ms (a cache hit or a local error) to 10 min (a long stream),
/// roughly 1-2.5-5 per decade, with a boundary at each alerting threshold
/// (1 s, 10 s, 30 s). 19 bounds give 22 series per label set.
pub const LATENCY_BUCKETS: [f64; 19] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0,
];

/// Number of buckets including the implicit `+Inf`.
pub(crate) const BUCKETS: usize = LATENCY_BUCKETS.len() + 1;

/// Non-cumulative bucket counts; the last one is `+Inf`.
pub(crate) type Counts = [u64; BUCKETS];

/// A histogram over [`LATENCY_BUCKETS`]; cloning shares the same counts.
#[derive(Clone, Debug, Default)]
pub struct LatencyHistogram {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Per-bucket (not cumulative) counts; `_count` is their sum, so
    /// `_count` always equals the `+Inf` bucket in the exposition.
    buckets: [AtomicU64; BUCKETS],
    /// Sum of observations in seconds, as `f64` bits.
    sum_bits: AtomicU64,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_bits: AtomicU64::new(0f64.to_bits()),
        }
    }
}

impl LatencyHistogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        self.observe_secs(d.as_secs_f64());
    }

    /// Records one value in seconds (negative and NaN count as 0).
    pub fn observe_secs(&self, secs: f64) {
        let v = if secs.is_nan() || secs < 0.0 {
            0.0
        } else {
            secs
        };
        let i = LATENCY_BUCKETS.partition_point(|&bound| bound < v);
        self.inner.buckets[i].fetch_add(1, Ordering::Relaxed);
        let mut old = self.inner.sum_bits.load(Ordering::Relaxed);
        loop {
            let new = (f64::from_bits(old) + v).to_bits();
            match self.inner.sum_bits.compare_exchange_weak(
                old,
                new,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(current) => old = current,
            }
        }
    }

    /// Per-bucket counts (not cumulative).
    pub(crate) fn counts(&self) -> Counts {
        std::array::from_fn(|i| self.inner.buckets[i].load(Ordering::Relaxed))
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.counts().iter().sum()
    }

    /// Sum of observations in seconds.
    pub fn sum(&self) -> f64 {
        f64::from_bits(self.inner.sum_bits.load(Ordering::Relaxed))
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let counts = self.counts();
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(counts)
            .collect();
        // `encode_histogram` takes per-bucket counts and accumulates itself.
        encoder.encode_histogram::<NoLabelSet>(
            self.sum(),
            counts.iter().sum(),
            &buckets,
            None::<&HashMap<usize, Exemplar<NoLabelSet, f64>>>,
        )
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Subtracts an older snapshot of counts (saturating, in case of a reset).
#[cfg(feature = "dashboard")]
pub(crate) fn delta(new: &Counts, old: &Counts) -> Counts {
    std::array::from_fn(|i| new[i].saturating_sub(old[i]))
}

/// Estimates the `q` quantile (0..=1) from per-bucket counts the way
/// PromQL's `histogram_quantile` does: linear interpolation inside the
/// bucket, 0 as the lower bound of the first one, and the highest finite
/// bound when the rank falls in `+Inf`. `None` when there is no data.
#[cfg(feature = "dashboard")]
pub fn quantile(q: f64, counts: &Counts) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &n) in counts.iter().enumerate() {
        let upto = below + n;
        if (upto as f64) >= rank && n > 0 {
            let Some(&upper) = LATENCY_BUCKETS.get(i) else {
                return LATENCY_BUCKETS.last().copied();
            };
            let lower = if i == 0 { 0.0 } else { LATENCY_BUCKETS[i - 1] };
            let within = (rank - below as f64) / n as f64;
            return Some(lower + (upper - lower) * within.clamp(0.0, 1.0));
        }
        below = upto;
    }
    LATENCY_BUCKETS.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_le_buckets() {
        let h = LatencyHistogram::default();
        h.observe_secs(0.0005); // exactly on a bound: le="0.0005"
        h.observe_secs(0.0006);
        h.observe_secs(1000.0); // +Inf
        h.observe_secs(-1.0); // clamped to 0
        let c = h.counts();
        assert_eq!(c[0], 2);
        assert_eq!(c[1], 1);
        assert_eq!(c[BUCKETS - 1], 1);
        assert_eq!(h.count(), 4);
        assert!((h.sum() - 1000.0011).abs() < 1e-9);
    }

    #[test]
    fn concurrent_observations_are_not_lost() {
        let h = LatencyHistogram::default();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        h.observe(Duration::from_millis(3));
                    }
                });
            }
        });
        assert_eq!(h.count(), 40_000);
        assert!((h.sum() - 120.0).abs() < 1e-6, "{}", h.sum());
    }

    #[test]
    fn quantiles_interpolate_like_promql() {
        let mut c: Counts = [0; BUCKETS];
        assert_eq!(quantile(0.5, &c), None);
        // 100 observations in (1, 2.5]: the median is half way.
        c[11] = 100;
        let p50 = quantile(0.5, &c).unwrap();
        assert!((p50 - 1.75).abs() < 1e-9, "{p50}");
        // Everything beyond the last bound reports the last bound.
        let mut inf: Counts = [0; BUCKETS];
        inf[BUCKETS - 1] = 3;
        assert_eq!(quantile(0.99, &inf), Some(600.0));
        // First bucket interpolates from 0.
        let mut first: Counts = [0; BUCKETS];
        first[0] = 10;
        assert!((quantile(0.5, &first).unwrap() - 0.00025).abs() < 1e-12);
    }

    #[test]
    fn quantiles_skip_empty_buckets() {
        let mut c: Counts = [0; BUCKETS];
        c[2] = 50; // (0.001, 0.0025]
        c[13] = 50; // (5, 10]
        assert!(quantile(0.5, &c).unwrap() <= 0.0025);
        let p99 = quantile(0.99, &c).unwrap();
        assert!(p99 > 5.0 && p99 <= 10.0, "{p99}");
    }
}
