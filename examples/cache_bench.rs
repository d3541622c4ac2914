//! Cost of the cache's hot paths, for the README. Not a test: it prints
//! numbers and asserts nothing about time.
//!
//!     cargo run --example cache_bench            # debug build: pessimistic
//!     ITERS=2000000 cargo run --example cache_bench
//!
//! A hit is: build the key (parse + canonicalise + SHA-256 of the body),
//! then a shard lock, a map lookup and an `Arc` clone; the body is never
//! copied (`cache::tests::miss_then_hit_returns_the_same_arc` checks the
//! pointer).

use std::sync::Arc;
use std::thread;
use std::time::Instant;

use aiproxy::cache::{Cache, Entry, Fetched, Key, Settings};
use aiproxy::protocol::Protocol;
use aiproxy::providers::ProviderKind;

fn body(i: usize) -> String {
    let prompt = "Summarise the following text in one sentence. ".repeat(20);
    format!(
        r#"{{"model":"gpt-4o-mini","temperature":0,"messages":[{{"role":"system","content":"You are terse."}},{{"role":"user","content":"{prompt} #{i}"}}]}}"#
    )
}

fn key(body: &str) -> Key {
    Key::new(
        ProviderKind::OpenAiCustom,
        "gpt-4o-mini",
        Protocol::OpenAi,
        body.as_bytes(),
    )
    .expect("object body")
}

fn per_op(label: &str, iters: usize, f: impl Fn(usize)) {
    let start = Instant::now();
    for i in 0..iters {
        f(i);
    }
    let ns = start.elapsed().as_nanos() as f64 / iters as f64;
    println!("{label:<44} {ns:>10.0} ns/op");
}

fn main() {
    let iters: usize = std::env::var("ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let workers = 4;
    let cache = Arc::new(Cache::new(Settings {
        shards: Settings::shards_for_workers(workers),
        ..Settings::default()
    }));
    let answer = vec![b'x'; 2048];
    let keys: Vec<Key> = (0..1024).map(|i| key(&body(i))).collect();
    for k in &keys {
        cache.put(
            k.clone(),
            Entry::new(200, "application/json", answer.clone()),
        );
    }
    let raw = body(7);
    println!(
        "body {} bytes, answer {} bytes, {iters} iterations",
        raw.len(),
        answer.len()
    );

    per_op(
        "Key::new (parse, canonicalise, SHA-256)",
        iters / 10,
        |_| {
            std::hint::black_box(key(&raw));
        },
    );
    per_op("Cache::get, memory hit (prebuilt key)", iters, |i| {
        std::hint::black_box(cache.get(&keys[i & 1023]));
    });
    per_op("Cache::get_or_fetch, memory hit", iters, |i| {
        std::hint::black_box(cache.get_or_fetch(&keys[i & 1023], || Fetched {
            entry: Entry::new(500, "text/plain", Vec::new()),
            cacheable: false,
        }));
    });
    per_op("Key::new + Cache::get (a whole lookup)", iters / 10, |_| {
        std::hint::black_box(cache.get(&key(&raw)));
    });

    // Memory hits from `workers` threads at once: shard locks contend
    // only when two lookups land in the same shard.
    let start = Instant::now();
    let handles: Vec<_> = (0..workers)
        .map(|t| {
            let (cache, keys) = (Arc::clone(&cache), keys.clone());
            thread::spawn(move || {
                for i in 0..iters {
                    std::hint::black_box(cache.get(&keys[(i + t * 257) & 1023]));
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    let total = (iters * workers) as f64;
    println!(
        "{:<44} {:>10.0} hits/s",
        format!("Cache::get, {workers} threads"),
        total / start.elapsed().as_secs_f64()
    );
    let stats = cache.stats();
    println!(
        "entries {} bytes {} capacity {}",
        stats.entries, stats.bytes, stats.capacity_bytes
    );
}
