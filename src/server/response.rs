//! Writing responses: whole bodies with `Content-Length`, streams as
//! chunked transfer coding (HTTP/1.1) or delimited by close (HTTP/1.0),
//! with one flush per event.
//!
//! Each write goes out as a single fully framed buffer, so with
//! `TCP_NODELAY` an SSE event leaves the machine when it is produced, not
//! when a buffer fills. Every write has a total deadline (`send_timeout`),
//! not a per-syscall one: a client that reads one byte a second cannot
//! stretch it. The first failed or late write marks the response broken;
//! the server then closes the connection at once, so a cut-off response is
//! never followed by another one on the same wire.

use std::cell::RefCell;
use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::upgrade::Upgraded;

/// Facts about one exchange for the access log, in the handler's words:
/// the server knows only that there is a route template and named notes.
#[derive(Debug, Default, Clone)]
pub struct LogFields {
    /// Route template (`/v1/chat/completions`), never the raw path.
    pub route: &'static str,
    notes: Vec<(&'static str, String)>,
}

impl LogFields {
    /// Sets note `key` (replacing an earlier value).
    pub fn set(&mut self, key: &'static str, value: impl Into<String>) {
        let value = value.into();
        match self.notes.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.notes.push((key, value)),
        }
    }

    /// Note `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.notes
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A finished exchange as the server saw it, for the access log.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The status sent, or 499 when the client went away first.
    pub status: u16,
    /// Body bytes the client was given.
    pub bytes: u64,
    /// What the handler noted.
    pub fields: LogFields,
}

/// Where a response is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseState {
    /// Nothing written yet.
    Pending,
    /// Head written, streaming body in progress.
    Streaming,
    /// Response complete.
    Done,
    /// A write failed or missed its deadline: the client is gone or
    /// stuck, and the connection will be closed.
    Broken,
    /// `101 Switching Protocols` was sent: the connection now belongs to
    /// an [`Upgraded`] protocol.
    Upgraded,
}

/// Status logged for a response the client went away from before it was
/// complete, as nginx logs it.
pub const CLIENT_CLOSED: u16 = 499;

/// How the server is stopping, as a response sees it.
pub(crate) struct Drain<'a> {
    /// Draining has begun: answer with `Connection: close`.
    pub stopping: &'a AtomicBool,
    /// The drain deadline passed: streams should end now.
    pub cut: &'a AtomicBool,
}

/// Writes the one response to one request.
pub struct Responder<'a> {
    stream: &'a mut TcpStream,
    drain: Drain<'a>,
    state: ResponseState,
    keep_alive: bool,
    head_only: bool,
    http10: bool,
    send_timeout: Duration,
    /// The socket is in blocking mode (see [`write_all_by`]).
    blocking: bool,
    status: u16,
    /// Body bytes the client was given (written to the socket).
    bytes: u64,
    /// Header fields added to whatever response is written.
    added: Vec<(&'static str, String)>,
    /// The protocol that takes over after a 101.
    upgraded: Option<Box<dyn Upgraded>>,
    /// Framing buffer of a stream, kept between its chunks.
    chunk: Vec<u8>,
    /// A stream's head is in `chunk`, not sent yet (see
    /// [`Responder::open_stream_held`]).
    held: bool,
    /// Access-log facts set by the handler.
    pub log: LogFields,
}

impl<'a> Responder<'a> {
    pub(crate) fn new(
        stream: &'a mut TcpStream,
        drain: Drain<'a>,
        keep_alive: bool,
        head_only: bool,
        http10: bool,
        send_timeout: Duration,
        blocking: bool,
    ) -> Self {
        Self {
            stream,
            drain,
            state: ResponseState::Pending,
            keep_alive,
            head_only,
            http10,
            send_timeout,
            blocking,
            status: 0,
            bytes: 0,
            added: Vec::new(),
            upgraded: None,
            chunk: Vec::new(),
            held: false,
            log: LogFields::default(),
        }
    }

    /// Whether the socket is in blocking mode now (it must be made
    /// non-blocking again before the poller takes it back).
    pub(crate) fn socket_blocking(&self) -> bool {
        self.blocking
    }

    /// The exchange as the access log needs it; takes the handler's notes.
    pub(crate) fn exchange(&mut self) -> Exchange {
        Exchange {
            status: self.logged_status(),
            bytes: self.bytes,
            fields: std::mem::take(&mut self.log),
        }
    }

    /// Status sent (0 if none yet).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The status for the access log and metrics: the one sent, or 499
    /// when the client went away before the response was complete.
    pub fn logged_status(&self) -> u16 {
        match self.state {
            ResponseState::Broken => CLIENT_CLOSED,
            _ => self.status,
        }
    }

    /// Body bytes written to the client.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Where the response is in its life.
    pub fn state(&self) -> ResponseState {
        self.state
    }

    /// Whether the connection may serve another request afterwards.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive && self.state == ResponseState::Done
    }

    /// Adds a header field to the response, whichever part of the handler
    /// ends up writing it (CORS, `Vary`, `Allow`).
    pub fn add_header(&mut self, name: &'static str, value: String) {
        self.added.push((name, value));
    }

    /// Makes the server close the connection after this response.
    pub fn close_after(&mut self) {
        self.keep_alive = false;
    }

    /// Whether the server's drain deadline has passed: a long stream
    /// should end now, with an in-band error, rather than be cut mid-event.
    pub fn must_end(&self) -> bool {
        self.drain.cut.load(Ordering::Relaxed)
    }

    /// Whether the server is draining (shorter waits are in order).
    pub fn is_stopping(&self) -> bool {
        self.drain.stopping.load(Ordering::Relaxed)
    }

    /// Sends a whole response.
    pub fn send(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> io::Result<()> {
        if self.state != ResponseState::Pending {
            return Err(io::Error::other("response already started"));
        }
        // 1xx, 204 and 304 carry no body and no Content-Length (RFC 9110 §8.6).
        let bodiless = matches!(status, 100..=199 | 204 | 304);
        let mut buf = Vec::with_capacity(256 + body.len());
        self.write_head(&mut buf, status, headers, (!bodiless).then_some(body.len()));
        let head_len = buf.len();
        if !self.head_only && !bodiless {
            buf.extend_from_slice(body);
        }
        let written = self.write(&buf);
        self.bytes = written.saturating_sub(head_len) as u64;
        if self.state != ResponseState::Broken {
            self.state = ResponseState::Done;
        }
        self.result()
    }

    /// Sends a JSON body.
    pub fn send_json(
        &mut self,
        status: u16,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<()> {
        let mut headers = Vec::with_capacity(extra.len() + 1);
        headers.push(("Content-Type", "application/json"));
        headers.extend_from_slice(extra);
        self.send(status, &headers, body)
    }

    /// Starts a streamed response; write events with [`ChunkWriter::send`]
    /// and end it with [`ChunkWriter::finish`] (or use
    /// [`Responder::open_stream`] and its siblings, which borrow nothing).
    /// HTTP/1.0 clients get the body delimited by closing the connection,
    /// since they cannot read chunked coding.
    pub fn start_stream(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
    ) -> io::Result<ChunkWriter<'_, 'a>> {
        self.open_stream(status, headers)?;
        Ok(ChunkWriter { responder: self })
    }

    /// Sends the head of a streamed response (see [`Responder::start_stream`]).
    pub fn open_stream(&mut self, status: u16, headers: &[(&str, &str)]) -> io::Result<()> {
        self.open_stream_held(status, headers)?;
        self.flush_stream()
    }

    /// Starts a streamed response whose head waits for the first chunk
    /// (or the end, or [`Responder::flush_stream`]) and goes out in the
    /// same write: one system call and one segment fewer when the first
    /// events are at hand, as nginx's `postpone_output` does. The caller
    /// flushes before it waits for anything.
    pub fn open_stream_held(&mut self, status: u16, headers: &[(&str, &str)]) -> io::Result<()> {
        if self.state != ResponseState::Pending {
            return Err(io::Error::other("response already started"));
        }
        if self.http10 {
            self.keep_alive = false;
        }
        let mut buf = std::mem::take(&mut self.chunk);
        buf.clear();
        buf.reserve(256);
        self.write_head(&mut buf, status, headers, None);
        self.chunk = buf;
        self.held = true;
        self.state = ResponseState::Streaming;
        Ok(())
    }

    /// Sends a held head now (nothing when none is held).
    pub fn flush_stream(&mut self) -> io::Result<()> {
        self.write_chunk(&[], false)
    }

    /// Takes back a stream's head that was never sent, so that the
    /// response can start over (a handler that panicked between opening
    /// a stream and its first chunk still gets its client a 500). False
    /// when the head is out already.
    pub(crate) fn unsend_head(&mut self) -> bool {
        if !(self.held && self.state == ResponseState::Streaming) {
            return false;
        }
        self.held = false;
        self.chunk.clear();
        self.state = ResponseState::Pending;
        true
    }

    /// Sends `data` as one chunk of a streamed response and flushes it.
    /// An error means the client is gone: stop producing.
    pub fn send_chunk(&mut self, data: &[u8]) -> io::Result<()> {
        self.write_chunk(data, false)
    }

    /// Ends a streamed response: the terminating chunk, or nothing for
    /// HTTP/1.0, whose body ends when the connection closes.
    pub fn end_stream(&mut self) -> io::Result<()> {
        self.write_chunk(&[], true)
    }

    /// Sends `data` as the last chunk and ends the stream, in one write.
    pub fn end_stream_with(&mut self, data: &[u8]) -> io::Result<()> {
        self.write_chunk(data, true)
    }

    /// Writes `data` as a chunk (none when empty), then the terminating
    /// chunk if `last`, in one write.
    fn write_chunk(&mut self, data: &[u8], last: bool) -> io::Result<()> {
        if self.state != ResponseState::Streaming {
            return self.result();
        }
        let framed = !self.http10;
        let mut buf = std::mem::take(&mut self.chunk);
        if !std::mem::take(&mut self.held) {
            buf.clear();
        }
        let mut prefix = buf.len();
        if !data.is_empty() && !self.head_only {
            if framed {
                push_hex(&mut buf, data.len());
                buf.extend_from_slice(b"\r\n");
            }
            prefix = buf.len();
            buf.extend_from_slice(data);
            if framed {
                buf.extend_from_slice(b"\r\n");
            }
        }
        let body = buf.len();
        if last && framed && !self.head_only {
            buf.extend_from_slice(b"0\r\n\r\n");
        }
        if !buf.is_empty() {
            let written = self.write(&buf).min(body);
            self.bytes += written.saturating_sub(prefix).min(data.len()) as u64;
        }
        self.chunk = buf;
        if last && self.state != ResponseState::Broken {
            self.state = ResponseState::Done;
        }
        self.result()
    }

    /// Answers `101 Switching Protocols` with `headers` and hands the
    /// connection to `protocol` (see [`super::upgrade`]). Only for a
    /// request that asked to upgrade; the caller checks the handshake.
    pub fn upgrade(
        &mut self,
        headers: &[(&str, &str)],
        protocol: Box<dyn Upgraded>,
    ) -> io::Result<()> {
        if self.state != ResponseState::Pending || self.head_only {
            return Err(io::Error::other("response already started"));
        }
        self.status = 101;
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
        push_fields(&mut buf, headers.iter().copied());
        buf.extend_from_slice(b"\r\n");
        self.write(&buf);
        self.result()?;
        self.state = ResponseState::Upgraded;
        self.upgraded = Some(protocol);
        Ok(())
    }

    /// The protocol that takes the connection over, once.
    pub(crate) fn take_upgraded(&mut self) -> Option<Box<dyn Upgraded>> {
        self.upgraded.take()
    }

    fn result(&self) -> io::Result<()> {
        if self.state == ResponseState::Broken {
            Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "client went away or stopped reading",
            ))
        } else {
            Ok(())
        }
    }

    /// Writes all of `buf` within the send timeout; returns the bytes
    /// written. On failure the response is marked broken.
    fn write(&mut self, buf: &[u8]) -> usize {
        if self.state == ResponseState::Broken {
            return 0;
        }
        let deadline = Instant::now() + self.send_timeout;
        match write_all_by(self.stream, buf, deadline, &mut self.blocking) {
            Ok(()) => buf.len(),
            Err(written) => {
                self.state = ResponseState::Broken;
                self.keep_alive = false;
                written
            }
        }
    }

    fn write_head(
        &mut self,
        buf: &mut Vec<u8>,
        status: u16,
        headers: &[(&str, &str)],
        len: Option<usize>,
    ) {
        self.status = status;
        buf.extend_from_slice(b"HTTP/1.1 ");
        crate::decimal::push_decimal(buf, u64::from(status));
        buf.push(b' ');
        buf.extend_from_slice(reason(status).as_bytes());
        buf.extend_from_slice(b"\r\nDate: ");
        with_http_date(|d| buf.extend_from_slice(d.as_bytes()));
        buf.extend_from_slice(b"\r\nServer: aiproxy\r\n");
        let added = self.added.iter().map(|(n, v)| (*n, v.as_str()));
        push_fields(buf, headers.iter().copied().chain(added));
        let bodiless = matches!(status, 100..=199 | 204 | 304);
        match len {
            Some(n) => {
                buf.extend_from_slice(b"Content-Length: ");
                crate::decimal::push_decimal(buf, n as u64);
                buf.extend_from_slice(b"\r\n");
            }
            None if bodiless || self.head_only || self.http10 => {}
            None => buf.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        }
        // A server that is draining tells every client it is closing.
        if self.drain.stopping.load(Ordering::Relaxed) {
            self.keep_alive = false;
        }
        // A HEAD answer to a stream has no length to delimit it either.
        if len.is_none() && self.head_only && !bodiless {
            self.keep_alive = false;
        }
        if !self.keep_alive {
            buf.extend_from_slice(b"Connection: close\r\n");
        } else if self.http10 {
            // HTTP/1.0 closes unless told otherwise (RFC 9112 §9.3).
            buf.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        buf.extend_from_slice(b"\r\n");
    }
}

/// Appends `n` in lower-case hexadecimal (a chunk size), without the
/// allocation `format!` would make for every chunk.
fn push_hex(buf: &mut Vec<u8>, n: usize) {
    let digits = (usize::BITS - n.leading_zeros()).div_ceil(4).max(1);
    for shift in (0..digits).rev() {
        buf.push(b"0123456789abcdef"[(n >> (shift * 4)) & 0xf]);
    }
}

/// Writes all of `buf` before `deadline`. Each write is first tried
/// without waiting, whatever mode the socket is in, so while the client
/// keeps up the writes are the only system calls. When its buffer is full
/// the socket turns blocking (`blocking` records the mode) and the write
/// waits, its timeout set to what is left, so the deadline bounds the
/// whole buffer. On failure, returns how many bytes did go out.
pub(crate) fn write_all_by(
    stream: &mut TcpStream,
    buf: &[u8],
    deadline: Instant,
    blocking: &mut bool,
) -> Result<(), usize> {
    let mut written = 0;
    while written < buf.len() {
        match crate::net::send_now(stream, &buf[written..]) {
            Ok(0) => return Err(written),
            Ok(n) => {
                written += n;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return Err(written),
        }
        if !*blocking {
            if stream.set_nonblocking(false).is_err() {
                return Err(written);
            }
            *blocking = true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_write_timeout(Some(left)).is_err() {
            return Err(written);
        }
        match stream.write(&buf[written..]) {
            Ok(0) => return Err(written),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(written),
        }
    }
    Ok(())
}

/// The body writer of a streamed response.
pub struct ChunkWriter<'r, 'a> {
    responder: &'r mut Responder<'a>,
}

impl ChunkWriter<'_, '_> {
    /// Sends `data` as one chunk and flushes it to the client.
    /// An error means the client is gone: stop producing.
    pub fn send(&mut self, data: &[u8]) -> io::Result<()> {
        self.responder.send_chunk(data)
    }

    /// Whether the server's drain deadline has passed (see
    /// [`Responder::must_end`]).
    pub fn must_end(&self) -> bool {
        self.responder.must_end()
    }

    /// Whether the server is draining.
    pub fn is_stopping(&self) -> bool {
        self.responder.is_stopping()
    }

    /// Ends the body (see [`Responder::end_stream`]).
    pub fn finish(self) -> io::Result<()> {
        self.responder.end_stream()
    }
}

/// Reason phrase for the statuses aiproxy sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        529 => "Overloaded",
        _ => "Status",
    }
}

/// A minimal error response written by the server itself (before any
/// handler ran), always closing the connection.
pub fn simple_error(status: u16, message: &str, extra: &str) -> Vec<u8> {
    let body = format!(
        "{{\"error\":{{\"message\":{},\"type\":\"{}\",\"code\":{status}}}}}",
        json_string(message),
        if status >= 500 {
            "server_error"
        } else {
            "invalid_request_error"
        }
    );
    let mut out = Vec::with_capacity(256 + body.len());
    closing_head(&mut out, status, body.len());
    out.extend_from_slice(b"Content-Type: application/json\r\n");
    out.extend_from_slice(extra.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    out
}

/// A whole response that closes the connection: status, headers (values
/// with CR or LF are dropped) and body.
pub fn closing_response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + body.len());
    closing_head(&mut out, status, body.len());
    push_fields(&mut out, headers.iter().copied());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Appends `name: value` lines. Values come from our own code, but one
/// copied from upstream must never be able to inject a second field: a
/// value with CR or LF is dropped.
fn push_fields<'h>(buf: &mut Vec<u8>, fields: impl Iterator<Item = (&'h str, &'h str)>) {
    for (name, value) in fields {
        if value.bytes().any(|b| b == b'\r' || b == b'\n') {
            continue;
        }
        buf.extend_from_slice(name.as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(value.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
}

/// Status line, `Date`, `Server`, `Content-Length` and `Connection: close`.
fn closing_head(out: &mut Vec<u8>, status: u16, len: usize) {
    out.extend_from_slice(format!("HTTP/1.1 {status} {}\r\nDate: ", reason(status)).as_bytes());
    with_http_date(|d| out.extend_from_slice(d.as_bytes()));
    out.extend_from_slice(
        format!("\r\nServer: aiproxy\r\nContent-Length: {len}\r\nConnection: close\r\n").as_bytes(),
    );
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

thread_local! {
    static DATE_CACHE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Calls `f` with the current IMF-fixdate, formatted at most once per
/// second per thread.
fn with_http_date(f: impl FnOnce(&str)) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    DATE_CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != now {
            *cache = (now, crate::time::http_date(now));
        }
        f(&cache.1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_are_lower_case_hex() {
        for n in [
            0usize,
            1,
            9,
            10,
            15,
            16,
            255,
            256,
            4096,
            0xabcdef,
            usize::MAX,
        ] {
            let mut buf = b"x".to_vec();
            push_hex(&mut buf, n);
            assert_eq!(buf, format!("x{n:x}").into_bytes());
        }
    }

    #[test]
    fn simple_error_is_a_complete_response() {
        let raw = String::from_utf8(simple_error(503, "busy", "Retry-After: 1\r\n")).unwrap();
        assert!(raw.starts_with("HTTP/1.1 503 Service Unavailable\r\nDate: "));
        assert!(raw.contains("Retry-After: 1\r\n"));
        let (_, body) = raw.split_once("\r\n\r\n").unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["message"], "busy");
    }
}
