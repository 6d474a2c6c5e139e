//! The use case: reflect one order's discount redemption on Polar, at most once per order.

mod batch;
mod error;
mod retry;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use tracing::{error, warn};
use uuid::Uuid;

pub use batch::process_batch;
pub use error::SyncError;
pub use retry::RetryPolicy;

use crate::adapters::polar::PolarError;
use crate::adapters::{epoch_ms, StoreError};
use crate::deadline::Deadline;
use crate::domain::{DiscountId, Plan, SyncAction, SyncRequest};

use crate::ports::{Claim, ClaimOutcome, Deletion, Discounts, OrderLedger, OrderRecord};

/// How long a claim outlives its invocation's deadline, so that a slow but live
/// invocation is never overtaken, while a dead one frees the order soon after.
pub const CLAIM_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synced {
    /// Polar was brought up to date by this invocation.
    Applied(SyncAction),
    /// The order had been synced before: nothing to do.
    AlreadySynced,
}

pub struct Syncer<L, D> {
    ledger: L,
    discounts: D,
    retry: RetryPolicy,
}

impl<L: OrderLedger, D: Discounts> Syncer<L, D> {
    pub fn new(ledger: L, discounts: D, retry: RetryPolicy) -> Self {
        Self {
            ledger,
            discounts,
            retry,
        }
    }

    pub async fn sync(
        &self,
        request: &SyncRequest,
        deadline: Deadline,
    ) -> Result<Synced, SyncError> {
        let claim = Claim {
            token: Uuid::new_v4(),
            expires_at_ms: deadline.epoch_ms() + CLAIM_GRACE.as_millis() as u64,
        };
        let outcome = self
            .store(deadline, || {
                self.ledger
                    .claim(&request.order_id, &claim, epoch_ms(SystemTime::now()))
            })
            .await?;
        let order = match outcome {
            ClaimOutcome::Claimed(order) => order,
            ClaimOutcome::AlreadySynced(order) => {
                ensure_message_matches(request, &order)?;
                return Ok(Synced::AlreadySynced);
            }
            ClaimOutcome::NotFound => {
                return Err(SyncError::OrderNotFound(request.order_id.clone()))
            }
            ClaimOutcome::HeldElsewhere { expires_at_ms } => {
                return Err(SyncError::ClaimHeld {
                    order: request.order_id.clone(),
                    expires_at_ms,
                })
            }
        };

        let applied = match ensure_message_matches(request, &order) {
            Ok(()) => self.apply(request, deadline).await,
            Err(err) => Err(err),
        };
        let action = match applied {
            Ok(action) => action,
            Err(err) => {
                if let Err(release) = self.ledger.release(&request.order_id, &claim).await {
                    warn!(error = %release, order_id = %request.order_id, "could not release the claim; it will expire");
                }
                return Err(err);
            }
        };

        let marked = self
            .store(deadline, || {
                self.ledger
                    .mark_synced(&request.order_id, action, SystemTime::now())
            })
            .await;
        if let Err(err) = marked {
            // The claim is kept, so that no retry repeats the write before it expires.
            error!(error = %err, order_id = %request.order_id, %action,
                "Polar was updated but the order could not be marked as synced");
            return Err(err.into());
        }
        Ok(Synced::Applied(action))
    }

    /// One GET, then at most one write, each retried in process while that is safe.
    async fn apply(
        &self,
        request: &SyncRequest,
        deadline: Deadline,
    ) -> Result<SyncAction, SyncError> {
        let id = request.discount_id;
        let Some(discount) = self.polar(deadline, || self.discounts.get(id)).await? else {
            return Ok(SyncAction::AlreadyDeleted);
        };
        if !discount
            .code
            .as_deref()
            .is_some_and(|code| request.discount_code.matches(code))
        {
            return Err(SyncError::DiscountCodeMismatch {
                order: request.order_id.clone(),
                discount: id,
                on_polar: discount.code,
                on_order: request.discount_code.to_string(),
            });
        }

        let plan = Plan::for_discount(discount.max_redemptions, 1);
        match plan {
            Plan::Skip => Ok(SyncAction::SkippedUnlimited),
            Plan::SetMaxRedemptions(max) => {
                let updated = self
                    .polar(deadline, || self.discounts.set_max_redemptions(id, max))
                    .await?;
                Ok(match updated {
                    Some(_) => plan.action(),
                    None => SyncAction::AlreadyDeleted,
                })
            }
            Plan::Delete { oversold_by } => {
                if oversold_by > 0 {
                    warn!(discount_id = %id, oversold_by, order_id = %request.order_id,
                        "discount was oversold before this redemption was synced");
                }
                self.delete(id, deadline).await
            }
        }
    }

    /// A DELETE that timed out may have been applied; if the retry then finds the
    /// discount gone, the deletion was ours.
    async fn delete(&self, id: DiscountId, deadline: Deadline) -> Result<SyncAction, SyncError> {
        let outcome_unknown = AtomicBool::new(false);
        let deletion = self
            .polar(deadline, || async {
                let result = self.discounts.delete(id).await;
                if result.as_ref().is_err_and(PolarError::outcome_unknown) {
                    outcome_unknown.store(true, Ordering::Relaxed);
                }
                result
            })
            .await?;
        Ok(match deletion {
            Deletion::Deleted => SyncAction::Deleted,
            Deletion::Gone if outcome_unknown.load(Ordering::Relaxed) => SyncAction::Deleted,
            Deletion::Gone => SyncAction::AlreadyDeleted,
        })
    }

    async fn polar<T, F, Fut>(&self, deadline: Deadline, call: F) -> Result<T, PolarError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, PolarError>>,
    {
        self.retry.run(deadline, PolarError::retry_hint, call).await
    }

    async fn store<T, F, Fut>(&self, deadline: Deadline, call: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        self.retry.run(deadline, StoreError::retry_hint, call).await
    }
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

#[cfg(test)]
mod tests;
