//! One Lambda container: the function binary as its own process, behind its own Runtime
//! API (which hands it one invocation at a time, as Lambda does). What the function writes
//! (stdout and stderr: its log lines and EMF documents, which Lambda would send to
//! CloudWatch Logs) goes to a file of its own, measured, then copied to the bench's stderr
//! when the container stops.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lambda_driver::{FunctionProcess, Outcome, RuntimeApi};
use serde_json::Value;

use crate::machine;
use test_kit::event_source::Answer;

/// Lambda's init phase limit.
const INIT_LIMIT: Duration = Duration::from_secs(10);

/// Numbers the containers' log files within this bench process.
static CONTAINERS: AtomicUsize = AtomicUsize::new(0);

/// What the function wrote to its logs over some span.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogBytes {
    pub bytes: u64,
    /// Lines, each a log event in CloudWatch Logs.
    pub lines: u64,
    /// Of `bytes`, those of the EMF documents (lines with an `"_aws"` member).
    pub emf_bytes: u64,
    /// The function's `LeaseWaitRequests` metric, summed over its EMF documents: its DynamoDB
    /// requests answered that another invocation holds the lease.
    pub lease_wait_requests: u64,
    /// Its `HandOffRequests` metric: DynamoDB requests that handed a waiter's orders to the
    /// lease's holder.
    pub hand_off_requests: u64,
}

impl LogBytes {
    pub fn add(&mut self, other: LogBytes) {
        self.bytes += other.bytes;
        self.lines += other.lines;
        self.emf_bytes += other.emf_bytes;
        self.lease_wait_requests += other.lease_wait_requests;
        self.hand_off_requests += other.hand_off_requests;
    }

    fn of(text: &[u8]) -> LogBytes {
        let mut counted = LogBytes {
            bytes: text.len() as u64,
            ..LogBytes::default()
        };
        for line in text.split_inclusive(|b| *b == b'\n') {
            counted.lines += 1;
            if line.windows(6).any(|w| w == b"\"_aws\"") {
                counted.emf_bytes += line.len() as u64;
                counted.lease_wait_requests += count_in(line, "LeaseWaitRequests");
                counted.hand_off_requests += count_in(line, "HandOffRequests");
            }
        }
        counted
    }
}

/// The EMF document's value of the count `metric` (0 when absent).
fn count_in(emf_document: &[u8], metric: &str) -> u64 {
    serde_json::from_slice::<Value>(emf_document)
        .ok()
        .and_then(|document| document.get(metric)?.as_u64())
        .unwrap_or(0)
}

pub struct Container {
    api: RuntimeApi,
    process: FunctionProcess,
    log: PathBuf,
    /// From spawning the process to its first `GET /runtime/invocation/next`.
    pub start_time: Duration,
}

impl Container {
    /// Spawns the binary with `env` and waits until it asks for its first invocation.
    pub async fn start(binary: &Path, env: &[(String, String)]) -> Result<Container, String> {
        let api = RuntimeApi::start()
            .await
            .map_err(|e| format!("Runtime API: {e}"))?;
        let log = std::env::temp_dir().join(format!(
            "polar-sync-bench-{}-{}.log",
            std::process::id(),
            CONTAINERS.fetch_add(1, Ordering::SeqCst)
        ));
        let mut process = FunctionProcess::spawn_logging_to(binary, env, &api, &log)
            .map_err(|e| format!("spawn {}: {e}", binary.display()))?;
        let waiting_since = Instant::now();
        let first_next = loop {
            if let Some(at) = api.first_next_at() {
                break at;
            }
            if let Some(error) = api.init_error() {
                copy_to_stderr(&log);
                return Err(format!("the function reported an init error: {error}"));
            }
            if let Some(status) = process.try_exited() {
                copy_to_stderr(&log);
                return Err(format!("the function exited during init: {status}"));
            }
            if waiting_since.elapsed() > INIT_LIMIT {
                copy_to_stderr(&log);
                return Err(format!(
                    "the function did not ask for work within {INIT_LIMIT:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let start_time = first_next.saturating_duration_since(process.spawned_at());
        Ok(Container {
            api,
            process,
            log,
            start_time,
        })
    }

    /// One invocation with `event`; its deadline is `timeout` after the function picks it up.
    pub async fn invoke(&self, event: Value, timeout: Duration) -> Answer {
        match self.api.invoke(event, timeout).await {
            Outcome::Response(body) => match failed_ids(&body) {
                Some(failed) => Answer::Failed(failed),
                None => Answer::Errored(format!("not a partial batch response: {body}")),
            },
            Outcome::Error {
                error_type,
                error_message,
            } => Answer::Errored(format!("{error_type}: {error_message}")),
            Outcome::TimedOut => Answer::TimedOut,
            Outcome::InitError(body) => Answer::Errored(format!("init error: {body}")),
        }
    }

    pub fn peak_rss_bytes(&self) -> Option<u64> {
        machine::peak_rss_bytes(self.process.id()?)
    }

    /// How far the function's log has come: a mark for [`Container::logged_since`].
    pub fn log_mark(&self) -> u64 {
        std::fs::metadata(&self.log).map_or(0, |m| m.len())
    }

    /// What the function logged since `mark`.
    pub fn logged_since(&self, mark: u64) -> LogBytes {
        let mut text = Vec::new();
        let read = std::fs::File::open(&self.log).and_then(|mut file| {
            file.seek(SeekFrom::Start(mark))?;
            file.read_to_end(&mut text)
        });
        match read {
            Ok(_) => LogBytes::of(&text),
            Err(_) => LogBytes::default(),
        }
    }

    /// Kills the function, then copies its log to the bench's stderr.
    pub async fn stop(mut self) {
        self.process.kill().await;
        copy_to_stderr(&self.log);
    }
}

impl Drop for Container {
    /// A container dropped without `stop` (a run given up on) still leaves its log behind.
    fn drop(&mut self) {
        copy_to_stderr(&self.log);
    }
}

/// The function's log onto the bench's stderr (`bench-results/stderr.log`), then removed.
fn copy_to_stderr(log: &Path) {
    if let Ok(mut file) = std::fs::File::open(log) {
        let _ = std::io::copy(&mut file, &mut std::io::stderr().lock());
    }
    let _ = std::fs::remove_file(log);
}

/// The message ids of `{"batchItemFailures": [{"itemIdentifier": …}]}`.
fn failed_ids(response: &Value) -> Option<Vec<String>> {
    response
        .get("batchItemFailures")?
        .as_array()?
        .iter()
        .map(|failure| Some(failure.get("itemIdentifier")?.as_str()?.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_bytes_count_every_line_and_the_emf_documents_apart() {
        let log = b"{\"level\":\"INFO\",\"message\":\"synced\"}\n{\"_aws\":{\"Timestamp\":1},\"Redemptions\":3}\nno newline";
        let counted = LogBytes::of(log);
        assert_eq!(counted.bytes, log.len() as u64);
        assert_eq!(counted.lines, 3);
        assert_eq!(counted.emf_bytes, 41);
        assert_eq!(LogBytes::of(b""), LogBytes::default());
    }

    #[test]
    fn lease_wait_and_hand_off_requests_are_summed_over_the_emf_documents() {
        let log = b"{\"_aws\":{},\"LeaseWaitRequests\":2}\n{\"message\":\"LeaseWaitRequests\"}\n{\"_aws\":{},\"OrdersDecremented\":1,\"HandOffRequests\":4}\n{\"_aws\":{},\"LeaseWaitRequests\":3}\n";
        assert_eq!(LogBytes::of(log).lease_wait_requests, 5);
        assert_eq!(LogBytes::of(log).hand_off_requests, 4);
    }
}
