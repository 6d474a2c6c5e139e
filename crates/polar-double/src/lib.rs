//! A stateful test double of Polar's discount API (`/v1/discounts/`), faithful to the
//! status codes and bodies the real server answers, with fault injection.
//!
//! Dev/test tooling only: never linked into the Lambda.
//!
//! ```no_run
//! # async fn demo() {
//! use polar_double::{DiscountSeed, Fault, FaultAction, PolarDouble};
//!
//! let polar = PolarDouble::start().await;
//! let id = polar.insert_discount(DiscountSeed::new("Spring").max_redemptions(3));
//! polar.inject(Fault::new(FaultAction::ApplyThenDropConnection).method("PATCH"));
//! // ... point the client at polar.base_url() ...
//! assert_eq!(polar.max_redemptions(id), Some(Some(3)));
//! # }
//! ```

mod admin;
mod api;
mod model;
mod server;
mod state;
mod time;
mod validation;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use state::Shared;

#[derive(Debug, Clone)]
pub struct DoubleConfig {
    /// Where to listen; port 0 picks a free one.
    pub addr: SocketAddr,
    /// When set, `Authorization: Bearer` must carry exactly this token; otherwise any
    /// non-empty bearer token is accepted.
    pub token: Option<String>,
    /// Requests allowed per organization in each 60 s window (Polar: 500 in production,
    /// 100 in the sandbox); `None` disables rate limiting.
    pub rate_limit_per_minute: Option<u32>,
}

impl Default for DoubleConfig {
    fn default() -> DoubleConfig {
        DoubleConfig {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            token: None,
            rate_limit_per_minute: None,
        }
    }
}

/// A discount to put in the double's state directly (not through the API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscountSeed {
    /// Must be a UUIDv4 (Polar answers 422 for other versions); random when `None`.
    #[serde(default)]
    pub id: Option<Uuid>,
    #[serde(default)]
    pub code: Option<String>,
    /// `None` = unlimited.
    #[serde(default)]
    pub max_redemptions: Option<i64>,
    pub name: String,
}

impl DiscountSeed {
    pub fn new(name: impl Into<String>) -> DiscountSeed {
        DiscountSeed {
            id: None,
            code: None,
            max_redemptions: None,
            name: name.into(),
        }
    }

    pub fn id(mut self, id: Uuid) -> DiscountSeed {
        self.id = Some(id);
        self
    }

    pub fn code(mut self, code: impl Into<String>) -> DiscountSeed {
        self.code = Some(code.into());
        self
    }

    pub fn max_redemptions(mut self, max_redemptions: i64) -> DiscountSeed {
        self.max_redemptions = Some(max_redemptions);
        self
    }
}

/// One request the double received, as it received it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub method: String,
    /// Raw path and query, as received.
    pub path: String,
    pub authorization: Option<String>,
    pub polar_version: Option<String>,
    pub body: String,
    /// The status answered; `None` when the connection was dropped instead.
    pub status: Option<u16>,
    /// Microseconds between the double's start and the request's arrival.
    pub received_at_us: u64,
    /// Microseconds between the double's start and its answer (the status recorded);
    /// `None` while it is in flight, or when the connection was dropped unanswered.
    pub answered_at_us: Option<u64>,
}

/// A queued fault: applies to the next `times` requests that match it. Faults are tried
/// in insertion order and the first match wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// `GET`, `PATCH`, `DELETE` or `POST`; `None` matches any method.
    #[serde(default)]
    pub method: Option<String>,
    /// `None` matches any request, including ones without a discount id in the path.
    #[serde(default)]
    pub discount_id: Option<Uuid>,
    #[serde(default = "one")]
    pub times: u32,
    pub action: FaultAction,
}

fn one() -> u32 {
    1
}

impl Fault {
    /// A fault for the next request of any method and discount.
    pub fn new(action: FaultAction) -> Fault {
        Fault {
            method: None,
            discount_id: None,
            times: 1,
            action,
        }
    }

    pub fn method(mut self, method: &str) -> Fault {
        self.method = Some(method.to_ascii_uppercase());
        self
    }

    pub fn discount(mut self, id: Uuid) -> Fault {
        self.discount_id = Some(id);
        self
    }

    pub fn times(mut self, times: u32) -> Fault {
        self.times = times;
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultAction {
    /// Answer this instead of handling the request (nothing is applied).
    Status {
        status: u16,
        #[serde(default)]
        body: Option<String>,
        #[serde(default)]
        retry_after_secs: Option<u64>,
    },
    /// Wait, then handle normally. The request is applied even if the client gave up.
    Delay { millis: u64 },
    /// Close the connection without applying the request and without any response.
    DropConnection,
    /// Apply the request, then close the connection without a response.
    ApplyThenDropConnection,
    /// Apply the request, then answer this instead of the real answer. `content_type`
    /// defaults to `application/json` when there is a body.
    ApplyThenAnswer {
        status: u16,
        #[serde(default)]
        body: Option<String>,
        #[serde(default)]
        content_type: Option<String>,
    },
    /// Apply the request, then answer `status` with the real answer's headers and a
    /// `Content-Length` for its whole body, but send only half of the body and close the
    /// connection. A bodiless answer (DELETE's 204) is replaced by a cut JSON body.
    ApplyThenCutBody { status: u16 },
}

impl FaultAction {
    pub fn status(status: u16, body: &str) -> FaultAction {
        FaultAction::Status {
            status,
            body: Some(body.to_owned()),
            retry_after_secs: None,
        }
    }

    /// A proxy answering a write that did reach Polar: any 2xx to a write means it was applied.
    pub fn apply_then_answer(status: u16, body: Option<&str>) -> FaultAction {
        FaultAction::ApplyThenAnswer {
            status,
            body: body.map(str::to_owned),
            content_type: None,
        }
    }

    /// A write applied whose answer is cut mid-body: a 2xx whose body cannot be read.
    pub fn apply_then_cut_body(status: u16) -> FaultAction {
        FaultAction::ApplyThenCutBody { status }
    }

    /// Polar's own 429: empty body and `retry-after`.
    pub fn too_many_requests(retry_after_secs: u64) -> FaultAction {
        FaultAction::Status {
            status: 429,
            body: None,
            retry_after_secs: Some(retry_after_secs),
        }
    }
}

/// The running double; the server shuts down when this is dropped.
pub struct PolarDouble {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_loop: JoinHandle<()>,
    // Dropping the sender tells every connection task to stop.
    _shutdown: watch::Sender<()>,
}

impl PolarDouble {
    /// Starts on 127.0.0.1 with a free port, any bearer token and no rate limit.
    pub async fn start() -> PolarDouble {
        PolarDouble::start_with(DoubleConfig::default())
            .await
            .expect("bind 127.0.0.1:0 for the Polar double")
    }

    pub async fn start_with(config: DoubleConfig) -> std::io::Result<PolarDouble> {
        let listener = tokio::net::TcpListener::bind(config.addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config));
        let (shutdown, shutdown_rx) = watch::channel(());
        let accept_loop = tokio::spawn(server::accept_loop(
            listener,
            server::router(shared.clone()),
            shutdown_rx,
        ));
        Ok(PolarDouble {
            addr,
            shared,
            accept_loop,
            _shutdown: shutdown,
        })
    }

    /// `http://127.0.0.1:PORT/v1`, to use as the Polar API base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The organization every discount belongs to (the token's organization).
    pub fn organization_id(&self) -> Uuid {
        self.shared.organization_id
    }

    /// Inserts or replaces a discount; returns its id.
    ///
    /// # Panics
    /// If `seed.id` is not a UUIDv4: Polar could never be asked about it (422).
    pub fn insert_discount(&self, seed: DiscountSeed) -> Uuid {
        self.shared
            .insert_discount(seed)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `None`: no such discount (never created or deleted); `Some(None)`: unlimited.
    pub fn max_redemptions(&self, id: Uuid) -> Option<Option<i64>> {
        self.shared.with_discount(id, |d| d.max_redemptions)
    }

    /// The discount's JSON exactly as `GET /v1/discounts/{id}` returns it.
    pub fn discount(&self, id: Uuid) -> Option<Value> {
        self.shared.with_discount(id, |d| d.to_json())
    }

    /// Every API request received so far, in arrival order, including rejected and
    /// faulted ones (admin requests excepted).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests()
    }

    pub fn inject(&self, fault: Fault) {
        self.shared.inject(fault);
    }

    pub fn clear_faults(&self) {
        self.shared.clear_faults();
    }

    /// Ends the current rate-limit window now, as if its 60 s had passed.
    pub fn reset_rate_limit_window(&self) {
        self.shared.reset_rate_limit_window();
    }
}

impl Drop for PolarDouble {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}
