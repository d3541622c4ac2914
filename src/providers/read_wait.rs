//! How long one read of an upstream body may block, set per thread.
//!
//! A worker relaying a stream must send keep-alives while the upstream is
//! silent, and should write every event that has already arrived in one
//! go. Both need reads that give up after a while instead of blocking:
//! with a [`ReadWait`] in force, a read of a body from the shared agent
//! (and of the mock provider's streams) that finds nothing within the
//! wait fails with [`io::ErrorKind::TimedOut`] and can simply be made
//! again; a zero wait returns only what is already buffered. The wait is
//! thread-local because ureq fixes a request's timeouts when it is sent,
//! and a stream needs a different wait before every read.
//!
//! Bodies from elsewhere (a host's own provider) may ignore the wait and
//! block; [`ReadWait::honoured`] tells the two apart, so the relay only
//! batches reads that it knows will not block.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::time::Duration;

use ureq::Error;
use ureq::unversioned::transport::{Buffers, ConnectionDetails, Connector, NextTimeout, Transport};

thread_local! {
    /// The wait in force on this thread, if any.
    static WAIT: Cell<Option<Duration>> = const { Cell::new(None) };
    /// Whether a read since the wait was set looked at it.
    static HONOURED: Cell<bool> = const { Cell::new(false) };
}

/// Bounds every upstream body read on this thread until dropped. It
/// stays on the thread it was started on (not `Send`): dropped elsewhere,
/// it would clear another thread's wait.
pub struct ReadWait(PhantomData<*const ()>);

impl ReadWait {
    /// Starts bounding reads on this thread by `wait`.
    pub fn start(wait: Duration) -> Self {
        WAIT.set(Some(wait));
        HONOURED.set(false);
        ReadWait(PhantomData)
    }

    /// Bounds the next reads by `wait` instead.
    pub fn set(&self, wait: Duration) {
        WAIT.set(Some(wait));
    }

    /// Whether a read made under this wait respected it: only then does
    /// a zero wait return at once.
    pub fn honoured(&self) -> bool {
        HONOURED.get()
    }
}

impl Drop for ReadWait {
    fn drop(&mut self) {
        WAIT.set(None);
        HONOURED.set(false);
    }
}

/// The wait a read on this thread must respect, noting that it was seen.
pub fn current() -> Option<Duration> {
    let wait = WAIT.get();
    if wait.is_some() {
        HONOURED.set(true);
    }
    wait
}

/// Whether a body read failed because its wait (or the upstream's idle
/// timeout) ran out: ureq reports its timeouts wrapped in `Other`.
pub fn timed_out(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::TimedOut
        || e.get_ref()
            .and_then(|inner| inner.downcast_ref::<Error>())
            .is_some_and(|inner| matches!(inner, Error::Timeout(_)))
}

/// The last link of the agent's connector chain: wraps each connection so
/// that its reads respect the thread's [`ReadWait`].
#[derive(Debug)]
pub struct WaitConnector;

impl<In: Transport> Connector<In> for WaitConnector {
    type Out = Waiting<In>;

    fn connect(
        &self,
        _: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, Error> {
        Ok(chained.map(Waiting))
    }
}

/// A connection whose reads respect the thread's [`ReadWait`].
pub struct Waiting<T>(T);

impl<T> fmt::Debug for Waiting<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Waiting")
    }
}

impl<T: Transport> Transport for Waiting<T> {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.0.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), Error> {
        self.0.transmit_output(amount, timeout)
    }

    fn await_input(&mut self, mut timeout: NextTimeout) -> Result<bool, Error> {
        if let Some(wait) = current() {
            let per_read = timeout.per_read.map_or(wait, |p| wait.min(*p));
            timeout.per_read = Some(per_read.into());
        }
        self.0.await_input(timeout)
    }

    fn is_open(&mut self) -> bool {
        self.0.is_open()
    }

    fn is_tls(&self) -> bool {
        self.0.is_tls()
    }
}

/// The relay depends on this of an upstream body, whichever client read
/// it: a read that gave up within its wait leaves the body intact for the
/// next read, and a zero wait returns what is buffered without blocking.
/// `open` asks the upstream at the address it is given and returns the
/// answer's body; the upstream sends a chunk, pauses, then the rest.
#[cfg(test)]
pub(crate) fn check_resumable_body(open: impl FnOnce(std::net::SocketAddr) -> Box<dyn io::Read>) {
    use std::io::{Read, Write};
    use std::time::Instant;

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (release, paused) = crossbeam_channel::bounded::<()>(0);
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut head = [0u8; 4096];
        let _ = s.read(&mut head).unwrap();
        s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            .unwrap();
        paused.recv().unwrap();
        s.write_all(b"6\r\nsecond\r\n0\r\n\r\n").unwrap();
    });
    let mut body = open(addr);
    let wait = ReadWait::start(Duration::from_millis(50));
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    // "first" may need more than one read; then the pause times out.
    let paused_read = loop {
        match body.read(&mut buf) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break e,
        }
    };
    assert!(timed_out(&paused_read), "{paused_read:?}");
    assert_eq!(got, b"first");
    assert!(wait.honoured());
    wait.set(Duration::ZERO);
    let started = Instant::now();
    assert!(body.read(&mut buf).is_err_and(|e| timed_out(&e)));
    assert!(started.elapsed() < Duration::from_millis(40));
    release.send(()).unwrap();
    wait.set(Duration::from_secs(5));
    let mut rest = Vec::new();
    body.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"second");
    server.join().unwrap();
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Config;
    use crate::providers::http::Agents;

    /// ureq's bodies keep the relay's contract (`check_resumable_body`).
    #[test]
    fn a_ureq_body_read_that_timed_out_resumes_where_it_was() {
        let config = Config::default();
        let agents = Agents::new(&config).for_url("http://x/");
        check_resumable_body(|addr| {
            let resp = agents.pick().get(format!("http://{addr}/")).call().unwrap();
            Box::new(resp.into_body().into_reader())
        });
    }

    #[test]
    fn without_a_wait_nothing_is_honoured() {
        assert_eq!(current(), None);
        let wait = ReadWait::start(Duration::from_millis(5));
        assert!(!wait.honoured());
        assert_eq!(current(), Some(Duration::from_millis(5)));
        assert!(wait.honoured());
        drop(wait);
        assert_eq!(current(), None);
    }
}
