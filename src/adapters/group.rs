//! The line of calls a container's group sender takes them from, shared by the DynamoDB
//! transactions (`dynamo/transactions.rs`) and the SQS batch calls (`sqs_queue/batches.rs`).
//! A call alone goes out at once, after one yield of its task, so that the calls begun in
//! the same tick (a batch begins its discounts' steps, or disposes of its failures, one
//! after another in one task) join its request; the calls that arrive while a request is
//! in flight wait for it and go out together next.

use std::future::Future;
use std::sync::Mutex;

use tokio::sync::oneshot;

#[derive(Debug)]
pub(super) struct Line<W> {
    waiting: Vec<W>,
    sending: bool,
}

impl<W> Default for Line<W> {
    fn default() -> Self {
        Self {
            waiting: Vec::new(),
            sending: false,
        }
    }
}

impl<W> Line<W> {
    /// The next calls for the sender, as `take` picks them from those waiting; `None` when
    /// none wait, and the sender stops.
    pub(super) fn next(&mut self, take: impl FnOnce(&mut Vec<W>) -> Vec<W>) -> Option<Vec<W>> {
        if self.waiting.is_empty() {
            self.sending = false;
            return None;
        }
        Some(take(&mut self.waiting))
    }

    /// Puts calls back at the front of the line.
    pub(super) fn put_back(&mut self, calls: Vec<W>) {
        self.waiting.splice(0..0, calls);
    }
}

/// Queues `call` on `line` and waits for its `answer`. When no sender is at work, this
/// call starts `sender` after one yield; the sender starts when the guard drops, after the
/// yield or when the caller stops waiting during it (its deadline), so the calls queued
/// behind are never stranded.
pub(super) async fn join<W, T, F>(
    line: &Mutex<Line<W>>,
    call: W,
    answer: oneshot::Receiver<T>,
    sender: impl FnOnce() -> F,
) -> T
where
    F: Future<Output = ()> + Send + 'static,
{
    let start_sending = {
        let mut line = line.lock().unwrap();
        line.waiting.push(call);
        !std::mem::replace(&mut line.sending, true)
    };
    if start_sending {
        let sender = SpawnOnDrop(Some(sender()));
        tokio::task::yield_now().await;
        drop(sender);
    }
    answer
        .await
        .expect("the sender answers every call it takes")
}

/// Spawns its future when dropped, if a runtime is still there. Without a runtime, every
/// caller waiting for an answer is gone too.
struct SpawnOnDrop<F: Future<Output = ()> + Send + 'static>(Option<F>);

impl<F: Future<Output = ()> + Send + 'static> Drop for SpawnOnDrop<F> {
    fn drop(&mut self) {
        if let (Some(future), Ok(runtime)) = (self.0.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(future);
        }
    }
}
