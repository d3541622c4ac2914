//! Behaviour of [`Cache`] without Redis: hits, coalescing, errors, panics.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use super::*;
use crate::protocol::Protocol;
use crate::providers::ProviderKind;

fn key(text: &str) -> Key {
    let body = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{text}"}}]}}"#);
    Key::new(ProviderKind::Mock, "m", Protocol::OpenAi, body.as_bytes()).unwrap()
}

fn ok(body: &str) -> Fetched {
    Fetched {
        entry: Entry::new(200, "application/json", body.as_bytes().to_vec()),
        cacheable: true,
    }
}

fn small_cache() -> Cache {
    Cache::new(Settings {
        max_bytes: 1 << 20,
        max_entry_bytes: 1 << 16,
        shards: 4,
        coalesce_timeout: Duration::from_secs(10),
        ..Settings::default()
    })
}

#[test]
fn miss_then_hit_returns_the_same_arc() {
    let cache = small_cache();
    let k = key("a");
    let (first, outcome) = cache.get_or_fetch(&k, || ok("answer"));
    assert_eq!(outcome, Outcome::Miss);
    let (second, outcome) = cache.get_or_fetch(&k, || panic!("must not fetch on a hit"));
    assert_eq!(outcome, Outcome::Hit);
    assert!(
        Arc::ptr_eq(&first, &second),
        "a hit clones the Arc, not the body"
    );
    assert!(Arc::ptr_eq(&first, &cache.get(&k).unwrap()));
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.entries), (2, 1, 1));
    assert!((stats.hit_ratio - 2.0 / 3.0).abs() < 1e-9);
    assert_eq!(stats.bytes as usize, cache.size_bytes());
    assert_eq!(cache.size_bytes(), first.weight(&k));
}

#[test]
fn a_forged_digest_never_hits() {
    let cache = small_cache();
    let real = key("a");
    cache.put(real.clone(), ok("answer").entry);
    let forged = Key::forged(*real.hash(), b"some other request");
    assert!(cache.get(&forged).is_none());
    let (entry, outcome) = cache.get_or_fetch(&forged, || ok("other"));
    assert_eq!(
        (outcome, entry.body.as_slice()),
        (Outcome::Miss, &b"other"[..])
    );
    assert_eq!(cache.get(&real).unwrap().body, b"answer");
}

#[test]
fn errors_are_delivered_but_not_stored() {
    let cache = small_cache();
    let k = key("a");
    let (entry, outcome) = cache.get_or_fetch(&k, || Fetched {
        entry: Entry::new(502, "application/json", b"{\"error\":1}".to_vec()),
        cacheable: false,
    });
    assert_eq!((entry.status, outcome), (502, Outcome::Miss));
    assert!(cache.get(&k).is_none());
    assert_eq!(cache.stats().entries, 0);
}

#[test]
fn disabled_cache_bypasses_and_stores_nothing() {
    let cache = small_cache();
    let k = key("a");
    cache.put(k.clone(), ok("x").entry);
    cache.set_enabled(false);
    assert!(!cache.is_enabled());
    assert!(cache.get(&k).is_none());
    let (entry, outcome) = cache.get_or_fetch(&k, || ok("fresh"));
    assert_eq!(
        (outcome, entry.body.as_slice()),
        (Outcome::Bypass, &b"fresh"[..])
    );
    cache.set_enabled(true);
    assert_eq!(
        cache.get(&k).unwrap().body,
        b"x",
        "entries survive a disable"
    );
    assert!(!cache.stats().redis.configured);
}

#[test]
fn zero_ttl_and_oversized_entries_are_not_stored() {
    let cache = Cache::new(Settings {
        ttl: Duration::ZERO,
        ..Settings::default()
    });
    let k = key("a");
    cache.put(k.clone(), ok("x").entry);
    assert!(cache.get(&k).is_none());

    let cache = small_cache();
    cache.put(k.clone(), Entry::new(200, "text/plain", vec![0; 1 << 17]));
    assert!(cache.get(&k).is_none(), "over max_entry_bytes");
    assert_eq!(cache.stats().refused, 1);
    assert_eq!(cache.take_refused(), 1);
    assert_eq!(cache.take_refused(), 0, "handed out once");
}

#[test]
fn clear_empties_memory() {
    let cache = small_cache();
    for i in 0..10 {
        cache.put(key(&i.to_string()), ok("x").entry);
    }
    let cleared = cache.clear();
    assert_eq!(
        cleared,
        Cleared {
            entries: 10,
            redis_keys: None
        }
    );
    assert_eq!((cache.stats().entries, cache.size_bytes()), (0, 0));
}

#[test]
fn stats_serialise_to_the_spec_shape() {
    let cache = small_cache();
    let json = serde_json::to_value(cache.stats()).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = vec![
        "enabled",
        "entries",
        "bytes",
        "capacity_bytes",
        "hits",
        "misses",
        "hit_ratio",
        "evictions",
        "expirations",
        "coalesced",
        "refused",
        "redis",
    ];
    expected.sort_unstable();
    let mut keys = keys;
    keys.sort_unstable();
    assert_eq!(keys, expected);
    assert_eq!(
        json["redis"],
        serde_json::json!({"configured": false, "connected": false, "errors": 0})
    );
    assert_eq!(json["capacity_bytes"], 1 << 20);
    assert_eq!(json["hit_ratio"], 0.0);
}

/// 20 threads ask for the same key while the fetch is slow: one fetch,
/// one shared `Arc`.
#[test]
fn concurrent_identical_requests_make_one_fetch() {
    let cache = Arc::new(small_cache());
    let calls = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(20));
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let (cache, calls, start) = (cache.clone(), calls.clone(), start.clone());
            thread::spawn(move || {
                let k = key("same");
                start.wait();
                cache.get_or_fetch(&k, || {
                    calls.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(300));
                    ok("slow answer")
                })
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let first = &results[0].0;
    assert!(results.iter().all(|(e, _)| Arc::ptr_eq(e, first)));
    let misses = results.iter().filter(|(_, o)| *o == Outcome::Miss).count();
    assert_eq!(misses, 1);
    // Late starters may find the stored entry instead of the flight.
    let stats = cache.stats();
    assert_eq!(stats.misses, 1);
    assert_eq!(stats.hits + stats.coalesced, 19);
    assert_eq!(cache.flights.len(), 0, "flight retired");
}

#[test]
fn an_error_reaches_every_waiter_and_is_not_stored() {
    let cache = Arc::new(small_cache());
    let calls = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (cache, calls, start) = (cache.clone(), calls.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                cache.get_or_fetch(&key("e"), || {
                    calls.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(300));
                    Fetched {
                        entry: Entry::new(500, "application/json", b"boom".to_vec()),
                        cacheable: false,
                    }
                })
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap().0.status, 500);
    }
    // Arrivals after the flight landed fetch again (nothing was stored),
    // but the 300 ms window makes that all but impossible for a barrier
    // start; the invariant that matters is "not stored".
    assert!(calls.load(Ordering::SeqCst) >= 1);
    assert!(cache.get(&key("e")).is_none());
}

#[test]
fn a_panicking_fetch_wakes_the_waiters() {
    let cache = Arc::new(small_cache());
    let k = key("p");
    let (entered_tx, entered_rx) = crossbeam_channel::bounded(1);
    let leader = {
        let (cache, k) = (cache.clone(), k.clone());
        thread::spawn(move || {
            catch_unwind(AssertUnwindSafe(|| {
                cache.get_or_fetch(&k, || {
                    let _ = entered_tx.send(());
                    thread::sleep(Duration::from_millis(200));
                    panic!("upstream handler bug");
                })
            }))
            .is_err()
        })
    };
    entered_rx.recv().unwrap();
    let waiters: Vec<_> = (0..5)
        .map(|_| {
            let (cache, k) = (cache.clone(), k.clone());
            thread::spawn(move || {
                let started = std::time::Instant::now();
                let (entry, outcome) = cache.get_or_fetch(&k, || ok("own"));
                (entry, outcome, started.elapsed())
            })
        })
        .collect();
    assert!(
        leader.join().unwrap(),
        "the panic reaches the leader's caller"
    );
    for w in waiters {
        let (entry, _, waited) = w.join().unwrap();
        assert_eq!(entry.body, b"own");
        // Woken by the guard, far before the 10 s coalesce timeout.
        assert!(waited < Duration::from_secs(5), "{waited:?}");
    }
    assert_eq!(cache.flights.len(), 0);
}

#[test]
fn waiters_fetch_themselves_after_the_coalesce_timeout() {
    let cache = Arc::new(Cache::new(Settings {
        coalesce_timeout: Duration::from_millis(50),
        ..Settings::default()
    }));
    let k = key("t");
    let (entered_tx, entered_rx) = crossbeam_channel::bounded(1);
    let leader = {
        let (cache, k) = (cache.clone(), k.clone());
        thread::spawn(move || {
            cache.get_or_fetch(&k, || {
                let _ = entered_tx.send(());
                thread::sleep(Duration::from_millis(1000));
                ok("slow")
            })
        })
    };
    entered_rx.recv().unwrap();
    let (entry, outcome) = cache.get_or_fetch(&k, || ok("impatient"));
    assert_eq!(
        (outcome, entry.body.as_slice()),
        (Outcome::Miss, &b"impatient"[..])
    );
    assert_eq!(leader.join().unwrap().1, Outcome::Miss);
}

#[test]
fn default_settings_are_the_default_configuration() {
    use crate::config::{DEFAULT_CACHE_MAX_SIZE_MB, DEFAULT_CACHE_TTL, DEFAULT_UPSTREAM_TIMEOUT};
    let s = Settings::default();
    let max_bytes = usize::try_from(DEFAULT_CACHE_MAX_SIZE_MB << 20).unwrap();
    assert_eq!((s.max_bytes, s.ttl), (max_bytes, DEFAULT_CACHE_TTL));
    assert_eq!(s.max_entry_bytes, max_bytes / MAX_ENTRY_SHARE);
    assert_eq!(s.coalesce_timeout, DEFAULT_UPSTREAM_TIMEOUT);
    assert!(s.enabled && s.redis.is_none());
}
