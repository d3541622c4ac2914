//! A small HTTP/1.1 server: one poller thread, a fixed pool of workers.
//!
//! The shape is that of Jetty's and Tomcat's NIO connectors. The poller
//! owns the listener and every connection that is not being served: it
//! accepts, reads request heads without blocking (so a slow client costs
//! a buffer, not a thread), enforces the header and keep-alive deadlines,
//! and hands each complete head to the workers through a bounded queue.
//! A worker reads the body, runs the [`Handler`], writes the response and
//! gives the connection back to the poller — the one place where that
//! happens is [`Poller::adopt`]. When the queue is full the poller answers
//! 503 itself.
//!
//! This module knows nothing about AI providers; it could be published on
//! its own.

pub mod request;
pub mod response;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

pub use request::{Head, Request, RequestError};
pub use response::{ChunkWriter, LogFields, Responder, ResponseState};

/// Serves one request. Called on a worker thread; may block.
pub trait Handler: Send + Sync + 'static {
    /// Answers `req` through `out`. A panic here is caught: the client
    /// gets a 500 (or a closed stream) and the worker lives on.
    fn handle(&self, req: &Request, out: &mut Responder<'_>);

    /// Called once per finished exchange, for access logging.
    fn log(&self, _req: &Request, _out: &Responder<'_>, _elapsed: Duration) {}
}

/// Server limits and sizes.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Worker threads (= requests served at once).
    pub workers: usize,
    /// Heads waiting for a worker before new ones get 503.
    pub queue_capacity: usize,
    /// Largest body accepted.
    pub max_body_bytes: usize,
    /// Largest head accepted.
    pub max_header_bytes: usize,
    /// Most header fields accepted.
    pub max_headers: usize,
    /// Time to receive a complete head.
    pub header_timeout: Duration,
    /// Time to receive a complete body.
    pub body_timeout: Duration,
    /// Keep-alive idle time; also the write timeout towards slow readers.
    pub idle_timeout: Duration,
    /// Stack size of a worker thread.
    pub worker_stack_bytes: usize,
}

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CONN: usize = 2;

/// Workers started up front; the rest start when all running workers are
/// busy, up to `Settings::workers`, and then stay. An idle gateway with
/// thousands of allowed workers thus costs a few threads, not thousands.
const INITIAL_WORKERS: usize = 4;
/// How often deadlines are checked when nothing else happens.
const TICK: Duration = Duration::from_millis(100);
/// Pause before retrying `accept` after EMFILE/ENFILE and similar errors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long input is drained after an early error answer before closing.
const LINGER: Duration = Duration::from_secs(1);

struct Shared {
    settings: Settings,
    /// Workers started so far (never more than `settings.workers`).
    spawned: AtomicUsize,
    /// Workers waiting for a job.
    idle: AtomicUsize,
    handler: Arc<dyn Handler>,
    stopping: AtomicBool,
    in_flight: AtomicUsize,
    returns: Sender<Conn>,
    waker: Waker,
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    poller: Option<thread::JoinHandle<()>>,
    workers_done: Receiver<()>,
}

/// Starts workers on demand.
struct WorkerPool {
    jobs: Receiver<Job>,
    done: Sender<()>,
    shared: Arc<Shared>,
}

impl WorkerPool {
    fn spawn(&self) -> io::Result<()> {
        let n = self.shared.spawned.fetch_add(1, Ordering::SeqCst);
        let (jobs, done, shared) = (
            self.jobs.clone(),
            self.done.clone(),
            Arc::clone(&self.shared),
        );
        // Counted idle from the start so a burst does not over-spawn.
        shared.idle.fetch_add(1, Ordering::SeqCst);
        let started = thread::Builder::new()
            .name(format!("aiproxy-worker-{n}"))
            .stack_size(self.shared.settings.worker_stack_bytes)
            .spawn(move || {
                worker_loop(&shared, &jobs);
                let _ = done.send(());
            });
        if let Err(e) = started {
            self.shared.spawned.fetch_sub(1, Ordering::SeqCst);
            self.shared.idle.fetch_sub(1, Ordering::SeqCst);
            return Err(e);
        }
        Ok(())
    }

    /// Starts workers until every queued job has an idle worker waiting
    /// for it (or the pool is at its size). A started worker counts as idle
    /// before its thread runs, so a burst starts one worker per job, not
    /// one per job that found no idle worker.
    fn grow_for(&self, queued: usize) {
        let shared = &self.shared;
        while shared.idle.load(Ordering::SeqCst) < queued
            && shared.spawned.load(Ordering::SeqCst) < shared.settings.workers
        {
            if let Err(e) = self.spawn() {
                crate::log::warn(&format!("could not start a worker thread: {e}"));
                return;
            }
        }
    }
}

impl Server {
    /// Starts serving `listener` with `handler` on new threads.
    pub fn start(
        listener: TcpListener,
        settings: Settings,
        handler: Arc<dyn Handler>,
    ) -> io::Result<Server> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let (job_tx, job_rx) = crossbeam_channel::bounded::<Job>(settings.queue_capacity.max(1));
        let (return_tx, return_rx) = crossbeam_channel::unbounded::<Conn>();
        let (done_tx, done_rx) = crossbeam_channel::unbounded::<()>();
        let shared = Arc::new(Shared {
            settings: settings.clone(),
            handler,
            stopping: AtomicBool::new(false),
            spawned: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            returns: return_tx,
            waker,
        });
        let pool = WorkerPool {
            jobs: job_rx,
            done: done_tx,
            shared: Arc::clone(&shared),
        };
        for _ in 0..settings.workers.min(INITIAL_WORKERS) {
            pool.spawn()?;
        }
        let poller = Poller {
            pool,
            poll,
            listener: Some(listener),
            conns: Vec::new(),
            free: Vec::new(),
            jobs: Some(job_tx),
            returns: return_rx,
            shared: Arc::clone(&shared),
            accept_retry_at: None,
            scratch: vec![0u8; 16 * 1024].into_boxed_slice(),
        };
        poller.poll.registry().register(
            &mut SourceFd(&poller.listener.as_ref().map_or(-1, |l| l.as_raw_fd())),
            LISTENER,
            Interest::READABLE,
        )?;
        let poller = thread::Builder::new()
            .name("aiproxy-poller".into())
            .spawn(move || poller.run())?;
        Ok(Server {
            addr,
            shared,
            poller: Some(poller),
            workers_done: done_rx,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests being served right now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// Whether a shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::Relaxed)
    }

    /// Stops accepting, closes idle connections, lets in-flight requests
    /// finish for up to `drain`, then returns. True if everything drained.
    pub fn shutdown(mut self, drain: Duration) -> bool {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _ = self.shared.waker.wake();
        let deadline = Instant::now() + drain;
        // The poller stops starting workers once `stopping` is set, so the
        // count only shrinks from here.
        let mut finished = 0;
        while finished < self.shared.spawned.load(Ordering::SeqCst) {
            match self.workers_done.recv_deadline(deadline) {
                Ok(()) => finished += 1,
                Err(_) => break,
            }
        }
        let drained = finished >= self.shared.spawned.load(Ordering::SeqCst);
        if drained && let Some(poller) = self.poller.take() {
            let _ = poller.join();
        }
        drained
    }
}

/// A connection and the bytes read from it but not yet consumed.
struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    buf: Vec<u8>,
    /// When the current wait ends: head deadline or idle deadline.
    deadline: Instant,
    /// Bytes of a head have arrived (header deadline applies, not idle).
    reading_head: bool,
    /// An error answer was sent; input is drained until EOF or the
    /// deadline so that closing does not reset the answer away.
    closing: bool,
}

/// A complete head, ready for a worker.
struct Job {
    conn: Conn,
    head: Head,
    head_len: usize,
    received: Instant,
}

struct Poller {
    pool: WorkerPool,
    /// Scratch space for non-blocking reads, allocated once.
    scratch: Box<[u8]>,
    poll: Poll,
    listener: Option<TcpListener>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    jobs: Option<Sender<Job>>,
    returns: Receiver<Conn>,
    shared: Arc<Shared>,
    accept_retry_at: Option<Instant>,
}

impl Poller {
    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut last_sweep = Instant::now();
        loop {
            if let Err(e) = self.poll.poll(&mut events, Some(TICK)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    crate::log::error(&format!("poll failed: {e}"));
                    thread::sleep(TICK);
                }
                continue;
            }
            for event in &events {
                match event.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {}
                    Token(t) => self.on_readable(t - FIRST_CONN),
                }
            }
            while let Ok(conn) = self.returns.try_recv() {
                self.adopt(conn);
            }
            if self.accept_retry_at.is_some_and(|at| Instant::now() >= at) {
                self.accept_retry_at = None;
                self.accept_all();
            }
            let now = Instant::now();
            if now.duration_since(last_sweep) >= TICK {
                last_sweep = now;
                self.sweep(now);
            }
            if self.shared.stopping.load(Ordering::Relaxed) {
                self.begin_stop();
                if self.shared.in_flight.load(Ordering::SeqCst) == 0 && self.returns.is_empty() {
                    return;
                }
            }
        }
    }

    fn begin_stop(&mut self) {
        if let Some(listener) = self.listener.take() {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&listener.as_raw_fd()));
        }
        // Dropping the sender lets workers exit once the queue is empty.
        self.jobs = None;
        for slot in 0..self.conns.len() {
            self.close(slot);
        }
    }

    fn accept_all(&mut self) {
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let deadline = Instant::now() + self.shared.settings.header_timeout;
                    self.insert(
                        Conn {
                            stream,
                            peer,
                            buf: Vec::new(),
                            deadline,
                            reading_head: true,
                            closing: false,
                        },
                        true,
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS…: the pending connection stays
                    // queued in the kernel; retry after a pause instead of
                    // spinning or giving up for good.
                    crate::log::warn(&format!("accept failed, retrying in 100ms: {e}"));
                    self.accept_retry_at = Some(Instant::now() + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }

    /// Takes back a connection from a worker after a keep-alive response.
    fn adopt(&mut self, mut conn: Conn) {
        if self.shared.stopping.load(Ordering::Relaxed)
            || conn.stream.set_nonblocking(true).is_err()
        {
            return;
        }
        let now = Instant::now();
        conn.reading_head = !conn.buf.is_empty();
        conn.deadline = now
            + if conn.reading_head {
                self.shared.settings.header_timeout
            } else {
                self.shared.settings.idle_timeout
            };
        let pipelined = !conn.buf.is_empty();
        if let Some(slot) = self.insert(conn, false)
            && pipelined
        {
            self.try_dispatch(slot);
        }
    }

    fn insert(&mut self, conn: Conn, read_now: bool) -> Option<usize> {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        let fd = conn.stream.as_raw_fd();
        if self
            .poll
            .registry()
            .register(
                &mut SourceFd(&fd),
                Token(slot + FIRST_CONN),
                Interest::READABLE,
            )
            .is_err()
        {
            self.free.push(slot);
            return None;
        }
        self.conns[slot] = Some(conn);
        if read_now {
            // A fresh connection may already carry its request; edge
            // triggering would not report bytes that arrived before.
            self.on_readable(slot);
        }
        Some(slot)
    }

    fn on_readable(&mut self, slot: usize) {
        let max = self.shared.settings.max_header_bytes;
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let chunk = &mut self.scratch[..];
        let mut closed = false;
        if conn.closing {
            loop {
                match conn.stream.read(chunk) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(_) => break,
                }
            }
            self.close(slot);
            return;
        }
        loop {
            match conn.stream.read(chunk) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => {
                    if !conn.reading_head {
                        conn.reading_head = true;
                        conn.deadline = Instant::now() + self.shared.settings.header_timeout;
                    }
                    conn.buf.extend_from_slice(&chunk[..n]);
                    if conn.buf.len() > max {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        if closed {
            self.close(slot);
        } else {
            self.try_dispatch(slot);
        }
    }

    fn try_dispatch(&mut self, slot: usize) {
        let settings = &self.shared.settings;
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if conn.buf.is_empty() {
            return;
        }
        match request::parse_head(&conn.buf, settings.max_header_bytes, settings.max_headers) {
            Ok(request::ParseStatus::Partial) => {}
            Ok(request::ParseStatus::Complete(head, head_len)) => {
                let Some(conn) = self.take(slot) else { return };
                let Some(jobs) = self.jobs.as_ref() else {
                    return;
                };
                if conn.stream.set_nonblocking(false).is_err() {
                    return;
                }
                self.shared.in_flight.fetch_add(1, Ordering::SeqCst);
                self.pool.grow_for(jobs.len() + 1);
                let job = Job {
                    conn,
                    head,
                    head_len,
                    received: Instant::now(),
                };
                match jobs.try_send(job) {
                    Ok(()) => {}
                    Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                        self.reject(
                            job.conn,
                            503,
                            "server busy, retry shortly",
                            "Retry-After: 1\r\n",
                        );
                    }
                }
            }
            Err(err) => {
                let (status, why) = err.status();
                if let Some(conn) = self.take(slot) {
                    self.reject(conn, status, why, "");
                }
            }
        }
    }

    fn sweep(&mut self, now: Instant) {
        for slot in 0..self.conns.len() {
            let Some(conn) = self.conns[slot].as_mut() else {
                continue;
            };
            if now < conn.deadline {
                continue;
            }
            let timed_out_mid_head = conn.reading_head && !conn.buf.is_empty() && !conn.closing;
            if let Some(conn) = self.take(slot)
                && timed_out_mid_head
            {
                self.reject(conn, 408, "request head not received in time", "");
            }
        }
    }

    /// Answers an error and keeps the connection only to drain its input
    /// for a moment: the poller must never block on a lingering close.
    fn reject(&mut self, mut conn: Conn, status: u16, why: &str, extra: &str) {
        let _ = conn
            .stream
            .write_all(&response::simple_error(status, why, extra));
        let _ = conn.stream.shutdown(Shutdown::Write);
        if conn.stream.set_nonblocking(true).is_err() {
            return;
        }
        conn.closing = true;
        conn.buf = Vec::new();
        conn.deadline = Instant::now() + LINGER;
        self.insert(conn, true);
    }

    fn take(&mut self, slot: usize) -> Option<Conn> {
        let conn = self.conns.get_mut(slot)?.take()?;
        let _ = self
            .poll
            .registry()
            .deregister(&mut SourceFd(&conn.stream.as_raw_fd()));
        self.free.push(slot);
        Some(conn)
    }

    fn close(&mut self, slot: usize) {
        drop(self.take(slot));
    }
}

fn worker_loop(shared: &Arc<Shared>, jobs: &Receiver<Job>) {
    while let Ok(job) = jobs.recv() {
        shared.idle.fetch_sub(1, Ordering::SeqCst);
        let conn = serve(shared, job);
        shared.idle.fetch_add(1, Ordering::SeqCst);
        shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Some(conn) = conn {
            if shared.returns.send(conn).is_ok() {
                let _ = shared.waker.wake();
            }
        } else if shared.stopping.load(Ordering::Relaxed) {
            let _ = shared.waker.wake();
        }
    }
}

/// Serves requests on one connection while complete heads are buffered;
/// returns the connection if it should be kept alive.
fn serve(shared: &Shared, job: Job) -> Option<Conn> {
    let settings = &shared.settings;
    let Job {
        mut conn,
        mut head,
        mut head_len,
        mut received,
    } = job;
    let _ = conn.stream.set_read_timeout(Some(settings.body_timeout));
    let _ = conn.stream.set_write_timeout(Some(settings.idle_timeout));
    loop {
        let body_prefix = conn.buf.split_off(head_len.min(conn.buf.len()));
        conn.buf.clear();
        let mut leftover = Vec::new();
        let too_large = matches!(head.framing, request::BodyFraming::Length(n) if n > settings.max_body_bytes as u64);
        if head.expect_continue && !too_large && head.framing != request::BodyFraming::Empty {
            let _ = conn.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        let body = request::read_body(
            &mut conn.stream,
            head.framing,
            &body_prefix,
            settings.max_body_bytes,
            received + settings.body_timeout,
            &mut leftover,
        );
        let body = match body {
            Ok(body) => body,
            Err(RequestError::Disconnected) => return None,
            Err(err) => {
                let (status, why) = err.status();
                let _ = conn
                    .stream
                    .write_all(&response::simple_error(status, why, ""));
                linger_close(conn.stream);
                return None;
            }
        };
        let keep_alive = head.keep_alive && !shared.stopping.load(Ordering::Relaxed);
        let head_only = head.method() == "HEAD";
        let req = Request {
            head,
            body,
            peer: conn.peer,
            received,
        };
        let mut out = Responder::new(&mut conn.stream, &shared.stopping, keep_alive, head_only);
        let outcome =
            panic::catch_unwind(AssertUnwindSafe(|| shared.handler.handle(&req, &mut out)));
        if outcome.is_err() {
            out.log.note = Some("panic".into());
        }
        if out.state() == ResponseState::Pending {
            out.close_after();
            let _ = out.send_json(
                500,
                &[],
                br#"{"error":{"message":"internal error","type":"server_error"}}"#,
            );
        }
        let keep = out.keep_alive() && outcome.is_ok();
        shared.handler.log(&req, &out, received.elapsed());
        if !keep {
            let _ = conn.stream.shutdown(Shutdown::Write);
            return None;
        }
        conn.buf = leftover;
        if conn.buf.is_empty() {
            return Some(conn);
        }
        match request::parse_head(&conn.buf, settings.max_header_bytes, settings.max_headers) {
            Ok(request::ParseStatus::Complete(next, len))
                if !shared.stopping.load(Ordering::Relaxed) =>
            {
                head = next;
                head_len = len;
                received = Instant::now();
            }
            _ => return Some(conn),
        }
    }
}

/// Closes after an early error answer without destroying it: closing a
/// socket with unread input sends RST, which can discard the answer at
/// the client. Read (bounded) what the client is still sending first.
fn linger_close(mut stream: TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut sink = [0u8; 16 * 1024];
    let mut budget: usize = 1 << 20;
    let until = Instant::now() + Duration::from_secs(1);
    while budget > 0 && Instant::now() < until {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => budget = budget.saturating_sub(n),
        }
    }
}
