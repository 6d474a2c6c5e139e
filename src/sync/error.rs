use std::sync::Arc;
use std::time::{Duration, SystemTime};

use thiserror::Error;

use super::lease::LEASE_GRACE;
use crate::deadline::epoch_ms;
use crate::domain::{DiscountId, MessageError, OrderId};
use crate::failure::FailureClass;
use crate::ports::{PolarFailure, PolarFailureKind, StoreFailure};

/// Why one message was not synced.
#[derive(Debug, Error)]
pub enum SyncError {
    #[error("invalid message")]
    InvalidMessage(#[from] MessageError),
    #[error("order {0} not found")]
    OrderNotFound(OrderId),
    #[error("order {order} does not match the message: {field} is {on_order:?} on the order but {in_message:?} in the message")]
    OrderMismatch {
        order: OrderId,
        field: &'static str,
        on_order: Option<String>,
        in_message: String,
    },
    #[error(
        "discount {discount} has code {on_polar:?} on Polar, but order {order} used {on_order:?}"
    )]
    DiscountCodeMismatch {
        order: OrderId,
        discount: DiscountId,
        on_polar: Option<String>,
        on_order: String,
    },
    #[error("discount {discount} is being synced by another invocation (lease expires at {expires_at_ms} ms)")]
    LeaseHeld {
        discount: DiscountId,
        expires_at_ms: u64,
        /// When the holder will likely be done, from the discount's last measured step.
        expected_release_at_ms: Option<u64>,
        /// The orders were handed to the holder, to count by then.
        handed_over: bool,
    },
    #[error("not started: too little time left in the invocation")]
    DeadlineTooClose,
    /// The order is in a journal that outlives this invocation: its write may have landed
    /// on Polar, or is still to be made. Whoever takes the lease next, or the scheduled
    /// reconciliation, reads Polar back, counts the order if it was not, and marks it.
    #[error("the write counting this order on Polar may have landed or is still owed; its journal is kept, and the next sync of its discount or the scheduled reconciliation will count the order if needed and mark it")]
    WriteMayHaveLanded(#[source] Arc<SyncError>),
    #[error("Polar call failed")]
    Polar(#[from] PolarFailure),
    #[error("DynamoDB call failed")]
    Store(#[from] StoreFailure),
}

impl SyncError {
    pub fn class(&self) -> FailureClass {
        match self {
            Self::InvalidMessage(_)
            | Self::OrderMismatch { .. }
            | Self::DiscountCodeMismatch { .. } => FailureClass::Permanent,
            // The checkout's order write may not be visible yet.
            Self::OrderNotFound(_) | Self::LeaseHeld { .. } | Self::DeadlineTooClose => {
                FailureClass::Transient
            }
            Self::Polar(err) => err.class(),
            Self::Store(err) => err.class(),
            Self::WriteMayHaveLanded(err) => err.class(),
        }
    }

    /// The earliest moment worth trying again, if the failure says so: Polar's
    /// `retry-after`, or when a lease held elsewhere is free: when its holder is expected
    /// to be done (by the discount's last measured step), at the latest by its deadline;
    /// a lease still held after that (a dead holder, or a write left pending) may be
    /// taken over at its expiry.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Polar(PolarFailure {
                kind: PolarFailureKind::RateLimited { retry_after },
                ..
            }) => *retry_after,
            Self::LeaseHeld {
                expires_at_ms,
                expected_release_at_ms,
                ..
            } => {
                let now_ms = epoch_ms(SystemTime::now());
                let holder_deadline_ms =
                    expires_at_ms.saturating_sub(LEASE_GRACE.as_millis() as u64);
                let free_at_ms = if holder_deadline_ms > now_ms {
                    expected_release_at_ms.map_or(holder_deadline_ms, |expected| {
                        expected.clamp(now_ms, holder_deadline_ms)
                    })
                } else {
                    *expires_at_ms
                };
                Some(Duration::from_millis(free_at_ms.saturating_sub(now_ms)))
            }
            Self::Polar(PolarFailure {
                kind: PolarFailureKind::OverBudget { ready_in },
                ..
            }) => Some(*ready_in),
            Self::WriteMayHaveLanded(err) => err.retry_after(),
            _ => None,
        }
    }

    /// A short, stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidMessage(_) => "invalid_message",
            Self::OrderNotFound(_) => "order_not_found",
            Self::OrderMismatch { .. } => "order_mismatch",
            Self::DiscountCodeMismatch { .. } => "discount_code_mismatch",
            Self::LeaseHeld { .. } => "lease_held",
            Self::DeadlineTooClose => "deadline_too_close",
            Self::WriteMayHaveLanded(_) => "write_may_have_landed",
            Self::Polar(_) => "polar",
            Self::Store(_) => "dynamodb",
        }
    }
}
