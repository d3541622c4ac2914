//! The inference pipeline's two seams, independent of any transport: a
//! [`Call`] says what to do, a [`Sink`] takes the answer. The HTTP routes
//! build a `Call` from a request and answer through an [`HttpSink`]; a
//! WebSocket message or a library caller builds its own and brings its own
//! sink, and goes through the same conversion, cache, metrics and provider
//! choice.

use std::borrow::Cow;
use std::net::SocketAddr;

use crate::auth;
use crate::protocol::{GeminiFraming, Protocol};
use crate::providers::ProviderKind;
use crate::server::{Request, Responder};

/// One inference call.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// Protocol the client speaks (and is answered in).
    pub client: Protocol,
    /// The client's request body.
    pub body: &'a [u8],
    /// Provider fixed by the transport (an HTTP path prefix).
    pub prefix: Option<ProviderKind>,
    /// Provider asked for by name (`Model-Provider`), checked against the
    /// enabled ones.
    pub provider: Option<&'a str>,
    /// Model named outside the body (the Gemini path).
    pub path_model: Option<String>,
    /// Streaming asked for outside the body (`streamGenerateContent`).
    pub path_stream: bool,
    /// How a Gemini stream is framed (`?alt=sse`, else a JSON array).
    pub gemini_framing: GeminiFraming,
    /// The client asked not to be served from the cache.
    pub no_cache: bool,
    /// The key the client presented (answers are cached per key when
    /// `cache.scope` is `per_key`).
    pub client_key: Option<Cow<'a, str>>,
    /// Client headers that keep their meaning on a same-family upstream
    /// (`anthropic-version`, `anthropic-beta`).
    pub forward: Vec<(&'static str, String)>,
    /// Where the client is: the connection's peer.
    pub client_addr: Option<SocketAddr>,
    /// The request's `X-Forwarded-For` values, in order: believed for
    /// `ip_hash` only when `client_addr` is a trusted proxy.
    pub forwarded_for: Vec<String>,
}

impl<'a> Call<'a> {
    /// A call in `client`'s protocol with `body`, everything else left to
    /// the body and the configuration (provider by `model_routes`, cache
    /// on, SSE framing).
    pub fn new(client: Protocol, body: &'a [u8]) -> Self {
        Call {
            client,
            body,
            prefix: None,
            provider: None,
            path_model: None,
            path_stream: false,
            gemini_framing: GeminiFraming::Sse,
            no_cache: false,
            client_key: None,
            forward: Vec::new(),
            client_addr: None,
            forwarded_for: Vec::new(),
        }
    }

    /// The call an HTTP request makes on an inference route.
    #[inline(never)]
    pub(super) fn from_http(
        req: &'a Request,
        client: Protocol,
        prefix: Option<ProviderKind>,
        path_model: Option<String>,
        path_stream: bool,
    ) -> Self {
        let gemini_framing = match req.query_param("alt").as_deref() {
            Some("sse") => GeminiFraming::Sse,
            _ => GeminiFraming::JsonArray,
        };
        let no_cache = req.header("cache-control").is_some_and(|v| {
            v.split(',')
                .map(str::trim)
                .any(|d| d.eq_ignore_ascii_case("no-cache") || d.eq_ignore_ascii_case("no-store"))
        });
        let forward = ["anthropic-version", "anthropic-beta"]
            .into_iter()
            .filter_map(|name| req.header(name).map(|v| (name, v.to_owned())))
            .collect();
        Call {
            prefix,
            provider: req.header("model-provider"),
            path_model,
            path_stream,
            gemini_framing,
            no_cache,
            client_key: auth::presented_key(&req.head),
            forward,
            client_addr: Some(req.peer),
            forwarded_for: req
                .head
                .headers()
                .filter(|(name, _)| name.eq_ignore_ascii_case("x-forwarded-for"))
                .map(|(_, value)| value.to_owned())
                .collect(),
            ..Call::new(client, &req.body)
        }
    }
}

/// A whole answer, success or error, already in the client's protocol.
#[derive(Debug)]
pub struct Answer<'b> {
    /// HTTP-style status (the WebSocket API reports it too).
    pub status: u16,
    /// Media type of `body`.
    pub content_type: &'b str,
    /// The body.
    pub body: &'b [u8],
    /// Cache outcome (`HIT`, `MISS`, `BYPASS`), when the cache was asked.
    pub cache: Option<&'static str>,
    /// `Retry-After` of an upstream refusal.
    pub retry_after: Option<&'b str>,
}

/// Where the answer to a [`Call`] goes.
pub trait Sink {
    /// A whole answer.
    fn whole(&mut self, answer: Answer<'_>);

    /// Starts a stream of client-protocol events; false if the peer is
    /// already gone. The transport may hold its start back until the
    /// first [`Sink::send`] or [`Sink::flush`], to send both at once:
    /// flush before waiting for anything.
    fn open(&mut self, content_type: &str) -> bool;

    /// Sends whatever [`Sink::open`] held back; false if the peer is gone.
    fn flush(&mut self) -> bool {
        true
    }

    /// One or more complete client-protocol events (SSE frames, or JSON
    /// array pieces for a Gemini stream). False if the peer is gone: the
    /// pipeline then stops, which closes the upstream call.
    fn send(&mut self, events: &[u8]) -> bool;

    /// Ends the stream.
    fn close(&mut self);

    /// Sends the last `events` and ends the stream, in one write where
    /// the transport can: [`Sink::send`], then [`Sink::close`] if the
    /// peer is still there, unless overridden.
    fn finish(&mut self, events: &[u8]) {
        if self.send(events) {
            self.close();
        }
    }

    /// Whether the transport wants streams ended now (the drain deadline
    /// passed, or the client cancelled this call).
    fn must_end(&self) -> bool {
        false
    }

    /// Whether waits should be short, to notice [`Sink::must_end`] soon.
    fn wants_short_waits(&self) -> bool {
        false
    }

    /// Records an access-log fact (`provider`, `model`, `note`).
    fn note(&mut self, _key: &'static str, _value: String) {}
}

/// Answers a call over HTTP.
pub(super) struct HttpSink<'r, 'a> {
    pub out: &'r mut Responder<'a>,
}

impl Sink for HttpSink<'_, '_> {
    fn whole(&mut self, answer: Answer<'_>) {
        let mut headers = vec![("Content-Type", answer.content_type)];
        if let Some(cache) = answer.cache {
            headers.push(("X-Cache", cache));
        }
        if let Some(r) = answer.retry_after {
            headers.push(("Retry-After", r));
        }
        let _ = self.out.send(answer.status, &headers, answer.body);
    }

    fn open(&mut self, content_type: &str) -> bool {
        let headers = [
            ("Content-Type", content_type),
            ("Cache-Control", "no-cache"),
            ("X-Accel-Buffering", "no"),
            ("X-Cache", "BYPASS"),
        ];
        self.out.open_stream_held(200, &headers).is_ok()
    }

    fn flush(&mut self) -> bool {
        self.out.flush_stream().is_ok()
    }

    fn send(&mut self, events: &[u8]) -> bool {
        self.out.send_chunk(events).is_ok()
    }

    fn close(&mut self) {
        let _ = self.out.end_stream();
    }

    fn finish(&mut self, events: &[u8]) {
        let _ = self.out.end_stream_with(events);
    }

    fn must_end(&self) -> bool {
        self.out.must_end()
    }

    fn wants_short_waits(&self) -> bool {
        self.out.is_stopping()
    }

    fn note(&mut self, key: &'static str, value: String) {
        self.out.log.set(key, value);
    }
}
