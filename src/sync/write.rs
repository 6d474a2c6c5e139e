//! One write on Polar, made safe by the intent journal: plan from the value just read,
//! journal the write, make it, and commit (mark the orders, clear the journal). A write
//! whose outcome is unknown is resolved by reading the discount back, never by writing
//! blindly again; while it stays unknown, the journal outlives the invocation.

use std::time::SystemTime;

use tracing::{info, warn};

use super::guarded_polar::{ReadForWrite, Written};
use super::rate::ReservedSlot;
use super::{Failure, Step, Syncer};
use crate::deadline::Deadline;
use crate::domain::{
    DiscountId, Intent, Journal, OrderId, Plan, Resolution, SyncAction, SyncRequest,
};
use crate::ports::{
    Committed, Coordination, Discounts, Lease, LeaseAfter, Lookup, OrderLedger, WriteOutcome,
};
use crate::telemetry::{Count, Distribution, Ids};

/// What a read-back says about a write whose answer was lost.
enum ReadBack {
    Applied(SyncAction),
    NotApplied,
    /// No time or no answer to tell: the journal will.
    Unresolved,
}

impl<S: OrderLedger + Coordination, D: Discounts> Syncer<S, D> {
    /// Plans from the discount as just read, journals the write, makes it (in the slot the
    /// read reserved, if any), and commits. Returns what was done, and the orders waiters
    /// handed over meanwhile if the commit kept the lease for them.
    pub(super) async fn apply(
        &self,
        discount: DiscountId,
        lease: &Lease,
        orders: Vec<OrderId>,
        read: ReadForWrite,
        deadline: Deadline,
        lease_after: LeaseAfter,
    ) -> Result<(SyncAction, Vec<SyncRequest>), Failure> {
        let ReadForWrite {
            current,
            write_slot,
        } = read;
        let Lookup::Found(current) = current else {
            let action = SyncAction::AlreadyDeleted;
            let handed_over = self
                .commit(discount, lease, &orders, action, lease_after, deadline)
                .await?;
            return Ok((action, handed_over));
        };
        let redemptions = u32::try_from(orders.len()).unwrap_or(u32::MAX);
        let plan = Plan::for_discount(current.max_redemptions, redemptions);
        let (Some(read), Some(intent)) = (current.max_redemptions, plan.intent()) else {
            let action = SyncAction::SkippedUnlimited;
            let handed_over = self
                .commit(discount, lease, &orders, action, lease_after, deadline)
                .await?;
            return Ok((action, handed_over));
        };
        if let Plan::Delete { oversold_by } = plan {
            if oversold_by > 0 {
                self.metrics.count(Count::Oversold, oversold_by);
                warn!(event = "oversold", discountId = %discount, oversoldBy = oversold_by, orderIds = %Ids(&orders),
                    "discount was used more often than its limit before these redemptions were synced");
            }
        }

        let journal = Journal {
            orders,
            read,
            intent,
        };
        self.with_store_retry(deadline, || {
            self.store.record_intent(discount, lease, &journal)
        })
        .await
        .map_err(Failure::nothing_pending)?;
        self.reached(Step::JournalWritten);

        let action = self.write(discount, &journal, write_slot, deadline).await?;
        self.reached(Step::PolarWritten);
        let handed_over = self
            .commit(
                discount,
                lease,
                &journal.orders,
                action,
                lease_after,
                deadline,
            )
            .await?;
        Ok((action, handed_over))
    }

    /// Makes the journaled write. Once any attempt went unanswered, a later refusal does
    /// not prove anything: that attempt may still land, so the journal must stay.
    async fn write(
        &self,
        discount: DiscountId,
        journal: &Journal,
        mut slot: Option<ReservedSlot>,
        deadline: Deadline,
    ) -> Result<SyncAction, Failure> {
        let mut unanswered = false;
        let mut attempt = 1;
        loop {
            let written = self
                .polar
                .write(discount, journal.intent, deadline, slot.take())
                .await;
            self.report_write(journal, &written);
            let failure = match written.outcome {
                WriteOutcome::Applied => return Ok(journal.intent.action()),
                // Gone already: our earlier, unanswered DELETE landed, or someone else's.
                WriteOutcome::Gone if journal.intent == Intent::Delete && unanswered => {
                    return Ok(SyncAction::Deleted)
                }
                WriteOutcome::Gone => return Ok(SyncAction::AlreadyDeleted),
                WriteOutcome::NotApplied(failure) if unanswered => {
                    return Err(Failure::write_pending(failure))
                }
                WriteOutcome::NotApplied(failure) => return Err(Failure::nothing_pending(failure)),
                WriteOutcome::Unknown(failure) => failure,
            };
            unanswered = true;
            warn!(error = %crate::error_chain(&failure),
                "write outcome unknown; reading the discount back");
            match self.read_back(discount, journal, deadline).await {
                ReadBack::Applied(action) => return Ok(action),
                ReadBack::NotApplied
                    if attempt < self.retry.max_attempts
                        && deadline.remaining() >= self.retry.reserve =>
                {
                    attempt += 1;
                }
                ReadBack::NotApplied | ReadBack::Unresolved => {
                    return Err(Failure::write_pending(failure))
                }
            }
        }
    }

    /// One line per Polar write, and its metrics.
    fn report_write(&self, journal: &Journal, written: &Written) {
        let k = journal.orders.len() as u64;
        let after = match journal.intent {
            Intent::SetMaxRedemptions(target) => target,
            Intent::Delete => 0,
        };
        let latency_ms = written.latency.as_millis() as u64;
        let (status, failure) = match &written.outcome {
            WriteOutcome::Applied => ("applied", None),
            WriteOutcome::Gone => ("gone", None),
            WriteOutcome::NotApplied(failure) => ("refused", Some(failure)),
            WriteOutcome::Unknown(failure) => ("unknown", Some(failure)),
        };
        let orders = Ids(&journal.orders);
        let action = journal.intent.action();
        match failure {
            None => info!(event = "polar_write", k, before = journal.read, after, %action, status,
                latencyMs = latency_ms, orderIds = %orders, "Polar write answered"),
            Some(failure) => warn!(event = "polar_write", k, before = journal.read, after, %action,
                status, latencyMs = latency_ms, orderIds = %orders,
                error = %crate::error_chain(failure), "Polar write not answered as applied"),
        }
        match written.outcome {
            WriteOutcome::Applied => self.metrics.observe(Distribution::OrdersPerWrite, k as f64),
            WriteOutcome::Unknown(_) => self.metrics.count(Count::UnknownWriteOutcomes, 1),
            WriteOutcome::Gone | WriteOutcome::NotApplied(_) => {}
        }
    }

    /// Tells from Polar's state whether an unanswered write happened. A request our client
    /// gave up on may still be applied a moment later, so the read waits that moment first:
    /// reading too early would see the old value, and the late write could then undo the
    /// next holder's. Without time for the wait and a read, the journal is left to resolve.
    async fn read_back(
        &self,
        discount: DiscountId,
        journal: &Journal,
        deadline: Deadline,
    ) -> ReadBack {
        let landing_time = self.retry.reserve;
        if deadline.remaining() < landing_time + self.retry.reserve {
            return ReadBack::Unresolved;
        }
        tokio::time::sleep(landing_time).await;
        match self.polar.get(discount, deadline).await {
            Ok(current) => match self.resolution(discount, journal, &current) {
                Some(action) => ReadBack::Applied(action),
                None => ReadBack::NotApplied,
            },
            Err(_) => ReadBack::Unresolved,
        }
    }

    /// What Polar's current state says about a journaled write; `None` when it did not
    /// happen.
    pub(super) fn resolution(
        &self,
        discount: DiscountId,
        journal: &Journal,
        current: &Lookup,
    ) -> Option<SyncAction> {
        let current_max = match current {
            Lookup::Found(view) => Some(view.max_redemptions),
            Lookup::Deleted => None,
        };
        match journal.resolve(current_max) {
            Resolution::Applied(action) => Some(action),
            Resolution::NotApplied => None,
            Resolution::ChangedElsewhere(action) => {
                self.metrics.count(Count::ExternalChanges, 1);
                warn!(event = "external_change", discountId = %discount, read = journal.read,
                    intent = ?journal.intent, current = ?current_max, orderIds = %Ids(&journal.orders),
                    "discount was changed outside this function during a sync; keeping its value");
                Some(action)
            }
        }
    }

    /// Marks the orders synced and clears the journal. If that fails, the write stands on
    /// Polar, so the journal is left for the next holder to commit. Returns the orders
    /// waiters handed over, for which the lease was kept instead of released.
    pub(super) async fn commit(
        &self,
        discount: DiscountId,
        lease: &Lease,
        orders: &[OrderId],
        action: SyncAction,
        lease_after: LeaseAfter,
        deadline: Deadline,
    ) -> Result<Vec<SyncRequest>, Failure> {
        // Orders handed over are taken only with room for one more step now; otherwise
        // they stay on the list, for their waiters or the next holder.
        let lease_after = match lease_after {
            LeaseAfter::Released if self.may_take_over(lease, deadline) => {
                LeaseAfter::ReleasedOrHandedOver
            }
            other => other,
        };
        let committed = self
            .with_store_retry(deadline, || {
                self.store.commit(
                    discount,
                    lease,
                    orders,
                    action,
                    SystemTime::now(),
                    lease_after,
                )
            })
            .await
            .map_err(Failure::write_pending)?;
        self.reached(Step::OrdersMarked);
        Ok(match committed {
            Committed::AsAsked => Vec::new(),
            Committed::HandedOver(orders) => orders,
        })
    }
}
