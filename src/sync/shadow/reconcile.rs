//! The scheduled reconciliation in shadow mode: finds the journals as the sync does, reads
//! each one and its discount on Polar, and logs how the sync would settle it (mark its
//! orders, or make its write first), without taking a lease or settling anything.

use std::time::SystemTime;

use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use tracing::{info, info_span, warn, Instrument};

use super::{plan_steps, PlannedStep, Shadow};
use crate::deadline::{epoch_ms, Deadline};
use crate::domain::{DiscountId, Resolution, SyncAction};
use crate::ports::{DiscountLookup, JournalIndex, Lookup, OrderReader};
use crate::sync::{Reconciliation, SyncError, START_MARGIN};
use crate::telemetry::Ids;

/// Discounts looked at the same time; each costs a `GetItem` and a Polar GET.
const CONCURRENT_DISCOUNTS: usize = 4;

/// The scheduled invocation's answer in shadow mode: the sync's counts, with nothing
/// `settled`, and how many journals it would have settled.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ShadowReconciliation {
    #[serde(flatten)]
    pub counts: Reconciliation,
    #[serde(rename = "wouldSettle")]
    pub would_settle: usize,
}

/// How the sync would settle one journal.
enum JournalPlan {
    /// The journaled write is on Polar: the sync would only mark the orders.
    MarkOrders(SyncAction),
    /// The write did not happen: the sync would plan it again from Polar's value, write
    /// it, and mark the orders.
    Write(Vec<PlannedStep>),
}

enum Looked {
    WouldSettle,
    Cleared,
    Busy,
    Failed,
}

impl<S: OrderReader + JournalIndex, D: DiscountLookup> Shadow<S, D> {
    pub async fn reconcile(&self, deadline: Deadline) -> Result<ShadowReconciliation, SyncError> {
        let discounts = self
            .retry
            .run(deadline, crate::ports::StoreFailure::retry_hint, || {
                self.store.journaled_discounts()
            })
            .await?;
        let mut answer = ShadowReconciliation {
            counts: Reconciliation {
                found: discounts.len(),
                ..Reconciliation::default()
            },
            would_settle: 0,
        };
        let looked: Vec<Looked> = stream::iter(discounts)
            .map(|discount| {
                self.look_at_journal(discount, deadline)
                    .instrument(info_span!("discount", discountId = %discount))
            })
            .buffer_unordered(CONCURRENT_DISCOUNTS)
            .collect()
            .await;
        for looked in looked {
            match looked {
                Looked::WouldSettle => answer.would_settle += 1,
                Looked::Cleared => answer.counts.cleared += 1,
                Looked::Busy => answer.counts.busy += 1,
                Looked::Failed => answer.counts.failed += 1,
            }
        }
        let counts = answer.counts;
        info!(
            event = "reconciliation",
            shadow = true,
            found = counts.found,
            settled = counts.settled,
            wouldSettle = answer.would_settle,
            cleared = counts.cleared,
            busy = counts.busy,
            failed = counts.failed,
            "shadow mode: scheduled reconciliation looked; nothing settled"
        );
        Ok(answer)
    }

    async fn look_at_journal(&self, discount: DiscountId, deadline: Deadline) -> Looked {
        if deadline.remaining() < START_MARGIN {
            return Looked::Failed;
        }
        let read = self
            .retry
            .run(deadline, crate::ports::StoreFailure::retry_hint, || {
                self.store.pending_journal(discount)
            })
            .await;
        let pending = match read {
            Ok(Some(pending)) => pending,
            Ok(None) => return Looked::Cleared,
            Err(err) => return failed(&err.into()),
        };
        let now_ms = epoch_ms(SystemTime::now());
        if pending
            .lease_expires_at_ms
            .is_some_and(|until| until >= now_ms)
        {
            return Looked::Busy;
        }
        let current = match self.polar.get(discount, deadline).await {
            Ok(current) => current,
            Err(err) => return failed(&err.into()),
        };
        let journal = &pending.journal;
        let current_max = match &current {
            Lookup::Found(view) => Some(view.max_redemptions),
            Lookup::Deleted => None,
        };
        let plan = match journal.resolve(current_max) {
            Resolution::Applied(action) => JournalPlan::MarkOrders(action),
            Resolution::ChangedElsewhere(action) => {
                warn!(event = "external_change", shadow = true, read = journal.read,
                    intent = ?journal.intent, current = ?current_max, orderIds = %Ids(&journal.orders),
                    "shadow mode: the discount was changed outside; the sync would keep its value");
                JournalPlan::MarkOrders(action)
            }
            Resolution::NotApplied => {
                JournalPlan::Write(plan_steps(discount, &current, &journal.orders))
            }
        };
        match &plan {
            JournalPlan::MarkOrders(action) => info!(event = "shadow_journal", shadow = true,
                orderIds = %Ids(&journal.orders), %action, write = "none",
                "shadow mode: would mark the journal's orders ({action}) and clear it"),
            JournalPlan::Write(steps) => {
                for step in steps {
                    self.report_step(step);
                }
                info!(event = "shadow_journal", shadow = true, orderIds = %Ids(&journal.orders),
                    "shadow mode: would make the journaled write again, then mark the orders");
            }
        }
        Looked::WouldSettle
    }
}

fn failed(err: &SyncError) -> Looked {
    warn!(event = "reconciliation_failed", shadow = true, error = %crate::error_chain(err),
        "shadow mode: journal not read; the next run tries again");
    Looked::Failed
}
