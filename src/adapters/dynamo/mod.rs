//! DynamoDB behind the ports: the orders table as the `OrderLedger`, and `SYNC_TABLE`
//! (one item per discount: lease, intent journal, TTL) as the `Coordination`.

mod coordination;
mod error;
mod journal_codec;
mod journals;
mod orders;
mod transactions;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, Update};
use aws_sdk_dynamodb::Client;

use self::transactions::{NotApplied, Transactions};
use crate::domain::DiscountId;
use crate::ports::StoreFailure;

/// Order attributes of the contract (kept from the original implementation).
const SYNCED: &str = "polarDiscountSynced";
const ACTION: &str = "polarDiscountSyncAction";
const SYNCED_AT: &str = "polarDiscountSyncedAt";
/// The lease that last claimed an unsynced order: shows who was counting it.
const CLAIM: &str = "polarDiscountSyncClaim";
/// Written by the checkout service.
const DISCOUNT_ID: &str = "discountId";
const DISCOUNT_CODE: &str = "discountCode";

/// `SYNC_TABLE` attributes.
const LEASE_TOKEN: &str = "leaseToken";
const LEASE_EXPIRES_AT_MS: &str = "leaseExpiresAtMs";
/// When the lease's holder set out to take it (epoch ms): the start of its step.
const LEASE_TAKEN_AT_MS: &str = "leaseTakenAtMs";
/// How long the last step that released the lease took: a waiter's estimate of the next.
const LAST_STEP_MS: &str = "lastStepMs";
const JOURNAL: &str = "journal";
/// Orders waiters handed to the lease's holder: a string set of `["<order id>","<code>"]`.
const HANDED_OFF: &str = "handedOff";
/// A discount's item is keyed `discount#<id>`.
const DISCOUNT_KEY_PREFIX: &str = "discount#";
const TTL: &str = "expiresAt";
/// An idle discount item is deleted by TTL this long after its last sync. Items that hold
/// a lease or a journal have no TTL, so a pending write is never forgotten.
const IDLE_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

const NOT_SYNCED: &str = "(attribute_not_exists(#synced) OR #synced <> :true)";

#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    transactions: Transactions,
    orders_table: String,
    sync_table: String,
}

impl DynamoStore {
    pub fn new(
        client: Client,
        orders_table: impl Into<String>,
        sync_table: impl Into<String>,
    ) -> Self {
        Self {
            transactions: Transactions::new(client.clone()),
            client,
            orders_table: orders_table.into(),
            sync_table: sync_table.into(),
        }
    }

    /// An update built for a transaction, sent on its own as an `UpdateItem`.
    fn update_item(&self, update: &Update) -> UpdateItemFluentBuilder {
        transactions::update_item(&self.client, update)
    }

    /// Updates in one all-or-nothing transaction, sent with the container's other
    /// transactions of the moment.
    async fn transact(&self, updates: impl IntoIterator<Item = Update>) -> Result<(), NotApplied> {
        self.transactions.apply(updates.into_iter().collect()).await
    }

    fn update_discount(&self, discount: DiscountId) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.sync_table)
            .key("pk", discount_key(discount))
    }

    fn order_failure(
        &self,
        operation: &'static str,
        err: SdkError<UpdateItemError>,
    ) -> StoreFailure {
        error::failure(operation, &self.orders_table, err)
    }

    fn sync_failure(
        &self,
        operation: &'static str,
        err: SdkError<UpdateItemError>,
    ) -> StoreFailure {
        error::failure(operation, &self.sync_table, err)
    }
}

/// The item a conditional `UpdateItem` found when its condition refused it (asked for with
/// `ReturnValuesOnConditionCheckFailure::AllOld`); any other failure as `failure`
/// classifies it.
fn refused_item(
    err: SdkError<UpdateItemError>,
    failure: impl FnOnce(SdkError<UpdateItemError>) -> StoreFailure,
) -> Result<Option<HashMap<String, AttributeValue>>, StoreFailure> {
    match err {
        SdkError::ServiceError(service)
            if service.err().is_conditional_check_failed_exception() =>
        {
            let UpdateItemError::ConditionalCheckFailedException(refused) = service.into_err()
            else {
                unreachable!("checked just above")
            };
            Ok(refused.item)
        }
        err => Err(failure(err)),
    }
}

fn is_condition_failure(err: &SdkError<UpdateItemError>) -> bool {
    matches!(err, SdkError::ServiceError(service) if service.err().is_conditional_check_failed_exception())
}

fn discount_key(discount: DiscountId) -> AttributeValue {
    string(&format!("{DISCOUNT_KEY_PREFIX}{discount}"))
}

fn string(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn number(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn idle_ttl() -> AttributeValue {
    let at = SystemTime::now() + IDLE_RETENTION;
    number(at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}
