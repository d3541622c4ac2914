//! First look at a client body: is it a JSON object, which model, stream?
//!
//! This runs before routing on every request, possibly on multi-megabyte
//! bodies full of base64 images, so it deserialises into a two-field
//! struct and lets serde skip everything else (`IgnoredAny`) instead of
//! building a `Value` tree that routing would throw away.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{ConvertError, Protocol, RequestInfo};

/// A field's value, reduced to what validation needs.
enum Field {
    Str(String),
    Bool(bool),
    Null,
    Other(&'static str),
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Field, E> {
                Ok(Field::Str(s.to_string()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Field, E> {
                Ok(Field::Str(s))
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Field, E> {
                Ok(Field::Bool(b))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Field, E> {
                Ok(Field::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Field, E> {
                Ok(Field::Null)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Field, E> {
                Ok(Field::Other("a number"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Field, E> {
                Ok(Field::Other("a number"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Field, E> {
                Ok(Field::Other("a number"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Field, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Field::Other("an array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Field, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Field::Other("an object"))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct Probe {
    model: Option<Field>,
    stream: Option<Field>,
    /// Small when present; absent in most requests.
    stream_options: Option<serde_json::Value>,
}

fn bad(msg: String) -> ConvertError {
    ConvertError { message: msg }
}

/// See [`super::inspect`].
pub fn inspect(proto: Protocol, body: &[u8]) -> Result<RequestInfo, ConvertError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some() && first != Some(&b'{') {
        // Parse anyway so invalid JSON is reported as such.
        if let Err(e) = serde_json::from_slice::<IgnoredAny>(body) {
            return Err(bad(format!("Invalid JSON in request body: {e}")));
        }
        return Err(bad("Request body must be a JSON object".into()));
    }
    let probe: Probe = super::json::from_bytes(body)
        .map_err(|e| bad(format!("Invalid JSON in request body: {e}")))?;
    if proto == Protocol::Gemini {
        return Ok(RequestInfo {
            model: None,
            stream: false,
            include_usage: false,
        });
    }
    let model = match probe.model {
        None | Some(Field::Null) => None,
        Some(Field::Str(s)) => Some(s),
        Some(Field::Bool(_)) => return Err(bad("`model` must be a string, got a boolean".into())),
        Some(Field::Other(k)) => return Err(bad(format!("`model` must be a string, got {k}"))),
    };
    let stream = match probe.stream {
        None | Some(Field::Null) => false,
        Some(Field::Bool(b)) => b,
        Some(Field::Str(_)) => return Err(bad("`stream` must be a boolean, got a string".into())),
        Some(Field::Other(k)) => return Err(bad(format!("`stream` must be a boolean, got {k}"))),
    };
    let include_usage = probe
        .stream_options
        .as_ref()
        .and_then(|o| o.get("include_usage"))
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    Ok(RequestInfo {
        model,
        stream,
        include_usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_include_usage() {
        let body = br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#;
        assert!(inspect(Protocol::OpenAi, body).unwrap().include_usage);
        let body = br#"{"model":"m","stream_options":"junk"}"#;
        assert!(!inspect(Protocol::OpenAi, body).unwrap().include_usage);
    }

    #[test]
    fn extracts_model_and_stream() {
        let info = inspect(
            Protocol::OpenAi,
            br#"{"messages":[{"a":[1,2,{}]}],"model":"gpt","stream":true}"#,
        )
        .unwrap();
        assert_eq!(
            info,
            RequestInfo {
                model: Some("gpt".into()),
                stream: true,
                include_usage: false,
            }
        );
        let info = inspect(Protocol::Anthropic, b" {\"model\":null} ").unwrap();
        assert_eq!(
            info,
            RequestInfo {
                model: None,
                stream: false,
                include_usage: false,
            }
        );
        let info = inspect(Protocol::Gemini, br#"{"model":"x","stream":true}"#).unwrap();
        assert_eq!(
            info,
            RequestInfo {
                model: None,
                stream: false,
                include_usage: false,
            }
        );
    }

    #[test]
    fn rejects_bad_bodies() {
        let msg = |b: &[u8]| inspect(Protocol::OpenAi, b).unwrap_err().message;
        assert!(msg(b"").starts_with("Invalid JSON in request body"));
        assert!(msg(b"{\"model\":").starts_with("Invalid JSON in request body"));
        assert!(msg(b"[1]").contains("must be a JSON object"));
        assert!(msg(b"[1").starts_with("Invalid JSON"));
        assert!(msg(b"{\"model\":3}").contains("`model` must be a string"));
        assert!(msg(b"{\"stream\":\"yes\"}").contains("`stream` must be a boolean"));
        assert!(msg(b"{\"stream\":true} x").starts_with("Invalid JSON"));
        assert!(msg(b"\xff").starts_with("Invalid JSON"));
    }
}
