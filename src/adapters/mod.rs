//! One adapter per backend behind the ports.

mod dynamo;
mod group;
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
