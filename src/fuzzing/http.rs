//! `http_head` and `chunked_body`: the request reader of our own server.

use crate::config::{DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_HEADERS};
use crate::routing::{route, split_provider_prefix};
use crate::server::request::{
    BodyFraming, BodyReader, ChunkedDecoder, Head, ParseStatus, RequestError, parse_head,
    split_authority,
};

/// Requests handled on one connection before the target stops.
const MAX_PIPELINED: usize = 16;

/// (header bytes, header count, body bytes) limits tried on every input:
/// the defaults, tight ones that small inputs reach, and ones the fuzzer
/// steers through the input's length.
fn limits(len: usize) -> [(usize, usize, usize); 3] {
    [
        (
            DEFAULT_MAX_HEADER_BYTES,
            DEFAULT_MAX_HEADERS,
            DEFAULT_MAX_BODY_BYTES,
        ),
        (64, 2, 8),
        (len / 2 + 1, len % 16, len / 3),
    ]
}

pub fn head_budget(len: usize) -> usize {
    // A body buffer grows with the bytes that arrived, never with the
    // declared length: the budget depends on the input only.
    (1 << 20) + 64 * len
}

pub fn chunked_budget(len: usize) -> usize {
    (1 << 20) + 64 * len
}

/// The bytes one client sent on a connection: heads, bodies, pipelined
/// requests, read exactly as the worker reads them.
pub fn http_head(data: &[u8]) {
    for (max_header_bytes, max_headers, max_body) in limits(data.len()) {
        connection(data, max_header_bytes, max_headers, max_body);
    }
}

fn connection(data: &[u8], max_header_bytes: usize, max_headers: usize, max_body: usize) {
    let mut buf = data.to_vec();
    for _ in 0..MAX_PIPELINED {
        let (head, len) = match parse_head(&buf, max_header_bytes, max_headers) {
            Ok(ParseStatus::Complete(head, len)) => (head, len),
            Ok(ParseStatus::Partial) => {
                assert!(
                    buf.len() <= max_header_bytes,
                    "waiting for more of a head already over the limit"
                );
                return;
            }
            Err(_) => return,
        };
        check_head(&buf, &head, len, max_header_bytes, max_headers);
        let (_, path) = split_provider_prefix(head.path());
        let _ = route(head.method(), path);

        let prefix = &buf[len..];
        let body = BodyReader::new(head.framing, max_body).and_then(|mut reader| {
            let used = reader.feed(prefix)?;
            if reader.is_complete() {
                Ok((reader.into_body(), prefix[used..].to_vec()))
            } else {
                Err(RequestError::Timeout)
            }
        });
        let (body, leftover) = match body {
            Ok((body, leftover)) => (Ok(body), leftover),
            Err(e) => (Err(e), Vec::new()),
        };
        match (head.framing, body) {
            (BodyFraming::Empty, Ok(body)) => {
                assert!(body.is_empty());
                assert_eq!(leftover, prefix, "no body: everything is pipelined");
            }
            (BodyFraming::Length(n), Ok(body)) => {
                assert!(n <= max_body as u64, "body over the limit accepted");
                let n = n as usize;
                assert_eq!(body, prefix[..n], "body is the next n bytes");
                assert_eq!(leftover, prefix[n..], "the rest is pipelined");
                assert!(body.capacity() <= max_body, "body buffer over the limit");
            }
            (BodyFraming::Chunked, Ok(body)) => {
                assert!(body.len() <= max_body, "chunked body over the limit");
                assert!(
                    body.capacity() <= bound(max_body),
                    "body buffer over 2× the limit"
                );
                assert!(
                    prefix.ends_with(&leftover),
                    "leftover is what follows the body"
                );
            }
            (BodyFraming::Length(n), Err(RequestError::BodyTooLarge)) => {
                assert!(n > max_body as u64, "body within the limit refused");
                return;
            }
            (BodyFraming::Empty, Err(e)) => panic!("empty body failed: {e:?}"),
            (_, Err(_)) => return,
        }
        buf = leftover;
    }
}

/// What a complete head promises the rest of the server.
fn check_head(buf: &[u8], head: &Head, len: usize, max_header_bytes: usize, max_headers: usize) {
    assert!(len > 0 && len <= buf.len(), "head length within the buffer");
    assert!(len <= max_header_bytes, "head over the byte limit accepted");
    assert!(
        head.headers().count() <= max_headers,
        "more headers than the limit accepted"
    );
    assert!(!head.method().is_empty(), "empty method");
    if head.is_asterisk_form() {
        assert_eq!(head.method(), "OPTIONS", "the target * is only for OPTIONS");
        assert_eq!((head.path(), head.query()), ("*", None));
    } else {
        assert!(head.path().starts_with('/'), "path is absolute");
    }
    assert!(!head.path().contains('?'), "query split off the path");
    check_host(head);
    for expect in head
        .headers()
        .filter(|(n, _)| n.eq_ignore_ascii_case("expect"))
    {
        assert!(
            expect
                .1
                .split(',')
                .map(str::trim)
                .all(|e| e.is_empty() || e.eq_ignore_ascii_case("100-continue")),
            "Expect: {} accepted (417 due)",
            expect.1
        );
    }
    assert!(
        !head.expect_continue || head.minor_version == 1,
        "100-continue on HTTP/1.0"
    );
    if head.minor_version == 0 && head.header("transfer-encoding").is_some() {
        assert!(
            !head.keep_alive,
            "HTTP/1.0 kept open after Transfer-Encoding"
        );
    }
    match head.framing {
        BodyFraming::Empty => {}
        BodyFraming::Length(n) => {
            assert!(n > 0, "Length(0) is Empty");
            assert!(head.header("transfer-encoding").is_none());
            let declared = head.header("content-length").map(str::trim);
            let declared = declared.expect("Length framing from a Content-Length");
            // RFC 9110 §8.6: `Content-Length = 1*DIGIT`, nothing else.
            assert!(
                declared.bytes().all(|b| b.is_ascii_digit()),
                "Content-Length {declared:?} accepted"
            );
            assert_eq!(declared.parse::<u64>(), Ok(n), "declared length");
        }
        BodyFraming::Chunked => assert!(head.header("content-length").is_none()),
    }
    // The poller re-parses the buffer after every read: a head that
    // arrived in pieces must get the same answer as one that arrived whole.
    let again = parse_head(&buf[..len], max_header_bytes, max_headers);
    let Ok(ParseStatus::Complete(same, same_len)) = again else {
        panic!("the head alone does not parse: {again:?}");
    };
    assert_eq!(same_len, len);
    assert_eq!(same.method(), head.method());
    assert_eq!(same.path(), head.path());
    assert_eq!(same.query(), head.query());
    assert!(same.headers().eq(head.headers()));
    for cut in super::cuts(&buf[..len]) {
        if cut < len {
            let part = parse_head(&buf[..cut], max_header_bytes, max_headers);
            assert!(
                matches!(part, Ok(ParseStatus::Partial)),
                "the first {cut} bytes of a good head gave {part:?}"
            );
        }
    }
}

/// RFC 9112 §3.2: one `Host` (required on HTTP/1.1), and the host the
/// server checks (the DNS-rebinding guard) is a plain name or address.
fn check_host(head: &Head) {
    let fields = head
        .headers()
        .filter(|(n, _)| n.eq_ignore_ascii_case("host"))
        .count();
    assert!(fields <= 1, "more than one Host accepted");
    if head.minor_version == 1 {
        assert_eq!(fields, 1, "HTTP/1.1 without Host accepted");
    }
    let Some(host) = head.host() else {
        assert_eq!(fields, 0, "a Host field but no host");
        return;
    };
    let (name, _) = split_authority(host).expect("accepted host splits");
    assert_eq!(head.host_name(), Some(name));
    assert!(
        !name
            .bytes()
            .any(|b| b <= b' ' || b >= 0x7f || b"@/?#[]\\\"<>`{}|^".contains(&b)),
        "host name {name:?} accepted"
    );
}

/// Largest buffer a body of at most `limit` bytes may grow to.
fn bound(limit: usize) -> usize {
    (2 * limit).max(8)
}

/// The outcome of decoding one input.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    result: Result<usize, RequestError>,
    done: bool,
    body: Vec<u8>,
}

/// Feeds `data` to a decoder in pieces ending at `cuts` (sorted), as the
/// worker does with each socket read, stopping at the first error.
fn decode(data: &[u8], limit: usize, cuts: &[usize]) -> Decoded {
    let mut decoder = ChunkedDecoder::new(limit);
    let mut body = Vec::new();
    let mut consumed = 0;
    let mut start = 0;
    for end in cuts.iter().copied().chain([data.len()]) {
        let piece = &data[start..end.max(start)];
        start = end.max(start);
        match decoder.feed(piece, &mut body) {
            Ok(n) => {
                assert!(n <= piece.len());
                assert!(
                    n == piece.len() || decoder.is_done(),
                    "input left over before the end"
                );
                consumed += n;
            }
            Err(e) => {
                return Decoded {
                    result: Err(e),
                    done: decoder.is_done(),
                    body,
                };
            }
        }
        if decoder.is_done() {
            break;
        }
    }
    Decoded {
        result: Ok(consumed),
        done: decoder.is_done(),
        body,
    }
}

/// A chunked request body: any split decodes alike, and nothing grows
/// past the limit.
pub fn chunked_body(data: &[u8]) {
    for limit in [0, 16, data.len() / 2, DEFAULT_MAX_BODY_BYTES] {
        let whole = decode(data, limit, &[]);
        assert!(whole.body.len() <= limit, "decoded body over the limit");
        assert!(
            whole.body.capacity() <= bound(limit),
            "body buffer over 2× the limit"
        );
        assert_eq!(
            decode(data, limit, &super::cuts(data)),
            whole,
            "split decode"
        );
        if data.len() <= 256 {
            let every: Vec<usize> = (1..data.len()).collect();
            assert_eq!(decode(data, limit, &every), whole, "byte-wise decode");
        }
        check_grammar(data, &whole);
        if let (Ok(_), true) = (&whole.result, whole.done) {
            // What was accepted re-encodes as one chunk and decodes the same.
            let mut again = format!("{:x}\r\n", whole.body.len()).into_bytes();
            again.extend_from_slice(&whole.body);
            if !whole.body.is_empty() {
                again.extend_from_slice(b"\r\n0\r\n");
            }
            again.extend_from_slice(b"\r\n");
            let round = decode(&again, limit, &[]);
            assert_eq!(round.result, Ok(again.len()), "re-encoded body");
            assert_eq!(round.body, whole.body);
        }
    }
}

/// The decoder's verdict matches the plain grammar, unless a limit
/// stopped it first (limits are the decoder's own business).
fn check_grammar(data: &[u8], decoded: &Decoded) {
    let limited = matches!(
        decoded.result,
        Err(RequestError::BodyTooLarge
            | RequestError::HeadersTooLarge
            | RequestError::BadRequest(
                "chunk line too long"
                    | "chunk extensions too long"
                    | "chunk framing out of proportion to the data"
            ))
    );
    if limited {
        return;
    }
    let got = match (&decoded.result, decoded.done) {
        (Err(_), _) => Verdict::Invalid,
        (Ok(_), false) => Verdict::Short,
        (Ok(consumed), true) => Verdict::Body(decoded.body.clone(), *consumed),
    };
    assert_eq!(got, grammar(data), "decoder and grammar disagree");
}

/// What RFC 9112 §7.1 makes of a whole input.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// A complete body: its data, and the bytes it took.
    Body(Vec<u8>, usize),
    /// Not a chunked body, whatever follows.
    Invalid,
    /// A valid beginning.
    Short,
}

/// The chunked-body grammar read plainly over the whole input, with no
/// limits and no state machine, to check the incremental decoder against:
/// `*chunk last-chunk trailer-section CRLF`, lines ending in CRLF only,
/// trailer fields as the head's field lines (and UTF-8, as the head).
fn grammar(data: &[u8]) -> Verdict {
    let mut at = 0;
    let mut body = Vec::new();
    // The line starting at `at`, without its CRLF, and where the next begins.
    let line = |at: usize| -> Result<(&[u8], usize), Verdict> {
        let rest = &data[at..];
        match rest.iter().position(|&b| b == b'\r' || b == b'\n') {
            None => Err(Verdict::Short),
            Some(i) if rest[i] == b'\n' => Err(Verdict::Invalid),
            Some(i) => match rest.get(i + 1) {
                None => Err(Verdict::Short),
                Some(b'\n') => Ok((&rest[..i], at + i + 2)),
                Some(_) => Err(Verdict::Invalid),
            },
        }
    };
    loop {
        let (size_line, next) = match line(at) {
            Ok(l) => l,
            Err(v) => return v,
        };
        let digits = size_line
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        if !(1..=16).contains(&digits) || !chunk_ext(&size_line[digits..]) {
            return Verdict::Invalid;
        }
        let size = u64::from_str_radix(std::str::from_utf8(&size_line[..digits]).unwrap(), 16)
            .expect("16 hex digits fit");
        at = next;
        if size == 0 {
            break;
        }
        let Some(end) = usize::try_from(size).ok().and_then(|s| s.checked_add(at)) else {
            return Verdict::Short;
        };
        if data.len() < end {
            return Verdict::Short;
        }
        body.extend_from_slice(&data[at..end]);
        match data.get(end..end + 2) {
            Some(b"\r\n") => at = end + 2,
            Some(_) => return Verdict::Invalid,
            None if data[end..].iter().all(|&b| b == b'\r') => return Verdict::Short,
            None => return Verdict::Invalid,
        }
    }
    loop {
        let (field, next) = match line(at) {
            Ok(l) => l,
            Err(v) => return v,
        };
        at = next;
        if field.is_empty() {
            return Verdict::Body(body, at);
        }
        let name = field.iter().take_while(|&&b| tchar(b)).count();
        let value_ok = field[name..].strip_prefix(b":").is_some_and(|v| {
            v.iter()
                .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
        });
        if name == 0 || !value_ok || std::str::from_utf8(field).is_err() {
            return Verdict::Invalid;
        }
    }
}

fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `*( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] )`.
fn chunk_ext(s: &[u8]) -> bool {
    let ws = |b: &u8| *b == b' ' || *b == b'\t';
    let vis = |b: u8| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80;
    let skip_ws = |i: usize| i + s[i..].iter().take_while(|b| ws(b)).count();
    let skip_token = |i: usize| i + s[i..].iter().take_while(|&&b| tchar(b)).count();
    let mut i = 0;
    while i < s.len() {
        i = skip_ws(i);
        if s.get(i) != Some(&b';') {
            return false;
        }
        let name = skip_ws(i + 1);
        i = skip_token(name);
        if i == name {
            return false;
        }
        let eq = skip_ws(i);
        if s.get(eq) != Some(&b'=') {
            continue;
        }
        let value = skip_ws(eq + 1);
        if s.get(value) == Some(&b'"') {
            i = value + 1;
            loop {
                match s.get(i) {
                    Some(b'"') => break,
                    Some(b'\\') if s.get(i + 1).is_some_and(|&b| vis(b)) => i += 2,
                    Some(&b) if b != b'\\' && vis(b) => i += 1,
                    _ => return false,
                }
            }
            i += 1;
        } else {
            i = skip_token(value);
            if i == value {
                return false;
            }
        }
    }
    true
}
