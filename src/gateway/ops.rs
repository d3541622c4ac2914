//! Operational endpoints: CORS preflight, health, metrics and dashboard,
//! cache management, model lists and token counting.

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::{CORS_ORIGIN, Failure, Gateway, State};
use crate::log;
use crate::metrics::{DASHBOARD_CONTENT_TYPE, DASHBOARD_HTML};
use crate::protocol::{self, ModelInfo, Protocol};
use crate::providers::ProviderKind;
use crate::server::response::rfc3339;
use crate::server::{Request, Responder};

const CORS_ALLOW_HEADERS: &str = "Content-Type, Authorization, x-api-key, x-goog-api-key, \
     anthropic-version, anthropic-beta, Model-Provider, Cache-Control, X-Requested-With, Accept, Origin";

const METRICS_OFF: &[u8] = b"metrics are disabled (--metrics-enabled=false)\n";

pub(super) fn preflight(req: &Request, out: &mut Responder<'_>) {
    let allow_headers = req
        .header("access-control-request-headers")
        .unwrap_or(CORS_ALLOW_HEADERS);
    let _ = out.send(
        204,
        &[
            CORS_ORIGIN,
            (
                "Access-Control-Allow-Methods",
                "GET, POST, PUT, DELETE, PATCH, OPTIONS",
            ),
            ("Access-Control-Allow-Headers", allow_headers),
            ("Access-Control-Max-Age", "86400"),
        ],
        b"",
    );
}

impl Gateway {
    pub(super) fn health(&self, state: &State, out: &mut Responder<'_>) {
        let draining = self.draining.load(Ordering::Relaxed);
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let providers: Vec<Value> = state
            .registry
            .enabled()
            .iter()
            .map(|&kind| {
                let instances: Vec<Value> = state
                    .registry
                    .instances(kind)
                    .iter()
                    .map(|i| {
                        let mut v = json!({"id": i.id, "requests": i.requests.load(Ordering::Relaxed),
                               "errors": i.errors.load(Ordering::Relaxed)});
                        if let Some(status) = i.provider.status() {
                            v["credentials"] = status;
                        }
                        v
                    })
                    .collect();
                json!({"provider": kind.name(), "protocol": kind.family().name(), "instances": instances})
            })
            .collect();
        let body = json!({
            "status": if draining { "draining" } else { "healthy" },
            "timestamp": rfc3339(millis),
            "provider": state.registry.default_kind().name(),
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "providers": providers,
        });
        let status = if draining { 503 } else { 200 };
        let _ = out.send_json(status, &[CORS_ORIGIN], body.to_string().as_bytes());
    }

    /// Brings the cache figures that only the cache knows (size, Redis
    /// health) into the metrics before they are read.
    fn refresh_cache_metrics(&self, state: &State) {
        let Some(m) = &self.metrics else { return };
        m.set_cache_size_bytes(state.cache.size_bytes() as u64);
        if state.config.redis.is_some() {
            let redis = state.cache.stats().redis;
            m.set_cache_redis_up(redis.connected);
            let seen = self.redis_errors_seen.swap(redis.errors, Ordering::Relaxed);
            for _ in seen..redis.errors {
                m.cache_redis_error();
            }
        }
    }

    pub(super) fn serve_metrics(&self, state: &State, req: &Request, out: &mut Responder<'_>) {
        let Some(m) = &self.metrics else {
            let _ = out.send(404, &[("Content-Type", "text/plain")], METRICS_OFF);
            return;
        };
        self.refresh_cache_metrics(state);
        let (content_type, body) = m.encode(req.header("accept"));
        let _ = out.send(200, &[("Content-Type", content_type)], body.as_bytes());
    }

    pub(super) fn dashboard(&self, out: &mut Responder<'_>) {
        if self.metrics.is_none() {
            let _ = out.send(404, &[("Content-Type", "text/plain")], METRICS_OFF);
            return;
        }
        let _ = out.send(
            200,
            &[
                ("Content-Type", DASHBOARD_CONTENT_TYPE),
                ("Cache-Control", "no-cache"),
            ],
            DASHBOARD_HTML.as_bytes(),
        );
    }

    pub(super) fn dashboard_summary(&self, state: &State, out: &mut Responder<'_>) {
        let Some(m) = &self.metrics else {
            let _ = out.send(404, &[("Content-Type", "text/plain")], METRICS_OFF);
            return;
        };
        self.refresh_cache_metrics(state);
        let mut summary = m.summary();
        summary["cache_enabled"] = json!(state.cache.is_enabled());
        let _ = out.send_json(
            200,
            &[("Cache-Control", "no-cache")],
            summary.to_string().as_bytes(),
        );
    }
}

pub(super) fn cache_stats(state: &State, out: &mut Responder<'_>) {
    let body = serde_json::to_vec(&state.cache.stats()).unwrap_or_default();
    let _ = out.send_json(200, &[CORS_ORIGIN], &body);
}

pub(super) fn cache_clear(state: &State, out: &mut Responder<'_>) {
    let cleared = state.cache.clear();
    log::info(&format!(
        "cache cleared: {} entries in memory, {} keys in Redis",
        cleared.entries,
        cleared
            .redis_keys
            .map_or_else(|| "no".to_owned(), |n| n.to_string())
    ));
    let body =
        json!({"cleared": true, "entries": cleared.entries, "redis_keys": cleared.redis_keys});
    let _ = out.send_json(200, &[CORS_ORIGIN], body.to_string().as_bytes());
}

pub(super) fn cache_switch(state: &State, out: &mut Responder<'_>, on: bool) {
    state.cache.set_enabled(on);
    log::info(if on {
        "cache enabled"
    } else {
        "cache disabled"
    });
    let _ = out.send_json(
        200,
        &[CORS_ORIGIN],
        json!({"enabled": on}).to_string().as_bytes(),
    );
}

pub(super) fn count_tokens(req: &Request, out: &mut Responder<'_>) -> Result<(), Failure> {
    let value: Value = serde_json::from_slice(&req.body)
        .map_err(|e| Failure::new(400, format!("Invalid JSON in request body: {e}")))?;
    let n = protocol::count_tokens(&value);
    let _ = out.send_json(
        200,
        &[CORS_ORIGIN],
        json!({"input_tokens": n}).to_string().as_bytes(),
    );
    Ok(())
}

fn collect_models(state: &State, prefix: Option<ProviderKind>) -> Vec<ModelInfo> {
    let kinds: Vec<ProviderKind> = match prefix {
        Some(kind) => vec![kind],
        None => state.registry.enabled().to_vec(),
    };
    let mut models = Vec::new();
    for kind in kinds {
        let Some(instance) = state.registry.pick(kind) else {
            continue;
        };
        match instance.provider.models() {
            Ok(list) => models.extend(list),
            Err(e) => log::warn(&format!("{kind}: model list unavailable: {}", e.message())),
        }
    }
    models
}

pub(super) fn list_models(
    state: &State,
    out: &mut Responder<'_>,
    prefix: Option<ProviderKind>,
    proto: Protocol,
) -> Result<(), Failure> {
    let body = protocol::models_list(proto, &collect_models(state, prefix));
    let _ = out.send_json(200, &[CORS_ORIGIN], body.to_string().as_bytes());
    Ok(())
}

pub(super) fn get_model(
    state: &State,
    out: &mut Responder<'_>,
    prefix: Option<ProviderKind>,
    proto: Protocol,
    id: &str,
) -> Result<(), Failure> {
    let found = collect_models(state, prefix)
        .into_iter()
        .find(|m| m.id == id)
        .ok_or_else(|| {
            Failure::new(
                404,
                format!("model {id} is not offered by any enabled provider"),
            )
        })?;
    let list = protocol::models_list(proto, std::slice::from_ref(&found));
    let one = match proto {
        Protocol::Gemini => list["models"][0].clone(),
        Protocol::OpenAi | Protocol::Anthropic | Protocol::Responses => list["data"][0].clone(),
    };
    let _ = out.send_json(200, &[CORS_ORIGIN], one.to_string().as_bytes());
    Ok(())
}

/// The handler of the `--metrics-port` listener: `GET /metrics` and
/// nothing else, so the port can be opened to a scraper alone.
pub struct MetricsOnly(pub std::sync::Arc<Gateway>);

impl crate::server::Handler for MetricsOnly {
    fn handle(&self, req: &Request, out: &mut Responder<'_>) {
        let path = req.path().trim_end_matches('/');
        if path == "/metrics" && matches!(req.method(), "GET" | "HEAD") {
            let state = self.0.current();
            self.0.serve_metrics(&state, req, out);
        } else {
            let _ = out.send(
                404,
                &[("Content-Type", "text/plain")],
                b"only /metrics is served on this port\n",
            );
        }
    }
}
