use super::layer::{Layer, Source, Value};
use super::load::{apply_flags, is_secret};
use super::*;
use crate::cli::Cli;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Writes `yaml` to a fresh temporary file and returns its path.
fn file(yaml: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("aiproxy-config-{}-{n}.yaml", std::process::id()));
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

fn load(yaml: Option<&str>, vars: &[(&str, &str)], args: &[&str]) -> Result<Config, ConfigError> {
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
    // Debug shows every field but secrets, which are compared apart.
    assert_eq!(format!("{config:?}"), format!("{defaults:?}"));
    assert_eq!(
        config.gemini.client_secret.expose(),
        defaults.gemini.client_secret.expose()
    );
    assert_eq!(
        config.gemini.client_secret.expose(),
        DEFAULT_GEMINI_CLIENT_SECRET
    );
    assert_eq!(config.listen, SocketAddr::new(DEFAULT_HOST, DEFAULT_PORT));
    assert_eq!(config.model_providers, vec![DEFAULT_MODEL_PROVIDER]);
    assert_eq!(config.workers, DEFAULT_WORKERS);
    assert_eq!(config.limits.header_timeout, DEFAULT_HEADER_TIMEOUT);
    assert_eq!(config.upstream.base_delay, DEFAULT_REQUEST_BASE_DELAY);
    assert_eq!(
        (config.cache.enabled, config.cache.ttl, config.cache.scope),
        (
            DEFAULT_CACHE_ENABLED,
            DEFAULT_CACHE_TTL,
            DEFAULT_CACHE_SCOPE
        )
    );
    assert!(config.api_keys.is_empty());
    assert!(config.warnings.is_empty() && config.redis.is_none());
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
fn every_flag_in_the_key_table_sets_its_key() {
    let with_flags = keys::KEYS.iter().filter_map(|k| Some((k.path, k.flag?)));
    let mut count = 0;
    for (path, flag) in with_flags {
        let mut layer = Layer::default();
        apply_flags(&flags(&[&format!("{flag}=true")]), &mut layer);
        let setting = layer
            .get(path)
            .unwrap_or_else(|| panic!("{flag} did not set {path}"));
        assert_eq!(setting.source, Source::Flag(flag));
        assert_eq!(setting.value, Value::Text("true".to_owned()));
        count += 1;
    }
    assert!(count > 40, "{count}");
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
        problem(None, &[("AIPROXY_MODEL_ROUTES", "a")], &[]).contains("\"a\" is not name=value")
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
    assert!(problem(None, &[], &["--host", "0.0.0.0", "--api-key", " , "]).starts_with("refusing"));
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
fn feature_guide_config_loads() {
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
    assert!(config.websocket.enabled);
    assert_eq!(config.websocket.max_connections, 1000);
    assert!(!config.cluster.enabled);
    assert_eq!(config.cluster.node_id, "node1");
    assert_eq!(
        (
            config.load_balancer.enabled,
            config.load_balancer.algorithm,
            config.load_balancer.health_check_interval
        ),
        (
            true,
            crate::balancer::Algorithm::LeastRequests,
            Duration::from_secs(30)
        )
    );
    // Without the upstream keys the same file is refused, naming the flags.
    let err = load(Some(yaml), &[], &[]).unwrap_err().to_string();
    assert!(
        err.contains("--openai-api-key") && err.contains("--claude-api-key"),
        "{err}"
    );
}

#[test]
fn feature_settings_are_type_checked() {
    assert!(
        file_problem("load_balancer: {algorithm: fastest}")
            .contains("expected one of round_robin, least_requests, weighted, random, ip_hash")
    );
    assert!(file_problem("cache: {enabled: maybe}").contains("cache.enabled"));
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
    assert_eq!(config.cluster.node_id, "n1");
    assert_eq!(config.cluster.seed_nodes, ["a:1", "b:2"]);
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
    assert!(file_problem("gemini: {project_id: default}").contains("gemini.project_id"));
    assert!(file_problem("qwen: {ext_tool: maybe}").contains("qwen.ext_tool"));
    assert!(file_problem("kiro: {refresh_url: nope}").contains("kiro.refresh_url"));
}

#[test]
fn websocket_settings() {
    let config = load(None, &[], &[]).unwrap();
    let ws = &config.websocket;
    assert!(ws.enabled);
    assert_eq!(
        (ws.max_connections, ws.max_message_size, ws.max_frame_size),
        (1000, 4 << 20, 1 << 20)
    );
    assert_eq!((ws.max_in_flight, ws.max_queued_bytes), (64, 16 << 20));
    assert_eq!(ws.heartbeat_interval, Duration::from_secs(30));
    assert_eq!(ws.idle_timeout, Duration::from_secs(90));
    let config = load(
        Some("websocket: {enabled: false, max_connections: 5, idle_timeout: 2s}"),
        &[("AIPROXY_WEBSOCKET_MAX_IN_FLIGHT", "3")],
        &[
            "--websocket-heartbeat-interval=500ms",
            "--websocket-max-frame-size",
            "1000",
        ],
    )
    .unwrap();
    let ws = &config.websocket;
    assert!(!ws.enabled);
    assert_eq!(
        (ws.max_connections, ws.max_in_flight, ws.max_frame_size),
        (5, 3, 1000)
    );
    assert_eq!(ws.idle_timeout, Duration::from_secs(2));
    assert_eq!(ws.heartbeat_interval, Duration::from_millis(500));
    let err = load(None, &[], &["--websocket-max-frame-size", "9000000"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("websocket.max_frame_size"), "{err}");
    assert!(file_problem("websocket: {max_connections: 0}").contains("websocket.max_connections"));
    assert!(file_problem("websocket: {heartbeat_interval: 0s}").contains("greater than zero"));
    assert!(file_problem("websocket: {bogus: 1}").contains("bogus"));
}

#[test]
fn cluster_settings_from_every_source() {
    let config = Config::default();
    assert!(!config.cluster.enabled);
    assert_eq!(config.cluster.node_id, crate::cluster::default_node_id());
    assert_eq!(config.cluster.node_address, None);
    assert_eq!(config.cluster.timing, crate::cluster::Timing::default());
    assert_eq!(
        config.cluster.literal_bind(config.listen),
        Some(config.listen),
        "the listen address by default"
    );

    let config = load(
        Some(
            "cluster:\n  enabled: true\n  node_id: node1\n  heartbeat_interval: 500ms\n  \
             suspect_after: 2s\n  dead_after: 5s\n  forget_after: 1h\n",
        ),
        &[("SEED_NODES", "a:1"), ("AIPROXY_CLUSTER_SECRET", "s3cret")],
        &[
            "--node-address=localhost:4000",
            "--seed-nodes",
            "b:2, c:3",
            "--node-id",
            "node7",
        ],
    )
    .unwrap();
    let c = &config.cluster;
    assert!(c.enabled);
    assert_eq!(c.node_id, "node7", "the flag wins over the file");
    assert_eq!(
        c.seed_nodes,
        ["b:2", "c:3"],
        "the flag wins over SEED_NODES"
    );
    assert_eq!(c.secret.as_ref().map(Secret::expose), Some("s3cret"));
    assert_eq!(c.timing.heartbeat, Duration::from_millis(500));
    assert_eq!(c.timing.forget_after, Duration::from_secs(3600));
    assert_eq!(
        c.literal_bind(config.listen),
        Some("127.0.0.1:4000".parse().unwrap())
    );
    let named = ClusterConfig {
        node_address: Some("aiproxy1:3000".into()),
        ..c.clone()
    };
    assert_eq!(
        named.literal_bind(config.listen),
        None,
        "looked up at start"
    );
    let debug = format!("{config:?}");
    assert!(!debug.contains("s3cret"), "{debug}");
}

#[test]
fn cluster_settings_are_checked_when_the_cluster_is_on() {
    assert!(
        file_problem("cluster: {seed_nodes: [nohost]}")
            .contains("cluster.seed_nodes: \"nohost\" is not host:port")
    );
    assert!(file_problem("cluster: {node_id: \"a b\"}").contains("cluster.node_id"));
    assert!(
        file_problem("cluster: {enabled: true, suspect_after: 1s}")
            .contains("at least twice cluster.heartbeat_interval")
    );
    // Off loopback, a secret is required, as an API key is for the
    // listener; a cluster that is off is not checked.
    let public = "host: 0.0.0.0\napi_key: k\ncluster: {enabled: true}\n";
    assert!(file_problem(public).contains("--cluster-secret"));
    let message = problem(
        None,
        &[],
        &["--cluster-enabled", "--node-address", "10.0.0.1:3000"],
    );
    assert!(message.contains("10.0.0.1:3000"), "{message}");
    assert!(
        problem(
            None,
            &[],
            &[
                "--cluster-enabled",
                "--node-address=10.0.0.1:3000",
                "--cluster-secret=short"
            ]
        )
        .contains("shorter than 16 bytes")
    );
    ok("host: 0.0.0.0\napi_key: k\ncluster: {enabled: false}\n");
    load(
        None,
        &[("AIPROXY_CLUSTER_SECRET", "a-long-enough-secret")],
        &["--cluster-enabled", "--node-address=10.0.0.1:3000"],
    )
    .unwrap();
}

#[test]
fn load_balancer_settings_from_every_source() {
    let config = Config::default();
    assert_eq!(
        (
            config.load_balancer.enabled,
            config.load_balancer.algorithm,
            config.load_balancer.health_check_interval,
            config.load_balancer.ejection_time
        ),
        (
            DEFAULT_LOAD_BALANCER_ENABLED,
            DEFAULT_LOAD_BALANCER_ALGORITHM,
            DEFAULT_HEALTH_CHECK_INTERVAL,
            DEFAULT_EJECTION_TIME
        )
    );
    assert!(config.trusted_proxies.is_empty() && config.pools.is_none());
    let config = load(
        Some("load_balancer: {algorithm: weighted, health_check_interval: 2s, ejection_time: 500ms}\n"),
        &[("AIPROXY_TRUSTED_PROXIES", "10.0.0.0/8, ::1")],
        &["--load-balancer-enabled=false", "--load-balancer-algorithm", "ip_hash"],
    )
    .unwrap();
    assert!(!config.load_balancer.enabled);
    assert_eq!(
        config.load_balancer.algorithm,
        crate::balancer::Algorithm::IpHash,
        "the flag wins over the file"
    );
    assert_eq!(
        config.load_balancer.health_check_interval,
        Duration::from_secs(2)
    );
    assert_eq!(
        config.load_balancer.ejection_time,
        Duration::from_millis(500)
    );
    assert!(config.trusted_proxies.contains("10.1.2.3".parse().unwrap()));
    assert!(!config.trusted_proxies.contains("11.1.2.3".parse().unwrap()));
    let message = problem(None, &[], &["--trusted-proxies", "10.0.0.1/8"]);
    assert!(message.starts_with("--trusted-proxies: "), "{message}");
    assert!(
        message.contains("bits set after its /8 prefix"),
        "{message}"
    );
    assert!(file_problem("load_balancer: {ejection_time: 0}").contains("greater than zero"));
}

#[test]
fn the_pools_file_is_read_with_the_configuration() {
    let dir = std::env::temp_dir();
    let path = dir.join(format!("aiproxy-pools-{}.json", std::process::id()));
    std::fs::write(
        &path,
        r#"{"openai-custom": [
            {"uuid": "a", "OPENAI_API_KEY": "sk-a", "weight": 3},
            {"uuid": "b", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}],
           "claude-kiro-oauth": [{"uuid": "k", "KIRO_OAUTH_CREDS_FILE_PATH": "/x.json"}]}"#,
    )
    .unwrap();
    let shown = path.to_string_lossy().into_owned();
    // Member b has no key of its own and no global key is set.
    let message = problem(
        None,
        &[],
        &[
            "--model-provider",
            "openai-custom",
            "--provider-pools-file",
            &shown,
        ],
    );
    assert!(
        message.contains("member b of openai-custom has no API key"),
        "{message}"
    );
    let config = load(
        None,
        &[("AIPROXY_OPENAI_API_KEY", "sk-global")],
        &[
            "--model-provider",
            "openai-custom",
            "--provider-pools-file",
            &shown,
        ],
    )
    .unwrap();
    let pools = config.pools.as_ref().unwrap();
    let pool = pools.pool(ProviderKind::OpenAiCustom).unwrap();
    assert_eq!(pool.members.len(), 2);
    assert_eq!(pool.members[0].weight, 3);
    assert_eq!(config.provider_pools_file.as_deref(), Some(path.as_path()));
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.contains("kiro-api is ignored: the provider is not enabled")),
        "{:?}",
        config.warnings
    );
    std::fs::write(
        &path,
        r#"{"openai-custom": [{"uuid": "a", "colour": "red"}]}"#,
    )
    .unwrap();
    let message = problem(
        None,
        &[("AIPROXY_OPENAI_API_KEY", "sk-global")],
        &[
            "--model-provider",
            "openai-custom",
            "--provider-pools-file",
            &shown,
        ],
    );
    assert!(message.starts_with("--provider-pools-file: "), "{message}");
    assert!(message.contains("colour"), "{message}");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn settings_that_ask_for_an_optional_part_need_it_built() {
    use crate::features::{self, Feature};
    let cases: [(&[&str], &str, Feature); 5] = [
        (
            &["--cluster-enabled"],
            "--cluster-enabled",
            features::CLUSTER,
        ),
        (
            &["--redis-addr", "127.0.0.1:6379"],
            "--redis-addr",
            features::REDIS,
        ),
        (
            &["--metrics-enabled=true"],
            "--metrics-enabled",
            features::METRICS,
        ),
        (
            &["--metrics-port", "9100"],
            "--metrics-port",
            features::METRICS,
        ),
        (
            &["--websocket-enabled"],
            "--websocket-enabled",
            features::WEBSOCKET,
        ),
    ];
    for (args, flag, feature) in cases {
        match load(None, &[], args) {
            Ok(_) => assert!(feature.built, "{args:?}"),
            Err(e) => {
                assert!(!feature.built, "{args:?}: {e}");
                assert_eq!(e.problems(), [format!("{flag}: {}", feature.missing())]);
            }
        }
    }
    // Switched off, a missing part is no problem; the defaults follow the build.
    let config = load(
        None,
        &[],
        &["--metrics-enabled=false", "--websocket-enabled=false"],
    )
    .unwrap();
    assert!(!config.metrics.enabled && !config.websocket.enabled);
    let config = Config::default();
    assert_eq!(config.metrics.enabled, features::METRICS.built);
    assert_eq!(config.websocket.enabled, features::WEBSOCKET.built);
    assert!(config.check_features().is_ok());
}
