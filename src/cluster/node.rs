//! The cluster thread: one UDP socket, blocking reads with a timeout, a
//! heartbeat to every known member each interval.
//!
//! Each heartbeat carries one page of this node's state (settings, recent
//! cache clears, what it knows of every member); the pages take turns, so
//! a node sends one datagram per member per interval whatever the
//! cluster's size. Everything is sent at once instead, to every member,
//! when a setting is published here or a seed's address changes; and
//! to a member when it is first heard of or heard at a new incarnation,
//! so a joining or restarted node learns the whole cluster within a
//! round trip rather than a few intervals.
//!
//! Seeds are host:port strings resolved again and again on a small
//! helper thread (a slow DNS answer must not delay heartbeats), so a
//! seed whose name only resolves once its container has started is found
//! when it appears. A seed is contacted every interval until its address
//! belongs to a known member.
//!
//! Changes heard from other nodes are handed to the gateway through
//! [`Local`] outside every lock of this module.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::codec::{self, DropReason, Header, Item, Key, MAX_DATAGRAM, ReplayGuard};
use super::membership::{Event, Membership, State, Timing, valid_node_id};
use super::settings::{self, Change, SettingError, Settings};
use super::status::{Local, MemberStatus, Options, SettingStatus, Status};
use super::{Error, seeds};
use crate::log;

/// At most one log line per drop reason in this interval.
const DROP_LOG_EVERY: Duration = Duration::from_secs(60);

/// A running cluster node. Stops when dropped.
pub struct Node {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    resolver: Option<thread::Thread>,
    local_addr: SocketAddr,
}

struct Shared {
    node_id: String,
    address: String,
    key: Key,
    timing: Timing,
    local: Arc<dyn Local>,
    state: Mutex<Inner>,
    /// Resolved seed addresses.
    seeds: Mutex<Vec<SocketAddr>>,
    stop: AtomicBool,
    /// Send the whole state to everyone at the next wake-up.
    push: AtomicBool,
    /// An ephemeral socket that sends empty datagrams to `wake_to`, which
    /// ends the cluster thread's blocking read.
    waker: UdpSocket,
    wake_to: SocketAddr,
    drops: [AtomicU64; 4],
    sent_datagrams: AtomicU64,
    sent_bytes: AtomicU64,
    send_errors: AtomicU64,
    received_datagrams: AtomicU64,
    received_bytes: AtomicU64,
}

struct Inner {
    membership: Membership,
    settings: Settings,
    replay: ReplayGuard,
    sequence: u64,
    rotation: usize,
    /// Where this node's own datagrams came back from (a seed list that
    /// names every node, this one included): not contacted again.
    own_addrs: HashSet<SocketAddr>,
}

impl Node {
    /// Binds the socket and starts the cluster thread and the seed
    /// resolver. `local` receives the changes other nodes make.
    pub fn start(options: Options, local: Arc<dyn Local>) -> Result<Node, Error> {
        if !valid_node_id(&options.node_id) {
            return Err(Error::NodeId(options.node_id));
        }
        options.timing.check().map_err(Error::Timing)?;
        let io = |op| move |source| Error::Io { op, source };
        let socket = UdpSocket::bind(options.bind).map_err(io("bind the cluster UDP port"))?;
        let local_addr = socket.local_addr().map_err(io("cluster socket address"))?;
        let waker_bind: SocketAddr = match local_addr {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let waker = UdpSocket::bind(waker_bind).map_err(io("bind the cluster waker"))?;
        let wake_ip = match local_addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let incarnation = wall_ms();
        let shared = Arc::new(Shared {
            node_id: options.node_id.clone(),
            address: options.address,
            key: options.key,
            timing: options.timing,
            local,
            state: Mutex::new(Inner {
                membership: Membership::new(&options.node_id, incarnation, options.timing),
                settings: Settings::new(&options.node_id),
                replay: ReplayGuard::new(),
                sequence: 0,
                rotation: 0,
                own_addrs: HashSet::new(),
            }),
            seeds: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            push: AtomicBool::new(false),
            waker,
            wake_to: SocketAddr::new(wake_ip, local_addr.port()),
            drops: Default::default(),
            sent_datagrams: AtomicU64::new(0),
            sent_bytes: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
            received_datagrams: AtomicU64::new(0),
            received_bytes: AtomicU64::new(0),
        });
        let runner = Runner {
            shared: Arc::clone(&shared),
            socket,
            drop_log: Default::default(),
            conflict_logged: None,
        };
        let thread = thread::Builder::new()
            .name("cluster".into())
            .spawn(move || runner.run())
            .map_err(io("start the cluster thread"))?;
        let resolver = if options.seeds.is_empty() {
            None
        } else {
            let resolver_shared = Arc::clone(&shared);
            let seeds = options.seeds;
            let spawned = thread::Builder::new()
                .name("cluster-seeds".into())
                .spawn(move || resolve_seeds(&resolver_shared, &seeds, local_addr));
            match spawned {
                Ok(handle) => Some(handle.thread().clone()),
                Err(source) => {
                    stop(&shared, Some(thread));
                    return Err(Error::Io {
                        op: "start the seed resolver",
                        source,
                    });
                }
            }
        };
        log::info(&format!(
            "cluster: node {} listening on udp {local_addr} (incarnation {incarnation})",
            shared.node_id
        ));
        Ok(Node {
            shared,
            thread: Some(thread),
            resolver,
            local_addr,
        })
    }

    /// The bound UDP address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Records a setting changed on this node and sends it to every
    /// member at once; returns the new settings version. The caller has
    /// applied the change itself.
    pub fn publish_setting(&self, name: &str, value: &str) -> Result<u64, SettingError> {
        let version = {
            let mut st = self.shared.lock();
            st.settings.set(name, value, wall_ms())?;
            st.settings.version()
        };
        self.shared.push_now();
        Ok(version)
    }

    /// Records a cache clear made on this node and sends it to every
    /// member at once; returns the new settings version. The caller has
    /// cleared its own cache.
    pub fn publish_cache_clear(&self) -> u64 {
        let version = {
            let mut st = self.shared.lock();
            st.settings.clear_cache(wall_ms());
            st.settings.version()
        };
        self.shared.push_now();
        version
    }

    /// The membership as this node sees it, its settings and counters.
    pub fn status(&self) -> Status {
        let s = &self.shared;
        let now = Instant::now();
        let st = s.lock();
        let mut nodes = vec![MemberStatus {
            node_id: s.node_id.clone(),
            address: s.address.clone(),
            state: State::Alive.name(),
            last_heartbeat_ms_ago: 0,
            incarnation: st.membership.incarnation(),
        }];
        nodes.extend(st.membership.members().iter().map(|(id, m)| {
            MemberStatus {
                node_id: id.clone(),
                address: m.addr.to_string(),
                state: m.state.name(),
                last_heartbeat_ms_ago: now
                    .saturating_duration_since(m.heard)
                    .as_millis()
                    .try_into()
                    .unwrap_or(u64::MAX),
                incarnation: m.incarnation,
            }
        }));
        let settings = st
            .settings
            .values()
            .map(|(name, value, stamp)| {
                let status = SettingStatus {
                    value: value.to_owned(),
                    version: stamp.clock,
                    origin: stamp.node_id.clone(),
                };
                (name.to_owned(), status)
            })
            .collect();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Status {
            node_id: s.node_id.clone(),
            address: s.address.clone(),
            incarnation: st.membership.incarnation(),
            settings_version: st.settings.version(),
            nodes,
            settings,
            dropped: DropReason::ALL
                .iter()
                .map(|r| (r.name(), load(&s.drops[r.index()])))
                .collect(),
            sent_datagrams: load(&s.sent_datagrams),
            sent_bytes: load(&s.sent_bytes),
            send_errors: load(&s.send_errors),
            received_datagrams: load(&s.received_datagrams),
            received_bytes: load(&s.received_bytes),
        }
    }

    /// Stops the cluster thread (other nodes see this one go suspect,
    /// then dead).
    pub fn shutdown(self) {}
}

impl Drop for Node {
    fn drop(&mut self) {
        stop(&self.shared, self.thread.take());
        // The resolver may be waiting on DNS; it ends at its next check
        // and holds no socket other nodes could see.
        if let Some(resolver) = &self.resolver {
            resolver.unpark();
        }
    }
}

fn stop(shared: &Shared, thread: Option<JoinHandle<()>>) {
    shared.stop.store(true, Ordering::Relaxed);
    shared.wake();
    if let Some(t) = thread {
        let _ = t.join();
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind, still
        // consistent enough to keep heartbeating.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake(&self) {
        let _ = self.waker.send_to(&[], self.wake_to);
    }

    fn push_now(&self) {
        self.push.store(true, Ordering::Relaxed);
        self.wake();
    }

    fn count_drop(&self, reason: DropReason) {
        self.drops[reason.index()].fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Default, Clone, Copy)]
struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

struct Runner {
    shared: Arc<Shared>,
    socket: UdpSocket,
    drop_log: [Throttle; 4],
    conflict_logged: Option<Instant>,
}

impl Runner {
    fn run(mut self) {
        let timing = self.shared.timing;
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        let mut next_beat = Instant::now();
        let mut events = Vec::new();
        while !self.shared.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if self.shared.push.swap(false, Ordering::Relaxed) {
                self.beat(now, true);
            } else if now >= next_beat {
                self.beat(now, false);
            }
            if now >= next_beat {
                // Catch up without a burst after a stall.
                next_beat = (next_beat + timing.heartbeat).max(now);
            }
            let deadline = self.shared.lock().membership.next_deadline();
            let wake_at = deadline.map_or(next_beat, |d| d.min(next_beat));
            let timeout = wake_at
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            if let Err(e) = self.socket.set_read_timeout(Some(timeout)) {
                log::error(&format!("cluster: cannot set the socket timeout: {e}"));
                thread::sleep(timeout);
            }
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) => self.receive(&buf[..n], from),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => {
                    log::debug(&format!("cluster: receive failed: {e}"));
                    // Whatever it is, do not spin on it.
                    thread::sleep(Duration::from_millis(10));
                }
            }
            self.shared
                .lock()
                .membership
                .tick(Instant::now(), &mut events);
            log_events(&self.shared.node_id, timing, &mut events);
        }
    }

    /// Sends this node's state: one page (taking turns) or every page, to
    /// every member and to the seeds that are not members yet.
    fn beat(&mut self, now: Instant, all_pages: bool) {
        let (datagrams, mut targets) = {
            let mut st = self.shared.lock();
            let datagrams = self.datagrams(&mut st, now, all_pages);
            let members: Vec<SocketAddr> =
                st.membership.members().values().map(|m| m.addr).collect();
            let seeds = self
                .shared
                .seeds
                .lock()
                .map(|s| s.clone())
                .unwrap_or_default();
            let extra: Vec<SocketAddr> = seeds
                .into_iter()
                .filter(|a| !members.contains(a) && !st.own_addrs.contains(a))
                .collect();
            (datagrams, [members, extra].concat())
        };
        targets.sort();
        targets.dedup();
        self.send(&datagrams, &targets);
    }

    fn datagrams(&self, st: &mut Inner, now: Instant, all_pages: bool) -> Vec<Vec<u8>> {
        let items = state_items(st, now);
        let pages = codec::paginate(&items, self.shared.node_id.len());
        let chosen = if all_pages {
            0..pages.len()
        } else {
            st.rotation = st.rotation.wrapping_add(1);
            let one = st.rotation % pages.len();
            one..one + 1
        };
        chosen
            .map(|page| {
                st.sequence += 1;
                let header = Header {
                    node_id: self.shared.node_id.clone(),
                    incarnation: st.membership.incarnation(),
                    sequence: st.sequence,
                    page: page as u8,
                    pages: pages.len() as u8,
                };
                codec::encode(&self.shared.key, &header, &items[pages[page].clone()])
            })
            .collect()
    }

    fn send(&self, datagrams: &[Vec<u8>], targets: &[SocketAddr]) {
        let s = &self.shared;
        for d in datagrams {
            for to in targets {
                match self.socket.send_to(d, to) {
                    Ok(n) => {
                        s.sent_datagrams.fetch_add(1, Ordering::Relaxed);
                        s.sent_bytes.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) => {
                        s.send_errors.fetch_add(1, Ordering::Relaxed);
                        log::debug(&format!("cluster: send to {to} failed: {e}"));
                    }
                }
            }
        }
    }

    fn receive(&mut self, bytes: &[u8], from: SocketAddr) {
        if bytes.is_empty() {
            return; // a wake-up
        }
        let s = Arc::clone(&self.shared);
        s.received_datagrams.fetch_add(1, Ordering::Relaxed);
        s.received_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let d = match codec::decode(&s.key, bytes) {
            Ok(d) => d,
            Err(reason) => return self.dropped(reason, from),
        };
        let now = Instant::now();
        let mut events = Vec::new();
        let mut changes = Vec::new();
        {
            let mut st = s.lock();
            if d.header.node_id == s.node_id {
                if d.header.incarnation == st.membership.incarnation() {
                    st.own_addrs.insert(from);
                } else {
                    drop(st);
                    self.conflict(&d.header, from, now);
                }
                return;
            }
            if let Err(reason) = st.replay.admit(&d.header) {
                drop(st);
                return self.dropped(reason, from);
            }
            st.membership.heard(
                &d.header.node_id,
                d.header.incarnation,
                from,
                now,
                &mut events,
            );
            let mut entries = Vec::new();
            for item in d.items {
                match item {
                    Item::Member(e) => entries.push(e),
                    Item::Setting(e) => changes.extend(st.settings.merge_setting(&e)),
                    Item::Clear(stamp) => changes.extend(st.settings.merge_clear(&stamp)),
                }
            }
            st.membership.merge(&entries, now, &mut events);
        }
        self.apply(&changes, &d.header.node_id);
        // A member new to this node, or one that restarted, knows little
        // or nothing of the cluster: it gets everything now rather than a
        // page per interval.
        let newcomers: Vec<SocketAddr> = events
            .iter()
            .filter_map(|e| match e {
                Event::Joined { addr, .. } | Event::Incarnation { addr, .. } => Some(*addr),
                _ => None,
            })
            .collect();
        log_events(&s.node_id, s.timing, &mut events);
        if !newcomers.is_empty() {
            let datagrams = self.datagrams(&mut s.lock(), now, true);
            self.send(&datagrams, &newcomers);
        }
    }

    fn apply(&self, changes: &[Change], from: &str) {
        let local = &self.shared.local;
        for change in changes {
            let applied = panic::catch_unwind(AssertUnwindSafe(|| match change {
                Change::Set { name, value } => {
                    log::info(&format!(
                        "cluster: setting {name} = {value:?} (from node {from})"
                    ));
                    local.apply(name, value);
                }
                Change::ClearCache => {
                    log::info(&format!("cluster: clearing the cache (from node {from})"));
                    local.clear_cache();
                }
            }));
            if applied.is_err() {
                log::error(&format!("cluster: applying {change:?} panicked"));
            }
        }
    }

    fn dropped(&mut self, reason: DropReason, from: SocketAddr) {
        self.shared.count_drop(reason);
        let t = &mut self.drop_log[reason.index()];
        let now = Instant::now();
        if t.last
            .is_some_and(|l| now.duration_since(l) < DROP_LOG_EVERY)
        {
            t.suppressed += 1;
            return;
        }
        let also = match t.suppressed {
            0 => String::new(),
            n => format!(" ({n} more since the last such line)"),
        };
        let hint = match reason {
            DropReason::BadMac => ": a node with another --cluster-secret, or a stranger",
            DropReason::UnknownVersion => ": a node of another aiproxy version",
            _ => "",
        };
        log::warn(&format!(
            "cluster: dropped a datagram from {from}: {}{hint}{also}",
            reason.name()
        ));
        *t = Throttle {
            last: Some(now),
            suppressed: 0,
        };
    }

    fn conflict(&mut self, header: &Header, from: SocketAddr, now: Instant) {
        if self
            .conflict_logged
            .is_some_and(|l| now.duration_since(l) < DROP_LOG_EVERY)
        {
            return;
        }
        self.conflict_logged = Some(now);
        log::warn(&format!(
            "cluster: {from} also calls itself {:?} (incarnation {}); node ids must be \
             unique (--node-id)",
            header.node_id, header.incarnation
        ));
    }
}

/// Everything this node tells the others, settings first (so that they
/// are on the first page).
fn state_items(st: &Inner, now: Instant) -> Vec<Item> {
    let mut items: Vec<Item> = st
        .settings
        .values()
        .map(|(name, value, stamp)| {
            Item::Setting(settings::Entry {
                name: name.to_owned(),
                value: value.to_owned(),
                stamp: stamp.clone(),
            })
        })
        .collect();
    items.extend(st.settings.clears().cloned().map(Item::Clear));
    items.extend(st.membership.digest(now).into_iter().map(Item::Member));
    items
}

fn log_events(me: &str, timing: Timing, events: &mut Vec<Event>) {
    for e in events.drain(..) {
        match e {
            Event::Joined { node_id, addr } => {
                log::info(&format!("cluster: node {node_id} joined ({addr})"));
            }
            Event::Incarnation {
                node_id,
                incarnation,
                ..
            } => log::info(&format!(
                "cluster: node {node_id} is at incarnation {incarnation} (restarted, or \
                 refuted a suspicion)"
            )),
            Event::Changed { node_id, to, .. } => {
                let line = match to {
                    State::Alive => format!("cluster: node {node_id} is alive again"),
                    State::Suspect => format!(
                        "cluster: node {node_id} is suspect: silent for {:?}",
                        timing.suspect_after
                    ),
                    State::Dead => format!(
                        "cluster: node {node_id} is dead: silent for {:?}",
                        timing.dead_after
                    ),
                };
                if to == State::Alive {
                    log::info(&line);
                } else {
                    log::warn(&line);
                }
            }
            Event::Forgotten { node_id } => log::info(&format!(
                "cluster: forgot node {node_id}, dead for {:?}",
                timing.forget_after
            )),
            Event::Refuted { incarnation } => log::info(&format!(
                "cluster: another node suspected this one ({me}); refuted with incarnation \
                 {incarnation}"
            )),
        }
    }
}
/// Runs the seed resolver for this node: the addresses that answer are
/// its alive members' and its own; fresh seed addresses wake the cluster
/// thread, which contacts them at once.
fn resolve_seeds(shared: &Shared, seeds: &[String], socket: SocketAddr) {
    let answering = || {
        let st = shared.lock();
        st.membership
            .members()
            .values()
            .filter(|m| m.state == State::Alive)
            .map(|m| m.addr)
            .chain(st.own_addrs.iter().copied())
            .collect()
    };
    let publish = |addrs: Vec<SocketAddr>| {
        if let Ok(mut s) = shared.seeds.lock() {
            *s = addrs;
        }
        shared.push_now();
    };
    seeds::run(
        seeds,
        socket,
        shared.timing.heartbeat,
        &shared.stop,
        answering,
        publish,
    );
}
