//! The validated settings of each provider's upstream (`openai:`,
//! `claude:`, `mock:`, `gemini:`, `kiro:`, `qwen:`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::Secret;

/// openai-custom settings (`openai:`).
#[derive(Clone, Debug)]
pub struct OpenAiConfig {
    /// `--openai-api-key`; required when openai-custom is enabled.
    pub api_key: Option<Secret>,
    /// `--openai-base-url`, including the version path.
    pub base_url: String,
}

/// claude-custom settings (`claude:`).
#[derive(Clone, Debug)]
pub struct ClaudeConfig {
    /// `--claude-api-key`; required when claude-custom is enabled.
    pub api_key: Option<Secret>,
    /// `--claude-base-url`, the API root (a trailing `/v1` is tolerated).
    pub base_url: String,
}

/// Built-in mock provider settings (`mock:`).
#[derive(Clone, Debug)]
pub struct MockConfig {
    /// `--mock-chunk-delay`: pause between streamed chunks.
    pub chunk_delay: Duration,
    /// `--mock-latency`: wait before answering (non-streamed and first chunk).
    pub latency: Duration,
}

/// gemini-cli settings (`gemini:`).
#[derive(Clone, Debug)]
pub struct GeminiConfig {
    /// `--gemini-oauth-creds-file`; `None` means `~/.gemini/oauth_creds.json`.
    pub oauth_creds_file: Option<PathBuf>,
    /// `--project-id`; `None` means discovery through `loadCodeAssist`.
    pub project_id: Option<String>,
    /// `--gemini-base-url`: the Code Assist root.
    pub base_url: String,
    /// `gemini.token_url`: the OAuth token endpoint.
    pub token_url: String,
    /// `gemini.client_id`: the OAuth client (the Gemini CLI's by default).
    pub client_id: String,
    /// `gemini.client_secret`.
    pub client_secret: Secret,
}

/// kiro-api settings (`kiro:`).
#[derive(Clone, Debug)]
pub struct KiroConfig {
    /// `--kiro-oauth-creds-file`; `None` means
    /// `~/.aws/sso/cache/kiro-auth-token.json`.
    pub oauth_creds_file: Option<PathBuf>,
    /// `--kiro-base-url`: API root, `{region}` replaced.
    pub base_url: String,
    /// `kiro.refresh_url`: social-login refresh endpoint.
    pub refresh_url: String,
    /// `kiro.refresh_idc_url`: Builder ID / IdC refresh endpoint.
    pub refresh_idc_url: String,
    /// `kiro.version`: Kiro IDE version in the user agent.
    pub version: String,
    /// `kiro.model_map`: client model → Kiro model id, over the built-in map.
    pub model_map: BTreeMap<String, String>,
}

/// qwen-api settings (`qwen:`).
#[derive(Clone, Debug)]
pub struct QwenConfig {
    /// `--qwen-oauth-creds-file`; `None` means `~/.qwen/oauth_creds.json`.
    pub oauth_creds_file: Option<PathBuf>,
    /// `--qwen-base-url`; `None` means the credentials' `resource_url`.
    pub base_url: Option<String>,
    /// `qwen.token_url`: the OAuth token endpoint.
    pub token_url: String,
    /// `qwen.ext_tool`: add the dummy `ext` tool (default true).
    pub ext_tool: bool,
}
