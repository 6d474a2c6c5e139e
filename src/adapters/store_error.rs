use std::error::Error as StdError;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use thiserror::Error;

use crate::domain::DiscountId;
use crate::failure::{FailureClass, RetryHint};

type BoxError = Box<dyn StdError + Send + Sync>;

/// DynamoDB error codes that clear up by themselves.
const TRANSIENT_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionConflictException",
];

#[derive(Debug, Error)]
pub enum StoreError {
    /// The SDK call failed; the class was decided from the typed SDK error before boxing it.
    #[error("DynamoDB {operation} on table {table} failed ({class})")]
    Request {
        operation: &'static str,
        table: String,
        class: FailureClass,
        #[source]
        source: BoxError,
    },
    /// The lease expired and another invocation took it: this one must stop writing.
    #[error("the lease on discount {0} was taken over by another invocation")]
    LeaseLost(DiscountId),
    /// Needs an operator: the journal cannot be resolved, so the discount stays locked.
    #[error("the journal on discount {0} in SYNC_TABLE cannot be read")]
    CorruptJournal(DiscountId),
}

impl StoreError {
    pub fn from_sdk<E, R>(operation: &'static str, table: &str, err: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let class = match &err {
            SdkError::TimeoutError(_)
            | SdkError::DispatchFailure(_)
            | SdkError::ResponseError(_) => FailureClass::Transient,
            SdkError::ServiceError(service)
                if service
                    .err()
                    .code()
                    .is_some_and(|c| TRANSIENT_CODES.contains(&c)) =>
            {
                FailureClass::Transient
            }
            // Missing table, access denied, bad request: the deployment needs fixing.
            _ => FailureClass::Configuration,
        };
        Self::Request {
            operation,
            table: table.to_owned(),
            class,
            source: Box::new(err),
        }
    }

    pub fn class(&self) -> FailureClass {
        match self {
            Self::Request { class, .. } => *class,
            Self::LeaseLost(_) => FailureClass::Transient,
            Self::CorruptJournal(_) => FailureClass::Configuration,
        }
    }

    pub fn retry_hint(&self) -> Option<RetryHint> {
        match self {
            Self::Request {
                class: FailureClass::Transient,
                ..
            } => Some(RetryHint { not_before: None }),
            _ => None,
        }
    }
}
