//! Use-case tests on the in-memory ports: fast, no network.

use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use reqwest::StatusCode;

use super::*;
use crate::adapters::in_memory::{Call, InMemoryDiscounts, InMemoryLedger};
use crate::adapters::polar::Operation;
use crate::failure::FailureClass;

const DISCOUNT: &str = "9b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a10";
const OTHER_DISCOUNT: &str = "0e6d1b9c-1f5c-4a59-9c43-2e8f0b3a7d21";

fn id(raw: &str) -> DiscountId {
    DiscountId::parse(raw).unwrap()
}

fn request(order: &str, discount: &str, code: &str) -> SyncRequest {
    SyncRequest::parse(
        &serde_json::json!({"orderId": order, "discountId": discount, "discountCode": code})
            .to_string(),
    )
    .unwrap()
}

fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
        reserve: Duration::from_millis(10),
    }
}

fn syncer(
    ledger: InMemoryLedger,
    discounts: InMemoryDiscounts,
) -> Syncer<InMemoryLedger, InMemoryDiscounts> {
    Syncer::new(ledger, discounts, quick_retries())
}

fn deadline() -> Deadline {
    Deadline::after(Duration::from_secs(60))
}

fn server_error(operation: Operation) -> PolarError {
    PolarError::Server {
        operation,
        discount: id(DISCOUNT),
        status: StatusCode::BAD_GATEWAY,
        body: String::new(),
    }
}

#[tokio::test]
async fn a_limited_discount_is_decremented_and_the_order_marked() {
    let s = syncer(
        InMemoryLedger::default().with_order("o1", DISCOUNT, "SUMMER25"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "SUMMER25", Some(3)),
    );
    let synced = s
        .sync(&request("o1", DISCOUNT, "summer25"), deadline())
        .await
        .unwrap();
    assert_eq!(synced, Synced::Applied(SyncAction::Decremented));
    assert_eq!(s.discounts.max_redemptions(id(DISCOUNT)), Some(Some(2)));
    assert_eq!(s.ledger.action("o1"), Some(SyncAction::Decremented));
    assert_eq!(s.discounts.calls(), [Call::Get, Call::Update(2)]);
}

#[tokio::test]
async fn a_second_delivery_of_a_synced_order_makes_no_polar_call() {
    let s = syncer(
        InMemoryLedger::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    );
    s.sync(&request("o1", DISCOUNT, "X"), deadline())
        .await
        .unwrap();
    let again = s
        .sync(&request("o1", DISCOUNT, "X"), deadline())
        .await
        .unwrap();
    assert_eq!(again, Synced::AlreadySynced);
    assert_eq!(s.discounts.max_redemptions(id(DISCOUNT)), Some(Some(2)));
    assert_eq!(s.discounts.calls().len(), 2);
}

#[tokio::test]
async fn the_last_use_deletes_the_discount() {
    let s = syncer(
        InMemoryLedger::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(1)),
    );
    let synced = s
        .sync(&request("o1", DISCOUNT, "X"), deadline())
        .await
        .unwrap();
    assert_eq!(synced, Synced::Applied(SyncAction::Deleted));
    assert_eq!(s.discounts.max_redemptions(id(DISCOUNT)), None);
}

#[tokio::test]
async fn an_unlimited_discount_is_only_read() {
    let s = syncer(
        InMemoryLedger::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", None),
    );
    let synced = s
        .sync(&request("o1", DISCOUNT, "X"), deadline())
        .await
        .unwrap();
    assert_eq!(synced, Synced::Applied(SyncAction::SkippedUnlimited));
    assert_eq!(s.discounts.calls(), [Call::Get]);
}

#[tokio::test]
async fn a_discount_missing_on_polar_is_recorded_as_already_deleted() {
    let s = syncer(
        InMemoryLedger::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default(),
    );
    let synced = s
        .sync(&request("o1", DISCOUNT, "X"), deadline())
        .await
        .unwrap();
    assert_eq!(synced, Synced::Applied(SyncAction::AlreadyDeleted));
    assert_eq!(s.ledger.action("o1"), Some(SyncAction::AlreadyDeleted));
}

#[tokio::test]
async fn an_unknown_order_fails_without_touching_polar() {
    let s = syncer(InMemoryLedger::default(), InMemoryDiscounts::default());
    let err = s
        .sync(&request("nope", DISCOUNT, "X"), deadline())
        .await
        .unwrap_err();
    assert!(matches!(err, SyncError::OrderNotFound(_)), "{err}");
    assert!(s.discounts.calls().is_empty());
}

#[tokio::test]
async fn a_message_naming_another_discount_than_its_order_changes_nothing() {
    let s = syncer(
        InMemoryLedger::default().with_order("o1", OTHER_DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    );
    let err = s
        .sync(&request("o1", DISCOUNT, "X"), deadline())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SyncError::OrderMismatch {
                field: "discountId",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.class(), FailureClass::Permanent);
    assert!(s.discounts.calls().is_empty());
    let orders = s.ledger.orders.lock().unwrap();
    assert!(orders["o1"].claim.is_none(), "the claim is released");
    assert!(orders["o1"].synced.is_none());
}

#[tokio::test]
async fn a_message_with_another_code_than_its_order_changes_nothing() {
    let s = syncer(
        InMemoryLedger::default().with_order("o1", DISCOUNT, "SUMMER25"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "SUMMER25", Some(3)),
    );
    let err = s
        .sync(&request("o1", DISCOUNT, "WINTER"), deadline())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SyncError::OrderMismatch {
                field: "discountCode",
                ..
            }
        ),
        "{err}"
    );
    assert!(s.discounts.calls().is_empty());
}

#[tokio::test]
async fn a_polar_discount_with_another_code_is_not_written() {
    let s = syncer(
        InMemoryLedger::default().with_order("o1", DISCOUNT, "SUMMER25"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "OTHER", Some(3)),
    );
    let err = s
        .sync(&request("o1", DISCOUNT, "SUMMER25"), deadline())
        .await
        .unwrap_err();
    assert!(
        matches!(err, SyncError::DiscountCodeMismatch { .. }),
        "{err}"
    );
    assert_eq!(s.discounts.calls(), [Call::Get]);
    assert_eq!(s.discounts.max_redemptions(id(DISCOUNT)), Some(Some(3)));
}

#[tokio::test]
async fn a_claim_held_by_a_live_invocation_is_retried_later() {
    let s = syncer(
        InMemoryLedger::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    );
    s.ledger.orders.lock().unwrap().get_mut("o1").unwrap().claim = Some(Claim {
        token: Uuid::new_v4(),
        expires_at_ms: epoch_ms(SystemTime::now()) + 60_000,
    });
    let err = s
        .sync(&request("o1", DISCOUNT, "X"), deadline())
        .await
        .unwrap_err();
    assert!(matches!(err, SyncError::ClaimHeld { .. }), "{err}");
    assert_eq!(err.class(), FailureClass::Transient);
    assert!(s.discounts.calls().is_empty());
}

#[tokio::test]
async fn an_expired_claim_is_taken_over() {
    let s = syncer(
        InMemoryLedger::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    );
    s.ledger.orders.lock().unwrap().get_mut("o1").unwrap().claim = Some(Claim {
        token: Uuid::new_v4(),
        expires_at_ms: epoch_ms(SystemTime::now()) - 1,
    });
    let synced = s
        .sync(&request("o1", DISCOUNT, "X"), deadline())
        .await
        .unwrap();
    assert_eq!(synced, Synced::Applied(SyncAction::Decremented));
}

#[tokio::test]
async fn a_polar_server_error_is_retried_in_process_and_counted_once() {
    let s = syncer(
        InMemoryLedger::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    );
    s.discounts.fail_next(server_error(Operation::Get));
    s.discounts.fail_next(server_error(Operation::Get));
    let synced = s
        .sync(&request("o1", DISCOUNT, "X"), deadline())
        .await
        .unwrap();
    assert_eq!(synced, Synced::Applied(SyncAction::Decremented));
    assert_eq!(s.discounts.max_redemptions(id(DISCOUNT)), Some(Some(2)));
}

#[tokio::test]
async fn a_configuration_error_is_not_retried_in_process_and_releases_the_claim() {
    let s = syncer(
        InMemoryLedger::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    );
    s.discounts.fail_next(PolarError::UnknownRoute {
        operation: Operation::Get,
        discount: id(DISCOUNT),
        body: r#"{"detail":"Not Found"}"#.into(),
    });
    let err = s
        .sync(&request("o1", DISCOUNT, "X"), deadline())
        .await
        .unwrap_err();
    assert_eq!(err.class(), FailureClass::Configuration);
    assert_eq!(s.discounts.calls(), [Call::Get]);
    let orders = s.ledger.orders.lock().unwrap();
    assert!(orders["o1"].synced.is_none() && orders["o1"].claim.is_none());
}

fn sqs_event(bodies: &[(&str, &str)]) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = bodies
        .iter()
        .map(|(id, body)| {
            let mut message = SqsMessage::default();
            message.message_id = Some(id.to_string());
            message.body = Some(body.to_string());
            message
        })
        .collect();
    event
}

fn body(order: &str, discount: &str, code: &str) -> String {
    serde_json::json!({"orderId": order, "discountId": discount, "discountCode": code}).to_string()
}

fn failures(response: &aws_lambda_events::event::sqs::SqsBatchResponse) -> Vec<String> {
    let mut ids: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn a_batch_reports_exactly_the_messages_that_failed() {
    let s = syncer(
        InMemoryLedger::default()
            .with_order("o1", DISCOUNT, "X")
            .with_order("o2", DISCOUNT, "X")
            .with_order("o3", OTHER_DISCOUNT, "Y"),
        InMemoryDiscounts::default()
            .with(id(DISCOUNT), "X", Some(10))
            .with(id(OTHER_DISCOUNT), "Y", Some(10)),
    );
    let b1 = body("o1", DISCOUNT, "X");
    let b2 = body("o2", DISCOUNT, "X");
    let b3 = body("o3", OTHER_DISCOUNT, "Y");
    let missing = body("ghost", DISCOUNT, "X");
    let event = sqs_event(&[
        ("m1", &b1),
        ("bad", "{not json"),
        ("m2", &b2),
        ("m1-dup", &b1),
        ("m3", &b3),
        ("m4", &missing),
    ]);
    let response = process_batch(&s, event, deadline(), 4).await.unwrap();
    assert_eq!(failures(&response), ["bad", "m4"]);
    assert_eq!(s.discounts.max_redemptions(id(DISCOUNT)), Some(Some(8)));
    assert_eq!(
        s.discounts.max_redemptions(id(OTHER_DISCOUNT)),
        Some(Some(9))
    );
}

#[tokio::test]
async fn messages_are_not_started_when_the_deadline_is_too_close() {
    let s = syncer(
        InMemoryLedger::default().with_order("o1", DISCOUNT, "X"),
        InMemoryDiscounts::default().with(id(DISCOUNT), "X", Some(3)),
    );
    let b1 = body("o1", DISCOUNT, "X");
    let response = process_batch(
        &s,
        sqs_event(&[("m1", &b1)]),
        Deadline::after(Duration::from_secs(1)),
        4,
    )
    .await
    .unwrap();
    assert_eq!(failures(&response), ["m1"]);
    assert!(s.discounts.calls().is_empty());
}

#[tokio::test]
async fn a_record_without_a_message_id_fails_the_whole_batch() {
    let s = syncer(InMemoryLedger::default(), InMemoryDiscounts::default());
    let mut event = sqs_event(&[("m1", "{}")]);
    event.records[0].message_id = None;
    assert!(process_batch(&s, event, deadline(), 4).await.is_err());
}
