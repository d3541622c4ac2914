//! kiro-api: Claude through the Kiro IDE's login to AWS CodeWhisperer / Q.
//!
//! The gateway hands us an Anthropic Messages body; [`request`] turns it
//! into Kiro's `generateAssistantResponse` body, and [`response`] turns
//! the binary AWS event stream Kiro always answers with into Anthropic
//! SSE (streamed requests) or one Anthropic message (whole requests).
//!
//! Credentials come in two forms: the Kiro IDE's file (`accessToken`,
//! `refreshToken`, `expiresAt`, `authMethod` social or IdC, `profileArn`,
//! `region`; IdC client registrations live in a sibling `<clientIdHash>.json`
//! from which only `clientId`/`clientSecret` are read), or a generic OAuth2
//! form `{client_id, client_secret, token_url, refresh_token}` refreshed
//! with a standard `refresh_token` grant.

pub mod request;
pub mod response;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value, json};
use ureq::Agent;

use super::oauth::{self, Credential, Format};
use super::transform::TransformReader;
use super::{Probe, Provider, UpstreamError, UpstreamRequest, UpstreamResponse, http};
use crate::config::KiroConfig;
use crate::log;
use crate::protocol::{self, ModelInfo, Protocol};
use crate::time::rfc3339;
use response::{KiroStream, Machine, Refusal};

/// Models listed by `/v1/models` (client names); any other name is
/// passed through to Kiro unchanged.
pub const MODELS: &[&str] = &[
    "claude-sonnet-4-5",
    "claude-sonnet-4-5-20250929",
    "claude-haiku-4-5",
    "claude-opus-4-5",
    "claude-sonnet-4-6",
    "claude-opus-4-6",
];
/// AWS SDK version in the user agent.
const SDK_VERSION: &str = "1.0.34";
/// Largest error answer read.
const MAX_ERROR_BYTES: u64 = 1 << 20;

/// How a credential refreshes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Kiro social login (Google/GitHub): Kiro's own refresh endpoint.
    Social,
    /// AWS Builder ID / IAM Identity Center: the OIDC token endpoint.
    Idc,
    /// The generic OAuth2 form: `refresh_token` grant at `token_url`.
    Generic,
}

/// Which form `creds` is in: generic with `token_url` and
/// `refresh_token`; else social when `authMethod` says so, or is absent
/// and there is no `clientId`; else Builder ID / IdC.
pub fn method(creds: &Value) -> Method {
    if creds["token_url"].is_string() && creds["refresh_token"].is_string() {
        return Method::Generic;
    }
    match creds["authMethod"].as_str() {
        Some(m) if m.eq_ignore_ascii_case("social") => Method::Social,
        None if !creds["clientId"].is_string() => Method::Social,
        _ => Method::Idc,
    }
}

fn region(creds: &Value) -> &str {
    creds["region"]
        .as_str()
        .filter(|r| !r.is_empty())
        .unwrap_or("us-east-1")
}

fn with_region(template: &str, region: &str) -> String {
    template
        .replace("{{region}}", region)
        .replace("{region}", region)
}

/// The Kiro credential formats.
pub struct KiroFormat {
    agent: Agent,
    refresh_url: String,
    refresh_idc_url: String,
    /// `clientId`/`clientSecret` from the sibling registration file.
    sibling_client: Option<(String, String)>,
}

impl Format for KiroFormat {
    fn token(&self, creds: &Value) -> Option<(String, Option<u64>)> {
        let token = creds["accessToken"]
            .as_str()
            .or_else(|| creds["access_token"].as_str())
            .filter(|t| !t.is_empty())?;
        let expiry = creds.get("expiresAt").or_else(|| creds.get("expires_at"));
        let expiry = match expiry {
            Some(Value::String(s)) => oauth::parse_iso8601(s),
            other => oauth::as_u64(other),
        };
        Some((token.to_owned(), expiry))
    }

    fn refresh(&self, creds: &Value) -> Result<Map<String, Value>, String> {
        let expires_at = |answer: &Value, key: &str| {
            let secs = oauth::as_u64(answer.get(key)).unwrap_or(3600);
            rfc3339(oauth::now_ms() + secs * 1000)
        };
        let mut update = Map::new();
        match method(creds) {
            Method::Generic => {
                let field = |k: &str| creds[k].as_str().unwrap_or_default();
                let body = oauth::form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", field("refresh_token")),
                    ("client_id", field("client_id")),
                    ("client_secret", field("client_secret")),
                ]);
                let answer = oauth::post_token(
                    &self.agent,
                    field("token_url"),
                    "application/x-www-form-urlencoded",
                    &body,
                )?;
                let access = answer["access_token"]
                    .as_str()
                    .ok_or("token answer has no access_token")?;
                update.insert("access_token".into(), json!(access));
                update.insert(
                    "expires_at".into(),
                    json!(expires_at(&answer, "expires_in")),
                );
                if let Some(r) = answer["refresh_token"].as_str() {
                    update.insert("refresh_token".into(), json!(r));
                }
            }
            m => {
                let refresh = creds["refreshToken"]
                    .as_str()
                    .filter(|t| !t.is_empty())
                    .ok_or("the credentials have no refreshToken; log in again in the Kiro IDE")?;
                let (url, body) = if m == Method::Social {
                    (
                        with_region(&self.refresh_url, region(creds)),
                        json!({"refreshToken": refresh}),
                    )
                } else {
                    let (id, secret) = match (creds["clientId"].as_str(), creds["clientSecret"].as_str()) {
                        (Some(i), Some(s)) => (i.to_owned(), s.to_owned()),
                        _ => self.sibling_client.clone().ok_or(
                            "IdC credentials without clientId/clientSecret (and no <clientIdHash>.json beside them)",
                        )?,
                    };
                    let idc_region = creds["idcRegion"].as_str().unwrap_or(region(creds));
                    (
                        with_region(&self.refresh_idc_url, idc_region),
                        json!({"refreshToken": refresh, "clientId": id, "clientSecret": secret,
                               "grantType": "refresh_token"}),
                    )
                };
                let answer =
                    oauth::post_token(&self.agent, &url, "application/json", &body.to_string())?;
                let access = answer["accessToken"]
                    .as_str()
                    .ok_or("token answer has no accessToken")?;
                update.insert("accessToken".into(), json!(access));
                update.insert("expiresAt".into(), json!(expires_at(&answer, "expiresIn")));
                for key in ["refreshToken", "profileArn"] {
                    if let Some(v) = answer[key].as_str().filter(|v| !v.is_empty()) {
                        update.insert(key.into(), json!(v));
                    }
                }
            }
        }
        Ok(update)
    }
}

/// Reads `clientId`/`clientSecret` (and nothing else) from the IdC client
/// registration file beside the credentials.
fn sibling_client(path: &Path, creds: &Value) -> Option<(String, String)> {
    if creds["clientId"].is_string() {
        return None;
    }
    let hash = creds["clientIdHash"].as_str()?;
    if hash.contains(['/', '\\']) || hash.starts_with('.') {
        return None;
    }
    let sibling = path.parent()?.join(format!("{hash}.json"));
    let v = oauth::read_json(&sibling).ok()?;
    Some((
        v["clientId"].as_str()?.to_owned(),
        v["clientSecret"].as_str()?.to_owned(),
    ))
}

/// The kiro-api provider.
pub struct Kiro {
    agent: Agent,
    base_url: String,
    version: String,
    model_map: BTreeMap<String, String>,
    machine_id: String,
    cred: Credential<KiroFormat>,
}

impl Kiro {
    /// Loads the credentials file; fails when it cannot be read.
    pub fn new(agent: Agent, config: &KiroConfig) -> Result<Self, crate::Error> {
        let path = config
            .oauth_creds_file
            .clone()
            .unwrap_or_else(|| oauth::home_path(".aws/sso/cache/kiro-auth-token.json"));
        let creds = oauth::read_json(&path).map_err(|e| {
            crate::Error::Provider(format!(
                "kiro-api: {e} (log in with the Kiro IDE first, or set --kiro-oauth-creds-file)"
            ))
        })?;
        let seed = ["profileArn", "clientId", "client_id"]
            .iter()
            .find_map(|k| creds[*k].as_str())
            .map_or_else(|| path.display().to_string(), str::to_owned);
        let digest = ring::digest::digest(&ring::digest::SHA256, seed.as_bytes());
        let machine_id = crate::hex::hex(digest.as_ref());
        let format = KiroFormat {
            agent: agent.clone(),
            refresh_url: config.refresh_url.clone(),
            refresh_idc_url: config.refresh_idc_url.clone(),
            sibling_client: sibling_client(&path, &creds),
        };
        Ok(Self {
            agent,
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            version: config.version.clone(),
            model_map: config.model_map.clone(),
            machine_id,
            cred: Credential::new(path, creds, format),
        })
    }

    fn send(
        &self,
        token: &oauth::Token,
        body: &[u8],
        timeout: Option<Duration>,
    ) -> Result<ureq::http::Response<ureq::Body>, UpstreamError> {
        let url = format!(
            "{}/generateAssistantResponse",
            with_region(&self.base_url, region(&token.creds))
        );
        let kiro = format!("KiroIDE-{}-{}", self.version, self.machine_id);
        let builder = self
            .agent
            .post(url)
            .header("Authorization", format!("Bearer {}", token.access))
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .header("amz-sdk-invocation-id", oauth::uuid4())
            .header("amz-sdk-request", "attempt=1; max=3")
            .header("x-amzn-codewhisperer-optout", "true")
            .header("x-amzn-kiro-agent-mode", "vibe")
            .header(
                "x-amz-user-agent",
                format!("aws-sdk-js/{SDK_VERSION} {kiro}"),
            )
            .header(
                "User-Agent",
                format!(
                    "aws-sdk-js/{SDK_VERSION} ua/2.1 os/{} lang/js md/nodejs#22.19.0 \
                     api/codewhispererstreaming#{SDK_VERSION} m/E {kiro}",
                    std::env::consts::OS
                ),
            );
        http::bounded(builder, timeout)
            .send(body)
            .map_err(http::map_error)
    }
}

fn credential_error(message: String) -> UpstreamError {
    UpstreamError::Credential(format!("kiro-api: no usable OAuth access token: {message}"))
}

fn refusal_response(r: &Refusal) -> UpstreamResponse {
    UpstreamResponse::whole(
        r.status,
        protocol::error_body(Protocol::Anthropic, r.status, &r.message),
    )
}

impl Provider for Kiro {
    fn call(&self, req: &UpstreamRequest<'_>) -> Result<UpstreamResponse, UpstreamError> {
        let anthropic: Value = match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(e) => {
                return Ok(refusal_response(&Refusal {
                    status: 400,
                    message: format!("Invalid JSON in request body: {e}"),
                }));
            }
        };
        let token = self.cred.token().map_err(credential_error)?;
        let profile_arn = match method(&token.creds) {
            Method::Social => token.creds["profileArn"].as_str(),
            _ => None,
        };
        let model_id = request::model_id(&req.model, &self.model_map);
        let built = match request::build(&anthropic, &model_id, profile_arn, &oauth::uuid4()) {
            Ok(b) => b,
            Err(message) => {
                return Ok(refusal_response(&Refusal {
                    status: 400,
                    message,
                }));
            }
        };
        if log::enabled(crate::config::LogLevel::Debug) {
            let unread = request::unread_fields(&anthropic);
            if !unread.is_empty() {
                log::debug(&format!(
                    "kiro-api: request fields without an equivalent dropped: {}",
                    unread.join(",")
                ));
            }
        }
        let body = built.body.to_string().into_bytes();
        let mut resp = self.send(&token, &body, req.timeout)?;
        if matches!(resp.status().as_u16(), 401 | 403) {
            match self.cred.refresh_rejected(token.generation) {
                Ok(Some(fresh)) => {
                    log::info("kiro-api: token rejected; retrying with a refreshed token");
                    resp = self.send(&fresh, &body, req.timeout)?;
                }
                Ok(None) => {}
                Err(e) => return Err(credential_error(e)),
            }
        }
        let status = resp.status().as_u16();
        if status >= 400 {
            let retry_after = http::retry_after(&resp);
            let mut raw = String::new();
            let _ = resp
                .into_body()
                .into_reader()
                .take(MAX_ERROR_BYTES)
                .read_to_string(&mut raw);
            let mut out = refusal_response(&response::refusal(status, "", &raw));
            out.retry_after = retry_after;
            return Ok(out);
        }
        let input_tokens = protocol::count_tokens(&anthropic);
        let machine = Machine::new(&req.model, input_tokens, built.thinking, built.aliases);
        let mut stream = KiroStream::new(machine);
        let mut reader = resp.into_body().into_reader();
        let mut buf = vec![0u8; 16 * 1024];
        if !req.stream {
            let mut events = Vec::new();
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => stream.pump(&buf[..n], &mut events),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        return Err(UpstreamError::Connect(format!(
                            "Kiro answer could not be read: {e}"
                        )));
                    }
                }
                if stream.machine.is_finished() {
                    break;
                }
            }
            stream.end(&mut events);
            if let Some(r) = &stream.machine.failure {
                return Ok(refusal_response(r));
            }
            return Ok(match response::aggregate(&events) {
                Ok(message) => UpstreamResponse::whole(200, message.to_string().into_bytes()),
                Err(r) => refusal_response(&r),
            });
        }
        // Read until the first content (or a refusal), so that a refusal
        // becomes an HTTP error answer the gateway can still retry.
        let mut events = Vec::new();
        let mut ended = false;
        while !stream.machine.has_content() && !stream.machine.is_finished() {
            match reader.read(&mut buf) {
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(n) => stream.pump(&buf[..n], &mut events),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(UpstreamError::Connect(format!(
                        "Kiro answer could not be read: {e}"
                    )));
                }
            }
        }
        if let Some(r) = &stream.machine.early {
            return Ok(refusal_response(r));
        }
        if ended {
            stream.end(&mut events);
        }
        let mut first = Vec::new();
        for ev in &events {
            protocol::anthropic::write_event(ev, &mut first);
        }
        Ok(UpstreamResponse {
            status: 200,
            content_length: None,
            retry_after: None,
            body: Box::new(TransformReader::with_pending(reader, stream, first, ended)),
        })
    }

    fn models(&self) -> Result<Vec<ModelInfo>, UpstreamError> {
        let mut ids: Vec<String> = MODELS.iter().map(|m| (*m).to_owned()).collect();
        for m in self.model_map.keys() {
            if !ids.contains(m) {
                ids.push(m.clone());
            }
        }
        Ok(ModelInfo::list(ids, "anthropic"))
    }

    fn probe(&self, _timeout: Duration) -> Probe {
        match self.cred.token() {
            Ok(_) => Probe::CredentialOk,
            Err(e) => Probe::Failed(credential_error(e)),
        }
    }

    fn status(&self) -> Option<Value> {
        let mut status = self.cred.status();
        status["auth_method"] = json!(match method(&self.cred.creds()) {
            Method::Social => "social",
            Method::Idc => "idc",
            Method::Generic => "oauth2",
        });
        Some(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_forms() {
        assert_eq!(method(&json!({"authMethod": "social"})), Method::Social);
        assert_eq!(method(&json!({"refreshToken": "r"})), Method::Social);
        assert_eq!(
            method(&json!({"authMethod": "IdC", "clientId": "c"})),
            Method::Idc
        );
        assert_eq!(method(&json!({"clientId": "c"})), Method::Idc);
        assert_eq!(
            method(
                &json!({"client_id": "c", "client_secret": "s", "token_url": "u", "refresh_token": "r"})
            ),
            Method::Generic
        );
        assert_eq!(
            with_region("https://q.{region}.x", "eu-west-1"),
            "https://q.eu-west-1.x"
        );
    }

    #[test]
    fn tokens_and_expiry_in_both_forms() {
        let f = KiroFormat {
            agent: ureq::Agent::new_with_defaults(),
            refresh_url: String::new(),
            refresh_idc_url: String::new(),
            sibling_client: None,
        };
        assert_eq!(
            f.token(&json!({"accessToken": "a", "expiresAt": "1970-01-01T00:00:01.000Z"})),
            Some(("a".to_owned(), Some(1000)))
        );
        assert_eq!(
            f.token(&json!({"access_token": "b", "expires_at": 5})),
            Some(("b".to_owned(), Some(5)))
        );
        assert_eq!(f.token(&json!({"client_id": "x"})), None);
    }
}
