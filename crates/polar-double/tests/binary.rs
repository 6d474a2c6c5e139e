use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[tokio::test]
async fn the_binary_announces_its_url_serves_the_api_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_polar-double"))
        .args(["--token", "bin-token", "--rate-limit-per-minute", "100"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();
    assert!(
        base.starts_with("http://127.0.0.1:") && base.ends_with("/v1"),
        "{base}"
    );
    let admin = base.replace("/v1", "/__double");
    let id = uuid::Uuid::new_v4();
    let client = reqwest::Client::new();

    let seeded = client
        .put(format!("{admin}/discounts/{id}"))
        .json(&json!({ "name": "From another process", "max_redemptions": 2 }))
        .send()
        .await
        .unwrap();
    let wrong_token = client
        .get(format!("{base}/discounts/{id}"))
        .bearer_auth("other")
        .send()
        .await
        .unwrap();
    let patched: Value = client
        .patch(format!("{base}/discounts/{id}"))
        .bearer_auth("bin-token")
        .json(&json!({ "max_redemptions": 1 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    assert_eq!(seeded.status(), 201);
    assert_eq!(wrong_token.status(), 401);
    assert_eq!(patched["max_redemptions"], 1);

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "still running after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn the_binary_rejects_unknown_arguments() {
    let output = Command::new(env!("CARGO_BIN_EXE_polar-double"))
        .arg("--bogus")
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("usage: polar-double"));
}
