//! The request pipeline: route → authenticate → choose a provider →
//! convert → (cache) → call upstream with retries → convert back → answer.
//!
//! `mod.rs` owns the gateway's state and the dispatch on the route;
//! `infer` is the inference pipeline, stage by stage, so the cache
//! (around the whole-answer fetch), the metrics (around each upstream
//! attempt) and the load balancer (`Registry::pick`) each plug into one
//! place; `ops` answers the operational endpoints.

mod infer;
mod ops;
mod readers;

pub use ops::MetricsOnly;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::auth;
use crate::cache::{self, Cache};
use crate::config::{Config, LogLevel};
use crate::log::{self, Field};
use crate::metrics::{Metrics, MetricsOptions};
use crate::protocol::{self, Protocol};
use crate::providers::{ProviderKind, Registry};
use crate::routing::{self, Route};
use crate::server::{Handler, Request, Responder, ResponseState};

const CORS_ORIGIN: (&str, &str) = ("Access-Control-Allow-Origin", "*");

/// The gateway: a [`Handler`] over the provider registry.
pub struct Gateway {
    state: RwLock<Arc<State>>,
    metrics: Option<Arc<Metrics>>,
    started: Instant,
    draining: AtomicBool,
    /// Redis errors already reported to the metrics.
    redis_errors_seen: AtomicU64,
    /// Threads reading streamed upstream bodies.
    readers: readers::Readers,
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

/// The cache settings a configuration asks for.
fn cache_settings(config: &Config) -> cache::Settings {
    let max_bytes =
        usize::try_from(config.cache.max_size_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
    cache::Settings {
        enabled: config.cache.enabled,
        max_bytes,
        ttl: config.cache.ttl,
        max_entry_bytes: (max_bytes / 16).max(1),
        shards: cache::Settings::shards_for_workers(config.workers),
        coalesce_timeout: config.upstream.timeout,
        redis: config.redis.as_ref().map(|r| cache::RedisSettings {
            password: r.password.clone(),
            db: i64::try_from(r.db).ok(),
            ..cache::RedisSettings::new(r.addr.clone())
        }),
    }
}

fn build_cache(config: &Config) -> Arc<Cache> {
    let (cache, warning) = Cache::with_warning(cache_settings(config));
    if let Some(warning) = warning {
        log::warn(&warning);
    }
    Arc::new(cache)
}

impl Gateway {
    /// Builds the gateway, its providers, cache and metrics.
    pub fn new(config: Arc<Config>) -> Result<Gateway, crate::Error> {
        let registry = Registry::from_config(&config)?;
        let cache = build_cache(&config);
        let metrics = config.metrics.enabled.then(|| {
            Metrics::with_options(MetricsOptions {
                providers: config.model_providers.clone(),
                known_models: config
                    .model_routes
                    .keys()
                    .filter(|k| !k.ends_with('*'))
                    .cloned()
                    .collect(),
                redis: config.redis.is_some(),
                ..MetricsOptions::default()
            })
        });
        Ok(Gateway {
            state: RwLock::new(Arc::new(State {
                config,
                registry,
                cache,
            })),
            metrics,
            started: Instant::now(),
            draining: AtomicBool::new(false),
            redis_errors_seen: AtomicU64::new(0),
            readers: readers::Readers::new(),
        })
    }

    /// Applies a reloaded configuration: keys, providers, routes, upstream
    /// settings, cache settings and logging. The cache keeps its contents
    /// unless its size, TTL or Redis settings changed. The listen address,
    /// the worker count and switching metrics on or off need a restart;
    /// the caller reports those.
    pub fn reload(&self, config: Arc<Config>) -> Result<(), crate::Error> {
        let registry = Registry::from_config(&config)?;
        let running = self.current();
        let old = cache_settings(&running.config);
        let new = cache_settings(&config);
        let same_store = old.max_bytes == new.max_bytes
            && old.ttl == new.ttl
            && old.redis.as_ref().map(|r| (&r.addr, r.db))
                == new.redis.as_ref().map(|r| (&r.addr, r.db))
            && old.redis.as_ref().map(|r| &r.password) == new.redis.as_ref().map(|r| &r.password);
        let cache = if same_store {
            running.cache.set_enabled(config.cache.enabled);
            Arc::clone(&running.cache)
        } else {
            build_cache(&config)
        };
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
        let (prefix, path) = routing::split_provider_prefix(req.path());
        let route = routing::route(req.method(), path);
        out.log.route = route.template();
        let proto = client_protocol(&route, req);
        // Routes answered without authentication.
        match route {
            Route::Preflight => {
                ops::preflight(req, out);
                return Ok(());
            }
            Route::Health => {
                self.health(state, out);
                return Ok(());
            }
            Route::Metrics => {
                self.serve_metrics(state, req, out);
                return Ok(());
            }
            Route::Dashboard => {
                self.dashboard(out);
                return Ok(());
            }
            Route::DashboardSummary => {
                self.dashboard_summary(state, out);
                return Ok(());
            }
            Route::NotFound => {
                let message = format!("no route for {} {}", req.method(), req.path());
                return Err((proto, Failure::new(404, message)));
            }
            Route::MethodNotAllowed(allowed) => {
                let body = protocol::error_body(proto, 405, &format!("use {allowed} for {path}"));
                let _ = out.send_json(405, &[("Allow", allowed), CORS_ORIGIN], &body);
                return Ok(());
            }
            _ => {}
        }
        if !auth::authorized(req, &state.config.api_keys) {
            let message = "Unauthorized: API key is invalid or missing. Send it as \
                           `Authorization: Bearer <key>`, `x-api-key`, `x-goog-api-key` or `?key=`.";
            return Err((proto, Failure::new(401, message)));
        }
        if let Some(kind) = prefix
            && !state.registry.is_enabled(kind)
        {
            let message = format!("Provider {kind} is not enabled on this gateway.");
            return Err((proto, Failure::new(400, message)));
        }
        let result = match route {
            Route::OpenAiChat | Route::AnthropicMessages | Route::Responses => {
                let call = infer::Call {
                    client: proto,
                    prefix,
                    path_model: None,
                    path_stream: false,
                };
                self.infer(state, req, out, call)
            }
            Route::GeminiGenerate { model, stream } => {
                let call = infer::Call {
                    client: proto,
                    prefix,
                    path_model: Some(model),
                    path_stream: stream,
                };
                self.infer(state, req, out, call)
            }
            Route::AnthropicCountTokens => ops::count_tokens(req, out),
            Route::ListModels | Route::GeminiListModels => {
                ops::list_models(state, out, prefix, proto)
            }
            Route::GetModel(model) => ops::get_model(state, out, prefix, proto, &model),
            Route::CacheStats => {
                ops::cache_stats(state, out);
                Ok(())
            }
            Route::CacheClear => {
                ops::cache_clear(state, out);
                Ok(())
            }
            Route::CacheSwitch(on) => {
                ops::cache_switch(state, out, on);
                Ok(())
            }
            Route::Preflight
            | Route::Health
            | Route::Metrics
            | Route::Dashboard
            | Route::DashboardSummary
            | Route::NotFound
            | Route::MethodNotAllowed(_) => Ok(()),
        };
        result.map_err(|f| (proto, f))
    }
}

impl Handler for Gateway {
    fn handle(&self, req: &Request, out: &mut Responder<'_>) {
        let _active = self.metrics.as_ref().map(|m| m.active_guard());
        if let Err((proto, failure)) = self.dispatch(req, out) {
            if out.state() != ResponseState::Pending {
                return;
            }
            out.log.note.get_or_insert_with(|| failure.message.clone());
            let body = protocol::error_body(proto, failure.status, &failure.message);
            let _ = out.send_json(failure.status, &[CORS_ORIGIN], &body);
        }
    }

    fn log(&self, req: &Request, out: &Responder<'_>, elapsed: Duration) {
        let route = if out.log.route.is_empty() {
            "-"
        } else {
            out.log.route
        };
        if let Some(m) = &self.metrics {
            m.http_request(route, req.method(), out.status(), elapsed);
        }
        if !log::enabled(LogLevel::Info) {
            return;
        }
        let mut fields = vec![
            ("method", Field::Str(req.method())),
            ("route", Field::Str(route)),
            ("status", Field::Num(u64::from(out.status()))),
            ("duration", Field::Secs(elapsed.as_secs_f64())),
            ("bytes", Field::Num(out.bytes())),
        ];
        if let Some(p) = out.log.provider {
            fields.push(("provider", Field::Str(p)));
        }
        if let Some(m) = out.log.model.as_deref() {
            fields.push(("model", Field::Str(m)));
        }
        if let Some(n) = out.log.note.as_deref() {
            fields.push(("note", Field::Str(n)));
        }
        log::event(LogLevel::Info, "request", &fields);
    }
}

/// The protocol a client speaks, from the route and, for the ambiguous
/// `GET /v1/models`, from the headers its SDK sends.
fn client_protocol(route: &Route, req: &Request) -> Protocol {
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
        let s = cache_settings(&config);
        assert_eq!(s.max_bytes, 2 << 20);
        assert_eq!(s.max_entry_bytes, (2 << 20) / 16);
        assert!(s.shards >= 200 && s.shards.is_power_of_two());
        assert!(s.redis.is_none());
    }
}
