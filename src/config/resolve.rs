//! Turning the merged [`Layer`] into a [`Config`]: one parser per key,
//! every problem collected with the key and source that caused it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::layer::{Layer, Source, Value};
use super::*;
use crate::balancer::Algorithm;
use crate::features::{self, Feature};
use crate::pools::{self, Overrides};
use crate::provider_kind::ProviderKind;

/// Turns the merged layer into a [`Config`], collecting problems.
pub(super) struct Resolver {
    pub(super) layer: Layer,
    pub(super) problems: Vec<String>,
}

/// Largest value for byte sizes.
const MAX_BYTES: u64 = usize::MAX as u64;

impl Resolver {
    fn problem(&mut self, path: &str, source: &Source, message: impl fmt::Display) {
        self.problems
            .push(format!("{}: {message}", source.describe(path)));
    }

    /// The single text value of `path`, if set.
    fn text(&mut self, path: &str) -> Option<(String, Source)> {
        let setting = self.layer.get(path)?.clone();
        match setting.value {
            Value::Text(text) => Some((text, setting.source)),
            _ => {
                self.problem(path, &setting.source, "expected a single value");
                None
            }
        }
    }

    /// Parses `path` with `parse`, or returns `default` when it is unset
    /// or invalid (recording the problem).
    fn value<T>(
        &mut self,
        path: &str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        let Some((text, source)) = self.text(path) else {
            return default;
        };
        match parse(&text) {
            Ok(value) => value,
            Err(message) => {
                self.problem(path, &source, message);
                default
            }
        }
    }

    fn duration(&mut self, path: &str, default: Duration) -> Duration {
        self.value(path, default, parse::duration)
    }

    /// A duration that must be greater than zero (timeouts).
    fn timeout(&mut self, path: &str, default: Duration) -> Duration {
        self.value(path, default, |t| match parse::duration(t)? {
            d if d.is_zero() => Err("must be greater than zero".to_owned()),
            d => Ok(d),
        })
    }

    fn size(&mut self, path: &str, default: usize, max: u64) -> usize {
        self.value(path, default, |t| {
            parse::integer(t, 1, max).map(|n| usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    /// `asked`, unless it asks for a part this build lacks: then the
    /// problem names the missing feature and the part stays off.
    fn needs(&mut self, path: &str, asked: bool, feature: Feature) -> bool {
        if !asked || feature.built {
            return asked;
        }
        if let Some(setting) = self.layer.get(path) {
            let source = setting.source.clone();
            self.problem(path, &source, feature.missing());
        }
        false
    }

    /// A switch: off unless a source turns it on.
    fn boolean(&mut self, path: &str) -> bool {
        self.value(path, false, parse::boolean)
    }

    /// A list of keys (`api_key`, `admin_api_key`); empty items dropped.
    fn keys(&mut self, path: &str) -> Vec<Secret> {
        self.list(path)
            .map(|(keys, _)| keys.into_iter().map(Secret::new).collect())
            .unwrap_or_default()
    }

    fn secret(&mut self, path: &str) -> Option<Secret> {
        self.value(path, None, |t| Ok((!t.is_empty()).then(|| Secret::new(t))))
    }

    /// A list key: YAML list or comma-separated text; items trimmed,
    /// empty items dropped.
    fn list(&mut self, path: &str) -> Option<(Vec<String>, Source)> {
        let setting = self.layer.get(path)?.clone();
        let items: Vec<String> = match setting.value {
            Value::Text(text) => text.split(',').map(str::to_owned).collect(),
            Value::List(items) => items,
            Value::Map(_) => {
                self.problem(path, &setting.source, "expected a list");
                return None;
            }
        };
        let items = items
            .into_iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        Some((items, setting.source))
    }

    /// A map key: YAML mapping, or `k=v,k=v` text.
    fn map(&mut self, path: &str) -> Option<(Vec<(String, String)>, Source)> {
        let setting = self.layer.get(path)?.clone();
        let entries = match setting.value {
            Value::Map(entries) => entries,
            Value::Text(text) => {
                let mut entries = Vec::new();
                for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    match item.split_once('=') {
                        Some((k, v)) => entries.push((k.trim().to_owned(), v.trim().to_owned())),
                        None => self.problem(
                            path,
                            &setting.source,
                            format!("{item:?} is not name=value"),
                        ),
                    }
                }
                entries
            }
            Value::List(_) => {
                self.problem(
                    path,
                    &setting.source,
                    "expected a mapping of model to provider",
                );
                return None;
            }
        };
        Some((entries, setting.source))
    }

    fn providers(&mut self) -> Vec<ProviderKind> {
        let Some((names, source)) = self.list("model_providers") else {
            return vec![DEFAULT_MODEL_PROVIDER];
        };
        let mut providers = Vec::new();
        let before = self.problems.len();
        for name in names {
            match name.parse::<ProviderKind>() {
                Ok(kind) if providers.contains(&kind) => {
                    self.problem(
                        "model_providers",
                        &source,
                        format!("{kind} is listed twice"),
                    );
                }
                Ok(kind) => providers.push(kind),
                Err(message) => self.problem("model_providers", &source, message),
            }
        }
        if providers.is_empty() && self.problems.len() == before {
            self.problem(
                "model_providers",
                &source,
                "must name at least one provider",
            );
        }
        if providers.is_empty() {
            providers.push(DEFAULT_MODEL_PROVIDER);
        }
        providers
    }

    fn routes(&mut self, enabled: &[ProviderKind]) -> BTreeMap<String, ProviderKind> {
        let mut routes = BTreeMap::new();
        let Some((entries, source)) = self.map("model_routes") else {
            return routes;
        };
        let names: Vec<&str> = enabled.iter().map(|p| p.name()).collect();
        for (model, provider) in entries {
            let star = model.find('*');
            if model.is_empty() || star.is_some_and(|i| i + 1 != model.len()) {
                self.problem(
                    "model_routes",
                    &source,
                    format!("{model:?} is not a model name or a prefix ending in *"),
                );
                continue;
            }
            match provider.parse::<ProviderKind>() {
                Ok(kind) if enabled.contains(&kind) => {
                    routes.insert(model, kind);
                }
                Ok(kind) => self.problem(
                    "model_routes",
                    &source,
                    format!(
                        "{model:?} routes to {kind}, which is not enabled (model_providers: {})",
                        names.join(", ")
                    ),
                ),
                Err(message) => {
                    self.problem("model_routes", &source, format!("{model:?}: {message}"))
                }
            }
        }
        routes
    }

    /// The `websocket:` section.
    fn websocket(&mut self) -> WebSocketConfig {
        let max_message_size = self.size(
            "websocket.max_message_size",
            DEFAULT_WEBSOCKET_MAX_MESSAGE_SIZE,
            1 << 30,
        );
        let max_frame_size = self.size(
            "websocket.max_frame_size",
            DEFAULT_WEBSOCKET_MAX_FRAME_SIZE,
            1 << 30,
        );
        if max_frame_size > max_message_size {
            self.problems.push(format!(
                "websocket.max_frame_size ({max_frame_size}) is larger than \
                 websocket.max_message_size ({max_message_size})"
            ));
        }
        let enabled = self.value(
            "websocket.enabled",
            DEFAULT_WEBSOCKET_ENABLED,
            parse::boolean,
        );
        WebSocketConfig {
            enabled: self.needs("websocket.enabled", enabled, features::WEBSOCKET),
            max_connections: self.size(
                "websocket.max_connections",
                DEFAULT_WEBSOCKET_MAX_CONNECTIONS,
                1 << 20,
            ),
            max_message_size,
            max_frame_size,
            max_in_flight: self.size(
                "websocket.max_in_flight",
                DEFAULT_WEBSOCKET_MAX_IN_FLIGHT,
                65536,
            ),
            max_queued_bytes: self.size(
                "websocket.max_queued_bytes",
                DEFAULT_WEBSOCKET_MAX_QUEUED_BYTES,
                MAX_BYTES,
            ),
            heartbeat_interval: self.timeout(
                "websocket.heartbeat_interval",
                DEFAULT_WEBSOCKET_HEARTBEAT_INTERVAL,
            ),
            idle_timeout: self.timeout("websocket.idle_timeout", DEFAULT_WEBSOCKET_IDLE_TIMEOUT),
        }
    }

    /// The `cluster:` settings; when the cluster is on, also the rules
    /// `cluster::Node::start` would refuse at start: node id, intervals,
    /// and a secret for a non-loopback node address.
    fn cluster(&mut self, listen: SocketAddr) -> ClusterConfig {
        let enabled = self.value("cluster.enabled", DEFAULT_CLUSTER_ENABLED, parse::boolean);
        let enabled = self.needs("cluster.enabled", enabled, features::CLUSTER);
        let node_id = self.value("cluster.node_id", crate::cluster::default_node_id(), |t| {
            let id = t.trim();
            if crate::cluster::membership::valid_node_id(id) {
                Ok(id.to_owned())
            } else {
                Err(format!(
                    "{t:?} is not 1 to {} printable ASCII characters without spaces",
                    crate::cluster::membership::MAX_NODE_ID_LEN
                ))
            }
        });
        let node_address = self.value("cluster.node_address", None, |t| {
            parse::host_port(t).map(Some)
        });
        let mut seed_nodes = Vec::new();
        if let Some((items, source)) = self.list("cluster.seed_nodes") {
            for item in items {
                match parse::host_port(&item) {
                    Ok(seed) => seed_nodes.push(seed),
                    Err(message) => self.problem("cluster.seed_nodes", &source, message),
                }
            }
        }
        let secret = self.secret("cluster.secret");
        let timing = crate::cluster::Timing {
            heartbeat: self.timeout(
                "cluster.heartbeat_interval",
                DEFAULT_CLUSTER_HEARTBEAT_INTERVAL,
            ),
            suspect_after: self.timeout("cluster.suspect_after", DEFAULT_CLUSTER_SUSPECT_AFTER),
            dead_after: self.timeout("cluster.dead_after", DEFAULT_CLUSTER_DEAD_AFTER),
            forget_after: self.timeout("cluster.forget_after", DEFAULT_CLUSTER_FORGET_AFTER),
        };
        let config = ClusterConfig {
            enabled,
            node_id,
            node_address,
            seed_nodes,
            secret,
            timing,
        };
        if enabled {
            if let Err(message) = timing.check() {
                self.problems.push(message);
            }
            // A name is resolved at start, and checked there.
            if let Some(bind) = config.literal_bind(listen)
                && let Err(e) = crate::cluster::check_secure(
                    bind,
                    config.secret.as_ref().map(|s| s.expose().as_bytes()),
                )
            {
                self.problems.push(e.to_string());
            }
        }
        config
    }

    /// `load_balancer:` and `--trusted-proxies`.
    fn load_balancer(&mut self) -> (LoadBalancerConfig, TrustedProxies) {
        let lb = LoadBalancerConfig {
            enabled: self.value(
                "load_balancer.enabled",
                DEFAULT_LOAD_BALANCER_ENABLED,
                parse::boolean,
            ),
            algorithm: self.value(
                "load_balancer.algorithm",
                DEFAULT_LOAD_BALANCER_ALGORITHM,
                str::parse::<Algorithm>,
            ),
            health_check_interval: self.timeout(
                "load_balancer.health_check_interval",
                DEFAULT_HEALTH_CHECK_INTERVAL,
            ),
            ejection_time: self.timeout("load_balancer.ejection_time", DEFAULT_EJECTION_TIME),
        };
        let trusted = match self.list("trusted_proxies") {
            Some((items, source)) => TrustedProxies::from_items(&items).unwrap_or_else(|e| {
                self.problem("trusted_proxies", &source, e);
                TrustedProxies::default()
            }),
            None => TrustedProxies::default(),
        };
        (lb, trusted)
    }

    /// Reads `--provider-pools-file`, if set. Its warnings go to `warnings`.
    fn pools(
        &mut self,
        enabled: &[ProviderKind],
        warnings: &mut Vec<String>,
    ) -> (Option<PathBuf>, Option<PoolsFile>) {
        let Some(path) = self.path("provider_pools_file") else {
            return (None, None);
        };
        let source = self
            .layer
            .get("provider_pools_file")
            .map(|s| s.source.clone());
        match pools::read(&path) {
            Ok(file) => {
                warnings.extend(file.warnings.iter().cloned());
                for pool in &file.pools {
                    if !enabled.contains(&pool.kind) && !pool.members.is_empty() {
                        warnings.push(format!(
                            "{}: the pool of {} is ignored: the provider is not enabled \
                             (model_providers)",
                            path.display(),
                            pool.kind
                        ));
                    }
                }
                (Some(path), Some(file))
            }
            Err(e) => {
                if let Some(source) = source {
                    self.problem("provider_pools_file", &source, e);
                }
                (Some(path), None)
            }
        }
    }

    fn path(&mut self, path: &str) -> Option<PathBuf> {
        self.value(path, None, |t| {
            parse::non_empty(t).map(|p| Some(PathBuf::from(p)))
        })
    }

    fn url(&mut self, path: &str, default: &str) -> String {
        self.value(path, default.to_owned(), parse::base_url)
    }

    /// The gemini-cli, kiro-api and qwen-api settings.
    fn oauth_providers(&mut self) -> (GeminiConfig, KiroConfig, QwenConfig) {
        let gemini = GeminiConfig {
            oauth_creds_file: self.path("gemini.oauth_creds_file"),
            project_id: self.value("gemini.project_id", None, |t| {
                let id = parse::non_empty(t)?;
                if id == "default" {
                    return Err(
                        "\"default\" is not a project id; leave it unset to discover \
                                the account's project"
                            .to_owned(),
                    );
                }
                Ok(Some(id))
            }),
            base_url: self.url("gemini.base_url", DEFAULT_GEMINI_BASE_URL),
            token_url: self.url("gemini.token_url", DEFAULT_GEMINI_TOKEN_URL),
            client_id: self.value(
                "gemini.client_id",
                DEFAULT_GEMINI_CLIENT_ID.to_owned(),
                parse::non_empty,
            ),
            client_secret: self
                .secret("gemini.client_secret")
                .unwrap_or_else(|| Secret::new(DEFAULT_GEMINI_CLIENT_SECRET)),
        };
        let mut model_map = BTreeMap::new();
        if let Some((entries, source)) = self.map("kiro.model_map") {
            for (from, to) in entries {
                if from.is_empty() || to.trim().is_empty() {
                    self.problem(
                        "kiro.model_map",
                        &source,
                        format!("{from:?}: model names must not be empty"),
                    );
                } else {
                    model_map.insert(from, to.trim().to_owned());
                }
            }
        }
        let kiro = KiroConfig {
            oauth_creds_file: self.path("kiro.oauth_creds_file"),
            base_url: self.url("kiro.base_url", DEFAULT_KIRO_BASE_URL),
            refresh_url: self.url("kiro.refresh_url", DEFAULT_KIRO_REFRESH_URL),
            refresh_idc_url: self.url("kiro.refresh_idc_url", DEFAULT_KIRO_REFRESH_IDC_URL),
            version: self.value(
                "kiro.version",
                DEFAULT_KIRO_VERSION.to_owned(),
                parse::non_empty,
            ),
            model_map,
        };
        let qwen = QwenConfig {
            oauth_creds_file: self.path("qwen.oauth_creds_file"),
            base_url: self.value("qwen.base_url", None, |t| parse::base_url(t).map(Some)),
            token_url: self.url("qwen.token_url", DEFAULT_QWEN_TOKEN_URL),
            ext_tool: self.value("qwen.ext_tool", DEFAULT_QWEN_EXT_TOOL, parse::boolean),
        };
        (gemini, kiro, qwen)
    }

    pub(super) fn resolve(&mut self) -> Config {
        let host = self.value("host", DEFAULT_HOST, parse::host);
        let port = self.value("port", DEFAULT_PORT, parse::port);
        let listen = SocketAddr::new(host, port);
        let api_keys = self.keys("api_key");
        let admin_api_keys = self.keys("admin_api_key");
        let insecure_no_auth = self.boolean("insecure_no_auth");
        let cors_origins = self
            .list("cors_origins")
            .map(|(origins, _)| origins)
            .unwrap_or_default();
        let model_providers = self.providers();
        let model_routes = self.routes(&model_providers);
        let openai = OpenAiConfig {
            api_key: self.secret("openai.api_key"),
            base_url: self.value(
                "openai.base_url",
                DEFAULT_OPENAI_BASE_URL.to_owned(),
                parse::base_url,
            ),
        };
        let claude = ClaudeConfig {
            api_key: self.secret("claude.api_key"),
            base_url: self.value(
                "claude.base_url",
                DEFAULT_CLAUDE_BASE_URL.to_owned(),
                parse::base_url,
            ),
        };
        let mock = MockConfig {
            chunk_delay: self.duration("mock.chunk_delay", DEFAULT_MOCK_CHUNK_DELAY),
            latency: self.duration("mock.latency", DEFAULT_MOCK_LATENCY),
        };
        let (gemini, kiro, qwen) = self.oauth_providers();
        let workers = self.value("workers", DEFAULT_WORKERS, |t| {
            parse::integer(t, 1, 65536).map(|n| usize::try_from(n).unwrap_or(usize::MAX))
        });
        let limits = Limits {
            max_body_bytes: self.size("limits.max_body_bytes", DEFAULT_MAX_BODY_BYTES, MAX_BYTES),
            max_header_bytes: self.size(
                "limits.max_header_bytes",
                DEFAULT_MAX_HEADER_BYTES,
                MAX_BYTES,
            ),
            max_headers: self.size("limits.max_headers", DEFAULT_MAX_HEADERS, 65536),
            header_timeout: self.timeout("limits.header_timeout", DEFAULT_HEADER_TIMEOUT),
            body_timeout: self.timeout("limits.body_timeout", DEFAULT_BODY_TIMEOUT),
            idle_timeout: self.timeout("limits.idle_timeout", DEFAULT_IDLE_TIMEOUT),
            send_timeout: self.timeout("limits.send_timeout", DEFAULT_SEND_TIMEOUT),
            queue_timeout: self.timeout("limits.queue_timeout", DEFAULT_QUEUE_TIMEOUT),
            max_connections: self.size("limits.max_connections", DEFAULT_MAX_CONNECTIONS, 1 << 20),
        };
        let upstream = Upstream {
            connect_timeout: self
                .timeout("upstream.connect_timeout", DEFAULT_UPSTREAM_CONNECT_TIMEOUT),
            timeout: self.timeout("upstream.timeout", DEFAULT_UPSTREAM_TIMEOUT),
            idle_timeout: self.timeout("upstream.idle_timeout", DEFAULT_UPSTREAM_IDLE_TIMEOUT),
            max_retries: self.value("upstream.max_retries", DEFAULT_REQUEST_MAX_RETRIES, |t| {
                parse::integer(t, 0, 100).map(|n| u32::try_from(n).unwrap_or(u32::MAX))
            }),
            base_delay: self.duration("upstream.base_delay", DEFAULT_REQUEST_BASE_DELAY),
            stream_keepalive: self.duration("upstream.stream_keepalive", DEFAULT_STREAM_KEEPALIVE),
        };
        let shutdown_timeout = self.duration("shutdown_timeout", DEFAULT_SHUTDOWN_TIMEOUT);
        let log = LogConfig {
            level: self.value("log.level", DEFAULT_LOG_LEVEL, |t| {
                match parse::one_of(&t.to_ascii_lowercase(), &["error", "warn", "info", "debug"])
                    .map_err(|_| format!("{t:?} is not one of error, warn, info, debug"))?
                    .as_str()
                {
                    "error" => Ok(LogLevel::Error),
                    "warn" => Ok(LogLevel::Warn),
                    "debug" => Ok(LogLevel::Debug),
                    _ => Ok(LogLevel::Info),
                }
            }),
            format: self.value("log.format", DEFAULT_LOG_FORMAT, |t| {
                match t.trim().to_ascii_lowercase().as_str() {
                    "text" => Ok(LogFormat::Text),
                    "json" => Ok(LogFormat::Json),
                    _ => Err(format!("{t:?} is not one of text, json")),
                }
            }),
            prompts: self.boolean("log.prompts"),
        };
        let cache = CacheConfig {
            enabled: self.value("cache.enabled", DEFAULT_CACHE_ENABLED, parse::boolean),
            max_size_mb: self.value("cache.max_size_mb", DEFAULT_CACHE_MAX_SIZE_MB, |t| {
                parse::integer(t, 1, 1 << 20)
            }),
            ttl: self.value("cache.ttl_seconds", DEFAULT_CACHE_TTL, |t| {
                parse::integer(t, 0, 365 * 24 * 3600).map(Duration::from_secs)
            }),
            scope: self.value("cache.scope", DEFAULT_CACHE_SCOPE, |t| match parse::one_of(
                t,
                &["shared", "per_key"],
            )?
            .as_str()
            {
                "per_key" => Ok(CacheScope::PerKey),
                _ => Ok(CacheScope::Shared),
            }),
        };
        let redis_addr = self.value("redis.addr", None, |t| {
            let t = t.trim();
            if t.starts_with("redis://") || t.starts_with("rediss://") {
                Ok(Some(t.to_owned()))
            } else {
                parse::host_port(t).map(Some)
            }
        });
        let redis_password = self.secret("redis.password");
        let redis_db = self.value("redis.db", DEFAULT_REDIS_DB, |t| {
            parse::integer(t, 0, 65535)
        });
        let redis_addr = redis_addr.filter(|_| self.needs("redis.addr", true, features::REDIS));
        let redis = redis_addr.map(|addr| RedisConfig {
            addr,
            password: redis_password,
            db: redis_db,
        });
        let metrics_enabled =
            self.value("metrics.enabled", DEFAULT_METRICS_ENABLED, parse::boolean);
        let metrics_port = self.value("metrics.port", None, |t| parse::port(t).map(Some));
        let metrics = MetricsConfig {
            enabled: self.needs("metrics.enabled", metrics_enabled, features::METRICS),
            port: metrics_port.filter(|_| self.needs("metrics.port", true, features::METRICS)),
        };
        let websocket = self.websocket();
        let cluster = self.cluster(listen);
        let (load_balancer, trusted_proxies) = self.load_balancer();
        let mut warnings = Vec::new();
        let (provider_pools_file, pools) = self.pools(&model_providers, &mut warnings);

        // Rules across keys.
        if metrics.port.is_some_and(|p| p != 0 && p == port) {
            self.problems.push(format!(
                "metrics.port: {port} is the main port too; choose another port or leave it unset"
            ));
        }
        for (kind, has_key, flag, path) in [
            (
                ProviderKind::OpenAiCustom,
                openai.api_key.is_some(),
                "--openai-api-key",
                "openai.api_key",
            ),
            (
                ProviderKind::ClaudeCustom,
                claude.api_key.is_some(),
                "--claude-api-key",
                "claude.api_key",
            ),
        ] {
            if !model_providers.contains(&kind) {
                continue;
            }
            let members = pools
                .as_ref()
                .and_then(|p| p.pool(kind))
                .map(|p| p.members.as_slice())
                .unwrap_or_default();
            if members.is_empty() && !has_key {
                self.problems.push(format!(
                    "{kind} is enabled but has no API key; set {flag} ({} or {path} in the config file)",
                    keys::env_name(path)
                ));
            }
            for member in members {
                let own_key = match &member.overrides {
                    Overrides::OpenAi(o) | Overrides::Claude(o) => o.api_key.is_some(),
                    _ => true,
                };
                if !own_key && !has_key {
                    self.problems.push(format!(
                        "provider_pools_file: member {} of {kind} has no API key of its own and \
                         {flag} is not set",
                        member.uuid
                    ));
                }
            }
        }

        let config = Config {
            listen,
            api_keys,
            admin_api_keys,
            insecure_no_auth,
            cors_origins,
            model_providers,
            model_routes,
            openai,
            claude,
            mock,
            gemini,
            kiro,
            qwen,
            workers,
            limits,
            upstream,
            shutdown_timeout,
            log,
            cache,
            redis,
            metrics,
            websocket,
            cluster,
            provider_pools_file,
            pools,
            load_balancer,
            trusted_proxies,
            config_file: None,
            warnings,
        };
        if config.leaves_listener_open(listen) {
            self.problems.push(format!(
                "refusing to listen on {listen} without --api-key; pass --insecure-no-auth to allow"
            ));
        }
        config
    }
}

impl Default for Config {
    /// The built-in defaults: what [`Config::load`] gives with no config
    /// file, no environment and no flags (mock provider, loopback, no
    /// keys). Resolving an empty layer keeps the defaults in one place,
    /// the resolver's fallbacks.
    fn default() -> Self {
        let mut resolver = Resolver {
            layer: Layer::default(),
            problems: Vec::new(),
        };
        let config = resolver.resolve();
        debug_assert!(resolver.problems.is_empty(), "{:?}", resolver.problems);
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a build without `cluster` says to `--cluster-enabled true`
    /// (tests/run.sh checks the minimal binary itself; this checks the
    /// rule in every build).
    #[test]
    fn a_part_the_build_lacks_is_refused_by_its_flag_and_feature() {
        let mut layer = Layer::default();
        let flag = Source::Flag("--cluster-enabled");
        layer.set("cluster.enabled", Value::Text("true".into()), flag);
        let mut resolver = Resolver {
            layer,
            problems: Vec::new(),
        };
        let lacking = Feature {
            name: "cluster",
            built: false,
        };
        assert!(!resolver.needs("cluster.enabled", true, lacking));
        assert_eq!(
            resolver.problems,
            ["--cluster-enabled: this build has no `cluster` feature \
              (rebuild with `cargo build --features cluster`)"]
        );
        // Off, or built: nothing to refuse.
        assert!(!resolver.needs("cluster.enabled", false, lacking));
        assert!(resolver.needs(
            "cluster.enabled",
            true,
            Feature {
                built: true,
                ..lacking
            }
        ));
        assert_eq!(resolver.problems.len(), 1);
    }
}
