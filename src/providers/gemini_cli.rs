//! gemini-cli: Google Code Assist (`cloudcode-pa.googleapis.com`) with the
//! OAuth login of the Gemini CLI.
//!
//! The gateway hands us a plain Gemini `generateContent` body; Code Assist
//! wants it wrapped as `{"model", "project", "request"}` and answers with
//! `{"response": …}` around each answer or SSE chunk. Both directions are
//! handled here, so the rest of the gateway sees ordinary Gemini.
//!
//! The project comes from `--project-id` or is discovered once with
//! `loadCodeAssist` (and `onboardUser` for an account that has none yet).

use std::io::Read;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use ureq::Agent;

use super::oauth::{self, Credential, Format};
use super::transform::{SseMap, TransformReader};
use super::{Probe, Provider, UpstreamError, UpstreamRequest, UpstreamResponse, http};
use crate::config::{GeminiConfig, Secret};
use crate::log;
use crate::protocol::ModelInfo;

/// Models listed by `/v1/models`; any other name is passed through.
pub const MODELS: &[&str] = &[
    "gemini-2.5-pro",
    "gemini-2.5-flash",
    "gemini-2.5-flash-lite",
    "gemini-3-pro-preview",
    "gemini-3-flash-preview",
];

/// Gemini CLI version announced in the user agent.
const CLI_VERSION: &str = "0.31.0";
/// Largest whole answer read.
const MAX_ANSWER_BYTES: u64 = 64 << 20;
/// Largest error or discovery answer read.
const MAX_SMALL_BYTES: u64 = 1 << 20;
/// How long onboarding may take before giving up.
const ONBOARD_BUDGET: Duration = Duration::from_secs(60);
/// First pause between two `onboardUser` polls; doubles up to 2 s.
const ONBOARD_FIRST_POLL: Duration = Duration::from_millis(250);

/// The Gemini CLI credentials file (`~/.gemini/oauth_creds.json`):
/// `access_token`, `refresh_token`, `expiry_date` in ms.
pub struct GoogleFormat {
    agent: Agent,
    token_url: String,
    client_id: String,
    client_secret: Secret,
}

impl Format for GoogleFormat {
    fn token(&self, creds: &Value) -> Option<(String, Option<u64>)> {
        oauth::token_with_expiry_ms(creds)
    }

    fn refresh(&self, creds: &Value) -> Result<Map<String, Value>, String> {
        let client = [
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose()),
        ];
        let keep = ["refresh_token", "id_token", "scope", "token_type"];
        oauth::refresh_with_expiry_ms(
            &self.agent,
            &self.token_url,
            creds,
            &client,
            &keep,
            "gemini",
        )
    }
}

/// The gemini-cli provider.
pub struct GeminiCli {
    agent: Agent,
    base_url: String,
    cred: Credential<GoogleFormat>,
    /// The configured or discovered project; the lock also makes
    /// discovery happen once.
    project: Mutex<Option<String>>,
}

/// A call that ended before the generation request: an answer to relay or
/// a transport failure.
type Early = Result<UpstreamResponse, UpstreamError>;

impl GeminiCli {
    /// Loads the credentials file; fails when it cannot be read.
    pub fn new(agent: Agent, config: &GeminiConfig) -> Result<Self, crate::Error> {
        let path = config
            .oauth_creds_file
            .clone()
            .unwrap_or_else(|| oauth::home_path(".gemini/oauth_creds.json"));
        let format = GoogleFormat {
            agent: agent.clone(),
            token_url: config.token_url.clone(),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
        };
        let cred = Credential::load(path, format).map_err(|e| {
            crate::Error::Provider(format!(
                "gemini-cli: {e} (log in with the Gemini CLI first, or set --gemini-oauth-creds-file)"
            ))
        })?;
        Ok(Self {
            agent,
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            cred,
            project: Mutex::new(config.project_id.clone()),
        })
    }

    fn url(&self, method: &str) -> String {
        format!("{}/v1internal:{method}", self.base_url)
    }

    fn post(
        &self,
        method: &str,
        token: &str,
        body: &[u8],
        model: Option<&str>,
        stream: bool,
        timeout: Option<Duration>,
    ) -> Result<ureq::http::Response<ureq::Body>, UpstreamError> {
        let mut b = self
            .agent
            .post(self.url(method))
            .header("Authorization", format!("Bearer {token}"))
            .header("Content-Type", "application/json")
            .header(
                "Accept",
                if stream {
                    "text/event-stream"
                } else {
                    "application/json"
                },
            );
        if let Some(model) = model {
            b = b
                .header(
                    "User-Agent",
                    format!(
                        "GeminiCLI/{CLI_VERSION}/{model} ({}; {})",
                        std::env::consts::OS,
                        std::env::consts::ARCH
                    ),
                )
                .header(
                    "X-Goog-Api-Client",
                    "google-genai-sdk/1.41.0 gl-node/v22.19.0",
                );
        }
        http::bounded(b, timeout)
            .send(body)
            .map_err(http::map_error)
    }

    /// Sends with the current token; on 401 refreshes once and resends.
    fn authed(
        &self,
        send: impl Fn(&str) -> Result<ureq::http::Response<ureq::Body>, UpstreamError>,
    ) -> Result<ureq::http::Response<ureq::Body>, UpstreamError> {
        let token = self.cred.token().map_err(credential_error)?;
        let resp = send(&token.access)?;
        if resp.status().as_u16() != 401 {
            return Ok(resp);
        }
        match self.cred.refresh_rejected(token.generation) {
            Ok(Some(fresh)) => {
                log::info("gemini-cli: token rejected (401); retrying with a refreshed token");
                send(&fresh.access)
            }
            Ok(None) => Ok(resp),
            Err(e) => Err(credential_error(e)),
        }
    }

    /// The project id, discovering it on first use.
    fn project(&self) -> Result<String, Early> {
        let mut project = self
            .project
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = project.as_ref() {
            return Ok(p.clone());
        }
        let found = self.discover()?;
        log::info(&format!("gemini-cli: using Google Cloud project {found}"));
        *project = Some(found.clone());
        Ok(found)
    }

    fn call_json(&self, method: &str, body: &Value) -> Result<Value, Early> {
        let bytes = body.to_string().into_bytes();
        let resp = self
            .authed(|t| self.post(method, t, &bytes, None, false, None))
            .map_err(Err)?;
        let status = resp.status().as_u16();
        if status >= 400 {
            let mut relayed = google_error(resp);
            relayed.body = prefix_message(
                relayed.body,
                &format!("Could not discover a valid Google Cloud Project ID ({method}): "),
            );
            return Err(Ok(relayed));
        }
        let mut raw = Vec::new();
        resp.into_body()
            .into_reader()
            .take(MAX_SMALL_BYTES)
            .read_to_end(&mut raw)
            .map_err(|e| Err(UpstreamError::Connect(format!("{method} unreadable: {e}"))))?;
        serde_json::from_slice(&raw).map_err(|e| {
            Err(UpstreamError::Connect(format!(
                "{method} answered invalid JSON: {e}"
            )))
        })
    }

    /// `loadCodeAssist`, then `onboardUser` polled until done.
    fn discover(&self) -> Result<String, Early> {
        let metadata = json!({"ideType": "IDE_UNSPECIFIED", "platform": "PLATFORM_UNSPECIFIED",
                              "pluginType": "GEMINI", "duetProject": ""});
        let loaded = self.call_json(
            "loadCodeAssist",
            &json!({"cloudaicompanionProject": "", "metadata": metadata}),
        )?;
        if let Some(p) = project_id(&loaded["cloudaicompanionProject"]) {
            return Ok(p);
        }
        let tier = loaded["allowedTiers"]
            .as_array()
            .and_then(|tiers| tiers.iter().find(|t| t["isDefault"] == true))
            .and_then(|t| t["id"].as_str())
            .unwrap_or("free-tier")
            .to_owned();
        let started = Instant::now();
        let mut pause = ONBOARD_FIRST_POLL;
        loop {
            let op = self.call_json(
                "onboardUser",
                &json!({"tierId": tier, "cloudaicompanionProject": "", "metadata": metadata}),
            )?;
            if op["done"] == true {
                if let Some(p) = project_id(&op["response"]["cloudaicompanionProject"]) {
                    return Ok(p);
                }
                break;
            }
            if started.elapsed() + pause > ONBOARD_BUDGET {
                break;
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(2));
        }
        let body = json!({"error": {"code": 502, "status": "UNAVAILABLE",
            "message": "Could not discover a valid Google Cloud Project ID: onboarding did not \
                        return one; set --project-id"}});
        Err(Ok(UpstreamResponse::whole(
            502,
            body.to_string().into_bytes(),
        )))
    }
}

/// `"id"` or `{"id": "…"}`.
fn project_id(v: &Value) -> Option<String> {
    v.as_str()
        .or_else(|| v["id"].as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn credential_error(message: String) -> UpstreamError {
    UpstreamError::Credential(format!(
        "gemini-cli: no usable OAuth access token: {message}"
    ))
}

/// Whether `model` accepts a thinking configuration.
fn thinks(model: &str) -> bool {
    model.starts_with("gemini-3")
        || model.starts_with("gemini-2.5-")
        || model.ends_with("-thinking")
}

/// The Code Assist body for a Gemini request: `{model, project, request}`,
/// the request without `model`, with `systemInstruction` spelt so and a
/// `user` role wherever one is missing, and `includeThoughts` set when a
/// thinking model is asked to think.
pub fn wrap_request(body: &[u8], model: &str, project: &str) -> Result<Value, String> {
    let mut request: Value =
        serde_json::from_slice(body).map_err(|e| format!("Invalid JSON in request body: {e}"))?;
    let obj = request
        .as_object_mut()
        .ok_or("Request body must be a JSON object")?;
    obj.remove("model");
    if let Some(si) = obj.remove("system_instruction") {
        obj.entry("systemInstruction").or_insert(si);
    }
    if let Some(si) = obj
        .get_mut("systemInstruction")
        .and_then(Value::as_object_mut)
    {
        si.entry("role").or_insert_with(|| json!("user"));
    }
    if let Some(contents) = obj.get_mut("contents").and_then(Value::as_array_mut) {
        for c in contents.iter_mut().filter_map(Value::as_object_mut) {
            c.entry("role").or_insert_with(|| json!("user"));
        }
    }
    if thinks(model)
        && let Some(tc) = obj
            .get_mut("generationConfig")
            .and_then(|g| g.get_mut("thinkingConfig"))
            .and_then(Value::as_object_mut)
    {
        let wants = tc.contains_key("thinkingLevel")
            || tc
                .get("thinkingBudget")
                .and_then(Value::as_i64)
                .is_some_and(|b| b != 0);
        if wants {
            tc.entry("includeThoughts").or_insert(Value::Bool(true));
        }
    }
    Ok(json!({"model": model, "project": project, "request": request}))
}

/// `{"response": X, "traceId": …}` → X; other bodies unchanged. A JSON
/// array (Google's streamed error form) becomes its first element.
pub fn unwrap_answer(v: Value) -> Value {
    match v {
        Value::Object(mut map) if !map.contains_key("candidates") => match map.remove("response") {
            Some(inner @ Value::Object(_)) => inner,
            Some(other) => {
                map.insert("response".into(), other);
                Value::Object(map)
            }
            None => Value::Object(map),
        },
        Value::Array(mut items) if !items.is_empty() && items[0].is_object() => {
            unwrap_answer(items.swap_remove(0))
        }
        other => other,
    }
}

/// One SSE data payload unwrapped (non-JSON data passes through).
fn unwrap_chunk(data: &str) -> Option<String> {
    match serde_json::from_str::<Value>(data) {
        Ok(v) => Some(unwrap_answer(v).to_string()),
        Err(_) => Some(data.to_owned()),
    }
}

/// A Google error answer relayed as a Gemini error, with the retry delay
/// from `Retry-After` or, failing that, `RetryInfo.retryDelay`.
fn google_error(resp: ureq::http::Response<ureq::Body>) -> UpstreamResponse {
    let status = resp.status().as_u16();
    let header = http::retry_after(&resp);
    let mut raw = Vec::new();
    let _ = resp
        .into_body()
        .into_reader()
        .take(MAX_SMALL_BYTES)
        .read_to_end(&mut raw);
    let (body, delay) = match serde_json::from_slice::<Value>(&raw) {
        Ok(v) => {
            let v = unwrap_answer(v);
            let delay = retry_delay(&v);
            (v.to_string().into_bytes(), delay)
        }
        Err(_) => (raw, None),
    };
    let mut out = UpstreamResponse::whole(status, body);
    out.retry_after = header.or_else(|| delay.map(|s| s.to_string()));
    out
}

/// Seconds to wait from `error.details[].retryDelay` or
/// `.metadata.quotaResetDelay` (`"3.5s"`, `"250ms"`), rounded up.
pub fn retry_delay(v: &Value) -> Option<u64> {
    let details = v["error"]["details"].as_array()?;
    details.iter().find_map(|d| {
        d["retryDelay"]
            .as_str()
            .or_else(|| d["metadata"]["quotaResetDelay"].as_str())
            .and_then(parse_google_duration)
    })
}

fn parse_google_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, scale) = if let Some(ms) = s.strip_suffix("ms") {
        (ms, 0.001)
    } else {
        (s.strip_suffix('s')?, 1.0)
    };
    let secs = num.trim().parse::<f64>().ok()? * scale;
    (secs.is_finite() && secs >= 0.0).then(|| secs.ceil() as u64)
}

/// Prepends `prefix` to `error.message` of a Google error body.
fn prefix_message(body: Box<dyn Read + Send>, prefix: &str) -> Box<dyn Read + Send> {
    let mut raw = Vec::new();
    let _ = body.take(MAX_SMALL_BYTES).read_to_end(&mut raw);
    let out = match serde_json::from_slice::<Value>(&raw) {
        Ok(mut v) if v["error"]["message"].is_string() => {
            let m = v["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            v["error"]["message"] = json!(format!("{prefix}{m}"));
            v.to_string().into_bytes()
        }
        _ => raw,
    };
    Box::new(std::io::Cursor::new(out))
}

impl Provider for GeminiCli {
    fn call(&self, req: &UpstreamRequest<'_>) -> Result<UpstreamResponse, UpstreamError> {
        let project = match self.project() {
            Ok(p) => p,
            Err(early) => return early,
        };
        let wrapped = match wrap_request(&req.body, &req.model, &project) {
            Ok(v) => v.to_string().into_bytes(),
            Err(message) => {
                let body = json!({"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": message}});
                return Ok(UpstreamResponse::whole(400, body.to_string().into_bytes()));
            }
        };
        let method = if req.stream {
            "streamGenerateContent?alt=sse"
        } else {
            "generateContent"
        };
        let resp = self.authed(|t| {
            self.post(
                method,
                t,
                &wrapped,
                Some(&req.model),
                req.stream,
                req.timeout,
            )
        })?;
        let status = resp.status().as_u16();
        if status >= 400 {
            return Ok(google_error(resp));
        }
        let body = resp.into_body();
        if req.stream {
            return Ok(UpstreamResponse {
                status,
                content_length: None,
                retry_after: None,
                body: Box::new(TransformReader::new(
                    body.into_reader(),
                    SseMap::new(unwrap_chunk),
                )),
            });
        }
        let mut raw = Vec::new();
        body.into_reader()
            .take(MAX_ANSWER_BYTES)
            .read_to_end(&mut raw)
            .map_err(|e| UpstreamError::Connect(format!("upstream answer unreadable: {e}")))?;
        let raw = match serde_json::from_slice::<Value>(&raw) {
            Ok(v) => unwrap_answer(v).to_string().into_bytes(),
            Err(_) => raw,
        };
        Ok(UpstreamResponse::whole(status, raw))
    }

    fn models(&self) -> Result<Vec<ModelInfo>, UpstreamError> {
        Ok(ModelInfo::list(MODELS.iter().copied(), "google"))
    }

    fn probe(&self, _timeout: Duration) -> Probe {
        match self.cred.token() {
            Ok(_) => Probe::CredentialOk,
            Err(e) => Probe::Failed(credential_error(e)),
        }
    }

    fn status(&self) -> Option<Value> {
        let mut status = self.cred.status();
        status["project"] = json!(
            self.project
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        );
        Some(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_normalises_the_request() {
        let body = br#"{"model":"x","system_instruction":{"parts":[{"text":"s"}]},
            "contents":[{"parts":[{"text":"hi"}]},{"role":"model","parts":[{"text":"yo"}]}],
            "generationConfig":{"thinkingConfig":{"thinkingBudget":1024}}}"#;
        let w = wrap_request(body, "gemini-2.5-pro", "proj-1").unwrap();
        assert_eq!(w["model"], "gemini-2.5-pro");
        assert_eq!(w["project"], "proj-1");
        let r = &w["request"];
        assert!(r.get("model").is_none() && r.get("system_instruction").is_none());
        assert_eq!(r["systemInstruction"]["role"], "user");
        assert_eq!(r["contents"][0]["role"], "user");
        assert_eq!(r["contents"][1]["role"], "model");
        assert_eq!(
            r["generationConfig"]["thinkingConfig"]["includeThoughts"],
            true
        );
        // Budget 0 means no thinking; an explicit includeThoughts is kept.
        let w = wrap_request(
            br#"{"contents":[],"generationConfig":{"thinkingConfig":{"thinkingBudget":0}}}"#,
            "gemini-2.5-flash",
            "p",
        )
        .unwrap();
        assert!(
            w["request"]["generationConfig"]["thinkingConfig"]
                .get("includeThoughts")
                .is_none()
        );
        assert!(wrap_request(b"[]", "m", "p").is_err());
    }

    #[test]
    fn unwrapping() {
        assert_eq!(
            unwrap_answer(json!({"response": {"candidates": []}, "traceId": "t"})),
            json!({"candidates": []})
        );
        assert_eq!(
            unwrap_answer(json!({"candidates": [], "response": 1})),
            json!({"candidates": [], "response": 1})
        );
        assert_eq!(
            unwrap_answer(json!([{"error": {"code": 429}}])),
            json!({"error": {"code": 429}})
        );
    }

    #[test]
    fn retry_delays() {
        let v = json!({"error": {"code": 429, "details": [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED"},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3.5s"}]}});
        assert_eq!(retry_delay(&v), Some(4));
        let v = json!({"error": {"details": [{"metadata": {"quotaResetDelay": "250ms"}}]}});
        assert_eq!(retry_delay(&v), Some(1));
        assert_eq!(retry_delay(&json!({"error": {}})), None);
        assert_eq!(parse_google_duration("12s"), Some(12));
        assert_eq!(parse_google_duration("x"), None);
    }
}
