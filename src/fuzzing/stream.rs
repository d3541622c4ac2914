//! `stream_convert`: arbitrary upstream bytes through a stream converter.

use serde_json::Value;

use crate::protocol::sse::decode_all;
use crate::protocol::stream_check::{check, chunk_scan_agrees, failure_reports, normalise, text};
use crate::protocol::{GeminiFraming, Protocol, StreamConverter};

const ALL: [Protocol; 4] = [
    Protocol::OpenAi,
    Protocol::Anthropic,
    Protocol::Gemini,
    Protocol::Responses,
];
const MODEL: &str = "client-model";

/// Feeds `data` in pieces of the sizes `sizes` cycles through, with a
/// keep-alive after each piece as after upstream silence. Returns the
/// client bytes without and with the keep-alives.
fn convert(
    from: Protocol,
    to: Protocol,
    framing: GeminiFraming,
    data: &[u8],
    sizes: &[usize],
) -> (Vec<u8>, Vec<u8>) {
    let mut c = StreamConverter::new(from, to, MODEL, framing);
    let (mut plain, mut kept_alive) = (Vec::new(), Vec::new());
    let mut piece_out = Vec::new();
    let mut rest = data;
    for &n in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at(n.clamp(1, rest.len()));
        c.feed(piece, &mut piece_out);
        plain.extend_from_slice(&piece_out);
        kept_alive.extend_from_slice(&piece_out);
        piece_out.clear();
        c.keepalive(&mut kept_alive);
        rest = tail;
    }
    c.finish(&mut piece_out);
    c.finish(&mut piece_out);
    plain.extend_from_slice(&piece_out);
    kept_alive.extend_from_slice(&piece_out);
    let _ = c.usage();
    (plain, kept_alive)
}

/// Whether the upstream itself sent an in-band error, which the client
/// may see as the last event.
fn upstream_error(from: Protocol, data: &[u8]) -> bool {
    decode_all(data).iter().any(|ev| {
        let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
            return false;
        };
        if from == Protocol::Responses {
            // Every event's response object has `error: null`; the type says.
            let ty = v.get("type").and_then(Value::as_str);
            return matches!(ty, Some("error" | "response.failed"));
        }
        let v = v.get("response").filter(|r| r.is_object()).unwrap_or(&v);
        v.get("error").is_some() || v.get("type").and_then(Value::as_str) == Some("error")
    })
}

/// Input: one control byte (upstream family, client protocol, Gemini
/// framing, whether the upstream fails: base 4, 4, 2, 2), one byte
/// steering the read sizes, then the upstream's SSE bytes.
pub fn stream_convert(data: &[u8]) {
    let [control, seed, ref upstream @ ..] = *data else {
        return;
    };
    let from = ALL[usize::from(control) % 4];
    let to = ALL[usize::from(control / 4) % 4];
    let framing = if (control / 16) % 2 == 1 {
        GeminiFraming::JsonArray
    } else {
        GeminiFraming::Sse
    };
    let fails = (control / 32) % 2 == 1;
    let ctx = format!("{} -> {} {framing:?}", from.name(), to.name());
    let sent_error = upstream_error(from, upstream);
    if from == Protocol::OpenAi {
        for ev in decode_all(upstream) {
            let data = ev.data.trim();
            assert!(
                chunk_scan_agrees(data),
                "chunk scan and serde disagree: {data}"
            );
        }
    }

    let (whole, _) = convert(from, to, framing, upstream, &[upstream.len()]);
    // A stream the upstream did not end itself is reported as cut off.
    let cut_off = {
        let mut c = StreamConverter::new(from, to, MODEL, framing);
        let mut sink = Vec::new();
        c.feed(upstream, &mut sink);
        c.finish(&mut sink);
        c.was_cut_off()
    };
    check(from, to, framing, &whole, &ctx, sent_error || cut_off);
    let sizes = [
        1 + usize::from(seed % 64),
        1 + usize::from(seed / 64),
        1 + usize::from(seed.rotate_left(3) % 17),
    ];
    let (split, kept_alive) = convert(from, to, framing, upstream, &sizes);
    check(
        from,
        to,
        framing,
        &kept_alive,
        &format!("{ctx} split with keep-alives"),
        sent_error || cut_off,
    );
    assert_eq!(
        normalise(&text(&split)),
        normalise(&text(&whole)),
        "{ctx}: split read sizes {sizes:?}"
    );

    if fails {
        let cut = super::cuts(upstream)[0];
        let mut c = StreamConverter::new(from, to, MODEL, framing);
        let mut out = Vec::new();
        c.feed(&upstream[..cut], &mut out);
        c.fail(502, "upstream broke", &mut out);
        c.finish(&mut out);
        let end = out.len();
        c.fail(502, "again", &mut out);
        c.feed(b"data: {}\n\n", &mut out);
        c.keepalive(&mut out);
        assert_eq!(out.len(), end, "{ctx}: nothing after the end");
        let errors = failure_reports(to, &out, "upstream broke");
        assert!(errors <= 1, "{ctx}: one error");
        check(
            from,
            to,
            framing,
            &out,
            &format!("{ctx} failed at {cut}"),
            errors == 1 || sent_error,
        );
    }
}
