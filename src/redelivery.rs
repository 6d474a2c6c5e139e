//! What becomes of a message that was not synced: back to the queue after a delay that
//! grows with each receive, or into the dead-letter queue with its reason.

use std::time::Duration;

use crate::backoff::Backoff;
use crate::failure::FailureClass;
use crate::sync::SyncError;

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
                base: Duration::from_secs(5),
                max: Duration::from_secs(15 * 60),
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

impl RedeliveryPolicy {
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

    fn order() -> OrderId {
        OrderId::parse("ord_1".into()).unwrap()
    }

    fn lease_held() -> SyncError {
        SyncError::LeaseHeld {
            discount: DiscountId::parse("9b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a10").unwrap(),
            expires_at_ms: 0,
        }
    }

    #[test]
    fn the_delay_ceiling_doubles_per_receive_up_to_fifteen_minutes() {
        let policy = RedeliveryPolicy::default();
        let secs: Vec<_> = (1..=10)
            .map(|n| policy.backoff.ceiling(n).as_secs())
            .collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 320, 640, 900, 900]);
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

    #[test]
    fn a_message_held_back_by_a_lease_returns_once_the_lease_has_expired() {
        let policy = RedeliveryPolicy::default();
        let now_ms = crate::deadline::epoch_ms(std::time::SystemTime::now());
        let held = SyncError::LeaseHeld {
            discount: DiscountId::parse("9b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a10").unwrap(),
            expires_at_ms: now_ms + 40_000,
        };
        let Disposition::RetryAfter(after) = policy.decide(&held, 1, Some(8)) else {
            panic!("a held lease is retried");
        };
        assert!(after >= Duration::from_secs(39), "{after:?}");
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
