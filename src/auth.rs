//! Client authentication: which key a request presents, whether it
//! matches one of the configured keys in constant time, and whether that
//! key may use the admin endpoints.
//!
//! Everything here reads the request head only, so a request can be
//! judged before its body is read.

use std::borrow::Cow;

use crate::config::Secret;
use crate::server::Head;
use crate::server::request::percent_decode;

/// What the key a request presents entitles it to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// No valid key, and keys are required.
    Denied,
    /// A client key (or none needed): inference, model lists, statistics.
    Client,
    /// An admin key, or any client key when no admin key is configured:
    /// also the endpoints that change the gateway for everyone.
    Admin,
}

/// The key a request presents, from the first of: `Authorization: Bearer`
/// (scheme matched case-insensitively, RFC 9110 §11.1), `x-api-key`,
/// `x-goog-api-key`, `?key=` — the conventions of the OpenAI, Anthropic
/// and Gemini SDKs and of Gemini REST.
pub fn presented_key(head: &Head) -> Option<Cow<'_, str>> {
    if let Some(value) = head.header("authorization")
        && let Some((scheme, token)) = value.trim_start().split_once([' ', '\t'])
        && scheme.eq_ignore_ascii_case("bearer")
    {
        return Some(Cow::Borrowed(token.trim()));
    }
    for name in ["x-api-key", "x-goog-api-key"] {
        if let Some(value) = head.header(name) {
            return Some(Cow::Borrowed(value.trim()));
        }
    }
    head.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == "key").then(|| percent_decode(v))
    })
}

/// The key a WebSocket upgrade presents: `?token=` (a browser cannot set
/// header fields on a WebSocket), else any of the ways of [`presented_key`].
pub fn presented_token(head: &Head) -> Option<Cow<'_, str>> {
    head.query()
        .and_then(|query| {
            query.split('&').find_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (k == "token").then(|| percent_decode(v))
            })
        })
        .or_else(|| presented_key(head))
}

/// Whether `head` may pass: no keys configured, or a matching key presented.
pub fn authorized(head: &Head, keys: &[Secret]) -> bool {
    keys.is_empty() || presented_key(head).is_some_and(|p| matches_any(&p, keys))
}

/// What `head` may do, given the client keys (`--api-key`) and the admin
/// keys (`--admin-api-key`). An admin key is also a client key. Without
/// admin keys every client is an admin, as before admin keys existed;
/// without client keys (a loopback listener) every request is a client.
pub fn access(head: &Head, client_keys: &[Secret], admin_keys: &[Secret]) -> Access {
    access_of(presented_key(head).as_deref(), client_keys, admin_keys)
}

/// What a client presenting `presented` may do (see [`access`]).
pub fn access_of(presented: Option<&str>, client_keys: &[Secret], admin_keys: &[Secret]) -> Access {
    let matches = |keys: &[Secret]| presented.is_some_and(|p| matches_any(p, keys));
    // Both lists are always compared, so timing does not tell which
    // kind of key was presented.
    let admin = matches(admin_keys);
    let client = client_keys.is_empty() | matches(client_keys);
    if admin || (client && admin_keys.is_empty()) {
        Access::Admin
    } else if client {
        Access::Client
    } else {
        Access::Denied
    }
}

/// Whether `presented` equals one of `keys`. Every key is compared, so
/// timing reveals neither which key matched nor how much of it.
fn matches_any(presented: &str, keys: &[Secret]) -> bool {
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
    use crate::server::request::{ParseStatus, parse_head};

    fn head(lines: &str) -> Head {
        let raw = format!("GET /v1/models{lines}\r\n\r\n");
        match parse_head(raw.as_bytes(), 100, 8192) {
            Ok(ParseStatus::Complete(head, _)) => head,
            other => panic!("{other:?}"),
        }
    }

    fn keys(list: &[&str]) -> Vec<Secret> {
        list.iter().map(|k| Secret::new(*k)).collect()
    }

    #[test]
    fn constant_time_eq_matches_equality() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            let h = head(&format!(
                " HTTP/1.1\r\nHost: t\r\nAuthorization: {scheme} k1"
            ));
            assert_eq!(presented_key(&h).as_deref(), Some("k1"), "{scheme}");
            assert!(authorized(&h, &keys(&["k1"])), "{scheme}");
        }
        let basic = head(" HTTP/1.1\r\nHost: t\r\nAuthorization: Basic k1");
        assert_eq!(presented_key(&basic), None);
        let glued = head(" HTTP/1.1\r\nHost: t\r\nAuthorization: Bearerk1");
        assert_eq!(presented_key(&glued), None);
    }

    #[test]
    fn key_comes_from_headers_or_the_query() {
        let h = head("?alt=sse&key=a%2Bb HTTP/1.1\r\nHost: t");
        assert_eq!(presented_key(&h).as_deref(), Some("a+b"));
        let h = head(" HTTP/1.1\r\nHost: t\r\nx-goog-api-key:  g ");
        assert_eq!(presented_key(&h).as_deref(), Some("g"));
        assert_eq!(presented_key(&head(" HTTP/1.1\r\nHost: t")), None);
    }

    #[test]
    fn admin_keys_split_access() {
        let client = head(" HTTP/1.1\r\nHost: t\r\nx-api-key: c");
        let admin = head(" HTTP/1.1\r\nHost: t\r\nx-api-key: a");
        let none = head(" HTTP/1.1\r\nHost: t");
        let (c, a) = (keys(&["c"]), keys(&["a"]));
        assert_eq!(access(&client, &c, &[]), Access::Admin);
        assert_eq!(access(&none, &c, &[]), Access::Denied);
        assert_eq!(access(&client, &c, &a), Access::Client);
        assert_eq!(access(&admin, &c, &a), Access::Admin);
        assert_eq!(access(&none, &c, &a), Access::Denied);
        // No client keys (loopback): everyone is a client, admins need a key.
        assert_eq!(access(&none, &[], &a), Access::Client);
        assert_eq!(access(&admin, &[], &a), Access::Admin);
        assert_eq!(access(&none, &[], &[]), Access::Admin);
    }

    #[test]
    fn a_websocket_token_comes_first_from_the_query() {
        let h = head("?token=t%2B1 HTTP/1.1\r\nHost: t\r\nx-api-key: k");
        assert_eq!(presented_token(&h).as_deref(), Some("t+1"));
        let h = head("?other=1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer b");
        assert_eq!(presented_token(&h).as_deref(), Some("b"));
        let h = head("?tokens=x&key=k HTTP/1.1\r\nHost: t");
        assert_eq!(presented_token(&h).as_deref(), Some("k"));
        assert_eq!(presented_key(&head("?token=t HTTP/1.1\r\nHost: t")), None);
    }
}
