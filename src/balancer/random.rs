//! The balancer's injected sources of randomness and time.
//!
//! Both are traits so that tests drive them: a seeded [`SplitMix64`]
//! replays the same choices, and a fake [`Clock`] makes back-off waits
//! instantaneous while still advancing time.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A source of uniformly distributed 64-bit numbers, shared by every
/// worker. Not for secrets.
pub trait Random: Send + Sync {
    /// The next number.
    fn next_u64(&self) -> u64;

    /// A number in `0..n` (`0` when `n` is 0), by Lemire's multiply-shift:
    /// no division, and a bias below 2^-32 for the small `n` used here.
    fn below(&self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number
/// generators", 2014) over an atomic counter: one `fetch_add` per number,
/// so concurrent workers never wait for each other and a seed replays the
/// same sequence.
#[derive(Debug)]
pub struct SplitMix64 {
    state: AtomicU64,
}

/// The Weyl increment of SplitMix64 (2^64 / golden ratio, odd).
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

impl SplitMix64 {
    /// A generator that replays the same sequence for the same seed.
    pub fn seeded(seed: u64) -> Self {
        Self {
            state: AtomicU64::new(seed),
        }
    }

    /// A generator seeded from the process's hash keys (which std seeds
    /// from the operating system) and the clock.
    pub fn from_entropy() -> Self {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        Self::seeded(hasher.finish())
    }
}

impl Random for SplitMix64 {
    fn next_u64(&self) -> u64 {
        mix64(
            self.state
                .fetch_add(GOLDEN, Ordering::Relaxed)
                .wrapping_add(GOLDEN),
        )
    }
}

/// SplitMix64's finaliser: a bijection on `u64` in which every input bit
/// affects every output bit. Also the balancer's hash mixer.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a over bytes, finalised with [`mix64`]: a hash that is the same
/// in every process and release (unlike std's `DefaultHasher`), which
/// consistent hashing of client addresses needs.
pub(crate) fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    mix64(h)
}

/// Time as the retry loop sees it: the current instant and a way to wait.
pub trait Clock {
    /// The current instant.
    fn now(&self) -> Instant;
    /// Waits `d` (a fake clock just advances).
    fn sleep(&self, d: Duration);
}

/// The real clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_generators_replay() {
        let a = SplitMix64::seeded(42);
        let b = SplitMix64::seeded(42);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs[0], xs[1]);
        // The reference output of SplitMix64 seeded with 0.
        assert_eq!(SplitMix64::seeded(0).next_u64(), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let r = SplitMix64::seeded(7);
        let mut seen = [0u32; 5];
        for _ in 0..5000 {
            seen[r.below(5) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
        assert_eq!(r.below(0), 0);
        assert_eq!(r.below(1), 0);
    }

    #[test]
    fn stable_hash_is_fixed() {
        assert_eq!(stable_hash(b"a"), stable_hash(b"a"));
        assert_ne!(stable_hash(b"a"), stable_hash(b"b"));
        // Pinned: a change would move every ip_hash client.
        assert_eq!(stable_hash(&[10, 0, 0, 1]), 0xe7a7_7091_5e3a_6bb4);
        assert_eq!(stable_hash(b""), 0xf52a_15e9_a9b5_e89b);
    }
}
