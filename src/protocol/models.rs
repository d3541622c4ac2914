//! Model lists in each client protocol and the local token estimate for
//! `count_tokens` (README, "Endpoints").

use crate::protocol::Lookup as _;
use serde_json::{Value, json};

use super::{ModelInfo, Protocol, ids};

/// Token limits advertised in Gemini lists when the real ones are unknown.
const DEFAULT_INPUT_LIMIT: u64 = 128_000;
const DEFAULT_OUTPUT_LIMIT: u64 = 32_768;

/// See [`super::models_list`].
pub fn models_list(proto: Protocol, models: &[ModelInfo]) -> Value {
    let now = ids::unix_now();
    match proto {
        Protocol::OpenAi | Protocol::Responses => {
            let data: Vec<Value> = models
                .iter()
                .map(|m| json!({"id": m.id, "object": "model", "created": now, "owned_by": m.owned_by}))
                .collect();
            json!({"object": "list", "data": data})
        }
        Protocol::Gemini => {
            let list: Vec<Value> = models
                .iter()
                .map(|m| {
                    let id = m.id.strip_prefix("models/").unwrap_or(&m.id);
                    json!({
                        "name": format!("models/{id}"),
                        "displayName": m.display_name.as_deref().unwrap_or(id),
                        "supportedGenerationMethods": ["generateContent", "streamGenerateContent"],
                        "inputTokenLimit": DEFAULT_INPUT_LIMIT,
                        "outputTokenLimit": DEFAULT_OUTPUT_LIMIT,
                    })
                })
                .collect();
            json!({"models": list})
        }
        Protocol::Anthropic => {
            let created = ids::rfc3339(now);
            let data: Vec<Value> = models
                .iter()
                .map(|m| {
                    json!({"type": "model", "id": m.id,
                        "display_name": m.display_name.as_deref().unwrap_or(&m.id), "created_at": created})
                })
                .collect();
            json!({
                "data": data,
                "has_more": false,
                "first_id": models.first().map(|m| m.id.as_str()),
                "last_id": models.last().map(|m| m.id.as_str()),
            })
        }
    }
}

/// Image blocks count as a flat 1600 tokens, as Anthropic's own estimate.
const IMAGE_TOKENS: u64 = 1600;

/// See [`super::count_tokens`]: a local estimate of ~4 characters per
/// token over the system prompt, message text, tool calls and results,
/// thinking and the tools' JSON; 1600 per image; 3 base64 bytes per 4
/// characters of a document, again at 4 per token. No tokenizer is
/// shipped, so the number is approximate by design; clients use it for
/// context budgeting, where a ~10% error is harmless.
pub fn count_tokens(body: &Value) -> u64 {
    let mut chars: u64 = 0;
    let mut fixed: u64 = 0;
    let len = |s: &str| s.chars().count() as u64;
    match body.get("system") {
        Some(Value::String(s)) => chars += len(s),
        Some(Value::Array(blocks)) => {
            for b in blocks {
                chars += b.get("text").and_then(Value::as_str).map_or(0, len);
            }
        }
        _ => {}
    }
    for m in body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match m.get("content") {
            Some(Value::String(s)) => chars += len(s),
            Some(Value::Array(blocks)) => {
                for b in blocks {
                    let (c, f) = block_cost(b);
                    chars += c;
                    fixed += f;
                }
            }
            _ => {}
        }
    }
    if let Some(tools) = body.get("tools").filter(|t| t.is_array()) {
        chars += len(&tools.to_string());
    }
    chars.div_ceil(4) + fixed
}

/// (characters, fixed tokens) of one content block.
fn block_cost(b: &Value) -> (u64, u64) {
    let s = |k: &str| {
        b.get(k)
            .and_then(Value::as_str)
            .map_or(0, |t| t.chars().count() as u64)
    };
    match b.get("type").and_then(Value::as_str).unwrap_or("") {
        "text" => (s("text"), 0),
        "thinking" => (s("thinking"), 0),
        "image" => (0, IMAGE_TOKENS),
        "document" => {
            let data = b
                .at(&["source", "data"])
                .and_then(Value::as_str)
                .map_or(0, |d| d.len() as u64);
            (data * 3 / 4, 0)
        }
        "tool_use" => (
            s("name") + b.get("input").map_or(0, |i| i.to_string().len() as u64),
            0,
        ),
        "tool_result" => match b.get("content") {
            Some(Value::Array(inner)) => inner
                .iter()
                .map(block_cost)
                .fold((0, 0), |a, c| (a.0 + c.0, a.1 + c.1)),
            Some(Value::String(t)) => (t.chars().count() as u64, 0),
            Some(other) => (other.to_string().len() as u64, 0),
            None => (0, 0),
        },
        _ => (0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str) -> ModelInfo {
        ModelInfo {
            id: id.into(),
            owned_by: "aiproxy".into(),
            display_name: None,
        }
    }

    #[test]
    fn list_shapes() {
        let ms = [info("a"), info("models/b")];
        let o = models_list(Protocol::OpenAi, &ms);
        assert_eq!(o["object"], "list");
        assert_eq!(o["data"][1]["object"], "model");
        let g = models_list(Protocol::Gemini, &ms);
        assert_eq!(g["models"][1]["name"], "models/b");
        assert_eq!(
            g["models"][0]["supportedGenerationMethods"][1],
            "streamGenerateContent"
        );
        let a = models_list(Protocol::Anthropic, &ms);
        assert_eq!(a["first_id"], "a");
        assert_eq!(a["last_id"], "models/b");
        assert_eq!(a["has_more"], false);
        assert!(
            a["data"][0]["created_at"]
                .as_str()
                .is_some_and(|s| s.ends_with('Z'))
        );
        assert_eq!(
            models_list(Protocol::Anthropic, &[])["first_id"],
            Value::Null
        );
    }

    #[test]
    fn token_estimate() {
        let body = json!({"system": "12345678", "messages": [
            {"role": "user", "content": "abcd"},
            {"role": "user", "content": [{"type": "image", "source": {}}, {"type": "text", "text": "abcd"}]}
        ]});
        assert_eq!(count_tokens(&body), 4 + 1600);
        assert_eq!(count_tokens(&json!(null)), 0);
    }
}
