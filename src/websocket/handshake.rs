//! The server side of the RFC 6455 opening handshake (section 4.2): checks
//! a request head and computes `Sec-WebSocket-Accept`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The one protocol version this server speaks (RFC 6455 section 4.4).
pub const VERSION: &str = "13";

/// Appended to the client's key before hashing (RFC 6455 section 1.3).
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A request that cannot be upgraded, and how to say so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status: 400, or 426 for an unsupported version.
    pub status: u16,
    /// What is wrong, for the client.
    pub message: &'static str,
    /// Header fields to add (`Sec-WebSocket-Version` with a 426).
    pub headers: Vec<(&'static str, &'static str)>,
}

impl Refusal {
    fn bad(message: &'static str) -> Self {
        Refusal {
            status: 400,
            message,
            headers: Vec::new(),
        }
    }
}

/// Checks an upgrade request: `method`, the HTTP minor version and its
/// header fields (`header` looks one up by lower-case name). Returns the
/// `Sec-WebSocket-Accept` value of the 101 answer.
pub fn accept<'h>(
    method: &str,
    minor_version: u8,
    header: impl Fn(&str) -> Option<&'h str>,
) -> Result<String, Refusal> {
    if method != "GET" {
        return Err(Refusal::bad("a WebSocket upgrade is a GET request"));
    }
    if minor_version < 1 {
        return Err(Refusal::bad("a WebSocket upgrade needs HTTP/1.1"));
    }
    if !header("upgrade").is_some_and(|v| has_token(v, "websocket")) {
        return Err(Refusal {
            status: 426,
            message: "this endpoint speaks WebSocket: send Upgrade: websocket",
            headers: vec![("Upgrade", "websocket")],
        });
    }
    if !header("connection").is_some_and(|v| has_token(v, "upgrade")) {
        return Err(Refusal::bad(
            "a WebSocket upgrade needs Connection: Upgrade",
        ));
    }
    if header("sec-websocket-version").map(str::trim) != Some(VERSION) {
        return Err(Refusal {
            status: 426,
            message: "unsupported WebSocket version: this server speaks version 13",
            headers: vec![("Sec-WebSocket-Version", VERSION)],
        });
    }
    let key = header("sec-websocket-key").map(str::trim).unwrap_or("");
    if !valid_key(key) {
        return Err(Refusal::bad("Sec-WebSocket-Key must be 16 bytes in base64"));
    }
    Ok(accept_key(key))
}

/// `Sec-WebSocket-Accept` for `key`: base64 of the SHA-1 of the key and
/// the protocol's GUID.
pub fn accept_key(key: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.as_bytes());
    ctx.update(GUID.as_bytes());
    STANDARD.encode(ctx.finish())
}

/// Whether `key` is base64 of exactly 16 bytes (RFC 6455 section 4.1).
fn valid_key(key: &str) -> bool {
    key.len() == 24 && STANDARD.decode(key).is_ok_and(|k| k.len() == 16)
}

/// Whether the comma-separated `value` holds `token` (any case).
fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers<'a>(list: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |name| list.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    const GOOD: &[(&str, &str)] = &[
        ("upgrade", "websocket"),
        ("connection", "keep-alive, Upgrade"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn the_rfc_example_key() {
        // RFC 6455 section 1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(
            accept("GET", 1, headers(GOOD)).unwrap(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn tokens_are_matched_in_lists_and_any_case() {
        let list = [
            ("upgrade", "WebSocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-version", " 13 "),
            ("sec-websocket-key", "AAAAAAAAAAAAAAAAAAAAAA=="),
        ];
        assert!(accept("GET", 1, headers(&list)).is_ok());
    }

    #[test]
    fn each_missing_piece_is_refused() {
        let without = |name: &str| -> Vec<(&str, &str)> {
            GOOD.iter().copied().filter(|(n, _)| *n != name).collect()
        };
        assert_eq!(accept("POST", 1, headers(GOOD)).unwrap_err().status, 400);
        assert_eq!(accept("GET", 0, headers(GOOD)).unwrap_err().status, 400);
        assert_eq!(
            accept("GET", 1, headers(&without("upgrade")))
                .unwrap_err()
                .status,
            426
        );
        assert_eq!(
            accept("GET", 1, headers(&without("connection")))
                .unwrap_err()
                .status,
            400
        );
        let refusal = accept("GET", 1, headers(&without("sec-websocket-version"))).unwrap_err();
        assert_eq!(refusal.status, 426);
        assert_eq!(refusal.headers, [("Sec-WebSocket-Version", "13")]);
        assert_eq!(
            accept("GET", 1, headers(&without("sec-websocket-key")))
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn other_versions_get_426_naming_13() {
        let mut list = GOOD.to_vec();
        list[2] = ("sec-websocket-version", "8");
        let refusal = accept("GET", 1, headers(&list)).unwrap_err();
        assert_eq!(refusal.status, 426);
        assert!(refusal.message.contains("13"));
    }

    #[test]
    fn keys_must_be_sixteen_bytes_of_base64() {
        for bad in [
            "",
            "short",
            "dGhlIHNhbXBsZSBub25jZQ",
            "dGhlIHNhbXBsZSBub25jZQ=!",
            "dGhlIHNhbXBsZSBub25jZSE=",
            "AAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(!valid_key(bad), "{bad:?}");
        }
        assert!(valid_key("AAAAAAAAAAAAAAAAAAAAAA=="));
    }
}
