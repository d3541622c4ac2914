//! The `aiproxy` binary's command line: exit codes, messages, the feature
//! guide's config file, and the man page kept in step with `--help`.
//!
//! The man-page lint runs `mandoc`, which the test command installs
//! (`apt-get install mandoc`); a missing mandoc is a failure, not a skip.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use aiproxy::config::keys;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Runs the binary with `args` and a clean environment plus `env`.
fn run_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aiproxy"));
    cmd.args(args).env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run aiproxy")
}

fn run(args: &[&str]) -> Output {
    run_env(args, &[])
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn temp_config(yaml: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("aiproxy-cli-{}-{n}.yaml", std::process::id()));
    std::fs::write(&path, yaml).unwrap();
    path
}

fn fixture(name: &str) -> String {
    format!("{ROOT}/tests/fixtures/{name}")
}

#[test]
fn help_exits_zero_and_lists_options() {
    for arg in ["--help", "-h", "help"] {
        let out = run(&[arg]);
        assert_eq!(out.status.code(), Some(0), "{arg}");
        let text = stdout(&out);
        assert!(text.starts_with("Usage: aiproxy"), "{text}");
        assert!(
            text.contains("--check-config") && text.contains("(default 3000)"),
            "{text}"
        );
        assert!(stderr(&out).is_empty());
    }
}

#[test]
fn version_prints_the_package_version() {
    for arg in ["--version", "-V"] {
        let out = run(&[arg]);
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(stdout(&out), aiproxy::cli::version());
        assert!(
            stdout(&out).starts_with(&format!(
                "aiproxy {} (features: ",
                env!("CARGO_PKG_VERSION")
            )),
            "{}",
            stdout(&out)
        );
    }
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let out = run(&["--bogus"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("Unrecognized argument: --bogus"), "{err}");
    assert!(err.contains("aiproxy --help"), "{err}");
    assert!(stdout(&out).is_empty());
}

#[test]
fn bad_value_exits_two_naming_the_flag() {
    let out = run(&["--port", "abc", "--check-config"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "aiproxy: --port: \"abc\" is not a port number (0-65535)\n"
    );
    let out = run_env(&["--check-config"], &[("AIPROXY_WORKERS", "0")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("AIPROXY_WORKERS: 0 is out of range"),
        "{}",
        stderr(&out)
    );
    let out = run(&["--header-timeout=soon", "--check-config"]);
    assert!(stderr(&out).contains("--header-timeout: \"soon\" is not a duration"));
}

#[test]
fn port_accepts_both_spellings() {
    for args in [
        &["--port=3001", "--check-config"][..],
        &["--port", "3001", "--check-config"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), "configuration OK\n");
    }
}

#[test]
fn log_prompts_is_a_switch() {
    for args in [
        &["--log-prompts", "--check-config"][..],
        &["--log-prompts=false", "--check-config"],
        &["--log-prompts", "true", "--check-config"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    }
    let out = run(&["--log-prompts=maybe"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--log-prompts"), "{}", stderr(&out));
}

#[test]
fn feature_guide_config_checks_ok() {
    let path = fixture("feature-guide-config.yaml");
    // The guide enables openai-custom and claude-custom but, rightly, keeps
    // their keys out of the file; they come from the environment.
    // Its OAuth providers read their logins from the home directory, as
    // start does: without them the check fails like start would.
    let home = oauth_home();
    let home = home.to_str().unwrap();
    let keys = [
        ("AIPROXY_OPENAI_API_KEY", "sk-test"),
        ("AIPROXY_CLAUDE_API_KEY", "ck-test"),
        ("HOME", home),
    ];
    let out = run_env(&["--config", &path, "--check-config"], &keys);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "configuration OK\n");
    let err = stderr(&out);
    assert!(
        !err.contains("not available in this version"),
        "every key of the guide is live: {err}"
    );
    assert!(
        !err.contains("sk-test") && !err.contains("your-secret-key"),
        "{err}"
    );

    let via_env = run_env(
        &["--check-config"],
        &[("AIPROXY_CONFIG", &path), keys[0], keys[1], keys[2]],
    );
    assert_eq!(via_env.status.code(), Some(0), "{}", stderr(&via_env));

    let no_logins = run_env(&["--config", &path, "--check-config"], &keys[..2]);
    assert_eq!(no_logins.status.code(), Some(2));
    assert!(
        stderr(&no_logins).contains(".gemini/oauth_creds.json"),
        "{}",
        stderr(&no_logins)
    );

    let out = run(&["--config", &path, "--check-config"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("set --openai-api-key"),
        "{}",
        stderr(&out)
    );
}

/// A home directory holding a Gemini CLI, Kiro IDE and Qwen Code login.
fn oauth_home() -> PathBuf {
    let home = temp_config("").with_extension("home");
    for (file, json) in [
        (
            ".gemini/oauth_creds.json",
            r#"{"access_token":"a","refresh_token":"r","expiry_date":1}"#,
        ),
        (
            ".aws/sso/cache/kiro-auth-token.json",
            r#"{"accessToken":"a","refreshToken":"r","expiresAt":"2020-01-01T00:00:00Z","authMethod":"social","region":"us-east-1"}"#,
        ),
        (
            ".qwen/oauth_creds.json",
            r#"{"access_token":"a","refresh_token":"r","expiry_date":1}"#,
        ),
    ] {
        let path = home.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, json).unwrap();
    }
    home
}

#[test]
fn check_config_fails_where_start_would_fail() {
    // A provider whose login file is missing cannot start; the check used
    // to approve it because it never built the providers.
    let out = run(&[
        "--model-provider",
        "gemini-cli",
        "--gemini-oauth-creds-file",
        "/nonexistent/oauth_creds.json",
        "--check-config",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
    let err = stderr(&out);
    assert!(
        err.starts_with("aiproxy: ") && err.contains("/nonexistent/oauth_creds.json"),
        "{err}"
    );
    // The metrics port on the main port cannot be bound twice.
    let out = run(&["--port", "3999", "--metrics-port", "3999", "--check-config"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("metrics.port"), "{}", stderr(&out));
}

#[test]
fn typo_in_config_key_exits_two_naming_it() {
    let path = temp_config("port: 3000\nlimits:\n  header_timout: 5s\n");
    let out = run(&["--config", path.to_str().unwrap(), "--check-config"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.starts_with("aiproxy: "), "{err}");
    assert!(err.contains("unknown field `header_timout`"), "{err}");
    assert!(err.contains("line 3"), "{err}");
    assert!(stdout(&out).is_empty());
}

#[test]
fn bad_config_value_names_file_and_key() {
    let path = temp_config("upstream:\n  timeout: forever\n");
    let path = path.to_str().unwrap();
    let out = run(&["--config", path, "--check-config"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!(
            "aiproxy: {path}: upstream.timeout: \"forever\" is not a duration (seconds, or a \
             number with a unit: 500ms, 30s, 5m, 1h)\n"
        )
    );
}

#[test]
fn unknown_environment_variable_is_a_warning() {
    let out = run_env(&["--check-config"], &[("AIPROXY_PROT", "1")]);
    assert_eq!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(
        err.contains(" warn ") && err.contains("AIPROXY_PROT is not a known setting"),
        "{err}"
    );
    // The warning follows --log-format like every other line.
    let out = run_env(
        &["--check-config", "--log-format", "json"],
        &[("AIPROXY_PROT", "1")],
    );
    for line in stderr(&out).lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["level"], "warn");
    }
}

#[test]
fn public_listener_without_key_is_refused() {
    let out = run(&["--host", "0.0.0.0", "--check-config"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "aiproxy: refusing to listen on 0.0.0.0:3000 without --api-key; pass \
         --insecure-no-auth to allow\n"
    );
    let out = run(&["--host", "0.0.0.0", "--insecure-no-auth", "--check-config"]);
    assert_eq!(out.status.code(), Some(0));
}

// ---- man page ----------------------------------------------------------

/// Every `--word-word` token of `text`.
fn long_flags(text: &str) -> BTreeSet<String> {
    let (b, mut out, mut i) = (text.as_bytes(), BTreeSet::new(), 0);
    while i + 2 < b.len() {
        let boundary = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'-');
        if boundary && b[i] == b'-' && b[i + 1] == b'-' && b[i + 2].is_ascii_lowercase() {
            let mut j = i + 2;
            while j < b.len()
                && (b[j].is_ascii_lowercase() || b[j].is_ascii_digit() || b[j] == b'-')
            {
                j += 1;
            }
            out.insert(text[i..j].trim_end_matches('-').to_string());
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

fn man_source() -> String {
    std::fs::read_to_string(format!("{ROOT}/man/aiproxy.1")).unwrap()
}

/// The page with roff escapes for dashes and fonts removed.
fn man_text() -> String {
    man_source()
        .replace("\\-", "-")
        .replace("\\fB", "")
        .replace("\\fI", "")
        .replace("\\fR", "")
        .replace("\\fP", "")
}

#[test]
fn man_page_documents_every_flag() {
    let help = stdout(&run(&["--help"]));
    let (h, m) = (long_flags(&help), long_flags(&man_text()));
    let missing: Vec<_> = h.difference(&m).collect();
    let stale: Vec<_> = m.difference(&h).collect();
    assert!(
        missing.is_empty(),
        "flags in --help but not in man page: {missing:?}"
    );
    assert!(
        stale.is_empty(),
        "flags in man page but not in --help: {stale:?}"
    );
    let roff = man_source();
    for s in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "CONFIGURATION FILE",
        "ENVIRONMENT",
        "ENDPOINTS",
        "SIGNALS",
        "FILES",
        "EXIT STATUS",
        "EXAMPLES",
        "SEE ALSO",
    ] {
        assert!(roff.contains(&format!(".SH {s}\n")), "missing section {s}");
    }
}

/// The long flags of each entry of `--help`'s option list (`-V,
/// --version` gives `--version`).
fn help_entries(help: &str) -> BTreeSet<String> {
    let options = help
        .split("\nOptions:\n")
        .nth(1)
        .expect("an Options: list in --help");
    let list = options.split("\n\n").next().unwrap_or_default();
    list.lines()
        .filter(|l| l.starts_with("  -"))
        .flat_map(|l| long_flags(l.trim_start().split("  ").next().unwrap_or_default()))
        .collect()
}

/// The long flags of each entry of the man page's OPTIONS section: the
/// tag line after every `.TP`.
fn man_option_entries(roff: &str) -> BTreeSet<String> {
    let section = roff
        .split("\n.SH OPTIONS\n")
        .nth(1)
        .expect("an OPTIONS section")
        .split("\n.SH ")
        .next()
        .unwrap_or_default();
    let lines: Vec<&str> = section.lines().collect();
    lines
        .windows(2)
        .filter(|w| w[0] == ".TP")
        .flat_map(|w| long_flags(&w[1].replace("\\-", "-")))
        .collect()
}

/// Every option of `--help` has an entry of its own in the man page's
/// OPTIONS, and every entry there is an option of `--help`: a flag only
/// mentioned in passing, or an entry that lost its `.TP` and runs into
/// the one before, does not count.
#[test]
fn man_page_options_and_help_list_the_same_flags() {
    let help = help_entries(&stdout(&run(&["--help"])));
    let man = man_option_entries(&man_source());
    assert!(help.len() > 50 && help.contains("--version"), "{help:?}");
    let missing: Vec<_> = help.difference(&man).collect();
    let extra: Vec<_> = man.difference(&help).collect();
    assert!(
        missing.is_empty(),
        "options in --help without an entry in the man page's OPTIONS: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "entries in the man page's OPTIONS that --help does not list: {extra:?}"
    );
}

// ---- the packaged configuration file --------------------------------------

fn packaged_config() -> String {
    std::fs::read_to_string(format!("{ROOT}/packaging/config.yaml")).unwrap()
}

/// packaging/config.yaml with its commented settings switched on: a
/// comment whose text starts (after indentation) with `key:` or `- ` is a
/// setting, any other comment is prose.
fn uncommented(yaml: &str) -> String {
    yaml.lines()
        .map(|line| {
            let indent = line.len() - line.trim_start().len();
            let Some(rest) = line[indent..].strip_prefix("# ") else {
                return line.to_owned();
            };
            let text = rest.trim_start();
            let key = text
                .split_once(':')
                .filter(|(k, v)| {
                    k.starts_with(|c: char| c.is_ascii_lowercase())
                        && k.chars().all(|c| {
                            c.is_ascii_lowercase() || c.is_ascii_digit() || "_.*-".contains(c)
                        })
                        && (v.is_empty() || v.starts_with(' '))
                })
                .is_some();
            if key || text.starts_with("- ") {
                format!("{}{rest}", &line[..indent])
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The dotted paths of the keys of an indented YAML text (two spaces a
/// level; list items and comments skipped).
fn yaml_paths(yaml: &str) -> BTreeSet<String> {
    let mut stack: Vec<String> = Vec::new();
    let mut paths = BTreeSet::new();
    for line in yaml.lines() {
        let text = line.trim_start();
        if text.is_empty() || text.starts_with('#') || text.starts_with("- ") {
            continue;
        }
        let Some((key, _)) = text.split_once(':') else {
            continue;
        };
        let depth = (line.len() - text.len()) / 2;
        stack.truncate(depth);
        stack.push(key.to_owned());
        paths.insert(stack.join("."));
    }
    paths
}

/// The .deb's /etc/aiproxy/config.yaml names every key, most of them
/// commented; the test reads the commented ones as settings.
#[test]
fn packaged_config_names_every_key() {
    let paths = yaml_paths(&uncommented(&packaged_config()));
    let missing: Vec<&str> = keys::KEYS
        .iter()
        .map(|k| k.path)
        .filter(|p| !paths.contains(*p))
        .collect();
    assert!(
        missing.is_empty(),
        "keys missing from packaging/config.yaml (add them, commented): {missing:?}"
    );
}

/// As shipped, and with every commented setting switched on, the file
/// passes --check-config: no unknown key, no value of the wrong type. To
/// switch everything on, the example pools file is replaced by a fixture
/// and the providers the example model routes name are enabled.
#[test]
fn packaged_config_checks_ok_as_shipped_and_uncommented() {
    let home = std::env::temp_dir();
    let home = home.to_str().unwrap();
    let shipped = temp_config(&packaged_config());
    let out = run_env(
        &["--config", shipped.to_str().unwrap(), "--check-config"],
        &[("HOME", home)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let all = uncommented(&packaged_config())
        .replace(
            "/etc/aiproxy/provider_pools.json",
            &fixture("pools/provider_pools.json"),
        )
        .replace(
            "model_providers:\n  - mock\n",
            "model_providers:\n  - mock\n  - openai-custom\n  - claude-custom\n",
        );
    assert!(all.contains("  - claude-custom\n"), "{all}");
    let everything = temp_config(&all);
    let out = run_env(
        &["--config", everything.to_str().unwrap(), "--check-config"],
        &[("HOME", home)],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "packaging/config.yaml with every setting uncommented:\n{}\n{all}",
        stderr(&out)
    );
}

#[test]
fn man_page_documents_every_config_key_and_variable() {
    let man = man_text();
    for key in keys::KEYS {
        assert!(
            man.contains(key.path),
            "config key {} missing from man page",
            key.path
        );
        let var = keys::env_name(key.path);
        assert!(man.contains(&var), "{var} missing from man page");
    }
    for (alias, _) in keys::ENV_ALIASES {
        assert!(man.contains(alias), "{alias} missing from man page");
    }
    assert!(man.contains(keys::CONFIG_ENV));
}

#[test]
fn man_page_documents_the_endpoints() {
    let man = man_text();
    for endpoint in [
        "GET /health",
        "POST /v1/chat/completions",
        "POST /v1/responses",
        "GET /v1/models",
        "POST /v1/messages",
        "POST /v1/messages/count_tokens",
        "GET /v1beta/models",
        ":generateContent",
        ":streamGenerateContent",
        "alt=sse",
        "/kiro-api/v1/messages",
    ] {
        assert!(man.contains(endpoint), "{endpoint} missing from man page");
    }
}

#[test]
fn man_page_passes_mandoc_and_groff() {
    let page = format!("{ROOT}/man/aiproxy.1");
    let mandoc = Command::new("mandoc")
        .args(["-T", "lint", "-W", "style", &page])
        .output()
        .expect("mandoc must be installed (apt-get install mandoc)");
    assert!(
        mandoc.status.success(),
        "mandoc -T lint -W style:\n{}{}",
        stdout(&mandoc),
        stderr(&mandoc)
    );
    let groff = Command::new("groff")
        .args(["-ww", "-z", "-man", &page])
        .output()
        .expect("groff must be installed");
    assert!(groff.stderr.is_empty(), "groff -ww:\n{}", stderr(&groff));
}

#[test]
fn man_page_version_matches_the_package() {
    let roff = man_source();
    let th = roff.lines().find(|l| l.starts_with(".TH ")).unwrap();
    assert!(
        th.contains(&format!("\"aiproxy {}\"", env!("CARGO_PKG_VERSION"))),
        "{th}"
    );
}
