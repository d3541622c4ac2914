//! Run-time overrides and the handle that changes them.
//!
//! An admin endpoint (`PUT /cache/disable`), an embedding program
//! ([`Control`]) and, later, the cluster thread all change the running
//! gateway through the same calls, and each change bumps one version
//! number. A SIGHUP reload does not silently undo an override: it stays
//! until it is changed again, or until the file's own value for that
//! setting changes (then the file wins). Either way the log says which.

use std::sync::Arc;

use super::Gateway;
use crate::balancer::Algorithm;
use crate::log;

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
    algorithm: Option<Override<Algorithm>>,
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

    /// Records `algorithm` while the file says `file_value`.
    pub(super) fn set_algorithm(&mut self, algorithm: Algorithm, file_value: Algorithm) -> u64 {
        self.algorithm = Some(Override {
            value: algorithm,
            file_value,
        });
        self.version += 1;
        self.version
    }

    /// The algorithm after a reload whose file says `file_value`.
    pub(super) fn reload_algorithm(&mut self, file_value: Algorithm) -> Algorithm {
        let Some(o) = self.algorithm else {
            return file_value;
        };
        if o.file_value == file_value {
            log::info(&format!(
                "reload: the load balancer keeps {} as set at run time; the file's \
                 load_balancer.algorithm ({file_value}) did not change",
                o.value
            ));
            o.value
        } else {
            log::info(&format!(
                "reload: load_balancer.algorithm changed in the file to {file_value}; the \
                 run-time choice ({}) is dropped",
                o.value
            ));
            self.algorithm = None;
            self.version += 1;
            file_value
        }
    }

    pub(super) fn version(&self) -> u64 {
        self.version
    }
}

/// Changes the running gateway as the admin endpoints do. Cheap to clone;
/// get one from [`crate::Handle::control`].
#[derive(Clone)]
pub struct Control {
    gateway: Arc<Gateway>,
}

impl Control {
    pub(crate) fn new(gateway: Arc<Gateway>) -> Self {
        Self { gateway }
    }

    /// Switches the response cache on or off (`PUT /cache/enable|disable`).
    pub fn set_cache_enabled(&self, on: bool) {
        self.gateway.set_cache_enabled(on);
    }

    /// Whether the response cache is on.
    pub fn cache_enabled(&self) -> bool {
        self.gateway.cache_enabled()
    }

    /// Empties the response cache (`DELETE /cache/clear`).
    pub fn clear_cache(&self) {
        self.gateway.clear_cache();
    }

    /// Switches the load-balancing algorithm (`PUT /loadbalancer/algorithm`).
    pub fn set_algorithm(&self, algorithm: Algorithm) {
        self.gateway.set_algorithm(algorithm);
    }

    /// The load-balancing algorithm in force.
    pub fn algorithm(&self) -> Algorithm {
        self.gateway.balancer.algorithm()
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
    fn the_algorithm_follows_the_same_rule() {
        let mut o = Overrides::default();
        assert_eq!(o.reload_algorithm(Algorithm::Random), Algorithm::Random);
        o.set_algorithm(Algorithm::IpHash, Algorithm::RoundRobin);
        assert_eq!(
            o.reload_algorithm(Algorithm::RoundRobin),
            Algorithm::IpHash,
            "kept: the file still says round_robin"
        );
        assert_eq!(
            o.reload_algorithm(Algorithm::Weighted),
            Algorithm::Weighted,
            "the file changed: it wins"
        );
        assert_eq!(
            o.reload_algorithm(Algorithm::RoundRobin),
            Algorithm::RoundRobin
        );
        assert_eq!(o.version(), 2);
        // The cache's override is independent of the algorithm's.
        o.set_cache_enabled(false, true);
        assert!(!o.reload_cache_enabled(true));
        assert_eq!(
            o.reload_algorithm(Algorithm::RoundRobin),
            Algorithm::RoundRobin
        );
    }

    #[test]
    fn without_an_override_the_file_decides() {
        let mut o = Overrides::default();
        assert!(o.reload_cache_enabled(true));
        assert!(!o.reload_cache_enabled(false));
        assert_eq!(o.version(), 0);
    }
}
