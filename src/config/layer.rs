//! Raw settings before validation: each key's text and where it came
//! from. Sources are applied in precedence order (file, environment,
//! flags); a later source replaces a key wholesale.

use std::collections::BTreeMap;
use std::fmt;

/// A raw value as a source gave it.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    /// One value (lists and maps from the environment and flags arrive
    /// as text too and are split by the key's kind).
    Text(String),
    /// A YAML list.
    List(Vec<String>),
    /// A YAML mapping of text to text.
    Map(Vec<(String, String)>),
}

impl fmt::Debug for Value {
    /// Values may be secrets; only their shape is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(_) => f.write_str("Text(..)"),
            Self::List(v) => write!(f, "List({} items)", v.len()),
            Self::Map(v) => write!(f, "Map({} entries)", v.len()),
        }
    }
}

/// Where a setting came from; names it in error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The config file, by the path it was given as.
    File(String),
    /// An environment variable, by name.
    Env(String),
    /// A command-line flag.
    Flag(&'static str),
}

impl Source {
    /// How an error about key `path` from this source is introduced:
    /// `config.yaml: limits.header_timeout`, `AIPROXY_WORKERS`, `--port`.
    pub fn describe(&self, path: &str) -> String {
        match self {
            Self::File(file) => format!("{file}: {path}"),
            Self::Env(var) => var.clone(),
            Self::Flag(flag) => (*flag).to_owned(),
        }
    }
}

/// One key's winning value.
#[derive(Clone, Debug)]
pub struct Setting {
    /// The value.
    pub value: Value,
    /// Its source.
    pub source: Source,
}

/// Settings by key path; later [`Layer::set`] calls win.
#[derive(Debug, Default)]
pub struct Layer {
    settings: BTreeMap<&'static str, Setting>,
}

impl Layer {
    /// Sets `path`, replacing any value from an earlier source.
    pub fn set(&mut self, path: &'static str, value: Value, source: Source) {
        self.settings.insert(path, Setting { value, source });
    }

    /// The value of `path`, if any source set it.
    pub fn get(&self, path: &str) -> Option<&Setting> {
        self.settings.get(path)
    }
}
