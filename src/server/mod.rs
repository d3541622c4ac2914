//! A small HTTP/1.1 server: one poller thread, a fixed pool of workers.
//!
//! The shape is that of Jetty's and Tomcat's NIO connectors. The poller
//! owns the listener and every connection that is not being served: it
//! accepts, reads request heads *and bodies* without blocking (so a slow
//! client costs a buffer, not a thread), lets the [`Handler`] screen each
//! head before any body byte is accepted (authentication, routing), writes
//! its own short answers without blocking, enforces every read deadline,
//! and hands each complete request to the workers through a bounded queue.
//! A worker runs the handler, writes the response and gives the connection
//! back to the poller — the one place where that happens is
//! `Poller::adopt` — unless the client is one that sends its next request
//! at once: then the worker waits a moment for it and serves it itself
//! (see `keep_alive`).
//!
//! This module knows nothing about AI providers; it could be published on
//! its own.

mod chunked;
mod keep_alive;
mod listen;
mod poller;
pub mod request;
pub mod response;
pub mod upgrade;
mod work_queue;

use std::cell::Cell;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::Waker;
use work_queue::{Handoff, JobSender, Parking, WorkQueue};

pub use listen::{bind, open_files_limit};
pub use request::{Head, Request, RequestError};
pub use response::{ChunkWriter, Exchange, LogFields, Responder, ResponseState};
pub use upgrade::{Flow, Link, Outbound, Task, Upgraded, Worker};

use poller::{Conn, Poller};

/// Serves requests. Called on worker threads, except [`Handler::screen`].
pub trait Handler: Send + Sync + 'static {
    /// Looks at a complete head before any of its body is accepted, and
    /// refuses it if it can already be answered: unknown route, missing
    /// key, wrong media type. A refused request costs no worker and no
    /// body bytes. Runs on the poller thread, so it must be quick and must
    /// not block.
    fn screen(&self, _head: &Head, _peer: SocketAddr) -> Option<Rejection> {
        None
    }

    /// Answers `req` through `out`. A panic here is caught: the client
    /// gets a 500 (or a closed stream) and the worker lives on.
    fn handle(&self, req: &Request, out: &mut Responder<'_>);

    /// Called once per finished exchange, for access logging, after the
    /// connection went back to the poller.
    fn log(&self, _req: &Request, _exchange: &Exchange, _elapsed: Duration) {}

    /// Called for a head refused by [`Handler::screen`], for access logging.
    fn log_rejected(&self, _head: &Head, _rejection: &Rejection) {}
}

/// A handler's answer to a head it refuses; the connection is closed after it.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// HTTP status.
    pub status: u16,
    /// Extra header fields (`Content-Type` among them).
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// Route template for the access log.
    pub route: &'static str,
}

impl Rejection {
    fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let headers: Vec<(&str, &str)> =
            self.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let mut bytes = response::closing_response(self.status, &headers, &self.body);
        if head_only {
            bytes.truncate(bytes.len() - self.body.len());
        }
        bytes
    }
}

/// Server limits and sizes.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Worker threads (= requests served at once).
    pub workers: usize,
    /// Requests waiting for a worker before new ones get 503.
    pub queue_capacity: usize,
    /// Longest a request may wait for a worker before it gets 503.
    pub queue_timeout: Duration,
    /// Largest body accepted.
    pub max_body_bytes: usize,
    /// Largest head accepted.
    pub max_header_bytes: usize,
    /// Most header fields accepted.
    pub max_headers: usize,
    /// Time to receive a complete head.
    pub header_timeout: Duration,
    /// Time to receive a complete body, from its first expected byte.
    pub body_timeout: Duration,
    /// Keep-alive idle time.
    pub idle_timeout: Duration,
    /// Time allowed to write one response part (a whole answer or one
    /// streamed event) to a slow reader.
    pub send_timeout: Duration,
    /// Most client connections open at once; at the bound the oldest idle
    /// keep-alive connection is closed to make room.
    pub max_connections: usize,
    /// Stack size of a worker thread.
    pub worker_stack_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            workers: 16,
            queue_capacity: 16,
            queue_timeout: Duration::from_secs(30),
            max_body_bytes: 10 << 20,
            max_header_bytes: 32 << 10,
            max_headers: 100,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            worker_stack_bytes: 512 << 10,
        }
    }
}

/// Workers started up front; the rest start when all running workers are
/// busy, up to `Settings::workers`, and then stay. An idle gateway with
/// thousands of allowed workers thus costs a few threads, not thousands.
const INITIAL_WORKERS: usize = 4;
/// Busy workers per core from which a new job waits for one of them to
/// finish instead of waking a parked worker (see `work_queue`). Below it
/// every job gets a worker at once, so a lightly loaded gateway answers as
/// soon as it can; at it, on 2 cores (16 busy), forwarding to a fast
/// upstream on 64 connections took 1.25 context switches a request
/// instead of 2.0.
const BUSY_PER_CORE_BEFORE_QUEUEING: usize = 8;
/// How long a job waits so before a parked worker is woken for it: long
/// against the turn-around of requests to a fast upstream, short against
/// a model's answer. The poller looks at the queue every millisecond
/// (epoll's resolution), so a job waits at most about twice this.
const QUEUE_PATIENCE: Duration = Duration::from_millis(1);
/// The shortest time over which the pace of finishing jobs is measured.
const PACE_WINDOW: Duration = Duration::from_millis(1);
/// Jobs queue for busy workers only while they finish one at least this
/// often (8,000 a second): then a queued job's turn comes soon. Streams
/// paced like a model's (64 at once, 40 ms each) finish one every 600 µs,
/// and a job queued for them waited 0.6 ms more (wrk p50).
const FINISHING_OFTEN: Duration = Duration::from_micros(125);
/// Time given to streams to end in-band once the drain deadline passed.
const CUT_GRACE: Duration = Duration::from_secs(2);

struct Shared {
    settings: Settings,
    /// Workers started so far (never more than `settings.workers`).
    spawned: AtomicUsize,
    /// Workers waiting for a job.
    idle: AtomicUsize,
    /// Jobs workers finished, ever.
    finished: AtomicU64,
    /// Busy workers from which new jobs queue (`BUSY_PER_CORE_BEFORE_QUEUEING`).
    queue_above: usize,
    handler: Arc<dyn Handler>,
    /// Draining: new requests get 503, answers say `Connection: close`.
    stopping: AtomicBool,
    /// The drain deadline passed: streams end now.
    cut: AtomicBool,
    /// The poller has seen `stopping` (idle connections closed, upgraded
    /// ones told to say goodbye).
    stop_seen: AtomicBool,
    /// The poller should close everything and return.
    exit: AtomicBool,
    /// Requests handed to workers and not yet finished.
    in_flight: AtomicUsize,
    /// Client connections open, wherever they are.
    open: Arc<AtomicUsize>,
    /// Keep-alive connections waiting for their next request.
    keep_alive_idle: AtomicUsize,
    returns: Sender<Returned>,
    /// Messages for upgraded connections, from any thread.
    links: Sender<(upgrade::ConnId, upgrade::LinkMessage)>,
    waker: Arc<Waker>,
    /// The poller's epoll, for workers giving connections back.
    registry: mio::Registry,
}

impl Shared {
    /// Workers with a job (or handed one and still waking).
    fn busy(&self) -> usize {
        let spawned = self.spawned.load(Ordering::SeqCst);
        spawned.saturating_sub(self.idle.load(Ordering::SeqCst))
    }

    /// The answer to a complete head that is refused before any of its
    /// body is accepted: the handler's screening (logged), or a 503 while
    /// draining — still accepting, so that health checks see 503 rather
    /// than a refused connection, but starting nothing new. The poller and
    /// a worker reading a connection's next request both ask here.
    fn refusal(&self, head: &Head, peer: SocketAddr) -> Option<Vec<u8>> {
        if let Some(rejection) = self.handler.screen(head, peer) {
            self.handler.log_rejected(head, &rejection);
            return Some(rejection.to_bytes(head.method() == "HEAD"));
        }
        self.stopping.load(Ordering::Relaxed).then(draining_answer)
    }

    /// A reader for the body `head` announces, within the limits.
    fn body_reader(&self, head: &Head) -> Result<request::BodyReader, RequestError> {
        let settings = &self.settings;
        Ok(
            request::BodyReader::new(head.framing, settings.max_body_bytes)?
                .trailer_limits(settings.max_header_bytes, settings.max_headers),
        )
    }
}

/// What a request that arrives while the server drains is told.
fn draining_answer() -> Vec<u8> {
    response::simple_error(
        503,
        "server is shutting down, retry on another instance",
        "Retry-After: 1\r\n",
    )
}

/// A connection a worker is done with.
enum Returned {
    /// Serve its next request.
    KeepAlive(Conn),
    /// Serve its next request; it has no input yet and the worker has
    /// registered it with the poller's epoll already, so the poller need
    /// not be woken: the request's arrival wakes it (see `give_back`).
    Watched(Conn),
    /// Registering the `Watched` connection in this slot failed.
    Unwatched(usize),
    /// Send nothing more; drain its input briefly, then close, so that the
    /// answer is not destroyed by a reset.
    Linger(Conn),
    /// It left HTTP after a 101; this protocol speaks on it now.
    Upgraded(Conn, Box<dyn Upgraded>),
}

/// What the workers are given. A request goes boxed (one allocation,
/// against copies of some 400 bytes): a worker moves it through several
/// frames on its way to the handler, and those frames stay on the stack
/// while the worker waits for an upstream, where every page a waiting
/// worker touched stays resident (README, "Requests in flight").
enum Work {
    /// A complete HTTP request.
    Request(Box<Job>),
    /// A task of an upgraded connection.
    Task(upgrade::Task),
}

/// A complete request, ready for a worker. The request is built here, not
/// by the worker, so that it reaches the handler without being moved.
struct Job {
    conn: Conn,
    req: Request,
    /// When it was queued.
    queued: Instant,
}

impl Job {
    /// A request that passed screening, read whole from `conn`.
    fn new(conn: Conn, head: Head, body: Vec<u8>, received: Instant, queued: Instant) -> Self {
        let peer = conn.peer;
        Self {
            conn,
            req: Request {
                head,
                body,
                peer,
                received,
                screened: true,
            },
            queued,
        }
    }
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    poller: Option<thread::JoinHandle<()>>,
    workers_done: Receiver<()>,
}

/// The pace of finishing jobs, as last measured.
#[derive(Clone, Copy)]
struct Pace {
    since: Instant,
    /// `Shared::finished` then.
    finished: u64,
    between: Duration,
}

/// Starts workers on demand.
struct WorkerPool {
    /// How often workers finished a job lately (only the poller uses the
    /// pool, hence a `Cell`).
    pace: Cell<Pace>,
    jobs: Arc<WorkQueue<Work>>,
    done: Sender<()>,
    shared: Arc<Shared>,
}

impl WorkerPool {
    fn spawn(&self) -> io::Result<()> {
        let n = self.shared.spawned.fetch_add(1, Ordering::SeqCst);
        let (jobs, done, shared) = (
            Arc::clone(&self.jobs),
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
                report_done(&done);
            });
        if let Err(e) = started {
            self.shared.spawned.fetch_sub(1, Ordering::SeqCst);
            self.shared.idle.fetch_sub(1, Ordering::SeqCst);
            return Err(e);
        }
        Ok(())
    }

    /// Gives `work` to a worker, starting one if none is idle; gives it
    /// back when the queue is full or closed. While many workers are busy
    /// it queues for one of them instead (see `work_queue`), and
    /// `hand_stale` sees that it does not wait long.
    fn submit(&self, jobs: &JobSender<Work>, work: Work) -> Result<(), Work> {
        // A job queues only while workers finish jobs often (with them in
        // long answers, streams, it would wait the patience out), and
        // never into a full queue: that takes the usual way (start a
        // worker, or give the job back) rather than refuse what a new
        // worker could serve.
        let shared = &self.shared;
        let queued = jobs.len();
        let may_queue = shared.busy() >= shared.queue_above
            && queued < shared.settings.queue_capacity
            && self.between_finishes() < FINISHING_OFTEN;
        if !may_queue {
            self.grow_for(queued + 1);
        }
        if jobs.try_send(work, may_queue)? == Handoff::ToParked {
            // Busy from now on, though its thread has yet to wake.
            self.shared.idle.fetch_sub(1, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Gives the jobs queued for longer than `QUEUE_PATIENCE` a worker:
    /// a parked one, or a new one when none is parked.
    fn hand_stale(&self, jobs: &JobSender<Work>) {
        let Some(cutoff) = Instant::now().checked_sub(QUEUE_PATIENCE) else {
            return;
        };
        let (handed, left) = jobs.hand_stale(cutoff);
        // Busy from now on, as in `submit`.
        self.shared.idle.fetch_sub(handed, Ordering::SeqCst);
        if left > 0 {
            self.grow_for(left);
        }
    }

    /// The time between two jobs finishing, over the last `PACE_WINDOW`
    /// or more (the window since the last look, so after a quiet spell it
    /// is long).
    fn between_finishes(&self) -> Duration {
        let mut pace = self.pace.get();
        let now = Instant::now();
        let elapsed = now.duration_since(pace.since);
        if elapsed >= PACE_WINDOW {
            let finished = self.shared.finished.load(Ordering::Relaxed);
            let count = finished.wrapping_sub(pace.finished).max(1);
            pace = Pace {
                since: now,
                finished,
                between: elapsed / u32::try_from(count).unwrap_or(u32::MAX),
            };
            self.pace.set(pace);
        }
        pace.between
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
        let poll = mio::Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), poller::WAKER)?);
        let (link_tx, link_rx) = crossbeam_channel::unbounded();
        let (job_tx, job_rx) = work_queue::work_queue::<Work>(settings.queue_capacity);
        let (return_tx, return_rx) = crossbeam_channel::unbounded::<Returned>();
        let (done_tx, done_rx) = crossbeam_channel::unbounded::<()>();
        let shared = Arc::new(Shared {
            settings: settings.clone(),
            handler,
            stopping: AtomicBool::new(false),
            cut: AtomicBool::new(false),
            stop_seen: AtomicBool::new(false),
            exit: AtomicBool::new(false),
            spawned: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            finished: AtomicU64::new(0),
            queue_above: BUSY_PER_CORE_BEFORE_QUEUEING
                * thread::available_parallelism().map_or(1, |n| n.get()),
            in_flight: AtomicUsize::new(0),
            open: Arc::new(AtomicUsize::new(0)),
            keep_alive_idle: AtomicUsize::new(0),
            returns: return_tx,
            links: link_tx,
            waker,
            registry: poll.registry().try_clone()?,
        });
        let pool = WorkerPool {
            pace: Cell::new(Pace {
                since: Instant::now(),
                finished: 0,
                between: Duration::MAX,
            }),
            jobs: job_rx,
            done: done_tx,
            shared: Arc::clone(&shared),
        };
        for _ in 0..settings.workers.min(INITIAL_WORKERS) {
            pool.spawn()?;
        }
        let poller = Poller::new(
            poll,
            listener,
            pool,
            (job_tx, return_rx, link_rx),
            Arc::clone(&shared),
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

    /// Client connections open right now.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::Relaxed)
    }

    /// Keep-alive connections waiting for their next request (nginx's
    /// "waiting").
    pub fn idle_connections(&self) -> usize {
        self.shared.keep_alive_idle.load(Ordering::Relaxed)
    }

    /// Whether a shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::Relaxed)
    }

    /// Drains and stops. While draining the server still accepts, so that
    /// health checks see 503 instead of a refused connection; every new
    /// request gets 503 and every answer `Connection: close`. In-flight
    /// requests may finish for up to `drain`; then streams still running
    /// are told to end in-band (see [`Responder::must_end`]) and get a
    /// moment to do so. True if everything finished within `drain`.
    pub fn shutdown(mut self, drain: Duration) -> bool {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _ = self.shared.waker.wake();
        let deadline = Instant::now() + drain;
        let drained = self.wait_idle(deadline);
        let seen = Instant::now() + CUT_GRACE;
        while !self.shared.stop_seen.load(Ordering::SeqCst) && Instant::now() < seen {
            thread::sleep(Duration::from_millis(5));
        }
        if !drained {
            self.shared.cut.store(true, Ordering::SeqCst);
            self.wait_idle(Instant::now() + CUT_GRACE);
        }
        self.shared.exit.store(true, Ordering::SeqCst);
        let _ = self.shared.waker.wake();
        if let Some(poller) = self.poller.take() {
            let _ = poller.join();
        }
        // The poller dropped the job queue: idle workers exit now, busy
        // ones when their request ends.
        let mut finished = 0;
        let until = Instant::now() + Duration::from_millis(100);
        while finished < self.shared.spawned.load(Ordering::SeqCst) {
            match self.workers_done.recv_deadline(until) {
                Ok(()) => finished += 1,
                Err(_) => break,
            }
        }
        drained
    }

    /// Waits until no request is in flight, or `deadline`.
    fn wait_idle(&self, deadline: Instant) -> bool {
        loop {
            if self.shared.in_flight.load(Ordering::SeqCst) == 0 {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            // Workers signal completion only through the poller's waker;
            // a short poll keeps this simple and off any hot path.
            thread::sleep((deadline - now).min(Duration::from_millis(10)));
        }
    }
}

/// A worker's life. The frames of this loop and of `serve_connection` are
/// under every upstream wait, and every stack page a waiting worker has
/// touched stays resident, so whatever else they do (taking a job,
/// running a task, waiting for a connection's next request) is kept in
/// functions of its own rather than inlined into them.
#[inline(never)]
fn worker_loop(shared: &Arc<Shared>, jobs: &WorkQueue<Work>) {
    let parking = Parking::new();
    // A job handed to this worker while it was parked was counted busy by
    // the poller (see `Handoff::ToParked`), a queued one by `next_work`.
    while let Some(work) = next_work(shared, jobs, &parking) {
        match work {
            Work::Request(job) => serve_connection(shared, jobs, job),
            Work::Task(task) => run_task(shared, task),
        }
        shared.finished.fetch_add(1, Ordering::Relaxed);
        shared.idle.fetch_add(1, Ordering::SeqCst);
    }
}

/// Tells the server a worker ended (out of line: see `worker_loop`).
#[inline(never)]
fn report_done(done: &Sender<()>) {
    let _ = done.send(());
}

/// The next job; `None` once the server stops. A queued job turns this
/// worker busy in the same step as it leaves the queue (see
/// `WorkQueue::recv`).
#[inline(never)]
fn next_work(
    shared: &Shared,
    jobs: &WorkQueue<Work>,
    parking: &Arc<Parking<Work>>,
) -> Option<Work> {
    jobs.recv(parking, || {
        shared.idle.fetch_sub(1, Ordering::SeqCst);
    })
    .map(|(work, _)| work)
}

/// Runs a task of an upgraded connection.
#[inline(never)]
fn run_task(shared: &Shared, task: upgrade::Task) {
    let worker = Worker {
        stopping: &shared.stopping,
        cut: &shared.cut,
    };
    if panic::catch_unwind(AssertUnwindSafe(|| task(&worker))).is_err() {
        crate::log::warn("a task of an upgraded connection panicked");
    }
    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
}

/// Serves `job`, then the requests that follow it on the same connection
/// for as long as they come right away (see `keep_alive`).
fn serve_connection(shared: &Shared, jobs: &WorkQueue<Work>, mut job: Box<Job>) {
    while let Some(next) = serve_one(shared, jobs, job) {
        job = next;
    }
}

/// What follows an answer: the connection is held for its next request
/// or given back, the request is logged.
#[inline(never)]
fn follow_up(
    shared: &Shared,
    jobs: &WorkQueue<Work>,
    returned: Option<Returned>,
    finished: Option<Finished>,
) -> Option<Box<Job>> {
    let held = match returned {
        Some(Returned::KeepAlive(conn)) if keep_alive::may_hold(shared, jobs, &conn) => Some(conn),
        returned => {
            // The connection goes back before the log line is
            // written: its next request need not wait for the log.
            if let Some(returned) = returned {
                give_back(shared, returned);
            }
            None
        }
    };
    if let Some((req, exchange)) = finished {
        shared.handler.log(&req, &exchange, req.received.elapsed());
    }
    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    let next = keep_alive::next_request(shared, held?)?;
    shared.in_flight.fetch_add(1, Ordering::SeqCst);
    Some(next)
}

/// Hands a connection a worker is done with to the poller, non-blocking
/// as the poller needs it (a socket that cannot be switched is dropped).
///
/// A keep-alive connection with nothing pending goes back without waking
/// the poller, which first hears of it when its next request arrives (or
/// at its next tick, which is all an idle deadline needs). That saves
/// each such request a waker write and a poller wake-up.
///
/// One that stayed registered while the worker had it (the usual case)
/// goes back without a system call. Its edge-triggered event may already
/// have come and been spent on the empty slot; the poller then marked the
/// connection (see `Poller::on_ready_while_lent`), so the worker looks for
/// that mark after queueing it and wakes the poller if it is set. One
/// that was not registered is queued first and registered second: an
/// event for it can only come once it is in the queue, and the poller
/// empties the queue before it looks at events.
fn give_back(shared: &Shared, mut returned: Returned) {
    if let Returned::KeepAlive(conn)
    | Returned::Watched(conn)
    | Returned::Linger(conn)
    | Returned::Upgraded(conn, _) = &mut returned
        && conn.blocking
    {
        if conn.stream.set_nonblocking(true).is_err() {
            return;
        }
        conn.blocking = false;
    }
    if let Returned::KeepAlive(mut conn) = returned {
        conn.idle_since = Instant::now();
        if conn.buf.is_empty() && conn.out.is_empty() && !shared.stopping.load(Ordering::Relaxed) {
            if conn.watched_while_lent() {
                let mark = Arc::clone(&conn.ready_while_lent);
                if shared.returns.send(Returned::Watched(conn)).is_ok() {
                    fence(Ordering::SeqCst);
                    if mark.load(Ordering::SeqCst) {
                        let _ = shared.waker.wake();
                    }
                }
                return;
            }
            // Only the number is kept: if the poller closes the socket
            // first, registering the number fails or names that number's
            // next socket under its own token (see `poller::slot_of`).
            let fd = conn.stream.as_raw_fd();
            let registered = std::mem::replace(&mut conn.registered, true);
            if shared.returns.send(Returned::Watched(conn)).is_ok()
                && poller::watch(&shared.registry, fd, registered).is_err()
                && shared
                    .returns
                    .send(Returned::Unwatched(poller::slot_of_fd(fd)))
                    .is_ok()
            {
                let _ = shared.waker.wake();
            }
            return;
        }
        returned = Returned::KeepAlive(conn);
    }
    if shared.returns.send(returned).is_ok() {
        let _ = shared.waker.wake();
    }
}

/// Answers a request that waited too long for a worker (HAProxy's
/// `timeout queue`): the client is better off retrying elsewhere than
/// waiting longer. Out of line, like everything rare in `serve_one`,
/// whose frame is under every upstream wait.
#[cold]
#[inline(never)]
fn too_late(settings: &Settings, mut conn: Conn) -> Returned {
    let answer = response::simple_error(
        503,
        "server busy: no worker became free in time, retry shortly",
        "Retry-After: 1\r\n",
    );
    let deadline = Instant::now() + settings.send_timeout;
    let _ = response::write_all_by(&mut conn.stream, &answer, deadline, &mut conn.blocking);
    Returned::Linger(conn)
}

/// The answer to a request its handler left unanswered (it panicked).
#[cold]
#[inline(never)]
fn internal_error(out: &mut Responder<'_>) {
    out.close_after();
    let _ = out.send_json(
        500,
        &[],
        br#"{"error":{"message":"internal error","type":"server_error"}}"#,
    );
}

/// A request served, and what the log needs of it.
type Finished = (Request, Exchange);

/// Serves `job`; returns the connection's next request when it came
/// right away.
///
/// This frame (with the worker loop's) is under the handler's, so under
/// every upstream wait, and every stack page a waiting worker touched
/// stays resident: what comes before the handler and after it is done
/// out of line (`answered`, `after_answer`, `follow_up`) to keep it small.
#[inline(never)]
fn serve_one(shared: &Shared, jobs: &WorkQueue<Work>, mut job: Box<Job>) -> Option<Box<Job>> {
    let settings = &shared.settings;
    let conn = &mut job.conn;
    // The poller's own output (a `100 Continue`) goes first.
    if !conn.out.is_empty() {
        let deadline = Instant::now() + settings.send_timeout;
        if response::write_all_by(&mut conn.stream, &conn.out, deadline, &mut conn.blocking)
            .is_err()
        {
            return follow_up(shared, jobs, None, None);
        }
        conn.out.clear();
    }
    if job.queued.elapsed() > settings.queue_timeout {
        return follow_up(shared, jobs, Some(too_late(settings, job.conn)), None);
    }
    let (conn, req) = (&mut job.conn, &job.req);
    // (An HTTP/1.0 request with a chunked body is never kept alive: the
    // head parser says so, RFC 9112 §6.1.)
    let http10 = req.head.minor_version == 0;
    let keep_alive = req.head.keep_alive;
    let head_only = req.head.method() == "HEAD";
    let drain = response::Drain {
        stopping: &shared.stopping,
        cut: &shared.cut,
    };
    let mut out = Responder::new(
        &mut conn.stream,
        drain,
        keep_alive,
        head_only,
        http10,
        settings.send_timeout,
        conn.blocking,
    );
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| shared.handler.handle(req, &mut out)));
    let answered = answered(&mut out, outcome.is_ok());
    drop(out);
    after_answer(shared, jobs, job, answered)
}

/// How a request was answered, as the connection's fate depends on it.
struct Answered {
    state: ResponseState,
    /// The connection may serve another request.
    keep: bool,
    upgraded: Option<Box<dyn Upgraded>>,
    exchange: Exchange,
    /// The socket was left blocking.
    blocking: bool,
    /// The handler returned (did not panic).
    returned: bool,
}

/// Finishes the answer (an internal error if the handler gave none) and
/// says how it went.
#[inline(never)]
fn answered(out: &mut Responder<'_>, returned: bool) -> Answered {
    if !returned {
        out.log.set("note", "panic");
    }
    // A stream whose head was never sent can still be answered properly.
    if out.state() == ResponseState::Pending || out.unsend_head() {
        internal_error(out);
    }
    Answered {
        state: out.state(),
        keep: out.keep_alive() && returned,
        upgraded: out.take_upgraded(),
        exchange: out.exchange(),
        blocking: out.socket_blocking(),
        returned,
    }
}

/// What becomes of the connection after an answer, and what to log.
#[inline(never)]
fn after_answer(
    shared: &Shared,
    jobs: &WorkQueue<Work>,
    job: Box<Job>,
    answered: Answered,
) -> Option<Box<Job>> {
    let Job { mut conn, req, .. } = *job;
    conn.blocking = answered.blocking;
    let returned = match answered.state {
        ResponseState::Upgraded if answered.returned => answered
            .upgraded
            .map(|protocol| Returned::Upgraded(conn, protocol)),
        // A write failed or timed out: nothing more may be sent, and a
        // half-written answer must not be followed by another one. A
        // stream cut short by a panic has no end the client can see but
        // the connection closing.
        ResponseState::Upgraded | ResponseState::Broken | ResponseState::Streaming => None,
        _ if answered.keep => Some(Returned::KeepAlive(conn)),
        _ => Some(Returned::Linger(conn)),
    };
    follow_up(shared, jobs, returned, Some((req, answered.exchange)))
}
