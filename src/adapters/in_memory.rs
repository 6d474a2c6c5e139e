//! In-memory ports for fast use-case tests: same semantics as the real adapters,
//! with scripted Polar failures.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::domain::{DiscountId, Journal, OrderId, SyncAction};
use crate::ports::{
    Acquisition, ClaimOutcome, Coordination, DeadLetterReason, Delivery, DiscountView, Discounts,
    Lease, LeaseAfter, Lookup, OrderLedger, OrderRecord, PolarFailure, PolarFailureKind, Queue,
    QueueFailure, StoreFailure, WriteOutcome,
};

#[derive(Debug, Clone, Default)]
pub struct StoredOrder {
    pub record: Option<OrderRecord>,
    pub synced: Option<SyncAction>,
    /// How many times the order was marked: must never exceed one.
    pub marks: u32,
}

#[derive(Debug, Clone, Default)]
pub struct StoredDiscount {
    pub lease: Option<Lease>,
    pub journal: Option<Journal>,
}

/// Orders and per-discount leases/journals in memory.
#[derive(Default)]
pub struct InMemoryStore {
    pub orders: Mutex<HashMap<String, StoredOrder>>,
    pub discounts: Mutex<HashMap<DiscountId, StoredDiscount>>,
}

impl InMemoryStore {
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

    pub fn journal(&self, discount: DiscountId) -> Option<Journal> {
        self.discounts
            .lock()
            .unwrap()
            .get(&discount)?
            .journal
            .clone()
    }

    pub fn lease(&self, discount: DiscountId) -> Option<Lease> {
        self.discounts.lock().unwrap().get(&discount)?.lease.clone()
    }

    fn holding<T>(
        &self,
        discount: DiscountId,
        lease: &Lease,
        f: impl FnOnce(&mut StoredDiscount) -> T,
    ) -> Result<T, StoreFailure> {
        let mut discounts = self.discounts.lock().unwrap();
        match discounts.get_mut(&discount) {
            Some(stored) if stored.lease.as_ref() == Some(lease) => Ok(f(stored)),
            _ => Err(StoreFailure::LeaseLost(discount)),
        }
    }
}

impl OrderLedger for InMemoryStore {
    async fn claim(&self, order: &OrderId, _lease: &Lease) -> Result<ClaimOutcome, StoreFailure> {
        let orders = self.orders.lock().unwrap();
        let Some(stored) = orders.get(order.as_str()) else {
            return Ok(ClaimOutcome::NotFound);
        };
        let record = stored.record.clone().unwrap_or(OrderRecord {
            discount_id: None,
            discount_code: None,
        });
        Ok(match stored.synced {
            Some(_) => ClaimOutcome::AlreadySynced(record),
            None => ClaimOutcome::Claimed(record),
        })
    }
}

impl Coordination for InMemoryStore {
    async fn acquire(
        &self,
        discount: DiscountId,
        lease: &Lease,
        now_ms: u64,
    ) -> Result<Acquisition, StoreFailure> {
        let mut discounts = self.discounts.lock().unwrap();
        let stored = discounts.entry(discount).or_default();
        if let Some(held) = &stored.lease {
            if held.expires_at_ms >= now_ms {
                return Ok(Acquisition::Held {
                    expires_at_ms: held.expires_at_ms,
                });
            }
        }
        stored.lease = Some(lease.clone());
        Ok(Acquisition::Acquired {
            pending: stored.journal.clone(),
        })
    }

    async fn record_intent(
        &self,
        discount: DiscountId,
        lease: &Lease,
        journal: &Journal,
    ) -> Result<(), StoreFailure> {
        self.holding(discount, lease, |stored| {
            stored.journal = Some(journal.clone())
        })
    }

    async fn commit(
        &self,
        discount: DiscountId,
        lease: &Lease,
        orders: &[OrderId],
        action: SyncAction,
        _at: SystemTime,
        lease_after: LeaseAfter,
    ) -> Result<(), StoreFailure> {
        self.holding(discount, lease, |stored| {
            let mut all = self.orders.lock().unwrap();
            for order in orders {
                let stored_order = all.get_mut(order.as_str()).expect("counted orders exist");
                if stored_order.synced.is_none() {
                    stored_order.synced = Some(action);
                    stored_order.marks += 1;
                }
            }
            stored.journal = None;
            if lease_after == LeaseAfter::Released {
                stored.lease = None;
            }
        })
    }

    async fn release(&self, discount: DiscountId, lease: &Lease) -> Result<(), StoreFailure> {
        let _ = self.holding(discount, lease, |stored| {
            stored.lease = None;
            stored.journal = None;
        });
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Get,
    Update(i64),
    Delete,
}

/// Which calls a scripted answer replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    Get,
    Update,
    Delete,
}

/// A scripted Polar answer, given instead of the real one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scripted {
    /// Polar turns the request away: nothing changes.
    Refuse(PolarFailureKind),
    /// No answer, and the request never reached Polar.
    Unanswered,
    /// No answer, but Polar applied the request.
    AppliedUnanswered,
}

#[derive(Debug, thiserror::Error)]
#[error("scripted failure: {0:?}")]
struct ScriptedFailure(Scripted);

/// Polar's discounts in memory; scripted answers are used up in order, each by the
/// first call it applies to.
#[derive(Default)]
pub struct InMemoryDiscounts {
    pub discounts: Mutex<HashMap<DiscountId, DiscountView>>,
    pub script: Mutex<VecDeque<(On, Scripted)>>,
    pub calls: Mutex<Vec<Call>>,
}

impl InMemoryDiscounts {
    pub fn with(self, id: DiscountId, code: &str, max_redemptions: Option<i64>) -> Self {
        self.discounts.lock().unwrap().insert(
            id,
            DiscountView {
                code: Some(code.to_owned()),
                max_redemptions,
            },
        );
        self
    }

    pub fn script(&self, on: On, answer: Scripted) {
        self.script.lock().unwrap().push_back((on, answer));
    }

    /// Changes a discount as if someone (or a late request) wrote it.
    pub fn set(&self, id: DiscountId, max_redemptions: Option<i64>) {
        if let Some(discount) = self.discounts.lock().unwrap().get_mut(&id) {
            discount.max_redemptions = max_redemptions;
        }
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

    /// Records the call and takes the first scripted answer meant for it, if any.
    fn scripted(&self, call: Call) -> Option<Scripted> {
        self.calls.lock().unwrap().push(call);
        let on = match call {
            Call::Get => On::Get,
            Call::Update(_) => On::Update,
            Call::Delete => On::Delete,
        };
        let mut script = self.script.lock().unwrap();
        let position = script.iter().position(|(when, _)| *when == on)?;
        script.remove(position).map(|(_, answer)| answer)
    }

    fn write(
        &self,
        call: Call,
        id: DiscountId,
        apply: impl FnOnce(&mut HashMap<DiscountId, DiscountView>),
    ) -> WriteOutcome {
        let all = || self.discounts.lock().unwrap();
        match self.scripted(call) {
            None if !all().contains_key(&id) => WriteOutcome::Gone,
            None => {
                apply(&mut all());
                WriteOutcome::Applied
            }
            Some(answer @ Scripted::Refuse(kind)) => {
                WriteOutcome::NotApplied(failure(kind, answer))
            }
            Some(answer @ Scripted::Unanswered) => {
                WriteOutcome::Unknown(failure(PolarFailureKind::Unavailable, answer))
            }
            Some(answer @ Scripted::AppliedUnanswered) => {
                apply(&mut all());
                WriteOutcome::Unknown(failure(PolarFailureKind::Unavailable, answer))
            }
        }
    }
}

fn failure(kind: PolarFailureKind, answer: Scripted) -> PolarFailure {
    PolarFailure::new(kind, ScriptedFailure(answer))
}

impl Discounts for InMemoryDiscounts {
    async fn get(&self, id: DiscountId) -> Result<Lookup, PolarFailure> {
        match self.scripted(Call::Get) {
            None => Ok(self
                .discounts
                .lock()
                .unwrap()
                .get(&id)
                .cloned()
                .map_or(Lookup::Deleted, Lookup::Found)),
            Some(answer @ Scripted::Refuse(kind)) => Err(failure(kind, answer)),
            Some(answer) => Err(failure(PolarFailureKind::Unavailable, answer)),
        }
    }

    async fn set_max_redemptions(&self, id: DiscountId, max: i64) -> WriteOutcome {
        self.write(Call::Update(max), id, |all| {
            if let Some(discount) = all.get_mut(&id) {
                discount.max_redemptions = Some(max);
            }
        })
    }

    async fn delete(&self, id: DiscountId) -> WriteOutcome {
        self.write(Call::Delete, id, |all| {
            all.remove(&id);
        })
    }
}

/// The SQS side in memory: records delays and dead letters.
#[derive(Default)]
pub struct InMemoryQueue {
    pub has_dead_letter_queue: bool,
    pub max_receive_count: Option<u32>,
    pub delayed: Mutex<Vec<(String, Duration)>>,
    pub dead_letters: Mutex<Vec<(String, DeadLetterReason)>>,
}

impl InMemoryQueue {
    pub fn with_dead_letter_queue(max_receive_count: Option<u32>) -> Self {
        Self {
            has_dead_letter_queue: true,
            max_receive_count,
            ..Self::default()
        }
    }

    pub fn dead_lettered(&self) -> Vec<String> {
        self.dead_letters
            .lock()
            .unwrap()
            .iter()
            .map(|(id, _)| id.clone())
            .collect()
    }
}

impl Queue for InMemoryQueue {
    async fn retry_later(&self, delivery: &Delivery, after: Duration) -> Result<(), QueueFailure> {
        self.delayed
            .lock()
            .unwrap()
            .push((delivery.message_id.clone(), after));
        Ok(())
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        reason: &DeadLetterReason,
    ) -> Result<(), QueueFailure> {
        if !self.has_dead_letter_queue {
            return Err(QueueFailure::NoDeadLetterQueue);
        }
        self.dead_letters
            .lock()
            .unwrap()
            .push((delivery.message_id.clone(), reason.clone()));
        Ok(())
    }

    async fn max_receive_count(&self, _delivery: &Delivery) -> Result<Option<u32>, QueueFailure> {
        Ok(self.max_receive_count)
    }
}
