//! `lambda-invoke`: run a Lambda function binary locally against an in-process Runtime API and
//! feed it event files, one after another, on the same (warm) process.
//!
//! Each response is printed to stdout as pretty JSON (one document per event). The function's
//! own output (its logs) goes to stderr. A function error, init error, timeout or crash is
//! printed to stderr and ends the run with exit status 1; usage errors exit with 2.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use lambda_driver::{FunctionProcess, Outcome, RuntimeApi};

const USAGE: &str = "\
usage: lambda-invoke [--timeout-secs N] --event FILE [--event FILE ...] -- BINARY [ARGS...]

Starts a local Lambda Runtime API, spawns BINARY against it (inheriting the environment, plus
AWS_LAMBDA_RUNTIME_API and the AWS_LAMBDA_FUNCTION_* variables), and delivers each event file
in order to the same process. Responses go to stdout as pretty JSON, one per event; the
function's logs go to stderr. An --event of '-' reads the event from stdin.

options:
  --timeout-secs N   function timeout per invocation, in seconds (default 30)
  --event FILE       a JSON event file; repeat for several invocations
  -h, --help         show this help";

const DEFAULT_TIMEOUT_SECS: u64 = 30;

#[derive(Debug)]
struct Args {
    timeout: Duration,
    events: Vec<PathBuf>,
    binary: PathBuf,
    binary_args: Vec<OsString>,
}

enum Parsed {
    Run(Args),
    Help,
}

fn parse_args(mut args: impl Iterator<Item = OsString>) -> Result<Parsed, String> {
    let mut timeout = Duration::from_secs(DEFAULT_TIMEOUT_SECS);
    let mut events = Vec::new();
    let mut command = None;
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--") => {
                command = Some(args.by_ref().collect::<Vec<_>>());
                break;
            }
            Some("-h" | "--help") => return Ok(Parsed::Help),
            Some("--timeout-secs") => {
                let value = args.next().ok_or("--timeout-secs needs a value")?;
                let secs = value
                    .to_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .filter(|secs| secs.is_finite() && *secs > 0.0)
                    .ok_or_else(|| {
                        format!(
                            "--timeout-secs: not a positive number: {}",
                            value.to_string_lossy()
                        )
                    })?;
                timeout = Duration::from_secs_f64(secs);
            }
            Some("--event") => {
                events.push(PathBuf::from(
                    args.next().ok_or("--event needs a file name")?,
                ));
            }
            _ => return Err(format!("unexpected argument: {}", arg.to_string_lossy())),
        }
    }
    let mut command = command.ok_or("missing '-- BINARY'")?.into_iter();
    let binary = PathBuf::from(command.next().ok_or("missing BINARY after '--'")?);
    if events.is_empty() {
        return Err("at least one --event FILE is required".to_owned());
    }
    Ok(Parsed::Run(Args {
        timeout,
        events,
        binary,
        binary_args: command.collect(),
    }))
}

fn read_event(path: &PathBuf) -> Result<serde_json::Value, String> {
    let text = if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("reading the event from stdin: {e}"))?;
        text
    } else {
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?
    };
    serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args_os().skip(1)) {
        Ok(Parsed::Run(args)) => args,
        Ok(Parsed::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("lambda-invoke: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // Read every event up front so a bad file fails before the function starts.
    let mut events = Vec::with_capacity(args.events.len());
    for path in &args.events {
        match read_event(path) {
            Ok(event) => events.push(event),
            Err(message) => {
                eprintln!("lambda-invoke: {message}");
                return ExitCode::from(2);
            }
        }
    }

    let api = match RuntimeApi::start().await {
        Ok(api) => api,
        Err(error) => {
            eprintln!("lambda-invoke: cannot start the runtime API: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut function =
        match FunctionProcess::spawn_with_args(&args.binary, &args.binary_args, &[], &api) {
            Ok(function) => function,
            Err(error) => {
                eprintln!(
                    "lambda-invoke: cannot start {}: {error}",
                    args.binary.display()
                );
                return ExitCode::FAILURE;
            }
        };

    let mut code = ExitCode::SUCCESS;
    for (event, path) in events.into_iter().zip(&args.events) {
        let failure = match api.invoke(event, args.timeout).await {
            Outcome::Response(body) => {
                let text = serde_json::to_string_pretty(&body).expect("a JSON value serialises");
                let mut stdout = std::io::stdout().lock();
                if writeln!(stdout, "{text}")
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    code = ExitCode::FAILURE;
                    break;
                }
                continue;
            }
            Outcome::Error {
                error_type,
                error_message,
            } => serde_json::json!({"errorType": error_type, "errorMessage": error_message}),
            Outcome::InitError(body) => serde_json::json!({"initError": body}),
            Outcome::TimedOut => serde_json::json!({
                "errorType": "Sandbox.Timedout",
                "errorMessage": format!("Task timed out after {:.2} seconds", args.timeout.as_secs_f64()),
            }),
        };
        eprintln!(
            "lambda-invoke: event {} failed:\n{}",
            path.display(),
            serde_json::to_string_pretty(&failure).expect("a JSON value serialises")
        );
        code = ExitCode::FAILURE;
        break;
    }
    function.kill().await;
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Parsed, String> {
        parse_args(args.iter().map(OsString::from))
    }

    #[test]
    fn events_timeout_binary_and_its_arguments_are_parsed() {
        let Ok(Parsed::Run(args)) = parse(&[
            "--timeout-secs",
            "5",
            "--event",
            "a.json",
            "--event",
            "b.json",
            "--",
            "./fn",
            "--flag",
            "--event",
        ]) else {
            panic!("expected a run");
        };
        assert_eq!(args.timeout, Duration::from_secs(5));
        assert_eq!(
            args.events,
            [PathBuf::from("a.json"), PathBuf::from("b.json")]
        );
        assert_eq!(args.binary, PathBuf::from("./fn"));
        assert_eq!(
            args.binary_args,
            [OsString::from("--flag"), OsString::from("--event")]
        );
    }

    #[test]
    fn a_missing_event_binary_or_value_is_a_usage_error() {
        assert!(parse(&["--", "./fn"]).is_err());
        assert!(parse(&["--event", "a.json"]).is_err());
        assert!(parse(&["--event", "a.json", "--"]).is_err());
        assert!(parse(&["--event"]).is_err());
        assert!(parse(&["--timeout-secs", "zero", "--event", "a", "--", "f"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
    }
}
