//! Replays every fuzz corpus file and every named regression input
//! through the fuzz targets' own checks (`aiproxy::fuzzing`), so plain
//! `cargo test` catches regressions without cargo-fuzz.
//!
//! `fuzz/corpus/<target>/` holds the seeds (and anything worth keeping
//! from fuzz runs); `fuzz/regressions/<target>/<name>` holds inputs that
//! once crashed a target, named after the bug.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use aiproxy::fuzzing::{TARGETS, target};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn subdirs(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Runs every file of `kind/<target>/`; returns the failures.
fn replay(kind: &str, name: &str, failures: &mut Vec<String>) -> usize {
    let target = target(name).unwrap_or_else(|| panic!("fuzz/{kind}/{name}: no such target"));
    let inputs = files(&fuzz_dir().join(kind).join(name));
    for path in &inputs {
        let data = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if panic::catch_unwind(AssertUnwindSafe(|| (target.run)(&data))).is_err() {
            failures.push(path.display().to_string());
        }
    }
    inputs.len()
}

#[test]
fn every_target_has_a_corpus_and_every_corpus_a_target() {
    let dirs = subdirs(&fuzz_dir().join("corpus"));
    for t in TARGETS {
        assert!(
            dirs.iter().any(|d| d == t.name),
            "fuzz/corpus/{} is missing",
            t.name
        );
    }
    for kind in ["corpus", "regressions"] {
        for dir in subdirs(&fuzz_dir().join(kind)) {
            assert!(target(&dir).is_some(), "fuzz/{kind}/{dir}: no such target");
        }
    }
}

#[test]
fn corpus_replays_cleanly() {
    let mut failures = Vec::new();
    for t in TARGETS {
        let n = replay("corpus", t.name, &mut failures);
        assert!(n > 0, "fuzz/corpus/{} is empty", t.name);
    }
    assert!(failures.is_empty(), "inputs that fail: {failures:#?}");
}

#[test]
fn regressions_replay_cleanly() {
    let mut failures = Vec::new();
    for t in TARGETS {
        replay("regressions", t.name, &mut failures);
    }
    assert!(failures.is_empty(), "inputs that fail: {failures:#?}");
}
