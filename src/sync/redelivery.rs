//! What becomes of a message that was not synced: back to the queue after a delay that
//! grows with each receive, or into the dead-letter queue with its reason.
//!
//! The outage budget: a Polar outage (5xx, timeouts, a revoked token) of up to
//! [`OUTAGE_BUDGET`] dead-letters nothing. With equal jitter the delay after receive n is
//! at least half its ceiling, so a message first received when the outage begins reaches
//! receive m no sooner than `sum(ceiling(n) / 2 for n in 1..m)` later (the time each
//! receive spends in the function only adds to that, and is left out). The queue's
//! `maxReceiveCount` is the fewest receives m for which that sum exceeds the budget:
//! [`MAX_RECEIVE_COUNT`], the template's default (a test keeps the two equal).

use std::time::{Duration, SystemTime};

use super::{SyncError, LEASE_GRACE};
use crate::backoff::Backoff;
use crate::deadline::epoch_ms;
use crate::failure::FailureClass;
use crate::ports::{PolarFailure, PolarFailureKind};

/// The longest Polar outage that must dead-letter nothing.
pub const OUTAGE_BUDGET: Duration = Duration::from_secs(6 * 60 * 60);

/// The redelivery delay's ceiling after the first failed receive; it doubles per receive.
pub const REDELIVERY_BASE: Duration = Duration::from_secs(5);

/// The redelivery delay's cap, reached at the 10th receive (5 s × 2⁹ = 42 min 40 s is over
/// it). Every message of a backlog comes back within this long after Polar does, spread
/// over its second half by the jitter. Longer would leave Polar's recovery unused for
/// longer; shorter would need more receives for the same budget (56 for 15 min), each
/// costing Lambda time and up to 4 requests to a Polar that is down.
pub const REDELIVERY_CAP: Duration = Duration::from_secs(30 * 60);

/// The source queue's `maxReceiveCount` (template.yaml's `MaxReceiveCount` default): the
/// fewest receives whose shortest schedule outlasts [`OUTAGE_BUDGET`]. The first 9 delays
/// are at least 2.5 + 5 + … + 640 = 1 277.5 s, each later one at least 900 s, so 32
/// delays take at least 1 277.5 + 23 × 900 = 21 977.5 s (6 h 6 min 17.5 s) > 6 h, while 31
/// would take 21 077.5 s (5 h 51 min 17.5 s).
pub const MAX_RECEIVE_COUNT: u32 = 33;

#[derive(Debug, Clone, Copy)]
pub struct RedeliveryPolicy {
    /// Visibility after each failed receive, counted by `ApproximateReceiveCount`.
    pub backoff: Backoff,
    /// The checkout writes the order before it sends the message, but a read can race a
    /// write that is not visible yet: a missing order is only called permanent from this
    /// receive on.
    pub order_not_found_receives: u32,
}

impl Default for RedeliveryPolicy {
    fn default() -> Self {
        Self {
            backoff: Backoff {
                base: REDELIVERY_BASE,
                max: REDELIVERY_CAP,
            },
            order_not_found_receives: 3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Report the message as failed, visible again after `after`.
    RetryAfter(Duration),
    /// Send it to the dead-letter queue with its reason, then acknowledge it. `class` is
    /// the final verdict: permanent, or the failure's own class when its retries ran out.
    DeadLetter { class: FailureClass },
}

/// A message sent again while its discount's holder works comes back when the holder is
/// expected to be done (the discount's last measured step, from the lease's refusal), plus
/// up to this much, so that the waiters of several containers do not return together.
/// Each further time the spread doubles (a slow holder, or one that died within its
/// invocation), never past the holder's deadline. Once that has passed, the lease frees
/// only at its expiry: copies come back then, spread over this much.
const REQUEUE_SPREAD: Duration = Duration::from_secs(1);
/// SQS delays a message by at most 15 minutes.
const MAX_REQUEUE_DELAY: Duration = Duration::from_secs(15 * 60);

/// How long after checkout sent it a message may still be sent again as a new one. A copy's
/// receive count and `SentTimestamp` start over, so without a bound a message kept busy
/// (a lease that never frees, a budget always spent) would never reach the dead-letter
/// queue, nor count in the queue's age. Past it, a failure is an ordinary one, counted by
/// the queue's receives, and dead-lettered with its reason after as many receives as the
/// outage budget takes.
pub const MAX_REQUEUE_AGE: Duration = OUTAGE_BUDGET;

/// The most times a message whose first-sent time is unknown is sent again (SQS always
/// gives `SentTimestamp`; a hand-made event may not): copies sent back at the longest
/// delay SQS allows reach [`MAX_REQUEUE_AGE`] at this count (6 h / 15 min = 24). Where
/// the age is known it alone decides: a busy budget may turn a message away many times
/// within minutes, and that is no failure.
pub const MAX_REQUEUES: u32 = (OUTAGE_BUDGET.as_secs() / MAX_REQUEUE_DELAY.as_secs()) as u32;

impl RedeliveryPolicy {
    /// Contention is not a failure. A message whose discount was held by another
    /// invocation is sent again as a new message (its receive count starts over), visible
    /// when the holder is expected to be done while it works, or when the lease expires if
    /// its holder is gone; `None` for every real failure.
    pub fn requeue_after(&self, error: &SyncError, requeues: u32) -> Option<Duration> {
        match error {
            SyncError::LeaseHeld {
                expires_at_ms,
                expected_release_at_ms,
                handed_over,
                ..
            } => {
                let now_ms = epoch_ms(SystemTime::now());
                let expires_in = Duration::from_millis(expires_at_ms.saturating_sub(now_ms));
                if expires_in <= LEASE_GRACE {
                    return Some(expires_in + REQUEUE_SPREAD.mul_f64(fastrand::f64()));
                }
                let until_holder_deadline = (expires_in - LEASE_GRACE).max(REQUEUE_SPREAD);
                let expected_in = expected_release_at_ms.map_or(Duration::ZERO, |at| {
                    Duration::from_millis(at.saturating_sub(now_ms))
                });
                // Its orders are the holder's to count by then: the copy only looks, and
                // finds them synced without taking the lease, so copies need no spread. At
                // least a second (SQS delays by whole seconds), so it does not find the
                // holder still at work.
                if *handed_over && requeues == 0 {
                    return Some(expected_in.max(REQUEUE_SPREAD).min(until_holder_deadline));
                }
                let spread = Backoff {
                    base: REQUEUE_SPREAD,
                    max: until_holder_deadline,
                };
                Some((expected_in + spread.full_jitter(requeues + 1)).min(until_holder_deadline))
            }
            // This container's share of Polar's budget had no slot before the deadline: the
            // budget is busy, not failing, and `ready_in` is the message's place in its line.
            // However often it was turned away, it comes back then, not later, or the
            // budget would go unused while it waits. The spread keeps the lines of
            // different containers from bringing messages back at the same instants.
            SyncError::Polar(PolarFailure {
                kind: PolarFailureKind::OverBudget { ready_in },
                ..
            }) => {
                Some((*ready_in + REQUEUE_SPREAD.mul_f64(fastrand::f64())).min(MAX_REQUEUE_DELAY))
            }
            // Its order is in the busy holder's journal: that holder settles it.
            SyncError::WriteMayHaveLanded(inner) => self.requeue_after(inner, requeues),
            _ => None,
        }
    }

    /// Whether a message sent again `requeues` times, checkout's first send `age` ago, may
    /// be sent again once more; otherwise its failure counts as any other.
    pub fn may_send_again(&self, requeues: u32, age: Option<Duration>) -> bool {
        match age {
            Some(age) => age < MAX_REQUEUE_AGE,
            None => requeues < MAX_REQUEUES,
        }
    }

    /// The shortest time from a message's first receive to receive number `receive`: every
    /// delay at its least, half its ceiling (equal jitter), and no time in the function.
    pub fn shortest_time_to_receive(&self, receive: u32) -> Duration {
        (1..receive).map(|n| self.backoff.ceiling(n) / 2).sum()
    }

    /// The longest delays before receive number `receive`: every one at its ceiling. A
    /// `retry-after` or a held lease can lengthen one, and each receive also spends up to
    /// the queue's visibility timeout in the function.
    pub fn longest_delays_to_receive(&self, receive: u32) -> Duration {
        (1..receive).map(|n| self.backoff.ceiling(n)).sum()
    }

    /// The fewest receives a queue must allow so that a failure lasting `outage` from a
    /// message's first receive is over before its last receive, whatever the jitter; `None`
    /// if more than SQS's limit of 1 000 would be needed.
    pub fn receives_to_outlast(&self, outage: Duration) -> Option<u32> {
        (1..=1000).find(|&receives| self.shortest_time_to_receive(receives) > outage)
    }

    /// `max_receive_count` is the source queue's redrive limit, if known: on the last
    /// receive a failure is dead-lettered here, with its reason, instead of silently by SQS.
    pub fn decide(
        &self,
        error: &SyncError,
        receive_count: u32,
        max_receive_count: Option<u32>,
    ) -> Disposition {
        let permanent = match error {
            SyncError::OrderNotFound(_) => receive_count >= self.order_not_found_receives,
            _ => error.class() == FailureClass::Permanent,
        };
        if permanent {
            return Disposition::DeadLetter {
                class: FailureClass::Permanent,
            };
        }
        if max_receive_count.is_some_and(|max| receive_count >= max) {
            return Disposition::DeadLetter {
                class: error.class(),
            };
        }
        // Equal jitter: a message comes back no sooner than half its planned delay.
        let wait = self.backoff.equal_jitter(receive_count);
        Disposition::RetryAfter(error.retry_after().map_or(wait, |floor| floor.max(wait)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DiscountId, MessageError, OrderId};
    use crate::ports::{PolarFailure, PolarFailureKind};
    use std::collections::HashSet;
    use std::sync::Arc;

    fn order() -> OrderId {
        OrderId::parse("ord_1".into()).unwrap()
    }

    fn lease_held() -> SyncError {
        SyncError::LeaseHeld {
            discount: DiscountId::parse("9b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a10").unwrap(),
            expires_at_ms: 0,
            expected_release_at_ms: None,
            handed_over: false,
        }
    }

    #[test]
    fn the_delay_ceiling_doubles_per_receive_up_to_thirty_minutes() {
        let policy = RedeliveryPolicy::default();
        let secs: Vec<_> = (1..=11)
            .map(|n| policy.backoff.ceiling(n).as_secs())
            .collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 320, 640, 1280, 1800, 1800]);
    }

    const TEMPLATE: &str = include_str!("../../template.yaml");

    /// The lines under `header` (one whole line of template.yaml) that are indented deeper.
    fn template_block(header: &str) -> Vec<&'static str> {
        let indent = header.len() - header.trim_start().len();
        let mut lines = TEMPLATE
            .lines()
            .skip_while(|line| line.trim_end() != header);
        assert!(
            lines.next().is_some(),
            "template.yaml has no line {header:?}"
        );
        lines
            .take_while(|line| {
                let text = line.trim_start();
                text.is_empty() || text.starts_with('#') || line.len() - text.len() > indent
            })
            .collect()
    }

    /// The value of `key:` in `block`, without a trailing comment.
    fn template_value(block: &[&'static str], key: &str) -> &'static str {
        let prefix = format!("{key}:");
        block
            .iter()
            .find_map(|line| line.trim_start().strip_prefix(prefix.as_str()))
            .map(|rest| rest.split(" #").next().unwrap_or_default().trim())
            .unwrap_or_else(|| panic!("no {key} in {block:#?}"))
    }

    fn template_seconds(block: &[&'static str], key: &str) -> Duration {
        let value = template_value(block, key);
        Duration::from_secs(value.parse().unwrap_or_else(|_| panic!("{key}: {value:?}")))
    }

    #[test]
    fn the_template_allows_exactly_the_receives_that_outlast_the_outage_budget() {
        let policy = RedeliveryPolicy::default();
        assert_eq!(
            policy.receives_to_outlast(OUTAGE_BUDGET),
            Some(MAX_RECEIVE_COUNT),
            "MAX_RECEIVE_COUNT is derived from the schedule and the budget"
        );
        let parameter = template_block("  MaxReceiveCount:");
        assert_eq!(
            template_value(&parameter, "Default")
                .parse::<u32>()
                .unwrap(),
            MAX_RECEIVE_COUNT,
            "template.yaml's MaxReceiveCount default and MAX_RECEIVE_COUNT must agree"
        );
        let queue = template_block("  RedemptionQueue:");
        assert_eq!(
            template_value(&queue, "maxReceiveCount"),
            "!Ref MaxReceiveCount",
            "the source queue's redrive policy uses the parameter"
        );
    }

    #[test]
    fn the_shortest_schedule_before_the_last_receive_exceeds_the_outage_budget() {
        let policy = RedeliveryPolicy::default();
        let shortest = policy.shortest_time_to_receive(MAX_RECEIVE_COUNT);
        assert!(shortest > OUTAGE_BUDGET, "{shortest:?}");
        assert_eq!(shortest, Duration::from_millis(21_977_500));
        let one_fewer = policy.shortest_time_to_receive(MAX_RECEIVE_COUNT - 1);
        assert!(
            one_fewer <= OUTAGE_BUDGET,
            "{one_fewer:?}: the count is the fewest"
        );

        // The same through `decide`, as the function runs it: a message failing on every
        // receive for each kind of outage comes back until its last receive, and the delays
        // it is given before that add up past the budget however the jitter falls.
        let outages = [
            PolarFailureKind::Unavailable,
            PolarFailureKind::Unauthorized,
            PolarFailureKind::OverBudget {
                ready_in: Duration::from_secs(1),
            },
            PolarFailureKind::TooLate,
        ];
        for kind in outages {
            let failure = SyncError::Polar(PolarFailure::new(kind, "outage"));
            for _ in 0..200 {
                let mut waited = Duration::ZERO;
                for receive in 1..MAX_RECEIVE_COUNT {
                    match policy.decide(&failure, receive, Some(MAX_RECEIVE_COUNT)) {
                        Disposition::RetryAfter(after) => waited += after,
                        other => panic!("{kind:?} at receive {receive}: {other:?}"),
                    }
                }
                assert!(waited >= shortest, "{kind:?}: {waited:?}");
                assert!(matches!(
                    policy.decide(&failure, MAX_RECEIVE_COUNT, Some(MAX_RECEIVE_COUNT)),
                    Disposition::DeadLetter { .. }
                ));
            }
        }
    }

    /// The longest visibility timeout the template maps a function timeout to.
    fn template_longest_visibility() -> Duration {
        template_block("  VisibilityTimeouts:")
            .iter()
            .filter_map(|line| line.split("Seconds:").nth(1))
            .map(|rest| {
                rest.trim_end_matches(['}', ' '])
                    .trim()
                    .parse::<u64>()
                    .unwrap()
            })
            .max()
            .map(Duration::from_secs)
            .expect("the template maps function timeouts to visibility timeouts")
    }

    #[test]
    fn the_source_queue_keeps_a_message_past_its_longest_schedule_and_the_dlq_longer() {
        let policy = RedeliveryPolicy::default();
        let longest_visibility = template_longest_visibility();
        // Every delay at its ceiling, and every receive held for the longest visibility.
        let longest_stay = policy.longest_delays_to_receive(MAX_RECEIVE_COUNT)
            + longest_visibility * MAX_RECEIVE_COUNT;
        let retention = template_seconds(
            &template_block("  RedemptionQueue:"),
            "MessageRetentionPeriod",
        );
        let dead_letter_retention = template_seconds(
            &template_block("  RedemptionDeadLetterQueue:"),
            "MessageRetentionPeriod",
        );
        assert!(retention > OUTAGE_BUDGET);
        assert!(
            retention > longest_stay,
            "{retention:?} for a schedule of up to {longest_stay:?}"
        );
        assert!(
            dead_letter_retention > retention,
            "a message moved by the redrive policy keeps its age: the DLQ must keep it longer"
        );
    }

    #[test]
    fn the_templates_most_receives_are_what_the_source_queues_retention_holds() {
        let policy = RedeliveryPolicy::default();
        let longest_visibility = template_longest_visibility();
        let retention = template_seconds(
            &template_block("  RedemptionQueue:"),
            "MessageRetentionPeriod",
        );
        // Every delay at its ceiling (capped at 30 minutes) and every receive held for the
        // longest visibility timeout: the most receives whose longest stay fits.
        let longest_stay = |receives: u32| {
            policy.longest_delays_to_receive(receives) + longest_visibility * receives
        };
        let most = (MAX_RECEIVE_COUNT..=1000)
            .take_while(|&receives| longest_stay(receives) < retention)
            .last()
            .expect("the default fits");
        assert_eq!(most, 143);
        assert_eq!(longest_stay(143), Duration::from_secs(344_915));
        let parameter = template_block("  MaxReceiveCount:");
        assert_eq!(
            template_value(&parameter, "MaxValue")
                .parse::<u32>()
                .unwrap(),
            most,
            "MaxReceiveCount's MaxValue is what the 4-day retention holds at the 30-minute cap"
        );
    }

    #[test]
    fn a_permanent_failure_is_dead_lettered_at_once() {
        let policy = RedeliveryPolicy::default();
        let malformed = SyncError::InvalidMessage(MessageError::EmptyDiscountCode);
        let permanent = Disposition::DeadLetter {
            class: FailureClass::Permanent,
        };
        assert_eq!(policy.decide(&malformed, 1, Some(8)), permanent);
        assert_eq!(policy.decide(&malformed, 1, None), permanent);
    }

    #[test]
    fn a_transient_failure_goes_back_to_the_queue_until_its_last_receive() {
        let policy = RedeliveryPolicy::default();
        assert!(matches!(
            policy.decide(&lease_held(), 1, Some(3)),
            Disposition::RetryAfter(_)
        ));
        assert!(matches!(
            policy.decide(&lease_held(), 2, Some(3)),
            Disposition::RetryAfter(_)
        ));
        assert_eq!(
            policy.decide(&lease_held(), 3, Some(3)),
            Disposition::DeadLetter {
                class: FailureClass::Transient
            },
            "retries ran out: dead-lettered with its own class"
        );
        assert!(matches!(
            policy.decide(&lease_held(), 50, None),
            Disposition::RetryAfter(_)
        ));
    }

    #[test]
    fn a_missing_order_is_retried_on_the_first_receives_then_dead_lettered() {
        let policy = RedeliveryPolicy::default();
        let missing = SyncError::OrderNotFound(order());
        assert!(matches!(
            policy.decide(&missing, 1, None),
            Disposition::RetryAfter(_)
        ));
        assert!(matches!(
            policy.decide(&missing, 2, None),
            Disposition::RetryAfter(_)
        ));
        assert_eq!(
            policy.decide(&missing, 3, None),
            Disposition::DeadLetter {
                class: FailureClass::Permanent
            }
        );
    }

    fn held_until(expires_in: Duration) -> SyncError {
        let now = std::time::SystemTime::now();
        SyncError::LeaseHeld {
            discount: DiscountId::parse("9b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a10").unwrap(),
            expires_at_ms: crate::deadline::epoch_ms(now + expires_in),
            expected_release_at_ms: None,
            handed_over: false,
        }
    }

    /// Held by a live holder whose lease expires in `expires_in`, expected to be done in
    /// `expected_in`.
    fn held_expecting(expires_in: Duration, expected_in: Duration) -> SyncError {
        let now = std::time::SystemTime::now();
        SyncError::LeaseHeld {
            discount: DiscountId::parse("9b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a10").unwrap(),
            expires_at_ms: crate::deadline::epoch_ms(now + expires_in),
            expected_release_at_ms: Some(crate::deadline::epoch_ms(now + expected_in)),
            handed_over: false,
        }
    }

    #[test]
    fn a_message_whose_order_was_handed_over_returns_when_the_holder_should_have_counted_it() {
        let policy = RedeliveryPolicy::default();
        let now = std::time::SystemTime::now();
        let handed_over = |expected_in: Duration| SyncError::LeaseHeld {
            discount: DiscountId::parse("9b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a10").unwrap(),
            expires_at_ms: crate::deadline::epoch_ms(now + Duration::from_secs(40)),
            expected_release_at_ms: Some(crate::deadline::epoch_ms(now + expected_in)),
            handed_over: true,
        };
        for _ in 0..50 {
            let after = policy
                .requeue_after(&handed_over(Duration::from_millis(2_500)), 0)
                .unwrap();
            assert!(
                after > Duration::from_millis(2_400) && after <= Duration::from_millis(2_500),
                "{after:?}"
            );
        }
        let soon = policy
            .requeue_after(&handed_over(Duration::from_millis(300)), 0)
            .unwrap();
        assert_eq!(soon, Duration::from_secs(1), "SQS delays by whole seconds");
    }

    #[test]
    fn a_message_given_back_returns_when_the_holder_is_expected_to_be_done_and_not_all_at_once() {
        let policy = RedeliveryPolicy::default();
        let held = held_expecting(Duration::from_secs(40), Duration::from_secs(3));
        let after: Vec<Duration> = (0..200)
            .map(|_| policy.requeue_after(&held, 0).unwrap())
            .collect();
        assert!(
            after
                .iter()
                .all(|d| *d >= Duration::from_millis(2_900) && *d <= Duration::from_secs(4)),
            "{after:?}"
        );
        assert!(
            after.iter().collect::<HashSet<_>>().len() > 100,
            "spread out"
        );
    }

    #[test]
    fn a_holder_past_its_expected_step_is_looked_at_again_within_a_second() {
        let policy = RedeliveryPolicy::default();
        let overdue = held_expecting(Duration::from_secs(40), Duration::ZERO);
        assert!(
            (0..200).all(|_| policy.requeue_after(&overdue, 0).unwrap() <= Duration::from_secs(1))
        );
    }

    #[test]
    fn an_expected_release_past_the_holders_deadline_is_not_waited_for_beyond_it() {
        let policy = RedeliveryPolicy::default();
        // The holder's deadline is 5 s away; the last step took a minute.
        let slow = held_expecting(Duration::from_secs(15), Duration::from_secs(60));
        assert!((0..200).all(|_| {
            let after = policy.requeue_after(&slow, 0).unwrap();
            after <= Duration::from_secs(5) && after >= Duration::from_millis(4_900)
        }));
    }

    #[test]
    fn on_a_fifo_queue_a_held_lease_with_an_expected_release_is_retried_on_the_usual_schedule() {
        let policy = RedeliveryPolicy::default();
        let held = held_expecting(Duration::from_secs(40), Duration::from_secs(3));
        let Disposition::RetryAfter(after) = policy.decide(&held, 1, Some(8)) else {
            panic!("a held lease is retried");
        };
        assert!(
            after >= Duration::from_millis(2_900) && after <= Duration::from_secs(5),
            "not the holder's deadline, 30 s away: {after:?}"
        );
    }

    #[test]
    fn a_busy_discount_sends_its_message_again_to_come_back_within_a_second() {
        let policy = RedeliveryPolicy::default();
        // The lease outlives its holder's deadline by 10 s: the holder may work for 30 s
        // more, but holders take well under a second.
        let after = policy
            .requeue_after(&held_until(Duration::from_secs(40)), 0)
            .unwrap();
        assert!(after <= Duration::from_secs(1), "{after:?}");
    }

    #[test]
    fn a_message_sent_again_and_again_waits_longer_each_time_but_never_past_the_holders_deadline() {
        let policy = RedeliveryPolicy::default();
        // The holder's deadline is 30 s away.
        let held = held_until(Duration::from_secs(40));
        let third: Vec<Duration> = (0..200)
            .map(|_| policy.requeue_after(&held, 2).unwrap())
            .collect();
        assert!(third.iter().all(|d| *d <= Duration::from_secs(4)));
        assert!(
            third.iter().any(|d| *d > Duration::from_secs(2)),
            "it grows"
        );
        // The holder's deadline is 2 s away.
        let ending = held_until(Duration::from_secs(12));
        assert!(
            (0..200).all(|_| policy.requeue_after(&ending, 10).unwrap() <= Duration::from_secs(2))
        );
    }

    #[test]
    fn a_lease_its_holder_left_behind_is_waited_out_to_its_expiry() {
        let policy = RedeliveryPolicy::default();
        // The holder's deadline has passed (a crash, or a write left pending).
        let after = policy
            .requeue_after(&held_until(Duration::from_secs(6)), 0)
            .unwrap();
        assert!(
            after >= Duration::from_secs(5) && after <= Duration::from_secs(7),
            "{after:?}"
        );
    }

    #[test]
    fn a_spent_rate_budget_sends_the_message_again_for_when_a_slot_is_free() {
        let policy = RedeliveryPolicy::default();
        let over_budget = |ready_in| {
            SyncError::Polar(PolarFailure::new(
                PolarFailureKind::OverBudget { ready_in },
                "spent",
            ))
        };
        let after = policy
            .requeue_after(&over_budget(Duration::from_secs(7)), 0)
            .unwrap();
        assert!(
            after >= Duration::from_secs(7),
            "not before the slot: {after:?}"
        );
        // Turned away many times, it still comes back at its place in line.
        let again: Vec<Duration> = (0..200)
            .map(|_| {
                policy
                    .requeue_after(&over_budget(Duration::from_secs(7)), 8)
                    .unwrap()
            })
            .collect();
        assert!(again
            .iter()
            .all(|d| *d >= Duration::from_secs(7) && *d <= Duration::from_secs(8)));
        assert!(
            again.iter().collect::<HashSet<_>>().len() > 100,
            "spread out"
        );
        let far = policy
            .requeue_after(&over_budget(Duration::from_secs(3600)), 0)
            .unwrap();
        assert_eq!(far, MAX_REQUEUE_DELAY, "SQS delays by at most 15 minutes");
    }

    #[test]
    fn only_contention_and_a_spent_budget_send_a_message_again() {
        let policy = RedeliveryPolicy::default();
        assert_eq!(
            policy.requeue_after(&SyncError::OrderNotFound(order()), 0),
            None
        );
        assert_eq!(policy.requeue_after(&SyncError::DeadlineTooClose, 0), None);
    }

    #[test]
    fn a_busy_discount_whose_journal_holds_the_order_sends_the_message_again_too() {
        let policy = RedeliveryPolicy::default();
        let journaled = SyncError::WriteMayHaveLanded(Arc::new(held_until(Duration::from_secs(6))));
        assert!(policy.requeue_after(&journaled, 0).is_some());
        let failed_write = SyncError::WriteMayHaveLanded(Arc::new(SyncError::DeadlineTooClose));
        assert_eq!(policy.requeue_after(&failed_write, 0), None);
    }

    #[test]
    fn on_a_fifo_queue_a_held_lease_delays_the_message_until_the_lease_is_free() {
        let policy = RedeliveryPolicy::default();
        let Disposition::RetryAfter(after) =
            policy.decide(&held_until(Duration::from_secs(40)), 1, Some(8))
        else {
            panic!("a held lease is retried");
        };
        assert!(after >= Duration::from_secs(29), "{after:?}");
    }

    #[test]
    fn a_rate_limited_message_waits_at_least_the_retry_after() {
        let policy = RedeliveryPolicy::default();
        let limited = SyncError::Polar(PolarFailure::new(
            PolarFailureKind::RateLimited {
                retry_after: Some(Duration::from_secs(60)),
            },
            "429",
        ));
        for _ in 0..20 {
            let Disposition::RetryAfter(after) = policy.decide(&limited, 1, Some(8)) else {
                panic!("a 429 is retried");
            };
            assert!(after >= Duration::from_secs(60));
        }
    }
}
