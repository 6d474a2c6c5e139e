//! The use case: reflect redemptions on Polar exactly once. All messages of one discount
//! are handled under that discount's lease, counted together in one Polar write, and the
//! write is journaled first so that a crash or a lost answer can be resolved later.
//!
//! The protocol, one step per file: `lease` (take it, wait for it, give it up), `claim`
//! (tag each order for this lease), `validate` (message against order, order against
//! Polar), `count` (one read and one coalesced write per step), `write` (journal, the
//! write and its ambiguous outcomes, commit), `recover` (finish what a previous holder
//! journaled), and `reconcile` (the scheduled run that settles journals whose owner is
//! gone). `shadow` is the read-only twin for `SHADOW_MODE`: it plans and logs what the
//! protocol would write. `guarded_polar` puts the rate budget and retries around the Polar port;
//! `batch` turns an SQS batch into discount groups and failures into redeliveries.

mod batch;
mod claim;
mod count;
mod disposal;
mod error;
mod guarded_polar;
mod lease;
mod rate;
mod reconcile;
mod recover;
pub(crate) mod redelivery;
mod retry;
pub mod shadow;
mod validate;
mod write;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use batch::{process_batch, BatchError, BatchSettings, START_MARGIN};
pub use error::SyncError;
pub use rate::{
    RateLimiter, RateShare, RateShares, POLAR_LIMIT_PER_MINUTE, POLAR_SANDBOX_LIMIT_PER_MINUTE,
};
pub use reconcile::Reconciliation;
pub use redelivery::{Disposition, RedeliveryPolicy, MAX_RECEIVE_COUNT, OUTAGE_BUDGET};
pub use retry::RetryPolicy;
pub use shadow::{Shadow, ShadowReconciliation};

use crate::deadline::{epoch_ms, Deadline};
use crate::domain::{DiscountId, OrderId, SyncAction, SyncRequest};
use crate::ports::{
    ClaimOutcome, Coordination, Discounts, HandOff, HeldLease, Lease, OrderLedger, QuickStart,
    StoreFailure, MAX_HANDED_OVER,
};
use crate::telemetry::{Count, Metrics};
use claim::{decide_from_claims, distinct, Claims};
use count::Counted;
pub use guarded_polar::TurnedAway;
use guarded_polar::{GuardedPolar, StepRoom};
pub use lease::LEASE_GRACE;
use lease::{holder_at_work, lease_until, LeaseRefused, LocalTurns, Waiting, LONGEST_TURN};
use tracing::warn;

/// One DynamoDB transaction marks the orders and clears the journal: at most 100 items.
pub const MAX_ORDERS_PER_WRITE: usize = 99;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synced {
    /// Counted on Polar by this invocation.
    Applied(SyncAction),
    /// The order had been synced before: nothing to do.
    AlreadySynced,
}

/// One message's result; group-wide failures are shared by every message of the group.
pub type Outcome = Result<Synced, Arc<SyncError>>;

/// Step boundaries, reported to an optional checkpoint so tests can crash the sync there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    LeaseTaken,
    ClaimTaken,
    JournalWritten,
    PolarWritten,
    OrdersMarked,
}

pub type Checkpoint = Arc<dyn Fn(Step) + Send + Sync>;

/// What the one-write start of a step came to.
enum QuickSync {
    /// The step ran: every message's outcome, in order, and the orders waiters handed over
    /// at its commit, for which the lease is still held.
    Done(Vec<Outcome>, Vec<SyncRequest>),
    /// Another invocation holds the lease: nothing was written.
    Held(HeldLease),
    /// Nothing was written; the step starts over one request at a time.
    Declined,
    /// The lease and the claims were taken, then the lease given back: the budget has no
    /// room for the step's Polar requests for this long.
    AwaitBudget(Duration),
}

/// A step on a contended discount that would hold its lease longer than this waiting for
/// its Polar budget gives the lease back and waits without it: at a container's sustained
/// share a step's two slots are half a second or more apart, and other containers whose
/// budgets have room would wait all that time. It costs the step two DynamoDB requests
/// (the release, and the start again), so a discount no other invocation was seen to hold
/// lately keeps its lease through the wait.
const LONGEST_HOLD_FOR_BUDGET: Duration = Duration::from_millis(100);

/// A waiter with at most this many messages for a held discount hands their orders to the
/// holder and gives the messages back, to return when the holder's next step has counted
/// them: a few waiters' orders then go in one step, where each would take a step of its
/// own. A larger batch is a step's worth already: merging it only makes it wait for the
/// others, so it waits for the lease instead.
const HAND_OFF_AT_MOST: usize = MAX_HANDED_OVER / 4;

/// What the write that takes the lease with the claims came to.
enum Start<'a> {
    /// Each distinct request's claim; the lease is taken if any order was claimed.
    Claimed(Claims<'a>),
    Held(HeldLease),
    /// Nothing was written: the step goes one request at a time.
    Declined,
}

#[derive(Debug, Clone, Copy)]
enum Claiming {
    AllAtOnce,
    InOrder,
}

/// Every request fails with `error`; those whose order is in `journaled`, a journal whose
/// write may have landed, say so.
fn failed_all(requests: &[SyncRequest], error: SyncError, journaled: &[OrderId]) -> Vec<Outcome> {
    let error = Arc::new(error);
    requests
        .iter()
        .map(|request| {
            Err(may_have_landed(
                &error,
                journaled.contains(&request.order_id),
            ))
        })
        .collect()
}

fn may_have_landed(error: &Arc<SyncError>, in_pending_journal: bool) -> Arc<SyncError> {
    if in_pending_journal {
        Arc::new(SyncError::WriteMayHaveLanded(error.clone()))
    } else {
        error.clone()
    }
}

/// What a failure under the lease leaves behind, and so how the lease is given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Left {
    /// Nothing was written to Polar, and any journal is this lease's own, for a write Polar
    /// refused: the journal goes with the lease, and the orders' messages try again.
    Nothing,
    /// An inherited journal that no read-back proved applied or impossible: the lease is
    /// given up and the journal kept, for the next holder or the reconciliation to settle.
    Journal,
    /// A journaled write of this invocation may still land: the lease and the journal are
    /// left to expire, so that nobody reads the discount back before the write is over.
    WriteInFlight,
}

/// A failure under the lease, with what it leaves behind.
struct Failure {
    error: SyncError,
    left: Left,
}

impl Failure {
    /// Nothing was written, or what was written is known: the lease may be given up.
    fn nothing_pending(error: impl Into<SyncError>) -> Self {
        Self {
            error: error.into(),
            left: Left::Nothing,
        }
    }

    /// A journaled write may have happened: the journal must outlive this invocation.
    fn write_pending(error: impl Into<SyncError>) -> Self {
        Self {
            error: error.into(),
            left: Left::WriteInFlight,
        }
    }

    /// The failure of work on an inherited journal: short of a proof, the journal stays.
    fn keeping_journal(self) -> Self {
        let left = match self.left {
            Left::Nothing => Left::Journal,
            left => left,
        };
        Self { left, ..self }
    }

    /// Whether the orders of the journal may still be counted, or marked, by someone else.
    fn journal_outlives(&self) -> bool {
        self.left != Left::Nothing
    }
}

pub struct Syncer<S, D> {
    store: S,
    polar: GuardedPolar<D>,
    retry: RetryPolicy,
    checkpoint: Option<Checkpoint>,
    metrics: Arc<Metrics>,
    turns: LocalTurns,
}

impl<S: OrderLedger + Coordination, D: Discounts> Syncer<S, D> {
    pub fn new(store: S, discounts: D, retry: RetryPolicy) -> Self {
        let metrics = Arc::new(Metrics::default());
        Self {
            store,
            polar: GuardedPolar::new(discounts, retry, metrics.clone()),
            retry,
            checkpoint: None,
            metrics,
            turns: LocalTurns::default(),
        }
    }

    /// What the invocations did, for their metrics and summaries.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Spends at most this container's share of Polar's rate limit.
    pub fn with_rate_limiter(mut self, rate: RateLimiter) -> Self {
        self.polar = self.polar.with_rate_limiter(rate);
        self
    }

    /// The scheduled reconciliation spends this share instead.
    pub fn with_reconciliation_rate_limiter(mut self, rate: RateLimiter) -> Self {
        self.polar = self.polar.with_reconciliation_rate_limiter(rate);
        self
    }

    /// Calls `checkpoint` at every step boundary (tests use it to simulate crashes).
    pub fn with_checkpoint(mut self, checkpoint: Checkpoint) -> Self {
        self.checkpoint = Some(checkpoint);
        self
    }

    #[cfg(test)]
    pub(crate) fn store(&self) -> &S {
        &self.store
    }

    #[cfg(test)]
    pub(crate) fn discounts(&self) -> &D {
        self.polar.port()
    }

    fn reached(&self, step: Step) {
        if let Some(checkpoint) = &self.checkpoint {
            checkpoint(step);
        }
    }

    /// [`Self::sync_discount_of_batch`] for a discount alone in its batch.
    #[cfg(test)]
    pub(crate) async fn sync_discount(
        &self,
        discount: DiscountId,
        requests: &[SyncRequest],
        deadline: Deadline,
    ) -> Vec<Outcome> {
        self.sync_discount_of_batch(discount, requests, deadline, &TurnedAway::default())
            .await
    }

    /// Syncs every message of one discount of a batch; the outcomes are in the order of
    /// `requests`. `turned_away` counts the batch's steps the rate budget turned away, to
    /// line them up for their return.
    pub async fn sync_discount_of_batch(
        &self,
        discount: DiscountId,
        requests: &[SyncRequest],
        deadline: Deadline,
        turned_away: &TurnedAway,
    ) -> Vec<Outcome> {
        self.sync_discount_claiming(
            discount,
            requests,
            deadline,
            Claiming::AllAtOnce,
            turned_away,
        )
        .await
    }

    /// Syncs the messages of one discount in order, up to and including the first whose
    /// claim fails it (a FIFO group must not count a later message first). Returns the
    /// outcomes of that prefix of `requests`.
    pub async fn sync_discount_in_order(
        &self,
        discount: DiscountId,
        requests: &[SyncRequest],
        deadline: Deadline,
    ) -> Vec<Outcome> {
        self.sync_discount_claiming(
            discount,
            requests,
            deadline,
            Claiming::InOrder,
            &TurnedAway::default(),
        )
        .await
    }

    async fn sync_discount_claiming(
        &self,
        discount: DiscountId,
        requests: &[SyncRequest],
        deadline: Deadline,
        claiming: Claiming,
        turned_away: &TurnedAway,
    ) -> Vec<Outcome> {
        let _turn = self.turns.take(discount).await;
        if deadline.remaining() < START_MARGIN {
            return failed_all(requests, SyncError::DeadlineTooClose, &[]);
        }
        let mut room = match self.polar.check_room_for_step(deadline, turned_away) {
            Ok(room) => Some(room),
            Err(over_budget) => return failed_all(requests, over_budget.into(), &[]),
        };
        let mut lease = lease_until(deadline);
        let mut waiting = Waiting::default();
        if let Claiming::AllAtOnce = claiming {
            let mut may_await_budget = true;
            loop {
                match self
                    .sync_quickly(
                        discount,
                        &lease,
                        requests,
                        deadline,
                        &mut room,
                        may_await_budget,
                    )
                    .await
                {
                    QuickSync::Done(outcomes, handed_over) => {
                        self.take_over(discount, &lease, handed_over, deadline, turned_away)
                            .await;
                        return outcomes;
                    }
                    QuickSync::Held(held) => {
                        self.refused_by_holder(discount);
                        let give_back = |refused: LeaseRefused| {
                            failed_all(requests, refused.error, &refused.journaled)
                        };
                        if requests.len() <= HAND_OFF_AT_MOST
                            && holder_at_work(&held, epoch_ms(SystemTime::now()))
                        {
                            match self.hand_off(discount, &held, requests).await {
                                Some(HandOff::Handed) => {
                                    return give_back(LeaseRefused::handed_over(discount, held))
                                }
                                // Released meanwhile: start again at once.
                                Some(HandOff::NotHeld) => continue,
                                None => {}
                            }
                        }
                        if !waiting.until_released(&held, deadline).await {
                            return give_back(LeaseRefused::held(discount, held));
                        }
                    }
                    QuickSync::Declined => break,
                    QuickSync::AwaitBudget(ready_in) => {
                        may_await_budget = false;
                        tokio::time::sleep(ready_in).await;
                        lease = lease_until(deadline);
                    }
                }
            }
        }
        let pending = match self.acquire(discount, &lease, deadline, &mut waiting).await {
            Ok(pending) => pending,
            Err(refused) => return failed_all(requests, refused.error, &refused.journaled),
        };
        self.reached(Step::LeaseTaken);

        if let Some(journal) = pending {
            let journaled = journal.orders.clone();
            if let Err(failure) = self.recover(discount, &lease, journal, deadline).await {
                self.give_up_after(discount, &lease, failure.left).await;
                return failed_all(requests, failure.error, &journaled);
            }
            self.metrics.count(Count::JournalsRecovered, 1);
        }
        let (requests, decided, to_count) = match claiming {
            Claiming::AllAtOnce => {
                let (decided, to_count) = self.claim_all(&lease, requests, deadline).await;
                (requests, decided, to_count)
            }
            Claiming::InOrder => self.claim_in_order(&lease, requests, deadline).await,
        };
        let counted = self
            .count_all(discount, &lease, &to_count, deadline, room)
            .await;
        self.take_over(discount, &lease, counted.handed_over, deadline, turned_away)
            .await;
        decided
            .into_iter()
            .zip(requests)
            .map(|(outcome, request)| {
                outcome.unwrap_or_else(|| counted.outcomes[&request.order_id].clone())
            })
            .collect()
    }

    /// The common case (a free lease, nothing pending, each order named by one message and
    /// claimable as the message spells it) with the lease and the claims in one write.
    /// Orders that write refuses (synced already by an earlier copy, missing, another
    /// discount's) are decided by what it found, and the others start again without them:
    /// two requests instead of one per order. `Held` when another invocation holds the
    /// lease (nothing was written, and there is nothing more to ask); `Declined` when that
    /// write was declined for another reason or failed: nothing was written, and the caller
    /// takes the lease and claims one by one, which tells why.
    async fn sync_quickly(
        &self,
        discount: DiscountId,
        lease: &Lease,
        requests: &[SyncRequest],
        deadline: Deadline,
        room: &mut Option<StepRoom<'_>>,
        may_await_budget: bool,
    ) -> QuickSync {
        let distinct = distinct(requests);
        let orders: HashSet<&OrderId> = distinct.iter().map(|r| &r.order_id).collect();
        if orders.len() < distinct.len() || distinct.len() > MAX_ORDERS_PER_WRITE {
            return QuickSync::Declined;
        }
        let claims = match self.start_with_claims(discount, lease, &distinct).await {
            Start::Claimed(claims) => claims,
            Start::Held(held) => return QuickSync::Held(held),
            Start::Declined => return QuickSync::Declined,
        };
        let (decided, to_count) = decide_from_claims(requests, &claims);
        // Orders to count were claimed, so the lease was taken.
        if !to_count.is_empty() && may_await_budget && self.turns.contended(discount) {
            let ready_in = self.polar.step_ready_in();
            // Only the claims were written under the lease, and the next start makes them
            // again (refused for any order another holder counted meanwhile).
            if ready_in > LONGEST_HOLD_FOR_BUDGET
                && deadline.remaining() > ready_in + START_MARGIN
                && self
                    .store
                    .release_keeping_journal(discount, lease)
                    .await
                    .is_ok()
            {
                return QuickSync::AwaitBudget(ready_in);
            }
        }
        let counted = if to_count.is_empty() {
            Counted {
                outcomes: HashMap::new(),
                handed_over: Vec::new(),
            }
        } else {
            self.count_all(discount, lease, &to_count, deadline, room.take())
                .await
        };
        QuickSync::Done(
            decided
                .into_iter()
                .zip(requests)
                .map(|(outcome, request)| {
                    outcome.unwrap_or_else(|| counted.outcomes[&request.order_id].clone())
                })
                .collect(),
            counted.handed_over,
        )
    }

    /// Takes the lease (free, or this step's own) and claims `distinct` in one write, again
    /// without the claims that write refused, until none is refused. Orders to count were
    /// claimed only if the lease was taken.
    async fn start_with_claims<'a>(
        &self,
        discount: DiscountId,
        lease: &Lease,
        distinct: &[&'a SyncRequest],
    ) -> Start<'a> {
        let mut claims: Claims = HashMap::new();
        loop {
            let to_claim: Vec<&SyncRequest> = distinct
                .iter()
                .copied()
                .filter(|request| !claims.contains_key(request))
                .collect();
            if to_claim.is_empty() {
                return Start::Claimed(claims);
            }
            let now_ms = epoch_ms(SystemTime::now());
            let started = self
                .store
                .acquire_with_claims(discount, lease, now_ms, &to_claim)
                .await;
            match started {
                Ok(QuickStart::Started) => {
                    self.reached(Step::LeaseTaken);
                    self.reached(Step::ClaimTaken);
                    claims.extend(to_claim.into_iter().map(|r| (r, Ok(ClaimOutcome::Claimed))));
                }
                // Decided by the orders the refusal found: the others start without them.
                Ok(QuickStart::ClaimsRefused(refused)) => claims.extend(
                    refused
                        .into_iter()
                        .map(|(index, outcome)| (to_claim[index], Ok(outcome))),
                ),
                // A holder counted these orders already (or they cannot be counted): the
                // step is decided without the lease.
                Ok(QuickStart::Held { refused, .. }) if refused.len() == to_claim.len() => claims
                    .extend(
                        refused
                            .into_iter()
                            .map(|(index, outcome)| (to_claim[index], Ok(outcome))),
                    ),
                Ok(QuickStart::Held { held, .. }) => return Start::Held(held),
                Ok(QuickStart::Declined) | Err(_) => return Start::Declined,
            }
        }
    }

    /// Leaves this waiter's orders to the lease's holder; `None` if the request failed (the
    /// waiter then waits for the lease, as without a hand-off).
    async fn hand_off(
        &self,
        discount: DiscountId,
        held: &HeldLease,
        requests: &[SyncRequest],
    ) -> Option<HandOff> {
        let distinct = distinct(requests);
        self.metrics.count(Count::HandOffRequests, 1);
        let now_ms = epoch_ms(SystemTime::now());
        self.store
            .hand_off(discount, held, now_ms, &distinct)
            .await
            .inspect_err(|err| {
                warn!(error = %crate::error_chain(err), discountId = %discount,
                    "could not hand the orders over; waiting for the lease instead");
            })
            .ok()
    }

    /// Whether the holder of `lease` may keep it for one more step, for orders handed over:
    /// with the time, its Polar budget within `LONGEST_HOLD_FOR_BUDGET`, and its turn not
    /// past `LONGEST_TURN`.
    fn may_take_over(&self, lease: &Lease, deadline: Deadline) -> bool {
        let turn_ms = epoch_ms(SystemTime::now()).saturating_sub(lease.turn_began_at_ms);
        deadline.remaining() >= START_MARGIN
            && Duration::from_millis(turn_ms) < LONGEST_TURN
            && self.polar.step_ready_in() <= LONGEST_HOLD_FOR_BUDGET
    }

    /// Counts, step by step under the lease still held, the orders waiters handed over,
    /// then gives the lease up. Their outcomes are not this invocation's to report: each
    /// waiter sees its orders synced, or counts them itself, from its own messages. Without
    /// room for a step (time, Polar budget, or a claim write that fails), the lease is given
    /// up and the orders are left to their messages.
    async fn take_over(
        &self,
        discount: DiscountId,
        lease: &Lease,
        mut handed_over: Vec<SyncRequest>,
        deadline: Deadline,
        turned_away: &TurnedAway,
    ) {
        let mut lease = lease.clone();
        while !handed_over.is_empty() {
            let room = (deadline.remaining() >= START_MARGIN)
                .then(|| self.polar.check_room_for_step(deadline, turned_away).ok())
                .flatten();
            let Some(room) = room else { break };
            lease = lease.for_next_step();
            // One claim per order: an order handed over in two spellings is claimed once.
            let mut orders = HashSet::new();
            handed_over.retain(|request| orders.insert(request.order_id.clone()));
            let distinct: Vec<&SyncRequest> = handed_over.iter().collect();
            let Start::Claimed(claims) = self.start_with_claims(discount, &lease, &distinct).await
            else {
                break;
            };
            let (_, to_count) = decide_from_claims(&handed_over, &claims);
            if to_count.is_empty() {
                break;
            }
            let counted = self
                .count_all(discount, &lease, &to_count, deadline, Some(room))
                .await;
            for outcome in counted.outcomes.values() {
                if let Ok(Synced::Applied(action)) = outcome {
                    self.metrics.count(disposal::action_count(*action), 1);
                }
            }
            handed_over = counted.handed_over;
        }
        if !handed_over.is_empty() {
            self.give_up_after(discount, &lease, Left::Nothing).await;
        }
    }

    /// A store call, retried while the failure is worth retrying and time allows.
    async fn with_store_retry<T, F, Fut>(
        &self,
        deadline: Deadline,
        call: F,
    ) -> Result<T, StoreFailure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreFailure>>,
    {
        self.retry
            .run(deadline, StoreFailure::retry_hint, call)
            .await
    }
}
