//! Who is in the cluster, as this node sees it: a pure state machine
//! driven by the heartbeats the node thread hands it, with the time
//! passed in (tests move it by hand).
//!
//! Lifecycle of a member, as in SWIM and memberlist:
//!
//! ```text
//!   (unknown) --heartbeat or digest--> alive --silent suspect_after--> suspect
//!   suspect --silent dead_after--> dead --dead for forget_after--> (forgotten)
//!   suspect | dead --any fresh news at its incarnation or a newer one--> alive
//! ```
//!
//! "Silent" is measured from the newest evidence that the member was
//! alive: one of its own heartbeats, or a digest entry in which another
//! node reports how long ago *it* heard the member. So a member that one
//! node cannot reach but another can stays alive for both (SWIM's
//! indirect probe, for free), and a member that stopped is silent for
//! everyone at once: detection takes `suspect_after` after its last
//! heartbeat, whatever the cluster size.
//!
//! Incarnation numbers order a member's lives. A node starts with a new,
//! larger number (the node thread uses its start time), so a restarted
//! node is recognised as new and older news about it is ignored. When a
//! node reads a digest that says it is suspect or dead, or that carries a
//! larger incarnation for its own id (a previous life with a clock that
//! ran ahead), it takes a larger incarnation, which refutes the rumour
//! everywhere it spreads.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Longest node id, in bytes (a DNS host name fits).
pub const MAX_NODE_ID_LEN: usize = 64;

/// Most members one node keeps track of; news of more is ignored, so a
/// misbehaving peer cannot make the table grow without bound.
pub const MAX_MEMBERS: usize = 1024;

/// Whether `id` may name a node: 1 to 64 printable ASCII characters
/// without spaces (host names and `node-1` style names fit).
pub fn valid_node_id(id: &str) -> bool {
    (1..=MAX_NODE_ID_LEN).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// The failure detector's intervals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How often a node sends its heartbeat to every member it knows.
    /// Default 1 s.
    pub heartbeat: Duration,
    /// Silence after which a member is suspect. Default 3 s.
    pub suspect_after: Duration,
    /// Silence after which a member is dead. Default 10 s.
    pub dead_after: Duration,
    /// How long a dead member stays listed (and is still sent heartbeats,
    /// so a healed partition finds it again) before it is forgotten.
    /// Default 10 min.
    pub forget_after: Duration,
}

/// Default heartbeat interval.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
/// Default silence before a member is suspect.
pub const DEFAULT_SUSPECT_AFTER: Duration = Duration::from_secs(3);
/// Default silence before a member is dead.
pub const DEFAULT_DEAD_AFTER: Duration = Duration::from_secs(10);
/// Default time a dead member stays listed.
pub const DEFAULT_FORGET_AFTER: Duration = Duration::from_secs(600);

impl Default for Timing {
    fn default() -> Self {
        Self {
            heartbeat: DEFAULT_HEARTBEAT,
            suspect_after: DEFAULT_SUSPECT_AFTER,
            dead_after: DEFAULT_DEAD_AFTER,
            forget_after: DEFAULT_FORGET_AFTER,
        }
    }
}

impl Timing {
    /// Checks that the intervals make sense together: a member must be
    /// able to miss at least one heartbeat before it is suspect, and
    /// suspect comes before dead.
    pub fn check(&self) -> Result<(), String> {
        if self.heartbeat.is_zero() {
            return Err("cluster.heartbeat_interval must be above zero".into());
        }
        if self.suspect_after < self.heartbeat.saturating_mul(2) {
            return Err(format!(
                "cluster.suspect_after ({:?}) must be at least twice cluster.heartbeat_interval \
                 ({:?}), or one lost datagram makes a node suspect",
                self.suspect_after, self.heartbeat
            ));
        }
        if self.dead_after <= self.suspect_after {
            return Err(format!(
                "cluster.dead_after ({:?}) must be longer than cluster.suspect_after ({:?})",
                self.dead_after, self.suspect_after
            ));
        }
        Ok(())
    }
}

/// A member's state as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    /// Heard from within `suspect_after`.
    Alive,
    /// Silent for `suspect_after`, not yet `dead_after`.
    Suspect,
    /// Silent for `dead_after` or longer.
    Dead,
}

impl State {
    /// Every state, in order.
    pub const ALL: [State; 3] = [State::Alive, State::Suspect, State::Dead];

    /// `alive`, `suspect` or `dead`.
    pub fn name(self) -> &'static str {
        match self {
            State::Alive => "alive",
            State::Suspect => "suspect",
            State::Dead => "dead",
        }
    }
}

/// What a digest says about one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The member's node id.
    pub node_id: String,
    /// Where the reporting node reaches it.
    pub addr: SocketAddr,
    /// The member's incarnation as the reporter knows it.
    pub incarnation: u64,
    /// The member's state as the reporter sees it.
    pub state: State,
    /// How long ago the reporter last had news of it, in milliseconds
    /// (rounded up, saturating).
    pub age_ms: u32,
}

/// One member as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Where heartbeats for it go: the source address of its own
    /// datagrams, or the address a peer reported.
    pub addr: SocketAddr,
    /// Its newest known incarnation.
    pub incarnation: u64,
    /// Its state as of the last [`Membership::tick`].
    pub state: State,
    /// The newest evidence that it was alive at `incarnation`.
    pub heard: Instant,
}

/// Something that changed, for the log and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A member not known before.
    Joined {
        /// Its id.
        node_id: String,
        /// Its address.
        addr: SocketAddr,
    },
    /// A known member with a larger incarnation (restarted, or refuted a
    /// suspicion).
    Incarnation {
        /// Its id.
        node_id: String,
        /// Its address.
        addr: SocketAddr,
        /// The new incarnation.
        incarnation: u64,
    },
    /// A member moved between alive, suspect and dead.
    Changed {
        /// Its id.
        node_id: String,
        /// The state before.
        from: State,
        /// The state now.
        to: State,
    },
    /// A dead member was dropped from the table.
    Forgotten {
        /// Its id.
        node_id: String,
    },
    /// This node took a new incarnation to refute a rumour about itself.
    Refuted {
        /// Its new incarnation.
        incarnation: u64,
    },
}

/// The member table of one node.
#[derive(Debug)]
pub struct Membership {
    me: String,
    incarnation: u64,
    timing: Timing,
    members: BTreeMap<String, Member>,
}

impl Membership {
    /// The table of node `me`, starting at `incarnation`, knowing nobody.
    pub fn new(me: &str, incarnation: u64, timing: Timing) -> Self {
        Self {
            me: me.to_owned(),
            incarnation,
            timing,
            members: BTreeMap::new(),
        }
    }

    /// This node's id.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// This node's current incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The intervals in use.
    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    /// Every member but this node, by id.
    pub fn members(&self) -> &BTreeMap<String, Member> {
        &self.members
    }

    /// A datagram from `node_id` at `incarnation` arrived from `addr`:
    /// the best evidence there is. Older incarnations are ignored (the
    /// node thread's replay check already dropped those).
    pub fn heard(
        &mut self,
        node_id: &str,
        incarnation: u64,
        addr: SocketAddr,
        now: Instant,
        events: &mut Vec<Event>,
    ) {
        if node_id == self.me {
            return;
        }
        match self.members.get_mut(node_id) {
            Some(m) if incarnation < m.incarnation => return,
            Some(m) => {
                if incarnation > m.incarnation {
                    m.incarnation = incarnation;
                    events.push(Event::Incarnation {
                        node_id: node_id.to_owned(),
                        addr,
                        incarnation,
                    });
                }
                m.addr = addr;
                m.heard = m.heard.max(now);
            }
            None => {
                if !self.insert(node_id, addr, incarnation, now, events) {
                    return;
                }
            }
        }
        self.refresh(node_id, now, events);
    }

    /// Merges what another node reports in its digest.
    pub fn merge(&mut self, entries: &[Entry], now: Instant, events: &mut Vec<Event>) {
        for e in entries {
            self.merge_one(e, now, events);
        }
    }

    fn merge_one(&mut self, e: &Entry, now: Instant, events: &mut Vec<Event>) {
        if e.node_id == self.me {
            let rumour = e.incarnation == self.incarnation && e.state != State::Alive;
            if e.incarnation > self.incarnation || rumour {
                self.incarnation = e.incarnation.saturating_add(1);
                events.push(Event::Refuted {
                    incarnation: self.incarnation,
                });
            }
            return;
        }
        let age = Duration::from_millis(u64::from(e.age_ms));
        // News older than the clock can represent is no evidence at all.
        let Some(seen) = now.checked_sub(age) else {
            return;
        };
        match self.members.get_mut(&e.node_id) {
            Some(m) if e.incarnation < m.incarnation => return,
            Some(m) if e.incarnation > m.incarnation => {
                m.incarnation = e.incarnation;
                m.addr = e.addr;
                m.heard = seen;
                events.push(Event::Incarnation {
                    node_id: e.node_id.clone(),
                    addr: e.addr,
                    incarnation: e.incarnation,
                });
            }
            Some(m) => m.heard = m.heard.max(seen),
            None => {
                // Only a member someone heard recently is worth adding; a
                // dead one we never knew would only be forgotten again.
                if age >= self.timing.dead_after
                    || !self.insert(&e.node_id, e.addr, e.incarnation, seen, events)
                {
                    return;
                }
            }
        }
        self.refresh(&e.node_id, now, events);
    }

    fn insert(
        &mut self,
        node_id: &str,
        addr: SocketAddr,
        incarnation: u64,
        heard: Instant,
        events: &mut Vec<Event>,
    ) -> bool {
        if self.members.len() >= MAX_MEMBERS || !valid_node_id(node_id) {
            return false;
        }
        self.members.insert(
            node_id.to_owned(),
            Member {
                addr,
                incarnation,
                state: State::Alive,
                heard,
            },
        );
        events.push(Event::Joined {
            node_id: node_id.to_owned(),
            addr,
        });
        true
    }

    /// Moves every member to the state its silence calls for at `now` and
    /// forgets those dead for `forget_after`.
    pub fn tick(&mut self, now: Instant, events: &mut Vec<Event>) {
        let forget = self
            .timing
            .dead_after
            .saturating_add(self.timing.forget_after);
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| now.saturating_duration_since(m.heard) >= forget)
            .map(|(id, _)| id.clone())
            .collect();
        for node_id in gone {
            self.members.remove(&node_id);
            events.push(Event::Forgotten { node_id });
        }
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            self.refresh(&id, now, events);
        }
    }

    fn refresh(&mut self, node_id: &str, now: Instant, events: &mut Vec<Event>) {
        let timing = self.timing;
        let Some(m) = self.members.get_mut(node_id) else {
            return;
        };
        let to = state_after(&timing, now.saturating_duration_since(m.heard));
        if to != m.state {
            events.push(Event::Changed {
                node_id: node_id.to_owned(),
                from: m.state,
                to,
            });
            m.state = to;
        }
    }

    /// When the next member changes state or is forgotten if nothing is
    /// heard before then; the node thread wakes up at that moment.
    pub fn next_deadline(&self) -> Option<Instant> {
        let t = &self.timing;
        self.members
            .values()
            .filter_map(|m| {
                m.heard.checked_add(match m.state {
                    State::Alive => t.suspect_after,
                    State::Suspect => t.dead_after,
                    State::Dead => t.dead_after.saturating_add(t.forget_after),
                })
            })
            .min()
    }

    /// What this node knows about every member, for its heartbeats.
    pub fn digest(&self, now: Instant) -> Vec<Entry> {
        self.members
            .iter()
            .map(|(id, m)| Entry {
                node_id: id.clone(),
                addr: m.addr,
                incarnation: m.incarnation,
                state: m.state,
                age_ms: age_ms(now.saturating_duration_since(m.heard)),
            })
            .collect()
    }
}

/// The state a silence of `silent` calls for.
fn state_after(t: &Timing, silent: Duration) -> State {
    if silent < t.suspect_after {
        State::Alive
    } else if silent < t.dead_after {
        State::Suspect
    } else {
        State::Dead
    }
}

/// Milliseconds, rounded up so that relayed news never looks fresher than
/// it is, saturating at `u32::MAX` (49 days).
pub fn age_ms(d: Duration) -> u32 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    u32::try_from(ms).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// Default timing but a short memory for dead members.
    fn timing() -> Timing {
        Timing {
            forget_after: Duration::from_secs(60),
            ..Timing::default()
        }
    }

    fn state(m: &Membership, id: &str) -> Option<State> {
        m.members().get(id).map(|m| m.state)
    }

    fn entry(id: &str, port: u16, incarnation: u64, state: State, age_ms: u32) -> Entry {
        Entry {
            node_id: id.into(),
            addr: addr(port),
            incarnation,
            state,
            age_ms,
        }
    }

    #[test]
    fn silence_makes_a_member_suspect_then_dead_then_forgotten() {
        let t0 = Instant::now();
        let mut m = Membership::new("n1", 1, timing());
        let mut ev = Vec::new();
        m.heard("n2", 7, addr(2), t0, &mut ev);
        assert_eq!(
            ev,
            [Event::Joined {
                node_id: "n2".into(),
                addr: addr(2)
            }]
        );
        assert_eq!(m.next_deadline(), Some(t0 + secs(3.0)));

        ev.clear();
        m.tick(t0 + secs(2.999), &mut ev);
        assert!(ev.is_empty());
        assert_eq!(state(&m, "n2"), Some(State::Alive));

        m.tick(t0 + secs(3.0), &mut ev);
        assert_eq!(state(&m, "n2"), Some(State::Suspect));
        assert_eq!(m.next_deadline(), Some(t0 + secs(10.0)));

        m.tick(t0 + secs(9.9), &mut ev);
        assert_eq!(state(&m, "n2"), Some(State::Suspect));
        m.tick(t0 + secs(10.0), &mut ev);
        assert_eq!(state(&m, "n2"), Some(State::Dead));
        assert_eq!(m.next_deadline(), Some(t0 + secs(70.0)));

        m.tick(t0 + secs(69.0), &mut ev);
        assert_eq!(state(&m, "n2"), Some(State::Dead), "kept for a while");
        m.tick(t0 + secs(70.0), &mut ev);
        assert_eq!(state(&m, "n2"), None, "then forgotten");
        assert_eq!(
            ev,
            [
                Event::Changed {
                    node_id: "n2".into(),
                    from: State::Alive,
                    to: State::Suspect
                },
                Event::Changed {
                    node_id: "n2".into(),
                    from: State::Suspect,
                    to: State::Dead
                },
                Event::Forgotten {
                    node_id: "n2".into()
                },
            ]
        );
        assert_eq!(m.next_deadline(), None);
    }

    #[test]
    fn a_dead_member_is_alive_again_at_its_next_heartbeat() {
        let t0 = Instant::now();
        let mut m = Membership::new("n1", 1, timing());
        let mut ev = Vec::new();
        m.heard("n2", 7, addr(2), t0, &mut ev);
        m.tick(t0 + secs(12.0), &mut ev);
        assert_eq!(state(&m, "n2"), Some(State::Dead));
        ev.clear();
        // Same incarnation (a partition, not a restart), from a new port.
        m.heard("n2", 7, addr(22), t0 + secs(13.0), &mut ev);
        assert_eq!(
            ev,
            [Event::Changed {
                node_id: "n2".into(),
                from: State::Dead,
                to: State::Alive
            }]
        );
        assert_eq!(m.members()["n2"].addr, addr(22), "follows its address");
    }

    #[test]
    fn a_restarted_member_is_recognised_by_its_larger_incarnation() {
        let t0 = Instant::now();
        let mut m = Membership::new("n1", 1, timing());
        let mut ev = Vec::new();
        m.heard("n2", 7, addr(2), t0, &mut ev);
        m.tick(t0 + secs(4.0), &mut ev);
        ev.clear();
        // Restarted somewhere else: its new address is where to answer it.
        m.heard("n2", 9, addr(3), t0 + secs(5.0), &mut ev);
        assert_eq!(
            ev,
            [
                Event::Incarnation {
                    node_id: "n2".into(),
                    addr: addr(3),
                    incarnation: 9
                },
                Event::Changed {
                    node_id: "n2".into(),
                    from: State::Suspect,
                    to: State::Alive
                },
            ]
        );
        // News of the previous life changes nothing any more.
        ev.clear();
        m.heard("n2", 7, addr(99), t0 + secs(5.5), &mut ev);
        m.merge(
            &[entry("n2", 98, 7, State::Alive, 0)],
            t0 + secs(5.5),
            &mut ev,
        );
        assert!(ev.is_empty());
        assert_eq!(m.members()["n2"].addr, addr(3));
        assert_eq!(m.members()["n2"].incarnation, 9);
    }

    #[test]
    fn a_node_seeded_with_one_peer_learns_the_others_from_its_digest() {
        let t0 = Instant::now();
        let mut n1 = Membership::new("n1", 1, timing());
        let mut n3 = Membership::new("n3", 3, timing());
        let mut ev = Vec::new();
        n1.heard("n2", 2, addr(2), t0, &mut ev);
        n1.heard("n3", 3, addr(3), t0, &mut ev);
        // n1's heartbeat reaches n3.
        n3.heard("n1", 1, addr(1), t0, &mut ev);
        n3.merge(&n1.digest(t0), t0, &mut ev);
        assert_eq!(n3.members().keys().collect::<Vec<_>>(), ["n1", "n2"]);
        assert_eq!(n3.members()["n2"].addr, addr(2));
        assert_eq!(n3.members()["n2"].state, State::Alive);
    }

    #[test]
    fn relayed_news_keeps_a_member_alive_that_this_node_cannot_hear() {
        let t0 = Instant::now();
        let mut m = Membership::new("n1", 1, timing());
        let mut ev = Vec::new();
        m.heard("n2", 2, addr(2), t0, &mut ev);
        m.heard("n3", 3, addr(3), t0, &mut ev);
        // n3's datagrams stop reaching n1, but n2 still hears n3.
        for s in 1..=20 {
            let now = t0 + secs(f64::from(s));
            m.heard("n2", 2, addr(2), now, &mut ev);
            m.merge(&[entry("n3", 3, 3, State::Alive, 400)], now, &mut ev);
            m.tick(now, &mut ev);
            assert_eq!(state(&m, "n3"), Some(State::Alive), "at {s} s");
        }
        // Relayed news ages like direct news: once n2 stops hearing n3
        // too, n3 goes suspect 3 s after the last time anyone heard it.
        let last = t0 + secs(20.0) - Duration::from_millis(400);
        for ms in (0..=2500).step_by(100) {
            let now = t0 + secs(20.0) + Duration::from_millis(ms);
            let age = age_ms(now - last);
            m.merge(&[entry("n3", 3, 3, State::Alive, age)], now, &mut ev);
            m.tick(now, &mut ev);
        }
        assert_eq!(m.members()["n3"].heard, last);
        assert_eq!(state(&m, "n3"), Some(State::Alive));
        let mut ev = Vec::new();
        m.tick(last + secs(3.0), &mut ev);
        assert_eq!(state(&m, "n3"), Some(State::Suspect));
    }

    #[test]
    fn a_node_refutes_a_suspicion_with_a_larger_incarnation() {
        let t0 = Instant::now();
        let mut m = Membership::new("n1", 5, timing());
        let mut ev = Vec::new();
        m.merge(&[entry("n1", 1, 5, State::Alive, 0)], t0, &mut ev);
        assert!(ev.is_empty(), "being seen alive needs no answer");
        m.merge(&[entry("n1", 1, 4, State::Dead, 0)], t0, &mut ev);
        assert!(ev.is_empty(), "rumours about a previous life are stale");
        m.merge(&[entry("n1", 1, 5, State::Suspect, 3000)], t0, &mut ev);
        assert_eq!(ev, [Event::Refuted { incarnation: 6 }]);
        assert_eq!(m.incarnation(), 6);

        // The suspecting peer, hearing the new incarnation, clears the
        // suspicion even though it still cannot hear n1 itself.
        let mut peer = Membership::new("n2", 2, timing());
        let mut ev = Vec::new();
        peer.heard("n1", 5, addr(1), t0, &mut ev);
        peer.tick(t0 + secs(4.0), &mut ev);
        assert_eq!(state(&peer, "n1"), Some(State::Suspect));
        let relayed = entry("n1", 1, m.incarnation(), State::Alive, 10);
        peer.merge(&[relayed], t0 + secs(4.0), &mut ev);
        assert_eq!(state(&peer, "n1"), Some(State::Alive));
        assert_eq!(peer.members()["n1"].incarnation, 6);
    }

    #[test]
    fn a_node_whose_previous_life_counted_higher_moves_past_it() {
        let mut m = Membership::new("n1", 100, timing());
        let mut ev = Vec::new();
        m.merge(
            &[entry("n1", 1, 250, State::Alive, 0)],
            Instant::now(),
            &mut ev,
        );
        assert_eq!(m.incarnation(), 251);
    }

    #[test]
    fn digests_do_not_resurrect_or_invent_dead_members() {
        let t0 = Instant::now() + secs(100.0);
        let mut m = Membership::new("n1", 1, timing());
        let mut ev = Vec::new();
        m.merge(&[entry("n9", 9, 9, State::Dead, 10_000)], t0, &mut ev);
        assert!(
            m.members().is_empty(),
            "an unknown dead member is not added"
        );
        m.merge(&[entry("n8", 8, 8, State::Suspect, 4_000)], t0, &mut ev);
        assert_eq!(state(&m, "n8"), Some(State::Suspect), "its age decides");
        m.merge(&[entry("n8", 8, 8, State::Alive, 9_000)], t0, &mut ev);
        assert_eq!(
            m.members()["n8"].heard,
            t0 - secs(4.0),
            "older news does not move evidence back"
        );
        m.merge(&[entry("bad id", 8, 8, State::Alive, 0)], t0, &mut ev);
        assert!(!m.members().contains_key("bad id"));
    }

    #[test]
    fn the_table_is_bounded() {
        let t0 = Instant::now();
        let mut m = Membership::new("n1", 1, timing());
        let mut ev = Vec::new();
        let entries: Vec<Entry> = (0..MAX_MEMBERS + 10)
            .map(|i| entry(&format!("m{i}"), 1, 1, State::Alive, 0))
            .collect();
        m.merge(&entries, t0, &mut ev);
        assert_eq!(m.members().len(), MAX_MEMBERS);
        m.heard("late", 1, addr(1), t0, &mut ev);
        assert!(!m.members().contains_key("late"));
    }

    #[test]
    fn this_node_is_never_its_own_member() {
        let mut m = Membership::new("n1", 1, timing());
        let mut ev = Vec::new();
        m.heard("n1", 1, addr(1), Instant::now(), &mut ev);
        assert!(m.members().is_empty() && ev.is_empty());
    }

    #[test]
    fn ages_round_up_and_saturate() {
        assert_eq!(age_ms(Duration::from_nanos(1)), 1);
        assert_eq!(age_ms(Duration::from_millis(5)), 5);
        assert_eq!(age_ms(Duration::from_secs(u64::MAX / 2)), u32::MAX);
    }

    #[test]
    fn timing_checks() {
        assert!(Timing::default().check().is_ok());
        let t = |h, s, d| Timing {
            heartbeat: Duration::from_millis(h),
            suspect_after: Duration::from_millis(s),
            dead_after: Duration::from_millis(d),
            forget_after: Duration::ZERO,
        };
        assert!(t(0, 10, 20).check().is_err());
        assert!(t(100, 150, 1000).check().is_err());
        assert!(t(100, 300, 300).check().is_err());
        assert!(t(100, 300, 301).check().is_ok());
    }

    #[test]
    fn node_ids() {
        assert!(valid_node_id("node-1.example"));
        assert!(!valid_node_id(""));
        assert!(!valid_node_id("a b"));
        assert!(!valid_node_id("é"));
        assert!(!valid_node_id(&"x".repeat(65)));
    }
}
