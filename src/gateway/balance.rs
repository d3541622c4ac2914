//! The load balancer's side of the gateway: its construction and the log
//! lines and metrics of health changes, the admin endpoints
//! (`/loadbalancer/instances`, `/loadbalancer/metrics`,
//! `PUT /loadbalancer/algorithm`), the per-instance entries of `/health`
//! and the instance figures of `/metrics` and the dashboard.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Failure, Gateway, State};
use crate::balancer::{Algorithm, Balancer, Effect, Member, SplitMix64};
use crate::config::Config;
use crate::log;
use crate::provider_kind::ProviderKind;
use crate::server::{Request, Responder};

/// The gateway's balancer, as the configuration sets it up.
pub(super) fn build(config: &Config) -> Balancer {
    let balancer = Balancer::new(
        config.load_balancer.algorithm,
        Box::new(SplitMix64::from_entropy()),
    )
    .with_observer(Box::new(log_effect));
    balancer.set_enabled(config.load_balancer.enabled);
    balancer
}

/// Logs every change of an instance's health.
fn log_effect(member: &Member, effect: &Effect) {
    let s = member.settings();
    let who = format!("{} instance {} ({})", s.kind, s.id, s.name);
    let secs = |d: &Duration| format!("{:.1} s", d.as_secs_f64());
    match effect {
        Effect::None => {}
        Effect::Ejected(d) => log::warn(&format!(
            "{who} ejected for {} after consecutive failures",
            secs(d)
        )),
        Effect::EjectionRefused => log::debug(&format!(
            "{who} keeps failing but stays in: half of its pool is already ejected"
        )),
        Effect::CoolingDown(d) => log::info(&format!(
            "{who} rate limited (429): no requests for {}",
            secs(d)
        )),
        Effect::CredentialBroken => log::warn(&format!(
            "{who}: the upstream rejected its credential; out of service until its \
                 credentials file changes or a health check passes"
        )),
        Effect::Restored => log::info(&format!("{who} back in service: a health check passed")),
    }
}

impl Gateway {
    /// Switches the algorithm at run time (an override a reload keeps
    /// while the file's own value stays the same).
    pub(crate) fn set_algorithm(&self, algorithm: Algorithm) {
        let state = self.current();
        self.overrides()
            .set_algorithm(algorithm, state.config.load_balancer.algorithm);
        self.balancer.set_algorithm(algorithm);
        log::info(&format!("load-balancing algorithm set to {algorithm}"));
    }

    /// Applies a reloaded configuration's balancer settings.
    pub(super) fn reload_balancer(&self, config: &Config) {
        let algorithm = self
            .overrides()
            .reload_algorithm(config.load_balancer.algorithm);
        self.balancer.set_algorithm(algorithm);
        self.balancer.set_enabled(config.load_balancer.enabled);
    }

    /// Brings instance health and the retry totals into the metrics
    /// before they are read.
    pub(super) fn refresh_balancer_metrics(&self, state: &State) {
        let Some(m) = &self.metrics else { return };
        let now = Instant::now();
        for (kind, pool) in state.registry.pools() {
            for status in pool.status(now) {
                m.set_instance_healthy(kind, &status.id, status.healthy);
                m.set_instance_counts(kind, &status.id, status.selections, status.ejections);
            }
        }
        let budget = self.balancer.budget();
        m.set_lb_retry_totals(budget.granted(), budget.refused());
    }

    /// Removes the metrics of instances a reload dropped.
    pub(super) fn forget_instances(&self, removed: &[(ProviderKind, String)]) {
        if let Some(m) = &self.metrics {
            for (kind, id) in removed {
                m.forget_instance(*kind, id);
            }
        }
    }
}

/// The instances of `kind` as `/health` shows them to a client with a
/// key: the balancer's view and the credential status.
pub(super) fn health_instances(state: &State, kind: ProviderKind, now: Instant) -> Vec<Value> {
    let Some(pool) = state.registry.pool(kind) else {
        return Vec::new();
    };
    pool.members()
        .iter()
        .zip(pool.status(now))
        .map(|(instance, status)| {
            let mut v = serde_json::to_value(status).unwrap_or_default();
            if let Some(credentials) = instance.provider.status() {
                v["credentials"] = credentials;
            }
            v
        })
        .collect()
}

/// `GET /loadbalancer/instances`.
pub(super) fn instances(gateway: &Gateway, state: &State, out: &mut Responder<'_>) {
    let now = Instant::now();
    let instances: Vec<Value> = state
        .registry
        .pools()
        .flat_map(|(_, pool)| pool.status(now))
        .map(|s| serde_json::to_value(s).unwrap_or_default())
        .collect();
    let body = json!({
        "algorithm": gateway.balancer.algorithm().name(),
        "enabled": gateway.balancer.is_enabled(),
        "instances": instances,
    });
    let _ = out.send_json(200, &[], body.to_string().as_bytes());
}

/// `GET /loadbalancer/metrics`.
pub(super) fn metrics(gateway: &Gateway, state: &State, out: &mut Responder<'_>) {
    let pools = state.registry.pools().map(|(_, pool)| pool);
    let figures = gateway.balancer.metrics(pools, Instant::now());
    let body = serde_json::to_vec(&figures).unwrap_or_default();
    let _ = out.send_json(200, &[], &body);
}

/// `PUT /loadbalancer/algorithm` with `{"algorithm": "least_requests"}`.
pub(super) fn set_algorithm(
    gateway: &Gateway,
    req: &Request,
    out: &mut Responder<'_>,
) -> Result<(), Failure> {
    let names = || {
        Algorithm::ALL
            .iter()
            .map(|a| a.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let body: Value = serde_json::from_slice(&req.body)
        .map_err(|e| Failure::new(400, format!("Invalid JSON in request body: {e}")))?;
    let name = body["algorithm"].as_str().ok_or_else(|| {
        Failure::new(
            400,
            format!(
                "The body must be {{\"algorithm\": NAME}}, NAME one of {}.",
                names()
            ),
        )
    })?;
    let algorithm = name
        .parse::<Algorithm>()
        .map_err(|e| Failure::new(400, e))?;
    let previous = gateway.balancer.algorithm();
    let version = gateway.admin_algorithm(algorithm);
    let mut body = json!({"algorithm": algorithm.name(), "previous": previous.name()});
    super::ops::propagating(&mut body, version);
    let _ = out.send_json(200, &[], body.to_string().as_bytes());
    Ok(())
}
