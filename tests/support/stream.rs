//! The orders table's DynamoDB stream in moto (which implements `dynamodbstreams`), read
//! through the Streams API and handed to the function as Lambda's DynamoDB event source
//! hands it: `{"Records": [...]}`, each record with the stream's `eventSourceARN`.

use std::time::Duration;

use aws_sdk_dynamodb::types::{StreamSpecification, StreamViewType};
use serde_json::{json, Value};

use super::world::{moto_endpoint, World};

/// Lambda's default batch size for a DynamoDB event source.
pub const BATCH_SIZE: usize = 100;

pub struct OrdersStream {
    pub arn: String,
    http: reqwest::Client,
    /// Where the next read starts, per shard.
    iterators: Vec<(String, Option<String>)>,
    /// Streams API requests sent (DescribeStream, GetShardIterator, GetRecords).
    pub requests: usize,
}

impl OrdersStream {
    /// Turns on the stream of `world`'s orders table with `view_type`.
    pub async fn enable(world: &World, view_type: StreamViewType) -> OrdersStream {
        let table = world
            .dynamo
            .update_table()
            .table_name(&world.tables.orders)
            .stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(view_type)
                    .build()
                    .expect("enabled is set"),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("UpdateTable(stream) in moto: {e:?}"));
        let arn = table
            .table_description
            .and_then(|t| t.latest_stream_arn)
            .expect("moto gives the stream an ARN");
        OrdersStream {
            arn,
            http: reqwest::Client::new(),
            iterators: Vec::new(),
            requests: 0,
        }
    }

    async fn call(&mut self, action: &str, body: Value) -> Value {
        self.requests += 1;
        // moto does not check signatures; it routes by the credential scope's service
        // (dynamodb) and the target's prefix.
        let response = self
            .http
            .post(moto_endpoint())
            .header("content-type", "application/x-amz-json-1.0")
            .header("x-amz-target", format!("DynamoDBStreams_20120810.{action}"))
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=testing/20261201/us-east-1/dynamodb/aws4_request, \
                 SignedHeaders=host, Signature=0",
            )
            .body(body.to_string())
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{action} on moto's stream: {e}"));
        let status = response.status();
        let text = response.text().await.expect("a body");
        assert!(status.is_success(), "{action}: {status} {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{action}: {e}: {text}"))
    }

    /// Every record written since the last read (from the start of the stream at first).
    pub async fn read_new(&mut self) -> Vec<Value> {
        if self.iterators.is_empty() {
            let description = self
                .call("DescribeStream", json!({"StreamArn": self.arn}))
                .await;
            let shards: Vec<String> = description["StreamDescription"]["Shards"]
                .as_array()
                .expect("shards")
                .iter()
                .map(|s| s["ShardId"].as_str().expect("a shard id").to_owned())
                .collect();
            for shard in shards {
                let iterator = self
                    .call(
                        "GetShardIterator",
                        json!({"StreamArn": self.arn, "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON"}),
                    )
                    .await["ShardIterator"]
                    .as_str()
                    .map(str::to_owned);
                self.iterators.push((shard, iterator));
            }
        }
        let mut records = Vec::new();
        for index in 0..self.iterators.len() {
            while let Some(iterator) = self.iterators[index].1.clone() {
                let page = self
                    .call(
                        "GetRecords",
                        json!({"ShardIterator": iterator, "Limit": 1000}),
                    )
                    .await;
                let found = page["Records"].as_array().cloned().unwrap_or_default();
                self.iterators[index].1 = page["NextShardIterator"].as_str().map(str::to_owned);
                if found.is_empty() {
                    break;
                }
                records.extend(found.into_iter().map(|mut record| {
                    record["eventSourceARN"] = json!(self.arn);
                    record
                }));
            }
        }
        records
    }
}

/// A DynamoDB Streams event of `records`, as the Runtime API hands it to the function.
pub fn stream_event(records: &[Value]) -> Value {
    json!({ "Records": records })
}

/// The sequence numbers a partial batch response lists; `None` if it is not one.
pub fn failed_sequence_numbers(response: &Value) -> Option<Vec<String>> {
    response["batchItemFailures"].as_array().map(|failures| {
        failures
            .iter()
            .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_owned))
            .collect()
    })
}
