//! One DynamoDB Streams record of the orders table, read from its JSON and decided from
//! the record alone: relay the order's message, ignore the record, or dead-letter it.

use serde_json::{Map, Value};
use thiserror::Error;

use crate::ports::RelayedMessage;

const ID: &str = "id";
const DISCOUNT_ID: &str = "discountId";
const DISCOUNT_CODE: &str = "discountCode";
const SYNCED: &str = "polarDiscountSynced";

/// What the relay does with a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Relay(RelayedMessage),
    Ignore(IgnoreReason),
    Unreadable(RecordError),
}

/// Why a readable record relays nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnoreReason {
    Removed,
    NoDiscount,
    AlreadySynced,
    /// The old image already had a discount: a write of the function's own (claim, mark)
    /// or any other change to an order whose message was due anyway.
    DiscountUnchanged,
    /// A `MODIFY` on a `NEW_IMAGE` stream: whether it added the discount cannot be told.
    NoOldImage,
}

impl IgnoreReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Removed => "removed",
            Self::NoDiscount => "no_discount",
            Self::AlreadySynced => "already_synced",
            Self::DiscountUnchanged => "discount_unchanged",
            Self::NoOldImage => "no_old_image",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecordError {
    #[error("the record is not a JSON object")]
    NotAnObject,
    #[error("the record has no dynamodb.SequenceNumber")]
    NoSequenceNumber,
    #[error("the record has no eventName")]
    NoEventName,
    #[error("eventName {0:?} is none of INSERT, MODIFY, REMOVE")]
    UnknownEventName(String),
    #[error("the {0} record has no dynamodb.NewImage")]
    NoNewImage(&'static str),
    #[error("{image} is not a map of attribute values")]
    ImageNotAMap { image: &'static str },
    #[error("NewImage has no {0}")]
    MissingAttribute(&'static str),
    #[error("{attribute} in NewImage is not of type {expected}")]
    WrongType {
        attribute: &'static str,
        expected: &'static str,
    },
}

impl RecordError {
    /// The dead letter's `ErrorKind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotAnObject | Self::NoSequenceNumber | Self::NoEventName => "malformed_record",
            Self::UnknownEventName(_) => "unknown_event_name",
            Self::NoNewImage(_) | Self::ImageNotAMap { .. } => "unreadable_image",
            Self::MissingAttribute(_) => "missing_attribute",
            Self::WrongType { .. } => "wrong_attribute_type",
        }
    }
}

/// A record with what it names, for the outcome line, and what to do with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecidedRecord {
    pub sequence_number: Option<String>,
    pub event_name: Option<String>,
    pub stream_arn: Option<String>,
    pub decision: Decision,
}

/// Decides `record` (one element of the event's `Records`) without any I/O.
pub fn decide(record: &Value) -> DecidedRecord {
    let text = |value: Option<&Value>| value.and_then(Value::as_str).map(str::to_owned);
    let stream = record.get("dynamodb");
    let sequence_number = text(stream.and_then(|s| s.get("SequenceNumber")));
    let event_name = text(record.get("eventName"));
    let stream_arn = text(record.get("eventSourceARN"));
    let decision = match decision_of(record, sequence_number.is_some(), event_name.as_deref()) {
        Ok(decision) => decision,
        Err(err) => Decision::Unreadable(err),
    };
    DecidedRecord {
        sequence_number,
        event_name,
        stream_arn,
        decision,
    }
}

fn decision_of(
    record: &Value,
    has_sequence_number: bool,
    event_name: Option<&str>,
) -> Result<Decision, RecordError> {
    let record = record.as_object().ok_or(RecordError::NotAnObject)?;
    if !has_sequence_number {
        return Err(RecordError::NoSequenceNumber);
    }
    let stream = record.get("dynamodb").and_then(Value::as_object);
    let image = |name: &'static str| -> Result<Option<&Map<String, Value>>, RecordError> {
        match stream.and_then(|s| s.get(name)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(image)) => Ok(Some(image)),
            Some(_) => Err(RecordError::ImageNotAMap { image: name }),
        }
    };
    match event_name.ok_or(RecordError::NoEventName)? {
        "REMOVE" => Ok(Decision::Ignore(IgnoreReason::Removed)),
        "INSERT" => {
            let new = image("NewImage")?.ok_or(RecordError::NoNewImage("INSERT"))?;
            order_message(new)
        }
        "MODIFY" => {
            let new = image("NewImage")?.ok_or(RecordError::NoNewImage("MODIFY"))?;
            match image("OldImage")? {
                None => Ok(Decision::Ignore(IgnoreReason::NoOldImage)),
                Some(old) if !matches!(string(old, DISCOUNT_ID), Ok(None)) => {
                    Ok(Decision::Ignore(IgnoreReason::DiscountUnchanged))
                }
                Some(_) => order_message(new),
            }
        }
        other => Err(RecordError::UnknownEventName(other.to_owned())),
    }
}

/// The message of the order in `image`, unless it has no discount or is synced already.
fn order_message(image: &Map<String, Value>) -> Result<Decision, RecordError> {
    let order_id = string(image, ID)?.ok_or(RecordError::MissingAttribute(ID))?;
    let Some(discount_id) = string(image, DISCOUNT_ID)? else {
        return Ok(Decision::Ignore(IgnoreReason::NoDiscount));
    };
    if boolean(image, SYNCED)? == Some(true) {
        return Ok(Decision::Ignore(IgnoreReason::AlreadySynced));
    }
    let discount_code =
        string(image, DISCOUNT_CODE)?.ok_or(RecordError::MissingAttribute(DISCOUNT_CODE))?;
    Ok(Decision::Relay(RelayedMessage {
        order_id,
        discount_id,
        discount_code,
    }))
}

/// A DynamoDB attribute value `{"S": "..."}`; absent (or `{"NULL": true}`) is `None`.
fn string(image: &Map<String, Value>, name: &'static str) -> Result<Option<String>, RecordError> {
    typed(image, name, "S", |v| v.as_str().map(str::to_owned))
}

/// A DynamoDB attribute value `{"BOOL": ...}`; absent (or `{"NULL": true}`) is `None`.
fn boolean(image: &Map<String, Value>, name: &'static str) -> Result<Option<bool>, RecordError> {
    typed(image, name, "BOOL", Value::as_bool)
}

fn typed<T>(
    image: &Map<String, Value>,
    name: &'static str,
    expected: &'static str,
    read: impl Fn(&Value) -> Option<T>,
) -> Result<Option<T>, RecordError> {
    let Some(attribute) = image.get(name) else {
        return Ok(None);
    };
    let wrong_type = || RecordError::WrongType {
        attribute: name,
        expected,
    };
    let attribute = attribute.as_object().ok_or_else(wrong_type)?;
    if attribute.len() == 1 && attribute.get("NULL") == Some(&Value::Bool(true)) {
        return Ok(None);
    }
    match (attribute.len(), attribute.get(expected)) {
        (1, Some(value)) => read(value).map(Some).ok_or_else(wrong_type),
        _ => Err(wrong_type()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const DISCOUNT: &str = "9b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a10";

    fn record(event_name: &str, old: Option<Value>, new: Option<Value>) -> Value {
        let mut stream = json!({
            "Keys": {"id": {"S": "ord_1"}},
            "SequenceNumber": "111",
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        });
        if let Some(old) = old {
            stream["OldImage"] = old;
        }
        if let Some(new) = new {
            stream["NewImage"] = new;
        }
        json!({
            "eventID": "1", "eventName": event_name, "eventVersion": "1.1",
            "eventSource": "aws:dynamodb", "awsRegion": "us-east-1",
            "dynamodb": stream,
            "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-12-01T00:00:00.000",
        })
    }

    fn order() -> Value {
        json!({"id": {"S": "ord_1"}, "discountId": {"S": DISCOUNT}, "discountCode": {"S": "SUMMER25"}, "total": {"N": "1990"}})
    }

    fn relayed() -> Decision {
        Decision::Relay(RelayedMessage {
            order_id: "ord_1".into(),
            discount_id: DISCOUNT.into(),
            discount_code: "SUMMER25".into(),
        })
    }

    fn with(mut image: Value, name: &str, value: Value) -> Value {
        image[name] = value;
        image
    }

    fn without(mut image: Value, name: &str) -> Value {
        image.as_object_mut().unwrap().remove(name);
        image
    }

    #[test]
    fn an_inserted_order_with_a_discount_not_yet_synced_is_relayed() {
        let decided = decide(&record("INSERT", None, Some(order())));
        assert_eq!(decided.decision, relayed());
        assert_eq!(decided.sequence_number.as_deref(), Some("111"));
        assert_eq!(decided.event_name.as_deref(), Some("INSERT"));
        let synced_false = with(order(), SYNCED, json!({"BOOL": false}));
        assert_eq!(
            decide(&record("INSERT", None, Some(synced_false))).decision,
            relayed()
        );
    }

    #[test]
    fn an_inserted_order_without_a_discount_or_already_synced_is_ignored() {
        let plain = json!({"id": {"S": "ord_1"}, "total": {"N": "1990"}});
        assert_eq!(
            decide(&record("INSERT", None, Some(plain))).decision,
            Decision::Ignore(IgnoreReason::NoDiscount)
        );
        let null_discount = with(order(), DISCOUNT_ID, json!({"NULL": true}));
        assert_eq!(
            decide(&record("INSERT", None, Some(null_discount))).decision,
            Decision::Ignore(IgnoreReason::NoDiscount)
        );
        let synced = with(order(), SYNCED, json!({"BOOL": true}));
        assert_eq!(
            decide(&record("INSERT", None, Some(synced))).decision,
            Decision::Ignore(IgnoreReason::AlreadySynced)
        );
    }

    #[test]
    fn the_functions_own_writes_to_an_order_are_ignored() {
        let claimed = with(order(), "polarDiscountClaim", json!({"S": "lease-1"}));
        assert_eq!(
            decide(&record("MODIFY", Some(order()), Some(claimed.clone()))).decision,
            Decision::Ignore(IgnoreReason::DiscountUnchanged)
        );
        let marked = with(
            without(claimed.clone(), "polarDiscountClaim"),
            SYNCED,
            json!({"BOOL": true}),
        );
        assert_eq!(
            decide(&record("MODIFY", Some(claimed), Some(marked))).decision,
            Decision::Ignore(IgnoreReason::DiscountUnchanged)
        );
    }

    #[test]
    fn a_discount_added_to_an_existing_order_is_relayed() {
        let before = json!({"id": {"S": "ord_1"}, "total": {"N": "1990"}});
        assert_eq!(
            decide(&record("MODIFY", Some(before.clone()), Some(order()))).decision,
            relayed()
        );
        let still_none = with(before.clone(), "total", json!({"N": "2990"}));
        assert_eq!(
            decide(&record("MODIFY", Some(before), Some(still_none))).decision,
            Decision::Ignore(IgnoreReason::NoDiscount)
        );
    }

    #[test]
    fn a_removed_order_is_ignored_whatever_its_images() {
        assert_eq!(
            decide(&record("REMOVE", Some(order()), None)).decision,
            Decision::Ignore(IgnoreReason::Removed)
        );
        assert_eq!(
            decide(&record("REMOVE", None, None)).decision,
            Decision::Ignore(IgnoreReason::Removed)
        );
    }

    #[test]
    fn on_a_new_image_only_stream_inserts_are_relayed_and_modifies_are_not() {
        let mut insert = record("INSERT", None, Some(order()));
        insert["dynamodb"]["StreamViewType"] = json!("NEW_IMAGE");
        assert_eq!(decide(&insert).decision, relayed());
        let mut modify = record("MODIFY", None, Some(order()));
        modify["dynamodb"]["StreamViewType"] = json!("NEW_IMAGE");
        assert_eq!(
            decide(&modify).decision,
            Decision::Ignore(IgnoreReason::NoOldImage)
        );
    }

    #[test]
    fn a_record_that_cannot_be_read_says_why() {
        let cases = [
            (record("INSERT", None, None), "no dynamodb.NewImage"),
            (
                record("INSERT", None, Some(without(order(), ID))),
                "NewImage has no id",
            ),
            (
                record("INSERT", None, Some(with(order(), ID, json!({"N": "7"})))),
                "id in NewImage is not of type S",
            ),
            (
                record(
                    "INSERT",
                    None,
                    Some(with(order(), DISCOUNT_ID, json!({"N": "7"}))),
                ),
                "discountId in NewImage is not of type S",
            ),
            (
                record(
                    "INSERT",
                    None,
                    Some(with(order(), DISCOUNT_ID, json!("plain"))),
                ),
                "discountId in NewImage is not of type S",
            ),
            (
                record(
                    "INSERT",
                    None,
                    Some(with(order(), SYNCED, json!({"S": "true"}))),
                ),
                "polarDiscountSynced in NewImage is not of type BOOL",
            ),
            (
                record("INSERT", None, Some(without(order(), DISCOUNT_CODE))),
                "NewImage has no discountCode",
            ),
            (
                record("INSERT", None, Some(json!([1]))),
                "NewImage is not a map",
            ),
            (record("UPSERT", None, Some(order())), "UPSERT"),
            (json!("not a record"), "not a JSON object"),
        ];
        for (record, reason) in cases {
            let Decision::Unreadable(err) = decide(&record).decision else {
                panic!("{record} should be unreadable");
            };
            assert!(err.to_string().contains(reason), "{err} / {reason}");
        }
        let mut no_sequence = record("INSERT", None, Some(order()));
        no_sequence["dynamodb"]
            .as_object_mut()
            .unwrap()
            .remove("SequenceNumber");
        assert_eq!(
            decide(&no_sequence).decision,
            Decision::Unreadable(RecordError::NoSequenceNumber)
        );
    }
}
