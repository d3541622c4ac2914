//! Writing responses: whole bodies with `Content-Length`, streams as
//! chunked transfer coding with one flush per event.
//!
//! Each write goes out as a single `write_all` of a fully framed buffer,
//! so with `TCP_NODELAY` an SSE event leaves the machine when it is
//! produced, not when a buffer fills.

use std::cell::RefCell;
use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Facts about one exchange, filled in by the handler for the access log.
#[derive(Debug, Default, Clone)]
pub struct LogFields {
    /// Route template (`/v1/chat/completions`), never the raw path.
    pub route: &'static str,
    /// Provider that served the request.
    pub provider: Option<&'static str>,
    /// Model the client asked for.
    pub model: Option<String>,
    /// Extra `key=value` facts (cache status, error kind).
    pub note: Option<String>,
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
}

/// Writes the one response to one request.
pub struct Responder<'a> {
    stream: &'a mut TcpStream,
    stopping: &'a AtomicBool,
    state: ResponseState,
    keep_alive: bool,
    head_only: bool,
    status: u16,
    bytes: u64,
    /// Access-log facts set by the handler.
    pub log: LogFields,
}

impl<'a> Responder<'a> {
    pub(crate) fn new(
        stream: &'a mut TcpStream,
        stopping: &'a AtomicBool,
        keep_alive: bool,
        head_only: bool,
    ) -> Self {
        Self {
            stream,
            stopping,
            state: ResponseState::Pending,
            keep_alive,
            head_only,
            status: 0,
            bytes: 0,
            log: LogFields::default(),
        }
    }

    /// Status sent (0 if none yet).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Body bytes written.
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

    /// Makes the server close the connection after this response.
    pub fn close_after(&mut self) {
        self.keep_alive = false;
    }

    /// Sends a whole response.
    pub fn send(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> io::Result<()> {
        if self.state != ResponseState::Pending {
            return Err(io::Error::other("response already started"));
        }
        let mut buf = Vec::with_capacity(256 + body.len());
        self.write_head(&mut buf, status, headers, Some(body.len()));
        if !self.head_only {
            buf.extend_from_slice(body);
        }
        self.state = ResponseState::Done;
        self.bytes = body.len() as u64;
        self.stream.write_all(&buf)
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

    /// Starts a chunked (streamed) response; write events with
    /// [`ChunkWriter::send`] and end it with [`ChunkWriter::finish`].
    pub fn start_stream(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
    ) -> io::Result<ChunkWriter<'_, 'a>> {
        if self.state != ResponseState::Pending {
            return Err(io::Error::other("response already started"));
        }
        let mut buf = Vec::with_capacity(256);
        self.write_head(&mut buf, status, headers, None);
        self.state = ResponseState::Streaming;
        self.stream.write_all(&buf)?;
        Ok(ChunkWriter {
            responder: self,
            buf: Vec::with_capacity(1024),
        })
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
        buf.extend_from_slice(status.to_string().as_bytes());
        buf.push(b' ');
        buf.extend_from_slice(reason(status).as_bytes());
        buf.extend_from_slice(b"\r\nDate: ");
        with_http_date(|d| buf.extend_from_slice(d.as_bytes()));
        buf.extend_from_slice(b"\r\nServer: aiproxy\r\n");
        for (name, value) in headers {
            // Header values come from our own code, but a value copied from
            // upstream must never be able to inject a second header.
            if value.bytes().any(|b| b == b'\r' || b == b'\n') {
                continue;
            }
            buf.extend_from_slice(name.as_bytes());
            buf.extend_from_slice(b": ");
            buf.extend_from_slice(value.as_bytes());
            buf.extend_from_slice(b"\r\n");
        }
        match len {
            Some(n) => {
                buf.extend_from_slice(b"Content-Length: ");
                buf.extend_from_slice(n.to_string().as_bytes());
                buf.extend_from_slice(b"\r\n");
            }
            None if !self.head_only => buf.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
            None => {}
        }
        // A server that is draining tells every client it is closing.
        if self.stopping.load(Ordering::Relaxed) {
            self.keep_alive = false;
        }
        if !self.keep_alive || len.is_none() && self.head_only {
            self.keep_alive = false;
            buf.extend_from_slice(b"Connection: close\r\n");
        }
        buf.extend_from_slice(b"\r\n");
    }
}

/// The body writer of a streamed response.
pub struct ChunkWriter<'r, 'a> {
    responder: &'r mut Responder<'a>,
    buf: Vec<u8>,
}

impl ChunkWriter<'_, '_> {
    /// Sends `data` as one chunk and flushes it to the client.
    /// An error means the client is gone: stop producing.
    pub fn send(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() || self.responder.head_only {
            return Ok(());
        }
        self.buf.clear();
        self.buf
            .extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        self.buf.extend_from_slice(data);
        self.buf.extend_from_slice(b"\r\n");
        self.responder.bytes += data.len() as u64;
        self.responder.stream.write_all(&self.buf)
    }

    /// Ends the body with the terminating chunk.
    pub fn finish(self) -> io::Result<()> {
        self.responder.state = ResponseState::Done;
        if self.responder.head_only {
            return Ok(());
        }
        self.responder.stream.write_all(b"0\r\n\r\n")
    }
}

/// Reason phrase for the statuses aiproxy sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        415 => "Unsupported Media Type",
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
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nServer: aiproxy\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n{extra}\r\n",
        reason(status),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
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
            *cache = (now, http_date(now));
        }
        f(&cache.1);
    });
}

/// Formats Unix seconds as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn http_date(secs: u64) -> String {
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(secs / 86_400 % 7) as usize];
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(m - 1) as usize];
    let t = secs % 86_400;
    format!(
        "{weekday}, {d:02} {month} {y} {:02}:{:02}:{:02} GMT",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

/// Formats Unix milliseconds as RFC 3339 UTC (`2026-11-26T15:07:40.123Z`).
pub fn rfc3339(millis: u64) -> String {
    let secs = millis / 1000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let t = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        t / 3600,
        t / 60 % 60,
        t % 60,
        millis % 1000
    )
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_dates() {
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(rfc3339(1_795_705_660_123), "2026-11-26T15:07:40.123Z");
    }

    #[test]
    fn simple_error_is_a_complete_response() {
        let raw = String::from_utf8(simple_error(503, "busy", "Retry-After: 1\r\n")).unwrap();
        assert!(raw.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(raw.contains("Retry-After: 1\r\n"));
        let (_, body) = raw.split_once("\r\n\r\n").unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["message"], "busy");
    }
}
