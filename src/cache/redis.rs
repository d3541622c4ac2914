//! The shared tier: Redis, behind a small pool and a circuit breaker,
//! failing open.
//!
//! Redis only saves upstream calls; it must never fail or visibly slow a
//! request. So every operation is bounded by the connect/read/write
//! timeout, every failure is reported as a miss, and after a failure a
//! breaker skips Redis entirely for a back-off period (1 s doubling to
//! 30 s by default) instead of paying the timeout on every request. When
//! the period ends one caller probes with a fresh connection; success
//! closes the breaker, so the tier reconnects by itself.
//!
//! Connections come from the blocking `redis` client (no async runtime)
//! and sit in a `crossbeam_channel::bounded` pool, created lazily up to
//! `pool_size`. A connection that saw an error is dropped, never returned,
//! and the idle ones are dropped with it: after Redis restarts they are
//! all dead, and probing through them one by one would stretch the
//! outage over several back-off periods.
//!
//! Values carry a format prefix (`aiproxy/1\n`), the status, creation
//! time, content type and the request's canonical bytes, so a reader
//! verifies that the entry answers exactly its request and ignores
//! formats it does not know. Keys are `aiproxy:cache:v1:<sha256 hex>`;
//! clearing scans `aiproxy:cache:*` and unlinks, never FLUSHDB, so other
//! data in the same database survives.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};
use redis::{Client, Connection, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisResult};

use super::{Entry, Key, RedisSettings};

/// Prefix of every key this proxy writes (the part `clear` matches).
pub const KEY_PREFIX: &str = "aiproxy:cache:";
/// Format version inside the key; bump with [`VALUE_PREFIX`].
const KEY_VERSION: &str = "v1:";
/// First bytes of every value.
const VALUE_PREFIX: &[u8] = b"aiproxy/1\n";
/// Keys per SCAN round trip in `clear`.
const SCAN_COUNT: u32 = 500;

/// A connection counted against the pool size while it exists.
struct Conn {
    inner: Connection,
    open: Arc<AtomicUsize>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Breaker {
    /// Normal operation.
    Closed,
    /// Skipping Redis until `until`; the next failure waits `backoff × 2`.
    Open {
        until: Instant,
        backoff: Duration,
        since: Instant,
    },
    /// One caller is probing; the others keep skipping.
    Probing { backoff: Duration, since: Instant },
}

/// How a caller may use Redis right now.
#[derive(PartialEq)]
enum Permit {
    Go,
    Probe,
}

pub(crate) struct RedisTier {
    client: Client,
    timeout: Duration,
    pool_size: usize,
    idle_tx: Sender<Conn>,
    idle_rx: Receiver<Conn>,
    open: Arc<AtomicUsize>,
    breaker: Mutex<Breaker>,
    backoff_initial: Duration,
    backoff_max: Duration,
    connected: AtomicBool,
    errors: AtomicU64,
}

/// Why an operation did not reach Redis.
enum Checkout {
    /// Every connection is busy and none came back in time: skip, without
    /// blaming Redis.
    Busy,
    Failed(redis::RedisError),
}

impl RedisTier {
    /// Builds the tier without connecting. Fails only on an address that
    /// cannot be parsed.
    pub(crate) fn new(settings: &RedisSettings) -> Result<Self, String> {
        let info = connection_info(settings)?;
        let client = Client::open(info).map_err(|e| format!("redis address: {e}"))?;
        let pool_size = settings.pool_size.max(1);
        let (idle_tx, idle_rx) = crossbeam_channel::bounded(pool_size);
        Ok(Self {
            client,
            timeout: settings.timeout,
            pool_size,
            idle_tx,
            idle_rx,
            open: Arc::new(AtomicUsize::new(0)),
            breaker: Mutex::new(Breaker::Closed),
            backoff_initial: settings.backoff_initial,
            backoff_max: settings.backoff_max.max(settings.backoff_initial),
            connected: AtomicBool::new(false),
            errors: AtomicU64::new(0),
        })
    }

    /// Whether the last operation reached Redis.
    pub(crate) fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Failed operations and connection attempts since start.
    pub(crate) fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The stored entry for `key`, if Redis answers in time with a value
    /// for exactly this request.
    pub(crate) fn get(&self, key: &Key) -> Option<Entry> {
        let bytes = self
            .run(|c| {
                redis::cmd("GET")
                    .arg(redis_key(key))
                    .query::<Option<Vec<u8>>>(c)
            })
            .flatten()?;
        decode(&bytes, key)
    }

    /// Stores `entry` for `ttl` (millisecond precision). Best effort.
    pub(crate) fn put(&self, key: &Key, entry: &Entry, ttl: Duration) {
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let value = encode(key, entry);
        let _ = self.run(|c| {
            redis::cmd("SET")
                .arg(redis_key(key))
                .arg(value)
                .arg("PX")
                .arg(millis)
                .query::<()>(c)
        });
    }

    /// Unlinks every key under [`KEY_PREFIX`]; returns how many, or `None`
    /// when Redis could not be reached or failed midway.
    pub(crate) fn clear(&self) -> Option<u64> {
        let pattern = format!("{KEY_PREFIX}*");
        self.run(|c| {
            let mut cursor: u64 = 0;
            let mut removed = 0;
            loop {
                let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(SCAN_COUNT)
                    .query(c)?;
                if !keys.is_empty() {
                    removed += redis::cmd("UNLINK").arg(&keys).query::<u64>(c)?;
                }
                if next == 0 {
                    return Ok(removed);
                }
                cursor = next;
            }
        })
    }

    /// A PING, through the breaker, to refresh `connected` for stats.
    pub(crate) fn ping(&self) {
        let _ = self.run(|c| redis::cmd("PING").query::<String>(c));
    }

    /// Runs `op` on a pooled connection unless the breaker is open.
    fn run<T>(&self, op: impl FnOnce(&mut Connection) -> RedisResult<T>) -> Option<T> {
        let permit = self.permit()?;
        let mut conn = match self.checkout() {
            Ok(conn) => conn,
            Err(Checkout::Busy) => {
                if permit == Permit::Probe {
                    self.reopen_now();
                }
                return None;
            }
            Err(Checkout::Failed(err)) => {
                self.failed(&err);
                return None;
            }
        };
        match op(&mut conn.inner) {
            Ok(value) => {
                // A full pool only happens after a drain raced us: drop it.
                let _ = self.idle_tx.try_send(conn);
                self.succeeded();
                Some(value)
            }
            Err(err) => {
                drop(conn);
                self.failed(&err);
                None
            }
        }
    }

    fn checkout(&self) -> Result<Conn, Checkout> {
        if let Ok(conn) = self.idle_rx.try_recv() {
            return Ok(conn);
        }
        let reserved = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.pool_size).then_some(n + 1)
            })
            .is_ok();
        if !reserved {
            return self
                .idle_rx
                .recv_timeout(self.timeout)
                .map_err(|_| Checkout::Busy);
        }
        // From here the slot is ours; `Conn`'s drop gives it back.
        let connect = || -> RedisResult<Connection> {
            let conn = self.client.get_connection_with_timeout(self.timeout)?;
            conn.set_read_timeout(Some(self.timeout))?;
            conn.set_write_timeout(Some(self.timeout))?;
            Ok(conn)
        };
        match connect() {
            Ok(inner) => Ok(Conn {
                inner,
                open: Arc::clone(&self.open),
            }),
            Err(err) => {
                self.open.fetch_sub(1, Ordering::Relaxed);
                Err(Checkout::Failed(err))
            }
        }
    }

    fn lock_breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn permit(&self) -> Option<Permit> {
        let mut breaker = self.lock_breaker();
        match *breaker {
            Breaker::Closed => Some(Permit::Go),
            Breaker::Open {
                until,
                backoff,
                since,
            } if Instant::now() >= until => {
                *breaker = Breaker::Probing { backoff, since };
                Some(Permit::Probe)
            }
            Breaker::Open { .. } | Breaker::Probing { .. } => None,
        }
    }

    /// A probe that never reached Redis: let the next caller probe.
    fn reopen_now(&self) {
        let mut breaker = self.lock_breaker();
        if let Breaker::Probing { backoff, since } = *breaker {
            *breaker = Breaker::Open {
                until: Instant::now(),
                backoff,
                since,
            };
        }
    }

    fn succeeded(&self) {
        self.connected.store(true, Ordering::Relaxed);
        let mut breaker = self.lock_breaker();
        if let Breaker::Probing { since, .. } | Breaker::Open { since, .. } = *breaker {
            *breaker = Breaker::Closed;
            drop(breaker);
            crate::log::info(&format!(
                "redis cache tier recovered after {:.1}s",
                since.elapsed().as_secs_f64()
            ));
        }
    }

    /// A read timeout surfaces as EAGAIN ("Resource temporarily
    /// unavailable"); say what it means.
    fn describe(&self, err: &redis::RedisError) -> String {
        if err.is_timeout() {
            format!("no answer within {} ms", self.timeout.as_millis())
        } else {
            err.to_string()
        }
    }

    fn failed(&self, err: &redis::RedisError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.connected.store(false, Ordering::Relaxed);
        // The idle connections most likely share the fate of this one.
        while let Ok(conn) = self.idle_rx.try_recv() {
            drop(conn);
        }
        let now = Instant::now();
        let mut breaker = self.lock_breaker();
        match *breaker {
            Breaker::Closed => {
                *breaker = Breaker::Open {
                    until: now + self.backoff_initial,
                    backoff: self.backoff_initial,
                    since: now,
                };
                drop(breaker);
                crate::log::warn(&format!(
                    "redis cache tier unavailable, serving without it for {:.1}s: {}",
                    self.backoff_initial.as_secs_f64(),
                    self.describe(err)
                ));
            }
            Breaker::Probing { backoff, since } => {
                let backoff = (backoff * 2).min(self.backoff_max);
                *breaker = Breaker::Open {
                    until: now + backoff,
                    backoff,
                    since,
                };
                drop(breaker);
                crate::log::debug(&format!(
                    "redis cache tier still unavailable, next try in {:.1}s: {}",
                    backoff.as_secs_f64(),
                    self.describe(err)
                ));
            }
            // Another operation already opened it.
            Breaker::Open { .. } => {}
        }
    }
}

/// Accepts `host:port` (as `--redis-addr` and `REDIS_ADDR` give it) or a
/// `redis://` URL; password and db from the settings win over the URL's.
fn connection_info(settings: &RedisSettings) -> Result<ConnectionInfo, String> {
    let addr = settings.addr.trim();
    let info = if addr.contains("://") {
        addr.into_connection_info()
            .map_err(|e| format!("redis address {addr:?}: {e}"))?
    } else {
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| format!("redis address {addr:?} is not host:port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("redis address {addr:?} has a bad port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        ConnectionAddr::Tcp(host.to_owned(), port)
            .into_connection_info()
            .map_err(|e| format!("redis address {addr:?}: {e}"))?
    };
    let mut redis = info.redis_settings().clone().set_skip_set_lib_name();
    if let Some(password) = &settings.password {
        redis = redis.set_password(password.expose());
    }
    if let Some(db) = settings.db {
        redis = redis.set_db(db);
    }
    Ok(info.set_redis_settings(redis))
}

fn redis_key(key: &Key) -> String {
    format!("{KEY_PREFIX}{KEY_VERSION}{}", key.hex())
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `VALUE_PREFIX`, status u16, created unix ns u64, content type (u16
/// length), canonical request (u32 length), body (the rest); big-endian.
fn encode(key: &Key, entry: &Entry) -> Vec<u8> {
    let ct = entry.content_type.as_bytes();
    let ct = &ct[..ct.len().min(usize::from(u16::MAX))];
    let canonical = key.canonical();
    let mut out =
        Vec::with_capacity(VALUE_PREFIX.len() + 16 + ct.len() + canonical.len() + entry.body.len());
    out.extend_from_slice(VALUE_PREFIX);
    out.extend_from_slice(&entry.status.to_be_bytes());
    out.extend_from_slice(&unix_nanos(entry.created).to_be_bytes());
    out.extend_from_slice(&(ct.len() as u16).to_be_bytes());
    out.extend_from_slice(ct);
    out.extend_from_slice(
        &u32::try_from(canonical.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(canonical);
    out.extend_from_slice(&entry.body);
    out
}

/// The entry in `bytes` if it is in our format and answers `key`.
fn decode(bytes: &[u8], key: &Key) -> Option<Entry> {
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = rest.split_at_checked(n)?;
        *rest = tail;
        Some(head)
    }
    let mut rest = bytes.strip_prefix(VALUE_PREFIX)?;
    let status = u16::from_be_bytes(take(&mut rest, 2)?.try_into().ok()?);
    let created = u64::from_be_bytes(take(&mut rest, 8)?.try_into().ok()?);
    let ct_len = u16::from_be_bytes(take(&mut rest, 2)?.try_into().ok()?);
    let content_type = std::str::from_utf8(take(&mut rest, usize::from(ct_len))?).ok()?;
    let canon_len = u32::from_be_bytes(take(&mut rest, 4)?.try_into().ok()?);
    let canonical = take(&mut rest, usize::try_from(canon_len).ok()?)?;
    if canonical != key.canonical() {
        return None;
    }
    Some(Entry {
        status,
        content_type: content_type.to_owned(),
        body: rest.to_vec(),
        created: UNIX_EPOCH + Duration::from_nanos(created),
        retry_after: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Protocol;
    use crate::providers::ProviderKind;

    fn key(body: &str) -> Key {
        Key::new(ProviderKind::Mock, "m", Protocol::OpenAi, body.as_bytes()).unwrap()
    }

    #[test]
    fn values_round_trip_and_verify_the_request() {
        let k = key(r#"{"a":1}"#);
        let entry = Entry {
            status: 200,
            content_type: "application/json".into(),
            body: b"{\"ok\":true}".to_vec(),
            created: UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789),
            retry_after: None,
        };
        let bytes = encode(&k, &entry);
        assert!(bytes.starts_with(b"aiproxy/1\n"));
        let back = decode(&bytes, &k).expect("decodes");
        assert_eq!(back.status, 200);
        assert_eq!(back.content_type, "application/json");
        assert_eq!(back.body, entry.body);
        assert_eq!(back.created, entry.created);
        // Same digest, different request: not an answer.
        let forged = Key::forged(*k.hash(), b"other");
        assert!(decode(&bytes, &forged).is_none());
        // Truncations and foreign formats are misses, never panics.
        for n in 0..bytes.len() - entry.body.len() {
            assert!(decode(&bytes[..n], &k).is_none(), "prefix {n}");
        }
        assert!(decode(b"aiproxy/2\nxxxxxxxxxxxxxxxx", &k).is_none());
    }

    #[test]
    fn redis_keys_are_prefixed_and_versioned() {
        let k = key("{}");
        let rk = redis_key(&k);
        assert!(rk.starts_with("aiproxy:cache:v1:"));
        assert_eq!(rk.len(), "aiproxy:cache:v1:".len() + 64);
    }

    #[test]
    fn addresses_parse_as_host_port_or_url() {
        let mut s = RedisSettings::new("127.0.0.1:6390");
        s.password = Some(crate::config::Secret::new("pw"));
        s.db = Some(3);
        let info = connection_info(&s).unwrap();
        assert_eq!(info.addr(), &ConnectionAddr::Tcp("127.0.0.1".into(), 6390));
        assert_eq!(info.redis_settings().password(), Some("pw"));
        assert_eq!(info.redis_settings().db(), 3);
        let url = connection_info(&RedisSettings::new("redis://h:7000/2")).unwrap();
        assert_eq!(url.addr(), &ConnectionAddr::Tcp("h".into(), 7000));
        assert_eq!(url.redis_settings().db(), 2);
        assert!(connection_info(&RedisSettings::new("nohost")).is_err());
        assert!(connection_info(&RedisSettings::new("h:notaport")).is_err());
    }

    #[test]
    fn an_unreachable_redis_fails_fast_and_opens_the_breaker() {
        // A port nothing listens on: refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let tier = RedisTier::new(&RedisSettings::new(format!("127.0.0.1:{port}"))).unwrap();
        let k = key("{}");
        assert!(tier.get(&k).is_none());
        assert_eq!(tier.errors(), 1);
        assert!(!tier.connected());
        // The breaker is open: no further attempts, no further errors.
        for _ in 0..10 {
            assert!(tier.get(&k).is_none());
        }
        assert_eq!(tier.errors(), 1);
        assert_eq!(tier.open.load(Ordering::Relaxed), 0, "no leaked slots");
    }
}
