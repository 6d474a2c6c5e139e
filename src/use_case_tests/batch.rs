//! SQS batches: partial failures, redelivery, dead letters, FIFO order, deadlines, rate.

use super::*;

pub(super) fn sqs_event(bodies: &[(&str, &str)]) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = bodies
        .iter()
        .map(|(id, body)| {
            let mut message = SqsMessage::default();
            message.message_id = Some(id.to_string());
            message.body = Some(body.to_string());
            message
                .attributes
                .insert("ApproximateReceiveCount".into(), "1".into());
            message
        })
        .collect();
    event
}

const FIFO_QUEUE_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:redemptions.fifo";

fn fifo_event(messages: &[(&str, &str, &str)]) -> SqsEvent {
    let mut event = sqs_event(
        &messages
            .iter()
            .map(|(id, _, body)| (*id, *body))
            .collect::<Vec<_>>(),
    );
    for (record, (_, group, _)) in event.records.iter_mut().zip(messages) {
        record.event_source_arn = Some(FIFO_QUEUE_ARN.into());
        record
            .attributes
            .insert("MessageGroupId".into(), group.to_string());
    }
    event
}

pub(super) fn settings() -> BatchSettings {
    BatchSettings {
        max_concurrent_discounts: 4,
        redelivery: crate::sync::RedeliveryPolicy::default(),
        answer_reserve: Duration::from_secs(1),
    }
}

use test_kit::sqs::failed_ids;

#[tokio::test]
async fn a_batch_reports_exactly_the_messages_that_must_come_back() {
    let s = syncer(
        InMemoryStore::default()
            .with_order("o1", DISCOUNT, "X")
            .with_order("o2", DISCOUNT, "X")
            .with_order("o3", OTHER_DISCOUNT, "Y"),
        InMemoryDiscounts::default()
            .with(id(DISCOUNT), "X", Some(10))
            .with(id(OTHER_DISCOUNT), "Y", Some(10)),
    );
    let queue = InMemoryQueue::with_dead_letter_queue(Some(8));
    let b1 = body("o1", DISCOUNT, "X");
    let b2 = body("o2", DISCOUNT, "X");
    let b3 = body("o3", OTHER_DISCOUNT, "Y");
    let missing = body("ghost", DISCOUNT, "X");
    let event = sqs_event(&[
        ("m1", &b1),
        ("bad", "{not json"),
        ("m2", &b2),
        ("m1-dup", &b1),
        ("m3", &b3),
        ("m4", &missing),
    ]);
    let response = process_batch(&s, &queue, &settings(), event, deadline())
        .await
        .unwrap();
    assert_eq!(
        failed_ids(&response),
        ["m4"],
        "the malformed one went to the DLQ"
    );
    assert_eq!(queue.dead_lettered(), ["bad"]);
    let (kind, class) = {
        let letters = queue.dead_letters.lock().unwrap();
        (letters[0].1.kind, letters[0].1.class)
    };
    assert_eq!((kind, class), ("invalid_message", FailureClass::Permanent));
    let delayed = queue.delayed.lock().unwrap().clone();
    assert_eq!(delayed.len(), 1);
    assert_eq!(delayed[0].0, "m4", "the missing order is retried later");
    assert!(delayed[0].1 >= Duration::from_millis(2500));
    assert_eq!(s.discounts().max_redemptions(id(DISCOUNT)), Some(Some(8)));
    assert_eq!(
        s.discounts().max_redemptions(id(OTHER_DISCOUNT)),
        Some(Some(9))
    );
}

#[tokio::test]
async fn without_a_dead_letter_queue_a_permanent_failure_is_reported_not_dropped() {
    let s = syncer(InMemoryStore::default(), InMemoryDiscounts::default());
    let queue = InMemoryQueue::default();
    let response = process_batch(
        &s,
        &queue,
        &settings(),
        sqs_event(&[("bad", "[]")]),
        deadline(),
    )
    .await
    .unwrap();
    assert_eq!(failed_ids(&response), ["bad"]);
}

#[tokio::test]
async fn on_its_last_receive_a_retryable_failure_is_dead_lettered_with_its_reason() {
    let s = syncer(InMemoryStore::default(), InMemoryDiscounts::default());
    let queue = InMemoryQueue::with_dead_letter_queue(Some(3));
    let missing = body("ghost", DISCOUNT, "X");
    let mut event = sqs_event(&[("m1", &missing)]);
    event.records[0]
        .attributes
        .insert("ApproximateReceiveCount".into(), "3".into());
    let response = process_batch(&s, &queue, &settings(), event, deadline())
        .await
        .unwrap();
    assert!(failed_ids(&response).is_empty());
    let letters = queue.dead_letters.lock().unwrap();
    assert_eq!(letters[0].1.kind, "order_not_found");
    assert!(
        letters[0].1.reason.contains("ghost"),
        "{}",
        letters[0].1.reason
    );
}

#[tokio::test]
async fn on_a_fifo_queue_a_failure_holds_back_the_rest_of_its_group_unprocessed() {
    let s = syncer(
        InMemoryStore::default()
            .with_order("o1", DISCOUNT, "X")
            .with_order("o3", DISCOUNT, "X")
            .with_order("o4", OTHER_DISCOUNT, "Y"),
        InMemoryDiscounts::default()
            .with(id(DISCOUNT), "X", Some(10))
            .with(id(OTHER_DISCOUNT), "Y", Some(10)),
    );
    let queue = InMemoryQueue::with_dead_letter_queue(Some(8));
    let (b1, b2, b3, b4) = (
        body("o1", DISCOUNT, "X"),
        body("o2-not-written-yet", DISCOUNT, "X"),
        body("o3", DISCOUNT, "X"),
        body("o4", OTHER_DISCOUNT, "Y"),
    );
    let event = fifo_event(&[
        ("m1", DISCOUNT, &b1),
        ("m2", DISCOUNT, &b2),
        ("m3", DISCOUNT, &b3),
        ("m4", OTHER_DISCOUNT, &b4),
    ]);
    let response = process_batch(&s, &queue, &settings(), event, deadline())
        .await
        .unwrap();
    assert_eq!(
        failed_ids(&response),
        ["m2", "m3"],
        "m3 comes back after m2"
    );
    assert_eq!(s.store().action("o1"), Some(SyncAction::Decremented));
    // Claimed in order: m2's missing order stops the run, so o3 is not counted before it.
    assert_eq!(s.store().action("o3"), None, "o3 must wait for o2");
    assert_eq!(
        s.store().action("o4"),
        Some(SyncAction::Decremented),
        "other groups go on"
    );
    assert_eq!(s.discounts().max_redemptions(id(DISCOUNT)), Some(Some(9)));
}

#[tokio::test]
async fn a_standard_queue_with_message_groups_is_not_taken_for_a_fifo_queue() {
    let s = syncer(
        InMemoryStore::default().with_order("o3", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(10)),
    );
    let queue = InMemoryQueue::with_dead_letter_queue(Some(8));
    let (b2, b3) = (
        body("o2-not-written-yet", DISCOUNT, "X"),
        body("o3", DISCOUNT, "X"),
    );
    // A fair queue: standard, with a tenant's MessageGroupId on every message.
    let mut event = fifo_event(&[("m2", "tenant-a", &b2), ("m3", "tenant-a", &b3)]);
    for record in &mut event.records {
        record.event_source_arn = Some("arn:aws:sqs:us-east-1:123456789012:redemptions".into());
    }

    let response = process_batch(&s, &queue, &settings(), event, deadline())
        .await
        .unwrap();

    assert_eq!(failed_ids(&response), ["m2"]);
    assert_eq!(
        s.store().action("o3"),
        Some(SyncAction::Decremented),
        "no group order to keep on a standard queue: m3 is not held back behind m2"
    );
}

#[tokio::test]
async fn on_a_fifo_queue_consecutive_messages_of_one_discount_are_counted_in_one_write() {
    let s = syncer(
        InMemoryStore::default()
            .with_order("o1", DISCOUNT, "X")
            .with_order("o2", DISCOUNT, "X")
            .with_order("o3", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(10)),
    );
    let queue = InMemoryQueue::with_dead_letter_queue(Some(8));
    let bodies = ["o1", "o2", "o3"].map(|o| body(o, DISCOUNT, "X"));
    let event = fifo_event(&[
        ("m1", DISCOUNT, &bodies[0]),
        ("m2", DISCOUNT, &bodies[1]),
        ("m3", DISCOUNT, &bodies[2]),
    ]);
    let response = process_batch(&s, &queue, &settings(), event, deadline())
        .await
        .unwrap();
    assert!(failed_ids(&response).is_empty());
    assert_eq!(s.discounts().max_redemptions(id(DISCOUNT)), Some(Some(7)));
    assert_eq!(s.discounts().calls(), [Call::Get, Call::Update(7)]);
}

#[tokio::test]
async fn on_a_fifo_queue_a_dead_lettered_message_does_not_hold_back_its_group() {
    let s = syncer(
        InMemoryStore::default().with_order("o2", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(10)),
    );
    let queue = InMemoryQueue::with_dead_letter_queue(Some(8));
    let b2 = body("o2", DISCOUNT, "X");
    let event = fifo_event(&[("m1", DISCOUNT, "{broken"), ("m2", DISCOUNT, &b2)]);
    let response = process_batch(&s, &queue, &settings(), event, deadline())
        .await
        .unwrap();
    assert!(failed_ids(&response).is_empty());
    assert_eq!(queue.dead_lettered(), ["m1"]);
    assert_eq!(s.store().action("o2"), Some(SyncAction::Decremented));
}

#[tokio::test]
async fn messages_are_not_started_when_the_deadline_is_too_close() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    );
    let queue = InMemoryQueue::with_dead_letter_queue(Some(8));
    let b1 = body("o1", DISCOUNT, "X");
    let response = process_batch(
        &s,
        &queue,
        &settings(),
        sqs_event(&[("m1", &b1)]),
        Deadline::after(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    assert_eq!(failed_ids(&response), ["m1"]);
    assert!(s.discounts().calls().is_empty());
    assert_eq!(
        queue.delayed.lock().unwrap().len(),
        1,
        "comes back after the redelivery delay, as every retried failure"
    );
}

#[tokio::test]
async fn a_record_without_a_message_id_fails_the_whole_batch() {
    let s = syncer(InMemoryStore::default(), InMemoryDiscounts::default());
    let mut event = sqs_event(&[("m1", "{}")]);
    event.records[0].message_id = None;
    assert!(process_batch(
        &s,
        &InMemoryQueue::default(),
        &settings(),
        event,
        deadline()
    )
    .await
    .is_err());
}

#[tokio::test]
async fn a_step_whose_write_would_find_no_slot_in_the_rate_budget_takes_no_lease_and_sends_nothing()
{
    let s = syncer(
        InMemoryStore::default(),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(10)),
    )
    .with_rate_limiter(RateLimiter::per_minute(1, 1));
    let steps = Arc::new(Mutex::new(Vec::new()));
    let seen = steps.clone();
    let s = s.with_checkpoint(Arc::new(move |step| seen.lock().unwrap().push(step)));
    let requests = orders_of(&s, 1, DISCOUNT, "X");
    let outcome = s
        .sync_discount(
            id(DISCOUNT),
            &requests,
            Deadline::after(Duration::from_secs(20)),
        )
        .await;
    let err = outcome[0].as_ref().unwrap_err();
    assert!(
        matches!(
            **err,
            SyncError::Polar(PolarFailure {
                kind: PolarFailureKind::OverBudget { .. },
                ..
            })
        ),
        "{err}"
    );
    assert_eq!(
        s.discounts().calls(),
        [],
        "a GET alone would be wasted: the PATCH has no slot within the deadline"
    );
    assert_eq!(
        *steps.lock().unwrap(),
        [],
        "nor a lease or claims: the step is turned away before it starts"
    );
    assert_eq!(
        s.store().journal(id(DISCOUNT)),
        None,
        "nothing pending: the write was never sent"
    );
}

#[tokio::test]
async fn a_batch_whose_budget_serves_one_step_takes_one_lease_and_sends_the_others_back_in_line() {
    const THIRD_DISCOUNT: &str = "5a0f7c2e-8d41-4b6a-b3e9-71c2d4f6a803";
    let discounts = [DISCOUNT, OTHER_DISCOUNT, THIRD_DISCOUNT];
    let mut store = InMemoryStore::default().with_round_trips();
    let mut polar = InMemoryDiscounts::default();
    for (n, discount) in discounts.iter().enumerate() {
        store = store.with_order(&format!("o{n}"), discount, "X");
        polar = polar.with(id(discount), "X", Some(10));
    }
    // A read and its write fit now (a burst of 2); the next pair is 10 s away, past what a
    // 5 s deadline lets a step wait.
    let s = syncer(store, polar).with_rate_limiter(RateLimiter::per_minute(6, 2));
    let steps = Arc::new(Mutex::new(Vec::new()));
    let seen = steps.clone();
    let s = s.with_checkpoint(Arc::new(move |step| seen.lock().unwrap().push(step)));
    let bodies: Vec<(String, String)> = discounts
        .iter()
        .enumerate()
        .map(|(n, discount)| (format!("m{n}"), body(&format!("o{n}"), discount, "X")))
        .collect();
    let records: Vec<(&str, &str)> = bodies
        .iter()
        .map(|(m, b)| (m.as_str(), b.as_str()))
        .collect();
    let queue = InMemoryQueue::default();
    let response = process_batch(
        &s,
        &queue,
        &settings(),
        sqs_event(&records),
        Deadline::after(Duration::from_secs(5)),
    )
    .await
    .unwrap();

    let leases = steps
        .lock()
        .unwrap()
        .iter()
        .filter(|step| matches!(step, Step::LeaseTaken))
        .count();
    assert_eq!(
        leases, 1,
        "the steps start together: only the one the budget serves may take a lease and claims"
    );
    assert_eq!(s.discounts().calls().len(), 2, "its read and its write");
    assert!(failed_ids(&response).is_empty(), "{response:?}");
    let mut delays: Vec<Duration> = queue
        .requeued
        .lock()
        .unwrap()
        .iter()
        .map(|(_, after)| *after)
        .collect();
    delays.sort();
    assert_eq!(
        delays.len(),
        2,
        "the other two go back to the queue, for when the budget has a slot"
    );
    // Slots 0 and 1 are the served step's; a step needs 2 more, 10 s apart: slots 2 and 3
    // start 10 s and 20 s from now, slots 4 and 5 at 30 s and 40 s. Each comes back in its
    // turn (up to 1 s later, spread), not both when the first pair is free.
    let secs = |s: f64| Duration::from_secs_f64(s);
    assert!(
        delays[0] > secs(19.9) && delays[0] <= secs(21.0),
        "{delays:?}"
    );
    assert!(
        delays[1] > secs(39.9) && delays[1] <= secs(41.0),
        "{delays:?}"
    );
}

#[tokio::test]
async fn a_message_not_started_on_its_last_receive_is_dead_lettered_with_its_reason() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    );
    let queue = InMemoryQueue::with_dead_letter_queue(Some(1));
    let b1 = body("o1", DISCOUNT, "X");
    let response = process_batch(
        &s,
        &queue,
        &settings(),
        sqs_event(&[("m1", &b1)]),
        Deadline::after(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    assert!(
        failed_ids(&response).is_empty(),
        "acknowledged once dead-lettered"
    );
    let letters = queue.dead_letters.lock().unwrap();
    assert_eq!(letters[0].1.kind, "deadline_too_close");
}

#[tokio::test]
async fn a_message_whose_write_may_have_landed_says_so_when_dead_lettered() {
    // A read-back needs twice the reserve; this invocation is too short for it.
    let s = Syncer::new(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
        RetryPolicy {
            reserve: Duration::from_secs(2),
            ..quick_retries()
        },
    );
    s.discounts()
        .script(On::Update, Scripted::AppliedUnanswered);
    let queue = InMemoryQueue::with_dead_letter_queue(Some(1));
    let b1 = body("o1", DISCOUNT, "X");
    let response = process_batch(
        &s,
        &queue,
        &settings(),
        sqs_event(&[("m1", &b1)]),
        Deadline::after(Duration::from_millis(3500)),
    )
    .await
    .unwrap();

    assert!(failed_ids(&response).is_empty());
    let letters = queue.dead_letters.lock().unwrap();
    assert_eq!(
        letters[0].1.kind, "write_may_have_landed",
        "{:?}",
        letters[0]
    );
    assert!(
        letters[0]
            .1
            .reason
            .contains("reconciliation will count the order if needed and mark it"),
        "{}",
        letters[0].1.reason
    );
    assert!(
        s.store().journal(id(DISCOUNT)).is_some(),
        "kept for reconciliation"
    );
}

#[tokio::test]
async fn a_429_holds_back_the_containers_requests_for_other_discounts_until_its_retry_after() {
    let no_retries = RetryPolicy {
        max_attempts: 1,
        ..quick_retries()
    };
    let s = Syncer::new(
        InMemoryStore::default()
            .with_order("o1", DISCOUNT, "X")
            .with_order("o2", OTHER_DISCOUNT, "Y"),
        InMemoryDiscounts::default()
            .with(id(DISCOUNT), "X", Some(10))
            .with(id(OTHER_DISCOUNT), "Y", Some(10)),
        no_retries,
    )
    .with_rate_limiter(RateLimiter::per_minute(6000, 50));
    s.discounts().script(
        On::Get,
        Scripted::Refuse(PolarFailureKind::RateLimited {
            retry_after: Some(Duration::from_millis(1500)),
        }),
    );
    let limited = sync_one(&s, request("o1", DISCOUNT, "X")).await;
    assert!(limited.is_err());

    let started = std::time::Instant::now();
    sync_one(&s, request("o2", OTHER_DISCOUNT, "Y"))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "the other discount's read went out {:?} after the 429",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_queue_call_that_hangs_in_the_disposal_still_lets_the_batch_answer_in_time() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(5)),
    );
    let queue = InMemoryQueue {
        hangs: true,
        ..InMemoryQueue::with_dead_letter_queue(Some(5))
    };
    let b1 = body("o1", DISCOUNT, "X");
    let event = sqs_event(&[("m1", &b1), ("bad", "{broken")]);
    let deadline = Deadline::after(Duration::from_secs(3));

    let answered = tokio::time::timeout(
        Duration::from_secs(10),
        process_batch(&s, &queue, &settings(), event, deadline),
    )
    .await
    .expect("the batch answers even though SQS does not");

    let response = answered.unwrap();
    assert!(
        deadline.remaining() > Duration::ZERO,
        "answered before the deadline"
    );
    assert_eq!(
        failed_ids(&response),
        ["bad"],
        "a message whose dead-lettering did not finish comes back"
    );
    assert_eq!(s.store().action("o1"), Some(SyncAction::Decremented));
}

#[tokio::test]
async fn no_step_starts_in_the_time_kept_to_answer() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(5)),
    );
    let queue = InMemoryQueue::with_dead_letter_queue(Some(5));
    let b1 = body("o1", DISCOUNT, "X");
    // Enough for a step were no time kept to answer.
    let deadline = Deadline::after(crate::sync::START_MARGIN + Duration::from_millis(500));

    let response = process_batch(&s, &queue, &settings(), sqs_event(&[("m1", &b1)]), deadline)
        .await
        .unwrap();

    assert_eq!(failed_ids(&response), ["m1"]);
    assert!(s.discounts().calls().is_empty());
    assert_eq!(s.store().action("o1"), None);
}
