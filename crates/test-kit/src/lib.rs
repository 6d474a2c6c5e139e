//! What the integration tests (`tests/support`) and the bench (`crates/bench`) share, so
//! that what the bench measures is what the tests exercise:
//!
//! - `sqs`: message bodies, SQS records and events as Lambda builds them, failed ids.
//! - `queues`: a source queue with a redrive policy to its own dead-letter queue.
//! - `event_source`: Lambda's SQS event source mapping, played against such queues.
//! - `tables`: the orders table and `SYNC_TABLE`, and orders written as checkout writes them.
//!
//! Dev tooling only: a dev-dependency of the function's package, never in its binary.

pub mod event_source;
pub mod queues;
pub mod sqs;
pub mod tables;

use aws_config::{BehaviorVersion, SdkConfig};

pub const REGION: &str = "us-east-1";

/// SDK configuration for `endpoint` (moto, or a proxy in front of it), with moto's
/// credentials.
pub async fn aws_config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new(REGION))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testing", "testing", None, None, "test-kit",
        ))
        .load()
        .await
}
