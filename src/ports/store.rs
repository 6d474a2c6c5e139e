//! The orders table and the function's own coordination table, as the use case sees them.

use std::future::Future;
use std::time::SystemTime;

use thiserror::Error;
use uuid::Uuid;

use super::BoxError;
use crate::domain::{DiscountId, Journal, OrderId, SyncAction, SyncRequest};
use crate::failure::{FailureClass, RetryHint};

/// The order as the checkout service wrote it: the source of truth for which
/// discount was used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRecord {
    pub discount_id: Option<String>,
    pub discount_code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// Not synced yet, and names the message's discount: tagged for the caller's lease.
    Claimed,
    AlreadySynced(OrderRecord),
    /// Not synced, but names another discount or code than the message: left untouched.
    Mismatched(OrderRecord),
    NotFound,
}

/// The orders table, seen as a ledger of which orders are reflected on Polar.
pub trait OrderLedger: Send + Sync {
    /// Tags the order with the lease that is about to count it, in one conditional write
    /// that succeeds only if the order exists, is not synced, and names the request's
    /// discount and code.
    fn claim(
        &self,
        request: &SyncRequest,
        lease: &Lease,
    ) -> impl Future<Output = Result<ClaimOutcome, StoreFailure>> + Send;
}

/// An order as it stands in the orders table, read without changing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderSnapshot {
    pub record: OrderRecord,
    /// `polarDiscountSynced` is true: the order's redemption is on Polar already.
    pub synced: bool,
}

/// Reading orders without changing them: all that shadow mode is given of the orders table.
pub trait OrderReader: Send + Sync {
    /// The order as it stands now (a strongly consistent read); `None` if there is none.
    fn read_order(
        &self,
        order: &OrderId,
    ) -> impl Future<Output = Result<Option<OrderSnapshot>, StoreFailure>> + Send;
}

/// The exclusive right to change one discount on Polar, held by one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub token: Uuid,
    /// Epoch milliseconds after which another invocation may take the lease over.
    pub expires_at_ms: u64,
    /// Epoch milliseconds when this invocation set out to take it: the start of its step,
    /// from which the step's time is measured when the lease is given up.
    pub taken_at_ms: u64,
    /// Epoch milliseconds when its holder's turn began: its first step's `taken_at_ms`.
    /// Steps for orders handed over extend the turn only for so long.
    pub turn_began_at_ms: u64,
}

impl Lease {
    /// The same lease for the holder's next step, which starts now.
    pub fn for_next_step(&self) -> Self {
        Self {
            taken_at_ms: crate::deadline::epoch_ms(SystemTime::now()),
            ..self.clone()
        }
    }
}

/// Another invocation's live lease, as a waiter sees it in the answer that refused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLease {
    /// The holder's lease token, which a hand-off names.
    pub holder: Option<Uuid>,
    /// Epoch milliseconds after which it may be taken over.
    pub expires_at_ms: u64,
    /// When its holder will likely give it up: the time it was taken plus the last
    /// measured step on the discount; `None` when no step was measured yet.
    pub expected_release_at_ms: Option<u64>,
    /// How long the discount's last measured step took, if one was measured.
    pub last_step_ms: Option<u64>,
    /// The orders of its pending journal, if it has one.
    pub journaled: Vec<OrderId>,
}

impl HeldLease {
    /// From the held item's attributes: the holder's start, and the last measured step.
    pub fn expecting(
        holder: Option<Uuid>,
        expires_at_ms: u64,
        taken_at_ms: Option<u64>,
        last_step_ms: Option<u64>,
        journaled: Vec<OrderId>,
    ) -> Self {
        Self {
            holder,
            expires_at_ms,
            expected_release_at_ms: taken_at_ms.zip(last_step_ms).map(|(at, step)| at + step),
            last_step_ms,
            journaled,
        }
    }

    /// When the holder's next step is expected to end: the step in which it counts the
    /// orders handed to it now.
    pub fn one_step_later(&self) -> Self {
        Self {
            expected_release_at_ms: self
                .expected_release_at_ms
                .zip(self.last_step_ms)
                .map(|(at, step)| at + step),
            ..self.clone()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquisition {
    /// The lease is ours; `pending` is a journal left by a holder that did not finish.
    Acquired { pending: Option<Journal> },
    /// Another invocation holds the lease.
    Held(HeldLease),
}

/// What `Coordination::acquire_with_claims` came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuickStart {
    /// The lease is ours, no journal was pending, and every order is claimed.
    Started,
    /// Nothing was written because another invocation holds the lease: the refusal
    /// already tells everything `acquire` would, so a waiter asks nothing more. It also
    /// tells which claims would have been refused, and why (by their index in `claims`):
    /// a waiter whose orders a holder counted learns it from them.
    Held {
        held: HeldLease,
        refused: Vec<(usize, ClaimOutcome)>,
    },
    /// Nothing was written because these orders cannot be claimed (by their index in
    /// `claims`, with what `OrderLedger::claim` would have answered): the lease is free and
    /// nothing is pending, so the other orders can start without them.
    ClaimsRefused(Vec<(usize, ClaimOutcome)>),
    /// Nothing was written, for another reason (a pending journal, an order spelled
    /// otherwise than the message, a conflict): `acquire` and `OrderLedger::claim` tell
    /// which.
    Declined,
}

/// Whether `commit` also gives the lease up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseAfter {
    Kept,
    /// Released; orders waiters handed over stay on the list for the next holder.
    Released,
    /// Released, unless waiters handed orders over: then kept, and the orders handed over
    /// to this holder (`Committed::HandedOver`).
    ReleasedOrHandedOver,
}

impl LeaseAfter {
    pub fn releases(self) -> bool {
        self != Self::Kept
    }
}

/// The most orders a holder takes over from waiters for one step: they are claimed with the
/// lease in one transaction of at most 100 items.
pub const MAX_HANDED_OVER: usize = 99;

/// What a commit came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// The orders are marked, the journal cleared, and the lease kept or released as asked.
    AsAsked,
    /// The orders are marked and the journal cleared, but the lease, asked to be released
    /// unless orders were handed over, is kept: waiters handed these orders to it meanwhile
    /// (at most `MAX_HANDED_OVER`, none of them among the orders just marked). They are off
    /// the discount's hand-off list now; the holder counts them next, or gives the lease up
    /// and leaves them to their messages.
    HandedOver(Vec<SyncRequest>),
}

/// What `Coordination::hand_off` came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandOff {
    /// The orders are on the discount's hand-off list, for that holder (or the next) to
    /// take over when it would give the lease up.
    Handed,
    /// That holder no longer holds the lease: nothing was written.
    NotHeld,
}

/// Per-discount coordination in `SYNC_TABLE`: the lease and the intent journal.
pub trait Coordination: Send + Sync {
    /// Takes the lease in one conditional write if it is free, expired or ours; otherwise
    /// says who holds it, from the same request's refusal.
    fn acquire(
        &self,
        discount: DiscountId,
        lease: &Lease,
        now_ms: u64,
    ) -> impl Future<Output = Result<Acquisition, StoreFailure>> + Send;

    /// The common case in one write: takes the lease and claims every order of `claims`
    /// (as `OrderLedger::claim` would, with the message's spelling), all or nothing, only
    /// if the lease is free and no journal is pending. `ClaimsRefused` or `Declined` when
    /// nothing was written; `acquire` and `OrderLedger::claim` then tell why.
    fn acquire_with_claims(
        &self,
        discount: DiscountId,
        lease: &Lease,
        now_ms: u64,
        claims: &[&SyncRequest],
    ) -> impl Future<Output = Result<QuickStart, StoreFailure>> + Send;

    /// Leaves `orders` to the invocation holding the lease as `held` shows it, in one
    /// conditional write: a commit that releases the lease unless orders were handed over
    /// keeps it and hands them over, to be counted in the holder's next step
    /// (`Committed::HandedOver`). A hand-off is a request, never a promise: the orders'
    /// messages go back as they are, and count them if no holder did.
    fn hand_off(
        &self,
        discount: DiscountId,
        held: &HeldLease,
        now_ms: u64,
        orders: &[&SyncRequest],
    ) -> impl Future<Output = Result<HandOff, StoreFailure>> + Send;

    /// Records the journal. Fails with `StoreFailure::LeaseLost` if the lease is no longer
    /// ours.
    fn record_intent(
        &self,
        discount: DiscountId,
        lease: &Lease,
        journal: &Journal,
    ) -> impl Future<Output = Result<(), StoreFailure>> + Send;

    /// Ends a counting step: marks `orders` synced with `action` and clears the journal,
    /// in one transaction where the store allows it. Releasing the lease also records how
    /// long the step took since `lease.taken_at_ms`, for waiters to expect the next one,
    /// unless waiters handed orders over meanwhile (`Committed::HandedOver`).
    fn commit(
        &self,
        discount: DiscountId,
        lease: &Lease,
        orders: &[OrderId],
        action: SyncAction,
        at: SystemTime,
        lease_after: LeaseAfter,
    ) -> impl Future<Output = Result<Committed, StoreFailure>> + Send;

    /// Gives the lease up and leaves the journal, if any, for the next holder (or the
    /// scheduled reconciliation) to settle: the safe release whenever a journal's write
    /// may still be owed to Polar.
    fn release_keeping_journal(
        &self,
        discount: DiscountId,
        lease: &Lease,
    ) -> impl Future<Output = Result<(), StoreFailure>> + Send;

    /// Gives the lease up and deletes the journal without marking its orders. Only for a
    /// journal this lease wrote itself and whose write Polar refused: its orders are
    /// still to be counted, by their messages' next deliveries.
    fn release_dropping_journal(
        &self,
        discount: DiscountId,
        lease: &Lease,
    ) -> impl Future<Output = Result<(), StoreFailure>> + Send;
}

/// A discount's journal as it stands, with the lease that guards it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingJournal {
    pub journal: Journal,
    /// Epoch milliseconds until which its lease holder may still be working on it; `None`
    /// when no lease is held.
    pub lease_expires_at_ms: Option<u64>,
}

/// Where the scheduled reconciliation finds journals whose owner may be gone. Reads only.
pub trait JournalIndex: Send + Sync {
    /// Discounts whose coordination record holds a journal now.
    fn journaled_discounts(
        &self,
    ) -> impl Future<Output = Result<Vec<DiscountId>, StoreFailure>> + Send;

    /// The discount's journal, if it holds one now (a strongly consistent read), without
    /// taking its lease.
    fn pending_journal(
        &self,
        discount: DiscountId,
    ) -> impl Future<Output = Result<Option<PendingJournal>, StoreFailure>> + Send;
}

/// Why a store call failed, in the use case's terms. Sources keep the adapter's error.
#[derive(Debug, Error)]
pub enum StoreFailure {
    /// Throttling, a server error, a timeout or no connection: likely to clear up.
    #[error("the database is unavailable")]
    Transient(#[source] BoxError),
    /// A concurrent transaction touched the same items: trying again resolves it.
    #[error("a concurrent write conflicted")]
    Conflict(#[source] BoxError),
    /// The lease expired and another invocation took it: this one must stop writing.
    #[error("the lease on discount {0} was taken over by another invocation")]
    LeaseLost(DiscountId),
    /// Needs an operator: the journal cannot be resolved, so the discount stays locked.
    #[error("the journal on discount {0} in SYNC_TABLE cannot be read")]
    CorruptJournal(DiscountId),
    /// Missing table, access denied, invalid request: the deployment needs fixing.
    #[error("the tables cannot be used as configured")]
    Misconfigured(#[source] BoxError),
}

impl StoreFailure {
    pub fn class(&self) -> FailureClass {
        match self {
            Self::Transient(_) | Self::Conflict(_) | Self::LeaseLost(_) => FailureClass::Transient,
            Self::CorruptJournal(_) | Self::Misconfigured(_) => FailureClass::Configuration,
        }
    }

    /// Worth another attempt within this invocation.
    pub fn retry_hint(&self) -> Option<RetryHint> {
        match self {
            Self::Transient(_) | Self::Conflict(_) => Some(RetryHint { not_before: None }),
            Self::LeaseLost(_) | Self::CorruptJournal(_) | Self::Misconfigured(_) => None,
        }
    }
}
