//! Client authentication: which key a request presents, and whether it
//! matches one of the configured keys in constant time.

use crate::config::Secret;
use crate::server::{Head, Request};

/// The key a request presents, from the first of: `Authorization: Bearer`
/// (scheme in any case, RFC 9110 §11.1), `x-api-key`, `x-goog-api-key`,
/// `?key=` — the conventions of the OpenAI, Anthropic and Gemini SDKs and
/// of Gemini REST.
pub fn presented_key(head: &Head) -> Option<String> {
    if let Some(value) = head.header("authorization")
        && let Some((scheme, token)) = value.trim_start().split_once(' ')
        && scheme.eq_ignore_ascii_case("bearer")
    {
        return Some(token.trim().to_owned());
    }
    for name in ["x-api-key", "x-goog-api-key"] {
        if let Some(value) = head.header(name) {
            return Some(value.trim().to_owned());
        }
    }
    head.query_param("key").map(|k| k.into_owned())
}

/// Whether `req` may pass: no keys configured, or a matching key presented.
pub fn authorized(req: &Request, keys: &[Secret]) -> bool {
    authorized_head(&req.head, keys)
}

/// Whether a request with this head may pass (see [`authorized`]).
pub fn authorized_head(head: &Head, keys: &[Secret]) -> bool {
    if keys.is_empty() {
        return true;
    }
    let Some(presented) = presented_key(head) else {
        return false;
    };
    // Every configured key is compared, so timing reveals neither which
    // key matched nor how much of it.
    keys.iter().fold(false, |ok, key| {
        ok | constant_time_eq(presented.as_bytes(), key.expose().as_bytes())
    })
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_matches_equality() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
