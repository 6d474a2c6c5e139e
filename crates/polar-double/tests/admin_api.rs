mod common;

use common::{answer, raw_exchange, Api};
use polar_double::{PolarDouble, RecordedRequest};
use serde_json::json;
use uuid::Uuid;

fn admin_url(polar: &PolarDouble, path: &str) -> String {
    format!("http://{}/__double{path}", polar.addr())
}

#[tokio::test]
async fn put_seeds_a_discount_that_the_api_then_serves() {
    let polar = PolarDouble::start().await;
    let id = Uuid::new_v4();
    let client = reqwest::Client::new();

    let (status, created) = answer(
        client
            .put(admin_url(&polar, &format!("/discounts/{id}")))
            .json(&json!({ "name": "Seeded", "code": "SEED", "max_redemptions": 4 }))
            .send()
            .await
            .unwrap(),
    )
    .await;

    assert_eq!(status, 201);
    assert_eq!(created["id"], json!(id));
    assert_eq!(created["max_redemptions"], 4);
    assert_eq!(polar.max_redemptions(id), Some(Some(4)));
    let (status, served) = answer(Api::new(&polar).get(&format!("/discounts/{id}")).await).await;
    assert_eq!((status, served), (200, created));
}

#[tokio::test]
async fn put_of_an_id_that_is_not_a_uuid_v4_is_rejected() {
    let polar = PolarDouble::start().await;

    let response = reqwest::Client::new()
        .put(admin_url(&polar, &format!("/discounts/{}", Uuid::nil())))
        .json(&json!({ "name": "Seeded" }))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 422);
}

#[tokio::test]
async fn get_shows_the_discount_state_without_auth_and_is_not_logged() {
    let polar = PolarDouble::start().await;
    let id = polar.insert_discount(polar_double::DiscountSeed::new("A").max_redemptions(2));
    let client = reqwest::Client::new();

    let (found, body) = answer(
        client
            .get(admin_url(&polar, &format!("/discounts/{id}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let absent = client
        .get(admin_url(&polar, &format!("/discounts/{}", Uuid::new_v4())))
        .send()
        .await
        .unwrap()
        .status();

    assert_eq!(found, 200);
    assert_eq!(body["max_redemptions"], 2);
    assert_eq!(absent, 404);
    assert!(polar.requests().is_empty());
}

#[tokio::test]
async fn requests_lists_the_api_requests_received() {
    let polar = PolarDouble::start().await;
    let api = Api::new(&polar);
    api.get("/discounts/nope").await;
    api.get(&format!("/discounts/{}", Uuid::new_v4())).await;

    let log: Vec<RecordedRequest> = reqwest::Client::new()
        .get(admin_url(&polar, "/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    assert_eq!(log, polar.requests());
    let statuses: Vec<_> = log.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Some(422), Some(404)]);
}

#[tokio::test]
async fn faults_posted_as_json_apply_and_delete_clears_them() {
    let polar = PolarDouble::start().await;
    let id = polar.insert_discount(polar_double::DiscountSeed::new("A").max_redemptions(3));
    let path = format!("/discounts/{id}");
    let api = Api::new(&polar);
    let client = reqwest::Client::new();

    let posted = client
        .post(admin_url(&polar, "/faults"))
        .json(&json!({
            "method": "PATCH",
            "discount_id": id,
            "times": 1,
            "action": { "kind": "apply_then_drop_connection" },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 204);
    let received = raw_exchange(
        polar.addr(),
        "PATCH",
        &format!("/v1{path}"),
        r#"{"max_redemptions":2}"#,
    )
    .await;
    assert!(received.is_empty());
    assert_eq!(polar.max_redemptions(id), Some(Some(2)));

    client
        .post(admin_url(&polar, "/faults"))
        .json(&json!({
            "times": 3,
            "action": { "kind": "status", "status": 429, "retry_after_secs": 9 },
        }))
        .send()
        .await
        .unwrap();
    let limited = api.get(&path).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "9");

    let cleared = client
        .delete(admin_url(&polar, "/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), 204);
    assert_eq!(api.get(&path).await.status(), 200);
}

#[tokio::test]
async fn apply_then_answer_and_apply_then_cut_body_can_be_posted_as_json() {
    let polar = PolarDouble::start().await;
    let id = polar.insert_discount(polar_double::DiscountSeed::new("A").max_redemptions(3));
    let path = format!("/discounts/{id}");
    let api = Api::new(&polar);
    let client = reqwest::Client::new();
    for action in [
        json!({ "kind": "apply_then_answer", "status": 200, "body": "<html>proxy</html>", "content_type": "text/html" }),
        json!({ "kind": "apply_then_cut_body", "status": 200 }),
    ] {
        let posted = client
            .post(admin_url(&polar, "/faults"))
            .json(&json!({ "method": "PATCH", "action": action }))
            .send()
            .await
            .unwrap();
        assert_eq!(posted.status(), 204);
    }

    let proxied = api.patch(&path, json!({ "max_redemptions": 2 })).await;
    assert_eq!(proxied.status(), 200);
    assert_eq!(proxied.text().await.unwrap(), "<html>proxy</html>");
    assert_eq!(polar.max_redemptions(id), Some(Some(2)));

    let cut = api.patch(&path, json!({ "max_redemptions": 1 })).await;
    assert_eq!(cut.status(), 200);
    assert!(cut.bytes().await.is_err());
    assert_eq!(polar.max_redemptions(id), Some(Some(1)));
}
