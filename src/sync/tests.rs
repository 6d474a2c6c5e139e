//! Use-case tests on the in-memory ports: fast, no network.

use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures_util::FutureExt;
use reqwest::StatusCode;

use super::*;
use crate::adapters::in_memory::{Call, InMemoryDiscounts, InMemoryQueue, InMemoryStore, Scripted};
use crate::adapters::polar::Operation;
use crate::failure::FailureClass;

const DISCOUNT: &str = "9b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a10";
const OTHER_DISCOUNT: &str = "0e6d1b9c-1f5c-4a59-9c43-2e8f0b3a7d21";

fn id(raw: &str) -> DiscountId {
    DiscountId::parse(raw).unwrap()
}

fn order(raw: &str) -> OrderId {
    OrderId::parse(raw.to_owned()).unwrap()
}

fn request(order: &str, discount: &str, code: &str) -> SyncRequest {
    SyncRequest::parse(&body(order, discount, code)).unwrap()
}

fn body(order: &str, discount: &str, code: &str) -> String {
    serde_json::json!({"orderId": order, "discountId": discount, "discountCode": code}).to_string()
}

fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
        reserve: Duration::from_millis(10),
    }
}

type TestSyncer = Syncer<InMemoryStore, InMemoryDiscounts>;

fn syncer(store: InMemoryStore, discounts: InMemoryDiscounts) -> TestSyncer {
    Syncer::new(store, discounts, quick_retries())
}

fn deadline() -> Deadline {
    Deadline::after(Duration::from_secs(60))
}

fn bad_gateway() -> PolarError {
    PolarError::Server {
        operation: Operation::Update,
        discount: id(DISCOUNT),
        status: StatusCode::BAD_GATEWAY,
        body: String::new(),
    }
}

async fn sync_one(s: &TestSyncer, request: SyncRequest) -> Outcome {
    let discount = request.discount_id;
    s.sync_discount(discount, &[request], deadline())
        .await
        .remove(0)
}

fn orders_of(s: &TestSyncer, n: usize, discount: &str, code: &str) -> Vec<SyncRequest> {
    let mut orders = s.store.orders.lock().unwrap();
    (0..n)
        .map(|i| {
            let name = format!("o{i}");
            orders.insert(
                name.clone(),
                crate::adapters::in_memory::StoredOrder {
                    record: Some(OrderRecord {
                        discount_id: Some(discount.to_owned()),
                        discount_code: Some(code.to_owned()),
                    }),
                    ..Default::default()
                },
            );
            request(&name, discount, code)
        })
        .collect()
}

fn assert_marked_once(s: &TestSyncer) {
    for (name, order) in s.store.orders.lock().unwrap().iter() {
        assert!(
            order.marks <= 1,
            "order {name} marked {} times",
            order.marks
        );
    }
}

#[tokio::test]
async fn a_limited_discount_is_decremented_and_the_order_marked() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "SUMMER25"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "SUMMER25", Some(3)),
    );
    let synced = sync_one(&s, request("o1", DISCOUNT, "summer25"))
        .await
        .unwrap();
    assert_eq!(synced, Synced::Applied(SyncAction::Decremented));
    assert_eq!(s.discounts.max_redemptions(id(DISCOUNT)), Some(Some(2)));
    assert_eq!(s.store.action("o1"), Some(SyncAction::Decremented));
    assert_eq!(s.discounts.calls(), [Call::Get, Call::Update(2)]);
    assert_eq!(s.store.lease(id(DISCOUNT)), None, "lease released");
    assert_eq!(s.store.journal(id(DISCOUNT)), None, "journal cleared");
}

#[tokio::test]
async fn a_second_delivery_of_a_synced_order_makes_no_polar_call() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    );
    sync_one(&s, request("o1", DISCOUNT, "X")).await.unwrap();
    let again = sync_one(&s, request("o1", DISCOUNT, "X")).await.unwrap();
    assert_eq!(again, Synced::AlreadySynced);
    assert_eq!(s.discounts.max_redemptions(id(DISCOUNT)), Some(Some(2)));
    assert_eq!(s.discounts.calls().len(), 2);
}

#[tokio::test]
async fn the_last_use_deletes_the_discount() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(1)),
    );
    let synced = sync_one(&s, request("o1", DISCOUNT, "X")).await.unwrap();
    assert_eq!(synced, Synced::Applied(SyncAction::Deleted));
    assert_eq!(s.discounts.max_redemptions(id(DISCOUNT)), None);
}

#[tokio::test]
async fn an_unlimited_discount_is_only_read() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", None),
    );
    let synced = sync_one(&s, request("o1", DISCOUNT, "X")).await.unwrap();
    assert_eq!(synced, Synced::Applied(SyncAction::SkippedUnlimited));
    assert_eq!(s.discounts.calls(), [Call::Get]);
}

#[tokio::test]
async fn a_discount_missing_on_polar_is_recorded_as_already_deleted() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default(),
    );
    let synced = sync_one(&s, request("o1", DISCOUNT, "X")).await.unwrap();
    assert_eq!(synced, Synced::Applied(SyncAction::AlreadyDeleted));
    assert_eq!(s.store.action("o1"), Some(SyncAction::AlreadyDeleted));
}

#[tokio::test]
async fn an_unknown_order_fails_without_touching_polar() {
    let s = syncer(InMemoryStore::default(), InMemoryDiscounts::default());
    let err = sync_one(&s, request("nope", DISCOUNT, "X"))
        .await
        .unwrap_err();
    assert!(matches!(*err, SyncError::OrderNotFound(_)), "{err}");
    assert!(s.discounts.calls().is_empty());
    assert_eq!(s.store.lease(id(DISCOUNT)), None, "lease released");
}

#[tokio::test]
async fn a_message_naming_another_discount_than_its_order_changes_nothing() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", OTHER_DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    );
    let err = sync_one(&s, request("o1", DISCOUNT, "X"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            *err,
            SyncError::OrderMismatch {
                field: "discountId",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.class(), FailureClass::Permanent);
    assert!(s.discounts.calls().is_empty());
    assert_eq!(s.store.action("o1"), None);
}

#[tokio::test]
async fn a_message_with_another_code_than_its_order_changes_nothing() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "SUMMER25"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "SUMMER25", Some(3)),
    );
    let err = sync_one(&s, request("o1", DISCOUNT, "WINTER"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            *err,
            SyncError::OrderMismatch {
                field: "discountCode",
                ..
            }
        ),
        "{err}"
    );
    assert!(s.discounts.calls().is_empty());
}

#[tokio::test]
async fn a_polar_discount_with_another_code_is_not_written() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "SUMMER25"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "OTHER", Some(3)),
    );
    let err = sync_one(&s, request("o1", DISCOUNT, "SUMMER25"))
        .await
        .unwrap_err();
    assert!(
        matches!(*err, SyncError::DiscountCodeMismatch { .. }),
        "{err}"
    );
    assert_eq!(s.discounts.calls(), [Call::Get]);
    assert_eq!(s.discounts.max_redemptions(id(DISCOUNT)), Some(Some(3)));
}

#[tokio::test]
async fn orders_of_one_discount_are_counted_in_one_read_and_one_write() {
    let s = syncer(
        InMemoryStore::default(),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(25)),
    );
    let requests = orders_of(&s, 10, DISCOUNT, "X");
    let outcomes = s.sync_discount(id(DISCOUNT), &requests, deadline()).await;
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, Ok(Synced::Applied(SyncAction::Decremented)))));
    assert_eq!(s.discounts.calls(), [Call::Get, Call::Update(15)]);
}

#[tokio::test]
async fn a_duplicate_message_in_a_group_counts_its_order_once() {
    let s = syncer(
        InMemoryStore::default()
            .with_order("o1", DISCOUNT, "X")
            .with_order("o2", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(10)),
    );
    let requests = [
        request("o1", DISCOUNT, "X"),
        request("o2", DISCOUNT, "X"),
        request("o1", DISCOUNT, "x"),
    ];
    let outcomes = s.sync_discount(id(DISCOUNT), &requests, deadline()).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(s.discounts.max_redemptions(id(DISCOUNT)), Some(Some(8)));
}

#[tokio::test]
async fn more_redemptions_than_uses_left_delete_the_discount_and_mark_every_order() {
    let s = syncer(
        InMemoryStore::default(),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(2)),
    );
    let requests = orders_of(&s, 5, DISCOUNT, "X");
    let outcomes = s.sync_discount(id(DISCOUNT), &requests, deadline()).await;
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, Ok(Synced::Applied(SyncAction::Deleted)))));
    assert_eq!(s.discounts.max_redemptions(id(DISCOUNT)), None);
    assert_eq!(s.discounts.calls(), [Call::Get, Call::Delete]);
}

#[tokio::test]
async fn a_lease_held_by_a_live_invocation_sends_the_messages_back_untouched() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    );
    s.store
        .discounts
        .lock()
        .unwrap()
        .entry(id(DISCOUNT))
        .or_default()
        .lease = Some(Lease {
        token: Uuid::new_v4(),
        expires_at_ms: epoch_ms(SystemTime::now()) + 600_000,
    });
    let err = sync_one(&s, request("o1", DISCOUNT, "X"))
        .await
        .unwrap_err();
    assert!(matches!(*err, SyncError::LeaseHeld { .. }), "{err}");
    assert_eq!(err.class(), FailureClass::Transient);
    assert!(s.discounts.calls().is_empty());
}

#[tokio::test]
async fn an_expired_lease_is_taken_over() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    );
    s.store
        .discounts
        .lock()
        .unwrap()
        .entry(id(DISCOUNT))
        .or_default()
        .lease = Some(Lease {
        token: Uuid::new_v4(),
        expires_at_ms: epoch_ms(SystemTime::now()) - 1,
    });
    let synced = sync_one(&s, request("o1", DISCOUNT, "X")).await.unwrap();
    assert_eq!(synced, Synced::Applied(SyncAction::Decremented));
}

#[tokio::test]
async fn a_polar_server_error_on_the_read_is_retried_and_counted_once() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    );
    s.discounts
        .script(Operation::Get, Scripted::Fail(bad_gateway()));
    let synced = sync_one(&s, request("o1", DISCOUNT, "X")).await.unwrap();
    assert_eq!(synced, Synced::Applied(SyncAction::Decremented));
    assert_eq!(s.discounts.max_redemptions(id(DISCOUNT)), Some(Some(2)));
}

#[tokio::test]
async fn a_write_applied_but_answered_with_an_error_is_read_back_not_repeated() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(5)),
    );
    s.discounts
        .script(Operation::Update, Scripted::ApplyThenFail(bad_gateway()));
    let synced = sync_one(&s, request("o1", DISCOUNT, "X")).await.unwrap();
    assert_eq!(synced, Synced::Applied(SyncAction::Decremented));
    assert_eq!(s.discounts.calls(), [Call::Get, Call::Update(4), Call::Get]);
    assert_eq!(s.discounts.max_redemptions(id(DISCOUNT)), Some(Some(4)));
}

#[tokio::test]
async fn a_write_that_failed_without_applying_is_made_again_after_reading_back() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(5)),
    );
    s.discounts
        .script(Operation::Update, Scripted::Fail(bad_gateway()));
    let synced = sync_one(&s, request("o1", DISCOUNT, "X")).await.unwrap();
    assert_eq!(synced, Synced::Applied(SyncAction::Decremented));
    assert_eq!(
        s.discounts.calls(),
        [Call::Get, Call::Update(4), Call::Get, Call::Update(4)]
    );
    assert_eq!(s.discounts.max_redemptions(id(DISCOUNT)), Some(Some(4)));
}

#[tokio::test]
async fn a_delete_applied_but_answered_with_an_error_is_recorded_as_deleted() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(1)),
    );
    s.discounts
        .script(Operation::Delete, Scripted::ApplyThenFail(bad_gateway()));
    let synced = sync_one(&s, request("o1", DISCOUNT, "X")).await.unwrap();
    assert_eq!(synced, Synced::Applied(SyncAction::Deleted));
    assert_eq!(s.discounts.calls(), [Call::Get, Call::Delete, Call::Get]);
}

#[tokio::test]
async fn a_configuration_error_releases_the_lease_and_leaves_the_order_unsynced() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    );
    s.discounts.script(
        Operation::Get,
        Scripted::Fail(PolarError::UnknownRoute {
            operation: Operation::Get,
            discount: id(DISCOUNT),
            body: r#"{"detail":"Not Found"}"#.into(),
        }),
    );
    let err = sync_one(&s, request("o1", DISCOUNT, "X"))
        .await
        .unwrap_err();
    assert_eq!(err.class(), FailureClass::Configuration);
    assert_eq!(s.discounts.calls(), [Call::Get]);
    assert_eq!(s.store.action("o1"), None);
    assert_eq!(s.store.lease(id(DISCOUNT)), None);
}

fn journal(orders: &[&str], read: i64, intent: Intent) -> Journal {
    Journal {
        orders: orders.iter().map(|o| order(o)).collect(),
        read,
        intent,
    }
}

/// A journal left by an invocation that died, with its lease expired.
fn left_behind(s: &TestSyncer, journal: Journal) {
    s.store.discounts.lock().unwrap().insert(
        id(DISCOUNT),
        crate::adapters::in_memory::StoredDiscount {
            lease: Some(Lease {
                token: Uuid::new_v4(),
                expires_at_ms: 0,
            }),
            journal: Some(journal),
        },
    );
}

#[tokio::test]
async fn a_journaled_write_that_happened_is_completed_without_writing_again() {
    let s = syncer(
        InMemoryStore::default()
            .with_order("o1", DISCOUNT, "X")
            .with_order("o2", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    );
    left_behind(&s, journal(&["o1", "o2"], 5, Intent::SetMaxRedemptions(3)));
    let outcome = sync_one(&s, request("o1", DISCOUNT, "X")).await.unwrap();
    assert_eq!(outcome, Synced::AlreadySynced, "the recovery synced it");
    assert_eq!(s.store.action("o2"), Some(SyncAction::Decremented));
    assert_eq!(s.discounts.calls(), [Call::Get]);
    assert_eq!(s.discounts.max_redemptions(id(DISCOUNT)), Some(Some(3)));
    assert_eq!(s.store.journal(id(DISCOUNT)), None);
}

#[tokio::test]
async fn a_journaled_write_that_did_not_happen_is_made() {
    let s = syncer(
        InMemoryStore::default()
            .with_order("o1", DISCOUNT, "X")
            .with_order("o2", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(5)),
    );
    left_behind(&s, journal(&["o1", "o2"], 5, Intent::SetMaxRedemptions(3)));
    sync_one(&s, request("o2", DISCOUNT, "X")).await.unwrap();
    assert_eq!(s.discounts.max_redemptions(id(DISCOUNT)), Some(Some(3)));
    assert_eq!(s.store.action("o1"), Some(SyncAction::Decremented));
    assert_eq!(s.discounts.calls(), [Call::Get, Call::Update(3)]);
}

#[tokio::test]
async fn a_journaled_deletion_found_done_is_completed() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default(),
    );
    left_behind(&s, journal(&["o1"], 1, Intent::Delete));
    sync_one(&s, request("o1", DISCOUNT, "X")).await.unwrap();
    assert_eq!(s.store.action("o1"), Some(SyncAction::Deleted));
    assert_eq!(s.discounts.calls(), [Call::Get]);
}

#[tokio::test]
async fn a_journaled_deletion_not_done_is_planned_again_from_the_current_limit() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(10)),
    );
    // Raised by the shop owner after the journal was written, before the DELETE.
    left_behind(&s, journal(&["o1"], 1, Intent::Delete));
    sync_one(&s, request("o1", DISCOUNT, "X")).await.unwrap();
    assert_eq!(s.discounts.max_redemptions(id(DISCOUNT)), Some(Some(9)));
    assert_eq!(s.store.action("o1"), Some(SyncAction::Decremented));
}

#[tokio::test]
async fn a_value_changed_elsewhere_is_kept_and_the_orders_recorded() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(100)),
    );
    left_behind(&s, journal(&["o1"], 5, Intent::SetMaxRedemptions(4)));
    sync_one(&s, request("o1", DISCOUNT, "X")).await.unwrap();
    assert_eq!(s.discounts.max_redemptions(id(DISCOUNT)), Some(Some(100)));
    assert_eq!(s.store.action("o1"), Some(SyncAction::Decremented));
    assert_eq!(s.discounts.calls(), [Call::Get]);
}

/// A syncer that panics (so nothing after that point runs, as in a crash) the first
/// time it reaches the step put in the returned slot.
fn crashing_syncer(
    store: InMemoryStore,
    discounts: InMemoryDiscounts,
) -> (TestSyncer, Arc<Mutex<Option<Step>>>) {
    let crash_at: Arc<Mutex<Option<Step>>> = Arc::default();
    let slot = crash_at.clone();
    let s = syncer(store, discounts).with_checkpoint(Arc::new(move |step| {
        let crash = slot.lock().unwrap().take_if(|at| *at == step).is_some();
        if crash {
            panic!("simulated crash at {step:?}");
        }
    }));
    (s, crash_at)
}

/// Time passes after a crash: the dead invocation's lease expires.
fn expire_lease(s: &TestSyncer) {
    if let Some(stored) = s.store.discounts.lock().unwrap().get_mut(&id(DISCOUNT)) {
        if let Some(lease) = &mut stored.lease {
            lease.expires_at_ms = 0;
        }
    }
}

#[tokio::test]
async fn a_crash_at_any_step_is_repaired_by_the_next_delivery_and_counted_once() {
    let steps = [
        Step::LeaseTaken,
        Step::ClaimTaken,
        Step::JournalWritten,
        Step::PolarWritten,
        Step::OrdersMarked,
    ];
    // (limit, expected limit after two orders, expected action)
    let cases = [
        (Some(5), Some(Some(3)), SyncAction::Decremented),
        (Some(2), None, SyncAction::Deleted),
        (None, Some(None), SyncAction::SkippedUnlimited),
    ];
    for step in steps {
        for (limit, after, action) in cases {
            let (s, crash_at) = crashing_syncer(
                InMemoryStore::default()
                    .with_order("o1", DISCOUNT, "X")
                    .with_order("o2", DISCOUNT, "X"),
                InMemoryDiscounts::default().with(id(DISCOUNT), "X", limit),
            );
            let requests = [request("o1", DISCOUNT, "X"), request("o2", DISCOUNT, "X")];
            *crash_at.lock().unwrap() = Some(step);
            let crashed = AssertUnwindSafe(s.sync_discount(id(DISCOUNT), &requests, deadline()))
                .catch_unwind()
                .await;
            let reached = crash_at.lock().unwrap().is_none();
            if !reached {
                // Unlimited discounts write nothing, so there is no journal step to crash at.
                assert!(crashed.is_ok());
                continue;
            }
            assert!(crashed.is_err(), "no crash at {step:?}");

            expire_lease(&s);
            let outcomes = s.sync_discount(id(DISCOUNT), &requests, deadline()).await;

            assert!(
                outcomes.iter().all(Result::is_ok),
                "{step:?} {limit:?}: {outcomes:?}"
            );
            assert_eq!(
                s.discounts.max_redemptions(id(DISCOUNT)),
                after,
                "{step:?} {limit:?}"
            );
            assert_eq!(s.store.action("o1"), Some(action), "{step:?} {limit:?}");
            assert_eq!(s.store.action("o2"), Some(action), "{step:?} {limit:?}");
            assert_marked_once(&s);
            assert_eq!(s.store.journal(id(DISCOUNT)), None);
        }
    }
}

fn sqs_event(bodies: &[(&str, &str)]) -> SqsEvent {
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

fn fifo_event(messages: &[(&str, &str, &str)]) -> SqsEvent {
    let mut event = sqs_event(
        &messages
            .iter()
            .map(|(id, _, body)| (*id, *body))
            .collect::<Vec<_>>(),
    );
    for (record, (_, group, _)) in event.records.iter_mut().zip(messages) {
        record
            .attributes
            .insert("MessageGroupId".into(), group.to_string());
    }
    event
}

fn settings() -> BatchSettings {
    BatchSettings {
        max_concurrent_discounts: 4,
        redelivery: crate::redelivery::RedeliveryPolicy::default(),
    }
}

fn failures(response: &SqsBatchResponse) -> Vec<String> {
    let mut ids: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    ids.sort();
    ids
}

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
        failures(&response),
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
    assert_eq!(s.discounts.max_redemptions(id(DISCOUNT)), Some(Some(8)));
    assert_eq!(
        s.discounts.max_redemptions(id(OTHER_DISCOUNT)),
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
    assert_eq!(failures(&response), ["bad"]);
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
    assert!(failures(&response).is_empty());
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
    assert_eq!(failures(&response), ["m2", "m3"]);
    assert_eq!(s.store.action("o1"), Some(SyncAction::Decremented));
    assert_eq!(s.store.action("o3"), None, "not processed after m2 failed");
    assert_eq!(
        s.store.action("o4"),
        Some(SyncAction::Decremented),
        "other groups go on"
    );
    assert_eq!(s.discounts.max_redemptions(id(DISCOUNT)), Some(Some(9)));
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
    assert!(failures(&response).is_empty());
    assert_eq!(queue.dead_lettered(), ["m1"]);
    assert_eq!(s.store.action("o2"), Some(SyncAction::Decremented));
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
    assert_eq!(failures(&response), ["m1"]);
    assert!(s.discounts.calls().is_empty());
    assert!(
        queue.delayed.lock().unwrap().is_empty(),
        "comes back as it is"
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
async fn polar_requests_wait_for_the_rate_budget() {
    let s = syncer(
        InMemoryStore::default(),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(10)),
    )
    .with_rate_limiter(RateLimiter::per_minute(1, 1));
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
        matches!(**err, SyncError::Polar(PolarError::OverBudget { .. })),
        "{err}"
    );
    assert_eq!(
        s.discounts.calls(),
        [Call::Get],
        "the PATCH had no slot within the deadline"
    );
    assert_eq!(
        s.store.journal(id(DISCOUNT)),
        None,
        "nothing pending: the write was never sent"
    );
}

#[tokio::test]
async fn a_failed_polar_step_fails_only_the_orders_it_was_counting() {
    let s = syncer(
        InMemoryStore::default()
            .with_order("counted", DISCOUNT, "X")
            .with_order("synced", DISCOUNT, "X")
            .with_order("mismatch", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(10)),
    );
    s.store
        .orders
        .lock()
        .unwrap()
        .get_mut("synced")
        .unwrap()
        .synced = Some(SyncAction::Decremented);
    s.discounts.script(
        Operation::Get,
        Scripted::Fail(PolarError::UnknownRoute {
            operation: Operation::Get,
            discount: id(DISCOUNT),
            body: r#"{"detail":"Not Found"}"#.into(),
        }),
    );
    let requests = [
        request("counted", DISCOUNT, "X"),
        request("synced", DISCOUNT, "X"),
        request("mismatch", DISCOUNT, "OTHER"),
    ];

    let outcomes = s.sync_discount(id(DISCOUNT), &requests, deadline()).await;

    assert!(
        matches!(&outcomes[0], Err(e) if matches!(**e, SyncError::Polar(_))),
        "{outcomes:?}"
    );
    assert!(
        matches!(outcomes[1], Ok(Synced::AlreadySynced)),
        "{outcomes:?}"
    );
    assert!(
        matches!(&outcomes[2], Err(e) if matches!(**e, SyncError::OrderMismatch { .. })),
        "{outcomes:?}"
    );
    assert_eq!(
        s.store.lease(id(DISCOUNT)),
        None,
        "released: nothing was written"
    );
}

#[tokio::test]
async fn a_group_whose_only_order_has_another_code_on_polar_releases_its_lease() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "OTHER", Some(10)),
    );
    let outcome = sync_one(&s, request("o1", DISCOUNT, "X")).await;
    assert!(outcome.is_err());
    assert_eq!(s.store.lease(id(DISCOUNT)), None);
}

#[tokio::test]
async fn an_unanswered_write_that_polar_applies_late_is_seen_before_anything_is_decided() {
    let s = Arc::new(syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(5)),
    ));
    s.discounts
        .script(Operation::Update, Scripted::Fail(bad_gateway()));
    // Polar applies the PATCH a few milliseconds after our client gave up on it.
    let late = {
        let s = s.clone();
        tokio::spawn(async move {
            while !s.discounts.calls().contains(&Call::Update(4)) {
                tokio::task::yield_now().await;
            }
            tokio::time::sleep(Duration::from_millis(3)).await;
            s.discounts.set(id(DISCOUNT), Some(4));
        })
    };

    let synced = sync_one(&s, request("o1", DISCOUNT, "X")).await.unwrap();
    late.await.unwrap();

    assert_eq!(synced, Synced::Applied(SyncAction::Decremented));
    assert_eq!(
        s.discounts.calls(),
        [Call::Get, Call::Update(4), Call::Get],
        "read back after the late write landed, so no second PATCH"
    );
}

#[tokio::test]
async fn a_write_that_was_unanswered_once_is_left_to_the_journal_when_a_retry_is_refused() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(5)),
    );
    s.discounts
        .script(Operation::Update, Scripted::Fail(bad_gateway()));
    s.discounts.script(
        Operation::Update,
        Scripted::Fail(PolarError::Unauthorized {
            operation: Operation::Update,
            discount: id(DISCOUNT),
            status: StatusCode::UNAUTHORIZED,
            body: String::new(),
        }),
    );
    let err = sync_one(&s, request("o1", DISCOUNT, "X"))
        .await
        .unwrap_err();
    assert_eq!(err.class(), FailureClass::Configuration);
    assert!(
        s.store.journal(id(DISCOUNT)).is_some(),
        "the first PATCH may still land"
    );
    assert!(
        s.store.lease(id(DISCOUNT)).is_some(),
        "kept until it expires"
    );
}
