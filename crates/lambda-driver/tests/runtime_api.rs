//! Drives a real function built with the `lambda_runtime` crate through the driver's Runtime API.
//!
//! The function is this very test executable, re-spawned with `LAMBDA_DRIVER_TEST_FUNCTION` set
//! so that it runs only `test_function_entry_point`, which then behaves as a Lambda function.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lambda_driver::{FunctionProcess, Outcome, RuntimeApi};
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::{json, Value};

const MODE_VAR: &str = "LAMBDA_DRIVER_TEST_FUNCTION";
const ENTRY_POINT: &str = "test_function_entry_point";
const GENEROUS: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// The test function

/// Does nothing in a normal test run; in a process spawned by these tests it is the function.
#[test]
fn test_function_entry_point() {
    let Ok(mode) = std::env::var(MODE_VAR) else {
        return;
    };
    let api = std::env::var("AWS_LAMBDA_RUNTIME_API").expect("AWS_LAMBDA_RUNTIME_API is set");
    match mode.as_str() {
        "echo" => {
            let runtime = tokio::runtime::Runtime::new().expect("a Tokio runtime");
            let result = runtime.block_on(lambda_runtime::run(service_fn(echo_handler)));
            eprintln!("test function: runtime stopped: {result:?}");
            std::process::exit(2);
        }
        "init-error" => {
            let (status, _, _) = http(
                &api,
                "POST",
                "/2018-06-01/runtime/init/error",
                &[("Lambda-Runtime-Function-Error-Type", "Runtime.InitError")],
                r#"{"errorType":"TestInitError","errorMessage":"configuration is missing"}"#,
            );
            assert_eq!(status, 202, "the init error is accepted");
            std::process::exit(1);
        }
        "exit-at-init" => std::process::exit(3),
        other => panic!("unknown test function mode {other}"),
    }
}

static INVOCATIONS: AtomicU64 = AtomicU64::new(0);

#[derive(Debug)]
struct Failure {
    error_type: String,
    message: String,
}

impl From<Failure> for Diagnostic {
    fn from(failure: Failure) -> Diagnostic {
        Diagnostic {
            error_type: failure.error_type,
            error_message: failure.message,
        }
    }
}

/// Echoes the event with its context. `sleep_ms` delays the answer, `exit` ends the process
/// mid-invocation, and `fail: {type, message}` returns a handler error.
async fn echo_handler(event: LambdaEvent<Value>) -> Result<Value, Failure> {
    let invocation = INVOCATIONS.fetch_add(1, Ordering::SeqCst) + 1;
    let (payload, context) = event.into_parts();
    println!("test function: invocation {invocation}: {payload}");
    if let Some(ms) = payload.get("sleep_ms").and_then(Value::as_u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(code) = payload.get("exit").and_then(Value::as_i64) {
        std::process::exit(code as i32);
    }
    if let Some(fail) = payload.get("fail") {
        return Err(Failure {
            error_type: fail["type"].as_str().unwrap_or("Failure").to_owned(),
            message: fail["message"].as_str().unwrap_or_default().to_owned(),
        });
    }
    let remaining_ms = context
        .deadline()
        .duration_since(SystemTime::now())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Ok(json!({
        "echo": payload,
        "invocation": invocation,
        "pid": std::process::id(),
        "request_id": context.request_id,
        "deadline_ms": context.deadline,
        "remaining_ms": remaining_ms,
        "function_arn": context.invoked_function_arn,
        "trace_id": context.xray_trace_id,
        "function_name": context.env_config.function_name,
        "memory": context.env_config.memory,
        "version": context.env_config.version,
    }))
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn this_executable() -> PathBuf {
    std::env::current_exe().expect("the test executable's path")
}

fn function_args() -> [&'static str; 5] {
    [
        ENTRY_POINT,
        "--exact",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ]
}

fn spawn_function(mode: &str, api: &RuntimeApi) -> FunctionProcess {
    spawn_function_with(mode, &[], api)
}

fn spawn_function_with(mode: &str, env: &[(&str, &str)], api: &RuntimeApi) -> FunctionProcess {
    let mut env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.push((MODE_VAR.to_owned(), mode.to_owned()));
    FunctionProcess::spawn_with_args(&this_executable(), function_args(), &env, api)
        .expect("the test function starts")
}

fn response(outcome: Outcome) -> Value {
    match outcome {
        Outcome::Response(body) => body,
        other => panic!("expected a response, got {other:?}"),
    }
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A one-shot HTTP/1.1 request over a plain socket: (status, lower-cased head, body).
fn http(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(address).expect("the runtime API accepts connections");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head[9..12].parse().expect("a status code");
    (status, head.to_ascii_lowercase(), body.to_owned())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// Event files in a scratch directory that is removed when dropped.
struct EventFiles(PathBuf);

impl EventFiles {
    fn new(test: &str) -> EventFiles {
        let dir =
            std::env::temp_dir().join(format!("lambda-driver-test-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        EventFiles(dir)
    }

    fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for EventFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// The Runtime API with a real lambda_runtime function

#[tokio::test]
async fn an_event_is_echoed_back_as_the_function_response() {
    let api = RuntimeApi::start().await.unwrap();
    let _function = spawn_function("echo", &api);

    let body = response(api.invoke(json!({"hello": "world"}), GENEROUS).await);

    assert_eq!(body["echo"], json!({"hello": "world"}));
    assert_eq!(body["invocation"], 1);
    assert!(body["trace_id"].as_str().unwrap().starts_with("Root=1-"));
}

#[tokio::test]
async fn two_invocations_in_sequence_are_served_by_the_same_warm_process() {
    let api = RuntimeApi::start().await.unwrap();
    let function = spawn_function("echo", &api);

    let first = response(api.invoke(json!({"n": 1}), GENEROUS).await);
    let second = response(api.invoke(json!({"n": 2}), GENEROUS).await);

    assert_eq!(
        (first["echo"]["n"].clone(), second["echo"]["n"].clone()),
        (json!(1), json!(2))
    );
    assert_eq!(
        (first["invocation"].clone(), second["invocation"].clone()),
        (json!(1), json!(2))
    );
    assert_eq!(first["pid"], second["pid"]);
    assert_eq!(first["pid"], json!(function.id().unwrap()));
    assert_ne!(first["request_id"], second["request_id"]);
}

#[tokio::test]
async fn concurrent_invocations_queue_and_are_handed_out_one_at_a_time_in_order() {
    let api = RuntimeApi::start().await.unwrap();
    let _function = spawn_function("echo", &api);

    let (a, b, c) = tokio::join!(
        api.invoke(json!({"i": 1, "sleep_ms": 100}), GENEROUS),
        api.invoke(json!({"i": 2, "sleep_ms": 100}), GENEROUS),
        api.invoke(json!({"i": 3, "sleep_ms": 100}), GENEROUS),
    );

    for (i, outcome) in [a, b, c].into_iter().enumerate() {
        let body = response(outcome);
        assert_eq!(body["echo"]["i"], json!(i + 1));
        assert_eq!(body["invocation"], json!(i + 1));
    }
}

#[tokio::test]
async fn a_handler_error_is_returned_with_its_error_type_and_message() {
    let api = RuntimeApi::start().await.unwrap();
    let _function = spawn_function("echo", &api);

    let outcome = api
        .invoke(
            json!({"fail": {"type": "DiscountSyncFailed", "message": "polar said no"}}),
            GENEROUS,
        )
        .await;

    assert_eq!(
        outcome,
        Outcome::Error {
            error_type: "DiscountSyncFailed".into(),
            error_message: "polar said no".into()
        }
    );
    // The process survives a handler error and serves the next event.
    assert_eq!(
        response(api.invoke(json!({}), GENEROUS).await)["invocation"],
        2
    );
}

#[tokio::test]
async fn the_deadline_header_is_the_pickup_time_plus_the_timeout_and_the_context_sees_it() {
    let api = RuntimeApi::start().await.unwrap();
    let _function = spawn_function_with("echo", &[("AWS_LAMBDA_FUNCTION_NAME", "echo-fn")], &api);
    // Warm up first so the pickup time is the invoke time.
    response(api.invoke(json!({}), GENEROUS).await);

    let before = epoch_ms();
    let body = response(api.invoke(json!({}), Duration::from_secs(7)).await);
    let after = epoch_ms();

    let deadline = body["deadline_ms"].as_u64().unwrap();
    assert!(
        (before + 7000..=after + 7000).contains(&deadline),
        "deadline {deadline} not within [{before}, {after}] + 7 s"
    );
    let remaining = body["remaining_ms"].as_u64().unwrap();
    assert!(
        (5000..=7000).contains(&remaining),
        "remaining {remaining} ms"
    );
    assert!(body["function_arn"]
        .as_str()
        .unwrap()
        .ends_with(":function:echo-fn"));
    assert_eq!(body["function_name"], "echo-fn");
    assert_eq!(body["memory"], 128);
    assert_eq!(body["version"], "$LATEST");
}

#[tokio::test]
async fn a_function_that_outlives_its_timeout_is_reported_as_timed_out() {
    let api = RuntimeApi::start().await.unwrap();
    let function = spawn_function("echo", &api);
    response(api.invoke(json!({}), GENEROUS).await);

    let started = Instant::now();
    let outcome = api
        .invoke(json!({"sleep_ms": 2000}), Duration::from_millis(300))
        .await;

    assert_eq!(outcome, Outcome::TimedOut);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    // The late answer is refused; the still-warm process then serves the next event.
    let next = response(api.invoke(json!({"after": "timeout"}), GENEROUS).await);
    assert_eq!(next["invocation"], 3);
    assert_eq!(next["pid"], json!(function.id().unwrap()));
}

#[tokio::test]
async fn an_init_error_is_returned_promptly_and_kept_on_the_api() {
    let api = RuntimeApi::start().await.unwrap();
    let mut function = spawn_function("init-error", &api);

    let started = Instant::now();
    let outcome = api.invoke(json!({}), GENEROUS).await;

    let expected =
        json!({"errorType": "TestInitError", "errorMessage": "configuration is missing"});
    assert_eq!(outcome, Outcome::InitError(expected.clone()));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(api.init_error(), Some(expected.clone()));
    assert_eq!(function.wait().await.and_then(|s| s.code()), Some(1));
    assert!(function.try_exited().is_some());
    // Later invocations fail the same way at once.
    assert_eq!(
        api.invoke(json!({}), GENEROUS).await,
        Outcome::InitError(expected)
    );
}

#[tokio::test]
async fn a_process_that_exits_during_init_is_reported_as_an_exit_error() {
    let api = RuntimeApi::start().await.unwrap();
    let _function = spawn_function("exit-at-init", &api);

    let started = Instant::now();
    let outcome = api.invoke(json!({}), GENEROUS).await;

    let Outcome::Error {
        error_type,
        error_message,
    } = outcome
    else {
        panic!("expected an exit error, got {outcome:?}");
    };
    assert_eq!(error_type, "Runtime.ExitError");
    assert!(error_message.contains("exit status: 3"), "{error_message}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(api.init_error(), None);
}

#[tokio::test]
async fn a_process_that_exits_mid_invocation_is_reported_as_an_exit_error() {
    let api = RuntimeApi::start().await.unwrap();
    let _function = spawn_function("echo", &api);

    let outcome = api.invoke(json!({"exit": 7}), GENEROUS).await;

    assert!(
        matches!(&outcome, Outcome::Error { error_type, error_message }
            if error_type == "Runtime.ExitError" && error_message.contains("exit status: 7")),
        "{outcome:?}"
    );
    // Nothing is left to answer later invocations: they fail at once rather than hang.
    let again = api.invoke(json!({}), GENEROUS).await;
    assert!(
        matches!(again, Outcome::Error { ref error_type, .. } if error_type == "Runtime.ExitError")
    );
}

#[tokio::test]
async fn a_killed_process_reports_its_exit_and_a_respawned_one_serves_events() {
    let api = RuntimeApi::start().await.unwrap();
    let mut function = spawn_function("echo", &api);
    response(api.invoke(json!({}), GENEROUS).await);
    assert_eq!(function.try_exited(), None);

    function.kill().await;

    let status = function.try_exited().expect("exited after kill");
    assert!(!status.success());
    assert!(matches!(
        api.invoke(json!({}), GENEROUS).await,
        Outcome::Error { .. }
    ));
    let _fresh = spawn_function("echo", &api);
    assert_eq!(
        response(api.invoke(json!({}), GENEROUS).await)["invocation"],
        1
    );
}

#[tokio::test]
async fn the_first_next_of_each_spawned_process_is_recorded_after_its_spawn() {
    let api = RuntimeApi::start().await.unwrap();
    assert_eq!(api.first_next_at(), None);
    let mut function = spawn_function("echo", &api);
    response(api.invoke(json!({}), GENEROUS).await);
    let first = api
        .first_next_at()
        .expect("the process asked for an invocation");
    assert!(first >= function.spawned_at());

    response(api.invoke(json!({}), GENEROUS).await);
    assert_eq!(
        api.first_next_at(),
        Some(first),
        "later asks do not move it"
    );

    function.kill().await;
    let fresh = spawn_function("echo", &api);
    response(api.invoke(json!({}), GENEROUS).await);
    let again = api.first_next_at().expect("the new process asked");
    assert!(again >= fresh.spawned_at() && fresh.spawned_at() > first);
}

// ---------------------------------------------------------------------------------------------
// The wire protocol, spoken by hand

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_invocation_carries_the_event_and_the_runtime_api_headers() {
    let api = std::sync::Arc::new(RuntimeApi::start().await.unwrap());
    let address = api.address();
    let invoking = {
        let api = api.clone();
        tokio::spawn(async move { api.invoke(json!({"k": 1}), Duration::from_secs(5)).await })
    };

    let before = epoch_ms();
    let (status, head, body) = tokio::task::spawn_blocking({
        let address = address.clone();
        move || {
            http(
                &address,
                "GET",
                "/2018-06-01/runtime/invocation/next",
                &[],
                "",
            )
        }
    })
    .await
    .unwrap();
    let after = epoch_ms();

    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"k": 1})
    );
    let request_id = header(&head, "lambda-runtime-aws-request-id")
        .unwrap()
        .to_owned();
    let deadline: u64 = header(&head, "lambda-runtime-deadline-ms")
        .unwrap()
        .parse()
        .unwrap();
    assert!((before + 5000..=after + 5000).contains(&deadline));
    assert!(header(&head, "lambda-runtime-invoked-function-arn")
        .unwrap()
        .starts_with("arn:aws:lambda:"));
    assert!(header(&head, "lambda-runtime-trace-id")
        .unwrap()
        .starts_with("root=1-"));

    let answer = move |id: String| {
        let address = address.clone();
        tokio::task::spawn_blocking(move || {
            let path = format!("/2018-06-01/runtime/invocation/{id}/response");
            http(
                &address,
                "POST",
                &path,
                &[("Content-Type", "application/json")],
                r#"{"ok":true}"#,
            )
            .0
        })
    };
    assert_eq!(answer("not-a-request".into()).await.unwrap(), 400);
    assert_eq!(answer(request_id.clone()).await.unwrap(), 202);
    assert_eq!(
        invoking.await.unwrap(),
        Outcome::Response(json!({"ok": true}))
    );
    assert_eq!(
        answer(request_id).await.unwrap(),
        400,
        "a second answer is refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_posted_by_hand_is_returned_with_its_type_and_message() {
    let api = std::sync::Arc::new(RuntimeApi::start().await.unwrap());
    let address = api.address();
    let invoking = {
        let api = api.clone();
        tokio::spawn(async move { api.invoke(json!({}), Duration::from_secs(5)).await })
    };

    let status = tokio::task::spawn_blocking(move || {
        let (_, head, _) = http(
            &address,
            "GET",
            "/2018-06-01/runtime/invocation/next",
            &[],
            "",
        );
        let id = header(&head, "lambda-runtime-aws-request-id")
            .unwrap()
            .to_owned();
        http(
            &address,
            "POST",
            &format!("/2018-06-01/runtime/invocation/{id}/error"),
            &[("Lambda-Runtime-Function-Error-Type", "Unhandled")],
            r#"{"errorType":"Handled.Oops","errorMessage":"oops"}"#,
        )
        .0
    })
    .await
    .unwrap();

    assert_eq!(status, 202);
    assert_eq!(
        invoking.await.unwrap(),
        Outcome::Error {
            error_type: "Handled.Oops".into(),
            error_message: "oops".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_after_the_timeout_is_refused_as_gone() {
    let api = std::sync::Arc::new(RuntimeApi::start().await.unwrap());
    let address = api.address();
    let invoking = {
        let api = api.clone();
        tokio::spawn(async move { api.invoke(json!({}), Duration::from_millis(100)).await })
    };

    let id = tokio::task::spawn_blocking({
        let address = address.clone();
        move || {
            let (_, head, _) = http(
                &address,
                "GET",
                "/2018-06-01/runtime/invocation/next",
                &[],
                "",
            );
            header(&head, "lambda-runtime-aws-request-id")
                .unwrap()
                .to_owned()
        }
    })
    .await
    .unwrap();
    assert_eq!(invoking.await.unwrap(), Outcome::TimedOut);

    let status = tokio::task::spawn_blocking(move || {
        let path = format!("/2018-06-01/runtime/invocation/{id}/response");
        http(&address, "POST", &path, &[], "{}").0
    })
    .await
    .unwrap();
    assert_eq!(status, 410);
}

#[tokio::test(start_paused = true)]
async fn an_invocation_nobody_picks_up_times_out_after_the_timeout_and_the_init_allowance() {
    let started = tokio::time::Instant::now();
    let api = RuntimeApi::start().await.unwrap();

    let outcome = api.invoke(json!({}), Duration::from_secs(1)).await;

    assert_eq!(outcome, Outcome::TimedOut);
    assert!(started.elapsed() >= Duration::from_secs(1) + lambda_driver::PICKUP_ALLOWANCE);
}

// ---------------------------------------------------------------------------------------------
// The lambda-invoke binary

fn lambda_invoke(events: &[PathBuf]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lambda-invoke"));
    command.args(["--timeout-secs", "30"]);
    for event in events {
        command.arg("--event").arg(event);
    }
    command
        .arg("--")
        .arg(this_executable())
        .args(function_args())
        .env(MODE_VAR, "echo")
        .output()
        .expect("lambda-invoke runs")
}

#[test]
fn lambda_invoke_prints_one_pretty_response_per_event_from_one_process() {
    let files = EventFiles::new("responses");
    let first = files.file("first.json", r#"{"n": 1}"#);
    let second = files.file("second.json", r#"{"n": 2}"#);

    let output = lambda_invoke(&[first, second]);

    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let documents: Vec<Value> = serde_json::Deserializer::from_str(&stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("stdout is only JSON documents ({e}): {stdout}"));
    assert_eq!(documents.len(), 2, "{stdout}");
    assert_eq!(documents[0]["echo"], json!({"n": 1}));
    assert_eq!(documents[1]["echo"], json!({"n": 2}));
    assert_eq!(documents[0]["pid"], documents[1]["pid"]);
    assert!(stdout.contains("\n  \"echo\""), "pretty printed: {stdout}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("test function: invocation 2"));
}

#[test]
fn lambda_invoke_reports_a_function_error_on_stderr_and_exits_with_failure() {
    let files = EventFiles::new("error");
    let failing = files.file(
        "failing.json",
        r#"{"fail": {"type": "DiscountSyncFailed", "message": "polar said no"}}"#,
    );
    let never = files.file("never.json", r#"{"n": 2}"#);

    let output = lambda_invoke(&[failing, never]);

    assert_eq!(output.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("DiscountSyncFailed") && stderr.contains("polar said no"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("test function: invocation 2"),
        "stops at the first failure"
    );
}

#[test]
fn lambda_invoke_rejects_a_missing_binary_with_a_usage_error() {
    let files = EventFiles::new("usage");
    let event = files.file("usage.json", "{}");

    let output = Command::new(env!("CARGO_BIN_EXE_lambda-invoke"))
        .arg("--event")
        .arg(event)
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("usage:"));
}
