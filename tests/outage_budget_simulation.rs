//! A Polar outage of the whole budget (6 h), in accelerated time: 2 000 redemptions arrive
//! as Polar goes down, fail on every receive until it is back, then drain. Nothing may be
//! dead-lettered, and Polar may never see more requests in a minute than the function's
//! budget allows (so no 429).
//!
//! Tokio's paused clock jumps from one timer to the next, so 6 h take about a second. The
//! function's own parts decide: `RedeliveryPolicy` (the delay after each failed receive, the
//! dead letter on the last one, `MAX_RECEIVE_COUNT`), each container's `RateLimiter` at its
//! share of `POLAR_RATE_LIMIT_PER_MINUTE`, `RetryPolicy`'s in-process schedule,
//! `START_MARGIN`, and the failure classes of `PolarFailure`. Around them this file models:
//! - SQS: a standard queue whose receive hides a message for the visibility timeout (180 s,
//!   the template's value for a 30 s function) and counts the receive;
//! - the event source: `MAXIMUM_CONCURRENCY` invocations at once, batches of up to 10;
//! - an invocation, as `process_batch` runs it: 30 s; every message names its own discount
//!   (the costliest case, nothing coalesces), up to 8 at once; none started with less than
//!   `START_MARGIN` left; a GET, then a PATCH, each first admitted by the rate limiter for
//!   as long as the deadline allows, sent with a timeout ending 1 s before the deadline
//!   (not sent under 0.5 s), and retried as `RetryPolicy` says; DynamoDB calls take 10 ms;
//!   at the end every failure is disposed of by `RedeliveryPolicy::decide`, or, when not
//!   started, left to come back after the visibility timeout;
//! - Polar: while down, every request fails the way the outage does (a 5xx after 150 ms, a
//!   timeout, or a 401 for a revoked token; the new token is in SSM when the outage ends and
//!   the client reads it again after a 401, at most once a minute). Once back it answers in
//!   150 ms, or 429 if more than 500 requests arrived in the last 60 s.
//!
//! `cargo test --test outage_budget_simulation -- --nocapture` prints the numbers.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use futures_util::future::join_all;
use futures_util::stream::{self, StreamExt};
use polar_discount_sync::config::Config;
use polar_discount_sync::ports::{PolarFailure, PolarFailureKind};
use polar_discount_sync::sync::{
    Disposition, RateLimiter, RedeliveryPolicy, RetryPolicy, SyncError, MAX_RECEIVE_COUNT,
    OUTAGE_BUDGET, START_MARGIN,
};
use tokio::time::{sleep, Instant};

/// The backlog; `OUTAGE_MESSAGES=N` tries another (the assertions then still apply).
const MESSAGES: usize = 2_000;
/// Every redemption is sent within the first minute of the outage: the longest time failing.
const ARRIVALS_OVER: Duration = Duration::from_secs(60);
const FUNCTION_TIMEOUT: Duration = Duration::from_secs(30);
/// template.yaml's `VisibilityTimeouts` for a 30 s function.
const VISIBILITY_TIMEOUT: Duration = Duration::from_secs(180);
const BATCH_SIZE: usize = 10;
/// The template's `MaximumBatchingWindowInSeconds`.
const BATCHING_WINDOW: Duration = Duration::from_secs(1);
const POLAR_LATENCY: Duration = Duration::from_millis(150);
const STORE_LATENCY: Duration = Duration::from_millis(10);
/// Polar's own limit, per organization.
const POLAR_LIMIT_PER_MINUTE: usize = 500;
const MINUTE: Duration = Duration::from_secs(60);
/// What the client keeps free between a request's timeout and the deadline, and the
/// shortest timeout it sends a request with (src/adapters/polar/client.rs).
const LANDING_MARGIN: Duration = Duration::from_secs(1);
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_millis(500);
const TOKEN_REREAD_INTERVAL: Duration = Duration::from_secs(60);
/// SQS refuses a longer visibility.
const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outage {
    ServerErrors,
    Timeouts,
    RevokedToken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Queued,
    InFlight,
    Synced,
    DeadLettered,
}

struct Message {
    state: State,
    receives: u32,
}

enum Answer {
    Ok,
    ServerError,
    Timeout,
    Unauthorized,
    RateLimited,
}

/// The queue, Polar, and what was seen of them.
struct World {
    start: Instant,
    outage: Outage,
    back_at: Duration,
    messages: Vec<Message>,
    /// Queued messages by the moment they are visible again.
    visible: BTreeSet<(Duration, usize)>,
    /// Every request that reached Polar, with the container that sent it.
    requests: Vec<(Duration, usize)>,
    last_minute: VecDeque<Duration>,
    rate_limited: usize,
    over_budget: usize,
    not_started: usize,
    invocations: usize,
    synced_at: Vec<Duration>,
    /// The version of the token in SSM: a new one replaces the revoked token when the
    /// outage ends.
    ssm_token: u32,
}

impl World {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn settled(&self) -> bool {
        self.messages
            .iter()
            .all(|m| matches!(m.state, State::Synced | State::DeadLettered))
    }

    /// A receive: up to `max` visible messages, each hidden for the visibility timeout.
    fn receive(&mut self, max: usize) -> Vec<(usize, u32)> {
        let now = self.now();
        let mut batch = Vec::new();
        while batch.len() < max {
            match self.visible.first() {
                Some(&(at, id)) if at <= now => {
                    self.visible.pop_first();
                    let message = &mut self.messages[id];
                    message.state = State::InFlight;
                    message.receives += 1;
                    batch.push((id, message.receives));
                }
                _ => break,
            }
        }
        batch
    }

    fn requeue(&mut self, id: usize, at: Duration) {
        self.messages[id].state = State::Queued;
        self.visible.insert((at, id));
    }

    fn polar(&mut self, container: usize, token: u32) -> Answer {
        let now = self.now();
        self.requests.push((now, container));
        while self
            .last_minute
            .front()
            .is_some_and(|&at| at + MINUTE <= now)
        {
            self.last_minute.pop_front();
        }
        self.last_minute.push_back(now);
        if self.outage == Outage::RevokedToken && token == 0 {
            return Answer::Unauthorized;
        }
        if now < self.back_at {
            return match self.outage {
                Outage::ServerErrors => Answer::ServerError,
                Outage::Timeouts => Answer::Timeout,
                Outage::RevokedToken => Answer::Unauthorized,
            };
        }
        if self.last_minute.len() > POLAR_LIMIT_PER_MINUTE {
            self.rate_limited += 1;
            return Answer::RateLimited;
        }
        Answer::Ok
    }
}

/// One Lambda container: its share of the rate limit and its copy of the token.
struct Container {
    id: usize,
    limiter: RateLimiter,
    token: Cell<u32>,
    token_read_at: Cell<Option<Duration>>,
}

struct Sim {
    world: RefCell<World>,
    policy: RedeliveryPolicy,
    retry: RetryPolicy,
    request_timeout: Duration,
    max_concurrent_discounts: usize,
}

impl Sim {
    fn now(&self) -> Duration {
        self.world.borrow().now()
    }

    fn remaining(&self, deadline: Duration) -> Duration {
        deadline.saturating_sub(self.now())
    }

    /// The event source for one container: receive, invoke, until every message settled.
    async fn poll(&self, container: &Container) {
        loop {
            let mut batch = {
                let mut world = self.world.borrow_mut();
                if world.settled() {
                    return;
                }
                world.receive(BATCH_SIZE)
            };
            if !batch.is_empty() && batch.len() < BATCH_SIZE {
                // The event source waits up to its batching window to fill the batch.
                sleep(BATCHING_WINDOW).await;
                let more = self.world.borrow_mut().receive(BATCH_SIZE - batch.len());
                batch.extend(more);
            }
            if batch.is_empty() {
                let wait = {
                    let world = self.world.borrow();
                    let now = world.now();
                    world
                        .visible
                        .first()
                        .map_or(Duration::from_secs(1), |&(at, _)| at.saturating_sub(now))
                };
                // Long polling answers as soon as a message is visible; in-flight ones
                // may come back sooner than the next one queued.
                sleep(wait.clamp(Duration::from_millis(1), Duration::from_secs(1))).await;
                continue;
            }
            self.invoke(container, batch).await;
        }
    }

    async fn invoke(&self, container: &Container, batch: Vec<(usize, u32)>) {
        let received_at = self.now();
        let deadline = received_at + FUNCTION_TIMEOUT;
        self.world.borrow_mut().invocations += 1;
        let outcomes: Vec<_> = stream::iter(batch)
            .map(|(id, receives)| async move {
                (id, receives, self.sync_one(container, deadline).await)
            })
            .buffer_unordered(self.max_concurrent_discounts)
            .collect()
            .await;
        let ended_at = self.now();
        assert!(ended_at <= deadline, "the invocation ran past its deadline");
        let mut world = self.world.borrow_mut();
        for (id, receives, outcome) in outcomes {
            let error = match outcome {
                Ok(()) => {
                    world.messages[id].state = State::Synced;
                    world.synced_at.push(ended_at);
                    continue;
                }
                Err(error) => error,
            };
            let last_receive = receives >= MAX_RECEIVE_COUNT;
            if matches!(error, SyncError::DeadlineTooClose) && !last_receive {
                world.not_started += 1;
                world.requeue(id, received_at + VISIBILITY_TIMEOUT);
                continue;
            }
            match self
                .policy
                .decide(&error, receives, Some(MAX_RECEIVE_COUNT))
            {
                Disposition::DeadLetter { .. } => world.messages[id].state = State::DeadLettered,
                Disposition::RetryAfter(after) => {
                    world.requeue(id, ended_at + after.min(MAX_VISIBILITY));
                }
            }
        }
    }

    /// One message of its own discount: lease and claim, GET, journal, PATCH, commit.
    async fn sync_one(&self, container: &Container, deadline: Duration) -> Result<(), SyncError> {
        if self.remaining(deadline) < START_MARGIN {
            return Err(SyncError::DeadlineTooClose);
        }
        sleep(STORE_LATENCY * 2).await;
        if let Err(failure) = self.polar_call(container, deadline).await {
            sleep(STORE_LATENCY).await;
            return Err(failure.into());
        }
        sleep(STORE_LATENCY * 2).await;
        if let Err(failure) = self.polar_call(container, deadline).await {
            sleep(STORE_LATENCY).await;
            return Err(failure.into());
        }
        sleep(STORE_LATENCY).await;
        Ok(())
    }

    /// A request through the rate budget, retried as `RetryPolicy::run` does.
    async fn polar_call(
        &self,
        container: &Container,
        deadline: Duration,
    ) -> Result<(), PolarFailure> {
        let mut attempt = 1;
        loop {
            let failure = match self.polar_attempt(container, deadline).await {
                Ok(()) => return Ok(()),
                Err(failure) => failure,
            };
            let Some(hint) = failure.retry_hint() else {
                return Err(failure);
            };
            if attempt >= self.retry.max_attempts {
                return Err(failure);
            }
            let delay = self.retry.delay(attempt, hint);
            if self.remaining(deadline) < delay + self.retry.reserve {
                return Err(failure);
            }
            sleep(delay).await;
            attempt += 1;
        }
    }

    async fn polar_attempt(
        &self,
        container: &Container,
        deadline: Duration,
    ) -> Result<(), PolarFailure> {
        let max_wait = self.remaining(deadline).saturating_sub(START_MARGIN);
        if let Err(over) = container.limiter.admit(max_wait).await {
            self.world.borrow_mut().over_budget += 1;
            let ready_in = over.wait;
            return Err(PolarFailure::new(
                PolarFailureKind::OverBudget { ready_in },
                over,
            ));
        }
        let remaining = self.remaining(deadline);
        let timeout = remaining
            .checked_sub(LANDING_MARGIN)
            .map(|t| t.min(self.request_timeout))
            .filter(|t| *t >= MIN_REQUEST_TIMEOUT)
            .ok_or_else(|| PolarFailure::new(PolarFailureKind::TooLate, "too late"))?;
        let token = container.token.get();
        let answer = self.world.borrow_mut().polar(container.id, token);
        let kind = match answer {
            Answer::Ok => {
                sleep(POLAR_LATENCY).await;
                return Ok(());
            }
            Answer::ServerError => PolarFailureKind::Unavailable,
            Answer::Timeout => {
                sleep(timeout).await;
                return Err(PolarFailure::new(PolarFailureKind::Unavailable, "timeout"));
            }
            Answer::RateLimited => PolarFailureKind::RateLimited {
                retry_after: Some(MINUTE),
            },
            Answer::Unauthorized => PolarFailureKind::Unauthorized,
        };
        sleep(POLAR_LATENCY).await;
        if kind == PolarFailureKind::Unauthorized && self.token_rotated(container, token).await {
            // As the client does: the use case's retry sends it again with the new token,
            // through the limiter.
            return Err(PolarFailure::new(PolarFailureKind::TokenReplaced, "polar"));
        }
        Err(PolarFailure::new(kind, "polar"))
    }

    /// The client's `rotated_token`: another request already read a new one, or SSM is read
    /// again (at most once a minute) and holds a new one.
    async fn token_rotated(&self, container: &Container, refused: u32) -> bool {
        if container.token.get() != refused {
            return true;
        }
        let now = self.now();
        if container
            .token_read_at
            .get()
            .is_some_and(|at| now < at + TOKEN_REREAD_INTERVAL)
        {
            return false;
        }
        container.token_read_at.set(Some(now));
        sleep(STORE_LATENCY).await;
        let in_ssm = self.world.borrow().ssm_token;
        container.token.set(in_ssm);
        in_ssm != refused
    }
}

struct Report {
    dead_lettered: usize,
    synced: usize,
    drain: Duration,
    peak_per_minute: usize,
    peak_per_container_minute: usize,
    drain_peak_per_minute: usize,
    drain_requests: usize,
    outage_requests: usize,
    rate_limited: usize,
    over_budget: usize,
    not_started: usize,
    invocations: usize,
    most_receives: u32,
}

/// The most requests in any 60 s window.
fn peak_per_minute(times: &[Duration]) -> usize {
    let mut peak = 0;
    let mut first = 0;
    for (last, &at) in times.iter().enumerate() {
        while times[first] + MINUTE <= at {
            first += 1;
        }
        peak = peak.max(last + 1 - first);
    }
    peak
}

async fn simulate(outage: Outage, seed: u64, messages: usize) -> (Report, Config) {
    fastrand::seed(seed);
    let config = Config::from_lookup(|name| {
        match name {
            "ORDERS_TABLE" => Some("orders"),
            "SYNC_TABLE" => Some("sync"),
            "POLAR_ACCESS_TOKEN" => Some("polar_oat_simulated"),
            _ => None,
        }
        .map(str::to_owned)
    })
    .expect("the defaults make a configuration");
    let mut arrivals = fastrand::Rng::with_seed(seed);
    let start = Instant::now();
    let visible = (0..messages)
        .map(|id| (ARRIVALS_OVER.mul_f64(arrivals.f64()), id))
        .collect();
    let sim = Sim {
        world: RefCell::new(World {
            start,
            outage,
            back_at: OUTAGE_BUDGET,
            messages: (0..messages)
                .map(|_| Message {
                    state: State::Queued,
                    receives: 0,
                })
                .collect(),
            visible,
            requests: Vec::new(),
            last_minute: VecDeque::new(),
            rate_limited: 0,
            over_budget: 0,
            not_started: 0,
            invocations: 0,
            synced_at: Vec::new(),
            ssm_token: 0,
        }),
        policy: RedeliveryPolicy::default(),
        // As src/lambda.rs builds it.
        retry: RetryPolicy {
            reserve: config.polar_request_timeout + Duration::from_secs(1),
            ..RetryPolicy::default()
        },
        request_timeout: config.polar_request_timeout,
        max_concurrent_discounts: config.max_concurrent_discounts,
    };
    let share = config.polar_rate_share();
    let containers: Vec<_> = (0..config.maximum_concurrency as usize)
        .map(|id| Container {
            id,
            limiter: RateLimiter::new(share),
            // A revoked token is the only one the containers know until the outage ends.
            token: Cell::new(u32::from(outage != Outage::RevokedToken)),
            token_read_at: Cell::new(None),
        })
        .collect();
    let new_token = async {
        sleep(OUTAGE_BUDGET).await;
        sim.world.borrow_mut().ssm_token = 1;
    };
    let pollers = join_all(containers.iter().map(|c| sim.poll(c)));
    tokio::join!(pollers, new_token);

    let world = sim.world.borrow();
    let times: Vec<_> = world.requests.iter().map(|&(at, _)| at).collect();
    let peak_per_container_minute = (0..containers.len())
        .map(|c| {
            let own: Vec<_> = world
                .requests
                .iter()
                .filter(|&&(_, by)| by == c)
                .map(|&(at, _)| at)
                .collect();
            peak_per_minute(&own)
        })
        .max()
        .unwrap_or(0);
    let report = Report {
        dead_lettered: world
            .messages
            .iter()
            .filter(|m| m.state == State::DeadLettered)
            .count(),
        synced: world.synced_at.len(),
        drain: world
            .synced_at
            .iter()
            .max()
            .map_or(Duration::ZERO, |last| last.saturating_sub(OUTAGE_BUDGET)),
        peak_per_minute: peak_per_minute(&times),
        peak_per_container_minute,
        drain_peak_per_minute: peak_per_minute(
            &times
                .iter()
                .copied()
                .filter(|&at| at >= OUTAGE_BUDGET)
                .collect::<Vec<_>>(),
        ),
        drain_requests: times.iter().filter(|&&at| at >= OUTAGE_BUDGET).count(),
        outage_requests: times.iter().filter(|&&at| at < OUTAGE_BUDGET).count(),
        rate_limited: world.rate_limited,
        over_budget: world.over_budget,
        not_started: world.not_started,
        invocations: world.invocations,
        most_receives: world.messages.iter().map(|m| m.receives).max().unwrap_or(0),
    };
    (report, config)
}

async fn outage_of_the_whole_budget_dead_letters_nothing(outage: Outage, seed: u64) {
    let messages = std::env::var("OUTAGE_MESSAGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(MESSAGES);
    let (report, config) = simulate(outage, seed, messages).await;
    let budget = config.polar_rate_limit_per_minute as usize;
    let containers = config.maximum_concurrency as usize;
    let share = config.polar_rate_share();
    let (per_container, burst) = (share.per_minute as usize, share.burst as usize);
    let drain_minutes = report.drain.as_secs_f64() / 60.0;
    println!(
        "outage {} h ({outage:?}): {} of {messages} dead-lettered ({} synced), backlog drained \
         in {drain_minutes:.1} min at {:.0} req/min (peak {} in any 60 s), {} × 429; \
         peak over the whole run {} req in any 60 s (one container: {}; limiter {budget}/min \
         = {containers} × {per_container} + bursts of {burst}; Polar allows \
         {POLAR_LIMIT_PER_MINUTE}); during the outage {:.0} req/min; most receives of one \
         message {} of {MAX_RECEIVE_COUNT}; {} invocations, {} requests refused by the \
         limiter, {} messages not started before the deadline",
        OUTAGE_BUDGET.as_secs() / 3600,
        report.dead_lettered,
        report.synced,
        report.drain_requests as f64 / drain_minutes.max(1.0 / 60.0),
        report.drain_peak_per_minute,
        report.rate_limited,
        report.peak_per_minute,
        report.peak_per_container_minute,
        report.outage_requests as f64 / (OUTAGE_BUDGET.as_secs_f64() / 60.0),
        report.most_receives,
        report.invocations,
        report.over_budget,
        report.not_started,
    );
    assert_eq!(
        report.dead_lettered, 0,
        "an outage within the budget dead-letters nothing"
    );
    assert_eq!(report.synced, messages);
    assert_eq!(report.rate_limited, 0, "no 429");
    // Each container spends its share, R/N a minute, plus its burst, plus (after a token
    // rotation) the one resend the client makes past the limiter.
    assert!(
        report.peak_per_container_minute <= per_container + burst + 1,
        "{} requests in a minute from one container",
        report.peak_per_container_minute
    );
    assert!(
        report.peak_per_minute <= budget + containers * (burst + 1),
        "{} requests in a minute",
        report.peak_per_minute
    );
    assert!(report.peak_per_minute <= POLAR_LIMIT_PER_MINUTE);
}

#[tokio::test(start_paused = true)]
async fn a_six_hour_outage_of_server_errors_dead_letters_nothing_and_drains_within_the_rate_limit()
{
    outage_of_the_whole_budget_dead_letters_nothing(Outage::ServerErrors, 1).await;
}

#[tokio::test(start_paused = true)]
async fn a_six_hour_outage_of_timeouts_dead_letters_nothing_and_drains_within_the_rate_limit() {
    outage_of_the_whole_budget_dead_letters_nothing(Outage::Timeouts, 2).await;
}

#[tokio::test(start_paused = true)]
async fn a_token_revoked_for_six_hours_dead_letters_nothing_and_drains_within_the_rate_limit() {
    outage_of_the_whole_budget_dead_letters_nothing(Outage::RevokedToken, 3).await;
}
