//! Any bytes as an SQS message body: parsed or refused, never a panic, and anything
//! accepted stays inside the contract.
#![no_main]

use libfuzzer_sys::fuzz_target;
use polar_discount_sync::domain::{SyncRequest, MAX_ORDER_ID_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(request) = SyncRequest::parse(body) {
        let order = request.order_id.as_str();
        assert!(!order.is_empty() && order.chars().count() <= MAX_ORDER_ID_LEN);
        assert!(!order.chars().any(char::is_control));
        assert_eq!(request.discount_id.to_string().len(), 36);
        let again = serde_json::json!({
            "orderId": order,
            "discountId": request.discount_id.to_string(),
            "discountCode": request.discount_code.as_str(),
        });
        assert_eq!(SyncRequest::parse(&again.to_string()).unwrap(), request);
    }
});
