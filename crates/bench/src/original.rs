//! The original TypeScript algorithm (`../shared/reference/original-typescript-sync.md`),
//! ported faithfully as the baseline, against the same tables and Polar double:
//! - each message of a batch in turn, none concurrently;
//! - per message: read the order; if not synced, GET the discount, then PATCH
//!   `max_redemptions` − 1, or DELETE it at the last use (`<= 1`); any Polar 404 is
//!   `already_deleted`;
//! - `markSynced`: read the order again, then write it;
//! - `syncWithRetry`: 3 attempts, sleeping 2 s then 4 s, whatever the deadline.
//!
//! The original kept its flags in a JSON `metadata` column; here they are the contract's
//! top-level attributes, one `UpdateItem` as the original's one `update`. Its handler was
//! not part of the reference; this one reports the messages that failed in
//! `batchItemFailures`, as the contract requires.
//!
//! Bench tooling only: it never ships in the Lambda binary.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_sdk_dynamodb::primitives::{DateTime, DateTimeFormat};
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::Value;

const MAX_ATTEMPTS: u32 = 3;

pub struct OriginalSync {
    dynamo: aws_sdk_dynamodb::Client,
    orders_table: String,
    polar: reqwest::Client,
    polar_api_url: String,
    token: String,
}

/// `{ success, action }` of the original.
#[derive(Debug)]
struct Synced {
    success: bool,
}

#[derive(Debug)]
enum SyncError {
    Polar {
        status: u16,
    },
    /// No answer from Polar (connection failed, cut).
    Transport,
    Dynamo,
}

impl OriginalSync {
    pub fn new(aws: &SdkConfig, orders_table: &str, polar_api_url: &str, token: &str) -> Self {
        OriginalSync {
            dynamo: aws_sdk_dynamodb::Client::new(aws),
            orders_table: orders_table.to_owned(),
            polar: reqwest::Client::new(),
            polar_api_url: polar_api_url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        }
    }

    /// One invocation: the messages in turn; returns the ids of those that failed.
    pub async fn handle(&self, messages: &[(String, String)]) -> Vec<String> {
        let mut failed = Vec::new();
        for (message_id, body) in messages {
            let Ok(body) = serde_json::from_str::<Value>(body) else {
                failed.push(message_id.clone());
                continue;
            };
            let field = |name: &str| body.get(name).and_then(Value::as_str).unwrap_or_default();
            let result = self
                .sync_with_retry(field("orderId"), field("discountId"))
                .await;
            if !matches!(result, Ok(Synced { success: true })) {
                failed.push(message_id.clone());
            }
        }
        failed
    }

    async fn sync_with_retry(
        &self,
        order_id: &str,
        discount_id: &str,
    ) -> Result<Synced, SyncError> {
        let mut attempt = 1;
        loop {
            match self.sync(order_id, discount_id).await {
                Ok(synced) => return Ok(synced),
                Err(error) if attempt >= MAX_ATTEMPTS => return Err(error),
                Err(_) => {
                    tokio::time::sleep(Duration::from_secs(2u64.pow(attempt))).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn sync(&self, order_id: &str, discount_id: &str) -> Result<Synced, SyncError> {
        let Some(order) = self.read_order(order_id).await? else {
            return Ok(Synced { success: false });
        };
        if order
            .get("polarDiscountSynced")
            .and_then(|v| v.as_bool().ok())
            .copied()
            == Some(true)
        {
            return Ok(Synced { success: true });
        }
        match self.apply_to_polar(discount_id).await {
            Ok(action) => self.mark_synced(order_id, action).await?,
            Err(SyncError::Polar { status: 404 }) => {
                self.mark_synced(order_id, "already_deleted").await?
            }
            Err(error) => return Err(error),
        }
        Ok(Synced { success: true })
    }

    /// GET, then PATCH `max − 1` or DELETE at the last use; the action to record.
    async fn apply_to_polar(&self, discount_id: &str) -> Result<&'static str, SyncError> {
        let url = format!("{}/discounts/{discount_id}", self.polar_api_url);
        let discount = self.polar_json(self.polar.get(&url)).await?;
        let Some(current_max) = discount.get("max_redemptions").and_then(Value::as_i64) else {
            return Ok("skipped_unlimited");
        };
        if current_max <= 1 {
            self.polar_json(self.polar.delete(&url)).await?;
            Ok("deleted")
        } else {
            let update = serde_json::json!({ "max_redemptions": current_max - 1 });
            self.polar_json(
                self.polar
                    .patch(&url)
                    .header("content-type", "application/json")
                    .body(update.to_string()),
            )
            .await?;
            Ok("decremented")
        }
    }

    async fn polar_json(&self, request: reqwest::RequestBuilder) -> Result<Value, SyncError> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|_| SyncError::Transport)?;
        let status = response.status();
        if !status.is_success() {
            return Err(SyncError::Polar {
                status: status.as_u16(),
            });
        }
        let body = response.bytes().await.map_err(|_| SyncError::Transport)?;
        Ok(serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn read_order(
        &self,
        order_id: &str,
    ) -> Result<Option<HashMap<String, AttributeValue>>, SyncError> {
        let output = self
            .dynamo
            .get_item()
            .table_name(&self.orders_table)
            .key("id", AttributeValue::S(order_id.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|_| SyncError::Dynamo)?;
        Ok(output.item)
    }

    /// The original's `markSynced`: read the order again, then write the flags.
    async fn mark_synced(&self, order_id: &str, action: &str) -> Result<(), SyncError> {
        let _reread = self.read_order(order_id).await?;
        let now = DateTime::from(SystemTime::now())
            .fmt(DateTimeFormat::DateTime)
            .unwrap_or_default();
        self.dynamo
            .update_item()
            .table_name(&self.orders_table)
            .key("id", AttributeValue::S(order_id.to_owned()))
            .update_expression(
                "SET polarDiscountSynced = :synced, polarDiscountSyncAction = :action, \
                 polarDiscountSyncedAt = :at",
            )
            .expression_attribute_values(":synced", AttributeValue::Bool(true))
            .expression_attribute_values(":action", AttributeValue::S(action.to_owned()))
            .expression_attribute_values(":at", AttributeValue::S(now))
            .send()
            .await
            .map_err(|_| SyncError::Dynamo)?;
        Ok(())
    }
}
