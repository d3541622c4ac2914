//! WebSocket (RFC 6455) for the server's upgraded connections: the opening
//! handshake, and frames and messages over the bytes the poller moves.
//! Nothing here blocks, owns a socket or knows what the messages mean.

#[doc(hidden)]
pub mod client;
pub mod framer;
pub mod handshake;

pub use framer::{Event, Framer, Input, Limits, READ_BUFFER_BYTES, close};
