//! The journal index: one `SYNC_TABLE` item (`pk = journals`) whose string set lists the
//! discounts that recorded a journal. The scheduled reconciliation reads it instead of
//! scanning the table. An entry is added (`ADD`, which never conflicts) before each
//! journal is written, and removed only by a transaction that checks, on the discount's
//! own item, that no journal and no live lease is left.

use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, TransactWriteItem, Update};

use super::{
    discount_key, error, number, string, DynamoStore, JOURNAL, LEASE_EXPIRES_AT_MS, LEASE_TOKEN,
};
use crate::domain::DiscountId;
use crate::ports::{JournalIndex, StoreFailure};

const INDEX_KEY: &str = "journals";
const DISCOUNTS: &str = "discounts";

impl DynamoStore {
    pub(super) async fn list_in_journal_index(
        &self,
        discount: DiscountId,
    ) -> Result<(), StoreFailure> {
        self.client
            .update_item()
            .table_name(&self.sync_table)
            .key("pk", string(INDEX_KEY))
            .update_expression("ADD #discounts :discount")
            .expression_attribute_names("#discounts", DISCOUNTS)
            .expression_attribute_values(
                ":discount",
                AttributeValue::Ss(vec![discount.to_string()]),
            )
            .send()
            .await
            .map_err(|err| error::failure("UpdateItem(journal index)", &self.sync_table, err))?;
        Ok(())
    }
}

impl JournalIndex for DynamoStore {
    async fn journaled_discounts(&self) -> Result<Vec<DiscountId>, StoreFailure> {
        let output = self
            .client
            .get_item()
            .table_name(&self.sync_table)
            .key("pk", string(INDEX_KEY))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| error::failure("GetItem(journal index)", &self.sync_table, err))?;
        let listed = output
            .item()
            .and_then(|item| item.get(DISCOUNTS))
            .and_then(|set| set.as_ss().ok())
            .cloned()
            .unwrap_or_default();
        Ok(listed
            .iter()
            .filter_map(|raw| match DiscountId::parse(raw) {
                Ok(discount) => Some(discount),
                Err(_) => {
                    tracing::warn!(entry = %raw, "journal index entry is not a discount id; ignored");
                    None
                }
            })
            .collect())
    }

    async fn forget_if_settled(
        &self,
        discount: DiscountId,
        now_ms: u64,
    ) -> Result<bool, StoreFailure> {
        let settled = ConditionCheck::builder()
            .table_name(&self.sync_table)
            .key("pk", discount_key(discount))
            .condition_expression(
                "attribute_not_exists(#journal) AND (attribute_not_exists(#owner) OR #until < :now)",
            )
            .expression_attribute_names("#journal", JOURNAL)
            .expression_attribute_names("#owner", LEASE_TOKEN)
            .expression_attribute_names("#until", LEASE_EXPIRES_AT_MS)
            .expression_attribute_values(":now", number(now_ms))
            .build()
            .expect("table, key and condition are set");
        let forget = Update::builder()
            .table_name(&self.sync_table)
            .key("pk", string(INDEX_KEY))
            .update_expression("DELETE #discounts :discount")
            .expression_attribute_names("#discounts", DISCOUNTS)
            .expression_attribute_values(
                ":discount",
                AttributeValue::Ss(vec![discount.to_string()]),
            )
            .build()
            .expect("table, key and update expression are set");
        let result = self
            .client
            .transact_write_items()
            .transact_items(
                TransactWriteItem::builder()
                    .condition_check(settled)
                    .build(),
            )
            .transact_items(TransactWriteItem::builder().update(forget).build())
            .send()
            .await;
        let Err(err) = result else {
            return Ok(true);
        };
        let reasons = error::cancellation_reasons(&err);
        if reasons.first().and_then(Option::as_deref) == Some("ConditionalCheckFailed") {
            return Ok(false);
        }
        Err(error::transaction_failure(
            "TransactWriteItems(forget journal)",
            &self.sync_table,
            &reasons,
            err,
        ))
    }
}
