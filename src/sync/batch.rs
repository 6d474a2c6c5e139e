//! One SQS batch: parse every record on its own, sync each discount's messages together
//! (different discounts concurrently), then dispose of every failure: back to the queue after
//! a growing delay, or into the dead-letter queue with its reason.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures_util::future::join_all;
use futures_util::stream::{self, StreamExt};
use thiserror::Error;
use tracing::{info_span, Instrument};

use super::disposal::{report_held_back, Disposal, Message};
use super::{Outcome, RedeliveryPolicy, SyncError, Syncer, TurnedAway};
use crate::deadline::{epoch_ms, Deadline};
use crate::domain::{DiscountId, MessageError, SyncRequest};
use crate::ports::{
    Coordination, Delivery, Discounts, OrderLedger, Queue, FIRST_SENT_AT, ORIGINAL_MESSAGE_ID,
    REQUEUE_COUNT,
};
use crate::telemetry::Distribution;

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
    /// Kept at the end of the invocation for what follows the last step that may start:
    /// its commit, the disposal of every failure, and the answer. No step starts, and no
    /// Polar request is sent, within it.
    pub answer_reserve: Duration,
}

/// Kept at the very end for the answer itself: queue calls still running then are
/// abandoned, their messages reported failed.
const ANSWER_MARGIN: Duration = Duration::from_millis(250);

#[derive(Debug, Error)]
pub enum BatchError {
    /// Without a message id a failure cannot be reported, so the whole batch is retried.
    #[error("SQS record {index} has no messageId")]
    MissingMessageId { index: usize },
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
    let metrics = syncer.metrics();
    let disposal = Disposal {
        queue,
        policy: &settings.redelivery,
        metrics,
        answer_by: deadline.earlier_by(ANSWER_MARGIN),
    };
    // Never more than a quarter of the invocation, so that a short timeout still syncs.
    let deadline = deadline.earlier_by(settings.answer_reserve.min(deadline.remaining() / 4));
    let now_ms = epoch_ms(SystemTime::now());
    if let Some(oldest) = messages.iter().filter_map(|m| m.delivery.age(now_ms)).max() {
        metrics.observe(Distribution::OldestMessageAge, oldest.as_secs_f64());
    }
    let acknowledged: Vec<bool> = if messages.iter().any(|m| m.delivery.from_fifo_queue()) {
        fifo(syncer, &disposal, &messages, deadline).await
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
                .map(|(message, outcome)| disposal.settle(message, outcome)),
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
        first_sent_at_ms: record
            .message_attributes
            .get(FIRST_SENT_AT)
            .and_then(|attribute| attribute.string_value.as_deref())
            .or(record.attributes.get("SentTimestamp").map(String::as_str))
            .and_then(|ms| ms.parse().ok()),
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
    disposal: &Disposal<'_, Q>,
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
            .map(|(_, indexes)| fifo_group(syncer, disposal, messages, indexes, deadline)),
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
    disposal: &Disposal<'_, Q>,
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
            let acknowledged = disposal.settle(&messages[index], outcome).await;
            settled.push((index, acknowledged));
            if !acknowledged {
                for &held_back in run[position + 1..].iter().chain(&rest[run.len()..]) {
                    report_held_back(&messages[held_back]);
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
