//! The token never leaks and is re-read when rotated; crafted input never reaches Polar.

mod support;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lambda_driver::RuntimeApi;
use lambda_runtime::tracing::subscriber;
use polar_discount_sync::adapters::polar::{HttpTimeouts, PolarClient};
use polar_discount_sync::config::AccessToken;
use polar_discount_sync::deadline::Deadline;
use polar_discount_sync::domain::DiscountId;
use polar_discount_sync::lambda::handler_from_config;
use polar_discount_sync::ports::{DiscountLookup, Lookup, PolarFailureKind};
use polar_double::{DoubleConfig, Fault, FaultAction};
use support::{as_refs, body, Record, World, TOKEN};

const BINARY: &str = env!("CARGO_BIN_EXE_polar-discount-sync");

async fn put_token(world: &World, name: &str, value: &str) {
    aws_sdk_ssm::Client::new(&world.aws)
        .put_parameter()
        .name(name)
        .value(value)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .overwrite(true)
        .send()
        .await
        .expect("parameter stored in moto");
}

#[tokio::test]
async fn a_token_rotated_in_ssm_is_read_again_after_a_401() {
    let world = World::start_with_polar(DoubleConfig {
        token: Some("polar_oat_rotated".into()),
        ..DoubleConfig::default()
    })
    .await;
    let parameter = format!("/polar-discount-sync/{}", uuid::Uuid::new_v4().simple());
    put_token(&world, &parameter, "polar_oat_old").await;
    let mut env: Vec<(String, String)> = world
        .env()
        .into_iter()
        .filter(|(name, _)| name != "POLAR_ACCESS_TOKEN")
        .collect();
    env.push(("POLAR_ACCESS_TOKEN_PARAMETER".into(), parameter.clone()));
    let config = support::world::config_from(&env);
    let handler = handler_from_config(&config, &world.aws).await.unwrap();
    let discount = world.discount("ROT", Some(5));
    world.put_order("o1", discount, "ROT").await;

    put_token(&world, &parameter, "polar_oat_rotated").await;
    let failed = world
        .deliver(&handler, &[("m1", body("o1", discount, "ROT"))])
        .await;

    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(world.max_redemptions(discount), Some(Some(4)));
    let auth: Vec<_> = world
        .polar
        .requests()
        .iter()
        .map(|r| (r.authorization.clone().unwrap_or_default(), r.status))
        .collect();
    assert_eq!(auth[0], ("Bearer polar_oat_old".to_owned(), Some(401)));
    assert!(
        auth[1..]
            .iter()
            .all(|(a, s)| a == "Bearer polar_oat_rotated" && s.is_some_and(|s| s < 300)),
        "{auth:?}"
    );
}

#[tokio::test]
async fn a_401_whose_token_was_rotated_is_not_sent_again_past_the_rate_budget_and_the_deadline() {
    let world = World::start_with_polar(DoubleConfig {
        token: Some("polar_oat_rotated".into()),
        ..DoubleConfig::default()
    })
    .await;
    let parameter = format!("/polar-discount-sync/{}", uuid::Uuid::new_v4().simple());
    put_token(&world, &parameter, "polar_oat_rotated").await;
    let config = world.config();
    let client = PolarClient::new(
        &config.polar_api_url,
        AccessToken::new("polar_oat_old".into()),
        HttpTimeouts {
            connect: Duration::from_secs(1),
            request: Duration::from_secs(5),
        },
    )
    .unwrap()
    .with_token_rotation(aws_sdk_ssm::Client::new(&world.aws), parameter);
    let discount = world.discount("ROT", Some(5));
    let id = DiscountId::parse(&discount.to_string()).unwrap();
    let deadline = Deadline::after(Duration::from_secs(30));

    let refused = client.get(id, deadline).await.unwrap_err();

    assert_eq!(refused.kind, PolarFailureKind::TokenReplaced);
    assert!(refused.retry_hint().is_some(), "worth another attempt");
    assert_eq!(
        world.polar.requests().len(),
        1,
        "the client sends nothing the rate budget did not admit"
    );
    assert!(matches!(
        client.get(id, deadline).await,
        Ok(Lookup::Found(_))
    ));
    assert_eq!(
        world.polar.requests()[1].authorization.as_deref(),
        Some("Bearer polar_oat_rotated")
    );
}

/// Log lines written during the test, at every level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Failures of every kind the Polar side can produce, one discount each.
async fn failing_world() -> (World, Vec<(String, String)>) {
    let world = World::start().await;
    let mut messages = Vec::new();
    let faults = [
        FaultAction::status(
            401,
            r#"{"error":"invalid_token","error_description":"The access token is invalid"}"#,
        ),
        FaultAction::status(403, r#"{"error":"insufficient_scope"}"#),
        FaultAction::status(404, r#"{"detail":"Not Found"}"#),
        FaultAction::status(422, r#"{"error":"RequestValidationError","detail":[]}"#),
        FaultAction::status(503, "upstream unavailable"),
        FaultAction::DropConnection,
    ];
    for (i, action) in faults.into_iter().enumerate() {
        let code = format!("LEAK{i}");
        let discount = world.discount(&code, Some(5));
        world.put_order(&format!("o{i}"), discount, &code).await;
        world.polar.inject(
            Fault::new(action)
                .method("GET")
                .discount(discount)
                .times(20),
        );
        messages.push((format!("m{i}"), body(&format!("o{i}"), discount, &code)));
    }
    messages.push(("bad".into(), "{\"orderId\": 1}".into()));
    (world, messages)
}

#[tokio::test]
async fn the_token_appears_in_no_log_line_and_no_error_of_a_failing_run() {
    let (world, messages) = failing_world().await;
    let captured = Captured::default();
    let writer = captured.clone();
    let collector = subscriber::fmt()
        .with_max_level(lambda_runtime::tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard =
        lambda_runtime::tracing::subscriber::util::SubscriberInitExt::set_default(collector);

    let handler = world.handler().await;
    let failed = world.deliver(&handler, &as_refs(&messages)).await;

    assert_eq!(
        failed.len(),
        messages.len(),
        "every message failed: {failed:?}"
    );
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("CONFIGURATION ERROR"),
        "the run was logged:\n{logs}"
    );
    assert!(
        !logs.contains(TOKEN),
        "the token leaked into the logs:\n{logs}"
    );
    assert!(!format!("{:?}", world.config()).contains(TOKEN));
}

#[tokio::test]
async fn the_binary_logs_no_token_even_at_trace_level() {
    let (world, messages) = failing_world().await;
    let api = RuntimeApi::start().await.unwrap();
    let mut function = Command::new(Path::new(BINARY))
        .envs(world.env())
        .env("AWS_LAMBDA_RUNTIME_API", api.address())
        .env("AWS_LAMBDA_FUNCTION_NAME", "polar-discount-sync")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drained while the function runs, or a full pipe would block its logging.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            pipe.read_to_string(&mut text).unwrap();
            text
        })
    };
    let stdout = drain(Box::new(function.stdout.take().unwrap()));
    let stderr = drain(Box::new(function.stderr.take().unwrap()));
    let records: Vec<Record> = messages.iter().map(|(id, b)| Record::new(id, b)).collect();

    let outcome = api
        .invoke(support::sqs::event_json(&records), Duration::from_secs(30))
        .await;
    function.kill().unwrap();
    function.wait().unwrap();
    let output = stdout.join().unwrap() + &stderr.join().unwrap();

    assert!(
        matches!(outcome, lambda_driver::Outcome::Response(_)),
        "{outcome:?}"
    );
    assert!(
        output.contains("CONFIGURATION ERROR"),
        "the run was logged:\n{output}"
    );
    assert!(!output.contains(TOKEN), "the token leaked into the output");
}

#[tokio::test]
async fn crafted_ids_and_bodies_get_a_permanent_error_and_send_nothing_to_polar() {
    let world = World::start().await;
    let handler = world.handler().await;
    let uuid_like = |id: &str| {
        serde_json::json!({"orderId": "o1", "discountId": id, "discountCode": "X"}).to_string()
    };
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let huge = format!(
        r#"{{"orderId":"{}","discountId":"9b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a10","discountCode":"X"}}"#,
        "a".repeat(10 * 1024 * 1024)
    );
    let messages = [
        ("dotdot", uuid_like("../organizations")),
        ("encoded", uuid_like("%2e%2e/x")),
        ("query", uuid_like("a?b=c")),
        ("fragment", uuid_like("a#b")),
        ("lookalike", uuid_like("9b1c1f3e-3c1а-4a57-9a43-6f0f3f1d2a10")),
        ("fullwidth", uuid_like("９b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a10")),
        ("suffix", uuid_like("9b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a10/../../x")),
        ("nested", nested),
        ("huge", huge),
        ("types", r#"{"orderId":["o1"],"discountId":{"id":1},"discountCode":true}"#.to_owned()),
        ("control", r#"{"orderId":"o\u0000","discountId":"9b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a10","discountCode":"X"}"#.to_owned()),
    ];

    let failed = world.deliver(&handler, &messages).await;

    assert_eq!(
        failed.len(),
        messages.len(),
        "all refused (no DLQ here, so all listed)"
    );
    assert!(
        world.polar.requests().is_empty(),
        "{:?}",
        world.polar_requests()
    );
}
