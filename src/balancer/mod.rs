//! The load balancer: which instance of a provider serves a request, the
//! health of every instance, and the retry policy. Pure code: no sockets,
//! the time is passed in (or comes from a [`Clock`]) and the randomness
//! from a [`Random`], so tests replay every decision exactly.
//!
//! The parts and who holds them:
//! - a [`Member`] per provider instance (the instance owns it, so a
//!   reload that keeps the instance keeps its health and counters);
//! - a [`Pool`] per provider: its members, the [`HealthPolicy`] and the
//!   selection state; rebuilt with the registry on a reload;
//! - one [`Balancer`] per gateway: the algorithm in force, the random
//!   source, the [`RetryBudget`] and the gateway-wide counters.
//!
//! A request either calls [`Balancer::run`], which chooses, calls,
//! reports and retries within the policy and the budget, or drives the
//! steps itself with [`Balancer::pick`] and [`Pick::report`].
//!
//! A request through [`Balancer::run`], in outline:
//!
//! ```text
//! let key = RequestKey { model: Some(&model), client: Some(client_addr(peer, &xff, &trusted)) };
//! match balancer.run(&pool, &key, &retry_policy, &SystemClock, deadline, |pick| {
//!     let result = pick.instance().provider.call(&upstream);   // nothing sent to the client
//!     Attempt { outcome: classify(&result), answer: result }   // Streaming for a started stream
//! }) {
//!     Finished::Answered { answer, mut pick, .. } => { relay(answer); pick.end_stream(..) }
//!     Finished::NoInstance(why) => answer(why.status(), why.message(..), why.retry_after_secs()),
//! }
//! ```
//!
//! Eligibility, in order: a member must be enabled and serve the model;
//! then have a working credential and no 429 cooldown (else the request
//! gets [`NoneEligible::Unavailable`] with the soonest recovery); then not
//! be ejected, unless every remaining member is (panic mode: use them
//! all, as Envoy does, rather than fail everything); and, for a retry,
//! not be one already tried, unless every remaining member was.

mod algorithm;
pub mod client_addr;
mod drive;
mod health;
mod member;
mod random;
mod retry;
mod stats;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use algorithm::Algorithm;
pub use drive::{Attempt, Finished};
pub use health::{Effect, HealthPolicy, Outcome};
pub use member::{Member, MemberSettings, ModelFilter};
pub use random::{Clock, Random, SplitMix64, SystemClock};
pub use retry::{RequestGuard, RetryBudget, RetryGuard, RetryPolicy};
pub use stats::{BalancerMetrics, InstanceStatus, Latency};

use algorithm::{Candidate, Cursor};
use member::Report;

/// What the pools hold: anything that has a [`Member`] (the registry's
/// provider instance; a bare `Member` in tests).
pub trait Balanced: Send + Sync + 'static {
    /// Its balancing state.
    fn member(&self) -> &Member;
}

impl Balanced for Member {
    fn member(&self) -> &Member {
        self
    }
}

/// The instances of one provider. Cheap to clone (shared).
pub struct Pool<T> {
    inner: Arc<PoolInner<T>>,
}

struct PoolInner<T> {
    members: Vec<Arc<T>>,
    policy: HealthPolicy,
    cursor: Cursor,
    /// Held while deciding on an ejection, so that concurrent failures
    /// cannot together eject more than the policy allows.
    ejecting: Mutex<()>,
}

impl<T> Clone for Pool<T> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T: Balanced> Pool<T> {
    /// A pool of `members`, in the order `round_robin` and a disabled
    /// balancer ("first healthy") follow.
    pub fn new(members: Vec<Arc<T>>, policy: HealthPolicy) -> Self {
        Self {
            inner: Arc::new(PoolInner {
                cursor: Cursor::new(members.len()),
                members,
                policy,
                ejecting: Mutex::new(()),
            }),
        }
    }

    /// The members, in pool order.
    pub fn members(&self) -> &[Arc<T>] {
        &self.inner.members
    }

    /// The index of the member with `id`.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.members().iter().position(|t| t.member().id() == id)
    }

    /// The health policy.
    pub fn policy(&self) -> &HealthPolicy {
        &self.inner.policy
    }

    /// Records an active health check of member `index`: a pass ends its
    /// ejection, cooldown or broken credential; a failure counts like a
    /// failed request.
    pub fn check(&self, index: usize, outcome: &Outcome, now: Instant) -> Effect {
        self.record(index, Report::Check(outcome), now)
    }

    /// How long until some member that serves requests recovers from an
    /// ejection or a cooldown: the `Retry-After` of a 503 when nothing is
    /// eligible. `None` when nothing will recover by itself.
    pub fn soonest_recovery(&self, model: Option<&str>, now: Instant) -> Option<Duration> {
        self.members()
            .iter()
            .map(|t| t.member())
            .filter(|m| m.serves(model))
            .filter_map(|m| {
                if !m.is_available(now) {
                    // Broken credentials never recover by themselves.
                    m.cooldown_end(now).filter(|_| m.credential_ok())
                } else {
                    m.ejection_end(now)
                }
            })
            .min()
    }

    /// Every member's entry of `GET /loadbalancer/instances`.
    pub fn status(&self, now: Instant) -> Vec<InstanceStatus> {
        self.members()
            .iter()
            .map(|t| t.member().status(now, &self.inner.policy))
            .collect()
    }

    fn record(&self, index: usize, report: Report<'_>, now: Instant) -> Effect {
        let Some(target) = self.inner.members.get(index) else {
            return Effect::None;
        };
        // Only failures take the pool's lock (before the member's): a
        // success never ejects, so the hot path stays per member.
        let _ejecting = report.may_eject().then(|| {
            self.inner
                .ejecting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
        });
        let policy = &self.inner.policy;
        target.member().record(report, now, policy, || {
            let enabled = self.members().iter().filter(|t| t.member().serves(None));
            let (n, ejected) = enabled.fold((0, 0), |(n, e), t| {
                (n + 1, e + usize::from(t.member().is_ejected(now)))
            });
            ejected < policy.max_ejected(n)
        })
    }
}

/// What a request is, as far as choosing an instance goes.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestKey<'a> {
    /// The model asked for, checked against each member's model filter.
    pub model: Option<&'a str>,
    /// The client's address ([`client_addr::client_addr`]), for
    /// `ip_hash`; without one, `ip_hash` takes turns.
    pub client: Option<IpAddr>,
}

/// Why no instance can take a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoneEligible {
    /// The pool has no members.
    Empty,
    /// Every member is disabled.
    Disabled,
    /// No enabled member serves the model (a client error: 404).
    Model,
    /// Every member that serves the model is cooling down after a 429 or
    /// has a broken credential: 503, with `Retry-After` when some member
    /// recovers by itself.
    Unavailable {
        /// Until the soonest recovery.
        retry_after: Option<Duration>,
    },
}

impl NoneEligible {
    /// How long until some instance recovers, if one will by itself.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            NoneEligible::Unavailable { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// The `Retry-After` header's value: whole seconds, rounded up, so
    /// that a client that waits as told finds an instance back.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after()
            .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
    }

    /// The HTTP status to answer.
    pub fn status(&self) -> u16 {
        match self {
            NoneEligible::Model => 404,
            _ => 503,
        }
    }

    /// A message for the client, naming the provider.
    pub fn message(&self, provider: &str, model: Option<&str>) -> String {
        match self {
            NoneEligible::Empty => format!("Provider {provider} has no instances."),
            NoneEligible::Disabled => format!("Every instance of {provider} is disabled."),
            NoneEligible::Model => format!(
                "No instance of {provider} serves model {}.",
                model.unwrap_or("(none)")
            ),
            NoneEligible::Unavailable { .. } => {
                let mut m = format!(
                    "Every instance of {provider} is rate limited or has a rejected credential."
                );
                if let Some(secs) = self.retry_after_secs() {
                    m.push_str(&format!(" Retry in {secs} s."));
                }
                m
            }
        }
    }
}

/// A chosen instance. Counted in flight until dropped; report the call's
/// outcome once with [`Pick::report`]. A stream is reported as
/// [`Outcome::Streaming`] when it starts and ended with
/// [`Pick::end_stream`]; keep the pick until then, so that
/// `least_requests` sees the stream.
pub struct Pick<T: Balanced> {
    pool: Pool<T>,
    index: usize,
    started: Instant,
    panic: bool,
    reported: bool,
    /// Reported as [`Outcome::Streaming`] and not yet ended.
    streaming: bool,
    /// The request's place in the retry budget, when [`Balancer::run`]
    /// chose this: held until the answer (a stream) is done.
    request: Option<RequestGuard>,
}

impl<T: Balanced> Pick<T> {
    /// The instance to call.
    pub fn instance(&self) -> &Arc<T> {
        &self.pool.inner.members[self.index]
    }

    /// Its index in the pool.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Whether it was chosen in panic mode (every healthy member gone).
    pub fn is_panic(&self) -> bool {
        self.panic
    }

    /// Records the call's outcome; the latency runs from the choice to
    /// `now` (the answer, or a stream's first byte). Only the first
    /// report counts.
    pub fn report(&mut self, outcome: &Outcome, now: Instant) -> Effect {
        if std::mem::replace(&mut self.reported, true) {
            return Effect::None;
        }
        self.streaming = *outcome == Outcome::Streaming;
        let latency = now.saturating_duration_since(self.started);
        self.pool
            .record(self.index, Report::Call(outcome, latency), now)
    }

    /// Records how a stream reported as [`Outcome::Streaming`] ended:
    /// [`Outcome::Success`], or the failure that broke it (connection
    /// lost, upstream idle timeout, truncated answer), which counts
    /// towards the instance's ejection. A stream dropped without an end
    /// (the client left) counts as a success.
    pub fn end_stream(&mut self, outcome: &Outcome, now: Instant) -> Effect {
        if !std::mem::replace(&mut self.streaming, false) {
            return Effect::None;
        }
        self.pool
            .record(self.index, Report::StreamEnd(outcome), now)
    }
}

impl<T: Balanced> Drop for Pick<T> {
    fn drop(&mut self) {
        if self.streaming {
            // No clock here: the time only matters to a failure, and a
            // success neither ejects nor starts a cooldown.
            let now = self.started;
            self.pool
                .record(self.index, Report::StreamEnd(&Outcome::Success), now);
        }
        self.instance().member().end();
    }
}

impl<T: Balanced> std::fmt::Debug for Pick<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pick")
            .field("id", &self.instance().member().id())
            .field("panic", &self.panic)
            .finish()
    }
}

/// Told of every [`Effect`] worth a log line (see [`Balancer::observe`]).
pub type Observer = Box<dyn Fn(&Member, &Effect) + Send + Sync>;

/// The gateway's balancer: the algorithm in force, randomness, the retry
/// budget and the counters that are not per instance.
pub struct Balancer {
    algorithm: AtomicU8,
    enabled: AtomicBool,
    random: Box<dyn Random>,
    budget: Arc<RetryBudget>,
    none_eligible: AtomicU64,
    panics: AtomicU64,
    observer: Option<Observer>,
}

impl Balancer {
    /// A balancer using `algorithm`, drawing from `random`, with the
    /// default retry budget (20 % of requests in flight, at least 3, and
    /// 20 % of the requests plus 3 in all: see [`RetryBudget`]).
    pub fn new(algorithm: Algorithm, random: Box<dyn Random>) -> Self {
        Self {
            algorithm: AtomicU8::new(algorithm.index()),
            enabled: AtomicBool::new(true),
            random,
            budget: Arc::new(RetryBudget::default()),
            none_eligible: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            observer: None,
        }
    }

    /// Calls `observer` with every effect of a report that is not
    /// [`Effect::None`] (an ejection, a cooldown, …), so that the caller
    /// can log and count them.
    pub fn with_observer(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Hands `effect`, a report's on `member`, to the observer. [`Balancer::run`]
    /// does this for the reports it makes; a caller reporting itself
    /// ([`Pick::end_stream`], [`Pool::check`]) calls it.
    pub fn observe(&self, member: &Member, effect: &Effect) {
        if let Some(observer) = self.observer.as_ref().filter(|_| *effect != Effect::None) {
            observer(member, effect);
        }
    }

    /// The algorithm in force.
    pub fn algorithm(&self) -> Algorithm {
        Algorithm::from_index(self.algorithm.load(Ordering::Relaxed))
    }

    /// Switches the algorithm (`PUT /loadbalancer/algorithm`).
    pub fn set_algorithm(&self, algorithm: Algorithm) {
        self.algorithm.store(algorithm.index(), Ordering::Relaxed);
    }

    /// `--load-balancer-enabled`: when off, the first eligible member in
    /// pool order serves every request (failover still applies).
    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Relaxed);
    }

    /// Whether balancing is on.
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// The retry budget.
    pub fn budget(&self) -> &Arc<RetryBudget> {
        &self.budget
    }

    /// The random source (for back-off jitter).
    pub fn random(&self) -> &dyn Random {
        &*self.random
    }

    /// Chooses a member of `pool` for a request. `avoid` lists the pool
    /// indices already tried by this request; they are chosen again only
    /// when no other member is eligible.
    pub fn pick<T: Balanced>(
        &self,
        pool: &Pool<T>,
        key: &RequestKey<'_>,
        avoid: &[usize],
        now: Instant,
    ) -> Result<Pick<T>, NoneEligible> {
        let members = pool.members();
        let mut serving = 0usize;
        let mut enabled = 0usize;
        // (index, member, ejected, tried): the available members.
        let mut available: Vec<(Candidate<'_>, bool, bool)> = Vec::with_capacity(members.len());
        for (i, t) in members.iter().enumerate() {
            let m = t.member();
            enabled += usize::from(m.serves(None));
            if !m.serves(key.model) {
                continue;
            }
            serving += 1;
            if m.is_available(now) {
                available.push(((i, m), m.is_ejected(now), avoid.contains(&i)));
            }
        }
        if available.is_empty() {
            self.none_eligible.fetch_add(1, Ordering::Relaxed);
            return Err(if members.is_empty() {
                NoneEligible::Empty
            } else if enabled == 0 {
                NoneEligible::Disabled
            } else if serving == 0 {
                NoneEligible::Model
            } else {
                NoneEligible::Unavailable {
                    retry_after: pool.soonest_recovery(key.model, now),
                }
            });
        }
        let panic = available.iter().all(|&(_, ejected, _)| ejected);
        let fresh = available
            .iter()
            .any(|&(_, ejected, tried)| ejected == panic && !tried);
        let candidates: Vec<Candidate<'_>> = available
            .iter()
            .filter(|&&(_, ejected, tried)| ejected == panic && !(fresh && tried))
            .map(|&(c, _, _)| c)
            .collect();
        let position = if self.is_enabled() {
            algorithm::choose(
                self.algorithm(),
                &candidates,
                &pool.inner.cursor,
                key.client,
                &*self.random,
            )
        } else {
            0
        };
        if panic {
            self.panics.fetch_add(1, Ordering::Relaxed);
        }
        let index = candidates[position].0;
        members[index].member().begin();
        Ok(Pick {
            pool: pool.clone(),
            index,
            started: now,
            panic,
            reported: false,
            streaming: false,
            request: None,
        })
    }

    /// `GET /loadbalancer/metrics` over `pools`.
    pub fn metrics<'a, T: Balanced>(
        &self,
        pools: impl IntoIterator<Item = &'a Pool<T>>,
        now: Instant,
    ) -> BalancerMetrics {
        let mut out = BalancerMetrics {
            algorithm: self.algorithm().name(),
            selections: Default::default(),
            latency_ms: Default::default(),
            retries: self.budget.granted(),
            budget_refusals: self.budget.refused(),
            ejections: 0,
            none_eligible: self.none_eligible.load(Ordering::Relaxed),
            panics: self.panics.load(Ordering::Relaxed),
        };
        for pool in pools {
            for s in pool.status(now) {
                out.ejections += s.ejections;
                if let Some(l) = s.latency_ms {
                    out.latency_ms.insert(s.id.clone(), l);
                }
                out.selections.insert(s.id, s.selections);
            }
        }
        out
    }
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("algorithm", &self.algorithm())
            .field("enabled", &self.is_enabled())
            .finish()
    }
}

#[cfg(test)]
mod tests;
