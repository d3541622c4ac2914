//! Tool parameter schema cleaning per target.
//!
//! Clients send JSON Schema written for their own vendor; each target
//! rejects different things. Cleaning is kept minimal on purpose: removing keywords changes what the model is
//! told, so only what is known to be rejected goes.

use serde_json::{Map, Value};

/// For OpenAI and Anthropic: drops `$schema` and lower-cases `type`
/// names (Gemini schemas use `OBJECT`, `STRING`, …).
pub fn for_json_schema(schema: &Value) -> Value {
    let mut out = schema.clone();
    walk(&mut out, &|key, obj| {
        obj.remove("$schema");
        if key != Some("properties")
            && let Some(Value::String(t)) = obj.get_mut("type")
        {
            *t = t.to_ascii_lowercase();
        }
    });
    if !out.is_object() {
        return serde_json::json!({"type": "object", "properties": {}});
    }
    out
}

/// Alias kept for readability at OpenAI call sites.
pub fn for_openai(schema: &Value) -> Value {
    for_json_schema(schema)
}

/// For Gemini `parametersJsonSchema`: drops `$schema` and the
/// `format: "uri"` that Gemini rejects on strings.
pub fn for_gemini(schema: &Value) -> Value {
    let mut out = schema.clone();
    walk(&mut out, &|key, obj| {
        obj.remove("$schema");
        if key != Some("properties") && obj.get("format").and_then(Value::as_str) == Some("uri") {
            obj.remove("format");
        }
    });
    out
}

/// Applies `f` to every schema object; `key` is the keyword the object
/// sits under, so a property *named* `type` is not mistaken for a keyword.
/// A cleaning step: (keyword the object sits under, the schema object).
type Step = dyn Fn(Option<&str>, &mut Map<String, Value>);

fn walk(v: &mut Value, f: &Step) {
    fn go(v: &mut Value, key: Option<&str>, f: &Step) {
        match v {
            Value::Object(obj) => {
                f(key, obj);
                for (k, child) in obj.iter_mut() {
                    go(child, Some(k), f);
                }
            }
            Value::Array(items) => {
                for child in items {
                    go(child, key, f);
                }
            }
            _ => {}
        }
    }
    go(v, None, f);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_schema_cleaning() {
        let s =
            json!({"$schema": "x", "type": "OBJECT", "properties": {"type": {"type": "STRING"}}});
        assert_eq!(
            for_json_schema(&s),
            json!({"type": "object", "properties": {"type": {"type": "string"}}})
        );
        assert_eq!(
            for_json_schema(&json!(null)),
            json!({"type": "object", "properties": {}})
        );
    }

    #[test]
    fn gemini_cleaning_drops_uri_format() {
        let s = json!({"$schema": "x", "type": "object", "properties": {
            "u": {"type": "string", "format": "uri"},
            "d": {"type": "string", "format": "date-time"},
            "l": {"type": "array", "items": {"type": "string", "format": "uri"}}}});
        assert_eq!(
            for_gemini(&s),
            json!({"type": "object", "properties": {
                "u": {"type": "string"},
                "d": {"type": "string", "format": "date-time"},
                "l": {"type": "array", "items": {"type": "string"}}}})
        );
    }
}
