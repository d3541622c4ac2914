//! Validated runtime configuration.
//!
//! Configuration flows in two stages, as in ripgrep and sozu: the lenient
//! sources (`cli::Cli` flags, `AIPROXY_*` environment, `config.yaml` as
//! [`file::FileConfig`]) are merged with the precedence
//! defaults < file < environment < flags, then validated once into
//! [`Config`], whose fields can no longer be invalid. Every default is a
//! `DEFAULT_*` constant below, quoted by the man page.
//!
//! Every source is first reduced to text per key path ([`layer`]); one
//! parser per key then handles all three sources alike, and every problem
//! is collected into one [`ConfigError`] naming the key and its source
//! (`--port: "abc" is not a port number (0-65535)`,
//! `config.yaml: limits.header_timeout: …`, `AIPROXY_WORKERS: …`).
//!
//! Keys whose feature is not built in this release (websocket, load
//! balancer, cluster and provider pools) are still parsed and type-checked, so the feature
//! guide's config loads and typos stay errors; they are returned in
//! [`Config::pending_features`] for the caller to warn about.

pub mod env;
pub mod file;
pub mod keys;
pub mod layer;
pub mod parse;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::Cli;
use crate::provider_kind::ProviderKind;

pub use file::FileConfig;
use layer::{Layer, Source, Value};

/// Listen host when none is configured.
pub const DEFAULT_HOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Listen port when none is configured.
pub const DEFAULT_PORT: u16 = 3000;
/// Worker threads, which is also the maximum number of requests in flight.
pub const DEFAULT_WORKERS: usize = 256;
/// Largest request body accepted (10 MiB); larger bodies get 413.
pub const DEFAULT_MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
/// Largest request head accepted (32 KiB); larger heads get 431.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
/// Most header fields accepted in one request; more get 431.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Time allowed to receive a complete request head.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed to receive a complete request body.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an idle keep-alive connection is kept open.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Time allowed to write one response part to a slow reader (nginx's
/// `send_timeout` default).
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a complete request waits for a free worker before 503.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most client connections open at once (lowered to fit `ulimit -n`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Upstream TCP/TLS connect timeout.
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Upstream time to first byte of the response.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest silence between two reads of an upstream (streamed) body.
pub const DEFAULT_UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Upstream silence after which a stream gets a keep-alive (Anthropic
/// `ping`, an SSE comment otherwise), well under the 60 s read timeout of
/// nginx and most load balancers.
pub const DEFAULT_STREAM_KEEPALIVE: Duration = Duration::from_secs(15);
/// Bounded drain time after SIGTERM/SIGINT.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Retries of a failed upstream attempt (connect error, 429, 5xx).
pub const DEFAULT_REQUEST_MAX_RETRIES: u32 = 2;
/// Base of the exponential, jittered retry back-off.
pub const DEFAULT_REQUEST_BASE_DELAY: Duration = Duration::from_millis(250);
/// Time the built-in mock provider waits before answering.
pub const DEFAULT_MOCK_LATENCY: Duration = Duration::from_millis(0);
/// Delay between two streamed chunks of the built-in mock provider.
pub const DEFAULT_MOCK_CHUNK_DELAY: Duration = Duration::from_millis(0);
/// Memory cache capacity in MB.
pub const DEFAULT_CACHE_MAX_SIZE_MB: u64 = 100;
/// How long a cached answer stays valid.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(300);
/// openai-custom upstream; includes the version path like the OpenAI SDK.
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// claude-custom upstream root; `/v1` is appended when missing.
pub const DEFAULT_CLAUDE_BASE_URL: &str = "https://api.anthropic.com";
/// gemini-cli: Google Code Assist root (`{base}/v1internal:{method}`).
pub const DEFAULT_GEMINI_BASE_URL: &str = "https://cloudcode-pa.googleapis.com";
/// gemini-cli: Google's OAuth token endpoint.
pub const DEFAULT_GEMINI_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
/// gemini-cli: the Gemini CLI's public installed-app OAuth client id.
/// Refresh tokens issued to the Gemini CLI only refresh with this client.
pub const DEFAULT_GEMINI_CLIENT_ID: &str =
    "681255809395-oo8ft2oprdrnp9e3aqf6av3hmdib135j.apps.googleusercontent.com";
/// gemini-cli: the installed-app client secret published in the Gemini
/// CLI's source (google-gemini/gemini-cli, `code_assist/oauth2.ts`); an
/// installed application's secret is not confidential.
pub const DEFAULT_GEMINI_CLIENT_SECRET: &str = "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";
/// kiro-api: API root; `{region}` is the credentials' region.
pub const DEFAULT_KIRO_BASE_URL: &str = "https://q.{region}.amazonaws.com";
/// kiro-api: token refresh of social (Google/GitHub) logins.
pub const DEFAULT_KIRO_REFRESH_URL: &str =
    "https://prod.{region}.auth.desktop.kiro.dev/refreshToken";
/// kiro-api: token refresh of Builder ID / IAM Identity Center logins.
pub const DEFAULT_KIRO_REFRESH_IDC_URL: &str = "https://oidc.{region}.amazonaws.com/token";
/// kiro-api: Kiro IDE version announced in the user agent.
pub const DEFAULT_KIRO_VERSION: &str = "0.11.63";
/// qwen-api: Qwen OAuth token endpoint.
pub const DEFAULT_QWEN_TOKEN_URL: &str = "https://chat.qwen.ai/api/v1/oauth2/token";
/// qwen-api: base URL when the credentials carry no `resource_url`.
pub const DEFAULT_QWEN_BASE_URL: &str = "https://portal.qwen.ai/v1";

/// A secret string (API key, token) whose `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is sent on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Log verbosity (`--log-level`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Only errors.
    Error,
    /// Errors and warnings.
    Warn,
    /// Access log lines and lifecycle events (default).
    Info,
    /// Diagnostics.
    Debug,
}

/// Log line format (`--log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// `key=value` pairs (default).
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging settings (`log:`).
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Verbosity, default `info`.
    pub level: LogLevel,
    /// Line format, default `text`.
    pub format: LogFormat,
    /// Log prompts and answers (off by default: they may be confidential).
    pub prompts: bool,
}

/// Limits on what a client may send (`limits:`).
#[derive(Clone, Debug)]
pub struct Limits {
    /// `--max-body-bytes`, default [`DEFAULT_MAX_BODY_BYTES`].
    pub max_body_bytes: usize,
    /// `--max-header-bytes`, default [`DEFAULT_MAX_HEADER_BYTES`].
    pub max_header_bytes: usize,
    /// `limits.max_headers`, default [`DEFAULT_MAX_HEADERS`].
    pub max_headers: usize,
    /// `--header-timeout`, default [`DEFAULT_HEADER_TIMEOUT`].
    pub header_timeout: Duration,
    /// `--body-timeout`, default [`DEFAULT_BODY_TIMEOUT`].
    pub body_timeout: Duration,
    /// `--idle-timeout`, default [`DEFAULT_IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// `--send-timeout`, default [`DEFAULT_SEND_TIMEOUT`].
    pub send_timeout: Duration,
    /// `--queue-timeout`, default [`DEFAULT_QUEUE_TIMEOUT`].
    pub queue_timeout: Duration,
    /// `--max-connections`, default [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
}

/// How upstream providers are called (`upstream:`).
#[derive(Clone, Debug)]
pub struct Upstream {
    /// `--upstream-connect-timeout`.
    pub connect_timeout: Duration,
    /// `--upstream-timeout`: time to the first byte of the response.
    pub timeout: Duration,
    /// `--upstream-idle-timeout`: longest gap between streamed chunks.
    pub idle_timeout: Duration,
    /// `--request-max-retries`.
    pub max_retries: u32,
    /// `--request-base-delay`.
    pub base_delay: Duration,
    /// `--stream-keepalive`: upstream silence after which a stream gets a
    /// keep-alive; zero turns them off.
    pub stream_keepalive: Duration,
}

/// openai-custom settings (`openai:`).
#[derive(Clone, Debug)]
pub struct OpenAiConfig {
    /// `--openai-api-key`; required when openai-custom is enabled.
    pub api_key: Option<Secret>,
    /// `--openai-base-url`, including the version path.
    pub base_url: String,
}

/// claude-custom settings (`claude:`).
#[derive(Clone, Debug)]
pub struct ClaudeConfig {
    /// `--claude-api-key`; required when claude-custom is enabled.
    pub api_key: Option<Secret>,
    /// `--claude-base-url`, the API root (a trailing `/v1` is tolerated).
    pub base_url: String,
}

/// Built-in mock provider settings (`mock:`).
#[derive(Clone, Debug)]
pub struct MockConfig {
    /// `--mock-chunk-delay`: pause between streamed chunks.
    pub chunk_delay: Duration,
    /// `--mock-latency`: wait before answering (non-streamed and first chunk).
    pub latency: Duration,
}

/// gemini-cli settings (`gemini:`).
#[derive(Clone, Debug)]
pub struct GeminiConfig {
    /// `--gemini-oauth-creds-file`; `None` means `~/.gemini/oauth_creds.json`.
    pub oauth_creds_file: Option<PathBuf>,
    /// `--project-id`; `None` means discovery through `loadCodeAssist`.
    pub project_id: Option<String>,
    /// `--gemini-base-url`: the Code Assist root.
    pub base_url: String,
    /// `gemini.token_url`: the OAuth token endpoint.
    pub token_url: String,
    /// `gemini.client_id`: the OAuth client (the Gemini CLI's by default).
    pub client_id: String,
    /// `gemini.client_secret`.
    pub client_secret: Secret,
}

/// kiro-api settings (`kiro:`).
#[derive(Clone, Debug)]
pub struct KiroConfig {
    /// `--kiro-oauth-creds-file`; `None` means
    /// `~/.aws/sso/cache/kiro-auth-token.json`.
    pub oauth_creds_file: Option<PathBuf>,
    /// `--kiro-base-url`: API root, `{region}` replaced.
    pub base_url: String,
    /// `kiro.refresh_url`: social-login refresh endpoint.
    pub refresh_url: String,
    /// `kiro.refresh_idc_url`: Builder ID / IdC refresh endpoint.
    pub refresh_idc_url: String,
    /// `kiro.version`: Kiro IDE version in the user agent.
    pub version: String,
    /// `kiro.model_map`: client model → Kiro model id, over the built-in map.
    pub model_map: BTreeMap<String, String>,
}

/// qwen-api settings (`qwen:`).
#[derive(Clone, Debug)]
pub struct QwenConfig {
    /// `--qwen-oauth-creds-file`; `None` means `~/.qwen/oauth_creds.json`.
    pub oauth_creds_file: Option<PathBuf>,
    /// `--qwen-base-url`; `None` means the credentials' `resource_url`.
    pub base_url: Option<String>,
    /// `qwen.token_url`: the OAuth token endpoint.
    pub token_url: String,
    /// `qwen.ext_tool`: add the dummy `ext` tool (default true).
    pub ext_tool: bool,
}

/// Who shares a cached answer (`cache.scope`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheScope {
    /// One cache for every client key (default): the most hits, but a
    /// key holder can tell from `X-Cache: HIT` that someone asked the
    /// same question before.
    Shared,
    /// Answers are cached per client key: no key learns anything about
    /// another's requests, at the cost of hits across keys.
    PerKey,
}

/// Response cache settings (`cache:`).
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// `--cache-enabled`, default true.
    pub enabled: bool,
    /// `--cache-max-size`: memory tier capacity in MB.
    pub max_size_mb: u64,
    /// `--cache-ttl`: how long an answer stays valid.
    pub ttl: Duration,
    /// `--cache-scope`, default [`CacheScope::Shared`].
    pub scope: CacheScope,
}

/// Shared Redis cache tier (`redis:`); present only when `redis.addr` is set.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `--redis-addr`: `host:port` or a `redis://` URL.
    pub addr: String,
    /// `--redis-password`.
    pub password: Option<Secret>,
    /// `--redis-db`.
    pub db: u64,
}

/// Prometheus metrics settings (`metrics:`).
#[derive(Clone, Debug)]
pub struct MetricsConfig {
    /// `--metrics-enabled`, default true: `/metrics` and `/dashboard`.
    pub enabled: bool,
    /// `--metrics-port`: an extra listener serving only `/metrics`.
    pub port: Option<u16>,
}

/// The validated configuration of one aiproxy process.
#[derive(Clone, Debug)]
pub struct Config {
    /// Listen address (`--host`, `--port`).
    pub listen: SocketAddr,
    /// Keys clients must present; empty means no auth (loopback only
    /// unless `insecure_no_auth`).
    pub api_keys: Vec<Secret>,
    /// `--admin-api-key`: keys for the endpoints that change the gateway
    /// for everyone (`/cache/clear`, `/cache/enable|disable`); empty
    /// means any client key may use them.
    pub admin_api_keys: Vec<Secret>,
    /// `--insecure-no-auth`: allow a non-loopback listener without keys.
    pub insecure_no_auth: bool,
    /// `--cors-origins`: browser origins allowed to call the gateway;
    /// empty means no CORS headers at all.
    pub cors_origins: Vec<String>,
    /// Enabled providers; the first one is the default. Never empty.
    pub model_providers: Vec<ProviderKind>,
    /// `model_routes:` model name → provider; a key ending in `*` is a
    /// prefix match.
    pub model_routes: BTreeMap<String, ProviderKind>,
    /// openai-custom upstream.
    pub openai: OpenAiConfig,
    /// claude-custom upstream.
    pub claude: ClaudeConfig,
    /// Built-in mock provider.
    pub mock: MockConfig,
    /// gemini-cli upstream.
    pub gemini: GeminiConfig,
    /// kiro-api upstream.
    pub kiro: KiroConfig,
    /// qwen-api upstream.
    pub qwen: QwenConfig,
    /// `--workers`: size of the fixed worker pool.
    pub workers: usize,
    /// Client-side limits and timeouts.
    pub limits: Limits,
    /// Upstream timeouts and retries.
    pub upstream: Upstream,
    /// `--shutdown-timeout`: bounded drain on SIGTERM/SIGINT.
    pub shutdown_timeout: Duration,
    /// Logging.
    pub log: LogConfig,
    /// Response cache.
    pub cache: CacheConfig,
    /// Shared Redis cache tier, if configured.
    pub redis: Option<RedisConfig>,
    /// Prometheus metrics.
    pub metrics: MetricsConfig,
    /// The file this configuration was read from (re-read on SIGHUP).
    pub config_file: Option<PathBuf>,
    /// Key paths that were set but whose feature is not available in
    /// this release (`cache.enabled`, `cluster.node_id`, …); the caller
    /// warns "configured but not available in this version".
    pub pending_features: Vec<String>,
    /// Non-fatal findings for the caller to log, such as unknown
    /// `AIPROXY_*` environment variables.
    pub warnings: Vec<String>,
}

impl Default for Config {
    /// Defaults only: mock provider, loopback, no keys.
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(DEFAULT_HOST, DEFAULT_PORT),
            api_keys: Vec::new(),
            admin_api_keys: Vec::new(),
            cors_origins: Vec::new(),
            insecure_no_auth: false,
            model_providers: vec![ProviderKind::Mock],
            model_routes: BTreeMap::new(),
            openai: OpenAiConfig {
                api_key: None,
                base_url: DEFAULT_OPENAI_BASE_URL.to_owned(),
            },
            claude: ClaudeConfig {
                api_key: None,
                base_url: DEFAULT_CLAUDE_BASE_URL.to_owned(),
            },
            mock: MockConfig {
                chunk_delay: DEFAULT_MOCK_CHUNK_DELAY,
                latency: DEFAULT_MOCK_LATENCY,
            },
            gemini: GeminiConfig {
                oauth_creds_file: None,
                project_id: None,
                base_url: DEFAULT_GEMINI_BASE_URL.to_owned(),
                token_url: DEFAULT_GEMINI_TOKEN_URL.to_owned(),
                client_id: DEFAULT_GEMINI_CLIENT_ID.to_owned(),
                client_secret: Secret::new(DEFAULT_GEMINI_CLIENT_SECRET),
            },
            kiro: KiroConfig {
                oauth_creds_file: None,
                base_url: DEFAULT_KIRO_BASE_URL.to_owned(),
                refresh_url: DEFAULT_KIRO_REFRESH_URL.to_owned(),
                refresh_idc_url: DEFAULT_KIRO_REFRESH_IDC_URL.to_owned(),
                version: DEFAULT_KIRO_VERSION.to_owned(),
                model_map: BTreeMap::new(),
            },
            qwen: QwenConfig {
                oauth_creds_file: None,
                base_url: None,
                token_url: DEFAULT_QWEN_TOKEN_URL.to_owned(),
                ext_tool: true,
            },
            workers: DEFAULT_WORKERS,
            limits: Limits {
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
                max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
                max_headers: DEFAULT_MAX_HEADERS,
                header_timeout: DEFAULT_HEADER_TIMEOUT,
                body_timeout: DEFAULT_BODY_TIMEOUT,
                idle_timeout: DEFAULT_IDLE_TIMEOUT,
                send_timeout: DEFAULT_SEND_TIMEOUT,
                queue_timeout: DEFAULT_QUEUE_TIMEOUT,
                max_connections: DEFAULT_MAX_CONNECTIONS,
            },
            upstream: Upstream {
                connect_timeout: DEFAULT_UPSTREAM_CONNECT_TIMEOUT,
                timeout: DEFAULT_UPSTREAM_TIMEOUT,
                idle_timeout: DEFAULT_UPSTREAM_IDLE_TIMEOUT,
                max_retries: DEFAULT_REQUEST_MAX_RETRIES,
                base_delay: DEFAULT_REQUEST_BASE_DELAY,
                stream_keepalive: DEFAULT_STREAM_KEEPALIVE,
            },
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            log: LogConfig {
                level: LogLevel::Info,
                format: LogFormat::Text,
                prompts: false,
            },
            cache: CacheConfig {
                enabled: true,
                max_size_mb: DEFAULT_CACHE_MAX_SIZE_MB,
                ttl: DEFAULT_CACHE_TTL,
                scope: CacheScope::Shared,
            },
            redis: None,
            metrics: MetricsConfig {
                enabled: true,
                port: None,
            },
            config_file: None,
            pending_features: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

/// Everything wrong with a configuration, each problem naming its key and
/// source. `Display` lists them all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    problems: Vec<String>,
}

impl ConfigError {
    /// The problems, one line each, in the order found.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [one] => f.write_str(one),
            many => {
                write!(f, "{} configuration problems:", many.len())?;
                for problem in many {
                    write!(f, "\n  {problem}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for crate::Error {
    fn from(err: ConfigError) -> Self {
        crate::Error::Config(err.to_string())
    }
}

impl Config {
    /// Whether serving on `listen` with this configuration would leave a
    /// non-loopback listener without authentication. Checked at load
    /// against the configured address and on reload against the running
    /// one, which a reload cannot move.
    pub fn leaves_listener_open(&self, listen: SocketAddr) -> bool {
        !listen.ip().is_loopback() && self.api_keys.is_empty() && !self.insecure_no_auth
    }

    /// Builds the configuration from built-in defaults < the config file
    /// (`--config`, else `AIPROXY_CONFIG`) < the `AIPROXY_*` environment
    /// `env` < the flags in `cli`, and validates it once.
    ///
    /// `env` is the process environment as pairs (`std::env::vars()`),
    /// passed in so that tests need not change the real one.
    pub fn load(cli: &Cli, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let mut layer = Layer::default();
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        let config_file = cli.config.clone().or_else(|| env::config_file(env));
        if let Some(path) = &config_file {
            match FileConfig::read(path) {
                Ok(file) => {
                    let settings = file.settings();
                    warnings.extend(exposed_secrets(path, settings.iter().map(|(k, _)| *k)));
                    for (key, value) in settings {
                        layer.set(key, value, Source::File(path.clone()));
                    }
                }
                Err(err) => problems.push(format!("{path}: {err}")),
            }
        }
        warnings.extend(env::apply(env, &mut layer));
        apply_flags(cli, &mut layer);
        let mut resolver = Resolver { layer, problems };
        let mut config = resolver.resolve();
        if !resolver.problems.is_empty() {
            return Err(ConfigError {
                problems: resolver.problems,
            });
        }
        config.config_file = config_file.map(PathBuf::from);
        config.warnings = warnings;
        Ok(config)
    }
}

/// Config keys whose values are credentials.
fn is_secret(key: &str) -> bool {
    key.ends_with("api_key") || key.ends_with("password") || key.ends_with("secret")
}

/// A warning when the config file holds credentials and every user of
/// the host may read it. Not an error: the package installs the file
/// 0640 root:aiproxy, and refusing to start over a mode would turn a
/// hardening hint into an outage.
fn exposed_secrets<'a>(path: &str, keys: impl Iterator<Item = &'a str>) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let secrets: Vec<&str> = keys.filter(|k| is_secret(k)).collect();
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    if secrets.is_empty() || mode & 0o004 == 0 {
        return None;
    }
    Some(format!(
        "{path} holds credentials ({}) and every user can read it (mode {:03o}); chmod 600 or 640",
        secrets.join(", "),
        mode & 0o777
    ))
}

/// Puts the flags that were given into `layer`, named by their flag.
fn apply_flags(cli: &Cli, layer: &mut Layer) {
    let switch = |v: Option<bool>| v.map(|b| b.to_string());
    let given = [
        ("host", cli.host.clone()),
        ("port", cli.port.clone()),
        ("api_key", cli.api_key.clone()),
        ("admin_api_key", cli.admin_api_key.clone()),
        ("insecure_no_auth", switch(cli.insecure_no_auth)),
        ("model_providers", cli.model_provider.clone()),
        ("openai.api_key", cli.openai_api_key.clone()),
        ("openai.base_url", cli.openai_base_url.clone()),
        ("claude.api_key", cli.claude_api_key.clone()),
        ("claude.base_url", cli.claude_base_url.clone()),
        ("mock.chunk_delay", cli.mock_chunk_delay.clone()),
        ("mock.latency", cli.mock_latency.clone()),
        (
            "gemini.oauth_creds_file",
            cli.gemini_oauth_creds_file.clone(),
        ),
        ("gemini.project_id", cli.project_id.clone()),
        ("gemini.base_url", cli.gemini_base_url.clone()),
        ("kiro.oauth_creds_file", cli.kiro_oauth_creds_file.clone()),
        ("kiro.base_url", cli.kiro_base_url.clone()),
        ("qwen.oauth_creds_file", cli.qwen_oauth_creds_file.clone()),
        ("qwen.base_url", cli.qwen_base_url.clone()),
        ("workers", cli.workers.clone()),
        ("limits.max_body_bytes", cli.max_body_bytes.clone()),
        ("limits.max_header_bytes", cli.max_header_bytes.clone()),
        ("limits.header_timeout", cli.header_timeout.clone()),
        ("limits.body_timeout", cli.body_timeout.clone()),
        ("limits.idle_timeout", cli.idle_timeout.clone()),
        ("limits.send_timeout", cli.send_timeout.clone()),
        ("limits.queue_timeout", cli.queue_timeout.clone()),
        ("limits.max_connections", cli.max_connections.clone()),
        ("cors_origins", cli.cors_origins.clone()),
        (
            "upstream.connect_timeout",
            cli.upstream_connect_timeout.clone(),
        ),
        ("upstream.timeout", cli.upstream_timeout.clone()),
        ("upstream.idle_timeout", cli.upstream_idle_timeout.clone()),
        ("upstream.max_retries", cli.request_max_retries.clone()),
        ("upstream.base_delay", cli.request_base_delay.clone()),
        ("upstream.stream_keepalive", cli.stream_keepalive.clone()),
        ("shutdown_timeout", cli.shutdown_timeout.clone()),
        ("log.level", cli.log_level.clone()),
        ("log.format", cli.log_format.clone()),
        ("log.prompts", switch(cli.log_prompts)),
        ("cache.enabled", switch(cli.cache_enabled)),
        ("cache.max_size_mb", cli.cache_max_size.clone()),
        ("cache.ttl_seconds", cli.cache_ttl.clone()),
        ("cache.scope", cli.cache_scope.clone()),
        ("redis.addr", cli.redis_addr.clone()),
        ("redis.password", cli.redis_password.clone()),
        ("redis.db", cli.redis_db.clone()),
        ("metrics.enabled", switch(cli.metrics_enabled)),
        ("metrics.port", cli.metrics_port.clone()),
    ];
    for (path, value) in given {
        if let (Some(value), Some(key)) = (value, keys::find(path))
            && let Some(flag) = key.flag
        {
            layer.set(key.path, Value::Text(value), Source::Flag(flag));
        }
    }
}

/// Turns the merged layer into a [`Config`], collecting problems.
struct Resolver {
    layer: Layer,
    problems: Vec<String>,
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
            return vec![ProviderKind::Mock];
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
            providers.push(ProviderKind::Mock);
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

    /// Type-checks the keys of features not built in this release and
    /// returns the paths that were set.
    fn pending(&mut self) -> Vec<String> {
        let mut set = Vec::new();
        for key in keys::KEYS {
            let Some(check) = key.pending else { continue };
            if self.layer.get(key.path).is_none() {
                continue;
            }
            let before = self.problems.len();
            if let keys::Check::HostPortList = check {
                if let Some((items, source)) = self.list(key.path) {
                    for item in items {
                        if let Err(message) = parse::host_port(&item) {
                            self.problem(key.path, &source, message);
                        }
                    }
                }
            } else {
                self.value(key.path, (), |t| match check {
                    keys::Check::Bool => parse::boolean(t).map(drop),
                    keys::Check::Port => parse::port(t).map(drop),
                    keys::Check::Duration => match parse::duration(t)? {
                        d if d.is_zero() => Err("must be greater than zero".to_owned()),
                        _ => Ok(()),
                    },
                    keys::Check::Int(min, max) => parse::integer(t, min, max).map(drop),
                    keys::Check::HostPort => parse::host_port(t).map(drop),
                    keys::Check::Url => parse::base_url(t).map(drop),
                    keys::Check::NonEmpty => parse::non_empty(t).map(drop),
                    keys::Check::OneOf(words) => parse::one_of(t, words).map(drop),
                    keys::Check::Any | keys::Check::HostPortList => Ok(()),
                });
            }
            if self.problems.len() == before {
                set.push(key.path.to_owned());
            }
        }
        set
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
            ext_tool: self.value("qwen.ext_tool", true, parse::boolean),
        };
        (gemini, kiro, qwen)
    }

    fn resolve(&mut self) -> Config {
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
            level: self.value("log.level", LogLevel::Info, |t| {
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
            format: self.value("log.format", LogFormat::Text, |t| {
                match t.trim().to_ascii_lowercase().as_str() {
                    "text" => Ok(LogFormat::Text),
                    "json" => Ok(LogFormat::Json),
                    _ => Err(format!("{t:?} is not one of text, json")),
                }
            }),
            prompts: self.boolean("log.prompts"),
        };
        let cache = CacheConfig {
            enabled: self.value("cache.enabled", true, parse::boolean),
            max_size_mb: self.value("cache.max_size_mb", DEFAULT_CACHE_MAX_SIZE_MB, |t| {
                parse::integer(t, 1, 1 << 20)
            }),
            ttl: self.value("cache.ttl_seconds", DEFAULT_CACHE_TTL, |t| {
                parse::integer(t, 0, 365 * 24 * 3600).map(Duration::from_secs)
            }),
            scope: self.value("cache.scope", CacheScope::Shared, |t| match parse::one_of(
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
        let redis_db = self.value("redis.db", 0, |t| parse::integer(t, 0, 65535));
        let redis = redis_addr.map(|addr| RedisConfig {
            addr,
            password: redis_password,
            db: redis_db,
        });
        let metrics = MetricsConfig {
            enabled: self.value("metrics.enabled", true, parse::boolean),
            port: self.value("metrics.port", None, |t| parse::port(t).map(Some)),
        };
        let pending_features = self.pending();

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
            if model_providers.contains(&kind) && !has_key {
                self.problems.push(format!(
                    "{kind} is enabled but has no API key; set {flag} ({} or {path} in the config file)",
                    keys::env_name(path)
                ));
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
            config_file: None,
            pending_features,
            warnings: Vec::new(),
        };
        if config.leaves_listener_open(listen) {
            self.problems.push(format!(
                "refusing to listen on {listen} without --api-key; pass --insecure-no-auth to allow"
            ));
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Writes `yaml` to a fresh temporary file and returns its path.
    fn file(yaml: &str) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("aiproxy-config-{}-{n}.yaml", std::process::id()));
        std::fs::write(&path, yaml).unwrap();
        path.to_string_lossy().into_owned()
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    fn flags(args: &[&str]) -> Cli {
        let mut all = vec!["aiproxy".to_owned()];
        all.extend(args.iter().map(|s| (*s).to_owned()));
        Cli::parse_from(&all).unwrap()
    }

    fn load(
        yaml: Option<&str>,
        vars: &[(&str, &str)],
        args: &[&str],
    ) -> Result<Config, ConfigError> {
        let mut cli = flags(args);
        if let Some(yaml) = yaml {
            cli.config = Some(file(yaml));
        }
        Config::load(&cli, &env(vars))
    }

    fn ok(yaml: &str) -> Config {
        load(Some(yaml), &[], &[]).unwrap()
    }

    /// Loads `yaml` expecting exactly one problem; returns it.
    fn problem(yaml: Option<&str>, vars: &[(&str, &str)], args: &[&str]) -> String {
        let err = load(yaml, vars, args).unwrap_err();
        assert_eq!(err.problems().len(), 1, "{err}");
        err.problems()[0].clone()
    }

    fn file_problem(yaml: &str) -> String {
        let message = problem(Some(yaml), &[], &[]);
        // Strip the temporary path.
        message
            .split_once(".yaml: ")
            .map(|(_, m)| m.to_owned())
            .unwrap_or(message)
    }

    #[test]
    fn no_sources_gives_the_defaults() {
        let config = Config::load(&Cli::default(), &[]).unwrap();
        let defaults = Config::default();
        assert_eq!(config.listen, defaults.listen);
        assert_eq!(config.model_providers, vec![ProviderKind::Mock]);
        assert_eq!(config.workers, DEFAULT_WORKERS);
        assert_eq!(config.limits.header_timeout, DEFAULT_HEADER_TIMEOUT);
        assert_eq!(config.upstream.base_delay, DEFAULT_REQUEST_BASE_DELAY);
        assert!(config.api_keys.is_empty() && config.pending_features.is_empty());
        assert_eq!(config.config_file, None);
    }

    #[test]
    fn precedence_is_file_then_env_then_flags() {
        let yaml = Some("port: 1001\nlimits: {header_timeout: 1s}\nlog: {prompts: true}\n");
        let vars = [
            ("AIPROXY_PORT", "1002"),
            ("AIPROXY_LIMITS_HEADER_TIMEOUT", "2s"),
        ];
        let all = load(
            yaml,
            &vars,
            &[
                "--port",
                "1003",
                "--header-timeout=3s",
                "--log-prompts=false",
            ],
        )
        .unwrap();
        assert_eq!(all.listen.port(), 1003);
        assert_eq!(all.limits.header_timeout, Duration::from_secs(3));
        assert!(!all.log.prompts, "--log-prompts=false overrides the file");
        let no_flags = load(yaml, &vars, &[]).unwrap();
        assert_eq!(no_flags.listen.port(), 1002);
        assert_eq!(no_flags.limits.header_timeout, Duration::from_secs(2));
        assert!(no_flags.log.prompts);
        let file_only = load(yaml, &[], &[]).unwrap();
        assert_eq!(file_only.listen.port(), 1001);
        assert_eq!(file_only.limits.header_timeout, Duration::from_secs(1));
    }

    #[test]
    fn config_file_comes_from_flag_or_environment() {
        let a = file("port: 1");
        let b = file("port: 2");
        let cli = flags(&["--config", &a]);
        let config = Config::load(&cli, &env(&[("AIPROXY_CONFIG", &b)])).unwrap();
        assert_eq!(
            (config.listen.port(), config.config_file),
            (1, Some(PathBuf::from(&a)))
        );
        let config = Config::load(&Cli::default(), &env(&[("AIPROXY_CONFIG", &b)])).unwrap();
        assert_eq!(config.listen.port(), 2);
    }

    #[test]
    fn errors_name_the_key_and_the_source() {
        assert_eq!(
            problem(None, &[], &["--port", "abc"]),
            "--port: \"abc\" is not a port number (0-65535)"
        );
        assert_eq!(
            problem(None, &[("AIPROXY_WORKERS", "0")], &[]),
            "AIPROXY_WORKERS: 0 is out of range (1-65536)"
        );
        let message = problem(Some("limits:\n  header_timeout: soon\n"), &[], &[]);
        assert!(message.ends_with(".yaml: limits.header_timeout: \"soon\" is not a duration (seconds, or a number with a unit: 500ms, 30s, 5m, 1h)"), "{message}");
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let err = load(
            Some("workers: 0\nlimits: {max_body_bytes: 0}\n"),
            &[("AIPROXY_LOG_LEVEL", "loud")],
            &["--port=x", "--upstream-timeout=0"],
        )
        .unwrap_err();
        assert_eq!(err.problems().len(), 5, "{err}");
        let text = err.to_string();
        assert!(text.starts_with("5 configuration problems:\n  "), "{text}");
        for needle in [
            "workers",
            "limits.max_body_bytes",
            "AIPROXY_LOG_LEVEL",
            "--port",
            "--upstream-timeout",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_yaml_are_errors() {
        assert!(file_problem("prot: 3000").contains("unknown field `prot`"));
        assert!(file_problem("limits: {max_body_byte: 1}").contains("max_body_byte"));
        assert!(file_problem("port: [1").contains("line 1"));
        let missing = problem(None, &[], &["--config", "/nonexistent/aiproxy.yaml"]);
        assert!(
            missing.starts_with("/nonexistent/aiproxy.yaml: cannot open"),
            "{missing}"
        );
    }

    #[test]
    fn oversized_file_is_refused() {
        let big = format!("# {}\nport: 1\n", "x".repeat(file::MAX_FILE_BYTES));
        assert!(file_problem(&big).contains("larger than 1048576 bytes"));
    }

    #[test]
    fn host_rules() {
        assert_eq!(ok("host: localhost").listen.ip(), DEFAULT_HOST);
        assert_eq!(ok("host: '::1'").listen.to_string(), "[::1]:3000");
        assert!(file_problem("host: example.com").contains("not an IP address or localhost"));
    }

    #[test]
    fn port_rules() {
        assert_eq!(ok("port: 0").listen.port(), 0);
        assert_eq!(ok("port: 65535").listen.port(), 65535);
        assert!(file_problem("port: 65536").contains("not a port number"));
        assert!(file_problem("port: -1").contains("not a port number"));
    }

    #[test]
    fn workers_rules() {
        assert_eq!(ok("workers: 1").workers, 1);
        assert_eq!(ok("workers: 65536").workers, 65536);
        assert!(file_problem("workers: 0").contains("out of range (1-65536)"));
        assert!(file_problem("workers: 65537").contains("out of range"));
        assert!(file_problem("workers: many").contains("not a whole number"));
    }

    #[test]
    fn provider_rules() {
        let config = ok("model_providers: [mock, gemini-cli-oauth]");
        assert_eq!(
            config.model_providers,
            vec![ProviderKind::Mock, ProviderKind::GeminiCli]
        );
        let config = ok("model_providers: mock, ,qwen-api,");
        assert_eq!(
            config.model_providers,
            vec![ProviderKind::Mock, ProviderKind::QwenApi]
        );
        assert!(file_problem("model_providers: []").contains("must name at least one provider"));
        assert!(file_problem("model_providers: [openai]").contains("unknown provider \"openai\""));
        assert!(
            file_problem("model_providers: [gemini-cli, gemini-cli-oauth]")
                .contains("gemini-cli is listed twice")
        );
        assert_eq!(
            problem(None, &[], &["--model-provider="]),
            "--model-provider: must name at least one provider"
        );
    }

    #[test]
    fn model_route_rules() {
        let config =
            ok("model_providers: [mock, qwen-api]\nmodel_routes: {qwen-*: qwen-api, gpt-4: mock}");
        assert_eq!(
            config.model_routes.get("qwen-*"),
            Some(&ProviderKind::QwenApi)
        );
        assert_eq!(config.model_routes.get("gpt-4"), Some(&ProviderKind::Mock));
        assert!(
            file_problem("model_routes: {gpt-4: qwen-api}")
                .contains("not enabled (model_providers: mock)")
        );
        assert!(file_problem("model_routes: {gpt-4: nope}").contains("unknown provider"));
        assert!(file_problem("model_routes: {'a*b': mock}").contains("prefix ending in *"));
        let config = load(None, &[("AIPROXY_MODEL_ROUTES", "a*=mock, b=mock")], &[]).unwrap();
        assert_eq!(config.model_routes.len(), 2);
        assert!(
            problem(None, &[("AIPROXY_MODEL_ROUTES", "a")], &[])
                .contains("\"a\" is not name=value")
        );
    }

    #[test]
    fn size_and_timeout_rules() {
        assert!(file_problem("limits: {max_body_bytes: 0}").contains("too small (at least 1)"));
        assert!(file_problem("limits: {max_header_bytes: 0}").contains("too small"));
        assert!(file_problem("limits: {max_headers: 0}").contains("out of range"));
        for key in [
            "limits: {header_timeout: 0}",
            "limits: {body_timeout: 0s}",
            "limits: {idle_timeout: 0ms}",
            "upstream: {connect_timeout: 0}",
            "upstream: {timeout: 0}",
            "upstream: {idle_timeout: 0}",
        ] {
            assert!(
                file_problem(key).contains("must be greater than zero"),
                "{key}"
            );
        }
        let config = ok(
            "shutdown_timeout: 0\nmock: {chunk_delay: 20ms}\nupstream: {base_delay: 0, max_retries: 0}",
        );
        assert_eq!(config.shutdown_timeout, Duration::ZERO);
        assert_eq!(config.mock.chunk_delay, Duration::from_millis(20));
        assert_eq!(config.upstream.max_retries, 0);
        assert!(file_problem("upstream: {max_retries: 101}").contains("out of range (0-100)"));
        let config = ok("limits: {max_body_bytes: 1, header_timeout: 5m}");
        assert_eq!(
            (config.limits.max_body_bytes, config.limits.header_timeout),
            (1, Duration::from_secs(300))
        );
    }

    #[test]
    fn non_loopback_listener_needs_a_key() {
        assert_eq!(
            problem(Some("host: 0.0.0.0"), &[], &[]),
            "refusing to listen on 0.0.0.0:3000 without --api-key; pass --insecure-no-auth to allow"
        );
        assert!(load(Some("host: 0.0.0.0\ninsecure_no_auth: true"), &[], &[]).is_ok());
        assert!(load(None, &[], &["--host=::", "--insecure-no-auth"]).is_ok());
        assert!(load(Some("host: 0.0.0.0"), &[("AIPROXY_API_KEY", "k")], &[]).is_ok());
        assert!(
            problem(None, &[], &["--host", "0.0.0.0", "--api-key", " , "]).starts_with("refusing")
        );
        assert!(
            load(None, &[], &["--host", "127.0.0.2"]).is_ok(),
            "all of 127/8 is loopback"
        );
    }

    #[test]
    fn admin_keys_and_cache_scope() {
        let config = load(
            Some("admin_api_key: [a1, a2]\ncache: {scope: per_key}\n"),
            &[],
            &[],
        )
        .unwrap();
        let admins: Vec<&str> = config.admin_api_keys.iter().map(Secret::expose).collect();
        assert_eq!(admins, ["a1", "a2"]);
        assert_eq!(config.cache.scope, CacheScope::PerKey);
        let config = load(None, &[("AIPROXY_ADMIN_API_KEY", "e1,e2")], &[]).unwrap();
        assert_eq!(config.admin_api_keys.len(), 2);
        assert_eq!(config.cache.scope, CacheScope::Shared, "the default");
        let config = load(
            None,
            &[],
            &["--admin-api-key", "f", "--cache-scope=per_key"],
        )
        .unwrap();
        assert_eq!(
            (config.admin_api_keys.len(), config.cache.scope),
            (1, CacheScope::PerKey)
        );
        assert!(file_problem("cache: {scope: per-user}").contains("not one of shared, per_key"));
        assert!(
            problem(Some("host: 0.0.0.0\nadmin_api_key: a"), &[], &[]).starts_with("refusing"),
            "an admin key alone leaves inference open"
        );
        assert!(is_secret("admin_api_key"));
    }

    #[test]
    fn the_metrics_port_may_not_be_the_main_port() {
        assert!(file_problem("port: 3100\nmetrics: {port: 3100}").contains("metrics.port: 3100"));
        assert!(load(Some("port: 0\nmetrics: {port: 0}"), &[], &[]).is_ok());
    }

    #[test]
    fn a_listener_is_judged_by_the_address_given() {
        let open = Config::default();
        assert!(!open.leaves_listener_open("127.0.0.1:1".parse().unwrap()));
        assert!(open.leaves_listener_open("0.0.0.0:1".parse().unwrap()));
        assert!(open.leaves_listener_open("[::]:1".parse().unwrap()));
        let keyed = Config {
            api_keys: vec![Secret::new("k")],
            ..Config::default()
        };
        assert!(!keyed.leaves_listener_open("0.0.0.0:1".parse().unwrap()));
        let insecure = Config {
            insecure_no_auth: true,
            ..Config::default()
        };
        assert!(!insecure.leaves_listener_open("0.0.0.0:1".parse().unwrap()));
    }

    #[test]
    fn api_keys_drop_empty_entries() {
        let config = load(None, &[], &["--api-key", "a,,b, "]).unwrap();
        let keys: Vec<&str> = config.api_keys.iter().map(Secret::expose).collect();
        assert_eq!(keys, ["a", "b"]);
        let config = ok("api_key: [a, '', b]");
        assert_eq!(config.api_keys.len(), 2);
        assert_eq!(ok("api_key: single").api_keys.len(), 1);
    }

    #[test]
    fn custom_upstreams_need_their_keys() {
        let message = problem(None, &[], &["--model-provider", "openai-custom"]);
        assert!(
            message.contains("openai-custom is enabled but has no API key; set --openai-api-key"),
            "{message}"
        );
        let message = problem(None, &[], &["--model-provider", "mock,claude-custom"]);
        assert!(message.contains("set --claude-api-key"), "{message}");
        let message = problem(
            None,
            &[],
            &["--model-provider", "openai-custom", "--openai-api-key="],
        );
        assert!(
            message.contains("--openai-api-key"),
            "an empty key is no key: {message}"
        );
        let config = load(
            Some("openai: {api_key: sk-1, base_url: 'http://127.0.0.1:9/v1/'}"),
            &[],
            &["--model-provider", "openai-custom"],
        )
        .unwrap();
        assert_eq!(config.openai.base_url, "http://127.0.0.1:9/v1");
        assert_eq!(
            config.openai.api_key.as_ref().map(Secret::expose),
            Some("sk-1")
        );
        assert!(
            file_problem("claude: {base_url: api.anthropic.com}")
                .contains("not an http:// or https:// URL")
        );
    }

    #[test]
    fn log_settings() {
        let config = load(
            None,
            &[("AIPROXY_LOG_LEVEL", "DEBUG")],
            &["--log-format", "json", "--log-prompts"],
        )
        .unwrap();
        assert_eq!(
            (config.log.level, config.log.format, config.log.prompts),
            (LogLevel::Debug, LogFormat::Json, true)
        );
        assert!(file_problem("log: {format: xml}").contains("not one of text, json"));
        assert!(file_problem("log: {prompts: maybe}").contains("not true or false"));
    }

    #[test]
    fn feature_guide_config_loads_with_pending_features() {
        let yaml = include_str!("../../tests/fixtures/feature-guide-config.yaml");
        let vars = [
            ("AIPROXY_OPENAI_API_KEY", "sk"),
            ("AIPROXY_CLAUDE_API_KEY", "ck"),
        ];
        let config = load(Some(yaml), &vars, &[]).unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:3000");
        assert_eq!(config.model_providers.len(), 5);
        assert!(config.cache.enabled && config.metrics.enabled);
        assert_eq!(config.metrics.port, Some(9090));
        assert_eq!(config.cache.ttl, Duration::from_secs(300));
        assert_eq!(
            config.redis.as_ref().map(|r| r.addr.as_str()),
            Some("localhost:6379")
        );
        for key in [
            "websocket.max_connections",
            "load_balancer.health_check_interval",
            "cluster.seed_nodes",
        ] {
            assert!(
                config.pending_features.iter().any(|p| p == key),
                "{key} not pending"
            );
        }
        // Without the upstream keys the same file is refused, naming the flags.
        let err = load(Some(yaml), &[], &[]).unwrap_err().to_string();
        assert!(
            err.contains("--openai-api-key") && err.contains("--claude-api-key"),
            "{err}"
        );
    }

    #[test]
    fn pending_features_are_type_checked() {
        assert!(
            file_problem("load_balancer: {algorithm: fastest}").contains("not one of round_robin")
        );
        assert!(file_problem("cache: {enabled: maybe}").contains("cache.enabled"));
        assert!(
            file_problem("cluster: {seed_nodes: [nohost]}")
                .contains("cluster.seed_nodes: \"nohost\" is not host:port")
        );
        assert!(file_problem("metrics: {port: 70000}").contains("metrics.port"));
        assert!(
            file_problem("load_balancer: {health_check_interval: 0}").contains("greater than zero")
        );
        assert!(file_problem("gemini: {base_url: nope}").contains("gemini.base_url"));
        let config = load(
            None,
            &[
                ("NODE_ID", "n1"),
                ("SEED_NODES", "a:1,b:2"),
                ("REDIS_ADDR", "redis:6379"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            config.pending_features,
            ["cluster.node_id", "cluster.seed_nodes"]
        );
        assert_eq!(config.redis.map(|r| r.addr), Some("redis:6379".to_owned()));
        let message = problem(None, &[("REDIS_ADDR", "redis")], &[]);
        assert_eq!(message, "REDIS_ADDR: \"redis\" is not host:port");
    }

    #[test]
    fn unknown_environment_variables_are_warnings() {
        let config = load(None, &[("AIPROXY_PROT", "1")], &[]).unwrap();
        assert_eq!(config.warnings.len(), 1);
        assert!(
            config.warnings[0].contains("did you mean AIPROXY_PORT?"),
            "{:?}",
            config.warnings
        );
    }

    #[test]
    fn world_readable_config_with_credentials_is_a_warning() {
        use std::os::unix::fs::PermissionsExt;
        let chmod = |path: &str, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        let load_file = |path: &str| {
            let mut cli = flags(&[]);
            cli.config = Some(path.to_owned());
            Config::load(&cli, &[]).unwrap().warnings
        };
        let with_key = file("openai:\n  api_key: sk-canary-7f3a\nredis:\n  password: pw-canary\n");
        chmod(&with_key, 0o644);
        let warnings = load_file(&with_key);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("openai.api_key, redis.password"),
            "{warnings:?}"
        );
        assert!(warnings[0].contains("mode 644"), "{warnings:?}");
        assert!(
            !warnings[0].contains("canary"),
            "the values stay out: {warnings:?}"
        );
        chmod(&with_key, 0o640);
        assert!(
            load_file(&with_key).is_empty(),
            "group-readable is how the package installs it"
        );
        let without_key = file("port: 3001\n");
        chmod(&without_key, 0o644);
        assert!(load_file(&without_key).is_empty());
    }

    #[test]
    fn secrets_never_appear_in_errors_or_debug() {
        let err = load(
            Some("api_key: [topsecret1]\nopenai: {api_key: [topsecret2]}\nredis: {password: topsecret3}\nport: x\n"),
            &[],
            &["--claude-api-key", "topsecret4", "--model-provider", "claude-custom"],
        )
        .unwrap_err();
        assert!(!err.to_string().contains("topsecret"), "{err}");
        let config = load(
            None,
            &[],
            &["--api-key", "topsecret5", "--openai-api-key", "topsecret6"],
        )
        .unwrap();
        assert!(!format!("{config:?}").contains("topsecret"));
    }

    #[test]
    fn oauth_provider_settings() {
        let config = load(
            Some(
                "gemini: {project_id: my-proj, token_url: 'http://127.0.0.1:9/token'}\n\
                 kiro: {version: 0.9.0, model_map: {claude-x: claude-x.1}}\n\
                 qwen: {ext_tool: false}\n",
            ),
            &[("AIPROXY_KIRO_BASE_URL", "http://127.0.0.1:8")],
            &[
                "--qwen-base-url",
                "http://127.0.0.1:7",
                "--gemini-oauth-creds-file",
                "/tmp/g.json",
            ],
        )
        .unwrap();
        assert_eq!(config.gemini.project_id.as_deref(), Some("my-proj"));
        assert_eq!(config.gemini.token_url, "http://127.0.0.1:9/token");
        assert_eq!(config.gemini.client_id, DEFAULT_GEMINI_CLIENT_ID);
        assert_eq!(
            config.gemini.oauth_creds_file,
            Some(PathBuf::from("/tmp/g.json"))
        );
        assert_eq!(config.kiro.version, "0.9.0");
        assert_eq!(config.kiro.base_url, "http://127.0.0.1:8");
        assert_eq!(config.kiro.model_map["claude-x"], "claude-x.1");
        assert_eq!(config.kiro.refresh_url, DEFAULT_KIRO_REFRESH_URL);
        assert_eq!(config.qwen.base_url.as_deref(), Some("http://127.0.0.1:7"));
        assert!(!config.qwen.ext_tool);
        assert!(config.pending_features.is_empty());
        assert!(file_problem("gemini: {project_id: default}").contains("gemini.project_id"));
        assert!(file_problem("qwen: {ext_tool: maybe}").contains("qwen.ext_tool"));
        assert!(file_problem("kiro: {refresh_url: nope}").contains("kiro.refresh_url"));
    }
}
