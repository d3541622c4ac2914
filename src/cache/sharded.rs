//! The memory tier: an LRU split into independently locked shards and
//! bounded in bytes, not entries.
//!
//! Every worker may look up the cache on every request, so one lock would
//! serialise them; a shard per key hash makes two lookups contend only
//! when they land in the same shard. `lru::LruCache::get` reorders the
//! list and needs `&mut`, so each shard is a `Mutex`, not an `RwLock`.
//! Values are meant to be `Arc`s: a hit holds the lock for a hash lookup
//! and a pointer clone, never for a copy of a body, and anything removed
//! is dropped after the lock is released.
//!
//! The bound is in bytes because answers range from a few hundred bytes
//! to megabytes, and it is one budget for the whole cache, not a share
//! per shard: with per-shard budgets a cache of many small shards could
//! hold no answer bigger than a shard, and the hash decides which shards
//! fill. An insert first reserves its bytes, making room by removing the
//! least recently used entry of the whole cache (the oldest of the shards'
//! LRU tails, one lock at a time), so the total never exceeds the
//! capacity. One entry may not exceed `max_entry_bytes`; heavier ones are
//! refused and counted, so a single huge answer cannot flush the cache.
//! Expiry is checked on read with an injected `now`, so tests need no
//! sleeps; an expired entry met while making room counts as an
//! expiration, not an eviction.

use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use lru::LruCache;

struct Slot<V> {
    value: V,
    weight: usize,
    expires: Instant,
    /// Last insert or hit: the shards' tails are compared by it.
    used: Instant,
}

struct Shard<K: Hash + Eq, V> {
    lru: LruCache<K, Slot<V>>,
    bytes: usize,
}

/// A byte-bounded, TTL-checked LRU split into `Mutex`-protected shards.
pub struct ShardedLru<K: Hash + Eq, V> {
    shards: Box<[Mutex<Shard<K, V>>]>,
    hasher: RandomState,
    capacity: usize,
    max_entry: usize,
    bytes: AtomicUsize,
    entries: AtomicUsize,
    evictions: AtomicU64,
    expirations: AtomicU64,
    refused: AtomicU64,
}

impl<K: Hash + Eq, V: Clone> ShardedLru<K, V> {
    /// A cache of at most `capacity_bytes` over `shards` shards (rounded up
    /// to a power of two, at least 1), refusing entries heavier than
    /// `max_entry_bytes` (or than the whole capacity).
    pub fn new(capacity_bytes: usize, shards: usize, max_entry_bytes: usize) -> Self {
        let n = shards.max(1).next_power_of_two();
        let shards = (0..n)
            .map(|_| {
                Mutex::new(Shard {
                    lru: LruCache::unbounded(),
                    bytes: 0,
                })
            })
            .collect();
        Self {
            shards,
            hasher: RandomState::new(),
            capacity: capacity_bytes,
            max_entry: max_entry_bytes.min(capacity_bytes),
            bytes: AtomicUsize::new(0),
            entries: AtomicUsize::new(0),
            evictions: AtomicU64::new(0),
            expirations: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Index of the shard that holds `key`.
    pub fn shard_of(&self, key: &K) -> usize {
        // The shard count is a power of two, so masking is a modulo.
        (self.hasher.hash_one(key) as usize) & (self.shards.len() - 1)
    }

    fn lock(&self, index: usize) -> MutexGuard<'_, Shard<K, V>> {
        // Nothing panics while a shard is locked except allocation failure;
        // the counters stay consistent either way, so poison is ignored.
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The live value for `key`, marking it most recently used. An entry
    /// expired at `now` is removed, counted and not returned.
    pub fn get(&self, key: &K, now: Instant) -> Option<V> {
        let mut shard = self.lock(self.shard_of(key));
        let slot = shard.lru.get_mut(key)?;
        if slot.expires > now {
            slot.used = now;
            return Some(slot.value.clone());
        }
        let expired = shard.lru.pop(key);
        if let Some(slot) = &expired {
            shard.bytes -= slot.weight;
            self.forget(slot.weight);
            self.expirations.fetch_add(1, Ordering::Relaxed);
        }
        drop(shard);
        drop(expired);
        None
    }

    /// Stores `value` as `weight` bytes until `expires`, replacing any
    /// previous value of `key` and removing the least recently used
    /// entries of the cache until it fits. Returns false (and stores
    /// nothing) when the entry is heavier than the per-entry cap, which is
    /// counted as refused.
    pub fn insert(&self, key: K, value: V, weight: usize, expires: Instant, now: Instant) -> bool {
        if weight > self.max_entry {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let index = self.shard_of(&key);
        let old = {
            let mut shard = self.lock(index);
            let old = shard.lru.pop(&key);
            if let Some(old) = &old {
                shard.bytes -= old.weight;
                self.forget(old.weight);
            }
            old
        };
        drop(old);
        // Reserve first, so that the total never exceeds the capacity,
        // even while other inserts are under way.
        while self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                (b + weight <= self.capacity).then_some(b + weight)
            })
            .is_err()
        {
            if !self.remove_oldest(now) {
                // Only reservations of inserts in progress are left.
                return false;
            }
        }
        let slot = Slot {
            value,
            weight,
            expires,
            used: now,
        };
        let mut shard = self.lock(index);
        shard.bytes += weight;
        // A concurrent insert of the same key may have landed meanwhile.
        let replaced = shard.lru.push(key, slot);
        if let Some((_, old)) = &replaced {
            shard.bytes -= old.weight;
            self.bytes.fetch_sub(old.weight, Ordering::Relaxed);
        } else {
            self.entries.fetch_add(1, Ordering::Relaxed);
        }
        drop(shard);
        drop(replaced);
        true
    }

    /// Removes the least recently used entry of the whole cache: the
    /// oldest of the shards' LRU tails. False when every shard is empty.
    fn remove_oldest(&self, now: Instant) -> bool {
        let mut oldest: Option<(usize, Instant)> = None;
        for index in 0..self.shards.len() {
            let shard = self.lock(index);
            if let Some((_, slot)) = shard.lru.peek_lru()
                && oldest.is_none_or(|(_, used)| slot.used < used)
            {
                oldest = Some((index, slot.used));
            }
        }
        let Some((index, _)) = oldest else {
            return false;
        };
        let mut shard = self.lock(index);
        // The tail may have changed since it was looked at; any tail of an
        // old shard will do, and an empty one means another insert made
        // room meanwhile.
        let removed = shard.lru.pop_lru();
        if let Some((_, slot)) = &removed {
            shard.bytes -= slot.weight;
            self.forget(slot.weight);
            let counter = if slot.expires <= now {
                &self.expirations
            } else {
                &self.evictions
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        drop(shard);
        drop(removed);
        true
    }

    fn forget(&self, weight: usize) {
        self.bytes.fetch_sub(weight, Ordering::Relaxed);
        self.entries.fetch_sub(1, Ordering::Relaxed);
    }

    /// Removes every entry; returns how many there were.
    pub fn clear(&self) -> usize {
        let mut count = 0;
        for index in 0..self.shards.len() {
            let mut shard = self.lock(index);
            let old = std::mem::replace(&mut shard.lru, LruCache::unbounded());
            let bytes = std::mem::take(&mut shard.bytes);
            drop(shard);
            count += old.len();
            self.bytes.fetch_sub(bytes, Ordering::Relaxed);
            self.entries.fetch_sub(old.len(), Ordering::Relaxed);
        }
        count
    }

    /// Entries stored (expired ones included until they are met).
    pub fn len(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes stored, by the weights given to [`ShardedLru::insert`].
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The byte bound.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The effective per-entry cap.
    pub fn max_entry_bytes(&self) -> usize {
        self.max_entry
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Entries pushed out to make room.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Entries dropped because their TTL had passed.
    pub fn expirations(&self) -> u64 {
        self.expirations.load(Ordering::Relaxed)
    }

    /// Entries not stored because they were heavier than the per-entry cap.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Entries per shard, for distribution checks.
    pub fn shard_lens(&self) -> Vec<usize> {
        (0..self.shards.len())
            .map(|i| self.lock(i).lru.len())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn evicts_least_recently_used_by_bytes() {
        // One shard of 100 bytes; entries of 30 bytes.
        let lru: ShardedLru<u32, Arc<str>> = ShardedLru::new(100, 1, 100);
        let now = Instant::now();
        for k in 0..3 {
            assert!(lru.insert(k, Arc::from("v"), 30, now + HOUR, now));
        }
        assert_eq!((lru.len(), lru.bytes()), (3, 90));
        // Touch 0 so that 1 is the least recently used.
        assert!(lru.get(&0, now).is_some());
        assert!(lru.insert(3, Arc::from("v"), 30, now + HOUR, now));
        assert!(lru.get(&1, now).is_none(), "LRU entry evicted");
        assert!(lru.get(&0, now).is_some() && lru.get(&2, now).is_some());
        assert_eq!((lru.len(), lru.bytes(), lru.evictions()), (3, 90, 1));
        // A heavy entry pushes out as many as needed.
        assert!(lru.insert(4, Arc::from("v"), 70, now + HOUR, now));
        assert!(lru.bytes() <= 100);
        assert_eq!(lru.evictions(), 3);
        assert!(lru.get(&4, now).is_some());
    }

    #[test]
    fn replacing_a_key_keeps_accounting_exact() {
        let lru: ShardedLru<u32, u32> = ShardedLru::new(1000, 1, 1000);
        let now = Instant::now();
        lru.insert(1, 1, 100, now + HOUR, now);
        lru.insert(1, 2, 40, now + HOUR, now);
        assert_eq!((lru.len(), lru.bytes()), (1, 40));
        assert_eq!(lru.get(&1, now), Some(2));
        assert_eq!(lru.clear(), 1);
        assert_eq!((lru.len(), lru.bytes()), (0, 0));
    }

    #[test]
    fn oversized_entries_are_refused_and_counted() {
        // The per-entry cap is min(max_entry_bytes, capacity), whatever
        // the shard count.
        let lru: ShardedLru<u32, u32> = ShardedLru::new(1000, 64, 10_000);
        assert_eq!(lru.max_entry_bytes(), 1000);
        let now = Instant::now();
        assert!(
            lru.insert(1, 1, 900, now + HOUR, now),
            "one shard of 64 holds it"
        );
        assert!(!lru.insert(2, 2, 1001, now + HOUR, now));
        assert_eq!((lru.len(), lru.refused()), (1, 1));
        let capped: ShardedLru<u32, u32> = ShardedLru::new(1000, 1, 50);
        assert!(!capped.insert(1, 1, 51, now + HOUR, now));
        assert_eq!(capped.refused(), 1);
    }

    #[test]
    fn the_least_recently_used_entry_of_any_shard_goes_first() {
        let lru: ShardedLru<u32, u32> = ShardedLru::new(300, 16, 100);
        let t = |s: u64| Instant::now() + Duration::from_secs(s);
        for k in 0..3 {
            assert!(lru.insert(k, k, 100, t(1000), t(u64::from(k))));
        }
        // 0 is touched last, so 1 is the oldest wherever it lives.
        assert_eq!(lru.get(&0, t(10)), Some(0));
        assert!(lru.insert(3, 3, 100, t(1000), t(11)));
        assert_eq!(lru.get(&1, t(12)), None);
        assert!(lru.get(&0, t(12)).is_some() && lru.get(&2, t(12)).is_some());
        assert_eq!((lru.len(), lru.bytes(), lru.evictions()), (3, 300, 1));
    }

    #[test]
    fn concurrent_inserts_never_exceed_the_capacity() {
        let lru: Arc<ShardedLru<u64, u64>> = Arc::new(ShardedLru::new(10_000, 8, 1000));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let lru = Arc::clone(&lru);
                std::thread::spawn(move || {
                    let now = Instant::now();
                    for k in 0..5_000u64 {
                        lru.insert(t * 10_000 + k, k, 100 + (k as usize % 900), now + HOUR, now);
                        assert!(lru.bytes() <= lru.capacity());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(lru.bytes() <= 10_000 && lru.bytes() > 10_000 - 2000);
        assert_eq!(lru.shard_lens().iter().sum::<usize>(), lru.len());
    }

    #[test]
    fn entries_expire_on_read() {
        let lru: ShardedLru<u32, u32> = ShardedLru::new(1000, 4, 1000);
        let now = Instant::now();
        lru.insert(1, 10, 10, now + Duration::from_secs(5), now);
        assert_eq!(lru.get(&1, now + Duration::from_secs(4)), Some(10));
        assert_eq!(lru.get(&1, now + Duration::from_secs(5)), None);
        assert_eq!((lru.expirations(), lru.len(), lru.bytes()), (1, 0, 0));
        assert_eq!(lru.get(&1, now), None, "gone for good");
    }

    #[test]
    fn expired_tail_entries_count_as_expirations_when_making_room() {
        let lru: ShardedLru<u32, u32> = ShardedLru::new(100, 1, 100);
        let now = Instant::now();
        lru.insert(1, 1, 60, now + Duration::from_secs(1), now);
        let later = now + Duration::from_secs(2);
        lru.insert(2, 2, 60, later + HOUR, later);
        assert_eq!((lru.expirations(), lru.evictions()), (1, 0));
    }

    #[test]
    fn keys_spread_over_shards() {
        let lru: ShardedLru<u64, u64> = ShardedLru::new(1 << 30, 12, 1 << 20);
        assert_eq!(lru.shard_count(), 16, "rounded up to a power of two");
        let now = Instant::now();
        for k in 0..16_000 {
            lru.insert(k, k, 1, now + HOUR, now);
        }
        let lens = lru.shard_lens();
        assert_eq!(lens.iter().sum::<usize>(), 16_000);
        // Expected 1000 per shard; a fair hash stays well within ±25 %.
        assert!(lens.iter().all(|&n| (750..1250).contains(&n)), "{lens:?}");
    }

    #[test]
    fn total_bytes_stay_within_capacity_under_a_flood() {
        let lru: ShardedLru<u64, u64> = ShardedLru::new(64 * 1024, 8, 4096);
        let now = Instant::now();
        for k in 0..50_000u64 {
            lru.insert(k, k, 100 + (k as usize * 7919) % 3000, now + HOUR, now);
            assert!(lru.bytes() <= lru.capacity());
        }
        assert!(lru.evictions() > 0);
        assert_eq!(lru.shard_lens().iter().sum::<usize>(), lru.len());
    }
}
