//! The Redis tier against a real `redis-server` on a free loopback port:
//! sharing between instances, outages (kill, CLIENT PAUSE), recovery, and
//! a clear that leaves foreign keys alone.
//!
//! Needs Debian's `redis-server` on PATH (`apt-get install -y
//! redis-server`); each test starts its own server and kills it on drop.

#[path = "common/ports.rs"]
mod ports;
#[path = "common/redis_server.rs"]
mod redis_server;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use aiproxy::cache::{Cache, Entry, Fetched, Key, Outcome, RedisSettings, Settings};
use aiproxy::config::Secret;
use aiproxy::protocol::Protocol;
use aiproxy::providers::ProviderKind;
use redis_server::RedisServer;

/// The Redis timeout in the outage tests (the production default).
const TIMEOUT: Duration = Duration::from_millis(100);
/// The Redis timeout where a slow moment on a loaded test machine must
/// not turn an expected hit into a miss.
const PATIENT: Duration = Duration::from_secs(2);
/// "No call blocks longer than about twice the timeout": by design a call
/// waits at most one connect plus one read (2 × 100 ms); the other 200 ms
/// are room for a debug build on two cores shared with other tests.
const FAST: Duration = Duration::from_millis(400);

fn settings(redis: &RedisServer) -> Settings {
    settings_with(redis, PATIENT)
}

fn settings_with(redis: &RedisServer, timeout: Duration) -> Settings {
    let mut r = RedisSettings::new(redis.addr());
    r.timeout = timeout;
    r.backoff_initial = Duration::from_millis(200);
    r.backoff_max = Duration::from_millis(800);
    Settings {
        max_bytes: 1 << 20,
        max_entry_bytes: 1 << 16,
        shards: 4,
        redis: Some(r),
        ..Settings::default()
    }
}

fn key(text: &str) -> Key {
    let body = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{text}"}}]}}"#);
    Key::new(ProviderKind::Mock, "m", Protocol::OpenAi, body.as_bytes()).unwrap()
}

fn answer(text: &str) -> Fetched {
    Fetched {
        entry: Entry::new(200, "application/json", text.as_bytes().to_vec()),
        cacheable: true,
    }
}

fn no_fetch() -> Fetched {
    panic!("this lookup must be answered by Redis")
}

/// Retries `f` for up to 10 s until it returns true.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `f` and fails if it took longer than [`FAST`].
fn fast<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let value = f();
    let took = start.elapsed();
    assert!(took < FAST, "{what} took {took:?}");
    if took > 2 * TIMEOUT {
        eprintln!("note: {what} took {took:?} (over 2 × timeout, within slack)");
    }
    value
}

#[test]
fn two_instances_share_hits_through_redis() {
    let redis = RedisServer::start(&[]);
    let a = Cache::new(settings(&redis));
    let b = Cache::new(settings(&redis));
    let k = key("shared");

    let (first, outcome) = a.get_or_fetch(&k, || answer("from upstream"));
    assert_eq!(outcome, Outcome::Miss);
    let (second, outcome) = b.get_or_fetch(&k, no_fetch);
    assert_eq!(outcome, Outcome::Hit);
    assert_eq!(
        *first, *second,
        "identical status, type, body and creation time"
    );
    // B filled its memory: the next hit is local even with Redis gone.
    drop(redis);
    assert!(Arc::ptr_eq(&b.get(&k).unwrap(), &b.get(&k).unwrap()));
    let stats = b.stats();
    assert_eq!((stats.hits, stats.misses, stats.entries), (3, 0, 1));
}

#[test]
fn stored_layout_is_prefixed_versioned_and_expires() {
    let redis = RedisServer::start(&[]);
    let mut s = settings(&redis);
    s.ttl = Duration::from_secs(60);
    let cache = Cache::new(s);
    let k = key("layout");
    cache.put(k.clone(), answer("x").entry);
    let mut con = redis.client().unwrap();
    let name = format!("aiproxy:cache:v1:{}", k.hex());
    let value: Vec<u8> = redis::cmd("GET").arg(&name).query(&mut con).unwrap();
    assert!(value.starts_with(b"aiproxy/1\n"));
    let ttl: i64 = redis::cmd("PTTL").arg(&name).query(&mut con).unwrap();
    assert!((50_000..=60_000).contains(&ttl), "{ttl}");
    // A value that is not ours (or for another request) is a miss.
    redis::cmd("SET")
        .arg(&name)
        .arg("garbage")
        .query::<()>(&mut con)
        .unwrap();
    let fresh = Cache::new(settings(&redis));
    assert!(fresh.get(&k).is_none());
}

#[test]
fn killed_redis_fails_open_then_hits_resume_after_restart() {
    let mut redis = RedisServer::start(&[]);
    let a = Cache::new(settings_with(&redis, TIMEOUT));
    let b = Cache::new(settings_with(&redis, TIMEOUT));
    eventually("a Redis hit before the outage", || {
        a.put(key("before"), answer("before").entry);
        b.get(&key("before")).is_some()
    });
    assert!(b.stats().redis.connected);

    redis.kill();
    // Every call still answers, from memory or the fetch, and fast.
    for i in 0..50 {
        let k = key(&format!("during {i}"));
        let (entry, outcome) = fast("get_or_fetch during outage", || {
            a.get_or_fetch(&k, || answer("upstream"))
        });
        assert_eq!(
            (outcome, entry.body.as_slice()),
            (Outcome::Miss, &b"upstream"[..])
        );
        let (_, outcome) = fast("memory hit during outage", || a.get_or_fetch(&k, no_fetch));
        assert_eq!(outcome, Outcome::Hit);
        fast("put during outage", || b.put(k.clone(), answer("x").entry));
    }
    let stats = fast("stats during outage", || a.stats());
    assert!(!stats.redis.connected);
    assert!(stats.redis.errors > 0);
    assert!(stats.redis.configured);

    redis.restart();
    // After the breaker's back-off both instances reconnect by themselves.
    let k = key("after");
    eventually("Redis hits after the restart", || {
        a.put(k.clone(), answer("after").entry);
        b.get(&k).is_some_and(|entry| entry.body == b"after")
    });
    assert!(a.stats().redis.connected && b.stats().redis.connected);
}

#[test]
fn client_pause_makes_operations_fail_fast() {
    let redis = RedisServer::start(&[]);
    let cache = Cache::new(settings_with(&redis, TIMEOUT));
    let other = Cache::new(settings_with(&redis, TIMEOUT));
    eventually("pooled connections are warm", || {
        cache.put(key("warm"), answer("warm").entry);
        other.get(&key("warm")).is_some()
    });

    let mut con = redis.client().unwrap();
    redis::cmd("CLIENT")
        .arg(&["PAUSE", "2000", "ALL"])
        .query::<()>(&mut con)
        .unwrap();
    let paused_at = Instant::now();
    let mut calls = 0;
    while paused_at.elapsed() < Duration::from_millis(1500) {
        let k = key(&format!("paused {calls}"));
        let (_, outcome) = fast("get_or_fetch while paused", || {
            other.get_or_fetch(&k, || answer("upstream"))
        });
        assert_eq!(outcome, Outcome::Miss);
        fast("put while paused", || cache.put(k, answer("x").entry));
        calls += 1;
    }
    assert!(calls > 10, "calls were not fast: {calls}");
    assert!(other.stats().redis.errors > 0);
    // Once the pause is over, Redis is used again.
    let k = key("resumed");
    eventually("Redis used again after the pause", || {
        cache.put(k.clone(), answer("resumed").entry);
        Cache::new(settings(&redis)).get(&k).is_some()
    });
}

#[test]
fn clear_removes_only_this_proxys_keys() {
    let redis = RedisServer::start(&[]);
    let mut con = redis.client().unwrap();
    for foreign in ["other:key", "aiproxy:ratelimit:client-1", "aiproxy"] {
        redis::cmd("SET")
            .arg(foreign)
            .arg("keep me")
            .query::<()>(&mut con)
            .unwrap();
    }
    let a = Cache::new(settings(&redis));
    for i in 0..700 {
        a.put(key(&i.to_string()), answer("x").entry);
    }
    let cleared = a.clear();
    assert_eq!(cleared.redis_keys, Some(700));
    assert_eq!(cleared.entries, 700);
    let size: u64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(size, 3);
    for foreign in ["other:key", "aiproxy:ratelimit:client-1", "aiproxy"] {
        let v: String = redis::cmd("GET").arg(foreign).query(&mut con).unwrap();
        assert_eq!(v, "keep me");
    }
    let b = Cache::new(settings(&redis));
    assert!(b.get(&key("1")).is_none());
}

#[test]
fn password_and_database_are_used() {
    let redis = RedisServer::start(&["--requirepass", "s3cret"]);
    let with = |password: Option<&str>, db: i64| {
        let mut s = settings(&redis);
        if let Some(r) = s.redis.as_mut() {
            r.password = password.map(Secret::new);
            r.db = Some(db);
        }
        Cache::new(s)
    };
    let a = with(Some("s3cret"), 1);
    a.put(key("p"), answer("p").entry);
    assert!(with(Some("s3cret"), 1).get(&key("p")).is_some());
    assert!(with(Some("s3cret"), 2).get(&key("p")).is_none(), "other db");
    let wrong = Cache::new({
        let mut s = settings_with(&redis, TIMEOUT);
        if let Some(r) = s.redis.as_mut() {
            r.password = Some(Secret::new("nope"));
        }
        s
    });
    let (_, outcome) = fast("wrong password", || {
        wrong.get_or_fetch(&key("p"), || answer("up"))
    });
    assert_eq!(outcome, Outcome::Miss);
    let stats = wrong.stats();
    assert!(!stats.redis.connected && stats.redis.errors > 0);
}
