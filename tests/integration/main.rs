//! One integration-test binary: real sockets on loopback, port 0.

mod balancer;
mod embed;
mod gateway;
mod hardening;
mod http_grammar;
mod server;
mod support;
mod upgrade;
mod upstream;
mod websocket;
