//! The Lambda edge: building the handler from the environment (syncing, or in shadow mode
//! only planning), telling an SQS batch from the orders table's stream and the scheduled
//! reconciliation event, and reporting init failures and invocation errors to the Runtime
//! API under stable names.

use std::time::{Duration, Instant};

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde_json::Value;
use thiserror::Error;
use tracing::{error, info, warn};

use crate::adapters::polar::{HttpTimeouts, PolarClient};
use crate::adapters::{fetch_token, DynamoStore, SqsQueue, SqsRelay, TokenError};
use crate::config::{Config, ConfigError, TokenSource};
use crate::deadline::Deadline;
use crate::ports::{Coordination, Discounts, JournalIndex, OrderLedger, OrderReader, Queue, Relay};
use crate::relay::{plan_records, relay_records, StreamBatchResponse, StreamError};
use crate::sync::{
    process_batch, shadow, BatchError, BatchSettings, Checkpoint, RateLimiter, RedeliveryPolicy,
    RetryPolicy, Shadow, SyncError, Syncer,
};
use crate::telemetry::{emf, Count, Metrics, Recorded};

pub struct Handler<S, D, Q, R> {
    mode: Mode<S, D, Q, R>,
}

/// What the function does with its events: sync them, or (`SHADOW_MODE`) only plan them.
enum Mode<S, D, Q, R> {
    Sync {
        syncer: Syncer<S, D>,
        queue: Q,
        /// Where the orders table's stream records are relayed.
        relay: R,
        settings: BatchSettings,
    },
    /// Holds no queue and, through its bounds, reads only.
    Shadow(Shadow<S, D>),
}

/// What an invocation carries: the two events the function is subscribed to.
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

/// Why a whole invocation failed. The Runtime API gets each as a [`Diagnostic`] whose
/// `errorType` is [`InvocationError::error_type`]: a stable name to alarm and search on.
#[derive(Debug, Error)]
pub enum InvocationError {
    #[error(transparent)]
    UnknownEvent(#[from] UnknownEvent),
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("the scheduled reconciliation could not list the journals")]
    Reconciliation(#[source] SyncError),
    #[error("the answer could not be serialised")]
    Answer(#[from] serde_json::Error),
}

impl InvocationError {
    /// The `errorType` the Runtime API receives; part of what operators rely on.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::UnknownEvent(_) => "UnknownEvent",
            Self::Batch(BatchError::MissingMessageId { .. }) => "MissingMessageId",
            Self::Stream(StreamError::Unreportable { .. }) => "UnreportableStreamRecord",
            Self::Reconciliation(_) => "ReconciliationFailed",
            Self::Answer(_) => "AnswerNotSerializable",
        }
    }
}

impl From<InvocationError> for Diagnostic {
    fn from(err: InvocationError) -> Self {
        Diagnostic {
            error_type: err.error_type().to_owned(),
            error_message: crate::error_chain(&err),
        }
    }
}

impl<S, D, Q, R> Handler<S, D, Q, R>
where
    S: OrderLedger + Coordination + JournalIndex + OrderReader,
    D: Discounts,
    Q: Queue,
    R: Relay,
{
    pub fn new(syncer: Syncer<S, D>, queue: Q, relay: R, settings: BatchSettings) -> Self {
        Self {
            mode: Mode::Sync {
                syncer,
                queue,
                relay,
                settings,
            },
        }
    }

    /// A handler that plans and logs, and writes nothing (`SHADOW_MODE=true`).
    pub fn shadow(shadow: Shadow<S, D>) -> Self {
        Self {
            mode: Mode::Shadow(shadow),
        }
    }

    pub fn is_shadow(&self) -> bool {
        matches!(self.mode, Mode::Shadow(_))
    }

    fn metrics(&self) -> &Metrics {
        match &self.mode {
            Mode::Sync { syncer, .. } => syncer.metrics(),
            Mode::Shadow(shadow) => shadow.metrics(),
        }
    }

    pub async fn handle(
        &self,
        event: LambdaEvent<SqsEvent>,
    ) -> Result<SqsBatchResponse, InvocationError> {
        let deadline = Deadline::from_epoch_ms(event.context.deadline);
        let response = match &self.mode {
            Mode::Sync {
                syncer,
                queue,
                settings,
                ..
            } => process_batch(syncer, queue, settings, event.payload, deadline).await?,
            Mode::Shadow(shadow) => shadow.plan_batch(event.payload, deadline).await.response(),
        };
        Ok(response)
    }

    /// A DynamoDB Streams batch of the orders table: relays what may have no message (in
    /// shadow mode: logs what it would relay, sends nothing, acknowledges every record).
    pub async fn handle_stream(
        &self,
        records: &[Value],
        deadline: Deadline,
    ) -> Result<StreamBatchResponse, InvocationError> {
        match &self.mode {
            Mode::Sync { syncer, relay, .. } => {
                Ok(relay_records(relay, syncer.metrics(), records, deadline).await?)
            }
            Mode::Shadow(_) => Ok(plan_records(records)),
        }
    }

    /// Any event the function receives: an SQS batch answers with its batch item
    /// failures, the scheduled event with the reconciliation's counts.
    pub async fn handle_event(&self, event: LambdaEvent<Value>) -> Result<Value, InvocationError> {
        let LambdaEvent { payload, context } = event;
        let started = Instant::now();
        let function_name = context.env_config.function_name.clone();
        let request_id = context.request_id.clone();
        let answer = match Invocation::parse(payload)? {
            Invocation::Batch(batch) => {
                let messages = batch.records.len();
                let response = self.handle(LambdaEvent::new(batch, context)).await;
                let recorded = self.metrics().take();
                emf::publish(&recorded, &function_name, &request_id);
                let response = response?;
                if self.is_shadow() {
                    shadow::summarize(&recorded, messages, started);
                } else {
                    summarize(
                        &recorded,
                        messages,
                        response.batch_item_failures.len(),
                        started,
                    );
                }
                serde_json::to_value(response)?
            }
            Invocation::Stream(records) => {
                let deadline = Deadline::from_epoch_ms(context.deadline);
                let response = self.handle_stream(&records, deadline).await;
                let recorded = self.metrics().take();
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
                let answer = match &self.mode {
                    Mode::Sync { syncer, .. } => {
                        syncer.reconcile(deadline).await.map(serde_json::to_value)
                    }
                    Mode::Shadow(shadow) => {
                        shadow.reconcile(deadline).await.map(serde_json::to_value)
                    }
                };
                emf::publish(&self.metrics().take(), &function_name, &request_id);
                answer.map_err(InvocationError::Reconciliation)??
            }
        };
        Ok(answer)
    }
}

/// The batch's summary line.
fn summarize(recorded: &Recorded, messages: usize, not_acknowledged: usize, started: Instant) {
    let synced = recorded.total(&[
        Count::OrdersDecremented,
        Count::OrdersDeleted,
        Count::OrdersSkippedUnlimited,
        Count::OrdersAlreadyDeleted,
    ]);
    let polar_requests = recorded.polar_requests();
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

/// Kept at the end of a batch once its last step may have started its last request: that
/// step's commit (a transaction), then the disposal (the failed messages' SQS calls, ten to
/// a request, all at once), then the answer. Measured, each call takes a few ms (moto:
/// 3.6–7.5 ms for the commit's transaction; DynamoDB and SQS answer in tens of ms at p99):
/// ten times the three at a slow 25 ms. A call slower than that, up to its attempt timeout,
/// is cut off by the disposal's answer margin, its message reported failed (docs/design.md,
/// "The deadline").
/// Two attempt timeouts (3 s) cost a 10 s invocation a quarter of its steps.
const ANSWER_RESERVE: Duration = Duration::from_millis(750);

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
    let shares = config.polar_rate_shares();
    if config.shadow_mode {
        warn!(
            shadowMode = true,
            "SHADOW_MODE is on: messages are planned and logged, nothing is written to \
             Polar, the orders table, the sync table or any queue, and every message is \
             acknowledged"
        );
        let shadow = Shadow::new(
            store,
            polar,
            retry,
            RedeliveryPolicy::default(),
            config.max_concurrent_discounts,
        )
        .with_rate_limiter(RateLimiter::new(shares.batches));
        return Ok(Handler::shadow(shadow));
    }
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
        answer_reserve: ANSWER_RESERVE,
    };
    let mut syncer = Syncer::new(store, polar, retry)
        .with_rate_limiter(RateLimiter::new(shares.batches))
        .with_reconciliation_rate_limiter(RateLimiter::new(shares.reconciliation));
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
    fn every_invocation_error_reaches_the_runtime_api_under_a_stable_name_with_its_chain() {
        let unknown = Invocation::parse(serde_json::json!({"source": "aws.s3"})).unwrap_err();
        let not_serializable = serde_json::from_str::<Value>("{").unwrap_err();
        let listing = SyncError::Store(crate::ports::StoreFailure::Misconfigured(
            "ResourceNotFoundException: no table sync".into(),
        ));
        let errors = [
            (InvocationError::from(unknown), "UnknownEvent"),
            (
                BatchError::MissingMessageId { index: 3 }.into(),
                "MissingMessageId",
            ),
            (
                StreamError::Unreportable {
                    index: 0,
                    what: "relayed",
                }
                .into(),
                "UnreportableStreamRecord",
            ),
            (
                InvocationError::Reconciliation(listing),
                "ReconciliationFailed",
            ),
            (not_serializable.into(), "AnswerNotSerializable"),
        ];
        for (err, name) in errors {
            let chain = crate::error_chain(&err);
            let diagnostic = Diagnostic::from(err);
            assert_eq!(diagnostic.error_type, name);
            assert_eq!(diagnostic.error_message, chain);
        }
        let diagnostic = Diagnostic::from(InvocationError::Reconciliation(SyncError::Store(
            crate::ports::StoreFailure::Misconfigured("no table sync".into()),
        )));
        assert!(
            diagnostic
                .error_message
                .contains("could not list the journals")
                && diagnostic.error_message.contains("no table sync"),
            "the message carries the sources: {}",
            diagnostic.error_message
        );
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
