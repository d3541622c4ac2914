//! The validated sections of [`super::Config`] that are not provider
//! settings: logging, client limits, upstream calls, cache, Redis,
//! metrics and cluster.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::Secret;
use crate::balancer::Algorithm;

/// Log verbosity (`--log-level`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Only errors.
    Error,
    /// Errors and warnings.
    Warn,
    /// Access log lines and lifecycle events (default).
    Info,
    /// Diagnostics.
    Debug,
}

/// Log line format (`--log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// `key=value` pairs (default).
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging settings (`log:`).
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Verbosity, default `info`.
    pub level: LogLevel,
    /// Line format, default `text`.
    pub format: LogFormat,
    /// Log prompts and answers (off by default: they may be confidential).
    pub prompts: bool,
}

/// Limits on what a client may send (`limits:`).
#[derive(Clone, Debug)]
pub struct Limits {
    /// `--max-body-bytes`, default [`DEFAULT_MAX_BODY_BYTES`](super::DEFAULT_MAX_BODY_BYTES).
    pub max_body_bytes: usize,
    /// `--max-header-bytes`, default [`DEFAULT_MAX_HEADER_BYTES`](super::DEFAULT_MAX_HEADER_BYTES).
    pub max_header_bytes: usize,
    /// `limits.max_headers`, default [`DEFAULT_MAX_HEADERS`](super::DEFAULT_MAX_HEADERS).
    pub max_headers: usize,
    /// `--header-timeout`, default [`DEFAULT_HEADER_TIMEOUT`](super::DEFAULT_HEADER_TIMEOUT).
    pub header_timeout: Duration,
    /// `--body-timeout`, default [`DEFAULT_BODY_TIMEOUT`](super::DEFAULT_BODY_TIMEOUT).
    pub body_timeout: Duration,
    /// `--idle-timeout`, default [`DEFAULT_IDLE_TIMEOUT`](super::DEFAULT_IDLE_TIMEOUT).
    pub idle_timeout: Duration,
    /// `--send-timeout`, default [`DEFAULT_SEND_TIMEOUT`](super::DEFAULT_SEND_TIMEOUT).
    pub send_timeout: Duration,
    /// `--queue-timeout`, default [`DEFAULT_QUEUE_TIMEOUT`](super::DEFAULT_QUEUE_TIMEOUT).
    pub queue_timeout: Duration,
    /// `--max-connections`, default [`DEFAULT_MAX_CONNECTIONS`](super::DEFAULT_MAX_CONNECTIONS).
    pub max_connections: usize,
}

/// How upstream providers are called (`upstream:`).
#[derive(Clone, Debug)]
pub struct Upstream {
    /// `--upstream-connect-timeout`.
    pub connect_timeout: Duration,
    /// `--upstream-timeout`: time to the first byte of the response.
    pub timeout: Duration,
    /// `--upstream-idle-timeout`: longest gap between streamed chunks.
    pub idle_timeout: Duration,
    /// `--request-max-retries`.
    pub max_retries: u32,
    /// `--request-base-delay`.
    pub base_delay: Duration,
    /// `--stream-keepalive`: upstream silence after which a stream gets a
    /// keep-alive; zero turns them off.
    pub stream_keepalive: Duration,
}

/// Who shares a cached answer (`cache.scope`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheScope {
    /// One cache for every client key (default): the most hits, but a
    /// key holder can tell from `X-Cache: HIT` that someone asked the
    /// same question before.
    Shared,
    /// Answers are cached per client key: no key learns anything about
    /// another's requests, at the cost of hits across keys.
    PerKey,
}

/// Response cache settings (`cache:`).
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// `--cache-enabled`, default true.
    pub enabled: bool,
    /// `--cache-max-size`: memory tier capacity in MB.
    pub max_size_mb: u64,
    /// `--cache-ttl`: how long an answer stays valid.
    pub ttl: Duration,
    /// `--cache-scope`, default [`CacheScope::Shared`].
    pub scope: CacheScope,
}

/// Shared Redis cache tier (`redis:`); present only when `redis.addr` is set.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `--redis-addr`: `host:port` or a `redis://` URL.
    pub addr: String,
    /// `--redis-password`.
    pub password: Option<Secret>,
    /// `--redis-db`.
    pub db: u64,
}

/// Prometheus metrics settings (`metrics:`).
#[derive(Clone, Debug)]
pub struct MetricsConfig {
    /// `--metrics-enabled`, default true: `/metrics` and `/dashboard`.
    pub enabled: bool,
    /// `--metrics-port`: an extra listener serving only `/metrics`.
    pub port: Option<u16>,
}

/// The WebSocket API (`websocket:`).
#[derive(Clone, Debug)]
pub struct WebSocketConfig {
    /// `--websocket-enabled`, default true: `GET /ws` upgrades.
    pub enabled: bool,
    /// `--websocket-max-connections`: more get 503 before upgrading.
    pub max_connections: usize,
    /// `--websocket-max-message-size`: largest client message, in bytes.
    pub max_message_size: usize,
    /// `--websocket-max-frame-size`: largest client frame, in bytes.
    pub max_frame_size: usize,
    /// `--websocket-max-in-flight`: requests in flight per connection.
    pub max_in_flight: usize,
    /// `--websocket-max-queued-bytes`: outbound bytes waiting for a client
    /// before it is closed with 1008.
    pub max_queued_bytes: usize,
    /// `--websocket-heartbeat-interval`: the server's heartbeats.
    pub heartbeat_interval: Duration,
    /// `--websocket-idle-timeout`: silence before a close with 1001.
    pub idle_timeout: Duration,
}

/// Cluster membership (`cluster:`).
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// `--cluster-enabled`, default false.
    pub enabled: bool,
    /// `--node-id`, default the host name.
    pub node_id: String,
    /// `--node-address` as given (`host:port`, UDP on that port); `None`
    /// means the listen address.
    pub node_address: Option<String>,
    /// `--seed-nodes`: `host:port` of nodes to contact first.
    pub seed_nodes: Vec<String>,
    /// `--cluster-secret`: authenticates every datagram.
    pub secret: Option<Secret>,
    /// `cluster.heartbeat_interval`, `.suspect_after`, `.dead_after`,
    /// `.forget_after`.
    pub timing: crate::cluster::Timing,
}

impl ClusterConfig {
    /// The UDP address to bind when `--node-address` names no host to
    /// look up: the listen address (`listen`, the bound one when the port
    /// was 0), an IP address or `localhost`. `None` for a host name.
    pub fn literal_bind(&self, listen: SocketAddr) -> Option<SocketAddr> {
        let Some(text) = &self.node_address else {
            return Some(listen);
        };
        if let Ok(addr) = text.parse() {
            return Some(addr);
        }
        let (host, port) = text.rsplit_once(':')?;
        let port = port.parse().ok()?;
        host.eq_ignore_ascii_case("localhost")
            .then(|| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
    }

    /// The UDP address to bind: [`ClusterConfig::literal_bind`], else the
    /// first address the host name resolves to (as in a compose file,
    /// where `--node-address aiproxy1:3000` names the container itself).
    pub fn bind(&self, listen: SocketAddr) -> std::io::Result<SocketAddr> {
        if let Some(addr) = self.literal_bind(listen) {
            return Ok(addr);
        }
        let text = self.node_address.as_deref().unwrap_or_default();
        text.to_socket_addrs()?.next().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{text} resolves to no address"),
            )
        })
    }
}

/// Instance selection and health (`load_balancer:`).
#[derive(Clone, Debug)]
pub struct LoadBalancerConfig {
    /// `--load-balancer-enabled`, default true; off, the first healthy
    /// instance in pool order serves every request (failover still
    /// applies).
    pub enabled: bool,
    /// `--load-balancer-algorithm`, default `round_robin`.
    pub algorithm: Algorithm,
    /// `load_balancer.health_check_interval`: time between two rounds of
    /// active health checks.
    pub health_check_interval: Duration,
    /// `load_balancer.ejection_time`: length of a first passive ejection
    /// (doubling on repeats, capped at ten minutes or this, if longer).
    pub ejection_time: Duration,
}
