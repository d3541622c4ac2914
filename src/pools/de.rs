//! The pools file's reader: serde visitors that check each member as it
//! is read, so an error carries the parser's position and names the
//! provider, the member and the key. Values are read as a small generic
//! [`Node`] and checked here rather than by derived types, which would
//! report "invalid type" without saying which member.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{
    BOOKKEEPING_KEYS, FOREIGN_PROVIDERS, Format, MAX_FILE_BYTES, MAX_MEMBERS, MAX_WEIGHT,
    Overrides, PROVIDER_KEYS, PoolMember, PoolsFile, ProviderPool, UNSUPPORTED_KEYS,
};
use crate::balancer::ModelFilter;
use crate::config::{Secret, parse as check};
use crate::provider_kind::ProviderKind;

/// Longest `uuid`, `customName`, model name or other text value.
const MAX_TEXT: usize = 512;

pub(super) fn parse(text: &str, format: Format) -> Result<PoolsFile, String> {
    let parsed = match format {
        Format::Json => serde_json::from_str::<Parsed>(text).map_err(json_error),
        Format::Yaml => serde_saphyr::from_str_with_options::<Parsed>(text, yaml_options())
            .map_err(|e| crate::config::file::one_line(&e.to_string(), "invalid file")),
    };
    parsed.map(|p| p.0)
}

/// serde_json's "… at line L column C" as serde-saphyr writes it:
/// "line L column C: …".
fn json_error(e: serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&suffix) {
        Some(message) if e.line() > 0 => {
            format!("line {} column {}: {message}", e.line(), e.column())
        }
        _ => text,
    }
}

/// serde-saphyr's budget for a pools file: room for [`MAX_MEMBERS`]
/// members of a few dozen keys, no room for alias bombs or deep nesting
/// (the format needs four levels; serde-saphyr recurses per level).
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_reader_input_bytes: Some(MAX_FILE_BYTES),
            max_events: 400_000,
            max_aliases: 1_000,
            max_anchors: 1_000,
            max_recorded_anchor_events: 10_000,
            max_recorded_anchor_bytes: MAX_FILE_BYTES,
            max_depth: 8,
            max_documents: 1,
            max_nodes: 200_000,
            max_total_scalar_bytes: MAX_FILE_BYTES,
            max_merge_keys: 100,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: 10_000,
            max_replay_stack_depth: 16,
            max_alias_expansions_per_anchor: 1_000,
        },
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
    }
}

/// A value as read, before it is checked against its key.
#[derive(Debug)]
enum Node {
    Null,
    Bool(bool),
    Int(i128),
    Float,
    Text(String),
    List(Vec<Node>),
    Map,
}

impl Node {
    fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "true/false",
            Node::Int(_) | Node::Float => "a number",
            Node::Text(_) => "text",
            Node::List(_) => "a list",
            Node::Map => "a map",
        }
    }
}

/// Deepest [`Node`]: a list of names is two levels, and refusing more
/// here keeps the recursion short whatever the parser allows.
const MAX_NODE_DEPTH: u8 = 3;

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor(1))
    }
}

/// Reads a [`Node`] at a depth (1 for a key's value).
struct NodeVisitor(u8);

impl<'de> DeserializeSeed<'de> for NodeVisitor {
    type Value = Node;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value")
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Node, E> {
        Ok(i128::try_from(v).map_or(Node::Float, Node::Int))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Float)
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Text(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Text(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        if self.0 >= MAX_NODE_DEPTH {
            return Err(de::Error::custom("nested too deeply"));
        }
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(NodeVisitor(self.0 + 1))? {
            items.push(item);
        }
        Ok(Node::List(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Node::Map)
    }
}

/// The whole file.
struct Parsed(PoolsFile);

impl<'de> Deserialize<'de> for Parsed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Parsed, D::Error> {
        d.deserialize_any(FileVisitor)
    }
}

/// What the file's members have used so far.
#[derive(Default)]
struct Seen {
    /// uuid → where it was first used.
    uuids: Vec<(String, String)>,
    members: usize,
    unsupported_warned: Vec<&'static str>,
}

struct FileVisitor;

impl<'de> Visitor<'de> for FileVisitor {
    type Value = Parsed;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of provider id to a list of members")
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(unexpected_text(&self))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parsed, A::Error> {
        let mut file = PoolsFile::default();
        let mut seen = Seen::default();
        let mut ids: Vec<(ProviderKind, String)> = Vec::new();
        while let Some(id) = map.next_key::<String>()? {
            let Some(kind) = ProviderKind::parse(&id) else {
                if FOREIGN_PROVIDERS.contains(&id.as_str()) {
                    map.next_value::<IgnoredAny>()?;
                    file.warnings.push(format!(
                        "{id}: not a provider of aiproxy, its members are skipped"
                    ));
                    continue;
                }
                let names: Vec<&str> = ProviderKind::ALL.iter().map(|k| k.name()).collect();
                return Err(de::Error::custom(format!(
                    "unknown provider {:?} (expected one of {}, or the original's long ids such \
                     as gemini-cli-oauth)",
                    shown(&id),
                    names.join(", ")
                )));
            };
            if let Some((_, first)) = ids.iter().find(|(k, _)| *k == kind) {
                return Err(de::Error::custom(format!(
                    "{id} and {first} name the same provider: put its members in one list"
                )));
            }
            ids.push((kind, id.clone()));
            let members = map.next_value_seed(MembersSeed {
                kind,
                id: &id,
                seen: &mut seen,
                warnings: &mut file.warnings,
            })?;
            file.pools.push(ProviderPool { kind, members });
        }
        Ok(Parsed(file))
    }
}

/// A provider's list of members.
struct MembersSeed<'s> {
    kind: ProviderKind,
    id: &'s str,
    seen: &'s mut Seen,
    warnings: &'s mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for MembersSeed<'_> {
    type Value = Vec<PoolMember>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<PoolMember>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MembersSeed<'_> {
    type Value = Vec<PoolMember>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: a list of members", self.id)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(unexpected_text(&self))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<PoolMember>, A::Error> {
        let mut members = Vec::new();
        loop {
            let seed = MemberSeed {
                kind: self.kind,
                at: format!("{}[{}]", self.id, members.len()),
                seen: &mut *self.seen,
                warnings: &mut *self.warnings,
            };
            let Some(member) = seq.next_element_seed(seed)? else {
                return Ok(members);
            };
            self.seen.members += 1;
            if self.seen.members > MAX_MEMBERS {
                return Err(de::Error::custom(format!(
                    "more than {MAX_MEMBERS} members in the file"
                )));
            }
            members.push(member);
        }
    }
}

/// One member: `at` names it (`gemini-cli-oauth[2]`).
struct MemberSeed<'s> {
    kind: ProviderKind,
    at: String,
    seen: &'s mut Seen,
    warnings: &'s mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for MemberSeed<'_> {
    type Value = PoolMember;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<PoolMember, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MemberSeed<'_> {
    type Value = PoolMember;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: a member (a map of keys)", self.at)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(unexpected_text(&self))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PoolMember, A::Error> {
        let mut member = PoolMember {
            kind: self.kind,
            uuid: String::new(),
            custom_name: None,
            weight: 1,
            disabled: false,
            check_model: None,
            models: ModelFilter::default(),
            overrides: Overrides::empty(self.kind),
        };
        let mut keys: Vec<String> = Vec::new();
        let fail = |member: &PoolMember, message: String| -> A::Error {
            let who = if member.uuid.is_empty() {
                self.at.clone()
            } else {
                format!("{} (uuid {})", self.at, member.uuid)
            };
            de::Error::custom(format!("{who}: {message}"))
        };
        while let Some(key) = map.next_key::<String>()? {
            if keys.contains(&key) {
                return Err(fail(&member, format!("{:?} appears twice", shown(&key))));
            }
            let field = classify(&key, self.kind).map_err(|m| fail(&member, m))?;
            match field {
                Field::Ignored => {
                    map.next_value::<IgnoredAny>()?;
                }
                Field::Unsupported(name) => {
                    let value: Node = map.next_value()?;
                    let set = !matches!(value, Node::Null | Node::Int(0));
                    if set && !self.seen.unsupported_warned.contains(&name) {
                        self.seen.unsupported_warned.push(name);
                        self.warnings.push(format!(
                            "{}: {name} is not supported by aiproxy and is ignored",
                            self.at
                        ));
                    }
                }
                field => {
                    let value: Node = map.next_value()?;
                    apply(&mut member, field, value)
                        .map_err(|m| fail(&member, format!("{key}: {m}")))?;
                }
            }
            keys.push(key);
        }
        if member.uuid.is_empty() {
            return Err(fail(
                &member,
                "no uuid (every member needs a unique uuid: it keeps the member's state \
                 across reloads)"
                    .to_owned(),
            ));
        }
        if let Some((_, first)) = self.seen.uuids.iter().find(|(u, _)| *u == member.uuid) {
            let message = format!("uuid {} is also the uuid of {first}", member.uuid);
            return Err(fail(&member, message));
        }
        self.seen.uuids.push((member.uuid.clone(), self.at.clone()));
        Ok(member)
    }
}

/// What a member key sets.
#[derive(Clone, Copy, Debug)]
enum Field {
    Uuid,
    CustomName,
    IsDisabled,
    CheckModelName,
    SupportedModels,
    NotSupportedModels,
    Weight,
    /// One of [`PROVIDER_KEYS`], by name.
    Provider(&'static str),
    Ignored,
    Unsupported(&'static str),
}

/// The field `key` sets in a member of `kind`, or why it is refused.
fn classify(key: &str, kind: ProviderKind) -> Result<Field, String> {
    Ok(match key {
        "uuid" => Field::Uuid,
        "customName" => Field::CustomName,
        "isDisabled" => Field::IsDisabled,
        "checkModelName" => Field::CheckModelName,
        "supportedModels" => Field::SupportedModels,
        "notSupportedModels" => Field::NotSupportedModels,
        "weight" => Field::Weight,
        k if BOOKKEEPING_KEYS.contains(&k) => Field::Ignored,
        k => {
            if let Some(&name) = UNSUPPORTED_KEYS.iter().find(|&&u| u == k) {
                return Ok(Field::Unsupported(name));
            }
            match PROVIDER_KEYS.iter().find(|(name, _, _)| *name == k) {
                Some(&(name, owner, _)) if owner == kind => Field::Provider(name),
                Some((name, owner, _)) => {
                    return Err(format!("{name} is a key of {owner} members, not of {kind}"));
                }
                None if k.ends_with("_OAUTH_CREDS_BASE64") => {
                    return Err(format!(
                        "{k} is not supported: write the credentials to a file and set \
                         {}_OAUTH_CREDS_FILE_PATH",
                        k.trim_end_matches("_OAUTH_CREDS_BASE64")
                    ));
                }
                None => {
                    let own: Vec<&str> = PROVIDER_KEYS
                        .iter()
                        .filter(|(_, owner, _)| *owner == kind)
                        .map(|(name, _, _)| *name)
                        .collect();
                    let mut known = vec![
                        "uuid",
                        "customName",
                        "isDisabled",
                        "checkModelName",
                        "supportedModels",
                        "notSupportedModels",
                        "weight",
                    ];
                    known.extend(own);
                    return Err(format!(
                        "unknown key {:?} (a {kind} member takes {})",
                        shown(k),
                        known.join(", ")
                    ));
                }
            }
        }
    })
}

/// Sets `field` from `value`; the error says what was expected, never
/// the value itself.
fn apply(member: &mut PoolMember, field: Field, value: Node) -> Result<(), String> {
    match field {
        Field::Uuid => {
            let uuid = text(value)?.ok_or("must not be empty or null")?;
            if uuid.len() > 128
                || !uuid
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._:@-".contains(c))
            {
                return Err(
                    "must be 1 to 128 letters, digits, '.', '_', ':', '@' or '-'".to_owned(),
                );
            }
            member.uuid = uuid;
        }
        Field::CustomName => member.custom_name = text(value)?,
        Field::CheckModelName => member.check_model = text(value)?,
        Field::IsDisabled => {
            member.disabled = match value {
                Node::Null => false,
                Node::Bool(b) => b,
                other => return Err(format!("expected true or false, found {}", other.kind())),
            }
        }
        Field::Weight => {
            member.weight = match value {
                Node::Null => 1,
                Node::Int(n) if (1..=i128::from(MAX_WEIGHT)).contains(&n) => n as u32,
                Node::Int(_) => {
                    return Err(format!(
                        "must be 1 to {MAX_WEIGHT} (to take a member out, set isDisabled)"
                    ));
                }
                other => return Err(format!("expected a whole number, found {}", other.kind())),
            }
        }
        Field::SupportedModels => member.models.supported = models(value)?,
        Field::NotSupportedModels => member.models.not_supported = models(value)?,
        Field::Provider(key) => provider_key(&mut member.overrides, key, value)?,
        Field::Ignored | Field::Unsupported(_) => {}
    }
    Ok(())
}

fn provider_key(overrides: &mut Overrides, key: &str, value: Node) -> Result<(), String> {
    let is_url = key.ends_with("_BASE_URL");
    let value = text(value)?;
    let url = || value.as_deref().map(check::base_url).transpose();
    match (overrides, key) {
        (Overrides::OpenAi(o) | Overrides::Claude(o), k) if k.ends_with("_API_KEY") => {
            o.api_key = value.map(Secret::new);
        }
        (Overrides::OpenAi(o) | Overrides::Claude(o), _) if is_url => o.base_url = url()?,
        (Overrides::GeminiCli(g), "PROJECT_ID") => {
            if value.as_deref() == Some("default") {
                return Err("\"default\" is not a project id".to_owned());
            }
            g.project_id = value;
        }
        (Overrides::GeminiCli(g), _) if is_url => g.base_url = url()?,
        (Overrides::GeminiCli(g), _) => g.oauth_creds_file = value.map(PathBuf::from),
        (Overrides::Kiro(o) | Overrides::Qwen(o), _) if is_url => o.base_url = url()?,
        (Overrides::Kiro(o) | Overrides::Qwen(o), _) => {
            o.oauth_creds_file = value.map(PathBuf::from);
        }
        // classify() only lets a provider's own keys through.
        (Overrides::Mock, _) | (Overrides::OpenAi(_) | Overrides::Claude(_), _) => {}
    }
    Ok(())
}

/// A text value: `None` for null or an empty string (the original's
/// editor writes both for "unset"). Numbers are taken as their digits
/// (a YAML `PROJECT_ID: 123456`).
fn text(value: Node) -> Result<Option<String>, String> {
    let t = match value {
        Node::Null => return Ok(None),
        Node::Text(t) => t.trim().to_owned(),
        Node::Int(n) => n.to_string(),
        other => return Err(format!("expected text, found {}", other.kind())),
    };
    if t.len() > MAX_TEXT {
        return Err(format!("longer than {MAX_TEXT} bytes"));
    }
    if t.chars().any(char::is_control) {
        return Err("contains control characters".to_owned());
    }
    Ok((!t.is_empty()).then_some(t))
}

fn models(value: Node) -> Result<Vec<String>, String> {
    let items = match value {
        Node::Null => return Ok(Vec::new()),
        Node::List(items) => items,
        other => {
            return Err(format!(
                "expected a list of model names, found {}",
                other.kind()
            ));
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match text(item) {
            Ok(Some(name)) => Ok(name),
            Ok(None) => Err(format!("item {i} is empty")),
            Err(e) => Err(format!("item {i}: {e}")),
        })
        .collect()
}

/// serde's own message would quote the text, which could be a secret
/// written in the wrong place.
fn unexpected_text<'de, E: de::Error>(expected: &impl Visitor<'de>) -> E {
    E::invalid_type(de::Unexpected::Other("text"), expected)
}

/// A key as shown in an error: at most 64 characters.
fn shown(s: &str) -> String {
    s.chars().take(64).collect()
}
