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
    /// Flattened name and origin of each tool whose name or kind changed,
    /// in the order declared: where a request declares the same tool
    /// twice, the first declaration decides, the same in every process
    /// (a hash map's order would not be).
    flat: Vec<(String, Origin)>,
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
                    map.flat.push((
                        name.to_string(),
                        Origin {
                            namespace: None,
                            name: name.to_string(),
                            custom: true,
                        },
                    ));
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
                map.flat.push((
                    flat,
                    Origin {
                        namespace: Some(ns.to_string()),
                        name: name.to_string(),
                        custom: kind == Some("custom"),
                    },
                ));
            }
        }
        map
    }

    fn origin(&self, flat: &str) -> Option<&Origin> {
        self.flat.iter().find(|(f, _)| f == flat).map(|(_, o)| o)
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

mod stream;
#[cfg(test)]
mod tests;

pub use stream::{Decoder, Encoder};
