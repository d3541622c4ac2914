use super::*;
use crate::config::Config;

fn json(text: &str) -> Result<PoolsFile, String> {
    parse(text, Format::Json)
}

fn yaml(text: &str) -> Result<PoolsFile, String> {
    parse(text, Format::Yaml)
}

/// A file as the original's editor writes it: long ids, bookkeeping
/// fields, nulls for unset keys, providers aiproxy does not have.
const ORIGINAL_JSON: &str = include_str!("../../tests/fixtures/pools/provider_pools.json");

/// The same pools in YAML, as an aiproxy user would write them.
const SAME_IN_YAML: &str = include_str!("../../tests/fixtures/pools/provider_pools.yaml");

#[test]
fn the_originals_file_loads() {
    let file = json(ORIGINAL_JSON).unwrap();
    let kinds: Vec<ProviderKind> = file.pools.iter().map(|p| p.kind).collect();
    assert_eq!(
        kinds,
        [
            ProviderKind::OpenAiCustom,
            ProviderKind::GeminiCli,
            ProviderKind::ClaudeCustom,
            ProviderKind::KiroApi,
            ProviderKind::QwenApi
        ]
    );
    let openai = &file.pool(ProviderKind::OpenAiCustom).unwrap().members;
    assert_eq!(openai.len(), 2);
    let first = &openai[0];
    assert_eq!(first.uuid, "2f579c65-d3c5-41b1-9985-9f6e3d7bf39c");
    assert_eq!(first.name(), "OpenAI 节点1");
    assert_eq!(
        (first.weight, first.disabled, first.check_model.as_deref()),
        (1, false, None)
    );
    assert_eq!(first.models.not_supported, ["gpt-4-turbo"]);
    let Overrides::OpenAi(o) = &first.overrides else {
        panic!("{:?}", first.overrides)
    };
    assert_eq!(
        o.api_key.as_ref().map(Secret::expose),
        Some("sk-openai-key1")
    );
    assert_eq!(
        o.base_url.as_deref(),
        Some("https://api.openai.com/v1"),
        "no trailing /"
    );
    let second = &openai[1];
    assert_eq!((second.weight, second.disabled), (3, true));
    assert_eq!(second.name(), second.uuid, "no customName: the uuid");

    let gemini = &file.pool(ProviderKind::GeminiCli).unwrap().members[0];
    assert_eq!(gemini.check_model.as_deref(), Some("gemini-2.5-flash"));
    assert_eq!(
        gemini.models.supported,
        ["gemini-2.5-flash", "gemini-2.5-pro"]
    );
    assert_eq!(
        gemini.overrides,
        Overrides::GeminiCli(GeminiOverrides {
            oauth_creds_file: Some("./credentials1.json".into()),
            project_id: Some("your-project-id-1".into()),
            base_url: None,
        })
    );
    let qwen = &file.pool(ProviderKind::QwenApi).unwrap().members[0];
    assert_eq!(qwen.custom_name, None, "an empty customName is unset");
    assert_eq!(
        qwen.overrides.creds_file(),
        Some(Path::new("./qwen_creds.json"))
    );
    assert_eq!(file.warnings.len(), 1, "{:?}", file.warnings);
    assert!(file.warnings[0].contains("gemini-antigravity"));
}

#[test]
fn yaml_and_json_give_the_same_pools() {
    assert_eq!(yaml(SAME_IN_YAML).unwrap(), json(ORIGINAL_JSON).unwrap());
}

#[test]
fn short_ids_and_mock_members_are_accepted() {
    let file = yaml(
        "gemini-cli: [{uuid: g1, GEMINI_OAUTH_CREDS_FILE_PATH: /a.json}]\n\
         kiro-api: [{uuid: k1}]\nqwen-api: []\nmock: [{uuid: m1, weight: 2}, {uuid: m2}]\n",
    )
    .unwrap();
    assert_eq!(file.pools.len(), 4);
    let mock = file.pool(ProviderKind::Mock).unwrap();
    assert_eq!(mock.members[0].overrides, Overrides::Mock);
    assert_eq!(mock.members[0].weight, 2);
    assert!(file.pool(ProviderKind::QwenApi).unwrap().members.is_empty());
    assert!(json("{}").unwrap().pools.is_empty());
}

#[test]
fn balancer_settings_carry_identity_weight_and_filters() {
    let file = json(ORIGINAL_JSON).unwrap();
    let m = &file.pool(ProviderKind::OpenAiCustom).unwrap().members[0];
    let s = m.balancer_settings();
    assert_eq!(s.kind, ProviderKind::OpenAiCustom);
    assert_eq!(s.id, m.uuid);
    assert_eq!(s.name, "OpenAI 节点1");
    assert_eq!((s.weight, s.disabled), (1, false));
    assert!(!s.models.allows("gpt-4-turbo") && s.models.allows("gpt-4o"));
}

#[test]
fn overrides_apply_over_the_configured_provider() {
    let base = Config::default();
    let file = json(ORIGINAL_JSON).unwrap();
    let member = |kind| &file.pool(kind).unwrap().members[0].overrides;
    let Overrides::OpenAi(o) = member(ProviderKind::OpenAiCustom) else {
        panic!()
    };
    let openai = o.openai(&base.openai);
    assert_eq!(openai.api_key.unwrap().expose(), "sk-openai-key1");
    assert_eq!(openai.base_url, "https://api.openai.com/v1");
    let Overrides::Claude(c) = member(ProviderKind::ClaudeCustom) else {
        panic!()
    };
    assert_eq!(
        c.claude(&base.claude).api_key.unwrap().expose(),
        "sk-claude-key1"
    );
    let Overrides::GeminiCli(g) = member(ProviderKind::GeminiCli) else {
        panic!()
    };
    let gemini = g.apply(&base.gemini);
    assert_eq!(gemini.project_id.as_deref(), Some("your-project-id-1"));
    assert_eq!(
        gemini.base_url, base.gemini.base_url,
        "unset keys keep the config's"
    );
    assert_eq!(gemini.client_id, base.gemini.client_id);
    let Overrides::Kiro(k) = member(ProviderKind::KiroApi) else {
        panic!()
    };
    let kiro = k.kiro(&base.kiro);
    assert_eq!(
        kiro.oauth_creds_file,
        Some(PathBuf::from("./kiro_creds1.json"))
    );
    assert_eq!(kiro.base_url, base.kiro.base_url);
    let Overrides::Qwen(q) = member(ProviderKind::QwenApi) else {
        panic!()
    };
    assert_eq!(q.qwen(&base.qwen).base_url, base.qwen.base_url);
    let with_url = OAuthOverrides {
        oauth_creds_file: None,
        base_url: Some("http://127.0.0.1:9/v1".into()),
    };
    assert_eq!(
        with_url.qwen(&base.qwen).base_url.as_deref(),
        Some("http://127.0.0.1:9/v1")
    );
    assert_eq!(
        with_url.qwen(&base.qwen).oauth_creds_file,
        base.qwen.oauth_creds_file
    );
    // An unset key keeps the configured one.
    let none = ApiKeyOverrides::default();
    let mut configured = base.openai.clone();
    configured.api_key = Some(Secret::new("sk-global"));
    assert_eq!(
        none.openai(&configured).api_key.unwrap().expose(),
        "sk-global"
    );
}

/// Asserts that `text` fails in both formats (the YAML made by
/// `to_yaml`), with every needle in each message.
fn fails(text: &str, needles: &[&str]) {
    let err = json(text).unwrap_err();
    for n in needles {
        assert!(err.contains(n), "JSON {text}: {err:?} lacks {n:?}");
    }
    assert!(!err.contains('\n'), "{err}");
    // JSON is YAML (flow style), so the YAML reader sees the same file.
    let err = yaml(text).unwrap_err();
    for n in needles {
        assert!(err.contains(n), "YAML {text}: {err:?} lacks {n:?}");
    }
    assert!(!err.contains('\n'), "{err}");
}

#[test]
fn unknown_keys_name_the_member_the_key_and_the_position() {
    let text = "{\"gemini-cli-oauth\": [\n  {\"uuid\": \"g1\"},\n  {\"uuid\": \"g2\",\n   \"GEMINI_OAUTH_CREDS_FILE\": \"x\"}]}";
    fails(
        text,
        &[
            "gemini-cli-oauth[1] (uuid g2)",
            "unknown key \"GEMINI_OAUTH_CREDS_FILE\"",
            "GEMINI_OAUTH_CREDS_FILE_PATH",
            "line ",
        ],
    );
    let err = json(text).unwrap_err();
    assert!(err.starts_with("line 4 column "), "{err}");
    // Before the uuid is read, the member is named by position alone.
    fails(
        r#"{"openai-custom": [{"nope": 1, "uuid": "a"}]}"#,
        &["openai-custom[0]: unknown key \"nope\""],
    );
}

#[test]
fn keys_of_other_providers_and_base64_credentials_are_refused() {
    fails(
        r#"{"claude-kiro-oauth": [{"uuid": "k", "OPENAI_API_KEY": "sk-x"}]}"#,
        &["OPENAI_API_KEY is a key of openai-custom members, not of kiro-api"],
    );
    fails(
        r#"{"gemini-cli-oauth": [{"uuid": "g", "GEMINI_OAUTH_CREDS_BASE64": "e30="}]}"#,
        &["not supported", "GEMINI_OAUTH_CREDS_FILE_PATH"],
    );
    fails(
        r#"{"claude-kiro-oauth": [{"uuid": "g", "KIRO_OAUTH_CREDS_BASE64": "e30="}]}"#,
        &["KIRO_OAUTH_CREDS_FILE_PATH"],
    );
}

#[test]
fn wrong_types_say_what_was_expected() {
    for (member, needles) in [
        (
            r#""weight": "3""#,
            &["weight: expected a whole number, found text"][..],
        ),
        (
            r#""weight": 0"#,
            &["weight: must be 1 to 10000", "isDisabled"],
        ),
        (r#""weight": 10001"#, &["weight: must be 1 to 10000"]),
        (r#""weight": -2"#, &["weight: must be 1"]),
        (
            r#""weight": 2.5"#,
            &["weight: expected a whole number, found a number"],
        ),
        (r#""weight": 99999999999999999999999"#, &["weight:"]),
        (
            r#""isDisabled": "yes""#,
            &["isDisabled: expected true or false, found text"],
        ),
        (
            r#""isDisabled": 1"#,
            &["isDisabled: expected true or false"],
        ),
        (
            r#""supportedModels": "gpt-4o""#,
            &["supportedModels: expected a list of model names, found text"],
        ),
        (
            r#""notSupportedModels": ["a", 3.5]"#,
            &["notSupportedModels: item 1: expected text"],
        ),
        (r#""notSupportedModels": ["a", ""]"#, &["item 1 is empty"]),
        (
            r#""customName": ["x"]"#,
            &["customName: expected text, found a list"],
        ),
        (
            r#""customName": {"a": 1}"#,
            &["customName: expected text, found a map"],
        ),
        (
            r#""checkModelName": true"#,
            &["checkModelName: expected text, found true/false"],
        ),
        (
            r#""OPENAI_BASE_URL": "api.openai.com""#,
            &["OPENAI_BASE_URL", "not an http:// or https:// URL"],
        ),
        (
            r#""OPENAI_API_KEY": {"k": "v"}"#,
            &["OPENAI_API_KEY: expected text, found a map"],
        ),
        (r#""customName": "a\u0007b""#, &["control characters"]),
    ] {
        let text = format!(r#"{{"openai-custom": [{{"uuid": "a", {member}}}]}}"#);
        let err = json(&text).unwrap_err();
        assert!(err.contains("openai-custom[0] (uuid a): "), "{err}");
        for n in needles {
            assert!(err.contains(n), "{member}: {err:?} lacks {n:?}");
        }
    }
    fails(
        r#"{"openai-custom": [{"uuid": true}]}"#,
        &["uuid: expected text, found true/false"],
    );
    fails(
        r#"{"openai-custom": [{"uuid": "has space"}]}"#,
        &["uuid: must be 1 to 128 letters"],
    );
    fails(
        r#"{"openai-custom": [{"uuid": ""}]}"#,
        &["uuid: must not be empty"],
    );
    fails(
        r#"{"openai-custom": [{"uuid": null}]}"#,
        &["uuid: must not be empty"],
    );
    fails(
        r#"{"openai-custom": {"uuid": "a"}}"#,
        &["expected openai-custom: a list of members"],
    );
    fails(
        r#"{"openai-custom": null}"#,
        &["expected openai-custom: a list of members"],
    );
    fails(
        r#"{"openai-custom": [7]}"#,
        &["expected openai-custom[0]: a member"],
    );
    fails(r#"[]"#, &["a map of provider id to a list of members"]);
    fails(r#""text""#, &["a map of provider id"]);
    fails(
        r#"{"gemini-cli-oauth": [{"uuid": "g", "PROJECT_ID": "default"}]}"#,
        &["PROJECT_ID: \"default\" is not a project id"],
    );
    // Numbers are fine where text is expected: a YAML project number.
    let file = yaml("gemini-cli: [{uuid: 7, PROJECT_ID: 123456}]").unwrap();
    let m = &file.pools[0].members[0];
    assert_eq!(m.uuid, "7");
    let Overrides::GeminiCli(g) = &m.overrides else {
        panic!()
    };
    assert_eq!(g.project_id.as_deref(), Some("123456"));
    // null and "" leave a key unset.
    let file = json(r#"{"openai-custom": [{"uuid": "a", "OPENAI_API_KEY": null, "OPENAI_BASE_URL": "", "weight": null, "isDisabled": null, "supportedModels": null}]}"#).unwrap();
    let m = &file.pools[0].members[0];
    assert_eq!(m.overrides, Overrides::OpenAi(ApiKeyOverrides::default()));
    assert_eq!((m.weight, m.disabled), (1, false));
}

#[test]
fn uuids_are_required_and_unique_across_the_file() {
    fails(
        r#"{"openai-custom": [{"OPENAI_API_KEY": "sk-a"}]}"#,
        &["openai-custom[0]: no uuid"],
    );
    fails(
        r#"{"openai-custom": [{"uuid": "a"}], "claude-custom": [{"uuid": "b"}, {"uuid": "a"}]}"#,
        &["claude-custom[1] (uuid a): uuid a is also the uuid of openai-custom[0]"],
    );
    fails(
        r#"{"openai-custom": [{"uuid": "a", "uuid": "b"}]}"#,
        &["uuid"],
    );
    assert!(
        json(r#"{"openai-custom": [{"uuid": "a", "uuid": "b"}]}"#)
            .unwrap_err()
            .contains("\"uuid\" appears twice")
    );
}

#[test]
fn providers_are_checked() {
    fails(
        r#"{"gemini-cli-oath": []}"#,
        &["unknown provider \"gemini-cli-oath\"", "gemini-cli-oauth"],
    );
    fails(
        r#"{"gemini-cli": [], "gemini-cli-oauth": []}"#,
        &["gemini-cli-oauth and gemini-cli name the same provider"],
    );
    let file =
        json(r#"{"openai-iflow": [{"anything": [1, {"x": null}]}], "grok-web": 7}"#).unwrap();
    assert!(file.pools.is_empty());
    assert_eq!(file.warnings.len(), 2);
}

#[test]
fn warnings_for_ignored_features_and_shared_credentials() {
    let file = json(
        r#"{"gemini-cli-oauth": [
            {"uuid": "a", "GEMINI_OAUTH_CREDS_FILE_PATH": "./same.json", "concurrencyLimit": 2},
            {"uuid": "b", "GEMINI_OAUTH_CREDS_FILE_PATH": "./same.json", "concurrencyLimit": 4, "queueLimit": 0}]}"#,
    )
    .unwrap();
    assert_eq!(file.warnings.len(), 2, "{:?}", file.warnings);
    assert!(file.warnings[0].contains("concurrencyLimit is not supported"));
    assert!(file.warnings[1].contains("members a and b share the credentials file ./same.json"));
    let quiet = json(
        r#"{"claude-kiro-oauth": [{"uuid": "a", "concurrencyLimit": 0, "queueLimit": null}]}"#,
    )
    .unwrap();
    assert!(quiet.warnings.is_empty());
}

#[test]
fn secrets_stay_out_of_debug_output_and_errors() {
    let file = json(ORIGINAL_JSON).unwrap();
    let debug = format!("{file:?}");
    assert!(
        !debug.contains("sk-openai-key1") && !debug.contains("sk-claude-key1"),
        "{debug}"
    );
    for text in [
        r#"{"openai-custom": [{"uuid": "a", "OPENAI_API_KEY": "sk-LEAK", "weight": "x"}]}"#,
        r#"{"openai-custom": [{"uuid": "a", "OPENAI_API_KEY": "sk-LEAK", "bogus": 1}]}"#,
        r#"{"openai-custom": [{"uuid": "a", "OPENAI_API_KEY": "sk-LEAK"}, {"uuid": "a"}]}"#,
        r#"{"openai-custom": [{"uuid": "a", "OPENAI_API_KEY": "sk-LEAK" "x": 1}]}"#,
        r#"{"openai-custom": [{"uuid": "a", "OPENAI_API_KEY": "sk-LEAK}]}"#,
        r#"{"openai-custom": [{"uuid": "a", "OPENAI_API_KEY": ["sk-LEAK"]}]}"#,
        r#"{"openai-custom": ["sk-LEAK"]}"#,
        r#"{"openai-custom": "sk-LEAK"}"#,
        r#""sk-LEAK""#,
    ] {
        for err in [json(text).unwrap_err(), yaml(text).unwrap_err()] {
            assert!(!err.contains("LEAK"), "{text}: {err}");
        }
    }
    let yaml_errors = [
        "openai-custom:\n  - uuid: a\n    OPENAI_API_KEY: sk-LEAK\n    weight: [1\n",
        "openai-custom:\n  - uuid: a\n    OPENAI_API_KEY: \"sk-LEAK\n",
        "openai-custom:\n  - uuid: a\n    OPENAI_API_KEY: sk-LEAK\n   bad indent: 1\n",
    ];
    for text in yaml_errors {
        let err = yaml(text).unwrap_err();
        assert!(
            !err.contains("LEAK") && !err.contains('\n'),
            "{text}: {err}"
        );
    }
}

#[test]
fn hostile_inputs_fail_cleanly() {
    // Over the size cap: refused before parsing.
    let big = format!(
        r#"{{"openai-custom": [{{"uuid": "a", "customName": "{}"}}]}}"#,
        "x".repeat(MAX_FILE_BYTES)
    );
    fails(&big, &["larger than"]);
    // Deep nesting: refused where a value is read; skipped without
    // recursion in a bookkeeping key by serde_json, refused there by the
    // YAML budget.
    for depth in [200, 20_000] {
        let nest = |key: &str| {
            format!(
                r#"{{"openai-custom": [{{"uuid": "a", "{key}": {}1{}}}]}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            )
        };
        for key in ["customName", "supportedModels"] {
            let err = json(&nest(key)).unwrap_err();
            assert!(err.contains("nested too deeply"), "{err}");
            assert!(yaml(&nest(key)).is_err());
        }
        assert!(json(&nest("isHealthy")).is_ok());
        assert!(yaml(&nest("isHealthy")).is_err());
    }
    // A long text value.
    let long = format!(
        r#"{{"openai-custom": [{{"uuid": "a", "customName": "{}"}}]}}"#,
        "n".repeat(600)
    );
    fails(&long, &["customName: longer than 512 bytes"]);
    // Too many members.
    let many: Vec<String> = (0..=MAX_MEMBERS)
        .map(|i| format!(r#"{{"uuid": "m{i}"}}"#))
        .collect();
    let text = format!(r#"{{"mock": [{}]}}"#, many.join(","));
    fails(&text, &["more than 1000 members"]);
    let just_enough = format!(r#"{{"mock": [{}]}}"#, many[..MAX_MEMBERS].join(","));
    assert_eq!(
        json(&just_enough).unwrap().pools[0].members.len(),
        MAX_MEMBERS
    );
    // Alias bombs.
    let mut bomb = String::from("a0: &a0 [\"lol\", \"lol\", \"lol\", \"lol\"]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        bomb.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    assert!(yaml(&bomb).is_err());
    // Two YAML documents, trailing JSON, empty files.
    assert!(yaml("mock: []\n---\nmock: []\n").is_err());
    assert!(json("{} {}").is_err());
    for empty in ["", "  \n"] {
        assert!(json(empty).unwrap_err().contains("empty file"));
        assert!(yaml(empty).unwrap_err().contains("empty file"));
    }
}

#[test]
fn arbitrary_inputs_never_panic() {
    let pieces = [
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        "\"",
        "uuid",
        "\"uuid\"",
        "mock",
        "\"mock\"",
        "weight",
        "1",
        "-",
        "\n",
        " ",
        "null",
        "true",
        "&a",
        "*a",
        "OPENAI_API_KEY",
        "gemini-cli",
        "\"openai-custom\"",
        "1e999",
        "\\u0000",
        "#",
        "!!str",
        "'",
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..4000 {
        let mut text = String::new();
        for _ in 0..(seed % 48) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            text.push_str(pieces[(seed % pieces.len() as u64) as usize]);
        }
        for format in [Format::Json, Format::Yaml] {
            if let Err(e) = parse(&text, format) {
                assert!(!e.contains('\n'), "{e}");
            }
        }
    }
}

#[test]
fn formats_come_from_the_extension() {
    assert_eq!(Format::of(Path::new("provider_pools.json")), Format::Json);
    assert_eq!(
        Format::of(Path::new("/etc/aiproxy/pools.yaml")),
        Format::Yaml
    );
    assert_eq!(Format::of(Path::new("pools.YML")), Format::Yaml);
    assert_eq!(Format::of(Path::new("pools")), Format::Json);
}

#[test]
fn read_names_the_file_and_caps_its_size() {
    let dir = std::env::temp_dir().join(format!("aiproxy-pools-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("pools.yaml");
    std::fs::write(&good, SAME_IN_YAML).unwrap();
    assert_eq!(read(&good).unwrap(), json(ORIGINAL_JSON).unwrap());
    let bad = dir.join("pools.json");
    std::fs::write(&bad, "{\"mock\": [{\"uuid\": \"a\", \"x\": 1}]}").unwrap();
    let err = read(&bad).unwrap_err();
    assert!(
        err.starts_with(&format!("{}: line 1 column", bad.display())),
        "{err}"
    );
    let big = dir.join("big.json");
    std::fs::write(&big, vec![b' '; MAX_FILE_BYTES + 10]).unwrap();
    assert!(read(&big).unwrap_err().contains("larger than"));
    let binary = dir.join("binary.json");
    std::fs::write(&binary, [0xff, 0xfe, b'{', b'}']).unwrap();
    assert!(read(&binary).unwrap_err().contains("not UTF-8"));
    let missing = read(&dir.join("missing.json")).unwrap_err();
    assert!(missing.contains("missing.json: cannot open"), "{missing}");
    std::fs::remove_dir_all(&dir).unwrap();
}
