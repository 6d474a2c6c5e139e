//! The handler end to end against a real DynamoDB API (moto) and the Polar double.

mod support;

use std::time::Duration;

use polar_discount_sync::lambda::ProductionHandler;
use polar_double::{Fault, FaultAction};
use support::{body, World};
use uuid::Uuid;

/// A world with one order, `ord_1`, that used a new discount with `code` and `limit`.
async fn one_order(code: &str, limit: Option<i64>) -> (World, Uuid) {
    let world = World::start().await;
    let discount = world.discount(code, limit);
    world.put_order("ord_1", discount, code).await;
    (world, discount)
}

/// Delivers `ord_1`'s message once; the ids of the failed messages.
async fn deliver_ord_1(
    world: &World,
    handler: &ProductionHandler,
    discount: Uuid,
    code: &str,
) -> Vec<String> {
    world
        .deliver(handler, &[("m1", body("ord_1", discount, code))])
        .await
}

#[tokio::test]
async fn a_limited_discount_is_decremented_once_and_the_order_marked() {
    let (world, discount) = one_order("SUMMER25", Some(3)).await;
    let handler = world.handler().await;

    let failed = deliver_ord_1(&world, &handler, discount, "summer25").await;

    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(world.max_redemptions(discount), Some(Some(2)));
    assert_eq!(world.action("ord_1").await.as_deref(), Some("decremented"));
    let order = world.order("ord_1").await;
    let synced_at = order["polarDiscountSyncedAt"].as_s().unwrap();
    assert!(
        synced_at.ends_with('Z') && synced_at.contains('T'),
        "RFC 3339 UTC: {synced_at}"
    );
    assert!(
        !order.contains_key("polarDiscountSyncClaim"),
        "claim dropped"
    );
    assert_eq!(
        order["total"].as_n().unwrap(),
        "1990",
        "other attributes kept"
    );
    let path = format!("/v1/discounts/{discount}");
    assert_eq!(
        world.polar_requests(),
        [format!("GET {path}"), format!("PATCH {path}")]
    );
    let patch = &world.polar.requests()[1];
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&patch.body).unwrap(),
        serde_json::json!({"max_redemptions": 2})
    );
    assert_eq!(
        patch.authorization.as_deref(),
        Some(format!("Bearer {}", support::TOKEN).as_str())
    );
}

#[tokio::test]
async fn the_last_use_deletes_the_discount() {
    let (world, discount) = one_order("LAST", Some(1)).await;
    let handler = world.handler().await;

    let failed = deliver_ord_1(&world, &handler, discount, "LAST").await;

    assert!(failed.is_empty());
    assert_eq!(world.max_redemptions(discount), None, "deleted on Polar");
    assert_eq!(world.action("ord_1").await.as_deref(), Some("deleted"));
}

#[tokio::test]
async fn an_unlimited_discount_is_skipped_without_a_write() {
    let (world, discount) = one_order("FOREVER", None).await;
    let handler = world.handler().await;

    let failed = deliver_ord_1(&world, &handler, discount, "FOREVER").await;

    assert!(failed.is_empty());
    assert_eq!(world.max_redemptions(discount), Some(None));
    assert_eq!(
        world.action("ord_1").await.as_deref(),
        Some("skipped_unlimited")
    );
    assert_eq!(world.polar_requests().len(), 1, "only the GET");
}

#[tokio::test]
async fn a_discount_polar_no_longer_has_is_recorded_as_already_deleted() {
    let world = World::start().await;
    let discount = uuid::Uuid::new_v4();
    world.put_order("ord_1", discount, "GONE").await;
    let handler = world.handler().await;

    let failed = deliver_ord_1(&world, &handler, discount, "GONE").await;

    assert!(failed.is_empty());
    assert_eq!(
        world.action("ord_1").await.as_deref(),
        Some("already_deleted")
    );
}

#[tokio::test]
async fn a_404_without_resource_not_found_is_a_failure_not_a_deletion() {
    let (world, discount) = one_order("CFG", Some(3)).await;
    world.polar.inject(
        Fault::new(FaultAction::status(404, r#"{"detail":"Not Found"}"#))
            .method("GET")
            .times(10),
    );
    let handler = world.handler().await;

    let failed = deliver_ord_1(&world, &handler, discount, "CFG").await;

    assert_eq!(failed, ["m1"]);
    assert_eq!(
        world.action("ord_1").await,
        None,
        "not recorded as an action"
    );
    assert_eq!(
        world.polar_requests().len(),
        1,
        "configuration errors are not retried in process"
    );
    assert_eq!(world.max_redemptions(discount), Some(Some(3)));
}

#[tokio::test]
async fn a_refused_token_is_a_failure_and_the_order_stays_unsynced() {
    let (world, discount) = one_order("AUTH", Some(3)).await;
    world.polar.inject(
        Fault::new(FaultAction::status(
            401,
            r#"{"error":"invalid_token","error_description":"expired"}"#,
        ))
        .method("GET")
        .times(10),
    );
    let handler = world.handler().await;

    let failed = deliver_ord_1(&world, &handler, discount, "AUTH").await;

    assert_eq!(failed, ["m1"]);
    assert_eq!(world.action("ord_1").await, None);
    let lock = world.sync_item(discount).await;
    assert!(
        !lock.contains_key("leaseToken") && !lock.contains_key("journal"),
        "the lease is released so the retry need not wait: {lock:?}"
    );
}

#[tokio::test]
async fn a_duplicate_in_the_same_batch_decrements_once() {
    let (world, discount) = one_order("DUP", Some(5)).await;
    let handler = world.handler().await;

    let message = body("ord_1", discount, "DUP");
    let failed = world
        .deliver(&handler, &[("m1", message.clone()), ("m2", message)])
        .await;

    assert!(failed.is_empty(), "the duplicate is acknowledged");
    assert_eq!(world.max_redemptions(discount), Some(Some(4)));
}

#[tokio::test]
async fn a_duplicate_in_a_later_batch_decrements_nothing_and_calls_no_polar() {
    let (world, discount) = one_order("DUP", Some(5)).await;
    let handler = world.handler().await;
    let message = body("ord_1", discount, "DUP");

    world.deliver(&handler, &[("m1", message.clone())]).await;
    let calls_after_first = world.polar_requests().len();
    let failed = world.deliver(&handler, &[("m1-again", message)]).await;

    assert!(failed.is_empty());
    assert_eq!(world.max_redemptions(discount), Some(Some(4)));
    assert_eq!(world.polar_requests().len(), calls_after_first);
}

#[tokio::test]
async fn a_malformed_body_fails_alone() {
    let (world, discount) = one_order("OK", Some(5)).await;
    let handler = world.handler().await;

    let failed = world
        .deliver(
            &handler,
            &[
                ("bad-json", "{\"orderId\": ".to_owned()),
                (
                    "bad-id",
                    r#"{"orderId":"ord_1","discountId":"../organizations","discountCode":"OK"}"#
                        .to_owned(),
                ),
                ("good", body("ord_1", discount, "OK")),
            ],
        )
        .await;

    assert_eq!(failed, ["bad-id", "bad-json"]);
    assert_eq!(world.max_redemptions(discount), Some(Some(4)));
    assert!(world
        .polar_requests()
        .iter()
        .all(|r| r.ends_with(&discount.to_string())));
}

#[tokio::test]
async fn an_unknown_order_fails_without_any_polar_request() {
    let world = World::start().await;
    let discount = world.discount("X", Some(5));
    let handler = world.handler().await;

    let failed = world
        .deliver(&handler, &[("m1", body("ord_missing", discount, "X"))])
        .await;

    assert_eq!(failed, ["m1"]);
    assert!(world.polar_requests().is_empty());
    assert!(
        world.order("ord_missing").await.is_empty(),
        "no item created"
    );
}

#[tokio::test]
async fn a_message_that_does_not_match_its_order_makes_no_polar_request() {
    let world = World::start().await;
    let used = world.discount("USED", Some(5));
    let other = world.discount("OTHER", Some(5));
    world.put_order("ord_1", used, "USED").await;
    let handler = world.handler().await;

    let failed = world
        .deliver(
            &handler,
            &[
                ("wrong-discount", body("ord_1", other, "USED")),
                ("wrong-code", body("ord_1", used, "OTHER")),
            ],
        )
        .await;

    assert_eq!(failed, ["wrong-code", "wrong-discount"]);
    assert!(world.polar_requests().is_empty());
    assert_eq!(world.action("ord_1").await, None);
    assert_eq!(world.max_redemptions(used), Some(Some(5)));
    assert_eq!(world.max_redemptions(other), Some(Some(5)));
}

#[tokio::test]
async fn polar_server_errors_are_retried_in_process_and_count_once() {
    let (world, discount) = one_order("FLAKY", Some(5)).await;
    world.polar.inject(
        Fault::new(FaultAction::status(503, ""))
            .method("GET")
            .times(1),
    );
    world.polar.inject(
        Fault::new(FaultAction::status(502, "bad gateway"))
            .method("PATCH")
            .times(2),
    );
    let handler = world.handler().await;

    let failed = deliver_ord_1(&world, &handler, discount, "FLAKY").await;

    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(world.max_redemptions(discount), Some(Some(4)));
    assert_eq!(world.action("ord_1").await.as_deref(), Some("decremented"));
}

#[tokio::test]
async fn a_short_rate_limit_is_waited_out_in_process() {
    let (world, discount) = one_order("BUSY", Some(5)).await;
    world.polar.inject(
        Fault::new(FaultAction::too_many_requests(1))
            .method("GET")
            .times(1),
    );
    let handler = world.handler().await;

    let failed = deliver_ord_1(&world, &handler, discount, "BUSY").await;

    assert!(failed.is_empty());
    assert_eq!(world.max_redemptions(discount), Some(Some(4)));
}

#[tokio::test]
async fn a_rate_limit_longer_than_the_invocation_sends_the_message_back() {
    let (world, discount) = one_order("BUSY", Some(5)).await;
    world.polar.inject(
        Fault::new(FaultAction::too_many_requests(60))
            .method("GET")
            .times(1),
    );
    let handler = world.handler().await;

    let failed = deliver_ord_1(&world, &handler, discount, "BUSY").await;

    assert_eq!(failed, ["m1"]);
    assert_eq!(
        world.polar_requests().len(),
        1,
        "no retry before retry-after"
    );
    assert_eq!(world.action("ord_1").await, None);
}

#[tokio::test]
async fn a_patch_applied_but_unanswered_is_not_counted_twice() {
    let (world, discount) = one_order("LOST", Some(5)).await;
    world.polar.inject(
        Fault::new(FaultAction::ApplyThenDropConnection)
            .method("PATCH")
            .times(1),
    );
    let handler = world.handler().await;

    let failed = deliver_ord_1(&world, &handler, discount, "LOST").await;

    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(world.max_redemptions(discount), Some(Some(4)));
    assert_eq!(world.action("ord_1").await.as_deref(), Some("decremented"));
}

#[tokio::test]
async fn a_delete_applied_but_unanswered_is_recorded_as_deleted() {
    let (world, discount) = one_order("LOST", Some(1)).await;
    world.polar.inject(
        Fault::new(FaultAction::ApplyThenDropConnection)
            .method("DELETE")
            .times(1),
    );
    let handler = world.handler().await;

    let failed = deliver_ord_1(&world, &handler, discount, "LOST").await;

    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(world.max_redemptions(discount), None);
    assert_eq!(world.action("ord_1").await.as_deref(), Some("deleted"));
}

#[tokio::test]
async fn a_dropped_connection_is_retried() {
    let (world, discount) = one_order("DROP", Some(5)).await;
    world.polar.inject(
        Fault::new(FaultAction::DropConnection)
            .method("GET")
            .times(1),
    );
    let handler = world.handler().await;

    let failed = deliver_ord_1(&world, &handler, discount, "DROP").await;

    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(world.max_redemptions(discount), Some(Some(4)));
}

#[tokio::test]
async fn a_slow_polar_answer_times_out_and_is_retried() {
    let (world, discount) = one_order("SLOW", Some(5)).await;
    world.polar.inject(
        Fault::new(FaultAction::Delay { millis: 3_000 })
            .method("GET")
            .times(1),
    );
    let mut config = world.config();
    config.polar_request_timeout = Duration::from_millis(500);
    let handler = polar_discount_sync::lambda::handler_from_config(&config, &world.aws)
        .await
        .unwrap();

    let failed = deliver_ord_1(&world, &handler, discount, "SLOW").await;

    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(world.max_redemptions(discount), Some(Some(4)));
    assert_eq!(world.polar_requests().len(), 3, "GET timed out, GET, PATCH");
}

#[tokio::test]
async fn a_batch_across_discounts_syncs_each_and_reports_only_failures() {
    let world = World::start().await;
    let a = world.discount("AAA", Some(10));
    let b = world.discount("BBB", Some(2));
    let c = world.discount("CCC", None);
    for (order, discount, code) in [
        ("o1", a, "AAA"),
        ("o2", a, "AAA"),
        ("o3", b, "BBB"),
        ("o4", b, "BBB"),
        ("o5", c, "CCC"),
        ("o6", a, "AAA"),
    ] {
        world.put_order(order, discount, code).await;
    }
    let handler = world.handler().await;

    let failed = world
        .deliver(
            &handler,
            &[
                ("m1", body("o1", a, "AAA")),
                ("m2", body("o2", a, "aaa")),
                ("m3", body("o3", b, "BBB")),
                ("m4", body("o4", b, "BBB")),
                ("m5", body("o5", c, "CCC")),
                ("m6", body("o6", a, "AAA")),
                ("m7", body("o7", a, "AAA")),
            ],
        )
        .await;

    assert_eq!(failed, ["m7"], "o7 does not exist");
    assert_eq!(world.max_redemptions(a), Some(Some(7)));
    assert_eq!(world.max_redemptions(b), None, "two uses of two delete");
    assert_eq!(world.max_redemptions(c), Some(None));
    assert_eq!(world.action("o3").await.as_deref(), Some("deleted"));
    assert_eq!(world.action("o4").await.as_deref(), Some("deleted"));
    assert_eq!(
        world.action("o5").await.as_deref(),
        Some("skipped_unlimited")
    );
}

#[tokio::test]
async fn a_function_with_lambdas_default_three_second_timeout_still_syncs() {
    let (world, discount) = one_order("SHORT", Some(5)).await;
    let handler = world.handler().await;

    let response = handler
        .handle(support::event(
            &[("m1", body("ord_1", discount, "SHORT"))],
            Duration::from_secs(3),
        ))
        .await
        .unwrap();

    assert!(support::failed_ids(&response).is_empty());
    assert_eq!(world.max_redemptions(discount), Some(Some(4)));
}
