//! A program that embeds aiproxy and serves `openai-custom` with a
//! provider of its own, until SIGTERM or SIGINT (SIGHUP reloads the same
//! configuration, which keeps the provider instance).
//!
//! ```text
//! cargo run --example embed -- 3000 [API_KEY]
//! curl -s localhost:3000/v1/chat/completions -H "Content-Type: application/json" \
//!   -d '{"model":"shout-1","messages":[{"role":"user","content":"hello"}]}'
//! ```
//!
//! `Shout` answers a chat completion with the last user message in
//! capitals after the id of the instance that answered, whole or streamed
//! word by word. Clients of every protocol reach it: the gateway converts
//! Anthropic, Gemini and Responses requests into the OpenAI chat
//! completions `Shout` reads, and its answers back.
//! tests/python/test_embed.py drives it with the OpenAI and Anthropic SDKs.

use std::io::Cursor;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aiproxy::config::Secret;
use aiproxy::protocol::ModelInfo;
use aiproxy::providers::{
    Probe, Provider, ProviderKind, UpstreamError, UpstreamRequest, UpstreamResponse,
};
use aiproxy::{Config, Extensions};
use serde_json::{Value, json};

/// The provider: stateless but for a count of the calls it answered.
struct Shout {
    instance: String,
    calls: AtomicU64,
}

impl Provider for Shout {
    fn call(&self, req: &UpstreamRequest<'_>) -> Result<UpstreamResponse, UpstreamError> {
        let body: Value = match serde_json::from_slice(&req.body) {
            Ok(body) => body,
            Err(e) => {
                // An answer in the family's error shape, relayed to the
                // client in its own protocol.
                let error = json!({"error": {"message": format!("invalid JSON: {e}"),
                                              "type": "invalid_request_error"}});
                return Ok(UpstreamResponse::whole(400, error.to_string().into_bytes()));
            }
        };
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        let text = format!(
            "{} says: {}",
            self.instance,
            last_user_text(&body).to_uppercase()
        );
        let id = format!("chatcmpl-shout{n}");
        let model = body["model"].as_str().unwrap_or(&req.model);
        let usage = json!({"prompt_tokens": 1, "completion_tokens": text.split(' ').count(),
                           "total_tokens": 1 + text.split(' ').count()});
        if !req.stream {
            let answer = json!({
                "id": id, "object": "chat.completion", "created": 0, "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text}}],
                "usage": usage,
            });
            return Ok(UpstreamResponse::whole(
                200,
                answer.to_string().into_bytes(),
            ));
        }
        // The OpenAI family's server-sent events: a role, the words, the
        // finish reason, usage when asked for, [DONE].
        let chunk = |delta: Value, finish: Option<&str>| {
            let v = json!({"id": id, "object": "chat.completion.chunk", "created": 0,
                           "model": model,
                           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
            format!("data: {v}\n\n")
        };
        let mut sse = chunk(json!({"role": "assistant", "content": ""}), None);
        for (i, word) in text.split(' ').enumerate() {
            let piece = if i == 0 {
                word.to_owned()
            } else {
                format!(" {word}")
            };
            sse.push_str(&chunk(json!({ "content": piece }), None));
        }
        sse.push_str(&chunk(json!({}), Some("stop")));
        if body["stream_options"]["include_usage"] == true {
            let v = json!({"id": id, "object": "chat.completion.chunk", "created": 0,
                           "model": model, "choices": [], "usage": usage});
            sse.push_str(&format!("data: {v}\n\n"));
        }
        sse.push_str("data: [DONE]\n\n");
        Ok(UpstreamResponse {
            status: 200,
            content_length: None,
            retry_after: None,
            body: Box::new(Cursor::new(sse.into_bytes())),
        })
    }

    fn models(&self) -> Result<Vec<ModelInfo>, UpstreamError> {
        Ok(ModelInfo::list(["shout-1"], "embed-example"))
    }

    fn probe(&self, _timeout: Duration) -> Probe {
        Probe::Answered(200)
    }
}

/// The text of the last user message (a string, or text parts).
fn last_user_text(body: &Value) -> String {
    let Some(message) = body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
    else {
        return String::new();
    };
    match &message["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let port = match args.next().map(|p| p.parse::<u16>()) {
        None => 3000,
        Some(Ok(port)) => port,
        Some(Err(e)) => {
            eprintln!("usage: embed [PORT] [API_KEY]: {e}");
            return ExitCode::from(2);
        }
    };
    let api_key = args.next();
    let config = move || Config {
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        model_providers: vec![ProviderKind::OpenAiCustom],
        api_keys: api_key.iter().map(Secret::new).collect(),
        ..Config::default()
    };
    let extensions = Extensions::new().provider(ProviderKind::OpenAiCustom, |instance| {
        Ok(Box::new(Shout {
            instance: instance.id.to_owned(),
            calls: AtomicU64::new(0),
        }))
    });
    let first = config();
    match aiproxy::run_with(first, extensions, move || Ok(config())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("embed: {e}");
            ExitCode::FAILURE
        }
    }
}
