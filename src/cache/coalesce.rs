//! Request coalescing: concurrent misses for one key make one upstream
//! call.
//!
//! The first miss becomes the leader and registers a flight; later misses
//! for an equal key find it and wait on its condition variable, bounded by
//! a deadline, after which they fetch for themselves. The leader publishes
//! through a guard whose `Drop` wakes the waiters even when the fetch
//! panics, so a crashing request cannot strand the others. The map lock is
//! held only to insert or remove a flight, never during a fetch.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{Entry, Key};

/// What a flight ended with.
#[derive(Clone)]
pub(crate) enum Landing {
    /// The shared answer, and whether it came from a cache tier (true) or
    /// from the leader's fetch (false).
    Answer(Arc<Entry>, bool),
    /// The leader went away (panicked) without an answer.
    Abandoned,
}

pub(crate) struct Flight {
    landing: Mutex<Option<Landing>>,
    landed: Condvar,
}

impl Flight {
    /// Waits up to `timeout` for the leader; `None` on timeout.
    pub(crate) fn wait(&self, timeout: Duration) -> Option<Landing> {
        let deadline = Instant::now() + timeout;
        let mut landing = self.landing.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(l) = landing.as_ref() {
                return Some(l.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            landing = self
                .landed
                .wait_timeout(landing, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn land(&self, landing: Landing) {
        let mut slot = self.landing.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(landing);
        }
        self.landed.notify_all();
    }
}

/// The flights in progress, by key.
#[derive(Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<Key, Arc<Flight>>>,
}

/// The role of a caller after [`Flights::join`].
pub(crate) enum Join<'a> {
    /// First for this key: fetch, then [`Leader::land`].
    Leader(Leader<'a>),
    /// Someone else is fetching: [`Flight::wait`].
    Waiter(Arc<Flight>),
}

impl Flights {
    pub(crate) fn join(&self, key: &Key) -> Join<'_> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(flight) = map.get(key) {
            return Join::Waiter(Arc::clone(flight));
        }
        let flight = Arc::new(Flight {
            landing: Mutex::new(None),
            landed: Condvar::new(),
        });
        map.insert(key.clone(), Arc::clone(&flight));
        Join::Leader(Leader {
            flights: self,
            key: key.clone(),
            flight,
        })
    }

    /// Flights in progress.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// The leader's duty to land its flight; dropping it unlanded (a panic)
/// lands it as [`Landing::Abandoned`].
pub(crate) struct Leader<'a> {
    flights: &'a Flights,
    key: Key,
    flight: Arc<Flight>,
}

impl Leader<'_> {
    /// Publishes the answer to every waiter and retires the flight.
    pub(crate) fn land(self, entry: Arc<Entry>, from_cache: bool) {
        self.flight.land(Landing::Answer(entry, from_cache));
        // Drop retires the flight from the map.
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        // Retire first, so a caller arriving after the wake-up starts a new
        // flight (or finds the entry stored before `land`).
        {
            let mut map = self
                .flights
                .map
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if map
                .get(&self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                map.remove(&self.key);
            }
        }
        self.flight.land(Landing::Abandoned);
    }
}
