//! SQS behind the `Relay` port: relayed messages go to the redemption queue with
//! `SendMessageBatch` (10 a request, the requests at once), unreadable stream records to
//! the dead-letter queue with their reason as message attributes.

use std::time::Duration;

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use aws_sdk_sqs::Client;
use futures_util::future::join_all;
use sha2::{Digest, Sha256};

use super::sqs_queue::text;
use crate::failure::FailureClass;
use crate::ports::{Relay, RelayFailure, RelayedMessage, UnreadableRecord, ORIGINAL_MESSAGE_ID};

/// SQS takes at most 10 entries in one `SendMessageBatch`.
const BATCH_ENTRIES: usize = 10;
/// SQS caps a message's delay at 15 minutes.
pub const MAX_RELAY_DELAY: Duration = Duration::from_secs(15 * 60);
const MAX_REASON_CHARS: usize = 1000;

#[derive(Debug)]
pub struct SqsRelay {
    client: Client,
    redemption_queue_url: Option<String>,
    dead_letter_queue_url: Option<String>,
    delay: Duration,
}

impl SqsRelay {
    pub fn new(
        client: Client,
        redemption_queue_url: Option<String>,
        dead_letter_queue_url: Option<String>,
        delay: Duration,
    ) -> Self {
        Self {
            client,
            redemption_queue_url,
            dead_letter_queue_url,
            delay: delay.min(MAX_RELAY_DELAY),
        }
    }

    async fn send_chunk(
        &self,
        url: &str,
        chunk: &[RelayedMessage],
    ) -> Vec<Result<(), RelayFailure>> {
        let fifo = is_fifo(url);
        let entries: Vec<SendMessageBatchRequestEntry> = chunk
            .iter()
            .enumerate()
            .map(|(index, message)| entry(index, message, fifo, self.delay))
            .collect();
        let answer = self
            .client
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await;
        let output = match answer {
            Ok(output) => output,
            Err(err) => {
                let err: aws_sdk_sqs::Error = err.into();
                let shared = std::sync::Arc::new(err);
                return chunk
                    .iter()
                    .map(|_| Err(RelayFailure::Failed(Box::new(SharedError(shared.clone())))))
                    .collect();
            }
        };
        let mut outcomes: Vec<Result<(), RelayFailure>> = chunk
            .iter()
            .map(|_| {
                Err(RelayFailure::Refused {
                    code: "NoAnswer".into(),
                    message: "SQS named the entry neither sent nor failed".into(),
                })
            })
            .collect();
        for sent in output.successful() {
            if let Some(slot) = slot_of(&sent.id, &mut outcomes) {
                *slot = Ok(());
            }
        }
        for failed in output.failed() {
            if let Some(slot) = slot_of(&failed.id, &mut outcomes) {
                *slot = Err(RelayFailure::Refused {
                    code: failed.code.clone(),
                    message: failed.message.clone().unwrap_or_default(),
                });
            }
        }
        outcomes
    }
}

fn slot_of<'a>(
    id: &str,
    outcomes: &'a mut [Result<(), RelayFailure>],
) -> Option<&'a mut Result<(), RelayFailure>> {
    id.parse::<usize>()
        .ok()
        .and_then(|index| outcomes.get_mut(index))
}

/// The SDK error of a whole request, shared by the entries it failed.
#[derive(Debug)]
struct SharedError(std::sync::Arc<aws_sdk_sqs::Error>);

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SQS SendMessageBatch failed: {}", self.0)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.0)
    }
}

fn is_fifo(url: &str) -> bool {
    url.ends_with(".fifo")
}

/// One entry: on a standard queue with the relay's delay; on a FIFO queue (which allows no
/// per-message delay) in the discount's group, deduplicated by the order.
fn entry(
    index: usize,
    message: &RelayedMessage,
    fifo: bool,
    delay: Duration,
) -> SendMessageBatchRequestEntry {
    let mut entry = SendMessageBatchRequestEntry::builder()
        .id(index.to_string())
        .message_body(message.body());
    if fifo {
        entry = entry
            .message_group_id(&message.discount_id)
            .message_deduplication_id(deduplication_id(&message.order_id));
    } else {
        entry = entry.delay_seconds(i32::try_from(delay.as_secs()).unwrap_or(i32::MAX));
    }
    entry.build().expect("id and body are set")
}

/// The FIFO deduplication id of an order's relayed message: SQS allows 128 characters from
/// a restricted set, an order id may be 256 of any, so it is the id's SHA-256 in hex.
pub fn deduplication_id(order_id: &str) -> String {
    let digest = Sha256::digest(order_id.as_bytes());
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("order-{hex}")
}

impl Relay for SqsRelay {
    async fn send(&self, messages: &[RelayedMessage]) -> Vec<Result<(), RelayFailure>> {
        let Some(url) = self.redemption_queue_url.as_deref() else {
            return messages
                .iter()
                .map(|_| Err(RelayFailure::NoRedemptionQueue))
                .collect();
        };
        join_all(
            messages
                .chunks(BATCH_ENTRIES)
                .map(|chunk| self.send_chunk(url, chunk)),
        )
        .await
        .into_iter()
        .flatten()
        .collect()
    }

    async fn dead_letter(&self, record: &UnreadableRecord) -> Result<(), RelayFailure> {
        let url = self
            .dead_letter_queue_url
            .as_deref()
            .ok_or(RelayFailure::NoDeadLetterQueue)?;
        let sequence_number = record.sequence_number.as_deref().unwrap_or("(none)");
        let mut send = self
            .client
            .send_message()
            .queue_url(url)
            .message_body(if record.raw.is_empty() {
                "(empty record)"
            } else {
                &record.raw
            })
            .message_attributes("ErrorClass", text(&FailureClass::Permanent.to_string()))
            .message_attributes("ErrorKind", text(record.kind))
            .message_attributes(
                "Reason",
                text(&crate::truncate_chars(&record.reason, MAX_REASON_CHARS)),
            )
            .message_attributes(ORIGINAL_MESSAGE_ID, text(sequence_number));
        if let Some(arn) = &record.stream_arn {
            send = send.message_attributes("SourceStreamArn", text(arn));
        }
        if is_fifo(url) {
            send = send
                .message_group_id("stream-records")
                .message_deduplication_id(deduplication_id(sequence_number));
        }
        send.send().await.map_err(|err| {
            let err: aws_sdk_sqs::Error = err.into();
            RelayFailure::Failed(Box::new(err))
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(order: &str) -> RelayedMessage {
        RelayedMessage {
            order_id: order.into(),
            discount_id: "9b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a10".into(),
            discount_code: "SUMMER25".into(),
        }
    }

    #[test]
    fn a_relayed_message_is_delayed_on_a_standard_queue_and_grouped_by_discount_on_a_fifo_one() {
        let standard = entry(3, &message("ord_1"), false, Duration::from_secs(60));
        assert_eq!(standard.id(), "3");
        assert_eq!(standard.delay_seconds(), Some(60));
        assert_eq!(standard.message_group_id(), None);
        let body: serde_json::Value = serde_json::from_str(standard.message_body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"orderId": "ord_1", "discountId": "9b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a10", "discountCode": "SUMMER25"})
        );

        let fifo = entry(0, &message("ord_1"), true, Duration::from_secs(60));
        assert_eq!(fifo.delay_seconds(), None);
        assert_eq!(
            fifo.message_group_id(),
            Some("9b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a10")
        );
        assert_eq!(
            fifo.message_deduplication_id(),
            Some(deduplication_id("ord_1").as_str())
        );
    }

    #[test]
    fn the_deduplication_id_fits_sqs_for_any_order_id_and_differs_between_orders() {
        let long = "ö/ \u{1F600}".repeat(64);
        for order in ["ord_1", "ord_2", long.as_str()] {
            let id = deduplication_id(order);
            assert!(id.len() <= 128, "{id}");
            assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
            assert_eq!(id, deduplication_id(order), "stable");
        }
        assert_ne!(deduplication_id("ord_1"), deduplication_id("ord_2"));
        // scripts/backfill.py derives the same id, so that a relay and a backfill of one
        // order within SQS's deduplication window are one message (tests/ops/test_backfill.py).
        assert_eq!(
            deduplication_id("ord_1"),
            "order-341fb35e2c016788d2106af198a41b2e61581e5d018095fb5abad7f58890c145"
        );
    }
}
