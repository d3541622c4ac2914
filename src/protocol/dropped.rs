//! What a cross-family conversion leaves behind: the request fields the
//! target protocol has no equivalent for. The converters drop them
//! silently (a field the real API accepts must never cause a 400); this
//! names them so the gateway can say so in a debug log line.
//!
//! Same-family requests pass through whole, so nothing is dropped there.

use std::collections::BTreeSet;

use serde_json::Value;

use super::Protocol;

/// Anthropic request members the parser reads.
const ANTHROPIC_READ: &[&str] = &[
    "model",
    "messages",
    "system",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "stream",
    "tools",
    "tool_choice",
    "thinking",
    "output_config",
    "output_format",
];

/// Anthropic content block types the parser converts.
const ANTHROPIC_BLOCKS: &[&str] = &[
    "text",
    "image",
    "document",
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
];

/// Members of an Anthropic tool the parser reads.
const ANTHROPIC_TOOL_READ: &[&str] = &["type", "name", "description", "input_schema"];

/// OpenAI chat request members the parser reads.
const OPENAI_READ: &[&str] = &[
    "model",
    "messages",
    "tools",
    "tool_choice",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "reasoning_effort",
    "extra_body",
    "response_format",
    "stream",
    "stream_options",
];

/// Gemini request members the parser reads (both spellings).
const GEMINI_READ: &[&str] = &[
    "model",
    "contents",
    "systemInstruction",
    "system_instruction",
    "tools",
    "toolConfig",
    "tool_config",
    "generationConfig",
    "generation_config",
];

/// Gemini `generationConfig` members the parser reads.
const GEMINI_GENERATION_READ: &[&str] = &[
    "maxOutputTokens",
    "max_output_tokens",
    "temperature",
    "topP",
    "top_p",
    "topK",
    "top_k",
    "stopSequences",
    "stop_sequences",
    "thinkingConfig",
    "thinking_config",
    "responseJsonSchema",
    "response_json_schema",
    "responseSchema",
    "response_schema",
    "responseMimeType",
    "response_mime_type",
];

/// The fields of `body` (a `from` request) that converting it to `to`
/// drops, as JSON-path-like names in a stable order; empty for same-family
/// requests and for bodies that are not objects.
pub fn dropped_fields(from: Protocol, to: Protocol, body: &Value) -> Vec<String> {
    let mut out = BTreeSet::new();
    let Some(obj) = body.as_object().filter(|_| from != to) else {
        return Vec::new();
    };
    let read = match from {
        Protocol::Anthropic => ANTHROPIC_READ,
        Protocol::OpenAi => OPENAI_READ,
        Protocol::Gemini => GEMINI_READ,
        // The Responses reader notes what it drops while it parses.
        Protocol::Responses => return super::responses::dropped(body),
    };
    for key in obj.keys().filter(|k| !read.contains(&k.as_str())) {
        out.insert(key.clone());
    }
    match from {
        Protocol::Anthropic => anthropic(obj, to, &mut out),
        Protocol::Gemini => gemini(obj, &mut out),
        Protocol::OpenAi | Protocol::Responses => {}
    }
    // Sampling settings the target lacks: OpenAI has no top-k, and the
    // Anthropic emitter keeps only the temperature of temperature and top-p.
    let sampling = match from {
        Protocol::Gemini => obj
            .get("generationConfig")
            .or_else(|| obj.get("generation_config"))
            .map(|g| (g, "generationConfig.")),
        _ => Some((body, "")),
    };
    if let Some((g, path)) = sampling {
        let present = |keys: [&'static str; 2]| keys.into_iter().find(|k| g.get(*k).is_some());
        let lost = match to {
            Protocol::OpenAi => present(["top_k", "topK"]),
            Protocol::Anthropic if g.get("temperature").is_some() => present(["top_p", "topP"]),
            _ => None,
        };
        if let Some(key) = lost {
            out.insert(format!("{path}{key}"));
        }
    }
    out.into_iter().collect()
}

fn anthropic(obj: &serde_json::Map<String, Value>, to: Protocol, out: &mut BTreeSet<String>) {
    if let Some(cfg) = obj.get("output_config").and_then(Value::as_object) {
        for (k, v) in cfg {
            let used = match k.as_str() {
                // Effort refines thinking; without thinking it says nothing
                // the converters carry.
                "effort" => obj.get("thinking").is_some(),
                "format" => v.get("type").and_then(Value::as_str) == Some("json_schema"),
                _ => false,
            };
            if !used {
                out.insert(format!("output_config.{k}"));
            }
        }
    }
    if obj
        .get("tool_choice")
        .is_some_and(|tc| tc.get("disable_parallel_tool_use").is_some())
    {
        out.insert("tool_choice.disable_parallel_tool_use".into());
    }
    for tool in obj
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let kind = tool.get("type").and_then(Value::as_str).unwrap_or("custom");
        let search = kind.starts_with("web_search") || super::gemini::builtin_tool(tool).is_some();
        // Search converts to Gemini's; other tools need a name.
        let converted = if search {
            to == Protocol::Gemini
        } else {
            tool.get("name").is_some()
        };
        if !converted {
            out.insert(format!("tools[{kind}]"));
        }
        if let Some(t) = tool.as_object() {
            for k in t
                .keys()
                .filter(|k| !ANTHROPIC_TOOL_READ.contains(&k.as_str()))
            {
                out.insert(format!("tools[].{k}"));
            }
        }
    }
    let blocks = obj
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("content").and_then(Value::as_array))
        .flatten();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some(t) if ANTHROPIC_BLOCKS.contains(&t) => {}
            Some(t) => {
                out.insert(format!("messages[].content[{t}]"));
            }
            None => {}
        }
    }
    if obj.values().any(|v| has_key(v, "cache_control")) {
        out.insert("cache_control".into());
    }
}

fn gemini(obj: &serde_json::Map<String, Value>, out: &mut BTreeSet<String>) {
    let generation = obj
        .get("generationConfig")
        .or_else(|| obj.get("generation_config"))
        .and_then(Value::as_object);
    for k in generation
        .into_iter()
        .flat_map(|g| g.keys())
        .filter(|k| !GEMINI_GENERATION_READ.contains(&k.as_str()))
    {
        out.insert(format!("generationConfig.{k}"));
    }
    for tool in obj
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(b) = super::gemini::builtin_tool(tool) {
            out.insert(format!("tools[{}]", b.kind));
        } else if let Some(t) = tool.as_object() {
            for k in t
                .keys()
                .filter(|k| !matches!(k.as_str(), "functionDeclarations" | "function_declarations"))
            {
                out.insert(format!("tools[{k}]"));
            }
        }
    }
}

/// Whether `key` is a member of any object inside `v`.
fn has_key(v: &Value, key: &str) -> bool {
    match v {
        Value::Object(o) => o.contains_key(key) || o.values().any(|c| has_key(c, key)),
        Value::Array(items) => items.iter().any(|c| has_key(c, key)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_what_anthropic_requests_lose() {
        let body = json!({
            "model": "m", "max_tokens": 10, "stream": true,
            "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "system", "content": "in place"},
                {"role": "assistant", "content": [
                    {"type": "server_tool_use", "id": "s1", "name": "web_search", "input": {}},
                    {"type": "text", "text": "ok"}]}],
            "tools": [
                {"name": "Read", "input_schema": {"type": "object"}, "defer_loading": true},
                {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}],
            "thinking": {"type": "adaptive"},
            "output_config": {"effort": "high", "task_budget": 1},
            "context_management": {"edits": []},
            "metadata": {"user_id": "u"}, "service_tier": "auto",
            "container": "c", "mcp_servers": [],
        });
        let to_openai = dropped_fields(Protocol::Anthropic, Protocol::OpenAi, &body);
        assert_eq!(
            to_openai,
            [
                "cache_control",
                "container",
                "context_management",
                "mcp_servers",
                "messages[].content[server_tool_use]",
                "metadata",
                "output_config.task_budget",
                "service_tier",
                "tools[].defer_loading",
                "tools[].max_uses",
                "tools[web_search_20250305]",
            ]
        );
        // Gemini has a search tool: the web search converts.
        let to_gemini = dropped_fields(Protocol::Anthropic, Protocol::Gemini, &body);
        assert!(!to_gemini.contains(&"tools[web_search_20250305]".to_string()));
        assert!(to_gemini.contains(&"context_management".to_string()));
        assert!(dropped_fields(Protocol::Anthropic, Protocol::Anthropic, &body).is_empty());
    }

    #[test]
    fn names_what_gemini_and_openai_requests_lose() {
        let body = json!({
            "contents": [], "safetySettings": [],
            "generationConfig": {"temperature": 1, "seed": 3, "thinkingConfig": {}},
            "tools": [{"functionDeclarations": []}, {"googleSearch": {}}, {"codeExecution": {}}],
        });
        assert_eq!(
            dropped_fields(Protocol::Gemini, Protocol::OpenAi, &body),
            [
                "generationConfig.seed",
                "safetySettings",
                "tools[codeExecution]",
                "tools[googleSearch]"
            ]
        );
        let sampling = json!({"contents": [],
            "generationConfig": {"temperature": 1, "topP": 0.9, "topK": 4}});
        assert_eq!(
            dropped_fields(Protocol::Gemini, Protocol::Anthropic, &sampling),
            ["generationConfig.topP"]
        );
        assert_eq!(
            dropped_fields(Protocol::Gemini, Protocol::OpenAi, &sampling),
            ["generationConfig.topK"]
        );
        let body = json!({"model": "m", "messages": [], "seed": 1, "temperature": 0, "top_p": 1});
        assert_eq!(
            dropped_fields(Protocol::OpenAi, Protocol::Gemini, &body),
            ["seed"]
        );
        assert_eq!(
            dropped_fields(Protocol::OpenAi, Protocol::Anthropic, &body),
            ["seed", "top_p"]
        );
    }
}
