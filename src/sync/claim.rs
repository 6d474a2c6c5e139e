//! Claims: each order of the group is tagged for this lease in one conditional write,
//! only if it names the message's discount and code. The claim decides a message on its
//! own when the order is missing, already synced, or names another discount; the others
//! go on to be counted.

use std::collections::HashMap;
use std::sync::Arc;

use super::validate::{ensure_message_matches, mismatched_order};
use super::{Outcome, Step, SyncError, Synced, Syncer};
use crate::deadline::Deadline;
use crate::domain::SyncRequest;
use crate::ports::{ClaimOutcome, Coordination, Discounts, Lease, OrderLedger};

/// One claim per distinct message: duplicates share it, and a message naming another
/// discount for the same order gets its own (refused) claim.
type Claims<'a> = HashMap<&'a SyncRequest, Result<ClaimOutcome, Arc<SyncError>>>;

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
        let mut claims: Claims<'a> = HashMap::new();
        for request in requests {
            if !claims.contains_key(request) {
                let claim = self
                    .with_store_retry(deadline, || self.store.claim(request, lease))
                    .await
                    .map_err(|err| Arc::new(err.into()));
                self.reached(Step::ClaimTaken);
                claims.insert(request, claim);
            }
        }
        decide_from_claims(requests, &claims)
    }
}

fn decide_from_claims<'a>(
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
