//! Polar's discounts in memory, with scripted answers.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::deadline::Deadline;
use crate::domain::DiscountId;
use crate::ports::{
    DiscountLookup, DiscountView, Discounts, Lookup, PolarFailure, PolarFailureKind, WriteOutcome,
};

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
    /// How long each GET takes to answer, as a request over the network does.
    pub get_latency: std::time::Duration,
}

impl InMemoryDiscounts {
    /// Each GET answers after `latency`, so that a step holds its lease for a while.
    pub fn with_get_latency(mut self, latency: std::time::Duration) -> Self {
        self.get_latency = latency;
        self
    }

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

impl DiscountLookup for InMemoryDiscounts {
    async fn get(&self, id: DiscountId, _deadline: Deadline) -> Result<Lookup, PolarFailure> {
        if !self.get_latency.is_zero() {
            tokio::time::sleep(self.get_latency).await;
        }
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
}

impl Discounts for InMemoryDiscounts {
    async fn set_max_redemptions(
        &self,
        id: DiscountId,
        max: i64,
        _deadline: Deadline,
    ) -> WriteOutcome {
        self.write(Call::Update(max), id, |all| {
            if let Some(discount) = all.get_mut(&id) {
                discount.max_redemptions = Some(max);
            }
        })
    }

    async fn delete(&self, id: DiscountId, _deadline: Deadline) -> WriteOutcome {
        self.write(Call::Delete, id, |all| {
            all.remove(&id);
        })
    }
}
