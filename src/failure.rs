//! How failures are classified: every error type says what happens next.

use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Likely to succeed later on its own (network, throttling, 5xx, contention).
    Transient,
    /// Will keep failing until an operator fixes the deployment (token, URL, table).
    /// Retried so that no redemption is lost while the fix is on its way.
    Configuration,
    /// Can never succeed for this message: it belongs in the dead-letter queue.
    Permanent,
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Transient => "transient",
            Self::Configuration => "configuration",
            Self::Permanent => "permanent",
        })
    }
}

/// An error that may be retried inside the invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryHint {
    /// The server's `retry-after`, if it gave one.
    pub not_before: Option<Duration>,
}
