//! The one blocking HTTP client shared by every provider.
//!
//! ureq's defaults suit a script, not a gateway: statuses become errors
//! (we relay them), redirects are followed (we relay them), the proxy is
//! taken from the environment, there are no timeouts and buffers are
//! 128 KiB per connection. Each is set here on purpose: buffers are
//! 16 KiB in and 8 KiB out (ureq grows the input buffer when an answer's
//! head needs more), since with thousands of requests in flight every
//! worker holds one upstream connection.

use std::io;
use std::time::Duration;

use ureq::Agent;
use ureq::config::Config as UreqConfig;
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{Connector, DefaultConnector};

use super::UpstreamError;
use super::read_wait::WaitConnector;
use crate::config::Config;

/// Builds the shared agent from the configuration.
pub fn agent(config: &Config) -> Agent {
    let up = &config.upstream;
    let ureq_config: UreqConfig = Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .no_delay(true)
        .user_agent(concat!("aiproxy/", env!("CARGO_PKG_VERSION")))
        .accept_encoding("identity")
        .timeout_connect(Some(up.connect_timeout))
        .timeout_recv_response(Some(up.timeout))
        .timeout_per_read(Some(up.idle_timeout))
        .input_buffer_size(16 * 1024)
        .output_buffer_size(8 * 1024)
        .max_idle_connections(config.workers.max(16))
        .max_idle_connections_per_host(config.workers.max(16))
        .build();
    let connector = DefaultConnector::default().chain(WaitConnector);
    Agent::with_parts(ureq_config, connector, DefaultResolver::default())
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
