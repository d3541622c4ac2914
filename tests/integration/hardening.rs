//! Regression tests for what a hostile client could do to the server:
//! each fails on the server as it was before the hardening and passes now.
//! Raw sockets on loopback, every wait bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use aiproxy::server::{Exchange, Handler, Head, Rejection, Request, Responder, Server, Settings};
use crossbeam_channel::{Receiver, Sender};

use crate::support::*;

const BIG: usize = 8 << 20;

/// Paths: `/echo`, `/big` (8 MiB), `/block` (until released), `/sse`
/// (three events), `/forever` (events until the drain deadline, then an
/// in-band error), `/nocontent` (204); `/private` needs `x-key: k`.
struct Hostile {
    release: Receiver<()>,
    entered: Sender<()>,
    served: AtomicUsize,
    /// (status logged, body bytes logged) per exchange.
    logged: Mutex<Vec<(u16, u64)>>,
}

impl Handler for Hostile {
    fn screen(&self, head: &Head, _peer: SocketAddr) -> Option<Rejection> {
        (head.path() == "/private" && head.header("x-key") != Some("k")).then(|| Rejection {
            status: 401,
            headers: vec![("Content-Type", "text/plain".into())],
            body: b"key needed".to_vec(),
            route: "/private",
        })
    }

    fn handle(&self, req: &Request, out: &mut Responder<'_>) {
        self.served.fetch_add(1, Ordering::SeqCst);
        match req.path() {
            "/echo" | "/private" => {
                let _ = out.send(200, &[], &req.body);
            }
            "/big" => {
                let _ = out.send(200, &[], &vec![b'x'; BIG]);
            }
            "/block" => {
                let _ = self.entered.send(());
                let _ = self.release.recv_timeout(Duration::from_secs(10));
                let _ = out.send(200, &[], b"released");
            }
            "/sse" => {
                let mut w = out
                    .start_stream(200, &[("Content-Type", "text/event-stream")])
                    .unwrap();
                for i in 0..3 {
                    let _ = w.send(format!("data: {i}\n\n").as_bytes());
                }
                let _ = w.finish();
            }
            "/forever" => {
                let _ = self.entered.send(());
                let mut w = out
                    .start_stream(200, &[("Content-Type", "text/event-stream")])
                    .unwrap();
                let until = Instant::now() + Duration::from_secs(10);
                while !w.must_end() && Instant::now() < until {
                    if w.send(b"data: tick\n\n").is_err() {
                        return;
                    }
                    thread::sleep(Duration::from_millis(20));
                }
                let _ = w.send(b"event: error\ndata: shutting down\n\n");
                let _ = w.finish();
            }
            "/nocontent" => {
                let _ = out.send(204, &[], b"");
            }
            _ => {
                let _ = out.send(200, &[], b"ok");
            }
        }
    }

    fn log(&self, _req: &Request, exchange: &Exchange, _elapsed: Duration) {
        self.logged
            .lock()
            .unwrap()
            .push((exchange.status, exchange.bytes));
    }
}

struct Running {
    server: Option<Server>,
    addr: SocketAddr,
    release: Sender<()>,
    entered: Receiver<()>,
    handler: Arc<Hostile>,
}

fn start(tweak: impl FnOnce(&mut Settings)) -> Running {
    let mut settings = Settings {
        workers: 4,
        queue_capacity: 4,
        max_body_bytes: 10 << 20,
        worker_stack_bytes: 256 * 1024,
        ..Settings::default()
    };
    tweak(&mut settings);
    let (release, release_rx) = crossbeam_channel::unbounded();
    let (entered_tx, entered) = crossbeam_channel::unbounded();
    let handler = Arc::new(Hostile {
        release: release_rx,
        entered: entered_tx,
        served: AtomicUsize::new(0),
        logged: Mutex::new(Vec::new()),
    });
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = Server::start(listener, settings, handler.clone()).unwrap();
    Running {
        addr: server.addr(),
        server: Some(server),
        release,
        entered,
        handler,
    }
}

impl Drop for Running {
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
fn a_reader_that_never_reads_loses_its_connection_not_a_worker() {
    let r = start(|s| {
        s.workers = 1;
        s.send_timeout = Duration::from_millis(300);
    });
    // 50 pipelined 8 MiB answers that are never read: each used to cost
    // a whole write timeout on the only worker, and a cut-off answer was
    // followed on the wire by the next one.
    let mut hog = connect(r.addr);
    let pipelined = "GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n".repeat(50);
    hog.write_all(pipelined.as_bytes()).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || !r
            .handler
            .logged
            .lock()
            .unwrap()
            .is_empty()),
        "the first answer was never attempted"
    );
    let started = Instant::now();
    assert_eq!(get(r.addr, "/").status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the worker stayed with the stuck reader for {:?}",
        started.elapsed()
    );
    let logged = r.handler.logged.lock().unwrap().clone();
    let (status, bytes) = logged[0];
    assert_eq!(
        status, 499,
        "a failed write is logged as the client going away"
    );
    assert!(
        bytes < BIG as u64,
        "logged {bytes} bytes, more than were sent"
    );
    assert_eq!(
        r.handler.served.load(Ordering::SeqCst),
        2,
        "pipelined requests after the failed write were served"
    );
}

#[test]
fn a_declared_body_length_costs_no_memory_before_the_bytes_arrive() {
    let r = start(|_| {});
    let before = rss_kib();
    let heads: Vec<TcpStream> = (0..256)
        .map(|_| {
            let mut s = connect(r.addr);
            s.write_all(
                b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10000000\r\n\r\nab",
            )
            .unwrap();
            s
        })
        .collect();
    // A request after them all shows the poller has seen every head.
    assert_eq!(get(r.addr, "/").status, 200);
    let grown = rss_kib().saturating_sub(before);
    assert!(
        grown < 64 * 1024,
        "256 announced 10 MB bodies grew RSS by {grown} KiB"
    );
    drop(heads);
}

#[test]
fn a_refused_head_gets_its_answer_before_any_body_or_100_continue() {
    let r = start(|_| {});
    let mut s = connect(r.addr);
    s.write_all(
        b"POST /private HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let resp = read_response(&mut s);
    assert_eq!(resp.status, 401, "a 100 Continue or a wait came first");
    assert_eq!(resp.body, b"key needed");
    assert_eq!(resp.header("connection"), Some("close"));
    assert_eq!(r.handler.served.load(Ordering::SeqCst), 0);
    // With the key, the same request is served.
    let resp = roundtrip(
        r.addr,
        b"POST /private HTTP/1.1\r\nHost: localhost\r\nx-key: k\r\nContent-Length: 2\r\n\r\nhi",
    );
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"hi"[..]));
}

#[test]
fn slow_bodies_do_not_hold_workers() {
    let r = start(|s| s.workers = 1);
    let slow: Vec<TcpStream> = (0..16)
        .map(|_| {
            let mut s = connect(r.addr);
            s.write_all(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\nx")
                .unwrap();
            s
        })
        .collect();
    let started = Instant::now();
    for _ in 0..5 {
        assert_eq!(get(r.addr, "/").status, 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "slow bodies held the worker: {:?}",
        started.elapsed()
    );
    drop(slow);
}

#[test]
fn a_queued_request_is_not_timed_out_as_a_slow_body() {
    let r = start(|s| {
        s.workers = 1;
        s.body_timeout = Duration::from_millis(300);
    });
    let mut first = connect(r.addr);
    first
        .write_all(b"GET /block HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    r.entered.recv_timeout(Duration::from_secs(5)).unwrap();
    let body = vec![b'b'; 60_000];
    let mut queued = connect(r.addr);
    queued
        .write_all(
            format!(
                "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
    queued.write_all(&body).unwrap();
    // Longer in the queue than the body timeout (the point of the test).
    thread::sleep(Duration::from_millis(600));
    r.release.send(()).unwrap();
    assert_eq!(read_response(&mut first).status, 200);
    let resp = read_response(&mut queued);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.body.len(), body.len());
}

#[test]
fn a_request_that_waits_past_the_queue_timeout_gets_503() {
    let r = start(|s| {
        s.workers = 1;
        s.queue_timeout = Duration::from_millis(200);
    });
    let mut first = connect(r.addr);
    first
        .write_all(b"GET /block HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    r.entered.recv_timeout(Duration::from_secs(5)).unwrap();
    let mut queued = connect(r.addr);
    queued
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    thread::sleep(Duration::from_millis(400));
    r.release.send(()).unwrap();
    assert_eq!(read_response(&mut first).status, 200);
    let resp = read_response(&mut queued);
    assert_eq!(resp.status, 503);
    assert_eq!(resp.header("retry-after"), Some("1"));
}

#[test]
fn at_the_connection_bound_the_oldest_idle_connection_makes_room() {
    let r = start(|s| s.max_connections = 3);
    let mut idle: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = connect(r.addr);
            s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .unwrap();
            assert_eq!(read_response(&mut s).status, 200);
            s
        })
        .collect();
    let server = r.server.as_ref().unwrap();
    assert!(
        eventually(Duration::from_secs(5), || server.idle_connections() == 3),
        "the three connections never became idle"
    );
    let resp = get(r.addr, "/");
    assert_eq!(
        resp.status,
        200,
        "a new client was kept out: {}",
        resp.text()
    );
    let closed: Vec<bool> = idle
        .iter_mut()
        .map(|s| time_until_closed(s, Duration::from_millis(300)) < Duration::from_millis(250))
        .collect();
    assert_eq!(
        closed,
        [true, false, false],
        "which idle connections were closed"
    );
}

#[test]
fn http10_streams_are_delimited_by_close_and_keep_alive_is_confirmed() {
    let r = start(|_| {});
    let mut s = connect(r.addr);
    s.write_all(b"GET /sse HTTP/1.0\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    assert!(head.contains("Connection: close"), "{head}");
    assert_eq!(body, "data: 0\n\ndata: 1\n\ndata: 2\n\n");

    let mut s = connect(r.addr);
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap();
        let resp = read_response(&mut s);
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("connection"), Some("keep-alive"));
    }
}

#[test]
fn an_http10_chunked_request_closes_the_connection() {
    let r = start(|_| {});
    let resp = roundtrip(
        r.addr,
        b"POST /echo HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("connection"), Some("close"));
}

#[test]
fn the_body_timeout_is_not_stretched_by_a_late_byte() {
    let r = start(|s| s.body_timeout = Duration::from_millis(600));
    let mut s = connect(r.addr);
    let started = Instant::now();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\n")
        .unwrap();
    thread::sleep(Duration::from_millis(450));
    s.write_all(b"x").unwrap();
    let resp = read_response(&mut s);
    assert_eq!(resp.status, 408);
    assert!(
        started.elapsed() < Duration::from_millis(950),
        "408 after {:?} for a 600 ms body timeout",
        started.elapsed()
    );
}

#[test]
fn closing_with_unread_input_does_not_reset_the_answer() {
    let r = start(|_| {});
    let body = vec![b'q'; 23_000];
    let mut raw = format!(
        "POST /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    // Input the server never reads: closing over it used to send RST,
    // and the client lost the part of the answer not yet read.
    raw.extend(std::iter::repeat_n(b'j', 64 * 1024));
    let mut s = connect(r.addr);
    s.write_all(&raw).unwrap();
    thread::sleep(Duration::from_millis(200));
    let resp = read_response(&mut s);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.len(), body.len());
}

#[test]
fn no_content_has_no_length() {
    let r = start(|_| {});
    let mut s = connect(r.addr);
    s.write_all(b"GET /nocontent HTTP/1.1\r\nHost: localhost\r\n\r\nGET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let resp = read_response(&mut s);
    assert_eq!(resp.status, 204);
    assert_eq!(resp.header("content-length"), None);
    assert_eq!(
        read_response(&mut s).body,
        b"ok",
        "framing of the next answer"
    );
}

#[test]
fn a_stream_running_at_the_drain_deadline_ends_in_band() {
    let mut r = start(|_| {});
    let mut s = connect(r.addr);
    s.write_all(b"GET /forever HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    r.entered.recv_timeout(Duration::from_secs(5)).unwrap();
    let server = r.server.take().unwrap();
    let stopper = thread::spawn(move || server.shutdown(Duration::from_millis(300)));
    let resp = read_response(&mut s);
    assert!(
        !stopper.join().unwrap(),
        "reported drained with a stream running"
    );
    let text = resp.text();
    assert!(text.starts_with("data: tick"), "{text}");
    assert!(
        text.ends_with("event: error\ndata: shutting down\n\n"),
        "stream did not end in-band: {text}"
    );
}
