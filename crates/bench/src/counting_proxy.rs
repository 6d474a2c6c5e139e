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
//!
//! It keeps each request in arrival order, with what its DynamoDB items set and remove, for
//! the critical path's list of requests and why each is needed (`request_reasons`).
//!
//! And it adds up the DynamoDB capacity those requests consume on an on-demand table, from
//! their bodies ([`Capacity`]), for the cost per redemption.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::request_reasons::{AwsRequest, ItemTouched};
use crate::time_split::Span;

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

/// DynamoDB on-demand request units consumed, as billed: 1 WRU per item written (up to
/// 1 KB) by PutItem, UpdateItem, DeleteItem and BatchWriteItem, 2 per item of a
/// TransactWriteItems; 1 RRU per strongly consistent item read (up to 4 KB), 0.5 eventually
/// consistent, 2 per item of a TransactGetItems. Assumes every item is under 1 KB (the
/// orders and the sync table's discount items are); a Query or Scan is billed by the items
/// it scans, taken as 4 per 4 KB read unit (at most 1 KB each), at least one unit. A
/// request is counted whatever it answered: conditional writes that fail consume their
/// units too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capacity {
    pub write_units: u64,
    /// In halves, so that eventually consistent reads stay whole numbers.
    pub read_half_units: u64,
}

impl Capacity {
    pub fn read_units(&self) -> f64 {
        self.read_half_units as f64 / 2.0
    }

    fn add(&mut self, other: Capacity) {
        self.write_units += other.write_units;
        self.read_half_units += other.read_half_units;
    }

    /// The units one DynamoDB request consumes: `operation` as in `X-Amz-Target`
    /// (`DynamoDB_20120810.GetItem`), its JSON body, and the answer's for Query and Scan.
    pub fn of_request(target: &str, request: &Value, answer: Option<&Value>) -> Capacity {
        let Some(operation) = target
            .strip_prefix("DynamoDB_")
            .map(|t| t.rsplit('.').next().unwrap_or(t))
        else {
            return Capacity::default();
        };
        let consistent = request
            .get("ConsistentRead")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let half_units_per_read = if consistent { 2 } else { 1 };
        let length = |value: Option<&Value>| value.and_then(Value::as_array).map_or(0, Vec::len);
        let tables = || {
            request
                .get("RequestItems")
                .and_then(Value::as_object)
                .into_iter()
                .flat_map(|tables| tables.values())
        };
        let (write_units, read_half_units) = match operation {
            "PutItem" | "UpdateItem" | "DeleteItem" => (1, 0),
            "BatchWriteItem" => (tables().map(|writes| length(Some(writes))).sum(), 0),
            "TransactWriteItems" => (2 * length(request.get("TransactItems")), 0),
            "GetItem" => (0, half_units_per_read),
            "BatchGetItem" => {
                let reads = tables()
                    .map(|table| {
                        let consistent = table.get("ConsistentRead").and_then(Value::as_bool);
                        length(table.get("Keys")) * if consistent == Some(true) { 2 } else { 1 }
                    })
                    .sum();
                (0, reads)
            }
            "TransactGetItems" => (0, 4 * length(request.get("TransactItems"))),
            "Query" | "Scan" => {
                let scanned = answer
                    .and_then(|a| a.get("ScannedCount").or_else(|| a.get("Count")))
                    .and_then(Value::as_u64)
                    .unwrap_or(0) as usize;
                (0, scanned.div_ceil(4).max(1) * half_units_per_read)
            }
            _ => (0, 0),
        };
        Capacity {
            write_units: write_units as u64,
            read_half_units: read_half_units as u64,
        }
    }
}

/// The time during which at least one request was in flight.
#[derive(Debug, Default)]
struct Occupancy {
    in_flight: u32,
    since: Option<Instant>,
    /// The busy spans that ended, in order.
    spans: Vec<Span>,
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
                self.spans.push(Span::new(since, now));
            }
        }
    }

    /// The busy spans until `now`, the one still going included.
    fn spans(&self, now: Instant) -> Vec<Span> {
        let going = self.since.map(|since| Span::new(since, now));
        self.spans.iter().copied().chain(going).collect()
    }

    fn busy(&self, now: Instant) -> Duration {
        self.spans(now).iter().map(|span| span.to - span.from).sum()
    }

    fn reset(&mut self, now: Instant) {
        self.spans.clear();
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
    /// Added to each DynamoDB request before it is forwarded: DynamoDB answering slowly.
    dynamodb_latency: Duration,
    client: reqwest::Client,
    counts: Mutex<RequestCounts>,
    requests: Mutex<Vec<AwsRequest>>,
    capacity: Mutex<Capacity>,
    occupancy: Mutex<Occupancy>,
}

pub struct CountingProxy {
    addr: SocketAddr,
    upstream: Arc<Upstream>,
    server: JoinHandle<()>,
}

impl CountingProxy {
    /// Listens on a free loopback port and forwards to `upstream` (`http://host:port`), each
    /// DynamoDB request `dynamodb_latency` later.
    pub async fn start(
        upstream: &str,
        dynamodb_latency: Duration,
    ) -> std::io::Result<CountingProxy> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let upstream = Arc::new(Upstream {
            base: upstream.trim_end_matches('/').to_owned(),
            dynamodb_latency,
            client: reqwest::Client::new(),
            counts: Mutex::default(),
            requests: Mutex::default(),
            capacity: Mutex::default(),
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

    /// Every request forwarded, in arrival order.
    pub fn requests(&self) -> Vec<AwsRequest> {
        self.upstream.requests.lock().unwrap().clone()
    }

    /// The DynamoDB request units those requests consumed (see [`Capacity`]).
    pub fn capacity(&self) -> Capacity {
        *self.upstream.capacity.lock().unwrap()
    }

    /// How long moto was busy with the requests that passed through (see the module doc).
    pub fn moto_busy(&self) -> Duration {
        self.upstream.occupancy.lock().unwrap().busy(Instant::now())
    }

    /// When moto was busy with the requests that passed through, span by span.
    pub fn moto_busy_spans(&self) -> Vec<Span> {
        self.upstream
            .occupancy
            .lock()
            .unwrap()
            .spans(Instant::now())
    }

    /// Forget what was counted and timed so far (after a warm-up).
    pub fn reset(&self) {
        *self.upstream.counts.lock().unwrap() = RequestCounts::default();
        self.upstream.requests.lock().unwrap().clear();
        *self.upstream.capacity.lock().unwrap() = Capacity::default();
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
    let arrived = Instant::now();
    let (parts, body) = request.into_parts();
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("other")
        .to_owned();
    *upstream
        .counts
        .lock()
        .unwrap()
        .0
        .entry(target.clone())
        .or_default() += 1;
    // Not even a zero sleep otherwise: Tokio's timer rounds it up to its next
    // millisecond tick, about 1.1 ms on every request.
    if target.starts_with("DynamoDB_") && !upstream.dynamodb_latency.is_zero() {
        tokio::time::sleep(upstream.dynamodb_latency).await;
    }
    let _in_flight = InFlight::enter(&upstream.occupancy);

    let Ok(body) = to_bytes(body, 64 * 1024 * 1024).await else {
        return (StatusCode::BAD_REQUEST, "unreadable request body").into_response();
    };
    let dynamodb_request = target
        .starts_with("DynamoDB_")
        .then(|| serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null));
    let operation = target.rsplit('.').next().unwrap_or(&target);
    upstream.requests.lock().unwrap().push(AwsRequest {
        arrived,
        target: target.clone(),
        items: dynamodb_request
            .as_ref()
            .map_or_else(Vec::new, |body| ItemTouched::of_request(operation, body)),
    });
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
        Ok(bytes) => {
            if let Some(request) = dynamodb_request {
                let answer = serde_json::from_slice::<Value>(&bytes).ok();
                let units = Capacity::of_request(&target, &request, answer.as_ref());
                upstream.capacity.lock().unwrap().add(units);
            }
            (status, headers, Body::from(bytes)).into_response()
        }
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
    use serde_json::json;

    fn at(start: Instant, millis: u64) -> Instant {
        start + Duration::from_millis(millis)
    }

    fn units(target: &str, request: Value, answer: Option<Value>) -> (u64, f64) {
        let capacity = Capacity::of_request(
            &format!("DynamoDB_20120810.{target}"),
            &request,
            answer.as_ref(),
        );
        (capacity.write_units, capacity.read_units())
    }

    #[test]
    fn a_transaction_costs_two_write_units_per_item_and_a_single_write_one() {
        let three =
            json!({"TransactItems": [{"Update": {}}, {"Update": {}}, {"ConditionCheck": {}}]});
        assert_eq!(units("TransactWriteItems", three, None), (6, 0.0));
        assert_eq!(units("UpdateItem", json!({}), None), (1, 0.0));
        assert_eq!(units("PutItem", json!({}), None), (1, 0.0));
        let batch = json!({"RequestItems": {"a": [{}, {}], "b": [{}]}});
        assert_eq!(units("BatchWriteItem", batch, None), (3, 0.0));
    }

    #[test]
    fn a_consistent_read_costs_one_read_unit_and_an_eventual_one_half() {
        assert_eq!(
            units("GetItem", json!({"ConsistentRead": true}), None),
            (0, 1.0)
        );
        assert_eq!(units("GetItem", json!({}), None), (0, 0.5));
        let two = json!({"TransactItems": [{"Get": {}}, {"Get": {}}]});
        assert_eq!(units("TransactGetItems", two, None), (0, 4.0));
    }

    #[test]
    fn a_scan_costs_a_read_unit_per_four_items_scanned_and_at_least_one() {
        let consistent = json!({"ConsistentRead": true});
        let nine = Some(json!({"Count": 2, "ScannedCount": 9}));
        assert_eq!(units("Scan", consistent.clone(), nine), (0, 3.0));
        let none = Some(json!({"Count": 0, "ScannedCount": 0}));
        assert_eq!(units("Scan", consistent, none), (0, 1.0));
        assert_eq!(
            units("Query", json!({}), Some(json!({"Count": 8}))),
            (0, 1.0)
        );
    }

    #[test]
    fn requests_that_are_not_reads_or_writes_cost_no_units() {
        assert_eq!(units("DescribeTable", json!({}), None), (0, 0.0));
        let sqs = Capacity::of_request("AmazonSQS.SendMessage", &json!({}), None);
        assert_eq!(sqs, Capacity::default());
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
