//! Stream golden tests and framing invariants for all nine
//! (upstream, client) pairs.
//!
//! Recorded upstream streams live in `tests/fixtures/streams/<from>/*.sse`;
//! the expected client bytes (ids and timestamps normalised) in
//! `tests/fixtures/streams/<from>_to_<to>/*.expected`. Beyond the goldens,
//! every pair is checked programmatically: the framing rules of the client
//! protocol hold for whole, byte-split, truncated and failed streams.
//! `UPDATE_GOLDEN=1` rewrites the expected files.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::sse::decode_all;
use super::{GeminiFraming, Protocol, StreamConverter, ids};

const ALL: [Protocol; 3] = [Protocol::OpenAi, Protocol::Anthropic, Protocol::Gemini];
const MODEL: &str = "client-model";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/streams")
}

fn recordings(from: Protocol) -> Vec<(String, Vec<u8>)> {
    let dir = root().join(from.name());
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sse"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let stem = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            (stem, fs::read(&p).unwrap_or_default())
        })
        .collect()
}

/// Replaces generated ids with `<prefix>*` and `"created":N` with 0.
fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'outer: while !rest.is_empty() {
        for prefix in ["chatcmpl-", "msg_", "call_", "toolu_"] {
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
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

fn convert(from: Protocol, to: Protocol, framing: GeminiFraming, pieces: &[&[u8]]) -> Vec<u8> {
    let mut c = StreamConverter::new(from, to, MODEL, framing);
    let mut out = Vec::new();
    for p in pieces {
        c.feed(p, &mut out);
    }
    c.finish(&mut out);
    c.finish(&mut out);
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("client output is UTF-8")
}

// ------------------------------------------------------------ invariants

fn check_anthropic(out: &str, ctx: &str, failed: bool) {
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
            other => panic!("{ctx}: unexpected event {other}"),
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
    assert_eq!(
        out.matches("[DONE]").count(),
        1,
        "{ctx}: exactly one [DONE]"
    );
    let events = decode_all(out.as_bytes());
    let mut id: Option<String> = None;
    let mut finishes = 0;
    let mut tool_indices: Vec<u64> = Vec::new();
    let chunks = &events[..events.len().saturating_sub(1)];
    for (i, ev) in chunks.iter().enumerate() {
        let v: Value =
            serde_json::from_str(&ev.data).unwrap_or_else(|e| panic!("{ctx}: bad JSON {e}"));
        if v.get("error").is_some() {
            assert!(failed, "{ctx}: unexpected error chunk");
            assert_eq!(i, chunks.len() - 1, "{ctx}: error is the last chunk");
            continue;
        }
        let finish = &v["choices"][0]["finish_reason"];
        if !finish.is_null() {
            finishes += 1;
        }
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
        if !finish.is_null() {
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

fn check(
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
        (Protocol::Anthropic, _) => check_anthropic(&out, ctx, failed),
        (Protocol::Gemini, GeminiFraming::Sse) => check_gemini_sse(&out, ctx, failed, from != to),
        (Protocol::Gemini, GeminiFraming::JsonArray) => {
            check_gemini_array(&out, ctx, failed, from != to)
        }
    }
}

fn framings(to: Protocol) -> &'static [GeminiFraming] {
    if to == Protocol::Gemini {
        &[GeminiFraming::Sse, GeminiFraming::JsonArray]
    } else {
        &[GeminiFraming::Sse]
    }
}

// ----------------------------------------------------------------- tests

#[test]
fn stream_goldens() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut checked = 0;
    for from in ALL {
        for to in ALL {
            let dir = root().join(format!("{}_to_{}", from.name(), to.name()));
            for (name, input) in recordings(from) {
                let got = normalise(&text(&convert(from, to, GeminiFraming::Sse, &[&input])));
                let path = dir.join(format!("{name}.expected"));
                if update {
                    fs::create_dir_all(&dir).expect("creatable fixture dir");
                    fs::write(&path, &got).expect("writable fixture");
                } else {
                    let want = fs::read_to_string(&path)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    assert_eq!(got, want, "{}", path.display());
                }
                checked += 1;
            }
        }
    }
    assert_eq!(
        checked, 27,
        "three recordings per upstream family, nine pairs"
    );
}

#[test]
fn framing_holds_for_whole_split_truncated_and_failed_streams() {
    for from in ALL {
        for (name, input) in recordings(from) {
            for to in ALL {
                for &framing in framings(to) {
                    let ctx = format!("{}->{} {name} {framing:?}", from.name(), to.name());
                    let whole = convert(from, to, framing, &[&input]);
                    check(from, to, framing, &whole, &ctx, false);
                    let whole = normalise(&text(&whole));
                    for i in 0..=input.len() {
                        let (a, b) = input.split_at(i);
                        let split = convert(from, to, framing, &[a, b]);
                        assert_eq!(normalise(&text(&split)), whole, "{ctx}: split at {i}");
                        if i % 3 == 0 {
                            // Truncated upstream: an in-band error unless the
                            // upstream's own end had already arrived, and
                            // the client framing still closes.
                            let cut = convert(from, to, framing, &[a]);
                            check(from, to, framing, &cut, &format!("{ctx} cut at {i}"), true);
                        }
                    }
                    for i in (0..=input.len()).step_by(7) {
                        let mut c = StreamConverter::new(from, to, MODEL, framing);
                        let mut out = Vec::new();
                        c.feed(&input[..i], &mut out);
                        c.fail(502, "upstream broke", &mut out);
                        c.finish(&mut out);
                        c.fail(502, "again", &mut out);
                        let s = text(&out);
                        // A stream the upstream already completed stays complete.
                        let errors = s.matches("upstream broke").count();
                        assert!(errors <= 1, "{ctx}: one error at {i}");
                        assert!(
                            errors == 1 || i + 8 >= input.len(),
                            "{ctx}: error reported at {i}"
                        );
                        assert!(!s.contains("again"), "{ctx}: nothing after the end");
                        check(
                            from,
                            to,
                            framing,
                            &out,
                            &format!("{ctx} failed at {i}"),
                            errors == 1,
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn byte_by_byte_feed_matches_whole() {
    for from in ALL {
        for (name, input) in recordings(from) {
            for to in ALL {
                let whole = normalise(&text(&convert(
                    from,
                    to,
                    GeminiFraming::JsonArray,
                    &[&input],
                )));
                let pieces: Vec<&[u8]> = input.chunks(1).collect();
                let bytewise =
                    normalise(&text(&convert(from, to, GeminiFraming::JsonArray, &pieces)));
                assert_eq!(bytewise, whole, "{}->{} {name}", from.name(), to.name());
            }
        }
    }
}

#[test]
fn empty_upstream_is_reported_as_cut_off() {
    for from in ALL {
        for to in ALL {
            for &framing in framings(to) {
                let out = convert(from, to, framing, &[]);
                let ctx = format!("empty {}->{}", from.name(), to.name());
                check(from, to, framing, &out, &ctx, true);
                assert!(
                    text(&out).contains(super::stream::TRUNCATED),
                    "{ctx}: says it was cut off"
                );
            }
        }
    }
}

#[test]
fn garbage_is_skipped_without_panicking() {
    let junk: &[&[u8]] = &[
        b"data: {not json\n\n",
        b"data: [1,2,3]\n\n",
        b"data: null\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":99,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"x\"}}\n\n",
        b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":5,\"function\":{\"arguments\":\"{\"}}]}}]}\n\n",
        b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"args\":7}}]}}]}\n\n",
        b"\xff\xfe data: \xc3\n\n",
    ];
    for from in ALL {
        for to in ALL {
            for &framing in framings(to) {
                let out = convert(from, to, framing, junk);
                let ctx = format!("junk {}->{}", from.name(), to.name());
                check(from, to, framing, &out, &ctx, true);
                assert!(
                    text(&out).contains(super::stream::TRUNCATED),
                    "{ctx}: says it was cut off"
                );
            }
        }
    }
}

#[test]
fn feed_event_matches_feed() {
    for from in ALL {
        for (name, input) in recordings(from) {
            for to in ALL {
                let via_bytes = normalise(&text(&convert(from, to, GeminiFraming::Sse, &[&input])));
                let mut c = StreamConverter::new(from, to, MODEL, GeminiFraming::Sse);
                let mut out = Vec::new();
                for ev in decode_all(&input) {
                    if let Ok(v) = serde_json::from_str::<Value>(&ev.data) {
                        c.feed_event(&v, &mut out);
                    }
                }
                c.finish(&mut out);
                let via_events = normalise(&text(&out));
                // Passthrough re-serialises parsed events, so compare as events.
                let a: Vec<Value> = decode_all(via_bytes.as_bytes())
                    .iter()
                    .filter_map(|e| serde_json::from_str(&e.data).ok())
                    .collect();
                let b: Vec<Value> = decode_all(via_events.as_bytes())
                    .iter()
                    .filter_map(|e| serde_json::from_str(&e.data).ok())
                    .collect();
                assert_eq!(a, b, "{}->{} {name}", from.name(), to.name());
            }
        }
    }
}

#[test]
fn usage_is_tracked() {
    for from in ALL {
        for to in ALL {
            let input = fs::read(root().join(from.name()).join("tools.sse")).unwrap_or_default();
            let mut c = StreamConverter::new(from, to, MODEL, GeminiFraming::Sse);
            let mut out = Vec::new();
            c.feed(&input, &mut out);
            c.finish(&mut out);
            assert_eq!(c.usage().completion, 25, "{}->{}", from.name(), to.name());
            assert!(c.usage().prompt >= 30, "{}->{}", from.name(), to.name());
        }
    }
}

#[test]
fn keepalive_is_protocol_appropriate() {
    let mut out = Vec::new();
    StreamConverter::new(
        Protocol::OpenAi,
        Protocol::Anthropic,
        MODEL,
        GeminiFraming::Sse,
    )
    .keepalive(&mut out);
    assert_eq!(out, b"event: ping\ndata: {\"type\":\"ping\"}\n\n");
    out.clear();
    StreamConverter::new(
        Protocol::OpenAi,
        Protocol::Gemini,
        MODEL,
        GeminiFraming::JsonArray,
    )
    .keepalive(&mut out);
    assert!(out.is_empty());
    StreamConverter::new(
        Protocol::Gemini,
        Protocol::OpenAi,
        MODEL,
        GeminiFraming::Sse,
    )
    .keepalive(&mut out);
    assert_eq!(out, b": keep-alive\n\n");
}
