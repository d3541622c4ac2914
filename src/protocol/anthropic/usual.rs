//! The usual Anthropic request, read straight from its bytes.
//!
//! Most requests are text turns and a few generation settings. For them
//! the `Value` tree that [`super::parse_request`] walks is most of what a
//! conversion costs: an allocation per member, a map per object, and as
//! much again to free it. This reads those requests into the canonical
//! model with typed visitors instead, and gives up (`None`) at anything
//! else — a block other than text, tools, thinking, structured output, a
//! member of another type than usual, a repeated member — so that the
//! general parser decides, errors included. Where it answers, it answers
//! what the general parser would; the golden tests and the conversion
//! fuzz targets compare the two.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde_json::{Number, Value};

use crate::protocol::canonical::{ChatRequest, Message, Part, Role, as_u64};

/// The canonical request, when the body has the usual shape.
pub fn parse(body: &[u8]) -> Option<ChatRequest> {
    let raw: Request = crate::protocol::json::from_bytes(body).ok()?;
    let unusual = [
        &raw.tools,
        &raw.tool_choice,
        &raw.thinking,
        &raw.output_config,
        &raw.output_format,
    ];
    if unusual.iter().any(|member| member.is_some()) {
        return None;
    }
    let messages = raw
        .messages
        .into_iter()
        .filter(|m| !m.content.0.is_empty())
        .map(|m| Message {
            role: m.role.into(),
            parts: m.content.0.into_iter().map(Part::Text).collect(),
        })
        .collect();
    Some(ChatRequest {
        system: raw.system.map(|s| s.0).unwrap_or_default(),
        messages,
        max_tokens: raw.max_tokens.and_then(|n| as_u64(Some(&Value::Number(n)))),
        temperature: raw.temperature,
        top_p: raw.top_p,
        top_k: raw.top_k,
        stop: raw.stop_sequences.unwrap_or_default(),
        ..ChatRequest::default()
    })
}

/// The members the general parser reads. Those this one does not convert
/// are only looked at: present and not `null` sends the request to the
/// general parser (`null` means the same as absent to both).
#[derive(Deserialize)]
struct Request {
    messages: Vec<Turn>,
    #[serde(default)]
    system: Option<Texts>,
    #[serde(default)]
    max_tokens: Option<Number>,
    #[serde(default)]
    temperature: Option<Number>,
    #[serde(default)]
    top_p: Option<Number>,
    #[serde(default)]
    top_k: Option<Number>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    tools: Option<IgnoredAny>,
    #[serde(default)]
    tool_choice: Option<IgnoredAny>,
    #[serde(default)]
    thinking: Option<IgnoredAny>,
    #[serde(default)]
    output_config: Option<IgnoredAny>,
    #[serde(default)]
    output_format: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Turn {
    role: TurnRole,
    #[serde(default)]
    content: Texts,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum TurnRole {
    User,
    Assistant,
    System,
}

impl From<TurnRole> for Role {
    fn from(role: TurnRole) -> Self {
        match role {
            TurnRole::User => Role::User,
            TurnRole::Assistant => Role::Assistant,
            TurnRole::System => Role::System,
        }
    }
}

/// The non-empty texts of a `content` or `system`: a string, or an array
/// of text blocks. `null` is no text, as it is to the general parser.
#[derive(Default)]
struct Texts(Vec<String>);

/// A block of a `content` or `system` array. In `system` the general
/// parser reads any block's `text`, in `content` only a text block's;
/// `type` is required here for both, which only sends a `system` block
/// without one to the general parser.
#[derive(Deserialize)]
struct TextBlock {
    r#type: BlockType,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum BlockType {
    Text,
}

impl<'de> Deserialize<'de> for Texts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextsVisitor)
    }
}

struct TextsVisitor;

impl<'de> Visitor<'de> for TextsVisitor {
    type Value = Texts;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an array of text blocks")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Texts, E> {
        self.visit_string(s.to_owned())
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Texts, E> {
        Ok(Texts(if s.is_empty() { Vec::new() } else { vec![s] }))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Texts, E> {
        Ok(Texts::default())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Texts, A::Error> {
        let mut texts = Vec::with_capacity(seq.size_hint().unwrap_or(1));
        while let Some(block) = seq.next_element::<TextBlock>()? {
            let BlockType::Text = block.r#type;
            texts.extend(block.text.filter(|t| !t.is_empty()));
        }
        Ok(Texts(texts))
    }
}
