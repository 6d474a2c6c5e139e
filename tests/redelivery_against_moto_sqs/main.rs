//! Issue 4 end to end: the handler, wired as in production, behind the test's event source
//! mapping (`support::event_source`: receive a batch, invoke, delete what was acknowledged,
//! leave the failures), against real queues in moto (a source queue with a redrive policy
//! and its dead-letter queue) and the Polar double with injected faults.
//!
//! Every run drains the source queue, then checks that each message ended synced or in the
//! dead-letter queue with its reason, that the visibility delays were applied, and that
//! Polar counted every distinct order exactly once.
//!
//! The workload and FIFO tests also run against the simulated SQS
//! (`support::simulated_sqs`), with the same assertions: that is what shows the simulated
//! SQS, on which the invariant test relies, behaves as moto's for everything the function
//! does with a queue (visibility changes, the redrive limit, dead letters, FIFO groups).
//! moto stays the reference: it is an SQS implementation the tests did not write, and
//! `make dlq-list` (boto3) reads its dead-letter queue.

#[path = "../support/mod.rs"]
mod support;

mod batched;
mod fifo;
mod settled;
mod workload;

use std::time::Duration;

use aws_sdk_dynamodb::primitives::{DateTime, DateTimeFormat};
use polar_discount_sync::lambda::{ProductionHandler, Wiring};
use polar_double::{Fault, FaultAction};
use support::event_source::poll;
use support::queues::{QueueSettings, Queues};
use support::{SqsBackend, World};
use uuid::Uuid;

/// The source queues' redrive limit: small, so the last receive comes quickly.
const MAX_RECEIVE_COUNT: u32 = 3;
/// The deadline of each invocation. Short, so a 429's `retry-after` does not fit in the
/// invocation (a retry needs the delay plus a whole request, 5 s + 1 s, before the
/// deadline) and the message goes back to the queue instead.
const INVOCATION_TIMEOUT: Duration = Duration::from_secs(12);

/// The queues and the handler as production builds it, dead-lettering into this test's
/// queue; the redrive limit is read from the source queue's redrive policy (no
/// `MAX_RECEIVE_COUNT`).
async fn setup(
    world: &World,
    backend: &SqsBackend,
    fifo: bool,
    visibility_timeout_secs: u32,
) -> (Queues, ProductionHandler) {
    let queues = Queues::create(
        world,
        backend,
        QueueSettings {
            fifo,
            visibility_timeout_secs,
            max_receive_count: MAX_RECEIVE_COUNT,
        },
    )
    .await;
    let handler = world
        .handler_on(backend, &queues.config(world), Wiring::default())
        .await;
    (queues, handler)
}

/// The least delay before a message that failed on its receive `receive_count` comes
/// back, as docs/design.md promises ("Failures"): 5 s doubling per receive, capped at 30 min, with equal
/// jitter (at least half of that).
fn least_redelivery_delay(receive_count: u32) -> Duration {
    let ceiling = Duration::from_secs(5)
        .saturating_mul(2u32.saturating_pow(receive_count.saturating_sub(1).min(20)))
        .min(Duration::from_secs(30 * 60));
    ceiling / 2
}

fn fault(method: &str, discount: Uuid, times: u32, action: FaultAction) -> Fault {
    Fault::new(action)
        .method(method)
        .discount(discount)
        .times(times)
}

/// The `max_redemptions` of every PATCH that Polar applied to `discount`, in order.
fn applied_patches(world: &World, discount: Uuid) -> Vec<i64> {
    world
        .polar_requests_on(discount)
        .iter()
        .filter(|r| r.method == "PATCH" && r.status.is_some_and(|s| (200..300).contains(&s)))
        .map(|r| {
            serde_json::from_str::<serde_json::Value>(&r.body).expect("a JSON PATCH body")
                ["max_redemptions"]
                .as_i64()
                .expect("the PATCH sets max_redemptions")
        })
        .collect()
}

async fn synced_at(world: &World, order: &str) -> DateTime {
    let item = world.order(order).await;
    let raw = item
        .get("polarDiscountSyncedAt")
        .and_then(|v| v.as_s().ok())
        .unwrap_or_else(|| panic!("order {order} has no polarDiscountSyncedAt: {item:?}"));
    DateTime::from_str(raw, DateTimeFormat::DateTime)
        .unwrap_or_else(|e| panic!("polarDiscountSyncedAt {raw:?} is not RFC 3339: {e}"))
}

#[test]
fn the_least_redelivery_delay_is_half_the_documented_ceiling() {
    let secs: Vec<f64> = (1..=10)
        .map(|n| least_redelivery_delay(n).as_secs_f64())
        .collect();
    assert_eq!(
        secs,
        [2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0, 900.0]
    );
    // The schedule this test holds the function to is the one docs/design.md states.
    let design = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/design.md"))
        .expect("docs/design.md");
    let design = design.split_whitespace().collect::<Vec<_>>().join(" ");
    for promise in [
        "5 s doubling per receive, capped at 30 min",
        "between 2.5–5 s, 5–10 s, 10–20 s, …, and 15–30 min from the 10th receive on",
    ] {
        assert!(
            design.contains(promise),
            "docs/design.md no longer says {promise:?}"
        );
    }
}

/// `make dlq-list` shows an operator each dead letter with the reason the function gave.
#[tokio::test]
async fn the_dlq_listing_shows_each_dead_letter_with_its_reason() {
    let world = World::start().await;
    let (queues, handler) = setup(&world, &SqsBackend::Moto, false, 3).await;
    let original = queues.send("{\"orderId\": \"o1\"", None).await;
    poll(&queues.event_source(), &handler, INVOCATION_TIMEOUT).await;

    let output =
        std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python"))
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/dlq.py"))
            // No long polling: moto serves one request at a time.
            .args([
                "list",
                "--json",
                "--wait-seconds",
                "0",
                "--queue-url",
                &queues.dead_letter_url,
            ])
            .output()
            .expect("the dev venv has python with boto3");

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listed: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["OriginalMessageId"], original);
    assert_eq!(listed[0]["ErrorClass"], "permanent");
    assert_eq!(listed[0]["ErrorKind"], "invalid_message");
    assert!(
        listed[0]["Reason"]
            .as_str()
            .unwrap()
            .contains("not the expected JSON"),
        "{listed:?}"
    );
    assert_eq!(listed[0]["body"], "{\"orderId\": \"o1\"");
}
