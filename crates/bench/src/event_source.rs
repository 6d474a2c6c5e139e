//! Lambda's SQS event source mapping, played against a real moto queue (adapted from
//! `tests/support/event_source.rs`): each container's poller receives a batch, invokes its
//! container, and deletes what the invocation acknowledged. What it reported failed, and a
//! whole batch whose invocation timed out or errored, stays in the queue until its
//! visibility ends (or the delay the function set), or the redrive policy moves it to the
//! dead-letter queue.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage, SqsMessageAttribute};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use serde_json::Value;

use crate::container::Container;
use crate::fixtures::{Queues, REGION};
use crate::original::OriginalSync;

/// How long an idle poller waits before it asks the queue again. Short polling: moto
/// serves one request at a time, so a long poll would stall the function's requests; and
/// moto's receive walks the whole queue, so idle pollers must not keep it busy either.
const IDLE_POLL: Duration = Duration::from_millis(250);
/// How often, at most, an idle poller asks whether the queue is drained.
const DRAIN_CHECK_EVERY: Duration = Duration::from_millis(500);
/// The most messages kept in the queue at once (sent and not deleted yet): the rest of a
/// workload waits in the bench and is sent as batches are deleted. moto's ReceiveMessage
/// takes about 0.5 ms per message in the queue, and moto serves one request at a time, so
/// 2,000 queued messages would make every receive take a second and stall the function's
/// DynamoDB requests behind it. 100 is one of the function's batches: pollers share it, so
/// the flash sale's batches hold 20 to 60 messages.
pub const QUEUE_DEPTH: usize = 100;

/// How the event source mapping gathers a batch: up to `size` messages, waiting up to
/// `window` for more once the first arrived (Lambda's `BatchSize` and
/// `MaximumBatchingWindowInSeconds`). SQS hands out at most 10 per receive.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    pub size: usize,
    pub window: Duration,
}

impl Batching {
    /// The template's standard-queue settings, chosen for coalescing (docs/design.md, "Hot codes").
    pub const TEMPLATE: Batching = Batching {
        size: 100,
        window: Duration::from_secs(1),
    };
    /// Lambda's defaults for an SQS trigger, as the original function was deployed.
    pub const LAMBDA_DEFAULT: Batching = Batching {
        size: 10,
        window: Duration::ZERO,
    };
}

impl std::fmt::Display for Batching {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.window.is_zero() {
            write!(f, "up to {}, no window", self.size)
        } else {
            let window = self.window.as_secs_f64();
            write!(f, "up to {} messages over up to {window} s", self.size)
        }
    }
}

/// While a batch is gathered, how long a poller waits before asking an empty queue again.
const GATHER_POLL: Duration = Duration::from_millis(100);

/// What became of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The function answered: these messages are to be delivered again.
    Failed(Vec<String>),
    TimedOut,
    /// The invocation failed as a whole.
    Errored(String),
}

/// What runs an invocation: the function binary in its container, or the original
/// algorithm's port in process.
pub enum Invoker {
    Function(Container),
    Original(OriginalSync),
}

impl Invoker {
    async fn invoke(&self, batch: &Batch, timeout: Duration) -> Answer {
        match self {
            Invoker::Function(container) => container.invoke(batch.event_json(), timeout).await,
            // Lambda ends an invocation at its timeout, whatever it was doing.
            Invoker::Original(original) => {
                match tokio::time::timeout(timeout, original.handle(&batch.messages())).await {
                    Ok(failed) => Answer::Failed(failed),
                    Err(_) => Answer::TimedOut,
                }
            }
        }
    }
}

/// A received batch, for one invocation.
pub struct Batch {
    records: Vec<SqsMessage>,
}

impl Batch {
    fn ids(&self) -> Vec<String> {
        self.records
            .iter()
            .filter_map(|r| r.message_id.clone())
            .collect()
    }

    /// `(message id, body)` of each record, in batch order.
    fn messages(&self) -> Vec<(String, String)> {
        self.records
            .iter()
            .map(|r| {
                (
                    r.message_id.clone().unwrap_or_default(),
                    r.body.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// The event as the Runtime API hands it to the function.
    fn event_json(&self) -> Value {
        let mut event = SqsEvent::default();
        event.records = self.records.clone();
        serde_json::to_value(event).expect("an SQS event serializes")
    }
}

/// What the pollers saw.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub first_invoke: Option<Instant>,
    /// When the last invocation's acknowledged messages were deleted.
    pub last_finish: Option<Instant>,
    pub invocations: usize,
    pub timed_out: usize,
    pub errored: usize,
    /// One example of a whole-invocation error, for the report.
    pub first_error: Option<String>,
    /// Receives of messages (a message received three times counts three).
    pub receives: usize,
    pub most_receives_of_one_message: u32,
    pub drained: bool,
    /// The invocations' durations summed, each from the invoke to its answer.
    pub invoke_time: Duration,
    /// The same, each rounded up to the millisecond as Lambda bills it.
    pub billed_millis: u64,
    /// ReceiveMessage requests that returned messages (the event source mapping's, billed
    /// to the account); those that found the queue empty are in `empty_receive_requests`.
    pub receive_requests: usize,
    pub empty_receive_requests: usize,
    /// DeleteMessageBatch requests for the acknowledged messages.
    pub delete_requests: usize,
}

impl Progress {
    /// From the first invocation to the last one's deletions.
    pub fn wall_time(&self) -> Option<Duration> {
        Some(self.last_finish?.duration_since(self.first_invoke?))
    }
}

pub struct EventSource {
    sqs: aws_sdk_sqs::Client,
    queues: Queues,
    progress: Mutex<Progress>,
    last_drain_check: Mutex<Option<Instant>>,
    feed: Mutex<Feed>,
}

/// The workload's messages not sent yet, and how many of those sent are still queued.
#[derive(Default)]
struct Feed {
    waiting: VecDeque<String>,
    in_queue: usize,
}

impl EventSource {
    pub fn new(sqs: aws_sdk_sqs::Client, queues: Queues) -> EventSource {
        EventSource {
            sqs,
            queues,
            progress: Mutex::default(),
            last_drain_check: Mutex::default(),
            feed: Mutex::default(),
        }
    }

    pub fn progress(&self) -> Progress {
        self.progress.lock().unwrap().clone()
    }

    /// Forget what was seen so far (after a warm-up).
    pub fn reset(&self) {
        *self.progress.lock().unwrap() = Progress::default();
        *self.feed.lock().unwrap() = Feed::default();
    }

    /// Sends `messages` (up to `QUEUE_DEPTH` at a time), with one poller per invoker, all on
    /// the same queue, until every message was sent and the queue holds nothing (visible,
    /// in flight or delayed), or `bound` has passed.
    pub async fn drain(
        &self,
        invokers: &[Invoker],
        messages: Vec<String>,
        batching: Batching,
        timeout: Duration,
        bound: Duration,
    ) {
        self.feed.lock().unwrap().waiting.extend(messages);
        self.top_up().await;
        let give_up_at = Instant::now() + bound;
        let drained = AtomicBool::new(false);
        let pollers = invokers.iter().map(|invoker| {
            self.poll_until_drained(invoker, batching, timeout, give_up_at, &drained)
        });
        futures_util::future::join_all(pollers).await;
        self.progress.lock().unwrap().drained = drained.load(Ordering::SeqCst);
    }

    /// Gathers one batch as `batching` says and hands it to `invoker`; false if the queue
    /// had nothing visible.
    pub async fn poll_once(
        &self,
        invoker: &Invoker,
        batching: Batching,
        timeout: Duration,
    ) -> bool {
        let Some(batch) = self.gather(batching).await else {
            return false;
        };
        self.progress
            .lock()
            .unwrap()
            .first_invoke
            .get_or_insert_with(Instant::now);
        let invoked_at = Instant::now();
        let answer = invoker.invoke(&batch, timeout).await;
        let took = invoked_at.elapsed();
        {
            let mut progress = self.progress.lock().unwrap();
            progress.invoke_time += took;
            progress.billed_millis += billed_millis(took);
        }
        self.finish(batch, answer).await;
        true
    }

    async fn poll_until_drained(
        &self,
        invoker: &Invoker,
        batching: Batching,
        timeout: Duration,
        give_up_at: Instant,
        drained: &AtomicBool,
    ) {
        while !drained.load(Ordering::SeqCst) && Instant::now() < give_up_at {
            self.top_up().await;
            if self.poll_once(invoker, batching, timeout).await {
                continue;
            }
            let all_sent = self.feed.lock().unwrap().waiting.is_empty();
            if all_sent && self.drain_check_due() && self.outstanding().await == 0 {
                drained.store(true, Ordering::SeqCst);
                return;
            }
            tokio::time::sleep(IDLE_POLL).await;
        }
    }

    /// Sends waiting messages while the queue holds fewer than `QUEUE_DEPTH`, in whole
    /// batches of 10 unless fewer are left.
    async fn top_up(&self) {
        let batch: Vec<String> = {
            let mut feed = self.feed.lock().unwrap();
            let room = QUEUE_DEPTH.saturating_sub(feed.in_queue);
            let count = room.min(feed.waiting.len());
            if count == 0 || (count < 10 && count < feed.waiting.len()) {
                return;
            }
            feed.in_queue += count;
            feed.waiting.drain(..count).collect()
        };
        self.queues.send(&self.sqs, &batch).await;
    }

    /// True at most once per `DRAIN_CHECK_EVERY` across all pollers.
    fn drain_check_due(&self) -> bool {
        let mut last = self.last_drain_check.lock().unwrap();
        let due = last.is_none_or(|at| at.elapsed() >= DRAIN_CHECK_EVERY);
        if due {
            *last = Some(Instant::now());
        }
        due
    }

    /// Receives until the batch is full or its window has passed since the first message.
    async fn gather(&self, batching: Batching) -> Option<Batch> {
        let mut batch = self.receive(batching.size).await?;
        let window_ends = Instant::now() + batching.window;
        while batch.records.len() < batching.size && Instant::now() < window_ends {
            self.top_up().await;
            match self.receive(batching.size - batch.records.len()).await {
                Some(more) => batch.records.extend(more.records),
                None => tokio::time::sleep(GATHER_POLL.min(window_ends - Instant::now())).await,
            }
        }
        Some(batch)
    }

    async fn receive(&self, max: usize) -> Option<Batch> {
        let output = self
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
        let messages = output.messages.unwrap_or_default();
        if messages.is_empty() {
            self.progress.lock().unwrap().empty_receive_requests += 1;
            return None;
        }
        let records: Vec<SqsMessage> = messages
            .iter()
            .map(|m| record(m, &self.queues.source_arn))
            .collect();
        let mut progress = self.progress.lock().unwrap();
        progress.receive_requests += 1;
        progress.receives += records.len();
        for record in &records {
            let count = record
                .attributes
                .get("ApproximateReceiveCount")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            progress.most_receives_of_one_message =
                progress.most_receives_of_one_message.max(count);
        }
        Some(Batch { records })
    }

    /// Ends an invocation: deletes what it acknowledged.
    async fn finish(&self, batch: Batch, answer: Answer) {
        let failed: HashSet<String> = match &answer {
            Answer::Failed(ids) => ids.iter().cloned().collect(),
            Answer::TimedOut | Answer::Errored(_) => batch.ids().into_iter().collect(),
        };
        let entries: Vec<DeleteMessageBatchRequestEntry> = batch
            .records
            .iter()
            .filter(|r| !r.message_id.as_ref().is_some_and(|id| failed.contains(id)))
            .enumerate()
            .map(|(i, r)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(r.receipt_handle.clone().unwrap_or_default())
                    .build()
                    .expect("id and receipt handle are set")
            })
            .collect();
        if !entries.is_empty() {
            self.progress.lock().unwrap().delete_requests += 1;
            let deleted = self
                .sqs
                .delete_message_batch()
                .queue_url(&self.queues.source_url)
                .set_entries(Some(entries))
                .send()
                .await
                .unwrap_or_else(|e| panic!("DeleteMessageBatch: {e:?}"));
            if !deleted.failed.is_empty() {
                eprintln!("bench: DeleteMessageBatch failed for {:?}", deleted.failed);
            }
            let mut feed = self.feed.lock().unwrap();
            feed.in_queue = feed.in_queue.saturating_sub(deleted.successful.len());
        }
        let mut progress = self.progress.lock().unwrap();
        progress.last_finish = Some(Instant::now());
        progress.invocations += 1;
        match answer {
            Answer::Failed(_) => {}
            Answer::TimedOut => progress.timed_out += 1,
            Answer::Errored(error) => {
                progress.errored += 1;
                progress.first_error.get_or_insert(error);
            }
        }
    }

    /// Messages still in the source queue: visible, in flight or delayed.
    async fn outstanding(&self) -> u64 {
        use aws_sdk_sqs::types::QueueAttributeName as Name;
        let attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.queues.source_url)
            .attribute_names(Name::ApproximateNumberOfMessages)
            .attribute_names(Name::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(Name::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GetQueueAttributes on the source queue: {e:?}"));
        attributes
            .attributes()
            .map(|a| a.values().filter_map(|n| n.parse::<u64>().ok()).sum())
            .unwrap_or(0)
    }
}

/// Lambda bills duration in whole milliseconds, rounded up.
fn billed_millis(took: Duration) -> u64 {
    took.as_nanos().div_ceil(1_000_000) as u64
}

/// The record the event source mapping builds for a received message.
fn record(message: &aws_sdk_sqs::types::Message, source_arn: &str) -> SqsMessage {
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
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The standard-queue value of a `!If [IsFifo, fifo, standard]` line of the template.
    fn standard_queue_value(template: &str, key: &str) -> String {
        let line = template
            .lines()
            .find(|line| line.trim_start().starts_with(&format!("{key}:")))
            .unwrap_or_else(|| panic!("template.yaml sets {key}"));
        let values = line
            .split_once("[IsFifo,")
            .and_then(|(_, rest)| rest.trim_end().strip_suffix(']'))
            .unwrap_or_else(|| panic!("{key} is chosen per queue type: {line}"));
        values
            .rsplit(',')
            .next()
            .expect("a standard-queue value")
            .trim()
            .to_owned()
    }

    #[test]
    fn an_invocation_is_billed_in_whole_milliseconds_rounded_up() {
        assert_eq!(billed_millis(Duration::from_micros(1)), 1);
        assert_eq!(billed_millis(Duration::from_millis(12)), 12);
        assert_eq!(billed_millis(Duration::from_micros(12_001)), 13);
        assert_eq!(billed_millis(Duration::ZERO), 0);
    }

    #[test]
    fn the_function_is_benched_with_the_batches_its_template_deploys() {
        let template = include_str!("../../../template.yaml");
        assert_eq!(
            standard_queue_value(template, "BatchSize"),
            Batching::TEMPLATE.size.to_string()
        );
        assert_eq!(
            standard_queue_value(template, "MaximumBatchingWindowInSeconds"),
            Batching::TEMPLATE.window.as_secs().to_string()
        );
    }
}
