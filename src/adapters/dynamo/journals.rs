//! Finding the journals: one consistent Scan of `SYNC_TABLE` for items that hold one; and
//! reading one discount's journal without taking its lease (shadow mode).
//! The table has one small item per discount synced within `IDLE_RETENTION` (TTL deletes
//! the idle ones), so a scheduled scan stays cheap, and no sync step pays an extra write to
//! list its journal somewhere.

use super::journal_codec::decode_journal;
use super::{
    discount_key, error, DynamoStore, DISCOUNT_KEY_PREFIX, JOURNAL, LEASE_EXPIRES_AT_MS,
    LEASE_TOKEN,
};
use crate::domain::DiscountId;
use crate::ports::{JournalIndex, PendingJournal, StoreFailure};

impl JournalIndex for DynamoStore {
    async fn journaled_discounts(&self) -> Result<Vec<DiscountId>, StoreFailure> {
        let mut discounts = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.sync_table)
                .consistent_read(true)
                .filter_expression("attribute_exists(#journal)")
                .projection_expression("pk")
                .expression_attribute_names("#journal", JOURNAL)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|err| error::failure("Scan(journals)", &self.sync_table, err))?;
            for item in page.items() {
                let Some(key) = item.get("pk").and_then(|pk| pk.as_s().ok()) else {
                    continue;
                };
                match key.strip_prefix(DISCOUNT_KEY_PREFIX).map(DiscountId::parse) {
                    Some(Ok(discount)) => discounts.push(discount),
                    _ => {
                        tracing::warn!(pk = %key, "an item with a journal is not a discount's; ignored")
                    }
                }
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(discounts);
            }
        }
    }

    async fn pending_journal(
        &self,
        discount: DiscountId,
    ) -> Result<Option<PendingJournal>, StoreFailure> {
        let output = self
            .client
            .get_item()
            .table_name(&self.sync_table)
            .key("pk", discount_key(discount))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| error::failure("GetItem(journal)", &self.sync_table, err))?;
        let Some(item) = output.item else {
            return Ok(None);
        };
        let Some(journal) = item.get(JOURNAL) else {
            return Ok(None);
        };
        let lease_expires_at_ms = item
            .contains_key(LEASE_TOKEN)
            .then(|| item.get(LEASE_EXPIRES_AT_MS)?.as_n().ok()?.parse().ok())
            .flatten();
        Ok(Some(PendingJournal {
            journal: decode_journal(discount, journal)?,
            lease_expires_at_ms,
        }))
    }
}
