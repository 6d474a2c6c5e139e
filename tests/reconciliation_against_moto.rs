//! The scheduled reconciliation against moto and the Polar double: journals orphaned by
//! a lost answer, whose messages are never delivered again (as after dead-lettering),
//! are settled by one run, exactly once, also when two runs race.

mod support;

use std::time::{Duration, Instant};

use polar_discount_sync::lambda::{handler_with, ProductionHandler, Wiring};
use polar_double::{Fault, FaultAction};
use serde_json::Value;
use support::{body, event, scheduled_event, World};
use uuid::Uuid;

/// The invocation that loses the answer: too short for the read-back, so the journal
/// and the lease stay until the lease expires, 10 s after this deadline.
const SHORT_INVOCATION: Duration = Duration::from_secs(3);
const LEASE_GRACE: Duration = Duration::from_secs(10);

async fn handler(world: &World) -> ProductionHandler {
    let mut config = world.config();
    config.polar_request_timeout = Duration::from_secs(1);
    config.polar_connect_timeout = Duration::from_secs(1);
    handler_with(&config, &world.aws, Wiring::default())
        .await
        .expect("handler builds")
}

async fn reconcile(handler: &ProductionHandler) -> Value {
    handler
        .handle_event(scheduled_event(Duration::from_secs(60)))
        .await
        .expect("the run answers")
}

/// Syncs `ord_1` once with `fault` on its write, in an invocation that ends before the
/// outcome can be read back. Returns when the orphaned lease has expired.
async fn orphan_a_journal(
    world: &World,
    max_redemptions: i64,
    method: &str,
    fault: FaultAction,
) -> Uuid {
    let (discount, started) = orphan_a_journal_now(world, max_redemptions, method, fault).await;
    sleep_until_the_lease_expired(started).await;
    discount
}

async fn sleep_until_the_lease_expired(started: Instant) {
    let expiry = SHORT_INVOCATION + LEASE_GRACE + Duration::from_millis(500);
    tokio::time::sleep(expiry.saturating_sub(started.elapsed())).await;
}

/// [`orphan_a_journal`] without waiting: the lease is still live. Returns the discount
/// and when the invocation started.
async fn orphan_a_journal_now(
    world: &World,
    max_redemptions: i64,
    method: &str,
    fault: FaultAction,
) -> (Uuid, Instant) {
    let handler = handler(world).await;
    let discount = world.discount("SPRING", Some(max_redemptions));
    world.put_order("ord_1", discount, "SPRING").await;
    world.polar.inject(Fault::new(fault).method(method));
    let started = Instant::now();
    let response = handler
        .handle(event(
            &[("m1", body("ord_1", discount, "SPRING"))],
            SHORT_INVOCATION,
        ))
        .await
        .expect("the batch is handled");
    assert_eq!(response.batch_item_failures.len(), 1, "the message failed");
    assert!(
        world.sync_item(discount).await.contains_key("journal"),
        "the journal stays for whoever comes next"
    );
    (discount, started)
}

fn writes(world: &World, method: &str) -> usize {
    world
        .polar
        .requests()
        .iter()
        .filter(|r| r.method == method)
        .count()
}

#[tokio::test]
async fn a_patch_that_landed_with_its_answer_lost_is_marked_decremented_by_one_run() {
    let world = World::start().await;
    let discount = orphan_a_journal(&world, 5, "PATCH", FaultAction::ApplyThenDropConnection).await;
    assert_eq!(
        world.action("ord_1").await,
        None,
        "counted on Polar, not marked"
    );

    let counts = reconcile(&handler(&world).await).await;

    assert_eq!(counts["settled"], 1, "{counts}");
    assert_eq!(world.action("ord_1").await.as_deref(), Some("decremented"));
    assert_eq!(world.max_redemptions(discount), Some(Some(4)));
    assert_eq!(writes(&world, "PATCH"), 1, "never written again");
}

#[tokio::test]
async fn a_last_use_delete_that_landed_with_its_answer_lost_is_marked_deleted_by_one_run() {
    let world = World::start().await;
    let discount =
        orphan_a_journal(&world, 1, "DELETE", FaultAction::ApplyThenDropConnection).await;

    let counts = reconcile(&handler(&world).await).await;

    assert_eq!(counts["settled"], 1, "{counts}");
    assert_eq!(world.action("ord_1").await.as_deref(), Some("deleted"));
    assert_eq!(world.max_redemptions(discount), None);
    assert_eq!(writes(&world, "DELETE"), 1);
}

#[tokio::test]
async fn a_journal_whose_write_did_not_land_is_planned_and_written_once() {
    let world = World::start().await;
    let discount = orphan_a_journal(&world, 5, "PATCH", FaultAction::DropConnection).await;
    assert_eq!(world.max_redemptions(discount), Some(Some(5)), "not landed");

    let counts = reconcile(&handler(&world).await).await;

    assert_eq!(counts["settled"], 1, "{counts}");
    assert_eq!(world.max_redemptions(discount), Some(Some(4)));
    assert_eq!(world.action("ord_1").await.as_deref(), Some("decremented"));
}

#[tokio::test]
async fn two_concurrent_runs_settle_the_journal_once() {
    let world = World::start().await;
    let discount = orphan_a_journal(&world, 5, "PATCH", FaultAction::DropConnection).await;
    let (first, second) = (handler(&world).await, handler(&world).await);

    let (a, b) = tokio::join!(reconcile(&first), reconcile(&second));

    let settled = a["settled"].as_u64().unwrap() + b["settled"].as_u64().unwrap();
    assert_eq!(settled, 1, "{a} {b}");
    assert_eq!(
        world.max_redemptions(discount),
        Some(Some(4)),
        "one write landed"
    );
    assert_eq!(world.action("ord_1").await.as_deref(), Some("decremented"));
}

#[tokio::test]
async fn a_run_with_nothing_to_settle_makes_no_polar_request() {
    let world = World::start().await;
    let handler = handler(&world).await;
    assert_eq!(reconcile(&handler).await["found"], 0);

    let discount = world.discount("SPRING", Some(5));
    world.put_order("ord_1", discount, "SPRING").await;
    world
        .deliver(&handler, &[("m1", body("ord_1", discount, "SPRING"))])
        .await;
    let requests = world.polar.requests().len();

    let counts = reconcile(&handler).await;

    assert_eq!(
        counts["found"], 0,
        "the synced discount holds no journal: {counts}"
    );
    assert_eq!(world.polar.requests().len(), requests, "no Polar request");
}

#[tokio::test]
async fn in_shadow_mode_a_run_reads_an_orphaned_journal_says_it_would_settle_it_and_leaves_it_to_the_sync(
) {
    let world = World::start().await;
    let (discount, started) =
        orphan_a_journal_now(&world, 5, "PATCH", FaultAction::ApplyThenDropConnection).await;
    let mut config = world.config();
    config.shadow_mode = true;
    let shadow = handler_with(&config, &world.aws, Wiring::default())
        .await
        .expect("handler builds");
    assert!(shadow.is_shadow());

    assert_eq!(
        reconcile(&shadow).await,
        serde_json::json!({"found": 1, "settled": 0, "cleared": 0, "busy": 1, "failed": 0, "wouldSettle": 0}),
        "a live lease is left alone"
    );
    sleep_until_the_lease_expired(started).await;
    let journal_before = world.sync_item(discount).await;
    let order_before = world.order("ord_1").await;
    let polar_before = world.polar.requests().len();

    assert_eq!(
        reconcile(&shadow).await,
        serde_json::json!({"found": 1, "settled": 0, "cleared": 0, "busy": 0, "failed": 0, "wouldSettle": 1})
    );
    assert_eq!(
        world.sync_item(discount).await,
        journal_before,
        "journal and lease untouched"
    );
    assert_eq!(world.order("ord_1").await, order_before, "order not marked");
    let methods: Vec<String> = world.polar.requests()[polar_before..]
        .iter()
        .map(|r| r.method.clone())
        .collect();
    assert_eq!(methods, ["GET"], "one read of the discount, no write");

    let settled = reconcile(&handler(&world).await).await;
    assert_eq!(settled["settled"], 1, "the sync still finds it: {settled}");
    assert_eq!(world.action("ord_1").await.as_deref(), Some("decremented"));
}
