//! The request grammar on the wire (RFC 9112, issue 10): one Host on
//! HTTP/1.1, the absolute and asterisk target forms, Expect, and chunked
//! bodies held to the same rules as heads. The whole gateway in-process
//! with its default mock provider, driven over raw sockets.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use aiproxy::{Config, Handle};

use crate::support::*;

const CHAT: &str = r#"{"model":"gpt-test","messages":[{"role":"user","content":"hi"}]}"#;

struct Gateway(Option<Handle>);

impl Gateway {
    fn start() -> Gateway {
        let defaults = Config::default();
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            workers: 4,
            shutdown_timeout: Duration::from_secs(2),
            log: aiproxy::config::LogConfig {
                level: aiproxy::config::LogLevel::Warn,
                ..defaults.log.clone()
            },
            ..defaults
        };
        Gateway(Some(aiproxy::start(config).expect("start")))
    }

    fn addr(&self) -> SocketAddr {
        self.0.as_ref().unwrap().addr()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.shutdown();
        }
    }
}

/// Everything the server sends until it closes (error answers close).
fn raw_answer(addr: SocketAddr, raw: &[u8]) -> String {
    let mut stream = connect(addr);
    stream.write_all(raw).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// A chat request whose body is `framed`, sent chunked.
fn chunked_chat(framed: &[u8]) -> Vec<u8> {
    let mut raw = b"POST /mock/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n\
        Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
        Connection: close\r\n\r\n"
        .to_vec();
    raw.extend_from_slice(framed);
    raw
}

#[test]
fn http11_request_without_host_gets_400() {
    let g = Gateway::start();
    let resp = roundtrip(
        g.addr(),
        b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.status, 400);
    assert!(
        resp.text().contains("missing Host header"),
        "{}",
        resp.text()
    );
    let resp = roundtrip(g.addr(), b"GET /health HTTP/1.0\r\n\r\n");
    assert_eq!(resp.status, 200, "HTTP/1.0 needs no Host");
}

#[test]
fn request_with_two_host_lines_gets_400() {
    let g = Gateway::start();
    let resp = roundtrip(
        g.addr(),
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.status, 400);
    assert!(
        resp.text().contains("more than one Host"),
        "{}",
        resp.text()
    );
}

#[test]
fn expect_other_than_100_continue_gets_417_without_reading_the_body() {
    let g = Gateway::start();
    // The body is announced but never sent: the answer must not wait for it.
    let answer = raw_answer(
        g.addr(),
        b"POST /mock/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n\
          Content-Type: application/json\r\nExpect: foo\r\nContent-Length: 100\r\n\r\n",
    );
    assert!(
        answer.starts_with("HTTP/1.1 417 Expectation Failed\r\n"),
        "{answer}"
    );
    assert!(answer.contains("100-continue"), "{answer}");
}

#[test]
fn chunked_body_with_a_bare_lf_gets_400() {
    let g = Gateway::start();
    let good = format!("{:x}\r\n{CHAT}\r\n0\r\n\r\n", CHAT.len());
    let resp = roundtrip(g.addr(), &chunked_chat(good.as_bytes()));
    assert_eq!(
        resp.status,
        200,
        "strict framing is served: {}",
        resp.text()
    );

    for framed in [
        format!("{:x}\n{CHAT}\r\n0\r\n\r\n", CHAT.len()),
        format!("{:x}\r\n{CHAT}\n0\r\n\r\n", CHAT.len()),
        format!("{:x}\r\n{CHAT}\r\n0\n\n", CHAT.len()),
    ] {
        let resp = roundtrip(g.addr(), &chunked_chat(framed.as_bytes()));
        assert_eq!(resp.status, 400, "{framed:?}");
    }
}

#[test]
fn chunked_body_with_bad_size_or_extension_gets_400() {
    let g = Gateway::start();
    for framed in [
        format!(" {:x}\r\n{CHAT}\r\n0\r\n\r\n", CHAT.len()),
        format!("{:x}\x0b\r\n{CHAT}\r\n0\r\n\r\n", CHAT.len()),
        format!("{:x};a\0b\r\n{CHAT}\r\n0\r\n\r\n", CHAT.len()),
        format!("{:x};a=\"x\ry\"\r\n{CHAT}\r\n0\r\n\r\n", CHAT.len()),
        format!("{:x}\r\n{CHAT}\r\n0\r\nX-T : 1\r\n\r\n", CHAT.len()),
    ] {
        let resp = roundtrip(g.addr(), &chunked_chat(framed.as_bytes()));
        assert_eq!(resp.status, 400, "{framed:?}");
    }
    let framed = format!(
        "{:x} ; a = \"b;c\"\r\n{CHAT}\r\n0\r\nX-T: 1\r\n\r\n",
        CHAT.len()
    );
    let resp = roundtrip(g.addr(), &chunked_chat(framed.as_bytes()));
    assert_eq!(
        resp.status, 200,
        "extensions and trailers by the grammar pass"
    );
}

#[test]
fn chunk_extension_flood_is_cut_off() {
    let g = Gateway::start();
    // 4 KiB of extension on each one-byte chunk: refused within 64 KiB
    // of extensions, long before the (bounded) 1 MiB of input is sent.
    let ext = "e".repeat(4000);
    let mut framed = String::new();
    for _ in 0..256 {
        framed.push_str(&format!("1;{ext}\r\nx\r\n"));
    }
    framed.push_str("0\r\n\r\n");
    let mut stream = connect(g.addr());
    // The server answers and closes while the client is still writing.
    let _ = stream.write_all(&chunked_chat(framed.as_bytes()));
    assert_eq!(read_response(&mut stream).status, 400);
}

#[test]
fn absolute_form_target_is_served() {
    let g = Gateway::start();
    let resp = roundtrip(
        g.addr(),
        b"GET http://127.0.0.1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
}

#[test]
fn options_asterisk_is_answered() {
    let g = Gateway::start();
    let resp = roundtrip(
        g.addr(),
        b"OPTIONS * HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert!((200..300).contains(&resp.status), "{}", resp.status);
    let resp = roundtrip(
        g.addr(),
        b"GET * HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.status, 400);
}

#[test]
fn http10_connection_is_closed_after_a_chunked_body() {
    let g = Gateway::start();
    let mut stream = connect(g.addr());
    let framed = format!("{:x}\r\n{CHAT}\r\n0\r\n\r\n", CHAT.len());
    let mut raw = b"POST /mock/v1/chat/completions HTTP/1.0\r\nContent-Type: application/json\r\n\
        Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
        .to_vec();
    raw.extend_from_slice(framed.as_bytes());
    stream.write_all(&raw).unwrap();
    assert_eq!(read_response(&mut stream).status, 200);
    assert!(
        time_until_closed(&mut stream, Duration::from_secs(5)) < Duration::from_secs(5),
        "HTTP/1.0 connection kept after Transfer-Encoding"
    );
}
