//! The orders table and `SYNC_TABLE` in memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::domain::{DiscountId, Journal, OrderId, SyncAction, SyncRequest};
use crate::ports::{
    Acquisition, ClaimOutcome, Committed, Coordination, HandOff, HeldLease, JournalIndex, Lease,
    LeaseAfter, OrderLedger, OrderReader, OrderRecord, OrderSnapshot, PendingJournal, QuickStart,
    StoreFailure, MAX_HANDED_OVER,
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
    /// How long the last step that released the lease took, in milliseconds.
    pub last_step_ms: Option<u64>,
    /// Orders waiters handed to the holder, oldest first.
    pub handed_off: Vec<SyncRequest>,
}

impl StoredDiscount {
    /// The lease as a waiter sees it, if another invocation holds it at `now_ms`.
    fn held_against(&self, lease: &Lease, now_ms: u64) -> Option<HeldLease> {
        let held = self.lease.as_ref()?;
        (held.token != lease.token && held.expires_at_ms >= now_ms).then(|| {
            HeldLease::expecting(
                Some(held.token),
                held.expires_at_ms,
                Some(held.taken_at_ms),
                self.last_step_ms,
                self.journal
                    .as_ref()
                    .map(|journal| journal.orders.clone())
                    .unwrap_or_default(),
            )
        })
    }
}

/// Orders and per-discount leases/journals in memory.
#[derive(Default)]
pub struct InMemoryStore {
    pub orders: Mutex<HashMap<String, StoredOrder>>,
    pub discounts: Mutex<HashMap<DiscountId, StoredDiscount>>,
    /// Whether taking a lease first lets other tasks run, as a request to DynamoDB does.
    round_trips: bool,
    /// How many of the next `record_intent` calls are throttled.
    throttled_intents: AtomicU32,
    /// Requests that take or look at a lease: `acquire` and `acquire_with_claims`.
    lease_requests: AtomicU32,
    /// `hand_off` requests.
    hand_offs: AtomicU32,
    /// Whether `hand_off` fails, as a throttled request does.
    hand_offs_fail: bool,
}

impl InMemoryStore {
    /// Taking a lease lets the other tasks run before it answers, as a request to DynamoDB
    /// does: the concurrent steps of a batch all start before any takes its lease.
    pub fn with_round_trips(mut self) -> Self {
        self.round_trips = true;
        self
    }

    /// Every hand-off fails, as a throttled request does: waiters wait for the lease.
    pub fn with_hand_offs_failing(mut self) -> Self {
        self.hand_offs_fail = true;
        self
    }

    /// The next `times` journal writes are throttled, as DynamoDB throttles a hot key.
    pub fn throttle_intents(&self, times: u32) {
        self.throttled_intents.store(times, Ordering::SeqCst);
    }

    /// How many requests took or looked at a lease (`acquire` and `acquire_with_claims`).
    pub fn lease_requests(&self) -> u32 {
        self.lease_requests.load(Ordering::SeqCst)
    }

    /// How many `hand_off` requests were made.
    pub fn hand_offs(&self) -> u32 {
        self.hand_offs.load(Ordering::SeqCst)
    }

    /// The orders on `discount`'s hand-off list.
    pub fn handed_off(&self, discount: DiscountId) -> Vec<SyncRequest> {
        self.discounts
            .lock()
            .unwrap()
            .get(&discount)
            .map(|stored| stored.handed_off.clone())
            .unwrap_or_default()
    }

    async fn round_trip(&self) {
        if self.round_trips {
            tokio::task::yield_now().await;
        }
    }

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
            // As DynamoDB's conditions do, by its token: a holder's next step renews the rest.
            Some(stored)
                if stored
                    .lease
                    .as_ref()
                    .is_some_and(|held| held.token == lease.token) =>
            {
                Ok(f(stored))
            }
            _ => Err(StoreFailure::LeaseLost(discount)),
        }
    }
}

impl OrderLedger for InMemoryStore {
    async fn claim(
        &self,
        request: &SyncRequest,
        _lease: &Lease,
    ) -> Result<ClaimOutcome, StoreFailure> {
        let orders = self.orders.lock().unwrap();
        Ok(claim_outcome(
            orders.get(request.order_id.as_str()),
            request,
        ))
    }
}

/// What a claim of `request` comes to on `stored` (`None`: no such order).
fn claim_outcome(stored: Option<&StoredOrder>, request: &SyncRequest) -> ClaimOutcome {
    let Some(stored) = stored else {
        return ClaimOutcome::NotFound;
    };
    let record = recorded(stored);
    let names_request = request
        .field_differing_from(
            record.discount_id.as_deref(),
            record.discount_code.as_deref(),
        )
        .is_none();
    match stored.synced {
        Some(_) => ClaimOutcome::AlreadySynced(record),
        None if names_request => ClaimOutcome::Claimed,
        None => ClaimOutcome::Mismatched(record),
    }
}

/// Whether `stored` spells the discount exactly as `request` does: a transaction's
/// condition compares exactly, where a claim on its own claims again with the order's
/// spelling.
fn spelled_exactly(stored: &StoredOrder, request: &SyncRequest) -> bool {
    let record = recorded(stored);
    record.discount_id.as_deref() == Some(request.discount_id.to_string().as_str())
        && record.discount_code.as_deref() == Some(request.discount_code.as_str())
}

fn recorded(stored: &StoredOrder) -> OrderRecord {
    stored.record.clone().unwrap_or(OrderRecord {
        discount_id: None,
        discount_code: None,
    })
}

impl OrderReader for InMemoryStore {
    async fn read_order(&self, order: &OrderId) -> Result<Option<OrderSnapshot>, StoreFailure> {
        let orders = self.orders.lock().unwrap();
        Ok(orders.get(order.as_str()).map(|stored| OrderSnapshot {
            record: recorded(stored),
            synced: stored.synced.is_some(),
        }))
    }
}

impl Coordination for InMemoryStore {
    async fn acquire(
        &self,
        discount: DiscountId,
        lease: &Lease,
        now_ms: u64,
    ) -> Result<Acquisition, StoreFailure> {
        self.lease_requests.fetch_add(1, Ordering::SeqCst);
        self.round_trip().await;
        let mut discounts = self.discounts.lock().unwrap();
        let stored = discounts.entry(discount).or_default();
        if let Some(held) = stored.held_against(lease, now_ms) {
            return Ok(Acquisition::Held(held));
        }
        stored.lease = Some(lease.clone());
        Ok(Acquisition::Acquired {
            pending: stored.journal.clone(),
        })
    }

    async fn acquire_with_claims(
        &self,
        discount: DiscountId,
        lease: &Lease,
        now_ms: u64,
        claims: &[&SyncRequest],
    ) -> Result<QuickStart, StoreFailure> {
        self.lease_requests.fetch_add(1, Ordering::SeqCst);
        self.round_trip().await;
        let orders = self.orders.lock().unwrap();
        let mut refused = Vec::new();
        let mut spelled_otherwise = false;
        for (index, request) in claims.iter().enumerate() {
            let stored = orders.get(request.order_id.as_str());
            match claim_outcome(stored, request) {
                ClaimOutcome::Claimed if stored.is_some_and(|s| spelled_exactly(s, request)) => {}
                ClaimOutcome::Claimed => spelled_otherwise = true,
                refusal => refused.push((index, refusal)),
            }
        }
        let mut discounts = self.discounts.lock().unwrap();
        let stored = discounts.entry(discount).or_default();
        if let Some(held) = stored.held_against(lease, now_ms) {
            return Ok(QuickStart::Held { held, refused });
        }
        if spelled_otherwise || stored.journal.is_some() {
            return Ok(QuickStart::Declined);
        }
        if !refused.is_empty() {
            return Ok(QuickStart::ClaimsRefused(refused));
        }
        stored.lease = Some(lease.clone());
        Ok(QuickStart::Started)
    }

    async fn hand_off(
        &self,
        discount: DiscountId,
        held: &HeldLease,
        now_ms: u64,
        orders: &[&SyncRequest],
    ) -> Result<HandOff, StoreFailure> {
        self.hand_offs.fetch_add(1, Ordering::SeqCst);
        self.round_trip().await;
        if self.hand_offs_fail {
            return Err(StoreFailure::Transient("throttled (scripted)".into()));
        }
        let mut discounts = self.discounts.lock().unwrap();
        let stored = discounts.entry(discount).or_default();
        let still_held = stored
            .lease
            .as_ref()
            .is_some_and(|lease| Some(lease.token) == held.holder && lease.expires_at_ms >= now_ms);
        if !still_held {
            return Ok(HandOff::NotHeld);
        }
        for order in orders {
            if !stored.handed_off.contains(order) {
                stored.handed_off.push((*order).clone());
            }
        }
        Ok(HandOff::Handed)
    }

    async fn record_intent(
        &self,
        discount: DiscountId,
        lease: &Lease,
        journal: &Journal,
    ) -> Result<(), StoreFailure> {
        let throttled =
            self.throttled_intents
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if throttled.is_ok() {
            return Err(StoreFailure::Transient("throttled (scripted)".into()));
        }
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
    ) -> Result<Committed, StoreFailure> {
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
            if lease_after == LeaseAfter::Kept {
                return Committed::AsAsked;
            }
            // As in DynamoDB: a plain release leaves the list as it is.
            if lease_after == LeaseAfter::ReleasedOrHandedOver {
                stored
                    .handed_off
                    .retain(|handed| !orders.contains(&handed.order_id));
            }
            if lease_after == LeaseAfter::Released || stored.handed_off.is_empty() {
                stored.lease = None;
                stored.last_step_ms = Some(step_ms(lease));
                return Committed::AsAsked;
            }
            let taken = stored.handed_off.len().min(MAX_HANDED_OVER);
            Committed::HandedOver(stored.handed_off.drain(..taken).collect())
        })
    }

    async fn release_keeping_journal(
        &self,
        discount: DiscountId,
        lease: &Lease,
    ) -> Result<(), StoreFailure> {
        let _ = self.holding(discount, lease, |stored| stored.lease = None);
        Ok(())
    }

    async fn release_dropping_journal(
        &self,
        discount: DiscountId,
        lease: &Lease,
    ) -> Result<(), StoreFailure> {
        let _ = self.holding(discount, lease, |stored| {
            stored.lease = None;
            stored.journal = None;
        });
        Ok(())
    }
}

/// How long the step under `lease` has taken so far.
fn step_ms(lease: &Lease) -> u64 {
    crate::deadline::epoch_ms(SystemTime::now()).saturating_sub(lease.taken_at_ms)
}

impl JournalIndex for InMemoryStore {
    async fn journaled_discounts(&self) -> Result<Vec<DiscountId>, StoreFailure> {
        let discounts = self.discounts.lock().unwrap();
        Ok(discounts
            .iter()
            .filter(|(_, stored)| stored.journal.is_some())
            .map(|(discount, _)| *discount)
            .collect())
    }

    async fn pending_journal(
        &self,
        discount: DiscountId,
    ) -> Result<Option<PendingJournal>, StoreFailure> {
        let discounts = self.discounts.lock().unwrap();
        Ok(discounts.get(&discount).and_then(|stored| {
            Some(PendingJournal {
                journal: stored.journal.clone()?,
                lease_expires_at_ms: stored.lease.as_ref().map(|lease| lease.expires_at_ms),
            })
        }))
    }
}
