//! The checks that keep a wrong message from counting: the order item is the source of
//! truth for the discount and code, and Polar's code must be the one the order used.

use super::SyncError;
use crate::domain::{DiscountId, SyncRequest};
use crate::ports::{Lookup, OrderRecord};

/// The message must name its order's discount and code.
pub fn ensure_message_matches(request: &SyncRequest, order: &OrderRecord) -> Result<(), SyncError> {
    let id_matches = order
        .discount_id
        .as_deref()
        .and_then(|raw| DiscountId::parse(raw).ok())
        == Some(request.discount_id);
    if !id_matches {
        return Err(SyncError::OrderMismatch {
            order: request.order_id.clone(),
            field: "discountId",
            on_order: order.discount_id.clone(),
            in_message: request.discount_id.to_string(),
        });
    }
    let code_matches = order
        .discount_code
        .as_deref()
        .is_some_and(|code| request.discount_code.matches(code));
    if !code_matches {
        return Err(SyncError::OrderMismatch {
            order: request.order_id.clone(),
            field: "discountCode",
            on_order: order.discount_code.clone(),
            in_message: request.discount_code.to_string(),
        });
    }
    Ok(())
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
