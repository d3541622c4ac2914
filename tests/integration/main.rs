//! One integration-test binary: real sockets on loopback, port 0.

mod server;
mod support;
