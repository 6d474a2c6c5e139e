//! The orders table: claiming an order for a lease, the update that marks it synced, and
//! the plain read that shadow mode plans from.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure, Update};

use super::{
    refused_item, string, DynamoStore, ACTION, CLAIM, DISCOUNT_CODE, DISCOUNT_ID, NOT_SYNCED,
    SYNCED, SYNCED_AT,
};
use crate::domain::{OrderId, SyncAction, SyncRequest};
use crate::ports::{
    ClaimOutcome, Lease, OrderLedger, OrderReader, OrderRecord, OrderSnapshot, StoreFailure,
};

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

impl DynamoStore {
    /// A claim as a transaction item: the order exists, is not synced, and names the
    /// request's discount and code exactly as the message spells them.
    pub(super) fn claim_order(&self, request: &SyncRequest, lease: &Lease) -> Update {
        self.claim_naming(&request.order_id, &spelled_as_in(request), lease)
    }

    fn claim_naming(
        &self,
        order: &OrderId,
        (discount_id, discount_code): &(String, String),
        lease: &Lease,
    ) -> Update {
        Update::builder()
            .table_name(&self.orders_table)
            .key("id", string(order.as_str()))
            .update_expression("SET #claim = :token")
            .condition_expression(format!(
                "attribute_exists(id) AND {NOT_SYNCED} AND #discountId = :discountId AND #discountCode = :discountCode"
            ))
            .expression_attribute_names("#claim", CLAIM)
            .expression_attribute_names("#synced", SYNCED)
            .expression_attribute_names("#discountId", DISCOUNT_ID)
            .expression_attribute_names("#discountCode", DISCOUNT_CODE)
            .expression_attribute_values(":token", string(&lease.token.to_string()))
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .expression_attribute_values(":discountId", string(discount_id))
            .expression_attribute_values(":discountCode", string(discount_code))
            // In a transaction, a refusal then shows the order, so that no read is needed.
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .expect("table, key and update expression are set")
    }
}

impl OrderLedger for DynamoStore {
    async fn claim(
        &self,
        request: &SyncRequest,
        lease: &Lease,
    ) -> Result<ClaimOutcome, StoreFailure> {
        let mut expected = spelled_as_in(request);
        loop {
            let order = match self.claim_if_names(request, &expected, lease).await? {
                ConditionalClaim::Written => return Ok(ClaimOutcome::Claimed),
                ConditionalClaim::Refused(order) => order,
            };
            match refusal(request, &expected, order.as_ref()) {
                Refusal::Decided(outcome) => return Ok(outcome),
                // The condition compares exactly; the message may write the same discount
                // differently (a code's case, a UUID's). Claim again with the order's spelling.
                Refusal::SpelledOtherwise(respelled) => expected = respelled,
            }
        }
    }
}

/// What a refused claim's order tells, from the order as it was (`None`: missing).
pub(super) enum Refusal {
    Decided(ClaimOutcome),
    /// The order names the message's discount, spelled otherwise: claim it as it is spelled.
    SpelledOtherwise((String, String)),
}

/// Why the claim of `request`, expecting `expected`'s spelling, was refused by `order`.
pub(super) fn refusal(
    request: &SyncRequest,
    expected: &(String, String),
    order: Option<&Item>,
) -> Refusal {
    let Some(order) = order else {
        return Refusal::Decided(ClaimOutcome::NotFound);
    };
    let record = order_record(Some(order));
    if order.get(SYNCED).and_then(|v| v.as_bool().ok()) == Some(&true) {
        return Refusal::Decided(ClaimOutcome::AlreadySynced(record));
    }
    let (Some(id), Some(code)) = (&record.discount_id, &record.discount_code) else {
        return Refusal::Decided(ClaimOutcome::Mismatched(record));
    };
    let same_discount = request.field_differing_from(Some(id), Some(code)).is_none();
    let respelled = (id.clone(), code.clone());
    if !same_discount || respelled == *expected {
        return Refusal::Decided(ClaimOutcome::Mismatched(record));
    }
    Refusal::SpelledOtherwise(respelled)
}

impl OrderReader for DynamoStore {
    async fn read_order(&self, order: &OrderId) -> Result<Option<OrderSnapshot>, StoreFailure> {
        let output = self
            .client
            .get_item()
            .table_name(&self.orders_table)
            .key("id", string(order.as_str()))
            .consistent_read(true)
            .projection_expression("#discountId, #discountCode, #synced")
            .expression_attribute_names("#discountId", DISCOUNT_ID)
            .expression_attribute_names("#discountCode", DISCOUNT_CODE)
            .expression_attribute_names("#synced", SYNCED)
            .send()
            .await
            .map_err(|err| super::error::failure("GetItem(order)", &self.orders_table, err))?;
        // A projection of an existing item that has none of the attributes is empty, but
        // still present.
        Ok(output.item.map(|item| OrderSnapshot {
            record: order_record(Some(&item)),
            synced: item.get(SYNCED).and_then(|v| v.as_bool().ok()) == Some(&true),
        }))
    }
}

pub(super) type Item = HashMap<String, AttributeValue>;

enum ConditionalClaim {
    Written,
    /// The condition failed; the order as it was, `None` if it is missing.
    Refused(Option<Item>),
}

impl DynamoStore {
    async fn claim_if_names(
        &self,
        request: &SyncRequest,
        expected: &(String, String),
        lease: &Lease,
    ) -> Result<ConditionalClaim, StoreFailure> {
        let claim = self.claim_naming(&request.order_id, expected, lease);
        let result = self
            .update_item(&claim)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(ConditionalClaim::Written),
            Err(err) => refused_item(err, |err| self.order_failure("UpdateItem(claim)", err))
                .map(|found| ConditionalClaim::Refused(found.filter(|item| !item.is_empty()))),
        }
    }
}

/// The discount id and code as `request` spells them.
pub(super) fn spelled_as_in(request: &SyncRequest) -> (String, String) {
    (
        request.discount_id.to_string(),
        request.discount_code.as_str().to_owned(),
    )
}

fn order_record(item: Option<&Item>) -> OrderRecord {
    let get = |name: &str| item?.get(name)?.as_s().ok().cloned();
    OrderRecord {
        discount_id: get(DISCOUNT_ID),
        discount_code: get(DISCOUNT_CODE),
    }
}
