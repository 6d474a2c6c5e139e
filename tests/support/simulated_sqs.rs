//! A simulated SQS: queues with a visibility timeout, `ApproximateReceiveCount`, a redrive
//! policy that moves a message to its dead-letter queue when it would be received more than
//! `maxReceiveCount` times, and FIFO message groups.
//!
//! Its clock is tokio's, so a test with paused time steps through visibility timeouts
//! deterministically (`tests/simulated_sqs.rs`). `SimulatedSqs::start` also serves it on
//! loopback over SQS's JSON protocol (`sqs_endpoint.rs`): the function's own SQS client, in
//! process or in a function process (`AWS_ENDPOINT_URL_SQS`), changes visibilities, reads
//! the redrive policy and sends dead letters here, as it would to SQS.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::sqs::{ACCOUNT, REGION};

/// SQS's ceiling for a visibility timeout.
const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);
/// A FIFO queue drops a message sent again with the same deduplication id within this.
const DEDUPLICATION_WINDOW: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Clone)]
pub struct QueueSpec {
    pub fifo: bool,
    pub content_based_deduplication: bool,
    pub visibility_timeout: Duration,
    pub redrive: Option<Redrive>,
}

impl Default for QueueSpec {
    fn default() -> Self {
        Self {
            fifo: false,
            content_based_deduplication: false,
            visibility_timeout: Duration::from_secs(30),
            redrive: None,
        }
    }
}

/// A source queue's redrive policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redrive {
    pub dead_letter_target_arn: String,
    pub max_receive_count: u32,
}

impl Redrive {
    /// As SQS writes it in the `RedrivePolicy` attribute.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "deadLetterTargetArn": self.dead_letter_target_arn,
            "maxReceiveCount": self.max_receive_count,
        })
        .to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageAttribute {
    pub data_type: String,
    pub string_value: Option<String>,
}

/// What one receive hands out for one message.
#[derive(Debug, Clone)]
pub struct Received {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    pub receive_count: u32,
    /// System attributes: `ApproximateReceiveCount`, `SentTimestamp`, `MessageGroupId`, …
    pub attributes: BTreeMap<String, String>,
    pub message_attributes: BTreeMap<String, MessageAttribute>,
}

/// A message as it stands in a queue, without receiving it.
#[derive(Debug, Clone)]
pub struct Stored {
    pub message_id: String,
    pub body: String,
    pub group: Option<String>,
    pub receive_count: u32,
    pub in_flight: bool,
    pub message_attributes: BTreeMap<String, MessageAttribute>,
    /// Set when the redrive policy moved it here.
    pub dead_letter_source_arn: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub visible: usize,
    pub in_flight: usize,
}

impl Counts {
    pub fn total(&self) -> usize {
        self.visible + self.in_flight
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqsError {
    NonExistentQueue(String),
    ReceiptHandleIsInvalid(String),
    MessageNotInflight(String),
    InvalidParameterValue(String),
    MissingParameter(String),
    UnsupportedOperation(String),
}

impl SqsError {
    /// The error code SQS gives (the query protocol's, which the SDK reports).
    pub fn code(&self) -> &'static str {
        match self {
            Self::NonExistentQueue(_) => "AWS.SimpleQueueService.NonExistentQueue",
            Self::ReceiptHandleIsInvalid(_) => "ReceiptHandleIsInvalid",
            Self::MessageNotInflight(_) => "AWS.SimpleQueueService.MessageNotInflight",
            Self::InvalidParameterValue(_) => "InvalidParameterValue",
            Self::MissingParameter(_) => "MissingParameter",
            Self::UnsupportedOperation(_) => "AWS.SimpleQueueService.UnsupportedOperation",
        }
    }

    /// The shape name of the JSON protocol's `__type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::NonExistentQueue(_) => "QueueDoesNotExist",
            Self::ReceiptHandleIsInvalid(_) => "ReceiptHandleIsInvalid",
            Self::MessageNotInflight(_) => "MessageNotInflight",
            Self::InvalidParameterValue(_) => "InvalidParameterValue",
            Self::MissingParameter(_) => "MissingParameter",
            Self::UnsupportedOperation(_) => "UnsupportedOperation",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Self::NonExistentQueue(m)
            | Self::ReceiptHandleIsInvalid(m)
            | Self::MessageNotInflight(m)
            | Self::InvalidParameterValue(m)
            | Self::MissingParameter(m)
            | Self::UnsupportedOperation(m) => m,
        }
    }
}

pub struct SimulatedSqs {
    endpoint: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    queues: Vec<Queue>,
    next_message: u64,
    next_receipt: u64,
    stale_deletes: usize,
    /// Requests served over the SQS API, by operation.
    requests: BTreeMap<String, usize>,
}

struct Queue {
    name: String,
    url: String,
    arn: String,
    spec: QueueSpec,
    /// In the order sent (a redriven message: in the order it arrived).
    messages: Vec<Message>,
    deduplication: HashMap<String, (String, Instant)>,
}

struct Message {
    id: String,
    body: String,
    group: Option<String>,
    deduplication_id: Option<String>,
    message_attributes: BTreeMap<String, MessageAttribute>,
    sent_at_ms: u64,
    first_receive_ms: Option<u64>,
    receive_count: u32,
    visible_at: Instant,
    /// The handle of the latest receive; only it deletes the message.
    receipt: Option<String>,
    dead_letter_source_arn: Option<String>,
}

impl Message {
    fn stored(&self, now: Instant) -> Stored {
        Stored {
            message_id: self.id.clone(),
            body: self.body.clone(),
            group: self.group.clone(),
            receive_count: self.receive_count,
            in_flight: self.visible_at > now,
            message_attributes: self.message_attributes.clone(),
            dead_letter_source_arn: self.dead_letter_source_arn.clone(),
        }
    }

    fn received(&self, receipt: String) -> Received {
        let mut attributes = BTreeMap::from([
            (
                "ApproximateReceiveCount".to_owned(),
                self.receive_count.to_string(),
            ),
            ("SentTimestamp".to_owned(), self.sent_at_ms.to_string()),
            ("SenderId".to_owned(), ACCOUNT.to_owned()),
        ]);
        if let Some(first) = self.first_receive_ms {
            attributes.insert(
                "ApproximateFirstReceiveTimestamp".to_owned(),
                first.to_string(),
            );
        }
        if let Some(group) = &self.group {
            attributes.insert("MessageGroupId".to_owned(), group.clone());
        }
        if let Some(id) = &self.deduplication_id {
            attributes.insert("MessageDeduplicationId".to_owned(), id.clone());
        }
        if let Some(arn) = &self.dead_letter_source_arn {
            attributes.insert("DeadLetterQueueSourceArn".to_owned(), arn.clone());
        }
        Received {
            message_id: self.id.clone(),
            receipt_handle: receipt,
            body: self.body.clone(),
            receive_count: self.receive_count,
            attributes,
            message_attributes: self.message_attributes.clone(),
        }
    }
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

impl SimulatedSqs {
    /// A simulated SQS with no queues, served on loopback (see `endpoint`).
    pub async fn start() -> Arc<SimulatedSqs> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the simulated SQS endpoint");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let sqs = Arc::new(SimulatedSqs {
            endpoint,
            state: Mutex::default(),
        });
        tokio::spawn(super::sqs_endpoint::serve(listener, Arc::downgrade(&sqs)));
        sqs
    }

    /// Where an SDK client reaches it (`endpoint_url`, `AWS_ENDPOINT_URL_SQS`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Creates the queue, or returns the URL of the one of that name.
    pub fn create_queue(&self, name: &str, spec: QueueSpec) -> Result<String, SqsError> {
        if spec.fifo != name.ends_with(".fifo") {
            return Err(SqsError::InvalidParameterValue(format!(
                "{name}: a FIFO queue's name ends with .fifo, and only its"
            )));
        }
        let mut state = self.state.lock().unwrap();
        if let Some(queue) = state.queues.iter().find(|q| q.name == name) {
            return Ok(queue.url.clone());
        }
        let url = format!("{}/{ACCOUNT}/{name}", self.endpoint);
        state.queues.push(Queue {
            name: name.to_owned(),
            url: url.clone(),
            arn: format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"),
            spec,
            messages: Vec::new(),
            deduplication: HashMap::new(),
        });
        Ok(url)
    }

    pub fn queue_url(&self, name: &str) -> Result<String, SqsError> {
        let state = self.state.lock().unwrap();
        state
            .queues
            .iter()
            .find(|q| q.name == name)
            .map(|q| q.url.clone())
            .ok_or_else(|| SqsError::NonExistentQueue(format!("no queue named {name}")))
    }

    pub fn queue_arn(&self, url: &str) -> Result<String, SqsError> {
        let state = self.state.lock().unwrap();
        Ok(state.queues[state.index(url)?].arn.clone())
    }

    pub fn spec(&self, url: &str) -> Result<QueueSpec, SqsError> {
        let state = self.state.lock().unwrap();
        Ok(state.queues[state.index(url)?].spec.clone())
    }

    /// Sends a message, visible after `delay` (`DelaySeconds`); its id (a FIFO duplicate
    /// within the window: the first one's).
    pub fn send(
        &self,
        url: &str,
        body: &str,
        group: Option<&str>,
        deduplication_id: Option<&str>,
        message_attributes: BTreeMap<String, MessageAttribute>,
        delay: Duration,
    ) -> Result<String, SqsError> {
        if body.is_empty() {
            return Err(SqsError::MissingParameter("MessageBody is empty".into()));
        }
        let now = Instant::now();
        let mut state = self.state.lock().unwrap();
        let index = state.index(url)?;
        state.next_message += 1;
        let id = format!("sim-{:08}", state.next_message);
        let queue = &mut state.queues[index];
        let deduplication_id = if queue.spec.fifo {
            if group.is_none() {
                return Err(SqsError::MissingParameter(
                    "a FIFO queue needs MessageGroupId".into(),
                ));
            }
            let key = match deduplication_id {
                Some(id) => id.to_owned(),
                None if queue.spec.content_based_deduplication => body.to_owned(),
                None => {
                    return Err(SqsError::InvalidParameterValue(
                        "no MessageDeduplicationId and no content-based deduplication".into(),
                    ))
                }
            };
            queue
                .deduplication
                .retain(|_, (_, at)| now.duration_since(*at) < DEDUPLICATION_WINDOW);
            if let Some((first, _)) = queue.deduplication.get(&key) {
                return Ok(first.clone());
            }
            queue.deduplication.insert(key, (id.clone(), now));
            deduplication_id.map(str::to_owned)
        } else {
            None
        };
        queue.messages.push(Message {
            id: id.clone(),
            body: body.to_owned(),
            group: group.map(str::to_owned),
            deduplication_id,
            message_attributes,
            sent_at_ms: epoch_ms(),
            first_receive_ms: None,
            receive_count: 0,
            visible_at: now + delay,
            receipt: None,
            dead_letter_source_arn: None,
        });
        Ok(id)
    }

    /// A plain message, without attributes (a FIFO queue: in `group`).
    pub fn send_body(
        &self,
        url: &str,
        body: &str,
        group: Option<&str>,
    ) -> Result<String, SqsError> {
        self.send(url, body, group, None, BTreeMap::new(), Duration::ZERO)
    }

    /// Receives up to `max` visible messages, oldest first, each then invisible for
    /// `visibility` (default: the queue's visibility timeout) with its receive count raised.
    /// A message already received `maxReceiveCount` times is moved to the dead-letter
    /// queue instead. In a FIFO queue a group is skipped while its first message is in
    /// flight.
    pub fn receive(
        &self,
        url: &str,
        max: usize,
        visibility: Option<Duration>,
    ) -> Result<Vec<Received>, SqsError> {
        let now = Instant::now();
        let now_ms = epoch_ms();
        let mut state = self.state.lock().unwrap();
        let state = &mut *state;
        let index = state.index(url)?;
        let spec = state.queues[index].spec.clone();
        let visibility = visibility.unwrap_or(spec.visibility_timeout);
        let target = match &spec.redrive {
            Some(redrive) => Some(state.index_by_arn(&redrive.dead_letter_target_arn)?),
            None => None,
        };
        let source_arn = state.queues[index].arn.clone();
        let name = state.queues[index].name.clone();
        let mut moved = Vec::new();
        let mut received = Vec::new();
        let mut blocked: HashSet<String> = HashSet::new();
        let messages = &mut state.queues[index].messages;
        let mut at = 0;
        while at < messages.len() && received.len() < max {
            let message = &mut messages[at];
            let group = message.group.clone().filter(|_| spec.fifo);
            if group.as_ref().is_some_and(|g| blocked.contains(g)) {
                at += 1;
                continue;
            }
            if message.visible_at > now {
                if let Some(group) = group {
                    blocked.insert(group);
                }
                at += 1;
                continue;
            }
            if spec
                .redrive
                .as_ref()
                .is_some_and(|r| message.receive_count >= r.max_receive_count)
            {
                moved.push(messages.remove(at));
                continue;
            }
            message.receive_count += 1;
            message.first_receive_ms.get_or_insert(now_ms);
            message.visible_at = now + visibility;
            state.next_receipt += 1;
            let receipt = format!("{name}#{}#{}", message.id, state.next_receipt);
            message.receipt = Some(receipt.clone());
            received.push(message.received(receipt));
            at += 1;
        }
        if let Some(target) = target {
            for mut message in moved {
                message.receive_count = 0;
                message.first_receive_ms = None;
                message.visible_at = now;
                message.receipt = None;
                message.dead_letter_source_arn = Some(source_arn.clone());
                state.queues[target].messages.push(message);
            }
        }
        Ok(received)
    }

    /// Deletes the message `receipt` names. A receipt handle of an earlier receive is
    /// accepted and deletes nothing, as in SQS: false then.
    pub fn delete(&self, url: &str, receipt: &str) -> Result<bool, SqsError> {
        let mut state = self.state.lock().unwrap();
        let index = state.index(url)?;
        let queue = &mut state.queues[index];
        if let Some(at) = queue
            .messages
            .iter()
            .position(|m| m.receipt.as_deref() == Some(receipt))
        {
            queue.messages.remove(at);
            return Ok(true);
        }
        if !receipt.starts_with(&format!("{}#", queue.name)) {
            return Err(SqsError::ReceiptHandleIsInvalid(format!(
                "{receipt:?} is not a receipt handle of this queue"
            )));
        }
        state.stale_deletes += 1;
        Ok(false)
    }

    /// Makes the message `receipt` names visible again `timeout` from now.
    pub fn change_visibility(
        &self,
        url: &str,
        receipt: &str,
        timeout: Duration,
    ) -> Result<(), SqsError> {
        if timeout > MAX_VISIBILITY {
            return Err(SqsError::InvalidParameterValue(format!(
                "visibility timeout {timeout:?} is over 12 hours"
            )));
        }
        let now = Instant::now();
        let mut state = self.state.lock().unwrap();
        let index = state.index(url)?;
        let message = state.queues[index]
            .messages
            .iter_mut()
            .find(|m| m.receipt.as_deref() == Some(receipt))
            .ok_or_else(|| {
                SqsError::ReceiptHandleIsInvalid(format!(
                    "{receipt:?} is not the latest receipt handle of a message in the queue"
                ))
            })?;
        if message.visible_at <= now {
            return Err(SqsError::MessageNotInflight(format!(
                "message {} is not in flight",
                message.id
            )));
        }
        message.visible_at = now + timeout;
        Ok(())
    }

    pub fn counts(&self, url: &str) -> Result<Counts, SqsError> {
        let now = Instant::now();
        let state = self.state.lock().unwrap();
        let queue = &state.queues[state.index(url)?];
        let in_flight = queue.messages.iter().filter(|m| m.visible_at > now).count();
        Ok(Counts {
            visible: queue.messages.len() - in_flight,
            in_flight,
        })
    }

    /// Every message in the queue, in flight or not, without receiving any.
    pub fn messages(&self, url: &str) -> Result<Vec<Stored>, SqsError> {
        let now = Instant::now();
        let state = self.state.lock().unwrap();
        let queue = &state.queues[state.index(url)?];
        Ok(queue.messages.iter().map(|m| m.stored(now)).collect())
    }

    /// Counts a request to the SQS API (`sqs_endpoint`).
    pub(super) fn count_request(&self, operation: &str) {
        let mut state = self.state.lock().unwrap();
        *state.requests.entry(operation.to_owned()).or_default() += 1;
    }

    /// Requests served over the SQS API so far, by operation.
    pub fn requests(&self) -> BTreeMap<String, usize> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Deletes that named an earlier receive's handle and so deleted nothing.
    pub fn stale_deletes(&self) -> usize {
        self.state.lock().unwrap().stale_deletes
    }
}

impl State {
    /// The queue a URL names; like SQS, only its last path segment counts.
    fn index(&self, url: &str) -> Result<usize, SqsError> {
        let name = url.rsplit('/').next().unwrap_or_default();
        self.queues
            .iter()
            .position(|q| q.name == name)
            .ok_or_else(|| SqsError::NonExistentQueue(format!("no queue at {url}")))
    }

    fn index_by_arn(&self, arn: &str) -> Result<usize, SqsError> {
        self.queues
            .iter()
            .position(|q| q.arn == arn)
            .ok_or_else(|| SqsError::NonExistentQueue(format!("no queue with ARN {arn}")))
    }
}
