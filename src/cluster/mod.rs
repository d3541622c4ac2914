//! Cluster mode: nodes that find each other, watch each other's health
//! and share run-time settings over authenticated UDP heartbeats.
//!
//! The pure parts take bytes, values and the time as arguments:
//! [`codec`] (the datagram, its MAC and the replay window),
//! [`membership`] (who is alive, suspect or dead) and [`settings`]
//! (last-writer-wins settings and cache-clear events). `node` is the
//! thin I/O shell: one thread, one UDP socket, no async runtime; a build
//! without the `cluster` feature has a stand-in whose [`Node::start`]
//! fails, and the pure parts only. It knows
//! nothing of the gateway; the gateway implements [`Local`] to receive
//! changes made elsewhere and calls [`Node::publish_setting`] and
//! [`Node::publish_cache_clear`] for changes made here.

pub mod codec;
pub mod membership;
#[cfg(feature = "cluster")]
mod node;
#[cfg(not(feature = "cluster"))]
#[path = "node_absent.rs"]
mod node;
#[cfg(feature = "cluster")]
mod seeds;
pub mod settings;
mod status;

use std::fmt;
use std::io;
use std::net::SocketAddr;

pub use codec::{DropReason, Key};
pub use membership::{State, Timing};
pub use node::Node;
pub use settings::SettingError;
pub use status::{Local, MemberStatus, Options, SettingStatus, Status, default_node_id};

/// Shortest cluster secret accepted on a non-loopback address: one
/// captured heartbeat lets anyone test guesses of the secret offline.
pub const MIN_SECRET_LEN: usize = 16;

/// Why a cluster node cannot start.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The node id is not 1 to 64 printable ASCII characters.
    NodeId(String),
    /// The intervals do not fit together.
    Timing(String),
    /// A node on a non-loopback address without a secret.
    Insecure {
        /// The address.
        bind: SocketAddr,
    },
    /// A secret shorter than [`MIN_SECRET_LEN`] on a non-loopback address.
    WeakSecret,
    /// This build has no `cluster` feature.
    NotBuilt,
    /// The socket could not be set up.
    Io {
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        source: io::Error,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NodeId(id) => write!(
                f,
                "node id {id:?} is not 1 to {} printable ASCII characters without spaces",
                membership::MAX_NODE_ID_LEN
            ),
            Self::Timing(msg) => f.write_str(msg),
            Self::Insecure { bind } => write!(
                f,
                "the cluster listens on {bind}, which is not loopback, and has no secret: \
                 anyone who can reach the port could join and change settings; set \
                 --cluster-secret (config cluster.secret) on every node"
            ),
            Self::WeakSecret => write!(
                f,
                "the cluster secret is shorter than {MIN_SECRET_LEN} bytes; a captured \
                 heartbeat would let it be guessed offline"
            ),
            Self::NotBuilt => crate::features::CLUSTER.missing().fmt(f),
            Self::Io { op, source } => write!(f, "{op}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Refuses a cluster node on a non-loopback `bind` address without a
/// secret, or with one shorter than [`MIN_SECRET_LEN`]; the caller checks
/// this at start, as it refuses a non-loopback listener without an API
/// key. On loopback any secret (or none) is accepted.
pub fn check_secure(bind: SocketAddr, secret: Option<&[u8]>) -> Result<(), Error> {
    if bind.ip().is_loopback() {
        return Ok(());
    }
    match secret {
        None | Some([]) => Err(Error::Insecure { bind }),
        Some(s) if s.len() < MIN_SECRET_LEN => Err(Error::WeakSecret),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_loopback_node_needs_a_real_secret() {
        let public: SocketAddr = "0.0.0.0:3000".parse().unwrap();
        let lan: SocketAddr = "192.168.1.10:3000".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:3000".parse().unwrap();
        let local6: SocketAddr = "[::1]:3000".parse().unwrap();
        for bind in [public, lan] {
            assert!(matches!(
                check_secure(bind, None),
                Err(Error::Insecure { .. })
            ));
            assert!(matches!(
                check_secure(bind, Some(b"")),
                Err(Error::Insecure { .. })
            ));
            assert!(matches!(
                check_secure(bind, Some(b"short")),
                Err(Error::WeakSecret)
            ));
            assert!(check_secure(bind, Some(b"a-long-enough-secret")).is_ok());
        }
        assert!(check_secure(local, None).is_ok());
        assert!(check_secure(local6, Some(b"x")).is_ok());
        let msg = check_secure(public, None).unwrap_err().to_string();
        assert!(msg.contains("--cluster-secret"), "{msg}");
    }
}
