//! Responses event streams: [`Decoder`] reads an upstream's, [`Encoder`]
//! writes a client's, numbered by `sequence_number`.

use std::collections::HashMap;

use super::*;

/// Turns an upstream Responses event stream into canonical events.
#[derive(Debug, Default)]
pub struct Decoder {
    started: bool,
    finished: bool,
    /// Output indices of calls started and not yet ended.
    open_calls: Vec<usize>,
    saw_call: bool,
    usage: Option<TokenUsage>,
}

impl Decoder {
    /// Decodes one `data:` payload.
    pub fn event(&mut self, data: &str, out: &mut Vec<StreamEvent>) {
        if let Ok(v) = serde_json::from_str::<Value>(data) {
            self.value(&v, out);
        }
    }

    fn start(&mut self, out: &mut Vec<StreamEvent>) {
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start { input_tokens: None });
        }
    }

    fn end_call(&mut self, index: usize, out: &mut Vec<StreamEvent>) {
        if let Some(pos) = self.open_calls.iter().position(|&i| i == index) {
            self.open_calls.remove(pos);
            out.push(StreamEvent::ToolCallEnd { index });
        }
    }

    /// Decodes one parsed event.
    pub fn value(&mut self, v: &Value, out: &mut Vec<StreamEvent>) {
        if self.finished {
            return;
        }
        let Some(ty) = v.get("type").and_then(Value::as_str) else {
            return;
        };
        let index = as_u64(v.get("output_index")).map(|i| i as usize);
        let text = |k: &str| v.get(k).and_then(Value::as_str).filter(|t| !t.is_empty());
        match ty {
            "response.created" | "response.in_progress" => self.start(out),
            "response.output_text.delta" | "response.refusal.delta" => {
                if let Some(t) = text("delta") {
                    self.start(out);
                    out.push(StreamEvent::TextDelta(t.to_string()));
                }
            }
            "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
                if let Some(t) = text("delta") {
                    self.start(out);
                    out.push(StreamEvent::ThinkingDelta(t.to_string()));
                }
            }
            "response.output_item.added" => {
                let item = v.get("item").unwrap_or(&Value::Null);
                let kind = item.get("type").and_then(Value::as_str);
                if let (Some(i), Some("function_call" | "custom_tool_call"), Some(name)) =
                    (index, kind, item.get("name").and_then(Value::as_str))
                    && !self.open_calls.contains(&i)
                {
                    self.start(out);
                    self.saw_call = true;
                    self.open_calls.push(i);
                    out.push(StreamEvent::ToolCallStart {
                        index: i,
                        id: item
                            .get("call_id")
                            .and_then(Value::as_str)
                            .map(str::to_string),
                        name: name.to_string(),
                    });
                }
            }
            "response.function_call_arguments.delta" => {
                if let (Some(i), Some(t)) = (index, text("delta"))
                    && self.open_calls.contains(&i)
                {
                    out.push(StreamEvent::ToolCallArgs {
                        index: i,
                        fragment: t.to_string(),
                    });
                }
            }
            "response.custom_tool_call_input.done" => {
                if let Some(i) = index.filter(|i| self.open_calls.contains(i)) {
                    let input = v.get("input").and_then(Value::as_str).unwrap_or_default();
                    out.push(StreamEvent::ToolCallArgs {
                        index: i,
                        fragment: json!({"input": input}).to_string(),
                    });
                }
            }
            "response.output_item.done" => {
                if let Some(i) = index {
                    self.end_call(i, out);
                }
            }
            "response.completed" | "response.incomplete" => {
                let response = v.get("response").unwrap_or(&Value::Null);
                if let Some(u) = response.get("usage").filter(|u| u.is_object()) {
                    self.usage = Some(parse_usage(u));
                }
                self.start(out);
                let reason = if self.saw_call {
                    FinishReason::ToolUse
                } else {
                    status_finish(response)
                };
                for i in std::mem::take(&mut self.open_calls) {
                    out.push(StreamEvent::ToolCallEnd { index: i });
                }
                out.push(StreamEvent::Finish {
                    reason: Some(reason),
                    usage: self.usage,
                });
                self.finished = true;
            }
            "response.failed" | "error" => {
                let err = if ty == "error" {
                    v
                } else {
                    v.at(&["response", "error"]).unwrap_or(&Value::Null)
                };
                let message = err
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("the upstream response failed")
                    .to_string();
                let status = match err.get("code").and_then(Value::as_str) {
                    Some("rate_limit_exceeded") => 429,
                    Some("server_error") | None => 500,
                    Some(_) => 400,
                };
                out.push(StreamEvent::Error { status, message });
                self.finished = true;
            }
            _ => {}
        }
    }

    /// The upstream ended.
    pub fn end(&mut self, out: &mut Vec<StreamEvent>) {
        if self.finished {
            return;
        }
        self.finished = true;
        for i in std::mem::take(&mut self.open_calls) {
            out.push(StreamEvent::ToolCallEnd { index: i });
        }
        out.push(StreamEvent::Finish {
            reason: self.saw_call.then_some(FinishReason::ToolUse),
            usage: self.usage,
        });
    }
}

// --------------------------------------------------------- client streams

/// An output item being streamed.
#[derive(Debug)]
enum Open {
    /// A `message` with one `output_text` part.
    Message { text: String },
    /// A `reasoning` item with one summary part.
    Reasoning { text: String, signature: String },
}

/// A call being streamed, by upstream call key.
#[derive(Debug)]
struct Call {
    output_index: usize,
    item_id: String,
    call_id: String,
    name: String,
    arguments: String,
}

/// The fixed text of a delta event around its variable members, which
/// are, in name order: `delta`, `item_id`, `output_index`,
/// `sequence_number`.
struct DeltaEvent {
    /// The `event:` line and the members before `delta`.
    head: &'static [u8],
    /// The members between `item_id` and `output_index`.
    mid: &'static [u8],
    /// The members after `sequence_number`, and the end of the event.
    tail: &'static [u8],
}

const TEXT_DELTA: DeltaEvent = DeltaEvent {
    head: b"event: response.output_text.delta\ndata: {\"content_index\":0,\"delta\":",
    mid: b",\"logprobs\":[],\"output_index\":",
    tail: b",\"type\":\"response.output_text.delta\"}\n\n",
};

const SUMMARY_DELTA: DeltaEvent = DeltaEvent {
    head: b"event: response.reasoning_summary_text.delta\ndata: {\"delta\":",
    mid: b",\"output_index\":",
    tail: b",\"summary_index\":0,\"type\":\"response.reasoning_summary_text.delta\"}\n\n",
};

/// A text or reasoning summary delta, written as [`Encoder::emit`] writes
/// its `Value` without building one: an event is a stream's unit of
/// work, and building, writing and dropping a `Value` was most of its
/// cost.
fn write_delta(
    ev: &DeltaEvent,
    delta: &str,
    item_id: &str,
    index: usize,
    seq: u64,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(ev.head);
    crate::protocol::json::push_str(out, delta);
    out.extend_from_slice(b",\"item_id\":");
    crate::protocol::json::push_str(out, item_id);
    out.extend_from_slice(ev.mid);
    crate::decimal::push_decimal(out, index as u64);
    out.extend_from_slice(b",\"sequence_number\":");
    crate::decimal::push_decimal(out, seq);
    out.extend_from_slice(ev.tail);
}

/// Canonical events to a Responses client stream.
#[derive(Debug)]
pub struct Encoder {
    id: String,
    created_at: u64,
    model: String,
    tools: ToolMap,
    seq: u64,
    started: bool,
    /// Finished output items, by output index.
    output: Vec<Value>,
    /// The text or reasoning item being streamed: (output index, id, state).
    open: Option<(usize, String, Open)>,
    calls: HashMap<usize, Call>,
    /// The next output index.
    next: usize,
    saw_call: bool,
    input_tokens: u64,
    finished: bool,
}

impl Encoder {
    /// An encoder answering as `model`.
    pub fn new(model: &str) -> Self {
        Self {
            id: ids::new_id("resp_"),
            created_at: ids::unix_now(),
            model: model.to_string(),
            tools: ToolMap::default(),
            seq: 0,
            started: false,
            output: Vec::new(),
            open: None,
            calls: HashMap::new(),
            next: 0,
            saw_call: false,
            input_tokens: 0,
            finished: false,
        }
    }

    /// Restores the client's tool declarations in calls (see [`ToolMap`]).
    pub fn set_tools(&mut self, tools: ToolMap) {
        self.tools = tools;
    }

    /// Writes one event: `event: <type>` and its data with the next
    /// sequence number.
    fn emit(&mut self, mut v: Value, out: &mut Vec<u8>) {
        if let Some(o) = v.as_object_mut() {
            o.insert("sequence_number".into(), json!(self.seq));
        }
        self.seq += 1;
        let ty = v.get("type").and_then(Value::as_str).unwrap_or("error");
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(ty.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        // Straight into `out` (writing to a `Vec` cannot fail).
        let _ = serde_json::to_writer(&mut *out, &v);
        out.extend_from_slice(b"\n\n");
    }

    fn snapshot(&self, status: &str, usage: Option<&TokenUsage>) -> Value {
        let mut output: Vec<Value> = self.output.clone();
        output.retain(|v| !v.is_null());
        response_object(
            &self.id,
            self.created_at,
            &self.model,
            status,
            output,
            usage,
        )
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let r = self.snapshot("in_progress", None);
        self.emit(json!({"type": "response.created", "response": r}), out);
        let r = self.snapshot("in_progress", None);
        self.emit(json!({"type": "response.in_progress", "response": r}), out);
    }

    fn take_index(&mut self) -> usize {
        let i = self.next;
        self.next += 1;
        self.output.push(Value::Null);
        i
    }

    fn item_added(&mut self, index: usize, item: Value, out: &mut Vec<u8>) {
        self.emit(
            json!({"type": "response.output_item.added", "output_index": index, "item": item}),
            out,
        );
    }

    fn item_done(&mut self, index: usize, item: Value, out: &mut Vec<u8>) {
        if let Some(slot) = self.output.get_mut(index) {
            *slot = item.clone();
        }
        self.emit(
            json!({"type": "response.output_item.done", "output_index": index, "item": item}),
            out,
        );
    }

    /// Closes the text or reasoning item being streamed.
    fn close_open(&mut self, out: &mut Vec<u8>) {
        let Some((index, id, open)) = self.open.take() else {
            return;
        };
        match open {
            Open::Message { text } => {
                let part =
                    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
                self.emit(
                    json!({"type": "response.output_text.done", "item_id": id, "output_index": index,
                        "content_index": 0, "text": text, "logprobs": []}),
                    out,
                );
                self.emit(
                    json!({"type": "response.content_part.done", "item_id": id, "output_index": index,
                        "content_index": 0, "part": part}),
                    out,
                );
                self.item_done(index, message_item(&id, &text, "completed"), out);
            }
            Open::Reasoning { text, signature } => {
                let part = json!({"type": "summary_text", "text": text});
                self.emit(
                    json!({"type": "response.reasoning_summary_text.done", "item_id": id,
                        "output_index": index, "summary_index": 0, "text": text}),
                    out,
                );
                self.emit(
                    json!({"type": "response.reasoning_summary_part.done", "item_id": id,
                        "output_index": index, "summary_index": 0, "part": part}),
                    out,
                );
                let thinking = Part::Thinking {
                    text,
                    signature: Some(signature),
                };
                let item = reasoning_item(&thinking, &id).unwrap_or(Value::Null);
                self.item_done(index, item, out);
            }
        }
    }

    fn text_delta(&mut self, t: &str, out: &mut Vec<u8>) {
        if !matches!(self.open, Some((_, _, Open::Message { .. }))) {
            self.close_open(out);
            let index = self.take_index();
            let id = ids::new_id("msg_");
            self.item_added(
                index,
                json!({"type": "message", "id": id, "status": "in_progress", "role": "assistant", "content": []}),
                out,
            );
            self.emit(
                json!({"type": "response.content_part.added", "item_id": id, "output_index": index,
                    "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
                out,
            );
            self.open = Some((
                index,
                id,
                Open::Message {
                    text: String::new(),
                },
            ));
        }
        if let Some((index, id, Open::Message { text })) = &mut self.open {
            text.push_str(t);
            write_delta(&TEXT_DELTA, t, id, *index, self.seq, out);
            self.seq += 1;
        }
    }

    fn thinking_delta(&mut self, t: &str, out: &mut Vec<u8>) {
        if !matches!(self.open, Some((_, _, Open::Reasoning { .. }))) {
            self.close_open(out);
            let index = self.take_index();
            let id = ids::new_id("rs_");
            self.item_added(
                index,
                json!({"type": "reasoning", "id": id, "summary": []}),
                out,
            );
            self.emit(
                json!({"type": "response.reasoning_summary_part.added", "item_id": id,
                    "output_index": index, "summary_index": 0, "part": {"type": "summary_text", "text": ""}}),
                out,
            );
            self.open = Some((
                index,
                id,
                Open::Reasoning {
                    text: String::new(),
                    signature: String::new(),
                },
            ));
        }
        if let Some((index, id, Open::Reasoning { text, .. })) = &mut self.open {
            text.push_str(t);
            write_delta(&SUMMARY_DELTA, t, id, *index, self.seq, out);
            self.seq += 1;
        }
    }

    fn call_start(&mut self, key: usize, id: Option<&str>, name: &str, out: &mut Vec<u8>) {
        self.close_open(out);
        // An upstream that starts the same call twice: the first one ends.
        self.call_end(key, out);
        self.saw_call = true;
        let index = self.take_index();
        let call = Call {
            output_index: index,
            item_id: ids::new_id("fc_"),
            call_id: id
                .filter(|i| !i.is_empty())
                .map_or_else(|| ids::new_id("call_"), str::to_string),
            name: name.to_string(),
            arguments: String::new(),
        };
        let mut item = call_item(&call.item_id, &call.call_id, name, "", &self.tools);
        if let Some(o) = item.as_object_mut() {
            o.insert("status".into(), json!("in_progress"));
        }
        self.item_added(index, item, out);
        self.calls.insert(key, call);
    }

    fn call_args(&mut self, key: usize, fragment: &str, out: &mut Vec<u8>) {
        let custom = self
            .calls
            .get(&key)
            .is_some_and(|c| self.tools.origin(&c.name).is_some_and(|o| o.custom));
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        call.arguments.push_str(fragment);
        // A custom tool's input is a string inside the JSON: sent whole at the end.
        if !custom {
            let ev = json!({"type": "response.function_call_arguments.delta",
                "item_id": call.item_id, "output_index": call.output_index, "delta": fragment});
            self.emit(ev, out);
        }
    }

    fn call_end(&mut self, key: usize, out: &mut Vec<u8>) {
        let Some(call) = self.calls.remove(&key) else {
            return;
        };
        // Arguments as the client will parse them: `{}` for none.
        let arguments = if call.arguments.trim().is_empty() {
            "{}".to_string()
        } else {
            call.arguments
        };
        let item = call_item(
            &call.item_id,
            &call.call_id,
            &call.name,
            &arguments,
            &self.tools,
        );
        if item.get("type").and_then(Value::as_str) == Some("custom_tool_call") {
            let input = item.get("input").cloned().unwrap_or_default();
            self.emit(
                json!({"type": "response.custom_tool_call_input.delta", "item_id": call.item_id,
                    "output_index": call.output_index, "delta": input}),
                out,
            );
            self.emit(
                json!({"type": "response.custom_tool_call_input.done", "item_id": call.item_id,
                    "output_index": call.output_index, "input": input}),
                out,
            );
        } else {
            self.emit(
                json!({"type": "response.function_call_arguments.done", "item_id": call.item_id,
                    "output_index": call.output_index, "name": item.get("name"),
                    "arguments": arguments}),
                out,
            );
        }
        self.item_done(call.output_index, item, out);
    }

    /// Ends every open item, in output order.
    fn close_all(&mut self, out: &mut Vec<u8>) {
        self.close_open(out);
        let mut keys: Vec<(usize, usize)> = self
            .calls
            .iter()
            .map(|(k, c)| (c.output_index, *k))
            .collect();
        keys.sort_unstable();
        for (_, key) in keys {
            self.call_end(key, out);
        }
    }

    /// Encodes one event.
    pub fn event(&mut self, ev: &StreamEvent, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        match ev {
            StreamEvent::Start { input_tokens } => {
                self.input_tokens = input_tokens.unwrap_or(0);
                self.start(out);
            }
            StreamEvent::TextDelta(t) if !t.is_empty() => {
                self.start(out);
                self.text_delta(t, out);
            }
            StreamEvent::ThinkingDelta(t) if !t.is_empty() => {
                self.start(out);
                self.thinking_delta(t, out);
            }
            StreamEvent::SignatureDelta(s) => {
                if let Some((_, _, Open::Reasoning { signature, .. })) = &mut self.open {
                    signature.push_str(s);
                }
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.start(out);
                self.call_start(*index, id.as_deref(), name, out);
            }
            StreamEvent::ToolCallArgs { index, fragment } => self.call_args(*index, fragment, out),
            StreamEvent::ToolCallEnd { index } => self.call_end(*index, out),
            StreamEvent::Finish { reason, usage } => {
                self.start(out);
                self.close_all(out);
                let reason = match reason {
                    _ if self.saw_call => FinishReason::ToolUse,
                    Some(r) => *r,
                    None => FinishReason::Stop,
                };
                let mut u = usage.unwrap_or_default();
                if u.input == 0 {
                    u.input = self.input_tokens;
                }
                let (status, details) = status_of(reason);
                let mut r = self.snapshot(status, Some(&u));
                if let Some(o) = r.as_object_mut() {
                    o.insert("incomplete_details".into(), details);
                }
                let ty = if status == "completed" {
                    "response.completed"
                } else {
                    "response.incomplete"
                };
                self.emit(json!({"type": ty, "response": r}), out);
                self.finished = true;
            }
            StreamEvent::Error { status, message } => {
                self.start(out);
                self.close_all(out);
                let code = error_code(*status);
                self.emit(
                    json!({"type": "error", "code": code, "message": message, "param": null}),
                    out,
                );
                let mut r = self.snapshot("failed", None);
                if let Some(o) = r.as_object_mut() {
                    o.insert("error".into(), json!({"code": code, "message": message}));
                }
                self.emit(json!({"type": "response.failed", "response": r}), out);
                self.finished = true;
            }
            _ => {}
        }
    }

    /// Ends the client stream: a terminal event if none was sent.
    pub fn close(&mut self, out: &mut Vec<u8>) {
        if !self.finished {
            self.event(
                &StreamEvent::Finish {
                    reason: None,
                    usage: None,
                },
                out,
            );
        }
    }
}

/// The Responses error `code` for an HTTP status.
fn error_code(status: u16) -> &'static str {
    match status {
        429 => "rate_limit_exceeded",
        s if !(400..500).contains(&s) => "server_error",
        _ => "invalid_prompt",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A text or reasoning summary delta is written byte for byte as the
    /// event's `Value` would be, escapes in the text included.
    #[test]
    fn a_delta_is_written_as_its_value_would_be() {
        for text in ["plain", "\"quoted\" \\ \n\u{1}", "é 🦀"] {
            for (ev, ty, extra) in [
                (
                    &TEXT_DELTA,
                    "response.output_text.delta",
                    ("content_index", json!(0)),
                ),
                (
                    &SUMMARY_DELTA,
                    "response.reasoning_summary_text.delta",
                    ("summary_index", json!(0)),
                ),
            ] {
                let mut e = Encoder::new("m");
                e.seq = 41;
                let mut slow = Vec::new();
                let mut v =
                    json!({"type": ty, "item_id": "msg_\"1", "output_index": 3, "delta": text});
                v[extra.0] = extra.1;
                if ty == "response.output_text.delta" {
                    v["logprobs"] = json!([]);
                }
                e.emit(v, &mut slow);
                let mut fast = Vec::new();
                write_delta(ev, text, "msg_\"1", 3, 41, &mut fast);
                assert_eq!(
                    String::from_utf8(fast).unwrap(),
                    String::from_utf8(slow).unwrap()
                );
            }
        }
    }
}
