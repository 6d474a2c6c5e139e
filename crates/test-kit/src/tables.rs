//! The function's two tables in moto, fresh per test or bench run: the orders table
//! (key `id`) and `SYNC_TABLE` (key `pk`), with orders written as checkout writes them
//! (CONTRACT.md).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, KeysAndAttributes,
    PutRequest, ScalarAttributeType, WriteRequest,
};
use uuid::Uuid;

/// One order as checkout writes it, and the message it sends for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Order {
    pub id: String,
    pub discount: Uuid,
    pub code: String,
}

impl Order {
    pub fn message_body(&self) -> String {
        crate::sqs::body(&self.id, self.discount, &self.code)
    }

    /// The item checkout writes in the orders table.
    pub fn item(&self) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("id".to_owned(), s(&self.id)),
            ("discountId".to_owned(), s(&self.discount.to_string())),
            ("discountCode".to_owned(), s(&self.code)),
            ("total".to_owned(), AttributeValue::N("1990".into())),
        ])
    }
}

/// The names of the orders table and `SYNC_TABLE`.
#[derive(Debug, Clone)]
pub struct Tables {
    pub orders: String,
    pub sync: String,
}

impl Tables {
    pub async fn create(dynamo: &aws_sdk_dynamodb::Client) -> Tables {
        let suffix = Uuid::new_v4().simple().to_string();
        let tables = Tables {
            orders: format!("orders-{suffix}"),
            sync: format!("sync-{suffix}"),
        };
        create_table(dynamo, &tables.orders, "id").await;
        create_table(dynamo, &tables.sync, "pk").await;
        tables
    }

    /// Drops both tables, so that moto does not carry them through later runs.
    pub async fn delete(&self, dynamo: &aws_sdk_dynamodb::Client) {
        for table in [&self.orders, &self.sync] {
            let _ = dynamo.delete_table().table_name(table).send().await;
        }
    }

    pub async fn put_order(&self, dynamo: &aws_sdk_dynamodb::Client, order: &Order) {
        dynamo
            .put_item()
            .table_name(&self.orders)
            .set_item(Some(order.item()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("PutItem order {}: {e:?}", order.id));
    }

    /// Writes the orders, 25 per `BatchWriteItem`.
    pub async fn put_orders(&self, dynamo: &aws_sdk_dynamodb::Client, orders: &[Order]) {
        for chunk in orders.chunks(25) {
            let mut requests: Vec<WriteRequest> = chunk
                .iter()
                .map(|order| {
                    let put = PutRequest::builder()
                        .set_item(Some(order.item()))
                        .build()
                        .expect("an item is set");
                    WriteRequest::builder().put_request(put).build()
                })
                .collect();
            while !requests.is_empty() {
                let output = dynamo
                    .batch_write_item()
                    .request_items(&self.orders, requests)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("BatchWriteItem orders: {e:?}"));
                requests = output
                    .unprocessed_items
                    .and_then(|mut left| left.remove(&self.orders))
                    .unwrap_or_default();
            }
        }
    }

    /// Many order items by id, each read consistently (`BatchGetItem`, 100 per call).
    /// Orders that do not exist are absent from the map.
    pub async fn orders(
        &self,
        dynamo: &aws_sdk_dynamodb::Client,
        ids: &[String],
    ) -> HashMap<String, HashMap<String, AttributeValue>> {
        let mut found = HashMap::new();
        for chunk in ids.chunks(100) {
            let mut keys: Vec<HashMap<String, AttributeValue>> = chunk
                .iter()
                .map(|id| HashMap::from([("id".to_owned(), s(id))]))
                .collect();
            while !keys.is_empty() {
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .build()
                    .expect("keys are set");
                let output = dynamo
                    .batch_get_item()
                    .request_items(&self.orders, request)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("BatchGetItem orders: {e:?}"));
                for item in output
                    .responses
                    .and_then(|mut tables| tables.remove(&self.orders))
                    .unwrap_or_default()
                {
                    if let Some(id) = item.get("id").and_then(|v| v.as_s().ok()).cloned() {
                        found.insert(id, item);
                    }
                }
                keys = output
                    .unprocessed_keys
                    .and_then(|mut left| left.remove(&self.orders))
                    .map(|left| left.keys)
                    .unwrap_or_default();
            }
        }
        found
    }
}

/// Whether an order item is marked synced (`polarDiscountSynced` = true).
pub fn is_synced(order: &HashMap<String, AttributeValue>) -> bool {
    order
        .get("polarDiscountSynced")
        .and_then(|v| v.as_bool().ok())
        .copied()
        == Some(true)
}

pub fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

async fn create_table(dynamo: &aws_sdk_dynamodb::Client, name: &str, key: &str) {
    dynamo
        .create_table()
        .table_name(name)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(key)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("name and type are set"),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(key)
                .key_type(KeyType::Hash)
                .build()
                .expect("name and key type are set"),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateTable {name} in moto: {e:?}"));
}
