use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use crossbeam_channel::{Receiver, Sender};

use super::*;
use crate::providers::read_wait;

/// What the scripted upstream does with its n-th request (counted over
/// all connections): the bytes to answer, and whether to close after.
type Script = dyn Fn(usize) -> (Vec<u8>, bool) + Send + Sync;

struct Upstream {
    url: String,
    accepted: Arc<AtomicUsize>,
    /// Each request as received, head and body.
    requests: Receiver<Vec<u8>>,
}

fn upstream(script: impl Fn(usize) -> (Vec<u8>, bool) + Send + Sync + 'static) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/v1/chat/completions",
        listener.local_addr().unwrap()
    );
    let accepted = Arc::new(AtomicUsize::new(0));
    let (tx, requests) = crossbeam_channel::unbounded();
    let script: Arc<Script> = Arc::new(script);
    let served = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            count.fetch_add(1, Ordering::SeqCst);
            let (script, served, tx) = (Arc::clone(&script), Arc::clone(&served), tx.clone());
            thread::spawn(move || serve(stream, &*script, &served, &tx));
        }
    });
    Upstream {
        url,
        accepted,
        requests,
    }
}

fn serve(mut stream: TcpStream, script: &Script, served: &AtomicUsize, tx: &Sender<Vec<u8>>) {
    loop {
        let mut request = Vec::new();
        let mut byte = [0u8; 1];
        while !request.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).map_or(true, |n| n == 0) {
                return;
            }
            request.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&request).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map_or(0, |v| v.trim().parse().unwrap());
        let mut body = vec![0; length];
        stream.read_exact(&mut body).unwrap();
        request.extend(body);
        let _ = tx.send(request);
        let (answer, close) = script(served.fetch_add(1, Ordering::SeqCst));
        if stream.write_all(&answer).is_err() || close {
            return;
        }
    }
}

fn client(tweak: impl FnOnce(&mut Config)) -> Arc<PlainClient> {
    let mut config = Config::default();
    tweak(&mut config);
    Arc::new(PlainClient::new(&config, CachingResolver::default(), 4))
}

fn post(client: &Arc<PlainClient>, url: &str, body: &[u8]) -> UpstreamResponse {
    let target = Target::post(url).unwrap();
    client
        .post(&target, &[("Content-Type", "application/json")], &[], body)
        .unwrap_or_else(|e| panic!("{e:?}"))
}

fn read_all(resp: UpstreamResponse) -> String {
    let mut text = String::new();
    let mut body = resp.body;
    body.read_to_string(&mut text).unwrap();
    text
}

fn length_answer(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn requests_carry_the_head_and_body_and_reuse_one_connection() {
    let up = upstream(|n| (length_answer(&format!("answer {n}")), false));
    let c = client(|_| {});
    let target = Target::post(&up.url).unwrap();
    let forwarded = [("anthropic-beta", "tools-1".to_owned())];
    for n in 0..3 {
        let resp = c
            .post(
                &target,
                &[("Authorization", "Bearer k")],
                &forwarded,
                b"{\"a\":1}",
            )
            .unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.content_length, Some(8));
        assert_eq!(read_all(resp), format!("answer {n}"));
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
    let request = String::from_utf8(up.requests.recv().unwrap()).unwrap();
    let authority = up.url.split('/').nth(2).unwrap();
    assert_eq!(
        request,
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: {authority}\r\n\
             User-Agent: aiproxy/{}\r\nAccept-Encoding: identity\r\n\
             Authorization: Bearer k\r\nanthropic-beta: tools-1\r\n\
             Content-Length: 7\r\n\r\n{{\"a\":1}}",
            env!("CARGO_PKG_VERSION")
        )
    );
}

#[test]
fn a_large_body_goes_out_whole() {
    let up = upstream(|_| (length_answer("ok"), false));
    let c = client(|_| {});
    let body = vec![b'x'; INLINE_BODY * 3 + 17];
    assert_eq!(read_all(post(&c, &up.url, &body)), "ok");
    let request = up.requests.recv().unwrap();
    assert!(request.ends_with(&body));
}

#[test]
fn chunked_answers_are_decoded_and_the_connection_kept() {
    let up = upstream(|_| {
        let answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
                      5;x=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
        (answer.as_bytes().to_vec(), false)
    });
    let c = client(|_| {});
    for _ in 0..2 {
        let resp = post(&c, &up.url, b"{}");
        assert_eq!(resp.content_length, None);
        assert_eq!(read_all(resp), "hello world");
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
}

/// Fed a byte at a time and read three bytes at a time, the decoder
/// gives the same body.
#[test]
fn chunks_split_anywhere_decode_the_same() {
    let wire = b"5;ext\r\nhello\r\nA\r\n world!!!!\r\n0\r\nT: v\r\n\r\n";
    let mut framing = Framing::Chunked(Chunk::Size);
    let mut buf = Buf::default();
    let mut body = Vec::new();
    let mut ended = false;
    for &byte in wire {
        room(&mut buf).unwrap()[0] = byte;
        buf.appended(1);
        loop {
            let mut out = [0u8; 3];
            match framing.decode(&mut buf, &mut out).unwrap() {
                Some(0) => {
                    ended = true;
                    break;
                }
                Some(n) => body.extend_from_slice(&out[..n]),
                None => break,
            }
        }
    }
    assert!(ended);
    assert!(buf.is_empty());
    assert_eq!(body, b"hello world!!!!");
}

#[test]
fn bad_chunks_are_errors() {
    for wire in [
        &b"zz\r\n"[..],
        b"5\r\nhelloXX\r\n",
        b"10000000000000000\r\n",
        &[b'1'; MAX_CHUNK_LINE + 2],
    ] {
        let mut framing = Framing::Chunked(Chunk::Size);
        let mut buf = Buf::default();
        let mut rest = wire;
        while !rest.is_empty() {
            let room = room(&mut buf).unwrap();
            let n = room.len().min(rest.len());
            room[..n].copy_from_slice(&rest[..n]);
            buf.appended(n);
            rest = &rest[n..];
        }
        let mut out = [0u8; 64];
        let mut result = framing.decode(&mut buf, &mut out);
        while let Ok(Some(n)) = result
            && n > 0
        {
            result = framing.decode(&mut buf, &mut out);
        }
        assert!(result.is_err(), "{:?}", String::from_utf8_lossy(wire));
    }
}

#[test]
fn an_answer_without_length_is_read_to_the_close_and_not_kept() {
    let up = upstream(|_| (b"HTTP/1.1 200 OK\r\n\r\nuntil the end".to_vec(), true));
    let c = client(|_| {});
    for _ in 0..2 {
        assert_eq!(read_all(post(&c, &up.url, b"{}")), "until the end");
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
}

#[test]
fn connection_close_and_http_1_0_are_not_kept() {
    let up = upstream(|n| {
        let answer = if n % 2 == 0 {
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 2\r\n\r\nok"
        } else {
            "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"
        };
        (answer.as_bytes().to_vec(), false)
    });
    let c = client(|_| {});
    for _ in 0..4 {
        assert_eq!(read_all(post(&c, &up.url, b"{}")), "ok");
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 4);
}

#[test]
fn interim_answers_are_skipped_and_retry_after_kept() {
    let up = upstream(|_| {
        let answer = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n\
                      HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 4\r\n\r\nslow";
        (answer.as_bytes().to_vec(), false)
    });
    let resp = post(&client(|_| {}), &up.url, b"{}");
    assert_eq!(resp.status, 429);
    assert_eq!(resp.retry_after.as_deref(), Some("7"));
    assert_eq!(read_all(resp), "slow");
}

fn post_err(client: &Arc<PlainClient>, url: &str) -> UpstreamError {
    let target = Target::post(url).unwrap();
    match client.post(&target, &[], &[], b"{}") {
        Ok(resp) => panic!("answered {}", resp.status),
        Err(e) => e,
    }
}

#[test]
fn malformed_endless_and_conflicting_heads_are_connect_errors() {
    let endless = {
        let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
        while head.len() <= MAX_HEAD {
            head.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
        }
        head
    };
    for answer in [
        b"HTTP/1.1 OK\r\n\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok".to_vec(),
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec(),
        endless,
    ] {
        let up = upstream(move |_| (answer.clone(), true));
        let err = post_err(&client(|_| {}), &up.url);
        assert!(matches!(err, UpstreamError::Connect(_)), "{err:?}");
    }
}

#[test]
fn a_silent_upstream_times_out_and_a_refused_connect_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let c = client(|config| config.upstream.timeout = Duration::from_millis(200));
    let started = Instant::now();
    let err = post_err(&c, &url);
    assert!(matches!(err, UpstreamError::Timeout(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(listener);
    let err = post_err(&c, &url);
    assert!(matches!(err, UpstreamError::Connect(_)), "{err:?}");
}

#[test]
fn a_header_value_with_a_line_break_is_refused_before_connecting() {
    let up = upstream(|_| (length_answer("ok"), false));
    let target = Target::post(&up.url).unwrap();
    let forwarded = [("anthropic-beta", "x\r\nX-Injected: 1".to_owned())];
    let result = client(|_| {}).post(&target, &[], &forwarded, b"{}");
    assert!(matches!(result, Err(UpstreamError::Connect(_))));
    assert_eq!(up.accepted.load(Ordering::SeqCst), 0);
}

#[test]
fn a_pooled_connection_the_upstream_closed_is_replaced() {
    // The upstream closes the first connection after its answer.
    let up = upstream(|n| (length_answer(["first", "second"][n.min(1)]), n == 0));
    let c = client(|_| {});
    let shard = http::thread_shard() % c.shards.len();
    assert_eq!(read_all(post(&c, &up.url, b"{}")), "first");
    // Ready once the close reached the idle connection.
    let closed = || {
        let idle = c.shards[shard].lock().unwrap();
        idle.len() == 1 && !crate::net::is_quiet(&idle[0].stream)
    };
    let until = Instant::now() + Duration::from_secs(5);
    while !closed() {
        assert!(Instant::now() < until, "the upstream's close never arrived");
        thread::yield_now();
    }
    assert_eq!(read_all(post(&c, &up.url, b"{}")), "second");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
}

#[test]
fn a_body_dropped_before_its_end_closes_its_connection() {
    let up = upstream(|_| (length_answer(&"x".repeat(100_000)), false));
    let c = client(|_| {});
    let mut body = post(&c, &up.url, b"{}").body;
    let mut some = [0u8; 10];
    body.read_exact(&mut some).unwrap();
    drop(body);
    assert_eq!(read_all(post(&c, &up.url, b"{}")).len(), 100_000);
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
}

/// The plain client's bodies keep the relay's contract
/// (`read_wait::check_resumable_body`).
#[test]
fn a_body_read_that_timed_out_resumes_where_it_was() {
    let c = client(|_| {});
    read_wait::check_resumable_body(|addr| post(&c, &format!("http://{addr}/"), b"{}").body);
}

/// With many waiting, waits hold no buffer; answers still arrive whole.
#[test]
fn lean_waits_read_whole_answers() {
    let up = upstream(|n| {
        let answer = if n == 0 {
            length_answer(&"y".repeat(10_000))
        } else {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n".to_vec()
        };
        (answer, false)
    });
    let mut c = client(|_| {});
    Arc::get_mut(&mut c).unwrap().lean_above = 0;
    assert_eq!(read_all(post(&c, &up.url, b"{}")), "y".repeat(10_000));
    assert_eq!(read_all(post(&c, &up.url, b"{}")), "abc");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
}

#[test]
fn only_plain_http_urls_are_targets() {
    assert!(Target::post("https://api.openai.com/v1/chat/completions").is_none());
    assert!(Target::post("not a url").is_none());
    let target = Target::post("http://127.0.0.1:9/v1/messages?beta=true").unwrap();
    assert!(
        target
            .head
            .starts_with(b"POST /v1/messages?beta=true HTTP/1.1\r\nHost: 127.0.0.1:9\r\n")
    );
}
