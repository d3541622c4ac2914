//! openai-custom: any OpenAI-compatible chat completions endpoint.

use std::time::Duration;

use super::http::ShardedAgent;
use super::plain_http::Target;
use super::{Probe, Provider, UpstreamError, UpstreamRequest, UpstreamResponse, http};
use crate::config::OpenAiConfig;
use crate::protocol::ModelInfo;

/// An OpenAI-compatible upstream.
pub struct OpenAi {
    agent: ShardedAgent,
    base_url: String,
    /// Built once: they are the same for every request.
    chat_url: String,
    /// `chat_url`, when the agent has a plain-HTTP client for it.
    chat_target: Option<Target>,
    authorization: String,
}

impl OpenAi {
    /// Validates the settings; the key is required.
    pub fn new(
        agent: impl Into<ShardedAgent>,
        config: &OpenAiConfig,
    ) -> Result<Self, crate::Error> {
        let api_key = config
            .api_key
            .clone()
            .ok_or_else(|| crate::Error::Config("openai-custom needs --openai-api-key".into()))?;
        let base_url = config.base_url.trim_end_matches('/').to_owned();
        let agent: ShardedAgent = agent.into();
        let chat_url = format!("{base_url}/chat/completions");
        Ok(Self {
            chat_target: agent.plain().and_then(|_| Target::post(&chat_url)),
            agent,
            chat_url,
            authorization: format!("Bearer {}", api_key.expose()),
            base_url,
        })
    }
}

impl OpenAi {
    /// The request for `req`, body not yet attached. Built in a frame of
    /// its own: each builder step moves the builder, and those copies
    /// would otherwise stay in the frame that is on the stack while the
    /// worker waits for the answer.
    #[inline(never)]
    fn request(
        &self,
        req: &UpstreamRequest<'_>,
    ) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
        let mut builder = self
            .agent
            .pick()
            .post(&self.chat_url)
            .header("Authorization", &self.authorization)
            .header("Content-Type", "application/json");
        if req.stream {
            builder = builder.header("Accept", "text/event-stream");
        }
        for (name, value) in &req.forward_headers {
            builder = builder.header(*name, value);
        }
        http::bounded(builder, req.timeout)
    }
}

impl Provider for OpenAi {
    fn call(&self, req: &UpstreamRequest<'_>) -> Result<UpstreamResponse, UpstreamError> {
        if let (Some(client), Some(target), None) =
            (self.agent.plain(), &self.chat_target, req.timeout)
        {
            let headers = [
                ("Authorization", self.authorization.as_str()),
                ("Content-Type", "application/json"),
                ("Accept", "text/event-stream"),
            ];
            let headers = if req.stream {
                &headers[..]
            } else {
                &headers[..2]
            };
            return client.post(target, headers, &req.forward_headers, &req.body);
        }
        self.request(req)
            .send(&req.body[..])
            .map(http::into_upstream)
            .map_err(http::map_error)
    }

    fn models(&self) -> Result<Vec<ModelInfo>, UpstreamError> {
        let resp = self
            .agent
            .pick()
            .get(format!("{}/models", self.base_url))
            .header("Authorization", &self.authorization)
            .call()
            .map_err(http::map_error)?;
        if !resp.status().is_success() {
            return Err(UpstreamError::Connect(format!(
                "model list answered {}",
                resp.status()
            )));
        }
        let raw = resp
            .into_body()
            .with_config()
            .limit(4 << 20)
            .read_to_vec()
            .map_err(|e| UpstreamError::Connect(format!("model list unreadable: {e}")))?;
        let body: serde_json::Value = serde_json::from_slice(&raw)
            .map_err(|e| UpstreamError::Connect(format!("model list is not JSON: {e}")))?;
        Ok(body["data"]
            .as_array()
            .map(|models| ModelInfo::list(models.iter().filter_map(|m| m["id"].as_str()), "openai"))
            .unwrap_or_default())
    }

    fn probe(&self, timeout: Duration) -> Probe {
        let builder = self
            .agent
            .pick()
            .get(format!("{}/models", self.base_url))
            .header("Authorization", &self.authorization);
        match http::bounded(builder, Some(timeout)).call() {
            Ok(resp) => Probe::Answered(resp.status().as_u16()),
            Err(e) => Probe::Failed(http::map_error(e)),
        }
    }
}
