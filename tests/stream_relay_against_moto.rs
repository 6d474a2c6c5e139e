//! The stream relay as production wires it, against moto: records read from the orders
//! table's stream in moto, relayed into moto's SQS (standard and FIFO), unreadable ones
//! dead-lettered there, and the relayed messages then synced by the same handler.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, StreamViewType};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use polar_discount_sync::adapters::{deduplication_id, SqsRelay};
use polar_discount_sync::deadline::Deadline;
use polar_discount_sync::lambda::{ProductionHandler, Wiring};
use polar_discount_sync::relay::{relay_records, StreamBatchResponse};
use polar_discount_sync::telemetry::{Count, Metrics};
use serde_json::Value;
use support::event_source::drain;
use support::queues::{QueueSettings, Queues};
use support::stream::OrdersStream;
use support::{s, RequestCounter, SqsBackend, World};
use uuid::Uuid;

fn settings(fifo: bool) -> QueueSettings {
    QueueSettings {
        fifo,
        visibility_timeout_secs: 60,
        max_receive_count: 33,
    }
}

/// The handler as production wires it, relaying to `queues`' source queue.
async fn relaying_handler(
    world: &World,
    queues: &Queues,
    redemption_queue_url: Option<String>,
    delay: Duration,
) -> ProductionHandler {
    let mut config = queues.config(world);
    config.redemption_queue_url = redemption_queue_url;
    config.stream_relay_delay = delay;
    world
        .handler_on(&SqsBackend::Moto, &config, Wiring::default())
        .await
}

async fn relay(handler: &ProductionHandler, records: &[Value]) -> StreamBatchResponse {
    handler
        .handle_stream(records, Deadline::after(Duration::from_secs(30)))
        .await
        .expect("the stream batch is handled")
}

async fn put(world: &World, item: &[(&str, AttributeValue)]) {
    world
        .dynamo
        .put_item()
        .table_name(&world.tables.orders)
        .set_item(Some(
            item.iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        ))
        .send()
        .await
        .expect("item written");
}

async fn update(world: &World, id: &str, expression: &str, values: &[(&str, AttributeValue)]) {
    let mut update = world
        .dynamo
        .update_item()
        .table_name(&world.tables.orders)
        .key("id", s(id))
        .update_expression(expression);
    for (name, value) in values {
        update = update.expression_attribute_values(*name, value.clone());
    }
    update.send().await.expect("item updated");
}

fn order(id: &str, discount: Uuid, code: &str) -> Vec<(&'static str, AttributeValue)> {
    vec![
        ("id", s(id)),
        ("discountId", s(&discount.to_string())),
        ("discountCode", s(code)),
    ]
}

/// The sequence number of the stream record of `event_name` on order `id`.
fn sequence_of(records: &[Value], event_name: &str, id: &str) -> String {
    records
        .iter()
        .find(|r| r["eventName"] == event_name && r["dynamodb"]["Keys"]["id"]["S"] == id)
        .and_then(|r| r["dynamodb"]["SequenceNumber"].as_str())
        .unwrap_or_else(|| panic!("no {event_name} record of {id}"))
        .to_owned()
}

/// Every message in `queue_url`, received once (left invisible for ten minutes).
async fn messages_in(queues: &Queues, queue_url: &str) -> Vec<aws_sdk_sqs::types::Message> {
    let mut found = Vec::new();
    loop {
        let output = queues
            .sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(600)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .expect("ReceiveMessage");
        let messages = output.messages.unwrap_or_default();
        if messages.is_empty() {
            return found;
        }
        found.extend(messages);
    }
}

async fn delayed_and_visible(queues: &Queues) -> (u64, u64) {
    let attributes = queues
        .sqs
        .get_queue_attributes()
        .queue_url(&queues.source_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .expect("GetQueueAttributes");
    let read = |name: QueueAttributeName| -> u64 {
        attributes
            .attributes()
            .and_then(|a| a.get(&name))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (
        read(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        read(QueueAttributeName::ApproximateNumberOfMessages),
    )
}

fn bodies(messages: &[aws_sdk_sqs::types::Message]) -> Vec<Value> {
    let mut bodies: Vec<Value> = messages
        .iter()
        .map(|m| serde_json::from_str(m.body().unwrap()).unwrap())
        .collect();
    bodies.sort_by_key(|b| b["orderId"].as_str().unwrap().to_owned());
    bodies
}

#[tokio::test]
async fn each_kind_of_stream_record_is_relayed_with_its_delay_or_left_and_the_relayed_messages_sync(
) {
    let world = World::start().await;
    let mut stream = OrdersStream::enable(&world, StreamViewType::NewAndOldImages).await;
    let queues = Queues::create(&world, &SqsBackend::Moto, settings(false)).await;
    let discount = world.discount("SUMMER25", Some(10));
    let code = "SUMMER25";
    // Relayed: an insert, and a discount added to an existing order.
    put(&world, &order("ord_new", discount, code)).await;
    put(&world, &[("id", s("ord_added"))]).await;
    update(
        &world,
        "ord_added",
        "SET discountId = :d, discountCode = :c",
        &[(":d", s(&discount.to_string())), (":c", s(code))],
    )
    .await;
    // Not relayed: no discount, already synced, a write to an order that had its
    // discount (as the function's claim), a removal.
    put(&world, &[("id", s("ord_plain"))]).await;
    let mut synced = order("ord_synced", discount, code);
    synced.push(("polarDiscountSynced", AttributeValue::Bool(true)));
    put(&world, &synced).await;
    put(&world, &order("ord_claimed", discount, code)).await;
    update(
        &world,
        "ord_claimed",
        "SET polarDiscountClaim = :t",
        &[(":t", s("lease-token"))],
    )
    .await;
    put(&world, &order("ord_removed", discount, code)).await;
    world
        .dynamo
        .delete_item()
        .table_name(&world.tables.orders)
        .key("id", s("ord_removed"))
        .send()
        .await
        .expect("deleted");
    // Unreadable: a discount id written as a number.
    put(
        &world,
        &[
            ("id", s("ord_numeric")),
            ("discountId", AttributeValue::N("42".into())),
            ("discountCode", s(code)),
        ],
    )
    .await;
    let records = stream.read_new().await;
    // ord_claimed's and ord_removed's inserts were relayed too: checkout wrote them with a
    // discount. What matters here is their MODIFY and REMOVE.
    let later: Vec<Value> = records
        .iter()
        .filter(|r| {
            !(r["eventName"] == "INSERT"
                && ["ord_claimed", "ord_removed"]
                    .contains(&r["dynamodb"]["Keys"]["id"]["S"].as_str().unwrap()))
        })
        .cloned()
        .collect();
    let handler = relaying_handler(
        &world,
        &queues,
        Some(queues.source_url.clone()),
        Duration::from_secs(2),
    )
    .await;

    let response = relay(&handler, &later).await;

    assert_eq!(response.failed_sequence_numbers(), Vec::<&str>::new());
    assert_eq!(later.len(), 8, "5 inserts, 2 modifies, 1 removal");
    assert_eq!(
        delayed_and_visible(&queues).await,
        (2, 0),
        "the relayed messages wait for their delay"
    );
    let letters = queues.dead_letters().await;
    let [letter] = letters.as_slice() else {
        panic!("one dead letter expected, got {letters:?}");
    };
    assert_eq!(letter.attribute("ErrorClass"), "permanent");
    assert_eq!(letter.attribute("ErrorKind"), "wrong_attribute_type");
    assert!(
        letter.attribute("Reason").contains("discountId"),
        "{letter:?}"
    );
    assert_eq!(
        letter.attribute("OriginalMessageId"),
        sequence_of(&later, "INSERT", "ord_numeric")
    );
    assert_eq!(letter.attribute("SourceStreamArn"), stream.arn);
    assert!(letter.body.contains("ord_numeric"));

    tokio::time::sleep(Duration::from_millis(2300)).await;
    let relayed = messages_in(&queues, &queues.source_url).await;
    assert_eq!(
        bodies(&relayed),
        [
            serde_json::json!({"orderId": "ord_added", "discountId": discount, "discountCode": code}),
            serde_json::json!({"orderId": "ord_new", "discountId": discount, "discountCode": code}),
        ]
    );
    // Back to the queue, and through Lambda's event source to the same handler.
    for message in &relayed {
        queues
            .sqs
            .change_message_visibility()
            .queue_url(&queues.source_url)
            .receipt_handle(message.receipt_handle().unwrap())
            .visibility_timeout(0)
            .send()
            .await
            .expect("made visible");
    }
    let source = queues.event_source();
    drain(
        &source,
        &handler,
        Duration::from_secs(30),
        Duration::from_secs(30),
        &HashMap::new(),
    )
    .await;
    assert_eq!(
        world.action("ord_new").await.as_deref(),
        Some("decremented")
    );
    assert_eq!(
        world.action("ord_added").await.as_deref(),
        Some("decremented")
    );
    assert_eq!(world.max_redemptions(discount), Some(Some(8)));
}

#[tokio::test]
async fn on_a_new_image_stream_an_insert_is_relayed_and_a_modify_is_not() {
    let world = World::start().await;
    let mut stream = OrdersStream::enable(&world, StreamViewType::NewImage).await;
    let queues = Queues::create(&world, &SqsBackend::Moto, settings(false)).await;
    let discount = world.discount("WELCOME", Some(5));
    put(&world, &order("ord_new", discount, "WELCOME")).await;
    put(&world, &[("id", s("ord_later"))]).await;
    update(
        &world,
        "ord_later",
        "SET discountId = :d, discountCode = :c",
        &[(":d", s(&discount.to_string())), (":c", s("WELCOME"))],
    )
    .await;
    let records = stream.read_new().await;
    assert!(records
        .iter()
        .all(|r| r["dynamodb"].get("OldImage").is_none()));
    let handler = relaying_handler(
        &world,
        &queues,
        Some(queues.source_url.clone()),
        Duration::ZERO,
    )
    .await;

    let response = relay(&handler, &records).await;

    assert_eq!(response.failed_sequence_numbers(), Vec::<&str>::new());
    let relayed = messages_in(&queues, &queues.source_url).await;
    assert_eq!(
        bodies(&relayed),
        [
            serde_json::json!({"orderId": "ord_new", "discountId": discount, "discountCode": "WELCOME"})
        ]
    );
}

#[tokio::test]
async fn on_a_fifo_queue_a_relayed_message_is_grouped_by_discount_and_deduplicated_by_order() {
    let world = World::start().await;
    let mut stream = OrdersStream::enable(&world, StreamViewType::NewAndOldImages).await;
    let queues = Queues::create(&world, &SqsBackend::Moto, settings(true)).await;
    let discount = world.discount("FIFO10", Some(5));
    put(&world, &order("ord_fifo", discount, "FIFO10")).await;
    let records = stream.read_new().await;
    let handler = relaying_handler(
        &world,
        &queues,
        Some(queues.source_url.clone()),
        Duration::from_secs(60),
    )
    .await;

    // A record delivered twice (a retried batch) is one message.
    assert_eq!(
        relay(&handler, &records).await.failed_sequence_numbers(),
        Vec::<&str>::new()
    );
    assert_eq!(
        relay(&handler, &records).await.failed_sequence_numbers(),
        Vec::<&str>::new()
    );

    let relayed = messages_in(&queues, &queues.source_url).await;
    let [message] = relayed.as_slice() else {
        panic!("one message expected (no delay on FIFO, deduplicated), got {relayed:?}");
    };
    let system = |name| {
        message
            .attributes()
            .and_then(|a| a.get(&name))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        system(MessageSystemAttributeName::MessageGroupId),
        discount.to_string()
    );
    assert_eq!(
        system(MessageSystemAttributeName::MessageDeduplicationId),
        deduplication_id("ord_fifo")
    );
}

#[tokio::test]
async fn when_sqs_refuses_the_relay_only_the_relayable_records_are_listed_by_sequence_number() {
    let world = World::start().await;
    let mut stream = OrdersStream::enable(&world, StreamViewType::NewAndOldImages).await;
    let queues = Queues::create(&world, &SqsBackend::Moto, settings(false)).await;
    let discount = world.discount("SUMMER25", Some(10));
    put(&world, &order("ord_1", discount, "SUMMER25")).await;
    put(&world, &[("id", s("ord_plain"))]).await;
    put(&world, &order("ord_2", discount, "SUMMER25")).await;
    let records = stream.read_new().await;
    let relayable = [
        sequence_of(&records, "INSERT", "ord_1"),
        sequence_of(&records, "INSERT", "ord_2"),
    ];
    let gone = format!("{}-gone", queues.source_url);

    for url in [Some(gone), None] {
        let handler = relaying_handler(&world, &queues, url.clone(), Duration::ZERO).await;
        let response = relay(&handler, &records).await;
        assert_eq!(
            response.failed_sequence_numbers(),
            relayable,
            "queue {url:?}"
        );
    }
    assert_eq!(queues.outstanding().await, 0);
}

#[tokio::test]
async fn the_relay_costs_one_sqs_request_per_ten_orders_and_no_dynamodb_request() {
    let world = World::start().await;
    let mut stream = OrdersStream::enable(&world, StreamViewType::NewAndOldImages).await;
    let queues = Queues::create(&world, &SqsBackend::Moto, settings(false)).await;
    let discount = world.discount("BULK", Some(1000));
    let orders: Vec<(String, Uuid, String)> = (0..95)
        .map(|i| (format!("ord_{i:03}"), discount, "BULK".to_owned()))
        .collect();
    world.put_orders(&orders).await;
    let records = stream.read_new().await;
    let sqs_requests = Arc::new(AtomicUsize::new(0));
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&world.aws)
            .interceptor(RequestCounter(sqs_requests.clone()))
            .build(),
    );
    let relay = SqsRelay::new(
        sqs,
        Some(queues.source_url.clone()),
        Some(queues.dead_letter_url.clone()),
        Duration::ZERO,
    );
    let metrics = Metrics::default();

    let response = relay_records(
        &relay,
        &metrics,
        &records,
        Deadline::after(Duration::from_secs(30)),
    )
    .await
    .unwrap();

    assert_eq!(response.failed_sequence_numbers(), Vec::<&str>::new());
    let relayed = metrics.take().count(Count::StreamRecordsRelayed);
    let requests = sqs_requests.load(Ordering::SeqCst);
    println!(
        "stream relay cost: {} orders, {} stream records in one invocation, {relayed} relayed \
         with {requests} SQS requests (SendMessageBatch): {:.2} SQS requests per order; the relay holds no \
         DynamoDB client",
        orders.len(),
        records.len(),
        requests as f64 / orders.len() as f64
    );
    assert_eq!(relayed, 95);
    assert_eq!(requests, 10, "95 messages in batches of 10");
    assert_eq!(queues.outstanding().await, 95);
}

#[tokio::test]
async fn a_relayed_message_whose_order_checkout_already_had_synced_costs_reads_and_no_polar_request(
) {
    let world = World::start().await;
    let discount = world.discount("TWICE", Some(100));
    let orders: Vec<(String, Uuid, String)> = (0..20)
        .map(|i| (format!("ord_{i:02}"), discount, "TWICE".to_owned()))
        .collect();
    world.put_orders(&orders).await;
    let (handler, dynamo_requests) = world.counting_handler().await;
    let checkout: Vec<(String, String)> = orders
        .iter()
        .map(|(order, discount, code)| {
            (
                format!("checkout-{order}"),
                support::body(order, *discount, code),
            )
        })
        .collect();
    let relayed: Vec<(String, String)> = checkout
        .iter()
        .map(|(id, body)| (id.replace("checkout", "relayed"), body.clone()))
        .collect();

    for chunk in checkout.chunks(10) {
        assert!(world
            .deliver(&handler, &support::as_refs(chunk))
            .await
            .is_empty());
    }
    let by_checkout = dynamo_requests.swap(0, Ordering::SeqCst);
    let polar_before = world.polar_requests().len();
    for chunk in relayed.chunks(10) {
        assert!(world
            .deliver(&handler, &support::as_refs(chunk))
            .await
            .is_empty());
    }
    let by_relayed = dynamo_requests.load(Ordering::SeqCst);

    println!(
        "duplicate cost: 20 orders synced by checkout's messages with {by_checkout} DynamoDB \
         requests ({:.2} per order); their 20 relayed duplicates cost {by_relayed} DynamoDB \
         requests ({:.2} per order) and {} Polar requests",
        by_checkout as f64 / 20.0,
        by_relayed as f64 / 20.0,
        world.polar_requests().len() - polar_before
    );
    assert_eq!(
        world.polar_requests().len(),
        polar_before,
        "no Polar request"
    );
    assert_eq!(world.max_redemptions(discount), Some(Some(80)), "each once");
    assert!(by_relayed > 0, "a duplicate reads its order");
}

#[tokio::test]
async fn in_shadow_mode_the_stream_is_decided_and_acknowledged_and_nothing_is_sent() {
    let world = World::start().await;
    let mut stream = OrdersStream::enable(&world, StreamViewType::NewAndOldImages).await;
    let queues = Queues::create(&world, &SqsBackend::Moto, settings(false)).await;
    let discount = world.discount("SHADOW", Some(5));
    put(&world, &order("ord_shadow", discount, "SHADOW")).await;
    put(
        &world,
        &[
            ("id", s("ord_numeric")),
            ("discountId", AttributeValue::N("42".into())),
            ("discountCode", s("SHADOW")),
        ],
    )
    .await;
    let records = stream.read_new().await;
    let mut config = queues.config(&world);
    config.redemption_queue_url = Some(queues.source_url.clone());
    config.stream_relay_delay = Duration::ZERO;
    config.shadow_mode = true;
    let handler = world
        .handler_on(&SqsBackend::Moto, &config, Wiring::default())
        .await;

    let response = relay(&handler, &records).await;

    assert_eq!(response.failed_sequence_numbers(), Vec::<&str>::new());
    assert_eq!(queues.outstanding().await, 0, "nothing relayed");
    assert!(
        queues.dead_letters().await.is_empty(),
        "nothing dead-lettered"
    );
}
