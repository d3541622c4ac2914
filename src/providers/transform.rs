//! Readers that rewrite an upstream body on the fly, so the rest of the
//! gateway sees the provider's plain family protocol: Code Assist SSE
//! without its `{"response": …}` wrapper, Qwen SSE without `ext` tool
//! calls, Kiro's binary event stream as Anthropic SSE.

use std::io::{self, Read};

use crate::protocol::sse::{SseDecoder, SseEvent};

/// Turns a body into another byte stream, chunk by chunk.
pub trait Transform: Send {
    /// Consumes upstream bytes; appends output to `out`.
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>);
    /// The upstream ended (cleanly or not); appends the last output.
    fn finish(&mut self, out: &mut Vec<u8>);
    /// The upstream read failed: whether to append an in-band error and
    /// end cleanly (true) or pass the I/O error on (false).
    fn fail(&mut self, _err: &io::Error, _out: &mut Vec<u8>) -> bool {
        false
    }
}

/// A reader applying a [`Transform`] to another reader.
pub struct TransformReader<R, T> {
    inner: R,
    transform: T,
    out: Vec<u8>,
    pos: usize,
    done: bool,
    buf: Box<[u8]>,
}

impl<R: Read, T: Transform> TransformReader<R, T> {
    /// Wraps `inner`.
    pub fn new(inner: R, transform: T) -> Self {
        Self::with_pending(inner, transform, Vec::new(), false)
    }

    /// Wraps `inner` after the caller already transformed its first
    /// bytes into `pending` (and, with `done`, all of them).
    pub fn with_pending(inner: R, transform: T, pending: Vec<u8>, done: bool) -> Self {
        Self {
            inner,
            transform,
            out: pending,
            pos: 0,
            done,
            buf: vec![0u8; 16 * 1024].into_boxed_slice(),
        }
    }
}

impl<R: Read, T: Transform> Read for TransformReader<R, T> {
    fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos < self.out.len() {
                let n = (self.out.len() - self.pos).min(dst.len());
                dst[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            self.out.clear();
            self.pos = 0;
            if self.done {
                return Ok(0);
            }
            match self.inner.read(&mut self.buf) {
                Ok(0) => {
                    self.done = true;
                    self.transform.finish(&mut self.out);
                }
                Ok(n) => self.transform.feed(&self.buf[..n], &mut self.out),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Nothing yet within the reader's wait (see `read_wait`):
                // not a failure, the read is made again.
                Err(e) if super::read_wait::timed_out(&e) => return Err(e),
                Err(e) => {
                    if self.transform.fail(&e, &mut self.out) {
                        self.done = true;
                    } else {
                        return Err(e);
                    }
                }
            }
        }
    }
}

/// Rewrites each SSE event's data with a function; `None` drops the event.
/// Output events are `data: …\n\n` (with `event:` kept).
pub struct SseMap<F> {
    decoder: SseDecoder,
    events: Vec<SseEvent>,
    map: F,
}

impl<F: FnMut(&str) -> Option<String> + Send> SseMap<F> {
    /// A transform applying `map` to every event's data.
    pub fn new(map: F) -> Self {
        Self {
            decoder: SseDecoder::new(),
            events: Vec::new(),
            map,
        }
    }

    fn drain(&mut self, out: &mut Vec<u8>) {
        for ev in self.events.drain(..) {
            let Some(data) = (self.map)(&ev.data) else {
                continue;
            };
            if let Some(name) = &ev.event {
                out.extend_from_slice(b"event: ");
                out.extend_from_slice(name.as_bytes());
                out.push(b'\n');
            }
            for line in data.split('\n') {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(line.as_bytes());
                out.push(b'\n');
            }
            out.push(b'\n');
        }
    }
}

impl<F: FnMut(&str) -> Option<String> + Send> Transform for SseMap<F> {
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        self.decoder.feed(chunk, &mut self.events);
        self.drain(out);
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        self.decoder.finish(&mut self.events);
        self.drain(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_map_rewrites_and_drops_events_across_splits() {
        let input = b"data: {\"a\":1}\n\n: comment\n\ndata: drop\n\nevent: x\ndata: {\"b\":2}\n\n";
        for split in 0..input.len() {
            let map = SseMap::new(|d: &str| (d != "drop").then(|| d.replace('1', "9")));
            let two_reads = (&input[..split]).chain(&input[split..]);
            let reader = TransformReader::new(two_reads, map);
            let mut out = String::new();
            io::BufReader::with_capacity(3, reader)
                .read_to_string(&mut out)
                .unwrap();
            assert_eq!(out, "data: {\"a\":9}\n\nevent: x\ndata: {\"b\":2}\n\n");
        }
    }
}
