//! The crate-level error type and its mapping to exit codes.

use std::fmt;
use std::io;

/// Why aiproxy could not start or stopped abnormally.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid (exit status 2).
    Config(String),
    /// An I/O operation failed (exit status 1).
    Io {
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// A provider could not be set up (exit status 2).
    Provider(String),
}

impl Error {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) | Self::Provider(_) => 2,
            Self::Io { .. } => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(msg) => write!(f, "configuration error: {msg}"),
            Self::Io { op, source } => write!(f, "{op}: {source}"),
            Self::Provider(msg) => write!(f, "provider error: {msg}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
