//! DynamoDB errors classified at the edge into the store port's terms, keeping the SDK
//! error (with the operation and table) as the source for the log.

use std::error::Error as StdError;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use thiserror::Error;

use super::transactions::{Failed, NotApplied};
use crate::ports::{BoxError, StoreFailure};

/// DynamoDB error codes that clear up by themselves.
const TRANSIENT_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
];
/// Cancellation reasons of a transaction that clear up by themselves.
const TRANSIENT_CANCELLATIONS: &[&str] = &[
    "ThrottlingError",
    "ProvisionedThroughputExceeded",
    "RequestLimitExceeded",
];

#[derive(Debug, Error)]
#[error("DynamoDB {operation} on table {table}")]
pub struct DynamoError {
    operation: &'static str,
    table: String,
    #[source]
    source: BoxError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Transient,
    Conflict,
    Misconfigured,
}

/// A failed SDK call, classified by its cause.
pub fn failure<E, R>(operation: &'static str, table: &str, err: SdkError<E, R>) -> StoreFailure
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let cause = cause_of(&err);
    wrap(cause, operation, table, err)
}

/// A transaction not applied: a cancelled one by its cancellation reasons (one per item,
/// `None` where that item was fine), as the top-level code only says "cancelled".
pub fn transaction_failure(
    operation: &'static str,
    table: &str,
    not_applied: NotApplied,
) -> StoreFailure {
    let reasons = not_applied.reasons();
    match not_applied {
        NotApplied::Failed(Failed::Transaction(err)) => {
            wrap(cause_of(&*err), operation, table, err)
        }
        NotApplied::Failed(Failed::Update(err)) => wrap(cause_of(&*err), operation, table, err),
        NotApplied::Cancelled(_) => {
            let cause = cancellation_cause(&reasons).unwrap_or(Cause::Misconfigured);
            wrap(cause, operation, table, TransactionCancelled(reasons))
        }
    }
}

/// The source of a failure that was a cancellation: the reasons, one per item.
#[derive(Debug, Error)]
#[error("transaction cancelled: {}", describe(.0))]
struct TransactionCancelled(Vec<Option<String>>);

fn describe(reasons: &[Option<String>]) -> String {
    let codes: Vec<&str> = reasons
        .iter()
        .map(|reason| reason.as_deref().unwrap_or("None"))
        .collect();
    codes.join(", ")
}

fn cause_of<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Cause {
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Cause::Transient
        }
        SdkError::ServiceError(service) => match service.err().code() {
            Some("TransactionConflictException") => Cause::Conflict,
            Some(code) if TRANSIENT_CODES.contains(&code) => Cause::Transient,
            // Missing table, access denied, bad request: the deployment needs fixing.
            _ => Cause::Misconfigured,
        },
        _ => Cause::Misconfigured,
    }
}

fn cancellation_cause(reasons: &[Option<String>]) -> Option<Cause> {
    let any = |wanted: &[&str]| {
        reasons
            .iter()
            .flatten()
            .any(|code| wanted.contains(&code.as_str()))
    };
    if any(&["TransactionConflict"]) {
        Some(Cause::Conflict)
    } else if any(TRANSIENT_CANCELLATIONS) {
        Some(Cause::Transient)
    } else {
        None
    }
}

fn wrap(
    cause: Cause,
    operation: &'static str,
    table: &str,
    err: impl StdError + Send + Sync + 'static,
) -> StoreFailure {
    let source = Box::new(DynamoError {
        operation,
        table: table.to_owned(),
        source: Box::new(err),
    });
    match cause {
        Cause::Transient => StoreFailure::Transient(source),
        Cause::Conflict => StoreFailure::Conflict(source),
        Cause::Misconfigured => StoreFailure::Misconfigured(source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reasons(codes: &[Option<&str>]) -> Vec<Option<String>> {
        codes.iter().map(|c| c.map(str::to_owned)).collect()
    }

    #[test]
    fn a_transaction_cancelled_by_a_conflict_or_throttling_is_worth_retrying() {
        assert_eq!(
            cancellation_cause(&reasons(&[None, Some("TransactionConflict"), None])),
            Some(Cause::Conflict)
        );
        assert_eq!(
            cancellation_cause(&reasons(&[Some("ThrottlingError"), Some("None")])),
            Some(Cause::Transient)
        );
    }

    #[test]
    fn other_cancellations_are_left_to_the_error_code() {
        assert_eq!(
            cancellation_cause(&reasons(&[Some("ValidationError")])),
            None
        );
        assert_eq!(cancellation_cause(&[]), None);
    }
}
