//! Test support shared by the integration tests, not copied into them. A test binary
//! includes it with `mod support;` (from a folder test: `#[path = "../support/mod.rs"]`).
//!
//! - `world`: moto tables and a Polar double per test; the handler as production wires it.
//! - `sqs`: message bodies, SQS records and events, the Lambda context, failed ids.
//! - `simulated_sqs` (+ `sqs_endpoint`): an SQS with visibility timeouts, receive counts,
//!   redrive to a dead-letter queue and FIFO groups, served over the SQS API.
//! - `queues`: a source queue and its dead-letter queue, in moto or the simulated SQS.
//! - `event_source`: Lambda's SQS event source mapping, played against such queues.
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
pub use world::{counting_dynamo, moto_endpoint, s, RequestCounter, SqsBackend, World, TOKEN};
