//! The dashboard's JSON: a ring of snapshots and what is derived from it.
//!
//! Rates are computed here, not in the page: every sample interval the
//! sampler thread pushes a [`Snapshot`] of the cumulative figures, and
//! [`render`] turns differences between snapshots into per-second rates,
//! error ratios and latency quantiles (estimated from histogram bucket
//! deltas like PromQL's `histogram_quantile`). The page gets five minutes
//! of history on its first poll.
//!
//! Document shape (`null` where a figure has no data or a feature is off):
//!
//! ```text
//! { "version", "uptime_seconds", "now_ms", "window_seconds",
//!   "requests":  { "total", "client_errors", "server_errors", "active",
//!                  "per_second", "error_ratio" },            // error = 5xx
//!   "latency":   { "p50", "p95", "p99", "count" },           // seconds, recent window
//!   "providers": [ { "provider", "requests", "errors", "error_ratio",
//!                    "per_second", "errors_by_kind": {kind: n},
//!                    "tokens": {"prompt", "completion"},
//!                    "latency": {"p50", "p95"}, "ttft": {"p50", "p95"} } ],
//!   "tokens":    { "prompt", "completion", "total", "per_second" },
//!   "cache":     { "hits", "misses", "hit_ratio", "size_bytes",
//!                  "redis_up", "redis_errors" },
//!   "websocket": { "connections" } | null,
//!   "instances": [ { "provider", "instance", "healthy" } ] | null,
//!   "cluster":   { "alive", "suspect", "dead", "settings_version",
//!                  "nodes": [ { "node_id", "state", "last_heartbeat_ms_ago" } ] } | null,
//!   "history":   { "interval_seconds", "t": [unix ms], "rps", "error_ratio",
//!                  "p50", "p95", "p99", "active", "tokens_per_second",
//!                  "cache_hit_ratio", "providers": { name: { "rps", "eps" } } } }
//! ```

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::histogram::{self, Counts, quantile};
use super::{ErrorKind, HISTORY_LEN, Metrics, NodeLabels, NodeState};
use crate::providers::ProviderKind;

/// Window of the headline rates and quantiles.
pub(super) const WINDOW: Duration = Duration::from_secs(60);
/// Samples over which each history point's quantiles are taken (smooths
/// the latency lines).
const QUANTILE_SPAN: usize = 5;

#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ProviderSnap {
    requests: u64,
    errors: u64,
    tokens: u64,
}

/// Cumulative figures at one instant.
#[derive(Clone, Debug)]
pub(super) struct Snapshot {
    at: Instant,
    unix_ms: u64,
    http_total: u64,
    http_5xx: u64,
    active: i64,
    latency: Counts,
    providers: [ProviderSnap; 6],
    cache_hits: u64,
    cache_misses: u64,
}

/// The ring of the last [`HISTORY_LEN`] snapshots.
#[derive(Debug, Default)]
pub(super) struct History {
    ring: VecDeque<Snapshot>,
}

impl History {
    pub(super) fn push(&mut self, snap: Snapshot) {
        if self.ring.len() == HISTORY_LEN {
            self.ring.pop_front();
        }
        self.ring.push_back(snap);
    }
}

impl Metrics {
    /// Takes one dashboard history sample now. The sampler thread calls
    /// this every [`MetricsOptions::sample_interval`](super::MetricsOptions::sample_interval).
    pub fn sample(&self) {
        let snap = self.snapshot_at(Instant::now());
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(snap);
    }

    /// The JSON document the dashboard polls: totals, rates and latency
    /// quantiles over the recent window, per-provider figures, cache,
    /// optional sections and the history ring; the module documentation
    /// lists the fields.
    pub fn summary(&self) -> Value {
        self.summary_at(Instant::now())
    }

    pub(super) fn summary_at(&self, at: Instant) -> Value {
        let now = self.snapshot_at(at);
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        render(self, &history, &now)
    }

    pub(super) fn snapshot_at(&self, at: Instant) -> Snapshot {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Snapshot {
            at,
            unix_ms,
            http_total: self.http_total.load(Ordering::Relaxed),
            http_5xx: self.http_5xx.load(Ordering::Relaxed),
            active: self.http_active.get(),
            latency: self.http_latency.counts(),
            providers: std::array::from_fn(|i| {
                let s = &self.providers[i];
                ProviderSnap {
                    requests: s.requests.load(Ordering::Relaxed),
                    errors: s.errors.load(Ordering::Relaxed),
                    tokens: s.prompt_tokens.load(Ordering::Relaxed)
                        + s.completion_tokens.load(Ordering::Relaxed),
                }
            }),
            cache_hits: self.cache_hits.get(),
            cache_misses: self.cache_misses.get(),
        }
    }

    #[cfg(test)]
    pub(super) fn sample_at(&self, at: Instant) {
        let snap = self.snapshot_at(at);
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(snap);
    }
}

/// Samples `metrics` now and then every `interval` on a thread of its
/// own, which holds only a weak reference and ends within one interval
/// after the last `Arc` is dropped.
pub(super) fn start_sampler(metrics: &Arc<Metrics>, interval: Duration) {
    let weak = Arc::downgrade(metrics);
    metrics.sample();
    let spawned = thread::Builder::new()
        .name("aiproxy-metrics".into())
        .spawn(move || sampler(&weak, interval));
    if let Err(e) = spawned {
        crate::log::warn(&format!("metrics: no dashboard history sampler: {e}"));
    }
}

fn sampler(weak: &Weak<Metrics>, interval: Duration) {
    loop {
        thread::sleep(interval);
        match weak.upgrade() {
            Some(metrics) => metrics.sample(),
            None => return,
        }
    }
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

fn per_second(delta: u64, dt: Duration) -> Option<f64> {
    let secs = dt.as_secs_f64();
    (secs > 0.0).then(|| delta as f64 / secs)
}

fn quantiles(counts: &Counts, qs: &[(&str, f64)]) -> Value {
    let mut m = Map::new();
    for &(name, q) in qs {
        m.insert(name.into(), json!(quantile(q, counts)));
    }
    Value::Object(m)
}

/// The baseline of the headline window: the oldest sample no older than
/// [`WINDOW`], or a zero snapshot at start when there is none.
fn baseline<'a>(history: &'a History, now: &Snapshot, zero: &'a Snapshot) -> &'a Snapshot {
    history
        .ring
        .iter()
        .find(|s| now.at.saturating_duration_since(s.at) <= WINDOW && s.at < now.at)
        .unwrap_or(zero)
}

pub(super) fn render(m: &Metrics, history: &History, now: &Snapshot) -> Value {
    let zero = Snapshot {
        at: m.started,
        unix_ms: 0,
        http_total: 0,
        http_5xx: 0,
        active: 0,
        latency: [0; histogram::BUCKETS],
        providers: [ProviderSnap::default(); 6],
        cache_hits: 0,
        cache_misses: 0,
    };
    let base = baseline(history, now, &zero);
    let dt = now.at.saturating_duration_since(base.at);
    let window_latency = histogram::delta(&now.latency, &base.latency);
    let d_total = now.http_total - base.http_total.min(now.http_total);
    let d_5xx = now.http_5xx - base.http_5xx.min(now.http_5xx);

    let providers: Vec<Value> = ProviderKind::ALL
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            let s = &m.providers[*i];
            s.requests.load(Ordering::Relaxed) > 0 || s.latency.get().is_some()
        })
        .map(|(i, kind)| {
            let s = &m.providers[i];
            let requests = s.requests.load(Ordering::Relaxed);
            let errors = s.errors.load(Ordering::Relaxed);
            let by_kind: Map<String, Value> = ErrorKind::ALL
                .iter()
                .map(|k| {
                    (
                        k.name().to_owned(),
                        json!(s.errors_by_kind[k.index()].load(Ordering::Relaxed)),
                    )
                })
                .collect();
            let d_req = now.providers[i].requests - base.providers[i].requests.min(requests);
            let pq = [("p50", 0.5), ("p95", 0.95)];
            json!({
                "provider": kind.name(),
                "requests": requests,
                "errors": errors,
                "error_ratio": ratio(errors, requests),
                "per_second": per_second(d_req, dt),
                "errors_by_kind": by_kind,
                "tokens": {
                    "prompt": s.prompt_tokens.load(Ordering::Relaxed),
                    "completion": s.completion_tokens.load(Ordering::Relaxed),
                },
                "latency": s.latency.get().map_or(Value::Null, |h| quantiles(&h.counts(), &pq)),
                "ttft": s.ttft.get().map_or(Value::Null, |h| quantiles(&h.counts(), &pq)),
            })
        })
        .collect();

    let prompt: u64 = m
        .providers
        .iter()
        .map(|s| s.prompt_tokens.load(Ordering::Relaxed))
        .sum();
    let completion: u64 = m
        .providers
        .iter()
        .map(|s| s.completion_tokens.load(Ordering::Relaxed))
        .sum();
    let tokens_now: u64 = now.providers.iter().map(|p| p.tokens).sum();
    let tokens_base: u64 = base.providers.iter().map(|p| p.tokens).sum();

    let hits = m.cache_hits.get();
    let misses = m.cache_misses.get();
    let cache = json!({
        "hits": hits,
        "misses": misses,
        "hit_ratio": ratio(hits, hits + misses),
        "size_bytes": m.cache_size.get(),
        "redis_up": m.redis.as_ref().map(|r| r.up.get() == 1),
        "redis_errors": m.redis.as_ref().map(|r| r.errors.get()),
    });

    let websocket = m.websocket.as_ref().map_or(
        Value::Null,
        |ws| json!({"connections": ws.connections.get()}),
    );
    let instances = if m.instances.is_some() {
        let health = m.instance_health.lock().unwrap_or_else(|e| e.into_inner());
        Value::Array(
            health
                .iter()
                .map(|((p, i), h)| json!({"provider": p, "instance": &**i, "healthy": h}))
                .collect(),
        )
    } else {
        Value::Null
    };
    let cluster = m.cluster.as_ref().map_or(Value::Null, |c| {
        let mut o = Map::new();
        for state in NodeState::ALL {
            let n = c
                .nodes
                .get_or_create(&NodeLabels {
                    state: state.name(),
                })
                .get();
            o.insert(state.name().into(), json!(n));
        }
        // Ids and states only: the summary is served without a key, and
        // the addresses are in the authenticated GET /cluster/status.
        let members = c.members.lock().unwrap_or_else(|e| e.into_inner());
        let nodes: Vec<Value> = members
            .iter()
            .map(|(id, state, ago)| {
                json!({"node_id": id, "state": state.name(), "last_heartbeat_ms_ago": ago})
            })
            .collect();
        o.insert("nodes".into(), Value::Array(nodes));
        o.insert("settings_version".into(), json!(c.settings_version.get()));
        Value::Object(o)
    });

    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": m.started.elapsed().as_secs(),
        "now_ms": now.unix_ms,
        "window_seconds": dt.as_secs_f64(),
        "requests": {
            "total": now.http_total,
            "client_errors": m.http_4xx.load(Ordering::Relaxed),
            "server_errors": now.http_5xx,
            "active": now.active,
            "per_second": per_second(d_total, dt),
            "error_ratio": ratio(d_5xx, d_total),
        },
        "latency": {
            "p50": quantile(0.5, &window_latency),
            "p95": quantile(0.95, &window_latency),
            "p99": quantile(0.99, &window_latency),
            "count": window_latency.iter().sum::<u64>(),
        },
        "providers": providers,
        "tokens": {
            "prompt": prompt,
            "completion": completion,
            "total": prompt + completion,
            "per_second": per_second(tokens_now.saturating_sub(tokens_base), dt),
        },
        "cache": cache,
        "websocket": websocket,
        "instances": instances,
        "cluster": cluster,
        "history": render_history(m, history),
    })
}

fn render_history(m: &Metrics, history: &History) -> Value {
    let ring: Vec<&Snapshot> = history.ring.iter().collect();
    let n = ring.len().saturating_sub(1);
    let mut t = Vec::with_capacity(n);
    let mut rps = Vec::with_capacity(n);
    let mut err = Vec::with_capacity(n);
    let (mut p50, mut p95, mut p99) = (Vec::new(), Vec::new(), Vec::new());
    let mut active = Vec::with_capacity(n);
    let mut tps = Vec::with_capacity(n);
    let mut hit = Vec::with_capacity(n);
    let shown: Vec<usize> = (0..ProviderKind::ALL.len())
        .filter(|&i| {
            m.providers[i].requests.load(Ordering::Relaxed) > 0
                || m.providers[i].latency.get().is_some()
        })
        .collect();
    // Per shown provider: requests/s and errors/s.
    let mut prov: Vec<[Vec<Option<f64>>; 2]> = shown.iter().map(|_| Default::default()).collect();
    for i in 1..ring.len() {
        let (a, b) = (ring[i - 1], ring[i]);
        let dt = b.at.saturating_duration_since(a.at);
        let d = |new: u64, old: u64| new.saturating_sub(old);
        t.push(b.unix_ms);
        let d_total = d(b.http_total, a.http_total);
        rps.push(per_second(d_total, dt));
        err.push(ratio(d(b.http_5xx, a.http_5xx), d_total).or(Some(0.0)));
        let span = ring[i.saturating_sub(QUANTILE_SPAN)];
        let lat = histogram::delta(&b.latency, &span.latency);
        p50.push(quantile(0.5, &lat));
        p95.push(quantile(0.95, &lat));
        p99.push(quantile(0.99, &lat));
        active.push(b.active);
        let tok = |s: &Snapshot| s.providers.iter().map(|p| p.tokens).sum::<u64>();
        tps.push(per_second(d(tok(b), tok(a)), dt));
        hit.push(ratio(
            d(b.cache_hits, a.cache_hits),
            d(b.cache_hits + b.cache_misses, a.cache_hits + a.cache_misses),
        ));
        for (slot, &p) in prov.iter_mut().zip(&shown) {
            slot[0].push(per_second(
                d(b.providers[p].requests, a.providers[p].requests),
                dt,
            ));
            slot[1].push(per_second(
                d(b.providers[p].errors, a.providers[p].errors),
                dt,
            ));
        }
    }
    let interval = if ring.len() >= 2 {
        ring[ring.len() - 1]
            .at
            .saturating_duration_since(ring[ring.len() - 2].at)
            .as_secs_f64()
    } else {
        0.0
    };
    let providers: Map<String, Value> = shown
        .iter()
        .zip(prov)
        .map(|(&i, [r, e])| {
            (
                ProviderKind::ALL[i].name().to_owned(),
                json!({"rps": r, "eps": e}),
            )
        })
        .collect();
    json!({
        "interval_seconds": interval,
        "t": t,
        "rps": rps,
        "error_ratio": err,
        "p50": p50,
        "p95": p95,
        "p99": p99,
        "active": active,
        "tokens_per_second": tps,
        "cache_hit_ratio": hit,
        "providers": providers,
    })
}
