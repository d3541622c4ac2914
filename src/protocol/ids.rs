//! Generated identifiers and wall-clock stamps for emitted answers.
//!
//! Ids only need to be unique within the process and unguessable enough
//! not to collide across restarts, so a counter (uniqueness) is mixed with
//! std's randomly keyed SipHash over the clock (spread) instead of pulling
//! in a random-number crate. This and [`unix_now`] are the only places the
//! protocol layer reads the clock; golden tests normalise both.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::hex::push_hex;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Length of the hex tail of a generated id (tests and the stream
/// checks recognise it).
pub const TAIL_LEN: usize = 24;

/// Every prefix the protocol layer gives [`new_id`], for the checks that
/// recognise generated ids.
pub const PREFIXES: [&str; 7] = [
    "chatcmpl-",
    "msg_",
    "call_",
    "toolu_",
    "resp_",
    "fc_",
    "rs_",
];

/// A fresh id `<prefix><24 hex digits>`, e.g. `msg_…`, `call_…`.
pub fn new_id(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(n);
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    // Not `format!`: it took 1,700 instructions, most of an id's cost
    // and 1.5% of a converted answer's.
    let mut id = String::with_capacity(prefix.len() + TAIL_LEN);
    id.push_str(prefix);
    push_hex(&mut id, &h.finish().to_be_bytes());
    push_hex(&mut id, &(n as u32).to_be_bytes());
    id
}

/// Seconds since the Unix epoch (for `created` fields).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// RFC 3339 UTC timestamp for a Unix time (Anthropic `created_at`), by the
/// civil-from-days algorithm so no date crate is needed.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Replaces generated ids (`<prefix><24 hex>`) with `<prefix>*` and
/// timestamps with 0, so that two renderings can be compared (golden
/// tests, fuzz targets).
pub fn normalise(v: &mut Value) {
    match v {
        Value::String(s) => {
            for prefix in PREFIXES {
                if let Some(tail) = s.strip_prefix(prefix)
                    && tail.len() == TAIL_LEN
                    && tail.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    *s = format!("{prefix}*");
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalise),
        Value::Object(obj) => {
            for (k, child) in obj.iter_mut() {
                if (k == "created" && child.is_number()) || k == "created_at" {
                    *child = Value::from(0);
                } else {
                    normalise(child);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_shaped() {
        let a = new_id("msg_");
        let b = new_id("msg_");
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + TAIL_LEN);
        assert!(a[4..].bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn the_tail_ends_with_the_counter() {
        // The counter goes up (other tests take ids meanwhile).
        let counter = |id: String| u64::from_str_radix(&id[5 + 16..], 16).unwrap();
        let n = counter(new_id("call_"));
        assert!(counter(new_id("call_")) > n);
    }

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_736_000_000), "2025-01-04T14:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
