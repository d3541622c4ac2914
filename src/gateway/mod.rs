//! The request pipeline: route → authenticate → choose a provider →
//! convert → (cache) → call upstream with retries → convert back → answer.
//!
//! `mod.rs` owns the gateway's state and the dispatch on the route;
//! `infer` is the inference pipeline, stage by stage, so the cache
//! (around the whole-answer fetch), the metrics (around each upstream
//! attempt) and the load balancer (around the attempts of a request)
//! each plug into one place; `ops` answers the operational endpoints,
//! `dashboard` the dashboard's, `balance` the balancer's, `ws` the
//! WebSocket API, and `checks` runs the active health checks. A part a
//! build leaves out (see [`crate::features`]) has a stand-in module of
//! the same name that answers 404.

mod balance;
mod call;
mod checks;
mod control;
#[cfg(all(feature = "dashboard", feature = "metrics"))]
mod dashboard;
#[cfg(not(all(feature = "dashboard", feature = "metrics")))]
#[path = "dashboard_absent.rs"]
mod dashboard;
mod guard;
mod infer;
mod ops;
#[cfg(feature = "websocket")]
pub(crate) mod ws;
#[cfg(not(feature = "websocket"))]
#[path = "ws_absent.rs"]
mod ws;

pub use call::{Answer, Call, Sink};
pub(crate) use checks::HealthChecks;
pub use control::Control;
pub use ops::MetricsOnly;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use crate::auth::{self, Access};
use crate::balancer::Balancer;
use crate::cache::{self, Cache};
use crate::config::{Config, LogLevel};
use crate::extensions::Extensions;
use crate::log::{self, Field};
use crate::metrics::{Metrics, MetricsOptions};
use crate::protocol::{self, Protocol};
use crate::providers::{ProviderKind, Registry};
use crate::routing::{self, Route};
use crate::server::{Exchange, Handler, Head, Rejection, Request, Responder, ResponseState};
use call::HttpSink;

/// The gateway: a [`Handler`] over the provider registry.
pub struct Gateway {
    state: RwLock<Arc<State>>,
    metrics: Option<Arc<Metrics>>,
    started: Instant,
    draining: AtomicBool,
    /// Redis errors already reported to the metrics.
    redis_errors_seen: AtomicU64,
    /// Settings changed at run time, which a reload does not undo.
    overrides: Mutex<control::Overrides>,
    /// The gateway itself, for work that outlives a call into it (a
    /// WebSocket request runs on a worker after the poller decoded it).
    #[cfg_attr(not(feature = "websocket"), allow(dead_code))]
    this: Weak<Gateway>,
    /// Open WebSocket connections.
    #[cfg_attr(not(feature = "websocket"), allow(dead_code))]
    websockets: ws::Hub,
    /// The cluster node, when clustering is on.
    cluster: control::ClusterLink,
    /// Chooses instances and retries; outlives reloads (the algorithm
    /// set at run time, the retry budget, the counters).
    balancer: Balancer,
    /// The embedding program's providers, used again by every reload.
    extensions: Extensions,
}

/// What a SIGHUP reload replaces; each request holds the version it
/// started with, so a reload never changes a request midway.
struct State {
    config: Arc<Config>,
    registry: Registry,
    cache: Arc<Cache>,
}

/// A request the pipeline could not serve, rendered in the client's protocol.
struct Failure {
    status: u16,
    message: String,
}

impl Failure {
    fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

fn build_cache(config: &Config) -> Arc<Cache> {
    let (cache, warning) = Cache::with_warning(cache::Settings::from_config(config));
    if let Some(warning) = warning {
        log::warn(&warning);
    }
    Arc::new(cache)
}

impl Gateway {
    /// Builds the gateway, its providers, cache and metrics.
    pub fn new(config: Arc<Config>) -> Result<Arc<Gateway>, crate::Error> {
        Self::with_extensions(config, Extensions::default())
    }

    /// [`Gateway::new`] with the embedding program's `extensions`.
    pub fn with_extensions(
        config: Arc<Config>,
        extensions: Extensions,
    ) -> Result<Arc<Gateway>, crate::Error> {
        config.check_features().map_err(crate::Error::Config)?;
        let (registry, _) = Registry::reconcile_with(None, &config, &extensions)?;
        let cache = build_cache(&config);
        // Metrics::start gives None in a build without metrics.
        let metrics = if config.metrics.enabled {
            Metrics::start(MetricsOptions {
                providers: config.model_providers.clone(),
                known_models: known_models(&config, &registry),
                // Only the known names: metrics are served without a key,
                // and a model name is the client's to choose.
                max_models: 0,
                redis: config.redis.is_some(),
                websocket: config.websocket.enabled,
                cluster: config.cluster.enabled,
                load_balancer: config.load_balancer.enabled,
                ..MetricsOptions::default()
            })
        } else {
            None
        };
        Ok(Arc::new_cyclic(|this| Gateway {
            balancer: balance::build(&config),
            state: RwLock::new(Arc::new(State {
                config,
                registry,
                cache,
            })),
            metrics,
            started: Instant::now(),
            draining: AtomicBool::new(false),
            redis_errors_seen: AtomicU64::new(0),
            overrides: Mutex::new(control::Overrides::default()),
            this: this.clone(),
            websockets: ws::Hub::default(),
            cluster: control::ClusterLink::default(),
            extensions,
        }))
    }

    /// Applies a reloaded configuration: keys, providers, routes, upstream
    /// settings and cache settings (the caller applies logging once this
    /// succeeded). The cache keeps its contents
    /// unless its size, TTL or Redis settings changed. The listen address,
    /// the worker count and switching metrics on or off need a restart;
    /// the caller reports those.
    pub fn reload(&self, config: Arc<Config>) -> Result<(), crate::Error> {
        config.check_features().map_err(crate::Error::Config)?;
        let running = self.current();
        let (registry, changes) =
            Registry::reconcile_with(Some(&running.registry), &config, &self.extensions)?;
        let removed: Vec<&str> = changes.removed.iter().map(|(_, id)| id.as_str()).collect();
        log::info(&format!(
            "reload: instances kept with their state: [{}]; built: [{}]; removed: [{}]",
            changes.kept.join(", "),
            changes.built.join(", "),
            removed.join(", ")
        ));
        self.forget_instances(&changes.removed);
        self.reload_balancer(&config);
        let old = cache::Settings::from_config(&running.config);
        let new = cache::Settings::from_config(&config);
        let same_store = old.max_bytes == new.max_bytes
            && old.ttl == new.ttl
            && old.redis.as_ref().map(|r| (&r.addr, r.db))
                == new.redis.as_ref().map(|r| (&r.addr, r.db))
            && old.redis.as_ref().map(|r| &r.password) == new.redis.as_ref().map(|r| &r.password);
        let cache_on = self.overrides().reload_cache_enabled(config.cache.enabled);
        let cache = if same_store {
            Arc::clone(&running.cache)
        } else {
            build_cache(&config)
        };
        cache.set_enabled(cache_on);
        if let Some(m) = &self.metrics {
            m.add_known_models(&known_models(&config, &registry));
        }
        let fresh = Arc::new(State {
            config,
            registry,
            cache,
        });
        match self.state.write() {
            Ok(mut state) => *state = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
    }

    fn overrides(&self) -> std::sync::MutexGuard<'_, control::Overrides> {
        self.overrides
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Switches the response cache at run time (an override a reload keeps).
    pub(crate) fn set_cache_enabled(&self, on: bool) {
        let state = self.current();
        self.overrides()
            .set_cache_enabled(on, state.config.cache.enabled);
        state.cache.set_enabled(on);
        log::info(if on {
            "cache enabled"
        } else {
            "cache disabled"
        });
    }

    pub(crate) fn cache_enabled(&self) -> bool {
        self.current().cache.is_enabled()
    }

    pub(crate) fn clear_cache(&self) -> cache::Cleared {
        let cleared = self.current().cache.clear();
        log::info(&format!(
            "cache cleared: {} entries in memory, {} keys in Redis",
            cleared.entries,
            cleared
                .redis_keys
                .map_or_else(|| "no".to_owned(), |n| n.to_string())
        ));
        cleared
    }

    fn clear_memory_cache(&self) {
        let entries = self.current().cache.clear_memory();
        log::info(&format!(
            "cache cleared: {entries} entries in memory (a clear made on another cluster node)"
        ));
    }

    pub(crate) fn overrides_version(&self) -> u64 {
        self.overrides().version()
    }

    /// Runs one inference call end to end — provider choice, conversion,
    /// cache, retries, metrics — and answers through `sink`; a refusal is
    /// answered there too, in the client's protocol. The entry point of
    /// every transport but HTTP (which also authenticates and routes
    /// first), and of programs that embed aiproxy.
    pub fn call(&self, call: &Call<'_>, sink: &mut dyn Sink) {
        let _active = self.metrics.as_ref().map(|m| m.active_guard());
        let state = self.current();
        if let Err(failure) = self.infer(&state, call, sink) {
            let body = protocol::error_body(call.client, failure.status, &failure.message);
            sink.note("note", failure.message);
            sink.whole(Answer {
                status: failure.status,
                content_type: "application/json",
                body: &body,
                cache: None,
                retry_after: None,
            });
        }
    }

    /// The configuration requests are currently served with.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.current().config)
    }

    /// The metrics registry, when metrics are on.
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    fn current(&self) -> Arc<State> {
        match self.state.read() {
            Ok(state) => Arc::clone(&state),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Makes `/health` report draining (503) from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    fn dispatch(&self, req: &Request, out: &mut Responder<'_>) -> Result<(), (Protocol, Failure)> {
        let state = self.current();
        let state = &*state;
        let config = &state.config;
        let (prefix, route) = routing::resolve(req.method(), req.path());
        out.log.route = route.template();
        if let Some(origin) = guard::allowed_origin(&config.cors_origins, &req.head) {
            out.add_header("Access-Control-Allow-Origin", origin.to_owned());
            out.add_header("Vary", "Origin".to_owned());
        }
        // The server screened the head already, with the same checks.
        if !req.screened
            && let Err(refusal) = guard::check(state, &req.head)
        {
            if let Some(allow) = refusal.allow {
                out.add_header("Allow", allow.to_owned());
            }
            return Err((refusal.proto, refusal.failure));
        }
        let proto = client_protocol(&route, &req.head);
        let result = match route {
            Route::OpenAiChat | Route::AnthropicMessages | Route::Responses => {
                let call = Call::from_http(req, proto, prefix, None, false);
                self.infer(state, &call, &mut HttpSink { out })
            }
            Route::GeminiGenerate { model, stream } => {
                let call = Call::from_http(req, proto, prefix, Some(model), stream);
                self.infer(state, &call, &mut HttpSink { out })
            }
            route => self.dispatch_other(state, req, out, route, prefix, proto),
        };
        result.map_err(|f| (proto, f))
    }

    /// The routes other than inference. Kept out of `dispatch` so that its
    /// stack frame, which stays on the stack while a worker waits for the
    /// upstream, holds only what inference needs: with thousands of
    /// requests in flight every byte of a waiting worker's stack counts.
    #[inline(never)]
    fn dispatch_other(
        &self,
        state: &State,
        req: &Request,
        out: &mut Responder<'_>,
        route: Route,
        prefix: Option<ProviderKind>,
        proto: Protocol,
    ) -> Result<(), Failure> {
        let config = &state.config;
        match route {
            Route::Preflight => {
                ops::preflight(state, req, out);
                Ok(())
            }
            Route::Health => {
                let access = auth::access(&req.head, &config.api_keys, &config.admin_api_keys);
                self.health(state, out, access != Access::Denied);
                Ok(())
            }
            Route::Metrics => {
                self.serve_metrics(state, req, out);
                Ok(())
            }
            Route::Dashboard => {
                self.dashboard(out);
                Ok(())
            }
            Route::DashboardSummary => {
                self.dashboard_summary(state, out);
                Ok(())
            }
            Route::AnthropicCountTokens => ops::count_tokens(state, req, out, prefix),
            Route::ListModels | Route::GeminiListModels => {
                ops::list_models(state, out, prefix, proto)
            }
            Route::GetModel(model) => ops::get_model(state, out, prefix, proto, &model),
            Route::CacheStats => {
                ops::cache_stats(state, out);
                Ok(())
            }
            Route::CacheClear => {
                ops::cache_clear(self, out);
                Ok(())
            }
            Route::CacheSwitch(on) => {
                ops::cache_switch(self, out, on);
                Ok(())
            }
            Route::WebSocket => self.upgrade_websocket(state, req, out),
            Route::ClusterStatus => ops::cluster_status(self, out),
            Route::LoadBalancerInstances => {
                balance::instances(self, state, out);
                Ok(())
            }
            Route::LoadBalancerMetrics => {
                balance::metrics(self, state, out);
                Ok(())
            }
            Route::LoadBalancerAlgorithm => balance::set_algorithm(self, req, out),
            Route::OpenAiChat
            | Route::AnthropicMessages
            | Route::Responses
            | Route::GeminiGenerate { .. }
            | Route::NotFound
            | Route::MethodNotAllowed(_) => Ok(()),
        }
    }
}

/// Answers a failure in the client's protocol, unless an answer began.
/// Out of line: `Handler::handle`'s frame is under every upstream wait.
#[inline(never)]
fn refuse(out: &mut Responder<'_>, proto: Protocol, failure: &Failure) {
    if out.state() != ResponseState::Pending {
        return;
    }
    if out.log.get("note").is_none() {
        out.log.set("note", failure.message.clone());
    }
    let body = protocol::error_body(proto, failure.status, &failure.message);
    let _ = out.send_json(failure.status, &[], &body);
}

impl Handler for Gateway {
    fn screen(&self, head: &Head, _peer: std::net::SocketAddr) -> Option<Rejection> {
        let state = self.current();
        let cors = guard::allowed_origin(&state.config.cors_origins, head);
        if self.draining.load(Ordering::Relaxed) {
            // Health checks learn of the drain from a 503, not a refused
            // connection; everything else gets the server's own 503.
            let (_, path) = routing::split_provider_prefix(head.path());
            return (routing::route(head.method(), path) == Route::Health).then(|| Rejection {
                status: 503,
                headers: vec![("Content-Type", "application/json".to_owned())],
                body: br#"{"status":"draining"}"#.to_vec(),
                route: Route::Health.template(),
            });
        }
        guard::check(&state, head)
            .err()
            .map(|refusal| guard::rejection(&refusal, cors))
    }

    fn handle(&self, req: &Request, out: &mut Responder<'_>) {
        let _active = self.metrics.as_ref().map(|m| m.active_guard());
        if let Err((proto, failure)) = self.dispatch(req, out) {
            refuse(out, proto, &failure);
        }
    }

    fn log(&self, req: &Request, exchange: &Exchange, elapsed: Duration) {
        let route = if exchange.fields.route.is_empty() {
            "-"
        } else {
            exchange.fields.route
        };
        self.log_exchange(
            req.method(),
            route,
            exchange.status,
            exchange.bytes,
            elapsed,
            &exchange.fields,
        );
    }

    fn log_rejected(&self, head: &Head, rejection: &Rejection) {
        let mut note = crate::server::LogFields::default();
        note.set("note", "refused before the body");
        self.log_exchange(
            head.method(),
            rejection.route,
            rejection.status,
            rejection.body.len() as u64,
            Duration::ZERO,
            &note,
        );
    }
}

impl Gateway {
    fn log_exchange(
        &self,
        method: &str,
        route: &'static str,
        status: u16,
        bytes: u64,
        elapsed: Duration,
        facts: &crate::server::LogFields,
    ) {
        if let Some(m) = &self.metrics {
            m.http_request(route, method, status, elapsed);
        }
        if !log::enabled(LogLevel::Info) {
            return;
        }
        let method = guard::echo(method, guard::MAX_ECHO_BYTES);
        let mut fields = vec![
            ("method", Field::Str(&method)),
            ("route", Field::Str(route)),
            ("status", Field::Num(u64::from(status))),
            ("duration", Field::Secs(elapsed.as_secs_f64())),
            ("bytes", Field::Num(bytes)),
        ];
        for key in ["provider", "model", "note"] {
            if let Some(value) = facts.get(key) {
                fields.push((key, Field::Str(value)));
            }
        }
        log::event(LogLevel::Info, "request", &fields);
    }
}

/// The protocol a client speaks, from the route and, for the ambiguous
/// `GET /v1/models`, from the headers its SDK sends.
fn client_protocol(route: &Route, req: &Head) -> Protocol {
    match route {
        Route::AnthropicMessages | Route::AnthropicCountTokens => Protocol::Anthropic,
        Route::GeminiListModels | Route::GeminiGenerate { .. } => Protocol::Gemini,
        Route::OpenAiChat => Protocol::OpenAi,
        Route::Responses => Protocol::Responses,
        _ => {
            if req.header("anthropic-version").is_some() {
                Protocol::Anthropic
            } else if req.path().contains("/v1beta/")
                || req.header("x-goog-api-key").is_some()
                || req.query_param("key").is_some()
            {
                Protocol::Gemini
            } else {
                Protocol::OpenAi
            }
        }
    }
}

/// Model names that get a metrics label of their own: the configured
/// routes and the built-in model lists of the enabled providers. The
/// lists of openai-custom and claude-custom come from their upstream and
/// are not fetched for this; route their models in `model_routes` to give
/// them a label.
fn known_models(config: &Config, registry: &Registry) -> Vec<String> {
    let mut names: Vec<String> = config
        .model_routes
        .keys()
        .filter(|k| !k.ends_with('*'))
        .cloned()
        .collect();
    for &kind in registry.enabled() {
        if matches!(
            kind,
            ProviderKind::OpenAiCustom | ProviderKind::ClaudeCustom
        ) {
            continue;
        }
        for instance in registry.instances(kind) {
            if let Ok(models) = instance.provider.models() {
                names.extend(models.into_iter().map(|m| m.id));
            }
        }
    }
    names
}

/// The provider `model_routes` assigns to `model`: an exact key first,
/// then the longest `prefix*` key.
fn route_model(config: &Config, model: &str) -> Option<ProviderKind> {
    if let Some(kind) = config.model_routes.get(model) {
        return Some(*kind);
    }
    config
        .model_routes
        .iter()
        .filter_map(|(k, v)| {
            k.strip_suffix('*')
                .filter(|p| model.starts_with(p))
                .map(|p| (p.len(), *v))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_routes_prefer_exact_then_longest_prefix() {
        let mut config = Config::default();
        config
            .model_routes
            .insert("gpt-*".into(), ProviderKind::OpenAiCustom);
        config
            .model_routes
            .insert("gpt-4o-*".into(), ProviderKind::Mock);
        config
            .model_routes
            .insert("claude-x".into(), ProviderKind::ClaudeCustom);
        assert_eq!(
            route_model(&config, "gpt-4o-mini"),
            Some(ProviderKind::Mock)
        );
        assert_eq!(
            route_model(&config, "gpt-3.5"),
            Some(ProviderKind::OpenAiCustom)
        );
        assert_eq!(
            route_model(&config, "claude-x"),
            Some(ProviderKind::ClaudeCustom)
        );
        assert_eq!(route_model(&config, "other"), None);
    }

    #[test]
    fn cache_settings_follow_the_configuration() {
        let mut config = Config::default();
        config.cache.max_size_mb = 2;
        config.workers = 100;
        let s = cache::Settings::from_config(&config);
        assert_eq!(s.max_bytes, 2 << 20);
        assert_eq!(s.max_entry_bytes, (2 << 20) / 16);
        assert!(s.shards.is_power_of_two() && s.shards <= 32, "{}", s.shards);
        assert!(s.redis.is_none());
    }

    #[test]
    fn shards_follow_capacity_and_cores_not_workers() {
        use cache::Settings;
        assert_eq!(Settings::shards_for(1 << 20, 2), 8);
        assert_eq!(Settings::shards_for(1 << 20, 64), 16, "1 MB: 64 KB a shard");
        assert_eq!(Settings::shards_for(100 << 20, 64), 64);
        assert_eq!(Settings::shards_for(100 << 20, 3), 8);
        assert_eq!(Settings::shards_for(1000, 8), 1);
    }

    #[test]
    fn a_one_megabyte_cache_fills_with_fifty_kilobyte_answers() {
        let mut config = Config::default();
        config.cache.max_size_mb = 1;
        let cache = Cache::new(cache::Settings::from_config(&config));
        let body = vec![b'x'; 50 * 1024];
        let mut weight = 0;
        for i in 0..40 {
            let request = format!(r#"{{"messages":[{{"role":"user","content":"{i}"}}]}}"#);
            let key = cache::Key::new(
                ProviderKind::Mock,
                "m",
                Protocol::OpenAi,
                request.as_bytes(),
            )
            .unwrap();
            let entry = cache::Entry::new(200, "application/json", body.clone());
            weight = entry.weight(&key);
            cache.put(key, entry);
        }
        let stats = cache.stats();
        assert_eq!(stats.refused, 0, "{stats:?}");
        assert!(stats.bytes <= stats.capacity_bytes, "{stats:?}");
        assert!(
            stats.bytes + weight as u64 > stats.capacity_bytes,
            "full: no room for one more answer: {stats:?}"
        );
        assert_eq!(stats.entries, stats.capacity_bytes / weight as u64);
        assert_eq!(stats.evictions, 40 - stats.entries, "{stats:?}");
    }
}
