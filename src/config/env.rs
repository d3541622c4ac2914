//! `AIPROXY_*` environment overrides.
//!
//! Every config key has an environment name: `AIPROXY_` plus its dotted
//! path in upper snake case (`limits.max_body_bytes` →
//! `AIPROXY_LIMITS_MAX_BODY_BYTES`); `AIPROXY_CONFIG` names the file.
//! Lists are comma-separated, `AIPROXY_MODEL_ROUTES` is
//! `model=provider,prefix*=provider`. The compose file's `NODE_ID`,
//! `REDIS_ADDR` and `SEED_NODES` are read as aliases; the `AIPROXY_*`
//! name wins when both are set.
//!
//! An empty variable counts as unset, so `AIPROXY_PORT=` in a unit or
//! compose file does not override the config file with an error.
//!
//! An unknown `AIPROXY_*` variable is a warning, not an error: the
//! environment is shared with other software and outlives upgrades and
//! downgrades (a variable for a newer release's key must not stop an
//! older binary from starting), whereas the config file is aiproxy's own
//! and is checked strictly.
//!
//! The environment is passed in as pairs, so tests never touch the
//! process environment.

use super::keys::{self, ENV_ALIASES, KEYS};
use super::layer::{Layer, Source, Value};

/// Applies the environment to `layer`; returns warnings about unknown
/// `AIPROXY_*` variables.
pub fn apply(env: &[(String, String)], layer: &mut Layer) -> Vec<String> {
    let mut warnings = Vec::new();
    // Aliases first, so that the AIPROXY_* name overrides them.
    for (alias, path) in ENV_ALIASES {
        if let Some((name, value)) = env.iter().find(|(n, v)| n == alias && !v.is_empty())
            && let Some(key) = keys::find(path)
        {
            layer.set(
                key.path,
                Value::Text(value.clone()),
                Source::Env(name.clone()),
            );
        }
    }
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("AIPROXY_") else {
            continue;
        };
        if name == keys::CONFIG_ENV {
            continue;
        }
        match KEYS.iter().find(|k| keys::env_name(k.path) == *name) {
            Some(_) if value.is_empty() => {}
            Some(key) => layer.set(
                key.path,
                Value::Text(value.clone()),
                Source::Env(name.clone()),
            ),
            None => warnings.push(unknown(name, rest)),
        }
    }
    warnings
}

/// The config file named by `AIPROXY_CONFIG`, if set and not empty.
pub fn config_file(env: &[(String, String)]) -> Option<String> {
    env.iter()
        .find(|(n, v)| n == keys::CONFIG_ENV && !v.is_empty())
        .map(|(_, v)| v.clone())
}

fn unknown(name: &str, rest: &str) -> String {
    let near = KEYS
        .iter()
        .map(|k| keys::env_name(k.path))
        .chain([keys::CONFIG_ENV.to_owned()])
        .map(|known| (distance(rest, &known["AIPROXY_".len()..]), known))
        .filter(|(d, _)| *d <= 2)
        .min();
    match near {
        Some((_, known)) => {
            format!("{name} is not a known setting (did you mean {known}?); ignored")
        }
        None => format!("{name} is not a known setting; ignored"),
    }
}

/// Levenshtein distance, for "did you mean" hints on short names.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    fn text(layer: &Layer, path: &str) -> Option<(String, Source)> {
        layer.get(path).map(|s| match &s.value {
            Value::Text(t) => (t.clone(), s.source.clone()),
            other => panic!("{other:?}"),
        })
    }

    #[test]
    fn every_key_has_an_env_name() {
        let mut layer = Layer::default();
        let vars: Vec<(String, String)> = KEYS
            .iter()
            .map(|k| (keys::env_name(k.path), "v".to_owned()))
            .collect();
        assert!(apply(&vars, &mut layer).is_empty());
        for key in KEYS {
            assert!(layer.get(key.path).is_some(), "{}", key.path);
        }
    }

    #[test]
    fn known_unknown_and_unrelated_variables() {
        let mut layer = Layer::default();
        let warnings = apply(
            &env(&[
                ("AIPROXY_PORT", "1"),
                ("AIPROXY_LIMITS_MAX_BODY_BYTES", "2"),
                ("AIPROXY_MODEL_PROVIDER", "mock"),
                ("AIPROXY_FROBNICATE", "x"),
                ("AIPROXY_CONFIG", "/x.yaml"),
                ("PATH", "/bin"),
            ]),
            &mut layer,
        );
        assert_eq!(
            text(&layer, "port"),
            Some(("1".into(), Source::Env("AIPROXY_PORT".into())))
        );
        assert_eq!(text(&layer, "limits.max_body_bytes").unwrap().0, "2");
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].contains("did you mean AIPROXY_MODEL_PROVIDERS?"),
            "{warnings:?}"
        );
        assert!(warnings[1].starts_with("AIPROXY_FROBNICATE is not a known setting"));
    }

    #[test]
    fn empty_variables_are_unset() {
        let mut layer = Layer::default();
        apply(&env(&[("AIPROXY_PORT", ""), ("NODE_ID", "")]), &mut layer);
        assert!(layer.get("port").is_none());
        assert!(layer.get("cluster.node_id").is_none());
        assert_eq!(config_file(&env(&[("AIPROXY_CONFIG", "")])), None);
        assert_eq!(
            config_file(&env(&[("AIPROXY_CONFIG", "a")])),
            Some("a".into())
        );
    }

    #[test]
    fn compose_aliases_yield_to_aiproxy_names() {
        let mut layer = Layer::default();
        apply(
            &env(&[
                ("NODE_ID", "n1"),
                ("REDIS_ADDR", "redis:6379"),
                ("SEED_NODES", "a:1,b:2"),
                ("AIPROXY_CLUSTER_NODE_ID", "n2"),
            ]),
            &mut layer,
        );
        assert_eq!(
            text(&layer, "cluster.node_id"),
            Some(("n2".into(), Source::Env("AIPROXY_CLUSTER_NODE_ID".into())))
        );
        assert_eq!(
            text(&layer, "redis.addr"),
            Some(("redis:6379".into(), Source::Env("REDIS_ADDR".into())))
        );
        assert_eq!(text(&layer, "cluster.seed_nodes").unwrap().0, "a:1,b:2");
    }

    #[test]
    fn edit_distance() {
        assert_eq!(distance("PORT", "PORT"), 0);
        assert_eq!(distance("PROT", "PORT"), 2);
        assert_eq!(distance("", "ab"), 2);
    }
}
