//! Anthropic messages: requests, answers and streams to and from the
//! canonical model.
//!
//! The stream encoder is a state machine because Anthropic clients (Claude
//! Code in particular) need a well-formed event sequence that the original
//! project never produced for converted streams:
//! `message_start` first, content blocks with consecutive indices each
//! opened and closed, one `message_delta`, `message_stop` last.

use crate::protocol::Lookup as _;
use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::ConvertError;
use super::canonical::{
    ChatRequest, ChatResponse, Effort, FinishReason, Media, Message, Part, Reasoning,
    ResponseFormat, Role, StreamEvent, TokenUsage, Tool, ToolCall, ToolChoice, ToolResult,
    as_number, as_u64, push_merged, result_text, system_after_results,
};
use super::json::Borrowed;
use super::{gemini, ids, json, schema};

mod usual;

fn bad(msg: impl Into<String>) -> ConvertError {
    ConvertError {
        message: msg.into(),
    }
}

/// `max_tokens` when the client gave none (Anthropic requires it). Chosen
/// from the published output limits: 32000 for Opus 4.0/4.1, 64000 for the
/// other Claude 4 and 3.7 models, 4096 for the Claude 3 generation, 8192
/// otherwise. Never the original's 200000, which every model rejects.
pub fn default_max_tokens(model: &str) -> u64 {
    let m = model.to_ascii_lowercase();
    let any = |keys: &[&str]| keys.iter().any(|k| m.contains(k));
    if any(&["opus-4-0", "opus-4-1", "opus-4-2025"]) {
        32_000
    } else if any(&[
        "opus-4",
        "sonnet-4",
        "haiku-4",
        "claude-4",
        "3-7-sonnet",
        "sonnet-3-7",
    ]) {
        64_000
    } else if any(&["claude-3-opus", "claude-3-haiku", "claude-3-sonnet"]) {
        4096
    } else {
        8192
    }
}

// ---------------------------------------------------------------- requests

/// Parses an Anthropic `thinking` object (also used for OpenAI's
/// `extra_body.anthropic.thinking`).
pub fn parse_thinking(t: &Value) -> Option<Reasoning> {
    match t.get("type").and_then(Value::as_str)? {
        "enabled" => {
            Some(as_u64(t.get("budget_tokens")).map_or(Reasoning::Adaptive, Reasoning::Budget))
        }
        "adaptive" => Some(
            t.get("effort")
                .and_then(Value::as_str)
                .and_then(Effort::parse)
                .map_or(Reasoning::Adaptive, Reasoning::Effort),
        ),
        "disabled" => Some(Reasoning::Disabled),
        _ => None,
    }
}

/// Parses an Anthropic messages request.
pub fn parse_request(body: &Value) -> Result<ChatRequest, ConvertError> {
    let obj = body
        .as_object()
        .ok_or_else(|| bad("Request body must be a JSON object"))?;
    let msgs = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("`messages` must be an array"))?;
    let mut req = ChatRequest::default();
    match obj.get("system") {
        Some(Value::String(s)) if !s.is_empty() => req.system.push(s.clone()),
        Some(Value::Array(blocks)) => {
            for b in blocks {
                if let Some(t) = b
                    .get("text")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                {
                    req.system.push(t.to_string());
                }
            }
        }
        _ => {}
    }
    for (i, m) in msgs.iter().enumerate() {
        let role = match m.get("role").and_then(Value::as_str) {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some("system") => Role::System,
            _ => {
                return Err(bad(format!(
                    "messages[{i}].role must be \"user\", \"assistant\" or \"system\""
                )));
            }
        };
        let parts = match m.get("content") {
            Some(Value::String(s)) if !s.is_empty() => vec![Part::Text(s.clone())],
            Some(Value::Array(blocks)) => blocks
                .iter()
                .filter_map(parse_block)
                .filter(|p| role != Role::System || matches!(p, Part::Text(_)))
                .collect(),
            _ => Vec::new(),
        };
        if !parts.is_empty() {
            req.messages.push(Message { role, parts });
        }
    }
    if let Some(tools) = obj.get("tools").and_then(Value::as_array) {
        for t in tools {
            let kind = t.get("type").and_then(Value::as_str).unwrap_or("custom");
            if kind.starts_with("web_search") {
                req.builtin_tools.push(super::canonical::BuiltinTool {
                    kind: "googleSearch".into(),
                    config: json!({}),
                });
            } else if let Some(b) = gemini::builtin_tool(t) {
                req.builtin_tools.push(b);
            } else if let Some(name) = t.get("name").and_then(Value::as_str) {
                req.tools.push(Tool {
                    name: name.to_string(),
                    description: t
                        .get("description")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    schema: t
                        .get("input_schema")
                        .cloned()
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                });
            }
        }
    }
    req.tool_choice =
        obj.get("tool_choice")
            .and_then(|tc| match tc.get("type").and_then(Value::as_str)? {
                "auto" => Some(ToolChoice::Auto),
                "any" => Some(ToolChoice::Any),
                "none" => Some(ToolChoice::None),
                "tool" => tc
                    .get("name")
                    .and_then(Value::as_str)
                    .map(|n| ToolChoice::Tool(n.to_string())),
                _ => None,
            });
    req.max_tokens = as_u64(obj.get("max_tokens"));
    req.temperature = as_number(obj.get("temperature"));
    req.top_p = as_number(obj.get("top_p"));
    req.top_k = as_number(obj.get("top_k"));
    req.stop = obj
        .get("stop_sequences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    req.reasoning = obj.get("thinking").and_then(parse_thinking).map(|r| {
        // `output_config.effort` refines adaptive or budgeted thinking.
        match (
            r,
            obj.get("output_config")
                .and_then(|o| o.get("effort"))
                .and_then(Value::as_str),
        ) {
            (Reasoning::Disabled, _) => r,
            (_, Some(e)) => Effort::parse(e).map_or(r, Reasoning::Effort),
            _ => r,
        }
    });
    // Structured output: `output_config.format`, or the older beta's
    // `output_format`.
    req.response_format = obj
        .get("output_config")
        .and_then(|o| o.get("format"))
        .or_else(|| obj.get("output_format"))
        .filter(|f| f.get("type").and_then(Value::as_str) == Some("json_schema"))
        .and_then(|f| f.get("schema"))
        .map(|s| ResponseFormat::JsonSchema(s.clone()));
    Ok(req)
}

/// [`parse_request`] straight from the bytes of a request in the usual
/// shape (text turns and generation settings, see `usual`); `None` for any
/// other, which the caller then parses whole.
pub fn parse_request_slice(body: &[u8]) -> Option<ChatRequest> {
    usual::parse(body)
}

fn parse_block(b: &Value) -> Option<Part> {
    let str_of = |k: &str| b.get(k).and_then(Value::as_str);
    match str_of("type")? {
        "text" => str_of("text")
            .filter(|t| !t.is_empty())
            .map(|t| Part::Text(t.to_string())),
        "image" | "document" => {
            let src = b.get("source")?;
            match src.get("type").and_then(Value::as_str)? {
                "base64" => Some(Part::Media(Media::Base64 {
                    mime: src
                        .get("media_type")
                        .and_then(Value::as_str)
                        .unwrap_or("image/jpeg")
                        .to_string(),
                    data: src.get("data").and_then(Value::as_str)?.to_string(),
                })),
                "url" => Some(Part::Media(Media::Url {
                    mime: (str_of("type") == Some("document"))
                        .then(|| "application/pdf".to_string()),
                    url: src.get("url").and_then(Value::as_str)?.to_string(),
                })),
                "text" => src
                    .get("data")
                    .and_then(Value::as_str)
                    .map(|t| Part::Text(t.to_string())),
                _ => None,
            }
        }
        "tool_use" => Some(Part::ToolUse(ToolCall {
            id: str_of("id").unwrap_or_default().to_string(),
            name: str_of("name")?.to_string(),
            input: b
                .get("input")
                .cloned()
                .filter(Value::is_object)
                .unwrap_or_else(|| json!({})),
        })),
        "tool_result" => Some(Part::ToolResult(ToolResult {
            id: str_of("tool_use_id").unwrap_or_default().to_string(),
            content: result_text(b.get("content")),
            is_error: b.get("is_error").and_then(Value::as_bool).unwrap_or(false),
        })),
        "thinking" => Some(Part::Thinking {
            text: str_of("thinking").unwrap_or_default().to_string(),
            signature: str_of("signature")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        }),
        "redacted_thinking" => str_of("data").map(|d| Part::RedactedThinking(d.to_string())),
        _ => None,
    }
}

/// Anthropic only accepts tool ids matching `[a-zA-Z0-9_-]+`; ids from other
/// vendors are mapped onto that alphabet, identically for calls and results.
fn tool_id(id: &str) -> String {
    if id.is_empty() {
        return "toolu_unknown".into();
    }
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn emit_block(p: &Part) -> Option<Value> {
    Some(match p {
        Part::Text(t) if t.trim().is_empty() => return None,
        Part::Text(t) => json!({"type": "text", "text": t}),
        Part::Media(Media::Base64 { mime, data }) if mime.starts_with("image/") => {
            json!({"type": "image", "source": {"type": "base64", "media_type": mime, "data": data}})
        }
        Part::Media(Media::Base64 { mime, data }) if mime == "application/pdf" => {
            json!({"type": "document", "source": {"type": "base64", "media_type": mime, "data": data}})
        }
        Part::Media(Media::Base64 { mime, .. }) => {
            json!({"type": "text", "text": format!("[File: {mime}]")})
        }
        Part::Media(m @ Media::Url { url, .. }) => {
            let kind = if m.mime() == Some("application/pdf") {
                "document"
            } else {
                "image"
            };
            if m.is_image() || kind == "document" {
                json!({"type": kind, "source": {"type": "url", "url": url}})
            } else {
                json!({"type": "text", "text": format!("[File: {url}]")})
            }
        }
        Part::ToolUse(c) => {
            json!({"type": "tool_use", "id": tool_id(&c.id), "name": c.name, "input": c.input})
        }
        Part::ToolResult(r) => {
            let mut o =
                json!({"type": "tool_result", "tool_use_id": tool_id(&r.id), "content": r.content});
            if r.is_error
                && let Some(obj) = o.as_object_mut()
            {
                obj.insert("is_error".into(), json!(true));
            }
            o
        }
        // Unsigned (foreign) reasoning would be rejected by Anthropic.
        Part::Thinking {
            text,
            signature: Some(sig),
        } => json!({"type": "thinking", "thinking": text, "signature": sig}),
        Part::Thinking {
            signature: None, ..
        } => return None,
        Part::RedactedThinking(d) => json!({"type": "redacted_thinking", "data": d}),
    })
}

/// Builds an Anthropic request for `model`.
pub fn emit_request(req: &ChatRequest, model: &str, stream: bool) -> Value {
    let mut merged: Vec<Message> = Vec::new();
    for m in system_after_results(&req.messages) {
        push_merged(&mut merged, m.clone());
    }
    // System turns before the conversation are the system prompt; later
    // ones stay where they are, as `system` messages.
    let lead = merged.iter().take_while(|m| m.role == Role::System).count();
    let mut system = req.system.clone();
    for m in merged.drain(..lead) {
        system.extend(m.parts.into_iter().filter_map(|p| match p {
            Part::Text(t) => Some(t),
            _ => None,
        }));
    }
    let mut messages: Vec<Value> = Vec::new();
    let last = merged.len().saturating_sub(1);
    for (i, m) in merged.iter().enumerate() {
        let mut blocks: Vec<Value> = m.parts.iter().filter_map(emit_block).collect();
        if m.role == Role::User {
            // tool_result blocks must lead the user turn.
            blocks.sort_by_key(|b| b.get("type") != Some(&json!("tool_result")));
        }
        if i == last && m.role == Role::Assistant {
            // Anthropic rejects a prefill that ends in whitespace.
            if let Some(Value::String(t)) = blocks.last_mut().and_then(|b| b.get_mut("text")) {
                *t = t.trim_end().to_string();
            }
        }
        if blocks.is_empty() {
            continue;
        }
        let role = match m.role {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::System => "system",
        };
        messages.push(json!({"role": role, "content": blocks}));
    }

    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    let mut max_tokens = req.max_tokens.unwrap_or_else(|| default_max_tokens(model));
    let thinking = match req.reasoning {
        Some(Reasoning::Budget(b)) => Some(b.max(1024)),
        Some(Reasoning::Effort(e)) => Some(e.budget()),
        _ => None,
    };
    let thinking = thinking.and_then(|b| {
        if b < max_tokens {
            Some(b)
        } else if req.max_tokens.is_none() {
            max_tokens = b + default_max_tokens(model).min(8192);
            Some(b)
        } else {
            // Anthropic needs budget < max_tokens; shrink rather than
            // exceed the client's cap, or drop thinking if it cannot fit.
            Some(max_tokens.saturating_sub(1)).filter(|b| *b >= 1024)
        }
    });
    out.insert("max_tokens".into(), json!(max_tokens));
    if !system.is_empty() {
        out.insert("system".into(), json!(system.join("\n")));
    }
    out.insert("messages".into(), Value::Array(messages));
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                Value::Object(t.declaration("input_schema", schema::for_json_schema(&t.schema)))
            })
            .collect();
        out.insert("tools".into(), Value::Array(tools));
        if let Some(tc) = &req.tool_choice {
            out.insert(
                "tool_choice".into(),
                match tc {
                    ToolChoice::Auto => json!({"type": "auto"}),
                    ToolChoice::None => json!({"type": "none"}),
                    ToolChoice::Any => json!({"type": "any"}),
                    ToolChoice::Tool(n) => json!({"type": "tool", "name": n}),
                },
            );
        }
    }
    if let Some(t) = &req.temperature {
        out.insert("temperature".into(), Value::Number(t.clone()));
    }
    // Current Claude models refuse `temperature` and `top_p` together;
    // the temperature is the one clients mean.
    if let Some(p) = req.top_p.as_ref().filter(|_| req.temperature.is_none()) {
        out.insert("top_p".into(), Value::Number(p.clone()));
    }
    if let Some(k) = &req.top_k {
        out.insert("top_k".into(), Value::Number(k.clone()));
    }
    if !req.stop.is_empty() {
        out.insert("stop_sequences".into(), json!(req.stop));
    }
    if let Some(b) = thinking {
        out.insert(
            "thinking".into(),
            json!({"type": "enabled", "budget_tokens": b}),
        );
    } else if req.reasoning == Some(Reasoning::Adaptive) {
        out.insert("thinking".into(), json!({"type": "adaptive"}));
    }
    if let Some(ResponseFormat::JsonSchema(s)) = &req.response_format {
        out.insert(
            "output_config".into(),
            json!({"format": {"type": "json_schema", "schema": s}}),
        );
    }
    out.insert("stream".into(), json!(stream));
    Value::Object(out)
}

// --------------------------------------------------------------- responses

/// Anthropic `stop_reason` to canonical.
pub fn parse_finish(s: &str) -> FinishReason {
    match s {
        "end_turn" => FinishReason::Stop,
        "stop_sequence" => FinishReason::StopSequence,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolUse,
        "refusal" => FinishReason::ContentFilter,
        _ => FinishReason::Other,
    }
}

/// Canonical to Anthropic `stop_reason`.
pub fn finish_name(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop | FinishReason::Other => "end_turn",
        FinishReason::StopSequence => "stop_sequence",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolUse => "tool_use",
        FinishReason::ContentFilter => "refusal",
    }
}

/// Reads an Anthropic `usage` object; input counts cache reads and writes.
pub fn parse_usage(u: &Value) -> TokenUsage {
    let cache_read = as_u64(u.get("cache_read_input_tokens")).unwrap_or(0);
    let cache_creation = as_u64(u.get("cache_creation_input_tokens")).unwrap_or(0);
    TokenUsage {
        input: as_u64(u.get("input_tokens")).unwrap_or(0) + cache_read + cache_creation,
        output: as_u64(u.get("output_tokens")).unwrap_or(0),
        cache_read,
        cache_creation,
        reasoning: 0,
    }
}

/// Renders an Anthropic `usage` object: `input_tokens` is the uncached
/// input only, cache reads and writes have fields of their own.
pub fn emit_usage(u: &TokenUsage) -> Value {
    serde_json::to_value(Usage::of(u)).unwrap_or_default()
}

/// A whole Anthropic answer as [`emit_response`] renders it, through
/// serde; [`emit_response_bytes`] writes the same members by hand.
#[derive(serde::Serialize)]
struct WholeAnswer<'a> {
    content: Vec<AnswerBlock<'a>>,
    id: String,
    model: &'a str,
    role: &'static str,
    stop_reason: &'static str,
    stop_sequence: Option<()>,
    r#type: &'static str,
    usage: Usage,
}

#[derive(serde::Serialize)]
#[serde(untagged)]
enum AnswerBlock<'a> {
    Text {
        text: &'a str,
        r#type: &'static str,
    },
    Thinking {
        signature: &'a str,
        thinking: &'a str,
        r#type: &'static str,
    },
    ToolUse {
        id: String,
        input: &'a Value,
        name: &'a str,
        r#type: &'static str,
    },
    Other(Value),
}

impl<'a> WholeAnswer<'a> {
    fn of(resp: &'a ChatResponse, model: &'a str) -> Self {
        let content = resp
            .parts
            .iter()
            .filter_map(|p| match p {
                Part::Text(t) => Some(AnswerBlock::Text {
                    text: t,
                    r#type: "text",
                }),
                Part::Thinking { text, signature } => Some(AnswerBlock::Thinking {
                    signature: signature.as_deref().unwrap_or_default(),
                    thinking: text,
                    r#type: "thinking",
                }),
                Part::ToolUse(c) => Some(AnswerBlock::ToolUse {
                    id: if c.id.is_empty() {
                        ids::new_id("toolu_")
                    } else {
                        tool_id(&c.id)
                    },
                    input: &c.input,
                    name: &c.name,
                    r#type: "tool_use",
                }),
                other => emit_block(other).map(AnswerBlock::Other),
            })
            .collect();
        WholeAnswer {
            content,
            id: ids::new_id("msg_"),
            model,
            role: "assistant",
            stop_reason: finish_name(resp.finish),
            stop_sequence: None,
            r#type: "message",
            usage: Usage::of(&resp.usage),
        }
    }
}

/// An Anthropic `usage` object as written (members in a `Value` map's
/// order).
#[derive(serde::Serialize)]
struct Usage {
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
    input_tokens: u64,
    output_tokens: u64,
}

impl Usage {
    fn of(u: &TokenUsage) -> Self {
        Usage {
            cache_creation_input_tokens: u.cache_creation,
            cache_read_input_tokens: u.cache_read,
            input_tokens: u.input.saturating_sub(u.cache_read + u.cache_creation),
            output_tokens: u.output,
        }
    }
}

/// Parses a whole Anthropic answer.
pub fn parse_response(body: &Value) -> Result<ChatResponse, ConvertError> {
    let content = body
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("Anthropic response has no content array"))?;
    let parts = content.iter().filter_map(parse_block).collect();
    Ok(ChatResponse {
        id: body.get("id").and_then(Value::as_str).map(str::to_string),
        parts,
        finish: body
            .get("stop_reason")
            .and_then(Value::as_str)
            .map_or(FinishReason::Stop, parse_finish),
        usage: body.get("usage").map(parse_usage).unwrap_or_default(),
    })
}

/// Renders a whole Anthropic answer.
pub fn emit_response(resp: &ChatResponse, model: &str) -> Value {
    serde_json::to_value(WholeAnswer::of(resp, model)).unwrap_or_default()
}

/// The bytes of a whole Anthropic answer: [`emit_response`] written
/// straight from the answer, without building a `Value` tree first, into a
/// buffer of `size_hint` bytes to start with. Members (and those of the
/// blocks) are in alphabetical order, the order a `Value`'s map writes
/// them in, so both renderings give the same bytes. Written by hand: the
/// member names are constants, and serde_json escaped each one as it
/// would a text, a quarter of the answer's conversion.
pub fn emit_response_bytes(resp: &ChatResponse, model: &str, size_hint: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size_hint);
    out.extend_from_slice(b"{\"content\":[");
    let mut blocks = 0;
    for part in &resp.parts {
        let start = out.len();
        if blocks > 0 {
            out.push(b',');
        }
        match part {
            Part::Text(text) => {
                out.extend_from_slice(b"{\"text\":");
                json::push_str(&mut out, text);
                out.extend_from_slice(b",\"type\":\"text\"}");
            }
            Part::Thinking { text, signature } => {
                out.extend_from_slice(b"{\"signature\":");
                json::push_str(&mut out, signature.as_deref().unwrap_or_default());
                out.extend_from_slice(b",\"thinking\":");
                json::push_str(&mut out, text);
                out.extend_from_slice(b",\"type\":\"thinking\"}");
            }
            Part::ToolUse(c) => {
                out.extend_from_slice(b"{\"id\":");
                let id = if c.id.is_empty() {
                    ids::new_id("toolu_")
                } else {
                    tool_id(&c.id)
                };
                json::push_str(&mut out, &id);
                out.extend_from_slice(b",\"input\":");
                if serde_json::to_writer(&mut out, &c.input).is_err() {
                    return Vec::new();
                }
                out.extend_from_slice(b",\"name\":");
                json::push_str(&mut out, &c.name);
                out.extend_from_slice(b",\"type\":\"tool_use\"}");
            }
            other => match emit_block(other) {
                Some(block) => {
                    if serde_json::to_writer(&mut out, &block).is_err() {
                        return Vec::new();
                    }
                }
                None => {
                    out.truncate(start);
                    continue;
                }
            },
        }
        blocks += 1;
    }
    out.extend_from_slice(b"],\"id\":");
    json::push_str(&mut out, &ids::new_id("msg_"));
    out.extend_from_slice(b",\"model\":");
    json::push_str(&mut out, model);
    out.extend_from_slice(b",\"role\":\"assistant\",\"stop_reason\":");
    json::push_str(&mut out, finish_name(resp.finish));
    out.extend_from_slice(b",\"stop_sequence\":null,\"type\":\"message\",\"usage\":");
    let usage = Usage::of(&resp.usage);
    for (name, n) in [
        (
            &b"{\"cache_creation_input_tokens\":"[..],
            usage.cache_creation_input_tokens,
        ),
        (
            b",\"cache_read_input_tokens\":",
            usage.cache_read_input_tokens,
        ),
        (b",\"input_tokens\":", usage.input_tokens),
        (b",\"output_tokens\":", usage.output_tokens),
    ] {
        out.extend_from_slice(name);
        crate::decimal::push_decimal(&mut out, n);
    }
    out.extend_from_slice(b"}}");
    out
}

// ------------------------------------------------------- upstream streams

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    Thinking,
    Tool,
    Other,
}

/// Turns upstream Anthropic events into canonical events.
#[derive(Debug, Default)]
pub struct Decoder {
    blocks: HashMap<usize, Block>,
    usage: TokenUsage,
    reason: Option<FinishReason>,
    saw_tool: bool,
    finished: bool,
}

impl Decoder {
    /// Decodes one `data:` payload.
    pub fn event(&mut self, data: &str, out: &mut Vec<StreamEvent>) {
        if self.finished || self.plain_delta(data, out) {
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        self.value(&v, out);
    }

    /// [`Decoder::value`] for a `content_block_delta`, nearly every event
    /// of a stream, read into typed members without building a [`Value`]
    /// (building, reading and dropping one was most of a converted
    /// event's cost). False, having decoded nothing, for any other event,
    /// or one of another shape (see [`RawDeltaEvent`]): `value` reads it.
    pub(super) fn plain_delta(&mut self, data: &str, out: &mut Vec<StreamEvent>) -> bool {
        let Ok(raw) = serde_json::from_str::<RawDeltaEvent>(data) else {
            return false;
        };
        if raw.ty.0 != "content_block_delta" {
            return false;
        }
        let (Some(index), Some(d)) = (raw.index, raw.delta) else {
            return true;
        };
        let index = index as usize;
        let s = |f: Option<Borrowed>| f.map(|f| f.0.into_owned()).unwrap_or_default();
        match d.ty.as_ref().map_or("", |t| &*t.0) {
            "text_delta" => out.push(StreamEvent::TextDelta(s(d.text))),
            "thinking_delta" => out.push(StreamEvent::ThinkingDelta(s(d.thinking))),
            "signature_delta" => out.push(StreamEvent::SignatureDelta(s(d.signature))),
            "input_json_delta" if self.blocks.get(&index) == Some(&Block::Tool) => {
                let f = s(d.partial_json);
                if !f.is_empty() {
                    out.push(StreamEvent::ToolCallArgs { index, fragment: f });
                }
            }
            _ => {}
        }
        true
    }

    /// Decodes one parsed event.
    pub fn value(&mut self, v: &Value, out: &mut Vec<StreamEvent>) {
        if self.finished {
            return;
        }
        let index = v.get("index").and_then(Value::as_u64).map(|i| i as usize);
        match v.get("type").and_then(Value::as_str).unwrap_or("") {
            "message_start" => {
                if let Some(u) = v.at(&["message", "usage"]) {
                    self.usage = parse_usage(u);
                }
                out.push(StreamEvent::Start {
                    input_tokens: Some(self.usage.input).filter(|n| *n > 0),
                });
            }
            "content_block_start" => {
                let (Some(index), Some(cb)) = (index, v.get("content_block")) else {
                    return;
                };
                let s = |k: &str| cb.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                let kind = match cb.get("type").and_then(Value::as_str).unwrap_or("") {
                    "text" => {
                        let t = s("text");
                        if !t.is_empty() {
                            out.push(StreamEvent::TextDelta(t));
                        }
                        Block::Text
                    }
                    "thinking" => {
                        let t = s("thinking");
                        if !t.is_empty() {
                            out.push(StreamEvent::ThinkingDelta(t));
                        }
                        Block::Thinking
                    }
                    "tool_use" => {
                        self.saw_tool = true;
                        out.push(StreamEvent::ToolCallStart {
                            index,
                            id: Some(s("id")).filter(|i| !i.is_empty()),
                            name: s("name"),
                        });
                        // Some upstreams (Kiro) put the whole input here.
                        if let Some(inp) = cb
                            .get("input")
                            .filter(|i| i.as_object().is_some_and(|o| !o.is_empty()))
                        {
                            out.push(StreamEvent::ToolCallArgs {
                                index,
                                fragment: inp.to_string(),
                            });
                        }
                        Block::Tool
                    }
                    _ => Block::Other,
                };
                self.blocks.insert(index, kind);
            }
            "content_block_delta" => {
                let (Some(index), Some(d)) = (index, v.get("delta")) else {
                    return;
                };
                let s = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                match d.get("type").and_then(Value::as_str).unwrap_or("") {
                    "text_delta" => out.push(StreamEvent::TextDelta(s("text"))),
                    "thinking_delta" => out.push(StreamEvent::ThinkingDelta(s("thinking"))),
                    "signature_delta" => out.push(StreamEvent::SignatureDelta(s("signature"))),
                    "input_json_delta" if self.blocks.get(&index) == Some(&Block::Tool) => {
                        let f = s("partial_json");
                        if !f.is_empty() {
                            out.push(StreamEvent::ToolCallArgs { index, fragment: f });
                        }
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                if let Some(index) = index
                    && self.blocks.remove(&index) == Some(Block::Tool)
                {
                    out.push(StreamEvent::ToolCallEnd { index });
                }
            }
            "message_delta" => {
                if let Some(r) = v.at(&["delta", "stop_reason"]).and_then(Value::as_str) {
                    self.reason = Some(parse_finish(r));
                }
                if let Some(u) = v.get("usage") {
                    let mut n = parse_usage(u);
                    // message_delta usage is cumulative but may omit input.
                    if n.input == 0 {
                        n.input = self.usage.input;
                        n.cache_read = self.usage.cache_read;
                        n.cache_creation = self.usage.cache_creation;
                    }
                    self.usage = n;
                }
            }
            "message_stop" => self.end(out),
            "error" => {
                let message = v
                    .at(&["error", "message"])
                    .and_then(Value::as_str)
                    .unwrap_or("upstream error")
                    .to_string();
                let status = match v.at(&["error", "type"]).and_then(Value::as_str) {
                    Some("overloaded_error") => 529,
                    Some("rate_limit_error") => 429,
                    Some("invalid_request_error") => 400,
                    Some("authentication_error") => 401,
                    Some("permission_error") => 403,
                    Some("not_found_error") => 404,
                    _ => 500,
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
        let mut open: Vec<usize> = self
            .blocks
            .iter()
            .filter(|(_, b)| **b == Block::Tool)
            .map(|(i, _)| *i)
            .collect();
        open.sort_unstable();
        for index in open {
            out.push(StreamEvent::ToolCallEnd { index });
        }
        let reason = self
            .reason
            .or(self.saw_tool.then_some(FinishReason::ToolUse));
        out.push(StreamEvent::Finish {
            reason,
            usage: Some(self.usage),
        });
    }
}

/// The members of an upstream `content_block_delta` that
/// [`Decoder::plain_delta`] reads, typed as the usual event has them; a
/// member of another type or a repeated one fails the parse, and the
/// event goes to [`Decoder::value`]. Unread members are skipped unparsed.
#[derive(serde::Deserialize)]
struct RawDeltaEvent<'a> {
    #[serde(rename = "type", borrow)]
    ty: Borrowed<'a>,
    #[serde(default)]
    index: Option<u64>,
    #[serde(default, borrow)]
    delta: Option<RawBlockDelta<'a>>,
}

#[derive(serde::Deserialize)]
struct RawBlockDelta<'a> {
    #[serde(default, rename = "type", borrow)]
    ty: Option<Borrowed<'a>>,
    #[serde(default, borrow)]
    text: Option<Borrowed<'a>>,
    #[serde(default, borrow)]
    thinking: Option<Borrowed<'a>>,
    #[serde(default, borrow)]
    signature: Option<Borrowed<'a>>,
    #[serde(default, borrow)]
    partial_json: Option<Borrowed<'a>>,
}

// --------------------------------------------------------- client streams

/// Canonical events to an Anthropic client stream.
#[derive(Debug)]
pub struct Encoder {
    model: String,
    started: bool,
    open: Option<(Block, usize)>,
    next_index: usize,
    tool_blocks: HashMap<usize, usize>,
    saw_tool: bool,
    input_tokens: u64,
    finished: bool,
    stopped: bool,
}

/// Writes `event: <type>\ndata: <json>\n\n`.
pub fn write_event(v: &Value, out: &mut Vec<u8>) {
    let ty = v.get("type").and_then(Value::as_str).unwrap_or("message");
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(ty.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    // Straight into `out` (writing a `Value` to a `Vec` cannot fail):
    // `to_string` went through the formatting machinery into a String of
    // its own.
    let _ = serde_json::to_writer(&mut *out, v);
    out.extend_from_slice(b"\n\n");
}

/// The `content_block_delta` event of a text or thinking delta, written
/// as [`write_event`] writes it from a `Value` (members in name order)
/// without building one: an event is a stream's unit of work, and
/// building, writing and dropping a `Value` was most of its cost.
fn write_text_delta(kind: Block, index: usize, text: &str, out: &mut Vec<u8>) {
    let (member, ty): (&[u8], &[u8]) = if kind == Block::Text {
        (b"text", b"text_delta")
    } else {
        (b"thinking", b"thinking_delta")
    };
    out.extend_from_slice(b"event: content_block_delta\ndata: {\"delta\":{\"");
    out.extend_from_slice(member);
    out.extend_from_slice(b"\":");
    json::push_str(out, text);
    out.extend_from_slice(b",\"type\":\"");
    out.extend_from_slice(ty);
    out.extend_from_slice(b"\"},\"index\":");
    crate::decimal::push_decimal(out, index as u64);
    out.extend_from_slice(b",\"type\":\"content_block_delta\"}\n\n");
}

/// A `message_start` event for `model`.
pub fn message_start(model: &str, input_tokens: u64) -> Value {
    json!({"type": "message_start", "message": {
        "id": ids::new_id("msg_"), "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": input_tokens, "output_tokens": 0,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
    }})
}

impl Encoder {
    /// An encoder answering as `model`.
    pub fn new(model: &str) -> Self {
        Self {
            model: model.to_string(),
            started: false,
            open: None,
            next_index: 0,
            tool_blocks: HashMap::new(),
            saw_tool: false,
            input_tokens: 0,
            finished: false,
            stopped: false,
        }
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            write_event(&message_start(&self.model, self.input_tokens), out);
        }
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if let Some((_, i)) = self.open.take() {
            write_event(&json!({"type": "content_block_stop", "index": i}), out);
        }
    }

    fn open_block(&mut self, kind: Block, block: Value, out: &mut Vec<u8>) -> usize {
        self.close_block(out);
        let i = self.next_index;
        self.next_index += 1;
        self.open = Some((kind, i));
        write_event(
            &json!({"type": "content_block_start", "index": i, "content_block": block}),
            out,
        );
        i
    }

    fn delta(&mut self, kind: Block, text: &str, out: &mut Vec<u8>) {
        self.start(out);
        let i = match self.open {
            Some((k, i)) if k == kind => i,
            _ => {
                let block = if kind == Block::Text {
                    json!({"type": "text", "text": ""})
                } else {
                    json!({"type": "thinking", "thinking": "", "signature": ""})
                };
                self.open_block(kind, block, out)
            }
        };
        write_text_delta(kind, i, text, out);
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
            StreamEvent::TextDelta(t) if !t.is_empty() => self.delta(Block::Text, t, out),
            StreamEvent::ThinkingDelta(t) if !t.is_empty() => self.delta(Block::Thinking, t, out),
            StreamEvent::SignatureDelta(s) if !s.is_empty() => {
                if let Some((Block::Thinking, i)) = self.open {
                    write_event(
                        &json!({"type": "content_block_delta", "index": i, "delta": {"type": "signature_delta", "signature": s}}),
                        out,
                    );
                }
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.start(out);
                self.saw_tool = true;
                let id = id.as_deref().map_or_else(|| ids::new_id("toolu_"), tool_id);
                let block = json!({"type": "tool_use", "id": id, "name": name, "input": {}});
                let i = self.open_block(Block::Tool, block, out);
                self.tool_blocks.insert(*index, i);
            }
            StreamEvent::ToolCallArgs { index, fragment } => {
                // Deltas can only go to the open block; Anthropic has no
                // way to reopen one (OpenAI sends calls sequentially).
                if let (Some(&i), Some((Block::Tool, open))) =
                    (self.tool_blocks.get(index), self.open)
                    && i == open
                {
                    write_event(
                        &json!({"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": fragment}}),
                        out,
                    );
                }
            }
            StreamEvent::ToolCallEnd { index } => {
                if let (Some(&i), Some((Block::Tool, open))) =
                    (self.tool_blocks.get(index), self.open)
                    && i == open
                {
                    self.close_block(out);
                }
            }
            StreamEvent::Finish { reason, usage } => {
                self.start(out);
                self.close_block(out);
                let reason = match reason {
                    Some(FinishReason::Stop) | None if self.saw_tool => FinishReason::ToolUse,
                    Some(r) => *r,
                    None => FinishReason::Stop,
                };
                let mut u = usage.unwrap_or_default();
                if u.input == 0 {
                    u.input = self.input_tokens;
                }
                write_event(
                    &json!({"type": "message_delta",
                        "delta": {"stop_reason": finish_name(reason), "stop_sequence": null},
                        "usage": emit_usage(&u)}),
                    out,
                );
                write_event(&json!({"type": "message_stop"}), out);
                self.finished = true;
                self.stopped = true;
            }
            StreamEvent::Error { status, message } => {
                write_event(&super::errors::anthropic_error(*status, message), out);
                // An error event is terminal in Anthropic streams.
                self.finished = true;
                self.stopped = true;
            }
            _ => {}
        }
    }

    /// Ends the client stream with whatever framing is still missing.
    pub fn close(&mut self, out: &mut Vec<u8>) {
        if !self.stopped {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A text or thinking delta is written byte for byte as the `Value`
    /// of the event would be, escapes and all.
    #[test]
    fn a_delta_is_written_as_its_value_would_be() {
        for text in [
            "plain",
            "\"quoted\" \\ \n\t\u{1}\u{7f}",
            "é ✓ 🦀",
            "</script>",
            "\u{2028}",
        ] {
            for (kind, member, ty) in [
                (Block::Text, "text", "text_delta"),
                (Block::Thinking, "thinking", "thinking_delta"),
            ] {
                for index in [0, 7, 123_456] {
                    let (mut fast, mut slow) = (Vec::new(), Vec::new());
                    write_text_delta(kind, index, text, &mut fast);
                    write_event(
                        &json!({"type": "content_block_delta", "index": index,
                                "delta": {"type": ty, member: text}}),
                        &mut slow,
                    );
                    assert_eq!(
                        String::from_utf8(fast).unwrap(),
                        String::from_utf8(slow).unwrap()
                    );
                }
            }
        }
    }

    #[test]
    fn default_max_tokens_per_model() {
        assert_eq!(default_max_tokens("claude-sonnet-4-20250514"), 64_000);
        assert_eq!(default_max_tokens("claude-opus-4-1-20250805"), 32_000);
        assert_eq!(default_max_tokens("claude-opus-4-5"), 64_000);
        assert_eq!(default_max_tokens("claude-3-haiku-20240307"), 4096);
        assert_eq!(default_max_tokens("claude-3-5-sonnet-20241022"), 8192);
    }

    #[test]
    fn request_blocks_and_params() {
        let req = parse_request(&json!({
            "model": "m", "max_tokens": 5, "system": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "hi"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA"}},
                {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "r"}], "is_error": true}
            ]}],
            "thinking": {"type": "enabled", "budget_tokens": 2000},
            "tool_choice": {"type": "tool", "name": "f"}
        }))
        .unwrap();
        assert_eq!(req.system, vec!["a", "b"]);
        assert_eq!(req.reasoning, Some(Reasoning::Budget(2000)));
        assert_eq!(req.tool_choice, Some(ToolChoice::Tool("f".into())));
        let out = emit_request(&req, "claude-x", false);
        // tool_result first, thinking budget shrunk below the client's cap
        // is impossible (5 < 1024), so thinking is dropped.
        assert_eq!(out["messages"][0]["content"][0]["type"], "tool_result");
        assert_eq!(out["messages"][0]["content"][0]["is_error"], true);
        assert!(out.get("thinking").is_none());
        assert_eq!(out["system"], "a\nb");
        assert!(parse_request(&json!({"messages": [{"role": "tool", "content": "x"}]})).is_err());
    }

    #[test]
    fn system_turns_stay_in_place() {
        let body = json!({"model": "m", "system": "top", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "system", "content": [{"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
            {"role": "system", "content": "between"},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "r"}]},
        ]});
        let req = parse_request(&body).unwrap();
        assert_eq!(req.system, ["top"]);
        assert_eq!(req.messages[1].role, Role::System);
        assert_eq!(
            req.messages[1].parts,
            [Part::Text("a".into()), Part::Text("b".into())]
        );
        // Re-emitted for Anthropic: in place, except that the one between
        // a call and its result waits for the result.
        let out = emit_request(&req, "claude-x", false);
        let roles: Vec<&str> = out["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["user", "system", "assistant", "user", "system"]);
        assert_eq!(out["system"], "top");
        // Leading system turns become the system prompt.
        let lead = parse_request(&json!({"messages": [
            {"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}))
        .unwrap();
        let out = emit_request(&lead, "claude-x", false);
        assert_eq!(out["system"], "s");
        assert_eq!(out["messages"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn structured_output_both_ways() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}});
        for body in [
            json!({"messages": [], "output_config": {"format": {"type": "json_schema", "schema": schema}}}),
            json!({"messages": [], "output_format": {"type": "json_schema", "schema": schema}}),
        ] {
            let req = parse_request(&body).unwrap();
            assert_eq!(
                req.response_format,
                Some(ResponseFormat::JsonSchema(schema.clone()))
            );
            let out = emit_request(&req, "claude-x", false);
            assert_eq!(out["output_config"]["format"]["schema"], schema);
        }
    }

    #[test]
    fn tool_ids_are_sanitised() {
        assert_eq!(tool_id("call:1.2"), "call_1_2");
        assert_eq!(tool_id("toolu_ok-1"), "toolu_ok-1");
    }

    #[test]
    fn usage_splits_cache() {
        let u = parse_usage(
            &json!({"input_tokens": 10, "output_tokens": 2, "cache_read_input_tokens": 5}),
        );
        assert_eq!(u.input, 15);
        assert_eq!(emit_usage(&u)["input_tokens"], 10);
    }

    #[test]
    fn encoder_closes_truncated_stream() {
        let mut e = Encoder::new("m");
        let mut out = Vec::new();
        e.event(&StreamEvent::TextDelta("hi".into()), &mut out);
        e.close(&mut out);
        e.close(&mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("event: message_start"));
        assert!(s.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
        assert_eq!(s.matches("message_stop").count(), 2);
    }
}
