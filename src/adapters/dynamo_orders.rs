//! The orders table in DynamoDB as an `OrderLedger`: every step is one conditional
//! `UpdateItem` on the order item, so an order is counted at most once.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::primitives::{DateTime, DateTimeFormat};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;

use super::StoreError;
use crate::domain::{OrderId, SyncAction};
use crate::ports::{Claim, ClaimOutcome, OrderLedger, OrderRecord};

/// Contract attributes (kept from the original implementation).
const SYNCED: &str = "polarDiscountSynced";
const ACTION: &str = "polarDiscountSyncAction";
const SYNCED_AT: &str = "polarDiscountSyncedAt";
/// This function's own attributes.
const CLAIM_TOKEN: &str = "polarDiscountSyncClaim";
const CLAIM_EXPIRES_AT: &str = "polarDiscountSyncClaimExpiresAt";
/// Written by the checkout service.
const DISCOUNT_ID: &str = "discountId";
const DISCOUNT_CODE: &str = "discountCode";

const NOT_SYNCED: &str = "(attribute_not_exists(#synced) OR #synced <> :true)";

#[derive(Debug, Clone)]
pub struct DynamoOrderLedger {
    client: Client,
    table: String,
}

impl DynamoOrderLedger {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn update(
        &self,
        order: &OrderId,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(order.as_str().to_owned()))
    }

    fn error(&self, operation: &'static str, err: SdkError<UpdateItemError>) -> StoreError {
        StoreError::from_sdk(operation, &self.table, err)
    }
}

impl OrderLedger for DynamoOrderLedger {
    async fn claim(
        &self,
        order: &OrderId,
        claim: &Claim,
        now_ms: u64,
    ) -> Result<ClaimOutcome, StoreError> {
        let result = self
            .update(order)
            .update_expression("SET #claim = :token, #expires = :expires")
            .condition_expression(format!(
                "attribute_exists(id) AND {NOT_SYNCED} AND (attribute_not_exists(#expires) OR #expires < :now)"
            ))
            .expression_attribute_names("#claim", CLAIM_TOKEN)
            .expression_attribute_names("#expires", CLAIM_EXPIRES_AT)
            .expression_attribute_names("#synced", SYNCED)
            .expression_attribute_values(":token", AttributeValue::S(claim.token.to_string()))
            .expression_attribute_values(":expires", number(claim.expires_at_ms))
            .expression_attribute_values(":now", number(now_ms))
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => Ok(ClaimOutcome::Claimed(record(output.attributes()))),
            Err(SdkError::ServiceError(service))
                if service.err().is_conditional_check_failed_exception() =>
            {
                let UpdateItemError::ConditionalCheckFailedException(failure) = service.into_err()
                else {
                    unreachable!("checked just above")
                };
                Ok(why_not_claimed(failure.item()))
            }
            Err(err) => Err(self.error("UpdateItem(claim)", err)),
        }
    }

    async fn mark_synced(
        &self,
        order: &OrderId,
        action: SyncAction,
        at: SystemTime,
    ) -> Result<(), StoreError> {
        let synced_at = DateTime::from(at)
            .fmt(DateTimeFormat::DateTime)
            .expect("a current time is within RFC 3339's range");
        let result = self
            .update(order)
            .update_expression(
                "SET #synced = :true, #action = :action, #at = :at REMOVE #claim, #expires",
            )
            .condition_expression(format!("attribute_exists(id) AND {NOT_SYNCED}"))
            .expression_attribute_names("#synced", SYNCED)
            .expression_attribute_names("#action", ACTION)
            .expression_attribute_names("#at", SYNCED_AT)
            .expression_attribute_names("#claim", CLAIM_TOKEN)
            .expression_attribute_names("#expires", CLAIM_EXPIRES_AT)
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .expression_attribute_values(":action", AttributeValue::S(action.as_str().to_owned()))
            .expression_attribute_values(":at", AttributeValue::S(synced_at))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(service))
                if service.err().is_conditional_check_failed_exception() =>
            {
                Err(StoreError::AlreadySynced(order.clone()))
            }
            Err(err) => Err(self.error("UpdateItem(mark)", err)),
        }
    }

    async fn release(&self, order: &OrderId, claim: &Claim) -> Result<(), StoreError> {
        let result = self
            .update(order)
            .update_expression("REMOVE #claim, #expires")
            .condition_expression("#claim = :token")
            .expression_attribute_names("#claim", CLAIM_TOKEN)
            .expression_attribute_names("#expires", CLAIM_EXPIRES_AT)
            .expression_attribute_values(":token", AttributeValue::S(claim.token.to_string()))
            .send()
            .await;
        match result {
            // Someone else's claim now, or none: nothing of ours to release.
            Err(SdkError::ServiceError(service))
                if service.err().is_conditional_check_failed_exception() =>
            {
                Ok(())
            }
            Err(err) => Err(self.error("UpdateItem(release)", err)),
            Ok(_) => Ok(()),
        }
    }
}

fn number(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn string(item: &HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    item.get(name)?.as_s().ok().cloned()
}

fn record(item: Option<&HashMap<String, AttributeValue>>) -> OrderRecord {
    let empty = HashMap::new();
    let item = item.unwrap_or(&empty);
    OrderRecord {
        discount_id: string(item, DISCOUNT_ID),
        discount_code: string(item, DISCOUNT_CODE),
    }
}

/// Reads the item returned with a failed claim (`ALL_OLD`) to tell why, without a second read.
fn why_not_claimed(item: Option<&HashMap<String, AttributeValue>>) -> ClaimOutcome {
    let Some(item) = item.filter(|item| !item.is_empty()) else {
        return ClaimOutcome::NotFound;
    };
    if item.get(SYNCED).and_then(|v| v.as_bool().ok()) == Some(&true) {
        return ClaimOutcome::AlreadySynced(record(Some(item)));
    }
    let expires_at_ms = item
        .get(CLAIM_EXPIRES_AT)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    ClaimOutcome::HeldElsewhere { expires_at_ms }
}

/// Milliseconds since the Unix epoch, as stored in claim expiries.
pub fn epoch_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
