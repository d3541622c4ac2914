//! OpenAI chat completions: requests, answers and streams to and from the
//! canonical model.
//!
//! The stream encoder is where OpenAI clients' expectations are enforced:
//! one id per stream, `delta.role` on the first
//! chunk, tool-call indices counted from 0, usage only on the final chunk
//! and exactly one `data: [DONE]` at the very end.

use crate::protocol::Lookup as _;
use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::ConvertError;
use super::canonical::{
    ChatRequest, ChatResponse, Effort, FinishReason, Media, Message, Part, Reasoning,
    ResponseFormat, Role, StreamEvent, TokenUsage, Tool, ToolCall, ToolChoice, ToolResult,
    as_number, as_u64, joined_text, mime_from_name, parse_arguments, parse_data_uri,
    split_thinking_tags, system_after_results, text_lines, text_of,
};
use super::json::{Borrowed, First};
use super::{anthropic, gemini, ids, schema};

fn bad(msg: impl Into<String>) -> ConvertError {
    ConvertError {
        message: msg.into(),
    }
}

// ---------------------------------------------------------------- requests

/// Parses an OpenAI chat completions request.
pub fn parse_request(body: &Value) -> Result<ChatRequest, ConvertError> {
    let obj = body
        .as_object()
        .ok_or_else(|| bad("Request body must be a JSON object"))?;
    let msgs = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("`messages` must be an array"))?;
    let mut req = ChatRequest::default();
    for (i, m) in msgs.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("messages[{i}].role must be a string")))?;
        match role {
            "system" | "developer" => {
                if let Some(t) = text_of(m.get("content")).filter(|t| !t.is_empty()) {
                    req.system.push(t);
                }
            }
            "user" => {
                let parts = user_parts(m.get("content"));
                req.messages.push(Message {
                    role: Role::User,
                    parts,
                });
            }
            "assistant" => req.messages.push(Message {
                role: Role::Assistant,
                parts: assistant_parts(m),
            }),
            "tool" | "function" => {
                let id = m
                    .get("tool_call_id")
                    .or_else(|| m.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let content = super::canonical::result_text(m.get("content"));
                req.messages.push(Message {
                    role: Role::User,
                    parts: vec![Part::ToolResult(ToolResult {
                        id,
                        content,
                        is_error: false,
                    })],
                });
            }
            other => {
                return Err(bad(format!(
                    "messages[{i}].role {other:?} is not supported"
                )));
            }
        }
    }
    req.messages.retain(|m| !m.parts.is_empty());

    if let Some(tools) = obj.get("tools").and_then(Value::as_array) {
        for t in tools {
            if let Some(f) = t.get("function") {
                let Some(name) = f.get("name").and_then(Value::as_str) else {
                    continue;
                };
                req.tools.push(Tool {
                    name: name.to_string(),
                    description: f
                        .get("description")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    schema: f.get("parameters").cloned().unwrap_or_else(empty_schema),
                });
            } else if let Some(b) = gemini::builtin_tool(t) {
                req.builtin_tools.push(b);
            }
        }
    }
    req.tool_choice = match obj.get("tool_choice") {
        Some(Value::String(s)) => match s.as_str() {
            "none" => Some(ToolChoice::None),
            "required" => Some(ToolChoice::Any),
            "auto" => Some(ToolChoice::Auto),
            _ => None,
        },
        Some(v @ Value::Object(_)) => v
            .at(&["function", "name"])
            .and_then(Value::as_str)
            .map(|n| ToolChoice::Tool(n.to_string())),
        _ => None,
    };
    req.max_tokens =
        as_u64(obj.get("max_completion_tokens")).or_else(|| as_u64(obj.get("max_tokens")));
    req.temperature = as_number(obj.get("temperature"));
    req.top_p = as_number(obj.get("top_p"));
    req.top_k = as_number(obj.get("top_k"));
    req.stop = match obj.get("stop") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    req.reasoning = match obj.get("reasoning_effort").and_then(Value::as_str) {
        Some("none") => Some(Reasoning::Disabled),
        Some("auto") => Some(Reasoning::Adaptive),
        Some(e) => Effort::parse(e).map(Reasoning::Effort),
        None => None,
    }
    .or_else(|| {
        obj.get("extra_body")
            .and_then(|e| e.at(&["anthropic", "thinking"]))
            .and_then(anthropic::parse_thinking)
    })
    .or_else(|| {
        obj.get("extra_body")
            .and_then(|e| e.at(&["google", "thinking_config"]))
            .and_then(gemini::parse_thinking)
    });
    req.response_format = match obj.get("response_format") {
        Some(rf) => match rf.get("type").and_then(Value::as_str) {
            Some("json_object") => Some(ResponseFormat::JsonObject),
            Some("json_schema") => rf
                .at(&["json_schema", "schema"])
                .map(|s| ResponseFormat::JsonSchema(s.clone())),
            _ => None,
        },
        None => None,
    };
    Ok(req)
}

fn empty_schema() -> Value {
    json!({"type": "object", "properties": {}})
}

fn user_parts(content: Option<&Value>) -> Vec<Part> {
    let mut parts = Vec::new();
    match content {
        Some(Value::String(s)) if !s.is_empty() => parts.push(Part::Text(s.clone())),
        Some(Value::Array(items)) => {
            for item in items {
                if let Some(p) = content_part(item) {
                    parts.push(p);
                }
            }
        }
        _ => {}
    }
    parts
}

fn content_part(item: &Value) -> Option<Part> {
    if let Value::String(s) = item {
        return Some(Part::Text(s.clone()));
    }
    match item.get("type").and_then(Value::as_str)? {
        "text" | "input_text" => {
            let t = item.get("text").and_then(Value::as_str)?;
            (!t.is_empty()).then(|| Part::Text(t.to_string()))
        }
        "image_url" => {
            let url = item
                .get("image_url")
                .and_then(|u| u.get("url").or(Some(u)))
                .and_then(Value::as_str)?;
            Some(Part::Media(media_from_url(url)))
        }
        "input_audio" => {
            let fmt = item
                .at(&["input_audio", "format"])
                .and_then(Value::as_str)
                .unwrap_or("unknown");
            Some(Part::Text(format!("[Audio Input: {fmt}]")))
        }
        "audio" => {
            let url = item
                .at(&["audio", "url"])
                .and_then(Value::as_str)
                .unwrap_or("");
            Some(Part::Text(format!("[Audio: {url}]")))
        }
        "file" => {
            let f = item.get("file")?;
            let name = f.get("filename").and_then(Value::as_str).unwrap_or("");
            let data = f.get("file_data").and_then(Value::as_str)?;
            if let Some((mime, data)) = parse_data_uri(data) {
                return Some(Part::Media(Media::Base64 { mime, data }));
            }
            let mime = mime_from_name(name).unwrap_or("application/octet-stream");
            Some(Part::Media(Media::Base64 {
                mime: mime.to_string(),
                data: data.to_string(),
            }))
        }
        _ => None,
    }
}

fn media_from_url(url: &str) -> Media {
    match parse_data_uri(url) {
        Some((mime, data)) => Media::Base64 { mime, data },
        None => Media::Url {
            mime: mime_from_name(url).map(str::to_string),
            url: url.to_string(),
        },
    }
}

fn assistant_parts(m: &Value) -> Vec<Part> {
    let mut parts = Vec::new();
    if let Some(r) = m
        .get("reasoning_content")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
    {
        parts.push(Part::Thinking {
            text: r.to_string(),
            signature: None,
        });
    }
    match m.get("content") {
        Some(Value::String(s)) if !s.is_empty() => parts.push(Part::Text(s.clone())),
        Some(Value::Array(items)) => {
            for item in items {
                if let Some(p @ Part::Text(_)) = content_part(item) {
                    parts.push(p);
                }
            }
        }
        _ => {}
    }
    if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
        for c in calls {
            let Some(name) = c.at(&["function", "name"]).and_then(Value::as_str) else {
                continue;
            };
            parts.push(Part::ToolUse(ToolCall {
                id: c
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                name: name.to_string(),
                input: parse_arguments(c.at(&["function", "arguments"])),
            }));
        }
    }
    parts
}

/// Builds an OpenAI request for `model`.
pub fn emit_request(req: &ChatRequest, model: &str, stream: bool) -> Value {
    serde_json::to_value(Request::of(req, model, stream)).unwrap_or_default()
}

/// The bytes of [`emit_request`], written straight from the canonical
/// request without building a `Value` tree first, into a buffer of
/// `size_hint` bytes to start with (the client's body length is a good
/// guess; it grows as needed).
pub fn emit_request_bytes(
    req: &ChatRequest,
    model: &str,
    stream: bool,
    size_hint: usize,
) -> Vec<u8> {
    super::json_bytes(&Request::of(req, model, stream), size_hint)
}

/// An OpenAI request as written. Members are in alphabetical order, the
/// order a `Value`'s map writes them in, so both renderings of
/// [`emit_request`] give the same bytes.
#[derive(serde::Serialize)]
struct Request<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    messages: Vec<OutMessage<'a>>,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_effort: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<Value>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<&'a serde_json::Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<&'a serde_json::Number>,
}

#[derive(serde::Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// A message of a request: the common text turn written from the
/// canonical text without a copy, anything else as a `Value`.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum OutMessage<'a> {
    Text {
        content: std::borrow::Cow<'a, str>,
        role: &'static str,
    },
    Other(Value),
}

impl<'a> Request<'a> {
    fn of(req: &'a ChatRequest, model: &'a str, stream: bool) -> Self {
        let mut messages = Vec::with_capacity(req.messages.len() + 1);
        if !req.system.is_empty() {
            messages.push(OutMessage::Text {
                content: req.system.join("\n").into(),
                role: "system",
            });
        }
        let thinking_on = req.reasoning.is_some_and(Reasoning::enabled);
        for m in system_after_results(&req.messages) {
            match m.role {
                Role::Assistant => {
                    messages.push(OutMessage::Other(assistant_message(&m.parts, thinking_on)))
                }
                Role::User => user_messages(&m.parts, &mut messages),
                Role::System => messages.push(OutMessage::Text {
                    content: text_lines(&m.parts).into(),
                    role: "system",
                }),
            }
        }
        drop_unanswered_calls(&mut messages);
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let f = t.declaration("parameters", schema::for_openai(&t.schema));
                json!({"type": "function", "function": f})
            })
            .collect();
        let tool_choice =
            req.tool_choice
                .as_ref()
                .filter(|_| !tools.is_empty())
                .map(|tc| match tc {
                    ToolChoice::Auto => json!("auto"),
                    ToolChoice::None => json!("none"),
                    ToolChoice::Any => json!("required"),
                    ToolChoice::Tool(n) => json!({"type": "function", "function": {"name": n}}),
                });
        // Reasoning models only accept the newer name.
        let (max_completion_tokens, max_tokens) = if thinking_on {
            (req.max_tokens, None)
        } else {
            (None, req.max_tokens)
        };
        Request {
            max_completion_tokens,
            max_tokens,
            messages,
            model,
            reasoning_effort: match req.reasoning {
                Some(Reasoning::Budget(b)) => Some(Effort::from_budget(b).name()),
                Some(Reasoning::Effort(e)) => Some(e.name()),
                Some(Reasoning::Adaptive) => Some("medium"),
                Some(Reasoning::Disabled) | None => None,
            },
            response_format: req.response_format.as_ref().map(|f| match f {
                ResponseFormat::JsonObject => json!({"type": "json_object"}),
                ResponseFormat::JsonSchema(s) => {
                    json!({"type": "json_schema", "json_schema": {"name": "response", "schema": s}})
                }
            }),
            stop: &req.stop,
            stream,
            stream_options: stream.then_some(StreamOptions {
                include_usage: true,
            }),
            temperature: req.temperature.as_ref(),
            tool_choice,
            tools,
            top_p: req.top_p.as_ref(),
        }
    }
}

fn assistant_message(parts: &[Part], thinking_on: bool) -> Value {
    let text = joined_text(parts);
    let reasoning: Vec<&str> = parts
        .iter()
        .filter_map(|p| match p {
            Part::Thinking { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    let calls: Vec<Value> = parts
        .iter()
        .filter_map(|p| match p {
            Part::ToolUse(c) => Some(json!({
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.input.to_string()},
            })),
            _ => None,
        })
        .collect();
    let mut msg = Map::new();
    msg.insert("role".into(), json!("assistant"));
    msg.insert("content".into(), json!(text));
    if !reasoning.is_empty() || (thinking_on && !calls.is_empty()) {
        msg.insert("reasoning_content".into(), json!(reasoning.join("\n")));
    }
    if !calls.is_empty() {
        msg.insert("tool_calls".into(), Value::Array(calls));
    }
    Value::Object(msg)
}

fn user_messages<'a>(parts: &'a [Part], out: &mut Vec<OutMessage<'a>>) {
    let mut rest = Vec::new();
    for p in parts {
        match p {
            Part::ToolResult(r) => out.push(OutMessage::Other(
                json!({"role": "tool", "tool_call_id": r.id, "content": r.content}),
            )),
            Part::Text(_) | Part::Media(_) | Part::ToolUse(_) => rest.push(p),
            Part::Thinking { .. } | Part::RedactedThinking(_) => {}
        }
    }
    if let [Part::Text(t)] = rest.as_slice() {
        out.push(OutMessage::Text {
            content: t.as_str().into(),
            role: "user",
        });
        return;
    }
    let mut content: Vec<Value> = rest
        .iter()
        .filter_map(|p| match p {
            Part::Text(t) => Some(json!({"type": "text", "text": t})),
            Part::Media(m) => Some(media_part(m)),
            Part::ToolUse(c) => {
                Some(json!({"type": "text", "text": format!("[Tool use: {}]", c.name)}))
            }
            _ => None,
        })
        .collect();
    if content.is_empty() {
        return;
    }
    let all_text = content
        .iter()
        .all(|p| p.get("type") == Some(&json!("text")));
    let content = if all_text && content.len() == 1 {
        content
            .swap_remove(0)
            .get("text")
            .cloned()
            .unwrap_or_default()
    } else {
        Value::Array(content)
    };
    out.push(OutMessage::Other(
        json!({"role": "user", "content": content}),
    ));
}

fn media_part(m: &Media) -> Value {
    match m {
        Media::Base64 { mime, data } if mime.starts_with("image/") => {
            json!({"type": "image_url", "image_url": {"url": format!("data:{mime};base64,{data}")}})
        }
        Media::Base64 { mime, data } => {
            let ext = mime.rsplit('/').next().unwrap_or("bin");
            json!({"type": "file", "file": {"filename": format!("file.{ext}"), "file_data": format!("data:{mime};base64,{data}")}})
        }
        Media::Url { url, .. } if m.is_image() => {
            json!({"type": "image_url", "image_url": {"url": url}})
        }
        Media::Url { mime, url } => {
            let kind = if mime.as_deref().is_some_and(|m| m.starts_with("audio/")) {
                "Audio file"
            } else {
                "File"
            };
            json!({"type": "text", "text": format!("[{kind}: {url}]")})
        }
    }
}

/// OpenAI rejects an assistant `tool_calls` id that no later `tool` message
/// answers, so such ids are removed, and `tool_calls` with them when none
/// is left.
fn drop_unanswered_calls(messages: &mut [OutMessage<'_>]) {
    let values = || {
        messages.iter().filter_map(|m| match m {
            OutMessage::Other(v) => Some(v),
            OutMessage::Text { .. } => None,
        })
    };
    let answered: std::collections::HashSet<String> = values()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("tool"))
        .filter_map(|m| {
            m.get("tool_call_id")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    for m in messages.iter_mut() {
        let OutMessage::Other(Value::Object(obj)) = m else {
            continue;
        };
        let Some(Value::Array(calls)) = obj.get_mut("tool_calls") else {
            continue;
        };
        calls.retain(|c| {
            c.get("id")
                .and_then(Value::as_str)
                .is_some_and(|id| answered.contains(id))
        });
        if calls.is_empty() {
            obj.remove("tool_calls");
        }
    }
}

// --------------------------------------------------------------- responses

/// OpenAI `finish_reason` to canonical.
pub fn parse_finish(s: &str) -> FinishReason {
    match s {
        "stop" => FinishReason::Stop,
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolUse,
        "content_filter" => FinishReason::ContentFilter,
        _ => FinishReason::Other,
    }
}

/// Canonical to OpenAI `finish_reason`.
pub fn finish_name(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop | FinishReason::StopSequence | FinishReason::Other => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolUse => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
    }
}

/// Reads an OpenAI `usage` object.
pub fn parse_usage(u: &Value) -> TokenUsage {
    TokenUsage {
        input: as_u64(u.get("prompt_tokens")).unwrap_or(0),
        output: as_u64(u.get("completion_tokens")).unwrap_or(0),
        cache_read: as_u64(u.at(&["prompt_tokens_details", "cached_tokens"])).unwrap_or(0),
        cache_creation: 0,
        reasoning: as_u64(u.at(&["completion_tokens_details", "reasoning_tokens"])).unwrap_or(0),
    }
}

/// Renders an OpenAI `usage` object.
pub fn emit_usage(u: &TokenUsage) -> Value {
    let mut o = Map::new();
    o.insert("prompt_tokens".into(), json!(u.input));
    o.insert("completion_tokens".into(), json!(u.output));
    o.insert("total_tokens".into(), json!(u.input + u.output));
    if u.cache_read > 0 {
        o.insert(
            "prompt_tokens_details".into(),
            json!({"cached_tokens": u.cache_read}),
        );
    }
    if u.reasoning > 0 {
        o.insert(
            "completion_tokens_details".into(),
            json!({"reasoning_tokens": u.reasoning}),
        );
    }
    Value::Object(o)
}

/// Parses a whole OpenAI answer.
pub fn parse_response(body: &Value) -> Result<ChatResponse, ConvertError> {
    let choice = body
        .at(&["choices", "0"])
        .ok_or_else(|| bad("OpenAI response has no choices"))?;
    let msg = choice.get("message").unwrap_or(&Value::Null);
    Ok(answer_from(AnswerFields {
        id: body.get("id").and_then(Value::as_str),
        reasoning: msg
            .get("reasoning_content")
            .or_else(|| msg.get("reasoning"))
            .and_then(Value::as_str),
        text: text_of(msg.get("content")).unwrap_or_default(),
        tool_calls: msg.get("tool_calls"),
        finish_reason: choice.get("finish_reason").and_then(Value::as_str),
        usage: body.get("usage").map(parse_usage).unwrap_or_default(),
    }))
}

/// [`parse_response`] straight from the bytes of an answer in the usual
/// shape, into typed members (only `tool_calls` becomes a `Value`); the
/// rest is skipped unparsed. `None` for any other shape (not JSON, a
/// member of an unexpected type, `content` as an array of parts, a
/// repeated member): the caller then parses it whole.
pub fn parse_response_slice(body: &[u8]) -> Option<Result<ChatResponse, ConvertError>> {
    let mut raw: RawAnswer = super::json::from_bytes(body).ok()?;
    let Some(choice) = raw.choices.as_mut().and_then(|c| c.first_mut()) else {
        return Some(Err(bad("OpenAI response has no choices")));
    };
    let text = choice.message.as_mut().and_then(|m| m.content.take());
    let msg = choice.message.as_ref();
    Some(Ok(answer_from(AnswerFields {
        id: raw.id.as_ref().map(|id| &*id.0),
        // A present `null` wins over the other name, as `Value::get`
        // finds it.
        reasoning: msg
            .and_then(|m| m.reasoning_content.as_ref().or(m.reasoning.as_ref()))
            .and_then(Option::as_deref),
        text: text.unwrap_or_default(),
        tool_calls: msg.and_then(|m| m.tool_calls.as_ref()),
        finish_reason: choice.finish_reason.as_ref().map(|f| &*f.0),
        usage: raw.usage.map(RawUsage::tokens).unwrap_or_default(),
    })))
}

/// The members of an OpenAI answer the conversion reads.
struct AnswerFields<'v> {
    id: Option<&'v str>,
    /// `reasoning_content`, else `reasoning`.
    reasoning: Option<&'v str>,
    /// The text of `content`.
    text: String,
    tool_calls: Option<&'v Value>,
    finish_reason: Option<&'v str>,
    usage: TokenUsage,
}

fn answer_from(f: AnswerFields<'_>) -> ChatResponse {
    let mut parts = Vec::new();
    if let Some(r) = f.reasoning.filter(|r| !r.is_empty()) {
        parts.push(Part::Thinking {
            text: r.to_string(),
            signature: None,
        });
    }
    if f.text.contains("<thinking>") {
        parts.extend(split_thinking_tags(&f.text));
        // Thinking spans found inside the text go before it (Claude's order).
        parts.sort_by_key(|p| !matches!(p, Part::Thinking { .. }));
    } else if !f.text.is_empty() {
        parts.push(Part::Text(f.text));
    }
    if let Some(calls) = f.tool_calls {
        parts.extend(assistant_parts(&json!({ "tool_calls": calls })));
    }
    let mut finish = f.finish_reason.map_or(FinishReason::Stop, parse_finish);
    if finish == FinishReason::Stop && parts.iter().any(|p| matches!(p, Part::ToolUse(_))) {
        finish = FinishReason::ToolUse;
    }
    ChatResponse {
        id: f.id.map(str::to_string),
        parts,
        finish,
        usage: f.usage,
    }
}

/// The members of an OpenAI answer the conversion reads, typed as they
/// usually are; a member of another type fails the whole parse. Short
/// strings are borrowed from the body when they hold no escape.
#[derive(serde::Deserialize)]
struct RawAnswer<'a> {
    #[serde(default, borrow)]
    id: Option<Borrowed<'a>>,
    #[serde(borrow)]
    choices: Option<Vec<RawChoice<'a>>>,
    #[serde(default)]
    usage: Option<RawUsage>,
}

#[derive(serde::Deserialize)]
struct RawChoice<'a> {
    message: Option<RawMessage>,
    #[serde(default, borrow)]
    finish_reason: Option<Borrowed<'a>>,
}

#[derive(serde::Deserialize)]
struct RawMessage {
    /// `Some(None)`: present as `null`.
    #[serde(default, deserialize_with = "present")]
    reasoning_content: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    reasoning: Option<Option<String>>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Value>,
}

/// A member that is there, `null` included.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// An OpenAI `usage` object, read as [`parse_usage`] reads it.
#[derive(serde::Deserialize)]
struct RawUsage {
    #[serde(default)]
    prompt_tokens: Option<serde_json::Number>,
    #[serde(default)]
    completion_tokens: Option<serde_json::Number>,
    #[serde(default)]
    prompt_tokens_details: Option<RawDetails>,
    #[serde(default)]
    completion_tokens_details: Option<RawDetails>,
}

#[derive(serde::Deserialize)]
struct RawDetails {
    #[serde(default)]
    cached_tokens: Option<serde_json::Number>,
    #[serde(default)]
    reasoning_tokens: Option<serde_json::Number>,
}

impl RawUsage {
    fn tokens(self) -> TokenUsage {
        let count = |n: Option<serde_json::Number>| as_u64(n.map(Value::Number).as_ref());
        TokenUsage {
            input: count(self.prompt_tokens).unwrap_or(0),
            output: count(self.completion_tokens).unwrap_or(0),
            cache_read: count(self.prompt_tokens_details.and_then(|d| d.cached_tokens))
                .unwrap_or(0),
            cache_creation: 0,
            reasoning: count(
                self.completion_tokens_details
                    .and_then(|d| d.reasoning_tokens),
            )
            .unwrap_or(0),
        }
    }
}

/// Renders a whole OpenAI answer.
pub fn emit_response(resp: &ChatResponse, model: &str) -> Value {
    let text = joined_text(&resp.parts);
    let reasoning: Vec<&str> = resp
        .parts
        .iter()
        .filter_map(|p| match p {
            Part::Thinking { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    let calls: Vec<Value> = resp
        .parts
        .iter()
        .filter_map(|p| match p {
            Part::ToolUse(c) => Some(json!({
                "id": if c.id.is_empty() { ids::new_id("call_") } else { c.id.clone() },
                "type": "function",
                "function": {"name": c.name, "arguments": c.input.to_string()},
            })),
            _ => None,
        })
        .collect();
    let mut msg = Map::new();
    msg.insert("role".into(), json!("assistant"));
    msg.insert(
        "content".into(),
        if text.is_empty() && !calls.is_empty() {
            Value::Null
        } else {
            json!(text)
        },
    );
    if !reasoning.is_empty() {
        msg.insert("reasoning_content".into(), json!(reasoning.join("\n")));
    }
    if !calls.is_empty() {
        msg.insert("tool_calls".into(), Value::Array(calls));
    }
    json!({
        "id": ids::new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": ids::unix_now(),
        "model": model,
        "choices": [{"index": 0, "message": msg, "finish_reason": finish_name(resp.finish)}],
        "usage": emit_usage(&resp.usage),
    })
}

// ------------------------------------------------------- upstream streams

/// Turns upstream OpenAI chunks into canonical events. The finish is held
/// back until `[DONE]` (or the end of input) because usage arrives in a
/// separate chunk after the one carrying `finish_reason`.
#[derive(Debug, Default)]
pub struct Decoder {
    started: bool,
    finished: bool,
    open_calls: Vec<usize>,
    known_calls: Vec<usize>,
    reason: Option<FinishReason>,
    usage: Option<TokenUsage>,
}

impl Decoder {
    /// Whether a `finish_reason` (or `[DONE]`) has arrived.
    pub fn saw_finish_reason(&self) -> bool {
        self.reason.is_some() || self.finished
    }

    /// Decodes one `data:` payload.
    pub fn event(&mut self, data: &str, out: &mut Vec<StreamEvent>) {
        if data.trim() == "[DONE]" {
            self.end(out);
            return;
        }
        if self.finished || self.plain(data, out) {
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        self.value(&v, out);
    }

    /// [`Decoder::value`] for a chunk of the usual shape, read into typed
    /// members without building a [`Value`] (building, reading and
    /// dropping one was most of a converted event's cost). False,
    /// having decoded nothing, for a chunk it leaves to `value`: not of
    /// that shape (see [`RawChunk`]), an error, or usage on the first
    /// chunk (where `value` reads `prompt_tokens` its own way).
    pub(super) fn plain(&mut self, data: &str, out: &mut Vec<StreamEvent>) -> bool {
        let Ok(raw) = serde_json::from_str::<RawChunk>(data) else {
            return false;
        };
        let choice = raw.choices.and_then(|c| c.0);
        let delta = choice.as_ref().and_then(|c| c.delta.as_ref());
        if raw.error.is_some() || (!self.started && raw.usage.is_some()) {
            return false;
        }
        self.start(None, out);
        if let Some(u) = raw.usage {
            self.usage = Some(u.tokens());
        }
        let Some(choice) = &choice else {
            return true;
        };
        if let Some(d) = delta {
            // A present `null` wins over the other name, as `Value::get`
            // finds it.
            let reasoning = d.reasoning_content.as_ref().or(d.reasoning.as_ref());
            Self::deltas(
                reasoning.and_then(Option::as_ref).map(|r| &*r.0),
                d.content.as_ref().map(|c| &*c.0),
                out,
            );
            for (pos, c) in d.tool_calls.iter().flatten().enumerate() {
                let function = c.function.as_ref();
                self.call_delta(
                    c.index.map_or(pos, |i| i as usize),
                    c.id.as_ref().map(|i| &*i.0),
                    function.and_then(|f| f.name.as_ref()).map(|n| &*n.0),
                    function.and_then(|f| f.arguments.as_ref()).map(|a| &*a.0),
                    out,
                );
            }
        }
        if let Some(r) = &choice.finish_reason {
            self.finish_reason(&r.0, out);
        }
        true
    }

    fn start(&mut self, input_tokens: Option<u64>, out: &mut Vec<StreamEvent>) {
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start { input_tokens });
        }
    }

    fn deltas(reasoning: Option<&str>, content: Option<&str>, out: &mut Vec<StreamEvent>) {
        if let Some(r) = reasoning.filter(|r| !r.is_empty()) {
            out.push(StreamEvent::ThinkingDelta(r.to_string()));
        }
        if let Some(t) = content.filter(|t| !t.is_empty()) {
            out.push(StreamEvent::TextDelta(t.to_string()));
        }
    }

    /// One entry of a chunk's `tool_calls`: the call at `index` starts
    /// (it has a name and was not seen before) and takes `arguments`.
    fn call_delta(
        &mut self,
        index: usize,
        id: Option<&str>,
        name: Option<&str>,
        arguments: Option<&str>,
        out: &mut Vec<StreamEvent>,
    ) {
        if !self.known_calls.contains(&index) {
            let Some(name) = name else { return };
            // OpenAI sends parallel calls one after another; a new one
            // means the previous ones are complete.
            for open in self.open_calls.drain(..) {
                out.push(StreamEvent::ToolCallEnd { index: open });
            }
            self.known_calls.push(index);
            self.open_calls.push(index);
            out.push(StreamEvent::ToolCallStart {
                index,
                id: id.map(str::to_string),
                name: name.to_string(),
            });
        }
        if let Some(a) = arguments.filter(|a| !a.is_empty())
            && self.open_calls.contains(&index)
        {
            out.push(StreamEvent::ToolCallArgs {
                index,
                fragment: a.to_string(),
            });
        }
    }

    fn finish_reason(&mut self, reason: &str, out: &mut Vec<StreamEvent>) {
        self.reason = Some(parse_finish(reason));
        for open in self.open_calls.drain(..) {
            out.push(StreamEvent::ToolCallEnd { index: open });
        }
    }

    /// Decodes one parsed chunk.
    pub fn value(&mut self, v: &Value, out: &mut Vec<StreamEvent>) {
        if self.finished {
            return;
        }
        if let Some(e) = v.get("error") {
            let message = e
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| e.to_string(), str::to_string);
            let status = as_u64(e.get("code"))
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(500);
            out.push(StreamEvent::Error { status, message });
            self.finished = true;
            return;
        }
        if !self.started {
            let input_tokens = v
                .at(&["usage", "prompt_tokens"])
                .and_then(Value::as_u64)
                .filter(|n| *n > 0);
            self.start(input_tokens, out);
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(parse_usage(u));
        }
        let Some(choice) = v.at(&["choices", "0"]) else {
            return;
        };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        let reasoning = delta
            .get("reasoning_content")
            .or_else(|| delta.get("reasoning"));
        Self::deltas(
            reasoning.and_then(Value::as_str),
            delta.get("content").and_then(Value::as_str),
            out,
        );
        if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
            for (pos, c) in calls.iter().enumerate() {
                self.call_delta(
                    c.get("index")
                        .and_then(Value::as_u64)
                        .map_or(pos, |i| i as usize),
                    c.get("id").and_then(Value::as_str),
                    c.at(&["function", "name"]).and_then(Value::as_str),
                    c.at(&["function", "arguments"]).and_then(Value::as_str),
                    out,
                );
            }
        }
        if let Some(r) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason(r, out);
        }
    }

    /// The upstream ended (with or without `[DONE]`).
    pub fn end(&mut self, out: &mut Vec<StreamEvent>) {
        if self.finished {
            return;
        }
        self.finished = true;
        for open in self.open_calls.drain(..) {
            out.push(StreamEvent::ToolCallEnd { index: open });
        }
        let mut reason = self.reason;
        if reason.is_none() && !self.known_calls.is_empty() {
            reason = Some(FinishReason::ToolUse);
        }
        out.push(StreamEvent::Finish {
            reason,
            usage: self.usage,
        });
    }
}

/// The members of an upstream stream chunk [`Decoder::plain`] reads,
/// typed as the usual chunk has them; a member of another type or a
/// repeated one fails the parse, and the chunk goes to [`Decoder::value`].
/// Unread members are skipped unparsed.
#[derive(serde::Deserialize)]
struct RawChunk<'a> {
    #[serde(default, borrow)]
    choices: Option<First<RawChunkChoice<'a>>>,
    #[serde(default)]
    usage: Option<RawUsage>,
    #[serde(default, deserialize_with = "present")]
    error: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct RawChunkChoice<'a> {
    #[serde(default, borrow)]
    delta: Option<RawDelta<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<Borrowed<'a>>,
}

#[derive(serde::Deserialize)]
struct RawDelta<'a> {
    /// `Some(None)`: present as `null`.
    #[serde(default, borrow, deserialize_with = "present")]
    reasoning_content: Option<Option<Borrowed<'a>>>,
    #[serde(default, borrow, deserialize_with = "present")]
    reasoning: Option<Option<Borrowed<'a>>>,
    #[serde(default, borrow)]
    content: Option<Borrowed<'a>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<RawCallDelta<'a>>>,
}

#[derive(serde::Deserialize)]
struct RawCallDelta<'a> {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default, borrow)]
    id: Option<Borrowed<'a>>,
    #[serde(default, borrow)]
    function: Option<RawFunctionDelta<'a>>,
}

#[derive(serde::Deserialize)]
struct RawFunctionDelta<'a> {
    #[serde(default, borrow)]
    name: Option<Borrowed<'a>>,
    #[serde(default, borrow)]
    arguments: Option<Borrowed<'a>>,
}

// --------------------------------------------------------- client streams

/// Canonical events to an OpenAI client stream.
#[derive(Debug)]
pub struct Encoder {
    id: String,
    created: u64,
    model: String,
    role_sent: bool,
    /// Upstream call index → client `tool_calls[].index`.
    tool_index: HashMap<usize, usize>,
    /// Client index of the next call (not `tool_index.len()`: an
    /// upstream that starts the same index twice must not make two calls
    /// share one client index).
    next_tool: usize,
    saw_tool: bool,
    finished: bool,
    closed: bool,
    usage_chunk: bool,
    /// What follows `choices` in every chunk (`created`, `id`, `model`,
    /// `object`, in the order a `Value` writes them), written once.
    tail: Vec<u8>,
}

impl Encoder {
    /// Sends usage the way OpenAI does for `stream_options.include_usage`:
    /// in a last chunk of its own with an empty `choices`, instead of on
    /// the chunk carrying `finish_reason`. Only on request, because
    /// clients that did not ask often read `choices[0]` of every chunk.
    pub fn set_usage_chunk(&mut self, on: bool) {
        self.usage_chunk = on;
    }

    /// An encoder answering as `model`.
    pub fn new(model: &str) -> Self {
        let (id, created) = (ids::new_id("chatcmpl-"), ids::unix_now());
        let mut tail = json!({"created": created, "id": id, "model": model,
                              "object": "chat.completion.chunk"})
        .to_string()
        .into_bytes();
        tail[0] = b',';
        Self {
            id,
            created,
            model: model.to_string(),
            role_sent: false,
            tool_index: HashMap::new(),
            next_tool: 0,
            saw_tool: false,
            finished: false,
            closed: false,
            usage_chunk: false,
            tail,
        }
    }

    /// The chunk of a text or reasoning delta, written as [`Self::chunk`]
    /// writes it from a `Value` without building one: an event is a
    /// stream's unit of work, and building, writing and dropping a
    /// `Value` was most of its cost.
    fn delta_chunk(&self, member: &str, text: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(b"data: {\"choices\":[{\"delta\":{\"");
        out.extend_from_slice(member.as_bytes());
        out.extend_from_slice(b"\":");
        super::json::push_str(out, text);
        out.extend_from_slice(b"},\"finish_reason\":null,\"index\":0}]");
        out.extend_from_slice(&self.tail);
        out.extend_from_slice(b"\n\n");
    }

    fn chunk(&self, delta: Value, finish: Option<&str>, usage: Option<Value>, out: &mut Vec<u8>) {
        let mut c = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        if let (Some(u), Some(o)) = (usage, c.as_object_mut()) {
            o.insert("usage".into(), u);
        }
        write_data(&c, out);
    }

    fn ensure_role(&mut self, out: &mut Vec<u8>) {
        if !self.role_sent {
            self.role_sent = true;
            self.chunk(json!({"role": "assistant", "content": ""}), None, None, out);
        }
    }

    /// Encodes one event.
    pub fn event(&mut self, ev: &StreamEvent, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        match ev {
            StreamEvent::Start { .. } => self.ensure_role(out),
            StreamEvent::TextDelta(t) => {
                self.ensure_role(out);
                self.delta_chunk("content", t, out);
            }
            StreamEvent::ThinkingDelta(t) => {
                self.ensure_role(out);
                self.delta_chunk("reasoning_content", t, out);
            }
            StreamEvent::SignatureDelta(_) | StreamEvent::ToolCallEnd { .. } => {}
            StreamEvent::ToolCallStart { index, id, name } => {
                self.ensure_role(out);
                let k = self.next_tool;
                self.next_tool += 1;
                self.tool_index.insert(*index, k);
                self.saw_tool = true;
                let id = id.clone().unwrap_or_else(|| ids::new_id("call_"));
                let call = json!({"index": k, "id": id, "type": "function", "function": {"name": name, "arguments": ""}});
                self.chunk(json!({"tool_calls": [call]}), None, None, out);
            }
            StreamEvent::ToolCallArgs { index, fragment } => {
                if let Some(k) = self.tool_index.get(index).copied() {
                    let call = json!({"index": k, "function": {"arguments": fragment}});
                    self.chunk(json!({"tool_calls": [call]}), None, None, out);
                }
            }
            StreamEvent::Finish { reason, usage } => {
                self.ensure_role(out);
                let reason = match reason {
                    Some(FinishReason::Stop) | None if self.saw_tool => FinishReason::ToolUse,
                    Some(r) => *r,
                    None => FinishReason::Stop,
                };
                let usage = emit_usage(&usage.unwrap_or_default());
                if self.usage_chunk {
                    self.chunk(json!({}), Some(finish_name(reason)), None, out);
                    let c = json!({
                        "id": self.id,
                        "object": "chat.completion.chunk",
                        "created": self.created,
                        "model": self.model,
                        "choices": [],
                        "usage": usage,
                    });
                    write_data(&c, out);
                } else {
                    self.chunk(json!({}), Some(finish_name(reason)), Some(usage), out);
                }
                self.finished = true;
            }
            StreamEvent::Error { status, message } => {
                let ty = super::errors::error_type(*status);
                write_data(
                    &json!({"error": {"message": message, "type": ty, "code": null}}),
                    out,
                );
                self.finished = true;
            }
        }
    }

    /// Ends the client stream: a final chunk if none was sent, then the
    /// single `[DONE]`.
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
        if !self.closed {
            self.closed = true;
            out.extend_from_slice(b"data: [DONE]\n\n");
        }
    }
}

/// Writes `data: <json>\n\n`.
pub fn write_data(v: &Value, out: &mut Vec<u8>) {
    out.extend_from_slice(b"data: ");
    // Straight into `out`, not through `to_string`'s formatting machinery
    // and a String of its own (writing to a `Vec` cannot fail).
    let _ = serde_json::to_writer(&mut *out, v);
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A text or reasoning delta is written byte for byte as the chunk's
    /// `Value` would be, escapes in the text and in the model included.
    #[test]
    fn a_delta_chunk_is_written_as_its_value_would_be() {
        for model in ["gpt-4o", "odd \"model\" \\ é"] {
            let e = Encoder::new(model);
            for text in ["plain", "\"quoted\" \\ \n\u{1}", "é 🦀", ""] {
                for member in ["content", "reasoning_content"] {
                    let (mut fast, mut slow) = (Vec::new(), Vec::new());
                    e.delta_chunk(member, text, &mut fast);
                    e.chunk(json!({ member: text }), None, None, &mut slow);
                    assert_eq!(
                        String::from_utf8(fast).unwrap(),
                        String::from_utf8(slow).unwrap()
                    );
                }
            }
        }
    }

    #[test]
    fn an_answers_plain_strings_are_borrowed_and_escaped_ones_decoded() {
        let body = br#"{"id":"chatcmpl-1","choices":[{"finish_reason":"st\u006fp"}]}"#;
        let raw: RawAnswer = super::super::json::from_bytes(body).unwrap();
        assert!(matches!(
            raw.id.unwrap().0,
            std::borrow::Cow::Borrowed("chatcmpl-1")
        ));
        let choices = raw.choices.unwrap();
        let reason = &choices[0].finish_reason.as_ref().unwrap().0;
        assert!(matches!(reason, std::borrow::Cow::Owned(r) if r == "stop"));
    }

    #[test]
    fn request_roundtrip_keeps_params_and_tools() {
        let body = json!({
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "sys"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "ok", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "r"}
            ],
            "temperature": 0, "stop": "END", "max_tokens": 10,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": "required"
        });
        let req = parse_request(&body).unwrap();
        assert_eq!(req.system, vec!["sys"]);
        assert_eq!(req.stop, vec!["END"]);
        assert_eq!(req.tool_choice, Some(ToolChoice::Any));
        let out = emit_request(&req, "m", false);
        assert_eq!(out["temperature"], json!(0));
        assert_eq!(
            out["messages"][2]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":1}"
        );
        assert_eq!(out["messages"][3]["role"], "tool");
        assert_eq!(out["tool_choice"], "required");
    }

    #[test]
    fn malformed_requests_are_errors() {
        assert!(parse_request(&json!([])).is_err());
        assert!(parse_request(&json!({"messages": 3})).is_err());
        assert!(parse_request(&json!({"messages": [{"content": "x"}]})).is_err());
    }

    #[test]
    fn unanswered_calls_are_dropped() {
        let req = parse_request(&json!({"messages": [
            {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{}"}}]},
        ]}))
        .unwrap();
        let out = emit_request(&req, "m", true);
        assert!(out["messages"][0].get("tool_calls").is_none());
        assert_eq!(out["stream_options"]["include_usage"], true);
    }

    #[test]
    fn response_parse_splits_reasoning_and_tools() {
        let r = parse_response(&json!({"choices": [{"message": {"content": "<thinking>t</thinking>a",
            "tool_calls": [{"id": "x", "function": {"name": "f", "arguments": "bad"}}]}, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4}}))
        .unwrap();
        assert_eq!(r.parts.len(), 3);
        assert_eq!(r.finish, FinishReason::ToolUse);
        assert_eq!(r.usage.input, 3);
        assert!(parse_response(&json!({})).is_err());
    }

    #[test]
    fn decoder_holds_finish_until_done() {
        let mut d = Decoder::default();
        let mut ev = Vec::new();
        d.event(
            r#"{"choices":[{"delta":{"content":"a"},"finish_reason":"stop"}]}"#,
            &mut ev,
        );
        d.event(
            r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#,
            &mut ev,
        );
        assert!(!ev.iter().any(|e| matches!(e, StreamEvent::Finish { .. })));
        d.event("[DONE]", &mut ev);
        assert_eq!(
            ev.last(),
            Some(&StreamEvent::Finish {
                reason: Some(FinishReason::Stop),
                usage: Some(TokenUsage {
                    input: 1,
                    output: 2,
                    ..TokenUsage::default()
                })
            })
        );
        d.event("not json", &mut ev);
    }
}
