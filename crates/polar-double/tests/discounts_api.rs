mod common;

use common::{answer, json, Api, TOKEN};
use polar_double::{DiscountSeed, DoubleConfig, PolarDouble};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

const PERCENTAGE_ONCE_REQUIRED: [&str; 16] = [
    "duration",
    "type",
    "basis_points",
    "created_at",
    "modified_at",
    "id",
    "metadata",
    "name",
    "code",
    "starts_at",
    "ends_at",
    "max_redemptions",
    "max_redemptions_per_customer",
    "redemptions_count",
    "organization_id",
    "products",
];

fn assert_has_all(body: &Value, required: &[&str]) {
    for property in required {
        assert!(
            body.get(property).is_some(),
            "missing required property {property} in {body}"
        );
    }
}

fn is_rfc3339_utc(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() >= 20 && b[4] == b'-' && b[10] == b'T' && text.ends_with('Z')
}

#[tokio::test]
async fn get_returns_the_seeded_discount_with_every_required_property() {
    let polar = PolarDouble::start().await;
    let id = polar.insert_discount(
        DiscountSeed::new("Spring")
            .code("SPRING")
            .max_redemptions(5),
    );

    let (status, body) = answer(Api::new(&polar).get(&format!("/discounts/{id}")).await).await;

    assert_eq!(status, 200);
    assert_has_all(&body, &PERCENTAGE_ONCE_REQUIRED);
    assert_eq!(body["id"], json!(id));
    assert_eq!(body["name"], "Spring");
    assert_eq!(body["code"], "SPRING");
    assert_eq!(body["max_redemptions"], 5);
    assert_eq!(body["type"], "percentage");
    assert_eq!(body["duration"], "once");
    assert_eq!(body["metadata"], json!({}));
    assert_eq!(body["products"], json!([]));
    assert_eq!(body["modified_at"], Value::Null);
    assert_eq!(body["organization_id"], json!(polar.organization_id()));
    assert!(is_rfc3339_utc(body["created_at"].as_str().unwrap()));
    assert_eq!(polar.discount(id), Some(body));
}

#[tokio::test]
async fn get_of_an_absent_discount_is_404_resource_not_found() {
    let polar = PolarDouble::start().await;

    let (status, body) = answer(
        Api::new(&polar)
            .get(&format!("/discounts/{}", Uuid::new_v4()))
            .await,
    )
    .await;

    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({ "error": "ResourceNotFound", "detail": "Not found" })
    );
}

#[tokio::test]
async fn get_with_an_id_that_is_not_a_uuid_is_422_uuid_parsing() {
    let polar = PolarDouble::start().await;

    let (status, body) = answer(Api::new(&polar).get("/discounts/not-a-uuid").await).await;

    assert_eq!(status, 422);
    assert_eq!(body["error"], "RequestValidationError");
    let detail = &body["detail"][0];
    assert_eq!(detail["loc"], json!(["path", "id"]));
    assert_eq!(detail["type"], "uuid_parsing");
    assert_eq!(detail["input"], "not-a-uuid");
    assert!(detail["msg"]
        .as_str()
        .unwrap()
        .starts_with("Input should be a valid UUID, "));
}

#[tokio::test]
async fn get_with_a_uuid_that_is_not_version_4_is_422_uuid_version() {
    let polar = PolarDouble::start().await;

    let (status, body) = answer(
        Api::new(&polar)
            .get(&format!("/discounts/{}", Uuid::nil()))
            .await,
    )
    .await;

    assert_eq!(status, 422);
    assert_eq!(body["detail"][0]["type"], "uuid_version");
    assert_eq!(body["detail"][0]["loc"], json!(["path", "id"]));
}

#[tokio::test]
async fn a_request_without_authorization_is_401_invalid_token() {
    let polar = PolarDouble::start().await;
    let id = polar.insert_discount(DiscountSeed::new("A"));
    let url = format!("{}/discounts/{id}", polar.base_url());

    let response = reqwest::Client::new().get(url).send().await.unwrap();

    assert_eq!(response.status(), 401);
    assert!(response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with(r#"Bearer error="invalid_token""#));
    let body = json(response).await;
    assert_eq!(body["error"], "invalid_token");
    assert!(body["error_description"].is_string());
}

#[tokio::test]
async fn a_token_other_than_the_configured_one_is_401_and_changes_nothing() {
    let config = DoubleConfig {
        token: Some("the-right-token".into()),
        ..DoubleConfig::default()
    };
    let polar = PolarDouble::start_with(config).await.unwrap();
    let id = polar.insert_discount(DiscountSeed::new("A").max_redemptions(3));
    let url = format!("{}/discounts/{id}", polar.base_url());
    let client = reqwest::Client::new();

    let wrong = client
        .patch(&url)
        .bearer_auth("a-wrong-token")
        .json(&json!({ "max_redemptions": 2 }))
        .send()
        .await
        .unwrap();
    let right = client
        .get(&url)
        .bearer_auth("the-right-token")
        .send()
        .await
        .unwrap();

    assert_eq!(wrong.status(), 401);
    assert_eq!(json(wrong).await["error"], "invalid_token");
    assert_eq!(right.status(), 200);
    assert_eq!(polar.max_redemptions(id), Some(Some(3)));
}

#[tokio::test]
async fn supported_polar_versions_are_accepted_and_others_are_404_not_found() {
    let polar = PolarDouble::start().await;
    let api = Api::new(&polar);
    let id = polar.insert_discount(DiscountSeed::new("A"));
    let path = format!("/discounts/{id}");

    for (version, expected) in [("2026-04", 200), ("2026-10", 200), ("2025-01", 404)] {
        let response = api
            .request(Method::GET, &path)
            .header("polar-version", version)
            .send()
            .await
            .unwrap();
        let (status, body) = answer(response).await;
        assert_eq!(status, expected, "Polar-Version {version}");
        if expected == 404 {
            assert_eq!(body, json!({ "detail": "Not Found" }));
        }
    }
}

#[tokio::test]
async fn an_unknown_path_is_404_detail_not_found() {
    let polar = PolarDouble::start().await;
    let api = Api::new(&polar);

    for path in ["/products/", "/discounts/a/b"] {
        let (status, body) = answer(api.get(path).await).await;
        assert_eq!(
            (status, body),
            (404, json!({ "detail": "Not Found" })),
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_method_the_route_does_not_have_is_405() {
    let polar = PolarDouble::start().await;
    let id = polar.insert_discount(DiscountSeed::new("A"));
    let api = Api::new(&polar);

    let response = api
        .request(Method::PUT, &format!("/discounts/{id}"))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, PATCH, DELETE");
    assert_eq!(
        json(response).await,
        json!({ "detail": "Method Not Allowed" })
    );
}

#[tokio::test]
async fn the_collection_without_its_trailing_slash_redirects_like_starlette() {
    let polar = PolarDouble::start().await;

    let response = Api::new(&polar).get("/discounts").await;

    assert_eq!(response.status(), 307);
    assert_eq!(
        response.headers()["location"].to_str().unwrap(),
        format!("{}/discounts/", polar.base_url())
    );
}

#[tokio::test]
async fn patch_sets_max_redemptions_and_bumps_modified_at() {
    let polar = PolarDouble::start().await;
    let id = polar.insert_discount(DiscountSeed::new("A").max_redemptions(3));

    let (status, body) = answer(
        Api::new(&polar)
            .patch(&format!("/discounts/{id}"), json!({ "max_redemptions": 2 }))
            .await,
    )
    .await;

    assert_eq!(status, 200);
    assert_eq!(body["max_redemptions"], 2);
    assert!(is_rfc3339_utc(body["modified_at"].as_str().unwrap()));
    assert_has_all(&body, &PERCENTAGE_ONCE_REQUIRED);
    assert_eq!(polar.max_redemptions(id), Some(Some(2)));
}

#[tokio::test]
async fn patch_with_null_max_redemptions_makes_the_discount_unlimited() {
    let polar = PolarDouble::start().await;
    let id = polar.insert_discount(DiscountSeed::new("A").max_redemptions(3));

    let response = Api::new(&polar)
        .patch(
            &format!("/discounts/{id}"),
            json!({ "max_redemptions": null }),
        )
        .await;

    assert_eq!(response.status(), 200);
    assert_eq!(polar.max_redemptions(id), Some(None));
}

#[tokio::test]
async fn patch_changes_only_the_fields_it_carries() {
    let polar = PolarDouble::start().await;
    let id = polar.insert_discount(DiscountSeed::new("A").code("OLD").max_redemptions(3));

    let (status, body) = answer(
        Api::new(&polar)
            .patch(
                &format!("/discounts/{id}"),
                json!({ "name": "Renamed", "code": null, "not_a_field": 1 }),
            )
            .await,
    )
    .await;

    assert_eq!(status, 200);
    assert_eq!(body["name"], "Renamed");
    assert_eq!(body["code"], Value::Null);
    assert_eq!(body["max_redemptions"], 3);
    assert!(body.get("not_a_field").is_none());
}

async fn patch_error(body: Value) -> (u16, Value) {
    let polar = PolarDouble::start().await;
    let id = polar.insert_discount(DiscountSeed::new("A").max_redemptions(3));
    let answer = answer(
        Api::new(&polar)
            .patch(&format!("/discounts/{id}"), body)
            .await,
    )
    .await;
    assert_eq!(
        polar.max_redemptions(id),
        Some(Some(3)),
        "a rejected PATCH applied"
    );
    answer
}

#[tokio::test]
async fn patch_below_one_is_rejected_with_422() {
    let (status, body) = patch_error(json!({ "max_redemptions": 0 })).await;

    assert_eq!(status, 422);
    assert_eq!(
        body,
        json!({
            "error": "RequestValidationError",
            "detail": [{
                "type": "greater_than_equal",
                "loc": ["body", "max_redemptions"],
                "msg": "Input should be greater than or equal to 1",
                "input": 0,
                "ctx": { "ge": 1 },
            }],
        })
    );
}

#[tokio::test]
async fn patch_above_the_int32_maximum_is_rejected_with_422() {
    let (status, body) = patch_error(json!({ "max_redemptions": 2_147_483_648_i64 })).await;

    assert_eq!(status, 422);
    assert_eq!(body["detail"][0]["type"], "less_than_equal");
    assert_eq!(body["detail"][0]["ctx"], json!({ "le": 2_147_483_647 }));
}

#[tokio::test]
async fn patch_with_a_non_integer_is_rejected_with_422() {
    for (input, kind) in [
        (json!([2]), "int_type"),
        (json!({}), "int_type"),
        (json!("two"), "int_parsing"),
        (json!(2.5), "int_from_float"),
    ] {
        let (status, body) = patch_error(json!({ "max_redemptions": input })).await;
        assert_eq!(status, 422, "{input}");
        assert_eq!(body["detail"][0]["type"], kind, "{input}");
        assert_eq!(body["detail"][0]["loc"], json!(["body", "max_redemptions"]));
    }
}

#[tokio::test]
async fn patch_with_a_name_or_code_that_is_not_a_string_is_rejected_with_422() {
    let (status, body) = patch_error(json!({ "name": 5, "code": ["X"] })).await;

    assert_eq!(status, 422);
    let detail = body["detail"].as_array().unwrap();
    assert_eq!(detail.len(), 2);
    assert_eq!(detail[0]["loc"], json!(["body", "name"]));
    assert_eq!(detail[1]["loc"], json!(["body", "code"]));
    assert!(detail.iter().all(|d| d["type"] == "string_type"));
}

#[tokio::test]
async fn patch_with_a_body_that_is_not_json_is_422_json_invalid() {
    let polar = PolarDouble::start().await;
    let id = polar.insert_discount(DiscountSeed::new("A").max_redemptions(3));

    let response = Api::new(&polar)
        .request(Method::PATCH, &format!("/discounts/{id}"))
        .header("content-type", "application/json")
        .body("{max_redemptions: 2")
        .send()
        .await
        .unwrap();
    let (status, body) = answer(response).await;

    assert_eq!(status, 422);
    assert_eq!(body["error"], "RequestValidationError");
    assert_eq!(body["detail"][0]["type"], "json_invalid");
    assert_eq!(body["detail"][0]["loc"][0], "body");
    assert_eq!(body["detail"][0]["msg"], "JSON decode error");
    assert_eq!(polar.max_redemptions(id), Some(Some(3)));
}

#[tokio::test]
async fn patch_without_a_body_is_422_missing() {
    let polar = PolarDouble::start().await;
    let id = polar.insert_discount(DiscountSeed::new("A"));

    let response = Api::new(&polar)
        .request(Method::PATCH, &format!("/discounts/{id}"))
        .send()
        .await
        .unwrap();
    let (status, body) = answer(response).await;

    assert_eq!(status, 422);
    assert_eq!(body["detail"][0]["type"], "missing");
    assert_eq!(body["detail"][0]["loc"], json!(["body"]));
}

#[tokio::test]
async fn patch_of_an_absent_discount_is_404_resource_not_found() {
    let polar = PolarDouble::start().await;

    let (status, body) = answer(
        Api::new(&polar)
            .patch(
                &format!("/discounts/{}", Uuid::new_v4()),
                json!({ "max_redemptions": 2 }),
            )
            .await,
    )
    .await;

    assert_eq!(status, 404);
    assert_eq!(body["error"], "ResourceNotFound");
}

#[tokio::test]
async fn delete_removes_the_discount_and_answers_204_with_an_empty_body() {
    let polar = PolarDouble::start().await;
    let id = polar.insert_discount(DiscountSeed::new("A").max_redemptions(1));
    let api = Api::new(&polar);

    let response = api.delete(&format!("/discounts/{id}")).await;

    assert_eq!(response.status(), 204);
    assert!(response.bytes().await.unwrap().is_empty());
    assert_eq!(polar.max_redemptions(id), None);
    assert_eq!(polar.discount(id), None);
    assert_eq!(api.get(&format!("/discounts/{id}")).await.status(), 404);
}

#[tokio::test]
async fn delete_of_an_absent_discount_is_404_and_of_a_bad_id_is_422() {
    let polar = PolarDouble::start().await;
    let api = Api::new(&polar);

    let (absent, body) = answer(api.delete(&format!("/discounts/{}", Uuid::new_v4())).await).await;
    let bad = api.delete("/discounts/123").await.status();

    assert_eq!(absent, 404);
    assert_eq!(body["error"], "ResourceNotFound");
    assert_eq!(bad, 422);
}

#[tokio::test]
async fn post_creates_a_percentage_discount_with_201() {
    let polar = PolarDouble::start().await;

    let (status, body) = answer(
        Api::new(&polar)
            .post(
                "/discounts/",
                json!({
                    "name": "Launch",
                    "type": "percentage",
                    "basis_points": 2550,
                    "duration": "forever",
                    "code": "LAUNCH",
                    "max_redemptions": 10,
                }),
            )
            .await,
    )
    .await;

    assert_eq!(status, 201);
    assert_has_all(&body, &PERCENTAGE_ONCE_REQUIRED);
    assert_eq!(body["basis_points"], 2550);
    assert_eq!(body["duration"], "forever");
    let id: Uuid = body["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(id.get_version_num(), 4);
    assert_eq!(polar.max_redemptions(id), Some(Some(10)));
}

#[tokio::test]
async fn post_creates_a_fixed_repeating_discount_with_every_required_property() {
    let polar = PolarDouble::start().await;

    let (status, body) = answer(
        Api::new(&polar)
            .post(
                "/discounts/",
                json!({
                    "name": "Loyalty",
                    "type": "fixed",
                    "amount": 500,
                    "currency": "eur",
                    "duration": "repeating",
                    "duration_in_months": 3,
                }),
            )
            .await,
    )
    .await;

    assert_eq!(status, 201);
    let mut required = PERCENTAGE_ONCE_REQUIRED.to_vec();
    required.retain(|p| *p != "basis_points");
    required.extend(["amount", "currency", "amounts", "duration_in_months"]);
    assert_has_all(&body, &required);
    assert_eq!(body["amounts"], json!({ "eur": 500 }));
    assert_eq!(body["duration_in_months"], 3);
    assert_eq!(body["max_redemptions"], Value::Null);
}

#[tokio::test]
async fn post_without_required_fields_is_rejected_with_422() {
    let polar = PolarDouble::start().await;
    let api = Api::new(&polar);

    let (status, body) = answer(
        api.post(
            "/discounts/",
            json!({ "type": "percentage", "duration": "once" }),
        )
        .await,
    )
    .await;
    assert_eq!(status, 422);
    let locs: Vec<&Value> = body["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["loc"])
        .collect();
    assert_eq!(
        locs,
        [
            &json!(["body", "percentage", "name"]),
            &json!(["body", "percentage", "basis_points"])
        ]
    );

    let (status, body) = answer(
        api.post("/discounts/", json!({ "name": "x", "duration": "once" }))
            .await,
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(body["detail"][0]["type"], "union_tag_not_found");

    let (status, body) = answer(
        api.post(
            "/discounts/",
            json!({ "name": "x", "type": "percentage", "basis_points": 100, "duration": "repeating" }),
        )
        .await,
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(body["detail"][0]["type"], "value_error");

    let (status, body) = answer(
        api.post(
            "/discounts/",
            json!({ "name": "x", "type": "percentage", "basis_points": 100, "duration": "once", "max_redemptions": 0 }),
        )
        .await,
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(
        body["detail"][0]["loc"],
        json!(["body", "percentage", "max_redemptions"])
    );
    assert_eq!(polar.requests().len(), 4);
}

#[tokio::test]
async fn list_pages_through_discounts_newest_first() {
    let polar = PolarDouble::start().await;
    let ids: Vec<Uuid> = (0..5)
        .map(|i| polar.insert_discount(DiscountSeed::new(format!("D{i}"))))
        .collect();
    let api = Api::new(&polar);

    let (status, first) = answer(api.get("/discounts/?limit=2").await).await;
    let (_, last) = answer(api.get("/discounts/?limit=2&page=3").await).await;

    assert_eq!(status, 200);
    assert_eq!(
        first["pagination"],
        json!({ "total_count": 5, "max_page": 3 })
    );
    assert_eq!(first["items"][0]["id"], json!(ids[4]));
    assert_eq!(first["items"][1]["id"], json!(ids[3]));
    assert_eq!(last["items"].as_array().unwrap().len(), 1);
    assert_eq!(last["items"][0]["id"], json!(ids[0]));

    let (_, by_name) = answer(api.get("/discounts/?query=d2").await).await;
    assert_eq!(by_name["pagination"]["total_count"], 1);
    assert_eq!(api.get("/discounts/?page=0").await.status(), 422);
}

#[tokio::test]
async fn the_request_log_records_every_request_in_order_with_its_answer() {
    let polar = PolarDouble::start().await;
    let id = polar.insert_discount(DiscountSeed::new("A").max_redemptions(3));
    let api = Api::new(&polar);
    let path = format!("/discounts/{id}");

    api.request(Method::GET, &path)
        .header("polar-version", "2026-04")
        .send()
        .await
        .unwrap();
    api.patch(&path, json!({ "max_redemptions": 0 })).await;
    api.patch(&path, json!({ "max_redemptions": 2 })).await;
    reqwest::Client::new()
        .delete(format!("{}{path}?force=1", polar.base_url()))
        .send()
        .await
        .unwrap();

    let log = polar.requests();
    let summary: Vec<(&str, &str, Option<u16>)> = log
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str(), r.status))
        .collect();
    let v1 = format!("/v1{path}");
    let with_query = format!("{v1}?force=1");
    assert_eq!(
        summary,
        [
            ("GET", v1.as_str(), Some(200)),
            ("PATCH", v1.as_str(), Some(422)),
            ("PATCH", v1.as_str(), Some(200)),
            ("DELETE", with_query.as_str(), Some(401)),
        ]
    );
    assert_eq!(log[0].polar_version.as_deref(), Some("2026-04"));
    assert_eq!(log[0].authorization, Some(format!("Bearer {TOKEN}")));
    assert_eq!(log[3].authorization, None);
    assert_eq!(log[2].body, r#"{"max_redemptions":2}"#);
    assert!(log
        .windows(2)
        .all(|w| w[0].received_at_us <= w[1].received_at_us));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_each_applied_and_logged() {
    let polar = PolarDouble::start().await;
    let ids: Vec<Uuid> = (0..20)
        .map(|_| polar.insert_discount(DiscountSeed::new("A").max_redemptions(10)))
        .collect();
    let api = std::sync::Arc::new(Api::new(&polar));

    let tasks: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let api = api.clone();
            let path = format!("/discounts/{id}");
            tokio::spawn(async move {
                api.patch(&path, json!({ "max_redemptions": i + 1 }))
                    .await
                    .status()
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }

    for (i, id) in ids.iter().enumerate() {
        assert_eq!(polar.max_redemptions(*id), Some(Some(i as i64 + 1)));
    }
    assert_eq!(polar.requests().len(), 20);
}
