//! CI runs the tiny bench, so that `make bench` keeps working: every workload, both
//! algorithms, the report and its columns. Against the debug function binary that `cargo test --workspace`
//! builds (a release build would add minutes to CI). Timings are printed, never asserted.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_tiny_bench_runs_every_workload_and_writes_its_report() {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run the tests with `make test` (it starts moto), \
         or `scripts/with-moto.sh cargo test`"
    );
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_polar-sync-bench"));
    let function = bench.with_file_name("polar-discount-sync");
    assert!(
        function.is_file(),
        "{} is missing: `cargo test --workspace` builds it, or `cargo build --bin \
         polar-discount-sync`",
        function.display()
    );
    let report = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tiny-bench.md");

    let output = Command::new(&bench)
        .args(["--size", "tiny", "--command", "cargo test (tiny bench)"])
        .arg("--binary")
        .arg(&function)
        .arg("--out")
        .arg(&report)
        // The function's per-message logs would drown the test output.
        .env("RUST_LOG", "warn")
        .output()
        .expect("the bench runs");

    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the bench failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let written = std::fs::read_to_string(&report).expect("the report is written");
    for section in [
        "## Critical path",
        "## 1. ",
        "## 2. ",
        "## 3. ",
        "## 4. ",
        "## 4b. ",
        "## 4s. ",
        "## 4bs. ",
        "## 5. ",
        "## Cost per million redemptions",
        "## Start time and footprint",
        "## Targets (issues 10 and 23)",
    ] {
        assert!(written.contains(section), "no {section:?} in:\n{written}");
    }
    for column in [
        "| lease-wait req/message |",
        "| of which lease-wait requests (per message) |",
        "| other DynamoDB requests per message |",
        "| DynamoDB requests (per message, per redemption) |",
        "Its requests in the order they arrived, and why each is needed",
        "1. DynamoDB TransactWriteItems [takes the lease, claims an order]: ",
        "| wall time waiting on Polar, on moto alone, on neither | ",
        "Its wall time waited on Polar, on moto alone, on neither: ",
        "| 10-discount batch, the bound that holds: ",
        " longer than for the lone message, against the ",
    ] {
        assert!(written.contains(column), "no {column:?} in:\n{written}");
    }
    assert!(
        !written.contains("(no reason on file)"),
        "the lone message made a request nobody explained:\n{written}"
    );
    assert!(
        !written.contains("not run because"),
        "a workload could not run:\n{written}"
    );
}
