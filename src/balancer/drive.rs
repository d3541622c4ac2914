//! The retry loop: choose, call, report, and retry on another instance
//! within the policy, the budget and the request's deadline. The caller
//! supplies the call; the loop owns every decision, so the gateway's
//! transports (HTTP, WebSocket, a library caller) all retry alike.

use std::time::Instant;

use super::health::Outcome;
use super::random::Clock;
use super::retry::RetryPolicy;
use super::{Balanced, Balancer, NoneEligible, Pick, Pool, RequestKey};

/// One attempt's result: its classification, and whatever the caller
/// wants back (the upstream answer, or an error to relay).
#[derive(Debug)]
pub struct Attempt<R> {
    /// How the attempt went.
    pub outcome: Outcome,
    /// The caller's value for this attempt.
    pub answer: R,
}

/// How a request ended.
#[derive(Debug)]
pub enum Finished<T: Balanced, R> {
    /// The last attempt's answer: a success, a failure that is not worth
    /// retrying, or the last failure when retries ran out (the budget, the
    /// policy or the deadline). Keep `pick` until a stream ends.
    Answered {
        /// The last attempt's value.
        answer: R,
        /// Its outcome.
        outcome: Outcome,
        /// The instance that gave it.
        pick: Pick<T>,
        /// Attempts made, at least 1.
        attempts: u32,
    },
    /// No instance could take the request at all.
    NoInstance(NoneEligible),
}

impl Balancer {
    /// Runs a request on `pool`: chooses an instance, calls `call` with
    /// it, reports the outcome, and while the outcome is retryable and
    /// [`RetryPolicy::max_retries`] and the retry budget allow, waits the
    /// jittered back-off and tries another instance (the same one only
    /// when no other is eligible).
    ///
    /// When nothing is eligible for a retry because every instance is
    /// cooling down, the loop waits for the soonest recovery if that is
    /// within [`RetryPolicy::max_delay`]; otherwise it returns the last
    /// answer. Nothing is waited for past `deadline`.
    ///
    /// `call` must not have sent anything to the client: a stream is
    /// retryable only until its first byte reaches the client, so return
    /// from `call` before that.
    pub fn run<T: Balanced, R>(
        &self,
        pool: &Pool<T>,
        key: &RequestKey<'_>,
        policy: &RetryPolicy,
        clock: &dyn Clock,
        deadline: Option<Instant>,
        mut call: impl FnMut(&Pick<T>) -> Attempt<R>,
    ) -> Finished<T, R> {
        let mut request = Some(self.budget().request());
        let mut tried: Vec<usize> = Vec::new();
        let mut last: Option<(R, Outcome, Pick<T>)> = None;
        let mut retry = None;
        let mut waited = false;
        loop {
            let now = clock.now();
            let mut pick = match self.pick(pool, key, &tried, now) {
                Ok(pick) => pick,
                Err(why) => {
                    let wait = why
                        .retry_after()
                        .filter(|w| *w <= policy.max_delay)
                        .filter(|w| deadline.is_none_or(|d| now + *w < d));
                    match (wait, &last) {
                        // Only a retry waits (its budget is already
                        // granted), and only once: a first attempt with
                        // nothing eligible answers at once, with the
                        // Retry-After.
                        (Some(wait), Some(_)) if !waited => {
                            waited = true;
                            clock.sleep(wait);
                            continue;
                        }
                        _ => {}
                    }
                    return match last {
                        Some((answer, outcome, mut pick)) => {
                            pick.request = request.take();
                            Finished::Answered {
                                answer,
                                outcome,
                                pick,
                                attempts: tried.len() as u32,
                            }
                        }
                        None => Finished::NoInstance(why),
                    };
                }
            };
            // The previous failed attempt's pick stays counted in flight
            // until here, which steers least_requests off it meanwhile.
            drop(last.take());
            waited = false;
            let attempt = call(&pick);
            let effect = pick.report(&attempt.outcome, clock.now());
            self.observe(pick.instance().member(), &effect);
            // The retry this attempt was is over.
            drop(retry.take());
            tried.push(pick.index());
            let attempts = tried.len() as u32;
            let delay = policy.backoff(attempts - 1, self.random());
            let granted = (attempt.outcome.is_retryable()
                && attempts <= policy.max_retries
                && deadline.is_none_or(|d| clock.now() + delay < d))
            .then(|| self.budget().try_retry())
            .flatten();
            let Some(granted) = granted else {
                pick.request = request.take();
                return Finished::Answered {
                    answer: attempt.answer,
                    outcome: attempt.outcome,
                    pick,
                    attempts,
                };
            };
            retry = Some(granted);
            last = Some((attempt.answer, attempt.outcome, pick));
            clock.sleep(delay);
        }
    }
}
