//! Issue 3's invariant test: a seeded, randomized workload of more than 1 000 redemptions
//! over a dozen discounts is pushed through a simulated SQS queue by concurrent
//! invocations (in-process handlers and real function processes), with duplicate
//! deliveries, Polar faults, crashes at every step boundary and killed processes. Once
//! everything has been redelivered until the queue is empty, an invariant checker
//! compares Polar and the orders table with what exactly-once demands.
//!
//! The seed fixes the workload and every fault, crash and kill decision; it is printed at
//! the start and in every assertion message. Rerun with `INVARIANT_SEED=<seed>`.
//! Concurrency means two runs with one seed are not identical step for step.
//!
//! `INVARIANT_FUNCTION_LOG` sets the function processes' log level (default `error`).

mod support;

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_dynamodb::primitives::{DateTime, DateTimeFormat};
use aws_sdk_dynamodb::types::AttributeValue;
use fastrand::Rng;
use lambda_driver::{FunctionProcess, Outcome, RuntimeApi};
use lambda_runtime::{Context, LambdaEvent};
use polar_discount_sync::lambda::Wiring;
use polar_discount_sync::sync::{Checkpoint, Step};
use polar_double::{Fault, FaultAction};
use serde_json::{json, Value};
use support::World;
use uuid::Uuid;

const BINARY: &str = env!("CARGO_BIN_EXE_polar-discount-sync");

// The workload.
const DISCOUNTS_PER_KIND: usize = 4;
const MIN_ORDERS: usize = 1_000;
const ORDERS_PER_DISCOUNT: std::ops::RangeInclusive<usize> = 45..=75;
/// Share of orders whose message is delivered twice by the checkout side (SQS duplicates).
const DUPLICATE_SHARE: f64 = 0.2;
const MAX_BATCH: usize = 10;

// The invocations.
const IN_PROCESS_WORKERS: usize = 4;
const PROCESS_WORKERS: usize = 2;
/// Short enough that a crashed in-process invocation blocks its discounts for at most
/// ~20 s (deadline + LEASE_GRACE), long enough to start messages (START_MARGIN is 8 s).
const IN_PROCESS_TIMEOUT: Duration = Duration::from_secs(10);
/// The deployed function's timeout.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(30);
/// The in-process Polar client's request timeout: shorter than the injected delays.
const IN_PROCESS_POLAR_TIMEOUT: Duration = Duration::from_millis(800);

// Crashes and kills.
const STEPS: [Step; 5] = [
    Step::LeaseTaken,
    Step::ClaimTaken,
    Step::JournalWritten,
    Step::PolarWritten,
    Step::OrdersMarked,
];
/// At each step boundary an in-process invocation crashes with `CRASH_PROBABILITY`. So
/// that every step surely crashes, and not all at the start, each step also gets
/// `MIN_CRASHES_PER_STEP` seeded due points (shares of messages acknowledged, within
/// `CRASH_DUE`): once one is passed and not yet met, that step crashes with
/// `DUE_CRASH_PROBABILITY`.
const MIN_CRASHES_PER_STEP: usize = 2;
const CRASH_DUE: std::ops::Range<f64> = 0.02..0.7;
const DUE_CRASH_PROBABILITY: f64 = 0.1;
const CRASH_PROBABILITY: f64 = 0.0015;
const CRASH_MARKER: &str = "simulated crash";
const MAX_KILLS: usize = 4;
/// No more kills once fewer messages than this share are left: a killed process holds
/// its leases until its deadline + LEASE_GRACE (40 s), which would only stretch the tail.
const KILLS_UNTIL_LEFT: f64 = 0.25;

// Polar faults: one after every few Polar requests.
const REQUESTS_BETWEEN_FAULTS: std::ops::RangeInclusive<usize> = 5..=14;
const MAX_DELETE_FAULTS: u64 = 3;
const DELAY_MILLIS: u64 = 1_500;

/// The whole run (not counting setup and checks) must settle within this.
const SETTLE_LIMIT: Duration = Duration::from_secs(8 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unlimited,
    Large,
    ExactlyEnough,
    Oversold,
}

struct DiscountPlan {
    id: Uuid,
    code: String,
    kind: Kind,
    initial: Option<i64>,
    orders: Vec<String>,
}

struct Workload {
    discounts: Vec<DiscountPlan>,
    /// (message id, body), in delivery order.
    messages: Vec<(String, String)>,
}

/// A message as the queue holds it.
#[derive(Debug, Clone)]
struct Message {
    id: String,
    body: String,
    /// How often it was handed to an invocation (SQS's `ApproximateReceiveCount`).
    receives: u32,
}

/// One in-process invocation of a handler (whatever its type parameters).
type Invocation =
    Pin<Box<dyn Future<Output = Result<SqsBatchResponse, lambda_runtime::Error>> + Send>>;
type HandleFn = Arc<dyn Fn(LambdaEvent<SqsEvent>) -> Invocation + Send + Sync>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_discount_ends_exactly_once_whatever_happens_on_the_way() {
    let seed = std::env::var("INVARIANT_SEED")
        .ok()
        .map(|raw| raw.trim().parse::<u64>().expect("INVARIANT_SEED is a u64"))
        .unwrap_or_else(|| fastrand::u64(..));
    println!("invariant seed = {seed} (rerun with INVARIANT_SEED={seed})");
    quiet_simulated_crashes();
    let started = Instant::now();
    let started_at = SystemTime::now();

    let world = Arc::new(World::start().await);
    let mut rng = Rng::with_seed(seed);
    let workload = build_workload(&world, &mut rng).await;
    let order_count: usize = workload.discounts.iter().map(|d| d.orders.len()).sum();
    println!(
        "seed {seed}: {} discounts, {order_count} orders, {} messages",
        workload.discounts.len(),
        workload.messages.len()
    );

    let queue = Arc::new(Queue::new(&workload.messages));
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let crash_plan = Arc::new(CrashPlan::new(&mut rng));

    for index in 0..IN_PROCESS_WORKERS {
        let checkpoint = crash_hook(
            Rng::with_seed(rng.u64(..)),
            crash_plan.clone(),
            queue.clone(),
            stats.clone(),
        );
        let mut config = world.config();
        config.polar_request_timeout = IN_PROCESS_POLAR_TIMEOUT;
        let handler = Arc::new(
            world
                .handler_on(
                    &support::SqsBackend::Moto,
                    &config,
                    Wiring {
                        checkpoint: Some(checkpoint),
                        dynamo: None,
                    },
                )
                .await,
        );
        let handle: HandleFn = Arc::new(move |event| -> Invocation {
            let handler = handler.clone();
            Box::pin(async move { handler.handle(event).await })
        });
        let worker = Worker {
            queue: queue.clone(),
            stats: stats.clone(),
            stop: stop.clone(),
            rng: Rng::with_seed(rng.u64(..)),
        };
        tasks.push(tokio::spawn(worker.run(format!("in-process {index}"), {
            move |batch| invoke_in_process(handle.clone(), batch)
        })));
    }

    let env = function_env(&world);
    let mut processes = Vec::new();
    for index in 0..PROCESS_WORKERS {
        let api = RuntimeApi::start().await.expect("runtime API starts");
        let process = FunctionProcess::spawn(Path::new(BINARY), &env, &api).expect("spawn");
        let slot = Arc::new(ProcessSlot {
            api,
            process: tokio::sync::Mutex::new(process),
            busy: AtomicBool::new(false),
        });
        processes.push(slot.clone());
        let worker = Worker {
            queue: queue.clone(),
            stats: stats.clone(),
            stop: stop.clone(),
            rng: Rng::with_seed(rng.u64(..)),
        };
        tasks.push(tokio::spawn(worker.run(format!("process {index}"), {
            move |batch| invoke_process(slot.clone(), batch)
        })));
    }

    tasks.push(tokio::spawn(killer(
        processes.clone(),
        env.clone(),
        queue.clone(),
        Rng::with_seed(rng.u64(..)),
        stats.clone(),
        stop.clone(),
    )));
    tasks.push(tokio::spawn(fault_injector(
        world.clone(),
        Rng::with_seed(rng.u64(..)),
        stats.clone(),
        stop.clone(),
    )));

    // Redeliver until settled.
    let mut last_progress = Instant::now();
    let settled = loop {
        if queue.settled() {
            break true;
        }
        if started.elapsed() > SETTLE_LIMIT {
            break false;
        }
        if last_progress.elapsed() >= Duration::from_secs(10) {
            last_progress = Instant::now();
            let (ready, in_flight, acked) = queue.progress();
            println!(
                "seed {seed}: {:>4.0} s: {acked} of {} messages acknowledged, {ready} queued, {in_flight} invocations in flight",
                started.elapsed().as_secs_f64(),
                workload.messages.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let run_time = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        if let Err(err) = task.await {
            panic!("seed {seed}: a harness task failed: {err}");
        }
    }
    for slot in &processes {
        slot.process.lock().await.kill().await;
    }
    world.polar.clear_faults();
    if !settled {
        let (ready, in_flight, acked) = queue.progress();
        let left: Vec<String> = queue.ready_bodies().into_iter().take(20).collect();
        panic!(
            "seed {seed}: the queue did not settle within {SETTLE_LIMIT:?}: {acked} acknowledged, \
             {ready} still queued, {in_flight} in flight; first messages left: {left:#?}\n{}",
            stats.report(seed, order_count, &world, run_time, started.elapsed())
        );
    }
    // A request that outlived its invocation (a delayed one, say) lands within this.
    tokio::time::sleep(Duration::from_millis(DELAY_MILLIS + 1_000)).await;

    let problems = check_invariants(&world, &workload, &queue, &stats, seed, started_at).await;
    println!(
        "{}",
        stats.report(seed, order_count, &world, run_time, started.elapsed())
    );
    assert!(
        problems.is_empty(),
        "seed {seed}: {} invariant violations (rerun with INVARIANT_SEED={seed}):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// The workload

async fn build_workload(world: &World, rng: &mut Rng) -> Workload {
    let kinds = [
        Kind::Unlimited,
        Kind::Large,
        Kind::ExactlyEnough,
        Kind::Oversold,
    ];
    let mut discounts = Vec::new();
    let mut total = 0;
    for round in 0..DISCOUNTS_PER_KIND {
        for kind in kinds {
            let index = discounts.len();
            let mut count = rng.usize(ORDERS_PER_DISCOUNT);
            // The last discount tops the workload up to the minimum.
            if round + 1 == DISCOUNTS_PER_KIND && kind == Kind::Oversold {
                count = count.max(MIN_ORDERS.saturating_sub(total));
            }
            total += count;
            let count_i64 = count as i64;
            let initial = match kind {
                Kind::Unlimited => None,
                Kind::Large => Some(count_i64 * rng.i64(3..=10) + rng.i64(0..=500)),
                Kind::ExactlyEnough => Some(count_i64),
                Kind::Oversold => Some(rng.i64(1..=count_i64 / 2)),
            };
            let letters: String = (0..4).map(|_| rng.uppercase()).collect();
            let code = format!("INV{index:02}{letters}");
            let id = world.discount(&code, initial);
            let orders = (0..count)
                .map(|n| format!("ord_{index:02}_{n:04}"))
                .collect();
            discounts.push(DiscountPlan {
                id,
                code,
                kind,
                initial,
                orders,
            });
        }
    }

    let rows: Vec<(String, Uuid, String)> = discounts
        .iter()
        .flat_map(|d| d.orders.iter().map(|o| (o.clone(), d.id, d.code.clone())))
        .collect();
    world.put_orders(&rows).await;

    let mut bodies = Vec::new();
    for discount in &discounts {
        for order in &discount.orders {
            let copies = if rng.f64() < DUPLICATE_SHARE { 2 } else { 1 };
            for _ in 0..copies {
                let code = random_case(rng, &discount.code);
                bodies.push(support::body(order, discount.id, &code));
            }
        }
    }
    rng.shuffle(&mut bodies);
    let messages = bodies
        .into_iter()
        .enumerate()
        .map(|(n, body)| (format!("msg-{n:05}"), body))
        .collect();
    Workload {
        discounts,
        messages,
    }
}

fn random_case(rng: &mut Rng, code: &str) -> String {
    code.chars()
        .map(|c| {
            if rng.bool() {
                c.to_ascii_lowercase()
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The simulated SQS queue

struct Queue {
    state: Mutex<QueueState>,
    total: usize,
}

struct QueueState {
    ready: VecDeque<Message>,
    in_flight: usize,
    /// Acknowledgements per message id (must end at exactly one each).
    acked: HashMap<String, u32>,
    /// Message ids that ever appeared in a batch's failures without being in it.
    strangers: Vec<String>,
}

impl Queue {
    fn new(messages: &[(String, String)]) -> Self {
        let ready = messages
            .iter()
            .map(|(id, body)| Message {
                id: id.clone(),
                body: body.clone(),
                receives: 0,
            })
            .collect();
        Self {
            total: messages.len(),
            state: Mutex::new(QueueState {
                ready,
                in_flight: 0,
                acked: HashMap::new(),
                strangers: Vec::new(),
            }),
        }
    }

    /// Takes up to `size` messages from the front, as one receive of an event source.
    fn take(&self, size: usize) -> Option<Vec<Message>> {
        let mut state = self.state.lock().unwrap();
        if state.ready.is_empty() {
            return None;
        }
        let size = size.min(state.ready.len());
        let mut batch: Vec<Message> = state.ready.drain(..size).collect();
        for message in &mut batch {
            message.receives += 1;
        }
        state.in_flight += 1;
        Some(batch)
    }

    /// Ends an invocation: `failed` lists the messages to deliver again (`None`: all of
    /// them, as when the invocation crashed); the rest are acknowledged (deleted).
    fn finish(&self, batch: Vec<Message>, failed: Option<&[String]>) {
        let mut state = self.state.lock().unwrap();
        state.in_flight -= 1;
        if let Some(failed) = failed {
            for id in failed {
                if !batch.iter().any(|m| m.id == *id) {
                    state.strangers.push(id.clone());
                }
            }
        }
        for message in batch {
            let again = failed.is_none_or(|ids| ids.contains(&message.id));
            if again {
                state.ready.push_back(message);
            } else {
                *state.acked.entry(message.id).or_default() += 1;
            }
        }
    }

    fn settled(&self) -> bool {
        let state = self.state.lock().unwrap();
        state.ready.is_empty() && state.in_flight == 0
    }

    /// (queued, in flight, acknowledged)
    fn progress(&self) -> (usize, usize, usize) {
        let state = self.state.lock().unwrap();
        (state.ready.len(), state.in_flight, state.acked.len())
    }

    /// The share of messages not acknowledged yet.
    fn left_share(&self) -> f64 {
        let acked = self.state.lock().unwrap().acked.len();
        1.0 - acked as f64 / self.total.max(1) as f64
    }

    fn ready_bodies(&self) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state.ready.iter().map(|m| m.body.clone()).collect()
    }
}

// ---------------------------------------------------------------------------------------
// Workers: one invocation at a time each, like one Lambda execution environment

/// What became of one invocation.
enum Delivery {
    /// The function answered: these messages are to be delivered again.
    Answered(Vec<String>),
    /// Simulated crash (in-process panic) or killed process.
    Crashed,
    TimedOut,
    /// The invocation failed as a whole for another reason.
    Errored(String),
}

struct Worker {
    queue: Arc<Queue>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    rng: Rng,
}

impl Worker {
    async fn run<F, Fut>(mut self, name: String, invoke: F)
    where
        F: Fn(Vec<Message>) -> Fut,
        Fut: Future<Output = Delivery>,
    {
        while !self.stop.load(Ordering::SeqCst) {
            let size = self.rng.usize(1..=MAX_BATCH);
            let Some(batch) = self.queue.take(size) else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            self.stats.invocations.fetch_add(1, Ordering::Relaxed);
            self.stats
                .deliveries
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            match invoke(batch.clone()).await {
                Delivery::Answered(failed) => {
                    self.stats
                        .failed_messages
                        .fetch_add(failed.len() as u64, Ordering::Relaxed);
                    self.queue.finish(batch, Some(&failed));
                }
                Delivery::Crashed => {
                    self.stats.crashed.fetch_add(1, Ordering::Relaxed);
                    self.queue.finish(batch, None);
                }
                Delivery::TimedOut => {
                    self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                    self.queue.finish(batch, None);
                }
                Delivery::Errored(error) => {
                    self.stats.errored.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .errors
                        .lock()
                        .unwrap()
                        .push(format!("{name}: {error}"));
                    self.queue.finish(batch, None);
                }
            }
        }
    }
}

async fn invoke_in_process(handle: HandleFn, batch: Vec<Message>) -> Delivery {
    let event = sqs_event(&batch, IN_PROCESS_TIMEOUT);
    // A task of its own, so that a panic at a checkpoint ends this invocation only,
    // dropping whatever it was doing, as a crash would.
    let invocation = tokio::spawn(handle(event));
    let abort = invocation.abort_handle();
    match tokio::time::timeout(IN_PROCESS_TIMEOUT + Duration::from_millis(500), invocation).await {
        Err(_) => {
            abort.abort();
            Delivery::TimedOut
        }
        Ok(Err(join)) if join.is_panic() => Delivery::Crashed,
        Ok(Err(join)) => Delivery::Errored(format!("invocation task: {join}")),
        Ok(Ok(Err(error))) => Delivery::Errored(format!("handler error: {error}")),
        Ok(Ok(Ok(response))) => Delivery::Answered(support::failed_ids(&response)),
    }
}

struct ProcessSlot {
    api: RuntimeApi,
    process: tokio::sync::Mutex<FunctionProcess>,
    busy: AtomicBool,
}

async fn invoke_process(slot: Arc<ProcessSlot>, batch: Vec<Message>) -> Delivery {
    // Wait while the killer is replacing the process.
    drop(slot.process.lock().await);
    let records: Vec<Value> = batch
        .iter()
        .map(|message| {
            json!({
                "messageId": message.id,
                "receiptHandle": receipt_handle(message),
                "body": message.body,
                "attributes": { "ApproximateReceiveCount": message.receives.to_string() },
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": QUEUE_ARN,
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    slot.busy.store(true, Ordering::SeqCst);
    let outcome = slot
        .api
        .invoke(json!({ "Records": records }), PROCESS_TIMEOUT)
        .await;
    slot.busy.store(false, Ordering::SeqCst);
    match outcome {
        Outcome::Response(response) => match response["batchItemFailures"].as_array() {
            Some(failures) => Delivery::Answered(
                failures
                    .iter()
                    .map(|f| f["itemIdentifier"].as_str().unwrap_or_default().to_owned())
                    .collect(),
            ),
            None => Delivery::Errored(format!("not a partial batch response: {response}")),
        },
        Outcome::Error { error_type, .. } if error_type == "Runtime.ExitError" => Delivery::Crashed,
        Outcome::Error {
            error_type,
            error_message,
        } => Delivery::Errored(format!("{error_type}: {error_message}")),
        Outcome::TimedOut => Delivery::TimedOut,
        Outcome::InitError(body) => Delivery::Errored(format!("init error: {body}")),
    }
}

const QUEUE_ARN: &str = "arn:aws:sqs:us-east-1:000000000000:polar-discount-sync";

fn receipt_handle(message: &Message) -> String {
    format!("{}-receive-{}", message.id, message.receives)
}

/// The Lambda event for a batch, as the SQS event source builds it.
fn sqs_event(batch: &[Message], timeout: Duration) -> LambdaEvent<SqsEvent> {
    let mut event = SqsEvent::default();
    event.records = batch
        .iter()
        .map(|message| {
            let mut record = SqsMessage::default();
            record.message_id = Some(message.id.clone());
            record.receipt_handle = Some(receipt_handle(message));
            record.body = Some(message.body.clone());
            record.attributes = HashMap::from([(
                "ApproximateReceiveCount".to_owned(),
                message.receives.to_string(),
            )]);
            record.event_source = Some("aws:sqs".into());
            record.event_source_arn = Some(QUEUE_ARN.into());
            record.aws_region = Some("us-east-1".into());
            record
        })
        .collect();
    let mut context = Context::default();
    context.request_id = Uuid::new_v4().to_string();
    context.deadline = (SystemTime::now() + timeout)
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    LambdaEvent::new(event, context)
}

fn function_env(world: &World) -> Vec<(String, String)> {
    let mut env = world.env();
    let level = std::env::var("INVARIANT_FUNCTION_LOG").unwrap_or_else(|_| "error".to_owned());
    env.push(("AWS_LAMBDA_LOG_LEVEL".to_owned(), level));
    env
}

// ---------------------------------------------------------------------------------------
// Crashes, kills and faults

/// Per step, the progress (share of messages acknowledged) by which its first crashes are due.
struct CrashPlan {
    due: [Vec<f64>; 5],
}

impl CrashPlan {
    fn new(rng: &mut Rng) -> Self {
        let mut due = [(); 5].map(|()| {
            (0..MIN_CRASHES_PER_STEP)
                .map(|_| CRASH_DUE.start + rng.f64() * (CRASH_DUE.end - CRASH_DUE.start))
                .collect::<Vec<f64>>()
        });
        for points in &mut due {
            points.sort_by(f64::total_cmp);
        }
        Self { due }
    }

    fn probability(&self, step: usize, crashes: u64, progress: f64) -> f64 {
        match self.due[step].get(crashes as usize) {
            Some(due) if progress >= *due => DUE_CRASH_PROBABILITY,
            _ => CRASH_PROBABILITY,
        }
    }
}

/// The syncer's checkpoint: panics (a simulated crash) with a small seeded probability.
fn crash_hook(rng: Rng, plan: Arc<CrashPlan>, queue: Arc<Queue>, stats: Arc<Stats>) -> Checkpoint {
    let rng = Mutex::new(rng);
    Arc::new(move |step: Step| {
        let index = step_index(step);
        stats.passed[index].fetch_add(1, Ordering::Relaxed);
        let crashes = stats.crashes[index].load(Ordering::SeqCst);
        let progress = 1.0 - queue.left_share();
        let probability = plan.probability(index, crashes, progress);
        let crash = rng.lock().unwrap().f64() < probability;
        if crash {
            stats.crashes[index].fetch_add(1, Ordering::SeqCst);
            panic!("{CRASH_MARKER} at {step:?}");
        }
    })
}

fn step_index(step: Step) -> usize {
    STEPS
        .iter()
        .position(|s| *s == step)
        .expect("every step is listed")
}

/// Simulated crashes are expected: keep their panic messages out of the output.
fn quiet_simulated_crashes() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if !message.starts_with(CRASH_MARKER) {
            previous(info);
        }
    }));
}

/// Sleeps, in short naps so that a stop is noticed; false if stopped.
async fn nap(stop: &AtomicBool, duration: Duration) -> bool {
    let until = Instant::now() + duration;
    while Instant::now() < until {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let left = until.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_millis(100))).await;
    }
    !stop.load(Ordering::SeqCst)
}

/// Kills a function process at random moments, preferably in the middle of an
/// invocation, and starts a fresh one in its place (a new execution environment).
async fn killer(
    slots: Vec<Arc<ProcessSlot>>,
    env: Vec<(String, String)>,
    queue: Arc<Queue>,
    mut rng: Rng,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) {
    for _ in 0..MAX_KILLS {
        if !nap(&stop, Duration::from_millis(rng.u64(3_000..=8_000))).await {
            return;
        }
        if queue.left_share() < KILLS_UNTIL_LEFT {
            return;
        }
        let slot = &slots[rng.usize(..slots.len())];
        // Wait (a little) for an invocation to be running, then let it get going.
        for _ in 0..50 {
            if slot.busy.load(Ordering::SeqCst) || stop.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !nap(&stop, Duration::from_millis(rng.u64(0..=1_500))).await {
            return;
        }
        let mut process = slot.process.lock().await;
        let mid_invocation = slot.busy.load(Ordering::SeqCst);
        process.kill().await;
        stats.kills.fetch_add(1, Ordering::Relaxed);
        if mid_invocation {
            stats.kills_mid_invocation.fetch_add(1, Ordering::Relaxed);
        }
        // Let the Runtime API report the exit to the waiting invocation first.
        tokio::time::sleep(Duration::from_millis(200)).await;
        *process = FunctionProcess::spawn(Path::new(BINARY), &env, &slot.api)
            .expect("respawn the function process");
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultKind {
    Status500,
    Status502,
    Status503,
    RateLimitedNoWait,
    RateLimited1s,
    Delay,
    DropConnection,
    PatchAppliedResponseLost,
    DeleteAppliedResponseLost,
}

const FAULT_KINDS: [FaultKind; 9] = [
    FaultKind::Status500,
    FaultKind::Status502,
    FaultKind::Status503,
    FaultKind::RateLimitedNoWait,
    FaultKind::RateLimited1s,
    FaultKind::Delay,
    FaultKind::DropConnection,
    FaultKind::PatchAppliedResponseLost,
    FaultKind::DeleteAppliedResponseLost,
];

impl FaultKind {
    fn name(self) -> &'static str {
        match self {
            Self::Status500 => "500",
            Self::Status502 => "502",
            Self::Status503 => "503",
            Self::RateLimitedNoWait => "429 retry-after 0",
            Self::RateLimited1s => "429 retry-after 1",
            Self::Delay => "delay 1500 ms",
            Self::DropConnection => "dropped connection",
            Self::PatchAppliedResponseLost => "PATCH applied, response lost",
            Self::DeleteAppliedResponseLost => "DELETE applied, response lost",
        }
    }

    fn fault(self) -> Fault {
        let status = |status: u16, body: &str| FaultAction::status(status, body);
        match self {
            Self::Status500 => Fault::new(status(500, r#"{"detail":"Internal Server Error"}"#)),
            Self::Status502 => Fault::new(status(502, "Bad Gateway")),
            Self::Status503 => Fault::new(status(503, r#"{"detail":"Service Unavailable"}"#)),
            Self::RateLimitedNoWait => Fault::new(FaultAction::too_many_requests(0)),
            Self::RateLimited1s => Fault::new(FaultAction::too_many_requests(1)),
            Self::Delay => Fault::new(FaultAction::Delay {
                millis: DELAY_MILLIS,
            }),
            Self::DropConnection => Fault::new(FaultAction::DropConnection),
            Self::PatchAppliedResponseLost => {
                Fault::new(FaultAction::ApplyThenDropConnection).method("PATCH")
            }
            Self::DeleteAppliedResponseLost => {
                Fault::new(FaultAction::ApplyThenDropConnection).method("DELETE")
            }
        }
    }
}

/// Injects one fault (for the next matching request, any discount) after every few Polar
/// requests, so that faults keep pace with the traffic.
async fn fault_injector(world: Arc<World>, mut rng: Rng, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    let mut next_at = rng.usize(REQUESTS_BETWEEN_FAULTS);
    let mut delete_faults = 0;
    // The first DELETEs lose their response: there are only a few DELETEs in a run.
    world
        .polar
        .inject(FaultKind::DeleteAppliedResponseLost.fault());
    stats.count_fault(FaultKind::DeleteAppliedResponseLost);
    delete_faults += 1;
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let seen = world.polar.requests().len();
        if seen < next_at {
            continue;
        }
        let mut kind = FAULT_KINDS[rng.usize(..FAULT_KINDS.len())];
        if kind == FaultKind::DeleteAppliedResponseLost {
            if delete_faults >= MAX_DELETE_FAULTS {
                kind = FaultKind::PatchAppliedResponseLost;
            } else {
                delete_faults += 1;
            }
        }
        world.polar.inject(kind.fault());
        stats.count_fault(kind);
        next_at = seen + rng.usize(REQUESTS_BETWEEN_FAULTS);
    }
}

// ---------------------------------------------------------------------------------------
// Statistics and the report

#[derive(Default)]
struct Stats {
    invocations: AtomicU64,
    deliveries: AtomicU64,
    failed_messages: AtomicU64,
    crashed: AtomicU64,
    timed_out: AtomicU64,
    errored: AtomicU64,
    errors: Mutex<Vec<String>>,
    crashes: [AtomicU64; 5],
    /// Step boundaries passed in-process (crashed or not).
    passed: [AtomicU64; 5],
    kills: AtomicUsize,
    kills_mid_invocation: AtomicUsize,
    faults: Mutex<Vec<(FaultKind, u64)>>,
}

impl Stats {
    fn count_fault(&self, kind: FaultKind) {
        let mut faults = self.faults.lock().unwrap();
        match faults.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => faults.push((kind, 1)),
        }
    }

    fn crashes_at(&self, step: Step) -> u64 {
        self.crashes[step_index(step)].load(Ordering::SeqCst)
    }

    /// `settled`: from the start to an empty queue; `elapsed`: including the checks.
    fn report(
        &self,
        seed: u64,
        orders: usize,
        world: &World,
        settled: Duration,
        elapsed: Duration,
    ) -> String {
        let requests = world.polar.requests();
        let mut by_method: Vec<(String, usize)> = Vec::new();
        for request in &requests {
            match by_method.iter_mut().find(|(m, _)| *m == request.method) {
                Some((_, n)) => *n += 1,
                None => by_method.push((request.method.clone(), 1)),
            }
        }
        let mut out = String::new();
        let _ = writeln!(out, "---- exactly-once invariant run (seed {seed}) ----");
        let _ = writeln!(out, "orders:               {orders}");
        let _ = writeln!(
            out,
            "messages delivered:   {} (incl. redeliveries), {} reported failed by the function",
            self.deliveries.load(Ordering::Relaxed),
            self.failed_messages.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "invocations:          {} ({} crashed or killed, {} timed out, {} errored)",
            self.invocations.load(Ordering::Relaxed),
            self.crashed.load(Ordering::Relaxed),
            self.timed_out.load(Ordering::Relaxed),
            self.errored.load(Ordering::Relaxed)
        );
        let crashes: Vec<String> = STEPS
            .iter()
            .map(|step| {
                let passed = self.passed[step_index(*step)].load(Ordering::Relaxed);
                format!("{step:?} {} of {passed}", self.crashes_at(*step))
            })
            .collect();
        let _ = writeln!(
            out,
            "crashes per step:     {} (crashes of step boundaries passed in-process)",
            crashes.join(", ")
        );
        let _ = writeln!(
            out,
            "process kills:        {} ({} during an invocation)",
            self.kills.load(Ordering::Relaxed),
            self.kills_mid_invocation.load(Ordering::Relaxed)
        );
        let faults = self.faults.lock().unwrap();
        let total: u64 = faults.iter().map(|(_, n)| n).sum();
        let kinds: Vec<String> = FAULT_KINDS
            .iter()
            .map(|kind| {
                let n = faults
                    .iter()
                    .find(|(k, _)| k == kind)
                    .map_or(0, |(_, n)| *n);
                format!("{} {n}", kind.name())
            })
            .collect();
        let _ = writeln!(out, "Polar faults injected: {total}: {}", kinds.join(", "));
        let methods: Vec<String> = by_method.iter().map(|(m, n)| format!("{m} {n}")).collect();
        let _ = writeln!(
            out,
            "Polar requests:       {} ({}), {:.2} per redemption",
            requests.len(),
            methods.join(", "),
            requests.len() as f64 / orders as f64
        );
        let _ = write!(
            out,
            "wall time:            {:.1} s (settled after {:.1} s)",
            elapsed.as_secs_f64(),
            settled.as_secs_f64()
        );
        out
    }
}

// ---------------------------------------------------------------------------------------
// The invariant checker

async fn check_invariants(
    world: &World,
    workload: &Workload,
    queue: &Queue,
    stats: &Stats,
    seed: u64,
    started_at: SystemTime,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut details = String::new();

    // The queue: empty, and every message acknowledged exactly once.
    {
        let state = queue.state.lock().unwrap();
        if !state.ready.is_empty() || state.in_flight != 0 {
            problems.push(format!(
                "seed {seed}: queue not settled: {} queued, {} in flight",
                state.ready.len(),
                state.in_flight
            ));
        }
        if state.acked.len() != queue.total {
            problems.push(format!(
                "seed {seed}: {} of {} messages acknowledged",
                state.acked.len(),
                queue.total
            ));
        }
        for (id, times) in &state.acked {
            if *times != 1 {
                problems.push(format!(
                    "seed {seed}: message {id} acknowledged {times} times"
                ));
            }
        }
        if !state.strangers.is_empty() {
            problems.push(format!(
                "seed {seed}: batchItemFailures named messages not in the batch: {:?}",
                state.strangers
            ));
        }
    }
    for error in stats.errors.lock().unwrap().iter() {
        problems.push(format!(
            "seed {seed}: an invocation failed as a whole: {error}"
        ));
    }
    for step in STEPS {
        if stats.crashes_at(step) == 0 {
            problems.push(format!(
                "seed {seed}: no simulated crash at {step:?}: the run did not cover that step"
            ));
        }
    }

    let all_orders: Vec<String> = workload
        .discounts
        .iter()
        .flat_map(|d| d.orders.iter().cloned())
        .collect();
    let items = world.orders(&all_orders).await;
    let now = SystemTime::now();
    let requests = world.polar.requests();

    for discount in &workload.discounts {
        let mut here = Vec::new();
        let mut actions: HashMap<String, usize> = HashMap::new();
        let mut synced = 0i64;
        for order in &discount.orders {
            let Some(item) = items.get(order) else {
                here.push(format!("order {order} is missing from the orders table"));
                continue;
            };
            let flag = item
                .get("polarDiscountSynced")
                .and_then(|v| v.as_bool().ok());
            if flag != Some(&true) {
                here.push(format!("order {order} is not synced ({flag:?})"));
                continue;
            }
            synced += 1;
            let action = item
                .get("polarDiscountSyncAction")
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_else(|| "(none)".to_owned());
            *actions.entry(action).or_default() += 1;
            match item
                .get("polarDiscountSyncedAt")
                .and_then(|v| v.as_s().ok())
            {
                Some(at) if is_rfc3339_utc_between(at, started_at, now) => {}
                other => here.push(format!(
                    "order {order}: polarDiscountSyncedAt {other:?} is not an RFC 3339 UTC time of this run"
                )),
            }
            if item.contains_key("polarDiscountSyncClaim") {
                here.push(format!("order {order}: synced but still claimed"));
            }
            if item.get("discountCode").and_then(|v| v.as_s().ok()) != Some(&discount.code)
                || item
                    .get("total")
                    .and_then(|v| v.as_n().ok())
                    .map(String::as_str)
                    != Some("1990")
            {
                here.push(format!("order {order}: checkout's attributes were changed"));
            }
        }

        let count = |name: &str| actions.get(name).copied().unwrap_or(0) as i64;
        let (decremented, deleted, already_deleted, skipped) = (
            count("decremented"),
            count("deleted"),
            count("already_deleted"),
            count("skipped_unlimited"),
        );
        let known = decremented + deleted + already_deleted + skipped;
        if known != synced {
            here.push(format!("unknown actions among {actions:?}"));
        }
        let state = world.max_redemptions(discount.id);
        match discount.initial {
            None => {
                if state != Some(None) {
                    here.push(format!("unlimited discount is now {state:?}"));
                }
                if skipped != synced {
                    here.push(format!(
                        "unlimited discount: actions {actions:?}, all should be skipped_unlimited"
                    ));
                }
            }
            Some(initial) => {
                let expected_left = initial - synced;
                if skipped != 0 {
                    here.push(format!(
                        "limited discount with skipped_unlimited orders: {actions:?}"
                    ));
                }
                if expected_left > 0 {
                    if state != Some(Some(expected_left)) {
                        here.push(format!(
                            "max_redemptions is {state:?}, expected {expected_left} (initial {initial} − {synced} orders synced)"
                        ));
                    }
                    if deleted + already_deleted != 0 {
                        here.push(format!(
                            "not deleted, yet orders were recorded as deleted: {actions:?}"
                        ));
                    }
                } else {
                    if state.is_some() {
                        here.push(format!(
                            "should be deleted (initial {initial} − {synced} orders synced = {expected_left}), but Polar has {state:?}"
                        ));
                    }
                    // One write deleted it, counting the orders marked `deleted`; the
                    // decrements before it left at least 1; orders after it found it gone.
                    if deleted == 0 {
                        here.push(format!(
                            "no order was recorded as deleted (the last use deletes): {actions:?}"
                        ));
                    }
                    if decremented > initial - 1 {
                        here.push(format!(
                            "{decremented} orders recorded as decremented, but a limit of {initial} allows at most {}",
                            initial - 1
                        ));
                    }
                    if decremented + deleted < initial {
                        here.push(format!(
                            "deleted after {decremented} decrements and a final write of {deleted} orders: {} uses were never counted",
                            initial - decremented - deleted
                        ));
                    }
                }
            }
        }
        let sync_item = world.sync_item(discount.id).await;
        if sync_item.contains_key("journal") {
            here.push(format!(
                "journal left on the sync item: {:?}",
                sync_item.get("journal")
            ));
        }

        if !here.is_empty() {
            let _ = writeln!(
                details,
                "== discount {} {} ({:?}, initial {:?}, {} orders): {actions:?}, Polar now {state:?}",
                discount.id,
                discount.code,
                discount.kind,
                discount.initial,
                discount.orders.len()
            );
            for order in &discount.orders {
                let item = items.get(order);
                let field = |name: &str| {
                    item.and_then(|i| i.get(name))
                        .map(show)
                        .unwrap_or_else(|| "-".to_owned())
                };
                let _ = writeln!(
                    details,
                    "   {order}: synced={} action={} at={} claim={}",
                    field("polarDiscountSynced"),
                    field("polarDiscountSyncAction"),
                    field("polarDiscountSyncedAt"),
                    field("polarDiscountSyncClaim")
                );
            }
            let path = format!("/v1/discounts/{}", discount.id);
            for request in requests.iter().filter(|r| r.path == path) {
                let _ = writeln!(
                    details,
                    "   polar @{:>7} ms {} {} -> {:?}",
                    request.received_at_ms, request.method, request.body, request.status
                );
            }
            let _ = writeln!(details, "   sync item: {sync_item:?}");
        }
        problems.extend(here.into_iter().map(|p| {
            format!(
                "seed {seed}: discount {} ({:?}, {}): {p}",
                discount.code, discount.kind, discount.id
            )
        }));
    }

    // The Polar request log: only the workload's discounts, and no PATCH below 1.
    let known: HashSet<String> = workload
        .discounts
        .iter()
        .map(|d| format!("/v1/discounts/{}", d.id))
        .collect();
    for request in &requests {
        if !known.contains(&request.path) {
            problems.push(format!(
                "seed {seed}: request to a discount outside the workload: {} {}",
                request.method, request.path
            ));
        }
        if request.method == "PATCH" {
            let max = serde_json::from_str::<Value>(&request.body)
                .ok()
                .and_then(|body| body.get("max_redemptions").cloned());
            if !matches!(max.as_ref().and_then(Value::as_i64), Some(n) if n >= 1) {
                problems.push(format!(
                    "seed {seed}: PATCH {} with max_redemptions {max:?} (Polar rejects < 1)",
                    request.path
                ));
            }
        }
    }

    if !details.is_empty() {
        println!("seed {seed}: failing discounts in detail:\n{details}");
    }
    problems
}

fn is_rfc3339_utc_between(at: &str, from: SystemTime, to: SystemTime) -> bool {
    if !at.ends_with('Z') {
        return false;
    }
    let Ok(parsed) = DateTime::from_str(at, DateTimeFormat::DateTime) else {
        return false;
    };
    let Ok(parsed) = SystemTime::try_from(parsed) else {
        return false;
    };
    // Allow for a coarse clock.
    let slack = Duration::from_secs(1);
    parsed + slack >= from && parsed <= to + slack
}

fn show(value: &AttributeValue) -> String {
    match value {
        AttributeValue::S(s) => s.clone(),
        AttributeValue::N(n) => n.clone(),
        AttributeValue::Bool(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}
