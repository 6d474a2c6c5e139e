//! The outside systems the sync talks to, as small traits shaped by the use case.
//! One adapter per backend lives in `adapters`; in-memory ones back the fast tests.

use std::future::Future;
use std::time::{Duration, SystemTime};

use uuid::Uuid;

use crate::adapters::polar::{Discount, PolarError};
use crate::adapters::{QueueError, StoreError};
use crate::domain::{DiscountId, Journal, OrderId, SyncAction};
use crate::failure::FailureClass;

/// The order as the checkout service wrote it: the source of truth for which
/// discount was used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRecord {
    pub discount_id: Option<String>,
    pub discount_code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// Not synced yet: it may be counted under the caller's lease.
    Claimed(OrderRecord),
    AlreadySynced(OrderRecord),
    NotFound,
}

/// The orders table, seen as a ledger of which orders are reflected on Polar.
pub trait OrderLedger: Send + Sync {
    /// Reads the order and, unless it is missing or already synced, tags it with the
    /// lease that is about to count it, in one conditional write.
    fn claim(
        &self,
        order: &OrderId,
        lease: &Lease,
    ) -> impl Future<Output = Result<ClaimOutcome, StoreError>> + Send;
}

/// The exclusive right to change one discount on Polar, held by one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub token: Uuid,
    /// Epoch milliseconds after which another invocation may take the lease over.
    pub expires_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquisition {
    /// The lease is ours; `pending` is a journal left by a holder that did not finish.
    Acquired { pending: Option<Journal> },
    /// Another invocation holds the lease until `expires_at_ms`.
    Held { expires_at_ms: u64 },
}

/// Per-discount coordination in `SYNC_TABLE`: the lease and the intent journal.
pub trait DiscountLocks: Send + Sync {
    fn acquire(
        &self,
        discount: DiscountId,
        lease: &Lease,
        now_ms: u64,
    ) -> impl Future<Output = Result<Acquisition, StoreError>> + Send;

    /// Fails with `StoreError::LeaseLost` if the lease is no longer ours.
    fn record_intent(
        &self,
        discount: DiscountId,
        lease: &Lease,
        journal: &Journal,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Marks `orders` as synced with `action` and clears the journal in one step where the
    /// store allows it; gives the lease up too when `release` is set.
    fn complete(
        &self,
        discount: DiscountId,
        lease: &Lease,
        orders: &[OrderId],
        action: SyncAction,
        at: SystemTime,
        release: bool,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Gives the lease up. The journal is cleared too: only call this when no write is
    /// pending or the pending write is known not to have happened.
    fn release(
        &self,
        discount: DiscountId,
        lease: &Lease,
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

/// A received SQS message, as far as redelivery needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub message_id: String,
    pub body: Option<String>,
    pub receipt_handle: Option<String>,
    /// The source queue's ARN (`eventSourceARN`).
    pub source_arn: Option<String>,
    /// `ApproximateReceiveCount`: 1 on the first delivery.
    pub receive_count: u32,
    /// `MessageGroupId` on FIFO queues.
    pub group_id: Option<String>,
}

/// Why a message went to the dead-letter queue, carried as message attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterReason {
    pub class: FailureClass,
    pub kind: &'static str,
    pub reason: String,
}

/// The SQS side of a failure: a later delivery, or the dead-letter queue.
pub trait Queue: Send + Sync {
    /// Makes the message visible again only after `after`.
    fn retry_later(
        &self,
        delivery: &Delivery,
        after: Duration,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;

    fn dead_letter(
        &self,
        delivery: &Delivery,
        reason: &DeadLetterReason,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// The source queue's `maxReceiveCount`, if it has a redrive policy (read once).
    fn max_receive_count(
        &self,
        delivery: &Delivery,
    ) -> impl Future<Output = Result<Option<u32>, QueueError>> + Send;
}
