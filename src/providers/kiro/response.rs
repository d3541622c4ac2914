//! Kiro's binary event stream (AWS event-stream framing) → Anthropic
//! Messages events.
//!
//! [`Machine`] turns decoded event-stream messages into Anthropic stream
//! events (`message_start`, content blocks, `message_delta`,
//! `message_stop`); [`KiroStream`] feeds it from raw bytes and writes SSE;
//! [`aggregate`] folds the events into one whole message for unary
//! requests. Token counts are estimates: Kiro reports none.

use std::collections::HashMap;
use std::io;

use serde_json::{Value, json};

use super::super::eventstream::{Decoder, Message};
use super::super::transform::Transform;
use crate::log;
use crate::protocol::anthropic;

const OPEN_TAG: &str = "<thinking>";
const CLOSE_TAG: &str = "</thinking>";

/// What Kiro said when it refused a request, as the client will see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status for the client.
    pub status: u16,
    /// Message for the client.
    pub message: String,
}

/// Maps a Kiro error (HTTP body or exception frame) to a client status and
/// message. `CONTENT_LENGTH_EXCEEDS_THRESHOLD` becomes Anthropic's
/// "prompt is too long", which makes Claude Code compact the conversation.
pub fn refusal(status: u16, kind: &str, body: &str) -> Refusal {
    let parsed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let message = parsed["message"]
        .as_str()
        .or_else(|| parsed["Message"].as_str())
        .map_or_else(|| body.trim().chars().take(500).collect(), str::to_owned);
    let reason = parsed["reason"].as_str().unwrap_or_default();
    if reason == "CONTENT_LENGTH_EXCEEDS_THRESHOLD"
        || body.contains("CONTENT_LENGTH_EXCEEDS_THRESHOLD")
        || message.contains("Input is too long")
    {
        return Refusal {
            status: 400,
            message: format!(
                "prompt is too long: the conversation exceeds Kiro's context limit ({message})"
            ),
        };
    }
    let status = match kind {
        "ThrottlingException" => 429,
        "ServiceQuotaExceededException" => 402,
        "ValidationException" => 400,
        "AccessDeniedException" => 403,
        "ResourceNotFoundException" => 404,
        "" => status,
        _ => 500,
    };
    let mut text = format!("Kiro: {message}");
    if !reason.is_empty() {
        text.push_str(&format!(" ({reason})"));
    } else if !kind.is_empty() {
        text.push_str(&format!(" ({kind})"));
    }
    Refusal {
        status,
        message: text,
    }
}

/// Anthropic's error type for a status.
fn anthropic_type(status: u16) -> &'static str {
    match status {
        400 | 402 | 413 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Open {
    Text,
    Thinking,
    Tool,
}

/// Where the `<thinking>` splitter is.
#[derive(Debug, PartialEq, Eq)]
enum Tags {
    /// Not asked for: text is text.
    Off,
    /// At the start, deciding whether the answer opens with the tag.
    Start(String),
    /// Inside thinking; holds a possible partial closing tag.
    Inside(String),
    /// After the closing tag; leading newlines are dropped.
    After,
    /// Plain text from here on.
    Text,
}

/// One stream's state.
#[derive(Debug)]
pub struct Machine {
    model: String,
    input_tokens: u64,
    context_window: u64,
    aliases: HashMap<String, String>,
    started: bool,
    open: Option<Open>,
    next_index: u64,
    /// Tool id → whether its `stop` arrived.
    tools: HashMap<String, bool>,
    current_tool: Option<String>,
    any_tool: bool,
    text_chars: usize,
    thinking_chars: usize,
    tool_chars: usize,
    saw_text_block: bool,
    context_pct: Option<f64>,
    tags: Tags,
    finished: bool,
    /// A refusal before any content (the caller can answer with it).
    pub early: Option<Refusal>,
    /// How the stream failed, if it did.
    pub failure: Option<Refusal>,
}

impl Machine {
    /// A machine for one answer to `model` (the client's name).
    pub fn new(
        model: &str,
        input_tokens: u64,
        thinking: bool,
        aliases: HashMap<String, String>,
    ) -> Self {
        let window = if [
            "opus-4.5", "opus-4-5", "opus-4.6", "opus-4-6", "opus-4.7", "opus-4-7",
        ]
        .iter()
        .any(|m| model.contains(m))
        {
            1_000_000
        } else {
            200_000
        };
        Self {
            model: model.to_owned(),
            input_tokens,
            context_window: window,
            aliases,
            started: false,
            open: None,
            next_index: 0,
            tools: HashMap::new(),
            current_tool: None,
            any_tool: false,
            text_chars: 0,
            thinking_chars: 0,
            tool_chars: 0,
            saw_text_block: false,
            context_pct: None,
            tags: if thinking {
                Tags::Start(String::new())
            } else {
                Tags::Off
            },
            finished: false,
            early: None,
            failure: None,
        }
    }

    /// Whether any content block was started.
    pub fn has_content(&self) -> bool {
        self.next_index > 0
    }

    /// Whether the stream was ended (finished or failed).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    fn start(&mut self, out: &mut Vec<Value>) {
        if !self.started {
            self.started = true;
            out.push(anthropic::message_start(&self.model, self.input_tokens));
        }
    }

    fn close(&mut self, out: &mut Vec<Value>) {
        if let Some(kind) = self.open.take() {
            out.push(json!({"type": "content_block_stop", "index": self.next_index - 1}));
            if kind == Open::Tool {
                self.current_tool = None;
            }
        }
    }

    fn open(&mut self, kind: Open, block: Value, out: &mut Vec<Value>) {
        self.start(out);
        self.close(out);
        out.push(json!({"type": "content_block_start", "index": self.next_index, "content_block": block}));
        self.next_index += 1;
        self.open = Some(kind);
    }

    fn emit_text(&mut self, text: &str, out: &mut Vec<Value>) {
        if text.is_empty() {
            return;
        }
        if self.open != Some(Open::Text) {
            self.open(Open::Text, json!({"type": "text", "text": ""}), out);
            self.saw_text_block = true;
        }
        self.text_chars += text.chars().count();
        out.push(
            json!({"type": "content_block_delta", "index": self.next_index - 1,
            "delta": {"type": "text_delta", "text": text}}),
        );
    }

    fn emit_thinking(&mut self, text: &str, out: &mut Vec<Value>) {
        if text.is_empty() {
            return;
        }
        if self.open != Some(Open::Thinking) {
            self.open(
                Open::Thinking,
                json!({"type": "thinking", "thinking": ""}),
                out,
            );
        }
        self.thinking_chars += text.chars().count();
        out.push(
            json!({"type": "content_block_delta", "index": self.next_index - 1,
            "delta": {"type": "thinking_delta", "thinking": text}}),
        );
    }

    /// Text from `assistantResponseEvent`, split at `<thinking>` tags when
    /// thinking was asked for (tags are recognised only at the start of
    /// the answer, so a tag quoted later in the text stays text).
    fn text(&mut self, mut s: String, out: &mut Vec<Value>) {
        loop {
            match &mut self.tags {
                Tags::Off | Tags::Text => return self.emit_text(&s, out),
                Tags::Start(buf) => {
                    buf.push_str(&s);
                    let trimmed = buf.trim_start();
                    if let Some(rest) = trimmed.strip_prefix(OPEN_TAG) {
                        let rest = rest.strip_prefix('\n').unwrap_or(rest).to_owned();
                        self.tags = Tags::Inside(String::new());
                        s = rest;
                    } else if OPEN_TAG.starts_with(trimmed) {
                        return; // maybe the tag, wait for more
                    } else {
                        let all = std::mem::take(buf);
                        self.tags = Tags::Text;
                        return self.emit_text(&all, out);
                    }
                }
                Tags::Inside(hold) => {
                    hold.push_str(&s);
                    if let Some(at) = hold.find(CLOSE_TAG) {
                        let thought = hold[..at].to_owned();
                        let rest = hold[at + CLOSE_TAG.len()..].to_owned();
                        self.tags = Tags::After;
                        self.emit_thinking(&thought, out);
                        s = rest;
                    } else {
                        // Keep what could be the start of the closing tag.
                        let mut keep = hold.len().saturating_sub(CLOSE_TAG.len() - 1);
                        while !hold.is_char_boundary(keep) {
                            keep -= 1;
                        }
                        let ready: String = hold.drain(..keep).collect();
                        return self.emit_thinking(&ready, out);
                    }
                }
                Tags::After => {
                    let rest = s.trim_start_matches(['\n', '\r']);
                    if rest.is_empty() {
                        return;
                    }
                    s = rest.to_owned();
                    self.tags = Tags::Text;
                }
            }
        }
    }

    fn tool_use(&mut self, p: &Value, out: &mut Vec<Value>) {
        let id = p["toolUseId"].as_str().map(str::to_owned);
        let id = match id {
            Some(id) => id,
            // A fragment without an id belongs to the open call.
            None => match &self.current_tool {
                Some(id) => id.clone(),
                None => return,
            },
        };
        if self.current_tool.as_deref() != Some(id.as_str()) {
            if self.tools.get(&id) == Some(&true) {
                return; // already finished; ignore stragglers
            }
            if let Some(prev) = self.current_tool.take() {
                // A new call finalises the open one.
                self.tools.insert(prev, true);
            }
            let name = p["name"].as_str().unwrap_or_default();
            let name = self
                .aliases
                .get(name)
                .map_or(name, String::as_str)
                .to_owned();
            self.open(
                Open::Tool,
                json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                out,
            );
            self.current_tool = Some(id.clone());
            self.tools.insert(id.clone(), false);
            self.any_tool = true;
        }
        if let Some(frag) = p["input"].as_str().filter(|f| !f.is_empty()) {
            self.tool_chars += frag.chars().count();
            out.push(
                json!({"type": "content_block_delta", "index": self.next_index - 1,
                "delta": {"type": "input_json_delta", "partial_json": frag}}),
            );
        } else if let Some(obj) = p.get("input").filter(|i| i.is_object()) {
            let frag = obj.to_string();
            self.tool_chars += frag.len();
            out.push(
                json!({"type": "content_block_delta", "index": self.next_index - 1,
                "delta": {"type": "input_json_delta", "partial_json": frag}}),
            );
        }
        if p["stop"] == true {
            self.tools.insert(id, true);
            self.close(out);
        }
    }

    /// Handles one decoded message.
    pub fn message(&mut self, m: &Message, out: &mut Vec<Value>) {
        if self.finished {
            return;
        }
        let payload: Value = serde_json::from_slice(&m.payload).unwrap_or(Value::Null);
        match m.message_type() {
            "exception" | "error" => {
                let kind = m.kind().to_owned();
                let text = m
                    .header(":error-message")
                    .map(str::to_owned)
                    .unwrap_or_else(|| String::from_utf8_lossy(&m.payload).into_owned());
                let r = refusal(500, &kind, &text);
                return self.fail(r.status, &r.message, out);
            }
            _ => {}
        }
        match m.kind() {
            "assistantResponseEvent" => {
                if payload.get("followupPrompt").is_some() {
                    return;
                }
                if let Some(t) = payload["content"].as_str() {
                    self.text(t.to_owned(), out);
                }
            }
            "toolUseEvent" => self.tool_use(&payload, out),
            "reasoningContentEvent" => {
                if let Some(t) = payload["text"].as_str() {
                    self.emit_thinking(t, out);
                }
                if let Some(sig) = payload["signature"].as_str()
                    && self.open == Some(Open::Thinking)
                {
                    out.push(
                        json!({"type": "content_block_delta", "index": self.next_index - 1,
                        "delta": {"type": "signature_delta", "signature": sig}}),
                    );
                }
            }
            "contextUsageEvent" => {
                self.context_pct = payload["contextUsagePercentage"].as_f64();
            }
            "invalidStateEvent" => log::warn(&format!("kiro-api: invalid state event: {payload}")),
            _ => {} // meteringEvent, messageMetadataEvent, followupPromptEvent, …
        }
    }

    /// The stream failed: an Anthropic `error` event ends it. Before any
    /// content the refusal is also kept in [`Machine::early`].
    pub fn fail(&mut self, status: u16, message: &str, out: &mut Vec<Value>) {
        if self.finished {
            return;
        }
        self.finished = true;
        if !self.has_content() {
            self.early = Some(Refusal {
                status,
                message: message.to_owned(),
            });
        }
        self.start(out);
        self.failure = Some(Refusal {
            status,
            message: message.to_owned(),
        });
        out.push(json!({"type": "error", "error": {
            "type": anthropic_type(status), "message": message}}));
    }

    /// The upstream ended: closes blocks and the message.
    pub fn finish(&mut self, out: &mut Vec<Value>) {
        if self.finished {
            return;
        }
        // Flush what the thinking splitter held back.
        match std::mem::replace(&mut self.tags, Tags::Text) {
            Tags::Start(buf) => self.emit_text(&buf, out),
            Tags::Inside(hold) => self.emit_thinking(&hold, out),
            other => self.tags = other,
        }
        let truncated = self.tools.values().any(|stopped| !stopped);
        let thinking_only = !self.saw_text_block && !self.any_tool && self.thinking_chars > 0;
        if thinking_only {
            self.emit_text(" ", out);
        }
        self.start(out);
        self.close(out);
        self.finished = true;
        let output = ((self.text_chars + self.thinking_chars + self.tool_chars) as u64).div_ceil(4);
        let input = match self.context_pct {
            Some(p) if p > 0.0 => {
                let total = (self.context_window as f64 * p / 100.0).round() as u64;
                total.saturating_sub(output)
            }
            _ => self.input_tokens,
        };
        let stop = if truncated || thinking_only {
            "max_tokens"
        } else if self.any_tool {
            "tool_use"
        } else {
            "end_turn"
        };
        out.push(json!({"type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": null},
            "usage": {"input_tokens": input, "output_tokens": output}}));
        out.push(json!({"type": "message_stop"}));
    }
}

/// Raw event-stream bytes → Anthropic events.
pub struct KiroStream {
    decoder: Decoder,
    /// The state machine (inspect [`Machine::early`] after feeding).
    pub machine: Machine,
    events: Vec<Value>,
}

impl KiroStream {
    /// A stream over `machine`.
    pub fn new(machine: Machine) -> Self {
        Self {
            decoder: Decoder::new(),
            machine,
            events: Vec::new(),
        }
    }

    /// Feeds bytes; appends the resulting events.
    pub fn pump(&mut self, chunk: &[u8], out: &mut Vec<Value>) {
        if self.machine.is_finished() {
            return;
        }
        self.decoder.feed(chunk);
        loop {
            match self.decoder.next_message() {
                Ok(Some(m)) => self.machine.message(&m, out),
                Ok(None) => break,
                Err(e) => {
                    self.machine
                        .fail(502, &format!("Kiro answer is corrupt: {e}"), out);
                    break;
                }
            }
            if self.machine.is_finished() {
                break;
            }
        }
    }

    /// The input ended.
    pub fn end(&mut self, out: &mut Vec<Value>) {
        if self.decoder.has_partial() {
            self.machine
                .fail(502, "Kiro answer ended in the middle of a message", out);
        } else {
            self.machine.finish(out);
        }
    }

    fn write(&mut self, out: &mut Vec<u8>) {
        for ev in self.events.drain(..) {
            anthropic::write_event(&ev, out);
        }
    }
}

impl Transform for KiroStream {
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let mut events = std::mem::take(&mut self.events);
        self.pump(chunk, &mut events);
        self.events = events;
        self.write(out);
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        let mut events = std::mem::take(&mut self.events);
        self.end(&mut events);
        self.events = events;
        self.write(out);
    }

    fn fail(&mut self, err: &io::Error, out: &mut Vec<u8>) -> bool {
        let (status, message) = if err.kind() == io::ErrorKind::TimedOut {
            (504, "Kiro stopped sending (idle timeout)")
        } else {
            (502, "connection to Kiro lost mid-stream")
        };
        let mut events = std::mem::take(&mut self.events);
        self.machine.fail(status, message, &mut events);
        self.events = events;
        self.write(out);
        true
    }
}

/// Folds Anthropic stream events into one Messages answer, or the refusal
/// the stream ended with.
pub fn aggregate(events: &[Value]) -> Result<Value, Refusal> {
    let mut message = json!({"id": null, "type": "message", "role": "assistant", "model": null,
        "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": 0, "output_tokens": 0}});
    let mut blocks: Vec<Value> = Vec::new();
    let mut tool_json: HashMap<usize, String> = HashMap::new();
    for ev in events {
        match ev["type"].as_str().unwrap_or_default() {
            "message_start" => {
                message["id"] = ev["message"]["id"].clone();
                message["model"] = ev["message"]["model"].clone();
                message["usage"]["input_tokens"] = ev["message"]["usage"]["input_tokens"].clone();
            }
            "content_block_start" => blocks.push(ev["content_block"].clone()),
            "content_block_delta" => {
                let i = ev["index"].as_u64().unwrap_or(0) as usize;
                let Some(block) = blocks.get_mut(i) else {
                    continue;
                };
                let d = &ev["delta"];
                let append = |block: &mut Value, key: &str, s: &str| {
                    let joined = format!("{}{s}", block[key].as_str().unwrap_or_default());
                    block[key] = json!(joined);
                };
                match d["type"].as_str().unwrap_or_default() {
                    "text_delta" => append(block, "text", d["text"].as_str().unwrap_or("")),
                    "thinking_delta" => {
                        append(block, "thinking", d["thinking"].as_str().unwrap_or(""))
                    }
                    "signature_delta" => {
                        append(block, "signature", d["signature"].as_str().unwrap_or(""))
                    }
                    "input_json_delta" => tool_json
                        .entry(i)
                        .or_default()
                        .push_str(d["partial_json"].as_str().unwrap_or("")),
                    _ => {}
                }
            }
            "message_delta" => {
                message["stop_reason"] = ev["delta"]["stop_reason"].clone();
                message["usage"] = ev["usage"].clone();
            }
            "error" => {
                return Err(Refusal {
                    status: 502,
                    message: ev["error"]["message"]
                        .as_str()
                        .unwrap_or("Kiro error")
                        .to_owned(),
                });
            }
            _ => {}
        }
    }
    for (i, raw) in tool_json {
        if let Some(block) = blocks.get_mut(i) {
            block["input"] = match serde_json::from_str::<Value>(&raw) {
                Ok(v @ Value::Object(_)) => v,
                _ if raw.trim().is_empty() => json!({}),
                _ => {
                    log::warn(&format!(
                        "kiro-api: tool input is not a JSON object, sent as {{}}: {raw}"
                    ));
                    json!({})
                }
            };
        }
    }
    message["content"] = Value::Array(blocks);
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::super::super::eventstream::{HeaderValue, encode};
    use super::*;

    fn ev(kind: &str, payload: Value) -> Vec<u8> {
        encode(
            &[
                (":message-type", HeaderValue::String("event".into())),
                (":event-type", HeaderValue::String(kind.into())),
            ],
            payload.to_string().as_bytes(),
        )
    }

    fn run(bytes: &[u8], thinking: bool) -> Vec<Value> {
        let mut s = KiroStream::new(Machine::new("claude-x", 10, thinking, HashMap::new()));
        let mut out = Vec::new();
        for b in bytes {
            s.pump(std::slice::from_ref(b), &mut out);
        }
        s.end(&mut out);
        out
    }

    fn types(events: &[Value]) -> Vec<String> {
        events
            .iter()
            .map(|e| {
                let t = e["type"].as_str().unwrap().to_owned();
                match e["delta"]["type"].as_str() {
                    Some(d) if t == "content_block_delta" => format!("delta:{d}"),
                    _ => t,
                }
            })
            .collect()
    }

    #[test]
    fn text_and_tool_use_with_fragments() {
        let mut bytes = ev("assistantResponseEvent", json!({"content": "Let me check"}));
        bytes.extend(ev(
            "toolUseEvent",
            json!({"toolUseId": "t1", "name": "get_weather", "input": "{\"ci"}),
        ));
        bytes.extend(ev(
            "toolUseEvent",
            json!({"toolUseId": "t1", "name": "get_weather", "input": "ty\":\"Paris\"}"}),
        ));
        bytes.extend(ev(
            "toolUseEvent",
            json!({"toolUseId": "t1", "name": "get_weather", "stop": true}),
        ));
        bytes.extend(ev("meteringEvent", json!({"unit": "credit", "usage": 0.1})));
        bytes.extend(ev(
            "contextUsageEvent",
            json!({"contextUsagePercentage": 1.0}),
        ));
        let events = run(&bytes, false);
        assert_eq!(
            types(&events),
            [
                "message_start",
                "content_block_start",
                "delta:text_delta",
                "content_block_stop",
                "content_block_start",
                "delta:input_json_delta",
                "delta:input_json_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let last = &events[8];
        assert_eq!(last["delta"]["stop_reason"], "tool_use");
        assert_eq!(
            last["usage"]["input_tokens"].as_u64().unwrap()
                + last["usage"]["output_tokens"].as_u64().unwrap(),
            2000
        );
        let whole = aggregate(&events).unwrap();
        assert_eq!(whole["content"][0]["text"], "Let me check");
        assert_eq!(whole["content"][1]["input"], json!({"city": "Paris"}));
        assert_eq!(whole["stop_reason"], "tool_use");
    }

    #[test]
    fn thinking_tags_split_across_chunks() {
        let mut bytes = Vec::new();
        for part in [
            "<thin",
            "king>\nponder",
            "ing</thi",
            "nking>\n\nThe answer",
            " is 4.",
        ] {
            bytes.extend(ev("assistantResponseEvent", json!({"content": part})));
        }
        let whole = aggregate(&run(&bytes, true)).unwrap();
        assert_eq!(whole["content"][0]["type"], "thinking");
        assert_eq!(whole["content"][0]["thinking"], "pondering");
        assert_eq!(whole["content"][1]["text"], "The answer is 4.");
        assert_eq!(whole["stop_reason"], "end_turn");
        // Not asked for: tags stay text.
        let whole = aggregate(&run(&bytes, false)).unwrap();
        assert_eq!(
            whole["content"][0]["text"],
            "<thinking>\npondering</thinking>\n\nThe answer is 4."
        );
        // A tag later in the text is text.
        let bytes = ev(
            "assistantResponseEvent",
            json!({"content": "use <thinking> tags"}),
        );
        let whole = aggregate(&run(&bytes, true)).unwrap();
        assert_eq!(whole["content"][0]["text"], "use <thinking> tags");
    }

    #[test]
    fn thinking_only_and_truncated_tool_end_with_max_tokens() {
        let bytes = ev(
            "assistantResponseEvent",
            json!({"content": "<thinking>hmm"}),
        );
        let whole = aggregate(&run(&bytes, true)).unwrap();
        assert_eq!(whole["content"][1]["text"], " ");
        assert_eq!(whole["stop_reason"], "max_tokens");
        let bytes = ev(
            "toolUseEvent",
            json!({"toolUseId": "t", "name": "f", "input": "{\"a\":"}),
        );
        let events = run(&bytes, false);
        assert_eq!(
            events[events.len() - 2]["delta"]["stop_reason"],
            "max_tokens"
        );
        assert_eq!(
            aggregate(&events).unwrap()["content"][0]["input"],
            json!({})
        );
    }

    #[test]
    fn exceptions_and_corruption() {
        let exc = encode(
            &[
                (":message-type", HeaderValue::String("exception".into())),
                (
                    ":exception-type",
                    HeaderValue::String("ThrottlingException".into()),
                ),
            ],
            br#"{"message":"slow down"}"#,
        );
        let mut s = KiroStream::new(Machine::new("m", 1, false, HashMap::new()));
        let mut out = Vec::new();
        s.pump(&exc, &mut out);
        assert_eq!(
            s.machine.early,
            Some(Refusal {
                status: 429,
                message: "Kiro: slow down (ThrottlingException)".into()
            })
        );
        assert_eq!(s.machine.failure.as_ref().unwrap().status, 429);
        assert!(aggregate(&out).is_err());
        // Bad CRC after some text: in-band error, no message_stop.
        let mut bytes = ev("assistantResponseEvent", json!({"content": "partial"}));
        let mut bad = ev("assistantResponseEvent", json!({"content": "x"}));
        let n = bad.len();
        bad[n - 1] ^= 0xff;
        bytes.extend(bad);
        let events = run(&bytes, false);
        assert_eq!(events.last().unwrap()["type"], "error");
        assert!(
            events.last().unwrap()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("CRC")
        );
    }

    #[test]
    fn too_long_prompt_refusal() {
        let r = refusal(
            400,
            "",
            r#"{"message":"Input is too long.","reason":"CONTENT_LENGTH_EXCEEDS_THRESHOLD"}"#,
        );
        assert_eq!(r.status, 400);
        assert!(r.message.starts_with("prompt is too long"));
        let r = refusal(
            400,
            "",
            r#"{"message":"Improperly formed request.","reason":null}"#,
        );
        assert_eq!(r.message, "Kiro: Improperly formed request.");
    }

    #[test]
    fn aliases_restore_tool_names() {
        let mut aliases = HashMap::new();
        aliases.insert("short_abc".to_owned(), "a_very_long_name".to_owned());
        let mut s = KiroStream::new(Machine::new("m", 1, false, aliases));
        let mut out = Vec::new();
        s.pump(
            &ev(
                "toolUseEvent",
                json!({"toolUseId": "t", "name": "short_abc", "input": "{}", "stop": true}),
            ),
            &mut out,
        );
        s.end(&mut out);
        assert_eq!(
            aggregate(&out).unwrap()["content"][0]["name"],
            "a_very_long_name"
        );
    }
}
