//! The WebSocket API of a build without the `websocket` feature: routing
//! never sends a request here (`/ws` is an unknown path there, and
//! `Config::load` refuses `--websocket-enabled true`); should one
//! arrive, it gets a 404 saying why.

use super::{Failure, Gateway, State};
use crate::server::{Request, Responder};

/// Open WebSocket connections: never any.
#[derive(Debug, Default)]
pub(super) struct Hub(());

impl Gateway {
    pub(super) fn upgrade_websocket(
        &self,
        _: &State,
        _: &Request,
        _: &mut Responder<'_>,
    ) -> Result<(), Failure> {
        Err(Failure::new(
            404,
            crate::features::WEBSOCKET.missing().to_string(),
        ))
    }
}
