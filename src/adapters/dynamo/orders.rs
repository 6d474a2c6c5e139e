//! The orders table: claiming an order for a lease, and the update that marks it synced.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure, Update,
};

use super::{
    string, DynamoStore, ACTION, CLAIM, DISCOUNT_CODE, DISCOUNT_ID, NOT_SYNCED, SYNCED, SYNCED_AT,
};
use crate::domain::{OrderId, SyncAction};
use crate::ports::{ClaimOutcome, Lease, OrderLedger, OrderRecord, StoreFailure};

impl DynamoStore {
    /// The order update of `complete`, as a transaction item.
    pub(super) fn mark_order(&self, order: &OrderId, action: SyncAction, at: &str) -> Update {
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
}

impl OrderLedger for DynamoStore {
    async fn claim(&self, order: &OrderId, lease: &Lease) -> Result<ClaimOutcome, StoreFailure> {
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
            Err(err) => Err(self.order_failure("UpdateItem(claim)", err)),
        }
    }
}

fn order_record(item: Option<&HashMap<String, AttributeValue>>) -> OrderRecord {
    let get = |name: &str| item?.get(name)?.as_s().ok().cloned();
    OrderRecord {
        discount_id: get(DISCOUNT_ID),
        discount_code: get(DISCOUNT_CODE),
    }
}
