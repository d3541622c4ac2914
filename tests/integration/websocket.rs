//! The WebSocket API in-process (`aiproxy::start`), bytes on a raw socket:
//! the handshake and its refusals, messages, limits and close codes,
//! draining, and an upstream call stopped when the client leaves.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use aiproxy::config::Secret;
use aiproxy::providers::ProviderKind;
use aiproxy::websocket::client::{self, ServerFrame, opcode};
use aiproxy::{Config, Handle};
use serde_json::Value;

use crate::support::*;
use crate::upstream::*;

const KEY: &str = "ws-test-key";
/// RFC 6455 section 1.3's example key and its accept value.
const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

struct Proxy(Option<Handle>);

impl Proxy {
    fn addr(&self) -> SocketAddr {
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

fn proxy(tweak: impl FnOnce(&mut Config)) -> Proxy {
    let defaults = Config::default();
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 8,
        api_keys: vec![Secret::new(KEY)],
        shutdown_timeout: Duration::from_secs(5),
        log: aiproxy::config::LogConfig {
            level: aiproxy::config::LogLevel::Warn,
            ..defaults.log.clone()
        },
        ..defaults
    };
    tweak(&mut config);
    Proxy(Some(aiproxy::start(config).expect("start")))
}

/// An upgraded connection, read frame by frame.
struct Ws {
    s: TcpStream,
    buf: Vec<u8>,
}

/// The upgrade request for `target` with extra header lines.
fn upgrade_request(target: &str, extra: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {SAMPLE_KEY}\r\n{extra}\r\n"
    )
}

/// Sends the raw upgrade request; the 101 as a connection, else the answer.
fn open_raw(addr: SocketAddr, request: &str) -> Result<Ws, Response> {
    let mut s = connect(addr);
    s.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed during the handshake");
        head.push(byte[0]);
    }
    let text = String::from_utf8(head.clone()).unwrap();
    if text.starts_with("HTTP/1.1 101 ") {
        let lower = text.to_ascii_lowercase();
        assert!(lower.contains("\r\nupgrade: websocket\r\n"), "{text}");
        assert!(lower.contains("\r\nconnection: upgrade\r\n"), "{text}");
        assert!(
            text.contains(&format!("Sec-WebSocket-Accept: {SAMPLE_ACCEPT}\r\n")),
            "{text}"
        );
        return Ok(Ws { s, buf: Vec::new() });
    }
    // Not upgraded: read the rest of the answer as an HTTP response.
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    head.extend(rest);
    let mut replay = std::io::Cursor::new(head);
    Err(read_response_from(&mut replay))
}

fn read_response_from(r: &mut impl Read) -> Response {
    let mut all = Vec::new();
    r.read_to_end(&mut all).unwrap();
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&all[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Response {
        status,
        headers,
        body: all[split..].to_vec(),
    }
}

fn open(addr: SocketAddr) -> Ws {
    open_raw(addr, &upgrade_request(&format!("/ws?token={KEY}"), ""))
        .unwrap_or_else(|r| panic!("not upgraded: {} {}", r.status, r.text()))
}

impl Ws {
    fn send(&mut self, text: &str) {
        self.s.write_all(&client::text(text)).unwrap();
    }

    fn frame(&mut self) -> ServerFrame {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some((frame, used)) = client::parse(&self.buf) {
                self.buf.drain(..used);
                assert!(!frame.masked, "a server frame was masked");
                return frame;
            }
            assert!(Instant::now() < until, "no frame within 10 s");
            let mut chunk = [0u8; 16 * 1024];
            let n = self.s.read(&mut chunk).expect("read a frame");
            assert!(n > 0, "closed without a close frame");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next JSON message.
    fn json(&mut self) -> Value {
        let frame = self.frame();
        assert_eq!(frame.opcode, opcode::TEXT, "{frame:?}");
        serde_json::from_slice(&frame.payload).unwrap()
    }

    /// The close code the server sends, skipping other frames.
    fn close_code(&mut self) -> u16 {
        loop {
            let frame = self.frame();
            if frame.opcode == opcode::CLOSE {
                return frame.close_code().unwrap();
            }
        }
    }
}

fn chat(id: &str, stream: bool) -> String {
    format!(
        r#"{{"type":"request","id":"{id}","model":"mock-small","request":{{"messages":[{{"role":"user","content":"hello {id}"}}]}},"metadata":{{"stream":{stream}}}}}"#
    )
}

#[test]
fn the_handshake_answers_101_with_the_accept_key_and_messages_flow() {
    let p = proxy(|_| {});
    let mut ws = open(p.addr());
    ws.send(r#"{"type":"heartbeat"}"#);
    assert_eq!(ws.json()["type"], "heartbeat");
    ws.send(&chat("1", false));
    let answer = ws.json();
    assert_eq!(
        (answer["type"].as_str(), answer["id"].as_str()),
        (Some("response"), Some("1"))
    );
    assert!(
        answer["data"]["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("hello 1")
    );
    // A clean close is answered and the socket closes.
    ws.s.write_all(&client::frame(
        true,
        opcode::CLOSE,
        &1000u16.to_be_bytes(),
        Some([1, 2, 3, 4]),
    ))
    .unwrap();
    assert_eq!(ws.close_code(), 1000);
    assert!(time_until_closed(&mut ws.s, Duration::from_secs(3)) < Duration::from_secs(2));
}

#[test]
fn every_auth_way_works_and_a_bad_token_gets_401_before_upgrading() {
    let p = proxy(|_| {});
    for (target, header) in [
        (format!("/ws?token={KEY}"), String::new()),
        (format!("/ws?key={KEY}"), String::new()),
        ("/ws".to_owned(), format!("Authorization: Bearer {KEY}\r\n")),
        ("/ws".to_owned(), format!("x-api-key: {KEY}\r\n")),
        ("/ws".to_owned(), format!("x-goog-api-key: {KEY}\r\n")),
    ] {
        assert!(
            open_raw(p.addr(), &upgrade_request(&target, &header)).is_ok(),
            "{target} {header}"
        );
    }
    for target in ["/ws", "/ws?token=wrong"] {
        let r = open_raw(p.addr(), &upgrade_request(target, ""))
            .err()
            .expect("refused");
        assert_eq!(r.status, 401, "{target}");
        assert!(r.text().contains("?token="), "{}", r.text());
    }
}

#[test]
fn rfc_6455_refusals() {
    let p = proxy(|_| {});
    let target = format!("/ws?token={KEY}");
    let old = upgrade_request(&target, "").replace("Version: 13", "Version: 8");
    let r = open_raw(p.addr(), &old).err().unwrap();
    assert_eq!(
        (r.status, r.header("sec-websocket-version")),
        (426, Some("13"))
    );
    let bad_key = upgrade_request(&target, "").replace(SAMPLE_KEY, "c2hvcnQ=");
    assert_eq!(open_raw(p.addr(), &bad_key).err().unwrap().status, 400);
    let no_upgrade = upgrade_request(&target, "").replace("Upgrade: websocket\r\n", "");
    assert_eq!(open_raw(p.addr(), &no_upgrade).err().unwrap().status, 426);
    let post = upgrade_request(&target, "").replacen("GET", "POST", 1);
    assert_eq!(open_raw(p.addr(), &post).err().unwrap().status, 405);
}

#[test]
fn turned_off_it_is_404() {
    let p = proxy(|c| c.websocket.enabled = false);
    let r = open_raw(p.addr(), &upgrade_request(&format!("/ws?token={KEY}"), ""))
        .err()
        .unwrap();
    assert_eq!(r.status, 404);
}

#[test]
fn over_the_connection_bound_the_upgrade_gets_503_with_retry_after() {
    let p = proxy(|c| c.websocket.max_connections = 2);
    let first = open(p.addr());
    let _second = open(p.addr());
    let r = open_raw(p.addr(), &upgrade_request(&format!("/ws?token={KEY}"), ""))
        .err()
        .unwrap();
    assert_eq!((r.status, r.header("retry-after")), (503, Some("1")));
    drop(first);
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        match open_raw(p.addr(), &upgrade_request(&format!("/ws?token={KEY}"), "")) {
            Ok(_) => break,
            Err(r) if r.status == 503 && Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(20)); // poll interval
            }
            Err(r) => panic!("slot not given back: {}", r.status),
        }
    }
}

#[test]
fn without_a_key_only_the_gateways_own_or_listed_origins_may_connect() {
    let p = proxy(|c| {
        c.api_keys.clear();
        c.cors_origins = vec!["http://app.test".into()];
    });
    for (origin, ok) in [
        ("", true),
        ("Origin: http://localhost\r\n", true),
        ("Origin: http://app.test\r\n", true),
        ("Origin: http://evil.test\r\n", false),
    ] {
        let got = open_raw(p.addr(), &upgrade_request("/ws", origin));
        match got {
            Ok(_) => assert!(ok, "{origin}"),
            Err(r) => assert!(!ok && r.status == 403, "{origin}: {}", r.status),
        }
    }
}

#[test]
fn masking_is_required_and_sizes_are_bounded() {
    let p = proxy(|c| {
        c.websocket.max_message_size = 8 * 1024;
        c.websocket.max_frame_size = 4 * 1024;
    });
    let mut ws = open(p.addr());
    ws.s.write_all(&client::frame(true, opcode::TEXT, b"{}", None))
        .unwrap();
    assert_eq!(ws.close_code(), 1002);

    let mut ws = open(p.addr());
    let big = format!(r#"{{"type":"heartbeat","pad":"{}"}}"#, "x".repeat(5000));
    ws.send(&big);
    assert_eq!(
        ws.close_code(),
        1009,
        "a frame over --websocket-max-frame-size"
    );

    let mut ws = open(p.addr());
    let key = Some([3, 1, 4, 1]);
    for i in 0..3 {
        let op = if i == 0 {
            opcode::TEXT
        } else {
            opcode::CONTINUATION
        };
        ws.s.write_all(&client::frame(i == 2, op, &[b' '; 3500], key))
            .unwrap();
    }
    assert_eq!(
        ws.close_code(),
        1009,
        "a message over --websocket-max-message-size"
    );

    let mut ws = open(p.addr());
    ws.s.write_all(&client::frame(true, opcode::TEXT, &[0xc3, 0x28], key))
        .unwrap();
    assert_eq!(ws.close_code(), 1007);
    // The server lives on.
    let mut ws = open(p.addr());
    ws.send(r#"{"type":"heartbeat"}"#);
    assert_eq!(ws.json()["type"], "heartbeat");
}

#[test]
fn a_client_that_does_not_read_is_closed_with_1008() {
    let p = proxy(|c| c.websocket.max_queued_bytes = 64 * 1024);
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&p.addr().into()).unwrap();
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(upgrade_request(&format!("/ws?token={KEY}"), "").as_bytes())
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1);
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    // Heartbeats, each answered, never read: the answers pile up.
    let burst: Vec<u8> = (0..2000)
        .flat_map(|_| client::text(r#"{"type":"heartbeat"}"#))
        .collect();
    let mut writer = s.try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    let mut closed = false;
    while Instant::now() < until {
        if writer.write_all(&burst).is_err() {
            closed = true;
            break;
        }
    }
    assert!(closed, "the server kept a client that never reads");
    // Other clients are served meanwhile.
    assert_eq!(get(p.addr(), "/health").status, 200);
}

#[test]
fn draining_lets_a_stream_finish_then_closes_1001() {
    let mut p = proxy(|c| c.mock.chunk_delay = Duration::from_millis(30));
    let mut ws = open(p.addr());
    ws.send(&chat("s", true));
    assert_eq!(ws.json()["type"], "stream");
    let handle = p.0.take().unwrap();
    let stopper = std::thread::spawn(move || handle.shutdown());
    let mut kinds = Vec::new();
    loop {
        let frame = ws.frame();
        if frame.opcode == opcode::CLOSE {
            assert_eq!(frame.close_code(), Some(1001));
            break;
        }
        let v: Value = serde_json::from_slice(&frame.payload).unwrap();
        kinds.push(v["type"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("stream_end"),
        "{kinds:?}"
    );
    assert!(
        kinds.len() > 5,
        "the stream went on while draining: {kinds:?}"
    );
    assert!(stopper.join().unwrap(), "the drain finished in time");
}

/// A proxy in front of an upstream streaming 500 words 20 ms apart: long
/// enough for a client to leave or cancel in the middle.
fn slow_stream_proxy() -> (MockUpstream, Proxy) {
    let up = MockUpstream::start(|_, _| {
        let words: Vec<&str> = std::iter::repeat_n("w", 500).collect();
        Reply::Sse(openai_stream(&words, Duration::from_millis(20)))
    });
    let p = proxy(|c| {
        c.model_providers = vec![ProviderKind::OpenAiCustom];
        c.openai.api_key = Some(Secret::new("sk-upstream"));
        c.openai.base_url = format!("{}/v1", up.base_url());
    });
    (up, p)
}

#[test]
fn a_closed_socket_stops_its_upstream_call_within_a_second() {
    let (up, p) = slow_stream_proxy();
    let mut ws = open(p.addr());
    ws.send(&chat("up", true).replace("mock-small", "gpt-test"));
    assert_eq!(ws.json()["type"], "stream");
    let closed = Instant::now();
    drop(ws);
    up.client_gone
        .recv_timeout(Duration::from_secs(3))
        .expect("the upstream connection was closed after the client left");
    assert!(
        closed.elapsed() < Duration::from_secs(1),
        "{:?}",
        closed.elapsed()
    );
}

#[test]
fn cancel_stops_the_upstream_call_and_answers_cancelled() {
    let (up, p) = slow_stream_proxy();
    let mut ws = open(p.addr());
    ws.send(&chat("c", true).replace("mock-small", "gpt-test"));
    assert_eq!(ws.json()["type"], "stream");
    ws.send(r#"{"type":"cancel","id":"c"}"#);
    loop {
        let m = ws.json();
        if m["type"] == "error" {
            assert_eq!(
                (m["error"]["code"].as_str(), m["id"].as_str()),
                (Some("cancelled"), Some("c"))
            );
            break;
        }
        assert_eq!(m["type"], "stream", "{m}");
    }
    up.client_gone
        .recv_timeout(Duration::from_secs(3))
        .expect("the upstream call stopped");
    // The connection is still usable.
    ws.send(r#"{"type":"heartbeat"}"#);
    assert_eq!(ws.json()["type"], "heartbeat");
}
