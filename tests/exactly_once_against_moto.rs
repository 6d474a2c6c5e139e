//! Exactly once, focused: coalescing, the per-discount lease under concurrency, a crash at
//! every step boundary, and a journal left behind, against moto and the Polar double.

mod support;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use futures_util::FutureExt;
use polar_discount_sync::lambda::{ProductionHandler, Wiring};
use polar_discount_sync::sync::Step;
use polar_double::{Fault, FaultAction};
use support::world::config_from;
use support::{as_refs, body, counting_dynamo, event, failed_ids, s, SqsBackend, World};
use uuid::Uuid;

const TIMEOUT: Duration = Duration::from_secs(30);

async fn seed_orders(
    world: &World,
    prefix: &str,
    discount: Uuid,
    code: &str,
    n: usize,
) -> Vec<(String, String)> {
    let mut messages = Vec::new();
    for i in 0..n {
        let order = format!("{prefix}{i}");
        world.put_order(&order, discount, code).await;
        messages.push((format!("m-{order}"), body(&order, discount, code)));
    }
    messages
}

#[tokio::test]
async fn ten_redemptions_of_one_discount_cost_one_polar_read_and_one_write() {
    let world = World::start().await;
    let discount = world.discount("TEN", Some(50));
    let messages = seed_orders(&world, "o", discount, "TEN", 10).await;
    let (handler, dynamo_requests) = world.counting_handler().await;

    let failed = world.deliver(&handler, &as_refs(&messages)).await;

    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(world.max_redemptions(discount), Some(Some(40)));
    let path = format!("/v1/discounts/{discount}");
    assert_eq!(
        world.polar_requests(),
        [format!("GET {path}"), format!("PATCH {path}")]
    );
    // one transaction taking the lease and the 10 claims, the journal, and one transaction
    // marking all and releasing
    assert_eq!(dynamo_requests.load(Ordering::SeqCst), 3);
    println!(
        "10 messages, 1 discount: {} Polar requests per redemption, {} DynamoDB requests per message",
        world.polar_requests().len() as f64 / 10.0,
        dynamo_requests.load(Ordering::SeqCst) as f64 / 10.0
    );
}

#[tokio::test]
async fn a_copy_of_an_order_synced_earlier_costs_its_batch_one_request_not_one_per_order() {
    let world = World::start().await;
    let discount = world.discount("COPY", Some(50));
    let messages = seed_orders(&world, "o", discount, "COPY", 10).await;
    let (handler, _) = world.counting_handler().await;
    assert!(world
        .deliver(&handler, &as_refs(&messages[..1]))
        .await
        .is_empty());
    let (handler, dynamo_requests) = world.counting_handler().await;

    // The first order's message again (a late copy), with the nine others.
    let failed = world.deliver(&handler, &as_refs(&messages)).await;

    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(world.max_redemptions(discount), Some(Some(40)));
    // the start refused for the synced order, the start without it, the journal, the commit
    assert_eq!(dynamo_requests.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn ten_redemptions_of_ten_discounts_cost_two_polar_requests_each_and_share_dynamodb_requests()
{
    let world = World::start().await;
    let mut messages = Vec::new();
    for i in 0..10 {
        let discount = world.discount(&format!("CODE{i}"), Some(5));
        messages
            .extend(seed_orders(&world, &format!("d{i}-"), discount, &format!("CODE{i}"), 1).await);
    }
    let (handler, dynamo_requests) = world.counting_handler().await;

    let failed = world.deliver(&handler, &as_refs(&messages)).await;

    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(world.polar_requests().len(), 20);
    // Each step takes its lease and claim, writes its journal, and marks its order; the
    // ten steps' writes of each kind go out together, at most the first alone.
    let sent = dynamo_requests.load(Ordering::SeqCst);
    assert!(
        sent <= 6,
        "{sent} DynamoDB requests for ten steps: at most two for each of the three writes"
    );
    println!(
        "10 messages, 10 discounts: {} Polar requests per redemption, {} DynamoDB requests per message",
        world.polar_requests().len() as f64 / 10.0,
        dynamo_requests.load(Ordering::SeqCst) as f64 / 10.0
    );
}

#[tokio::test]
async fn concurrent_invocations_on_one_discount_lose_no_redemption() {
    let world = World::start().await;
    let discount = world.discount("RACE", Some(100));
    // Every GET is slow, so that without the lease all four would read the same value.
    world.polar.inject(
        Fault::new(FaultAction::Delay { millis: 300 })
            .method("GET")
            .times(100),
    );
    let mut batches = Vec::new();
    for invocation in 0..4 {
        batches.push(seed_orders(&world, &format!("i{invocation}-"), discount, "RACE", 5).await);
    }
    let mut handlers = Vec::new();
    for _ in 0..4 {
        handlers.push(world.handler().await);
    }

    // Like SQS, deliver again what an invocation reported failed (a lease wait can run
    // out under load), until every message is acknowledged.
    let mut pending = batches;
    for _ in 0..10 {
        let results = futures_util::future::join_all(
            handlers
                .iter()
                .zip(&pending)
                .map(|(handler, batch)| handler.handle(event(&as_refs(batch), TIMEOUT))),
        )
        .await;
        pending = results
            .into_iter()
            .zip(pending)
            .map(|(result, batch)| {
                let failed = failed_ids(&result.expect("handled"));
                batch
                    .into_iter()
                    .filter(|(id, _)| failed.contains(id))
                    .collect()
            })
            .collect();
        if pending.iter().all(Vec::is_empty) {
            break;
        }
    }

    assert!(
        pending.iter().all(Vec::is_empty),
        "never settled: {pending:?}"
    );
    assert_eq!(world.max_redemptions(discount), Some(Some(80)));
}

/// A handler that panics (so nothing after that point runs, as in a crash) the first time
/// it reaches the step put in the returned slot.
async fn crashing(world: &World) -> (ProductionHandler, Arc<Mutex<Option<Step>>>) {
    let crash_at: Arc<Mutex<Option<Step>>> = Arc::default();
    let slot = crash_at.clone();
    let handler = world
        .handler_wired(Wiring {
            checkpoint: Some(Arc::new(move |step| {
                if slot.lock().unwrap().take_if(|at| *at == step).is_some() {
                    panic!("simulated crash at {step:?}");
                }
            })),
            ..Wiring::default()
        })
        .await;
    (handler, crash_at)
}

/// Time passes after a crash: the dead invocation's lease expires.
async fn expire_lease(world: &World, discount: Uuid) {
    world
        .dynamo
        .update_item()
        .table_name(&world.tables.sync)
        .key("pk", s(&format!("discount#{discount}")))
        .update_expression("SET leaseExpiresAtMs = :zero")
        .condition_expression("attribute_exists(leaseToken)")
        .expression_attribute_values(":zero", AttributeValue::N("0".into()))
        .send()
        .await
        .ok();
}

#[tokio::test]
async fn a_crash_at_any_step_is_repaired_by_redelivery_and_counts_each_order_once() {
    let steps = [
        Step::LeaseTaken,
        Step::ClaimTaken,
        Step::JournalWritten,
        Step::PolarWritten,
        Step::OrdersMarked,
    ];
    for step in steps {
        // (limit, after two orders, action)
        for (limit, after, action) in [
            (Some(5), Some(Some(3)), "decremented"),
            (Some(2), None, "deleted"),
        ] {
            let world = World::start().await;
            let discount = world.discount("CRASH", limit);
            let messages = seed_orders(&world, "o", discount, "CRASH", 2).await;
            let (handler, crash_at) = crashing(&world).await;
            *crash_at.lock().unwrap() = Some(step);

            let crashed = AssertUnwindSafe(handler.handle(event(&as_refs(&messages), TIMEOUT)))
                .catch_unwind()
                .await;
            assert!(crashed.is_err(), "crash at {step:?}");

            expire_lease(&world, discount).await;
            let failed = world.deliver(&handler, &as_refs(&messages)).await;

            let context = format!("crash at {step:?}, limit {limit:?}");
            assert!(failed.is_empty(), "{context}: {failed:?}");
            assert_eq!(world.max_redemptions(discount), after, "{context}");
            assert_eq!(
                world.action("o0").await.as_deref(),
                Some(action),
                "{context}"
            );
            assert_eq!(
                world.action("o1").await.as_deref(),
                Some(action),
                "{context}"
            );
            assert!(
                !world.sync_item(discount).await.contains_key("journal"),
                "{context}"
            );
            let writes = world
                .polar_requests()
                .iter()
                .filter(|r| r.starts_with("PATCH") || r.starts_with("DELETE"))
                .count();
            assert_eq!(
                writes, 1,
                "{context}: the write is made once, then read back"
            );
        }
    }
}

#[tokio::test]
async fn a_journal_left_behind_by_an_external_change_keeps_the_other_value() {
    let world = World::start().await;
    let discount = world.discount("EXT", Some(5));
    let messages = seed_orders(&world, "o", discount, "EXT", 1).await;
    let (handler, crash_at) = crashing(&world).await;
    *crash_at.lock().unwrap() = Some(Step::JournalWritten);
    let crashed = AssertUnwindSafe(handler.handle(event(&as_refs(&messages), TIMEOUT)))
        .catch_unwind()
        .await;
    assert!(crashed.is_err());
    assert!(world.sync_item(discount).await.contains_key("journal"));

    // The shop owner raises the limit in Polar's dashboard before the retry.
    world.polar.insert_discount(polar_double::DiscountSeed {
        id: Some(discount),
        name: "EXT".into(),
        code: Some("EXT".into()),
        max_redemptions: Some(40),
    });
    expire_lease(&world, discount).await;
    let failed = world.deliver(&handler, &as_refs(&messages)).await;

    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(
        world.max_redemptions(discount),
        Some(Some(40)),
        "their value stands"
    );
    assert_eq!(world.action("o0").await.as_deref(), Some("decremented"));
    assert!(!world.sync_item(discount).await.contains_key("journal"));
    assert!(!world
        .polar_requests()
        .iter()
        .any(|r| r.starts_with("PATCH")));
}

#[tokio::test]
async fn a_lease_held_by_a_live_invocation_gets_the_order_handed_over_and_the_message_back_for_two_dynamodb_requests(
) {
    let world = World::start().await;
    let discount = world.discount("HELD", Some(5));
    let messages = seed_orders(&world, "o", discount, "HELD", 1).await;
    let now = std::time::SystemTime::now();
    let epoch_ms = |at: std::time::SystemTime| {
        at.duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            .to_string()
    };
    world
        .dynamo
        .put_item()
        .table_name(&world.tables.sync)
        .item("pk", s(&format!("discount#{discount}")))
        .item("leaseToken", s(&Uuid::new_v4().to_string()))
        .item(
            "leaseExpiresAtMs",
            AttributeValue::N(epoch_ms(now + Duration::from_secs(120))),
        )
        .item("leaseTakenAtMs", AttributeValue::N(epoch_ms(now)))
        // Its steps were measured to take a minute: not worth waiting for.
        .item("lastStepMs", AttributeValue::N("60000".into()))
        .send()
        .await
        .unwrap();
    let (handler, dynamo_requests) = world.counting_handler().await;

    // The refused one-write start tells who holds the lease: the order is handed to it, and
    // the message given back, with no second look and no waiting.
    let started = std::time::Instant::now();
    let failed = world
        .deliver_within(&handler, &as_refs(&messages), Duration::from_secs(30))
        .await;

    assert_eq!(failed, ["m-o0"]);
    assert_eq!(dynamo_requests.load(Ordering::SeqCst), 2);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(world.polar_requests().is_empty());
    assert_eq!(world.action("o0").await, None);

    expire_lease(&world, discount).await;
    let failed = world.deliver(&handler, &as_refs(&messages)).await;
    assert!(failed.is_empty());
    assert_eq!(world.max_redemptions(discount), Some(Some(4)));
    assert!(
        world.sync_item(discount).await.contains_key("lastStepMs"),
        "the step that released the lease is measured for the next waiters"
    );
    assert!(
        !world.sync_item(discount).await.contains_key("handedOff"),
        "the commit that marks the order takes its entry off the list"
    );
}

#[tokio::test]
async fn a_journaled_order_already_marked_elsewhere_does_not_block_the_others() {
    let world = World::start().await;
    let discount = world.discount("MARKED", Some(5));
    let messages = seed_orders(&world, "o", discount, "MARKED", 2).await;
    let (handler, crash_at) = crashing(&world).await;
    *crash_at.lock().unwrap() = Some(Step::PolarWritten);
    let crashed = AssertUnwindSafe(handler.handle(event(&as_refs(&messages), TIMEOUT)))
        .catch_unwind()
        .await;
    assert!(crashed.is_err());
    // Someone marks o0 by hand while the journal still lists it.
    world
        .dynamo
        .update_item()
        .table_name(&world.tables.orders)
        .key("id", s("o0"))
        .update_expression("SET polarDiscountSynced = :t, polarDiscountSyncAction = :a")
        .expression_attribute_values(":t", AttributeValue::Bool(true))
        .expression_attribute_values(":a", s("decremented"))
        .send()
        .await
        .unwrap();

    expire_lease(&world, discount).await;
    let failed = world.deliver(&handler, &as_refs(&messages)).await;

    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(world.action("o1").await.as_deref(), Some("decremented"));
    assert_eq!(world.max_redemptions(discount), Some(Some(3)));
    let lock = world.sync_item(discount).await;
    assert!(
        !lock.contains_key("journal") && !lock.contains_key("leaseToken"),
        "{lock:?}"
    );
}

/// The discount's steps were measured to take `step_ms`: a waiter knows when to look.
async fn steps_take(world: &World, discount: Uuid, step_ms: u64) {
    world
        .dynamo
        .put_item()
        .table_name(&world.tables.sync)
        .item("pk", s(&format!("discount#{discount}")))
        .item("lastStepMs", AttributeValue::N(step_ms.to_string()))
        .send()
        .await
        .unwrap();
}

/// A discount whose steps were measured at 450 ms and whose next holder's read is slow
/// (300 ms), so that waiters starting 100 ms after it find its lease held.
async fn hot_discount_held_a_while(world: &World) -> Uuid {
    let discount = world.discount("HOT", Some(100));
    steps_take(world, discount, 450).await;
    world.polar.inject(
        Fault::new(FaultAction::Delay { millis: 300 })
            .method("GET")
            .times(1),
    );
    discount
}

/// A container of its own, with a Polar token of its own (to tell its Polar requests
/// apart) and its DynamoDB requests counted.
async fn waiter_container(world: &World, token: &str) -> (ProductionHandler, Arc<AtomicUsize>) {
    let mut env = world.env();
    env.retain(|(name, _)| name != "POLAR_ACCESS_TOKEN");
    env.push(("POLAR_ACCESS_TOKEN".into(), token.into()));
    let (dynamo, requests) = counting_dynamo(&world.aws);
    let handler = world
        .handler_on(
            &SqsBackend::Moto,
            &config_from(&env),
            Wiring {
                dynamo: Some(dynamo),
                ..Wiring::default()
            },
        )
        .await;
    (handler, requests)
}

fn polar_requests_with_token(world: &World, discount: Uuid, token: &str) -> usize {
    let bearer = format!("Bearer {token}");
    world
        .polar_requests_on(discount)
        .iter()
        .filter(|r| r.authorization.as_deref() == Some(bearer.as_str()))
        .count()
}

#[tokio::test]
async fn waiters_hand_their_orders_to_the_holder_which_counts_them_once_in_one_more_step() {
    let world = World::start().await;
    let discount = hot_discount_held_a_while(&world).await;
    let own = seed_orders(&world, "h", discount, "HOT", 1).await;
    let handed = seed_orders(&world, "w", discount, "HOT", 3).await;
    let holder = world.handler().await;
    // The second waiter has a copy of the first's messages (delivered again).
    let (first, first_requests) = waiter_container(&world, "first_waiter").await;
    let (second, _) = waiter_container(&world, "second_waiter").await;

    let waiter_batch = as_refs(&handed);
    let later = || tokio::time::sleep(Duration::from_millis(100));
    let (held, first_result, second_result) = tokio::join!(
        holder.handle(event(&as_refs(&own), TIMEOUT)),
        async {
            later().await;
            first.handle(event(&waiter_batch, TIMEOUT)).await
        },
        async {
            later().await;
            second.handle(event(&waiter_batch, TIMEOUT)).await
        },
    );

    assert!(failed_ids(&held.unwrap()).is_empty());
    assert_eq!(world.max_redemptions(discount), Some(Some(96)));
    // Both waiters gave their messages back at once; delivered again, they find their orders
    // synced.
    for result in [first_result, second_result] {
        assert_eq!(failed_ids(&result.unwrap()).len(), 3);
    }
    assert!(world.deliver(&first, &as_refs(&handed)).await.is_empty());
    for waiter in ["first_waiter", "second_waiter"] {
        assert_eq!(
            polar_requests_with_token(&world, discount, waiter),
            0,
            "{waiter} left its orders to the holder"
        );
    }
    assert_eq!(
        polar_requests_with_token(&world, discount, support::TOKEN),
        4,
        "the holder's own step, then one more for the three handed-over orders"
    );
    assert_eq!(
        first_requests.load(Ordering::SeqCst),
        3,
        "the refused start, the hand-off, and the copy's start that finds the orders synced"
    );
    let item = world.sync_item(discount).await;
    assert!(!item.contains_key("handedOff"), "{item:?}");
    assert!(!item.contains_key("leaseToken"), "{item:?}");
}

#[tokio::test]
async fn when_the_holder_dies_after_taking_orders_over_their_messages_count_them_once() {
    let world = World::start().await;
    let discount = hot_discount_held_a_while(&world).await;
    let own = seed_orders(&world, "h", discount, "HOT", 1).await;
    let handed = seed_orders(&world, "w", discount, "HOT", 2).await;
    // The holder dies as it starts the step for the orders it took over.
    let starts = Arc::new(AtomicUsize::new(0));
    let holder = {
        let starts = starts.clone();
        world
            .handler_wired(Wiring {
                checkpoint: Some(Arc::new(move |step| {
                    if step == Step::LeaseTaken && starts.fetch_add(1, Ordering::SeqCst) == 1 {
                        panic!("simulated crash taking the orders over");
                    }
                })),
                ..Wiring::default()
            })
            .await
    };
    let (waiter, _) = waiter_container(&world, "waiter").await;

    let handed_batch = as_refs(&handed);
    let (crashed, waited) = tokio::join!(
        AssertUnwindSafe(holder.handle(event(&as_refs(&own), TIMEOUT))).catch_unwind(),
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            waiter.handle(event(&handed_batch, TIMEOUT)).await
        },
    );

    assert!(crashed.is_err());
    assert_eq!(
        failed_ids(&waited.unwrap()).len(),
        2,
        "the waiter never saw its orders synced: it keeps its messages"
    );
    assert_eq!(world.action("w0").await, None);
    expire_lease(&world, discount).await;
    let redelivered = world.handler().await;
    let failed = world
        .deliver(&redelivered, &as_refs(&[own, handed].concat()))
        .await;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(world.max_redemptions(discount), Some(Some(97)));
    for order in ["h0", "w0", "w1"] {
        assert_eq!(world.action(order).await.as_deref(), Some("decremented"));
    }
}
