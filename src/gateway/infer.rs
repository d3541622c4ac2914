//! The inference pipeline, stage by stage: prepare (parse, choose the
//! provider, convert), then either stream the answer or fetch it whole
//! through the cache; every upstream attempt goes through the load
//! balancer's retry loop ([`Gateway::balanced`]), which chooses the
//! instance, and retries on another while nothing reached the client.

use std::borrow::Cow;
use std::io::{self, Read};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::call::{Answer, Call, Sink};
use super::{Failure, Gateway, State, route_model};
use crate::balancer::{
    Attempt, Finished, NoneEligible, Outcome as Health, RequestKey, RetryPolicy, SystemClock,
    client_addr,
};
use crate::cache::{self, Entry, Fetched, Key, Outcome};
use crate::config::{CacheScope, LogLevel};
use crate::log::{self, Field};
use crate::protocol::responses::ToolMap;
use crate::protocol::{self, GeminiFraming, Protocol, RequestInfo, SliceError, StreamConverter};
use crate::providers::read_wait::{self, ReadWait};
use crate::providers::{
    Instance, ProviderKind, UpstreamError, UpstreamFailure, UpstreamRequest, UpstreamResponse,
};

/// Largest upstream answer read whole (non-streamed).
const MAX_UPSTREAM_BODY: u64 = 64 << 20;
/// Largest upstream error body relayed.
const MAX_UPSTREAM_ERROR_BODY: u64 = 1 << 20;
/// Longest an upstream answer may take to arrive in full, streams
/// included: a backstop against an upstream that keeps a stream alive
/// forever, far above any real generation (the OpenAI and Anthropic SDKs
/// give up after 10 minutes). Checked here per read: ureq's own global
/// timeout cost ~11,000 instructions per request.
const UPSTREAM_TOTAL_TIMEOUT: Duration = Duration::from_secs(3600);
/// How often a stream relayed while the server drains checks the drain deadline.
const DRAIN_POLL: Duration = Duration::from_millis(200);

/// An upstream body that fails with `TimedOut` once its deadline passed.
struct Backstop<R> {
    inner: R,
    deadline: Instant,
}

impl<R: Read> Read for Backstop<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if Instant::now() >= self.deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "upstream answer took over an hour",
            ));
        }
        self.inner.read(buf)
    }
}

/// A request ready to go upstream.
struct Prepared<'a> {
    client: Protocol,
    kind: ProviderKind,
    family: Protocol,
    model: String,
    /// The client's address as `ip_hash` sees it (`X-Forwarded-For`
    /// believed from `--trusted-proxies` only).
    client_addr: Option<IpAddr>,
    /// The client's body (the cache key is built from it).
    client_body: &'a [u8],
    /// OpenAI `stream_options.include_usage`.
    include_usage: bool,
    /// How a Responses client declared its tools (empty for other clients).
    tools: ToolMap,
    upstream: UpstreamRequest<'a>,
}

impl Gateway {
    /// Runs one inference call and answers it through `sink`. A refusal
    /// before anything was sent is returned, for the caller to render in
    /// the client's protocol its own way.
    pub(super) fn infer(
        &self,
        state: &State,
        call: &Call<'_>,
        sink: &mut dyn Sink,
    ) -> Result<(), Failure> {
        let p = self.prepare(state, call, sink)?;
        if p.upstream.stream {
            return self.infer_stream(state, call, sink, &p);
        }
        self.infer_whole(state, call, sink, &p);
        Ok(())
    }

    /// Parses the client request, chooses the provider and instance, and
    /// converts the body to the provider's protocol. Not inlined, like the
    /// other stages around the upstream wait: a stage's locals would
    /// otherwise sit in the frame that stays on the stack while the worker
    /// waits for the upstream, and every page of stack a waiting worker
    /// touched stays resident (README, "Requests in flight").
    #[inline(never)]
    fn prepare<'a>(
        &self,
        state: &State,
        call: &Call<'a>,
        sink: &mut dyn Sink,
    ) -> Result<Prepared<'a>, Failure> {
        let client = call.client;
        let (body, info, model) = probe(client, call.body, call.path_model.clone())?;
        let stream = info.stream || call.path_stream;
        sink.note("model", model.clone());
        let kind = select(state, call.prefix, call.provider, &model)?;
        sink.note("provider", kind.name().to_owned());
        let forwarded: Vec<&str> = call.forwarded_for.iter().map(String::as_str).collect();
        let client_addr = call.client_addr.map(|peer| {
            client_addr::client_addr(peer.ip(), &forwarded, &state.config.trusted_proxies)
        });
        let family = kind.family();
        let mut tools = ToolMap::default();
        let upstream_body = if family == client {
            Cow::Borrowed(body)
        } else if client == Protocol::Responses || log::enabled(LogLevel::Debug) {
            // The answer's tool map and the debug log of dropped fields
            // read the request's tree.
            let value: Value = serde_json::from_slice(body)
                .map_err(|e| Failure::new(400, format!("Invalid JSON in request body: {e}")))?;
            if client == Protocol::Responses {
                tools = ToolMap::from_request(&value);
            }
            let converted = protocol::convert_request(client, family, &value, &model, stream)
                .map_err(|e| Failure::new(400, e.message))?;
            log_dropped(client, family, &value);
            Cow::Owned(
                serde_json::to_vec(&converted).map_err(|e| Failure::new(500, e.to_string()))?,
            )
        } else {
            Cow::Owned(
                protocol::convert_request_slice(client, family, body, &model, stream)
                    .map_err(|e| Failure::new(400, e.message))?,
            )
        };
        if state.config.log.prompts && log::enabled(LogLevel::Info) {
            let text = String::from_utf8_lossy(&upstream_body);
            log::event(LogLevel::Info, "prompt", &[("body", Field::Str(&text))]);
        }
        let upstream = UpstreamRequest {
            model: model.clone(),
            body: upstream_body,
            stream,
            forward_headers: if client == Protocol::Anthropic && family == Protocol::Anthropic {
                call.forward.clone()
            } else {
                Vec::new()
            },
            timeout: None,
        };
        Ok(Prepared {
            client,
            kind,
            family,
            model,
            client_addr,
            client_body: body,
            include_usage: info.include_usage,
            tools,
            upstream,
        })
    }

    /// A whole answer, from the cache or the upstream. Concurrent identical
    /// requests share one upstream call; only complete 200 answers are
    /// stored.
    #[inline(never)]
    fn infer_whole(&self, state: &State, call: &Call<'_>, sink: &mut dyn Sink, p: &Prepared<'_>) {
        let (entry, outcome) = match cache_key(state, call, p) {
            Some(key) => self.through_cache(state, p, &key),
            None => (Arc::new(self.fetch_whole(state, p).entry), Outcome::Bypass),
        };
        self.answer_whole(state, sink, &entry, outcome);
    }

    /// The answer from the cache, or fetched and stored.
    #[inline(never)]
    fn through_cache(&self, state: &State, p: &Prepared<'_>, key: &Key) -> (Arc<Entry>, Outcome) {
        state.cache.get_or_fetch(key, || self.fetch_whole(state, p))
    }

    /// Sends a whole answer, with what the cache did about it.
    #[inline(never)]
    fn answer_whole(&self, state: &State, sink: &mut dyn Sink, entry: &Entry, outcome: Outcome) {
        if let Some(m) = &self.metrics {
            match outcome {
                Outcome::Hit | Outcome::Coalesced => m.cache_hit(),
                Outcome::Miss => m.cache_miss(),
                Outcome::Bypass => {}
            }
            if outcome == Outcome::Miss {
                m.set_cache_size_bytes(state.cache.size_bytes() as u64);
                m.cache_refused(state.cache.take_refused());
            }
        }
        let x_cache = match outcome {
            Outcome::Hit | Outcome::Coalesced => "HIT",
            Outcome::Miss => "MISS",
            Outcome::Bypass => "BYPASS",
        };
        sink.note("note", format!("cache={x_cache}"));
        sink.whole(Answer {
            status: entry.status,
            content_type: &entry.content_type,
            body: &entry.body,
            cache: Some(x_cache),
            retry_after: entry.retry_after.as_deref(),
        });
    }

    /// Calls the upstream (through the balancer) and turns its answer into
    /// the client's protocol. Never fails: errors become error answers in
    /// the client's protocol, marked not cacheable, so coalesced waiters
    /// receive them too.
    fn fetch_whole(&self, state: &State, p: &Prepared<'_>) -> Fetched {
        match self.balanced(state, p, |instance| self.fetch_once(state, p, instance)) {
            Finished::Answered { answer, .. } => answer,
            Finished::NoInstance(why) => Fetched {
                entry: no_instance(p, &why),
                cacheable: false,
            },
        }
    }

    /// One attempt on `instance`: the whole answer, read and converted, so
    /// that an answer that breaks off is a failed attempt, retried like
    /// any other.
    fn fetch_once(&self, state: &State, p: &Prepared<'_>, instance: &Instance) -> Attempt<Fetched> {
        let started = Instant::now();
        match instance.provider.call(&p.upstream) {
            Ok(resp) if resp.status < 400 => self.read_whole(state, p, resp, started),
            result => {
                let (outcome, entry) = self.failed_attempt(p, result);
                Attempt {
                    outcome,
                    answer: Fetched {
                        entry,
                        cacheable: false,
                    },
                }
            }
        }
    }

    /// What an attempt that got an error status or no answer means to the
    /// balancer, and the answer the client gets if it is the last.
    #[inline(never)]
    fn failed_attempt(
        &self,
        p: &Prepared<'_>,
        result: Result<UpstreamResponse, UpstreamError>,
    ) -> (Health, Entry) {
        let outcome = self.failure(p.kind, &result);
        let entry = match result {
            Ok(resp) => relay_error(p, resp),
            Err(e) => error_entry(p.client, e.status(), e.message()),
        };
        (outcome, entry)
    }

    /// Reads a successful answer whole and converts it to the client's
    /// protocol.
    #[inline(never)]
    fn read_whole(
        &self,
        state: &State,
        p: &Prepared<'_>,
        resp: UpstreamResponse,
        started: Instant,
    ) -> Attempt<Fetched> {
        let failed = |outcome: Health, status: u16, message: &str| Attempt {
            outcome,
            answer: Fetched {
                entry: error_entry(p.client, status, message),
                cacheable: false,
            },
        };
        let capacity = resp.content_length.unwrap_or(0).min(MAX_UPSTREAM_BODY) as usize;
        let mut raw = Vec::with_capacity(capacity);
        let body = Backstop {
            inner: resp.body,
            deadline: started + UPSTREAM_TOTAL_TIMEOUT,
        };
        if let Err(e) = body.take(MAX_UPSTREAM_BODY).read_to_end(&mut raw) {
            let (failure, outcome) = if e.kind() == io::ErrorKind::TimedOut {
                (UpstreamFailure::Timeout, Health::Timeout)
            } else {
                (UpstreamFailure::Connect, Health::Connect)
            };
            self.provider_error(p.kind, failure);
            return failed(
                outcome,
                502,
                &format!("upstream answer could not be read: {e}"),
            );
        }
        if let Some(m) = &self.metrics {
            m.provider_latency(p.kind, started.elapsed());
        }
        if let Some(m) = &self.metrics
            && let Some(usage) = protocol::usage_from_slice(p.family, &raw)
        {
            m.tokens(p.kind, &p.model, usage.prompt, usage.completion);
        }
        let answer = if p.family == p.client {
            raw
        } else {
            match protocol::convert_response_slice(p.family, p.client, &raw, &p.model, &p.tools) {
                Ok(converted) => converted,
                Err(e) => {
                    self.provider_error(p.kind, UpstreamFailure::Protocol);
                    let message = match e {
                        SliceError::Json => "upstream answered with invalid JSON".to_owned(),
                        SliceError::Convert(e) => {
                            format!("upstream answer could not be converted: {}", e.message)
                        }
                    };
                    return failed(Health::Protocol, 502, &message);
                }
            }
        };
        if state.config.log.prompts && log::enabled(LogLevel::Info) {
            let text = String::from_utf8_lossy(&answer);
            log::event(LogLevel::Info, "answer", &[("body", Field::Str(&text))]);
        }
        Attempt {
            outcome: Health::Success,
            answer: Fetched {
                entry: Entry::new(200, "application/json", answer),
                cacheable: true,
            },
        }
    }

    #[inline(never)]
    fn infer_stream(
        &self,
        state: &State,
        call: &Call<'_>,
        sink: &mut dyn Sink,
        p: &Prepared<'_>,
    ) -> Result<(), Failure> {
        let started = Instant::now();
        // The retry boundary is the upstream's answer head: once a stream
        // is accepted, its bytes go to the client and it is never retried.
        let finished = self.balanced(state, p, |instance| {
            match instance.provider.call(&p.upstream) {
                Ok(resp) if resp.status < 400 => Attempt {
                    outcome: Health::Streaming,
                    answer: Ok(resp),
                },
                result => {
                    let (outcome, entry) = self.failed_attempt(p, result);
                    Attempt {
                        outcome,
                        answer: Err(entry),
                    }
                }
            }
        });
        let (resp, mut pick) = match finished {
            Finished::Answered {
                answer: Ok(resp),
                pick,
                ..
            } => (resp, pick),
            Finished::Answered {
                answer: Err(entry), ..
            } => {
                sink.note("note", format!("upstream_status={}", entry.status));
                answer_entry(sink, &entry);
                return Ok(());
            }
            Finished::NoInstance(why) => {
                let entry = no_instance(p, &why);
                sink.note("note", why.message(p.kind.name(), Some(&p.model)));
                answer_entry(sink, &entry);
                return Ok(());
            }
        };
        let framing = call.gemini_framing;
        let json_array = p.client == Protocol::Gemini && framing == GeminiFraming::JsonArray;
        let content_type = if json_array {
            "application/json"
        } else {
            "text/event-stream"
        };
        let mut converter = StreamConverter::new(p.family, p.client, &p.model, framing);
        converter.set_usage_chunk(p.include_usage);
        converter.set_tools(p.tools.clone());
        if !sink.open(content_type) {
            return Ok(());
        }
        let Some(Relayed {
            end,
            pending,
            note: out_note,
        }) = self.relay(state, sink, p, resp.body, &mut converter, started)
        else {
            sink.note("note", "client_disconnected".into());
            return Ok(());
        };
        let effect = pick.end_stream(&end, Instant::now());
        self.balancer.observe(&pick.instance().member, &effect);
        let usage = converter.usage();
        if let Some(m) = &self.metrics {
            m.provider_latency(p.kind, started.elapsed());
            m.tokens(p.kind, &p.model, usage.prompt, usage.completion);
        }
        sink.finish(&pending);
        sink.note(
            "note",
            format!(
                "cache=BYPASS tokens_in={} tokens_out={}{}",
                usage.prompt,
                usage.completion,
                out_note.map(|n| format!(" {n}")).unwrap_or_default()
            ),
        );
        Ok(())
    }

    /// Relays the stream `upstream` to the client through `converter`
    /// until either ends; None when the client left (dropping `upstream`
    /// then closes the upstream connection and stops generation). Its own
    /// frame, entered after the call that began the stream returned, so
    /// that its read buffer lies in stack pages that call touched already.
    #[inline(never)]
    fn relay(
        &self,
        state: &State,
        sink: &mut dyn Sink,
        p: &Prepared<'_>,
        mut upstream: Box<dyn Read + Send>,
        converter: &mut StreamConverter,
        started: Instant,
    ) -> Option<Relayed> {
        let mut pending = Vec::new();
        // As large as a plain upstream's input buffer: one read takes all
        // it holds (a TLS upstream's larger one is drained in two or three
        // reads, copies without a system call). On the stack, not the
        // heap: the upstream call that began the stream went deeper than
        // this, so these pages are resident already, while a heap page
        // would be one more for every stream in flight.
        let mut buf = [0u8; 4 * 1024];
        // Zero turns keep-alives off: wait for the next chunk as long as it takes.
        let keepalive = match state.config.upstream.stream_keepalive {
            d if d.is_zero() => UPSTREAM_TOTAL_TIMEOUT,
            d => d,
        };
        let idle_timeout = state.config.upstream.idle_timeout;
        let tick = (keepalive.min(idle_timeout) / 2).max(Duration::from_millis(10));
        // The worker reads the upstream itself, each read bounded so that
        // keep-alives and the drain deadline are not missed; once a read
        // brought events, reads that wait for nothing collect whatever else
        // already arrived, and all of it goes to the client in one write.
        let wait = ReadWait::start(Duration::ZERO);
        let mut last_read = Instant::now();
        let mut last_sent = last_read;
        let mut first_byte = true;
        // The sink may be holding the response head back to send it with
        // the first events: a read that would wait for anything goes out
        // only after it (so a slow first token does not delay the head).
        let mut unflushed = true;
        let mut out_note = None;
        // How the stream ended, for the instance's health.
        let mut end = Health::Success;
        loop {
            if sink.must_end() {
                // The drain deadline passed (or the call was cancelled): end
                // the stream in the client's protocol, so it sees an error
                // rather than a cut.
                converter.fail(503, "server shutting down", &mut pending);
                out_note = Some("cut_at_drain_deadline");
                break;
            }
            if started.elapsed() >= UPSTREAM_TOTAL_TIMEOUT {
                self.provider_error(p.kind, UpstreamFailure::Timeout);
                end = Health::Timeout;
                converter.fail(504, "upstream answer took over an hour", &mut pending);
                break;
            }
            // One wait for every read that may block (the socket's timeout
            // is set again only when it changes): keep-alives go out at
            // most one wait late, and while draining the deadline is
            // checked often enough.
            let batching = unflushed || !pending.is_empty();
            wait.set(if batching {
                Duration::ZERO
            } else if sink.wants_short_waits() {
                tick.min(DRAIN_POLL)
            } else {
                tick
            });
            match upstream.read(&mut buf) {
                Ok(0) => {
                    converter.finish(&mut pending);
                    if converter.was_cut_off() {
                        // The connection ended before the upstream's own end.
                        self.provider_error(p.kind, UpstreamFailure::Connect);
                        end = Health::Connect;
                    }
                    break;
                }
                Ok(n) => {
                    last_read = Instant::now();
                    if first_byte {
                        first_byte = false;
                        if let Some(m) = &self.metrics {
                            m.time_to_first_token(p.kind, started.elapsed());
                        }
                    }
                    converter.feed(&buf[..n], &mut pending);
                    // A body that may block holds nothing back.
                    if !wait.honoured() && (unflushed || !pending.is_empty()) {
                        if !send(sink, &mut pending, &mut unflushed) {
                            return None;
                        }
                        last_sent = last_read;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if batching && read_wait::timed_out(&e) => {
                    // Everything that had arrived is converted: send it.
                    if !send(sink, &mut pending, &mut unflushed) {
                        return None;
                    }
                    last_sent = Instant::now();
                }
                Err(e) if read_wait::timed_out(&e) && last_read.elapsed() < idle_timeout => {
                    if last_sent.elapsed() >= keepalive {
                        converter.keepalive(&mut pending);
                        if !send(sink, &mut pending, &mut unflushed) {
                            return None;
                        }
                        last_sent = Instant::now();
                    }
                }
                Err(e) => {
                    let (status, message, kind) = if read_wait::timed_out(&e) {
                        end = Health::Timeout;
                        (
                            504,
                            "upstream stopped sending (idle timeout)",
                            UpstreamFailure::Timeout,
                        )
                    } else {
                        end = Health::Connect;
                        (
                            502,
                            "upstream connection lost mid-stream",
                            UpstreamFailure::Connect,
                        )
                    };
                    self.provider_error(p.kind, kind);
                    converter.fail(status, message, &mut pending);
                    break;
                }
            }
        }
        Some(Relayed {
            end,
            pending,
            note: out_note,
        })
    }

    /// Runs `attempt` on instances of `p.kind` chosen by the balancer,
    /// retrying within `--request-max-retries` and the retry budget.
    fn balanced<R>(
        &self,
        state: &State,
        p: &Prepared<'_>,
        mut attempt: impl FnMut(&Instance) -> Attempt<R>,
    ) -> Finished<Instance, R> {
        let Some(pool) = state.registry.pool(p.kind) else {
            return Finished::NoInstance(NoneEligible::Empty);
        };
        let key = RequestKey {
            model: Some(&p.model),
            client: p.client_addr,
        };
        let up = &state.config.upstream;
        let policy = RetryPolicy {
            max_retries: up.max_retries,
            base_delay: up.base_delay,
            ..RetryPolicy::default()
        };
        let mut tries = 0;
        self.balancer
            .run(pool, &key, &policy, &SystemClock, None, |pick| {
                let instance = pick.instance();
                tries += 1;
                if tries > 1 {
                    log::debug(&format!(
                        "retrying {} on {} (attempt {tries})",
                        p.kind,
                        instance.id()
                    ));
                }
                if let Some(m) = &self.metrics {
                    m.provider_request(p.kind, &p.model, instance.id());
                }
                attempt(instance)
            })
    }

    /// What a failed attempt (an error status or no answer) means to the
    /// balancer; counted in the metrics.
    fn failure(
        &self,
        kind: ProviderKind,
        result: &Result<UpstreamResponse, UpstreamError>,
    ) -> Health {
        let (failure, retry_after, detail) = match result {
            Ok(resp) => (
                UpstreamFailure::of_status(resp.status).unwrap_or(UpstreamFailure::Protocol),
                resp.retry_after.as_deref().and_then(parse_retry_after),
                format!("upstream answered {}", resp.status),
            ),
            Err(e) => (UpstreamFailure::of_error(e), None, e.message().to_owned()),
        };
        self.provider_error(kind, failure);
        failure.outcome(retry_after, &detail)
    }

    fn provider_error(&self, kind: ProviderKind, failure: UpstreamFailure) {
        if let Some(m) = &self.metrics {
            m.provider_error(kind, failure.into());
        }
    }
}

/// The cache key of a whole answer; `None` when the cache is bypassed.
#[inline(never)]
fn cache_key(state: &State, call: &Call<'_>, p: &Prepared<'_>) -> Option<Key> {
    if !state.cache.is_enabled() || call.no_cache {
        return None;
    }
    match state.config.cache.scope {
        CacheScope::Shared => Key::new(p.kind, &p.model, p.client, p.client_body),
        CacheScope::PerKey => {
            let scope = cache::scope_of(call.client_key.as_deref());
            Key::scoped(p.kind, &p.model, p.client, &scope, p.client_body)
        }
    }
}

/// At debug level: the request fields a conversion drops for want of an
/// equivalent.
fn log_dropped(client: Protocol, family: Protocol, value: &Value) {
    if !log::enabled(LogLevel::Debug) {
        return;
    }
    let dropped = protocol::dropped_fields(client, family, value);
    if !dropped.is_empty() {
        log::event(
            LogLevel::Debug,
            "request fields without an equivalent dropped",
            &[
                ("from", Field::Str(client.name())),
                ("to", Field::Str(family.name())),
                ("fields", Field::Str(&dropped.join(","))),
            ],
        );
    }
}

/// The client body as the pipeline reads it (an empty body is `{}`), what
/// [`protocol::inspect`] found in it, and the model it asks for: the
/// checks `count_tokens` shares with the inference routes, so that both
/// refuse the same requests.
pub(super) fn probe(
    client: Protocol,
    raw: &[u8],
    path_model: Option<String>,
) -> Result<(&[u8], RequestInfo, String), Failure> {
    let body: &[u8] = if raw.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        raw
    };
    let info = protocol::inspect(client, body).map_err(|e| Failure::new(400, e.message))?;
    let model = path_model
        .or_else(|| info.model.clone())
        .filter(|m| !m.is_empty())
        .ok_or_else(|| Failure::new(400, "The request has no model: set the `model` field."))?;
    Ok((body, info, model))
}

/// Provider choice, first match wins: path prefix, `Model-Provider`
/// header, `model_routes`, the default provider.
pub(super) fn select(
    state: &State,
    prefix: Option<ProviderKind>,
    provider: Option<&str>,
    model: &str,
) -> Result<ProviderKind, Failure> {
    if let Some(kind) = prefix {
        return Ok(kind);
    }
    if let Some(name) = provider {
        let kind = ProviderKind::parse(name.trim()).ok_or_else(|| {
            Failure::new(
                400,
                format!("Provider {name} in header is not a known provider."),
            )
        })?;
        if !state.registry.is_enabled(kind) {
            let message = format!("Provider {kind} in header is not enabled on this gateway.");
            return Err(Failure::new(400, message));
        }
        return Ok(kind);
    }
    Ok(route_model(&state.config, model).unwrap_or_else(|| state.registry.default_kind()))
}

/// Sends the converted events (or only the held head when there are
/// none); false when the client is gone.
fn send(sink: &mut dyn Sink, pending: &mut Vec<u8>, unflushed: &mut bool) -> bool {
    let sent = if pending.is_empty() {
        sink.flush()
    } else {
        sink.send(pending)
    };
    pending.clear();
    *unflushed = false;
    sent
}

/// The upstream's error answer in the client's protocol (unchanged when
/// the protocols match), with its `Retry-After`.
fn relay_error(p: &Prepared<'_>, resp: UpstreamResponse) -> Entry {
    let mut raw = Vec::new();
    let _ = resp
        .body
        .take(MAX_UPSTREAM_ERROR_BODY)
        .read_to_end(&mut raw);
    let body = protocol::relay_error(p.client, p.family, resp.status, &raw);
    let mut entry = Entry::new(resp.status, "application/json", body);
    entry.retry_after = resp.retry_after;
    entry
}

/// An error answer of ours in the client's protocol.
fn error_entry(client: Protocol, status: u16, message: &str) -> Entry {
    Entry::new(
        status,
        "application/json",
        protocol::error_body(client, status, message),
    )
}

/// The answer when no instance can take the request: 503 with
/// `Retry-After` when some instance recovers by itself (404 when none
/// serves the model), in the client's protocol.
fn no_instance(p: &Prepared<'_>, why: &NoneEligible) -> Entry {
    let message = why.message(p.kind.name(), Some(&p.model));
    let mut entry = error_entry(p.client, why.status(), &message);
    entry.retry_after = why.retry_after_secs().map(|s| s.to_string());
    entry
}

/// How a relayed stream ended.
struct Relayed {
    /// The instance's health, as the stream's end showed it.
    end: Health,
    /// Client events not yet sent: they go out with the stream's end.
    pending: Vec<u8>,
    /// A fact for the access log.
    note: Option<&'static str>,
}

fn answer_entry(sink: &mut dyn Sink, entry: &Entry) {
    sink.whole(Answer {
        status: entry.status,
        content_type: &entry.content_type,
        body: &entry.body,
        cache: None,
        retry_after: entry.retry_after.as_deref(),
    });
}

/// `Retry-After` in seconds (the HTTP-date form is treated as unknown).
fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_only() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
