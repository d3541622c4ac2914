//! Incremental Server-Sent Events decoder.
//!
//! Upstream bytes arrive split anywhere (inside a line, between `\r` and
//! `\n`, inside a UTF-8 sequence), so the decoder keeps the unfinished line
//! as bytes and only decodes complete lines. It follows the WHATWG event
//! stream rules that matter for LLM APIs: lines end in `\n`, `\r\n` or `\r`;
//! `data:` with or without one space; several `data:` lines join with `\n`;
//! `event:` names the event; `:` lines are comments; a blank line
//! dispatches. [`SseDecoder::finish`] dispatches a last event that lacks
//! its blank line, which truncated upstreams often produce.
//!
//! Memory is bounded: an event larger than [`MAX_EVENT_BYTES`] is dropped
//! rather than buffered without limit.

/// Largest event (line buffer plus data) kept; larger ones are discarded.
pub const MAX_EVENT_BYTES: usize = 16 << 20;

/// One decoded event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Byte-stream to [`SseEvent`] decoder; feed it any split of the input.
#[derive(Debug, Default)]
pub struct SseDecoder {
    line: Vec<u8>,
    data: String,
    has_data: bool,
    event: Option<String>,
    /// The previous chunk ended in `\r`; a leading `\n` belongs to it.
    after_cr: bool,
    /// The current event outgrew the cap; skip to its end.
    oversized: bool,
    /// The current line outgrew the cap; skip to its end.
    line_overflow: bool,
    /// Still at the very start (a UTF-8 BOM may follow).
    at_start: bool,
}

impl SseDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self {
            at_start: true,
            ..Self::default()
        }
    }

    /// Decodes `chunk`, appending completed events to `events`.
    pub fn feed(&mut self, chunk: &[u8], events: &mut Vec<SseEvent>) {
        let mut rest = chunk;
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if rest.first() == Some(&b'\n') {
                rest = &rest[1..];
            }
        }
        while !rest.is_empty() {
            match memchr::memchr2(b'\n', b'\r', rest) {
                Some(pos) => {
                    self.push_bytes(&rest[..pos]);
                    let was_cr = rest[pos] == b'\r';
                    rest = &rest[pos + 1..];
                    if was_cr {
                        if rest.is_empty() {
                            self.after_cr = true;
                        } else if rest.first() == Some(&b'\n') {
                            rest = &rest[1..];
                        }
                    }
                    self.end_line(events);
                }
                None => {
                    self.push_bytes(rest);
                    rest = &[];
                }
            }
        }
    }

    /// The input ended: dispatches a pending event that had no blank line.
    pub fn finish(&mut self, events: &mut Vec<SseEvent>) {
        if !self.line.is_empty() || self.line_overflow {
            self.end_line(events);
        }
        self.end_line(events);
        self.after_cr = false;
    }

    fn push_bytes(&mut self, bytes: &[u8]) {
        if self.line_overflow {
            return;
        }
        if self.line.len() + self.data.len() + bytes.len() > MAX_EVENT_BYTES {
            self.line_overflow = true;
            self.line.clear();
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn end_line(&mut self, events: &mut Vec<SseEvent>) {
        // The line buffer is lent out and given back, so that its capacity
        // serves the next line instead of a new allocation per line.
        let mut line = std::mem::take(&mut self.line);
        if std::mem::take(&mut self.line_overflow) {
            self.oversized = true;
        } else {
            self.take_line(&line, events);
        }
        line.clear();
        self.line = line;
    }

    fn take_line(&mut self, mut line: &[u8], events: &mut Vec<SseEvent>) {
        if self.at_start {
            self.at_start = false;
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        if line.is_empty() {
            self.dispatch(events);
            return;
        }
        if self.oversized || line.first() == Some(&b':') {
            return;
        }
        let (name, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        // `from_utf8` checks ASCII a word at a time; `from_utf8_lossy`
        // alone goes byte by byte, and was a tenth of a relayed event's
        // instructions.
        let value = match std::str::from_utf8(value) {
            Ok(text) => std::borrow::Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(value),
        };
        match name {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&value);
                self.has_data = true;
            }
            b"event" => self.event = Some(value.into_owned()),
            _ => {}
        }
    }

    fn dispatch(&mut self, events: &mut Vec<SseEvent>) {
        let event = self.event.take();
        if std::mem::take(&mut self.oversized) {
            self.data.clear();
            self.has_data = false;
            return;
        }
        if std::mem::take(&mut self.has_data) {
            events.push(SseEvent {
                event,
                data: std::mem::take(&mut self.data),
            });
        }
    }
}

/// Decodes a whole byte string (tests and small bodies).
pub fn decode_all(bytes: &[u8]) -> Vec<SseEvent> {
    let mut d = SseDecoder::new();
    let mut out = Vec::new();
    d.feed(bytes, &mut out);
    d.finish(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            event: event.map(str::to_string),
            data: data.to_string(),
        }
    }

    const SAMPLES: &[&[u8]] = &[
        b"data: {\"a\":1}\n\ndata:{\"b\":2}\n\n",
        b"event: message_start\r\ndata: {\"x\":\"\xC3\xA9\"}\r\n\r\n: ping\r\n\r\nevent: e2\r\ndata: l1\r\ndata: l2\r\n\r\n",
        b"\xEF\xBB\xBFdata: one\r\rdata: two\rdata\n\n: c\nid: 7\nretry: 9\ndata: last",
        b"event: x\n\nevent: y\ndata:  two spaces\n\n\n\n",
    ];

    #[test]
    fn decodes_field_variants() {
        assert_eq!(
            decode_all(SAMPLES[0]),
            vec![ev(None, "{\"a\":1}"), ev(None, "{\"b\":2}")]
        );
        assert_eq!(
            decode_all(SAMPLES[1]),
            vec![
                ev(Some("message_start"), "{\"x\":\"é\"}"),
                ev(Some("e2"), "l1\nl2")
            ]
        );
        assert_eq!(
            decode_all(SAMPLES[2]),
            vec![ev(None, "one"), ev(None, "two\n"), ev(None, "last")]
        );
        // An event with no data is not dispatched and its name does not leak.
        assert_eq!(decode_all(SAMPLES[3]), vec![ev(Some("y"), " two spaces")]);
    }

    #[test]
    fn every_split_gives_the_same_events() {
        for input in SAMPLES {
            let whole = decode_all(input);
            for i in 0..=input.len() {
                for j in i..=input.len() {
                    let mut d = SseDecoder::new();
                    let mut out = Vec::new();
                    d.feed(&input[..i], &mut out);
                    d.feed(&input[i..j], &mut out);
                    d.feed(&input[j..], &mut out);
                    d.finish(&mut out);
                    assert_eq!(out, whole, "split at {i},{j} of {input:?}");
                }
            }
            let mut d = SseDecoder::new();
            let mut out = Vec::new();
            for b in input.iter() {
                d.feed(std::slice::from_ref(b), &mut out);
            }
            d.finish(&mut out);
            assert_eq!(out, whole);
        }
    }

    #[test]
    fn oversized_events_are_dropped() {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        let big = vec![b'x'; MAX_EVENT_BYTES + 1];
        d.feed(b"data: ", &mut out);
        d.feed(&big, &mut out);
        d.feed(b"\ndata: more\n\ndata: ok\n\n", &mut out);
        assert_eq!(out, vec![ev(None, "ok")]);
    }
}
