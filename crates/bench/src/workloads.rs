//! The workloads, and one run of a workload: fresh tables, queues, Polar double and
//! counting proxy; the containers started and warmed up; the messages sent; the queue
//! drained by the event source; then every measurement and the exactly-once check.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use polar_double::{DiscountSeed, DoubleConfig, Fault, FaultAction, PolarDouble, RecordedRequest};
use test_kit::event_source::Batching;
use test_kit::queues::{QueueSettings, Queues};
use test_kit::tables::{is_synced, Order, Tables};
use test_kit::{aws_config, REGION};
use uuid::Uuid;

use crate::container::{Container, LogBytes};
use crate::counting_proxy::{Capacity, CountingProxy, RequestCounts};
use crate::machine::{self, BinaryFile, Machine};
use crate::original::OriginalSync;
use crate::pollers::{Invoker, Pollers, Progress};
use crate::request_reasons::{self, ExplainedRequest};
use crate::time_split::{Span, TimeSplit};

/// The function's timeout: each invocation's deadline.
pub const FUNCTION_TIMEOUT: Duration = Duration::from_secs(6);
/// The source queue's visibility timeout: at least the function timeout, as AWS requires.
pub const VISIBILITY_TIMEOUT_SECS: u32 = 6;
pub const MAX_RECEIVE_COUNT: u32 = 5;
const QUEUE_SETTINGS: QueueSettings = QueueSettings {
    fifo: false,
    visibility_timeout_secs: VISIBILITY_TIMEOUT_SECS,
    max_receive_count: MAX_RECEIVE_COUNT,
};
/// Polar's organization-wide limit, enforced by the double with 429 and `retry-after`.
pub const POLAR_REQUESTS_PER_MINUTE: u32 = 500;
/// What workloads 4s and 4bs add to every DynamoDB request, whose own latency is a few
/// milliseconds: a step's three requests are then 0.6 s late.
const SLOW_DYNAMODB: Duration = Duration::from_millis(200);
/// How the flash sale in batches of 10 says so in its title.
const TENS: &str = ", batches of 10";
/// Every discount starts with this many uses left, so no workload reaches a last use.
const INITIAL_MAX_REDEMPTIONS: i64 = 1_000_000;
const TOKEN: &str = "polar_oat_bench_token";
/// Fixed, so that every run sends the same messages in the same order.
const SHUFFLE_SEED: u64 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Full,
    Tiny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// The function binary, through the Runtime API.
    Function,
    /// The original TypeScript algorithm's port, in process.
    Original,
}

/// A warm-up receives its one message and invokes at once.
const ONE_MESSAGE: Batching = Batching {
    size: 1,
    window: Duration::ZERO,
};

impl Algorithm {
    /// Each as deployed: the function with its template's batching, the original with
    /// Lambda's defaults.
    pub fn batching(self) -> Batching {
        match self {
            Algorithm::Function => Batching::TEMPLATE,
            Algorithm::Original => Batching::LAMBDA_DEFAULT,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscountSpec {
    pub code: String,
    pub orders: usize,
    /// Orders of this discount whose message is sent twice.
    pub duplicate_messages: usize,
}

impl DiscountSpec {
    fn new(code: impl Into<String>, orders: usize, duplicate_messages: usize) -> Self {
        DiscountSpec {
            code: code.into(),
            orders,
            duplicate_messages,
        }
    }
}

#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    /// `1` to `5`; `4b` for the flash sale in batches of 10; `4s` and `4bs` for both with
    /// DynamoDB answering slowly.
    pub id: &'static str,
    pub title: String,
    pub containers: usize,
    pub discounts: Vec<DiscountSpec>,
    /// Whether the original algorithm runs it too, as the baseline.
    pub with_original: bool,
    /// Given up on (reported as not drained) after this long.
    pub bound: Duration,
    /// The code whose Polar requests per redemption are reported on their own.
    pub hot_code: Option<String>,
    /// How the event source batches the function's messages (the original's are always
    /// Lambda's defaults).
    pub function_batching: Batching,
    /// Added to every DynamoDB request, by the counting proxy.
    pub dynamodb_latency: Duration,
}

impl WorkloadSpec {
    pub fn messages(&self) -> usize {
        self.discounts
            .iter()
            .map(|d| d.orders + d.duplicate_messages)
            .sum()
    }

    pub fn orders(&self) -> usize {
        self.discounts.iter().map(|d| d.orders).sum()
    }

    pub fn batching(&self, algorithm: Algorithm) -> Batching {
        match algorithm {
            Algorithm::Function => self.function_batching,
            Algorithm::Original => algorithm.batching(),
        }
    }

    /// Whether `other` runs the original algorithm on the same messages with the same
    /// containers: its measurement stands for this workload's too.
    pub fn same_original_run_as(&self, other: &WorkloadSpec) -> bool {
        self.discounts == other.discounts && self.containers == other.containers
    }

    fn lone_message() -> WorkloadSpec {
        WorkloadSpec {
            id: "0",
            title: "one lone message for one discount".into(),
            containers: 1,
            discounts: vec![DiscountSpec::new("LONE", 1, 0)],
            with_original: false,
            bound: Duration::from_secs(60),
            hot_code: None,
            function_batching: Algorithm::Function.batching(),
            dynamodb_latency: Duration::ZERO,
        }
    }
}

/// Polar requests on one code, against its distinct orders.
#[derive(Debug, Clone, Copy)]
pub struct HotCode {
    pub requests: usize,
    pub orders: usize,
}

/// Everything measured in one run of a workload.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub algorithm: Algorithm,
    pub messages: usize,
    pub orders: usize,
    pub progress: Progress,
    pub polar_requests: usize,
    pub polar_429s: usize,
    pub hot: Option<HotCode>,
    pub aws_requests: RequestCounts,
    /// How long moto was busy with those requests (`CountingProxy::moto_busy`).
    pub moto_busy: Duration,
    /// Where the wall time went: Polar, moto, neither (when the run drained).
    pub time_split: Option<TimeSplit>,
    /// The DynamoDB request units those requests consumed.
    pub capacity: Capacity,
    /// What the function's containers logged (stdout and stderr) during the run; nothing
    /// for the original's port, which logs nothing, as the original did not.
    pub logged: LogBytes,
    pub dead_letters: usize,
    /// Distinct orders (all valid: each exists and matches its message) with a message in
    /// the dead-letter queue.
    pub dead_lettered_orders: usize,
    pub orders_synced: usize,
    pub discounts: usize,
    pub discounts_exact: usize,
    /// Discounts whose limit went down by exactly their orders marked synced.
    pub discounts_matching_synced: usize,
    /// Σ (final − expected) `max_redemptions` over the discounts: above 0, uses that Polar
    /// never counted; below 0, uses counted twice.
    pub limit_excess: i64,
    /// The largest `VmHWM` among the function's containers.
    pub peak_rss_bytes: Option<u64>,
    /// Every AWS and Polar request of the run, in order, with why it is needed.
    pub requests_in_order: Vec<ExplainedRequest>,
    /// Why the run could not be done, if it could not.
    pub failure: Option<String>,
}

impl Measurement {
    fn failed(spec: &WorkloadSpec, algorithm: Algorithm, why: String) -> Measurement {
        Measurement {
            algorithm,
            messages: spec.messages(),
            orders: spec.orders(),
            progress: Progress::default(),
            polar_requests: 0,
            polar_429s: 0,
            hot: None,
            aws_requests: RequestCounts::default(),
            moto_busy: Duration::ZERO,
            time_split: None,
            capacity: Capacity::default(),
            logged: LogBytes::default(),
            dead_letters: 0,
            dead_lettered_orders: 0,
            orders_synced: 0,
            discounts: spec.discounts.len(),
            discounts_exact: 0,
            discounts_matching_synced: 0,
            limit_excess: 0,
            peak_rss_bytes: None,
            requests_in_order: Vec::new(),
            failure: Some(why),
        }
    }

    /// First invocation to the last one's deletions, if the queue drained.
    pub fn wall_time(&self) -> Option<Duration> {
        if self.failure.is_some() || !self.progress.drained {
            return None;
        }
        self.progress.wall_time()
    }

    pub fn per_message(&self, count: u64) -> f64 {
        count as f64 / self.messages.max(1) as f64
    }

    pub fn per_redemption(&self, count: u64) -> f64 {
        count as f64 / self.orders.max(1) as f64
    }

    /// DynamoDB requests answered that another invocation held the lease (the function's
    /// own count, from its EMF documents; the original takes no lease).
    pub fn lease_wait_requests(&self) -> u64 {
        self.logged.lease_wait_requests
    }

    /// DynamoDB requests that handed a waiter's orders to the lease's holder (the
    /// function's own count, from its EMF documents).
    pub fn hand_off_requests(&self) -> u64 {
        self.logged.hand_off_requests
    }

    /// Over the wall time, or until the run was given up on if it did not drain.
    pub fn redemptions_per_minute(&self) -> Option<f64> {
        if self.failure.is_some() {
            return None;
        }
        let wall = self.progress.wall_time()?.as_secs_f64();
        Some(self.orders_synced as f64 * 60.0 / wall.max(f64::EPSILON))
    }

    /// Polar counted each distinct order exactly once, and every order is marked synced.
    pub fn exactly_once(&self) -> bool {
        self.failure.is_none()
            && self.discounts_exact == self.discounts
            && self.orders_synced == self.orders
    }

    pub fn one_line(&self) -> String {
        if let Some(failure) = &self.failure {
            return format!("not run: {failure}");
        }
        let wall = match self.wall_time() {
            Some(wall) => format!("{:.3} s", wall.as_secs_f64()),
            None => "did not drain".into(),
        };
        format!(
            "{wall}, {} invocations, {} Polar requests ({} × 429), {} DynamoDB requests \
             ({} lease waits, {} hand-offs), {} dead-lettered, exactly once: {}",
            self.progress.invocations,
            self.polar_requests,
            self.polar_429s,
            self.aws_requests.dynamodb(),
            self.lease_wait_requests(),
            self.hand_off_requests(),
            self.dead_letters,
            if self.exactly_once() { "yes" } else { "NO" },
        )
    }
}

#[derive(Debug, Clone, Default)]
pub struct CriticalPath {
    pub runs: Vec<Measurement>,
}

impl CriticalPath {
    pub fn best(&self) -> Option<&Measurement> {
        self.runs
            .iter()
            .filter(|m| m.wall_time().is_some())
            .min_by_key(|m| m.wall_time())
    }

    pub fn wall_time(&self) -> Option<Duration> {
        self.best()?.wall_time()
    }
}

/// The messages, orders and discounts of one run.
struct Plan {
    /// `(code, id)` of each discount of the spec, in order.
    discounts: Vec<(String, Uuid)>,
    orders: Vec<Order>,
    bodies: Vec<String>,
}

impl Plan {
    fn new(spec: &WorkloadSpec) -> Plan {
        let mut rng = fastrand::Rng::with_seed(SHUFFLE_SEED);
        let mut discounts = Vec::new();
        let mut orders = Vec::new();
        let mut bodies = Vec::new();
        for discount in &spec.discounts {
            let id = Uuid::new_v4();
            discounts.push((discount.code.clone(), id));
            let own: Vec<Order> = (1..=discount.orders)
                .map(|n| Order {
                    id: format!("ord-{}-{n}", discount.code),
                    discount: id,
                    code: discount.code.clone(),
                })
                .collect();
            bodies.extend(own.iter().map(Order::message_body));
            for _ in 0..discount.duplicate_messages {
                bodies.push(own[rng.usize(..own.len())].message_body());
            }
            orders.extend(own);
        }
        rng.shuffle(&mut bodies);
        Plan {
            discounts,
            orders,
            bodies,
        }
    }
}

/// What one run works on, all its own.
struct Setup {
    polar: PolarDouble,
    /// Taken just before the double started, the origin of its requests' times.
    polar_started: Instant,
    proxy: CountingProxy,
    tables: Tables,
    queues: Queues,
    plan: Plan,
    /// One per container.
    warm_ups: Vec<Order>,
}

pub struct Bench {
    moto: String,
    dynamo: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
    pub binary: PathBuf,
    pub binary_file: BinaryFile,
    pub polar_latency: Duration,
    pub size: Size,
    pub machine: Machine,
}

impl Bench {
    pub async fn new(moto: &str, binary: &Path, polar_latency: Duration, size: Size) -> Bench {
        let aws = aws_config(moto).await;
        Bench {
            moto: moto.to_owned(),
            dynamo: aws_sdk_dynamodb::Client::new(&aws),
            sqs: aws_sdk_sqs::Client::new(&aws),
            binary: binary.to_owned(),
            binary_file: machine::binary_file(binary),
            polar_latency,
            size,
            machine: Machine::describe(),
        }
    }

    /// Workload `id`; `None` for an id that names none.
    pub fn workload(&self, id: &str) -> Option<WorkloadSpec> {
        let tiny = self.size == Size::Tiny;
        let minutes = |m: u64| Duration::from_secs(60 * m);
        let template = Algorithm::Function.batching();
        let spec = match id {
            "1" => WorkloadSpec {
                id: "1",
                title: "10 messages for 10 distinct discounts, one batch, one container".into(),
                containers: 1,
                discounts: (1..=10)
                    .map(|n| DiscountSpec::new(format!("TEN{n}"), 1, 0))
                    .collect(),
                with_original: true,
                bound: minutes(2),
                hot_code: None,
                function_batching: template,
                dynamodb_latency: Duration::ZERO,
            },
            "2" => WorkloadSpec {
                id: "2",
                title: "10 messages for one discount, one batch, one container".into(),
                containers: 1,
                discounts: vec![DiscountSpec::new("SAME", 10, 0)],
                with_original: true,
                bound: minutes(2),
                hot_code: Some("SAME".into()),
                function_batching: template,
                dynamodb_latency: Duration::ZERO,
            },
            "3" => WorkloadSpec {
                id: "3",
                title: "mixed batch: 4 messages for one discount (one a duplicate), 3 for \
                        another, 3 singles; one batch, one container"
                    .into(),
                containers: 1,
                discounts: vec![
                    DiscountSpec::new("MIXA", 3, 1),
                    DiscountSpec::new("MIXB", 3, 0),
                    DiscountSpec::new("MIXC", 1, 0),
                    DiscountSpec::new("MIXD", 1, 0),
                    DiscountSpec::new("MIXE", 1, 0),
                ],
                with_original: true,
                bound: minutes(2),
                hot_code: None,
                function_batching: template,
                dynamodb_latency: Duration::ZERO,
            },
            "4" => self.flash_sale("4", "", template, Duration::ZERO),
            "4b" => self.flash_sale("4b", TENS, Batching::LAMBDA_DEFAULT, Duration::ZERO),
            "4s" => self.flash_sale("4s", "", template, SLOW_DYNAMODB),
            "4bs" => self.flash_sale("4bs", TENS, Batching::LAMBDA_DEFAULT, SLOW_DYNAMODB),
            "5" => {
                let (codes, per_code, containers) = if tiny { (5, 2, 2) } else { (50, 40, 4) };
                WorkloadSpec {
                    id: "5",
                    title: format!(
                        "sustained: {} messages across {codes} discounts, {containers} containers",
                        codes * per_code
                    ),
                    containers,
                    discounts: (1..=codes)
                        .map(|n| DiscountSpec::new(format!("SUST{n}"), per_code, 0))
                        .collect(),
                    with_original: false,
                    bound: minutes(20),
                    hot_code: None,
                    function_batching: template,
                    dynamodb_latency: Duration::ZERO,
                }
            }
            _ => return None,
        };
        Some(spec)
    }

    /// One code redeemed by many orders at once, next to quiet codes; the function's messages
    /// batched as `batching`, DynamoDB answering `dynamodb_latency` late. The original runs
    /// only at DynamoDB's own speed.
    fn flash_sale(
        &self,
        id: &'static str,
        batched: &str,
        batching: Batching,
        dynamodb_latency: Duration,
    ) -> WorkloadSpec {
        let slowly = match dynamodb_latency.as_millis() {
            0 => String::new(),
            ms => format!(", DynamoDB answering {ms} ms late"),
        };
        let (hot, quiet, containers) = if self.size == Size::Tiny {
            (20, 1, 2)
        } else {
            (400, 5, 4)
        };
        let mut discounts = vec![DiscountSpec::new("FLASH", hot, hot / 10)];
        discounts.extend((1..=3).map(|n| DiscountSpec::new(format!("QUIET{n}"), quiet, 0)));
        WorkloadSpec {
            id,
            title: format!(
                "flash sale{batched}{slowly}: one code redeemed by {hot} orders at once (+{} duplicate \
                 messages) next to 3 quiet codes ({quiet} orders each), {containers} \
                 containers; the function's batches {batching}",
                hot / 10
            ),
            containers,
            discounts,
            with_original: dynamodb_latency.is_zero(),
            bound: Duration::from_secs(600),
            hot_code: Some("FLASH".into()),
            function_batching: batching,
            dynamodb_latency,
        }
    }

    /// The lone message's wall time, best of 3 (1 for the tiny size), each on fresh tables.
    pub async fn critical_path(&self) -> CriticalPath {
        let runs = if self.size == Size::Tiny { 1 } else { 3 };
        let mut path = CriticalPath::default();
        for _ in 0..runs {
            let run = self
                .run(&WorkloadSpec::lone_message(), Algorithm::Function)
                .await;
            println!("    {}", run.one_line());
            path.runs.push(run);
        }
        path
    }

    /// From spawning the function to its first `GET next`, for ~10 fresh processes.
    pub async fn start_times(&self) -> Vec<Duration> {
        let spawns = if self.size == Size::Tiny { 3 } else { 10 };
        let polar = PolarDouble::start().await;
        let Ok(proxy) = CountingProxy::start(&self.moto, Duration::ZERO).await else {
            return Vec::new();
        };
        let tables = Tables::create(&self.dynamo).await;
        let queues = Queues::create(self.sqs.clone(), QUEUE_SETTINGS).await;
        let env = self.function_env(&tables, &queues, &polar, &proxy, 1);
        let mut times = Vec::new();
        for _ in 0..spawns {
            match Container::start(&self.binary, &env).await {
                Ok(container) => {
                    times.push(container.start_time);
                    container.stop().await;
                }
                Err(error) => {
                    eprintln!("bench: the function did not start: {error}");
                    break;
                }
            }
        }
        tables.delete(&self.dynamo).await;
        queues.delete().await;
        times
    }

    /// The function's environment, as CONTRACT.md names it, and the log format Lambda sets
    /// for the template; its AWS requests go through the counting proxy. Each container
    /// spends 1/N of the rate budget, N being the event source's concurrency: the
    /// containers run here, or the default 2.
    fn function_env(
        &self,
        tables: &Tables,
        queues: &Queues,
        polar: &PolarDouble,
        proxy: &CountingProxy,
        containers: usize,
    ) -> Vec<(String, String)> {
        [
            ("ORDERS_TABLE", tables.orders.clone()),
            ("SYNC_TABLE", tables.sync.clone()),
            ("POLAR_API_URL", polar.base_url()),
            ("POLAR_ACCESS_TOKEN", TOKEN.to_owned()),
            ("DEAD_LETTER_QUEUE_URL", queues.dead_letter_url.clone()),
            ("MAXIMUM_CONCURRENCY", containers.max(2).to_string()),
            ("AWS_ENDPOINT_URL", proxy.url()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
            // As the template's `LogFormat: JSON` deploys it: the bytes it logs are costed.
            ("AWS_LAMBDA_LOG_FORMAT", "JSON".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// One run of `spec` by `algorithm`, on fresh tables, queues and Polar double.
    pub async fn run(&self, spec: &WorkloadSpec, algorithm: Algorithm) -> Measurement {
        let setup = match self.set_up(spec).await {
            Ok(setup) => setup,
            Err(error) => return Measurement::failed(spec, algorithm, error),
        };
        let invokers = match self.start_invokers(spec, algorithm, &setup).await {
            Ok(invokers) => invokers,
            Err(error) => return Measurement::failed(spec, algorithm, error),
        };
        let pollers = Pollers::new(setup.queues.clone());
        if let Err(error) = self.warm_up(&pollers, &invokers, &setup).await {
            return Measurement::failed(spec, algorithm, error);
        }

        let log_marks: Vec<u64> = invokers
            .iter()
            .map(|invoker| match invoker {
                Invoker::Function(container) => container.log_mark(),
                Invoker::Original(_) => 0,
            })
            .collect();
        let polar_baseline = setup.polar.requests().len();
        setup.polar.reset_rate_limit_window();
        pollers
            .drain(
                &invokers,
                setup.plan.bodies.clone(),
                spec.batching(algorithm),
                FUNCTION_TIMEOUT,
                spec.bound,
            )
            .await;
        let aws_requests = setup.proxy.counts();
        let moto_busy = setup.proxy.moto_busy();
        let moto_spans = setup.proxy.moto_busy_spans();
        let capacity = setup.proxy.capacity();
        let mut logged = LogBytes::default();
        let mut peak_rss_bytes = None;
        for (invoker, mark) in invokers.into_iter().zip(log_marks) {
            if let Invoker::Function(container) = invoker {
                logged.add(container.logged_since(mark));
                peak_rss_bytes = peak_rss_bytes.max(container.peak_rss_bytes());
                container.stop().await;
            }
        }

        let mut measurement = self.check(spec, algorithm, &setup, polar_baseline).await;
        measurement.progress = pollers.progress();
        measurement.time_split = measurement.progress.wall_span().map(|wall| {
            let polar = setup.polar.requests().split_off(polar_baseline);
            let moto = [moto_spans, measurement.progress.finishing.clone()].concat();
            TimeSplit::of(wall, &polar_spans(&polar, setup.polar_started), &moto)
        });
        measurement.aws_requests = aws_requests;
        measurement.moto_busy = moto_busy;
        measurement.capacity = capacity;
        measurement.logged = logged;
        measurement.peak_rss_bytes = peak_rss_bytes;
        setup.tables.delete(&self.dynamo).await;
        setup.queues.delete().await;
        measurement
    }

    /// The run's own Polar double (with the latency, Polar's rate limit, the discounts),
    /// counting proxy, tables (with the orders) and queues.
    async fn set_up(&self, spec: &WorkloadSpec) -> Result<Setup, String> {
        let polar_started = Instant::now();
        let polar = PolarDouble::start_with(DoubleConfig {
            token: Some(TOKEN.into()),
            rate_limit_per_minute: Some(POLAR_REQUESTS_PER_MINUTE),
            ..DoubleConfig::default()
        })
        .await
        .map_err(|e| format!("Polar double: {e}"))?;
        if !self.polar_latency.is_zero() {
            polar.inject(
                Fault::new(FaultAction::Delay {
                    millis: self.polar_latency.as_millis() as u64,
                })
                .times(u32::MAX),
            );
        }
        let proxy = CountingProxy::start(&self.moto, spec.dynamodb_latency)
            .await
            .map_err(|e| format!("counting proxy: {e}"))?;
        let tables = Tables::create(&self.dynamo).await;
        let queues = Queues::create(self.sqs.clone(), QUEUE_SETTINGS).await;

        let plan = Plan::new(spec);
        for (code, id) in &plan.discounts {
            polar.insert_discount(discount_seed(code, *id));
        }
        let warm_ups: Vec<Order> = (1..=spec.containers)
            .map(|n| {
                let code = format!("WARMUP{n}");
                Order {
                    id: format!("ord-warm-up-{n}"),
                    discount: polar.insert_discount(discount_seed(&code, Uuid::new_v4())),
                    code,
                }
            })
            .collect();
        let all_orders = [plan.orders.clone(), warm_ups.clone()].concat();
        tables.put_orders(&self.dynamo, &all_orders).await;
        Ok(Setup {
            polar,
            polar_started,
            proxy,
            tables,
            queues,
            plan,
            warm_ups,
        })
    }

    /// One order per container, on its own discount, outside the measurement: connections
    /// opened, the queue's redrive policy read. Then the counters start from zero.
    async fn warm_up(
        &self,
        pollers: &Pollers,
        invokers: &[Invoker],
        setup: &Setup,
    ) -> Result<(), String> {
        for (invoker, order) in invokers.iter().zip(&setup.warm_ups) {
            setup.queues.send(&order.message_body(), None).await;
            if !pollers
                .poll_once(invoker, ONE_MESSAGE, FUNCTION_TIMEOUT)
                .await
            {
                return Err("the warm-up message was not received".into());
            }
        }
        pollers.reset();
        setup.proxy.reset();
        Ok(())
    }

    /// Polar's requests since `polar_baseline` and its final limits, the orders, the dead
    /// letters.
    async fn check(
        &self,
        spec: &WorkloadSpec,
        algorithm: Algorithm,
        setup: &Setup,
        polar_baseline: usize,
    ) -> Measurement {
        let plan = &setup.plan;
        let requests = setup.polar.requests().split_off(polar_baseline);
        let ids: Vec<String> = plan.orders.iter().map(|o| o.id.clone()).collect();
        let synced: HashSet<String> = (setup.tables.orders(&self.dynamo, &ids).await)
            .into_iter()
            .filter(|(_, order)| is_synced(order))
            .map(|(id, _)| id)
            .collect();
        let limits = LimitCheck::of(&setup.polar, plan, &synced);
        let dead_letters: Vec<String> = (setup.queues.dead_letters().await)
            .into_iter()
            .map(|letter| letter.body)
            .collect();
        Measurement {
            algorithm,
            messages: spec.messages(),
            orders: spec.orders(),
            progress: Progress::default(),
            polar_requests: requests.len(),
            polar_429s: requests.iter().filter(|r| r.status == Some(429)).count(),
            hot: spec
                .hot_code
                .as_ref()
                .and_then(|code| plan.hot_code(code, &requests)),
            aws_requests: RequestCounts::default(),
            moto_busy: Duration::ZERO,
            time_split: None,
            capacity: Capacity::default(),
            logged: LogBytes::default(),
            dead_letters: dead_letters.len(),
            dead_lettered_orders: plan.orders_named_in(&dead_letters),
            orders_synced: synced.len(),
            discounts: plan.discounts.len(),
            discounts_exact: limits.exact,
            discounts_matching_synced: limits.matching_synced,
            limit_excess: limits.excess,
            peak_rss_bytes: None,
            requests_in_order: request_reasons::in_order(
                &setup.proxy.requests(),
                &requests,
                setup.polar_started,
            ),
            failure: None,
        }
    }

    async fn start_invokers(
        &self,
        spec: &WorkloadSpec,
        algorithm: Algorithm,
        setup: &Setup,
    ) -> Result<Vec<Invoker>, String> {
        let mut invokers = Vec::new();
        for _ in 0..spec.containers {
            invokers.push(match algorithm {
                Algorithm::Function => {
                    let env = self.function_env(
                        &setup.tables,
                        &setup.queues,
                        &setup.polar,
                        &setup.proxy,
                        spec.containers,
                    );
                    Invoker::Function(Container::start(&self.binary, &env).await?)
                }
                Algorithm::Original => {
                    let aws: SdkConfig = aws_config(&setup.proxy.url()).await;
                    Invoker::Original(OriginalSync::new(
                        &aws,
                        &setup.tables.orders,
                        &setup.polar.base_url(),
                        TOKEN,
                    ))
                }
            });
        }
        Ok(invokers)
    }
}

/// Each discount's final `max_redemptions` against its initial value less its distinct
/// orders (all of them should be counted), and less its orders marked synced (the contract:
/// Polar counts exactly the orders synced, whatever was dead-lettered).
struct LimitCheck {
    exact: usize,
    matching_synced: usize,
    excess: i64,
}

impl LimitCheck {
    fn of(polar: &PolarDouble, plan: &Plan, synced: &HashSet<String>) -> LimitCheck {
        let mut check = LimitCheck {
            exact: 0,
            matching_synced: 0,
            excess: 0,
        };
        for (_, id) in &plan.discounts {
            let orders = plan.orders.iter().filter(|o| o.discount == *id);
            let all = orders.clone().count() as i64;
            let marked = orders.filter(|o| synced.contains(&o.id)).count() as i64;
            // Deleted or made unlimited: nothing in these workloads may do either.
            let left = polar.max_redemptions(*id).flatten().unwrap_or(0);
            check.exact += usize::from(left == INITIAL_MAX_REDEMPTIONS - all);
            check.matching_synced += usize::from(left == INITIAL_MAX_REDEMPTIONS - marked);
            check.excess += left - (INITIAL_MAX_REDEMPTIONS - all);
        }
        check
    }
}

impl Plan {
    fn hot_code(&self, code: &str, requests: &[RecordedRequest]) -> Option<HotCode> {
        let (_, id) = self.discounts.iter().find(|(c, _)| c == code)?;
        let path = format!("/v1/discounts/{id}");
        Some(HotCode {
            requests: requests
                .iter()
                .filter(|r| r.path.trim_end_matches('/') == path)
                .count(),
            orders: self.orders.iter().filter(|o| o.discount == *id).count(),
        })
    }

    /// Distinct orders of this plan (all valid) named by these message bodies.
    fn orders_named_in(&self, bodies: &[String]) -> usize {
        let ids: HashSet<&str> = self.orders.iter().map(|o| o.id.as_str()).collect();
        let named: HashSet<String> = bodies
            .iter()
            .filter_map(|body| {
                let body: serde_json::Value = serde_json::from_str(body).ok()?;
                Some(body.get("orderId")?.as_str()?.to_owned())
            })
            .filter(|id| ids.contains(id.as_str()))
            .collect();
        named.len()
    }
}

fn discount_seed(code: &str, id: Uuid) -> DiscountSeed {
    DiscountSeed::new(format!("{code} discount"))
        .id(id)
        .code(code)
        .max_redemptions(INITIAL_MAX_REDEMPTIONS)
}

/// When each answered Polar request was in flight, on the bench's clock (`started`: just
/// before the double started, the origin of its times).
fn polar_spans(requests: &[RecordedRequest], started: Instant) -> Vec<Span> {
    requests
        .iter()
        .filter_map(|request| {
            let answered = request.answered_at_us?;
            Some(Span::new(
                started + Duration::from_micros(request.received_at_us),
                started + Duration::from_micros(answered),
            ))
        })
        .collect()
}
