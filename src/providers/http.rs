//! The one blocking HTTP client shared by every provider.
//!
//! ureq's defaults suit a script, not a gateway: statuses become errors
//! (we relay them), redirects are followed (we relay them), the proxy is
//! taken from the environment, there are no timeouts and buffers are
//! 128 KiB per connection. Each is set here on purpose: buffers are
//! 10 KiB in and 8 KiB out (ureq grows the input buffer when an answer's
//! head needs more), since with thousands of requests in flight every
//! worker holds one upstream connection, and ureq fills both buffers with
//! zeros, so they are resident from the first request. 10 KiB is ureq's
//! scratch space for sending a body: an input buffer any smaller is grown
//! and zeroed again for every request (+6,000 instructions each).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ureq::Agent;
use ureq::config::Config as UreqConfig;
use ureq::unversioned::transport::{Connector, DefaultConnector};

use super::UpstreamError;
use super::plain_http::PlainClient;
use super::plain_tcp::PlainConnector;
use super::read_wait::WaitConnector;
use super::resolve::CachingResolver;
use crate::config::Config;

/// Most idle upstream connections kept (see `settings`).
const MAX_IDLE_CONNECTIONS: usize = 256;

/// The agents the providers of one configuration share: a set for
/// `https://` upstreams and one for plain `http://` ones (a local model
/// server, a sidecar), built when first needed. The plain agents'
/// connector has no TLS layer: ureq's connector chain keeps every layer's
/// connection by value, and with TLS in the chain a connect takes some
/// 12 KiB more stack, which stays resident in every worker thread that
/// ever connected (48 KiB against 36 KiB a worker, measured).
pub struct Agents<'a> {
    config: &'a Config,
    plain: Option<ShardedAgent>,
    tls: Option<ShardedAgent>,
}

impl<'a> Agents<'a> {
    /// No agent built yet.
    pub fn new(config: &'a Config) -> Self {
        Self {
            config,
            plain: None,
            tls: None,
        }
    }

    /// The agents for upstreams under `base_url`.
    pub fn for_url(&mut self, base_url: &str) -> ShardedAgent {
        let plain = base_url
            .get(..7)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"));
        if plain {
            let config = self.config;
            self.plain
                .get_or_insert_with(|| {
                    let resolver = CachingResolver::default();
                    let mut agents = ShardedAgent::build(|| {
                        let connector = PlainConnector.chain(WaitConnector);
                        Agent::with_parts(settings(config), connector, resolver.clone())
                    });
                    agents.plain = Some(Arc::new(PlainClient::new(
                        config,
                        resolver,
                        idle_per_shard(config),
                    )));
                    agents
                })
                .clone()
        } else {
            let config = self.config;
            self.tls
                .get_or_insert_with(|| {
                    let resolver = CachingResolver::default();
                    ShardedAgent::build(|| tls_agent(config, resolver.clone()))
                })
                .clone()
        }
    }

    /// An agent for any upstream, TLS included (providers that sign in
    /// with OAuth: few requests, each dominated by TLS).
    pub fn tls(&mut self) -> Agent {
        self.for_url("https://").pick().clone()
    }
}

/// Agents that split the upstream connections among the worker threads,
/// each thread always using the same one. ureq scans its whole idle pool
/// twice per request under one lock (to take a connection and to give it
/// back): with one agent and 64 connections idle that was ~7% of a
/// request's CPU, and the lock the most contended in the process.
#[derive(Clone)]
pub struct ShardedAgent {
    shards: Arc<[Agent]>,
    /// For plain `http://` upstreams, the client inference calls use.
    plain: Option<Arc<PlainClient>>,
}

/// The agents of a [`ShardedAgent`] (and the idle-connection shards of
/// a [`PlainClient`]).
pub(super) const SHARDS: usize = 8;

/// The calling thread's shard, modulo the number of shards.
pub(super) fn thread_shard() -> usize {
    thread_local! {
        static SHARD: usize = {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            NEXT.fetch_add(1, Ordering::Relaxed)
        };
    }
    SHARD.with(|s| *s)
}

impl ShardedAgent {
    fn build(mut agent: impl FnMut() -> Agent) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| agent()).collect(),
            plain: None,
        }
    }

    /// The agent of the calling thread.
    pub fn pick(&self) -> &Agent {
        &self.shards[thread_shard() % self.shards.len()]
    }

    /// The client for inference calls to a plain `http://` upstream; `None`
    /// for TLS upstreams and an embedder's own agent (which is used for
    /// every call).
    pub fn plain(&self) -> Option<&Arc<PlainClient>> {
        self.plain.as_ref()
    }
}

/// One agent for every thread (an embedder's own).
impl From<Agent> for ShardedAgent {
    fn from(agent: Agent) -> Self {
        Self {
            shards: Arc::new([agent]),
            plain: None,
        }
    }
}

/// An agent for any upstream, TLS included.
pub fn agent(config: &Config) -> Agent {
    tls_agent(config, CachingResolver::default())
}

fn tls_agent(config: &Config, resolver: CachingResolver) -> Agent {
    let connector = DefaultConnector::default().chain(WaitConnector);
    Agent::with_parts(settings(config), connector, resolver)
}

/// The agent settings, from the configuration.
fn settings(config: &Config) -> UreqConfig {
    let up = &config.upstream;
    let idle = idle_per_shard(config);
    Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .no_delay(true)
        .user_agent(concat!("aiproxy/", env!("CARGO_PKG_VERSION")))
        .accept_encoding("identity")
        .timeout_connect(Some(up.connect_timeout))
        .timeout_recv_response(Some(up.timeout))
        .timeout_per_read(Some(up.idle_timeout))
        .input_buffer_size(10 * 1024)
        .output_buffer_size(8 * 1024)
        .max_idle_connections(idle)
        .max_idle_connections_per_host(idle)
        .build()
}

/// Idle upstream connections kept per shard. ureq scans its whole idle
/// pool under one lock whenever a connection is taken or returned: with a
/// pool as large as the worker pool, 10,000 requests in flight cost
/// seconds of CPU as they ended. 256 idle connections (over all shards)
/// keep every worker of the default pool connected.
fn idle_per_shard(config: &Config) -> usize {
    (config.workers.clamp(16, MAX_IDLE_CONNECTIONS) / SHARDS).max(2)
}

/// Bounds `builder`'s whole exchange to `timeout`, when one is given (an
/// active health check), below the agent's own timeouts.
pub fn bounded<B>(
    builder: ureq::RequestBuilder<B>,
    timeout: Option<Duration>,
) -> ureq::RequestBuilder<B> {
    match timeout {
        Some(t) => builder.config().timeout_global(Some(t)).build(),
        None => builder,
    }
}

/// Maps a transport failure to what the client is told.
#[inline(never)]
pub fn map_error(err: ureq::Error) -> UpstreamError {
    match err {
        ureq::Error::Timeout(which) => {
            UpstreamError::Timeout(format!("upstream timed out ({which:?})"))
        }
        ureq::Error::HostNotFound => UpstreamError::Connect("upstream host not found".into()),
        ureq::Error::ConnectionFailed => {
            UpstreamError::Connect("could not connect to upstream".into())
        }
        ureq::Error::Io(e) if e.kind() == io::ErrorKind::TimedOut => {
            UpstreamError::Timeout("upstream timed out".into())
        }
        ureq::Error::Io(e) => {
            UpstreamError::Connect(format!("upstream connection failed: {}", e.kind()))
        }
        ureq::Error::BadUri(_) => UpstreamError::Config("invalid upstream URL".into()),
        other => UpstreamError::Connect(format!("upstream error: {other}")),
    }
}

/// The `Retry-After` header of an upstream answer.
pub fn retry_after<B>(resp: &ureq::http::Response<B>) -> Option<String> {
    resp.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Converts a ureq response into an [`super::UpstreamResponse`].
#[inline(never)]
pub fn into_upstream(resp: ureq::http::Response<ureq::Body>) -> super::UpstreamResponse {
    let status = resp.status().as_u16();
    let retry_after = retry_after(&resp);
    let (_, body) = resp.into_parts();
    super::UpstreamResponse {
        status,
        retry_after,
        content_length: body.content_length(),
        body: Box::new(body.into_reader()),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::atomic::AtomicUsize;
    use std::thread;

    use super::*;

    /// Answers `ok` to every request on every connection; counts the
    /// connections.
    fn counting_server() -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                count.fetch_add(1, Ordering::SeqCst);
                thread::spawn(move || {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while stream.read(&mut byte).is_ok_and(|n| n == 1) {
                        head.push(byte[0]);
                        if head.ends_with(b"\r\n\r\n") {
                            head.clear();
                            let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                            if stream.write_all(answer).is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (url, accepted)
    }

    #[test]
    fn a_thread_keeps_its_agent_and_its_upstream_connection() {
        let (url, accepted) = counting_server();
        let config = Config::default();
        let agents = Agents::new(&config).for_url(&url);
        let get = |agents: &ShardedAgent| {
            let mut resp = agents.pick().get(&url).call().unwrap();
            assert_eq!(resp.body_mut().read_to_string().unwrap(), "ok");
        };
        let mine = agents.pick() as *const Agent;
        for _ in 0..5 {
            get(&agents);
            assert_eq!(agents.pick() as *const Agent, mine);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        // Other threads spread over the shards, and each reuses the
        // connection it opened.
        let picked: Vec<usize> = (0..SHARDS * 2)
            .map(|_| {
                let agents = agents.clone();
                let get = &get;
                thread::scope(|s| {
                    s.spawn(|| {
                        get(&agents);
                        get(&agents);
                        agents.pick() as *const Agent as usize
                    })
                    .join()
                    .unwrap()
                })
            })
            .collect();
        let distinct = picked
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len();
        assert!(distinct > 1, "every thread got the same agent");
        assert!(accepted.load(Ordering::SeqCst) <= 1 + SHARDS * 2);
    }
}
