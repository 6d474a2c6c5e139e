//! Shared test fixtures: a moto-backed orders table per test and a Polar double per test.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use lambda_runtime::{Context, LambdaEvent};
use polar_discount_sync::adapters::polar::{HttpTimeouts, PolarClient};
use polar_discount_sync::adapters::{DynamoStore, SqsQueue};
use polar_discount_sync::config::{AccessToken, Config, PolarApiUrl};
use polar_discount_sync::lambda::{handler_from_config, Handler};
use polar_discount_sync::redelivery::RedeliveryPolicy;
use polar_discount_sync::sync::{BatchSettings, Checkpoint, RetryPolicy, Syncer};
use polar_double::{DiscountSeed, DoubleConfig, PolarDouble};
use uuid::Uuid;

/// The handler as production wires it.
pub type TestHandler = Handler<DynamoStore, PolarClient, SqsQueue>;

pub const TOKEN: &str = "polar_oat_test_token_5f0c";

/// One test's world: its own tables in the shared moto server and its own Polar double.
pub struct World {
    pub aws: SdkConfig,
    pub dynamo: aws_sdk_dynamodb::Client,
    pub orders_table: String,
    pub sync_table: String,
    pub polar: PolarDouble,
}

pub fn moto_endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").expect(
        "AWS_ENDPOINT_URL is not set: run the tests with `make test` (it starts moto), \
         or `scripts/with-moto.sh cargo test`",
    )
}

pub async fn aws_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(moto_endpoint())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .load()
        .await
}

impl World {
    pub async fn start() -> World {
        World::start_with_polar(DoubleConfig::default()).await
    }

    /// A world whose Polar double is configured, e.g. to accept only one token.
    pub async fn start_with_polar(polar: DoubleConfig) -> World {
        let aws = aws_config().await;
        let dynamo = aws_sdk_dynamodb::Client::new(&aws);
        let suffix = Uuid::new_v4().simple().to_string();
        let orders_table = format!("orders-{suffix}");
        let sync_table = format!("sync-{suffix}");
        create_table(&dynamo, &orders_table, "id").await;
        create_table(&dynamo, &sync_table, "pk").await;
        World {
            aws,
            dynamo,
            orders_table,
            sync_table,
            polar: PolarDouble::start_with(polar)
                .await
                .expect("Polar double starts"),
        }
    }

    /// The function's environment, as the contract names it.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("ORDERS_TABLE", self.orders_table.clone()),
            ("SYNC_TABLE", self.sync_table.clone()),
            ("POLAR_API_URL", self.polar.base_url()),
            ("POLAR_ACCESS_TOKEN", TOKEN.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    pub fn config(&self) -> Config {
        let env: HashMap<_, _> = self.env().into_iter().collect();
        Config::from_lookup(|name| env.get(name).cloned()).expect("test config is valid")
    }

    pub async fn handler(&self) -> Handler<DynamoStore, PolarClient, SqsQueue> {
        handler_from_config(&self.config(), &self.aws)
            .await
            .expect("handler builds")
    }

    /// A handler wired like production, whose syncer reports each step to `checkpoint`
    /// (tests panic there to simulate a crash) and whose Polar requests time out after
    /// `polar_timeout`.
    pub fn handler_with(
        &self,
        checkpoint: Checkpoint,
        polar_timeout: Duration,
    ) -> Handler<DynamoStore, PolarClient, SqsQueue> {
        self.handler_on(self.dynamo.clone(), checkpoint, polar_timeout)
    }

    /// Like `handler_with`, with its own DynamoDB client.
    pub fn handler_on(
        &self,
        dynamo: aws_sdk_dynamodb::Client,
        checkpoint: Checkpoint,
        polar_timeout: Duration,
    ) -> Handler<DynamoStore, PolarClient, SqsQueue> {
        let store = DynamoStore::new(dynamo, &self.orders_table, &self.sync_table);
        let polar = PolarClient::new(
            &PolarApiUrl::parse(&self.polar.base_url()).unwrap(),
            AccessToken::new(TOKEN.to_owned()),
            HttpTimeouts {
                connect: Duration::from_secs(1),
                request: polar_timeout,
            },
        )
        .unwrap();
        let retry = RetryPolicy {
            reserve: polar_timeout + Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        Handler::new(
            Syncer::new(store, polar, retry).with_checkpoint(checkpoint),
            SqsQueue::new(aws_sdk_sqs::Client::new(&self.aws), None, None),
            BatchSettings {
                max_concurrent_discounts: 8,
                redelivery: RedeliveryPolicy::default(),
            },
        )
    }

    pub fn discount(&self, code: &str, max_redemptions: Option<i64>) -> Uuid {
        self.polar.insert_discount(DiscountSeed {
            id: None,
            name: format!("{code} discount"),
            code: Some(code.to_owned()),
            max_redemptions,
        })
    }

    pub async fn put_order(&self, id: &str, discount_id: Uuid, code: &str) {
        self.dynamo
            .put_item()
            .table_name(&self.orders_table)
            .item("id", s(id))
            .item("discountId", s(&discount_id.to_string()))
            .item("discountCode", s(code))
            .item("total", AttributeValue::N("1990".into()))
            .send()
            .await
            .expect("order written");
    }

    pub async fn order(&self, id: &str) -> HashMap<String, AttributeValue> {
        self.dynamo
            .get_item()
            .table_name(&self.orders_table)
            .key("id", s(id))
            .consistent_read(true)
            .send()
            .await
            .expect("order read")
            .item
            .unwrap_or_default()
    }

    /// The discount's coordination item in `SYNC_TABLE` (lease, journal).
    pub async fn sync_item(&self, discount: Uuid) -> HashMap<String, AttributeValue> {
        self.dynamo
            .get_item()
            .table_name(&self.sync_table)
            .key("pk", s(&format!("discount#{discount}")))
            .consistent_read(true)
            .send()
            .await
            .expect("sync item read")
            .item
            .unwrap_or_default()
    }

    /// The order's `polarDiscountSyncAction`, if it was marked synced.
    pub async fn action(&self, id: &str) -> Option<String> {
        let order = self.order(id).await;
        if order.get("polarDiscountSynced")?.as_bool().ok() != Some(&true) {
            return None;
        }
        Some(order.get("polarDiscountSyncAction")?.as_s().ok()?.clone())
    }

    pub fn max_redemptions(&self, id: Uuid) -> Option<Option<i64>> {
        self.polar.max_redemptions(id)
    }

    /// Requests the double received, as "METHOD path".
    pub fn polar_requests(&self) -> Vec<String> {
        self.polar
            .requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    pub async fn deliver(
        &self,
        handler: &Handler<DynamoStore, PolarClient, SqsQueue>,
        messages: &[(&str, String)],
    ) -> Vec<String> {
        let response = handler
            .handle(event(messages, Duration::from_secs(30)))
            .await
            .expect("the batch is handled");
        failed_ids(&response)
    }
}

/// A DynamoDB client that counts the HTTP requests it sends (retries included).
pub fn counting_dynamo(aws: &SdkConfig) -> (aws_sdk_dynamodb::Client, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let config = aws_sdk_dynamodb::config::Builder::from(aws)
        .interceptor(RequestCounter(count.clone()))
        .build();
    (aws_sdk_dynamodb::Client::from_conf(config), count)
}

#[derive(Debug)]
struct RequestCounter(Arc<AtomicUsize>);

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A checkpoint that does nothing.
pub fn no_checkpoint() -> Checkpoint {
    Arc::new(|_| {})
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
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(key)
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create table {name} in moto: {e:?}"));
}

pub fn body(order: &str, discount: Uuid, code: &str) -> String {
    serde_json::json!({"orderId": order, "discountId": discount, "discountCode": code}).to_string()
}

pub fn event(messages: &[(&str, String)], timeout: Duration) -> LambdaEvent<SqsEvent> {
    let mut event = SqsEvent::default();
    event.records = messages
        .iter()
        .map(|(id, body)| {
            let mut message = SqsMessage::default();
            message.message_id = Some(id.to_string());
            message.body = Some(body.clone());
            message.event_source = Some("aws:sqs".into());
            message
        })
        .collect();
    let mut context = Context::default();
    context.request_id = Uuid::new_v4().to_string();
    context.deadline = (std::time::SystemTime::now() + timeout)
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    LambdaEvent::new(event, context)
}

pub fn failed_ids(response: &SqsBatchResponse) -> Vec<String> {
    let mut ids: Vec<String> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    ids.sort();
    ids
}

/// Bulk helpers, for tests with many orders.
impl World {
    /// Writes many orders as checkout does (`put_order`), 25 per `BatchWriteItem`.
    pub async fn put_orders(&self, orders: &[(String, Uuid, String)]) {
        use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
        for chunk in orders.chunks(25) {
            let mut requests: Vec<WriteRequest> = chunk
                .iter()
                .map(|(id, discount_id, code)| {
                    let put = PutRequest::builder()
                        .item("id", s(id))
                        .item("discountId", s(&discount_id.to_string()))
                        .item("discountCode", s(code))
                        .item("total", AttributeValue::N("1990".into()))
                        .build()
                        .expect("an item is set");
                    WriteRequest::builder().put_request(put).build()
                })
                .collect();
            while !requests.is_empty() {
                let output = self
                    .dynamo
                    .batch_write_item()
                    .request_items(&self.orders_table, requests)
                    .send()
                    .await
                    .expect("orders written");
                requests = output
                    .unprocessed_items
                    .and_then(|mut left| left.remove(&self.orders_table))
                    .unwrap_or_default();
            }
        }
    }

    /// Many order items by id, each read consistently (`BatchGetItem`, 100 per call).
    /// Orders that do not exist are absent from the map.
    pub async fn orders(&self, ids: &[String]) -> HashMap<String, HashMap<String, AttributeValue>> {
        use aws_sdk_dynamodb::types::KeysAndAttributes;
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
                let output = self
                    .dynamo
                    .batch_get_item()
                    .request_items(&self.orders_table, request)
                    .send()
                    .await
                    .expect("orders read");
                for item in output
                    .responses
                    .and_then(|mut tables| tables.remove(&self.orders_table))
                    .unwrap_or_default()
                {
                    if let Some(id) = item.get("id").and_then(|v| v.as_s().ok()).cloned() {
                        found.insert(id, item);
                    }
                }
                keys = output
                    .unprocessed_keys
                    .and_then(|mut left| left.remove(&self.orders_table))
                    .map(|left| left.keys)
                    .unwrap_or_default();
            }
        }
        found
    }
}
