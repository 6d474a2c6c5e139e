//! Scheduled reconciliation: settles every journal whose owner is gone, exactly as the
//! next message for that discount would (read back from Polar, then mark the orders), so
//! a counted use is never left unmarked when its message was dead-lettered and no other
//! message for the discount comes. It finds the journals with one read of `SYNC_TABLE`, and
//! makes no Polar request for a discount whose journal is already settled.

use std::time::SystemTime;

use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use tracing::{info, info_span, warn, Instrument};

use super::guarded_polar::as_reconciliation;
use super::{Left, SyncError, Syncer, START_MARGIN};
use crate::deadline::{epoch_ms, Deadline};
use crate::domain::DiscountId;
use crate::ports::{Acquisition, Coordination, Discounts, JournalIndex, OrderLedger};
use crate::telemetry::Count;

/// Discounts settled at the same time; each costs at most a GET and a write on Polar.
const CONCURRENT_DISCOUNTS: usize = 4;

/// What one run did, as the scheduled invocation answers it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Reconciliation {
    /// Discounts that held a journal when the run looked.
    pub found: usize,
    /// Journals resolved and their orders marked.
    pub settled: usize,
    /// Journals settled by message processing since the run looked.
    pub cleared: usize,
    /// Journals whose lease a live invocation still holds: left for the next run.
    pub busy: usize,
    /// Journals that could not be settled now (Polar or DynamoDB failed, no time left).
    pub failed: usize,
}

enum Settlement {
    Settled,
    Cleared,
    Busy,
    Failed,
}

impl<S: OrderLedger + Coordination + JournalIndex, D: Discounts> Syncer<S, D> {
    pub async fn reconcile(&self, deadline: Deadline) -> Result<Reconciliation, SyncError> {
        as_reconciliation(self.reconcile_in_its_share(deadline)).await
    }

    async fn reconcile_in_its_share(
        &self,
        deadline: Deadline,
    ) -> Result<Reconciliation, SyncError> {
        let discounts = self
            .with_store_retry(deadline, || self.store.journaled_discounts())
            .await?;
        let mut counts = Reconciliation {
            found: discounts.len(),
            ..Reconciliation::default()
        };
        let settlements: Vec<Settlement> = stream::iter(discounts)
            .map(|discount| {
                self.settle_journal(discount, deadline)
                    .instrument(info_span!("discount", discountId = %discount))
            })
            .buffer_unordered(CONCURRENT_DISCOUNTS)
            .collect()
            .await;
        for settlement in settlements {
            match settlement {
                Settlement::Settled => {
                    counts.settled += 1;
                    self.metrics.count(Count::JournalsReconciled, 1);
                }
                Settlement::Cleared => counts.cleared += 1,
                Settlement::Busy => counts.busy += 1,
                Settlement::Failed => {
                    counts.failed += 1;
                    self.metrics.count(Count::ReconciliationFailures, 1);
                }
            }
        }
        info!(
            event = "reconciliation",
            found = counts.found,
            settled = counts.settled,
            cleared = counts.cleared,
            busy = counts.busy,
            failed = counts.failed,
            "scheduled reconciliation finished"
        );
        Ok(counts)
    }

    async fn settle_journal(&self, discount: DiscountId, deadline: Deadline) -> Settlement {
        if deadline.remaining() < START_MARGIN {
            return Settlement::Failed;
        }
        let lease = super::lease::lease_until(deadline);
        let now_ms = epoch_ms(SystemTime::now());
        let acquired = self
            .with_store_retry(deadline, || self.store.acquire(discount, &lease, now_ms))
            .await;
        let journal = match acquired {
            Ok(Acquisition::Held(_)) => return Settlement::Busy,
            Ok(Acquisition::Acquired { pending: None }) => {
                // Settled by a message since the scan.
                self.give_up_after(discount, &lease, Left::Journal).await;
                return Settlement::Cleared;
            }
            Ok(Acquisition::Acquired {
                pending: Some(journal),
            }) => journal,
            Err(err) => return failed(&err.into()),
        };
        let orders = journal.orders.len();
        match self.recover(discount, &lease, journal, deadline).await {
            Ok(()) => {
                self.give_up_after(discount, &lease, Left::Journal).await;
                info!(
                    event = "journal_reconciled",
                    orders, "a journal left by an invocation that did not finish is settled"
                );
                Settlement::Settled
            }
            Err(failure) => {
                self.give_up_after(discount, &lease, failure.left).await;
                failed(&failure.error)
            }
        }
    }
}

fn failed(err: &SyncError) -> Settlement {
    warn!(event = "reconciliation_failed", error = %crate::error_chain(err),
        "journal not settled; the next run tries again");
    Settlement::Failed
}
