//! A WebSocket call on a worker: builds the [`Call`] from a request
//! message, runs it through the same pipeline as HTTP, and turns what the
//! pipeline answers into frames for the connection — one `stream` frame
//! per client-protocol event, sent as it arrives — handed to the poller
//! through the connection's [`Link`].

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use serde_json::{Map, Value};

use super::message::{self, Kind, RequestMsg};
use super::session::answer;
use crate::gateway::{Answer, Call, Gateway, Sink};
use crate::protocol::sse::{SseDecoder, SseEvent};
use crate::protocol::{GeminiFraming, Protocol};
use crate::server::{Link, Worker};

/// Status logged for a call the client cancelled (nginx's 499).
const CANCELLED: u16 = 499;

/// One call, as the worker gets it.
pub(super) struct Job {
    pub gateway: Weak<Gateway>,
    pub link: Link,
    pub number: u64,
    pub msg: RequestMsg,
    pub cancel: Arc<AtomicBool>,
    pub client_key: Option<String>,
    pub peer: SocketAddr,
}

/// Runs `job` on this worker and sends its frames.
pub(super) fn run(job: Job, worker: &Worker<'_>) {
    let started = Instant::now();
    let mut sink = WsSink {
        job: &job,
        worker,
        sse: SseDecoder::new(),
        events: Vec::new(),
        last: None,
        streamed: false,
        stream_error: None,
        status: 200,
        bytes: 0,
        facts: Vec::new(),
    };
    match job.gateway.upgrade() {
        None => sink.fail(503, "unavailable", "the gateway is stopping"),
        Some(gateway) => match body(&job.msg) {
            Err(message) => sink.fail(400, "invalid_request", &message),
            Ok(body) => {
                let msg = &job.msg;
                let gemini = msg.protocol == Protocol::Gemini;
                let call = Call {
                    provider: msg.provider.as_deref(),
                    path_model: msg.model.clone().filter(|_| gemini),
                    path_stream: gemini && msg.stream == Some(true),
                    gemini_framing: GeminiFraming::Sse,
                    client_key: job.client_key.as_deref().map(std::borrow::Cow::Borrowed),
                    client_addr: Some(job.peer),
                    ..Call::new(msg.protocol, &body)
                };
                gateway.call(&call, &mut sink);
                sink.finish();
                gateway.log_websocket_call(
                    &job.msg,
                    sink.status,
                    sink.bytes,
                    started.elapsed(),
                    &sink.facts,
                );
                return;
            }
        },
    }
    sink.finish();
}

/// The request body with the message's `model` and `metadata.stream`
/// set in it (a Gemini body names neither: they go on its path).
fn body(msg: &RequestMsg) -> Result<Cow<'_, [u8]>, String> {
    let raw = msg.request.get();
    if msg.protocol == Protocol::Gemini || (msg.model.is_none() && msg.stream.is_none()) {
        return Ok(Cow::Borrowed(raw.as_bytes()));
    }
    let mut body: Map<String, Value> =
        serde_json::from_str(raw).map_err(|e| format!("`request` is not a JSON object: {e}"))?;
    if let Some(model) = &msg.model {
        body.insert("model".into(), Value::from(model.as_str()));
    }
    if let Some(stream) = msg.stream {
        body.insert("stream".into(), Value::from(stream));
    }
    serde_json::to_vec(&body)
        .map(Cow::Owned)
        .map_err(|e| e.to_string())
}

/// The pipeline's answer, as frames.
struct WsSink<'j, 'w> {
    job: &'j Job,
    worker: &'w Worker<'w>,
    sse: SseDecoder,
    events: Vec<SseEvent>,
    /// The frame that ends the call, once known.
    last: Option<(Kind, String)>,
    streamed: bool,
    /// The first in-band error of a stream (its message).
    stream_error: Option<String>,
    status: u16,
    bytes: u64,
    facts: Vec<(&'static str, String)>,
}

impl WsSink<'_, '_> {
    fn cancelled(&self) -> bool {
        self.job.cancel.load(Ordering::Relaxed)
    }

    fn fail(&mut self, status: u16, code: &str, message: &str) {
        self.status = status;
        let frame = message::error(Some(&self.job.msg.id), code, message, Some(status));
        self.last = Some((Kind::Error, frame));
    }

    /// Sends one frame that is not the last; false if the connection is gone.
    fn send_frame(&mut self, kind: Kind, frame: String) -> bool {
        self.bytes += frame.len() as u64;
        self.job
            .link
            .send(answer(self.job.number, false, kind, frame))
    }

    /// Sends the call's last frame.
    fn finish(&mut self) {
        let id = &self.job.msg.id;
        if self.cancelled() {
            // The pipeline saw only "end now", as at the drain deadline.
            self.note("note", "cancelled".into());
            self.status = CANCELLED;
            let frame = message::error(
                Some(id),
                "cancelled",
                "cancelled by the client",
                Some(CANCELLED),
            );
            self.last = Some((Kind::Error, frame));
        } else if self.streamed {
            self.last = Some(match self.stream_error.take() {
                Some(error) => {
                    let (status, code) = if self.worker.must_end() {
                        (503, "shutting_down")
                    } else {
                        (502, "upstream_error")
                    };
                    self.status = status;
                    (
                        Kind::Error,
                        message::error(Some(id), code, &error, Some(status)),
                    )
                }
                None => (Kind::StreamEnd, message::stream_end(id)),
            });
        }
        let (kind, frame) = self.last.take().unwrap_or_else(|| {
            self.status = 500;
            let frame = message::error(Some(id), "internal_error", "no answer", Some(500));
            (Kind::Error, frame)
        });
        self.bytes += frame.len() as u64;
        self.job
            .link
            .send(answer(self.job.number, true, kind, frame));
    }
}

impl Sink for WsSink<'_, '_> {
    fn whole(&mut self, answer: Answer<'_>) {
        let id = &self.job.msg.id;
        self.status = answer.status;
        let text = String::from_utf8_lossy(answer.body);
        let frame = if answer.status < 400 {
            (Kind::Response, message::response(id, &text))
        } else {
            let code = message::code_for_status(answer.status);
            let message = error_message(&text).unwrap_or_else(|| text.chars().take(1000).collect());
            (
                Kind::Error,
                message::error(Some(id), code, &message, Some(answer.status)),
            )
        };
        self.last = Some(frame);
    }

    fn open(&mut self, _content_type: &str) -> bool {
        self.streamed = true;
        !self.cancelled()
    }

    fn send(&mut self, events: &[u8]) -> bool {
        if self.cancelled() {
            return false;
        }
        self.sse.feed(events, &mut self.events);
        let mut events = std::mem::take(&mut self.events);
        let mut alive = true;
        for event in events.drain(..) {
            if self.stream_error.is_some() || event.data.is_empty() || event.data == "[DONE]" {
                continue;
            }
            if let Some(error) = stream_error(&event.data) {
                // An in-band error ends the call with an error frame.
                self.stream_error = Some(error);
                continue;
            }
            let frame = message::stream(&self.job.msg.id, &event.data);
            if !self.send_frame(Kind::Stream, frame) {
                alive = false;
                break;
            }
        }
        self.events = events;
        alive
    }

    fn close(&mut self) {}

    fn must_end(&self) -> bool {
        self.cancelled() || self.worker.must_end()
    }

    fn wants_short_waits(&self) -> bool {
        // A cancel is noticed between two waits for the upstream.
        true
    }

    fn note(&mut self, key: &'static str, value: String) {
        match self.facts.iter_mut().find(|(k, _)| *k == key) {
            Some(fact) => fact.1 = value,
            None => self.facts.push((key, value)),
        }
    }
}

/// `error.message` of a client-protocol error body (all four protocols
/// put it there).
fn error_message(body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    value
        .pointer("/error/message")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The message of an in-band stream error event, in any client protocol:
/// `{"error":{…}}` (OpenAI, Gemini), `{"type":"error",…}` (Anthropic,
/// Responses) or `{"type":"response.failed",…}` (Responses).
fn stream_error(data: &str) -> Option<String> {
    if !data.contains("error") && !data.contains("failed") {
        return None;
    }
    let value: Value = serde_json::from_str(data).ok()?;
    let ty = value.get("type").and_then(Value::as_str);
    let is_error = value.get("error").is_some_and(Value::is_object) && ty.is_none()
        || ty == Some("error")
        || ty == Some("response.failed");
    if !is_error {
        return None;
    }
    let message = ["/error/message", "/message", "/response/error/message"]
        .iter()
        .find_map(|p| value.pointer(p).and_then(Value::as_str))
        .unwrap_or("the upstream failed mid-stream");
    Some(message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_errors_of_every_protocol() {
        for data in [
            r#"{"error":{"message":"boom","type":"server_error"}}"#,
            r#"{"type":"error","error":{"type":"api_error","message":"boom"}}"#,
            r#"{"error":{"code":502,"message":"boom","status":"UNAVAILABLE"}}"#,
            r#"{"type":"error","code":"server_error","message":"boom","param":null}"#,
            r#"{"type":"response.failed","response":{"error":{"code":"x","message":"boom"}}}"#,
        ] {
            assert_eq!(stream_error(data).as_deref(), Some("boom"), "{data}");
        }
        for data in [
            r#"{"choices":[{"delta":{"content":"an error"}}]}"#,
            r#"{"type":"content_block_delta","delta":{"text":"error failed"}}"#,
            r#"{"type":"response.output_text.delta","delta":"error"}"#,
        ] {
            assert_eq!(stream_error(data), None, "{data}");
        }
    }

    #[test]
    fn error_bodies_give_their_message() {
        assert_eq!(
            error_message(r#"{"type":"error","error":{"type":"x","message":"m"}}"#).as_deref(),
            Some("m")
        );
        assert_eq!(error_message("nope"), None);
    }
}
