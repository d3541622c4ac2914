//! The provider pools file (`--provider-pools-file`): AIClient-2-API's
//! `provider_pools.json`, or the same structure in YAML. An object keyed
//! by provider id (`gemini-cli-oauth` or `gemini-cli`, …), each a list of
//! members; a member is one account or endpoint of that provider with
//! its own credentials:
//!
//! ```json
//! {"gemini-cli-oauth": [
//!    {"uuid": "ac200154-…", "customName": "work", "GEMINI_OAUTH_CREDS_FILE_PATH": "./c1.json",
//!     "PROJECT_ID": "p1", "weight": 2, "notSupportedModels": ["gemini-2.5-pro"]}]}
//! ```
//!
//! Keys per member: `uuid` (required, unique in the file: it keys the
//! member's state across reloads), `customName`, `isDisabled`,
//! `checkModelName`, `supportedModels`, `notSupportedModels`, `weight`
//! (1 to 10000, default 1) and the provider's own keys
//! ([`PROVIDER_KEYS`]). The original's bookkeeping fields (`isHealthy`,
//! `usageCount`, `lastUsed`, …) are accepted and ignored: aiproxy keeps
//! that state in memory and never writes the file. Any other key is an
//! error naming the member, the key and the position in the file.
//!
//! Relative credential paths are taken as written (relative to the
//! working directory), as the original does. Files ending in `.yaml` or
//! `.yml` are YAML; any other name is JSON.

mod de;
#[cfg(test)]
mod tests;

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::balancer::{MemberSettings, ModelFilter};
use crate::config::{ClaudeConfig, GeminiConfig, KiroConfig, OpenAiConfig, QwenConfig, Secret};
use crate::provider_kind::ProviderKind;

/// Largest pools file accepted (1 MiB).
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// Most members in one file.
pub const MAX_MEMBERS: usize = 1000;
/// Largest `weight`.
pub const MAX_WEIGHT: u32 = 10_000;

/// The provider keys a member may set: key, provider, what it sets.
pub const PROVIDER_KEYS: &[(&str, ProviderKind, &str)] = &[
    ("OPENAI_API_KEY", ProviderKind::OpenAiCustom, "the API key"),
    (
        "OPENAI_BASE_URL",
        ProviderKind::OpenAiCustom,
        "the base URL",
    ),
    ("CLAUDE_API_KEY", ProviderKind::ClaudeCustom, "the API key"),
    (
        "CLAUDE_BASE_URL",
        ProviderKind::ClaudeCustom,
        "the base URL",
    ),
    (
        "GEMINI_OAUTH_CREDS_FILE_PATH",
        ProviderKind::GeminiCli,
        "the OAuth credentials file",
    ),
    (
        "PROJECT_ID",
        ProviderKind::GeminiCli,
        "the Google Cloud project",
    ),
    (
        "GEMINI_BASE_URL",
        ProviderKind::GeminiCli,
        "the Code Assist URL",
    ),
    (
        "KIRO_OAUTH_CREDS_FILE_PATH",
        ProviderKind::KiroApi,
        "the OAuth credentials file",
    ),
    ("KIRO_BASE_URL", ProviderKind::KiroApi, "the API root"),
    (
        "QWEN_OAUTH_CREDS_FILE_PATH",
        ProviderKind::QwenApi,
        "the OAuth credentials file",
    ),
    ("QWEN_BASE_URL", ProviderKind::QwenApi, "the API base URL"),
];

/// The original's per-member state, accepted and ignored.
pub const BOOKKEEPING_KEYS: &[&str] = &[
    "isHealthy",
    "lastUsed",
    "usageCount",
    "errorCount",
    "lastErrorTime",
    "lastErrorMessage",
    "checkHealth",
    "lastHealthCheckTime",
    "lastHealthCheckModel",
    "needsRefresh",
    "refreshCount",
    "lastRefreshTime",
    "scheduledRecoveryTime",
];

/// The original's per-member features aiproxy does not have: accepted,
/// with a warning when set.
pub const UNSUPPORTED_KEYS: &[&str] = &["concurrencyLimit", "queueLimit"];

/// Provider ids of later versions of the original, out of aiproxy's
/// scope: their lists are skipped with a warning, so a file written for
/// the original still loads.
pub const FOREIGN_PROVIDERS: &[&str] = &[
    "gemini-antigravity",
    "openai-iflow",
    "openai-codex-oauth",
    "openaiResponses-custom",
    "openai-novita",
    "forward-api",
    "grok-web",
    "atlascloud",
];

/// The pools of one file, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolsFile {
    /// One pool per provider.
    pub pools: Vec<ProviderPool>,
    /// Things worth a log line (skipped providers, ignored features,
    /// shared credential files).
    pub warnings: Vec<String>,
}

impl PoolsFile {
    /// The members for `kind`, if the file has a pool for it.
    pub fn pool(&self, kind: ProviderKind) -> Option<&ProviderPool> {
        self.pools.iter().find(|p| p.kind == kind)
    }
}

/// The members of one provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderPool {
    /// The provider.
    pub kind: ProviderKind,
    /// Its members, in file order (the order of `round_robin` and of a
    /// disabled balancer).
    pub members: Vec<PoolMember>,
}

/// One member: an account or endpoint of a provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolMember {
    /// Provider.
    pub kind: ProviderKind,
    /// `uuid`: identity, unique in the file.
    pub uuid: String,
    /// `customName`.
    pub custom_name: Option<String>,
    /// `weight` (default 1).
    pub weight: u32,
    /// `isDisabled`.
    pub disabled: bool,
    /// `checkModelName`: the model of its health checks (`None`: the
    /// provider's default).
    pub check_model: Option<String>,
    /// `supportedModels` / `notSupportedModels`.
    pub models: ModelFilter,
    /// The provider's own keys.
    pub overrides: Overrides,
}

impl PoolMember {
    /// Display name: `customName`, else the uuid.
    pub fn name(&self) -> &str {
        self.custom_name.as_deref().unwrap_or(&self.uuid)
    }

    /// What the balancer needs to know about it.
    pub fn balancer_settings(&self) -> MemberSettings {
        MemberSettings {
            kind: self.kind,
            id: self.uuid.clone(),
            name: self.name().to_owned(),
            weight: self.weight,
            disabled: self.disabled,
            models: self.models.clone(),
        }
    }
}

/// A member's provider keys, over the provider's configured settings.
/// Unset keys keep the configured value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Overrides {
    /// openai-custom: `OPENAI_API_KEY`, `OPENAI_BASE_URL`.
    OpenAi(ApiKeyOverrides),
    /// claude-custom: `CLAUDE_API_KEY`, `CLAUDE_BASE_URL`.
    Claude(ApiKeyOverrides),
    /// gemini-cli: `GEMINI_OAUTH_CREDS_FILE_PATH`, `PROJECT_ID`,
    /// `GEMINI_BASE_URL`.
    GeminiCli(GeminiOverrides),
    /// kiro-api: `KIRO_OAUTH_CREDS_FILE_PATH`, `KIRO_BASE_URL`.
    Kiro(OAuthOverrides),
    /// qwen-api: `QWEN_OAUTH_CREDS_FILE_PATH`, `QWEN_BASE_URL`.
    Qwen(OAuthOverrides),
    /// mock: nothing to set.
    Mock,
}

impl Overrides {
    fn empty(kind: ProviderKind) -> Overrides {
        match kind {
            ProviderKind::OpenAiCustom => Overrides::OpenAi(ApiKeyOverrides::default()),
            ProviderKind::ClaudeCustom => Overrides::Claude(ApiKeyOverrides::default()),
            ProviderKind::GeminiCli => Overrides::GeminiCli(GeminiOverrides::default()),
            ProviderKind::KiroApi => Overrides::Kiro(OAuthOverrides::default()),
            ProviderKind::QwenApi => Overrides::Qwen(OAuthOverrides::default()),
            ProviderKind::Mock => Overrides::Mock,
        }
    }

    /// The credentials file, for the OAuth providers.
    pub fn creds_file(&self) -> Option<&Path> {
        match self {
            Overrides::GeminiCli(g) => g.oauth_creds_file.as_deref(),
            Overrides::Kiro(o) | Overrides::Qwen(o) => o.oauth_creds_file.as_deref(),
            _ => None,
        }
    }
}

/// The keys of an API-key provider.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiKeyOverrides {
    /// `*_API_KEY`.
    pub api_key: Option<Secret>,
    /// `*_BASE_URL`, checked, without a trailing `/`.
    pub base_url: Option<String>,
}

impl ApiKeyOverrides {
    /// The openai-custom settings of this member.
    pub fn openai(&self, base: &OpenAiConfig) -> OpenAiConfig {
        OpenAiConfig {
            api_key: self.api_key.clone().or_else(|| base.api_key.clone()),
            base_url: self
                .base_url
                .clone()
                .unwrap_or_else(|| base.base_url.clone()),
        }
    }

    /// The claude-custom settings of this member.
    pub fn claude(&self, base: &ClaudeConfig) -> ClaudeConfig {
        ClaudeConfig {
            api_key: self.api_key.clone().or_else(|| base.api_key.clone()),
            base_url: self
                .base_url
                .clone()
                .unwrap_or_else(|| base.base_url.clone()),
        }
    }
}

/// The keys of a gemini-cli member.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GeminiOverrides {
    /// `GEMINI_OAUTH_CREDS_FILE_PATH`.
    pub oauth_creds_file: Option<PathBuf>,
    /// `PROJECT_ID`.
    pub project_id: Option<String>,
    /// `GEMINI_BASE_URL`.
    pub base_url: Option<String>,
}

impl GeminiOverrides {
    /// The gemini-cli settings of this member.
    pub fn apply(&self, base: &GeminiConfig) -> GeminiConfig {
        GeminiConfig {
            oauth_creds_file: self
                .oauth_creds_file
                .clone()
                .or_else(|| base.oauth_creds_file.clone()),
            project_id: self.project_id.clone().or_else(|| base.project_id.clone()),
            base_url: self
                .base_url
                .clone()
                .unwrap_or_else(|| base.base_url.clone()),
            ..base.clone()
        }
    }
}

/// The keys of a kiro-api or qwen-api member.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OAuthOverrides {
    /// `*_OAUTH_CREDS_FILE_PATH`.
    pub oauth_creds_file: Option<PathBuf>,
    /// `*_BASE_URL`.
    pub base_url: Option<String>,
}

impl OAuthOverrides {
    /// The kiro-api settings of this member.
    pub fn kiro(&self, base: &KiroConfig) -> KiroConfig {
        KiroConfig {
            oauth_creds_file: self
                .oauth_creds_file
                .clone()
                .or_else(|| base.oauth_creds_file.clone()),
            base_url: self
                .base_url
                .clone()
                .unwrap_or_else(|| base.base_url.clone()),
            ..base.clone()
        }
    }

    /// The qwen-api settings of this member.
    pub fn qwen(&self, base: &QwenConfig) -> QwenConfig {
        QwenConfig {
            oauth_creds_file: self
                .oauth_creds_file
                .clone()
                .or_else(|| base.oauth_creds_file.clone()),
            base_url: self.base_url.clone().or_else(|| base.base_url.clone()),
            ..base.clone()
        }
    }
}

/// The syntax of a pools file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// JSON (the original's).
    Json,
    /// YAML.
    Yaml,
}

impl Format {
    /// YAML for `.yaml` and `.yml`, else JSON.
    pub fn of(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml") => {
                Format::Yaml
            }
            _ => Format::Json,
        }
    }
}

/// Reads and parses a pools file; the error starts with the path.
pub fn read(path: &Path) -> Result<PoolsFile, String> {
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| format!("{shown}: cannot open: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{shown}: cannot read: {e}"))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| format!("{shown}: not UTF-8 text"))?;
    parse(text, Format::of(path)).map_err(|e| format!("{shown}: {e}"))
}

/// Parses the text of a pools file. Never panics; the error is one line,
/// names the member and key when the problem is in one, and ends with the
/// position when the parser knows it. It never quotes a secret.
pub fn parse(text: &str, format: Format) -> Result<PoolsFile, String> {
    if text.len() > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    if text.trim().is_empty() {
        return Err("empty file (write {} for no pools)".to_owned());
    }
    let mut file = de::parse(text, format)?;
    warn_shared_credentials(&mut file);
    Ok(file)
}

/// Two members refreshing tokens into one file overwrite each other.
fn warn_shared_credentials(file: &mut PoolsFile) {
    let mut seen: Vec<(&Path, &str)> = Vec::new();
    let mut warnings = Vec::new();
    for member in file.pools.iter().flat_map(|p| &p.members) {
        let Some(path) = member.overrides.creds_file() else {
            continue;
        };
        match seen.iter().find(|(p, _)| *p == path) {
            Some((_, first)) => warnings.push(format!(
                "members {first} and {} share the credentials file {}: token refreshes \
                 of one overwrite the other's",
                member.uuid,
                path.display()
            )),
            None => seen.push((path, &member.uuid)),
        }
    }
    file.warnings.extend(warnings);
}
