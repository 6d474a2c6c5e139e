//! The SQS message body, parsed into domain types before anything else sees it.

use std::fmt;

use serde::Deserialize;
use thiserror::Error;
use uuid::Uuid;

/// Longest `orderId` the contract allows.
pub const MAX_ORDER_ID_LEN: usize = 256;
/// The contract's message is a few hundred bytes; anything far larger is not one.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The key of an order item in the orders table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrderId(String);

impl OrderId {
    pub fn parse(raw: String) -> Result<Self, MessageError> {
        if raw.is_empty() {
            return Err(MessageError::InvalidOrderId {
                reason: "it is empty",
            });
        }
        if raw.chars().count() > MAX_ORDER_ID_LEN {
            return Err(MessageError::InvalidOrderId {
                reason: "it is longer than 256 characters",
            });
        }
        if raw.chars().any(char::is_control) {
            return Err(MessageError::InvalidOrderId {
                reason: "it contains control characters",
            });
        }
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Polar discount id. Polar only knows UUIDs, and only the canonical hyphenated
/// form is accepted so that an id can never carry anything into a URL path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DiscountId(Uuid);

impl DiscountId {
    pub fn parse(raw: &str) -> Result<Self, MessageError> {
        let invalid = || MessageError::InvalidDiscountId {
            value: raw.chars().take(64).collect(),
        };
        if raw.len() != 36 {
            return Err(invalid());
        }
        Uuid::try_parse(raw).map(Self).map_err(|_| invalid())
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for DiscountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// The code the customer typed. Codes are compared case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DiscountCode(String);

impl DiscountCode {
    pub fn parse(raw: String) -> Result<Self, MessageError> {
        if raw.trim().is_empty() {
            return Err(MessageError::EmptyDiscountCode);
        }
        Ok(Self(raw))
    }

    pub fn matches(&self, other: &str) -> bool {
        self.0.to_lowercase() == other.to_lowercase()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DiscountCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An attribute of the order item that a message must agree with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderField {
    DiscountId,
    DiscountCode,
}

impl OrderField {
    /// The attribute's name on the order item.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DiscountId => "discountId",
            Self::DiscountCode => "discountCode",
        }
    }
}

/// One redemption to reflect on Polar, as announced by the checkout service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SyncRequest {
    pub order_id: OrderId,
    pub discount_id: DiscountId,
    pub discount_code: DiscountCode,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMessage {
    order_id: String,
    discount_id: String,
    discount_code: String,
}

impl SyncRequest {
    /// The field of an order that names another discount than this message, if any: the
    /// id compared as a UUID, the code case-insensitively.
    pub fn field_differing_from(
        &self,
        order_discount_id: Option<&str>,
        order_discount_code: Option<&str>,
    ) -> Option<OrderField> {
        let id_matches =
            order_discount_id.and_then(|raw| DiscountId::parse(raw).ok()) == Some(self.discount_id);
        let code_matches = order_discount_code.is_some_and(|code| self.discount_code.matches(code));
        if !id_matches {
            Some(OrderField::DiscountId)
        } else if !code_matches {
            Some(OrderField::DiscountCode)
        } else {
            None
        }
    }

    pub fn parse(body: &str) -> Result<Self, MessageError> {
        if body.len() > MAX_BODY_BYTES {
            return Err(MessageError::TooLarge { bytes: body.len() });
        }
        let raw: RawMessage = serde_json::from_str(body).map_err(MessageError::Json)?;
        Ok(Self {
            order_id: OrderId::parse(raw.order_id)?,
            discount_id: DiscountId::parse(&raw.discount_id)?,
            discount_code: DiscountCode::parse(raw.discount_code)?,
        })
    }
}

/// Why a message body can never be processed. Always permanent.
#[derive(Debug, Error)]
pub enum MessageError {
    #[error("the message has no body")]
    MissingBody,
    #[error("the message body is {bytes} bytes, more than the 16 KiB a redemption message can be")]
    TooLarge { bytes: usize },
    #[error("the message body is not the expected JSON object")]
    Json(#[source] serde_json::Error),
    #[error("orderId is invalid: {reason}")]
    InvalidOrderId { reason: &'static str },
    #[error("discountId {value:?} is not a UUID")]
    InvalidDiscountId { value: String },
    #[error("discountCode is empty")]
    EmptyDiscountCode,
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "9b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a10";

    fn body(order: &str, discount: &str, code: &str) -> String {
        serde_json::json!({"orderId": order, "discountId": discount, "discountCode": code})
            .to_string()
    }

    #[test]
    fn a_well_formed_message_is_parsed_into_domain_types() {
        let request = SyncRequest::parse(&body("ord_123", ID, "SUMMER25")).unwrap();
        assert_eq!(request.order_id.as_str(), "ord_123");
        assert_eq!(request.discount_id.to_string(), ID);
        assert_eq!(request.discount_code.as_str(), "SUMMER25");
    }

    #[test]
    fn an_uppercase_discount_id_is_normalised_to_lowercase() {
        let request = SyncRequest::parse(&body("o", &ID.to_uppercase(), "X")).unwrap();
        assert_eq!(request.discount_id.to_string(), ID);
    }

    #[test]
    fn extra_fields_are_ignored() {
        let body =
            format!(r#"{{"orderId":"o","discountId":"{ID}","discountCode":"X","source":"sepay"}}"#);
        assert!(SyncRequest::parse(&body).is_ok());
    }

    #[test]
    fn a_body_that_is_not_json_is_rejected() {
        assert!(matches!(
            SyncRequest::parse("not json"),
            Err(MessageError::Json(_))
        ));
    }

    #[test]
    fn a_missing_field_is_rejected() {
        let body = format!(r#"{{"orderId":"o","discountId":"{ID}"}}"#);
        assert!(matches!(
            SyncRequest::parse(&body),
            Err(MessageError::Json(_))
        ));
    }

    #[test]
    fn a_field_of_the_wrong_type_is_rejected() {
        let body = format!(r#"{{"orderId":12,"discountId":"{ID}","discountCode":"X"}}"#);
        assert!(matches!(
            SyncRequest::parse(&body),
            Err(MessageError::Json(_))
        ));
    }

    #[test]
    fn an_empty_order_id_is_rejected() {
        assert!(matches!(
            SyncRequest::parse(&body("", ID, "X")),
            Err(MessageError::InvalidOrderId { .. })
        ));
    }

    #[test]
    fn an_order_id_of_256_characters_is_accepted_and_257_rejected() {
        assert!(SyncRequest::parse(&body(&"a".repeat(256), ID, "X")).is_ok());
        assert!(matches!(
            SyncRequest::parse(&body(&"a".repeat(257), ID, "X")),
            Err(MessageError::InvalidOrderId { .. })
        ));
    }

    #[test]
    fn discount_ids_that_are_not_canonical_uuids_are_rejected() {
        for bad in [
            "",
            "not-a-uuid",
            "../organizations",
            "9b1c1f3e3c1a4a579a436f0f3f1d2a10",
            "{9b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a10}",
            "urn:uuid:9b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a10",
            "9b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a1g",
            "%2e%2e/x",
            "a?b=c",
            "a#b",
            // Look-alikes: Cyrillic 'а', fullwidth digits, a Unicode hyphen.
            "9b1c1f3e-3c1а-4a57-9a43-6f0f3f1d2a10",
            "９b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a10",
            "9b1c1f3e‐3c1a-4a57-9a43-6f0f3f1d2a10",
            "9b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a10/../x",
        ] {
            assert!(
                matches!(
                    SyncRequest::parse(&body("o", bad, "X")),
                    Err(MessageError::InvalidDiscountId { .. })
                ),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn an_order_id_with_control_characters_is_rejected() {
        for bad in ["ord\n1", "ord\u{0}", "ord\u{7f}", "ord\u{85}"] {
            assert!(
                matches!(
                    SyncRequest::parse(&body(bad, ID, "X")),
                    Err(MessageError::InvalidOrderId { .. })
                ),
                "{bad:?} was accepted"
            );
        }
        assert!(
            SyncRequest::parse(&body("ord-ü 1/2", ID, "X")).is_ok(),
            "printable text is fine"
        );
    }

    #[test]
    fn a_body_larger_than_any_redemption_message_is_rejected_before_parsing() {
        let huge = format!(
            r#"{{"orderId":"{}","discountId":"{ID}","discountCode":"X"}}"#,
            "a".repeat(20_000)
        );
        assert!(matches!(
            SyncRequest::parse(&huge),
            Err(MessageError::TooLarge { .. })
        ));
    }

    #[test]
    fn deeply_nested_json_is_rejected_without_overflowing_the_stack() {
        let nested = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
        assert!(matches!(
            SyncRequest::parse(&nested),
            Err(MessageError::Json(_))
        ));
    }

    #[test]
    fn a_blank_discount_code_is_rejected() {
        assert!(matches!(
            SyncRequest::parse(&body("o", ID, "  ")),
            Err(MessageError::EmptyDiscountCode)
        ));
    }

    #[test]
    fn discount_codes_match_case_insensitively() {
        let code = DiscountCode::parse("Summer25".into()).unwrap();
        assert!(code.matches("SUMMER25"));
        assert!(code.matches("summer25"));
        assert!(!code.matches("SUMMER26"));
    }
}
