//! An HTTP proxy in front of moto that counts the AWS requests passing through it, by
//! service (the `X-Amz-Target` header: `DynamoDB_20120810.<Operation>`,
//! `AmazonSQS.<Operation>`). The function under test (and the original algorithm's port)
//! points `AWS_ENDPOINT_URL` at it; the bench's own setup and checks go to moto directly and
//! are not counted. Every request is counted, SDK retries included.
//!
//! It also times how long moto was busy with those requests: moto serves one request at a
//! time (`scripts/moto_server.py`), so while any of them is in flight, moto is working on
//! one of them and the others queue behind it. No schedule of the same requests can finish
//! sooner than that.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::task::JoinHandle;

/// Requests by `X-Amz-Target` (or `other` without one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestCounts(pub BTreeMap<String, u64>);

impl RequestCounts {
    pub fn dynamodb(&self) -> u64 {
        self.with_prefix("DynamoDB_")
    }

    pub fn sqs(&self) -> u64 {
        self.with_prefix("AmazonSQS.")
    }

    /// `GetItem 1, UpdateItem 12, …` for DynamoDB's operations.
    pub fn dynamodb_operations(&self) -> String {
        self.operations("DynamoDB_")
    }

    pub fn sqs_operations(&self) -> String {
        self.operations("AmazonSQS.")
    }

    fn with_prefix(&self, prefix: &str) -> u64 {
        self.0
            .iter()
            .filter(|(target, _)| target.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    }

    fn operations(&self, prefix: &str) -> String {
        let listed: Vec<String> = self
            .0
            .iter()
            .filter(|(target, _)| target.starts_with(prefix))
            .map(|(target, n)| {
                let operation = target.rsplit('.').next().unwrap_or(target);
                format!("{operation} {n}")
            })
            .collect();
        if listed.is_empty() {
            "none".into()
        } else {
            listed.join(", ")
        }
    }
}

/// The time during which at least one request was in flight.
#[derive(Debug, Default)]
struct Occupancy {
    in_flight: u32,
    since: Option<Instant>,
    busy: Duration,
}

impl Occupancy {
    fn enter(&mut self, now: Instant) {
        if self.in_flight == 0 {
            self.since = Some(now);
        }
        self.in_flight += 1;
    }

    fn leave(&mut self, now: Instant) {
        self.in_flight -= 1;
        if self.in_flight == 0 {
            if let Some(since) = self.since.take() {
                self.busy += now - since;
            }
        }
    }

    fn busy(&self, now: Instant) -> Duration {
        self.busy + self.since.map_or(Duration::ZERO, |since| now - since)
    }

    fn reset(&mut self, now: Instant) {
        self.busy = Duration::ZERO;
        if self.since.is_some() {
            self.since = Some(now);
        }
    }
}

/// One request in flight, until dropped (also when the client gives up on it).
struct InFlight<'a>(&'a Mutex<Occupancy>);

impl<'a> InFlight<'a> {
    fn enter(occupancy: &'a Mutex<Occupancy>) -> Self {
        occupancy.lock().unwrap().enter(Instant::now());
        InFlight(occupancy)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.lock().unwrap().leave(Instant::now());
    }
}

struct Upstream {
    base: String,
    client: reqwest::Client,
    counts: Mutex<RequestCounts>,
    occupancy: Mutex<Occupancy>,
}

pub struct CountingProxy {
    addr: SocketAddr,
    upstream: Arc<Upstream>,
    server: JoinHandle<()>,
}

impl CountingProxy {
    /// Listens on a free loopback port and forwards to `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> std::io::Result<CountingProxy> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let upstream = Arc::new(Upstream {
            base: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::new(),
            counts: Mutex::default(),
            occupancy: Mutex::default(),
        });
        let router = Router::new().fallback(forward).with_state(upstream.clone());
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                eprintln!("bench: counting proxy stopped: {error}");
            }
        });
        Ok(CountingProxy {
            addr,
            upstream,
            server,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn counts(&self) -> RequestCounts {
        self.upstream.counts.lock().unwrap().clone()
    }

    /// How long moto was busy with the requests that passed through (see the module doc).
    pub fn moto_busy(&self) -> Duration {
        self.upstream.occupancy.lock().unwrap().busy(Instant::now())
    }

    /// Forget what was counted and timed so far (after a warm-up).
    pub fn reset(&self) {
        *self.upstream.counts.lock().unwrap() = RequestCounts::default();
        self.upstream
            .occupancy
            .lock()
            .unwrap()
            .reset(Instant::now());
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn forward(State(upstream): State<Arc<Upstream>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("other")
        .to_owned();
    *upstream.counts.lock().unwrap().0.entry(target).or_default() += 1;
    let _in_flight = InFlight::enter(&upstream.occupancy);

    let Ok(body) = to_bytes(body, 64 * 1024 * 1024).await else {
        return (StatusCode::BAD_REQUEST, "unreadable request body").into_response();
    };
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut headers = parts.headers;
    remove_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    let answer = upstream
        .client
        .request(parts.method, format!("{}{path}", upstream.base))
        .headers(headers)
        .body(body)
        .send()
        .await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(error) => {
            return (
                StatusCode::BAD_GATEWAY,
                format!("moto unreachable: {error}"),
            )
                .into_response()
        }
    };
    let status = answer.status();
    let mut headers = answer.headers().clone();
    remove_hop_by_hop(&mut headers);
    match answer.bytes().await {
        Ok(bytes) => (status, headers, Body::from(bytes)).into_response(),
        Err(error) => {
            (StatusCode::BAD_GATEWAY, format!("moto answer cut: {error}")).into_response()
        }
    }
}

fn remove_hop_by_hop(headers: &mut HeaderMap) {
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::CONTENT_LENGTH,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, millis: u64) -> Instant {
        start + Duration::from_millis(millis)
    }

    #[test]
    fn overlapping_requests_count_once_and_idle_gaps_not_at_all() {
        let start = Instant::now();
        let mut occupancy = Occupancy::default();
        occupancy.enter(at(start, 0));
        occupancy.enter(at(start, 5));
        occupancy.leave(at(start, 8));
        occupancy.leave(at(start, 10));
        occupancy.enter(at(start, 30));
        occupancy.leave(at(start, 34));
        assert_eq!(occupancy.busy(at(start, 50)), Duration::from_millis(14));
    }

    #[test]
    fn a_request_still_in_flight_counts_up_to_now_and_from_a_reset() {
        let start = Instant::now();
        let mut occupancy = Occupancy::default();
        occupancy.enter(at(start, 0));
        occupancy.enter(at(start, 1));
        occupancy.leave(at(start, 2));
        assert_eq!(occupancy.busy(at(start, 7)), Duration::from_millis(7));
        occupancy.reset(at(start, 10));
        occupancy.leave(at(start, 12));
        assert_eq!(occupancy.busy(at(start, 20)), Duration::from_millis(2));
    }
}
