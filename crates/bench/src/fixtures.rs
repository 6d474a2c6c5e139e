//! Fresh moto tables and queues for one run, orders written as checkout writes them
//! (CONTRACT.md), messages sent as checkout sends them, and the reads the checks need.
//! Adapted from `tests/support/{world,queues}.rs`.

use std::collections::{HashMap, HashSet};

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, KeysAndAttributes,
    PutRequest, ScalarAttributeType, WriteRequest,
};
use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use uuid::Uuid;

pub const REGION: &str = "us-east-1";

/// SDK configuration for `endpoint` (moto, or the counting proxy in front of it).
pub async fn aws_config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new(REGION))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testing", "testing", None, None, "bench",
        ))
        .load()
        .await
}

/// One order as checkout writes it, and the message it sends for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Order {
    pub id: String,
    pub discount: Uuid,
    pub code: String,
}

impl Order {
    pub fn message_body(&self) -> String {
        serde_json::json!({
            "orderId": self.id,
            "discountId": self.discount,
            "discountCode": self.code,
        })
        .to_string()
    }
}

#[derive(Debug, Clone)]
pub struct Tables {
    pub orders: String,
    pub sync: String,
}

impl Tables {
    pub async fn create(dynamo: &aws_sdk_dynamodb::Client) -> Tables {
        let suffix = Uuid::new_v4().simple().to_string();
        let tables = Tables {
            orders: format!("bench-orders-{suffix}"),
            sync: format!("bench-sync-{suffix}"),
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

    /// Writes the orders, 25 per `BatchWriteItem`.
    pub async fn put_orders(&self, dynamo: &aws_sdk_dynamodb::Client, orders: &[Order]) {
        for chunk in orders.chunks(25) {
            let mut requests: Vec<WriteRequest> = chunk
                .iter()
                .map(|order| {
                    let put = PutRequest::builder()
                        .set_item(Some(order_item(order)))
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

    /// The ids among `ids` whose order is marked synced (`polarDiscountSynced` = true),
    /// read consistently.
    pub async fn synced_orders(
        &self,
        dynamo: &aws_sdk_dynamodb::Client,
        ids: &[String],
    ) -> HashSet<String> {
        let mut synced = HashSet::new();
        for chunk in ids.chunks(100) {
            let mut keys: Vec<HashMap<String, AttributeValue>> = chunk
                .iter()
                .map(|id| HashMap::from([("id".to_owned(), AttributeValue::S(id.clone()))]))
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
                let items = output
                    .responses
                    .and_then(|mut tables| tables.remove(&self.orders))
                    .unwrap_or_default();
                for item in items {
                    let is_synced = item
                        .get("polarDiscountSynced")
                        .and_then(|v| v.as_bool().ok())
                        .copied()
                        == Some(true);
                    if let (true, Some(AttributeValue::S(id))) = (is_synced, item.get("id")) {
                        synced.insert(id.clone());
                    }
                }
                keys = output
                    .unprocessed_keys
                    .and_then(|mut left| left.remove(&self.orders))
                    .map(|left| left.keys)
                    .unwrap_or_default();
            }
        }
        synced
    }
}

fn order_item(order: &Order) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("id".to_owned(), AttributeValue::S(order.id.clone())),
        (
            "discountId".to_owned(),
            AttributeValue::S(order.discount.to_string()),
        ),
        (
            "discountCode".to_owned(),
            AttributeValue::S(order.code.clone()),
        ),
        ("total".to_owned(), AttributeValue::N("1990".into())),
    ])
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

/// A standard source queue with a redrive policy to its own dead-letter queue.
#[derive(Debug, Clone)]
pub struct Queues {
    pub source_url: String,
    pub source_arn: String,
    pub dead_letter_url: String,
}

impl Queues {
    pub async fn create(
        sqs: &aws_sdk_sqs::Client,
        visibility_timeout_secs: u32,
        max_receive_count: u32,
    ) -> Queues {
        let suffix = Uuid::new_v4().simple().to_string();
        let dead_letter_url = create_queue(sqs, &format!("bench-dlq-{suffix}"), Vec::new()).await;
        let dead_letter_arn = queue_arn(sqs, &dead_letter_url).await;
        let redrive = serde_json::json!({
            "deadLetterTargetArn": dead_letter_arn,
            "maxReceiveCount": max_receive_count,
        });
        let source_url = create_queue(
            sqs,
            &format!("bench-src-{suffix}"),
            vec![
                (
                    QueueAttributeName::VisibilityTimeout,
                    visibility_timeout_secs.to_string(),
                ),
                (QueueAttributeName::RedrivePolicy, redrive.to_string()),
            ],
        )
        .await;
        let source_arn = queue_arn(sqs, &source_url).await;
        Queues {
            source_url,
            source_arn,
            dead_letter_url,
        }
    }

    /// Deletes both queues, so that moto does not carry them through later runs.
    pub async fn delete(&self, sqs: &aws_sdk_sqs::Client) {
        for url in [&self.source_url, &self.dead_letter_url] {
            let _ = sqs.delete_queue().queue_url(url).send().await;
        }
    }

    /// Sends the bodies in order, 10 per `SendMessageBatch`.
    pub async fn send(&self, sqs: &aws_sdk_sqs::Client, bodies: &[String]) {
        for chunk in bodies.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, body)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .build()
                        .expect("id and body are set")
                })
                .collect();
            let sent = sqs
                .send_message_batch()
                .queue_url(&self.source_url)
                .set_entries(Some(entries))
                .send()
                .await
                .unwrap_or_else(|e| panic!("SendMessageBatch: {e:?}"));
            assert!(
                sent.failed.is_empty(),
                "SendMessageBatch: {:?}",
                sent.failed
            );
        }
    }

    /// The bodies of everything in the dead-letter queue (received and left invisible for
    /// ten minutes, so each is seen once).
    pub async fn dead_letter_bodies(&self, sqs: &aws_sdk_sqs::Client) -> Vec<String> {
        let mut bodies = Vec::new();
        loop {
            let output = sqs
                .receive_message()
                .queue_url(&self.dead_letter_url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .visibility_timeout(600)
                .send()
                .await
                .unwrap_or_else(|e| panic!("ReceiveMessage on the dead-letter queue: {e:?}"));
            let messages = output.messages.unwrap_or_default();
            if messages.is_empty() {
                return bodies;
            }
            bodies.extend(messages.into_iter().filter_map(|m| m.body));
        }
    }
}

async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: Vec<(QueueAttributeName, String)>,
) -> String {
    sqs.create_queue()
        .queue_name(name)
        .set_attributes(Some(attributes.into_iter().collect()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateQueue {name}: {e:?}"))
        .queue_url
        .expect("CreateQueue returns the queue URL")
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> String {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GetQueueAttributes(QueueArn) of {url}: {e:?}"))
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .expect("the queue ARN is returned")
}
