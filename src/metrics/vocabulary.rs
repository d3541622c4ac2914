//! The words the gateway records with: error kinds, node states, the
//! cluster's figures and the registry's options. Shared by the
//! Prometheus registry and by its stand-in in a build without the
//! `metrics` feature, so the gateway's calls read the same in both.

use std::fmt;
use std::time::Duration;

use crate::providers::{ProviderKind, UpstreamFailure};

/// Default number of model names that get a label of their own.
pub const DEFAULT_MAX_MODELS: usize = 100;
/// Default number of instance ids that get a label of their own.
pub const DEFAULT_MAX_INSTANCES: usize = 256;
/// Default interval between dashboard history samples.
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(2);

/// Why an upstream call failed: the `kind` label of
/// `aiproxy_provider_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No answer (or no next chunk) in time.
    Timeout,
    /// Connect, TLS or DNS failure.
    Connect,
    /// Any other 4xx answer.
    Status4xx,
    /// A 5xx answer.
    Status5xx,
    /// 429.
    RateLimited,
    /// 401 or 403, or credentials that could not be used or refreshed.
    Auth,
    /// An answer that could not be parsed or converted (bad JSON, broken
    /// SSE, truncated stream).
    Parse,
}

impl ErrorKind {
    /// Every kind, in label order.
    pub const ALL: [ErrorKind; 7] = [
        Self::Timeout,
        Self::Connect,
        Self::Status4xx,
        Self::Status5xx,
        Self::RateLimited,
        Self::Auth,
        Self::Parse,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::Status4xx => "status_4xx",
            Self::Status5xx => "status_5xx",
            Self::RateLimited => "rate_limited",
            Self::Auth => "auth",
            Self::Parse => "parse",
        }
    }

    /// The position in [`ErrorKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl From<UpstreamFailure> for ErrorKind {
    fn from(failure: UpstreamFailure) -> Self {
        match failure {
            UpstreamFailure::Connect => Self::Connect,
            UpstreamFailure::Timeout => Self::Timeout,
            UpstreamFailure::RateLimited => Self::RateLimited,
            UpstreamFailure::Credential | UpstreamFailure::Config => Self::Auth,
            UpstreamFailure::Client(_) => Self::Status4xx,
            UpstreamFailure::Server(_) => Self::Status5xx,
            UpstreamFailure::Protocol => Self::Parse,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A cluster member's state: the `state` label of `aiproxy_cluster_nodes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeState {
    /// Heard from recently.
    Alive,
    /// Silent for a while.
    Suspect,
    /// Silent for long.
    Dead,
}

impl NodeState {
    /// Every state.
    pub const ALL: [NodeState; 3] = [Self::Alive, Self::Suspect, Self::Dead];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Alive => "alive",
            Self::Suspect => "suspect",
            Self::Dead => "dead",
        }
    }
}

/// A cluster node's figures, read from it at scrape time
/// ([`Metrics::set_cluster`](super::Metrics::set_cluster)).
#[derive(Clone, Debug, Default)]
pub struct ClusterFigures {
    /// Every member (this node included): id, state, milliseconds since
    /// it was last heard of.
    pub nodes: Vec<(String, NodeState, u64)>,
    /// Datagrams dropped since start, by reason.
    pub dropped: Vec<(&'static str, u64)>,
    /// Datagrams sent since start.
    pub sent_datagrams: u64,
    /// Datagrams received since start, dropped ones included.
    pub received_datagrams: u64,
    /// UDP payload bytes sent since start.
    pub sent_bytes: u64,
    /// UDP payload bytes received since start.
    pub received_bytes: u64,
    /// The newest cluster settings version this node has seen.
    pub settings_version: u64,
}

/// What to register and how to bound labels. `Default` gives the core
/// families only, the default label budgets and a sampler thread.
#[derive(Clone, Debug)]
pub struct MetricsOptions {
    /// Enabled providers: their per-provider series (errors by kind,
    /// latency histograms) are created at zero, so rates and alerts see
    /// them before the first failure.
    pub providers: Vec<ProviderKind>,
    /// Model names that always get their own label (the configured ones).
    pub known_models: Vec<String>,
    /// How many other model names get their own label before the rest
    /// fold into `other`. Default [`DEFAULT_MAX_MODELS`].
    pub max_models: usize,
    /// How many instance ids get their own label. Default
    /// [`DEFAULT_MAX_INSTANCES`].
    pub max_instances: usize,
    /// Registers `aiproxy_websocket_connections`,
    /// `aiproxy_websocket_messages_total` and `aiproxy_websocket_closes_total`.
    pub websocket: bool,
    /// Registers `aiproxy_loadbalancer_instance_healthy`.
    pub load_balancer: bool,
    /// Registers `aiproxy_cluster_nodes` (all three states at 0).
    pub cluster: bool,
    /// Registers `aiproxy_cache_redis_up` and `aiproxy_cache_redis_errors_total`.
    pub redis: bool,
    /// Interval of the dashboard history sampler thread (a build without
    /// the `dashboard` feature has none); `None` starts no
    /// thread (call [`Metrics::sample`](super::Metrics::sample) yourself). Default
    /// [`DEFAULT_SAMPLE_INTERVAL`].
    pub sample_interval: Option<Duration>,
}

impl Default for MetricsOptions {
    fn default() -> Self {
        Self {
            providers: Vec::new(),
            known_models: Vec::new(),
            max_models: DEFAULT_MAX_MODELS,
            max_instances: DEFAULT_MAX_INSTANCES,
            websocket: false,
            load_balancer: false,
            cluster: false,
            redis: false,
            sample_interval: Some(DEFAULT_SAMPLE_INTERVAL),
        }
    }
}
