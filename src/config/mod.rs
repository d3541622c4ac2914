//! Validated runtime configuration.
//!
//! Configuration flows in two stages, as in ripgrep and sozu: the lenient
//! sources (`cli::Cli` flags, `AIPROXY_*` environment, `config.yaml` as
//! [`file::FileConfig`]) are merged with the precedence
//! defaults < file < environment < flags, then validated once into
//! [`Config`], whose fields can no longer be invalid. Every default is a
//! `DEFAULT_*` constant in [`defaults`], quoted by the man page.
//!
//! Every source is first reduced to text per key path ([`layer`]); one
//! parser per key then handles all three sources alike, and every problem
//! is collected into one [`ConfigError`] naming the key and its source
//! (`--port: "abc" is not a port number (0-65535)`,
//! `config.yaml: limits.header_timeout: …`, `AIPROXY_WORKERS: …`).
//!
//! Layout: [`keys`] is the table of every key; [`file`](mod@file),
//! [`env`](mod@env) and `load` read the sources into a [`layer::Layer`];
//! `resolve` parses it with [`parse`] into the typed sections (`sections`,
//! `providers`).

pub mod defaults;
pub mod env;
mod error;
pub mod file;
pub mod keys;
pub mod layer;
mod load;
pub mod parse;
mod providers;
mod resolve;
mod secret;
mod sections;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::balancer::client_addr::TrustedProxies;
use crate::pools::PoolsFile;
use crate::provider_kind::ProviderKind;

pub use defaults::*;
pub use error::ConfigError;
pub use file::FileConfig;
pub use providers::{ClaudeConfig, GeminiConfig, KiroConfig, MockConfig, OpenAiConfig, QwenConfig};
pub use secret::Secret;
pub use sections::{
    CacheConfig, CacheScope, ClusterConfig, Limits, LoadBalancerConfig, LogConfig, LogFormat,
    LogLevel, MetricsConfig, RedisConfig, Upstream, WebSocketConfig,
};

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
    /// The WebSocket API.
    pub websocket: WebSocketConfig,
    /// Cluster membership.
    pub cluster: ClusterConfig,
    /// `--provider-pools-file`: where the pools were read from.
    pub provider_pools_file: Option<PathBuf>,
    /// The pools file's contents, read with the configuration (and again
    /// on every reload); `None` without a pools file.
    pub pools: Option<PoolsFile>,
    /// Instance selection and health.
    pub load_balancer: LoadBalancerConfig,
    /// `--trusted-proxies`: proxies whose `X-Forwarded-For` is believed
    /// (for `ip_hash`); empty means the connection's peer is the client.
    pub trusted_proxies: TrustedProxies,
    /// The file this configuration was read from (re-read on SIGHUP).
    pub config_file: Option<PathBuf>,
    /// Non-fatal findings for the caller to log, such as unknown
    /// `AIPROXY_*` environment variables.
    pub warnings: Vec<String>,
}

impl Config {
    /// Refuses a configuration that asks for a part this build lacks
    /// (see [`crate::features`]). [`Config::load`] already refused such a
    /// setting, naming its flag or key; this catches one made in code.
    pub fn check_features(&self) -> Result<(), String> {
        use crate::features::{self, Feature};
        let asked: [(&str, bool, Feature); 5] = [
            ("redis", self.redis.is_some(), features::REDIS),
            ("metrics.enabled", self.metrics.enabled, features::METRICS),
            (
                "metrics.port",
                self.metrics.port.is_some(),
                features::METRICS,
            ),
            (
                "websocket.enabled",
                self.websocket.enabled,
                features::WEBSOCKET,
            ),
            ("cluster.enabled", self.cluster.enabled, features::CLUSTER),
        ];
        match asked.iter().find(|(_, on, f)| *on && !f.built) {
            Some((key, _, f)) => Err(format!("{key}: {}", f.missing())),
            None => Ok(()),
        }
    }

    /// Whether serving on `listen` with this configuration would leave a
    /// non-loopback listener without authentication. Checked at load
    /// against the configured address and on reload against the running
    /// one, which a reload cannot move.
    pub fn leaves_listener_open(&self, listen: SocketAddr) -> bool {
        !listen.ip().is_loopback() && self.api_keys.is_empty() && !self.insecure_no_auth
    }
}
