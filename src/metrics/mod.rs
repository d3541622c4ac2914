//! Prometheus metrics and the live dashboard's data.
//!
//! One [`Metrics`] value (shared as `Arc<Metrics>`) owns every metric
//! family, registered under the `aiproxy_` prefix with prometheus-client.
//! The gateway calls its recording methods; [`Metrics::encode`] renders
//! `GET /metrics` (OpenMetrics or the 0.0.4 text format, chosen from the
//! `Accept` header), [`Metrics::summary`] the small JSON document that the
//! page in [`DASHBOARD_HTML`] polls.
//!
//! Label values are bounded whatever clients send: routes are templates
//! (`&'static str`), methods fold to a known set, statuses are three
//! digits, providers are an enum, and model names and instance ids go
//! through a [`LabelFolder`] that gives only the first N distinct values a
//! label of their own.
//!
//! The families that belong to optional features (WebSocket connections,
//! load-balancer instance health, cluster nodes, Redis) are registered only
//! when [`MetricsOptions`] turns the feature on, so they are present exactly
//! when it is; their setters do nothing otherwise.
//!
//! Rates for the dashboard are computed server-side: a sampler thread
//! (see [`MetricsOptions::sample_interval`]) keeps a ring of snapshots of
//! the last five minutes, so the page shows history as soon as it opens.

mod fold;
mod histogram;
#[cfg(feature = "dashboard")]
mod summary;
mod vocabulary;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::providers::ProviderKind;

pub use fold::{LabelFolder, MAX_LABEL_LEN, OTHER};
pub use histogram::{LATENCY_BUCKETS, LatencyHistogram};
pub use vocabulary::{
    ClusterFigures, DEFAULT_MAX_INSTANCES, DEFAULT_MAX_MODELS, DEFAULT_SAMPLE_INTERVAL, ErrorKind,
    MetricsOptions, NodeState,
};

/// `Content-Type` of the OpenMetrics exposition.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `Content-Type` of the Prometheus 0.0.4 text exposition.
pub const TEXT_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// The live dashboard, one self-contained page (no external assets),
/// served at `GET /dashboard`. It polls `summary.json` beside itself
/// (`GET /dashboard/summary.json`, which serves [`Metrics::summary`]).
#[cfg(feature = "dashboard")]
pub const DASHBOARD_HTML: &str = include_str!("../dashboard.html");
/// `Content-Type` of [`DASHBOARD_HTML`].
#[cfg(feature = "dashboard")]
pub const DASHBOARD_CONTENT_TYPE: &str = "text/html; charset=utf-8";
/// Path the dashboard polls, relative to the server root.
#[cfg(feature = "dashboard")]
pub const SUMMARY_PATH: &str = "/dashboard/summary.json";

/// Samples kept for the dashboard (5 minutes at the default interval).
pub const HISTORY_LEN: usize = 151;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderRequestLabels {
    provider: &'static str,
    model: Arc<str>,
    instance: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    provider: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    provider: &'static str,
    model: Arc<str>,
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    provider: &'static str,
    instance: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebSocketMessageLabels {
    r#type: &'static str,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebSocketCloseLabels {
    code: &'static str,
}

/// The WebSocket families.
#[derive(Debug)]
struct WebSocket {
    connections: Gauge,
    messages: Family<WebSocketMessageLabels, Counter>,
    closes: Family<WebSocketCloseLabels, Counter>,
}

/// Message types of the WebSocket API by direction, each a series from
/// the start; `invalid` counts client messages that could not be read.
pub const WEBSOCKET_MESSAGE_TYPES: [(&str, &[&str]); 2] = [
    (
        "in",
        &["request", "batch", "cancel", "heartbeat", "invalid"],
    ),
    (
        "out",
        &["response", "stream", "stream_end", "error", "heartbeat"],
    ),
];

/// Close codes with a series of their own; others count as `other`.
const WEBSOCKET_CLOSE_CODES: [&str; 11] = [
    "1000", "1001", "1002", "1003", "1005", "1006", "1007", "1008", "1009", "1011", "other",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

/// The cluster families beside `aiproxy_cluster_nodes`, and the node
/// list the dashboard shows.
#[derive(Debug)]
struct Cluster {
    nodes: Family<NodeLabels, Gauge>,
    dropped: Family<ReasonLabels, Counter>,
    datagrams: Family<DirectionLabels, Counter>,
    bytes: Family<DirectionLabels, Counter>,
    settings_version: Gauge,
    /// Serialises [`Metrics::set_cluster`], which turns the node's totals
    /// into counter increments, and holds the latest node list.
    members: Mutex<Vec<(String, NodeState, u64)>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Registers a family so that its `# HELP`/`# TYPE` lines are written even
/// before it has a series: every name is in the exposition from the start.
#[derive(Debug)]
struct Shown<M>(M);

impl<M: EncodeMetric> EncodeMetric for Shown<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

/// Per-provider aggregates for the dashboard (the registered families
/// are keyed by more labels and cannot be iterated).
#[derive(Debug, Default)]
struct ProviderStats {
    requests: AtomicU64,
    errors: AtomicU64,
    errors_by_kind: [AtomicU64; 7],
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    latency: OnceLock<LatencyHistogram>,
    ttft: OnceLock<LatencyHistogram>,
}

#[derive(Debug)]
struct Redis {
    up: Gauge,
    errors: Counter,
}

/// The load balancer's counters beside instance health.
#[derive(Debug)]
struct Balancing {
    selections: Family<InstanceLabels, Counter>,
    ejections: Family<InstanceLabels, Counter>,
    retries: Counter,
    budget_refusals: Counter,
}

/// Every metric of one gateway process. Cheap to record into from any
/// thread; share it as `Arc<Metrics>`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Family<RouteLabels, LatencyHistogram>,
    /// Identifies this registry in the per-thread handle caches.
    id: u64,
    http_active: Gauge,
    provider_requests: Family<ProviderRequestLabels, Counter>,
    provider_errors: Family<ErrorLabels, Counter>,
    provider_tokens: Family<TokenLabels, Counter>,
    provider_latency: Family<ProviderLabels, LatencyHistogram>,
    provider_ttft: Family<ProviderLabels, LatencyHistogram>,
    cache_hits: Counter,
    cache_misses: Counter,
    cache_size: Gauge,
    cache_refused: Counter,
    redis: Option<Redis>,
    websocket: Option<WebSocket>,
    instances: Option<Family<InstanceLabels, Gauge>>,
    cluster: Option<Cluster>,
    balancing: Option<Balancing>,
    models: LabelFolder,
    instance_ids: LabelFolder,
    // Dashboard aggregates.
    #[cfg(feature = "dashboard")]
    started: std::time::Instant,
    http_total: AtomicU64,
    http_4xx: AtomicU64,
    http_5xx: AtomicU64,
    http_latency: LatencyHistogram,
    providers: [ProviderStats; 6],
    instance_health: Mutex<BTreeMap<(&'static str, Arc<str>), bool>>,
    #[cfg(feature = "dashboard")]
    history: Mutex<summary::History>,
}

/// Route template and method (by the address of their static text) and
/// status: a key from fixed, small sets.
type HttpKey = (usize, usize, u16);

/// Hasher for keys drawn from fixed small sets (see [`HttpKey`]): nothing a
/// client sends can grow or collide them, so SipHash's flooding defence
/// would be wasted work on every request.
#[derive(Default)]
struct SmallKeyHasher(u64);

impl std::hash::Hasher for SmallKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }
}

static NEXT_METRICS_ID: AtomicU64 = AtomicU64::new(0);

/// The prompt and completion token counters of one (provider, model).
type TokenCounters = (Counter, Counter);

/// Handles at most this many distinct keys per thread and map, then
/// starts over: the maps cache, they do not account.
const LOCAL_CAPACITY: usize = 256;

/// Series handles cached per worker thread: a request's counters are
/// reached without taking any lock (the families' and the label folders'
/// locks, shared by all workers, were most of the cost of metering).
#[derive(Default)]
struct Local {
    /// The [`Metrics::id`] these handles belong to.
    owner: u64,
    http: HashMap<HttpKey, (Counter, LatencyHistogram), BuildHasherDefault<SmallKeyHasher>>,
    /// (provider, hash of model and instance) → the raw texts (compared on
    /// use, so a hash collision cannot mix series) and the counter.
    requests: HashMap<(usize, u64), (String, String, Counter), BuildHasherDefault<SmallKeyHasher>>,
    /// (provider, hash of model) → the model and its prompt/completion counters.
    tokens: HashMap<(usize, u64), (String, TokenCounters), BuildHasherDefault<SmallKeyHasher>>,
}

thread_local! {
    static LOCAL: std::cell::RefCell<Local> = std::cell::RefCell::new(Local::default());
}

/// A per-thread hash of label texts (SipHash with this thread's keys).
fn local_hash(parts: &[&str]) -> u64 {
    use std::hash::BuildHasher;
    thread_local! {
        static KEYS: std::collections::hash_map::RandomState = std::collections::hash_map::RandomState::new();
    }
    KEYS.with(|keys| keys.hash_one(parts))
}

/// Keeps `aiproxy_http_active_requests` raised while alive: created by
/// [`Metrics::active_guard`], lowers the gauge when dropped, so an early
/// return or a panic cannot leak it.
#[derive(Debug)]
#[must_use = "the gauge goes back down as soon as the guard is dropped"]
pub struct ActiveGuard {
    gauge: Gauge,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl Metrics {
    /// Core families only, default label budgets, sampler thread on.
    pub fn new() -> Arc<Metrics> {
        Self::with_options(MetricsOptions::default())
    }

    /// [`Metrics::with_options`] as an `Option`: the gateway's call reads
    /// the same in a build without the `metrics` feature, where it is
    /// always `None`.
    pub fn start(options: MetricsOptions) -> Option<Arc<Metrics>> {
        Some(Self::with_options(options))
    }

    /// Builds the registry as `options` say and, in a build with the
    /// dashboard, starts the history sampler thread if asked. The thread
    /// holds only a weak reference and ends within one interval after the
    /// last `Arc` is dropped.
    pub fn with_options(options: MetricsOptions) -> Arc<Metrics> {
        let metrics = Arc::new(Self::build(&options));
        #[cfg(feature = "dashboard")]
        if let Some(interval) = options.sample_interval {
            summary::start_sampler(&metrics, interval);
        }
        metrics
    }

    fn build(options: &MetricsOptions) -> Metrics {
        let mut registry = Registry::with_prefix("aiproxy");
        registry.register(
            "build",
            "aiproxy build information",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );

        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            Shown(http_requests.clone()),
        );
        let http_duration = Family::<RouteLabels, LatencyHistogram>::default();
        registry.register_with_unit(
            "http_request_duration",
            "Time from request head to the last response byte, by route template and method",
            Unit::Seconds,
            Shown(http_duration.clone()),
        );
        let http_active = Gauge::default();
        registry.register(
            "http_active_requests",
            "HTTP requests being served now",
            http_active.clone(),
        );

        let provider_requests = Family::<ProviderRequestLabels, Counter>::default();
        registry.register(
            "provider_requests",
            "Calls to upstream providers (each retry counts), by provider, model and instance",
            Shown(provider_requests.clone()),
        );
        let provider_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "provider_errors",
            "Failed upstream calls, by provider and kind",
            Shown(provider_errors.clone()),
        );
        let provider_tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "provider_tokens_used",
            "Tokens reported in upstream usage, by provider, model and type (prompt, completion)",
            Shown(provider_tokens.clone()),
        );
        let provider_latency = Family::<ProviderLabels, LatencyHistogram>::default();
        registry.register_with_unit(
            "provider_request_duration",
            "Duration of upstream calls, to the end of the answer, by provider",
            Unit::Seconds,
            Shown(provider_latency.clone()),
        );
        let provider_ttft = Family::<ProviderLabels, LatencyHistogram>::default();
        registry.register_with_unit(
            "provider_time_to_first_token",
            "Time from sending a streamed upstream request to its first content chunk, by provider",
            Unit::Seconds,
            Shown(provider_ttft.clone()),
        );

        let cache_hits = Counter::default();
        registry.register(
            "cache_hits",
            "Response cache lookups answered from the cache",
            cache_hits.clone(),
        );
        let cache_misses = Counter::default();
        registry.register(
            "cache_misses",
            "Response cache lookups that went upstream",
            cache_misses.clone(),
        );
        let cache_size = Gauge::default();
        registry.register_with_unit(
            "cache_size",
            "Bytes held by the in-memory response cache",
            Unit::Bytes,
            cache_size.clone(),
        );
        let cache_refused = Counter::default();
        registry.register(
            "cache_refused",
            "Answers not stored because one answer may take at most 1/16 of the cache",
            cache_refused.clone(),
        );
        let redis = options.redis.then(|| {
            let up = Gauge::default();
            registry.register(
                "cache_redis_up",
                "1 while the shared Redis cache tier answers, 0 while it is down",
                up.clone(),
            );
            let errors = Counter::default();
            registry.register(
                "cache_redis_errors",
                "Failed Redis cache operations (the request went on without Redis)",
                errors.clone(),
            );
            Redis { up, errors }
        });

        let websocket = options.websocket.then(|| {
            let connections = Gauge::default();
            registry.register(
                "websocket_connections",
                "Open WebSocket connections",
                connections.clone(),
            );
            let messages = Family::<WebSocketMessageLabels, Counter>::default();
            for (direction, types) in WEBSOCKET_MESSAGE_TYPES {
                for &r#type in types {
                    drop(messages.get_or_create(&WebSocketMessageLabels { r#type, direction }));
                }
            }
            registry.register(
                "websocket_messages",
                "WebSocket API messages by type and direction (in: from clients)",
                messages.clone(),
            );
            let closes = Family::<WebSocketCloseLabels, Counter>::default();
            for code in WEBSOCKET_CLOSE_CODES {
                drop(closes.get_or_create(&WebSocketCloseLabels { code }));
            }
            registry.register(
                "websocket_closes",
                "WebSocket connections closed, by close code (1006: no close frame)",
                closes.clone(),
            );
            WebSocket {
                connections,
                messages,
                closes,
            }
        });
        let instances = options.load_balancer.then(|| {
            let f = Family::<InstanceLabels, Gauge>::default();
            registry.register(
                "loadbalancer_instance_healthy",
                "1 if the provider instance is healthy, 0 if it is ejected or failing checks",
                Shown(f.clone()),
            );
            f
        });
        let cluster = options.cluster.then(|| register_cluster(&mut registry));
        let balancing = options.load_balancer.then(|| {
            let selections = Family::<InstanceLabels, Counter>::default();
            registry.register(
                "loadbalancer_selections",
                "Upstream attempts the load balancer sent to each instance (retries included)",
                Shown(selections.clone()),
            );
            let ejections = Family::<InstanceLabels, Counter>::default();
            registry.register(
                "loadbalancer_ejections",
                "Passive ejections of an instance after consecutive failures",
                Shown(ejections.clone()),
            );
            let retries = Counter::default();
            registry.register(
                "loadbalancer_retries",
                "Retries of failed upstream attempts granted by the retry budget",
                retries.clone(),
            );
            let budget_refusals = Counter::default();
            registry.register(
                "loadbalancer_budget_refusals",
                "Retries refused because the retry budget (20 % of requests in flight, at least 3) was spent",
                budget_refusals.clone(),
            );
            Balancing {
                selections,
                ejections,
                retries,
                budget_refusals,
            }
        });
        let metrics = Metrics {
            registry,
            http_requests,
            http_duration,
            id: NEXT_METRICS_ID.fetch_add(1, Ordering::Relaxed),
            http_active,
            provider_requests,
            provider_errors,
            provider_tokens,
            provider_latency,
            provider_ttft,
            cache_hits,
            cache_misses,
            cache_size,
            cache_refused,
            redis,
            websocket,
            instances,
            balancing,
            cluster,
            models: LabelFolder::new(options.max_models, &options.known_models),
            instance_ids: LabelFolder::new(options.max_instances, Vec::<&str>::new()),
            #[cfg(feature = "dashboard")]
            started: std::time::Instant::now(),
            http_total: AtomicU64::new(0),
            http_4xx: AtomicU64::new(0),
            http_5xx: AtomicU64::new(0),
            http_latency: LatencyHistogram::default(),
            providers: Default::default(),
            instance_health: Mutex::new(BTreeMap::new()),
            #[cfg(feature = "dashboard")]
            history: Mutex::new(summary::History::default()),
        };
        for &kind in &options.providers {
            for error in ErrorKind::ALL {
                drop(metrics.provider_errors.get_or_create(&ErrorLabels {
                    provider: kind.name(),
                    kind: error.name(),
                }));
            }
            metrics.latency_of(kind);
            metrics.ttft_of(kind);
        }
        metrics
    }

    // ---- HTTP -----------------------------------------------------------

    /// Records one answered request: `route` is the route template
    /// (`Route::template()`), `method` the raw method, `status` the status
    /// sent (0 = none, the client left: recorded as 499), `duration` from
    /// the request head to the last byte. Call once per request, streams
    /// included, after the response is finished.
    pub fn http_request(&self, route: &'static str, method: &str, status: u16, duration: Duration) {
        let method = fold::method(method);
        let status = fold::status(status);
        let key: HttpKey = (route.as_ptr() as usize, method.as_ptr() as usize, status);
        let known = self.local(|local| {
            local.http.get(&key).map(|(counter, histogram)| {
                counter.inc();
                histogram.observe(duration);
            })
        });
        if known.is_none() {
            let counter = self
                .http_requests
                .get_or_create(&HttpLabels {
                    route,
                    method,
                    status,
                })
                .clone();
            let histogram = self
                .http_duration
                .get_or_create(&RouteLabels { route, method })
                .clone();
            counter.inc();
            histogram.observe(duration);
            self.local(|local| local.http.insert(key, (counter, histogram)));
        }
        self.http_latency.observe(duration);
        self.http_total.fetch_add(1, Ordering::Relaxed);
        match status {
            400..=499 => self.http_4xx.fetch_add(1, Ordering::Relaxed),
            500..=599 => self.http_5xx.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }

    /// Raises `aiproxy_http_active_requests` until the guard is dropped.
    /// Take it when a request starts being served.
    pub fn active_guard(&self) -> ActiveGuard {
        self.http_active.inc();
        ActiveGuard {
            gauge: self.http_active.clone(),
        }
    }

    // ---- Providers ------------------------------------------------------

    /// Records one call to an upstream (each attempt, retries included).
    /// `model` is folded (see [`MetricsOptions::max_models`]), `instance`
    /// is the instance id.
    pub fn provider_request(&self, provider: ProviderKind, model: &str, instance: &str) {
        let slot = (provider_index(provider), local_hash(&[model, instance]));
        let known = self.local(|local| {
            local
                .requests
                .get(&slot)
                .and_then(|(m, i, counter)| (m == model && i == instance).then(|| counter.inc()))
        });
        if known.is_none() {
            let counter = self
                .provider_requests
                .get_or_create(&ProviderRequestLabels {
                    provider: provider.name(),
                    model: self.models.fold(model),
                    instance: self.instance_ids.fold(instance),
                })
                .clone();
            counter.inc();
            self.local(|local| {
                local
                    .requests
                    .insert(slot, (model.to_owned(), instance.to_owned(), counter))
            });
        }
        self.stats(provider)
            .requests
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Gives `models` a label of their own from now on, outside the
    /// [`MetricsOptions::max_models`] budget (after a reload).
    pub fn add_known_models(&self, models: &[String]) {
        self.models.know(models);
    }

    /// Records one failed upstream call (at most one per
    /// [`Metrics::provider_request`]).
    pub fn provider_error(&self, provider: ProviderKind, kind: ErrorKind) {
        self.provider_errors
            .get_or_create(&ErrorLabels {
                provider: provider.name(),
                kind: kind.name(),
            })
            .inc();
        let stats = self.stats(provider);
        stats.errors.fetch_add(1, Ordering::Relaxed);
        stats.errors_by_kind[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Records how long one upstream call took, to the end of its answer
    /// (the last streamed byte for streams).
    pub fn provider_latency(&self, provider: ProviderKind, duration: Duration) {
        self.latency_of(provider).observe(duration);
    }

    /// Records the time from sending a streamed request upstream to its
    /// first content chunk.
    pub fn time_to_first_token(&self, provider: ProviderKind, duration: Duration) {
        self.ttft_of(provider).observe(duration);
    }

    /// Adds the tokens of one answer's usage (prompt = input, completion =
    /// output). Zero counts are not recorded.
    pub fn tokens(&self, provider: ProviderKind, model: &str, prompt: u64, completion: u64) {
        if prompt == 0 && completion == 0 {
            return;
        }
        let stats = self.stats(provider);
        stats.prompt_tokens.fetch_add(prompt, Ordering::Relaxed);
        stats
            .completion_tokens
            .fetch_add(completion, Ordering::Relaxed);
        let slot = (provider_index(provider), local_hash(&[model]));
        let add = |(p, c): &TokenCounters| {
            if prompt > 0 {
                p.inc_by(prompt);
            }
            if completion > 0 {
                c.inc_by(completion);
            }
        };
        let known = self.local(|local| {
            local
                .tokens
                .get(&slot)
                .and_then(|(m, pair)| (m == model).then(|| add(pair)))
        });
        if known.is_none() {
            let folded = self.models.fold(model);
            let counter = |kind: &'static str| {
                self.provider_tokens
                    .get_or_create(&TokenLabels {
                        provider: provider.name(),
                        model: Arc::clone(&folded),
                        r#type: kind,
                    })
                    .clone()
            };
            let pair = (counter("prompt"), counter("completion"));
            add(&pair);
            self.local(|local| local.tokens.insert(slot, (model.to_owned(), pair)));
        }
    }

    // ---- Cache ----------------------------------------------------------

    /// One cache lookup answered from the cache.
    pub fn cache_hit(&self) {
        self.cache_hits.inc();
    }

    /// One cache lookup that had to go upstream.
    pub fn cache_miss(&self) {
        self.cache_misses.inc();
    }

    /// Bytes now held by the in-memory cache.
    pub fn set_cache_size_bytes(&self, bytes: u64) {
        self.cache_size
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Answers the cache refused to store (too large), since the last call.
    pub fn cache_refused(&self, n: u64) {
        if n > 0 {
            self.cache_refused.inc_by(n);
        }
    }

    /// Whether Redis answers (no-op unless [`MetricsOptions::redis`]).
    pub fn set_cache_redis_up(&self, up: bool) {
        if let Some(r) = &self.redis {
            r.up.set(i64::from(up));
        }
    }

    /// One failed Redis operation (no-op unless [`MetricsOptions::redis`]).
    pub fn cache_redis_error(&self) {
        if let Some(r) = &self.redis {
            r.errors.inc();
        }
    }

    // ---- Optional features ----------------------------------------------

    /// Open WebSocket connections (no-op unless [`MetricsOptions::websocket`]).
    pub fn set_websocket_connections(&self, n: i64) {
        if let Some(ws) = &self.websocket {
            ws.connections.set(n);
        }
    }

    /// One WebSocket API message of `kind` (a name of
    /// [`WEBSOCKET_MESSAGE_TYPES`]), from the client (`inbound`) or to it.
    pub fn websocket_message(&self, kind: &'static str, inbound: bool) {
        if let Some(ws) = &self.websocket {
            let direction = if inbound { "in" } else { "out" };
            ws.messages
                .get_or_create(&WebSocketMessageLabels {
                    r#type: kind,
                    direction,
                })
                .inc();
        }
    }

    /// One WebSocket connection closed with `code` (1006 when it ended
    /// without a close frame).
    pub fn websocket_closed(&self, code: u16) {
        if let Some(ws) = &self.websocket {
            let text = code.to_string();
            let code = WEBSOCKET_CLOSE_CODES
                .iter()
                .find(|c| **c == text)
                .copied()
                .unwrap_or("other");
            ws.closes
                .get_or_create(&WebSocketCloseLabels { code })
                .inc();
        }
    }

    /// Health of one instance (no-op unless
    /// [`MetricsOptions::load_balancer`]).
    pub fn set_instance_healthy(&self, provider: ProviderKind, instance: &str, healthy: bool) {
        let Some(family) = &self.instances else {
            return;
        };
        let instance = self.instance_ids.fold(instance);
        family
            .get_or_create(&InstanceLabels {
                provider: provider.name(),
                instance: Arc::clone(&instance),
            })
            .set(i64::from(healthy));
        self.instance_health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((provider.name(), instance), healthy);
    }

    /// The running counts of `instance`: attempts sent to it and passive
    /// ejections (no-op unless [`MetricsOptions::load_balancer`]). Read
    /// from the instance before a scrape, so the request path pays
    /// nothing; an instance rebuilt by a reload starts again from zero,
    /// which Prometheus takes as a counter reset.
    pub fn set_instance_counts(
        &self,
        provider: ProviderKind,
        instance: &str,
        selections: u64,
        ejections: u64,
    ) {
        if let Some(b) = &self.balancing {
            let labels = InstanceLabels {
                provider: provider.name(),
                instance: self.instance_ids.fold(instance),
            };
            let store = |family: &Family<InstanceLabels, Counter>, n: u64| {
                family
                    .get_or_create(&labels)
                    .inner()
                    .store(n, Ordering::Relaxed);
            };
            store(&b.selections, selections);
            store(&b.ejections, ejections);
        }
    }

    /// The balancer's running totals of granted and refused retries
    /// (no-op unless [`MetricsOptions::load_balancer`]); totals only
    /// grow, so a stale call never lowers them.
    pub fn set_lb_retry_totals(&self, granted: u64, refused: u64) {
        if let Some(b) = &self.balancing {
            b.retries.inner().fetch_max(granted, Ordering::Relaxed);
            b.budget_refusals
                .inner()
                .fetch_max(refused, Ordering::Relaxed);
        }
    }

    /// Drops the series of an instance that left the configuration.
    pub fn forget_instance(&self, provider: ProviderKind, instance: &str) {
        let Some(family) = &self.instances else {
            return;
        };
        let instance = self.instance_ids.fold(instance);
        let labels = InstanceLabels {
            provider: provider.name(),
            instance: Arc::clone(&instance),
        };
        family.remove(&labels);
        if let Some(b) = &self.balancing {
            b.selections.remove(&labels);
            b.ejections.remove(&labels);
        }
        self.instance_health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(provider.name(), instance));
    }

    /// Number of cluster members in `state` (no-op unless
    /// [`MetricsOptions::cluster`]).
    pub fn set_cluster_nodes(&self, state: NodeState, n: i64) {
        if let Some(c) = &self.cluster {
            c.nodes
                .get_or_create(&NodeLabels {
                    state: state.name(),
                })
                .set(n);
        }
    }

    /// Takes in the cluster node's current figures: member counts by
    /// state, the node list, and its totals since start, which the
    /// counters catch up with (no-op unless [`MetricsOptions::cluster`]).
    pub fn set_cluster(&self, figures: &ClusterFigures) {
        let Some(c) = &self.cluster else { return };
        let mut members = c.members.lock().unwrap_or_else(|e| e.into_inner());
        for state in NodeState::ALL {
            let n = figures.nodes.iter().filter(|(_, s, _)| *s == state).count();
            self.set_cluster_nodes(state, i64::try_from(n).unwrap_or(i64::MAX));
        }
        let catch_up = |counter: &Counter, total: u64| {
            let seen = counter.get();
            if total > seen {
                counter.inc_by(total - seen);
            }
        };
        for (reason, n) in &figures.dropped {
            catch_up(&c.dropped.get_or_create(&ReasonLabels { reason }), *n);
        }
        for (direction, datagrams, bytes) in [
            ("sent", figures.sent_datagrams, figures.sent_bytes),
            (
                "received",
                figures.received_datagrams,
                figures.received_bytes,
            ),
        ] {
            let labels = DirectionLabels { direction };
            catch_up(&c.datagrams.get_or_create(&labels), datagrams);
            catch_up(&c.bytes.get_or_create(&labels), bytes);
        }
        c.settings_version
            .set(i64::try_from(figures.settings_version).unwrap_or(i64::MAX));
        members.clone_from(&figures.nodes);
    }

    // ---- Exposition -----------------------------------------------------

    /// Renders the exposition for a scrape: OpenMetrics when `accept`
    /// (the request's `Accept` header) asks for
    /// `application/openmetrics-text`, the Prometheus 0.0.4 text format
    /// otherwise. Returns the `Content-Type` to send and the body.
    pub fn encode(&self, accept: Option<&str>) -> (&'static str, String) {
        let mut body = String::with_capacity(16 * 1024);
        if wants_openmetrics(accept) {
            // Writing into a String cannot fail.
            let _ = prometheus_client::encoding::text::encode(&mut body, &self.registry);
            (OPENMETRICS_CONTENT_TYPE, body)
        } else {
            let _ = prometheus_client::encoding::prometheus_text::encode(&mut body, &self.registry);
            (TEXT_CONTENT_TYPE, body)
        }
    }

    // ---- Internals ------------------------------------------------------

    /// Runs `f` on this thread's handle cache for this registry.
    fn local<R>(&self, f: impl FnOnce(&mut Local) -> R) -> R {
        LOCAL.with(|cell| {
            let mut local = cell.borrow_mut();
            let full = local
                .http
                .len()
                .max(local.requests.len())
                .max(local.tokens.len())
                >= LOCAL_CAPACITY;
            if local.owner != self.id || full {
                *local = Local {
                    owner: self.id,
                    ..Local::default()
                };
            }
            f(&mut local)
        })
    }

    fn stats(&self, provider: ProviderKind) -> &ProviderStats {
        &self.providers[provider_index(provider)]
    }

    fn latency_of(&self, provider: ProviderKind) -> &LatencyHistogram {
        self.stats(provider).latency.get_or_init(|| {
            self.provider_latency.get_or_create_owned(&ProviderLabels {
                provider: provider.name(),
            })
        })
    }

    fn ttft_of(&self, provider: ProviderKind) -> &LatencyHistogram {
        self.stats(provider).ttft.get_or_init(|| {
            self.provider_ttft.get_or_create_owned(&ProviderLabels {
                provider: provider.name(),
            })
        })
    }
}

fn register_cluster(registry: &mut Registry) -> Cluster {
    let nodes = Family::<NodeLabels, Gauge>::default();
    for state in NodeState::ALL {
        drop(nodes.get_or_create(&NodeLabels {
            state: state.name(),
        }));
    }
    registry.register(
        "cluster_nodes",
        "Cluster members as this node sees them (itself included), by state",
        nodes.clone(),
    );
    let dropped = Family::<ReasonLabels, Counter>::default();
    for reason in crate::cluster::DropReason::ALL {
        drop(dropped.get_or_create(&ReasonLabels {
            reason: reason.name(),
        }));
    }
    registry.register(
        "cluster_datagrams_dropped",
        "Cluster datagrams dropped, by reason (bad_mac: another secret or a stranger; replay; \
         malformed; unknown_version)",
        dropped.clone(),
    );
    let datagrams = Family::<DirectionLabels, Counter>::default();
    let bytes = Family::<DirectionLabels, Counter>::default();
    for direction in ["sent", "received"] {
        drop(datagrams.get_or_create(&DirectionLabels { direction }));
        drop(bytes.get_or_create(&DirectionLabels { direction }));
    }
    registry.register(
        "cluster_datagrams",
        "Cluster datagrams sent and received (dropped ones included), by direction",
        datagrams.clone(),
    );
    registry.register_with_unit(
        "cluster",
        "UDP payload bytes of cluster datagrams, by direction",
        Unit::Bytes,
        bytes.clone(),
    );
    let settings_version = Gauge::default();
    registry.register(
        "cluster_settings_version",
        "Newest cluster-wide settings version this node has seen; equal on converged nodes",
        settings_version.clone(),
    );
    Cluster {
        nodes,
        dropped,
        datagrams,
        bytes,
        settings_version,
        members: Mutex::new(Vec::new()),
    }
}

fn provider_index(kind: ProviderKind) -> usize {
    ProviderKind::ALL
        .iter()
        .position(|&k| k == kind)
        .unwrap_or(0)
}

/// Whether an `Accept` header prefers OpenMetrics: it lists
/// `application/openmetrics-text` with a non-zero q.
fn wants_openmetrics(accept: Option<&str>) -> bool {
    let Some(accept) = accept else {
        return false;
    };
    accept.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        if !media.eq_ignore_ascii_case("application/openmetrics-text") {
            return false;
        }
        !parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f64>().ok())
                .is_some_and(|q| q <= 0.0)
        })
    })
}

#[cfg(test)]
mod tests;
