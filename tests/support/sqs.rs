//! What Lambda's SQS event source hands the function in process, and what it answers:
//! the event with its context (the records and bodies are the kit's, `test_kit::sqs`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::Value;
use uuid::Uuid;

#[allow(unused_imports)]
pub use test_kit::sqs::{body, event_json, failed_ids, failed_ids_json, Record};
pub use test_kit::REGION;

/// The simulated SQS's account.
pub const ACCOUNT: &str = "000000000000";

/// The Lambda context of an invocation whose deadline is `timeout` from now.
pub fn context(timeout: Duration) -> Context {
    let mut context = Context::default();
    context.request_id = Uuid::new_v4().to_string();
    context.deadline = (SystemTime::now() + timeout)
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    context
}

/// The event for `records`, with a deadline `timeout` from now.
pub fn event_of(records: Vec<Record>, timeout: Duration) -> LambdaEvent<SqsEvent> {
    let mut event = SqsEvent::default();
    event.records = records.into_iter().map(Record::build).collect();
    LambdaEvent::new(event, context(timeout))
}

/// The event for first receives of `(message id, body)`, with a deadline `timeout` from now.
pub fn event(messages: &[(&str, String)], timeout: Duration) -> LambdaEvent<SqsEvent> {
    event_of(
        messages
            .iter()
            .map(|(id, body)| Record::new(id, body))
            .collect(),
        timeout,
    )
}

/// `(message id, body)` pairs as the borrowed form `event` and `World::deliver` take.
pub fn as_refs(messages: &[(String, String)]) -> Vec<(&str, String)> {
    messages
        .iter()
        .map(|(id, body)| (id.as_str(), body.clone()))
        .collect()
}

/// EventBridge's scheduled event, which asks the function for a reconciliation.
pub fn scheduled_event(timeout: Duration) -> LambdaEvent<Value> {
    let payload = serde_json::json!({
        "version": "0", "id": Uuid::new_v4(), "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "123456789012", "time": "2026-11-28T12:00:00Z",
        "region": "us-east-1", "resources": [], "detail": {}
    });
    LambdaEvent::new(payload, context(timeout))
}
