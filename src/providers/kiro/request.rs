//! Anthropic Messages body → Kiro `generateAssistantResponse` body.
//! Kiro rejects with "Improperly formed request." whatever breaks its
//! shape rules, so each rule is applied here: alternating history ending
//! with an assistant turn, a user `currentMessage`, no empty contents, no
//! nulls or empty collections, tool results deduplicated, long tool names
//! shortened (and mapped back in answers). No prompt is added beyond the
//! thinking switch tags.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Map, Value, json};

/// Longest tool name Kiro accepts.
const MAX_TOOL_NAME: usize = 64;
/// Longest tool description Kiro accepts.
const MAX_TOOL_DESCRIPTION: usize = 9216;
/// `budget_tokens` is clamped to these bounds for Kiro's
/// `<max_thinking_length>` tag; the default stands in when it is missing
/// or invalid.
const THINKING_MIN: u64 = 1024;
const THINKING_MAX: u64 = 24576;
const THINKING_DEFAULT: u64 = 20000;

/// Client model → Kiro model id, before `kiro.model_map` overrides.
pub const DEFAULT_MODEL_MAP: &[(&str, &str)] = &[
    ("claude-opus-4-5", "claude-opus-4.5"),
    ("claude-opus-4-5-20251101", "claude-opus-4.5"),
    ("claude-haiku-4-5", "claude-haiku-4.5"),
    ("claude-haiku-4-5-20251001", "claude-haiku-4.5"),
    ("claude-sonnet-4-5", "claude-sonnet-4.5"),
    ("claude-sonnet-4-5-20250929", "claude-sonnet-4.5"),
    ("claude-sonnet-4-6", "claude-sonnet-4.6"),
    ("claude-opus-4-6", "claude-opus-4.6"),
    ("claude-opus-4-7", "claude-opus-4.7"),
    ("claude-opus-4-8", "claude-opus-4.8"),
];

/// The Kiro model id for a client model: the configured map, then the
/// built-in one, else the name unchanged.
pub fn model_id(model: &str, overrides: &BTreeMap<String, String>) -> String {
    if let Some(m) = overrides.get(model) {
        return m.clone();
    }
    DEFAULT_MODEL_MAP
        .iter()
        .find(|(from, _)| *from == model)
        .map_or_else(|| model.to_owned(), |(_, to)| (*to).to_owned())
}

/// The result of normalising one request.
#[derive(Debug)]
pub struct KiroRequest {
    /// The body to send.
    pub body: Value,
    /// Shortened tool name → the client's name.
    pub aliases: HashMap<String, String>,
    /// Whether `<thinking>` tags in the answer are thinking.
    pub thinking: bool,
}

#[derive(Debug, Clone)]
enum Block {
    Text(String),
    Thinking(String),
    Image(Value),
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    ToolResult {
        id: String,
        text: String,
        error: bool,
    },
}

/// `<first 51 chars>_<12 hex of sha256(name)>` for names over 64 chars.
pub fn short_name(name: &str) -> String {
    if name.len() <= MAX_TOOL_NAME {
        return name.to_owned();
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let hex = crate::hex::hex(&digest.as_ref()[..6]);
    let mut cut = 51;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{hex}", &name[..cut])
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .filter_map(|b| match b {
                Value::String(s) => Some(s.clone()),
                _ if b["type"] == "text" => b["text"].as_str().map(str::to_owned),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn image(block: &Value) -> Option<Block> {
    let source = &block["source"];
    match source["type"].as_str() {
        Some("base64") => {
            let media = source["media_type"].as_str().unwrap_or("image/png");
            let format = media.rsplit('/').next().unwrap_or("png");
            let data = source["data"].as_str()?;
            Some(Block::Image(
                json!({"format": format, "source": {"bytes": data}}),
            ))
        }
        Some("url") => Some(Block::Text(format!(
            "[image: {}]",
            source["url"].as_str().unwrap_or("")
        ))),
        _ => None,
    }
}

fn blocks(content: &Value) -> Vec<Block> {
    let items = match content {
        Value::String(s) => return vec![Block::Text(s.clone())],
        Value::Array(items) => items,
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    for b in items {
        match b["type"].as_str().unwrap_or("") {
            "text" => {
                if let Some(t) = b["text"].as_str().filter(|t| !t.is_empty()) {
                    out.push(Block::Text(t.to_owned()));
                }
            }
            "thinking" => {
                if let Some(t) = b["thinking"].as_str().filter(|t| !t.is_empty()) {
                    out.push(Block::Thinking(t.to_owned()));
                }
            }
            "image" => out.extend(image(b)),
            "tool_use" => out.push(Block::ToolUse {
                id: b["id"].as_str().unwrap_or_default().to_owned(),
                name: b["name"].as_str().unwrap_or_default().to_owned(),
                input: b.get("input").cloned().unwrap_or_else(|| json!({})),
            }),
            "tool_result" => out.push(Block::ToolResult {
                id: b["tool_use_id"].as_str().unwrap_or_default().to_owned(),
                text: text_of(&b["content"]),
                error: b["is_error"] == true,
            }),
            _ => {}
        }
    }
    out
}

/// `input` without empty-string keys (Kiro rejects them).
fn clean_input(input: Value) -> Value {
    match input {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k, clean_input(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(clean_input).collect()),
        Value::Null => json!({}),
        other => other,
    }
}

/// The thinking switch tags for an Anthropic `thinking` setting (adaptive
/// thinking takes its effort from `output_config.effort`).
fn thinking_tags(thinking: &Value, output_effort: Option<&Value>) -> Option<String> {
    match thinking["type"].as_str()? {
        "enabled" => {
            let budget = thinking["budget_tokens"]
                .as_u64()
                .map_or(THINKING_DEFAULT, |b| b.clamp(THINKING_MIN, THINKING_MAX));
            Some(format!(
                "<thinking_mode>enabled</thinking_mode><max_thinking_length>{budget}</max_thinking_length>"
            ))
        }
        "adaptive" => {
            let effort = thinking["effort"]
                .as_str()
                .or_else(|| output_effort.and_then(Value::as_str))
                .filter(|e| matches!(*e, "low" | "medium" | "high"))
                .unwrap_or("high");
            Some(format!(
                "<thinking_mode>adaptive</thinking_mode><thinking_effort>{effort}</thinking_effort>"
            ))
        }
        _ => None,
    }
}

/// A web search tool, which Kiro refuses: a server tool, or a client tool
/// named so.
fn is_web_search(t: &Value) -> bool {
    let name = t["name"].as_str().unwrap_or_default().to_ascii_lowercase();
    name == "web_search"
        || name == "websearch"
        || t["type"]
            .as_str()
            .is_some_and(|ty| ty.starts_with("web_search"))
}

/// Members of an Anthropic request that [`build`] reads.
const READ: &[&str] = &[
    "model",
    "messages",
    "system",
    "tools",
    "thinking",
    "output_config",
    "stream",
];

/// The members of an Anthropic body that Kiro has no equivalent for (its
/// own limits and sampling, `metadata`, `context_management`, …), plus
/// `cache_control` and web search tools when present, for a debug line.
pub fn unread_fields(body: &Value) -> Vec<String> {
    let Some(obj) = body.as_object() else {
        return Vec::new();
    };
    let mut out: Vec<String> = obj
        .keys()
        .filter(|k| !READ.contains(&k.as_str()))
        .cloned()
        .collect();
    if body.to_string().contains("\"cache_control\"") {
        out.push("cache_control".into());
    }
    if obj["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .any(is_web_search)
    {
        out.push("tools[web_search]".into());
    }
    out
}

/// Normalises an Anthropic body for Kiro. `profile_arn` is sent for
/// social logins only.
pub fn build(
    body: &Value,
    model_id: &str,
    profile_arn: Option<&str>,
    conversation_id: &str,
) -> Result<KiroRequest, String> {
    let obj = body
        .as_object()
        .ok_or("Request body must be a JSON object")?;
    let mut system = text_of(obj.get("system").unwrap_or(&Value::Null));
    let effort = obj.get("output_config").and_then(|o| o.get("effort"));
    let tags = obj.get("thinking").and_then(|t| thinking_tags(t, effort));
    let thinking = tags.is_some();
    if let Some(tags) = tags
        && !system.contains("<thinking_mode>")
    {
        system = if system.is_empty() {
            tags
        } else {
            format!("{tags}\n{system}")
        };
    }

    // Messages as (is_user, blocks), adjacent roles merged.
    let mut turns: Vec<(bool, Vec<Block>)> = Vec::new();
    for m in obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("Request has no messages")?
    {
        // Kiro has no system turn; an instruction from inside the
        // conversation joins the user turn at its place, as the system
        // prompt joins the first one.
        let (user, content) = match m["role"].as_str() {
            Some("user") => (true, blocks(&m["content"])),
            Some("assistant") => (false, blocks(&m["content"])),
            Some("system") => (true, vec![Block::Text(text_of(&m["content"]))]),
            _ => continue,
        };
        let content: Vec<Block> = content
            .into_iter()
            .filter(|b| !matches!(b, Block::Text(t) if t.is_empty()))
            .collect();
        match turns.last_mut() {
            Some((u, prev)) if *u == user => prev.extend(content),
            _ => turns.push((user, content)),
        }
    }
    // A JSON prefill (`{`) cannot be continued by Kiro.
    if let Some((false, last)) = turns.last()
        && matches!(last.first(), Some(Block::Text(t)) if t.trim() == "{")
    {
        turns.pop();
    }
    if turns.is_empty() {
        return Err("Request has no messages".into());
    }
    // The system text joins the first user turn, or stands alone.
    if !system.is_empty() {
        match turns.first_mut() {
            Some((true, first)) => {
                let pos = first
                    .iter()
                    .position(|b| matches!(b, Block::Text(_)))
                    .unwrap_or(first.len());
                match first.get_mut(pos) {
                    Some(Block::Text(t)) => *t = format!("{system}\n\n{t}"),
                    _ => first.insert(0, Block::Text(system.clone())),
                }
            }
            _ => turns.insert(0, (true, vec![Block::Text(system.clone())])),
        }
    }
    // Kiro answers a user message: an assistant ending is continued.
    if !turns.last().is_some_and(|(u, _)| *u) {
        turns.push((true, vec![Block::Text("Continue".into())]));
    }
    if !turns.first().is_some_and(|(u, _)| *u) {
        turns.insert(0, (true, vec![Block::Text("Continue".into())]));
    }

    let mut aliases = HashMap::new();
    let mut seen_results = HashSet::new();
    let mut used_tools = false;
    let last = turns.len() - 1;
    let mut history = Vec::new();
    let mut current = Value::Null;
    for (i, (user, content)) in turns.into_iter().enumerate() {
        if user {
            let mut text = Vec::new();
            let mut images = Vec::new();
            let mut results = Vec::new();
            for b in content {
                match b {
                    Block::Text(t) | Block::Thinking(t) => text.push(t),
                    Block::Image(v) => images.push(v),
                    Block::ToolResult { id, text: t, error } => {
                        if seen_results.insert(id.clone()) {
                            used_tools = true;
                            results.push(json!({"toolUseId": id,
                                "status": if error { "error" } else { "success" },
                                "content": [{"text": if t.is_empty() { "(empty)".to_owned() } else { t }}]}));
                        }
                    }
                    Block::ToolUse { .. } => {}
                }
            }
            let mut text = text.join("\n");
            if text.trim().is_empty() {
                text = if results.is_empty() {
                    "Continue".into()
                } else {
                    "Tool results provided.".into()
                };
            }
            let mut msg = Map::new();
            msg.insert("content".into(), json!(text));
            msg.insert("modelId".into(), json!(model_id));
            msg.insert("origin".into(), json!("AI_EDITOR"));
            if !images.is_empty() {
                msg.insert("images".into(), Value::Array(images));
            }
            let mut context = Map::new();
            if !results.is_empty() {
                context.insert("toolResults".into(), Value::Array(results));
            }
            if i == last {
                let tools = tools(obj.get("tools"), &mut aliases, used_tools);
                if !tools.is_empty() {
                    context.insert("tools".into(), Value::Array(tools));
                }
            }
            if !context.is_empty() {
                msg.insert("userInputMessageContext".into(), Value::Object(context));
            }
            let item = json!({"userInputMessage": msg});
            if i == last {
                current = item;
            } else {
                history.push(item);
            }
        } else {
            let mut thinking_text = Vec::new();
            let mut text = Vec::new();
            let mut uses = Vec::new();
            for b in content {
                match b {
                    Block::Text(t) => text.push(t),
                    Block::Thinking(t) => thinking_text.push(t),
                    Block::ToolUse { id, name, input } => {
                        used_tools = true;
                        let short = short_name(&name);
                        if short != name {
                            aliases.insert(short.clone(), name);
                        }
                        uses.push(
                            json!({"toolUseId": id, "name": short, "input": clean_input(input)}),
                        );
                    }
                    Block::Image(_) | Block::ToolResult { .. } => {}
                }
            }
            let mut content = text.join("\n");
            if !thinking_text.is_empty() {
                content = format!(
                    "<thinking>{}</thinking>\n\n{content}",
                    thinking_text.join("\n")
                );
            }
            if content.trim().is_empty() {
                content = "Continue".into();
            }
            let mut msg = Map::new();
            msg.insert("content".into(), json!(content));
            if !uses.is_empty() {
                msg.insert("toolUses".into(), Value::Array(uses));
            }
            history.push(json!({"assistantResponseMessage": msg}));
        }
    }
    let mut state = Map::new();
    state.insert("agentTaskType".into(), json!("vibe"));
    state.insert("chatTriggerType".into(), json!("MANUAL"));
    state.insert("conversationId".into(), json!(conversation_id));
    if !history.is_empty() {
        state.insert("history".into(), Value::Array(history));
    }
    state.insert("currentMessage".into(), current);
    let mut out = json!({"conversationState": state});
    if let Some(arn) = profile_arn.filter(|a| !a.is_empty()) {
        out["profileArn"] = json!(arn);
    }
    Ok(KiroRequest {
        body: out,
        aliases,
        thinking,
    })
}

/// Tool specifications of the current message: web-search tools dropped
/// (Kiro has none), long names shortened (`aliases` maps them back), long
/// descriptions cut, and a do-nothing placeholder when the history uses
/// tools but none is left.
fn tools(
    declared: Option<&Value>,
    aliases: &mut HashMap<String, String>,
    used_tools: bool,
) -> Vec<Value> {
    let mut out = Vec::new();
    for t in declared.and_then(Value::as_array).into_iter().flatten() {
        let Some(name) = t["name"].as_str().filter(|n| !n.is_empty()) else {
            continue;
        };
        if is_web_search(t) {
            continue;
        }
        let short = short_name(name);
        if short != name {
            aliases.insert(short.clone(), name.to_owned());
        }
        let mut description = t["description"]
            .as_str()
            .filter(|d| !d.trim().is_empty())
            .unwrap_or(name)
            .to_owned();
        if description.len() > MAX_TOOL_DESCRIPTION {
            let mut cut = MAX_TOOL_DESCRIPTION - 3;
            while !description.is_char_boundary(cut) {
                cut -= 1;
            }
            description.truncate(cut);
            description.push_str("...");
        }
        let schema = t
            .get("input_schema")
            .filter(|s| s.is_object())
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        out.push(
            json!({"toolSpecification": {"name": short, "description": description,
            "inputSchema": {"json": schema}}}),
        );
    }
    if out.is_empty() && used_tools {
        // History refers to tools; Kiro wants at least one declared.
        out.push(json!({"toolSpecification": {"name": "no_tool_available",
            "description": "This tool does nothing; no tools are available.",
            "inputSchema": {"json": {"type": "object", "properties": {}}}}}));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kiro(body: Value) -> Value {
        build(&body, "claude-sonnet-4.5", None, "conv")
            .unwrap()
            .body
    }

    #[test]
    fn single_turn_with_system_and_tools() {
        let long = "t".repeat(80);
        let out = build(
            &json!({"model": "claude-sonnet-4-5", "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
                          {"name": long, "description": "", "input_schema": {"type": "object"}},
                          {"name": "web_search", "description": "search"}]}),
            "claude-sonnet-4.5",
            Some("arn:aws:codewhisperer:us-east-1:1:profile/x"),
            "conv",
        )
        .unwrap();
        let b = &out.body;
        assert_eq!(
            b["profileArn"],
            "arn:aws:codewhisperer:us-east-1:1:profile/x"
        );
        let state = &b["conversationState"];
        assert!(state.get("history").is_none(), "single turn has no history");
        let cur = &state["currentMessage"]["userInputMessage"];
        assert_eq!(cur["content"], "Be brief.\n\nhi");
        assert_eq!(cur["modelId"], "claude-sonnet-4.5");
        assert_eq!(cur["origin"], "AI_EDITOR");
        let tools = cur["userInputMessageContext"]["tools"].as_array().unwrap();
        assert_eq!(tools.len(), 2, "web_search dropped");
        let short = tools[1]["toolSpecification"]["name"].as_str().unwrap();
        assert_eq!(short.len(), 64);
        assert_eq!(out.aliases[short], long);
        assert_eq!(tools[1]["toolSpecification"]["description"], long.as_str());
        assert!(!b.to_string().contains("null"));
    }

    #[test]
    fn multi_turn_with_tool_use_and_results() {
        let b = kiro(json!({"system": "S", "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [{"type": "text", "text": "checking"},
                {"type": "tool_use", "id": "tu1", "name": "get_weather", "input": {"city": "Paris", "": 1}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu1", "content": [{"type": "text", "text": "sunny"}]},
                                         {"type": "tool_result", "tool_use_id": "tu1", "content": "dup"}]}]}));
        let h = b["conversationState"]["history"].as_array().unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0]["userInputMessage"]["content"], "S\n\nweather?");
        let a = &h[1]["assistantResponseMessage"];
        assert_eq!(a["content"], "checking");
        assert_eq!(a["toolUses"][0]["input"], json!({"city": "Paris"}));
        let cur = &b["conversationState"]["currentMessage"]["userInputMessage"];
        assert_eq!(cur["content"], "Tool results provided.");
        let results = cur["userInputMessageContext"]["toolResults"]
            .as_array()
            .unwrap();
        assert_eq!(results.len(), 1, "duplicate tool result dropped");
        assert_eq!(results[0]["content"][0]["text"], "sunny");
        assert_eq!(results[0]["status"], "success");
        // History mentions tools but none are declared: placeholder.
        assert_eq!(
            cur["userInputMessageContext"]["tools"][0]["toolSpecification"]["name"],
            "no_tool_available"
        );
    }

    #[test]
    fn system_turns_join_the_user_turn_at_their_place() {
        // As Claude Code sends them: after the prompt, string or blocks.
        let b = kiro(json!({"messages": [
            {"role": "user", "content": "hi"},
            {"role": "system", "content": "Agents: Explore"},
            {"role": "assistant", "content": "hello"},
            {"role": "system", "content": [{"type": "text", "text": "Plan mode", "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": "go"}],
            "thinking": {"type": "adaptive"}, "output_config": {"effort": "low"}}));
        let h = b["conversationState"]["history"].as_array().unwrap();
        assert!(
            h[0]["userInputMessage"]["content"]
                .as_str()
                .unwrap()
                .ends_with("hi\nAgents: Explore"),
            "{b}"
        );
        let cur = &b["conversationState"]["currentMessage"]["userInputMessage"];
        assert_eq!(cur["content"], "Plan mode\ngo");
        assert!(
            h[0]["userInputMessage"]["content"]
                .as_str()
                .unwrap()
                .contains("<thinking_effort>low</thinking_effort>")
        );
    }

    #[test]
    fn names_what_kiro_drops() {
        let body = json!({"model": "m", "max_tokens": 5, "metadata": {}, "stream": true,
            "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}],
            "messages": [], "tools": [{"name": "WebSearch", "input_schema": {}}]});
        assert_eq!(
            unread_fields(&body),
            [
                "max_tokens",
                "metadata",
                "cache_control",
                "tools[web_search]"
            ]
        );
    }

    #[test]
    fn shape_rules() {
        // Adjacent user messages merge; an assistant ending is continued;
        // a `{` prefill is dropped.
        let b = kiro(json!({"messages": [
            {"role": "user", "content": "a"}, {"role": "user", "content": "b"},
            {"role": "assistant", "content": "answer"}]}));
        let h = b["conversationState"]["history"].as_array().unwrap();
        assert_eq!(h[0]["userInputMessage"]["content"], "a\nb");
        assert_eq!(h[1]["assistantResponseMessage"]["content"], "answer");
        assert_eq!(
            b["conversationState"]["currentMessage"]["userInputMessage"]["content"],
            "Continue"
        );
        let b = kiro(json!({"messages": [{"role": "user", "content": "a"},
            {"role": "assistant", "content": [{"type": "text", "text": "{"}]}]}));
        assert!(b["conversationState"].get("history").is_none());
        // Conversation starting with the assistant: a user turn first.
        let b = kiro(
            json!({"messages": [{"role": "assistant", "content": "hello"},
            {"role": "user", "content": "hi"}]}),
        );
        let h = b["conversationState"]["history"].as_array().unwrap();
        assert!(h[0].get("userInputMessage").is_some());
        assert!(build(&json!({"messages": []}), "m", None, "c").is_err());
    }

    #[test]
    fn images_thinking_and_error_results() {
        let out = build(
            &json!({"thinking": {"type": "enabled", "budget_tokens": 100000},
                "messages": [{"role": "user", "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "AAAA"}},
                    {"type": "text", "text": "what is this"}]},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "a cat"},
                    {"type": "tool_use", "id": "x", "name": "zoom", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x", "is_error": true, "content": "failed"}]}]}),
            "m",
            None,
            "c",
        )
        .unwrap();
        assert!(out.thinking);
        let h = out.body["conversationState"]["history"].as_array().unwrap();
        let first = &h[0]["userInputMessage"];
        assert_eq!(
            first["content"],
            "<thinking_mode>enabled</thinking_mode><max_thinking_length>24576</max_thinking_length>\n\nwhat is this"
        );
        assert_eq!(
            first["images"][0],
            json!({"format": "jpeg", "source": {"bytes": "AAAA"}})
        );
        assert_eq!(
            h[1]["assistantResponseMessage"]["content"],
            "<thinking>hmm</thinking>\n\na cat"
        );
        let cur = &out.body["conversationState"]["currentMessage"]["userInputMessage"];
        assert_eq!(
            cur["userInputMessageContext"]["toolResults"][0]["status"],
            "error"
        );
    }

    #[test]
    fn model_ids() {
        let mut overrides = BTreeMap::new();
        assert_eq!(
            model_id("claude-sonnet-4-5-20250929", &overrides),
            "claude-sonnet-4.5"
        );
        assert_eq!(model_id("claude-unknown", &overrides), "claude-unknown");
        overrides.insert("claude-sonnet-4-5".to_owned(), "CUSTOM".to_owned());
        assert_eq!(model_id("claude-sonnet-4-5", &overrides), "CUSTOM");
    }

    #[test]
    fn short_names_are_stable_and_bounded() {
        let name = "é".repeat(40);
        let s = short_name(&name);
        assert!(s.len() <= MAX_TOOL_NAME);
        assert_eq!(s, short_name(&name));
        assert_eq!(short_name("short"), "short");
    }
}
