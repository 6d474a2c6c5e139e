//! The built `polar-discount-sync` binary, driven through the Lambda Runtime API with
//! the event files from `events/`, as Lambda would run it.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use lambda_driver::{FunctionProcess, Outcome, RuntimeApi};
use polar_double::DiscountSeed;
use support::queues::{QueueSettings, Queues};
use support::sqs::event_json;
use support::{body, s, Record, SqsBackend, World};
use uuid::Uuid;

const BINARY: &str = env!("CARGO_BIN_EXE_polar-discount-sync");
const SAMPLE_DISCOUNT: &str = "9b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a10";

fn event_file(name: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("events")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The discount the files in `events/` use: `SUMMER25`, 3 uses left.
async fn world_with_sample_discount() -> (World, Uuid) {
    let world = World::start().await;
    let discount = world.polar.insert_discount(
        DiscountSeed::new("Summer")
            .id(SAMPLE_DISCOUNT.parse().unwrap())
            .code("SUMMER25")
            .max_redemptions(3),
    );
    (world, discount)
}

fn failed_ids(outcome: &Outcome) -> Vec<String> {
    let Outcome::Response(response) = outcome else {
        panic!("expected a response, got {outcome:?}");
    };
    support::sqs::failed_ids_json(response).expect("a partial batch response")
}

#[tokio::test]
async fn the_binary_syncs_the_sample_event_once_across_two_deliveries() {
    let (world, discount) = world_with_sample_discount().await;
    world.put_order("ord_123", discount, "SUMMER25").await;
    let api = RuntimeApi::start().await.unwrap();
    let _function = FunctionProcess::spawn(Path::new(BINARY), &world.env(), &api).unwrap();

    let first = api
        .invoke(event_file("sqs-single.json"), Duration::from_secs(30))
        .await;
    assert_eq!(failed_ids(&first), Vec::<String>::new());
    assert_eq!(world.max_redemptions(discount), Some(Some(2)));
    assert_eq!(
        world.action("ord_123").await.as_deref(),
        Some("decremented")
    );

    let second = api
        .invoke(event_file("sqs-single.json"), Duration::from_secs(30))
        .await;
    assert_eq!(failed_ids(&second), Vec::<String>::new());
    assert_eq!(
        world.max_redemptions(discount),
        Some(Some(2)),
        "no second decrement"
    );
}

#[tokio::test]
async fn the_binary_reports_the_malformed_records_of_a_batch() {
    let (world, discount) = world_with_sample_discount().await;
    world.put_order("ord_403", discount, "SUMMER25").await;
    let api = RuntimeApi::start().await.unwrap();
    let _function = FunctionProcess::spawn(Path::new(BINARY), &world.env(), &api).unwrap();

    let outcome = api
        .invoke(event_file("sqs-malformed.json"), Duration::from_secs(30))
        .await;

    assert_eq!(
        failed_ids(&outcome),
        [
            "5a3b1a6e-0c55-4d1e-9a38-1f2d3c4b5a31",
            "5a3b1a6e-0c55-4d1e-9a38-1f2d3c4b5a32"
        ]
    );
    assert_eq!(
        world.action("ord_403").await.as_deref(),
        Some("decremented")
    );
}

#[tokio::test]
async fn the_binary_reports_a_missing_variable_as_an_init_error_naming_it() {
    let world = World::start().await;
    let env: Vec<_> = world
        .env()
        .into_iter()
        .filter(|(name, _)| name != "ORDERS_TABLE")
        .collect();
    let api = RuntimeApi::start().await.unwrap();
    let mut function = FunctionProcess::spawn(Path::new(BINARY), &env, &api).unwrap();

    let outcome = api
        .invoke(event_file("sqs-single.json"), Duration::from_secs(30))
        .await;

    let Outcome::InitError(error) = outcome else {
        panic!("expected an init error, got {outcome:?}");
    };
    assert_eq!(error["errorType"], "Runtime.InitError");
    assert!(
        error["errorMessage"]
            .as_str()
            .unwrap()
            .contains("ORDERS_TABLE"),
        "{error}"
    );
    let status = function.wait().await.expect("the process exits");
    assert!(!status.success());
}

#[tokio::test]
async fn the_binary_answers_the_scheduled_event_with_the_reconciliation_counts() {
    let (world, discount) = world_with_sample_discount().await;
    world.put_order("ord_123", discount, "SUMMER25").await;
    let api = RuntimeApi::start().await.unwrap();
    let _function = FunctionProcess::spawn(Path::new(BINARY), &world.env(), &api).unwrap();
    api.invoke(event_file("sqs-single.json"), Duration::from_secs(30))
        .await;
    let polar_requests = world.polar.requests().len();

    let outcome = api
        .invoke(
            event_file("scheduled-reconcile.json"),
            Duration::from_secs(30),
        )
        .await;

    let Outcome::Response(counts) = outcome else {
        panic!("expected the counts, got {outcome:?}");
    };
    assert_eq!(
        counts,
        serde_json::json!({"found": 0, "settled": 0, "cleared": 0, "busy": 0, "failed": 0}),
        "the synced discount holds no journal"
    );
    assert_eq!(
        world.polar.requests().len(),
        polar_requests,
        "nothing to settle on Polar"
    );
}

/// The lines the function wrote to `log`, parsed; a line that is not JSON fails the test.
fn json_lines(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
        })
        .collect()
}

#[tokio::test]
async fn under_json_logs_every_synced_order_has_a_line_naming_it_and_a_metric_counting_its_action()
{
    let (world, summer) = world_with_sample_discount().await;
    let welcome = world.polar.insert_discount(
        DiscountSeed::new("Welcome")
            .id("4f6a2d8e-7b3c-4e91-8a5d-1c2b3a4d5e6f".parse().unwrap())
            .code("WELCOME10")
            .max_redemptions(5),
    );
    let vip = world.polar.insert_discount(
        DiscountSeed::new("VIP")
            .id("c7e8f9a0-1b2c-4d3e-9f4a-5b6c7d8e9f01".parse().unwrap())
            .code("VIP"),
    );
    world.put_order("ord_201", summer, "SUMMER25").await;
    world.put_order("ord_202", welcome, "WELCOME10").await;
    world.put_order("ord_203", summer, "summer25").await;
    world.put_order("ord_204", vip, "VIP").await;
    let log = std::env::temp_dir().join(format!("polar-sync-json-{}.log", Uuid::new_v4()));
    let mut env = world.env();
    env.push(("AWS_LAMBDA_LOG_FORMAT".into(), "JSON".into()));
    env.push(("AWS_LAMBDA_FUNCTION_NAME".into(), "sync-under-test".into()));
    let api = RuntimeApi::start().await.unwrap();
    let _function = FunctionProcess::spawn_logging_to(Path::new(BINARY), &env, &api, &log).unwrap();

    let outcome = api
        .invoke(event_file("sqs-batch.json"), Duration::from_secs(30))
        .await;
    assert_eq!(failed_ids(&outcome), Vec::<String>::new());

    let lines = json_lines(&log);
    for (order, discount, action) in [
        ("ord_201", summer, "decremented"),
        ("ord_202", welcome, "decremented"),
        ("ord_203", summer, "decremented"),
        ("ord_204", vip, "skipped_unlimited"),
    ] {
        let line = lines
            .iter()
            .find(|line| line["orderId"] == order && line["outcome"] == "synced")
            .unwrap_or_else(|| panic!("no outcome line for {order} in {lines:#?}"));
        assert_eq!(line["action"], action, "{line}");
        assert_eq!(line["discountId"], discount.to_string(), "{line}");
        assert_eq!(line["receiveCount"], 1, "a number: {line}");
        assert!(line["messageId"].is_string(), "{line}");
    }
    let write = lines
        .iter()
        .find(|line| line["event"] == "polar_write" && line["discountId"] == summer.to_string())
        .unwrap_or_else(|| panic!("no Polar write line in {lines:#?}"));
    assert_eq!(
        (
            &write["k"],
            &write["before"],
            &write["after"],
            &write["status"]
        ),
        (&2.into(), &3.into(), &1.into(), &"applied".into()),
        "{write}"
    );
    assert_eq!(
        write["orderIds"].as_array().map(Vec::len),
        Some(2),
        "{write}"
    );
    assert!(write["latencyMs"].is_u64(), "{write}");

    let metrics: Vec<_> = lines
        .iter()
        .filter(|line| line.get("_aws").is_some())
        .collect();
    let [document] = metrics.as_slice() else {
        panic!("one EMF document expected, got {metrics:#?}");
    };
    assert_eq!(document["FunctionName"], "sync-under-test");
    assert_eq!(document["OrdersDecremented"], 3);
    assert_eq!(document["OrdersSkippedUnlimited"], 1);
    let directive = &document["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(directive["Namespace"], "PolarDiscountSync");
    assert_eq!(
        directive["Dimensions"],
        serde_json::json!([["FunctionName"]])
    );
    let summary = lines
        .iter()
        .find(|line| line["event"] == "invocation")
        .expect("a summary line");
    assert_eq!(
        (&summary["messages"], &summary["synced"]),
        (&4.into(), &4.into())
    );
    let _ = std::fs::remove_file(&log);
}

/// The sample stream event's relayable record (ord_501, SUMMER25); the other has no discount.
const RELAYABLE_SEQUENCE_NUMBER: &str = "111000000000000000000001";

#[tokio::test]
async fn the_binary_relays_the_sample_stream_event_to_the_queue_and_without_the_queue_lists_the_record(
) {
    let (world, _discount) = world_with_sample_discount().await;
    let queues = support::queues::Queues::create(
        &world,
        &support::SqsBackend::Moto,
        support::queues::QueueSettings {
            fifo: false,
            visibility_timeout_secs: 60,
            max_receive_count: 33,
        },
    )
    .await;
    let stream_answer = |outcome: Outcome| -> Vec<String> {
        let Outcome::Response(response) = outcome else {
            panic!("expected a response, got {outcome:?}");
        };
        support::stream::failed_sequence_numbers(&response).expect("a partial batch response")
    };

    let mut without_queue = queues.env(&world);
    without_queue.push(("AWS_LAMBDA_LOG_FORMAT".into(), "JSON".into()));
    let log = std::env::temp_dir().join(format!("polar-sync-stream-{}.log", Uuid::new_v4()));
    let api = RuntimeApi::start().await.unwrap();
    let _function =
        FunctionProcess::spawn_logging_to(Path::new(BINARY), &without_queue, &api, &log).unwrap();
    let outcome = api
        .invoke(
            event_file("dynamodb-stream-insert.json"),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(stream_answer(outcome), [RELAYABLE_SEQUENCE_NUMBER]);
    assert_eq!(queues.outstanding().await, 0);
    let lines = json_lines(&log);
    let missing = lines
        .iter()
        .find(|line| line["sequenceNumber"] == RELAYABLE_SEQUENCE_NUMBER)
        .unwrap_or_else(|| panic!("no outcome line for the record in {lines:#?}"));
    assert_eq!(
        (&missing["level"], &missing["outcome"]),
        (&"ERROR".into(), &"relay_failed".into())
    );
    assert!(
        missing["message"]
            .as_str()
            .unwrap()
            .contains("REDEMPTION_QUEUE_URL is missing"),
        "{missing}"
    );
    let _ = std::fs::remove_file(&log);

    let mut with_queue = queues.env(&world);
    with_queue.push(("REDEMPTION_QUEUE_URL".into(), queues.source_url.clone()));
    with_queue.push(("STREAM_RELAY_DELAY_SECONDS".into(), "0".into()));
    let api = RuntimeApi::start().await.unwrap();
    let _function = FunctionProcess::spawn(Path::new(BINARY), &with_queue, &api).unwrap();
    let outcome = api
        .invoke(
            event_file("dynamodb-stream-insert.json"),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(stream_answer(outcome), Vec::<String>::new());
    assert_eq!(
        queues.outstanding().await,
        1,
        "ord_501 relayed, ord_502 not"
    );
}

/// Every item of `table`, sorted by `key`: what a write would change.
async fn scan(world: &World, table: &str, key: &str) -> Vec<HashMap<String, AttributeValue>> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = world
            .dynamo
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan");
        items.extend(page.items().iter().cloned());
        start = page.last_evaluated_key;
        if start.is_none() {
            break;
        }
    }
    items.sort_by_key(|item| format!("{:?}", item.get(key)));
    items
}

#[tokio::test]
async fn in_shadow_mode_the_binary_logs_the_plan_writes_nothing_anywhere_and_acknowledges_every_message(
) {
    let (world, summer) = world_with_sample_discount().await;
    let last_use = world.discount("LASTONE", Some(1));
    let unlimited = world.discount("VIP", None);
    world.put_order("ord_301", summer, "SUMMER25").await;
    world.put_order("ord_302", summer, "SUMMER25").await;
    world.put_order("ord_303", last_use, "LASTONE").await;
    world.put_order("ord_304", unlimited, "VIP").await;
    world.put_order("ord_305", summer, "SUMMER25").await;
    world
        .dynamo
        .update_item()
        .table_name(&world.tables.orders)
        .key("id", s("ord_305"))
        .update_expression("SET polarDiscountSynced = :t, polarDiscountSyncAction = :a")
        .expression_attribute_values(":t", AttributeValue::Bool(true))
        .expression_attribute_values(":a", s("decremented"))
        .send()
        .await
        .expect("ord_305 marked synced, as the original function would");
    let queues = Queues::create(
        &world,
        &SqsBackend::Moto,
        QueueSettings {
            fifo: false,
            visibility_timeout_secs: 180,
            max_receive_count: 5,
        },
    )
    .await;
    let records: Vec<Record> = [
        ("m-301", body("ord_301", summer, "SUMMER25")),
        ("m-302", body("ord_302", summer, "SUMMER25")),
        ("m-303", body("ord_303", last_use, "LASTONE")),
        ("m-304", body("ord_304", unlimited, "VIP")),
        ("m-305", body("ord_305", summer, "SUMMER25")),
        ("m-bad", "{\"orderId\": \"ord_306\"".to_owned()),
        ("m-301-again", body("ord_301", summer, "SUMMER25")),
    ]
    .iter()
    .map(|(id, body)| Record::new(id, body).source_arn(&queues.source_arn))
    .collect();
    let orders_before = scan(&world, &world.tables.orders, "id").await;
    let sync_before = scan(&world, &world.tables.sync, "pk").await;
    let log = std::env::temp_dir().join(format!("polar-sync-shadow-{}.log", Uuid::new_v4()));
    let mut env = queues.env(&world);
    env.extend([
        ("SHADOW_MODE".into(), "true".into()),
        ("AWS_LAMBDA_LOG_FORMAT".into(), "JSON".into()),
    ]);
    let api = RuntimeApi::start().await.unwrap();
    let _function = FunctionProcess::spawn_logging_to(Path::new(BINARY), &env, &api, &log).unwrap();

    let outcome = api
        .invoke(event_json(&records), Duration::from_secs(30))
        .await;
    let reconciliation = api
        .invoke(
            event_file("scheduled-reconcile.json"),
            Duration::from_secs(30),
        )
        .await;

    assert_eq!(
        failed_ids(&outcome),
        Vec::<String>::new(),
        "all acknowledged"
    );
    let mut polar = world.polar_requests();
    polar.sort();
    let mut expected: Vec<String> = [summer, last_use, unlimited]
        .iter()
        .map(|id| format!("GET /v1/discounts/{id}"))
        .collect();
    expected.sort();
    assert_eq!(polar, expected, "one GET per discount, no PATCH or DELETE");
    assert_eq!(world.max_redemptions(summer), Some(Some(3)));
    assert_eq!(world.max_redemptions(last_use), Some(Some(1)));
    assert_eq!(
        scan(&world, &world.tables.orders, "id").await,
        orders_before,
        "no order changed"
    );
    assert_eq!(
        scan(&world, &world.tables.sync, "pk").await,
        sync_before,
        "no lease, journal or TTL written"
    );
    assert!(
        queues.dead_letters().await.is_empty(),
        "nothing dead-lettered"
    );
    assert_eq!(queues.outstanding().await, 0, "nothing sent again");
    assert_eq!(
        reconciliation,
        Outcome::Response(serde_json::json!(
            {"found": 0, "settled": 0, "cleared": 0, "busy": 0, "failed": 0, "wouldSettle": 0}
        )),
        "the shadow reconciliation's answer"
    );

    let lines = json_lines(&log);
    assert!(
        lines
            .iter()
            .any(|line| line["level"] == "WARN" && line["shadowMode"] == true),
        "a startup warning says shadow mode is on: {lines:#?}"
    );
    let plan = |discount: Uuid| {
        lines
            .iter()
            .find(|line| {
                line["event"] == "shadow_plan" && line["discountId"] == discount.to_string()
            })
            .unwrap_or_else(|| panic!("no plan line for {discount} in {lines:#?}"))
    };
    let fields = |line: &serde_json::Value| {
        serde_json::Value::from(
            ["k", "before", "after", "action", "write"].map(|f| line[f].clone()),
        )
    };
    assert_eq!(
        fields(plan(summer)),
        serde_json::json!([2, 3, 1, "decremented", "PATCH"])
    );
    assert_eq!(
        (&plan(summer)["orderIds"], &plan(summer)["shadow"]),
        (&serde_json::json!(["ord_301", "ord_302"]), &true.into())
    );
    assert_eq!(
        fields(plan(last_use)),
        serde_json::json!([1, 1, 0, "deleted", "DELETE"])
    );
    assert_eq!(
        fields(plan(unlimited)),
        serde_json::json!([1, null, null, "skipped_unlimited", "none"])
    );
    let outcome_of = |message: &str| {
        lines
            .iter()
            .find(|line| line["messageId"] == message)
            .unwrap_or_else(|| panic!("no line for {message} in {lines:#?}"))["outcome"]
            .clone()
    };
    for (message, expected) in [
        ("m-301", "would_sync"),
        ("m-301-again", "would_sync"),
        ("m-303", "would_sync"),
        ("m-305", "already_synced"),
        ("m-bad", "would_dead_letter"),
    ] {
        assert_eq!(outcome_of(message), expected, "{message}");
    }
    let document = lines
        .iter()
        .find(|line| line.get("_aws").is_some())
        .expect("an EMF document");
    assert_eq!(document["ShadowOrdersDecremented"], 3);
    assert_eq!(document["ShadowPolarWrites"], 2);
    assert_eq!(document["ShadowWouldDeadLetter"], 1);
    assert!(document.get("OrdersDecremented").is_none(), "{document}");
    let _ = std::fs::remove_file(&log);
}

#[tokio::test]
async fn the_runtime_api_gets_a_stable_error_type_for_an_event_the_function_does_not_know() {
    let world = World::start().await;
    let api = RuntimeApi::start().await.unwrap();
    let _function = FunctionProcess::spawn(Path::new(BINARY), &world.env(), &api).unwrap();

    let outcome = api
        .invoke(
            serde_json::json!({"source": "aws.s3", "detail": {}}),
            Duration::from_secs(30),
        )
        .await;

    let Outcome::Error {
        error_type,
        error_message,
    } = outcome
    else {
        panic!("expected an error, got {outcome:?}");
    };
    assert_eq!(error_type, "UnknownEvent");
    assert!(
        error_message.starts_with("the event is neither an SQS batch"),
        "{error_message}"
    );
}
