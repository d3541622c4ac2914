//! `upstream_answer`: the plain-HTTP client's reading of an upstream's
//! answer (head, interim answers, body framing).

use crate::providers::plain_http::{Replayed, replay_answer};

/// However the answer is split into reads, the same status, body and
/// end; a body framed by a length never passes it; no body without a head.
pub fn upstream_answer(data: &[u8]) {
    let whole: Replayed = replay_answer(&[data]);
    super::assert_split_invariant(data, &whole, replay_answer);
    if let Some(declared) = whole.declared {
        assert!(whole.body.len() as u64 <= declared, "body past its length");
    }
    if whole.status.is_none() {
        assert!(whole.body.is_empty(), "a body without a head");
    }
    assert!(whole.body.len() <= data.len(), "more body than input");
}

/// The read buffer (at most the head limit), the body read and the
/// split copies of the input.
pub fn budget(len: usize) -> usize {
    (1 << 20) + 64 * len
}
