//! The built `polar-discount-sync` binary, driven through the Lambda Runtime API with
//! the event files from `events/`, as Lambda would run it.

mod support;

use std::path::Path;
use std::time::Duration;

use lambda_driver::{FunctionProcess, Outcome, RuntimeApi};
use polar_double::DiscountSeed;
use support::World;
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
