//! Cluster-wide settings and cache-clear events: pure merge rules that
//! make every node converge on the same values however the heartbeats
//! carrying them are delayed, repeated or reordered.
//!
//! A setting (a short name with a short string value, such as
//! `load_balancer.algorithm = least_requests`) is a last-writer-wins
//! register. Every write is stamped with a Lamport clock and the writer's
//! node id; the larger stamp wins, the id breaking ties, so two nodes that
//! have seen the same writes hold the same value, whatever order they saw
//! them in. The clock is a hybrid one: a local write takes a stamp above
//! everything the node has seen *and* at least the wall clock in
//! milliseconds, so that after a partition heals the change made last in
//! real time wins (as long as the nodes' clocks agree better than the
//! changes are apart), and a node that restarted with an empty clock
//! still writes above the values it has not heard of yet.
//!
//! A cache clear is an event, not a value: each has a stamp as id and
//! every node applies each id once, however often it hears it. A node
//! keeps the newest few ids; an id older than all of them is never
//! applied, which loses nothing, because a newer clear has already
//! emptied that node's cache after the older one was made.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::membership::valid_node_id;

/// Longest setting name, in bytes.
pub const MAX_NAME_LEN: usize = 32;
/// Longest setting value, in bytes.
pub const MAX_VALUE_LEN: usize = 64;
/// Most distinct settings a node keeps.
pub const MAX_SETTINGS: usize = 16;
/// How many of the newest cache-clear ids a node keeps (and gossips).
pub const KEPT_CLEARS: usize = 8;

/// Whether `name` may name a setting: 1 to 32 bytes of `a-z`, `0-9`,
/// `_`, `.` and `-`.
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
}

/// Whether `value` may be a setting's value: at most 64 bytes of UTF-8
/// without control characters.
pub fn valid_value(value: &str) -> bool {
    value.len() <= MAX_VALUE_LEN && !value.chars().any(char::is_control)
}

/// The id of a write: a Lamport clock and the writing node. Ordered by
/// clock, then node id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    /// The clock.
    pub clock: u64,
    /// The node that made the write.
    pub node_id: String,
}

/// One setting as carried in a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: String,
    /// The write that set it.
    pub stamp: Stamp,
}

/// What a merge asks the gateway to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Setting `name` now has `value`.
    Set {
        /// The setting.
        name: String,
        /// Its new value.
        value: String,
    },
    /// Empty the response cache.
    ClearCache,
}

/// A setting name or value that cannot be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingError {
    /// The name is empty, too long or has characters other than
    /// `a-z0-9_.-`.
    Name(String),
    /// The value is too long or has control characters.
    Value(String),
    /// The node already holds as many settings as it may.
    TooMany,
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(n) => write!(
                f,
                "setting name {n:?} is not 1 to {MAX_NAME_LEN} characters of a-z, 0-9, _ . -"
            ),
            Self::Value(v) => write!(
                f,
                "setting value {v:?} is over {MAX_VALUE_LEN} bytes or has control characters"
            ),
            Self::TooMany => write!(f, "no more than {MAX_SETTINGS} cluster-wide settings"),
        }
    }
}

impl std::error::Error for SettingError {}

/// The settings and recent cache clears one node holds.
#[derive(Debug)]
pub struct Settings {
    me: String,
    clock: u64,
    values: BTreeMap<String, (String, Stamp)>,
    clears: BTreeSet<Stamp>,
}

impl Settings {
    /// The empty state of node `me`.
    pub fn new(me: &str) -> Self {
        Self {
            me: me.to_owned(),
            clock: 0,
            values: BTreeMap::new(),
            clears: BTreeSet::new(),
        }
    }

    /// The newest clock this node has seen or written: equal on nodes
    /// that have converged.
    pub fn version(&self) -> u64 {
        self.clock
    }

    /// Setting `name`: its value and the write that set it.
    pub fn get(&self, name: &str) -> Option<(&str, &Stamp)> {
        self.values.get(name).map(|(v, s)| (v.as_str(), s))
    }

    /// Every setting, by name.
    pub fn values(&self) -> impl Iterator<Item = (&str, &str, &Stamp)> {
        self.values
            .iter()
            .map(|(n, (v, s))| (n.as_str(), v.as_str(), s))
    }

    /// The cache-clear ids kept, oldest first.
    pub fn clears(&self) -> impl Iterator<Item = &Stamp> {
        self.clears.iter()
    }

    fn next_stamp(&mut self, wall_ms: u64) -> Stamp {
        self.clock = self.clock.saturating_add(1).max(wall_ms);
        Stamp {
            clock: self.clock,
            node_id: self.me.clone(),
        }
    }

    /// A local write of `name = value` at wall-clock time `wall_ms`
    /// (Unix milliseconds). The caller has applied it already.
    pub fn set(&mut self, name: &str, value: &str, wall_ms: u64) -> Result<Stamp, SettingError> {
        if !valid_name(name) {
            return Err(SettingError::Name(name.to_owned()));
        }
        if !valid_value(value) {
            return Err(SettingError::Value(value.to_owned()));
        }
        if !self.values.contains_key(name) && self.values.len() >= MAX_SETTINGS {
            return Err(SettingError::TooMany);
        }
        let stamp = self.next_stamp(wall_ms);
        self.values
            .insert(name.to_owned(), (value.to_owned(), stamp.clone()));
        Ok(stamp)
    }

    /// A local cache clear at `wall_ms`; the caller has cleared already.
    pub fn clear_cache(&mut self, wall_ms: u64) -> Stamp {
        let stamp = self.next_stamp(wall_ms);
        self.keep_clear(stamp.clone());
        stamp
    }

    /// Merges a setting another node holds; says what to apply if it is
    /// newer than ours.
    pub fn merge_setting(&mut self, e: &Entry) -> Option<Change> {
        if !valid_name(&e.name) || !valid_value(&e.value) || !valid_node_id(&e.stamp.node_id) {
            return None;
        }
        if let Some((_, held)) = self.values.get(&e.name) {
            if &e.stamp <= held {
                return None;
            }
        } else if self.values.len() >= MAX_SETTINGS {
            return None;
        }
        self.clock = self.clock.max(e.stamp.clock);
        self.values
            .insert(e.name.clone(), (e.value.clone(), e.stamp.clone()));
        Some(Change::Set {
            name: e.name.clone(),
            value: e.value.clone(),
        })
    }

    /// Merges a cache-clear id another node holds; says to clear if this
    /// node has not applied it yet.
    pub fn merge_clear(&mut self, stamp: &Stamp) -> Option<Change> {
        if !valid_node_id(&stamp.node_id) || self.clears.contains(stamp) {
            return None;
        }
        let full = self.clears.len() >= KEPT_CLEARS;
        if full && self.clears.first().is_some_and(|oldest| stamp < oldest) {
            return None;
        }
        self.clock = self.clock.max(stamp.clock);
        self.keep_clear(stamp.clone());
        Some(Change::ClearCache)
    }

    fn keep_clear(&mut self, stamp: Stamp) {
        self.clears.insert(stamp);
        while self.clears.len() > KEPT_CLEARS {
            self.clears.pop_first();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, value: &str, clock: u64, node: &str) -> Entry {
        Entry {
            name: name.into(),
            value: value.into(),
            stamp: Stamp {
                clock,
                node_id: node.into(),
            },
        }
    }

    fn sync(from: &Settings, to: &mut Settings) -> Vec<Change> {
        let mut changes = Vec::new();
        for (name, value, stamp) in from.values() {
            changes.extend(to.merge_setting(&Entry {
                name: name.into(),
                value: value.into(),
                stamp: stamp.clone(),
            }));
        }
        for stamp in from.clears() {
            changes.extend(to.merge_clear(stamp));
        }
        changes
    }

    fn value<'a>(s: &'a Settings, name: &str) -> Option<&'a str> {
        s.get(name).map(|(v, _)| v)
    }

    #[test]
    fn the_larger_stamp_wins_in_any_order() {
        let writes = [
            entry("algo", "round_robin", 5, "n1"),
            entry("algo", "least_requests", 7, "n2"),
            entry("algo", "random", 7, "n1"),
        ];
        for order in [[0, 1, 2], [2, 1, 0], [1, 0, 2], [1, 2, 0]] {
            let mut s = Settings::new("n3");
            for i in order {
                s.merge_setting(&writes[i]);
                s.merge_setting(&writes[i]);
            }
            assert_eq!(value(&s, "algo"), Some("least_requests"), "{order:?}");
            assert_eq!(s.version(), 7);
        }
    }

    #[test]
    fn a_merge_reports_only_what_changed() {
        let mut s = Settings::new("n1");
        let w = entry("cache.enabled", "false", 10, "n2");
        assert_eq!(
            s.merge_setting(&w),
            Some(Change::Set {
                name: "cache.enabled".into(),
                value: "false".into()
            })
        );
        assert_eq!(s.merge_setting(&w), None, "heard again");
        assert_eq!(
            s.merge_setting(&entry("cache.enabled", "true", 9, "n3")),
            None
        );
    }

    #[test]
    fn a_local_write_is_stamped_above_everything_seen_and_the_wall_clock() {
        let mut s = Settings::new("n1");
        assert_eq!(s.set("algo", "random", 1_000).unwrap().clock, 1_000);
        assert_eq!(
            s.set("algo", "random", 900).unwrap().clock,
            1_001,
            "clock ran back"
        );
        s.merge_setting(&entry("other", "x", 5_000, "n2"));
        let st = s.set("algo", "round_robin", 2_000).unwrap();
        assert_eq!(st.clock, 5_001);
        assert_eq!(st.node_id, "n1");
        assert_eq!(s.version(), 5_001);
    }

    #[test]
    fn a_restarted_node_writes_above_values_it_has_not_heard_of() {
        // n1 set the algorithm an hour ago; n2 restarts, and before the
        // first heartbeat reaches it, an admin changes the algorithm there.
        let mut n1 = Settings::new("n1");
        n1.set("algo", "random", 1_000_000).unwrap();
        let mut n2 = Settings::new("n2");
        n2.set("algo", "least_requests", 4_600_000).unwrap();
        sync(&n1, &mut n2);
        sync(&n2, &mut n1);
        assert_eq!(value(&n1, "algo"), Some("least_requests"));
        assert_eq!(value(&n2, "algo"), Some("least_requests"));
        assert_eq!(n1.version(), n2.version());
    }

    #[test]
    fn a_healed_partition_converges_on_the_newest_change() {
        let mut side_a = [Settings::new("n1"), Settings::new("n2")];
        let mut side_b = Settings::new("n3");
        // Before the cut, everyone agrees.
        side_a[0].set("algo", "round_robin", 100).unwrap();
        let [a0, a1] = &mut side_a;
        sync(a0, a1);
        sync(a0, &mut side_b);
        // During the cut, each side changes it; side A twice.
        side_a[1].set("algo", "random", 200).unwrap();
        side_a[0].set("algo", "weighted", 250).unwrap();
        side_b.set("algo", "least_requests", 300).unwrap();
        let [a0, a1] = &mut side_a;
        sync(a1, a0);
        sync(a0, a1);
        assert_eq!(value(a1, "algo"), Some("weighted"));
        // Healed: one exchange across the cut, then within each side.
        sync(&side_b, a0);
        sync(a0, &mut side_b);
        sync(a0, a1);
        for s in [&side_a[0], &side_a[1], &side_b] {
            assert_eq!(value(s, "algo"), Some("least_requests"));
            assert_eq!(s.version(), 300);
        }
    }

    #[test]
    fn a_late_joiner_gets_every_setting() {
        let mut n1 = Settings::new("n1");
        n1.set("algo", "random", 10).unwrap();
        n1.set("cache.enabled", "false", 11).unwrap();
        n1.clear_cache(12);
        let mut late = Settings::new("n4");
        let changes = sync(&n1, &mut late);
        assert_eq!(changes.len(), 3);
        assert!(changes.contains(&Change::ClearCache));
        assert_eq!(value(&late, "cache.enabled"), Some("false"));
        assert_eq!(late.version(), n1.version());
        assert!(sync(&n1, &mut late).is_empty(), "nothing twice");
    }

    #[test]
    fn each_cache_clear_is_applied_once() {
        let mut n1 = Settings::new("n1");
        let mut n2 = Settings::new("n2");
        let a = n1.clear_cache(100);
        let b = n2.clear_cache(100);
        assert_ne!(a, b, "same clock, different nodes: two events");
        let mut n3 = Settings::new("n3");
        let mut applied = 0;
        for _ in 0..5 {
            for s in [&a, &b, &a] {
                applied += usize::from(n3.merge_clear(s).is_some());
            }
        }
        assert_eq!(applied, 2);
    }

    #[test]
    fn only_the_newest_clears_are_kept_and_an_older_one_is_not_applied() {
        let mut s = Settings::new("n1");
        let stamp = |c| Stamp {
            clock: c,
            node_id: "n2".into(),
        };
        for c in 10..10 + KEPT_CLEARS as u64 + 3 {
            assert!(s.merge_clear(&stamp(c)).is_some());
        }
        assert_eq!(s.clears().count(), KEPT_CLEARS);
        // Pushed out, heard again: not applied a second time.
        assert_eq!(s.merge_clear(&stamp(10)), None);
        assert_eq!(s.merge_clear(&stamp(12)), None);
        assert!(s.merge_clear(&stamp(1000)).is_some());
    }

    #[test]
    fn bad_names_values_and_too_many_settings_are_refused() {
        let mut s = Settings::new("n1");
        assert!(matches!(s.set("", "x", 1), Err(SettingError::Name(_))));
        assert!(matches!(s.set("Algo", "x", 1), Err(SettingError::Name(_))));
        assert!(matches!(
            s.set("a", &"x".repeat(65), 1),
            Err(SettingError::Value(_))
        ));
        assert!(matches!(s.set("a", "x\n", 1), Err(SettingError::Value(_))));
        for i in 0..MAX_SETTINGS {
            s.set(&format!("s{i}"), "v", 1).unwrap();
        }
        assert_eq!(s.set("one.more", "v", 1), Err(SettingError::TooMany));
        assert!(
            s.set("s0", "changed", 1).is_ok(),
            "existing names still change"
        );
        assert_eq!(s.merge_setting(&entry("one.more", "v", 99, "n2")), None);
        assert_eq!(s.merge_setting(&entry("s1", "bad\u{7}", 99, "n2")), None);
        assert_eq!(s.merge_setting(&entry("s1", "v", 99, "bad id")), None);
    }
}
