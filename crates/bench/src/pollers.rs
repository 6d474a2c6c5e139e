//! One poller per container on the kit's SQS event source mapping
//! (`test_kit::event_source`, the one the integration tests play): each poller gathers a
//! batch as the template's batching says, invokes its container, and the event source
//! deletes what the invocation acknowledged. The workload's messages are fed to the queue
//! as batches are deleted. Here the invocations are timed and billed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use test_kit::event_source::{Answer, Batch, Batching, EventSource};
use test_kit::queues::Queues;

use crate::container::Container;
use crate::original::OriginalSync;
use crate::time_split::Span;

/// How long an idle poller waits before it asks the queue again. Short polling: moto
/// serves one request at a time, so a long poll would stall the function's requests; and
/// moto's receive walks the whole queue, so idle pollers must not keep it busy either.
const IDLE_POLL: Duration = Duration::from_millis(250);
/// How often, at most, an idle poller asks whether the queue is drained.
const DRAIN_CHECK_EVERY: Duration = Duration::from_millis(500);

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

/// What the pollers saw.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub first_invoke: Option<Instant>,
    /// When the last invocation's acknowledged messages were deleted.
    pub last_finish: Option<Instant>,
    /// When the event source was deleting acknowledged messages (and topping the queue
    /// up): moto's time, though not through the counting proxy.
    pub finishing: Vec<Span>,
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

    /// The same, as a span of time.
    pub fn wall_span(&self) -> Option<Span> {
        Some(Span::new(self.first_invoke?, self.last_finish?))
    }
}

pub struct Pollers {
    source: EventSource,
    progress: Mutex<Progress>,
    last_drain_check: Mutex<Option<Instant>>,
}

impl Pollers {
    pub fn new(queues: Queues) -> Pollers {
        Pollers {
            source: EventSource::counting_failed_deletes(queues),
            progress: Mutex::default(),
            last_drain_check: Mutex::default(),
        }
    }

    /// The invocations' progress, with the event source's SQS counts.
    pub fn progress(&self) -> Progress {
        let counts = self.source.counts();
        Progress {
            receives: counts.receives,
            most_receives_of_one_message: counts.most_receives_of_one_message,
            receive_requests: counts.receive_requests,
            empty_receive_requests: counts.empty_receive_requests,
            delete_requests: counts.delete_requests,
            ..self.progress.lock().unwrap().clone()
        }
    }

    /// Forget what was seen so far (after a warm-up).
    pub fn reset(&self) {
        *self.progress.lock().unwrap() = Progress::default();
        self.source.reset();
    }

    /// Feeds `messages` to the queue, with one poller per invoker, all on the same queue,
    /// until every message was sent and the queue holds nothing (visible, in flight or
    /// delayed), or `bound` has passed.
    pub async fn drain(
        &self,
        invokers: &[Invoker],
        messages: Vec<String>,
        batching: Batching,
        timeout: Duration,
        bound: Duration,
    ) {
        self.source.feed(messages).await;
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
        let Some(batch) = self.source.gather(batching).await else {
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
        let finish_began = Instant::now();
        self.source.finish(batch, answer.clone()).await;
        let mut progress = self.progress.lock().unwrap();
        progress
            .finishing
            .push(Span::new(finish_began, Instant::now()));
        progress.invoke_time += took;
        progress.billed_millis += billed_millis(took);
        progress.last_finish = Some(Instant::now());
        progress.invocations += 1;
        match answer {
            Answer::Failed(_) | Answer::Crashed => {}
            Answer::TimedOut => progress.timed_out += 1,
            Answer::Errored(error) => {
                progress.errored += 1;
                progress.first_error.get_or_insert(error);
            }
        }
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
            self.source.top_up().await;
            if self.poll_once(invoker, batching, timeout).await {
                continue;
            }
            if self.source.all_sent()
                && self.drain_check_due()
                && self.source.queues.outstanding().await == 0
            {
                drained.store(true, Ordering::SeqCst);
                return;
            }
            tokio::time::sleep(IDLE_POLL).await;
        }
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
}

/// Lambda bills duration in whole milliseconds, rounded up.
fn billed_millis(took: Duration) -> u64 {
    took.as_nanos().div_ceil(1_000_000) as u64
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
