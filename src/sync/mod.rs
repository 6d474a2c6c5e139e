//! The use case: reflect redemptions on Polar exactly once. All messages of one discount
//! are handled under that discount's lease, counted together in one Polar write, and the
//! write is journaled first so that a crash or a lost answer can be resolved later.

mod batch;
mod error;
mod rate;
mod retry;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::{info, warn};
use uuid::Uuid;

pub use batch::{process_batch, BatchSettings, START_MARGIN};
pub use error::SyncError;
pub use rate::RateLimiter;
pub use retry::RetryPolicy;

use crate::adapters::polar::{Discount, PolarError};
use crate::adapters::StoreError;
use crate::deadline::{epoch_ms, Deadline};
use crate::domain::{
    DiscountId, Intent, Journal, OrderId, Plan, Resolution, SyncAction, SyncRequest,
};
use crate::failure::RetryHint;
use crate::ports::{
    Acquisition, ClaimOutcome, Deletion, DiscountLocks, Discounts, Lease, OrderLedger, OrderRecord,
};

/// How long a lease outlives its invocation's deadline. Longer than the Polar request
/// timeout, so a write still in flight when an invocation dies has landed (or failed)
/// before anyone else may read the discount.
pub const LEASE_GRACE: Duration = Duration::from_secs(10);
/// One DynamoDB transaction marks the orders and clears the journal: at most 100 items.
pub const MAX_ORDERS_PER_WRITE: usize = 99;
/// How long to wait for a lease held elsewhere before sending the messages back.
const LEASE_WAIT: Duration = Duration::from_secs(3);

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

/// A failure under the lease. While a journaled write may have happened, the lease and
/// the journal are left to expire so that the next holder resolves them by reading back.
struct Failure {
    error: SyncError,
    write_pending: bool,
}

impl Failure {
    fn settled(error: impl Into<SyncError>) -> Self {
        Self {
            error: error.into(),
            write_pending: false,
        }
    }

    fn pending(error: impl Into<SyncError>) -> Self {
        Self {
            error: error.into(),
            write_pending: true,
        }
    }
}

/// A write attempt that failed, by whether it may have happened.
enum WriteError {
    NotApplied(PolarError),
    Unknown(PolarError),
}

impl WriteError {
    fn retry_hint(&self) -> Option<RetryHint> {
        match self {
            Self::NotApplied(err) => err.retry_hint(),
            Self::Unknown(_) => None,
        }
    }
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotApplied(err) => write!(f, "{err} (not applied)"),
            Self::Unknown(err) => write!(f, "{err} (outcome unknown)"),
        }
    }
}

pub struct Syncer<S, D> {
    store: S,
    discounts: D,
    retry: RetryPolicy,
    rate: Option<RateLimiter>,
    checkpoint: Option<Checkpoint>,
}

impl<S: OrderLedger + DiscountLocks, D: Discounts> Syncer<S, D> {
    pub fn new(store: S, discounts: D, retry: RetryPolicy) -> Self {
        Self {
            store,
            discounts,
            retry,
            rate: None,
            checkpoint: None,
        }
    }

    /// Spends at most this container's share of Polar's rate limit.
    pub fn with_rate_limiter(mut self, rate: RateLimiter) -> Self {
        self.rate = Some(rate);
        self
    }

    /// Calls `checkpoint` at every step boundary (tests use it to simulate crashes).
    pub fn with_checkpoint(mut self, checkpoint: Checkpoint) -> Self {
        self.checkpoint = Some(checkpoint);
        self
    }

    fn reached(&self, step: Step) {
        if let Some(checkpoint) = &self.checkpoint {
            checkpoint(step);
        }
    }

    /// Syncs every message of one discount; the outcomes are in the order of `requests`.
    pub async fn sync_discount(
        &self,
        discount: DiscountId,
        requests: &[SyncRequest],
        deadline: Deadline,
    ) -> Vec<Outcome> {
        let lease = Lease {
            token: Uuid::new_v4(),
            expires_at_ms: deadline.epoch_ms() + LEASE_GRACE.as_millis() as u64,
        };
        let pending = match self.acquire(discount, &lease, deadline).await {
            Ok(pending) => pending,
            Err(err) => return vec![Err(Arc::new(err)); requests.len()],
        };
        self.reached(Step::LeaseTaken);

        let result = self
            .sync_under_lease(discount, &lease, pending, requests, deadline)
            .await;
        match result {
            Ok(outcomes) => outcomes,
            Err(failure) => {
                if !failure.write_pending {
                    self.release(discount, &lease).await;
                }
                vec![Err(Arc::new(failure.error)); requests.len()]
            }
        }
    }

    async fn sync_under_lease(
        &self,
        discount: DiscountId,
        lease: &Lease,
        pending: Option<Journal>,
        requests: &[SyncRequest],
        deadline: Deadline,
    ) -> Result<Vec<Outcome>, Failure> {
        if let Some(journal) = pending {
            self.recover(discount, lease, journal, deadline).await?;
        }

        let mut claims: HashMap<&OrderId, Result<ClaimOutcome, Arc<SyncError>>> = HashMap::new();
        for request in requests {
            if !claims.contains_key(&request.order_id) {
                let claim = self
                    .store(deadline, || self.store.claim(&request.order_id, lease))
                    .await
                    .map_err(|err| Arc::new(err.into()));
                self.reached(Step::ClaimTaken);
                claims.insert(&request.order_id, claim);
            }
        }
        let (settled, to_count) = settle_claims(requests, &claims);
        let counted = self.count_all(discount, lease, &to_count, deadline).await;

        Ok(settled
            .into_iter()
            .zip(requests)
            .map(|(outcome, request)| outcome.unwrap_or_else(|| counted[&request.order_id].clone()))
            .collect())
    }

    /// Counts the claimed orders, up to `MAX_ORDERS_PER_WRITE` per Polar write, then gives
    /// the lease up unless a write may be pending. A failed step fails only the orders it
    /// was counting (and those after it).
    async fn count_all(
        &self,
        discount: DiscountId,
        lease: &Lease,
        to_count: &[&SyncRequest],
        deadline: Deadline,
    ) -> HashMap<OrderId, Outcome> {
        let mut counted: HashMap<OrderId, Outcome> = HashMap::new();
        let chunks: Vec<_> = to_count.chunks(MAX_ORDERS_PER_WRITE).collect();
        let mut released = false;
        let mut write_pending = false;
        let mut stopped: Option<Arc<SyncError>> = None;
        for (index, chunk) in chunks.iter().enumerate() {
            let last = index + 1 == chunks.len();
            let skipped = stopped.clone().or_else(|| {
                (deadline.remaining() < START_MARGIN).then(|| Arc::new(SyncError::DeadlineTooClose))
            });
            let error = match skipped {
                Some(error) => error,
                None => match self
                    .count(discount, lease, chunk, deadline, last, &mut counted)
                    .await
                {
                    Ok(released_now) => {
                        released |= released_now;
                        continue;
                    }
                    Err(failure) => {
                        write_pending = failure.write_pending;
                        let error = Arc::new(failure.error);
                        stopped = Some(error.clone());
                        error
                    }
                },
            };
            for request in chunk.iter() {
                counted
                    .entry(request.order_id.clone())
                    .or_insert_with(|| Err(error.clone()));
            }
        }
        if !released && !write_pending {
            self.release(discount, lease).await;
        }
        counted
    }

    /// Counts claimed orders in one Polar write: one GET, then at most one PATCH or DELETE.
    /// Records each order's outcome in `settled`; true when the lease was released.
    async fn count(
        &self,
        discount: DiscountId,
        lease: &Lease,
        requests: &[&SyncRequest],
        deadline: Deadline,
        release: bool,
        settled: &mut HashMap<OrderId, Outcome>,
    ) -> Result<bool, Failure> {
        let current = self
            .polar(deadline, || self.discounts.get(discount))
            .await
            .map_err(Failure::settled)?;

        let mut orders = Vec::new();
        for request in requests {
            match code_mismatch(request, current.as_ref()) {
                Some(err) => {
                    settled.insert(request.order_id.clone(), Err(Arc::new(err)));
                }
                None => orders.push(request.order_id.clone()),
            }
        }
        if orders.is_empty() {
            return Ok(false);
        }
        let action = self
            .apply(discount, lease, orders.clone(), current, deadline, release)
            .await?;
        settled.extend(
            orders
                .into_iter()
                .map(|id| (id, Ok(Synced::Applied(action)))),
        );
        Ok(release)
    }

    /// Plans from the discount as just read, journals the write, makes it, and marks the orders.
    async fn apply(
        &self,
        discount: DiscountId,
        lease: &Lease,
        orders: Vec<OrderId>,
        current: Option<Discount>,
        deadline: Deadline,
        release: bool,
    ) -> Result<SyncAction, Failure> {
        let Some(current) = current else {
            self.complete(
                discount,
                lease,
                &orders,
                SyncAction::AlreadyDeleted,
                release,
                deadline,
            )
            .await?;
            return Ok(SyncAction::AlreadyDeleted);
        };
        let redemptions = u32::try_from(orders.len()).unwrap_or(u32::MAX);
        let plan = Plan::for_discount(current.max_redemptions, redemptions);
        let (Some(read), Some(intent)) = (current.max_redemptions, plan.intent()) else {
            self.complete(
                discount,
                lease,
                &orders,
                SyncAction::SkippedUnlimited,
                release,
                deadline,
            )
            .await?;
            return Ok(SyncAction::SkippedUnlimited);
        };
        if let Plan::Delete { oversold_by } = plan {
            if oversold_by > 0 {
                warn!(event = "oversold", discount_id = %discount, oversold_by, orders = ?orders,
                    "discount was used more often than its limit before these redemptions were synced");
            }
        }

        let journal = Journal {
            orders,
            read,
            intent,
        };
        self.store(deadline, || {
            self.store.record_intent(discount, lease, &journal)
        })
        .await
        .map_err(Failure::settled)?;
        self.reached(Step::JournalWritten);

        let action = self.write(discount, &journal, deadline).await?;
        self.reached(Step::PolarWritten);
        self.complete(discount, lease, &journal.orders, action, release, deadline)
            .await?;
        Ok(action)
    }

    /// Makes the journaled write. An answer that never came, or a 5xx, may hide a write
    /// that happened; the discount is read back to tell, never blindly written again.
    async fn write(
        &self,
        discount: DiscountId,
        journal: &Journal,
        deadline: Deadline,
    ) -> Result<SyncAction, Failure> {
        let ambiguous = AtomicBool::new(false);
        let result = self
            .retry
            .run(deadline, WriteError::retry_hint, || async {
                self.admit(deadline).await.map_err(WriteError::NotApplied)?;
                let answer = match journal.intent {
                    Intent::SetMaxRedemptions(target) => self
                        .discounts
                        .set_max_redemptions(discount, target)
                        .await
                        .map(|updated| updated.is_some()),
                    Intent::Delete => self
                        .discounts
                        .delete(discount)
                        .await
                        .map(|deletion| deletion == Deletion::Deleted),
                };
                match answer {
                    Ok(true) => Ok(journal.intent.action()),
                    // Gone already: our earlier, unanswered DELETE landed, or someone else's.
                    Ok(false)
                        if journal.intent == Intent::Delete
                            && ambiguous.load(Ordering::Relaxed) =>
                    {
                        Ok(SyncAction::Deleted)
                    }
                    Ok(false) => Ok(SyncAction::AlreadyDeleted),
                    Err(err) if err.outcome_unknown() || err.is_server_error() => {
                        ambiguous.store(true, Ordering::Relaxed);
                        self.read_back(discount, journal, err, deadline).await
                    }
                    Err(err) => Err(WriteError::NotApplied(err)),
                }
            })
            .await;
        result.map_err(|err| match err {
            // An earlier unanswered attempt may still land: leave it to the journal.
            WriteError::NotApplied(err) if !ambiguous.load(Ordering::Relaxed) => {
                Failure::settled(err)
            }
            WriteError::NotApplied(err) | WriteError::Unknown(err) => Failure::pending(err),
        })
    }

    /// Tells from Polar's state whether an unanswered write happened. A request our client
    /// gave up on may still be applied a moment later, so the read waits that moment first:
    /// reading too early would see the old value, and the late write could then undo the
    /// next holder's. Without time for the wait and a read, the journal is left to resolve.
    async fn read_back(
        &self,
        discount: DiscountId,
        journal: &Journal,
        write_error: PolarError,
        deadline: Deadline,
    ) -> Result<SyncAction, WriteError> {
        let settle = self.retry.reserve;
        if deadline.remaining() < settle + self.retry.reserve {
            return Err(WriteError::Unknown(write_error));
        }
        warn!(error = %write_error, discount_id = %discount, wait = ?settle,
            "write outcome unknown; reading the discount back");
        tokio::time::sleep(settle).await;
        let Ok(current) = self.polar(deadline, || self.discounts.get(discount)).await else {
            return Err(WriteError::Unknown(write_error));
        };
        match self.resolution(discount, journal, current.as_ref()) {
            Some(action) => Ok(action),
            None => Err(WriteError::NotApplied(write_error)),
        }
    }

    /// `None` when the journaled write did not happen.
    fn resolution(
        &self,
        discount: DiscountId,
        journal: &Journal,
        current: Option<&Discount>,
    ) -> Option<SyncAction> {
        let current_max = current.map(|d| d.max_redemptions);
        match journal.resolve(current_max) {
            Resolution::Applied(action) => Some(action),
            Resolution::NotApplied => None,
            Resolution::ChangedElsewhere(action) => {
                warn!(event = "external_change", discount_id = %discount, read = journal.read,
                    intent = ?journal.intent, current = ?current_max, orders = ?journal.orders,
                    "discount was changed outside this function during a sync; keeping its value");
                Some(action)
            }
        }
    }

    /// Finishes what a previous lease holder journaled but did not complete.
    async fn recover(
        &self,
        discount: DiscountId,
        lease: &Lease,
        journal: Journal,
        deadline: Deadline,
    ) -> Result<(), Failure> {
        info!(discount_id = %discount, orders = ?journal.orders, intent = ?journal.intent,
            "resolving a write journaled by an invocation that did not finish");
        let current = self
            .polar(deadline, || self.discounts.get(discount))
            .await
            .map_err(Failure::pending)?;
        match self.resolution(discount, &journal, current.as_ref()) {
            Some(action) => {
                self.complete(discount, lease, &journal.orders, action, false, deadline)
                    .await
            }
            None => self
                .apply(discount, lease, journal.orders, current, deadline, false)
                .await
                .map(drop),
        }
    }

    async fn complete(
        &self,
        discount: DiscountId,
        lease: &Lease,
        orders: &[OrderId],
        action: SyncAction,
        release: bool,
        deadline: Deadline,
    ) -> Result<(), Failure> {
        self.store(deadline, || {
            self.store
                .complete(discount, lease, orders, action, SystemTime::now(), release)
        })
        .await
        .map_err(Failure::pending)?;
        self.reached(Step::OrdersMarked);
        Ok(())
    }

    /// Takes the discount's lease, waiting briefly if a live invocation holds it.
    async fn acquire(
        &self,
        discount: DiscountId,
        lease: &Lease,
        deadline: Deadline,
    ) -> Result<Option<Journal>, SyncError> {
        let mut waited = Duration::ZERO;
        let mut attempt = 1;
        loop {
            let acquisition = self
                .store(deadline, || {
                    self.store
                        .acquire(discount, lease, epoch_ms(SystemTime::now()))
                })
                .await?;
            match acquisition {
                Acquisition::Acquired { pending } => return Ok(pending),
                Acquisition::Held { expires_at_ms } => {
                    let delay = self
                        .retry
                        .delay(attempt, RetryHint { not_before: None })
                        .max(Duration::from_millis(20));
                    if waited + delay > LEASE_WAIT || deadline.remaining() < delay + START_MARGIN {
                        return Err(SyncError::LeaseHeld {
                            discount,
                            expires_at_ms,
                        });
                    }
                    tokio::time::sleep(delay).await;
                    waited += delay;
                    attempt += 1;
                }
            }
        }
    }

    async fn release(&self, discount: DiscountId, lease: &Lease) {
        if let Err(err) = self.store.release(discount, lease).await {
            warn!(error = %err, discount_id = %discount, "could not release the lease; it will expire");
        }
    }

    async fn polar<T, F, Fut>(&self, deadline: Deadline, mut call: F) -> Result<T, PolarError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, PolarError>>,
    {
        self.retry
            .run(deadline, PolarError::retry_hint, || {
                let request = call();
                async move {
                    self.admit(deadline).await?;
                    request.await
                }
            })
            .await
    }

    /// Waits for a slot in the rate budget, for as long as new work may still start.
    async fn admit(&self, deadline: Deadline) -> Result<(), PolarError> {
        let Some(rate) = &self.rate else {
            return Ok(());
        };
        let max_wait = deadline.remaining().saturating_sub(START_MARGIN);
        rate.admit(max_wait)
            .await
            .map_err(|over| PolarError::OverBudget { wait: over.wait })
    }

    async fn store<T, F, Fut>(&self, deadline: Deadline, call: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        self.retry.run(deadline, StoreError::retry_hint, call).await
    }
}

/// Settles every message whose fate its claim decides (missing, already synced, not
/// matching its order); the others are returned once per order, to be counted.
fn settle_claims<'a>(
    requests: &'a [SyncRequest],
    claims: &HashMap<&OrderId, Result<ClaimOutcome, Arc<SyncError>>>,
) -> (Vec<Option<Outcome>>, Vec<&'a SyncRequest>) {
    let mut settled = Vec::with_capacity(requests.len());
    let mut to_count: Vec<&SyncRequest> = Vec::new();
    for request in requests {
        let outcome = match &claims[&request.order_id] {
            Err(err) => Some(Err(err.clone())),
            Ok(ClaimOutcome::NotFound) => Some(Err(Arc::new(SyncError::OrderNotFound(
                request.order_id.clone(),
            )))),
            Ok(ClaimOutcome::AlreadySynced(order)) => Some(
                ensure_message_matches(request, order)
                    .map(|()| Synced::AlreadySynced)
                    .map_err(Arc::new),
            ),
            Ok(ClaimOutcome::Claimed(order)) => match ensure_message_matches(request, order) {
                Err(err) => Some(Err(Arc::new(err))),
                Ok(()) => {
                    if !to_count.iter().any(|r| r.order_id == request.order_id) {
                        to_count.push(request);
                    }
                    None
                }
            },
        };
        settled.push(outcome);
    }
    (settled, to_count)
}

/// The order item is the source of truth: the message must name its discount and code.
fn ensure_message_matches(request: &SyncRequest, order: &OrderRecord) -> Result<(), SyncError> {
    let id_matches = order
        .discount_id
        .as_deref()
        .and_then(|raw| DiscountId::parse(raw).ok())
        == Some(request.discount_id);
    if !id_matches {
        return Err(SyncError::OrderMismatch {
            order: request.order_id.clone(),
            field: "discountId",
            on_order: order.discount_id.clone(),
            in_message: request.discount_id.to_string(),
        });
    }
    let code_matches = order
        .discount_code
        .as_deref()
        .is_some_and(|code| request.discount_code.matches(code));
    if !code_matches {
        return Err(SyncError::OrderMismatch {
            order: request.order_id.clone(),
            field: "discountCode",
            on_order: order.discount_code.clone(),
            in_message: request.discount_code.to_string(),
        });
    }
    Ok(())
}

/// The code on Polar must be the one the order used; a discount already gone has none to check.
fn code_mismatch(request: &SyncRequest, current: Option<&Discount>) -> Option<SyncError> {
    let discount = current?;
    let matches = discount
        .code
        .as_deref()
        .is_some_and(|code| request.discount_code.matches(code));
    (!matches).then(|| SyncError::DiscountCodeMismatch {
        order: request.order_id.clone(),
        discount: request.discount_id,
        on_polar: discount.code.clone(),
        on_order: request.discount_code.to_string(),
    })
}
