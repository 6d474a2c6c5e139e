//! Test support shared by the integration tests, not copied into them. A test binary
//! includes it with `mod support;` (from a folder test: `#[path = "../support/mod.rs"]`).
//!
//! What the bench shares with the tests is in the `test-kit` crate (`crates/test-kit`): the
//! SQS event source emulator, the queues and tables in moto, SQS records. Here it is wired
//! to the function:
//!
//! - `world`: the kit's tables and a Polar double per test; the handler as production wires it.
//! - `sqs`: the kit's bodies and records, and the in-process event with its Lambda context.
//! - `simulated_sqs` (+ `sqs_endpoint`): an SQS with visibility timeouts, receive counts,
//!   redrive to a dead-letter queue and FIFO groups, served over the SQS API.
//! - `queues`: the kit's queues in moto or the simulated SQS, and the function's config.
//! - `event_source`: the kit's event source mapping, polled with the handler in process.
//! - `stream`: the orders table's stream in moto, read as Lambda's DynamoDB event source.
#![allow(dead_code)]

pub mod event_source;
pub mod queues;
pub mod simulated_sqs;
pub mod sqs;
mod sqs_endpoint;
pub mod stream;
pub mod world;

#[allow(unused_imports)]
pub use sqs::{as_refs, body, event, failed_ids, scheduled_event, Record};
#[allow(unused_imports)]
pub use world::{
    counting_dynamo, logging_sqs, moto_endpoint, s, RequestCounter, SqsBackend, World, TOKEN,
};
