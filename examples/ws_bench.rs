//! Load generator for the WebSocket rows of `tests/bench.sh`: one thread,
//! non-blocking sockets (mio), bounded in connections and in time.
//!
//! ```text
//! ws_bench ADDR TOKEN PID CONNECTIONS RATE SECONDS THROUGHPUT_CONNECTIONS THROUGHPUT_SECONDS
//! ```
//!
//! 1. opens CONNECTIONS WebSockets to ADDR and reports the RSS of process
//!    PID (aiproxy) once they are all open;
//! 2. sends RATE requests a second for SECONDS, spread round-robin over
//!    them, and reports latency percentiles and errors;
//! 3. sends the same requests at the same rate over HTTP keep-alive
//!    connections (as many as needed, at most 256), for comparison;
//! 4. runs THROUGHPUT_CONNECTIONS WebSockets, then as many HTTP keep-alive
//!    connections, closed-loop (one request in flight each) for
//!    THROUGHPUT_SECONDS each, and reports requests per second;
//! 5. reports the peak RSS of PID.
//!
//! Every request is a small non-streamed OpenAI chat completion for the
//! mock provider, distinct so that no cache answers it.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use aiproxy::websocket::client::{self, opcode};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// Handshakes in progress at once, so the listen backlog never overflows.
const OPENING: usize = 256;

#[derive(PartialEq)]
enum Kind {
    Ws,
    Http,
}

struct Conn {
    stream: TcpStream,
    open: bool,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Request number → when it was sent.
    waiting: HashMap<u64, Instant>,
}

struct Load {
    poll: Poll,
    events: Events,
    addr: SocketAddr,
    token: String,
    kind: Kind,
    conns: Vec<Conn>,
    latencies: Vec<Duration>,
    errors: u64,
    next_id: u64,
}

impl Load {
    fn new(addr: SocketAddr, token: &str, kind: Kind) -> io::Result<Load> {
        Ok(Load {
            poll: Poll::new()?,
            events: Events::with_capacity(4096),
            addr,
            token: token.to_owned(),
            kind,
            conns: Vec::new(),
            latencies: Vec::new(),
            errors: 0,
            next_id: 0,
        })
    }

    fn body(&mut self) -> (u64, String) {
        self.next_id += 1;
        let id = self.next_id;
        let body = format!(
            r#"{{"model":"mock-small","messages":[{{"role":"user","content":"benchmark request {id}"}}]}}"#
        );
        (id, body)
    }

    /// Opens `n` connections (WebSocket handshakes complete) within `limit`.
    fn open(&mut self, n: usize, limit: Duration) -> io::Result<()> {
        let until = Instant::now() + limit;
        while self.conns.iter().filter(|c| c.open).count() < n {
            let opening = self.conns.iter().filter(|c| !c.open).count();
            for _ in opening..OPENING.min(n - self.conns.len() + opening) {
                if self.conns.len() >= n {
                    break;
                }
                let mut stream = TcpStream::connect(self.addr)?;
                let slot = self.conns.len();
                self.poll.registry().register(
                    &mut stream,
                    Token(slot),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                let output = match self.kind {
                    Kind::Ws => format!(
                        "GET /ws?token={} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
                         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
                         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                        self.token, self.addr
                    )
                    .into_bytes(),
                    Kind::Http => Vec::new(),
                };
                self.conns.push(Conn {
                    stream,
                    open: self.kind == Kind::Http,
                    input: Vec::new(),
                    output,
                    waiting: HashMap::new(),
                });
            }
            if Instant::now() > until {
                return Err(io::Error::other(format!(
                    "only {} of {n} connections open after {limit:?}",
                    self.conns.iter().filter(|c| c.open).count()
                )));
            }
            self.turn(Duration::from_millis(50))?;
        }
        Ok(())
    }

    /// Sends one request on connection `i`.
    fn send(&mut self, i: usize) {
        let (id, body) = self.body();
        let bytes = match self.kind {
            Kind::Ws => client::text(&format!(
                r#"{{"type":"request","id":"{id}","request":{body}}}"#
            )),
            Kind::Http => format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                self.addr,
                self.token,
                body.len()
            )
            .into_bytes(),
        };
        let conn = &mut self.conns[i];
        conn.waiting.insert(id, Instant::now());
        conn.output.extend_from_slice(&bytes);
        if flush(conn).is_err() {
            self.errors += 1;
        }
    }

    /// Waits for socket events up to `timeout` and handles them.
    fn turn(&mut self, timeout: Duration) -> io::Result<()> {
        self.poll.poll(&mut self.events, Some(timeout))?;
        let ready: Vec<usize> = self.events.iter().map(|e| e.token().0).collect();
        for i in ready {
            self.ready(i);
        }
        Ok(())
    }

    fn ready(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        if flush(conn).is_err() {
            self.errors += 1;
            return;
        }
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match conn.stream.read(&mut chunk) {
                Ok(0) => {
                    self.errors += conn.waiting.len() as u64 + 1;
                    conn.waiting.clear();
                    return;
                }
                Ok(n) => conn.input.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(_) => {
                    self.errors += 1;
                    return;
                }
            }
        }
        let now = Instant::now();
        match self.kind {
            Kind::Ws => {
                if !conn.open {
                    let Some(end) = conn.input.windows(4).position(|w| w == b"\r\n\r\n") else {
                        return;
                    };
                    if !conn.input.starts_with(b"HTTP/1.1 101") {
                        self.errors += 1;
                    }
                    conn.input.drain(..end + 4);
                    conn.open = true;
                }
                for frame in client::parse_all(&mut conn.input) {
                    if frame.opcode != opcode::TEXT {
                        continue;
                    }
                    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&frame.payload) else {
                        self.errors += 1;
                        continue;
                    };
                    let id = v["id"].as_str().and_then(|s| s.parse::<u64>().ok());
                    match (
                        v["type"].as_str(),
                        id.and_then(|id| conn.waiting.remove(&id)),
                    ) {
                        (Some("response"), Some(sent)) => self.latencies.push(now - sent),
                        (Some("heartbeat"), _) => {}
                        _ => self.errors += 1,
                    }
                }
            }
            Kind::Http => {
                while let Some((status, used)) = http_response(&conn.input) {
                    conn.input.drain(..used);
                    let oldest = conn.waiting.keys().min().copied();
                    match oldest.and_then(|id| conn.waiting.remove(&id)) {
                        Some(sent) if status == 200 => self.latencies.push(now - sent),
                        _ => self.errors += 1,
                    }
                }
            }
        }
    }

    /// RATE requests a second for `seconds`, round-robin over idle
    /// connections; then waits for the answers (at most 10 s).
    fn rate(&mut self, rate: u64, seconds: u64) -> io::Result<()> {
        let start = Instant::now();
        let total = rate * seconds;
        let mut sent = 0u64;
        let mut next = 0usize;
        while sent < total {
            let due = start + Duration::from_secs_f64(sent as f64 / rate as f64);
            let now = Instant::now();
            if now < due {
                self.turn(due - now)?;
                continue;
            }
            // The next connection with nothing in flight (HTTP allows one).
            let n = self.conns.len();
            let free = (0..n)
                .map(|k| (next + k) % n)
                .find(|&i| self.conns[i].waiting.is_empty());
            match free {
                Some(i) => {
                    self.send(i);
                    next = (i + 1) % n;
                }
                None => self.errors += 1,
            }
            sent += 1;
        }
        self.drain(Duration::from_secs(10))
    }

    /// One request in flight per connection, for `seconds`.
    fn closed_loop(&mut self, seconds: u64) -> io::Result<u64> {
        let until = Instant::now() + Duration::from_secs(seconds);
        let before = self.latencies.len();
        while Instant::now() < until {
            for i in 0..self.conns.len() {
                if self.conns[i].waiting.is_empty() {
                    self.send(i);
                }
            }
            self.turn(Duration::from_millis(5))?;
        }
        let done = self.latencies.len() - before;
        self.drain(Duration::from_secs(10))?;
        Ok(done as u64)
    }

    fn drain(&mut self, limit: Duration) -> io::Result<()> {
        let until = Instant::now() + limit;
        while self.conns.iter().any(|c| !c.waiting.is_empty()) && Instant::now() < until {
            self.turn(Duration::from_millis(20))?;
        }
        let lost: usize = self.conns.iter().map(|c| c.waiting.len()).sum();
        self.errors += lost as u64;
        Ok(())
    }

    /// "p50 p95 p99 errors count" of what was measured so far; resets.
    fn report(&mut self) -> String {
        let mut l = std::mem::take(&mut self.latencies);
        l.sort();
        let pct = |p: f64| -> f64 {
            l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        let line = format!(
            "p50 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms, {} errors, {} answers",
            pct(0.50),
            pct(0.95),
            pct(0.99),
            self.errors,
            l.len()
        );
        self.errors = 0;
        line
    }
}

fn flush(conn: &mut Conn) -> io::Result<()> {
    while !conn.output.is_empty() {
        match conn.stream.write(&conn.output) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                conn.output.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The status and length of the first complete response in `bytes`
/// (`Content-Length` framing, as aiproxy answers whole completions).
fn http_response(bytes: &[u8]) -> Option<(u16, usize)> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&bytes[..end]).ok()?;
    let status = head.get(9..12)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    (bytes.len() >= end + length).then_some((status, end + length))
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, token, pid, conns, rate, seconds, tp_conns, tp_seconds] = args.as_slice() else {
        eprintln!(
            "usage: ws_bench ADDR TOKEN PID CONNECTIONS RATE SECONDS TP_CONNECTIONS TP_SECONDS"
        );
        std::process::exit(2);
    };
    let num = |s: &String| -> u64 { s.parse().expect("a number") };
    let addr: SocketAddr = addr.parse().expect("ADDR is host:port");
    let pid = num(pid) as u32;
    let (conns, rate, seconds) = (num(conns) as usize, num(rate), num(seconds));
    let (tp_conns, tp_seconds) = (num(tp_conns) as usize, num(tp_seconds));

    let idle = status_kib(pid, "VmRSS:");
    let mut ws = Load::new(addr, token, Kind::Ws)?;
    let started = Instant::now();
    ws.open(conns, Duration::from_secs(120))?;
    println!(
        "websocket: {conns} connections open in {:.1} s; aiproxy RSS {} KiB (idle before: {idle} KiB)",
        started.elapsed().as_secs_f64(),
        status_kib(pid, "VmRSS:")
    );
    ws.rate(rate, seconds)?;
    println!(
        "websocket: {rate} req/s for {seconds} s over {conns} connections: {}",
        ws.report()
    );
    println!("websocket: aiproxy RSS {} KiB", status_kib(pid, "VmRSS:"));

    let mut http = Load::new(addr, token, Kind::Http)?;
    http.open(
        256.min((rate / 4).max(16) as usize),
        Duration::from_secs(10),
    )?;
    http.rate(rate, seconds)?;
    println!(
        "http: {rate} req/s for {seconds} s over {} keep-alive connections ({conns} WebSockets still open): {}",
        http.conns.len(),
        http.report()
    );
    drop(ws);
    drop(http);

    let mut ws = Load::new(addr, token, Kind::Ws)?;
    ws.open(tp_conns, Duration::from_secs(30))?;
    let n = ws.closed_loop(tp_seconds)?;
    println!(
        "throughput: {tp_conns} WebSocket connections, one request in flight each: {:.0} req/s ({})",
        n as f64 / tp_seconds as f64,
        ws.report()
    );
    drop(ws);
    let mut http = Load::new(addr, token, Kind::Http)?;
    http.open(tp_conns, Duration::from_secs(30))?;
    let n = http.closed_loop(tp_seconds)?;
    println!(
        "throughput: {tp_conns} HTTP keep-alive connections, one request in flight each: {:.0} req/s ({})",
        n as f64 / tp_seconds as f64,
        http.report()
    );
    println!("aiproxy peak RSS {} KiB", status_kib(pid, "VmHWM:"));
    Ok(())
}
