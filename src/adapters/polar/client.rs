use std::sync::RwLock;
use std::time::{Duration, Instant};

use reqwest::{header, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use super::error::{Operation, PolarError};
use super::model::{Discount, ErrorBody, MaxRedemptionsUpdate};
use crate::adapters::fetch_token;
use crate::config::{AccessToken, PolarApiUrl};
use crate::domain::DiscountId;
use crate::ports::{Deletion, Discounts};

/// Pins the response shapes the models were written against.
const POLAR_API_VERSION: &str = "2026-04";
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
    rotation: Option<TokenRotation>,
}

/// Where the token can be read again when Polar refuses it.
#[derive(Debug)]
struct TokenRotation {
    ssm: aws_sdk_ssm::Client,
    parameter: String,
    last_read: tokio::sync::Mutex<Option<Instant>>,
}

enum Answer {
    Success(Response),
    ResourceNotFound,
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

    async fn call(
        &self,
        operation: Operation,
        discount: DiscountId,
        request: RequestBuilder,
    ) -> Result<Answer, PolarError> {
        let transport = |source| PolarError::Transport {
            operation,
            discount,
            source,
        };
        let token = self.current_token();
        let again = request.try_clone();
        let mut response = self.send(request, &token).await.map_err(transport)?;
        if response.status() == StatusCode::UNAUTHORIZED {
            if let Some(again) = again {
                if self.rotated_token(&token).await {
                    response = self
                        .send(again, &self.current_token())
                        .await
                        .map_err(transport)?;
                }
            }
        }
        let status = response.status();
        if status.is_success() {
            return Ok(Answer::Success(response));
        }
        let retry_after = retry_after(&response);
        let body = response.text().await.map_err(transport)?;
        let body_excerpt = || excerpt(&body);
        Err(match status {
            StatusCode::NOT_FOUND if is_resource_not_found(&body) => {
                return Ok(Answer::ResourceNotFound)
            }
            StatusCode::NOT_FOUND => PolarError::UnknownRoute {
                operation,
                discount,
                body: body_excerpt(),
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
                body: body_excerpt(),
            },
            s if s.is_server_error() => PolarError::Server {
                operation,
                discount,
                status,
                body: body_excerpt(),
            },
            _ => PolarError::Rejected {
                operation,
                discount,
                status,
                body: body_excerpt(),
            },
        })
    }

    async fn read_json<T: DeserializeOwned>(
        operation: Operation,
        discount: DiscountId,
        response: Response,
    ) -> Result<T, PolarError> {
        let bytes = response
            .bytes()
            .await
            .map_err(|source| PolarError::Transport {
                operation,
                discount,
                source,
            })?;
        serde_json::from_slice(&bytes).map_err(|source| PolarError::Decode {
            operation,
            discount,
            source,
        })
    }

    async fn discount_or_none(
        &self,
        operation: Operation,
        id: DiscountId,
        request: RequestBuilder,
    ) -> Result<Option<Discount>, PolarError> {
        match self.call(operation, id, request).await? {
            Answer::Success(response) => Self::read_json(operation, id, response).await.map(Some),
            Answer::ResourceNotFound => Ok(None),
        }
    }
}

impl Discounts for PolarClient {
    async fn get(&self, id: DiscountId) -> Result<Option<Discount>, PolarError> {
        let request = self.http.get(self.discount_url(id));
        self.discount_or_none(Operation::Get, id, request).await
    }

    async fn set_max_redemptions(
        &self,
        id: DiscountId,
        max_redemptions: i64,
    ) -> Result<Option<Discount>, PolarError> {
        let request = self
            .http
            .patch(self.discount_url(id))
            .json(&MaxRedemptionsUpdate { max_redemptions });
        self.discount_or_none(Operation::Update, id, request).await
    }

    async fn delete(&self, id: DiscountId) -> Result<Deletion, PolarError> {
        let request = self.http.delete(self.discount_url(id));
        match self.call(Operation::Delete, id, request).await? {
            Answer::Success(_) => Ok(Deletion::Deleted),
            Answer::ResourceNotFound => Ok(Deletion::Gone),
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
    fn long_error_bodies_are_cut_for_logs() {
        let cut = excerpt(&"é".repeat(2000));
        assert_eq!(cut.chars().count(), MAX_ERROR_BODY + 1);
        assert_eq!(excerpt("short"), "short");
    }
}
