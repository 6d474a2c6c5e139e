//! SQS behind the `Queue` port: visibility changes and requeued copies on the source
//! queue, and the dead-letter queue with the reason as message attributes. The calls go
//! out in SQS's batch APIs, those that arrive together in one request (`batches`).

mod batches;

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, MessageAttributeValue, QueueAttributeName,
    SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;
use thiserror::Error;
use tokio::sync::Mutex;

use self::batches::{Batches, Entry};

use crate::ports::{
    DeadLetterReason, Delivery, Queue, QueueFailure, FIRST_SENT_AT, ORIGINAL_MESSAGE_ID,
    REQUEUE_COUNT,
};

/// SQS caps a visibility timeout at 12 hours.
const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);
/// SQS caps a message's delay at 15 minutes.
const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// Message attribute values are bounded; reasons are cut to stay readable.
const MAX_REASON_CHARS: usize = 1000;

#[derive(Debug, Error)]
pub enum QueueError {
    #[error("SQS {operation} failed")]
    Request {
        operation: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the message carries no {0}")]
    MissingField(&'static str),
    #[error("{0:?} is not an SQS queue ARN")]
    BadArn(String),
}

fn request_error(operation: &'static str) -> impl FnOnce(aws_sdk_sqs::Error) -> QueueError {
    move |err| QueueError::Request {
        operation,
        source: Box::new(err),
    }
}

#[derive(Debug)]
pub struct SqsQueue {
    client: Client,
    batches: Batches,
    dead_letter_queue_url: Option<String>,
    /// `MAX_RECEIVE_COUNT`, when set, instead of reading the source queue's redrive policy.
    max_receive_count: Option<u32>,
    queue_urls: Mutex<HashMap<String, String>>,
    redrive_limits: Mutex<HashMap<String, Option<u32>>>,
}

impl SqsQueue {
    pub fn new(
        client: Client,
        dead_letter_queue_url: Option<String>,
        max_receive_count: Option<u32>,
    ) -> Self {
        Self {
            batches: Batches::new(client.clone()),
            client,
            dead_letter_queue_url,
            max_receive_count,
            queue_urls: Mutex::default(),
            redrive_limits: Mutex::default(),
        }
    }

    /// The source queue's URL from its ARN, looked up once per container.
    async fn queue_url(&self, delivery: &Delivery) -> Result<String, QueueError> {
        let arn = delivery
            .source_arn
            .as_deref()
            .ok_or(QueueError::MissingField("eventSourceARN"))?;
        let mut urls = self.queue_urls.lock().await;
        if let Some(url) = urls.get(arn) {
            return Ok(url.clone());
        }
        let (account, name) = parse_arn(arn)?;
        let url = self
            .client
            .get_queue_url()
            .queue_name(name)
            .queue_owner_aws_account_id(account)
            .send()
            .await
            .map_err(|e| request_error("GetQueueUrl")(e.into()))?
            .queue_url
            .ok_or(QueueError::MissingField("QueueUrl"))?;
        urls.insert(arn.to_owned(), url.clone());
        Ok(url)
    }
}

impl Queue for SqsQueue {
    async fn retry_later(&self, delivery: &Delivery, after: Duration) -> Result<(), QueueFailure> {
        Ok(self.change_visibility(delivery, after).await?)
    }

    async fn requeue(&self, delivery: &Delivery, after: Duration) -> Result<(), QueueFailure> {
        Ok(self.send_again(delivery, after).await?)
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        reason: &DeadLetterReason,
    ) -> Result<(), QueueFailure> {
        let url = self
            .dead_letter_queue_url
            .as_deref()
            .ok_or(QueueFailure::NoDeadLetterQueue)?;
        Ok(self.send_dead_letter(url, delivery, reason).await?)
    }

    async fn max_receive_count(&self, delivery: &Delivery) -> Result<Option<u32>, QueueFailure> {
        Ok(self.redrive_limit_of(delivery).await?)
    }
}

impl From<QueueError> for QueueFailure {
    fn from(err: QueueError) -> Self {
        QueueFailure::Failed(Box::new(err))
    }
}

impl SqsQueue {
    async fn change_visibility(
        &self,
        delivery: &Delivery,
        after: Duration,
    ) -> Result<(), QueueError> {
        let receipt = delivery
            .receipt_handle
            .as_deref()
            .ok_or(QueueError::MissingField("receiptHandle"))?;
        let url = self.queue_url(delivery).await?;
        let seconds = after.min(MAX_VISIBILITY).as_secs_f64().ceil() as i32;
        let entry = ChangeMessageVisibilityBatchRequestEntry::builder()
            .receipt_handle(receipt)
            .visibility_timeout(seconds);
        self.batches.send(url, Entry::Visibility(entry)).await
    }

    async fn send_again(&self, delivery: &Delivery, after: Duration) -> Result<(), QueueError> {
        let body = delivery
            .body
            .as_deref()
            .ok_or(QueueError::MissingField("body"))?;
        let url = self.queue_url(delivery).await?;
        let seconds = after.min(MAX_DELAY).as_secs_f64().ceil() as i32;
        let mut entry = SendMessageBatchRequestEntry::builder()
            .message_body(body)
            .delay_seconds(seconds)
            .message_attributes(ORIGINAL_MESSAGE_ID, text(delivery.original_id()))
            .message_attributes(REQUEUE_COUNT, number(delivery.requeues + 1));
        if let Some(first_sent_at_ms) = delivery.first_sent_at_ms {
            entry = entry.message_attributes(FIRST_SENT_AT, number(first_sent_at_ms));
        }
        self.batches.send(url, Entry::Send(entry)).await
    }

    async fn send_dead_letter(
        &self,
        url: &str,
        delivery: &Delivery,
        reason: &DeadLetterReason,
    ) -> Result<(), QueueError> {
        let mut entry = SendMessageBatchRequestEntry::builder()
            // SQS refuses an empty body; a record without one is kept visibly empty.
            .message_body(
                delivery
                    .body
                    .as_deref()
                    .filter(|b| !b.is_empty())
                    .unwrap_or("(no body)"),
            )
            .message_attributes("ErrorClass", text(&reason.class.to_string()))
            .message_attributes("ErrorKind", text(reason.kind))
            .message_attributes(
                "Reason",
                text(&crate::truncate_chars(&reason.reason, MAX_REASON_CHARS)),
            )
            .message_attributes(ORIGINAL_MESSAGE_ID, text(delivery.original_id()))
            .message_attributes("ReceiveCount", number(delivery.receive_count));
        if let Some(arn) = &delivery.source_arn {
            entry = entry.message_attributes("SourceQueueArn", text(arn));
        }
        if url.ends_with(".fifo") {
            entry = entry
                .message_group_id(delivery.group_id.as_deref().unwrap_or("dead-letters"))
                .message_deduplication_id(&delivery.message_id);
        }
        self.batches.send(url.to_owned(), Entry::Send(entry)).await
    }

    async fn redrive_limit_of(&self, delivery: &Delivery) -> Result<Option<u32>, QueueError> {
        if self.max_receive_count.is_some() {
            return Ok(self.max_receive_count);
        }
        let Some(arn) = delivery.source_arn.clone() else {
            return Ok(None);
        };
        if let Some(known) = self.redrive_limits.lock().await.get(&arn) {
            return Ok(*known);
        }
        let url = self.queue_url(delivery).await?;
        let attributes = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .map_err(|e| request_error("GetQueueAttributes")(e.into()))?;
        let limit = attributes
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy))
            .and_then(|policy| redrive_limit(policy));
        self.redrive_limits.lock().await.insert(arn, limit);
        Ok(limit)
    }
}

pub(super) fn text(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .expect("data type is set")
}

fn number(value: impl ToString) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("Number")
        .string_value(value.to_string())
        .build()
        .expect("data type is set")
}

/// `arn:aws:sqs:REGION:ACCOUNT:NAME` → (ACCOUNT, NAME).
fn parse_arn(arn: &str) -> Result<(&str, &str), QueueError> {
    match arn.split(':').collect::<Vec<_>>()[..] {
        ["arn", _, "sqs", _, account, name] if !account.is_empty() && !name.is_empty() => {
            Ok((account, name))
        }
        _ => Err(QueueError::BadArn(arn.to_owned())),
    }
}

/// `maxReceiveCount` from a redrive policy; SQS has written it as a number and as a string.
fn redrive_limit(policy: &str) -> Option<u32> {
    let policy: serde_json::Value = serde_json::from_str(policy).ok()?;
    match &policy["maxReceiveCount"] {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_arn_gives_its_account_and_name() {
        assert_eq!(
            parse_arn("arn:aws:sqs:us-east-1:123456789012:redemptions.fifo").unwrap(),
            ("123456789012", "redemptions.fifo")
        );
        assert!(parse_arn("arn:aws:sns:us-east-1:123456789012:topic").is_err());
        assert!(parse_arn("not an arn").is_err());
    }

    #[test]
    fn the_redrive_limit_is_read_whether_sqs_wrote_a_number_or_a_string() {
        assert_eq!(
            redrive_limit(r#"{"deadLetterTargetArn":"arn:x","maxReceiveCount":5}"#),
            Some(5)
        );
        assert_eq!(
            redrive_limit(r#"{"deadLetterTargetArn":"arn:x","maxReceiveCount":"8"}"#),
            Some(8)
        );
        assert_eq!(redrive_limit("{}"), None);
    }
}
