//! One adapter per backend behind the ports.

mod dynamo_store;
#[cfg(test)]
pub(crate) mod in_memory;
pub mod polar;
mod sqs_queue;
mod ssm_token;
mod store_error;

pub use dynamo_store::DynamoStore;
pub use sqs_queue::{QueueError, SqsQueue};
pub use ssm_token::{fetch_token, TokenError};
pub use store_error::StoreError;
