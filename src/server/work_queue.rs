//! The queue from the poller to the workers.
//!
//! Jobs queue in order, but a worker that finds none parks on a slot of
//! its own, and the next job goes straight to the worker that parked
//! *last*. A general channel did both things worse here: crossbeam's
//! `recv` spins and calls `sched_yield` several times before it parks,
//! and on a busy two-core machine each yield is a context switch (0.6 per
//! forwarded request under wrk, all from there); and it wakes the worker
//! that has waited longest, so with a hundred workers every job landed on
//! the coldest stack of all, where the last one to park is still in the
//! caches.
//!
//! And while many workers are busy and finishing jobs often, a job may
//! wait for one of them to finish rather than wake a parked one
//! (`try_send` with `may_queue`): a worker that finds a job queued takes
//! it without sleeping, where waking a parked one costs two context
//! switches, a large share of what forwarding a request costs on a busy
//! machine. A job is not left waiting long: whoever sends jobs hands
//! those queued for longer than it allows to parked workers
//! (`hand_stale`).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// Jobs for the workers: at most `capacity` wait while no worker is free.
pub(super) struct WorkQueue<T> {
    state: Mutex<State<T>>,
    capacity: usize,
}

struct State<T> {
    /// Jobs with the time each was queued.
    queued: VecDeque<(Instant, T)>,
    /// Workers waiting for a job, the last to park on top.
    parked: Vec<Arc<Parking<T>>>,
    closed: bool,
}

/// Where one worker waits for its next job.
pub(super) struct Parking<T> {
    slot: Mutex<Slot<T>>,
    filled: Condvar,
}

enum Slot<T> {
    Empty,
    Job(T),
    Closed,
}

/// The sending side, held by the poller: dropping it closes the queue, so
/// that parked workers exit and busy ones do after their job.
pub(super) struct JobSender<T>(Arc<WorkQueue<T>>);

/// How a job reached its worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Handoff {
    /// Straight to a parked worker, which is busy from that moment on:
    /// the sender counts it so (a pool that counted it idle until it woke
    /// would queue the next job for it, start no worker for that one, and
    /// leave it waiting for some other job to end).
    ToParked,
    /// Into the queue, for the next worker that asks.
    Queued,
}

/// A queue and the handle that closes it when dropped.
pub(super) fn work_queue<T>(capacity: usize) -> (JobSender<T>, Arc<WorkQueue<T>>) {
    let queue = Arc::new(WorkQueue {
        state: Mutex::new(State {
            queued: VecDeque::new(),
            parked: Vec::new(),
            closed: false,
        }),
        capacity: capacity.max(1),
    });
    (JobSender(Arc::clone(&queue)), queue)
}

impl<T> WorkQueue<T> {
    fn state(&self) -> MutexGuard<'_, State<T>> {
        // Nothing panics while holding it; a poisoned lock is still sound.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Jobs waiting for a worker.
    pub(super) fn len(&self) -> usize {
        self.state().queued.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next job for the worker that waits at `parking`, waiting for
    /// one if none is queued; `None` once the queue is closed and empty.
    /// `taken` runs when a queued job is taken, under the queue's lock:
    /// whoever counts idle workers must see the job leave the queue and
    /// its worker turn busy as one step, or a job sent in between finds
    /// the worker still counted idle and queues with no one to take it.
    pub(super) fn recv(
        &self,
        parking: &Arc<Parking<T>>,
        taken: impl FnOnce(),
    ) -> Option<(T, Handoff)> {
        {
            let mut state = self.state();
            if let Some((_, job)) = state.queued.pop_front() {
                taken();
                return Some((job, Handoff::Queued));
            }
            if state.closed {
                return None;
            }
            state.parked.push(Arc::clone(parking));
        }
        parking.wait().map(|job| (job, Handoff::ToParked))
    }

    /// Hands the jobs queued before `cutoff`, oldest first, to parked
    /// workers; returns how many it handed, and how many such jobs are left
    /// for want of a parked worker.
    fn hand_stale(&self, cutoff: Instant) -> (usize, usize) {
        let (handed, left) = {
            let mut state = self.state();
            let handed = state.pair_off(|at| at < cutoff);
            let left = state.queued.iter().take_while(|(at, _)| *at < cutoff);
            (handed, left.count())
        };
        let count = handed.len();
        hand_out(handed);
        (count, left)
    }

    /// Closes the queue. Jobs may queue while workers are parked (see
    /// `try_send`), so parked workers take what is queued first, and each
    /// stops when it comes back to a queue that is closed and empty.
    fn close(&self) {
        let (handed, parked) = {
            let mut state = self.state();
            state.closed = true;
            let handed = state.pair_off(|_| true);
            (handed, std::mem::take(&mut state.parked))
        };
        hand_out(handed);
        for worker in parked {
            worker.fill(Slot::Closed);
        }
    }
}

/// Wakes each worker of `pairs` with its job (outside the queue's lock).
fn hand_out<T>(pairs: Vec<(Arc<Parking<T>>, T)>) {
    for (worker, job) in pairs {
        worker.fill(Slot::Job(job));
    }
}

impl<T> State<T> {
    /// Takes the queued jobs, oldest first, for as long as `due` says of
    /// the time each was queued, each with the parked worker (the last to
    /// park first) that is to get it.
    fn pair_off(&mut self, due: impl Fn(Instant) -> bool) -> Vec<(Arc<Parking<T>>, T)> {
        let mut pairs = Vec::new();
        while self.queued.front().is_some_and(|(at, _)| due(*at))
            && let Some(worker) = self.parked.pop()
        {
            let (_, job) = self.queued.pop_front().expect("a queued job");
            pairs.push((worker, job));
        }
        pairs
    }
}

impl<T> JobSender<T> {
    /// Hands `job` to the worker that parked last, or queues it; gives it
    /// back when the queue is full or closed. With `may_queue` it queues
    /// while there is room even if a worker is parked, for a busy worker
    /// to take when it finishes (or `hand_stale` to hand out).
    pub(super) fn try_send(&self, job: T, may_queue: bool) -> Result<Handoff, T> {
        let mut state = self.0.state();
        if state.closed {
            return Err(job);
        }
        let room = state.queued.len() < self.0.capacity;
        if may_queue && room {
            state.queued.push_back((Instant::now(), job));
            return Ok(Handoff::Queued);
        }
        if let Some(worker) = state.parked.pop() {
            drop(state);
            worker.fill(Slot::Job(job));
            return Ok(Handoff::ToParked);
        }
        if !room {
            return Err(job);
        }
        state.queued.push_back((Instant::now(), job));
        Ok(Handoff::Queued)
    }

    /// Jobs waiting for a worker.
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no job waits for a worker.
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// See [`WorkQueue::hand_stale`].
    pub(super) fn hand_stale(&self, cutoff: Instant) -> (usize, usize) {
        self.0.hand_stale(cutoff)
    }
}

impl<T> Drop for JobSender<T> {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl<T> Parking<T> {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            slot: Mutex::new(Slot::Empty),
            filled: Condvar::new(),
        })
    }

    fn slot(&self) -> MutexGuard<'_, Slot<T>> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fill(&self, with: Slot<T>) {
        *self.slot() = with;
        self.filled.notify_one();
    }

    fn wait(&self) -> Option<T> {
        let mut slot = self.slot();
        loop {
            match std::mem::replace(&mut *slot, Slot::Empty) {
                Slot::Job(job) => return Some(job),
                Slot::Closed => return None,
                Slot::Empty => {
                    slot = self
                        .filled
                        .wait(slot)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    /// Starts a worker that reports each job it takes, with its name, and
    /// waits until it has parked.
    fn worker(
        queue: &Arc<WorkQueue<u32>>,
        name: &'static str,
        seen: &mpsc::Sender<(&'static str, Option<u32>)>,
    ) -> thread::JoinHandle<()> {
        let parked_before = queue.state().parked.len();
        let (theirs, seen) = (Arc::clone(queue), seen.clone());
        let handle = thread::spawn(move || {
            let parking = Parking::new();
            loop {
                let job = theirs.recv(&parking, || {}).map(|(job, how)| {
                    assert_eq!(how, Handoff::ToParked);
                    job
                });
                seen.send((name, job)).unwrap();
                if job.is_none() {
                    return;
                }
            }
        });
        while queue.state().parked.len() == parked_before {
            thread::yield_now();
        }
        handle
    }

    #[test]
    fn a_job_goes_to_the_worker_that_parked_last() {
        let (jobs, queue) = work_queue(4);
        let (seen_tx, seen) = mpsc::channel();
        let first = worker(&queue, "first", &seen_tx);
        let second = worker(&queue, "second", &seen_tx);
        assert_eq!(jobs.try_send(1, false), Ok(Handoff::ToParked));
        assert_eq!(seen.recv().unwrap(), ("second", Some(1)));
        // It parks again on top, so it takes the next one as well.
        while queue.state().parked.len() < 2 {
            thread::yield_now();
        }
        jobs.try_send(2, false).unwrap();
        assert_eq!(seen.recv().unwrap(), ("second", Some(2)));
        drop(jobs);
        let mut ends: Vec<_> = (0..2).map(|_| seen.recv().unwrap()).collect();
        ends.sort();
        assert_eq!(ends, [("first", None), ("second", None)]);
        first.join().unwrap();
        second.join().unwrap();
    }

    #[test]
    fn jobs_queue_in_order_up_to_the_capacity_while_no_worker_waits() {
        let (jobs, queue) = work_queue(2);
        assert_eq!(jobs.try_send(1, false), Ok(Handoff::Queued));
        assert_eq!(jobs.try_send(2, false), Ok(Handoff::Queued));
        assert_eq!(jobs.try_send(3, false), Err(3));
        assert_eq!(jobs.len(), 2);
        let parking = Parking::new();
        assert_eq!(queue.recv(&parking, || {}), Some((1, Handoff::Queued)));
        assert_eq!(queue.recv(&parking, || {}), Some((2, Handoff::Queued)));
        assert!(queue.is_empty());
    }

    #[test]
    fn a_closed_queue_still_gives_out_what_was_queued_then_nothing() {
        let (jobs, queue) = work_queue(2);
        jobs.try_send(7, false).unwrap();
        drop(jobs);
        let parking = Parking::new();
        assert_eq!(queue.recv(&parking, || {}), Some((7, Handoff::Queued)));
        assert_eq!(queue.recv(&parking, || {}), None);
        assert_eq!(queue.recv(&parking, || {}), None);
    }

    #[test]
    fn a_job_sent_after_close_comes_back() {
        let (jobs, queue) = work_queue::<u32>(2);
        queue.close();
        assert_eq!(jobs.try_send(1, false), Err(1));
    }

    #[test]
    fn a_job_given_before_the_worker_waits_is_not_lost() {
        // The worker is on the parked list before it waits on its slot;
        // a job filled in between must be found without a wake-up.
        let (jobs, queue) = work_queue(1);
        let parking = Parking::new();
        queue.state().parked.push(Arc::clone(&parking));
        assert_eq!(jobs.try_send(5, false), Ok(Handoff::ToParked));
        let (done_tx, done) = mpsc::channel();
        thread::spawn(move || done_tx.send(parking.wait()).unwrap());
        assert_eq!(done.recv_timeout(Duration::from_secs(10)).unwrap(), Some(5));
    }

    #[test]
    fn taking_a_queued_job_is_reported_and_a_handed_one_is_not() {
        let (jobs, queue) = work_queue(2);
        jobs.try_send(1, false).unwrap();
        let parking = Parking::new();
        let mut taken = 0;
        assert_eq!(
            queue.recv(&parking, || taken += 1),
            Some((1, Handoff::Queued))
        );
        assert_eq!(taken, 1);
        let (seen_tx, seen) = mpsc::channel();
        let waiting = worker(&queue, "parked", &seen_tx);
        assert_eq!(jobs.try_send(2, false), Ok(Handoff::ToParked));
        assert_eq!(seen.recv().unwrap(), ("parked", Some(2)));
        drop(jobs);
        assert_eq!(seen.recv().unwrap(), ("parked", None));
        waiting.join().unwrap();
    }

    #[test]
    fn a_job_that_may_queue_waits_for_a_busy_worker_though_one_is_parked() {
        let (jobs, queue) = work_queue(4);
        let (seen_tx, seen) = mpsc::channel();
        let parked = worker(&queue, "parked", &seen_tx);
        assert_eq!(jobs.try_send(1, true), Ok(Handoff::Queued));
        // A worker finishing its job takes it, without the parked one.
        let busy = Parking::new();
        assert_eq!(queue.recv(&busy, || {}), Some((1, Handoff::Queued)));
        drop(jobs);
        assert_eq!(seen.recv().unwrap(), ("parked", None));
        parked.join().unwrap();
    }

    #[test]
    fn a_full_queue_hands_a_job_that_may_queue_to_a_parked_worker() {
        let (jobs, queue) = work_queue(1);
        let parking = Parking::new();
        queue.state().parked.push(Arc::clone(&parking));
        assert_eq!(jobs.try_send(1, true), Ok(Handoff::Queued));
        assert_eq!(jobs.try_send(2, true), Ok(Handoff::ToParked));
        assert_eq!(parking.wait(), Some(2));
    }

    #[test]
    fn closing_hands_what_is_queued_to_parked_workers_first() {
        let (jobs, queue) = work_queue(2);
        let parking = Parking::new();
        queue.state().parked.push(Arc::clone(&parking));
        jobs.try_send(1, true).unwrap();
        drop(jobs);
        assert_eq!(parking.wait(), Some(1));
        assert_eq!(queue.recv(&parking, || {}), None);
    }

    #[test]
    fn stale_jobs_go_to_parked_workers_oldest_first_and_fresh_ones_stay() {
        let (jobs, queue) = work_queue(4);
        let parking = Parking::new();
        queue.state().parked.push(Arc::clone(&parking));
        jobs.try_send(1, true).unwrap();
        jobs.try_send(2, true).unwrap();
        let before = Instant::now() - Duration::from_secs(1);
        assert_eq!(jobs.hand_stale(before), (0, 0), "none is that old");
        let after = Instant::now() + Duration::from_secs(1);
        assert_eq!(jobs.hand_stale(after), (1, 1), "one parked worker");
        assert_eq!(parking.wait(), Some(1));
        assert_eq!(jobs.len(), 1);
        assert_eq!(queue.recv(&parking, || {}), Some((2, Handoff::Queued)));
    }
}
