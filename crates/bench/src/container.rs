//! One Lambda container: the function binary as its own process, behind its own Runtime
//! API (which hands it one invocation at a time, as Lambda does).

use std::path::Path;
use std::time::{Duration, Instant};

use lambda_driver::{FunctionProcess, Outcome, RuntimeApi};
use serde_json::Value;

use crate::event_source::Answer;
use crate::machine;

/// Lambda's init phase limit.
const INIT_LIMIT: Duration = Duration::from_secs(10);

pub struct Container {
    api: RuntimeApi,
    process: FunctionProcess,
    /// From spawning the process to its first `GET /runtime/invocation/next`.
    pub start_time: Duration,
}

impl Container {
    /// Spawns the binary with `env` and waits until it asks for its first invocation.
    pub async fn start(binary: &Path, env: &[(String, String)]) -> Result<Container, String> {
        let api = RuntimeApi::start()
            .await
            .map_err(|e| format!("Runtime API: {e}"))?;
        let mut process = FunctionProcess::spawn(binary, env, &api)
            .map_err(|e| format!("spawn {}: {e}", binary.display()))?;
        let waiting_since = Instant::now();
        let first_next = loop {
            if let Some(at) = api.first_next_at() {
                break at;
            }
            if let Some(error) = api.init_error() {
                return Err(format!("the function reported an init error: {error}"));
            }
            if let Some(status) = process.try_exited() {
                return Err(format!("the function exited during init: {status}"));
            }
            if waiting_since.elapsed() > INIT_LIMIT {
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

    pub async fn stop(mut self) {
        self.process.kill().await;
    }
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
