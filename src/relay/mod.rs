//! The orders table's stream as a second trigger: each record is decided from the record
//! alone (`record::decide`), an order whose message may never have arrived is relayed to
//! the redemption queue, where the queue's retries and exactly-once handling take over, an
//! unreadable record is dead-lettered with its reason, and everything else is
//! acknowledged. The answer lists only the records whose relay failed, by sequence number.

mod record;

use std::time::Duration;

use futures_util::future::join_all;
use serde::Serialize;
use serde_json::Value;
use thiserror::Error;
use tracing::{error, info, warn};

pub use record::{decide, DecidedRecord, Decision, IgnoreReason, RecordError};

use crate::deadline::Deadline;
use crate::ports::{Relay, RelayFailure, RelayedMessage, UnreadableRecord};
use crate::telemetry::{Count, Metrics};

/// Left of the invocation for answering: sends still running then are given up and their
/// records listed, so that the answer, not a timeout, reaches Lambda.
pub const ANSWER_MARGIN: Duration = Duration::from_millis(500);
/// A dead letter's body keeps this much of the record (SQS takes 256 KiB at most).
const MAX_DEAD_LETTER_BODY_CHARS: usize = 200 * 1024;

/// The partial batch response of a DynamoDB Streams event source mapping.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamBatchResponse {
    pub batch_item_failures: Vec<ItemFailure>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemFailure {
    pub item_identifier: String,
}

impl StreamBatchResponse {
    pub fn failed_sequence_numbers(&self) -> Vec<&str> {
        self.batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect()
    }
}

#[derive(Debug, Error)]
pub enum StreamError {
    /// A record that must be delivered again but has no sequence number to report it by:
    /// only a failed invocation gets the batch delivered again.
    #[error("stream record {index} could not be {what} and has no SequenceNumber to report it by")]
    Unreportable { index: usize, what: &'static str },
}

/// What became of one record.
#[derive(Debug)]
enum Outcome {
    Relayed,
    Ignored(IgnoreReason),
    DeadLettered,
    /// To be delivered again.
    Failed(&'static str),
}

/// Relays the records of one stream event (the event's `Records`).
pub async fn relay_records<R: Relay>(
    relay: &R,
    metrics: &Metrics,
    records: &[Value],
    deadline: Deadline,
) -> Result<StreamBatchResponse, StreamError> {
    let decided: Vec<DecidedRecord> = records.iter().map(decide).collect();
    let relayed: Vec<(usize, RelayedMessage)> = decided
        .iter()
        .enumerate()
        .filter_map(|(index, record)| match &record.decision {
            Decision::Relay(message) => Some((index, message.clone())),
            _ => None,
        })
        .collect();
    let unreadable: Vec<(usize, UnreadableRecord)> = decided
        .iter()
        .enumerate()
        .filter_map(|(index, record)| match &record.decision {
            Decision::Unreadable(err) => {
                Some((index, dead_letter_of(record, err, &records[index])))
            }
            _ => None,
        })
        .collect();

    let messages: Vec<RelayedMessage> = relayed.iter().map(|(_, m)| m.clone()).collect();
    let letters = join_all(
        unreadable
            .iter()
            .map(|(_, record)| relay.dead_letter(record)),
    );
    let budget = deadline.remaining().saturating_sub(ANSWER_MARGIN);
    let sends = async {
        if messages.is_empty() {
            Vec::new()
        } else {
            relay.send(&messages).await
        }
    };
    let (sent, lettered) =
        match tokio::time::timeout(budget, futures_util::future::join(sends, letters)).await {
            Ok(done) => done,
            Err(_) => (
                messages.iter().map(|_| Err(out_of_time())).collect(),
                unreadable.iter().map(|_| Err(out_of_time())).collect(),
            ),
        };

    let mut outcomes: Vec<Option<(Outcome, Option<RelayFailure>)>> =
        decided.iter().map(|_| None).collect();
    for ((index, _), result) in relayed.iter().zip(sent) {
        outcomes[*index] = Some(match result {
            Ok(()) => (Outcome::Relayed, None),
            Err(err) => (Outcome::Failed("relay_failed"), Some(err)),
        });
    }
    for ((index, _), result) in unreadable.iter().zip(lettered) {
        outcomes[*index] = Some(match result {
            Ok(()) => (Outcome::DeadLettered, None),
            Err(err) => (Outcome::Failed("dead_letter_failed"), Some(err)),
        });
    }

    let mut response = StreamBatchResponse::default();
    for (index, (record, outcome)) in decided.iter().zip(outcomes).enumerate() {
        let (outcome, failure) = outcome.unwrap_or_else(|| match record.decision {
            Decision::Ignore(reason) => (Outcome::Ignored(reason), None),
            // Every relayed and unreadable record got an outcome above.
            _ => (Outcome::Failed("no_outcome"), None),
        });
        log_outcome(record, &outcome, failure.as_ref());
        match outcome {
            Outcome::Relayed => metrics.count(Count::StreamRecordsRelayed, 1),
            Outcome::Ignored(_) => metrics.count(Count::StreamRecordsIgnored, 1),
            Outcome::DeadLettered => metrics.count(Count::StreamRecordsDeadLettered, 1),
            Outcome::Failed(what) => {
                metrics.count(Count::StreamRelayFailures, 1);
                let sequence_number = record
                    .sequence_number
                    .clone()
                    .ok_or(StreamError::Unreportable { index, what })?;
                response.batch_item_failures.push(ItemFailure {
                    item_identifier: sequence_number,
                });
            }
        }
    }
    Ok(response)
}

/// Shadow mode (`SHADOW_MODE=true`): each record decided and its outcome line logged with
/// `shadow=true` (`would_relay`, `ignored`, `would_dead_letter`), nothing sent to any queue,
/// and every record acknowledged.
pub fn plan_records(records: &[Value]) -> StreamBatchResponse {
    for record in records.iter().map(decide) {
        let sequence_number = record.sequence_number.as_deref();
        let event_name = record.event_name.as_deref();
        match &record.decision {
            Decision::Relay(message) => info!(
                shadow = true,
                sequenceNumber = sequence_number,
                eventName = event_name,
                orderId = message.order_id.as_str(),
                discountId = message.discount_id.as_str(),
                outcome = "would_relay",
                "shadow: stream record would be relayed; nothing sent"
            ),
            Decision::Ignore(reason) => info!(
                shadow = true,
                sequenceNumber = sequence_number,
                eventName = event_name,
                outcome = "ignored",
                reason = reason.as_str(),
                "shadow: stream record ignored"
            ),
            Decision::Unreadable(err) => warn!(
                shadow = true, sequenceNumber = sequence_number, eventName = event_name,
                outcome = "would_dead_letter", kind = err.kind(), reason = %err,
                "shadow: unreadable stream record would be dead-lettered; nothing sent"
            ),
        }
    }
    StreamBatchResponse::default()
}

fn out_of_time() -> RelayFailure {
    RelayFailure::Failed("the invocation's deadline came before SQS answered".into())
}

fn dead_letter_of(record: &DecidedRecord, err: &RecordError, raw: &Value) -> UnreadableRecord {
    UnreadableRecord {
        sequence_number: record.sequence_number.clone(),
        stream_arn: record.stream_arn.clone(),
        kind: err.kind(),
        reason: err.to_string(),
        raw: crate::truncate_chars(&raw.to_string(), MAX_DEAD_LETTER_BODY_CHARS),
    }
}

/// One line per record: `sequenceNumber`, `eventName`, `orderId`, `discountId`, `outcome`,
/// then why.
fn log_outcome(record: &DecidedRecord, outcome: &Outcome, failure: Option<&RelayFailure>) {
    let sequence_number = record.sequence_number.as_deref();
    let event_name = record.event_name.as_deref();
    let message = match &record.decision {
        Decision::Relay(message) => Some(message),
        _ => None,
    };
    let order_id = message.map(|m| m.order_id.as_str());
    let discount_id = message.map(|m| m.discount_id.as_str());
    match (outcome, &record.decision) {
        (Outcome::Relayed, _) => info!(
            sequenceNumber = sequence_number,
            eventName = event_name,
            orderId = order_id,
            discountId = discount_id,
            outcome = "relayed",
            "stream record relayed to the redemption queue"
        ),
        (Outcome::Ignored(reason), _) => info!(
            sequenceNumber = sequence_number,
            eventName = event_name,
            outcome = "ignored",
            reason = reason.as_str(),
            "stream record ignored"
        ),
        (Outcome::DeadLettered, Decision::Unreadable(err)) => warn!(
            sequenceNumber = sequence_number, eventName = event_name, outcome = "dead_lettered",
            kind = err.kind(), reason = %err, "unreadable stream record dead-lettered"
        ),
        (Outcome::DeadLettered, _) => {}
        (Outcome::Failed(what), _) => {
            let error = failure.map(|f| crate::error_chain(f));
            match failure {
                Some(RelayFailure::NoRedemptionQueue) => error!(
                    sequenceNumber = sequence_number, eventName = event_name, orderId = order_id,
                    discountId = discount_id, outcome = *what, error = error.as_deref(),
                    "stream record not relayed: REDEMPTION_QUEUE_URL is missing; it will be delivered again"
                ),
                _ => warn!(
                    sequenceNumber = sequence_number, eventName = event_name, orderId = order_id,
                    discountId = discount_id, outcome = *what, error = error.as_deref(),
                    "stream record not relayed; it will be delivered again"
                ),
            }
        }
    }
}
