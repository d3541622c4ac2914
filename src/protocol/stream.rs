//! Per-stream conversion state behind [`super::StreamConverter`].
//!
//! Cross-family streams run upstream event → canonical [`StreamEvent`]s →
//! client encoder, each side a small state machine owned by this stream
//! only, since concurrent streams must never see each other's state.
//! Same-family streams skip the canonical model and forward each event's
//! JSON text untouched, but still own the framing: the client must see a
//! well-formed stream even when the upstream duplicated, omitted or
//! truncated its own terminators.
//!
//! Lifecycle: `event`* → (`end` | `fail`) → `close`. After `close` nothing
//! more is written.

use crate::protocol::Lookup as _;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

use super::canonical::{StreamEvent, TokenUsage};
use super::{GeminiFraming, Protocol, anthropic, errors, gemini, ids, openai, responses};

/// Decodes upstream events of one family.
#[derive(Debug)]
pub enum Decoder {
    /// OpenAI chunks.
    OpenAi(openai::Decoder),
    /// Anthropic events.
    Anthropic(anthropic::Decoder),
    /// Gemini chunks.
    Gemini(gemini::Decoder),
    /// Responses events.
    Responses(responses::Decoder),
}

impl Decoder {
    /// OpenAI and Gemini decoders hold their finish back until the end of
    /// input (usage may follow it), so a finish reason already received
    /// counts as the upstream's own end.
    fn saw_finish_reason(&self) -> bool {
        match self {
            Self::OpenAi(d) => d.saw_finish_reason(),
            Self::Gemini(d) => d.saw_finish_reason(),
            Self::Anthropic(_) | Self::Responses(_) => false,
        }
    }

    fn new(p: Protocol) -> Self {
        match p {
            Protocol::OpenAi => Self::OpenAi(openai::Decoder::default()),
            Protocol::Anthropic => Self::Anthropic(anthropic::Decoder::default()),
            Protocol::Gemini => Self::Gemini(gemini::Decoder::default()),
            Protocol::Responses => Self::Responses(responses::Decoder::default()),
        }
    }

    fn data(&mut self, data: &str, out: &mut Vec<StreamEvent>) {
        match self {
            Self::OpenAi(d) => d.event(data, out),
            Self::Anthropic(d) => d.event(data, out),
            Self::Gemini(d) => d.event(data, out),
            Self::Responses(d) => d.event(data, out),
        }
    }

    fn value(&mut self, v: &Value, out: &mut Vec<StreamEvent>) {
        match self {
            Self::OpenAi(d) => d.value(v, out),
            Self::Anthropic(d) => d.value(v, out),
            Self::Gemini(d) => d.value(v, out),
            Self::Responses(d) => d.value(v, out),
        }
    }

    fn end(&mut self, out: &mut Vec<StreamEvent>) {
        match self {
            Self::OpenAi(d) => d.end(out),
            Self::Anthropic(d) => d.end(out),
            Self::Gemini(d) => d.end(out),
            Self::Responses(d) => d.end(out),
        }
    }
}

/// Encodes canonical events for one client protocol.
#[derive(Debug)]
pub enum Encoder {
    /// OpenAI chunks.
    OpenAi(openai::Encoder),
    /// Anthropic events.
    Anthropic(anthropic::Encoder),
    /// Gemini chunks.
    Gemini(gemini::Encoder),
    /// Responses events (boxed: it tracks every output item).
    Responses(Box<responses::Encoder>),
}

impl Encoder {
    fn new(p: Protocol, model: &str, framing: GeminiFraming) -> Self {
        match p {
            Protocol::OpenAi => Self::OpenAi(openai::Encoder::new(model)),
            Protocol::Anthropic => Self::Anthropic(anthropic::Encoder::new(model)),
            Protocol::Gemini => Self::Gemini(gemini::Encoder::new(model, framing)),
            Protocol::Responses => Self::Responses(Box::new(responses::Encoder::new(model))),
        }
    }

    /// See [`responses::Encoder::set_tools`]; other clients ignore it.
    pub fn set_tools(&mut self, tools: responses::ToolMap) {
        if let Self::Responses(e) = self {
            e.set_tools(tools);
        }
    }

    /// See [`openai::Encoder::set_usage_chunk`]; other clients ignore it.
    pub fn set_usage_chunk(&mut self, on: bool) {
        if let Self::OpenAi(e) = self {
            e.set_usage_chunk(on);
        }
    }

    fn event(&mut self, ev: &StreamEvent, out: &mut Vec<u8>) {
        match self {
            Self::OpenAi(e) => e.event(ev, out),
            Self::Anthropic(e) => e.event(ev, out),
            Self::Gemini(e) => e.event(ev, out),
            Self::Responses(e) => e.event(ev, out),
        }
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        match self {
            Self::OpenAi(e) => e.close(out),
            Self::Anthropic(e) => e.close(out),
            Self::Gemini(e) => e.close(out),
            Self::Responses(e) => e.close(out),
        }
    }
}

/// The in-band error sent when an upstream stream stops without its end.
pub const TRUNCATED: &str = "the upstream closed the stream before the answer was complete";

/// The families whose streams are forwarded as they are. No upstream
/// speaks the Responses API, so a Responses stream is always re-encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Relay {
    OpenAi,
    Anthropic,
    Gemini,
}

impl Relay {
    fn of(p: Protocol) -> Option<Self> {
        match p {
            Protocol::OpenAi => Some(Self::OpenAi),
            Protocol::Anthropic => Some(Self::Anthropic),
            Protocol::Gemini => Some(Self::Gemini),
            Protocol::Responses => None,
        }
    }
}

/// Same-family forwarding with framing guarantees.
#[derive(Debug)]
pub struct Passthrough {
    proto: Relay,
    model: String,
    framer: gemini::Framer,
    started: bool,
    saw_delta: bool,
    saw_finish: bool,
    /// The content block being forwarded (Anthropic).
    open_block: Option<u64>,
    /// Index the next forwarded content block must have (Anthropic).
    next_block: u64,
    last_id: Option<String>,
    ended: bool,
    /// The upstream sent OpenAI's `data: [DONE]`.
    saw_done: bool,
}

/// Whether upstream event data spans lines (and so cannot be re-sent as
/// one `data:` line). A byte search: a `char` pattern decodes UTF-8 on
/// the way, and cost more than the rest of the check.
fn is_multiline(data: &str) -> bool {
    memchr::memchr2(b'\n', b'\r', data.as_bytes()).is_some()
}

/// The fields of an OpenAI stream chunk a passthrough reads (usage,
/// whether the first choice finished, an error); the rest is skipped
/// unread, so a chunk goes out as the upstream wrote it whenever these
/// parse — even when elsewhere it holds JSON that a [`Value`] cannot
/// (a number beyond `f64`, a lone surrogate escape), as a proxy that
/// only forwards would pass it.
#[derive(Debug, PartialEq)]
pub(crate) struct OpenAiChunk {
    usage: Option<Value>,
    finished: bool,
    error: bool,
}

/// [`OpenAiChunk`] as serde reads it: the reference, and the reader of
/// any chunk [`OpenAiChunk::scan`] leaves to it.
#[derive(Deserialize)]
struct RawChunk {
    #[serde(default)]
    usage: Option<Value>,
    #[serde(default)]
    choices: Option<super::json::First<Choice>>,
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    finish_reason: Option<IgnoredAny>,
}

impl OpenAiChunk {
    /// The chunk's fields, if `data` is an object of that shape.
    pub(crate) fn read(data: &str) -> Option<Self> {
        Self::scan(data).or_else(|| Self::by_serde(data))
    }

    fn by_serde(data: &str) -> Option<Self> {
        let raw: RawChunk = serde_json::from_str(data).ok()?;
        Some(Self {
            usage: raw.usage,
            finished: raw
                .choices
                .and_then(|c| c.0)
                .is_some_and(|c| c.finish_reason.is_some()),
            error: raw.error.is_some(),
        })
    }

    /// Whether the scan, where it reads `data`, reads what serde reads
    /// (for the fuzz targets).
    pub(crate) fn scan_agrees(data: &str) -> bool {
        Self::scan(data).is_none_or(|chunk| Some(chunk) == Self::by_serde(data))
    }

    /// [`RawChunk`]'s reading of the usual chunk, by a scan of its bytes
    /// that decodes nothing but a `usage` object (serde_json took about
    /// 2,700 instructions a chunk, most of a passed-through event's cost).
    /// `None` whenever it is not sure, leaving the chunk to serde: not an
    /// object, invalid JSON, a member name with an escape, a repeated
    /// member it reads, `choices` not an array of objects, deep nesting.
    fn scan(data: &str) -> Option<Self> {
        use super::json::{members, skip_value, skip_ws};
        let bytes = data.as_bytes();
        let mut chunk = Self {
            usage: None,
            finished: false,
            error: false,
        };
        let (mut usage, mut choices, mut error) = (false, false, false);
        let end = members(bytes, 0, |name, value| match plain(name)? {
            b"usage" if !std::mem::replace(&mut usage, true) => {
                let end = skip_value(bytes, value)?;
                chunk.usage = Option::<Value>::deserialize(
                    &mut serde_json::Deserializer::from_str(&data[value..end]),
                )
                .ok()?;
                Some(end)
            }
            b"choices" if !std::mem::replace(&mut choices, true) => {
                let (finished, end) = first_choice_finished(bytes, value)?;
                chunk.finished = finished;
                Some(end)
            }
            b"error" if !std::mem::replace(&mut error, true) => {
                let end = skip_value(bytes, value)?;
                chunk.error = !is_null(bytes, value, end);
                Some(end)
            }
            b"usage" | b"choices" | b"error" => None,
            _ => skip_value(bytes, value),
        })?;
        (skip_ws(bytes, end) == bytes.len()).then_some(chunk)
    }

    /// Whether the first choice has a (non-null) finish reason.
    pub(crate) fn finished(&self) -> bool {
        self.finished
    }

    /// Whether the chunk carries an `error`.
    pub(crate) fn is_error(&self) -> bool {
        self.error
    }
}

/// A member name as written, if it holds no escape (serde would match
/// the name it decodes, which the scan leaves to serde).
fn plain(name: &[u8]) -> Option<&[u8]> {
    (!name.contains(&b'\\')).then_some(name)
}

/// Whether the value from `start` (whitespace before it allowed) to `end`
/// is `null`.
fn is_null(bytes: &[u8], start: usize, end: usize) -> bool {
    &bytes[super::json::skip_ws(bytes, start)..end] == b"null"
}

/// Whether the first element of the `choices` array (or `null`) at `at`
/// has a non-null `finish_reason`, and where the value ends.
fn first_choice_finished(bytes: &[u8], at: usize) -> Option<(bool, usize)> {
    use super::json::{members, skip_value, skip_ws};
    let at = skip_ws(bytes, at);
    if bytes.get(at) != Some(&b'[') {
        let end = skip_value(bytes, at)?;
        return is_null(bytes, at, end).then_some((false, end));
    }
    let mut at = skip_ws(bytes, at + 1);
    if bytes.get(at) == Some(&b']') {
        return Some((false, at + 1));
    }
    // The first choice: an object whose members are skipped but one.
    if bytes.get(at) != Some(&b'{') {
        return None;
    }
    let mut finished = None;
    at = members(bytes, at, |name, value| {
        let end = skip_value(bytes, value)?;
        if plain(name)? == b"finish_reason" {
            if finished.is_some() {
                return None;
            }
            finished = Some(!is_null(bytes, value, end));
        }
        Some(end)
    })?;
    // The other choices, skipped.
    at = skip_ws(bytes, at);
    loop {
        match bytes.get(at)? {
            b']' => return Some((finished.unwrap_or(false), at + 1)),
            b',' => at = skip_ws(bytes, skip_value(bytes, at + 1)?),
            _ => return None,
        }
    }
}

impl Passthrough {
    fn new(proto: Relay, model: &str, framing: GeminiFraming) -> Self {
        Self {
            proto,
            model: model.to_string(),
            framer: gemini::Framer::new(framing),
            started: false,
            saw_delta: false,
            saw_finish: false,
            open_block: None,
            next_block: 0,
            last_id: None,
            ended: false,
            saw_done: false,
        }
    }

    /// Forwards one OpenAI chunk whose data is a single line, reading only
    /// what the relay needs (usage, whether a choice finished, an error)
    /// instead of building the whole JSON tree: the bytes go out as they
    /// came. Returns false, having done nothing, when the chunk needs the
    /// general path (not an object of the usual shape, or several lines).
    fn openai_chunk(&mut self, data: &str, usage: &mut TokenUsage, out: &mut Vec<u8>) -> bool {
        let data = data.trim();
        if self.ended || is_multiline(data) {
            return false;
        }
        let Some(chunk) = OpenAiChunk::read(data) else {
            return false;
        };
        if let Some(u) = chunk.usage.as_ref().filter(|u| u.is_object()) {
            *usage = openai::parse_usage(u);
        }
        if chunk.finished() {
            self.saw_finish = true;
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(data.as_bytes());
        out.extend_from_slice(b"\n\n");
        if chunk.is_error() {
            self.ended = true;
        }
        true
    }

    /// Forwards one Anthropic `content_block_delta` (nearly every event of
    /// a stream) once the stream began, reading only its `type` and
    /// `index` instead of building the whole JSON tree: the bytes go out
    /// as they came. Returns false, having done nothing, for any other
    /// event or shape, which [`Passthrough::event`] handles.
    fn anthropic_delta(&mut self, data: &str, out: &mut Vec<u8>) -> bool {
        /// A member of another type, or a repeated one, fails the parse.
        #[derive(Deserialize)]
        struct Head<'a> {
            #[serde(rename = "type", borrow)]
            ty: super::json::Borrowed<'a>,
            #[serde(default)]
            index: Option<u64>,
        }
        let data = data.trim();
        if self.ended || !self.started || is_multiline(data) {
            return false;
        }
        let Ok(head) = serde_json::from_str::<Head>(data) else {
            return false;
        };
        if head.ty.0 != "content_block_delta" {
            return false;
        }
        // A delta to a block that is not open is dropped, as `event`
        // drops it.
        if head.index.is_some() && head.index == self.open_block {
            out.extend_from_slice(b"event: content_block_delta\ndata: ");
            out.extend_from_slice(data.as_bytes());
            out.extend_from_slice(b"\n\n");
        }
        true
    }

    /// Forwards one upstream event; `raw` is its data text when it came
    /// from the wire (so bytes are kept), `v` its parsed form.
    fn event(&mut self, raw: Option<&str>, v: &Value, usage: &mut TokenUsage, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        // Multi-line upstream data cannot be re-sent as one `data:` line.
        let body = match raw.map(str::trim) {
            Some(r) if !is_multiline(r) => r.to_string(),
            _ => v.to_string(),
        };
        let text = |out: &mut Vec<u8>| out.extend_from_slice(body.as_bytes());
        match self.proto {
            Relay::OpenAi => {
                if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                    *usage = openai::parse_usage(u);
                }
                if v.at(&["choices", "0", "finish_reason"])
                    .is_some_and(|f| !f.is_null())
                {
                    self.saw_finish = true;
                }
                out.extend_from_slice(b"data: ");
                text(out);
                out.extend_from_slice(b"\n\n");
                if v.get("error").is_some() {
                    self.ended = true;
                }
            }
            Relay::Anthropic => {
                let ty = v.get("type").and_then(Value::as_str).unwrap_or("");
                // The type becomes the `event:` line: nothing that could
                // break out of it.
                if ty.is_empty() || !ty.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return;
                }
                match ty {
                    "message_start" => {
                        if self.started {
                            return;
                        }
                        if let Some(u) = v.at(&["message", "usage"]) {
                            *usage = anthropic::parse_usage(u);
                        }
                    }
                    // A keep-alive before the stream began is dropped:
                    // clients expect message_start first.
                    "ping" if !self.started => return,
                    "error" | "ping" => {}
                    _ if !self.started => {
                        self.started = true;
                        anthropic::write_event(
                            &anthropic::message_start(&self.model, usage.prompt_like()),
                            out,
                        );
                    }
                    _ => {}
                }
                match ty {
                    "message_start" => self.started = true,
                    "content_block_start" => {
                        // Clients expect blocks one at a time, numbered
                        // from 0: close a block the upstream left open,
                        // drop one out of sequence (and so its deltas).
                        self.close_block(out);
                        let i = v.get("index").and_then(Value::as_u64);
                        if i != Some(self.next_block) {
                            return;
                        }
                        self.open_block = i;
                        self.next_block += 1;
                    }
                    "content_block_delta" | "content_block_stop" => {
                        // A block that was never opened would break clients.
                        let i = v.get("index").and_then(Value::as_u64);
                        if i.is_none() || i != self.open_block {
                            return;
                        }
                        if ty == "content_block_stop" {
                            self.open_block = None;
                        }
                    }
                    "message_delta" => {
                        if self.saw_delta {
                            return;
                        }
                        if let Some(u) = v.get("usage") {
                            let n = anthropic::parse_usage(u);
                            usage.output = n.output;
                            if n.input > 0 {
                                *usage = n;
                            }
                        }
                        // Clients read the stop reason here; without one
                        // the closing code writes a delta that has it.
                        if !v
                            .at(&["delta", "stop_reason"])
                            .is_some_and(Value::is_string)
                        {
                            return;
                        }
                        self.close_block(out);
                        self.saw_delta = true;
                    }
                    _ => {}
                }
                if ty == "message_stop" {
                    // Closes open blocks and adds a missing message_delta.
                    self.close(usage, out);
                    return;
                }
                out.extend_from_slice(b"event: ");
                out.extend_from_slice(ty.as_bytes());
                out.extend_from_slice(b"\ndata: ");
                text(out);
                out.extend_from_slice(b"\n\n");
                if ty == "message_stop" || ty == "error" {
                    self.saw_finish = true;
                    self.ended = true;
                }
            }
            Relay::Gemini => {
                if let Some(u) = v.get("usageMetadata") {
                    *usage = gemini::parse_usage(u);
                }
                if v.at(&["candidates", "0", "finishReason"]).is_some() {
                    self.saw_finish = true;
                }
                self.framer.element(&body, out);
                if v.get("error").is_some() {
                    self.ended = true;
                }
            }
        }
    }

    /// Anthropic: stops the open content block, if any.
    fn close_block(&mut self, out: &mut Vec<u8>) {
        if let Some(i) = self.open_block.take() {
            anthropic::write_event(&json!({"type": "content_block_stop", "index": i}), out);
        }
    }

    fn fail(&mut self, status: u16, message: &str, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.ended = true;
        match self.proto {
            Relay::OpenAi => {
                let ty = errors::error_type(status);
                openai::write_data(
                    &json!({"error": {"message": message, "type": ty, "code": null}}),
                    out,
                );
            }
            Relay::Anthropic => {
                anthropic::write_event(&errors::anthropic_error(status, message), out)
            }
            Relay::Gemini => self
                .framer
                .element(&errors::gemini_error(status, message).to_string(), out),
        }
    }

    fn close(&mut self, usage: &TokenUsage, out: &mut Vec<u8>) {
        match self.proto {
            Relay::OpenAi => {
                if !self.ended && !self.saw_finish {
                    // Truncated upstream: close the choice before [DONE].
                    let id = self
                        .last_id
                        .take()
                        .unwrap_or_else(|| ids::new_id("chatcmpl-"));
                    let last = json!({"id": id, "object": "chat.completion.chunk",
                        "created": ids::unix_now(), "model": self.model,
                        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
                    openai::write_data(&last, out);
                }
                self.ended = true;
                out.extend_from_slice(b"data: [DONE]\n\n");
            }
            Relay::Anthropic => {
                if self.ended {
                    return;
                }
                self.ended = true;
                if !self.started {
                    anthropic::write_event(
                        &anthropic::message_start(&self.model, usage.prompt_like()),
                        out,
                    );
                }
                self.close_block(out);
                if !self.saw_delta {
                    anthropic::write_event(
                        &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                            "usage": {"output_tokens": usage.output}}),
                        out,
                    );
                }
                anthropic::write_event(&json!({"type": "message_stop"}), out);
            }
            Relay::Gemini => {
                if !self.ended && !self.saw_finish {
                    let last = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]},
                        "finishReason": "STOP", "index": 0}]});
                    self.framer.element(&last.to_string(), out);
                }
                self.ended = true;
                self.framer.close(out);
            }
        }
    }
}

impl TokenUsage {
    /// Uncached input, as Anthropic reports it in `message_start`.
    fn prompt_like(&self) -> u64 {
        self.input
            .saturating_sub(self.cache_read + self.cache_creation)
    }
}

/// What a stream does with events.
#[derive(Debug)]
pub enum Mode {
    /// Same family.
    Pass(Passthrough),
    /// Different families.
    Convert {
        /// Upstream side.
        decoder: Decoder,
        /// Client side.
        encoder: Encoder,
        /// Scratch buffer of decoded events.
        events: Vec<StreamEvent>,
        /// The upstream sent its own end (a finish or an error event).
        ended: bool,
    },
}

impl Mode {
    /// The mode for `from` → `to`.
    pub fn new(from: Protocol, to: Protocol, model: &str, framing: GeminiFraming) -> Self {
        if let Some(relay) = Relay::of(from).filter(|_| from == to) {
            Self::Pass(Passthrough::new(relay, model, framing))
        } else {
            Self::Convert {
                decoder: Decoder::new(from),
                encoder: Encoder::new(to, model, framing),
                events: Vec::new(),
                ended: false,
            }
        }
    }

    /// See [`responses::Encoder::set_tools`].
    pub fn set_tools(&mut self, tools: responses::ToolMap) {
        if let Self::Convert { encoder, .. } = self {
            encoder.set_tools(tools);
        }
    }

    /// See [`openai::Encoder::set_usage_chunk`]. A same-family stream keeps
    /// the upstream's own chunks, which already follow the client's options.
    pub fn set_usage_chunk(&mut self, on: bool) {
        if let Self::Convert { encoder, .. } = self {
            encoder.set_usage_chunk(on);
        }
    }

    /// Whether the upstream ended its stream itself (a finish, `[DONE]`,
    /// `message_stop` or an error event) rather than being cut off.
    pub fn upstream_ended(&self) -> bool {
        match self {
            Self::Pass(p) => p.saw_finish || p.saw_done || p.ended,
            Self::Convert { ended, decoder, .. } => *ended || decoder.saw_finish_reason(),
        }
    }

    /// Handles one upstream SSE data payload.
    pub fn data(&mut self, data: &str, usage: &mut TokenUsage, out: &mut Vec<u8>) {
        match self {
            Self::Pass(p) => {
                if data.trim() == "[DONE]" {
                    p.saw_done = true;
                    return;
                }
                if p.proto == Relay::OpenAi && p.openai_chunk(data, usage, out) {
                    return;
                }
                if p.proto == Relay::Anthropic && p.anthropic_delta(data, out) {
                    return;
                }
                let Ok(v) = serde_json::from_str::<Value>(data) else {
                    return;
                };
                if !v.is_object() {
                    return;
                }
                let inner = gemini::unwrap(&v);
                if p.proto == Relay::Gemini && !std::ptr::eq(inner, &v) {
                    // Unwrapped Code Assist chunks must be re-serialised.
                    let inner = inner.clone();
                    p.event(None, &inner, usage, out);
                } else {
                    p.event(Some(data), &v, usage, out);
                }
            }
            Self::Convert {
                decoder,
                encoder,
                events,
                ended,
            } => {
                decoder.data(data, events);
                Self::drain(events, encoder, usage, out, ended);
            }
        }
    }

    /// Handles one already-parsed upstream event.
    pub fn value(&mut self, v: &Value, usage: &mut TokenUsage, out: &mut Vec<u8>) {
        match self {
            Self::Pass(p) => {
                if v.is_object() {
                    let v = if p.proto == Relay::Gemini {
                        gemini::unwrap(v)
                    } else {
                        v
                    };
                    p.event(None, v, usage, out);
                }
            }
            Self::Convert {
                decoder,
                encoder,
                events,
                ended,
            } => {
                decoder.value(v, events);
                Self::drain(events, encoder, usage, out, ended);
            }
        }
    }

    fn drain(
        events: &mut Vec<StreamEvent>,
        encoder: &mut Encoder,
        usage: &mut TokenUsage,
        out: &mut Vec<u8>,
        ended: &mut bool,
    ) {
        for ev in events.drain(..) {
            match &ev {
                StreamEvent::Start {
                    input_tokens: Some(n),
                } => usage.input = *n,
                StreamEvent::Finish { usage: Some(u), .. } => {
                    *usage = *u;
                    *ended = true;
                }
                StreamEvent::Finish { .. } | StreamEvent::Error { .. } => *ended = true,
                _ => {}
            }
            encoder.event(&ev, out);
        }
    }

    /// The upstream's body ended. A stream the upstream did not end itself
    /// was cut off: the client gets an in-band error rather than an answer
    /// that looks complete.
    /// Returns false when the stream was cut off (and an error was sent).
    pub fn finish(&mut self, usage: &mut TokenUsage, out: &mut Vec<u8>) -> bool {
        if !self.upstream_ended() {
            self.fail(502, TRUNCATED, usage, out);
            return false;
        }
        match self {
            Self::Pass(p) => p.close(usage, out),
            Self::Convert {
                decoder,
                encoder,
                events,
                ended,
            } => {
                decoder.end(events);
                Self::drain(events, encoder, usage, out, ended);
                encoder.close(out);
            }
        }
        true
    }

    /// The upstream failed: in-band error, then the end of the stream.
    pub fn fail(&mut self, status: u16, message: &str, usage: &mut TokenUsage, out: &mut Vec<u8>) {
        match self {
            Self::Pass(p) => {
                p.fail(status, message, out);
                p.close(usage, out);
            }
            Self::Convert { encoder, .. } => {
                encoder.event(
                    &StreamEvent::Error {
                        status,
                        message: message.to_string(),
                    },
                    out,
                );
                encoder.close(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `seed`'s bytes changed at a few random places, from a fixed seed:
    /// deletions, insertions of JSON's structural characters, copies.
    fn mutations(seed: &str, count: usize) -> Vec<String> {
        const PIECES: [&str; 22] = [
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "\"",
            "\\",
            "\\u",
            "\\u00e9",
            "null",
            "true",
            "1",
            "-",
            "0.5e-3",
            " ",
            "\n",
            "\u{1}",
            "é",
            "\"finish_reason\":",
            "\"usage\":",
            "\"error\":",
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ seed.len() as u64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n.max(1) as u64) as usize
        };
        (0..count)
            .map(|_| {
                let mut text = seed.to_owned();
                for _ in 0..1 + next(3) {
                    let boundaries: Vec<usize> = (0..=text.len())
                        .filter(|&i| text.is_char_boundary(i))
                        .collect();
                    let at = boundaries[next(boundaries.len())];
                    // A short span: up to four characters on from `at`.
                    let from = boundaries.iter().position(|&b| b == at).unwrap_or(0);
                    let to = boundaries[(from + next(5)).min(boundaries.len() - 1)];
                    match next(3) {
                        0 => text.replace_range(at..to, ""),
                        1 => text.insert_str(at, PIECES[next(PIECES.len())]),
                        _ => {
                            let copy = text[at..to].to_owned();
                            text.insert_str(to, &copy);
                        }
                    }
                }
                text
            })
            .collect()
    }

    const CHUNKS: [&str; 15] = [
        r#"{"choices":[{"delta":{"content":"lorem \"ipsum\"\n\u00e9"},"finish_reason":null,"index":0}],"created":1796410720,"id":"chatcmpl-1","model":"m","object":"chat.completion.chunk"}"#,
        r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":16,"total_tokens":25,"prompt_tokens_details":{"cached_tokens":2}}}"#,
        r#"{"choices":[],"usage":{"prompt_tokens":1.5e3,"completion_tokens":2}}"#,
        r#" { "choices" : [ { "finish_reason" : "length" } , { "finish_reason" : null } ] , "usage" : null } "#,
        r#"{"choices":null,"error":null}"#,
        r#"{"error":{"message":"boom","code":-1.25E+2}}"#,
        r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":[1,{}]}"}}]}}],"x":[[],{},[[true,false]]]}"#,
        r#"{"choices":[{"delta":{"content":"\ud800 lone"},"finish_reason":null}],"n":1e999}"#,
        r#"{}"#,
        r#"[null,null,null]"#,
        r#"{"choices":[[null]]}"#,
        r#"{"ch\u006fices":[{"finish_reason":"stop"}]}"#,
        r#"{"error":null,"error":{"m":1}}"#,
        r#"{"choices":[{"finish_reason":null,"finish_reason":"stop"}]}"#,
        r#"{"usage":null,"usage":{"prompt_tokens":1}}"#,
    ];

    /// Where the scan answers, serde answers the same; where it does not,
    /// `read` is serde. The usual chunks are all scanned.
    #[test]
    fn the_chunk_scan_reads_what_serde_reads() {
        let mut scanned = 0;
        let mut cases = 0;
        for seed in CHUNKS {
            let mut inputs = mutations(seed, 3000);
            inputs.push(seed.to_owned());
            for data in inputs {
                cases += 1;
                let serde = OpenAiChunk::by_serde(&data);
                if let Some(chunk) = OpenAiChunk::scan(&data) {
                    scanned += 1;
                    assert_eq!(Some(chunk), serde, "{data}");
                }
                assert_eq!(OpenAiChunk::read(&data), serde, "{data}");
            }
        }
        for usual in &CHUNKS[..8] {
            assert!(OpenAiChunk::scan(usual).is_some(), "{usual}");
        }
        for left_to_serde in &CHUNKS[9..] {
            assert!(
                OpenAiChunk::scan(left_to_serde).is_none(),
                "{left_to_serde}"
            );
        }
        // Enough of the mutations stay valid for the comparison to bite.
        assert!(scanned > cases / 10, "{scanned} of {cases} scanned");
    }

    /// Decodes `prefix`, then `data`, then the end of the stream twice,
    /// once from the text and once from each event's `Value`, and
    /// asserts the two give the same events.
    fn decode_both_ways(p: Protocol, prefix: &[&str], data: &str, value: &Value) {
        let (mut text, mut parsed) = (Decoder::new(p), Decoder::new(p));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for event in prefix {
            text.data(event, &mut a);
            parsed.value(&serde_json::from_str(event).unwrap(), &mut b);
        }
        text.data(data, &mut a);
        parsed.value(value, &mut b);
        text.end(&mut a);
        parsed.end(&mut b);
        assert_eq!(a, b, "{data} after {prefix:?}");
    }

    /// Chunks a converted stream reads: what an OpenAI upstream sends
    /// (its first chunk, text, reasoning under either name, tool calls,
    /// the usage chunk, parallel calls without indices), then the odd
    /// shapes of [`CHUNKS`].
    fn decoded_chunks() -> Vec<&'static str> {
        let mut seeds = vec![
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null}"#,
            r#"{"choices":[{"delta":{"reasoning_content":"think \u00e9","reasoning":"not this"}}]}"#,
            r#"{"choices":[{"delta":{"reasoning_content":null,"reasoning":"this","content":"and \"that\"","tool_calls":null}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":16,"completion_tokens_details":{"reasoning_tokens":4}}}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"function":{"name":"a","arguments":"{"}},{"id":"c2","function":{"name":"b","arguments":"}"}}]}}]}"#,
        ];
        seeds.extend(CHUNKS);
        seeds
    }

    /// A decoder reads a chunk from its text as it reads the chunk's
    /// `Value`, from a fresh start and mid-stream (text started, a tool
    /// call open, usage seen), through the end of the stream; the usual
    /// chunks are read without a `Value`.
    #[test]
    fn a_chunk_decodes_from_its_text_as_from_its_value() {
        let before: [&[&str]; 4] = [
            &[],
            &[r#"{"choices":[{"delta":{"content":"a"}}]}"#],
            &[
                r#"{"choices":[{"delta":{"tool_calls":[{"index":2,"function":{"name":"g","arguments":"{"}}]}}]}"#,
            ],
            &[r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#],
        ];
        let mut compared = 0;
        for seed in decoded_chunks() {
            let mut inputs = mutations(seed, 1500);
            inputs.push(seed.to_owned());
            for data in inputs {
                // A chunk that is not valid JSON for a `Value` (a number
                // beyond f64 in a member nobody reads) may still be read
                // as text: nothing to compare it with.
                let Ok(value) = serde_json::from_str::<Value>(&data) else {
                    continue;
                };
                for prefix in before {
                    decode_both_ways(Protocol::OpenAi, prefix, &data, &value);
                    compared += 1;
                }
            }
        }
        for usual in &decoded_chunks()[..5] {
            assert!(
                openai::Decoder::default().plain(usual, &mut Vec::new()),
                "{usual}"
            );
        }
        assert!(compared > 30_000, "{compared} compared");
    }

    /// Anthropic events a stream carries: the deltas of every block kind,
    /// then the other events, which the delta readers must leave alone.
    const ANTHROPIC_EVENTS: [&str; 10] = [
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello \"w\" \u00e9"}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}"#,
        r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"sig"}}"#,
        r#" {"delta":{"text":"x","type":"text_delta"},"index":1,"type":"content_block_delta","extra":[1,{"b":null}]} "#,
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":5}}"#,
        r#"{"type":"content_block_stop","index":0}"#,
        r#"{"type":"ping"}"#,
        r#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#,
    ];
    const MESSAGE_START: &str = r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[],"usage":{"input_tokens":7,"output_tokens":1}}}"#;
    const TEXT_BLOCK: &str =
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#;
    const TOOL_BLOCK: &str = r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"t","name":"f","input":{}}}"#;
    const TEXT_BLOCK_STOP: &str = r#"{"type":"content_block_stop","index":0}"#;

    /// Each Anthropic event and its mutations that a `Value` can hold.
    fn anthropic_inputs() -> Vec<(String, Value)> {
        ANTHROPIC_EVENTS
            .iter()
            .flat_map(|seed| mutations(seed, 1500).into_iter().chain([seed.to_string()]))
            .filter_map(|data| Some((serde_json::from_str(&data).ok()?, data)))
            .map(|(v, data)| (data, v))
            .collect()
    }

    /// The Anthropic decoder reads an event from its text as it reads the
    /// event's `Value`, with no block, a text block or a tool block open,
    /// through the end of the stream; the usual deltas are read without a
    /// `Value`.
    #[test]
    fn an_anthropic_event_decodes_from_its_text_as_from_its_value() {
        let before: [&[&str]; 3] = [
            &[],
            &[MESSAGE_START, TEXT_BLOCK],
            &[MESSAGE_START, TEXT_BLOCK, TEXT_BLOCK_STOP, TOOL_BLOCK],
        ];
        let mut compared = 0;
        for (data, value) in anthropic_inputs() {
            for prefix in before {
                decode_both_ways(Protocol::Anthropic, prefix, &data, &value);
                compared += 1;
            }
        }
        for usual in &ANTHROPIC_EVENTS[..5] {
            assert!(
                anthropic::Decoder::default().plain_delta(usual, &mut Vec::new()),
                "{usual}"
            );
        }
        assert!(compared > 15_000, "{compared} compared");
    }

    /// A same-protocol Anthropic stream forwards an event read by its
    /// `type` and `index` alone exactly as it forwards it read whole:
    /// the same bytes, usage and open block, through the end of the
    /// stream; the usual deltas take the short read.
    #[test]
    fn an_anthropic_delta_is_relayed_as_the_whole_event_would_be() {
        let before: [&[&str]; 4] = [
            &[],
            &[MESSAGE_START],
            &[MESSAGE_START, TEXT_BLOCK],
            &[MESSAGE_START, TEXT_BLOCK, TEXT_BLOCK_STOP, TOOL_BLOCK],
        ];
        let mut compared = 0;
        for (data, value) in anthropic_inputs() {
            for prefix in before {
                let mut short = Passthrough::new(Relay::Anthropic, "m", GeminiFraming::Sse);
                let mut whole = Passthrough::new(Relay::Anthropic, "m", GeminiFraming::Sse);
                let (mut a, mut b) = (Vec::new(), Vec::new());
                let (mut ua, mut ub) = (TokenUsage::default(), TokenUsage::default());
                for p in prefix {
                    let v = serde_json::from_str(p).unwrap();
                    short.event(Some(p), &v, &mut ua, &mut a);
                    whole.event(Some(p), &v, &mut ub, &mut b);
                }
                if !short.anthropic_delta(&data, &mut a) {
                    short.event(Some(&data), &value, &mut ua, &mut a);
                }
                whole.event(Some(&data), &value, &mut ub, &mut b);
                short.close(&ua, &mut a);
                whole.close(&ub, &mut b);
                // message_start carries a fresh id each time.
                let strip = |out: Vec<u8>| {
                    let text = String::from_utf8(out).unwrap();
                    text.split("\n\n")
                        .filter(|e| !e.starts_with("event: message_start"))
                        .collect::<Vec<_>>()
                        .join("\n\n")
                };
                assert_eq!(strip(a), strip(b), "{data} after {prefix:?}");
                assert_eq!(ua, ub, "{data} after {prefix:?}");
                compared += 1;
            }
        }
        for usual in &ANTHROPIC_EVENTS[..5] {
            let mut p = Passthrough::new(Relay::Anthropic, "m", GeminiFraming::Sse);
            p.started = true;
            assert!(p.anthropic_delta(usual, &mut Vec::new()), "{usual}");
        }
        assert!(compared > 20_000, "{compared} compared");
    }

    /// The skipper takes a value exactly when serde_json's `IgnoredAny`
    /// does, and ends where the value ends.
    #[test]
    fn values_are_skipped_as_serde_skips_them() {
        use super::super::json::skip_value;
        let deep_ok = format!("{}1{}", "[".repeat(99), "]".repeat(99));
        let too_deep = format!("{}1{}", "[".repeat(101), "]".repeat(101));
        let mut seeds: Vec<String> = CHUNKS.iter().map(|s| s.to_string()).collect();
        seeds.extend(
            [
                "0",
                "-0",
                "12",
                "-1.5e+10",
                "1E5",
                "\"\"",
                "\"a\\/b\\b\\f\\n\\r\\t\\\"\\\\\"",
                "true",
                "false",
                "null",
                "[]",
                "{}",
                "[ ]",
                "{ }",
                "[1,[2,[3]],{\"a\":{}}]",
            ]
            .map(String::from),
        );
        for seed in &seeds {
            for data in mutations(seed, 2000).iter().chain([seed]) {
                let serde = serde_json::from_str::<IgnoredAny>(data).is_ok();
                let ours = skip_value(data.as_bytes(), 0).is_some_and(|end| {
                    super::super::json::skip_ws(data.as_bytes(), end) == data.len()
                });
                assert!(!ours || serde, "skipped invalid JSON: {data:?}");
                if serde {
                    assert!(ours, "refused valid JSON: {data:?}");
                }
            }
        }
        assert_eq!(skip_value(deep_ok.as_bytes(), 0), Some(deep_ok.len()));
        assert_eq!(skip_value(too_deep.as_bytes(), 0), None);
        for bad in [
            "01",
            "1.",
            ".5",
            "+1",
            "1e",
            "-",
            "\"\\x\"",
            "\"\\u12g4\"",
            "\"\u{1f}\"",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{1:2}",
            "tru",
            "nul",
        ] {
            let end = skip_value(bad.as_bytes(), 0);
            assert!(end.is_none_or(|e| e < bad.len()), "{bad}");
        }
    }
}
