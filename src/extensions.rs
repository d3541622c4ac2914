//! What a program that embeds aiproxy adds beyond the configuration: its
//! own provider implementations.

use std::fmt;
use std::sync::Arc;

use crate::providers::{Provider, ProviderKind};

/// Builds the client of one provider instance; see
/// [`Extensions::provider`].
pub type ProviderFactory =
    dyn Fn(&InstanceInfo<'_>) -> Result<Box<dyn Provider>, crate::Error> + Send + Sync;

/// The instance a [`ProviderFactory`] is asked to build a client for.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct InstanceInfo<'a> {
    /// The provider kind the instance serves.
    pub kind: ProviderKind,
    /// The instance id: `<provider>-0` (for example `openai-custom-0`)
    /// when the provider has one instance, the member's `uuid` when the
    /// provider pools file lists several.
    pub id: &'a str,
    /// Its display name: the pools file's `customName`, else the
    /// provider's name.
    pub name: &'a str,
}

/// Additions to a gateway started with [`start_with`](crate::start_with)
/// or [`run_with`](crate::run_with).
///
/// [`Extensions::provider`] puts an implementation of your own behind a
/// provider kind: every instance of that kind is built by your factory
/// instead of the built-in client, while routing, authentication,
/// protocol conversion, the cache, retries, load balancing and metrics
/// stay the gateway's. Your [`Provider`] receives requests in the
/// kind's protocol family ([`ProviderKind::family`]: OpenAI chat
/// completions for `openai-custom`, `qwen-api` and `mock`, Anthropic
/// Messages for `claude-custom` and `kiro-api`, Gemini for
/// `gemini-cli`) and answers in it, whole or as that family's
/// server-sent events when [`UpstreamRequest::stream`] is set; clients
/// of every protocol reach it through the converters.
///
/// Instances survive a configuration reload as built-in ones do: an
/// instance whose id and settings are unchanged is kept (your factory is
/// not called again), a new or changed one is built anew.
///
/// [`UpstreamRequest::stream`]: crate::providers::UpstreamRequest::stream
#[derive(Clone, Default)]
pub struct Extensions {
    providers: Vec<(ProviderKind, Arc<ProviderFactory>)>,
}

impl Extensions {
    /// No additions: what [`start`](crate::start) runs with.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `kind` with clients built by `factory`, one per instance.
    /// The kind must still be enabled (`model_providers`); a second call
    /// for the same kind replaces the first. An error from `factory`
    /// fails the start (or the reload, which then keeps the running
    /// configuration).
    pub fn provider<F>(mut self, kind: ProviderKind, factory: F) -> Self
    where
        F: Fn(&InstanceInfo<'_>) -> Result<Box<dyn Provider>, crate::Error> + Send + Sync + 'static,
    {
        self.providers.retain(|(k, _)| *k != kind);
        self.providers.push((kind, Arc::new(factory)));
        self
    }

    /// The factory that replaces the built-in client of `kind`, if any.
    pub(crate) fn provider_factory(&self, kind: ProviderKind) -> Option<&ProviderFactory> {
        self.providers
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, f)| f.as_ref())
    }
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds: Vec<&str> = self.providers.iter().map(|(k, _)| k.name()).collect();
        f.debug_struct("Extensions")
            .field("providers", &kinds)
            .finish()
    }
}
