//! Replays of real coding-agent requests (tests/fixtures/agents, captured
//! from Claude Code 2.1.197 and Gemini CLI 0.61.0, see the README there)
//! through every conversion direction, the Kiro and Qwen request builders
//! included: every system text, every tool, the tool call and its result
//! and every generation setting with an equivalent arrive; what has no
//! equivalent is exactly what `dropped_fields` names for the debug log.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use aiproxy::protocol::{Protocol, convert_request, dropped_fields};
use aiproxy::providers::{kiro, qwen};
use serde_json::{Value, json};

const TOKEN: &str = "aiproxy-file-token-0000";

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/agents")
        .join(name);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn names<'a>(items: impl Iterator<Item = &'a Value>, key: &[&str]) -> BTreeSet<String> {
    items
        .filter_map(|t| key.iter().try_fold(t, |v, k| v.get(*k)))
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// Claude Code's system blocks, then its system messages, as sent.
fn claude_system(body: &Value) -> (Vec<String>, Vec<String>) {
    let top = body["system"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["text"].as_str())
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    let inside = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "system")
        .map(|m| text(&m["content"]))
        .collect();
    (top, inside)
}

fn claude_tools(body: &Value) -> BTreeSet<String> {
    names(body["tools"].as_array().unwrap().iter(), &["name"])
}

const CLAUDE_CODE: [&str; 2] = [
    "claude-code-2.1.197.first.json",
    "claude-code-2.1.197.tool-result.json",
];
const GEMINI_CLI: [&str; 2] = [
    "gemini-cli-0.61.0.first.json",
    "gemini-cli-0.61.0.tool-result.json",
];

#[test]
fn claude_code_requests_are_what_the_capture_says() {
    let body = fixture(CLAUDE_CODE[0]);
    let (_, inside) = claude_system(&body);
    assert!(!inside.is_empty(), "Claude Code sends system messages");
    assert_eq!(body["thinking"]["type"], "adaptive");
    for key in ["output_config", "context_management", "metadata"] {
        assert!(body.get(key).is_some(), "{key}");
    }
    assert!(claude_tools(&body).is_superset(&["Read", "Bash", "Edit"].map(String::from).into()));
}

#[test]
fn claude_code_to_openai() {
    for (i, name) in CLAUDE_CODE.iter().enumerate() {
        let body = fixture(name);
        let out = convert_request(Protocol::Anthropic, Protocol::OpenAi, &body, "gpt-x", true)
            .unwrap_or_else(|e| panic!("{name}: {}", e.message));
        let msgs = out["messages"].as_array().unwrap();
        let (top, inside) = claude_system(&body);
        let system: Vec<String> = msgs
            .iter()
            .filter(|m| m["role"] == "system")
            .map(|m| text(&m["content"]))
            .collect();
        assert_eq!(system[0], top.join("\n"), "{name}");
        assert_eq!(
            system[1..],
            inside[..],
            "{name}: system messages kept, in order"
        );
        // In place: the same roles in the same order after the prompt
        // (tool results become `tool` messages).
        let want: Vec<&str> = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let results = m["content"]
                    .as_array()
                    .is_some_and(|c| c.iter().all(|b| b["type"] == "tool_result"));
                if results {
                    "tool"
                } else {
                    m["role"].as_str().unwrap()
                }
            })
            .collect();
        let got: Vec<&str> = msgs[1..]
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(got, want, "{name}");
        let tools = names(
            out["tools"].as_array().unwrap().iter(),
            &["function", "name"],
        );
        assert_eq!(tools, claude_tools(&body), "{name}");
        let read = out["tools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["function"]["name"] == "Read")
            .unwrap();
        assert!(read["function"]["parameters"]["properties"]["file_path"].is_object());
        assert_eq!(out["reasoning_effort"], body["output_config"]["effort"]);
        assert_eq!(out["max_completion_tokens"], body["max_tokens"]);
        if i == 1 {
            let call = msgs.iter().find_map(|m| m["tool_calls"].get(0)).unwrap();
            assert_eq!(call["function"]["name"], "Read");
            let result = msgs.iter().find(|m| m["role"] == "tool").unwrap();
            assert_eq!(result["tool_call_id"], call["id"]);
            assert!(text(&result["content"]).contains(TOKEN));
        }
        assert_eq!(
            dropped_fields(Protocol::Anthropic, Protocol::OpenAi, &body),
            ["cache_control", "context_management", "metadata"],
            "{name}: a new field to map or to drop on purpose"
        );
    }
}

#[test]
fn claude_code_to_gemini() {
    for (i, name) in CLAUDE_CODE.iter().enumerate() {
        let body = fixture(name);
        let out = convert_request(
            Protocol::Anthropic,
            Protocol::Gemini,
            &body,
            "gemini-x",
            true,
        )
        .unwrap_or_else(|e| panic!("{name}: {}", e.message));
        let (top, inside) = claude_system(&body);
        let system: Vec<String> = out["systemInstruction"]["parts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["text"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(system, [top, inside].concat(), "{name}");
        let contents = out["contents"].as_array().unwrap();
        assert!(contents.iter().all(|c| c["role"] != "system"));
        let decls = out["tools"][0]["functionDeclarations"].as_array().unwrap();
        assert_eq!(names(decls.iter(), &["name"]), claude_tools(&body));
        // Gemini's schema dialect: no `$schema`, which it refuses.
        assert!(!out["tools"].to_string().contains("$schema"));
        assert!(out["generationConfig"]["thinkingConfig"].is_object());
        assert_eq!(
            out["generationConfig"]["maxOutputTokens"],
            body["max_tokens"]
        );
        if i == 1 {
            let parts: Vec<&Value> = contents
                .iter()
                .flat_map(|c| c["parts"].as_array().unwrap())
                .collect();
            let call = parts.iter().find_map(|p| p.get("functionCall")).unwrap();
            assert_eq!(call["name"], "Read");
            let response = parts
                .iter()
                .find_map(|p| p.get("functionResponse"))
                .unwrap();
            assert_eq!(response["name"], "Read");
            assert!(response["response"].to_string().contains(TOKEN));
        }
        assert_eq!(
            dropped_fields(Protocol::Anthropic, Protocol::Gemini, &body),
            ["cache_control", "context_management", "metadata"]
        );
    }
}

#[test]
fn claude_code_to_anthropic_upstreams_passes_through() {
    for name in CLAUDE_CODE {
        let body = fixture(name);
        let out = convert_request(
            Protocol::Anthropic,
            Protocol::Anthropic,
            &body,
            "claude-x",
            true,
        )
        .unwrap();
        let mut want = body.clone();
        want["model"] = json!("claude-x");
        assert_eq!(out, want, "{name}: every field the client sent");
    }
}

#[test]
fn claude_code_to_kiro_and_qwen() {
    for (i, name) in CLAUDE_CODE.iter().enumerate() {
        let body = fixture(name);
        let (_, inside) = claude_system(&body);
        // Kiro takes the Anthropic body itself.
        let k = kiro::request::build(&body, "claude-opus-4.8", None, "conv").unwrap();
        let kiro_text = k.body.to_string();
        for t in &inside {
            let escaped = serde_json::to_string(t).unwrap();
            assert!(
                kiro_text.contains(escaped.trim_matches('"')),
                "{name}: Kiro lost a system message"
            );
        }
        let current = &k.body["conversationState"]["currentMessage"]["userInputMessage"];
        let specs = current["userInputMessageContext"]["tools"]
            .as_array()
            .unwrap();
        // Kiro refuses web search tools; every other tool is declared.
        let mut want = claude_tools(&body);
        want.remove("WebSearch");
        assert_eq!(
            names(specs.iter(), &["toolSpecification", "name"]),
            want,
            "{name}"
        );
        if i == 1 {
            let results = current["userInputMessageContext"]["toolResults"].to_string();
            assert!(results.contains(TOKEN), "{name}");
        }
        // Qwen is OpenAI-shaped: the converted body, then its own rules.
        let mut out = convert_request(
            Protocol::Anthropic,
            Protocol::OpenAi,
            &body,
            "qwen3-coder-plus",
            true,
        )
        .unwrap();
        qwen::prepare(&mut out, true);
        let system = out["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "system")
            .count();
        assert_eq!(system, 1 + inside.len(), "{name}");
    }
}

fn gemini_system(body: &Value) -> String {
    body["systemInstruction"]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn gemini_tools(body: &Value) -> BTreeSet<String> {
    names(
        body["tools"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| t["functionDeclarations"].as_array().unwrap()),
        &["name"],
    )
}

#[test]
fn gemini_cli_to_openai_and_anthropic() {
    for (i, name) in GEMINI_CLI.iter().enumerate() {
        let body = fixture(name);
        let generation = &body["generationConfig"];
        assert!(gemini_tools(&body).contains("read_file"));

        let out = convert_request(Protocol::Gemini, Protocol::OpenAi, &body, "gpt-x", true)
            .unwrap_or_else(|e| panic!("{name}: {}", e.message));
        let msgs = out["messages"].as_array().unwrap();
        assert_eq!(msgs[0]["role"], "system");
        assert_eq!(text(&msgs[0]["content"]), gemini_system(&body));
        let tools = names(
            out["tools"].as_array().unwrap().iter(),
            &["function", "name"],
        );
        assert_eq!(tools, gemini_tools(&body));
        assert_eq!(out["temperature"], generation["temperature"]);
        assert_eq!(out["top_p"], generation["topP"]);
        assert!(out["reasoning_effort"].is_string());
        if i == 1 {
            let result = msgs.iter().find(|m| m["role"] == "tool").unwrap();
            assert!(text(&result["content"]).contains(TOKEN));
            let call = msgs.iter().find_map(|m| m["tool_calls"].get(0)).unwrap();
            assert_eq!(result["tool_call_id"], call["id"]);
        }
        assert_eq!(
            dropped_fields(Protocol::Gemini, Protocol::OpenAi, &body),
            ["generationConfig.topK"]
        );

        let out = convert_request(
            Protocol::Gemini,
            Protocol::Anthropic,
            &body,
            "claude-x",
            true,
        )
        .unwrap_or_else(|e| panic!("{name}: {}", e.message));
        assert_eq!(out["system"], gemini_system(&body));
        assert_eq!(claude_tools(&out), gemini_tools(&body));
        assert_eq!(out["temperature"], generation["temperature"]);
        assert_eq!(out["top_k"], generation["topK"]);
        assert_eq!(
            out["thinking"]["budget_tokens"],
            generation["thinkingConfig"]["thinkingBudget"]
        );
        if i == 1 {
            let blocks: Vec<&Value> = out["messages"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|m| m["content"].as_array().unwrap())
                .collect();
            let call = blocks.iter().find(|b| b["type"] == "tool_use").unwrap();
            let result = blocks.iter().find(|b| b["type"] == "tool_result").unwrap();
            assert_eq!(result["tool_use_id"], call["id"]);
            assert!(result["content"].to_string().contains(TOKEN));
        }
        assert_eq!(
            dropped_fields(Protocol::Gemini, Protocol::Anthropic, &body),
            ["generationConfig.topP"]
        );
        let same = convert_request(Protocol::Gemini, Protocol::Gemini, &body, "g", true).unwrap();
        assert_eq!(same, body, "{name}: a Gemini upstream gets it whole");
    }
}
