//! The intent journal as a DynamoDB map attribute.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::{number, string};
use crate::domain::{DiscountId, Intent, Journal, OrderId};
use crate::ports::StoreFailure;

pub(super) fn encode_journal(journal: &Journal) -> AttributeValue {
    let orders = journal.orders.iter().map(|o| string(o.as_str())).collect();
    let mut map = HashMap::from([
        ("orders".to_owned(), AttributeValue::L(orders)),
        ("read".to_owned(), number(journal.read)),
    ]);
    match journal.intent {
        Intent::SetMaxRedemptions(target) => {
            map.insert("intent".into(), string("set_max_redemptions"));
            map.insert("target".into(), number(target));
        }
        Intent::Delete => {
            map.insert("intent".into(), string("delete"));
        }
    }
    AttributeValue::M(map)
}

pub(super) fn decode_journal(
    discount: DiscountId,
    value: &AttributeValue,
) -> Result<Journal, StoreFailure> {
    let corrupt = || StoreFailure::CorruptJournal(discount);
    let map = value.as_m().map_err(|_| corrupt())?;
    let int = |name: &str| -> Result<i64, StoreFailure> {
        map.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .ok_or_else(corrupt)
    };
    let orders = map
        .get("orders")
        .and_then(|v| v.as_l().ok())
        .ok_or_else(corrupt)?
        .iter()
        .map(|v| {
            v.as_s()
                .ok()
                .and_then(|s| OrderId::parse(s.clone()).ok())
                .ok_or_else(corrupt)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let intent = match map
        .get("intent")
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
    {
        Some("set_max_redemptions") => Intent::SetMaxRedemptions(int("target")?),
        Some("delete") => Intent::Delete,
        _ => return Err(corrupt()),
    };
    Ok(Journal {
        orders,
        read: int("read")?,
        intent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_survives_its_encoding() {
        let discount = DiscountId::parse("9b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a10").unwrap();
        for intent in [Intent::SetMaxRedemptions(7), Intent::Delete] {
            let journal = Journal {
                orders: vec![
                    OrderId::parse("o1".into()).unwrap(),
                    OrderId::parse("o2".into()).unwrap(),
                ],
                read: 9,
                intent,
            };
            assert_eq!(
                decode_journal(discount, &encode_journal(&journal)).unwrap(),
                journal
            );
        }
    }

    #[test]
    fn a_journal_with_an_unknown_intent_is_reported_as_corrupt() {
        let discount = DiscountId::parse("9b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a10").unwrap();
        let value = AttributeValue::M(HashMap::from([
            ("orders".to_owned(), AttributeValue::L(vec![])),
            ("read".to_owned(), number(3)),
            ("intent".to_owned(), string("increment")),
        ]));
        assert!(matches!(
            decode_journal(discount, &value),
            Err(StoreFailure::CorruptJournal(_))
        ));
    }
}
