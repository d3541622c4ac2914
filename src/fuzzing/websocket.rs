//! `ws_message`: one client message through the WebSocket API's decoder
//! and dispatch, framed as a client would frame it.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::gateway::ws::{Inbound, Kind, Limits, Port, Session, Started, answer, decode};
use crate::server::Flow;
use crate::websocket::client::{self, opcode};

struct Recorder {
    out: Vec<u8>,
    started: Vec<Started>,
}

impl Port for Recorder {
    fn out(&mut self) -> &mut dyn Write {
        &mut self.out
    }

    fn queued(&self) -> usize {
        self.out.len()
    }

    fn start(&mut self, call: Started) -> bool {
        self.started.push(call);
        true
    }
}

const LIMITS: Limits = Limits {
    frames: crate::websocket::Limits {
        max_message_bytes: 1 << 20,
        max_frame_bytes: 1 << 20,
    },
    max_in_flight: 64,
    max_queued_bytes: 64 << 20,
    heartbeat: Duration::from_secs(30),
    idle: Duration::from_secs(90),
};

/// Runs `bytes` (the client's wire bytes) through a fresh session; the
/// started calls are answered with one stream frame and an end each.
/// Returns what the server wrote and the ids of the calls started.
fn run(bytes: &[&[u8]]) -> (Vec<u8>, Vec<String>, Flow) {
    let now = Instant::now();
    let mut session = Session::new(LIMITS, now);
    let mut port = Recorder {
        out: Vec::new(),
        started: Vec::new(),
    };
    let mut flow = Flow::Continue;
    for piece in bytes {
        if flow == Flow::Continue {
            flow = session.on_input(piece, &mut port, now);
        }
    }
    let calls: Vec<(u64, String)> = port
        .started
        .iter()
        .map(|c| (c.number, c.msg.id.json().to_owned()))
        .collect();
    for (number, id) in &calls {
        for (last, kind, frame) in [
            (
                false,
                Kind::Stream,
                format!(r#"{{"type":"stream","id":{id},"data":{{}}}}"#),
            ),
            (
                true,
                Kind::StreamEnd,
                format!(r#"{{"type":"stream_end","id":{id}}}"#),
            ),
        ] {
            if flow == Flow::Continue {
                flow = session.on_answer(answer(*number, last, kind, frame), &mut port, now);
            }
        }
    }
    (
        port.out,
        calls.into_iter().map(|(_, id)| id).collect(),
        flow,
    )
}

/// Input: the payload of one text message, any bytes.
pub fn ws_message(data: &[u8]) {
    let [a, b] = super::cuts(data);
    let key = Some([0x5a, 0x17, 0xc3, 0x90]);
    // One frame, and the same message in three fragments with a ping
    // between the first two.
    let whole = client::frame(true, opcode::TEXT, data, key);
    let mut fragmented = client::frame(false, opcode::TEXT, &data[..a], key);
    fragmented.extend(client::frame(true, opcode::PING, b"", key));
    fragmented.extend(client::frame(false, opcode::CONTINUATION, &data[a..b], key));
    fragmented.extend(client::frame(true, opcode::CONTINUATION, &data[b..], key));

    let (out, started, flow) = run(&[&whole]);
    super::assert_split_invariant(&whole, &(out.clone(), started.clone(), flow), |pieces| {
        run(pieces)
    });
    let (mut f_out, f_started, f_flow) = run(&[&fragmented]);
    assert_eq!(f_started, started, "fragments start the same calls");
    assert_eq!(f_flow, flow);

    let mut out = out;
    let frames = client::parse_all(&mut out);
    assert!(out.is_empty(), "a partial frame was written");
    let mut f_frames = client::parse_all(&mut f_out);
    let Ok(text) = std::str::from_utf8(data) else {
        // Found in the first fragment already, or only at the end.
        for frames in [&frames, &f_frames] {
            assert_eq!(frames.last().and_then(|f| f.close_code()), Some(1007));
        }
        assert_eq!(flow, Flow::Close);
        return;
    };
    assert_eq!(
        f_frames.first().map(|f| f.opcode),
        Some(opcode::PONG),
        "the ping is answered"
    );
    f_frames.remove(0);
    assert_eq!(f_frames, frames, "fragments get the same answers");
    assert_eq!(
        flow,
        Flow::Continue,
        "a text message never ends the connection"
    );
    let messages: Vec<Value> = frames
        .iter()
        .map(|f| {
            assert!(!f.masked && f.fin && f.opcode == opcode::TEXT, "{f:?}");
            let v: Value = serde_json::from_slice(&f.payload).expect("every frame is JSON");
            assert!(v["type"].is_string(), "{v}");
            v
        })
        .collect();
    let errors: Vec<&Value> = messages.iter().filter(|m| m["type"] == "error").collect();
    for e in &errors {
        assert!(
            e["error"]["code"].is_string() && e["error"]["message"].is_string(),
            "{e}"
        );
    }
    match decode(text) {
        Err(refusal) => {
            assert!(started.is_empty());
            assert_eq!(messages.len(), 1);
            let sent_id = messages[0].get("id").map(Value::to_string);
            assert_eq!(sent_id.as_deref(), refusal.id.as_ref().map(|i| i.json()));
            assert_eq!(messages[0]["error"]["code"], refusal.code);
        }
        Ok(Inbound::Heartbeat) => {
            assert_eq!(messages.len(), 1);
            assert_eq!(messages[0]["type"], "heartbeat");
        }
        Ok(Inbound::Cancel(_)) => {
            assert_eq!(messages.len(), 1);
            assert_eq!(messages[0]["error"]["code"], "unknown_id");
        }
        Ok(Inbound::Request(msg)) => {
            assert_eq!(started, [msg.id.json().to_owned()]);
            assert_eq!(messages.len(), 2, "its stream frame and its end");
        }
        Ok(Inbound::Batch(members)) => {
            // Every member is answered: started (two frames) or refused.
            assert_eq!(errors.len() + started.len(), members.len());
            assert_eq!(messages.len(), errors.len() + 2 * started.len());
        }
    }
}
