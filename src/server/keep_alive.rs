//! Serving a keep-alive connection's next request on the worker that
//! answered the previous one.
//!
//! Giving a connection back to the poller and its next request to a worker
//! costs, per request, an epoll change and two thread wake-ups on top of
//! the read. A client that sends its next request right
//! after an answer (SDKs in a loop, batch jobs, agents calling tools, load
//! balancers reusing upstream connections) finds instead the worker that
//! answered it still reading, for a moment ([`HOLD`]). A head is screened
//! as soon as it is complete, as the poller does, so a refused client's
//! body is never read. Only a whole, ordinary request is served this way; anything else (a partial head, a
//! body still arriving, `Expect: 100-continue`, a malformed head) goes to
//! the poller with the bytes received, which carries on as if it had read
//! them itself. A worker holds a connection only while other workers are
//! idle and no request waits, so a busy pool never sits on quiet clients,
//! and only a connection whose client came back within [`HOLD`] last time:
//! waits that end in a timeout wake a thread for nothing, and with
//! thousands of them a second the poller's turn on the CPU comes later
//! (p99 at 5,000 req/s on 64 connections went from 1 ms to 20-60 ms in
//! one run out of four before this rule).

use std::io::{self, Read};
use std::time::{Duration, Instant};

use super::poller::{self, Conn};
use super::request::{self, BodyReader, Head, ParseStatus};
use super::response;
use super::work_queue::WorkQueue;
use super::{Job, Returned, Shared, Work, give_back};

/// How long a worker waits for the next request on a connection it just
/// answered before handing the connection to the poller. Long enough for
/// a client on the same host or LAN to turn around under load, short
/// enough that a quiet connection costs a worker only briefly.
pub(super) const HOLD: Duration = Duration::from_millis(2);

/// First read size; doubled while a request keeps arriving. The buffer is
/// zeroed before each read (safe code cannot read into spare capacity),
/// so a small first read keeps that cost small for the usual request.
const FIRST_READ: usize = 2 * 1024;
/// Largest single read.
const MAX_READ: usize = 64 * 1024;

/// Whether the worker that just answered on `conn` may wait there for the
/// next request.
#[inline(never)]
pub(super) fn may_hold(shared: &Shared, jobs: &WorkQueue<Work>, conn: &Conn) -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    conn.quick
        && !shared.stopping.load(Relaxed)
        && jobs.is_empty()
        && shared.idle.load(Relaxed) > 0
        && shared.busy() < shared.queue_above
}

/// Waits up to [`HOLD`] for the next request on `conn`. A whole request
/// that passes screening comes back ready to serve; otherwise the
/// connection goes to the poller (or is answered and closed, or dropped
/// when the client left) and `None` comes back.
#[inline(never)]
pub(super) fn next_request(shared: &Shared, mut conn: Conn) -> Option<Box<Job>> {
    // The socket stays blocking while the worker has it (writes do not
    // wait on it, see `write_all_by`); `give_back` turns it non-blocking
    // for the poller.
    match receive(shared, &mut conn) {
        Received::Whole(head, body) => {
            let now = Instant::now();
            conn.last_used = now;
            Some(Box::new(Job::new(conn, head, body, now, now)))
        }
        Received::Refused(answer) => {
            close_with(shared, conn, &answer);
            None
        }
        Received::NotYet => {
            conn.quick = false;
            // A quiet connection keeps no read buffer: with thousands of
            // them idle, a few KiB each would add up.
            if conn.buf.is_empty() {
                conn.buf = Vec::new();
            }
            give_back(shared, Returned::KeepAlive(conn));
            None
        }
        Received::Gone => None,
    }
}

enum Received {
    /// A whole request that passed screening; its bytes left the
    /// connection's input.
    Whole(Head, Vec<u8>),
    /// A head refused by screening (or while draining): this answer, then
    /// the connection closes.
    Refused(Vec<u8>),
    /// Nothing, part of a request, or something the poller must answer.
    NotYet,
    /// The client closed the connection or it failed.
    Gone,
}

/// A head that passed screening, and its body so far.
struct Pending {
    head: Head,
    reader: BodyReader,
    /// Bytes of the connection's input taken by the head and the body.
    used: usize,
}

fn receive(shared: &Shared, conn: &mut Conn) -> Received {
    let settings = &shared.settings;
    let until = Instant::now() + HOLD;
    let mut pending: Option<Pending> = None;
    loop {
        if pending.is_none() && !conn.buf.is_empty() {
            match request::parse_head(&conn.buf, settings.max_header_bytes, settings.max_headers) {
                Ok(ParseStatus::Complete(head, len)) => {
                    // Screened before any body byte is looked at, as the
                    // poller does: a refused client's body is never read.
                    if let Some(answer) = shared.refusal(&head, conn.peer) {
                        return Received::Refused(answer);
                    }
                    let Ok(reader) = shared.body_reader(&head) else {
                        return Received::NotYet;
                    };
                    pending = Some(Pending {
                        head,
                        reader,
                        used: len,
                    });
                }
                Ok(ParseStatus::Partial) => {}
                Err(_) => return Received::NotYet,
            }
        }
        if let Some(p) = pending.as_mut() {
            match p.reader.feed(&conn.buf[p.used..]) {
                Ok(n) => p.used += n,
                Err(_) => return Received::NotYet,
            }
            if p.reader.is_complete() {
                let Pending { head, reader, used } = pending.take().expect("pending");
                conn.buf.drain(..used);
                return Received::Whole(head, reader.into_body());
            }
            if p.head.expect_continue {
                // Only the poller sends `100 Continue`.
                return Received::NotYet;
            }
        }
        if Instant::now() >= until {
            return Received::NotYet;
        }
        // A blocking read with a timeout is the one wait std offers a
        // single socket; the timeout is set once per connection. The
        // poller must not be woken by the input this worker waits for.
        if conn.registered {
            poller::unwatch(&shared.registry, conn);
        }
        if !conn.blocking {
            if conn.stream.set_nonblocking(false).is_err() {
                return Received::Gone;
            }
            conn.blocking = true;
        }
        if !conn.hold_timeout_set {
            if conn.stream.set_read_timeout(Some(HOLD)).is_err() {
                return Received::Gone;
            }
            conn.hold_timeout_set = true;
        }
        let len = conn.buf.len();
        let want = len.clamp(FIRST_READ, MAX_READ);
        conn.buf.resize(len + want, 0);
        let read = conn.stream.read(&mut conn.buf[len..]);
        conn.buf.truncate(len + *read.as_ref().unwrap_or(&0));
        match read {
            Ok(0) => return Received::Gone,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Received::NotYet;
            }
            Err(_) => return Received::Gone,
        }
    }
}

fn close_with(shared: &Shared, mut conn: Conn, answer: &[u8]) {
    let deadline = Instant::now() + shared.settings.send_timeout;
    if response::write_all_by(&mut conn.stream, answer, deadline, &mut conn.blocking).is_ok() {
        give_back(shared, Returned::Linger(conn));
    }
}
