//! Reading the sources (config file, environment, flags) into one
//! [`Layer`] in precedence order, then resolving it.

use std::path::PathBuf;

use super::file::FileConfig;
use super::layer::{Layer, Source, Value};
use super::resolve::Resolver;
use super::{Config, ConfigError, env, keys};
use crate::cli::Cli;

impl Config {
    /// Builds the configuration from built-in defaults < the config file
    /// (`--config`, else `AIPROXY_CONFIG`) < the `AIPROXY_*` environment
    /// `env` < the flags in `cli`, and validates it once.
    ///
    /// `env` is the process environment as pairs (`std::env::vars()`),
    /// passed in so that tests need not change the real one.
    pub fn load(cli: &Cli, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let mut layer = Layer::default();
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        let config_file = cli.config.clone().or_else(|| env::config_file(env));
        if let Some(path) = &config_file {
            match FileConfig::read(path) {
                Ok(file) => {
                    let settings = file.settings();
                    warnings.extend(exposed_secrets(path, settings.iter().map(|(k, _)| *k)));
                    for (key, value) in settings {
                        layer.set(key, value, Source::File(path.clone()));
                    }
                }
                Err(err) => problems.push(format!("{path}: {err}")),
            }
        }
        warnings.extend(env::apply(env, &mut layer));
        apply_flags(cli, &mut layer);
        let mut resolver = Resolver { layer, problems };
        let mut config = resolver.resolve();
        if !resolver.problems.is_empty() {
            return Err(ConfigError::new(resolver.problems));
        }
        config.config_file = config_file.map(PathBuf::from);
        warnings.append(&mut config.warnings);
        config.warnings = warnings;
        Ok(config)
    }
}

/// Config keys whose values are credentials.
pub(super) fn is_secret(key: &str) -> bool {
    key.ends_with("api_key") || key.ends_with("password") || key.ends_with("secret")
}

/// A warning when the config file holds credentials and every user of
/// the host may read it. Not an error: the package installs the file
/// 0640 root:aiproxy, and refusing to start over a mode would turn a
/// hardening hint into an outage.
fn exposed_secrets<'a>(path: &str, keys: impl Iterator<Item = &'a str>) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let secrets: Vec<&str> = keys.filter(|k| is_secret(k)).collect();
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    if secrets.is_empty() || mode & 0o004 == 0 {
        return None;
    }
    Some(format!(
        "{path} holds credentials ({}) and every user can read it (mode {:03o}); chmod 600 or 640",
        secrets.join(", "),
        mode & 0o777
    ))
}

/// Puts the flags that were given into `layer`, each under the key the
/// table gives it and named by its flag.
pub(super) fn apply_flags(cli: &Cli, layer: &mut Layer) {
    for (flag, value) in &cli.settings {
        // `keys::tests::every_cli_flag_is_a_key` makes this find them all.
        if let Some(key) = keys::by_flag(flag) {
            layer.set(key.path, Value::Text(value.clone()), Source::Flag(flag));
        }
    }
}
