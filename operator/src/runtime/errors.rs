//! Error categories: bounded label values for metrics and Event reasons, and
//! the retry policy that follows from them.

use std::fmt;

/// Why a reconcile failed, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCategory {
    /// The user's object is invalid; retrying cannot help until it changes.
    InvalidSpec,
    /// The API server refused what we sent (400/422): a bug on our side or a
    /// user-supplied pod knob it rejects. Retrying the same input cannot help.
    Rejected,
    /// Someone else changed the object concurrently (409).
    Conflict,
    /// Network, timeouts, 5xx, throttling: retry with backoff.
    Transient,
    /// Missing RBAC (401/403): retried slowly, an admin must act.
    Forbidden,
    /// Anything else (serialization bugs, ...).
    Internal,
}

impl ErrorCategory {
    /// Stable snake_case name used as metric label and Event reason suffix.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidSpec => "invalid_spec",
            Self::Rejected => "rejected",
            Self::Conflict => "conflict",
            Self::Transient => "transient",
            Self::Forbidden => "forbidden",
            Self::Internal => "internal",
        }
    }

    /// True when retrying without a change to the object is pointless.
    pub const fn waits_for_change(self) -> bool {
        matches!(self, Self::InvalidSpec | Self::Rejected)
    }

    /// Classifies an error returned by the Kubernetes client.
    pub fn of_kube(err: &kube::Error) -> Self {
        match err {
            kube::Error::Api(status) => match status.code {
                400 | 422 => Self::Rejected,
                401 | 403 => Self::Forbidden,
                409 => Self::Conflict,
                _ => Self::Transient,
            },
            kube::Error::SerdeError(_) | kube::Error::BuildRequest(_) => Self::Internal,
            _ => Self::Transient,
        }
    }
}

impl fmt::Display for ErrorCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Implemented by every controller error so `error_policy` and metrics can
/// treat them uniformly.
pub trait Categorized {
    fn category(&self) -> ErrorCategory;
}
