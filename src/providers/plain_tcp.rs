//! ureq's connections to plain `http://` upstreams, with page-sized buffers.
//!
//! Inference calls to such upstreams go through our own client
//! ([`super::plain_http`]); this transport carries ureq's other calls to
//! them (model lists, health checks) and shares its wait accounting and
//! connect logic with that client.
//!
//! ureq's own TCP transport keeps an input buffer that must hold 10 KiB of
//! scratch space for sending a body besides what it reads, and an output
//! buffer of fixed size: 18 KiB per connection as configured, zeroed when
//! the connection is made. With every worker holding one upstream
//! connection, that was a third of what a request in flight costs (10,000
//! requests: 174 MiB of 591). Here both buffers start at one page, as
//! nginx's `proxy_buffer_size` does, and the input buffer grows (doubling)
//! only when what is buffered fills it: a response head larger than a page,
//! which nginx refuses by default and this accepts up to ureq's
//! `max_response_header_size`. A body is sent a page at a time. While
//! hundreds of exchanges wait for their upstreams (answers to begin,
//! streams' next events), neither buffer is held during a wait with
//! nothing buffered: both are freed, and the input buffer is made again
//! when bytes arrive (see `await_input`).
//!
//! It also spares the system calls ureq's transport makes on every
//! exchange (ten for a small request, four here): ureq writes the head
//! and the body separately, and both go out in one send when the answer
//! is awaited; the pool's probes of an idle connection peek without
//! switching the socket's mode; and a read timeout that is where it
//! should be to within a thousandth is not set again.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ureq::Error;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, NextTimeout, ShutdownHandle, Transport,
};

/// The size both buffers start at.
pub(super) const PAGE: usize = 4096;

/// Output is held back (until the answer is awaited) only while at least
/// this much room is left after it, so that ureq is never handed an
/// output buffer too small for a body chunk and its framing.
const MIN_OUTPUT_ROOM: usize = 1024;

/// The most the input buffer grows to (ureq's own default size): with it
/// full, a read finds no room and the exchange fails as one that made no
/// progress, whatever an upstream sends.
const MAX_INPUT: usize = 128 * 1024;

/// Reads (of this process) waiting for an upstream with nothing of its
/// answer buffered: for an answer to begin, or for a stream's next event.
static AWAITING: AtomicUsize = AtomicUsize::new(0);

/// Beyond this many reads waiting, a waiting read holds no buffer (see
/// `await_input`). Below it the buffers stay, which spares each wait a
/// system call and an allocation, and cost at most 2 MiB.
pub(super) const LEAN_ABOVE: usize = 256;

/// Counts a read as waiting while alive.
pub(super) struct Awaiting {
    /// `lean_above` others were waiting already when it began.
    pub(super) lean: bool,
}

impl Awaiting {
    pub(super) fn start(lean_above: usize) -> Self {
        let before = AWAITING.fetch_add(1, Ordering::Relaxed);
        Self {
            lean: before >= lean_above,
        }
    }
}

impl Drop for Awaiting {
    fn drop(&mut self) {
        AWAITING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Connects plain TCP to the upstream (the first link of a chain).
#[derive(Debug, Default)]
pub struct PlainConnector;

impl Connector<()> for PlainConnector {
    type Out = PlainTransport;

    fn connect(
        &self,
        details: &ConnectionDetails,
        _: Option<()>,
    ) -> Result<Option<Self::Out>, Error> {
        let stream = match connect_any(&details.addrs, details.timeout.not_zero().map(|t| *t)) {
            Ok(stream) => stream,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(Error::Timeout(details.timeout.reason));
            }
            Err(e) => return Err(e.into()),
        };
        if details.config.no_delay() {
            stream.set_nodelay(true)?;
        }
        let stream = Arc::new(stream);
        // The agent shuts registered connections down when it is dropped.
        (details.register_shutdown)(Arc::downgrade(&stream) as Weak<dyn ShutdownHandle>)?;
        Ok(Some(PlainTransport {
            stream,
            buffers: PageBuffers::default(),
            read_timeout: None,
            write_timeout: None,
            send_timeout: NextTimeout::default(),
            lean_above: LEAN_ABOVE,
        }))
    }
}

/// Tries the resolved addresses in order within the connect timeout,
/// going on to the next only when one refuses or cannot be reached; a
/// timeout is `TimedOut`.
pub(super) fn connect_any(
    addrs: &[SocketAddr],
    timeout: Option<Duration>,
) -> io::Result<TcpStream> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut last = None;
    for addr in addrs {
        let attempt = match deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                TcpStream::connect_timeout(addr, left)
            }
            None => TcpStream::connect(addr),
        };
        match attempt {
            Ok(stream) => return Ok(stream),
            Err(e) if is_timeout(&e) => return Err(io::ErrorKind::TimedOut.into()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::HostUnreachable
                        | io::ErrorKind::NetworkUnreachable
                        | io::ErrorKind::AddrNotAvailable
                ) =>
            {
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::ErrorKind::ConnectionRefused.into()))
}

/// One connection to a plain upstream.
pub struct PlainTransport {
    /// Shared (weakly) with the agent, which may shut it down.
    stream: Arc<TcpStream>,
    buffers: PageBuffers,
    /// The socket's timeouts as last set, to set them only on a change.
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    /// The timeout ureq gave with the output still held back.
    send_timeout: NextTimeout,
    /// `LEAN_ABOVE`, but for tests.
    lean_above: usize,
}

impl std::fmt::Debug for PlainTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainTransport")
            .field("peer", &self.stream.peer_addr().ok())
            .finish()
    }
}

/// `after` as a socket timeout: `None` blocks for ever.
fn socket_timeout(timeout: &NextTimeout) -> Option<Duration> {
    timeout.not_zero().map(|t| *t)
}

impl Transport for PlainTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), Error> {
        self.buffers.unsent += amount;
        self.send_timeout = timeout;
        if self.buffers.output.len() - self.buffers.unsent < MIN_OUTPUT_ROOM {
            self.flush()?;
        }
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, Error> {
        self.flush()?;
        let timeout = timeout.for_read();
        if timeout.after.is_zero() {
            return Err(Error::Timeout(timeout.reason));
        }
        let limit = socket_timeout(&timeout);
        let started = Instant::now();
        // With nothing of the answer buffered (the request just went
        // out, or a stream's events so far were all taken), the read is
        // counted as waiting until it returns. When hundreds of others
        // wait too, it waits holding no buffer (both pages are freed, and
        // the input one made again when bytes come): with thousands of
        // requests or streams in flight, each waiting for a model, that
        // is up to 8 KiB less each, for one more system call (the peek)
        // and an allocation per wait. A read that needs more of what is
        // buffered keeps it.
        let awaiting = self
            .buffers
            .is_drained()
            .then(|| Awaiting::start(self.lean_above));
        let mut wait_first = awaiting.as_ref().is_some_and(|a| a.lean) && self.buffers.release();
        let mut wanted = limit;
        loop {
            if !close_enough(self.read_timeout, wanted) {
                self.stream.set_read_timeout(wanted)?;
                self.read_timeout = wanted;
            }
            let read = if wait_first {
                self.stream.peek(&mut [0]).map(|_| {
                    wait_first = false;
                    None
                })
            } else {
                (&*self.stream)
                    .read(self.buffers.input_append_buf())
                    .map(Some)
            };
            match read {
                // Something arrived (or the upstream closed): read it.
                Ok(None) => {}
                Ok(Some(n)) => {
                    self.buffers.input_appended(n);
                    return Ok(n > 0);
                }
                // A signal cut the wait short: wait for what is left of it.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if let Some(limit) = limit {
                        let left = limit.saturating_sub(started.elapsed());
                        if left.is_zero() {
                            return Err(Error::Timeout(timeout.reason));
                        }
                        wanted = Some(left);
                    }
                }
                Err(e) if is_timeout(&e) => return Err(Error::Timeout(timeout.reason)),
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn is_open(&mut self) -> bool {
        // Idle in the pool, the connection must have nothing to read: a
        // byte is garbage from the upstream, end of file or an error means
        // it was closed.
        crate::net::is_quiet(&self.stream)
    }
}

impl PlainTransport {
    /// Sends the output held back, within the timeout ureq gave with it.
    fn flush(&mut self) -> Result<(), Error> {
        if self.buffers.unsent == 0 {
            return Ok(());
        }
        let timeout = self.send_timeout.for_write();
        if timeout.after.is_zero() {
            return Err(Error::Timeout(timeout.reason));
        }
        let wanted = socket_timeout(&timeout);
        if !close_enough(self.write_timeout, wanted) {
            self.stream.set_write_timeout(wanted)?;
            self.write_timeout = wanted;
        }
        let unsent = std::mem::take(&mut self.buffers.unsent);
        match (&*self.stream).write_all(&self.buffers.output[..unsent]) {
            Ok(()) => Ok(()),
            Err(e) if is_timeout(&e) => Err(Error::Timeout(timeout.reason)),
            Err(e) => Err(e.into()),
        }
    }
}

/// Whether a socket timeout set to `set` will do for `wanted`: the same,
/// or both finite and apart by at most a thousandth of `wanted`. ureq
/// counts each exchange's timeouts down from when its phase began, so
/// they differ by microseconds from one exchange to the next; setting
/// each anew would cost a system call for nothing.
pub(super) fn close_enough(set: Option<Duration>, wanted: Option<Duration>) -> bool {
    match (set, wanted) {
        (Some(set), Some(wanted)) => set.abs_diff(wanted) <= wanted / 1000,
        (set, wanted) => set == wanted,
    }
}

/// A socket timeout expiring (`EAGAIN` on Linux).
pub(super) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Bytes read from a connection and not yet consumed, `data[start..end]`,
/// in a buffer made a page at a time: shared with [`super::plain_http`].
#[derive(Default)]
pub(super) struct Input {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl Input {
    /// What is buffered and not yet consumed.
    pub(super) fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub(super) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The buffer's size (what it holds, consumed or not, and its room).
    pub(super) fn capacity(&self) -> usize {
        self.data.len()
    }

    pub(super) fn consume(&mut self, amount: usize) {
        self.start += amount;
        assert!(self.start <= self.end);
    }

    /// `amount` bytes were written at the front of [`Self::room`].
    pub(super) fn appended(&mut self, amount: usize) {
        self.end += amount;
        assert!(self.end <= self.data.len());
    }

    /// The free room after what is buffered, made first: what is
    /// unconsumed moves to the front, and the buffer doubles (from a page,
    /// up to `max`) when that leaves none. Empty only with `max` bytes
    /// unconsumed.
    pub(super) fn room(&mut self, max: usize) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && self.end == self.data.len() {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.data.len() && self.data.len() < max {
            let size = (self.data.len() * 2).clamp(PAGE, max);
            self.data.resize(size, 0);
        }
        &mut self.data[self.end..]
    }
}

/// The input and output buffers of one connection.
#[derive(Default)]
struct PageBuffers {
    input: Input,
    /// Whether the last look at the input consumed some: if not, what is
    /// buffered is not enough and more must be read before looking again.
    progress: bool,
    /// What ureq wrote is `output[..unsent]`, held back until the answer
    /// is awaited; ureq writes on after it.
    output: Vec<u8>,
    unsent: usize,
}

impl PageBuffers {
    /// The output buffer is made when the connection first sends.
    fn allocate_output(&mut self) {
        if self.output.is_empty() {
            self.output = vec![0; PAGE];
        }
    }

    /// Whether nothing in the buffers is waiting to be sent or read.
    fn is_drained(&self) -> bool {
        self.unsent == 0 && self.input.is_empty()
    }

    /// Frees both buffers when nothing in them is waiting to be sent or
    /// read; says whether it did.
    fn release(&mut self) -> bool {
        if !self.is_drained() {
            return false;
        }
        self.input = Input::default();
        self.output = Vec::new();
        true
    }
}

impl Buffers for PageBuffers {
    fn output(&mut self) -> &mut [u8] {
        self.allocate_output();
        &mut self.output[self.unsent..]
    }

    fn input(&self) -> &[u8] {
        self.input.filled()
    }

    fn input_append_buf(&mut self) -> &mut [u8] {
        self.input.room(MAX_INPUT)
    }

    fn input_appended(&mut self, amount: usize) {
        self.input.appended(amount);
    }

    fn input_consume(&mut self, amount: usize) {
        self.progress = amount > 0;
        self.input.consume(amount);
    }

    fn tmp_and_output(&mut self) -> (&mut [u8], &mut [u8]) {
        // The scratch space a body is read into before it is framed.
        self.allocate_output();
        (self.input.room(MAX_INPUT), &mut self.output[self.unsent..])
    }

    fn can_use_input(&self) -> bool {
        // False while output is held back: ureq's `maybe_await_input`
        // (and a transport wrapping this one) then calls `await_input`,
        // which sends it.
        self.unsent == 0 && self.progress && !self.input.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::thread;
    use std::time::Duration;

    use ureq::unversioned::transport::{NextTimeout, Transport};

    use crate::config::Config;
    use crate::providers::http::Agents;

    /// Serves `answers` in turn on one connection, each after reading a
    /// request whose body is `Content-Length` long; returns the bodies
    /// received.
    fn upstream(answers: Vec<Vec<u8>>) -> (String, thread::JoinHandle<Vec<Vec<u8>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            let mut bodies = Vec::new();
            for answer in answers {
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                bodies.push(body);
                writer.write_all(&answer).unwrap();
            }
            bodies
        });
        (url, server)
    }

    fn answer(extra_head: &str, body: &[u8]) -> Vec<u8> {
        let mut a = format!(
            "HTTP/1.1 200 OK\r\n{extra_head}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        a.extend_from_slice(body);
        a
    }

    /// Bodies and heads larger than the buffers' first page go through
    /// whole, on one kept-alive connection, in both directions.
    #[test]
    fn more_than_a_page_passes_both_ways() {
        let big_head = format!("X-Padding: {}\r\n", "h".repeat(20_000));
        let big_body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let (url, server) = upstream(vec![
            answer(&big_head, b"first"),
            answer("", &big_body),
            answer("", b"third"),
        ]);
        let config = Config::default();
        let agents = Agents::new(&config).for_url("http://x/");
        let agent = agents.pick();

        let resp = agent.post(&url).send(&big_body[..]).unwrap();
        assert_eq!(resp.headers()["x-padding"].len(), 20_000);
        assert_eq!(resp.into_body().read_to_vec().unwrap(), b"first");
        let resp = agent.post(&url).send(&b"small"[..]).unwrap();
        let got = resp.into_body().with_config().limit(1 << 20).read_to_vec();
        assert_eq!(got.unwrap(), big_body);
        let resp = agent.post(&url).send(&big_body[..50_000]).unwrap();
        assert_eq!(resp.into_body().read_to_vec().unwrap(), b"third");

        let bodies = server.join().unwrap();
        assert_eq!(bodies[0], big_body);
        assert_eq!(bodies[1], b"small");
        assert_eq!(bodies[2], &big_body[..50_000]);
    }

    /// A body from a reader goes chunked, in pieces that each leave room
    /// for the framing after what is held back.
    #[test]
    fn a_chunked_body_passes_whole() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while line != "\r\n" {
                line.clear();
                reader.read_line(&mut line).unwrap();
            }
            let mut body = Vec::new();
            loop {
                line.clear();
                reader.read_line(&mut line).unwrap();
                let size = usize::from_str_radix(line.trim_end(), 16).unwrap();
                let mut chunk = vec![0; size + 2];
                reader.read_exact(&mut chunk).unwrap();
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
            (&stream).write_all(&answer("", b"done")).unwrap();
            body
        });
        let sent: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
        let config = Config::default();
        let agents = Agents::new(&config).for_url("http://x/");
        let resp = agents
            .pick()
            .post(&url)
            .send(ureq::SendBody::from_reader(&mut &sent[..]))
            .unwrap();
        assert_eq!(resp.into_body().read_to_vec().unwrap(), b"done");
        assert_eq!(server.join().unwrap(), sent);
    }

    /// The head and a small body are held back until the answer is
    /// awaited, then sent together.
    #[test]
    fn a_small_request_is_sent_when_the_answer_is_awaited() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut transport = connect_to(addr);
        let (mut server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let timeout = NextTimeout::default();
        for part in [&b"POST / HTTP/1.1\r\n\r\n"[..], b"body"] {
            let out = transport.buffers().output();
            out[..part.len()].copy_from_slice(part);
            transport.transmit_output(part.len(), timeout).unwrap();
        }
        let mut got = [0u8; 64];
        assert_eq!(
            server.read(&mut got).unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock,
            "sent before the answer was awaited"
        );
        server.set_nonblocking(false).unwrap();
        let waiter = thread::spawn(move || {
            let read = transport.maybe_await_input(NextTimeout::default());
            let input = transport.buffers().input().to_vec();
            (read.unwrap(), input, transport)
        });
        let mut request = Vec::new();
        while request.len() < 23 {
            let n = server.read(&mut got).unwrap();
            request.extend_from_slice(&got[..n]);
        }
        assert_eq!(request, b"POST / HTTP/1.1\r\n\r\nbody");
        server.write_all(b"HTTP/1.1 200 OK\r\n").unwrap();
        let (progress, input, transport) = waiter.join().unwrap();
        assert!(progress);
        assert_eq!(input, b"HTTP/1.1 200 OK\r\n");
        // The request's page was freed for the wait, and the answer was
        // read into a buffer made for it.
        assert!(transport.buffers.output.is_empty());
        assert_eq!(transport.buffers.input.capacity(), super::PAGE);
    }

    /// Sends a request through `transport` (held back, as ureq leaves it).
    fn hold_request(transport: &mut super::PlainTransport) {
        let request = b"GET / HTTP/1.1\r\n\r\n";
        transport.buffers().output()[..request.len()].copy_from_slice(request);
        transport
            .transmit_output(request.len(), NextTimeout::default())
            .unwrap();
    }

    /// While few requests wait for answers, a waiting request keeps its
    /// buffers (and is spared the peek).
    #[test]
    fn a_wait_is_lean_only_when_many_wait() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut transport = connect_to(listener.local_addr().unwrap());
        transport.lean_above = usize::MAX;
        let (mut server, _) = listener.accept().unwrap();
        hold_request(&mut transport);
        let answerer = thread::spawn(move || {
            let mut request = [0u8; 18];
            server.read_exact(&mut request).unwrap();
            server.write_all(b"HTTP/1.1 200 OK\r\n").unwrap();
        });
        assert!(transport.maybe_await_input(NextTimeout::default()).unwrap());
        answerer.join().unwrap();
        assert_eq!(transport.buffers.output.len(), super::PAGE, "kept");
    }

    /// A stream's wait for its next event, with all it read taken, is
    /// lean too when many wait (the buffer is made afresh, a page, for
    /// what comes), and keeps its buffer when few do.
    #[test]
    fn a_wait_for_more_of_a_stream_is_lean_when_many_wait() {
        for (lean_above, lean) in [(0, true), (usize::MAX, false)] {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let mut transport = connect_to(listener.local_addr().unwrap());
            transport.lean_above = lean_above;
            let (mut server, _) = listener.accept().unwrap();
            // What an earlier, larger read left: a grown buffer, all taken.
            transport.buffers.input.data = vec![0; 2 * super::PAGE];
            let sender = thread::spawn(move || server.write_all(b"data: x\n\n").unwrap());
            assert!(transport.maybe_await_input(NextTimeout::default()).unwrap());
            sender.join().unwrap();
            assert_eq!(transport.buffers().input(), b"data: x\n\n");
            let expected = if lean { super::PAGE } else { 2 * super::PAGE };
            assert_eq!(transport.buffers.input.capacity(), expected, "lean: {lean}");
        }
    }

    /// An upstream that closes instead of answering ends the wait with no
    /// input, not an error.
    #[test]
    fn an_upstream_closing_instead_of_answering_is_seen() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut transport = connect_to(listener.local_addr().unwrap());
        let (mut server, _) = listener.accept().unwrap();
        hold_request(&mut transport);
        let closer = thread::spawn(move || {
            let mut request = [0u8; 18];
            server.read_exact(&mut request).unwrap();
        });
        assert!(!transport.maybe_await_input(NextTimeout::default()).unwrap());
        closer.join().unwrap();
    }

    /// A request that leaves too little room behind it goes out at once.
    #[test]
    fn output_that_fills_the_page_is_sent_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut transport = connect_to(listener.local_addr().unwrap());
        let (mut server, _) = listener.accept().unwrap();
        let len = super::PAGE - super::MIN_OUTPUT_ROOM + 1;
        transport.buffers().output()[..len].fill(b'x');
        transport
            .transmit_output(len, NextTimeout::default())
            .unwrap();
        assert_eq!(transport.buffers().output().len(), super::PAGE);
        let mut got = vec![0; len];
        server.read_exact(&mut got).unwrap();
        assert!(got.iter().all(|&b| b == b'x'));
    }

    #[test]
    fn a_timeout_within_a_thousandth_is_kept() {
        use super::close_enough;
        let s = |ms| Some(Duration::from_millis(ms));
        assert!(close_enough(s(120_000), s(119_990)));
        assert!(close_enough(s(120_000), s(120_100)));
        assert!(!close_enough(s(120_000), s(119_000)));
        assert!(!close_enough(s(100), s(99)));
        assert!(close_enough(None, None));
        assert!(!close_enough(None, s(5)));
        assert!(!close_enough(s(5), None));
    }

    /// A transport connected to `addr` as ureq would make it, except
    /// that every wait for an answer is lean.
    fn connect_to(addr: std::net::SocketAddr) -> super::PlainTransport {
        super::PlainTransport {
            stream: std::sync::Arc::new(std::net::TcpStream::connect(addr).unwrap()),
            buffers: super::PageBuffers::default(),
            read_timeout: None,
            write_timeout: None,
            send_timeout: NextTimeout::default(),
            lean_above: 0,
        }
    }

    /// An upstream that sends a head without end is refused once the head
    /// passes ureq's limit, and the buffer stops growing.
    #[test]
    fn an_endless_head_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n");
            // Long lines: the size limit comes long before the count of
            // header fields (ureq's other refusal) could.
            let line = format!("X-More: {}\r\n", "m".repeat(8000));
            for _ in 0..125 {
                if stream.write_all(line.as_bytes()).is_err() {
                    break;
                }
            }
        });
        let config = Config::default();
        let agents = Agents::new(&config).for_url("http://x/");
        let err = agents.pick().get(&url).call().unwrap_err();
        assert!(
            matches!(err, ureq::Error::LargeResponseHeader(..)),
            "{err:?}"
        );
        server.join().unwrap();
    }

    /// An upstream that never answers times out as configured.
    #[test]
    fn a_silent_upstream_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut config = Config::default();
        config.upstream.timeout = std::time::Duration::from_millis(200);
        let agents = Agents::new(&config).for_url("http://x/");
        let started = std::time::Instant::now();
        let err = agents.pick().get(&url).call().unwrap_err();
        assert!(matches!(
            crate::providers::http::map_error(err),
            crate::providers::UpstreamError::Timeout(_)
        ),);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        drop(listener);
    }

    /// A refused connection is reported as one, not as a timeout.
    #[test]
    fn a_refused_connection_is_a_connect_error() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = Config::default();
        let agents = Agents::new(&config).for_url("http://x/");
        let err = agents
            .pick()
            .get(format!("http://127.0.0.1:{port}/"))
            .call()
            .unwrap_err();
        assert!(matches!(
            crate::providers::http::map_error(err),
            crate::providers::UpstreamError::Connect(_)
        ),);
    }
}
