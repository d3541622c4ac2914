//! Head parsing, body framing and the chunked decoder.
use super::*;
use crate::server::chunked::{MAX_CHUNK_EXTENSIONS, MAX_CHUNK_LINE, MAX_FRAMING_SLACK};

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
    let raw =
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
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
    let h =
        complete(b"GET http://127.0.0.1:3000/v1/models?x=1 HTTP/1.1\r\nHost: evil.example\r\n\r\n");
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
        let (body, n, done) =
            decode(&raw).unwrap_or_else(|e| panic!("{:?}: {e:?}", String::from_utf8_lossy(ext)));
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
