//! Reading the sources (config file, environment, flags) into one
//! [`Layer`] in precedence order, then resolving it.

use std::path::PathBuf;

use super::file::FileConfig;
use super::layer::{Layer, Source, Value};
use super::resolve::Resolver;
use super::{Config, ConfigError, env, keys};
use crate::cli::Cli;

impl Config {
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
            return Err(ConfigError::new(resolver.problems));
        }
        config.config_file = config_file.map(PathBuf::from);
        config.warnings = warnings;
        Ok(config)
    }
}

/// Config keys whose values are credentials.
pub(super) fn is_secret(key: &str) -> bool {
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
