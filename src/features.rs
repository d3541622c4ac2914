//! The optional parts of this build: Cargo features, all on by default,
//! each removable for a smaller binary (README, "Static binary").
//!
//! A part left out is gone, not switched off: its endpoints answer 404,
//! and a setting that asks for it (`--cluster-enabled true`,
//! `--redis-addr`, `--metrics-enabled true`, `--websocket-enabled true`)
//! stops the start with an error naming the feature. Settings that only
//! tune a missing part are ignored, as they are when it is switched off.

use std::fmt;

/// One optional part of the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feature {
    /// The Cargo feature's name.
    pub name: &'static str,
    /// Whether this build has it.
    pub built: bool,
}

/// The shared Redis cache tier (`redis.*`).
pub const REDIS: Feature = Feature {
    name: "redis",
    built: cfg!(feature = "redis"),
};
/// Prometheus metrics at `/metrics` and `--metrics-port`.
pub const METRICS: Feature = Feature {
    name: "metrics",
    built: cfg!(feature = "metrics"),
};
/// The WebSocket API at `/ws`.
pub const WEBSOCKET: Feature = Feature {
    name: "websocket",
    built: cfg!(feature = "websocket"),
};
/// Cluster membership over UDP and `/cluster/status`.
pub const CLUSTER: Feature = Feature {
    name: "cluster",
    built: cfg!(feature = "cluster"),
};
/// The live dashboard at `/dashboard` (its figures are the metrics', so
/// it is served only when `metrics` is built too).
pub const DASHBOARD: Feature = Feature {
    name: "dashboard",
    built: cfg!(feature = "dashboard"),
};

/// Every optional part, in the order `--version` lists them.
pub const ALL: [Feature; 5] = [REDIS, METRICS, WEBSOCKET, CLUSTER, DASHBOARD];

impl Feature {
    /// Why a setting that needs this part cannot be honoured.
    pub fn missing(self) -> Missing {
        Missing(self.name)
    }
}

/// "this build has no `cluster` feature …": the error for a setting that
/// needs a part this binary was built without.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Missing(&'static str);

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "this build has no `{0}` feature (rebuild with `cargo build --features {0}`)",
            self.0
        )
    }
}

/// The built features for `--version`: `redis metrics …`, or `none`.
pub fn built() -> String {
    let names: Vec<&str> = ALL.iter().filter(|f| f.built).map(|f| f.name).collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_names_the_feature_and_how_to_get_it() {
        let text = CLUSTER.missing().to_string();
        assert!(
            text.starts_with("this build has no `cluster` feature"),
            "{text}"
        );
        assert!(text.contains("--features cluster"), "{text}");
    }

    #[test]
    fn version_lists_exactly_the_built_features() {
        let listed = built();
        for f in ALL {
            assert_eq!(listed.split(' ').any(|n| n == f.name), f.built, "{listed}");
        }
    }
}
