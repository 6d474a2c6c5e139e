//! What an invocation did, counted as it happens and taken at its end: the numbers behind
//! the function's CloudWatch metrics (see `emf`) and its summary log line.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Things counted. The names are the CloudWatch metric names, documented in docs/operations.md
/// ("Metrics and alarms").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Count {
    OrdersDecremented,
    OrdersDeleted,
    OrdersSkippedUnlimited,
    OrdersAlreadyDeleted,
    /// Orders a previous invocation had synced already: a duplicate message.
    OrdersAlreadySynced,
    /// Messages that failed and will be tried again, by class.
    TransientFailures,
    ConfigurationErrors,
    PermanentFailures,
    DeadLettered,
    /// Messages that found their discount's lease held by another invocation.
    LeaseContention,
    /// DynamoDB requests answered that another invocation holds the lease: what waiting
    /// for a hot code costs.
    LeaseWaitRequests,
    /// DynamoDB requests that handed a waiter's orders to the lease's holder.
    HandOffRequests,
    /// Journals left by an invocation that did not finish, resolved by the next holder.
    JournalsRecovered,
    /// Journals settled by the scheduled reconciliation.
    JournalsReconciled,
    ReconciliationFailures,
    /// Polar writes that got no usable answer (resolved by reading back or by the journal).
    UnknownWriteOutcomes,
    /// Polar's 429 answers.
    PolarRateLimited,
    /// Orders beyond a discount's limit when its last use was synced.
    Oversold,
    /// A journaled write found someone else's change on Polar.
    ExternalChanges,
    /// Orders table stream records relayed to the redemption queue.
    StreamRecordsRelayed,
    /// Stream records that needed no message (removed, no discount, synced, own writes).
    StreamRecordsIgnored,
    /// Unreadable stream records sent to the dead-letter queue.
    StreamRecordsDeadLettered,
    /// Stream records whose relay (or dead-lettering) failed: delivered again.
    StreamRelayFailures,
    /// Shadow mode (`SHADOW_MODE=true`): messages whose order it would have synced, by
    /// action. Nothing was written; the names keep these apart from the real counts.
    ShadowOrdersDecremented,
    ShadowOrdersDeleted,
    ShadowOrdersSkippedUnlimited,
    ShadowOrdersAlreadyDeleted,
    /// Shadow mode: PATCH and DELETE requests it would have sent to Polar.
    ShadowPolarWrites,
    /// Shadow mode: messages it would have dead-lettered, or retried; all are acknowledged.
    ShadowWouldDeadLetter,
    ShadowWouldRetry,
}

impl Count {
    pub fn name(self) -> &'static str {
        match self {
            Self::OrdersDecremented => "OrdersDecremented",
            Self::OrdersDeleted => "OrdersDeleted",
            Self::OrdersSkippedUnlimited => "OrdersSkippedUnlimited",
            Self::OrdersAlreadyDeleted => "OrdersAlreadyDeleted",
            Self::OrdersAlreadySynced => "OrdersAlreadySynced",
            Self::TransientFailures => "TransientFailures",
            Self::ConfigurationErrors => "ConfigurationErrors",
            Self::PermanentFailures => "PermanentFailures",
            Self::DeadLettered => "DeadLettered",
            Self::LeaseContention => "LeaseContention",
            Self::LeaseWaitRequests => "LeaseWaitRequests",
            Self::HandOffRequests => "HandOffRequests",
            Self::JournalsRecovered => "JournalsRecovered",
            Self::JournalsReconciled => "JournalsReconciled",
            Self::ReconciliationFailures => "ReconciliationFailures",
            Self::UnknownWriteOutcomes => "UnknownWriteOutcomes",
            Self::PolarRateLimited => "PolarRateLimited",
            Self::Oversold => "Oversold",
            Self::ExternalChanges => "ExternalChanges",
            Self::StreamRecordsRelayed => "StreamRecordsRelayed",
            Self::StreamRecordsIgnored => "StreamRecordsIgnored",
            Self::StreamRecordsDeadLettered => "StreamRecordsDeadLettered",
            Self::StreamRelayFailures => "StreamRelayFailures",
            Self::ShadowOrdersDecremented => "ShadowOrdersDecremented",
            Self::ShadowOrdersDeleted => "ShadowOrdersDeleted",
            Self::ShadowOrdersSkippedUnlimited => "ShadowOrdersSkippedUnlimited",
            Self::ShadowOrdersAlreadyDeleted => "ShadowOrdersAlreadyDeleted",
            Self::ShadowPolarWrites => "ShadowPolarWrites",
            Self::ShadowWouldDeadLetter => "ShadowWouldDeadLetter",
            Self::ShadowWouldRetry => "ShadowWouldRetry",
        }
    }
}

/// Things measured one value at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Distribution {
    /// One Polar request's time, from sending to the answer (not the wait for a slot).
    PolarLatency,
    /// Orders counted by one Polar write (k).
    OrdersPerWrite,
    /// Per batch, how long ago checkout sent its oldest message (through any copies the
    /// function sent again). SQS's own `ApproximateAgeOfOldestMessage` leaves out messages
    /// received three times or more, and every copy starts young.
    OldestMessageAge,
    /// A container's share of Polar's rate limit (requests a minute), each time a 429
    /// halved it.
    PolarRateShare,
}

impl Distribution {
    pub fn name(self) -> &'static str {
        match self {
            Self::PolarLatency => "PolarLatency",
            Self::OrdersPerWrite => "OrdersPerWrite",
            Self::OldestMessageAge => "OldestMessageAge",
            Self::PolarRateShare => "PolarRateShare",
        }
    }

    /// CloudWatch's unit for the values.
    pub fn unit(self) -> &'static str {
        match self {
            Self::PolarLatency => "Milliseconds",
            Self::OrdersPerWrite => "Count",
            Self::OldestMessageAge => "Seconds",
            Self::PolarRateShare => "Count",
        }
    }
}

/// The recorder one container shares between its invocations (one at a time); each
/// invocation's end takes what was recorded.
#[derive(Debug, Default)]
pub struct Metrics {
    recorded: Mutex<Recorded>,
}

/// What was recorded since the last take.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Recorded {
    pub counts: BTreeMap<Count, u64>,
    pub distributions: BTreeMap<Distribution, Vec<f64>>,
}

impl Metrics {
    pub fn count(&self, what: Count, by: u64) {
        if by > 0 {
            *self.lock().counts.entry(what).or_default() += by;
        }
    }

    pub fn observe(&self, what: Distribution, value: f64) {
        self.lock()
            .distributions
            .entry(what)
            .or_default()
            .push(value);
    }

    pub fn observe_latency(&self, latency: Duration) {
        self.observe(Distribution::PolarLatency, latency.as_secs_f64() * 1000.0);
    }

    /// Everything recorded so far; the recorder starts over.
    pub fn take(&self) -> Recorded {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.recorded
            .lock()
            .expect("the recorder never panics holding its lock")
    }
}

impl Recorded {
    pub fn count(&self, what: Count) -> u64 {
        self.counts.get(&what).copied().unwrap_or(0)
    }

    /// The sum of `counts`.
    pub fn total(&self, counts: &[Count]) -> u64 {
        counts.iter().map(|&count| self.count(count)).sum()
    }

    /// The Polar requests that were answered (each has its latency).
    pub fn polar_requests(&self) -> usize {
        self.distributions
            .get(&Distribution::PolarLatency)
            .map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_take_returns_what_was_recorded_and_starts_over() {
        let metrics = Metrics::default();
        metrics.count(Count::OrdersDecremented, 2);
        metrics.count(Count::OrdersDecremented, 1);
        metrics.count(Count::Oversold, 0);
        metrics.observe(Distribution::OrdersPerWrite, 3.0);
        let recorded = metrics.take();
        assert_eq!(recorded.count(Count::OrdersDecremented), 3);
        assert!(
            !recorded.counts.contains_key(&Count::Oversold),
            "a zero is not recorded"
        );
        assert_eq!(
            recorded.distributions[&Distribution::OrdersPerWrite],
            vec![3.0]
        );
        assert_eq!(metrics.take(), Recorded::default());
    }
}
