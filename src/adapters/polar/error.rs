//! What went wrong in a call to Polar, in HTTP terms, and how that reads in the port's
//! terms (`PolarFailureKind`). The use case only ever sees the port's terms.

use std::fmt;
use std::time::Duration;

use reqwest::StatusCode;
use thiserror::Error;

use crate::domain::DiscountId;
use crate::ports::{PolarFailure, PolarFailureKind};

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

/// A failed call to Polar, with the detail an operator needs.
#[derive(Debug, Error)]
pub enum PolarError {
    /// No complete response: connect failure, timeout, dropped connection.
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
    #[error("Polar {operation} discount {discount}: 401, the access token was refused; the one now in SSM is used from the next request")]
    TokenReplaced {
        operation: Operation,
        discount: DiscountId,
    },
    #[error(
        "Polar {operation} discount {discount}: {status}, the access token was refused: {body}"
    )]
    Unauthorized {
        operation: Operation,
        discount: DiscountId,
        status: StatusCode,
        body: String,
    },
    /// A 404 that does not say `ResourceNotFound` comes from a wrong base URL or API
    /// version, never from a deleted discount.
    #[error("Polar {operation} discount {discount}: 404 without ResourceNotFound: {body}")]
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
    #[error("Polar {operation} discount {discount}: not sent, only {remaining:?} left before the deadline")]
    TooLate {
        operation: Operation,
        discount: DiscountId,
        remaining: Duration,
    },
    #[error("Polar {operation} discount {discount}: unreadable response")]
    Decode {
        operation: Operation,
        discount: DiscountId,
        #[source]
        source: serde_json::Error,
    },
}

impl PolarError {
    pub fn kind(&self) -> PolarFailureKind {
        match self {
            Self::Transport { .. } | Self::Server { .. } => PolarFailureKind::Unavailable,
            Self::RateLimited { retry_after, .. } => PolarFailureKind::RateLimited {
                retry_after: *retry_after,
            },
            Self::Unauthorized { .. } => PolarFailureKind::Unauthorized,
            Self::TokenReplaced { .. } => PolarFailureKind::TokenReplaced,
            Self::UnknownRoute { .. } | Self::Decode { .. } => PolarFailureKind::Misconfigured,
            Self::Rejected { .. } => PolarFailureKind::Rejected,
            Self::TooLate { .. } => PolarFailureKind::TooLate,
        }
    }
}

impl From<PolarError> for PolarFailure {
    fn from(err: PolarError) -> Self {
        PolarFailure::new(err.kind(), err)
    }
}
