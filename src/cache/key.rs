//! Cache keys: the canonical form of a request and its SHA-256.
//!
//! Two requests that differ only in JSON key order, whitespace or fields
//! that cannot change the answer must share a key; anything else must not.
//! So the body is parsed, the ignored top-level fields are dropped and the
//! rest is written back with object keys sorted at every depth (our own
//! writer, so a crate-wide `serde_json/preserve_order` cannot change the
//! bytes). Provider, model and client protocol go in front, as a JSON
//! array, which keeps the parts unambiguous whatever a model name holds.
//!
//! The key keeps both the digest (shard choice, Redis key) and the
//! canonical bytes: equality compares the bytes, so even a forged or
//! accidental digest collision can never turn into a hit for a different
//! request. The bytes live in an `Arc`, so cloning a key (the in-flight
//! map, the LRU) never copies a prompt.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde_json::Value;

use crate::hex::hex;
use crate::protocol::Protocol;
use crate::providers::ProviderKind;

/// Top-level request fields left out of the key, because they do not
/// change the answer: transport (`stream`, `stream_options`), caller
/// bookkeeping (`user`, `metadata`) and request ids. Everything else is
/// kept, including `n`, `seed` and every sampling parameter: `n` changes
/// the number of choices, so it is part of the answer.
pub const IGNORED_FIELDS: &[&str] = &[
    "stream",
    "stream_options",
    "user",
    "metadata",
    "request_id",
    "requestId",
    "x-request-id",
];

/// Format version of the canonical bytes; bump it when they change so old
/// Redis entries stop matching instead of being misread.
const CANONICAL_VERSION: &str = "aiproxy-cache-key/1";

/// The cache partition of the client key a request presented (`None`: no
/// key), for [`Key::scoped`]: a domain-separated SHA-256 in hex, so
/// neither memory nor Redis ever holds a client key.
pub fn scope_of(client_key: Option<&str>) -> String {
    let Some(client_key) = client_key else {
        return "anonymous".to_owned();
    };
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"aiproxy-cache-scope/1\0");
    ctx.update(client_key.as_bytes());
    hex(ctx.finish().as_ref())
}

/// The identity of a cacheable request.
#[derive(Clone)]
pub struct Key {
    hash: [u8; 32],
    canonical: Arc<[u8]>,
}

impl Key {
    /// Builds the key of a request for `model` on `provider`, answered in
    /// the `client` protocol (the cached body is the client-facing one, so
    /// an OpenAI and an Anthropic client never share entries).
    ///
    /// Returns `None` when the body is not a JSON object, or when it asks
    /// for a stream (`"stream": true`): streams are never cached. Gemini
    /// streams are chosen by URL, not body, so the caller must bypass
    /// `:streamGenerateContent` itself.
    ///
    /// Numbers are compared as written after parsing: `1` and `1.0` are
    /// different keys (a miss, never a wrong hit).
    pub fn new(provider: ProviderKind, model: &str, client: Protocol, body: &[u8]) -> Option<Key> {
        Self::build(provider, model, client, None, body)
    }

    /// [`Key::new`] within a partition of the cache (`cache.scope:
    /// per_key`): keys of different scopes never match. `scope` comes from
    /// [`scope_of`].
    pub fn scoped(
        provider: ProviderKind,
        model: &str,
        client: Protocol,
        scope: &str,
        body: &[u8],
    ) -> Option<Key> {
        Self::build(provider, model, client, Some(scope), body)
    }

    fn build(
        provider: ProviderKind,
        model: &str,
        client: Protocol,
        scope: Option<&str>,
        body: &[u8],
    ) -> Option<Key> {
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
            return None;
        };
        if map.get("stream").and_then(Value::as_bool) == Some(true) {
            return None;
        }
        let mut out = Vec::with_capacity(body.len() + 64);
        out.push(b'[');
        // A scoped key has one string more before the body object, so it
        // can never equal a shared one.
        let parts = [CANONICAL_VERSION, provider.name(), model, client.name()];
        for part in parts.into_iter().chain(scope) {
            write_string(&mut out, part);
            out.push(b',');
        }
        out.push(b'{');
        let mut fields: Vec<(&String, &Value)> = map
            .iter()
            .filter(|(k, _)| !IGNORED_FIELDS.contains(&k.as_str()))
            .collect();
        fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
        write_fields(&mut out, &fields);
        out.extend_from_slice(b"}]");
        Some(Key::from_canonical(out))
    }

    /// A key over already canonical bytes.
    fn from_canonical(canonical: Vec<u8>) -> Key {
        let digest = ring::digest::digest(&ring::digest::SHA256, &canonical);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(digest.as_ref());
        Key {
            hash,
            canonical: canonical.into(),
        }
    }

    /// A key with a chosen digest, to prove that a digest collision is not
    /// a hit.
    #[cfg(test)]
    pub(crate) fn forged(hash: [u8; 32], canonical: &[u8]) -> Key {
        Key {
            hash,
            canonical: canonical.into(),
        }
    }

    /// SHA-256 of [`Key::canonical`].
    pub fn hash(&self) -> &[u8; 32] {
        &self.hash
    }

    /// The digest as 64 lower-case hex digits (the Redis key suffix).
    pub fn hex(&self) -> String {
        hex(&self.hash)
    }

    /// The canonical request bytes the digest was computed from.
    pub fn canonical(&self) -> &[u8] {
        &self.canonical
    }
}

impl PartialEq for Key {
    /// Digest and canonical bytes must both match.
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash
            && (Arc::ptr_eq(&self.canonical, &other.canonical) || self.canonical == other.canonical)
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Equal keys have equal digests, and the digest is already uniform.
        self.hash.hash(state);
    }
}

impl fmt::Debug for Key {
    /// The digest only: canonical bytes hold the prompt.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.hex())
    }
}

fn write_fields(out: &mut Vec<u8>, fields: &[(&String, &Value)]) {
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(out, k);
        out.push(b':');
        write_value(out, v);
    }
}

/// Writes `value` with object keys sorted, recursively. Depth is bounded by
/// serde_json's parse limit (128), so the recursion is too.
fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Object(map) => {
            let mut fields: Vec<(&String, &Value)> = map.iter().collect();
            fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            write_fields(out, &fields);
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        // Scalars: serde_json's own printing (escapes, shortest floats).
        scalar => {
            // Writing to a Vec cannot fail, and scalars always serialise.
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(model: &str, body: &str) -> Key {
        Key::new(
            ProviderKind::OpenAiCustom,
            model,
            Protocol::OpenAi,
            body.as_bytes(),
        )
        .expect("cacheable body")
    }

    const BASE: &str =
        r#"{"model":"gpt-4o","temperature":0.2,"messages":[{"role":"user","content":"hi"}]}"#;

    #[test]
    fn reordered_keys_and_whitespace_give_the_same_key() {
        let reordered = r#"{ "messages": [ {"content":"hi", "role":"user"} ],
            "temperature": 0.2, "model": "gpt-4o" }"#;
        assert_eq!(key("gpt-4o", BASE), key("gpt-4o", reordered));
        assert_eq!(key("gpt-4o", BASE).hash(), key("gpt-4o", reordered).hash());
    }

    #[test]
    fn ignored_fields_do_not_change_the_key() {
        let noisy = r#"{"model":"gpt-4o","temperature":0.2,"stream":false,
            "stream_options":{"include_usage":true},"user":"u-1","metadata":{"a":"b"},
            "request_id":"r1","x-request-id":"r2",
            "messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(key("gpt-4o", BASE), key("gpt-4o", noisy));
    }

    #[test]
    fn answer_changing_differences_give_different_keys() {
        let base = key("gpt-4o", BASE);
        assert_ne!(base, key("gpt-4o-mini", BASE), "model argument");
        let other_temp = BASE.replace("0.2", "0.3");
        assert_ne!(base, key("gpt-4o", &other_temp), "temperature");
        let other_msg = BASE.replace("\"hi\"", "\"hello\"");
        assert_ne!(base, key("gpt-4o", &other_msg), "messages");
        let with_n = BASE.replace('{', "{\"n\":2,");
        assert_ne!(base, key("gpt-4o", &with_n), "n");
        let other_provider = Key::new(
            ProviderKind::Mock,
            "gpt-4o",
            Protocol::OpenAi,
            BASE.as_bytes(),
        )
        .unwrap();
        assert_ne!(base, other_provider, "provider");
        let other_client = Key::new(
            ProviderKind::OpenAiCustom,
            "gpt-4o",
            Protocol::Anthropic,
            BASE.as_bytes(),
        )
        .unwrap();
        assert_ne!(base, other_client, "client protocol");
        // Ignored names count only at the top level.
        let nested = BASE.replace("\"hi\"", "\"hi\",\"user\":\"x\"");
        assert_ne!(base, key("gpt-4o", &nested), "nested user field");
    }

    #[test]
    fn non_objects_and_streams_have_no_key() {
        for body in ["", "[]", "null", "\"x\"", "{", r#"{"stream":true}"#] {
            assert!(
                Key::new(ProviderKind::Mock, "m", Protocol::OpenAi, body.as_bytes()).is_none(),
                "{body}"
            );
        }
    }

    #[test]
    fn canonical_form_is_sorted_and_hash_is_its_sha256() {
        let k = key("m", r#"{"b":{"y":1,"x":[{"d":1,"c":2}]},"a":"\u00e9\n"}"#);
        let text = std::str::from_utf8(k.canonical()).unwrap();
        assert_eq!(
            text,
            "[\"aiproxy-cache-key/1\",\"openai-custom\",\"m\",\"openai\",\
             {\"a\":\"é\\n\",\"b\":{\"x\":[{\"c\":2,\"d\":1}],\"y\":1}}]"
        );
        let digest = ring::digest::digest(&ring::digest::SHA256, k.canonical());
        assert_eq!(k.hash().as_slice(), digest.as_ref());
        assert_eq!(k.hex().len(), 64);
    }

    #[test]
    fn scoped_keys_never_match_another_scope_or_the_shared_key() {
        let scoped = |scope: &str| {
            Key::scoped(
                ProviderKind::Mock,
                "m",
                Protocol::OpenAi,
                scope,
                BASE.as_bytes(),
            )
            .unwrap()
        };
        let (a, b) = (scope_of(Some("key-a")), scope_of(Some("key-b")));
        assert_eq!(a, scope_of(Some("key-a")), "stable across calls and nodes");
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(!a.contains("key-a"));
        assert_eq!(scoped(&a), scoped(&a));
        assert_ne!(scoped(&a), scoped(&b));
        assert_ne!(scoped(&scope_of(None)), scoped(&a));
        let shared = Key::new(ProviderKind::Mock, "m", Protocol::OpenAi, BASE.as_bytes()).unwrap();
        assert_ne!(scoped(&a), shared);
    }

    #[test]
    fn a_digest_collision_is_not_equality() {
        let a = key("m", BASE);
        let forged = Key::forged(*a.hash(), b"another request");
        assert_ne!(a, forged);
        assert_eq!(a, Key::forged(*a.hash(), a.canonical()));
    }
}
