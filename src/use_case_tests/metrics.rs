//! What a batch counts for its metrics: each message once, under the right name.

use super::batch::{settings, sqs_event};
use super::*;
use crate::sync::START_MARGIN;
use crate::telemetry::{Count, Distribution};

/// Runs one batch of `bodies` and takes what it recorded.
async fn recorded_by(
    s: &TestSyncer,
    bodies: &[(&str, &str)],
    deadline: Deadline,
) -> crate::telemetry::Recorded {
    let queue = InMemoryQueue::with_dead_letter_queue(Some(8));
    process_batch(s, &queue, &settings(), sqs_event(bodies), deadline)
        .await
        .unwrap();
    s.metrics().take()
}

#[tokio::test]
async fn a_batch_counts_each_order_under_its_action_and_each_failure_under_its_class() {
    let s = syncer(
        InMemoryStore::default()
            .with_order("o1", DISCOUNT, "X")
            .with_order("o2", DISCOUNT, "X")
            .with_order("last", OTHER_DISCOUNT, "Y"),
        InMemoryDiscounts::default()
            .with(id(DISCOUNT), "X", Some(10))
            .with(id(OTHER_DISCOUNT), "Y", Some(1)),
    );
    let recorded = recorded_by(
        &s,
        &[
            ("m1", &body("o1", DISCOUNT, "X")),
            ("m2", &body("o2", DISCOUNT, "X")),
            ("m3", &body("last", OTHER_DISCOUNT, "Y")),
            ("bad", "{not json"),
            ("m4", &body("ghost", DISCOUNT, "X")),
        ],
        deadline(),
    )
    .await;
    assert_eq!(recorded.count(Count::OrdersDecremented), 2);
    assert_eq!(recorded.count(Count::OrdersDeleted), 1);
    assert_eq!(recorded.count(Count::PermanentFailures), 1, "the bad body");
    assert_eq!(recorded.count(Count::DeadLettered), 1);
    assert_eq!(
        recorded.count(Count::TransientFailures),
        1,
        "the order not written yet"
    );
    assert_eq!(recorded.count(Count::Oversold), 0);
    let mut per_write = recorded.distributions[&Distribution::OrdersPerWrite].clone();
    per_write.sort_by(f64::total_cmp);
    assert_eq!(per_write, [1.0, 2.0], "one write per discount");
    assert_eq!(
        recorded.distributions[&Distribution::PolarLatency].len(),
        4,
        "a read and a write per discount"
    );

    let again = body("o1", DISCOUNT, "X");
    let recorded = recorded_by(&s, &[("m1-again", &again)], deadline()).await;
    assert_eq!(recorded.count(Count::OrdersAlreadySynced), 1);
    assert_eq!(recorded.count(Count::OrdersDecremented), 0, "taken before");
}

#[tokio::test]
async fn one_configuration_error_counts_once() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    );
    s.discounts()
        .script(On::Get, Scripted::Refuse(PolarFailureKind::Misconfigured));
    let recorded = recorded_by(&s, &[("m1", &body("o1", DISCOUNT, "X"))], deadline()).await;
    assert_eq!(
        recorded.counts.into_iter().collect::<Vec<_>>(),
        [(Count::ConfigurationErrors, 1)]
    );
}

#[tokio::test]
async fn a_429_and_an_unanswered_write_are_counted() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    );
    s.discounts().script(
        On::Get,
        Scripted::Refuse(PolarFailureKind::RateLimited {
            retry_after: Some(Duration::from_millis(1)),
        }),
    );
    s.discounts()
        .script(On::Update, Scripted::AppliedUnanswered);
    sync_one(&s, request("o1", DISCOUNT, "X")).await.unwrap();

    let recorded = s.metrics().take();
    assert_eq!(recorded.count(Count::PolarRateLimited), 1);
    assert_eq!(recorded.count(Count::UnknownWriteOutcomes), 1);
    assert_eq!(s.discounts().max_redemptions(id(DISCOUNT)), Some(Some(2)));
}

#[tokio::test]
async fn a_message_that_finds_its_discount_busy_counts_as_contention_not_as_a_failure() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    );
    super::contention::hold_lease(&s, DISCOUNT, Duration::from_secs(600));
    // Past the batch's answer reserve, a moment to look at the lease.
    let short = Deadline::after(START_MARGIN + Duration::from_millis(1400));
    let recorded = recorded_by(&s, &[("m1", &body("o1", DISCOUNT, "X"))], short).await;
    assert!(
        recorded.count(Count::LeaseWaitRequests) >= 1,
        "each refused look at the lease is a lease-wait request"
    );
    assert_eq!(
        recorded.count(Count::HandOffRequests),
        1,
        "the order is handed to the holder once"
    );
    assert_eq!(
        recorded
            .counts
            .into_iter()
            .filter(|(count, _)| {
                ![Count::LeaseWaitRequests, Count::HandOffRequests].contains(count)
            })
            .collect::<Vec<_>>(),
        [(Count::LeaseContention, 1)]
    );
}
