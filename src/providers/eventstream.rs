//! The AWS binary event-stream framing (`application/vnd.amazon.eventstream`),
//! as Kiro's `generateAssistantResponse` answers.
//!
//! Each message is a 12-byte prelude (total length, headers length, CRC32
//! of those 8 bytes), the headers, the payload and a CRC32 of everything
//! before it. Both checksums are verified: a mismatch means the byte
//! stream is out of step, and nothing after it can be trusted, so the
//! decoder stops for good. Lengths are checked against the AWS limits
//! (16 MiB per message, 128 KiB of headers) as soon as the prelude is
//! in, before anything is buffered for them.
//!
//! The decoder is sans-IO: [`Decoder::feed`] takes bytes as they arrive,
//! split anywhere, and [`Decoder::next_message`] hands out each complete
//! message once.

use std::fmt;

/// Largest message accepted (AWS limit).
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;
/// Largest header section accepted (AWS limit).
pub const MAX_HEADERS_BYTES: usize = 128 << 10;
/// Prelude: total length, headers length, prelude CRC.
const PRELUDE_BYTES: usize = 12;
/// Prelude plus the message CRC: the smallest possible message.
const MIN_MESSAGE_BYTES: usize = PRELUDE_BYTES + 4;

/// CRC32 lookup table, IEEE 802.3 reflected polynomial `0xEDB88320`.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 == 1 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC32 (IEEE / zlib variant) of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |crc, &b| {
        CRC_TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8)
    })
}

/// A header value, by its wire type (0–9).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderValue {
    /// Types 0 and 1.
    Bool(bool),
    /// Type 2.
    Byte(i8),
    /// Type 3.
    Short(i16),
    /// Type 4.
    Int(i32),
    /// Type 5.
    Long(i64),
    /// Type 6.
    Bytes(Vec<u8>),
    /// Type 7.
    String(String),
    /// Type 8: milliseconds since the epoch.
    Timestamp(i64),
    /// Type 9.
    Uuid([u8; 16]),
}

/// One decoded message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Headers in wire order.
    pub headers: Vec<(String, HeaderValue)>,
    /// The payload (JSON for every Kiro event).
    pub payload: Vec<u8>,
}

impl Message {
    /// The string value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|(n, v)| match v {
            HeaderValue::String(s) if n == name => Some(s.as_str()),
            _ => None,
        })
    }

    /// `:message-type` (`event`, `exception` or `error`); `event` when absent.
    pub fn message_type(&self) -> &str {
        self.header(":message-type").unwrap_or("event")
    }

    /// `:event-type`, `:exception-type` or `:error-code`, whichever the
    /// message type calls for.
    pub fn kind(&self) -> &str {
        let name = match self.message_type() {
            "exception" => ":exception-type",
            "error" => ":error-code",
            _ => ":event-type",
        };
        self.header(name).unwrap_or("")
    }
}

/// Why the stream cannot be decoded any further.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The prelude declares a message shorter than its fixed parts.
    TooShort(u32),
    /// The prelude declares a message over [`MAX_MESSAGE_BYTES`].
    TooLong(u32),
    /// The headers length is over [`MAX_HEADERS_BYTES`] or does not fit.
    BadHeadersLength(u32),
    /// The prelude CRC does not match.
    PreludeCrc {
        /// CRC carried by the message.
        expected: u32,
        /// CRC computed over the prelude.
        actual: u32,
    },
    /// The message CRC does not match.
    MessageCrc {
        /// CRC carried by the message.
        expected: u32,
        /// CRC computed over the message.
        actual: u32,
    },
    /// A header is malformed.
    BadHeader(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort(n) => write!(f, "event-stream message length {n} is too short"),
            Self::TooLong(n) => write!(f, "event-stream message length {n} exceeds 16 MiB"),
            Self::BadHeadersLength(n) => write!(f, "event-stream headers length {n} is invalid"),
            Self::PreludeCrc { expected, actual } => write!(
                f,
                "event-stream prelude CRC mismatch (carried {expected:08x}, computed {actual:08x})"
            ),
            Self::MessageCrc { expected, actual } => write!(
                f,
                "event-stream message CRC mismatch (carried {expected:08x}, computed {actual:08x})"
            ),
            Self::BadHeader(why) => write!(f, "event-stream header malformed: {why}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Incremental decoder: feed bytes split anywhere, take whole messages.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Start of the first unconsumed byte in `buf`: messages are taken by
    /// moving it, and the consumed front is dropped once per feed, so a
    /// read holding many small messages costs linear, not quadratic, time.
    pos: usize,
    /// Set after the first error; the stream is out of step for good.
    failed: Option<DecodeError>,
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(word)
}

impl Decoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes. Nothing is buffered after an error.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.failed.is_none() {
            self.buf.drain(..self.pos);
            self.pos = 0;
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Bytes of an unfinished message are buffered (a truncated stream
    /// if the input has ended).
    pub fn has_partial(&self) -> bool {
        self.failed.is_none() && self.pos < self.buf.len()
    }

    /// The next complete message, `Ok(None)` when more bytes are needed,
    /// or the error that stopped the stream (returned again on every
    /// later call).
    pub fn next_message(&mut self) -> Result<Option<Message>, DecodeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.try_next() {
            Ok(m) => Ok(m),
            Err(e) => {
                self.buf = Vec::new();
                self.pos = 0;
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    fn try_next(&mut self) -> Result<Option<Message>, DecodeError> {
        let buf = &self.buf[self.pos..];
        if buf.len() < PRELUDE_BYTES {
            return Ok(None);
        }
        let total = be32(buf, 0);
        let headers_len = be32(buf, 4);
        let actual = crc32(&buf[..8]);
        let expected = be32(buf, 8);
        if actual != expected {
            return Err(DecodeError::PreludeCrc { expected, actual });
        }
        let total_len = total as usize;
        if total_len < MIN_MESSAGE_BYTES {
            return Err(DecodeError::TooShort(total));
        }
        if total_len > MAX_MESSAGE_BYTES {
            return Err(DecodeError::TooLong(total));
        }
        let headers = headers_len as usize;
        if headers > MAX_HEADERS_BYTES || headers > total_len - MIN_MESSAGE_BYTES {
            return Err(DecodeError::BadHeadersLength(headers_len));
        }
        if buf.len() < total_len {
            return Ok(None);
        }
        let actual = crc32(&buf[..total_len - 4]);
        let expected = be32(buf, total_len - 4);
        if actual != expected {
            return Err(DecodeError::MessageCrc { expected, actual });
        }
        let parsed = parse_headers(&buf[PRELUDE_BYTES..PRELUDE_BYTES + headers])?;
        let payload = buf[PRELUDE_BYTES + headers..total_len - 4].to_vec();
        self.pos += total_len;
        Ok(Some(Message {
            headers: parsed,
            payload,
        }))
    }
}

/// Reads `n` bytes off the front of `rest`.
fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], DecodeError> {
    if rest.len() < n {
        return Err(DecodeError::BadHeader("value runs past the header section"));
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

fn fixed<const N: usize>(rest: &mut &[u8]) -> Result<[u8; N], DecodeError> {
    let mut out = [0u8; N];
    out.copy_from_slice(take(rest, N)?);
    Ok(out)
}

fn parse_headers(mut rest: &[u8]) -> Result<Vec<(String, HeaderValue)>, DecodeError> {
    let mut headers = Vec::new();
    while !rest.is_empty() {
        let [name_len] = fixed::<1>(&mut rest)?;
        if name_len == 0 {
            return Err(DecodeError::BadHeader("empty header name"));
        }
        let name = std::str::from_utf8(take(&mut rest, usize::from(name_len))?)
            .map_err(|_| DecodeError::BadHeader("header name is not UTF-8"))?
            .to_owned();
        let [kind] = fixed::<1>(&mut rest)?;
        let value = match kind {
            0 => HeaderValue::Bool(true),
            1 => HeaderValue::Bool(false),
            2 => HeaderValue::Byte(i8::from_be_bytes(fixed(&mut rest)?)),
            3 => HeaderValue::Short(i16::from_be_bytes(fixed(&mut rest)?)),
            4 => HeaderValue::Int(i32::from_be_bytes(fixed(&mut rest)?)),
            5 => HeaderValue::Long(i64::from_be_bytes(fixed(&mut rest)?)),
            6 | 7 => {
                let len = u16::from_be_bytes(fixed(&mut rest)?);
                let bytes = take(&mut rest, usize::from(len))?;
                if kind == 6 {
                    HeaderValue::Bytes(bytes.to_vec())
                } else {
                    HeaderValue::String(
                        std::str::from_utf8(bytes)
                            .map_err(|_| DecodeError::BadHeader("string value is not UTF-8"))?
                            .to_owned(),
                    )
                }
            }
            8 => HeaderValue::Timestamp(i64::from_be_bytes(fixed(&mut rest)?)),
            9 => HeaderValue::Uuid(fixed(&mut rest)?),
            _ => return Err(DecodeError::BadHeader("unknown value type")),
        };
        headers.push((name, value));
    }
    Ok(headers)
}

/// Encodes one message (tests and mock upstreams).
#[doc(hidden)]
pub fn encode(headers: &[(&str, HeaderValue)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        match value {
            HeaderValue::Bool(true) => h.push(0),
            HeaderValue::Bool(false) => h.push(1),
            HeaderValue::Byte(v) => {
                h.push(2);
                h.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Short(v) => {
                h.push(3);
                h.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Int(v) => {
                h.push(4);
                h.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Long(v) => {
                h.push(5);
                h.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Bytes(v) => {
                h.push(6);
                h.extend_from_slice(&(v.len() as u16).to_be_bytes());
                h.extend_from_slice(v);
            }
            HeaderValue::String(v) => {
                h.push(7);
                h.extend_from_slice(&(v.len() as u16).to_be_bytes());
                h.extend_from_slice(v.as_bytes());
            }
            HeaderValue::Timestamp(v) => {
                h.push(8);
                h.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Uuid(v) => {
                h.push(9);
                h.extend_from_slice(v);
            }
        }
    }
    let total = (MIN_MESSAGE_BYTES + h.len() + payload.len()) as u32;
    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let prelude_crc = crc32(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// Decodes arbitrary bytes fed in uneven pieces until the input ends or
/// the stream fails; never panics. The entry point for the fuzz target
/// (`eventstream_decode`); returns the messages decoded.
#[doc(hidden)]
pub fn fuzz_decode(data: &[u8]) -> usize {
    let mut decoder = Decoder::new();
    let mut count = 0;
    let mut rest = data;
    let mut step = 1;
    while !rest.is_empty() {
        let n = step.min(rest.len());
        decoder.feed(&rest[..n]);
        rest = &rest[n..];
        step = step % 17 + 1;
        loop {
            match decoder.next_message() {
                Ok(Some(_)) => count += 1,
                Ok(None) => break,
                Err(_) => return count,
            }
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, payload: &str) -> Vec<u8> {
        encode(
            &[
                (":message-type", HeaderValue::String("event".into())),
                (":event-type", HeaderValue::String(kind.into())),
                (
                    ":content-type",
                    HeaderValue::String("application/json".into()),
                ),
            ],
            payload.as_bytes(),
        )
    }

    fn drain(d: &mut Decoder) -> Result<Vec<Message>, DecodeError> {
        let mut out = Vec::new();
        while let Some(m) = d.next_message()? {
            out.push(m);
        }
        Ok(out)
    }

    #[test]
    fn crc32_check_values() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
    }

    /// The empty message of the AWS event-stream test suite, byte for byte.
    #[test]
    fn aws_empty_message_vector() {
        let bytes = [
            0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x05, 0xc2, 0x48, 0xeb, 0x7d, 0x98,
            0xc8, 0xff,
        ];
        assert_eq!(encode(&[], b""), bytes);
        let mut d = Decoder::new();
        d.feed(&bytes);
        let m = d.next_message().unwrap().unwrap();
        assert!(m.headers.is_empty() && m.payload.is_empty());
        assert!(!d.has_partial());
    }

    /// A read holding many messages is consumed by offset: 50,000 of them
    /// in one feed decode in linear time, with a partial one left over.
    #[test]
    fn many_messages_in_one_read() {
        let one = event("assistantResponseEvent", r#"{"content":"x"}"#);
        let mut bytes = one.repeat(50_000);
        bytes.extend_from_slice(&one[..5]);
        let mut d = Decoder::new();
        d.feed(&bytes);
        assert_eq!(drain(&mut d).unwrap().len(), 50_000);
        assert!(d.has_partial());
        d.feed(&one[5..]);
        assert_eq!(drain(&mut d).unwrap().len(), 1);
        assert!(!d.has_partial());
    }

    #[test]
    fn every_header_type_round_trips() {
        let headers = [
            ("t", HeaderValue::Bool(true)),
            ("f", HeaderValue::Bool(false)),
            ("b", HeaderValue::Byte(-2)),
            ("s", HeaderValue::Short(-300)),
            ("i", HeaderValue::Int(70_000)),
            ("l", HeaderValue::Long(-5_000_000_000)),
            ("by", HeaderValue::Bytes(vec![0, 1, 255])),
            ("st", HeaderValue::String("héllo".into())),
            ("ts", HeaderValue::Timestamp(1_700_000_000_000)),
            ("u", HeaderValue::Uuid([7; 16])),
        ];
        let bytes = encode(&headers, b"{}");
        let mut d = Decoder::new();
        d.feed(&bytes);
        let m = d.next_message().unwrap().unwrap();
        let want: Vec<(String, HeaderValue)> = headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.clone()))
            .collect();
        assert_eq!(m.headers, want);
        assert_eq!(m.payload, b"{}");
        assert_eq!(m.header("st"), Some("héllo"));
        assert_eq!(m.message_type(), "event");
    }

    /// Two messages (one with a multi-byte character) split at every
    /// possible point, and fed one byte at a time.
    #[test]
    fn every_split_point_gives_the_same_messages() {
        let mut stream = event("assistantResponseEvent", r#"{"content":"héllo 😀"}"#);
        stream.extend(event(
            "toolUseEvent",
            r#"{"toolUseId":"t1","name":"x","input":"{\"a\""}"#,
        ));
        let mut whole = Decoder::new();
        whole.feed(&stream);
        let expected = drain(&mut whole).unwrap();
        assert_eq!(expected.len(), 2);
        assert_eq!(expected[0].kind(), "assistantResponseEvent");
        for split in 0..=stream.len() {
            let mut d = Decoder::new();
            d.feed(&stream[..split]);
            let mut got = drain(&mut d).unwrap();
            d.feed(&stream[split..]);
            got.extend(drain(&mut d).unwrap());
            assert_eq!(got, expected, "split at {split}");
            assert!(!d.has_partial());
        }
        let mut d = Decoder::new();
        let mut got = Vec::new();
        for b in &stream {
            d.feed(std::slice::from_ref(b));
            got.extend(drain(&mut d).unwrap());
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn truncated_stream_is_reported_as_partial() {
        let stream = event("assistantResponseEvent", r#"{"content":"x"}"#);
        let mut d = Decoder::new();
        d.feed(&stream[..stream.len() - 1]);
        assert_eq!(d.next_message(), Ok(None));
        assert!(d.has_partial());
    }

    #[test]
    fn bad_prelude_crc_stops_the_stream() {
        let mut stream = event("assistantResponseEvent", r#"{"content":"x"}"#);
        stream[9] ^= 0x01;
        let mut d = Decoder::new();
        d.feed(&stream);
        assert!(matches!(
            d.next_message(),
            Err(DecodeError::PreludeCrc { .. })
        ));
        // Sticky: later good bytes are not decoded.
        d.feed(&event("assistantResponseEvent", "{}"));
        assert!(matches!(
            d.next_message(),
            Err(DecodeError::PreludeCrc { .. })
        ));
        assert!(!d.has_partial());
    }

    #[test]
    fn bad_message_crc_stops_the_stream() {
        let good = event("assistantResponseEvent", r#"{"content":"a"}"#);
        let mut bad = event("assistantResponseEvent", r#"{"content":"b"}"#);
        let at = bad.len() - 6;
        bad[at] ^= 0x20; // payload byte
        let mut stream = good.clone();
        stream.extend(&bad);
        let mut d = Decoder::new();
        d.feed(&stream);
        assert_eq!(
            d.next_message().unwrap().unwrap().payload,
            b"{\"content\":\"a\"}"
        );
        assert!(matches!(
            d.next_message(),
            Err(DecodeError::MessageCrc { .. })
        ));
    }

    /// A prelude that declares a huge message (with a valid prelude CRC)
    /// is rejected as soon as its 12 bytes are in.
    #[test]
    fn oversized_lengths_are_rejected_without_buffering() {
        let prelude = |total: u32, headers: u32| {
            let mut p = Vec::new();
            p.extend_from_slice(&total.to_be_bytes());
            p.extend_from_slice(&headers.to_be_bytes());
            let crc = crc32(&p);
            p.extend_from_slice(&crc.to_be_bytes());
            p
        };
        let mut d = Decoder::new();
        d.feed(&prelude(u32::MAX, 0));
        assert_eq!(d.next_message(), Err(DecodeError::TooLong(u32::MAX)));
        let mut d = Decoder::new();
        d.feed(&prelude((MAX_MESSAGE_BYTES + 1) as u32, 0));
        assert!(matches!(d.next_message(), Err(DecodeError::TooLong(_))));
        let mut d = Decoder::new();
        d.feed(&prelude(1 << 20, (MAX_HEADERS_BYTES + 1) as u32));
        assert!(matches!(
            d.next_message(),
            Err(DecodeError::BadHeadersLength(_))
        ));
        let mut d = Decoder::new();
        d.feed(&prelude(20, 8));
        assert_eq!(d.next_message(), Err(DecodeError::BadHeadersLength(8)));
        let mut d = Decoder::new();
        d.feed(&prelude(15, 0));
        assert_eq!(d.next_message(), Err(DecodeError::TooShort(15)));
        // The largest allowed message is merely waited for.
        let mut d = Decoder::new();
        d.feed(&prelude(MAX_MESSAGE_BYTES as u32, 0));
        assert_eq!(d.next_message(), Ok(None));
        assert!(d.buf.capacity() < 1024);
    }

    #[test]
    fn malformed_headers_are_errors() {
        let with_headers = |h: &[u8]| {
            let total = (MIN_MESSAGE_BYTES + h.len()) as u32;
            let mut out = Vec::new();
            out.extend_from_slice(&total.to_be_bytes());
            out.extend_from_slice(&(h.len() as u32).to_be_bytes());
            let crc = crc32(&out);
            out.extend_from_slice(&crc.to_be_bytes());
            out.extend_from_slice(h);
            let crc = crc32(&out);
            out.extend_from_slice(&crc.to_be_bytes());
            out
        };
        for h in [
            &[1, b'a', 42][..],            // unknown type
            &[1, b'a', 7, 0, 9, b'x'][..], // string runs past the end
            &[0, 0][..],                   // empty name
            &[5, b'a'][..],                // name runs past the end
            &[1, b'a', 7, 0, 1, 0xff][..], // not UTF-8
        ] {
            let mut d = Decoder::new();
            d.feed(&with_headers(h));
            assert!(
                matches!(d.next_message(), Err(DecodeError::BadHeader(_))),
                "{h:?}"
            );
        }
    }

    #[test]
    fn fuzz_entry_point_survives_garbage() {
        let mut stream = event("a", "{}");
        stream.extend(event("b", "{}"));
        assert_eq!(fuzz_decode(&stream), 2);
        let mut seed = 0x1234_5678u32;
        for len in 0..300 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    (seed >> 16) as u8
                })
                .collect();
            fuzz_decode(&data);
        }
    }
}
