//! Discounts as Polar stores and serialises them, and the request bodies that create and
//! update them.

use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::time;
use crate::validation::{expected_list, loc, Errors, Fields, Patch, MAX_INT32};
use crate::DiscountSeed;

pub(crate) const DURATIONS: [&str; 3] = ["once", "forever", "repeating"];
const TYPES: [&str; 2] = ["fixed", "percentage"];

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Amount {
    Percentage {
        basis_points: i64,
    },
    Fixed {
        amount: i64,
        currency: String,
        amounts: Map<String, Value>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Duration {
    Once,
    Forever,
    Repeating { months: i64 },
}

#[derive(Debug, Clone)]
pub(crate) struct Discount {
    pub(crate) id: Uuid,
    /// Creation order, to sort discounts created within the same microsecond.
    pub(crate) seq: u64,
    pub(crate) organization_id: Uuid,
    pub(crate) name: String,
    pub(crate) code: Option<String>,
    pub(crate) amount: Amount,
    pub(crate) duration: Duration,
    pub(crate) starts_at: Option<String>,
    pub(crate) ends_at: Option<String>,
    pub(crate) max_redemptions: Option<i64>,
    pub(crate) max_redemptions_per_customer: Option<i64>,
    pub(crate) redemptions_count: i64,
    pub(crate) metadata: Map<String, Value>,
    pub(crate) created_at: String,
    pub(crate) modified_at: Option<String>,
}

impl Discount {
    pub(crate) fn from_seed(seed: &DiscountSeed, id: Uuid, organization_id: Uuid) -> Discount {
        Discount {
            id,
            seq: 0,
            organization_id,
            name: seed.name.clone(),
            code: seed.code.clone(),
            amount: Amount::Percentage { basis_points: 1000 },
            duration: Duration::Once,
            starts_at: None,
            ends_at: None,
            max_redemptions: seed.max_redemptions,
            max_redemptions_per_customer: None,
            redemptions_count: 0,
            metadata: Map::new(),
            created_at: time::now_rfc3339(),
            modified_at: None,
        }
    }

    /// The JSON of the `Discount` oneOf member matching (type, duration), with every
    /// property that member requires.
    pub(crate) fn to_json(&self) -> Value {
        let mut body = json!({
            "id": self.id,
            "created_at": self.created_at,
            "modified_at": self.modified_at,
            "metadata": self.metadata,
            "name": self.name,
            "code": self.code,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "max_redemptions": self.max_redemptions,
            "max_redemptions_per_customer": self.max_redemptions_per_customer,
            "redemptions_count": self.redemptions_count,
            "organization_id": self.organization_id,
            "products": [],
        });
        match &self.duration {
            Duration::Once => body["duration"] = json!("once"),
            Duration::Forever => body["duration"] = json!("forever"),
            Duration::Repeating { months } => {
                body["duration"] = json!("repeating");
                body["duration_in_months"] = json!(months);
            }
        }
        match &self.amount {
            Amount::Percentage { basis_points } => {
                body["type"] = json!("percentage");
                body["basis_points"] = json!(basis_points);
            }
            Amount::Fixed {
                amount,
                currency,
                amounts,
            } => {
                body["type"] = json!("fixed");
                body["amount"] = json!(amount);
                body["currency"] = json!(currency);
                body["amounts"] = Value::Object(amounts.clone());
            }
        }
        body
    }
}

/// What a `DiscountUpdate` body asks to change; fields it does not model are ignored.
#[derive(Debug)]
pub(crate) struct DiscountUpdate {
    name: Patch<String>,
    code: Patch<String>,
    starts_at: Patch<String>,
    ends_at: Patch<String>,
    max_redemptions: Patch<i64>,
    max_redemptions_per_customer: Patch<i64>,
    metadata: Patch<Map<String, Value>>,
}

impl DiscountUpdate {
    pub(crate) fn parse(body: &Map<String, Value>, errors: &mut Errors) -> DiscountUpdate {
        let fields = Fields {
            object: body,
            prefix: vec![json!("body")],
        };
        DiscountUpdate {
            name: fields.string("name", 1, errors),
            code: fields.string("code", 0, errors),
            starts_at: fields.datetime("starts_at", errors),
            ends_at: fields.datetime("ends_at", errors),
            max_redemptions: fields.int("max_redemptions", 1, MAX_INT32, errors),
            max_redemptions_per_customer: fields.int(
                "max_redemptions_per_customer",
                1,
                MAX_INT32,
                errors,
            ),
            metadata: fields.object("metadata", errors),
        }
    }

    pub(crate) fn apply(self, discount: &mut Discount) {
        fn nullable<T>(patch: Patch<T>, slot: &mut Option<T>) {
            match patch {
                Patch::Absent => {}
                Patch::Null => *slot = None,
                Patch::Set(v) => *slot = Some(v),
            }
        }
        // The name column is not nullable: Polar drops an explicit null name.
        if let Patch::Set(name) = self.name {
            discount.name = name;
        }
        nullable(self.code, &mut discount.code);
        nullable(self.starts_at, &mut discount.starts_at);
        nullable(self.ends_at, &mut discount.ends_at);
        nullable(self.max_redemptions, &mut discount.max_redemptions);
        nullable(
            self.max_redemptions_per_customer,
            &mut discount.max_redemptions_per_customer,
        );
        if let Patch::Set(metadata) = self.metadata {
            discount.metadata = metadata;
        }
        discount.modified_at = Some(time::now_rfc3339());
    }
}

/// A validated `DiscountCreate`, or the 422 items explaining why it is not one.
pub(crate) struct DiscountCreate {
    pub(crate) discount: Discount,
    pub(crate) products: Vec<Uuid>,
}

impl DiscountCreate {
    pub(crate) fn parse(
        body: &Value,
        organization_id: Uuid,
        errors: &mut Errors,
    ) -> Option<DiscountCreate> {
        let object = body.as_object()?;
        let tag = match object.get("type") {
            None => {
                errors.push(
                    "union_tag_not_found",
                    vec![json!("body")],
                    "Unable to extract tag using discriminator 'type'",
                    body.clone(),
                    Some(json!({ "discriminator": "'type'" })),
                );
                return None;
            }
            Some(Value::String(t)) if TYPES.contains(&t.as_str()) => t.clone(),
            Some(other) => {
                let tag = other
                    .as_str()
                    .map_or_else(|| other.to_string(), str::to_owned);
                let expected = expected_list(&TYPES).replace(" or ", ", ");
                errors.push(
                    "union_tag_invalid",
                    vec![json!("body")],
                    format!(
                        "Input tag '{tag}' found using 'type' does not match any of the \
                         expected tags: {expected}"
                    ),
                    body.clone(),
                    Some(json!({
                        "discriminator": "'type'",
                        "tag": tag,
                        "expected_tags": expected,
                    })),
                );
                return None;
            }
        };
        let prefix = vec![json!("body"), json!(tag)];
        let fields = Fields {
            object,
            prefix: prefix.clone(),
        };
        let required = Required {
            object,
            prefix: &prefix,
            body,
        };
        let name = required.get(
            fields.string("name", 1, errors),
            "name",
            STRING_TYPE,
            errors,
        );
        let code = fields.string("code", 0, errors);
        let starts_at = fields.datetime("starts_at", errors);
        let ends_at = fields.datetime("ends_at", errors);
        let max_redemptions = fields.int("max_redemptions", 1, MAX_INT32, errors);
        let max_per_customer = fields.int("max_redemptions_per_customer", 1, MAX_INT32, errors);
        let metadata = fields.object("metadata", errors);
        let products = fields.uuid4_list("products", errors);
        if let Some(Value::String(org)) = object.get("organization_id") {
            crate::validation::uuid4(org, loc(&prefix, "organization_id"), errors);
        }
        let duration_null = ("enum", "Input should be 'once', 'forever' or 'repeating'");
        let duration = required.get(
            fields.choice("duration", &DURATIONS, errors),
            "duration",
            duration_null,
            errors,
        );
        let months = fields.int("duration_in_months", 1, 999, errors);

        let amount = if tag == "percentage" {
            required
                .get(
                    fields.int("basis_points", 1, 10_000, errors),
                    "basis_points",
                    INT_TYPE,
                    errors,
                )
                .map(|basis_points| Amount::Percentage { basis_points })
        } else {
            let amount = fields.int("amount", 0, 999_999_999_999, errors);
            let currency = fields.string("currency", 1, errors);
            let amounts = fields.object("amounts", errors);
            fixed_amount(amount, currency, amounts, &prefix, body, errors)
        };

        let duration = match (duration.as_deref(), months) {
            (Some("once"), _) => Some(Duration::Once),
            (Some("forever"), _) => Some(Duration::Forever),
            (Some(_), Patch::Set(months)) => Some(Duration::Repeating { months }),
            (Some(_), _) => {
                value_error(
                    errors,
                    &prefix,
                    body,
                    "duration_in_months is required when duration is repeating",
                );
                None
            }
            (None, _) => None,
        };

        if !errors.is_empty() {
            return None;
        }
        Some(DiscountCreate {
            discount: Discount {
                id: Uuid::new_v4(),
                seq: 0,
                organization_id,
                name: name?,
                code: code.into_option(),
                amount: amount?,
                duration: duration?,
                starts_at: starts_at.into_option(),
                ends_at: ends_at.into_option(),
                max_redemptions: max_redemptions.into_option(),
                max_redemptions_per_customer: max_per_customer.into_option(),
                redemptions_count: 0,
                metadata: metadata.into_option().unwrap_or_default(),
                created_at: time::now_rfc3339(),
                modified_at: None,
            },
            products: products.into_option().unwrap_or_default(),
        })
    }
}

const STRING_TYPE: (&str, &str) = ("string_type", "Input should be a valid string");
const INT_TYPE: (&str, &str) = ("int_type", "Input should be a valid integer");

/// Reports a required field that is missing or null the way pydantic does.
struct Required<'a> {
    object: &'a Map<String, Value>,
    prefix: &'a [Value],
    body: &'a Value,
}

impl Required<'_> {
    fn get<T>(
        &self,
        patch: Patch<T>,
        name: &str,
        (null_kind, null_msg): (&str, &str),
        errors: &mut Errors,
    ) -> Option<T> {
        match patch {
            Patch::Set(v) => Some(v),
            // Present but invalid: the field's own error is already recorded.
            Patch::Absent if self.object.contains_key(name) => None,
            Patch::Absent => {
                errors.missing(loc(self.prefix, name), self.body.clone());
                None
            }
            Patch::Null => {
                errors.push(
                    null_kind,
                    loc(self.prefix, name),
                    null_msg,
                    Value::Null,
                    None,
                );
                None
            }
        }
    }
}

fn fixed_amount(
    amount: Patch<i64>,
    currency: Patch<String>,
    amounts: Patch<Map<String, Value>>,
    prefix: &[Value],
    body: &Value,
    errors: &mut Errors,
) -> Option<Amount> {
    let currency = match currency {
        Patch::Set(c) => c.to_ascii_lowercase(),
        _ => "usd".to_owned(),
    };
    match (amount, amounts) {
        (_, Patch::Set(amounts)) if !amounts.is_empty() => {
            let amount = amounts
                .get(&currency)
                .or_else(|| amounts.values().next())
                .and_then(Value::as_i64)
                .unwrap_or(0);
            Some(Amount::Fixed {
                amount,
                currency,
                amounts,
            })
        }
        (Patch::Set(amount), _) => {
            let mut amounts = Map::new();
            amounts.insert(currency.clone(), json!(amount));
            Some(Amount::Fixed {
                amount,
                currency,
                amounts,
            })
        }
        _ => {
            value_error(errors, prefix, body, "Either amount or amounts must be set");
            None
        }
    }
}

fn value_error(errors: &mut Errors, prefix: &[Value], body: &Value, msg: &str) {
    errors.push(
        "value_error",
        prefix.to_vec(),
        format!("Value error, {msg}"),
        body.clone(),
        Some(json!({ "error": {} })),
    );
}
