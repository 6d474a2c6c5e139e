//! The Polar port as the use case calls it: every request first waits for a slot in the
//! container's rate budget, a 429 pauses them all, and reads and refused writes are
//! retried with backoff while the deadline allows. A write whose outcome is unknown is
//! never retried here.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;

use super::rate::{OverBudget, RateLimiter, ReservedSlot};
use super::{RetryPolicy, START_MARGIN};
use crate::deadline::Deadline;
use crate::domain::{DiscountId, Intent};
use crate::ports::{
    DiscountLookup, Discounts, Lookup, PolarFailure, PolarFailureKind, WriteOutcome,
};
use crate::telemetry::{Count, Distribution, Metrics};

tokio::task_local! {
    /// Set while the scheduled reconciliation runs in this task.
    static RECONCILIATION: ();
}

/// Runs `work` with its Polar requests counted in the reconciliation's own share of the
/// budget. A container runs one invocation at a time, but the budget is the organization's:
/// the reconciliation runs outside the queue's `MaximumConcurrency`, so its requests must
/// not come out of a share the queue's containers count on.
pub async fn as_reconciliation<F: Future>(work: F) -> F::Output {
    RECONCILIATION.scope((), work).await
}

/// A discount as just read, and the slot reserved for the write that may follow.
pub struct ReadForWrite {
    pub current: Lookup,
    pub write_slot: Option<ReservedSlot>,
}

impl From<Lookup> for ReadForWrite {
    /// A read that reserved nothing: its write waits for a slot of its own.
    fn from(current: Lookup) -> Self {
        Self {
            current,
            write_slot: None,
        }
    }
}

/// A write's outcome, and how long its last attempt took from sending to the answer.
pub struct Written {
    pub outcome: WriteOutcome,
    pub latency: Duration,
}

pub struct GuardedPolar<D> {
    discounts: D,
    retry: RetryPolicy,
    rate: Option<RateLimiter>,
    /// The scheduled reconciliation's own share, if it has one.
    reconciliation_rate: Option<RateLimiter>,
    metrics: Arc<Metrics>,
    /// Steps let in by [`Self::check_room_for_step`] that have not reserved their slots.
    steps_let_in: AtomicU32,
}

/// The steps of one batch the budget has turned away so far.
#[derive(Debug, Default)]
pub struct TurnedAway(AtomicU32);

/// A step let in by [`GuardedPolar::check_room_for_step`]: until it is dropped (when the
/// step reserves its slots, or ends without), later checks count them as already taken.
pub struct StepRoom<'a> {
    steps_let_in: &'a AtomicU32,
}

impl Drop for StepRoom<'_> {
    fn drop(&mut self) {
        self.steps_let_in.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<D: DiscountLookup> GuardedPolar<D> {
    pub fn new(discounts: D, retry: RetryPolicy, metrics: Arc<Metrics>) -> Self {
        Self {
            discounts,
            retry,
            rate: None,
            reconciliation_rate: None,
            metrics,
            steps_let_in: AtomicU32::new(0),
        }
    }

    /// Requests made under [`as_reconciliation`] come out of `rate` instead.
    pub fn with_reconciliation_rate_limiter(mut self, rate: RateLimiter) -> Self {
        self.reconciliation_rate = Some(rate);
        self
    }

    /// The budget this request comes out of: the reconciliation's while it runs, if it has
    /// its own.
    fn limiter(&self) -> Option<&RateLimiter> {
        let reconciling = RECONCILIATION.try_with(|_| ()).is_ok();
        match (&self.reconciliation_rate, reconciling) {
            (Some(reconciliation), true) => Some(reconciliation),
            _ => self.rate.as_ref(),
        }
    }

    pub fn with_rate_limiter(mut self, rate: RateLimiter) -> Self {
        self.rate = Some(rate);
        self
    }

    pub async fn get(&self, id: DiscountId, deadline: Deadline) -> Result<Lookup, PolarFailure> {
        self.admit(deadline).await?;
        self.get_admitted(id, deadline).await
    }

    /// The read's first attempt has its slot already; a retry waits for another.
    async fn get_admitted(
        &self,
        id: DiscountId,
        deadline: Deadline,
    ) -> Result<Lookup, PolarFailure> {
        let mut admitted = true;
        self.retry
            .run(deadline, PolarFailure::retry_hint, || {
                let admitted = std::mem::replace(&mut admitted, false);
                async move {
                    if !admitted {
                        self.admit(deadline).await?;
                    }
                    let sent = Instant::now();
                    let lookup = self.discounts.get(id, deadline).await;
                    self.metrics.observe_latency(sent.elapsed());
                    if let Err(failure) = &lookup {
                        self.heed(failure);
                    }
                    lookup
                }
            })
            .await
    }

    /// A 429 is about the organization's limit, not this request: every request of the
    /// container waits out its `retry-after`.
    fn heed(&self, failure: &PolarFailure) {
        if let PolarFailureKind::RateLimited { .. } = failure.kind {
            self.metrics.count(Count::PolarRateLimited, 1);
        }
        if let (
            Some(rate),
            PolarFailureKind::RateLimited {
                retry_after: Some(retry_after),
            },
        ) = (self.limiter(), failure.kind)
        {
            if let Some(share) = rate.pause_for(retry_after) {
                self.metrics.observe(Distribution::PolarRateShare, share);
                warn!(
                    event = "rate_share_cut",
                    sharePerMinute = share.round() as u64,
                    "Polar keeps answering 429 although this container keeps to its share: \
                     the containers together send more than the organization's limit (a \
                     trigger MaximumConcurrency above MAXIMUM_CONCURRENCY, or another tool \
                     on the same organization); cutting this container's share, which \
                     grows back slowly"
                );
            }
        }
    }

    /// Waits for a slot in the rate budget, for as long as new work may still start.
    async fn admit(&self, deadline: Deadline) -> Result<(), PolarFailure> {
        match self.limiter() {
            Some(rate) => rate
                .admit(Self::max_wait(deadline))
                .await
                .map_err(over_budget),
            None => Ok(()),
        }
    }

    fn max_wait(deadline: Deadline) -> Duration {
        deadline.remaining().saturating_sub(START_MARGIN)
    }

    #[cfg(test)]
    pub fn port(&self) -> &D {
        &self.discounts
    }
}

/// What only the live sync does: steps that write.
impl<D: Discounts> GuardedPolar<D> {
    /// Reads the discount for a write that may follow, with the write's slot reserved
    /// together with the read's: a read is never spent on a step whose write would then
    /// find the budget empty before the deadline. Without room for both, nothing is sent.
    /// The step's `room`, if it still has it, is given up once the slots are reserved.
    pub async fn get_before_write(
        &self,
        id: DiscountId,
        deadline: Deadline,
        room: Option<StepRoom<'_>>,
    ) -> Result<ReadForWrite, PolarFailure> {
        let write_slot = match self.limiter() {
            Some(rate) => Some(
                rate.admit_with_next(Self::max_wait(deadline))
                    .await
                    .map_err(over_budget)?,
            ),
            None => None,
        };
        drop(room);
        let current = self.get_admitted(id, deadline).await?;
        Ok(ReadForWrite {
            current,
            write_slot,
        })
    }

    /// Fails as [`Self::get_before_write`] would if it were called now, so that a step the
    /// budget cannot serve costs no lease and no claims either. The steps of one batch
    /// start together, before any of them has reserved its slots: each step let in counts
    /// as two slots taken until it reserves them (or ends), so that a batch lets in only
    /// the steps its budget can serve, and turns the others away before they write.
    ///
    /// A step turned away is told when its slots would be free after those of the steps
    /// of its batch turned away before it: they come back one after another at the
    /// budget's pace, rather than all when the next two slots are free, to be turned away
    /// together again.
    pub fn check_room_for_step(
        &self,
        deadline: Deadline,
        turned_away: &TurnedAway,
    ) -> Result<StepRoom<'_>, PolarFailure> {
        let room = StepRoom {
            steps_let_in: &self.steps_let_in,
        };
        let ahead = self.steps_let_in.fetch_add(1, Ordering::SeqCst);
        if let Some(rate) = self.limiter() {
            if rate.ready_in(2 * (ahead + 1)) > Self::max_wait(deadline) {
                let before = turned_away.0.fetch_add(1, Ordering::SeqCst);
                let wait = rate.ready_in(2 * (ahead + before + 1));
                return Err(over_budget(OverBudget { wait }));
            }
        }
        Ok(room)
    }

    /// How long until the budget has a step's two slots, the read's and the write's.
    pub fn step_ready_in(&self) -> Duration {
        self.limiter()
            .map_or(Duration::ZERO, |rate| rate.ready_in(2))
    }

    /// Makes the write; its first attempt goes out in `slot` when the read reserved one.
    pub async fn write(
        &self,
        id: DiscountId,
        intent: Intent,
        deadline: Deadline,
        mut slot: Option<ReservedSlot>,
    ) -> Written {
        // The last attempt's; a Mutex because the retried future must be Send.
        let latency = std::sync::Mutex::new(Duration::ZERO);
        let answered = self
            .retry
            .run(deadline, PolarFailure::retry_hint, || {
                let reserved = slot.take();
                let latency = &latency;
                async move {
                    match reserved {
                        Some(slot) => slot.wait().await,
                        None => self.admit(deadline).await?,
                    }
                    let sent = Instant::now();
                    let outcome = match intent {
                        Intent::SetMaxRedemptions(target) => {
                            self.discounts
                                .set_max_redemptions(id, target, deadline)
                                .await
                        }
                        Intent::Delete => self.discounts.delete(id, deadline).await,
                    };
                    let took = sent.elapsed();
                    *latency.lock().expect("never poisoned") = took;
                    self.metrics.observe_latency(took);
                    match outcome {
                        WriteOutcome::NotApplied(failure) => {
                            self.heed(&failure);
                            Err(failure)
                        }
                        other => Ok(other),
                    }
                }
            })
            .await;
        Written {
            outcome: answered.unwrap_or_else(WriteOutcome::NotApplied),
            latency: latency.into_inner().expect("never poisoned"),
        }
    }
}

fn over_budget(over: OverBudget) -> PolarFailure {
    let ready_in = over.wait;
    PolarFailure::new(PolarFailureKind::OverBudget { ready_in }, over)
}
