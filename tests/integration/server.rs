//! The HTTP/1.1 server on its own, with test handlers: limits, deadlines,
//! keep-alive, streaming, panics and draining. These are the failure modes
//! that ruled out tiny_http.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use aiproxy::server::{Handler, Rejection, Request, Responder, Server, Settings};
use crossbeam_channel::{Receiver, Sender};

use crate::support::*;

/// Answers by path: `/echo` echoes the body, `/panic` panics, `/sse`
/// streams three events 200 ms apart, `/block` waits for a release.
struct TestHandler {
    release: Receiver<()>,
    entered: Sender<()>,
    served: AtomicUsize,
}

impl Handler for TestHandler {
    fn screen(&self, head: &aiproxy::server::Head, _peer: SocketAddr) -> Option<Rejection> {
        (head.path() == "/refused").then(|| Rejection {
            status: 403,
            headers: vec![("Content-Type", "text/plain".to_string())],
            body: b"refused".to_vec(),
            route: "/refused",
        })
    }

    fn handle(&self, req: &Request, out: &mut Responder<'_>) {
        self.served.fetch_add(1, Ordering::SeqCst);
        match req.path() {
            "/echo" => {
                let _ = out.send(
                    200,
                    &[("Content-Type", "application/octet-stream")],
                    &req.body,
                );
            }
            "/panic" => panic!("test handler panics on purpose"),
            "/held-panic" => {
                out.open_stream_held(200, &[("Content-Type", "text/event-stream")])
                    .unwrap();
                panic!("test handler panics before its first event on purpose");
            }
            "/held" => {
                // The head waits for the first event; the second comes
                // later, flushed on its own.
                out.open_stream_held(200, &[("Content-Type", "text/event-stream")])
                    .unwrap();
                out.send_chunk(b"data: 0\n\n").unwrap();
                thread::sleep(Duration::from_millis(200));
                out.end_stream_with(b"data: 1\n\n").unwrap();
            }
            "/held-flush" => {
                // Flushed before waiting: the head is not held up by it.
                out.open_stream_held(200, &[("Content-Type", "text/event-stream")])
                    .unwrap();
                out.flush_stream().unwrap();
                thread::sleep(Duration::from_millis(300));
                out.end_stream_with(b"data: 0\n\n").unwrap();
            }
            "/sse" => {
                let mut w = out
                    .start_stream(200, &[("Content-Type", "text/event-stream")])
                    .unwrap();
                for i in 0..3 {
                    if i > 0 {
                        thread::sleep(Duration::from_millis(200));
                    }
                    w.send(format!("data: {i}\n\n").as_bytes()).unwrap();
                }
                w.finish().unwrap();
            }
            "/block" => {
                let _ = self.entered.send(());
                let _ = self.release.recv_timeout(Duration::from_secs(10));
                let _ = out.send(200, &[], b"released");
            }
            _ => {
                let _ = out.send(200, &[], b"ok");
            }
        }
    }
}

struct TestServer {
    server: Option<Server>,
    addr: SocketAddr,
    release: Sender<()>,
    entered: Receiver<()>,
    handler: Arc<TestHandler>,
}

impl TestServer {
    fn start(tweak: impl FnOnce(&mut Settings)) -> TestServer {
        let mut settings = Settings {
            workers: 4,
            queue_capacity: 4,
            max_body_bytes: 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            worker_stack_bytes: 256 * 1024,
            ..Settings::default()
        };
        tweak(&mut settings);
        let (release, release_rx) = crossbeam_channel::unbounded();
        let (entered_tx, entered) = crossbeam_channel::unbounded();
        let handler = Arc::new(TestHandler {
            release: release_rx,
            entered: entered_tx,
            served: AtomicUsize::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = Server::start(listener, settings, handler.clone()).unwrap();
        let addr = server.addr();
        TestServer {
            server: Some(server),
            addr,
            release,
            entered,
            handler,
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        for _ in 0..16 {
            let _ = self.release.send(());
        }
        if let Some(server) = self.server.take() {
            server.shutdown(Duration::from_secs(5));
        }
    }
}

#[test]
fn huge_content_length_is_rejected_with_413_and_flat_memory() {
    let t = TestServer::start(|_| {});
    let before = rss_kib();
    let resp = roundtrip(
        t.addr,
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000000000\r\n\r\nabc",
    );
    assert_eq!(resp.status, 413);
    assert!(
        rss_kib() < before + 20 * 1024,
        "RSS grew from {before} KiB to {} KiB",
        rss_kib()
    );
    assert_eq!(get(t.addr, "/").status, 200, "server still serves");
}

#[test]
fn chunked_body_over_the_limit_is_rejected_with_413() {
    let t = TestServer::start(|s| s.max_body_bytes = 10);
    let resp = roundtrip(
        t.addr,
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n01234567\r\n8\r\n89abcdef\r\n0\r\n\r\n",
    );
    assert_eq!(resp.status, 413);
}

#[test]
fn chunked_body_within_the_limit_is_decoded() {
    let t = TestServer::start(|_| {});
    let resp = roundtrip(
        t.addr,
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"hello world");
}

#[test]
fn megabyte_header_line_gets_431() {
    let t = TestServer::start(|_| {});
    let mut stream = connect(t.addr);
    let mut raw = b"GET / HTTP/1.1\r\nX-Huge: ".to_vec();
    raw.extend(std::iter::repeat_n(b'a', 1024 * 1024));
    raw.extend_from_slice(b"\r\n\r\n");
    // The server answers before the client finished writing; a write error
    // then is expected, the answer must still be readable.
    let _ = stream.write_all(&raw);
    assert_eq!(read_response(&mut stream).status, 431);
    assert_eq!(get(t.addr, "/").status, 200);
}

#[test]
fn too_many_header_fields_get_431() {
    let t = TestServer::start(|_| {});
    let mut raw = String::from("GET / HTTP/1.1\r\nHost: localhost\r\n");
    for i in 0..150 {
        raw.push_str(&format!("X-F{i}: v\r\n"));
    }
    raw.push_str("\r\n");
    assert_eq!(roundtrip(t.addr, raw.as_bytes()).status, 431);
}

#[test]
fn slow_header_client_is_closed_at_the_deadline() {
    let t = TestServer::start(|s| s.header_timeout = Duration::from_millis(500));
    let mut stream = connect(t.addr);
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
        .unwrap();
    let started = Instant::now();
    let resp = read_response(&mut stream);
    assert_eq!(resp.status, 408);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400),
        "closed too early: {waited:?}"
    );
    assert!(time_until_closed(&mut stream, Duration::from_secs(5)) < Duration::from_secs(4));
}

#[test]
fn idle_connections_do_not_hold_workers() {
    let t = TestServer::start(|s| s.workers = 2);
    let idle: Vec<_> = (0..200).map(|_| connect(t.addr)).collect();
    let started = Instant::now();
    let resp = get(t.addr, "/");
    assert_eq!(resp.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    drop(idle);
}

#[test]
fn panicking_handler_answers_500_and_the_worker_lives_on() {
    let t = TestServer::start(|s| s.workers = 1);
    for _ in 0..3 {
        assert_eq!(get(t.addr, "/panic").status, 500);
    }
    assert_eq!(get(t.addr, "/").status, 200);
}

#[test]
fn a_held_stream_head_goes_out_with_the_first_event_or_on_flush() {
    let t = TestServer::start(|s| s.workers = 1);
    // A handler that panics before its first event: the head was never
    // sent, so the client still gets a whole 500, and the worker lives on.
    assert_eq!(get(t.addr, "/held-panic").status, 500);

    // Head and first event in one write: the first read holds both, and
    // the second event (200 ms later) is not in it.
    let mut stream = connect(t.addr);
    stream
        .write_all(b"GET /held HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).unwrap();
    let first = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{first}");
    assert!(first.ends_with("\r\n\r\n9\r\ndata: 0\n\n\r\n"), "{first:?}");
    let rest = read_response_rest(&mut stream);
    assert!(rest.ends_with("data: 1\n\n\r\n0\r\n\r\n"), "{rest:?}");

    // Flushed: the head arrives before the handler's 300 ms wait ends.
    let mut stream = connect(t.addr);
    let asked = Instant::now();
    stream
        .write_all(b"GET /held-flush HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let n = stream.read(&mut buf).unwrap();
    let head_after = asked.elapsed();
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "only the head: {head:?}");
    assert!(
        head_after < Duration::from_millis(250),
        "head after {head_after:?}"
    );
    let rest = read_response_rest(&mut stream);
    assert!(rest.ends_with("data: 0\n\n\r\n0\r\n\r\n"), "{rest:?}");
    assert_eq!(get(t.addr, "/").status, 200);
}

/// What follows on `stream` until the end of a chunked body.
fn read_response_rest(stream: &mut std::net::TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.ends_with(b"0\r\n\r\n") {
        let n = stream.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "closed before the end: {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(seen).unwrap()
}

#[test]
fn keep_alive_and_pipelined_requests_are_answered_in_order() {
    let t = TestServer::start(|_| {});
    let mut stream = connect(t.addr);
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\none\
              POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\ntwo",
        )
        .unwrap();
    assert_eq!(read_response(&mut stream).body, b"one");
    assert_eq!(read_response(&mut stream).body, b"two");
    stream
        .write_all(b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut stream).body, b"ok");
}

/// A connection stays registered with the poller while a worker serves
/// its request, and the poller ignores what it hears of it meanwhile: the
/// next request, or the client's close, sent during that time must still
/// be seen once the worker gives the connection back.
#[test]
fn input_sent_while_a_request_is_served_is_seen_after_it() {
    let t = TestServer::start(|_| {});
    let mut stream = connect(t.addr);
    for _ in 0..3 {
        stream
            .write_all(b"GET /block HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        t.entered.recv_timeout(Duration::from_secs(5)).unwrap();
        stream
            .write_all(b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        // Not synchronisation: the test holds either way, and the pause
        // makes it likely that the poller hears of the input before the
        // worker is done.
        thread::sleep(Duration::from_millis(20));
        t.release.send(()).unwrap();
        assert_eq!(read_response(&mut stream).body, b"released");
        assert_eq!(read_response(&mut stream).body, b"ok");
    }
    stream
        .write_all(b"GET /block HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    t.entered.recv_timeout(Duration::from_secs(5)).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    thread::sleep(Duration::from_millis(20));
    t.release.send(()).unwrap();
    assert_eq!(read_response(&mut stream).body, b"released");
    // The server closes its side once it sees the client's end: well
    // before the 60 s idle timeout, and within the read timeout.
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .expect("closed, not timed out");
    assert!(rest.is_empty(), "{rest:?}");
}

/// The poller reads a socket a buffer at a time, and edge-triggered epoll
/// announces input once: a request that ends exactly where a full read
/// ends leaves the next one in the socket, unannounced. Its connection
/// must go back to the poller with the registration renewed (which
/// reports input already there), or that request waits out the idle
/// timeout.
#[test]
fn a_request_ending_where_a_full_read_ends_does_not_strand_the_next() {
    // The poller's read buffer.
    const READ: usize = 16 * 1024;
    // One worker: busy answering, it never waits on the connection itself
    // (see `keep_alive`), so the poller reads every request.
    let t = TestServer::start(|s| s.workers = 1);
    let head = |len: usize| {
        format!("POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len}\r\n\r\n")
    };
    let mut body_len = READ - head(0).len();
    while head(body_len).len() + body_len > READ {
        body_len -= 1;
    }
    assert_eq!(head(body_len).len() + body_len, READ);
    let mut raw = head(body_len).into_bytes();
    raw.resize(READ, b'a');
    raw.extend_from_slice(b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let mut stream = connect(t.addr);
    // Both requests are in the socket before the poller reads either: it
    // does not read a connection a worker has.
    stream
        .write_all(b"GET /block HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    t.entered.recv_timeout(Duration::from_secs(5)).unwrap();
    stream.write_all(&raw).unwrap();
    t.release.send(()).unwrap();
    assert_eq!(read_response(&mut stream).body, b"released");
    assert_eq!(read_response(&mut stream).body.len(), body_len);
    assert_eq!(read_response(&mut stream).body, b"ok");
}

/// A worker that answered on a keep-alive connection reads the next
/// request itself when it comes at once, else the poller does: every way a
/// next request can arrive must be answered alike on both paths.
#[test]
fn next_requests_are_answered_alike_at_once_later_or_in_pieces() {
    let t = TestServer::start(|_| {});
    let echo = |stream: &mut std::net::TcpStream, body: &str| {
        let raw = format!(
            "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(raw.as_bytes()).unwrap();
        read_response(stream).text()
    };
    let mut stream = connect(t.addr);
    // Back to back: the answering worker is still there to read it.
    for i in 0..20 {
        assert_eq!(
            echo(&mut stream, &format!("at once {i}")),
            format!("at once {i}")
        );
    }
    // Long after the answer: the poller has the connection by then.
    thread::sleep(Duration::from_millis(50));
    assert_eq!(echo(&mut stream, "later"), "later");
    // A head at once, its body well after it.
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\nfirst")
        .unwrap();
    thread::sleep(Duration::from_millis(50));
    stream.write_all(b"-half").unwrap();
    assert_eq!(read_response(&mut stream).text(), "first-half");
    // A client that waits for `100 Continue` right after an answer.
    assert_eq!(echo_after_continue(&mut stream).text(), "body");
    // A chunked body at once.
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut stream).text(), "abc");
    // Screening still comes first, at the head: refused, answered and
    // closed without the announced body ever being sent.
    stream
        .write_all(b"POST /refused HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n")
        .unwrap();
    let refused = read_response(&mut stream);
    assert_eq!((refused.status, refused.text().as_str()), (403, "refused"));
    assert!(time_until_closed(&mut stream, Duration::from_secs(5)) < Duration::from_secs(5));
    // A malformed head right after an answer gets the poller's 400.
    let mut stream = connect(t.addr);
    assert_eq!(echo(&mut stream, "one"), "one");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost localhost\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut stream).status, 400);
}

/// A keep-alive connection its worker does not wait on goes back to the
/// poller without waking it (the worker registers it itself): the poller
/// still counts it idle, serves its next request when it comes, and
/// closes it at its idle deadline, counted from the answer.
#[test]
fn a_connection_given_back_quietly_is_served_counted_and_timed_out() {
    let t = TestServer::start(|s| s.idle_timeout = Duration::from_millis(800));
    let server = t.server.as_ref().unwrap();
    let mut stream = connect(t.addr);
    for round in 0..3 {
        // The next request comes after the answering worker stopped
        // waiting for it, but well before the poller's next tick: only
        // its arrival tells the poller (and finds the connection there).
        for _ in 0..5 {
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .unwrap();
            assert_eq!(read_response(&mut stream).text(), "ok", "round {round}");
            thread::sleep(Duration::from_millis(5));
        }
        // Nothing else happens on the server: only its tick can show the
        // poller that the connection is back.
        assert!(
            eventually(Duration::from_secs(2), || server.idle_connections() == 1),
            "round {round}: the poller never took the connection back"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let answered = Instant::now();
    let closed = time_until_closed(&mut stream, Duration::from_secs(10));
    let after = answered.elapsed();
    assert!(
        closed >= Duration::from_millis(500) && after < Duration::from_secs(3),
        "closed {after:?} after the last answer, idle timeout 800 ms"
    );
    assert!(eventually(Duration::from_secs(2), || server
        .idle_connections()
        == 0));
}

/// Connections are found by their descriptor's number, which the kernel
/// hands out again as soon as one closes: with clients coming and going
/// while others wait between requests, every answer still reaches the
/// client that asked, and none waits for a wake-up that never comes.
#[test]
fn reused_descriptors_never_mix_up_connections() {
    let t = TestServer::start(|s| {
        s.workers = 8;
        s.queue_capacity = 64;
    });
    let addr = t.addr;
    let clients: Vec<_> = (0..8)
        .map(|client| {
            thread::spawn(move || {
                for round in 0..40 {
                    let mut stream = connect(addr);
                    stream
                        .set_read_timeout(Some(Duration::from_secs(5)))
                        .unwrap();
                    for request in 0..3 {
                        let body = format!("client {client} round {round} request {request}");
                        let raw = format!(
                            "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        stream.write_all(raw.as_bytes()).unwrap();
                        assert_eq!(read_response(&mut stream).text(), body);
                        // Long enough that the worker gives it back.
                        thread::sleep(Duration::from_millis(3));
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
}

/// A worker holding a connection reads it in blocking mode, and writes
/// to it without waiting until the client's buffer is full; an answer
/// larger than the client takes at once still arrives whole, and the
/// connection goes back to the poller non-blocking, as the poller needs.
#[test]
fn a_held_connection_answers_a_slow_reader_and_returns_non_blocking() {
    // Larger than the most a socket's send buffer grows to (4 MiB).
    const LEN: u32 = 6_000_000;
    let t = TestServer::start(|s| s.max_body_bytes = LEN as usize);
    let stream = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    stream.set_recv_buffer_size(4096).unwrap();
    stream.connect(&t.addr.into()).unwrap();
    let mut stream: std::net::TcpStream = stream.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body: String = (0..LEN)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    for round in 0..3 {
        // The first of two back-to-back requests comes through the
        // poller; the worker that answers it reads the second.
        for _ in 0..2 {
            let raw = format!(
                "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(raw.as_bytes()).unwrap();
            // Late enough that the answer fills the client's buffer.
            thread::sleep(Duration::from_millis(20));
            assert!(read_response(&mut stream).text() == body, "round {round}");
        }
        // Long after the answer: the poller has the connection by then.
        thread::sleep(Duration::from_millis(50));
        assert!(peer_socket_nonblocking(&stream), "round {round}");
    }
    assert_eq!(t.handler.served.load(Ordering::SeqCst), 6);
}

/// A worker waiting on a quiet connection for its next request must not
/// keep another client's request waiting for it.
#[test]
fn a_worker_waiting_on_a_quiet_connection_leaves_other_clients_served() {
    let t = TestServer::start(|s| s.workers = 2);
    let mut quiet: Vec<_> = (0..8).map(|_| connect(t.addr)).collect();
    for stream in &mut quiet {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(stream).status, 200);
    }
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(get(t.addr, "/").status, 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(t.handler.served.load(Ordering::SeqCst), 28);
}

/// Posts `body` to `/echo` with `Expect: 100-continue`: the head, then the
/// body once `100 Continue` came. Returns the answer.
fn echo_after_continue(stream: &mut std::net::TcpStream) -> Response {
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
        )
        .unwrap();
    assert_eq!(read_response(stream).status, 100);
    stream.write_all(b"body").unwrap();
    read_response(stream)
}

#[test]
fn expect_100_continue_is_honoured() {
    let t = TestServer::start(|_| {});
    let resp = echo_after_continue(&mut connect(t.addr));
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"body"[..]));
}

#[test]
fn oversized_expect_100_continue_gets_413_without_continue() {
    let t = TestServer::start(|s| s.max_body_bytes = 10);
    let resp = roundtrip(
        t.addr,
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n",
    );
    assert_eq!(resp.status, 413);
}

#[test]
fn full_queue_answers_503_with_retry_after() {
    let t = TestServer::start(|s| {
        s.workers = 1;
        s.queue_capacity = 1;
    });
    let mut first = connect(t.addr);
    first
        .write_all(b"GET /block HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    t.entered
        .recv_timeout(Duration::from_secs(5))
        .expect("first request reached the worker");
    let mut queued = connect(t.addr);
    queued
        .write_all(b"GET /block HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    // The queued request occupies the only queue slot once the poller saw it;
    // retry the third until the poller has dispatched the second.
    let deadline = Instant::now() + Duration::from_secs(5);
    let rejected = loop {
        let resp = get(t.addr, "/");
        if resp.status == 503 || Instant::now() > deadline {
            break resp;
        }
    };
    assert_eq!(rejected.status, 503);
    assert_eq!(rejected.header("retry-after"), Some("1"));
    t.release.send(()).unwrap();
    t.release.send(()).unwrap();
    assert_eq!(read_response(&mut first).status, 200);
    assert_eq!(read_response(&mut queued).status, 200);
}

/// A job handed to a parked worker makes that worker busy at once: were
/// it counted idle until its thread woke, the next request of a burst
/// would be queued for it, no worker would start for that one, and it
/// would wait for some earlier request to end (it did, one run in two,
/// with 300 waiting for an upstream). The burst is larger than the busy
/// workers (8 per core) from which a request queues for a busy worker
/// rather than waking a parked one: these busy ones never finish, so the
/// poller must hand the queued requests to parked or new workers.
#[test]
fn every_request_of_a_burst_gets_a_worker_while_the_earlier_ones_wait() {
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let burst = 48.max(8 * cores + 16);
    let t = TestServer::start(|s| {
        s.workers = burst;
        s.queue_capacity = burst;
    });
    // Rounds after the first find the workers of the one before parked.
    for round in 0..10 {
        let mut clients: Vec<_> = (0..burst).map(|_| connect(t.addr)).collect();
        for client in &mut clients {
            client
                .write_all(b"GET /block HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .unwrap();
        }
        for n in 0..burst {
            t.entered
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or_else(|_| {
                    panic!("round {round}: {n} of {burst} requests reached a worker")
                });
        }
        for _ in 0..burst {
            t.release.send(()).unwrap();
        }
        for client in &mut clients {
            assert_eq!(read_response(client).status, 200);
        }
    }
}

#[test]
fn sse_events_arrive_when_they_are_produced() {
    let t = TestServer::start(|_| {});
    let mut stream = connect(t.addr);
    stream
        .write_all(b"GET /sse HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut arrivals = Vec::new();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while arrivals.len() < 3 {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&buf[..n]);
        let events = String::from_utf8_lossy(&seen).matches("data: ").count();
        while arrivals.len() < events {
            arrivals.push(Instant::now());
        }
    }
    for pair in arrivals.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(150),
            "events arrived together ({gap:?} apart)"
        );
    }
}

#[test]
fn shutdown_drains_in_flight_answers_new_requests_503_then_stops() {
    let mut t = TestServer::start(|_| {});
    let mut busy = connect(t.addr);
    busy.write_all(b"GET /block HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    t.entered.recv_timeout(Duration::from_secs(5)).unwrap();
    let server = t.server.take().unwrap();
    let release = t.release.clone();
    let stopper = thread::spawn(move || server.shutdown(Duration::from_secs(5)));
    // While draining the listener stays open, so that a health check sees
    // 503 rather than a refused connection; nothing new is started.
    // (Requests that got in before the poller saw the stop are served.)
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut served_before_stop = 0;
    let refused = loop {
        let resp = get(t.addr, "/");
        if resp.status == 503 || Instant::now() > deadline {
            break resp;
        }
        served_before_stop += 1;
        thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.header("connection"), Some("close"));
    release.send(()).unwrap();
    let resp = read_response(&mut busy);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(stopper.join().unwrap(), "drained in time");
    assert!(
        std::net::TcpStream::connect(t.addr).is_err(),
        "still accepting after shutdown returned"
    );
    assert_eq!(
        t.handler.served.load(Ordering::SeqCst),
        1 + served_before_stop,
        "a request that arrived while draining reached the handler"
    );
}

#[test]
fn conflicting_framing_is_refused() {
    let t = TestServer::start(|_| {});
    let resp = roundtrip(
        t.addr,
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    assert_eq!(resp.status, 400);
}
