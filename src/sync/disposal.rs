//! What becomes of each message once its discount's step is over: a success reported, or
//! a failure disposed of: sent again as a new message while its discount is busy, made
//! visible again after a growing delay, or moved to the dead-letter queue with its reason.

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use tracing::{warn, Level};

use super::{Disposition, Outcome, RedeliveryPolicy, SyncError, Synced};
use crate::deadline::{epoch_ms, Deadline};
use crate::domain::{SyncAction, SyncRequest};
use crate::failure::FailureClass;
use crate::ports::{DeadLetterReason, Delivery, Queue, QueueFailure};
use crate::telemetry::{Count, Metrics};

/// A received message: its delivery, and its request if the body parsed.
pub(super) struct Message {
    pub delivery: Delivery,
    pub request: Result<SyncRequest, Arc<SyncError>>,
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

/// What the disposal of a batch's messages works with.
pub(super) struct Disposal<'a, Q> {
    pub queue: &'a Q,
    pub policy: &'a RedeliveryPolicy,
    pub metrics: &'a Metrics,
    /// Queue calls still running then are abandoned, so that the answer goes out in time.
    pub answer_by: Deadline,
}

/// A FIFO message left unprocessed behind its group's failure.
pub(super) fn report_held_back(message: &Message) {
    outcome_line!(
        Level::INFO,
        Named::of(message),
        "held_back",
        "not acknowledged: an earlier message of its group failed"
    );
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

pub(super) fn action_count(action: SyncAction) -> Count {
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

impl<Q: Queue> Disposal<'_, Q> {
    /// Reports a success, or disposes of a failure; true when the message is acknowledged.
    pub(super) async fn settle(&self, message: &Message, outcome: Outcome) -> bool {
        match outcome {
            Ok(synced) => {
                report_success(self.metrics, message, &synced);
                true
            }
            Err(error) => self.dispose(message, error).await,
        }
    }

    /// A queue call, unless the answer is due first: a message whose disposal did not
    /// finish is reported failed and comes back (a duplicate at worst), never lost.
    async fn in_time<T>(
        &self,
        call: impl Future<Output = Result<T, QueueFailure>>,
    ) -> Result<T, QueueFailure> {
        tokio::time::timeout(self.answer_by.remaining(), call)
            .await
            .unwrap_or(Err(QueueFailure::OutOfTime))
    }

    /// Decides and carries out what becomes of a failed message; true when it is acknowledged
    /// (it was sent again as a new message, or went to the dead-letter queue).
    async fn dispose(&self, message: &Message, error: Arc<SyncError>) -> bool {
        let (queue, policy, metrics) = (self.queue, self.policy, self.metrics);
        let delivery = &message.delivery;
        let named = Named::of(message);
        let message_id = delivery.message_id.as_str();
        let kind = error.kind();
        let class = error.class();
        let reason = crate::error_chain(&*error);
        metrics.count(failure_count(&error), 1);
        let age = delivery.age(epoch_ms(SystemTime::now()));
        if !delivery.from_fifo_queue() && policy.may_send_again(delivery.requeues, age) {
            if let Some(after) = policy.requeue_after(&error, delivery.requeues) {
                match self.in_time(queue.requeue(delivery, after)).await {
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
        let max_receive_count = match self.in_time(queue.max_receive_count(delivery)).await {
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
                match self
                    .in_time(queue.dead_letter(delivery, &dead_letter))
                    .await
                {
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
                if let Err(err) = self.in_time(queue.retry_later(delivery, after)).await {
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
}
