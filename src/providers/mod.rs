//! Upstream providers and their instances.

pub use crate::provider_kind::ProviderKind;
pub use failure::UpstreamFailure;

pub mod claude;
pub mod eventstream;
pub mod failure;
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
    /// Credentials that could not be used or refreshed → 500.
    Credential(String),
    /// The provider cannot be used as configured → 500.
    Config(String),
}

impl UpstreamError {
    /// Status answered to the client.
    pub fn status(&self) -> u16 {
        match self {
            Self::Connect(_) => 502,
            Self::Timeout(_) => 504,
            Self::Credential(_) | Self::Config(_) => 500,
        }
    }

    /// Message safe to show the client.
    pub fn message(&self) -> &str {
        match self {
            Self::Connect(m) | Self::Timeout(m) | Self::Credential(m) | Self::Config(m) => m,
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
    /// A digest of everything the instance was built from (its section of
    /// the configuration, credentials included, and the HTTP client
    /// settings): equal digests mean a reload may keep the instance.
    pub settings: [u8; 32],
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
        Self::reconcile(None, config).map(|(registry, _)| registry)
    }

    /// The registry `config` asks for, keeping from `running` every
    /// instance whose id and settings are unchanged, so its in-memory state
    /// (OAuth tokens, counters) survives a reload. A changed instance is
    /// built anew; a removed one is dropped here and goes once the requests
    /// that still hold it finish.
    pub fn reconcile(
        running: Option<&Registry>,
        config: &Config,
    ) -> Result<(Registry, Reconciled), crate::Error> {
        let mut agent = None;
        let mut instances = Vec::new();
        let mut changes = Reconciled::default();
        for &kind in &config.model_providers {
            let id = format!("{kind}-0");
            let settings = settings_digest(kind, config);
            let kept = running
                .map(|r| r.instances(kind))
                .unwrap_or_default()
                .iter()
                .find(|i| i.id == id && i.settings == settings)
                .cloned();
            let instance = match kept {
                Some(instance) => {
                    changes.kept.push(id);
                    instance
                }
                None => {
                    let agent = agent.get_or_insert_with(|| http::agent(config)).clone();
                    changes.built.push(id.clone());
                    Arc::new(Instance {
                        kind,
                        settings,
                        id,
                        name: kind.name().to_owned(),
                        weight: 1,
                        provider: build(kind, agent, config)?,
                        requests: AtomicU64::new(0),
                        errors: AtomicU64::new(0),
                    })
                }
            };
            instances.push((kind, vec![instance]));
        }
        if let Some(running) = running {
            for (_, old) in &running.instances {
                for i in old {
                    if !instances
                        .iter()
                        .any(|(_, new)| new.iter().any(|n| n.id == i.id))
                    {
                        changes.removed.push(i.id.clone());
                    }
                }
            }
        }
        Ok((
            Registry {
                enabled: config.model_providers.clone(),
                instances,
            },
            changes,
        ))
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

/// What a reload did to the instances, by id.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Unchanged: kept with their state.
    pub kept: Vec<String>,
    /// New or changed: built from the new settings.
    pub built: Vec<String>,
    /// No longer configured.
    pub removed: Vec<String>,
}

fn build(
    kind: ProviderKind,
    agent: ureq::Agent,
    config: &Config,
) -> Result<Box<dyn Provider>, crate::Error> {
    Ok(match kind {
        ProviderKind::OpenAiCustom => Box::new(openai::OpenAi::new(agent, &config.openai)?),
        ProviderKind::ClaudeCustom => Box::new(claude::Claude::new(agent, &config.claude)?),
        ProviderKind::Mock => Box::new(mock::Mock::new(
            config.mock.chunk_delay,
            config.mock.latency,
        )),
        ProviderKind::GeminiCli => Box::new(gemini_cli::GeminiCli::new(agent, &config.gemini)?),
        ProviderKind::KiroApi => Box::new(kiro::Kiro::new(agent, &config.kiro)?),
        ProviderKind::QwenApi => Box::new(qwen::Qwen::new(agent, &config.qwen)?),
    })
}

/// SHA-256 over what an instance of `kind` is built from. Credentials
/// count (a new key is a new instance) but are only ever hashed.
fn settings_digest(kind: ProviderKind, config: &Config) -> [u8; 32] {
    let up = &config.upstream;
    let mut text = format!(
        "{kind}|{:?}|{:?}|{:?}|{}|",
        up.connect_timeout, up.timeout, up.idle_timeout, config.workers
    );
    let (section, key) = match kind {
        ProviderKind::OpenAiCustom => (
            format!("{:?}", config.openai),
            config.openai.api_key.as_ref(),
        ),
        ProviderKind::ClaudeCustom => (
            format!("{:?}", config.claude),
            config.claude.api_key.as_ref(),
        ),
        ProviderKind::Mock => (format!("{:?}", config.mock), None),
        ProviderKind::GeminiCli => (
            format!("{:?}", config.gemini),
            Some(&config.gemini.client_secret),
        ),
        ProviderKind::KiroApi => (format!("{:?}", config.kiro), None),
        ProviderKind::QwenApi => (format!("{:?}", config.qwen), None),
    };
    text.push_str(&section);
    text.push('|');
    text.push_str(key.map_or("", |k| k.expose()));
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}
