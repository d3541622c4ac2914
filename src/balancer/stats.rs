//! Latency of recent calls and the JSON shapes of the balancer's admin
//! endpoints.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// How many recent latencies each instance keeps.
const WINDOW: usize = 128;

/// The latencies of an instance's last [`WINDOW`] calls, in microseconds:
/// a fixed ring, so percentiles describe the instance as it is now and
/// the memory is bounded.
#[derive(Clone, Debug)]
pub struct LatencyWindow {
    samples: Box<[u32; WINDOW]>,
    next: usize,
    len: usize,
}

impl Default for LatencyWindow {
    fn default() -> Self {
        Self {
            samples: Box::new([0; WINDOW]),
            next: 0,
            len: 0,
        }
    }
}

impl LatencyWindow {
    /// Records one call's latency (saturating at about 71 minutes).
    pub fn record(&mut self, latency: Duration) {
        self.samples[self.next] = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        self.next = (self.next + 1) % WINDOW;
        self.len = (self.len + 1).min(WINDOW);
    }

    /// p50 and p95 of the window (nearest rank), `None` when empty.
    pub fn percentiles(&self) -> Option<Latency> {
        if self.len == 0 {
            return None;
        }
        let mut sorted = self.samples[..self.len].to_vec();
        sorted.sort_unstable();
        let rank = |p: usize| sorted[(p * self.len).div_ceil(100).max(1) - 1];
        let ms = |us: u32| f64::from(us) / 1000.0;
        Some(Latency {
            p50: ms(rank(50)),
            p95: ms(rank(95)),
        })
    }
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
}

/// One instance in `GET /loadbalancer/instances`. Never holds a secret.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InstanceStatus {
    /// Provider name (`gemini-cli`).
    pub provider: &'static str,
    /// The instance id (the pool member's uuid).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Selection weight.
    pub weight: u32,
    /// Whether it takes requests normally now.
    pub healthy: bool,
    /// `healthy`, `failing`, `ejected`, `cooldown`, `credential_broken`
    /// or `disabled`.
    pub state: &'static str,
    /// Why it is not healthy, when there is a reason to give.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Milliseconds until an ejection or cooldown ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Requests being served now.
    pub in_flight: u32,
    /// Times the balancer chose it.
    pub selections: u64,
    /// Calls whose outcome was reported.
    pub requests: u64,
    /// Calls that failed (not the client's errors).
    pub errors: u64,
    /// Times it was ejected.
    pub ejections: u64,
    /// The last failure.
    pub last_error: Option<String>,
    /// Recent latency (to the answer, or to the first byte of a stream).
    pub latency_ms: Option<Latency>,
}

/// `GET /loadbalancer/metrics`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BalancerMetrics {
    /// The algorithm in force.
    pub algorithm: &'static str,
    /// Selections per instance id.
    pub selections: BTreeMap<String, u64>,
    /// Recent latency per instance id (instances that have answered).
    pub latency_ms: BTreeMap<String, Latency>,
    /// Retries granted.
    pub retries: u64,
    /// Retries refused by the retry budget.
    pub budget_refusals: u64,
    /// Ejections, over every instance.
    pub ejections: u64,
    /// Requests for which no instance could be chosen.
    pub none_eligible: u64,
    /// Choices made in panic mode (every healthy instance gone, so the
    /// ejected ones were used).
    pub panics: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut w = LatencyWindow::default();
        assert_eq!(w.percentiles(), None);
        for ms in 1..=100 {
            w.record(Duration::from_millis(ms));
        }
        assert_eq!(
            w.percentiles(),
            Some(Latency {
                p50: 50.0,
                p95: 95.0
            })
        );
        let mut one = LatencyWindow::default();
        one.record(Duration::from_micros(1500));
        assert_eq!(one.percentiles(), Some(Latency { p50: 1.5, p95: 1.5 }));
    }

    #[test]
    fn the_window_forgets_old_calls() {
        let mut w = LatencyWindow::default();
        for _ in 0..1000 {
            w.record(Duration::from_secs(10));
        }
        for _ in 0..WINDOW {
            w.record(Duration::from_millis(2));
        }
        assert_eq!(w.percentiles(), Some(Latency { p50: 2.0, p95: 2.0 }));
        w.record(Duration::from_secs(1 << 40));
        assert!(w.percentiles().is_some());
    }
}
