//! The table of every configuration key: its dotted path in config.yaml,
//! its command-line flag (if any), its shape, and, for settings whose
//! feature is not built in this release, how to type-check it.
//!
//! The environment name of a key is derived from the path
//! ([`env_name`]), so the table is the single list that the file reader,
//! the environment reader and the tests agree on.

/// The shape of a key's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// One value.
    Scalar,
    /// A YAML list, or a comma-separated string.
    List,
    /// A YAML mapping, or `key=value,key=value` in the environment.
    Map,
}

/// One configuration key.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    /// Dotted path in config.yaml, e.g. `limits.max_body_bytes`.
    pub path: &'static str,
    /// The command-line flag, if this release has one.
    pub flag: Option<&'static str>,
    /// Value shape.
    pub kind: Kind,
}

const fn key(path: &'static str, flag: &'static str) -> Key {
    Key {
        path,
        flag: Some(flag),
        kind: Kind::Scalar,
    }
}

const fn file_only(path: &'static str) -> Key {
    Key {
        path,
        flag: None,
        kind: Kind::Scalar,
    }
}

/// Every key, in man-page order.
pub const KEYS: &[Key] = &[
    key("host", "--host"),
    key("port", "--port"),
    Key {
        kind: Kind::List,
        ..key("api_key", "--api-key")
    },
    Key {
        kind: Kind::List,
        ..key("admin_api_key", "--admin-api-key")
    },
    key("insecure_no_auth", "--insecure-no-auth"),
    Key {
        kind: Kind::List,
        ..key("cors_origins", "--cors-origins")
    },
    Key {
        kind: Kind::List,
        ..key("model_providers", "--model-provider")
    },
    Key {
        kind: Kind::Map,
        ..file_only("model_routes")
    },
    key("openai.api_key", "--openai-api-key"),
    key("openai.base_url", "--openai-base-url"),
    key("claude.api_key", "--claude-api-key"),
    key("claude.base_url", "--claude-base-url"),
    key("mock.chunk_delay", "--mock-chunk-delay"),
    key("mock.latency", "--mock-latency"),
    key("workers", "--workers"),
    key("limits.max_body_bytes", "--max-body-bytes"),
    key("limits.max_header_bytes", "--max-header-bytes"),
    file_only("limits.max_headers"),
    key("limits.header_timeout", "--header-timeout"),
    key("limits.body_timeout", "--body-timeout"),
    key("limits.idle_timeout", "--idle-timeout"),
    key("limits.send_timeout", "--send-timeout"),
    key("limits.queue_timeout", "--queue-timeout"),
    key("limits.max_connections", "--max-connections"),
    key("upstream.connect_timeout", "--upstream-connect-timeout"),
    key("upstream.timeout", "--upstream-timeout"),
    key("upstream.idle_timeout", "--upstream-idle-timeout"),
    key("upstream.max_retries", "--request-max-retries"),
    key("upstream.base_delay", "--request-base-delay"),
    key("upstream.stream_keepalive", "--stream-keepalive"),
    key("shutdown_timeout", "--shutdown-timeout"),
    key("log.level", "--log-level"),
    key("log.format", "--log-format"),
    key("log.prompts", "--log-prompts"),
    key("gemini.oauth_creds_file", "--gemini-oauth-creds-file"),
    key("gemini.project_id", "--project-id"),
    key("gemini.base_url", "--gemini-base-url"),
    file_only("gemini.token_url"),
    file_only("gemini.client_id"),
    file_only("gemini.client_secret"),
    key("kiro.oauth_creds_file", "--kiro-oauth-creds-file"),
    key("kiro.base_url", "--kiro-base-url"),
    file_only("kiro.refresh_url"),
    file_only("kiro.refresh_idc_url"),
    file_only("kiro.version"),
    Key {
        kind: Kind::Map,
        ..file_only("kiro.model_map")
    },
    key("qwen.oauth_creds_file", "--qwen-oauth-creds-file"),
    key("qwen.base_url", "--qwen-base-url"),
    file_only("qwen.token_url"),
    file_only("qwen.ext_tool"),
    key("provider_pools_file", "--provider-pools-file"),
    key("cache.enabled", "--cache-enabled"),
    key("cache.max_size_mb", "--cache-max-size"),
    key("cache.ttl_seconds", "--cache-ttl"),
    key("cache.scope", "--cache-scope"),
    key("redis.addr", "--redis-addr"),
    key("redis.password", "--redis-password"),
    key("redis.db", "--redis-db"),
    key("metrics.enabled", "--metrics-enabled"),
    key("metrics.port", "--metrics-port"),
    key("websocket.enabled", "--websocket-enabled"),
    key("websocket.max_connections", "--websocket-max-connections"),
    key("websocket.max_message_size", "--websocket-max-message-size"),
    key("websocket.max_frame_size", "--websocket-max-frame-size"),
    key("websocket.max_in_flight", "--websocket-max-in-flight"),
    key("websocket.max_queued_bytes", "--websocket-max-queued-bytes"),
    key(
        "websocket.heartbeat_interval",
        "--websocket-heartbeat-interval",
    ),
    key("websocket.idle_timeout", "--websocket-idle-timeout"),
    key("cluster.enabled", "--cluster-enabled"),
    key("cluster.node_id", "--node-id"),
    key("cluster.node_address", "--node-address"),
    Key {
        kind: Kind::List,
        ..key("cluster.seed_nodes", "--seed-nodes")
    },
    key("cluster.secret", "--cluster-secret"),
    file_only("cluster.heartbeat_interval"),
    file_only("cluster.suspect_after"),
    file_only("cluster.dead_after"),
    file_only("cluster.forget_after"),
    key("load_balancer.enabled", "--load-balancer-enabled"),
    key("load_balancer.algorithm", "--load-balancer-algorithm"),
    file_only("load_balancer.health_check_interval"),
    file_only("load_balancer.ejection_time"),
    Key {
        kind: Kind::List,
        ..key("trusted_proxies", "--trusted-proxies")
    },
];

/// Environment names used by the original project's compose file, read
/// as aliases (the `AIPROXY_*` name wins when both are set).
pub const ENV_ALIASES: &[(&str, &str)] = &[
    ("NODE_ID", "cluster.node_id"),
    ("REDIS_ADDR", "redis.addr"),
    ("SEED_NODES", "cluster.seed_nodes"),
];

/// Environment variable naming the config file.
pub const CONFIG_ENV: &str = "AIPROXY_CONFIG";

/// Looks a key up by path.
pub fn find(path: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.path == path)
}

/// Looks a key up by its command-line flag.
pub fn by_flag(flag: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.flag == Some(flag))
}

/// `AIPROXY_` plus the path in upper snake case.
pub fn env_name(path: &str) -> String {
    let mut name = String::from("AIPROXY_");
    name.extend(path.chars().map(|c| {
        if c == '.' {
            '_'
        } else {
            c.to_ascii_uppercase()
        }
    }));
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_are_upper_snake_paths() {
        assert_eq!(env_name("port"), "AIPROXY_PORT");
        assert_eq!(
            env_name("limits.max_body_bytes"),
            "AIPROXY_LIMITS_MAX_BODY_BYTES"
        );
        assert_eq!(env_name("cache.ttl_seconds"), "AIPROXY_CACHE_TTL_SECONDS");
    }

    #[test]
    fn env_names_are_unique() {
        let mut names: Vec<String> = KEYS.iter().map(|k| env_name(k.path)).collect();
        names.push(CONFIG_ENV.to_owned());
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count);
    }

    #[test]
    fn every_flag_is_a_cli_option() {
        use argh::ArgsInfo;
        let info = crate::cli::Flags::get_args_info();
        for flag in KEYS.iter().filter_map(|k| k.flag) {
            assert!(
                info.flags.iter().any(|f| f.long == flag),
                "{flag} is not in Cli"
            );
        }
    }

    #[test]
    fn every_cli_flag_is_a_key() {
        use argh::ArgsInfo;
        let info = crate::cli::Flags::get_args_info();
        for flag in info.flags.iter().map(|f| f.long) {
            let outside =
                ["--config"].contains(&flag) || crate::cli::PLAIN_SWITCHES.contains(&flag);
            assert_eq!(
                by_flag(flag).is_some(),
                !outside,
                "{flag}: every flag but --config and the plain switches sets a key"
            );
        }
    }
}
