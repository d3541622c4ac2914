//! The Redis tier of a build without the `redis` feature: it cannot be
//! built, so a cache never has one. `Config::load` refuses `redis.addr`
//! in such a build; [`RedisTier::new`] says why for a `Cache` made in code.

use std::time::Duration;

use super::{Entry, Key, RedisSettings};

/// No value of this type exists.
pub(crate) enum RedisTier {}

impl RedisTier {
    pub(crate) fn new(_: &RedisSettings) -> Result<Self, String> {
        Err(format!(
            "redis: {}; the cache runs without its Redis tier",
            crate::features::REDIS.missing()
        ))
    }

    pub(crate) fn connected(&self) -> bool {
        match *self {}
    }

    pub(crate) fn errors(&self) -> u64 {
        match *self {}
    }

    pub(crate) fn get(&self, _: &Key) -> Option<Entry> {
        match *self {}
    }

    pub(crate) fn put(&self, _: &Key, _: &Entry, _: Duration) {
        match *self {}
    }

    pub(crate) fn clear(&self) -> Option<u64> {
        match *self {}
    }

    pub(crate) fn ping(&self) {
        match *self {}
    }
}
