//! WebSocket frames and messages over bytes someone else moves: tungstenite
//! decodes what the peer sent and encodes what we send, but never touches
//! a socket. Input comes as the slices the server read; output goes to any
//! [`Write`] (the connection's outbound queue). Reading past the input
//! gives tungstenite `WouldBlock`, so it works exactly as on a non-blocking
//! socket.
//!
//! tungstenite's defaults suit one connection with big messages, not
//! thousands of idle ones: its read buffer (128 KiB, zero-filled, so every
//! byte of it is resident) would alone cost 1.25 GiB at 10,000 connections.
//! Here it is [`READ_BUFFER_BYTES`]; messages and frames are bounded by
//! [`Limits`].

use std::io::{self, Read, Write};

use tungstenite::error::{CapacityError, Error};
use tungstenite::protocol::frame::Utf8Bytes;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Message, Role, WebSocketConfig, WebSocketContext};

/// Read buffer of one connection. A larger frame grows it to the frame's
/// size while it is read.
pub const READ_BUFFER_BYTES: usize = 4 * 1024;

/// Close codes (RFC 6455 section 7.4.1).
pub mod close {
    /// The purpose was fulfilled.
    pub const NORMAL: u16 = 1000;
    /// Going away: the server is shutting down, or the peer was idle.
    pub const GOING_AWAY: u16 = 1001;
    /// The peer broke the protocol (unmasked frame, bad opcode…).
    pub const PROTOCOL: u16 = 1002;
    /// A text message was not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// A policy was broken (the outbound queue outgrew its bound).
    pub const POLICY: u16 = 1008;
    /// A message or frame was too big.
    pub const TOO_BIG: u16 = 1009;
    /// No code was given in the peer's close frame.
    pub const NO_STATUS: u16 = 1005;
}

/// Size bounds on what a peer may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest message, all its fragments together.
    pub max_message_bytes: usize,
    /// Largest single frame payload.
    pub max_frame_bytes: usize,
}

/// What the peer's bytes amounted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete text message (fragments joined, UTF-8 checked).
    Text(Utf8Bytes),
    /// A complete binary message (its size).
    Binary(usize),
    /// A ping; its pong is already queued.
    Ping,
    /// A pong.
    Pong,
    /// The peer closed with this code; the reply is queued and the
    /// connection is over.
    Closed(u16),
    /// The peer broke a rule; a close frame with this code is queued and
    /// the connection is over.
    Failed(u16),
}

/// The unread rest of what the server read from the peer.
#[derive(Debug)]
pub struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    /// Input to decode.
    pub fn new(bytes: &'a [u8]) -> Self {
        Input { bytes }
    }

    /// Whether every byte was taken.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Input on one side, an outbound queue on the other: what tungstenite
/// sees as its stream.
struct Pipe<'i, 'a, 'o> {
    input: &'i mut Input<'a>,
    out: &'o mut dyn Write,
}

impl Read for Pipe<'_, '_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.bytes.is_empty() {
            // Never Ok(0): that would be the peer closing the connection.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.input.bytes.len());
        buf[..n].copy_from_slice(&self.input.bytes[..n]);
        self.input.bytes = &self.input.bytes[n..];
        Ok(n)
    }
}

impl Write for Pipe<'_, '_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The WebSocket state of one server-side connection.
#[derive(Debug)]
pub struct Framer {
    ctx: WebSocketContext,
    /// Closed (by either side, or after an error): nothing more is read
    /// or written.
    done: bool,
}

impl Framer {
    /// A connection whose handshake is complete; `limits` bound what the
    /// peer may send.
    pub fn new(limits: Limits) -> Self {
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            // Every message goes to the outbound queue at once: the queue
            // is the only buffer, and it never refuses bytes.
            .write_buffer_size(0)
            .max_message_size(Some(limits.max_message_bytes))
            .max_frame_size(Some(limits.max_frame_bytes))
            .accept_unmasked_frames(false);
        Framer {
            ctx: WebSocketContext::new(Role::Server, Some(config)),
            done: false,
        }
    }

    /// Whether messages can still be sent.
    pub fn is_open(&self) -> bool {
        !self.done && self.ctx.can_write()
    }

    /// Decodes the next event from `input`; `None` when the input ends
    /// before one is complete (or the connection is over). Replies the
    /// protocol requires (pong, close) are written to `out`.
    pub fn next(&mut self, input: &mut Input<'_>, out: &mut dyn Write) -> Option<Event> {
        if self.done {
            return None;
        }
        let mut pipe = Pipe { input, out };
        let event = match self.ctx.read(&mut pipe) {
            Ok(Message::Text(text)) => Event::Text(text),
            Ok(Message::Binary(data)) => Event::Binary(data.len()),
            Ok(Message::Ping(_)) => {
                // The pong is queued inside tungstenite; send it now.
                let _ = self.ctx.flush(&mut pipe);
                Event::Ping
            }
            Ok(Message::Pong(_)) => Event::Pong,
            Ok(Message::Close(frame)) => {
                let _ = self.ctx.flush(&mut pipe);
                self.done = true;
                Event::Closed(frame.map_or(close::NO_STATUS, |f| u16::from(f.code)))
            }
            Ok(Message::Frame(_)) => return None,
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(Error::ConnectionClosed | Error::AlreadyClosed | Error::Io(_)) => {
                self.done = true;
                return None;
            }
            Err(error) => {
                let (code, reason) = match error {
                    Error::Capacity(CapacityError::MessageTooLong { .. }) => {
                        (close::TOO_BIG, "message or frame too big")
                    }
                    Error::Capacity(_) => (close::TOO_BIG, "too big"),
                    Error::Utf8(_) => (close::INVALID_DATA, "text message is not UTF-8"),
                    _ => (close::PROTOCOL, "protocol error"),
                };
                self.close_with(code, reason, pipe.out);
                return Some(Event::Failed(code));
            }
        };
        Some(event)
    }

    /// Sends a text message; false if the connection is closing or closed.
    pub fn send_text(&mut self, text: Utf8Bytes, out: &mut dyn Write) -> bool {
        if !self.is_open() {
            return false;
        }
        let mut input = Input::new(&[]);
        let mut pipe = Pipe {
            input: &mut input,
            out,
        };
        self.ctx.write(&mut pipe, Message::Text(text)).is_ok()
    }

    /// Sends a close frame with `code` and `reason`; nothing is sent or
    /// read after it.
    pub fn close(&mut self, code: u16, reason: &str, out: &mut dyn Write) {
        if !self.done {
            self.close_with(code, reason, out);
        }
    }

    fn close_with(&mut self, code: u16, reason: &str, out: &mut dyn Write) {
        self.done = true;
        if !self.ctx.can_write() {
            return;
        }
        let mut input = Input::new(&[]);
        let mut pipe = Pipe {
            input: &mut input,
            out,
        };
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: Utf8Bytes::from(reason),
        };
        let _ = self.ctx.close(&mut pipe, Some(frame));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_message_bytes: 1024,
        max_frame_bytes: 256,
    };

    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        super::super::client::frame(fin, opcode, payload, Some([0x37, 0xfa, 0x21, 0x3d]))
    }

    fn events(framer: &mut Framer, bytes: &[u8], out: &mut Vec<u8>) -> Vec<Event> {
        let mut input = Input::new(bytes);
        let mut got = Vec::new();
        while let Some(e) = framer.next(&mut input, out) {
            got.push(e);
        }
        got
    }

    #[test]
    fn a_masked_text_frame_is_a_message_and_an_answer_is_unmasked() {
        let mut framer = Framer::new(LIMITS);
        let mut out = Vec::new();
        let got = events(&mut framer, &frame(true, 1, b"hello"), &mut out);
        assert_eq!(got, [Event::Text("hello".into())]);
        assert!(out.is_empty());
        assert!(framer.send_text("hi".into(), &mut out));
        assert_eq!(out, [0x81, 2, b'h', b'i']);
    }

    #[test]
    fn bytes_split_anywhere_give_the_same_messages() {
        let mut bytes = frame(true, 1, b"one");
        bytes.extend(frame(false, 1, b"tw"));
        bytes.extend(frame(true, 9, b"p"));
        bytes.extend(frame(true, 0, b"o"));
        for cut in 0..bytes.len() {
            let mut framer = Framer::new(LIMITS);
            let mut out = Vec::new();
            let mut got = events(&mut framer, &bytes[..cut], &mut out);
            got.extend(events(&mut framer, &bytes[cut..], &mut out));
            assert_eq!(
                got,
                [
                    Event::Text("one".into()),
                    Event::Ping,
                    Event::Text("two".into())
                ],
                "cut at {cut}"
            );
            assert_eq!(out, [0x8a, 1, b'p'], "the pong, cut at {cut}");
        }
    }

    #[test]
    fn an_unmasked_frame_is_a_protocol_error() {
        let mut framer = Framer::new(LIMITS);
        let mut out = Vec::new();
        let got = events(&mut framer, &[0x81, 2, b'h', b'i'], &mut out);
        assert_eq!(got, [Event::Failed(close::PROTOCOL)]);
        assert_eq!(&out[..4], &[0x88, out[1], 0x03, 0xea], "close 1002");
        assert!(!framer.is_open());
        assert!(!framer.send_text("late".into(), &mut out));
    }

    #[test]
    fn too_big_frames_and_messages_close_with_1009() {
        let mut framer = Framer::new(LIMITS);
        let mut out = Vec::new();
        let got = events(&mut framer, &frame(true, 1, &[b'a'; 300]), &mut out);
        assert_eq!(got, [Event::Failed(close::TOO_BIG)]);
        assert_eq!(&out[2..4], &1009u16.to_be_bytes());

        let mut framer = Framer::new(LIMITS);
        let mut out = Vec::new();
        let mut bytes = Vec::new();
        for i in 0..5 {
            bytes.extend(frame(i == 4, if i == 0 { 1 } else { 0 }, &[b'a'; 250]));
        }
        let got = events(&mut framer, &bytes, &mut out);
        assert_eq!(got, [Event::Failed(close::TOO_BIG)]);
    }

    #[test]
    fn invalid_utf8_closes_with_1007() {
        let mut framer = Framer::new(LIMITS);
        let mut out = Vec::new();
        let got = events(&mut framer, &frame(true, 1, &[0xff, 0xfe]), &mut out);
        assert_eq!(got, [Event::Failed(close::INVALID_DATA)]);
        assert_eq!(&out[2..4], &1007u16.to_be_bytes());
    }

    #[test]
    fn a_close_is_answered_and_ends_the_connection() {
        let mut framer = Framer::new(LIMITS);
        let mut out = Vec::new();
        let got = events(
            &mut framer,
            &frame(true, 8, &1000u16.to_be_bytes()),
            &mut out,
        );
        assert_eq!(got, [Event::Closed(1000)]);
        assert_eq!(out, [0x88, 2, 0x03, 0xe8]);
        assert!(events(&mut framer, &frame(true, 1, b"x"), &mut out).is_empty());
    }

    #[test]
    fn binary_messages_are_reported_by_size() {
        let mut framer = Framer::new(LIMITS);
        let mut out = Vec::new();
        let got = events(&mut framer, &frame(true, 2, &[0, 1, 2]), &mut out);
        assert_eq!(got, [Event::Binary(3)]);
    }

    #[test]
    fn our_close_carries_the_code_and_stops_sending() {
        let mut framer = Framer::new(LIMITS);
        let mut out = Vec::new();
        framer.close(close::GOING_AWAY, "bye", &mut out);
        assert_eq!(out, [0x88, 5, 0x03, 0xe9, b'b', b'y', b'e']);
        assert!(!framer.send_text("x".into(), &mut out));
    }
}
