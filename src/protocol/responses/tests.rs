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

/// A request that declares the same namespaced tool twice flattens it the
/// same way every time: the first declaration keeps the plain name. (The
/// map was a `HashMap` whose per-instance order decided; the conversion
/// fuzz target found the two conversions of one request disagreeing.)
#[test]
fn a_tool_declared_twice_flattens_the_same_way_every_time() {
    let body = json!({"model": "m", "input": "hi", "tools": [
        {"type": "namespace", "name": "agents", "tools": [
            {"type": "function", "name": "wait", "parameters": {"type": "object"}}]},
        {"type": "namespace", "name": "agents", "tools": [
            {"type": "function", "name": "wait", "parameters": {"type": "object"}}]},
    ], "tool_choice": {"type": "function", "name": "wait", "namespace": "agents"}});
    let convert = || {
        crate::protocol::convert_request(
            crate::protocol::Protocol::Responses,
            crate::protocol::Protocol::OpenAi,
            &body,
            "m",
            false,
        )
        .unwrap()
    };
    let first = convert();
    let names: Vec<&str> = first["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["wait", "wait"]);
    assert_eq!(first["tool_choice"]["function"]["name"], "wait");
    for _ in 0..50 {
        assert_eq!(convert(), first);
    }
}
