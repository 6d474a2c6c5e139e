//! One test's world: its own tables in the shared moto server, its own Polar double, and
//! the function wired as production wires it (`polar_discount_sync::lambda::handler_with`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, KeysAndAttributes,
    PutRequest, ScalarAttributeType, WriteRequest,
};
use polar_discount_sync::config::Config;
use polar_discount_sync::lambda::{self, ProductionHandler, Wiring};
use polar_double::{DiscountSeed, DoubleConfig, PolarDouble};
use uuid::Uuid;

use super::simulated_sqs::SimulatedSqs;
use super::sqs::{event, failed_ids};

pub const TOKEN: &str = "polar_oat_test_token_5f0c";

pub struct World {
    pub aws: SdkConfig,
    pub dynamo: aws_sdk_dynamodb::Client,
    pub orders_table: String,
    pub sync_table: String,
    pub polar: PolarDouble,
}

/// Where SQS requests go: moto, like every other AWS request, or a simulated SQS.
#[derive(Clone)]
pub enum SqsBackend {
    Moto,
    Simulated(Arc<SimulatedSqs>),
}

impl SqsBackend {
    pub async fn simulated() -> SqsBackend {
        SqsBackend::Simulated(SimulatedSqs::start().await)
    }

    pub fn name(&self) -> &'static str {
        match self {
            SqsBackend::Moto => "moto",
            SqsBackend::Simulated(_) => "simulated",
        }
    }

    /// The SDK configuration for SQS clients: `aws` itself, or `aws` pointed at the
    /// simulated SQS.
    pub fn aws(&self, aws: &SdkConfig) -> SdkConfig {
        match self {
            SqsBackend::Moto => aws.clone(),
            SqsBackend::Simulated(sqs) => aws.to_builder().endpoint_url(sqs.endpoint()).build(),
        }
    }

    pub fn client(&self, aws: &SdkConfig) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.aws(aws))
    }
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
        .region(aws_config::Region::new(super::sqs::REGION))
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

    /// The environment of a function process whose SQS requests go to `sqs`.
    pub fn env_on(&self, sqs: &SqsBackend) -> Vec<(String, String)> {
        let mut env = self.env();
        if let SqsBackend::Simulated(sqs) = sqs {
            env.push(("AWS_ENDPOINT_URL_SQS".into(), sqs.endpoint().to_owned()));
        }
        env
    }

    /// The configuration the function reads from `env()`.
    pub fn config(&self) -> Config {
        config_from(&self.env())
    }

    /// The handler as production builds it from `config()`.
    pub async fn handler(&self) -> ProductionHandler {
        lambda::handler_from_config(&self.config(), &self.aws)
            .await
            .expect("handler builds")
    }

    /// The production wiring with test hooks (a checkpoint, a DynamoDB client).
    pub async fn handler_wired(&self, wiring: Wiring) -> ProductionHandler {
        self.handler_on(&SqsBackend::Moto, &self.config(), wiring)
            .await
    }

    /// The production handler; the counter counts its DynamoDB requests.
    pub async fn counting_handler(&self) -> (ProductionHandler, Arc<AtomicUsize>) {
        let (dynamo, requests) = counting_dynamo(&self.aws);
        let wiring = Wiring {
            dynamo: Some(dynamo),
            ..Wiring::default()
        };
        (self.handler_wired(wiring).await, requests)
    }

    /// The production wiring from `config`, its SQS requests going to `sqs`.
    pub async fn handler_on(
        &self,
        sqs: &SqsBackend,
        config: &Config,
        mut wiring: Wiring,
    ) -> ProductionHandler {
        // DynamoDB stays on moto when SQS goes elsewhere.
        wiring.dynamo.get_or_insert_with(|| self.dynamo.clone());
        lambda::handler_with(config, &sqs.aws(&self.aws), wiring)
            .await
            .expect("handler builds")
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
            .set_item(Some(order_item(id, discount_id, code)))
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

    /// Requests the double received for `discount`.
    pub fn polar_requests_on(&self, discount: Uuid) -> Vec<polar_double::RecordedRequest> {
        let path = format!("/v1/discounts/{discount}");
        self.polar
            .requests()
            .into_iter()
            .filter(|r| r.path.trim_end_matches('/') == path)
            .collect()
    }

    /// First receives of `messages`, in one invocation with 30 s to go; the failed ids.
    pub async fn deliver(
        &self,
        handler: &ProductionHandler,
        messages: &[(&str, String)],
    ) -> Vec<String> {
        self.deliver_within(handler, messages, Duration::from_secs(30))
            .await
    }

    /// Delivers one batch to an invocation that has `timeout` to run.
    pub async fn deliver_within(
        &self,
        handler: &ProductionHandler,
        messages: &[(&str, String)],
        timeout: Duration,
    ) -> Vec<String> {
        let response = handler
            .handle(event(messages, timeout))
            .await
            .expect("the batch is handled");
        failed_ids(&response)
    }

    /// Writes many orders as checkout does (`put_order`), 25 per `BatchWriteItem`.
    pub async fn put_orders(&self, orders: &[(String, Uuid, String)]) {
        for chunk in orders.chunks(25) {
            let mut requests: Vec<WriteRequest> = chunk
                .iter()
                .map(|(id, discount_id, code)| {
                    let put = PutRequest::builder()
                        .set_item(Some(order_item(id, *discount_id, code)))
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

/// The configuration the function reads from `env`.
pub fn config_from(env: &[(String, String)]) -> Config {
    let env: HashMap<_, _> = env.iter().cloned().collect();
    Config::from_lookup(|name| env.get(name).cloned()).expect("test config is valid")
}

/// An order item as checkout writes it.
fn order_item(id: &str, discount_id: Uuid, code: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("id".to_owned(), s(id)),
        ("discountId".to_owned(), s(&discount_id.to_string())),
        ("discountCode".to_owned(), s(code)),
        ("total".to_owned(), AttributeValue::N("1990".into())),
    ])
}

/// A DynamoDB client that counts the HTTP requests it sends (retries included).
pub fn counting_dynamo(aws: &SdkConfig) -> (aws_sdk_dynamodb::Client, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let config = aws_sdk_dynamodb::config::Builder::from(aws)
        .interceptor(RequestCounter(count.clone()))
        .build();
    (aws_sdk_dynamodb::Client::from_conf(config), count)
}

/// Counts the HTTP requests an AWS SDK client sends (retries included); one interceptor
/// serves every SDK.
#[derive(Debug)]
pub struct RequestCounter(pub Arc<AtomicUsize>);

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
