//! One adapter per backend behind the ports.

mod dynamo;
#[cfg(test)]
pub(crate) mod in_memory;
pub mod polar;
mod sqs_queue;
mod sqs_relay;
mod ssm_token;

pub use dynamo::DynamoStore;
pub use sqs_queue::{QueueError, SqsQueue};
pub use sqs_relay::{deduplication_id, SqsRelay, MAX_RELAY_DELAY};
pub use ssm_token::{fetch_token, TokenError};

/// Spawns its future when dropped, if a runtime is still there: a group sender started so
/// that a caller that stops waiting (its deadline) does not strand the calls queued behind
/// it. Without a runtime, every caller waiting for an answer is gone too.
struct SpawnOnDrop<F: std::future::Future<Output = ()> + Send + 'static>(Option<F>);

impl<F: std::future::Future<Output = ()> + Send + 'static> Drop for SpawnOnDrop<F> {
    fn drop(&mut self) {
        if let (Some(future), Ok(runtime)) = (self.0.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(future);
        }
    }
}
