//! `config.yaml` as written: [`FileConfig`], a serde mirror of the file in
//! which everything is optional and every level denies unknown keys, so a
//! typo is an error that names the key instead of a silently ignored
//! setting.
//!
//! Leaf values are kept as text ([`Scalar`], [`List`]) rather than typed
//! numbers: the same per-key parser then handles the file, the
//! environment and the flags, every problem names its key path, and all
//! problems are reported at once instead of the first serde error only.
//! Plain YAML scalars are read with their original spelling (`007` stays
//! `007`).
//!
//! Parsing is bounded ([`MAX_FILE_BYTES`] and a tight serde-saphyr
//! budget): alias bombs and deep nesting fail fast. [`FileConfig::from_yaml_str`]
//! never panics, whatever the input; it is the config fuzz target's entry.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::keys::{self, Kind};
use super::layer::Value;

/// Largest config file accepted (1 MiB).
pub const MAX_FILE_BYTES: usize = 1024 * 1024;

/// One scalar value as text. With `SECRET = true` its `Debug` hides it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Scalar<const SECRET: bool = false>(pub String);

/// A scalar whose `Debug` is redacted (API keys, passwords).
pub type SecretScalar = Scalar<true>;

/// A list of values: a YAML sequence of scalars, or one comma-separated
/// string. With `SECRET = true` its `Debug` hides the values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct List<const SECRET: bool = false>(pub Vec<String>);

impl<const SECRET: bool> fmt::Debug for Scalar<SECRET> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if SECRET {
            f.write_str("\"***\"")
        } else {
            fmt::Debug::fmt(&self.0, f)
        }
    }
}

impl<const SECRET: bool> fmt::Debug for List<SECRET> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if SECRET {
            write!(f, "[{} values]", self.0.len())
        } else {
            fmt::Debug::fmt(&self.0, f)
        }
    }
}

struct ScalarVisitor;

impl Visitor<'_> for ScalarVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a single value (text, number or true/false)")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_char<E: de::Error>(self, v: char) -> Result<String, E> {
        Ok(v.to_string())
    }
}

impl<'de, const SECRET: bool> Deserialize<'de> for Scalar<SECRET> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_string(ScalarVisitor).map(Scalar)
    }
}

impl<const SECRET: bool> Serialize for Scalar<SECRET> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

struct ListVisitor<const SECRET: bool>(PhantomData<()>);

impl<'de, const SECRET: bool> Visitor<'de> for ListVisitor<SECRET> {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list, or a comma-separated string")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        let mut out = Vec::new();
        while let Some(Scalar::<SECRET>(item)) = seq.next_element()? {
            out.push(item);
        }
        Ok(out)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<String>, E> {
        Ok(v.split(',').map(|s| s.trim().to_owned()).collect())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Vec<String>, E> {
        Ok(vec![v.to_string()])
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Vec<String>, E> {
        Ok(vec![v.to_string()])
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Vec<String>, E> {
        Ok(vec![v.to_string()])
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Vec<String>, E> {
        Ok(vec![v.to_string()])
    }
}

impl<'de, const SECRET: bool> Deserialize<'de> for List<SECRET> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ListVisitor::<SECRET>(PhantomData))
            .map(List)
    }
}

impl<const SECRET: bool> Serialize for List<SECRET> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// `openai:` and `claude:` sections.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamKeySection {
    /// `api_key`.
    pub api_key: Option<SecretScalar>,
    /// `base_url`.
    pub base_url: Option<Scalar>,
}

/// `mock:` section.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MockSection {
    /// `chunk_delay` (duration).
    pub chunk_delay: Option<Scalar>,
    /// `latency` (duration).
    pub latency: Option<Scalar>,
}

/// `limits:` section.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// `max_body_bytes`.
    pub max_body_bytes: Option<Scalar>,
    /// `max_header_bytes`.
    pub max_header_bytes: Option<Scalar>,
    /// `max_headers`.
    pub max_headers: Option<Scalar>,
    /// `header_timeout` (duration).
    pub header_timeout: Option<Scalar>,
    /// `body_timeout` (duration).
    pub body_timeout: Option<Scalar>,
    /// `idle_timeout` (duration).
    pub idle_timeout: Option<Scalar>,
    /// `send_timeout` (duration).
    pub send_timeout: Option<Scalar>,
    /// `queue_timeout` (duration).
    pub queue_timeout: Option<Scalar>,
    /// `max_connections`.
    pub max_connections: Option<Scalar>,
}

/// `upstream:` section.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    /// `connect_timeout` (duration).
    pub connect_timeout: Option<Scalar>,
    /// `timeout` (duration, time to first byte).
    pub timeout: Option<Scalar>,
    /// `idle_timeout` (duration between streamed chunks).
    pub idle_timeout: Option<Scalar>,
    /// `max_retries`.
    pub max_retries: Option<Scalar>,
    /// `base_delay` (duration).
    pub base_delay: Option<Scalar>,
    /// `stream_keepalive` (duration, 0 = off).
    pub stream_keepalive: Option<Scalar>,
}

/// `log:` section.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `level`.
    pub level: Option<Scalar>,
    /// `format`.
    pub format: Option<Scalar>,
    /// `prompts`.
    pub prompts: Option<Scalar>,
}

/// `gemini:` section.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GeminiSection {
    /// `oauth_creds_file`.
    pub oauth_creds_file: Option<Scalar>,
    /// `project_id`.
    pub project_id: Option<Scalar>,
    /// `base_url`.
    pub base_url: Option<Scalar>,
    /// `token_url`.
    pub token_url: Option<Scalar>,
    /// `client_id`.
    pub client_id: Option<Scalar>,
    /// `client_secret`.
    pub client_secret: Option<SecretScalar>,
}

/// `kiro:` section.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KiroSection {
    /// `oauth_creds_file`.
    pub oauth_creds_file: Option<Scalar>,
    /// `base_url`.
    pub base_url: Option<Scalar>,
    /// `refresh_url` (social logins).
    pub refresh_url: Option<Scalar>,
    /// `refresh_idc_url` (Builder ID / IAM Identity Center logins).
    pub refresh_idc_url: Option<Scalar>,
    /// `version`: the Kiro IDE version announced upstream.
    pub version: Option<Scalar>,
    /// `model_map`: client model name → Kiro model id.
    pub model_map: Option<BTreeMap<String, Scalar>>,
}

/// `qwen:` section.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QwenSection {
    /// `oauth_creds_file`.
    pub oauth_creds_file: Option<Scalar>,
    /// `base_url`.
    pub base_url: Option<Scalar>,
    /// `token_url`.
    pub token_url: Option<Scalar>,
    /// `ext_tool`: add the dummy `ext` tool to requests.
    pub ext_tool: Option<Scalar>,
}

/// `cache:` section (not available in this release).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    /// `enabled`.
    pub enabled: Option<Scalar>,
    /// `max_size_mb`.
    pub max_size_mb: Option<Scalar>,
    /// `ttl_seconds`.
    pub ttl_seconds: Option<Scalar>,
    /// `scope`: `shared` or `per_key`.
    pub scope: Option<Scalar>,
}

/// `redis:` section (not available in this release).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSection {
    /// `addr` (`host:port`).
    pub addr: Option<Scalar>,
    /// `password`.
    pub password: Option<SecretScalar>,
    /// `db`.
    pub db: Option<Scalar>,
}

/// `metrics:` section (not available in this release).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// `enabled`.
    pub enabled: Option<Scalar>,
    /// `port`.
    pub port: Option<Scalar>,
}

/// `websocket:` section.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketSection {
    /// `enabled`.
    pub enabled: Option<Scalar>,
    /// `max_connections`.
    pub max_connections: Option<Scalar>,
    /// `max_message_size` (bytes).
    pub max_message_size: Option<Scalar>,
    /// `max_frame_size` (bytes).
    pub max_frame_size: Option<Scalar>,
    /// `max_in_flight` (requests per connection).
    pub max_in_flight: Option<Scalar>,
    /// `max_queued_bytes` (outbound queue of one connection).
    pub max_queued_bytes: Option<Scalar>,
    /// `heartbeat_interval` (duration).
    pub heartbeat_interval: Option<Scalar>,
    /// `idle_timeout` (duration).
    pub idle_timeout: Option<Scalar>,
}

/// `load_balancer:` section.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancerSection {
    /// `enabled`.
    pub enabled: Option<Scalar>,
    /// `algorithm`.
    pub algorithm: Option<Scalar>,
    /// `health_check_interval` (duration).
    pub health_check_interval: Option<Scalar>,
    /// `ejection_time` (duration): the first passive ejection's length.
    pub ejection_time: Option<Scalar>,
}

/// `cluster:` section.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// `enabled`.
    pub enabled: Option<Scalar>,
    /// `node_id`.
    pub node_id: Option<Scalar>,
    /// `node_address` (`host:port`).
    pub node_address: Option<Scalar>,
    /// `seed_nodes` (list of `host:port`).
    pub seed_nodes: Option<List>,
    /// `secret`.
    pub secret: Option<SecretScalar>,
    /// `heartbeat_interval` (duration).
    pub heartbeat_interval: Option<Scalar>,
    /// `suspect_after` (duration).
    pub suspect_after: Option<Scalar>,
    /// `dead_after` (duration).
    pub dead_after: Option<Scalar>,
    /// `forget_after` (duration).
    pub forget_after: Option<Scalar>,
}

/// config.yaml as written. See aiproxy(1), CONFIGURATION FILE.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `host`.
    pub host: Option<Scalar>,
    /// `port`.
    pub port: Option<Scalar>,
    /// `api_key`: one key, a list, or a comma-separated string.
    pub api_key: Option<List<true>>,
    /// `admin_api_key`: keys for the admin endpoints, like `api_key`.
    pub admin_api_key: Option<List<true>>,
    /// `insecure_no_auth`.
    pub insecure_no_auth: Option<Scalar>,
    /// `cors_origins`: a list, or a comma-separated string.
    pub cors_origins: Option<List>,
    /// `model_providers`: a list, or a comma-separated string.
    pub model_providers: Option<List>,
    /// `model_routes`: model name (or prefix ending in `*`) → provider.
    pub model_routes: Option<BTreeMap<String, Scalar>>,
    /// `openai:`.
    pub openai: Option<UpstreamKeySection>,
    /// `claude:`.
    pub claude: Option<UpstreamKeySection>,
    /// `mock:`.
    pub mock: Option<MockSection>,
    /// `workers`.
    pub workers: Option<Scalar>,
    /// `limits:`.
    pub limits: Option<LimitsSection>,
    /// `upstream:`.
    pub upstream: Option<UpstreamSection>,
    /// `shutdown_timeout` (duration).
    pub shutdown_timeout: Option<Scalar>,
    /// `log:`.
    pub log: Option<LogSection>,
    /// `gemini:`.
    pub gemini: Option<GeminiSection>,
    /// `kiro:`.
    pub kiro: Option<KiroSection>,
    /// `qwen:`.
    pub qwen: Option<QwenSection>,
    /// `provider_pools_file`.
    pub provider_pools_file: Option<Scalar>,
    /// `cache:`.
    pub cache: Option<CacheSection>,
    /// `redis:`.
    pub redis: Option<RedisSection>,
    /// `metrics:`.
    pub metrics: Option<MetricsSection>,
    /// `websocket:`.
    pub websocket: Option<WebSocketSection>,
    /// `load_balancer:`.
    pub load_balancer: Option<LoadBalancerSection>,
    /// `trusted_proxies`: proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Option<List>,
    /// `cluster:`.
    pub cluster: Option<ClusterSection>,
}

/// Parser options: a budget far below serde-saphyr's generous defaults,
/// sized for a hand-written config file.
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_reader_input_bytes: Some(MAX_FILE_BYTES),
            max_events: 100_000,
            max_aliases: 1_000,
            max_anchors: 1_000,
            max_recorded_anchor_events: 10_000,
            max_recorded_anchor_bytes: MAX_FILE_BYTES,
            max_depth: 32,
            max_documents: 1,
            max_nodes: 50_000,
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

impl FileConfig {
    /// Parses config.yaml text. An empty file (or one with only comments)
    /// is an empty configuration. Never panics; the error is one line of
    /// text with the position when the YAML reader knows it.
    pub fn from_yaml_str(text: &str) -> Result<FileConfig, String> {
        if text.len() > MAX_FILE_BYTES {
            return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
        }
        let parsed: Result<Option<FileConfig>, _> =
            serde_saphyr::from_str_with_options(text, yaml_options());
        match parsed {
            Ok(file) => Ok(file.unwrap_or_default()),
            Err(err) => Err(one_line(&err.to_string(), "invalid YAML")),
        }
    }

    /// Reads and parses a config file, refusing files over
    /// [`MAX_FILE_BYTES`] before reading them whole.
    pub fn read(path: &str) -> Result<FileConfig, String> {
        let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read: {e}"))?;
        if bytes.len() > MAX_FILE_BYTES {
            return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
        }
        let text = String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())?;
        Self::from_yaml_str(&text)
    }

    /// Every key set in the file, as `(path, value)` in file order of the
    /// key table's sections.
    pub fn settings(&self) -> Vec<(&'static str, Value)> {
        let mut out = Vec::new();
        // FileConfig holds only strings, lists and string maps, so this
        // serialisation cannot fail.
        if let Ok(tree) = serde_json::to_value(self) {
            walk("", &tree, &mut out);
        }
        out
    }
}

/// Collapses serde-saphyr's multi-line rendering (which may quote source
/// lines) into its first line, which names the problem and the position.
/// Also drops the "error: " prefix and hints aimed at serde-saphyr's API
/// rather than at the person editing the file.
/// Shared with the pools file's YAML reader; `fallback` names the file's
/// kind when the message is empty.
pub(crate) fn one_line(message: &str, fallback: &str) -> String {
    let line = message
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or(fallback);
    let line = line.strip_prefix("error: ").unwrap_or(line);
    let line = line
        .split(", set DuplicateKeyPolicy")
        .next()
        .unwrap_or(line);
    line.to_owned()
}

fn walk(prefix: &str, tree: &serde_json::Value, out: &mut Vec<(&'static str, Value)>) {
    let serde_json::Value::Object(map) = tree else {
        return;
    };
    for (name, value) in map {
        if value.is_null() {
            continue;
        }
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let Some(key) = keys::find(&path) else {
            walk(&path, value, out);
            continue;
        };
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        let value = match (key.kind, value) {
            (Kind::List, serde_json::Value::Array(items)) => {
                Value::List(items.iter().map(text).collect())
            }
            (Kind::Map, serde_json::Value::Object(entries)) => {
                Value::Map(entries.iter().map(|(k, v)| (k.clone(), text(v))).collect())
            }
            (_, v) => Value::Text(text(v)),
        };
        out.push((key.path, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn empty_and_comment_only_files_are_empty_configs() {
        for text in ["", "\n", "# nothing\n", "---\n"] {
            let file = FileConfig::from_yaml_str(text).unwrap();
            assert!(file.settings().is_empty(), "{text:?}");
        }
    }

    #[test]
    fn scalars_keep_their_spelling() {
        let file = FileConfig::from_yaml_str(
            "port: 3000\nhost: 0.0.0.0\ninsecure_no_auth: true\ncluster: {node_id: 007}\n\
             upstream: {timeout: 1.50}\n",
        )
        .unwrap();
        assert_eq!(file.port, Some(Scalar("3000".into())));
        assert_eq!(file.insecure_no_auth, Some(Scalar("true".into())));
        assert_eq!(file.cluster.unwrap().node_id, Some(Scalar("007".into())));
    }

    #[test]
    fn lists_accept_sequences_and_comma_strings() {
        let a = FileConfig::from_yaml_str("model_providers: [mock, openai-custom]").unwrap();
        let b = FileConfig::from_yaml_str("model_providers: mock, openai-custom").unwrap();
        let c =
            FileConfig::from_yaml_str("model_providers:\n  - mock\n  - openai-custom\n").unwrap();
        assert_eq!(a.model_providers, b.model_providers);
        assert_eq!(a.model_providers, c.model_providers);
        let key = FileConfig::from_yaml_str("api_key: 12345").unwrap();
        assert_eq!(key.api_key.unwrap().0, vec!["12345".to_owned()]);
    }

    #[test]
    fn unknown_keys_are_errors_at_every_level() {
        let err = FileConfig::from_yaml_str("prot: 1").unwrap_err();
        assert!(err.contains("prot"), "{err}");
        let err = FileConfig::from_yaml_str("limits:\n  header_timout: 5s\n").unwrap_err();
        assert!(err.contains("header_timout"), "{err}");
        let err = FileConfig::from_yaml_str("cluster: {secrets: x}").unwrap_err();
        assert!(err.contains("secrets"), "{err}");
    }

    #[test]
    fn wrong_shapes_and_duplicates_are_errors() {
        for text in [
            "limits: 5",
            "port: [1, 2]",
            "model_routes: [a]",
            "port: 1\nport: 2\n",
            "a: b\n---\nc: d\n",
            "- 1\n- 2\n",
            "port: {a: 1}",
        ] {
            let err = FileConfig::from_yaml_str(text).unwrap_err();
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn secrets_are_not_in_debug_output() {
        let file = FileConfig::from_yaml_str(
            "api_key: [k1-secret]\nopenai: {api_key: k2-secret}\nredis: {password: k3-secret}\n",
        )
        .unwrap();
        let debug = format!("{file:?}");
        assert!(!debug.contains("secret"), "{debug}");
    }

    #[test]
    fn settings_lists_every_leaf_with_its_path() {
        let file = FileConfig::from_yaml_str(
            "port: 1\nlimits: {max_headers: 5}\nmodel_routes: {gpt-*: openai-custom}\n\
             cluster: {seed_nodes: [a:1, b:2]}\n",
        )
        .unwrap();
        let settings = file.settings();
        assert!(settings.contains(&("port", Value::Text("1".into()))));
        assert!(settings.contains(&("limits.max_headers", Value::Text("5".into()))));
        assert!(settings.contains(&(
            "model_routes",
            Value::Map(vec![("gpt-*".into(), "openai-custom".into())])
        )));
        assert!(settings.contains(&(
            "cluster.seed_nodes",
            Value::List(vec!["a:1".into(), "b:2".into()])
        )));
    }

    /// Every key of the table can be written in a file, and nothing else.
    #[test]
    fn key_table_and_file_structure_agree() {
        // Build a document holding every key of the table.
        let merged: serde_json::Value = {
            let mut root = serde_json::Map::new();
            for key in keys::KEYS {
                let parts: Vec<&str> = key.path.split('.').collect();
                let mut node = &mut root;
                for section in &parts[..parts.len() - 1] {
                    node = node
                        .entry(*section)
                        .or_insert_with(|| serde_json::json!({}))
                        .as_object_mut()
                        .unwrap();
                }
                let value = match key.kind {
                    Kind::Scalar => serde_json::json!("x"),
                    Kind::List => serde_json::json!(["x"]),
                    Kind::Map => serde_json::json!({"x": "y"}),
                };
                node.insert(parts[parts.len() - 1].to_owned(), value);
            }
            serde_json::Value::Object(root)
        };
        let file: FileConfig = serde_json::from_value(merged).unwrap();
        let mut got: Vec<&str> = file.settings().iter().map(|(p, _)| *p).collect();
        let mut expected: Vec<&str> = keys::KEYS.iter().map(|k| k.path).collect();
        expected.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, expected);
    }

    #[test]
    fn billion_laughs_is_rejected_quickly() {
        let mut yaml = String::from("a0: &a0 [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]\n");
        for i in 1..10 {
            let prev = format!("*a{}", i - 1);
            let refs = [prev.as_str(); 10].join(", ");
            yaml.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        yaml.push_str("port: *a9\n");
        let start = Instant::now();
        let result = FileConfig::from_yaml_str(&yaml);
        assert!(result.is_err());
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn deep_nesting_and_huge_input_are_rejected() {
        let deep = format!("port: {}1{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(FileConfig::from_yaml_str(&deep).is_err());
        let big = format!("host: \"{}\"", "x".repeat(MAX_FILE_BYTES));
        assert!(
            FileConfig::from_yaml_str(&big)
                .unwrap_err()
                .contains("larger than")
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A tiny deterministic fuzz loop; the fuzz target does this at scale.
        let pieces = [
            "a", ":", " ", "\n", "-", "[", "]", "{", "}", "&x", "*x", "!!str", "\"", "'", "#",
            "port", "limits", "<<", "?", ",", "|", ">", "\t", "0x", "~", "\u{feff}", "%YAML",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..3000 {
            let mut text = String::new();
            for _ in 0..(seed % 40) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                text.push_str(pieces[(seed % pieces.len() as u64) as usize]);
            }
            let _ = FileConfig::from_yaml_str(&text);
        }
    }
}
