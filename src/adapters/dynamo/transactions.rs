//! The container's transactions, sent together: while one `TransactWriteItems` is in
//! flight, the transactions that arrive meanwhile wait for it and then go out as one
//! request (group commit). A batch of ten discounts starts its ten steps at once and
//! commits them at about the same time; each group costs one request instead of ten, and
//! DynamoDB bills the same units. A transaction alone goes out at once, as before, after
//! one yield of its task: the transactions begun in the same tick (a batch begins its
//! discounts' steps one after another in one task) join its request, instead of the first
//! going out alone while the others are being begun.
//!
//! A single update may join a group too (the journal, written as the steps' Polar reads
//! come back together); sent alone, it goes out as an `UpdateItem`, which DynamoDB bills
//! half as much as a transaction's item.
//!
//! Each transaction stays all or nothing, and none is ever cancelled for another's sake:
//! when a group is cancelled, a transaction whose own items were all fine is sent again,
//! and only one whose own item was refused hears of it, with its own reasons.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, CancellationReason, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;
use tokio::sync::oneshot;

use crate::adapters::group::{self, Line};

/// DynamoDB's limit on the items of one transaction.
const MAX_ITEMS: usize = 100;

/// A request that failed as a whole; shared by every transaction sent with it.
#[derive(Debug, Clone)]
pub(super) enum Failed {
    Transaction(Arc<SdkError<TransactWriteItemsError, HttpResponse>>),
    Update(Arc<SdkError<UpdateItemError, HttpResponse>>),
}

/// Why a transaction was not applied. Nothing of it was written.
#[derive(Debug)]
pub(super) enum NotApplied {
    /// Cancelled because of the transaction's own items: one reason per item, in order.
    Cancelled(Vec<CancellationReason>),
    Failed(Failed),
}

impl NotApplied {
    /// The cancellation reasons' codes, one per item (`None` where the item was fine);
    /// empty when the request failed as a whole.
    pub(super) fn reasons(&self) -> Vec<Option<String>> {
        match self {
            Self::Cancelled(reasons) => reasons
                .iter()
                .map(|reason| {
                    reason
                        .code()
                        .filter(|code| *code != "None")
                        .map(str::to_owned)
                })
                .collect(),
            Self::Failed(_) => Vec::new(),
        }
    }

    /// The item the `index`th update found, when its condition failed and the update
    /// asked for it (`ReturnValuesOnConditionCheckFailure::AllOld`).
    pub(super) fn refused_item(&self, index: usize) -> Option<&HashMap<String, AttributeValue>> {
        let Self::Cancelled(reasons) = self else {
            return None;
        };
        let reason = reasons.get(index)?;
        (reason.code() == Some("ConditionalCheckFailed"))
            .then(|| reason.item())
            .flatten()
    }
}

#[derive(Debug)]
struct Waiting {
    updates: Vec<Update>,
    /// A single update, which goes out as an `UpdateItem` when nothing joins it.
    single: bool,
    answer: oneshot::Sender<Result<(), NotApplied>>,
}

/// The group commit of one container's `TransactWriteItems`.
#[derive(Debug, Clone)]
pub(super) struct Transactions {
    client: Client,
    line: Arc<Mutex<Line<Waiting>>>,
}

impl Transactions {
    pub(super) fn new(client: Client) -> Self {
        Self {
            client,
            line: Arc::default(),
        }
    }

    /// Applies `updates` all or nothing, alone or with the transactions that wait beside it.
    pub(super) async fn apply(&self, updates: Vec<Update>) -> Result<(), NotApplied> {
        self.enqueue(updates, false).await
    }

    /// Applies one update, alone (as an `UpdateItem`) or with the transactions that wait
    /// beside it.
    pub(super) async fn apply_one(&self, update: Update) -> Result<(), NotApplied> {
        self.enqueue(vec![update], true).await
    }

    async fn enqueue(&self, updates: Vec<Update>, single: bool) -> Result<(), NotApplied> {
        let (answer, answered) = oneshot::channel();
        let waiting = Waiting {
            updates,
            single,
            answer,
        };
        group::join(&self.line, waiting, answered, || {
            self.clone().send_while_waiting()
        })
        .await
    }

    async fn send_while_waiting(self) {
        loop {
            let Some(group) = self.line.lock().unwrap().next(take_group) else {
                return;
            };
            let innocent = self.send(group).await;
            // Cancelled only for others' items: first in line again, nothing was written.
            self.line.lock().unwrap().put_back(innocent);
        }
    }

    /// Sends one group and answers its transactions; returns those to send again.
    async fn send(&self, mut group: Vec<Waiting>) -> Vec<Waiting> {
        if let [Waiting { single: true, .. }] = group.as_slice() {
            let alone = group.pop().expect("a group of one");
            let _ = alone.answer.send(self.send_update(&alone.updates[0]).await);
            return Vec::new();
        }
        let items = group
            .iter()
            .flat_map(|waiting| &waiting.updates)
            .map(|update| TransactWriteItem::builder().update(update.clone()).build())
            .collect();
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        let err = match result {
            Ok(_) => {
                for waiting in group {
                    let _ = waiting.answer.send(Ok(()));
                }
                return Vec::new();
            }
            Err(err) => err,
        };
        let items: usize = group.iter().map(|waiting| waiting.updates.len()).sum();
        let reasons = match cancellation_reasons(&err) {
            Some(reasons) if reasons.len() == items => reasons,
            _ => {
                let failed = Failed::Transaction(Arc::new(err));
                for waiting in group {
                    let _ = waiting.answer.send(Err(NotApplied::Failed(failed.clone())));
                }
                return Vec::new();
            }
        };
        let mut reasons = reasons.into_iter();
        let owned: Vec<(Waiting, Vec<CancellationReason>)> = group
            .into_iter()
            .map(|waiting| {
                let own = reasons.by_ref().take(waiting.updates.len()).collect();
                (waiting, own)
            })
            .collect();
        // Sent again only when another's item was refused, so that each round answers one.
        let someone_refused = owned.iter().any(|(_, own)| !own.iter().all(is_fine));
        let mut innocent = Vec::new();
        for (waiting, own) in owned {
            if someone_refused && own.iter().all(is_fine) {
                innocent.push(waiting);
            } else {
                let _ = waiting.answer.send(Err(NotApplied::Cancelled(own)));
            }
        }
        innocent
    }

    async fn send_update(&self, update: &Update) -> Result<(), NotApplied> {
        match update_item(&self.client, update).send().await {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(service))
                if service.err().is_conditional_check_failed_exception() =>
            {
                let refused = CancellationReason::builder()
                    .code("ConditionalCheckFailed")
                    .build();
                Err(NotApplied::Cancelled(vec![refused]))
            }
            Err(err) => Err(NotApplied::Failed(Failed::Update(Arc::new(err)))),
        }
    }
}

/// An update built for a transaction, sent on its own as an `UpdateItem`.
pub(super) fn update_item(client: &Client, update: &Update) -> UpdateItemFluentBuilder {
    client
        .update_item()
        .table_name(update.table_name())
        .set_key(Some(update.key().clone()))
        .update_expression(update.update_expression())
        .set_condition_expression(update.condition_expression().map(str::to_owned))
        .set_expression_attribute_names(update.expression_attribute_names().cloned())
        .set_expression_attribute_values(update.expression_attribute_values().cloned())
}

/// The first waiting transactions, in order, that fit in one request and touch no item
/// twice (DynamoDB refuses such a request as a whole); the others stay in line.
fn take_group(waiting: &mut Vec<Waiting>) -> Vec<Waiting> {
    let mut group: Vec<Waiting> = Vec::new();
    let mut items = 0;
    let mut line = Vec::new();
    for next in waiting.drain(..) {
        let fits = items + next.updates.len() <= MAX_ITEMS || group.is_empty();
        let overlaps = group
            .iter()
            .flat_map(|taken| &taken.updates)
            .any(|taken| next.updates.iter().any(|update| same_item(taken, update)));
        if fits && !overlaps {
            items += next.updates.len();
            group.push(next);
        } else {
            line.push(next);
        }
    }
    *waiting = line;
    group
}

fn same_item(a: &Update, b: &Update) -> bool {
    a.table_name() == b.table_name() && a.key() == b.key()
}

fn is_fine(reason: &CancellationReason) -> bool {
    matches!(reason.code(), None | Some("None"))
}

fn cancellation_reasons(
    err: &SdkError<TransactWriteItemsError, HttpResponse>,
) -> Option<Vec<CancellationReason>> {
    let SdkError::ServiceError(service) = err else {
        return None;
    };
    let TransactWriteItemsError::TransactionCanceledException(cancelled) = service.err() else {
        return None;
    };
    Some(cancelled.cancellation_reasons().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting<K: ToString>(keys: impl IntoIterator<Item = K>) -> Waiting {
        let updates = keys
            .into_iter()
            .map(|key| {
                Update::builder()
                    .table_name("orders")
                    .key("id", AttributeValue::S(key.to_string()))
                    .update_expression("SET #a = :a")
                    .build()
                    .unwrap()
            })
            .collect();
        Waiting {
            updates,
            single: false,
            answer: oneshot::channel().0,
        }
    }

    fn sizes(group: &[Waiting]) -> Vec<usize> {
        group.iter().map(|waiting| waiting.updates.len()).collect()
    }

    #[test]
    fn a_group_takes_the_waiting_transactions_in_order_up_to_a_hundred_items() {
        let mut line = vec![
            waiting((0..60).map(|n| format!("a{n}"))),
            waiting((0..50).map(|n| format!("b{n}"))),
            waiting(["c"]),
        ];

        let group = take_group(&mut line);

        assert_eq!(sizes(&group), [60, 1], "the 50 would make 110: they wait");
        assert_eq!(sizes(&line), [50]);
    }

    #[test]
    fn transactions_that_touch_the_same_item_go_in_different_groups() {
        let mut line = vec![waiting(["a", "b"]), waiting(["c", "b"]), waiting(["d"])];

        let group = take_group(&mut line);

        assert_eq!(group.len(), 2);
        assert_eq!(group[1].updates[0].key()["id"].as_s().unwrap(), "d");
        assert_eq!(line.len(), 1, "the second touches b too: next group");
    }
}
