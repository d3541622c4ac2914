//! Pools, picks and the retry loop, with a fake clock and seeded
//! randomness: every decision is replayed exactly.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::provider_kind::ProviderKind;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn settings(id: &str, weight: u32) -> MemberSettings {
    MemberSettings {
        kind: ProviderKind::OpenAiCustom,
        id: id.to_owned(),
        name: format!("name of {id}"),
        weight,
        disabled: false,
        models: ModelFilter::default(),
    }
}

fn pool_of(members: Vec<MemberSettings>, t0: Instant) -> Pool<Member> {
    let members = members
        .into_iter()
        .map(|s| Arc::new(Member::new(s, t0)))
        .collect();
    Pool::new(members, HealthPolicy::default())
}

fn pool(ids: &[&str], t0: Instant) -> Pool<Member> {
    pool_of(ids.iter().map(|id| settings(id, 1)).collect(), t0)
}

fn balancer(algorithm: Algorithm) -> Balancer {
    Balancer::new(algorithm, Box::new(SplitMix64::seeded(1)))
}

const ANY: RequestKey<'static> = RequestKey {
    model: None,
    client: None,
};

fn pick_id(b: &Balancer, p: &Pool<Member>, now: Instant) -> String {
    b.pick(p, &ANY, &[], now)
        .unwrap()
        .instance()
        .id()
        .to_owned()
}

/// Reports `n` calls to member `id` that came to `outcome`.
fn hit(p: &Pool<Member>, id: &str, outcome: &Outcome, n: usize, now: Instant) {
    let index = p.position(id).unwrap();
    for _ in 0..n {
        p.record(index, member::Report::Call(outcome, Duration::ZERO), now);
    }
}

fn state(p: &Pool<Member>, id: &str, now: Instant) -> InstanceStatus {
    p.status(now).into_iter().find(|s| s.id == id).unwrap()
}

#[test]
fn round_robin_over_a_pool_skips_disabled_members() {
    let t0 = Instant::now();
    let mut off = settings("b", 1);
    off.disabled = true;
    let p = pool_of(vec![settings("a", 1), off, settings("c", 1)], t0);
    let b = balancer(Algorithm::RoundRobin);
    let seq: Vec<String> = (0..4).map(|_| pick_id(&b, &p, t0)).collect();
    assert_eq!(seq, ["a", "c", "a", "c"]);
    assert_eq!(state(&p, "b", t0).state, "disabled");
    assert!(!state(&p, "b", t0).healthy);
}

#[test]
fn model_filters_choose_who_serves_a_model() {
    let t0 = Instant::now();
    let mut only_flash = settings("flash", 1);
    only_flash.models.supported = vec!["gemini-2.5-flash".into()];
    let mut no_pro = settings("no-pro", 1);
    no_pro.models.not_supported = vec!["gemini-2.5-pro".into()];
    let p = pool_of(vec![only_flash, no_pro], t0);
    let b = balancer(Algorithm::RoundRobin);
    let ids = |model: &str| -> Vec<String> {
        let key = RequestKey {
            model: Some(model),
            client: None,
        };
        (0..4)
            .map(|_| {
                b.pick(&p, &key, &[], t0)
                    .map(|k| k.instance().id().to_owned())
            })
            .collect::<Result<_, _>>()
            .unwrap_or_default()
    };
    assert_eq!(ids("gemini-2.5-pro"), Vec::<String>::new());
    let key = RequestKey {
        model: Some("gemini-2.5-pro"),
        client: None,
    };
    assert_eq!(b.pick(&p, &key, &[], t0).unwrap_err(), NoneEligible::Model);
    assert_eq!(NoneEligible::Model.status(), 404);
    assert!(ids("other").iter().all(|id| id == "no-pro"));
    let both = ids("gemini-2.5-flash");
    assert!(both.contains(&"flash".to_owned()) && both.contains(&"no-pro".to_owned()));
    // The whitelist wins over the blacklist, as in the original.
    let f = ModelFilter {
        supported: vec!["m".into()],
        not_supported: vec!["m".into()],
    };
    assert!(f.allows("m") && !f.allows("n"));
}

#[test]
fn empty_and_all_disabled_pools_say_so() {
    let t0 = Instant::now();
    let b = balancer(Algorithm::RoundRobin);
    let empty = pool(&[], t0);
    assert_eq!(
        b.pick(&empty, &ANY, &[], t0).unwrap_err(),
        NoneEligible::Empty
    );
    let mut off = settings("a", 1);
    off.disabled = true;
    let p = pool_of(vec![off], t0);
    let err = b.pick(&p, &ANY, &[], t0).unwrap_err();
    assert_eq!(err, NoneEligible::Disabled);
    assert_eq!(err.status(), 503);
    assert!(err.message("openai-custom", None).contains("disabled"));
}

#[test]
fn three_failures_eject_for_thirty_seconds_then_the_member_returns() {
    let t0 = Instant::now();
    let p = pool(&["a", "b", "c"], t0);
    let b = balancer(Algorithm::RoundRobin);
    hit(&p, "a", &Outcome::ServerError(502), 2, t0);
    assert_eq!(state(&p, "a", t0).state, "healthy");
    hit(&p, "a", &Outcome::Connect, 1, t0);
    let s = state(&p, "a", t0);
    assert_eq!(
        (s.state, s.until_ms, s.ejections),
        ("ejected", Some(30_000), 1)
    );
    assert_eq!(s.last_error.as_deref(), Some("connect error"));
    assert_eq!(s.reason.as_deref(), Some("connect error"));
    assert!(!s.healthy);
    for _ in 0..10 {
        assert_ne!(pick_id(&b, &p, t0 + secs(29)), "a");
    }
    let back = t0 + secs(30);
    assert_eq!(state(&p, "a", back).state, "healthy");
    let seen: Vec<String> = (0..3).map(|_| pick_id(&b, &p, back)).collect();
    assert!(seen.contains(&"a".to_owned()), "{seen:?}");
    // Failing again soon after: twice as long.
    hit(&p, "a", &Outcome::Timeout, 3, back);
    assert_eq!(state(&p, "a", back).until_ms, Some(60_000));
}

#[test]
fn never_more_than_half_of_a_pool_is_ejected() {
    let t0 = Instant::now();
    let b = balancer(Algorithm::RoundRobin);
    let p = pool(&["a", "b", "c", "d"], t0);
    for id in ["a", "b", "c", "d"] {
        hit(&p, id, &Outcome::ServerError(500), 3, t0);
    }
    let states: Vec<&str> = p.status(t0).iter().map(|s| s.state).collect();
    assert_eq!(states, ["ejected", "ejected", "failing", "failing"]);
    assert!(
        state(&p, "c", t0)
            .reason
            .unwrap()
            .contains("half of the pool")
    );
    // The failing ones still serve.
    let seen: Vec<String> = (0..4).map(|_| pick_id(&b, &p, t0)).collect();
    assert_eq!(seen, ["c", "d", "c", "d"]);
    // Once a and b are back, the next failure of c ejects it.
    let later = t0 + secs(30);
    hit(&p, "c", &Outcome::ServerError(500), 1, later);
    assert_eq!(state(&p, "c", later).state, "ejected");

    // A pool of one is never ejected; of two, one at most.
    let one = pool(&["solo"], t0);
    hit(&one, "solo", &Outcome::ServerError(500), 10, t0);
    assert_eq!(state(&one, "solo", t0).state, "failing");
    assert_eq!(pick_id(&b, &one, t0), "solo");
    let two = pool(&["a", "b"], t0);
    hit(&two, "a", &Outcome::ServerError(500), 3, t0);
    hit(&two, "b", &Outcome::ServerError(500), 3, t0);
    let states: Vec<&str> = two.status(t0).iter().map(|s| s.state).collect();
    assert_eq!(states, ["ejected", "failing"]);
    // Disabled members do not count towards the pool's size.
    let mut off = settings("off", 1);
    off.disabled = true;
    let p = pool_of(vec![settings("a", 1), settings("b", 1), off], t0);
    hit(&p, "a", &Outcome::ServerError(500), 3, t0);
    hit(&p, "b", &Outcome::ServerError(500), 3, t0);
    assert_eq!(state(&p, "b", t0).state, "failing");
}

#[test]
fn panic_mode_uses_ejected_members_rather_than_fail() {
    let t0 = Instant::now();
    let b = balancer(Algorithm::RoundRobin);
    let p = pool(&["a", "b"], t0);
    hit(&p, "a", &Outcome::ServerError(500), 3, t0);
    hit(
        &p,
        "b",
        &Outcome::RateLimited {
            retry_after: Some(secs(5)),
        },
        1,
        t0,
    );
    let pick = b.pick(&p, &ANY, &[], t0).unwrap();
    assert_eq!(pick.instance().id(), "a");
    assert!(pick.is_panic());
    drop(pick);
    assert_eq!(b.metrics([&p], t0).panics, 1);
    let pick = b.pick(&p, &ANY, &[], t0 + secs(5)).unwrap();
    assert_eq!(pick.instance().id(), "b");
    assert!(!pick.is_panic());
}

#[test]
fn rate_limited_members_cool_down_for_their_retry_after() {
    let t0 = Instant::now();
    let b = balancer(Algorithm::RoundRobin);
    let p = pool(&["a", "b"], t0);
    hit(
        &p,
        "a",
        &Outcome::RateLimited {
            retry_after: Some(secs(20)),
        },
        1,
        t0,
    );
    let s = state(&p, "a", t0);
    assert_eq!(
        (s.state, s.until_ms, s.consecutive_failures),
        ("cooldown", Some(20_000), 0)
    );
    for _ in 0..5 {
        assert_eq!(pick_id(&b, &p, t0 + secs(19)), "b");
    }
    hit(
        &p,
        "b",
        &Outcome::RateLimited {
            retry_after: Some(secs(90)),
        },
        1,
        t0,
    );
    // Nothing eligible: the soonest recovery is a's, 20 s after t0.
    let now = t0 + secs(5);
    let err = b.pick(&p, &ANY, &[], now).unwrap_err();
    assert_eq!(
        err,
        NoneEligible::Unavailable {
            retry_after: Some(secs(15))
        }
    );
    assert_eq!(err.retry_after(), Some(secs(15)));
    assert_eq!(err.retry_after_secs(), Some(15));
    let odd = NoneEligible::Unavailable {
        retry_after: Some(Duration::from_millis(14_001)),
    };
    assert_eq!(odd.retry_after_secs(), Some(15), "rounded up");
    assert_eq!(NoneEligible::Model.retry_after_secs(), None);
    assert!(err.message("gemini-cli", None).contains("Retry in 15 s"));
    assert_eq!(b.metrics([&p], now).none_eligible, 1);
    assert_eq!(pick_id(&b, &p, t0 + secs(20)), "a");
}

#[test]
fn broken_credentials_wait_for_a_fix_and_give_no_retry_after() {
    let t0 = Instant::now();
    let b = balancer(Algorithm::RoundRobin);
    let p = pool(&["a", "b"], t0);
    let rejected = Outcome::CredentialRejected {
        reason: "refresh token revoked".into(),
    };
    hit(&p, "a", &rejected, 1, t0);
    let s = state(&p, "a", t0);
    assert_eq!(s.state, "credential_broken");
    assert_eq!(s.reason.as_deref(), Some("refresh token revoked"));
    let much_later = t0 + secs(86_400);
    assert_eq!(pick_id(&b, &p, much_later), "b");
    hit(&p, "b", &rejected, 1, t0);
    // b also cools down; a broken credential has no recovery time.
    hit(
        &p,
        "b",
        &Outcome::RateLimited {
            retry_after: Some(secs(9)),
        },
        1,
        t0,
    );
    assert_eq!(
        b.pick(&p, &ANY, &[], t0).unwrap_err(),
        NoneEligible::Unavailable { retry_after: None }
    );
    p.members()[0].clear_credential(t0);
    assert_eq!(pick_id(&b, &p, t0), "a");
    assert_eq!(p.check(1, &Outcome::Success, t0), Effect::Restored);
    assert_eq!(state(&p, "b", t0).state, "healthy");
}

#[test]
fn a_passing_active_check_ends_an_ejection_early_and_a_failing_one_counts() {
    let t0 = Instant::now();
    let p = pool(&["a", "b", "c"], t0);
    hit(&p, "a", &Outcome::ServerError(500), 3, t0);
    assert_eq!(state(&p, "a", t0).state, "ejected");
    assert_eq!(
        p.check(0, &Outcome::Success, t0 + secs(1)),
        Effect::Restored
    );
    assert_eq!(state(&p, "a", t0 + secs(1)).state, "healthy");
    for _ in 0..2 {
        p.check(1, &Outcome::Timeout, t0);
    }
    assert!(matches!(
        p.check(1, &Outcome::Timeout, t0),
        Effect::Ejected(_)
    ));
    let s = state(&p, "b", t0);
    assert_eq!((s.requests, s.errors), (0, 3), "checks are not requests");
    assert_eq!(p.check(99, &Outcome::Success, t0), Effect::None);
}

#[test]
fn retries_avoid_members_already_tried_while_others_remain() {
    let t0 = Instant::now();
    let b = balancer(Algorithm::RoundRobin);
    let p = pool(&["a", "b", "c"], t0);
    for _ in 0..6 {
        let pick = b.pick(&p, &ANY, &[0, 2], t0).unwrap();
        assert_eq!(pick.instance().id(), "b");
    }
    // Everything tried: any of them again.
    assert!(b.pick(&p, &ANY, &[0, 1, 2], t0).is_ok());
}

#[test]
fn picks_count_in_flight_until_dropped_and_report_once() {
    let t0 = Instant::now();
    let b = balancer(Algorithm::LeastRequests);
    let p = pool(&["a", "b"], t0);
    let first = b.pick(&p, &ANY, &[], t0).unwrap();
    let busy = first.index();
    // The other member is chosen while the first is busy.
    let second = b.pick(&p, &ANY, &[], t0).unwrap();
    assert_ne!(second.index(), busy);
    let s: Vec<u32> = p.status(t0).iter().map(|s| s.in_flight).collect();
    assert_eq!(s, [1, 1]);
    let mut first = first;
    first.report(&Outcome::Success, t0 + Duration::from_millis(40));
    first.report(&Outcome::ServerError(500), t0);
    drop((first, second));
    let all = p.status(t0);
    assert!(all.iter().all(|s| s.in_flight == 0));
    let reported = &all[busy];
    assert_eq!(
        (reported.requests, reported.errors, reported.selections),
        (1, 0, 1)
    );
    assert_eq!(
        reported.latency_ms,
        Some(Latency {
            p50: 40.0,
            p95: 40.0
        })
    );
}

#[test]
fn a_broken_stream_counts_as_an_error_not_another_request() {
    let t0 = Instant::now();
    let b = balancer(Algorithm::RoundRobin);
    let p = pool(&["a", "b", "c"], t0);
    for _ in 0..3 {
        let mut pick = b.pick(&p, &ANY, &[1, 2], t0).unwrap();
        pick.report(&Outcome::Streaming, t0 + Duration::from_millis(5));
        assert_eq!(state(&p, "a", t0).in_flight, 1, "a stream is in flight");
        pick.end_stream(&Outcome::Protocol, t0);
        pick.end_stream(&Outcome::Protocol, t0);
    }
    let s = state(&p, "a", t0);
    assert_eq!((s.requests, s.errors, s.state), (3, 3, "ejected"));
    assert_eq!(s.latency_ms, Some(Latency { p50: 5.0, p95: 5.0 }));
}

#[test]
fn streams_that_end_well_or_are_abandoned_count_as_successes() {
    let t0 = Instant::now();
    let b = balancer(Algorithm::RoundRobin);
    let p = pool(&["a", "b", "c"], t0);
    hit(&p, "a", &Outcome::ServerError(500), 2, t0);
    let mut pick = b.pick(&p, &ANY, &[1, 2], t0).unwrap();
    pick.report(&Outcome::Streaming, t0);
    // Not yet ended: the failures still count.
    assert_eq!(state(&p, "a", t0).consecutive_failures, 2);
    drop(pick);
    assert_eq!(state(&p, "a", t0).consecutive_failures, 0);
    hit(&p, "a", &Outcome::ServerError(500), 2, t0);
    let mut pick = b.pick(&p, &ANY, &[1, 2], t0).unwrap();
    pick.report(&Outcome::Streaming, t0);
    pick.end_stream(&Outcome::Success, t0);
    let s = state(&p, "a", t0);
    assert_eq!((s.consecutive_failures, s.errors, s.requests), (0, 4, 6));
    // end_stream without a stream does nothing.
    let mut pick = b.pick(&p, &ANY, &[1, 2], t0).unwrap();
    pick.report(&Outcome::Success, t0);
    assert_eq!(pick.end_stream(&Outcome::Protocol, t0), Effect::None);
}

#[test]
fn a_disabled_balancer_uses_the_first_eligible_member() {
    let t0 = Instant::now();
    let b = balancer(Algorithm::Random);
    b.set_enabled(false);
    assert!(!b.is_enabled());
    let p = pool(&["a", "b", "c"], t0);
    for _ in 0..5 {
        assert_eq!(pick_id(&b, &p, t0), "a");
    }
    hit(&p, "a", &Outcome::ServerError(500), 3, t0);
    assert_eq!(pick_id(&b, &p, t0), "b");
    // Failover still tries another member.
    assert_eq!(b.pick(&p, &ANY, &[1], t0).unwrap().instance().id(), "c");
}

#[test]
fn the_algorithm_switches_at_run_time() {
    let t0 = Instant::now();
    let b = balancer(Algorithm::RoundRobin);
    let p = pool_of(
        vec![settings("a", 5), settings("b", 1), settings("c", 1)],
        t0,
    );
    b.set_algorithm(Algorithm::Weighted);
    assert_eq!(b.algorithm(), Algorithm::Weighted);
    let seq: String = (0..7).map(|_| pick_id(&b, &p, t0)).collect();
    assert_eq!(seq, "aabacaa");
    b.set_algorithm(Algorithm::IpHash);
    let key = RequestKey {
        model: None,
        client: Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7))),
    };
    let first = b.pick(&p, &key, &[], t0).unwrap().index();
    for _ in 0..10 {
        assert_eq!(b.pick(&p, &key, &[], t0).unwrap().index(), first);
    }
}

#[test]
fn status_and_metrics_serialise_as_the_admin_api_shows_them() {
    let t0 = Instant::now();
    let b = balancer(Algorithm::RoundRobin);
    let p = pool(&["a", "b"], t0);
    let mut pick = b.pick(&p, &ANY, &[], t0).unwrap();
    pick.report(&Outcome::Success, t0 + Duration::from_millis(12));
    drop(pick);
    hit(
        &p,
        "b",
        &Outcome::RateLimited {
            retry_after: Some(secs(3)),
        },
        1,
        t0,
    );
    let json = serde_json::to_value(p.status(t0)).unwrap();
    assert_eq!(json[0]["provider"], "openai-custom");
    assert_eq!(json[0]["name"], "name of a");
    assert_eq!(json[0]["healthy"], true);
    assert_eq!(json[0]["latency_ms"]["p50"], 12.0);
    assert!(json[0].get("reason").is_none());
    assert_eq!(json[1]["state"], "cooldown");
    assert_eq!(json[1]["until_ms"], 3000);
    assert_eq!(json[1]["last_error"], "rate limited (429)");
    let m = serde_json::to_value(b.metrics([&p], t0)).unwrap();
    assert_eq!(m["algorithm"], "round_robin");
    assert_eq!(m["selections"]["a"], 1);
    assert_eq!(m["latency_ms"]["a"]["p95"], 12.0);
    assert!(
        m["latency_ms"].get("b").is_none(),
        "a 429 is not an answer's latency"
    );
    for key in [
        "retries",
        "budget_refusals",
        "ejections",
        "none_eligible",
        "panics",
    ] {
        assert_eq!(m[key], 0, "{key}");
    }
}

#[test]
fn concurrent_picks_and_failures_keep_the_invariants() {
    let t0 = Instant::now();
    let b = Balancer::new(Algorithm::LeastRequests, Box::new(SplitMix64::seeded(3)));
    let ids: Vec<String> = (0..6).map(|i| format!("m{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let p = pool(&refs, t0);
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let (b, p) = (&b, &p);
            s.spawn(move || {
                for i in 0..500u64 {
                    let now = t0 + Duration::from_millis(i * 10);
                    let Ok(mut pick) = b.pick(p, &ANY, &[], now) else {
                        continue;
                    };
                    let bad = pick.index() < 4;
                    let outcome = if bad && (i + t) % 3 != 0 {
                        Outcome::ServerError(503)
                    } else {
                        Outcome::Success
                    };
                    pick.report(&outcome, now);
                    let ejected = p.members().iter().filter(|m| m.is_ejected(now)).count();
                    assert!(ejected <= 3, "{ejected} of 6 ejected");
                }
            });
        }
    });
    let status = p.status(t0);
    assert!(status.iter().all(|s| s.in_flight == 0));
    let total: u64 = status.iter().map(|s| s.selections).sum();
    assert_eq!(total, 8 * 500);
}

// ---------------------------------------------------------------- run()

/// A clock that jumps forward instead of sleeping, and remembers the
/// waits.
struct FakeClock {
    now: Cell<Instant>,
    slept: RefCell<Vec<Duration>>,
}

impl FakeClock {
    fn new(t0: Instant) -> Self {
        Self {
            now: Cell::new(t0),
            slept: RefCell::new(Vec::new()),
        }
    }
    fn total_slept(&self) -> Duration {
        self.slept.borrow().iter().sum()
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        self.now.get()
    }
    fn sleep(&self, d: Duration) {
        self.slept.borrow_mut().push(d);
        self.now.set(self.now.get() + d);
    }
}

/// Runs a request whose attempts answer `script` in order (by member id:
/// each entry is the outcome for whichever member is called); returns
/// the ids called and the result.
fn script_run(
    b: &Balancer,
    p: &Pool<Member>,
    policy: &RetryPolicy,
    clock: &FakeClock,
    deadline: Option<Instant>,
    script: &[Outcome],
) -> (Vec<String>, Finished<Member, usize>) {
    let script = RefCell::new(script.iter().cloned().collect::<VecDeque<_>>());
    let called = RefCell::new(Vec::new());
    let finished = b.run(p, &ANY, policy, clock, deadline, |pick| {
        called.borrow_mut().push(pick.instance().id().to_owned());
        Attempt {
            outcome: script.borrow_mut().pop_front().unwrap_or(Outcome::Success),
            answer: called.borrow().len(),
        }
    });
    (called.into_inner(), finished)
}

fn answered(f: &Finished<Member, usize>) -> (usize, Outcome, u32) {
    match f {
        Finished::Answered {
            answer,
            outcome,
            attempts,
            ..
        } => (*answer, outcome.clone(), *attempts),
        Finished::NoInstance(why) => panic!("no instance: {why:?}"),
    }
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_retries: 2,
        base_delay: Duration::from_millis(100),
        max_delay: secs(5),
    }
}

#[test]
fn run_answers_at_once_when_the_first_attempt_succeeds() {
    let t0 = Instant::now();
    let (b, p, clock) = (
        balancer(Algorithm::RoundRobin),
        pool(&["a", "b"], t0),
        FakeClock::new(t0),
    );
    let (called, f) = script_run(&b, &p, &policy(), &clock, None, &[Outcome::Success]);
    assert_eq!(called, ["a"]);
    assert_eq!(answered(&f), (1, Outcome::Success, 1));
    assert!(clock.slept.borrow().is_empty());
    // The request stays counted in the budget while its pick is kept (a
    // stream being relayed).
    assert_eq!(b.budget().requests_in_flight(), 1);
    drop(f);
    assert_eq!(b.budget().requests_in_flight(), 0);
}

#[test]
fn run_fails_over_to_another_instance_after_a_jittered_back_off() {
    let t0 = Instant::now();
    let (b, p, clock) = (
        balancer(Algorithm::RoundRobin),
        pool(&["a", "b", "c"], t0),
        FakeClock::new(t0),
    );
    let script = [
        Outcome::ServerError(503),
        Outcome::Connect,
        Outcome::Success,
    ];
    let (called, f) = script_run(&b, &p, &policy(), &clock, None, &script);
    let mut distinct = called.clone();
    distinct.sort();
    assert_eq!(distinct, ["a", "b", "c"], "each retry on another instance");
    assert_eq!(answered(&f), (3, Outcome::Success, 3));
    let slept = clock.slept.borrow().clone();
    assert_eq!(slept.len(), 2);
    assert!(slept[0] <= Duration::from_millis(100), "{slept:?}");
    assert!(slept[1] <= Duration::from_millis(200), "{slept:?}");
    assert_eq!(b.budget().granted(), 2);
    assert_eq!(b.budget().retries_in_flight(), 0);
    let m = b.metrics([&p], clock.now());
    assert_eq!(m.retries, 2);
    let errors: Vec<u64> = p.status(t0).iter().map(|s| s.errors).collect();
    assert_eq!(errors.iter().sum::<u64>(), 2);
}

#[test]
fn run_never_retries_the_clients_own_errors_nor_broken_answers() {
    let t0 = Instant::now();
    for outcome in [
        Outcome::ClientError(400),
        Outcome::ClientError(404),
        Outcome::ClientError(413),
        Outcome::ClientError(422),
        Outcome::Protocol,
    ] {
        let (b, p, clock) = (
            balancer(Algorithm::RoundRobin),
            pool(&["a", "b"], t0),
            FakeClock::new(t0),
        );
        let (called, f) = script_run(
            &b,
            &p,
            &policy(),
            &clock,
            None,
            std::slice::from_ref(&outcome),
        );
        assert_eq!(called, ["a"], "{outcome:?}");
        assert_eq!(answered(&f), (1, outcome, 1));
        assert!(clock.slept.borrow().is_empty());
    }
}

#[test]
fn run_stops_after_max_retries_with_the_last_answer() {
    let t0 = Instant::now();
    let (b, p, clock) = (
        balancer(Algorithm::RoundRobin),
        pool(&["a", "b", "c", "d"], t0),
        FakeClock::new(t0),
    );
    let script = vec![Outcome::ServerError(500); 10];
    let (called, f) = script_run(&b, &p, &policy(), &clock, None, &script);
    assert_eq!(called.len(), 3, "one attempt and two retries");
    assert_eq!(answered(&f), (3, Outcome::ServerError(500), 3));
    let zero = RetryPolicy {
        max_retries: 0,
        ..policy()
    };
    let (called, _) = script_run(&b, &p, &zero, &clock, None, &script);
    assert_eq!(called.len(), 1);
}

#[test]
fn a_single_instance_is_retried_after_a_short_retry_after() {
    let t0 = Instant::now();
    let (b, p, clock) = (
        balancer(Algorithm::RoundRobin),
        pool(&["solo"], t0),
        FakeClock::new(t0),
    );
    let limited = Outcome::RateLimited {
        retry_after: Some(secs(2)),
    };
    let (called, f) = script_run(
        &b,
        &p,
        &policy(),
        &clock,
        None,
        &[limited, Outcome::Success],
    );
    assert_eq!(called, ["solo", "solo"]);
    assert_eq!(answered(&f).1, Outcome::Success);
    // The back-off, then the rest of the cooldown: 2 s in all.
    assert_eq!(clock.total_slept(), secs(2));
    assert_eq!(clock.slept.borrow().len(), 2);
}

#[test]
fn a_retry_after_over_the_cap_fails_over_instead_of_waiting() {
    let t0 = Instant::now();
    let limited = Outcome::RateLimited {
        retry_after: Some(secs(3600)),
    };
    // Another instance: used after the back-off only.
    let (b, p, clock) = (
        balancer(Algorithm::RoundRobin),
        pool(&["a", "b"], t0),
        FakeClock::new(t0),
    );
    let (called, f) = script_run(
        &b,
        &p,
        &policy(),
        &clock,
        None,
        std::slice::from_ref(&limited),
    );
    assert_eq!(called, ["a", "b"]);
    assert_eq!(answered(&f).1, Outcome::Success);
    assert!(clock.total_slept() <= Duration::from_millis(100));
    // None: the 429 is the answer, at once.
    let (b, p, clock) = (
        balancer(Algorithm::RoundRobin),
        pool(&["solo"], t0),
        FakeClock::new(t0),
    );
    let (called, f) = script_run(
        &b,
        &p,
        &policy(),
        &clock,
        None,
        std::slice::from_ref(&limited),
    );
    assert_eq!(called, ["solo"]);
    assert_eq!(answered(&f), (1, limited, 1));
    // The next request finds nothing eligible and says when to come back.
    let (called, f) = script_run(&b, &p, &policy(), &clock, None, &[]);
    assert!(called.is_empty());
    let Finished::NoInstance(why) = f else {
        panic!("expected no instance")
    };
    let wait = why.retry_after().unwrap();
    assert!(wait <= secs(3600) && wait > secs(3599), "{wait:?}");
}

#[test]
fn a_first_attempt_with_everything_cooling_down_answers_at_once() {
    let t0 = Instant::now();
    let (b, p, clock) = (
        balancer(Algorithm::RoundRobin),
        pool(&["a", "b"], t0),
        FakeClock::new(t0),
    );
    for id in ["a", "b"] {
        hit(
            &p,
            id,
            &Outcome::RateLimited {
                retry_after: Some(secs(1)),
            },
            1,
            t0,
        );
    }
    let (called, f) = script_run(&b, &p, &policy(), &clock, None, &[]);
    assert!(called.is_empty());
    assert!(matches!(
        f,
        Finished::NoInstance(NoneEligible::Unavailable { retry_after: Some(d) }) if d == secs(1)
    ));
    assert!(clock.slept.borrow().is_empty());
}

#[test]
fn an_exhausted_budget_ends_retries() {
    let t0 = Instant::now();
    let (b, p, clock) = (
        balancer(Algorithm::RoundRobin),
        pool(&["a", "b"], t0),
        FakeClock::new(t0),
    );
    let held: Vec<_> = (0..3).filter_map(|_| b.budget().try_retry()).collect();
    assert_eq!(held.len(), 3);
    let (called, f) = script_run(
        &b,
        &p,
        &policy(),
        &clock,
        None,
        &[Outcome::ServerError(502)],
    );
    assert_eq!(called, ["a"]);
    assert_eq!(answered(&f).1, Outcome::ServerError(502));
    assert_eq!(b.budget().refused(), 1);
    assert_eq!(b.metrics([&p], t0).budget_refusals, 1);
    drop(held);
    // The held retries spent the balance: requests pay it back, a fifth
    // of a retry each.
    for _ in 0..5 {
        drop(b.budget().request());
    }
    let (called, _) = script_run(
        &b,
        &p,
        &policy(),
        &clock,
        None,
        &[Outcome::ServerError(502)],
    );
    assert_eq!(called.len(), 2);
}

#[test]
fn no_wait_goes_past_the_deadline() {
    let t0 = Instant::now();
    let slow = RetryPolicy {
        max_retries: 5,
        base_delay: secs(1),
        max_delay: secs(5),
    };
    let (b, p, clock) = (
        balancer(Algorithm::RoundRobin),
        pool(&["a", "b"], t0),
        FakeClock::new(t0),
    );
    let deadline = t0 + Duration::from_millis(1500);
    let script = vec![Outcome::Timeout; 10];
    let (_, f) = script_run(&b, &p, &slow, &clock, Some(deadline), &script);
    assert_eq!(answered(&f).1, Outcome::Timeout);
    assert!(clock.now() < deadline, "{:?}", clock.now() - t0);
    // A cooldown that ends after the deadline is not waited for either.
    let (b, p, clock) = (
        balancer(Algorithm::RoundRobin),
        pool(&["solo"], t0),
        FakeClock::new(t0),
    );
    let limited = Outcome::RateLimited {
        retry_after: Some(secs(4)),
    };
    let (called, _) = script_run(&b, &p, &slow, &clock, Some(t0 + secs(3)), &[limited]);
    assert_eq!(called, ["solo"]);
    assert!(clock.now() < t0 + secs(3));
}

#[test]
fn a_broken_credential_fails_over_to_another_account() {
    let t0 = Instant::now();
    let (b, p, clock) = (
        balancer(Algorithm::RoundRobin),
        pool(&["acct1", "acct2"], t0),
        FakeClock::new(t0),
    );
    let rejected = Outcome::CredentialRejected {
        reason: "invalid_grant".into(),
    };
    let (called, f) = script_run(&b, &p, &policy(), &clock, None, &[rejected]);
    assert_eq!(called, ["acct1", "acct2"]);
    assert_eq!(answered(&f).1, Outcome::Success);
    // Later requests go to the working account only.
    for _ in 0..4 {
        let (called, _) = script_run(&b, &p, &policy(), &clock, None, &[]);
        assert_eq!(called, ["acct2"]);
    }
}

#[test]
fn a_flood_of_failures_stays_within_the_retry_budget() {
    // 41 requests in flight at once, every attempt failing: retries in
    // flight never exceed max(3, 20 % of 41) = 8; with 8 in flight, the
    // next request's retry is refused.
    let t0 = Instant::now();
    let b = balancer(Algorithm::RoundRobin);
    let ids: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let p = pool(&refs, t0);
    let _others: Vec<_> = (0..40).map(|_| b.budget().request()).collect();
    let held: Vec<_> = (0..8).filter_map(|_| b.budget().try_retry()).collect();
    assert_eq!(held.len(), 8);
    let clock = FakeClock::new(t0);
    let (called, _) = script_run(
        &b,
        &p,
        &policy(),
        &clock,
        None,
        &[Outcome::ServerError(503)],
    );
    assert_eq!(called.len(), 1, "the 41st request's retry is refused");
    assert_eq!(b.budget().limit(), 8);
    assert_eq!(b.budget().refused(), 1);
}
