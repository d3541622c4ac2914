//! The seed resolver: turns `host:port` seed strings into addresses, again
//! and again, on its own thread so that a slow DNS answer never delays a
//! heartbeat. A seed whose name does not resolve yet (a compose service
//! whose container starts late) is tried every interval until it does.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::log;

/// How often a seed that already answered is resolved again, to follow a
/// change of its address.
const RESOLVE_ANSWERED_EVERY: Duration = Duration::from_secs(30);

struct Seed<'a> {
    name: &'a str,
    addrs: Vec<SocketAddr>,
    resolved: Option<Instant>,
    failing: Option<bool>,
}

/// Resolves every seed at once, then each `interval` the seeds none of
/// whose addresses is among `answering()`, and the others every
/// [`RESOLVE_ANSWERED_EVERY`]; hands every change of the whole address
/// list to `publish`. Returns when `stop` is set (checked each round;
/// unpark the thread to end the wait early).
pub(super) fn run(
    seeds: &[String],
    socket: SocketAddr,
    interval: Duration,
    stop: &AtomicBool,
    answering: impl Fn() -> HashSet<SocketAddr>,
    publish: impl Fn(Vec<SocketAddr>),
) {
    let mut table: Vec<Seed> = seeds
        .iter()
        .map(|name| Seed {
            name,
            addrs: Vec::new(),
            resolved: None,
            failing: None,
        })
        .collect();
    while !stop.load(Ordering::Relaxed) {
        let known = answering();
        let mut changed = false;
        for seed in &mut table {
            let answered = seed.addrs.iter().any(|a| known.contains(a));
            let due = seed
                .resolved
                .is_none_or(|at| !answered || at.elapsed() >= RESOLVE_ANSWERED_EVERY);
            if due {
                changed |= resolve(seed, socket, interval);
            }
        }
        if changed {
            let mut all: Vec<SocketAddr> = table.iter().flat_map(|s| s.addrs.clone()).collect();
            all.sort();
            all.dedup();
            publish(all);
        }
        thread::park_timeout(interval);
    }
}

/// Resolves one seed; says whether its addresses changed.
fn resolve(seed: &mut Seed, socket: SocketAddr, interval: Duration) -> bool {
    seed.resolved = Some(Instant::now());
    let addrs = match seed.name.to_socket_addrs() {
        Ok(found) => {
            if seed.failing == Some(true) {
                log::info(&format!("cluster: seed {} resolves now", seed.name));
            }
            seed.failing = Some(false);
            usable(found, socket)
        }
        Err(e) => {
            if seed.failing != Some(true) {
                log::warn(&format!(
                    "cluster: seed {} does not resolve ({e}); trying again every {interval:?}",
                    seed.name
                ));
            }
            seed.failing = Some(true);
            Vec::new()
        }
    };
    if addrs == seed.addrs {
        return false;
    }
    seed.addrs = addrs;
    true
}

/// The addresses of a seed that a socket bound to `socket` can send to:
/// IPv4 for an IPv4 socket; for an IPv6 one, IPv4 as mapped addresses.
fn usable(found: impl Iterator<Item = SocketAddr>, socket: SocketAddr) -> Vec<SocketAddr> {
    let mut addrs: Vec<SocketAddr> = found
        .filter_map(|a| match (socket, a) {
            (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => {
                Some(a)
            }
            (SocketAddr::V6(_), SocketAddr::V4(v4)) => Some(SocketAddr::new(
                IpAddr::V6(v4.ip().to_ipv6_mapped()),
                v4.port(),
            )),
            (SocketAddr::V4(_), SocketAddr::V6(_)) => None,
        })
        .collect();
    addrs.sort();
    addrs.dedup();
    addrs
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn seeds_are_filtered_to_the_sockets_family() {
        let v4: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let v6: SocketAddr = "[::]:0".parse().unwrap();
        let found = || {
            vec![
                "10.0.0.1:3000".parse().unwrap(),
                "[2001:db8::1]:3000".parse().unwrap(),
                "10.0.0.1:3000".parse().unwrap(),
            ]
            .into_iter()
        };
        assert_eq!(usable(found(), v4), ["10.0.0.1:3000".parse().unwrap()]);
        let mapped: Vec<SocketAddr> = vec![
            "[::ffff:10.0.0.1]:3000".parse().unwrap(),
            "[2001:db8::1]:3000".parse().unwrap(),
        ];
        assert_eq!(usable(found(), v6), mapped);
    }

    #[test]
    fn names_and_literals_resolve_and_a_bad_name_is_skipped() {
        let seeds = [
            "localhost:3001".to_owned(),
            "127.0.0.2:3002".to_owned(),
            "a-name-without-a-port".to_owned(),
        ];
        let stop = AtomicBool::new(false);
        let published = RefCell::new(Vec::new());
        run(
            &seeds,
            "127.0.0.1:0".parse().unwrap(),
            Duration::from_millis(1),
            &stop,
            HashSet::new,
            |addrs| {
                published.borrow_mut().push(addrs);
                stop.store(true, Ordering::Relaxed);
            },
        );
        let want: Vec<SocketAddr> = vec![
            "127.0.0.1:3001".parse().unwrap(),
            "127.0.0.2:3002".parse().unwrap(),
        ];
        assert_eq!(published.into_inner(), [want]);
    }
}
