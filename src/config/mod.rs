//! Validated runtime configuration.
//!
//! Configuration flows in two stages, as in ripgrep and sozu: the lenient
//! sources (`cli::Cli` flags, `AIPROXY_*` environment, `config.yaml` as
//! [`file::FileConfig`]) are merged with the precedence
//! defaults < file < environment < flags, then validated once into
//! [`Config`], whose fields can no longer be invalid. Every default is a
//! `DEFAULT_*` constant below, quoted by the man page.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::providers::ProviderKind;

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
/// Upstream TCP/TLS connect timeout.
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Upstream time to first byte of the response.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest silence between two reads of an upstream (streamed) body.
pub const DEFAULT_UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Bounded drain time after SIGTERM/SIGINT.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Retries of a failed upstream attempt (connect error, 429, 5xx).
pub const DEFAULT_REQUEST_MAX_RETRIES: u32 = 2;
/// Base of the exponential, jittered retry back-off.
pub const DEFAULT_REQUEST_BASE_DELAY: Duration = Duration::from_millis(250);
/// Delay between two streamed chunks of the built-in mock provider.
pub const DEFAULT_MOCK_CHUNK_DELAY: Duration = Duration::from_millis(0);
/// openai-custom upstream; includes the version path like the OpenAI SDK.
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// claude-custom upstream root; `/v1` is appended when missing.
pub const DEFAULT_CLAUDE_BASE_URL: &str = "https://api.anthropic.com";

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
}

/// The validated configuration of one aiproxy process.
#[derive(Clone, Debug)]
pub struct Config {
    /// Listen address (`--host`, `--port`).
    pub listen: SocketAddr,
    /// Keys clients must present; empty means no auth (loopback only
    /// unless `insecure_no_auth`).
    pub api_keys: Vec<Secret>,
    /// `--insecure-no-auth`: allow a non-loopback listener without keys.
    pub insecure_no_auth: bool,
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
    /// The file this configuration was read from (re-read on SIGHUP).
    pub config_file: Option<PathBuf>,
}

impl Default for Config {
    /// Defaults only: mock provider, loopback, no keys.
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(DEFAULT_HOST, DEFAULT_PORT),
            api_keys: Vec::new(),
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
            },
            workers: DEFAULT_WORKERS,
            limits: Limits {
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
                max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
                max_headers: DEFAULT_MAX_HEADERS,
                header_timeout: DEFAULT_HEADER_TIMEOUT,
                body_timeout: DEFAULT_BODY_TIMEOUT,
                idle_timeout: DEFAULT_IDLE_TIMEOUT,
            },
            upstream: Upstream {
                connect_timeout: DEFAULT_UPSTREAM_CONNECT_TIMEOUT,
                timeout: DEFAULT_UPSTREAM_TIMEOUT,
                idle_timeout: DEFAULT_UPSTREAM_IDLE_TIMEOUT,
                max_retries: DEFAULT_REQUEST_MAX_RETRIES,
                base_delay: DEFAULT_REQUEST_BASE_DELAY,
            },
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            log: LogConfig {
                level: LogLevel::Info,
                format: LogFormat::Text,
                prompts: false,
            },
            config_file: None,
        }
    }
}
