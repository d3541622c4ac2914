//! The five ways to choose among the eligible members of a pool. Each is
//! a pure function of the candidates, the pool's selection state and the
//! injected random source.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::member::Member;
use super::random::{Random, mix64, stable_hash};

/// A load-balancing algorithm (`--load-balancer-algorithm`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Each eligible member in turn.
    #[default]
    RoundRobin,
    /// Of two members drawn at random, the one with fewer requests in
    /// flight per unit of weight (the "power of two choices", as Envoy).
    LeastRequests,
    /// nginx's smooth weighted round robin: weights {5,1,1} give
    /// a a b a c a a, spreading the heavy member's turns.
    Weighted,
    /// At random, in proportion to the weights.
    Random,
    /// By client address, with rendezvous hashing: a client keeps its
    /// member, and removing a member moves only that member's clients.
    IpHash,
}

impl Algorithm {
    /// Every algorithm, in documentation order.
    pub const ALL: [Algorithm; 5] = [
        Algorithm::RoundRobin,
        Algorithm::LeastRequests,
        Algorithm::Weighted,
        Algorithm::Random,
        Algorithm::IpHash,
    ];

    /// The name used by the flag, the config file and the admin API.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::LeastRequests => "least_requests",
            Algorithm::Weighted => "weighted",
            Algorithm::Random => "random",
            Algorithm::IpHash => "ip_hash",
        }
    }

    /// The algorithm called `name`.
    pub fn parse(name: &str) -> Option<Algorithm> {
        Self::ALL.into_iter().find(|a| a.name() == name.trim())
    }

    pub(super) fn index(self) -> u8 {
        self as u8
    }

    pub(super) fn from_index(i: u8) -> Algorithm {
        Self::ALL.get(usize::from(i)).copied().unwrap_or_default()
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|a| a.name()).collect();
            format!(
                "unknown load-balancing algorithm {:?} (expected one of {})",
                s.chars().take(64).collect::<String>(),
                names.join(", ")
            )
        })
    }
}

/// A pool's selection state: the round-robin cursor and the smooth
/// weighted round robin's current weights (one per member).
#[derive(Debug)]
pub(super) struct Cursor {
    next: AtomicUsize,
    current: Mutex<Vec<i64>>,
}

impl Cursor {
    pub(super) fn new(members: usize) -> Self {
        Self {
            next: AtomicUsize::new(0),
            current: Mutex::new(vec![0; members]),
        }
    }
}

/// One candidate: its index in the pool and the member.
pub(super) type Candidate<'a> = (usize, &'a Member);

/// Chooses among `candidates` (never empty); returns a position in it.
pub(super) fn choose(
    algorithm: Algorithm,
    candidates: &[Candidate<'_>],
    cursor: &Cursor,
    client: Option<IpAddr>,
    random: &dyn Random,
) -> usize {
    debug_assert!(!candidates.is_empty());
    if candidates.len() == 1 {
        return 0;
    }
    match algorithm {
        Algorithm::RoundRobin => round_robin(candidates.len(), cursor),
        Algorithm::LeastRequests => least_requests(candidates, random),
        Algorithm::Weighted => smooth_weighted(candidates, cursor),
        Algorithm::Random => weighted_random(candidates, random),
        Algorithm::IpHash => match client {
            Some(ip) => rendezvous(candidates, ip_key(ip)),
            None => round_robin(candidates.len(), cursor),
        },
    }
}

fn round_robin(n: usize, cursor: &Cursor) -> usize {
    cursor.next.fetch_add(1, Ordering::Relaxed) % n
}

/// Power of two choices: two distinct candidates at random, the one with
/// fewer requests in flight per unit of weight wins (the first drawn on a
/// tie). Unlike scanning for the least loaded, concurrent pickers that see
/// the same counts do not all pile onto one member.
fn least_requests(candidates: &[Candidate<'_>], random: &dyn Random) -> usize {
    let n = candidates.len() as u64;
    let a = random.below(n) as usize;
    let b = (a + 1 + random.below(n - 1) as usize) % candidates.len();
    let load = |i: usize| {
        let m = candidates[i].1;
        (u64::from(m.in_flight()), u64::from(m.weight()))
    };
    let ((la, wa), (lb, wb)) = (load(a), load(b));
    // la/wa <= lb/wb without division.
    if la * wb <= lb * wa { a } else { b }
}

/// nginx's smooth weighted round robin (ngx_http_upstream_get_peer): every
/// candidate gains its weight, the richest is chosen and pays the total.
fn smooth_weighted(candidates: &[Candidate<'_>], cursor: &Cursor) -> usize {
    let mut current = cursor.current.lock().unwrap_or_else(|e| e.into_inner());
    let mut total: i64 = 0;
    let mut best = 0;
    let mut best_weight = i64::MIN;
    for (pos, &(index, member)) in candidates.iter().enumerate() {
        let weight = i64::from(member.weight());
        let Some(slot) = current.get_mut(index) else {
            continue;
        };
        *slot += weight;
        total += weight;
        if *slot > best_weight {
            best_weight = *slot;
            best = pos;
        }
    }
    if let Some(slot) = current.get_mut(candidates[best].0) {
        *slot -= total;
    }
    best
}

fn weighted_random(candidates: &[Candidate<'_>], random: &dyn Random) -> usize {
    let total: u64 = candidates.iter().map(|(_, m)| u64::from(m.weight())).sum();
    let mut ticket = random.below(total);
    for (pos, (_, m)) in candidates.iter().enumerate() {
        let w = u64::from(m.weight());
        if ticket < w {
            return pos;
        }
        ticket -= w;
    }
    candidates.len() - 1
}

/// The hash of a client address (IPv4-mapped IPv6 counts as IPv4, so a
/// dual-stack listener does not split a client in two).
fn ip_key(ip: IpAddr) -> u64 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => stable_hash(&v4.octets()),
        IpAddr::V6(v6) => stable_hash(&v6.octets()),
    }
}

/// Weighted rendezvous (highest random weight) hashing: each member draws
/// a pseudo-random `u` in (0, 1) from the client's and its own id's hash,
/// and the smallest `-ln(u) / weight` wins. The draw of a member does not
/// depend on the others, so removing one changes only its own clients'
/// choice, and each member wins in proportion to its weight.
fn rendezvous(candidates: &[Candidate<'_>], key: u64) -> usize {
    let mut best = 0;
    let mut best_score = f64::INFINITY;
    for (pos, (_, m)) in candidates.iter().enumerate() {
        let h = mix64(key ^ m.id_hash());
        // 53 random bits, mapped into (0, 1].
        let u = ((h >> 11) + 1) as f64 / (1u64 << 53) as f64;
        let score = -u.ln() / f64::from(m.weight());
        if score < best_score {
            best_score = score;
            best = pos;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::member::{MemberSettings, ModelFilter};
    use crate::balancer::random::SplitMix64;
    use crate::provider_kind::ProviderKind;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Instant;

    fn member(id: &str, weight: u32) -> Member {
        Member::new(
            MemberSettings {
                kind: ProviderKind::Mock,
                id: id.to_owned(),
                name: id.to_owned(),
                weight,
                disabled: false,
                models: ModelFilter::default(),
            },
            Instant::now(),
        )
    }

    fn candidates(members: &[Member]) -> Vec<Candidate<'_>> {
        members.iter().enumerate().collect()
    }

    fn run(alg: Algorithm, members: &[Member], n: usize, random: &dyn Random) -> String {
        let cursor = Cursor::new(members.len());
        let c = candidates(members);
        (0..n)
            .map(|_| members[c[choose(alg, &c, &cursor, None, random)].0].id())
            .collect()
    }

    #[test]
    fn names_round_trip_and_unknown_names_list_the_valid_ones() {
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::parse(a.name()), Some(a));
            assert_eq!(a.name().parse::<Algorithm>(), Ok(a));
            assert_eq!(Algorithm::from_index(a.index()), a);
        }
        assert_eq!(Algorithm::default(), Algorithm::RoundRobin);
        let err = "fastest".parse::<Algorithm>().unwrap_err();
        assert!(
            err.contains("fastest") && err.contains("least_requests, weighted"),
            "{err}"
        );
        assert_eq!(Algorithm::from_index(200), Algorithm::RoundRobin);
    }

    #[test]
    fn round_robin_takes_turns() {
        let m = [member("a", 5), member("b", 1), member("c", 1)];
        let r = SplitMix64::seeded(1);
        assert_eq!(run(Algorithm::RoundRobin, &m, 7, &r), "abcabca");
    }

    #[test]
    fn smooth_weighted_round_robin_is_nginx_exactly() {
        let m = [member("a", 5), member("b", 1), member("c", 1)];
        let r = SplitMix64::seeded(1);
        assert_eq!(run(Algorithm::Weighted, &m, 14, &r), "aabacaaaabacaa");
        let m = [member("a", 3), member("b", 1)];
        assert_eq!(run(Algorithm::Weighted, &m, 8, &r), "aabaaaba");
        let m = [member("a", 1), member("b", 1), member("c", 1)];
        assert_eq!(run(Algorithm::Weighted, &m, 6, &r), "abcabc");
    }

    #[test]
    fn smooth_weighted_skips_members_that_are_not_candidates() {
        let m = [member("a", 5), member("b", 1), member("c", 1)];
        let cursor = Cursor::new(3);
        let r = SplitMix64::seeded(1);
        // Only b and c are eligible: they alternate, a's slot untouched.
        let only_bc: Vec<Candidate<'_>> = vec![(1, &m[1]), (2, &m[2])];
        let seq: String = (0..4)
            .map(|_| {
                only_bc[choose(Algorithm::Weighted, &only_bc, &cursor, None, &r)]
                    .1
                    .id()
            })
            .collect();
        assert_eq!(seq, "bcbc");
        assert_eq!(cursor.current.lock().unwrap()[0], 0);
    }

    #[test]
    fn weights_hold_over_many_choices() {
        let m = [member("a", 3), member("b", 1)];
        let r = SplitMix64::seeded(9);
        for alg in [Algorithm::Weighted, Algorithm::Random] {
            let seq = run(alg, &m, 4000, &r);
            let a = seq.matches('a').count();
            assert!((2850..=3150).contains(&a), "{alg}: {a} of 4000");
        }
    }

    #[test]
    fn least_requests_avoids_the_busy_member() {
        let m = [member("a", 1), member("b", 1), member("c", 1)];
        for _ in 0..10 {
            m[0].begin();
        }
        m[1].begin();
        let r = SplitMix64::seeded(3);
        let seq = run(Algorithm::LeastRequests, &m, 300, &r);
        // a is never the lighter of any pair; c (idle) beats b whenever
        // they are drawn together.
        assert_eq!(seq.matches('a').count(), 0);
        let (b, c) = (seq.matches('b').count(), seq.matches('c').count());
        assert!(c > 2 * b && b > 0, "b {b} c {c}");
    }

    #[test]
    fn least_requests_counts_load_per_unit_of_weight() {
        // a: 4 in flight at weight 4 (1 each) beats b: 2 at weight 1.
        let m = [member("a", 4), member("b", 1)];
        for _ in 0..4 {
            m[0].begin();
        }
        m[1].begin();
        m[1].begin();
        let r = SplitMix64::seeded(5);
        assert_eq!(run(Algorithm::LeastRequests, &m, 50, &r), "a".repeat(50));
    }

    #[test]
    fn least_requests_spreads_an_idle_pool() {
        let m = [member("a", 1), member("b", 1), member("c", 1)];
        let r = SplitMix64::seeded(11);
        let seq = run(Algorithm::LeastRequests, &m, 3000, &r);
        for id in ["a", "b", "c"] {
            let n = seq.matches(id).count();
            assert!((850..=1150).contains(&n), "{id}: {n}");
        }
    }

    fn owner(members: &[&Member], ip: IpAddr) -> String {
        let c: Vec<Candidate<'_>> = members.iter().copied().enumerate().collect();
        let cursor = Cursor::new(members.len());
        let r = SplitMix64::seeded(0);
        c[choose(Algorithm::IpHash, &c, &cursor, Some(ip), &r)]
            .1
            .id()
            .to_owned()
    }

    fn client(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i * 7919))
    }

    #[test]
    fn ip_hash_is_stable_and_removal_moves_only_the_removed_members_clients() {
        let (a, b, c, d) = (
            member("a", 1),
            member("b", 1),
            member("c", 1),
            member("d", 1),
        );
        let all = [&a, &b, &c, &d];
        let before: Vec<String> = (0..4000).map(|i| owner(&all, client(i))).collect();
        for id in ["a", "b", "c", "d"] {
            let n = before.iter().filter(|o| *o == id).count();
            assert!((850..=1150).contains(&n), "{id}: {n}");
        }
        // Same answer every time, and whatever the order of the pool.
        let reordered = [&d, &b, &a, &c];
        for i in 0..4000 {
            assert_eq!(owner(&reordered, client(i)), before[i as usize]);
        }
        let without_b = [&a, &c, &d];
        let mut moved_to = std::collections::BTreeMap::new();
        for i in 0..4000 {
            let after = owner(&without_b, client(i));
            if before[i as usize] == "b" {
                *moved_to.entry(after).or_insert(0) += 1;
            } else {
                assert_eq!(after, before[i as usize], "client {i} moved");
            }
        }
        // b's clients spread over all three that remain.
        assert_eq!(moved_to.len(), 3, "{moved_to:?}");
        // Adding b back returns exactly its clients.
        for i in 0..4000 {
            assert_eq!(owner(&all, client(i)), before[i as usize]);
        }
    }

    #[test]
    fn ip_hash_honours_weights() {
        let (a, b) = (member("a", 3), member("b", 1));
        let n = (0..4000)
            .filter(|&i| owner(&[&a, &b], client(i)) == "a")
            .count();
        assert!((2850..=3150).contains(&n), "{n}");
    }

    #[test]
    fn ip_hash_treats_mapped_ipv6_as_ipv4_and_falls_back_without_an_address() {
        let (a, b, c) = (member("a", 1), member("b", 1), member("c", 1));
        let all = [&a, &b, &c];
        for i in 0..50 {
            let IpAddr::V4(v4) = client(i) else {
                unreachable!()
            };
            assert_eq!(
                owner(&all, IpAddr::V6(v4.to_ipv6_mapped())),
                owner(&all, IpAddr::V4(v4))
            );
        }
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        assert_eq!(owner(&all, v6), owner(&all, v6));
        let m = [member("a", 1), member("b", 1)];
        let r = SplitMix64::seeded(1);
        assert_eq!(run(Algorithm::IpHash, &m, 4, &r), "abab");
    }

    #[test]
    fn random_is_replayed_by_its_seed() {
        let m = [member("a", 1), member("b", 2), member("c", 3)];
        let x = run(Algorithm::Random, &m, 50, &SplitMix64::seeded(77));
        let y = run(Algorithm::Random, &m, 50, &SplitMix64::seeded(77));
        assert_eq!(x, y);
        assert!(x.contains('a') && x.contains('b') && x.contains('c'));
    }
}
