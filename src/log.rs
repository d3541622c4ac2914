//! Structured log lines on stderr: lifecycle events and one access line
//! per request, as `key=value` text or JSON.
//!
//! A dozen lines of formatting do not justify a logging framework. Callers
//! pass only facts that are safe to print: nothing here ever receives an
//! API key, a token or (unless `--log-prompts`) a prompt.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::RwLock;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{LogFormat, LogLevel};
use crate::time::rfc3339;

static SETTINGS: RwLock<(LogLevel, LogFormat)> = RwLock::new((LogLevel::Info, LogFormat::Text));

/// Sets level and format for the whole process (also on SIGHUP reload).
pub fn configure(level: LogLevel, format: LogFormat) {
    if let Ok(mut s) = SETTINGS.write() {
        *s = (level, format);
    }
}

fn settings() -> (LogLevel, LogFormat) {
    SETTINGS
        .read()
        .map(|s| *s)
        .unwrap_or((LogLevel::Info, LogFormat::Text))
}

/// Whether lines of `level` are printed.
pub fn enabled(level: LogLevel) -> bool {
    level <= settings().0
}

/// Logs an error.
pub fn error(msg: &str) {
    event(LogLevel::Error, msg, &[]);
}

/// Logs a warning.
pub fn warn(msg: &str) {
    event(LogLevel::Warn, msg, &[]);
}

/// Logs a lifecycle event.
pub fn info(msg: &str) {
    event(LogLevel::Info, msg, &[]);
}

/// Logs a diagnostic.
pub fn debug(msg: &str) {
    event(LogLevel::Debug, msg, &[]);
}

/// A value in a log line.
#[derive(Debug, Clone, Copy)]
pub enum Field<'a> {
    /// Text, quoted when needed.
    Str(&'a str),
    /// A number.
    Num(u64),
    /// Seconds with microsecond precision: a proxy hop takes well under a millisecond.
    Secs(f64),
}

/// Logs `msg` with extra fields at `level`.
pub fn event(level: LogLevel, msg: &str, fields: &[(&str, Field<'_>)]) {
    let (max, format) = settings();
    if level > max {
        return;
    }
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let level_name = match level {
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
    };
    let mut line = String::with_capacity(160);
    match format {
        LogFormat::Text => {
            let _ = write!(line, "{} {level_name} {}", rfc3339(millis), text_value(msg));
            for (key, value) in fields {
                let _ = match value {
                    Field::Str(s) => write!(line, " {key}={}", text_value(s)),
                    Field::Num(n) => write!(line, " {key}={n}"),
                    Field::Secs(s) => write!(line, " {key}={s:.6}"),
                };
            }
        }
        LogFormat::Json => {
            let mut obj = serde_json::Map::new();
            obj.insert("ts".into(), rfc3339(millis).into());
            obj.insert("level".into(), level_name.into());
            obj.insert("msg".into(), msg.into());
            for (key, value) in fields {
                let v = match value {
                    Field::Str(s) => serde_json::Value::from(*s),
                    Field::Num(n) => serde_json::Value::from(*n),
                    Field::Secs(s) => serde_json::Value::from((s * 1e6).round() / 1e6),
                };
                obj.insert((*key).to_owned(), v);
            }
            line = serde_json::Value::Object(obj).to_string();
        }
    }
    line.push('\n');
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Quotes a text value when it contains spaces, quotes or control bytes,
/// so one log line stays one line whatever a client sent.
fn text_value(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'=')
    {
        std::borrow::Cow::Borrowed(s)
    } else {
        std::borrow::Cow::Owned(serde_json::Value::from(s).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_values_are_quoted_only_when_needed() {
        assert_eq!(text_value("gpt-4o"), "gpt-4o");
        assert_eq!(text_value("a b"), "\"a b\"");
        assert_eq!(text_value("x\ny"), "\"x\\ny\"");
        assert_eq!(text_value(""), "\"\"");
    }
}
