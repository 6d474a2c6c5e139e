//! The discount's lease: taken before anything is counted, waited for briefly when a live
//! invocation holds it, given up when no write is pending.

use std::time::{Duration, SystemTime};

use tracing::warn;

use super::{SyncError, Syncer, START_MARGIN};
use crate::deadline::{epoch_ms, Deadline};
use crate::domain::{DiscountId, Journal, OrderId};
use crate::failure::RetryHint;
use crate::ports::{Acquisition, Coordination, Discounts, Lease, OrderLedger};

/// How long a lease outlives its invocation's deadline. Longer than the Polar request
/// timeout, so a write still in flight when an invocation dies has landed (or failed)
/// before anyone else may read the discount.
pub const LEASE_GRACE: Duration = Duration::from_secs(10);
/// How long to wait for a lease held elsewhere before sending the messages back.
const LEASE_WAIT: Duration = Duration::from_secs(3);

/// The lease could not be had, and which orders the holder's pending journal covers.
pub(super) struct LeaseRefused {
    pub error: SyncError,
    pub journaled: Vec<OrderId>,
}

impl<S: OrderLedger + Coordination, D: Discounts> Syncer<S, D> {
    /// Takes the discount's lease, waiting briefly if a live invocation holds it. Returns
    /// the journal a previous holder left unfinished, if any.
    pub(super) async fn acquire(
        &self,
        discount: DiscountId,
        lease: &Lease,
        deadline: Deadline,
    ) -> Result<Option<Journal>, LeaseRefused> {
        let mut waited = Duration::ZERO;
        let mut attempt = 1;
        loop {
            let acquisition = self
                .with_store_retry(deadline, || {
                    self.store
                        .acquire(discount, lease, epoch_ms(SystemTime::now()))
                })
                .await
                .map_err(|err| LeaseRefused {
                    error: err.into(),
                    journaled: Vec::new(),
                })?;
            match acquisition {
                Acquisition::Acquired { pending } => return Ok(pending),
                Acquisition::Held {
                    expires_at_ms,
                    journaled,
                } => {
                    let delay = self
                        .retry
                        .delay(attempt, RetryHint { not_before: None })
                        .max(Duration::from_millis(20));
                    if waited + delay > LEASE_WAIT || deadline.remaining() < delay + START_MARGIN {
                        return Err(LeaseRefused {
                            error: SyncError::LeaseHeld {
                                discount,
                                expires_at_ms,
                            },
                            journaled,
                        });
                    }
                    tokio::time::sleep(delay).await;
                    waited += delay;
                    attempt += 1;
                }
            }
        }
    }

    /// Gives the lease up (and clears the journal): only when no write is pending.
    pub(super) async fn release(&self, discount: DiscountId, lease: &Lease) {
        if let Err(err) = self.store.release(discount, lease).await {
            warn!(error = %crate::error_chain(&err), discount_id = %discount,
                "could not release the lease; it will expire");
        }
    }
}
