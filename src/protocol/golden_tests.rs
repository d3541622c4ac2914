//! Golden fixtures: `tests/fixtures/<from>_to_<to>/` holds
//! `<case>.request.json` (a `from` client request) or `<case>.response.json`
//! (a `from` answer) next to `<case>.expected.json`, the converted `to`
//! body. Generated ids and timestamps are normalised before comparing, so
//! the files stay stable. Run with `UPDATE_GOLDEN=1` to rewrite the
//! expected files after a deliberate change, then review the diff.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{Protocol, convert_request, convert_response};

/// Model used for each target in the fixtures.
fn model_for(p: Protocol) -> &'static str {
    match p {
        Protocol::OpenAi => "gpt-4o",
        Protocol::Anthropic => "claude-sonnet-4-5",
        Protocol::Gemini => "gemini-2.5-pro",
        Protocol::Responses => "gpt-5-codex",
    }
}

fn proto(name: &str) -> Protocol {
    match name {
        "openai" => Protocol::OpenAi,
        "anthropic" => Protocol::Anthropic,
        "gemini" => Protocol::Gemini,
        "responses" => Protocol::Responses,
        other => panic!("unknown protocol {other} in fixture directory"),
    }
}

use super::ids::normalise;

fn read(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fixture_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The fixture directories (`<from>_to_<to>`), in order, each with its
/// name, the two protocols and its files in order.
fn fixture_dirs() -> Vec<(String, Protocol, Protocol, Vec<PathBuf>)> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(fixture_root())
        .expect("tests/fixtures exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains("_to_"))
        })
        .collect();
    dirs.sort();
    dirs.into_iter()
        .filter_map(|dir| {
            let name = dir.file_name()?.to_string_lossy().into_owned();
            let (from, to) = name.split_once("_to_")?;
            let (from, to) = (proto(from), proto(to));
            let mut files: Vec<PathBuf> = fs::read_dir(&dir)
                .expect("readable fixture dir")
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            files.sort();
            Some((name, from, to, files))
        })
        .collect()
}

#[test]
fn golden_conversions() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut checked = 0;
    let mut failures = Vec::new();
    let dirs = fixture_dirs();
    assert_eq!(dirs.len(), 12, "one directory per conversion direction");
    for (name, from, to, files) in dirs {
        let dir = fixture_root().join(&name);
        for input in files {
            let fname = input
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let (case, is_request) = if let Some(c) = fname.strip_suffix(".request.json") {
                (c.to_string(), true)
            } else if let Some(c) = fname.strip_suffix(".response.json") {
                (c.to_string(), false)
            } else {
                continue;
            };
            let body = read(&input);
            let mut got = if is_request {
                convert_request(from, to, &body, model_for(to), false)
            } else {
                convert_response(from, to, &body, model_for(to))
            }
            .unwrap_or_else(|e| panic!("{name}/{fname}: {}", e.message));
            normalise(&mut got);
            let expected_path = dir.join(format!("{case}.expected.json"));
            if update {
                let text = serde_json::to_string_pretty(&got).expect("serialisable") + "\n";
                fs::write(&expected_path, text).expect("writable fixture");
            } else if read(&expected_path) != got {
                failures.push(format!(
                    "{name}/{case}: got\n{}",
                    serde_json::to_string_pretty(&got).unwrap_or_default()
                ));
            }
            checked += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches:\n{}",
        failures.join("\n")
    );
    assert!(checked >= 30, "only {checked} fixtures found");
}

/// Every answer fixture, and OpenAI answers in unusual shapes, convert
/// to the same thing from bytes as through a `Value`.
#[test]
fn answers_converted_from_bytes_match_the_value_path() {
    let mut cases: Vec<(Protocol, Vec<u8>)> = Vec::new();
    for (_, from, _, files) in fixture_dirs() {
        for file in files {
            if file.to_string_lossy().ends_with(".response.json") {
                cases.push((from, fs::read(&file).expect("readable fixture")));
            }
        }
    }
    assert!(cases.len() >= 12, "only {} answer fixtures", cases.len());
    for odd in [
        // A present null wins over the other name, as `Value::get` finds it.
        r#"{"id":"a","choices":[{"message":{"reasoning_content":null,"reasoning":"hm","content":"hi"},"finish_reason":"stop"}]}"#,
        r#"{"choices":[{"message":{"reasoning":"hm <x>","content":"<thinking>t</thinking>ok"}}]}"#,
        r#"{"choices":[{"message":{"content":[{"type":"text","text":"a"},"b"]},"finish_reason":null}],"usage":null}"#,
        r#"{"choices":[{"message":null,"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
        r#"{"choices":[{"message":{"content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}}]},"finish_reason":"tool_calls"}]}"#,
        r#"{"choices":[{"message":{"content":"x","tool_calls":null}}],"extra":{"deep":[1,{"a":null}]}}"#,
        r#"{"choices":[]}"#,
        r#"{"choices":[{"message":{"reasoning_content":5,"reasoning":"hm","content":"x"}}]}"#,
        r#"{"choices":[{"message":{"content":"x"}}],"usage":{"prompt_tokens":"3","completion_tokens":2.0,"prompt_tokens_details":null,"completion_tokens_details":{"reasoning_tokens":7}}}"#,
        r#"{"choices":[{"message":{"content":"x"}}],"usage":{"prompt_tokens":10,"prompt_tokens_details":{"cached_tokens":4}}}"#,
        r#"{"choices":[{"message":{"content":""},"finish_reason":"length"},{"message":{"content":"second"}}]}"#,
        r#"{"choices":[{"message":{"reasoning":"r","content":"<thinking>a</thinking> b <thinking>c</thinking>"}}]}"#,
        r#"{"choices":[{"message":{"content":"x"}}],"usage":5}"#,
        r#"{"object":"chat.completion"}"#,
        r#"{"id":5,"choices":[{"message":{"content":"x"}}]}"#,
        r#"{"choices":[{"message":{"content":"a","content":"b"}}]}"#,
        r#"{"choices":{"0":{"message":{"content":"x"}}}}"#,
        r#"{"choices":[{"message":"text"}]}"#,
        r#"{"choices":[{"message":{"content":7}}]}"#,
        r#"[1,2]"#,
        r#"not json"#,
        r#"{"choices":[{"message":{"content":"x"}}]} trailing"#,
    ] {
        cases.push((Protocol::OpenAi, odd.as_bytes().to_vec()));
    }
    let tools = super::responses::ToolMap::default();
    for (from, body) in &cases {
        for to in [
            Protocol::OpenAi,
            Protocol::Anthropic,
            Protocol::Gemini,
            Protocol::Responses,
        ] {
            let what = format!("{from:?} -> {to:?}: {}", String::from_utf8_lossy(body));
            let got = super::convert_response_slice(*from, to, body, model_for(to), &tools);
            let Ok(value) = serde_json::from_slice::<Value>(body) else {
                assert_eq!(got, Err(super::SliceError::Json), "{what}");
                continue;
            };
            match super::convert_response_for(*from, to, &value, model_for(to), &tools) {
                Err(e) => assert_eq!(got, Err(super::SliceError::Convert(e)), "{what}"),
                Ok(mut expected) => {
                    let mut got: Value = serde_json::from_slice(&got.expect(&what)).expect(&what);
                    normalise(&mut expected);
                    normalise(&mut got);
                    assert_eq!(got, expected, "{what}");
                }
            }
        }
    }
}

/// The usual OpenAI answer takes the path without a `Value`, and an
/// Anthropic answer written from it has the bytes the `Value` would give.
#[test]
fn a_usual_openai_answer_skips_the_value_tree() {
    let body = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello \"you\" \u00e9","tool_calls":[{"id":"call_9","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#;
    let resp = super::openai::parse_response_slice(body)
        .expect("the usual shape")
        .expect("convertible");
    let value: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(resp, super::openai::parse_response(&value).unwrap());
    let mask = |bytes: Vec<u8>| {
        let mut v: Value = serde_json::from_slice(&bytes).unwrap();
        let id = v["id"].as_str().unwrap().to_owned();
        v["id"] = Value::from("msg_*");
        let text = String::from_utf8(bytes).unwrap();
        (text.replace(&id, "msg_*"), v)
    };
    let (typed, typed_value) = mask(super::anthropic::emit_response_bytes(&resp, "claude", 0));
    let via_value = serde_json::to_vec(&super::anthropic::emit_response(&resp, "claude")).unwrap();
    let (via_value, via_value_value) = mask(via_value);
    assert_eq!(typed, via_value);
    assert_eq!(typed_value["content"][1]["id"], "call_9");
    assert_eq!(typed_value, via_value_value);
}

/// `text` with each generated id (a known prefix and 24 hex digits)
/// replaced by its prefix and `*`.
fn mask_ids(text: &str) -> String {
    let mut out = text.to_owned();
    for prefix in super::ids::PREFIXES {
        let mut from = 0;
        while let Some(at) = out[from..].find(prefix).map(|i| from + i) {
            let tail = at + prefix.len();
            let hex = out[tail..]
                .bytes()
                .take_while(u8::is_ascii_hexdigit)
                .count();
            if hex == super::ids::TAIL_LEN {
                out.replace_range(tail..tail + hex, "*");
            }
            from = tail;
        }
    }
    out
}

/// The hand-written Anthropic answer has, byte for byte, what serde writes
/// from the same answer through a `Value`: for every answer fixture and
/// for every kind of part, escapes and made-up ids included.
#[test]
fn the_written_anthropic_answer_has_the_bytes_of_the_value_path() {
    use super::canonical::{FinishReason, Media, Part, TokenUsage, ToolCall, ToolResult};
    let mut answers = Vec::new();
    for (_, from, _, files) in fixture_dirs() {
        for file in files {
            if file.to_string_lossy().ends_with(".response.json") {
                answers.push(super::parse_response(from, &read(&file)).expect("a fixture parses"));
            }
        }
    }
    let call = |id: &str| {
        Part::ToolUse(ToolCall {
            id: id.into(),
            name: "get \"w\"".into(),
            input: serde_json::json!({"city": "Paris\n", "n": [1, 2.5, null]}),
        })
    };
    answers.push(super::canonical::ChatResponse {
        id: Some("up".into()),
        parts: vec![
            Part::Thinking {
                text: "why\t\u{1}".into(),
                signature: Some("sig/+=".into()),
            },
            Part::Thinking {
                text: String::new(),
                signature: None,
            },
            Part::RedactedThinking("opaque".into()),
            Part::Text("He said \"hi\" \\ é 𝄞 \u{7f}\u{1f}\r\n".into()),
            Part::Text(" ".into()),
            Part::Text(String::new()),
            Part::Media(Media::Base64 {
                mime: "image/png".into(),
                data: "AA==".into(),
            }),
            Part::ToolResult(ToolResult {
                id: "t".into(),
                content: "r".into(),
                is_error: true,
            }),
            call(""),
            call("call:1.2"),
        ],
        finish: FinishReason::ToolUse,
        usage: TokenUsage {
            input: 1_000_000_007,
            output: u64::MAX,
            cache_read: 3,
            cache_creation: 4,
            reasoning: 5,
        },
    });
    for finish in [FinishReason::Length, FinishReason::ContentFilter] {
        answers.push(super::canonical::ChatResponse {
            id: None,
            parts: Vec::new(),
            finish,
            usage: TokenUsage::default(),
        });
    }
    for resp in &answers {
        let written = super::anthropic::emit_response_bytes(resp, "claude \"x\"", 0);
        let via_value = serde_json::to_vec(&super::anthropic::emit_response(resp, "claude \"x\""));
        let written = String::from_utf8(written).expect("UTF-8");
        let via_value = String::from_utf8(via_value.unwrap()).unwrap();
        assert_eq!(mask_ids(&written), mask_ids(&via_value), "{resp:?}");
    }
}

/// Every request fixture, and Anthropic requests in usual and unusual
/// shapes, convert to the same bytes from bytes as through `Value`s (ids
/// the conversion makes up aside), with the same errors.
#[test]
fn requests_converted_from_bytes_match_the_value_path() {
    let mut cases: Vec<(Protocol, Vec<u8>)> = Vec::new();
    for (_, from, _, files) in fixture_dirs() {
        for file in files {
            if file.to_string_lossy().ends_with(".request.json") {
                cases.push((from, fs::read(&file).expect("readable fixture")));
            }
        }
    }
    assert!(cases.len() >= 12, "only {} request fixtures", cases.len());
    for odd in [
        r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi \"you\" \u00e9"}]}"#,
        r#"{"system":"be brief","messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"}]}"#,
        r#"{"system":[{"type":"text","text":"s1","cache_control":{"type":"ephemeral"}},{"type":"text","text":""},{"type":"text","text":"s2"}],"messages":[]}"#,
        r#"{"system":[{"text":"no type"}],"messages":[{"role":"user","content":"x"}]}"#,
        r#"{"system":null,"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":""},{"type":"text","text":null},{"type":"text"},{"type":"text","text":"b","cache_control":{"type":"ephemeral"}}]}]}"#,
        r#"{"system":"","messages":[{"role":"user","content":""},{"role":"user","content":null},{"role":"assistant"},{"role":"user","content":[]},{"role":"user","content":"x"}]}"#,
        r#"{"messages":[{"role":"system","content":"in place"},{"role":"user","content":"x"}]}"#,
        r#"{"max_tokens":256.0,"temperature":0,"top_p":0.9,"top_k":40,"stop_sequences":["a","b"],"messages":[{"role":"user","content":"x"}]}"#,
        r#"{"max_tokens":1e3,"temperature":0.7,"stop_sequences":[],"messages":[{"role":"user","content":"x"}]}"#,
        r#"{"max_tokens":-1,"temperature":null,"stop_sequences":null,"messages":[{"role":"user","content":"x"}]}"#,
        r#"{"max_tokens":"256","temperature":"hot","stop_sequences":"a","messages":[{"role":"user","content":"x"}]}"#,
        r#"{"stop_sequences":["a",1],"messages":[{"role":"user","content":"x"}]}"#,
        r#"{"tools":[],"tool_choice":null,"thinking":null,"output_config":null,"output_format":null,"messages":[{"role":"user","content":"x"}]}"#,
        r#"{"thinking":{"type":"enabled","budget_tokens":1024},"max_tokens":2048,"messages":[{"role":"user","content":"x"}]}"#,
        r#"{"tool_choice":{"type":"auto"},"messages":[{"role":"user","content":"x"}]}"#,
        r#"{"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AA=="}},{"type":"text","text":"what"}]}]}"#,
        r#"{"messages":[{"role":"user","content":5}]}"#,
        r#"{"messages":[{"role":"user","content":{"type":"text","text":"x"}}]}"#,
        r#"{"messages":[{"role":"user","content":"a"}],"messages":[{"role":"user","content":"b"}]}"#,
        r#"{"messages":[{"role":"robot","content":"x"}]}"#,
        r#"{"messages":[{"content":"x"}]}"#,
        r#"{"messages":"x"}"#,
        r#"{"messages":[1]}"#,
        r#"{}"#,
        r#"[1,2]"#,
        r#"not json"#,
        r#"{"messages":[]} trailing"#,
    ] {
        cases.push((Protocol::Anthropic, odd.as_bytes().to_vec()));
    }
    let targets = [
        Protocol::OpenAi,
        Protocol::Anthropic,
        Protocol::Gemini,
        Protocol::Responses,
    ];
    for (from, body) in &cases {
        for to in targets.into_iter().filter(|to| to != from) {
            for stream in [false, true] {
                let what = format!("{from:?} -> {to:?}: {}", String::from_utf8_lossy(body));
                let got = super::convert_request_slice(*from, to, body, model_for(to), stream);
                let value = match serde_json::from_slice::<Value>(body) {
                    Ok(value) => value,
                    Err(e) => {
                        let message = format!("Invalid JSON in request body: {e}");
                        assert_eq!(got.map_err(|e| e.message), Err(message), "{what}");
                        continue;
                    }
                };
                match convert_request(*from, to, &value, model_for(to), stream) {
                    Err(e) => assert_eq!(got, Err(e), "{what}"),
                    Ok(expected) => {
                        let got = got.expect(&what);
                        let mut got_value: Value = serde_json::from_slice(&got).expect(&what);
                        let expected_bytes = serde_json::to_vec(&expected).unwrap();
                        let mut expected = expected;
                        let raw = expected.clone();
                        normalise(&mut expected);
                        normalise(&mut got_value);
                        assert_eq!(got_value, expected, "{what}");
                        if raw == expected {
                            assert_eq!(got, expected_bytes, "{what}");
                        }
                    }
                }
            }
        }
    }
}

/// The usual Anthropic request is the one read without a `Value`; what
/// it cannot say in the canonical model sends it to the general parser.
#[test]
fn the_usual_anthropic_request_skips_the_value_tree() {
    let usual = super::anthropic::parse_request_slice(
        br#"{"model":"m","max_tokens":256,"system":[{"type":"text","text":"s","cache_control":{"type":"ephemeral"}}],"metadata":{"user_id":"u"},"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"text","text":"yo"}]}],"stream":true}"#,
    )
    .expect("the usual shape");
    assert_eq!(usual.system, ["s"]);
    assert_eq!(usual.messages.len(), 2);
    assert_eq!(usual.max_tokens, Some(256));
    for unusual in [
        r#"{"messages":[],"tools":[{"name":"f","input_schema":{}}]}"#,
        r#"{"messages":[],"thinking":{"type":"adaptive"}}"#,
        r#"{"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"r"}]}]}"#,
        r#"{"messages":[],"messages":[]}"#,
    ] {
        assert!(
            super::anthropic::parse_request_slice(unusual.as_bytes()).is_none(),
            "{unusual}"
        );
    }
}
