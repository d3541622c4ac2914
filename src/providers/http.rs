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
use std::time::Duration;

use ureq::Agent;
use ureq::config::Config as UreqConfig;
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{Connector, DefaultConnector, TcpConnector};

use super::UpstreamError;
use super::read_wait::WaitConnector;
use crate::config::Config;

/// Most idle upstream connections kept (see `settings`).
const MAX_IDLE_CONNECTIONS: usize = 256;

/// The agents the providers of one configuration share: one for
/// `https://` upstreams and one for plain `http://` ones (a local model
/// server, a sidecar), built when first needed. The plain agent's
/// connector has no TLS layer: ureq's connector chain keeps every layer's
/// connection by value, and with TLS in the chain a connect takes some
/// 12 KiB more stack, which stays resident in every worker thread that
/// ever connected (48 KiB against 36 KiB a worker, measured).
pub struct Agents<'a> {
    config: &'a Config,
    plain: Option<Agent>,
    tls: Option<Agent>,
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

    /// The agent for upstreams under `base_url`.
    pub fn for_url(&mut self, base_url: &str) -> Agent {
        let plain = base_url
            .get(..7)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"));
        if plain {
            let config = self.config;
            self.plain
                .get_or_insert_with(|| {
                    let connector = TcpConnector::default().chain(WaitConnector);
                    Agent::with_parts(settings(config), connector, DefaultResolver::default())
                })
                .clone()
        } else {
            self.tls()
        }
    }

    /// The agent for any upstream, TLS included.
    pub fn tls(&mut self) -> Agent {
        let config = self.config;
        self.tls.get_or_insert_with(|| agent(config)).clone()
    }
}

/// An agent for any upstream, TLS included.
pub fn agent(config: &Config) -> Agent {
    let connector = DefaultConnector::default().chain(WaitConnector);
    Agent::with_parts(settings(config), connector, DefaultResolver::default())
}

/// The agent settings, from the configuration.
fn settings(config: &Config) -> UreqConfig {
    let up = &config.upstream;
    // ureq scans its whole idle pool under one lock whenever a connection
    // is taken or returned: with a pool as large as the worker pool, 10,000
    // requests in flight cost seconds of CPU as they ended. 256 idle
    // connections keep every worker of the default pool connected.
    let idle = config.workers.clamp(16, MAX_IDLE_CONNECTIONS);
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
