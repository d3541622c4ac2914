//! The poller thread: accepts, reads heads and bodies, writes its own
//! short answers, enforces deadlines and the connection bound, and hands
//! complete requests to the workers. Nothing here blocks: every socket the
//! poller touches is non-blocking, and an answer that does not fit in the
//! socket buffer waits in the connection's output for writability.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};

use super::keep_alive;
use super::request::{self, BodyReader, Head, ParseStatus, RequestError};
use super::response;
use super::upgrade::{ConnId, Flow, Link, LinkMessage, Outbound, Spawn, Task, Upgraded};
use super::work_queue::JobSender;
use super::{Job, Returned, Shared, Work, WorkerPool};

const LISTENER: Token = Token(0);
pub(super) const WAKER: Token = Token(1);
const FIRST_CONN: usize = 2;

/// A connection's slot is its descriptor's number, so that a worker can
/// register a connection it gives back under the token the poller will
/// look it up by, without asking the poller for a slot (see `give_back`).
/// A descriptor number names one open socket at a time, so two live
/// connections never share a slot; a registration made for a socket that
/// has since closed names the same slot as the socket's successor, which
/// costs that one at most a spurious readiness event.
fn slot_of(stream: &TcpStream) -> usize {
    slot_of_fd(stream.as_raw_fd())
}

pub(super) fn slot_of_fd(fd: RawFd) -> usize {
    // Descriptors of open sockets are never negative.
    usize::try_from(fd).unwrap_or(usize::MAX - FIRST_CONN)
}

fn token_of(slot: usize) -> Token {
    Token(slot + FIRST_CONN)
}

/// Watches socket `fd` for readability under its slot's token, from now
/// on (a renewed registration reports input that is already there).
/// `registered` says whether it is likely registered already (see
/// `Conn::registered`): renewing a registration is one system call, and
/// the guess costs a second only when it is wrong.
pub(super) fn watch(registry: &Registry, fd: RawFd, registered: bool) -> io::Result<()> {
    let token = token_of(slot_of_fd(fd));
    let mut source = SourceFd(&fd);
    if registered {
        match registry.reregister(&mut source, token, Interest::READABLE) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                registry.register(&mut source, token, Interest::READABLE)
            }
            done => done,
        }
    } else {
        match registry.register(&mut source, token, Interest::READABLE) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                registry.reregister(&mut source, token, Interest::READABLE)
            }
            done => done,
        }
    }
}

impl Conn {
    /// Lent to a worker, it stays watched: registered, with any input the
    /// poller has not read announced, so an event for it meanwhile marks
    /// it and the worker gives it back without renewing the registration.
    /// The poller decides by this at `dispatch` and the worker again at
    /// `give_back`; nothing between changes either field but the worker's
    /// own `unwatch`, which makes both say no.
    pub(super) fn watched_while_lent(&self) -> bool {
        self.registered && self.unread_input_signalled
    }
}

/// Ends `conn`'s registration with the poller's epoll.
pub(super) fn unwatch(registry: &Registry, conn: &mut Conn) {
    let _ = registry.deregister(&mut SourceFd(&conn.stream.as_raw_fd()));
    conn.registered = false;
}

/// How often deadlines are checked when nothing else happens.
const TICK: Duration = Duration::from_millis(100);
/// Pause before retrying `accept` after EMFILE/ENFILE and similar errors
/// when no idle connection can be closed to make room.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long input is drained after an answer that ends the connection.
const LINGER: Duration = Duration::from_secs(1);
/// Idle connections closed at once when file descriptors run out.
const EVICT_BATCH: usize = 16;
/// At most one resource warning per this interval; the rest are counted.
const WARN_INTERVAL: Duration = Duration::from_secs(10);
/// How often an upgraded connection's protocol is ticked.
const UPGRADED_TICK: Duration = Duration::from_secs(1);

/// Counts a connection as open for as long as it exists.
struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    fn new(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(open))
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A client connection and what the poller knows of it.
pub(super) struct Conn {
    pub(super) stream: TcpStream,
    pub(super) peer: SocketAddr,
    /// Input received and not yet consumed.
    pub(super) buf: Vec<u8>,
    /// Output the poller still has to write (its own answers, `100 Continue`).
    pub(super) out: Vec<u8>,
    phase: Phase,
    /// When the current phase times out.
    deadline: Instant,
    /// `buf` was searched for the end of a head up to here.
    scanned: usize,
    /// The write side was shut down (lingering close under way).
    write_shut: bool,
    /// Registered for writability too (output is waiting).
    watching_writes: bool,
    /// A request was served on it already (it is idle between requests,
    /// not waiting for its first).
    served: bool,
    /// When its last request arrived (or it was accepted): the least
    /// recently used idle connection is the first to make room.
    pub(super) last_used: Instant,
    /// The read timeout a worker waits with between requests is set (see
    /// `keep_alive`).
    pub(super) hold_timeout_set: bool,
    /// The socket is in blocking mode: a worker made it so to wait on it.
    /// The poller needs it non-blocking (see `give_back`).
    pub(super) blocking: bool,
    /// Its client sends the next request right after an answer: the
    /// worker that answers may wait for it (see `keep_alive`).
    pub(super) quick: bool,
    /// When it last went idle between requests (set by the worker that
    /// lets go of it: the poller may take it back later).
    pub(super) idle_since: Instant,
    /// Its socket is registered with the poller's epoll. It stays so
    /// while a worker serves a request (see `dispatch`) and until the
    /// worker waits on it itself (see `keep_alive`).
    pub(super) registered: bool,
    /// Input the poller has not read would raise an event (or raised one
    /// after its last read): that read came back short, so the socket was
    /// empty then, or the registration was renewed since. Edge-triggered
    /// epoll reports nothing else again.
    unread_input_signalled: bool,
    /// Set by the poller when an event for the socket came while a worker
    /// had it, still watched (see `Conn::watched_while_lent`): that event
    /// is spent, so whoever takes the connection back must read (see
    /// `Poller::on_ready_while_lent`).
    pub(super) ready_while_lent: Arc<AtomicBool>,
    _open: OpenGuard,
}

enum Phase {
    /// Between requests (keep-alive).
    Idle,
    /// Part of a head has arrived.
    Head,
    /// The head was accepted; its body is arriving.
    Body(Box<Pending>),
    /// An answer that ends the connection is written or being written;
    /// input is drained until EOF or the deadline, then the socket closes.
    Closing,
    /// After a 101: another protocol speaks on the connection.
    Upgraded(Box<UpgradedConn>),
}

/// The protocol of an upgraded connection and its identity.
struct UpgradedConn {
    protocol: Box<dyn Upgraded>,
    id: ConnId,
}

/// A request whose head was accepted and whose body is arriving.
struct Pending {
    head: Head,
    reader: BodyReader,
    received: Instant,
}

/// Rate-limits one kind of warning.
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    fn warn(&mut self, message: &str) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < WARN_INTERVAL)
        {
            self.suppressed += 1;
            return;
        }
        let suppressed = std::mem::take(&mut self.suppressed);
        self.last = Some(now);
        if suppressed > 0 {
            crate::log::warn(&format!(
                "{message} ({suppressed} more since the last warning)"
            ));
        } else {
            crate::log::warn(message);
        }
    }
}

pub(super) struct Poller {
    pool: WorkerPool,
    /// Scratch space for non-blocking reads, allocated once.
    scratch: Box<[u8]>,
    poll: Poll,
    listener: Option<TcpListener>,
    /// Indexed by descriptor number (see `slot_of`).
    conns: Vec<Option<Conn>>,
    /// For a slot whose connection a worker has while it stays
    /// registered: that connection's `ready_while_lent`, which an event
    /// for the empty slot sets.
    lent: Vec<Option<Arc<AtomicBool>>>,
    jobs: Option<JobSender<Work>>,
    returns: Receiver<Returned>,
    links: Receiver<(ConnId, LinkMessage)>,
    /// Gives every upgraded connection an identity of its own.
    generation: u64,
    next_upgraded_tick: Instant,
    shared: Arc<Shared>,
    accept_retry_at: Option<Instant>,
    accept_warnings: Throttle,
    stop_begun: bool,
}

impl Poller {
    pub(super) fn new(
        poll: Poll,
        listener: TcpListener,
        pool: WorkerPool,
        (jobs, returns, links): (
            JobSender<Work>,
            Receiver<Returned>,
            Receiver<(ConnId, LinkMessage)>,
        ),
        shared: Arc<Shared>,
    ) -> io::Result<Self> {
        poll.registry().register(
            &mut SourceFd(&listener.as_raw_fd()),
            LISTENER,
            Interest::READABLE,
        )?;
        Ok(Self {
            pool,
            scratch: vec![0u8; 16 * 1024].into_boxed_slice(),
            poll,
            listener: Some(listener),
            conns: Vec::new(),
            lent: Vec::new(),
            jobs: Some(jobs),
            returns,
            links,
            generation: 0,
            next_upgraded_tick: Instant::now() + UPGRADED_TICK,
            shared,
            accept_retry_at: None,
            accept_warnings: Throttle::default(),
            stop_begun: false,
        })
    }

    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut last_sweep = Instant::now();
        loop {
            // A queued job is looked at again after `QUEUE_PATIENCE`
            // (rounded up to epoll's millisecond).
            let jobs_waiting = self.jobs.as_ref().is_some_and(|jobs| !jobs.is_empty());
            let wait = if jobs_waiting {
                super::QUEUE_PATIENCE
            } else {
                TICK
            };
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    crate::log::error(&format!("poll failed: {e}"));
                    thread::sleep(TICK);
                }
                continue;
            }
            // Connections come back before events are looked at: one a
            // worker registered itself was queued before it was registered,
            // so an event for it finds it here.
            self.adopt_returned();
            for event in &events {
                match event.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {}
                    Token(t) => self.on_ready(t - FIRST_CONN),
                }
            }
            while let Ok((id, message)) = self.links.try_recv() {
                self.on_link(id, message);
            }
            // A job that waited out the patience was queued before this
            // turn's wait (one queued during a long turn is seen next turn).
            if jobs_waiting && let Some(jobs) = &self.jobs {
                self.pool.hand_stale(jobs);
            }
            if self.accept_retry_at.is_some_and(|at| Instant::now() >= at) {
                self.accept_retry_at = None;
                self.accept_all();
            }
            if self.shared.stopping.load(Ordering::Relaxed) && !self.stop_begun {
                self.stop_begun = true;
                self.close_idle();
                self.drain_upgraded();
                self.shared.stop_seen.store(true, Ordering::SeqCst);
            }
            if self.shared.exit.load(Ordering::SeqCst) {
                // What the last tasks sent before they finished (the exit
                // comes after them) reaches their connections first.
                while let Ok((id, message)) = self.links.try_recv() {
                    self.on_link(id, message);
                }
                // Last words (a 503, a goodbye frame) go to the kernel
                // before the sockets close; nothing waits for them.
                let registry = self.poll.registry();
                for (slot, conn) in self.conns.iter_mut().enumerate() {
                    if let Some(conn) = conn {
                        let _ = flush(conn, registry, slot);
                    }
                }
                return;
            }
            let now = Instant::now();
            if now.duration_since(last_sweep) >= TICK {
                last_sweep = now;
                self.sweep(now);
            }
            if now >= self.next_upgraded_tick {
                self.next_upgraded_tick = now + UPGRADED_TICK;
                self.tick_upgraded(now);
            }
        }
    }

    /// Closes keep-alive connections between requests; a connection still
    /// waiting for its first request gets its answer (a 503 while
    /// draining), so a client that connected just then is not reset.
    fn close_idle(&mut self) {
        for slot in 0..self.conns.len() {
            if matches!(self.conns[slot].as_ref(), Some(c) if c.served && matches!(c.phase, Phase::Idle))
            {
                self.close(slot);
            }
        }
    }

    fn accept_all(&mut self) {
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.on_accepted(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS…: the pending connection stays
                    // queued in the kernel. Make room by closing the oldest
                    // idle keep-alive connections (nginx does the same),
                    // else retry after a pause instead of spinning.
                    let closed = self.evict_idle(EVICT_BATCH);
                    self.accept_warnings.warn(&format!(
                        "accept failed: {e}; closed {closed} idle connections"
                    ));
                    if closed == 0 {
                        self.accept_retry_at = Some(Instant::now() + ACCEPT_BACKOFF);
                        return;
                    }
                }
            }
        }
    }

    fn on_accepted(&mut self, stream: TcpStream, peer: SocketAddr) {
        let guard = OpenGuard::new(&self.shared.open);
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let _ = stream.set_nodelay(true);
        let max = self.shared.settings.max_connections;
        if self.shared.open.load(Ordering::Relaxed) > max {
            // Connections the workers just finished with are idle ones too.
            self.adopt_returned();
        }
        if self.shared.open.load(Ordering::Relaxed) > max && self.evict_idle(1) == 0 {
            // Every connection is busy: say so rather than queue without end.
            self.accept_warnings.warn(&format!(
                "{max} connections open (--max-connections), none idle: answering 503"
            ));
            let answer = response::simple_error(
                503,
                "too many connections, retry shortly",
                "Retry-After: 1\r\n",
            );
            let _ = (&stream).write(&answer);
            let _ = stream.shutdown(Shutdown::Write);
            return;
        }
        let conn = Conn {
            stream,
            peer,
            buf: Vec::new(),
            out: Vec::new(),
            phase: Phase::Idle,
            deadline: Instant::now() + self.shared.settings.header_timeout,
            scanned: 0,
            write_shut: false,
            watching_writes: false,
            served: false,
            last_used: Instant::now(),
            hold_timeout_set: false,
            blocking: false,
            quick: false,
            idle_since: Instant::now(),
            registered: false,
            unread_input_signalled: true,
            ready_while_lent: Arc::new(AtomicBool::new(false)),
            _open: guard,
        };
        if let Some(slot) = self.insert(conn) {
            // A fresh connection may already carry its request.
            self.on_ready(slot);
        }
    }

    /// Closes up to `n` idle keep-alive connections, oldest first.
    fn evict_idle(&mut self, n: usize) -> usize {
        let mut closed = 0;
        while closed < n {
            let oldest = self
                .conns
                .iter()
                .enumerate()
                .filter_map(|(slot, c)| match c {
                    Some(c) if matches!(c.phase, Phase::Idle) => Some((c.last_used, slot)),
                    _ => None,
                })
                .min();
            let Some((_, slot)) = oldest else { break };
            self.close(slot);
            closed += 1;
        }
        closed
    }

    /// Takes back every connection the workers have returned so far.
    fn adopt_returned(&mut self) {
        while let Ok(returned) = self.returns.try_recv() {
            self.adopt(returned);
        }
    }

    /// Takes back a connection from a worker.
    fn adopt(&mut self, returned: Returned) {
        let now = Instant::now();
        match returned {
            Returned::KeepAlive(conn) | Returned::Watched(conn)
                if self.shared.stopping.load(Ordering::Relaxed) =>
            {
                drop(conn)
            }
            Returned::KeepAlive(mut conn) => {
                conn.scanned = 0;
                conn.served = true;
                let pipelined = !conn.buf.is_empty();
                if pipelined {
                    conn.phase = Phase::Head;
                    conn.deadline = now + self.shared.settings.header_timeout;
                } else {
                    self.idle(&mut conn);
                }
                if let Some(slot) = self.insert(conn)
                    && pipelined
                {
                    self.advance(slot);
                }
            }
            Returned::Watched(mut conn) => {
                conn.scanned = 0;
                conn.served = true;
                conn.watching_writes = false;
                self.idle(&mut conn);
                let slot = slot_of(&conn.stream);
                let missed = conn.ready_while_lent.swap(false, Ordering::SeqCst);
                self.place(slot, conn);
                if missed {
                    self.on_ready(slot);
                }
            }
            // The worker could not register it: try once more, else the
            // client would wait for the idle deadline for nothing.
            Returned::Unwatched(slot) => {
                let registered = match self.conns.get(slot).and_then(Option::as_ref) {
                    Some(conn) => {
                        watch(self.poll.registry(), conn.stream.as_raw_fd(), true).is_ok()
                    }
                    None => true,
                };
                if !registered {
                    self.close(slot);
                }
            }
            Returned::Upgraded(conn, protocol) => self.adopt_upgraded(conn, protocol),
            Returned::Linger(mut conn) => {
                conn.phase = Phase::Closing;
                conn.buf = Vec::new();
                conn.deadline = now + LINGER;
                let _ = conn.stream.shutdown(Shutdown::Write);
                conn.write_shut = true;
                self.insert(conn);
            }
        }
    }

    /// A connection back between requests: idle since its worker let go.
    fn idle(&self, conn: &mut Conn) {
        conn.phase = Phase::Idle;
        self.shared.keep_alive_idle.fetch_add(1, Ordering::Relaxed);
        conn.deadline = conn.idle_since + self.shared.settings.idle_timeout;
    }

    fn insert(&mut self, mut conn: Conn) -> Option<usize> {
        // Writability is watched only once an answer did not fit in the
        // socket buffer (see `flush`).
        conn.watching_writes = false;
        // Renewing the registration reports input already there.
        conn.ready_while_lent.store(false, Ordering::Relaxed);
        conn.unread_input_signalled = true;
        if watch(
            self.poll.registry(),
            conn.stream.as_raw_fd(),
            conn.registered,
        )
        .is_err()
        {
            return None;
        }
        conn.registered = true;
        let slot = slot_of(&conn.stream);
        self.place(slot, conn);
        Some(slot)
    }

    /// Puts a registered connection in its slot.
    fn place(&mut self, slot: usize, conn: Conn) {
        if self.conns.len() <= slot {
            self.conns.resize_with(slot + 1, || None);
        }
        self.conns[slot] = Some(conn);
        if let Some(lent) = self.lent.get_mut(slot) {
            *lent = None;
        }
    }

    /// Remembers that a worker has `conn` while it stays registered.
    fn lend(&mut self, slot: usize, conn: &Conn) {
        if self.lent.len() <= slot {
            self.lent.resize_with(slot + 1, || None);
        }
        self.lent[slot] = Some(Arc::clone(&conn.ready_while_lent));
    }

    /// An event for a slot whose connection a worker has: marks the
    /// connection, then takes back what workers returned. A worker checks
    /// the mark after queueing the connection and wakes the poller if it
    /// is set; the poller sets it before looking at the queue. With a full
    /// fence between each side's two steps, at least one of them sees the
    /// other's: the connection is found here, or its worker wakes the
    /// poller to find it (see `give_back`).
    fn on_ready_while_lent(&mut self, slot: usize) {
        let Some(mark) = self.lent.get(slot).and_then(Option::as_ref) else {
            return;
        };
        mark.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        self.adopt_returned();
    }

    /// The socket is readable or writable (or both, or closed).
    fn on_ready(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            self.on_ready_while_lent(slot);
            return;
        };
        if flush(conn, self.poll.registry(), slot).is_err() {
            self.close(slot);
            return;
        }
        if matches!(conn.phase, Phase::Closing) {
            self.drain_closing(slot);
            return;
        }
        if matches!(conn.phase, Phase::Upgraded(_)) {
            self.read_upgraded(slot);
            return;
        }
        loop {
            let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                return;
            };
            match conn.stream.read(&mut self.scratch) {
                Ok(0) => {
                    self.close(slot);
                    return;
                }
                Ok(n) => {
                    conn.buf.extend_from_slice(&self.scratch[..n]);
                    conn.unread_input_signalled = n < self.scratch.len();
                    if !self.advance(slot) {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close(slot);
                    return;
                }
            }
        }
    }

    /// Reads and discards input of a closing connection; closes it at EOF.
    fn drain_closing(&mut self, slot: usize) {
        // An empty buffer would read as end of input and close the socket
        // with the peer's bytes unread: a reset.
        debug_assert!(!self.scratch.is_empty(), "the read buffer is lent out");
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if conn.out.is_empty() && !conn.write_shut {
            let _ = conn.stream.shutdown(Shutdown::Write);
            conn.write_shut = true;
        }
        loop {
            match conn.stream.read(&mut self.scratch) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => break,
            }
        }
        if conn.out.is_empty() {
            self.close(slot);
        }
    }

    /// Moves a connection on with the input it has; false once it left
    /// its slot or must not be read further.
    fn advance(&mut self, slot: usize) -> bool {
        loop {
            let settings = &self.shared.settings;
            let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                return false;
            };
            match &mut conn.phase {
                Phase::Closing | Phase::Upgraded(_) => return false,
                Phase::Body(pending) => {
                    let used = match pending.reader.feed(&conn.buf) {
                        Ok(used) => used,
                        Err(err) => {
                            self.refuse(slot, &err);
                            return false;
                        }
                    };
                    conn.buf.drain(..used);
                    if !pending.reader.is_complete() {
                        return true;
                    }
                    self.dispatch(slot);
                    return false;
                }
                Phase::Idle | Phase::Head => {
                    if conn.buf.is_empty() {
                        return true;
                    }
                    if matches!(conn.phase, Phase::Idle) {
                        if conn.served {
                            self.shared.keep_alive_idle.fetch_sub(1, Ordering::Relaxed);
                        }
                        conn.phase = Phase::Head;
                        conn.deadline = Instant::now() + settings.header_timeout;
                    }
                    // Parse only once the bytes could hold a complete head,
                    // so a head sent a byte at a time costs linear time.
                    let from = conn.scanned.saturating_sub(3);
                    conn.scanned = conn.buf.len();
                    if conn.buf.len() <= settings.max_header_bytes
                        && !may_end_head(&conn.buf[from..])
                    {
                        return true;
                    }
                    match request::parse_head(
                        &conn.buf,
                        settings.max_header_bytes,
                        settings.max_headers,
                    ) {
                        Ok(ParseStatus::Partial) => return true,
                        Ok(ParseStatus::Complete(head, len)) => {
                            conn.buf.drain(..len);
                            conn.scanned = 0;
                            if !self.accept_head(slot, head) {
                                return false;
                            }
                        }
                        Err(err) => {
                            self.refuse(slot, &err);
                            return false;
                        }
                    }
                }
            }
        }
    }

    /// Screens a complete head; starts reading its body if it passes.
    fn accept_head(&mut self, slot: usize, head: Head) -> bool {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return false;
        };
        let refused = self
            .shared
            .refusal(&head, conn.peer)
            .or_else(|| self.jobs.is_none().then(super::draining_answer));
        if let Some(answer) = refused {
            self.answer_and_close(slot, answer);
            return false;
        }
        let reader = match self.shared.body_reader(&head) {
            Ok(reader) => reader,
            Err(err) => {
                self.refuse(slot, &err);
                return false;
            }
        };
        let settings = &self.shared.settings;
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return false;
        };
        // `100 Continue` only to a request that passed screening, fits the
        // limit and whose body is not already on its way; never to HTTP/1.0
        // (RFC 9110 §10.1.1).
        if head.expect_continue
            && head.minor_version >= 1
            && conn.buf.is_empty()
            && !reader.is_complete()
        {
            conn.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            if flush(conn, self.poll.registry(), slot).is_err() {
                self.close(slot);
                return false;
            }
        }
        let now = Instant::now();
        conn.deadline = now + settings.body_timeout;
        conn.phase = Phase::Body(Box::new(Pending {
            head,
            reader,
            received: now,
        }));
        true
    }

    /// Hands a complete request to the workers, or answers 503.
    fn dispatch(&mut self, slot: usize) {
        // The socket stays registered: the worker gives it back without
        // changing its registration, and an event for it meanwhile marks
        // it (see `on_ready_while_lent`). Not one watched for writability,
        // though: each acknowledgement of the worker's answer would wake
        // the poller for nothing.
        let Some(mut conn) = self.take(slot) else {
            return;
        };
        if conn.watching_writes {
            unwatch(self.poll.registry(), &mut conn);
        } else if conn.watched_while_lent() {
            self.lend(slot, &conn);
        }
        // The poller's own clock orders connections by their requests'
        // arrival, which is what "least recently used" means to a client.
        conn.last_used = Instant::now();
        conn.quick = conn.served && conn.last_used - conn.idle_since < keep_alive::HOLD;
        let Phase::Body(pending) = std::mem::replace(&mut conn.phase, Phase::Idle) else {
            return;
        };
        let Some(jobs) = self.jobs.as_ref() else {
            return;
        };
        let Pending {
            head,
            reader,
            received,
        } = *pending;
        self.shared.in_flight.fetch_add(1, Ordering::SeqCst);
        let job = Box::new(Job::new(
            conn,
            head,
            reader.into_body(),
            received,
            Instant::now(),
        ));
        if let Err(Work::Request(job)) = self.pool.submit(jobs, Work::Request(job)) {
            self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            let answer =
                response::simple_error(503, "server busy, retry shortly", "Retry-After: 1\r\n");
            if let Some(slot) = self.insert(job.conn) {
                self.answer_and_close(slot, answer);
            }
        }
    }

    /// Answers a request that could not be read, and closes.
    fn refuse(&mut self, slot: usize, err: &RequestError) {
        let (status, why) = err.status();
        self.answer_and_close(slot, response::simple_error(status, why, ""));
    }

    /// Queues `answer`, then closes the connection without resetting the
    /// answer away: the write side is shut once the answer is out and the
    /// input drained for a moment.
    fn answer_and_close(&mut self, slot: usize, answer: Vec<u8>) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        conn.out.extend_from_slice(&answer);
        conn.buf = Vec::new();
        conn.phase = Phase::Closing;
        conn.deadline = Instant::now() + LINGER;
        if flush(conn, self.poll.registry(), slot).is_err() {
            self.close(slot);
            return;
        }
        self.drain_closing(slot);
    }

    fn sweep(&mut self, now: Instant) {
        for slot in 0..self.conns.len() {
            let Some(conn) = self.conns[slot].as_ref() else {
                continue;
            };
            if now < conn.deadline {
                continue;
            }
            match conn.phase {
                Phase::Idle | Phase::Closing => self.close(slot),
                // Upgraded protocols keep their own deadlines (on_tick).
                Phase::Upgraded(_) => {}
                Phase::Head => {
                    let answer =
                        response::simple_error(408, "request head not received in time", "");
                    self.answer_and_close(slot, answer);
                }
                Phase::Body(_) => self.refuse(slot, &RequestError::Timeout),
            }
        }
    }

    /// Takes a connection out of its slot; its registration stays.
    fn take(&mut self, slot: usize) -> Option<Conn> {
        let conn = self.conns.get_mut(slot)?.take()?;
        if conn.served && matches!(conn.phase, Phase::Idle) {
            self.shared.keep_alive_idle.fetch_sub(1, Ordering::Relaxed);
        }
        Some(conn)
    }

    fn close(&mut self, slot: usize) {
        let Some(mut conn) = self.take(slot) else {
            return;
        };
        unwatch(self.poll.registry(), &mut conn);
        if let Phase::Upgraded(upgraded) = &mut conn.phase {
            upgraded.protocol.on_closed();
        }
    }

    fn adopt_upgraded(&mut self, mut conn: Conn, protocol: Box<dyn Upgraded>) {
        if self.shared.stopping.load(Ordering::Relaxed) {
            return;
        }
        self.generation += 1;
        let pending = std::mem::take(&mut conn.buf);
        // Upgraded protocols keep their own deadlines; this one is only a
        // backstop the sweep never acts on.
        conn.deadline = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        conn.phase = Phase::Upgraded(Box::new(UpgradedConn {
            protocol,
            id: ConnId {
                slot: 0,
                generation: self.generation,
            },
        }));
        let Some(slot) = self.insert(conn) else {
            return;
        };
        let link = Link {
            id: ConnId {
                slot,
                generation: self.generation,
            },
            tx: self.shared.links.clone(),
            waker: Arc::clone(&self.shared.waker),
        };
        self.with_upgraded(slot, |protocol, out| {
            if protocol.on_adopt(link, out) == Flow::Close {
                return Flow::Close;
            }
            if pending.is_empty() {
                Flow::Continue
            } else {
                protocol.on_input(&pending, out)
            }
        });
        if let Some(Some(conn)) = self.conns.get_mut(slot)
            && let Phase::Upgraded(upgraded) = &mut conn.phase
        {
            upgraded.id.slot = slot;
        }
    }

    /// Runs `f` on the protocol of an upgraded connection, then sends what
    /// it queued, or starts closing when it says so.
    fn with_upgraded(
        &mut self,
        slot: usize,
        f: impl FnOnce(&mut dyn Upgraded, &mut Outbound<'_>) -> Flow,
    ) {
        if self.run_upgraded(slot, f) == Flow::Close {
            self.close_upgraded(slot);
        }
    }

    /// Runs `f` on the protocol of an upgraded connection and sends what it
    /// queued; the caller acts on the flow. (Closing drains the input into
    /// `scratch`, which `read_upgraded` lends out while `f` runs.)
    fn run_upgraded(
        &mut self,
        slot: usize,
        f: impl FnOnce(&mut dyn Upgraded, &mut Outbound<'_>) -> Flow,
    ) -> Flow {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return Flow::Continue;
        };
        let Phase::Upgraded(upgraded) = &mut conn.phase else {
            return Flow::Continue;
        };
        let workers = Tasks {
            jobs: self.jobs.as_ref(),
            pool: &self.pool,
        };
        let flow = f(
            upgraded.protocol.as_mut(),
            &mut Outbound {
                queue: &mut conn.out,
                workers: &workers,
            },
        );
        if flush(conn, self.poll.registry(), slot).is_err() {
            self.close(slot);
            return Flow::Continue;
        }
        flow
    }

    /// Ends an upgraded connection: what is queued still goes out (for a
    /// moment), then the socket closes.
    fn close_upgraded(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if let Phase::Upgraded(upgraded) = &mut conn.phase {
            upgraded.protocol.on_closed();
        }
        conn.phase = Phase::Closing;
        conn.deadline = Instant::now() + LINGER;
        self.drain_closing(slot);
    }

    fn read_upgraded(&mut self, slot: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                return;
            };
            if !matches!(conn.phase, Phase::Upgraded(_)) {
                return;
            }
            match conn.stream.read(&mut self.scratch) {
                Ok(0) => {
                    self.close(slot);
                    return;
                }
                Ok(n) => {
                    // Lent out for the call: the protocol reads it while
                    // `self` is borrowed for the connection.
                    let scratch = std::mem::take(&mut self.scratch);
                    let flow = self
                        .run_upgraded(slot, |protocol, out| protocol.on_input(&scratch[..n], out));
                    self.scratch = scratch;
                    if flow == Flow::Close {
                        self.close_upgraded(slot);
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close(slot);
                    return;
                }
            }
        }
    }

    fn on_link(&mut self, id: ConnId, message: LinkMessage) {
        let current = self
            .conns
            .get(id.slot)
            .and_then(Option::as_ref)
            .is_some_and(|c| matches!(&c.phase, Phase::Upgraded(u) if u.id == id));
        if !current {
            return;
        }
        match message {
            LinkMessage::Payload(payload) => {
                self.with_upgraded(id.slot, |protocol, out| protocol.on_message(payload, out));
            }
            LinkMessage::Close => self.close_upgraded(id.slot),
        }
    }

    fn upgraded_slots(&self) -> Vec<usize> {
        (0..self.conns.len())
            .filter(|&slot| {
                matches!(&self.conns[slot], Some(c) if matches!(c.phase, Phase::Upgraded(_)))
            })
            .collect()
    }

    fn tick_upgraded(&mut self, now: Instant) {
        for slot in self.upgraded_slots() {
            self.with_upgraded(slot, |protocol, out| protocol.on_tick(now, out));
        }
    }

    fn drain_upgraded(&mut self) {
        for slot in self.upgraded_slots() {
            self.with_upgraded(slot, |protocol, out| protocol.on_drain(out));
        }
    }
}

/// The worker queue as upgraded protocols reach it.
struct Tasks<'a> {
    jobs: Option<&'a JobSender<Work>>,
    pool: &'a WorkerPool,
}

impl Spawn for Tasks<'_> {
    fn spawn(&self, task: Task) -> bool {
        let Some(jobs) = self.jobs else {
            return false;
        };
        let shared = &self.pool.shared;
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        if self.pool.submit(jobs, Work::Task(task)).is_err() {
            shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }
}

/// Writes as much of the pending output as the socket takes now; when
/// some is left, watches the socket for writability (edge-triggered, so
/// the event comes once the peer has read).
fn flush(conn: &mut Conn, registry: &Registry, slot: usize) -> io::Result<()> {
    while !conn.out.is_empty() {
        match conn.stream.write(&conn.out) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                conn.out.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !conn.watching_writes {
                    registry.reregister(
                        &mut SourceFd(&conn.stream.as_raw_fd()),
                        token_of(slot),
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    conn.watching_writes = true;
                }
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether `bytes` contain the blank line that ends a head (CRLF or bare
/// LF line endings).
fn may_end_head(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|w| w == b"\n\n" || w == b"\n\r")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_can_only_end_at_a_blank_line() {
        assert!(!may_end_head(b"GET / HTTP/1.1\r\nHost: x\r"));
        assert!(may_end_head(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(may_end_head(b"x\n\n"));
    }
}
