//! The OpenAI Responses API (`POST /v1/responses`): requests, answers and
//! streams to and from the canonical model.
//!
//! The Responses API is item-based: a request's `input` is a flat list of
//! messages, function calls, their outputs and reasoning items, and an
//! answer's `output` is a list of such items. Items map onto canonical
//! turns one to one (consecutive items of one speaker are merged into one
//! turn), so an agent's whole history converts without server-side state.
//! aiproxy keeps none: `previous_response_id`, `conversation`, stored
//! prompts and file ids refer to state on OpenAI's servers and are refused
//! with a 400 that says so.
//!
//! Tools the canonical model has no place for are flattened into function
//! tools: `custom` (free-form) tools become a function taking one string
//! `input`, and the members of a `namespace` become top-level functions. A
//! [`ToolMap`] built from the request remembers what each flattened name
//! was, so the answer calls the tool the way the client declared it.
//! Built-in tools run on OpenAI's servers, so they are refused, except
//! `web_search`, an optional capability agents such as Codex offer on every
//! request: it is dropped (see [`dropped`]).
//!
//! Reasoning comes back as `reasoning` items whose `encrypted_content`
//! carries the upstream's opaque signature (or redacted reasoning), so a
//! client that passes the items back — Codex does — gives an Anthropic or
//! Gemini upstream its signed reasoning again.
//!
//! Streams are the real event sequence: `response.created`,
//! `response.in_progress`, then per output item `output_item.added`, its
//! deltas and `output_item.done`, and one terminal `response.completed`,
//! `response.incomplete` or `response.failed`, every event numbered by a
//! `sequence_number` that counts up from 0.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::ConvertError;
use super::canonical::{
    ChatRequest, ChatResponse, Effort, FinishReason, Media, Message, Part, Reasoning,
    ResponseFormat, Role, StreamEvent, TokenUsage, Tool, ToolCall, ToolChoice, ToolResult,
    as_number, as_u64, mime_from_name, parse_arguments, parse_data_uri, push_merged,
};
use super::{Lookup as _, ids, schema};

fn bad(msg: impl Into<String>) -> ConvertError {
    ConvertError {
        message: msg.into(),
    }
}

/// `encrypted_content` prefix of reasoning that carries an upstream
/// signature (Anthropic `signature`, Gemini `thoughtSignature`).
const SIGNED: &str = "aiproxy-signature:";
/// `encrypted_content` prefix of Anthropic redacted reasoning.
const REDACTED: &str = "aiproxy-redacted:";

/// Built-in tool types that are an optional capability rather than part
/// of the conversation: dropped instead of refused.
const DROPPED_TOOLS: &[&str] = &[
    "web_search",
    "web_search_preview",
    "web_search_2025_08_26",
    "web_search_preview_2025_03_11",
];

/// Request fields that name state kept on OpenAI's servers.
const STATEFUL_FIELDS: &[(&str, &str)] = &[
    ("previous_response_id", "a stored response"),
    ("conversation", "a stored conversation"),
    ("prompt", "a stored prompt template"),
];

// ------------------------------------------------------------- tool map

/// What a flattened function tool was in the client's request.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Origin {
    /// The `namespace` it was declared in.
    namespace: Option<String>,
    /// Its name inside the namespace.
    name: String,
    /// A `custom` (free-form input) tool.
    custom: bool,
}

/// How the tools of a Responses request were flattened into function
/// tools, so that an answer calls each one the way the client declared it
/// (a namespaced function with its `namespace`, a custom tool as a
/// `custom_tool_call`). Empty for requests with plain function tools only,
/// and for every other client protocol.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolMap {
    /// Flattened name → origin, for the tools whose name or kind changed.
    flat: HashMap<String, Origin>,
}

impl ToolMap {
    /// The map of a Responses request body (`tools`); empty when it has
    /// none or they are malformed (the conversion reports that).
    pub fn from_request(body: &Value) -> ToolMap {
        let mut map = ToolMap::default();
        let Some(tools) = body.get("tools").and_then(Value::as_array) else {
            return map;
        };
        let mut taken: Vec<String> = Vec::new();
        // Top-level names first: they keep their name whatever namespaces hold.
        for t in tools {
            let kind = t.get("type").and_then(Value::as_str);
            if let (Some("function" | "custom"), Some(name)) =
                (kind, t.get("name").and_then(Value::as_str))
            {
                taken.push(name.to_string());
                if kind == Some("custom") {
                    map.flat.insert(
                        name.to_string(),
                        Origin {
                            namespace: None,
                            name: name.to_string(),
                            custom: true,
                        },
                    );
                }
            }
        }
        for t in tools {
            if t.get("type").and_then(Value::as_str) != Some("namespace") {
                continue;
            }
            let Some(ns) = t.get("name").and_then(Value::as_str) else {
                continue;
            };
            for inner in t
                .get("tools")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let kind = inner.get("type").and_then(Value::as_str);
                let Some(name) = inner.get("name").and_then(Value::as_str) else {
                    continue;
                };
                // The plain name reads best; the namespace only where two collide.
                let flat = if taken.iter().any(|n| n == name) {
                    format!("{ns}__{name}")
                } else {
                    name.to_string()
                };
                taken.push(flat.clone());
                map.flat.insert(
                    flat,
                    Origin {
                        namespace: Some(ns.to_string()),
                        name: name.to_string(),
                        custom: kind == Some("custom"),
                    },
                );
            }
        }
        map
    }

    fn origin(&self, flat: &str) -> Option<&Origin> {
        self.flat.get(flat)
    }

    /// The flattened name of `name` in `namespace`.
    fn flat_name(&self, namespace: Option<&str>, name: &str) -> String {
        self.flat
            .iter()
            .find(|(_, o)| o.namespace.as_deref() == namespace && o.name == name)
            .map_or_else(|| name.to_string(), |(flat, _)| flat.clone())
    }
}

// ---------------------------------------------------------------- requests

/// Parses a Responses API request.
pub fn parse_request(body: &Value) -> Result<ChatRequest, ConvertError> {
    parse_noted(body, &mut Vec::new())
}

/// What converting `body` (a Responses request) leaves out because no
/// other protocol can say it: one line per dropped item, tool or field,
/// for the gateway's debug log. Empty when nothing is lost or the body
/// does not convert at all.
pub fn dropped(body: &Value) -> Vec<String> {
    let mut notes = Vec::new();
    match parse_noted(body, &mut notes) {
        Ok(_) => notes,
        Err(_) => Vec::new(),
    }
}

fn parse_noted(body: &Value, notes: &mut Vec<String>) -> Result<ChatRequest, ConvertError> {
    let obj = body
        .as_object()
        .ok_or_else(|| bad("Request body must be a JSON object"))?;
    for (field, what) in STATEFUL_FIELDS {
        if obj.get(*field).is_some_and(|v| !v.is_null()) {
            return Err(bad(format!(
                "`{field}` refers to {what} kept on OpenAI's servers; aiproxy keeps no \
                 server-side state. Send the whole conversation in `input` instead \
                 (with `store: false`, as Codex does)."
            )));
        }
    }
    if obj.get("background").and_then(Value::as_bool) == Some(true) {
        return Err(bad(
            "`background: true` needs a stored response to poll; aiproxy keeps no \
             server-side state. Leave `background` unset.",
        ));
    }
    let tools = ToolMap::from_request(body);
    let mut req = ChatRequest::default();
    match obj.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            if !s.is_empty() {
                req.system.push(s.clone());
            }
        }
        Some(_) => return Err(bad("`instructions` must be a string")),
    }
    match obj.get("input") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => push_merged(
            &mut req.messages,
            Message {
                role: Role::User,
                parts: vec![Part::Text(s.clone())],
            },
        ),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(i, item, &tools, &mut req, notes)?;
            }
        }
        Some(_) => return Err(bad("`input` must be a string or an array of items")),
    }
    parse_tools(obj, &tools, &mut req, notes)?;
    req.max_tokens = as_u64(obj.get("max_output_tokens"));
    req.temperature = as_number(obj.get("temperature"));
    req.top_p = as_number(obj.get("top_p"));
    req.reasoning = match body.at(&["reasoning", "effort"]).and_then(Value::as_str) {
        Some("none") => Some(Reasoning::Disabled),
        Some(e) => Effort::parse(e).map(Reasoning::Effort),
        None => None,
    };
    req.response_format = match body.at(&["text", "format"]) {
        Some(f) => match f.get("type").and_then(Value::as_str) {
            Some("json_object") => Some(ResponseFormat::JsonObject),
            Some("json_schema") => f
                .get("schema")
                .map(|s| ResponseFormat::JsonSchema(s.clone())),
            _ => None,
        },
        None => None,
    };
    if obj.get("parallel_tool_calls").and_then(Value::as_bool) == Some(false) {
        notes.push("parallel_tool_calls: false (no equivalent across families)".into());
    }
    Ok(req)
}

fn role_of(i: usize, item: &Value) -> Result<Option<&str>, ConvertError> {
    match item.get("role") {
        None => Ok(None),
        Some(Value::String(r)) => Ok(Some(r.as_str())),
        Some(_) => Err(bad(format!("input[{i}].role must be a string"))),
    }
}

fn input_item(
    i: usize,
    item: &Value,
    tools: &ToolMap,
    req: &mut ChatRequest,
    notes: &mut Vec<String>,
) -> Result<(), ConvertError> {
    let Some(obj) = item.as_object() else {
        return Err(bad(format!("input[{i}] must be an object")));
    };
    let ty = match obj.get("type") {
        Some(Value::String(t)) => t.as_str(),
        // Easy input messages have a role and no type.
        None if obj.contains_key("role") => "message",
        _ => return Err(bad(format!("input[{i}].type must be a string"))),
    };
    let turn = |role, parts| Message { role, parts };
    match ty {
        "message" => {
            let role = role_of(i, item)?.unwrap_or("user");
            let content = item.get("content");
            match role {
                "system" | "developer" => {
                    let text = message_text(content);
                    if text.is_empty() {
                    } else if req.messages.is_empty() {
                        req.system.push(text);
                    } else {
                        // Mid-conversation instructions keep their place.
                        req.messages
                            .push(turn(Role::System, vec![Part::Text(text)]));
                    }
                }
                "user" => {
                    let parts = user_parts(i, content)?;
                    push_merged(&mut req.messages, turn(Role::User, parts));
                }
                "assistant" => {
                    let text = message_text(content);
                    if !text.is_empty() {
                        push_merged(
                            &mut req.messages,
                            turn(Role::Assistant, vec![Part::Text(text)]),
                        );
                    }
                }
                other => {
                    return Err(bad(format!(
                        "input[{i}].role {other:?} is not supported (use user, assistant, \
                         system or developer)"
                    )));
                }
            }
        }
        "function_call" | "custom_tool_call" => {
            let name = item
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("input[{i}].name must be a string")))?;
            let namespace = item.get("namespace").and_then(Value::as_str);
            let input = if ty == "custom_tool_call" {
                json!({"input": item.get("input").and_then(Value::as_str).unwrap_or_default()})
            } else {
                parse_arguments(item.get("arguments"))
            };
            let call = ToolCall {
                id: call_id(item),
                name: tools.flat_name(namespace, name),
                input,
            };
            push_merged(
                &mut req.messages,
                turn(Role::Assistant, vec![Part::ToolUse(call)]),
            );
        }
        "function_call_output" | "custom_tool_call_output" => {
            let mut parts = vec![];
            let (content, media, is_error) = tool_output(item.get("output"));
            parts.push(Part::ToolResult(ToolResult {
                id: call_id(item),
                content,
                is_error,
            }));
            parts.extend(media.into_iter().map(Part::Media));
            push_merged(&mut req.messages, turn(Role::User, parts));
        }
        "reasoning" => match reasoning_part(item) {
            Some(p) => push_merged(&mut req.messages, turn(Role::Assistant, vec![p])),
            None => notes.push(format!(
                "input[{i}]: a reasoning item with neither text nor content another \
                 provider can use"
            )),
        },
        "item_reference" => {
            return Err(bad(format!(
                "input[{i}] is an item_reference to an item stored on OpenAI's servers; \
                 aiproxy keeps no server-side state. Send the item itself."
            )));
        }
        other => notes.push(format!("input[{i}]: an item of type {other:?}")),
    }
    Ok(())
}

fn call_id(item: &Value) -> String {
    item.get("call_id")
        .or_else(|| item.get("id"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The text of a message's `content`: a string, or its text parts joined.
fn message_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let texts: Vec<&str> = parts
                .iter()
                .filter_map(|p| match p.get("type").and_then(Value::as_str) {
                    Some("input_text" | "output_text" | "text" | "summary_text") => {
                        p.get("text").and_then(Value::as_str)
                    }
                    Some("refusal") => p.get("refusal").and_then(Value::as_str),
                    _ => None,
                })
                .collect();
            texts.join("\n")
        }
        _ => String::new(),
    }
}

fn user_parts(i: usize, content: Option<&Value>) -> Result<Vec<Part>, ConvertError> {
    let mut parts = Vec::new();
    match content {
        Some(Value::String(s)) if !s.is_empty() => parts.push(Part::Text(s.clone())),
        Some(Value::Array(items)) => {
            for item in items {
                if let Some(p) = content_part(i, item)? {
                    parts.push(p);
                }
            }
        }
        _ => {}
    }
    Ok(parts)
}

fn stored_file(i: usize) -> ConvertError {
    bad(format!(
        "input[{i}] refers to a file by `file_id`, stored on OpenAI's servers; aiproxy \
         keeps no files. Send the data inline (a data: URL) or an http(s) URL."
    ))
}

fn content_part(i: usize, item: &Value) -> Result<Option<Part>, ConvertError> {
    let s = |k: &str| item.get(k).and_then(Value::as_str);
    Ok(match item.get("type").and_then(Value::as_str) {
        Some("input_text" | "output_text" | "text") => s("text")
            .filter(|t| !t.is_empty())
            .map(|t| Part::Text(t.to_string())),
        Some("input_image") => match s("image_url") {
            Some(url) => Some(Part::Media(media_from_url(url, None))),
            None if s("file_id").is_some() => return Err(stored_file(i)),
            None => None,
        },
        Some("input_file") => {
            if let Some(data) = s("file_data") {
                Some(Part::Media(match parse_data_uri(data) {
                    Some((mime, data)) => Media::Base64 { mime, data },
                    None => Media::Base64 {
                        mime: s("filename")
                            .and_then(mime_from_name)
                            .unwrap_or("application/octet-stream")
                            .to_string(),
                        data: data.to_string(),
                    },
                }))
            } else if let Some(url) = s("file_url") {
                Some(Part::Media(media_from_url(url, s("filename"))))
            } else if s("file_id").is_some() {
                return Err(stored_file(i));
            } else {
                None
            }
        }
        _ => None,
    })
}

fn media_from_url(url: &str, filename: Option<&str>) -> Media {
    match parse_data_uri(url) {
        Some((mime, data)) => Media::Base64 { mime, data },
        None => Media::Url {
            mime: mime_from_name(filename.unwrap_or(url)).map(str::to_string),
            url: url.to_string(),
        },
    }
}

/// A tool output: its text, the images and files it holds, and whether
/// the tool failed (Codex's older `{content, success}` form).
fn tool_output(v: Option<&Value>) -> (String, Vec<Media>, bool) {
    match v {
        Some(Value::String(s)) => (s.clone(), Vec::new(), false),
        Some(Value::Array(items)) => {
            let mut texts = Vec::new();
            let mut media = Vec::new();
            for item in items {
                match content_part(0, item) {
                    Ok(Some(Part::Text(t))) => texts.push(t),
                    Ok(Some(Part::Media(m))) => media.push(m),
                    _ => {}
                }
            }
            (texts.join("\n"), media, false)
        }
        Some(Value::Object(o)) if o.get("content").is_some_and(Value::is_string) => (
            o.get("content")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            Vec::new(),
            o.get("success").and_then(Value::as_bool) == Some(false),
        ),
        None | Some(Value::Null) => (String::new(), Vec::new(), false),
        Some(other) => (other.to_string(), Vec::new(), false),
    }
}

/// A reasoning item as canonical reasoning: its summary and content text,
/// with the signature or redacted data aiproxy put into
/// `encrypted_content`. `None` when nothing in it is usable elsewhere
/// (OpenAI's own encrypted reasoning only OpenAI can read).
fn reasoning_part(item: &Value) -> Option<Part> {
    let mut texts: Vec<&str> = Vec::new();
    for key in ["summary", "content"] {
        for p in item
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(t) = p
                .get("text")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
            {
                texts.push(t);
            }
        }
    }
    let sealed = item.get("encrypted_content").and_then(Value::as_str);
    if let Some(data) = sealed.and_then(|s| s.strip_prefix(REDACTED)) {
        return Some(Part::RedactedThinking(data.to_string()));
    }
    let signature = sealed
        .and_then(|s| s.strip_prefix(SIGNED))
        .map(str::to_string);
    if texts.is_empty() && signature.is_none() {
        return None;
    }
    Some(Part::Thinking {
        text: texts.join("\n"),
        signature,
    })
}

fn empty_schema() -> Value {
    json!({"type": "object", "properties": {}})
}

/// The function standing in for a custom (free-form input) tool.
fn custom_schema() -> Value {
    json!({"type": "object", "properties": {"input": {"type": "string",
        "description": "The tool's input, as free-form text."}}, "required": ["input"]})
}

/// A custom tool's description, with its input grammar when it has one
/// (the model must still follow it).
fn custom_description(t: &Value) -> Option<String> {
    let desc = t.get("description").and_then(Value::as_str);
    let grammar = t
        .get("format")
        .filter(|f| f.get("type").and_then(Value::as_str) == Some("grammar"));
    match grammar {
        Some(g) => {
            let syntax = g.get("syntax").and_then(Value::as_str).unwrap_or("grammar");
            let def = g
                .get("definition")
                .and_then(Value::as_str)
                .unwrap_or_default();
            Some(format!(
                "{}\n\nThe input must follow this {syntax} grammar:\n{def}",
                desc.unwrap_or_default()
            ))
        }
        None => desc.map(str::to_string),
    }
}

fn function_tool(t: &Value, flat: String, path: &str) -> Result<Tool, ConvertError> {
    let custom = t.get("type").and_then(Value::as_str) == Some("custom");
    if flat.is_empty() {
        return Err(bad(format!("{path}.name must be a non-empty string")));
    }
    Ok(Tool {
        name: flat,
        description: if custom {
            custom_description(t)
        } else {
            t.get("description")
                .and_then(Value::as_str)
                .map(str::to_string)
        },
        schema: if custom {
            custom_schema()
        } else {
            match t.get("parameters") {
                Some(p @ Value::Object(_)) => p.clone(),
                _ => empty_schema(),
            }
        },
    })
}

fn builtin_refused(path: &str, kind: &str) -> ConvertError {
    bad(format!(
        "{path}: the built-in tool type {kind:?} runs on OpenAI's servers, and the provider \
         serving this request cannot run it. Offer it as a function tool instead."
    ))
}

fn parse_tools(
    obj: &Map<String, Value>,
    map: &ToolMap,
    req: &mut ChatRequest,
    notes: &mut Vec<String>,
) -> Result<(), ConvertError> {
    let tools = match obj.get("tools") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(t)) => t.as_slice(),
        Some(_) => return Err(bad("`tools` must be an array")),
    };
    for (i, t) in tools.iter().enumerate() {
        let path = format!("tools[{i}]");
        let kind = t.get("type").and_then(Value::as_str).unwrap_or_default();
        let name = t.get("name").and_then(Value::as_str).unwrap_or_default();
        match kind {
            "function" | "custom" => req.tools.push(function_tool(t, name.to_string(), &path)?),
            "namespace" => {
                let members = t.get("tools").and_then(Value::as_array);
                for (j, inner) in members.into_iter().flatten().enumerate() {
                    let inner_path = format!("{path}.tools[{j}]");
                    let inner_kind = inner
                        .get("type")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    if !matches!(inner_kind, "function" | "custom") {
                        return Err(builtin_refused(&inner_path, inner_kind));
                    }
                    let inner_name = inner
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let flat = if inner_name.is_empty() {
                        String::new()
                    } else {
                        map.flat_name(Some(name), inner_name)
                    };
                    req.tools.push(function_tool(inner, flat, &inner_path)?);
                }
            }
            k if DROPPED_TOOLS.contains(&k) => notes.push(format!("{path}: the {k} tool")),
            k => return Err(builtin_refused(&path, k)),
        }
    }
    req.tool_choice = match obj.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Some(ToolChoice::Auto),
            "none" => Some(ToolChoice::None),
            "required" => Some(ToolChoice::Any),
            other => return Err(bad(format!("tool_choice {other:?} is not supported"))),
        },
        Some(c) => match c.get("type").and_then(Value::as_str) {
            Some("function" | "custom") => {
                let name = c
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("tool_choice.name must be a string"))?;
                let namespace = c.get("namespace").and_then(Value::as_str);
                Some(ToolChoice::Tool(map.flat_name(namespace, name)))
            }
            Some("allowed_tools") => {
                notes.push("tool_choice.allowed_tools: the list (the mode is kept)".into());
                match c.get("mode").and_then(Value::as_str) {
                    Some("required") => Some(ToolChoice::Any),
                    _ => Some(ToolChoice::Auto),
                }
            }
            Some(k) => return Err(builtin_refused("tool_choice", k)),
            None => return Err(bad("tool_choice must be a string or an object with a type")),
        },
    };
    Ok(())
}

/// Builds a Responses request for `model` (for an upstream that speaks
/// the Responses API). Nothing is stored upstream: `store` is false.
pub fn emit_request(req: &ChatRequest, model: &str, stream: bool) -> Value {
    let mut input = Vec::new();
    for m in &req.messages {
        match m.role {
            Role::User => user_items(&m.parts, &mut input),
            Role::Assistant => assistant_items(&m.parts, &mut input),
            // In place, as the Responses API's own developer messages.
            Role::System => input.push(json!({
                "role": "developer",
                "content": [{"type": "input_text", "text": super::canonical::text_lines(&m.parts)}],
            })),
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    if !req.system.is_empty() {
        out.insert("instructions".into(), json!(req.system.join("\n")));
    }
    out.insert("input".into(), Value::Array(input));
    if !req.tools.is_empty() {
        // A nameless tool cannot be called, and the Responses API refuses it.
        let tools: Vec<Value> = req
            .tools
            .iter()
            .filter(|t| !t.name.is_empty())
            .map(|t| {
                let mut d = t.declaration("parameters", schema::for_openai(&t.schema));
                d.insert("type".into(), json!("function"));
                Value::Object(d)
            })
            .collect();
        out.insert("tools".into(), Value::Array(tools));
        if let Some(tc) = &req.tool_choice {
            out.insert(
                "tool_choice".into(),
                match tc {
                    ToolChoice::Auto => json!("auto"),
                    ToolChoice::None => json!("none"),
                    ToolChoice::Any => json!("required"),
                    ToolChoice::Tool(n) => json!({"type": "function", "name": n}),
                },
            );
        }
    }
    if let Some(mt) = req.max_tokens {
        out.insert("max_output_tokens".into(), json!(mt));
    }
    if let Some(t) = &req.temperature {
        out.insert("temperature".into(), Value::Number(t.clone()));
    }
    if let Some(p) = &req.top_p {
        out.insert("top_p".into(), Value::Number(p.clone()));
    }
    let effort = match req.reasoning {
        Some(Reasoning::Budget(b)) => Some(Effort::from_budget(b)),
        Some(Reasoning::Effort(e)) => Some(e),
        Some(Reasoning::Adaptive) => Some(Effort::Medium),
        Some(Reasoning::Disabled) | None => None,
    };
    if let Some(e) = effort {
        out.insert("reasoning".into(), json!({"effort": e.name()}));
    }
    match &req.response_format {
        Some(ResponseFormat::JsonObject) => {
            out.insert("text".into(), json!({"format": {"type": "json_object"}}));
        }
        Some(ResponseFormat::JsonSchema(s)) => {
            out.insert(
                "text".into(),
                json!({"format": {"type": "json_schema", "name": "response", "schema": s}}),
            );
        }
        None => {}
    }
    out.insert("store".into(), json!(false));
    out.insert("stream".into(), json!(stream));
    Value::Object(out)
}

fn media_item(m: &Media) -> Value {
    match m {
        Media::Base64 { mime, data } if mime.starts_with("image/") => {
            json!({"type": "input_image", "image_url": format!("data:{mime};base64,{data}")})
        }
        Media::Base64 { mime, data } => {
            let ext = mime.rsplit('/').next().unwrap_or("bin");
            json!({"type": "input_file", "filename": format!("file.{ext}"),
                   "file_data": format!("data:{mime};base64,{data}")})
        }
        Media::Url { url, .. } if m.is_image() => json!({"type": "input_image", "image_url": url}),
        Media::Url { url, .. } => json!({"type": "input_file", "file_url": url}),
    }
}

fn user_items(parts: &[Part], out: &mut Vec<Value>) {
    let mut content = Vec::new();
    let flush = |content: &mut Vec<Value>, out: &mut Vec<Value>| {
        if !content.is_empty() {
            out.push(
                json!({"type": "message", "role": "user", "content": std::mem::take(content)}),
            );
        }
    };
    for p in parts {
        match p {
            Part::Text(t) => content.push(json!({"type": "input_text", "text": t})),
            Part::Media(m) => content.push(media_item(m)),
            Part::ToolResult(r) => {
                flush(&mut content, out);
                out.push(
                    json!({"type": "function_call_output", "call_id": r.id, "output": r.content}),
                );
            }
            Part::ToolUse(c) => content
                .push(json!({"type": "input_text", "text": format!("[Tool use: {}]", c.name)})),
            Part::Thinking { .. } | Part::RedactedThinking(_) => {}
        }
    }
    flush(&mut content, out);
}

fn assistant_items(parts: &[Part], out: &mut Vec<Value>) {
    let mut text = String::new();
    let flush = |text: &mut String, out: &mut Vec<Value>| {
        if !text.is_empty() {
            out.push(json!({"type": "message", "role": "assistant",
                "content": [{"type": "output_text", "text": std::mem::take(text)}]}));
        }
    };
    for p in parts {
        match p {
            Part::Text(t) => text.push_str(t),
            Part::Thinking { .. } | Part::RedactedThinking(_) => {
                flush(&mut text, out);
                if let Some(item) = reasoning_item(p, &ids::new_id("rs_")) {
                    out.push(item);
                }
            }
            Part::ToolUse(c) => {
                flush(&mut text, out);
                let id = if c.id.is_empty() {
                    ids::new_id("call_")
                } else {
                    c.id.clone()
                };
                out.push(
                    json!({"type": "function_call", "call_id": id, "name": c.name,
                    "arguments": c.input.to_string()}),
                );
            }
            Part::Media(_) | Part::ToolResult(_) => {}
        }
    }
    flush(&mut text, out);
}

/// A `reasoning` item for canonical reasoning (`None` for other parts).
fn reasoning_item(p: &Part, id: &str) -> Option<Value> {
    let (text, sealed) = match p {
        Part::Thinking { text, signature } => (
            text.as_str(),
            signature
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(|s| format!("{SIGNED}{s}")),
        ),
        Part::RedactedThinking(d) => ("", Some(format!("{REDACTED}{d}"))),
        _ => return None,
    };
    let summary = if text.is_empty() {
        json!([])
    } else {
        json!([{"type": "summary_text", "text": text}])
    };
    let mut item = json!({"type": "reasoning", "id": id, "summary": summary});
    if let (Some(s), Some(o)) = (sealed, item.as_object_mut()) {
        o.insert("encrypted_content".into(), json!(s));
    }
    Some(item)
}

// ----------------------------------------------------------------- answers

/// Reads a Responses `usage` object.
pub fn parse_usage(u: &Value) -> TokenUsage {
    TokenUsage {
        input: as_u64(u.get("input_tokens")).unwrap_or(0),
        output: as_u64(u.get("output_tokens")).unwrap_or(0),
        cache_read: as_u64(u.at(&["input_tokens_details", "cached_tokens"])).unwrap_or(0),
        cache_creation: 0,
        reasoning: as_u64(u.at(&["output_tokens_details", "reasoning_tokens"])).unwrap_or(0),
    }
}

/// Renders a Responses `usage` object.
pub fn emit_usage(u: &TokenUsage) -> Value {
    json!({
        "input_tokens": u.input,
        "input_tokens_details": {"cached_tokens": u.cache_read},
        "output_tokens": u.output,
        "output_tokens_details": {"reasoning_tokens": u.reasoning},
        "total_tokens": u.input + u.output,
    })
}

/// Parses a whole Responses answer (a `response` object).
pub fn parse_response(body: &Value) -> Result<ChatResponse, ConvertError> {
    let items = body
        .get("output")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("Responses answer has no output"))?;
    let mut parts = Vec::new();
    for item in items {
        match item.get("type").and_then(Value::as_str) {
            Some("reasoning") => parts.extend(reasoning_part(item)),
            Some("message") => {
                let text = message_text(item.get("content"));
                if !text.is_empty() {
                    parts.push(Part::Text(text));
                }
            }
            Some(ty @ ("function_call" | "custom_tool_call")) => {
                let Some(name) = item.get("name").and_then(Value::as_str) else {
                    continue;
                };
                let input = if ty == "custom_tool_call" {
                    json!({"input": item.get("input").and_then(Value::as_str).unwrap_or_default()})
                } else {
                    parse_arguments(item.get("arguments"))
                };
                parts.push(Part::ToolUse(ToolCall {
                    id: call_id(item),
                    name: name.to_string(),
                    input,
                }));
            }
            _ => {}
        }
    }
    let finish = if parts.iter().any(|p| matches!(p, Part::ToolUse(_))) {
        FinishReason::ToolUse
    } else {
        status_finish(body)
    };
    Ok(ChatResponse {
        id: body.get("id").and_then(Value::as_str).map(str::to_string),
        parts,
        finish,
        usage: body.get("usage").map(parse_usage).unwrap_or_default(),
    })
}

/// The finish reason a response object's `status` implies.
fn status_finish(response: &Value) -> FinishReason {
    match response.get("status").and_then(Value::as_str) {
        Some("incomplete") => {
            match response
                .at(&["incomplete_details", "reason"])
                .and_then(Value::as_str)
            {
                Some("content_filter") => FinishReason::ContentFilter,
                _ => FinishReason::Length,
            }
        }
        _ => FinishReason::Stop,
    }
}

/// `status` and `incomplete_details` for a finish reason.
fn status_of(finish: FinishReason) -> (&'static str, Value) {
    match finish {
        FinishReason::Length => ("incomplete", json!({"reason": "max_output_tokens"})),
        FinishReason::ContentFilter => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

/// A `response` object around `output`.
fn response_object(
    id: &str,
    created_at: u64,
    model: &str,
    status: &str,
    output: Vec<Value>,
    usage: Option<&TokenUsage>,
) -> Value {
    json!({
        "id": id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": false,
        "error": null,
        "incomplete_details": null,
        "instructions": null,
        "metadata": {},
        "model": model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "store": false,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage.map(emit_usage),
    })
}

/// A call item for a canonical tool call, as the client declared the tool.
fn call_item(id: &str, call_id: &str, name: &str, arguments: &str, tools: &ToolMap) -> Value {
    match tools.origin(name) {
        Some(o) if o.custom => {
            let input = serde_json::from_str::<Value>(arguments)
                .ok()
                .and_then(|v| v.get("input").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_default();
            let mut item = json!({"type": "custom_tool_call", "id": id, "call_id": call_id,
                "name": o.name, "input": input, "status": "completed"});
            if let (Some(ns), Some(obj)) = (&o.namespace, item.as_object_mut()) {
                obj.insert("namespace".into(), json!(ns));
            }
            item
        }
        origin => {
            let mut item = json!({"type": "function_call", "id": id, "call_id": call_id,
                "name": origin.map_or(name, |o| o.name.as_str()), "arguments": arguments,
                "status": "completed"});
            if let (Some(ns), Some(obj)) = (
                origin.and_then(|o| o.namespace.as_ref()),
                item.as_object_mut(),
            ) {
                obj.insert("namespace".into(), json!(ns));
            }
            item
        }
    }
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]})
}

/// Renders a whole Responses answer; `tools` restores the client's tool
/// declarations (see [`ToolMap`]).
pub fn emit_response(resp: &ChatResponse, model: &str, tools: &ToolMap) -> Value {
    let mut output = Vec::new();
    let mut text = String::new();
    let flush = |text: &mut String, output: &mut Vec<Value>| {
        if !text.is_empty() {
            output.push(message_item(
                &ids::new_id("msg_"),
                &std::mem::take(text),
                "completed",
            ));
        }
    };
    for p in &resp.parts {
        match p {
            Part::Text(t) => text.push_str(t),
            Part::Thinking { .. } | Part::RedactedThinking(_) => {
                flush(&mut text, &mut output);
                output.extend(reasoning_item(p, &ids::new_id("rs_")));
            }
            Part::ToolUse(c) => {
                flush(&mut text, &mut output);
                let call_id = if c.id.is_empty() {
                    ids::new_id("call_")
                } else {
                    c.id.clone()
                };
                output.push(call_item(
                    &ids::new_id("fc_"),
                    &call_id,
                    &c.name,
                    &c.input.to_string(),
                    tools,
                ));
            }
            Part::Media(_) | Part::ToolResult(_) => {}
        }
    }
    flush(&mut text, &mut output);
    let (status, details) = status_of(resp.finish);
    let mut v = response_object(
        &ids::new_id("resp_"),
        ids::unix_now(),
        model,
        status,
        output,
        Some(&resp.usage),
    );
    if let Some(o) = v.as_object_mut() {
        o.insert("incomplete_details".into(), details);
    }
    v
}

// ------------------------------------------------------- upstream streams

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
        out.extend_from_slice(v.to_string().as_bytes());
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
            let ev = json!({"type": "response.output_text.delta", "item_id": id, "output_index": index,
                "content_index": 0, "delta": t, "logprobs": []});
            self.emit(ev, out);
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
            let ev = json!({"type": "response.reasoning_summary_text.delta", "item_id": id,
                "output_index": index, "summary_index": 0, "delta": t});
            self.emit(ev, out);
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

    #[test]
    fn string_input_and_instructions() {
        let req = parse_request(
            &json!({"model": "m", "input": "hi", "instructions": "be brief",
            "max_output_tokens": 9, "temperature": 0, "reasoning": {"effort": "high"}}),
        )
        .unwrap();
        assert_eq!(req.system, vec!["be brief"]);
        assert_eq!(req.messages.len(), 1);
        assert_eq!(req.messages[0].parts, vec![Part::Text("hi".into())]);
        assert_eq!(req.max_tokens, Some(9));
        assert_eq!(req.temperature, as_number(Some(&json!(0))));
        assert_eq!(req.reasoning, Some(Reasoning::Effort(Effort::High)));
    }

    #[test]
    fn items_merge_into_turns() {
        let req = parse_request(&json!({"input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "sys"}]},
            {"role": "user", "content": "q"},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "hmm"}],
             "encrypted_content": format!("{SIGNED}sig")},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "let me see"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{\"a\":1}"},
            {"type": "function_call_output", "call_id": "c1", "output": "r"},
            {"role": "user", "content": [{"type": "input_text", "text": "more"}]}
        ]}))
        .unwrap();
        assert_eq!(req.system, vec!["sys"]);
        let roles: Vec<Role> = req.messages.iter().map(|m| m.role).collect();
        assert_eq!(roles, [Role::User, Role::Assistant, Role::User]);
        assert_eq!(
            req.messages[1].parts,
            vec![
                Part::Thinking {
                    text: "hmm".into(),
                    signature: Some("sig".into())
                },
                Part::Text("let me see".into()),
                Part::ToolUse(ToolCall {
                    id: "c1".into(),
                    name: "f".into(),
                    input: json!({"a": 1})
                }),
            ]
        );
        assert!(
            matches!(&req.messages[2].parts[0], Part::ToolResult(r) if r.id == "c1" && r.content == "r")
        );
        assert_eq!(req.messages[2].parts[1], Part::Text("more".into()));
    }

    #[test]
    fn stateful_requests_and_builtin_tools_are_refused() {
        let msg = |v: Value| parse_request(&v).unwrap_err().message;
        assert!(
            msg(json!({"previous_response_id": "resp_1", "input": "x"}))
                .contains("no server-side state")
        );
        assert!(
            msg(json!({"input": [{"type": "item_reference", "id": "msg_1"}]}))
                .contains("item_reference")
        );
        assert!(
            msg(json!({"tools": [{"type": "file_search", "vector_store_ids": []}]}))
                .contains("file_search")
        );
        assert!(msg(json!({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]})).contains("file_id"));
        assert!(msg(json!({"input": [{"role": "robot", "content": "x"}]})).contains("robot"));
        // web_search is dropped, and said so.
        let body = json!({"input": "x", "tools": [{"type": "web_search"}, {"type": "function", "name": "f"}],
            "input_extra": 1});
        assert_eq!(parse_request(&body).unwrap().tools.len(), 1);
        assert_eq!(dropped(&body), ["tools[0]: the web_search tool"]);
    }

    #[test]
    fn namespaces_and_custom_tools_round_trip() {
        let body = json!({"tools": [
            {"type": "function", "name": "close", "parameters": {"type": "object"}},
            {"type": "custom", "name": "apply_patch", "description": "Patch files",
             "format": {"type": "grammar", "syntax": "lark", "definition": "start: x"}},
            {"type": "namespace", "name": "agents", "description": "d", "tools": [
                {"type": "function", "name": "spawn", "parameters": {"type": "object"}},
                {"type": "function", "name": "close"}]}
        ], "tool_choice": {"type": "function", "name": "spawn", "namespace": "agents"},
        "input": [{"type": "function_call", "call_id": "c", "name": "close", "namespace": "agents", "arguments": "{}"}]});
        let req = parse_request(&body).unwrap();
        let names: Vec<&str> = req.tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["close", "apply_patch", "spawn", "agents__close"]);
        assert!(
            req.tools[1]
                .description
                .as_deref()
                .unwrap()
                .contains("start: x")
        );
        assert_eq!(req.tool_choice, Some(ToolChoice::Tool("spawn".into())));
        assert!(matches!(&req.messages[0].parts[0], Part::ToolUse(c) if c.name == "agents__close"));
        let map = ToolMap::from_request(&body);
        let resp = ChatResponse {
            id: None,
            parts: vec![
                Part::ToolUse(ToolCall {
                    id: "a".into(),
                    name: "agents__close".into(),
                    input: json!({}),
                }),
                Part::ToolUse(ToolCall {
                    id: "b".into(),
                    name: "apply_patch".into(),
                    input: json!({"input": "*** Begin"}),
                }),
                Part::ToolUse(ToolCall {
                    id: "c".into(),
                    name: "close".into(),
                    input: json!({}),
                }),
            ],
            finish: FinishReason::ToolUse,
            usage: TokenUsage::default(),
        };
        let out = emit_response(&resp, "m", &map);
        let o = &out["output"];
        assert_eq!(
            (o[0]["name"].as_str(), o[0]["namespace"].as_str()),
            (Some("close"), Some("agents"))
        );
        assert_eq!(o[1]["type"], "custom_tool_call");
        assert_eq!(o[1]["input"], "*** Begin");
        assert!(o[2].get("namespace").is_none());
    }

    #[test]
    fn answers_carry_status_usage_and_signed_reasoning() {
        let resp = ChatResponse {
            id: None,
            parts: vec![
                Part::Thinking {
                    text: "t".into(),
                    signature: Some("s".into()),
                },
                Part::Text("a".into()),
            ],
            finish: FinishReason::Length,
            usage: TokenUsage {
                input: 3,
                output: 4,
                ..TokenUsage::default()
            },
        };
        let out = emit_response(&resp, "m", &ToolMap::default());
        assert_eq!(out["status"], "incomplete");
        assert_eq!(out["incomplete_details"]["reason"], "max_output_tokens");
        assert_eq!(out["usage"]["total_tokens"], 7);
        assert_eq!(out["output"][0]["encrypted_content"], format!("{SIGNED}s"));
        // Passed back, the reasoning is signed again.
        let back = parse_response(&out).unwrap();
        assert_eq!(back.parts, resp.parts);
        assert_eq!(back.finish, FinishReason::Length);
    }

    fn encode(events: &[StreamEvent]) -> Vec<Value> {
        let mut e = Encoder::new("m");
        let mut out = Vec::new();
        for ev in events {
            e.event(ev, &mut out);
        }
        e.close(&mut out);
        e.close(&mut out);
        super::super::sse::decode_all(&out)
            .iter()
            .map(|ev| {
                let v: Value = serde_json::from_str(&ev.data).unwrap();
                assert_eq!(ev.event.as_deref(), v["type"].as_str());
                v
            })
            .collect()
    }

    #[test]
    fn stream_event_sequence() {
        let evs = encode(&[
            StreamEvent::Start {
                input_tokens: Some(5),
            },
            StreamEvent::TextDelta("he".into()),
            StreamEvent::TextDelta("llo".into()),
            StreamEvent::ToolCallStart {
                index: 7,
                id: Some("call_1".into()),
                name: "f".into(),
            },
            StreamEvent::ToolCallArgs {
                index: 7,
                fragment: "{\"a\"".into(),
            },
            StreamEvent::ToolCallArgs {
                index: 7,
                fragment: ":1}".into(),
            },
            StreamEvent::ToolCallEnd { index: 7 },
            StreamEvent::Finish {
                reason: Some(FinishReason::Stop),
                usage: None,
            },
        ]);
        let types: Vec<&str> = evs.iter().map(|v| v["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let seqs: Vec<u64> = evs
            .iter()
            .map(|v| v["sequence_number"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, (0..15).collect::<Vec<u64>>());
        let done = &evs[14]["response"];
        assert_eq!(done["output"][0]["content"][0]["text"], "hello");
        assert_eq!(done["output"][1]["arguments"], "{\"a\":1}");
        assert_eq!(done["output"][1]["call_id"], "call_1");
        assert_eq!(done["usage"]["input_tokens"], 5);
    }

    #[test]
    fn stream_failure_is_terminal() {
        let evs = encode(&[
            StreamEvent::TextDelta("x".into()),
            StreamEvent::Error {
                status: 502,
                message: "gone".into(),
            },
            StreamEvent::TextDelta("after".into()),
        ]);
        let types: Vec<&str> = evs.iter().map(|v| v["type"].as_str().unwrap()).collect();
        assert_eq!(types[types.len() - 2..], ["error", "response.failed"]);
        assert_eq!(evs.last().unwrap()["response"]["error"]["message"], "gone");
        assert!(!types.contains(&"response.completed"));
    }

    #[test]
    fn decoder_reads_its_own_stream() {
        let evs = encode(&[
            StreamEvent::ThinkingDelta("hm".into()),
            StreamEvent::TextDelta("a".into()),
            StreamEvent::ToolCallStart {
                index: 0,
                id: None,
                name: "f".into(),
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                fragment: "{}".into(),
            },
            StreamEvent::Finish {
                reason: None,
                usage: Some(TokenUsage {
                    input: 1,
                    output: 2,
                    ..TokenUsage::default()
                }),
            },
        ]);
        let mut d = Decoder::default();
        let mut out = Vec::new();
        for v in &evs {
            d.value(v, &mut out);
        }
        d.end(&mut out);
        assert!(out.contains(&StreamEvent::ThinkingDelta("hm".into())));
        assert!(out.contains(&StreamEvent::TextDelta("a".into())));
        assert!(
            matches!(out.last(), Some(StreamEvent::Finish { reason: Some(FinishReason::ToolUse), usage: Some(u) }) if u.output == 2)
        );
    }
}
