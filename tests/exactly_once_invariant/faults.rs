//! What goes wrong on the way, all decided by the seed: in-process invocations crash at
//! step boundaries, function processes are killed, Polar answers with faults.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fastrand::Rng;
use lambda_driver::FunctionProcess;
use polar_discount_sync::sync::{Checkpoint, Step};
use polar_double::{Fault, FaultAction};

use super::report::Stats;
use super::support::World;
use super::workers::{ProcessSlot, Progress, BINARY};

pub const STEPS: [Step; 5] = [
    Step::LeaseTaken,
    Step::ClaimTaken,
    Step::JournalWritten,
    Step::PolarWritten,
    Step::OrdersMarked,
];
/// At each step boundary an in-process invocation crashes with `CRASH_PROBABILITY`. So
/// that every step surely crashes, and not all at the start, each step also gets
/// `MIN_CRASHES_PER_STEP` seeded due points (shares of messages settled, within
/// `CRASH_DUE`): once one is passed and not yet met, that step crashes with
/// `DUE_CRASH_PROBABILITY`.
const MIN_CRASHES_PER_STEP: usize = 2;
const CRASH_DUE: std::ops::Range<f64> = 0.02..0.7;
const DUE_CRASH_PROBABILITY: f64 = 0.1;
const CRASH_PROBABILITY: f64 = 0.0015;
const CRASH_MARKER: &str = "simulated crash";
const MAX_KILLS: usize = 4;
/// No more kills once fewer messages than this share are left: a killed process holds
/// its leases until its deadline + LEASE_GRACE (25 s), which would only stretch the tail.
const KILLS_UNTIL_LEFT: f64 = 0.25;

// Polar faults: one after every few Polar requests.
const REQUESTS_BETWEEN_FAULTS: std::ops::RangeInclusive<usize> = 5..=14;
const MAX_DELETE_FAULTS: u64 = 3;
pub const DELAY_MILLIS: u64 = 1_500;

pub fn step_index(step: Step) -> usize {
    STEPS
        .iter()
        .position(|s| *s == step)
        .expect("every step is listed")
}

/// Per step, the progress (share of messages settled) by which its first crashes are due.
pub struct CrashPlan {
    due: [Vec<f64>; 5],
}

impl CrashPlan {
    pub fn new(rng: &mut Rng) -> Self {
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
pub fn crash_hook(
    rng: Rng,
    plan: Arc<CrashPlan>,
    progress: Arc<Progress>,
    stats: Arc<Stats>,
) -> Checkpoint {
    let rng = Mutex::new(rng);
    Arc::new(move |step: Step| {
        let index = step_index(step);
        stats.passed[index].fetch_add(1, Ordering::Relaxed);
        let crashes = stats.crashes[index].load(Ordering::SeqCst);
        let probability = plan.probability(index, crashes, 1.0 - progress.left_share());
        let crash = rng.lock().unwrap().f64() < probability;
        if crash {
            stats.crashes[index].fetch_add(1, Ordering::SeqCst);
            panic!("{CRASH_MARKER} at {step:?}");
        }
    })
}

/// Simulated crashes are expected: keep their panic messages out of the output.
pub fn quiet_simulated_crashes() {
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
pub async fn killer(
    slots: Vec<Arc<ProcessSlot>>,
    env: Vec<(String, String)>,
    progress: Arc<Progress>,
    mut rng: Rng,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) {
    for _ in 0..MAX_KILLS {
        if !nap(&stop, Duration::from_millis(rng.u64(3_000..=8_000))).await {
            return;
        }
        if progress.left_share() < KILLS_UNTIL_LEFT {
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
pub enum FaultKind {
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

pub const FAULT_KINDS: [FaultKind; 9] = [
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
    pub fn name(self) -> &'static str {
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
pub async fn fault_injector(
    world: Arc<World>,
    mut rng: Rng,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) {
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
