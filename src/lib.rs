//! aiproxy: a synchronous AI API gateway.
//!
//! Clients speak the OpenAI, Anthropic or Gemini protocol; aiproxy
//! authenticates them, picks a provider instance, converts the request,
//! forwards it with a blocking HTTP client and converts the answer back,
//! whole or streamed. A fixed pool of worker threads serves all requests;
//! there is no async runtime.
//!
//! Embedding: [`start`] runs the gateway on background threads and returns
//! a [`Handle`]; [`run`] does the same and blocks until SIGTERM/SIGINT.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod balancer;
pub mod cache;
pub mod cli;
pub mod config;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod log;
pub mod metrics;
pub mod pools;
pub mod protocol;
pub mod provider_kind;
pub mod providers;
pub mod routing;
pub mod server;
pub mod time;
pub mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use config::Config;
pub use error::Error;

/// Stack of a worker thread: enough for serde_json's 128-level recursion
/// limit and TLS, small enough that thousands of workers stay cheap (only
/// touched pages count towards RSS).
const WORKER_STACK_BYTES: usize = 512 * 1024;

/// A running gateway.
pub struct Handle {
    server: server::Server,
    metrics_server: Option<server::Server>,
    gateway: Arc<gateway::Gateway>,
    shutdown_timeout: Duration,
}

impl Handle {
    /// The address the gateway listens on (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Changes the running gateway as the admin endpoints do (cache on or
    /// off, cache clear); such changes survive a reload as the README's
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
        self.gateway.set_draining();
        if let Some(metrics) = self.metrics_server {
            metrics.shutdown(std::time::Duration::from_secs(1));
        }
        self.server.shutdown(self.shutdown_timeout)
    }
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

/// Starts the gateway on background threads.
pub fn start(config: Config) -> Result<Handle, Error> {
    log::configure(config.log.level, config.log.format);
    let config = Arc::new(config);
    let gateway = gateway::Gateway::new(Arc::clone(&config))?;
    let listener =
        server::bind(config.listen).map_err(|source| Error::Io { op: "bind", source })?;
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
        shutdown_timeout: config.shutdown_timeout,
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
pub fn run(config: Config, mut reload: impl FnMut() -> Result<Config, Error>) -> Result<(), Error> {
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
    let handle = start(config)?;
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
