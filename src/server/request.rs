//! Request heads and bodies: parsing and limits.
//!
//! The head is parsed by `httparse` from bytes the poller has already
//! buffered; the body is collected by the poller as it arrives, with a size
//! cap checked *before* anything is allocated, for `Content-Length` and
//! chunked bodies alike (the tiny_http failure that motivated this module:
//! a huge declared length must never become a huge allocation).

use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::net::{Ipv6Addr, SocketAddr};
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
    /// `Expect` other than `100-continue` → 417.
    ExpectationFailed,
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
            Self::ExpectationFailed => (417, "only Expect: 100-continue is supported"),
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
    /// The authority of an absolute-form target, else the `Host` value.
    host: Option<Range<usize>>,
    /// The target was `*` (`OPTIONS * HTTP/1.1`).
    asterisk: bool,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Body framing derived from the headers.
    pub framing: BodyFraming,
    /// Whether the connection may be kept open: the client wants it, and
    /// the framing allows it (never after an HTTP/1.0 request that had a
    /// `Transfer-Encoding`).
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent on HTTP/1.1 (HTTP/1.0 ignores it).
    pub expect_continue: bool,
}

impl Head {
    /// Method, as sent (`GET`, `POST`, …).
    pub fn method(&self) -> &str {
        &self.text[self.method.clone()]
    }

    /// Path without the query string (not percent-decoded). An
    /// absolute-form target (`GET http://host/p?q`) yields its path (`/p`);
    /// the asterisk form yields `*`.
    pub fn path(&self) -> &str {
        &self.text[self.path.clone()]
    }

    /// The target was `*`, which only `OPTIONS` may send: a question about
    /// the server as a whole rather than one resource.
    pub fn is_asterisk_form(&self) -> bool {
        self.asterisk
    }

    /// The host the request is for, `host[:port]` as sent: the authority
    /// of an absolute-form target, else the `Host` field (RFC 9112
    /// §3.2.2). `None` only for HTTP/1.0 without `Host`; may be empty
    /// (`Host:` with no value). Its syntax has been checked.
    pub fn host(&self) -> Option<&str> {
        self.host.clone().map(|h| &self.text[h])
    }

    /// [`Head::host`] without the port, and an IPv6 literal without its
    /// brackets (`[::1]:3000` → `::1`), so that it parses as an
    /// `IpAddr`. Names keep their case: compare case-insensitively.
    pub fn host_name(&self) -> Option<&str> {
        self.host().and_then(split_authority).map(|(name, _)| name)
    }

    /// The body is framed with `Transfer-Encoding: chunked`.
    pub fn is_chunked(&self) -> bool {
        self.framing == BodyFraming::Chunked
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
    let method_text = req.method.unwrap_or_default();
    let method = span(text, method_text);
    let minor_version = req.version.unwrap_or(1);
    let target = parse_target(method_text, req.path.unwrap_or_default())?;

    let mut fields = Vec::with_capacity(req.headers.len());
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut connection_close = false;
    let mut connection_keep_alive = false;
    let mut expect_continue = false;
    let mut host_field: Option<&str> = None;
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
            // `Expect = #expectation`; 100-continue is the only one
            // defined, and anything else must not be silently ignored.
            for expectation in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                if !expectation.eq_ignore_ascii_case("100-continue") {
                    return Err(RequestError::ExpectationFailed);
                }
                expect_continue = true;
            }
        } else if name.eq_ignore_ascii_case("host") {
            // Two Host lines, or one that is no `host[:port]`, leave the
            // target ambiguous: RFC 9112 §3.2 requires a 400.
            if host_field.is_some() {
                return Err(RequestError::BadRequest("more than one Host header"));
            }
            if split_authority(value).is_none() {
                return Err(RequestError::BadRequest("invalid Host header"));
            }
            host_field = Some(value);
        }
        // httparse's slices point into `buf`, whose prefix is `text`.
        fields.push((span(text, name), span(text, value)));
    }
    if minor_version == 1 && host_field.is_none() {
        return Err(RequestError::BadRequest("missing Host header"));
    }
    // An absolute-form target names the host itself and the Host field
    // is then ignored (RFC 9112 §3.2.2).
    let host = target.authority.or(host_field).map(|h| span(text, h));
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
        // An HTTP/1.0 message with Transfer-Encoding has faulty framing
        // for any 1.0 intermediary: close after it (RFC 9112 §6.1).
        connection_keep_alive && !connection_close && !transfer_encoding
    } else {
        !connection_close
    };
    Ok(ParseStatus::Complete(
        Head {
            text: text.to_owned(),
            method,
            path: span(text, target.path),
            query: target.query.map(|q| span(text, q)),
            fields,
            host,
            asterisk: target.path == "*",
            minor_version,
            framing,
            keep_alive,
            // HTTP/1.0 has no 100 Continue; its clients send the body anyway.
            expect_continue: expect_continue && minor_version == 1,
        },
        len,
    ))
}

/// The parts of a request target, each a slice of the head's text.
struct Target<'a> {
    path: &'a str,
    query: Option<&'a str>,
    authority: Option<&'a str>,
}

/// Splits a request target in origin form (`/p?q`), absolute form
/// (`http://host/p?q`) or asterisk form (`*`, with `OPTIONS` only);
/// RFC 9112 §3.2. The authority form is for CONNECT, which a gateway
/// does not serve.
fn parse_target<'a>(method: &str, target: &'a str) -> Result<Target<'a>, RequestError> {
    if target == "*" {
        if method != "OPTIONS" {
            return Err(RequestError::BadRequest("the target * is only for OPTIONS"));
        }
        return Ok(Target {
            path: target,
            query: None,
            authority: None,
        });
    }
    if target.starts_with('/') {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        return Ok(Target {
            path,
            query,
            authority: None,
        });
    }
    let bad = |why| Err(RequestError::BadRequest(why));
    let Some((scheme, rest)) = target.split_once("://") else {
        return bad("request target must be an absolute path or URI");
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return bad("request target must be an http or https URI");
    }
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    // Userinfo in an http URI is deprecated and a known way to disguise
    // the host (RFC 9110 §4.2.4); an empty host is invalid (§4.2.1).
    if authority.contains('@') {
        return bad("request target must not carry userinfo");
    }
    if split_authority(authority).is_none_or(|(name, _)| name.is_empty()) {
        return bad("invalid host in the request target");
    }
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (tail, None),
    };
    // An empty path means `/`; the scheme's own `//` lends one so the path
    // stays a slice of the head.
    let path = if path.is_empty() {
        &target[scheme.len() + 2..scheme.len() + 3]
    } else {
        path
    };
    Ok(Target {
        path,
        query,
        authority: Some(authority),
    })
}

/// Splits an authority without userinfo, `host[:port]` (RFC 3986 §3.2),
/// into the host, an IPv6 literal without its brackets, and the port;
/// `None` when it is not one. The host may be empty, as in `Host:` for a
/// target without authority.
pub fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    let (name, port) = match authority.strip_prefix('[') {
        Some(rest) => {
            let (ip, after) = rest.split_once(']')?;
            ip.parse::<Ipv6Addr>().ok()?;
            if after.is_empty() {
                (ip, None)
            } else {
                (ip, Some(after.strip_prefix(':')?))
            }
        }
        None => {
            let (name, port) = match authority.split_once(':') {
                Some((n, p)) => (n, Some(p)),
                None => (authority, None),
            };
            if !is_reg_name(name) {
                return None;
            }
            (name, port)
        }
    };
    let port = match port {
        // `port = *DIGIT`: `host:` is a host with no port given.
        None | Some("") => None,
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
        Some(_) => return None,
    };
    Some((name, port))
}

/// `reg-name = *( unreserved / pct-encoded / sub-delims )`, which also
/// covers IPv4 addresses.
fn is_reg_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3);
                if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                    return false;
                }
                i += 3;
                continue;
            }
            b if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b) => {}
            _ => return false,
        }
        i += 1;
    }
    true
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

    /// Applies the head's limits to chunked trailers (see
    /// [`ChunkedDecoder::trailer_limits`]).
    pub fn trailer_limits(mut self, max_bytes: usize, max_fields: usize) -> Self {
        if let BodyKind::Chunked(decoder) = self.kind {
            self.kind = BodyKind::Chunked(decoder.trailer_limits(max_bytes, max_fields));
        }
        self
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
/// As strict as the head parser, so that no front proxy can read a body
/// differently (a smuggling seam): every line ends in CRLF,
/// `chunk-size = 1*HEXDIG` with nothing around it, chunk extensions
/// follow their grammar, data is followed by exactly CRLF, and trailer
/// lines go through the head's field-line parser and limits before they
/// are discarded. Sizes are checked against the limit as soon as a
/// chunk-size line is complete, so a declared `ffffffffffff` chunk is
/// refused without allocating it; the bytes spent on framing are bounded
/// too, so a small body cannot come wrapped in gigabytes of extensions.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
    limit: usize,
    /// Data bytes declared so far.
    total: usize,
    /// Bytes of chunk-size lines and of the CRLFs after data.
    framing: usize,
    /// Bytes of chunk extensions.
    extensions: usize,
    /// The current chunk-size or trailer line, CR included.
    line: Vec<u8>,
    trailer_bytes: usize,
    trailer_fields: usize,
    max_trailer_bytes: usize,
    max_trailer_fields: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(usize),
    /// The CR after a chunk's data is due.
    DataCr,
    /// The LF after a chunk's data is due.
    DataLf,
    Trailer,
    Done,
}

/// Longest chunk-size line (size and extensions, CRLF not counted).
const MAX_CHUNK_LINE: usize = 4096;
/// Most chunk-extension bytes accepted in one body. Nothing aiproxy
/// serves uses extensions; the bound only has to let odd clients through.
const MAX_CHUNK_EXTENSIONS: usize = 64 * 1024;
/// Framing bytes (chunk-size lines and CRLFs) accepted per data byte,
/// beyond [`MAX_FRAMING_SLACK`]: one-byte chunks (`1\r\nx\r\n`, five
/// framing bytes for one of data) still pass; a megabyte of data wrapped
/// in gigabytes of leading zeros or extensions does not.
const MAX_FRAMING_PER_BYTE: usize = 8;
/// Framing bytes accepted whatever the data.
const MAX_FRAMING_SLACK: usize = 64 * 1024;
/// Trailer limits of [`ChunkedDecoder::new`], the default head limits;
/// [`ChunkedDecoder::trailer_limits`] sets the configured ones.
const DEFAULT_TRAILER_BYTES: usize = 32 * 1024;
const DEFAULT_TRAILER_FIELDS: usize = 100;

impl ChunkedDecoder {
    /// A decoder that refuses bodies larger than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            state: ChunkState::Size,
            limit,
            total: 0,
            framing: 0,
            extensions: 0,
            line: Vec::new(),
            trailer_bytes: 0,
            trailer_fields: 0,
            max_trailer_bytes: DEFAULT_TRAILER_BYTES,
            max_trailer_fields: DEFAULT_TRAILER_FIELDS,
        }
    }

    /// Bounds the trailer section as the head is bounded: at most
    /// `max_bytes` bytes and `max_fields` field lines, else 431.
    pub fn trailer_limits(mut self, max_bytes: usize, max_fields: usize) -> Self {
        self.max_trailer_bytes = max_bytes;
        self.max_trailer_fields = max_fields;
        self
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
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data(remaining - take)
                    };
                }
                ChunkState::DataCr | ChunkState::DataLf => {
                    let (due, next) = if self.state == ChunkState::DataCr {
                        (b'\r', ChunkState::DataLf)
                    } else {
                        (b'\n', ChunkState::Size)
                    };
                    if input[i] != due {
                        return Err(RequestError::BadRequest("chunk data not followed by CRLF"));
                    }
                    i += 1;
                    self.count_framing(1)?;
                    self.state = next;
                }
                ChunkState::Size | ChunkState::Trailer => {
                    let byte = input[i];
                    i += 1;
                    self.line_byte(byte)?;
                }
            }
        }
        Ok(i)
    }

    /// Takes one byte of a chunk-size or trailer line; a complete line
    /// moves the state on.
    fn line_byte(&mut self, byte: u8) -> Result<(), RequestError> {
        if self.state == ChunkState::Size {
            self.count_framing(1)?;
        } else {
            self.trailer_bytes += 1;
            if self.trailer_bytes > self.max_trailer_bytes {
                return Err(RequestError::HeadersTooLarge);
            }
        }
        let after_cr = self.line.last() == Some(&b'\r');
        match byte {
            b'\n' if after_cr => {
                self.line.pop();
                let line = std::mem::take(&mut self.line);
                self.state = if self.state == ChunkState::Size {
                    self.on_size_line(&line)?
                } else {
                    self.on_trailer_line(&line)?
                };
                // Keep the allocation for the next line.
                self.line = line;
                self.line.clear();
                Ok(())
            }
            b'\n' => Err(RequestError::BadRequest("chunk line ends in a bare LF")),
            _ if after_cr => Err(RequestError::BadRequest("bare CR in a chunk line")),
            b if b != b'\r'
                && self.state == ChunkState::Size
                && self.line.len() >= MAX_CHUNK_LINE =>
            {
                Err(RequestError::BadRequest("chunk line too long"))
            }
            _ => {
                self.line.push(byte);
                Ok(())
            }
        }
    }

    fn count_framing(&mut self, n: usize) -> Result<(), RequestError> {
        self.framing += n;
        let allowed = self
            .total
            .saturating_mul(MAX_FRAMING_PER_BYTE)
            .saturating_add(MAX_FRAMING_SLACK);
        if self.framing > allowed {
            return Err(RequestError::BadRequest(
                "chunk framing out of proportion to the data",
            ));
        }
        Ok(())
    }

    /// `chunk-size [ chunk-ext ]`, CRLF removed.
    fn on_size_line(&mut self, line: &[u8]) -> Result<ChunkState, RequestError> {
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        // `chunk-size = 1*HEXDIG`: no sign or space, which
        // `from_str_radix` and `trim` would take; 16 digits fit a u64.
        if digits == 0 || digits > 16 {
            return Err(RequestError::BadRequest("invalid chunk size"));
        }
        let (size_text, ext) = line.split_at(digits);
        if !is_chunk_ext(ext) {
            return Err(RequestError::BadRequest("invalid chunk extension"));
        }
        self.extensions += ext.len();
        if self.extensions > MAX_CHUNK_EXTENSIONS {
            return Err(RequestError::BadRequest("chunk extensions too long"));
        }
        let size = std::str::from_utf8(size_text)
            .ok()
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .ok_or(RequestError::BadRequest("invalid chunk size"))?;
        if size == 0 {
            return Ok(ChunkState::Trailer);
        }
        let size = usize::try_from(size).map_err(|_| RequestError::BodyTooLarge)?;
        self.total = self
            .total
            .checked_add(size)
            .ok_or(RequestError::BodyTooLarge)?;
        if self.total > self.limit {
            return Err(RequestError::BodyTooLarge);
        }
        Ok(ChunkState::Data(size))
    }

    /// One trailer line, CRLF removed; the empty line ends the body.
    fn on_trailer_line(&mut self, line: &[u8]) -> Result<ChunkState, RequestError> {
        if line.is_empty() {
            return Ok(ChunkState::Done);
        }
        self.trailer_fields += 1;
        if self.trailer_fields > self.max_trailer_fields {
            return Err(RequestError::HeadersTooLarge);
        }
        // The head's parser on this one line: token name, colon, a value
        // of visible characters, no obs-fold. It answers Partial for a
        // good field line, since the empty line that ends a block is not
        // there. Values must be UTF-8, as in the head.
        let mut field = Vec::with_capacity(line.len() + 2);
        field.extend_from_slice(line);
        field.extend_from_slice(b"\r\n");
        let mut slot = [httparse::EMPTY_HEADER; 1];
        match httparse::parse_headers(&field, &mut slot) {
            Ok(httparse::Status::Partial) if std::str::from_utf8(line).is_ok() => {
                Ok(ChunkState::Trailer)
            }
            _ => Err(RequestError::BadRequest("malformed trailer field")),
        }
    }
}

/// `chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )`
/// with `chunk-ext-name = token` and `chunk-ext-val = token / quoted-string`
/// (RFC 9112 §7.1.1). Whitespace is only allowed where BWS is, so a size
/// followed by a space alone is refused.
fn is_chunk_ext(mut ext: &[u8]) -> bool {
    while !ext.is_empty() {
        let Some(rest) = skip_bws(ext).strip_prefix(b";") else {
            return false;
        };
        let rest = skip_bws(rest);
        let name = token_len(rest);
        if name == 0 {
            return false;
        }
        ext = &rest[name..];
        if let Some(value) = skip_bws(ext).strip_prefix(b"=") {
            let value = skip_bws(value);
            let len = if value.first() == Some(&b'"') {
                quoted_string_len(value)
            } else {
                token_len(value)
            };
            if len == 0 {
                return false;
            }
            ext = &value[len..];
        }
    }
    true
}

fn skip_bws(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    &s[n..]
}

/// Length of the `token` (`1*tchar`) that `s` starts with; 0 if none.
fn token_len(s: &[u8]) -> usize {
    s.iter()
        .take_while(|&&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        .count()
}

/// Length of the `quoted-string` that `s` starts with, quotes included;
/// 0 if it is not one (unterminated, or a control byte inside).
fn quoted_string_len(s: &[u8]) -> usize {
    let text = |b: u8| b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80;
    let mut i = 1;
    while let Some(&b) = s.get(i) {
        match b {
            b'"' => return i + 1,
            b'\\' if s.get(i + 1).is_some_and(|&q| text(q)) => i += 2,
            b'\\' => return 0,
            b if text(b) => i += 1,
            _ => return 0,
        }
    }
    0
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
        let mut raw = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        raw.extend(std::iter::repeat_n(b'a', 40 * 1024));
        assert_eq!(head(&raw).unwrap_err(), RequestError::HeadersTooLarge);
    }

    #[test]
    fn too_many_headers_is_rejected() {
        let mut raw = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..100 {
            raw.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        assert_eq!(head(&raw).unwrap_err(), RequestError::HeadersTooLarge);
    }

    #[test]
    fn content_length_with_chunked_is_refused() {
        let raw = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            head(raw).unwrap_err(),
            RequestError::BadRequest("both Content-Length and Transfer-Encoding sent")
        );
    }

    #[test]
    fn signed_content_length_is_refused() {
        for raw in [
            &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc"[..],
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -0\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n",
        ] {
            assert_eq!(
                head(raw).unwrap_err(),
                RequestError::BadRequest("invalid Content-Length")
            );
        }
        let ok = head(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length:  007 \r\n\r\n").unwrap();
        let ParseStatus::Complete(h, _) = ok else {
            panic!("partial")
        };
        assert_eq!(h.framing, BodyFraming::Length(7));
    }

    #[test]
    fn empty_or_repeated_transfer_encoding_is_refused() {
        for raw in [
            &b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \r\nContent-Length: 3\r\n\r\nabc"[..],
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ,\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
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

    fn complete(bytes: &[u8]) -> Head {
        match head(bytes) {
            Ok(ParseStatus::Complete(h, _)) => h,
            other => panic!("{}: {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    fn bad_request(bytes: &[u8]) -> &'static str {
        match head(bytes) {
            Err(RequestError::BadRequest(why)) => why,
            other => panic!("{}: {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    #[test]
    fn missing_host_on_http11_is_refused() {
        assert_eq!(
            bad_request(b"GET / HTTP/1.1\r\n\r\n"),
            "missing Host header"
        );
        let h = complete(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(h.host(), None, "HTTP/1.0 needs no Host");
    }

    #[test]
    fn duplicate_host_is_refused() {
        for raw in [
            &b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n",
            b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n",
        ] {
            assert_eq!(bad_request(raw), "more than one Host header");
        }
    }

    #[test]
    fn invalid_host_is_refused() {
        for host in [
            "a b",
            "user@host",
            "host/path",
            "[::1",
            "[not-ip]:80",
            "[::1]80",
            "host:port",
            "host:+80",
            "host:65536",
            "a%zz",
            "a\"b",
        ] {
            let raw = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
            assert_eq!(bad_request(raw.as_bytes()), "invalid Host header", "{host}");
        }
    }

    #[test]
    fn host_and_host_name_give_the_authority_and_the_bare_name() {
        for (host, name) in [
            ("localhost:3000", "localhost"),
            ("127.0.0.1", "127.0.0.1"),
            ("[::1]:8080", "::1"),
            ("[::1]", "::1"),
            ("Example.COM:", "Example.COM"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("", ""),
        ] {
            let h = complete(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
            assert_eq!(h.host(), Some(host));
            assert_eq!(h.host_name(), Some(name), "{host}");
        }
        assert_eq!(split_authority("[::1]:8080"), Some(("::1", Some(8080))));
        assert_eq!(split_authority("a:080"), Some(("a", Some(80))));
    }

    #[test]
    fn absolute_form_target_is_accepted_and_its_authority_is_the_host() {
        let h = complete(
            b"GET http://127.0.0.1:3000/v1/models?x=1 HTTP/1.1\r\nHost: evil.example\r\n\r\n",
        );
        assert_eq!(h.path(), "/v1/models");
        assert_eq!(h.query(), Some("x=1"));
        assert_eq!(h.host(), Some("127.0.0.1:3000"));
        assert_eq!(h.host_name(), Some("127.0.0.1"));
        assert_eq!(h.header("host"), Some("evil.example"));
        assert!(!h.is_asterisk_form());

        let h = complete(b"GET HTTPS://[::1]?k=v HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(h.path(), "/", "an empty path is /");
        assert_eq!(h.query(), Some("k=v"));
        assert_eq!(h.host_name(), Some("::1"));
        assert_eq!(complete(b"GET http://h HTTP/1.0\r\n\r\n").path(), "/");
    }

    #[test]
    fn absolute_form_target_still_needs_a_host_field() {
        assert_eq!(
            bad_request(b"GET http://h/ HTTP/1.1\r\n\r\n"),
            "missing Host header"
        );
    }

    #[test]
    fn absolute_form_with_userinfo_empty_host_or_other_scheme_is_refused() {
        for target in [
            "http://user@h/",
            "http://user:pw@h/",
            "http:///p",
            "http://:80/p",
            "ftp://h/",
            "h:80",
            "http:/h/",
            "http://[::1/",
            "http://h:x/",
        ] {
            let raw = format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n");
            assert!(
                matches!(head(raw.as_bytes()), Err(RequestError::BadRequest(_))),
                "{target}"
            );
        }
    }

    #[test]
    fn asterisk_form_is_accepted_only_for_options() {
        let h = complete(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(h.is_asterisk_form());
        assert_eq!(h.path(), "*");
        assert_eq!(h.query(), None);
        assert!(!complete(b"OPTIONS / HTTP/1.1\r\nHost: x\r\n\r\n").is_asterisk_form());
        for method in ["GET", "POST", "options"] {
            let raw = format!("{method} * HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_eq!(
                bad_request(raw.as_bytes()),
                "the target * is only for OPTIONS"
            );
        }
    }

    #[test]
    fn expect_other_than_100_continue_gets_417() {
        for value in ["200-ok", "100-continue, foo", "100-continuex"] {
            let raw = format!("POST / HTTP/1.1\r\nHost: x\r\nExpect: {value}\r\n\r\n");
            let err = head(raw.as_bytes()).unwrap_err();
            assert_eq!(err, RequestError::ExpectationFailed, "{value}");
            assert_eq!(err.status().0, 417);
        }
        let h = complete(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\n\r\n");
        assert!(h.expect_continue);
    }

    #[test]
    fn expect_100_continue_is_ignored_on_http10() {
        let h = complete(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n");
        assert!(!h.expect_continue);
    }

    #[test]
    fn http10_with_transfer_encoding_does_not_keep_alive() {
        let h = complete(
            b"POST / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert!(h.is_chunked());
        assert!(!h.keep_alive);
        let h = complete(b"POST / HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n");
        assert!(!h.is_chunked());
        assert!(h.keep_alive);
        let h = complete(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(h.is_chunked() && h.keep_alive);
    }

    /// Decodes `raw` in one piece with a 1 MiB limit.
    fn decode(raw: &[u8]) -> Result<(Vec<u8>, usize, bool), RequestError> {
        let mut d = ChunkedDecoder::new(1 << 20);
        let mut out = Vec::new();
        let n = d.feed(raw, &mut out)?;
        Ok((out, n, d.is_done()))
    }

    fn decode_err(raw: &[u8]) -> &'static str {
        match decode(raw) {
            Err(RequestError::BadRequest(why)) => why,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(raw)),
        }
    }

    #[test]
    fn chunk_line_with_bare_lf_is_refused() {
        for raw in [
            &b"3\nabc\r\n0\r\n\r\n"[..],
            b"3;a=b\nabc\r\n0\r\n\r\n",
            b"3\r\nabc\r\n0\n\r\n",
            b"3\r\nabc\r\n0\r\n\n",
            b"3\r\nabc\r\n0\r\nX: y\n\r\n",
        ] {
            assert_eq!(decode_err(raw), "chunk line ends in a bare LF", "{raw:?}");
        }
    }

    #[test]
    fn chunk_line_with_bare_cr_is_refused() {
        for raw in [
            &b"3\rabc\r\n0\r\n\r\n"[..],
            b"3;a=\"x\ry\"\r\nabc\r\n0\r\n\r\n",
            b"3\r\r\nabc\r\n0\r\n\r\n",
            b"0\r\nX: a\rb\r\n\r\n",
            b"0\r\n\rX",
        ] {
            assert_eq!(decode_err(raw), "bare CR in a chunk line", "{raw:?}");
        }
    }

    #[test]
    fn chunk_data_not_followed_by_crlf_is_refused() {
        for raw in [
            &b"3\r\nabcd\r\n0\r\n\r\n"[..],
            b"3\r\nabc\n0\r\n\r\n",
            b"3\r\nabc\r0\r\n\r\n",
            b"3\r\nabc0\r\n\r\n",
        ] {
            assert_eq!(
                decode_err(raw),
                "chunk data not followed by CRLF",
                "{raw:?}"
            );
        }
    }

    #[test]
    fn whitespace_or_control_around_chunk_size_is_refused() {
        for raw in [
            &b" 5\r\nhello\r\n0\r\n\r\n"[..],
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"5\t\r\nhello\r\n0\r\n\r\n",
            b"\t5\r\nhello\r\n0\r\n\r\n",
            b"\x0b5\r\nhello\r\n0\r\n\r\n",
            b"5\x0b\r\nhello\r\n0\r\n\r\n",
            b"5\x0c\r\nhello\r\n0\r\n\r\n",
            b"\x0c5\r\nhello\r\n0\r\n\r\n",
            b"5\x00\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"\r\n5\r\nhello\r\n0\r\n\r\n",
        ] {
            assert!(
                matches!(
                    decode_err(raw),
                    "invalid chunk size" | "invalid chunk extension"
                ),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn more_than_16_hex_digits_is_an_invalid_chunk_size() {
        assert_eq!(
            decode_err(b"00000000000000005\r\nhello\r\n0\r\n\r\n"),
            "invalid chunk size"
        );
        let (body, _, done) = decode(b"0000000000000005\r\nhello\r\n0\r\n\r\n").unwrap();
        assert!(done);
        assert_eq!(body, b"hello");
    }

    #[test]
    fn chunk_extensions_following_the_grammar_are_accepted() {
        for ext in [
            &b";a"[..],
            b";a=b",
            b" ;a",
            b"\t; a = b ;c",
            b";name=\"quoted \\\" string\\\\ with ; = \xc3\xa9\"",
            b";a=\"\";b=!#$%&'*+-.^_`|~09AZaz",
            b";a;b;c=d",
        ] {
            let mut raw = b"3".to_vec();
            raw.extend_from_slice(ext);
            raw.extend_from_slice(b"\r\nabc\r\n0");
            raw.extend_from_slice(ext);
            raw.extend_from_slice(b"\r\n\r\n");
            let (body, n, done) = decode(&raw)
                .unwrap_or_else(|e| panic!("{:?}: {e:?}", String::from_utf8_lossy(ext)));
            assert!(done);
            assert_eq!(n, raw.len());
            assert_eq!(body, b"abc");
        }
    }

    #[test]
    fn malformed_chunk_extensions_are_refused() {
        for ext in [
            &b";"[..],
            b";a ",
            b";a\t",
            b"; ",
            b";=b",
            b";a=",
            b";a= ",
            b";a b",
            b";a=b c",
            b";a=\"unterminated",
            b";a=\"x\"y",
            b";a=\"\x00\"",
            b";a=\"\x7f\"",
            b";a=\"\\\x01\"",
            b";a\x00",
            b";a=b\x00",
            b";a=\x0bb",
            b";\x0ca",
            b";a=\xc3\xa9",
            b";a(b)",
            b";a=@",
            b"g",
            b",a",
        ] {
            let mut raw = b"3".to_vec();
            raw.extend_from_slice(ext);
            raw.extend_from_slice(b"\r\nabc\r\n0\r\n\r\n");
            assert_eq!(
                decode_err(&raw),
                "invalid chunk extension",
                "{:?}",
                String::from_utf8_lossy(ext)
            );
        }
    }

    #[test]
    fn chunk_line_over_4_kib_is_refused() {
        let mut raw = b"1;a=".to_vec();
        raw.extend(std::iter::repeat_n(b'x', MAX_CHUNK_LINE - 4));
        raw.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert!(
            decode(&raw).unwrap().2,
            "a line of exactly the limit passes"
        );
        let mut raw = b"1;a=".to_vec();
        raw.extend(std::iter::repeat_n(b'x', MAX_CHUNK_LINE));
        assert_eq!(decode_err(&raw), "chunk line too long");
    }

    #[test]
    fn chunk_extensions_are_bounded_per_body() {
        // 3 KiB of extension on each 1 KiB chunk (little enough framing
        // for the data): refused once the body's extensions pass 64 KiB.
        let ext_len = 3 + 3 * 1024;
        let mut one = b"400;e=".to_vec();
        one.extend(std::iter::repeat_n(b'e', 3 * 1024));
        one.extend_from_slice(b"\r\n");
        one.extend(std::iter::repeat_n(b'x', 1024));
        one.extend_from_slice(b"\r\n");
        let mut d = ChunkedDecoder::new(1 << 20);
        let mut out = Vec::new();
        let mut sent = 0;
        let err = loop {
            match d.feed(&one, &mut out) {
                Ok(_) => sent += 1,
                Err(e) => break e,
            }
            assert!(sent < 100, "extensions never refused");
        };
        assert_eq!(err, RequestError::BadRequest("chunk extensions too long"));
        assert_eq!(sent, MAX_CHUNK_EXTENSIONS / ext_len);
    }

    #[test]
    fn framing_out_of_proportion_to_the_data_is_refused() {
        // Sixteen-digit sizes on one-byte chunks: 20 framing bytes each.
        let one = b"0000000000000001\r\nx\r\n";
        let mut d = ChunkedDecoder::new(1 << 20);
        let mut out = Vec::new();
        let mut sent = 0usize;
        let err = loop {
            match d.feed(one, &mut out) {
                Ok(_) => sent += 1,
                Err(e) => break e,
            }
            assert!(sent < 100_000, "framing never refused");
        };
        assert_eq!(
            err,
            RequestError::BadRequest("chunk framing out of proportion to the data")
        );
        assert!(sent * 20 > MAX_FRAMING_SLACK && sent * 20 < 2 * MAX_FRAMING_SLACK);
        // One-byte chunks written plainly pass, whatever the length.
        let mut raw = b"1\r\nx\r\n".repeat(100_000);
        raw.extend_from_slice(b"0\r\n\r\n");
        let (body, _, done) = decode(&raw).unwrap();
        assert!(done);
        assert_eq!(body.len(), 100_000);
    }

    #[test]
    fn trailer_fields_are_parsed_like_header_fields_and_discarded() {
        let raw = b"3\r\nabc\r\n0\r\nX-Checksum: 1\r\nEmpty:\r\nX-T:\t v a \r\n\r\nNEXT";
        let (body, n, done) = decode(raw).unwrap();
        assert!(done);
        assert_eq!(body, b"abc");
        assert_eq!(&raw[n..], b"NEXT");
    }

    #[test]
    fn malformed_trailers_are_refused() {
        for trailer in [
            &b"X-T : 1"[..],
            b" X-T: 1",
            b"X-T: 1\r\n continued",
            b"\tfolded",
            b"No colon",
            b": no name",
            b"X(T): 1",
            b"X-T: a\x00b",
            b"X-T: a\x01b",
            b"X-T: a\x7fb",
            b"X-T: \xff\xfe",
        ] {
            let mut raw = b"0\r\n".to_vec();
            raw.extend_from_slice(trailer);
            raw.extend_from_slice(b"\r\n\r\n");
            assert_eq!(
                decode_err(&raw),
                "malformed trailer field",
                "{:?}",
                String::from_utf8_lossy(trailer)
            );
        }
    }

    #[test]
    fn trailers_are_bounded_like_the_head() {
        let many = [&b"0\r\n"[..], &b"X: 1\r\n".repeat(4), b"\r\n"].concat();
        let mut d = ChunkedDecoder::new(100).trailer_limits(1024, 3);
        assert_eq!(
            d.feed(&many, &mut Vec::new()).unwrap_err(),
            RequestError::HeadersTooLarge
        );
        let mut d = ChunkedDecoder::new(100).trailer_limits(1024, 4);
        assert_eq!(d.feed(&many, &mut Vec::new()).unwrap(), many.len());
        assert!(d.is_done());

        let big = [&b"0\r\nX: "[..], &[b'v'; 100], b"\r\n\r\n"].concat();
        let mut d = ChunkedDecoder::new(100).trailer_limits(100, 10);
        assert_eq!(
            d.feed(&big, &mut Vec::new()).unwrap_err(),
            RequestError::HeadersTooLarge
        );
        // The default bound is the default head limit.
        let huge = [&b"0\r\nX: "[..], &[b'v'; 40 * 1024]].concat();
        assert_eq!(decode(&huge).unwrap_err(), RequestError::HeadersTooLarge);
    }

    #[test]
    fn strict_chunked_body_decodes_alike_across_any_split() {
        let raw: &[u8] =
            b"4;a=\"q;\\\"\"\r\nWiki\r\n5 ; b = c\r\npedia\r\n0;z\r\nT: x\r\nU: \r\n\r\nNEXT";
        let end = raw.len() - b"NEXT".len();
        for split in 0..=end {
            for second in split..=end {
                let mut d = ChunkedDecoder::new(100);
                let mut out = Vec::new();
                assert_eq!(d.feed(&raw[..split], &mut out).unwrap(), split);
                assert_eq!(
                    d.feed(&raw[split..second], &mut out).unwrap(),
                    second - split
                );
                let last = d.feed(&raw[second..], &mut out).unwrap();
                assert!(d.is_done());
                assert_eq!(out, b"Wikipedia");
                assert_eq!(&raw[second + last..], b"NEXT");
            }
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("bad%zz%"), "bad%zz%");
    }
}
