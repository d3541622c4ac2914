//! Gemini generateContent: requests, answers and streams to and from the
//! canonical model.
//!
//! Gemini differs from the other two in ways that need state: function
//! calls carry no ids (so ids are synthesised by position), tool
//! results must name the function (so emitters map ids back to names), and
//! streamed calls must arrive whole (so the encoder accumulates argument
//! fragments). Request fields are read in both camelCase and snake_case,
//! as the Gemini API accepts both.

use crate::protocol::Lookup as _;
use std::collections::{HashMap, HashSet, VecDeque};

use serde_json::{Map, Value, json};

use super::canonical::{
    BuiltinTool, ChatRequest, ChatResponse, Effort, FinishReason, Media, Message, Part, Reasoning,
    ResponseFormat, Role, StreamEvent, TokenUsage, Tool, ToolCall, ToolChoice, ToolResult,
    as_number, as_u64, push_merged, text_lines,
};
use super::{ConvertError, GeminiFraming, errors, schema};

fn bad(msg: impl Into<String>) -> ConvertError {
    ConvertError {
        message: msg.into(),
    }
}

/// The sentinel Gemini 3 accepts in place of a real thought signature on
/// function-call history it did not produce itself.
pub const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";

const SAFETY_CATEGORIES: [&str; 5] = [
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
    "HARM_CATEGORY_CIVIC_INTEGRITY",
];

fn get<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel).or_else(|| v.get(snake))
}

/// Gemini-only built-in tools named in any client's tool list.
pub fn builtin_tool(t: &Value) -> Option<BuiltinTool> {
    const KINDS: [(&str, &str); 3] = [
        ("googleSearch", "google_search"),
        ("urlContext", "url_context"),
        ("googleMaps", "google_maps"),
    ];
    for (camel, snake) in KINDS {
        if let Some(cfg) = get(t, camel, snake) {
            let config = if cfg.is_object() {
                cfg.clone()
            } else {
                json!({})
            };
            return Some(BuiltinTool {
                kind: camel.to_string(),
                config,
            });
        }
        let ty = t.get("type").and_then(Value::as_str);
        if ty == Some(snake) || ty == Some(camel) {
            return Some(BuiltinTool {
                kind: camel.to_string(),
                config: json!({}),
            });
        }
    }
    None
}

/// Parses a Gemini `thinkingConfig` (also OpenAI's
/// `extra_body.google.thinking_config`).
pub fn parse_thinking(t: &Value) -> Option<Reasoning> {
    if let Some(level) = get(t, "thinkingLevel", "thinking_level").and_then(Value::as_str) {
        return Effort::parse(level).map(Reasoning::Effort);
    }
    match get(t, "thinkingBudget", "thinking_budget").and_then(Value::as_i64) {
        Some(0) => Some(Reasoning::Disabled),
        Some(b) if b > 0 => Some(Reasoning::Budget(b as u64)),
        Some(_) => Some(Reasoning::Adaptive),
        None => get(t, "includeThoughts", "include_thoughts")
            .and_then(Value::as_bool)
            .filter(|b| *b)
            .map(|_| Reasoning::Adaptive),
    }
}

// ---------------------------------------------------------------- requests

/// Parses a Gemini request. Function calls without ids get
/// `<id_prefix><turn>_<n>`; each function response takes the id of the
/// n-th unanswered call of the same name in the preceding model turn.
pub fn parse_request(body: &Value, id_prefix: &str) -> Result<ChatRequest, ConvertError> {
    let obj = body
        .as_object()
        .ok_or_else(|| bad("Request body must be a JSON object"))?;
    let contents = obj
        .get("contents")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("`contents` must be an array"))?;
    let mut req = ChatRequest::default();
    if let Some(si) = get(body, "systemInstruction", "system_instruction") {
        match si {
            Value::String(s) if !s.is_empty() => req.system.push(s.clone()),
            _ => {
                for p in si
                    .get("parts")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(t) = p
                        .get("text")
                        .and_then(Value::as_str)
                        .filter(|t| !t.is_empty())
                    {
                        req.system.push(t.to_string());
                    }
                }
            }
        }
    }
    // Calls of the latest model turn still waiting for a response, by name.
    let mut pending: HashMap<String, VecDeque<String>> = HashMap::new();
    for (turn, c) in contents.iter().enumerate() {
        let role = if c.get("role").and_then(Value::as_str) == Some("model") {
            Role::Assistant
        } else {
            Role::User
        };
        if role == Role::Assistant {
            pending.clear();
        }
        let mut parts = Vec::new();
        let mut n_call = 0;
        let mut n_orphan = 0;
        for p in c
            .get("parts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let thought = p.get("thought").and_then(Value::as_bool).unwrap_or(false);
            let signature = get(p, "thoughtSignature", "thought_signature").and_then(Value::as_str);
            if let Some(t) = p.get("text").and_then(Value::as_str) {
                if thought {
                    parts.push(Part::Thinking {
                        text: t.to_string(),
                        signature: signature
                            .filter(|s| *s != SKIP_SIGNATURE)
                            .map(str::to_string),
                    });
                } else if !t.is_empty() {
                    parts.push(Part::Text(t.to_string()));
                }
            } else if let Some(d) = get(p, "inlineData", "inline_data") {
                let (Some(mime), Some(data)) = (
                    get(d, "mimeType", "mime_type").and_then(Value::as_str),
                    d.get("data").and_then(Value::as_str),
                ) else {
                    continue;
                };
                parts.push(Part::Media(Media::Base64 {
                    mime: mime.to_string(),
                    data: standard_base64(data),
                }));
            } else if let Some(d) = get(p, "fileData", "file_data") {
                let Some(url) = get(d, "fileUri", "file_uri").and_then(Value::as_str) else {
                    continue;
                };
                let mime = get(d, "mimeType", "mime_type")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                parts.push(Part::Media(Media::Url {
                    mime,
                    url: url.to_string(),
                }));
            } else if let Some(fc) = get(p, "functionCall", "function_call") {
                let Some(name) = fc.get("name").and_then(Value::as_str) else {
                    continue;
                };
                let id = fc
                    .get("id")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map_or_else(|| format!("{id_prefix}{turn}_{n_call}"), str::to_string);
                n_call += 1;
                pending
                    .entry(name.to_string())
                    .or_default()
                    .push_back(id.clone());
                parts.push(Part::ToolUse(ToolCall {
                    id,
                    name: name.to_string(),
                    input: fc
                        .get("args")
                        .cloned()
                        .filter(Value::is_object)
                        .unwrap_or_else(|| json!({})),
                }));
            } else if let Some(fr) = get(p, "functionResponse", "function_response") {
                let name = fr.get("name").and_then(Value::as_str).unwrap_or_default();
                let queued = pending.get_mut(name).and_then(VecDeque::pop_front);
                let id = match fr
                    .get("id")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                {
                    Some(id) => id.to_string(),
                    None => queued.unwrap_or_else(|| {
                        n_orphan += 1;
                        format!("{id_prefix}{turn}_r{n_orphan}")
                    }),
                };
                let resp = fr.get("response");
                let (content, is_error) = match resp {
                    Some(r) if r.get("error").is_some() && r.get("result").is_none() => {
                        (super::canonical::result_text(r.get("error")), true)
                    }
                    Some(r) => match r.get("result").or_else(|| r.get("output")) {
                        Some(Value::String(s)) if r.as_object().is_some_and(|o| o.len() == 1) => {
                            (s.clone(), false)
                        }
                        _ => (r.to_string(), false),
                    },
                    None => (String::new(), false),
                };
                parts.push(Part::ToolResult(ToolResult {
                    id,
                    content,
                    is_error,
                }));
            }
        }
        if !parts.is_empty() {
            req.messages.push(Message { role, parts });
        }
    }

    for t in obj
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(decls) =
            get(t, "functionDeclarations", "function_declarations").and_then(Value::as_array)
        {
            for d in decls {
                let Some(name) = d.get("name").and_then(Value::as_str) else {
                    continue;
                };
                req.tools.push(Tool {
                    name: name.to_string(),
                    description: d
                        .get("description")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    schema: get(d, "parametersJsonSchema", "parameters_json_schema")
                        .or_else(|| d.get("parameters"))
                        .cloned()
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                });
            }
        } else if let Some(b) = builtin_tool(t) {
            req.builtin_tools.push(b);
        }
    }
    if let Some(fc) = get(body, "toolConfig", "tool_config")
        .and_then(|tc| get(tc, "functionCallingConfig", "function_calling_config"))
    {
        let allowed: Vec<&str> = get(fc, "allowedFunctionNames", "allowed_function_names")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        req.tool_choice = match fc
            .get("mode")
            .and_then(Value::as_str)
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            Some("AUTO") | Some("VALIDATED") => Some(ToolChoice::Auto),
            Some("NONE") => Some(ToolChoice::None),
            Some("ANY") if allowed.len() == 1 => {
                allowed.first().map(|n| ToolChoice::Tool((*n).to_string()))
            }
            Some("ANY") => Some(ToolChoice::Any),
            _ => None,
        };
    }
    if let Some(g) = get(body, "generationConfig", "generation_config") {
        req.max_tokens = as_u64(get(g, "maxOutputTokens", "max_output_tokens"));
        req.temperature = as_number(g.get("temperature"));
        req.top_p = as_number(get(g, "topP", "top_p"));
        req.top_k = as_number(get(g, "topK", "top_k"));
        req.stop = get(g, "stopSequences", "stop_sequences")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        req.reasoning = get(g, "thinkingConfig", "thinking_config").and_then(parse_thinking);
        let schema = get(g, "responseJsonSchema", "response_json_schema")
            .or_else(|| get(g, "responseSchema", "response_schema"));
        req.response_format = match (
            schema,
            get(g, "responseMimeType", "response_mime_type").and_then(Value::as_str),
        ) {
            (Some(s), _) => Some(ResponseFormat::JsonSchema(schema::for_json_schema(s))),
            (None, Some("application/json")) => Some(ResponseFormat::JsonObject),
            _ => None,
        };
    }
    Ok(req)
}

fn media_part(m: &Media) -> Value {
    match m {
        Media::Base64 { mime, data } => json!({"inlineData": {"mimeType": mime, "data": data}}),
        Media::Url { mime, url } => json!({"fileData": {
            "mimeType": mime.clone().unwrap_or_else(|| "image/jpeg".into()), "fileUri": url}}),
    }
}

/// Builds a Gemini request (model and stream travel in the URL).
pub fn emit_request(req: &ChatRequest, model: &str) -> Value {
    // Gemini has no system turn: system turns from inside the conversation
    // join `systemInstruction`, in order, after the system prompt.
    let mut system = req.system.clone();
    let mut merged: Vec<Message> = Vec::new();
    for m in &req.messages {
        if m.role == Role::System {
            system.push(text_lines(&m.parts));
        } else {
            push_merged(&mut merged, m.clone());
        }
    }
    let names: HashMap<&str, &str> = merged
        .iter()
        .flat_map(|m| m.parts.iter())
        .filter_map(|p| match p {
            Part::ToolUse(c) => Some((c.id.as_str(), c.name.as_str())),
            _ => None,
        })
        .collect();
    let mut contents = Vec::new();
    let mut prev_calls: Vec<&str> = Vec::new();
    let mut answered: HashSet<&str> = HashSet::new();
    for m in &merged {
        let mut parts = Vec::new();
        match m.role {
            Role::Assistant => {
                prev_calls.clear();
                for p in &m.parts {
                    match p {
                        Part::Text(t) => parts.push(json!({"text": t})),
                        Part::Thinking { text, signature } if !text.is_empty() => {
                            let mut o = json!({"text": text, "thought": true});
                            if let (Some(sig), Some(obj)) = (
                                signature.as_ref().filter(|s| s.len() >= 50),
                                o.as_object_mut(),
                            ) {
                                obj.insert("thoughtSignature".into(), json!(sig));
                            }
                            parts.push(o);
                        }
                        Part::RedactedThinking(d) => {
                            parts.push(json!({"text": format!("[Redacted Thinking: {d}]")}))
                        }
                        Part::ToolUse(c) => {
                            prev_calls.push(&c.id);
                            parts.push(json!({
                                "functionCall": {"name": c.name, "args": c.input},
                                "thoughtSignature": SKIP_SIGNATURE,
                            }));
                        }
                        Part::Media(md) => parts.push(media_part(md)),
                        Part::Thinking { .. } | Part::ToolResult(_) => {}
                    }
                }
            }
            Role::System => {}
            Role::User => {
                let mut results: Vec<&ToolResult> = m
                    .parts
                    .iter()
                    .filter_map(|p| match p {
                        Part::ToolResult(r) => Some(r),
                        _ => None,
                    })
                    .filter(|r| answered.insert(r.id.as_str()))
                    .collect();
                // Responses go first, in the order of the calls they answer.
                results.sort_by_key(|r| {
                    prev_calls
                        .iter()
                        .position(|c| *c == r.id)
                        .unwrap_or(usize::MAX)
                });
                for r in results {
                    match names.get(r.id.as_str()) {
                        Some(name) => {
                            let key = if r.is_error { "error" } else { "result" };
                            parts.push(json!({"functionResponse": {"name": name, "response": {key: r.content}}}));
                        }
                        None => parts.push(
                            json!({"text": format!("[Tool result {}]: {}", r.id, r.content)}),
                        ),
                    }
                }
                for p in &m.parts {
                    match p {
                        Part::Text(t) => parts.push(json!({"text": t})),
                        Part::Media(md) => parts.push(media_part(md)),
                        Part::ToolUse(c) => {
                            parts.push(json!({"text": format!("[Tool use: {}]", c.name)}))
                        }
                        _ => {}
                    }
                }
                prev_calls.clear();
            }
        }
        if !parts.is_empty() {
            let role = if m.role == Role::Assistant {
                "model"
            } else {
                "user"
            };
            contents.push(json!({"role": role, "parts": parts}));
        }
    }

    let mut out = Map::new();
    if contents.is_empty() && !system.is_empty() {
        // A lone system message is the prompt itself: Gemini wants at
        // least one content.
        contents.push(json!({"role": "user", "parts": [{"text": system.join("\n")}]}));
    } else if !system.is_empty() {
        let parts: Vec<Value> = system.iter().map(|t| json!({"text": t})).collect();
        out.insert(
            "systemInstruction".into(),
            json!({"role": "user", "parts": parts}),
        );
    }
    out.insert("contents".into(), Value::Array(contents));

    let mut tools = Vec::new();
    if !req.tools.is_empty() {
        let decls: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                Value::Object(t.declaration("parametersJsonSchema", schema::for_gemini(&t.schema)))
            })
            .collect();
        tools.push(json!({"functionDeclarations": decls}));
    }
    for b in &req.builtin_tools {
        tools.push(json!({ b.kind.clone(): b.config }));
    }
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
    }
    if !req.tools.is_empty()
        && let Some(tc) = &req.tool_choice
    {
        let cfg = match tc {
            ToolChoice::Auto => json!({"mode": "AUTO"}),
            ToolChoice::None => json!({"mode": "NONE"}),
            ToolChoice::Any => json!({"mode": "ANY"}),
            ToolChoice::Tool(n) => json!({"mode": "ANY", "allowedFunctionNames": [n]}),
        };
        out.insert("toolConfig".into(), json!({"functionCallingConfig": cfg}));
    }

    let mut g = Map::new();
    if let Some(t) = &req.temperature {
        g.insert("temperature".into(), Value::Number(t.clone()));
    }
    if let Some(p) = &req.top_p {
        g.insert("topP".into(), Value::Number(p.clone()));
    }
    if let Some(k) = &req.top_k {
        g.insert("topK".into(), Value::Number(k.clone()));
    }
    if let Some(mt) = req.max_tokens {
        g.insert("maxOutputTokens".into(), json!(mt));
    }
    if !req.stop.is_empty() {
        g.insert("stopSequences".into(), json!(req.stop));
    }
    match &req.response_format {
        Some(ResponseFormat::JsonObject) => {
            g.insert("responseMimeType".into(), json!("application/json"));
        }
        Some(ResponseFormat::JsonSchema(s)) => {
            g.insert("responseMimeType".into(), json!("application/json"));
            g.insert("responseJsonSchema".into(), s.clone());
        }
        None => {}
    }
    let gemini3 = model.contains("gemini-3");
    let thinking = match req.reasoning {
        Some(Reasoning::Budget(b)) => Some(json!({"thinkingBudget": b, "includeThoughts": true})),
        Some(Reasoning::Effort(e)) if gemini3 => {
            Some(json!({"thinkingLevel": e.name().to_ascii_uppercase(), "includeThoughts": true}))
        }
        Some(Reasoning::Effort(e)) => {
            Some(json!({"thinkingBudget": e.budget(), "includeThoughts": true}))
        }
        Some(Reasoning::Adaptive) => Some(json!({"includeThoughts": true})),
        Some(Reasoning::Disabled) | None => None,
    };
    if let Some(t) = thinking {
        g.insert("thinkingConfig".into(), t);
    }
    if !g.is_empty() {
        out.insert("generationConfig".into(), Value::Object(g));
    }
    let safety: Vec<Value> = SAFETY_CATEGORIES
        .iter()
        .map(|c| json!({"category": c, "threshold": "OFF"}))
        .collect();
    out.insert("safetySettings".into(), Value::Array(safety));
    Value::Object(out)
}

// --------------------------------------------------------------- responses

/// Gemini `finishReason` to canonical.
pub fn parse_finish(s: &str) -> FinishReason {
    match s {
        "STOP" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "MODEL_ARMOR"
        | "IMAGE_SAFETY" => FinishReason::ContentFilter,
        _ => FinishReason::Other,
    }
}

/// Canonical to Gemini `finishReason`; tool use is `STOP`, never
/// the invalid `TOOL_CALLS`.
pub fn finish_name(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop | FinishReason::StopSequence | FinishReason::ToolUse => "STOP",
        FinishReason::Length => "MAX_TOKENS",
        FinishReason::ContentFilter => "SAFETY",
        FinishReason::Other => "OTHER",
    }
}

/// Reads `usageMetadata`; output counts thoughts too.
pub fn parse_usage(u: &Value) -> TokenUsage {
    let thoughts = as_u64(u.get("thoughtsTokenCount")).unwrap_or(0);
    TokenUsage {
        input: as_u64(u.get("promptTokenCount")).unwrap_or(0),
        output: as_u64(u.get("candidatesTokenCount")).unwrap_or(0) + thoughts,
        cache_read: as_u64(u.get("cachedContentTokenCount")).unwrap_or(0),
        cache_creation: 0,
        reasoning: thoughts,
    }
}

/// Renders `usageMetadata`.
pub fn emit_usage(u: &TokenUsage) -> Value {
    let mut o = Map::new();
    o.insert("promptTokenCount".into(), json!(u.input));
    o.insert(
        "candidatesTokenCount".into(),
        json!(u.output.saturating_sub(u.reasoning)),
    );
    o.insert("totalTokenCount".into(), json!(u.input + u.output));
    if u.cache_read > 0 {
        o.insert("cachedContentTokenCount".into(), json!(u.cache_read));
    }
    if u.reasoning > 0 {
        o.insert("thoughtsTokenCount".into(), json!(u.reasoning));
    }
    Value::Object(o)
}

/// Code Assist (gemini-cli) wraps answers in `{"response": …}`.
pub fn unwrap(v: &Value) -> &Value {
    match v.get("response") {
        Some(inner) if v.get("candidates").is_none() && inner.is_object() => inner,
        _ => v,
    }
}

/// Parses a whole Gemini answer (first candidate).
pub fn parse_response(body: &Value) -> Result<ChatResponse, ConvertError> {
    let body = unwrap(body);
    if !body.is_object() {
        return Err(bad("Gemini response must be a JSON object"));
    }
    let cand = body.at(&["candidates", "0"]);
    let mut parts = Vec::new();
    for p in cand
        .and_then(|c| c.at(&["content", "parts"]))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let signature = get(p, "thoughtSignature", "thought_signature")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(t) = p.get("text").and_then(Value::as_str) {
            if p.get("thought").and_then(Value::as_bool) == Some(true) {
                parts.push(Part::Thinking {
                    text: t.to_string(),
                    signature,
                });
            } else if let Some(Part::Text(prev)) = parts.last_mut() {
                // Gemini splits text into several parts; clients want one.
                prev.push_str(t);
            } else if !t.is_empty() {
                parts.push(Part::Text(t.to_string()));
            }
        } else if let Some(fc) = get(p, "functionCall", "function_call") {
            parts.push(Part::ToolUse(ToolCall {
                id: fc
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                name: fc
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                input: fc
                    .get("args")
                    .cloned()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| json!({})),
            }));
        } else if let Some(d) = get(p, "inlineData", "inline_data")
            && let (Some(mime), Some(data)) = (
                get(d, "mimeType", "mime_type").and_then(Value::as_str),
                d.get("data").and_then(Value::as_str),
            )
        {
            parts.push(Part::Media(Media::Base64 {
                mime: mime.to_string(),
                data: standard_base64(data),
            }));
        }
    }
    let blocked = cand.is_none() && body.at(&["promptFeedback", "blockReason"]).is_some();
    let finish = if parts.iter().any(|p| matches!(p, Part::ToolUse(_))) {
        FinishReason::ToolUse
    } else if blocked {
        FinishReason::ContentFilter
    } else {
        cand.and_then(|c| c.get("finishReason"))
            .and_then(Value::as_str)
            .map_or(FinishReason::Stop, parse_finish)
    };
    Ok(ChatResponse {
        id: body
            .get("responseId")
            .and_then(Value::as_str)
            .map(str::to_string),
        parts,
        finish,
        usage: body
            .get("usageMetadata")
            .map(parse_usage)
            .unwrap_or_default(),
    })
}

fn response_part(p: &Part) -> Option<Value> {
    Some(match p {
        Part::Text(t) => json!({"text": t}),
        Part::Thinking { text, signature } => {
            let mut o = json!({"text": text, "thought": true});
            if let (Some(sig), Some(obj)) = (signature, o.as_object_mut()) {
                obj.insert("thoughtSignature".into(), json!(sig));
            }
            o
        }
        Part::ToolUse(c) => {
            let mut fc = json!({"name": c.name, "args": c.input});
            if let (false, Some(obj)) = (c.id.is_empty(), fc.as_object_mut()) {
                obj.insert("id".into(), json!(c.id));
            }
            json!({ "functionCall": fc })
        }
        Part::Media(m) => media_part(m),
        Part::ToolResult(_) | Part::RedactedThinking(_) => return None,
    })
}

/// Renders a whole Gemini answer.
pub fn emit_response(resp: &ChatResponse, model: &str) -> Value {
    let parts: Vec<Value> = resp.parts.iter().filter_map(response_part).collect();
    json!({
        "candidates": [{
            "content": {"role": "model", "parts": parts},
            "finishReason": finish_name(resp.finish),
            "index": 0,
        }],
        "usageMetadata": emit_usage(&resp.usage),
        "modelVersion": model,
    })
}

// ------------------------------------------------------- upstream streams

/// Turns upstream Gemini chunks into canonical events. Gemini has no end
/// marker, so the finish is emitted when the input ends.
#[derive(Debug, Default)]
pub struct Decoder {
    started: bool,
    calls: usize,
    reason: Option<FinishReason>,
    usage: Option<TokenUsage>,
    finished: bool,
}

impl Decoder {
    /// Whether a `finishReason` has arrived.
    pub fn saw_finish_reason(&self) -> bool {
        self.reason.is_some() || self.finished
    }

    /// Decodes one `data:` payload.
    pub fn event(&mut self, data: &str, out: &mut Vec<StreamEvent>) {
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        self.value(&v, out);
    }

    /// Decodes one parsed chunk.
    pub fn value(&mut self, v: &Value, out: &mut Vec<StreamEvent>) {
        if self.finished {
            return;
        }
        let v = unwrap(v);
        if let Some(e) = v.get("error") {
            let status = as_u64(e.get("code"))
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(500);
            let message = e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("upstream error")
                .to_string();
            out.push(StreamEvent::Error { status, message });
            self.finished = true;
            return;
        }
        if !v.is_object() {
            return;
        }
        if let Some(u) = v.get("usageMetadata") {
            self.usage = Some(parse_usage(u));
        }
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                input_tokens: self.usage.map(|u| u.input).filter(|n| *n > 0),
            });
        }
        let Some(cand) = v.at(&["candidates", "0"]) else {
            return;
        };
        for p in cand
            .at(&["content", "parts"])
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(t) = p.get("text").and_then(Value::as_str) {
                if p.get("thought").and_then(Value::as_bool) == Some(true) {
                    if !t.is_empty() {
                        out.push(StreamEvent::ThinkingDelta(t.to_string()));
                    }
                    if let Some(sig) =
                        get(p, "thoughtSignature", "thought_signature").and_then(Value::as_str)
                    {
                        out.push(StreamEvent::SignatureDelta(sig.to_string()));
                    }
                } else if !t.is_empty() {
                    out.push(StreamEvent::TextDelta(t.to_string()));
                }
            } else if let Some(fc) = get(p, "functionCall", "function_call") {
                let index = self.calls;
                self.calls += 1;
                let args = fc
                    .get("args")
                    .cloned()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| json!({}));
                out.push(StreamEvent::ToolCallStart {
                    index,
                    id: fc.get("id").and_then(Value::as_str).map(str::to_string),
                    name: fc
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                });
                out.push(StreamEvent::ToolCallArgs {
                    index,
                    fragment: args.to_string(),
                });
                out.push(StreamEvent::ToolCallEnd { index });
            }
        }
        if let Some(r) = cand.get("finishReason").and_then(Value::as_str) {
            self.reason = Some(parse_finish(r));
        }
    }

    /// The upstream ended.
    pub fn end(&mut self, out: &mut Vec<StreamEvent>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let reason = if self.calls > 0 {
            Some(FinishReason::ToolUse)
        } else {
            self.reason
        };
        out.push(StreamEvent::Finish {
            reason,
            usage: self.usage,
        });
    }
}

// --------------------------------------------------------- client streams

/// Writes Gemini stream elements in the client's framing.
#[derive(Debug)]
pub struct Framer {
    framing: GeminiFraming,
    opened: bool,
    closed: bool,
}

impl Framer {
    /// A framer for `framing`.
    pub fn new(framing: GeminiFraming) -> Self {
        Self {
            framing,
            opened: false,
            closed: false,
        }
    }

    /// Writes one element (raw JSON text).
    pub fn element(&mut self, json_text: &str, out: &mut Vec<u8>) {
        self.element_with(out, |out| out.extend_from_slice(json_text.as_bytes()));
    }

    /// Writes one element whose JSON text `write` appends to `out`.
    fn element_with(&mut self, out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
        if self.closed {
            return;
        }
        match self.framing {
            GeminiFraming::Sse => {
                out.extend_from_slice(b"data: ");
                write(out);
                out.extend_from_slice(b"\n\n");
            }
            GeminiFraming::JsonArray => {
                out.extend_from_slice(if self.opened { b",\r\n" } else { b"[" });
                self.opened = true;
                write(out);
            }
        }
    }

    /// Ends the framing (`]` for arrays; `[]` if nothing was written).
    pub fn close(&mut self, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        self.closed = true;
        if self.framing == GeminiFraming::JsonArray {
            if !self.opened {
                out.push(b'[');
            }
            out.push(b']');
        }
    }
}

#[derive(Debug)]
struct PendingCall {
    id: Option<String>,
    name: String,
    args: String,
}

/// Canonical events to a Gemini client stream. Calls are buffered until
/// complete because Gemini clients expect whole `functionCall`s.
#[derive(Debug)]
pub struct Encoder {
    model: String,
    framer: Framer,
    calls: Vec<(usize, PendingCall)>,
    finished: bool,
    /// What follows a chunk's one part (`role`, `index`, `modelVersion`,
    /// in the order a `Value` writes them), written once.
    tail: Vec<u8>,
}

/// A chunk with `parts` in the Gemini stream shape.
fn chunk(parts: Vec<Value>, model: &str) -> Value {
    json!({"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0}], "modelVersion": model})
}

impl Encoder {
    /// An encoder answering as `model` in `framing`.
    pub fn new(model: &str, framing: GeminiFraming) -> Self {
        let mut tail = br#"],"role":"model"},"index":0}],"modelVersion":"#.to_vec();
        super::json::push_str(&mut tail, model);
        tail.push(b'}');
        Self {
            model: model.to_string(),
            framer: Framer::new(framing),
            calls: Vec::new(),
            finished: false,
            tail,
        }
    }

    fn emit(&mut self, v: &Value, out: &mut Vec<u8>) {
        // Straight into `out` (writing to a `Vec` cannot fail).
        self.framer.element_with(out, |out| {
            let _ = serde_json::to_writer(out, v);
        });
    }

    /// The chunk of a text or thought delta, written as [`Self::emit`]
    /// writes its `Value` without building one: an event is a stream's
    /// unit of work, and building, writing and dropping a `Value` was
    /// most of its cost.
    fn delta_chunk(&mut self, text: &str, thought: bool, out: &mut Vec<u8>) {
        let tail = &self.tail;
        self.framer.element_with(out, |out| {
            out.extend_from_slice(br#"{"candidates":[{"content":{"parts":[{"text":"#);
            super::json::push_str(out, text);
            out.extend_from_slice(if thought {
                br#","thought":true}"#
            } else {
                b"}"
            });
            out.extend_from_slice(tail);
        });
    }

    fn flush_call(&mut self, pos: usize, out: &mut Vec<u8>) {
        if pos >= self.calls.len() {
            return;
        }
        let (_, call) = self.calls.remove(pos);
        let args = match serde_json::from_str::<Value>(&call.args) {
            Ok(v @ Value::Object(_)) => v,
            _ => json!({}),
        };
        let mut fc = json!({"name": call.name, "args": args});
        if let (Some(id), Some(obj)) = (call.id, fc.as_object_mut()) {
            obj.insert("id".into(), json!(id));
        }
        let c = chunk(vec![json!({"functionCall": fc})], &self.model);
        self.emit(&c, out);
    }

    /// Encodes one event.
    pub fn event(&mut self, ev: &StreamEvent, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        match ev {
            StreamEvent::Start { .. } => {}
            StreamEvent::TextDelta(t) if !t.is_empty() => self.delta_chunk(t, false, out),
            StreamEvent::ThinkingDelta(t) if !t.is_empty() => self.delta_chunk(t, true, out),
            StreamEvent::SignatureDelta(s) if !s.is_empty() => {
                let c = chunk(
                    vec![json!({"text": "", "thought": true, "thoughtSignature": s})],
                    &self.model,
                );
                self.emit(&c, out);
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.calls.push((
                    *index,
                    PendingCall {
                        id: id.clone(),
                        name: name.clone(),
                        args: String::new(),
                    },
                ));
            }
            StreamEvent::ToolCallArgs { index, fragment } => {
                if let Some((_, c)) = self.calls.iter_mut().find(|(i, _)| i == index) {
                    c.args.push_str(fragment);
                }
            }
            StreamEvent::ToolCallEnd { index } => {
                if let Some(pos) = self.calls.iter().position(|(i, _)| i == index) {
                    self.flush_call(pos, out);
                }
            }
            StreamEvent::Finish { reason, usage } => {
                while !self.calls.is_empty() {
                    self.flush_call(0, out);
                }
                let reason = reason.unwrap_or(FinishReason::Stop);
                let mut c = json!({"candidates": [{
                    "content": {"role": "model", "parts": [{"text": ""}]},
                    "finishReason": finish_name(reason),
                    "index": 0,
                }], "modelVersion": self.model});
                if let (Some(u), Some(obj)) = (usage, c.as_object_mut()) {
                    obj.insert("usageMetadata".into(), emit_usage(u));
                }
                self.emit(&c, out);
                self.finished = true;
            }
            StreamEvent::Error { status, message } => {
                let e = errors::gemini_error(*status, message);
                self.emit(&e, out);
                self.finished = true;
            }
            _ => {}
        }
    }

    /// Ends the client stream.
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
        self.framer.close(out);
    }
}

/// Gemini accepts (and the google-genai SDK sends) URL-safe base64 in
/// `inlineData`; OpenAI data URIs and Anthropic image sources need the
/// standard alphabet with padding. Converting costs one pass over the data.
fn standard_base64(data: &str) -> String {
    let mut out: String = data
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while !out.len().is_multiple_of(4) {
        out.push('=');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A text or thought delta is written byte for byte as its chunk's
    /// `Value` would be, in either framing, escapes in the text and in
    /// the model included.
    #[test]
    fn a_delta_chunk_is_written_as_its_value_would_be() {
        for framing in [GeminiFraming::Sse, GeminiFraming::JsonArray] {
            for model in ["gemini-2.5-pro", "odd \"model\" \\ é"] {
                let (mut fast, mut slow) =
                    (Encoder::new(model, framing), Encoder::new(model, framing));
                let (mut a, mut b) = (Vec::new(), Vec::new());
                for text in ["plain", "\"quoted\" \\ \n\u{1}", "é 🦀"] {
                    for thought in [false, true] {
                        fast.delta_chunk(text, thought, &mut a);
                        let part = if thought {
                            json!({"text": text, "thought": true})
                        } else {
                            json!({"text": text})
                        };
                        slow.emit(&chunk(vec![part], model), &mut b);
                    }
                }
                assert_eq!(String::from_utf8(a).unwrap(), String::from_utf8(b).unwrap());
            }
        }
    }

    #[test]
    fn url_safe_inline_data_becomes_standard_base64() {
        assert_eq!(standard_base64("nGNg-M8_"), "nGNg+M8/");
        assert_eq!(standard_base64("YWI"), "YWI=");
        assert_eq!(standard_base64("YQ"), "YQ==");
        assert_eq!(standard_base64("aGk="), "aGk=");
    }

    #[test]
    fn positional_id_pairing_per_name() {
        let body = json!({"contents": [
            {"role": "user", "parts": [{"text": "go"}]},
            {"role": "model", "parts": [
                {"functionCall": {"name": "a", "args": {"x": 1}}},
                {"functionCall": {"name": "b", "args": {}}},
                {"functionCall": {"name": "a", "args": {"x": 2}}}]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "a", "response": {"result": "r1"}}},
                {"functionResponse": {"name": "a", "response": {"result": "r2"}}},
                {"functionResponse": {"name": "b", "response": {"v": 3}}}]}
        ]});
        let req = parse_request(&body, "toolu_").unwrap();
        let ids = |i: usize| -> Vec<String> {
            req.messages[i]
                .parts
                .iter()
                .map(|p| match p {
                    Part::ToolUse(c) => c.id.clone(),
                    Part::ToolResult(r) => format!("{}={}", r.id, r.content),
                    _ => String::new(),
                })
                .collect()
        };
        assert_eq!(ids(1), vec!["toolu_1_0", "toolu_1_1", "toolu_1_2"]);
        assert_eq!(
            ids(2),
            vec!["toolu_1_0=r1", "toolu_1_2=r2", "toolu_1_1={\"v\":3}"]
        );
    }

    #[test]
    fn emit_orders_responses_and_maps_names() {
        let req = ChatRequest {
            messages: vec![
                Message {
                    role: Role::Assistant,
                    parts: vec![
                        Part::ToolUse(ToolCall {
                            id: "c1".into(),
                            name: "f".into(),
                            input: json!({}),
                        }),
                        Part::ToolUse(ToolCall {
                            id: "c2".into(),
                            name: "g".into(),
                            input: json!({}),
                        }),
                    ],
                },
                Message {
                    role: Role::User,
                    parts: vec![
                        Part::Text("more".into()),
                        Part::ToolResult(ToolResult {
                            id: "c2".into(),
                            content: "2".into(),
                            is_error: false,
                        }),
                        Part::ToolResult(ToolResult {
                            id: "c1".into(),
                            content: "1".into(),
                            is_error: false,
                        }),
                        Part::ToolResult(ToolResult {
                            id: "c1".into(),
                            content: "dup".into(),
                            is_error: false,
                        }),
                    ],
                },
            ],
            ..ChatRequest::default()
        };
        let out = emit_request(&req, "gemini-2.5-pro");
        let parts = &out["contents"][1]["parts"];
        assert_eq!(parts[0]["functionResponse"]["name"], "f");
        assert_eq!(parts[1]["functionResponse"]["name"], "g");
        assert_eq!(parts[2]["text"], "more");
        assert_eq!(parts.as_array().map(Vec::len), Some(3));
        assert_eq!(out["safetySettings"].as_array().map(Vec::len), Some(5));
    }

    #[test]
    fn thinking_config_by_model() {
        let req = ChatRequest {
            reasoning: Some(Reasoning::Effort(Effort::High)),
            ..ChatRequest::default()
        };
        assert_eq!(
            emit_request(&req, "gemini-3-pro")["generationConfig"]["thinkingConfig"]["thinkingLevel"],
            "HIGH"
        );
        assert_eq!(
            emit_request(&req, "gemini-2.5-pro")["generationConfig"]["thinkingConfig"]["thinkingBudget"],
            24576
        );
        assert_eq!(
            parse_thinking(&json!({"thinkingBudget": 0})),
            Some(Reasoning::Disabled)
        );
        assert_eq!(
            parse_thinking(&json!({"thinking_budget": -1})),
            Some(Reasoning::Adaptive)
        );
    }

    #[test]
    fn array_framing() {
        let mut f = Framer::new(GeminiFraming::JsonArray);
        let mut out = Vec::new();
        f.close(&mut out);
        assert_eq!(out, b"[]");
        let mut f = Framer::new(GeminiFraming::JsonArray);
        let mut out = Vec::new();
        f.element("1", &mut out);
        f.element("2", &mut out);
        f.close(&mut out);
        f.element("3", &mut out);
        assert_eq!(out, b"[1,\r\n2]");
    }

    #[test]
    fn response_finish_and_usage() {
        let r = parse_response(&json!({"response": {"candidates": [{"content": {"parts": [
            {"text": "t", "thought": true, "thoughtSignature": "s"}, {"functionCall": {"name": "f", "args": {"a": 1}}}]},
            "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 3, "thoughtsTokenCount": 4}}}))
        .unwrap();
        assert_eq!(r.finish, FinishReason::ToolUse);
        assert_eq!(r.usage.output, 7);
        assert_eq!(emit_usage(&r.usage)["candidatesTokenCount"], 3);
        assert!(parse_response(&json!(3)).is_err());
    }
}
