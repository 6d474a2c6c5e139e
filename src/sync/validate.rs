//! The checks that keep a wrong message from counting: the order item is the source of
//! truth for the discount and code, and Polar's code must be the one the order used.

use super::SyncError;
use crate::domain::{OrderField, SyncRequest};
use crate::ports::{Lookup, OrderRecord};

/// The message must name its order's discount and code.
pub fn ensure_message_matches(request: &SyncRequest, order: &OrderRecord) -> Result<(), SyncError> {
    match differing_field(request, order) {
        None => Ok(()),
        Some(field) => Err(order_mismatch(request, order, field)),
    }
}

/// The refusal of a message whose order the store found naming another discount or code.
pub fn mismatched_order(request: &SyncRequest, order: &OrderRecord) -> SyncError {
    let field = differing_field(request, order).unwrap_or(OrderField::DiscountId);
    order_mismatch(request, order, field)
}

fn differing_field(request: &SyncRequest, order: &OrderRecord) -> Option<OrderField> {
    request.field_differing_from(order.discount_id.as_deref(), order.discount_code.as_deref())
}

fn order_mismatch(request: &SyncRequest, order: &OrderRecord, field: OrderField) -> SyncError {
    let (on_order, in_message) = match field {
        OrderField::DiscountId => (order.discount_id.clone(), request.discount_id.to_string()),
        OrderField::DiscountCode => (
            order.discount_code.clone(),
            request.discount_code.to_string(),
        ),
    };
    SyncError::OrderMismatch {
        order: request.order_id.clone(),
        field: field.as_str(),
        on_order,
        in_message,
    }
}

/// The code on Polar must be the one the order used; a discount already gone has none to check.
pub fn code_mismatch(request: &SyncRequest, current: &Lookup) -> Option<SyncError> {
    let Lookup::Found(discount) = current else {
        return None;
    };
    let matches = discount
        .code
        .as_deref()
        .is_some_and(|code| request.discount_code.matches(code));
    (!matches).then(|| SyncError::DiscountCodeMismatch {
        order: request.order_id.clone(),
        discount: request.discount_id,
        on_polar: discount.code.clone(),
        on_order: request.discount_code.to_string(),
    })
}
