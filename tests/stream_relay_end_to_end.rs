//! The orders table's stream as a second trigger, end to end with the built binary: orders
//! written to moto with a stream enabled, most of them without checkout's message; the
//! stream's records, read from moto's DynamoDB stream, handed to the binary through the
//! Runtime API; the queue then drained through the binary. Every order must be synced
//! exactly once and Polar's limits must be exact, also for orders whose checkout message
//! arrived too.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, StreamViewType};
use lambda_driver::{FunctionProcess, Outcome, RuntimeApi};
use serde_json::Value;
use support::event_source::{Answer, EventSource};
use support::queues::{QueueSettings, Queues};
use support::stream::{failed_sequence_numbers, stream_event, OrdersStream, BATCH_SIZE};
use support::{body, s, SqsBackend, World};
use uuid::Uuid;

const BINARY: &str = env!("CARGO_BIN_EXE_polar-discount-sync");
const TIMEOUT: Duration = Duration::from_secs(30);

/// The lines the function wrote to `log`, parsed.
fn json_lines(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// The sum of an EMF count over the documents in `lines`.
fn emf_count(lines: &[Value], name: &str) -> u64 {
    lines
        .iter()
        .filter(|line| line.get("_aws").is_some())
        .filter_map(|line| line[name].as_u64())
        .sum()
}

async fn invoke_with_stream(api: &RuntimeApi, records: &[Value]) -> usize {
    let mut invocations = 0;
    for batch in records.chunks(BATCH_SIZE) {
        let outcome = api.invoke(stream_event(batch), TIMEOUT).await;
        let Outcome::Response(response) = outcome else {
            panic!("expected a partial batch response, got {outcome:?}");
        };
        assert_eq!(
            failed_sequence_numbers(&response),
            Some(Vec::new()),
            "{response}"
        );
        invocations += 1;
    }
    invocations
}

/// Lambda's SQS event source with the binary as the function, until the queue is empty.
async fn drain_through_binary(source: &EventSource, api: &RuntimeApi) -> usize {
    let mut invocations = 0;
    for _ in 0..1000 {
        let Some(batch) = source.receive(10).await else {
            if source.queues.outstanding().await == 0 {
                return invocations;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let outcome = api.invoke(batch.event_json(), TIMEOUT).await;
        let Outcome::Response(response) = outcome else {
            panic!("expected a partial batch response, got {outcome:?}");
        };
        let failed = support::sqs::failed_ids_json(&response).expect("a partial batch response");
        source.finish(batch, Answer::Failed(failed)).await;
        invocations += 1;
    }
    panic!("the queue did not drain in 1000 receives");
}

async fn put_item(world: &World, item: HashMap<String, AttributeValue>) {
    world
        .dynamo
        .put_item()
        .table_name(&world.tables.orders)
        .set_item(Some(item))
        .send()
        .await
        .expect("order written");
}

#[tokio::test]
async fn orders_whose_message_never_arrived_are_synced_exactly_once_through_the_stream() {
    let world = World::start().await;
    let mut stream = OrdersStream::enable(&world, StreamViewType::NewAndOldImages).await;
    let queues = Queues::create(
        &world,
        &SqsBackend::Moto,
        QueueSettings {
            fifo: false,
            visibility_timeout_secs: 60,
            max_receive_count: 33,
        },
    )
    .await;
    let big = world.discount("BIG", Some(50));
    let last_uses = world.discount("LASTUSES", Some(6));
    let unlimited = world.discount("FREE", None);

    // 30 orders checkout wrote with their discount; 10 of them also got checkout's message.
    let mut orders: Vec<(String, Uuid, String)> = Vec::new();
    for i in 0..20 {
        orders.push((format!("ord_big_{i}"), big, "BIG".into()));
    }
    for i in 0..6 {
        orders.push((format!("ord_last_{i}"), last_uses, "lastuses".into()));
    }
    for i in 0..4 {
        orders.push((format!("ord_free_{i}"), unlimited, "FREE".into()));
    }
    world.put_orders(&orders).await;
    let with_message: Vec<(String, Uuid, String)> = orders.iter().step_by(3).cloned().collect();
    for (order, discount, code) in &with_message {
        queues.send(&body(order, *discount, code), None).await;
    }
    // Orders without a discount, and two already synced (by an earlier implementation).
    for i in 0..5 {
        put_item(
            &world,
            HashMap::from([("id".into(), s(&format!("ord_plain_{i}")))]),
        )
        .await;
    }
    for i in 0..2 {
        put_item(
            &world,
            HashMap::from([
                ("id".into(), s(&format!("ord_synced_{i}"))),
                ("discountId".into(), s(&big.to_string())),
                ("discountCode".into(), s("BIG")),
                ("polarDiscountSynced".into(), AttributeValue::Bool(true)),
            ]),
        )
        .await;
    }
    // Three orders written first without a discount, which was added afterwards.
    for i in 0..3 {
        let id = format!("ord_added_{i}");
        put_item(&world, HashMap::from([("id".into(), s(&id))])).await;
        world
            .dynamo
            .update_item()
            .table_name(&world.tables.orders)
            .key("id", s(&id))
            .update_expression("SET discountId = :d, discountCode = :c")
            .expression_attribute_values(":d", s(&big.to_string()))
            .expression_attribute_values(":c", s("BIG"))
            .send()
            .await
            .expect("discount added");
        orders.push((id, big, "BIG".into()));
    }

    let log = std::env::temp_dir().join(format!("polar-sync-stream-{}.log", Uuid::new_v4()));
    let mut env = queues.env(&world);
    env.extend([
        ("REDEMPTION_QUEUE_URL".into(), queues.source_url.clone()),
        ("STREAM_RELAY_DELAY_SECONDS".into(), "0".into()),
        ("AWS_LAMBDA_LOG_FORMAT".into(), "JSON".into()),
    ]);
    let api = RuntimeApi::start().await.unwrap();
    let _function = FunctionProcess::spawn_logging_to(Path::new(BINARY), &env, &api, &log).unwrap();

    let records = stream.read_new().await;
    let stream_invocations = invoke_with_stream(&api, &records).await;
    let queued = queues.outstanding().await;
    let source = queues.event_source();
    let queue_invocations = drain_through_binary(&source, &api).await;
    // The function's own writes (claims, marks) come through the stream too.
    let own_writes = stream.read_new().await;
    let own_write_invocations = invoke_with_stream(&api, &own_writes).await;
    let queued_by_own_writes = queues.outstanding().await;

    let lines = json_lines(&log);
    let relayed = emf_count(&lines, "StreamRecordsRelayed");
    let ignored = emf_count(&lines, "StreamRecordsIgnored");
    let polar_writes: Vec<String> = world
        .polar_requests()
        .into_iter()
        .filter(|r| r.starts_with("PATCH") || r.starts_with("DELETE"))
        .collect();
    println!(
        "stream relay end to end: {} orders with a discount ({} also with checkout's message), \
         10 inserts without a discount or already synced; {} stream records, {} relayed, {} ignored; {} messages \
         queued; {} stream invocations ({} for the function's own {} writes), {} queue \
         invocations; {} Polar writes ({} Polar requests); {} dead letters",
        orders.len(),
        with_message.len(),
        records.len(),
        relayed,
        ignored,
        queued,
        stream_invocations + own_write_invocations,
        own_write_invocations,
        own_writes.len(),
        queue_invocations,
        polar_writes.len(),
        world.polar_requests().len(),
        queues.dead_letters().await.len(),
    );

    assert_eq!(
        records.len(),
        30 + 5 + 2 + 3 + 3,
        "inserts and the 3 MODIFYs"
    );
    assert_eq!(
        relayed, 33,
        "30 inserts with a discount and 3 discounts added"
    );
    assert_eq!(queued, 33 + with_message.len() as u64);
    assert_eq!(
        queued_by_own_writes, 0,
        "the function's own writes relay nothing"
    );
    assert_eq!(
        ignored,
        (5 + 2 + 3) + own_writes.len() as u64,
        "no discount (and the 3 inserts before theirs was added), synced, own writes"
    );
    assert!(!own_writes.is_empty(), "moto streams the function's writes");
    for (order, _, _) in &orders {
        assert!(world.action(order).await.is_some(), "{order} is not synced");
    }
    assert_eq!(
        world.max_redemptions(big),
        Some(Some(50 - 23)),
        "20 + 3 orders, each once"
    );
    assert_eq!(
        world.max_redemptions(last_uses),
        None,
        "deleted at its last use"
    );
    assert_eq!(world.max_redemptions(unlimited), Some(None));
    assert!(queues.dead_letters().await.is_empty());
    let _ = std::fs::remove_file(&log);
}
