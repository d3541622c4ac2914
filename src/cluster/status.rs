//! What the cluster shows and takes: a node's options, its view of the
//! cluster as `GET /cluster/status` gives it, and the gateway's side
//! ([`Local`]). Plain data, in every build; the node itself needs the
//! `cluster` feature.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Serialize;

use super::codec::Key;
use super::membership::{State, Timing, valid_node_id};

/// What the gateway does when a change made on another node arrives.
/// Called on the cluster thread, never for changes published on this
/// node (the caller applied those itself); keep it quick.
pub trait Local: Send + Sync {
    /// Setting `name` is now `value` cluster-wide.
    fn apply(&self, setting: &str, value: &str);
    /// Another node cleared its cache; clear this one.
    fn clear_cache(&self);
}

/// How to run a node.
#[derive(Debug, Clone)]
pub struct Options {
    /// This node's id, unique in the cluster (`--node-id`).
    pub node_id: String,
    /// The UDP address to bind (the host and port of `--node-address`).
    pub bind: SocketAddr,
    /// The address shown in the status (`--node-address` as given).
    pub address: String,
    /// `host:port` of nodes to contact first (`--seed-nodes`).
    pub seeds: Vec<String>,
    /// The shared secret (`--cluster-secret`).
    pub key: Key,
    /// Heartbeat and failure-detection intervals (`cluster.*`).
    pub timing: Timing,
}

/// One member in [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberStatus {
    /// Its node id.
    pub node_id: String,
    /// Where it is reached (for this node: `--node-address` as given).
    pub address: String,
    /// `alive`, `suspect` or `dead`.
    pub state: &'static str,
    /// Milliseconds since the newest news of it (0 for this node).
    pub last_heartbeat_ms_ago: u64,
    /// Its incarnation.
    pub incarnation: u64,
}

/// One cluster-wide setting in [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SettingStatus {
    /// Its value.
    pub value: String,
    /// The clock of the write that set it.
    pub version: u64,
    /// The node where it was set.
    pub origin: String,
}

/// A node's view of the cluster, as `GET /cluster/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// This node's id.
    pub node_id: String,
    /// This node's `--node-address`.
    pub address: String,
    /// This node's incarnation.
    pub incarnation: u64,
    /// The newest settings clock this node has seen; equal on converged
    /// nodes.
    pub settings_version: u64,
    /// This node first, then every member it knows, by id.
    pub nodes: Vec<MemberStatus>,
    /// Cluster-wide settings, by name.
    pub settings: BTreeMap<String, SettingStatus>,
    /// Datagrams dropped, by reason (`bad_mac`, `replay`, `malformed`,
    /// `unknown_version`).
    pub dropped: BTreeMap<&'static str, u64>,
    /// Datagrams sent.
    pub sent_datagrams: u64,
    /// Bytes sent (UDP payload).
    pub sent_bytes: u64,
    /// Datagrams the operating system refused to send.
    pub send_errors: u64,
    /// Datagrams received, dropped ones included.
    pub received_datagrams: u64,
    /// Bytes received (UDP payload).
    pub received_bytes: u64,
}

impl Status {
    /// The status as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// How many nodes, this one included, are in `state`.
    pub fn count(&self, state: State) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.state == state.name())
            .count()
    }

    /// The member `node_id`, this node included.
    pub fn node(&self, node_id: &str) -> Option<&MemberStatus> {
        self.nodes.iter().find(|n| n.node_id == node_id)
    }
}

/// This host's name as a node id: the kernel's host name, else
/// `$HOSTNAME`, else `aiproxy`.
pub fn default_node_id() -> String {
    let candidates = [
        std::fs::read_to_string("/proc/sys/kernel/hostname").ok(),
        std::fs::read_to_string("/etc/hostname").ok(),
        std::env::var("HOSTNAME").ok(),
    ];
    candidates
        .into_iter()
        .flatten()
        .map(|s| s.trim().to_owned())
        .find(|s| valid_node_id(s))
        .unwrap_or_else(|| "aiproxy".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_node_id_is_a_valid_one() {
        assert!(valid_node_id(&default_node_id()));
    }
}
