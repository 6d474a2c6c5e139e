//! DynamoDB errors classified at the edge into the store port's terms, keeping the SDK
//! error (with the operation and table) as the source for the log.

use std::collections::HashMap;
use std::error::Error as StdError;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::AttributeValue;
use thiserror::Error;

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

/// A cancelled transaction's reasons, one per item in order (`None` where the item was
/// fine); empty for any other failure.
pub fn cancellation_reasons<R>(err: &SdkError<TransactWriteItemsError, R>) -> Vec<Option<String>> {
    match err {
        SdkError::ServiceError(service) => match service.err() {
            TransactWriteItemsError::TransactionCanceledException(cancelled) => cancelled
                .cancellation_reasons()
                .iter()
                .map(|reason| reason.code().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// The item a cancelled transaction's `index`th update found, when its condition failed
/// and the update asked for it (`ReturnValuesOnConditionCheckFailure::AllOld`).
pub fn cancelled_item<R>(
    err: &SdkError<TransactWriteItemsError, R>,
    index: usize,
) -> Option<&HashMap<String, AttributeValue>> {
    let SdkError::ServiceError(service) = err else {
        return None;
    };
    let TransactWriteItemsError::TransactionCanceledException(cancelled) = service.err() else {
        return None;
    };
    let reason = cancelled.cancellation_reasons().get(index)?;
    (reason.code() == Some("ConditionalCheckFailed"))
        .then(|| reason.item())
        .flatten()
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

/// A failed transaction: a cancelled one by its cancellation reasons (one per item,
/// `None` where that item was fine), as the top-level code only says "cancelled".
pub fn transaction_failure<E, R>(
    operation: &'static str,
    table: &str,
    cancellation_reasons: &[Option<String>],
    err: SdkError<E, R>,
) -> StoreFailure
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let cause = cancellation_cause(cancellation_reasons).unwrap_or_else(|| cause_of(&err));
    wrap(cause, operation, table, err)
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

fn wrap<E, R>(
    cause: Cause,
    operation: &'static str,
    table: &str,
    err: SdkError<E, R>,
) -> StoreFailure
where
    E: StdError + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
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
