//! Polar's discount endpoints as the sync needs them, answering in the use case's terms:
//! a read finds the discount or learns it is gone; a write is applied, refused, or of
//! unknown outcome. Each adapter classifies its own errors into these.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use thiserror::Error;

use crate::deadline::Deadline;
use crate::domain::DiscountId;
use crate::failure::{FailureClass, RetryHint};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The parts of a Polar discount the sync reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscountView {
    pub code: Option<String>,
    /// `None` means unlimited.
    pub max_redemptions: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(DiscountView),
    /// Polar says the discount does not exist (404 `ResourceNotFound`).
    Deleted,
}

/// What a PATCH or DELETE did on Polar.
#[derive(Debug)]
pub enum WriteOutcome {
    /// Polar accepted it (any 2xx, whatever the body says or fails to say).
    Applied,
    /// The discount does not exist (404 `ResourceNotFound`): nothing was written.
    Gone,
    /// Polar's answer proves the request was refused: nothing changed.
    NotApplied(PolarFailure),
    /// The request may or may not have been applied; only a read can tell.
    Unknown(PolarFailure),
}

/// Why Polar did not answer as hoped. The source keeps the adapter's own error.
#[derive(Debug, Error)]
#[error("{kind}")]
pub struct PolarFailure {
    pub kind: PolarFailureKind,
    #[source]
    pub source: BoxError,
}

impl PolarFailure {
    pub fn new(kind: PolarFailureKind, source: impl Into<BoxError>) -> Self {
        Self {
            kind,
            source: source.into(),
        }
    }

    pub fn class(&self) -> FailureClass {
        match self.kind {
            PolarFailureKind::RateLimited { .. }
            | PolarFailureKind::Unavailable
            | PolarFailureKind::OverBudget { .. }
            | PolarFailureKind::TooLate => FailureClass::Transient,
            PolarFailureKind::Unauthorized
            | PolarFailureKind::TokenReplaced
            | PolarFailureKind::Misconfigured => FailureClass::Configuration,
            PolarFailureKind::Rejected => FailureClass::Permanent,
        }
    }

    /// Worth another attempt within this invocation, and how long Polar asked us to wait.
    pub fn retry_hint(&self) -> Option<RetryHint> {
        match self.kind {
            PolarFailureKind::RateLimited { retry_after } => Some(RetryHint {
                not_before: retry_after,
            }),
            PolarFailureKind::Unavailable | PolarFailureKind::TokenReplaced => {
                Some(RetryHint { not_before: None })
            }
            // The limiter already waited as long as the deadline allows.
            PolarFailureKind::OverBudget { .. }
            | PolarFailureKind::TooLate
            | PolarFailureKind::Unauthorized
            | PolarFailureKind::Misconfigured
            | PolarFailureKind::Rejected => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolarFailureKind {
    /// Over Polar's organization-wide rate limit.
    RateLimited { retry_after: Option<Duration> },
    /// No usable answer (network, timeout, 5xx): likely to clear up.
    Unavailable,
    /// The access token was refused.
    Unauthorized,
    /// The access token was refused, and another one is now loaded (rotated in SSM): worth
    /// another attempt, admitted by the rate budget and timed against the deadline like
    /// any other.
    TokenReplaced,
    /// An answer only a wrong deployment gets: unknown route or API version, unreadable body.
    Misconfigured,
    /// Polar refused this request for good.
    Rejected,
    /// Not sent: this container's share of the rate limit has no slot before the deadline.
    OverBudget { ready_in: Duration },
    /// Not sent: a request no longer fits before the deadline.
    TooLate,
}

impl fmt::Display for PolarFailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RateLimited { retry_after } => {
                write!(f, "Polar rate limited (retry after {retry_after:?})")
            }
            Self::Unavailable => f.write_str("Polar unavailable"),
            Self::Unauthorized => f.write_str(
                "Polar refused the access token (check the token and its discounts:write scope)",
            ),
            Self::TokenReplaced => f.write_str(
                "Polar refused the access token; the one now in SSM is used from the next request",
            ),
            Self::Misconfigured => {
                f.write_str("Polar answered as to a wrong deployment (check POLAR_API_URL)")
            }
            Self::Rejected => f.write_str("Polar rejected the request"),
            Self::OverBudget { .. } => {
                f.write_str("Polar request not sent: the rate budget is spent")
            }
            Self::TooLate => {
                f.write_str("Polar request not sent: it would not finish before the deadline")
            }
        }
    }
}

/// Reading a discount: all a plan needs, and all that shadow mode is given.
///
/// Each call of this trait and of [`Discounts`] is sent only if a whole request, and the
/// moment it may still take to land after the client gave up on it, fit before
/// `deadline`; otherwise it fails `TooLate`.
pub trait DiscountLookup: Send + Sync {
    fn get(
        &self,
        id: DiscountId,
        deadline: Deadline,
    ) -> impl Future<Output = Result<Lookup, PolarFailure>> + Send;
}

/// Changing a discount's limit: the writes that count redemptions.
pub trait Discounts: DiscountLookup {
    fn set_max_redemptions(
        &self,
        id: DiscountId,
        max_redemptions: i64,
        deadline: Deadline,
    ) -> impl Future<Output = WriteOutcome> + Send;

    fn delete(
        &self,
        id: DiscountId,
        deadline: Deadline,
    ) -> impl Future<Output = WriteOutcome> + Send;
}
