//! Claims: each order of the group is tagged for this lease in one conditional write, only
//! if it names the message's discount and code. Usually the claims go with the lease in one
//! transaction (`Syncer::sync_quickly`); when that is declined, or on FIFO queues, they go
//! here: all at once, or in order for FIFO. The claim decides a message on its own when the
//! order is missing, already synced, or names another discount; the others go on to be
//! counted.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::join_all;

use super::validate::{ensure_message_matches, mismatched_order};
use super::{Outcome, Step, SyncError, Synced, Syncer};
use crate::deadline::Deadline;
use crate::domain::SyncRequest;
use crate::ports::{ClaimOutcome, Coordination, Discounts, Lease, OrderLedger};

/// One claim per distinct message: duplicates share it, and a message naming another
/// discount for the same order gets its own (refused) claim.
pub(super) type Claims<'a> = HashMap<&'a SyncRequest, Result<ClaimOutcome, Arc<SyncError>>>;

impl<S: OrderLedger + Coordination, D: Discounts> Syncer<S, D> {
    /// Claims every distinct message once. Returns, in the order of `requests`, the outcome
    /// of each message its claim decided (`None` for the others), and the requests to
    /// count, one per order.
    pub(super) async fn claim_all<'a>(
        &self,
        lease: &Lease,
        requests: &'a [SyncRequest],
        deadline: Deadline,
    ) -> (Vec<Option<Outcome>>, Vec<&'a SyncRequest>) {
        let distinct = distinct(requests);
        let claimed = join_all(
            distinct
                .iter()
                .map(|request| self.claim(request, lease, deadline)),
        )
        .await;
        let claims: Claims<'a> = distinct.into_iter().zip(claimed).collect();
        decide_from_claims(requests, &claims)
    }

    /// Claims in order and stops at the first message whose claim decides it as a failure:
    /// FIFO keeps the order, so nothing after it may be counted first. Returns the claimed
    /// prefix of `requests`, its decided outcomes, and the requests to count.
    pub(super) async fn claim_in_order<'a>(
        &self,
        lease: &Lease,
        requests: &'a [SyncRequest],
        deadline: Deadline,
    ) -> (
        &'a [SyncRequest],
        Vec<Option<Outcome>>,
        Vec<&'a SyncRequest>,
    ) {
        let mut claims: Claims<'a> = HashMap::new();
        let mut claimed = requests.len();
        for (position, request) in requests.iter().enumerate() {
            if !claims.contains_key(request) {
                let claim = self.claim(request, lease, deadline).await;
                let refused = match &claim {
                    Ok(ClaimOutcome::Claimed) => false,
                    Ok(ClaimOutcome::AlreadySynced(order)) => {
                        ensure_message_matches(request, order).is_err()
                    }
                    _ => true,
                };
                claims.insert(request, claim);
                if refused {
                    claimed = position + 1;
                    break;
                }
            }
        }
        let prefix = &requests[..claimed];
        let (decided, to_count) = decide_from_claims(prefix, &claims);
        (prefix, decided, to_count)
    }

    async fn claim(
        &self,
        request: &SyncRequest,
        lease: &Lease,
        deadline: Deadline,
    ) -> Result<ClaimOutcome, Arc<SyncError>> {
        let claim = self
            .with_store_retry(deadline, || self.store.claim(request, lease))
            .await
            .map_err(|err| Arc::new(err.into()));
        self.reached(Step::ClaimTaken);
        claim
    }
}

/// Each distinct message once, in order: duplicates of a message need one claim, and one
/// hand-off entry (a string set refuses the same entry twice).
pub(super) fn distinct(requests: &[SyncRequest]) -> Vec<&SyncRequest> {
    let mut distinct: Vec<&SyncRequest> = Vec::new();
    for request in requests {
        if !distinct.contains(&request) {
            distinct.push(request);
        }
    }
    distinct
}

pub(super) fn decide_from_claims<'a>(
    requests: &'a [SyncRequest],
    claims: &Claims<'_>,
) -> (Vec<Option<Outcome>>, Vec<&'a SyncRequest>) {
    let mut decided = Vec::with_capacity(requests.len());
    let mut to_count: Vec<&SyncRequest> = Vec::new();
    for request in requests {
        let outcome = match &claims[request] {
            Err(err) => Some(Err(err.clone())),
            Ok(ClaimOutcome::NotFound) => Some(Err(Arc::new(SyncError::OrderNotFound(
                request.order_id.clone(),
            )))),
            Ok(ClaimOutcome::AlreadySynced(order)) => Some(
                ensure_message_matches(request, order)
                    .map(|()| Synced::AlreadySynced)
                    .map_err(Arc::new),
            ),
            Ok(ClaimOutcome::Mismatched(order)) => {
                Some(Err(Arc::new(mismatched_order(request, order))))
            }
            Ok(ClaimOutcome::Claimed) => {
                if !to_count.iter().any(|r| r.order_id == request.order_id) {
                    to_count.push(request);
                }
                None
            }
        };
        decided.push(outcome);
    }
    (decided, to_count)
}
