//! Property tests for the two parsers that take outside input: the SQS message body and
//! Polar's discount responses. Whatever arrives, they answer with a value or an error,
//! never a panic, and what they accept is what the contract allows.

use polar_discount_sync::adapters::polar::Discount;
use polar_discount_sync::domain::{MessageError, SyncRequest, MAX_ORDER_ID_LEN};
use proptest::prelude::*;
use uuid::Uuid;

fn body(order: &str, discount: &str, code: &str) -> String {
    serde_json::json!({"orderId": order, "discountId": discount, "discountCode": code}).to_string()
}

fn any_uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

/// JSON values of any shape, a few levels deep.
fn any_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        ".{0,20}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::hash_map(".{0,12}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn any_text_is_parsed_or_refused_without_panicking(text in ".{0,300}") {
        let _ = SyncRequest::parse(&text);
    }

    #[test]
    fn any_json_is_parsed_or_refused_without_panicking(value in any_json()) {
        let _ = SyncRequest::parse(&value.to_string());
        let _ = serde_json::from_value::<Discount>(value);
    }

    #[test]
    fn every_message_within_the_contract_is_accepted_as_written(
        order in "[^\\p{Cc}]{1,256}",
        discount in any_uuid(),
        code in "[A-Za-z0-9]{3,32}",
    ) {
        let request = SyncRequest::parse(&body(&order, &discount.to_string(), &code)).unwrap();
        prop_assert_eq!(request.order_id.as_str(), order.as_str());
        prop_assert_eq!(request.discount_id.as_uuid(), discount);
        prop_assert!(request.discount_code.matches(&code.to_lowercase()));
    }

    #[test]
    fn accepted_order_ids_are_never_empty_too_long_or_with_control_characters(order in "\\PC{0,300}|.{0,300}") {
        match SyncRequest::parse(&body(&order, "9b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a10", "X")) {
            Ok(request) => {
                let id = request.order_id.as_str();
                prop_assert!(!id.is_empty() && id.chars().count() <= MAX_ORDER_ID_LEN);
                prop_assert!(!id.chars().any(char::is_control));
            }
            Err(err) => prop_assert!(matches!(err, MessageError::InvalidOrderId { .. }), "{}", err),
        }
    }

    #[test]
    fn a_discount_id_is_accepted_only_as_a_canonical_uuid(id in "[0-9a-fA-F{}:urn-]{30,45}|\\PC{0,40}") {
        let accepted = SyncRequest::parse(&body("o1", &id, "X")).is_ok();
        let canonical = id.len() == 36 && Uuid::try_parse(&id).is_ok();
        prop_assert_eq!(accepted, canonical);
        if accepted {
            let request = SyncRequest::parse(&body("o1", &id, "X")).unwrap();
            prop_assert_eq!(request.discount_id.to_string(), id.to_lowercase());
        }
    }

    #[test]
    fn a_discount_response_gives_back_its_limit(
        limit in proptest::option::of(1i64..=2_147_483_647),
        code in proptest::option::of("[A-Z0-9]{3,12}"),
        id in any_uuid(),
        extra in any_json(),
    ) {
        let mut response = serde_json::json!({
            "id": id, "code": code, "max_redemptions": limit,
            "duration": "once", "type": "percentage", "basis_points": 1000,
            "redemptions_count": 0, "metadata": {}, "products": []
        });
        response["unknown_future_field"] = extra;
        let discount: Discount = serde_json::from_value(response).unwrap();
        prop_assert_eq!(discount.max_redemptions, limit);
        prop_assert_eq!(discount.code, code);
        prop_assert_eq!(discount.id, id);
    }
}
