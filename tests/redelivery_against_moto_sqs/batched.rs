//! The SQS adapter's calls in SQS's batch APIs, against moto: the calls a batch's disposal
//! makes at once go out ten to a request, each entry with its own fields and its own
//! answer. Requests are counted by operation as the adapter's SQS client sends them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::types::{Message, QueueAttributeName};
use futures_util::future::join_all;
use futures_util::FutureExt;
use polar_discount_sync::adapters::SqsQueue;
use polar_discount_sync::failure::FailureClass;
use polar_discount_sync::ports::{DeadLetterReason, Delivery, Queue};
use test_kit::queues::{DeadLetter, QueueSettings, Queues};

use super::support::logging_sqs;
use super::support::world::aws_config;

/// Longer than SQS's largest delay, so that a delayed copy is still delayed when read.
const LONG: Duration = Duration::from_secs(900);

struct Setup {
    queues: Queues,
    /// The adapter as production builds it, on a client that logs its requests.
    queue: SqsQueue,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Setup {
    async fn new() -> Setup {
        let aws = aws_config().await;
        let settings = QueueSettings {
            fifo: false,
            visibility_timeout_secs: 600,
            max_receive_count: 3,
        };
        let queues = Queues::create(aws_sdk_sqs::Client::new(&aws), settings).await;
        let (client, requests) = logging_sqs(&aws);
        let queue = SqsQueue::new(client, Some(queues.dead_letter_url.clone()), None);
        Setup {
            queues,
            queue,
            requests,
        }
    }

    /// A message received from the source queue, sent again `requeues` times already.
    fn delivery(&self, n: usize, requeues: u32) -> Delivery {
        Delivery {
            message_id: format!("m{n}"),
            body: Some(format!("body {n}")),
            receipt_handle: Some(format!("receipt {n}")),
            source_arn: Some(self.queues.source_arn.clone()),
            receive_count: 1,
            group_id: None,
            original_message_id: None,
            requeues,
            first_sent_at_ms: Some(1_700_000_000_000 + n as u64),
        }
    }

    /// The requests the adapter sent, by operation, but the (cached) `GetQueueUrl`.
    fn sent(&self) -> Vec<String> {
        let requests = self.requests.lock().unwrap();
        requests
            .iter()
            .filter(|op| op.as_str() != "GetQueueUrl")
            .cloned()
            .collect()
    }

    /// Every visible message of the source queue, each once (left in flight).
    async fn receive_all(&self) -> Vec<Message> {
        let mut found = Vec::new();
        loop {
            let output = self
                .queues
                .sqs
                .receive_message()
                .queue_url(&self.queues.source_url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .visibility_timeout(600)
                .message_attribute_names("All")
                .send()
                .await
                .expect("ReceiveMessage on the source queue");
            let messages = output.messages.unwrap_or_default();
            if messages.is_empty() {
                found.sort_by(|a: &Message, b| a.body.cmp(&b.body));
                return found;
            }
            found.extend(messages);
        }
    }

    /// The same, read as dead letters are (body and string attributes), by body.
    async fn visible_copies(&self) -> Vec<DeadLetter> {
        self.receive_all()
            .await
            .iter()
            .map(DeadLetter::from)
            .collect()
    }

    async fn delayed(&self) -> u64 {
        let name = QueueAttributeName::ApproximateNumberOfMessagesDelayed;
        self.queues
            .sqs
            .get_queue_attributes()
            .queue_url(&self.queues.source_url)
            .attribute_names(name.clone())
            .send()
            .await
            .expect("GetQueueAttributes on the source queue")
            .attributes()
            .and_then(|a| a.get(&name)?.parse().ok())
            .expect("moto counts the delayed messages")
    }
}

fn times(operation: &str, n: usize) -> Vec<String> {
    vec![operation.to_owned(); n]
}

#[tokio::test]
async fn concurrent_requeues_go_ten_to_a_send_message_batch_each_copy_with_its_own_delay_and_attributes(
) {
    let setup = Setup::new().await;
    let deliveries: Vec<Delivery> = (0..23).map(|n| setup.delivery(n, n as u32 % 3)).collect();

    // Even copies visible at once, odd ones delayed.
    let sent = join_all(deliveries.iter().enumerate().map(|(n, delivery)| {
        let after = if n % 2 == 0 { Duration::ZERO } else { LONG };
        setup.queue.requeue(delivery, after)
    }))
    .await;

    assert!(sent.iter().all(Result::is_ok), "{sent:?}");
    assert_eq!(
        setup.sent(),
        times("SendMessageBatch", 3),
        "23 copies: 10 + 10 + 3"
    );
    let copies = setup.visible_copies().await;
    let mut expected: Vec<usize> = (0..23).step_by(2).collect();
    expected.sort_by_key(|n| format!("body {n}"));
    assert_eq!(copies.len(), expected.len(), "{copies:?}");
    for (copy, n) in copies.iter().zip(expected) {
        assert_eq!(copy.body, format!("body {n}"));
        assert_eq!(copy.attribute("OriginalMessageId"), format!("m{n}"));
        assert_eq!(copy.attribute("RequeueCount"), (n % 3 + 1).to_string());
        assert_eq!(
            copy.attribute("FirstSentAt"),
            (1_700_000_000_000 + n as u64).to_string()
        );
    }
    assert_eq!(setup.delayed().await, 11, "the odd copies keep their delay");
}

#[tokio::test]
async fn concurrent_dead_letters_go_ten_to_a_send_message_batch_each_with_its_own_reason() {
    let setup = Setup::new().await;
    let deliveries: Vec<Delivery> = (0..12).map(|n| setup.delivery(n, 0)).collect();
    let reasons: Vec<DeadLetterReason> = (0..12)
        .map(|n| DeadLetterReason {
            class: FailureClass::Permanent,
            kind: "invalid_message",
            // The longest reason a dead letter carries: cut at 1000 characters.
            reason: format!("reason {n} {}", "x".repeat(2000)),
        })
        .collect();

    let sent = join_all(
        deliveries
            .iter()
            .zip(&reasons)
            .map(|(delivery, reason)| setup.queue.dead_letter(delivery, reason)),
    )
    .await;

    assert!(sent.iter().all(Result::is_ok), "{sent:?}");
    assert_eq!(
        setup.sent(),
        times("SendMessageBatch", 2),
        "12 dead letters: 10 + 2"
    );
    let dead_letters = setup.queues.dead_letters().await;
    assert_eq!(dead_letters.len(), 12);
    for letter in &dead_letters {
        let n: usize = letter.body["body ".len()..].parse().unwrap();
        assert_eq!(letter.attribute("OriginalMessageId"), format!("m{n}"));
        assert_eq!(letter.attribute("ErrorKind"), "invalid_message");
        let reason = letter.attribute("Reason");
        assert!(reason.starts_with(&format!("reason {n} ")), "{reason}");
        assert_eq!(reason.chars().count(), 1001, "1000 and an ellipsis");
    }
}

#[tokio::test]
async fn a_lone_requeue_is_one_request() {
    let setup = Setup::new().await;

    setup
        .queue
        .requeue(&setup.delivery(0, 0), Duration::ZERO)
        .await
        .expect("the copy is sent");

    assert_eq!(setup.sent(), times("SendMessageBatch", 1));
    assert_eq!(setup.visible_copies().await.len(), 1);
}

/// moto refuses, entry by entry, a visibility change for a receipt handle it never gave.
#[tokio::test]
async fn a_refused_entry_fails_only_its_own_call_with_sqs_s_code() {
    let setup = Setup::new().await;
    let bodies: Vec<String> = (0..5).map(|n| format!("body {n}")).collect();
    setup.queues.send_batches(&bodies).await;
    let received = setup.receive_all().await;
    let mut deliveries: Vec<Delivery> = (0..5).map(|n| setup.delivery(n, 0)).collect();
    for (delivery, message) in deliveries.iter_mut().zip(&received) {
        delivery.receipt_handle = message.receipt_handle.clone();
    }
    deliveries.push(setup.delivery(5, 0)); // "receipt 5": no message's

    // Visible again at once: the five are received again below.
    let answers = join_all(
        deliveries
            .iter()
            .map(|delivery| setup.queue.retry_later(delivery, Duration::ZERO)),
    )
    .await;

    assert_eq!(setup.sent(), times("ChangeMessageVisibilityBatch", 1));
    assert!(answers[..5].iter().all(Result::is_ok), "{answers:?}");
    let refused = polar_discount_sync::error_chain(answers[5].as_ref().unwrap_err());
    assert!(refused.contains("ReceiptHandleIsInvalid"), "{refused}");
    assert_eq!(setup.visible_copies().await.len(), 5);
}

/// `Disposal::in_time` stops waiting for a call at the invocation's deadline; the call
/// that would start the request may be the one abandoned.
#[tokio::test]
async fn a_caller_that_stops_waiting_does_not_strand_the_calls_behind_it() {
    let setup = Setup::new().await;
    let deliveries: Vec<Delivery> = (0..10).map(|n| setup.delivery(n, 0)).collect();
    // The queue's URL is looked up once, before.
    setup
        .queue
        .max_receive_count(&deliveries[0])
        .await
        .expect("the redrive policy is read");
    setup.requests.lock().unwrap().clear();

    // The first call is polled once, into its yield, and dropped.
    let abandoned = setup.queue.requeue(&deliveries[0], Duration::ZERO);
    assert!(abandoned.now_or_never().is_none(), "it waits for its group");
    let others = join_all(
        deliveries[1..]
            .iter()
            .map(|delivery| setup.queue.requeue(delivery, Duration::ZERO)),
    );
    // A guard against a hang, not a timing assertion: stranded calls would wait forever.
    let sent = tokio::time::timeout(Duration::from_secs(60), others)
        .await
        .expect("the calls behind the abandoned one are answered");

    assert!(sent.iter().all(Result::is_ok), "{sent:?}");
    assert_eq!(setup.sent(), times("SendMessageBatch", 1));
    assert_eq!(
        setup.visible_copies().await.len(),
        10,
        "the abandoned call's copy went too: a duplicate at worst"
    );
}
