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

pub use super::chunked::ChunkedDecoder;

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
        // A request is looked up a dozen times; most fields differ in
        // length from the name sought, and a length is compared without
        // slicing the text (which checks bounds and char boundaries).
        self.fields
            .iter()
            .find(|(n, _)| n.len() == name.len() && self.text[n.clone()].eq_ignore_ascii_case(name))
            .map(|(_, v)| &self.text[v.clone()])
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
    /// The head passed [`super::Handler::screen`] (always, for requests
    /// the server hands over; a handler called otherwise sees false).
    pub screened: bool,
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

#[cfg(test)]
mod tests;
