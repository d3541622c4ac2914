//! aiproxy: a synchronous AI API gateway.
//!
//! Clients speak the OpenAI, Anthropic or Gemini protocol; aiproxy
//! authenticates them, picks a provider instance, converts the request,
//! forwards it with a blocking HTTP client and converts the answer back,
//! whole or streamed. A fixed pool of worker threads serves all requests;
//! there is no async runtime.
//!
//! Embedding: [`start`] runs the gateway on background threads and returns
//! a [`Handle`]; [`run`] does the same and blocks until SIGTERM/SIGINT.
#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod error;
pub mod protocol;
pub mod providers;

pub use config::Config;
pub use error::Error;
