//! Lambda's SQS event source mapping, played by a test: receive a batch, hand it to the
//! function, delete what it acknowledged. What it reported failed, and a whole batch whose
//! invocation crashed or timed out, stays in the queue: it is received again once its
//! visibility timeout (or the delay the function set) ends, or the redrive policy moves it
//! to the dead-letter queue. Every receive and every invocation is logged, for assertions
//! on redelivery and for failure messages.
//!
//! It works through the SQS API, so on moto and on the simulated SQS alike; several
//! workers may share one (each invocation is one `receive` and one `finish`).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use lambda_runtime::LambdaEvent;
use polar_discount_sync::lambda::ProductionHandler;
use serde_json::Value;

use super::queues::Queues;
use super::sqs::{event_json, event_of, failed_ids, Record};

/// moto's clock (wall time, whole milliseconds) and the delays' rounding to whole seconds,
/// against the test's monotonic clock.
pub const CLOCK_TOLERANCE: Duration = Duration::from_millis(150);

/// What became of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The function answered: these messages are to be delivered again.
    Failed(Vec<String>),
    /// Simulated crash (a panic in process) or a killed function process.
    Crashed,
    TimedOut,
    /// The invocation failed as a whole for another reason.
    Errored(String),
}

/// One receive of one message.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub message_id: String,
    /// Just after ReceiveMessage answered.
    pub at: Instant,
    pub receive_count: u32,
    pub invocation: usize,
}

/// One invocation: its records in batch order, and what it answered.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub ids: Vec<String>,
    /// `None` while it runs.
    pub answer: Option<Answer>,
    /// The messages that stay in the queue: those reported failed, or all of them when
    /// the invocation gave no answer.
    pub failed: HashSet<String>,
}

/// A received batch, to be handed to one invocation.
pub struct Batch {
    pub invocation: usize,
    pub records: Vec<Record>,
    receipts: Vec<(String, String)>,
}

impl Batch {
    pub fn ids(&self) -> Vec<String> {
        self.receipts.iter().map(|(id, _)| id.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// The Lambda event, with a deadline `timeout` from now.
    pub fn event(&self, timeout: Duration) -> LambdaEvent<SqsEvent> {
        event_of(self.records.clone(), timeout)
    }

    /// The event's payload, for a function process.
    pub fn event_json(&self) -> Value {
        event_json(&self.records)
    }
}

#[derive(Default)]
struct Log {
    receipts: Vec<Receipt>,
    invocations: Vec<Invocation>,
    /// Message ids deleted after an invocation acknowledged them, in order.
    acknowledged: Vec<String>,
    /// Ids named in a batch's failures that were not in the batch.
    strangers: Vec<String>,
    /// Copies the function sent again (contention), to the message checkout sent.
    origins: HashMap<String, String>,
    /// Each copy's `RequeueCount`.
    requeue_counts: HashMap<String, u32>,
    /// When checkout first sent each message: `FirstSentAt` on copies, else `SentTimestamp`.
    first_sent_at: HashMap<String, u64>,
}

pub struct EventSource {
    pub queues: Queues,
    log: Mutex<Log>,
}

impl EventSource {
    pub fn new(queues: Queues) -> EventSource {
        EventSource {
            queues,
            log: Mutex::default(),
        }
    }

    /// Receives up to `max` messages (short polling: moto serves one request at a time,
    /// so a long poll would stall every other test's requests).
    pub async fn receive(&self, max: usize) -> Option<Batch> {
        let output = self
            .queues
            .sqs
            .receive_message()
            .queue_url(&self.queues.source_url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .wait_time_seconds(0)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap_or_else(|e| panic!("ReceiveMessage on the source queue: {e:?}"));
        let at = Instant::now();
        let messages = output.messages.unwrap_or_default();
        if messages.is_empty() {
            return None;
        }
        let records: Vec<Record> = messages
            .iter()
            .map(|m| Record::received(m, &self.queues.source_arn))
            .collect();
        let receipts: Vec<(String, String)> = messages
            .iter()
            .map(|m| {
                (
                    m.message_id.clone().expect("SQS gives every message an id"),
                    m.receipt_handle.clone().expect("a receipt handle"),
                )
            })
            .collect();
        let mut log = self.log.lock().unwrap();
        for message in &messages {
            let original = message
                .message_attributes()
                .and_then(|a| a.get("OriginalMessageId"))
                .and_then(|a| a.string_value());
            if let (Some(id), Some(original)) = (message.message_id(), original) {
                log.origins.insert(id.to_owned(), original.to_owned());
            }
            let requeues = message
                .message_attributes()
                .and_then(|a| a.get("RequeueCount"))
                .and_then(|a| a.string_value()?.parse().ok());
            if let (Some(id), Some(requeues)) = (message.message_id(), requeues) {
                log.requeue_counts.insert(id.to_owned(), requeues);
            }
            let first_sent_at = message
                .message_attributes()
                .and_then(|a| a.get("FirstSentAt"))
                .and_then(|a| a.string_value())
                .or_else(|| {
                    message
                        .attributes()
                        .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                        .map(String::as_str)
                })
                .and_then(|ms| ms.parse().ok());
            if let (Some(id), Some(at)) = (message.message_id(), first_sent_at) {
                log.first_sent_at.insert(id.to_owned(), at);
            }
        }
        let invocation = log.invocations.len();
        for record in &records {
            assert!(
                record.receives() > 0,
                "ApproximateReceiveCount is requested"
            );
            log.receipts.push(Receipt {
                message_id: record.message_id().to_owned(),
                at,
                receive_count: record.receives(),
                invocation,
            });
        }
        log.invocations.push(Invocation {
            ids: receipts.iter().map(|(id, _)| id.clone()).collect(),
            answer: None,
            failed: HashSet::new(),
        });
        Some(Batch {
            invocation,
            records,
            receipts,
        })
    }

    /// Ends an invocation: deletes what it acknowledged, if it answered.
    pub async fn finish(&self, batch: Batch, answer: Answer) {
        let failed: HashSet<String> = match &answer {
            Answer::Failed(ids) => ids.iter().cloned().collect(),
            _ => batch.ids().into_iter().collect(),
        };
        let done: Vec<&(String, String)> = batch
            .receipts
            .iter()
            .filter(|(id, _)| !failed.contains(id))
            .collect();
        if !done.is_empty() {
            let entries = done
                .iter()
                .enumerate()
                .map(|(i, (_, receipt))| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(receipt)
                        .build()
                        .expect("id and receipt handle are set")
                })
                .collect();
            let deleted = self
                .queues
                .sqs
                .delete_message_batch()
                .queue_url(&self.queues.source_url)
                .set_entries(Some(entries))
                .send()
                .await
                .unwrap_or_else(|e| panic!("DeleteMessageBatch: {e:?}"));
            assert!(
                deleted.failed.is_empty(),
                "DeleteMessageBatch failed for {:?}",
                deleted.failed
            );
        }
        let ids = batch.ids();
        let mut log = self.log.lock().unwrap();
        log.acknowledged
            .extend(done.iter().map(|(id, _)| id.clone()));
        log.strangers
            .extend(failed.iter().filter(|id| !ids.contains(id)).cloned());
        let invocation = &mut log.invocations[batch.invocation];
        invocation.answer = Some(answer);
        invocation.failed = failed;
    }

    /// Receives one batch; if there is one, invokes `handler` with a deadline `timeout`
    /// away and deletes what it acknowledged. Returns the invocation's index.
    pub async fn poll(&self, handler: &ProductionHandler, timeout: Duration) -> Option<usize> {
        let batch = self.receive(10).await?;
        let invocation = batch.invocation;
        let ids = batch.ids();
        let response = handler
            .handle(batch.event(timeout))
            .await
            .unwrap_or_else(|e| panic!("invocation {invocation} failed as a whole: {e}"));
        let failed = failed_ids(&response);
        for id in &failed {
            assert!(
                ids.contains(id),
                "invocation {invocation} reported {id} failed, which was not in its batch {ids:?}"
            );
        }
        self.finish(batch, Answer::Failed(failed)).await;
        Some(invocation)
    }

    /// Polls until the source queue holds nothing, visible or in flight.
    pub async fn drain(
        &self,
        handler: &ProductionHandler,
        timeout: Duration,
        bound: Duration,
        labels: &HashMap<String, String>,
    ) {
        let start = Instant::now();
        loop {
            if self.poll(handler, timeout).await.is_some() {
                continue;
            }
            if self.queues.outstanding().await == 0 {
                return;
            }
            if start.elapsed() > bound {
                panic!(
                    "the source queue did not drain within {bound:?}; {} messages left.\n{}",
                    self.queues.outstanding().await,
                    self.history(labels)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Invocations received and not finished yet.
    pub fn in_flight(&self) -> usize {
        let log = self.log.lock().unwrap();
        log.invocations
            .iter()
            .filter(|i| i.answer.is_none())
            .count()
    }

    pub fn invocation(&self, index: usize) -> Invocation {
        self.log.lock().unwrap().invocations[index].clone()
    }

    pub fn invocations(&self) -> Vec<Invocation> {
        self.log.lock().unwrap().invocations.clone()
    }

    pub fn receipts(&self) -> Vec<Receipt> {
        self.log.lock().unwrap().receipts.clone()
    }

    pub fn receipts_of(&self, id: &str) -> Vec<Receipt> {
        let log = self.log.lock().unwrap();
        log.receipts
            .iter()
            .filter(|r| r.message_id == id)
            .cloned()
            .collect()
    }

    pub fn acknowledged(&self) -> Vec<String> {
        self.log.lock().unwrap().acknowledged.clone()
    }

    /// The message checkout sent that `id` is a copy of; `id` itself if it is no copy.
    pub fn original_of(&self, id: &str) -> String {
        let log = self.log.lock().unwrap();
        log.origins
            .get(id)
            .cloned()
            .unwrap_or_else(|| id.to_owned())
    }

    /// The id of the last delivery of `original`'s chain of copies (`original` if it has
    /// none): the one whose receives counted toward the dead-letter queue last.
    pub fn last_copy_of(&self, original: &str) -> String {
        self.receipts()
            .into_iter()
            .filter(|r| self.original_of(&r.message_id) == original)
            .max_by_key(|r| r.at)
            .map_or_else(|| original.to_owned(), |r| r.message_id)
    }

    /// The `RequeueCount` of a copy the function sent again.
    pub fn requeue_count(&self, id: &str) -> Option<u32> {
        self.log.lock().unwrap().requeue_counts.get(id).copied()
    }

    /// When checkout first sent the message `id` (epoch ms), as the message says.
    pub fn first_sent_at(&self, id: &str) -> Option<u64> {
        self.log.lock().unwrap().first_sent_at.get(id).copied()
    }

    /// Every copy the function sent again and was received, with its original.
    pub fn copies(&self) -> HashMap<String, String> {
        self.log.lock().unwrap().origins.clone()
    }

    pub fn strangers(&self) -> Vec<String> {
        self.log.lock().unwrap().strangers.clone()
    }

    /// Each labelled message's receives (receive count, seconds since the first receive
    /// of all, failed or acknowledged), for failure messages.
    pub fn history(&self, labels: &HashMap<String, String>) -> String {
        let log = self.log.lock().unwrap();
        let origin = log.receipts.first().map(|r| r.at);
        let mut out = String::new();
        let mut ids: Vec<&String> = labels.keys().collect();
        ids.sort_by_key(|id| &labels[*id]);
        for id in ids {
            let _ = write!(out, "  {:<12} {id}:", labels[id]);
            for r in log.receipts.iter().filter(|r| r.message_id == *id) {
                let invocation = &log.invocations[r.invocation];
                let state = match &invocation.answer {
                    None => "(running)",
                    Some(Answer::Failed(_)) if invocation.failed.contains(id) => "(failed)",
                    Some(Answer::Failed(_)) => "(ack)",
                    Some(Answer::Crashed) => "(crashed)",
                    Some(Answer::TimedOut) => "(timed out)",
                    Some(Answer::Errored(_)) => "(errored)",
                };
                let _ = write!(
                    out,
                    " #{}@{:.1}s{state}",
                    r.receive_count,
                    origin.map_or(0.0, |o| r.at.duration_since(o).as_secs_f64()),
                );
            }
            out.push('\n');
        }
        out
    }

    /// Every time a message was reported failed and came back, the gap between the two
    /// receives is at least `minimum(message id, receive count)`.
    pub fn assert_redelivery_gaps(
        &self,
        labels: &HashMap<String, String>,
        minimum: impl Fn(&str, u32) -> Duration,
    ) {
        for (id, label) in labels {
            let receipts = self.receipts_of(id);
            for pair in receipts.windows(2) {
                let (earlier, later) = (&pair[0], &pair[1]);
                assert!(
                    self.invocation(earlier.invocation).failed.contains(id),
                    "{label} ({id}) was received again after it was acknowledged\n{}",
                    self.history(labels)
                );
                let floor = minimum(id, earlier.receive_count);
                let gap = later.at.duration_since(earlier.at);
                assert!(
                    gap + CLOCK_TOLERANCE >= floor,
                    "{label} ({id}) came back {gap:?} after its receive #{}, sooner than {floor:?}\n{}",
                    earlier.receive_count,
                    self.history(labels)
                );
            }
        }
    }
}
