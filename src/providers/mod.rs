//! Upstream providers and their instances.

pub use crate::provider_kind::ProviderKind;

pub mod claude;
pub mod eventstream;
pub mod gemini_cli;
pub mod http;
pub mod kiro;
pub mod mock;
pub mod oauth;
pub mod openai;
pub mod qwen;
pub mod transform;

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

impl UpstreamResponse {
    /// A whole answer from bytes (errors and answers built by a provider).
    pub fn whole(status: u16, body: Vec<u8>) -> Self {
        Self {
            status,
            content_length: Some(body.len() as u64),
            retry_after: None,
            body: Box::new(std::io::Cursor::new(body)),
        }
    }
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

    /// Credential status for `/health` (validity, last refresh, last
    /// error; never a token), for providers that hold OAuth credentials.
    fn status(&self) -> Option<serde_json::Value> {
        None
    }
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
                ProviderKind::GeminiCli => {
                    Box::new(gemini_cli::GeminiCli::new(agent.clone(), &config.gemini)?)
                }
                ProviderKind::KiroApi => Box::new(kiro::Kiro::new(agent.clone(), &config.kiro)?),
                ProviderKind::QwenApi => Box::new(qwen::Qwen::new(agent.clone(), &config.qwen)?),
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
