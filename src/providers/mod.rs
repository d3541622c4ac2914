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
pub mod plain_http;
pub mod plain_tcp;
pub mod qwen;
pub mod read_wait;
pub mod resolve;
pub mod transform;

use std::borrow::Cow;
use std::io::Read;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::balancer::{Balanced, HealthPolicy, Member, MemberSettings, ModelFilter, Pool};
use crate::config::{
    ClaudeConfig, Config, GeminiConfig, KiroConfig, MockConfig, OpenAiConfig, QwenConfig, Secret,
};
use crate::extensions::{Extensions, InstanceInfo};
use crate::pools::{Overrides, PoolMember};
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
    /// A deadline for the whole call, shorter than the upstream timeouts
    /// (an active health check's); `None` for client requests.
    pub timeout: Option<Duration>,
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
    /// The body, read incrementally. A streamed body is read by the
    /// worker relaying it, which sends keep-alives between reads: a body
    /// that can should respect [`read_wait::current`] (fail a read with
    /// `TimedOut` when nothing arrived within the wait, and carry on at the
    /// next read), as bodies from aiproxy's own HTTP client do; a body that
    /// blocks instead is relayed read by read, with no keep-alives while it
    /// is silent, and the client's response head waits for its first
    /// bytes (it goes out with the first events).
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

    /// The cheap active health check, when the pool names no
    /// `checkModelName`: a model list for the API-key providers, the
    /// access token (refreshed when due) for the OAuth ones. Never a
    /// generation, which would cost quota.
    fn probe(&self, timeout: Duration) -> Probe;
}

/// What an active health check's cheap call found.
#[derive(Debug)]
pub enum Probe {
    /// The upstream answered with this status.
    Answered(u16),
    /// Only the credential could be checked, and it is usable: nothing
    /// is known of the upstream itself.
    CredentialOk,
    /// No answer, or no usable credential.
    Failed(UpstreamError),
}

/// One configured instance of a provider (an account or endpoint): its
/// client and its balancing state, kept in memory only. The load
/// balancer chooses among the instances of a provider.
pub struct Instance {
    /// Provider type.
    pub kind: ProviderKind,
    /// A digest of everything the instance was built from (its section of
    /// the configuration with the pool member's keys, credentials
    /// included, its balancer settings and the HTTP client settings):
    /// equal digests mean a reload may keep the instance.
    pub settings: [u8; 32],
    /// The client for this instance.
    pub provider: Box<dyn Provider>,
    /// Health, counters and selection settings.
    pub member: Member,
    /// `checkModelName`: active health checks send a tiny request for
    /// this model instead of [`Provider::probe`].
    pub check_model: Option<String>,
}

impl Instance {
    /// Its id: the pool member's uuid, or `<provider>-0`.
    pub fn id(&self) -> &str {
        self.member.id()
    }
}

impl Balanced for Instance {
    fn member(&self) -> &Member {
        &self.member
    }
}

/// A provider's settings, as one instance uses them.
#[derive(Debug)]
enum Section {
    OpenAi(OpenAiConfig),
    Claude(ClaudeConfig),
    Gemini(GeminiConfig),
    Kiro(KiroConfig),
    Qwen(QwenConfig),
    Mock(MockConfig),
}

impl Section {
    /// The configured settings of `kind`.
    fn of(kind: ProviderKind, config: &Config) -> Section {
        match kind {
            ProviderKind::OpenAiCustom => Section::OpenAi(config.openai.clone()),
            ProviderKind::ClaudeCustom => Section::Claude(config.claude.clone()),
            ProviderKind::GeminiCli => Section::Gemini(config.gemini.clone()),
            ProviderKind::KiroApi => Section::Kiro(config.kiro.clone()),
            ProviderKind::QwenApi => Section::Qwen(config.qwen.clone()),
            ProviderKind::Mock => Section::Mock(config.mock.clone()),
        }
    }

    /// The configured settings of a pool member's provider, under its keys.
    fn of_member(m: &PoolMember, config: &Config) -> Section {
        match &m.overrides {
            Overrides::OpenAi(o) => Section::OpenAi(o.openai(&config.openai)),
            Overrides::Claude(o) => Section::Claude(o.claude(&config.claude)),
            Overrides::GeminiCli(o) => Section::Gemini(o.apply(&config.gemini)),
            Overrides::Kiro(o) => Section::Kiro(o.kiro(&config.kiro)),
            Overrides::Qwen(o) => Section::Qwen(o.qwen(&config.qwen)),
            Overrides::Mock => Section::Mock(config.mock.clone()),
        }
    }

    /// The secret its `Debug` hides, which must still count in a digest.
    fn secret(&self) -> Option<&Secret> {
        match self {
            Section::OpenAi(c) => c.api_key.as_ref(),
            Section::Claude(c) => c.api_key.as_ref(),
            Section::Gemini(c) => Some(&c.client_secret),
            Section::Kiro(_) | Section::Qwen(_) | Section::Mock(_) => None,
        }
    }

    fn build(&self, agents: &mut http::Agents) -> Result<Box<dyn Provider>, crate::Error> {
        Ok(match self {
            Section::OpenAi(c) => Box::new(openai::OpenAi::new(agents.for_url(&c.base_url), c)?),
            Section::Claude(c) => Box::new(claude::Claude::new(agents.for_url(&c.base_url), c)?),
            Section::Mock(c) => Box::new(mock::Mock::new(c.chunk_delay, c.latency)),
            // The OAuth providers also reach HTTPS token endpoints.
            Section::Gemini(c) => Box::new(gemini_cli::GeminiCli::new(agents.tls(), c)?),
            Section::Kiro(c) => Box::new(kiro::Kiro::new(agents.tls(), c)?),
            Section::Qwen(c) => Box::new(qwen::Qwen::new(agents.tls(), c)?),
        })
    }
}

/// What one instance is built from.
struct Spec {
    kind: ProviderKind,
    section: Section,
    member: MemberSettings,
    check_model: Option<String>,
}

impl Spec {
    /// The one instance the flags describe.
    fn from_flags(kind: ProviderKind, config: &Config) -> Spec {
        Spec {
            kind,
            section: Section::of(kind, config),
            member: MemberSettings {
                kind,
                id: format!("{kind}-0"),
                name: kind.name().to_owned(),
                weight: 1,
                disabled: false,
                models: ModelFilter::default(),
            },
            check_model: None,
        }
    }

    /// A pool member.
    fn from_member(m: &PoolMember, config: &Config) -> Spec {
        Spec {
            kind: m.kind,
            section: Section::of_member(m, config),
            member: m.balancer_settings(),
            check_model: m.check_model.clone(),
        }
    }

    /// SHA-256 over everything the instance is built from. Credentials
    /// count (a new key is a new instance) but are only ever hashed.
    fn digest(&self, config: &Config) -> [u8; 32] {
        let up = &config.upstream;
        let text = format!(
            "{}|{:?}|{:?}|{:?}|{}|{:?}|{:?}|{:?}|{}",
            self.kind,
            up.connect_timeout,
            up.timeout,
            up.idle_timeout,
            config.workers,
            self.section,
            self.member,
            self.check_model,
            self.section.secret().map_or("", |k| k.expose()),
        );
        let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        out
    }
}

/// Every enabled provider and its pool of instances.
pub struct Registry {
    enabled: Vec<ProviderKind>,
    pools: Vec<(ProviderKind, Pool<Instance>)>,
}

impl Registry {
    /// Builds the instances of every enabled provider: the pools file's
    /// members, or one instance from the flags/config.
    pub fn from_config(config: &Config) -> Result<Registry, crate::Error> {
        Self::reconcile(None, config).map(|(registry, _)| registry)
    }

    /// [`Registry::reconcile_with`] with the built-in clients only.
    pub fn reconcile(
        running: Option<&Registry>,
        config: &Config,
    ) -> Result<(Registry, Reconciled), crate::Error> {
        Self::reconcile_with(running, config, &Extensions::default())
    }

    /// The registry `config` asks for, keeping from `running` every
    /// instance whose id and settings are unchanged (a pool member by its
    /// uuid), so its in-memory state (OAuth tokens, health, counters)
    /// survives a reload. A changed instance is built anew; a removed one
    /// is dropped here and goes once the requests that still hold it
    /// finish. The instances of a kind that `extensions` provides for
    /// are built by its factory instead of the built-in client.
    pub fn reconcile_with(
        running: Option<&Registry>,
        config: &Config,
        extensions: &Extensions,
    ) -> Result<(Registry, Reconciled), crate::Error> {
        let mut agents = http::Agents::new(config);
        let mut pools = Vec::new();
        let mut changes = Reconciled::default();
        let now = Instant::now();
        let policy = health_policy(config);
        for &kind in &config.model_providers {
            let specs: Vec<Spec> = match config.pools.as_ref().and_then(|p| p.pool(kind)) {
                Some(pool) if !pool.members.is_empty() => pool
                    .members
                    .iter()
                    .map(|m| Spec::from_member(m, config))
                    .collect(),
                _ => vec![Spec::from_flags(kind, config)],
            };
            let mut members = Vec::with_capacity(specs.len());
            for spec in specs {
                let settings = spec.digest(config);
                let id = spec.member.id.clone();
                let kept = running
                    .map(|r| r.instances(kind))
                    .unwrap_or_default()
                    .iter()
                    .find(|i| i.id() == id && i.settings == settings)
                    .cloned();
                let instance = match kept {
                    Some(instance) => {
                        changes.kept.push(id);
                        instance
                    }
                    None => {
                        let provider = match extensions.provider_factory(kind) {
                            Some(factory) => factory(&InstanceInfo {
                                kind,
                                id: &id,
                                name: &spec.member.name,
                            })?,
                            None => spec.section.build(&mut agents)?,
                        };
                        changes.built.push(id);
                        Arc::new(Instance {
                            kind,
                            settings,
                            provider,
                            member: Member::new(spec.member, now),
                            check_model: spec.check_model,
                        })
                    }
                };
                members.push(instance);
            }
            pools.push((kind, Pool::new(members, policy.clone())));
        }
        let registry = Registry {
            enabled: config.model_providers.clone(),
            pools,
        };
        if let Some(running) = running {
            for (kind, old) in &running.pools {
                for i in old.members() {
                    if !registry.instances(*kind).iter().any(|n| n.id() == i.id()) {
                        changes.removed.push((*kind, i.id().to_owned()));
                    }
                }
            }
        }
        Ok((registry, changes))
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

    /// The pool of `kind`, if enabled.
    pub fn pool(&self, kind: ProviderKind) -> Option<&Pool<Instance>> {
        self.pools.iter().find(|(k, _)| *k == kind).map(|(_, p)| p)
    }

    /// Every pool, in `model_providers` order.
    pub fn pools(&self) -> impl Iterator<Item = (ProviderKind, &Pool<Instance>)> {
        self.pools.iter().map(|(k, p)| (*k, p))
    }

    /// The instances of `kind`, in pool order.
    pub fn instances(&self, kind: ProviderKind) -> &[Arc<Instance>] {
        self.pool(kind).map_or(&[], Pool::members)
    }
}

/// Ejection settings from the configuration; the rest are the balancer's
/// defaults (3 consecutive failures, ejections doubling up to 10 min).
fn health_policy(config: &Config) -> HealthPolicy {
    let defaults = HealthPolicy::default();
    let base = config.load_balancer.ejection_time;
    HealthPolicy {
        base_ejection: base,
        max_ejection: defaults.max_ejection.max(base),
        ..defaults
    }
}

/// What a reload did to the instances, by id.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Unchanged: kept with their state.
    pub kept: Vec<String>,
    /// New or changed: built from the new settings.
    pub built: Vec<String>,
    /// No longer configured, with their provider.
    pub removed: Vec<(ProviderKind, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pools::{Format, parse};

    fn with_pool(json: &str) -> Config {
        Config {
            pools: Some(parse(json, Format::Json).unwrap()),
            ..Config::default()
        }
    }

    #[test]
    fn pool_members_are_kept_by_uuid_across_a_reload() {
        let first =
            with_pool(r#"{"mock": [{"uuid": "m1"}, {"uuid": "m2"}, {"uuid": "m3", "weight": 2}]}"#);
        let (running, built) = Registry::reconcile(None, &first).unwrap();
        assert_eq!(built.built, ["m1", "m2", "m3"]);
        let ids: Vec<&str> = running
            .instances(ProviderKind::Mock)
            .iter()
            .map(|i| i.id())
            .collect();
        assert_eq!(ids, ["m1", "m2", "m3"]);
        assert_eq!(running.instances(ProviderKind::Mock)[2].member.weight(), 2);

        let next = with_pool(
            r#"{"mock": [{"uuid": "m4"}, {"uuid": "m1"}, {"uuid": "m2", "customName": "renamed"}]}"#,
        );
        let (reloaded, changes) = Registry::reconcile(Some(&running), &next).unwrap();
        assert_eq!(changes.kept, ["m1"]);
        assert_eq!(changes.built, ["m4", "m2"]);
        assert_eq!(changes.removed, [(ProviderKind::Mock, "m3".to_owned())]);
        let old = &running.instances(ProviderKind::Mock)[0];
        let kept = &reloaded.instances(ProviderKind::Mock)[1];
        assert!(Arc::ptr_eq(old, kept), "the same instance, state and all");
        assert_eq!(
            reloaded.instances(ProviderKind::Mock)[2]
                .member
                .settings()
                .name,
            "renamed"
        );

        // No pool (or an empty one): the one instance from the flags.
        let (flags, _) =
            Registry::reconcile(Some(&reloaded), &with_pool(r#"{"mock": []}"#)).unwrap();
        let ids: Vec<&str> = flags
            .instances(ProviderKind::Mock)
            .iter()
            .map(|i| i.id())
            .collect();
        assert_eq!(ids, ["mock-0"]);
    }

    #[test]
    fn a_member_keeps_its_own_credentials() {
        let mut config = with_pool(
            r#"{"openai-custom": [{"uuid": "a", "OPENAI_API_KEY": "sk-a"},
                                  {"uuid": "b", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}]}"#,
        );
        config.model_providers = vec![ProviderKind::OpenAiCustom];
        config.openai.api_key = Some(Secret::new("sk-global"));
        let (registry, _) = Registry::reconcile(None, &config).unwrap();
        let [a, b] = registry.instances(ProviderKind::OpenAiCustom) else {
            panic!("two instances");
        };
        assert_ne!(a.settings, b.settings);
        // Another key for a is another instance; b is untouched.
        config.pools = Some(
            parse(
                r#"{"openai-custom": [{"uuid": "a", "OPENAI_API_KEY": "sk-a2"},
                                      {"uuid": "b", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}]}"#,
                Format::Json,
            )
            .unwrap(),
        );
        let (_, changes) = Registry::reconcile(Some(&registry), &config).unwrap();
        assert_eq!(
            (changes.kept, changes.built),
            (vec!["b".to_owned()], vec!["a".to_owned()])
        );
    }
}
