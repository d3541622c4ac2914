//! `http_head` and `chunked_body`: the request reader of our own server.

use crate::config::{DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_HEADERS};
use crate::routing::{route, split_provider_prefix};
use crate::server::request::{
    BodyFraming, BodyReader, ChunkedDecoder, Head, ParseStatus, RequestError, parse_head,
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
    assert!(head.path().starts_with('/'), "path is absolute");
    assert!(!head.path().contains('?'), "query split off the path");
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
