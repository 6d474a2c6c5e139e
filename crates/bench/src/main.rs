//! `make bench`: drives the function binary through the Lambda Runtime API against moto
//! (DynamoDB, SQS) and the Polar double with injected latency, with the tests' SQS event source
//! emulator (`test_kit`) pulling batches from a real moto queue. The original TypeScript algorithm,
//! ported, runs in the same run as the baseline. Prints a Markdown report and writes it to
//! a file. Timings are reported, never asserted.
//!
//! Usage: `polar-sync-bench [--size full|tiny] [--polar-latency-ms 50]
//! [--binary target/release/polar-discount-sync] [--out bench-results/latest.md]
//! [--workloads 1,2,3,4,4b,5] [--no-original] [--command "make bench"]`
//! with `AWS_ENDPOINT_URL` pointing at moto (`scripts/with-moto.sh` sets it).

mod container;
mod cost;
mod counting_proxy;
mod machine;
mod original;
mod pollers;
mod report;
mod request_reasons;
mod time_split;
mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use workloads::{Algorithm, Bench, Size};

/// Every workload, in the order they run: 4b is 4's flash sale in batches of 10; 4s and 4bs
/// are both with DynamoDB answering slowly.
const WORKLOADS: [&str; 8] = ["1", "2", "3", "4", "4b", "4s", "4bs", "5"];

#[derive(Debug)]
struct Args {
    size: Size,
    polar_latency: Duration,
    binary: PathBuf,
    out: PathBuf,
    workloads: Vec<String>,
    original: bool,
    command: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        size: Size::Full,
        polar_latency: Duration::from_millis(50),
        binary: PathBuf::from("target/release/polar-discount-sync"),
        out: PathBuf::from("bench-results/latest.md"),
        workloads: WORKLOADS.iter().map(|id| id.to_string()).collect(),
        original: true,
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let mut value = || given.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--size" => {
                args.size = match value()?.as_str() {
                    "full" => Size::Full,
                    "tiny" => Size::Tiny,
                    other => return Err(format!("--size is full or tiny, not {other}")),
                }
            }
            "--polar-latency-ms" => {
                let millis = value()?;
                let millis = millis
                    .parse()
                    .map_err(|_| format!("--polar-latency-ms {millis}: not a number"))?;
                args.polar_latency = Duration::from_millis(millis);
            }
            "--binary" => args.binary = PathBuf::from(value()?),
            "--out" => args.out = PathBuf::from(value()?),
            "--workloads" => {
                args.workloads = value()?
                    .split(',')
                    .map(|id| match id.trim() {
                        id if WORKLOADS.contains(&id) => Ok(id.to_owned()),
                        _ => Err(format!(
                            "--workloads takes {}, not {id}",
                            WORKLOADS.join(",")
                        )),
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--no-original" => args.original = false,
            "--command" => args.command = value()?,
            "--help" | "-h" => {
                return Err(
                    "usage: polar-sync-bench [--size full|tiny] [--polar-latency-ms N] \
                     [--binary PATH] [--out PATH] [--workloads 1,2,3,4,4b,5] [--no-original] \
                     [--command LABEL]"
                        .into(),
                )
            }
            other => return Err(format!("unknown argument {other}; see --help")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let Ok(moto) = std::env::var("AWS_ENDPOINT_URL") else {
        eprintln!("AWS_ENDPOINT_URL is not set: run through scripts/with-moto.sh (make bench)");
        return ExitCode::from(2);
    };
    if !args.binary.is_file() {
        eprintln!(
            "{} does not exist: build it first (cargo build --release --bin polar-discount-sync)",
            args.binary.display()
        );
        return ExitCode::from(2);
    }
    // Returning drops every container, which kills its function process.
    tokio::select! {
        code = run(args, &moto) => code,
        _ = interrupted() => {
            eprintln!("bench: interrupted; stopping the function processes");
            ExitCode::from(130)
        }
    }
}

async fn run(args: Args, moto: &str) -> ExitCode {
    let started = Instant::now();
    let bench = Bench::new(moto, &args.binary, args.polar_latency, args.size).await;
    let mut results = report::Results::new(args.command.clone(), &bench);

    println!("==> process start time");
    results.start_times = bench.start_times().await;
    println!("==> critical path: one lone message for one discount");
    results.critical_path = bench.critical_path().await;
    for id in &args.workloads {
        let spec = bench
            .workload(id)
            .expect("the arguments name only known workloads");
        println!("==> workload {id}: {}", spec.title);
        let function = bench.run(&spec, Algorithm::Function).await;
        println!("    function: {}", function.one_line());
        let same_original_run = results
            .workloads
            .iter()
            .find(|earlier| earlier.original.is_some() && spec.same_original_run_as(&earlier.spec));
        let (original, original_of) = match same_original_run {
            Some(earlier) if spec.with_original => {
                println!("    original: workload {}'s run, the same", earlier.spec.id);
                (earlier.original.clone(), Some(earlier.spec.id))
            }
            _ if args.original && spec.with_original => {
                let original = bench.run(&spec, Algorithm::Original).await;
                println!("    original: {}", original.one_line());
                (Some(original), None)
            }
            _ => (None, None),
        };
        results.workloads.push(report::WorkloadResult {
            spec,
            function,
            original,
            original_of,
        });
    }
    results.bench_duration = started.elapsed();
    results.load_after = machine::load_average();

    let markdown = report::render(&results);
    println!("\n{markdown}");
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Err(error) = std::fs::create_dir_all(dir) {
            eprintln!("cannot create {}: {error}", dir.display());
            return ExitCode::FAILURE;
        }
    }
    if let Err(error) = std::fs::write(&args.out, &markdown) {
        eprintln!("cannot write {}: {error}", args.out.display());
        return ExitCode::FAILURE;
    }
    println!("report written to {}", args.out.display());
    ExitCode::SUCCESS
}

async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
}
