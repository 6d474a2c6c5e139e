//! The Lambda edge: building the handler from the environment, telling an SQS batch from
//! the orders table's stream and the scheduled reconciliation event, and reporting init
//! failures to the Runtime API.

use std::time::{Duration, Instant};

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::LambdaEvent;
use serde_json::Value;
use thiserror::Error;
use tracing::{error, info};

use crate::adapters::polar::{HttpTimeouts, PolarClient};
use crate::adapters::{fetch_token, DynamoStore, SqsQueue, SqsRelay, TokenError};
use crate::config::{Config, ConfigError, TokenSource};
use crate::deadline::Deadline;
use crate::ports::{Coordination, Discounts, JournalIndex, OrderLedger, Queue, Relay};
use crate::redelivery::RedeliveryPolicy;
use crate::relay::{relay_records, StreamBatchResponse};
use crate::sync::{process_batch, BatchSettings, Checkpoint, RateLimiter, RetryPolicy, Syncer};
use crate::telemetry::{emf, Count, Distribution, Recorded};

pub struct Handler<S, D, Q, R> {
    syncer: Syncer<S, D>,
    queue: Q,
    relay: R,
    settings: BatchSettings,
}

/// What an invocation carries: the events the function is subscribed to.
#[derive(Debug)]
pub enum Invocation {
    Batch(SqsEvent),
    /// The orders table's DynamoDB stream: the event's `Records`, each read on its own.
    Stream(Vec<Value>),
    /// EventBridge's scheduled event: settle the journals whose owner is gone.
    Reconcile,
}

#[derive(Debug, Error)]
#[error(
    "the event is neither an SQS batch, a DynamoDB stream batch nor EventBridge's scheduled event"
)]
pub struct UnknownEvent(#[source] serde_json::Error);

impl Invocation {
    pub fn parse(event: Value) -> Result<Self, UnknownEvent> {
        let scheduled = event.get("source").and_then(Value::as_str) == Some("aws.events")
            && event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event");
        if scheduled {
            return Ok(Self::Reconcile);
        }
        if let Some(records) = stream_records(&event) {
            return Ok(Self::Stream(records));
        }
        serde_json::from_value(event)
            .map(Self::Batch)
            .map_err(UnknownEvent)
    }
}

/// The records of a DynamoDB Streams event: one of them at least says so.
fn stream_records(event: &Value) -> Option<Vec<Value>> {
    let records = event.get("Records")?.as_array()?;
    let from_dynamodb = records
        .iter()
        .any(|r| r.get("eventSource").and_then(Value::as_str) == Some("aws:dynamodb"));
    from_dynamodb.then(|| records.clone())
}

impl<S, D, Q, R> Handler<S, D, Q, R>
where
    S: OrderLedger + Coordination + JournalIndex,
    D: Discounts,
    Q: Queue,
    R: Relay,
{
    pub fn new(syncer: Syncer<S, D>, queue: Q, relay: R, settings: BatchSettings) -> Self {
        Self {
            syncer,
            queue,
            relay,
            settings,
        }
    }

    /// A DynamoDB Streams batch of the orders table: relays what may have no message.
    pub async fn handle_stream(
        &self,
        records: &[Value],
        deadline: Deadline,
    ) -> Result<StreamBatchResponse, lambda_runtime::Error> {
        Ok(relay_records(&self.relay, self.syncer.metrics(), records, deadline).await?)
    }

    pub async fn handle(
        &self,
        event: LambdaEvent<SqsEvent>,
    ) -> Result<SqsBatchResponse, lambda_runtime::Error> {
        let deadline = Deadline::from_epoch_ms(event.context.deadline);
        let response = process_batch(
            &self.syncer,
            &self.queue,
            &self.settings,
            event.payload,
            deadline,
        )
        .await?;
        Ok(response)
    }

    /// Any event the function receives: an SQS batch answers with its batch item
    /// failures, the scheduled event with the reconciliation's counts.
    pub async fn handle_event(
        &self,
        event: LambdaEvent<Value>,
    ) -> Result<Value, lambda_runtime::Error> {
        let LambdaEvent { payload, context } = event;
        let started = Instant::now();
        let function_name = context.env_config.function_name.clone();
        let request_id = context.request_id.clone();
        let answer = match Invocation::parse(payload)? {
            Invocation::Batch(batch) => {
                let messages = batch.records.len();
                let response = self.handle(LambdaEvent::new(batch, context)).await;
                let recorded = self.syncer.metrics().take();
                emf::publish(&recorded, &function_name, &request_id);
                let response = response?;
                summarize(
                    &recorded,
                    messages,
                    response.batch_item_failures.len(),
                    started,
                );
                serde_json::to_value(response)?
            }
            Invocation::Stream(records) => {
                let deadline = Deadline::from_epoch_ms(context.deadline);
                let response = self.handle_stream(&records, deadline).await;
                let recorded = self.syncer.metrics().take();
                emf::publish(&recorded, &function_name, &request_id);
                let response = response?;
                info!(
                    event = "stream_invocation",
                    records = records.len(),
                    relayed = recorded.count(Count::StreamRecordsRelayed),
                    ignored = recorded.count(Count::StreamRecordsIgnored),
                    deadLettered = recorded.count(Count::StreamRecordsDeadLettered),
                    notAcknowledged = response.batch_item_failures.len(),
                    durationMs = started.elapsed().as_millis() as u64,
                    "stream batch finished"
                );
                serde_json::to_value(response)?
            }
            Invocation::Reconcile => {
                let deadline = Deadline::from_epoch_ms(context.deadline);
                let reconciled = self.syncer.reconcile(deadline).await;
                emf::publish(&self.syncer.metrics().take(), &function_name, &request_id);
                serde_json::to_value(reconciled?)?
            }
        };
        Ok(answer)
    }
}

/// The batch's summary line.
fn summarize(recorded: &Recorded, messages: usize, not_acknowledged: usize, started: Instant) {
    let synced = [
        Count::OrdersDecremented,
        Count::OrdersDeleted,
        Count::OrdersSkippedUnlimited,
        Count::OrdersAlreadyDeleted,
    ]
    .into_iter()
    .map(|count| recorded.count(count))
    .sum::<u64>();
    let polar_requests = recorded
        .distributions
        .get(&Distribution::PolarLatency)
        .map_or(0, Vec::len);
    info!(
        event = "invocation",
        messages,
        synced,
        alreadySynced = recorded.count(Count::OrdersAlreadySynced),
        notAcknowledged = not_acknowledged,
        deadLettered = recorded.count(Count::DeadLettered),
        leaseContention = recorded.count(Count::LeaseContention),
        polarRequests = polar_requests,
        durationMs = started.elapsed().as_millis() as u64,
        "batch finished"
    );
}

#[derive(Debug, Error)]
pub enum InitError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("could not load the Polar access token")]
    Token(#[from] TokenError),
    #[error("could not build the HTTP client")]
    HttpClient(#[from] reqwest::Error),
}

/// The handler as a deployment runs it.
pub type ProductionHandler = Handler<DynamoStore, PolarClient, SqsQueue, SqsRelay>;

/// What tests may change in the production wiring; `Wiring::default()` is production.
#[derive(Clone, Default)]
pub struct Wiring {
    /// Reported every step boundary (tests crash the sync there).
    pub checkpoint: Option<Checkpoint>,
    /// Used instead of a client built from the SDK config (tests count its requests).
    pub dynamo: Option<aws_sdk_dynamodb::Client>,
}

/// Builds the handler once per container from the environment.
pub async fn handler_from_env() -> Result<ProductionHandler, InitError> {
    let config = Config::from_env()?;
    let aws = aws_config::load_defaults(BehaviorVersion::latest()).await;
    handler_from_config(&config, &aws).await
}

/// Wires the clients: AWS from `aws`, the token (SSM if so configured), Polar.
pub async fn handler_from_config(
    config: &Config,
    aws: &SdkConfig,
) -> Result<ProductionHandler, InitError> {
    handler_with(config, aws, Wiring::default()).await
}

/// One DynamoDB, SQS or SSM attempt, and one call with the SDK's own retries: well under
/// any useful function timeout, so a hung call fails (and is retried or reported) instead
/// of eating the invocation.
const AWS_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1500);
const AWS_OPERATION_TIMEOUT: Duration = Duration::from_secs(4);
const AWS_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

fn with_aws_timeouts(aws: &SdkConfig) -> SdkConfig {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(AWS_CONNECT_TIMEOUT)
        .operation_attempt_timeout(AWS_ATTEMPT_TIMEOUT)
        .operation_timeout(AWS_OPERATION_TIMEOUT)
        .build();
    aws.to_builder().timeout_config(timeouts).build()
}

/// The production wiring, with the test hooks of `wiring`.
pub async fn handler_with(
    config: &Config,
    aws: &SdkConfig,
    wiring: Wiring,
) -> Result<ProductionHandler, InitError> {
    let aws = &with_aws_timeouts(aws);
    let timeouts = HttpTimeouts {
        connect: config.polar_connect_timeout,
        request: config.polar_request_timeout,
    };
    let polar = match &config.token_source {
        TokenSource::Inline(token) => {
            PolarClient::new(&config.polar_api_url, token.clone(), timeouts)?
        }
        TokenSource::SsmParameter(name) => {
            let ssm = aws_sdk_ssm::Client::new(aws);
            let token = fetch_token(&ssm, name).await?;
            PolarClient::new(&config.polar_api_url, token, timeouts)?
                .with_token_rotation(ssm, name.clone())
        }
    };
    let store = DynamoStore::new(
        wiring
            .dynamo
            .unwrap_or_else(|| aws_sdk_dynamodb::Client::new(aws)),
        &config.orders_table,
        &config.sync_table,
    );
    let retry = RetryPolicy {
        reserve: config.polar_request_timeout + Duration::from_secs(1),
        ..RetryPolicy::default()
    };
    let rate = RateLimiter::new(config.polar_rate_share());
    let sqs = aws_sdk_sqs::Client::new(aws);
    let queue = SqsQueue::new(
        sqs.clone(),
        config.dead_letter_queue_url.clone(),
        config.max_receive_count,
    );
    let relay = SqsRelay::new(
        sqs,
        config.redemption_queue_url.clone(),
        config.dead_letter_queue_url.clone(),
        config.stream_relay_delay,
    );
    let settings = BatchSettings {
        max_concurrent_discounts: config.max_concurrent_discounts,
        redelivery: RedeliveryPolicy::default(),
    };
    let mut syncer = Syncer::new(store, polar, retry).with_rate_limiter(rate);
    if let Some(checkpoint) = wiring.checkpoint {
        syncer = syncer.with_checkpoint(checkpoint);
    }
    Ok(Handler::new(syncer, queue, relay, settings))
}

/// Tells the Runtime API why init failed, so the failure shows as `Runtime.InitError`
/// with a readable message instead of a bare exit.
pub async fn report_init_error(err: &InitError) {
    let message = crate::error_chain(err);
    error!(error = %message, "initialisation failed");
    let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") else {
        return;
    };
    let body = serde_json::json!({ "errorType": "Runtime.InitError", "errorMessage": message });
    let sent = reqwest::Client::new()
        .post(format!("http://{api}/2018-06-01/runtime/init/error"))
        .header("Lambda-Runtime-Function-Error-Type", "Runtime.InitError")
        .json(&body)
        .send()
        .await;
    if let Err(err) = sent {
        error!(error = %err, "could not report the init error to the Runtime API");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheduled_event_asks_for_a_reconciliation_and_anything_else_must_be_a_batch() {
        let scheduled = serde_json::json!({
            "version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
            "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "123456789012", "time": "2026-11-28T12:00:00Z", "region": "us-east-1",
            "resources": ["arn:aws:events:us-east-1:123456789012:rule/reconcile"], "detail": {}
        });
        assert!(matches!(
            Invocation::parse(scheduled),
            Ok(Invocation::Reconcile)
        ));
        let batch = serde_json::json!({"Records": []});
        assert!(matches!(Invocation::parse(batch), Ok(Invocation::Batch(_))));
        assert!(Invocation::parse(serde_json::json!({"source": "aws.s3"})).is_err());
    }

    #[test]
    fn a_dynamodb_streams_event_is_told_from_an_sqs_batch_by_its_event_source() {
        let stream = serde_json::json!({"Records": [{
            "eventID": "1", "eventName": "INSERT", "eventSource": "aws:dynamodb",
            "dynamodb": {"SequenceNumber": "111", "NewImage": {"id": {"S": "ord_1"}}}
        }]});
        assert!(matches!(
            Invocation::parse(stream),
            Ok(Invocation::Stream(records)) if records.len() == 1
        ));
        let sqs = serde_json::json!({"Records": [{
            "messageId": "m-1", "body": "{}", "eventSource": "aws:sqs"
        }]});
        assert!(matches!(Invocation::parse(sqs), Ok(Invocation::Batch(_))));
    }

    #[test]
    fn aws_calls_time_out_well_before_a_thirty_second_function_does() {
        let aws = with_aws_timeouts(&SdkConfig::builder().build());
        let timeouts = aws.timeout_config().expect("set");
        assert_eq!(
            timeouts.operation_attempt_timeout(),
            Some(AWS_ATTEMPT_TIMEOUT)
        );
        assert_eq!(timeouts.operation_timeout(), Some(AWS_OPERATION_TIMEOUT));
        assert_eq!(timeouts.connect_timeout(), Some(AWS_CONNECT_TIMEOUT));
    }
}
