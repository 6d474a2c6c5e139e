//! Lambda's SQS event source mapping, played against a source queue: receive a batch
//! (up to its size, over up to its batching window), hand it to the function, delete
//! what it acknowledged. What it reported failed, and a whole batch whose invocation
//! crashed, timed out or errored, stays in the queue: it is received again once its
//! visibility timeout (or the delay the function set) ends, or the redrive policy moves
//! it to the dead-letter queue. Every receive and every invocation is logged, for
//! assertions on redelivery and for failure messages, and the SQS requests are counted.
//!
//! It works through the SQS API, so on moto and on a simulated SQS alike; several
//! pollers may share one (each invocation is one `receive` and one `finish`). Who invokes
//! the function is the caller's: the tests' handler or process, the bench's containers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName};
use serde_json::Value;

use crate::queues::Queues;
use crate::sqs::{event_json, Record};

/// moto's clock (wall time, whole milliseconds) and the delays' rounding to whole seconds,
/// against the caller's monotonic clock.
pub const CLOCK_TOLERANCE: Duration = Duration::from_millis(150);

/// The most messages `feed` keeps in the queue at once (sent and not deleted yet): the
/// rest wait here and are sent as batches are deleted. moto's ReceiveMessage takes about
/// 0.5 ms per message in the queue, and moto serves one request at a time, so 2,000
/// queued messages would make every receive take a second and stall the function's
/// DynamoDB requests behind it. 100 is one of the function's batches: pollers share it,
/// so the bench's flash sale batches hold 20 to 60 messages.
pub const QUEUE_DEPTH: usize = 100;

/// While a batch is gathered, how long to wait before asking an empty queue again.
const GATHER_POLL: Duration = Duration::from_millis(100);

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

    /// One ReceiveMessage of up to `max` messages (at most 10).
    pub fn one_receive(max: usize) -> Batching {
        Batching {
            size: max.clamp(1, 10),
            window: Duration::ZERO,
        }
    }
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

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// `(message id, body)` of each record, in batch order.
    pub fn messages(&self) -> Vec<(String, String)> {
        self.records
            .iter()
            .map(|r| (r.message_id().to_owned(), r.body().to_owned()))
            .collect()
    }

    /// The event's payload, for a function process.
    pub fn event_json(&self) -> Value {
        event_json(&self.records)
    }
}

/// The SQS requests the event source mapping made (billed to the account) and what they
/// carried.
#[derive(Debug, Clone, Default)]
pub struct SqsCounts {
    /// ReceiveMessage requests that returned messages; those that found the queue empty
    /// are in `empty_receive_requests`.
    pub receive_requests: usize,
    pub empty_receive_requests: usize,
    /// Receives of messages (a message received three times counts three).
    pub receives: usize,
    pub most_receives_of_one_message: u32,
    /// DeleteMessageBatch requests for the acknowledged messages.
    pub delete_requests: usize,
    /// Acknowledged messages whose deletion failed (their receipt handle had expired).
    pub failed_deletes: usize,
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
    counts: SqsCounts,
}

/// Messages not sent yet, and how many of those `feed` sent are still in the queue.
#[derive(Default)]
struct Feed {
    waiting: VecDeque<String>,
    in_queue: usize,
}

pub struct EventSource {
    pub queues: Queues,
    log: Mutex<Log>,
    feed: Mutex<Feed>,
    failed_deletes_panic: bool,
}

impl EventSource {
    /// An event source that panics when an acknowledged message cannot be deleted.
    pub fn new(queues: Queues) -> EventSource {
        EventSource {
            queues,
            log: Mutex::default(),
            feed: Mutex::default(),
            failed_deletes_panic: true,
        }
    }

    /// One that counts failed deletions instead (in `SqsCounts::failed_deletes`): a
    /// batching window plus a long invocation may outlast the visibility timeout, and a
    /// long run should report that rather than stop.
    pub fn counting_failed_deletes(queues: Queues) -> EventSource {
        EventSource {
            failed_deletes_panic: false,
            ..EventSource::new(queues)
        }
    }

    /// Forget what was seen and what waits to be sent (after a warm-up).
    pub fn reset(&self) {
        *self.log.lock().unwrap() = Log::default();
        *self.feed.lock().unwrap() = Feed::default();
    }

    /// Queues `bodies` to be sent as room frees up: at most `QUEUE_DEPTH` in the queue.
    pub async fn feed(&self, bodies: Vec<String>) {
        self.feed.lock().unwrap().waiting.extend(bodies);
        self.top_up().await;
    }

    /// Whether everything fed was sent.
    pub fn all_sent(&self) -> bool {
        self.feed.lock().unwrap().waiting.is_empty()
    }

    /// Sends fed messages while the queue holds fewer than `QUEUE_DEPTH`, in whole
    /// batches of 10 unless fewer are left.
    pub async fn top_up(&self) {
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
        self.queues.send_batches(&batch).await;
    }

    /// Receives up to `max` messages in one request (at most 10).
    pub async fn receive(&self, max: usize) -> Option<Batch> {
        self.gather(Batching::one_receive(max)).await
    }

    /// Receives until the batch is full or its window has passed since the first message,
    /// topping up the queue in between.
    pub async fn gather(&self, batching: Batching) -> Option<Batch> {
        let mut received = self.receive_once(batching.size).await?;
        let window_ends = Instant::now() + batching.window;
        while received.len() < batching.size && Instant::now() < window_ends {
            self.top_up().await;
            match self.receive_once(batching.size - received.len()).await {
                Some(more) => received.extend(more),
                None => {
                    let left = window_ends.saturating_duration_since(Instant::now());
                    tokio::time::sleep(GATHER_POLL.min(left)).await;
                }
            }
        }
        Some(self.start_invocation(received))
    }

    /// One ReceiveMessage (short polling: moto serves one request at a time, so a long
    /// poll would stall everyone else's requests), each message with when it came.
    async fn receive_once(&self, max: usize) -> Option<Vec<(Message, Instant)>> {
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
        let counts = &mut self.log.lock().unwrap().counts;
        if messages.is_empty() {
            counts.empty_receive_requests += 1;
            return None;
        }
        counts.receive_requests += 1;
        counts.receives += messages.len();
        Some(messages.into_iter().map(|m| (m, at)).collect())
    }

    /// Logs the receives of one batch and the invocation it goes to.
    fn start_invocation(&self, received: Vec<(Message, Instant)>) -> Batch {
        let records: Vec<Record> = received
            .iter()
            .map(|(m, _)| Record::received(m, &self.queues.source_arn))
            .collect();
        let receipts: Vec<(String, String)> = received
            .iter()
            .map(|(m, _)| {
                (
                    m.message_id.clone().expect("SQS gives every message an id"),
                    m.receipt_handle.clone().expect("a receipt handle"),
                )
            })
            .collect();
        let mut log = self.log.lock().unwrap();
        for (message, _) in &received {
            log.note_copy(message);
        }
        let invocation = log.invocations.len();
        for (record, (_, at)) in records.iter().zip(&received) {
            assert!(
                record.receives() > 0,
                "ApproximateReceiveCount is requested"
            );
            log.counts.most_receives_of_one_message = log
                .counts
                .most_receives_of_one_message
                .max(record.receives());
            log.receipts.push(Receipt {
                message_id: record.message_id().to_owned(),
                at: *at,
                receive_count: record.receives(),
                invocation,
            });
        }
        log.invocations.push(Invocation {
            ids: receipts.iter().map(|(id, _)| id.clone()).collect(),
            answer: None,
            failed: HashSet::new(),
        });
        Batch {
            invocation,
            records,
            receipts,
        }
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
            self.delete(&done).await;
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

    /// Deletes `(message id, receipt handle)` pairs in one DeleteMessageBatch.
    async fn delete(&self, done: &[&(String, String)]) {
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
        self.log.lock().unwrap().counts.delete_requests += 1;
        let deleted = self
            .queues
            .sqs
            .delete_message_batch()
            .queue_url(&self.queues.source_url)
            .set_entries(Some(entries))
            .send()
            .await
            .unwrap_or_else(|e| panic!("DeleteMessageBatch: {e:?}"));
        if !deleted.failed.is_empty() {
            assert!(
                !self.failed_deletes_panic,
                "DeleteMessageBatch failed for {:?}",
                deleted.failed
            );
            eprintln!(
                "event source: DeleteMessageBatch failed for {:?}",
                deleted.failed
            );
            self.log.lock().unwrap().counts.failed_deletes += deleted.failed.len();
        }
        let mut feed = self.feed.lock().unwrap();
        feed.in_queue = feed.in_queue.saturating_sub(deleted.successful.len());
    }

    pub fn counts(&self) -> SqsCounts {
        self.log.lock().unwrap().counts.clone()
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

impl Log {
    /// What a copy the function sent again says of its original: its id, its
    /// `RequeueCount`, when checkout first sent it.
    fn note_copy(&mut self, message: &Message) {
        let Some(id) = message.message_id() else {
            return;
        };
        let string_attribute = |name: &str| {
            message
                .message_attributes()
                .and_then(|a| a.get(name))
                .and_then(|a| a.string_value())
        };
        if let Some(original) = string_attribute("OriginalMessageId") {
            self.origins.insert(id.to_owned(), original.to_owned());
        }
        if let Some(requeues) = string_attribute("RequeueCount").and_then(|n| n.parse().ok()) {
            self.requeue_counts.insert(id.to_owned(), requeues);
        }
        let first_sent_at = string_attribute("FirstSentAt")
            .or_else(|| {
                message
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                    .map(String::as_str)
            })
            .and_then(|ms| ms.parse().ok());
        if let Some(at) = first_sent_at {
            self.first_sent_at.insert(id.to_owned(), at);
        }
    }
}
