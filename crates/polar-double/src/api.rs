//! The Polar API itself: everything that is not the admin API.
//!
//! Checks run in the order Polar's stack runs them: the auth middleware rejects a bad
//! token (401), the rate-limit middleware counts the organization's requests (429), the
//! router resolves the version and path (404/405/307), then the endpoint decodes the
//! body (422 `json_invalid`), requires a token (401), validates path and body (422) and
//! finally looks the discount up (404 `ResourceNotFound`).

use std::cmp::Ordering;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::model::{DiscountCreate, DiscountUpdate};
use crate::state::{Shared, State};
use crate::validation::{self, expected_list, Errors};

const SUPPORTED_VERSIONS: [&str; 2] = ["2026-04", "2026-10"];
const SORT_KEYS: [&str; 10] = [
    "created_at",
    "-created_at",
    "name",
    "-name",
    "code",
    "-code",
    "redemptions_count",
    "-redemptions_count",
    "ends_at",
    "-ends_at",
];
const INVALID_TOKEN: &str =
    "The access token provided is expired, revoked, malformed, or invalid for other reasons.";

pub(crate) struct ApiRequest {
    pub(crate) method: Method,
    /// Percent-encoded, as received.
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: ReplyBody,
}

#[derive(Debug)]
pub(crate) enum ReplyBody {
    Empty,
    Json(Value),
    Text(String),
}

impl Reply {
    pub(crate) fn json(status: StatusCode, body: Value) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: ReplyBody::Json(body),
        }
    }

    pub(crate) fn empty(status: StatusCode) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: ReplyBody::Empty,
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    /// Starlette's answer for a path (or API version) it has no route for.
    pub(crate) fn route_not_found() -> Reply {
        Reply::json(StatusCode::NOT_FOUND, json!({ "detail": "Not Found" }))
    }

    fn resource_not_found() -> Reply {
        Reply::json(
            StatusCode::NOT_FOUND,
            json!({ "error": "ResourceNotFound", "detail": "Not found" }),
        )
    }

    fn invalid_token() -> Reply {
        Reply::json(
            StatusCode::UNAUTHORIZED,
            json!({ "error": "invalid_token", "error_description": INVALID_TOKEN }),
        )
        .header(
            "www-authenticate",
            format!(r#"Bearer error="invalid_token", error_description="{INVALID_TOKEN}""#),
        )
    }

    fn validation(error: &str, errors: Errors) -> Reply {
        Reply::json(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({ "error": error, "detail": errors.into_vec() }),
        )
    }

    /// The answer a fault asks for, verbatim.
    pub(crate) fn fault(status: u16, body: Option<String>, retry_after: Option<u64>) -> Reply {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = match body {
            None => ReplyBody::Empty,
            Some(text) => match serde_json::from_str(&text) {
                Ok(json) => ReplyBody::Json(json),
                Err(_) => ReplyBody::Text(text),
            },
        };
        let reply = Reply {
            status,
            headers: Vec::new(),
            body,
        };
        match retry_after {
            Some(secs) => reply.header("retry-after", secs.to_string()),
            None => reply,
        }
    }
}

enum Route {
    Collection,
    Item(String),
    /// Starlette's `redirect_slashes`: the path matches a route once a trailing slash is
    /// added or removed.
    Redirect(String),
    NotFound,
}

fn route(path: &str) -> Route {
    let Some(rest) = path.strip_prefix("/v1/discounts") else {
        return Route::NotFound;
    };
    match rest {
        "" => Route::Redirect("/v1/discounts/".to_owned()),
        "/" => Route::Collection,
        _ => {
            let Some(rest) = rest.strip_prefix('/') else {
                return Route::NotFound;
            };
            match rest.split_once('/') {
                None => Route::Item(percent_decode(rest)),
                Some((id, "")) if !id.is_empty() => {
                    Route::Redirect(path.trim_end_matches('/').to_owned())
                }
                Some(_) => Route::NotFound,
            }
        }
    }
}

/// The discount a request is about, for matching faults.
pub(crate) fn discount_id_in_path(path: &str) -> Option<Uuid> {
    match route(path) {
        Route::Item(id) => Uuid::parse_str(&id).ok(),
        _ => None,
    }
}

enum Caller {
    Organization,
    Anonymous,
}

fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<Caller, Reply> {
    let Some(value) = headers.get("authorization") else {
        return Ok(Caller::Anonymous);
    };
    let value = value.to_str().map_err(|_| Reply::invalid_token())?;
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Caller::Anonymous);
    }
    let token = token.trim();
    let accepted = match &shared.config.token {
        Some(expected) => token == expected,
        None => !token.is_empty(),
    };
    if accepted {
        Ok(Caller::Organization)
    } else {
        Err(Reply::invalid_token())
    }
}

pub(crate) fn handle(shared: &Shared, request: &ApiRequest) -> Reply {
    let caller = match authenticate(shared, &request.headers) {
        Ok(caller) => caller,
        Err(reply) => return reply,
    };
    // One lock for the whole request: each request applies atomically.
    let mut state = shared.lock();
    if let (Caller::Organization, Some(limit)) = (&caller, shared.config.rate_limit_per_minute) {
        if let Err(retry_after) = state.admit(limit) {
            return Reply::empty(StatusCode::TOO_MANY_REQUESTS)
                .header("retry-after", retry_after.to_string());
        }
    }
    let version = request.headers.get("polar-version");
    if version.is_some_and(|v| !SUPPORTED_VERSIONS.iter().any(|s| v == s)) {
        return Reply::route_not_found();
    }

    let endpoint = Endpoint {
        shared,
        request,
        caller,
    };
    let method = &request.method;
    match route(&request.path) {
        Route::Collection if method == Method::GET => endpoint.list(&state),
        Route::Collection if method == Method::POST => endpoint.create(&mut state),
        Route::Collection => method_not_allowed("GET, POST"),
        Route::Item(id) if method == Method::GET => endpoint.get(&state, &id),
        Route::Item(id) if method == Method::PATCH => endpoint.update(&mut state, &id),
        Route::Item(id) if method == Method::DELETE => endpoint.delete(&mut state, &id),
        Route::Item(_) => method_not_allowed("GET, PATCH, DELETE"),
        Route::Redirect(path) => redirect(request, &path),
        Route::NotFound => Reply::route_not_found(),
    }
}

fn method_not_allowed(allow: &str) -> Reply {
    Reply::json(
        StatusCode::METHOD_NOT_ALLOWED,
        json!({ "detail": "Method Not Allowed" }),
    )
    .header("allow", allow)
}

fn redirect(request: &ApiRequest, path: &str) -> Reply {
    let host = request
        .headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let query = request
        .query
        .as_deref()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    Reply::empty(StatusCode::TEMPORARY_REDIRECT)
        .header("location", format!("http://{host}{path}{query}"))
}

/// What FastAPI made of a request body before validating it.
enum BodyInput {
    Missing,
    Json(Value),
    /// A body whose content type is not JSON: validated as the raw text.
    Raw(String),
}

struct Endpoint<'a> {
    shared: &'a Shared,
    request: &'a ApiRequest,
    caller: Caller,
}

impl Endpoint<'_> {
    fn require_token(&self) -> Result<(), Reply> {
        match self.caller {
            Caller::Organization => Ok(()),
            Caller::Anonymous => Err(Reply::invalid_token()),
        }
    }

    fn decode_body(&self) -> Result<BodyInput, Reply> {
        let body = &self.request.body;
        if body.is_empty() {
            return Ok(BodyInput::Missing);
        }
        let content_type = self.request.headers.get("content-type");
        let is_json = content_type.is_none_or(|ct| {
            let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
            let essence = ct.split(';').next().unwrap_or("").trim();
            essence
                .strip_prefix("application/")
                .is_some_and(|sub| sub == "json" || sub.ends_with("+json"))
        });
        if !is_json {
            return Ok(BodyInput::Raw(String::from_utf8_lossy(body).into_owned()));
        }
        serde_json::from_slice(body)
            .map(BodyInput::Json)
            .map_err(|e| json_invalid(body, &e))
    }

    /// The body as an object, or the error pydantic reports for anything else.
    fn body_object<'b>(
        &self,
        body: &'b BodyInput,
        errors: &mut Errors,
    ) -> Option<&'b Map<String, Value>> {
        let input = match body {
            BodyInput::Json(Value::Object(object)) => return Some(object),
            BodyInput::Missing => {
                errors.missing(vec![json!("body")], Value::Null);
                return None;
            }
            BodyInput::Json(other) => other.clone(),
            BodyInput::Raw(text) => Value::from(text.as_str()),
        };
        errors.push(
            "model_attributes_type",
            vec![json!("body")],
            "Input should be a valid dictionary or object to extract fields from",
            input,
            None,
        );
        None
    }

    fn get(&self, state: &State, raw_id: &str) -> Reply {
        if let Err(reply) = self.require_token() {
            return reply;
        }
        let mut errors = Errors::default();
        let Some(id) = validation::uuid4(raw_id, path_id_loc(), &mut errors) else {
            return Reply::validation("RequestValidationError", errors);
        };
        match state.discount(id) {
            Some(discount) => Reply::json(StatusCode::OK, discount.to_json()),
            None => Reply::resource_not_found(),
        }
    }

    fn update(&self, state: &mut State, raw_id: &str) -> Reply {
        let body = match self.decode_body() {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        if let Err(reply) = self.require_token() {
            return reply;
        }
        let mut errors = Errors::default();
        let id = validation::uuid4(raw_id, path_id_loc(), &mut errors);
        let update = self
            .body_object(&body, &mut errors)
            .map(|object| DiscountUpdate::parse(object, &mut errors));
        let (Some(id), Some(update), true) = (id, update, errors.is_empty()) else {
            return Reply::validation("RequestValidationError", errors);
        };
        match state.discount_mut(id) {
            Some(discount) => {
                update.apply(discount);
                Reply::json(StatusCode::OK, discount.to_json())
            }
            None => Reply::resource_not_found(),
        }
    }

    fn delete(&self, state: &mut State, raw_id: &str) -> Reply {
        if let Err(reply) = self.require_token() {
            return reply;
        }
        let mut errors = Errors::default();
        let Some(id) = validation::uuid4(raw_id, path_id_loc(), &mut errors) else {
            return Reply::validation("RequestValidationError", errors);
        };
        match state.remove(id) {
            Some(_) => Reply::empty(StatusCode::NO_CONTENT),
            None => Reply::resource_not_found(),
        }
    }

    fn create(&self, state: &mut State) -> Reply {
        let body = match self.decode_body() {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        if let Err(reply) = self.require_token() {
            return reply;
        }
        let mut errors = Errors::default();
        let create = match &body {
            BodyInput::Json(value @ Value::Object(_)) => {
                DiscountCreate::parse(value, self.shared.organization_id, &mut errors)
            }
            other => {
                self.body_object(other, &mut errors);
                None
            }
        };
        let Some(create) = create else {
            return Reply::validation("RequestValidationError", errors);
        };
        // The double has no products, so any product id is one Polar would not find.
        if !create.products.is_empty() {
            for (i, product) in create.products.iter().enumerate() {
                errors.push(
                    "value_error",
                    vec![json!("body"), json!("products"), json!(i)],
                    "Product does not exist.",
                    json!(product),
                    None,
                );
            }
            return Reply::validation("PolarRequestValidationError", errors);
        }
        let id = create.discount.id;
        state.put(create.discount);
        let created = state.discount(id).map(|d| d.to_json());
        Reply::json(StatusCode::CREATED, created.unwrap_or_default())
    }

    fn list(&self, state: &State) -> Reply {
        if let Err(reply) = self.require_token() {
            return reply;
        }
        let params = query_pairs(self.request.query.as_deref().unwrap_or(""));
        let mut errors = Errors::default();
        let mut page = 1;
        let mut limit = 10;
        let mut name_filter = None;
        let mut sorting = Vec::new();
        let mut organizations = Vec::new();
        for (key, value) in &params {
            let loc = vec![json!("query"), json!(key)];
            match key.as_str() {
                "page" => page = validation::query_int_gt(value, 0, loc, &mut errors).unwrap_or(1),
                "limit" => {
                    limit = validation::query_int_gt(value, 0, loc, &mut errors).unwrap_or(10)
                }
                "query" => name_filter = Some(value.to_lowercase()),
                "organization_id" => {
                    organizations.extend(validation::uuid4(value, loc, &mut errors));
                }
                "sorting" => {
                    if SORT_KEYS.contains(&value.as_str()) {
                        sorting.push(value.clone());
                    } else {
                        let mut loc = loc;
                        loc.push(json!(sorting.len()));
                        let expected = expected_list(&SORT_KEYS);
                        errors.push(
                            "enum",
                            loc,
                            format!("Input should be {expected}"),
                            json!(value),
                            Some(json!({ "expected": expected })),
                        );
                    }
                }
                _ => {}
            }
        }
        if !errors.is_empty() {
            return Reply::validation("RequestValidationError", errors);
        }
        let limit = limit.min(100);
        if sorting.is_empty() {
            sorting.push("-created_at".to_owned());
        }

        let mut matching: Vec<_> = state
            .discounts()
            .filter(|d| organizations.is_empty() || organizations.contains(&d.organization_id))
            .filter(|d| {
                name_filter
                    .as_deref()
                    .is_none_or(|q| d.name.to_lowercase().contains(q))
            })
            .collect();
        matching.sort_by(|a, b| {
            sorting
                .iter()
                .map(|key| {
                    let (field, descending) = match key.strip_prefix('-') {
                        Some(field) => (field, true),
                        None => (key.as_str(), false),
                    };
                    let order = match field {
                        "name" => a.name.cmp(&b.name),
                        "code" => a.code.cmp(&b.code),
                        "redemptions_count" => a.redemptions_count.cmp(&b.redemptions_count),
                        "ends_at" => a.ends_at.cmp(&b.ends_at),
                        _ => (&a.created_at, a.seq).cmp(&(&b.created_at, b.seq)),
                    };
                    if descending {
                        order.reverse()
                    } else {
                        order
                    }
                })
                .find(|o| *o != Ordering::Equal)
                .unwrap_or(Ordering::Equal)
        });
        let total = matching.len() as i64;
        let skip = usize::try_from((page - 1).saturating_mul(limit)).unwrap_or(usize::MAX);
        let items: Vec<Value> = matching
            .into_iter()
            .skip(skip)
            .take(limit as usize)
            .map(|d| d.to_json())
            .collect();
        Reply::json(
            StatusCode::OK,
            json!({
                "items": items,
                "pagination": { "total_count": total, "max_page": (total + limit - 1) / limit },
            }),
        )
    }
}

fn path_id_loc() -> Vec<Value> {
    vec![json!("path"), json!("id")]
}

/// FastAPI's answer to a body that is not JSON: the error position and Python's message
/// become `loc[1]` and `ctx.error`.
fn json_invalid(body: &[u8], error: &serde_json::Error) -> Reply {
    let line_start: usize = body
        .split(|b| *b == b'\n')
        .take(error.line().saturating_sub(1))
        .map(|line| line.len() + 1)
        .sum();
    let position = line_start + error.column().saturating_sub(1);
    let message = match error.classify() {
        serde_json::error::Category::Eof => "Expecting value".to_owned(),
        _ => {
            let text = error.to_string();
            text.split(" at line ").next().unwrap_or(&text).to_owned()
        }
    };
    let mut errors = Errors::default();
    errors.push(
        "json_invalid",
        vec![json!("body"), json!(position)],
        "JSON decode error",
        json!({}),
        Some(json!({ "error": message })),
    );
    Reply::validation("RequestValidationError", errors)
}

fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                percent_decode(&key.replace('+', " ")),
                percent_decode(&value.replace('+', " ")),
            )
        })
        .collect()
}

fn percent_decode(input: &str) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_starlette() {
        assert!(matches!(route("/v1/discounts/"), Route::Collection));
        assert!(matches!(route("/v1/discounts/abc"), Route::Item(id) if id == "abc"));
        assert!(matches!(route("/v1/discounts/a%20b"), Route::Item(id) if id == "a b"));
        assert!(matches!(route("/v1/discounts"), Route::Redirect(p) if p == "/v1/discounts/"));
        assert!(
            matches!(route("/v1/discounts/abc/"), Route::Redirect(p) if p == "/v1/discounts/abc")
        );
        assert!(matches!(route("/v1/discounts/abc/x"), Route::NotFound));
        assert!(matches!(route("/v1/discountsx"), Route::NotFound));
        assert!(matches!(route("/v1/products/"), Route::NotFound));
    }

    #[test]
    fn query_strings_are_decoded() {
        assert_eq!(
            query_pairs("query=spring+sale&sorting=-name&x=%41"),
            vec![
                ("query".to_owned(), "spring sale".to_owned()),
                ("sorting".to_owned(), "-name".to_owned()),
                ("x".to_owned(), "A".to_owned()),
            ]
        );
    }
}
