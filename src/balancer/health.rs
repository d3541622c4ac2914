//! One instance's health as a pure state machine over reported outcomes
//! and the current instant: passive ejection after consecutive failures
//! (doubling on repeats), cooldown after a 429, a broken credential.
//!
//! Whether an ejection may happen at all (never more than half of a pool
//! at once) is the pool's decision; this module only says when one is
//! wanted and how long it lasts.

use std::time::{Duration, Instant};

/// Ejection and cooldown settings, shared by the members of a pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Consecutive failures (connect error, timeout, 5xx, broken answer)
    /// that eject an instance. Default 3.
    pub failures_to_eject: u32,
    /// Length of a first ejection. Default 30 s.
    pub base_ejection: Duration,
    /// Longest ejection; an ejection within this long of the previous
    /// one's end lasts twice as long as it did. Default 10 min.
    pub max_ejection: Duration,
    /// Most of a pool that may be ejected at once, in percent (rounded
    /// down: one of three, none of one). Default 50.
    pub max_ejected_percent: u8,
    /// Cooldown after a 429 without a usable `Retry-After`: short, as a
    /// lone instance is unavailable meanwhile. Default 1 s.
    pub default_cooldown: Duration,
    /// Longest cooldown, whatever `Retry-After` says. Default 24 h.
    pub max_cooldown: Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            failures_to_eject: 3,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(600),
            max_ejected_percent: 50,
            default_cooldown: Duration::from_secs(1),
            max_cooldown: Duration::from_secs(24 * 3600),
        }
    }
}

impl HealthPolicy {
    /// How many members of a pool of `n` may be ejected at once.
    pub fn max_ejected(&self, n: usize) -> usize {
        n * usize::from(self.max_ejected_percent.min(100)) / 100
    }
}

/// What one call to an instance came to, as the gateway classifies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A usable answer (2xx, or a redirect relayed as is).
    Success,
    /// A stream that started well (status and first byte): final for the
    /// retry loop, while its effect on the instance's health waits for
    /// the stream's end ([`Pick::end_stream`](super::Pick::end_stream)).
    Streaming,
    /// A 4xx that is the client's fault (400, 404, 413, 422, …): the
    /// instance works, and every other instance would say the same.
    ClientError(u16),
    /// Connect, TLS or DNS failure.
    Connect,
    /// No answer (no first byte) in time.
    Timeout,
    /// A 5xx.
    ServerError(u16),
    /// An answer that broke the protocol or stopped short.
    Protocol,
    /// 429: quota or rate limit; `retry_after` when the upstream said.
    RateLimited {
        /// The upstream's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// 401/403 although the credential was fresh (or just refreshed):
    /// this account cannot be used until its credential changes.
    CredentialRejected {
        /// Why, for the instances listing (never a token).
        reason: String,
    },
}

impl Outcome {
    /// The outcome of an HTTP answer with `status` (and its
    /// `Retry-After`, already parsed).
    pub fn from_status(status: u16, retry_after: Option<Duration>) -> Outcome {
        match status {
            429 => Outcome::RateLimited { retry_after },
            401 | 403 => Outcome::CredentialRejected {
                reason: format!("upstream answered {status}"),
            },
            400..=499 => Outcome::ClientError(status),
            500..=599 => Outcome::ServerError(status),
            _ => Outcome::Success,
        }
    }

    /// Whether another attempt (on another instance when there is one)
    /// may succeed where this one failed. Never for the client's own
    /// errors, nor for answers that broke the protocol (retrying would
    /// double the cost of a request the upstream may have run).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Outcome::Connect
                | Outcome::Timeout
                | Outcome::ServerError(_)
                | Outcome::RateLimited { .. }
                | Outcome::CredentialRejected { .. }
        )
    }

    /// Whether it counts as an error of the instance in its statistics.
    pub fn is_error(&self) -> bool {
        !matches!(
            self,
            Outcome::Success | Outcome::Streaming | Outcome::ClientError(_)
        )
    }

    /// Whether it counts towards passive ejection.
    pub(super) fn counts_as_failure(&self) -> bool {
        matches!(
            self,
            Outcome::Connect | Outcome::Timeout | Outcome::ServerError(_) | Outcome::Protocol
        )
    }

    /// A short description for `last_error`.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Success | Outcome::Streaming => "none".to_owned(),
            Outcome::ClientError(s) => format!("client error {s}"),
            Outcome::Connect => "connect error".to_owned(),
            Outcome::Timeout => "timeout".to_owned(),
            Outcome::ServerError(s) => format!("server error {s}"),
            Outcome::Protocol => "malformed or truncated answer".to_owned(),
            Outcome::RateLimited { .. } => "rate limited (429)".to_owned(),
            Outcome::CredentialRejected { reason } => format!("credential rejected: {reason}"),
        }
    }
}

/// `now + d`, saturating at a year from now (a policy may say
/// `Duration::MAX`; an `Instant` cannot hold that).
fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d.min(Duration::from_secs(365 * 86_400)))
        .unwrap_or(now)
}

/// What a report changed, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Nothing worth a log line.
    None,
    /// Ejected for this long.
    Ejected(Duration),
    /// Would have been ejected, but half of the pool already is.
    EjectionRefused,
    /// Cooling down for this long.
    CoolingDown(Duration),
    /// Its credential is marked broken.
    CredentialBroken,
    /// An active check ended an ejection, cooldown or broken credential.
    Restored,
}

/// The state shown by the instances listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Taking requests.
    Healthy,
    /// Failed enough to be ejected, but ejecting it would eject more than
    /// half of the pool: still taking requests.
    Failing,
    /// Passively ejected until then.
    Ejected(Instant),
    /// After a 429, until then.
    Cooldown(Instant),
    /// Credential rejected, with the reason, until it changes or a check
    /// passes.
    CredentialBroken(String),
    /// `isDisabled` in the pools file.
    Disabled,
}

impl State {
    /// The state's name in JSON.
    pub fn name(&self) -> &'static str {
        match self {
            State::Healthy => "healthy",
            State::Failing => "failing",
            State::Ejected(_) => "ejected",
            State::Cooldown(_) => "cooldown",
            State::CredentialBroken(_) => "credential_broken",
            State::Disabled => "disabled",
        }
    }
}

/// The health of one instance.
#[derive(Clone, Debug, Default)]
pub struct Health {
    consecutive_failures: u32,
    ejected_until: Option<Instant>,
    /// How many times the last ejection was doubled (0 for a first one).
    doublings: u32,
    cooldown_until: Option<Instant>,
    credential: Option<String>,
}

impl Health {
    /// Applies an outcome. A failure only counts here: whether it ejects
    /// the instance is [`Health::wants_ejection`] and the pool's call.
    pub fn record(&mut self, outcome: &Outcome, now: Instant, policy: &HealthPolicy) -> Effect {
        match outcome {
            Outcome::Success | Outcome::ClientError(_) => {
                self.consecutive_failures = 0;
                self.credential = None;
                Effect::None
            }
            Outcome::RateLimited { retry_after } => {
                let wait = retry_after
                    .unwrap_or(policy.default_cooldown)
                    .min(policy.max_cooldown);
                let until = later(now, wait);
                if self.cooldown_until.is_none_or(|u| u < until) {
                    self.cooldown_until = Some(until);
                }
                Effect::CoolingDown(wait)
            }
            Outcome::CredentialRejected { reason } => {
                self.credential = Some(reason.clone());
                Effect::CredentialBroken
            }
            Outcome::Connect | Outcome::Timeout | Outcome::ServerError(_) | Outcome::Protocol => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                Effect::None
            }
            Outcome::Streaming => Effect::None,
        }
    }

    /// Whether the failures so far call for an ejection at `now`.
    pub fn wants_ejection(&self, now: Instant, policy: &HealthPolicy) -> bool {
        self.consecutive_failures >= policy.failures_to_eject.max(1) && !self.is_ejected(now)
    }

    /// Ejects the instance from `now`; returns for how long: the base
    /// time, doubled for each ejection that followed the previous one's
    /// end by less than the longest ejection, capped at the longest.
    pub fn eject(&mut self, now: Instant, policy: &HealthPolicy) -> Duration {
        let repeat = self
            .ejected_until
            .is_some_and(|end| now.saturating_duration_since(end) < policy.max_ejection);
        self.doublings = if repeat {
            self.doublings.saturating_add(1)
        } else {
            0
        };
        let length = policy
            .base_ejection
            .saturating_mul(1u32 << self.doublings.min(20))
            .min(policy.max_ejection);
        self.ejected_until = Some(later(now, length));
        self.consecutive_failures = 0;
        length
    }

    /// A passing active check: ends an ejection, a cooldown and a broken
    /// credential. The doubling is kept, so an instance that passes its
    /// checks but fails requests is ejected for longer each time.
    pub fn check_passed(&mut self, now: Instant) -> Effect {
        let was_out = self.is_ejected(now) || self.is_cooling(now) || self.credential.is_some();
        if let Some(until) = &mut self.ejected_until {
            *until = (*until).min(now);
        }
        self.cooldown_until = None;
        self.credential = None;
        self.consecutive_failures = 0;
        if was_out {
            Effect::Restored
        } else {
            Effect::None
        }
    }

    /// Forgets a broken credential (its file changed).
    pub fn clear_credential(&mut self) {
        self.credential = None;
    }

    /// Whether passively ejected at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|u| now < u)
    }

    /// Whether cooling down after a 429 at `now`.
    pub fn is_cooling(&self, now: Instant) -> bool {
        self.cooldown_until.is_some_and(|u| now < u)
    }

    /// End of the ejection in force at `now`.
    pub fn ejected_until(&self, now: Instant) -> Option<Instant> {
        self.ejected_until.filter(|&u| now < u)
    }

    /// End of the cooldown in force at `now`.
    pub fn cooldown_until(&self, now: Instant) -> Option<Instant> {
        self.cooldown_until.filter(|&u| now < u)
    }

    /// The broken credential's reason.
    pub fn credential(&self) -> Option<&str> {
        self.credential.as_deref()
    }

    /// Failures since the last success or ejection.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// The state at `now`, most severe first.
    pub fn state(&self, now: Instant, policy: &HealthPolicy) -> State {
        if let Some(reason) = &self.credential {
            State::CredentialBroken(reason.clone())
        } else if let Some(until) = self.cooldown_until(now) {
            State::Cooldown(until)
        } else if let Some(until) = self.ejected_until(now) {
            State::Ejected(until)
        } else if self.consecutive_failures >= policy.failures_to_eject.max(1) {
            State::Failing
        } else {
            State::Healthy
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn fail(h: &mut Health, now: Instant, p: &HealthPolicy, n: u32) {
        for _ in 0..n {
            h.record(&Outcome::ServerError(500), now, p);
        }
    }

    #[test]
    fn classification_of_statuses() {
        assert_eq!(Outcome::from_status(200, None), Outcome::Success);
        assert_eq!(Outcome::from_status(304, None), Outcome::Success);
        for s in [400, 404, 413, 422] {
            let o = Outcome::from_status(s, None);
            assert_eq!(o, Outcome::ClientError(s));
            assert!(!o.is_retryable() && !o.is_error(), "{s}");
        }
        for s in [500, 502, 503, 504] {
            assert!(Outcome::from_status(s, None).is_retryable(), "{s}");
        }
        let limited = Outcome::from_status(429, Some(secs(7)));
        assert_eq!(
            limited,
            Outcome::RateLimited {
                retry_after: Some(secs(7))
            }
        );
        assert!(limited.is_retryable());
        assert!(matches!(
            Outcome::from_status(401, None),
            Outcome::CredentialRejected { .. }
        ));
        assert!(Outcome::Connect.is_retryable() && Outcome::Timeout.is_retryable());
        assert!(!Outcome::Protocol.is_retryable() && Outcome::Protocol.is_error());
        assert!(!Outcome::Success.is_retryable());
        assert!(!Outcome::Streaming.is_retryable() && !Outcome::Streaming.is_error());
    }

    #[test]
    fn three_consecutive_failures_want_an_ejection() {
        let p = HealthPolicy::default();
        let t0 = Instant::now();
        let mut h = Health::default();
        fail(&mut h, t0, &p, 2);
        assert!(!h.wants_ejection(t0, &p));
        h.record(&Outcome::Success, t0, &p);
        fail(&mut h, t0, &p, 2);
        assert!(!h.wants_ejection(t0, &p), "a success resets the count");
        h.record(&Outcome::ClientError(400), t0, &p);
        fail(&mut h, t0, &p, 2);
        assert!(!h.wants_ejection(t0, &p), "a 4xx answer resets it too");
        h.record(&Outcome::Timeout, t0, &p);
        assert_eq!(h.consecutive_failures(), 3);
        assert!(h.wants_ejection(t0, &p));
        for o in [
            Outcome::Connect,
            Outcome::Timeout,
            Outcome::ServerError(503),
            Outcome::Protocol,
        ] {
            let mut h = Health::default();
            for _ in 0..3 {
                h.record(&o, t0, &p);
            }
            assert!(h.wants_ejection(t0, &p), "{o:?}");
        }
    }

    #[test]
    fn rate_limits_and_credentials_are_not_failures() {
        let p = HealthPolicy::default();
        let t0 = Instant::now();
        let mut h = Health::default();
        for _ in 0..10 {
            h.record(&Outcome::RateLimited { retry_after: None }, t0, &p);
            h.record(
                &Outcome::CredentialRejected {
                    reason: "401".into(),
                },
                t0,
                &p,
            );
        }
        assert_eq!(h.consecutive_failures(), 0);
        assert!(!h.wants_ejection(t0, &p));
    }

    #[test]
    fn ejection_doubles_on_repeat_up_to_the_cap_and_resets_after_a_quiet_spell() {
        let p = HealthPolicy::default();
        let mut now = Instant::now();
        let mut h = Health::default();
        let mut lengths = Vec::new();
        for _ in 0..7 {
            fail(&mut h, now, &p, 3);
            assert!(h.wants_ejection(now, &p));
            let d = h.eject(now, &p);
            lengths.push(d.as_secs());
            assert!(h.is_ejected(now + d - Duration::from_nanos(1)));
            assert!(!h.is_ejected(now + d), "ends exactly after {d:?}");
            // Back, and failing again right away.
            now += d;
        }
        assert_eq!(lengths, [30, 60, 120, 240, 480, 600, 600]);
        // Ten quiet minutes after the last ejection ended: a new one is a
        // first one again.
        now += secs(600);
        fail(&mut h, now, &p, 3);
        assert_eq!(h.eject(now, &p), secs(30));
        // Just under ten minutes: a repeat.
        now += secs(30) + secs(599);
        fail(&mut h, now, &p, 3);
        assert_eq!(h.eject(now, &p), secs(60));
    }

    #[test]
    fn an_ejected_instance_needs_fresh_failures_after_it_returns() {
        let p = HealthPolicy::default();
        let t0 = Instant::now();
        let mut h = Health::default();
        fail(&mut h, t0, &p, 3);
        let d = h.eject(t0, &p);
        assert!(!h.wants_ejection(t0, &p), "already ejected");
        let back = t0 + d;
        fail(&mut h, back, &p, 2);
        assert!(!h.wants_ejection(back, &p));
        fail(&mut h, back, &p, 1);
        assert!(h.wants_ejection(back, &p));
    }

    #[test]
    fn cooldown_follows_retry_after_with_a_default_and_a_cap() {
        let p = HealthPolicy::default();
        let t0 = Instant::now();
        let mut h = Health::default();
        let e = h.record(
            &Outcome::RateLimited {
                retry_after: Some(secs(42)),
            },
            t0,
            &p,
        );
        assert_eq!(e, Effect::CoolingDown(secs(42)));
        assert_eq!(h.cooldown_until(t0), Some(t0 + secs(42)));
        assert_eq!(h.state(t0, &p), State::Cooldown(t0 + secs(42)));
        // A shorter Retry-After does not shorten a cooldown in force.
        h.record(
            &Outcome::RateLimited {
                retry_after: Some(secs(1)),
            },
            t0,
            &p,
        );
        assert_eq!(h.cooldown_until(t0), Some(t0 + secs(42)));
        assert!(!h.is_cooling(t0 + secs(42)));
        assert_eq!(h.state(t0 + secs(42), &p), State::Healthy);

        let mut h = Health::default();
        h.record(&Outcome::RateLimited { retry_after: None }, t0, &p);
        assert_eq!(h.cooldown_until(t0), Some(t0 + p.default_cooldown));
        let mut h = Health::default();
        let huge = Some(Duration::from_secs(u64::MAX / 4));
        h.record(&Outcome::RateLimited { retry_after: huge }, t0, &p);
        assert_eq!(h.cooldown_until(t0), Some(t0 + p.max_cooldown));
        // Even a policy without a cap cannot overflow the clock.
        let uncapped = HealthPolicy {
            max_cooldown: Duration::MAX,
            max_ejection: Duration::MAX,
            base_ejection: Duration::MAX,
            ..HealthPolicy::default()
        };
        let mut h = Health::default();
        h.record(&Outcome::RateLimited { retry_after: huge }, t0, &uncapped);
        assert!(h.is_cooling(t0 + secs(86_400 * 300)));
        fail(&mut h, t0, &uncapped, 3);
        assert!(h.eject(t0, &uncapped) > secs(86_400));
    }

    #[test]
    fn credential_stays_broken_until_cleared_a_check_passes_or_a_success() {
        let p = HealthPolicy::default();
        let t0 = Instant::now();
        let broken = Outcome::CredentialRejected {
            reason: "upstream answered 401".into(),
        };
        let mut h = Health::default();
        assert_eq!(h.record(&broken, t0, &p), Effect::CredentialBroken);
        let later = t0 + secs(86_400);
        assert_eq!(
            h.state(later, &p),
            State::CredentialBroken("upstream answered 401".into())
        );
        h.clear_credential();
        assert_eq!(h.state(later, &p), State::Healthy);
        h.record(&broken, t0, &p);
        assert_eq!(h.check_passed(later), Effect::Restored);
        assert_eq!(h.credential(), None);
        h.record(&broken, t0, &p);
        h.record(&Outcome::Success, t0, &p);
        assert_eq!(h.credential(), None);
    }

    #[test]
    fn a_passing_check_ends_an_ejection_and_a_cooldown_early() {
        let p = HealthPolicy::default();
        let t0 = Instant::now();
        let mut h = Health::default();
        fail(&mut h, t0, &p, 3);
        h.eject(t0, &p);
        h.record(&Outcome::RateLimited { retry_after: None }, t0, &p);
        let t1 = t0 + secs(1);
        assert!(h.is_ejected(t1));
        assert_eq!(h.check_passed(t1), Effect::Restored);
        assert!(!h.is_ejected(t1) && !h.is_cooling(t1));
        assert_eq!(h.state(t1, &p), State::Healthy);
        assert_eq!(h.check_passed(t1), Effect::None, "nothing to restore");
        // The next ejection still counts as a repeat.
        fail(&mut h, t1, &p, 3);
        assert_eq!(h.eject(t1, &p), secs(60));
    }

    #[test]
    fn states_by_severity() {
        let p = HealthPolicy::default();
        let t0 = Instant::now();
        let mut h = Health::default();
        assert_eq!(h.state(t0, &p).name(), "healthy");
        fail(&mut h, t0, &p, 3);
        assert_eq!(h.state(t0, &p), State::Failing);
        h.eject(t0, &p);
        assert_eq!(h.state(t0, &p), State::Ejected(t0 + secs(30)));
        h.record(&Outcome::RateLimited { retry_after: None }, t0, &p);
        assert_eq!(h.state(t0, &p).name(), "cooldown");
        h.record(&Outcome::CredentialRejected { reason: "x".into() }, t0, &p);
        assert_eq!(h.state(t0, &p).name(), "credential_broken");
        assert_eq!(State::Disabled.name(), "disabled");
    }

    #[test]
    fn max_ejected_rounds_down() {
        let p = HealthPolicy::default();
        assert_eq!(
            (0..=5).map(|n| p.max_ejected(n)).collect::<Vec<_>>(),
            [0, 0, 1, 1, 2, 2]
        );
        let all = HealthPolicy {
            max_ejected_percent: 200,
            ..HealthPolicy::default()
        };
        assert_eq!(all.max_ejected(3), 3);
    }
}
