//! Operational endpoints: CORS preflight, health, metrics, cache
//! management, model lists and token counting.

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::guard::{MAX_ECHO_BYTES, echo};
use super::{Failure, Gateway, State, balance, infer};
use crate::log;
use crate::metrics::{ClusterFigures, Metrics, NodeState};
use crate::protocol::{self, ModelInfo, Protocol};
use crate::providers::ProviderKind;
use crate::server::{Request, Responder};
use crate::time::rfc3339;

pub(super) const METRICS_OFF: &[u8] = b"metrics are disabled (--metrics-enabled=false)\n";

/// A CORS preflight. Origins not in `--cors-origins` get no CORS headers,
/// so the browser refuses the real request; allowed ones get a fixed list
/// of request headers (the SDKs' own), never an echo of what was asked.
/// `OPTIONS *` (asterisk form) asks about the server as a whole.
pub(super) fn preflight(state: &State, req: &Request, out: &mut Responder<'_>) {
    let methods = "GET, POST, PUT, DELETE, OPTIONS";
    if super::guard::allowed_origin(&state.config.cors_origins, &req.head).is_none() {
        let _ = out.send(204, &[("Allow", methods)], b"");
        return;
    }
    let _ = out.send(
        204,
        &[
            ("Access-Control-Allow-Methods", methods),
            (
                "Access-Control-Allow-Headers",
                super::guard::CORS_ALLOW_HEADERS,
            ),
            ("Access-Control-Max-Age", "86400"),
        ],
        b"",
    );
}

impl Gateway {
    /// `GET /health`: status and readiness for anyone; the providers,
    /// their counters and credential status (file paths, refreshes, last
    /// errors) only for a request that may use the gateway (`detailed`).
    pub(super) fn health(&self, state: &State, out: &mut Responder<'_>, detailed: bool) {
        let draining = self.draining.load(Ordering::Relaxed);
        let status = if draining { 503 } else { 200 };
        if !detailed {
            let body = json!({
                "status": if draining { "draining" } else { "healthy" },
                "ready": !draining,
            });
            let _ = out.send_json(status, &[], body.to_string().as_bytes());
            return;
        }
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let now = std::time::Instant::now();
        let providers: Vec<Value> = state
            .registry
            .enabled()
            .iter()
            .map(|&kind| {
                let instances = balance::health_instances(state, kind, now);
                json!({"provider": kind.name(), "protocol": kind.family().name(), "instances": instances})
            })
            .collect();
        let body = json!({
            "status": if draining { "draining" } else { "healthy" },
            "ready": !draining,
            "timestamp": rfc3339(millis),
            "provider": state.registry.default_kind().name(),
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "providers": providers,
        });
        let _ = out.send_json(status, &[], body.to_string().as_bytes());
    }

    /// Brings the cache figures that only the cache knows (size, Redis
    /// health) into the metrics before they are read.
    pub(super) fn refresh_cache_metrics(&self, state: &State) {
        let Some(m) = &self.metrics else { return };
        m.set_cache_size_bytes(state.cache.size_bytes() as u64);
        m.cache_refused(state.cache.take_refused());
        if state.config.redis.is_some() {
            let redis = state.cache.stats().redis;
            m.set_cache_redis_up(redis.connected);
            let seen = self.redis_errors_seen.swap(redis.errors, Ordering::Relaxed);
            for _ in seen..redis.errors {
                m.cache_redis_error();
            }
        }
    }

    /// Brings the cluster's figures into the metrics before they are read.
    pub(super) fn refresh_cluster_metrics(&self) {
        let (Some(m), Some(status)) = (&self.metrics, self.cluster_status()) else {
            return;
        };
        let state = |name: &str| match name {
            "alive" => NodeState::Alive,
            "suspect" => NodeState::Suspect,
            _ => NodeState::Dead,
        };
        m.set_cluster(&ClusterFigures {
            nodes: status
                .nodes
                .iter()
                .map(|n| (n.node_id.clone(), state(n.state), n.last_heartbeat_ms_ago))
                .collect(),
            dropped: status.dropped.iter().map(|(r, n)| (*r, *n)).collect(),
            sent_datagrams: status.sent_datagrams,
            received_datagrams: status.received_datagrams,
            sent_bytes: status.sent_bytes,
            received_bytes: status.received_bytes,
            settings_version: status.settings_version,
        });
    }

    /// The metrics, brought up to date with the cache, the cluster and the
    /// balancer; with metrics off, a 404 is sent and there are none.
    pub(super) fn fresh_metrics(&self, state: &State, out: &mut Responder<'_>) -> Option<&Metrics> {
        let Some(m) = &self.metrics else {
            let _ = out.send(404, &[("Content-Type", "text/plain")], METRICS_OFF);
            return None;
        };
        self.refresh_cache_metrics(state);
        self.refresh_cluster_metrics();
        self.refresh_balancer_metrics(state);
        Some(m)
    }

    pub(super) fn serve_metrics(&self, state: &State, req: &Request, out: &mut Responder<'_>) {
        let Some(m) = self.fresh_metrics(state, out) else {
            return;
        };
        let (content_type, body) = m.encode(req.header("accept"));
        let _ = out.send(200, &[("Content-Type", content_type)], body.as_bytes());
    }
}

pub(super) fn cache_stats(state: &State, out: &mut Responder<'_>) {
    let body = serde_json::to_vec(&state.cache.stats()).unwrap_or_default();
    let _ = out.send_json(200, &[], &body);
}

pub(super) fn cache_clear(gateway: &Gateway, out: &mut Responder<'_>) {
    let (cleared, version) = gateway.admin_clear_cache();
    let mut body =
        json!({"cleared": true, "entries": cleared.entries, "redis_keys": cleared.redis_keys});
    propagating(&mut body, version);
    let _ = out.send_json(200, &[], body.to_string().as_bytes());
}

pub(super) fn cache_switch(gateway: &Gateway, out: &mut Responder<'_>, on: bool) {
    let version = gateway.admin_cache_enabled(on);
    let mut body = json!({"enabled": on});
    propagating(&mut body, version);
    let _ = out.send_json(200, &[], body.to_string().as_bytes());
}

/// In a cluster, an admin answer says the change is on its way to the
/// other nodes, with the settings version that shows it arrived there
/// (`settings_version` in their `GET /cluster/status`).
pub(super) fn propagating(body: &mut Value, version: Option<u64>) {
    if let Some(version) = version {
        body["cluster"] = json!({"propagating": true, "settings_version": version});
    }
}

/// `GET /cluster/status`: the membership as this node sees it; 404 in
/// the client's protocol when clustering is off.
pub(super) fn cluster_status(gateway: &Gateway, out: &mut Responder<'_>) -> Result<(), Failure> {
    let status = gateway.cluster_status().ok_or_else(|| {
        Failure::new(
            404,
            "clustering is off on this node (start it with --cluster-enabled)",
        )
    })?;
    let _ = out.send_json(200, &[], status.to_json().to_string().as_bytes());
    Ok(())
}

/// A local estimate for `/v1/messages/count_tokens`, after the checks
/// `/v1/messages` makes: a body it would refuse is refused here too.
pub(super) fn count_tokens(
    state: &State,
    req: &Request,
    out: &mut Responder<'_>,
    prefix: Option<ProviderKind>,
) -> Result<(), Failure> {
    let (body, _, model) = infer::probe(Protocol::Anthropic, &req.body, None)?;
    infer::select(state, prefix, req.header("model-provider"), &model)?;
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Failure::new(400, format!("Invalid JSON in request body: {e}")))?;
    protocol::validate_request(Protocol::Anthropic, &value)
        .map_err(|e| Failure::new(400, e.message))?;
    let n = protocol::count_tokens(&value);
    let _ = out.send_json(200, &[], json!({"input_tokens": n}).to_string().as_bytes());
    Ok(())
}

fn collect_models(state: &State, prefix: Option<ProviderKind>) -> Vec<ModelInfo> {
    let kinds: Vec<ProviderKind> = match prefix {
        Some(kind) => vec![kind],
        None => state.registry.enabled().to_vec(),
    };
    let mut models = Vec::new();
    for kind in kinds {
        // The instances of a provider offer the same models: ask one.
        let instances = state.registry.instances(kind);
        let Some(instance) = instances.iter().find(|i| !i.member.settings().disabled) else {
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
    let _ = out.send_json(200, &[], body.to_string().as_bytes());
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
                format!(
                    "model {} is not offered by any enabled provider",
                    echo(id, MAX_ECHO_BYTES)
                ),
            )
        })?;
    let list = protocol::models_list(proto, std::slice::from_ref(&found));
    let one = match proto {
        Protocol::Gemini => list["models"][0].clone(),
        Protocol::OpenAi | Protocol::Anthropic | Protocol::Responses => list["data"][0].clone(),
    };
    let _ = out.send_json(200, &[], one.to_string().as_bytes());
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
