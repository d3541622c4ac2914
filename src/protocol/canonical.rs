//! The canonical model every protocol parses into and emits from.
//!
//! It holds the union of what the three protocols can say about a chat
//! exchange, at the level of meaning rather than wire shape: one list of
//! system texts, user/assistant turns made of typed parts, tools, and only
//! the generation parameters the client actually set (`None` = not sent, so
//! `temperature: 0` survives). Tool results are parts of user turns, as in
//! Anthropic, because that is the one shape the other two can be rebuilt
//! from without losing order.

use serde_json::{Number, Value};

/// A chat request in protocol-neutral form.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatRequest {
    /// System prompt texts in order; targets that want one string join
    /// them with `\n`.
    pub system: Vec<String>,
    /// Conversation turns.
    pub messages: Vec<Message>,
    /// Function tools.
    pub tools: Vec<Tool>,
    /// Vendor built-in tools that only Gemini understands.
    pub builtin_tools: Vec<BuiltinTool>,
    /// How the model may use `tools`.
    pub tool_choice: Option<ToolChoice>,
    /// Output token cap the client asked for.
    pub max_tokens: Option<u64>,
    /// Sampling temperature, kept as the client's number.
    pub temperature: Option<Number>,
    /// Nucleus sampling.
    pub top_p: Option<Number>,
    /// Top-k sampling (Anthropic, Gemini).
    pub top_k: Option<Number>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Reasoning / thinking request.
    pub reasoning: Option<Reasoning>,
    /// Structured output request.
    pub response_format: Option<ResponseFormat>,
}

/// Who speaks a turn. The system prompt lives in [`ChatRequest::system`]
/// and tool results are parts of user turns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The client / end user (also carries tool results).
    User,
    /// The model.
    Assistant,
    /// An instruction at a point in the conversation (Anthropic's
    /// `system` role inside `messages`); its parts are text. Emitters keep
    /// it in place where their protocol has a system turn.
    System,
}

/// One turn.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// Speaker.
    pub role: Role,
    /// Content in order.
    pub parts: Vec<Part>,
}

/// A piece of content.
#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    /// Plain text.
    Text(String),
    /// An image or file.
    Media(Media),
    /// A call the model made.
    ToolUse(ToolCall),
    /// The client's answer to a call.
    ToolResult(ToolResult),
    /// Visible reasoning; the signature is opaque and vendor-specific.
    Thinking {
        /// Reasoning text.
        text: String,
        /// Opaque signature, when the source had one.
        signature: Option<String>,
    },
    /// Encrypted Anthropic reasoning.
    RedactedThinking(String),
}

/// Binary content, inline or by reference.
#[derive(Clone, Debug, PartialEq)]
pub enum Media {
    /// Inline base64 data.
    Base64 {
        /// MIME type, e.g. `image/png`.
        mime: String,
        /// Base64 payload.
        data: String,
    },
    /// A URL (http(s) or a provider file URI).
    Url {
        /// MIME type, when known.
        mime: Option<String>,
        /// Location.
        url: String,
    },
}

impl Media {
    /// The MIME type if known.
    pub fn mime(&self) -> Option<&str> {
        match self {
            Self::Base64 { mime, .. } => Some(mime),
            Self::Url { mime, .. } => mime.as_deref(),
        }
    }

    /// True for images, and for URLs of unknown type (clients mostly send
    /// image URLs).
    pub fn is_image(&self) -> bool {
        self.mime().is_none_or(|m| m.starts_with("image/"))
    }
}

/// A tool call.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    /// Call id; empty when the source had none and the emitter must make one.
    pub id: String,
    /// Function name.
    pub name: String,
    /// Arguments (a JSON object).
    pub input: Value,
}

/// A tool result.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolResult {
    /// Id of the call this answers.
    pub id: String,
    /// Result as text (structured results are JSON-stringified).
    pub content: String,
    /// The tool failed.
    pub is_error: bool,
}

/// A function tool.
#[derive(Clone, Debug, PartialEq)]
pub struct Tool {
    /// Function name.
    pub name: String,
    /// Description, if any.
    pub description: Option<String>,
    /// JSON schema of the arguments.
    pub schema: Value,
}

impl Tool {
    /// The declaration every protocol writes for a tool — `name`, an
    /// optional `description` and the schema under `schema_key` — each
    /// with its own key for the schema and its own schema dialect.
    pub fn declaration(&self, schema_key: &str, schema: Value) -> serde_json::Map<String, Value> {
        let mut d = serde_json::Map::new();
        d.insert("name".into(), Value::from(self.name.as_str()));
        if let Some(desc) = &self.description {
            d.insert("description".into(), Value::from(desc.as_str()));
        }
        d.insert(schema_key.into(), schema);
        d
    }
}

/// A Gemini built-in tool (`googleSearch`, `urlContext`, `googleMaps`).
#[derive(Clone, Debug, PartialEq)]
pub struct BuiltinTool {
    /// Gemini camelCase key.
    pub kind: String,
    /// Its configuration object.
    pub config: Value,
}

/// Tool choice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolChoice {
    /// Model decides.
    Auto,
    /// No tool calls.
    None,
    /// Must call some tool.
    Any,
    /// Must call this tool.
    Tool(String),
}

/// Reasoning effort levels shared by OpenAI `reasoning_effort` and Gemini
/// `thinkingLevel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effort {
    /// Little reasoning.
    Low,
    /// Default reasoning.
    Medium,
    /// Much reasoning.
    High,
}

impl Effort {
    /// Token budget used where a target wants a number (Anthropic's
    /// `budget_tokens`, Gemini 2.5's `thinkingBudget`).
    pub fn budget(self) -> u64 {
        match self {
            Self::Low => 1024,
            Self::Medium => 8192,
            Self::High => 24576,
        }
    }

    /// Effort for a budget: <4096 low, <16384 medium, else high.
    pub fn from_budget(budget: u64) -> Self {
        if budget < 4096 {
            Self::Low
        } else if budget < 16384 {
            Self::Medium
        } else {
            Self::High
        }
    }

    /// Parses `low`/`medium`/`high` and their neighbours
    /// (`minimal`→low, `max`/`xhigh`→high).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "minimal" | "low" => Some(Self::Low),
            "medium" => Some(Self::Medium),
            "high" | "xhigh" | "max" => Some(Self::High),
            _ => None,
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

/// What the client asked of reasoning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reasoning {
    /// Explicitly off.
    Disabled,
    /// A token budget.
    Budget(u64),
    /// An effort level.
    Effort(Effort),
    /// On, model decides how much.
    Adaptive,
}

impl Reasoning {
    /// True unless disabled.
    pub fn enabled(self) -> bool {
        self != Self::Disabled
    }
}

/// Structured output request.
#[derive(Clone, Debug, PartialEq)]
pub enum ResponseFormat {
    /// Any JSON object.
    JsonObject,
    /// JSON matching this schema.
    JsonSchema(Value),
}

/// Token usage with the detail the three protocols can express.
/// `input` includes cached tokens and `output` includes reasoning, as in
/// OpenAI; emitters for Anthropic and Gemini split them back out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenUsage {
    /// All prompt tokens, cached ones included.
    pub input: u64,
    /// All output tokens, reasoning included.
    pub output: u64,
    /// Prompt tokens read from cache.
    pub cache_read: u64,
    /// Prompt tokens written to cache (Anthropic).
    pub cache_creation: u64,
    /// Output tokens spent reasoning.
    pub reasoning: u64,
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// Natural end.
    Stop,
    /// A stop sequence matched (Anthropic only reports this).
    StopSequence,
    /// Output token limit.
    Length,
    /// The model wants tool results.
    ToolUse,
    /// Safety / refusal.
    ContentFilter,
    /// Anything else.
    Other,
}

/// A whole answer.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatResponse {
    /// Upstream id, if any (emitters generate their own).
    pub id: Option<String>,
    /// Content in order (thinking, text, tool calls, media).
    pub parts: Vec<Part>,
    /// Why it stopped.
    pub finish: FinishReason,
    /// Token counts.
    pub usage: TokenUsage,
}

/// One step of a streamed answer. Tool `index` values are the upstream's
/// keys for a call; encoders renumber them for their own protocol.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    /// The answer begins.
    Start {
        /// Prompt tokens, when the upstream reports them up front.
        input_tokens: Option<u64>,
    },
    /// Visible text.
    TextDelta(String),
    /// Reasoning text.
    ThinkingDelta(String),
    /// Signature of the current reasoning block.
    SignatureDelta(String),
    /// A tool call begins.
    ToolCallStart {
        /// Upstream key of the call.
        index: usize,
        /// Upstream call id, if any.
        id: Option<String>,
        /// Function name.
        name: String,
    },
    /// A fragment of the call's JSON arguments.
    ToolCallArgs {
        /// Upstream key of the call.
        index: usize,
        /// Raw JSON text fragment.
        fragment: String,
    },
    /// The call's arguments are complete.
    ToolCallEnd {
        /// Upstream key of the call.
        index: usize,
    },
    /// The answer is complete.
    Finish {
        /// Upstream reason; `None` when the upstream never said.
        reason: Option<FinishReason>,
        /// Final usage, if known.
        usage: Option<TokenUsage>,
    },
    /// The upstream reported an error in-band.
    Error {
        /// HTTP-like status for rendering.
        status: u16,
        /// Message.
        message: String,
    },
}

/// Concatenated `Text` parts.
pub fn joined_text(parts: &[Part]) -> String {
    let mut s = String::new();
    for p in parts {
        if let Part::Text(t) = p {
            s.push_str(t);
        }
    }
    s
}

/// The `Text` parts, one per line (a system turn as one string).
pub fn text_lines(parts: &[Part]) -> String {
    let texts: Vec<&str> = parts
        .iter()
        .filter_map(|p| match p {
            Part::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    texts.join("\n")
}

/// Reads a non-negative integer; floats with no fraction count too.
pub fn as_u64(v: Option<&Value>) -> Option<u64> {
    let v = v?;
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| *f >= 0.0 && f.fract() == 0.0 && *f < 1e18)
            .map(|f| f as u64)
    })
}

/// Reads a number, keeping its exact JSON form.
pub fn as_number(v: Option<&Value>) -> Option<Number> {
    match v? {
        Value::Number(n) => Some(n.clone()),
        _ => None,
    }
}

/// Text of a string, or of the text parts of an array of
/// `{"type":"text","text":…}` parts, joined with `\n`.
pub fn text_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => {
            let texts: Vec<&str> = items
                .iter()
                .filter_map(|i| match i {
                    Value::String(s) => Some(s.as_str()),
                    _ => i.get("text").and_then(Value::as_str),
                })
                .collect();
            Some(texts.join("\n"))
        }
        _ => None,
    }
}

/// Tool-result content as a string: strings as-is, arrays reduced to their
/// text parts (or JSON when they have none), anything else as JSON.
pub fn result_text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => {
            let texts: Vec<&str> = items
                .iter()
                .filter_map(|i| i.get("text").and_then(Value::as_str))
                .collect();
            if texts.is_empty() && !items.is_empty() {
                Value::Array(items.clone()).to_string()
            } else {
                texts.join("\n")
            }
        }
        Some(other) => other.to_string(),
    }
}

/// Parses tool-call arguments: a JSON string holding an object, or an
/// object; anything unparseable becomes `{}` (a call without arguments is
/// still a call).
pub fn parse_arguments(v: Option<&Value>) -> Value {
    match v {
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(obj @ Value::Object(_)) => obj,
            _ => Value::Object(serde_json::Map::new()),
        },
        Some(obj @ Value::Object(_)) => obj.clone(),
        _ => Value::Object(serde_json::Map::new()),
    }
}

/// Splits a `data:<mime>;base64,<payload>` URI.
pub fn parse_data_uri(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let mime = meta.strip_suffix(";base64")?;
    let mime = if mime.is_empty() { "image/jpeg" } else { mime };
    Some((mime.to_string(), data.to_string()))
}

/// MIME type guessed from a file name or URL extension.
pub fn mime_from_name(name: &str) -> Option<&'static str> {
    let path = name.split(['?', '#']).next().unwrap_or(name);
    let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "html" => "text/html",
        "css" => "text/css",
        "js" | "jsx" => "text/javascript",
        "ts" | "tsx" => "text/typescript",
        "json" => "application/json",
        "xml" => "text/xml",
        "csv" => "text/csv",
        "md" => "text/markdown",
        "py" => "text/x-python",
        "java" => "text/x-java",
        "c" | "h" => "text/x-c",
        "cpp" | "hpp" => "text/x-c++",
        "go" => "text/x-go",
        "rs" => "text/x-rust",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        _ => return None,
    })
}

/// Appends `msg` to `out`, merging it into the previous message when the
/// role is the same (Anthropic and Gemini want alternating turns; several
/// OpenAI `tool` messages must become one user turn).
pub fn push_merged(out: &mut Vec<Message>, msg: Message) {
    if msg.parts.is_empty() {
        return;
    }
    if let Some(last) = out.last_mut()
        && last.role == msg.role
    {
        last.parts.extend(msg.parts);
        return;
    }
    out.push(msg);
}

/// `messages` with every system turn that stands between a turn making
/// tool calls and the turn answering them moved after the answers: OpenAI
/// and Anthropic want results right after their calls, and the
/// instruction still comes before the model's next turn.
pub fn system_after_results(messages: &[Message]) -> Vec<&Message> {
    let mut out = Vec::with_capacity(messages.len());
    let mut deferred = Vec::new();
    let mut awaiting_results = false;
    for m in messages {
        match m.role {
            Role::System if awaiting_results => deferred.push(m),
            Role::System => out.push(m),
            Role::Assistant => {
                out.append(&mut deferred);
                awaiting_results = m.parts.iter().any(|p| matches!(p, Part::ToolUse(_)));
                out.push(m);
            }
            Role::User => {
                out.push(m);
                out.append(&mut deferred);
                awaiting_results = false;
            }
        }
    }
    out.append(&mut deferred);
    out
}

/// Splits `<thinking>…</thinking>` spans out of a text (OpenAI-family
/// models that inline their reasoning).
pub fn split_thinking_tags(text: &str) -> Vec<Part> {
    const OPEN: &str = "<thinking>";
    const CLOSE: &str = "</thinking>";
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len()..];
        let Some(end) = after.find(CLOSE) else { break };
        let before = &rest[..start];
        if !before.trim().is_empty() {
            parts.push(Part::Text(before.to_string()));
        }
        parts.push(Part::Thinking {
            text: after[..end].trim().to_string(),
            signature: None,
        });
        rest = &after[end + CLOSE.len()..];
    }
    let rest = if parts.is_empty() {
        rest
    } else {
        rest.trim_start()
    };
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_string()));
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn thinking_tags_are_split_out() {
        let parts = split_thinking_tags("<thinking>hmm</thinking>\nAnswer");
        assert_eq!(
            parts,
            vec![
                Part::Thinking {
                    text: "hmm".into(),
                    signature: None
                },
                Part::Text("Answer".into())
            ]
        );
        assert_eq!(
            split_thinking_tags("plain"),
            vec![Part::Text("plain".into())]
        );
        assert_eq!(
            split_thinking_tags("<thinking>open"),
            vec![Part::Text("<thinking>open".into())]
        );
    }

    #[test]
    fn arguments_parse_leniently() {
        assert_eq!(parse_arguments(Some(&json!("{\"a\":1}"))), json!({"a":1}));
        assert_eq!(parse_arguments(Some(&json!("{\"a\":"))), json!({}));
        assert_eq!(parse_arguments(Some(&json!("[1]"))), json!({}));
        assert_eq!(parse_arguments(None), json!({}));
    }

    #[test]
    fn data_uris_and_mimes() {
        assert_eq!(
            parse_data_uri("data:image/png;base64,AAA"),
            Some(("image/png".into(), "AAA".into()))
        );
        assert_eq!(parse_data_uri("https://x/y.png"), None);
        assert_eq!(mime_from_name("a/b.PDF?x=1"), Some("application/pdf"));
        assert_eq!(mime_from_name("noext"), None);
    }

    #[test]
    fn result_text_flattens() {
        assert_eq!(result_text(Some(&json!("x"))), "x");
        assert_eq!(
            result_text(Some(
                &json!([{"type":"text","text":"a"},{"type":"text","text":"b"}])
            )),
            "a\nb"
        );
        assert_eq!(result_text(Some(&json!({"k":1}))), "{\"k\":1}");
    }

    #[test]
    fn system_turns_wait_for_tool_results() {
        let text = |role, t: &str| Message {
            role,
            parts: vec![Part::Text(t.into())],
        };
        let call = Message {
            role: Role::Assistant,
            parts: vec![Part::ToolUse(ToolCall {
                id: "c".into(),
                name: "f".into(),
                input: json!({}),
            })],
        };
        let result = Message {
            role: Role::User,
            parts: vec![Part::ToolResult(ToolResult {
                id: "c".into(),
                content: "r".into(),
                is_error: false,
            })],
        };
        let msgs = vec![
            text(Role::System, "s0"),
            text(Role::User, "u"),
            call.clone(),
            text(Role::System, "s1"),
            result.clone(),
            text(Role::System, "s2"),
        ];
        let out = system_after_results(&msgs);
        let order: Vec<Role> = out.iter().map(|m| m.role).collect();
        use Role::*;
        assert_eq!(order, [System, User, Assistant, User, System, System]);
        assert_eq!(*out[3], result);
        assert_eq!(*out[4], text(System, "s1"));
        // A call never answered: the instruction still goes out, at the end.
        let unanswered = [call, text(System, "s")];
        let out = system_after_results(&unanswered);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn merging_same_roles() {
        let mut v = Vec::new();
        push_merged(
            &mut v,
            Message {
                role: Role::User,
                parts: vec![Part::Text("a".into())],
            },
        );
        push_merged(
            &mut v,
            Message {
                role: Role::User,
                parts: vec![Part::Text("b".into())],
            },
        );
        push_merged(
            &mut v,
            Message {
                role: Role::Assistant,
                parts: vec![],
            },
        );
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].parts.len(), 2);
    }
}
