mod common;

use common::Api;
use polar_double::{DiscountSeed, DoubleConfig, PolarDouble};
use serde_json::json;

async fn limited(per_minute: u32) -> PolarDouble {
    PolarDouble::start_with(DoubleConfig {
        rate_limit_per_minute: Some(per_minute),
        ..DoubleConfig::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn requests_over_the_limit_get_429_with_an_empty_body_and_the_whole_window_as_retry_after() {
    let polar = limited(3).await;
    let id = polar.insert_discount(DiscountSeed::new("A").max_redemptions(5));
    let api = Api::new(&polar);
    let path = format!("/discounts/{id}");

    for _ in 0..3 {
        assert_eq!(api.get(&path).await.status(), 200);
    }
    let refused = api.patch(&path, json!({ "max_redemptions": 4 })).await;

    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "60");
    assert!(refused.bytes().await.unwrap().is_empty());
    assert_eq!(
        polar.max_redemptions(id),
        Some(Some(5)),
        "a refused PATCH applied"
    );
    assert_eq!(polar.requests().last().unwrap().status, Some(429));
}

#[tokio::test]
async fn a_new_window_admits_requests_again() {
    let polar = limited(1).await;
    let id = polar.insert_discount(DiscountSeed::new("A").max_redemptions(5));
    let api = Api::new(&polar);
    let path = format!("/discounts/{id}");
    assert_eq!(api.get(&path).await.status(), 200);
    assert_eq!(api.get(&path).await.status(), 429);
    assert_eq!(api.get(&path).await.status(), 429);

    polar.reset_rate_limit_window();

    assert_eq!(api.get(&path).await.status(), 200);
    assert_eq!(api.get(&path).await.status(), 429);
}

#[tokio::test]
async fn the_window_is_shared_by_every_endpoint_and_error_answer() {
    let polar = limited(2).await;
    let api = Api::new(&polar);

    assert_eq!(api.get("/discounts/not-a-uuid").await.status(), 422);
    assert_eq!(
        api.get(&format!("/discounts/{}", uuid::Uuid::new_v4()))
            .await
            .status(),
        404
    );
    assert_eq!(api.get("/discounts/").await.status(), 429);
}

#[tokio::test]
async fn unauthenticated_requests_are_rejected_without_using_the_window() {
    let polar = limited(1).await;
    let id = polar.insert_discount(DiscountSeed::new("A"));
    let url = format!("{}/discounts/{id}", polar.base_url());

    let anonymous = reqwest::Client::new().get(&url).send().await.unwrap();

    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        Api::new(&polar)
            .get(&format!("/discounts/{id}"))
            .await
            .status(),
        200
    );
}
