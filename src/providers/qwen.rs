//! qwen-api: Qwen's OpenAI-compatible chat API with the OAuth login of
//! Qwen Code.
//!
//! Requests get the dummy `ext` function tool Qwen Code sends (the model
//! otherwise emits stray tokens in streams); any call of it is removed
//! from answers, streamed or whole, with the remaining calls renumbered.
//! Built-in tools declared the OpenAI way are mapped to the DashScope
//! request switches: `{"type":"web_search"}` (or `web_search_options`) →
//! `enable_search`, `{"type":"code_interpreter"}` →
//! `enable_code_interpreter` with `enable_thinking` (DashScope runs the
//! interpreter only in thinking mode and only streamed, so a whole answer
//! is then streamed upstream and assembled here).

use std::collections::HashMap;
use std::io::Read;
use std::time::Duration;

use serde_json::{Map, Value, json};
use ureq::Agent;

use super::oauth::{self, Credential, Format};
use super::transform::{SseMap, TransformReader};
use super::{Probe, Provider, UpstreamError, UpstreamRequest, UpstreamResponse, http};
use crate::config::{DEFAULT_QWEN_BASE_URL, QwenConfig};
use crate::log;
use crate::protocol::ModelInfo;
use crate::protocol::sse::SseDecoder;

/// Qwen Code's public OAuth client id (no secret).
pub const CLIENT_ID: &str = "f0304373b74a44d2b584a3fb70ca9e56";
/// Models listed by `/v1/models`; any other name is passed through.
pub const MODELS: &[&str] = &[
    "qwen3-coder-plus",
    "qwen3-coder-flash",
    "coder-model",
    "vision-model",
];
/// Qwen Code version announced in the user agent.
const QWEN_CODE_VERSION: &str = "0.14.2";
/// Name of the dummy tool.
const EXT: &str = "ext";
/// Largest whole answer read.
const MAX_ANSWER_BYTES: u64 = 64 << 20;

/// The Qwen Code credentials file (`~/.qwen/oauth_creds.json`).
pub struct QwenFormat {
    agent: Agent,
    token_url: String,
}

impl Format for QwenFormat {
    fn token(&self, creds: &Value) -> Option<(String, Option<u64>)> {
        oauth::token_with_expiry_ms(creds)
    }

    fn refresh(&self, creds: &Value) -> Result<Map<String, Value>, String> {
        let keep = ["refresh_token", "token_type", "resource_url"];
        oauth::refresh_with_expiry_ms(
            &self.agent,
            &self.token_url,
            creds,
            &[("client_id", CLIENT_ID)],
            &keep,
            "qwen",
        )
    }
}

/// The qwen-api provider.
pub struct Qwen {
    agent: Agent,
    base_url: Option<String>,
    ext_tool: bool,
    cred: Credential<QwenFormat>,
}

/// `portal.qwen.ai` → `https://portal.qwen.ai/v1`: a scheme when missing,
/// `/v1` when missing.
pub fn base_url(resource: &str) -> String {
    let r = resource.trim().trim_end_matches('/');
    let with_scheme = if r.starts_with("http://") || r.starts_with("https://") {
        r.to_owned()
    } else {
        format!("https://{r}")
    };
    if with_scheme.ends_with("/v1") {
        with_scheme
    } else {
        format!("{with_scheme}/v1")
    }
}

fn user_agent() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "x64",
        "aarch64" => "arm64",
        other => other,
    };
    format!(
        "QwenCode/{QWEN_CODE_VERSION} ({}; {arch})",
        std::env::consts::OS
    )
}

/// What [`prepare`] did to a request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Prepared {
    /// `code_interpreter` was asked for (upstream must stream).
    pub code_interpreter: bool,
    /// `web_search` was asked for.
    pub web_search: bool,
}

/// Maps built-in tools to DashScope switches and, with `ext_tool`, puts
/// the dummy `ext` function tool first in `tools` (created if absent).
pub fn prepare(body: &mut Value, ext_tool: bool) -> Prepared {
    let mut done = Prepared::default();
    let Some(obj) = body.as_object_mut() else {
        return done;
    };
    let mut search_options = None;
    if let Some(tools) = obj.get_mut("tools").and_then(Value::as_array_mut) {
        tools.retain(|t| {
            let ty = t["type"].as_str().unwrap_or("function");
            if ty.starts_with("web_search") {
                done.web_search = true;
                if let Some(o) = t.get("search_options").filter(|o| o.is_object()) {
                    search_options = Some(o.clone());
                }
                false
            } else if ty == "code_interpreter" {
                done.code_interpreter = true;
                false
            } else {
                true
            }
        });
    }
    if obj.remove("web_search_options").is_some() {
        done.web_search = true;
    }
    if done.web_search {
        obj.insert("enable_search".into(), Value::Bool(true));
        if let Some(o) = search_options {
            obj.entry("search_options").or_insert(o);
        }
    }
    if done.code_interpreter {
        obj.insert("enable_code_interpreter".into(), Value::Bool(true));
        obj.insert("enable_thinking".into(), Value::Bool(true));
    }
    if ext_tool {
        let tools = obj
            .entry("tools")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Some(tools) = tools.as_array_mut()
            && !tools.iter().any(|t| t["function"]["name"] == EXT)
        {
            tools.insert(
                0,
                json!({"type": "function", "function": {"name": EXT,
                    "description": "Internal extension tool",
                    "parameters": {"type": "object", "properties": {}}}}),
            );
        }
    } else if obj
        .get("tools")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
    {
        obj.remove("tools");
    }
    done
}

/// Removes `ext` calls from streamed chunks and renumbers the rest.
#[derive(Debug, Default)]
pub struct ExtStripper {
    /// (choice, upstream tool index) → client index, `None` for `ext`.
    calls: HashMap<(u64, u64), Option<u64>>,
    /// Per choice: next client index, and whether a real call was seen.
    choices: HashMap<u64, (u64, bool)>,
}

impl ExtStripper {
    /// Rewrites one chunk; `false` when nothing is left worth sending.
    pub fn chunk(&mut self, v: &mut Value) -> bool {
        let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) else {
            return true;
        };
        let mut keep = choices.is_empty();
        for choice in choices.iter_mut() {
            let ci = choice["index"].as_u64().unwrap_or(0);
            let delta = choice.get_mut("delta").and_then(Value::as_object_mut);
            let mut stripped = false;
            if let Some(delta) = delta {
                if let Some(calls) = delta.get_mut("tool_calls").and_then(Value::as_array_mut) {
                    calls.retain_mut(|call| {
                        let ti = call["index"].as_u64().unwrap_or(0);
                        let entry = *self.calls.entry((ci, ti)).or_insert_with(|| {
                            if call["function"]["name"] == EXT {
                                None
                            } else {
                                let c = self.choices.entry(ci).or_default();
                                c.0 += 1;
                                c.1 = true;
                                Some(c.0 - 1)
                            }
                        });
                        match entry {
                            Some(client) => {
                                call["index"] = json!(client);
                                true
                            }
                            None => false,
                        }
                    });
                    if calls.is_empty() {
                        delta.remove("tool_calls");
                        stripped = true;
                    }
                }
                if !delta.is_empty() || !stripped {
                    keep = true;
                }
            } else {
                keep = true;
            }
            if choice["finish_reason"] == "tool_calls"
                && !self.choices.get(&ci).is_some_and(|c| c.1)
            {
                choice["finish_reason"] = json!("stop");
            }
            if !choice["finish_reason"].is_null() {
                keep = true;
            }
        }
        keep || v.get("usage").is_some_and(|u| !u.is_null())
    }
}

/// Removes `ext` calls from a whole answer.
pub fn strip_ext_whole(v: &mut Value) {
    let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) else {
        return;
    };
    for choice in choices {
        let message = &mut choice["message"];
        let Some(calls) = message.get_mut("tool_calls").and_then(Value::as_array_mut) else {
            continue;
        };
        calls.retain(|c| c["function"]["name"] != EXT);
        if calls.is_empty() {
            if let Some(m) = message.as_object_mut() {
                m.remove("tool_calls");
            }
            if choice["finish_reason"] == "tool_calls" {
                choice["finish_reason"] = json!("stop");
            }
        }
    }
}

/// Assembles a whole answer from an OpenAI SSE stream (for requests that
/// DashScope serves only streamed).
pub fn assemble(sse: &[u8]) -> Value {
    let mut events = Vec::new();
    let mut decoder = SseDecoder::new();
    decoder.feed(sse, &mut events);
    decoder.finish(&mut events);
    let mut id = Value::Null;
    let mut model = Value::Null;
    let mut created = Value::Null;
    let mut content = String::new();
    let mut reasoning = String::new();
    let mut calls: Vec<Value> = Vec::new();
    let mut finish = Value::Null;
    let mut usage = Value::Null;
    for ev in events {
        let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
            continue;
        };
        if v.get("error").is_some() {
            return v;
        }
        for (slot, key) in [
            (&mut id, "id"),
            (&mut model, "model"),
            (&mut created, "created"),
        ] {
            if slot.is_null() {
                *slot = v[key].clone();
            }
        }
        if v["usage"].is_object() {
            usage = v["usage"].clone();
        }
        let choice = &v["choices"][0];
        if !choice["finish_reason"].is_null() {
            finish = choice["finish_reason"].clone();
        }
        let delta = &choice["delta"];
        content.push_str(delta["content"].as_str().unwrap_or_default());
        reasoning.push_str(delta["reasoning_content"].as_str().unwrap_or_default());
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let i = call["index"].as_u64().unwrap_or(0) as usize;
            while calls.len() <= i {
                calls.push(json!({"id": "", "type": "function", "function": {"name": "", "arguments": ""}}));
            }
            let slot = &mut calls[i];
            if let Some(s) = call["id"].as_str() {
                slot["id"] = json!(s);
            }
            for key in ["name", "arguments"] {
                if let Some(s) = call["function"][key].as_str() {
                    let joined = format!("{}{s}", slot["function"][key].as_str().unwrap_or(""));
                    slot["function"][key] = json!(joined);
                }
            }
        }
    }
    let mut message = json!({"role": "assistant", "content": content});
    if !reasoning.is_empty() {
        message["reasoning_content"] = json!(reasoning);
    }
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let mut out = json!({"id": id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}]});
    if !usage.is_null() {
        out["usage"] = usage;
    }
    out
}

/// 403/429 answers that are about the daily quota become 429.
fn quota_status(status: u16, body: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(body).to_ascii_lowercase();
    if status == 403
        && (text.contains("insufficient_quota")
            || text.contains("quota_exceeded")
            || text.contains("quota exceeded"))
    {
        429
    } else {
        status
    }
}

impl Qwen {
    /// Loads the credentials file; fails when it cannot be read.
    pub fn new(agent: Agent, config: &QwenConfig) -> Result<Self, crate::Error> {
        let path = config
            .oauth_creds_file
            .clone()
            .unwrap_or_else(|| oauth::home_path(".qwen/oauth_creds.json"));
        let format = QwenFormat {
            agent: agent.clone(),
            token_url: config.token_url.clone(),
        };
        let cred = Credential::load(path, format).map_err(|e| {
            crate::Error::Provider(format!(
                "qwen-api: {e} (log in with Qwen Code first, or set --qwen-oauth-creds-file)"
            ))
        })?;
        Ok(Self {
            agent,
            base_url: config.base_url.as_deref().map(base_url),
            ext_tool: config.ext_tool,
            cred,
        })
    }

    fn send(
        &self,
        token: &oauth::Token,
        body: &[u8],
        stream: bool,
        timeout: Option<Duration>,
    ) -> Result<ureq::http::Response<ureq::Body>, UpstreamError> {
        let base = self.base_url.clone().unwrap_or_else(|| {
            token.creds["resource_url"]
                .as_str()
                .filter(|r| !r.trim().is_empty())
                .map_or_else(|| DEFAULT_QWEN_BASE_URL.to_owned(), base_url)
        });
        let ua = user_agent();
        let builder = self
            .agent
            .post(format!("{base}/chat/completions"))
            .header("Authorization", format!("Bearer {}", token.access))
            .header("Content-Type", "application/json")
            .header(
                "Accept",
                if stream {
                    "text/event-stream"
                } else {
                    "application/json"
                },
            )
            .header("User-Agent", &ua)
            .header("X-DashScope-CacheControl", "enable")
            .header("X-DashScope-AuthType", "qwen-oauth")
            .header("X-DashScope-UserAgent", &ua);
        http::bounded(builder, timeout)
            .send(body)
            .map_err(http::map_error)
    }
}

fn credential_error(message: String) -> UpstreamError {
    UpstreamError::Credential(format!("qwen-api: no usable OAuth access token: {message}"))
}

impl Provider for Qwen {
    fn call(&self, req: &UpstreamRequest<'_>) -> Result<UpstreamResponse, UpstreamError> {
        let mut body: Value = match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(e) => {
                let err = json!({"error": {"message": format!("Invalid JSON in request body: {e}"),
                    "type": "invalid_request_error", "code": null}});
                return Ok(UpstreamResponse::whole(400, err.to_string().into_bytes()));
            }
        };
        let prepared = prepare(&mut body, self.ext_tool);
        // DashScope runs the code interpreter only on streamed requests.
        let upstream_stream = req.stream || prepared.code_interpreter;
        if upstream_stream && !req.stream {
            body["stream"] = json!(true);
            body["stream_options"] = json!({"include_usage": true});
        }
        let bytes = body.to_string().into_bytes();
        let token = self.cred.token().map_err(credential_error)?;
        let mut resp = self.send(&token, &bytes, upstream_stream, req.timeout)?;
        if matches!(resp.status().as_u16(), 401 | 403) {
            match self.cred.refresh_rejected(token.generation) {
                Ok(Some(fresh)) => {
                    log::info("qwen-api: token rejected; retrying with a refreshed token");
                    resp = self.send(&fresh, &bytes, upstream_stream, req.timeout)?;
                }
                Ok(None) => {}
                Err(e) => return Err(credential_error(e)),
            }
        }
        let status = resp.status().as_u16();
        let retry_after = http::retry_after(&resp);
        let reader = resp.into_body().into_reader();
        if status >= 400 {
            let mut raw = Vec::new();
            let _ = reader.take(1 << 20).read_to_end(&mut raw);
            let mut out = UpstreamResponse::whole(quota_status(status, &raw), raw);
            out.retry_after = retry_after;
            return Ok(out);
        }
        if req.stream {
            let mut stripper = ExtStripper::default();
            let map = SseMap::new(move |data: &str| {
                let Ok(mut v) = serde_json::from_str::<Value>(data) else {
                    return Some(data.to_owned());
                };
                stripper.chunk(&mut v).then(|| v.to_string())
            });
            return Ok(UpstreamResponse {
                status,
                content_length: None,
                retry_after: None,
                body: Box::new(TransformReader::new(reader, map)),
            });
        }
        let mut raw = Vec::new();
        reader
            .take(MAX_ANSWER_BYTES)
            .read_to_end(&mut raw)
            .map_err(|e| UpstreamError::Connect(format!("upstream answer unreadable: {e}")))?;
        let mut whole = if upstream_stream {
            assemble(&raw)
        } else {
            match serde_json::from_slice::<Value>(&raw) {
                Ok(v) => v,
                Err(_) => return Ok(UpstreamResponse::whole(status, raw)),
            }
        };
        strip_ext_whole(&mut whole);
        Ok(UpstreamResponse::whole(
            status,
            whole.to_string().into_bytes(),
        ))
    }

    fn models(&self) -> Result<Vec<ModelInfo>, UpstreamError> {
        Ok(ModelInfo::list(MODELS.iter().copied(), "qwen"))
    }

    fn probe(&self, _timeout: Duration) -> Probe {
        match self.cred.token() {
            Ok(_) => Probe::CredentialOk,
            Err(e) => Probe::Failed(credential_error(e)),
        }
    }

    fn status(&self) -> Option<Value> {
        Some(self.cred.status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_from_resource_url() {
        assert_eq!(base_url("portal.qwen.ai"), "https://portal.qwen.ai/v1");
        assert_eq!(
            base_url("https://portal.qwen.ai/v1/"),
            "https://portal.qwen.ai/v1"
        );
        assert_eq!(base_url("http://127.0.0.1:9"), "http://127.0.0.1:9/v1");
        assert_eq!(
            base_url("dashscope.aliyuncs.com/compatible-mode"),
            "https://dashscope.aliyuncs.com/compatible-mode/v1"
        );
    }

    #[test]
    fn prepare_maps_builtins_and_adds_ext() {
        let mut body = json!({"model": "m", "messages": [], "tools": [
            {"type": "web_search", "search_options": {"forced_search": true}},
            {"type": "code_interpreter"},
            {"type": "function", "function": {"name": "f", "parameters": {}}}]});
        let p = prepare(&mut body, true);
        assert!(p.web_search && p.code_interpreter);
        assert_eq!(body["enable_search"], true);
        assert_eq!(body["search_options"]["forced_search"], true);
        assert_eq!(body["enable_code_interpreter"], true);
        assert_eq!(body["enable_thinking"], true);
        let names: Vec<&str> = body["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["function"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["ext", "f"]);
        let mut plain = json!({"messages": [], "web_search_options": {}});
        assert!(prepare(&mut plain, false).web_search);
        assert!(plain.get("tools").is_none() && plain.get("web_search_options").is_none());
    }

    #[test]
    fn stream_stripper_drops_ext_and_renumbers() {
        let mut s = ExtStripper::default();
        let mut chunks = [
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 0, "id": "a", "function": {"name": "ext", "arguments": ""}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 0, "function": {"arguments": "{}"}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 1, "id": "b", "function": {"name": "real", "arguments": "{\"x\""}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
        ];
        let kept: Vec<bool> = chunks.iter_mut().map(|c| s.chunk(c)).collect();
        assert_eq!(kept, [false, false, true, true]);
        assert_eq!(
            chunks[2]["choices"][0]["delta"]["tool_calls"][0]["index"],
            0
        );
        assert_eq!(chunks[3]["choices"][0]["finish_reason"], "tool_calls");
        // Only ext called: finish becomes stop.
        let mut s = ExtStripper::default();
        let mut a = json!({"choices": [{"index": 0, "delta": {"content": "hi", "tool_calls": [
            {"index": 0, "id": "a", "function": {"name": "ext", "arguments": "{}"}}]}}]});
        assert!(s.chunk(&mut a));
        assert_eq!(a["choices"][0]["delta"], json!({"content": "hi"}));
        let mut f = json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]});
        assert!(s.chunk(&mut f));
        assert_eq!(f["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn whole_answers_lose_ext_calls() {
        let mut v = json!({"choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": "x", "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "ext", "arguments": "{}"}}]}}]});
        strip_ext_whole(&mut v);
        assert!(v["choices"][0]["message"].get("tool_calls").is_none());
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn assembling_a_streamed_answer() {
        let sse = b"data: {\"id\":\"c1\",\"model\":\"m\",\"created\":1,\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"reasoning_content\":\"r\"}}]}\n\n\
data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"4\"}}]}\n\n\
data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"2\"},\"finish_reason\":\"stop\"}]}\n\n\
data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n";
        let v = assemble(sse);
        assert_eq!(v["id"], "c1");
        assert_eq!(v["choices"][0]["message"]["content"], "42");
        assert_eq!(v["choices"][0]["message"]["reasoning_content"], "r");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["usage"]["prompt_tokens"], 3);
    }

    #[test]
    fn quota_403_becomes_429() {
        assert_eq!(
            quota_status(403, br#"{"error":{"code":"insufficient_quota"}}"#),
            429
        );
        assert_eq!(quota_status(403, b"forbidden"), 403);
    }
}
