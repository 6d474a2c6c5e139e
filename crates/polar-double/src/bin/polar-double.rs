//! `polar-double [--port N] [--token T] [--rate-limit-per-minute N]`
//!
//! Serves the Polar discount API test double on 127.0.0.1 until SIGTERM or SIGINT.
//! Prints `listening on http://127.0.0.1:PORT/v1` once bound.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use polar_double::{DoubleConfig, PolarDouble};

const USAGE: &str = "usage: polar-double [--port N] [--token T] [--rate-limit-per-minute N]";

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<DoubleConfig, String> {
    let mut config = DoubleConfig::default();
    let mut port = 0u16;
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--port" => {
                let v = value()?;
                port = v.parse().map_err(|_| format!("--port: not a port: {v}"))?;
            }
            "--token" => config.token = Some(value()?),
            "--rate-limit-per-minute" => {
                let v = value()?;
                let limit = v
                    .parse()
                    .map_err(|_| format!("--rate-limit-per-minute: not a count: {v}"))?;
                config.rate_limit_per_minute = Some(limit);
            }
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    config.addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    Ok(config)
}

async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut sigterm) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = sigterm.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let config = match parse_args(args.into_iter()) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("polar-double: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let double = match PolarDouble::start_with(config).await {
        Ok(double) => double,
        Err(e) => {
            eprintln!("polar-double: cannot listen: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("listening on {}", double.base_url());
    let _ = std::io::stdout().flush();
    terminated().await;
    ExitCode::SUCCESS
}
