//! What Lambda's SQS event source hands the function, and what it answers: message
//! bodies, records, the event's payload, and the partial batch response.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage, SqsMessageAttribute};
use serde_json::Value;
use uuid::Uuid;

use crate::REGION;

/// A message body as the checkout sends it.
pub fn body(order: &str, discount: Uuid, code: &str) -> String {
    serde_json::json!({"orderId": order, "discountId": discount, "discountCode": code}).to_string()
}

/// One SQS record, built as the event source mapping builds it. Without a source ARN and
/// a receipt handle (the defaults) the function cannot change the message's visibility
/// or read the queue's redrive policy: it only answers which messages failed.
#[derive(Debug, Clone)]
pub struct Record(SqsMessage);

impl Record {
    /// A first receive (`ApproximateReceiveCount` 1) of `body`.
    pub fn new(message_id: &str, body: &str) -> Record {
        let mut message = SqsMessage::default();
        message.message_id = Some(message_id.to_owned());
        message.body = Some(body.to_owned());
        message
            .attributes
            .insert("ApproximateReceiveCount".into(), "1".into());
        message.event_source = Some("aws:sqs".into());
        message.aws_region = Some(REGION.into());
        Record(message)
    }

    /// The record for a message received from a queue (moto's or a simulated one).
    pub fn received(message: &aws_sdk_sqs::types::Message, source_arn: &str) -> Record {
        let mut record = SqsMessage::default();
        record.message_id = message.message_id.clone();
        record.receipt_handle = message.receipt_handle.clone();
        record.body = message.body.clone();
        record.md5_of_body = message.md5_of_body.clone();
        record.md5_of_message_attributes = message.md5_of_message_attributes.clone();
        record.attributes = message
            .attributes()
            .map(|a| {
                a.iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        record.message_attributes = message
            .message_attributes()
            .map(|a| {
                a.iter()
                    .map(|(k, v)| {
                        let mut attribute = SqsMessageAttribute::default();
                        attribute.data_type = Some(v.data_type.clone());
                        attribute.string_value = v.string_value.clone();
                        attribute.string_list_values = v.string_list_values().to_vec();
                        (k.clone(), attribute)
                    })
                    .collect()
            })
            .unwrap_or_default();
        record.event_source_arn = Some(source_arn.to_owned());
        record.event_source = Some("aws:sqs".into());
        record.aws_region = Some(REGION.into());
        Record(record)
    }

    pub fn receipt_handle(mut self, handle: &str) -> Record {
        self.0.receipt_handle = Some(handle.to_owned());
        self
    }

    pub fn source_arn(mut self, arn: &str) -> Record {
        self.0.event_source_arn = Some(arn.to_owned());
        self
    }

    pub fn receive_count(self, count: u32) -> Record {
        self.attribute("ApproximateReceiveCount", &count.to_string())
    }

    /// A FIFO queue's message group.
    pub fn group(self, group: &str) -> Record {
        self.attribute("MessageGroupId", group)
    }

    pub fn attribute(mut self, name: &str, value: &str) -> Record {
        self.0.attributes.insert(name.to_owned(), value.to_owned());
        self
    }

    pub fn message_id(&self) -> &str {
        self.0.message_id.as_deref().unwrap_or_default()
    }

    pub fn body(&self) -> &str {
        self.0.body.as_deref().unwrap_or_default()
    }

    /// `ApproximateReceiveCount`, 0 if the record has none.
    pub fn receives(&self) -> u32 {
        self.0
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    pub fn build(self) -> SqsMessage {
        self.0
    }
}

/// The event's payload for `records`, as the Runtime API hands it to a function process.
pub fn event_json(records: &[Record]) -> Value {
    let mut event = SqsEvent::default();
    event.records = records.iter().map(|r| r.0.clone()).collect();
    serde_json::to_value(event).expect("an SQS event serializes")
}

/// The messages to deliver again, sorted.
pub fn failed_ids(response: &SqsBatchResponse) -> Vec<String> {
    let mut ids: Vec<String> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    ids.sort();
    ids
}

/// The same from a function process's JSON answer; `None` if it is not a partial batch
/// response.
pub fn failed_ids_json(response: &Value) -> Option<Vec<String>> {
    let response: SqsBatchResponse = serde_json::from_value(response.clone()).ok()?;
    Some(failed_ids(&response))
}
