//! The two outside systems the sync talks to, as small traits shaped by the use case.
//! One adapter per backend lives in `adapters`; an in-memory pair backs the fast tests.

use std::future::Future;
use std::time::SystemTime;

use uuid::Uuid;

use crate::adapters::polar::{Discount, PolarError};
use crate::adapters::StoreError;
use crate::domain::{DiscountId, OrderId, SyncAction};

/// An exclusive, expiring right to sync one order, held by one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub token: Uuid,
    /// Epoch milliseconds after which anyone may take the claim over.
    pub expires_at_ms: u64,
}

/// The order as the checkout service wrote it: the source of truth for which
/// discount was used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRecord {
    pub discount_id: Option<String>,
    pub discount_code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    Claimed(OrderRecord),
    AlreadySynced(OrderRecord),
    NotFound,
    /// Another invocation holds a live claim until `expires_at_ms`.
    HeldElsewhere {
        expires_at_ms: u64,
    },
}

/// The orders table, seen as a ledger of which orders are reflected on Polar.
pub trait OrderLedger: Send + Sync {
    /// Atomically read the order and claim it, unless it is missing, already synced,
    /// or claimed by someone else whose claim has not expired at `now_ms`.
    fn claim(
        &self,
        order: &OrderId,
        claim: &Claim,
        now_ms: u64,
    ) -> impl Future<Output = Result<ClaimOutcome, StoreError>> + Send;

    /// Record the action and drop the claim. Fails with `StoreError::AlreadySynced`
    /// if the order was marked meanwhile.
    fn mark_synced(
        &self,
        order: &OrderId,
        action: SyncAction,
        at: SystemTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Give the claim back early so a retry need not wait for it to expire.
    fn release(
        &self,
        order: &OrderId,
        claim: &Claim,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Polar's discount endpoints, reduced to what the sync needs. `None` and
/// `Gone` mean Polar answered 404 `ResourceNotFound`.
pub trait Discounts: Send + Sync {
    fn get(
        &self,
        id: DiscountId,
    ) -> impl Future<Output = Result<Option<Discount>, PolarError>> + Send;

    fn set_max_redemptions(
        &self,
        id: DiscountId,
        max_redemptions: i64,
    ) -> impl Future<Output = Result<Option<Discount>, PolarError>> + Send;

    fn delete(&self, id: DiscountId) -> impl Future<Output = Result<Deletion, PolarError>> + Send;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    Deleted,
    Gone,
}
