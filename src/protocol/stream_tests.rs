//! Stream golden tests and framing invariants for all sixteen
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

use serde_json::{Value, json};

use super::sse::decode_all;
use super::stream_check::{check, failure_reports, normalise, text};
use super::{GeminiFraming, Protocol, StreamConverter};

const ALL: [Protocol; 4] = [
    Protocol::OpenAi,
    Protocol::Anthropic,
    Protocol::Gemini,
    Protocol::Responses,
];
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
        checked, 48,
        "three recordings per upstream family, sixteen pairs"
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
                        let errors = failure_reports(to, &out, "upstream broke");
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

/// A same-protocol OpenAI stream ends properly when its first choice has
/// a finish reason, whatever the other choices hold; a finish reason only
/// on a later choice does not count (as `choices[0].finish_reason` on the
/// general path). The chunks pass through byte for byte either way, also
/// when elsewhere they hold JSON that serde_json's `Value` cannot (found by
/// fuzzing: the relay reads only its fields, so such a chunk goes out as a
/// forwarding proxy would pass it, for the client's parser to judge).
#[test]
fn openai_passthrough_reads_the_first_choice_only() {
    let cases: [(&str, bool); 7] = [
        (
            r#"{"choices":[{"finish_reason":"stop"},{"x":1},5,[]]}"#,
            true,
        ),
        (
            r#"{"choices":[{"finish_reason":null},{"finish_reason":"stop"}]}"#,
            false,
        ),
        (r#"{"choices":[]}"#, false),
        (r#"{"choices":null}"#, false),
        (
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}"#,
            true,
        ),
        (
            r#"{"created":1e705,"choices":[{"finish_reason":"stop"}]}"#,
            true,
        ),
        (
            r#"{"id":"\ud800","choices":[{"finish_reason":null}]}"#,
            false,
        ),
    ];
    for (chunk, finished) in cases {
        let wire = format!("data: {chunk}\n\n");
        let out = convert(
            Protocol::OpenAi,
            Protocol::OpenAi,
            GeminiFraming::Sse,
            &[wire.as_bytes()],
        );
        let out = text(&out);
        assert!(
            out.starts_with(&wire),
            "{chunk}: passed through as it came: {out}"
        );
        assert_eq!(
            !out.contains(super::stream::TRUNCATED),
            finished,
            "{chunk}: {out}"
        );
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
    let chunk = |text: &str| {
        format!(
            "data: {}\n\n",
            json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
        )
    };
    let keepalive_after = |to: Protocol, framing: GeminiFraming, upstream: &str| {
        let mut c = StreamConverter::new(Protocol::OpenAi, to, MODEL, framing);
        let mut out = Vec::new();
        c.feed(upstream.as_bytes(), &mut out);
        let before = out.len();
        c.keepalive(&mut out);
        String::from_utf8(out.split_off(before)).unwrap()
    };
    let sse = GeminiFraming::Sse;
    // Anthropic clients may expect message_start first: no ping before it.
    assert_eq!(keepalive_after(Protocol::Anthropic, sse, ""), "");
    assert_eq!(
        keepalive_after(Protocol::Anthropic, sse, &chunk("a")),
        "event: ping\ndata: {\"type\":\"ping\"}\n\n"
    );
    assert_eq!(
        keepalive_after(Protocol::OpenAi, sse, ""),
        ": keep-alive\n\n"
    );
    assert_eq!(
        keepalive_after(Protocol::Responses, sse, &chunk("a")),
        ": keep-alive\n\n"
    );
    // google-genai fails on SSE comments; a blank line is skipped, and is
    // JSON whitespace in the array form.
    assert_eq!(keepalive_after(Protocol::Gemini, sse, &chunk("a")), "\n");
    assert_eq!(
        keepalive_after(Protocol::Gemini, GeminiFraming::JsonArray, &chunk("a")),
        "\n"
    );
    // Nothing once the upstream said it is done.
    assert_eq!(
        keepalive_after(Protocol::OpenAi, sse, "data: [DONE]\n\n"),
        ""
    );
}

/// Found by the stream_convert fuzz target: an Anthropic upstream's
/// malformed block sequence used to reach the client as is.
#[test]
fn anthropic_passthrough_repairs_block_order() {
    let ev = |ty: &str, body: &str| format!("event: {ty}\ndata: {body}\n\n");
    let upstream = [
        ev("ping", r#"{"type":"ping"}"#),
        ev(
            "message_start",
            r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"usage":{"input_tokens":3,"output_tokens":1}}}"#,
        ),
        // No index: cannot be balanced.
        ev(
            "content_block_start",
            r#"{"type":"content_block_start","content_block":{"type":"text","text":""}}"#,
        ),
        ev(
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        ),
        // Block 0 is never stopped before block 1 starts.
        ev(
            "content_block_start",
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}"#,
        ),
        // Out of sequence.
        ev(
            "content_block_start",
            r#"{"type":"content_block_start","index":5,"content_block":{"type":"text","text":""}}"#,
        ),
        ev(
            "content_block_delta",
            r#"{"type":"content_block_delta","index":5,"delta":{"type":"text_delta","text":"x"}}"#,
        ),
        // A type that would break out of the `event:` line.
        ev("x", r#"{"type":"a\nevent: message_stop"}"#),
        // No content_block_stop and no message_delta before message_stop.
        ev("message_stop", r#"{"type":"message_stop"}"#),
    ]
    .concat();
    let out = convert(
        Protocol::Anthropic,
        Protocol::Anthropic,
        GeminiFraming::Sse,
        &[upstream.as_bytes()],
    );
    check(
        Protocol::Anthropic,
        Protocol::Anthropic,
        GeminiFraming::Sse,
        &out,
        "repaired",
        false,
    );
    let names: Vec<String> = decode_all(&out)
        .into_iter()
        .filter_map(|e| e.event)
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_stop",
            "content_block_start",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
}

/// Found by the stream_convert fuzz target: an upstream that started the
/// same block index twice made two OpenAI tool calls share one index.
#[test]
fn openai_tool_indices_stay_unique_when_an_upstream_restarts_a_block() {
    let start = |i: u32, id: &str| {
        format!(
            "event: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":{i},\"content_block\":{{\"type\":\"tool_use\",\"id\":\"{id}\",\"name\":\"f\",\"input\":{{}}}}}}\n\n"
        )
    };
    let upstream = [
        start(1, "toolu_a"),
        start(1, "toolu_b"),
        start(2, "toolu_c"),
    ]
    .concat();
    let out = convert(
        Protocol::Anthropic,
        Protocol::OpenAi,
        GeminiFraming::Sse,
        &[upstream.as_bytes()],
    );
    check(
        Protocol::Anthropic,
        Protocol::OpenAi,
        GeminiFraming::Sse,
        &out,
        "restarted block",
        // The upstream never ends its stream: the client is told.
        true,
    );
    let indices: Vec<u64> = decode_all(&out)
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .filter_map(|v| v["choices"][0]["delta"]["tool_calls"][0]["index"].as_u64())
        .collect();
    assert_eq!(indices, [0, 1, 2]);
}

/// Found by the stream_convert fuzz target: a message_delta without a
/// stop reason was relayed, and clients read the stop reason there.
#[test]
fn anthropic_passthrough_message_delta_always_has_a_stop_reason() {
    let upstream = b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":7}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    let out = convert(
        Protocol::Anthropic,
        Protocol::Anthropic,
        GeminiFraming::Sse,
        &[upstream],
    );
    check(
        Protocol::Anthropic,
        Protocol::Anthropic,
        GeminiFraming::Sse,
        &out,
        "delta without stop_reason",
        false,
    );
    assert!(text(&out).contains(r#""output_tokens":7"#), "usage kept");
}
