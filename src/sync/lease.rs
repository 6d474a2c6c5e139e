//! The discount's lease: taken before anything is counted, waited for only until its
//! holder is expected to be done, given up when no write is pending.
//!
//! Contention on a hot code is not a failure. The conditional write that would have taken
//! the lease answers, when it is refused, who holds it, since when, and how long the
//! discount's last step took. A waiter with few messages hands their orders to the holder
//! and gives the messages back for when the holder's next step should have counted them
//! (`Syncer::hand_off`, in `mod.rs`). A larger one sleeps until that holder is expected to
//! be done and tries once more, one DynamoDB request per holder it waits out, instead of
//! polling the item every few milliseconds (a hot key on DynamoDB, and on the emulator it
//! starved the holder). A holder that is not expected to be done in time has the messages
//! sent back, to return when it is (see `redelivery`).
//!
//! Within one container the steps of a discount take turns in memory instead (FIFO groups
//! of one discount in one batch): a turn costs no request, and a step whose turn comes
//! finds the lease its predecessor in the container released.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tracing::warn;

use super::{Left, SyncError, Syncer, START_MARGIN};
use crate::backoff::Backoff;
use crate::deadline::{epoch_ms, Deadline};
use crate::domain::{DiscountId, Journal, OrderId};
use crate::ports::{Acquisition, Coordination, Discounts, HeldLease, Lease, OrderLedger};
use crate::telemetry::Count;

/// How long a lease outlives its invocation's deadline. Longer than the Polar request
/// timeout, so a write still in flight when an invocation dies has landed (or failed)
/// before anyone else may read the discount.
pub const LEASE_GRACE: Duration = Duration::from_secs(10);
/// How long a waiter waits for holders before sending its messages back: its other
/// discounts wait with it.
const LEASE_WAIT: Duration = Duration::from_secs(3);
/// A holder keeps the lease for orders handed over only until its turn has lasted this
/// long, half of `LEASE_WAIT`: otherwise a steady stream of hand-offs would keep a waiter
/// for the lease (a batch too large to hand over) waiting until it gave its messages back.
pub(super) const LONGEST_TURN: Duration = Duration::from_millis(1_500);
/// How long after a holder's expected end a waiter looks: spread so that the waiters of
/// several containers do not all look at the same instant.
const LOOK_SPREAD: Duration = Duration::from_millis(20);
/// The pauses between looks when the holder's end cannot be expected (no step measured
/// yet): a few looks a second at most, so that a slow holder is not hammered.
const UNKNOWN_END_POLL: Backoff = Backoff {
    base: Duration::from_millis(100),
    max: Duration::from_millis(400),
};
/// The shortest first pause after a holder is found past its expected end.
const OVERDUE_FIRST_LOOK: Duration = Duration::from_millis(20);
/// The longest pause between looks at a holder past its expected end.
const OVERDUE_MAX_PAUSE: Duration = Duration::from_millis(400);

/// A new lease for a step that starts now and must end by `deadline`.
pub(super) fn lease_until(deadline: Deadline) -> Lease {
    let now_ms = epoch_ms(SystemTime::now());
    Lease {
        token: uuid::Uuid::new_v4(),
        expires_at_ms: deadline.epoch_ms() + LEASE_GRACE.as_millis() as u64,
        taken_at_ms: now_ms,
        turn_began_at_ms: now_ms,
    }
}

/// How long a waiter has waited for a discount's holders, and how often in a row it found
/// one past its expected end.
#[derive(Default)]
pub(super) struct Waiting {
    overdue_looks: u32,
    waited: Duration,
}

/// How long to sleep before looking at `held` again. A holder expected to be done later is
/// looked at then. A holder past its expected end is usually just finishing (steps vary by
/// a few tens of milliseconds), so it is looked at again after a quarter of its last step,
/// doubling while it stays late: a free lease is not left idle for a fixed poll interval.
fn pause_before_next_look(held: &HeldLease, now_ms: u64, overdue_looks: u32) -> Duration {
    match (held.expected_release_at_ms, held.last_step_ms) {
        (Some(at_ms), _) if at_ms > now_ms => {
            Duration::from_millis(at_ms - now_ms) + LOOK_SPREAD.mul_f64(fastrand::f64())
        }
        (_, Some(step_ms)) => Backoff {
            base: (Duration::from_millis(step_ms) / 4).max(OVERDUE_FIRST_LOOK),
            max: OVERDUE_MAX_PAUSE,
        }
        .equal_jitter(overdue_looks),
        (_, None) => UNKNOWN_END_POLL.equal_jitter(overdue_looks),
    }
}

impl Waiting {
    /// Sleeps until `held`'s holder is expected to be done, if that is worth waiting for;
    /// false when the waiter should give its messages back instead.
    pub(super) async fn until_released(&mut self, held: &HeldLease, deadline: Deadline) -> bool {
        let now_ms = epoch_ms(SystemTime::now());
        // A holder past its own deadline is dead or left a write pending: its lease frees
        // only at expiry, so waiting is pointless if that is too late.
        let frees_too_late =
            held.expires_at_ms + START_MARGIN.as_millis() as u64 > deadline.epoch_ms();
        let overdue = held
            .expected_release_at_ms
            .is_none_or(|at_ms| at_ms <= now_ms);
        self.overdue_looks = if overdue { self.overdue_looks + 1 } else { 0 };
        let pause = pause_before_next_look(held, now_ms, self.overdue_looks);
        if (!holder_at_work(held, now_ms) && frees_too_late)
            || self.waited + pause > LEASE_WAIT
            || deadline.remaining() < pause + START_MARGIN
        {
            return false;
        }
        tokio::time::sleep(pause).await;
        self.waited += pause;
        true
    }
}

/// Whether `held`'s holder is still within its invocation's deadline: not dead, nor gone
/// with a write pending.
pub(super) fn holder_at_work(held: &HeldLease, now_ms: u64) -> bool {
    held.expires_at_ms
        .saturating_sub(LEASE_GRACE.as_millis() as u64)
        > now_ms
}

/// How long a container takes a discount for contended after another invocation last
/// refused it the discount's lease.
const CONTENTION_MEMORY: Duration = Duration::from_secs(10);

/// The container's own turns on each discount: its steps on one discount run one at a time,
/// so that they never refuse each other the lease. And which discounts other invocations
/// hold too.
#[derive(Default)]
pub(super) struct LocalTurns {
    discounts: Mutex<HashMap<DiscountId, Arc<tokio::sync::Mutex<()>>>>,
    refused_at: Mutex<HashMap<DiscountId, Instant>>,
}

/// This container's turn on a discount, until dropped.
pub(super) struct Turn<'a> {
    turns: &'a LocalTurns,
    discount: DiscountId,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl LocalTurns {
    /// Another invocation held `discount`'s lease when this container asked for it.
    pub(super) fn refused(&self, discount: DiscountId) {
        let mut refused_at = self.refused_at.lock().unwrap();
        refused_at.retain(|_, at| at.elapsed() < CONTENTION_MEMORY);
        refused_at.insert(discount, Instant::now());
    }

    /// Whether other invocations held `discount`'s lease lately.
    pub(super) fn contended(&self, discount: DiscountId) -> bool {
        let refused_at = self.refused_at.lock().unwrap();
        refused_at
            .get(&discount)
            .is_some_and(|at| at.elapsed() < CONTENTION_MEMORY)
    }

    /// Waits until no other step of this container is at work on `discount`.
    pub(super) async fn take(&self, discount: DiscountId) -> Turn<'_> {
        let turn = self
            .discounts
            .lock()
            .unwrap()
            .entry(discount)
            .or_default()
            .clone();
        Turn {
            turns: self,
            discount,
            guard: Some(turn.lock_owned().await),
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut discounts = self.turns.discounts.lock().unwrap();
        drop(self.guard.take());
        // Nobody else waits: forget the discount, so that the map holds only live steps.
        if discounts
            .get(&self.discount)
            .is_some_and(|turn| Arc::strong_count(turn) == 1)
        {
            discounts.remove(&self.discount);
        }
    }
}

/// The lease could not be had, and which orders the holder's pending journal covers.
pub(super) struct LeaseRefused {
    pub error: SyncError,
    pub journaled: Vec<OrderId>,
}

impl LeaseRefused {
    /// Another invocation holds the lease: the waiter's messages go back for later.
    pub(super) fn held(discount: DiscountId, held: HeldLease) -> Self {
        Self::refused(discount, held, false)
    }

    /// The waiter handed its orders to the holder: its messages go back for when the
    /// holder's next step, which counts them, is expected to end.
    pub(super) fn handed_over(discount: DiscountId, held: HeldLease) -> Self {
        Self::refused(discount, held.one_step_later(), true)
    }

    fn refused(discount: DiscountId, held: HeldLease, handed_over: bool) -> Self {
        Self {
            error: SyncError::LeaseHeld {
                discount,
                expires_at_ms: held.expires_at_ms,
                expected_release_at_ms: held.expected_release_at_ms,
                handed_over,
            },
            journaled: held.journaled,
        }
    }
}

impl<S: OrderLedger + Coordination, D: Discounts> Syncer<S, D> {
    /// Takes the discount's lease, waiting for a holder only until it is expected to be
    /// done, one conditional write per look. Returns the journal a previous holder left
    /// unfinished, if any.
    pub(super) async fn acquire(
        &self,
        discount: DiscountId,
        lease: &Lease,
        deadline: Deadline,
        waiting: &mut Waiting,
    ) -> Result<Option<Journal>, LeaseRefused> {
        loop {
            let acquisition = self
                .with_store_retry(deadline, || {
                    self.store
                        .acquire(discount, lease, epoch_ms(SystemTime::now()))
                })
                .await
                .map_err(|err| LeaseRefused {
                    error: err.into(),
                    journaled: Vec::new(),
                })?;
            match acquisition {
                Acquisition::Acquired { pending } => return Ok(pending),
                Acquisition::Held(held) => {
                    self.refused_by_holder(discount);
                    if !waiting.until_released(&held, deadline).await {
                        return Err(LeaseRefused::held(discount, held));
                    }
                }
            }
        }
    }

    /// Another invocation held the lease: a DynamoDB request spent waiting, and the
    /// discount is contended.
    pub(super) fn refused_by_holder(&self, discount: DiscountId) {
        self.metrics.count(Count::LeaseWaitRequests, 1);
        self.turns.refused(discount);
    }

    /// Gives the lease up as a failure's leftovers allow: with its own refused journal,
    /// without touching an inherited one, or not at all while a write may still land.
    pub(super) async fn give_up_after(&self, discount: DiscountId, lease: &Lease, left: Left) {
        let released = match left {
            Left::Nothing => self.store.release_dropping_journal(discount, lease).await,
            Left::Journal => self.store.release_keeping_journal(discount, lease).await,
            Left::WriteInFlight => return,
        };
        if let Err(err) = released {
            warn!(error = %crate::error_chain(&err), discountId = %discount,
                "could not release the lease; it will expire");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(expected_release_at_ms: Option<u64>, last_step_ms: Option<u64>) -> HeldLease {
        HeldLease {
            holder: None,
            expires_at_ms: u64::MAX,
            expected_release_at_ms,
            last_step_ms,
            journaled: Vec::new(),
        }
    }

    #[test]
    fn a_holder_expected_to_be_done_later_is_looked_at_then() {
        let pause = pause_before_next_look(&held(Some(1_300), Some(150)), 1_000, 0);
        assert!(pause >= Duration::from_millis(300) && pause <= Duration::from_millis(320));
    }

    #[test]
    fn a_holder_past_its_expected_end_is_looked_at_again_after_a_quarter_of_its_step_then_less_often(
    ) {
        let late = held(Some(1_000), Some(160));
        let pauses: Vec<Duration> = (1..=6)
            .map(|looks| pause_before_next_look(&late, 1_010, looks))
            .collect();
        let within = |pause: Duration, low: u64, high: u64| {
            pause >= Duration::from_millis(low) && pause <= Duration::from_millis(high)
        };
        assert!(within(pauses[0], 20, 40), "{pauses:?}");
        assert!(within(pauses[1], 40, 80), "{pauses:?}");
        assert!(within(pauses[5], 200, 400), "{pauses:?}");
    }

    #[test]
    fn a_holder_whose_step_was_never_measured_is_looked_at_a_few_times_a_second() {
        let pause = pause_before_next_look(&held(None, None), 1_000, 1);
        assert!(pause >= Duration::from_millis(50) && pause <= Duration::from_millis(100));
    }
}
