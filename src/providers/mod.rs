//! Upstream providers and their instances.

use std::fmt;
use std::str::FromStr;

use crate::protocol::Protocol;

/// A provider type, as named on the command line and in path prefixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProviderKind {
    /// Any OpenAI-compatible chat completions API.
    OpenAiCustom,
    /// The Anthropic Messages API (or a compatible one).
    ClaudeCustom,
    /// Google Code Assist through a Gemini CLI login.
    GeminiCli,
    /// Claude through a Kiro IDE login.
    KiroApi,
    /// Qwen through a Qwen Code login.
    QwenApi,
    /// Built-in deterministic offline provider.
    Mock,
}

impl ProviderKind {
    /// Every provider kind, in documentation order.
    pub const ALL: [ProviderKind; 6] = [
        Self::OpenAiCustom,
        Self::ClaudeCustom,
        Self::GeminiCli,
        Self::KiroApi,
        Self::QwenApi,
        Self::Mock,
    ];

    /// The canonical aiproxy name.
    pub fn name(self) -> &'static str {
        match self {
            Self::OpenAiCustom => "openai-custom",
            Self::ClaudeCustom => "claude-custom",
            Self::GeminiCli => "gemini-cli",
            Self::KiroApi => "kiro-api",
            Self::QwenApi => "qwen-api",
            Self::Mock => "mock",
        }
    }

    /// The protocol family the upstream speaks. An explicit table, because
    /// the names do not encode it (PROVIDERS.md §0).
    pub fn family(self) -> Protocol {
        match self {
            Self::OpenAiCustom | Self::QwenApi | Self::Mock => Protocol::OpenAi,
            Self::ClaudeCustom | Self::KiroApi => Protocol::Anthropic,
            Self::GeminiCli => Protocol::Gemini,
        }
    }

    /// Parses a name or one of AIClient-2-API's long ids
    /// (`gemini-cli-oauth`, `claude-kiro-oauth`, `openai-qwen-oauth`).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "openai-custom" => Self::OpenAiCustom,
            "claude-custom" => Self::ClaudeCustom,
            "gemini-cli" | "gemini-cli-oauth" => Self::GeminiCli,
            "kiro-api" | "claude-kiro-oauth" => Self::KiroApi,
            "qwen-api" | "openai-qwen-oauth" => Self::QwenApi,
            "mock" => Self::Mock,
            _ => return None,
        })
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ProviderKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| {
            format!(
                "unknown provider {s:?} (expected one of openai-custom, claude-custom, \
                 gemini-cli, kiro-api, qwen-api, mock)"
            )
        })
    }
}

pub mod claude;
pub mod http;
pub mod mock;
pub mod openai;

use std::borrow::Cow;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::Config;
use crate::protocol::ModelInfo;

/// One call to an upstream, already in the provider's protocol family.
#[derive(Debug)]
pub struct UpstreamRequest<'a> {
    /// Model the client asked for (used in URLs by Gemini-family providers).
    pub model: String,
    /// JSON body in the provider's family protocol (borrowed from the
    /// client request when no conversion was needed).
    pub body: Cow<'a, [u8]>,
    /// Whether a streamed (SSE) answer is wanted.
    pub stream: bool,
    /// Client headers forwarded verbatim (e.g. `anthropic-beta`).
    pub forward_headers: Vec<(&'static str, String)>,
}

/// The upstream's answer: status, a few headers, and the body as a reader
/// (SSE bytes of the provider's family when streaming).
pub struct UpstreamResponse {
    /// HTTP status.
    pub status: u16,
    /// Declared body length, to size buffers.
    pub content_length: Option<u64>,
    /// `Retry-After`, relayed on 429/503.
    pub retry_after: Option<String>,
    /// The body, read incrementally.
    pub body: Box<dyn Read + Send>,
}

/// Why an upstream call produced no HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamError {
    /// Connect, TLS or DNS failure (retryable) → 502.
    Connect(String),
    /// No answer in time → 504.
    Timeout(String),
    /// The provider cannot be used as configured → 500.
    Config(String),
}

impl UpstreamError {
    /// Status answered to the client.
    pub fn status(&self) -> u16 {
        match self {
            Self::Connect(_) => 502,
            Self::Timeout(_) => 504,
            Self::Config(_) => 500,
        }
    }

    /// Message safe to show the client.
    pub fn message(&self) -> &str {
        match self {
            Self::Connect(m) | Self::Timeout(m) | Self::Config(m) => m,
        }
    }

    /// Metric/log label of the failure.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect",
            Self::Timeout(_) => "timeout",
            Self::Config(_) => "config",
        }
    }
}

/// An upstream provider: turns a family-protocol request into an answer.
/// Implementations are blocking and shared by all workers.
pub trait Provider: Send + Sync {
    /// Sends one request.
    fn call(&self, req: &UpstreamRequest<'_>) -> Result<UpstreamResponse, UpstreamError>;

    /// The models this provider offers.
    fn models(&self) -> Result<Vec<ModelInfo>, UpstreamError>;
}

/// One configured instance of a provider (an account or endpoint). The
/// load balancer chooses among the instances of a provider; counters are
/// kept here, in memory only.
pub struct Instance {
    /// Provider type.
    pub kind: ProviderKind,
    /// Stable id (`openai-custom-0`, or the pool file's uuid).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Selection weight (≥ 1).
    pub weight: u32,
    /// The client for this instance.
    pub provider: Box<dyn Provider>,
    /// Requests sent.
    pub requests: AtomicU64,
    /// Requests that failed (transport error or 5xx/429).
    pub errors: AtomicU64,
}

impl Instance {
    /// Records the outcome of one call.
    pub fn record(&self, failed: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Every enabled provider and its instances.
pub struct Registry {
    enabled: Vec<ProviderKind>,
    instances: Vec<(ProviderKind, Vec<Arc<Instance>>)>,
}

impl Registry {
    /// Builds one instance per enabled provider from the flags/config.
    pub fn from_config(config: &Config) -> Result<Registry, crate::Error> {
        let agent = http::agent(config);
        let mut instances = Vec::new();
        for &kind in &config.model_providers {
            let provider: Box<dyn Provider> = match kind {
                ProviderKind::OpenAiCustom => {
                    Box::new(openai::OpenAi::new(agent.clone(), &config.openai)?)
                }
                ProviderKind::ClaudeCustom => {
                    Box::new(claude::Claude::new(agent.clone(), &config.claude)?)
                }
                ProviderKind::Mock => Box::new(mock::Mock::new(
                    config.mock.chunk_delay,
                    config.mock.latency,
                )),
                ProviderKind::GeminiCli | ProviderKind::KiroApi | ProviderKind::QwenApi => {
                    return Err(crate::Error::Provider(format!(
                        "{kind} is not available in this version of aiproxy"
                    )));
                }
            };
            let instance = Instance {
                kind,
                id: format!("{kind}-0"),
                name: kind.name().to_owned(),
                weight: 1,
                provider,
                requests: AtomicU64::new(0),
                errors: AtomicU64::new(0),
            };
            instances.push((kind, vec![Arc::new(instance)]));
        }
        Ok(Registry {
            enabled: config.model_providers.clone(),
            instances,
        })
    }

    /// Enabled providers; the first is the default.
    pub fn enabled(&self) -> &[ProviderKind] {
        &self.enabled
    }

    /// The default provider.
    pub fn default_kind(&self) -> ProviderKind {
        self.enabled.first().copied().unwrap_or(ProviderKind::Mock)
    }

    /// Whether `kind` is enabled.
    pub fn is_enabled(&self, kind: ProviderKind) -> bool {
        self.enabled.contains(&kind)
    }

    /// The instances of `kind`.
    pub fn instances(&self, kind: ProviderKind) -> &[Arc<Instance>] {
        self.instances
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(&[], |(_, v)| v.as_slice())
    }

    /// Chooses the instance of `kind` for one request. One instance per
    /// provider for now; the load balancer replaces this choice.
    pub fn pick(&self, kind: ProviderKind) -> Option<Arc<Instance>> {
        self.instances(kind).first().cloned()
    }
}
