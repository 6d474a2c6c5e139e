//! A hot code: a lease held elsewhere is waited for, and a discount that stays busy for the
//! whole invocation sends its messages back as new ones, never toward the dead-letter queue.

use super::*;
use crate::ports::Coordination;
use crate::sync::START_MARGIN;

/// Another invocation holds the discount's lease until `holder_deadline` + the lease's grace.
pub(super) fn hold_lease(s: &TestSyncer, discount: &str, holder_deadline: Duration) -> Lease {
    let lease = Lease {
        token: Uuid::new_v4(),
        expires_at_ms: epoch_ms(SystemTime::now() + holder_deadline) + 10_000,
    };
    s.store()
        .discounts
        .lock()
        .unwrap()
        .entry(id(discount))
        .or_default()
        .lease = Some(lease.clone());
    lease
}

#[tokio::test]
async fn a_waiter_takes_the_lease_as_soon_as_its_holder_gives_it_up() {
    let s = Arc::new(syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    ));
    let holder = hold_lease(&s, DISCOUNT, Duration::from_secs(30));
    let releaser = {
        let s = s.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            s.store()
                .release_dropping_journal(id(DISCOUNT), &holder)
                .await
                .unwrap();
        })
    };
    let started = std::time::Instant::now();
    let outcome = sync_one(&s, request("o1", DISCOUNT, "X")).await;
    releaser.await.unwrap();
    assert_eq!(outcome.unwrap(), Synced::Applied(SyncAction::Decremented));
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "the waiter gave up or slept long after the release: {:?}",
        started.elapsed()
    );
    assert_eq!(s.discounts().max_redemptions(id(DISCOUNT)), Some(Some(2)));
}

#[tokio::test]
async fn a_lease_held_for_the_whole_invocation_sends_the_messages_back_untouched() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    );
    hold_lease(&s, DISCOUNT, Duration::from_secs(600));
    let short = Deadline::after(START_MARGIN + Duration::from_millis(400));
    let err = s
        .sync_discount(id(DISCOUNT), &[request("o1", DISCOUNT, "X")], short)
        .await
        .remove(0)
        .unwrap_err();
    assert!(matches!(*err, SyncError::LeaseHeld { .. }), "{err}");
    assert_eq!(err.class(), FailureClass::Transient);
    assert!(s.discounts().calls().is_empty());
    assert_eq!(s.store().action("o1"), None);
}

fn one_message_event(id: &str, body: &str, group: Option<&str>) -> SqsEvent {
    let mut message = SqsMessage::default();
    message.message_id = Some(id.to_owned());
    message.body = Some(body.to_owned());
    message
        .attributes
        .insert("ApproximateReceiveCount".into(), "4".into());
    if let Some(group) = group {
        message.event_source_arn =
            Some("arn:aws:sqs:us-east-1:123456789012:redemptions.fifo".into());
        message
            .attributes
            .insert("MessageGroupId".into(), group.to_owned());
    }
    let mut event = SqsEvent::default();
    event.records = vec![message];
    event
}

fn batch_settings() -> BatchSettings {
    BatchSettings {
        max_concurrent_discounts: 4,
        redelivery: crate::sync::RedeliveryPolicy::default(),
        // The tests' deadlines are short: they are about the lease, not the answer's time.
        answer_reserve: Duration::ZERO,
    }
}

#[tokio::test]
async fn on_its_last_receive_a_message_whose_discount_stays_busy_is_sent_again_not_dead_lettered() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    );
    hold_lease(&s, DISCOUNT, Duration::from_secs(20));
    let queue = InMemoryQueue::with_dead_letter_queue(Some(4));
    let event = one_message_event("m1", &body("o1", DISCOUNT, "X"), None);
    let short = Deadline::after(START_MARGIN + Duration::from_millis(400));
    let response = process_batch(&s, &queue, &batch_settings(), event, short)
        .await
        .unwrap();

    assert!(response.batch_item_failures.is_empty(), "acknowledged");
    assert!(queue.dead_lettered().is_empty());
    assert!(queue.delayed.lock().unwrap().is_empty());
    let requeued = queue.requeued.lock().unwrap().clone();
    assert_eq!(requeued.len(), 1);
    let (message, after) = &requeued[0];
    assert_eq!(message, "m1");
    // Back soon: the holder is still within its invocation (20 s from the start), and
    // holders finish in well under a second.
    assert!(*after <= Duration::from_secs(1), "{after:?}");
}

#[tokio::test]
async fn on_a_fifo_queue_a_busy_discount_keeps_its_message_in_the_queue_to_keep_the_order() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    );
    hold_lease(&s, DISCOUNT, Duration::from_secs(20));
    let queue = InMemoryQueue::with_dead_letter_queue(Some(8));
    let event = one_message_event("m1", &body("o1", DISCOUNT, "X"), Some(DISCOUNT));
    let short = Deadline::after(START_MARGIN + Duration::from_millis(400));
    let response = process_batch(&s, &queue, &batch_settings(), event, short)
        .await
        .unwrap();

    assert_eq!(response.batch_item_failures.len(), 1);
    assert!(queue.requeued.lock().unwrap().is_empty());
    assert_eq!(queue.delayed.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_lease_whose_holder_is_gone_and_that_frees_too_late_is_not_waited_for() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    );
    // The holder's deadline passed a second ago; its lease expires in 9 s.
    let holder = Lease {
        token: Uuid::new_v4(),
        expires_at_ms: epoch_ms(SystemTime::now()) + 9_000,
    };
    s.store()
        .discounts
        .lock()
        .unwrap()
        .entry(id(DISCOUNT))
        .or_default()
        .lease = Some(holder);
    let started = std::time::Instant::now();
    let err = s
        .sync_discount(
            id(DISCOUNT),
            &[request("o1", DISCOUNT, "X")],
            Deadline::after(Duration::from_secs(5)),
        )
        .await
        .remove(0)
        .unwrap_err();
    assert!(matches!(*err, SyncError::LeaseHeld { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
}

/// `event`'s message as a copy the function sent again `requeues` times, checkout's
/// message having been sent `first_sent_ago` (unknown: `None`).
fn as_copy(mut event: SqsEvent, requeues: u32, first_sent_ago: Option<Duration>) -> SqsEvent {
    use aws_lambda_events::event::sqs::SqsMessageAttribute;
    let number = |value: String| {
        let mut attribute = SqsMessageAttribute::default();
        attribute.data_type = Some("Number".into());
        attribute.string_value = Some(value);
        attribute
    };
    for record in &mut event.records {
        record.message_attributes.insert(
            crate::ports::REQUEUE_COUNT.into(),
            number(requeues.to_string()),
        );
        if let Some(ago) = first_sent_ago {
            let first_sent_at_ms = epoch_ms(SystemTime::now() - ago);
            record.message_attributes.insert(
                crate::ports::FIRST_SENT_AT.into(),
                number(first_sent_at_ms.to_string()),
            );
            record.attributes.insert(
                "SentTimestamp".into(),
                epoch_ms(SystemTime::now()).to_string(),
            );
        }
    }
    event
}

#[tokio::test]
async fn a_copy_sent_again_too_often_or_too_long_after_checkout_fails_as_any_other_and_ends_in_the_dead_letter_queue(
) {
    use crate::sync::redelivery::{MAX_REQUEUES, MAX_REQUEUE_AGE};
    let too_old = MAX_REQUEUE_AGE + Duration::from_secs(60);
    for (requeues, first_sent_ago) in [(MAX_REQUEUES, None), (1, Some(too_old))] {
        let s = syncer(
            InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
            InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
        );
        hold_lease(&s, DISCOUNT, Duration::from_secs(20));
        let short = Deadline::after(START_MARGIN + Duration::from_millis(400));

        // Its 4th receive of 4: the last.
        let queue = InMemoryQueue::with_dead_letter_queue(Some(4));
        let event = as_copy(
            one_message_event("m1", &body("o1", DISCOUNT, "X"), None),
            requeues,
            first_sent_ago,
        );
        let response = process_batch(&s, &queue, &batch_settings(), event, short)
            .await
            .unwrap();
        assert!(response.batch_item_failures.is_empty());
        assert!(queue.requeued.lock().unwrap().is_empty(), "{requeues}");
        let letters = queue.dead_letters.lock().unwrap().clone();
        assert_eq!(letters.len(), 1, "{requeues}, {first_sent_ago:?}");
        assert_eq!(letters[0].1.kind, "lease_held");

        // An earlier receive: back to the queue after a delay, counted by its receives.
        let queue = InMemoryQueue::with_dead_letter_queue(Some(8));
        let event = as_copy(
            one_message_event("m1", &body("o1", DISCOUNT, "X"), None),
            requeues,
            first_sent_ago,
        );
        let response = process_batch(&s, &queue, &batch_settings(), event, short)
            .await
            .unwrap();
        assert_eq!(response.batch_item_failures.len(), 1);
        assert!(queue.requeued.lock().unwrap().is_empty());
        assert_eq!(queue.delayed.lock().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn a_young_copy_is_still_sent_again_however_often_and_the_batch_reports_its_age_since_checkout(
) {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    );
    hold_lease(&s, DISCOUNT, Duration::from_secs(20));
    let queue = InMemoryQueue::with_dead_letter_queue(Some(4));
    // Turned away more often than a copy of unknown age may be: its age decides.
    let event = as_copy(
        one_message_event("m1", &body("o1", DISCOUNT, "X"), None),
        crate::sync::redelivery::MAX_REQUEUES + 10,
        Some(Duration::from_secs(600)),
    );
    let short = Deadline::after(START_MARGIN + Duration::from_millis(400));
    let response = process_batch(&s, &queue, &batch_settings(), event, short)
        .await
        .unwrap();

    assert!(response.batch_item_failures.is_empty());
    assert_eq!(queue.requeued.lock().unwrap().len(), 1);
    let recorded = s.metrics().take();
    let ages = &recorded.distributions[&crate::telemetry::Distribution::OldestMessageAge];
    assert_eq!(ages.len(), 1, "one value per batch");
    assert!(
        (600.0..610.0).contains(&ages[0]),
        "the copy's age counts from checkout's send, not the copy's: {ages:?}"
    );
}
