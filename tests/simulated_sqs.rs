//! The simulated SQS the invariant test runs on (`support::simulated_sqs`): its semantics,
//! step by step on tokio's paused clock, and its SQS API as the AWS SDK speaks it.
//! (`redelivery_against_moto_sqs` runs the function's redelivery tests on it and on moto.)

mod support;

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};
use support::simulated_sqs::{Counts, QueueSpec, Redrive, SimulatedSqs, SqsError};
use tokio::time::advance;

const VISIBILITY: Duration = Duration::from_secs(30);

/// A standard source queue (visibility 30 s, `maxReceiveCount` `max`) and its DLQ.
async fn queues(max: u32) -> (std::sync::Arc<SimulatedSqs>, String, String) {
    let sqs = SimulatedSqs::start().await;
    let dlq = sqs.create_queue("dlq", QueueSpec::default()).unwrap();
    let source = sqs
        .create_queue(
            "source",
            QueueSpec {
                visibility_timeout: VISIBILITY,
                redrive: Some(Redrive {
                    dead_letter_target_arn: sqs.queue_arn(&dlq).unwrap(),
                    max_receive_count: max,
                }),
                ..QueueSpec::default()
            },
        )
        .unwrap();
    (sqs, source, dlq)
}

#[tokio::test(start_paused = true)]
async fn a_received_message_is_invisible_for_the_visibility_timeout_then_comes_back_counted() {
    let (sqs, source, _) = queues(10).await;
    let id = sqs.send_body(&source, "m1", None).unwrap();

    let first = sqs.receive(&source, 10, None).unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(
        (first[0].message_id.as_str(), first[0].receive_count),
        (id.as_str(), 1)
    );
    assert_eq!(first[0].attributes["ApproximateReceiveCount"], "1");
    assert_eq!(
        sqs.counts(&source).unwrap(),
        Counts {
            visible: 0,
            in_flight: 1
        }
    );

    advance(VISIBILITY - Duration::from_millis(1)).await;
    assert!(
        sqs.receive(&source, 10, None).unwrap().is_empty(),
        "still in flight"
    );
    advance(Duration::from_millis(1)).await;
    let second = sqs.receive(&source, 10, None).unwrap();
    assert_eq!(second[0].receive_count, 2);
    assert_eq!(second[0].attributes["ApproximateReceiveCount"], "2");
    assert_ne!(second[0].receipt_handle, first[0].receipt_handle);
    assert_eq!(
        second[0].attributes["ApproximateFirstReceiveTimestamp"],
        first[0].attributes["ApproximateFirstReceiveTimestamp"]
    );

    // A receive may set its own visibility timeout.
    advance(VISIBILITY).await;
    sqs.receive(&source, 10, Some(Duration::from_secs(2)))
        .unwrap();
    advance(Duration::from_secs(2)).await;
    assert_eq!(sqs.receive(&source, 10, None).unwrap()[0].receive_count, 4);
}

#[tokio::test(start_paused = true)]
async fn a_receive_gives_the_oldest_visible_messages_up_to_its_maximum() {
    let (sqs, source, _) = queues(10).await;
    let ids: Vec<String> = (0..5)
        .map(|n| sqs.send_body(&source, &format!("m{n}"), None).unwrap())
        .collect();
    let first: Vec<String> = sqs
        .receive(&source, 3, None)
        .unwrap()
        .into_iter()
        .map(|m| m.message_id)
        .collect();
    assert_eq!(first, ids[..3]);
    let rest: Vec<String> = sqs
        .receive(&source, 10, None)
        .unwrap()
        .into_iter()
        .map(|m| m.message_id)
        .collect();
    assert_eq!(rest, ids[3..]);
    assert_eq!(
        sqs.counts(&source).unwrap(),
        Counts {
            visible: 0,
            in_flight: 5
        }
    );
}

#[tokio::test(start_paused = true)]
async fn only_the_latest_receipt_handle_deletes_a_message() {
    let (sqs, source, _) = queues(10).await;
    sqs.send_body(&source, "m1", None).unwrap();
    let old = sqs
        .receive(&source, 1, None)
        .unwrap()
        .remove(0)
        .receipt_handle;
    advance(VISIBILITY).await;
    let latest = sqs
        .receive(&source, 1, None)
        .unwrap()
        .remove(0)
        .receipt_handle;

    assert_eq!(
        sqs.delete(&source, &old),
        Ok(false),
        "accepted, as SQS does, but not deleted"
    );
    assert_eq!(sqs.stale_deletes(), 1);
    assert_eq!(sqs.counts(&source).unwrap().total(), 1);
    assert!(matches!(
        sqs.delete(&source, "not-a-handle"),
        Err(SqsError::ReceiptHandleIsInvalid(_))
    ));
    assert_eq!(sqs.delete(&source, &latest), Ok(true));
    assert_eq!(sqs.counts(&source).unwrap().total(), 0);
    advance(VISIBILITY).await;
    assert!(sqs.receive(&source, 10, None).unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_visibility_change_sets_when_an_in_flight_message_comes_back() {
    let (sqs, source, _) = queues(10).await;
    sqs.send_body(&source, "m1", None).unwrap();
    let receipt = sqs
        .receive(&source, 1, None)
        .unwrap()
        .remove(0)
        .receipt_handle;

    // Longer than the queue's timeout: back after 45 s, not 30 s.
    sqs.change_visibility(&source, &receipt, Duration::from_secs(45))
        .unwrap();
    advance(Duration::from_secs(44)).await;
    assert!(sqs.receive(&source, 1, None).unwrap().is_empty());
    advance(Duration::from_secs(1)).await;
    let receipt = sqs
        .receive(&source, 1, None)
        .unwrap()
        .remove(0)
        .receipt_handle;

    // Zero: visible at once.
    sqs.change_visibility(&source, &receipt, Duration::ZERO)
        .unwrap();
    let again = sqs.receive(&source, 1, None).unwrap().remove(0);
    assert_eq!(again.receive_count, 3);

    // An earlier handle, or a message no longer in flight, is refused.
    assert!(matches!(
        sqs.change_visibility(&source, &receipt, Duration::from_secs(5)),
        Err(SqsError::ReceiptHandleIsInvalid(_))
    ));
    advance(VISIBILITY).await;
    assert!(matches!(
        sqs.change_visibility(&source, &again.receipt_handle, Duration::from_secs(5)),
        Err(SqsError::MessageNotInflight(_))
    ));
    assert!(matches!(
        sqs.change_visibility(
            &source,
            &again.receipt_handle,
            Duration::from_secs(13 * 3600)
        ),
        Err(SqsError::InvalidParameterValue(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn after_max_receive_count_receives_the_redrive_moves_a_message_to_the_dead_letter_queue() {
    let (sqs, source, dlq) = queues(3).await;
    let id = sqs.send_body(&source, "poison", None).unwrap();
    let kept = sqs.send_body(&source, "fine", None).unwrap();
    for receive in 1..=3 {
        let batch = sqs.receive(&source, 10, None).unwrap();
        assert_eq!(batch.len(), 2);
        assert!(batch.iter().all(|m| m.receive_count == receive));
        let fine = batch.iter().find(|m| m.message_id == kept).unwrap();
        if receive == 3 {
            sqs.delete(&source, &fine.receipt_handle).unwrap();
        }
        advance(VISIBILITY).await;
    }
    assert!(
        sqs.messages(&dlq).unwrap().is_empty(),
        "moved only when received once more"
    );

    assert!(
        sqs.receive(&source, 10, None).unwrap().is_empty(),
        "moved, not delivered"
    );
    assert_eq!(sqs.counts(&source).unwrap().total(), 0);
    let moved = sqs.messages(&dlq).unwrap();
    assert_eq!(moved.len(), 1);
    assert_eq!(
        (moved[0].message_id.as_str(), moved[0].body.as_str()),
        (id.as_str(), "poison")
    );
    assert_eq!(
        moved[0].dead_letter_source_arn,
        Some(sqs.queue_arn(&source).unwrap())
    );
    let received = sqs.receive(&dlq, 10, None).unwrap();
    assert_eq!(received[0].receive_count, 1, "counted afresh in the DLQ");
    assert_eq!(
        received[0].attributes["DeadLetterQueueSourceArn"],
        sqs.queue_arn(&source).unwrap()
    );
}

#[tokio::test(start_paused = true)]
async fn a_fifo_group_is_held_back_while_its_first_message_is_in_flight() {
    let sqs = SimulatedSqs::start().await;
    let fifo = sqs
        .create_queue(
            "q.fifo",
            QueueSpec {
                fifo: true,
                content_based_deduplication: true,
                visibility_timeout: Duration::from_secs(2),
                redrive: None,
            },
        )
        .unwrap();
    let send = |body: &str, group: &str| sqs.send_body(&fifo, body, Some(group)).unwrap();
    let a1 = send("a1", "A");
    let b1 = send("b1", "B");
    let a2 = send("a2", "A");
    assert_eq!(
        send("a2", "A"),
        a2,
        "a duplicate within five minutes is dropped"
    );

    let labels = |batch: Vec<support::simulated_sqs::Received>| -> Vec<String> {
        batch.into_iter().map(|m| m.body).collect()
    };
    let first = sqs.receive(&fifo, 10, None).unwrap();
    assert_eq!(
        first.iter().map(|m| &m.message_id).collect::<Vec<_>>(),
        [&a1, &b1, &a2]
    );
    assert_eq!(first[0].attributes["MessageGroupId"], "A");
    // a1 fails with a longer delay; a2 and b1 are left to the queue's 2 s.
    sqs.change_visibility(&fifo, &first[0].receipt_handle, Duration::from_secs(5))
        .unwrap();
    advance(Duration::from_secs(2)).await;
    let b = sqs.receive(&fifo, 10, None).unwrap();
    assert_eq!(labels(b.clone()), ["b1"], "A waits behind a1");
    sqs.delete(&fifo, &b[0].receipt_handle).unwrap();
    advance(Duration::from_secs(3)).await;
    assert_eq!(
        labels(sqs.receive(&fifo, 10, None).unwrap()),
        ["a1", "a2"],
        "in order"
    );

    assert!(matches!(
        sqs.send_body(&fifo, "no group", None),
        Err(SqsError::MissingParameter(_))
    ));
    assert!(sqs
        .create_queue("plain.fifo", QueueSpec::default())
        .is_err());
}

/// The same semantics through the SQS API, as the function's SDK client and the event
/// source use them.
#[tokio::test]
async fn the_sdk_speaks_to_it_as_to_sqs() {
    let sqs = SimulatedSqs::start().await;
    let aws = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(sqs.endpoint())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "t", "t", None, None, "t",
        ))
        .load()
        .await;
    let client = aws_sdk_sqs::Client::new(&aws);
    let dlq = client
        .create_queue()
        .queue_name("dlq")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let dlq_arn = sqs.queue_arn(&dlq).unwrap();
    let source = client
        .create_queue()
        .queue_name("source")
        .attributes(QueueAttributeName::VisibilityTimeout, "1")
        .attributes(
            QueueAttributeName::RedrivePolicy,
            format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"2"}}"#),
        )
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let by_name = client
        .get_queue_url()
        .queue_name("source")
        .send()
        .await
        .unwrap();
    assert_eq!(by_name.queue_url.as_deref(), Some(source.as_str()));
    let missing = client
        .get_queue_url()
        .queue_name("nope")
        .send()
        .await
        .unwrap_err();
    assert!(missing.into_service_error().is_queue_does_not_exist());

    let attributes = client
        .get_queue_attributes()
        .queue_url(&source)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .unwrap();
    let policy = &attributes.attributes().unwrap()[&QueueAttributeName::RedrivePolicy];
    assert!(
        policy.contains(r#""maxReceiveCount":2"#) && policy.contains(&dlq_arn),
        "{policy}"
    );

    let attribute = |value: &str| {
        aws_sdk_sqs::types::MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value)
            .build()
            .unwrap()
    };
    let id = client
        .send_message()
        .queue_url(&source)
        .message_body("hello")
        .message_attributes("Reason", attribute("because"))
        .send()
        .await
        .unwrap()
        .message_id
        .unwrap();
    let receive = || {
        client
            .receive_message()
            .queue_url(&source)
            .max_number_of_messages(10)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
    };
    let first = receive().await.unwrap().messages.unwrap();
    assert_eq!(first[0].message_id.as_deref(), Some(id.as_str()));
    assert_eq!(first[0].body.as_deref(), Some("hello"));
    assert_eq!(
        first[0].attributes().unwrap()[&MessageSystemAttributeName::ApproximateReceiveCount],
        "1"
    );
    assert_eq!(
        first[0].message_attributes().unwrap()["Reason"]
            .string_value
            .as_deref(),
        Some("because")
    );
    client
        .change_message_visibility()
        .queue_url(&source)
        .receipt_handle(first[0].receipt_handle.clone().unwrap())
        .visibility_timeout(0)
        .send()
        .await
        .unwrap();
    let second = receive().await.unwrap().messages.unwrap();
    assert_eq!(
        second[0].attributes().unwrap()[&MessageSystemAttributeName::ApproximateReceiveCount],
        "2"
    );
    let stale = client
        .change_message_visibility()
        .queue_url(&source)
        .receipt_handle(first[0].receipt_handle.clone().unwrap())
        .visibility_timeout(5)
        .send()
        .await
        .unwrap_err();
    assert!(stale.into_service_error().is_receipt_handle_is_invalid());

    // Received twice (the limit): the next receive moves it to the DLQ.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert!(receive()
        .await
        .unwrap()
        .messages
        .unwrap_or_default()
        .is_empty());
    let dead = client
        .receive_message()
        .queue_url(&dlq)
        .message_attribute_names("All")
        .send()
        .await
        .unwrap()
        .messages
        .unwrap();
    assert_eq!(dead[0].message_id.as_deref(), Some(id.as_str()));
    let deleted = client
        .delete_message_batch()
        .queue_url(&dlq)
        .entries(
            DeleteMessageBatchRequestEntry::builder()
                .id("0")
                .receipt_handle(dead[0].receipt_handle.clone().unwrap())
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.successful.len(), 1);
    assert!(sqs.messages(&dlq).unwrap().is_empty());
}
