//! In-memory ports for fast use-case tests: same semantics as the real adapters,
//! with scripted Polar failures.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::SystemTime;

use super::polar::{Discount, PolarError};
use super::StoreError;
use crate::domain::{DiscountId, OrderId, SyncAction};
use crate::ports::{Claim, ClaimOutcome, Deletion, Discounts, OrderLedger, OrderRecord};

#[derive(Debug, Clone, Default)]
pub struct StoredOrder {
    pub record: Option<OrderRecord>,
    pub synced: Option<SyncAction>,
    pub claim: Option<Claim>,
}

#[derive(Default)]
pub struct InMemoryLedger {
    pub orders: Mutex<HashMap<String, StoredOrder>>,
}

impl InMemoryLedger {
    pub fn with_order(self, id: &str, discount_id: &str, code: &str) -> Self {
        self.orders.lock().unwrap().insert(
            id.to_owned(),
            StoredOrder {
                record: Some(OrderRecord {
                    discount_id: Some(discount_id.to_owned()),
                    discount_code: Some(code.to_owned()),
                }),
                ..StoredOrder::default()
            },
        );
        self
    }

    pub fn action(&self, id: &str) -> Option<SyncAction> {
        self.orders.lock().unwrap().get(id)?.synced
    }
}

impl OrderLedger for InMemoryLedger {
    async fn claim(
        &self,
        order: &OrderId,
        claim: &Claim,
        now_ms: u64,
    ) -> Result<ClaimOutcome, StoreError> {
        let mut orders = self.orders.lock().unwrap();
        let Some(stored) = orders.get_mut(order.as_str()) else {
            return Ok(ClaimOutcome::NotFound);
        };
        let record = stored.record.clone().unwrap_or(OrderRecord {
            discount_id: None,
            discount_code: None,
        });
        if stored.synced.is_some() {
            return Ok(ClaimOutcome::AlreadySynced(record));
        }
        if let Some(held) = &stored.claim {
            if held.expires_at_ms >= now_ms {
                return Ok(ClaimOutcome::HeldElsewhere {
                    expires_at_ms: held.expires_at_ms,
                });
            }
        }
        stored.claim = Some(claim.clone());
        Ok(ClaimOutcome::Claimed(record))
    }

    async fn mark_synced(
        &self,
        order: &OrderId,
        action: SyncAction,
        _at: SystemTime,
    ) -> Result<(), StoreError> {
        let mut orders = self.orders.lock().unwrap();
        let stored = orders.get_mut(order.as_str()).expect("marked orders exist");
        if stored.synced.is_some() {
            return Err(StoreError::AlreadySynced(order.clone()));
        }
        stored.synced = Some(action);
        stored.claim = None;
        Ok(())
    }

    async fn release(&self, order: &OrderId, claim: &Claim) -> Result<(), StoreError> {
        let mut orders = self.orders.lock().unwrap();
        if let Some(stored) = orders.get_mut(order.as_str()) {
            if stored.claim.as_ref() == Some(claim) {
                stored.claim = None;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Get,
    Update(i64),
    Delete,
}

/// Polar's discounts in memory; `failures` are returned, in order, before real answers.
#[derive(Default)]
pub struct InMemoryDiscounts {
    pub discounts: Mutex<HashMap<DiscountId, Discount>>,
    pub failures: Mutex<VecDeque<PolarError>>,
    pub calls: Mutex<Vec<Call>>,
}

impl InMemoryDiscounts {
    pub fn with(self, id: DiscountId, code: &str, max_redemptions: Option<i64>) -> Self {
        self.discounts.lock().unwrap().insert(
            id,
            Discount {
                id: id.as_uuid(),
                code: Some(code.to_owned()),
                max_redemptions,
            },
        );
        self
    }

    pub fn fail_next(&self, err: PolarError) {
        self.failures.lock().unwrap().push_back(err);
    }

    pub fn max_redemptions(&self, id: DiscountId) -> Option<Option<i64>> {
        self.discounts
            .lock()
            .unwrap()
            .get(&id)
            .map(|d| d.max_redemptions)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn record(&self, call: Call) -> Result<(), PolarError> {
        self.calls.lock().unwrap().push(call);
        self.failures
            .lock()
            .unwrap()
            .pop_front()
            .map_or(Ok(()), Err)
    }
}

impl Discounts for InMemoryDiscounts {
    async fn get(&self, id: DiscountId) -> Result<Option<Discount>, PolarError> {
        self.record(Call::Get)?;
        Ok(self.discounts.lock().unwrap().get(&id).cloned())
    }

    async fn set_max_redemptions(
        &self,
        id: DiscountId,
        max: i64,
    ) -> Result<Option<Discount>, PolarError> {
        self.record(Call::Update(max))?;
        let mut discounts = self.discounts.lock().unwrap();
        Ok(discounts.get_mut(&id).map(|d| {
            d.max_redemptions = Some(max);
            d.clone()
        }))
    }

    async fn delete(&self, id: DiscountId) -> Result<Deletion, PolarError> {
        self.record(Call::Delete)?;
        Ok(match self.discounts.lock().unwrap().remove(&id) {
            Some(_) => Deletion::Deleted,
            None => Deletion::Gone,
        })
    }
}
