//! One instance as the balancer sees it: its settings, counters and
//! health. A [`Member`] lives as long as its provider instance, so a
//! reload that keeps the instance keeps its health and counters.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::health::{Effect, Health, HealthPolicy, Outcome, State};
use super::random::stable_hash;
use super::stats::{InstanceStatus, LatencyWindow};
use crate::provider_kind::ProviderKind;

/// Which models an instance serves (`supportedModels` /
/// `notSupportedModels`). Names match exactly, as in the original.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ModelFilter {
    /// When not empty, only these models.
    pub supported: Vec<String>,
    /// Never these models (ignored when `supported` is set).
    pub not_supported: Vec<String>,
}

impl ModelFilter {
    /// Whether a request for `model` may go to the instance.
    pub fn allows(&self, model: &str) -> bool {
        if self.supported.is_empty() {
            !self.not_supported.iter().any(|m| m == model)
        } else {
            self.supported.iter().any(|m| m == model)
        }
    }
}

/// What the balancer needs to know about an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberSettings {
    /// Provider type.
    pub kind: ProviderKind,
    /// Stable id: the pool member's uuid, or `<provider>-0` for the
    /// instance the flags describe.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Selection weight, at least 1.
    pub weight: u32,
    /// `isDisabled`: never chosen.
    pub disabled: bool,
    /// Models it serves.
    pub models: ModelFilter,
}

/// Everything that changes under the member's lock.
#[derive(Debug, Default)]
struct Locked {
    health: Health,
    latency: LatencyWindow,
    last_error: Option<String>,
}

/// One instance's balancing state. Cheap reads on the selection path:
/// the health summary is mirrored into atomics, written under the lock.
#[derive(Debug)]
pub struct Member {
    settings: MemberSettings,
    id_hash: u64,
    /// Origin of the `*_until` tick values below.
    epoch: Instant,
    /// Ticks (nanoseconds after `epoch`, plus one) until which the member
    /// is ejected; 0 when never.
    ejected_until: AtomicU64,
    /// Same for a 429 cooldown.
    cooldown_until: AtomicU64,
    credential_broken: AtomicBool,
    in_flight: AtomicU32,
    selections: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    ejections: AtomicU64,
    locked: Mutex<Locked>,
}

impl Member {
    /// A healthy member; `now` is the origin of its internal clock (any
    /// instant not after the ones later reported).
    pub fn new(settings: MemberSettings, now: Instant) -> Self {
        let settings = MemberSettings {
            weight: settings.weight.max(1),
            ..settings
        };
        Self {
            id_hash: stable_hash(settings.id.as_bytes()),
            settings,
            epoch: now,
            ejected_until: AtomicU64::new(0),
            cooldown_until: AtomicU64::new(0),
            credential_broken: AtomicBool::new(false),
            in_flight: AtomicU32::new(0),
            selections: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
            locked: Mutex::new(Locked::default()),
        }
    }

    /// Its settings.
    pub fn settings(&self) -> &MemberSettings {
        &self.settings
    }

    /// Its id.
    pub fn id(&self) -> &str {
        &self.settings.id
    }

    /// Its weight (at least 1).
    pub fn weight(&self) -> u32 {
        self.settings.weight
    }

    /// Requests it is serving now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(super) fn id_hash(&self) -> u64 {
        self.id_hash
    }

    /// Whether it may be chosen for `model` at all (enabled, serves it).
    pub(super) fn serves(&self, model: Option<&str>) -> bool {
        !self.settings.disabled && model.is_none_or(|m| self.settings.models.allows(m))
    }

    /// Whether it is usable at `now` apart from a passive ejection: its
    /// credential works and it is not cooling down after a 429.
    pub(super) fn is_available(&self, now: Instant) -> bool {
        !self.credential_broken.load(Ordering::Relaxed)
            && self.cooldown_until.load(Ordering::Relaxed) <= self.ticks(now)
    }

    /// Whether its credential has not been rejected.
    pub(super) fn credential_ok(&self) -> bool {
        !self.credential_broken.load(Ordering::Relaxed)
    }

    /// Whether passively ejected at `now`.
    pub(super) fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > self.ticks(now)
    }

    /// When a cooldown in force at `now` ends.
    pub(super) fn cooldown_end(&self, now: Instant) -> Option<Duration> {
        let until = self.cooldown_until.load(Ordering::Relaxed);
        let now = self.ticks(now);
        (until > now).then(|| Duration::from_nanos(until - now))
    }

    /// When an ejection in force at `now` ends.
    pub(super) fn ejection_end(&self, now: Instant) -> Option<Duration> {
        let until = self.ejected_until.load(Ordering::Relaxed);
        let now = self.ticks(now);
        (until > now).then(|| Duration::from_nanos(until - now))
    }

    /// Counts a selection and a request in flight (until [`Member::end`]).
    pub(super) fn begin(&self) {
        self.selections.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// Ends a request counted by [`Member::begin`].
    pub(super) fn end(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    fn ticks(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX - 1)
            + 1
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Locked> {
        // A panic while holding the lock leaves counters, never broken
        // invariants: keep going with them.
        self.locked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Mirrors the health into the atomics read by selection.
    fn publish(&self, h: &Health, now: Instant) {
        let tick = |u: Option<Instant>| u.map_or(0, |u| self.ticks(u));
        self.ejected_until
            .store(tick(h.ejected_until(now)), Ordering::Relaxed);
        self.cooldown_until
            .store(tick(h.cooldown_until(now)), Ordering::Relaxed);
        self.credential_broken
            .store(h.credential().is_some(), Ordering::Relaxed);
    }

    /// Records what happened. `may_eject` says whether the pool allows
    /// one more ejection; it is asked only when a failure calls for one.
    pub(super) fn record(
        &self,
        report: Report<'_>,
        now: Instant,
        policy: &HealthPolicy,
        may_eject: impl FnOnce() -> bool,
    ) -> Effect {
        let (outcome, latency) = match report {
            Report::Call(outcome, latency) => {
                self.requests.fetch_add(1, Ordering::Relaxed);
                (outcome, Some(latency))
            }
            Report::StreamEnd(outcome) => (outcome, None),
            Report::Check(Outcome::Success) => {
                let mut locked = self.lock();
                let effect = locked.health.check_passed(now);
                self.publish(&locked.health, now);
                return effect;
            }
            Report::Check(outcome) => (outcome, None),
        };
        let mut locked = self.lock();
        // The latency of answers: a connect error's speed says nothing
        // about how fast the instance serves.
        if let Some(latency) = latency.filter(|_| !outcome.is_error()) {
            locked.latency.record(latency);
        }
        if outcome.is_error() {
            self.errors.fetch_add(1, Ordering::Relaxed);
            locked.last_error = Some(outcome.describe());
        }
        let mut effect = locked.health.record(outcome, now, policy);
        if locked.health.wants_ejection(now, policy) {
            effect = if may_eject() {
                self.ejections.fetch_add(1, Ordering::Relaxed);
                Effect::Ejected(locked.health.eject(now, policy))
            } else {
                Effect::EjectionRefused
            };
        }
        self.publish(&locked.health, now);
        effect
    }

    /// Forgets a broken credential (its file changed).
    pub fn clear_credential(&self, now: Instant) {
        let mut locked = self.lock();
        locked.health.clear_credential();
        self.publish(&locked.health, now);
    }

    /// The instances listing's entry at `now`.
    pub fn status(&self, now: Instant, policy: &HealthPolicy) -> InstanceStatus {
        let locked = self.lock();
        let state = if self.settings.disabled {
            State::Disabled
        } else {
            locked.health.state(now, policy)
        };
        let until =
            |u: Instant| u64::try_from(u.duration_since(now).as_millis()).unwrap_or(u64::MAX);
        let (reason, until_ms) = match &state {
            State::Healthy => (None, None),
            State::Failing => (
                Some("failing, not ejected: half of the pool already is".to_owned()),
                None,
            ),
            State::Ejected(u) => (locked.last_error.clone(), Some(until(*u))),
            State::Cooldown(u) => (Some("rate limited (429)".to_owned()), Some(until(*u))),
            State::CredentialBroken(r) => (Some(r.clone()), None),
            State::Disabled => (Some("isDisabled".to_owned()), None),
        };
        InstanceStatus {
            provider: self.settings.kind.name(),
            id: self.settings.id.clone(),
            name: self.settings.name.clone(),
            weight: self.settings.weight,
            healthy: state == State::Healthy,
            state: state.name(),
            reason,
            until_ms,
            consecutive_failures: locked.health.consecutive_failures(),
            in_flight: self.in_flight(),
            selections: self.selections.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            ejections: self.ejections.load(Ordering::Relaxed),
            last_error: locked.last_error.clone(),
            latency_ms: locked.latency.percentiles(),
        }
    }
}

/// What is being reported about a member.
#[derive(Clone, Copy, Debug)]
pub(super) enum Report<'a> {
    /// A call's outcome and latency (to the answer, or to the first byte
    /// of a stream).
    Call(&'a Outcome, Duration),
    /// How a stream reported as [`Outcome::Streaming`] ended: its effect
    /// on health (an error, a failure, or a success), not another request.
    StreamEnd(&'a Outcome),
    /// An active health check: a pass ends an ejection, a cooldown or a
    /// broken credential early; a failure counts like a failed call.
    Check(&'a Outcome),
}

impl Report<'_> {
    /// Whether it may call for an ejection (so the pool must serialise it
    /// with the others that may).
    pub(super) fn may_eject(&self) -> bool {
        let (Report::Call(o, _) | Report::StreamEnd(o) | Report::Check(o)) = self;
        o.counts_as_failure()
    }
}
