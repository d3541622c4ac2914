//! Request routing: (method, path) → [`Route`], plus the provider chosen
//! by a path prefix. Pure, so it is unit-tested and fuzzed directly.

use crate::features::{CLUSTER, DASHBOARD, METRICS, WEBSOCKET};
use crate::provider_kind::ProviderKind;

/// What a request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /health`.
    Health,
    /// `POST /v1/chat/completions`.
    OpenAiChat,
    /// `POST /v1/responses` (the OpenAI Responses API).
    Responses,
    /// `GET /v1/models` (protocol chosen by the client's headers).
    ListModels,
    /// `POST /v1/messages`.
    AnthropicMessages,
    /// `POST /v1/messages/count_tokens`.
    AnthropicCountTokens,
    /// `GET /v1beta/models`.
    GeminiListModels,
    /// `GET /v1beta/models/{model}` or `GET /v1/models/{model}`.
    GetModel(String),
    /// `POST /v1beta/models/{model}:generateContent`.
    GeminiGenerate {
        /// Model from the path.
        model: String,
        /// `streamGenerateContent` rather than `generateContent`.
        stream: bool,
    },
    /// `GET /metrics`.
    Metrics,
    /// `GET /dashboard`.
    Dashboard,
    /// `GET /dashboard/summary.json`.
    DashboardSummary,
    /// `GET /cache/stats`.
    CacheStats,
    /// `DELETE /cache/clear`.
    CacheClear,
    /// `PUT /cache/enable` (true) or `PUT /cache/disable` (false).
    CacheSwitch(bool),
    /// `GET /ws`: the WebSocket API.
    WebSocket,
    /// `GET /cluster/status`.
    ClusterStatus,
    /// `GET /loadbalancer/instances`.
    LoadBalancerInstances,
    /// `GET /loadbalancer/metrics`.
    LoadBalancerMetrics,
    /// `PUT /loadbalancer/algorithm`.
    LoadBalancerAlgorithm,
    /// A CORS preflight.
    Preflight,
    /// A known path with the wrong method.
    MethodNotAllowed(&'static str),
    /// Nothing here.
    NotFound,
}

impl Route {
    /// Whether the route changes the gateway for every client, and so
    /// needs an admin key when `--admin-api-key` is set.
    pub fn needs_admin(&self) -> bool {
        matches!(
            self,
            Self::CacheClear | Self::CacheSwitch(_) | Self::LoadBalancerAlgorithm
        )
    }

    /// The route template, a bounded label for logs and metrics.
    pub fn template(&self) -> &'static str {
        match self {
            Self::Health => "/health",
            Self::OpenAiChat => "/v1/chat/completions",
            Self::Responses => "/v1/responses",
            Self::ListModels => "/v1/models",
            Self::AnthropicMessages => "/v1/messages",
            Self::AnthropicCountTokens => "/v1/messages/count_tokens",
            Self::GeminiListModels => "/v1beta/models",
            Self::GetModel(_) => "/v1beta/models/{model}",
            Self::GeminiGenerate { stream: false, .. } => "/v1beta/models/{model}:generateContent",
            Self::GeminiGenerate { stream: true, .. } => {
                "/v1beta/models/{model}:streamGenerateContent"
            }
            Self::Metrics => "/metrics",
            Self::Dashboard => "/dashboard",
            Self::DashboardSummary => "/dashboard/summary.json",
            Self::CacheStats => "/cache/stats",
            Self::CacheClear => "/cache/clear",
            Self::CacheSwitch(true) => "/cache/enable",
            Self::CacheSwitch(false) => "/cache/disable",
            Self::WebSocket => "/ws",
            Self::ClusterStatus => "/cluster/status",
            Self::LoadBalancerInstances => "/loadbalancer/instances",
            Self::LoadBalancerMetrics => "/loadbalancer/metrics",
            Self::LoadBalancerAlgorithm => "/loadbalancer/algorithm",
            Self::Preflight => "OPTIONS",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::NotFound => "not_found",
        }
    }
}

/// Splits an optional provider prefix (`/kiro-api/v1/messages`) off a path.
/// Returns the provider named (if the first segment names one) and the rest.
pub fn split_provider_prefix(path: &str) -> (Option<ProviderKind>, &str) {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let (first, rest) = match trimmed.find('/') {
        Some(i) => (&trimmed[..i], &trimmed[i..]),
        None => (trimmed, "/"),
    };
    match ProviderKind::parse(first) {
        Some(kind) => (Some(kind), rest),
        None => (None, path),
    }
}

/// Routes a request path, provider prefix included: the provider the
/// prefix names and the route of the rest. A prefix selects a provider
/// for the inference and model routes only; in front of the gateway's
/// own endpoints (`/mock/health`, `/kiro-api/metrics`) it routes nowhere.
pub fn resolve(method: &str, path: &str) -> (Option<ProviderKind>, Route) {
    let (prefix, rest) = split_provider_prefix(path);
    if prefix.is_some() && is_operational(rest) {
        return (prefix, Route::NotFound);
    }
    (prefix, route(method, rest))
}

/// Whether `path` is one of the gateway's own endpoints, which belong to
/// no provider.
fn is_operational(path: &str) -> bool {
    matches!(
        trim_slash(path),
        "/health"
            | "/metrics"
            | "/dashboard"
            | "/dashboard/summary.json"
            | "/cache/stats"
            | "/cache/clear"
            | "/cache/enable"
            | "/cache/disable"
            | "/ws"
            | "/cluster/status"
            | "/loadbalancer/instances"
            | "/loadbalancer/metrics"
            | "/loadbalancer/algorithm"
    )
}

/// `path` without one trailing slash (`/` stays `/`).
fn trim_slash(path: &str) -> &str {
    match path.strip_suffix('/') {
        Some(p) if !p.is_empty() => p,
        _ => path,
    }
}

/// Routes a method and a path (after the provider prefix was removed).
/// The endpoints of a part this build lacks (see [`crate::features`])
/// are unknown paths.
pub fn route(method: &str, path: &str) -> Route {
    let path = trim_slash(path);
    if method == "OPTIONS" {
        return Route::Preflight;
    }
    let get = method == "GET" || method == "HEAD";
    let post = method == "POST";
    let expect = |ok: bool, allowed: &'static str, route: Route| {
        if ok {
            route
        } else {
            Route::MethodNotAllowed(allowed)
        }
    };
    match path {
        "/health" => expect(get, "GET", Route::Health),
        "/v1/chat/completions" | "/chat/completions" => expect(post, "POST", Route::OpenAiChat),
        "/v1/responses" | "/responses" => expect(post, "POST", Route::Responses),
        "/v1/models" | "/models" => expect(get, "GET", Route::ListModels),
        "/v1/messages" => expect(post, "POST", Route::AnthropicMessages),
        "/v1/messages/count_tokens" => expect(post, "POST", Route::AnthropicCountTokens),
        "/v1beta/models" => expect(get, "GET", Route::GeminiListModels),
        "/metrics" if METRICS.built => expect(get, "GET", Route::Metrics),
        "/dashboard" if DASHBOARD.built && METRICS.built => expect(get, "GET", Route::Dashboard),
        "/dashboard/summary.json" if DASHBOARD.built && METRICS.built => {
            expect(get, "GET", Route::DashboardSummary)
        }
        "/cache/stats" => expect(get, "GET", Route::CacheStats),
        "/cache/clear" => expect(method == "DELETE", "DELETE", Route::CacheClear),
        "/cache/enable" => expect(method == "PUT", "PUT", Route::CacheSwitch(true)),
        "/cache/disable" => expect(method == "PUT", "PUT", Route::CacheSwitch(false)),
        // HEAD is no upgrade: the handshake refuses it.
        "/ws" if WEBSOCKET.built => expect(get, "GET", Route::WebSocket),
        "/cluster/status" if CLUSTER.built => expect(get, "GET", Route::ClusterStatus),
        "/loadbalancer/instances" => expect(get, "GET", Route::LoadBalancerInstances),
        "/loadbalancer/metrics" => expect(get, "GET", Route::LoadBalancerMetrics),
        "/loadbalancer/algorithm" => expect(method == "PUT", "PUT", Route::LoadBalancerAlgorithm),
        _ => gemini_model_route(path, get, post),
    }
}

fn gemini_model_route(path: &str, get: bool, post: bool) -> Route {
    let Some(rest) = path
        .strip_prefix("/v1beta/models/")
        .or_else(|| path.strip_prefix("/v1/models/"))
    else {
        return Route::NotFound;
    };
    let rest = rest.strip_prefix("models/").unwrap_or(rest);
    if let Some((model, action)) = rest.rsplit_once(':') {
        let stream = match action {
            "generateContent" => false,
            "streamGenerateContent" => true,
            _ => return Route::NotFound,
        };
        if model.is_empty() {
            return Route::NotFound;
        }
        if !post {
            return Route::MethodNotAllowed("POST");
        }
        return Route::GeminiGenerate {
            model: model.to_owned(),
            stream,
        };
    }
    if rest.is_empty() {
        return Route::NotFound;
    }
    if get {
        Route::GetModel(rest.to_owned())
    } else {
        Route::MethodNotAllowed("GET")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_every_endpoint() {
        assert_eq!(route("GET", "/health"), Route::Health);
        assert_eq!(route("POST", "/v1/chat/completions/"), Route::OpenAiChat);
        assert_eq!(route("POST", "/v1/responses"), Route::Responses);
        assert_eq!(route("POST", "/responses/"), Route::Responses);
        assert_eq!(
            route("GET", "/v1/responses"),
            Route::MethodNotAllowed("POST")
        );
        assert_eq!(route("GET", "/v1/responses/resp_1"), Route::NotFound);
        assert_eq!(
            route("POST", "/v1/messages/count_tokens"),
            Route::AnthropicCountTokens
        );
        assert_eq!(
            route(
                "POST",
                "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
            ),
            Route::GeminiGenerate {
                model: "gemini-2.5-flash".into(),
                stream: true
            }
        );
        assert_eq!(
            route("POST", "/v1/models/models/x:generateContent"),
            Route::GeminiGenerate {
                model: "x".into(),
                stream: false
            }
        );
        assert_eq!(
            route("GET", "/v1beta/models/x"),
            Route::GetModel("x".into())
        );
        assert_eq!(
            route("GET", "/v1/chat/completions"),
            Route::MethodNotAllowed("POST")
        );
        assert_eq!(route("GET", "/nope"), Route::NotFound);
        assert_eq!(
            route("POST", "/v1beta/models/:generateContent"),
            Route::NotFound
        );
        assert_eq!(route("OPTIONS", "/anything"), Route::Preflight);
        assert_eq!(route("GET", "/metrics"), Route::Metrics);
        assert_eq!(route("DELETE", "/cache/clear"), Route::CacheClear);
        assert_eq!(route("PUT", "/cache/disable"), Route::CacheSwitch(false));
        assert_eq!(route("GET", "/cluster/status/"), Route::ClusterStatus);
        assert_eq!(
            route("DELETE", "/cluster/status"),
            Route::MethodNotAllowed("GET")
        );
        assert_eq!(
            route("POST", "/cache/enable"),
            Route::MethodNotAllowed("PUT")
        );
        assert_eq!(
            route("GET", "/loadbalancer/instances/"),
            Route::LoadBalancerInstances
        );
        assert_eq!(
            route("GET", "/loadbalancer/metrics"),
            Route::LoadBalancerMetrics
        );
        assert_eq!(
            route("PUT", "/loadbalancer/algorithm"),
            Route::LoadBalancerAlgorithm
        );
        assert_eq!(
            route("POST", "/loadbalancer/algorithm"),
            Route::MethodNotAllowed("PUT")
        );
        assert!(Route::LoadBalancerAlgorithm.needs_admin());
        assert!(!Route::LoadBalancerInstances.needs_admin());
        assert_eq!(route("GET", "/ws"), Route::WebSocket);
        assert_eq!(route("POST", "/ws"), Route::MethodNotAllowed("GET"));
    }

    #[test]
    fn the_endpoints_of_a_missing_part_are_unknown_paths() {
        let dashboard = DASHBOARD.built && METRICS.built;
        for (path, route, built) in [
            ("/metrics", Route::Metrics, METRICS.built),
            ("/dashboard", Route::Dashboard, dashboard),
            (
                "/dashboard/summary.json",
                Route::DashboardSummary,
                dashboard,
            ),
            ("/ws", Route::WebSocket, WEBSOCKET.built),
            ("/cluster/status", Route::ClusterStatus, CLUSTER.built),
        ] {
            let want = if built { route } else { Route::NotFound };
            assert_eq!(super::route("GET", path), want, "{path}");
        }
    }

    #[test]
    fn provider_prefixes_and_aliases() {
        assert_eq!(
            split_provider_prefix("/kiro-api/v1/messages"),
            (Some(ProviderKind::KiroApi), "/v1/messages")
        );
        assert_eq!(
            split_provider_prefix("/claude-kiro-oauth/v1/messages"),
            (Some(ProviderKind::KiroApi), "/v1/messages")
        );
        assert_eq!(
            split_provider_prefix("/mock"),
            (Some(ProviderKind::Mock), "/")
        );
        assert_eq!(split_provider_prefix("/v1/models"), (None, "/v1/models"));
    }

    #[test]
    fn provider_prefixes_reach_only_provider_routes() {
        for path in [
            "/mock/health",
            "/kiro-api/metrics",
            "/mock/dashboard/",
            "/qwen-api/dashboard/summary.json",
            "/mock/cache/clear",
            "/mock/ws",
            "/mock/cluster/status",
            "/mock/loadbalancer/instances",
        ] {
            assert_eq!(resolve("GET", path).1, Route::NotFound, "{path}");
            assert_eq!(resolve("DELETE", path).1, Route::NotFound, "{path}");
        }
        assert_eq!(
            resolve("POST", "/mock/v1/chat/completions"),
            (Some(ProviderKind::Mock), Route::OpenAiChat)
        );
        assert_eq!(
            resolve("GET", "/kiro-api/v1/models"),
            (Some(ProviderKind::KiroApi), Route::ListModels)
        );
        assert_eq!(resolve("GET", "/health"), (None, Route::Health));
    }
}
