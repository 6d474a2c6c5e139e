//! A source queue with a redrive policy to its own dead-letter queue, created through the
//! SQS API (in moto or in a simulated SQS), unique per test or bench run.

use std::collections::HashMap;

use aws_sdk_sqs::types::{
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct Queues {
    pub sqs: aws_sdk_sqs::Client,
    pub source_url: String,
    pub source_arn: String,
    pub dead_letter_url: String,
    pub dead_letter_arn: String,
    pub fifo: bool,
    pub max_receive_count: u32,
}

/// How the source queue is made.
#[derive(Debug, Clone, Copy)]
pub struct QueueSettings {
    pub fifo: bool,
    pub visibility_timeout_secs: u32,
    pub max_receive_count: u32,
}

impl Queues {
    pub async fn create(sqs: aws_sdk_sqs::Client, settings: QueueSettings) -> Queues {
        let suffix = Uuid::new_v4().simple().to_string();
        let ext = if settings.fifo { ".fifo" } else { "" };
        let fifo_attributes = || -> Vec<(QueueAttributeName, String)> {
            if settings.fifo {
                vec![
                    (QueueAttributeName::FifoQueue, "true".into()),
                    (QueueAttributeName::ContentBasedDeduplication, "true".into()),
                ]
            } else {
                Vec::new()
            }
        };
        let dead_letter_url =
            create_queue(&sqs, &format!("dlq-{suffix}{ext}"), fifo_attributes()).await;
        let dead_letter_arn = queue_arn(&sqs, &dead_letter_url).await;
        let redrive = serde_json::json!({
            "deadLetterTargetArn": dead_letter_arn,
            "maxReceiveCount": settings.max_receive_count,
        });
        let mut attributes = fifo_attributes();
        attributes.extend([
            (
                QueueAttributeName::VisibilityTimeout,
                settings.visibility_timeout_secs.to_string(),
            ),
            (QueueAttributeName::RedrivePolicy, redrive.to_string()),
        ]);
        let source_url = create_queue(&sqs, &format!("src-{suffix}{ext}"), attributes).await;
        let source_arn = queue_arn(&sqs, &source_url).await;
        Queues {
            sqs,
            source_url,
            source_arn,
            dead_letter_url,
            dead_letter_arn,
            fifo: settings.fifo,
            max_receive_count: settings.max_receive_count,
        }
    }

    /// Deletes both queues, so that moto does not carry them through later runs.
    pub async fn delete(&self) {
        for url in [&self.source_url, &self.dead_letter_url] {
            let _ = self.sqs.delete_queue().queue_url(url).send().await;
        }
    }

    /// Sends one message as the checkout would; returns its message id.
    pub async fn send(&self, body: &str, group: Option<&str>) -> String {
        let mut send = self
            .sqs
            .send_message()
            .queue_url(&self.source_url)
            .message_body(body);
        if self.fifo {
            send = send.message_group_id(group.expect("a FIFO message needs a group"));
        }
        send.send()
            .await
            .unwrap_or_else(|e| panic!("SendMessage to the source queue: {e:?}"))
            .message_id
            .expect("SQS returns a message id")
    }

    /// Sends the bodies to a standard source queue in order, 10 per `SendMessageBatch`.
    pub async fn send_batches(&self, bodies: &[String]) {
        assert!(
            !self.fifo,
            "a FIFO message needs a group: send them one by one"
        );
        for chunk in bodies.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, body)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .build()
                        .expect("id and body are set")
                })
                .collect();
            let sent = self
                .sqs
                .send_message_batch()
                .queue_url(&self.source_url)
                .set_entries(Some(entries))
                .send()
                .await
                .unwrap_or_else(|e| panic!("SendMessageBatch: {e:?}"));
            assert!(
                sent.failed.is_empty(),
                "SendMessageBatch: {:?}",
                sent.failed
            );
        }
    }

    /// Messages still in the source queue: visible, in flight or delayed.
    pub async fn outstanding(&self) -> u64 {
        let attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.source_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GetQueueAttributes on the source queue: {e:?}"));
        attributes
            .attributes()
            .map(|a| a.values().filter_map(|n| n.parse::<u64>().ok()).sum())
            .unwrap_or(0)
    }

    /// Everything in the dead-letter queue, each message once (received and left
    /// invisible for ten minutes).
    pub async fn dead_letters(&self) -> Vec<DeadLetter> {
        let mut found = Vec::new();
        loop {
            let output = self
                .sqs
                .receive_message()
                .queue_url(&self.dead_letter_url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .visibility_timeout(600)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .unwrap_or_else(|e| panic!("ReceiveMessage on the dead-letter queue: {e:?}"));
            let messages = output.messages.unwrap_or_default();
            if messages.is_empty() {
                return found;
            }
            found.extend(messages.iter().map(DeadLetter::from));
        }
    }
}

/// A message found in the dead-letter queue.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub message_id: String,
    pub body: String,
    /// Its string message attributes (those the function gives a dead letter).
    pub attributes: HashMap<String, String>,
    pub group_id: Option<String>,
    /// Set when SQS's redrive moved it here (the function did not send it).
    pub source_arn: Option<String>,
}

impl DeadLetter {
    pub fn attribute(&self, name: &str) -> &str {
        self.attributes
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("dead letter without the {name} attribute: {self:?}"))
    }

    /// Sent by the function, with its reason; otherwise moved by the redrive policy.
    pub fn sent_by_function(&self) -> bool {
        self.attributes.contains_key("OriginalMessageId")
    }

    /// The id of the source queue's message it stands for.
    pub fn original_message_id(&self) -> &str {
        self.attributes
            .get("OriginalMessageId")
            .map_or(&self.message_id, |id| id)
    }
}

impl From<&aws_sdk_sqs::types::Message> for DeadLetter {
    fn from(m: &aws_sdk_sqs::types::Message) -> Self {
        let system =
            |name: MessageSystemAttributeName| m.attributes().and_then(|a| a.get(&name)).cloned();
        DeadLetter {
            message_id: m.message_id.clone().unwrap_or_default(),
            body: m.body.clone().unwrap_or_default(),
            attributes: m
                .message_attributes()
                .map(|a| {
                    a.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.string_value.clone()?)))
                        .collect()
                })
                .unwrap_or_default(),
            group_id: system(MessageSystemAttributeName::MessageGroupId),
            source_arn: system(MessageSystemAttributeName::DeadLetterQueueSourceArn),
        }
    }
}

async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: Vec<(QueueAttributeName, String)>,
) -> String {
    sqs.create_queue()
        .queue_name(name)
        .set_attributes(Some(attributes.into_iter().collect()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateQueue {name}: {e:?}"))
        .queue_url
        .expect("CreateQueue returns the queue URL")
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> String {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GetQueueAttributes(QueueArn) of {url}: {e:?}"))
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .expect("the queue ARN is returned")
}
