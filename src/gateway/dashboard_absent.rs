//! The dashboard of a build without the `dashboard` or the `metrics`
//! feature: routing never sends a request here (`/dashboard` is an
//! unknown path there); should one arrive, it gets a 404 saying why.

use super::{Gateway, State};
use crate::features::{DASHBOARD, METRICS};
use crate::server::Responder;

impl Gateway {
    pub(super) fn dashboard(&self, out: &mut Responder<'_>) {
        not_built(out);
    }

    pub(super) fn dashboard_summary(&self, _: &State, out: &mut Responder<'_>) {
        not_built(out);
    }
}

fn not_built(out: &mut Responder<'_>) {
    let missing = if METRICS.built { DASHBOARD } else { METRICS };
    let body = format!("{}\n", missing.missing());
    let _ = out.send(404, &[("Content-Type", "text/plain")], body.as_bytes());
}
