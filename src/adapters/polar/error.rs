use std::fmt;
use std::time::Duration;

use reqwest::StatusCode;
use thiserror::Error;

use crate::domain::DiscountId;
use crate::failure::{FailureClass, RetryHint};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Get,
    Update,
    Delete,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Get => "GET",
            Self::Update => "PATCH",
            Self::Delete => "DELETE",
        })
    }
}

/// A failed call to Polar, classified by what should happen next.
#[derive(Debug, Error)]
pub enum PolarError {
    /// No complete response: connect failure, timeout, dropped connection. A write may
    /// or may not have been applied.
    #[error("Polar {operation} discount {discount}: no response")]
    Transport {
        operation: Operation,
        discount: DiscountId,
        #[source]
        source: reqwest::Error,
    },
    #[error("Polar {operation} discount {discount}: rate limited (retry after {retry_after:?})")]
    RateLimited {
        operation: Operation,
        discount: DiscountId,
        retry_after: Option<Duration>,
    },
    #[error("Polar {operation} discount {discount}: server error {status}: {body}")]
    Server {
        operation: Operation,
        discount: DiscountId,
        status: StatusCode,
        body: String,
    },
    #[error("Polar {operation} discount {discount}: {status}, the access token was refused (check the token and its discounts:write scope): {body}")]
    Unauthorized {
        operation: Operation,
        discount: DiscountId,
        status: StatusCode,
        body: String,
    },
    /// A 404 that does not say `ResourceNotFound` comes from a wrong base URL or API
    /// version, never from a deleted discount.
    #[error("Polar {operation} discount {discount}: 404 without ResourceNotFound (check POLAR_API_URL): {body}")]
    UnknownRoute {
        operation: Operation,
        discount: DiscountId,
        body: String,
    },
    #[error("Polar {operation} discount {discount}: rejected with {status}: {body}")]
    Rejected {
        operation: Operation,
        discount: DiscountId,
        status: StatusCode,
        body: String,
    },
    /// Not sent: this container's share of the rate limit is spent until after the deadline.
    #[error("Polar request not sent: the rate budget has no slot for {wait:?}")]
    OverBudget { wait: Duration },
    #[error("Polar {operation} discount {discount}: unreadable response")]
    Decode {
        operation: Operation,
        discount: DiscountId,
        #[source]
        source: serde_json::Error,
    },
}

impl PolarError {
    pub fn class(&self) -> FailureClass {
        match self {
            Self::Transport { .. }
            | Self::RateLimited { .. }
            | Self::Server { .. }
            | Self::OverBudget { .. } => FailureClass::Transient,
            Self::Unauthorized { .. } | Self::UnknownRoute { .. } | Self::Decode { .. } => {
                FailureClass::Configuration
            }
            Self::Rejected { .. } => FailureClass::Permanent,
        }
    }

    /// Whether the request may have been applied although no answer arrived.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, Self::Transport { .. })
    }

    /// A 5xx may come from a proxy after Polar applied the request.
    pub fn is_server_error(&self) -> bool {
        matches!(self, Self::Server { .. })
    }

    /// Worth another attempt within this invocation, and how long Polar asked us to wait.
    pub fn retry_hint(&self) -> Option<RetryHint> {
        match self {
            Self::RateLimited { retry_after, .. } => Some(RetryHint {
                not_before: *retry_after,
            }),
            // The limiter already waited as long as the deadline allows.
            Self::OverBudget { .. } => None,
            _ if self.class() == FailureClass::Transient => Some(RetryHint { not_before: None }),
            _ => None,
        }
    }
}
