//! A mixed workload on a standard queue: every message ends synced or dead-lettered with
//! its reason, on the receive the failure policy gives it, after the delays it gives.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use polar_double::FaultAction;

use super::support::event_source::{drain, CLOCK_TOLERANCE};
use super::support::queues::DeadLetter;
use super::support::{body, SqsBackend, World};
use super::{
    applied_patches, fault, least_redelivery_delay, setup, INVOCATION_TIMEOUT, MAX_RECEIVE_COUNT,
};

/// Polar's `retry-after` on the injected 429.
const RETRY_AFTER_SECS: u64 = 6;

/// What a sent message must end as.
#[derive(Debug, Clone)]
enum Expect {
    /// Its order is synced with one of these actions; the message is not dead-lettered.
    Synced {
        order: &'static str,
        actions: &'static [&'static str],
    },
    /// In the dead-letter queue once, with these attributes.
    DeadLettered {
        class: &'static str,
        kind: &'static str,
        receive_count: u32,
        /// Text the reason must contain.
        reason_mentions: &'static str,
    },
}

struct Sent {
    label: &'static str,
    id: String,
    body: String,
    expect: Expect,
}

#[tokio::test]
async fn a_mixed_workload_with_faults_ends_synced_or_dead_lettered_with_its_reason() {
    mixed_workload(SqsBackend::Moto).await;
}

#[tokio::test]
async fn the_mixed_workload_ends_the_same_on_the_simulated_sqs() {
    mixed_workload(SqsBackend::simulated().await).await;
}

async fn mixed_workload(backend: SqsBackend) {
    let started = Instant::now();
    let world = World::start().await;
    // Longer than an invocation that waits out its 3 s for a held lease: a message does
    // not come back while its invocation still holds it (the invariant test covers that).
    let (queues, handler) = setup(&world, &backend, false, 8).await;

    let spring = world.discount("SPRING", Some(10));
    let last = world.discount("LASTTWO", Some(2));
    let rate = world.discount("RATE", Some(5));
    let broken = world.discount("BROKEN", Some(5));
    let vip = world.discount("VIP", None);
    for (order, discount, code) in [
        ("o1", spring, "SPRING"),
        ("o2", spring, "SPRING"),
        ("o3", spring, "SPRING"),
        ("o4", spring, "SPRING"),
        ("l1", last, "LASTTWO"),
        ("l2", last, "LASTTWO"),
        ("r1", rate, "RATE"),
        ("r2", rate, "RATE"),
        ("x1", broken, "BROKEN"),
        ("v1", vip, "VIP"),
        // Written by checkout with VIP; its message names another code. (On a discount
        // whose Polar calls do not fail: see the last test for why.)
        ("m1", vip, "VIP"),
        // The order and its message agree, but Polar's code for the discount differs.
        ("c1", vip, "NOTVIP"),
    ] {
        world.put_order(order, discount, code).await;
    }

    // One 429 on RATE's first read: 6 s does not fit before the 12 s deadline with a
    // whole request after it, so the messages go back to the queue for at least 6 s.
    world.polar.inject(fault(
        "GET",
        rate,
        1,
        FaultAction::too_many_requests(RETRY_AFTER_SECS),
    ));
    // SPRING's first reads fail four times: more than the in-process attempts.
    world.polar.inject(fault(
        "GET",
        spring,
        4,
        FaultAction::status(503, r#"{"detail":"Service Unavailable"}"#),
    ));
    // A 5xx on a write: read back, found not applied, written again.
    world.polar.inject(fault(
        "PATCH",
        spring,
        1,
        FaultAction::status(500, r#"{"detail":"Internal Server Error"}"#),
    ));
    // LASTTWO: reads that fail twice (absorbed in the invocation), and a DELETE that
    // answers 502 without being applied.
    world.polar.inject(fault(
        "GET",
        last,
        2,
        FaultAction::status(502, "Bad Gateway"),
    ));
    world.polar.inject(fault(
        "DELETE",
        last,
        1,
        FaultAction::status(502, "Bad Gateway"),
    ));
    // BROKEN answers like a wrong base URL on every read: a configuration error.
    world.polar.inject(fault(
        "GET",
        broken,
        10_000,
        FaultAction::status(404, r#"{"detail":"Not Found"}"#),
    ));

    const DECREMENTED: &[&str] = &["decremented"];
    let synced = |order, actions| Expect::Synced { order, actions };
    let dead = |class, kind, receive_count, reason_mentions| Expect::DeadLettered {
        class,
        kind,
        receive_count,
        reason_mentions,
    };
    let workload: Vec<(&str, String, Expect)> = vec![
        ("r1", body("r1", rate, "RATE"), synced("r1", DECREMENTED)),
        (
            "o1",
            body("o1", spring, "SPRING"),
            synced("o1", DECREMENTED),
        ),
        (
            "l1",
            body("l1", last, "LASTTWO"),
            synced("l1", &["decremented", "deleted"]),
        ),
        (
            "truncated",
            r#"{"orderId": "o9", "discountId": "#.to_owned(),
            dead("permanent", "invalid_message", 1, ""),
        ),
        (
            "bad-uuid",
            r#"{"orderId": "o8", "discountId": "not-a-uuid", "discountCode": "SPRING"}"#.to_owned(),
            dead("permanent", "invalid_message", 1, ""),
        ),
        (
            "o2",
            body("o2", spring, "spring"),
            synced("o2", DECREMENTED),
        ),
        (
            "ghost",
            body("ghost", spring, "SPRING"),
            dead("permanent", "order_not_found", MAX_RECEIVE_COUNT, "ghost"),
        ),
        (
            "x1",
            body("x1", broken, "BROKEN"),
            dead("configuration", "polar", MAX_RECEIVE_COUNT, "404"),
        ),
        (
            "o1-dup",
            body("o1", spring, "SPRING"),
            synced("o1", DECREMENTED),
        ),
        (
            "m1",
            body("m1", vip, "AUTUMN"),
            dead("permanent", "order_mismatch", 1, "m1"),
        ),
        ("r2", body("r2", rate, "RATE"), synced("r2", DECREMENTED)),
        (
            "l2",
            body("l2", last, "LASTTWO"),
            synced("l2", &["decremented", "deleted"]),
        ),
        (
            "v1",
            body("v1", vip, "VIP"),
            synced("v1", &["skipped_unlimited"]),
        ),
        (
            "c1",
            body("c1", vip, "NOTVIP"),
            dead("permanent", "discount_code_mismatch", 1, "c1"),
        ),
        (
            "o3",
            body("o3", spring, "SPRING"),
            synced("o3", DECREMENTED),
        ),
        (
            "l2-dup",
            body("l2", last, "LASTTWO"),
            synced("l2", &["decremented", "deleted"]),
        ),
        (
            "o4",
            body("o4", spring, "SPRING"),
            synced("o4", DECREMENTED),
        ),
        (
            "o3-dup",
            body("o3", spring, "SPRING"),
            synced("o3", DECREMENTED),
        ),
    ];
    let mut sent = Vec::new();
    for (label, body, expect) in workload {
        let id = queues.send(&body, None).await;
        sent.push(Sent {
            label,
            id,
            body,
            expect,
        });
    }
    let labels: HashMap<String, String> = sent
        .iter()
        .map(|s| (s.id.clone(), s.label.to_owned()))
        .collect();

    let source = queues.event_source();
    drain(
        &source,
        &handler,
        INVOCATION_TIMEOUT,
        Duration::from_secs(60),
        &labels,
    )
    .await;
    let drained_in = started.elapsed();
    // A message that found its discount busy was acknowledged and sent again as a copy.
    let copies = source.copies();
    let mut labels = labels;
    for (copy, original) in &copies {
        let label = format!("{}(copy)", labels[original]);
        labels.insert(copy.clone(), label);
    }
    let history = source.history(&labels);
    // Each copy counts the times its message was sent again: 1, 2, ... along its chain.
    let mut counts_by_original: HashMap<&String, Vec<u32>> = HashMap::new();
    for (copy, original) in &copies {
        let count = source.requeue_count(copy);
        assert!(count.is_some(), "{copy} carries RequeueCount\n{history}");
        assert_eq!(
            source.first_sent_at(copy),
            source.first_sent_at(original),
            "{copy} carries checkout's first send, not its own\n{history}"
        );
        assert!(source.first_sent_at(copy).is_some());
        counts_by_original
            .entry(original)
            .or_default()
            .extend(count);
    }
    for (original, mut counts) in counts_by_original {
        counts.sort();
        let expected: Vec<u32> = (1..=counts.len() as u32).collect();
        assert_eq!(counts, expected, "{}'s copies\n{history}", labels[original]);
    }

    // Nothing lost: every message and every copy was acknowledged exactly once (synced,
    // sent again, or after its dead-lettering), and the source queue is empty.
    let mut acknowledged = source.acknowledged();
    acknowledged.sort();
    let mut expected_ids: Vec<String> = sent
        .iter()
        .map(|s| s.id.clone())
        .chain(copies.keys().cloned())
        .collect();
    expected_ids.sort();
    assert_eq!(
        acknowledged, expected_ids,
        "every sent message is acknowledged exactly once\n{history}"
    );
    assert_eq!(queues.outstanding().await, 0);

    // The dead-letter queue holds exactly the failing messages, once each, with reasons.
    let dead_letters = queues.dead_letters().await;
    let mut by_original: HashMap<String, Vec<&DeadLetter>> = HashMap::new();
    for letter in &dead_letters {
        by_original
            .entry(letter.attribute("OriginalMessageId").to_owned())
            .or_default()
            .push(letter);
    }
    for message in &sent {
        let letters = by_original.remove(&message.id).unwrap_or_default();
        match &message.expect {
            Expect::Synced { order, actions } => {
                assert!(
                    letters.is_empty(),
                    "{} was dead-lettered: {letters:?}\n{history}",
                    message.label
                );
                let action = world.action(order).await;
                assert!(
                    action.as_deref().is_some_and(|a| actions.contains(&a)),
                    "{}: order {order} should be synced with one of {actions:?}, is {action:?}\n{history}",
                    message.label
                );
            }
            Expect::DeadLettered {
                class,
                kind,
                receive_count,
                reason_mentions,
            } => {
                let [letter] = letters[..] else {
                    panic!(
                        "{} should be in the dead-letter queue exactly once, found {letters:?}\n{history}",
                        message.label
                    );
                };
                let label = message.label;
                assert_eq!(
                    letter.attribute("ErrorClass"),
                    *class,
                    "{label}: {letter:?}"
                );
                assert_eq!(letter.attribute("ErrorKind"), *kind, "{label}: {letter:?}");
                let reason = letter.attribute("Reason");
                assert!(
                    !reason.trim().is_empty() && reason.contains(reason_mentions),
                    "{label}: the reason should mention {reason_mentions:?}: {reason:?}"
                );
                assert_eq!(
                    letter.attribute("ReceiveCount"),
                    receive_count.to_string(),
                    "{label}: dead-lettered on the wrong receive\n{history}"
                );
                assert_eq!(
                    letter.attribute("SourceQueueArn"),
                    queues.source_arn,
                    "{label}"
                );
                assert_eq!(
                    letter.body, message.body,
                    "{label}: the body is kept as it was"
                );
                // Contention does not count: a copy sent again starts its receives over,
                // so the dead-lettered delivery is the last of the message's chain.
                let receives = source.receipts_of(&source.last_copy_of(&message.id));
                assert_eq!(
                    receives.len() as u32,
                    *receive_count,
                    "{label} is dead-lettered on its receive #{receive_count}, not before, not after\n{history}"
                );
            }
        }
    }
    assert!(
        by_original.is_empty(),
        "dead letters for messages never sent: {by_original:?}"
    );
    assert_eq!(dead_letters.len(), 6, "{dead_letters:?}");

    // Nothing double-counted: each discount went down by its distinct synced orders.
    assert_eq!(
        world.max_redemptions(spring),
        Some(Some(6)),
        "o1..o4 once each"
    );
    assert_eq!(
        world.max_redemptions(last),
        None,
        "the last use deletes LASTTWO"
    );
    assert_eq!(
        world.max_redemptions(rate),
        Some(Some(3)),
        "r1, r2 once each"
    );
    assert_eq!(
        world.max_redemptions(broken),
        Some(Some(5)),
        "never written"
    );
    assert_eq!(world.max_redemptions(vip), Some(None), "unlimited stays so");
    let spring_patches = applied_patches(&world, spring);
    assert!(
        spring_patches.windows(2).all(|w| w[1] < w[0]) && spring_patches.last() == Some(&6),
        "SPRING's applied PATCHes: {spring_patches:?}"
    );
    let last_actions = [world.action("l1").await, world.action("l2").await];
    assert!(
        last_actions.contains(&Some("deleted".to_owned())),
        "one of LASTTWO's orders is its last use: {last_actions:?}"
    );
    assert_eq!(
        applied_patches(&world, last).len(),
        last_actions
            .iter()
            .filter(|a| a.as_deref() == Some("decremented"))
            .count(),
        "LASTTWO is patched once per decremented order"
    );
    for never in ["x1", "m1", "c1"] {
        assert_eq!(world.action(never).await, None, "{never} is not synced");
    }
    assert!(
        world.order("ghost").await.is_empty(),
        "ghost is never created"
    );

    // The visibility delays were applied: a failed message came back no sooner than
    // the policy's delay for its receive (at least half the ceiling), and a 429'd one no
    // sooner than Polar's retry-after.
    let rate_limited_answers = world
        .polar_requests_on(rate)
        .iter()
        .filter(|r| r.status == Some(429))
        .count();
    assert_eq!(rate_limited_answers, 1, "RATE answered one 429");
    let first_rate_invocation = source
        .invocations()
        .iter()
        .position(|inv| {
            inv.ids
                .iter()
                .any(|id| matches!(labels[id].as_str(), "r1" | "r2"))
        })
        .expect("RATE's messages were delivered");
    let rate_limited: HashSet<String> = source
        .invocation(first_rate_invocation)
        .ids
        .iter()
        .filter(|id| matches!(labels[*id].as_str(), "r1" | "r2"))
        .cloned()
        .collect();
    for id in &rate_limited {
        assert!(
            source.invocation(first_rate_invocation).failed.contains(id),
            "{} was answered 429 and must be retried\n{history}",
            labels[id]
        );
        assert!(
            source.receipts_of(id).len() >= 2,
            "{} came back after its 429\n{history}",
            labels[id]
        );
    }
    source.assert_redelivery_gaps(&labels, |id, receive_count| {
        let backoff = least_redelivery_delay(receive_count);
        if rate_limited.contains(id) && receive_count == 1 {
            backoff.max(Duration::from_secs(RETRY_AFTER_SECS))
        } else {
            backoff
        }
    });
    // The messages that needed three receives were delayed on the second by more than
    // the queue's own 3 s visibility timeout: the handler set it.
    for label in ["ghost", "x1"] {
        let id = &sent.iter().find(|s| s.label == label).unwrap().id;
        let receives = source.receipts_of(&source.last_copy_of(id));
        let gap = receives[2].at.duration_since(receives[1].at);
        assert!(
            gap + CLOCK_TOLERANCE >= least_redelivery_delay(2),
            "{label}: {gap:?}\n{history}"
        );
    }

    eprintln!(
        "standard queue ({}): {} messages drained in {drained_in:?} over {} invocations\n{history}",
        backend.name(),
        sent.len(),
        source.invocations().len()
    );
}
