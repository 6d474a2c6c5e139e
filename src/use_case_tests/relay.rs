//! The stream relay on the in-memory relay port: what each kind of record becomes, the
//! answer by sequence number, the counts.

use std::future::Future;
use std::time::Duration;

use serde_json::{json, Value};

use super::DISCOUNT;
use crate::adapters::in_memory::InMemoryRelay;
use crate::deadline::Deadline;
use crate::ports::{Relay, RelayFailure, RelayedMessage, UnreadableRecord};
use crate::relay::relay_records;
use crate::telemetry::{Count, Metrics};

fn order(id: &str) -> Value {
    json!({"id": {"S": id}, "discountId": {"S": DISCOUNT}, "discountCode": {"S": "SUMMER25"}})
}

fn record(sequence: &str, event_name: &str, old: Option<Value>, new: Option<Value>) -> Value {
    let mut stream = json!({"SequenceNumber": sequence, "StreamViewType": "NEW_AND_OLD_IMAGES"});
    if let Some(old) = old {
        stream["OldImage"] = old;
    }
    if let Some(new) = new {
        stream["NewImage"] = new;
    }
    json!({
        "eventID": sequence, "eventName": event_name, "eventSource": "aws:dynamodb",
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-12-01T00:00:00.000",
        "dynamodb": stream,
    })
}

fn insert(sequence: &str, order_id: &str) -> Value {
    record(sequence, "INSERT", None, Some(order(order_id)))
}

fn message(order_id: &str) -> RelayedMessage {
    RelayedMessage {
        order_id: order_id.into(),
        discount_id: DISCOUNT.into(),
        discount_code: "SUMMER25".into(),
    }
}

fn soon() -> Deadline {
    Deadline::after(Duration::from_secs(30))
}

/// Every kind of record the contract names, in one batch.
fn every_kind() -> Vec<Value> {
    let plain = json!({"id": {"S": "ord_plain"}, "total": {"N": "10"}});
    let mut synced = order("ord_synced");
    synced["polarDiscountSynced"] = json!({"BOOL": true});
    let mut claimed = order("ord_claimed");
    claimed["polarDiscountClaim"] = json!({"S": "lease"});
    let mut marked = claimed.clone();
    marked["polarDiscountSynced"] = json!({"BOOL": true});
    let before_discount = json!({"id": {"S": "ord_added"}, "total": {"N": "10"}});
    let mut wrong_type = order("ord_bad");
    wrong_type["discountId"] = json!({"N": "12"});
    vec![
        insert("100", "ord_new"),
        record("101", "INSERT", None, Some(plain)),
        record("102", "INSERT", None, Some(synced)),
        record(
            "103",
            "MODIFY",
            Some(order("ord_claimed")),
            Some(claimed.clone()),
        ),
        record("104", "MODIFY", Some(claimed), Some(marked)),
        record(
            "105",
            "MODIFY",
            Some(before_discount),
            Some(order("ord_added")),
        ),
        record("106", "REMOVE", Some(order("ord_gone")), None),
        record("107", "MODIFY", None, Some(order("ord_new_image_only"))),
        record("108", "INSERT", None, Some(wrong_type)),
        record("109", "INSERT", None, None),
    ]
}

#[tokio::test]
async fn each_kind_of_record_is_relayed_ignored_or_dead_lettered_as_the_contract_says() {
    let relay = InMemoryRelay::with_queues();
    let metrics = Metrics::default();

    let response = relay_records(&relay, &metrics, &every_kind(), soon())
        .await
        .unwrap();

    assert_eq!(response.failed_sequence_numbers(), Vec::<&str>::new());
    assert_eq!(relay.sent(), vec![message("ord_new"), message("ord_added")]);
    assert_eq!(*relay.calls.lock().unwrap(), [2], "one send for the batch");
    let letters = relay.dead_letters();
    let named: Vec<(Option<&str>, &str)> = letters
        .iter()
        .map(|l| (l.sequence_number.as_deref(), l.kind))
        .collect();
    assert_eq!(
        named,
        [
            (Some("108"), "wrong_attribute_type"),
            (Some("109"), "unreadable_image")
        ]
    );
    assert!(letters[0].reason.contains("discountId"), "{:?}", letters[0]);
    assert!(
        letters[0].raw.contains("ord_bad"),
        "the record is kept whole"
    );
    assert!(letters[0]
        .stream_arn
        .as_deref()
        .unwrap()
        .contains("/stream/"));
    let recorded = metrics.take();
    assert_eq!(recorded.count(Count::StreamRecordsRelayed), 2);
    assert_eq!(recorded.count(Count::StreamRecordsIgnored), 6);
    assert_eq!(recorded.count(Count::StreamRecordsDeadLettered), 2);
    assert_eq!(recorded.count(Count::StreamRelayFailures), 0);
}

#[tokio::test]
async fn a_message_sqs_refused_is_listed_by_its_records_sequence_number_and_no_other() {
    let mut relay = InMemoryRelay::with_queues();
    relay.refuse.insert("ord_2".into());
    let metrics = Metrics::default();
    let records = [
        insert("200", "ord_1"),
        insert("201", "ord_2"),
        record("202", "REMOVE", Some(order("ord_3")), None),
        insert("203", "ord_4"),
    ];

    let response = relay_records(&relay, &metrics, &records, soon())
        .await
        .unwrap();

    assert_eq!(response.failed_sequence_numbers(), ["201"]);
    assert_eq!(
        serde_json::to_value(&response).unwrap(),
        json!({"batchItemFailures": [{"itemIdentifier": "201"}]})
    );
    assert_eq!(relay.sent(), vec![message("ord_1"), message("ord_4")]);
    assert_eq!(metrics.take().count(Count::StreamRelayFailures), 1);
}

#[tokio::test]
async fn without_a_redemption_queue_every_relayable_record_is_listed_and_nothing_else() {
    let relay = InMemoryRelay {
        has_dead_letter_queue: true,
        ..InMemoryRelay::default()
    };
    let metrics = Metrics::default();

    let response = relay_records(&relay, &metrics, &every_kind(), soon())
        .await
        .unwrap();

    assert_eq!(response.failed_sequence_numbers(), ["100", "105"]);
    assert_eq!(relay.dead_letters().len(), 2, "unreadable ones still go");
}

#[tokio::test]
async fn an_unreadable_record_that_cannot_be_dead_lettered_is_delivered_again() {
    let relay = InMemoryRelay {
        has_redemption_queue: true,
        ..InMemoryRelay::default()
    };
    let records = [record("300", "INSERT", None, None), insert("301", "ord_1")];

    let response = relay_records(&relay, &Metrics::default(), &records, soon())
        .await
        .unwrap();

    assert_eq!(response.failed_sequence_numbers(), ["300"]);
    assert_eq!(relay.sent(), vec![message("ord_1")]);
}

#[tokio::test]
async fn a_record_without_a_sequence_number_is_dead_lettered_or_else_fails_the_invocation() {
    let mut no_sequence = insert("400", "ord_1");
    no_sequence["dynamodb"]
        .as_object_mut()
        .unwrap()
        .remove("SequenceNumber");
    let relay = InMemoryRelay::with_queues();
    let response = relay_records(&relay, &Metrics::default(), &[no_sequence.clone()], soon())
        .await
        .unwrap();
    assert_eq!(response.failed_sequence_numbers(), Vec::<&str>::new());
    assert_eq!(relay.dead_letters()[0].kind, "malformed_record");
    assert!(
        relay.sent().is_empty(),
        "not relayed without a sequence number"
    );

    let no_queues = InMemoryRelay::default();
    assert!(
        relay_records(&no_queues, &Metrics::default(), &[no_sequence], soon())
            .await
            .is_err()
    );
}

/// A relay whose SQS never answers.
struct Hanging;

impl Relay for Hanging {
    fn send(
        &self,
        _messages: &[RelayedMessage],
    ) -> impl Future<Output = Vec<Result<(), RelayFailure>>> + Send {
        std::future::pending()
    }

    fn dead_letter(
        &self,
        _record: &UnreadableRecord,
    ) -> impl Future<Output = Result<(), RelayFailure>> + Send {
        std::future::pending()
    }
}

#[tokio::test(start_paused = true)]
async fn sends_still_running_at_the_deadline_are_given_up_and_their_records_listed() {
    let records = [
        insert("500", "ord_1"),
        record("501", "REMOVE", None, None),
        record("502", "INSERT", None, None),
    ];
    let deadline = Deadline::after(Duration::from_secs(3));

    let response = relay_records(&Hanging, &Metrics::default(), &records, deadline)
        .await
        .unwrap();

    assert_eq!(response.failed_sequence_numbers(), ["500", "502"]);
}
