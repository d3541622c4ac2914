//! The node of a build without the `cluster` feature: it cannot start
//! (`Config::load` refuses `--cluster-enabled true` first), so no value
//! of [`Node`] exists and the gateway never has one.

use std::net::SocketAddr;
use std::sync::Arc;

use super::Error;
use super::settings::SettingError;
use super::status::{Local, Options, Status};

/// No value of this type exists.
pub enum Node {}

// The real module documents each call; these only keep the gateway's
// calls compiling, and none can run.
#[allow(missing_docs)]
impl Node {
    /// Always [`Error::NotBuilt`].
    pub fn start(_: Options, _: Arc<dyn Local>) -> Result<Node, Error> {
        Err(Error::NotBuilt)
    }

    pub fn local_addr(&self) -> SocketAddr {
        match *self {}
    }

    pub fn publish_setting(&self, _: &str, _: &str) -> Result<u64, SettingError> {
        match *self {}
    }

    pub fn publish_cache_clear(&self) -> u64 {
        match *self {}
    }

    pub fn status(&self) -> Status {
        match *self {}
    }

    pub fn shutdown(self) {
        match self {}
    }
}

/// As the real node, which stops its thread when dropped.
impl Drop for Node {
    fn drop(&mut self) {
        match *self {}
    }
}
