//! The discount's lease: taken before anything is counted, waited for while another
//! invocation holds it, given up when no write is pending.
//!
//! Contention on a hot code is not a failure. A holder keeps the lease for one read and
//! one coalesced write (a fraction of a second), so a waiter polls for the release with
//! short, growing, jittered pauses, for up to 3 s while its deadline leaves time to sync.
//! A holder that outlasts that (slow Polar, or dead) has the messages sent back, to
//! return no later than the holder's own deadline (or the lease's expiry, if that passed).

use std::time::{Duration, SystemTime};

use tracing::warn;

use super::{Left, SyncError, Syncer, START_MARGIN};
use crate::backoff::Backoff;
use crate::deadline::{epoch_ms, Deadline};
use crate::domain::{DiscountId, Journal, OrderId};
use crate::ports::{Acquisition, Coordination, Discounts, Lease, OrderLedger};

/// How long a lease outlives its invocation's deadline. Longer than the Polar request
/// timeout, so a write still in flight when an invocation dies has landed (or failed)
/// before anyone else may read the discount.
pub const LEASE_GRACE: Duration = Duration::from_secs(10);
/// How long a waiter looks for the release before sending its messages back. Bounded:
/// every look is a DynamoDB request, and a waiter's other discounts wait with it.
const LEASE_WAIT: Duration = Duration::from_secs(3);
/// The pauses between looks at a held lease: short at first, since most holders are
/// about to finish, then growing a little so that many waiters do not hammer the table.
/// Capped low: a long pause lets a newcomer, still looking every 20 ms, take the lease
/// ahead of a waiter that has waited longer, which then runs out of waiting time.
const LEASE_POLL: Backoff = Backoff {
    base: Duration::from_millis(20),
    max: Duration::from_millis(100),
};

/// The lease could not be had, and which orders the holder's pending journal covers.
pub(super) struct LeaseRefused {
    pub error: SyncError,
    pub journaled: Vec<OrderId>,
}

impl<S: OrderLedger + Coordination, D: Discounts> Syncer<S, D> {
    /// Takes the discount's lease, waiting while another invocation holds it and time
    /// allows. Returns the journal a previous holder left unfinished, if any.
    pub(super) async fn acquire(
        &self,
        discount: DiscountId,
        lease: &Lease,
        deadline: Deadline,
    ) -> Result<Option<Journal>, LeaseRefused> {
        let mut looks = 1;
        let mut waited = Duration::ZERO;
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
                    let pause = LEASE_POLL.equal_jitter(looks);
                    // A holder past its own deadline is dead or left a write pending: its
                    // lease frees only at expiry, so waiting is pointless if that is too late.
                    let now_ms = epoch_ms(SystemTime::now());
                    let holder_gone =
                        expires_at_ms.saturating_sub(LEASE_GRACE.as_millis() as u64) <= now_ms;
                    let frees_too_late =
                        expires_at_ms + START_MARGIN.as_millis() as u64 > deadline.epoch_ms();
                    if (holder_gone && frees_too_late)
                        || waited + pause > LEASE_WAIT
                        || deadline.remaining() < pause + START_MARGIN
                    {
                        return Err(LeaseRefused {
                            error: SyncError::LeaseHeld {
                                discount,
                                expires_at_ms,
                            },
                            journaled,
                        });
                    }
                    tokio::time::sleep(pause).await;
                    waited += pause;
                    looks += 1;
                }
            }
        }
    }

    /// Gives the lease up as a failure's leftovers allow: with its own refused journal,
    /// without touching an inherited one, or not at all while a write may still land.
    pub(super) async fn give_up_after(&self, discount: DiscountId, lease: &Lease, left: Left) {
        let released = match left {
            Left::Nothing => self.store.release_dropping_journal(discount, lease).await,
            Left::Journal => self.store.release_keeping_journal(discount, lease).await,
            Left::WriteInFlight => return,
        };
        if let Err(err) = released {
            warn!(error = %crate::error_chain(&err), discountId = %discount,
                "could not release the lease; it will expire");
        }
    }
}
