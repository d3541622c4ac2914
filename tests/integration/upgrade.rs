//! The upgrade seam: after a 101 the poller adopts the connection and a
//! protocol of the handler's speaks on it, non-blocking, with an outbound
//! queue, messages from other threads, and draining. A test-only "echo"
//! protocol stands in for WebSocket.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use aiproxy::server::{
    Flow, Handler, Link, Outbound, Request, Responder, Server, Settings, Upgraded,
};
use crossbeam_channel::{Receiver, Sender};

use crate::support::*;

/// Most bytes an echo connection queues for a peer that does not read.
const QUEUE_BOUND: usize = 256 * 1024;

struct Echo {
    closed: Sender<&'static str>,
}

impl Upgraded for Echo {
    fn on_adopt(&mut self, link: Link, _out: &mut Outbound<'_>) -> Flow {
        // A message from another thread, as a worker would send one.
        thread::spawn(move || link.send(b"hello from a worker\n".to_vec()));
        Flow::Continue
    }

    fn on_input(&mut self, input: &[u8], out: &mut Outbound<'_>) -> Flow {
        if input.windows(5).any(|w| w == b"close") {
            return Flow::Close;
        }
        out.write(input);
        if out.queued() > QUEUE_BOUND {
            let _ = self.closed.send("queue bound");
            return Flow::Close;
        }
        Flow::Continue
    }

    fn on_message(&mut self, message: Vec<u8>, out: &mut Outbound<'_>) -> Flow {
        out.write(&message);
        Flow::Continue
    }

    fn on_drain(&mut self, out: &mut Outbound<'_>) -> Flow {
        out.write(b"bye\n");
        Flow::Close
    }

    fn on_closed(&mut self) {
        let _ = self.closed.send("closed");
    }
}

struct EchoHandler {
    closed: Sender<&'static str>,
}

impl Handler for EchoHandler {
    fn handle(&self, req: &Request, out: &mut Responder<'_>) {
        if req.path() == "/echo" && req.header("upgrade") == Some("echo") {
            let echo = Box::new(Echo {
                closed: self.closed.clone(),
            });
            let _ = out.upgrade(&[("Upgrade", "echo"), ("Connection", "Upgrade")], echo);
        } else {
            let _ = out.send(200, &[], b"ok");
        }
    }
}

struct Running {
    server: Option<Server>,
    addr: SocketAddr,
    closed: Receiver<&'static str>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown(Duration::from_secs(2));
        }
    }
}

fn start() -> Running {
    let (tx, closed) = crossbeam_channel::unbounded();
    let handler = Arc::new(EchoHandler { closed: tx });
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let settings = Settings {
        workers: 2,
        worker_stack_bytes: 256 * 1024,
        ..Settings::default()
    };
    let server = Server::start(listener, settings, handler).unwrap();
    Running {
        addr: server.addr(),
        server: Some(server),
        closed,
    }
}

/// Connects and upgrades; returns the stream after the 101 head.
fn upgrade(addr: SocketAddr) -> TcpStream {
    let mut s = connect(addr);
    s.write_all(
        b"GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed during the handshake");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    assert!(!head.contains("Content-Length"), "{head}");
    s
}

fn read_line(s: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed mid-line");
        line.push(byte[0]);
    }
    String::from_utf8(line).unwrap()
}

#[test]
fn an_upgraded_connection_is_adopted_read_written_and_closed() {
    let r = start();
    let mut s = upgrade(r.addr);
    assert_eq!(read_line(&mut s), "hello from a worker\n");
    for i in 0..3 {
        s.write_all(format!("ping {i}\n").as_bytes()).unwrap();
        assert_eq!(read_line(&mut s), format!("ping {i}\n"));
    }
    // The workers are free while the connection lives.
    assert_eq!(get(r.addr, "/").status, 200);
    s.write_all(b"close\n").unwrap();
    assert!(time_until_closed(&mut s, Duration::from_secs(3)) < Duration::from_secs(2));
    assert_eq!(
        r.closed.recv_timeout(Duration::from_secs(2)).unwrap(),
        "closed"
    );
}

/// A protocol that closes on input (WebSocket's 1009 for an oversized
/// message) while the peer is still sending: the server stops writing and
/// reads on, so the peer's later bytes are not answered with a reset that
/// could destroy the goodbye before its client read it.
#[test]
fn closing_on_input_keeps_reading_what_the_peer_still_sends() {
    let r = start();
    let mut s = upgrade(r.addr);
    assert_eq!(read_line(&mut s), "hello from a worker\n");
    // One loopback segment, more than the poller reads at once: the rest
    // is waiting in the socket when the protocol says close.
    let mut burst = b"close\n".to_vec();
    burst.resize(40 * 1024, b'x');
    s.write_all(&burst).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut sink = [0u8; 4096];
    loop {
        match s.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => panic!("a reset, not a clean close: {e}"),
        }
    }
    // On loopback a reset for the first write comes back before the call
    // returns, so the second would fail.
    for _ in 0..3 {
        s.write_all(&[b'x'; 1000]).expect("the server still reads");
    }
    drop(s);
    assert_eq!(
        r.closed.recv_timeout(Duration::from_secs(2)).unwrap(),
        "closed"
    );
}

#[test]
fn a_peer_that_does_not_read_is_closed_at_its_queue_bound() {
    let r = start();
    let s = upgrade(r.addr);
    let mut writer = s.try_clone().unwrap();
    // Writes until the server closes; never reads.
    let flood = thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if writer.write_all(&chunk).is_err() {
                return true;
            }
        }
        false
    });
    assert_eq!(
        r.closed.recv_timeout(Duration::from_secs(10)).unwrap(),
        "queue bound"
    );
    let started = Instant::now();
    assert_eq!(get(r.addr, "/").status, 200, "the server is still serving");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(flood.join().unwrap(), "the connection was never closed");
}

#[test]
fn draining_lets_an_upgraded_protocol_say_goodbye() {
    let mut r = start();
    let mut s = upgrade(r.addr);
    assert_eq!(read_line(&mut s), "hello from a worker\n");
    let server = r.server.take().unwrap();
    let stopper = thread::spawn(move || server.shutdown(Duration::from_secs(2)));
    assert_eq!(read_line(&mut s), "bye\n");
    assert!(time_until_closed(&mut s, Duration::from_secs(3)) < Duration::from_secs(2));
    assert!(stopper.join().unwrap());
}
