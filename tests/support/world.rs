//! One test's world: its own tables in the shared moto server (`test_kit::tables`), its own
//! Polar double, and the function wired as production wires it
//! (`polar_discount_sync::lambda::handler_with`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::types::AttributeValue;
use polar_discount_sync::config::Config;
use polar_discount_sync::lambda::{self, ProductionHandler, Wiring};
use polar_double::{DiscountSeed, DoubleConfig, PolarDouble};
use test_kit::tables::{is_synced, Order, Tables};
use uuid::Uuid;

use super::simulated_sqs::SimulatedSqs;
use super::sqs::{event, failed_ids};

pub use test_kit::tables::s;

pub const TOKEN: &str = "polar_oat_test_token_5f0c";

pub struct World {
    pub aws: SdkConfig,
    pub dynamo: aws_sdk_dynamodb::Client,
    pub tables: Tables,
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
    test_kit::aws_config(&moto_endpoint()).await
}

impl World {
    pub async fn start() -> World {
        World::start_with_polar(DoubleConfig::default()).await
    }

    /// A world whose Polar double is configured, e.g. to accept only one token.
    pub async fn start_with_polar(polar: DoubleConfig) -> World {
        let aws = aws_config().await;
        let dynamo = aws_sdk_dynamodb::Client::new(&aws);
        let tables = Tables::create(&dynamo).await;
        World {
            aws,
            dynamo,
            tables,
            polar: PolarDouble::start_with(polar)
                .await
                .expect("Polar double starts"),
        }
    }

    /// The function's environment, as the contract names it.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("ORDERS_TABLE", self.tables.orders.clone()),
            ("SYNC_TABLE", self.tables.sync.clone()),
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
        let order = Order {
            id: id.to_owned(),
            discount: discount_id,
            code: code.to_owned(),
        };
        self.tables.put_order(&self.dynamo, &order).await;
    }

    pub async fn order(&self, id: &str) -> HashMap<String, AttributeValue> {
        self.dynamo
            .get_item()
            .table_name(&self.tables.orders)
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
            .table_name(&self.tables.sync)
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
        if !is_synced(&order) {
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
        let orders: Vec<Order> = orders
            .iter()
            .map(|(id, discount, code)| Order {
                id: id.clone(),
                discount: *discount,
                code: code.clone(),
            })
            .collect();
        self.tables.put_orders(&self.dynamo, &orders).await;
    }

    /// Many order items by id, each read consistently (`BatchGetItem`, 100 per call).
    /// Orders that do not exist are absent from the map.
    pub async fn orders(&self, ids: &[String]) -> HashMap<String, HashMap<String, AttributeValue>> {
        self.tables.orders(&self.dynamo, ids).await
    }
}

/// The configuration the function reads from `env`.
pub fn config_from(env: &[(String, String)]) -> Config {
    let env: HashMap<_, _> = env.iter().cloned().collect();
    Config::from_lookup(|name| env.get(name).cloned()).expect("test config is valid")
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

/// An SQS client that logs the operation of each HTTP request it sends (retries included),
/// as SQS's JSON protocol names it (`X-Amz-Target: AmazonSQS.SendMessageBatch`).
pub fn logging_sqs(aws: &SdkConfig) -> (aws_sdk_sqs::Client, Arc<Mutex<Vec<String>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let config = aws_sdk_sqs::config::Builder::from(aws)
        .interceptor(OperationLog(log.clone()))
        .build();
    (aws_sdk_sqs::Client::from_conf(config), log)
}

#[derive(Debug)]
struct OperationLog(Arc<Mutex<Vec<String>>>);

impl Intercept for OperationLog {
    fn name(&self) -> &'static str {
        "OperationLog"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let target = context.request().headers().get("x-amz-target");
        let operation = target.map_or("?", |t| t.rsplit('.').next().unwrap_or(t));
        self.0.lock().unwrap().push(operation.to_owned());
        Ok(())
    }
}
