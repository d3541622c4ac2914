//! The client address behind trusted proxies (`--trusted-proxies`), for
//! `ip_hash`: `X-Forwarded-For` is believed only as far as it was
//! written by proxies we trust.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An address block such as `10.0.0.0/8` or `::1/128`. A bare address is
/// a block of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts
    /// as the IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u128::from(u32::from(ip)), self.prefix, 32) == u128::from(u32::from(net))
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(ip), self.prefix, 128) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// `bits` of width `width` with only the top `prefix` kept.
fn masked(bits: u128, prefix: u8, width: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let host = u32::from(width - prefix);
    bits >> host << host
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let shown = || text.chars().take(64).collect::<String>();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network = addr
            .parse::<IpAddr>()
            .map_err(|_| format!("{:?} is not an IP address or CIDR block", shown()))?
            .to_canonical();
        let width = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(|| format!("{:?}: the prefix length must be 0 to {width}", shown()))?,
        };
        let bits = match network {
            IpAddr::V4(v4) => u128::from(u32::from(v4)),
            IpAddr::V6(v6) => u128::from(v6),
        };
        if masked(bits, prefix, width) != bits {
            return Err(format!(
                "{:?} has bits set after its /{prefix} prefix (write the block's first address)",
                shown()
            ));
        }
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// Parses a list of blocks separated by commas or spaces; the error
    /// names the first bad entry.
    pub fn parse(list: &str) -> Result<Self, String> {
        list.split([',', ' ', '\t'])
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect::<Result<Vec<Cidr>, String>>()
            .map(TrustedProxies)
    }

    /// Parses one block per item.
    pub fn from_items<S: AsRef<str>>(items: &[S]) -> Result<Self, String> {
        items
            .iter()
            .map(|s| s.as_ref().parse())
            .collect::<Result<Vec<Cidr>, String>>()
            .map(TrustedProxies)
    }

    /// Whether no proxy is trusted (then `X-Forwarded-For` is ignored).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The blocks.
    pub fn blocks(&self) -> &[Cidr] {
        &self.0
    }
}

/// The client's address. `peer` is the connection's remote address and
/// `forwarded_for` the request's `X-Forwarded-For` header lines in order.
/// Each proxy appends the address it received the request from, so the
/// list is read from the right: while the hop that wrote an entry is
/// trusted, the entry is believed; the first address that is not a
/// trusted proxy is the client. Anything unreadable stops the walk at the
/// last address believed, so a forged entry can never be chosen over a
/// proxy-written one. An untrusted peer's header is ignored.
pub fn client_addr(peer: IpAddr, forwarded_for: &[&str], trusted: &TrustedProxies) -> IpAddr {
    let mut client = peer.to_canonical();
    if !trusted.contains(client) {
        return client;
    }
    let entries = forwarded_for
        .iter()
        .rev()
        .flat_map(|line| line.rsplit(','))
        .map(str::trim);
    for entry in entries {
        let Some(ip) = parse_entry(entry) else {
            break;
        };
        client = ip;
        if !trusted.contains(ip) {
            break;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, possibly with a port
/// (`1.2.3.4:5678`, `[2001:db8::1]:443`), as some proxies write.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    let host = match entry.strip_prefix('[') {
        Some(rest) => rest.split_once(']')?.0,
        None => entry.split_once(':')?.0,
    };
    host.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_parse_and_match() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("10.255.1.2")) && !c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped IPv6");
        let one: Cidr = "192.168.1.7".parse().unwrap();
        assert_eq!(one.to_string(), "192.168.1.7/32");
        assert!(one.contains(ip("192.168.1.7")) && !one.contains(ip("192.168.1.8")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fdab::1")) && !v6.contains(ip("fe80::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")) && !all.contains(ip("::1")));
        let lo: Cidr = "::1".parse().unwrap();
        assert!(lo.contains(ip("::1")));
    }

    #[test]
    fn bad_blocks_are_named() {
        for (text, needle) in [
            ("10.0.0.1/8", "bits set after its /8"),
            ("10.0.0.0/33", "0 to 32"),
            ("::/129", "0 to 128"),
            ("10.0.0.0/x", "0 to 32"),
            ("localhost", "not an IP address"),
            ("", "not an IP address"),
            ("10.0.0.0/-1", "0 to 32"),
        ] {
            let err = text.parse::<Cidr>().unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
        let err = TrustedProxies::parse("10.0.0.0/8, nope").unwrap_err();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn lists_parse_with_commas_or_spaces() {
        let t = TrustedProxies::parse(" 10.0.0.0/8,127.0.0.1  ::1 ").unwrap();
        assert_eq!(t.blocks().len(), 3);
        assert!(t.contains(ip("127.0.0.1")) && t.contains(ip("::1")));
        assert!(TrustedProxies::parse("").unwrap().is_empty());
        let items = TrustedProxies::from_items(&["10.0.0.0/8", "::1"]).unwrap();
        assert_eq!(items.blocks().len(), 2);
        assert!(TrustedProxies::from_items(&["10.0.0.0/8", "x"]).is_err());
    }

    #[test]
    fn untrusted_peers_are_the_client_whatever_they_claim() {
        let t = TrustedProxies::parse("10.0.0.0/8").unwrap();
        assert_eq!(
            client_addr(ip("203.0.113.9"), &["1.1.1.1"], &t),
            ip("203.0.113.9")
        );
        let none = TrustedProxies::default();
        assert_eq!(
            client_addr(ip("10.0.0.1"), &["1.1.1.1"], &none),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn the_rightmost_untrusted_address_is_the_client() {
        let t = TrustedProxies::parse("10.0.0.0/8, 127.0.0.1").unwrap();
        let peer = ip("127.0.0.1");
        // The client forged the first entry; the proxies appended the rest.
        assert_eq!(
            client_addr(peer, &["6.6.6.6, 198.51.100.4, 10.0.0.2"], &t),
            ip("198.51.100.4")
        );
        // Several header lines are one list.
        assert_eq!(
            client_addr(peer, &["6.6.6.6", "198.51.100.4", "10.0.0.2"], &t),
            ip("198.51.100.4")
        );
        // Every entry trusted: the leftmost is as far as we can see.
        assert_eq!(
            client_addr(peer, &["10.1.1.1, 10.0.0.2"], &t),
            ip("10.1.1.1")
        );
        // No header: the peer itself.
        assert_eq!(client_addr(peer, &[], &t), peer);
        // Ports and brackets are tolerated; mapped addresses canonical.
        assert_eq!(
            client_addr(peer, &["[2001:db8::1]:443, 10.0.0.2:80"], &t),
            ip("2001:db8::1")
        );
        assert_eq!(
            client_addr(peer, &["198.51.100.4:5555"], &t),
            ip("198.51.100.4")
        );
        assert_eq!(
            client_addr(ip("::ffff:127.0.0.1"), &["::ffff:198.51.100.4"], &t),
            ip("198.51.100.4")
        );
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_believed_address() {
        let t = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let peer = ip("10.0.0.1");
        assert_eq!(
            client_addr(peer, &["1.2.3.4, unknown, 10.0.0.2"], &t),
            ip("10.0.0.2")
        );
        assert_eq!(
            client_addr(peer, &["1.2.3.4,,10.0.0.2"], &t),
            ip("10.0.0.2")
        );
        assert_eq!(client_addr(peer, &["nonsense"], &t), peer);
        assert_eq!(client_addr(peer, &["[::1"], &t), peer);
        assert_eq!(client_addr(peer, &[&"9".repeat(10_000)], &t), peer);
    }
}
