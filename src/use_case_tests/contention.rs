//! A hot code: a lease held elsewhere is waited for, and a discount that stays busy for the
//! whole invocation sends its messages back as new ones, never toward the dead-letter queue.

use super::*;
use crate::ports::{Committed, Coordination, LeaseAfter};
use crate::sync::START_MARGIN;

/// Another invocation holds the discount's lease until `holder_deadline` + the lease's grace.
pub(super) fn hold_lease(s: &TestSyncer, discount: &str, holder_deadline: Duration) -> Lease {
    let lease = Lease {
        token: Uuid::new_v4(),
        expires_at_ms: epoch_ms(SystemTime::now() + holder_deadline) + 10_000,
        taken_at_ms: epoch_ms(SystemTime::now()),
        turn_began_at_ms: epoch_ms(SystemTime::now()),
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

/// The discount's steps were measured to take `step`.
fn steps_take(s: &TestSyncer, step: Duration) {
    s.store()
        .discounts
        .lock()
        .unwrap()
        .entry(id(DISCOUNT))
        .or_default()
        .last_step_ms = Some(step.as_millis() as u64);
}

#[tokio::test]
async fn a_waiter_whose_holder_is_not_expected_to_be_done_in_time_asks_once_and_gives_its_messages_back(
) {
    let s = syncer(
        InMemoryStore::default()
            .with_order("o1", DISCOUNT, "X")
            .with_order("o2", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    );
    hold_lease(&s, DISCOUNT, Duration::from_secs(30));
    steps_take(&s, Duration::from_secs(5));
    let started = std::time::Instant::now();
    let outcomes = s
        .sync_discount(
            id(DISCOUNT),
            &[request("o1", DISCOUNT, "X"), request("o2", DISCOUNT, "X")],
            deadline(),
        )
        .await;

    assert_eq!(
        s.store().lease_requests(),
        1,
        "the refused write tells who holds the lease: no second look, no polling"
    );
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    for outcome in outcomes {
        let err = outcome.unwrap_err();
        assert!(matches!(*err, SyncError::LeaseHeld { .. }), "{err}");
    }
    assert!(s.discounts().calls().is_empty());
    assert_eq!(s.store().action("o1"), None);
}

#[tokio::test]
async fn a_waiter_hands_its_orders_to_the_holder_and_gives_its_messages_back_for_when_the_holders_next_step_ends(
) {
    let s = syncer(
        InMemoryStore::default()
            .with_order("o1", DISCOUNT, "X")
            .with_order("o2", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    );
    steps_take(&s, Duration::from_millis(300));
    let holder = hold_lease(&s, DISCOUNT, Duration::from_secs(30));
    let started = std::time::Instant::now();
    let outcomes = s
        .sync_discount(
            id(DISCOUNT),
            &[request("o1", DISCOUNT, "X"), request("o2", DISCOUNT, "X")],
            deadline(),
        )
        .await;

    assert!(
        started.elapsed() < Duration::from_millis(200),
        "no waiting: {:?}",
        started.elapsed()
    );
    assert_eq!(
        s.store().handed_off(id(DISCOUNT)),
        [request("o1", DISCOUNT, "X"), request("o2", DISCOUNT, "X")]
    );
    assert_eq!((s.store().lease_requests(), s.store().hand_offs()), (1, 1));
    let holder_next_step_ends = holder.taken_at_ms + 2 * 300;
    for outcome in outcomes {
        let err = outcome.unwrap_err();
        let SyncError::LeaseHeld {
            expected_release_at_ms,
            handed_over,
            ..
        } = *err
        else {
            panic!("{err}")
        };
        assert_eq!(expected_release_at_ms, Some(holder_next_step_ends));
        assert!(handed_over);
    }
    assert!(s.discounts().calls().is_empty());
    assert_eq!(
        s.store().action("o1"),
        None,
        "counted by the holder, or by a copy"
    );
}

#[tokio::test]
async fn a_waiter_with_a_steps_worth_of_orders_waits_for_the_lease_instead_of_handing_them_over() {
    let s = Arc::new(syncer(
        InMemoryStore::default(),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(1_000)),
    ));
    let requests = orders_of(&s, 25, DISCOUNT, "X");
    steps_take(&s, Duration::from_millis(300));
    let holder = hold_lease(&s, DISCOUNT, Duration::from_secs(30));
    let releaser = {
        let s = s.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            s.store()
                .release_dropping_journal(id(DISCOUNT), &holder)
                .await
                .unwrap();
        })
    };

    let outcomes = s.sync_discount(id(DISCOUNT), &requests, deadline()).await;
    releaser.await.unwrap();

    for outcome in outcomes {
        assert_eq!(outcome.unwrap(), Synced::Applied(SyncAction::Decremented));
    }
    assert_eq!(s.store().hand_offs(), 0);
    assert_eq!(s.discounts().calls(), [Call::Get, Call::Update(975)]);
}

#[tokio::test]
async fn a_copy_whose_order_the_holder_counted_is_acknowledged_while_the_holder_still_holds_the_lease(
) {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    );
    steps_take(&s, Duration::from_secs(2));
    let holder = hold_lease(&s, DISCOUNT, Duration::from_secs(30));
    // The holder counted the order it was handed, and keeps the lease for more.
    let committed = s
        .store()
        .commit(
            id(DISCOUNT),
            &holder,
            &[order("o1")],
            SyncAction::Decremented,
            SystemTime::now(),
            LeaseAfter::Kept,
        )
        .await;
    assert_eq!(committed.unwrap(), Committed::AsAsked);

    let outcome = sync_one(&s, request("o1", DISCOUNT, "X")).await;

    assert_eq!(outcome.unwrap(), Synced::AlreadySynced);
    assert_eq!(
        (s.store().lease_requests(), s.store().hand_offs()),
        (1, 0),
        "the refused start says the order is synced: nothing to wait for or hand over"
    );
    assert!(s.discounts().calls().is_empty());
}

#[tokio::test]
async fn a_waiter_whose_hand_off_fails_waits_for_the_lease_and_reports_each_holder_it_waited_out() {
    let s = Arc::new(syncer(
        InMemoryStore::default()
            .with_order("o1", DISCOUNT, "X")
            .with_hand_offs_failing(),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    ));
    steps_take(&s, Duration::from_millis(300));
    hold_lease(&s, DISCOUNT, Duration::from_secs(30));
    // Just before the first holder's expected end, a second one holds the lease, expected
    // to be busy longer than a waiter waits.
    let second_holder = {
        let s = s.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(250)).await;
            steps_take(&s, Duration::from_secs(10));
            hold_lease(&s, DISCOUNT, Duration::from_secs(30));
        })
    };
    let outcome = sync_one(&s, request("o1", DISCOUNT, "X")).await;
    second_holder.await.unwrap();

    let err = outcome.unwrap_err();
    assert!(matches!(*err, SyncError::LeaseHeld { .. }), "{err}");
    assert_eq!(s.store().lease_requests(), 2);
    assert_eq!(
        s.metrics()
            .take()
            .count(crate::telemetry::Count::LeaseWaitRequests),
        2
    );
}

#[tokio::test]
async fn a_waiter_that_cannot_use_the_one_write_start_still_asks_for_the_lease_once() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    );
    hold_lease(&s, DISCOUNT, Duration::from_secs(30));
    steps_take(&s, Duration::from_secs(5));
    // A FIFO group claims in order, without the one-write start.
    let outcomes = s
        .sync_discount_in_order(id(DISCOUNT), &[request("o1", DISCOUNT, "X")], deadline())
        .await;

    assert_eq!(s.store().lease_requests(), 1);
    let err = outcomes[0].clone().unwrap_err();
    assert!(matches!(*err, SyncError::LeaseHeld { .. }), "{err}");
}

#[tokio::test]
async fn a_waiter_expects_its_order_counted_when_the_holders_next_measured_step_would_end() {
    let s = syncer(
        InMemoryStore::default()
            .with_order("o1", DISCOUNT, "X")
            .with_order("o2", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    );
    sync_one(&s, request("o1", DISCOUNT, "X")).await.unwrap();
    let measured = s.store().discounts.lock().unwrap()[&id(DISCOUNT)].last_step_ms;
    assert!(
        measured.is_some(),
        "the step that released the lease was measured"
    );
    // A holder's steps on this code take 2 s: its next one ends after the waiter would wait.
    s.store()
        .discounts
        .lock()
        .unwrap()
        .get_mut(&id(DISCOUNT))
        .unwrap()
        .last_step_ms = Some(2_000);
    let holder = hold_lease(&s, DISCOUNT, Duration::from_secs(30));

    let err = sync_one(&s, request("o2", DISCOUNT, "X"))
        .await
        .unwrap_err();

    let SyncError::LeaseHeld {
        expected_release_at_ms,
        ..
    } = *err
    else {
        panic!("{err}");
    };
    assert_eq!(
        expected_release_at_ms,
        Some(holder.taken_at_ms + 2 * 2_000),
        "the holder's next step, which counts the order handed to it"
    );
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
        taken_at_ms: epoch_ms(SystemTime::now()) - 21_000,
        turn_began_at_ms: epoch_ms(SystemTime::now()) - 21_000,
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

/// A batch of first receives, one message per `(message id, order)`.
fn event_of(messages: &[(&str, &str)]) -> SqsEvent {
    let bodies: Vec<(&str, String)> = messages
        .iter()
        .map(|(message_id, order)| (*message_id, body(order, DISCOUNT, "X")))
        .collect();
    let records: Vec<(&str, &str)> = bodies
        .iter()
        .map(|(message_id, body)| (*message_id, body.as_str()))
        .collect();
    super::batch::sqs_event(&records)
}

fn requeued_ids(queue: &InMemoryQueue) -> Vec<String> {
    let mut ids: Vec<String> = queue
        .requeued
        .lock()
        .unwrap()
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    ids.sort();
    ids
}

fn patches(s: &TestSyncer) -> usize {
    s.discounts()
        .calls()
        .iter()
        .filter(|call| matches!(call, Call::Update(_)))
        .count()
}

#[tokio::test]
async fn when_the_holder_dies_the_orders_its_waiter_gave_back_are_counted_once_by_their_copies() {
    let (s, crash_at) = super::journal::crashing_syncer(
        InMemoryStore::default()
            .with_order("o1", DISCOUNT, "X")
            .with_order("o2", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(5)),
    );
    // The holder journals its write for o1, then dies before it reaches Polar.
    *crash_at.lock().unwrap() = Some(Step::JournalWritten);
    let crashed = AssertUnwindSafe(s.sync_discount(
        id(DISCOUNT),
        &[request("o1", DISCOUNT, "X")],
        deadline(),
    ))
    .catch_unwind()
    .await;
    assert!(crashed.is_err(), "the holder died");
    // Its steps were measured to take longer than a waiter waits.
    steps_take(&s, Duration::from_secs(5));

    // A waiter gets o2 and a duplicate of o1 while the dead holder's lease still stands.
    let waiter_event = event_of(&[("m-dup-o1", "o1"), ("m-o2", "o2")]);
    let requests_before = s.store().lease_requests();
    let queue = InMemoryQueue::with_dead_letter_queue(Some(4));
    let response = process_batch(
        &s,
        &queue,
        &batch_settings(),
        waiter_event.clone(),
        deadline(),
    )
    .await
    .unwrap();
    assert!(
        response.batch_item_failures.is_empty(),
        "given back, not failed"
    );
    assert_eq!(requeued_ids(&queue), ["m-dup-o1", "m-o2"]);
    assert_eq!(s.store().lease_requests() - requests_before, 1);
    assert_eq!(patches(&s), 0);

    // The copies come back before the lease expires: given back again, still uncounted.
    let queue = InMemoryQueue::with_dead_letter_queue(Some(4));
    let copies = as_copy(waiter_event.clone(), 1, Some(Duration::from_secs(2)));
    let response = process_batch(&s, &queue, &batch_settings(), copies, deadline())
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(requeued_ids(&queue), ["m-dup-o1", "m-o2"]);
    assert_eq!(patches(&s), 0);
    assert_eq!(s.store().action("o2"), None);

    // The dead holder's lease expires; the next copies settle its journal and count o2.
    super::journal::expire_lease(&s);
    let queue = InMemoryQueue::with_dead_letter_queue(Some(4));
    let copies = as_copy(waiter_event, 2, Some(Duration::from_secs(15)));
    let response = process_batch(&s, &queue, &batch_settings(), copies, deadline())
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert!(queue.requeued.lock().unwrap().is_empty());
    assert!(queue.dead_lettered().is_empty());
    assert_eq!(
        s.discounts().max_redemptions(id(DISCOUNT)),
        Some(Some(3)),
        "o1 and o2, each once"
    );
    assert_eq!(s.store().action("o1"), Some(SyncAction::Decremented));
    assert_eq!(s.store().action("o2"), Some(SyncAction::Decremented));
    assert_marked_once(&s);
    assert_eq!(s.store().journal(id(DISCOUNT)), None);
}

#[tokio::test]
async fn a_waiters_message_delivered_again_after_the_holder_counted_its_order_is_not_counted_twice()
{
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(5)),
    );
    let holder = hold_lease(&s, DISCOUNT, Duration::from_secs(30));
    steps_take(&s, Duration::from_secs(5));

    // A duplicate of the holder's message, in a waiter's batch, is given back.
    let waiter_event = event_of(&[("m-dup-o1", "o1")]);
    let queue = InMemoryQueue::with_dead_letter_queue(Some(4));
    let response = process_batch(
        &s,
        &queue,
        &batch_settings(),
        waiter_event.clone(),
        deadline(),
    )
    .await
    .unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(requeued_ids(&queue), ["m-dup-o1"]);
    assert_eq!(s.store().lease_requests(), 1);

    // The holder counts o1 and gives the lease up.
    s.store()
        .discounts
        .lock()
        .unwrap()
        .get_mut(&id(DISCOUNT))
        .unwrap()
        .lease
        .take_if(|lease| *lease == holder);
    sync_one(&s, request("o1", DISCOUNT, "X")).await.unwrap();
    assert_eq!(s.discounts().max_redemptions(id(DISCOUNT)), Some(Some(4)));

    // The copy comes back, and so does the original (the waiter's answer was lost).
    let copy = as_copy(waiter_event.clone(), 1, Some(Duration::from_secs(2)));
    let mut original = waiter_event;
    original.records[0]
        .attributes
        .insert("ApproximateReceiveCount".into(), "2".into());
    for event in [copy, original] {
        let queue = InMemoryQueue::with_dead_letter_queue(Some(4));
        let response = process_batch(&s, &queue, &batch_settings(), event, deadline())
            .await
            .unwrap();
        assert!(response.batch_item_failures.is_empty());
        assert!(queue.requeued.lock().unwrap().is_empty());
    }
    assert_eq!(patches(&s), 1, "{:?}", s.discounts().calls());
    assert_eq!(s.discounts().max_redemptions(id(DISCOUNT)), Some(Some(4)));
    assert_marked_once(&s);
}

#[tokio::test]
async fn steps_of_one_discount_in_one_container_take_turns_instead_of_giving_messages_back() {
    let s = syncer(
        InMemoryStore::default()
            .with_round_trips()
            .with_order("a1", DISCOUNT, "X")
            .with_order("b1", DISCOUNT, "X"),
        InMemoryDiscounts::default()
            .with_get_latency(Duration::from_millis(300))
            .with(id(DISCOUNT), "X", Some(5)),
    );
    // Two FIFO groups of one discount in one batch run concurrently; each step holds the
    // lease for 300 ms, and no step was measured yet.
    let started = std::time::Instant::now();
    let group_a = [request("a1", DISCOUNT, "X")];
    let group_b = [request("b1", DISCOUNT, "X")];
    let (a, b) = tokio::join!(
        s.sync_discount_in_order(id(DISCOUNT), &group_a, deadline()),
        s.sync_discount_in_order(id(DISCOUNT), &group_b, deadline()),
    );

    assert_eq!(
        a[0].clone().unwrap(),
        Synced::Applied(SyncAction::Decremented)
    );
    assert_eq!(
        b[0].clone().unwrap(),
        Synced::Applied(SyncAction::Decremented)
    );
    assert_eq!(s.store().lease_requests(), 2, "one each, none refused");
    assert!(
        started.elapsed() < Duration::from_millis(750),
        "the second step started as the first ended: {:?}",
        started.elapsed()
    );
    assert_eq!(s.discounts().max_redemptions(id(DISCOUNT)), Some(Some(3)));
}

/// A syncer whose budget serves two requests at once, then one every half second, with
/// `o1` synced already (the burst spent) and `o2` still to count.
async fn budget_spent_on_o1() -> Arc<TestSyncer> {
    let s = Arc::new(
        syncer(
            InMemoryStore::default()
                .with_order("o1", DISCOUNT, "X")
                .with_order("o2", DISCOUNT, "X"),
            InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
        )
        .with_rate_limiter(RateLimiter::per_minute(120, 2)),
    );
    sync_one(&s, request("o1", DISCOUNT, "X")).await.unwrap();
    s
}

fn lease_held_for_ms(s: &TestSyncer) -> u64 {
    s.store().discounts.lock().unwrap()[&id(DISCOUNT)]
        .last_step_ms
        .unwrap()
}

#[tokio::test]
async fn on_a_contended_discount_a_step_whose_rate_budget_is_not_ready_waits_without_the_lease() {
    let s = budget_spent_on_o1().await;
    // Another invocation held the lease when o2 first came: the discount is contended.
    steps_take(&s, Duration::from_millis(50));
    let holder = hold_lease(&s, DISCOUNT, Duration::from_secs(30));
    let handed_over = sync_one(&s, request("o2", DISCOUNT, "X")).await;
    assert!(matches!(
        *handed_over.unwrap_err(),
        SyncError::LeaseHeld { .. }
    ));
    s.store()
        .release_dropping_journal(id(DISCOUNT), &holder)
        .await
        .unwrap();

    let outcome = sync_one(&s, request("o2", DISCOUNT, "X")).await;

    assert_eq!(outcome.unwrap(), Synced::Applied(SyncAction::Decremented));
    let held_for = lease_held_for_ms(&s);
    assert!(
        held_for < 300,
        "the lease was held {held_for} ms: the step waited for its budget while holding it"
    );
    assert_eq!(
        s.store().lease_requests(),
        4,
        "o1's start; o2's refused (then handed over); o2's start, and again after its wait \
         for the budget"
    );
}

#[tokio::test]
async fn on_a_discount_nobody_else_holds_a_step_keeps_its_lease_through_its_budget_wait() {
    let s = budget_spent_on_o1().await;

    let outcome = sync_one(&s, request("o2", DISCOUNT, "X")).await;

    assert_eq!(outcome.unwrap(), Synced::Applied(SyncAction::Decremented));
    assert!(
        lease_held_for_ms(&s) >= 400,
        "nobody waits: no requests spent"
    );
    assert_eq!(s.store().lease_requests(), 2);
}

#[tokio::test]
async fn a_step_with_nothing_to_count_never_waits_for_the_rate_budget() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    )
    .with_rate_limiter(RateLimiter::per_minute(120, 2));
    sync_one(&s, request("o1", DISCOUNT, "X")).await.unwrap();

    let started = std::time::Instant::now();
    let outcome = sync_one(&s, request("o1", DISCOUNT, "X")).await;

    assert_eq!(outcome.unwrap(), Synced::AlreadySynced);
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "a copy of a synced order waited {:?} for a budget it does not use",
        started.elapsed()
    );
}

/// A syncer whose step, once, finds `handed` handed over by a waiter while it writes to
/// Polar.
fn holder_handed_over_while_writing(s: TestSyncer, handed: Vec<SyncRequest>) -> Arc<TestSyncer> {
    slow_holder_handed_over_while_writing(s, handed, Duration::ZERO)
}

/// The same, whose first step takes `slow` longer between its journal and its write.
fn slow_holder_handed_over_while_writing(
    s: TestSyncer,
    handed: Vec<SyncRequest>,
    slow: Duration,
) -> Arc<TestSyncer> {
    Arc::new_cyclic(|me: &std::sync::Weak<TestSyncer>| {
        let me = me.clone();
        let once = std::sync::atomic::AtomicBool::new(false);
        s.with_checkpoint(Arc::new(move |step| {
            if step == Step::JournalWritten && !once.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(slow);
            }
            if step == Step::PolarWritten && !once.swap(true, std::sync::atomic::Ordering::SeqCst) {
                if let Some(s) = me.upgrade() {
                    let mut discounts = s.store().discounts.lock().unwrap();
                    let stored = discounts.get_mut(&id(DISCOUNT)).expect("the lease is held");
                    stored.handed_off.extend(handed.iter().cloned());
                }
            }
        }))
    })
}

#[tokio::test]
async fn a_holder_whose_release_finds_orders_handed_over_counts_them_in_one_more_step_then_releases(
) {
    let s = holder_handed_over_while_writing(
        syncer(
            InMemoryStore::default()
                .with_order("o1", DISCOUNT, "X")
                .with_order("o2", DISCOUNT, "X")
                .with_order("o3", DISCOUNT, "X"),
            InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(10)),
        ),
        vec![request("o2", DISCOUNT, "X"), request("o3", DISCOUNT, "X")],
    );

    let outcome = sync_one(&s, request("o1", DISCOUNT, "X")).await;

    assert_eq!(outcome.unwrap(), Synced::Applied(SyncAction::Decremented));
    assert_eq!(s.store().action("o2"), Some(SyncAction::Decremented));
    assert_eq!(s.store().action("o3"), Some(SyncAction::Decremented));
    assert_eq!(
        s.discounts().calls(),
        [Call::Get, Call::Update(9), Call::Get, Call::Update(7)],
        "the two handed-over orders are counted together, in one more step"
    );
    assert!(s.store().handed_off(id(DISCOUNT)).is_empty());
    assert_eq!(
        s.store().lease(id(DISCOUNT)),
        None,
        "released after that step"
    );
    assert_eq!(s.store().journal(id(DISCOUNT)), None);
    assert_marked_once(&s);
    assert_eq!(
        s.metrics()
            .take()
            .count(crate::telemetry::Count::OrdersDecremented),
        2,
        "the holder reports the actions of the orders it took over"
    );
}

#[tokio::test]
async fn orders_handed_over_that_were_synced_meanwhile_or_name_another_code_are_not_counted() {
    let s = holder_handed_over_while_writing(
        syncer(
            InMemoryStore::default()
                .with_order("o1", DISCOUNT, "X")
                .with_order("o2", DISCOUNT, "X")
                .with_order("o3", DISCOUNT, "Y"),
            InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(10)),
        ),
        // o1 is the holder's own order, marked by the very commit that finds the list.
        vec![request("o1", DISCOUNT, "X"), request("o3", DISCOUNT, "X")],
    );

    let outcome = sync_one(&s, request("o1", DISCOUNT, "X")).await;

    assert_eq!(outcome.unwrap(), Synced::Applied(SyncAction::Decremented));
    assert_eq!(s.store().action("o3"), None, "left to its own message");
    assert_eq!(s.discounts().calls(), [Call::Get, Call::Update(9)]);
    assert!(s.store().handed_off(id(DISCOUNT)).is_empty());
    assert_eq!(s.store().lease(id(DISCOUNT)), None);
    assert_marked_once(&s);
}

#[tokio::test]
async fn a_holder_without_polar_budget_for_one_more_step_releases_and_leaves_the_orders_handed_over(
) {
    // Two requests at once, then one every half second: no room for a second step.
    let s = holder_handed_over_while_writing(
        syncer(
            InMemoryStore::default()
                .with_order("o1", DISCOUNT, "X")
                .with_order("o2", DISCOUNT, "X"),
            InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(10)),
        )
        .with_rate_limiter(RateLimiter::per_minute(120, 2)),
        vec![request("o2", DISCOUNT, "X")],
    );

    let started = std::time::Instant::now();
    let outcome = sync_one(&s, request("o1", DISCOUNT, "X")).await;

    assert_eq!(outcome.unwrap(), Synced::Applied(SyncAction::Decremented));
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "the holder did not wait for its budget: {:?}",
        started.elapsed()
    );
    assert_eq!(s.store().action("o2"), None);
    assert_eq!(
        s.store().handed_off(id(DISCOUNT)),
        [request("o2", DISCOUNT, "X")],
        "left on the list, for its waiter or the next holder with budget"
    );
    assert_eq!(s.store().lease(id(DISCOUNT)), None);
}

#[tokio::test]
async fn a_holder_whose_turn_has_lasted_long_releases_and_leaves_the_orders_handed_over() {
    // The holder's step takes longer than a turn may last with hand-offs.
    let s = slow_holder_handed_over_while_writing(
        syncer(
            InMemoryStore::default()
                .with_order("o1", DISCOUNT, "X")
                .with_order("o2", DISCOUNT, "X"),
            InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(10)),
        ),
        vec![request("o2", DISCOUNT, "X")],
        Duration::from_millis(1_600),
    );

    let outcome = sync_one(&s, request("o1", DISCOUNT, "X")).await;

    assert_eq!(outcome.unwrap(), Synced::Applied(SyncAction::Decremented));
    assert_eq!(s.store().action("o2"), None);
    assert_eq!(
        s.store().handed_off(id(DISCOUNT)),
        [request("o2", DISCOUNT, "X")],
        "left for its waiter, or a holder that just took the lease"
    );
    assert_eq!(s.store().lease(id(DISCOUNT)), None);
}
