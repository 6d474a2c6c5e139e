//! `SYNC_TABLE`: the per-discount lease, the intent journal, and the commit that marks a
//! step's orders and clears its journal in one transaction.

use std::collections::HashMap;
use std::time::SystemTime;

use aws_sdk_dynamodb::primitives::{DateTime, DateTimeFormat};
use aws_sdk_dynamodb::types::{
    AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure, Update,
};

use super::journal_codec::{decode_journal, encode_journal};
use super::orders::{refusal, spelled_as_in, Refusal};
use super::transactions::NotApplied;
use super::{
    discount_key, error, idle_ttl, is_condition_failure, number, refused_item, string, DynamoStore,
    HANDED_OFF, JOURNAL, LAST_STEP_MS, LEASE_EXPIRES_AT_MS, LEASE_TAKEN_AT_MS, LEASE_TOKEN, TTL,
};
use crate::domain::{DiscountCode, DiscountId, Journal, OrderId, SyncAction, SyncRequest};
use crate::ports::{
    Acquisition, ClaimOutcome, Committed, Coordination, HandOff, HeldLease, Lease, LeaseAfter,
    QuickStart, StoreFailure, MAX_HANDED_OVER,
};

#[derive(Clone, Copy)]
enum JournalAfter {
    Kept,
    Dropped,
}

impl DynamoStore {
    /// The discount update of `commit`: clear the journal and keep or release the lease.
    /// A release is refused while waiters' orders are on the hand-off list, unless told to
    /// ignore the list (then nothing is left on it but orders this commit marks); `taken`
    /// entries come off the list.
    fn finish_discount(
        &self,
        discount: DiscountId,
        lease: &Lease,
        lease_after: LeaseAfter,
        hand_offs: HandOffs,
    ) -> Update {
        let builder = Update::builder()
            .table_name(&self.sync_table)
            .key("pk", discount_key(discount))
            .expression_attribute_names("#owner", LEASE_TOKEN)
            .expression_attribute_names("#journal", JOURNAL)
            .expression_attribute_values(":token", string(&lease.token.to_string()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let (builder, delete) = match hand_offs {
            HandOffs::Refuse => (
                builder
                    .condition_expression("#owner = :token AND attribute_not_exists(#handedOff)")
                    .expression_attribute_names("#handedOff", HANDED_OFF),
                "",
            ),
            HandOffs::Take(taken) if !taken.is_empty() => (
                builder
                    .condition_expression("#owner = :token")
                    .expression_attribute_names("#handedOff", HANDED_OFF)
                    .expression_attribute_values(":taken", AttributeValue::Ss(taken)),
                " DELETE #handedOff :taken",
            ),
            HandOffs::Take(_) => (builder.condition_expression("#owner = :token"), ""),
        };
        let builder = if lease_after.releases() {
            builder
                .update_expression(format!(
                    "SET #ttl = :ttl, #step = :step REMOVE #journal, #owner, #until{delete}"
                ))
                .expression_attribute_names("#until", LEASE_EXPIRES_AT_MS)
                .expression_attribute_names("#ttl", TTL)
                .expression_attribute_names("#step", LAST_STEP_MS)
                .expression_attribute_values(":ttl", idle_ttl())
                .expression_attribute_values(":step", number(step_ms(lease)))
        } else {
            builder.update_expression(format!("REMOVE #journal{delete}"))
        };
        builder
            .build()
            .expect("table, key and update expression are set")
    }

    /// Marks `orders` and applies `finish`, in one transaction; one by one if an order
    /// could not be marked.
    async fn mark_and_finish(
        &self,
        orders: &[OrderId],
        action: SyncAction,
        at: &str,
        finish: Update,
    ) -> Result<(), Unfinished> {
        let updates = orders
            .iter()
            .map(|order| self.mark_order(order, action, at))
            .chain([finish.clone()]);
        let Err(not_applied) = self.transact(updates).await else {
            return Ok(());
        };
        let reasons = not_applied.reasons();
        let failed_condition =
            |reason: &Option<String>| reason.as_deref() == Some("ConditionalCheckFailed");
        match reasons.split_last() {
            Some((discount_reason, _)) if failed_condition(discount_reason) => Err(
                Unfinished::Refused(not_applied.refused_item(orders.len()).cloned()),
            ),
            Some((_, order_reasons)) if order_reasons.iter().any(failed_condition) => {
                self.mark_one_by_one(orders, action, at).await?;
                self.finish_alone(&finish).await
            }
            _ => Err(Unfinished::Failed(error::transaction_failure(
                "TransactWriteItems(commit)",
                &self.orders_table,
                not_applied,
            ))),
        }
    }

    /// Gives the lease up, if it is still ours. An item that keeps its journal keeps no
    /// TTL either, so a write still owed to Polar is never forgotten.
    async fn release(
        &self,
        discount: DiscountId,
        lease: &Lease,
        journal_after: JournalAfter,
    ) -> Result<(), StoreFailure> {
        let builder = self
            .update_discount(discount)
            .condition_expression("#owner = :token")
            .expression_attribute_names("#owner", LEASE_TOKEN)
            .expression_attribute_names("#until", LEASE_EXPIRES_AT_MS)
            .expression_attribute_values(":token", string(&lease.token.to_string()));
        let builder = match journal_after {
            JournalAfter::Kept => builder.update_expression("REMOVE #owner, #until"),
            JournalAfter::Dropped => builder
                .update_expression("SET #ttl = :ttl REMOVE #owner, #until, #journal")
                .expression_attribute_names("#journal", JOURNAL)
                .expression_attribute_names("#ttl", TTL)
                .expression_attribute_values(":ttl", idle_ttl()),
        };
        match builder.send().await {
            // Taken over after it expired: nothing of ours left to release.
            Err(err) if is_condition_failure(&err) => Ok(()),
            Err(err) => Err(self.sync_failure("UpdateItem(release)", err)),
            Ok(_) => Ok(()),
        }
    }

    /// Takes the lease if it is free, expired, or ours already (the SDK retried a request
    /// whose answer was lost); with `only_without_journal`, only if no journal is pending.
    fn take_lease(
        &self,
        discount: DiscountId,
        lease: &Lease,
        now_ms: u64,
        only_without_journal: bool,
    ) -> Update {
        let free = "(attribute_not_exists(#owner) OR #until < :now OR #owner = :token)";
        let builder = Update::builder()
            .table_name(&self.sync_table)
            .key("pk", discount_key(discount))
            .update_expression("SET #owner = :token, #until = :until, #taken = :taken REMOVE #ttl")
            .condition_expression(if only_without_journal {
                format!("{free} AND attribute_not_exists(#journal)")
            } else {
                free.to_owned()
            })
            .expression_attribute_names("#owner", LEASE_TOKEN)
            .expression_attribute_names("#until", LEASE_EXPIRES_AT_MS)
            .expression_attribute_names("#ttl", TTL)
            .expression_attribute_names("#taken", LEASE_TAKEN_AT_MS)
            .expression_attribute_values(":token", string(&lease.token.to_string()))
            .expression_attribute_values(":until", number(lease.expires_at_ms))
            .expression_attribute_values(":taken", number(lease.taken_at_ms))
            .expression_attribute_values(":now", number(now_ms));
        let builder = if only_without_journal {
            // A refusal then shows who holds the lease, so a waiter asks nothing more.
            builder.return_values_on_condition_check_failure(
                ReturnValuesOnConditionCheckFailure::AllOld,
            )
        } else {
            builder
        };
        let builder = if only_without_journal {
            builder.expression_attribute_names("#journal", JOURNAL)
        } else {
            builder
        };
        builder
            .build()
            .expect("table, key and update expression are set")
    }

    /// Marks orders one by one, skipping those already marked: the path when the
    /// all-or-nothing transaction found an order it could not mark.
    async fn mark_one_by_one(
        &self,
        orders: &[OrderId],
        action: SyncAction,
        at: &str,
    ) -> Result<(), Unfinished> {
        for order in orders {
            let mark = self.mark_order(order, action, at);
            let result = self.update_item(&mark).send().await;
            match result {
                Ok(_) => {}
                Err(err) if is_condition_failure(&err) => {
                    tracing::warn!(orderId = %order, "order was already marked or is gone; left as it is");
                }
                Err(err) => {
                    return Err(Unfinished::Failed(
                        self.order_failure("UpdateItem(mark)", err),
                    ))
                }
            }
        }
        Ok(())
    }

    async fn finish_alone(&self, finish: &Update) -> Result<(), Unfinished> {
        let result = self
            .update_item(finish)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let Err(err) = result else {
            return Ok(());
        };
        Err(
            match refused_item(err, |err| self.sync_failure("UpdateItem(finish)", err)) {
                Ok(found) => Unfinished::Refused(found),
                Err(failure) => Unfinished::Failed(failure),
            },
        )
    }
}

/// What the hand-off list does to a commit's discount update.
enum HandOffs {
    /// A release is refused while the list holds anything.
    Refuse,
    /// These entries come off the list; a release ignores what else it holds.
    Take(Vec<String>),
}

/// Why a commit's writes were not all applied.
enum Unfinished {
    /// The discount update's condition failed: the item it found, if returned.
    Refused(Option<HashMap<String, AttributeValue>>),
    Failed(StoreFailure),
}

/// A hand-off list entry: the order and the code as its message spells it.
fn hand_off_entry(request: &SyncRequest) -> String {
    serde_json::to_string(&[request.order_id.as_str(), request.discount_code.as_str()])
        .expect("two strings serialize")
}

/// The request a hand-off list entry stands for; `None` if it cannot be read.
fn handed_off_request(discount: DiscountId, entry: &str) -> Option<SyncRequest> {
    let (order, code): (String, String) = serde_json::from_str(entry).ok()?;
    Some(SyncRequest {
        order_id: OrderId::parse(order).ok()?,
        discount_id: discount,
        discount_code: DiscountCode::parse(code).ok()?,
    })
}

/// How long the step under `lease` has taken so far.
fn step_ms(lease: &Lease) -> u64 {
    crate::deadline::epoch_ms(SystemTime::now()).saturating_sub(lease.taken_at_ms)
}

fn number_of(item: &HashMap<String, AttributeValue>, name: &str) -> Option<u64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

/// The lease another invocation holds, from the item a refused write found.
fn held_lease(discount: DiscountId, item: &HashMap<String, AttributeValue>) -> HeldLease {
    let journaled = item
        .get(JOURNAL)
        .and_then(|journal| decode_journal(discount, journal).ok())
        .map(|journal| journal.orders)
        .unwrap_or_default();
    HeldLease::expecting(
        item.get(LEASE_TOKEN)
            .and_then(|token| token.as_s().ok())
            .and_then(|token| token.parse().ok()),
        number_of(item, LEASE_EXPIRES_AT_MS).unwrap_or(0),
        number_of(item, LEASE_TAKEN_AT_MS),
        number_of(item, LAST_STEP_MS),
        journaled,
    )
}

/// The claims a cancelled start refused, each with what its order tells, when every
/// refusal tells enough; `None` when a claim was refused for another reason (a conflict, an
/// order spelled otherwise).
fn refused_claims(
    claims: &[&SyncRequest],
    not_applied: &NotApplied,
) -> Option<Vec<(usize, ClaimOutcome)>> {
    let reasons = not_applied.reasons();
    let (_, claim_reasons) = reasons.split_first()?;
    let mut refused = Vec::new();
    for (index, reason) in claim_reasons.iter().enumerate() {
        match reason.as_deref() {
            None => {}
            Some("ConditionalCheckFailed") => {
                let request = claims[index];
                let order = not_applied
                    .refused_item(index + 1)
                    .filter(|order| !order.is_empty());
                match refusal(request, &spelled_as_in(request), order) {
                    Refusal::Decided(outcome) => refused.push((index, outcome)),
                    Refusal::SpelledOtherwise(_) => return None,
                }
            }
            Some(_) => return None,
        }
    }
    Some(refused)
}

impl Coordination for DynamoStore {
    async fn acquire(
        &self,
        discount: DiscountId,
        lease: &Lease,
        now_ms: u64,
    ) -> Result<Acquisition, StoreFailure> {
        let take = self.take_lease(discount, lease, now_ms, false);
        let result = self
            .update_item(&take)
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => {
                let pending = output
                    .attributes()
                    .and_then(|item| item.get(JOURNAL))
                    .map(|journal| decode_journal(discount, journal))
                    .transpose()?;
                Ok(Acquisition::Acquired { pending })
            }
            Err(err) => refused_item(err, |err| self.sync_failure("UpdateItem(acquire)", err))
                .map(|found| Acquisition::Held(held_lease(discount, &found.unwrap_or_default()))),
        }
    }

    async fn acquire_with_claims(
        &self,
        discount: DiscountId,
        lease: &Lease,
        now_ms: u64,
        claims: &[&SyncRequest],
    ) -> Result<QuickStart, StoreFailure> {
        let take_lease = self.take_lease(discount, lease, now_ms, true);
        let claim_updates = claims
            .iter()
            .map(|request| self.claim_order(request, lease));
        let result = self
            .transact(std::iter::once(take_lease).chain(claim_updates))
            .await;
        let Err(not_applied) = result else {
            return Ok(QuickStart::Started);
        };
        if matches!(not_applied, NotApplied::Failed(_)) {
            return Err(error::transaction_failure(
                "TransactWriteItems(lease and claims)",
                &self.sync_table,
                not_applied,
            ));
        }
        let held = not_applied.refused_item(0).filter(|item| {
            let live = number_of(item, LEASE_EXPIRES_AT_MS).is_some_and(|until| until >= now_ms);
            let other =
                item.get(LEASE_TOKEN).and_then(|v| v.as_s().ok()) != Some(&lease.token.to_string());
            live && other
        });
        if let Some(item) = held {
            return Ok(QuickStart::Held {
                held: held_lease(discount, item),
                refused: refused_claims(claims, &not_applied).unwrap_or_default(),
            });
        }
        if not_applied.reasons().first().is_some_and(Option::is_some) {
            return Ok(QuickStart::Declined);
        }
        Ok(refused_claims(claims, &not_applied)
            .filter(|refused| !refused.is_empty())
            .map_or(QuickStart::Declined, QuickStart::ClaimsRefused))
    }

    async fn record_intent(
        &self,
        discount: DiscountId,
        lease: &Lease,
        journal: &Journal,
    ) -> Result<(), StoreFailure> {
        let intent = Update::builder()
            .table_name(&self.sync_table)
            .key("pk", discount_key(discount))
            .update_expression("SET #journal = :journal")
            .condition_expression("#owner = :token")
            .expression_attribute_names("#journal", JOURNAL)
            .expression_attribute_names("#owner", LEASE_TOKEN)
            .expression_attribute_values(":journal", encode_journal(journal))
            .expression_attribute_values(":token", string(&lease.token.to_string()))
            .build()
            .expect("table, key and update expression are set");
        match self.transactions.apply_one(intent).await {
            Ok(()) => Ok(()),
            Err(NotApplied::Cancelled(reasons))
                if reasons
                    .iter()
                    .any(|r| r.code() == Some("ConditionalCheckFailed")) =>
            {
                Err(StoreFailure::LeaseLost(discount))
            }
            Err(not_applied) => Err(error::transaction_failure(
                "UpdateItem or TransactWriteItems(journal)",
                &self.sync_table,
                not_applied,
            )),
        }
    }

    async fn hand_off(
        &self,
        discount: DiscountId,
        held: &HeldLease,
        now_ms: u64,
        orders: &[&SyncRequest],
    ) -> Result<HandOff, StoreFailure> {
        let Some(holder) = held.holder else {
            return Ok(HandOff::NotHeld);
        };
        let entries = orders
            .iter()
            .map(|request| hand_off_entry(request))
            .collect();
        let result = self
            .update_discount(discount)
            .update_expression("ADD #handedOff :entries")
            .condition_expression("#owner = :holder AND #until >= :now")
            .expression_attribute_names("#handedOff", HANDED_OFF)
            .expression_attribute_names("#owner", LEASE_TOKEN)
            .expression_attribute_names("#until", LEASE_EXPIRES_AT_MS)
            .expression_attribute_values(":entries", AttributeValue::Ss(entries))
            .expression_attribute_values(":holder", string(&holder.to_string()))
            .expression_attribute_values(":now", number(now_ms))
            .send()
            .await;
        match result {
            Ok(_) => Ok(HandOff::Handed),
            Err(err) if is_condition_failure(&err) => Ok(HandOff::NotHeld),
            Err(err) => Err(self.sync_failure("UpdateItem(hand off)", err)),
        }
    }

    async fn commit(
        &self,
        discount: DiscountId,
        lease: &Lease,
        orders: &[OrderId],
        action: SyncAction,
        at: SystemTime,
        lease_after: LeaseAfter,
    ) -> Result<Committed, StoreFailure> {
        let at = DateTime::from(at)
            .fmt(DateTimeFormat::DateTime)
            .expect("a current time is within RFC 3339's range");
        let lost = || StoreFailure::LeaseLost(discount);
        let hand_offs = match lease_after {
            LeaseAfter::ReleasedOrHandedOver => HandOffs::Refuse,
            LeaseAfter::Released | LeaseAfter::Kept => HandOffs::Take(Vec::new()),
        };
        let finish = self.finish_discount(discount, lease, lease_after, hand_offs);
        let found = match self.mark_and_finish(orders, action, &at, finish).await {
            Ok(()) => return Ok(Committed::AsAsked),
            Err(Unfinished::Failed(failure)) => return Err(failure),
            Err(Unfinished::Refused(found)) => found.ok_or_else(lost)?,
        };
        let ours =
            found.get(LEASE_TOKEN).and_then(|v| v.as_s().ok()) == Some(&lease.token.to_string());
        let entries = found
            .get(HANDED_OFF)
            .and_then(|set| set.as_ss().ok())
            .filter(|_| ours && lease_after == LeaseAfter::ReleasedOrHandedOver)
            .ok_or_else(lost)?;
        // Entries for orders this commit marks, or unreadable, go; up to a step's worth of
        // the others are taken over.
        let mut off_the_list = Vec::new();
        let mut taken = Vec::new();
        for entry in entries {
            match handed_off_request(discount, entry) {
                Some(request)
                    if !orders.contains(&request.order_id) && taken.len() < MAX_HANDED_OVER =>
                {
                    taken.push(request);
                }
                Some(request) if !orders.contains(&request.order_id) => continue,
                _ => {}
            }
            off_the_list.push(entry.clone());
        }
        let lease_after = if taken.is_empty() {
            LeaseAfter::Released
        } else {
            LeaseAfter::Kept
        };
        let finish =
            self.finish_discount(discount, lease, lease_after, HandOffs::Take(off_the_list));
        match self.mark_and_finish(orders, action, &at, finish).await {
            Ok(()) if taken.is_empty() => Ok(Committed::AsAsked),
            Ok(()) => Ok(Committed::HandedOver(taken)),
            Err(Unfinished::Refused(_)) => Err(lost()),
            Err(Unfinished::Failed(failure)) => Err(failure),
        }
    }

    async fn release_keeping_journal(
        &self,
        discount: DiscountId,
        lease: &Lease,
    ) -> Result<(), StoreFailure> {
        self.release(discount, lease, JournalAfter::Kept).await
    }

    async fn release_dropping_journal(
        &self,
        discount: DiscountId,
        lease: &Lease,
    ) -> Result<(), StoreFailure> {
        self.release(discount, lease, JournalAfter::Dropped).await
    }
}
