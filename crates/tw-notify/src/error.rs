//! `DeliveryError`: the one decision the dispatcher needs from a failed attempt — try again
//! later, or stop and tell an operator the channel is broken.
//!
//! Transient: the receiver may accept the same request later (connection refused, timeout,
//! 408, 425, 429, 5xx, SMTP 4xx). Permanent: the same request will keep failing until
//! somebody changes the configuration (bad token, bad request, unknown chat, SMTP 5xx).
//! The text is for humans; it carries no secret and no URL beyond scheme, host and port.

/// Why one delivery attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("transient: {0}")]
    Transient(String),
    #[error("permanent: {0}")]
    Permanent(String),
}

impl DeliveryError {
    /// Whether the dispatcher should retry the delivery.
    pub fn is_transient(&self) -> bool {
        matches!(self, DeliveryError::Transient(_))
    }

    /// The human-readable detail, without the `transient:`/`permanent:` prefix.
    pub fn detail(&self) -> &str {
        match self {
            DeliveryError::Transient(detail) | DeliveryError::Permanent(detail) => detail,
        }
    }

    /// The same classification with the detail rewritten (used by redaction).
    pub(crate) fn map_detail(self, f: impl FnOnce(String) -> String) -> DeliveryError {
        match self {
            DeliveryError::Transient(detail) => DeliveryError::Transient(f(detail)),
            DeliveryError::Permanent(detail) => DeliveryError::Permanent(f(detail)),
        }
    }
}

/// The HTTP client could not be built (only at startup or reload).
#[derive(Debug, thiserror::Error)]
#[error("building the notification HTTP client failed: {0}")]
pub struct ClientBuildError(pub(crate) String);

/// Whether an HTTP status means "try again later". 408 and 425 say the request came at a bad
/// moment, 429 is a rate limit, 5xx is the receiver's own trouble; every other 4xx says the
/// request itself (or its credential) is wrong and will stay wrong.
pub(crate) fn status_is_transient(status: u16) -> bool {
    matches!(status, 408 | 425 | 429) || (500..=599).contains(&status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classification() {
        for status in [408, 425, 429, 500, 502, 503, 504, 599] {
            assert!(status_is_transient(status), "{status}");
        }
        for status in [300, 301, 400, 401, 403, 404, 405, 410, 413, 422] {
            assert!(!status_is_transient(status), "{status}");
        }
    }

    #[test]
    fn display_has_the_class_prefix() {
        assert_eq!(
            DeliveryError::Transient("x".into()).to_string(),
            "transient: x"
        );
        assert_eq!(
            DeliveryError::Permanent("y".into()).to_string(),
            "permanent: y"
        );
        assert!(DeliveryError::Transient("x".into()).is_transient());
        assert_eq!(DeliveryError::Permanent("y".into()).detail(), "y");
    }
}
