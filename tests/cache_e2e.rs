//! End-to-end checks of the response cache through the `aiproxy` binary:
//! `X-Cache`, the counting upstream, coalescing, `/cache/*`, and two
//! proxies sharing a real `redis-server`.
//!
//! `AIPROXY_E2E_BIN=/path/to/aiproxy` points the harness at another build.
//!
//! The upstream is a small OpenAI-compatible server in this file that
//! counts calls and stamps each answer with its call number, so "a hit
//! made no upstream call" and "a hit is byte-identical to the miss" are
//! both observable.

#[path = "common/ports.rs"]
mod ports;
#[path = "integration/support.rs"]
mod support;

#[path = "common/redis_server.rs"]
mod redis_server;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use redis_server::RedisServer;
use serde_json::{Value, json};
use support::Response;

const KEY: &str = "e2e-secret";
const AUTH: &str = "Authorization: Bearer e2e-secret\r\n";

/// An OpenAI-compatible upstream that counts chat completion calls.
/// Prompts containing `slow` take 500 ms; `fail` gets a 400; `big N`
/// gets an answer of N KiB.
struct Upstream {
    addr: SocketAddr,
    calls: Arc<AtomicU64>,
}

impl Upstream {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&calls);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let counter = Arc::clone(&counter);
                thread::spawn(move || serve(stream, &counter));
            }
        });
        Self { addr, calls }
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
}

/// Keep-alive loop: one request after another on the connection.
fn serve(stream: TcpStream, calls: &AtomicU64) {
    // Head and body go out in two writes: without TCP_NODELAY the second
    // waits ~40 ms for the first one's delayed ACK.
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        let prompt = request["messages"].to_string();
        if prompt.contains("slow") {
            thread::sleep(Duration::from_millis(500));
        }
        let model = request["model"].as_str().unwrap_or("m").to_owned();
        let content = match prompt.split_once("big ") {
            Some((_, rest)) => {
                let kib: usize = rest
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
                "x".repeat(kib * 1024)
            }
            None => format!("answer #{n}"),
        };
        let (status, payload) = if prompt.contains("fail") {
            (
                400,
                json!({"error": {"message": "bad request", "type": "invalid_request_error"}}),
            )
        } else if request["stream"] == json!(true) {
            let chunk = json!({"id": format!("chatcmpl-{n}"), "object": "chat.completion.chunk",
                "created": 1, "model": model,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": "streamed"}, "finish_reason": "stop"}]});
            let sse = format!("data: {chunk}\n\ndata: [DONE]\n\n");
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\n\r\n",
                sse.len()
            );
            if out
                .write_all(head.as_bytes())
                .and_then(|()| out.write_all(sse.as_bytes()))
                .is_err()
            {
                return;
            }
            continue;
        } else {
            (
                200,
                json!({"id": format!("chatcmpl-{n}"), "object": "chat.completion",
                "created": 1_700_000_000 + n, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}),
            )
        };
        let body = payload.to_string();
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        if out
            .write_all(head.as_bytes())
            .and_then(|()| out.write_all(body.as_bytes()))
            .is_err()
        {
            return;
        }
    }
}

/// An `aiproxy` process in front of an [`Upstream`], killed on drop.
struct Proxy {
    child: Child,
    addr: SocketAddr,
}

impl Proxy {
    fn start(upstream: &Upstream, extra: &[&str]) -> Self {
        let port = ports::free_port();
        // AIPROXY_E2E_BIN runs the harness against another build.
        let bin = std::env::var("AIPROXY_E2E_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_aiproxy").to_owned());
        let child = Command::new(bin)
            .args([
                "--port",
                &port.to_string(),
                "--api-key",
                KEY,
                "--log-level",
                "warn",
            ])
            .args([
                "--model-provider",
                "openai-custom",
                "--openai-api-key",
                "up-key",
            ])
            .args(["--openai-base-url", &format!("http://{}/v1", upstream.addr)])
            .args(["--request-max-retries", "0"])
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("aiproxy binary");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut proxy = Self { child, addr };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = proxy.child.try_wait() {
                panic!("aiproxy exited: {status}");
            }
            assert!(Instant::now() < deadline, "aiproxy did not start");
            thread::sleep(Duration::from_millis(20));
        }
        proxy
    }

    fn chat(&self, prompt: &str, extra_headers: &str) -> Response {
        self.chat_as(KEY, prompt, extra_headers)
    }

    fn chat_as(&self, key: &str, prompt: &str, extra_headers: &str) -> Response {
        let body = json!({"model": "gpt-4o-mini", "temperature": 0,
            "messages": [{"role": "user", "content": prompt}]});
        support::post_json(
            self.addr,
            "/v1/chat/completions",
            &format!("Authorization: Bearer {key}\r\n{extra_headers}"),
            &body.to_string(),
        )
    }

    fn call(&self, method: &str, path: &str, auth: bool) -> Response {
        self.call_with(method, path, if auth { AUTH } else { "" })
    }

    fn call_with(&self, method: &str, path: &str, headers: &str) -> Response {
        support::roundtrip(
            self.addr,
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n{headers}\r\n").as_bytes(),
        )
    }

    fn stats(&self) -> Value {
        let r = self.call("GET", "/cache/stats", true);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn x_cache(r: &Response) -> &str {
    r.header("x-cache").unwrap_or("<none>")
}

#[test]
fn a_hit_is_identical_to_the_miss_and_makes_no_upstream_call() {
    let upstream = Upstream::start();
    let proxy = Proxy::start(&upstream, &[]);
    let miss = proxy.chat("hello", "");
    assert_eq!(
        (miss.status, x_cache(&miss)),
        (200, "MISS"),
        "{}",
        miss.text()
    );
    let hit = proxy.chat("hello", "");
    assert_eq!((hit.status, x_cache(&hit)), (200, "HIT"));
    assert_eq!(hit.body, miss.body, "byte-identical replay");
    assert_eq!(upstream.calls(), 1, "the hit made no upstream call");

    // Different prompt: a miss. No-cache and no-store: bypass, upstream.
    assert_eq!(x_cache(&proxy.chat("other", "")), "MISS");
    for header in ["Cache-Control: no-cache\r\n", "Cache-Control: no-store\r\n"] {
        assert_eq!(x_cache(&proxy.chat("hello", header)), "BYPASS");
    }
    assert_eq!(upstream.calls(), 4);

    // A stream is never answered from (or stored in) the cache.
    let body = json!({"model": "gpt-4o-mini", "temperature": 0, "stream": true,
        "messages": [{"role": "user", "content": "hello"}]});
    let stream = support::post_json(proxy.addr, "/v1/chat/completions", AUTH, &body.to_string());
    assert_eq!(x_cache(&stream), "BYPASS");
    assert!(stream.text().contains("data:"), "{}", stream.text());
    assert_eq!(upstream.calls(), 5);
}

#[test]
fn twenty_concurrent_identical_requests_make_one_upstream_call() {
    let upstream = Upstream::start();
    let proxy = Arc::new(Proxy::start(&upstream, &["--workers", "32"]));
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let proxy = Arc::clone(&proxy);
            thread::spawn(move || proxy.chat("slow and popular", ""))
        })
        .collect();
    let responses: Vec<Response> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(responses.iter().all(|r| r.status == 200));
    assert!(responses.iter().all(|r| r.body == responses[0].body));
    assert_eq!(upstream.calls(), 1);
    let stats = proxy.stats();
    assert_eq!(stats["misses"], 1);
    assert_eq!(
        stats["hits"].as_u64().unwrap() + stats["coalesced"].as_u64().unwrap(),
        19
    );
}

#[test]
fn errors_are_not_cached() {
    let upstream = Upstream::start();
    let proxy = Proxy::start(&upstream, &[]);
    assert_eq!(proxy.chat("please fail", "").status, 400);
    let again = proxy.chat("please fail", "");
    assert_eq!((again.status, x_cache(&again)), (400, "MISS"));
    assert_eq!(upstream.calls(), 2);
}

#[test]
fn management_endpoints_need_auth_and_work() {
    let upstream = Upstream::start();
    let proxy = Proxy::start(&upstream, &["--cache-max-size", "10", "--cache-ttl", "60"]);
    for (method, path) in [
        ("GET", "/cache/stats"),
        ("DELETE", "/cache/clear"),
        ("PUT", "/cache/enable"),
        ("PUT", "/cache/disable"),
    ] {
        assert_eq!(
            proxy.call(method, path, false).status,
            401,
            "{method} {path}"
        );
    }
    proxy.chat("a", "");
    proxy.chat("a", "");
    let stats = proxy.stats();
    let mut keys: Vec<&str> = stats
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "bytes",
            "capacity_bytes",
            "coalesced",
            "enabled",
            "entries",
            "evictions",
            "expirations",
            "hit_ratio",
            "hits",
            "misses",
            "redis",
            "refused"
        ]
    );
    assert_eq!(
        (
            stats["hits"].as_u64(),
            stats["misses"].as_u64(),
            stats["entries"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!(stats["capacity_bytes"], 10 * 1024 * 1024);
    assert_eq!(
        stats["redis"],
        json!({"configured": false, "connected": false, "errors": 0})
    );

    assert!(proxy.call("PUT", "/cache/disable", true).status < 300);
    assert_eq!(proxy.stats()["enabled"], false);
    assert_eq!(x_cache(&proxy.chat("a", "")), "BYPASS");
    assert!(proxy.call("PUT", "/cache/enable", true).status < 300);
    assert_eq!(x_cache(&proxy.chat("a", "")), "HIT");
    assert!(proxy.call("DELETE", "/cache/clear", true).status < 300);
    assert_eq!(proxy.stats()["entries"], 0);
    assert_eq!(x_cache(&proxy.chat("a", "")), "MISS");
}

#[test]
fn memory_stays_within_the_bound_under_a_flood() {
    let upstream = Upstream::start();
    let proxy = Proxy::start(&upstream, &["--cache-max-size", "1"]);
    for i in 0..3000 {
        assert_eq!(
            proxy
                .chat(&format!("distinct {i} {}", "x".repeat(500)), "")
                .status,
            200
        );
    }
    let stats = proxy.stats();
    assert!(
        stats["bytes"].as_u64() <= stats["capacity_bytes"].as_u64(),
        "{stats}"
    );
    assert!(stats["evictions"].as_u64().unwrap() > 0);
}

#[test]
fn a_one_megabyte_cache_fills_with_fifty_kilobyte_answers() {
    let upstream = Upstream::start();
    let proxy = Proxy::start(&upstream, &["--cache-max-size", "1"]);
    for i in 0..40 {
        let r = proxy.chat(&format!("big 50 #{i}"), "");
        assert_eq!((r.status, x_cache(&r)), (200, "MISS"), "{i}");
        assert!(r.body.len() > 50 * 1024);
    }
    let stats = proxy.stats();
    let n = |k: &str| stats[k].as_u64().unwrap();
    let weight = n("bytes") / n("entries");
    assert_eq!(n("refused"), 0, "{stats}");
    assert!(n("bytes") <= n("capacity_bytes"), "{stats}");
    assert!(
        n("bytes") + weight > n("capacity_bytes"),
        "full, no room for another answer: {stats}"
    );
    assert!(n("entries") >= 19, "{stats}");
    assert_eq!(n("evictions"), 40 - n("entries"), "{stats}");
    // The latest answers are the ones kept.
    assert_eq!(x_cache(&proxy.chat("big 50 #39", "")), "HIT");
    assert_eq!(x_cache(&proxy.chat("big 50 #0", "")), "MISS");

    // More than 1/16 of the capacity: served, not stored, counted.
    let huge = proxy.chat("big 100 huge", "");
    assert_eq!((huge.status, x_cache(&huge)), (200, "MISS"));
    assert_eq!(x_cache(&proxy.chat("big 100 huge", "")), "MISS");
    assert_eq!(proxy.stats()["refused"], 2);
    let metrics = proxy.call("GET", "/metrics", false).text();
    assert!(
        metrics
            .lines()
            .any(|l| l == "aiproxy_cache_refused_total 2"),
        "{metrics}"
    );
}

#[test]
fn admin_endpoints_need_an_admin_key_when_one_is_set() {
    let upstream = Upstream::start();
    let proxy = Proxy::start(&upstream, &["--admin-api-key", "admin-1,admin-2"]);
    let admin = "Authorization: Bearer admin-2\r\n";
    for (method, path) in [
        ("DELETE", "/cache/clear"),
        ("PUT", "/cache/enable"),
        ("PUT", "/cache/disable"),
    ] {
        let client = proxy.call(method, path, true);
        assert_eq!(client.status, 403, "{method} {path}: {}", client.text());
        assert_eq!(client.json()["error"]["type"], "permission_error");
        assert_eq!(proxy.call(method, path, false).status, 401);
    }
    // The refusal speaks the client's protocol.
    let anthropic = proxy.call_with(
        "DELETE",
        "/cache/clear",
        &format!("{AUTH}anthropic-version: 2023-06-01\r\n"),
    );
    assert_eq!(
        (anthropic.status, anthropic.json()["type"].as_str()),
        (403, Some("error"))
    );
    assert_eq!(proxy.stats()["enabled"], true, "nothing changed");
    // An admin key opens them, and is a client key too.
    assert_eq!(proxy.call_with("PUT", "/cache/disable", admin).status, 200);
    assert_eq!(proxy.stats()["enabled"], false);
    assert_eq!(proxy.call_with("PUT", "/cache/enable", admin).status, 200);
    assert_eq!(proxy.call_with("DELETE", "/cache/clear", admin).status, 200);
    assert_eq!(proxy.chat_as("admin-1", "hi", "").status, 200);
    assert_eq!(proxy.call_with("GET", "/cache/stats", admin).status, 200);
}

#[test]
fn per_key_scope_keeps_one_keys_answers_from_another() {
    let upstream = Upstream::start();
    let per_key = Proxy::start(
        &upstream,
        &["--admin-api-key", "other-key", "--cache-scope", "per_key"],
    );
    assert_eq!(x_cache(&per_key.chat("private", "")), "MISS");
    assert_eq!(x_cache(&per_key.chat("private", "")), "HIT");
    let other = per_key.chat_as("other-key", "private", "");
    assert_eq!((other.status, x_cache(&other)), (200, "MISS"));
    assert_eq!(x_cache(&per_key.chat_as("other-key", "private", "")), "HIT");
    assert_eq!(upstream.calls(), 2);

    // The default, shared: one key's answer is another's hit.
    let shared = Proxy::start(&upstream, &["--admin-api-key", "other-key"]);
    assert_eq!(x_cache(&shared.chat("public", "")), "MISS");
    assert_eq!(x_cache(&shared.chat_as("other-key", "public", "")), "HIT");
}

#[test]
fn two_proxies_share_redis_survive_its_outage_and_clear_only_their_keys() {
    let mut redis = RedisServer::start(&[]);
    let upstream = Upstream::start();
    let addr = redis.addr();
    let a = Proxy::start(&upstream, &["--redis-addr", &addr]);
    let b = Proxy::start(&upstream, &["--redis-addr", &addr]);

    let miss = a.chat("shared", "");
    assert_eq!(x_cache(&miss), "MISS");
    let hit = b.chat("shared", "");
    assert_eq!(x_cache(&hit), "HIT", "B answered from Redis");
    assert_eq!(hit.body, miss.body);
    assert_eq!(upstream.calls(), 1);
    assert_eq!(b.stats()["redis"]["connected"], true);

    // Outage: every request still succeeds, promptly; stats show it.
    redis.kill();
    for i in 0..20 {
        let started = Instant::now();
        let r = a.chat(&format!("during outage {i}"), "");
        assert_eq!(r.status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
    let stats = a.stats();
    assert_eq!(stats["redis"]["connected"], false);
    assert!(stats["redis"]["errors"].as_u64().unwrap() > 0);

    // Back: hits through Redis resume without a restart of the proxies.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut n = 0;
    loop {
        n += 1;
        let prompt = format!("after restart {n}");
        a.chat(&prompt, "");
        if x_cache(&b.chat(&prompt, "")) == "HIT" {
            break;
        }
        assert!(Instant::now() < deadline, "Redis hits did not resume");
        thread::sleep(Duration::from_millis(200));
    }

    // Clear removes this proxy's keys only.
    let mut con = redis.client().unwrap();
    redis::cmd("SET")
        .arg("other:key")
        .arg("keep")
        .query::<()>(&mut con)
        .unwrap();
    assert!(a.call("DELETE", "/cache/clear", true).status < 300);
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
    assert_eq!(keys, ["other:key"]);
}
