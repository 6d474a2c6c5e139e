//! Counting claimed orders on Polar: per step of up to `MAX_ORDERS_PER_WRITE` orders, one
//! read and at most one coalesced write. A failed step fails only the orders it was
//! counting (and those after it).

use std::collections::HashMap;
use std::sync::Arc;

use super::guarded_polar::StepRoom;
use super::validate::code_mismatch;
use super::{
    may_have_landed, Failure, Left, Outcome, SyncError, Synced, Syncer, MAX_ORDERS_PER_WRITE,
    START_MARGIN,
};
use crate::deadline::Deadline;
use crate::domain::{DiscountId, OrderId, SyncRequest};
use crate::ports::{Coordination, Discounts, Lease, LeaseAfter, OrderLedger};

/// What counting a discount's claimed orders came to.
pub(super) struct Counted {
    pub outcomes: HashMap<OrderId, Outcome>,
    /// Orders waiters handed over at the last commit, which kept the lease for them
    /// instead of releasing it: the caller counts them, or gives the lease up.
    pub handed_over: Vec<SyncRequest>,
}

impl<S: OrderLedger + Coordination, D: Discounts> Syncer<S, D> {
    /// Counts the claimed orders step by step; the last step's commit gives the lease up
    /// (unless it was kept for orders handed over), and so does the end of a run that wrote
    /// nothing that may be pending.
    pub(super) async fn count_all(
        &self,
        discount: DiscountId,
        lease: &Lease,
        to_count: &[&SyncRequest],
        deadline: Deadline,
        mut room: Option<StepRoom<'_>>,
    ) -> Counted {
        let mut outcomes: HashMap<OrderId, Outcome> = HashMap::new();
        let mut handed_over = Vec::new();
        let steps: Vec<_> = to_count.chunks(MAX_ORDERS_PER_WRITE).collect();
        let mut lease_now = LeaseAfter::Kept;
        let mut left = Left::Nothing;
        let mut stopped: Option<Arc<SyncError>> = None;
        for (index, step) in steps.iter().enumerate() {
            if stopped.is_none() && deadline.remaining() < START_MARGIN {
                stopped = Some(Arc::new(SyncError::DeadlineTooClose));
            }
            if stopped.is_none() {
                let lease_after = if index + 1 == steps.len() {
                    LeaseAfter::Released
                } else {
                    LeaseAfter::Kept
                };
                match self
                    .count(
                        discount,
                        lease,
                        step,
                        deadline,
                        lease_after,
                        room.take(),
                        &mut outcomes,
                    )
                    .await
                {
                    Ok((after, handed)) => {
                        lease_now = after;
                        handed_over = handed;
                    }
                    Err(failure) => {
                        let journal_outlives = failure.journal_outlives();
                        left = failure.left;
                        let error = Arc::new(failure.error);
                        for request in step.iter() {
                            outcomes
                                .entry(request.order_id.clone())
                                .or_insert_with(|| Err(may_have_landed(&error, journal_outlives)));
                        }
                        stopped = Some(error);
                    }
                }
            }
            if let Some(error) = &stopped {
                for request in step.iter() {
                    outcomes
                        .entry(request.order_id.clone())
                        .or_insert_with(|| Err(error.clone()));
                }
            }
        }
        if lease_now == LeaseAfter::Kept && handed_over.is_empty() {
            self.give_up_after(discount, lease, left).await;
        }
        Counted {
            outcomes,
            handed_over,
        }
    }

    /// One step: reads the discount, drops orders whose code Polar does not know, and
    /// applies the rest in one write. Records each order's outcome in `outcomes`; tells
    /// whether the lease is still held, and for which handed-over orders if it was to be
    /// released.
    #[allow(clippy::too_many_arguments)]
    async fn count(
        &self,
        discount: DiscountId,
        lease: &Lease,
        requests: &[&SyncRequest],
        deadline: Deadline,
        lease_after: LeaseAfter,
        room: Option<StepRoom<'_>>,
        outcomes: &mut HashMap<OrderId, Outcome>,
    ) -> Result<(LeaseAfter, Vec<SyncRequest>), Failure> {
        let read = self
            .polar
            .get_before_write(discount, deadline, room)
            .await
            .map_err(Failure::nothing_pending)?;

        let mut orders = Vec::new();
        for request in requests {
            match code_mismatch(request, &read.current) {
                Some(err) => {
                    outcomes.insert(request.order_id.clone(), Err(Arc::new(err)));
                }
                None => orders.push(request.order_id.clone()),
            }
        }
        if orders.is_empty() {
            return Ok((LeaseAfter::Kept, Vec::new()));
        }
        let (action, handed_over) = self
            .apply(discount, lease, orders.clone(), read, deadline, lease_after)
            .await?;
        outcomes.extend(
            orders
                .into_iter()
                .map(|id| (id, Ok(Synced::Applied(action)))),
        );
        if handed_over.is_empty() {
            Ok((lease_after, handed_over))
        } else {
            Ok((LeaseAfter::Kept, handed_over))
        }
    }
}
