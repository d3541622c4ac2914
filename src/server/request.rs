//! Request heads and bodies: parsing and limits.
//!
//! The head is parsed by `httparse` from bytes the poller has already
//! buffered; the body is collected by the poller as it arrives, with a size
//! cap checked *before* anything is allocated, for `Content-Length` and
//! chunked bodies alike (the tiny_http failure that motivated this module:
//! a huge declared length must never become a huge allocation).

use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Instant;

/// Why a request could not be read; each maps to one answer.
#[derive(Debug, PartialEq, Eq)]
pub enum RequestError {
    /// Malformed head or framing → 400.
    BadRequest(&'static str),
    /// Head larger than the limit or too many fields → 431.
    HeadersTooLarge,
    /// Declared or received body larger than the limit → 413.
    BodyTooLarge,
    /// Body not received before the deadline → 408.
    Timeout,
    /// Only HTTP/1.0 and HTTP/1.1 are served → 505.
    UnsupportedVersion,
    /// `Transfer-Encoding` other than chunked → 501.
    UnsupportedEncoding,
    /// The client went away; nothing can be answered.
    Disconnected,
}

impl RequestError {
    /// HTTP status and a short reason for the error page.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            Self::BadRequest(why) => (400, why),
            Self::HeadersTooLarge => (431, "request header fields too large"),
            Self::BodyTooLarge => (413, "request body too large"),
            Self::Timeout => (408, "request body not received in time"),
            Self::UnsupportedVersion => (505, "HTTP version not supported"),
            Self::UnsupportedEncoding => (501, "transfer encoding not supported"),
            Self::Disconnected => (400, "client disconnected"),
        }
    }
}

/// How the body of a request is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    Empty,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head.
///
/// The head's text is kept in one string and every part of it is a range
/// into that string: one allocation per request instead of two per header.
#[derive(Debug, Clone)]
pub struct Head {
    text: String,
    method: Range<usize>,
    path: Range<usize>,
    query: Option<Range<usize>>,
    fields: Vec<(Range<usize>, Range<usize>)>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Body framing derived from the headers.
    pub framing: BodyFraming,
    /// Whether the client wants the connection kept open.
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
}

impl Head {
    /// Method, as sent (`GET`, `POST`, …).
    pub fn method(&self) -> &str {
        &self.text[self.method.clone()]
    }

    /// Path without the query string (not percent-decoded).
    pub fn path(&self) -> &str {
        &self.text[self.path.clone()]
    }

    /// Raw query string, without `?`.
    pub fn query(&self) -> Option<&str> {
        self.query.clone().map(|q| &self.text[q])
    }

    /// Header fields in arrival order, names as sent.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields
            .iter()
            .map(|(n, v)| (&self.text[n.clone()], &self.text[v.clone()]))
    }

    /// First header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// First query parameter named `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<Cow<'_, str>> {
        let query = self.query()?;
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| percent_decode(v))
        })
    }
}

/// Byte range of `part` inside `whole`; `part` is a subslice of `whole`
/// (anything else, such as an empty literal, yields an empty range).
fn span(whole: &str, part: &str) -> Range<usize> {
    let start = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    match start.checked_add(part.len()) {
        Some(end)
            if end <= whole.len()
                && whole.is_char_boundary(start)
                && whole.is_char_boundary(end) =>
        {
            start..end
        }
        _ => 0..0,
    }
}

/// Header slots kept on the stack; larger `max_headers` use the heap.
const STACK_HEADER_SLOTS: usize = 128;

/// Outcome of trying to parse a head from the bytes received so far.
#[derive(Debug)]
pub enum ParseStatus {
    /// Complete head of `len` bytes at the start of the buffer.
    Complete(Head, usize),
    /// More bytes are needed.
    Partial,
}

/// Parses a request head from `buf`, enforcing the header count and byte
/// limits. Pure; shared by the server and the fuzz target.
pub fn parse_head(
    buf: &[u8],
    max_header_bytes: usize,
    max_headers: usize,
) -> Result<ParseStatus, RequestError> {
    // Header slots on the stack, uninitialised: zeroing 100 slots for
    // every head was a measurable share of a request's cost.
    let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADER_SLOTS];
    let mut heap = Vec::new();
    let slots: &mut [MaybeUninit<httparse::Header<'_>>] = if max_headers <= STACK_HEADER_SLOTS {
        &mut stack[..max_headers]
    } else {
        heap.resize_with(max_headers, MaybeUninit::uninit);
        &mut heap
    };
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > max_header_bytes {
                Err(RequestError::HeadersTooLarge)
            } else {
                Ok(ParseStatus::Partial)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(RequestError::HeadersTooLarge),
        Err(httparse::Error::Version) => return Err(RequestError::UnsupportedVersion),
        Err(_) => return Err(RequestError::BadRequest("malformed request head")),
    };
    if len > max_header_bytes {
        return Err(RequestError::HeadersTooLarge);
    }
    let text = std::str::from_utf8(&buf[..len])
        .map_err(|_| RequestError::BadRequest("request head is not valid UTF-8"))?;
    let method = span(text, req.method.unwrap_or_default());
    let target = req.path.unwrap_or_default();
    let minor_version = req.version.unwrap_or(1);
    if !target.starts_with('/') {
        return Err(RequestError::BadRequest(
            "request target must be an absolute path",
        ));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (span(text, p), Some(span(text, q))),
        None => (span(text, target), None),
    };

    let mut fields = Vec::with_capacity(req.headers.len());
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut connection_close = false;
    let mut connection_keep_alive = false;
    let mut expect_continue = false;
    for field in req.headers.iter() {
        let value = std::str::from_utf8(field.value)
            .map_err(|_| RequestError::BadRequest("header value is not valid UTF-8"))?;
        let name = field.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(value)?;
            if content_length.is_some_and(|old| old != n) {
                return Err(RequestError::BadRequest(
                    "conflicting Content-Length headers",
                ));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            for coding in value.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                if coding.eq_ignore_ascii_case("chunked") {
                    if chunked {
                        return Err(RequestError::BadRequest("chunked applied twice"));
                    }
                    chunked = true;
                } else {
                    return Err(RequestError::UnsupportedEncoding);
                }
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                connection_close |= token.eq_ignore_ascii_case("close");
                connection_keep_alive |= token.eq_ignore_ascii_case("keep-alive");
            }
        } else if name.eq_ignore_ascii_case("expect") {
            if value.trim().eq_ignore_ascii_case("100-continue") {
                expect_continue = true;
            } else {
                return Err(RequestError::BadRequest("unsupported Expect header"));
            }
        }
        // httparse's slices point into `buf`, whose prefix is `text`.
        fields.push((span(text, name), span(text, value)));
    }
    // Both framings at once is the classic request-smuggling vector
    // (RFC 9112 §6.3): refuse rather than guess. So is a
    // Transfer-Encoding that names no coding (`Transfer-Encoding: `),
    // which one reader ignores and another takes for chunked.
    if transfer_encoding && !chunked {
        return Err(RequestError::BadRequest(
            "Transfer-Encoding without chunked",
        ));
    }
    let framing = match (chunked, content_length) {
        (true, Some(_)) => {
            return Err(RequestError::BadRequest(
                "both Content-Length and Transfer-Encoding sent",
            ));
        }
        (true, None) => BodyFraming::Chunked,
        (false, Some(0) | None) => BodyFraming::Empty,
        (false, Some(n)) => BodyFraming::Length(n),
    };
    let keep_alive = if minor_version == 0 {
        connection_keep_alive && !connection_close
    } else {
        !connection_close
    };
    Ok(ParseStatus::Complete(
        Head {
            text: text.to_owned(),
            method,
            path,
            query,
            fields,
            minor_version,
            framing,
            keep_alive,
            expect_continue,
        },
        len,
    ))
}

/// `Content-Length = 1*DIGIT` (RFC 9110 §8.6). `u64::from_str` alone
/// would also take a sign (`+5`), which a proxy in front may read
/// differently: a request-smuggling seam.
fn parse_content_length(value: &str) -> Result<u64, RequestError> {
    let digits = value.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RequestError::BadRequest("invalid Content-Length"));
    }
    digits
        .parse()
        .map_err(|_| RequestError::BadRequest("invalid Content-Length"))
}

/// A complete request as handed to a [`super::Handler`].
#[derive(Debug)]
pub struct Request {
    /// The parsed head.
    pub head: Head,
    /// The whole body (bounded by the configured limit).
    pub body: Vec<u8>,
    /// The client's address.
    pub peer: SocketAddr,
    /// When the head was complete.
    pub received: Instant,
}

impl Request {
    /// Method as sent.
    pub fn method(&self) -> &str {
        self.head.method()
    }

    /// Path without the query.
    pub fn path(&self) -> &str {
        self.head.path()
    }

    /// First header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }

    /// First query parameter named `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<Cow<'_, str>> {
        self.head.query_param(name)
    }
}

/// Decodes `%XX` escapes and `+` (form encoding); invalid escapes are kept.
pub fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// Collects one request body from bytes as they arrive, in any pieces.
///
/// The buffer grows with the bytes received, never from the declared
/// length: a `Content-Length` alone costs nothing, so a client that
/// announces large bodies and sends none cannot make the server reserve
/// memory for them.
#[derive(Debug)]
pub struct BodyReader {
    kind: BodyKind,
    body: Vec<u8>,
}

#[derive(Debug)]
enum BodyKind {
    Length { remaining: usize },
    Chunked(ChunkedDecoder),
}

/// First reservation for a body: one read's worth, whatever was declared.
const INITIAL_BODY_CAPACITY: usize = 16 * 1024;

impl BodyReader {
    /// A reader for a body framed as `framing`, refusing more than `limit`
    /// bytes; a declared length over the limit is refused at once.
    pub fn new(framing: BodyFraming, limit: usize) -> Result<Self, RequestError> {
        let kind = match framing {
            BodyFraming::Empty => BodyKind::Length { remaining: 0 },
            BodyFraming::Length(n) if n > limit as u64 => return Err(RequestError::BodyTooLarge),
            BodyFraming::Length(n) => BodyKind::Length {
                remaining: n as usize,
            },
            BodyFraming::Chunked => BodyKind::Chunked(ChunkedDecoder::new(limit)),
        };
        Ok(Self {
            kind,
            body: Vec::new(),
        })
    }

    /// Takes body bytes from `input`; returns how many it consumed, which
    /// is less than `input.len()` only once the body is complete (the rest
    /// belongs to the next request).
    pub fn feed(&mut self, input: &[u8]) -> Result<usize, RequestError> {
        match &mut self.kind {
            BodyKind::Length { remaining } => {
                let take = (*remaining).min(input.len());
                if self.body.capacity() == 0 && take > 0 {
                    self.body
                        .reserve_exact((*remaining).min(INITIAL_BODY_CAPACITY.max(take)));
                }
                self.body.extend_from_slice(&input[..take]);
                *remaining -= take;
                Ok(take)
            }
            BodyKind::Chunked(decoder) => decoder.feed(input, &mut self.body),
        }
    }

    /// Whether the whole body has arrived.
    pub fn is_complete(&self) -> bool {
        match &self.kind {
            BodyKind::Length { remaining } => *remaining == 0,
            BodyKind::Chunked(decoder) => decoder.is_done(),
        }
    }

    /// Bytes of body received so far.
    pub fn received(&self) -> usize {
        self.body.len()
    }

    /// The body.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }
}

/// Incremental decoder for `Transfer-Encoding: chunked` (RFC 9112 §7.1).
///
/// Sizes are checked against the limit as soon as a chunk-size line is
/// complete, so a declared `ffffffffffff` chunk is refused without
/// allocating it. Chunk extensions are skipped; trailers are discarded.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
    limit: usize,
    total: usize,
    line: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(usize),
    DataEnd,
    Trailer,
    Done,
}

/// Longest chunk-size or trailer line accepted.
const MAX_CHUNK_LINE: usize = 4096;

impl ChunkedDecoder {
    /// A decoder that refuses bodies larger than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            state: ChunkState::Size,
            limit,
            total: 0,
            line: Vec::new(),
        }
    }

    /// Whether the terminating chunk and trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes `input`, appending data to `out`; returns how many input
    /// bytes were consumed (less than `input.len()` only once done).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, RequestError> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                ChunkState::Done => return Ok(i),
                ChunkState::Data(remaining) => {
                    let take = remaining.min(input.len() - i);
                    out.extend_from_slice(&input[i..i + take]);
                    i += take;
                    self.state = if take == remaining {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(remaining - take)
                    };
                }
                ChunkState::Size | ChunkState::DataEnd | ChunkState::Trailer => {
                    let byte = input[i];
                    i += 1;
                    if byte != b'\n' {
                        if self.line.len() >= MAX_CHUNK_LINE {
                            return Err(RequestError::BadRequest("chunk line too long"));
                        }
                        self.line.push(byte);
                        continue;
                    }
                    let line = std::mem::take(&mut self.line);
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    self.state = self.on_line(line)?;
                }
            }
        }
        Ok(i)
    }

    fn on_line(&mut self, line: &[u8]) -> Result<ChunkState, RequestError> {
        match self.state {
            ChunkState::DataEnd if line.is_empty() => Ok(ChunkState::Size),
            ChunkState::DataEnd => Err(RequestError::BadRequest("chunk data longer than its size")),
            ChunkState::Trailer if line.is_empty() => Ok(ChunkState::Done),
            ChunkState::Trailer => Ok(ChunkState::Trailer),
            _ => {
                let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
                let size_text = std::str::from_utf8(size_text)
                    .map_err(|_| RequestError::BadRequest("invalid chunk size"))?
                    .trim();
                // `chunk-size = 1*HEXDIG`: no sign, which `from_str_radix` takes.
                if size_text.is_empty()
                    || size_text.len() > 16
                    || !size_text.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return Err(RequestError::BadRequest("invalid chunk size"));
                }
                let size = usize::from_str_radix(size_text, 16)
                    .map_err(|_| RequestError::BadRequest("invalid chunk size"))?;
                if size == 0 {
                    return Ok(ChunkState::Trailer);
                }
                self.total = self
                    .total
                    .checked_add(size)
                    .ok_or(RequestError::BodyTooLarge)?;
                if self.total > self.limit {
                    return Err(RequestError::BodyTooLarge);
                }
                Ok(ChunkState::Data(size))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &[u8]) -> Result<ParseStatus, RequestError> {
        parse_head(bytes, 32 * 1024, 100)
    }

    #[test]
    fn parses_a_complete_head_with_query() {
        let raw = b"POST /v1/chat?key=a%20b&x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
        let ParseStatus::Complete(h, len) = head(raw).unwrap() else {
            panic!("partial")
        };
        assert_eq!(len, raw.len() - 3);
        assert_eq!(h.path(), "/v1/chat");
        assert_eq!(h.query(), Some("key=a%20b&x"));
        assert_eq!(h.header("HOST"), Some("x"));
        assert_eq!(h.framing, BodyFraming::Length(3));
        assert!(h.keep_alive);
    }

    #[test]
    fn partial_head_waits_for_more_bytes() {
        assert!(matches!(
            head(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap(),
            ParseStatus::Partial
        ));
    }

    #[test]
    fn oversized_head_is_rejected() {
        let mut raw = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        raw.extend(std::iter::repeat_n(b'a', 40 * 1024));
        assert_eq!(head(&raw).unwrap_err(), RequestError::HeadersTooLarge);
    }

    #[test]
    fn too_many_headers_is_rejected() {
        let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..101 {
            raw.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        assert_eq!(head(&raw).unwrap_err(), RequestError::HeadersTooLarge);
    }

    #[test]
    fn content_length_with_chunked_is_refused() {
        let raw = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(
            head(raw).unwrap_err(),
            RequestError::BadRequest(_)
        ));
    }

    #[test]
    fn signed_content_length_is_refused() {
        for raw in [
            &b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc"[..],
            b"POST / HTTP/1.1\r\nContent-Length: -0\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
        ] {
            assert_eq!(
                head(raw).unwrap_err(),
                RequestError::BadRequest("invalid Content-Length")
            );
        }
        let ok = head(b"POST / HTTP/1.1\r\nContent-Length:  007 \r\n\r\n").unwrap();
        let ParseStatus::Complete(h, _) = ok else {
            panic!("partial")
        };
        assert_eq!(h.framing, BodyFraming::Length(7));
    }

    #[test]
    fn empty_or_repeated_transfer_encoding_is_refused() {
        for raw in [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: \r\nContent-Length: 3\r\n\r\nabc"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: ,\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(
                matches!(head(raw).unwrap_err(), RequestError::BadRequest(_)),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn signed_chunk_size_is_refused() {
        let mut d = ChunkedDecoder::new(100);
        let mut out = Vec::new();
        assert_eq!(
            d.feed(b"+5\r\nhello\r\n0\r\n\r\n", &mut out).unwrap_err(),
            RequestError::BadRequest("invalid chunk size")
        );
        assert!(out.is_empty());
    }

    #[test]
    fn http10_closes_by_default() {
        let ParseStatus::Complete(h, _) = head(b"GET / HTTP/1.0\r\n\r\n").unwrap() else {
            panic!("partial")
        };
        assert!(!h.keep_alive);
    }

    #[test]
    fn huge_content_length_is_rejected_without_allocating() {
        let err = BodyReader::new(BodyFraming::Length(100_000_000_000), 1024).unwrap_err();
        assert_eq!(err, RequestError::BodyTooLarge);
    }

    #[test]
    fn declared_length_reserves_nothing_before_bytes_arrive() {
        let mut r = BodyReader::new(BodyFraming::Length(10 << 20), 10 << 20).unwrap();
        assert_eq!(r.body.capacity(), 0);
        r.feed(b"abc").unwrap();
        assert!(
            r.body.capacity() <= INITIAL_BODY_CAPACITY,
            "{}",
            r.body.capacity()
        );
        assert!(!r.is_complete());
    }

    #[test]
    fn chunked_body_decodes_across_any_split() {
        let raw = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let end = raw.len() - b"NEXT".len();
        for split in 0..=end {
            let mut d = ChunkedDecoder::new(100);
            let mut out = Vec::new();
            let a = d.feed(&raw[..split], &mut out).unwrap();
            assert_eq!(a, split, "consumed all of first part");
            let b = d.feed(&raw[split..], &mut out).unwrap();
            assert!(d.is_done());
            assert_eq!(out, b"Wikipedia");
            assert_eq!(&raw[split + b..], b"NEXT");
        }
    }

    #[test]
    fn chunked_body_over_limit_is_refused_at_the_size_line() {
        let mut d = ChunkedDecoder::new(10);
        let mut out = Vec::new();
        assert_eq!(
            d.feed(b"ffffffffff\r\n", &mut out).unwrap_err(),
            RequestError::BodyTooLarge
        );
        assert!(out.capacity() < 1024);
    }

    #[test]
    fn body_reader_leaves_pipelined_bytes() {
        let mut r = BodyReader::new(BodyFraming::Length(3), 100).unwrap();
        let used = r.feed(b"abcGET /").unwrap();
        assert_eq!(used, 3);
        assert!(r.is_complete());
        assert_eq!(r.into_body(), b"abc");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("bad%zz%"), "bad%zz%");
    }
}
