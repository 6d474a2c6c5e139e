//! A FIFO queue: each group keeps its order, and a message that fails holds back the rest
//! of its group until it is acknowledged or dead-lettered.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::support::event_source::{drain, poll};
use super::support::{body, SqsBackend, World};
use super::{applied_patches, least_redelivery_delay, setup, synced_at, INVOCATION_TIMEOUT};

#[tokio::test]
async fn a_fifo_group_keeps_its_order_and_a_failure_holds_back_the_rest_of_its_group() {
    fifo_groups(SqsBackend::Moto).await;
}

#[tokio::test]
async fn fifo_groups_behave_the_same_on_the_simulated_sqs() {
    fifo_groups(SqsBackend::simulated().await).await;
}

async fn fifo_groups(backend: SqsBackend) {
    let started = Instant::now();
    let world = World::start().await;
    // The queue's visibility (2 s) is shorter than any delay the handler sets (≥ 3 s
    // after rounding), so the held-back messages are visible again before the message
    // that failed: the group stays blocked behind it, as in SQS.
    let (queues, handler) = setup(&world, &backend, true, 2).await;

    let group_a = world.discount("GROUPA", Some(10));
    let group_b = world.discount("GROUPB", Some(10));
    // a1's order is not written yet: its first delivery fails with order_not_found.
    for (order, discount, code) in [
        ("a2", group_a, "GROUPA"),
        ("a3", group_a, "GROUPA"),
        ("b1", group_b, "GROUPB"),
        ("c2", group_b, "GROUPB"),
    ] {
        world.put_order(order, discount, code).await;
    }

    let mut ids: HashMap<&str, String> = HashMap::new();
    let mut bodies: HashMap<&str, String> = HashMap::new();
    for (label, group, message) in [
        ("a1", "A", body("a1", group_a, "GROUPA")),
        ("b1", "B", body("b1", group_b, "GROUPB")),
        ("a2", "A", body("a2", group_a, "GROUPA")),
        // A bad message is dead-lettered at once: it does not hold its group back.
        ("c1", "C", r#"{"orderId": "c1", "discountId": "#.to_owned()),
        ("a3", "A", body("a3", group_a, "GROUPA")),
        ("c2", "C", body("c2", group_b, "GROUPB")),
    ] {
        ids.insert(label, queues.send(&message, Some(group)).await);
        bodies.insert(label, message);
    }
    let labels: HashMap<String, String> = ids
        .iter()
        .map(|(label, id)| (id.clone(), (*label).to_owned()))
        .collect();
    let id = |label: &str| ids[label].clone();

    // The first batch: every message, in the order sent.
    let source = queues.event_source();
    let first = poll(&source, &handler, INVOCATION_TIMEOUT)
        .await
        .expect("the first poll receives a batch");
    let first_labels: Vec<&str> = source
        .invocation(first)
        .ids
        .iter()
        .map(|id| labels[id].as_str())
        .collect();
    assert_eq!(
        first_labels,
        ["a1", "b1", "a2", "c1", "a3", "c2"],
        "the whole FIFO backlog comes in one batch, in order"
    );
    let failed: HashSet<&str> = source
        .invocation(first)
        .failed
        .iter()
        .map(|id| labels[id].as_str())
        .collect();
    assert_eq!(
        failed,
        HashSet::from(["a1", "a2", "a3"]),
        "a1 failed, so the rest of group A is reported failed with it"
    );
    // a2 and a3 were not processed: not claimed, not synced, nothing asked of Polar.
    for order in ["a2", "a3"] {
        let item = world.order(order).await;
        assert!(
            !item.contains_key("polarDiscountSynced")
                && !item.contains_key("polarDiscountSyncClaim"),
            "{order} must not be touched while a1 blocks its group: {item:?}"
        );
    }
    assert!(
        world.polar_requests_on(group_a).is_empty(),
        "no Polar request for group A yet: {:?}",
        world.polar_requests()
    );
    assert_eq!(world.max_redemptions(group_a), Some(Some(10)));
    // The other groups went on.
    assert_eq!(world.action("b1").await.as_deref(), Some("decremented"));
    assert_eq!(world.action("c2").await.as_deref(), Some("decremented"));
    assert_eq!(world.max_redemptions(group_b), Some(Some(8)));

    // Checkout's write of a1's order lands; the group drains in order.
    world.put_order("a1", group_a, "GROUPA").await;
    drain(
        &source,
        &handler,
        INVOCATION_TIMEOUT,
        Duration::from_secs(45),
        &labels,
    )
    .await;
    let history = source.history(&labels);

    for order in ["a1", "a2", "a3"] {
        assert_eq!(
            world.action(order).await.as_deref(),
            Some("decremented"),
            "{order}\n{history}"
        );
    }
    assert_eq!(world.max_redemptions(group_a), Some(Some(7)));
    assert_eq!(world.max_redemptions(group_b), Some(Some(8)));
    let (at1, at2, at3) = (
        synced_at(&world, "a1").await,
        synced_at(&world, "a2").await,
        synced_at(&world, "a3").await,
    );
    assert!(
        at1 <= at2 && at2 <= at3,
        "group A synced in order: a1 {at1}, a2 {at2}, a3 {at3}"
    );
    let patches = applied_patches(&world, group_a);
    assert!(
        patches.last() == Some(&7) && patches.windows(2).all(|w| w[0] > w[1]),
        "group A's writes count down to 7, coalesced where its messages came together: {patches:?}"
    );

    // No batch ever handed a2 or a3 to the handler without a1 ahead of it, until a1 was
    // acknowledged; within a batch the group's order holds.
    let a1_done = source
        .invocations()
        .iter()
        .position(|inv| inv.ids.contains(&id("a1")) && !inv.failed.contains(&id("a1")))
        .expect("a1 was acknowledged");
    for (n, invocation) in source.invocations().iter().enumerate() {
        let group: Vec<&str> = invocation
            .ids
            .iter()
            .map(|id| labels[id].as_str())
            .filter(|l| l.starts_with('a'))
            .collect();
        let mut sorted = group.clone();
        sorted.sort();
        assert_eq!(
            group, sorted,
            "invocation {n}: group A out of order\n{history}"
        );
        if n <= a1_done && !group.is_empty() {
            assert_eq!(group[0], "a1", "invocation {n}: a1 must lead\n{history}");
        }
    }
    // a1's retry was delayed by the handler, not just the queue's visibility timeout.
    source.assert_redelivery_gaps(&labels, |label_id, receive_count| {
        if label_id == id("a1") {
            least_redelivery_delay(receive_count)
        } else {
            Duration::ZERO
        }
    });

    // Every message acknowledged once; the bad one is in the FIFO dead-letter queue,
    // in its group, with its reason.
    let mut acknowledged = source.acknowledged();
    acknowledged.sort();
    let mut all: Vec<String> = ids.values().cloned().collect();
    all.sort();
    assert_eq!(acknowledged, all, "{history}");
    let dead_letters = queues.dead_letters().await;
    let [letter] = &dead_letters[..] else {
        panic!("only c1 is dead-lettered: {dead_letters:?}");
    };
    assert_eq!(letter.attribute("OriginalMessageId"), id("c1"));
    assert_eq!(letter.attribute("ErrorClass"), "permanent");
    assert_eq!(letter.attribute("ErrorKind"), "invalid_message");
    assert!(!letter.attribute("Reason").trim().is_empty());
    assert_eq!(letter.attribute("ReceiveCount"), "1");
    assert_eq!(letter.attribute("SourceQueueArn"), queues.source_arn);
    assert_eq!(letter.body, bodies["c1"]);
    assert_eq!(letter.group_id.as_deref(), Some("C"));

    eprintln!(
        "FIFO queue ({}): drained in {:?} over {} invocations\n{history}",
        backend.name(),
        started.elapsed(),
        source.invocations().len()
    );
}
