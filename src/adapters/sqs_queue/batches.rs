//! The container's queue calls, sent together in SQS's batch APIs: `SendMessageBatch` for
//! the requeued copies and the dead letters, `ChangeMessageVisibilityBatch` for the later
//! retries, up to ten entries a request for the price of one. A batch disposes of its
//! failures all at once, so their calls arrive together. As with the DynamoDB adapter's
//! transactions (`dynamo/transactions.rs`): a call alone goes out at once, after one yield
//! of its task, so that the calls begun in the same tick join its request; the calls that
//! arrive while requests are in flight wait for them and go out together next.
//!
//! A lone call goes out as a batch of one entry: it costs the same request as
//! `SendMessage` or `ChangeMessageVisibility`, and every call takes one path.
//!
//! Each entry keeps its own fields (a copy's delay and attributes) and hears its own
//! answer: an entry SQS refuses fails only its own call, with SQS's code and message; a
//! request that fails as a whole fails each of its calls, with the SDK's error.

use std::sync::{Arc, Mutex};

use aws_sdk_sqs::types::builders::{
    ChangeMessageVisibilityBatchRequestEntryBuilder, SendMessageBatchRequestEntryBuilder,
};
use aws_sdk_sqs::types::{
    BatchResultErrorEntry, ChangeMessageVisibilityBatchRequestEntry, SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;
use futures_util::future::join_all;
use thiserror::Error;
use tokio::sync::oneshot;

use super::QueueError;
use crate::adapters::group::{self, Line};

/// SQS takes at most ten entries in one batch request.
const MAX_ENTRIES: usize = 10;
/// ... and at most 256 KiB of messages (bodies and attributes) in one `SendMessageBatch`.
const MAX_PAYLOAD: usize = 262_144;

/// One call's entry, without its id: ids are given per request (the entry's index).
#[derive(Debug)]
pub(super) enum Entry {
    Send(SendMessageBatchRequestEntryBuilder),
    Visibility(ChangeMessageVisibilityBatchRequestEntryBuilder),
}

impl Entry {
    /// What the entry counts towards the request's payload limit.
    fn payload(&self) -> usize {
        let Self::Send(entry) = self else {
            return 0;
        };
        let body = entry.get_message_body().as_deref().map_or(0, str::len);
        let attributes: usize = entry
            .get_message_attributes()
            .iter()
            .flatten()
            .map(|(name, value)| {
                name.len() + value.data_type().len() + value.string_value().map_or(0, str::len)
            })
            .sum();
        body + attributes
    }
}

/// An entry SQS refused; the others of its request may have gone through.
#[derive(Debug, Error)]
#[error("SQS refused the entry: {code}: {message}")]
struct EntryRefused {
    code: String,
    message: String,
}

type Answer = Result<(), QueueError>;
/// A batch request's answer: the ids of the entries that went through, and the refusals.
type EntryOutcomes = (Vec<String>, Vec<BatchResultErrorEntry>);

#[derive(Debug)]
struct Waiting {
    url: String,
    entry: Entry,
    answer: oneshot::Sender<Answer>,
}

impl Waiting {
    /// Whether both go in the same kind of request to the same queue.
    fn goes_with(&self, other: &Waiting) -> bool {
        self.url == other.url
            && std::mem::discriminant(&self.entry) == std::mem::discriminant(&other.entry)
    }
}

/// The batched queue calls of one container.
#[derive(Debug, Clone)]
pub(super) struct Batches {
    client: Client,
    line: Arc<Mutex<Line<Waiting>>>,
}

impl Batches {
    pub(super) fn new(client: Client) -> Self {
        Self {
            client,
            line: Arc::default(),
        }
    }

    /// Sends `entry` to the queue at `url`, alone or with the calls that wait beside it.
    pub(super) async fn send(&self, url: String, entry: Entry) -> Answer {
        let (answer, answered) = oneshot::channel();
        let waiting = Waiting { url, entry, answer };
        group::join(&self.line, waiting, answered, || {
            self.clone().send_while_waiting()
        })
        .await
    }

    async fn send_while_waiting(self) {
        loop {
            let Some(waiting) = self.line.lock().unwrap().next(std::mem::take) else {
                return;
            };
            join_all(requests(waiting).into_iter().map(|r| self.send_request(r))).await;
        }
    }

    /// Sends one request (one kind, one queue) and answers each of its calls.
    async fn send_request(&self, request: Vec<Waiting>) {
        let url = request[0].url.clone();
        let mut sends = Vec::new();
        let mut visibilities = Vec::new();
        let mut answers = Vec::new();
        for (index, waiting) in request.into_iter().enumerate() {
            let id = index.to_string();
            match waiting.entry {
                Entry::Send(entry) => {
                    sends.push(entry.id(id).build().expect("id and body are set"))
                }
                Entry::Visibility(entry) => {
                    visibilities.push(entry.id(id).build().expect("id and receipt handle are set"))
                }
            }
            answers.push(waiting.answer);
        }
        let (operation, answered) = if visibilities.is_empty() {
            ("SendMessageBatch", self.send_messages(url, sends).await)
        } else {
            let answered = self.change_visibilities(url, visibilities).await;
            ("ChangeMessageVisibilityBatch", answered)
        };
        let results = match answered {
            Ok((successful, failed)) => {
                entry_answers(operation, answers.len(), &successful, &failed)
            }
            Err(err) => {
                let err = Arc::new(err);
                (0..answers.len())
                    .map(|_| {
                        Err(QueueError::Request {
                            operation,
                            source: Box::new(err.clone()),
                        })
                    })
                    .collect()
            }
        };
        for (answer, result) in answers.into_iter().zip(results) {
            let _ = answer.send(result);
        }
    }

    async fn send_messages(
        &self,
        url: String,
        entries: Vec<SendMessageBatchRequestEntry>,
    ) -> Result<EntryOutcomes, aws_sdk_sqs::Error> {
        let output = self
            .client
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await?;
        let successful = output.successful().iter().map(|e| e.id().to_owned());
        Ok((successful.collect(), output.failed().to_vec()))
    }

    async fn change_visibilities(
        &self,
        url: String,
        entries: Vec<ChangeMessageVisibilityBatchRequestEntry>,
    ) -> Result<EntryOutcomes, aws_sdk_sqs::Error> {
        let output = self
            .client
            .change_message_visibility_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await?;
        let successful = output.successful().iter().map(|e| e.id().to_owned());
        Ok((successful.collect(), output.failed().to_vec()))
    }
}

/// The waiting calls as requests, in order: one kind to one queue each, at most ten
/// entries and, for `SendMessageBatch`, at most `MAX_PAYLOAD` bytes (an entry larger than
/// that goes alone, for SQS to refuse).
fn requests(waiting: Vec<Waiting>) -> Vec<Vec<Waiting>> {
    let mut requests: Vec<(Vec<Waiting>, usize)> = Vec::new();
    for next in waiting {
        let size = next.entry.payload();
        let open = requests
            .iter_mut()
            .rev()
            .find(|(request, _)| request[0].goes_with(&next))
            .filter(|(request, bytes)| request.len() < MAX_ENTRIES && bytes + size <= MAX_PAYLOAD);
        match open {
            Some((request, bytes)) => {
                request.push(next);
                *bytes += size;
            }
            None => requests.push((vec![next], size)),
        }
    }
    requests.into_iter().map(|(request, _)| request).collect()
}

/// Each of a request's `entries` answers, by id (its index): SQS names each entry
/// successful or failed; one it names neither failed too.
fn entry_answers(
    operation: &'static str,
    entries: usize,
    successful: &[String],
    failed: &[BatchResultErrorEntry],
) -> Vec<Answer> {
    let refused = |code: &str, message: &str| QueueError::Request {
        operation,
        source: Box::new(EntryRefused {
            code: code.to_owned(),
            message: message.to_owned(),
        }),
    };
    (0..entries)
        .map(|index| {
            let id = index.to_string();
            if let Some(failed) = failed.iter().find(|f| f.id == id) {
                Err(refused(&failed.code, failed.message().unwrap_or_default()))
            } else if successful.contains(&id) {
                Ok(())
            } else {
                Err(refused("NoAnswer", "named neither successful nor failed"))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use aws_sdk_sqs::types::MessageAttributeValue;

    use super::*;

    fn waiting(url: &str, entry: Entry) -> Waiting {
        Waiting {
            url: url.to_owned(),
            entry,
            answer: oneshot::channel().0,
        }
    }

    fn send(url: &str, body_bytes: usize) -> Waiting {
        let entry = SendMessageBatchRequestEntry::builder().message_body("b".repeat(body_bytes));
        waiting(url, Entry::Send(entry))
    }

    fn visibility(url: &str) -> Waiting {
        let entry = ChangeMessageVisibilityBatchRequestEntry::builder().receipt_handle("r");
        waiting(url, Entry::Visibility(entry))
    }

    fn sizes(requests: &[Vec<Waiting>]) -> Vec<usize> {
        requests.iter().map(Vec::len).collect()
    }

    #[test]
    fn waiting_calls_go_ten_a_request_one_kind_and_one_queue_each() {
        let mut line: Vec<Waiting> = (0..23).map(|_| send("source", 10)).collect();
        line.extend((0..3).map(|_| send("dead-letters", 10)));
        line.extend((0..12).map(|_| visibility("source")));

        let requests = requests(line);

        assert_eq!(sizes(&requests), [10, 10, 3, 3, 10, 2]);
        for request in &requests {
            assert!(request.iter().all(|w| w.goes_with(&request[0])));
        }
    }

    #[test]
    fn a_send_request_stays_within_256_kib_of_bodies_and_attributes() {
        let attribute = MessageAttributeValue::builder()
            .data_type("String")
            .string_value("r".repeat(1000))
            .build()
            .unwrap();
        let with_reason = |body_bytes| {
            let entry = SendMessageBatchRequestEntry::builder()
                .message_body("b".repeat(body_bytes))
                .message_attributes("Reason", attribute.clone());
            waiting("dead-letters", Entry::Send(entry))
        };
        // 100,000 + 1,012 bytes each (body, name, type, value): two fit in 262,144, a third does not.
        let line = (0..5).map(|_| with_reason(100_000)).collect();

        let requests = requests(line);

        assert_eq!(sizes(&requests), [2, 2, 1]);
        assert_eq!(requests[0][0].entry.payload(), 101_012);
    }

    #[test]
    fn an_entry_over_the_payload_limit_goes_alone() {
        let line = vec![send("q", 10), send("q", 300_000), send("q", 10)];

        assert_eq!(sizes(&requests(line)), [1, 1, 1]);
    }

    #[test]
    fn each_entry_hears_its_own_answer_with_a_refusal_s_code_and_message_in_its_chain() {
        let failed = BatchResultErrorEntry::builder()
            .id("1")
            .sender_fault(true)
            .code("InvalidParameterValue")
            .message("the body has invalid characters")
            .build()
            .unwrap();

        let answers = entry_answers(
            "SendMessageBatch",
            3,
            &["0".to_owned(), "2".to_owned()],
            &[failed],
        );

        assert!(answers[0].is_ok());
        assert!(answers[2].is_ok());
        let chain = crate::error_chain(answers[1].as_ref().unwrap_err());
        assert!(chain.contains("SQS SendMessageBatch failed"), "{chain}");
        assert!(
            chain.contains("InvalidParameterValue: the body has invalid characters"),
            "{chain}"
        );
    }

    #[test]
    fn an_entry_sqs_names_neither_successful_nor_failed_has_failed() {
        let answers = entry_answers("ChangeMessageVisibilityBatch", 2, &["0".to_owned()], &[]);

        assert!(answers[0].is_ok());
        let chain = crate::error_chain(answers[1].as_ref().unwrap_err());
        assert!(chain.contains("NoAnswer"), "{chain}");
    }
}
