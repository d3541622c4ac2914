//! The response cache: a lock-sharded in-memory LRU, optionally backed by
//! Redis shared between nodes, with request coalescing in front.
//!
//! Repeated identical prompts are common (retries, test suites, agents
//! re-asking), and an upstream answer costs money and seconds while a
//! memory hit costs a hash lookup and an `Arc` clone. The layers, in the
//! order a lookup meets them:
//!
//! 1. [`Key`]: provider, model, client protocol and the canonical body,
//!    hashed with SHA-256 and compared byte for byte on hit;
//! 2. the memory tier ([`ShardedLru`], byte-bounded, TTL on read);
//! 3. coalescing: one miss per key goes on, equal concurrent misses wait
//!    for its answer (bounded by [`Settings::coalesce_timeout`]);
//! 4. the Redis tier (read-through, fail-open, see [`redis`]);
//! 5. the caller's fetch (the upstream). Only answers it marks cacheable
//!    are stored, in both tiers; errors still reach every waiter.
//!
//! What this module does not decide: which requests may use the cache at
//! all. The gateway bypasses streams (including Gemini's
//! `:streamGenerateContent`, which [`Key::new`] cannot see) and requests
//! with `Cache-Control: no-cache`/`no-store`, sets `X-Cache`, and serves
//! the management endpoints from [`Cache::stats`], [`Cache::clear`] and
//! [`Cache::set_enabled`].

mod coalesce;
mod key;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(not(feature = "redis"))]
#[path = "redis_absent.rs"]
mod redis;
pub mod sharded;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

pub use key::{IGNORED_FIELDS, Key, scope_of};
pub use sharded::ShardedLru;

use crate::config::{Config, Secret};
use coalesce::{Flights, Join, Landing};
use redis::RedisTier;

/// Redis connect, read and write timeout default: 100 ms.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(100);
/// Redis connections kept at most, default.
pub const DEFAULT_REDIS_POOL_SIZE: usize = 8;
/// First back-off after a Redis failure.
pub const DEFAULT_REDIS_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Longest back-off between Redis retries.
pub const DEFAULT_REDIS_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// One answer may take at most this share of the memory tier (1/16): a
/// 1 MB cache still stores 64 KB answers, and no single answer can flush
/// more than a sixteenth of the cache.
pub const MAX_ENTRY_SHARE: usize = 16;
/// Smallest average shard worth having: a small cache needs no spreading.
pub const MIN_SHARD_BYTES: usize = 64 * 1024;
/// Most memory shards: every eviction looks at each shard's oldest entry.
pub const MAX_SHARDS: usize = 64;
/// Bookkeeping bytes charged per entry on top of key and body: the `Arc`,
/// the LRU node and map slot, the `Entry` fields.
pub const ENTRY_OVERHEAD_BYTES: usize = 160;

/// Cache settings, filled from the configuration by
/// [`Settings::from_config`].
#[derive(Clone, Debug)]
pub struct Settings {
    /// `--cache-enabled` / `cache.enabled` (default on). Switchable at run
    /// time with [`Cache::set_enabled`].
    pub enabled: bool,
    /// `--cache-max-size` in bytes (the flag is in MB). Bounds key + body
    /// + overhead of all entries.
    pub max_bytes: usize,
    /// `--cache-ttl`. Zero stores nothing.
    pub ttl: Duration,
    /// Largest single entry, default `max_bytes / MAX_ENTRY_SHARE`, so one
    /// answer can never empty the cache. Heavier answers are refused and
    /// counted ([`Stats::refused`]).
    pub max_entry_bytes: usize,
    /// Memory shards (lock spreading only: the byte bound is shared),
    /// rounded up to a power of two; use [`Settings::shards_for`].
    pub shards: usize,
    /// How long a coalesced request waits for the leader's answer before
    /// fetching itself; the upstream timeout is the natural value.
    pub coalesce_timeout: Duration,
    /// The shared tier, when `--redis-addr` is set.
    pub redis: Option<RedisSettings>,
}

impl Default for Settings {
    /// What the default configuration asks for.
    fn default() -> Self {
        Self::from_config(&Config::default())
    }
}

impl Settings {
    /// The cache settings `config` asks for, on this machine's cores.
    pub fn from_config(config: &Config) -> Self {
        let max_bytes =
            usize::try_from(config.cache.max_size_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            enabled: config.cache.enabled,
            max_bytes,
            ttl: config.cache.ttl,
            max_entry_bytes: (max_bytes / MAX_ENTRY_SHARE).max(1),
            shards: Self::shards_for(max_bytes, cores),
            coalesce_timeout: config.upstream.timeout,
            redis: config.redis.as_ref().map(|r| RedisSettings {
                password: r.password.clone(),
                db: i64::try_from(r.db).ok(),
                ..RedisSettings::new(r.addr.clone())
            }),
        }
    }

    /// Shards for a memory tier of `max_bytes` on `cores` cores: four per
    /// core, so that lookups on different cores rarely meet on one lock,
    /// but no more than [`MAX_SHARDS`] and no smaller than
    /// [`MIN_SHARD_BYTES`] on average. A power of two.
    pub fn shards_for(max_bytes: usize, cores: usize) -> usize {
        let n = cores
            .saturating_mul(4)
            .min(MAX_SHARDS)
            .min(max_bytes / MIN_SHARD_BYTES)
            .max(1);
        1 << n.ilog2()
    }
}

/// Redis tier settings (`--redis-addr`, `--redis-password`, `--redis-db`).
#[derive(Clone, Debug)]
pub struct RedisSettings {
    /// `host:port` or a `redis://` URL.
    pub addr: String,
    /// `AUTH` password, if any.
    pub password: Option<Secret>,
    /// Database number (`SELECT`); `None` keeps the URL's or 0.
    pub db: Option<i64>,
    /// Connect, read and write timeout, default [`DEFAULT_REDIS_TIMEOUT`].
    /// No Redis operation takes longer.
    pub timeout: Duration,
    /// Connections kept at most, default [`DEFAULT_REDIS_POOL_SIZE`].
    pub pool_size: usize,
    /// Pause after the first failure, default
    /// [`DEFAULT_REDIS_BACKOFF_INITIAL`]; doubles on each failed retry.
    pub backoff_initial: Duration,
    /// Longest pause, default [`DEFAULT_REDIS_BACKOFF_MAX`].
    pub backoff_max: Duration,
}

impl RedisSettings {
    /// Settings for `addr` with every default.
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            password: None,
            db: None,
            timeout: DEFAULT_REDIS_TIMEOUT,
            pool_size: DEFAULT_REDIS_POOL_SIZE,
            backoff_initial: DEFAULT_REDIS_BACKOFF_INITIAL,
            backoff_max: DEFAULT_REDIS_BACKOFF_MAX,
        }
    }
}

/// A stored answer, exactly as sent to the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type` header value.
    pub content_type: String,
    /// Response body.
    pub body: Vec<u8>,
    /// When the upstream produced it (an `Age` header can be derived).
    pub created: SystemTime,
    /// `Retry-After` of an error answer, relayed to coalesced waiters too.
    /// Never stored: only successful answers are cached.
    pub retry_after: Option<String>,
}

impl Entry {
    /// A fresh entry created now.
    pub fn new(status: u16, content_type: impl Into<String>, body: Vec<u8>) -> Self {
        Self {
            status,
            content_type: content_type.into(),
            body,
            created: SystemTime::now(),
            retry_after: None,
        }
    }

    /// Bytes charged to the memory tier for this entry under `key`.
    pub fn weight(&self, key: &Key) -> usize {
        self.body.len()
            + self.content_type.len()
            + key.canonical().len()
            + key.hash().len()
            + ENTRY_OVERHEAD_BYTES
    }
}

/// What a fetch produced.
#[derive(Debug)]
pub struct Fetched {
    /// The answer to send (also to coalesced waiters).
    pub entry: Entry,
    /// Whether it may be stored: a complete 2xx answer. Errors and partial
    /// answers are delivered but never stored.
    pub cacheable: bool,
}

/// How [`Cache::get_or_fetch`] produced its answer (→ `X-Cache`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// From memory or Redis, no upstream call (`X-Cache: HIT`). Also for a
    /// request that waited on another one which found the entry in Redis.
    Hit,
    /// This request called `fetch` (`X-Cache: MISS`).
    Miss,
    /// Another request's concurrent `fetch` answered it; no upstream call
    /// of its own (`X-Cache: HIT` is a fair header: it was not fetched).
    Coalesced,
    /// The cache is disabled; `fetch` was called and nothing stored
    /// (`X-Cache: BYPASS`).
    Bypass,
}

/// The `redis` object of `GET /cache/stats`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RedisStats {
    /// `--redis-addr` is set.
    pub configured: bool,
    /// The last Redis operation succeeded.
    pub connected: bool,
    /// Failed Redis operations since start.
    pub errors: u64,
}

/// `GET /cache/stats`, field for field as aiproxy(1) lists them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stats {
    /// Caching is switched on.
    pub enabled: bool,
    /// Entries in memory.
    pub entries: u64,
    /// Bytes charged to memory (key + body + overhead).
    pub bytes: u64,
    /// The memory bound in bytes.
    pub capacity_bytes: u64,
    /// Lookups answered from memory or Redis.
    pub hits: u64,
    /// Lookups that went upstream.
    pub misses: u64,
    /// `hits / (hits + misses + coalesced)`: the share of lookups answered
    /// from a stored entry; 0 before the first lookup.
    pub hit_ratio: f64,
    /// Memory entries pushed out to make room.
    pub evictions: u64,
    /// Memory entries dropped at their TTL.
    pub expirations: u64,
    /// Answers not stored because they were larger than one entry may be
    /// (1/16 of the capacity).
    pub refused: u64,
    /// Lookups answered by another request's concurrent fetch.
    pub coalesced: u64,
    /// The Redis tier.
    pub redis: RedisStats,
}

/// What [`Cache::clear`] removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Cleared {
    /// Memory entries removed.
    pub entries: u64,
    /// Redis keys removed; `None` without Redis or when it failed.
    pub redis_keys: Option<u64>,
}

/// The two-tier response cache. Share it as `Arc<Cache>`; every method
/// takes `&self`.
pub struct Cache {
    settings: Settings,
    enabled: AtomicBool,
    memory: ShardedLru<Key, Arc<Entry>>,
    redis: Option<RedisTier>,
    flights: Flights,
    hits: AtomicU64,
    misses: AtomicU64,
    coalesced: AtomicU64,
    /// [`ShardedLru::refused`] as last handed out by [`Cache::take_refused`].
    refused_taken: AtomicU64,
}

impl Cache {
    /// Builds the cache. Nothing connects yet: Redis connections open on
    /// first use. An unparsable Redis address disables the Redis tier and
    /// is returned as a warning for the caller to log (config validation
    /// should have caught it).
    pub fn new(settings: Settings) -> Self {
        Self::with_warning(settings).0
    }

    /// [`Cache::new`], also returning why the Redis tier is off, if it is
    /// configured but unusable.
    pub fn with_warning(settings: Settings) -> (Self, Option<String>) {
        let (redis, warning) = match settings.redis.as_ref().map(RedisTier::new) {
            None => (None, None),
            Some(Ok(tier)) => (Some(tier), None),
            Some(Err(e)) => (None, Some(e)),
        };
        let memory = ShardedLru::new(
            settings.max_bytes,
            settings.shards,
            settings.max_entry_bytes,
        );
        let cache = Self {
            enabled: AtomicBool::new(settings.enabled),
            settings,
            memory,
            redis,
            flights: Flights::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
            refused_taken: AtomicU64::new(0),
        };
        (cache, warning)
    }

    /// The settings it was built with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Switches caching on or off (`PUT /cache/enable|disable`). Entries are
    /// kept while off and expire normally.
    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Relaxed);
    }

    /// Whether caching is on.
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Bytes held by the memory tier.
    pub fn size_bytes(&self) -> usize {
        self.memory.bytes()
    }

    /// Answers refused since the previous call, for a metrics counter that
    /// outlives this cache (a reload may replace it).
    pub fn take_refused(&self) -> u64 {
        let total = self.memory.refused();
        total.saturating_sub(self.refused_taken.swap(total, Ordering::Relaxed))
    }

    /// Looks `key` up in memory, then Redis (filling memory on a Redis
    /// hit). Counts a hit or a miss. `None` when disabled.
    pub fn get(&self, key: &Key) -> Option<Arc<Entry>> {
        if !self.is_enabled() {
            return None;
        }
        let found = self.lookup(key);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Stores `entry` in memory and Redis (if it fits the per-entry cap and
    /// caching is on). The caller decides that it is cacheable.
    pub fn put(&self, key: Key, entry: Entry) {
        if !self.is_enabled() {
            return;
        }
        let entry = Arc::new(entry);
        if self.put_memory(key.clone(), Arc::clone(&entry)) {
            self.put_redis(&key, &entry);
        }
    }

    /// Answers from the cache, or calls `fetch` once for all concurrent
    /// callers with an equal key and stores the result if cacheable.
    ///
    /// Waiters get the leader's `Arc<Entry>`, errors included. A waiter
    /// whose leader takes longer than [`Settings::coalesce_timeout`], or
    /// panics, calls its own `fetch`. A panic in `fetch` propagates to its
    /// caller after waking the waiters.
    pub fn get_or_fetch(
        &self,
        key: &Key,
        fetch: impl FnOnce() -> Fetched,
    ) -> (Arc<Entry>, Outcome) {
        if !self.is_enabled() {
            return (Arc::new(fetch().entry), Outcome::Bypass);
        }
        if let Some(entry) = self.memory.get(key, Instant::now()) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return (entry, Outcome::Hit);
        }
        let leader = match self.flights.join(key) {
            Join::Leader(leader) => leader,
            Join::Waiter(flight) => {
                return match flight.wait(self.settings.coalesce_timeout) {
                    Some(Landing::Answer(entry, true)) => {
                        self.hits.fetch_add(1, Ordering::Relaxed);
                        (entry, Outcome::Hit)
                    }
                    Some(Landing::Answer(entry, false)) => {
                        self.coalesced.fetch_add(1, Ordering::Relaxed);
                        (entry, Outcome::Coalesced)
                    }
                    Some(Landing::Abandoned) | None => {
                        (self.fetch_and_store(key, fetch), Outcome::Miss)
                    }
                };
            }
        };
        // A flight for this key may have landed (and stored its answer)
        // between the memory miss above and `join`; memory is checked
        // again so that it does not cost a second upstream call.
        if let Some(entry) = self.lookup(key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            leader.land(Arc::clone(&entry), true);
            return (entry, Outcome::Hit);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let fetched = fetch();
        let entry = Arc::new(fetched.entry);
        let stored = fetched.cacheable && self.put_memory(key.clone(), Arc::clone(&entry));
        leader.land(Arc::clone(&entry), false);
        // Redis last: the waiters already have their answer.
        if stored {
            self.put_redis(key, &entry);
        }
        (entry, Outcome::Miss)
    }

    fn fetch_and_store(&self, key: &Key, fetch: impl FnOnce() -> Fetched) -> Arc<Entry> {
        self.misses.fetch_add(1, Ordering::Relaxed);
        let fetched = fetch();
        let entry = Arc::new(fetched.entry);
        if fetched.cacheable && self.put_memory(key.clone(), Arc::clone(&entry)) {
            self.put_redis(key, &entry);
        }
        entry
    }

    /// Memory, then Redis; no counting.
    fn lookup(&self, key: &Key) -> Option<Arc<Entry>> {
        let now = Instant::now();
        if let Some(entry) = self.memory.get(key, now) {
            return Some(entry);
        }
        let entry = self.redis.as_ref()?.get(key)?;
        // Keep the Redis entry's remaining lifetime, not a fresh TTL.
        let age = SystemTime::now()
            .duration_since(entry.created)
            .unwrap_or(Duration::ZERO);
        let left = self.settings.ttl.checked_sub(age)?;
        let entry = Arc::new(entry);
        let weight = entry.weight(key);
        self.memory
            .insert(key.clone(), Arc::clone(&entry), weight, now + left, now);
        Some(entry)
    }

    /// Stores in memory; false when caching is off, the TTL is zero or the
    /// entry is over the per-entry cap (then Redis is skipped too).
    fn put_memory(&self, key: Key, entry: Arc<Entry>) -> bool {
        if self.settings.ttl.is_zero() {
            return false;
        }
        let now = Instant::now();
        let weight = entry.weight(&key);
        self.memory
            .insert(key, entry, weight, now + self.settings.ttl, now)
    }

    fn put_redis(&self, key: &Key, entry: &Entry) {
        if let Some(redis) = &self.redis {
            redis.put(key, entry, self.settings.ttl);
        }
    }

    /// Empties memory and this proxy's Redis keys (`DELETE /cache/clear`).
    /// Counters are kept.
    pub fn clear(&self) -> Cleared {
        let entries = self.memory.clear() as u64;
        let redis_keys = self.redis.as_ref().and_then(RedisTier::clear);
        Cleared {
            entries,
            redis_keys,
        }
    }

    /// Empties the memory tier only, for a clear made on another cluster
    /// node, which emptied the Redis tier every node shares. Returns the
    /// entries removed.
    pub fn clear_memory(&self) -> u64 {
        self.memory.clear() as u64
    }

    /// Counters and sizes for `GET /cache/stats`. With Redis configured this
    /// sends a PING (bounded by the Redis timeout, skipped while the breaker
    /// is open) so that `connected` is current.
    pub fn stats(&self) -> Stats {
        let hits = self.hits.load(Ordering::Relaxed);
        let misses = self.misses.load(Ordering::Relaxed);
        let coalesced = self.coalesced.load(Ordering::Relaxed);
        let lookups = hits + misses + coalesced;
        let redis = match &self.redis {
            Some(tier) => {
                tier.ping();
                RedisStats {
                    configured: true,
                    connected: tier.connected(),
                    errors: tier.errors(),
                }
            }
            None => RedisStats {
                configured: self.settings.redis.is_some(),
                connected: false,
                errors: 0,
            },
        };
        Stats {
            enabled: self.is_enabled(),
            entries: self.memory.len() as u64,
            bytes: self.memory.bytes() as u64,
            capacity_bytes: self.memory.capacity() as u64,
            hits,
            misses,
            hit_ratio: if lookups == 0 {
                0.0
            } else {
                hits as f64 / lookups as f64
            },
            evictions: self.memory.evictions(),
            expirations: self.memory.expirations(),
            refused: self.memory.refused(),
            coalesced,
            redis,
        }
    }
}

#[cfg(test)]
mod tests;
