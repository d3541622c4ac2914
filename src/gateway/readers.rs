//! Threads that read streamed upstream bodies, kept between streams.
//!
//! A worker relaying a stream hands the upstream read to one of these so
//! that it can send keep-alives while the upstream is silent (a blocking
//! read cannot be interrupted, and a ureq read timeout ends the body).
//! Starting a thread per stream cost more than the handoff itself, so a
//! reader that finished waits a while for the next stream.

use std::io;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};

/// Stack of a reader thread: it only reads (TLS included) and sends.
const STACK_BYTES: usize = 128 * 1024;

/// How long an idle reader waits for another stream before it exits.
const IDLE_EXIT: Duration = Duration::from_secs(30);

type Job = Box<dyn FnOnce() + Send>;

/// The readers of one gateway. Dropping it lets idle readers exit at once.
pub(super) struct Readers {
    /// Zero capacity: a send succeeds only into an idle reader's hands.
    jobs: Sender<Job>,
    idle: Receiver<Job>,
}

impl Readers {
    pub(super) fn new() -> Self {
        let (jobs, idle) = crossbeam_channel::bounded(0);
        Readers { jobs, idle }
    }

    /// Runs `job` on an idle reader, or on a new one when none is idle.
    pub(super) fn run(&self, job: impl FnOnce() + Send + 'static) -> io::Result<()> {
        let job = match self.jobs.try_send(Box::new(job)) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => job,
        };
        let idle = self.idle.clone();
        thread::Builder::new()
            .name("aiproxy-stream".into())
            .stack_size(STACK_BYTES)
            .spawn(move || {
                job();
                while let Ok(job) = idle.recv_timeout(IDLE_EXIT) {
                    job();
                }
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_readers_are_reused() {
        let readers = Readers::new();
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut threads = std::collections::HashSet::new();
        for _ in 0..100 {
            let tx = tx.clone();
            readers
                .run(move || tx.send(thread::current().id()).unwrap())
                .unwrap();
            threads.insert(rx.recv().unwrap());
        }
        // A job that comes before the last reader is back waiting starts
        // another thread, so a few are expected; one each means no reuse.
        assert!(threads.len() < 20, "{} threads for 100 jobs", threads.len());
    }

    #[test]
    fn busy_readers_do_not_delay_a_new_job() {
        let readers = Readers::new();
        let (release, blocked) = crossbeam_channel::bounded::<()>(0);
        readers
            .run(move || {
                let _ = blocked.recv();
            })
            .unwrap();
        let (tx, rx) = crossbeam_channel::bounded(1);
        readers.run(move || tx.send(()).unwrap()).unwrap();
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the second job ran while the first reader was busy");
        release.send(()).unwrap();
    }
}
