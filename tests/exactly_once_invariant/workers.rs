//! The invocations: each worker is one Lambda execution environment, polling the shared
//! event source one batch at a time, in process (a handler wired as production wires it)
//! or in a real function process behind a Runtime API.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fastrand::Rng;
use lambda_driver::{FunctionProcess, Outcome, RuntimeApi};
use polar_discount_sync::lambda::ProductionHandler;

use super::support::event_source::{Answer, Batch, EventSource};
use super::support::failed_ids;
use super::support::simulated_sqs::SimulatedSqs;
use super::support::sqs::{event_of, failed_ids_json};

pub const BINARY: &str = env!("CARGO_BIN_EXE_polar-discount-sync");
pub const IN_PROCESS_WORKERS: usize = 4;
pub const PROCESS_WORKERS: usize = 2;
/// Short enough that a crashed in-process invocation blocks its discounts for at most
/// ~20 s (deadline + LEASE_GRACE), long enough to start messages (START_MARGIN is 2 s).
pub const IN_PROCESS_TIMEOUT: Duration = Duration::from_secs(10);
/// Half the template's 30 s: a killed process holds its leases until its deadline + 10 s
/// and its batch for the queue's visibility timeout, which would only stretch the tail.
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(15);
/// The in-process Polar client's request timeout: shorter than the injected delays.
pub const IN_PROCESS_POLAR_TIMEOUT: Duration = Duration::from_millis(800);
const MAX_BATCH: usize = 10;

/// How far the run is: the share of sent messages still in the source queue.
pub struct Progress {
    pub sqs: Arc<SimulatedSqs>,
    pub queue_url: String,
    pub total: usize,
}

impl Progress {
    pub fn left_share(&self) -> f64 {
        let left = self.sqs.counts(&self.queue_url).map_or(0, |c| c.total());
        left as f64 / self.total.max(1) as f64
    }
}

/// A function process and the Runtime API it polls; the killer replaces the process.
pub struct ProcessSlot {
    pub api: RuntimeApi,
    pub process: tokio::sync::Mutex<FunctionProcess>,
    pub busy: AtomicBool,
}

pub enum Function {
    InProcess(Arc<ProductionHandler>),
    Process(Arc<ProcessSlot>),
}

pub struct Worker {
    pub name: String,
    pub function: Function,
    pub source: Arc<EventSource>,
    pub stop: Arc<AtomicBool>,
    pub rng: Rng,
}

impl Worker {
    pub async fn run(mut self) {
        while !self.stop.load(Ordering::SeqCst) {
            let size = self.rng.usize(1..=MAX_BATCH);
            let Some(batch) = self.source.receive(size).await else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let answer = match &self.function {
                Function::InProcess(handler) => invoke_in_process(handler.clone(), &batch).await,
                Function::Process(slot) => invoke_process(slot, &batch).await,
            };
            let answer = match answer {
                Answer::Errored(error) => Answer::Errored(format!("{}: {error}", self.name)),
                other => other,
            };
            self.source.finish(batch, answer).await;
        }
    }
}

async fn invoke_in_process(handler: Arc<ProductionHandler>, batch: &Batch) -> Answer {
    let event = event_of(batch.records.clone(), IN_PROCESS_TIMEOUT);
    // A task of its own, so that a panic at a checkpoint ends this invocation only,
    // dropping whatever it was doing, as a crash would.
    let invocation = tokio::spawn(async move { handler.handle(event).await });
    let abort = invocation.abort_handle();
    match tokio::time::timeout(IN_PROCESS_TIMEOUT + Duration::from_millis(500), invocation).await {
        Err(_) => {
            abort.abort();
            Answer::TimedOut
        }
        Ok(Err(join)) if join.is_panic() => Answer::Crashed,
        Ok(Err(join)) => Answer::Errored(format!("invocation task: {join}")),
        Ok(Ok(Err(error))) => Answer::Errored(format!("handler error: {error}")),
        Ok(Ok(Ok(response))) => Answer::Failed(failed_ids(&response)),
    }
}

async fn invoke_process(slot: &ProcessSlot, batch: &Batch) -> Answer {
    // Wait while the killer is replacing the process.
    drop(slot.process.lock().await);
    slot.busy.store(true, Ordering::SeqCst);
    let outcome = slot.api.invoke(batch.event_json(), PROCESS_TIMEOUT).await;
    slot.busy.store(false, Ordering::SeqCst);
    match outcome {
        Outcome::Response(response) => match failed_ids_json(&response) {
            Some(failed) => Answer::Failed(failed),
            None => Answer::Errored(format!("not a partial batch response: {response}")),
        },
        Outcome::Error { error_type, .. } if error_type == "Runtime.ExitError" => Answer::Crashed,
        Outcome::Error {
            error_type,
            error_message,
        } => Answer::Errored(format!("{error_type}: {error_message}")),
        Outcome::TimedOut => Answer::TimedOut,
        Outcome::InitError(body) => Answer::Errored(format!("init error: {body}")),
    }
}
