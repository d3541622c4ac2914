//! The heartbeat datagram: encoding, authenticated decoding and the
//! per-sender replay window. Pure: bytes in, values out.
//!
//! Layout (integers big-endian):
//!
//! ```text
//! "AIPC" version:u8=1 kind:u8=1 page:u8 pages:u8
//! incarnation:u64 sequence:u64 id_len:u8 node_id
//! items...
//! HMAC-SHA256(secret, every byte above):32
//!
//! item 1, member:      id_len:u8 id  family:u8(4|6) ip:4|16 port:u16
//!                      incarnation:u64 state:u8(0 alive|1 suspect|2 dead) age_ms:u32
//! item 2, setting:     name_len:u8 name value_len:u8 value clock:u64 id_len:u8 id
//! item 3, cache clear: clock:u64 id_len:u8 id
//! ```
//!
//! A datagram is at most [`MAX_DATAGRAM`] bytes, under a 1500-byte
//! Ethernet MTU with IP and UDP headers, so it is never fragmented. A
//! state too large for one is split by [`paginate`] into pages that each
//! stand alone: every item is merged on its own, so a lost page costs
//! only its items until the next round and nothing is reassembled.
//!
//! Decoding checks the magic and version, then the MAC over the whole
//! datagram, and only then parses, so a stranger's bytes never reach the
//! parser. Every length is checked against what is left and every string
//! against its limit, so decoding never panics and allocates at most a
//! few times the datagram's size. The encoding is canonical: a datagram
//! that decodes re-encodes to the same bytes.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;

use ring::hmac;

use super::membership::{self, State, valid_node_id};
use super::settings::{self, Stamp, valid_name, valid_value};

/// Largest datagram sent or accepted, in bytes.
pub const MAX_DATAGRAM: usize = 1400;
/// The format version this build writes and reads.
pub const VERSION: u8 = 1;

const MAGIC: [u8; 4] = *b"AIPC";
const KIND_HEARTBEAT: u8 = 1;
const TAG_LEN: usize = 32;
/// Magic, version, kind, page, pages, incarnation, sequence, id length.
const FIXED_HEADER: usize = 4 + 1 + 1 + 1 + 1 + 8 + 8 + 1;

const ITEM_MEMBER: u8 = 1;
const ITEM_SETTING: u8 = 2;
const ITEM_CLEAR: u8 = 3;

/// The shared secret, ready to sign and verify. Its `Debug` shows no
/// key material.
#[derive(Clone)]
pub struct Key(hmac::Key);

impl Key {
    /// The key for `secret` (any length; an empty secret only guards
    /// against corruption, not against strangers).
    pub fn new(secret: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(***)")
    }
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The MAC does not match: another secret, or tampered with.
    BadMac,
    /// A datagram this node has accepted already, or older than the
    /// sender's newest by more than the replay window.
    Replay,
    /// Not a heartbeat, too long, truncated or inconsistent.
    Malformed,
    /// A heartbeat of a format version this build does not read.
    UnknownVersion,
}

impl DropReason {
    /// Every reason, in a fixed order (for counters).
    pub const ALL: [DropReason; 4] = [
        DropReason::BadMac,
        DropReason::Replay,
        DropReason::Malformed,
        DropReason::UnknownVersion,
    ];

    /// `bad_mac`, `replay`, `malformed` or `unknown_version`.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::BadMac => "bad_mac",
            DropReason::Replay => "replay",
            DropReason::Malformed => "malformed",
            DropReason::UnknownVersion => "unknown_version",
        }
    }

    /// Position in [`DropReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Who sent a datagram, and which page of its state it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The sender's node id.
    pub node_id: String,
    /// The sender's incarnation.
    pub incarnation: u64,
    /// The sender's datagram counter (within an incarnation).
    pub sequence: u64,
    /// This page's index, below `pages`.
    pub page: u8,
    /// How many pages the sender's state took this round (at least 1).
    pub pages: u8,
}

/// One piece of a node's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// What the sender knows of a member.
    Member(membership::Entry),
    /// A setting the sender holds.
    Setting(settings::Entry),
    /// A cache clear the sender has applied.
    Clear(Stamp),
}

/// A decoded, authenticated heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Sender and page.
    pub header: Header,
    /// The page's items.
    pub items: Vec<Item>,
}

/// The encoded size of `item`.
pub fn item_len(item: &Item) -> usize {
    match item {
        Item::Member(m) => 1 + 1 + m.node_id.len() + addr_len(&m.addr) + 8 + 1 + 4,
        Item::Setting(s) => {
            1 + 1 + s.name.len() + 1 + s.value.len() + 8 + 1 + s.stamp.node_id.len()
        }
        Item::Clear(s) => 1 + 8 + 1 + s.node_id.len(),
    }
}

fn addr_len(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 1 + 4 + 2,
        SocketAddr::V6(_) => 1 + 16 + 2,
    }
}

/// Splits `items` into consecutive runs that each fit one datagram sent
/// by a node whose id is `id_len` bytes long. Always at least one page
/// (an empty one when there are no items); at most 255.
pub fn paginate(items: &[Item], id_len: usize) -> Vec<Range<usize>> {
    let room = MAX_DATAGRAM - FIXED_HEADER - id_len - TAG_LEN;
    let mut pages = Vec::new();
    let mut start = 0;
    let mut used = 0;
    for (i, item) in items.iter().enumerate() {
        let len = item_len(item);
        if used + len > room && i > start {
            pages.push(start..i);
            start = i;
            used = 0;
        }
        used += len;
    }
    pages.push(start..items.len());
    pages.truncate(usize::from(u8::MAX));
    pages
}

/// Encodes and signs one datagram. The header and items must hold valid
/// ids, names and values and fit [`MAX_DATAGRAM`] (as [`paginate`]
/// arranges); the node only ever holds such values.
pub fn encode(key: &Key, header: &Header, items: &[Item]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAX_DATAGRAM);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[VERSION, KIND_HEARTBEAT, header.page, header.pages]);
    out.extend_from_slice(&header.incarnation.to_be_bytes());
    out.extend_from_slice(&header.sequence.to_be_bytes());
    put_str(&mut out, &header.node_id);
    for item in items {
        match item {
            Item::Member(m) => {
                out.push(ITEM_MEMBER);
                put_str(&mut out, &m.node_id);
                put_addr(&mut out, &m.addr);
                out.extend_from_slice(&m.incarnation.to_be_bytes());
                out.push(match m.state {
                    State::Alive => 0,
                    State::Suspect => 1,
                    State::Dead => 2,
                });
                out.extend_from_slice(&m.age_ms.to_be_bytes());
            }
            Item::Setting(s) => {
                out.push(ITEM_SETTING);
                put_str(&mut out, &s.name);
                put_str(&mut out, &s.value);
                put_stamp(&mut out, &s.stamp);
            }
            Item::Clear(s) => {
                out.push(ITEM_CLEAR);
                put_stamp(&mut out, s);
            }
        }
    }
    let out = seal(key, out);
    debug_assert!(out.len() <= MAX_DATAGRAM, "{} bytes", out.len());
    out
}

/// Appends the MAC of `body` to it: what [`encode`] does last, and what
/// tests and the fuzzer use to get arbitrary bytes past the MAC check.
pub fn seal(key: &Key, mut body: Vec<u8>) -> Vec<u8> {
    let tag = hmac::sign(&key.0, &body);
    body.extend_from_slice(tag.as_ref());
    body
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    debug_assert!(s.len() <= usize::from(u8::MAX));
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

fn put_addr(out: &mut Vec<u8>, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

fn put_stamp(out: &mut Vec<u8>, s: &Stamp) {
    out.extend_from_slice(&s.clock.to_be_bytes());
    put_str(out, &s.node_id);
}

/// Decodes and authenticates one datagram.
pub fn decode(key: &Key, data: &[u8]) -> Result<Datagram, DropReason> {
    if data.len() > MAX_DATAGRAM || data.len() < MAGIC.len() + 1 || data[..4] != MAGIC {
        return Err(DropReason::Malformed);
    }
    if data[4] != VERSION {
        return Err(DropReason::UnknownVersion);
    }
    if data.len() < FIXED_HEADER + TAG_LEN {
        return Err(DropReason::Malformed);
    }
    let (signed, tag) = data.split_at(data.len() - TAG_LEN);
    hmac::verify(&key.0, signed, tag).map_err(|_| DropReason::BadMac)?;
    parse(signed).ok_or(DropReason::Malformed)
}

fn parse(data: &[u8]) -> Option<Datagram> {
    let mut r = Reader { data, at: 5 };
    if r.u8()? != KIND_HEARTBEAT {
        return None;
    }
    let page = r.u8()?;
    let pages = r.u8()?;
    if page >= pages {
        return None;
    }
    let incarnation = r.u64()?;
    let sequence = r.u64()?;
    let node_id = r.node_id()?;
    let header = Header {
        node_id,
        incarnation,
        sequence,
        page,
        pages,
    };
    let mut items = Vec::new();
    while r.at < data.len() {
        items.push(match r.u8()? {
            ITEM_MEMBER => Item::Member(membership::Entry {
                node_id: r.node_id()?,
                addr: r.addr()?,
                incarnation: r.u64()?,
                state: match r.u8()? {
                    0 => State::Alive,
                    1 => State::Suspect,
                    2 => State::Dead,
                    _ => return None,
                },
                age_ms: r.u32()?,
            }),
            ITEM_SETTING => {
                let name = r.str().filter(|n| valid_name(n))?;
                let value = r.str().filter(|v| valid_value(v))?;
                Item::Setting(settings::Entry {
                    name,
                    value,
                    stamp: r.stamp()?,
                })
            }
            ITEM_CLEAR => Item::Clear(r.stamp()?),
            _ => return None,
        });
    }
    Some(Datagram { header, items })
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let bytes = self.data.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(bytes)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.array()?))
    }

    fn str(&mut self) -> Option<String> {
        let len = self.u8()?;
        let bytes = self.take(usize::from(len))?;
        std::str::from_utf8(bytes).ok().map(str::to_owned)
    }

    fn node_id(&mut self) -> Option<String> {
        self.str().filter(|id| valid_node_id(id))
    }

    fn stamp(&mut self) -> Option<Stamp> {
        Some(Stamp {
            clock: self.u64()?,
            node_id: self.node_id()?,
        })
    }

    fn addr(&mut self) -> Option<SocketAddr> {
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            _ => return None,
        };
        let port = u16::from_be_bytes(self.array()?);
        Some(SocketAddr::new(ip, port))
    }
}

/// How far behind a sender's newest sequence number a datagram may be and
/// still be accepted once (UDP may reorder), as in IPsec's anti-replay
/// window (RFC 4303, section 3.4.3).
pub const REPLAY_WINDOW: u64 = 64;

/// Senders remembered by the replay check; well above any cluster size,
/// and independent of the member table, so forgetting a dead member does
/// not reopen its old datagrams to replay.
pub const REPLAY_SENDERS: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Window {
    incarnation: u64,
    top: u64,
    /// Bit `i` set: sequence `top - i` was accepted.
    seen: u64,
    last_used: u64,
}

/// Per-sender replay check: a sender's (incarnation, sequence) must move
/// forward; within the newest incarnation, a sequence up to
/// [`REPLAY_WINDOW`] behind the newest is accepted once.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    senders: HashMap<String, Window>,
    uses: u64,
}

impl ReplayGuard {
    /// An empty guard.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts `header` (already authenticated) and records it, or says
    /// it is a replay.
    pub fn admit(&mut self, header: &Header) -> Result<(), DropReason> {
        self.uses += 1;
        let fresh = Window {
            incarnation: header.incarnation,
            top: header.sequence,
            seen: 1,
            last_used: self.uses,
        };
        let Some(w) = self.senders.get_mut(&header.node_id) else {
            if self.senders.len() >= REPLAY_SENDERS {
                self.evict();
            }
            self.senders.insert(header.node_id.clone(), fresh);
            return Ok(());
        };
        let seq = header.sequence;
        if header.incarnation != w.incarnation {
            if header.incarnation < w.incarnation {
                return Err(DropReason::Replay);
            }
            *w = fresh;
            return Ok(());
        }
        if seq > w.top {
            let shift = seq - w.top;
            w.seen = if shift >= 64 { 0 } else { w.seen << shift } | 1;
            w.top = seq;
        } else {
            let behind = w.top - seq;
            if behind >= REPLAY_WINDOW || w.seen & (1 << behind) != 0 {
                return Err(DropReason::Replay);
            }
            w.seen |= 1 << behind;
        }
        w.last_used = self.uses;
        Ok(())
    }

    fn evict(&mut self) {
        let oldest = self
            .senders
            .iter()
            .min_by_key(|(_, w)| w.last_used)
            .map(|(id, _)| id.clone());
        if let Some(id) = oldest {
            self.senders.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(id: &str, incarnation: u64, sequence: u64) -> Header {
        Header {
            node_id: id.into(),
            incarnation,
            sequence,
            page: 0,
            pages: 1,
        }
    }

    fn sample_items() -> Vec<Item> {
        vec![
            Item::Setting(settings::Entry {
                name: "load_balancer.algorithm".into(),
                value: "least_requests".into(),
                stamp: Stamp {
                    clock: 1_795_705_660_123,
                    node_id: "node2".into(),
                },
            }),
            Item::Clear(Stamp {
                clock: 1_795_705_660_124,
                node_id: "node3".into(),
            }),
            Item::Member(membership::Entry {
                node_id: "node2".into(),
                addr: "192.168.1.11:3000".parse().unwrap(),
                incarnation: 42,
                state: State::Alive,
                age_ms: 250,
            }),
            Item::Member(membership::Entry {
                node_id: "node3".into(),
                addr: "[fe80::1]:3000".parse().unwrap(),
                incarnation: u64::MAX,
                state: State::Dead,
                age_ms: u32::MAX,
            }),
        ]
    }

    #[test]
    fn round_trip() {
        let key = Key::new(b"correct horse battery staple");
        let h = header("node1", 7, 99);
        let items = sample_items();
        let bytes = encode(&key, &h, &items);
        assert_eq!(
            bytes.len(),
            FIXED_HEADER + 5 + items.iter().map(item_len).sum::<usize>() + TAG_LEN
        );
        let d = decode(&key, &bytes).unwrap();
        assert_eq!(d.header, h);
        assert_eq!(d.items, items);
        assert_eq!(encode(&key, &d.header, &d.items), bytes, "canonical");
    }

    #[test]
    fn another_secret_or_any_flipped_bit_is_a_bad_mac() {
        let key = Key::new(b"secret one");
        let bytes = encode(&key, &header("n1", 1, 1), &sample_items());
        assert_eq!(
            decode(&Key::new(b"secret two"), &bytes),
            Err(DropReason::BadMac)
        );
        for bit in 5 * 8..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            let want = if bit / 8 == 4 {
                DropReason::UnknownVersion
            } else {
                DropReason::BadMac
            };
            assert_eq!(decode(&key, &b), Err(want), "bit {bit}");
        }
    }

    #[test]
    fn strangers_bytes_are_malformed_or_of_an_unknown_version() {
        let key = Key::new(b"k");
        assert_eq!(decode(&key, b""), Err(DropReason::Malformed));
        assert_eq!(
            decode(&key, b"GET / HTTP/1.1\r\n"),
            Err(DropReason::Malformed)
        );
        assert_eq!(
            decode(&key, b"AIPC\x02rest"),
            Err(DropReason::UnknownVersion)
        );
        assert_eq!(decode(&key, b"AIPC\x01"), Err(DropReason::Malformed));
        let mut big = encode(&key, &header("n1", 1, 1), &[]);
        big.resize(MAX_DATAGRAM + 1, 0);
        assert_eq!(decode(&key, &big), Err(DropReason::Malformed));
    }

    /// Signs `body` as a sender with the right secret but a broken
    /// encoder would: the MAC holds, the parse must still refuse it.
    fn signed(key: &Key, body: &[u8]) -> Vec<u8> {
        seal(key, body.to_vec())
    }

    #[test]
    fn authenticated_nonsense_is_malformed() {
        let key = Key::new(b"k");
        let good = encode(&key, &header("n1", 1, 1), &sample_items());
        let body = &good[..good.len() - TAG_LEN];
        assert!(decode(&key, &signed(&key, body)).is_ok());
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("unknown kind", [&body[..5], &[9], &body[6..]].concat()),
            (
                "page past pages",
                [&body[..6], &[1, 1], &body[8..]].concat(),
            ),
            ("zero pages", [&body[..6], &[0, 0], &body[8..]].concat()),
            ("empty id", [&body[..24], &[0]].concat()),
            ("truncated", body[..body.len() - 1].to_vec()),
            ("unknown item", [body, &[7]].concat()),
            ("id with a space", [&body[..24], &[3], b"a b"].concat()),
            ("id not utf-8", [&body[..24], &[2, 0xc3, 0x28]].concat()),
        ];
        for (what, body) in cases {
            assert_eq!(
                decode(&key, &signed(&key, &body)),
                Err(DropReason::Malformed),
                "{what}"
            );
        }
        // A member entry with state 3 and a bad address family.
        let member = |family: u8, state: u8| {
            let mut b = body[..FIXED_HEADER + 2].to_vec();
            b.extend_from_slice(&[ITEM_MEMBER, 1, b'x', family, 10, 0, 0, 1, 0, 80]);
            b.extend_from_slice(&[0; 8]);
            b.push(state);
            b.extend_from_slice(&[0; 4]);
            decode(&key, &signed(&key, &b))
        };
        assert!(member(4, 2).is_ok());
        assert_eq!(member(4, 3), Err(DropReason::Malformed));
        assert_eq!(member(5, 0), Err(DropReason::Malformed));
    }

    #[test]
    fn large_states_are_paged_into_datagrams_that_fit() {
        let key = Key::new(b"k");
        let id = "n".repeat(64);
        let items: Vec<Item> = (0..200)
            .map(|i| {
                Item::Member(membership::Entry {
                    node_id: format!("{i:0>64}"),
                    addr: "[2001:db8::1]:3000".parse().unwrap(),
                    incarnation: i,
                    state: State::Suspect,
                    age_ms: 1,
                })
            })
            .collect();
        let pages = paginate(&items, id.len());
        assert!(pages.len() > 1);
        assert_eq!(pages.first().unwrap().start, 0);
        assert_eq!(pages.last().unwrap().end, items.len());
        let mut back = Vec::new();
        for (i, range) in pages.iter().enumerate() {
            let h = Header {
                node_id: id.clone(),
                incarnation: 1,
                sequence: i as u64,
                page: i as u8,
                pages: pages.len() as u8,
            };
            let bytes = encode(&key, &h, &items[range.clone()]);
            assert!(bytes.len() <= MAX_DATAGRAM, "page {i}: {}", bytes.len());
            back.extend(decode(&key, &bytes).unwrap().items);
        }
        assert_eq!(back, items);
        let empty = paginate(&[], 5);
        assert_eq!(empty.len(), 1, "an empty state is one page");
        assert!(empty[0].is_empty());
    }

    #[test]
    fn the_sequence_must_move_forward() {
        let mut g = ReplayGuard::new();
        assert_eq!(g.admit(&header("a", 5, 10)), Ok(()));
        assert_eq!(g.admit(&header("a", 5, 10)), Err(DropReason::Replay));
        assert_eq!(g.admit(&header("a", 5, 12)), Ok(()));
        assert_eq!(
            g.admit(&header("a", 5, 11)),
            Ok(()),
            "reordered, first time"
        );
        assert_eq!(g.admit(&header("a", 5, 11)), Err(DropReason::Replay));
        assert_eq!(g.admit(&header("a", 5, 12)), Err(DropReason::Replay));
        assert_eq!(g.admit(&header("b", 5, 10)), Ok(()), "senders are apart");
        assert_eq!(g.admit(&header("a", 5, 12 + REPLAY_WINDOW)), Ok(()));
        assert_eq!(
            g.admit(&header("a", 5, 12)),
            Err(DropReason::Replay),
            "out of the window"
        );
        assert_eq!(
            g.admit(&header("a", 5, 13)),
            Ok(()),
            "just inside the window"
        );
        assert_eq!(g.admit(&header("a", 5, u64::MAX)), Ok(()));
        assert_eq!(g.admit(&header("a", 5, 0)), Err(DropReason::Replay));
    }

    #[test]
    fn a_new_incarnation_starts_over_and_an_old_one_is_a_replay() {
        let mut g = ReplayGuard::new();
        assert_eq!(g.admit(&header("a", 5, 1000)), Ok(()));
        assert_eq!(
            g.admit(&header("a", 6, 0)),
            Ok(()),
            "restarted: counts from 0"
        );
        assert_eq!(g.admit(&header("a", 6, 1)), Ok(()));
        assert_eq!(g.admit(&header("a", 5, 1001)), Err(DropReason::Replay));
    }

    #[test]
    fn the_replay_table_is_bounded_and_evicts_the_least_recent_sender() {
        let mut g = ReplayGuard::new();
        for i in 0..REPLAY_SENDERS {
            g.admit(&header(&format!("n{i}"), 1, 1)).unwrap();
        }
        g.admit(&header("n0", 1, 2)).unwrap();
        g.admit(&header("newcomer", 1, 1)).unwrap();
        assert_eq!(g.senders.len(), REPLAY_SENDERS);
        assert!(g.senders.contains_key("n0"), "recently used, kept");
        assert!(!g.senders.contains_key("n1"), "least recent, evicted");
    }
}
