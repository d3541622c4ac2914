//! `convert_openai`, `convert_anthropic`, `convert_gemini`,
//! `convert_responses`: a client request body (or an upstream answer) of
//! one protocol, converted into every protocol.

use serde_json::Value;

use crate::protocol::responses::ToolMap;
use crate::protocol::{
    Protocol, SliceError, convert_request, convert_request_slice, convert_response,
    convert_response_for, convert_response_slice, count_tokens, inspect, relay_error, usage,
};

const ALL: [Protocol; 4] = [
    Protocol::OpenAi,
    Protocol::Anthropic,
    Protocol::Gemini,
    Protocol::Responses,
];
const MODEL: &str = "fuzz-model";

pub fn convert_openai(data: &[u8]) {
    super::on_worker_stack(|| body(Protocol::OpenAi, data));
}

pub fn convert_anthropic(data: &[u8]) {
    super::on_worker_stack(|| body(Protocol::Anthropic, data));
}

pub fn convert_gemini(data: &[u8]) {
    super::on_worker_stack(|| body(Protocol::Gemini, data));
}

pub fn convert_responses(data: &[u8]) {
    super::on_worker_stack(|| {
        body(Protocol::Responses, data);
        if let Ok(v) = serde_json::from_slice::<Value>(data) {
            // What the gateway logs at debug level; the answer side's tool map.
            let _ = crate::protocol::responses::dropped(&v);
            let tools = crate::protocol::responses::ToolMap::from_request(&v);
            for from in ALL {
                let _ = convert_response_for(from, Protocol::Responses, &v, MODEL, &tools);
            }
        }
    });
}

/// The bytes as a request and as an answer of protocol `from`, as the
/// gateway handles them.
fn body(from: Protocol, data: &[u8]) {
    let info = inspect(from, data);
    let value = serde_json::from_slice::<Value>(data);
    if let Ok(info) = &info {
        // `inspect` skips the values it does not need without decoding
        // them, so a lone surrogate escape (`"\udc00"`) or a number out of
        // f64 range (`1e999`) passes it; the gateway then answers 400 when
        // it builds the tree. Any other difference is a bug.
        if let Err(e) = &value {
            let e = e.to_string();
            assert!(
                e.contains("unicode code point") || e.contains("number out of range"),
                "inspect accepted invalid JSON: {e}"
            );
            return;
        }
        let value = value.as_ref().expect("checked above");
        assert!(value.is_object(), "inspect accepted a non-object");
        if from != Protocol::Gemini {
            assert_eq!(
                info.model.as_deref(),
                value.get("model").and_then(Value::as_str)
            );
        }
    }
    for to in ALL {
        // Upstream error bodies are relayed from raw bytes.
        let status = 400 + (data.len() % 200) as u16;
        let relayed = relay_error(to, from, status, data);
        let relayed: Value = serde_json::from_slice(&relayed).expect("relayed error is JSON");
        assert!(relayed.is_object(), "relayed error is an object");
    }
    let Ok(value) = value else { return };
    if from == Protocol::Anthropic {
        let _ = count_tokens(&value);
    }
    if let Ok(info) = info {
        for to in ALL {
            for stream in [info.stream, !info.stream] {
                request(from, to, &value, stream);
                if to != from {
                    request_from_bytes(from, to, data, &value, stream);
                }
            }
        }
    }
    for to in ALL {
        response(from, to, &value);
        response_from_bytes(from, to, data, &value);
    }
}

fn request(from: Protocol, to: Protocol, body: &Value, stream: bool) {
    let Ok(out) = convert_request(from, to, body, MODEL, stream) else {
        return;
    };
    let ctx = format!("{} -> {} request", from.name(), to.name());
    let bytes = serde_json::to_vec(&out).expect("serialisable");
    let info = inspect(to, &bytes).unwrap_or_else(|e| panic!("{ctx}: {}", e.message));
    if to != Protocol::Gemini {
        assert_eq!(info.model.as_deref(), Some(MODEL), "{ctx}: model");
        assert_eq!(info.stream, stream, "{ctx}: stream flag");
    }
    if from == to {
        // Same-family requests pass through unvalidated, by design.
        return;
    }
    // The converted request is one the target protocol's parser takes.
    let reparsed: Value = serde_json::from_slice(&bytes).expect("re-parses as JSON");
    for back in ALL {
        if let Err(e) = convert_request(to, back, &reparsed, MODEL, stream) {
            panic!("{ctx} does not re-parse as {}: {}", back.name(), e.message);
        }
    }
}

/// The conversion the gateway makes from the bytes gives what the `Value`
/// path gives (ids it makes up aside), errors included.
fn request_from_bytes(from: Protocol, to: Protocol, data: &[u8], value: &Value, stream: bool) {
    let ctx = format!("{} -> {} request from bytes", from.name(), to.name());
    let got = convert_request_slice(from, to, data, MODEL, stream);
    match convert_request(from, to, value, MODEL, stream) {
        Err(e) => assert_eq!(got, Err(e), "{ctx}"),
        Ok(mut expected) => {
            let mut got: Value = serde_json::from_slice(&got.expect(&ctx)).expect(&ctx);
            crate::protocol::normalise_ids(&mut expected);
            crate::protocol::normalise_ids(&mut got);
            assert_eq!(got, expected, "{ctx}");
        }
    }
}

/// The answer the gateway converts from the bytes (with its hand-written
/// JSON, for an OpenAI answer to an Anthropic client) is what the `Value`
/// path gives, ids it makes up aside, errors included.
fn response_from_bytes(from: Protocol, to: Protocol, data: &[u8], value: &Value) {
    let ctx = format!("{} -> {} response from bytes", from.name(), to.name());
    let tools = ToolMap::default();
    let got = convert_response_slice(from, to, data, MODEL, &tools);
    match convert_response_for(from, to, value, MODEL, &tools) {
        Err(e) => assert_eq!(got, Err(SliceError::Convert(e)), "{ctx}"),
        Ok(expected) => {
            // Both through the same write and read: serde_json reads a
            // float it wrote back a unit in the last place off at times.
            let reread = |bytes: &[u8]| -> Value {
                let mut v = serde_json::from_slice(bytes).expect(&ctx);
                crate::protocol::normalise_ids(&mut v);
                v
            };
            let expected = reread(&serde_json::to_vec(&expected).expect(&ctx));
            assert_eq!(reread(&got.expect(&ctx)), expected, "{ctx}");
        }
    }
}

fn response(from: Protocol, to: Protocol, body: &Value) {
    let Ok(out) = convert_response(from, to, body, MODEL) else {
        return;
    };
    let ctx = format!("{} -> {} response", from.name(), to.name());
    let _ = usage(to, &out);
    if from == to {
        return;
    }
    let bytes = serde_json::to_vec(&out).expect("serialisable");
    let reparsed: Value = serde_json::from_slice(&bytes).expect("re-parses as JSON");
    for back in ALL {
        if let Err(e) = convert_response(to, back, &reparsed, MODEL) {
            panic!("{ctx} does not re-parse as {}: {}", back.name(), e.message);
        }
    }
}
