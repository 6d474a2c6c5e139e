//! `/__double/...`: seeding, inspection and fault injection for other processes. No
//! authentication, and not recorded as Polar requests.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::json;
use uuid::Uuid;

use crate::state::Shared;
use crate::{DiscountSeed, Fault};

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/__double/discounts/{id}",
            put(put_discount).get(get_discount),
        )
        .route("/__double/requests", get(requests))
        .route("/__double/faults", post(add_fault).delete(clear_faults))
}

async fn put_discount(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Json(mut seed): Json<DiscountSeed>,
) -> Response {
    let id = match Uuid::parse_str(&id) {
        Ok(id) => id,
        Err(e) => return unprocessable(e.to_string()),
    };
    seed.id = Some(id);
    match shared.insert_discount(seed) {
        Ok(id) => match shared.with_discount(id, |d| d.to_json()) {
            Some(discount) => (StatusCode::CREATED, Json(discount)).into_response(),
            None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        },
        Err(message) => unprocessable(message),
    }
}

async fn get_discount(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let discount = Uuid::parse_str(&id)
        .ok()
        .and_then(|id| shared.with_discount(id, |d| d.to_json()));
    match discount {
        Some(discount) => Json(discount).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "detail": "Not Found" })),
        )
            .into_response(),
    }
}

async fn requests(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.requests()).into_response()
}

async fn add_fault(State(shared): State<Arc<Shared>>, Json(fault): Json<Fault>) -> StatusCode {
    shared.inject(fault);
    StatusCode::NO_CONTENT
}

async fn clear_faults(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.clear_faults();
    StatusCode::NO_CONTENT
}

fn unprocessable(message: String) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({ "detail": message })),
    )
        .into_response()
}
