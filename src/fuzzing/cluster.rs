//! `cluster_datagram`: the heartbeat decoder, the replay check and the
//! pure state machines a decoded heartbeat is merged into.

use std::time::{Duration, Instant};

use crate::cluster::codec::{
    self, DropReason, Item, Key, MAX_DATAGRAM, ReplayGuard, VERSION, decode, encode,
};
use crate::cluster::membership::{Membership, Timing};
use crate::cluster::settings::Settings;

/// The secret the seed corpus is signed with (fuzz/seed_corpus.py).
pub const FUZZ_SECRET: &[u8] = b"aiproxy fuzz cluster secret";

/// Input: one control byte (bit 0: the rest is a body to sign, so that
/// the fuzzer gets past the MAC into the parser; the other bits pick the
/// bit flipped below), then the datagram. A datagram that decodes is at
/// most one MTU, re-encodes to exactly its bytes, is refused with any one
/// bit flipped, is admitted once by the replay check, and merges into a
/// member table and a settings store without breaking their bounds.
pub fn cluster_datagram(data: &[u8]) {
    let [control, ref rest @ ..] = *data else {
        return;
    };
    let key = Key::new(FUZZ_SECRET);
    let datagram = if control & 1 == 1 {
        codec::seal(&key, rest.to_vec())
    } else {
        rest.to_vec()
    };
    let d = match decode(&key, &datagram) {
        Ok(d) => d,
        Err(DropReason::UnknownVersion) => {
            assert_ne!(datagram[4], VERSION);
            return;
        }
        Err(DropReason::Replay) => panic!("decoding alone never says replay"),
        Err(_) => return,
    };
    assert!(datagram.len() <= MAX_DATAGRAM);
    assert!(d.header.page < d.header.pages);
    assert_eq!(encode(&key, &d.header, &d.items), datagram, "not canonical");

    let bit = usize::from(control >> 1) * 131 % (datagram.len() * 8);
    let mut flipped = datagram.clone();
    flipped[bit / 8] ^= 1 << (bit % 8);
    assert!(
        decode(&key, &flipped).is_err(),
        "bit {bit} flipped and accepted"
    );

    let mut guard = ReplayGuard::new();
    assert_eq!(guard.admit(&d.header), Ok(()));
    assert_eq!(guard.admit(&d.header), Err(DropReason::Replay));

    // An `Instant` far enough from the clock's origin for any age.
    let now = Instant::now() + Duration::from_secs(u64::from(u32::MAX) / 1000 + 1);
    let mut members = Membership::new("fuzz-node", 1, Timing::default());
    let mut settings = Settings::new("fuzz-node");
    let mut events = Vec::new();
    let peer = "127.0.0.1:9".parse().expect("a socket address");
    members.heard(
        &d.header.node_id,
        d.header.incarnation,
        peer,
        now,
        &mut events,
    );
    let mut entries = Vec::new();
    for item in &d.items {
        match item {
            Item::Member(e) => entries.push(e.clone()),
            Item::Setting(e) => {
                if settings.merge_setting(e).is_some() {
                    assert_eq!(
                        settings.get(&e.name).map(|(v, _)| v),
                        Some(e.value.as_str())
                    );
                }
                assert!(settings.merge_setting(e).is_none(), "merged twice");
            }
            Item::Clear(s) => {
                settings.merge_clear(s);
                assert!(settings.merge_clear(s).is_none(), "applied twice");
            }
        }
    }
    members.merge(&entries, now, &mut events);
    members.tick(now, &mut events);
    let digest = members.digest(now);
    assert_eq!(digest.len(), members.members().len());
    assert!(digest.iter().all(|e| e.node_id != "fuzz-node"));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seeds fuzz/seed_corpus.py writes follow the codec's layout:
    /// the valid ones decode (so fuzzing starts inside the parser), the
    /// broken ones fail for the reason their name gives.
    #[test]
    fn the_seed_corpus_matches_the_codec() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/cluster_datagram");
        let key = Key::new(FUZZ_SECRET);
        let verdict = |name: &str| {
            let data = std::fs::read(dir.join(name)).expect("seed file");
            let body = data[1..].to_vec();
            let datagram = if data[0] & 1 == 1 {
                codec::seal(&key, body)
            } else {
                body
            };
            decode(&key, &datagram).map(|d| d.items.len())
        };
        assert_eq!(verdict("heartbeat_signed"), Ok(6));
        assert_eq!(verdict("heartbeat_body"), Ok(6));
        assert_eq!(verdict("heartbeat_empty_signed"), Ok(0));
        assert_eq!(verdict("heartbeat_full_page_body"), Ok(13));
        assert_eq!(verdict("heartbeat_wrong_secret"), Err(DropReason::BadMac));
        assert_eq!(
            verdict("heartbeat_version_2"),
            Err(DropReason::UnknownVersion)
        );
        for broken in [
            "heartbeat_bad_state_body",
            "heartbeat_bad_setting_body",
            "heartbeat_truncated_item_body",
            "not_a_heartbeat",
        ] {
            assert_eq!(verdict(broken), Err(DropReason::Malformed), "{broken}");
        }
    }
}
