//! When and how soon a failed attempt is tried again, and the budget that
//! keeps retries from multiplying the load on a failing upstream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::random::Random;

/// Retry settings of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// `--request-max-retries`: attempts after the first. Default 2.
    pub max_retries: u32,
    /// `--request-base-delay`: the back-off before the first retry is
    /// drawn from `[0, base_delay]`, doubling with each retry.
    pub base_delay: Duration,
    /// Longest back-off, and longest `Retry-After` worth waiting for
    /// (a longer one fails over, or ends the request). Default 5 s.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 2,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0 for the first): "full
    /// jitter" (uniform in `[0, min(max_delay, base_delay × 2^retry)]`),
    /// which spreads the retries of many clients failing at once.
    pub fn backoff(&self, retry: u32, random: &dyn Random) -> Duration {
        let ceiling = self
            .base_delay
            .saturating_mul(1u32 << retry.min(20))
            .min(self.max_delay);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(random.below(nanos.saturating_add(1)))
    }
}

/// Envoy's retry budget: retries in flight may be at most a share of the
/// requests in flight (20 %), but always at least a few (3), so a quiet
/// gateway can still retry while a flood of failures cannot multiply the
/// load on an upstream that is already struggling.
///
/// A share of what is in flight bounds the load at any instant, not the
/// total: requests that fail slowly while clients wait between them leave
/// the floor of 3 free again and again. So a retry also pays from a
/// running balance, as in Finagle's `RetryBudget`: each request deposits
/// the share (0.2 of a retry), the balance starts at the floor (3) and
/// never holds more than the floor plus the deposits of the requests in
/// flight. Whatever the timing, retries stay at most 20 % of the requests
/// plus 3; a burst still gets its share at once, from the deposits of the
/// requests it is made of.
#[derive(Debug)]
pub struct RetryBudget {
    percent: u64,
    min_concurrent: u64,
    requests: AtomicU64,
    retries: AtomicU64,
    /// In thousandths of a retry.
    balance: AtomicU64,
    granted: AtomicU64,
    refused: AtomicU64,
}

/// A retry, in the balance's unit.
const RETRY: u64 = 1000;

impl Default for RetryBudget {
    fn default() -> Self {
        Self::new(20, 3)
    }
}

impl RetryBudget {
    /// A budget of `percent` of the requests in flight, at least
    /// `min_concurrent` retries.
    pub fn new(percent: u64, min_concurrent: u64) -> Self {
        Self {
            percent,
            min_concurrent,
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            balance: AtomicU64::new(min_concurrent.saturating_mul(RETRY)),
            granted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// What one request deposits into the balance.
    fn deposit(&self) -> u64 {
        self.percent.saturating_mul(RETRY / 100)
    }

    /// Most the balance may hold with `in_flight` requests in flight.
    fn cap(&self, in_flight: u64) -> u64 {
        self.min_concurrent
            .saturating_mul(RETRY)
            .saturating_add(self.deposit().saturating_mul(in_flight))
    }

    /// Counts a request in flight until the guard drops, and makes its
    /// deposit.
    pub fn request(self: &Arc<Self>) -> RequestGuard {
        let in_flight = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let (deposit, cap) = (self.deposit(), self.cap(in_flight));
        let _ = self
            .balance
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |b| {
                Some(b.saturating_add(deposit).min(cap))
            });
        RequestGuard(Arc::clone(self))
    }

    /// Retries allowed in flight now.
    pub fn limit(&self) -> u64 {
        (self.requests.load(Ordering::Relaxed) * self.percent / 100).max(self.min_concurrent)
    }

    /// A retry in flight until the guard drops, or `None` (counted as a
    /// refusal) when the budget is spent: too many retries in flight, or
    /// too little balance.
    pub fn try_retry(self: &Arc<Self>) -> Option<RetryGuard> {
        let limit = self.limit();
        let taken = self
            .retries
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |r| {
                (r < limit).then_some(r + 1)
            });
        let paid = taken.is_ok() && {
            let cap = self.cap(self.requests.load(Ordering::Relaxed));
            self.balance
                .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |b| {
                    b.min(cap).checked_sub(RETRY)
                })
                .is_ok()
        };
        if paid {
            self.granted.fetch_add(1, Ordering::Relaxed);
            Some(RetryGuard(Arc::clone(self)))
        } else {
            if taken.is_ok() {
                self.retries.fetch_sub(1, Ordering::Relaxed);
            }
            self.refused.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// Requests in flight.
    pub fn requests_in_flight(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Retries in flight.
    pub fn retries_in_flight(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Retries granted so far.
    pub fn granted(&self) -> u64 {
        self.granted.load(Ordering::Relaxed)
    }

    /// Retries refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// A request counted by [`RetryBudget::request`].
#[derive(Debug)]
pub struct RequestGuard(Arc<RetryBudget>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A retry granted by [`RetryBudget::try_retry`].
#[derive(Debug)]
pub struct RetryGuard(Arc<RetryBudget>);

impl Drop for RetryGuard {
    fn drop(&mut self) {
        self.0.retries.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::random::SplitMix64;

    /// A "random" source that always returns the same number.
    struct Fixed(u64);
    impl Random for Fixed {
        fn next_u64(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_full_jitter() {
        let p = RetryPolicy {
            max_retries: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
        };
        // The top of each range, then the bottom.
        let top = Fixed(u64::MAX);
        let ceilings: Vec<u128> = (0..6).map(|r| p.backoff(r, &top).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.backoff(3, &Fixed(0)), Duration::ZERO);
        let r = SplitMix64::seeded(4);
        let draws: Vec<Duration> = (0..2000).map(|_| p.backoff(2, &r)).collect();
        assert!(draws.iter().all(|d| *d <= Duration::from_millis(400)));
        let low = draws
            .iter()
            .filter(|d| **d < Duration::from_millis(200))
            .count();
        assert!(
            (850..=1150).contains(&low),
            "uniform: {low} of 2000 in the lower half"
        );
        // Huge retry numbers and delays do not overflow.
        let big = RetryPolicy {
            base_delay: Duration::MAX,
            max_delay: Duration::MAX,
            ..p
        };
        assert!(big.backoff(u32::MAX, &top) > Duration::ZERO);
        let zero = RetryPolicy {
            base_delay: Duration::ZERO,
            ..RetryPolicy::default()
        };
        assert_eq!(zero.backoff(1, &top), Duration::ZERO);
    }

    #[test]
    fn budget_has_a_floor_of_three() {
        let b = Arc::new(RetryBudget::default());
        let _req = b.request();
        let granted: Vec<_> = (0..5).filter_map(|_| b.try_retry()).collect();
        assert_eq!(granted.len(), 3);
        assert_eq!((b.granted(), b.refused()), (3, 2));
        drop(granted);
        assert_eq!(b.retries_in_flight(), 0);
        // Released retries free the floor, but the balance they spent
        // comes back only with requests: one retry per five.
        assert!(b.try_retry().is_none());
        for _ in 0..5 {
            drop(b.request());
        }
        assert!(b.try_retry().is_some(), "five requests paid for a retry");
    }

    #[test]
    fn budget_is_a_fifth_of_the_requests_in_flight() {
        let b = Arc::new(RetryBudget::default());
        let reqs: Vec<_> = (0..100).map(|_| b.request()).collect();
        assert_eq!(b.limit(), 20);
        let granted: Vec<_> = (0..30).filter_map(|_| b.try_retry()).collect();
        assert_eq!(granted.len(), 20);
        assert_eq!(b.refused(), 10);
        drop(reqs);
        assert_eq!(b.requests_in_flight(), 0);
        assert_eq!(b.limit(), 3);
        // Retries over the new limit stay counted until they finish.
        assert!(b.try_retry().is_none());
        drop(granted);
        assert!(b.try_retry().is_some());
        let b = Arc::new(RetryBudget::default());
        let _reqs: Vec<_> = (0..19).map(|_| b.request()).collect();
        assert_eq!(b.limit(), 3, "19 × 20 % rounds down to 3");
        let _more: Vec<_> = (0..6).map(|_| b.request()).collect();
        assert_eq!(b.limit(), 5);
    }

    #[test]
    fn retries_stay_a_fifth_of_the_requests_plus_three_whatever_the_timing() {
        // One request at a time, each failing and asking for two retries:
        // the floor of 3 in flight would grant them all; the balance
        // grants the 3 it starts with, then one per five requests.
        let b = Arc::new(RetryBudget::default());
        for _ in 0..100 {
            let _req = b.request();
            for _ in 0..2 {
                drop(b.try_retry());
            }
        }
        assert_eq!(b.granted(), 3 + 100 / 5);
        assert_eq!(b.granted() + b.refused(), 200);
        assert_eq!(b.retries_in_flight(), 0, "a refusal undoes its claim");
        // A quiet stretch refills no more than the floor.
        let b = Arc::new(RetryBudget::default());
        for _ in 0..1000 {
            drop(b.request());
        }
        let _req = b.request();
        let granted: Vec<_> = (0..10).filter_map(|_| b.try_retry()).collect();
        assert_eq!(granted.len(), 3);
    }

    #[test]
    fn a_burst_gets_its_share_at_once() {
        let b = Arc::new(RetryBudget::default());
        let reqs: Vec<_> = (0..60).map(|_| b.request()).collect();
        let granted: Vec<_> = (0..60).filter_map(|_| b.try_retry()).collect();
        assert_eq!(granted.len(), 12);
        drop(granted);
        drop(reqs);
        // The deposits of finished requests are gone: the floor is left.
        let _req = b.request();
        let again: Vec<_> = (0..10).filter_map(|_| b.try_retry()).collect();
        assert!(again.len() <= 3, "{}", again.len());
        assert!(b.granted() <= 60 / 5 + 1 + 3);
    }

    #[test]
    fn budget_holds_under_concurrency() {
        let b = Arc::new(RetryBudget::default());
        let _reqs: Vec<_> = (0..50).map(|_| b.request()).collect();
        let peak = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..2000 {
                        if let Some(g) = b.try_retry() {
                            peak.fetch_max(b.retries_in_flight(), Ordering::Relaxed);
                            drop(g);
                        }
                    }
                });
            }
        });
        assert!(peak.load(Ordering::Relaxed) <= 10);
        assert_eq!(b.granted() + b.refused(), 16_000);
        assert_eq!(b.retries_in_flight(), 0);
    }
}
