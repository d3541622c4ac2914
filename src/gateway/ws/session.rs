//! One WebSocket API connection as a state machine on the poller thread:
//! bytes in, frames out, calls started and answered. The calls themselves
//! run elsewhere ([`Port::start`]); their frames come back through
//! [`Session::on_answer`]. Nothing here blocks or knows the gateway, so
//! tests and the fuzzer drive it with bytes alone.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tungstenite::protocol::frame::Utf8Bytes;

use super::message::{self, Id, Inbound, Kind, RequestMsg};
use crate::server::Flow;
use crate::websocket::{Event, Framer, Input, close};

/// The bounds of one connection.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Message and frame sizes.
    pub frames: crate::websocket::Limits,
    /// Calls running at once.
    pub max_in_flight: usize,
    /// Outbound bytes waiting for the client before it is closed (1008).
    pub max_queued_bytes: usize,
    /// Interval of the server's heartbeats.
    pub heartbeat: Duration,
    /// Silence, with nothing in flight, after which the connection closes.
    pub idle: Duration,
}

/// A call to start.
#[derive(Debug)]
pub struct Started {
    /// Tags the call's answers ([`answer`]).
    pub number: u64,
    /// What to run.
    pub msg: RequestMsg,
    /// Set when the call should stop: cancelled, or the client left.
    pub cancel: Arc<AtomicBool>,
}

/// The connection's side of the server.
pub trait Port {
    /// The outbound queue.
    fn out(&mut self) -> &mut dyn Write;
    /// Bytes in the outbound queue not yet taken by the socket.
    fn queued(&self) -> usize;
    /// Runs a call elsewhere; false if no worker can take it.
    fn start(&mut self, call: Started) -> bool;
    /// A message went in or out.
    fn count(&mut self, _kind: Kind, _inbound: bool) {}
    /// The connection closed with this code.
    fn closed(&mut self, _code: u16) {}
    /// The gateway began draining (it may tell before the poller does).
    fn draining(&self) -> bool {
        false
    }
}

/// An answer from a running call: one frame, tagged with the call's
/// number, and whether it is the call's last. The frame's text comes
/// first so that it needs no copy on the way in.
pub fn answer(number: u64, last: bool, kind: Kind, frame: String) -> Vec<u8> {
    let mut payload = frame.into_bytes();
    payload.extend_from_slice(&number.to_le_bytes());
    payload.push(u8::from(last));
    payload.push(kind.code());
    payload
}

const TRAILER: usize = 10;

/// A call the client is owed an answer for, or that still runs.
#[derive(Debug)]
struct InFlight {
    number: u64,
    id: Id,
    cancel: Arc<AtomicBool>,
    /// The client has its last frame (or was told it was cancelled);
    /// the call may still be running.
    answered: bool,
}

/// The state of one connection.
#[derive(Debug)]
pub struct Session {
    framer: Framer,
    limits: Limits,
    calls: Vec<InFlight>,
    next_number: u64,
    last_activity: Instant,
    next_heartbeat: Instant,
    draining: bool,
    /// A close code was counted (or the connection ended without one).
    close_counted: bool,
}

impl Session {
    /// A connection whose handshake just completed.
    pub fn new(limits: Limits, now: Instant) -> Self {
        Session {
            framer: Framer::new(limits.frames),
            limits,
            calls: Vec::new(),
            next_number: 0,
            last_activity: now,
            next_heartbeat: now + limits.heartbeat,
            draining: false,
            close_counted: false,
        }
    }

    /// Bytes from the client.
    pub fn on_input(&mut self, bytes: &[u8], port: &mut dyn Port, now: Instant) -> Flow {
        self.last_activity = now;
        let mut input = Input::new(bytes);
        while let Some(event) = self.framer.next(&mut input, port.out()) {
            match event {
                Event::Text(text) => self.on_text(&text, port),
                Event::Binary(_) => {
                    port.count(Kind::Invalid, true);
                    let frame = message::error(
                        None,
                        "binary_not_supported",
                        "messages are JSON text frames, not binary ones",
                        None,
                    );
                    self.send(port, Kind::Error, frame);
                }
                Event::Ping | Event::Pong => {}
                Event::Closed(code) | Event::Failed(code) => return self.closed(port, code),
            }
            if let Some(flow) = self.overflowed(port) {
                return flow;
            }
            if self.end_if_drained(port) == Flow::Close {
                return Flow::Close;
            }
        }
        Flow::Continue
    }

    /// A frame from a running call ([`answer`]).
    pub fn on_answer(&mut self, mut payload: Vec<u8>, port: &mut dyn Port, now: Instant) -> Flow {
        let Some(split) = payload.len().checked_sub(TRAILER) else {
            return Flow::Continue;
        };
        let trailer = payload.split_off(split);
        let number = u64::from_le_bytes(trailer[..8].try_into().unwrap_or_default());
        let last = trailer[8] != 0;
        let kind = Kind::from_code(trailer[9]).unwrap_or(Kind::Error);
        let Some(at) = self.calls.iter().position(|c| c.number == number) else {
            return Flow::Continue;
        };
        if !self.calls[at].answered
            && !payload.is_empty()
            && let Ok(text) = String::from_utf8(payload)
        {
            self.send(port, kind, text);
        }
        if last {
            self.calls.remove(at);
            self.last_activity = now;
        }
        if let Some(flow) = self.overflowed(port) {
            return flow;
        }
        self.end_if_drained(port)
    }

    /// About once a second: heartbeats and the idle deadline.
    pub fn on_tick(&mut self, port: &mut dyn Port, now: Instant) -> Flow {
        if !self.framer.is_open() {
            return Flow::Close;
        }
        if !self.awaited() && now.duration_since(self.last_activity) >= self.limits.idle {
            return self.close(port, close::GOING_AWAY, "idle for too long");
        }
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + self.limits.heartbeat;
            self.send(port, Kind::Heartbeat, message::heartbeat());
        }
        self.overflowed(port).unwrap_or(Flow::Continue)
    }

    /// The server is draining: calls in flight finish, new ones are
    /// refused, and the connection closes (1001) when none is left.
    pub fn on_drain(&mut self, port: &mut dyn Port) -> Flow {
        self.draining = true;
        self.end_if_drained(port)
    }

    /// The connection is gone: every call still running stops.
    pub fn on_closed(&mut self, port: &mut dyn Port) {
        for call in &self.calls {
            call.cancel.store(true, Ordering::Relaxed);
        }
        if !self.close_counted {
            self.close_counted = true;
            port.closed(1006);
        }
    }

    /// Whether the client still waits for an answer.
    fn awaited(&self) -> bool {
        self.calls.iter().any(|c| !c.answered)
    }

    fn on_text(&mut self, text: &str, port: &mut dyn Port) {
        match message::decode(text) {
            Err(refusal) => {
                port.count(Kind::Invalid, true);
                self.send(port, Kind::Error, message::refusal(&refusal));
            }
            Ok(Inbound::Heartbeat) => {
                port.count(Kind::Heartbeat, true);
                self.send(port, Kind::Heartbeat, message::heartbeat());
            }
            Ok(Inbound::Request(msg)) => {
                port.count(Kind::Request, true);
                self.admit(msg, port);
            }
            Ok(Inbound::Batch(members)) => {
                port.count(Kind::Batch, true);
                for member in members {
                    match member {
                        Ok(msg) => self.admit(msg, port),
                        Err(refusal) => {
                            self.send(port, Kind::Error, message::refusal(&refusal));
                        }
                    }
                }
            }
            Ok(Inbound::Cancel(id)) => {
                port.count(Kind::Cancel, true);
                self.cancel(&id, port);
            }
        }
    }

    /// Starts a call, or says why not.
    fn admit(&mut self, msg: RequestMsg, port: &mut dyn Port) {
        let refuse =
            |code: &str, message: String| message::error(Some(&msg.id), code, &message, None);
        let refusal = if self.draining || port.draining() {
            Some(refuse(
                "shutting_down",
                "the server is shutting down: send the request to another instance".into(),
            ))
        } else if self.calls.iter().any(|c| !c.answered && c.id == msg.id) {
            Some(refuse(
                "duplicate_id",
                format!(
                    "request {} is already in flight on this connection",
                    msg.id.json()
                ),
            ))
        } else if self.calls.len() >= self.limits.max_in_flight {
            Some(refuse(
                "too_many_requests",
                format!(
                    "{} requests are in flight on this connection, the most allowed \
                     (--websocket-max-in-flight); wait for an answer",
                    self.calls.len()
                ),
            ))
        } else {
            None
        };
        if let Some(frame) = refusal {
            self.send(port, Kind::Error, frame);
            return;
        }
        let number = self.next_number;
        self.next_number += 1;
        let id = msg.id.clone();
        let cancel = Arc::new(AtomicBool::new(false));
        let started = Started {
            number,
            msg,
            cancel: Arc::clone(&cancel),
        };
        if port.start(started) {
            self.calls.push(InFlight {
                number,
                id,
                cancel,
                answered: false,
            });
        } else {
            let frame = message::error(
                Some(&id),
                "busy",
                "every worker is busy: retry shortly",
                Some(503),
            );
            self.send(port, Kind::Error, frame);
        }
    }

    /// Stops a call: the client is told at once; what the call still
    /// sends is dropped.
    fn cancel(&mut self, id: &Id, port: &mut dyn Port) {
        let Some(call) = self.calls.iter_mut().find(|c| !c.answered && c.id == *id) else {
            let frame = message::error(
                Some(id),
                "unknown_id",
                &format!("no request {} is in flight on this connection", id.json()),
                None,
            );
            self.send(port, Kind::Error, frame);
            return;
        };
        call.cancel.store(true, Ordering::Relaxed);
        call.answered = true;
        let frame = message::error(Some(id), "cancelled", "cancelled by the client", Some(499));
        self.send(port, Kind::Error, frame);
    }

    fn send(&mut self, port: &mut dyn Port, kind: Kind, frame: String) {
        if self.framer.send_text(Utf8Bytes::from(frame), port.out()) {
            port.count(kind, false);
        }
    }

    /// Closes (1008) a connection whose client does not read.
    fn overflowed(&mut self, port: &mut dyn Port) -> Option<Flow> {
        (port.queued() > self.limits.max_queued_bytes).then(|| {
            self.close(
                port,
                close::POLICY,
                "outbound queue over its bound: the client does not read",
            )
        })
    }

    fn end_if_drained(&mut self, port: &mut dyn Port) -> Flow {
        if self.draining && !self.awaited() {
            return self.close(port, close::GOING_AWAY, "server shutting down");
        }
        Flow::Continue
    }

    fn close(&mut self, port: &mut dyn Port, code: u16, reason: &str) -> Flow {
        self.framer.close(code, reason, port.out());
        self.closed(port, code)
    }

    fn closed(&mut self, port: &mut dyn Port, code: u16) -> Flow {
        if !self.close_counted {
            self.close_counted = true;
            port.closed(code);
        }
        self.on_closed(port);
        Flow::Close
    }
}
