//! The session state machine, bytes in and bytes out, with a port that
//! records the calls it is asked to start.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::message::Kind;
use super::session::{Limits, Port, Session, Started, answer};
use crate::server::Flow;
use crate::websocket::client::{self, ServerFrame, opcode};

struct TestPort {
    out: Vec<u8>,
    started: Vec<Started>,
    /// `start` answers this.
    accept: bool,
    /// Pretend this much is queued besides `out`.
    backlog: usize,
    counted: Vec<(Kind, bool)>,
    closed: Vec<u16>,
}

impl TestPort {
    fn new() -> Self {
        TestPort {
            out: Vec::new(),
            started: Vec::new(),
            accept: true,
            backlog: 0,
            counted: Vec::new(),
            closed: Vec::new(),
        }
    }

    fn frames(&mut self) -> Vec<ServerFrame> {
        let frames = client::parse_all(&mut self.out);
        assert!(self.out.is_empty(), "a partial frame was written");
        assert!(frames.iter().all(|f| !f.masked && f.fin), "{frames:?}");
        frames
    }

    /// The JSON messages written since the last call.
    fn messages(&mut self) -> Vec<Value> {
        self.frames()
            .into_iter()
            .map(|f| {
                assert_eq!(f.opcode, opcode::TEXT, "{f:?}");
                serde_json::from_slice(&f.payload).unwrap()
            })
            .collect()
    }
}

impl Port for TestPort {
    fn out(&mut self) -> &mut dyn Write {
        &mut self.out
    }

    fn queued(&self) -> usize {
        self.out.len() + self.backlog
    }

    fn start(&mut self, call: Started) -> bool {
        if self.accept {
            self.started.push(call);
        }
        self.accept
    }

    fn count(&mut self, kind: Kind, inbound: bool) {
        self.counted.push((kind, inbound));
    }

    fn closed(&mut self, code: u16) {
        self.closed.push(code);
    }
}

const LIMITS: Limits = Limits {
    frames: crate::websocket::Limits {
        max_message_bytes: 64 * 1024,
        max_frame_bytes: 16 * 1024,
    },
    max_in_flight: 3,
    max_queued_bytes: 1 << 20,
    heartbeat: Duration::from_secs(30),
    idle: Duration::from_secs(90),
};

fn session() -> (Session, TestPort, Instant) {
    let now = Instant::now();
    (Session::new(LIMITS, now), TestPort::new(), now)
}

fn send(s: &mut Session, port: &mut TestPort, text: &str, now: Instant) -> Flow {
    s.on_input(&client::text(text), port, now)
}

fn request(id: &str) -> String {
    format!(r#"{{"type":"request","id":"{id}","model":"m","request":{{"messages":[]}}}}"#)
}

fn reply(
    s: &mut Session,
    port: &mut TestPort,
    number: u64,
    last: bool,
    kind: Kind,
    frame: &str,
) -> Flow {
    s.on_answer(
        answer(number, last, kind, frame.to_owned()),
        port,
        Instant::now(),
    )
}

#[test]
fn a_request_starts_a_call_whose_frames_go_out_in_order() {
    let (mut s, mut port, now) = session();
    assert_eq!(send(&mut s, &mut port, &request("a"), now), Flow::Continue);
    assert_eq!(port.started.len(), 1);
    let call = &port.started[0];
    assert_eq!((call.number, call.msg.id.text()), (0, "a".to_owned()));
    assert!(port.out.is_empty(), "nothing answered before the call");
    reply(
        &mut s,
        &mut port,
        0,
        false,
        Kind::Stream,
        r#"{"type":"stream","id":"a","data":1}"#,
    );
    reply(
        &mut s,
        &mut port,
        0,
        false,
        Kind::Stream,
        r#"{"type":"stream","id":"a","data":2}"#,
    );
    reply(
        &mut s,
        &mut port,
        0,
        true,
        Kind::StreamEnd,
        r#"{"type":"stream_end","id":"a"}"#,
    );
    let types: Vec<Value> = port.messages().iter().map(|m| m["type"].clone()).collect();
    assert_eq!(types, ["stream", "stream", "stream_end"]);
    // Finished: the id may be used again.
    send(&mut s, &mut port, &request("a"), now);
    assert_eq!(port.started.len(), 2);
    assert!(port.counted.contains(&(Kind::Stream, false)));
    assert!(port.counted.contains(&(Kind::Request, true)));
}

#[test]
fn calls_interleave_and_each_answer_reaches_its_id() {
    let (mut s, mut port, now) = session();
    send(&mut s, &mut port, &request("x"), now);
    send(&mut s, &mut port, &request("y"), now);
    reply(
        &mut s,
        &mut port,
        1,
        false,
        Kind::Stream,
        r#"{"id":"y","n":1}"#,
    );
    reply(
        &mut s,
        &mut port,
        0,
        false,
        Kind::Stream,
        r#"{"id":"x","n":1}"#,
    );
    reply(
        &mut s,
        &mut port,
        1,
        true,
        Kind::StreamEnd,
        r#"{"id":"y","n":2}"#,
    );
    reply(
        &mut s,
        &mut port,
        0,
        true,
        Kind::Response,
        r#"{"id":"x","n":2}"#,
    );
    let ids: Vec<String> = port
        .messages()
        .iter()
        .map(|m| format!("{}{}", m["id"].as_str().unwrap(), m["n"]))
        .collect();
    assert_eq!(ids, ["y1", "x1", "y2", "x2"]);
}

#[test]
fn duplicates_the_in_flight_cap_and_busy_workers_get_error_frames() {
    let (mut s, mut port, now) = session();
    send(&mut s, &mut port, &request("a"), now);
    send(&mut s, &mut port, &request("a"), now);
    send(&mut s, &mut port, &request("b"), now);
    send(&mut s, &mut port, &request("c"), now);
    send(&mut s, &mut port, &request("d"), now);
    let errors = port.messages();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0]["error"]["code"], "duplicate_id");
    assert_eq!(errors[0]["id"], "a");
    assert_eq!(errors[1]["error"]["code"], "too_many_requests");
    assert_eq!(errors[1]["id"], "d");
    assert_eq!(port.started.len(), 3);

    let (mut s, mut port, now) = session();
    port.accept = false;
    send(&mut s, &mut port, &request("a"), now);
    let m = port.messages();
    assert_eq!(
        (
            m[0]["error"]["code"].as_str(),
            m[0]["error"]["status"].as_u64()
        ),
        (Some("busy"), Some(503))
    );
    port.accept = true;
    send(&mut s, &mut port, &request("a"), now);
    assert_eq!(port.started.len(), 1, "a refused id is not in flight");
}

#[test]
fn bad_messages_get_error_frames_and_the_connection_lives() {
    let (mut s, mut port, now) = session();
    for text in [
        "{",
        "[]",
        r#"{"type":"x","id":"q"}"#,
        r#"{"type":"request"}"#,
    ] {
        assert_eq!(send(&mut s, &mut port, text, now), Flow::Continue);
    }
    let binary = client::frame(true, opcode::BINARY, b"\x00\x01", Some([9, 9, 9, 9]));
    assert_eq!(s.on_input(&binary, &mut port, now), Flow::Continue);
    let codes: Vec<Value> = port
        .messages()
        .iter()
        .map(|m| m["error"]["code"].clone())
        .collect();
    assert_eq!(
        codes,
        [
            "invalid_json",
            "invalid_message",
            "unknown_type",
            "missing_id",
            "binary_not_supported"
        ]
    );
    send(&mut s, &mut port, &request("ok"), now);
    assert_eq!(port.started.len(), 1);
    assert_eq!(
        port.counted
            .iter()
            .filter(|c| **c == (Kind::Invalid, true))
            .count(),
        5
    );
}

#[test]
fn a_cancel_answers_at_once_stops_the_call_and_drops_its_late_frames() {
    let (mut s, mut port, now) = session();
    send(&mut s, &mut port, &request("a"), now);
    send(&mut s, &mut port, r#"{"type":"cancel","id":"a"}"#, now);
    assert!(port.started[0].cancel.load(Ordering::Relaxed));
    let m = port.messages();
    assert_eq!(
        (m[0]["error"]["code"].as_str(), m[0]["id"].as_str()),
        (Some("cancelled"), Some("a"))
    );
    reply(&mut s, &mut port, 0, false, Kind::Stream, r#"{"late":1}"#);
    reply(&mut s, &mut port, 0, true, Kind::Error, r#"{"late":2}"#);
    assert!(port.messages().is_empty(), "nothing after the cancel");
    send(&mut s, &mut port, r#"{"type":"cancel","id":"a"}"#, now);
    assert_eq!(port.messages()[0]["error"]["code"], "unknown_id");
}

#[test]
fn heartbeats_both_ways_and_the_idle_deadline() {
    let (mut s, mut port, now) = session();
    send(&mut s, &mut port, r#"{"type":"heartbeat"}"#, now);
    assert_eq!(port.messages()[0]["type"], "heartbeat", "answered at once");
    assert_eq!(
        s.on_tick(&mut port, now + Duration::from_secs(29)),
        Flow::Continue
    );
    assert!(port.messages().is_empty());
    assert_eq!(
        s.on_tick(&mut port, now + Duration::from_secs(30)),
        Flow::Continue
    );
    assert_eq!(port.messages()[0]["type"], "heartbeat", "the server's own");
    // A call in flight keeps a silent connection open.
    send(&mut s, &mut port, &request("slow"), now);
    assert_eq!(
        s.on_tick(&mut port, now + Duration::from_secs(200)),
        Flow::Continue
    );
    port.messages();
    s.on_answer(
        answer(0, true, Kind::Response, "{}".into()),
        &mut port,
        now + Duration::from_secs(200),
    );
    port.messages();
    assert_eq!(
        s.on_tick(&mut port, now + Duration::from_secs(289)),
        Flow::Continue
    );
    assert_eq!(
        s.on_tick(&mut port, now + Duration::from_secs(291)),
        Flow::Close
    );
    let frames = port.frames();
    assert_eq!(frames.last().unwrap().close_code(), Some(1001));
    assert_eq!(port.closed, [1001]);
}

#[test]
fn draining_finishes_calls_refuses_new_ones_then_closes_1001() {
    let (mut s, mut port, now) = session();
    send(&mut s, &mut port, &request("a"), now);
    assert_eq!(s.on_drain(&mut port), Flow::Continue);
    send(&mut s, &mut port, &request("b"), now);
    assert_eq!(port.messages()[0]["error"]["code"], "shutting_down");
    assert_eq!(
        reply(&mut s, &mut port, 0, false, Kind::Stream, "{}"),
        Flow::Continue
    );
    assert_eq!(
        reply(&mut s, &mut port, 0, true, Kind::StreamEnd, "{}"),
        Flow::Close
    );
    let frames = port.frames();
    assert_eq!(frames.len(), 3);
    assert_eq!(frames[2].close_code(), Some(1001));

    let (mut s, mut port, _) = session();
    assert_eq!(
        s.on_drain(&mut port),
        Flow::Close,
        "nothing in flight: at once"
    );
}

#[test]
fn a_client_that_does_not_read_is_closed_with_1008_and_its_calls_stop() {
    let (mut s, mut port, now) = session();
    send(&mut s, &mut port, &request("a"), now);
    port.backlog = LIMITS.max_queued_bytes;
    assert_eq!(
        reply(&mut s, &mut port, 0, false, Kind::Stream, "{}"),
        Flow::Close
    );
    assert!(port.started[0].cancel.load(Ordering::Relaxed));
    assert_eq!(port.frames().last().unwrap().close_code(), Some(1008));
    assert_eq!(port.closed, [1008]);
}

#[test]
fn the_peer_closing_stops_every_call() {
    let (mut s, mut port, now) = session();
    send(&mut s, &mut port, &request("a"), now);
    send(&mut s, &mut port, &request("b"), now);
    let close = client::frame(
        true,
        opcode::CLOSE,
        &1000u16.to_be_bytes(),
        Some([1, 2, 3, 4]),
    );
    assert_eq!(s.on_input(&close, &mut port, now), Flow::Close);
    assert!(
        port.started
            .iter()
            .all(|c| c.cancel.load(Ordering::Relaxed))
    );
    assert_eq!(
        port.frames()[0].close_code(),
        Some(1000),
        "the close is answered"
    );
    assert_eq!(port.closed, [1000]);
    s.on_closed(&mut port);
    assert_eq!(port.closed, [1000], "counted once");
}

#[test]
fn oversized_messages_close_1009_and_unmasked_frames_1002() {
    let (mut s, mut port, now) = session();
    let big = format!(r#"{{"type":"heartbeat","pad":"{}"}}"#, "x".repeat(20_000));
    assert_eq!(send(&mut s, &mut port, &big, now), Flow::Close);
    assert_eq!(port.frames()[0].close_code(), Some(1009));

    let (mut s, mut port, now) = session();
    let unmasked = client::frame(true, opcode::TEXT, br#"{"type":"heartbeat"}"#, None);
    assert_eq!(s.on_input(&unmasked, &mut port, now), Flow::Close);
    assert_eq!(port.frames()[0].close_code(), Some(1002));
}

#[test]
fn a_fragmented_message_with_a_ping_between_its_fragments() {
    let (mut s, mut port, now) = session();
    let text = request("frag");
    let (a, b) = text.as_bytes().split_at(10);
    let key = Some([5, 6, 7, 8]);
    let mut bytes = client::frame(false, opcode::TEXT, a, key);
    bytes.extend(client::frame(true, opcode::PING, b"p", key));
    bytes.extend(client::frame(true, opcode::CONTINUATION, b, key));
    for chunk in bytes.chunks(3) {
        assert_eq!(s.on_input(chunk, &mut port, now), Flow::Continue);
    }
    assert_eq!(port.started.len(), 1);
    let frames = port.frames();
    assert_eq!(
        (frames[0].opcode, frames[0].payload.as_slice()),
        (opcode::PONG, &b"p"[..])
    );
}

#[test]
fn a_batch_starts_every_member_and_refuses_the_bad_ones() {
    let (mut s, mut port, now) = session();
    let text = format!(
        r#"{{"type":"batch","requests":[{},{},{{"type":"request"}},{}]}}"#,
        request("1"),
        request("2"),
        request("1")
    );
    send(&mut s, &mut port, &text, now);
    assert_eq!(port.started.len(), 2);
    let codes: Vec<Value> = port
        .messages()
        .iter()
        .map(|m| m["error"]["code"].clone())
        .collect();
    assert_eq!(codes, ["missing_id", "duplicate_id"]);
}
