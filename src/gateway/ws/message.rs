//! The JSON messages of the WebSocket API (README, "WebSocket API"): what
//! a client may send, read into [`Inbound`], and the frames the server
//! sends back. Pure: no I/O, no state.
//!
//! A request's body is kept as raw JSON text: the poller reads only the
//! envelope, and a worker parses the body when it runs the call.

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::protocol::Protocol;

/// Longest request id accepted, in bytes of its JSON text.
pub const MAX_ID_BYTES: usize = 256;

/// Message types, by name; both directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Client: run one call.
    Request,
    /// Client: run several calls.
    Batch,
    /// Client: stop a call (an extension of the feature guide's API).
    Cancel,
    /// Both ways: keep-alive.
    Heartbeat,
    /// Client: a message that could not be read.
    Invalid,
    /// Server: a whole answer.
    Response,
    /// Server: one event of a streamed answer.
    Stream,
    /// Server: a streamed answer ended.
    StreamEnd,
    /// Server: a call or a message failed.
    Error,
}

impl Kind {
    const ALL: [Kind; 9] = [
        Kind::Request,
        Kind::Batch,
        Kind::Cancel,
        Kind::Heartbeat,
        Kind::Invalid,
        Kind::Response,
        Kind::Stream,
        Kind::StreamEnd,
        Kind::Error,
    ];

    /// The `type` value (`invalid` is only a metrics label).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Request => "request",
            Kind::Batch => "batch",
            Kind::Cancel => "cancel",
            Kind::Heartbeat => "heartbeat",
            Kind::Invalid => "invalid",
            Kind::Response => "response",
            Kind::Stream => "stream",
            Kind::StreamEnd => "stream_end",
            Kind::Error => "error",
        }
    }

    /// A one-byte code, for passing a kind between threads.
    pub fn code(self) -> u8 {
        Kind::ALL.iter().position(|k| *k == self).unwrap_or(0) as u8
    }

    /// The kind of [`Kind::code`].
    pub fn from_code(code: u8) -> Option<Kind> {
        Kind::ALL.get(usize::from(code)).copied()
    }
}

/// A request id as the client wrote it, a string or a number, kept as
/// its JSON text so that it goes back exactly as it came.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Id(String);

impl Id {
    /// The id of a JSON value: a non-empty string or a number, at most
    /// [`MAX_ID_BYTES`] long.
    pub fn from_value(value: &Value) -> Option<Id> {
        let json = match value {
            Value::String(s) if !s.is_empty() => serde_json::to_string(s).ok()?,
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        (json.len() <= MAX_ID_BYTES).then_some(Id(json))
    }

    /// Its JSON text.
    pub fn json(&self) -> &str {
        &self.0
    }

    /// The id as text, for logs and messages (a string without quotes).
    pub fn text(&self) -> String {
        serde_json::from_str::<String>(&self.0).unwrap_or_else(|_| self.0.clone())
    }
}

/// One call a client asked for.
#[derive(Debug)]
pub struct RequestMsg {
    /// Its id, unique among the connection's calls in flight.
    pub id: Id,
    /// `provider`: a provider name, checked against the enabled ones.
    pub provider: Option<String>,
    /// `model`: set into the body (the path model of a Gemini call).
    pub model: Option<String>,
    /// `request`: the body, a JSON object in [`RequestMsg::protocol`].
    pub request: Box<RawValue>,
    /// `metadata.stream`, when given.
    pub stream: Option<bool>,
    /// `metadata.protocol`: the client protocol (OpenAI by default).
    pub protocol: Protocol,
}

/// What a client message asks for.
#[derive(Debug)]
pub enum Inbound {
    /// Run a call.
    Request(RequestMsg),
    /// Run these calls; a member that cannot be read is its refusal.
    Batch(Vec<Result<RequestMsg, Refusal>>),
    /// Stop the call with this id.
    Cancel(Id),
    /// Answer with a heartbeat.
    Heartbeat,
}

/// A client message (or batch member) refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The id, when it could be read.
    pub id: Option<Id>,
    /// The error frame's `code`.
    pub code: &'static str,
    /// The error frame's `message`.
    pub message: String,
}

impl Refusal {
    fn new(id: Option<Id>, code: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            id,
            code,
            message: message.into(),
        }
    }
}

/// The fields of a message envelope, unread.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    provider: Option<&'a RawValue>,
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    request: Option<&'a RawValue>,
    #[serde(borrow, default)]
    metadata: Option<&'a RawValue>,
    #[serde(borrow, default)]
    requests: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
struct Metadata {
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    protocol: Option<String>,
}

/// Reads one client text message.
pub fn decode(text: &str) -> Result<Inbound, Refusal> {
    let envelope = read_envelope(text)?;
    let id = id_of(&envelope)?;
    let Some(kind) = envelope.kind else {
        return Err(Refusal::new(
            id,
            "invalid_message",
            "the message has no `type` (request, batch, cancel or heartbeat)",
        ));
    };
    let kind: String = serde_json::from_str(kind.get())
        .map_err(|_| Refusal::new(id.clone(), "invalid_message", "`type` must be a string"))?;
    match kind.as_str() {
        "request" => request_of(&envelope, id).map(Inbound::Request),
        "batch" => batch_of(&envelope, id),
        "cancel" => match id {
            Some(id) => Ok(Inbound::Cancel(id)),
            None => Err(Refusal::new(
                None,
                "missing_id",
                "a cancel names the `id` of the request to stop",
            )),
        },
        "heartbeat" => Ok(Inbound::Heartbeat),
        other => Err(Refusal::new(
            id,
            "unknown_type",
            format!(
                "unknown message type {}: use request, batch, cancel or heartbeat",
                quote(other)
            ),
        )),
    }
}

fn read_envelope(text: &str) -> Result<Envelope<'_>, Refusal> {
    if !text.trim_start().starts_with('{') {
        // serde would read a list as the struct's fields in order.
        return Err(match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => Refusal::new(
                None,
                "invalid_message",
                "a message is a JSON object with a `type`",
            ),
            Err(e) => Refusal::new(
                None,
                "invalid_json",
                format!("the message is not JSON: {e}"),
            ),
        });
    }
    serde_json::from_str(text).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            Refusal::new(
                None,
                "invalid_json",
                format!("the message is not JSON: {e}"),
            )
        } else {
            Refusal::new(
                None,
                "invalid_message",
                format!("a message is a JSON object with a `type`: {e}"),
            )
        }
    })
}

/// The envelope's id: absent is fine here, malformed is not.
fn id_of(envelope: &Envelope<'_>) -> Result<Option<Id>, Refusal> {
    let Some(raw) = envelope.id else {
        return Ok(None);
    };
    let value: Value = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
    if value.is_null() {
        return Ok(None);
    }
    Id::from_value(&value).map(Some).ok_or_else(|| {
        Refusal::new(
            None,
            "invalid_message",
            format!("`id` must be a non-empty string or a number of at most {MAX_ID_BYTES} bytes"),
        )
    })
}

fn request_of(envelope: &Envelope<'_>, id: Option<Id>) -> Result<RequestMsg, Refusal> {
    let Some(id) = id else {
        return Err(Refusal::new(
            None,
            "missing_id",
            "a request needs an `id`, which its answers carry",
        ));
    };
    let invalid = |message: &str| Refusal::new(Some(id.clone()), "invalid_message", message);
    let text = |raw: Option<&RawValue>, name: &str| -> Result<Option<String>, Refusal> {
        match raw {
            None => Ok(None),
            Some(raw) => serde_json::from_str::<Option<String>>(raw.get())
                .map_err(|_| invalid(&format!("`{name}` must be a string"))),
        }
    };
    let provider = text(envelope.provider, "provider")?;
    let model = text(envelope.model, "model")?;
    let request = match envelope.request {
        Some(raw) if raw.get().starts_with('{') => raw.to_owned(),
        _ => return Err(invalid("`request` must be a JSON object: the request body")),
    };
    let metadata = match envelope.metadata {
        None => Metadata::default(),
        Some(raw) if raw.get() == "null" => Metadata::default(),
        Some(raw) => serde_json::from_str(raw.get()).map_err(|_| {
            invalid("`metadata` must be an object with `stream` (boolean) and `protocol`")
        })?,
    };
    let protocol = match metadata.protocol.as_deref() {
        None | Some("openai") => Protocol::OpenAi,
        Some("anthropic") => Protocol::Anthropic,
        Some("gemini") => Protocol::Gemini,
        Some("responses") => Protocol::Responses,
        Some(other) => {
            return Err(invalid(&format!(
                "unknown metadata.protocol {}: use openai, anthropic, gemini or responses",
                quote(other)
            )));
        }
    };
    Ok(RequestMsg {
        id,
        provider,
        model,
        request,
        stream: metadata.stream,
        protocol,
    })
}

fn batch_of(envelope: &Envelope<'_>, id: Option<Id>) -> Result<Inbound, Refusal> {
    let members: Vec<&RawValue> = envelope
        .requests
        .and_then(|raw| serde_json::from_str(raw.get()).ok())
        .unwrap_or_default();
    if members.is_empty() {
        return Err(Refusal::new(
            id,
            "invalid_message",
            "a batch needs `requests`: a non-empty list of request messages",
        ));
    }
    let members = members
        .into_iter()
        .map(|raw| {
            let envelope = read_envelope(raw.get())?;
            let id = id_of(&envelope)?;
            match envelope.kind.map(|k| k.get()) {
                None | Some("\"request\"") => request_of(&envelope, id),
                Some(_) => Err(Refusal::new(
                    id,
                    "invalid_message",
                    "a batch holds only requests",
                )),
            }
        })
        .collect();
    Ok(Inbound::Batch(members))
}

/// `text` quoted and bounded, for an error message.
fn quote(text: &str) -> String {
    let cut: String = text.chars().take(64).collect();
    serde_json::to_string(&cut).unwrap_or_default()
}

/// `data` as JSON: itself when it is valid JSON, else a JSON string.
fn json_or_string(data: &str) -> std::borrow::Cow<'_, str> {
    if serde_json::from_str::<IgnoredAny>(data).is_ok() {
        std::borrow::Cow::Borrowed(data)
    } else {
        std::borrow::Cow::Owned(serde_json::to_string(data).unwrap_or_default())
    }
}

/// `{"type":"response","id":…,"data":…}`.
pub fn response(id: &Id, data: &str) -> String {
    format!(
        r#"{{"type":"response","id":{},"data":{}}}"#,
        id.json(),
        json_or_string(data)
    )
}

/// `{"type":"stream","id":…,"data":…}`: one client-protocol event.
pub fn stream(id: &Id, data: &str) -> String {
    format!(
        r#"{{"type":"stream","id":{},"data":{}}}"#,
        id.json(),
        json_or_string(data)
    )
}

/// `{"type":"stream_end","id":…}`.
pub fn stream_end(id: &Id) -> String {
    format!(r#"{{"type":"stream_end","id":{}}}"#, id.json())
}

/// `{"type":"error","id":…,"error":{"code":…,"message":…,"status":…}}`;
/// without an id when it is not known, without a status when the error
/// is not an HTTP-like one.
pub fn error(id: Option<&Id>, code: &str, message: &str, status: Option<u16>) -> String {
    let mut out = String::from(r#"{"type":"error","#);
    if let Some(id) = id {
        out.push_str(r#""id":"#);
        out.push_str(id.json());
        out.push(',');
    }
    out.push_str(r#""error":{"code":"#);
    out.push_str(&serde_json::to_string(code).unwrap_or_default());
    out.push_str(r#","message":"#);
    out.push_str(&serde_json::to_string(message).unwrap_or_default());
    if let Some(status) = status {
        out.push_str(&format!(r#","status":{status}"#));
    }
    out.push_str("}}");
    out
}

/// A refusal as an error frame.
pub fn refusal(refusal: &Refusal) -> String {
    error(refusal.id.as_ref(), refusal.code, &refusal.message, None)
}

/// `{"type":"heartbeat"}`.
pub fn heartbeat() -> String {
    r#"{"type":"heartbeat"}"#.to_owned()
}

/// The error `code` of an HTTP-like status from the pipeline.
pub fn code_for_status(status: u16) -> &'static str {
    match status {
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        408 | 504 => "timeout",
        413 => "too_large",
        429 => "rate_limited",
        500 => "internal_error",
        503 => "unavailable",
        400..=499 => "invalid_request",
        _ => "upstream_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> Refusal {
        decode(text).expect_err(text)
    }

    #[test]
    fn the_feature_guide_request() {
        let text = r#"{"type":"request","id":"123","provider":"openai-custom",
            "model":"gpt-3.5-turbo","request":{"messages":[{"role":"user","content":"Hello!"}]},
            "metadata":{"stream":true}}"#;
        let Ok(Inbound::Request(r)) = decode(text) else {
            panic!()
        };
        assert_eq!(r.id.json(), r#""123""#);
        assert_eq!(r.provider.as_deref(), Some("openai-custom"));
        assert_eq!(r.model.as_deref(), Some("gpt-3.5-turbo"));
        assert_eq!(r.stream, Some(true));
        assert_eq!(r.protocol, Protocol::OpenAi);
        assert!(r.request.get().starts_with(r#"{"messages""#));
    }

    #[test]
    fn every_protocol_and_numeric_ids() {
        for (name, protocol) in [
            ("openai", Protocol::OpenAi),
            ("anthropic", Protocol::Anthropic),
            ("gemini", Protocol::Gemini),
            ("responses", Protocol::Responses),
        ] {
            let text = format!(
                r#"{{"type":"request","id":7,"request":{{}},"metadata":{{"protocol":"{name}"}}}}"#
            );
            let Ok(Inbound::Request(r)) = decode(&text) else {
                panic!("{text}")
            };
            assert_eq!(r.protocol, protocol);
            assert_eq!(r.id.json(), "7");
            assert_eq!(r.stream, None);
        }
    }

    #[test]
    fn bad_messages_get_their_codes_and_keep_the_id_when_known() {
        assert_eq!(refused("{").code, "invalid_json");
        assert_eq!(refused("not json").code, "invalid_json");
        assert_eq!(refused("[1]").code, "invalid_message");
        assert_eq!(refused(r#"["request","x"]"#).code, "invalid_message");
        assert_eq!(refused(r#"  "heartbeat""#).code, "invalid_message");
        assert_eq!(refused("[1").code, "invalid_json");
        assert_eq!(refused(r#"{"id":"a"}"#).id.unwrap().json(), r#""a""#);
        let r = refused(r#"{"type":"nope","id":"x"}"#);
        assert_eq!((r.code, r.id.unwrap().text()), ("unknown_type", "x".into()));
        assert_eq!(
            refused(r#"{"type":"request","request":{}}"#).code,
            "missing_id"
        );
        assert_eq!(refused(r#"{"type":"cancel"}"#).code, "missing_id");
        for bad_id in [r#""""#, "[1]", "{}", "true"] {
            let text = format!(r#"{{"type":"request","id":{bad_id},"request":{{}}}}"#);
            assert_eq!(refused(&text).code, "invalid_message", "{text}");
        }
        let long = format!(
            r#"{{"type":"request","id":"{}","request":{{}}}}"#,
            "a".repeat(300)
        );
        assert_eq!(refused(&long).code, "invalid_message");
        for body in [r#""request":[]"#, r#""request":"x""#, r#""x":1"#] {
            let text = format!(r#"{{"type":"request","id":"i",{body}}}"#);
            let r = refused(&text);
            assert_eq!(
                (r.code, r.id.is_some()),
                ("invalid_message", true),
                "{text}"
            );
        }
        let r = refused(r#"{"type":"request","id":"i","request":{},"metadata":{"protocol":"x"}}"#);
        assert!(r.message.contains("metadata.protocol"), "{}", r.message);
        let r = refused(r#"{"type":"request","id":"i","request":{},"model":5}"#);
        assert!(r.message.contains("model"), "{}", r.message);
    }

    #[test]
    fn batches_refuse_members_one_by_one() {
        let text = r#"{"type":"batch","requests":[
            {"type":"request","id":"a","request":{}},
            {"id":"b","request":{}},
            {"type":"request","request":{}},
            {"type":"cancel","id":"d"},
            3]}"#;
        let Ok(Inbound::Batch(members)) = decode(text) else {
            panic!()
        };
        assert_eq!(members.len(), 5);
        assert_eq!(members[0].as_ref().unwrap().id.text(), "a");
        assert_eq!(members[1].as_ref().unwrap().id.text(), "b");
        assert_eq!(members[2].as_ref().unwrap_err().code, "missing_id");
        assert_eq!(members[3].as_ref().unwrap_err().code, "invalid_message");
        assert_eq!(members[4].as_ref().unwrap_err().code, "invalid_message");
        assert_eq!(
            refused(r#"{"type":"batch","requests":[]}"#).code,
            "invalid_message"
        );
        assert_eq!(refused(r#"{"type":"batch"}"#).code, "invalid_message");
    }

    #[test]
    fn frames_are_json_with_the_id_as_sent() {
        let id = Id::from_value(&Value::from("a\"b")).unwrap();
        let frames = [
            response(&id, r#"{"x":1}"#),
            stream(&id, "not json"),
            stream_end(&id),
            error(Some(&id), "cancelled", "stop \"now\"", Some(499)),
            error(None, "invalid_json", "x", None),
            heartbeat(),
        ];
        for frame in &frames {
            let v: Value = serde_json::from_str(frame).unwrap();
            assert!(v["type"].is_string(), "{frame}");
        }
        let v: Value = serde_json::from_str(&frames[0]).unwrap();
        assert_eq!(
            (v["id"].as_str(), v["data"]["x"].as_i64()),
            (Some("a\"b"), Some(1))
        );
        let v: Value = serde_json::from_str(&frames[1]).unwrap();
        assert_eq!(v["data"], "not json");
        let v: Value = serde_json::from_str(&frames[3]).unwrap();
        assert_eq!(v["error"]["code"], "cancelled");
        assert_eq!(v["error"]["status"], 499);
        let v: Value = serde_json::from_str(&frames[4]).unwrap();
        assert!(v.get("id").is_none());
    }

    #[test]
    fn kinds_travel_as_one_byte() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(Kind::from_code(200), None);
    }
}
