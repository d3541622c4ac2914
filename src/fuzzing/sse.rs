//! `sse_decode`: the incremental event-stream decoder.

use crate::protocol::sse::{MAX_EVENT_BYTES, SseDecoder, SseEvent, decode_all};

fn decode(pieces: &[&[u8]]) -> Vec<SseEvent> {
    let mut decoder = SseDecoder::new();
    let mut events = Vec::new();
    for piece in pieces {
        decoder.feed(piece, &mut events);
    }
    decoder.finish(&mut events);
    events
}

/// Writes events back as an event stream (one `data:` line per line).
fn encode(events: &[SseEvent]) -> Vec<u8> {
    let mut out = Vec::new();
    for ev in events {
        if let Some(name) = &ev.event {
            out.extend_from_slice(format!("event: {name}\n").as_bytes());
        }
        for line in ev.data.split('\n') {
            out.extend_from_slice(format!("data: {line}\n").as_bytes());
        }
        out.push(b'\n');
    }
    out
}

/// Raw upstream bytes: every split gives the same events, events stay
/// under the cap, and the events survive re-encoding.
pub fn sse_decode(data: &[u8]) {
    let whole = decode_all(data);
    for ev in &whole {
        assert!(ev.data.len() <= MAX_EVENT_BYTES, "event over the cap");
        if let Some(name) = &ev.event {
            assert!(!name.contains(['\r', '\n']), "line break in a name");
        }
    }
    super::assert_split_invariant(data, &whole, decode);
    assert_eq!(decode_all(&encode(&whole)), whole, "re-encoded events");
}
