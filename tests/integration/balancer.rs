//! The load balancer end to end: a pool of three mock upstream instances
//! behind the whole gateway (`aiproxy::start`), driven over loopback.
//! Spread per algorithm, passive ejection and its end, retries before a
//! stream's first byte only, the 503 with `Retry-After` when nothing can
//! serve, the retry budget under a flood, `ip_hash` and trusted proxies,
//! state kept across a reload, the admin endpoints and the metrics.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use aiproxy::balancer::Algorithm;
use aiproxy::config::{Config, Secret};
use aiproxy::pools::{self, Format};
use aiproxy::providers::ProviderKind;
use serde_json::{Value, json};

use crate::support::*;
use crate::upstream::*;

const CHAT: &str = r#"{"model":"gpt-test","messages":[{"role":"user","content":"hi"}]}"#;
const CHAT_STREAM: &str =
    r#"{"model":"gpt-test","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

struct Proxy(Option<aiproxy::Handle>);

impl Proxy {
    fn start(config: Config) -> Proxy {
        Proxy(Some(aiproxy::start(config).expect("start")))
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.handle().addr()
    }

    fn handle(&self) -> &aiproxy::Handle {
        self.0.as_ref().unwrap()
    }

    fn chat(&self) -> Response {
        post_json(self.addr(), "/v1/chat/completions", "", CHAT)
    }

    fn instances(&self) -> Value {
        get(self.addr(), "/loadbalancer/instances").json()
    }

    /// The listing's entry for instance `id`.
    fn instance(&self, id: &str) -> Value {
        self.instances()["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Polls the instances listing until `ok` holds for `id` (at most 5 s).
    fn wait_for(&self, id: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Duration {
        let started = Instant::now();
        loop {
            let entry = self.instance(id);
            if ok(&entry) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{id} never became {what}: {entry}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.shutdown();
        }
    }
}

/// An upstream answering every chat with `text` (and its model list).
fn answering(text: &'static str) -> MockUpstream {
    MockUpstream::start(move |_, req| {
        if req.path.ends_with("/models") {
            return Reply::Json(200, vec![], r#"{"object":"list","data":[]}"#.into());
        }
        Reply::Json(200, vec![], openai_completion(text))
    })
}

/// An upstream that fails with `status` while `failing` is set.
fn flaky(failing: Arc<AtomicBool>, text: &'static str) -> MockUpstream {
    MockUpstream::start(move |_, _| {
        if failing.load(Ordering::SeqCst) {
            Reply::Json(500, vec![], r#"{"error":{"message":"boom"}}"#.into())
        } else {
            Reply::Json(200, vec![], openai_completion(text))
        }
    })
}

/// Chat requests an upstream received (health checks excluded).
fn chats(up: &MockUpstream) -> usize {
    up.requests()
        .iter()
        .filter(|r| r.path.ends_with("/chat/completions"))
        .count()
}

/// A pool member of openai-custom pointing at `up`, with `extra` keys.
fn member(id: &str, up: &MockUpstream, extra: Value) -> Value {
    let mut m = json!({"uuid": id, "OPENAI_BASE_URL": format!("{}/v1", up.base_url())});
    if let (Value::Object(m), Value::Object(extra)) = (&mut m, extra) {
        m.extend(extra);
    }
    m
}

/// openai-custom over a pool of `members`, cache off (every request goes
/// upstream), no active checks unless a test sets an interval.
fn pool_config(members: Vec<Value>) -> Config {
    let defaults = Config::default();
    let pools = json!({"openai-custom": members}).to_string();
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 16,
        shutdown_timeout: Duration::from_secs(2),
        log: aiproxy::config::LogConfig {
            level: aiproxy::config::LogLevel::Warn,
            ..defaults.log.clone()
        },
        ..defaults
    };
    config.model_providers = vec![ProviderKind::OpenAiCustom];
    config.openai.api_key = Some(Secret::new("sk-upstream"));
    config.upstream.base_delay = Duration::from_millis(1);
    config.cache.enabled = false;
    config.load_balancer.health_check_interval = Duration::from_secs(3600);
    config.pools = Some(pools::parse(&pools, Format::Json).unwrap());
    config
}

fn three(ups: &[&MockUpstream; 3]) -> Vec<Value> {
    vec![
        member("a", ups[0], json!({})),
        member("b", ups[1], json!({})),
        member("c", ups[2], json!({})),
    ]
}

#[test]
fn round_robin_spreads_evenly_over_three_instances() {
    let ups = [answering("a"), answering("b"), answering("c")];
    let p = Proxy::start(pool_config(three(&[&ups[0], &ups[1], &ups[2]])));
    for _ in 0..300 {
        assert_eq!(p.chat().status, 200);
    }
    let hits: Vec<usize> = ups.iter().map(chats).collect();
    assert_eq!(hits, [100, 100, 100]);
    let listing = p.instances();
    assert_eq!(listing["algorithm"], "round_robin");
    for i in listing["instances"].as_array().unwrap() {
        assert_eq!(i["requests"], 100, "{i}");
        assert_eq!(i["healthy"], true, "{i}");
        assert_eq!(i["provider"], "openai-custom");
    }
}

#[test]
fn weights_three_to_one_over_four_hundred_requests() {
    let (heavy, light) = (answering("heavy"), answering("light"));
    for (algorithm, tolerance) in [(Algorithm::Weighted, 0), (Algorithm::Random, 45)] {
        let mut config = pool_config(vec![
            member("heavy", &heavy, json!({"weight": 3})),
            member("light", &light, json!({"weight": 1})),
        ]);
        config.load_balancer.algorithm = algorithm;
        let p = Proxy::start(config);
        let before = (chats(&heavy), chats(&light));
        for _ in 0..400 {
            assert_eq!(p.chat().status, 200);
        }
        let (h, l) = (chats(&heavy) - before.0, chats(&light) - before.1);
        assert_eq!(h + l, 400);
        assert!(
            h.abs_diff(300) <= tolerance,
            "{algorithm}: {h} of 400 to the instance of weight 3"
        );
    }
}

#[test]
fn least_requests_steers_away_from_a_slow_instance() {
    let slow = MockUpstream::start(|_, _| {
        thread::sleep(Duration::from_millis(200));
        Reply::Json(200, vec![], openai_completion("slow"))
    });
    let (b, c) = (answering("b"), answering("c"));
    let mut config = pool_config(three(&[&slow, &b, &c]));
    config.load_balancer.algorithm = Algorithm::LeastRequests;
    let p = Proxy::start(config);
    thread::scope(|s| {
        for _ in 0..6 {
            s.spawn(|| {
                for _ in 0..20 {
                    assert_eq!(p.chat().status, 200);
                }
            });
        }
    });
    let (to_slow, total) = (chats(&slow), chats(&slow) + chats(&b) + chats(&c));
    assert_eq!(total, 120);
    // Round robin would send it 40.
    assert!(to_slow <= 20, "the slow instance got {to_slow} of 120");
}

#[test]
fn a_failing_instance_is_ejected_without_failing_clients_and_comes_back() {
    let failing = Arc::new(AtomicBool::new(true));
    let a = flaky(Arc::clone(&failing), "a");
    let (b, c) = (answering("b"), answering("c"));
    let mut config = pool_config(three(&[&a, &b, &c]));
    config.load_balancer.ejection_time = Duration::from_secs(2);
    let p = Proxy::start(config);
    // Every client request succeeds: the attempts on a fail over.
    for _ in 0..30 {
        let resp = p.chat();
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    let entry = p.instance("a");
    assert_eq!(entry["state"], "ejected", "{entry}");
    assert_eq!(entry["healthy"], false);
    assert_eq!(entry["ejections"], 1);
    assert!(entry["until_ms"].as_u64().unwrap() <= 2000, "{entry}");
    assert_eq!(
        chats(&a),
        3,
        "three consecutive failures eject, then no more"
    );
    // The ejection ends by itself after the ejection time.
    failing.store(false, Ordering::SeqCst);
    let waited = p.wait_for("a", "healthy", |e| e["healthy"] == true);
    assert!(waited >= Duration::from_millis(100), "{waited:?}");
    for _ in 0..9 {
        assert_eq!(p.chat().status, 200);
    }
    assert!(chats(&a) >= 5, "a is serving again: {}", chats(&a));
    // The metrics saw both.
    let metrics = get(p.addr(), "/loadbalancer/metrics").json();
    assert_eq!(metrics["ejections"], 1, "{metrics}");
    assert!(metrics["retries"].as_u64().unwrap() >= 3, "{metrics}");
    assert!(
        metrics["latency_ms"]["b"]["p95"].as_f64().is_some(),
        "{metrics}"
    );
}

#[test]
fn a_passing_health_check_ends_an_ejection_early() {
    let failing = Arc::new(AtomicBool::new(true));
    let a = {
        let failing = Arc::clone(&failing);
        MockUpstream::start(move |_, _| {
            if failing.load(Ordering::SeqCst) {
                Reply::Json(503, vec![], r#"{"error":{"message":"down"}}"#.into())
            } else {
                Reply::Json(200, vec![], r#"{"object":"list","data":[]}"#.into())
            }
        })
    };
    let (b, c) = (answering("b"), answering("c"));
    let mut config = pool_config(three(&[&a, &b, &c]));
    config.load_balancer.ejection_time = Duration::from_secs(300);
    config.load_balancer.health_check_interval = Duration::from_millis(100);
    let p = Proxy::start(config);
    for _ in 0..9 {
        assert_eq!(p.chat().status, 200);
    }
    p.wait_for("a", "ejected", |e| e["state"] == "ejected");
    // Its checks (GET /v1/models) fail too: it stays out.
    p.wait_for("a", "checked", |_| {
        a.requests().iter().any(|r| r.path == "/v1/models")
    });
    assert_eq!(p.instance("a")["state"], "ejected");
    failing.store(false, Ordering::SeqCst);
    let waited = p.wait_for("a", "healthy", |e| e["healthy"] == true);
    assert!(waited < Duration::from_secs(5), "{waited:?}");
}

#[test]
fn a_stream_is_retried_before_its_first_byte_and_not_after() {
    let refusing = MockUpstream::start(|_, _| {
        Reply::Json(503, vec![], r#"{"error":{"message":"busy"}}"#.into())
    });
    let streaming =
        MockUpstream::start(|_, _| Reply::Sse(openai_stream(&["x", "y"], Duration::ZERO)));
    let p = Proxy::start(pool_config(vec![
        member("refusing", &refusing, json!({})),
        member("streaming", &streaming, json!({})),
    ]));
    for _ in 0..2 {
        let resp = post_json(p.addr(), "/v1/chat/completions", "", CHAT_STREAM);
        assert_eq!(resp.status, 200);
        let text = resp.text();
        assert!(text.contains(r#""content":"y""#), "{text}");
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    }
    assert!(
        refusing.hits() >= 1,
        "the refusing instance was tried first"
    );

    // A stream that breaks after its first event is not retried: the
    // client gets an in-band error, and one upstream attempt was made.
    let cut = || {
        MockUpstream::start(|_, _| {
            let mut events = openai_stream(&["x", "y"], Duration::ZERO);
            events.truncate(1);
            Reply::Sse(events)
        })
    };
    let (c1, c2) = (cut(), cut());
    let p = Proxy::start(pool_config(vec![
        member("c1", &c1, json!({})),
        member("c2", &c2, json!({})),
    ]));
    let resp = post_json(p.addr(), "/v1/chat/completions", "", CHAT_STREAM);
    assert_eq!(resp.status, 200);
    let text = resp.text();
    assert!(text.contains(r#""content":"x""#), "{text}");
    assert!(text.contains(r#""error""#), "no in-band error: {text}");
    assert_eq!(c1.hits() + c2.hits(), 1);
}

#[test]
fn nothing_available_is_a_503_with_retry_after_in_every_protocol() {
    let limited = || {
        MockUpstream::start(|_, _| {
            Reply::Json(
                429,
                vec![("Retry-After".into(), "30".into())],
                r#"{"error":{"message":"quota","type":"rate_limit_error"}}"#.into(),
            )
        })
    };
    let ups = [limited(), limited(), limited()];
    let p = Proxy::start(pool_config(three(&[&ups[0], &ups[1], &ups[2]])));
    let started = Instant::now();
    // The first request tries every instance (a 429 is not worth waiting
    // 30 s for) and relays the last answer.
    let first = p.chat();
    assert_eq!(first.status, 429, "{}", first.text());
    assert_eq!(first.header("retry-after"), Some("30"));
    assert_eq!(ups.iter().map(|u| u.hits()).sum::<usize>(), 3);
    // Now every instance is cooling down: 503 at once, in each protocol.
    let answers = [
        p.chat(),
        post_json(
            p.addr(),
            "/v1/messages",
            "",
            r#"{"model":"gpt-test","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#,
        ),
        post_json(
            p.addr(),
            "/v1beta/models/gpt-test:generateContent",
            "",
            r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#,
        ),
    ];
    for resp in &answers {
        assert_eq!(resp.status, 503, "{}", resp.text());
        let wait: u64 = resp.header("retry-after").unwrap().parse().unwrap();
        assert!((28..=30).contains(&wait), "Retry-After {wait}");
    }
    assert_eq!(
        answers[0].json()["error"]["message"],
        "Every instance of openai-custom is rate limited or has a rejected credential. Retry in 30 s."
    );
    assert_eq!(answers[1].json()["type"], "error");
    assert_eq!(answers[2].json()["error"]["status"], "UNAVAILABLE");
    assert_eq!(
        ups.iter().map(|u| u.hits()).sum::<usize>(),
        3,
        "no upstream call"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(p.instance("b")["state"], "cooldown");

    // Unreachable instances: every attempt fails fast, the answer is a
    // 502 in the client's protocol, in bounded time.
    let closed: Vec<String> = (0..3)
        .map(|_| {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            format!("http://127.0.0.1:{port}/v1")
        })
        .collect();
    let members = closed
        .iter()
        .enumerate()
        .map(|(i, url)| json!({"uuid": format!("dead{i}"), "OPENAI_BASE_URL": url}))
        .collect();
    let p = Proxy::start(pool_config(members));
    let started = Instant::now();
    let resp = p.chat();
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert!(
        resp.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("connect")
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_model_no_instance_serves_is_a_404() {
    let (a, b) = (answering("a"), answering("b"));
    let p = Proxy::start(pool_config(vec![
        member("a", &a, json!({"supportedModels": ["gpt-test"]})),
        member("b", &b, json!({"notSupportedModels": ["gpt-test"]})),
    ]));
    for _ in 0..4 {
        assert_eq!(p.chat().status, 200);
    }
    assert_eq!((chats(&a), chats(&b)), (4, 0), "only a serves gpt-test");
    let p = Proxy::start(pool_config(vec![member(
        "a",
        &a,
        json!({"supportedModels": ["other"]}),
    )]));
    let resp = p.chat();
    assert_eq!(resp.status, 404);
    assert_eq!(
        resp.json()["error"]["message"],
        "No instance of openai-custom serves model gpt-test."
    );
}

#[test]
fn the_retry_budget_holds_under_a_flood_of_failures() {
    let failing = || {
        MockUpstream::start(|_, _| {
            Reply::Json(503, vec![], r#"{"error":{"message":"down"}}"#.into())
        })
    };
    let ups = [failing(), failing(), failing()];
    let mut config = pool_config(three(&[&ups[0], &ups[1], &ups[2]]));
    config.workers = 64;
    config.upstream.base_delay = Duration::from_millis(250);
    let p = Proxy::start(config);
    let (clients, each) = (32, 10);
    thread::scope(|s| {
        for _ in 0..clients {
            s.spawn(|| {
                for _ in 0..each {
                    assert_eq!(p.chat().status, 503);
                }
            });
        }
    });
    let requests = clients * each;
    let attempts: usize = ups.iter().map(|u| u.hits()).sum();
    assert!(
        attempts * 10 <= requests * 12 + 30,
        "{attempts} upstream attempts for {requests} requests"
    );
    let metrics = get(p.addr(), "/loadbalancer/metrics").json();
    assert!(
        metrics["budget_refusals"].as_u64().unwrap() > 0,
        "{metrics}"
    );
    assert_eq!(
        metrics["retries"].as_u64().unwrap() as usize,
        attempts - requests,
        "{metrics}"
    );
    let exposition = get(p.addr(), "/metrics").text();
    let refusals = exposition
        .lines()
        .find(|l| l.starts_with("aiproxy_loadbalancer_budget_refusals_total "))
        .unwrap_or_else(|| panic!("{exposition}"));
    assert_eq!(
        refusals.rsplit(' ').next().unwrap(),
        metrics["budget_refusals"].to_string()
    );
}

/// Which instance served each request: the upstream whose count rose.
fn served_by(p: &Proxy, ups: &[(&str, &MockUpstream)], forwarded: &str) -> String {
    let before: Vec<usize> = ups.iter().map(|(_, u)| chats(u)).collect();
    let header = if forwarded.is_empty() {
        String::new()
    } else {
        format!("X-Forwarded-For: {forwarded}\r\n")
    };
    assert_eq!(
        post_json(p.addr(), "/v1/chat/completions", &header, CHAT).status,
        200
    );
    let moved: Vec<&str> = ups
        .iter()
        .zip(before)
        .filter(|((_, u), b)| chats(u) > *b)
        .map(|((id, _), _)| *id)
        .collect();
    assert_eq!(moved.len(), 1);
    moved[0].to_owned()
}

#[test]
fn ip_hash_is_stable_per_client_and_believes_only_trusted_proxies() {
    let ups = [answering("a"), answering("b"), answering("c")];
    let named: Vec<(&str, &MockUpstream)> = vec![("a", &ups[0]), ("b", &ups[1]), ("c", &ups[2])];
    let mut config = pool_config(three(&[&ups[0], &ups[1], &ups[2]]));
    config.load_balancer.algorithm = Algorithm::IpHash;

    // From an untrusted peer the header is ignored: one client, one instance.
    let p = Proxy::start(config.clone());
    let seen: std::collections::HashSet<String> = (0..24)
        .map(|i| served_by(&p, &named, &format!("203.0.113.{i}")))
        .collect();
    assert_eq!(seen.len(), 1, "{seen:?}");
    drop(p);

    // Behind a trusted proxy each forwarded client keeps its instance.
    config.trusted_proxies =
        aiproxy::balancer::client_addr::TrustedProxies::parse("127.0.0.1").unwrap();
    let p = Proxy::start(config.clone());
    let clients: Vec<String> = (0..40).map(|i| format!("198.51.100.{i}")).collect();
    let first: HashMap<&String, String> = clients
        .iter()
        .map(|c| (c, served_by(&p, &named, c)))
        .collect();
    for c in &clients {
        assert_eq!(served_by(&p, &named, c), first[c], "{c} moved");
    }
    let used: std::collections::HashSet<&String> = first.values().collect();
    assert_eq!(used.len(), 3, "40 clients over 3 instances: {used:?}");

    // Removing an instance moves only its own clients.
    let mut smaller = config.clone();
    smaller.pools = Some(
        pools::parse(
            &json!({"openai-custom": [member("a", &ups[0], json!({})), member("b", &ups[1], json!({}))]})
                .to_string(),
            Format::Json,
        )
        .unwrap(),
    );
    p.handle().reload(&mut || Ok(smaller.clone()));
    for c in &clients {
        let now = served_by(&p, &named, c);
        if first[c] != "c" {
            assert_eq!(now, first[c], "{c} moved although its instance stayed");
        } else {
            assert_ne!(now, "c");
        }
    }
}

#[test]
fn a_reload_keeps_the_state_of_unchanged_members() {
    let failing = Arc::new(AtomicBool::new(true));
    let a = flaky(Arc::clone(&failing), "a");
    let (b, c, d) = (answering("b"), answering("c"), answering("d"));
    let mut config = pool_config(three(&[&a, &b, &c]));
    config.load_balancer.ejection_time = Duration::from_secs(300);
    let p = Proxy::start(config.clone());
    for _ in 0..12 {
        assert_eq!(p.chat().status, 200);
    }
    let a_before = p.instance("a");
    assert_eq!(a_before["state"], "ejected");
    assert!(p.instance("b")["requests"].as_u64().unwrap() > 0);

    // a unchanged, b reweighted (rebuilt), c removed, d added.
    let mut next = config.clone();
    next.pools = Some(
        pools::parse(
            &json!({"openai-custom": [
                member("a", &a, json!({})),
                member("b", &b, json!({"weight": 2})),
                member("d", &d, json!({})),
            ]})
            .to_string(),
            Format::Json,
        )
        .unwrap(),
    );
    p.handle().reload(&mut || Ok(next.clone()));
    let a_after = p.instance("a");
    assert_eq!(a_after["state"], "ejected", "{a_after}");
    for key in [
        "requests",
        "errors",
        "ejections",
        "selections",
        "last_error",
    ] {
        assert_eq!(a_after[key], a_before[key], "{key}");
    }
    assert_eq!(p.instance("b")["requests"], 0, "b changed: rebuilt");
    assert_eq!(p.instance("b")["weight"], 2);
    assert_eq!(p.instance("c"), Value::Null);
    assert_eq!(p.instance("d")["healthy"], true);
    let exposition = get(p.addr(), "/metrics").text();
    assert!(
        exposition.contains(
            r#"aiproxy_loadbalancer_instance_healthy{provider="openai-custom",instance="a"} 0"#
        ),
        "{exposition}"
    );
    assert!(
        !exposition
            .lines()
            .any(|l| l.starts_with("aiproxy_loadbalancer_") && l.contains(r#"instance="c""#)),
        "c's series stayed"
    );
}

#[test]
fn the_algorithm_is_switched_at_run_time_by_an_admin() {
    let (a, b) = (answering("a"), answering("b"));
    let mut config = pool_config(vec![member("a", &a, json!({})), member("b", &b, json!({}))]);
    config.api_keys = vec![Secret::new("client-key")];
    config.admin_api_keys = vec![Secret::new("admin-key")];
    let p = Proxy::start(config.clone());
    let put = |key: &str, content_type: &str, body: &str| {
        roundtrip(
            p.addr(),
            format!(
                "PUT /loadbalancer/algorithm HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
                 Authorization: Bearer {key}\r\nContent-Type: {content_type}\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
    };
    let json_type = "application/json";
    assert_eq!(put("wrong", json_type, "{}").status, 401);
    assert_eq!(
        put("client-key", json_type, r#"{"algorithm":"random"}"#).status,
        403
    );
    assert_eq!(
        put("admin-key", "text/plain", r#"{"algorithm":"random"}"#).status,
        415
    );
    let bad = put("admin-key", json_type, r#"{"algorithm":"fastest"}"#);
    assert_eq!(bad.status, 400);
    let message = bad.json()["error"]["message"].as_str().unwrap().to_owned();
    for name in Algorithm::ALL {
        assert!(message.contains(name.name()), "{message}");
    }
    assert_eq!(put("admin-key", json_type, "[1]").status, 400);
    let ok = put("admin-key", json_type, r#"{"algorithm":"least_requests"}"#);
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(
        ok.json(),
        json!({"algorithm": "least_requests", "previous": "round_robin"})
    );
    let control = p.handle().control();
    assert_eq!(control.algorithm(), Algorithm::LeastRequests);
    let listing = roundtrip(
        p.addr(),
        b"GET /loadbalancer/instances HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
          Authorization: Bearer client-key\r\n\r\n",
    );
    assert_eq!(listing.json()["algorithm"], "least_requests");
    // A reload whose file says the same keeps the run-time choice; one
    // that changes the file's value wins.
    p.handle().reload(&mut || Ok(config.clone()));
    assert_eq!(control.algorithm(), Algorithm::LeastRequests);
    let mut changed = config.clone();
    changed.load_balancer.algorithm = Algorithm::Weighted;
    p.handle().reload(&mut || Ok(changed.clone()));
    assert_eq!(control.algorithm(), Algorithm::Weighted);
    control.set_algorithm(Algorithm::IpHash);
    assert_eq!(control.algorithm(), Algorithm::IpHash);
}

#[test]
fn with_the_balancer_off_the_first_instance_serves_and_fails_over() {
    let failing = Arc::new(AtomicBool::new(false));
    let a = flaky(Arc::clone(&failing), "a");
    let (b, c) = (answering("b"), answering("c"));
    let mut config = pool_config(three(&[&a, &b, &c]));
    config.load_balancer.enabled = false;
    let p = Proxy::start(config);
    for _ in 0..6 {
        assert_eq!(p.chat().status, 200);
    }
    assert_eq!((chats(&a), chats(&b), chats(&c)), (6, 0, 0));
    failing.store(true, Ordering::SeqCst);
    for _ in 0..6 {
        let resp = p.chat();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.json()["choices"][0]["message"]["content"], "b");
    }
    assert_eq!(chats(&c), 0, "b, the next in order, took over");
    assert_eq!(p.instances()["enabled"], false);
}

#[test]
fn health_and_metrics_show_every_instance() {
    let ups = [answering("a"), answering("b"), answering("c")];
    let p = Proxy::start(pool_config(vec![
        member("a", &ups[0], json!({"customName": "first account"})),
        member("b", &ups[1], json!({"OPENAI_API_KEY": "sk-canary-b-7f3e"})),
        member("c", &ups[2], json!({"isDisabled": true})),
    ]));
    for _ in 0..4 {
        assert_eq!(p.chat().status, 200);
    }
    let health = get(p.addr(), "/health");
    let instances = &health.json()["providers"][0]["instances"];
    assert_eq!(instances.as_array().unwrap().len(), 3, "{instances}");
    assert_eq!(instances[0]["name"], "first account");
    assert_eq!(instances[1]["requests"], 2);
    assert_eq!(instances[2]["state"], "disabled");
    assert!(!health.text().contains("sk-canary"), "a key leaked");
    assert!(!p.instances().to_string().contains("sk-canary"));
    assert_eq!(
        ups[1].last().header("authorization"),
        Some("Bearer sk-canary-b-7f3e")
    );
    assert_eq!(
        ups[0].last().header("authorization"),
        Some("Bearer sk-upstream")
    );
    let exposition = get(p.addr(), "/metrics").text();
    for line in [
        r#"aiproxy_loadbalancer_instance_healthy{provider="openai-custom",instance="a"} 1"#,
        r#"aiproxy_loadbalancer_instance_healthy{provider="openai-custom",instance="c"} 0"#,
        r#"aiproxy_loadbalancer_selections_total{provider="openai-custom",instance="b"} 2"#,
        "aiproxy_loadbalancer_retries_total 0",
    ] {
        assert!(exposition.contains(line), "{line} missing:\n{exposition}");
    }
    let summary = get(p.addr(), "/dashboard/summary.json").json();
    assert_eq!(
        summary["instances"].as_array().unwrap().len(),
        3,
        "{summary}"
    );
}
