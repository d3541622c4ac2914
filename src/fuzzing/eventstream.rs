//! `aws_eventstream`: the AWS event-stream decoder Kiro answers go through.

use crate::providers::eventstream::{DecodeError, Decoder, Message, crc32, encode};

/// How a decoder left the stream: its messages, then the error that
/// stopped it or whether an unfinished message was left over.
#[derive(Debug, PartialEq)]
struct Decoded {
    messages: Vec<Message>,
    error: Option<DecodeError>,
    partial: bool,
}

fn decode(pieces: &[&[u8]]) -> Decoded {
    let mut d = Decoder::new();
    let mut messages = Vec::new();
    let mut error = None;
    'feed: for piece in pieces {
        d.feed(piece);
        loop {
            match d.next_message() {
                Ok(Some(m)) => messages.push(m),
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    break 'feed;
                }
            }
        }
    }
    if let Some(e) = &error {
        assert_eq!(d.next_message().as_ref(), Err(e), "the error sticks");
    }
    Decoded {
        messages,
        error,
        partial: d.has_partial(),
    }
}

/// Rewrites both CRCs of every frame the lengths delimit, so that the
/// fuzzer gets past the checksums into the header parser.
fn fix_crcs(data: &mut [u8]) {
    let mut at = 0;
    while data.len() - at >= 12 {
        let total = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        let prelude = crc32(&data[at..at + 8]).to_be_bytes();
        data[at + 8..at + 12].copy_from_slice(&prelude);
        if total < 16 || total > data.len() - at {
            return;
        }
        let end = at + total;
        let message = crc32(&data[at..end - 4]).to_be_bytes();
        data[end - 4..end].copy_from_slice(&message);
        at = end;
    }
}

/// Input: one control byte (bit 0: repair the CRCs first; the rest picks
/// the bit flipped below), then the stream. Splitting the stream anywhere
/// gives the same messages and the same end; every message is exactly
/// the bytes it was decoded from (so both CRCs held); flipping any one
/// bit of a message makes the decoder refuse it.
pub fn aws_eventstream(data: &[u8]) {
    let [control, ref rest @ ..] = *data else {
        return;
    };
    let mut stream = rest.to_vec();
    if control & 1 == 1 {
        fix_crcs(&mut stream);
    }
    let stream = &stream[..];

    let whole = decode(&[stream]);
    super::assert_split_invariant(stream, &whole, decode);

    let mut at = 0;
    for m in &whole.messages {
        let bytes = reencode(m);
        assert_eq!(
            stream.get(at..at + bytes.len()),
            Some(&bytes[..]),
            "message at {at} is not the bytes it came from"
        );
        at += bytes.len();
    }
    if whole.error.is_none() {
        assert_eq!(whole.partial, at < stream.len(), "leftover bytes");
    }

    if let Some(first) = whole.messages.first() {
        let len = reencode(first).len();
        let bit = usize::from(control >> 1) * 131 % (len * 8);
        let mut flipped = stream[..len].to_vec();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let got = decode(&[&flipped]);
        assert!(
            got.messages.is_empty() && got.error.is_some(),
            "bit {bit} flipped and still accepted: {got:?}"
        );
    }
}

fn reencode(m: &Message) -> Vec<u8> {
    let headers: Vec<(&str, _)> = m
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.clone()))
        .collect();
    encode(&headers, &m.payload)
}
