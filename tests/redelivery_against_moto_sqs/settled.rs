//! A settled outcome is not overwritten by its discount's Polar failure.

use std::collections::{HashMap, HashSet};

use polar_double::FaultAction;

use super::support::event_source::poll;
use super::support::{body, SqsBackend, World};
use super::{fault, setup, INVOCATION_TIMEOUT};

/// A message whose fate is settled before Polar is asked (its order does not match it, or
/// its order is already synced) keeps that fate when Polar then fails for the other orders
/// of the same discount: the mismatch is dead-lettered at once with its own reason, the
/// duplicate is acknowledged. Only the orders that needed Polar go back to the queue.
#[tokio::test]
async fn a_polar_failure_of_the_discount_does_not_hold_back_messages_already_settled() {
    let world = World::start().await;
    let (queues, handler) = setup(&world, &SqsBackend::Moto, false, 3).await;
    let flaky = world.discount("FLAKY", Some(10));
    for order in ["f0", "f1", "fm"] {
        world.put_order(order, flaky, "FLAKY").await;
    }

    // f0 is synced by an earlier delivery.
    let source = queues.event_source();
    queues.send(&body("f0", flaky, "FLAKY"), None).await;
    let earlier = poll(&source, &handler, INVOCATION_TIMEOUT)
        .await
        .expect("f0 is delivered");
    assert!(source.invocation(earlier).failed.is_empty());
    assert_eq!(world.action("f0").await.as_deref(), Some("decremented"));

    // Then Polar fails every read of this invocation for FLAKY.
    world.polar.inject(fault(
        "GET",
        flaky,
        4,
        FaultAction::status(503, r#"{"detail":"Service Unavailable"}"#),
    ));
    let mut labels = HashMap::new();
    for (label, message) in [
        ("f1", body("f1", flaky, "FLAKY")),
        ("f0-dup", body("f0", flaky, "FLAKY")),
        ("fm", body("fm", flaky, "WRONG")),
    ] {
        labels.insert(queues.send(&message, None).await, label.to_owned());
    }
    let batch = poll(&source, &handler, INVOCATION_TIMEOUT)
        .await
        .expect("the batch is delivered");
    let failed: HashSet<&str> = source
        .invocation(batch)
        .failed
        .iter()
        .map(|id| labels[id].as_str())
        .collect();
    let dead_letters = queues.dead_letters().await;
    let dead_kinds: Vec<(&str, &str)> = dead_letters
        .iter()
        .map(|l| {
            (
                labels[l.attribute("OriginalMessageId")].as_str(),
                l.attribute("ErrorKind"),
            )
        })
        .collect();
    assert_eq!(
        dead_kinds,
        [("fm", "order_mismatch")],
        "the mismatch is permanent and known before Polar is asked: dead-lettered on its \
         first receive with its own reason (batch failures: {failed:?})"
    );
    assert_eq!(
        failed,
        HashSet::from(["f1"]),
        "only f1 needed Polar; f0's duplicate is already synced and fm is dead-lettered"
    );
    assert_eq!(world.max_redemptions(flaky), Some(Some(9)));
}
