//! Metrics in a build without the `metrics` feature: no registry can be
//! made ([`Metrics::start`] gives `None`), so every recording call of the
//! gateway, behind its `if let Some(metrics)`, is gone, and `/metrics`
//! answers 404. Same names and signatures as the real module.

#[path = "vocabulary.rs"]
mod vocabulary;

use std::sync::Arc;
use std::time::Duration;

use crate::providers::ProviderKind;

pub use vocabulary::{
    ClusterFigures, DEFAULT_MAX_INSTANCES, DEFAULT_MAX_MODELS, DEFAULT_SAMPLE_INTERVAL, ErrorKind,
    MetricsOptions, NodeState,
};

/// No value of this type exists.
#[derive(Debug)]
pub enum Metrics {}

/// No value of this type exists.
#[derive(Debug)]
pub enum ActiveGuard {}

// The real module documents each call; these only keep the gateway's
// calls compiling, and none can run.
#[allow(missing_docs)]
impl Metrics {
    /// Always `None`: this build has no metrics.
    pub fn start(_: MetricsOptions) -> Option<Arc<Metrics>> {
        None
    }

    pub fn http_request(&self, _: &'static str, _: &str, _: u16, _: Duration) {
        match *self {}
    }

    pub fn active_guard(&self) -> ActiveGuard {
        match *self {}
    }

    pub fn provider_request(&self, _: ProviderKind, _: &str, _: &str) {
        match *self {}
    }

    pub fn add_known_models(&self, _: &[String]) {
        match *self {}
    }

    pub fn provider_error(&self, _: ProviderKind, _: ErrorKind) {
        match *self {}
    }

    pub fn provider_latency(&self, _: ProviderKind, _: Duration) {
        match *self {}
    }

    pub fn time_to_first_token(&self, _: ProviderKind, _: Duration) {
        match *self {}
    }

    pub fn tokens(&self, _: ProviderKind, _: &str, _: u64, _: u64) {
        match *self {}
    }

    pub fn cache_hit(&self) {
        match *self {}
    }

    pub fn cache_miss(&self) {
        match *self {}
    }

    pub fn set_cache_size_bytes(&self, _: u64) {
        match *self {}
    }

    pub fn cache_refused(&self, _: u64) {
        match *self {}
    }

    pub fn set_cache_redis_up(&self, _: bool) {
        match *self {}
    }

    pub fn cache_redis_error(&self) {
        match *self {}
    }

    pub fn set_websocket_connections(&self, _: i64) {
        match *self {}
    }

    pub fn websocket_message(&self, _: &'static str, _: bool) {
        match *self {}
    }

    pub fn websocket_closed(&self, _: u16) {
        match *self {}
    }

    pub fn set_instance_healthy(&self, _: ProviderKind, _: &str, _: bool) {
        match *self {}
    }

    pub fn set_instance_counts(&self, _: ProviderKind, _: &str, _: u64, _: u64) {
        match *self {}
    }

    pub fn set_lb_retry_totals(&self, _: u64, _: u64) {
        match *self {}
    }

    pub fn forget_instance(&self, _: ProviderKind, _: &str) {
        match *self {}
    }

    pub fn set_cluster(&self, _: &ClusterFigures) {
        match *self {}
    }

    pub fn encode(&self, _: Option<&str>) -> (&'static str, String) {
        match *self {}
    }
}
