//! gemini-cli, kiro-api and qwen-api end to end: `aiproxy::start` in
//! process, real clients over loopback, and mock upstreams that speak each
//! wire format byte for byte (Code Assist with its `{"response": …}`
//! wrapping and onboarding, Kiro's binary AWS event stream with real
//! CRC32s, Qwen's OpenAI-compatible SSE) plus each provider's token
//! endpoint, counting refresh calls.
//!
//! No test sleeps to synchronise: mock upstreams answer from scripts, and
//! ordering is observed through recorded requests.

#[path = "integration/support.rs"]
mod support;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aiproxy::Config;
use aiproxy::providers::ProviderKind;
use serde_json::{Value, json};
use support::{get, post_json};

// ------------------------------------------------------------ mock upstream

/// One request as the mock saw it.
#[derive(Clone, Debug)]
struct Req {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A scripted answer; `chunks` are written (and flushed) one by one as
/// HTTP chunks, so a frame can be split across reads.
struct Resp {
    status: u16,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    chunks: Vec<Vec<u8>>,
}

impl Resp {
    fn json(status: u16, v: Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            chunks: vec![v.to_string().into_bytes()],
        }
    }
    fn sse(events: &[Value]) -> Self {
        Self {
            status: 200,
            content_type: "text/event-stream",
            headers: Vec::new(),
            chunks: events
                .iter()
                .map(|e| format!("data: {e}\n\n").into_bytes())
                .collect(),
        }
    }
    fn eventstream(chunks: Vec<Vec<u8>>) -> Self {
        Self {
            status: 200,
            content_type: "application/vnd.amazon.eventstream",
            headers: Vec::new(),
            chunks,
        }
    }
}

type Handler = dyn Fn(&Req) -> Resp + Send + Sync;

struct Mock {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Req>>>,
}

impl Mock {
    fn start(handler: impl Fn(&Req) -> Resp + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let shared = Arc::clone(&log);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let handler = Arc::clone(&handler);
                let log = Arc::clone(&shared);
                thread::spawn(move || serve(stream, &*handler, &log));
            }
        });
        Self { addr, log }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self, path_prefix: &str) -> Vec<Req> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path.starts_with(path_prefix))
            .cloned()
            .collect()
    }

    fn count(&self, path_prefix: &str) -> usize {
        self.requests(path_prefix).len()
    }
}

fn serve(stream: TcpStream, handler: &Handler, log: &Mutex<Vec<Req>>) {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                headers.push((n.trim().to_owned(), v.trim().to_owned()));
            }
        }
        let length = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0usize);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let req = Req {
            method,
            path,
            headers,
            body,
        };
        log.lock().unwrap().push(req.clone());
        let resp = handler(&req);
        let mut head = format!(
            "HTTP/1.1 {} X\r\nContent-Type: {}\r\nTransfer-Encoding: chunked\r\n",
            resp.status, resp.content_type
        );
        for (n, v) in &resp.headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str("\r\n");
        if out.write_all(head.as_bytes()).is_err() {
            return;
        }
        let last = resp.chunks.len();
        for (i, chunk) in resp.chunks.iter().enumerate() {
            let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
            if out.write_all(&framed).and_then(|()| out.flush()).is_err() {
                return;
            }
            if i + 1 < last {
                // Only makes separate reads likely; correctness does not
                // depend on it (split points are unit-tested exhaustively).
                thread::sleep(Duration::from_millis(5));
            }
        }
        if out.write_all(b"0\r\n\r\n").is_err() {
            return;
        }
    }
}

// ------------------------------------------------------------- event stream

/// Bitwise CRC32 (IEEE), independent of the crate's table-driven one.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// One AWS event-stream message with string headers.
fn frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (n, v) in headers {
        h.push(n.len() as u8);
        h.extend_from_slice(n.as_bytes());
        h.push(7);
        h.extend_from_slice(&(v.len() as u16).to_be_bytes());
        h.extend_from_slice(v.as_bytes());
    }
    let total = (16 + h.len() + payload.len()) as u32;
    let mut out = Vec::new();
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let c = crc32(&out);
    out.extend_from_slice(&c.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let c = crc32(&out);
    out.extend_from_slice(&c.to_be_bytes());
    out
}

fn event(kind: &str, payload: Value) -> Vec<u8> {
    frame(
        &[
            (":message-type", "event"),
            (":event-type", kind),
            (":content-type", "application/json"),
        ],
        payload.to_string().as_bytes(),
    )
}

// ------------------------------------------------------------------ helpers

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn iso(ms: u64) -> String {
    aiproxy::time::rfc3339(ms)
}

fn temp_dir(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "aiproxy-oauth-it-{}-{name}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_creds(dir: &Path, name: &str, v: &Value) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    path
}

fn read_creds(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn config(kind: ProviderKind) -> Config {
    let mut c = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        model_providers: vec![kind],
        workers: 32,
        ..Config::default()
    };
    c.cache.enabled = false;
    c.upstream.max_retries = 0;
    c
}

/// `data:` payloads of an SSE body, `[DONE]` included.
fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

fn sse_json(body: &str) -> Vec<Value> {
    sse_data(body)
        .iter()
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect()
}

/// Tool calls of an OpenAI stream: (name, concatenated arguments) by index.
fn openai_tool_calls(chunks: &[Value]) -> Vec<(String, String)> {
    let mut calls: Vec<(String, String)> = Vec::new();
    for c in chunks {
        for call in c["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let i = call["index"].as_u64().unwrap() as usize;
            while calls.len() <= i {
                calls.push((String::new(), String::new()));
            }
            if let Some(n) = call["function"]["name"].as_str() {
                calls[i].0.push_str(n);
            }
            if let Some(a) = call["function"]["arguments"].as_str() {
                calls[i].1.push_str(a);
            }
        }
    }
    calls
}

// --------------------------------------------------------------- gemini-cli

fn gemini_creds(dir: &Path, access: &str, expiry: u64) -> PathBuf {
    write_creds(
        dir,
        "oauth_creds.json",
        &json!({"access_token": access, "refresh_token": "1//refresh", "scope": "s",
                "token_type": "Bearer", "expiry_date": expiry}),
    )
}

fn google_token_endpoint(req: &Req, n: usize) -> Resp {
    assert_eq!(
        req.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let body = req.text();
    assert!(body.contains("grant_type=refresh_token"), "{body}");
    assert!(body.contains("refresh_token=1%2F%2Frefresh"), "{body}");
    assert!(body.contains("client_id=681255809395-"), "{body}");
    assert!(body.contains("client_secret=GOCSPX-"), "{body}");
    Resp::json(
        200,
        json!({"access_token": format!("ya29.fresh{n}"), "expires_in": 3599,
               "scope": "s", "token_type": "Bearer"}),
    )
}

fn gemini_config(mock: &Mock, creds: PathBuf, project: Option<&str>) -> Config {
    let mut c = config(ProviderKind::GeminiCli);
    c.gemini.oauth_creds_file = Some(creds);
    c.gemini.base_url = mock.url();
    c.gemini.token_url = format!("{}/token", mock.url());
    c.gemini.project_id = project.map(str::to_owned);
    c
}

/// Onboarding (loadCodeAssist → onboardUser polled), a 401 on the first
/// generation that triggers one refresh and one retry, request wrapping
/// and response unwrapping; an Anthropic client, whole answer.
#[test]
fn gemini_cli_onboards_refreshes_on_401_and_unwraps() {
    let dir = temp_dir("gemini");
    let creds = gemini_creds(&dir, "ya29.old", now_ms() + 3_600_000);
    let polls = Arc::new(AtomicUsize::new(0));
    let gens = Arc::new(AtomicUsize::new(0));
    let tokens = Arc::new(AtomicUsize::new(0));
    let (p, g, t) = (Arc::clone(&polls), Arc::clone(&gens), Arc::clone(&tokens));
    let mock = Mock::start(move |req| match req.path.as_str() {
        "/token" => google_token_endpoint(req, t.fetch_add(1, Ordering::SeqCst) + 1),
        "/v1internal:loadCodeAssist" => {
            assert_eq!(req.json()["metadata"]["pluginType"], "GEMINI");
            Resp::json(
                200,
                json!({"allowedTiers": [{"id": "legacy-tier"}, {"id": "free-tier", "isDefault": true}]}),
            )
        }
        "/v1internal:onboardUser" => {
            assert_eq!(req.json()["tierId"], "free-tier");
            if p.fetch_add(1, Ordering::SeqCst) == 0 {
                Resp::json(200, json!({"name": "op/1", "done": false}))
            } else {
                Resp::json(
                    200,
                    json!({"done": true, "response": {"cloudaicompanionProject": {"id": "proj-onboarded"}}}),
                )
            }
        }
        "/v1internal:generateContent" => {
            if g.fetch_add(1, Ordering::SeqCst) == 0 {
                return Resp::json(
                    401,
                    json!({"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}}),
                );
            }
            Resp::json(
                200,
                json!({"response": {"candidates": [{"content": {"role": "model", "parts": [{"text": "Bonjour!"}]},
                        "finishReason": "STOP"}],
                        "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 2, "totalTokenCount": 9},
                        "modelVersion": "gemini-2.5-pro"},
                       "traceId": "abc"}),
            )
        }
        other => panic!("unexpected path {other}"),
    });
    let handle = aiproxy::start(gemini_config(&mock, creds.clone(), None)).unwrap();
    let resp = post_json(
        handle.addr(),
        "/v1/messages",
        "",
        &json!({"model": "gemini-2.5-pro", "max_tokens": 100, "system": "Answer in French.",
                "messages": [{"role": "user", "content": "Hello"}]})
        .to_string(),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let body = resp.json();
    assert_eq!(body["type"], "message");
    assert_eq!(body["content"][0]["text"], "Bonjour!");
    assert_eq!(body["usage"]["input_tokens"], 7);

    assert_eq!(
        polls.load(Ordering::SeqCst),
        2,
        "onboardUser polled until done"
    );
    assert_eq!(mock.count("/token"), 1, "one refresh after the 401");
    let calls = mock.requests("/v1internal:generateContent");
    assert_eq!(calls.len(), 2, "one retry");
    assert_eq!(calls[0].header("authorization"), Some("Bearer ya29.old"));
    assert_eq!(calls[1].header("authorization"), Some("Bearer ya29.fresh1"));
    let sent = calls[1].json();
    assert_eq!(sent["model"], "gemini-2.5-pro");
    assert_eq!(sent["project"], "proj-onboarded");
    assert_eq!(sent["request"]["contents"][0]["role"], "user");
    assert_eq!(sent["request"]["systemInstruction"]["role"], "user");
    assert!(
        calls[1]
            .header("user-agent")
            .unwrap()
            .starts_with("GeminiCLI/")
    );

    // Written back atomically: new token, old refresh token kept, 0600.
    let saved = read_creds(&creds);
    assert_eq!(saved["access_token"], "ya29.fresh1");
    assert_eq!(saved["refresh_token"], "1//refresh");
    assert!(saved["expiry_date"].as_u64().unwrap() > now_ms() + 3_000_000);
    #[cfg(unix)]
    assert_eq!(mode(&creds), 0o600);
    let leftovers: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary files left");

    // /health: status without any token.
    let health = get(handle.addr(), "/health");
    let text = health.text();
    let cred = &health.json()["providers"][0]["instances"][0]["credentials"];
    assert_eq!(cred["state"], "valid");
    assert_eq!(cred["refreshes"], 1);
    assert_eq!(cred["project"], "proj-onboarded");
    assert!(cred["valid_until"].as_str().unwrap().ends_with('Z'));
    assert!(cred["last_error"].is_null());
    assert!(
        !text.contains("ya29") && !text.contains("1//refresh"),
        "{text}"
    );
    handle.shutdown();
}

/// Anthropic client streaming with a tool through Code Assist SSE, and a
/// Gemini client streaming: both see plain Gemini (no `response` wrapper).
#[test]
fn gemini_cli_streams_tools_to_anthropic_and_plain_sse_to_gemini() {
    let dir = temp_dir("gemini-stream");
    let creds = gemini_creds(&dir, "ya29.valid", now_ms() + 3_600_000);
    let mock = Mock::start(|req| {
        assert_eq!(req.path, "/v1internal:streamGenerateContent?alt=sse");
        assert_eq!(req.json()["project"], "my-proj");
        let tools = !req.json()["request"]["tools"].is_null();
        let chunks = if tools {
            vec![
                json!({"response": {"candidates": [{"content": {"role": "model", "parts": [{"text": "Checking."}]}}]}, "traceId": "t"}),
                json!({"response": {"candidates": [{"content": {"role": "model", "parts": [
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]}, "finishReason": "STOP"}],
                    "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 5}}, "traceId": "t"}),
            ]
        } else {
            vec![
                json!({"response": {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}]}, "traceId": "t"}),
                json!({"response": {"candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]}, "finishReason": "STOP"}]}, "traceId": "t"}),
            ]
        };
        Resp::sse(&chunks)
    });
    let handle = aiproxy::start(gemini_config(&mock, creds, Some("my-proj"))).unwrap();
    let resp = post_json(
        handle.addr(),
        "/v1/messages",
        "",
        &json!({"model": "gemini-2.5-flash", "max_tokens": 100, "stream": true,
                "messages": [{"role": "user", "content": "Weather in Paris?"}],
                "tools": [{"name": "get_weather", "description": "Weather by city",
                           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]})
        .to_string(),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let events = sse_json(&resp.text());
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"message_start"));
    assert_eq!(types.last(), Some(&"message_stop"));
    let tool = events
        .iter()
        .find(|e| e["content_block"]["type"] == "tool_use")
        .expect("a tool_use block");
    assert_eq!(tool["content_block"]["name"], "get_weather");
    let args: String = events
        .iter()
        .filter_map(|e| e["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"city": "Paris"})
    );
    let delta = events
        .iter()
        .find(|e| e["type"] == "message_delta")
        .unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert!(!resp.text().contains("traceId"));

    let resp = post_json(
        handle.addr(),
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        "",
        &json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}).to_string(),
    );
    assert_eq!(resp.status, 200);
    let chunks = sse_json(&resp.text());
    assert_eq!(chunks.len(), 2, "{}", resp.text());
    for c in &chunks {
        assert!(
            c.get("response").is_none() && c.get("candidates").is_some(),
            "{c}"
        );
    }
    handle.shutdown();
}

/// Google errors keep their message and their retry delay.
#[test]
fn gemini_cli_relays_errors_with_retry_delay() {
    let dir = temp_dir("gemini-429");
    let creds = gemini_creds(&dir, "ya29.valid", now_ms() + 3_600_000);
    let mock = Mock::start(|_| {
        Resp::json(
            429,
            json!([{"error": {"code": 429, "message": "Quota exceeded for quota metric", "status": "RESOURCE_EXHAUSTED",
                "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "41.2s"}]}}]),
        )
    });
    let handle = aiproxy::start(gemini_config(&mock, creds, Some("p"))).unwrap();
    let resp = post_json(
        handle.addr(),
        "/v1/chat/completions",
        "",
        &json!({"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "x"}]})
            .to_string(),
    );
    assert_eq!(resp.status, 429);
    assert_eq!(resp.header("retry-after"), Some("42"));
    assert!(resp.text().contains("Quota exceeded"), "{}", resp.text());
    handle.shutdown();
}

// ----------------------------------------------------------------- kiro-api

fn kiro_social_creds(dir: &Path, expires: u64) -> PathBuf {
    write_creds(
        dir,
        "kiro-auth-token.json",
        &json!({"accessToken": "aoa-old", "refreshToken": "aor-refresh", "expiresAt": iso(expires),
                "authMethod": "social", "provider": "Github",
                "profileArn": "arn:aws:codewhisperer:us-east-1:123:profile/ABC", "region": "us-east-1"}),
    )
}

fn kiro_config(mock: &Mock, creds: PathBuf) -> Config {
    let mut c = config(ProviderKind::KiroApi);
    c.kiro.oauth_creds_file = Some(creds);
    c.kiro.base_url = mock.url();
    c.kiro.refresh_url = format!("{}/refreshToken", mock.url());
    c.kiro.refresh_idc_url = format!("{}/oidc/{{region}}/token", mock.url());
    c
}

fn kiro_tool_stream() -> Vec<Vec<u8>> {
    let text = event(
        "assistantResponseEvent",
        json!({"content": "Let me check the weather. "}),
    );
    let t1 = event(
        "toolUseEvent",
        json!({"toolUseId": "tooluse_1", "name": "get_weather", "input": "{\"city\":"}),
    );
    let t2 = event(
        "toolUseEvent",
        json!({"toolUseId": "tooluse_1", "name": "get_weather", "input": " \"Paris\"}"}),
    );
    let stop = event(
        "toolUseEvent",
        json!({"toolUseId": "tooluse_1", "name": "get_weather", "stop": true}),
    );
    let metering = event("meteringEvent", json!({"unit": "credit", "usage": 0.02}));
    let ctx = event("contextUsageEvent", json!({"contextUsagePercentage": 0.5}));
    // The first tool frame is split across two HTTP chunks (and reads).
    let (a, b) = t1.split_at(t1.len() / 2);
    vec![
        text,
        a.to_vec(),
        [b, &t2[..]].concat(),
        [stop, metering, ctx].concat(),
    ]
}

/// OpenAI client → kiro-api, streamed, with a tool whose input arrives in
/// fragments and a frame split across reads; checks the request shape and
/// headers Kiro needs.
#[test]
fn kiro_streams_tool_calls_to_an_openai_client() {
    let dir = temp_dir("kiro-stream");
    let creds = kiro_social_creds(&dir, now_ms() + 3_600_000);
    let mock = Mock::start(|req| {
        assert_eq!(req.path, "/generateAssistantResponse");
        Resp::eventstream(kiro_tool_stream())
    });
    let handle = aiproxy::start(kiro_config(&mock, creds)).unwrap();
    let resp = post_json(
        handle.addr(),
        "/v1/chat/completions",
        "",
        &json!({"model": "claude-sonnet-4-5", "stream": true,
                "messages": [{"role": "system", "content": "You are terse."},
                             {"role": "user", "content": "Weather in Paris?"}],
                "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]})
        .to_string(),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let data = sse_data(&resp.text());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks = sse_json(&resp.text());
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Let me check the weather. ");
    let calls = openai_tool_calls(&chunks);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0, "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(&calls[0].1).unwrap(),
        json!({"city": "Paris"})
    );
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "tool_calls")
    );

    let sent = &mock.requests("/generateAssistantResponse")[0];
    assert_eq!(sent.method, "POST");
    let body = sent.json();
    assert_eq!(
        body["profileArn"],
        "arn:aws:codewhisperer:us-east-1:123:profile/ABC"
    );
    let state = &body["conversationState"];
    assert_eq!(state["chatTriggerType"], "MANUAL");
    let current = &state["currentMessage"]["userInputMessage"];
    assert_eq!(current["content"], "You are terse.\n\nWeather in Paris?");
    assert_eq!(current["modelId"], "claude-sonnet-4.5");
    assert_eq!(
        current["userInputMessageContext"]["tools"][0]["toolSpecification"]["name"],
        "get_weather"
    );
    assert!(!sent.text().contains("null"), "no nulls: {}", sent.text());
    assert_eq!(sent.header("authorization"), Some("Bearer aoa-old"));
    let ua = sent.header("x-amz-user-agent").unwrap();
    let machine = ua.rsplit('-').next().unwrap();
    assert!(ua.starts_with("aws-sdk-js/1.0.34 KiroIDE-0.11.63-"), "{ua}");
    assert_eq!(machine.len(), 64);
    assert_eq!(sent.header("x-amzn-kiro-agent-mode"), Some("vibe"));
    assert_eq!(sent.header("amz-sdk-invocation-id").map(str::len), Some(36));
    handle.shutdown();
}

/// Anthropic client, whole answer: text and tool_use with an object input.
#[test]
fn kiro_aggregates_a_whole_answer_for_an_anthropic_client() {
    let dir = temp_dir("kiro-unary");
    let creds = kiro_social_creds(&dir, now_ms() + 3_600_000);
    let mock = Mock::start(|_| Resp::eventstream(kiro_tool_stream()));
    let handle = aiproxy::start(kiro_config(&mock, creds)).unwrap();
    let resp = post_json(
        handle.addr(),
        "/v1/messages",
        "",
        &json!({"model": "claude-sonnet-4-5", "max_tokens": 200,
                "messages": [{"role": "user", "content": "Weather in Paris?"}],
                "tools": [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}]})
        .to_string(),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let msg = resp.json();
    assert_eq!(msg["model"], "claude-sonnet-4-5");
    assert_eq!(msg["content"][0]["text"], "Let me check the weather. ");
    assert_eq!(msg["content"][1]["type"], "tool_use");
    assert_eq!(msg["content"][1]["id"], "tooluse_1");
    assert_eq!(msg["content"][1]["input"], json!({"city": "Paris"}));
    assert_eq!(msg["stop_reason"], "tool_use");
    // 0.5 % of a 200k window, minus the output.
    let usage = &msg["usage"];
    assert_eq!(
        usage["input_tokens"].as_u64().unwrap() + usage["output_tokens"].as_u64().unwrap(),
        1000
    );
    handle.shutdown();
}

/// A frame with a bad CRC mid-stream ends the client stream with an
/// in-band error after the text already sent.
#[test]
fn kiro_bad_crc_mid_stream_becomes_an_in_band_error() {
    let dir = temp_dir("kiro-crc");
    let creds = kiro_social_creds(&dir, now_ms() + 3_600_000);
    let mock = Mock::start(|_| {
        let good = event(
            "assistantResponseEvent",
            json!({"content": "partial answer"}),
        );
        let mut bad = event("assistantResponseEvent", json!({"content": "corrupted"}));
        let n = bad.len();
        bad[n - 8] ^= 0x55;
        Resp::eventstream(vec![good, bad])
    });
    let handle = aiproxy::start(kiro_config(&mock, creds)).unwrap();
    let resp = post_json(
        handle.addr(),
        "/v1/messages",
        "",
        &json!({"model": "claude-sonnet-4-5", "max_tokens": 50, "stream": true,
                "messages": [{"role": "user", "content": "hi"}]})
        .to_string(),
    );
    assert_eq!(resp.status, 200);
    let events = sse_json(&resp.text());
    assert!(resp.text().contains("partial answer"));
    let last = events.last().unwrap();
    assert_eq!(last["type"], "error", "{}", resp.text());
    assert!(
        last["error"]["message"].as_str().unwrap().contains("CRC"),
        "{last}"
    );
    assert!(!resp.text().contains("corrupted"));
    handle.shutdown();
}

/// `CONTENT_LENGTH_EXCEEDS_THRESHOLD` → "prompt is too long" (the text
/// Claude Code reacts to by compacting), in each client's protocol.
#[test]
fn kiro_context_overflow_is_prompt_too_long() {
    let dir = temp_dir("kiro-long");
    let creds = kiro_social_creds(&dir, now_ms() + 3_600_000);
    let mock = Mock::start(|_| {
        Resp::json(
            400,
            json!({"message": "Input is too long.", "reason": "CONTENT_LENGTH_EXCEEDS_THRESHOLD"}),
        )
    });
    let handle = aiproxy::start(kiro_config(&mock, creds)).unwrap();
    let resp = post_json(
        handle.addr(),
        "/v1/messages",
        "",
        &json!({"model": "claude-sonnet-4-5", "max_tokens": 50, "stream": true,
                "messages": [{"role": "user", "content": "very long"}]})
        .to_string(),
    );
    assert_eq!(resp.status, 400);
    let err = resp.json();
    assert_eq!(err["type"], "error");
    assert_eq!(err["error"]["type"], "invalid_request_error");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("prompt is too long")
    );
    let resp = post_json(
        handle.addr(),
        "/v1/chat/completions",
        "",
        &json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "very long"}]})
            .to_string(),
    );
    assert_eq!(resp.status, 400);
    assert!(
        resp.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("prompt is too long")
    );
    handle.shutdown();
}

/// IdC login: a 403 triggers one refresh at the OIDC endpoint with the
/// client registration from the sibling `<clientIdHash>.json`, which is
/// not copied into the credentials file.
#[test]
fn kiro_idc_refreshes_once_on_403() {
    let dir = temp_dir("kiro-idc");
    write_creds(
        &dir,
        "abc123.json",
        &json!({"clientId": "cid", "clientSecret": "csecret", "expiresAt": iso(now_ms() + 86_400_000)}),
    );
    let creds = write_creds(
        &dir,
        "kiro-auth-token.json",
        &json!({"accessToken": "idc-old", "refreshToken": "idc-refresh", "expiresAt": iso(now_ms() + 3_600_000),
                "authMethod": "IdC", "provider": "BuilderId", "region": "us-east-1",
                "idcRegion": "eu-central-1", "clientIdHash": "abc123"}),
    );
    let attempts = Arc::new(AtomicUsize::new(0));
    let a = Arc::clone(&attempts);
    let mock = Mock::start(move |req| {
        if req.path.starts_with("/oidc/") {
            assert_eq!(req.path, "/oidc/eu-central-1/token");
            let b = req.json();
            assert_eq!(b["clientId"], "cid");
            assert_eq!(b["clientSecret"], "csecret");
            assert_eq!(b["grantType"], "refresh_token");
            assert_eq!(b["refreshToken"], "idc-refresh");
            return Resp::json(
                200,
                json!({"accessToken": "idc-new", "refreshToken": "idc-refresh-2", "expiresIn": 3600, "tokenType": "Bearer"}),
            );
        }
        if a.fetch_add(1, Ordering::SeqCst) == 0 {
            return Resp::json(
                403,
                json!({"message": "The bearer token included in the request is invalid."}),
            );
        }
        assert_eq!(req.header("authorization"), Some("Bearer idc-new"));
        assert!(
            req.json().get("profileArn").is_none(),
            "IdC sends no profileArn"
        );
        Resp::eventstream(vec![event(
            "assistantResponseEvent",
            json!({"content": "ok"}),
        )])
    });
    let handle = aiproxy::start(kiro_config(&mock, creds.clone())).unwrap();
    let resp = post_json(
        handle.addr(),
        "/v1/messages",
        "",
        &json!({"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
            .to_string(),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["content"][0]["text"], "ok");
    assert_eq!(mock.count("/oidc/"), 1);
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    let saved = read_creds(&creds);
    assert_eq!(saved["accessToken"], "idc-new");
    assert_eq!(saved["refreshToken"], "idc-refresh-2");
    assert_eq!(saved["clientIdHash"], "abc123");
    assert!(
        saved.get("clientSecret").is_none(),
        "sibling secret not merged"
    );
    #[cfg(unix)]
    assert_eq!(mode(&creds), 0o600);
    let health = get(handle.addr(), "/health").json();
    assert_eq!(
        health["providers"][0]["instances"][0]["credentials"]["auth_method"],
        "idc"
    );
    handle.shutdown();
}

// ----------------------------------------------------------------- qwen-api

fn qwen_config(mock: &Mock, creds: PathBuf) -> Config {
    let mut c = config(ProviderKind::QwenApi);
    c.qwen.oauth_creds_file = Some(creds);
    c.qwen.token_url = format!("{}/api/v1/oauth2/token", mock.url());
    c
}

/// Gemini client → qwen-api, streamed with a tool: the token is expired,
/// so it is refreshed first and the refreshed `resource_url` gives the
/// base URL; the request carries the dummy `ext` tool, and the `ext` call
/// in the answer never reaches the client.
#[test]
fn qwen_streams_to_a_gemini_client_without_ext_calls() {
    let dir = temp_dir("qwen-stream");
    let mock = Mock::start(|req| {
        if req.path == "/api/v1/oauth2/token" {
            let body = req.text();
            assert!(
                body.contains("client_id=f0304373b74a44d2b584a3fb70ca9e56"),
                "{body}"
            );
            assert!(body.contains("refresh_token=qr-1"), "{body}");
            return Resp::json(
                200,
                json!({"access_token": "qa-new", "token_type": "Bearer", "expires_in": 21600,
                       "resource_url": format!("http://{}", req.header("host").unwrap())}),
            );
        }
        assert_eq!(req.path, "/v1/chat/completions");
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "chatcmpl-q", "object": "chat.completion.chunk", "created": 1, "model": "qwen3-coder-plus",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        let mut r = Resp::sse(&[
            chunk(
                json!({"role": "assistant", "content": "Sure."}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_ext", "type": "function",
                "function": {"name": "ext", "arguments": "{}"}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 1, "id": "call_w", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":"}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 1, "function": {"arguments": "\"Paris\"}"}}]}),
                Value::Null,
            ),
            chunk(json!({}), json!("tool_calls")),
            json!({"id": "chatcmpl-q", "object": "chat.completion.chunk", "created": 1, "model": "qwen3-coder-plus",
                   "choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29}}),
        ]);
        r.chunks.push(b"data: [DONE]\n\n".to_vec());
        r
    });
    let creds = write_creds(
        &dir,
        "oauth_creds.json",
        &json!({"access_token": "qa-old", "refresh_token": "qr-1", "token_type": "Bearer",
                "resource_url": "127.0.0.1:1", "expiry_date": now_ms() - 1000}),
    );
    let handle = aiproxy::start(qwen_config(&mock, creds.clone())).unwrap();
    let resp = post_json(
        handle.addr(),
        "/v1beta/models/qwen3-coder-plus:streamGenerateContent?alt=sse",
        "",
        &json!({"contents": [{"role": "user", "parts": [{"text": "Weather in Paris?"}]}],
                "tools": [{"functionDeclarations": [{"name": "get_weather", "description": "Weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]}]})
        .to_string(),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let text = resp.text();
    assert!(!text.contains("\"ext\""), "{text}");
    let chunks = sse_json(&text);
    let calls: Vec<&Value> = chunks
        .iter()
        .flat_map(|c| {
            c["candidates"][0]["content"]["parts"]
                .as_array()
                .into_iter()
                .flatten()
        })
        .filter_map(|p| p.get("functionCall"))
        .collect();
    assert_eq!(calls.len(), 1, "{text}");
    assert_eq!(calls[0]["name"], "get_weather");
    assert_eq!(calls[0]["args"], json!({"city": "Paris"}));

    assert_eq!(mock.count("/api/v1/oauth2/token"), 1);
    let sent = &mock.requests("/v1/chat/completions")[0];
    assert_eq!(sent.header("authorization"), Some("Bearer qa-new"));
    assert_eq!(sent.header("x-dashscope-authtype"), Some("qwen-oauth"));
    assert!(
        sent.header("x-dashscope-useragent")
            .unwrap()
            .starts_with("QwenCode/")
    );
    let body = sent.json();
    assert_eq!(body["model"], "qwen3-coder-plus");
    assert_eq!(body["tools"][0]["function"]["name"], "ext");
    assert_eq!(body["tools"][1]["function"]["name"], "get_weather");
    let saved = read_creds(&creds);
    assert_eq!(saved["access_token"], "qa-new");
    assert_eq!(saved["refresh_token"], "qr-1", "kept when not returned");
    assert_eq!(saved["resource_url"], format!("http://{}", mock.addr));
    #[cfg(unix)]
    assert_eq!(mode(&creds), 0o600);
    handle.shutdown();
}

/// OpenAI client declaring the built-in tools: mapped to DashScope's
/// `enable_search` / `enable_code_interpreter`; a whole answer is then
/// streamed upstream (DashScope requires it) and assembled.
#[test]
fn qwen_maps_builtin_tools_to_dashscope_switches() {
    let dir = temp_dir("qwen-builtins");
    let mock = Mock::start(|req| {
        let b = req.json();
        assert_eq!(b["enable_search"], true);
        assert_eq!(b["enable_code_interpreter"], true);
        assert_eq!(b["enable_thinking"], true);
        assert_eq!(b["stream"], true, "code interpreter needs a stream");
        let names: Vec<&str> = b["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["function"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["ext"]);
        Resp::sse(&[
            json!({"id": "c", "model": "qwen3-coder-plus", "created": 1, "choices": [{"index": 0,
                   "delta": {"role": "assistant", "reasoning_content": "compute", "content": "1"}}]}),
            json!({"id": "c", "choices": [{"index": 0, "delta": {"content": "0460353203"}, "finish_reason": "stop"}]}),
        ])
    });
    let creds = write_creds(
        &dir,
        "oauth_creds.json",
        &json!({"access_token": "qa", "refresh_token": "qr", "resource_url": mock.url(),
                "expiry_date": now_ms() + 3_600_000}),
    );
    let handle = aiproxy::start(qwen_config(&mock, creds)).unwrap();
    let resp = post_json(
        handle.addr(),
        "/v1/chat/completions",
        "",
        &json!({"model": "qwen3-coder-plus", "messages": [{"role": "user", "content": "2^34?"}],
                "tools": [{"type": "web_search"}, {"type": "code_interpreter"}]})
        .to_string(),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v = resp.json();
    assert_eq!(v["choices"][0]["message"]["content"], "10460353203");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    handle.shutdown();
}

/// Expired token and a refresh the token endpoint refuses: a clear error
/// in the client's (Gemini) protocol, the file untouched, /health says why.
#[test]
fn qwen_refresh_failure_is_a_clear_error_and_leaves_the_file() {
    let dir = temp_dir("qwen-fail");
    let mock = Mock::start(|req| {
        assert_eq!(
            req.path, "/api/v1/oauth2/token",
            "no API call without a token"
        );
        Resp::json(
            400,
            json!({"error": "invalid_grant", "error_description": "Refresh token expired"}),
        )
    });
    let creds = write_creds(
        &dir,
        "oauth_creds.json",
        &json!({"access_token": "qa-old", "refresh_token": "qr-dead", "resource_url": mock.url(),
                "expiry_date": now_ms() - 60_000}),
    );
    let before = fs::read(&creds).unwrap();
    let handle = aiproxy::start(qwen_config(&mock, creds.clone())).unwrap();
    let resp = post_json(
        handle.addr(),
        "/v1beta/models/qwen3-coder-plus:generateContent",
        "",
        &json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}).to_string(),
    );
    assert!(resp.status >= 500, "{}", resp.status);
    let err = resp.json();
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("qwen-api"), "{message}");
    assert!(message.contains("Refresh token expired"), "{message}");
    assert!(
        err["error"]["status"].is_string(),
        "Gemini error shape: {err}"
    );
    assert_eq!(fs::read(&creds).unwrap(), before, "file untouched");
    assert!(creds.exists());
    let health = get(handle.addr(), "/health").json();
    let cred = &health["providers"][0]["instances"][0]["credentials"];
    assert_eq!(cred["state"], "expired");
    assert!(cred["last_error"].as_str().unwrap().contains("HTTP 400"));
    // A second request inside the back-off does not call the endpoint again.
    let again = post_json(
        handle.addr(),
        "/v1beta/models/qwen3-coder-plus:generateContent",
        "",
        &json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}).to_string(),
    );
    assert!(again.status >= 500);
    assert_eq!(mock.count("/api/v1/oauth2/token"), 1);
    handle.shutdown();
}

// --------------------------------------------------- single-flight, all three

/// Ten concurrent requests with an expired token make exactly one refresh
/// call, for each provider.
#[test]
fn concurrent_requests_share_one_refresh_per_credential() {
    for kind in [
        ProviderKind::GeminiCli,
        ProviderKind::KiroApi,
        ProviderKind::QwenApi,
    ] {
        let dir = temp_dir("single-flight");
        let refreshes = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&refreshes);
        let mock = Mock::start(move |req| {
            let p = req.path.as_str();
            if p == "/token" || p == "/oauth/token" || p == "/api/v1/oauth2/token" {
                r.fetch_add(1, Ordering::SeqCst);
                return match p {
                    "/oauth/token" => Resp::json(
                        200,
                        json!({"access_token": "generic-new", "expires_in": 3600, "token_type": "Bearer"}),
                    ),
                    _ => Resp::json(
                        200,
                        json!({"access_token": "fresh", "expires_in": 3600, "token_type": "Bearer"}),
                    ),
                };
            }
            match p {
                "/v1internal:generateContent" => Resp::json(
                    200,
                    json!({"response": {"candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]}, "finishReason": "STOP"}]}}),
                ),
                "/generateAssistantResponse" => Resp::eventstream(vec![event(
                    "assistantResponseEvent",
                    json!({"content": "hi"}),
                )]),
                _ => Resp::json(
                    200,
                    json!({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
                           "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}),
                ),
            }
        });
        let expired = now_ms() - 1000;
        let (config, creds, model) = match kind {
            ProviderKind::GeminiCli => {
                let creds = gemini_creds(&dir, "old", expired);
                (
                    gemini_config(&mock, creds.clone(), Some("p")),
                    creds,
                    "gemini-2.5-pro",
                )
            }
            ProviderKind::KiroApi => {
                // The generic OAuth2 form of the feature guide, no token yet.
                let creds = write_creds(
                    &dir,
                    "kiro-creds.json",
                    &json!({"client_id": "kiro-client", "client_secret": "kiro-secret",
                            "token_url": format!("{}/oauth/token", mock.url()), "refresh_token": "kr"}),
                );
                (
                    kiro_config(&mock, creds.clone()),
                    creds,
                    "claude-sonnet-4-5",
                )
            }
            _ => {
                let creds = write_creds(
                    &dir,
                    "oauth_creds.json",
                    &json!({"access_token": "old", "refresh_token": "qr", "resource_url": mock.url(),
                            "expiry_date": expired}),
                );
                (qwen_config(&mock, creds.clone()), creds, "qwen3-coder-plus")
            }
        };
        let handle = aiproxy::start(config).unwrap();
        let addr = handle.addr();
        let clients: Vec<_> = (0..10)
            .map(|i| {
                let body = json!({"model": model, "messages": [{"role": "user", "content": format!("q{i}")}]})
                    .to_string();
                thread::spawn(move || post_json(addr, "/v1/chat/completions", "", &body))
            })
            .collect();
        for c in clients {
            let resp = c.join().unwrap();
            assert_eq!(resp.status, 200, "{kind}: {}", resp.text());
            assert_eq!(resp.json()["choices"][0]["message"]["content"], "hi");
        }
        assert_eq!(refreshes.load(Ordering::SeqCst), 1, "{kind}: one refresh");
        let saved = read_creds(&creds);
        let token = saved
            .get("access_token")
            .or_else(|| saved.get("accessToken"))
            .unwrap();
        assert!(
            token == "fresh" || token == "generic-new",
            "{kind}: {saved}"
        );
        if kind == ProviderKind::KiroApi {
            assert_eq!(saved["client_secret"], "kiro-secret");
            assert!(saved["expires_at"].is_string());
            let sent = mock.requests("/generateAssistantResponse");
            assert!(
                sent.iter()
                    .all(|r| r.header("authorization") == Some("Bearer generic-new"))
            );
        }
        #[cfg(unix)]
        assert_eq!(mode(&creds), 0o600, "{kind}");
        handle.shutdown();
    }
}

/// `/v1/models` lists the provider's models; an unknown model is passed
/// through to the upstream unchanged.
#[test]
fn model_lists_and_unknown_models_pass_through() {
    let dir = temp_dir("models");
    let creds = write_creds(
        &dir,
        "oauth_creds.json",
        &json!({"access_token": "qa", "refresh_token": "qr", "expiry_date": now_ms() + 3_600_000}),
    );
    let mock = Mock::start(|req| {
        Resp::json(
            200,
            json!({"id": "c", "object": "chat.completion", "created": 1, "model": req.json()["model"],
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}),
        )
    });
    let mut c = qwen_config(&mock, creds);
    c.qwen.base_url = Some(mock.url());
    c.qwen.ext_tool = false;
    let handle = aiproxy::start(c).unwrap();
    let models = get(handle.addr(), "/v1/models").json();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"qwen3-coder-plus"), "{ids:?}");
    let resp = post_json(
        handle.addr(),
        "/v1/chat/completions",
        "",
        &json!({"model": "qwen-future-model", "messages": [{"role": "user", "content": "x"}]})
            .to_string(),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let sent = mock.requests("/v1/chat/completions")[0].json();
    assert_eq!(sent["model"], "qwen-future-model");
    assert!(sent.get("tools").is_none(), "ext tool off");
    handle.shutdown();
}

/// A reload that leaves an OAuth instance's settings alone keeps the
/// instance: its refreshed token, its onboarded project and its counters
/// are not lost (a rebuilt one onboards again and counts from zero).
#[test]
fn a_reload_keeps_the_state_of_an_unchanged_oauth_instance() {
    let dir = temp_dir("gemini-reload");
    // Expired: the first request refreshes.
    let creds = gemini_creds(&dir, "ya29.old", now_ms() - 1000);
    let mock = Mock::start(|req| match req.path.as_str() {
        "/token" => google_token_endpoint(req, 1),
        "/v1internal:loadCodeAssist" => Resp::json(
            200,
            json!({"cloudaicompanionProject": "proj-loaded", "currentTier": {"id": "free-tier"}}),
        ),
        "/v1internal:generateContent" => Resp::json(
            200,
            json!({"response": {"candidates": [{"content": {"role": "model", "parts": [{"text": "ok"}]},
                    "finishReason": "STOP"}],
                    "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1, "totalTokenCount": 2}}}),
        ),
        other => panic!("unexpected path {other}"),
    });
    let config = gemini_config(&mock, creds, None);
    let handle = aiproxy::start(config.clone()).unwrap();
    let ask = || {
        post_json(
            handle.addr(),
            "/v1/messages",
            "",
            r#"{"model":"gemini-2.5-pro","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .status
    };
    let instance = || get(handle.addr(), "/health").json()["providers"][0]["instances"][0].clone();
    assert_eq!(ask(), 200);
    assert_eq!(mock.count("/token"), 1);
    assert_eq!(mock.count("/v1internal:loadCodeAssist"), 1);

    // Same settings (another log level only): the instance stays.
    let mut same = config.clone();
    same.log.level = aiproxy::config::LogLevel::Warn;
    handle.reload(&mut || Ok(same.clone()));
    assert_eq!(ask(), 200);
    assert_eq!(
        mock.count("/v1internal:loadCodeAssist"),
        1,
        "the project was looked up again: the instance was rebuilt"
    );
    assert_eq!(instance()["requests"], 2, "counters were reset");
    assert_eq!(instance()["credentials"]["refreshes"], 1);

    // Changed settings (a project given): a new instance.
    let mut changed = config.clone();
    changed.gemini.project_id = Some("proj-given".into());
    handle.reload(&mut || Ok(changed.clone()));
    assert_eq!(instance()["requests"], 0, "a changed instance was kept");
    assert_eq!(ask(), 200);
    assert_eq!(instance()["requests"], 1);
    handle.shutdown();
}
