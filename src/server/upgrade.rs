//! Connections that left HTTP after a `101 Switching Protocols`.
//!
//! The handler that answered 101 gives the server an [`Upgraded`]: from
//! then on the poller owns the connection, non-blocking, like an idle
//! keep-alive one. Bytes from the peer go to [`Upgraded::on_input`] on the
//! poller thread; what it writes goes into the connection's outbound queue,
//! which the poller drains when the socket is writable, so nothing ever
//! blocks on a slow peer. Other threads (a worker that finished an upstream
//! call) reach the connection through its [`Link`]: what they send arrives
//! at [`Upgraded::on_message`], on the poller thread again, so the protocol
//! state needs no lock. Work that may block (an upstream call) goes to the
//! server's workers as a [`Task`] through [`Outbound::run`], sharing their
//! bound with HTTP requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crossbeam_channel::Sender;
use mio::Waker;

/// What the poller does with an upgraded connection after a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep it.
    Continue,
    /// Send what is queued, then close it.
    Close,
}

/// The protocol spoken on an upgraded connection. Every method runs on
/// the poller thread and must not block.
pub trait Upgraded: Send {
    /// The connection was adopted; `link` lets other threads reach it.
    fn on_adopt(&mut self, _link: Link, _out: &mut Outbound<'_>) -> Flow {
        Flow::Continue
    }

    /// Bytes arrived from the peer.
    fn on_input(&mut self, input: &[u8], out: &mut Outbound<'_>) -> Flow;

    /// A payload another thread sent through the [`Link`].
    fn on_message(&mut self, _message: Vec<u8>, _out: &mut Outbound<'_>) -> Flow {
        Flow::Continue
    }

    /// Called about once a second, for heartbeats and idle deadlines.
    fn on_tick(&mut self, _now: Instant, _out: &mut Outbound<'_>) -> Flow {
        Flow::Continue
    }

    /// The server is draining: say goodbye. The connection is closed once
    /// what is queued has been sent (or the linger time is up).
    fn on_drain(&mut self, _out: &mut Outbound<'_>) -> Flow {
        Flow::Close
    }

    /// The connection is gone (peer closed, error, or closed by us).
    fn on_closed(&mut self) {}
}

/// Work an upgraded protocol hands to the server's workers.
pub type Task = Box<dyn FnOnce(&Worker<'_>) + Send>;

/// What a [`Task`] may ask the server while it runs on a worker.
pub struct Worker<'a> {
    pub(super) stopping: &'a AtomicBool,
    pub(super) cut: &'a AtomicBool,
}

impl Worker<'_> {
    /// The drain deadline passed: a long task (a stream) should end now,
    /// as [`super::Responder::must_end`] tells HTTP streams.
    pub fn must_end(&self) -> bool {
        self.cut.load(Ordering::Relaxed)
    }

    /// The server is draining.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }
}

/// Puts tasks on the worker queue (the poller's side of [`Outbound::run`]).
pub(super) trait Spawn {
    fn spawn(&self, task: Task) -> bool;
}

/// The outbound queue of one upgraded connection, as its protocol sees it,
/// and its way to the workers.
pub struct Outbound<'a> {
    pub(super) queue: &'a mut Vec<u8>,
    pub(super) workers: &'a dyn Spawn,
}

impl Outbound<'_> {
    /// Queues bytes for the peer.
    pub fn write(&mut self, bytes: &[u8]) {
        self.queue.extend_from_slice(bytes);
    }

    /// Bytes queued and not yet taken by the socket: a peer that does not
    /// read makes this grow, and the protocol decides where to stop.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Runs `task` on a worker. Tasks and HTTP requests share the workers
    /// and their queue; false when the queue is full (the protocol says
    /// "busy" its own way), and the task is dropped unrun.
    pub fn run(&mut self, task: Task) -> bool {
        self.workers.spawn(task)
    }
}

impl std::io::Write for Outbound<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.queue.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Identifies one upgraded connection for as long as it lives (slots are
/// reused; the generation tells a new occupant from the old one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct ConnId {
    pub slot: usize,
    pub generation: u64,
}

/// What a [`Link`] carries to the poller.
pub(super) enum LinkMessage {
    Payload(Vec<u8>),
    Close,
}

/// A handle other threads use to reach an upgraded connection.
#[derive(Clone)]
pub struct Link {
    pub(super) id: ConnId,
    pub(super) tx: Sender<(ConnId, LinkMessage)>,
    pub(super) waker: Arc<Waker>,
}

impl Link {
    /// Hands `payload` to the connection's [`Upgraded::on_message`]. False
    /// if the server is gone; a connection that closed meanwhile drops it.
    pub fn send(&self, payload: Vec<u8>) -> bool {
        self.deliver(LinkMessage::Payload(payload))
    }

    /// Asks the poller to close the connection.
    pub fn close(&self) -> bool {
        self.deliver(LinkMessage::Close)
    }

    fn deliver(&self, message: LinkMessage) -> bool {
        if self.tx.send((self.id, message)).is_err() {
            return false;
        }
        let _ = self.waker.wake();
        true
    }
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("id", &self.id).finish()
    }
}
