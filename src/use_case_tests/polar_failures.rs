//! Polar failures: retried, read back, or left to the journal, never counted twice.

use super::*;

#[tokio::test]
async fn an_expired_lease_is_taken_over() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    );
    s.store()
        .discounts
        .lock()
        .unwrap()
        .entry(id(DISCOUNT))
        .or_default()
        .lease = Some(Lease {
        token: Uuid::new_v4(),
        expires_at_ms: epoch_ms(SystemTime::now()) - 1,
        taken_at_ms: 0,
        turn_began_at_ms: 0,
    });
    let synced = sync_one(&s, request("o1", DISCOUNT, "X")).await.unwrap();
    assert_eq!(synced, Synced::Applied(SyncAction::Decremented));
}

#[tokio::test]
async fn an_unavailable_polar_on_the_read_is_retried_and_counted_once() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    );
    s.discounts()
        .script(On::Get, Scripted::Refuse(PolarFailureKind::Unavailable));
    let synced = sync_one(&s, request("o1", DISCOUNT, "X")).await.unwrap();
    assert_eq!(synced, Synced::Applied(SyncAction::Decremented));
    assert_eq!(s.discounts().max_redemptions(id(DISCOUNT)), Some(Some(2)));
}

#[tokio::test]
async fn a_write_applied_but_unanswered_is_read_back_not_repeated() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(5)),
    );
    s.discounts()
        .script(On::Update, Scripted::AppliedUnanswered);
    let synced = sync_one(&s, request("o1", DISCOUNT, "X")).await.unwrap();
    assert_eq!(synced, Synced::Applied(SyncAction::Decremented));
    assert_eq!(
        s.discounts().calls(),
        [Call::Get, Call::Update(4), Call::Get]
    );
    assert_eq!(s.discounts().max_redemptions(id(DISCOUNT)), Some(Some(4)));
}

#[tokio::test]
async fn an_unanswered_write_that_did_not_land_is_made_again_after_reading_back() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(5)),
    );
    s.discounts().script(On::Update, Scripted::Unanswered);
    let synced = sync_one(&s, request("o1", DISCOUNT, "X")).await.unwrap();
    assert_eq!(synced, Synced::Applied(SyncAction::Decremented));
    assert_eq!(
        s.discounts().calls(),
        [Call::Get, Call::Update(4), Call::Get, Call::Update(4)]
    );
    assert_eq!(s.discounts().max_redemptions(id(DISCOUNT)), Some(Some(4)));
}

#[tokio::test]
async fn a_delete_applied_but_unanswered_is_recorded_as_deleted() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(1)),
    );
    s.discounts()
        .script(On::Delete, Scripted::AppliedUnanswered);
    let synced = sync_one(&s, request("o1", DISCOUNT, "X")).await.unwrap();
    assert_eq!(synced, Synced::Applied(SyncAction::Deleted));
    assert_eq!(s.discounts().calls(), [Call::Get, Call::Delete, Call::Get]);
}

#[tokio::test]
async fn a_configuration_error_releases_the_lease_and_leaves_the_order_unsynced() {
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    );
    s.discounts()
        .script(On::Get, Scripted::Refuse(PolarFailureKind::Misconfigured));
    let err = sync_one(&s, request("o1", DISCOUNT, "X"))
        .await
        .unwrap_err();
    assert_eq!(err.class(), FailureClass::Configuration);
    assert_eq!(s.discounts().calls(), [Call::Get]);
    assert_eq!(s.store().action("o1"), None);
    assert_eq!(s.store().lease(id(DISCOUNT)), None);
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
    s.store()
        .orders
        .lock()
        .unwrap()
        .get_mut("synced")
        .unwrap()
        .synced = Some(SyncAction::Decremented);
    s.discounts()
        .script(On::Get, Scripted::Refuse(PolarFailureKind::Misconfigured));
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
        s.store().lease(id(DISCOUNT)),
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
    assert_eq!(s.store().lease(id(DISCOUNT)), None);
}

// Paused time: the late write's 3 ms and the read-back's wait are ordered by the clock, not
// by how busy the machine is.
#[tokio::test(start_paused = true)]
async fn an_unanswered_write_that_polar_applies_late_is_seen_before_anything_is_decided() {
    let s = Arc::new(syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(5)),
    ));
    s.discounts().script(On::Update, Scripted::Unanswered);
    // Polar applies the PATCH a few milliseconds after our client gave up on it.
    let late = {
        let s = s.clone();
        tokio::spawn(async move {
            while !s.discounts().calls().contains(&Call::Update(4)) {
                tokio::task::yield_now().await;
            }
            tokio::time::sleep(Duration::from_millis(3)).await;
            s.discounts().set(id(DISCOUNT), Some(4));
        })
    };

    let synced = sync_one(&s, request("o1", DISCOUNT, "X")).await.unwrap();
    late.await.unwrap();

    assert_eq!(synced, Synced::Applied(SyncAction::Decremented));
    assert_eq!(
        s.discounts().calls(),
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
    s.discounts().script(On::Update, Scripted::Unanswered);
    s.discounts()
        .script(On::Update, Scripted::Refuse(PolarFailureKind::Unauthorized));
    let err = sync_one(&s, request("o1", DISCOUNT, "X"))
        .await
        .unwrap_err();
    assert_eq!(err.class(), FailureClass::Configuration);
    assert!(
        s.store().journal(id(DISCOUNT)).is_some(),
        "the first PATCH may still land"
    );
    assert!(
        s.store().lease(id(DISCOUNT)).is_some(),
        "kept until it expires"
    );
}

#[tokio::test]
async fn a_request_refused_for_a_token_since_replaced_is_sent_again_only_when_the_budget_admits_it()
{
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(5)),
    );
    s.discounts()
        .script(On::Get, Scripted::Refuse(PolarFailureKind::TokenReplaced));
    sync_one(&s, request("o1", DISCOUNT, "X")).await.unwrap();
    assert_eq!(
        s.discounts().calls(),
        [Call::Get, Call::Get, Call::Update(4)],
        "sent again with the new token"
    );

    // Two requests a minute: the read and its write. The read's resend has no slot.
    let s = syncer(
        InMemoryStore::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(5)),
    )
    .with_rate_limiter(RateLimiter::per_minute(2, 2));
    s.discounts()
        .script(On::Get, Scripted::Refuse(PolarFailureKind::TokenReplaced));
    let err = s
        .sync_discount(
            id(DISCOUNT),
            &[request("o1", DISCOUNT, "X")],
            Deadline::after(Duration::from_secs(10)),
        )
        .await
        .remove(0)
        .unwrap_err();
    assert_eq!(s.discounts().calls(), [Call::Get], "{err:?}");
}
