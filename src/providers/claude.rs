//! claude-custom: the Anthropic Messages API or a compatible endpoint.

use std::time::Duration;

use super::http::ShardedAgent;
use super::plain_http::Target;
use super::{Probe, Provider, UpstreamError, UpstreamRequest, UpstreamResponse, http};
use crate::config::{ClaudeConfig, Secret};
use crate::protocol::ModelInfo;

/// `anthropic-version` sent when the client did not send one.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Models listed when the upstream has no `/v1/models` (older proxies).
const FALLBACK_MODELS: &[&str] = &[
    "claude-opus-4-1-20250805",
    "claude-opus-4-20250514",
    "claude-sonnet-4-5-20250929",
    "claude-sonnet-4-20250514",
    "claude-3-7-sonnet-20250219",
    "claude-3-5-haiku-20241022",
];

/// An Anthropic-compatible upstream.
pub struct Claude {
    agent: ShardedAgent,
    api_root: String,
    /// The messages URL, when the agent has a plain-HTTP client for it.
    messages_target: Option<Target>,
    api_key: Secret,
}

impl Claude {
    /// Validates the settings; the key is required.
    pub fn new(
        agent: impl Into<ShardedAgent>,
        config: &ClaudeConfig,
    ) -> Result<Self, crate::Error> {
        let api_key = config
            .api_key
            .clone()
            .ok_or_else(|| crate::Error::Config("claude-custom needs --claude-api-key".into()))?;
        let agent: ShardedAgent = agent.into();
        let api_root = api_root(&config.base_url);
        Ok(Self {
            messages_target: agent
                .plain()
                .and_then(|_| Target::post(&format!("{api_root}/v1/messages"))),
            agent,
            api_root,
            api_key,
        })
    }
}

/// `https://api.anthropic.com`, `…/` and `…/v1` all mean the same root.
pub fn api_root(base_url: &str) -> String {
    let trimmed = base_url.trim_end_matches('/');
    trimmed.strip_suffix("/v1").unwrap_or(trimmed).to_owned()
}

impl Claude {
    /// The request for `req`, body not yet attached, built in a frame of
    /// its own (see `OpenAi::request`).
    #[inline(never)]
    fn request(
        &self,
        req: &UpstreamRequest<'_>,
    ) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
        let mut builder = self
            .agent
            .pick()
            .post(format!("{}/v1/messages", self.api_root))
            .header("x-api-key", self.api_key.expose())
            .header("Content-Type", "application/json");
        let mut version_sent = false;
        for (name, value) in &req.forward_headers {
            version_sent |= *name == "anthropic-version";
            builder = builder.header(*name, value);
        }
        if !version_sent {
            builder = builder.header("anthropic-version", ANTHROPIC_VERSION);
        }
        if req.stream {
            builder = builder.header("Accept", "text/event-stream");
        }
        http::bounded(builder, req.timeout)
    }
}

impl Provider for Claude {
    fn call(&self, req: &UpstreamRequest<'_>) -> Result<UpstreamResponse, UpstreamError> {
        if let (Some(client), Some(target), None) =
            (self.agent.plain(), &self.messages_target, req.timeout)
        {
            let version_sent = req
                .forward_headers
                .iter()
                .any(|(name, _)| *name == "anthropic-version");
            let mut headers = vec![
                ("x-api-key", self.api_key.expose()),
                ("Content-Type", "application/json"),
            ];
            if !version_sent {
                headers.push(("anthropic-version", ANTHROPIC_VERSION));
            }
            if req.stream {
                headers.push(("Accept", "text/event-stream"));
            }
            return client.post(target, &headers, &req.forward_headers, &req.body);
        }
        self.request(req)
            .send(&req.body[..])
            .map(http::into_upstream)
            .map_err(http::map_error)
    }

    fn models(&self) -> Result<Vec<ModelInfo>, UpstreamError> {
        let listed = self
            .agent
            .pick()
            .get(format!("{}/v1/models", self.api_root))
            .header("x-api-key", self.api_key.expose())
            .header("anthropic-version", ANTHROPIC_VERSION)
            .call()
            .ok()
            .filter(|r| r.status().is_success())
            .and_then(|r| {
                r.into_body()
                    .with_config()
                    .limit(4 << 20)
                    .read_to_vec()
                    .ok()
            })
            .and_then(|raw| serde_json::from_slice::<serde_json::Value>(&raw).ok());
        let ids: Vec<String> = match listed {
            Some(body) => body["data"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .filter_map(|m| m["id"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            None => FALLBACK_MODELS.iter().map(|s| (*s).to_owned()).collect(),
        };
        Ok(ModelInfo::list(ids, "anthropic"))
    }

    fn probe(&self, timeout: Duration) -> Probe {
        let builder = self
            .agent
            .pick()
            .get(format!("{}/v1/models", self.api_root))
            .header("x-api-key", self.api_key.expose())
            .header("anthropic-version", ANTHROPIC_VERSION);
        match http::bounded(builder, Some(timeout)).call() {
            Ok(resp) => Probe::Answered(resp.status().as_u16()),
            Err(e) => Probe::Failed(http::map_error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::api_root;

    #[test]
    fn base_url_normalisation() {
        assert_eq!(
            api_root("https://api.anthropic.com"),
            "https://api.anthropic.com"
        );
        assert_eq!(
            api_root("https://api.anthropic.com/v1/"),
            "https://api.anthropic.com"
        );
        assert_eq!(
            api_root("http://127.0.0.1:9/proxy/v1"),
            "http://127.0.0.1:9/proxy"
        );
    }
}
