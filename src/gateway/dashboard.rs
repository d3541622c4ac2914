//! The live dashboard: the page and the JSON it polls, both drawn from
//! the metrics (so a build has them only with both the `dashboard` and
//! the `metrics` features).

use serde_json::json;

use super::ops::METRICS_OFF;
use super::{Gateway, State};
use crate::metrics::{DASHBOARD_CONTENT_TYPE, DASHBOARD_HTML};
use crate::server::Responder;

impl Gateway {
    pub(super) fn dashboard(&self, out: &mut Responder<'_>) {
        if self.metrics.is_none() {
            let _ = out.send(404, &[("Content-Type", "text/plain")], METRICS_OFF);
            return;
        }
        let _ = out.send(
            200,
            &[
                ("Content-Type", DASHBOARD_CONTENT_TYPE),
                ("Cache-Control", "no-cache"),
            ],
            DASHBOARD_HTML.as_bytes(),
        );
    }

    pub(super) fn dashboard_summary(&self, state: &State, out: &mut Responder<'_>) {
        let Some(m) = self.fresh_metrics(state, out) else {
            return;
        };
        let mut summary = m.summary();
        summary["cache_enabled"] = json!(state.cache.is_enabled());
        let _ = out.send_json(
            200,
            &[("Cache-Control", "no-cache")],
            summary.to_string().as_bytes(),
        );
    }
}
