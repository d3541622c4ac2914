//! Framing invariants of client streams, shared by the stream tests and
//! the `stream_convert` fuzz target (so both check exactly the same rules).
//!
//! Each checker panics with `ctx` in the message when the client bytes
//! break a rule of the client protocol; `failed` says the stream was ended
//! by `StreamConverter::fail`, which allows a terminal in-band error.

use serde_json::Value;

use super::sse::decode_all;
use super::stream::OpenAiChunk;
use super::{GeminiFraming, Protocol, ids};

/// Replaces generated ids with `<prefix>*` and `"created":N` with 0.
pub fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'outer: while !rest.is_empty() {
        for prefix in ids::PREFIXES {
            if let Some(after) = rest.strip_prefix(prefix)
                && after.len() >= ids::TAIL_LEN
                && after.as_bytes()[..ids::TAIL_LEN]
                    .iter()
                    .all(u8::is_ascii_hexdigit)
            {
                out.push_str(prefix);
                out.push('*');
                rest = &after[ids::TAIL_LEN..];
                continue 'outer;
            }
        }
        if let Some(after) = rest.strip_prefix("\"created\":") {
            out.push_str("\"created\":0");
            rest = after.trim_start_matches(|c: char| c.is_ascii_digit());
            continue;
        }
        if let Some(after) = rest.strip_prefix("\"created_at\":") {
            out.push_str("\"created_at\":0");
            rest = after.trim_start_matches(|c: char| c.is_ascii_digit());
            continue;
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("client output is UTF-8")
}

/// `strict`: a converted stream (the converter wrote every event); a
/// passthrough may relay event types newer than this code, which the
/// Anthropic API asks clients to ignore.
fn check_anthropic(out: &str, ctx: &str, failed: bool, strict: bool) {
    let events = decode_all(out.as_bytes());
    assert!(!events.is_empty(), "{ctx}: empty Anthropic stream");
    let mut open: Option<u64> = None;
    let mut next = 0;
    let mut deltas = 0;
    for (i, ev) in events.iter().enumerate() {
        let v: Value =
            serde_json::from_str(&ev.data).unwrap_or_else(|e| panic!("{ctx}: bad JSON {e}"));
        let ty = v["type"].as_str().unwrap_or_default();
        assert_eq!(
            ev.event.as_deref(),
            Some(ty),
            "{ctx}: event name matches type"
        );
        if i == 0 && ty != "error" {
            assert_eq!(ty, "message_start", "{ctx}: first event");
        }
        match ty {
            "message_start" => assert_eq!(i, 0, "{ctx}: message_start only first"),
            "content_block_start" => {
                assert_eq!(open, None, "{ctx}: block opened while another is open");
                assert_eq!(
                    v["index"].as_u64(),
                    Some(next),
                    "{ctx}: consecutive indices"
                );
                open = Some(next);
                next += 1;
            }
            "content_block_delta" => {
                assert_eq!(v["index"].as_u64(), open, "{ctx}: delta to the open block")
            }
            "content_block_stop" => {
                assert_eq!(v["index"].as_u64(), open, "{ctx}: stop of the open block");
                open = None;
            }
            "message_delta" => {
                assert_eq!(open, None, "{ctx}: blocks closed before message_delta");
                assert!(
                    v["delta"]["stop_reason"].is_string(),
                    "{ctx}: stop_reason set"
                );
                deltas += 1;
            }
            "message_stop" | "error" => {
                assert_eq!(i, events.len() - 1, "{ctx}: {ty} is last");
            }
            "ping" => {}
            other => assert!(!strict, "{ctx}: unexpected event {other}"),
        }
    }
    let last = events
        .last()
        .and_then(|e| e.event.clone())
        .unwrap_or_default();
    if failed {
        assert!(
            last == "error" || last == "message_stop",
            "{ctx}: ends with error"
        );
    } else {
        assert_eq!(last, "message_stop", "{ctx}: ends with message_stop");
        assert_eq!(deltas, 1, "{ctx}: one message_delta");
    }
}

/// `strict` adds the rules only converted streams can promise (a
/// passthrough keeps the upstream's own chunking).
fn check_openai(out: &str, ctx: &str, failed: bool, strict: bool) {
    assert!(out.ends_with("data: [DONE]\n\n"), "{ctx}: ends with [DONE]");
    let events = decode_all(out.as_bytes());
    // Counted as events: "[DONE]" may also occur inside a chunk's JSON.
    assert_eq!(
        events.iter().filter(|e| e.data == "[DONE]").count(),
        1,
        "{ctx}: exactly one [DONE]"
    );
    let mut id: Option<String> = None;
    let mut finishes = 0;
    let mut tool_indices: Vec<u64> = Vec::new();
    let chunks = &events[..events.len().saturating_sub(1)];
    for (i, ev) in chunks.iter().enumerate() {
        // A passthrough forwards a chunk unchanged once the fields it
        // reads parse, whatever JSON a `Value` cannot hold sits elsewhere
        // in it: such a chunk is still read whole as JSON (the unread
        // fields skipped by grammar) and counts by the fields the relay
        // read; only a passthrough may send one.
        let (v, error, finished) = match serde_json::from_str::<Value>(&ev.data) {
            Ok(v) => {
                let error = v.get("error").is_some();
                let finished = !v["choices"][0]["finish_reason"].is_null();
                (Some(v), error, finished)
            }
            Err(e) => {
                let chunk = (!strict)
                    .then(|| OpenAiChunk::read(&ev.data))
                    .flatten()
                    .unwrap_or_else(|| panic!("{ctx}: bad JSON {e}"));
                (None, chunk.is_error(), chunk.finished())
            }
        };
        if error {
            assert!(failed, "{ctx}: unexpected error chunk");
            assert_eq!(i, chunks.len() - 1, "{ctx}: error is the last chunk");
            continue;
        }
        if finished {
            finishes += 1;
        }
        let Some(v) = v else {
            continue;
        };
        let this = v["id"].as_str().unwrap_or_default().to_string();
        if !strict {
            continue;
        }
        assert_eq!(
            id.get_or_insert_with(|| this.clone()),
            &this,
            "{ctx}: one id per stream"
        );
        if i == 0 {
            assert_eq!(
                v["choices"][0]["delta"]["role"], "assistant",
                "{ctx}: role first"
            );
        }
        if finished {
            assert!(v.get("usage").is_some(), "{ctx}: usage on the final chunk");
        } else {
            assert!(
                v.get("usage").is_none(),
                "{ctx}: usage only on the final chunk"
            );
        }
        for tc in v["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let idx = tc["index"].as_u64().unwrap_or(u64::MAX);
            if tc.get("id").is_some() {
                assert_eq!(idx, tool_indices.len() as u64, "{ctx}: tool indices from 0");
                tool_indices.push(idx);
            } else {
                assert!(
                    tool_indices.contains(&idx),
                    "{ctx}: args for a started call"
                );
            }
        }
    }
    if !failed && strict {
        assert_eq!(finishes, 1, "{ctx}: one finish chunk");
    } else if !failed {
        assert!(finishes >= 1, "{ctx}: a finish chunk");
    }
}

fn check_gemini_elements(elements: &[Value], ctx: &str, failed: bool, strict: bool) {
    for (i, v) in elements.iter().enumerate() {
        if v.get("error").is_some() {
            assert!(
                failed && i == elements.len() - 1,
                "{ctx}: error only last on failure"
            );
            continue;
        }
        let reason = &v["candidates"][0]["finishReason"];
        assert_ne!(reason, "TOOL_CALLS", "{ctx}: invalid Gemini enum");
        for p in v["candidates"][0]["content"]["parts"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let (Some(fc), true) = (p.get("functionCall"), strict) {
                assert!(fc["args"].is_object(), "{ctx}: whole functionCall args");
            }
        }
    }
    if !failed {
        let finishes = elements
            .iter()
            .filter(|v| v["candidates"][0].get("finishReason").is_some())
            .count();
        assert!(finishes >= 1, "{ctx}: a finishReason");
    }
}

fn check_gemini_sse(out: &str, ctx: &str, failed: bool, strict: bool) {
    let elements: Vec<Value> = decode_all(out.as_bytes())
        .iter()
        .map(|e| {
            serde_json::from_str(&e.data).unwrap_or_else(|err| panic!("{ctx}: bad JSON {err}"))
        })
        .collect();
    check_gemini_elements(&elements, ctx, failed, strict);
}

fn check_gemini_array(out: &str, ctx: &str, failed: bool, strict: bool) {
    let v: Value = serde_json::from_str(out)
        .unwrap_or_else(|e| panic!("{ctx}: not a JSON array ({e}): {out}"));
    let elements = v
        .as_array()
        .unwrap_or_else(|| panic!("{ctx}: not an array"));
    check_gemini_elements(elements, ctx, failed, strict);
}

/// An output item of a Responses stream, as the events describe it.
#[derive(Default)]
struct Item {
    kind: String,
    id: String,
    /// Text or arguments accumulated from deltas.
    streamed: String,
    done: Option<Value>,
}

/// Responses streams are always re-encoded, so every rule holds for every
/// stream: `response.created` then `response.in_progress` first, one
/// `sequence_number` counting from 0, items added before their deltas and
/// done once, deltas that add up to the done text, and exactly one
/// terminal event, last, whose output lists the done items in order.
fn check_responses(out: &str, ctx: &str, failed: bool) {
    let events = decode_all(out.as_bytes());
    assert!(events.len() >= 3, "{ctx}: too short a Responses stream");
    let mut items: Vec<Item> = Vec::new();
    let mut response_id: Option<String> = None;
    let mut terminal: Option<(String, Value)> = None;
    for (i, ev) in events.iter().enumerate() {
        let v: Value =
            serde_json::from_str(&ev.data).unwrap_or_else(|e| panic!("{ctx}: bad JSON {e}"));
        let ty = v["type"].as_str().unwrap_or_default().to_string();
        assert_eq!(
            ev.event.as_deref(),
            Some(ty.as_str()),
            "{ctx}: event name matches type"
        );
        assert_eq!(
            v["sequence_number"].as_u64(),
            Some(i as u64),
            "{ctx}: sequence_number"
        );
        assert!(terminal.is_none(), "{ctx}: {ty} after the terminal event");
        match i {
            0 => assert_eq!(ty, "response.created", "{ctx}: first event"),
            1 => assert_eq!(ty, "response.in_progress", "{ctx}: second event"),
            _ => {}
        }
        if let Some(id) = v["response"]["id"].as_str() {
            assert_eq!(
                response_id.get_or_insert_with(|| id.to_string()),
                id,
                "{ctx}: one response id"
            );
        }
        let index = v["output_index"].as_u64().map(|n| n as usize);
        let open = |items: &mut Vec<Item>, kind: &str| -> usize {
            let n = index.unwrap_or_else(|| panic!("{ctx}: {ty} without output_index"));
            let item = items
                .get_mut(n)
                .unwrap_or_else(|| panic!("{ctx}: {ty} for an item never added"));
            assert!(item.done.is_none(), "{ctx}: {ty} after output_item.done");
            assert_eq!(item.kind, kind, "{ctx}: {ty} for a {} item", item.kind);
            assert_eq!(
                v["item_id"].as_str(),
                Some(item.id.as_str()),
                "{ctx}: {ty} item_id"
            );
            n
        };
        match ty.as_str() {
            "response.created" | "response.in_progress" => {
                assert!(i < 2, "{ctx}: {ty} only at the start");
                assert_eq!(v["response"]["status"], "in_progress", "{ctx}: {ty} status");
            }
            "response.output_item.added" => {
                assert_eq!(
                    index,
                    Some(items.len()),
                    "{ctx}: output indices consecutive from 0"
                );
                let item = &v["item"];
                items.push(Item {
                    kind: item["type"].as_str().unwrap_or_default().to_string(),
                    id: item["id"].as_str().unwrap_or_default().to_string(),
                    ..Item::default()
                });
                if item["type"] == "function_call" {
                    assert!(
                        item["call_id"].as_str().is_some_and(|c| !c.is_empty()),
                        "{ctx}: call_id"
                    );
                }
            }
            "response.content_part.added" | "response.content_part.done" => {
                open(&mut items, "message");
            }
            "response.output_text.delta" => {
                let n = open(&mut items, "message");
                items[n]
                    .streamed
                    .push_str(v["delta"].as_str().unwrap_or_default());
            }
            "response.output_text.done" => {
                let n = open(&mut items, "message");
                assert_eq!(
                    v["text"].as_str(),
                    Some(items[n].streamed.as_str()),
                    "{ctx}: text done"
                );
            }
            "response.reasoning_summary_part.added" | "response.reasoning_summary_part.done" => {
                open(&mut items, "reasoning");
            }
            "response.reasoning_summary_text.delta" => {
                let n = open(&mut items, "reasoning");
                items[n]
                    .streamed
                    .push_str(v["delta"].as_str().unwrap_or_default());
            }
            "response.reasoning_summary_text.done" => {
                let n = open(&mut items, "reasoning");
                assert_eq!(
                    v["text"].as_str(),
                    Some(items[n].streamed.as_str()),
                    "{ctx}: summary done"
                );
            }
            "response.function_call_arguments.delta" => {
                let n = open(&mut items, "function_call");
                items[n]
                    .streamed
                    .push_str(v["delta"].as_str().unwrap_or_default());
            }
            "response.function_call_arguments.done" => {
                let n = open(&mut items, "function_call");
                let args = v["arguments"].as_str().unwrap_or_default();
                if !items[n].streamed.is_empty() {
                    assert_eq!(args, items[n].streamed, "{ctx}: arguments done");
                }
                items[n].streamed = args.to_string();
            }
            "response.custom_tool_call_input.delta" | "response.custom_tool_call_input.done" => {
                open(&mut items, "custom_tool_call");
            }
            "response.output_item.done" => {
                let n = index.unwrap_or_else(|| panic!("{ctx}: output_item.done without index"));
                let item = items
                    .get_mut(n)
                    .unwrap_or_else(|| panic!("{ctx}: done for an item never added"));
                assert!(item.done.is_none(), "{ctx}: output_item.done twice");
                let done = v["item"].clone();
                assert_eq!(
                    done["type"].as_str(),
                    Some(item.kind.as_str()),
                    "{ctx}: done type"
                );
                assert_eq!(
                    done["id"].as_str(),
                    Some(item.id.as_str()),
                    "{ctx}: done id"
                );
                match item.kind.as_str() {
                    "message" => assert_eq!(
                        done["content"][0]["text"].as_str(),
                        Some(item.streamed.as_str()),
                        "{ctx}: message text"
                    ),
                    "function_call" => {
                        assert_eq!(
                            done["arguments"].as_str(),
                            Some(item.streamed.as_str()),
                            "{ctx}: arguments"
                        );
                        assert!(
                            done["call_id"].as_str().is_some_and(|c| !c.is_empty()),
                            "{ctx}: call_id"
                        );
                    }
                    _ => {}
                }
                item.done = Some(done);
            }
            "error" => {
                assert!(failed, "{ctx}: unexpected error event");
                assert!(v["message"].is_string(), "{ctx}: error message");
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                if ty == "response.failed" {
                    assert!(failed, "{ctx}: unexpected response.failed");
                    assert_eq!(
                        events[i - 1].event.as_deref(),
                        Some("error"),
                        "{ctx}: error before failed"
                    );
                    assert!(
                        v["response"]["error"]["message"].is_string(),
                        "{ctx}: failure message"
                    );
                } else {
                    let u = &v["response"]["usage"];
                    let (a, b) = (u["input_tokens"].as_u64(), u["output_tokens"].as_u64());
                    assert!(a.is_some() && b.is_some(), "{ctx}: usage on {ty}");
                    assert_eq!(
                        u["total_tokens"].as_u64(),
                        a.zip(b).map(|(a, b)| a + b),
                        "{ctx}: total"
                    );
                }
                terminal = Some((ty.clone(), v["response"].clone()));
            }
            other => panic!("{ctx}: unexpected event {other}"),
        }
    }
    let (ty, response) = terminal.unwrap_or_else(|| panic!("{ctx}: no terminal event"));
    if !failed {
        assert_ne!(ty, "response.failed", "{ctx}: failed without a failure");
    }
    let done: Vec<Value> = items
        .iter()
        .map(|it| {
            it.done
                .clone()
                .unwrap_or_else(|| panic!("{ctx}: {} item never done", it.kind))
        })
        .collect();
    assert_eq!(
        response["output"],
        Value::Array(done),
        "{ctx}: output lists the done items"
    );
}

/// Whether the passthrough's byte scan of an OpenAI chunk, where it
/// answers, reads what serde reads from the same data.
pub fn chunk_scan_agrees(data: &str) -> bool {
    OpenAiChunk::scan_agrees(data)
}

/// How many times the client stream `out` of protocol `to` reports the
/// failure `message`: Responses clients get it twice, in an `error` event
/// and in the `response.failed` that ends the stream, which count as one.
pub fn failure_reports(to: Protocol, out: &[u8], message: &str) -> usize {
    let out = text(out);
    if to != Protocol::Responses {
        return out.matches(message).count();
    }
    decode_all(out.as_bytes())
        .iter()
        .filter(|e| e.event.as_deref() == Some("response.failed") && e.data.contains(message))
        .count()
}

/// Checks `out`, the bytes a `from` → `to` stream wrote to its client.
pub fn check(
    from: Protocol,
    to: Protocol,
    framing: GeminiFraming,
    out: &[u8],
    ctx: &str,
    failed: bool,
) {
    let out = text(out);
    match (to, framing) {
        (Protocol::OpenAi, _) => check_openai(&out, ctx, failed, from != to),
        (Protocol::Anthropic, _) => check_anthropic(&out, ctx, failed, from != to),
        (Protocol::Gemini, GeminiFraming::Sse) => check_gemini_sse(&out, ctx, failed, from != to),
        (Protocol::Gemini, GeminiFraming::JsonArray) => {
            check_gemini_array(&out, ctx, failed, from != to)
        }
        (Protocol::Responses, _) => check_responses(&out, ctx, failed),
    }
}
