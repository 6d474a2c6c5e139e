//! A minimal, local implementation of the server side of the
//! [AWS Lambda Runtime API](https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html)
//! (version `2018-06-01`), plus a helper that spawns a function binary against it.
//!
//! It is dev/test tooling: it lets tests and the local-run command drive the real
//! function binary (built with the `lambda_runtime` crate) with events, exactly as
//! the Lambda service would, without AWS.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use lambda_driver::{FunctionProcess, Outcome, RuntimeApi};
//! use std::time::Duration;
//!
//! let api = RuntimeApi::start().await?;
//! let mut function = FunctionProcess::spawn("target/debug/my-fn".as_ref(), &[], &api)?;
//! match api.invoke(serde_json::json!({"hello": "world"}), Duration::from_secs(3)).await {
//!     Outcome::Response(body) => println!("{body}"),
//!     other => eprintln!("{other:?}"),
//! }
//! function.kill().await;
//! # Ok(())
//! # }
//! ```
//!
//! Supported endpoints (all under `/2018-06-01`):
//!
//! * `GET runtime/invocation/next` — long-polls until an invocation is queued, then
//!   answers with the event as the body and the `Lambda-Runtime-Aws-Request-Id`,
//!   `Lambda-Runtime-Deadline-Ms`, `Lambda-Runtime-Invoked-Function-Arn` and
//!   `Lambda-Runtime-Trace-Id` headers.
//! * `POST runtime/invocation/{id}/response` — `202`; buffered or streaming responses.
//! * `POST runtime/invocation/{id}/error` — `202`; body `{errorMessage, errorType}`.
//! * `POST runtime/init/error` — `202`; recorded and returned by [`RuntimeApi::init_error`].
//!
//! An answer for a request id that timed out gets `410 Gone`; one for an id that was never
//! handed out gets `400` (`InvalidRequestID`).
//!
//! Unix only (the function's stdout is redirected to this process's stderr by file descriptor).

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::{oneshot, watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long after the deadline an answer is still accepted before the invocation is
/// declared timed out (covers the function's last-moment answer in flight).
pub const DEADLINE_GRACE: Duration = Duration::from_millis(500);

/// How long, on top of the function timeout, an invocation may wait for the function to
/// ask for it (`GET next`) before it is declared timed out. Matches Lambda's 10 s init limit.
pub const PICKUP_ALLOWANCE: Duration = Duration::from_secs(10);

/// Lambda's synchronous invocation payload limit; larger bodies get `413`.
const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

const ACCOUNT_ID: &str = "000000000000";

/// The result of one invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The function answered on `/response`. A body that is not JSON is given as a JSON
    /// string; an empty body as `null`.
    Response(Value),
    /// The function answered on `/error`, or its process exited before answering
    /// (`error_type` `Runtime.ExitError`).
    Error {
        error_type: String,
        error_message: String,
    },
    /// No answer arrived by the deadline (plus [`DEADLINE_GRACE`]), or the function never
    /// asked for the invocation within its timeout plus [`PICKUP_ALLOWANCE`].
    TimedOut,
    /// The function reported an init error (the body it posted to `/runtime/init/error`).
    InitError(Value),
}

/// The running Runtime API server, bound to `127.0.0.1` on a free port.
/// It shuts down when dropped.
pub struct RuntimeApi {
    address: SocketAddr,
    shared: Arc<Shared>,
    /// Serialises invocations: one process handles one invocation at a time (fair, FIFO).
    turn: tokio::sync::Mutex<()>,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for RuntimeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeApi")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl RuntimeApi {
    /// Bind `127.0.0.1:0` and serve the Runtime API in a background task.
    pub async fn start() -> std::io::Result<RuntimeApi> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared::new());
        let router = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next_invocation))
            .route(
                "/2018-06-01/runtime/invocation/{request_id}/response",
                post(invocation_response),
            )
            .route(
                "/2018-06-01/runtime/invocation/{request_id}/error",
                post(invocation_error),
            )
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .layer(DefaultBodyLimit::max(MAX_PAYLOAD_BYTES))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                eprintln!("lambda-driver: runtime API server failed: {error}");
            }
        });
        Ok(RuntimeApi {
            address,
            shared,
            turn: tokio::sync::Mutex::new(()),
            server,
        })
    }

    /// `"127.0.0.1:PORT"`: the value for `AWS_LAMBDA_RUNTIME_API`.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    /// Queue one invocation and wait for the function's answer.
    ///
    /// `timeout` is the function timeout. The `Lambda-Runtime-Deadline-Ms` header is the time
    /// the function picks the invocation up plus `timeout`; if no answer arrives by then (plus
    /// [`DEADLINE_GRACE`]) the result is [`Outcome::TimedOut`], and a late answer is refused
    /// with `410 Gone`. Concurrent calls queue and are handed out one at a time, in order.
    ///
    /// Returns promptly with [`Outcome::InitError`] if the function reported an init error,
    /// and with an `Outcome::Error` of type `Runtime.ExitError` if the process spawned by
    /// [`FunctionProcess::spawn`] exits before answering (or has already exited).
    pub async fn invoke(&self, event: Value, timeout: Duration) -> Outcome {
        let _turn = self.turn.lock().await;
        let shared = &self.shared;
        let mut status = shared.status.subscribe();
        let request_id = uuid::Uuid::new_v4().to_string();
        if let Some(outcome) = status.borrow().settled(&request_id) {
            return outcome;
        }

        let (delivered_tx, delivered_rx) = oneshot::channel();
        let (answer_tx, answer_rx) = oneshot::channel();
        *lock(&shared.pending) = Some(Pending {
            request_id: request_id.clone(),
            event: Bytes::from(serde_json::to_vec(&event).expect("a JSON value serialises")),
            timeout,
            delivered: delivered_tx,
            answer: answer_tx,
        });
        shared.pending_ready.notify_waiters();

        let pickup_limit = tokio::time::sleep(timeout + PICKUP_ALLOWANCE);
        let deadline = tokio::select! {
            biased;
            Ok(deadline) = delivered_rx => deadline,
            outcome = wait_until_settled(&mut status, &request_id) => {
                shared.withdraw(&request_id);
                return outcome;
            }
            _ = pickup_limit => {
                shared.withdraw(&request_id);
                return Outcome::TimedOut;
            }
        };

        tokio::select! {
            biased;
            Ok(outcome) = answer_rx => outcome,
            outcome = wait_until_settled(&mut status, &request_id) => {
                shared.withdraw(&request_id);
                outcome
            }
            _ = tokio::time::sleep_until(deadline + DEADLINE_GRACE) => {
                shared.withdraw(&request_id);
                Outcome::TimedOut
            }
        }
    }

    /// The body of an init error, if the current function process reported one.
    pub fn init_error(&self) -> Option<Value> {
        self.shared.status.borrow().init_error.clone()
    }

    /// When the current function process (the last one spawned with [`FunctionProcess`])
    /// first asked for an invocation (`GET next`): the end of its cold start. `None` until
    /// it has asked.
    pub fn first_next_at(&self) -> Option<std::time::Instant> {
        *lock(&self.shared.first_next_at)
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.shared
            .status
            .send_modify(|status| status.shutdown = true);
        self.server.abort();
    }
}

/// A spawned function binary. It is killed when dropped.
pub struct FunctionProcess {
    pid: Option<u32>,
    spawned_at: std::time::Instant,
    exit: watch::Receiver<Option<ExitStatus>>,
    kill: Option<oneshot::Sender<()>>,
    _monitor: JoinHandle<()>,
}

impl std::fmt::Debug for FunctionProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionProcess")
            .field("pid", &self.pid)
            .field("exit", &*self.exit.borrow())
            .finish_non_exhaustive()
    }
}

impl FunctionProcess {
    /// Spawn `binary` with `env` added to the inherited environment, plus the variables the
    /// Lambda runtime needs: `AWS_LAMBDA_RUNTIME_API` (always `api`'s address),
    /// `AWS_LAMBDA_FUNCTION_NAME` (the binary's file name), `AWS_LAMBDA_FUNCTION_VERSION=$LATEST`,
    /// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128`, `AWS_LAMBDA_INITIALIZATION_TYPE=on-demand` and
    /// `AWS_LAMBDA_LOG_GROUP_NAME`; entries in `env` override all but the first.
    ///
    /// The function's stdout and stderr both go to this process's stderr, so that this
    /// process's stdout stays free for results. Must be called within a Tokio runtime.
    pub fn spawn(
        binary: &Path,
        env: &[(String, String)],
        api: &RuntimeApi,
    ) -> std::io::Result<FunctionProcess> {
        Self::spawn_with_args(binary, std::iter::empty::<&OsStr>(), env, api)
    }

    /// [`FunctionProcess::spawn`] with command-line arguments for the binary.
    pub fn spawn_with_args<I, S>(
        binary: &Path,
        args: I,
        env: &[(String, String)],
        api: &RuntimeApi,
    ) -> std::io::Result<FunctionProcess>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let stdout = Stdio::from(std::io::stderr().as_fd().try_clone_to_owned()?);
        Self::spawn_with_stdout(binary, args, env, api, stdout, Stdio::inherit())
    }

    /// [`FunctionProcess::spawn`] with the function's stdout and stderr written to `log`
    /// (created or truncated), for tests that read what the function logs.
    pub fn spawn_logging_to(
        binary: &Path,
        env: &[(String, String)],
        api: &RuntimeApi,
        log: &Path,
    ) -> std::io::Result<FunctionProcess> {
        let file = std::fs::File::create(log)?;
        let stderr = Stdio::from(file.try_clone()?);
        Self::spawn_with_stdout(
            binary,
            std::iter::empty::<&OsStr>(),
            env,
            api,
            Stdio::from(file),
            stderr,
        )
    }

    fn spawn_with_stdout<I, S>(
        binary: &Path,
        args: I,
        env: &[(String, String)],
        api: &RuntimeApi,
        stdout: Stdio,
        stderr: Stdio,
    ) -> std::io::Result<FunctionProcess>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let lookup = |key: &str| {
            env.iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let name = lookup("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|| {
            binary
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "function".to_owned())
        });
        let region = lookup("AWS_REGION")
            .or_else(|| std::env::var("AWS_REGION").ok())
            .unwrap_or_else(|| "us-east-1".to_owned());

        let mut command = tokio::process::Command::new(binary);
        command
            .args(args)
            .env("AWS_LAMBDA_FUNCTION_NAME", &name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("AWS_LAMBDA_RUNTIME_API", api.address())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true);

        let shared = api.shared.clone();
        *lock(&shared.function_arn) =
            format!("arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{name}");
        // Register the new process before it can talk to the API: a fresh process gets a
        // fresh init, so an earlier init error or exit no longer applies.
        let generation = shared.generation.fetch_add(1, Ordering::SeqCst) + 1;
        shared.status.send_modify(|status| {
            status.process = ProcessState::Running { generation };
            status.init_error = None;
        });
        *lock(&shared.first_next_at) = None;
        let spawned_at = std::time::Instant::now();
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                shared
                    .status
                    .send_modify(|status| status.process = ProcessState::None);
                return Err(error);
            }
        };
        let pid = child.id();

        let (exit_tx, exit_rx) = watch::channel(None);
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        let monitor = tokio::spawn(async move {
            let waited = tokio::select! {
                status = child.wait() => status,
                // An explicit kill, or the FunctionProcess was dropped.
                _ = kill_rx => {
                    let _ = child.start_kill();
                    child.wait().await
                }
            };
            // `wait` only fails if the child was already reaped; report a generic failure.
            let status = waited.unwrap_or_else(|_| ExitStatus::from_raw(255 << 8));
            exit_tx.send_replace(Some(status));
            shared.status.send_modify(|s| {
                if s.process == (ProcessState::Running { generation }) {
                    s.process = ProcessState::Exited { generation, status };
                }
            });
        });

        Ok(FunctionProcess {
            pid,
            spawned_at,
            exit: exit_rx,
            kill: Some(kill_tx),
            _monitor: monitor,
        })
    }

    /// The OS process id (`None` once it has been reaped).
    pub fn id(&self) -> Option<u32> {
        self.pid
    }

    /// Just before the process was spawned: with [`RuntimeApi::first_next_at`], its start time.
    pub fn spawned_at(&self) -> std::time::Instant {
        self.spawned_at
    }

    /// Kill the process (SIGKILL) and wait until it has exited. Does nothing more if it had
    /// already exited.
    pub async fn kill(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        self.wait().await;
    }

    /// Wait for the process to exit by itself and return its exit status (`None` only if the
    /// Tokio runtime that watches it is shutting down).
    pub async fn wait(&mut self) -> Option<ExitStatus> {
        let _ = self.exit.wait_for(Option::is_some).await;
        let status = *self.exit.borrow();
        status
    }

    /// The exit status, if the process has exited.
    pub fn try_exited(&mut self) -> Option<ExitStatus> {
        *self.exit.borrow()
    }
}

// ---------------------------------------------------------------------------------------------
// Shared state

struct Pending {
    request_id: String,
    event: Bytes,
    timeout: Duration,
    /// Receives the deadline when the function picks the invocation up.
    delivered: oneshot::Sender<Instant>,
    answer: oneshot::Sender<Outcome>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum ProcessState {
    /// No process spawned through [`FunctionProcess`] (the function may be run by other means).
    #[default]
    None,
    Running {
        generation: u64,
    },
    Exited {
        generation: u64,
        status: ExitStatus,
    },
}

#[derive(Debug, Clone, Default)]
struct Status {
    init_error: Option<Value>,
    process: ProcessState,
    shutdown: bool,
}

impl Status {
    /// The outcome forced on any invocation by the function's state, if any.
    fn settled(&self, request_id: &str) -> Option<Outcome> {
        if let Some(body) = &self.init_error {
            return Some(Outcome::InitError(body.clone()));
        }
        match self.process {
            ProcessState::Exited { status, .. } => Some(Outcome::Error {
                error_type: "Runtime.ExitError".to_owned(),
                error_message: format!(
                    "RequestId: {request_id} Error: Runtime exited with error: {status}"
                ),
            }),
            _ => None,
        }
    }
}

async fn wait_until_settled(status: &mut watch::Receiver<Status>, request_id: &str) -> Outcome {
    let settled = match status.wait_for(|s| s.settled(request_id).is_some()).await {
        Ok(current) => current.settled(request_id),
        Err(_) => None,
    };
    match settled {
        Some(outcome) => outcome,
        None => std::future::pending().await,
    }
}

struct Shared {
    /// The invocation waiting to be picked up (at most one: `RuntimeApi::turn` serialises).
    pending: Mutex<Option<Pending>>,
    pending_ready: Notify,
    /// Picked-up invocations waiting for an answer, by request id.
    in_flight: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    /// Request ids that were given up on (timed out, process gone): late answers get 410.
    expired: Mutex<HashSet<String>>,
    status: watch::Sender<Status>,
    function_arn: Mutex<String>,
    generation: AtomicU64,
    /// The current process's first `GET next` (reset when a process is spawned).
    first_next_at: Mutex<Option<std::time::Instant>>,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            pending: Mutex::new(None),
            pending_ready: Notify::new(),
            in_flight: Mutex::new(HashMap::new()),
            expired: Mutex::new(HashSet::new()),
            status: watch::Sender::new(Status::default()),
            function_arn: Mutex::new(format!(
                "arn:aws:lambda:us-east-1:{ACCOUNT_ID}:function:function"
            )),
            generation: AtomicU64::new(0),
            first_next_at: Mutex::new(None),
        }
    }

    /// Forget an invocation that was given up on, whether still queued or in flight.
    fn withdraw(&self, request_id: &str) {
        let mut pending = lock(&self.pending);
        if pending.as_ref().is_some_and(|p| p.request_id == request_id) {
            *pending = None;
        }
        drop(pending);
        lock(&self.in_flight).remove(request_id);
        lock(&self.expired).insert(request_id.to_owned());
    }

    /// Hand the queued invocation, if any, to the function: the `next` response.
    fn try_deliver(&self) -> Option<Response> {
        let pending = lock(&self.pending).take()?;
        if pending.answer.is_closed() {
            // The invoke call was cancelled.
            return None;
        }
        let now = SystemTime::now();
        let deadline = Instant::now() + pending.timeout;
        let deadline_ms = (now + pending.timeout)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        lock(&self.in_flight).insert(pending.request_id.clone(), pending.answer);
        if pending.delivered.send(deadline).is_err() {
            lock(&self.in_flight).remove(&pending.request_id);
            return None;
        }

        let mut headers = HeaderMap::new();
        let mut put = |name: &'static str, value: String| {
            if let Ok(value) = HeaderValue::try_from(value) {
                headers.insert(name, value);
            }
        };
        put("lambda-runtime-aws-request-id", pending.request_id);
        put("lambda-runtime-deadline-ms", deadline_ms.to_string());
        put(
            "lambda-runtime-invoked-function-arn",
            lock(&self.function_arn).clone(),
        );
        put("lambda-runtime-trace-id", trace_id(now));
        put("content-type", "application/json".to_owned());
        Some((StatusCode::OK, headers, pending.event).into_response())
    }

    /// Route an answer to the waiting invoke call.
    fn answer(&self, request_id: &str, outcome: Outcome) -> Response {
        match lock(&self.in_flight).remove(request_id) {
            Some(waiter) => {
                let _ = waiter.send(outcome);
                (StatusCode::ACCEPTED, Json(json!({"status": "OK"}))).into_response()
            }
            None if lock(&self.expired).contains(request_id) => api_error(
                StatusCode::GONE,
                "InvocationTimedOut",
                format!(
                    "Invocation {request_id} is no longer in progress (timed out or abandoned)"
                ),
            ),
            None => api_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestID",
                format!("Invalid request ID: {request_id}"),
            ),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn api_error(status: StatusCode, error_type: &str, message: String) -> Response {
    (
        status,
        Json(json!({"errorType": error_type, "errorMessage": message})),
    )
        .into_response()
}

/// An X-Ray style trace header: `Root=1-<epoch secs hex>-<24 hex>;Parent=<16 hex>;Sampled=0`.
fn trace_id(now: SystemTime) -> String {
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "Root=1-{secs:08x}-{};Parent={};Sampled=0",
        &random[..24],
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    )
}

// ---------------------------------------------------------------------------------------------
// Handlers

async fn next_invocation(State(shared): State<Arc<Shared>>) -> Response {
    lock(&shared.first_next_at).get_or_insert_with(std::time::Instant::now);
    let mut status = shared.status.subscribe();
    loop {
        let notified = shared.pending_ready.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(response) = shared.try_deliver() {
            return response;
        }
        let shutting_down = async {
            let _ = status.wait_for(|s| s.shutdown).await;
        };
        tokio::select! {
            _ = notified => {}
            _ = shutting_down => {
                return api_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceShutdown",
                    "The runtime API is shutting down".to_owned(),
                );
            }
        }
    }
}

async fn invocation_response(
    State(shared): State<Arc<Shared>>,
    UrlPath(request_id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let streaming = headers
        .get("lambda-runtime-function-response-mode")
        .is_some_and(|mode| mode.as_bytes().eq_ignore_ascii_case(b"streaming"));
    let payload = if streaming {
        // A streamed HTTP-integration response starts with a JSON metadata prelude and
        // eight NUL bytes; the payload follows.
        const DELIMITER: &[u8] = &[0; 8];
        match body.windows(DELIMITER.len()).position(|w| w == DELIMITER) {
            Some(at) => body.slice(at + DELIMITER.len()..),
            None => body,
        }
    } else {
        body
    };
    shared.answer(&request_id, Outcome::Response(body_value(&payload)))
}

async fn invocation_error(
    State(shared): State<Arc<Shared>>,
    UrlPath(request_id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (error_type, error_message) = error_fields(&headers, &body);
    shared.answer(
        &request_id,
        Outcome::Error {
            error_type,
            error_message,
        },
    )
}

async fn init_error(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let value = match serde_json::from_slice::<Value>(&body) {
        Ok(value) if value.is_object() => value,
        _ => {
            let (error_type, error_message) = error_fields(&headers, &body);
            json!({"errorType": error_type, "errorMessage": error_message})
        }
    };
    shared
        .status
        .send_modify(|status| status.init_error = Some(value));
    (StatusCode::ACCEPTED, Json(json!({"status": "OK"}))).into_response()
}

/// A response body as JSON: parsed if it is JSON, else a string; empty is `null`.
fn body_value(body: &[u8]) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// `errorType` and `errorMessage` from an error body, falling back to the
/// `Lambda-Runtime-Function-Error-Type` header and the raw body.
fn error_fields(headers: &HeaderMap, body: &[u8]) -> (String, String) {
    let parsed = serde_json::from_slice::<Value>(body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let error_type = field("errorType")
        .or_else(|| {
            headers
                .get("lambda-runtime-function-error-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "Unhandled".to_owned());
    let error_message = field("errorMessage").unwrap_or_else(|| match &parsed {
        Some(Value::Object(_)) | None => String::from_utf8_lossy(body).into_owned(),
        Some(other) => other.to_string(),
    });
    (error_type, error_message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_body_gives_its_type_and_message() {
        let (error_type, message) = error_fields(
            &HeaderMap::new(),
            br#"{"errorType":"Boom","errorMessage":"it broke"}"#,
        );
        assert_eq!(
            (error_type.as_str(), message.as_str()),
            ("Boom", "it broke")
        );
    }

    #[test]
    fn an_error_without_a_json_body_falls_back_to_the_header_and_raw_text() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "lambda-runtime-function-error-type",
            HeaderValue::from_static("Runtime.Custom"),
        );
        let (error_type, message) = error_fields(&headers, b"plain failure");
        assert_eq!(
            (error_type.as_str(), message.as_str()),
            ("Runtime.Custom", "plain failure")
        );
    }

    #[test]
    fn a_non_json_response_body_is_kept_as_a_string_and_an_empty_one_as_null() {
        assert_eq!(body_value(b"hello"), Value::String("hello".into()));
        assert_eq!(body_value(b""), Value::Null);
        assert_eq!(body_value(br#"{"a":1}"#), json!({"a": 1}));
    }

    #[test]
    fn a_trace_id_has_the_x_ray_shape() {
        let id = trace_id(UNIX_EPOCH + Duration::from_secs(0x5f00_0000));
        assert!(id.starts_with("Root=1-5f000000-"), "{id}");
        assert!(id.ends_with(";Sampled=0"), "{id}");
    }
}
