//! `config_yaml`: the config file reader.

use crate::config::file::FileConfig;

/// config.yaml text (invalid UTF-8 is replaced, as the fuzzer rarely
/// writes valid UTF-8 and the reader refuses it before parsing).
pub fn config_yaml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match FileConfig::from_yaml_str(&text) {
        Ok(file) => {
            let _ = file.settings();
        }
        Err(e) => assert!(!e.contains('\n'), "error is one line: {e}"),
    }
}
