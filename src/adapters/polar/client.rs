use std::sync::RwLock;
use std::time::{Duration, Instant};

use reqwest::{header, RequestBuilder, Response, StatusCode};
use tracing::{info, warn};

use super::error::{Operation, PolarError};
use super::model::{Discount, ErrorBody, MaxRedemptionsUpdate};
use crate::adapters::fetch_token;
use crate::config::{AccessToken, PolarApiUrl};
use crate::deadline::Deadline;
use crate::domain::DiscountId;
use crate::ports::{DiscountLookup, Discounts, Lookup, PolarFailure, WriteOutcome};

/// Pins the response shapes the models were written against.
const POLAR_API_VERSION: &str = "2026-04";
/// Kept free between a request's timeout and the deadline.
const LANDING_MARGIN: Duration = Duration::from_secs(1);
/// Shorter than this, a request would time out more often than it answers.
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_millis(500);
/// Longest piece of an error body kept for logs.
const MAX_ERROR_BODY: usize = 512;

#[derive(Debug, Clone, Copy)]
pub struct HttpTimeouts {
    pub connect: Duration,
    pub request: Duration,
}

/// A token read from SSM is read again after a 401 (it may have been rotated), but no
/// more often than this, so a wrong token does not turn every request into an SSM call.
const TOKEN_REREAD_INTERVAL: Duration = Duration::from_secs(60);

/// Polar's discount API over HTTPS, built once per container.
#[derive(Debug)]
pub struct PolarClient {
    http: reqwest::Client,
    base_url: String,
    token: RwLock<AccessToken>,
    request_timeout: Duration,
    rotation: Option<TokenRotation>,
}

/// What a request with the current token came to.
enum Sent {
    Answered(Response),
    /// Refused with a 401, and another token is now loaded.
    TokenReplaced,
}

/// Where the token can be read again when Polar refuses it.
#[derive(Debug)]
struct TokenRotation {
    ssm: aws_sdk_ssm::Client,
    parameter: String,
    last_read: tokio::sync::Mutex<Option<Instant>>,
}

impl PolarClient {
    pub fn new(
        base_url: &PolarApiUrl,
        token: AccessToken,
        timeouts: HttpTimeouts,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .timeout(timeouts.request)
            .user_agent(concat!("polar-discount-sync/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            base_url: base_url.as_str().trim_end_matches('/').to_owned(),
            token: RwLock::new(token),
            request_timeout: timeouts.request,
            rotation: None,
        })
    }

    /// After a 401, reads the token again from this SSM parameter and retries once.
    pub fn with_token_rotation(mut self, ssm: aws_sdk_ssm::Client, parameter: String) -> Self {
        self.rotation = Some(TokenRotation {
            ssm,
            parameter,
            last_read: tokio::sync::Mutex::new(None),
        });
        self
    }

    fn current_token(&self) -> AccessToken {
        self.token
            .read()
            .expect("no writer panics holding the token")
            .clone()
    }

    /// Whether a token other than `refused` is now available, reading SSM if due.
    async fn rotated_token(&self, refused: &AccessToken) -> bool {
        if self.current_token() != *refused {
            return true;
        }
        let Some(rotation) = &self.rotation else {
            return false;
        };
        let mut last_read = rotation.last_read.lock().await;
        if last_read.is_some_and(|at| at.elapsed() < TOKEN_REREAD_INTERVAL) {
            return false;
        }
        *last_read = Some(Instant::now());
        match fetch_token(&rotation.ssm, &rotation.parameter).await {
            Ok(token) if token != *refused => {
                info!(parameter = %rotation.parameter, "Polar refused the token; using the one now in SSM");
                *self
                    .token
                    .write()
                    .expect("no writer panics holding the token") = token;
                true
            }
            Ok(_) => false,
            Err(err) => {
                warn!(error = %crate::error_chain(&err), "could not read the token again from SSM");
                false
            }
        }
    }

    async fn send(
        &self,
        request: RequestBuilder,
        token: &AccessToken,
    ) -> Result<Response, reqwest::Error> {
        request
            .bearer_auth(token.expose())
            .header("Polar-Version", POLAR_API_VERSION)
            .header(header::ACCEPT, "application/json")
            .send()
            .await
    }

    fn discount_url(&self, id: DiscountId) -> String {
        format!("{}/discounts/{id}", self.base_url)
    }

    /// The request, with a timeout that leaves `LANDING_MARGIN` before the deadline.
    fn within(
        &self,
        deadline: Deadline,
        operation: Operation,
        discount: DiscountId,
        request: RequestBuilder,
    ) -> Result<RequestBuilder, PolarError> {
        let remaining = deadline.remaining();
        match timeout_within(self.request_timeout, remaining) {
            Some(timeout) => Ok(request.timeout(timeout)),
            None => Err(PolarError::TooLate {
                operation,
                discount,
                remaining,
            }),
        }
    }

    /// Sends with the current token. A 401 is not sent again here: when another token is
    /// now loaded, the caller's retry sends it, through the rate budget and with a timeout
    /// taken from the deadline as it is after the SSM read.
    async fn send_authorized(&self, request: RequestBuilder) -> Result<Sent, reqwest::Error> {
        let token = self.current_token();
        let response = self.send(request, &token).await?;
        if response.status() == StatusCode::UNAUTHORIZED && self.rotated_token(&token).await {
            return Ok(Sent::TokenReplaced);
        }
        Ok(Sent::Answered(response))
    }

    /// Sends a PATCH or DELETE and applies the write rule to what comes back.
    async fn write(
        &self,
        operation: Operation,
        discount: DiscountId,
        request: RequestBuilder,
    ) -> WriteOutcome {
        let transport = |source| PolarError::Transport {
            operation,
            discount,
            source,
        };
        let response = match self.send_authorized(request).await {
            Ok(Sent::Answered(response)) => response,
            Ok(Sent::TokenReplaced) => {
                return WriteOutcome::NotApplied(
                    PolarError::TokenReplaced {
                        operation,
                        discount,
                    }
                    .into(),
                )
            }
            // Refused before anything was sent.
            Err(source) if source.is_connect() => {
                return WriteOutcome::NotApplied(transport(source).into())
            }
            Err(source) => return WriteOutcome::Unknown(transport(source).into()),
        };
        let status = response.status();
        if status.is_success() {
            return WriteOutcome::Applied;
        }
        let retry_after = retry_after(&response);
        let body = match response.text().await {
            Ok(body) => body,
            Err(source) => return WriteOutcome::Unknown(transport(source).into()),
        };
        if status == StatusCode::NOT_FOUND && is_resource_not_found(&body) {
            return WriteOutcome::Gone;
        }
        let refusal = error_for(operation, discount, status, retry_after, &body).into();
        if proves_refusal(status, &body) {
            WriteOutcome::NotApplied(refusal)
        } else {
            WriteOutcome::Unknown(refusal)
        }
    }
}

/// The timeout for a request starting with `remaining` before the deadline: the configured
/// one, shortened so that it ends `LANDING_MARGIN` before the deadline. A request our client
/// gives up on may still be applied shortly after; the margin keeps that inside the
/// invocation (and its lease). `None` when too little would be left to be worth sending.
fn timeout_within(configured: Duration, remaining: Duration) -> Option<Duration> {
    let timeout = remaining.checked_sub(LANDING_MARGIN)?.min(configured);
    (timeout >= MIN_REQUEST_TIMEOUT).then_some(timeout)
}

/// The write rule: only an answer that shows the request was turned away means it was
/// not applied. Rate limiting and authentication happen before Polar changes anything;
/// any other 4xx counts only with Polar's own JSON error body. A 5xx or a 4xx page from
/// something in between may come after Polar applied the write.
fn proves_refusal(status: StatusCode, body: &str) -> bool {
    match status {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => true,
        s if s.is_client_error() => {
            serde_json::from_str::<serde_json::Value>(body).is_ok_and(|v| v.is_object())
        }
        _ => false,
    }
}

fn error_for(
    operation: Operation,
    discount: DiscountId,
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &str,
) -> PolarError {
    let body = excerpt(body);
    match status {
        StatusCode::NOT_FOUND => PolarError::UnknownRoute {
            operation,
            discount,
            body,
        },
        StatusCode::TOO_MANY_REQUESTS => PolarError::RateLimited {
            operation,
            discount,
            retry_after,
        },
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => PolarError::Unauthorized {
            operation,
            discount,
            status,
            body,
        },
        s if s.is_server_error() => PolarError::Server {
            operation,
            discount,
            status,
            body,
        },
        _ => PolarError::Rejected {
            operation,
            discount,
            status,
            body,
        },
    }
}

impl DiscountLookup for PolarClient {
    async fn get(&self, id: DiscountId, deadline: Deadline) -> Result<Lookup, PolarFailure> {
        let operation = Operation::Get;
        let request = self.within(
            deadline,
            operation,
            id,
            self.http.get(self.discount_url(id)),
        )?;
        let transport = |source| PolarError::Transport {
            operation,
            discount: id,
            source,
        };
        let response = match self.send_authorized(request).await.map_err(transport)? {
            Sent::Answered(response) => response,
            Sent::TokenReplaced => {
                return Err(PolarError::TokenReplaced {
                    operation,
                    discount: id,
                }
                .into())
            }
        };
        let status = response.status();
        if status.is_success() {
            let bytes = response.bytes().await.map_err(transport)?;
            let discount: Discount =
                serde_json::from_slice(&bytes).map_err(|source| PolarError::Decode {
                    operation,
                    discount: id,
                    source,
                })?;
            return Ok(Lookup::Found(discount.into()));
        }
        let retry_after = retry_after(&response);
        let body = response.text().await.map_err(transport)?;
        if status == StatusCode::NOT_FOUND && is_resource_not_found(&body) {
            return Ok(Lookup::Deleted);
        }
        Err(error_for(operation, id, status, retry_after, &body).into())
    }
}

impl Discounts for PolarClient {
    async fn set_max_redemptions(
        &self,
        id: DiscountId,
        max_redemptions: i64,
        deadline: Deadline,
    ) -> WriteOutcome {
        let request = self
            .http
            .patch(self.discount_url(id))
            .json(&MaxRedemptionsUpdate { max_redemptions });
        match self.within(deadline, Operation::Update, id, request) {
            Ok(request) => self.write(Operation::Update, id, request).await,
            Err(too_late) => WriteOutcome::NotApplied(too_late.into()),
        }
    }

    async fn delete(&self, id: DiscountId, deadline: Deadline) -> WriteOutcome {
        let request = self.http.delete(self.discount_url(id));
        match self.within(deadline, Operation::Delete, id, request) {
            Ok(request) => self.write(Operation::Delete, id, request).await,
            Err(too_late) => WriteOutcome::NotApplied(too_late.into()),
        }
    }
}

fn is_resource_not_found(body: &str) -> bool {
    serde_json::from_str::<ErrorBody>(body)
        .is_ok_and(|b| b.error.as_deref() == Some("ResourceNotFound"))
}

/// Polar sends `retry-after` in whole seconds.
fn retry_after(response: &Response) -> Option<Duration> {
    let value = response.headers().get(header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

fn excerpt(body: &str) -> String {
    crate::truncate_chars(body, MAX_ERROR_BODY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_resource_not_found_body_means_the_discount_is_gone() {
        assert!(is_resource_not_found(
            r#"{"error":"ResourceNotFound","detail":"Not found"}"#
        ));
        assert!(!is_resource_not_found(r#"{"detail":"Not Found"}"#));
        assert!(!is_resource_not_found("<html>404</html>"));
        assert!(!is_resource_not_found(""));
    }

    #[test]
    fn only_an_answer_that_shows_a_refusal_proves_a_write_was_not_applied() {
        let polar_error = r#"{"error":"RequestValidationError","detail":[]}"#;
        for (status, body) in [
            (StatusCode::TOO_MANY_REQUESTS, ""),
            (StatusCode::UNAUTHORIZED, "<html>login</html>"),
            (StatusCode::FORBIDDEN, ""),
            (StatusCode::UNPROCESSABLE_ENTITY, polar_error),
            (StatusCode::NOT_FOUND, r#"{"detail":"Not Found"}"#),
        ] {
            assert!(proves_refusal(status, body), "{status} {body}");
        }
        for (status, body) in [
            (StatusCode::BAD_GATEWAY, polar_error),
            (StatusCode::INTERNAL_SERVER_ERROR, ""),
            (StatusCode::BAD_REQUEST, "<html>proxy</html>"),
            (StatusCode::CONFLICT, ""),
            (StatusCode::PERMANENT_REDIRECT, ""),
        ] {
            assert!(!proves_refusal(status, body), "{status} {body}");
        }
    }

    #[test]
    fn a_request_ends_a_second_before_the_deadline_or_is_not_sent() {
        let configured = Duration::from_secs(5);
        let within = |remaining_ms| timeout_within(configured, Duration::from_millis(remaining_ms));
        assert_eq!(within(30_000), Some(configured));
        assert_eq!(within(2_900), Some(Duration::from_millis(1_900)));
        assert_eq!(within(1_500), Some(Duration::from_millis(500)));
        assert_eq!(within(1_499), None);
        assert_eq!(within(0), None);
    }

    #[test]
    fn long_error_bodies_are_cut_for_logs() {
        let cut = excerpt(&"é".repeat(2000));
        assert_eq!(cut.chars().count(), MAX_ERROR_BODY + 1);
        assert_eq!(excerpt("short"), "short");
    }
}
