//! The client side of framing, byte for byte: what tests, the fuzzer and
//! the benchmark's load generator send to the server and read back. The
//! server itself never uses it.

/// Opcodes (RFC 6455 section 5.2).
pub mod opcode {
    /// Continuation of a fragmented message.
    pub const CONTINUATION: u8 = 0;
    /// Text.
    pub const TEXT: u8 = 1;
    /// Binary.
    pub const BINARY: u8 = 2;
    /// Close.
    pub const CLOSE: u8 = 8;
    /// Ping.
    pub const PING: u8 = 9;
    /// Pong.
    pub const PONG: u8 = 10;
}

/// One frame as a client sends it: `mask` must be given (a server closes
/// on an unmasked frame, which is what `None` is for).
pub fn frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 14);
    f.push((u8::from(fin) << 7) | (opcode & 0x0f));
    let masked = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(masked | n as u8),
        n if n <= usize::from(u16::MAX) => {
            f.push(masked | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(masked | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            f.extend_from_slice(&key);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

/// A masked text frame with a fixed key.
pub fn text(payload: &str) -> Vec<u8> {
    frame(
        true,
        opcode::TEXT,
        payload.as_bytes(),
        Some([0x37, 0xfa, 0x21, 0x3d]),
    )
}

/// A frame the server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFrame {
    /// FIN bit.
    pub fin: bool,
    /// Opcode.
    pub opcode: u8,
    /// Whether it was masked (a server must never mask).
    pub masked: bool,
    /// Payload, unmasked.
    pub payload: Vec<u8>,
}

impl ServerFrame {
    /// The close code of a close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == opcode::CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// The first frame in `bytes` and its length, or `None` while incomplete.
pub fn parse(bytes: &[u8]) -> Option<(ServerFrame, usize)> {
    let (&b0, rest) = bytes.split_first()?;
    let (&b1, mut rest) = rest.split_first()?;
    let masked = b1 & 0x80 != 0;
    let len = match b1 & 0x7f {
        126 => {
            let (n, r) = rest.split_at_checked(2)?;
            rest = r;
            u64::from(u16::from_be_bytes([n[0], n[1]]))
        }
        127 => {
            let (n, r) = rest.split_at_checked(8)?;
            rest = r;
            u64::from_be_bytes(n.try_into().ok()?)
        }
        n => u64::from(n),
    };
    let key = if masked {
        let (k, r) = rest.split_at_checked(4)?;
        rest = r;
        Some([k[0], k[1], k[2], k[3]])
    } else {
        None
    };
    let len = usize::try_from(len).ok()?;
    let payload = rest.get(..len)?;
    let payload = match key {
        Some(k) => payload
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ k[i % 4])
            .collect(),
        None => payload.to_vec(),
    };
    let used = bytes.len() - rest.len() + len;
    Some((
        ServerFrame {
            fin: b0 & 0x80 != 0,
            opcode: b0 & 0x0f,
            masked,
            payload,
        },
        used,
    ))
}

/// Every complete frame at the start of `bytes`; the rest stays.
pub fn parse_all(bytes: &mut Vec<u8>) -> Vec<ServerFrame> {
    let mut frames = Vec::new();
    let mut used = 0;
    while let Some((frame, n)) = parse(&bytes[used..]) {
        frames.push(frame);
        used += n;
    }
    bytes.drain(..used);
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_at_every_length_form() {
        for len in [0, 5, 125, 126, 65535, 65536] {
            let payload = vec![b'x'; len];
            let bytes = frame(true, opcode::BINARY, &payload, Some([1, 2, 3, 4]));
            let (f, used) = parse(&bytes).unwrap();
            assert_eq!((used, f.payload.len(), f.masked), (bytes.len(), len, true));
            assert!(parse(&bytes[..bytes.len() - 1]).is_none() || len == 0);
        }
    }
}
