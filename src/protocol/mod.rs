//! Client/upstream wire protocols and the conversion between them.
//!
//! Everything here is sans-IO: functions over bytes and `serde_json::Value`,
//! no sockets, clocks or threads, so that it can be unit-tested with golden
//! fixtures and fuzzed directly. Conversion goes through one canonical
//! model (see `canonical`) so that six directions need three parsers and
//! three emitters, not six converters.

use serde_json::Value;

/// A wire protocol family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// OpenAI chat completions.
    OpenAi,
    /// Anthropic messages.
    Anthropic,
    /// Gemini generateContent.
    Gemini,
}

impl Protocol {
    /// Lower-case name used in logs, metrics and the WebSocket API.
    pub fn name(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
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

/// Validates `body` as a JSON object in protocol `proto` and extracts the
/// model and stream flag without building a `Value` tree.
pub fn inspect(proto: Protocol, body: &[u8]) -> Result<RequestInfo, ConvertError> {
    let _ = (proto, body);
    unimplemented!()
}

/// Converts a client request body from `from` to `to` for `model`.
/// For OpenAI and Anthropic targets the output carries `model` and `stream`
/// (and, for an OpenAI target that streams, `stream_options.include_usage`);
/// Gemini targets carry neither (they travel in the URL).
pub fn convert_request(
    from: Protocol,
    to: Protocol,
    body: &Value,
    model: &str,
    stream: bool,
) -> Result<Value, ConvertError> {
    let _ = (from, to, body, model, stream);
    unimplemented!()
}

/// Converts a whole (non-streamed) upstream answer from `from` to `to`.
pub fn convert_response(
    from: Protocol,
    to: Protocol,
    body: &Value,
    model: &str,
) -> Result<Value, ConvertError> {
    let _ = (from, to, body, model);
    unimplemented!()
}

/// Token usage reported in a whole answer of protocol `proto`.
pub fn usage(proto: Protocol, body: &Value) -> Option<Usage> {
    let _ = (proto, body);
    unimplemented!()
}

/// A JSON error body in the client's protocol for `status`.
pub fn error_body(proto: Protocol, status: u16, message: &str) -> Vec<u8> {
    let _ = (proto, status, message);
    unimplemented!()
}

/// The client-protocol error body for an upstream error answer: forwarded
/// unchanged when the families match and it is a well-formed error, else
/// the upstream message re-rendered in the client's protocol.
pub fn relay_error(client: Protocol, upstream: Protocol, status: u16, body: &[u8]) -> Vec<u8> {
    let _ = (client, upstream, status, body);
    unimplemented!()
}

/// A model list in the client protocol (`/v1/models` or `/v1beta/models`).
pub fn models_list(proto: Protocol, models: &[ModelInfo]) -> Value {
    let _ = (proto, models);
    unimplemented!()
}

/// Local estimate for `/v1/messages/count_tokens` (Anthropic body).
pub fn count_tokens(body: &Value) -> u64 {
    let _ = body;
    unimplemented!()
}

/// Converts an upstream stream (SSE bytes of family `from`) into the client
/// stream of protocol `to`, chunk by chunk, with per-stream state so the
/// client always sees correct framing.
pub struct StreamConverter {
    _private: (),
}

impl StreamConverter {
    /// A converter for one stream answered to the client as `model`.
    pub fn new(from: Protocol, to: Protocol, model: &str, framing: GeminiFraming) -> Self {
        let _ = (from, to, model, framing);
        unimplemented!()
    }

    /// Feeds raw upstream bytes (any split); appends client bytes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let _ = (chunk, out);
        unimplemented!()
    }

    /// The upstream ended: completes the client framing.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let _ = out;
        unimplemented!()
    }

    /// The upstream failed mid-stream: an in-band error, then the end.
    pub fn fail(&mut self, status: u16, message: &str, out: &mut Vec<u8>) {
        let _ = (status, message, out);
        unimplemented!()
    }

    /// Tokens reported by the upstream so far.
    pub fn usage(&self) -> Usage {
        unimplemented!()
    }
}
