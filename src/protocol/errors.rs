//! Error bodies in each client protocol: OpenAI
//! `{"error":{"message","type","code"}}`, Anthropic
//! `{"type":"error","error":{"type","message"}}`, Gemini
//! `{"error":{"code","message","status"}}`.
//!
//! Clients' SDKs decide retry and display from these shapes, so an error
//! is always rendered in the client's dialect, never the upstream's,
//! except that a well-formed error of the client's own family is relayed
//! untouched (it carries vendor detail we would otherwise lose).

use crate::protocol::Lookup as _;
use serde_json::{Value, json};

use super::Protocol;

/// Longest upstream text quoted in a re-rendered error.
const MAX_QUOTED: usize = 500;

/// Status used in bodies: the given one when it is a valid HTTP status.
fn valid(status: u16) -> u16 {
    if (100..=599).contains(&status) {
        status
    } else {
        500
    }
}

/// OpenAI-style error type for a status.
pub fn error_type(status: u16) -> &'static str {
    match valid(status) {
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    }
}

/// Anthropic error type for a status, using Anthropic's own names where
/// they exist (`api_error` is what Anthropic itself sends for 5xx).
pub fn anthropic_type(status: u16) -> &'static str {
    match valid(status) {
        404 => "not_found_error",
        413 => "request_too_large",
        529 => "overloaded_error",
        s if s >= 500 => "api_error",
        s => error_type(s),
    }
}

/// Gemini `status` string for a status.
pub fn gemini_status(status: u16) -> &'static str {
    match valid(status) {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        s if s >= 500 => "INTERNAL",
        _ => "UNKNOWN",
    }
}

/// `{"type":"error","error":{…}}`.
pub fn anthropic_error(status: u16, message: &str) -> Value {
    json!({"type": "error", "error": {"type": anthropic_type(status), "message": message}})
}

/// `{"error":{"code","message","status"}}`.
pub fn gemini_error(status: u16, message: &str) -> Value {
    json!({"error": {"code": valid(status), "message": message, "status": gemini_status(status)}})
}

/// `{"error":{"message","type","code"}}`.
pub fn openai_error(status: u16, message: &str) -> Value {
    let ty = error_type(status);
    json!({"error": {"message": message, "type": ty, "code": ty}})
}

/// The unary error body for `proto`.
pub fn error_body(proto: Protocol, status: u16, message: &str) -> Vec<u8> {
    let v = match proto {
        Protocol::OpenAi | Protocol::Responses => openai_error(status, message),
        Protocol::Anthropic => anthropic_error(status, message),
        Protocol::Gemini => gemini_error(status, message),
    };
    v.to_string().into_bytes()
}

/// Whether `v` is a well-formed error body of `proto`.
fn is_native_error(proto: Protocol, v: &Value) -> bool {
    let msg = |p: &str| v.pointer(p).is_some_and(Value::is_string);
    match proto {
        Protocol::OpenAi | Protocol::Responses => msg("/error/message"),
        Protocol::Anthropic => {
            v.get("type").and_then(Value::as_str) == Some("error") && msg("/error/message")
        }
        Protocol::Gemini => {
            msg("/error/message") && v.at(&["error", "code"]).is_some_and(Value::is_number)
        }
    }
}

/// The most useful message in an upstream error body.
fn upstream_message(status: u16, body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        // Gemini sometimes wraps errors in a one-element array.
        let v = match &v {
            Value::Array(items) => items.first().cloned().unwrap_or(Value::Null),
            _ => v,
        };
        let found = [
            "/error/message",
            "/message",
            "/error",
            "/detail",
            "/error_description",
        ]
        .iter()
        .find_map(|p| v.pointer(p).and_then(Value::as_str));
        if let Some(m) = found.filter(|m| !m.is_empty()) {
            return m.to_string();
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return format!("Upstream returned HTTP {}", valid(status));
    }
    match text.char_indices().nth(MAX_QUOTED) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// See [`super::relay_error`].
pub fn relay_error(client: Protocol, upstream: Protocol, status: u16, body: &[u8]) -> Vec<u8> {
    if client == upstream
        && let Ok(v) = serde_json::from_slice::<Value>(body)
        && is_native_error(client, &v)
    {
        return body.to_vec();
    }
    error_body(client, status, &upstream_message(status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: &[u8]) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn bodies_per_protocol() {
        assert_eq!(
            parse(&error_body(Protocol::OpenAi, 429, "slow")),
            json!({"error": {"message": "slow", "type": "rate_limit_error", "code": "rate_limit_error"}})
        );
        assert_eq!(
            parse(&error_body(Protocol::Anthropic, 529, "busy")),
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
        );
        assert_eq!(
            parse(&error_body(Protocol::Anthropic, 404, "x"))["error"]["type"],
            "not_found_error"
        );
        assert_eq!(
            parse(&error_body(Protocol::Anthropic, 413, "x"))["error"]["type"],
            "request_too_large"
        );
        assert_eq!(
            parse(&error_body(Protocol::Anthropic, 400, "x"))["error"]["type"],
            "invalid_request_error"
        );
        assert_eq!(
            parse(&error_body(Protocol::Gemini, 1000, "x")),
            json!({"error": {"code": 500, "message": "x", "status": "INTERNAL"}})
        );
        assert_eq!(
            parse(&error_body(Protocol::Gemini, 401, "x"))["error"]["status"],
            "UNAUTHENTICATED"
        );
        assert_eq!(
            parse(&error_body(Protocol::Gemini, 418, "x"))["error"]["status"],
            "UNKNOWN"
        );
    }

    #[test]
    fn relay_same_family_is_verbatim() {
        let body =
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert_eq!(
            relay_error(Protocol::Anthropic, Protocol::Anthropic, 529, body),
            body.to_vec()
        );
        let g = br#"[{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}]"#;
        assert_eq!(
            parse(&relay_error(Protocol::OpenAi, Protocol::Gemini, 429, g))["error"]["message"],
            "quota"
        );
    }

    #[test]
    fn relay_cross_family_rerenders() {
        let body = br#"{"error":{"message":"bad key","type":"invalid_request_error"}}"#;
        let out = parse(&relay_error(
            Protocol::Anthropic,
            Protocol::OpenAi,
            401,
            body,
        ));
        assert_eq!(
            out,
            json!({"type": "error", "error": {"type": "authentication_error", "message": "bad key"}})
        );
        let out = parse(&relay_error(
            Protocol::OpenAi,
            Protocol::OpenAi,
            502,
            b"<html>Bad gateway</html>",
        ));
        assert_eq!(out["error"]["message"], "<html>Bad gateway</html>");
        let out = parse(&relay_error(Protocol::Gemini, Protocol::OpenAi, 503, b""));
        assert_eq!(out["error"]["message"], "Upstream returned HTTP 503");
        let long = "é".repeat(2000);
        let out = parse(&relay_error(
            Protocol::OpenAi,
            Protocol::Anthropic,
            500,
            long.as_bytes(),
        ));
        assert_eq!(
            out["error"]["message"].as_str().map(|s| s.chars().count()),
            Some(MAX_QUOTED + 1)
        );
    }
}
