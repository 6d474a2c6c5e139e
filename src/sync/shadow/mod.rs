//! Shadow mode (`SHADOW_MODE=true`), for running beside another implementation before a
//! cutover: read the orders and Polar, plan each discount's writes exactly as the sync
//! would (the same checks, the same [`Plan`], the same steps of at most
//! [`MAX_ORDERS_PER_WRITE`] orders), log and count them, and write nothing.
//!
//! Nothing can be written because nothing that writes is given: this use case holds only
//! the read-only ports ([`OrderReader`], [`JournalIndex`], [`DiscountLookup`]) and no queue.
//! So every message is acknowledged; one the sync would dead-letter or retry is logged as
//! such (`would_dead_letter`, `would_retry`) and sent nowhere. A message is acknowledged
//! on its first receive, so the decision is the one the sync takes on a first receive.
//! A FIFO batch is planned like a standard one, one plan per discount: the same totals,
//! though the sync may split a discount's orders of one group into more writes. A record
//! without a `messageId`, for which the sync fails the whole invocation, is logged and
//! skipped: the others are still planned and acknowledged.

mod reconcile;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use futures_util::stream::{self, StreamExt};
use tracing::{info, warn, Level};

use super::batch::parse;
use super::disposal::Message;
use super::guarded_polar::GuardedPolar;
use super::validate::{code_mismatch, mismatched_order};
use super::{Disposition, RedeliveryPolicy};
use super::{RateLimiter, RetryPolicy, SyncError, MAX_ORDERS_PER_WRITE};
use crate::deadline::Deadline;
use crate::domain::{DiscountId, Intent, OrderId, Plan, SyncAction, SyncRequest};
use crate::failure::FailureClass;
use crate::ports::{
    DiscountLookup, JournalIndex, Lookup, OrderReader, OrderSnapshot, StoreFailure,
};
use crate::telemetry::{Count, Ids, Metrics, Recorded};

pub use reconcile::ShadowReconciliation;

/// Orders read at the same time; each is one `GetItem`.
const CONCURRENT_ORDER_READS: usize = 16;

/// What the sync would have done with one message.
#[derive(Debug, Clone)]
pub enum WouldBe {
    Synced(SyncAction),
    AlreadySynced,
    DeadLettered(Arc<SyncError>),
    Retried(Arc<SyncError>),
}

/// One write step the sync would make on a discount: `k` = `orders.len()` orders counted
/// against `before`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStep {
    pub discount: DiscountId,
    pub orders: Vec<OrderId>,
    /// `max_redemptions` as read (or as the step before would leave it); `None` when the
    /// discount is unlimited or gone.
    pub before: Option<i64>,
    pub action: SyncAction,
    /// The Polar write; `None` for `skipped_unlimited` and `already_deleted`.
    pub write: Option<Intent>,
    /// Redemptions beyond the limit when the step deletes the discount.
    pub oversold_by: u64,
}

/// A planned batch: each message's fate, in the batch's order, and the steps per discount.
#[derive(Debug, Default)]
pub struct ShadowBatch {
    pub messages: Vec<(String, WouldBe)>,
    pub steps: Vec<PlannedStep>,
}

impl ShadowBatch {
    /// Every message is acknowledged: none is reported as a batch item failure.
    pub fn response(&self) -> SqsBatchResponse {
        SqsBatchResponse::default()
    }
}

pub struct Shadow<S, D> {
    store: S,
    polar: GuardedPolar<D>,
    retry: RetryPolicy,
    redelivery: RedeliveryPolicy,
    max_concurrent_discounts: usize,
    metrics: Arc<Metrics>,
}

impl<S: OrderReader + JournalIndex, D: DiscountLookup> Shadow<S, D> {
    pub fn new(
        store: S,
        discounts: D,
        retry: RetryPolicy,
        redelivery: RedeliveryPolicy,
        max_concurrent_discounts: usize,
    ) -> Self {
        let metrics = Arc::new(Metrics::default());
        Self {
            store,
            polar: GuardedPolar::new(discounts, retry, metrics.clone()),
            retry,
            redelivery,
            max_concurrent_discounts: max_concurrent_discounts.max(1),
            metrics,
        }
    }

    /// Its reads spend at most this container's share of Polar's rate limit.
    pub fn with_rate_limiter(mut self, rate: RateLimiter) -> Self {
        self.polar = self.polar.with_rate_limiter(rate);
        self
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    #[cfg(test)]
    pub(crate) fn store(&self) -> &S {
        &self.store
    }

    #[cfg(test)]
    pub(crate) fn discounts(&self) -> &D {
        self.polar.port()
    }

    /// Plans the batch, logs one line per message and one per planned step, and counts
    /// them. Writes nothing.
    pub async fn plan_batch(&self, event: SqsEvent, deadline: Deadline) -> ShadowBatch {
        let mut messages = Vec::with_capacity(event.records.len());
        for (index, record) in event.records.into_iter().enumerate() {
            match parse(index, record) {
                Ok(message) => messages.push(message),
                Err(err) => warn!(outcome = "would_fail_invocation", error = %err,
                    "shadow mode: the sync would fail the whole invocation; this record is skipped"),
            }
        }
        let orders = self.read_orders(&messages, deadline).await;

        let mut fates: Vec<Option<WouldBe>> = Vec::with_capacity(messages.len());
        let mut to_count: Vec<(DiscountId, Vec<SyncRequest>)> = Vec::new();
        for message in &messages {
            let fate = match &message.request {
                Err(err) => Some(Err(err.clone())),
                Ok(request) => match &orders[&request.order_id] {
                    Err(err) => Some(Err(err.clone())),
                    Ok(None) => Some(Err(Arc::new(SyncError::OrderNotFound(
                        request.order_id.clone(),
                    )))),
                    Ok(Some(order)) => self.fate_before_polar(request, order, &mut to_count),
                },
            };
            fates.push(fate.map(|fate| match fate {
                Ok(would_be) => would_be,
                Err(err) => self.failed(message, err),
            }));
        }

        let planned: Vec<DiscountPlan> = stream::iter(to_count)
            .map(|(discount, requests)| self.plan_discount(discount, requests, deadline))
            .buffer_unordered(self.max_concurrent_discounts)
            .collect()
            .await;
        let mut per_order: HashMap<(DiscountId, OrderId), Result<SyncAction, Arc<SyncError>>> =
            HashMap::new();
        let mut steps = Vec::new();
        for plan in planned {
            per_order.extend(plan.orders);
            steps.extend(plan.steps);
        }

        let mut batch = ShadowBatch {
            messages: Vec::with_capacity(messages.len()),
            steps,
        };
        for (message, fate) in messages.iter().zip(fates) {
            let would_be = fate.unwrap_or_else(|| {
                let request = message.request.as_ref().expect("only valid messages wait");
                match &per_order[&(request.discount_id, request.order_id.clone())] {
                    Ok(action) => WouldBe::Synced(*action),
                    Err(err) => self.failed(message, err.clone()),
                }
            });
            self.report(message, &would_be);
            batch
                .messages
                .push((message.delivery.message_id.clone(), would_be));
        }
        batch
    }

    /// Each distinct order of the batch, read once.
    async fn read_orders(
        &self,
        messages: &[Message],
        deadline: Deadline,
    ) -> HashMap<OrderId, Result<Option<OrderSnapshot>, Arc<SyncError>>> {
        let mut distinct: Vec<OrderId> = Vec::new();
        for message in messages {
            if let Ok(request) = &message.request {
                if !distinct.contains(&request.order_id) {
                    distinct.push(request.order_id.clone());
                }
            }
        }
        stream::iter(distinct)
            .map(|order| async move {
                let read = self
                    .retry
                    .run(deadline, StoreFailure::retry_hint, || {
                        self.store.read_order(&order)
                    })
                    .await
                    .map_err(|err| Arc::new(SyncError::from(err)));
                (order, read)
            })
            .buffer_unordered(CONCURRENT_ORDER_READS)
            .collect()
            .await
    }

    /// What the order alone decides, as the sync's claim would; `None` for an order to
    /// count, which joins its discount's list (once per order).
    fn fate_before_polar(
        &self,
        request: &SyncRequest,
        order: &OrderSnapshot,
        to_count: &mut Vec<(DiscountId, Vec<SyncRequest>)>,
    ) -> Option<Result<WouldBe, Arc<SyncError>>> {
        let names_request = request
            .field_differing_from(
                order.record.discount_id.as_deref(),
                order.record.discount_code.as_deref(),
            )
            .is_none();
        if !names_request {
            return Some(Err(Arc::new(mismatched_order(request, &order.record))));
        }
        if order.synced {
            return Some(Ok(WouldBe::AlreadySynced));
        }
        let discount = request.discount_id;
        let position = match to_count.iter().position(|(d, _)| *d == discount) {
            Some(position) => position,
            None => {
                to_count.push((discount, Vec::new()));
                to_count.len() - 1
            }
        };
        let requests = &mut to_count[position].1;
        if !requests.iter().any(|r| r.order_id == request.order_id) {
            requests.push(request.clone());
        }
        None
    }

    /// One read of the discount, then the steps the sync would write.
    async fn plan_discount(
        &self,
        discount: DiscountId,
        requests: Vec<SyncRequest>,
        deadline: Deadline,
    ) -> DiscountPlan {
        let mut plan = DiscountPlan {
            orders: Vec::with_capacity(requests.len()),
            steps: Vec::new(),
        };
        let current = match self.polar.get(discount, deadline).await {
            Ok(current) => current,
            Err(failure) => {
                let err = Arc::new(SyncError::Polar(failure));
                plan.orders.extend(
                    requests
                        .iter()
                        .map(|r| ((discount, r.order_id.clone()), Err(err.clone()))),
                );
                return plan;
            }
        };
        let mut counted = Vec::new();
        for request in requests {
            match code_mismatch(&request, &current) {
                Some(err) => plan
                    .orders
                    .push(((discount, request.order_id.clone()), Err(Arc::new(err)))),
                None => counted.push(request),
            }
        }
        let orders: Vec<OrderId> = counted.iter().map(|r| r.order_id.clone()).collect();
        plan.steps = plan_steps(discount, &current, &orders);
        for step in &plan.steps {
            self.report_step(step);
        }
        let action_of: HashMap<&OrderId, SyncAction> = plan
            .steps
            .iter()
            .flat_map(|step| step.orders.iter().map(|order| (order, step.action)))
            .collect();
        plan.orders.extend(
            counted
                .iter()
                .map(|r| ((discount, r.order_id.clone()), Ok(action_of[&r.order_id]))),
        );
        plan
    }

    /// What the sync would do with a failed message on this receive.
    fn failed(&self, message: &Message, error: Arc<SyncError>) -> WouldBe {
        match self
            .redelivery
            .decide(&error, message.delivery.receive_count, None)
        {
            Disposition::DeadLetter { .. } => WouldBe::DeadLettered(error),
            Disposition::RetryAfter(_) => WouldBe::Retried(error),
        }
    }

    /// One line per message, with the fields of the sync's outcome lines.
    fn report(&self, message: &Message, would_be: &WouldBe) {
        let request = message.request.as_ref().ok();
        let message_id = message.delivery.message_id.as_str();
        let order_id = request.map(|r| r.order_id.as_str());
        let discount_id = request.map(|r| r.discount_id.to_string());
        let discount_id = discount_id.as_deref();
        let receive_count = message.delivery.receive_count;
        macro_rules! line {
            ($level:expr, $outcome:expr, $($rest:tt)+) => {
                tracing::event!($level, shadow = true, messageId = message_id,
                    orderId = order_id, discountId = discount_id, receiveCount = receive_count,
                    outcome = $outcome, $($rest)+)
            };
        }
        match would_be {
            WouldBe::Synced(action) => {
                self.metrics.count(shadow_count(*action), 1);
                line!(Level::INFO, "would_sync", %action,
                    "shadow mode: would sync the order to Polar ({action})");
            }
            WouldBe::AlreadySynced => {
                self.metrics.count(Count::OrdersAlreadySynced, 1);
                line!(
                    Level::INFO,
                    "already_synced",
                    "order already synced; nothing to do"
                );
            }
            WouldBe::DeadLettered(error) => {
                self.metrics.count(Count::ShadowWouldDeadLetter, 1);
                let reason = crate::error_chain(&**error);
                line!(Level::WARN, "would_dead_letter", errorClass = %FailureClass::Permanent,
                    errorKind = error.kind(), reason = %reason,
                    "shadow mode: would dead-letter: {reason}");
            }
            WouldBe::Retried(error) => {
                self.metrics.count(Count::ShadowWouldRetry, 1);
                let reason = crate::error_chain(&**error);
                let class = error.class();
                if class == FailureClass::Configuration {
                    line!(Level::ERROR, "would_retry", errorClass = %class, errorKind = error.kind(),
                        reason = %reason, "CONFIGURATION ERROR (shadow mode): would retry: {reason}");
                } else {
                    line!(Level::WARN, "would_retry", errorClass = %class, errorKind = error.kind(),
                        reason = %reason, "shadow mode: would retry: {reason}");
                }
            }
        }
    }

    /// One line per planned step: what would be written on Polar, and for which orders.
    fn report_step(&self, step: &PlannedStep) {
        let k = step.orders.len() as u64;
        let orders = Ids(&step.orders);
        let discount = step.discount.to_string();
        let action = step.action;
        match (step.write, step.before) {
            (Some(Intent::SetMaxRedemptions(after)), Some(before)) => {
                self.metrics.count(Count::ShadowPolarWrites, 1);
                info!(event = "shadow_plan", shadow = true, discountId = %discount, k, before, after, %action,
                    write = "PATCH", orderIds = %orders,
                    "shadow mode: would set max_redemptions from {before} to {after}");
            }
            (Some(Intent::Delete), Some(before)) => {
                self.metrics.count(Count::ShadowPolarWrites, 1);
                info!(event = "shadow_plan", shadow = true, discountId = %discount, k, before, after = 0_i64,
                    %action, write = "DELETE", oversoldBy = step.oversold_by, orderIds = %orders,
                    "shadow mode: would delete the discount (its last use)");
            }
            _ => {
                info!(event = "shadow_plan", shadow = true, discountId = %discount, k, %action, write = "none",
                orderIds = %orders, "shadow mode: would write nothing on Polar ({action})")
            }
        }
    }
}

/// What becomes of one order of one discount: the action it would be synced with.
type OrderFate = ((DiscountId, OrderId), Result<SyncAction, Arc<SyncError>>);

struct DiscountPlan {
    orders: Vec<OrderFate>,
    steps: Vec<PlannedStep>,
}

/// The steps the sync would make for `orders` on a discount read as `current`: one per
/// [`MAX_ORDERS_PER_WRITE`] orders, each planned from what the step before would leave.
pub fn plan_steps(discount: DiscountId, current: &Lookup, orders: &[OrderId]) -> Vec<PlannedStep> {
    // `None`: gone; `Some(None)`: unlimited.
    let mut limit: Option<Option<i64>> = match current {
        Lookup::Found(view) => Some(view.max_redemptions),
        Lookup::Deleted => None,
    };
    orders
        .chunks(MAX_ORDERS_PER_WRITE)
        .map(|chunk| {
            let k = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
            let step = |before, action, write, oversold_by| PlannedStep {
                discount,
                orders: chunk.to_vec(),
                before,
                action,
                write,
                oversold_by,
            };
            match limit {
                None => step(None, SyncAction::AlreadyDeleted, None, 0),
                Some(None) => step(None, SyncAction::SkippedUnlimited, None, 0),
                Some(Some(max)) => match Plan::for_discount(Some(max), k) {
                    Plan::SetMaxRedemptions(after) => {
                        limit = Some(Some(after));
                        let write = Intent::SetMaxRedemptions(after);
                        step(Some(max), write.action(), Some(write), 0)
                    }
                    Plan::Delete { oversold_by } => {
                        limit = None;
                        step(
                            Some(max),
                            SyncAction::Deleted,
                            Some(Intent::Delete),
                            oversold_by,
                        )
                    }
                    Plan::Skip => step(None, SyncAction::SkippedUnlimited, None, 0),
                },
            }
        })
        .collect()
}

fn shadow_count(action: SyncAction) -> Count {
    match action {
        SyncAction::Decremented => Count::ShadowOrdersDecremented,
        SyncAction::Deleted => Count::ShadowOrdersDeleted,
        SyncAction::SkippedUnlimited => Count::ShadowOrdersSkippedUnlimited,
        SyncAction::AlreadyDeleted => Count::ShadowOrdersAlreadyDeleted,
    }
}

/// The shadow batch's summary line (`event=shadow_invocation`).
pub fn summarize(recorded: &Recorded, messages: usize, started: Instant) {
    let would_sync = recorded.total(&[
        Count::ShadowOrdersDecremented,
        Count::ShadowOrdersDeleted,
        Count::ShadowOrdersSkippedUnlimited,
        Count::ShadowOrdersAlreadyDeleted,
    ]);
    let polar_requests = recorded.polar_requests();
    info!(
        event = "shadow_invocation",
        shadow = true,
        messages,
        wouldSync = would_sync,
        alreadySynced = recorded.count(Count::OrdersAlreadySynced),
        wouldDeadLetter = recorded.count(Count::ShadowWouldDeadLetter),
        wouldRetry = recorded.count(Count::ShadowWouldRetry),
        plannedWrites = recorded.count(Count::ShadowPolarWrites),
        notAcknowledged = 0_u64,
        polarRequests = polar_requests,
        durationMs = started.elapsed().as_millis() as u64,
        "shadow batch planned; nothing written, every message acknowledged"
    );
}
