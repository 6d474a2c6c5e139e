mod common;

use std::time::{Duration, Instant};

use common::{answer, raw_exchange, Api};
use polar_double::{DiscountSeed, Fault, FaultAction, PolarDouble};
use serde_json::json;

fn seeded(polar: &PolarDouble, max_redemptions: i64) -> (uuid::Uuid, String) {
    let id = polar.insert_discount(DiscountSeed::new("A").max_redemptions(max_redemptions));
    (id, format!("/discounts/{id}"))
}

#[tokio::test]
async fn a_status_fault_answers_instead_of_applying() {
    let polar = PolarDouble::start().await;
    let (id, path) = seeded(&polar, 3);
    let api = Api::new(&polar);
    polar.inject(Fault::new(FaultAction::status(
        503,
        r#"{"detail":"unavailable"}"#,
    )));

    let (status, body) = answer(api.patch(&path, json!({ "max_redemptions": 2 })).await).await;
    assert_eq!((status, body), (503, json!({ "detail": "unavailable" })));
    assert_eq!(polar.max_redemptions(id), Some(Some(3)));

    let retried = api.patch(&path, json!({ "max_redemptions": 2 })).await;
    assert_eq!(retried.status(), 200);
    assert_eq!(polar.max_redemptions(id), Some(Some(2)));
    let statuses: Vec<_> = polar.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Some(503), Some(200)]);
}

#[tokio::test]
async fn a_429_fault_has_an_empty_body_and_retry_after() {
    let polar = PolarDouble::start().await;
    let (_, path) = seeded(&polar, 3);
    polar.inject(Fault::new(FaultAction::too_many_requests(17)));

    let response = Api::new(&polar).get(&path).await;

    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "17");
    assert!(response.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_404_fault_can_imitate_a_wrong_base_url_while_the_discount_exists() {
    let polar = PolarDouble::start().await;
    let (id, path) = seeded(&polar, 3);
    polar.inject(Fault::new(FaultAction::status(404, r#"{"detail":"Not Found"}"#)).method("GET"));

    let (status, body) = answer(Api::new(&polar).get(&path).await).await;

    assert_eq!((status, body), (404, json!({ "detail": "Not Found" })));
    assert_eq!(polar.max_redemptions(id), Some(Some(3)));
}

#[tokio::test]
async fn a_fault_applies_only_to_its_method_and_discount() {
    let polar = PolarDouble::start().await;
    let (target, target_path) = seeded(&polar, 3);
    let (_, other_path) = seeded(&polar, 3);
    let api = Api::new(&polar);
    polar.inject(
        Fault::new(FaultAction::status(500, "boom"))
            .method("PATCH")
            .discount(target),
    );

    assert_eq!(api.get(&target_path).await.status(), 200);
    assert_eq!(
        api.patch(&other_path, json!({ "max_redemptions": 2 }))
            .await
            .status(),
        200
    );
    let faulted = api
        .patch(&target_path, json!({ "max_redemptions": 2 }))
        .await;
    assert_eq!(faulted.status(), 500);
    assert_eq!(faulted.text().await.unwrap(), "boom");
}

#[tokio::test]
async fn a_fault_applies_the_given_number_of_times_then_expires() {
    let polar = PolarDouble::start().await;
    let (_, path) = seeded(&polar, 3);
    let api = Api::new(&polar);
    polar.inject(Fault::new(FaultAction::status(502, "bad gateway")).times(2));

    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(api.get(&path).await.status().as_u16());
    }

    assert_eq!(statuses, [502, 502, 200]);
}

#[tokio::test]
async fn faults_are_matched_in_insertion_order() {
    let polar = PolarDouble::start().await;
    let (_, path) = seeded(&polar, 3);
    let api = Api::new(&polar);
    polar.inject(Fault::new(FaultAction::status(500, "first")));
    polar.inject(Fault::new(FaultAction::status(502, "second")));

    let first = api.get(&path).await.status().as_u16();
    let second = api.get(&path).await.status().as_u16();

    assert_eq!((first, second), (500, 502));
}

#[tokio::test]
async fn cleared_faults_no_longer_apply() {
    let polar = PolarDouble::start().await;
    let (_, path) = seeded(&polar, 3);
    polar.inject(Fault::new(FaultAction::status(500, "boom")).times(5));

    polar.clear_faults();

    assert_eq!(Api::new(&polar).get(&path).await.status(), 200);
}

#[tokio::test]
async fn a_delay_fault_times_the_client_out_yet_the_request_is_still_applied() {
    let polar = PolarDouble::start().await;
    let (id, path) = seeded(&polar, 3);
    let impatient = Api::with_timeout(&polar, Duration::from_millis(100));
    polar.inject(Fault::new(FaultAction::Delay { millis: 500 }).method("PATCH"));

    let outcome = impatient
        .request(reqwest::Method::PATCH, &path)
        .json(&json!({ "max_redemptions": 2 }))
        .send()
        .await;

    assert!(outcome.unwrap_err().is_timeout());
    assert_eq!(
        polar.max_redemptions(id),
        Some(Some(3)),
        "applied before the delay"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while polar.max_redemptions(id) != Some(Some(2)) {
        assert!(Instant::now() < deadline, "never applied after the delay");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(polar.requests()[0].status, Some(200));
}

#[tokio::test]
async fn a_delay_fault_then_answers_normally() {
    let polar = PolarDouble::start().await;
    let (_, path) = seeded(&polar, 3);
    polar.inject(Fault::new(FaultAction::Delay { millis: 150 }));

    let started = Instant::now();
    let response = Api::new(&polar).get(&path).await;

    assert_eq!(response.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn drop_connection_sends_no_bytes_and_does_not_apply() {
    let polar = PolarDouble::start().await;
    let (id, path) = seeded(&polar, 3);
    polar.inject(Fault::new(FaultAction::DropConnection).method("PATCH"));

    let received = raw_exchange(
        polar.addr(),
        "PATCH",
        &format!("/v1{path}"),
        r#"{"max_redemptions":2}"#,
    )
    .await;

    assert!(
        received.is_empty(),
        "got {:?}",
        String::from_utf8_lossy(&received)
    );
    assert_eq!(polar.max_redemptions(id), Some(Some(3)));
    assert_eq!(polar.requests()[0].status, None);
}

#[tokio::test]
async fn drop_connection_is_a_connection_error_for_an_http_client() {
    let polar = PolarDouble::start().await;
    let (id, path) = seeded(&polar, 1);
    let api = Api::new(&polar);
    polar.inject(Fault::new(FaultAction::DropConnection).method("DELETE"));

    let error = api
        .request(reqwest::Method::DELETE, &path)
        .send()
        .await
        .unwrap_err();

    assert!(!error.is_timeout() && error.status().is_none(), "{error:?}");
    assert_eq!(polar.max_redemptions(id), Some(Some(1)));
    assert_eq!(polar.requests().len(), 1, "the client retried on its own");
    assert_eq!(api.delete(&path).await.status(), 204);
}

#[tokio::test]
async fn apply_then_drop_connection_applies_and_sends_no_bytes() {
    let polar = PolarDouble::start().await;
    let (id, path) = seeded(&polar, 3);
    polar.inject(Fault::new(FaultAction::ApplyThenDropConnection).method("PATCH"));

    let received = raw_exchange(
        polar.addr(),
        "PATCH",
        &format!("/v1{path}"),
        r#"{"max_redemptions":2}"#,
    )
    .await;

    assert!(
        received.is_empty(),
        "got {:?}",
        String::from_utf8_lossy(&received)
    );
    assert_eq!(polar.max_redemptions(id), Some(Some(2)));
    assert_eq!(polar.requests()[0].status, None);
}

#[tokio::test]
async fn apply_then_drop_connection_leaves_an_http_client_with_an_ambiguous_error() {
    let polar = PolarDouble::start().await;
    let (id, path) = seeded(&polar, 1);
    let api = Api::new(&polar);
    polar.inject(Fault::new(FaultAction::ApplyThenDropConnection).discount(id));

    let error = api
        .request(reqwest::Method::DELETE, &path)
        .send()
        .await
        .unwrap_err();

    assert!(!error.is_timeout() && error.status().is_none(), "{error:?}");
    assert_eq!(
        polar.max_redemptions(id),
        None,
        "the delete was not applied"
    );
    let (status, body) = answer(api.delete(&path).await).await;
    assert_eq!((status, &body["error"]), (404, &json!("ResourceNotFound")));
}

#[tokio::test]
async fn a_dropped_connection_does_not_disturb_the_next_request() {
    let polar = PolarDouble::start().await;
    let (_, path) = seeded(&polar, 3);
    let api = Api::new(&polar);
    assert_eq!(api.get(&path).await.status(), 200);
    polar.inject(Fault::new(FaultAction::DropConnection));

    assert!(api
        .request(reqwest::Method::GET, &path)
        .send()
        .await
        .is_err());
    assert_eq!(api.get(&path).await.status(), 200);
}

#[tokio::test]
async fn apply_then_answer_applies_the_patch_and_answers_the_given_status_and_body() {
    let polar = PolarDouble::start().await;
    let (id, path) = seeded(&polar, 3);
    polar.inject(Fault::new(FaultAction::ApplyThenAnswer {
        status: 200,
        body: Some("<html>proxy</html>".into()),
        content_type: Some("text/html".into()),
    }));

    let response = Api::new(&polar)
        .patch(&path, json!({ "max_redemptions": 2 }))
        .await;

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/html");
    assert_eq!(response.text().await.unwrap(), "<html>proxy</html>");
    assert_eq!(polar.max_redemptions(id), Some(Some(2)));
    assert_eq!(polar.requests()[0].status, Some(200));
}

#[tokio::test]
async fn apply_then_answer_sends_a_json_body_verbatim() {
    let polar = PolarDouble::start().await;
    let (id, path) = seeded(&polar, 3);
    polar.inject(Fault::new(FaultAction::apply_then_answer(200, Some("{}"))));

    let response = Api::new(&polar)
        .patch(&path, json!({ "max_redemptions": 2 }))
        .await;

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.text().await.unwrap(), "{}");
    assert_eq!(polar.max_redemptions(id), Some(Some(2)));
}

#[tokio::test]
async fn apply_then_answer_can_answer_204_without_a_body() {
    let polar = PolarDouble::start().await;
    let (id, path) = seeded(&polar, 3);
    polar.inject(Fault::new(FaultAction::apply_then_answer(204, None)));

    let response = Api::new(&polar)
        .patch(&path, json!({ "max_redemptions": 2 }))
        .await;

    assert_eq!(response.status(), 204);
    assert!(response.headers().get("content-type").is_none());
    assert!(response.bytes().await.unwrap().is_empty());
    assert_eq!(polar.max_redemptions(id), Some(Some(2)));
    assert_eq!(polar.requests()[0].status, Some(204));
}

#[tokio::test]
async fn apply_then_answer_applies_a_delete() {
    let polar = PolarDouble::start().await;
    let (id, path) = seeded(&polar, 1);
    polar.inject(Fault::new(FaultAction::apply_then_answer(200, Some("{}"))).method("DELETE"));

    let (status, body) = answer(Api::new(&polar).delete(&path).await).await;

    assert_eq!((status, body), (200, json!({})));
    assert_eq!(
        polar.max_redemptions(id),
        None,
        "the delete was not applied"
    );
}

#[tokio::test]
async fn apply_then_cut_body_sends_half_of_the_declared_length_then_closes() {
    let polar = PolarDouble::start().await;
    let (id, path) = seeded(&polar, 3);
    polar.inject(Fault::new(FaultAction::apply_then_cut_body(200)));

    let received = raw_exchange(
        polar.addr(),
        "PATCH",
        &format!("/v1{path}"),
        r#"{"max_redemptions":2}"#,
    )
    .await;

    let received = String::from_utf8(received).unwrap();
    let (head, body) = received.split_once("\r\n\r\n").expect("no end of headers");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    let full = serde_json::to_string(&polar.discount(id).unwrap()).unwrap();
    assert!(
        head.contains(&format!("content-length: {}", full.len())),
        "{head}"
    );
    assert_eq!(body, &full[..full.len() / 2]);
    assert_eq!(polar.max_redemptions(id), Some(Some(2)));
    assert_eq!(polar.requests()[0].status, Some(200));
}

#[tokio::test]
async fn apply_then_cut_body_applies_the_patch_but_its_body_cannot_be_read() {
    let polar = PolarDouble::start().await;
    let (id, path) = seeded(&polar, 3);
    polar.inject(Fault::new(FaultAction::apply_then_cut_body(200)).method("PATCH"));

    let response = Api::new(&polar)
        .patch(&path, json!({ "max_redemptions": 2 }))
        .await;

    assert_eq!(response.status(), 200);
    let error = response.bytes().await.unwrap_err();
    assert!(!error.is_timeout(), "{error:?}");
    assert_eq!(polar.max_redemptions(id), Some(Some(2)));
}

#[tokio::test]
async fn apply_then_cut_body_gives_a_delete_a_body_that_cannot_be_read() {
    let polar = PolarDouble::start().await;
    let (id, path) = seeded(&polar, 1);
    polar.inject(Fault::new(FaultAction::apply_then_cut_body(200)).method("DELETE"));

    let response = Api::new(&polar).delete(&path).await;

    assert_eq!(response.status(), 200);
    assert!(response.content_length().unwrap() > 0);
    assert!(response.text().await.is_err());
    assert_eq!(
        polar.max_redemptions(id),
        None,
        "the delete was not applied"
    );
    assert_eq!(polar.requests()[0].status, Some(200));
}
