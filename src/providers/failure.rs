//! One classification of upstream failures, used by retries, metrics,
//! logs and the balancer's passive health checks, so that they all agree
//! on what a given failure means.

use super::UpstreamError;

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

    /// Whether another attempt (later, or on another instance) may
    /// succeed. A timeout is not retried: the attempt may still be running
    /// upstream, and a second one would double the cost.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            Self::Connect | Self::RateLimited | Self::Server(500 | 502 | 503 | 504)
        )
    }

    /// Whether it says the instance is unwell (counts towards ejection);
    /// a 429 is a quota, a 4xx the client's fault, neither an illness.
    pub fn counts_against_health(self) -> bool {
        matches!(self, Self::Connect | Self::Timeout | Self::Server(_))
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
    fn only_transient_failures_are_retried_and_only_illness_ejects() {
        use UpstreamFailure::*;
        for f in [Connect, RateLimited, Server(502), Server(503)] {
            assert!(f.retryable(), "{f:?}");
        }
        for f in [
            Timeout,
            Credential,
            Client(400),
            Client(404),
            Server(501),
            Protocol,
            Config,
        ] {
            assert!(!f.retryable(), "{f:?}");
        }
        for f in [Connect, Timeout, Server(500)] {
            assert!(f.counts_against_health(), "{f:?}");
        }
        for f in [RateLimited, Credential, Client(422), Protocol] {
            assert!(!f.counts_against_health(), "{f:?}");
        }
    }
}
