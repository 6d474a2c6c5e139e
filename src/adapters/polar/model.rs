//! The parts of Polar's `Discount` schema the sync reads. `Discount` is a oneOf of four
//! shapes without a discriminator; every shape carries these fields, and the rest is
//! ignored so that new Polar fields never break parsing.

use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use crate::ports::DiscountView;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Discount {
    pub id: Uuid,
    #[serde(deserialize_with = "present")]
    pub code: Option<String>,
    /// `null` means unlimited. Required: a response without it must not be read as unlimited.
    #[serde(deserialize_with = "present")]
    pub max_redemptions: Option<i64>,
}

impl From<Discount> for DiscountView {
    fn from(discount: Discount) -> Self {
        DiscountView {
            code: discount.code,
            max_redemptions: discount.max_redemptions,
        }
    }
}

/// `Option` fields are optional in serde; these are nullable but required by the schema.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer)
}

/// The body of `PATCH /v1/discounts/{id}` (`DiscountUpdate`); only the field we change.
#[derive(Debug, Serialize)]
pub(super) struct MaxRedemptionsUpdate {
    pub max_redemptions: i64,
}

/// Polar's error body, as far as the sync needs to tell 404s apart.
#[derive(Debug, Deserialize)]
pub(super) struct ErrorBody {
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERCENTAGE_ONCE: &str = r#"{
        "duration": "once", "type": "percentage", "basis_points": 2500,
        "created_at": "2026-01-01T00:00:00Z", "modified_at": null,
        "id": "9b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a10", "metadata": {}, "name": "Summer",
        "code": "SUMMER25", "starts_at": null, "ends_at": null, "max_redemptions": 3,
        "max_redemptions_per_customer": null, "redemptions_count": 1,
        "organization_id": "1dbfc517-0bbf-4301-9ba8-555ca42b9737", "products": []
    }"#;

    #[test]
    fn a_percentage_discount_from_the_spec_is_read() {
        let discount: Discount = serde_json::from_str(PERCENTAGE_ONCE).unwrap();
        assert_eq!(discount.code.as_deref(), Some("SUMMER25"));
        assert_eq!(discount.max_redemptions, Some(3));
    }

    #[test]
    fn a_fixed_repeating_discount_with_unlimited_uses_is_read() {
        let body = r#"{"duration":"repeating","duration_in_months":3,"type":"fixed",
            "amount":1000,"currency":"usd","amounts":{"usd":1000},
            "id":"9b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a10","code":null,"max_redemptions":null,
            "some_future_field":{"nested":[1,2]}}"#;
        let discount: Discount = serde_json::from_str(body).unwrap();
        assert_eq!(discount.max_redemptions, None);
        assert_eq!(discount.code, None);
    }

    #[test]
    fn a_discount_without_max_redemptions_is_not_mistaken_for_unlimited() {
        let body = r#"{"id":"9b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a10","code":"X"}"#;
        assert!(serde_json::from_str::<Discount>(body).is_err());
    }

    #[test]
    fn a_non_integer_max_redemptions_is_rejected() {
        let body =
            r#"{"id":"9b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a10","code":"X","max_redemptions":"3"}"#;
        assert!(serde_json::from_str::<Discount>(body).is_err());
    }
}
