//! The simulated SQS over SQS's JSON protocol (HTTP/1.1, `X-Amz-Target: AmazonSQS.<Op>`),
//! enough of it for the AWS SDK clients of the function and of the tests: CreateQueue,
//! GetQueueUrl, GetQueueAttributes, SendMessage(Batch), ReceiveMessage, DeleteMessage(Batch)
//! and ChangeMessageVisibility(Batch). Errors carry SQS's codes (`x-amzn-query-error`).

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::simulated_sqs::{
    MessageAttribute, QueueSpec, Received, Redrive, SimulatedSqs, SqsError,
};

pub(super) async fn serve(listener: TcpListener, sqs: Weak<SimulatedSqs>) {
    while let Ok((stream, _)) = listener.accept().await {
        if sqs.strong_count() == 0 {
            return;
        }
        tokio::spawn(connection(stream, sqs.clone()));
    }
}

/// One keep-alive connection: requests one after the other.
async fn connection(stream: TcpStream, sqs: Weak<SimulatedSqs>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).await? == 0 {
            return Ok(());
        }
        if request_line.trim().is_empty() {
            continue;
        }
        let mut length = 0usize;
        let mut target = String::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).await? == 0 {
                return Ok(());
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "x-amz-target" => target = value.trim().to_owned(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await?;
        let Some(sqs) = sqs.upgrade() else {
            return Ok(());
        };
        let input: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let operation = target.strip_prefix("AmazonSQS.").unwrap_or(&target);
        sqs.count_request(operation);
        let (status, extra, payload) = match handle(&sqs, operation, &input) {
            Ok(output) => ("200 OK", String::new(), output),
            Err(err) => (
                "400 Bad Request",
                format!("x-amzn-query-error: {};Sender\r\n", err.code()),
                json!({
                    "__type": format!("com.amazonaws.sqs#{}", err.type_name()),
                    "message": err.message(),
                }),
            ),
        };
        let payload = payload.to_string();
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/x-amz-json-1.0\r\n\
             content-length: {}\r\nx-amzn-requestid: {}\r\n{extra}\r\n",
            payload.len(),
            uuid::Uuid::new_v4()
        );
        // One write: a head and a body in two small writes would wait out Nagle's
        // algorithm against the client's delayed acknowledgement (some 40 ms a request).
        write.write_all((head + &payload).as_bytes()).await?;
    }
}

fn handle(sqs: &Arc<SimulatedSqs>, operation: &str, input: &Value) -> Result<Value, SqsError> {
    let text = |name: &str| -> Result<&str, SqsError> {
        input[name]
            .as_str()
            .ok_or_else(|| SqsError::MissingParameter(format!("{operation} needs {name}")))
    };
    let seconds = |value: &Value| -> Option<Duration> {
        let n = value
            .as_u64()
            .or_else(|| value.as_str().and_then(|s| s.parse().ok()))?;
        Some(Duration::from_secs(n))
    };
    match operation {
        "CreateQueue" => {
            let name = text("QueueName")?;
            let attributes = &input["Attributes"];
            let spec = QueueSpec {
                fifo: attributes["FifoQueue"].as_str() == Some("true"),
                content_based_deduplication: attributes["ContentBasedDeduplication"].as_str()
                    == Some("true"),
                visibility_timeout: seconds(&attributes["VisibilityTimeout"])
                    .unwrap_or(QueueSpec::default().visibility_timeout),
                redrive: match attributes["RedrivePolicy"].as_str() {
                    Some(policy) => Some(redrive(policy)?),
                    None => None,
                },
            };
            Ok(json!({ "QueueUrl": sqs.create_queue(name, spec)? }))
        }
        "GetQueueUrl" => Ok(json!({ "QueueUrl": sqs.queue_url(text("QueueName")?)? })),
        "GetQueueAttributes" => {
            let url = text("QueueUrl")?;
            let spec = sqs.spec(url)?;
            let counts = sqs.counts(url)?;
            let mut all = Map::new();
            all.insert("QueueArn".into(), sqs.queue_arn(url)?.into());
            all.insert(
                "VisibilityTimeout".into(),
                spec.visibility_timeout.as_secs().to_string().into(),
            );
            all.insert(
                "ApproximateNumberOfMessages".into(),
                counts.visible.to_string().into(),
            );
            all.insert(
                "ApproximateNumberOfMessagesNotVisible".into(),
                counts.in_flight.to_string().into(),
            );
            all.insert("ApproximateNumberOfMessagesDelayed".into(), "0".into());
            if let Some(redrive) = &spec.redrive {
                all.insert("RedrivePolicy".into(), redrive.to_json().into());
            }
            if spec.fifo {
                all.insert("FifoQueue".into(), "true".into());
            }
            let names: Vec<&str> = input["AttributeNames"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if !names.contains(&"All") {
                all.retain(|name, _| names.contains(&name.as_str()));
            }
            Ok(json!({ "Attributes": all }))
        }
        "SendMessage" => {
            let id = send(sqs, text("QueueUrl")?, input)?;
            Ok(json!({ "MessageId": id }))
        }
        "SendMessageBatch" => {
            let url = text("QueueUrl")?;
            batch(input, |entry| {
                send(sqs, url, entry).map(|id| json!({ "MessageId": id }))
            })
        }
        "ReceiveMessage" => {
            let max = input["MaxNumberOfMessages"].as_u64().unwrap_or(1);
            if !(1..=10).contains(&max) {
                return Err(SqsError::InvalidParameterValue(format!(
                    "MaxNumberOfMessages {max} is not between 1 and 10"
                )));
            }
            let received = sqs.receive(
                text("QueueUrl")?,
                max as usize,
                seconds(&input["VisibilityTimeout"]),
            )?;
            Ok(json!({ "Messages": received.iter().map(message_json).collect::<Vec<_>>() }))
        }
        "DeleteMessage" => {
            sqs.delete(text("QueueUrl")?, text("ReceiptHandle")?)?;
            Ok(json!({}))
        }
        "DeleteMessageBatch" => {
            let url = text("QueueUrl")?;
            batch(input, |entry| {
                let receipt = entry["ReceiptHandle"].as_str().unwrap_or_default();
                sqs.delete(url, receipt).map(|_| json!({}))
            })
        }
        "ChangeMessageVisibility" => {
            change_visibility(sqs, text("QueueUrl")?, input)?;
            Ok(json!({}))
        }
        "ChangeMessageVisibilityBatch" => {
            let url = text("QueueUrl")?;
            batch(input, |entry| {
                change_visibility(sqs, url, entry).map(|_| json!({}))
            })
        }
        other => Err(SqsError::UnsupportedOperation(format!(
            "the simulated SQS does not implement {other:?}"
        ))),
    }
}

/// A batch request's entries, each on its own: `Successful` with its id and what `each`
/// answered, or `Failed` with its error's code.
fn batch(
    input: &Value,
    mut each: impl FnMut(&Value) -> Result<Value, SqsError>,
) -> Result<Value, SqsError> {
    let mut successful = Vec::new();
    let mut failed = Vec::new();
    for entry in input["Entries"].as_array().into_iter().flatten() {
        let id = entry["Id"].as_str().unwrap_or_default();
        match each(entry) {
            Ok(mut answer) => {
                answer["Id"] = id.into();
                successful.push(answer);
            }
            Err(err) => failed.push(json!({
                "Id": id,
                "Code": err.code(),
                "Message": err.message(),
                "SenderFault": true,
            })),
        }
    }
    Ok(json!({ "Successful": successful, "Failed": failed }))
}

/// `SendMessage`, or one entry of `SendMessageBatch`: the new message's id.
fn send(sqs: &SimulatedSqs, url: &str, input: &Value) -> Result<String, SqsError> {
    let mut attributes = BTreeMap::new();
    if let Some(given) = input["MessageAttributes"].as_object() {
        for (name, value) in given {
            attributes.insert(
                name.clone(),
                MessageAttribute {
                    data_type: value["DataType"].as_str().unwrap_or("String").to_owned(),
                    string_value: value["StringValue"].as_str().map(str::to_owned),
                },
            );
        }
    }
    let body = input["MessageBody"]
        .as_str()
        .ok_or_else(|| SqsError::MissingParameter("SendMessage needs MessageBody".into()))?;
    sqs.send(
        url,
        body,
        input["MessageGroupId"].as_str(),
        input["MessageDeduplicationId"].as_str(),
        attributes,
        Duration::from_secs(input["DelaySeconds"].as_u64().unwrap_or(0)),
    )
}

/// `ChangeMessageVisibility`, or one entry of `ChangeMessageVisibilityBatch`.
fn change_visibility(sqs: &SimulatedSqs, url: &str, input: &Value) -> Result<(), SqsError> {
    let missing =
        |name: &str| SqsError::MissingParameter(format!("ChangeMessageVisibility needs {name}"));
    let timeout = input["VisibilityTimeout"]
        .as_u64()
        .ok_or_else(|| missing("VisibilityTimeout"))?;
    let receipt = input["ReceiptHandle"]
        .as_str()
        .ok_or_else(|| missing("ReceiptHandle"))?;
    sqs.change_visibility(url, receipt, Duration::from_secs(timeout))
}

fn redrive(policy: &str) -> Result<Redrive, SqsError> {
    let invalid = || SqsError::InvalidParameterValue(format!("RedrivePolicy {policy:?}"));
    let policy: Value = serde_json::from_str(policy).map_err(|_| invalid())?;
    let max = &policy["maxReceiveCount"];
    Ok(Redrive {
        dead_letter_target_arn: policy["deadLetterTargetArn"]
            .as_str()
            .ok_or_else(invalid)?
            .to_owned(),
        max_receive_count: max
            .as_u64()
            .or_else(|| max.as_str().and_then(|s| s.parse().ok()))
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(invalid)?,
    })
}

fn message_json(message: &Received) -> Value {
    let attributes: Map<String, Value> = message
        .attributes
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.clone())))
        .collect();
    let message_attributes: Map<String, Value> = message
        .message_attributes
        .iter()
        .map(|(name, value)| {
            (
                name.clone(),
                json!({ "DataType": value.data_type, "StringValue": value.string_value }),
            )
        })
        .collect();
    json!({
        "MessageId": message.message_id,
        "ReceiptHandle": message.receipt_handle,
        "Body": message.body,
        "Attributes": attributes,
        "MessageAttributes": message_attributes,
    })
}
