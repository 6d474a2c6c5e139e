//! The SQS side of a failure: a later delivery, or the dead-letter queue with the reason.

use std::future::Future;
use std::time::Duration;

use thiserror::Error;

use super::BoxError;
use crate::failure::FailureClass;

/// The message attribute that carries the original message id on copies and dead letters.
pub const ORIGINAL_MESSAGE_ID: &str = "OriginalMessageId";
/// The message attribute that counts how many times a message was sent again.
pub const REQUEUE_COUNT: &str = "RequeueCount";
/// The message attribute that carries, on copies, when checkout's message was first sent
/// (epoch milliseconds): a copy's own `SentTimestamp` starts over.
pub const FIRST_SENT_AT: &str = "FirstSentAt";

/// A received SQS message, as far as redelivery needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub message_id: String,
    pub body: Option<String>,
    pub receipt_handle: Option<String>,
    /// The source queue's ARN (`eventSourceARN`).
    pub source_arn: Option<String>,
    /// `ApproximateReceiveCount`: 1 on the first delivery.
    pub receive_count: u32,
    /// `MessageGroupId`: FIFO queues' message groups, or a fair queue's tenant.
    pub group_id: Option<String>,
    /// Set on a copy the function sent again (`OriginalMessageId`): the id of the message
    /// checkout sent, which dead letters and logs name.
    pub original_message_id: Option<String>,
    /// How many times the function sent this message again (`RequeueCount`); 0 for the
    /// message checkout sent.
    pub requeues: u32,
    /// When checkout sent the message, through any copies (`FirstSentAt`, else SQS's
    /// `SentTimestamp`), in epoch milliseconds.
    pub first_sent_at_ms: Option<u64>,
}

impl Delivery {
    /// Whether the message came from a FIFO queue, as its source queue's name says.
    /// `MessageGroupId` does not tell: standard queues accept one too (fair queues).
    pub fn from_fifo_queue(&self) -> bool {
        self.source_arn
            .as_deref()
            .is_some_and(|arn| arn.ends_with(".fifo"))
    }

    /// How long ago checkout sent the message, through any copies.
    pub fn age(&self, now_ms: u64) -> Option<Duration> {
        self.first_sent_at_ms
            .map(|sent| Duration::from_millis(now_ms.saturating_sub(sent)))
    }

    /// The id of the message as checkout sent it, through any copies the function made.
    pub fn original_id(&self) -> &str {
        self.original_message_id
            .as_deref()
            .unwrap_or(&self.message_id)
    }
}

/// Why a message went to the dead-letter queue, carried as message attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterReason {
    pub class: FailureClass,
    pub kind: &'static str,
    pub reason: String,
}

#[derive(Debug, Error)]
pub enum QueueFailure {
    #[error("no dead-letter queue is configured (DEAD_LETTER_QUEUE_URL)")]
    NoDeadLetterQueue,
    #[error("the queue could not be used")]
    Failed(#[source] BoxError),
    /// Not done: the invocation must answer first. The message is left unacknowledged.
    #[error("no time left before the invocation must answer")]
    OutOfTime,
}

pub trait Queue: Send + Sync {
    /// Makes the message visible again only after `after`.
    fn retry_later(
        &self,
        delivery: &Delivery,
        after: Duration,
    ) -> impl Future<Output = Result<(), QueueFailure>> + Send;

    /// Sends the message again as a new one, visible after `after`, so that its receive
    /// count starts over; the caller then acknowledges the original. Standard queues only.
    fn requeue(
        &self,
        delivery: &Delivery,
        after: Duration,
    ) -> impl Future<Output = Result<(), QueueFailure>> + Send;

    fn dead_letter(
        &self,
        delivery: &Delivery,
        reason: &DeadLetterReason,
    ) -> impl Future<Output = Result<(), QueueFailure>> + Send;

    /// The source queue's `maxReceiveCount`, if it has a redrive policy (read once).
    fn max_receive_count(
        &self,
        delivery: &Delivery,
    ) -> impl Future<Output = Result<Option<u32>, QueueFailure>> + Send;
}
