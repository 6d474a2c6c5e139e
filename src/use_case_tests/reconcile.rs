//! The scheduled reconciliation on in-memory ports.

use super::*;
use crate::sync::Reconciliation;

fn two_orders() -> TestSyncer {
    syncer(
        InMemoryStore::default()
            .with_order("o1", DISCOUNT, "X")
            .with_order("o2", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    )
}

#[tokio::test]
async fn a_journal_whose_write_landed_is_settled_without_writing_again() {
    let s = two_orders();
    orphaned(&s, &["o1", "o2"], 5, Intent::SetMaxRedemptions(3), 0);

    let counts = s.reconcile(deadline()).await.unwrap();

    assert_eq!(
        counts,
        Reconciliation {
            found: 1,
            settled: 1,
            ..Reconciliation::default()
        }
    );
    assert_eq!(s.discounts().calls(), [Call::Get]);
    assert_eq!(s.store().action("o1"), Some(SyncAction::Decremented));
    assert_eq!(s.store().action("o2"), Some(SyncAction::Decremented));
    assert_eq!(s.store().lease(id(DISCOUNT)), None, "released");
}

#[tokio::test]
async fn a_journal_whose_write_did_not_land_is_planned_again_and_written_once() {
    let s = two_orders();
    orphaned(&s, &["o1", "o2"], 5, Intent::SetMaxRedemptions(3), 0);
    s.discounts().set(id(DISCOUNT), Some(5));

    s.reconcile(deadline()).await.unwrap();
    let again = s.reconcile(deadline()).await.unwrap();

    assert_eq!(s.discounts().max_redemptions(id(DISCOUNT)), Some(Some(3)));
    assert_eq!(s.discounts().calls(), [Call::Get, Call::Update(3)]);
    assert_eq!(again, Reconciliation::default(), "nothing left to find");
}

#[tokio::test]
async fn a_journal_whose_lease_is_still_live_is_left_to_its_holder() {
    let s = two_orders();
    let live = epoch_ms(SystemTime::now()) + 60_000;
    orphaned(&s, &["o1"], 5, Intent::SetMaxRedemptions(4), live);

    let counts = s.reconcile(deadline()).await.unwrap();

    assert_eq!(counts.busy, 1);
    assert!(s.discounts().calls().is_empty());
    assert!(s.store().journal(id(DISCOUNT)).is_some());
}

#[tokio::test]
async fn a_discount_whose_journal_was_settled_by_a_message_costs_no_polar_request() {
    let s = two_orders();
    sync_one(&s, request("o1", DISCOUNT, "X")).await.unwrap();
    let before = s.discounts().calls().len();

    let counts = s.reconcile(deadline()).await.unwrap();

    assert_eq!(counts, Reconciliation::default());
    assert_eq!(s.discounts().calls().len(), before);
}
