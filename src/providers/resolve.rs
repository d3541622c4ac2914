//! Upstream addresses: a literal address as it is, a host name resolved
//! at most once every few seconds.
//!
//! ureq resolves an upstream's host before it looks in its pool, so for
//! every request, including one that goes out on a kept-alive
//! connection. For a host name (every hosted provider) that was a
//! `getaddrinfo` per request — the hosts file read and, without a local
//! cache, a DNS query whose failure failed the request though a
//! connection was open; for a literal address it was formatting and
//! parsing it again, 2,500 instructions or 4% of a forwarded request.
//! A name's addresses are kept for [`FRESH`], Envoy's default DNS
//! refresh interval (nginx resolves a `proxy_pass` name only when it
//! starts); a failed lookup is not kept, so the next request tries again.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// How long a name's addresses are used before it is resolved again.
pub const FRESH: Duration = Duration::from_secs(5);
/// Names remembered at once (upstreams and sign-in endpoints are few; a
/// pools file with more names than this only resolves more often).
const NAMES: usize = 64;

/// A resolver whose clones share their remembered names; `R` looks the
/// names up (ureq's resolver, or a test's).
#[derive(Debug)]
pub struct CachingResolver<R = DefaultResolver> {
    inner: Arc<R>,
    names: Arc<Mutex<Vec<Name>>>,
}

impl Default for CachingResolver {
    fn default() -> Self {
        Self::over(DefaultResolver::default())
    }
}

impl<R> Clone for CachingResolver<R> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            names: Arc::clone(&self.names),
        }
    }
}

#[derive(Debug)]
struct Name {
    /// Scheme and authority, as the URI spells them.
    key: (String, String),
    resolved: Instant,
    addrs: ResolvedSocketAddrs,
}

impl<R: Resolver> Resolver for CachingResolver<R> {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            // Not a URL ureq can call: it says why.
            return self.inner.resolve(uri, config, timeout);
        };
        if let Some(addr) = literal(scheme, authority.as_str()) {
            let mut addrs = self.empty();
            addrs.push(addr);
            return Ok(addrs);
        }
        let now = Instant::now();
        if let Some(addrs) = self.remembered(scheme, authority.as_str(), now) {
            return Ok(addrs);
        }
        let addrs = self.inner.resolve(uri, config, timeout)?;
        self.remember(scheme, authority.as_str(), now, &addrs);
        Ok(addrs)
    }
}

impl<R> CachingResolver<R> {
    fn over(inner: R) -> Self {
        Self {
            inner: Arc::new(inner),
            names: Arc::default(),
        }
    }

    fn remembered(
        &self,
        scheme: &str,
        authority: &str,
        now: Instant,
    ) -> Option<ResolvedSocketAddrs> {
        let names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        names
            .iter()
            .find(|name| name.key.0 == scheme && name.key.1 == authority)
            .filter(|name| now.saturating_duration_since(name.resolved) < FRESH)
            .map(|name| name.addrs.clone())
    }

    fn remember(&self, scheme: &str, authority: &str, now: Instant, addrs: &ResolvedSocketAddrs) {
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        names.retain(|name| !(name.key.0 == scheme && name.key.1 == authority));
        if names.len() >= NAMES {
            // The oldest lookup goes.
            names.remove(0);
        }
        names.push(Name {
            key: (scheme.to_owned(), authority.to_owned()),
            resolved: now,
            addrs: addrs.clone(),
        });
    }
}

/// The socket address an authority spells literally (`127.0.0.1:8080`,
/// `[::1]`), the scheme giving the port it leaves out.
fn literal(scheme: &str, authority: &str) -> Option<SocketAddr> {
    if let Ok(addr) = authority.parse::<SocketAddr>() {
        return Some(addr);
    }
    let port = if scheme.eq_ignore_ascii_case("https") {
        443
    } else if scheme.eq_ignore_ascii_case("http") {
        80
    } else {
        return None;
    };
    let host = authority
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(authority);
    host.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// Answers every name with 192.0.2.1 (or fails, when told to) and
    /// counts the lookups.
    #[derive(Debug, Default)]
    struct Lookups {
        made: AtomicUsize,
        failing: AtomicBool,
    }

    impl Resolver for Lookups {
        fn resolve(
            &self,
            uri: &Uri,
            _: &Config,
            _: NextTimeout,
        ) -> Result<ResolvedSocketAddrs, ureq::Error> {
            self.made.fetch_add(1, Ordering::SeqCst);
            if self.failing.load(Ordering::SeqCst) {
                return Err(ureq::Error::HostNotFound);
            }
            let mut addrs = self.empty();
            let port = uri.port_u16().unwrap_or(80);
            addrs.push(SocketAddr::new([192, 0, 2, 1].into(), port));
            Ok(addrs)
        }
    }

    fn resolve<R: Resolver>(resolver: &R, url: &str) -> Result<Vec<SocketAddr>, ureq::Error> {
        let uri: Uri = url.parse().unwrap();
        let config = ureq::Agent::config_builder().build();
        let addrs = resolver.resolve(&uri, &config, NextTimeout::default())?;
        Ok(addrs.to_vec())
    }

    fn made(resolver: &CachingResolver<Lookups>) -> usize {
        resolver.inner.made.load(Ordering::SeqCst)
    }

    #[test]
    fn literal_addresses_are_used_as_they_are_written() {
        let resolver = CachingResolver::over(Lookups::default());
        let cases = [
            ("http://127.0.0.1:8080/v1", "127.0.0.1:8080"),
            ("http://127.0.0.1/v1", "127.0.0.1:80"),
            ("https://10.1.2.3/v1", "10.1.2.3:443"),
            ("http://[::1]:9000/", "[::1]:9000"),
            ("https://[::1]/", "[::1]:443"),
        ];
        for (url, addr) in cases {
            assert_eq!(
                resolve(&resolver, url).unwrap(),
                [addr.parse().unwrap()],
                "{url}"
            );
        }
        assert_eq!(made(&resolver), 0);
        assert!(resolver.names.lock().unwrap().is_empty());
    }

    #[test]
    fn a_name_is_looked_up_once_while_fresh_and_again_after() {
        let resolver = CachingResolver::over(Lookups::default());
        let addr = |port| vec![SocketAddr::new([192, 0, 2, 1].into(), port)];
        assert_eq!(
            resolve(&resolver, "http://llm.internal:8123/v1").unwrap(),
            addr(8123)
        );
        assert_eq!(
            resolve(&resolver, "http://llm.internal:8123/v1/chat").unwrap(),
            addr(8123)
        );
        // A clone (another shard's agent) shares what was looked up.
        assert_eq!(
            resolve(&resolver.clone(), "http://llm.internal:8123/").unwrap(),
            addr(8123)
        );
        assert_eq!(made(&resolver), 1);
        // Another port, or another scheme, is another name.
        assert_eq!(
            resolve(&resolver, "http://llm.internal:8124/").unwrap(),
            addr(8124)
        );
        resolve(&resolver, "https://llm.internal:8123/").unwrap();
        assert_eq!(made(&resolver), 3);
        // Once stale, it is looked up again.
        resolver.names.lock().unwrap()[0].resolved -= FRESH;
        resolve(&resolver, "http://llm.internal:8123/v1").unwrap();
        assert_eq!(made(&resolver), 4);
        assert_eq!(resolver.names.lock().unwrap().len(), 3);
    }

    #[test]
    fn a_failed_lookup_is_not_remembered() {
        let resolver = CachingResolver::over(Lookups::default());
        resolver.inner.failing.store(true, Ordering::SeqCst);
        assert!(resolve(&resolver, "http://llm.internal/v1").is_err());
        assert!(resolve(&resolver, "http://llm.internal/v1").is_err());
        assert_eq!(made(&resolver), 2);
        resolver.inner.failing.store(false, Ordering::SeqCst);
        assert!(resolve(&resolver, "http://llm.internal/v1").is_ok());
        assert!(resolve(&resolver, "http://llm.internal/v1").is_ok());
        assert_eq!(made(&resolver), 3);
    }

    #[test]
    fn at_most_so_many_names_are_remembered_the_oldest_going_first() {
        let resolver = CachingResolver::over(Lookups::default());
        for i in 0..NAMES + 3 {
            resolve(&resolver, &format!("http://host{i}:80/")).unwrap();
        }
        let names = resolver.names.lock().unwrap();
        assert_eq!(names.len(), NAMES);
        assert_eq!(names[0].key.1, "host3:80");
    }

    #[test]
    fn the_default_resolver_still_answers_for_names() {
        // localhost comes from the hosts file: no network needed.
        let addrs = resolve(&CachingResolver::default(), "http://localhost:8123/").unwrap();
        assert!(!addrs.is_empty());
        assert!(
            addrs
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 8123)
        );
    }
}
