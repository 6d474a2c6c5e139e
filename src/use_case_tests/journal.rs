//! The intent journal: a write left behind by a crash is resolved by the next holder.

use super::*;

fn journal(orders: &[&str], read: i64, intent: Intent) -> Journal {
    Journal {
        orders: orders.iter().map(|o| order(o)).collect(),
        read,
        intent,
    }
}

/// A journal left by an invocation that died, with its lease expired.
fn left_behind(s: &TestSyncer, journal: Journal) {
    s.store().discounts.lock().unwrap().insert(
        id(DISCOUNT),
        StoredDiscount {
            lease: Some(Lease {
                token: Uuid::new_v4(),
                expires_at_ms: 0,
                taken_at_ms: 0,
                turn_began_at_ms: 0,
            }),
            journal: Some(journal),
            ..StoredDiscount::default()
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
    assert_eq!(s.store().action("o2"), Some(SyncAction::Decremented));
    assert_eq!(s.discounts().calls(), [Call::Get]);
    assert_eq!(s.discounts().max_redemptions(id(DISCOUNT)), Some(Some(3)));
    assert_eq!(s.store().journal(id(DISCOUNT)), None);
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
    assert_eq!(s.discounts().max_redemptions(id(DISCOUNT)), Some(Some(3)));
    assert_eq!(s.store().action("o1"), Some(SyncAction::Decremented));
    assert_eq!(s.discounts().calls(), [Call::Get, Call::Update(3)]);
}

#[tokio::test]
async fn a_journaled_deletion_found_done_is_completed() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default(),
    );
    left_behind(&s, journal(&["o1"], 1, Intent::Delete));
    sync_one(&s, request("o1", DISCOUNT, "X")).await.unwrap();
    assert_eq!(s.store().action("o1"), Some(SyncAction::Deleted));
    assert_eq!(s.discounts().calls(), [Call::Get]);
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
    assert_eq!(s.discounts().max_redemptions(id(DISCOUNT)), Some(Some(9)));
    assert_eq!(s.store().action("o1"), Some(SyncAction::Decremented));
}

#[tokio::test]
async fn a_value_changed_elsewhere_is_kept_and_the_orders_recorded() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(100)),
    );
    left_behind(&s, journal(&["o1"], 5, Intent::SetMaxRedemptions(4)));
    sync_one(&s, request("o1", DISCOUNT, "X")).await.unwrap();
    assert_eq!(s.discounts().max_redemptions(id(DISCOUNT)), Some(Some(100)));
    assert_eq!(s.store().action("o1"), Some(SyncAction::Decremented));
    assert_eq!(s.discounts().calls(), [Call::Get]);
}

/// A syncer that panics (so nothing after that point runs, as in a crash) the first
/// time it reaches the step put in the returned slot.
pub(super) fn crashing_syncer(
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
pub(super) fn expire_lease(s: &TestSyncer) {
    if let Some(stored) = s.store().discounts.lock().unwrap().get_mut(&id(DISCOUNT)) {
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
                s.discounts().max_redemptions(id(DISCOUNT)),
                after,
                "{step:?} {limit:?}"
            );
            assert_eq!(s.store().action("o1"), Some(action), "{step:?} {limit:?}");
            assert_eq!(s.store().action("o2"), Some(action), "{step:?} {limit:?}");
            assert_marked_once(&s);
            assert_eq!(s.store().journal(id(DISCOUNT)), None);
        }
    }
}
