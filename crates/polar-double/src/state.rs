use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::model::Discount;
use crate::{DiscountSeed, DoubleConfig, Fault, FaultAction, RecordedRequest};

/// asgi-ratelimit's fixed window: it opens at the first request and lasts this long.
pub(crate) const RATE_LIMIT_WINDOW: Duration = Duration::from_secs(60);

pub(crate) struct Shared {
    pub(crate) config: DoubleConfig,
    pub(crate) organization_id: Uuid,
    started: Instant,
    state: Mutex<State>,
}

#[derive(Default)]
pub(crate) struct State {
    discounts: HashMap<Uuid, Discount>,
    next_seq: u64,
    faults: Vec<Fault>,
    requests: Vec<RecordedRequest>,
    window: Option<RateWindow>,
}

struct RateWindow {
    opened: Instant,
    used: u32,
}

impl Shared {
    pub(crate) fn new(config: DoubleConfig) -> Shared {
        Shared {
            config,
            organization_id: Uuid::new_v4(),
            started: Instant::now(),
            state: Mutex::new(State::default()),
        }
    }

    /// A panicking test must not turn every later request into a poisoned-lock panic.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn insert_discount(&self, seed: DiscountSeed) -> Result<Uuid, String> {
        let id = seed.id.unwrap_or_else(Uuid::new_v4);
        if id.get_version_num() != 4 {
            return Err(format!(
                "discount id {id} is not a UUIDv4: Polar answers 422 uuid_version for it"
            ));
        }
        let discount = Discount::from_seed(&seed, id, self.organization_id);
        self.lock().put(discount);
        Ok(id)
    }

    pub(crate) fn with_discount<T>(&self, id: Uuid, f: impl FnOnce(&Discount) -> T) -> Option<T> {
        self.lock().discount(id).map(f)
    }

    pub(crate) fn elapsed_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    pub(crate) fn record(&self, request: RecordedRequest) -> usize {
        let mut state = self.lock();
        state.requests.push(request);
        state.requests.len() - 1
    }

    /// Records the answer to the `index`th request: its status, and when.
    pub(crate) fn answered(&self, index: usize, status: Option<u16>) {
        let at = self.elapsed_us();
        if let Some(request) = self.lock().requests.get_mut(index) {
            request.status = status;
            request.answered_at_us = Some(at);
        }
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    pub(crate) fn inject(&self, fault: Fault) {
        if fault.times > 0 {
            self.lock().faults.push(fault);
        }
    }

    pub(crate) fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Consumes one use of the first queued fault matching the request.
    pub(crate) fn take_fault(
        &self,
        method: &str,
        discount_id: Option<Uuid>,
    ) -> Option<FaultAction> {
        let mut state = self.lock();
        let position = state.faults.iter().position(|fault| {
            fault
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
                && fault.discount_id.is_none_or(|id| Some(id) == discount_id)
        })?;
        let fault = &mut state.faults[position];
        fault.times -= 1;
        let action = fault.action.clone();
        if fault.times == 0 {
            state.faults.remove(position);
        }
        Some(action)
    }

    pub(crate) fn reset_rate_limit_window(&self) {
        self.lock().window = None;
    }
}

impl State {
    pub(crate) fn discount(&self, id: Uuid) -> Option<&Discount> {
        self.discounts.get(&id)
    }

    pub(crate) fn discount_mut(&mut self, id: Uuid) -> Option<&mut Discount> {
        self.discounts.get_mut(&id)
    }

    pub(crate) fn put(&mut self, mut discount: Discount) {
        discount.seq = self.next_seq;
        self.next_seq += 1;
        self.discounts.insert(discount.id, discount);
    }

    pub(crate) fn remove(&mut self, id: Uuid) -> Option<Discount> {
        self.discounts.remove(&id)
    }

    pub(crate) fn discounts(&self) -> impl Iterator<Item = &Discount> {
        self.discounts.values()
    }

    /// Counts a request against the organization's window. Like asgi-ratelimit's Redis
    /// backend, a refused request uses nothing and `retry-after` is the whole window,
    /// however much of it is left.
    pub(crate) fn admit(&mut self, limit: u32) -> Result<(), u64> {
        let now = Instant::now();
        let window = match &mut self.window {
            Some(w) if now.duration_since(w.opened) < RATE_LIMIT_WINDOW => w,
            slot => slot.insert(RateWindow {
                opened: now,
                used: 0,
            }),
        };
        if window.used >= limit {
            return Err(RATE_LIMIT_WINDOW.as_secs());
        }
        window.used += 1;
        Ok(())
    }
}
