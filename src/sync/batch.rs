//! One SQS batch: parse every record on its own, sync each discount's messages together
//! (different discounts concurrently), then dispose of every failure: back to the queue after
//! a growing delay, or into the dead-letter queue with its reason.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures_util::future::join_all;
use futures_util::stream::{self, StreamExt};
use thiserror::Error;
use tracing::{info_span, warn, Instrument, Level};

use super::{Outcome, SyncError, Synced, Syncer, TurnedAway};
use crate::deadline::Deadline;
use crate::domain::{DiscountId, MessageError, SyncAction, SyncRequest};
use crate::failure::FailureClass;
use crate::ports::{
    Coordination, DeadLetterReason, Delivery, Discounts, OrderLedger, Queue, ORIGINAL_MESSAGE_ID,
    REQUEUE_COUNT,
};
use crate::redelivery::{Disposition, RedeliveryPolicy};
use crate::telemetry::{Count, Metrics};

/// A discount's messages are not started with less time than this left: they go back to
/// the queue untouched. Small on purpose: a step cut off by the deadline is a crash, which
/// the lease and the journal make safe, while a large margin would leave a function with a
/// short timeout (Lambda's default is 3 s) unable to sync anything.
pub const START_MARGIN: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// Discounts synced at the same time within one invocation.
    pub max_concurrent_discounts: usize,
    pub redelivery: RedeliveryPolicy,
}

#[derive(Debug, Error)]
pub enum BatchError {
    /// Without a message id a failure cannot be reported, so the whole batch is retried.
    #[error("SQS record {index} has no messageId")]
    MissingMessageId { index: usize },
}

pub(super) struct Message {
    pub(super) delivery: Delivery,
    pub(super) request: Result<SyncRequest, Arc<SyncError>>,
}

/// What every outcome line names, so that one Logs Insights query finds an order's history.
struct Named<'a> {
    message_id: &'a str,
    order_id: Option<&'a str>,
    discount_id: Option<String>,
    receive_count: u32,
}

impl<'a> Named<'a> {
    fn of(message: &'a Message) -> Self {
        let request = message.request.as_ref().ok();
        Self {
            message_id: &message.delivery.message_id,
            order_id: request.map(|r| r.order_id.as_str()),
            discount_id: request.map(|r| r.discount_id.to_string()),
            receive_count: message.delivery.receive_count,
        }
    }
}

/// One line per message and outcome: `messageId`, `orderId`, `discountId`, `receiveCount`,
/// `outcome`, then the action or the error.
macro_rules! outcome_line {
    ($level:expr, $named:expr, $outcome:expr, $($rest:tt)+) => {
        tracing::event!($level, messageId = $named.message_id, orderId = $named.order_id,
            discountId = $named.discount_id.as_deref(), receiveCount = $named.receive_count,
            outcome = $outcome, $($rest)+)
    };
}

pub async fn process_batch<S, D, Q>(
    syncer: &Syncer<S, D>,
    queue: &Q,
    settings: &BatchSettings,
    event: SqsEvent,
    deadline: Deadline,
) -> Result<SqsBatchResponse, BatchError>
where
    S: OrderLedger + Coordination,
    D: Discounts,
    Q: Queue,
{
    let messages = event
        .records
        .into_iter()
        .enumerate()
        .map(|(index, record)| parse(index, record))
        .collect::<Result<Vec<_>, _>>()?;
    let policy = &settings.redelivery;
    let metrics = syncer.metrics();
    let acknowledged: Vec<bool> = if messages.iter().any(|m| m.delivery.group_id.is_some()) {
        fifo(syncer, queue, policy, &messages, deadline).await
    } else {
        let outcomes = standard(
            syncer,
            &messages,
            deadline,
            settings.max_concurrent_discounts,
        )
        .await;
        join_all(
            messages
                .iter()
                .zip(outcomes)
                .map(|(message, outcome)| settle(queue, policy, metrics, message, outcome)),
        )
        .await
    };

    let mut response = SqsBatchResponse::default();
    for (message, acknowledged) in messages.iter().zip(acknowledged) {
        if !acknowledged {
            response.add_failure(message.delivery.message_id.clone());
        }
    }
    Ok(response)
}

pub(super) fn parse(index: usize, record: SqsMessage) -> Result<Message, BatchError> {
    let message_id = record
        .message_id
        .ok_or(BatchError::MissingMessageId { index })?;
    let request = record
        .body
        .as_deref()
        .ok_or(MessageError::MissingBody)
        .and_then(SyncRequest::parse)
        .map_err(|err| Arc::new(SyncError::InvalidMessage(err)));
    let receive_count = record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let delivery = Delivery {
        message_id,
        body: record.body,
        receipt_handle: record.receipt_handle,
        source_arn: record.event_source_arn,
        receive_count,
        group_id: record.attributes.get("MessageGroupId").cloned(),
        original_message_id: record
            .message_attributes
            .get(ORIGINAL_MESSAGE_ID)
            .and_then(|attribute| attribute.string_value.clone()),
        requeues: record
            .message_attributes
            .get(REQUEUE_COUNT)
            .and_then(|attribute| attribute.string_value.as_deref()?.parse().ok())
            .unwrap_or(0),
    };
    Ok(Message { delivery, request })
}

/// Standard queues: each discount's messages in one step, discounts concurrently.
async fn standard<S: OrderLedger + Coordination, D: Discounts>(
    syncer: &Syncer<S, D>,
    messages: &[Message],
    deadline: Deadline,
    max_concurrent_discounts: usize,
) -> Vec<Outcome> {
    let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(messages.len());
    let mut groups: Vec<(DiscountId, Vec<usize>)> = Vec::new();
    let mut group_of: HashMap<DiscountId, usize> = HashMap::new();
    for (index, message) in messages.iter().enumerate() {
        match &message.request {
            Ok(request) => {
                let group = *group_of.entry(request.discount_id).or_insert_with(|| {
                    groups.push((request.discount_id, Vec::new()));
                    groups.len() - 1
                });
                groups[group].1.push(index);
                outcomes.push(None);
            }
            Err(err) => outcomes.push(Some(Err(err.clone()))),
        }
    }

    let turned_away = &TurnedAway::default();
    let synced: Vec<(Vec<usize>, Vec<Outcome>)> = stream::iter(groups)
        .map(|(discount, indexes)| async move {
            let requests: Vec<SyncRequest> = indexes
                .iter()
                .filter_map(|&i| messages[i].request.as_ref().ok().cloned())
                .collect();
            let results = sync_discount(syncer, discount, &requests, deadline, turned_away)
                .instrument(info_span!("discount", discountId = %discount))
                .await;
            (indexes, results)
        })
        .buffer_unordered(max_concurrent_discounts.max(1))
        .collect()
        .await;
    for (indexes, results) in synced {
        for (index, result) in indexes.into_iter().zip(results) {
            outcomes[index] = Some(result);
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.expect("every message has an outcome"))
        .collect()
}

/// FIFO queues: message groups concurrently, each group in order. Consecutive messages of
/// one discount in a group are synced together (one coalesced write), claimed in order up
/// to the first that fails. Once a message of a group fails (and is not dead-lettered), it
/// and every later message of the group are reported failed, as SQS requires to keep the
/// order.
async fn fifo<S, D, Q>(
    syncer: &Syncer<S, D>,
    queue: &Q,
    policy: &RedeliveryPolicy,
    messages: &[Message],
    deadline: Deadline,
) -> Vec<bool>
where
    S: OrderLedger + Coordination,
    D: Discounts,
    Q: Queue,
{
    let mut groups: Vec<(Option<&str>, Vec<usize>)> = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        let group = message.delivery.group_id.as_deref();
        match groups.iter_mut().find(|(id, _)| *id == group) {
            Some((_, indexes)) => indexes.push(index),
            None => groups.push((group, vec![index])),
        }
    }
    let settled = join_all(
        groups
            .iter()
            .map(|(_, indexes)| fifo_group(syncer, queue, policy, messages, indexes, deadline)),
    )
    .await;
    let mut acknowledged = vec![false; messages.len()];
    for (index, ok) in settled.into_iter().flatten() {
        acknowledged[index] = ok;
    }
    acknowledged
}

async fn fifo_group<S, D, Q>(
    syncer: &Syncer<S, D>,
    queue: &Q,
    policy: &RedeliveryPolicy,
    messages: &[Message],
    indexes: &[usize],
    deadline: Deadline,
) -> Vec<(usize, bool)>
where
    S: OrderLedger + Coordination,
    D: Discounts,
    Q: Queue,
{
    let mut settled = Vec::with_capacity(indexes.len());
    let mut rest = indexes;
    while let Some(&first) = rest.first() {
        let (run, outcomes) = match &messages[first].request {
            Ok(request) => {
                let run_len = rest
                    .iter()
                    .take_while(|&&i| {
                        matches!(&messages[i].request, Ok(r) if r.discount_id == request.discount_id)
                    })
                    .count();
                let requests: Vec<SyncRequest> = rest[..run_len]
                    .iter()
                    .filter_map(|&i| messages[i].request.as_ref().ok().cloned())
                    .collect();
                let outcomes = if deadline.remaining() < START_MARGIN {
                    vec![Err(Arc::new(SyncError::DeadlineTooClose)); requests.len()]
                } else {
                    syncer
                        .sync_discount_in_order(request.discount_id, &requests, deadline)
                        .instrument(info_span!("discount", discountId = %request.discount_id))
                        .await
                };
                (&rest[..outcomes.len()], outcomes)
            }
            Err(err) => (&rest[..1], vec![Err(err.clone())]),
        };
        for (position, (&index, outcome)) in run.iter().zip(outcomes).enumerate() {
            let acknowledged =
                settle(queue, policy, syncer.metrics(), &messages[index], outcome).await;
            settled.push((index, acknowledged));
            if !acknowledged {
                for &held_back in run[position + 1..].iter().chain(&rest[run.len()..]) {
                    outcome_line!(
                        Level::INFO,
                        Named::of(&messages[held_back]),
                        "held_back",
                        "not acknowledged: an earlier message of its group failed"
                    );
                    settled.push((held_back, false));
                }
                return settled;
            }
        }
        rest = &rest[run.len()..];
    }
    settled
}

async fn sync_discount<S: OrderLedger + Coordination, D: Discounts>(
    syncer: &Syncer<S, D>,
    discount: DiscountId,
    requests: &[SyncRequest],
    deadline: Deadline,
    turned_away: &TurnedAway,
) -> Vec<Outcome> {
    if deadline.remaining() < START_MARGIN {
        return vec![Err(Arc::new(SyncError::DeadlineTooClose)); requests.len()];
    }
    syncer
        .sync_discount_of_batch(discount, requests, deadline, turned_away)
        .await
}

/// Reports a success, or disposes of a failure; true when the message is acknowledged.
async fn settle<Q: Queue>(
    queue: &Q,
    policy: &RedeliveryPolicy,
    metrics: &Metrics,
    message: &Message,
    outcome: Outcome,
) -> bool {
    match outcome {
        Ok(synced) => {
            report_success(metrics, message, &synced);
            true
        }
        Err(error) => dispose(queue, policy, metrics, message, error).await,
    }
}

fn report_success(metrics: &Metrics, message: &Message, synced: &Synced) {
    let named = Named::of(message);
    match synced {
        Synced::Applied(action) => {
            metrics.count(action_count(*action), 1);
            outcome_line!(Level::INFO, named, "synced", %action, "order synced to Polar");
        }
        Synced::AlreadySynced => {
            metrics.count(Count::OrdersAlreadySynced, 1);
            outcome_line!(
                Level::INFO,
                named,
                "already_synced",
                "order already synced; nothing to do"
            );
        }
    }
}

fn action_count(action: SyncAction) -> Count {
    match action {
        SyncAction::Decremented => Count::OrdersDecremented,
        SyncAction::Deleted => Count::OrdersDeleted,
        SyncAction::SkippedUnlimited => Count::OrdersSkippedUnlimited,
        SyncAction::AlreadyDeleted => Count::OrdersAlreadyDeleted,
    }
}

/// Contention is counted on its own: it is not a failure of the message.
fn failure_count(error: &SyncError) -> Count {
    match (error, error.class()) {
        (SyncError::LeaseHeld { .. }, _) => Count::LeaseContention,
        (_, FailureClass::Transient) => Count::TransientFailures,
        (_, FailureClass::Configuration) => Count::ConfigurationErrors,
        (_, FailureClass::Permanent) => Count::PermanentFailures,
    }
}

/// Decides and carries out what becomes of a failed message; true when it is acknowledged
/// (it was sent again as a new message, or went to the dead-letter queue).
async fn dispose<Q: Queue>(
    queue: &Q,
    policy: &RedeliveryPolicy,
    metrics: &Metrics,
    message: &Message,
    error: Arc<SyncError>,
) -> bool {
    let delivery = &message.delivery;
    let named = Named::of(message);
    let message_id = delivery.message_id.as_str();
    let kind = error.kind();
    let class = error.class();
    let reason = crate::error_chain(&*error);
    metrics.count(failure_count(&error), 1);
    if delivery.group_id.is_none() {
        if let Some(after) = policy.requeue_after(&error, delivery.requeues) {
            match queue.requeue(delivery, after).await {
                Ok(()) => {
                    outcome_line!(Level::INFO, named, "requeued", errorClass = %class,
                        errorKind = kind, visibleInMs = after.as_millis() as u64, reason = %reason,
                        "discount busy: message sent again as a new message");
                    return true;
                }
                Err(err) => warn!(messageId = message_id, error = %crate::error_chain(&err),
                    "could not send the message again; it goes back to the queue"),
            }
        }
    }
    let max_receive_count = match queue.max_receive_count(delivery).await {
        Ok(max) => max,
        Err(err) => {
            warn!(messageId = message_id, error = %crate::error_chain(&err),
                "could not read the queue's redrive policy");
            None
        }
    };
    match policy.decide(&error, delivery.receive_count, max_receive_count) {
        Disposition::DeadLetter { class } => {
            let dead_letter = DeadLetterReason {
                class,
                kind,
                reason: reason.clone(),
            };
            match queue.dead_letter(delivery, &dead_letter).await {
                Ok(()) => {
                    metrics.count(Count::DeadLettered, 1);
                    outcome_line!(Level::ERROR, named, "dead_lettered", errorClass = %class,
                        errorKind = kind, reason = %reason, "message moved to the dead-letter queue");
                    true
                }
                Err(err) => {
                    outcome_line!(Level::ERROR, named, "not_dead_lettered", errorClass = %class,
                        errorKind = kind, reason = %reason,
                        deadLetterError = %crate::error_chain(&err),
                        "could not dead-letter the message; it stays in the queue");
                    false
                }
            }
        }
        Disposition::RetryAfter(after) => {
            if let Err(err) = queue.retry_later(delivery, after).await {
                warn!(messageId = message_id, error = %crate::error_chain(&err),
                    "could not delay the redelivery; the queue's visibility timeout applies");
            }
            let retry_in_ms = after.as_millis() as u64;
            if class == FailureClass::Configuration {
                outcome_line!(Level::ERROR, named, "retried", errorClass = %class, errorKind = kind,
                    retryInMs = retry_in_ms, reason = %reason,
                    "CONFIGURATION ERROR: fix the deployment; the message will be retried");
            } else {
                outcome_line!(Level::WARN, named, "retried", errorClass = %class, errorKind = kind,
                    retryInMs = retry_in_ms, reason = %reason, "message will be retried");
            }
            false
        }
    }
}
