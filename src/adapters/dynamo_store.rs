//! DynamoDB behind the ports: the orders table as the `OrderLedger`, and `SYNC_TABLE`
//! (one item per discount: lease, intent journal, TTL) as the `DiscountLocks`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::primitives::{DateTime, DateTimeFormat};
use aws_sdk_dynamodb::types::{
    AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;

use super::StoreError;
use crate::domain::{DiscountId, Intent, Journal, OrderId, SyncAction};
use crate::ports::{Acquisition, ClaimOutcome, DiscountLocks, Lease, OrderLedger, OrderRecord};

/// Order attributes of the contract (kept from the original implementation).
const SYNCED: &str = "polarDiscountSynced";
const ACTION: &str = "polarDiscountSyncAction";
const SYNCED_AT: &str = "polarDiscountSyncedAt";
/// The lease that last claimed an unsynced order: shows who was counting it.
const CLAIM: &str = "polarDiscountSyncClaim";
/// Written by the checkout service.
const DISCOUNT_ID: &str = "discountId";
const DISCOUNT_CODE: &str = "discountCode";

/// `SYNC_TABLE` attributes.
const LEASE_TOKEN: &str = "leaseToken";
const LEASE_EXPIRES_AT_MS: &str = "leaseExpiresAtMs";
const JOURNAL: &str = "journal";
const TTL: &str = "expiresAt";
/// An idle discount item is deleted by TTL this long after its last sync. Items that hold
/// a lease or a journal have no TTL, so a pending write is never forgotten.
const IDLE_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

const NOT_SYNCED: &str = "(attribute_not_exists(#synced) OR #synced <> :true)";

#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    orders_table: String,
    sync_table: String,
}

impl DynamoStore {
    pub fn new(
        client: Client,
        orders_table: impl Into<String>,
        sync_table: impl Into<String>,
    ) -> Self {
        Self {
            client,
            orders_table: orders_table.into(),
            sync_table: sync_table.into(),
        }
    }

    fn update_order(&self, order: &OrderId) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.orders_table)
            .key("id", string(order.as_str()))
    }

    fn update_discount(&self, discount: DiscountId) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.sync_table)
            .key("pk", discount_key(discount))
    }

    fn order_error(&self, operation: &'static str, err: SdkError<UpdateItemError>) -> StoreError {
        StoreError::from_sdk(operation, &self.orders_table, err)
    }

    fn sync_error(&self, operation: &'static str, err: SdkError<UpdateItemError>) -> StoreError {
        StoreError::from_sdk(operation, &self.sync_table, err)
    }

    /// The order update of `complete`, as a transaction item.
    fn mark_order(&self, order: &OrderId, action: SyncAction, at: &str) -> Update {
        Update::builder()
            .table_name(&self.orders_table)
            .key("id", string(order.as_str()))
            .update_expression("SET #synced = :true, #action = :action, #at = :at REMOVE #claim")
            .condition_expression(format!("attribute_exists(id) AND {NOT_SYNCED}"))
            .expression_attribute_names("#synced", SYNCED)
            .expression_attribute_names("#action", ACTION)
            .expression_attribute_names("#at", SYNCED_AT)
            .expression_attribute_names("#claim", CLAIM)
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .expression_attribute_values(":action", string(action.as_str()))
            .expression_attribute_values(":at", string(at))
            .build()
            .expect("table, key and update expression are set")
    }

    /// The discount update of `complete`: clear the journal and maybe release the lease.
    fn finish_discount(&self, discount: DiscountId, lease: &Lease, release: bool) -> Update {
        let builder = Update::builder()
            .table_name(&self.sync_table)
            .key("pk", discount_key(discount))
            .condition_expression("#owner = :token")
            .expression_attribute_names("#owner", LEASE_TOKEN)
            .expression_attribute_names("#journal", JOURNAL)
            .expression_attribute_values(":token", string(&lease.token.to_string()));
        let builder = if release {
            builder
                .update_expression("SET #ttl = :ttl REMOVE #journal, #owner, #until")
                .expression_attribute_names("#until", LEASE_EXPIRES_AT_MS)
                .expression_attribute_names("#ttl", TTL)
                .expression_attribute_values(":ttl", idle_ttl())
        } else {
            builder.update_expression("REMOVE #journal")
        };
        builder
            .build()
            .expect("table, key and update expression are set")
    }

    /// Marks orders one by one, skipping those already marked: the path when the
    /// all-or-nothing transaction found an order it could not mark.
    async fn complete_one_by_one(
        &self,
        discount: DiscountId,
        lease: &Lease,
        orders: &[OrderId],
        action: SyncAction,
        at: &str,
        release: bool,
    ) -> Result<(), StoreError> {
        for order in orders {
            let mark = self.mark_order(order, action, at);
            let result = self
                .update_order(order)
                .update_expression(mark.update_expression())
                .set_condition_expression(mark.condition_expression().map(str::to_owned))
                .set_expression_attribute_names(mark.expression_attribute_names().cloned())
                .set_expression_attribute_values(mark.expression_attribute_values().cloned())
                .send()
                .await;
            match result {
                Ok(_) => {}
                Err(err) if is_condition_failure(&err) => {
                    tracing::warn!(order_id = %order, "order was already marked or is gone; left as it is");
                }
                Err(err) => return Err(self.order_error("UpdateItem(mark)", err)),
            }
        }
        let finish = self.finish_discount(discount, lease, release);
        let result = self
            .update_discount(discount)
            .update_expression(finish.update_expression())
            .set_condition_expression(finish.condition_expression().map(str::to_owned))
            .set_expression_attribute_names(finish.expression_attribute_names().cloned())
            .set_expression_attribute_values(finish.expression_attribute_values().cloned())
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if is_condition_failure(&err) => Err(StoreError::LeaseLost(discount)),
            Err(err) => Err(self.sync_error("UpdateItem(finish)", err)),
        }
    }
}

impl OrderLedger for DynamoStore {
    async fn claim(&self, order: &OrderId, lease: &Lease) -> Result<ClaimOutcome, StoreError> {
        let result = self
            .update_order(order)
            .update_expression("SET #claim = :token")
            .condition_expression(format!("attribute_exists(id) AND {NOT_SYNCED}"))
            .expression_attribute_names("#claim", CLAIM)
            .expression_attribute_names("#synced", SYNCED)
            .expression_attribute_values(":token", string(&lease.token.to_string()))
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => Ok(ClaimOutcome::Claimed(order_record(output.attributes()))),
            Err(SdkError::ServiceError(service))
                if service.err().is_conditional_check_failed_exception() =>
            {
                let UpdateItemError::ConditionalCheckFailedException(failure) = service.into_err()
                else {
                    unreachable!("checked just above")
                };
                // The condition only fails for a missing or an already synced order.
                Ok(match failure.item().filter(|item| !item.is_empty()) {
                    Some(item) => ClaimOutcome::AlreadySynced(order_record(Some(item))),
                    None => ClaimOutcome::NotFound,
                })
            }
            Err(err) => Err(self.order_error("UpdateItem(claim)", err)),
        }
    }
}

impl DiscountLocks for DynamoStore {
    async fn acquire(
        &self,
        discount: DiscountId,
        lease: &Lease,
        now_ms: u64,
    ) -> Result<Acquisition, StoreError> {
        let result = self
            .update_discount(discount)
            .update_expression("SET #owner = :token, #until = :until REMOVE #ttl")
            .condition_expression("attribute_not_exists(#owner) OR #until < :now")
            .expression_attribute_names("#owner", LEASE_TOKEN)
            .expression_attribute_names("#until", LEASE_EXPIRES_AT_MS)
            .expression_attribute_names("#ttl", TTL)
            .expression_attribute_values(":token", string(&lease.token.to_string()))
            .expression_attribute_values(":until", number(lease.expires_at_ms))
            .expression_attribute_values(":now", number(now_ms))
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
            Err(SdkError::ServiceError(service))
                if service.err().is_conditional_check_failed_exception() =>
            {
                let UpdateItemError::ConditionalCheckFailedException(failure) = service.into_err()
                else {
                    unreachable!("checked just above")
                };
                let expires_at_ms = failure
                    .item()
                    .and_then(|item| item.get(LEASE_EXPIRES_AT_MS))
                    .and_then(|v| v.as_n().ok())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                Ok(Acquisition::Held { expires_at_ms })
            }
            Err(err) => Err(self.sync_error("UpdateItem(acquire)", err)),
        }
    }

    async fn record_intent(
        &self,
        discount: DiscountId,
        lease: &Lease,
        journal: &Journal,
    ) -> Result<(), StoreError> {
        let result = self
            .update_discount(discount)
            .update_expression("SET #journal = :journal")
            .condition_expression("#owner = :token")
            .expression_attribute_names("#journal", JOURNAL)
            .expression_attribute_names("#owner", LEASE_TOKEN)
            .expression_attribute_values(":journal", encode_journal(journal))
            .expression_attribute_values(":token", string(&lease.token.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if is_condition_failure(&err) => Err(StoreError::LeaseLost(discount)),
            Err(err) => Err(self.sync_error("UpdateItem(journal)", err)),
        }
    }

    async fn complete(
        &self,
        discount: DiscountId,
        lease: &Lease,
        orders: &[OrderId],
        action: SyncAction,
        at: SystemTime,
        release: bool,
    ) -> Result<(), StoreError> {
        let at = DateTime::from(at)
            .fmt(DateTimeFormat::DateTime)
            .expect("a current time is within RFC 3339's range");
        let items = orders
            .iter()
            .map(|order| self.mark_order(order, action, &at))
            .chain([self.finish_discount(discount, lease, release)])
            .map(|update| TransactWriteItem::builder().update(update).build())
            .collect();
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        let Err(err) = result else {
            return Ok(());
        };
        let reasons: Vec<Option<String>> = match &err {
            SdkError::ServiceError(service) => match service.err() {
                TransactWriteItemsError::TransactionCanceledException(canceled) => canceled
                    .cancellation_reasons()
                    .iter()
                    .map(|reason| reason.code().map(str::to_owned))
                    .collect(),
                _ => Vec::new(),
            },
            _ => Vec::new(),
        };
        let failed_condition =
            |reason: &Option<String>| reason.as_deref() == Some("ConditionalCheckFailed");
        match reasons.split_last() {
            Some((discount_reason, _)) if failed_condition(discount_reason) => {
                Err(StoreError::LeaseLost(discount))
            }
            Some((_, order_reasons)) if order_reasons.iter().any(failed_condition) => {
                self.complete_one_by_one(discount, lease, orders, action, &at, release)
                    .await
            }
            _ => Err(StoreError::from_sdk(
                "TransactWriteItems(complete)",
                &self.orders_table,
                err,
            )),
        }
    }

    async fn release(&self, discount: DiscountId, lease: &Lease) -> Result<(), StoreError> {
        let result = self
            .update_discount(discount)
            .update_expression("SET #ttl = :ttl REMOVE #owner, #until, #journal")
            .condition_expression("#owner = :token")
            .expression_attribute_names("#owner", LEASE_TOKEN)
            .expression_attribute_names("#until", LEASE_EXPIRES_AT_MS)
            .expression_attribute_names("#journal", JOURNAL)
            .expression_attribute_names("#ttl", TTL)
            .expression_attribute_values(":token", string(&lease.token.to_string()))
            .expression_attribute_values(":ttl", idle_ttl())
            .send()
            .await;
        match result {
            // Taken over after it expired: nothing of ours left to release.
            Err(err) if is_condition_failure(&err) => Ok(()),
            Err(err) => Err(self.sync_error("UpdateItem(release)", err)),
            Ok(_) => Ok(()),
        }
    }
}

fn is_condition_failure(err: &SdkError<UpdateItemError>) -> bool {
    matches!(err, SdkError::ServiceError(service) if service.err().is_conditional_check_failed_exception())
}

fn discount_key(discount: DiscountId) -> AttributeValue {
    string(&format!("discount#{discount}"))
}

fn string(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn number(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn idle_ttl() -> AttributeValue {
    let at = SystemTime::now() + IDLE_RETENTION;
    number(at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

fn order_record(item: Option<&HashMap<String, AttributeValue>>) -> OrderRecord {
    let get = |name: &str| item?.get(name)?.as_s().ok().cloned();
    OrderRecord {
        discount_id: get(DISCOUNT_ID),
        discount_code: get(DISCOUNT_CODE),
    }
}

fn encode_journal(journal: &Journal) -> AttributeValue {
    let orders = journal.orders.iter().map(|o| string(o.as_str())).collect();
    let mut map = HashMap::from([
        ("orders".to_owned(), AttributeValue::L(orders)),
        ("read".to_owned(), number(journal.read)),
    ]);
    match journal.intent {
        Intent::SetMaxRedemptions(target) => {
            map.insert("intent".into(), string("set_max_redemptions"));
            map.insert("target".into(), number(target));
        }
        Intent::Delete => {
            map.insert("intent".into(), string("delete"));
        }
    }
    AttributeValue::M(map)
}

fn decode_journal(discount: DiscountId, value: &AttributeValue) -> Result<Journal, StoreError> {
    let corrupt = || StoreError::CorruptJournal(discount);
    let map = value.as_m().map_err(|_| corrupt())?;
    let int = |name: &str| -> Result<i64, StoreError> {
        map.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .ok_or_else(corrupt)
    };
    let orders = map
        .get("orders")
        .and_then(|v| v.as_l().ok())
        .ok_or_else(corrupt)?
        .iter()
        .map(|v| {
            v.as_s()
                .ok()
                .and_then(|s| OrderId::parse(s.clone()).ok())
                .ok_or_else(corrupt)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let intent = match map
        .get("intent")
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
    {
        Some("set_max_redemptions") => Intent::SetMaxRedemptions(int("target")?),
        Some("delete") => Intent::Delete,
        _ => return Err(corrupt()),
    };
    Ok(Journal {
        orders,
        read: int("read")?,
        intent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_survives_its_encoding() {
        let discount = DiscountId::parse("9b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a10").unwrap();
        for intent in [Intent::SetMaxRedemptions(7), Intent::Delete] {
            let journal = Journal {
                orders: vec![
                    OrderId::parse("o1".into()).unwrap(),
                    OrderId::parse("o2".into()).unwrap(),
                ],
                read: 9,
                intent,
            };
            assert_eq!(
                decode_journal(discount, &encode_journal(&journal)).unwrap(),
                journal
            );
        }
    }

    #[test]
    fn a_journal_with_an_unknown_intent_is_reported_as_corrupt() {
        let discount = DiscountId::parse("9b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a10").unwrap();
        let value = AttributeValue::M(HashMap::from([
            ("orders".to_owned(), AttributeValue::L(vec![])),
            ("read".to_owned(), number(3)),
            ("intent".to_owned(), string("increment")),
        ]));
        assert!(matches!(
            decode_journal(discount, &value),
            Err(StoreError::CorruptJournal(_))
        ));
    }
}
