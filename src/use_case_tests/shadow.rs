//! Shadow mode on in-memory ports: it plans what the sync would write, and writes nothing.

use std::collections::HashMap;

use super::batch::{settings, sqs_event};
use super::*;
use crate::ports::{DiscountView, Lookup};
use crate::sync::shadow::{plan_steps, PlannedStep, ShadowBatch, WouldBe};
use crate::sync::RedeliveryPolicy;
use crate::sync::{Reconciliation, Shadow, ShadowReconciliation, MAX_ORDERS_PER_WRITE};
use crate::telemetry::Count;

const LAST_USE: &str = "3c0f6a2e-8d1b-4f7a-9e52-6b4d2c1a0f93";
const UNLIMITED: &str = "a1d2c3b4-5e6f-4a7b-8c9d-0e1f2a3b4c5d";

type TestShadow = Shadow<InMemoryStore, InMemoryDiscounts>;

fn shadow(store: InMemoryStore, discounts: InMemoryDiscounts) -> TestShadow {
    Shadow::new(
        store,
        discounts,
        quick_retries(),
        RedeliveryPolicy::default(),
        4,
    )
}

/// Two orders on a discount with uses left, one on its last use, one on an unlimited
/// discount, and one synced before.
fn mixed_store() -> InMemoryStore {
    let store = InMemoryStore::default()
        .with_order("o1", DISCOUNT, "X")
        .with_order("o2", DISCOUNT, "X")
        .with_order("o3", LAST_USE, "LAST")
        .with_order("o4", UNLIMITED, "FREE")
        .with_order("o5", DISCOUNT, "X");
    store.orders.lock().unwrap().get_mut("o5").unwrap().synced = Some(SyncAction::Decremented);
    store
}

fn mixed_discounts() -> InMemoryDiscounts {
    InMemoryDiscounts::default()
        .with(id(DISCOUNT), "X", Some(10))
        .with(id(LAST_USE), "LAST", Some(1))
        .with(id(UNLIMITED), "FREE", None)
}

/// The batch of the binary test too: every case once, a malformed body and a duplicate.
fn mixed_batch() -> SqsEvent {
    let bodies = [
        ("m1", body("o1", DISCOUNT, "X")),
        ("m2", body("o2", DISCOUNT, "X")),
        ("m3", body("o3", LAST_USE, "LAST")),
        ("m4", body("o4", UNLIMITED, "FREE")),
        ("m5", body("o5", DISCOUNT, "X")),
        ("bad", "{\"orderId\": 42".to_owned()),
        ("m1-again", body("o1", DISCOUNT, "X")),
    ];
    let refs: Vec<(&str, &str)> = bodies.iter().map(|(m, b)| (*m, b.as_str())).collect();
    sqs_event(&refs)
}

/// Each message's fate as (message id, what it names: an action, or the error kind).
fn fates(batch: &ShadowBatch) -> Vec<(&str, String)> {
    batch
        .messages
        .iter()
        .map(|(message, would_be)| {
            let fate = match would_be {
                WouldBe::Synced(action) => format!("sync {action}"),
                WouldBe::AlreadySynced => "already synced".to_owned(),
                WouldBe::DeadLettered(err) => format!("dead-letter {}", err.kind()),
                WouldBe::Retried(err) => format!("retry {}", err.kind()),
            };
            (message.as_str(), fate)
        })
        .collect()
}

fn step_of(batch: &ShadowBatch, discount: &str) -> PlannedStep {
    let steps: Vec<_> = batch
        .steps
        .iter()
        .filter(|step| step.discount == id(discount))
        .collect();
    let [step] = steps.as_slice() else {
        panic!("one step expected on {discount}, got {steps:?}");
    };
    (*step).clone()
}

/// Orders and coordination items, as comparable values.
fn store_state(store: &InMemoryStore) -> (Vec<String>, Vec<String>) {
    let mut orders: Vec<String> = store
        .orders
        .lock()
        .unwrap()
        .iter()
        .map(|(id, order)| {
            format!(
                "{id}: {:?} {:?} {}",
                order.record, order.synced, order.marks
            )
        })
        .collect();
    orders.sort();
    let mut discounts: Vec<String> = store
        .discounts
        .lock()
        .unwrap()
        .iter()
        .map(|(id, stored)| format!("{id}: {:?} {:?}", stored.lease, stored.journal))
        .collect();
    discounts.sort();
    (orders, discounts)
}

fn polar_state(discounts: &InMemoryDiscounts) -> Vec<String> {
    let mut all: Vec<String> = discounts
        .discounts
        .lock()
        .unwrap()
        .iter()
        .map(|(id, view)| format!("{id}: {view:?}"))
        .collect();
    all.sort();
    all
}

#[tokio::test]
async fn a_shadow_batch_plans_each_discount_from_one_read_writes_nothing_and_acknowledges_every_message(
) {
    let s = shadow(mixed_store(), mixed_discounts());
    let store_before = store_state(s.store());
    let polar_before = polar_state(s.discounts());

    let batch = s.plan_batch(mixed_batch(), deadline()).await;

    assert!(batch.response().batch_item_failures.is_empty());
    assert_eq!(
        fates(&batch),
        [
            ("m1", "sync decremented".to_owned()),
            ("m2", "sync decremented".to_owned()),
            ("m3", "sync deleted".to_owned()),
            ("m4", "sync skipped_unlimited".to_owned()),
            ("m5", "already synced".to_owned()),
            ("bad", "dead-letter invalid_message".to_owned()),
            ("m1-again", "sync decremented".to_owned()),
        ]
    );
    assert_eq!(
        step_of(&batch, DISCOUNT),
        PlannedStep {
            discount: id(DISCOUNT),
            orders: vec![order("o1"), order("o2")],
            before: Some(10),
            action: SyncAction::Decremented,
            write: Some(Intent::SetMaxRedemptions(8)),
            oversold_by: 0,
        },
        "k counts distinct orders: the duplicate and the synced order are not counted"
    );
    let last_use = step_of(&batch, LAST_USE);
    assert_eq!(
        (last_use.before, last_use.action, last_use.write),
        (Some(1), SyncAction::Deleted, Some(Intent::Delete))
    );
    let unlimited = step_of(&batch, UNLIMITED);
    assert_eq!(
        (unlimited.action, unlimited.write),
        (SyncAction::SkippedUnlimited, None)
    );
    assert_eq!(
        s.discounts().calls(),
        [Call::Get, Call::Get, Call::Get],
        "one GET per discount, no write"
    );
    assert_eq!(
        store_state(s.store()),
        store_before,
        "no order or lease touched"
    );
    assert_eq!(polar_state(s.discounts()), polar_before);
}

#[tokio::test]
async fn shadow_counts_go_under_their_own_names_so_no_metric_claims_a_write_that_did_not_happen() {
    let s = shadow(mixed_store(), mixed_discounts());

    s.plan_batch(mixed_batch(), deadline()).await;

    let recorded = s.metrics().take();
    let counts: HashMap<&str, u64> = recorded
        .counts
        .iter()
        .map(|(count, n)| (count.name(), *n))
        .collect();
    assert_eq!(
        counts,
        HashMap::from([
            ("ShadowOrdersDecremented", 3),
            ("ShadowOrdersDeleted", 1),
            ("ShadowOrdersSkippedUnlimited", 1),
            ("OrdersAlreadySynced", 1),
            ("ShadowWouldDeadLetter", 1),
            ("ShadowPolarWrites", 2),
        ])
    );
    assert_eq!(recorded.count(Count::OrdersDecremented), 0);
}

#[tokio::test]
async fn the_shadow_plan_is_what_the_sync_then_writes_on_the_same_state() {
    let s = shadow(mixed_store(), mixed_discounts());
    let live = syncer(mixed_store(), mixed_discounts());
    let queue = InMemoryQueue::with_dead_letter_queue(Some(8));

    let planned = s.plan_batch(mixed_batch(), deadline()).await;
    let response = process_batch(&live, &queue, &settings(), mixed_batch(), deadline())
        .await
        .unwrap();

    let mut planned_writes: Vec<Call> = planned
        .steps
        .iter()
        .filter_map(|step| match step.write? {
            Intent::SetMaxRedemptions(after) => Some(Call::Update(after)),
            Intent::Delete => Some(Call::Delete),
        })
        .collect();
    let mut made: Vec<Call> = live
        .discounts()
        .calls()
        .into_iter()
        .filter(|call| *call != Call::Get)
        .collect();
    planned_writes.sort_by_key(|call| format!("{call:?}"));
    made.sort_by_key(|call| format!("{call:?}"));
    assert_eq!(planned_writes, made);
    for (message, would_be) in &planned.messages {
        if let WouldBe::Synced(action) = would_be {
            let order = match message.as_str() {
                "m1-again" => "o1".to_owned(),
                other => format!("o{}", &other[1..]),
            };
            assert_eq!(live.store().action(&order), Some(*action), "{message}");
        }
    }
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(queue.dead_lettered(), ["bad"], "the sync dead-letters it");
    assert_eq!(
        s.discounts().calls().len(),
        3,
        "the shadow only read, once per discount"
    );
}

#[tokio::test]
async fn shadow_mode_logs_a_missing_order_as_a_retry_and_mismatches_as_dead_letters_and_sends_nothing(
) {
    let store = InMemoryStore::default()
        .with_order("names-other", OTHER_DISCOUNT, "Y")
        .with_order("wrong-code", DISCOUNT, "X");
    let s = shadow(
        store,
        InMemoryDiscounts::default().with(id(DISCOUNT), "NOT-X", Some(5)),
    );
    let missing = body("ghost", DISCOUNT, "X");
    let other = body("names-other", DISCOUNT, "X");
    let wrong = body("wrong-code", DISCOUNT, "X");
    let event = sqs_event(&[("m1", &missing), ("m2", &other), ("m3", &wrong)]);

    let batch = s.plan_batch(event, deadline()).await;

    assert!(batch.response().batch_item_failures.is_empty());
    assert_eq!(
        fates(&batch),
        [
            ("m1", "retry order_not_found".to_owned()),
            ("m2", "dead-letter order_mismatch".to_owned()),
            ("m3", "dead-letter discount_code_mismatch".to_owned()),
        ]
    );
    assert!(
        batch.steps.is_empty(),
        "nothing left to count: {:?}",
        batch.steps
    );
    let recorded = s.metrics().take();
    assert_eq!(recorded.count(Count::ShadowWouldRetry), 1);
    assert_eq!(recorded.count(Count::ShadowWouldDeadLetter), 2);
}

#[tokio::test]
async fn a_discount_gone_from_polar_would_be_already_deleted_and_a_refused_read_would_be_retried() {
    let store = InMemoryStore::default()
        .with_order("o1", DISCOUNT, "X")
        .with_order("o2", OTHER_DISCOUNT, "Y");
    let discounts = InMemoryDiscounts::default().with(id(OTHER_DISCOUNT), "Y", Some(5));
    let s = shadow(store, discounts);
    let gone = body("o1", DISCOUNT, "X");
    let event = sqs_event(&[("gone", &gone)]);

    let batch = s.plan_batch(event, deadline()).await;
    assert_eq!(fates(&batch), [("gone", "sync already_deleted".to_owned())]);
    assert_eq!(step_of(&batch, DISCOUNT).write, None);

    s.discounts()
        .script(On::Get, Scripted::Refuse(PolarFailureKind::Unauthorized));
    let refused = body("o2", OTHER_DISCOUNT, "Y");
    let batch = s
        .plan_batch(sqs_event(&[("m", &refused)]), deadline())
        .await;
    assert_eq!(fates(&batch), [("m", "retry polar".to_owned())]);
    assert!(batch.response().batch_item_failures.is_empty());
}

#[test]
fn more_orders_than_one_write_holds_are_planned_step_by_step_from_what_the_step_before_leaves() {
    let orders: Vec<OrderId> = (0..150).map(|i| order(&format!("o{i}"))).collect();
    let found = |max| {
        Lookup::Found(DiscountView {
            code: Some("X".into()),
            max_redemptions: max,
        })
    };
    let summary = |steps: Vec<PlannedStep>| -> Vec<(usize, Option<i64>, Option<Intent>, u64)> {
        steps
            .into_iter()
            .map(|s| (s.orders.len(), s.before, s.write, s.oversold_by))
            .collect()
    };
    let rest = 150 - MAX_ORDERS_PER_WRITE;

    assert_eq!(
        summary(plan_steps(id(DISCOUNT), &found(Some(200)), &orders)),
        [
            (99, Some(200), Some(Intent::SetMaxRedemptions(101)), 0),
            (rest, Some(101), Some(Intent::SetMaxRedemptions(50)), 0),
        ]
    );
    assert_eq!(
        summary(plan_steps(id(DISCOUNT), &found(Some(120)), &orders)),
        [
            (99, Some(120), Some(Intent::SetMaxRedemptions(21)), 0),
            (rest, Some(21), Some(Intent::Delete), 30),
        ]
    );
    let after_deletion = plan_steps(id(DISCOUNT), &found(Some(50)), &orders);
    assert_eq!(
        after_deletion.iter().map(|s| s.action).collect::<Vec<_>>(),
        [SyncAction::Deleted, SyncAction::AlreadyDeleted]
    );
    assert!(plan_steps(id(DISCOUNT), &Lookup::Deleted, &orders)
        .iter()
        .all(|s| s.action == SyncAction::AlreadyDeleted && s.write.is_none()));
}

#[tokio::test]
async fn the_shadow_reconciliation_reads_each_expired_journal_and_settles_none() {
    let store = InMemoryStore::default()
        .with_order("o1", DISCOUNT, "X")
        .with_order("o2", OTHER_DISCOUNT, "Y")
        .with_order("o3", LAST_USE, "LAST");
    let journal = |orders: &[&str], read, intent| Journal {
        orders: orders.iter().map(|o| order(o)).collect(),
        read,
        intent,
    };
    let lease = |expires_at_ms| {
        Some(Lease {
            token: Uuid::new_v4(),
            expires_at_ms,
            taken_at_ms: 0,
            turn_began_at_ms: 0,
        })
    };
    store.discounts.lock().unwrap().extend([
        // Landed: Polar shows the target.
        (
            id(DISCOUNT),
            StoredDiscount {
                lease: lease(0),
                journal: Some(journal(&["o1"], 5, Intent::SetMaxRedemptions(4))),
                ..StoredDiscount::default()
            },
        ),
        // Not landed: Polar still shows the value read.
        (
            id(OTHER_DISCOUNT),
            StoredDiscount {
                lease: None,
                journal: Some(journal(&["o2"], 5, Intent::SetMaxRedemptions(4))),
                ..StoredDiscount::default()
            },
        ),
        // Its holder is still at work.
        (
            id(LAST_USE),
            StoredDiscount {
                lease: lease(epoch_ms(SystemTime::now()) + 60_000),
                journal: Some(journal(&["o3"], 1, Intent::Delete)),
                ..StoredDiscount::default()
            },
        ),
    ]);
    let discounts = InMemoryDiscounts::default()
        .with(id(DISCOUNT), "X", Some(4))
        .with(id(OTHER_DISCOUNT), "Y", Some(5))
        .with(id(LAST_USE), "LAST", Some(1));
    let s = shadow(store, discounts);
    let store_before = store_state(s.store());

    let answer = s.reconcile(deadline()).await.unwrap();

    assert_eq!(
        answer,
        ShadowReconciliation {
            counts: Reconciliation {
                found: 3,
                settled: 0,
                busy: 1,
                ..Reconciliation::default()
            },
            would_settle: 2,
        }
    );
    assert_eq!(
        serde_json::to_value(answer).unwrap(),
        serde_json::json!({"found": 3, "settled": 0, "cleared": 0, "busy": 1, "failed": 0, "wouldSettle": 2})
    );
    assert_eq!(s.discounts().calls(), [Call::Get, Call::Get], "reads only");
    assert_eq!(store_state(s.store()), store_before, "nothing settled");
}
