//! Inference calls to plain `http://` upstreams, without ureq.
//!
//! Through ureq, the upstream exchange of a forwarded request cost some
//! 26,000 of the ~61,000 instructions the proxy spends on it (perf, on
//! the unary load): its call state machine, the `http` crate's request
//! and response builders and header maps, a clock read per phase, a scan
//! of the pool under a lock to take a connection and another to give it
//! back. For the providers that speak to self-hosted models and sidecars
//! over plain HTTP (openai-custom, claude-custom), this client writes the
//! request head from a prefix made once per URL, parses the answer's head
//! with `httparse` (as the server parses requests) and frames the body by
//! its length or its chunks. It keeps what the ureq path gave: the same
//! timeouts (connect, first byte of the answer, each read of the body),
//! the thread's [`ReadWait`](super::read_wait) for streamed bodies, lean
//! waits when hundreds wait (see [`plain_tcp`]), the bound on idle
//! connections and the caching resolver. TLS upstreams, sign-in calls,
//! model lists and health probes stay on ureq.
//!
//! A request is not sent again once it went out, as nginx does not for a
//! POST: only a kept-alive connection whose write failed (the upstream
//! closed it in the meantime) is replaced, before any of the request
//! reached the upstream.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ureq::http::Uri;
use ureq::unversioned::resolver::Resolver;
use ureq::unversioned::transport::NextTimeout;

use super::plain_tcp::{self, Awaiting, Input as Buf, LEAN_ABOVE};
use super::resolve::CachingResolver;
use super::{UpstreamError, UpstreamResponse, http, read_wait};
use crate::config::Config;

/// The largest answer head read (ureq's default limit).
const MAX_HEAD: usize = 64 * 1024;
/// The most header fields an answer head may have.
const MAX_HEADERS: usize = 64;
/// The longest chunk-size or trailer line of a chunked body.
const MAX_CHUNK_LINE: usize = 4096;
/// A body up to this size goes out in the same write as the head.
const INLINE_BODY: usize = 64 * 1024;

/// The client of one configuration's plain upstreams; its idle
/// connections are split among the worker threads as ureq's agents are
/// (see [`http::ShardedAgent`]).
pub struct PlainClient {
    shards: Box<[Mutex<Vec<Conn>>]>,
    idle_per_shard: usize,
    resolver: CachingResolver,
    resolver_config: ureq::config::Config,
    connect_timeout: Duration,
    answer_timeout: Duration,
    idle_timeout: Option<Duration>,
    /// [`LEAN_ABOVE`], but for tests.
    lean_above: usize,
}

/// Where requests to one URL go, with the start of their head made once.
pub struct Target {
    authority: Box<str>,
    uri: Uri,
    /// Request line, `Host`, `User-Agent` and `Accept-Encoding`.
    head: Box<[u8]>,
}

impl Target {
    /// POSTs to `url`; `None` unless it is a plain `http://` URL.
    pub fn post(url: &str) -> Option<Self> {
        let uri: Uri = url.parse().ok()?;
        if uri.scheme_str() != Some("http") {
            return None;
        }
        let authority = uri.authority()?.as_str();
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: aiproxy/{}\r\n\
             Accept-Encoding: identity\r\n",
            env!("CARGO_PKG_VERSION")
        );
        Some(Self {
            authority: authority.into(),
            head: head.into_bytes().into_boxed_slice(),
            uri,
        })
    }
}

impl PlainClient {
    /// A client with the configuration's upstream timeouts, resolving
    /// through `resolver` (shared with ureq's agents).
    pub fn new(config: &Config, resolver: CachingResolver, idle_per_shard: usize) -> Self {
        let up = &config.upstream;
        Self {
            shards: (0..http::SHARDS).map(|_| Mutex::default()).collect(),
            idle_per_shard,
            resolver,
            resolver_config: ureq::config::Config::default(),
            connect_timeout: up.connect_timeout,
            answer_timeout: up.timeout,
            idle_timeout: Some(up.idle_timeout).filter(|t| !t.is_zero()),
            lean_above: LEAN_ABOVE,
        }
    }

    /// POSTs `body` to `target` with the given header fields (each sent
    /// as it is; a value with a control character is refused).
    pub fn post(
        self: &Arc<Self>,
        target: &Target,
        headers: &[(&str, &str)],
        forwarded: &[(&'static str, String)],
        body: &[u8],
    ) -> Result<UpstreamResponse, UpstreamError> {
        let head = request_head(target, headers, forwarded, body)?;
        let separate_body = (body.len() > INLINE_BODY).then_some(body);
        let shard = http::thread_shard() % self.shards.len();
        let mut pooled = self.take(shard, &target.authority);
        let mut conn = loop {
            let (mut conn, reused) = match pooled.take() {
                Some(conn) => (conn, true),
                None => (self.connect(target)?, false),
            };
            match self.send(&mut conn, &head, separate_body) {
                Ok(()) => break conn,
                // Closed by the upstream while idle: nothing reached it.
                Err(_) if reused => pooled = self.take(shard, &target.authority),
                Err(e) => return Err(io_failure(&e)),
            }
        };
        let answer = self.read_head(&mut conn)?;
        let mut body = PlainBody {
            conn: Some(conn),
            framing: answer.framing,
            keep_alive: answer.keep_alive,
            client: Arc::clone(self),
            shard,
        };
        if body.framing.is_done() {
            body.finish();
        }
        Ok(UpstreamResponse {
            status: answer.status,
            content_length: match answer.framing {
                Framing::Length(n) => Some(n),
                _ => None,
            },
            retry_after: answer.retry_after,
            body: Box::new(body),
        })
    }

    /// An idle connection to `authority` the upstream has not closed.
    fn take(&self, shard: usize, authority: &str) -> Option<Conn> {
        loop {
            let conn = {
                let mut idle = self.shards[shard]
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let at = idle.iter().rposition(|c| *c.authority == *authority)?;
                idle.remove(at)
            };
            if crate::net::is_quiet(&conn.stream) {
                return Some(conn);
            }
        }
    }

    /// Keeps `conn` for the next request, the oldest idle one making room.
    fn give_back(&self, shard: usize, conn: Conn) {
        let evicted = {
            let mut idle = self.shards[shard]
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let evicted = (idle.len() >= self.idle_per_shard).then(|| idle.remove(0));
            idle.push(conn);
            evicted
        };
        // Closed outside the lock.
        drop(evicted);
    }

    fn connect(&self, target: &Target) -> Result<Conn, UpstreamError> {
        let addrs = self
            .resolver
            .resolve(&target.uri, &self.resolver_config, NextTimeout::default())
            .map_err(http::map_error)?;
        let stream = match plain_tcp::connect_any(&addrs, Some(self.connect_timeout)) {
            Ok(stream) => stream,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(UpstreamError::Timeout(
                    "upstream timed out (Connect)".into(),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return Err(UpstreamError::Connect(
                    "could not connect to upstream".into(),
                ));
            }
            Err(e) => return Err(io_failure(&e)),
        };
        stream.set_nodelay(true).map_err(|e| io_failure(&e))?;
        Ok(Conn {
            stream,
            authority: target.authority.clone(),
            buf: Buf::default(),
            read_timeout: None,
            write_timeout: None,
        })
    }

    fn send(&self, conn: &mut Conn, head: &[u8], body: Option<&[u8]>) -> io::Result<()> {
        if conn.write_timeout != self.idle_timeout {
            conn.stream.set_write_timeout(self.idle_timeout)?;
            conn.write_timeout = self.idle_timeout;
        }
        conn.stream.write_all(head)?;
        if let Some(body) = body {
            conn.stream.write_all(body)?;
        }
        Ok(())
    }

    /// Reads the answer's head (skipping interim `1xx` ones) within the
    /// upstream timeout.
    fn read_head(&self, conn: &mut Conn) -> Result<Answer, UpstreamError> {
        let deadline = Instant::now() + self.answer_timeout;
        let timed_out = || UpstreamError::Timeout("upstream timed out (RecvResponse)".into());
        loop {
            if !conn.buf.is_empty() {
                match parse_head(&mut conn.buf)? {
                    Some(answer) => return Ok(answer),
                    None if conn.buf.filled().len() >= MAX_HEAD => {
                        return Err(UpstreamError::Connect(
                            "upstream error: answer head over 64 KiB".into(),
                        ));
                    }
                    None => {}
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out());
            }
            match conn.fill(Some(left), self.lean_above) {
                Ok(0) => {
                    return Err(UpstreamError::Connect(
                        "upstream closed the connection without answering".into(),
                    ));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return Err(timed_out()),
                Err(e) => return Err(io_failure(&e)),
            }
        }
    }
}

/// A transport failure as the client is told of it (as for ureq's).
fn io_failure(e: &io::Error) -> UpstreamError {
    if plain_tcp::is_timeout(e) {
        UpstreamError::Timeout("upstream timed out".into())
    } else {
        UpstreamError::Connect(format!("upstream connection failed: {}", e.kind()))
    }
}

/// The request head, and the body after it when it is small.
fn request_head(
    target: &Target,
    headers: &[(&str, &str)],
    forwarded: &[(&'static str, String)],
    body: &[u8],
) -> Result<Vec<u8>, UpstreamError> {
    let inline = if body.len() <= INLINE_BODY { body } else { &[] };
    let mut out = Vec::with_capacity(target.head.len() + 256 + inline.len());
    out.extend_from_slice(&target.head);
    let forwarded = forwarded.iter().map(|(n, v)| (*n, v.as_str()));
    for (name, value) in headers.iter().copied().chain(forwarded) {
        // As the `http` crate (and so ureq) allows: no control character
        // but the tab, so no field can end early and smuggle another.
        if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(UpstreamError::Connect(format!(
                "upstream error: header {name} has a control character"
            )));
        }
        for part in [name.as_bytes(), b": ", value.as_bytes(), b"\r\n"] {
            out.extend_from_slice(part);
        }
    }
    let _ = write!(out, "Content-Length: {}\r\n\r\n", body.len());
    out.extend_from_slice(inline);
    Ok(out)
}

/// What the head of an answer says.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    framing: Framing,
    keep_alive: bool,
}

/// Parses a complete head from `buf` (consuming it), skipping interim
/// answers; `None` while it is incomplete. Kept out of `read_head`'s
/// frame: the header array is 2 KiB of stack, and the wait after it
/// should not sit below it.
#[inline(never)]
fn parse_head(buf: &mut Buf) -> Result<Option<Answer>, UpstreamError> {
    loop {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut head = httparse::Response::new(&mut fields);
        let used = match head.parse(buf.filled()) {
            Ok(httparse::Status::Complete(used)) => used,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => {
                return Err(UpstreamError::Connect(format!(
                    "upstream error: malformed answer head ({e})"
                )));
            }
        };
        let status = head.code.unwrap_or(0);
        if (100..200).contains(&status) && status != 101 {
            buf.consume(used);
            continue;
        }
        let mut answer = Answer {
            status,
            retry_after: None,
            framing: Framing::UntilClose,
            keep_alive: head.version == Some(1),
        };
        let mut length = None;
        // Whether the last transfer coding is chunked, if there is one.
        let mut chunked = None;
        for field in head.headers.iter() {
            let name = field.name;
            if name.eq_ignore_ascii_case("content-length") {
                let parsed = std::str::from_utf8(field.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok());
                match (parsed, length) {
                    (Some(n), None) => length = Some(n),
                    (Some(n), Some(m)) if n == m => {}
                    _ => {
                        return Err(UpstreamError::Connect(
                            "upstream error: invalid Content-Length".into(),
                        ));
                    }
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                // Chunked only when it is the last coding; anything else
                // is read until the upstream closes.
                let last_chunked = field
                    .value
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                chunked = Some(last_chunked);
            } else if name.eq_ignore_ascii_case("connection") {
                if field
                    .value
                    .split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
                {
                    answer.keep_alive = false;
                }
            } else if name.eq_ignore_ascii_case("retry-after") {
                answer.retry_after = std::str::from_utf8(field.value).ok().map(str::to_owned);
            }
        }
        answer.framing = if status == 101 {
            // Not asked for: nothing after it can be trusted as a body.
            return Err(UpstreamError::Connect(
                "upstream error: unexpected 101 answer".into(),
            ));
        } else if chunked == Some(true) {
            Framing::Chunked(Chunk::Size)
        } else if chunked.is_none()
            && let Some(n) = length
        {
            Framing::Length(n)
        } else if status == 204 || status == 304 {
            Framing::Length(0)
        } else {
            answer.keep_alive = false;
            Framing::UntilClose
        };
        buf.consume(used);
        return Ok(Some(answer));
    }
}

/// How the end of a body is known.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Framing {
    /// This many bytes are still to come.
    Length(u64),
    Chunked(Chunk),
    /// The upstream closes the connection after it.
    UntilClose,
    /// All of it was read.
    Done,
}

/// Where a chunked body's decoding is.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Chunk {
    /// A chunk-size line is next.
    Size,
    /// This much of a chunk's data is still to come.
    Data(u64),
    /// The line end after a chunk's data.
    DataEnd,
    /// Trailer lines, up to an empty one.
    Trailer,
    /// Refused, for this reason (after the bytes before it were given).
    Refused(&'static str),
}

impl Framing {
    fn is_done(&self) -> bool {
        matches!(self, Self::Done | Self::Length(0))
    }

    /// Moves body bytes from `buf` to `out`: `Some(n)` with `n > 0`
    /// bytes, `Some(0)` at the end of the body, `None` when more input
    /// is needed first.
    fn decode(&mut self, buf: &mut Buf, out: &mut [u8]) -> io::Result<Option<usize>> {
        match self {
            Self::Done | Self::Length(0) => Ok(Some(0)),
            Self::Length(left) => {
                let n = copy(buf, out, *left);
                *left -= n as u64;
                Ok((n > 0).then_some(n))
            }
            Self::UntilClose => {
                let n = copy(buf, out, u64::MAX);
                Ok((n > 0).then_some(n))
            }
            Self::Chunked(chunk) => {
                let (produced, done) = decode_chunked(chunk, buf, out)?;
                if done {
                    *self = Self::Done;
                    return Ok(Some(produced));
                }
                Ok((produced > 0).then_some(produced))
            }
        }
    }
}

/// Copies what is buffered into `out`, at most `limit` bytes.
fn copy(buf: &mut Buf, out: &mut [u8], limit: u64) -> usize {
    let available = buf.filled();
    let n = available
        .len()
        .min(out.len())
        .min(usize::try_from(limit).unwrap_or(usize::MAX));
    out[..n].copy_from_slice(&available[..n]);
    buf.consume(n);
    n
}

/// Decodes chunks from `buf` into `out`; the bytes produced and whether
/// the body ended. A refusal comes after the bytes before it, on the next
/// call, so that where the reads split the body does not change what is
/// delivered.
fn decode_chunked(chunk: &mut Chunk, buf: &mut Buf, out: &mut [u8]) -> io::Result<(usize, bool)> {
    let mut produced = 0;
    match decode_chunks(chunk, buf, out, &mut produced) {
        Ok(ended) => Ok((produced, ended)),
        Err(why) => {
            *chunk = Chunk::Refused(why);
            if produced > 0 {
                Ok((produced, false))
            } else {
                Err(invalid(why))
            }
        }
    }
}

fn decode_chunks(
    chunk: &mut Chunk,
    buf: &mut Buf,
    out: &mut [u8],
    produced: &mut usize,
) -> Result<bool, &'static str> {
    loop {
        match *chunk {
            Chunk::Refused(why) => return Err(why),
            Chunk::Size => {
                let Some(size) = take_line(buf, parse_chunk_size)? else {
                    return Ok(false);
                };
                *chunk = match size? {
                    0 => Chunk::Trailer,
                    size => Chunk::Data(size),
                };
            }
            Chunk::Data(left) => {
                if *produced == out.len() || buf.is_empty() {
                    return Ok(false);
                }
                let n = copy(buf, &mut out[*produced..], left);
                *produced += n;
                *chunk = if n as u64 == left {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left - n as u64)
                };
            }
            Chunk::DataEnd => {
                let Some(empty) = take_line(buf, <[u8]>::is_empty)? else {
                    return Ok(false);
                };
                if !empty {
                    return Err("a chunk is longer than its size");
                }
                *chunk = Chunk::Size;
            }
            Chunk::Trailer => {
                let Some(empty) = take_line(buf, <[u8]>::is_empty)? else {
                    return Ok(false);
                };
                if empty {
                    return Ok(true);
                }
            }
        }
    }
}

/// A chunk-size line's size (its extensions ignored).
fn parse_chunk_size(line: &[u8]) -> Result<u64, &'static str> {
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or(line)
        .trim_ascii();
    // Fifteen hex digits cannot overflow.
    if digits.is_empty() || digits.len() > 15 {
        return Err("bad chunk size");
    }
    digits.iter().try_fold(0u64, |size, &b| {
        let digit = (b as char).to_digit(16).ok_or("bad chunk size")?;
        Ok(size << 4 | u64::from(digit))
    })
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("upstream body: {why}"))
}

/// An upstream's answer body; the connection goes back to the pool once
/// all of it was read, and is closed if the body is dropped before.
struct PlainBody {
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    client: Arc<PlainClient>,
    shard: usize,
}

impl PlainBody {
    fn finish(&mut self) {
        self.framing = Framing::Done;
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && conn.buf.is_empty()
        {
            self.client.give_back(self.shard, conn);
        }
    }
}

impl Read for PlainBody {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        // Looked at on every read, so the relay knows reads honour it.
        let wait = read_wait::current();
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Ok(0);
            };
            if let Some(n) = self.framing.decode(&mut conn.buf, out)? {
                if self.framing.is_done() {
                    self.finish();
                }
                return Ok(n);
            }
            let limit = match (wait, self.client.idle_timeout) {
                (Some(wait), Some(idle)) => Some(wait.min(idle)),
                (wait, idle) => wait.or(idle),
            };
            if limit.is_some_and(|l| l.is_zero()) {
                return Err(io::ErrorKind::TimedOut.into());
            }
            if conn.fill(limit, self.client.lean_above)? == 0 {
                if self.framing == Framing::UntilClose {
                    self.framing = Framing::Done;
                    self.conn = None;
                    return Ok(0);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "upstream closed the connection mid-answer",
                ));
            }
        }
    }
}

/// One connection to a plain upstream.
struct Conn {
    stream: TcpStream,
    authority: Box<str>,
    buf: Buf,
    /// The socket's timeouts as last set, to set them only on a change.
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl Conn {
    /// Reads what arrives within `timeout` (`TimedOut` if nothing does);
    /// 0 at the end of input. Waiting with nothing buffered while more
    /// than `lean_above` others wait too, it holds no buffer until bytes
    /// come (see `plain_tcp`).
    fn fill(&mut self, timeout: Option<Duration>, lean_above: usize) -> io::Result<usize> {
        let awaiting = self.buf.is_empty().then(|| Awaiting::start(lean_above));
        let mut peek_first = awaiting.as_ref().is_some_and(|a| a.lean);
        if peek_first {
            self.buf = Buf::default();
        }
        let started = Instant::now();
        let mut wanted = timeout;
        loop {
            if !plain_tcp::close_enough(self.read_timeout, wanted) {
                self.stream.set_read_timeout(wanted)?;
                self.read_timeout = wanted;
            }
            let read = if peek_first {
                self.stream.peek(&mut [0]).map(|_| None)
            } else {
                room(&mut self.buf)
                    .and_then(|room| self.stream.read(room))
                    .map(|n| {
                        self.buf.appended(n);
                        Some(n)
                    })
            };
            match read {
                // Something arrived (or the upstream closed): read it.
                Ok(None) => peek_first = false,
                Ok(Some(n)) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if let Some(limit) = timeout {
                        let left = limit.saturating_sub(started.elapsed());
                        if left.is_zero() {
                            return Err(io::ErrorKind::TimedOut.into());
                        }
                        wanted = Some(left);
                    }
                }
                Err(e) if plain_tcp::is_timeout(&e) => return Err(io::ErrorKind::TimedOut.into()),
                Err(e) => return Err(e),
            }
        }
    }
}

/// Hands `f` the next line of `buf` without its line end and consumes
/// it; `None` until a whole line is buffered.
fn take_line<R>(buf: &mut Buf, f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>, &'static str> {
    let filled = buf.filled();
    let end = filled
        .iter()
        .take(MAX_CHUNK_LINE + 1)
        .position(|&b| b == b'\n');
    let Some(at) = end else {
        // However the input was split, the same lines are too long.
        if filled.len() > MAX_CHUNK_LINE {
            return Err("a line too long");
        }
        return Ok(None);
    };
    let line = &filled[..at];
    let result = f(line.strip_suffix(b"\r").unwrap_or(line));
    buf.consume(at + 1);
    Ok(Some(result))
}

/// The free room of `buf`, which may grow to the head limit: more is
/// never buffered, whatever an upstream sends.
fn room(buf: &mut Buf) -> io::Result<&mut [u8]> {
    let room = buf.room(MAX_HEAD);
    if room.is_empty() {
        return Err(invalid("more buffered than a head may have"));
    }
    Ok(room)
}

/// How an answer that arrived in pieces ended, as the client reads it
/// (the `upstream_answer` fuzz target's view).
#[doc(hidden)]
#[derive(Debug, PartialEq)]
pub struct Replayed {
    /// The head's status, if a head was accepted.
    pub status: Option<u16>,
    /// The body bytes read, up to the end of the body or the failure.
    pub body: Vec<u8>,
    /// How it ended: `Ok(true)` the body's end, `Ok(false)` the input's
    /// end first (a head or body cut short), `Err` a refusal.
    pub end: Result<bool, String>,
    /// The declared length, when the body is framed by one.
    pub declared: Option<u64>,
}

/// Reads an answer from `pieces`, one after the other as reads would
/// return them, through the same head parser, buffer and body decoder the
/// client uses. The buffer never holds more than the head limit.
#[doc(hidden)]
pub fn replay_answer(pieces: &[&[u8]]) -> Replayed {
    let mut buf = Buf::default();
    let mut answer: Option<Answer> = None;
    let mut replayed = Replayed {
        status: None,
        body: Vec::new(),
        end: Ok(false),
        declared: None,
    };
    let mut out = [0u8; 7];
    for piece in pieces {
        let mut piece = *piece;
        while !piece.is_empty() {
            let room = match room(&mut buf) {
                Ok(room) => room,
                Err(e) => {
                    replayed.end = Err(e.to_string());
                    return replayed;
                }
            };
            let n = room.len().min(piece.len());
            room[..n].copy_from_slice(&piece[..n]);
            buf.appended(n);
            piece = &piece[n..];
            assert!(
                buf.capacity() <= MAX_HEAD,
                "the buffer outgrew the head limit"
            );
            if answer.is_none() {
                match parse_head(&mut buf) {
                    Ok(Some(head)) => {
                        replayed.status = Some(head.status);
                        if let Framing::Length(n) = head.framing {
                            replayed.declared = Some(n);
                        }
                        answer = Some(head);
                    }
                    Ok(None) if buf.filled().len() >= MAX_HEAD => {
                        replayed.end = Err("answer head over 64 KiB".into());
                        return replayed;
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        replayed.end = Err(format!("{e:?}"));
                        return replayed;
                    }
                }
            }
            let framing = &mut answer.as_mut().expect("parsed above").framing;
            loop {
                match framing.decode(&mut buf, &mut out) {
                    Ok(Some(0)) => {
                        replayed.end = Ok(true);
                        return replayed;
                    }
                    Ok(Some(n)) => replayed.body.extend_from_slice(&out[..n]),
                    Ok(None) => break,
                    Err(e) => {
                        replayed.end = Err(e.to_string());
                        return replayed;
                    }
                }
            }
        }
    }
    // The input's end: the end of a body read until the close.
    if answer.is_some_and(|a| a.framing == Framing::UntilClose) {
        replayed.end = Ok(true);
    }
    replayed
}

#[cfg(test)]
mod tests;
