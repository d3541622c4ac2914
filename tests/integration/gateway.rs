//! The whole gateway in-process (`aiproxy::start`) against scripted mock
//! upstreams: retries, timeouts, error relay, streaming and auth.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use aiproxy::config::Secret;
use aiproxy::providers::ProviderKind;
use aiproxy::{Config, Handle};

use crate::support::*;
use crate::upstream::*;

const CHAT: &str = r#"{"model":"gpt-test","messages":[{"role":"user","content":"hi"}]}"#;
const CHAT_STREAM: &str =
    r#"{"model":"gpt-test","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

struct Proxy(Option<Handle>);

impl Proxy {
    fn addr(&self) -> std::net::SocketAddr {
        self.0.as_ref().unwrap().addr()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.shutdown();
        }
    }
}

fn base_config() -> Config {
    let defaults = Config::default();
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 8,
        upstream: aiproxy::config::Upstream {
            base_delay: Duration::from_millis(1),
            ..defaults.upstream.clone()
        },
        shutdown_timeout: Duration::from_secs(2),
        log: aiproxy::config::LogConfig {
            level: aiproxy::config::LogLevel::Warn,
            ..defaults.log.clone()
        },
        ..defaults
    }
}

fn openai_proxy(upstream: &MockUpstream, tweak: impl FnOnce(&mut Config)) -> Proxy {
    let mut config = base_config();
    config.model_providers = vec![ProviderKind::OpenAiCustom, ProviderKind::Mock];
    config.openai.api_key = Some(Secret::new("sk-upstream"));
    config.openai.base_url = format!("{}/v1", upstream.base_url());
    tweak(&mut config);
    Proxy(Some(aiproxy::start(config).expect("start")))
}

#[test]
fn retries_5xx_then_answers() {
    let up = MockUpstream::start(|n, _| match n {
        0 | 1 => Reply::Json(503, vec![], r#"{"error":{"message":"busy"}}"#.into()),
        _ => Reply::Json(200, vec![], openai_completion("third time")),
    });
    let p = openai_proxy(&up, |_| {});
    let resp = post_json(p.addr(), "/v1/chat/completions", "", CHAT);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.json()["choices"][0]["message"]["content"],
        "third time"
    );
    assert_eq!(up.hits(), 3);
    let last = up.last();
    assert_eq!(last.path, "/v1/chat/completions");
    assert_eq!(last.header("authorization"), Some("Bearer sk-upstream"));
}

#[test]
fn exhausted_retries_relay_the_upstream_error() {
    let up = MockUpstream::start(|_, _| {
        Reply::Json(
            503,
            vec![],
            r#"{"error":{"message":"overloaded upstream","type":"server_error"}}"#.into(),
        )
    });
    let p = openai_proxy(&up, |c| c.upstream.max_retries = 2);
    let resp = post_json(p.addr(), "/v1/chat/completions", "", CHAT);
    assert_eq!(resp.status, 503);
    assert_eq!(resp.json()["error"]["message"], "overloaded upstream");
    assert_eq!(up.hits(), 3);
}

#[test]
fn client_errors_are_not_retried() {
    let up = MockUpstream::start(|_, _| {
        Reply::Json(
            400,
            vec![],
            r#"{"error":{"message":"bad field","type":"invalid_request_error"}}"#.into(),
        )
    });
    let p = openai_proxy(&up, |_| {});
    let resp = post_json(p.addr(), "/v1/chat/completions", "", CHAT);
    assert_eq!(resp.status, 400);
    assert_eq!(resp.json()["error"]["message"], "bad field");
    assert_eq!(up.hits(), 1);
}

#[test]
fn long_retry_after_is_relayed_not_waited_for() {
    let up = MockUpstream::start(|_, _| {
        Reply::Json(
            429,
            vec![("Retry-After".into(), "30".into())],
            r#"{"error":{"message":"slow down","type":"rate_limit_error"}}"#.into(),
        )
    });
    let p = openai_proxy(&up, |_| {});
    let started = Instant::now();
    let resp = post_json(p.addr(), "/v1/chat/completions", "", CHAT);
    assert_eq!(resp.status, 429);
    assert_eq!(resp.header("retry-after"), Some("30"));
    assert_eq!(up.hits(), 1);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn unreachable_upstream_is_a_502_in_the_client_protocol() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = base_config();
    config.model_providers = vec![ProviderKind::ClaudeCustom];
    config.claude.api_key = Some(Secret::new("sk-ant"));
    config.claude.base_url = format!("http://{closed}");
    let p = Proxy(Some(aiproxy::start(config).unwrap()));
    let resp = post_json(
        p.addr(),
        "/v1/messages",
        "",
        r#"{"model":"claude-test","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert_eq!(resp.status, 502);
    let body = resp.json();
    assert_eq!(body["type"], "error", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("connect"),
        "{body}"
    );
}

#[test]
fn slow_upstream_gets_504() {
    let up = MockUpstream::start(|_, _| Reply::Hang(Duration::from_secs(3)));
    let p = openai_proxy(&up, |c| c.upstream.timeout = Duration::from_millis(300));
    let started = Instant::now();
    let resp = post_json(p.addr(), "/v1/chat/completions", "", CHAT);
    assert_eq!(resp.status, 504, "{}", resp.text());
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        resp.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timed out")
    );
}

#[test]
fn stream_events_keep_their_pacing_through_the_proxy() {
    let up = MockUpstream::start(|_, _| {
        Reply::Sse(openai_stream(&["a", "b", "c"], Duration::from_millis(200)))
    });
    let p = openai_proxy(&up, |_| {});
    let mut s = connect(p.addr());
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{CHAT_STREAM}",
        CHAT_STREAM.len()
    )
    .unwrap();
    let mut seen = String::new();
    let mut arrivals: Vec<(Instant, usize)> = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("[DONE]") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "stream ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        arrivals.push((Instant::now(), seen.matches("\"content\":\"").count()));
    }
    let first = |k: usize| {
        arrivals
            .iter()
            .find(|(_, c)| *c >= k)
            .map(|(t, _)| *t)
            .unwrap()
    };
    let (t1, t2, t3) = (first(1), first(2), first(3));
    assert!(
        t2 - t1 >= Duration::from_millis(150),
        "a and b arrived together"
    );
    assert!(
        t3 - t2 >= Duration::from_millis(150),
        "b and c arrived together"
    );
    assert!(seen.contains("X-Accel-Buffering: no"));
    assert_eq!(seen.matches("data: [DONE]").count(), 1);
}

/// The response head waits for events already at hand (to go out in
/// the same write) but never for a slow first token.
#[test]
fn a_stream_head_is_not_held_up_by_a_slow_first_token() {
    let up = MockUpstream::start(|_, _| {
        let mut events = openai_stream(&["a"], Duration::ZERO);
        events[0].0 = Duration::from_millis(600);
        Reply::Sse(events)
    });
    let p = openai_proxy(&up, |_| {});
    let mut s = connect(p.addr());
    let asked = Instant::now();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{CHAT_STREAM}",
        CHAT_STREAM.len()
    )
    .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    let head_after = asked.elapsed();
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(!head.contains("data:"), "{head}");
    assert!(
        head_after < Duration::from_millis(400),
        "head after {head_after:?}"
    );
    let mut seen = head;
    while !seen.contains("[DONE]") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "stream ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(asked.elapsed() >= Duration::from_millis(600));
    assert!(seen.contains(r#""content":"a""#), "{seen}");
}

/// An upstream streaming "a", then "b" after `pause`.
fn pausing_stream(pause: Duration) -> MockUpstream {
    MockUpstream::start(move |_, _| {
        let mut events = openai_stream(&["a", "b"], Duration::ZERO);
        events[1].0 = pause;
        Reply::Sse(events)
    })
}

#[test]
fn stalled_stream_ends_with_an_in_band_error() {
    let up = pausing_stream(Duration::from_secs(3));
    let p = openai_proxy(&up, |c| {
        c.upstream.idle_timeout = Duration::from_millis(300)
    });
    let resp = post_json(p.addr(), "/v1/chat/completions", "", CHAT_STREAM);
    assert_eq!(resp.status, 200);
    let text = resp.text();
    assert!(text.contains("\"error\""), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
}

/// A stream that goes silent for a while gets keep-alives in the client's
/// protocol (Anthropic `ping`, an SSE comment for OpenAI), and the answer
/// around them is unchanged.
#[test]
fn silent_upstream_stream_gets_keepalives() {
    let up = pausing_stream(Duration::from_millis(900));
    let p = openai_proxy(&up, |c| {
        c.upstream.stream_keepalive = Duration::from_millis(200)
    });
    let stream = |path: &str, body: &str| {
        let resp = post_json(p.addr(), path, "", body);
        assert_eq!(resp.status, 200);
        resp.text()
    };

    let openai = stream("/v1/chat/completions", CHAT_STREAM);
    assert!(openai.matches(": keep-alive\n\n").count() >= 2, "{openai}");
    assert!(openai.contains(r#""content":"b""#), "{openai}");
    assert!(openai.ends_with("data: [DONE]\n\n"), "{openai}");

    let anthropic = stream(
        "/v1/messages",
        r#"{"model":"gpt-test","max_tokens":10,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert!(
        anthropic.starts_with("event: message_start\n"),
        "{anthropic}"
    );
    assert!(
        anthropic
            .matches("event: ping\ndata: {\"type\":\"ping\"}\n\n")
            .count()
            >= 2,
        "{anthropic}"
    );
    assert!(anthropic.contains(r#""text":"b""#), "{anthropic}");
    assert!(
        anthropic.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
        "{anthropic}"
    );
}

/// A Responses client's stream: SSE-comment keep-alives while the upstream
/// is silent, framing intact around them, and an upstream that stalls for
/// good ends the stream with `error` and `response.failed`.
#[test]
fn responses_streams_keep_alive_and_fail_in_band() {
    use aiproxy::protocol::stream_check::check;
    use aiproxy::protocol::{GeminiFraming, Protocol};
    const BODY: &str = r#"{"model":"gpt-test","stream":true,"input":"hi"}"#;
    let up = pausing_stream(Duration::from_millis(900));
    let p = openai_proxy(&up, |c| {
        c.upstream.stream_keepalive = Duration::from_millis(200)
    });
    let resp = post_json(p.addr(), "/openai-custom/v1/responses", "", BODY);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("text/event-stream"));
    let text = resp.text();
    assert!(text.starts_with("event: response.created\n"), "{text}");
    assert!(text.matches(": keep-alive\n\n").count() >= 2, "{text}");
    assert!(text.contains(r#""delta":"b""#), "{text}");
    let (from, to, sse) = (Protocol::OpenAi, Protocol::Responses, GeminiFraming::Sse);
    check(from, to, sse, text.as_bytes(), "kept alive", false);
    assert!(text.contains("event: response.completed\n"), "{text}");

    let up = pausing_stream(Duration::from_secs(3));
    let p = openai_proxy(&up, |c| {
        c.upstream.idle_timeout = Duration::from_millis(300)
    });
    let text = post_json(
        p.addr(),
        "/v1/responses",
        "model-provider: openai-custom\r\n",
        BODY,
    )
    .text();
    check(from, to, sse, text.as_bytes(), "stalled", true);
    assert!(text.contains("event: error\n"), "{text}");
    assert!(text.contains("event: response.failed\n"), "{text}");
}

#[test]
fn client_disconnect_mid_stream_closes_the_upstream_request() {
    let up = MockUpstream::start(|_, _| {
        let words: Vec<&str> = std::iter::repeat_n("w", 200).collect();
        Reply::Sse(openai_stream(&words, Duration::from_millis(20)))
    });
    let p = openai_proxy(&up, |_| {});
    let mut s = connect(p.addr());
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{CHAT_STREAM}",
        CHAT_STREAM.len()
    )
    .unwrap();
    let mut buf = [0u8; 1024];
    assert!(s.read(&mut buf).unwrap() > 0);
    drop(s);
    up.client_gone
        .recv_timeout(Duration::from_secs(3))
        .expect("the upstream connection was closed after the client left");
}

#[test]
fn api_key_is_accepted_four_ways_and_refused_otherwise() {
    let mut config = base_config();
    config.api_keys = vec![Secret::new("k-1"), Secret::new("k-2")];
    let p = Proxy(Some(aiproxy::start(config).unwrap()));
    let ok = [
        ("/v1/chat/completions", "Authorization: Bearer k-1\r\n"),
        ("/v1/chat/completions", "x-api-key: k-2\r\n"),
        ("/v1/chat/completions", "x-goog-api-key: k-1\r\n"),
        ("/v1/chat/completions?key=k-2", ""),
    ];
    for (path, header) in ok {
        assert_eq!(
            post_json(p.addr(), path, header, CHAT).status,
            200,
            "{path} {header}"
        );
    }
    let denied = post_json(
        p.addr(),
        "/v1/chat/completions",
        "Authorization: Bearer k-3\r\n",
        CHAT,
    );
    assert_eq!(denied.status, 401);
    assert_eq!(denied.json()["error"]["type"], "authentication_error");
    let anthropic = post_json(p.addr(), "/v1/messages", "", CHAT);
    assert_eq!(
        (anthropic.status, anthropic.json()["type"].as_str()),
        (401, Some("error"))
    );
    let gemini = post_json(p.addr(), "/v1beta/models/m:generateContent", "", "{}");
    assert_eq!(
        (gemini.status, gemini.json()["error"]["status"].as_str()),
        (401, Some("UNAUTHENTICATED"))
    );
    assert_eq!(get(p.addr(), "/health").status, 200, "health needs no key");
}

#[test]
fn path_prefix_selects_and_disabled_providers_are_refused() {
    let up =
        MockUpstream::start(|_, _| Reply::Json(200, vec![], openai_completion("from upstream")));
    let p = openai_proxy(&up, |_| {});
    let via_mock = post_json(p.addr(), "/mock/v1/chat/completions", "", CHAT);
    assert!(
        via_mock.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .starts_with("Mock answer")
    );
    let via_header = post_json(
        p.addr(),
        "/v1/chat/completions",
        "Model-Provider: mock\r\n",
        CHAT,
    );
    assert!(
        via_header.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .starts_with("Mock answer")
    );
    let default = post_json(p.addr(), "/v1/chat/completions", "", CHAT);
    assert_eq!(
        default.json()["choices"][0]["message"]["content"],
        "from upstream"
    );
    let disabled = post_json(p.addr(), "/claude-kiro-oauth/v1/chat/completions", "", CHAT);
    assert_eq!(disabled.status, 400);
    assert!(disabled.text().contains("kiro-api"));
    assert_eq!(up.hits(), 1);
}

#[test]
fn claude_custom_normalises_v1_and_forwards_anthropic_headers() {
    let up = MockUpstream::start(|_, _| {
        Reply::Json(
            200,
            vec![],
            r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-test","content":[{"type":"text","text":"hello"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":3,"output_tokens":1}}"#.into(),
        )
    });
    let mut config = base_config();
    config.model_providers = vec![ProviderKind::ClaudeCustom];
    config.claude.api_key = Some(Secret::new("sk-ant"));
    config.claude.base_url = format!("{}/v1/", up.base_url());
    let p = Proxy(Some(aiproxy::start(config).unwrap()));
    let body =
        r#"{"model":"claude-test","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
    let resp = post_json(
        p.addr(),
        "/v1/messages",
        "anthropic-beta: prompt-caching-2024-07-31\r\n",
        body,
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["content"][0]["text"], "hello");
    let seen = up.last();
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.header("x-api-key"), Some("sk-ant"));
    assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        seen.header("anthropic-beta"),
        Some("prompt-caching-2024-07-31")
    );
}

#[test]
fn unknown_routes_and_bad_json_answer_in_the_client_protocol() {
    let p = Proxy(Some(aiproxy::start(base_config()).unwrap()));
    let missing = get(p.addr(), "/v1beta/nothing");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["status"], "NOT_FOUND");
    let bad = post_json(p.addr(), "/v1/messages", "", "{not json");
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["type"], "invalid_request_error");
    let wrong_method = get(p.addr(), "/v1/chat/completions");
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("allow"), Some("POST"));
}

#[test]
fn health_reports_providers_without_secrets() {
    let up = MockUpstream::start(|_, _| Reply::Json(200, vec![], openai_completion("x")));
    let p = openai_proxy(&up, |_| {});
    let resp = get(p.addr(), "/health");
    assert_eq!(resp.status, 200);
    let body = resp.json();
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["provider"], "openai-custom");
    assert!(!resp.text().contains("sk-upstream"));
}

#[test]
fn cors_preflight_allows_sdk_headers_only_for_listed_origins() {
    const PREFLIGHT: &[u8] =
        b"OPTIONS /v1/messages HTTP/1.1\r\nHost: localhost\r\nOrigin: http://app\r\n\
        Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: x-evil\r\n\
        Connection: close\r\n\r\n";
    let closed = Proxy(Some(aiproxy::start(base_config()).unwrap()));
    let resp = roundtrip(closed.addr(), PREFLIGHT);
    assert_eq!(resp.status, 204);
    assert_eq!(resp.header("access-control-allow-origin"), None);
    assert_eq!(resp.header("access-control-allow-headers"), None);

    let mut config = base_config();
    config.cors_origins = vec!["http://app".into()];
    let open = Proxy(Some(aiproxy::start(config).unwrap()));
    let resp = roundtrip(open.addr(), PREFLIGHT);
    assert_eq!(resp.status, 204);
    assert_eq!(
        resp.header("access-control-allow-origin"),
        Some("http://app")
    );
    assert_eq!(resp.header("content-length"), None, "204 has no length");
    let allowed = resp
        .header("access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    for h in [
        "x-api-key",
        "anthropic-version",
        "anthropic-beta",
        "x-goog-api-key",
        "authorization",
    ] {
        assert!(allowed.contains(h), "{h} missing from {allowed}");
    }
    assert!(
        !allowed.contains("x-evil"),
        "requested headers echoed: {allowed}"
    );
}

#[test]
fn an_embedding_program_switches_the_cache_through_the_control_handle() {
    let p = Proxy(Some(aiproxy::start(base_config()).unwrap()));
    let handle = p.0.as_ref().unwrap();
    let control = handle.control();
    let stats = || get(p.addr(), "/cache/stats").json();
    assert_eq!(stats()["enabled"], true);
    let before = control.version();
    control.set_cache_enabled(false);
    assert!(!control.cache_enabled());
    assert_eq!(stats()["enabled"], false);
    assert_eq!(control.version(), before + 1);
    // The admin endpoint and the handle change the same thing.
    let resp = roundtrip(
        p.addr(),
        b"PUT /cache/enable HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    assert!(control.cache_enabled());
    assert_eq!(control.version(), before + 2);
}

/// Collects what the pipeline answers, as a WebSocket connection or an
/// embedding program would.
#[derive(Default)]
struct Collected {
    whole: Vec<(u16, String, Option<&'static str>)>,
    opened: Option<String>,
    events: Vec<Vec<u8>>,
    closed: bool,
    notes: Vec<(&'static str, String)>,
}

impl aiproxy::gateway::Sink for Collected {
    fn whole(&mut self, answer: aiproxy::gateway::Answer<'_>) {
        let body = String::from_utf8_lossy(answer.body).into_owned();
        self.whole.push((answer.status, body, answer.cache));
    }
    fn open(&mut self, content_type: &str) -> bool {
        self.opened = Some(content_type.to_owned());
        true
    }
    fn send(&mut self, events: &[u8]) -> bool {
        self.events.push(events.to_vec());
        true
    }
    fn close(&mut self) {
        self.closed = true;
    }
    fn note(&mut self, key: &'static str, value: String) {
        self.notes.push((key, value));
    }
}

#[test]
fn a_call_without_http_goes_through_the_same_pipeline() {
    use aiproxy::gateway::Call;
    use aiproxy::protocol::Protocol;
    let p = Proxy(Some(aiproxy::start(base_config()).unwrap()));
    let handle = p.0.as_ref().unwrap();
    let body = br#"{"model":"mock-small","messages":[{"role":"user","content":"embedded"}]}"#;
    // Whole answers go through the cache: a miss, then a hit.
    for expected in ["MISS", "HIT"] {
        let mut sink = Collected::default();
        handle.call(&Call::new(Protocol::OpenAi, body), &mut sink);
        let (status, text, cache) = &sink.whole[0];
        assert_eq!(*status, 200, "{text}");
        assert_eq!(*cache, Some(expected));
        assert!(text.contains("chat.completion"), "{text}");
        assert!(sink.notes.contains(&("provider", "mock".to_owned())));
    }
    // A stream arrives as client-protocol events, in an Anthropic client's
    // protocol here, whatever the provider speaks.
    let body = br#"{"model":"mock-small","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"stream me"}]}"#;
    let mut sink = Collected::default();
    handle.call(&Call::new(Protocol::Anthropic, body), &mut sink);
    assert_eq!(sink.opened.as_deref(), Some("text/event-stream"));
    let all = String::from_utf8(sink.events.concat()).unwrap();
    assert!(all.starts_with("event: message_start"), "{all}");
    assert!(all.contains("event: message_stop"), "{all}");
    assert!(sink.closed);
    // A refusal comes back in the client's protocol through the same sink.
    let mut sink = Collected::default();
    handle.call(
        &Call::new(Protocol::Anthropic, b"{\"max_tokens\":5}"),
        &mut sink,
    );
    let (status, text, _) = &sink.whole[0];
    assert_eq!(*status, 400);
    assert!(text.contains(r#""type":"error""#), "{text}");
}

#[test]
fn health_answers_503_while_draining_instead_of_refusing_connections() {
    let mut config = base_config();
    config.mock.latency = Duration::from_millis(1500);
    config.shutdown_timeout = Duration::from_secs(5);
    let mut p = Proxy(Some(aiproxy::start(config).unwrap()));
    let addr = p.addr();
    assert_eq!(get(addr, "/health").status, 200);
    let handle = p.0.take().unwrap();
    // That request counts as in flight until its log line is written.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while handle.in_flight() != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "/health never finished"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // A slow request keeps the drain going while /health is asked.
    let slow = std::thread::spawn(move || {
        post_json(
            addr,
            "/v1/chat/completions",
            "",
            r#"{"model":"mock-small","messages":[{"role":"user","content":"slow"}]}"#,
        )
        .status
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while handle.in_flight() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow request never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let stopper = std::thread::spawn(move || handle.shutdown());
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let health = loop {
        let resp = get(addr, "/health");
        if resp.status == 503 || std::time::Instant::now() > deadline {
            break resp;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(health.status, 503, "{}", health.text());
    assert_eq!(health.json()["status"], "draining", "{}", health.text());
    assert_eq!(
        slow.join().unwrap(),
        200,
        "the in-flight request was not finished"
    );
    assert!(stopper.join().unwrap(), "drained in time");
}
