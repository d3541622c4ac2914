//! Active health checks: one background thread that, every
//! `load_balancer.health_check_interval`, checks each instance with a
//! cheap call under its own short timeout. A pass ends an ejection or a
//! cooldown early; a failure counts like a failed request.
//!
//! The check is a tiny generation request for the member's
//! `checkModelName` when the pools file names one, else
//! [`Provider::probe`](crate::providers::Provider::probe): a model list,
//! or for the OAuth providers the access token (refreshed when due),
//! which proves the credential but not the upstream: when it passes it
//! clears only a rejected credential (a new login written to the
//! credentials file is read again).

use std::borrow::Cow;
use std::io;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use serde_json::json;

use super::Gateway;
use crate::balancer::Outcome;
use crate::log;
use crate::protocol::Protocol;
use crate::providers::{Instance, Probe, UpstreamFailure, UpstreamRequest};

/// Longest a single check may take, whatever the interval.
const MAX_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The running check thread; dropping it stops the thread at its next
/// wait or between two checks.
pub(crate) struct HealthChecks {
    _stop: Sender<()>,
}

impl HealthChecks {
    /// Starts the thread.
    pub(crate) fn start(gateway: Arc<Gateway>) -> io::Result<HealthChecks> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        thread::Builder::new()
            .name("aiproxy-health".into())
            .spawn(move || {
                loop {
                    let interval = gateway.config().load_balancer.health_check_interval;
                    match stopped.recv_timeout(interval) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    if !gateway.check_instances(&stopped) {
                        return;
                    }
                }
            })?;
        Ok(HealthChecks { _stop: stop })
    }
}

impl Gateway {
    /// One round of checks over every instance; false when told to stop.
    pub(crate) fn check_instances(&self, stopped: &Receiver<()>) -> bool {
        let state = self.current();
        let timeout = state
            .config
            .load_balancer
            .health_check_interval
            .min(MAX_CHECK_TIMEOUT);
        for (kind, pool) in state.registry.pools() {
            for (index, instance) in pool.members().iter().enumerate() {
                if !matches!(stopped.try_recv(), Err(TryRecvError::Empty)) {
                    return false;
                }
                if instance.member.settings().disabled {
                    continue;
                }
                match check(instance, timeout) {
                    Checked::Outcome(outcome) => {
                        let effect = pool.check(index, &outcome, Instant::now());
                        self.balancer.observe(&instance.member, &effect);
                    }
                    Checked::CredentialOk => {
                        // A usable token (read again if its file changed):
                        // a credential refused earlier gets another
                        // chance; an ejection or a cooldown stays.
                        let now = Instant::now();
                        if instance.member.status(now, pool.policy()).state == "credential_broken" {
                            log::info(&format!(
                                "{kind} instance {}: its credential works again",
                                instance.id()
                            ));
                        }
                        instance.member.clear_credential(now);
                    }
                }
            }
        }
        true
    }
}

/// What a check found.
enum Checked {
    /// The upstream's health.
    Outcome(Outcome),
    /// Only that the credential is usable.
    CredentialOk,
}

/// Checks one instance.
fn check(instance: &Instance, timeout: Duration) -> Checked {
    let of_status = |status: u16| {
        UpstreamFailure::of_status(status).map_or(Outcome::Success, |f| {
            f.outcome(None, &format!("health check answered {status}"))
        })
    };
    if let Some(model) = &instance.check_model {
        let req = UpstreamRequest {
            model: model.clone(),
            body: Cow::Owned(tiny_request(instance.kind.family(), model)),
            stream: false,
            forward_headers: Vec::new(),
            timeout: Some(timeout),
        };
        return Checked::Outcome(match instance.provider.call(&req) {
            Ok(resp) => of_status(resp.status),
            Err(e) => UpstreamFailure::of_error(&e).outcome(None, e.message()),
        });
    }
    match instance.provider.probe(timeout) {
        Probe::Answered(status) => Checked::Outcome(of_status(status)),
        Probe::CredentialOk => Checked::CredentialOk,
        Probe::Failed(e) => {
            Checked::Outcome(UpstreamFailure::of_error(&e).outcome(None, e.message()))
        }
    }
}

/// The smallest generation request of `family`: one short prompt, one
/// output token.
fn tiny_request(family: Protocol, model: &str) -> Vec<u8> {
    let body = match family {
        Protocol::Gemini => json!({
            "contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
            "generationConfig": {"maxOutputTokens": 1}
        }),
        Protocol::Anthropic => json!({
            "model": model, "max_tokens": 1,
            "messages": [{"role": "user", "content": "Hi"}]
        }),
        Protocol::OpenAi | Protocol::Responses => json!({
            "model": model, "max_tokens": 1,
            "messages": [{"role": "user", "content": "Hi"}]
        }),
    };
    body.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_requests_are_valid_in_their_protocol() {
        for family in [Protocol::OpenAi, Protocol::Anthropic, Protocol::Gemini] {
            let body = tiny_request(family, "m");
            let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
            crate::protocol::validate_request(family, &value)
                .unwrap_or_else(|e| panic!("{family:?}: {}", e.message));
        }
    }
}
