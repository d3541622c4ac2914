//! Loopback ports for the processes a test starts.
//!
//! A port is found by binding port 0 and closing the socket, so the
//! kernel may offer the same number again before the process that is to
//! listen on it has bound it: two nodes picked in a row once got the same
//! port, the second failed to bind, and the first answered the readiness
//! check meant for it. Every port handed out here is remembered for the
//! life of the test binary and never handed out twice.

#![allow(dead_code)] // each test binary uses what it needs

use std::collections::BTreeSet;
use std::net::{TcpListener, UdpSocket};
use std::sync::{Mutex, PoisonError};

static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A TCP port on 127.0.0.1 nobody listens on, not handed out before.
pub fn free_port() -> u16 {
    unique(|_| true)
}

/// A port free for both TCP and UDP on 127.0.0.1 (a cluster node's HTTP
/// and heartbeats share its number), not handed out before.
pub fn free_tcp_and_udp_port() -> u16 {
    unique(|port| UdpSocket::bind(("127.0.0.1", port)).is_ok())
}

fn unique(also_free: impl Fn(u16) -> bool) -> u16 {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if also_free(port) && handed_out.insert(port) {
            return port;
        }
    }
}
