//! The write rule, against the Polar double: any 2xx answer to a PATCH or DELETE means
//! the write was applied, whatever the body says or fails to say. A proxy page, an empty
//! object, a 204 or a body cut off mid-way must never make the function write again, over
//! any number of redeliveries.

mod support;

use std::time::Duration;

use polar_discount_sync::adapters::polar::{HttpTimeouts, PolarClient};
use polar_discount_sync::config::{AccessToken, PolarApiUrl};
use polar_discount_sync::deadline::Deadline;
use polar_discount_sync::domain::DiscountId;
use polar_discount_sync::ports::{Discounts, WriteOutcome};
use polar_double::{Fault, FaultAction};
use support::{body, World, TOKEN};

const REDELIVERIES: usize = 3;

fn later() -> Deadline {
    Deadline::after(Duration::from_secs(30))
}

/// The answers Polar, or something in front of it, may give to a write it applied.
fn unreadable_successes() -> Vec<(&'static str, FaultAction)> {
    vec![
        (
            "200 with an HTML page",
            FaultAction::ApplyThenAnswer {
                status: 200,
                body: Some("<html><body>OK</body></html>".into()),
                content_type: Some("text/html".into()),
            },
        ),
        (
            "200 with {}",
            FaultAction::apply_then_answer(200, Some("{}")),
        ),
        (
            "204 without a body",
            FaultAction::apply_then_answer(204, None),
        ),
        (
            "200 cut off mid-body",
            FaultAction::apply_then_cut_body(200),
        ),
    ]
}

/// Delivers one order's message `REDELIVERIES` times, as SQS would after failures.
async fn redeliver(world: &World, discount: uuid::Uuid, code: &str) {
    let handler = world.handler().await;
    world.put_order("ord_1", discount, code).await;
    for delivery in 0..REDELIVERIES {
        let id = format!("m1-{delivery}");
        world
            .deliver(&handler, &[(id.as_str(), body("ord_1", discount, code))])
            .await;
    }
}

/// The production client, pointed at the double.
fn client(world: &World) -> PolarClient {
    PolarClient::new(
        &PolarApiUrl::parse(&world.polar.base_url()).unwrap(),
        AccessToken::new(TOKEN.to_owned()),
        HttpTimeouts {
            connect: Duration::from_secs(1),
            request: Duration::from_secs(2),
        },
    )
    .unwrap()
}

fn requests(world: &World, method: &str) -> usize {
    world
        .polar
        .requests()
        .iter()
        .filter(|r| r.method == method)
        .count()
}

#[tokio::test]
async fn a_patch_answered_with_any_2xx_decrements_exactly_once_over_redeliveries() {
    for (answer, fault) in unreadable_successes() {
        let world = World::start().await;
        let discount = world.discount("SPRING", Some(5));
        world.polar.inject(Fault::new(fault).method("PATCH"));

        redeliver(&world, discount, "SPRING").await;

        assert_eq!(world.max_redemptions(discount), Some(Some(4)), "{answer}");
        assert_eq!(requests(&world, "PATCH"), 1, "{answer}");
        assert_eq!(
            world.action("ord_1").await.as_deref(),
            Some("decremented"),
            "{answer}"
        );
    }
}

#[tokio::test]
async fn a_last_use_delete_answered_with_any_2xx_deletes_once_and_marks_the_order_deleted() {
    for (answer, fault) in unreadable_successes() {
        let world = World::start().await;
        let discount = world.discount("LAST", Some(1));
        world.polar.inject(Fault::new(fault).method("DELETE"));

        redeliver(&world, discount, "LAST").await;

        assert_eq!(world.max_redemptions(discount), None, "{answer}: deleted");
        assert_eq!(requests(&world, "DELETE"), 1, "{answer}");
        assert_eq!(
            world.action("ord_1").await.as_deref(),
            Some("deleted"),
            "{answer}"
        );
    }
}

#[tokio::test]
async fn the_client_reports_any_2xx_to_a_write_as_applied() {
    let world = World::start().await;
    let client = client(&world);
    for (answer, fault) in unreadable_successes() {
        let patched = world.discount("P", Some(5));
        world
            .polar
            .inject(Fault::new(fault.clone()).method("PATCH"));
        let outcome = client
            .set_max_redemptions(DiscountId::parse(&patched.to_string()).unwrap(), 4, later())
            .await;
        assert!(
            matches!(outcome, WriteOutcome::Applied),
            "{answer}: {outcome:?}"
        );

        let deleted = world.discount("D", Some(1));
        world.polar.inject(Fault::new(fault).method("DELETE"));
        let outcome = client
            .delete(DiscountId::parse(&deleted.to_string()).unwrap(), later())
            .await;
        assert!(
            matches!(outcome, WriteOutcome::Applied),
            "{answer}: {outcome:?}"
        );
    }
}

#[tokio::test]
async fn a_refusal_with_polars_own_error_body_is_not_applied_and_a_proxy_page_is_unknown() {
    let world = World::start().await;
    let client = client(&world);
    let discount = world.discount("R", Some(5));
    let id = DiscountId::parse(&discount.to_string()).unwrap();

    world.polar.inject(
        Fault::new(FaultAction::status(
            422,
            r#"{"error":"RequestValidationError","detail":[]}"#,
        ))
        .method("PATCH"),
    );
    let refused = client.set_max_redemptions(id, 4, later()).await;
    assert!(
        matches!(refused, WriteOutcome::NotApplied(_)),
        "{refused:?}"
    );

    world.polar.inject(
        Fault::new(FaultAction::ApplyThenAnswer {
            status: 502,
            body: Some("<html>Bad Gateway</html>".into()),
            content_type: Some("text/html".into()),
        })
        .method("PATCH"),
    );
    let unknown = client.set_max_redemptions(id, 4, later()).await;
    assert!(matches!(unknown, WriteOutcome::Unknown(_)), "{unknown:?}");
    assert_eq!(
        world.max_redemptions(discount),
        Some(Some(4)),
        "it did land"
    );
}
