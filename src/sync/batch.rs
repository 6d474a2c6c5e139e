//! One SQS batch: parse every record on its own, sync different discounts concurrently
//! and the same discount in order, and report exactly the messages to deliver again.

use std::collections::HashMap;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures_util::stream::{self, StreamExt};
use thiserror::Error;
use tracing::{error, info, info_span, warn, Instrument};

use super::{SyncError, Synced, Syncer};
use crate::deadline::Deadline;
use crate::domain::{DiscountId, MessageError, SyncRequest};
use crate::failure::FailureClass;
use crate::ports::{DiscountLocks, Discounts, OrderLedger};

/// A message is not started with less time than this left: it goes back to the queue untouched.
pub const START_MARGIN: Duration = Duration::from_secs(8);

#[derive(Debug, Error)]
pub enum BatchError {
    /// Without a message id a failure cannot be reported, so the whole batch is retried.
    #[error("SQS record {index} has no messageId")]
    MissingMessageId { index: usize },
}

struct Message {
    id: String,
    request: Result<SyncRequest, MessageError>,
}

pub async fn process_batch<S: OrderLedger + DiscountLocks, D: Discounts>(
    syncer: &Syncer<S, D>,
    event: SqsEvent,
    deadline: Deadline,
    max_concurrent_discounts: usize,
) -> Result<SqsBatchResponse, BatchError> {
    let messages = event
        .records
        .into_iter()
        .enumerate()
        .map(|(index, record)| parse(index, record))
        .collect::<Result<Vec<_>, _>>()?;

    let mut response = SqsBatchResponse::default();
    let mut groups: Vec<(DiscountId, Vec<(String, SyncRequest)>)> = Vec::new();
    let mut group_of: HashMap<DiscountId, usize> = HashMap::new();
    for Message { id, request } in messages {
        match request {
            Ok(request) => {
                let index = *group_of.entry(request.discount_id).or_insert_with(|| {
                    groups.push((request.discount_id, Vec::new()));
                    groups.len() - 1
                });
                groups[index].1.push((id, request));
            }
            Err(err) => {
                report(&id, &SyncError::from(err));
                response.add_failure(id);
            }
        }
    }

    let failed: Vec<Vec<String>> = stream::iter(groups)
        .map(|(discount_id, messages)| {
            sync_discount(syncer, discount_id, messages, deadline)
                .instrument(info_span!("discount", %discount_id))
        })
        .buffer_unordered(max_concurrent_discounts.max(1))
        .collect()
        .await;
    for id in failed.into_iter().flatten() {
        response.add_failure(id);
    }
    Ok(response)
}

fn parse(index: usize, record: SqsMessage) -> Result<Message, BatchError> {
    let id = record
        .message_id
        .ok_or(BatchError::MissingMessageId { index })?;
    let request = record
        .body
        .ok_or(MessageError::MissingBody)
        .and_then(|body| SyncRequest::parse(&body));
    Ok(Message { id, request })
}

/// Returns the ids of the messages that must be delivered again.
async fn sync_discount<S: OrderLedger + DiscountLocks, D: Discounts>(
    syncer: &Syncer<S, D>,
    discount: DiscountId,
    messages: Vec<(String, SyncRequest)>,
    deadline: Deadline,
) -> Vec<String> {
    if deadline.remaining() < START_MARGIN {
        let err = SyncError::DeadlineTooClose;
        return messages
            .into_iter()
            .map(|(id, _)| {
                report(&id, &err);
                id
            })
            .collect();
    }
    let (ids, requests): (Vec<String>, Vec<SyncRequest>) = messages.into_iter().unzip();
    let outcomes = syncer.sync_discount(discount, &requests, deadline).await;
    let mut failed = Vec::new();
    for ((id, request), outcome) in ids.into_iter().zip(&requests).zip(outcomes) {
        match outcome {
            Ok(Synced::Applied(action)) => {
                info!(message_id = %id, order_id = %request.order_id, %action, "order synced to Polar");
            }
            Ok(Synced::AlreadySynced) => {
                info!(message_id = %id, order_id = %request.order_id, "order already synced; nothing to do");
            }
            Err(err) => {
                report(&id, &err);
                failed.push(id);
            }
        }
    }
    failed
}

fn report(message_id: &str, err: &SyncError) {
    let chain = crate::error_chain(err);
    let kind = err.kind();
    match err.class() {
        FailureClass::Configuration => {
            error!(message_id, kind, class = "configuration", error = %chain,
                "CONFIGURATION ERROR: fix the deployment; the message will be retried");
        }
        FailureClass::Permanent => {
            error!(message_id, kind, class = "permanent", error = %chain, "message can never be synced");
        }
        FailureClass::Transient => {
            warn!(message_id, kind, class = "transient", error = %chain, "message will be retried");
        }
    }
}
