//! JSON read, written and skipped at the byte level, for the paths that
//! skip `Value` trees (the usual request, the usual answer, usage
//! metering, the passthrough's read of a stream chunk).
//!
//! Each part exists for its cost alone and gives exactly what serde_json
//! gives: the tests below, and those of the chunk scan in `stream`, hold
//! them to it.

use serde::Deserialize;
use std::borrow::Cow;

/// A string borrowed from the document when it holds no escape (serde
/// only borrows a `Cow` that is a member itself, not one inside an
/// `Option`).
#[derive(Deserialize)]
pub struct Borrowed<'a>(#[serde(borrow)] pub Cow<'a, str>);

/// The first element of an array (`None` when it is empty); the rest are
/// skipped unparsed, so that reading a stream chunk's first choice costs
/// no vector.
pub struct First<T>(pub Option<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for First<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
            type Value = First<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<First<T>, A::Error> {
                let first = seq.next_element()?;
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(First(first))
            }
        }
        d.deserialize_seq(Visit(std::marker::PhantomData))
    }
}

/// `T` from the JSON document `bytes`.
///
/// serde_json's slice reader checks the UTF-8 of every string it decodes,
/// member names included, one call each (about 100 instructions a string:
/// 3,000 of a converted request's). Checking the whole document once and
/// reading it as a `str` skips those. A document that is not UTF-8 goes to
/// the slice reader, so its error is the one it always was; for one that
/// is, the two readers are the same reader and fail alike.
pub fn from_bytes<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(bytes),
    }
}

/// A `T` read from the start of `bytes`, whatever follows it (the usage
/// object near the end of an answer); see [`from_bytes`].
pub fn prefix_from_bytes<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(bytes) {
        Ok(text) => T::deserialize(&mut serde_json::Deserializer::from_str(text)),
        Err(_) => T::deserialize(&mut serde_json::Deserializer::from_slice(bytes)),
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Marks the bytes of `word` (in memory order) that a JSON string
/// escapes — a control character, `"` or `\` — by their high bits. The
/// lowest mark is exact, so it finds the first such byte; a mark above it
/// may be false (a borrow), so the bytes after it are looked at again. A
/// byte below `n` (0x20, or 1 once an XOR has zeroed a match) borrows
/// into its high bit; `!w` drops bytes that had theirs set already.
#[inline]
fn escapes(word: u64) -> u64 {
    let below = |w: u64, n: u64| w.wrapping_sub(ONES * n) & !w & HIGHS;
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    below(word, 0x20) | below(quote, 1) | below(backslash, 1)
}

/// The escape serde_json writes for `byte`, if it writes one.
fn escape(byte: u8) -> Option<&'static [u8]> {
    const CONTROL: [&[u8]; 32] = [
        b"\\u0000", b"\\u0001", b"\\u0002", b"\\u0003", b"\\u0004", b"\\u0005", b"\\u0006",
        b"\\u0007", b"\\b", b"\\t", b"\\n", b"\\u000b", b"\\f", b"\\r", b"\\u000e", b"\\u000f",
        b"\\u0010", b"\\u0011", b"\\u0012", b"\\u0013", b"\\u0014", b"\\u0015", b"\\u0016",
        b"\\u0017", b"\\u0018", b"\\u0019", b"\\u001a", b"\\u001b", b"\\u001c", b"\\u001d",
        b"\\u001e", b"\\u001f",
    ];
    match byte {
        b'"' => Some(b"\\\""),
        b'\\' => Some(b"\\\\"),
        0..0x20 => Some(CONTROL[usize::from(byte)]),
        _ => None,
    }
}

/// Appends `text` as a quoted JSON string, with the bytes serde_json
/// writes for it. serde_json looks up every byte in a table (about five
/// instructions a byte, and as much again per member name); this skips
/// eight bytes at a time while none needs escaping.
pub fn push_str(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut copied = 0;
    let mut at = plain_run(bytes, 0);
    while at < bytes.len() {
        if let Some(escaped) = escape(bytes[at]) {
            out.extend_from_slice(&bytes[copied..at]);
            out.extend_from_slice(escaped);
            copied = at + 1;
        }
        at = plain_run(bytes, at + 1);
    }
    out.extend_from_slice(&bytes[copied..]);
    out.push(b'"');
}

/// Where the run of bytes from `at` that a JSON string holds as they are
/// ends, eight at a time: at the first byte `escapes` marks, or at the
/// last seven bytes, which the caller looks at one by one.
#[inline]
fn plain_run(bytes: &[u8], mut at: usize) -> usize {
    while let Some(word) = bytes.get(at..at + 8) {
        let marks = escapes(u64::from_le_bytes(word.try_into().unwrap_or_default()));
        if marks != 0 {
            return at + marks.trailing_zeros() as usize / 8;
        }
        at += 8;
    }
    at
}

/// The position of the first byte at or after `at` that is not JSON
/// whitespace.
#[inline]
pub fn skip_ws(bytes: &[u8], mut at: usize) -> usize {
    while matches!(bytes.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// The end of the string whose opening quote is just before `at` (the
/// position after its closing quote), or `None` if it is not a valid JSON
/// string: a control character, an unknown escape, a `\u` without four
/// hex digits, no closing quote. Like serde_json skipping a string, a
/// `\u` escape of a lone surrogate passes; `bytes` is UTF-8 already.
#[inline]
pub fn skip_string(bytes: &[u8], mut at: usize) -> Option<usize> {
    loop {
        at = plain_run(bytes, at);
        match *bytes.get(at)? {
            b'"' => return Some(at + 1),
            b'\\' => match *bytes.get(at + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => at += 2,
                b'u' => {
                    let hex = bytes.get(at + 2..at + 6)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return None;
                    }
                    at += 6;
                }
                _ => return None,
            },
            0..0x20 => return None,
            _ => at += 1,
        }
    }
}

/// The end of the number that starts at `at`, by JSON's grammar.
#[inline]
fn skip_number(bytes: &[u8], mut at: usize) -> Option<usize> {
    let digits = |at: usize| {
        at + bytes[at..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    if bytes.get(at) == Some(&b'-') {
        at += 1;
    }
    at = match *bytes.get(at)? {
        b'0' => at + 1,
        b'1'..=b'9' => digits(at + 1),
        _ => return None,
    };
    if bytes.get(at) == Some(&b'.') {
        let end = digits(at + 1);
        if end == at + 1 {
            return None;
        }
        at = end;
    }
    if matches!(bytes.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(bytes.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        let end = digits(at);
        if end == at {
            return None;
        }
        at = end;
    }
    Some(at)
}

/// The member name starting at `at`, as written between its quotes
/// (escapes left as they are), and where its value starts: after the `:`
/// that follows it, whitespace allowed around that.
pub fn name(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
    if bytes.get(at) != Some(&b'"') {
        return None;
    }
    let end = skip_string(bytes, at + 1)?;
    let colon = skip_ws(bytes, end);
    (bytes.get(colon) == Some(&b':')).then_some((&bytes[at + 1..end - 1], colon + 1))
}

/// The position after the object that starts at `at` (whitespace before
/// it allowed), calling `value` with each member's name (see [`name`])
/// and where its value starts; `value` gives where the value ends, or
/// `None` to give up on the object.
pub fn members(
    bytes: &[u8],
    at: usize,
    mut value: impl FnMut(&[u8], usize) -> Option<usize>,
) -> Option<usize> {
    let at = skip_ws(bytes, at);
    if bytes.get(at) != Some(&b'{') {
        return None;
    }
    let mut at = skip_ws(bytes, at + 1);
    if bytes.get(at) == Some(&b'}') {
        return Some(at + 1);
    }
    loop {
        let (name, start) = name(bytes, at)?;
        at = skip_ws(bytes, value(name, start)?);
        match bytes.get(at)? {
            b',' => at = skip_ws(bytes, at + 1),
            b'}' => return Some(at + 1),
            _ => return None,
        }
    }
}

/// Nesting deeper than this is left to serde_json (its own limit is 128).
const MAX_DEPTH: u32 = 100;

/// The end of the JSON value that starts at `at` (whitespace before it
/// allowed), or `None` if none is there or it is not valid JSON; what
/// serde_json's `IgnoredAny` reads, without building or decoding
/// anything, and without recursion: nesting is a bit per level (object
/// or array) in one word, so a deep value costs no stack.
pub fn skip_value(bytes: &[u8], mut at: usize) -> Option<usize> {
    let mut objects: u128 = 0;
    let mut depth = 0u32;
    loop {
        at = skip_ws(bytes, at);
        match *bytes.get(at)? {
            open @ (b'{' | b'[') => {
                let close = if open == b'{' { b'}' } else { b']' };
                let inner = skip_ws(bytes, at + 1);
                if bytes.get(inner) == Some(&close) {
                    at = inner + 1;
                } else {
                    if depth == MAX_DEPTH {
                        return None;
                    }
                    objects = (objects & !(1 << depth)) | (u128::from(open == b'{') << depth);
                    depth += 1;
                    at = if open == b'{' {
                        name(bytes, inner)?.1
                    } else {
                        inner
                    };
                    continue;
                }
            }
            b'"' => at = skip_string(bytes, at + 1)?,
            b't' => at = literal(bytes, at, b"true")?,
            b'f' => at = literal(bytes, at, b"false")?,
            b'n' => at = literal(bytes, at, b"null")?,
            b'-' | b'0'..=b'9' => at = skip_number(bytes, at)?,
            _ => return None,
        }
        // A value ended: close what it ends, or go on to the next one.
        loop {
            if depth == 0 {
                return Some(at);
            }
            at = skip_ws(bytes, at);
            let in_object = objects >> (depth - 1) & 1 == 1;
            match (*bytes.get(at)?, in_object) {
                (b',', true) => {
                    at = name(bytes, skip_ws(bytes, at + 1))?.1;
                    break;
                }
                (b',', false) => {
                    at += 1;
                    break;
                }
                (b'}', true) | (b']', false) => {
                    at += 1;
                    depth -= 1;
                }
                _ => return None,
            }
        }
    }
}

#[inline]
fn literal(bytes: &[u8], at: usize, word: &[u8]) -> Option<usize> {
    bytes[at..].starts_with(word).then_some(at + word.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pushed(text: &str) -> String {
        let mut out = Vec::new();
        push_str(&mut out, text);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        // Every character that is escaped, and its neighbours, at every
        // offset within and across an eight-byte word.
        let mut alphabet: Vec<char> = (0u8..0x80).map(char::from).collect();
        alphabet.extend(['é', '€', '𝄞', '\u{7f}', '\u{2028}', '\u{fffd}']);
        for c in &alphabet {
            for pad in 0..18 {
                for tail in [0, 1, 9] {
                    let text = format!("{}{c}{}", "a".repeat(pad), "b".repeat(tail));
                    assert_eq!(
                        pushed(&text),
                        serde_json::to_string(&text).unwrap(),
                        "{text:?}"
                    );
                }
            }
        }
        // Pseudo-random strings dense in escapes, from a fixed seed.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..2000 {
            let len = (seed % 40) as usize;
            let text: String = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize]
                })
                .collect();
            assert_eq!(
                pushed(&text),
                serde_json::to_string(&text).unwrap(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn the_word_test_finds_the_first_escaped_byte() {
        let escaped = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
        let first = |word: [u8; 8]| match escapes(u64::from_le_bytes(word)) {
            0 => None,
            marks => Some(marks.trailing_zeros() as usize / 8),
        };
        for byte in 0..=255u8 {
            for at in 0..8 {
                let mut word = *b"abcdefgh";
                word[at] = byte;
                assert_eq!(first(word), escaped(byte).then_some(at), "{byte} at {at}");
                // Whatever follows, the first is found: every byte after
                // it set to each value in turn.
                for after in 0..=255u8 {
                    word[at + 1..].fill(after);
                    let expected = [byte, after].iter().position(|&b| escaped(b));
                    let expected = expected.map(|i| at + i).filter(|&i| i < 8);
                    assert_eq!(first(word), expected, "{byte} at {at}, then {after}");
                }
            }
        }
        // High bytes (UTF-8 continuations) around a match do not hide it.
        assert_eq!(first(*b"\xff\"\xff\xff\xff\xff\xff\xff"), Some(1));
        assert_eq!(first([0xff; 8]), None);
    }

    #[test]
    fn documents_read_alike_from_either_reader() {
        type Doc = serde_json::Value;
        for doc in [
            &br#"{"a":"\u00e9 x","b":[1,2.5,null]}"#[..],
            b"{\"a\":\"\xc3\xa9\"}",
            b"{\"a\":\"\xff\"}",
            b"{\"a\":1} trailing",
            b"{\"a\":",
            b"\xff{}",
        ] {
            let ours = from_bytes::<Doc>(doc).map_err(|e| e.to_string());
            let theirs = serde_json::from_slice::<Doc>(doc).map_err(|e| e.to_string());
            assert_eq!(ours, theirs, "{}", String::from_utf8_lossy(doc));
        }
        let prefix: Doc = prefix_from_bytes(b"{\"n\":3}]} and more").unwrap();
        assert_eq!(prefix["n"], 3);
    }
}
