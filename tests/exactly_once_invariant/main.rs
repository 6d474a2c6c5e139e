//! Issue 3's invariant test: a seeded, randomized workload of more than 1 000 redemptions
//! over a dozen discounts is sent to a simulated SQS queue (visibility timeout, receive
//! counts, a redrive policy to a dead-letter queue) and pulled from it by concurrent
//! invocations, in process and in real function processes, with duplicate messages, Polar
//! faults, crashes at every step boundary and killed processes. The function's own SQS
//! client talks to the same simulated SQS: its redelivery delays, its reading of the
//! redrive limit and its dead letters all take effect. Once the source queue is empty, an
//! invariant checker compares Polar, the orders table and the dead-letter queue with what
//! exactly-once demands.
//!
//! - `workload.rs`: the discounts, orders and messages;
//! - `workers.rs`: the invocations (the event source mapping is `support::event_source`);
//! - `faults.rs`: crashes, kills and Polar faults;
//! - `check.rs`: the invariant checker; `report.rs`: the printed report.
//!
//! The seed fixes the workload and every fault, crash and kill decision; it is printed at
//! the start and in every assertion message. Rerun with `INVARIANT_SEED=<seed>`.
//! Concurrency and real time mean two runs with one seed are not identical step for step.
//!
//! `INVARIANT_FUNCTION_LOG` sets the function processes' log level (default `error`).

#[path = "../support/mod.rs"]
mod support;

mod check;
mod faults;
mod report;
mod workers;
mod workload;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fastrand::Rng;
use lambda_driver::{FunctionProcess, RuntimeApi};
use polar_discount_sync::lambda::Wiring;
use support::queues::{QueueSettings, Queues};
use support::{SqsBackend, World};

use check::{check_invariants, Sent};
use faults::{
    crash_hook, fault_injector, killer, quiet_simulated_crashes, CrashPlan, DELAY_MILLIS,
};
use report::{Run, Stats};
use workers::{
    Function, ProcessSlot, Progress, Worker, BINARY, IN_PROCESS_POLAR_TIMEOUT, IN_PROCESS_WORKERS,
    PROCESS_WORKERS,
};

/// Shorter than the invocations (10 s in process, 15 s in a function process), although
/// AWS asks for more: messages come back while an invocation still holds them, as they do
/// on a queue configured too short. Exactly once must hold anyway.
const VISIBILITY_TIMEOUT_SECS: u32 = 8;
/// After the queue is empty, how long the scheduled reconciliation may keep finding
/// journals whose lease is still live (a lease outlives its invocation by 10 s).
const RECONCILE_LIMIT: Duration = Duration::from_secs(45);
/// Small enough that some messages reach their last receive in a run (the function then
/// dead-letters what still fails), large enough that most get through.
const MAX_RECEIVE_COUNT: u32 = 4;
/// The Polar budget of all invocations together, shared by `MAXIMUM_CONCURRENCY`
/// containers (the workers): Polar's whole limit, the most the function accepts, as the
/// test is about faults, not throughput.
const POLAR_RATE_LIMIT_PER_MINUTE: u32 = 500;
/// The whole run (not counting setup and checks) must settle within this.
const SETTLE_LIMIT: Duration = Duration::from_secs(8 * 60);

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
    let backend = SqsBackend::simulated().await;
    let SqsBackend::Simulated(sqs) = &backend else {
        unreachable!("a simulated SQS was started");
    };
    let queues = Queues::create(
        &world,
        &backend,
        QueueSettings {
            fifo: false,
            visibility_timeout_secs: VISIBILITY_TIMEOUT_SECS,
            max_receive_count: MAX_RECEIVE_COUNT,
        },
    )
    .await;
    let mut rng = Rng::with_seed(seed);
    let workload = workload::build_workload(&world, &mut rng).await;
    let mut sent = Vec::new();
    for (order, body) in &workload.messages {
        sent.push(Sent {
            id: queues.send(body, None).await,
            order: order.clone(),
            body: body.clone(),
        });
    }
    let order_count = workload.order_count();
    println!(
        "seed {seed}: {} discounts, {order_count} orders, {} messages sent in {:.1} s",
        workload.discounts.len(),
        sent.len(),
        started.elapsed().as_secs_f64()
    );

    let source = Arc::new(queues.event_source());
    let progress = Arc::new(Progress {
        sqs: sqs.clone(),
        queue_url: queues.source_url.clone(),
        total: sent.len(),
    });
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let crash_plan = Arc::new(CrashPlan::new(&mut rng));
    let containers = (IN_PROCESS_WORKERS + PROCESS_WORKERS) as u32;
    let mut tasks = Vec::new();
    let worker = |name: String, function: Function, rng: &mut Rng| Worker {
        name,
        function,
        source: source.clone(),
        stop: stop.clone(),
        rng: Rng::with_seed(rng.u64(..)),
    };

    let mut config = queues.config(&world);
    config.polar_request_timeout = IN_PROCESS_POLAR_TIMEOUT;
    config.polar_rate_limit_per_minute = POLAR_RATE_LIMIT_PER_MINUTE;
    config.maximum_concurrency = containers;
    for index in 0..IN_PROCESS_WORKERS {
        let checkpoint = crash_hook(
            Rng::with_seed(rng.u64(..)),
            crash_plan.clone(),
            progress.clone(),
            stats.clone(),
        );
        let wiring = Wiring {
            checkpoint: Some(checkpoint),
            dynamo: None,
        };
        let handler = Arc::new(world.handler_on(&backend, &config, wiring).await);
        let function = Function::InProcess(handler);
        tasks.push(tokio::spawn(
            worker(format!("in-process {index}"), function, &mut rng).run(),
        ));
    }

    let mut env = queues.env(&world);
    let level = std::env::var("INVARIANT_FUNCTION_LOG").unwrap_or_else(|_| "error".to_owned());
    for (name, value) in [
        ("AWS_LAMBDA_LOG_LEVEL", level),
        (
            "POLAR_RATE_LIMIT_PER_MINUTE",
            POLAR_RATE_LIMIT_PER_MINUTE.to_string(),
        ),
        ("MAXIMUM_CONCURRENCY", containers.to_string()),
    ] {
        env.push((name.to_owned(), value));
    }
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
        let function = Function::Process(slot);
        tasks.push(tokio::spawn(
            worker(format!("process {index}"), function, &mut rng).run(),
        ));
    }

    tasks.push(tokio::spawn(killer(
        processes.clone(),
        env.clone(),
        progress.clone(),
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

    // Let the event source poll until the queue is empty.
    let mut last_progress = Instant::now();
    let settled = loop {
        let counts = sqs
            .counts(&queues.source_url)
            .expect("the source queue exists");
        if counts.total() == 0 && source.in_flight() == 0 {
            break true;
        }
        if started.elapsed() > SETTLE_LIMIT {
            break false;
        }
        if last_progress.elapsed() >= Duration::from_secs(10) {
            last_progress = Instant::now();
            let dead = sqs.counts(&queues.dead_letter_url).unwrap().total();
            println!(
                "seed {seed}: {:>4.0} s: {} of {} messages acknowledged, {dead} dead letters, \
                 {} visible, {} in flight or delayed, {} invocations running",
                started.elapsed().as_secs_f64(),
                source.acknowledged().len(),
                sent.len(),
                counts.visible,
                counts.in_flight,
                source.in_flight()
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
    let dead_letters = queues.dead_letters().await;
    let run = |notes: &[String]| {
        Run {
            seed,
            orders: order_count,
            messages: sent.len(),
            world: &world,
            source: &source,
            stats: &stats,
            dead_letters: &dead_letters,
            stale_deletes: sqs.stale_deletes(),
            sqs_requests: sqs.requests(),
            notes,
            settled: run_time,
            elapsed: started.elapsed(),
        }
        .report()
    };
    if !settled {
        let left: Vec<String> = sqs
            .messages(&queues.source_url)
            .unwrap()
            .into_iter()
            .take(20)
            .map(|m| {
                format!(
                    "{} (received {} times): {}",
                    m.message_id, m.receive_count, m.body
                )
            })
            .collect();
        panic!(
            "seed {seed}: the queue did not settle within {SETTLE_LIMIT:?}: {:?} left, {} \
             invocations running; first messages left: {left:#?}\n{}",
            sqs.counts(&queues.source_url).unwrap(),
            source.in_flight(),
            run(&[])
        );
    }
    // A request that outlived its invocation (a delayed one, say) lands within this.
    tokio::time::sleep(Duration::from_millis(DELAY_MILLIS + 1_000)).await;

    let reconciled = reconcile(&world, &backend, &config, seed).await;

    let (problems, mut notes) = check_invariants(
        &world,
        &workload,
        &sent,
        &source,
        &dead_letters,
        &stats,
        seed,
        started_at,
    )
    .await;
    notes.insert(0, reconciled);
    println!("{}", run(&notes));
    assert!(
        problems.is_empty(),
        "seed {seed}: {} invariant violations (rerun with INVARIANT_SEED={seed}):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Runs the scheduled reconciliation, as EventBridge would, until no journal it finds is
/// held by a live lease; returns a line for the report.
async fn reconcile(
    world: &World,
    backend: &SqsBackend,
    config: &polar_discount_sync::config::Config,
    seed: u64,
) -> String {
    let handler = world.handler_on(backend, config, Wiring::default()).await;
    let started = Instant::now();
    let mut runs = Vec::new();
    loop {
        let counts = handler
            .handle_event(support::scheduled_event(Duration::from_secs(60)))
            .await
            .unwrap_or_else(|err| panic!("seed {seed}: reconciliation failed: {err}"));
        let busy = counts["busy"].as_u64().unwrap_or(0) + counts["failed"].as_u64().unwrap_or(0);
        runs.push(counts);
        if busy == 0 || started.elapsed() > RECONCILE_LIMIT {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let settled: u64 = runs
        .iter()
        .map(|r| r["settled"].as_u64().unwrap_or(0))
        .sum();
    format!(
        "reconciliation: {settled} journals settled in {} runs ({:.1} s); first run {}, last run {}",
        runs.len(),
        started.elapsed().as_secs_f64(),
        runs[0],
        runs[runs.len() - 1]
    )
}
