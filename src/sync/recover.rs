//! Recovery: a new lease holder first finishes the write a previous holder journaled but
//! did not commit, deciding from Polar's state alone whether it happened. The journal is
//! only ever cleared by the commit that marks its orders: whatever fails on the way (the
//! read-back, or a re-write refused or turned away) keeps it for the next try.

use tracing::info;

use super::{Failure, Syncer};
use crate::deadline::Deadline;
use crate::domain::{DiscountId, Journal};
use crate::ports::{Coordination, Discounts, Lease, LeaseAfter, OrderLedger};
use crate::telemetry::Ids;

impl<S: OrderLedger + Coordination, D: Discounts> Syncer<S, D> {
    pub(super) async fn recover(
        &self,
        discount: DiscountId,
        lease: &Lease,
        journal: Journal,
        deadline: Deadline,
    ) -> Result<(), Failure> {
        info!(orderIds = %Ids(&journal.orders), intent = ?journal.intent,
            "resolving a write journaled by an invocation that did not finish");
        let current = self
            .polar
            .get(discount, deadline)
            .await
            .map_err(|err| Failure::nothing_pending(err).keeping_journal())?;
        match self.resolution(discount, &journal, &current) {
            Some(action) => self
                .commit(
                    discount,
                    lease,
                    &journal.orders,
                    action,
                    LeaseAfter::Kept,
                    deadline,
                )
                .await
                .map(drop),
            None => self
                .apply(
                    discount,
                    lease,
                    journal.orders,
                    current.into(),
                    deadline,
                    LeaseAfter::Kept,
                )
                .await
                .map(drop),
        }
        .map_err(Failure::keeping_journal)
    }
}
