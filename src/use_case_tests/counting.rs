//! Counting orders on Polar: one read and one coalesced write per discount.

use super::*;

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
    assert_eq!(s.discounts().max_redemptions(id(DISCOUNT)), Some(Some(2)));
    assert_eq!(s.store().action("o1"), Some(SyncAction::Decremented));
    assert_eq!(s.discounts().calls(), [Call::Get, Call::Update(2)]);
    assert_eq!(s.store().lease(id(DISCOUNT)), None, "lease released");
    assert_eq!(s.store().journal(id(DISCOUNT)), None, "journal cleared");
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
    assert_eq!(s.discounts().max_redemptions(id(DISCOUNT)), Some(Some(2)));
    assert_eq!(s.discounts().calls().len(), 2);
}

#[tokio::test]
async fn the_last_use_deletes_the_discount() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(1)),
    );
    let synced = sync_one(&s, request("o1", DISCOUNT, "X")).await.unwrap();
    assert_eq!(synced, Synced::Applied(SyncAction::Deleted));
    assert_eq!(s.discounts().max_redemptions(id(DISCOUNT)), None);
}

#[tokio::test]
async fn an_unlimited_discount_is_only_read() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", None),
    );
    let synced = sync_one(&s, request("o1", DISCOUNT, "X")).await.unwrap();
    assert_eq!(synced, Synced::Applied(SyncAction::SkippedUnlimited));
    assert_eq!(s.discounts().calls(), [Call::Get]);
}

#[tokio::test]
async fn a_discount_missing_on_polar_is_recorded_as_already_deleted() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default(),
    );
    let synced = sync_one(&s, request("o1", DISCOUNT, "X")).await.unwrap();
    assert_eq!(synced, Synced::Applied(SyncAction::AlreadyDeleted));
    assert_eq!(s.store().action("o1"), Some(SyncAction::AlreadyDeleted));
}

#[tokio::test]
async fn an_unknown_order_fails_without_touching_polar() {
    let s = syncer(InMemoryStore::default(), InMemoryDiscounts::default());
    let err = sync_one(&s, request("nope", DISCOUNT, "X"))
        .await
        .unwrap_err();
    assert!(matches!(*err, SyncError::OrderNotFound(_)), "{err}");
    assert!(s.discounts().calls().is_empty());
    assert_eq!(s.store().lease(id(DISCOUNT)), None, "lease released");
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
    assert!(s.discounts().calls().is_empty());
    assert_eq!(s.store().action("o1"), None);
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
    assert!(s.discounts().calls().is_empty());
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
    assert_eq!(s.discounts().calls(), [Call::Get]);
    assert_eq!(s.discounts().max_redemptions(id(DISCOUNT)), Some(Some(3)));
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
    assert_eq!(s.discounts().calls(), [Call::Get, Call::Update(15)]);
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
    assert_eq!(s.discounts().max_redemptions(id(DISCOUNT)), Some(Some(8)));
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
    assert_eq!(s.discounts().max_redemptions(id(DISCOUNT)), None);
    assert_eq!(s.discounts().calls(), [Call::Get, Call::Delete]);
}
