//! The WebSocket API (README, "WebSocket API"): `GET /ws` upgrades, then
//! JSON messages carry requests and their answers, several at once.
//!
//! The connection lives in the poller, non-blocking, costing a few KiB
//! while idle ([`session`]); a request takes a worker only while its
//! upstream call runs ([`sink`]), and its answers come back through the
//! connection's outbound queue. The handshake checks (RFC 6455, key,
//! connection bound) run here, before the 101.

mod message;
mod session;
mod sink;
#[cfg(test)]
mod tests;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::guard::{self, MAX_ECHO_BYTES};
use super::{Failure, Gateway, State};
use crate::auth;
use crate::config::LogLevel;
use crate::log::{self, Field};
use crate::metrics::Metrics;
use crate::server::{Flow, Link, Outbound, Request, Responder, Upgraded};
use crate::websocket::handshake;

pub use message::{Inbound, Kind, RequestMsg, decode};
pub use session::{Limits, Port, Session, Started, answer};

/// Open WebSocket connections of one gateway.
#[derive(Debug, Default)]
pub(super) struct Hub {
    open: AtomicUsize,
}

/// A slot among `--websocket-max-connections`, given back when dropped.
struct Slot {
    hub: Weak<Gateway>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(gateway) = self.hub.upgrade() {
            let open = gateway.websockets.open.fetch_sub(1, Ordering::SeqCst) - 1;
            if let Some(m) = &gateway.metrics {
                m.set_websocket_connections(open as i64);
            }
        }
    }
}

impl Gateway {
    /// Answers `GET /ws`: checks the handshake and the connection bound,
    /// then switches the connection to the WebSocket API.
    pub(super) fn upgrade_websocket(
        &self,
        state: &State,
        req: &Request,
        out: &mut Responder<'_>,
    ) -> Result<(), Failure> {
        // A refused upgrade ends the connection: its client meant to
        // leave HTTP, not to send another request on it.
        out.close_after();
        if let Some(origin) = req.header("origin") {
            // Any page may open a WebSocket anywhere; the key (or, without
            // one, the origin check in the guard) decides, and the log tells.
            out.log.set(
                "note",
                format!("origin={}", guard::echo(origin, MAX_ECHO_BYTES)),
            );
        }
        let accept = handshake::accept(req.method(), req.head.minor_version, |name| {
            req.header(name)
        })
        .map_err(|refusal| {
            for (name, value) in &refusal.headers {
                out.add_header(name, (*value).to_owned());
            }
            Failure::new(refusal.status, refusal.message)
        })?;
        let ws = &state.config.websocket;
        let Some(slot) = self.open_websocket(ws.max_connections) else {
            out.add_header("Retry-After", "1".to_owned());
            return Err(Failure::new(
                503,
                format!(
                    "{} WebSocket connections are open, the most allowed \
                     (--websocket-max-connections); retry shortly",
                    ws.max_connections
                ),
            ));
        };
        let limits = Limits {
            frames: crate::websocket::Limits {
                max_message_bytes: ws.max_message_size,
                max_frame_bytes: ws.max_frame_size,
            },
            max_in_flight: ws.max_in_flight,
            max_queued_bytes: ws.max_queued_bytes,
            heartbeat: ws.heartbeat_interval,
            idle: ws.idle_timeout,
        };
        let connection = Connection {
            session: Session::new(limits, Instant::now()),
            link: None,
            gateway: self.this.clone(),
            metrics: self.metrics.clone(),
            client_key: auth::presented_token(&req.head).map(std::borrow::Cow::into_owned),
            peer: req.peer,
            _slot: slot,
        };
        let headers = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept.as_str()),
        ];
        // A failed write drops the connection, and its slot with it.
        let _ = out.upgrade(&headers, Box::new(connection));
        Ok(())
    }

    fn open_websocket(&self, max: usize) -> Option<Slot> {
        let hub = &self.websockets.open;
        let mut open = hub.load(Ordering::SeqCst);
        loop {
            if open >= max {
                return None;
            }
            match hub.compare_exchange(open, open + 1, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => break,
                Err(now) => open = now,
            }
        }
        if let Some(m) = &self.metrics {
            m.set_websocket_connections(open as i64 + 1);
        }
        Some(Slot {
            hub: self.this.clone(),
        })
    }

    /// The access-log line of one WebSocket request (one per id).
    fn log_websocket_call(
        &self,
        msg: &RequestMsg,
        status: u16,
        bytes: u64,
        elapsed: Duration,
        facts: &[(&'static str, String)],
    ) {
        if !log::enabled(LogLevel::Info) {
            return;
        }
        let id = guard::echo(&msg.id.text(), MAX_ECHO_BYTES).into_owned();
        let mut fields = vec![
            ("transport", Field::Str("websocket")),
            ("method", Field::Str("WS")),
            ("route", Field::Str("/ws")),
            ("id", Field::Str(&id)),
            ("protocol", Field::Str(msg.protocol.name())),
            ("status", Field::Num(u64::from(status))),
            ("duration", Field::Secs(elapsed.as_secs_f64())),
            ("bytes", Field::Num(bytes)),
        ];
        for key in ["provider", "model", "note"] {
            if let Some((_, value)) = facts.iter().find(|(k, _)| *k == key) {
                fields.push((key, Field::Str(value)));
            }
        }
        log::event(LogLevel::Info, "request", &fields);
    }
}

/// One upgraded connection, as the poller holds it.
struct Connection {
    session: Session,
    link: Option<Link>,
    gateway: Weak<Gateway>,
    metrics: Option<Arc<Metrics>>,
    client_key: Option<String>,
    peer: SocketAddr,
    _slot: Slot,
}

/// The connection's [`Port`] while a poller callback runs.
struct Poller<'c, 'o, 'q> {
    out: &'o mut Outbound<'q>,
    link: Option<&'c Link>,
    gateway: &'c Weak<Gateway>,
    metrics: Option<&'c Metrics>,
    client_key: &'c Option<String>,
    peer: SocketAddr,
}

impl Port for Poller<'_, '_, '_> {
    fn out(&mut self) -> &mut dyn Write {
        self.out
    }

    fn queued(&self) -> usize {
        self.out.queued()
    }

    fn start(&mut self, call: Started) -> bool {
        let Some(link) = self.link else {
            return false;
        };
        let job = sink::Job {
            gateway: self.gateway.clone(),
            link: link.clone(),
            number: call.number,
            msg: call.msg,
            cancel: call.cancel,
            client_key: self.client_key.clone(),
            peer: self.peer,
        };
        self.out.run(Box::new(move |worker| sink::run(job, worker)))
    }

    fn count(&mut self, kind: Kind, inbound: bool) {
        if let Some(m) = self.metrics {
            m.websocket_message(kind.name(), inbound);
        }
    }

    fn closed(&mut self, code: u16) {
        if let Some(m) = self.metrics {
            m.websocket_closed(code);
        }
    }

    fn draining(&self) -> bool {
        self.gateway
            .upgrade()
            .is_some_and(|g| g.draining.load(Ordering::Relaxed))
    }
}

impl Connection {
    fn with<R>(
        &mut self,
        out: &mut Outbound<'_>,
        f: impl FnOnce(&mut Session, &mut dyn Port) -> R,
    ) -> R {
        let mut port = Poller {
            out,
            link: self.link.as_ref(),
            gateway: &self.gateway,
            metrics: self.metrics.as_deref(),
            client_key: &self.client_key,
            peer: self.peer,
        };
        f(&mut self.session, &mut port)
    }
}

impl Upgraded for Connection {
    fn on_adopt(&mut self, link: Link, _out: &mut Outbound<'_>) -> Flow {
        self.link = Some(link);
        Flow::Continue
    }

    fn on_input(&mut self, input: &[u8], out: &mut Outbound<'_>) -> Flow {
        self.with(out, |s, p| s.on_input(input, p, Instant::now()))
    }

    fn on_message(&mut self, message: Vec<u8>, out: &mut Outbound<'_>) -> Flow {
        self.with(out, |s, p| s.on_answer(message, p, Instant::now()))
    }

    fn on_tick(&mut self, now: Instant, out: &mut Outbound<'_>) -> Flow {
        self.with(out, |s, p| s.on_tick(p, now))
    }

    fn on_drain(&mut self, out: &mut Outbound<'_>) -> Flow {
        self.with(out, |s, p| s.on_drain(p))
    }

    fn on_closed(&mut self) {
        let mut port = Gone {
            metrics: self.metrics.as_deref(),
            sink: std::io::sink(),
        };
        self.session.on_closed(&mut port);
    }
}

/// The port of a connection that is gone: it only counts.
struct Gone<'m> {
    metrics: Option<&'m Metrics>,
    sink: std::io::Sink,
}

impl Port for Gone<'_> {
    fn out(&mut self) -> &mut dyn Write {
        &mut self.sink
    }

    fn queued(&self) -> usize {
        0
    }

    fn start(&mut self, _call: Started) -> bool {
        false
    }

    fn closed(&mut self, code: u16) {
        if let Some(m) = self.metrics {
            m.websocket_closed(code);
        }
    }
}
