//! Run-time overrides and the handle that changes them.
//!
//! An admin endpoint (`PUT /cache/disable`), an embedding program
//! ([`Control`]) and the cluster thread all change the running gateway
//! through the same calls, and each change bumps one version number. A
//! SIGHUP reload does not silently undo an override: it stays until it is
//! changed again, or until the file's own value for that setting changes
//! (then the file wins). Either way the log says which.
//!
//! In a cluster, a change made here (the admin endpoints, [`Control`]) is
//! applied, then published to every node; a change made on another node
//! arrives through the cluster thread ([`cluster::Local`]) and is applied
//! with the same calls, without being published again.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, Weak};

use super::Gateway;
use crate::cache::Cleared;
use crate::cluster;
use crate::log;

/// The cluster-wide name of the cache switch.
const CACHE_ENABLED: &str = "cache.enabled";
/// The cluster-wide name of the balancer's algorithm.
const ALGORITHM: &str = "load_balancer.algorithm";

/// One overridden setting: the value set at run time, and the file's
/// value when it was set (a reload whose file still says the same keeps
/// the override).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Override<T> {
    value: T,
    file_value: T,
}

/// Every run-time override, with the version of the last change.
#[derive(Debug, Default)]
pub(super) struct Overrides {
    version: u64,
    cache_enabled: Option<Override<bool>>,
}

impl Overrides {
    /// Records `cache_enabled = on` while the file says `file_value`.
    pub(super) fn set_cache_enabled(&mut self, on: bool, file_value: bool) -> u64 {
        self.cache_enabled = Some(Override {
            value: on,
            file_value,
        });
        self.version += 1;
        self.version
    }

    /// The cache switch after a reload whose file says `file_value`.
    pub(super) fn reload_cache_enabled(&mut self, file_value: bool) -> bool {
        let Some(o) = self.cache_enabled else {
            return file_value;
        };
        let state = |on: bool| if on { "on" } else { "off" };
        if o.file_value == file_value {
            log::info(&format!(
                "reload: the cache stays {} as switched at run time; the file's cache.enabled \
                 ({}) did not change",
                state(o.value),
                state(file_value)
            ));
            o.value
        } else {
            log::info(&format!(
                "reload: cache.enabled changed in the file to {}; the run-time switch ({}) \
                 is dropped",
                state(file_value),
                state(o.value)
            ));
            self.cache_enabled = None;
            self.version += 1;
            file_value
        }
    }

    pub(super) fn version(&self) -> u64 {
        self.version
    }
}

/// The gateway's cluster node, when clustering is on.
#[derive(Default)]
pub(super) struct ClusterLink {
    node: RwLock<Option<cluster::Node>>,
    /// Held while a setting is applied here and published, and while a
    /// remote one is applied: with it, the value in force is always the
    /// cluster's winning value, whatever the interleaving.
    order: Mutex<()>,
}

impl ClusterLink {
    fn order(&self) -> MutexGuard<'_, ()> {
        self.order.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the node, if there is one.
    fn with<R>(&self, f: impl FnOnce(&cluster::Node) -> R) -> Option<R> {
        let node = self.node.read().unwrap_or_else(PoisonError::into_inner);
        node.as_ref().map(f)
    }

    /// Publishes `name = value` if clustered; the new settings version.
    fn publish(&self, name: &str, value: &str) -> Option<u64> {
        self.with(|node| match node.publish_setting(name, value) {
            Ok(version) => Some(version),
            Err(e) => {
                log::error(&format!("cluster: cannot publish {name} = {value:?}: {e}"));
                None
            }
        })
        .flatten()
    }
}

impl Gateway {
    /// Makes `node` this gateway's cluster node.
    pub(crate) fn attach_cluster(&self, node: cluster::Node) {
        let mut slot = self
            .cluster
            .node
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *slot = Some(node);
    }

    /// Stops the cluster node, if any: the other nodes see this one go
    /// suspect, then dead.
    pub(crate) fn stop_cluster(&self) {
        let node = self
            .cluster
            .node
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(node);
    }

    /// The receiver of changes made on other nodes, for `cluster::Node::start`.
    pub(crate) fn cluster_local(self: &Arc<Self>) -> Arc<dyn cluster::Local> {
        Arc::new(Remote(Arc::downgrade(self)))
    }

    /// The cluster's status, `None` when clustering is off.
    pub(super) fn cluster_status(&self) -> Option<cluster::Status> {
        self.cluster.with(cluster::Node::status)
    }

    /// Switches the cache here, then on every other node. Returns the
    /// settings version it is propagated with, when clustered.
    pub(super) fn admin_cache_enabled(&self, on: bool) -> Option<u64> {
        let _order = self.cluster.order();
        self.set_cache_enabled(on);
        self.cluster
            .publish(CACHE_ENABLED, if on { "true" } else { "false" })
    }

    /// Empties the cache here, then on every other node. Returns what was
    /// removed here and the settings version the clear is propagated
    /// with, when clustered.
    pub(super) fn admin_clear_cache(&self) -> (Cleared, Option<u64>) {
        let cleared = self.clear_cache();
        (
            cleared,
            self.cluster.with(cluster::Node::publish_cache_clear),
        )
    }

    /// Applies the cluster's winning value of `name`, taken again under
    /// the order lock (a newer value may have arrived, or been set here,
    /// since the cluster thread decided to call).
    fn apply_remote(&self, name: &str, delivered: &str) {
        let _order = self.cluster.order();
        let winning = self
            .cluster_status()
            .and_then(|s| s.settings.get(name).map(|v| v.value.clone()));
        let value = winning.as_deref().unwrap_or(delivered);
        match name {
            CACHE_ENABLED => match crate::config::parse::boolean(value) {
                Ok(on) if on != self.cache_enabled() => self.set_cache_enabled(on),
                Ok(_) => {}
                Err(e) => log::warn(&format!("cluster: {CACHE_ENABLED}: {e}; ignored")),
            },
            // The balancer's switch (`Control::set_algorithm`) is not on
            // this branch yet: the setting is kept and shown in
            // /cluster/status, and applied here once that exists.
            ALGORITHM => log::warn(&format!(
                "cluster: {ALGORITHM} = {value:?} from another node is not applied by this build"
            )),
            _ => log::warn(&format!(
                "cluster: unknown setting {name:?} from another node (a newer aiproxy?); ignored"
            )),
        }
    }
}

/// The cluster thread's way in: changes made on other nodes, applied
/// through the same gateway calls as the admin endpoints, never published
/// again. Holds the gateway weakly, as the gateway holds the node.
struct Remote(Weak<Gateway>);

impl cluster::Local for Remote {
    fn apply(&self, setting: &str, value: &str) {
        if let Some(gateway) = self.0.upgrade() {
            gateway.apply_remote(setting, value);
        }
    }

    /// The memory tier only: the node where the clear was made emptied
    /// Redis, which every node shares.
    fn clear_cache(&self) {
        if let Some(gateway) = self.0.upgrade() {
            gateway.clear_memory_cache();
        }
    }
}

/// Changes the running gateway as the admin endpoints do; in a cluster,
/// on every node. Cheap to clone; get one from [`crate::Handle::control`].
#[derive(Clone)]
pub struct Control {
    gateway: Arc<Gateway>,
}

impl Control {
    pub(crate) fn new(gateway: Arc<Gateway>) -> Self {
        Self { gateway }
    }

    /// Switches the response cache on or off (`PUT /cache/enable|disable`).
    /// In a cluster, returns the settings version the change is being
    /// propagated with (`settings_version` in `GET /cluster/status`).
    pub fn set_cache_enabled(&self, on: bool) -> Option<u64> {
        self.gateway.admin_cache_enabled(on)
    }

    /// Whether the response cache is on.
    pub fn cache_enabled(&self) -> bool {
        self.gateway.cache_enabled()
    }

    /// Empties the response cache (`DELETE /cache/clear`). In a cluster,
    /// returns the settings version the clear is being propagated with.
    pub fn clear_cache(&self) -> Option<u64> {
        self.gateway.admin_clear_cache().1
    }

    /// Bumped by every change to a run-time override.
    pub fn version(&self) -> u64 {
        self.gateway.overrides_version()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_override_survives_a_reload_that_did_not_change_the_file_value() {
        let mut o = Overrides::default();
        assert_eq!(o.set_cache_enabled(false, true), 1);
        assert!(!o.reload_cache_enabled(true), "override kept");
        assert!(!o.reload_cache_enabled(true), "and kept again");
        assert_eq!(o.version(), 1);
    }

    #[test]
    fn a_changed_file_value_wins_over_the_override() {
        let mut o = Overrides::default();
        o.set_cache_enabled(true, false);
        // The file itself now says off (it said off before too: kept).
        assert!(o.reload_cache_enabled(false));
        // The file now says on: the file wins and the override is gone.
        let mut o = Overrides::default();
        o.set_cache_enabled(false, true);
        assert!(!o.reload_cache_enabled(false), "file turned it off itself");
        assert!(o.reload_cache_enabled(true), "no override left");
        assert_eq!(o.version(), 2);
    }

    #[test]
    fn without_an_override_the_file_decides() {
        let mut o = Overrides::default();
        assert!(o.reload_cache_enabled(true));
        assert!(!o.reload_cache_enabled(false));
        assert_eq!(o.version(), 0);
    }
}
