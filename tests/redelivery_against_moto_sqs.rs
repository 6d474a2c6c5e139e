//! Issue 4 end to end: the handler, wired as in production, behind a test poller that plays
//! Lambda's SQS event source mapping (receive a batch, invoke, delete what was acknowledged,
//! leave the failures), against real queues in moto (a source queue with a redrive policy
//! and its dead-letter queue) and the Polar double with injected faults.
//!
//! Every run drains the source queue, then checks that each message ended synced or in the
//! dead-letter queue with its reason, that the visibility delays were applied, and that
//! Polar counted every distinct order exactly once.

mod support;

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage, SqsMessageAttribute};
use aws_sdk_dynamodb::primitives::{DateTime, DateTimeFormat};
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName, QueueAttributeName,
};
use lambda_runtime::{Context, LambdaEvent};
use polar_discount_sync::config::Config;
use polar_discount_sync::lambda::handler_from_config;
use polar_discount_sync::redelivery::RedeliveryPolicy;
use polar_double::{Fault, FaultAction};
use support::{body, TestHandler, World};
use uuid::Uuid;

/// The source queues' redrive limit: small, so the last receive comes quickly.
const MAX_RECEIVE_COUNT: u32 = 3;
/// The deadline of each invocation. Short, so a 429's `retry-after` does not fit in the
/// invocation (a retry needs the delay plus a whole request, 5 s + 1 s, before the
/// deadline) and the message goes back to the queue instead.
const INVOCATION_TIMEOUT: Duration = Duration::from_secs(12);
/// Polar's `retry-after` on the injected 429.
const RETRY_AFTER_SECS: u64 = 6;
/// moto's clock (wall time, whole milliseconds) against the test's monotonic clock.
const CLOCK_TOLERANCE: Duration = Duration::from_millis(150);
const REGION: &str = "us-east-1";

// ---------------------------------------------------------------------------------------
// Queues in moto
// ---------------------------------------------------------------------------------------

/// A source queue with a redrive policy to its own dead-letter queue, unique per test.
struct Queues {
    sqs: aws_sdk_sqs::Client,
    source_url: String,
    source_arn: String,
    dead_letter_url: String,
    fifo: bool,
}

impl Queues {
    async fn create(world: &World, fifo: bool, visibility_timeout_secs: u32) -> Queues {
        let sqs = aws_sdk_sqs::Client::new(&world.aws);
        let suffix = Uuid::new_v4().simple().to_string();
        let ext = if fifo { ".fifo" } else { "" };
        let fifo_attributes = || -> Vec<(QueueAttributeName, String)> {
            if fifo {
                vec![
                    (QueueAttributeName::FifoQueue, "true".into()),
                    (QueueAttributeName::ContentBasedDeduplication, "true".into()),
                ]
            } else {
                Vec::new()
            }
        };
        let dead_letter_url = create_queue(
            &sqs,
            &format!("redelivery-dlq-{suffix}{ext}"),
            fifo_attributes(),
        )
        .await;
        let dead_letter_arn = queue_arn(&sqs, &dead_letter_url).await;
        let redrive = serde_json::json!({
            "deadLetterTargetArn": dead_letter_arn,
            "maxReceiveCount": MAX_RECEIVE_COUNT,
        });
        let mut attributes = fifo_attributes();
        attributes.extend([
            (
                QueueAttributeName::VisibilityTimeout,
                visibility_timeout_secs.to_string(),
            ),
            (QueueAttributeName::RedrivePolicy, redrive.to_string()),
        ]);
        let source_url =
            create_queue(&sqs, &format!("redelivery-src-{suffix}{ext}"), attributes).await;
        let source_arn = queue_arn(&sqs, &source_url).await;
        Queues {
            sqs,
            source_url,
            source_arn,
            dead_letter_url,
            fifo,
        }
    }

    /// Sends one message as the checkout would; returns its message id.
    async fn send(&self, body: &str, group: Option<&str>) -> String {
        let mut send = self
            .sqs
            .send_message()
            .queue_url(&self.source_url)
            .message_body(body);
        if self.fifo {
            send = send.message_group_id(group.expect("a FIFO message needs a group"));
        }
        send.send()
            .await
            .unwrap_or_else(|e| panic!("SendMessage to the source queue: {e:?}"))
            .message_id
            .expect("SQS returns a message id")
    }

    /// Messages still in the source queue: visible, in flight or delayed.
    async fn outstanding(&self) -> u64 {
        let attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.source_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GetQueueAttributes on the source queue: {e:?}"));
        attributes
            .attributes()
            .map(|a| a.values().filter_map(|n| n.parse::<u64>().ok()).sum())
            .unwrap_or(0)
    }

    /// Everything in the dead-letter queue, each message once.
    async fn dead_letters(&self) -> Vec<DeadLetter> {
        let mut found = Vec::new();
        loop {
            let output = self
                .sqs
                .receive_message()
                .queue_url(&self.dead_letter_url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .visibility_timeout(600)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .unwrap_or_else(|e| panic!("ReceiveMessage on the dead-letter queue: {e:?}"));
            let messages = output.messages.unwrap_or_default();
            if messages.is_empty() {
                return found;
            }
            found.extend(messages.iter().map(|m| {
                DeadLetter {
                    body: m.body.clone().unwrap_or_default(),
                    attributes: m
                        .message_attributes()
                        .map(|a| {
                            a.iter()
                                .filter_map(|(k, v)| Some((k.clone(), v.string_value.clone()?)))
                                .collect()
                        })
                        .unwrap_or_default(),
                    group_id: m
                        .attributes()
                        .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                        .cloned(),
                }
            }));
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
        .unwrap_or_else(|e| panic!("CreateQueue {name} in moto: {e:?}"))
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
        .expect("moto returns the queue ARN")
}

/// A message found in the dead-letter queue, with its string message attributes.
#[derive(Debug)]
struct DeadLetter {
    body: String,
    attributes: HashMap<String, String>,
    group_id: Option<String>,
}

impl DeadLetter {
    fn attribute(&self, name: &str) -> &str {
        self.attributes
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("dead letter without the {name} attribute: {self:?}"))
    }
}

/// The handler as production builds it, dead-lettering into this test's queue; the redrive
/// limit is read from the source queue's redrive policy (no `MAX_RECEIVE_COUNT`).
async fn handler_for(world: &World, queues: &Queues) -> TestHandler {
    let mut env: HashMap<String, String> = world.env().into_iter().collect();
    env.insert(
        "DEAD_LETTER_QUEUE_URL".into(),
        queues.dead_letter_url.clone(),
    );
    let config = Config::from_lookup(|name| env.get(name).cloned()).expect("test config is valid");
    handler_from_config(&config, &world.aws)
        .await
        .expect("the handler builds")
}

// ---------------------------------------------------------------------------------------
// The poller: Lambda's event source mapping, one batch at a time
// ---------------------------------------------------------------------------------------

/// One receive of one message.
#[derive(Debug, Clone)]
struct Receipt {
    message_id: String,
    /// Just after ReceiveMessage answered.
    at: Instant,
    receive_count: u32,
    invocation: usize,
}

/// One handler invocation: its records in batch order and those it reported failed.
#[derive(Debug)]
struct Invocation {
    ids: Vec<String>,
    failed: HashSet<String>,
}

struct Poller<'a> {
    queues: &'a Queues,
    handler: &'a TestHandler,
    receipts: Vec<Receipt>,
    invocations: Vec<Invocation>,
    /// Message ids deleted after an invocation acknowledged them, in order.
    acknowledged: Vec<String>,
}

impl<'a> Poller<'a> {
    fn new(queues: &'a Queues, handler: &'a TestHandler) -> Self {
        Poller {
            queues,
            handler,
            receipts: Vec::new(),
            invocations: Vec::new(),
            acknowledged: Vec::new(),
        }
    }

    /// Receives one batch; if there is one, invokes the handler and deletes what it
    /// acknowledged. Returns the invocation's index.
    async fn poll(&mut self) -> Option<usize> {
        let sqs = &self.queues.sqs;
        // Short polling: moto serves one request at a time (scripts/moto_server.py), so a
        // long poll would stall every other test's requests.
        let output = sqs
            .receive_message()
            .queue_url(&self.queues.source_url)
            .max_number_of_messages(10)
            .wait_time_seconds(0)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap_or_else(|e| panic!("ReceiveMessage on the source queue: {e:?}"));
        let received_at = Instant::now();
        let messages = output.messages.unwrap_or_default();
        if messages.is_empty() {
            return None;
        }
        let invocation = self.invocations.len();
        let records: Vec<SqsMessage> = messages
            .iter()
            .map(|m| record(m, &self.queues.source_arn))
            .collect();
        let ids: Vec<String> = records
            .iter()
            .map(|r| r.message_id.clone().expect("SQS gives every message an id"))
            .collect();
        for record in &records {
            self.receipts.push(Receipt {
                message_id: record.message_id.clone().unwrap(),
                at: received_at,
                receive_count: record
                    .attributes
                    .get("ApproximateReceiveCount")
                    .and_then(|n| n.parse().ok())
                    .expect("ApproximateReceiveCount is requested"),
                invocation,
            });
        }

        let mut event = SqsEvent::default();
        event.records = records;
        let response = self
            .handler
            .handle(LambdaEvent::new(event, context(INVOCATION_TIMEOUT)))
            .await
            .unwrap_or_else(|e| panic!("invocation {invocation} failed as a whole: {e}"));
        let failed: HashSet<String> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect();
        for id in &failed {
            assert!(
                ids.contains(id),
                "invocation {invocation} reported {id} failed, which was not in its batch {ids:?}"
            );
        }

        let done: Vec<&Message> = messages
            .iter()
            .filter(|m| !failed.contains(m.message_id.as_deref().unwrap()))
            .collect();
        if !done.is_empty() {
            let entries = done
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(m.receipt_handle.clone().expect("a receipt handle"))
                        .build()
                        .expect("id and receipt handle are set")
                })
                .collect();
            let deleted = sqs
                .delete_message_batch()
                .queue_url(&self.queues.source_url)
                .set_entries(Some(entries))
                .send()
                .await
                .unwrap_or_else(|e| panic!("DeleteMessageBatch: {e:?}"));
            assert!(
                deleted.failed.is_empty(),
                "DeleteMessageBatch failed for {:?}",
                deleted.failed
            );
            self.acknowledged
                .extend(done.iter().map(|m| m.message_id.clone().unwrap()));
        }
        self.invocations.push(Invocation { ids, failed });
        Some(invocation)
    }

    /// Polls until the source queue holds nothing, visible or in flight.
    async fn drain(&mut self, bound: Duration, labels: &HashMap<String, String>) {
        let start = Instant::now();
        loop {
            if self.poll().await.is_some() {
                continue;
            }
            if self.queues.outstanding().await == 0 {
                return;
            }
            if start.elapsed() > bound {
                panic!(
                    "the source queue did not drain within {bound:?}; {} messages left.\n{}",
                    self.queues.outstanding().await,
                    self.history(labels)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn receipts_of(&self, id: &str) -> Vec<&Receipt> {
        self.receipts
            .iter()
            .filter(|r| r.message_id == id)
            .collect()
    }

    /// Each message's receives (receive count, seconds since the first receive of all,
    /// failed or acknowledged), for failure messages.
    fn history(&self, labels: &HashMap<String, String>) -> String {
        let origin = self.receipts.first().map(|r| r.at);
        let mut out = String::new();
        let mut ids: Vec<&String> = labels.keys().collect();
        ids.sort_by_key(|id| &labels[*id]);
        for id in ids {
            let _ = write!(out, "  {:<12} {id}:", labels[id]);
            for r in self.receipts_of(id) {
                let failed = self.invocations[r.invocation].failed.contains(id);
                let _ = write!(
                    out,
                    " #{}@{:.1}s{}",
                    r.receive_count,
                    origin.map_or(0.0, |o| r.at.duration_since(o).as_secs_f64()),
                    if failed { "(failed)" } else { "(ack)" }
                );
            }
            out.push('\n');
        }
        out
    }

    /// Every time a message was reported failed and came back, the gap between the two
    /// receives is at least `minimum(message id, receive count)`.
    fn assert_redelivery_gaps(
        &self,
        labels: &HashMap<String, String>,
        minimum: impl Fn(&str, u32) -> Duration,
    ) {
        for (id, label) in labels {
            let receipts = self.receipts_of(id);
            for pair in receipts.windows(2) {
                let (earlier, later) = (pair[0], pair[1]);
                assert!(
                    self.invocations[earlier.invocation].failed.contains(id),
                    "{label} ({id}) was received again after it was acknowledged\n{}",
                    self.history(labels)
                );
                let floor = minimum(id, earlier.receive_count);
                let gap = later.at.duration_since(earlier.at);
                assert!(
                    gap + CLOCK_TOLERANCE >= floor,
                    "{label} ({id}) came back {gap:?} after its receive #{}, sooner than {floor:?}\n{}",
                    earlier.receive_count,
                    self.history(labels)
                );
            }
        }
    }
}

/// The record Lambda's event source mapping builds from a received message.
fn record(message: &Message, source_arn: &str) -> SqsMessage {
    let mut record = SqsMessage::default();
    record.message_id = message.message_id.clone();
    record.receipt_handle = message.receipt_handle.clone();
    record.body = message.body.clone();
    record.md5_of_body = message.md5_of_body.clone();
    record.md5_of_message_attributes = message.md5_of_message_attributes.clone();
    record.attributes = message
        .attributes()
        .map(|a| {
            a.iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    record.message_attributes = message
        .message_attributes()
        .map(|a| {
            a.iter()
                .map(|(k, v)| {
                    let mut attribute = SqsMessageAttribute::default();
                    attribute.data_type = Some(v.data_type.clone());
                    attribute.string_value = v.string_value.clone();
                    attribute.string_list_values = v.string_list_values().to_vec();
                    (k.clone(), attribute)
                })
                .collect()
        })
        .unwrap_or_default();
    record.event_source_arn = Some(source_arn.to_owned());
    record.event_source = Some("aws:sqs".into());
    record.aws_region = Some(REGION.into());
    record
}

fn context(timeout: Duration) -> Context {
    let mut context = Context::default();
    context.request_id = Uuid::new_v4().to_string();
    context.deadline = (SystemTime::now() + timeout)
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    context
}

// ---------------------------------------------------------------------------------------
// Helpers on the world
// ---------------------------------------------------------------------------------------

fn fault(method: &str, discount: Uuid, times: u32, action: FaultAction) -> Fault {
    Fault::new(action)
        .method(method)
        .discount(discount)
        .times(times)
}

fn polar_requests_on(world: &World, discount: Uuid) -> Vec<polar_double::RecordedRequest> {
    let path = format!("/v1/discounts/{discount}");
    world
        .polar
        .requests()
        .into_iter()
        .filter(|r| r.path.trim_end_matches('/') == path)
        .collect()
}

/// The `max_redemptions` of every PATCH that Polar applied to `discount`, in order.
fn applied_patches(world: &World, discount: Uuid) -> Vec<i64> {
    polar_requests_on(world, discount)
        .iter()
        .filter(|r| r.method == "PATCH" && r.status.is_some_and(|s| (200..300).contains(&s)))
        .map(|r| {
            serde_json::from_str::<serde_json::Value>(&r.body).expect("a JSON PATCH body")
                ["max_redemptions"]
                .as_i64()
                .expect("the PATCH sets max_redemptions")
        })
        .collect()
}

async fn synced_at(world: &World, order: &str) -> DateTime {
    let item = world.order(order).await;
    let raw = item
        .get("polarDiscountSyncedAt")
        .and_then(|v| v.as_s().ok())
        .unwrap_or_else(|| panic!("order {order} has no polarDiscountSyncedAt: {item:?}"));
    DateTime::from_str(raw, DateTimeFormat::DateTime)
        .unwrap_or_else(|e| panic!("polarDiscountSyncedAt {raw:?} is not RFC 3339: {e}"))
}

/// What a sent message must end as.
#[derive(Debug, Clone)]
enum Expect {
    /// Its order is synced with one of these actions; the message is not dead-lettered.
    Synced {
        order: &'static str,
        actions: &'static [&'static str],
    },
    /// In the dead-letter queue once, with these attributes.
    DeadLettered {
        class: &'static str,
        kind: &'static str,
        receive_count: u32,
        /// Text the reason must contain.
        reason_mentions: &'static str,
    },
}

struct Sent {
    label: &'static str,
    id: String,
    body: String,
    expect: Expect,
}

// ---------------------------------------------------------------------------------------
// Standard queue
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_mixed_workload_with_faults_ends_synced_or_dead_lettered_with_its_reason() {
    let started = Instant::now();
    let world = World::start().await;
    let queues = Queues::create(&world, false, 3).await;
    let handler = handler_for(&world, &queues).await;

    let spring = world.discount("SPRING", Some(10));
    let last = world.discount("LASTTWO", Some(2));
    let rate = world.discount("RATE", Some(5));
    let broken = world.discount("BROKEN", Some(5));
    let vip = world.discount("VIP", None);
    for (order, discount, code) in [
        ("o1", spring, "SPRING"),
        ("o2", spring, "SPRING"),
        ("o3", spring, "SPRING"),
        ("o4", spring, "SPRING"),
        ("l1", last, "LASTTWO"),
        ("l2", last, "LASTTWO"),
        ("r1", rate, "RATE"),
        ("r2", rate, "RATE"),
        ("x1", broken, "BROKEN"),
        ("v1", vip, "VIP"),
        // Written by checkout with VIP; its message names another code. (On a discount
        // whose Polar calls do not fail: see the last test for why.)
        ("m1", vip, "VIP"),
        // The order and its message agree, but Polar's code for the discount differs.
        ("c1", vip, "NOTVIP"),
    ] {
        world.put_order(order, discount, code).await;
    }

    // One 429 on RATE's first read: 6 s does not fit before the 12 s deadline with a
    // whole request after it, so the messages go back to the queue for at least 6 s.
    world.polar.inject(fault(
        "GET",
        rate,
        1,
        FaultAction::too_many_requests(RETRY_AFTER_SECS),
    ));
    // SPRING's first reads fail four times: more than the in-process attempts.
    world.polar.inject(fault(
        "GET",
        spring,
        4,
        FaultAction::status(503, r#"{"detail":"Service Unavailable"}"#),
    ));
    // A 5xx on a write: read back, found not applied, written again.
    world.polar.inject(fault(
        "PATCH",
        spring,
        1,
        FaultAction::status(500, r#"{"detail":"Internal Server Error"}"#),
    ));
    // LASTTWO: reads that fail twice (absorbed in the invocation), and a DELETE that
    // answers 502 without being applied.
    world.polar.inject(fault(
        "GET",
        last,
        2,
        FaultAction::status(502, "Bad Gateway"),
    ));
    world.polar.inject(fault(
        "DELETE",
        last,
        1,
        FaultAction::status(502, "Bad Gateway"),
    ));
    // BROKEN answers like a wrong base URL on every read: a configuration error.
    world.polar.inject(fault(
        "GET",
        broken,
        10_000,
        FaultAction::status(404, r#"{"detail":"Not Found"}"#),
    ));

    const DECREMENTED: &[&str] = &["decremented"];
    let synced = |order, actions| Expect::Synced { order, actions };
    let dead = |class, kind, receive_count, reason_mentions| Expect::DeadLettered {
        class,
        kind,
        receive_count,
        reason_mentions,
    };
    let workload: Vec<(&str, String, Expect)> = vec![
        ("r1", body("r1", rate, "RATE"), synced("r1", DECREMENTED)),
        (
            "o1",
            body("o1", spring, "SPRING"),
            synced("o1", DECREMENTED),
        ),
        (
            "l1",
            body("l1", last, "LASTTWO"),
            synced("l1", &["decremented", "deleted"]),
        ),
        (
            "truncated",
            r#"{"orderId": "o9", "discountId": "#.to_owned(),
            dead("permanent", "invalid_message", 1, ""),
        ),
        (
            "bad-uuid",
            r#"{"orderId": "o8", "discountId": "not-a-uuid", "discountCode": "SPRING"}"#.to_owned(),
            dead("permanent", "invalid_message", 1, ""),
        ),
        (
            "o2",
            body("o2", spring, "spring"),
            synced("o2", DECREMENTED),
        ),
        (
            "ghost",
            body("ghost", spring, "SPRING"),
            dead("permanent", "order_not_found", MAX_RECEIVE_COUNT, "ghost"),
        ),
        (
            "x1",
            body("x1", broken, "BROKEN"),
            dead("configuration", "polar", MAX_RECEIVE_COUNT, "404"),
        ),
        (
            "o1-dup",
            body("o1", spring, "SPRING"),
            synced("o1", DECREMENTED),
        ),
        (
            "m1",
            body("m1", vip, "AUTUMN"),
            dead("permanent", "order_mismatch", 1, "m1"),
        ),
        ("r2", body("r2", rate, "RATE"), synced("r2", DECREMENTED)),
        (
            "l2",
            body("l2", last, "LASTTWO"),
            synced("l2", &["decremented", "deleted"]),
        ),
        (
            "v1",
            body("v1", vip, "VIP"),
            synced("v1", &["skipped_unlimited"]),
        ),
        (
            "c1",
            body("c1", vip, "NOTVIP"),
            dead("permanent", "discount_code_mismatch", 1, "c1"),
        ),
        (
            "o3",
            body("o3", spring, "SPRING"),
            synced("o3", DECREMENTED),
        ),
        (
            "l2-dup",
            body("l2", last, "LASTTWO"),
            synced("l2", &["decremented", "deleted"]),
        ),
        (
            "o4",
            body("o4", spring, "SPRING"),
            synced("o4", DECREMENTED),
        ),
        (
            "o3-dup",
            body("o3", spring, "SPRING"),
            synced("o3", DECREMENTED),
        ),
    ];
    let mut sent = Vec::new();
    for (label, body, expect) in workload {
        let id = queues.send(&body, None).await;
        sent.push(Sent {
            label,
            id,
            body,
            expect,
        });
    }
    let labels: HashMap<String, String> = sent
        .iter()
        .map(|s| (s.id.clone(), s.label.to_owned()))
        .collect();

    let mut poller = Poller::new(&queues, &handler);
    poller.drain(Duration::from_secs(60), &labels).await;
    let drained_in = started.elapsed();
    let history = poller.history(&labels);

    // Nothing lost: every message was acknowledged exactly once (synced, or after its
    // dead-lettering), and the source queue is empty.
    let mut acknowledged = poller.acknowledged.clone();
    acknowledged.sort();
    let mut expected_ids: Vec<String> = sent.iter().map(|s| s.id.clone()).collect();
    expected_ids.sort();
    assert_eq!(
        acknowledged, expected_ids,
        "every sent message is acknowledged exactly once\n{history}"
    );
    assert_eq!(queues.outstanding().await, 0);

    // The dead-letter queue holds exactly the failing messages, once each, with reasons.
    let dead_letters = queues.dead_letters().await;
    let mut by_original: HashMap<String, Vec<&DeadLetter>> = HashMap::new();
    for letter in &dead_letters {
        by_original
            .entry(letter.attribute("OriginalMessageId").to_owned())
            .or_default()
            .push(letter);
    }
    for message in &sent {
        let letters = by_original.remove(&message.id).unwrap_or_default();
        match &message.expect {
            Expect::Synced { order, actions } => {
                assert!(
                    letters.is_empty(),
                    "{} was dead-lettered: {letters:?}\n{history}",
                    message.label
                );
                let action = world.action(order).await;
                assert!(
                    action.as_deref().is_some_and(|a| actions.contains(&a)),
                    "{}: order {order} should be synced with one of {actions:?}, is {action:?}\n{history}",
                    message.label
                );
            }
            Expect::DeadLettered {
                class,
                kind,
                receive_count,
                reason_mentions,
            } => {
                let [letter] = letters[..] else {
                    panic!(
                        "{} should be in the dead-letter queue exactly once, found {letters:?}\n{history}",
                        message.label
                    );
                };
                let label = message.label;
                assert_eq!(
                    letter.attribute("ErrorClass"),
                    *class,
                    "{label}: {letter:?}"
                );
                assert_eq!(letter.attribute("ErrorKind"), *kind, "{label}: {letter:?}");
                let reason = letter.attribute("Reason");
                assert!(
                    !reason.trim().is_empty() && reason.contains(reason_mentions),
                    "{label}: the reason should mention {reason_mentions:?}: {reason:?}"
                );
                assert_eq!(
                    letter.attribute("ReceiveCount"),
                    receive_count.to_string(),
                    "{label}: dead-lettered on the wrong receive\n{history}"
                );
                assert_eq!(
                    letter.attribute("SourceQueueArn"),
                    queues.source_arn,
                    "{label}"
                );
                assert_eq!(
                    letter.body, message.body,
                    "{label}: the body is kept as it was"
                );
                let receives = poller.receipts_of(&message.id);
                assert_eq!(
                    receives.len() as u32,
                    *receive_count,
                    "{label} is dead-lettered on its receive #{receive_count}, not before, not after\n{history}"
                );
            }
        }
    }
    assert!(
        by_original.is_empty(),
        "dead letters for messages never sent: {by_original:?}"
    );
    assert_eq!(dead_letters.len(), 6, "{dead_letters:?}");

    // Nothing double-counted: each discount went down by its distinct synced orders.
    assert_eq!(
        world.max_redemptions(spring),
        Some(Some(6)),
        "o1..o4 once each"
    );
    assert_eq!(
        world.max_redemptions(last),
        None,
        "the last use deletes LASTTWO"
    );
    assert_eq!(
        world.max_redemptions(rate),
        Some(Some(3)),
        "r1, r2 once each"
    );
    assert_eq!(
        world.max_redemptions(broken),
        Some(Some(5)),
        "never written"
    );
    assert_eq!(world.max_redemptions(vip), Some(None), "unlimited stays so");
    let spring_patches = applied_patches(&world, spring);
    assert!(
        spring_patches.windows(2).all(|w| w[1] < w[0]) && spring_patches.last() == Some(&6),
        "SPRING's applied PATCHes: {spring_patches:?}"
    );
    let last_actions = [world.action("l1").await, world.action("l2").await];
    assert!(
        last_actions.contains(&Some("deleted".to_owned())),
        "one of LASTTWO's orders is its last use: {last_actions:?}"
    );
    assert_eq!(
        applied_patches(&world, last).len(),
        last_actions
            .iter()
            .filter(|a| a.as_deref() == Some("decremented"))
            .count(),
        "LASTTWO is patched once per decremented order"
    );
    for never in ["x1", "m1", "c1"] {
        assert_eq!(world.action(never).await, None, "{never} is not synced");
    }
    assert!(
        world.order("ghost").await.is_empty(),
        "ghost is never created"
    );

    // The visibility delays were applied: a failed message came back no sooner than
    // the policy's delay for its receive (at least half the ceiling), and a 429'd one no
    // sooner than Polar's retry-after.
    let policy = RedeliveryPolicy::default();
    let rate_limited_answers = polar_requests_on(&world, rate)
        .iter()
        .filter(|r| r.status == Some(429))
        .count();
    assert_eq!(rate_limited_answers, 1, "RATE answered one 429");
    let first_rate_invocation = poller
        .invocations
        .iter()
        .position(|inv| {
            inv.ids
                .iter()
                .any(|id| matches!(labels[id].as_str(), "r1" | "r2"))
        })
        .expect("RATE's messages were delivered");
    let rate_limited: HashSet<String> = poller.invocations[first_rate_invocation]
        .ids
        .iter()
        .filter(|id| matches!(labels[*id].as_str(), "r1" | "r2"))
        .cloned()
        .collect();
    for id in &rate_limited {
        assert!(
            poller.invocations[first_rate_invocation]
                .failed
                .contains(id),
            "{} was answered 429 and must be retried\n{history}",
            labels[id]
        );
        assert!(
            poller.receipts_of(id).len() >= 2,
            "{} came back after its 429\n{history}",
            labels[id]
        );
    }
    poller.assert_redelivery_gaps(&labels, |id, receive_count| {
        let backoff = policy.backoff.ceiling(receive_count) / 2;
        if rate_limited.contains(id) && receive_count == 1 {
            backoff.max(Duration::from_secs(RETRY_AFTER_SECS))
        } else {
            backoff
        }
    });
    // The messages that needed three receives were delayed on the second by more than
    // the queue's own 3 s visibility timeout: the handler set it.
    for label in ["ghost", "x1"] {
        let id = &sent.iter().find(|s| s.label == label).unwrap().id;
        let receives = poller.receipts_of(id);
        let gap = receives[2].at.duration_since(receives[1].at);
        assert!(
            gap + CLOCK_TOLERANCE >= policy.backoff.ceiling(2) / 2,
            "{label}: {gap:?}\n{history}"
        );
    }

    eprintln!(
        "standard queue: {} messages drained in {drained_in:?} over {} invocations\n{history}",
        sent.len(),
        poller.invocations.len()
    );
}

// ---------------------------------------------------------------------------------------
// FIFO queue
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_fifo_group_keeps_its_order_and_a_failure_holds_back_the_rest_of_its_group() {
    let started = Instant::now();
    let world = World::start().await;
    // The queue's visibility (2 s) is shorter than any delay the handler sets (≥ 3 s
    // after rounding), so the held-back messages are visible again before the message
    // that failed: the group stays blocked behind it, as in SQS.
    let queues = Queues::create(&world, true, 2).await;
    let handler = handler_for(&world, &queues).await;

    let group_a = world.discount("GROUPA", Some(10));
    let group_b = world.discount("GROUPB", Some(10));
    // a1's order is not written yet: its first delivery fails with order_not_found.
    for (order, discount, code) in [
        ("a2", group_a, "GROUPA"),
        ("a3", group_a, "GROUPA"),
        ("b1", group_b, "GROUPB"),
        ("c2", group_b, "GROUPB"),
    ] {
        world.put_order(order, discount, code).await;
    }

    let mut ids: HashMap<&str, String> = HashMap::new();
    let mut bodies: HashMap<&str, String> = HashMap::new();
    for (label, group, message) in [
        ("a1", "A", body("a1", group_a, "GROUPA")),
        ("b1", "B", body("b1", group_b, "GROUPB")),
        ("a2", "A", body("a2", group_a, "GROUPA")),
        // A bad message is dead-lettered at once: it does not hold its group back.
        ("c1", "C", r#"{"orderId": "c1", "discountId": "#.to_owned()),
        ("a3", "A", body("a3", group_a, "GROUPA")),
        ("c2", "C", body("c2", group_b, "GROUPB")),
    ] {
        ids.insert(label, queues.send(&message, Some(group)).await);
        bodies.insert(label, message);
    }
    let labels: HashMap<String, String> = ids
        .iter()
        .map(|(label, id)| (id.clone(), (*label).to_owned()))
        .collect();
    let id = |label: &str| ids[label].clone();

    // The first batch: every message, in the order sent.
    let mut poller = Poller::new(&queues, &handler);
    let first = poller
        .poll()
        .await
        .expect("the first poll receives a batch");
    let first_labels: Vec<&str> = poller.invocations[first]
        .ids
        .iter()
        .map(|id| labels[id].as_str())
        .collect();
    assert_eq!(
        first_labels,
        ["a1", "b1", "a2", "c1", "a3", "c2"],
        "moto delivers the whole FIFO backlog in one batch, in order"
    );
    let failed: HashSet<&str> = poller.invocations[first]
        .failed
        .iter()
        .map(|id| labels[id].as_str())
        .collect();
    assert_eq!(
        failed,
        HashSet::from(["a1", "a2", "a3"]),
        "a1 failed, so the rest of group A is reported failed with it"
    );
    // a2 and a3 were not processed: not claimed, not synced, nothing asked of Polar.
    for order in ["a2", "a3"] {
        let item = world.order(order).await;
        assert!(
            !item.contains_key("polarDiscountSynced")
                && !item.contains_key("polarDiscountSyncClaim"),
            "{order} must not be touched while a1 blocks its group: {item:?}"
        );
    }
    assert!(
        polar_requests_on(&world, group_a).is_empty(),
        "no Polar request for group A yet: {:?}",
        world.polar_requests()
    );
    assert_eq!(world.max_redemptions(group_a), Some(Some(10)));
    // The other groups went on.
    assert_eq!(world.action("b1").await.as_deref(), Some("decremented"));
    assert_eq!(world.action("c2").await.as_deref(), Some("decremented"));
    assert_eq!(world.max_redemptions(group_b), Some(Some(8)));

    // Checkout's write of a1's order lands; the group drains in order.
    world.put_order("a1", group_a, "GROUPA").await;
    poller.drain(Duration::from_secs(45), &labels).await;
    let history = poller.history(&labels);

    for order in ["a1", "a2", "a3"] {
        assert_eq!(
            world.action(order).await.as_deref(),
            Some("decremented"),
            "{order}\n{history}"
        );
    }
    assert_eq!(world.max_redemptions(group_a), Some(Some(7)));
    assert_eq!(world.max_redemptions(group_b), Some(Some(8)));
    let (at1, at2, at3) = (
        synced_at(&world, "a1").await,
        synced_at(&world, "a2").await,
        synced_at(&world, "a3").await,
    );
    assert!(
        at1 <= at2 && at2 <= at3,
        "group A synced in order: a1 {at1}, a2 {at2}, a3 {at3}"
    );
    assert_eq!(
        applied_patches(&world, group_a),
        [9, 8, 7],
        "one write per message, in the group's order"
    );

    // No batch ever handed a2 or a3 to the handler without a1 ahead of it, until a1 was
    // acknowledged; within a batch the group's order holds.
    let a1_done = poller
        .invocations
        .iter()
        .position(|inv| inv.ids.contains(&id("a1")) && !inv.failed.contains(&id("a1")))
        .expect("a1 was acknowledged");
    for (n, invocation) in poller.invocations.iter().enumerate() {
        let group: Vec<&str> = invocation
            .ids
            .iter()
            .map(|id| labels[id].as_str())
            .filter(|l| l.starts_with('a'))
            .collect();
        let mut sorted = group.clone();
        sorted.sort();
        assert_eq!(
            group, sorted,
            "invocation {n}: group A out of order\n{history}"
        );
        if n <= a1_done && !group.is_empty() {
            assert_eq!(group[0], "a1", "invocation {n}: a1 must lead\n{history}");
        }
    }
    // a1's retry was delayed by the handler, not just the queue's visibility timeout.
    let policy = RedeliveryPolicy::default();
    poller.assert_redelivery_gaps(&labels, |label_id, receive_count| {
        if label_id == id("a1") {
            policy.backoff.ceiling(receive_count) / 2
        } else {
            Duration::ZERO
        }
    });

    // Every message acknowledged once; the bad one is in the FIFO dead-letter queue,
    // in its group, with its reason.
    let mut acknowledged = poller.acknowledged.clone();
    acknowledged.sort();
    let mut all: Vec<String> = ids.values().cloned().collect();
    all.sort();
    assert_eq!(acknowledged, all, "{history}");
    let dead_letters = queues.dead_letters().await;
    let [letter] = &dead_letters[..] else {
        panic!("only c1 is dead-lettered: {dead_letters:?}");
    };
    assert_eq!(letter.attribute("OriginalMessageId"), id("c1"));
    assert_eq!(letter.attribute("ErrorClass"), "permanent");
    assert_eq!(letter.attribute("ErrorKind"), "invalid_message");
    assert!(!letter.attribute("Reason").trim().is_empty());
    assert_eq!(letter.attribute("ReceiveCount"), "1");
    assert_eq!(letter.attribute("SourceQueueArn"), queues.source_arn);
    assert_eq!(letter.body, bodies["c1"]);
    assert_eq!(letter.group_id.as_deref(), Some("C"));

    eprintln!(
        "FIFO queue: drained in {:?} over {} invocations\n{history}",
        started.elapsed(),
        poller.invocations.len()
    );
}

// ---------------------------------------------------------------------------------------
// A settled outcome is not overwritten by its discount's Polar failure
// ---------------------------------------------------------------------------------------

/// A message whose fate is settled before Polar is asked (its order does not match it, or
/// its order is already synced) keeps that fate when Polar then fails for the other orders
/// of the same discount: the mismatch is dead-lettered at once with its own reason, the
/// duplicate is acknowledged. Only the orders that needed Polar go back to the queue.
#[tokio::test]
async fn a_polar_failure_of_the_discount_does_not_hold_back_messages_already_settled() {
    let world = World::start().await;
    let queues = Queues::create(&world, false, 3).await;
    let handler = handler_for(&world, &queues).await;
    let flaky = world.discount("FLAKY", Some(10));
    for order in ["f0", "f1", "fm"] {
        world.put_order(order, flaky, "FLAKY").await;
    }

    // f0 is synced by an earlier delivery.
    let mut poller = Poller::new(&queues, &handler);
    queues.send(&body("f0", flaky, "FLAKY"), None).await;
    let earlier = poller.poll().await.expect("f0 is delivered");
    assert!(poller.invocations[earlier].failed.is_empty());
    assert_eq!(world.action("f0").await.as_deref(), Some("decremented"));

    // Then Polar fails every read of this invocation for FLAKY.
    world.polar.inject(fault(
        "GET",
        flaky,
        4,
        FaultAction::status(503, r#"{"detail":"Service Unavailable"}"#),
    ));
    let mut labels = HashMap::new();
    for (label, message) in [
        ("f1", body("f1", flaky, "FLAKY")),
        ("f0-dup", body("f0", flaky, "FLAKY")),
        ("fm", body("fm", flaky, "WRONG")),
    ] {
        labels.insert(queues.send(&message, None).await, label.to_owned());
    }
    let batch = poller.poll().await.expect("the batch is delivered");
    let failed: HashSet<&str> = poller.invocations[batch]
        .failed
        .iter()
        .map(|id| labels[id].as_str())
        .collect();
    let dead_letters = queues.dead_letters().await;
    let dead_kinds: Vec<(&str, &str)> = dead_letters
        .iter()
        .map(|l| {
            (
                labels[l.attribute("OriginalMessageId")].as_str(),
                l.attribute("ErrorKind"),
            )
        })
        .collect();
    assert_eq!(
        dead_kinds,
        [("fm", "order_mismatch")],
        "the mismatch is permanent and known before Polar is asked: dead-lettered on its \
         first receive with its own reason (batch failures: {failed:?})"
    );
    assert_eq!(
        failed,
        HashSet::from(["f1"]),
        "only f1 needed Polar; f0's duplicate is already synced and fm is dead-lettered"
    );
    assert_eq!(world.max_redemptions(flaky), Some(Some(9)));
}

/// `make dlq-list` shows an operator each dead letter with the reason the function gave.
#[tokio::test]
async fn the_dlq_listing_shows_each_dead_letter_with_its_reason() {
    let world = World::start().await;
    let queues = Queues::create(&world, false, 3).await;
    let handler = handler_for(&world, &queues).await;
    let original = queues.send("{\"orderId\": \"o1\"", None).await;
    Poller::new(&queues, &handler).poll().await;

    let output =
        std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python"))
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/dlq.py"))
            // No long polling: moto serves one request at a time.
            .args([
                "list",
                "--json",
                "--wait-seconds",
                "0",
                "--queue-url",
                &queues.dead_letter_url,
            ])
            .output()
            .expect("the dev venv has python with boto3");

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listed: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["OriginalMessageId"], original);
    assert_eq!(listed[0]["ErrorClass"], "permanent");
    assert_eq!(listed[0]["ErrorKind"], "invalid_message");
    assert!(
        listed[0]["Reason"]
            .as_str()
            .unwrap()
            .contains("not the expected JSON"),
        "{listed:?}"
    );
    assert_eq!(listed[0]["body"], "{\"orderId\": \"o1\"");
}
