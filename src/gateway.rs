//! The request pipeline: route → authenticate → choose a provider →
//! convert → call upstream (with retries) → convert back → answer.
//!
//! Each stage is a function below, in that order, so that the cache
//! (between conversion and the upstream call), the metrics (around the
//! upstream call) and the load balancer (`Registry::pick`) each plug into
//! one place.

use std::borrow::Cow;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read};
use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::auth;
use crate::config::{Config, LogLevel};
use crate::log::{self, Field};
use crate::protocol::{self, GeminiFraming, ModelInfo, Protocol, StreamConverter};
use crate::providers::{
    Instance, ProviderKind, Registry, UpstreamError, UpstreamRequest, UpstreamResponse,
};
use crate::routing::{self, Route};
use crate::server::response::rfc3339;
use crate::server::{Handler, Request, Responder};

/// Largest upstream answer read whole (non-streamed).
const MAX_UPSTREAM_BODY: u64 = 64 << 20;
/// Largest upstream error body relayed.
const MAX_UPSTREAM_ERROR_BODY: u64 = 1 << 20;
/// Longest back-off between two attempts, whatever the base delay.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

const CORS_ORIGIN: (&str, &str) = ("Access-Control-Allow-Origin", "*");
const CORS_ALLOW_HEADERS: &str = "Content-Type, Authorization, x-api-key, x-goog-api-key, \
     anthropic-version, anthropic-beta, Model-Provider, Cache-Control, X-Requested-With, Accept, Origin";

/// The gateway: a [`Handler`] over the provider registry.
pub struct Gateway {
    state: RwLock<Arc<State>>,
    started: Instant,
    draining: AtomicBool,
}

/// What a SIGHUP reload replaces; each request holds the version it
/// started with, so a reload never changes a request midway.
struct State {
    config: Arc<Config>,
    registry: Registry,
}

/// What the route says about an inference request.
struct Call {
    /// Protocol the client speaks.
    client: Protocol,
    /// Provider named by a path prefix.
    prefix: Option<ProviderKind>,
    /// Model named in the path (Gemini).
    path_model: Option<String>,
    /// Streaming requested by the path (Gemini `streamGenerateContent`).
    path_stream: bool,
}

/// A request the pipeline could not serve, rendered in the client's protocol.
struct Failure {
    status: u16,
    message: String,
    retry_after: Option<String>,
}

impl Failure {
    fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl Gateway {
    /// Builds the gateway and its providers.
    pub fn new(config: Arc<Config>) -> Result<Gateway, crate::Error> {
        let registry = Registry::from_config(&config)?;
        Ok(Gateway {
            state: RwLock::new(Arc::new(State { config, registry })),
            started: Instant::now(),
            draining: AtomicBool::new(false),
        })
    }

    /// Applies a reloaded configuration: keys, providers, routes, upstream
    /// timeouts and logging. The listen address and the worker count need
    /// a restart; the caller reports those.
    pub fn reload(&self, config: Arc<Config>) -> Result<(), crate::Error> {
        let registry = Registry::from_config(&config)?;
        let fresh = Arc::new(State { config, registry });
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
        match route {
            Route::Preflight => {
                self.preflight(req, out);
                return Ok(());
            }
            Route::Health => {
                self.health(state, out);
                return Ok(());
            }
            Route::NotFound => {
                return Err((
                    proto,
                    Failure::new(404, format!("no route for {} {}", req.method(), req.path())),
                ));
            }
            Route::MethodNotAllowed(allowed) => {
                let body = protocol::error_body(proto, 405, &format!("use {allowed} for {path}"));
                let _ = out.send_json(405, &[("Allow", allowed), CORS_ORIGIN], &body);
                return Ok(());
            }
            _ => {}
        }
        if !auth::authorized(req, &state.config.api_keys) {
            return Err((
                proto,
                Failure::new(
                    401,
                    "Unauthorized: API key is invalid or missing. Send it as `Authorization: Bearer <key>`, \
                     `x-api-key`, `x-goog-api-key` or `?key=`.",
                ),
            ));
        }
        if let Some(kind) = prefix
            && !state.registry.is_enabled(kind)
        {
            return Err((
                proto,
                Failure::new(
                    400,
                    format!("Provider {kind} is not enabled on this gateway."),
                ),
            ));
        }
        let result = match route {
            Route::OpenAiChat | Route::AnthropicMessages => {
                let call = Call {
                    client: proto,
                    prefix,
                    path_model: None,
                    path_stream: false,
                };
                self.infer(state, req, out, call)
            }
            Route::GeminiGenerate { model, stream } => {
                let call = Call {
                    client: proto,
                    prefix,
                    path_model: Some(model),
                    path_stream: stream,
                };
                self.infer(state, req, out, call)
            }
            Route::AnthropicCountTokens => self.count_tokens(req, out),
            Route::ListModels | Route::GeminiListModels => {
                self.list_models(state, req, out, prefix, proto)
            }
            Route::GetModel(model) => self.get_model(state, req, out, prefix, proto, &model),
            Route::Preflight | Route::Health | Route::NotFound | Route::MethodNotAllowed(_) => {
                Ok(())
            }
        };
        result.map_err(|f| (proto, f))
    }

    fn preflight(&self, req: &Request, out: &mut Responder<'_>) {
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

    fn health(&self, state: &State, out: &mut Responder<'_>) {
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
                    .map(|i| json!({"id": i.id, "requests": i.requests.load(Ordering::Relaxed),
                                    "errors": i.errors.load(Ordering::Relaxed)}))
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
        let _ = out.send_json(
            if draining { 503 } else { 200 },
            &[CORS_ORIGIN],
            body.to_string().as_bytes(),
        );
    }

    /// Provider choice, first match wins: path prefix, `Model-Provider`
    /// header, `model_routes`, the default provider.
    fn select(
        &self,
        state: &State,
        prefix: Option<ProviderKind>,
        req: &Request,
        model: &str,
    ) -> Result<ProviderKind, Failure> {
        if let Some(kind) = prefix {
            return Ok(kind);
        }
        if let Some(name) = req.header("model-provider") {
            let kind = ProviderKind::parse(name.trim()).ok_or_else(|| {
                Failure::new(
                    400,
                    format!("Provider {name} in header is not a known provider."),
                )
            })?;
            if !state.registry.is_enabled(kind) {
                return Err(Failure::new(
                    400,
                    format!("Provider {kind} in header is not enabled on this gateway."),
                ));
            }
            return Ok(kind);
        }
        if let Some(kind) = route_model(&state.config, model) {
            return Ok(kind);
        }
        Ok(state.registry.default_kind())
    }

    fn infer(
        &self,
        state: &State,
        req: &Request,
        out: &mut Responder<'_>,
        call: Call,
    ) -> Result<(), Failure> {
        let Call {
            client,
            prefix,
            path_model,
            path_stream,
        } = call;
        let body: &[u8] = if req.body.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &req.body
        };
        let info = protocol::inspect(client, body).map_err(|e| Failure::new(400, e.message))?;
        let model = path_model
            .or(info.model)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| Failure::new(400, "The request has no model: set the `model` field."))?;
        let stream = info.stream || path_stream;
        out.log.model = Some(model.clone());
        let kind = self.select(state, prefix, req, &model)?;
        out.log.provider = Some(kind.name());
        let instance = state.registry.pick(kind).ok_or_else(|| {
            Failure::new(503, format!("Provider {kind} has no available instance."))
        })?;
        let family = kind.family();
        let upstream_body = if family == client {
            Cow::Borrowed(body)
        } else {
            let value: Value = serde_json::from_slice(body)
                .map_err(|e| Failure::new(400, format!("Invalid JSON in request body: {e}")))?;
            let converted = protocol::convert_request(client, family, &value, &model, stream)
                .map_err(|e| Failure::new(400, e.message))?;
            Cow::Owned(
                serde_json::to_vec(&converted).map_err(|e| Failure::new(500, e.to_string()))?,
            )
        };
        if state.config.log.prompts && log::enabled(LogLevel::Info) {
            log::event(
                LogLevel::Info,
                "prompt",
                &[("body", Field::Str(&String::from_utf8_lossy(&upstream_body)))],
            );
        }
        let upstream = UpstreamRequest {
            model: model.clone(),
            body: upstream_body,
            stream,
            forward_headers: forward_headers(req, client, family),
        };
        let resp = self.call_with_retries(state, &instance, &upstream)?;
        if resp.status >= 400 {
            return Err(self.relay_upstream_error(client, family, resp, out));
        }
        if stream {
            self.stream_answer(req, out, client, family, &model, resp);
            return Ok(());
        }
        let mut raw =
            Vec::with_capacity(resp.content_length.unwrap_or(0).min(MAX_UPSTREAM_BODY) as usize);
        resp.body
            .take(MAX_UPSTREAM_BODY)
            .read_to_end(&mut raw)
            .map_err(|e| Failure::new(502, format!("upstream answer could not be read: {e}")))?;
        let answer = if family == client {
            raw
        } else {
            let value: Value = serde_json::from_slice(&raw)
                .map_err(|_| Failure::new(502, "upstream answered with invalid JSON"))?;
            let converted =
                protocol::convert_response(family, client, &value, &model).map_err(|e| {
                    Failure::new(
                        502,
                        format!("upstream answer could not be converted: {}", e.message),
                    )
                })?;
            serde_json::to_vec(&converted).map_err(|e| Failure::new(500, e.to_string()))?
        };
        if state.config.log.prompts && log::enabled(LogLevel::Info) {
            log::event(
                LogLevel::Info,
                "answer",
                &[("body", Field::Str(&String::from_utf8_lossy(&answer)))],
            );
        }
        let _ = out.send_json(200, &[CORS_ORIGIN], &answer);
        Ok(())
    }

    /// Calls the upstream; retries connect failures, 429 and 5xx with
    /// exponential, fully jittered back-off. Nothing has reached the client
    /// yet, so every retry is safe.
    fn call_with_retries(
        &self,
        state: &State,
        instance: &Instance,
        req: &UpstreamRequest,
    ) -> Result<UpstreamResponse, Failure> {
        let limits = &state.config.upstream;
        let mut attempt = 0;
        loop {
            let result = instance.provider.call(req);
            let retryable = match &result {
                Ok(resp) => matches!(resp.status, 429 | 500 | 502 | 503 | 504),
                Err(UpstreamError::Connect(_)) => true,
                Err(_) => false,
            };
            instance.record(retryable || result.is_err());
            if !retryable || attempt >= limits.max_retries {
                return result.map_err(|e| Failure::new(e.status(), e.message()));
            }
            let exp = limits
                .base_delay
                .saturating_mul(1 << attempt.min(16))
                .min(MAX_RETRY_DELAY);
            let mut delay = jitter(exp);
            if let Ok(resp) = &result {
                match resp.retry_after.as_deref().and_then(parse_retry_after) {
                    Some(wait) if wait > MAX_RETRY_DELAY => {
                        return result.map_err(|e| Failure::new(e.status(), e.message()));
                    }
                    Some(wait) => delay = wait,
                    None => {}
                }
            }
            log::debug(&format!(
                "retrying {} after {delay:?} (attempt {})",
                instance.id,
                attempt + 1
            ));
            drop(result);
            thread::sleep(delay);
            attempt += 1;
        }
    }

    fn relay_upstream_error(
        &self,
        client: Protocol,
        family: Protocol,
        resp: UpstreamResponse,
        out: &mut Responder<'_>,
    ) -> Failure {
        let status = resp.status;
        let retry_after = resp.retry_after;
        let mut raw = Vec::new();
        let _ = resp
            .body
            .take(MAX_UPSTREAM_ERROR_BODY)
            .read_to_end(&mut raw);
        let body = protocol::relay_error(client, family, status, &raw);
        out.log.note = Some(format!("upstream_status={status}"));
        let mut headers = vec![CORS_ORIGIN];
        if let Some(r) = retry_after.as_deref() {
            headers.push(("Retry-After", r));
        }
        let _ = out.send_json(status, &headers, &body);
        // Already answered; the caller only records the failure.
        Failure {
            status,
            message: String::new(),
            retry_after: None,
        }
    }

    fn stream_answer(
        &self,
        req: &Request,
        out: &mut Responder<'_>,
        client: Protocol,
        family: Protocol,
        model: &str,
        resp: UpstreamResponse,
    ) {
        let framing = match req.query_param("alt").as_deref() {
            Some("sse") => GeminiFraming::Sse,
            _ => GeminiFraming::JsonArray,
        };
        let json_array = client == Protocol::Gemini && framing == GeminiFraming::JsonArray;
        let content_type = if json_array {
            "application/json"
        } else {
            "text/event-stream"
        };
        let mut converter = StreamConverter::new(family, client, model, framing);
        let headers = [
            ("Content-Type", content_type),
            ("Cache-Control", "no-cache"),
            ("X-Accel-Buffering", "no"),
            CORS_ORIGIN,
        ];
        let Ok(mut writer) = out.start_stream(200, &headers) else {
            return;
        };
        let mut upstream = resp.body;
        let mut buf = vec![0u8; 16 * 1024];
        let mut pending = Vec::with_capacity(4096);
        loop {
            match upstream.read(&mut buf) {
                Ok(0) => {
                    converter.finish(&mut pending);
                    break;
                }
                Ok(n) => {
                    converter.feed(&buf[..n], &mut pending);
                    if !pending.is_empty() {
                        if writer.send(&pending).is_err() {
                            // The client left: dropping `upstream` closes the
                            // upstream connection and stops generation.
                            return;
                        }
                        pending.clear();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let (status, message) = if e.kind() == io::ErrorKind::TimedOut {
                        (504, "upstream stopped sending (idle timeout)")
                    } else {
                        (502, "upstream connection lost mid-stream")
                    };
                    converter.fail(status, message, &mut pending);
                    break;
                }
            }
        }
        let usage = converter.usage();
        let sent = writer.send(&pending).is_ok();
        if sent {
            let _ = writer.finish();
        }
        out.log.note = Some(format!(
            "tokens_in={} tokens_out={}",
            usage.prompt, usage.completion
        ));
    }

    fn count_tokens(&self, req: &Request, out: &mut Responder<'_>) -> Result<(), Failure> {
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

    fn collect_models(&self, state: &State, prefix: Option<ProviderKind>) -> Vec<ModelInfo> {
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

    fn list_models(
        &self,
        state: &State,
        _req: &Request,
        out: &mut Responder<'_>,
        prefix: Option<ProviderKind>,
        proto: Protocol,
    ) -> Result<(), Failure> {
        let models = self.collect_models(state, prefix);
        let body = protocol::models_list(proto, &models);
        let _ = out.send_json(200, &[CORS_ORIGIN], body.to_string().as_bytes());
        Ok(())
    }

    fn get_model(
        &self,
        state: &State,
        _req: &Request,
        out: &mut Responder<'_>,
        prefix: Option<ProviderKind>,
        proto: Protocol,
        id: &str,
    ) -> Result<(), Failure> {
        let models = self.collect_models(state, prefix);
        let found = models.into_iter().find(|m| m.id == id).ok_or_else(|| {
            Failure::new(
                404,
                format!("model {id} is not offered by any enabled provider"),
            )
        })?;
        let list = protocol::models_list(proto, std::slice::from_ref(&found));
        let one = match proto {
            Protocol::Gemini => list["models"][0].clone(),
            Protocol::OpenAi | Protocol::Anthropic => list["data"][0].clone(),
        };
        let _ = out.send_json(200, &[CORS_ORIGIN], one.to_string().as_bytes());
        Ok(())
    }
}

impl Handler for Gateway {
    fn handle(&self, req: &Request, out: &mut Responder<'_>) {
        if let Err((proto, failure)) = self.dispatch(req, out) {
            if out.state() != crate::server::ResponseState::Pending {
                return;
            }
            out.log.note.get_or_insert_with(|| failure.message.clone());
            let body = protocol::error_body(proto, failure.status, &failure.message);
            let mut headers = vec![CORS_ORIGIN];
            if let Some(r) = failure.retry_after.as_deref() {
                headers.push(("Retry-After", r));
            }
            let _ = out.send_json(failure.status, &headers, &body);
        }
    }

    fn log(&self, req: &Request, out: &Responder<'_>, elapsed: Duration) {
        if !log::enabled(LogLevel::Info) {
            return;
        }
        let mut fields = vec![
            ("method", Field::Str(req.method())),
            (
                "route",
                Field::Str(if out.log.route.is_empty() {
                    "-"
                } else {
                    out.log.route
                }),
            ),
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

/// Client headers that keep their meaning upstream.
fn forward_headers(
    req: &Request,
    client: Protocol,
    family: Protocol,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if client == Protocol::Anthropic && family == Protocol::Anthropic {
        for name in ["anthropic-version", "anthropic-beta"] {
            if let Some(v) = req.header(name) {
                out.push((name, v.to_owned()));
            }
        }
    }
    out
}

/// `Retry-After` in seconds (the HTTP-date form is treated as unknown).
fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A uniformly random duration in `[0, max]` ("full jitter").
fn jitter(max: Duration) -> Duration {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let nanos = max.as_nanos().min(u128::from(u64::MAX)) as u64;
    Duration::from_nanos(if nanos == 0 { 0 } else { random % (nanos + 1) })
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
    fn jitter_stays_within_bounds() {
        for _ in 0..100 {
            assert!(jitter(Duration::from_millis(10)) <= Duration::from_millis(10));
        }
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }
}
