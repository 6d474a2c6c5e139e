//! An inherited journal is cleared only by the commit that marks its orders. When the
//! re-write that recovery makes is refused (a 429 through the retries, the rate budget,
//! a throttled journal write), the journal stays, and the next run counts its orders once.

use super::*;
use crate::sync::Reconciliation;

#[derive(Debug, Clone, Copy)]
enum Refusal {
    RateLimited,
    OverBudget,
    IntentThrottled,
}

const REFUSALS: [Refusal; 3] = [
    Refusal::RateLimited,
    Refusal::OverBudget,
    Refusal::IntentThrottled,
];

/// Where an `OverBudget` refusal comes from.
#[derive(Debug, Clone, Copy)]
enum Budget {
    /// A limiter of one request a minute: the read-back takes the slot, and the write's is
    /// a minute away, further than a 30 s invocation can wait.
    OneRequestAMinute,
    /// The write is turned away as the rate budget turns it away when the batch's other
    /// steps took the slots between its start and its write.
    SpentByOtherSteps,
}

/// o1 and o2 journaled for 5 -> 3 by an invocation that died before it wrote; o3 not
/// counted yet. The next re-write is refused as `refusal` says.
fn died_before_writing(refusal: Refusal, budget: Budget) -> TestSyncer {
    let mut s = syncer(
        InMemoryStore::default()
            .with_order("o1", DISCOUNT, "X")
            .with_order("o2", DISCOUNT, "X")
            .with_order("o3", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(5)),
    );
    orphaned(&s, &["o1", "o2"], 5, Intent::SetMaxRedemptions(3), 0);
    match refusal {
        Refusal::RateLimited => {
            for _ in 0..quick_retries().max_attempts {
                s.discounts().script(
                    On::Update,
                    Scripted::Refuse(PolarFailureKind::RateLimited { retry_after: None }),
                );
            }
        }
        Refusal::OverBudget => match budget {
            Budget::OneRequestAMinute => s = s.with_rate_limiter(RateLimiter::per_minute(1, 1)),
            Budget::SpentByOtherSteps => s.discounts().script(
                On::Update,
                Scripted::Refuse(PolarFailureKind::OverBudget {
                    ready_in: Duration::from_secs(60),
                }),
            ),
        },
        Refusal::IntentThrottled => s.store().throttle_intents(quick_retries().max_attempts),
    }
    s
}

fn refused_run() -> Deadline {
    Deadline::after(Duration::from_secs(30))
}

/// Long enough for a budget of one request a minute to serve a read and a write.
fn healthy_run() -> Deadline {
    Deadline::after(Duration::from_secs(150))
}

fn assert_counted_once(s: &TestSyncer, refusal: Refusal, orders: &[&str], max_after: i64) {
    assert_eq!(
        s.discounts().max_redemptions(id(DISCOUNT)),
        Some(Some(max_after)),
        "{refusal:?}"
    );
    for name in orders {
        assert_eq!(
            s.store().action(name),
            Some(SyncAction::Decremented),
            "{refusal:?}: {name}"
        );
    }
    assert_marked_once(s);
    assert_eq!(s.store().journal(id(DISCOUNT)), None, "{refusal:?}");
}

#[tokio::test(start_paused = true)]
async fn a_reconciliation_whose_re_write_is_refused_keeps_the_journal_for_the_next_run() {
    for refusal in REFUSALS {
        let s = died_before_writing(refusal, Budget::OneRequestAMinute);

        let refused = s.reconcile(refused_run()).await.unwrap();
        assert_eq!(
            refused,
            Reconciliation {
                found: 1,
                failed: 1,
                ..Reconciliation::default()
            },
            "{refusal:?}"
        );
        assert!(
            s.store().journal(id(DISCOUNT)).is_some(),
            "{refusal:?}: the journal is kept"
        );
        assert_eq!(
            s.store().lease(id(DISCOUNT)),
            None,
            "{refusal:?}: nothing of its own in flight, so the lease is given up at once"
        );
        assert_eq!(s.discounts().max_redemptions(id(DISCOUNT)), Some(Some(5)));

        let healthy = s.reconcile(healthy_run()).await.unwrap();
        assert_eq!(healthy.settled, 1, "{refusal:?}: {healthy:?}");
        assert_counted_once(&s, refusal, &["o1", "o2"], 3);
        assert_eq!(
            s.reconcile(healthy_run()).await.unwrap(),
            Reconciliation::default(),
            "{refusal:?}: nothing left"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_message_whose_recovery_re_write_is_refused_keeps_the_journal_and_says_so() {
    for refusal in REFUSALS {
        let s = died_before_writing(refusal, Budget::SpentByOtherSteps);
        let messages = [request("o1", DISCOUNT, "X"), request("o3", DISCOUNT, "X")];

        let refused = s
            .sync_discount(id(DISCOUNT), &messages, refused_run())
            .await;
        let journaled = refused[0].as_ref().unwrap_err();
        assert!(
            matches!(**journaled, SyncError::WriteMayHaveLanded(_)),
            "{refusal:?}: o1's journal is kept, and its failure says the journal will settle it: {journaled:?}"
        );
        let not_journaled = refused[1].as_ref().unwrap_err();
        assert!(
            !matches!(**not_journaled, SyncError::WriteMayHaveLanded(_)),
            "{refusal:?}: o3 is in no journal: {not_journaled:?}"
        );
        assert!(s.store().journal(id(DISCOUNT)).is_some(), "{refusal:?}");
        assert_eq!(s.discounts().max_redemptions(id(DISCOUNT)), Some(Some(5)));

        // o1's message was dead-lettered: only o3's comes back, and the journal counts o2
        // and o1 as well.
        let healthy = s
            .sync_discount(id(DISCOUNT), &messages[1..], healthy_run())
            .await;
        assert_eq!(
            healthy[0].as_ref().unwrap(),
            &Synced::Applied(SyncAction::Decremented),
            "{refusal:?}"
        );
        assert_counted_once(&s, refusal, &["o1", "o2", "o3"], 2);
    }
}
