//! Where the stream relay sends what it decided: the redemption queue for an order whose
//! message may never have arrived, the dead-letter queue for a record it cannot read.

use std::future::Future;

use thiserror::Error;

/// An order's message, rebuilt from its stream record as checkout would have sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayedMessage {
    pub order_id: String,
    pub discount_id: String,
    pub discount_code: String,
}

impl RelayedMessage {
    /// The contract's message body: `{"orderId", "discountId", "discountCode"}`.
    pub fn body(&self) -> String {
        serde_json::json!({
            "orderId": self.order_id,
            "discountId": self.discount_id,
            "discountCode": self.discount_code,
        })
        .to_string()
    }
}

/// A stream record the relay cannot read, on its way to the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableRecord {
    /// `dynamodb.SequenceNumber`, when the record has one.
    pub sequence_number: Option<String>,
    /// The stream's ARN (`eventSourceARN`), when the record names it.
    pub stream_arn: Option<String>,
    /// What is wrong, for the dead letter's `ErrorKind`.
    pub kind: &'static str,
    /// Why it cannot be read, for the dead letter's `Reason`.
    pub reason: String,
    /// The record as it arrived (JSON), for the dead letter's body.
    pub raw: String,
}

#[derive(Debug, Error)]
pub enum RelayFailure {
    #[error("REDEMPTION_QUEUE_URL is not set: stream records cannot be relayed")]
    NoRedemptionQueue,
    #[error("no dead-letter queue is configured (DEAD_LETTER_QUEUE_URL)")]
    NoDeadLetterQueue,
    #[error("SQS refused the message: {code}: {message}")]
    Refused { code: String, message: String },
    #[error("the queue could not be used")]
    Failed(#[source] super::BoxError),
}

pub trait Relay: Send + Sync {
    /// Sends `messages` to the redemption queue; one outcome per message, in order.
    fn send(
        &self,
        messages: &[RelayedMessage],
    ) -> impl Future<Output = Vec<Result<(), RelayFailure>>> + Send;

    fn dead_letter(
        &self,
        record: &UnreadableRecord,
    ) -> impl Future<Output = Result<(), RelayFailure>> + Send;
}
