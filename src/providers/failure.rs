//! One classification of upstream failures, used by retries, metrics,
//! logs and the balancer's passive health checks, so that they all agree
//! on what a given failure means.

use std::time::Duration;

use super::UpstreamError;
use crate::balancer::Outcome;

/// Why an upstream attempt did not give a usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// Connect, TLS, DNS failure, or the connection broke before an answer.
    Connect,
    /// No answer, or no next chunk, in time.
    Timeout,
    /// 429: quota or rate limit; `Retry-After` says for how long.
    RateLimited,
    /// 401/403, or credentials that could not be used or refreshed.
    Credential,
    /// Any other 4xx: the request's own fault, the same on every instance.
    Client(u16),
    /// A 5xx answer.
    Server(u16),
    /// An answer that could not be read or converted (bad JSON, broken
    /// event stream, truncated).
    Protocol,
    /// Our own configuration (an invalid upstream URL).
    Config,
}

impl UpstreamFailure {
    /// The failure an answer's status means, if any.
    pub fn of_status(status: u16) -> Option<Self> {
        Some(match status {
            429 => Self::RateLimited,
            401 | 403 => Self::Credential,
            400..=499 => Self::Client(status),
            500.. => Self::Server(status),
            _ => return None,
        })
    }

    /// The failure a transport or credential error means.
    pub fn of_error(err: &UpstreamError) -> Self {
        match err {
            UpstreamError::Connect(_) => Self::Connect,
            UpstreamError::Timeout(_) => Self::Timeout,
            UpstreamError::Credential(_) => Self::Credential,
            UpstreamError::Config(_) => Self::Config,
        }
    }

    /// What the failure means to the load balancer, which decides on
    /// retries and on the instance's health. `retry_after` is the
    /// upstream's `Retry-After`; `detail` says why a credential or the
    /// configuration failed (never a token).
    pub fn outcome(self, retry_after: Option<Duration>, detail: &str) -> Outcome {
        match self {
            Self::Connect => Outcome::Connect,
            Self::Timeout => Outcome::Timeout,
            Self::RateLimited => Outcome::RateLimited { retry_after },
            // A broken URL is fixed like a broken credential: by changing
            // the configuration; meanwhile other instances serve.
            Self::Credential | Self::Config => Outcome::CredentialRejected {
                reason: detail.to_owned(),
            },
            Self::Client(status) => Outcome::ClientError(status),
            Self::Server(status) => Outcome::ServerError(status),
            Self::Protocol => Outcome::Protocol,
        }
    }

    /// A short label for logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::RateLimited => "rate_limited",
            Self::Credential => "credential",
            Self::Client(_) => "client_error",
            Self::Server(_) => "server_error",
            Self::Protocol => "protocol",
            Self::Config => "config",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_errors_classify_once() {
        assert_eq!(UpstreamFailure::of_status(200), None);
        assert_eq!(
            UpstreamFailure::of_status(429),
            Some(UpstreamFailure::RateLimited)
        );
        assert_eq!(
            UpstreamFailure::of_status(403),
            Some(UpstreamFailure::Credential)
        );
        assert_eq!(
            UpstreamFailure::of_status(404),
            Some(UpstreamFailure::Client(404))
        );
        assert_eq!(
            UpstreamFailure::of_status(503),
            Some(UpstreamFailure::Server(503))
        );
        assert_eq!(
            UpstreamFailure::of_error(&UpstreamError::Credential("x".into())),
            UpstreamFailure::Credential
        );
    }

    #[test]
    fn the_balancer_retries_transient_failures_only() {
        use UpstreamFailure::*;
        let o = |f: UpstreamFailure| f.outcome(None, "why");
        for f in [
            Connect,
            Timeout,
            RateLimited,
            Server(502),
            Credential,
            Config,
        ] {
            assert!(o(f).is_retryable(), "{f:?}");
        }
        for f in [Client(400), Client(404), Client(413), Client(422), Protocol] {
            assert!(!o(f).is_retryable(), "{f:?}");
        }
        assert_eq!(
            RateLimited.outcome(Some(Duration::from_secs(3)), ""),
            Outcome::RateLimited {
                retry_after: Some(Duration::from_secs(3))
            }
        );
        assert_eq!(
            Credential.outcome(None, "upstream answered 401"),
            Outcome::CredentialRejected {
                reason: "upstream answered 401".into()
            }
        );
    }
}
