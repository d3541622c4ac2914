use super::*;

use std::collections::HashSet;
use std::process::Command;
use std::thread;
use std::time::Instant;

/// Every family name as it appears in `# TYPE` lines.
const CORE_NAMES: [&str; 13] = [
    "aiproxy_build_info",
    "aiproxy_http_requests_total",
    "aiproxy_http_request_duration_seconds",
    "aiproxy_http_active_requests",
    "aiproxy_provider_requests_total",
    "aiproxy_provider_errors_total",
    "aiproxy_provider_tokens_used_total",
    "aiproxy_provider_request_duration_seconds",
    "aiproxy_provider_time_to_first_token_seconds",
    "aiproxy_cache_hits_total",
    "aiproxy_cache_misses_total",
    "aiproxy_cache_size_bytes",
    "aiproxy_cache_refused_total",
];
const FEATURE_NAMES: [&str; 11] = [
    "aiproxy_websocket_connections",
    "aiproxy_websocket_messages_total",
    "aiproxy_websocket_closes_total",
    "aiproxy_loadbalancer_instance_healthy",
    "aiproxy_loadbalancer_selections_total",
    "aiproxy_loadbalancer_ejections_total",
    "aiproxy_loadbalancer_retries_total",
    "aiproxy_loadbalancer_budget_refusals_total",
    "aiproxy_cluster_nodes",
    "aiproxy_cache_redis_up",
    "aiproxy_cache_redis_errors_total",
];

fn quiet(options: MetricsOptions) -> Arc<Metrics> {
    Metrics::with_options(MetricsOptions {
        sample_interval: None,
        ..options
    })
}

fn all_features() -> Arc<Metrics> {
    quiet(MetricsOptions {
        providers: vec![ProviderKind::Mock, ProviderKind::OpenAiCustom],
        websocket: true,
        load_balancer: true,
        cluster: true,
        redis: true,
        ..MetricsOptions::default()
    })
}

fn text(m: &Metrics) -> String {
    let (ct, body) = m.encode(None);
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    body
}

/// The value of the sample whose name and labels (in order, as rendered)
/// are exactly `series`, e.g. `aiproxy_cache_hits_total` or
/// `aiproxy_http_requests_total{route="/x",method="GET",status="200"}`.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().unwrap())
    })
}

fn family_names(body: &str) -> HashSet<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect()
}

/// Series (sample lines) whose name starts with `prefix`.
fn series_count(body: &str, prefix: &str) -> usize {
    body.lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(prefix))
        .count()
}

/// A light structural check of an exposition: every line is a comment of
/// a known kind or `name{labels} value` with a parsable value; labels are
/// quoted; returns the number of samples.
fn check_lines(body: &str, openmetrics: bool) -> usize {
    assert!(body.ends_with('\n'));
    let mut samples = 0;
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let kind = rest.split(' ').next().unwrap();
            let allowed: &[&str] = if openmetrics {
                &["HELP", "TYPE", "UNIT", "EOF"]
            } else {
                &["HELP", "TYPE"]
            };
            assert!(allowed.contains(&kind), "unexpected comment: {line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect(line);
        let v = value.trim();
        assert!(
            v.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&v),
            "bad value in {line}"
        );
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'),
            "bad name in {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unterminated labels: {line}");
            assert_eq!(
                series.matches('"').count() % 2,
                0,
                "unbalanced quotes: {line}"
            );
        }
        samples += 1;
    }
    samples
}

fn record_some_traffic(m: &Metrics) {
    m.http_request(
        "/v1/chat/completions",
        "POST",
        200,
        Duration::from_millis(120),
    );
    m.provider_request(ProviderKind::Mock, "gpt-4o", "mock-0");
    m.provider_latency(ProviderKind::Mock, Duration::from_millis(100));
    m.time_to_first_token(ProviderKind::Mock, Duration::from_millis(20));
    m.tokens(ProviderKind::Mock, "gpt-4o", 12, 30);
    m.provider_error(ProviderKind::Mock, ErrorKind::Timeout);
    m.cache_hit();
    m.cache_miss();
    m.set_cache_size_bytes(4096);
    m.set_cache_redis_up(true);
    m.set_websocket_connections(3);
    m.websocket_message("heartbeat", true);
    m.websocket_closed(1001);
    m.set_instance_healthy(ProviderKind::Mock, "mock-0", true);
    m.set_instance_counts(ProviderKind::Mock, "mock-0", 4, 1);
    m.set_lb_retry_totals(2, 1);
    m.set_cluster_nodes(NodeState::Alive, 2);
}

#[test]
fn every_name_is_present_even_before_traffic() {
    let m = all_features();
    for body in [text(&m), m.encode(Some("application/openmetrics-text")).1] {
        let names = family_names(&body);
        for name in CORE_NAMES.iter().chain(&FEATURE_NAMES) {
            // OpenMetrics names counters and info without their suffix in
            // `# TYPE`; accept either spelling.
            let bare = name
                .strip_suffix("_total")
                .or_else(|| name.strip_suffix("_info"))
                .unwrap_or(name);
            assert!(
                names.contains(*name) || names.contains(bare),
                "{name} missing from:\n{body}"
            );
        }
    }
}

#[test]
fn every_name_is_present_after_traffic() {
    let m = all_features();
    record_some_traffic(&m);
    let body = text(&m);
    let names = family_names(&body);
    for name in CORE_NAMES.iter().chain(&FEATURE_NAMES) {
        assert!(names.contains(*name), "{name} missing");
    }
    assert!(body.contains(r#"aiproxy_build_info{version=""#));
}

#[test]
fn feature_families_are_absent_when_off() {
    let m = quiet(MetricsOptions::default());
    record_some_traffic(&m); // setters of disabled features are no-ops
    let body = text(&m);
    let names = family_names(&body);
    for name in FEATURE_NAMES {
        assert!(!names.contains(name), "{name} registered while off");
    }
    for name in CORE_NAMES {
        assert!(names.contains(name), "{name} missing");
    }
}

#[test]
fn counters_and_histograms_move_by_the_recorded_amount() {
    let m = all_features();
    let route = "/v1/chat/completions";
    for _ in 0..3 {
        m.http_request(route, "POST", 200, Duration::from_millis(300));
    }
    m.http_request(route, "post", 502, Duration::from_secs(2));
    m.provider_request(ProviderKind::Mock, "gpt-4o", "mock-0");
    m.provider_request(ProviderKind::Mock, "gpt-4o", "mock-0");
    m.provider_error(ProviderKind::Mock, ErrorKind::RateLimited);
    m.tokens(ProviderKind::Mock, "gpt-4o", 10, 25);
    m.tokens(ProviderKind::Mock, "gpt-4o", 5, 0);
    m.provider_latency(ProviderKind::Mock, Duration::from_millis(40));
    m.time_to_first_token(ProviderKind::Mock, Duration::from_millis(7));
    for _ in 0..4 {
        m.cache_hit();
    }
    m.cache_miss();
    m.set_cache_size_bytes(1 << 20);
    m.set_cache_redis_up(false);
    m.cache_redis_error();
    m.set_websocket_connections(7);
    m.websocket_message("stream", false);
    m.websocket_message("stream", false);
    m.websocket_message("request", true);
    m.websocket_closed(1008);
    m.websocket_closed(4321);
    m.set_instance_healthy(ProviderKind::Mock, "mock-0", false);
    m.set_cluster_nodes(NodeState::Dead, 1);

    let b = text(&m);
    let get = |s: &str| sample(&b, s).unwrap_or_else(|| panic!("no sample {s} in\n{b}"));
    assert_eq!(
        get(
            r#"aiproxy_http_requests_total{route="/v1/chat/completions",method="POST",status="200"}"#
        ),
        3.0
    );
    assert_eq!(
        get(
            r#"aiproxy_http_requests_total{route="/v1/chat/completions",method="POST",status="502"}"#
        ),
        1.0
    );
    let h = r#"aiproxy_http_request_duration_seconds"#;
    let l = r#"route="/v1/chat/completions",method="POST""#;
    assert_eq!(get(&format!("{h}_count{{{l}}}")), 4.0);
    assert!((get(&format!("{h}_sum{{{l}}}")) - 2.9).abs() < 1e-9);
    assert_eq!(get(&format!(r#"{h}_bucket{{{l},le="0.25"}}"#)), 0.0);
    assert_eq!(get(&format!(r#"{h}_bucket{{{l},le="0.5"}}"#)), 3.0);
    assert_eq!(get(&format!(r#"{h}_bucket{{{l},le="2.5"}}"#)), 4.0);
    assert_eq!(get(&format!(r#"{h}_bucket{{{l},le="+Inf"}}"#)), 4.0);
    assert_eq!(
        get(r#"aiproxy_provider_requests_total{provider="mock",model="gpt-4o",instance="mock-0"}"#),
        2.0
    );
    assert_eq!(
        get(r#"aiproxy_provider_errors_total{provider="mock",kind="rate_limited"}"#),
        1.0
    );
    assert_eq!(
        get(r#"aiproxy_provider_errors_total{provider="mock",kind="timeout"}"#),
        0.0,
        "enabled providers start with every kind at zero"
    );
    assert_eq!(
        get(r#"aiproxy_provider_errors_total{provider="openai-custom",kind="status_5xx"}"#),
        0.0
    );
    assert_eq!(
        get(r#"aiproxy_provider_tokens_used_total{provider="mock",model="gpt-4o",type="prompt"}"#),
        15.0
    );
    assert_eq!(
        get(
            r#"aiproxy_provider_tokens_used_total{provider="mock",model="gpt-4o",type="completion"}"#
        ),
        25.0
    );
    assert_eq!(
        get(r#"aiproxy_provider_request_duration_seconds_count{provider="mock"}"#),
        1.0
    );
    assert_eq!(
        get(r#"aiproxy_provider_request_duration_seconds_bucket{provider="mock",le="0.05"}"#),
        1.0
    );
    assert_eq!(
        get(r#"aiproxy_provider_time_to_first_token_seconds_bucket{provider="mock",le="0.005"}"#),
        0.0
    );
    assert_eq!(
        get(r#"aiproxy_provider_time_to_first_token_seconds_bucket{provider="mock",le="0.01"}"#),
        1.0
    );
    assert_eq!(get("aiproxy_cache_hits_total"), 4.0);
    assert_eq!(get("aiproxy_cache_misses_total"), 1.0);
    assert_eq!(get("aiproxy_cache_size_bytes"), 1_048_576.0);
    assert_eq!(get("aiproxy_cache_redis_up"), 0.0);
    assert_eq!(get("aiproxy_cache_redis_errors_total"), 1.0);
    assert_eq!(get("aiproxy_websocket_connections"), 7.0);
    assert_eq!(
        get(r#"aiproxy_websocket_messages_total{type="stream",direction="out"}"#),
        2.0
    );
    assert_eq!(
        get(r#"aiproxy_websocket_messages_total{type="request",direction="in"}"#),
        1.0
    );
    assert_eq!(
        get(r#"aiproxy_websocket_messages_total{type="batch",direction="in"}"#),
        0.0
    );
    assert_eq!(get(r#"aiproxy_websocket_closes_total{code="1008"}"#), 1.0);
    assert_eq!(get(r#"aiproxy_websocket_closes_total{code="other"}"#), 1.0);
    assert_eq!(
        get(r#"aiproxy_loadbalancer_instance_healthy{provider="mock",instance="mock-0"}"#),
        0.0
    );
    assert_eq!(get(r#"aiproxy_cluster_nodes{state="dead"}"#), 1.0);
    assert_eq!(get(r#"aiproxy_cluster_nodes{state="alive"}"#), 0.0);

    m.set_instance_healthy(ProviderKind::Mock, "mock-0", true);
    m.forget_instance(ProviderKind::Mock, "gone");
    let b = text(&m);
    assert_eq!(
        sample(
            &b,
            r#"aiproxy_loadbalancer_instance_healthy{provider="mock",instance="mock-0"}"#
        ),
        Some(1.0)
    );
    m.forget_instance(ProviderKind::Mock, "mock-0");
    assert_eq!(
        series_count(&text(&m), "aiproxy_loadbalancer_instance_healthy"),
        0
    );
}

#[test]
fn balancer_counters_follow_the_balancer() {
    let m = all_features();
    m.set_instance_counts(ProviderKind::OpenAiCustom, "a", 3, 0);
    m.set_instance_counts(ProviderKind::OpenAiCustom, "b", 1, 1);
    m.set_lb_retry_totals(5, 2);
    // A scrape that read older totals does not lower them.
    m.set_lb_retry_totals(4, 1);
    let b = text(&m);
    let get = |s: &str| sample(&b, s).unwrap_or_else(|| panic!("no sample {s} in\n{b}"));
    assert_eq!(
        get(r#"aiproxy_loadbalancer_selections_total{provider="openai-custom",instance="a"}"#),
        3.0
    );
    assert_eq!(
        get(r#"aiproxy_loadbalancer_ejections_total{provider="openai-custom",instance="b"}"#),
        1.0
    );
    assert_eq!(get("aiproxy_loadbalancer_retries_total"), 5.0);
    assert_eq!(get("aiproxy_loadbalancer_budget_refusals_total"), 2.0);
    m.forget_instance(ProviderKind::OpenAiCustom, "b");
    let b = text(&m);
    assert!(!b.contains(r#"instance="b""#), "{b}");
    assert!(b.contains(r#"instance="a""#));
    // Without the balancer's families the calls do nothing.
    let off = quiet(MetricsOptions::default());
    off.set_instance_counts(ProviderKind::Mock, "x", 1, 1);
    off.set_lb_retry_totals(1, 1);
    assert!(!text(&off).contains("loadbalancer"));
}

#[test]
fn active_guard_goes_back_down_even_on_panic() {
    let m = quiet(MetricsOptions::default());
    let active = || sample(&text(&m), "aiproxy_http_active_requests").unwrap();
    let a = m.active_guard();
    let b = m.active_guard();
    assert_eq!(active(), 2.0);
    drop(a);
    assert_eq!(active(), 1.0);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _g = m.active_guard();
        panic!("worker panics mid-request");
    }));
    assert!(r.is_err());
    assert_eq!(active(), 1.0);
    drop(b);
    assert_eq!(active(), 0.0);
}

#[test]
fn both_encodings_parse_and_only_openmetrics_has_eof() {
    let m = all_features();
    record_some_traffic(&m);
    m.provider_request(ProviderKind::Mock, "weird\"model\nname", "mock-0");

    let (ct, om) = m.encode(Some(
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    ));
    assert_eq!(ct, OPENMETRICS_CONTENT_TYPE);
    assert!(om.ends_with("# EOF\n"));
    assert_eq!(om.matches("# EOF").count(), 1);
    assert!(om.contains("# UNIT aiproxy_http_request_duration_seconds seconds"));
    assert!(check_lines(&om, true) > 50);

    let (ct, txt) = m.encode(Some("text/plain"));
    assert_eq!(ct, TEXT_CONTENT_TYPE);
    assert!(!txt.contains("# EOF"));
    assert!(!txt.contains("# UNIT"));
    assert!(check_lines(&txt, false) > 50);
    assert!(txt.contains("# TYPE aiproxy_http_requests_total counter"));
    assert!(txt.contains("# TYPE aiproxy_http_request_duration_seconds histogram"));
    assert!(txt.contains("# TYPE aiproxy_build_info gauge"));
    assert!(
        txt.contains(r#"model="other""#),
        "an unusable model name folds"
    );
}

#[test]
fn accept_negotiation() {
    assert!(!wants_openmetrics(None));
    assert!(!wants_openmetrics(Some("*/*")));
    assert!(!wants_openmetrics(Some("text/plain;version=0.0.4")));
    assert!(wants_openmetrics(Some("application/openmetrics-text")));
    assert!(wants_openmetrics(Some(
        "application/openmetrics-text;version=1.0.0;q=0.8,text/plain;q=0.2"
    )));
    assert!(wants_openmetrics(Some(
        "text/plain, APPLICATION/OPENMETRICS-TEXT; version=0.0.1"
    )));
    assert!(!wants_openmetrics(Some(
        "application/openmetrics-text;q=0,text/plain"
    )));
}

/// xorshift: random enough names, no dependency.
fn random_names(n: usize, seed: u64) -> Vec<String> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("model-{x:016x}")
        })
        .collect()
}

#[test]
fn label_folding_keeps_cardinality_bounded() {
    let m = quiet(MetricsOptions {
        known_models: vec!["gpt-4o".into()],
        ..MetricsOptions::default()
    });
    for name in random_names(1000, 0x9e37_79b9_7f4a_7c15) {
        m.provider_request(ProviderKind::Mock, &name, "mock-0");
        m.tokens(ProviderKind::Mock, &name, 1, 1);
        m.http_request("not_found", &name, 404, Duration::from_millis(1));
    }
    m.provider_request(ProviderKind::Mock, "gpt-4o", "mock-0");
    let b = text(&m);
    let requests = series_count(&b, "aiproxy_provider_requests_total{");
    assert_eq!(
        requests,
        DEFAULT_MAX_MODELS + 2,
        "100 learned + other + known"
    );
    assert!(
        b.contains(r#"model="gpt-4o""#),
        "known models keep their label"
    );
    let other = sample(
        &b,
        r#"aiproxy_provider_requests_total{provider="mock",model="other",instance="mock-0"}"#,
    )
    .unwrap();
    assert_eq!(other, 900.0);
    assert_eq!(
        series_count(&b, "aiproxy_provider_tokens_used_total{"),
        2 * (DEFAULT_MAX_MODELS + 1)
    );
    // Random methods fold to OTHER: one series.
    assert_eq!(series_count(&b, "aiproxy_http_requests_total{"), 1);
    assert!(b.contains(r#"method="OTHER""#));
}

#[test]
fn summary_has_the_documented_shape() {
    let m = all_features();
    let t0 = Instant::now();
    m.sample_at(t0);
    record_some_traffic(&m);
    m.http_request("/v1/models", "GET", 500, Duration::from_millis(3));
    m.sample_at(t0 + Duration::from_secs(2));
    let s = m.summary();
    for key in [
        "version",
        "uptime_seconds",
        "now_ms",
        "window_seconds",
        "requests",
        "latency",
        "providers",
        "tokens",
        "cache",
        "websocket",
        "instances",
        "cluster",
        "history",
    ] {
        assert!(s.get(key).is_some(), "summary lacks {key}: {s:#}");
    }
    assert_eq!(s["requests"]["total"], 2);
    assert_eq!(s["requests"]["server_errors"], 1);
    assert_eq!(s["requests"]["active"], 0);
    assert!(s["requests"]["per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(s["requests"]["error_ratio"], 0.5);
    let p50 = s["latency"]["p50"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= 0.25, "{p50}");
    assert!(s["latency"]["p99"].as_f64().unwrap() >= p50);
    assert_eq!(s["latency"]["count"], 2);

    let providers = s["providers"].as_array().unwrap();
    let names: Vec<&str> = providers
        .iter()
        .map(|p| p["provider"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["openai-custom", "mock"]);
    let mock = &providers[1];
    assert_eq!(mock["requests"], 1);
    assert_eq!(mock["errors"], 1);
    assert_eq!(mock["errors_by_kind"]["timeout"], 1);
    assert_eq!(mock["tokens"]["prompt"], 12);
    assert_eq!(mock["tokens"]["completion"], 30);
    assert!(mock["latency"]["p95"].as_f64().is_some());
    assert!(mock["ttft"]["p50"].as_f64().is_some());
    assert!(providers[0]["latency"]["p50"].is_null(), "no data yet");

    assert_eq!(s["tokens"]["total"], 42);
    assert_eq!(s["cache"]["hits"], 1);
    assert_eq!(s["cache"]["hit_ratio"], 0.5);
    assert_eq!(s["cache"]["size_bytes"], 4096);
    assert_eq!(s["cache"]["redis_up"], true);
    assert_eq!(s["websocket"]["connections"], 3);
    assert_eq!(
        s["instances"],
        serde_json::json!([{"provider": "mock", "instance": "mock-0", "healthy": true}])
    );
    assert_eq!(s["cluster"]["alive"], 2);
    assert_eq!(s["cluster"]["dead"], 0);

    let h = &s["history"];
    assert_eq!(h["t"].as_array().unwrap().len(), 1);
    assert_eq!(h["rps"][0], 1.0, "2 requests over 2 s");
    assert_eq!(h["error_ratio"][0], 0.5);
    assert!(h["p95"][0].as_f64().is_some());
    assert_eq!(h["interval_seconds"], 2.0);
    assert_eq!(h["providers"]["mock"]["rps"][0], 0.5);
    assert_eq!(h["cache_hit_ratio"][0], 0.5);
    assert_eq!(h["tokens_per_second"][0], 21.0);
}

#[test]
fn summary_without_optional_features_has_null_sections() {
    let m = quiet(MetricsOptions::default());
    let s = m.summary();
    assert!(s["websocket"].is_null());
    assert!(s["instances"].is_null());
    assert!(s["cluster"].is_null());
    assert!(s["cache"]["redis_up"].is_null());
    assert!(s["latency"]["p50"].is_null(), "no requests, no quantile");
    assert_eq!(s["requests"]["total"], 0);
    assert_eq!(s["providers"], serde_json::json!([]));
    assert_eq!(s["history"]["t"], serde_json::json!([]));
}

#[test]
fn history_ring_is_bounded_and_the_window_is_recent() {
    let m = quiet(MetricsOptions::default());
    let t0 = Instant::now();
    // Old traffic, outside the headline window.
    for _ in 0..100 {
        m.http_request("/health", "GET", 200, Duration::from_secs(5));
    }
    for i in 0..(HISTORY_LEN as u64 + 20) {
        if i == HISTORY_LEN as u64 + 10 {
            m.http_request("/health", "GET", 200, Duration::from_millis(1));
        }
        m.sample_at(t0 + Duration::from_secs(2 * i));
    }
    let s = m.summary_at(t0 + Duration::from_secs(2 * (HISTORY_LEN as u64 + 20)));
    assert_eq!(s["history"]["t"].as_array().unwrap().len(), HISTORY_LEN - 1);
    // The window holds only the one fast request, not the 100 slow ones.
    assert_eq!(s["latency"]["count"], 1);
    assert!(s["latency"]["p99"].as_f64().unwrap() <= 0.001);
}

#[test]
fn sampler_thread_fills_history_and_stops_with_the_metrics() {
    let m = Metrics::with_options(MetricsOptions {
        sample_interval: Some(Duration::from_millis(20)),
        ..MetricsOptions::default()
    });
    let weak = Arc::downgrade(&m);
    let deadline = Instant::now() + Duration::from_secs(5);
    while m.summary()["history"]["t"].as_array().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "sampler produced no history");
        thread::sleep(Duration::from_millis(10));
    }
    drop(m);
    assert!(
        weak.upgrade().is_none() || {
            // The sampler may hold a strong reference for the length of one
            // sample; it lets go right after.
            thread::sleep(Duration::from_millis(100));
            weak.upgrade().is_none()
        }
    );
}

#[test]
fn error_kinds_from_upstream_failures() {
    use crate::providers::UpstreamFailure;
    let kind = |status| UpstreamFailure::of_status(status).map(ErrorKind::from);
    assert_eq!(kind(200), None);
    assert_eq!(kind(429), Some(ErrorKind::RateLimited));
    assert_eq!(kind(401), Some(ErrorKind::Auth));
    assert_eq!(kind(403), Some(ErrorKind::Auth));
    assert_eq!(kind(404), Some(ErrorKind::Status4xx));
    assert_eq!(kind(503), Some(ErrorKind::Status5xx));
    let names: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.name()).collect();
    assert_eq!(
        names,
        [
            "timeout",
            "connect",
            "status_4xx",
            "status_5xx",
            "rate_limited",
            "auth",
            "parse"
        ]
    );
}

#[test]
fn dashboard_page_is_self_contained() {
    // The SVG namespace is an identifier, not a fetch.
    let page = DASHBOARD_HTML.replace("http://www.w3.org/2000/svg", "");
    assert!(page.starts_with("<!doctype html>"));
    assert!(page.contains("summary.json"));
    for external in [
        "http://", "https://", "src=", "@import", "url(http", "url('", "url(\"", "url(/",
    ] {
        assert!(
            !page.contains(external),
            "dashboard references an external asset: {external}"
        );
    }
    // Links only to an inline icon (so the browser asks for no favicon).
    for link in page.match_indices("<link").map(|(i, _)| &page[i..]) {
        assert!(
            link.starts_with(r#"<link rel="icon" href="data:"#),
            "{link:.60}"
        );
    }
}

/// `promtool check metrics` on the 0.0.4 exposition. promtool comes from
/// Debian's `prometheus` package, which the test command installs.
#[test]
fn promtool_accepts_the_exposition() {
    // Fresh (families with no series yet) and after traffic.
    let fresh = all_features();
    let busy = all_features();
    record_some_traffic(&busy);
    busy.http_request("/health", "GET", 200, Duration::from_micros(300));
    for (i, m) in [fresh, busy].iter().enumerate() {
        let (_, body) = m.encode(None);
        promtool_check_metrics(&body, i);
    }
}

fn promtool_check_metrics(body: &str, n: usize) {
    let path =
        std::env::temp_dir().join(format!("aiproxy-metrics-{}-{n}.prom", std::process::id()));
    std::fs::write(&path, body).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < '{}'", path.display()))
        .output()
        .expect("sh");
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.code() != Some(127),
        "promtool not found: install Debian's `prometheus` package \
         (apt-get install -y --no-install-recommends prometheus)"
    );
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}\n--- exposition ---\n{body}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn cluster_figures_are_taken_in_at_scrape_time() {
    let m = all_features();
    let mut figures = ClusterFigures {
        nodes: vec![
            ("node1".into(), NodeState::Alive, 0),
            ("node2".into(), NodeState::Suspect, 3500),
            ("node3".into(), NodeState::Alive, 200),
        ],
        dropped: vec![("bad_mac", 7), ("replay", 1)],
        sent_datagrams: 40,
        received_datagrams: 38,
        sent_bytes: 4000,
        received_bytes: 3800,
        settings_version: 12,
    };
    m.set_cluster(&figures);
    // A second scrape with the same totals adds nothing; newer totals
    // move the counters by the difference.
    m.set_cluster(&figures);
    figures.dropped[0].1 = 9;
    figures.sent_datagrams = 43;
    m.set_cluster(&figures);
    let body = text(&m);
    let get = |series: &str| sample(&body, series).unwrap_or_else(|| panic!("{series}"));
    assert_eq!(get(r#"aiproxy_cluster_nodes{state="alive"}"#), 2.0);
    assert_eq!(get(r#"aiproxy_cluster_nodes{state="suspect"}"#), 1.0);
    assert_eq!(
        get(r#"aiproxy_cluster_datagrams_dropped_total{reason="bad_mac"}"#),
        9.0
    );
    assert_eq!(
        get(r#"aiproxy_cluster_datagrams_dropped_total{reason="malformed"}"#),
        0.0,
        "every reason present from the start"
    );
    assert_eq!(
        get(r#"aiproxy_cluster_datagrams_total{direction="sent"}"#),
        43.0
    );
    assert_eq!(
        get(r#"aiproxy_cluster_bytes_total{direction="received"}"#),
        3800.0
    );
    assert_eq!(get("aiproxy_cluster_settings_version"), 12.0);
    promtool_check_metrics(&body, 7);

    let s = m.summary();
    assert_eq!(s["cluster"]["alive"], 2);
    assert_eq!(s["cluster"]["settings_version"], 12);
    assert_eq!(s["cluster"]["nodes"][1]["node_id"], "node2");
    assert_eq!(s["cluster"]["nodes"][1]["state"], "suspect");
    assert!(
        !s["cluster"].to_string().contains("address"),
        "the summary is served without a key"
    );

    let off = quiet(MetricsOptions::default());
    off.set_cluster(&figures);
    assert!(!text(&off).contains("aiproxy_cluster"));
}
