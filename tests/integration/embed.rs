//! The embedding API with a provider of the host's own
//! (`aiproxy::start_with` and `Extensions::provider`): every client
//! protocol reaches it through the converters, the kinds it does not
//! replace stay built in, a reload keeps its unchanged instances and
//! builds new ones with the factory, and a factory's error fails the
//! start. tests/python/test_embed.py drives examples/embed.rs with the
//! SDKs.

use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aiproxy::extensions::InstanceInfo;
use aiproxy::pools::{Format, parse};
use aiproxy::protocol::ModelInfo;
use aiproxy::providers::{
    Probe, Provider, ProviderKind, UpstreamError, UpstreamRequest, UpstreamResponse,
};
use aiproxy::{Config, Extensions};
use serde_json::{Value, json};

use super::support::{get, post_json};

/// What the provider saw: model, the request body as JSON, streamed.
type Seen = Arc<Mutex<Vec<(String, Value, bool)>>>;

/// A provider that records its requests and answers `<instance id>: call
/// <n>`, whole or as one streamed piece; the model `fail` gets no answer.
struct Recorder {
    id: String,
    seen: Seen,
}

impl Provider for Recorder {
    fn call(&self, req: &UpstreamRequest<'_>) -> Result<UpstreamResponse, UpstreamError> {
        let body: Value = serde_json::from_slice(&req.body).expect("the gateway sends JSON");
        if req.model == "fail" {
            return Err(UpstreamError::Connect("recorder: upstream down".into()));
        }
        let mut seen = self.seen.lock().unwrap();
        seen.push((req.model.clone(), body, req.stream));
        let text = format!("{}: call {}", self.id, seen.len() - 1);
        let usage = json!({"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5});
        if !req.stream {
            let answer = json!({
                "id": "rec", "object": "chat.completion", "created": 0, "model": req.model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text}}],
                "usage": usage,
            });
            return Ok(UpstreamResponse::whole(
                200,
                answer.to_string().into_bytes(),
            ));
        }
        let chunk = |delta: Value, finish: Option<&str>| {
            let v = json!({"id": "rec", "object": "chat.completion.chunk", "created": 0,
                           "model": req.model,
                           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
            format!("data: {v}\n\n")
        };
        let sse = [
            chunk(json!({"role": "assistant", "content": ""}), None),
            chunk(json!({ "content": text }), None),
            chunk(json!({}), Some("stop")),
            "data: [DONE]\n\n".to_owned(),
        ]
        .concat();
        Ok(UpstreamResponse {
            status: 200,
            content_length: None,
            retry_after: None,
            body: Box::new(Cursor::new(sse.into_bytes())),
        })
    }

    fn models(&self) -> Result<Vec<ModelInfo>, UpstreamError> {
        Ok(ModelInfo::list(["rec-1"], "host"))
    }

    fn probe(&self, _timeout: Duration) -> Probe {
        Probe::Answered(200)
    }
}

/// The recorded requests and the (id, name) of every instance built.
#[derive(Clone, Default)]
struct Host {
    seen: Seen,
    built: Arc<Mutex<Vec<(String, String)>>>,
}

impl Host {
    fn extensions(&self) -> Extensions {
        let host = self.clone();
        Extensions::new().provider(ProviderKind::OpenAiCustom, move |i: &InstanceInfo<'_>| {
            assert_eq!(i.kind, ProviderKind::OpenAiCustom);
            host.built
                .lock()
                .unwrap()
                .push((i.id.to_owned(), i.name.to_owned()));
            Ok(Box::new(Recorder {
                id: i.id.to_owned(),
                seen: Arc::clone(&host.seen),
            }))
        })
    }

    fn built(&self) -> Vec<(String, String)> {
        self.built.lock().unwrap().clone()
    }

    fn last(&self) -> (String, Value, bool) {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request")
    }
}

fn config() -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        model_providers: vec![ProviderKind::OpenAiCustom, ProviderKind::Mock],
        ..Config::default()
    };
    config.upstream.max_retries = 0;
    config.cache.enabled = false;
    config
}

const CHAT: &str = r#"{"model":"rec-1","messages":[{"role":"user","content":"hi"}]}"#;

#[test]
fn a_custom_provider_serves_every_client_protocol() {
    let host = Host::default();
    let handle = aiproxy::start_with(config(), host.extensions()).unwrap();
    let addr = handle.addr();
    assert_eq!(
        host.built(),
        [("openai-custom-0".to_owned(), "openai-custom".to_owned())]
    );

    // OpenAI client: the body reaches the provider as sent.
    let r = post_json(addr, "/v1/chat/completions", "", CHAT);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "openai-custom-0: call 0"
    );
    let (model, body, stream) = host.last();
    assert_eq!((model.as_str(), stream), ("rec-1", false));
    assert_eq!(body["messages"], json!([{"role": "user", "content": "hi"}]));

    // Anthropic client: the provider sees OpenAI chat completions.
    let r = post_json(
        addr,
        "/v1/messages",
        "anthropic-version: 2023-06-01\r\n",
        r#"{"model":"rec-1","max_tokens":50,"system":"be brief",
            "messages":[{"role":"user","content":"hello"}]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = r.json();
    assert_eq!(answer["type"], "message");
    assert_eq!(answer["content"][0]["text"], "openai-custom-0: call 1");
    assert_eq!(answer["stop_reason"], "end_turn");
    let (_, body, _) = host.last();
    let roles: Vec<&str> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert!(
        roles
            .first()
            .is_some_and(|r| *r == "system" || *r == "developer")
            && roles[1] == "user",
        "{body}"
    );

    // Gemini client.
    let r = post_json(
        addr,
        "/v1beta/models/rec-1:generateContent",
        "",
        r#"{"contents":[{"role":"user","parts":[{"text":"hey"}]}]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["candidates"][0]["content"]["parts"][0]["text"],
        "openai-custom-0: call 2"
    );

    // A stream, relayed as the client's server-sent events.
    let r = post_json(
        addr,
        "/v1/chat/completions",
        "",
        r#"{"model":"rec-1","stream":true,"messages":[{"role":"user","content":"s"}]}"#,
    );
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/event-stream"))
    );
    let text = r.text();
    assert!(
        text.contains("openai-custom-0: call 3") && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );
    assert!(host.last().2, "the provider was asked for a stream");

    // Its models are listed beside the built-in mock's; the mock, not
    // replaced, still answers its prefix.
    let models = get(addr, "/v1/models").json();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"rec-1") && ids.contains(&"mock-small"),
        "{ids:?}"
    );
    let r = post_json(addr, "/mock/v1/chat/completions", "", CHAT);
    assert!(
        r.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .starts_with("Mock answer to"),
        "{}",
        r.text()
    );

    // No answer from the provider: the client's protocol's error.
    let r = post_json(
        addr,
        "/v1/messages",
        "anthropic-version: 2023-06-01\r\n",
        r#"{"model":"fail","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#,
    );
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["type"], "error");
    assert_eq!(host.seen.lock().unwrap().len(), 4);
    assert_eq!(host.built().len(), 1, "built once");
    assert!(handle.shutdown());
}

#[test]
fn a_reload_keeps_the_unchanged_instance_and_builds_new_members() {
    let host = Host::default();
    let handle = aiproxy::start_with(config(), host.extensions()).unwrap();
    handle.reload(&mut || Ok(config()));
    assert_eq!(host.built().len(), 1, "unchanged: kept, not rebuilt");
    let r = post_json(handle.addr(), "/v1/chat/completions", "", CHAT);
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "openai-custom-0: call 0"
    );

    let mut pooled = config();
    pooled.pools = Some(
        parse(
            r#"{"openai-custom": [{"uuid": "a"}, {"uuid": "b", "customName": "Bee"}]}"#,
            Format::Json,
        )
        .unwrap(),
    );
    handle.reload(&mut || Ok(pooled.clone()));
    assert_eq!(
        host.built()[1..],
        [
            ("a".to_owned(), "a".to_owned()),
            ("b".to_owned(), "Bee".to_owned())
        ]
    );
    // Round robin over the two members.
    let answers: Vec<String> = (0..2)
        .map(|_| {
            let r = post_json(handle.addr(), "/v1/chat/completions", "", CHAT);
            r.json()["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .split(':')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    let mut ids = answers.clone();
    ids.sort();
    assert_eq!(ids, ["a", "b"], "{answers:?}");
    assert!(handle.shutdown());
}

#[test]
fn a_factory_error_fails_the_start() {
    let extensions = Extensions::new().provider(ProviderKind::OpenAiCustom, |_| {
        Err(aiproxy::Error::Provider("no upstream for this host".into()))
    });
    let err = match aiproxy::start_with(config(), extensions) {
        Ok(_) => panic!("started despite the factory's error"),
        Err(e) => e,
    };
    assert!(
        err.to_string().contains("no upstream for this host"),
        "{err}"
    );
    assert_eq!(err.exit_code(), 2);
}
