//! aiproxy: a synchronous AI API gateway.
//!
//! Clients speak the OpenAI (chat completions or Responses), Anthropic or
//! Gemini protocol; aiproxy authenticates them, picks a provider
//! instance, converts the request, forwards it with a blocking HTTP
//! client and converts the answer back, whole or streamed. A fixed pool
//! of worker threads serves all requests; there is no async runtime.
//!
//! # Embedding
//!
//! [`start`] runs the gateway on background threads and returns a
//! [`Handle`]; [`run`] does the same and blocks until SIGTERM/SIGINT. A
//! [`Config`] is built in code (no file or environment is read unless you
//! ask [`Config::load`] to):
//!
//! ```
//! use std::io::{Read, Write};
//!
//! let mut config = aiproxy::Config::default(); // the built-in mock provider
//! config.listen = "127.0.0.1:0".parse().unwrap();
//! let handle = aiproxy::start(config).unwrap();
//!
//! let body = r#"{"model":"mock-small","messages":[{"role":"user","content":"hi"}]}"#;
//! let mut stream = std::net::TcpStream::connect(handle.addr()).unwrap();
//! write!(
//!     stream,
//!     "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n\
//!      Content-Type: application/json\r\nContent-Length: {}\r\n\
//!      Connection: close\r\n\r\n{body}",
//!     body.len()
//! )
//! .unwrap();
//! let mut answer = String::new();
//! stream.read_to_string(&mut answer).unwrap();
//! assert!(answer.starts_with("HTTP/1.1 200 OK"));
//!
//! // The same pipeline without HTTP, and the admin API's switches.
//! let call = aiproxy::gateway::Call::new(aiproxy::protocol::Protocol::OpenAi, body.as_bytes());
//! # struct Ignore;
//! # impl aiproxy::gateway::Sink for Ignore {
//! #     fn whole(&mut self, a: aiproxy::gateway::Answer<'_>) { assert_eq!(a.status, 200) }
//! #     fn open(&mut self, _: &str) -> bool { true }
//! #     fn send(&mut self, _: &[u8]) -> bool { true }
//! #     fn close(&mut self) {}
//! # }
//! handle.call(&call, &mut Ignore);
//! handle.control().set_cache_enabled(false);
//! assert!(handle.shutdown());
//! ```
//!
//! # A provider of your own
//!
//! [`start_with`] takes [`Extensions`] as well: [`Extensions::provider`]
//! puts your implementation of [`providers::Provider`] behind a provider
//! kind. It receives requests in that kind's protocol family (OpenAI
//! chat completions for `openai-custom`) from clients of every protocol:
//!
//! ```
//! use std::io::{Read, Write};
//! use std::time::Duration;
//!
//! use aiproxy::protocol::ModelInfo;
//! use aiproxy::providers::{
//!     Probe, Provider, ProviderKind, UpstreamError, UpstreamRequest, UpstreamResponse,
//! };
//!
//! /// Answers every chat completion with the size of the request.
//! struct Counter;
//!
//! impl Provider for Counter {
//!     fn call(&self, req: &UpstreamRequest<'_>) -> Result<UpstreamResponse, UpstreamError> {
//!         if req.stream {
//!             return Err(UpstreamError::Config("Counter does not stream".into()));
//!         }
//!         let answer = format!(
//!             r#"{{"id":"c1","object":"chat.completion","created":0,"model":"{}",
//!                "choices":[{{"index":0,"finish_reason":"stop",
//!                  "message":{{"role":"assistant","content":"{} bytes"}}}}],
//!                "usage":{{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}}}"#,
//!             req.model,
//!             req.body.len()
//!         );
//!         Ok(UpstreamResponse::whole(200, answer.into_bytes()))
//!     }
//!
//!     fn models(&self) -> Result<Vec<ModelInfo>, UpstreamError> {
//!         Ok(ModelInfo::list(["counter-1"], "me"))
//!     }
//!
//!     fn probe(&self, _timeout: Duration) -> Probe {
//!         Probe::Answered(200)
//!     }
//! }
//!
//! let mut config = aiproxy::Config::default();
//! config.listen = "127.0.0.1:0".parse().unwrap();
//! config.model_providers = vec![ProviderKind::OpenAiCustom];
//! let extensions = aiproxy::Extensions::new()
//!     .provider(ProviderKind::OpenAiCustom, |_instance| Ok(Box::new(Counter)));
//! let handle = aiproxy::start_with(config, extensions).unwrap();
//!
//! // An Anthropic client; Counter sees an OpenAI request.
//! let body = r#"{"model":"counter-1","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}"#;
//! let mut stream = std::net::TcpStream::connect(handle.addr()).unwrap();
//! write!(
//!     stream,
//!     "POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nanthropic-version: 2023-06-01\r\n\
//!      Content-Type: application/json\r\nContent-Length: {}\r\n\
//!      Connection: close\r\n\r\n{body}",
//!     body.len()
//! )
//! .unwrap();
//! let mut answer = String::new();
//! stream.read_to_string(&mut answer).unwrap();
//! assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
//! assert!(answer.contains(r#""type":"message""#) && answer.contains(" bytes"), "{answer}");
//! assert!(handle.shutdown());
//! ```
//!
//! `examples/embed.rs` is a complete program: a streaming provider
//! behind `openai-custom`, run until SIGTERM, reloaded on SIGHUP.
//!
//! # Stability
//!
//! The stable surface is [`start`], [`start_with`], [`run`],
//! [`run_with`], [`Handle`], [`Config`] and its sections, [`Extensions`],
//! [`gateway::Call`], [`gateway::Sink`], [`gateway::Answer`],
//! [`gateway::Control`] and the [`providers::Provider`] trait with the
//! types it names. Everything else is public so that the binary, the
//! tests and the fuzz targets can reach it, and may change between minor
//! versions; `fuzzing` is hidden.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod balancer;
pub mod cache;
pub mod cli;
pub mod cluster;
pub mod config;
mod decimal;
pub mod error;
pub mod extensions;
pub mod features;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
mod hex;
pub mod log;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(not(feature = "metrics"))]
#[path = "metrics/absent.rs"]
pub mod metrics;
mod net;
pub mod pools;
pub mod protocol;
pub mod provider_kind;
pub mod providers;
pub mod routing;
pub mod server;
pub mod time;
#[cfg(feature = "websocket")]
pub mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use config::Config;
pub use error::Error;
pub use extensions::Extensions;

/// Stack of a worker thread: enough for serde_json's 128-level recursion
/// limit and TLS, small enough that thousands of workers stay cheap (only
/// touched pages count towards RSS).
const WORKER_STACK_BYTES: usize = 512 * 1024;

/// A running gateway.
pub struct Handle {
    server: server::Server,
    metrics_server: Option<server::Server>,
    gateway: Arc<gateway::Gateway>,
    /// Stops the active health checks when dropped.
    health_checks: gateway::HealthChecks,
    shutdown_timeout: Duration,
}

impl Handle {
    /// The address the gateway listens on (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Requests being served right now.
    pub fn in_flight(&self) -> usize {
        self.server.in_flight()
    }

    /// Changes the running gateway as the admin endpoints do (cache on or
    /// off, cache clear, the load-balancing algorithm), in a cluster on
    /// every node; such changes survive a reload as the README's
    /// Operations section says.
    pub fn control(&self) -> gateway::Control {
        gateway::Control::new(Arc::clone(&self.gateway))
    }

    /// Runs one inference call without HTTP (see [`gateway::Gateway::call`]):
    /// the answer, whole or streamed, goes to `sink`.
    pub fn call(&self, call: &gateway::Call<'_>, sink: &mut dyn gateway::Sink) {
        self.gateway.call(call, sink);
    }

    /// Re-reads the configuration with `load` and applies it; on failure
    /// the running configuration stays, logging included, and the error
    /// is logged. A configuration that would leave the running listener
    /// (which a reload does not move) without authentication is refused.
    pub fn reload(&self, load: &mut impl FnMut() -> Result<Config, Error>) {
        let fresh = match load() {
            Ok(config) => config,
            Err(e) => {
                log::error(&format!(
                    "reload failed, keeping the running configuration: {e}"
                ));
                return;
            }
        };
        let listening = self.addr();
        if fresh.leaves_listener_open(listening) {
            log::error(&format!(
                "reload refused, keeping the running configuration: the listener on \
                 {listening} is not loopback and the new configuration sets no api_key \
                 (nor insecure_no_auth); a reload never moves the listener"
            ));
            return;
        }
        let running = self.gateway.config();
        if fresh.listen != running.listen || fresh.workers != running.workers {
            log::warn("reload: the listen address and --workers change only after a restart");
        }
        if cluster_changed(&fresh.cluster, &running.cluster) {
            log::warn("reload: the cluster.* settings change only after a restart");
        }
        let (level, format) = (fresh.log.level, fresh.log.format);
        match self.gateway.reload(Arc::new(fresh)) {
            Ok(()) => {
                log::configure(level, format);
                log::info("configuration reloaded");
            }
            Err(e) => log::error(&format!(
                "reload failed, keeping the running configuration: {e}"
            )),
        }
    }

    /// Stops accepting, lets in-flight requests finish (bounded by
    /// `--shutdown-timeout`) and stops. Returns true if all requests
    /// finished in time.
    pub fn shutdown(self) -> bool {
        // Leave the cluster first: the other nodes stop counting on this
        // one while it drains.
        self.gateway.stop_cluster();
        drop(self.health_checks);
        self.gateway.set_draining();
        if let Some(metrics) = self.metrics_server {
            metrics.shutdown(std::time::Duration::from_secs(1));
        }
        self.server.shutdown(self.shutdown_timeout)
    }
}

fn cluster_changed(a: &config::ClusterConfig, b: &config::ClusterConfig) -> bool {
    let secret = |c: &config::ClusterConfig| c.secret.as_ref().map(|s| s.expose().to_owned());
    (
        a.enabled,
        &a.node_id,
        &a.node_address,
        &a.seed_nodes,
        a.timing,
    ) != (
        b.enabled,
        &b.node_id,
        &b.node_address,
        &b.seed_nodes,
        b.timing,
    ) || secret(a) != secret(b)
}

/// Checks what [`start`] checks short of binding the listeners: builds the
/// providers (reading their credential files) and the cache. Returns the
/// warnings start would log. `Config::load` already applied the rules
/// across keys, such as a key for a non-loopback listener.
pub fn check(config: &Config) -> Result<Vec<String>, Error> {
    providers::Registry::from_config(config)?;
    let (_, warning) = cache::Cache::with_warning(cache::Settings::from_config(config));
    Ok(warning.into_iter().collect())
}

/// Starts the gateway on background threads with the built-in providers.
///
/// # Errors
///
/// A provider that cannot be built (an unreadable credential file), a
/// listener that cannot be bound, or cluster settings that cannot be
/// used.
pub fn start(config: Config) -> Result<Handle, Error> {
    start_with(config, Extensions::new())
}

/// Starts the gateway on background threads, with the providers of
/// `extensions` in place of the built-in ones of their kinds.
///
/// # Errors
///
/// As [`start`], and whatever error a provider factory returns.
pub fn start_with(config: Config, extensions: Extensions) -> Result<Handle, Error> {
    log::configure(config.log.level, config.log.format);
    let config = Arc::new(config);
    let gateway = gateway::Gateway::with_extensions(Arc::clone(&config), extensions)?;
    let listener =
        server::bind(config.listen).map_err(|source| Error::Io { op: "bind", source })?;
    if config.cluster.enabled {
        let listening = listener
            .local_addr()
            .map_err(|source| Error::Io { op: "bind", source })?;
        gateway.attach_cluster(start_cluster(&config, listening, &gateway)?);
    }
    let settings = server::Settings {
        workers: config.workers,
        queue_capacity: config.workers,
        queue_timeout: config.limits.queue_timeout,
        max_body_bytes: config.limits.max_body_bytes,
        max_header_bytes: config.limits.max_header_bytes,
        max_headers: config.limits.max_headers,
        header_timeout: config.limits.header_timeout,
        body_timeout: config.limits.body_timeout,
        idle_timeout: config.limits.idle_timeout,
        send_timeout: config.limits.send_timeout,
        max_connections: connection_bound(&config),
        worker_stack_bytes: WORKER_STACK_BYTES,
    };
    let metrics_server = match config.metrics.port.filter(|_| config.metrics.enabled) {
        Some(port) => {
            let addr = SocketAddr::new(config.listen.ip(), port);
            let listener = server::bind(addr).map_err(|source| Error::Io {
                op: "bind --metrics-port",
                source,
            })?;
            let scrape = server::Settings {
                workers: 2,
                queue_capacity: 16,
                ..settings.clone()
            };
            let handler: Arc<dyn server::Handler> =
                Arc::new(gateway::MetricsOnly(Arc::clone(&gateway)));
            let started =
                server::Server::start(listener, scrape, handler).map_err(|source| Error::Io {
                    op: "start metrics listener",
                    source,
                })?;
            Some(started)
        }
        None => None,
    };
    let health_checks =
        gateway::HealthChecks::start(Arc::clone(&gateway)).map_err(|source| Error::Io {
            op: "start health checks",
            source,
        })?;
    let handler: Arc<dyn server::Handler> = gateway.clone();
    let server =
        server::Server::start(listener, settings, handler).map_err(|source| Error::Io {
            op: "start server",
            source,
        })?;
    Ok(Handle {
        server,
        metrics_server,
        gateway,
        health_checks,
        shutdown_timeout: config.shutdown_timeout,
    })
}

/// Starts this process's cluster node: UDP on the port of
/// `--node-address`, by default the listen address (`listening`, the bound
/// one, so that `--port 0` gives UDP and TCP the same number).
fn start_cluster(
    config: &Config,
    listening: SocketAddr,
    gateway: &Arc<gateway::Gateway>,
) -> Result<cluster::Node, Error> {
    let c = &config.cluster;
    let bind = c.bind(listening).map_err(|e| {
        Error::Config(format!(
            "cluster.node_address {}: {e}",
            c.node_address.as_deref().unwrap_or_default()
        ))
    })?;
    let secret = c.secret.as_ref().map(|s| s.expose().as_bytes());
    cluster::check_secure(bind, secret).map_err(|e| Error::Config(e.to_string()))?;
    let options = cluster::Options {
        node_id: c.node_id.clone(),
        bind,
        address: c.node_address.clone().unwrap_or_else(|| bind.to_string()),
        seeds: c.seed_nodes.clone(),
        key: cluster::Key::new(secret.unwrap_or_default()),
        timing: c.timing,
    };
    cluster::Node::start(options, gateway.cluster_local()).map_err(|e| match e {
        cluster::Error::Io { op, source } => Error::Io { op, source },
        other => Error::Config(other.to_string()),
    })
}

/// `--max-connections`, lowered so that client connections cannot use up
/// the file descriptors that upstream calls, the cache and logs need: one
/// per worker plus a margin stays free.
fn connection_bound(config: &Config) -> usize {
    let wanted = config.limits.max_connections;
    let Some(files) = server::open_files_limit() else {
        return wanted;
    };
    let files = usize::try_from(files).unwrap_or(usize::MAX);
    let reserve = config.workers.min(files / 2) + 32;
    let fits = files.saturating_sub(reserve).max(16);
    if fits < wanted {
        log::info(&format!(
            "--max-connections {wanted} lowered to {fits} to fit the open-files limit \
             ({files}; raise it with ulimit -n or LimitNOFILE=)"
        ));
    }
    wanted.min(fits)
}

/// Runs the gateway until SIGTERM or SIGINT, then drains and returns.
/// On SIGHUP, `reload` is asked for a fresh configuration (normally by
/// re-reading the config file) and it replaces the running one.
///
/// # Errors
///
/// As [`start`], or when the signal handlers cannot be installed.
pub fn run(config: Config, reload: impl FnMut() -> Result<Config, Error>) -> Result<(), Error> {
    run_with(config, Extensions::new(), reload)
}

/// [`run`] with the providers of `extensions` (see [`start_with`]).
///
/// # Errors
///
/// As [`start_with`], or when the signal handlers cannot be installed.
pub fn run_with(
    config: Config,
    extensions: Extensions,
    mut reload: impl FnMut() -> Result<Config, Error>,
) -> Result<(), Error> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(|source| {
            Error::Io {
                op: "install signal handlers",
                source,
            }
        })?;
    let providers: Vec<&str> = config.model_providers.iter().map(|p| p.name()).collect();
    let workers = config.workers;
    let handle = start_with(config, extensions)?;
    log::info(&format!(
        "aiproxy {} listening on http://{} (providers: {}, workers: {workers})",
        env!("CARGO_PKG_VERSION"),
        handle.addr(),
        providers.join(", "),
    ));
    for signal in signals.forever() {
        match signal {
            SIGHUP => handle.reload(&mut reload),
            _ => break,
        }
    }
    log::info("shutting down: draining in-flight requests");
    if handle.shutdown() {
        log::info("shutdown complete");
    } else {
        log::warn("shutdown timeout reached with requests still in flight");
    }
    Ok(())
}
