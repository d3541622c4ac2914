//! Client/upstream wire protocols and the conversion between them.
//!
//! Everything here is sans-IO: functions over bytes and `serde_json::Value`,
//! no sockets, clocks or threads, so that it can be unit-tested with golden
//! fixtures and fuzzed directly. Conversion goes through one canonical
//! model (see `canonical`) so that twelve directions need four parsers and
//! four emitters, not twelve converters.

pub mod anthropic;
pub mod canonical;
mod dropped;
mod errors;
pub mod gemini;
mod ids;
#[doc(hidden)]
pub use ids::normalise as normalise_ids;
mod inspect;
mod json;
mod models;
pub mod openai;
pub mod responses;
mod schema;
pub mod sse;
mod stream;
#[doc(hidden)]
pub mod stream_check;

#[cfg(test)]
mod golden_tests;
#[cfg(test)]
mod stream_tests;

use serde_json::Value;

use canonical::{ChatRequest, ChatResponse, TokenUsage};

/// Allocation-free lookup of a nested member: `v.at(&["choices", "0",
/// "delta"])` is `v.pointer("/choices/0/delta")` without the `String` per
/// segment that `pointer` allocates, on paths taken for every chunk.
pub trait Lookup {
    /// The value at `path`: object keys, or array indices written as digits.
    fn at(&self, path: &[&str]) -> Option<&Value>;
}

impl Lookup for Value {
    fn at(&self, path: &[&str]) -> Option<&Value> {
        path.iter().try_fold(self, |v, key| match v {
            Value::Object(map) => map.get(*key),
            Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
    }
}

/// `value` as JSON in a buffer that starts at `capacity` bytes: written
/// in one go rather than grown from `to_vec`'s 128 bytes by doubling.
fn json_bytes(value: &impl serde::Serialize, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    if serde_json::to_writer(&mut out, value).is_err() {
        out.clear();
    }
    out
}

/// A wire protocol family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// OpenAI chat completions.
    OpenAi,
    /// Anthropic messages.
    Anthropic,
    /// Gemini generateContent.
    Gemini,
    /// OpenAI Responses (`/v1/responses`). A client protocol: no provider
    /// speaks it upstream today.
    Responses,
}

impl Protocol {
    /// Lower-case name used in logs, metrics and the WebSocket API.
    pub fn name(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
            Self::Responses => "responses",
        }
    }
}

/// A request body that cannot be understood or converted; becomes a 400.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvertError {
    /// Human-readable reason, safe to show the client.
    pub message: String,
}

/// Token counts of one answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input tokens.
    pub prompt: u64,
    /// Output tokens (including reasoning).
    pub completion: u64,
}

/// What the pipeline needs to know about a client request before deciding
/// where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestInfo {
    /// The `model` field (OpenAI, Anthropic); `None` for Gemini (model in URL)
    /// or when absent.
    pub model: Option<String>,
    /// `stream: true` in the body (OpenAI, Anthropic); always false for Gemini.
    pub stream: bool,
    /// OpenAI `stream_options.include_usage`: usage comes in a final chunk
    /// of its own, with an empty `choices`.
    pub include_usage: bool,
}

/// How a Gemini client wants a stream framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeminiFraming {
    /// `?alt=sse`: `data: {…}\n\n` per chunk.
    Sse,
    /// No `alt=sse`: one JSON array `[{…},\r\n{…}]` written incrementally.
    JsonArray,
}

/// An entry of a model list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelInfo {
    /// Model id as clients send it.
    pub id: String,
    /// Owner shown in OpenAI lists (`openai`, `anthropic`, `google`, `aiproxy`).
    pub owned_by: String,
    /// Human-readable name, when known.
    pub display_name: Option<String>,
}

impl ModelInfo {
    /// Entries for `ids`, all owned by `owned_by`, without display names.
    pub fn list<S: Into<String>>(
        ids: impl IntoIterator<Item = S>,
        owned_by: &str,
    ) -> Vec<ModelInfo> {
        ids.into_iter()
            .map(|id| ModelInfo {
                id: id.into(),
                owned_by: owned_by.to_owned(),
                display_name: None,
            })
            .collect()
    }
}

/// Validates `body` as a JSON object in protocol `proto` and extracts the
/// model and stream flag without building a `Value` tree.
pub fn inspect(proto: Protocol, body: &[u8]) -> Result<RequestInfo, ConvertError> {
    inspect::inspect(proto, body)
}

fn parse_request(from: Protocol, to: Protocol, body: &Value) -> Result<ChatRequest, ConvertError> {
    match from {
        Protocol::OpenAi => openai::parse_request(body),
        Protocol::Anthropic => anthropic::parse_request(body),
        Protocol::Responses => responses::parse_request(body),
        // Synthesised call ids look native to the target.
        Protocol::Gemini => gemini::parse_request(
            body,
            if to == Protocol::Anthropic {
                "toolu_"
            } else {
                "call_"
            },
        ),
    }
}

/// Checks a `proto` request body as a conversion from it would: the
/// errors [`convert_request`] gives for a cross-family target.
pub fn validate_request(proto: Protocol, body: &Value) -> Result<(), ConvertError> {
    parse_request(proto, proto, body).map(drop)
}

/// Converts a client request body from `from` to `to` for `model`.
/// For OpenAI, Anthropic and Responses targets the output carries `model` and `stream`
/// (and, for an OpenAI target that streams, `stream_options.include_usage`);
/// Gemini targets carry neither (they travel in the URL).
///
/// Same-family requests pass through with every unknown field intact;
/// only `model`/`stream` (and `stream_options`) are set.
pub fn convert_request(
    from: Protocol,
    to: Protocol,
    body: &Value,
    model: &str,
    stream: bool,
) -> Result<Value, ConvertError> {
    if from == to {
        let mut out = body.clone();
        let obj = out.as_object_mut().ok_or_else(|| ConvertError {
            message: "Request body must be a JSON object".into(),
        })?;
        if to != Protocol::Gemini {
            obj.insert("model".into(), Value::from(model));
            obj.insert("stream".into(), Value::from(stream));
        }
        if to == Protocol::OpenAi && stream {
            let opts = obj
                .entry("stream_options")
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
            if let Some(o) = opts.as_object_mut() {
                o.insert("include_usage".into(), Value::Bool(true));
            }
        }
        return Ok(out);
    }
    let req = parse_request(from, to, body)?;
    Ok(match to {
        Protocol::OpenAi => openai::emit_request(&req, model, stream),
        Protocol::Anthropic => anthropic::emit_request(&req, model, stream),
        Protocol::Gemini => gemini::emit_request(&req, model),
        Protocol::Responses => responses::emit_request(&req, model, stream),
    })
}

/// [`convert_request`] from the body's bytes to the target's, for a
/// cross-family conversion (the gateway passes a same-family body through
/// without calling this). The usual Anthropic request is read without a
/// `Value` tree and an OpenAI request written without one; anything else
/// goes through the trees. Invalid JSON is an error like a conversion's.
pub fn convert_request_slice(
    from: Protocol,
    to: Protocol,
    body: &[u8],
    model: &str,
    stream: bool,
) -> Result<Vec<u8>, ConvertError> {
    let fast = match from {
        Protocol::Anthropic if to != from => anthropic::parse_request_slice(body),
        _ => None,
    };
    let req = match fast {
        Some(req) => req,
        None => {
            let value: Value = serde_json::from_slice(body).map_err(|e| ConvertError {
                message: format!("Invalid JSON in request body: {e}"),
            })?;
            parse_request(from, to, &value)?
        }
    };
    let converted = match to {
        Protocol::OpenAi => {
            return Ok(openai::emit_request_bytes(
                &req,
                model,
                stream,
                body.len() + 64,
            ));
        }
        Protocol::Anthropic => anthropic::emit_request(&req, model, stream),
        Protocol::Gemini => gemini::emit_request(&req, model),
        Protocol::Responses => responses::emit_request(&req, model, stream),
    };
    Ok(serde_json::to_vec(&converted).unwrap_or_default())
}

/// The fields of a `from` request that [`convert_request`] to `to` drops
/// for want of an equivalent (e.g. `context_management`, `cache_control`,
/// `tools[web_search_20250305]` for OpenAI), for a debug log line; empty
/// when `from == to`.
pub fn dropped_fields(from: Protocol, to: Protocol, body: &Value) -> Vec<String> {
    dropped::dropped_fields(from, to, body)
}

fn parse_response(from: Protocol, body: &Value) -> Result<ChatResponse, ConvertError> {
    match from {
        Protocol::OpenAi => openai::parse_response(body),
        Protocol::Anthropic => anthropic::parse_response(body),
        Protocol::Gemini => gemini::parse_response(body),
        Protocol::Responses => responses::parse_response(body),
    }
}

/// Converts a whole (non-streamed) upstream answer from `from` to `to`.
/// Same-family answers are returned unchanged (Code Assist's
/// `{"response":…}` wrapper aside, which is removed).
pub fn convert_response(
    from: Protocol,
    to: Protocol,
    body: &Value,
    model: &str,
) -> Result<Value, ConvertError> {
    convert_response_for(from, to, body, model, &responses::ToolMap::default())
}

/// [`convert_response`] for a Responses client whose request declared
/// the tools `tools` describes (see [`responses::ToolMap`]).
pub fn convert_response_for(
    from: Protocol,
    to: Protocol,
    body: &Value,
    model: &str,
    tools: &responses::ToolMap,
) -> Result<Value, ConvertError> {
    if from == to {
        return Ok(match to {
            Protocol::Gemini => gemini::unwrap(body).clone(),
            _ => body.clone(),
        });
    }
    let resp = parse_response(from, body)?;
    Ok(match to {
        Protocol::OpenAi => openai::emit_response(&resp, model),
        Protocol::Anthropic => anthropic::emit_response(&resp, model),
        Protocol::Gemini => gemini::emit_response(&resp, model),
        Protocol::Responses => responses::emit_response(&resp, model, tools),
    })
}

/// Why [`convert_response_slice`] gave no answer.
#[derive(Debug, PartialEq, Eq)]
pub enum SliceError {
    /// The answer is not JSON.
    Json,
    /// The answer is JSON that cannot be converted.
    Convert(ConvertError),
}

/// [`convert_response_for`] from and to bytes. The usual conversions
/// (an OpenAI answer, an Anthropic client) skip building `Value` trees,
/// which cost about as much as the rest of a converted request; the
/// result is the same.
pub fn convert_response_slice(
    from: Protocol,
    to: Protocol,
    body: &[u8],
    model: &str,
    tools: &responses::ToolMap,
) -> Result<Vec<u8>, SliceError> {
    let fast = match from {
        Protocol::OpenAi if to != from => openai::parse_response_slice(body),
        _ => None,
    };
    let resp = match fast {
        Some(resp) => resp.map_err(SliceError::Convert)?,
        None => {
            let value: Value = serde_json::from_slice(body).map_err(|_| SliceError::Json)?;
            if from == to {
                let same = convert_response_for(from, to, &value, model, tools);
                return Ok(
                    serde_json::to_vec(&same.map_err(SliceError::Convert)?).unwrap_or_default()
                );
            }
            parse_response(from, &value).map_err(SliceError::Convert)?
        }
    };
    let converted = match to {
        Protocol::Anthropic => {
            return Ok(anthropic::emit_response_bytes(
                &resp,
                model,
                body.len() + 64,
            ));
        }
        Protocol::OpenAi => openai::emit_response(&resp, model),
        Protocol::Gemini => gemini::emit_response(&resp, model),
        Protocol::Responses => responses::emit_response(&resp, model, tools),
    };
    Ok(serde_json::to_vec(&converted).unwrap_or_default())
}

/// Token usage reported in a whole answer of protocol `proto`.
pub fn usage(proto: Protocol, body: &Value) -> Option<Usage> {
    let u = match proto {
        Protocol::OpenAi => body
            .get("usage")
            .filter(|u| u.is_object())
            .map(openai::parse_usage),
        Protocol::Anthropic => body
            .get("usage")
            .filter(|u| u.is_object())
            .map(anthropic::parse_usage),
        Protocol::Responses => body
            .get("usage")
            .filter(|u| u.is_object())
            .map(responses::parse_usage),
        Protocol::Gemini => gemini::unwrap(body)
            .get("usageMetadata")
            .filter(|u| u.is_object())
            .map(gemini::parse_usage),
    }?;
    Some(Usage {
        prompt: u.input,
        completion: u.output,
    })
}

/// Token usage of a whole answer of protocol `proto`, read from its bytes
/// without parsing the rest of the document. This is what metering a
/// pass-through answer costs, so it matters: the usage object sits at the
/// end of an answer, and only that object is parsed. A key inside a string
/// cannot match (its quotes would be escaped); anything unexpected falls
/// back to a full parse.
pub fn usage_from_slice(proto: Protocol, body: &[u8]) -> Option<Usage> {
    let key: &[u8] = match proto {
        Protocol::Gemini => b"\"usageMetadata\"",
        Protocol::OpenAi | Protocol::Anthropic | Protocol::Responses => b"\"usage\"",
    };
    let fast = last_member(body, key).and_then(|value| {
        let c: Counts = json::prefix_from_bytes(value).ok()?;
        Some(c.usage(proto))
    });
    fast.or_else(|| usage(proto, &serde_json::from_slice(body).ok()?))
}

/// The counters of a usage object of any protocol, read without building
/// a `Value`; the sums match each protocol's `parse_usage`.
#[derive(serde::Deserialize)]
struct Counts {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    #[serde(rename = "promptTokenCount")]
    prompt_token_count: Option<u64>,
    #[serde(rename = "candidatesTokenCount")]
    candidates_token_count: Option<u64>,
    #[serde(rename = "thoughtsTokenCount")]
    thoughts_token_count: Option<u64>,
}

impl Counts {
    fn usage(&self, proto: Protocol) -> Usage {
        let n = |v: Option<u64>| v.unwrap_or(0);
        match proto {
            Protocol::OpenAi => Usage {
                prompt: n(self.prompt_tokens),
                completion: n(self.completion_tokens),
            },
            Protocol::Anthropic => Usage {
                prompt: n(self.input_tokens)
                    + n(self.cache_read_input_tokens)
                    + n(self.cache_creation_input_tokens),
                completion: n(self.output_tokens),
            },
            Protocol::Gemini => Usage {
                prompt: n(self.prompt_token_count),
                completion: n(self.candidates_token_count) + n(self.thoughts_token_count),
            },
            // Cached tokens are part of `input_tokens` already.
            Protocol::Responses => Usage {
                prompt: n(self.input_tokens),
                completion: n(self.output_tokens),
            },
        }
    }
}

/// The bytes after `key:` of the last object member named `key` (the
/// quoted name) in `body`: a member name is preceded by `{` or `,` and
/// followed by `:`, whitespace aside.
fn last_member<'a>(body: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let first = *key.first()?;
    let mut end = body.len();
    // Scan back for the key's opening quote, then compare; cheaper than a
    // comparison at every position.
    while let Some(at) = body[..end].iter().rposition(|&b| b == first) {
        end = at;
        if !body[at..].starts_with(key) {
            continue;
        }
        let before = body[..at].iter().rev().find(|b| !b.is_ascii_whitespace());
        let after_key = &body[at + key.len()..];
        let colon = after_key.iter().position(|b| !b.is_ascii_whitespace());
        if matches!(before, Some(b'{' | b',')) && colon.is_some_and(|i| after_key[i] == b':') {
            return colon.map(|i| &after_key[i + 1..]);
        }
    }
    None
}

/// A JSON error body in the client's protocol for `status`.
pub fn error_body(proto: Protocol, status: u16, message: &str) -> Vec<u8> {
    errors::error_body(proto, status, message)
}

/// The client-protocol error body for an upstream error answer: forwarded
/// unchanged when the families match and it is a well-formed error, else
/// the upstream message re-rendered in the client's protocol.
pub fn relay_error(client: Protocol, upstream: Protocol, status: u16, body: &[u8]) -> Vec<u8> {
    errors::relay_error(client, upstream, status, body)
}

/// A model list in the client protocol (`/v1/models` or `/v1beta/models`).
pub fn models_list(proto: Protocol, models: &[ModelInfo]) -> Value {
    models::models_list(proto, models)
}

/// Local estimate for `/v1/messages/count_tokens` (Anthropic body): about
/// four characters per token over system, message text and tool JSON,
/// plus 1600 per image. See `models::count_tokens` for the exact rule.
pub fn count_tokens(body: &Value) -> u64 {
    models::count_tokens(body)
}

/// Converts an upstream stream (SSE bytes of family `from`) into the client
/// stream of protocol `to`, chunk by chunk, with per-stream state so the
/// client always sees correct framing.
///
/// Guarantees, whatever the upstream sends: OpenAI clients get one id,
/// `role` first and exactly one `data: [DONE]` last; Anthropic clients get
/// `message_start` first, balanced consecutive content blocks and
/// `message_stop` last (or a terminal `error` event); Gemini clients get
/// whole function calls and, in array framing, one valid JSON array;
/// Responses clients get `response.created` first, every output item added
/// before its deltas and done before one terminal `response.completed`,
/// `response.incomplete` or `response.failed`, numbered from 0.
pub struct StreamConverter {
    sse: sse::SseDecoder,
    mode: stream::Mode,
    usage: TokenUsage,
    events: Vec<sse::SseEvent>,
    done: bool,
    cut_off: bool,
    /// Client bytes were produced: for Anthropic, `message_start` is out.
    began: bool,
    anthropic_client: bool,
    framing: Option<GeminiFraming>,
}

impl StreamConverter {
    /// A converter for one stream answered to the client as `model`.
    pub fn new(from: Protocol, to: Protocol, model: &str, framing: GeminiFraming) -> Self {
        Self {
            sse: sse::SseDecoder::new(),
            mode: stream::Mode::new(from, to, model, framing),
            usage: TokenUsage::default(),
            events: Vec::new(),
            done: false,
            cut_off: false,
            began: false,
            anthropic_client: to == Protocol::Anthropic,
            framing: (to == Protocol::Gemini).then_some(framing),
        }
    }

    /// Feeds raw upstream bytes (any split); appends client bytes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        let before = out.len();
        self.sse.feed(chunk, &mut self.events);
        self.drain_events(out);
        self.began |= out.len() > before;
    }

    fn drain_events(&mut self, out: &mut Vec<u8>) {
        for ev in self.events.drain(..) {
            self.mode.data(&ev.data, &mut self.usage, out);
        }
    }

    /// Feeds one already-decoded upstream event of family `from` (for
    /// providers that synthesise events rather than relay SSE bytes, e.g.
    /// Kiro's binary event stream or a unary answer replayed as a stream).
    pub fn feed_event(&mut self, event: &Value, out: &mut Vec<u8>) {
        if !self.done {
            let before = out.len();
            self.mode.value(event, &mut self.usage, out);
            self.began |= out.len() > before;
        }
    }

    /// A keep-alive the client protocol tolerates, for the caller to send
    /// after a long upstream silence: Anthropic `ping` (once `message_start`
    /// is out: clients may expect it first), an SSE comment for OpenAI, a
    /// blank line for Gemini (google-genai fails on SSE comments but skips
    /// blank lines, and JSON ignores whitespace).
    /// Nothing once the upstream signalled its end.
    pub fn keepalive(&self, out: &mut Vec<u8>) {
        if self.done || self.mode.upstream_ended() {
            return;
        }
        if self.anthropic_client {
            if !self.began {
                return;
            }
            out.extend_from_slice(b"event: ping\ndata: {\"type\":\"ping\"}\n\n");
        } else if self.framing.is_some() {
            out.push(b'\n');
        } else {
            out.extend_from_slice(b": keep-alive\n\n");
        }
    }

    /// Calls in a Responses client stream name the tools as the client
    /// declared them (see [`responses::ToolMap`]); other clients ignore it.
    pub fn set_tools(&mut self, tools: responses::ToolMap) {
        self.mode.set_tools(tools);
    }

    /// Sends OpenAI usage in a final chunk of its own (with an empty
    /// `choices`), as OpenAI does when a client sets
    /// `stream_options.include_usage`; otherwise usage rides on the chunk
    /// carrying `finish_reason`.
    pub fn set_usage_chunk(&mut self, on: bool) {
        self.mode.set_usage_chunk(on);
    }

    /// The upstream ended: completes the client framing.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.sse.finish(&mut self.events);
        self.drain_events(out);
        self.cut_off = !self.mode.finish(&mut self.usage, out);
        self.done = true;
    }

    /// The upstream failed mid-stream: an in-band error, then the end.
    pub fn fail(&mut self, status: u16, message: &str, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.mode.fail(status, message, &mut self.usage, out);
        self.done = true;
    }

    /// Whether [`StreamConverter::finish`] found the upstream stream cut
    /// off (it then sent the client an in-band error).
    pub fn was_cut_off(&self) -> bool {
        self.cut_off
    }

    /// Tokens reported by the upstream so far.
    pub fn usage(&self) -> Usage {
        Usage {
            prompt: self.usage.input,
            completion: self.usage.output,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn same_family_requests_pass_through_with_model_and_stream() {
        let body = json!({"model": "a", "messages": [], "vendor_field": 1});
        let out = convert_request(Protocol::OpenAi, Protocol::OpenAi, &body, "b", true).unwrap();
        assert_eq!(out["model"], "b");
        assert_eq!(out["stream"], true);
        assert_eq!(out["stream_options"]["include_usage"], true);
        assert_eq!(out["vendor_field"], 1);
        let out =
            convert_request(Protocol::Anthropic, Protocol::Anthropic, &body, "c", false).unwrap();
        assert_eq!(out["model"], "c");
        assert_eq!(out["stream"], false);
        assert!(out.get("stream_options").is_none());
        let g = json!({"contents": []});
        assert_eq!(
            convert_request(Protocol::Gemini, Protocol::Gemini, &g, "m", true).unwrap(),
            g
        );
        assert!(
            convert_request(Protocol::OpenAi, Protocol::OpenAi, &json!([]), "m", true).is_err()
        );
        assert!(
            convert_request(Protocol::Gemini, Protocol::OpenAi, &json!({}), "m", true).is_err()
        );
    }

    #[test]
    fn same_family_responses_are_unchanged() {
        let body = json!({"id": "x", "choices": []});
        assert_eq!(
            convert_response(Protocol::OpenAi, Protocol::OpenAi, &body, "m").unwrap(),
            body
        );
        let wrapped = json!({"response": {"candidates": []}});
        assert_eq!(
            convert_response(Protocol::Gemini, Protocol::Gemini, &wrapped, "m").unwrap(),
            json!({"candidates": []})
        );
    }

    #[test]
    fn usage_from_slice_matches_usage() {
        let docs = [
            (
                Protocol::OpenAi,
                json!({"id": "x", "choices": [{"message": {"content": "hi"}}], "usage": {"prompt_tokens": 5, "completion_tokens": 7}}),
            ),
            (
                Protocol::Anthropic,
                json!({"content": [{"type": "text", "text": "hi"}], "usage": {"input_tokens": 3, "output_tokens": 4}}),
            ),
            (
                Protocol::Gemini,
                json!({"candidates": [], "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 6}}),
            ),
            (
                Protocol::Gemini,
                json!({"response": {"usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 6}}}),
            ),
        ];
        for (proto, doc) in docs {
            let bytes = serde_json::to_vec(&doc).unwrap();
            assert_eq!(usage_from_slice(proto, &bytes), usage(proto, &doc), "{doc}");
            assert!(usage_from_slice(proto, &bytes).is_some());
        }
        assert_eq!(usage_from_slice(Protocol::OpenAi, b"not json"), None);
        // A "usage" inside the answer text is not the usage member.
        let tricky = br#"{"choices":[{"message":{"content":"say \"usage\": {\"prompt_tokens\": 99}"}}],"usage" : {"prompt_tokens":1,"completion_tokens":2}}"#;
        let u = usage_from_slice(Protocol::OpenAi, tricky).unwrap();
        assert_eq!((u.prompt, u.completion), (1, 2));
    }

    #[test]
    fn include_usage_gets_a_chunk_of_its_own() {
        let upstream = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":3,\"output_tokens\":0}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        for on in [false, true] {
            let mut c = StreamConverter::new(
                Protocol::Anthropic,
                Protocol::OpenAi,
                "m",
                GeminiFraming::Sse,
            );
            c.set_usage_chunk(on);
            let mut out = Vec::new();
            c.feed(upstream.as_bytes(), &mut out);
            c.finish(&mut out);
            let events = sse::decode_all(&out);
            let chunks: Vec<Value> = events
                .iter()
                .filter_map(|e| serde_json::from_str(&e.data).ok())
                .collect();
            let last = chunks.last().unwrap();
            let finish = chunks
                .iter()
                .find(|c| c["choices"][0]["finish_reason"] == "stop")
                .unwrap();
            if on {
                assert_eq!(last["choices"], json!([]), "{last}");
                assert_eq!(last["usage"]["completion_tokens"], 2);
                assert!(finish.get("usage").is_none());
            } else {
                assert_eq!(finish["usage"]["completion_tokens"], 2);
            }
        }
    }

    #[test]
    fn usage_per_protocol() {
        let u = |p, v: Value| usage(p, &v);
        assert_eq!(
            u(
                Protocol::OpenAi,
                json!({"usage": {"prompt_tokens": 3, "completion_tokens": 4}})
            ),
            Some(Usage {
                prompt: 3,
                completion: 4
            })
        );
        assert_eq!(
            u(
                Protocol::Anthropic,
                json!({"usage": {"input_tokens": 3, "output_tokens": 4}})
            ),
            Some(Usage {
                prompt: 3,
                completion: 4
            })
        );
        assert_eq!(
            u(
                Protocol::Gemini,
                json!({"usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4, "thoughtsTokenCount": 1}})
            ),
            Some(Usage {
                prompt: 3,
                completion: 5
            })
        );
        assert_eq!(u(Protocol::OpenAi, json!({})), None);
    }
}
