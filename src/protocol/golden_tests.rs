//! Golden fixtures: `tests/fixtures/<from>_to_<to>/` holds
//! `<case>.request.json` (a `from` client request) or `<case>.response.json`
//! (a `from` answer) next to `<case>.expected.json`, the converted `to`
//! body. Generated ids and timestamps are normalised before comparing, so
//! the files stay stable. Run with `UPDATE_GOLDEN=1` to rewrite the
//! expected files after a deliberate change, then review the diff.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{Protocol, convert_request, convert_response, ids};

/// Model used for each target in the fixtures.
fn model_for(p: Protocol) -> &'static str {
    match p {
        Protocol::OpenAi => "gpt-4o",
        Protocol::Anthropic => "claude-sonnet-4-5",
        Protocol::Gemini => "gemini-2.5-pro",
        Protocol::Responses => "gpt-5-codex",
    }
}

fn proto(name: &str) -> Protocol {
    match name {
        "openai" => Protocol::OpenAi,
        "anthropic" => Protocol::Anthropic,
        "gemini" => Protocol::Gemini,
        "responses" => Protocol::Responses,
        other => panic!("unknown protocol {other} in fixture directory"),
    }
}

/// Replaces generated ids (`<prefix><24 hex>`) with `<prefix>*` and
/// timestamps with 0.
pub fn normalise(v: &mut Value) {
    match v {
        Value::String(s) => {
            for prefix in [
                "chatcmpl-",
                "msg_",
                "call_",
                "toolu_",
                "resp_",
                "fc_",
                "rs_",
            ] {
                if let Some(tail) = s.strip_prefix(prefix)
                    && tail.len() == ids::TAIL_LEN
                    && tail.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    *s = format!("{prefix}*");
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalise),
        Value::Object(obj) => {
            for (k, child) in obj.iter_mut() {
                if (k == "created" && child.is_number()) || k == "created_at" {
                    *child = Value::from(0);
                } else {
                    normalise(child);
                }
            }
        }
        _ => {}
    }
}

fn read(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fixture_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[test]
fn golden_conversions() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut checked = 0;
    let mut failures = Vec::new();
    let mut dirs: Vec<PathBuf> = fs::read_dir(fixture_root())
        .expect("tests/fixtures exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains("_to_"))
        })
        .collect();
    dirs.sort();
    assert_eq!(dirs.len(), 12, "one directory per conversion direction");
    for dir in dirs {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some((from, to)) = name.split_once("_to_") else {
            continue;
        };
        let (from, to) = (proto(from), proto(to));
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .expect("readable fixture dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.sort();
        for input in files {
            let fname = input
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let (case, is_request) = if let Some(c) = fname.strip_suffix(".request.json") {
                (c.to_string(), true)
            } else if let Some(c) = fname.strip_suffix(".response.json") {
                (c.to_string(), false)
            } else {
                continue;
            };
            let body = read(&input);
            let mut got = if is_request {
                convert_request(from, to, &body, model_for(to), false)
            } else {
                convert_response(from, to, &body, model_for(to))
            }
            .unwrap_or_else(|e| panic!("{name}/{fname}: {}", e.message));
            normalise(&mut got);
            let expected_path = dir.join(format!("{case}.expected.json"));
            if update {
                let text = serde_json::to_string_pretty(&got).expect("serialisable") + "\n";
                fs::write(&expected_path, text).expect("writable fixture");
            } else if read(&expected_path) != got {
                failures.push(format!(
                    "{name}/{case}: got\n{}",
                    serde_json::to_string_pretty(&got).unwrap_or_default()
                ));
            }
            checked += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches:\n{}",
        failures.join("\n")
    );
    assert!(checked >= 30, "only {checked} fixtures found");
}
