//! The Polar port as the use case calls it: every request first waits for a slot in the
//! container's rate budget, a 429 pauses them all, and reads and refused writes are
//! retried with backoff while the deadline allows. A write whose outcome is unknown is
//! never retried here.

use super::rate::RateLimiter;
use super::{RetryPolicy, START_MARGIN};
use crate::deadline::Deadline;
use crate::domain::{DiscountId, Intent};
use crate::ports::{Discounts, Lookup, PolarFailure, PolarFailureKind, WriteOutcome};

pub struct GuardedPolar<D> {
    discounts: D,
    retry: RetryPolicy,
    rate: Option<RateLimiter>,
}

impl<D: Discounts> GuardedPolar<D> {
    pub fn new(discounts: D, retry: RetryPolicy) -> Self {
        Self {
            discounts,
            retry,
            rate: None,
        }
    }

    pub fn with_rate_limiter(mut self, rate: RateLimiter) -> Self {
        self.rate = Some(rate);
        self
    }

    pub async fn get(&self, id: DiscountId, deadline: Deadline) -> Result<Lookup, PolarFailure> {
        self.retry
            .run(deadline, PolarFailure::retry_hint, || async {
                self.admit(deadline).await?;
                let lookup = self.discounts.get(id, deadline).await;
                if let Err(failure) = &lookup {
                    self.heed(failure);
                }
                lookup
            })
            .await
    }

    pub async fn write(&self, id: DiscountId, intent: Intent, deadline: Deadline) -> WriteOutcome {
        let answered = self
            .retry
            .run(deadline, PolarFailure::retry_hint, || async {
                self.admit(deadline).await?;
                let outcome = match intent {
                    Intent::SetMaxRedemptions(target) => {
                        self.discounts
                            .set_max_redemptions(id, target, deadline)
                            .await
                    }
                    Intent::Delete => self.discounts.delete(id, deadline).await,
                };
                match outcome {
                    WriteOutcome::NotApplied(failure) => {
                        self.heed(&failure);
                        Err(failure)
                    }
                    other => Ok(other),
                }
            })
            .await;
        answered.unwrap_or_else(WriteOutcome::NotApplied)
    }

    /// A 429 is about the organization's limit, not this request: every request of the
    /// container waits out its `retry-after`.
    fn heed(&self, failure: &PolarFailure) {
        if let (
            Some(rate),
            PolarFailureKind::RateLimited {
                retry_after: Some(retry_after),
            },
        ) = (&self.rate, failure.kind)
        {
            rate.pause_for(retry_after);
        }
    }

    /// Waits for a slot in the rate budget, for as long as new work may still start.
    async fn admit(&self, deadline: Deadline) -> Result<(), PolarFailure> {
        let Some(rate) = &self.rate else {
            return Ok(());
        };
        let max_wait = deadline.remaining().saturating_sub(START_MARGIN);
        rate.admit(max_wait).await.map_err(|over| {
            let ready_in = over.wait;
            PolarFailure::new(PolarFailureKind::OverBudget { ready_in }, over)
        })
    }

    #[cfg(test)]
    pub fn port(&self) -> &D {
        &self.discounts
    }
}
