//! The container's share of Polar's rate limit (500 requests/min per organization, shared
//! by every token and container): requests are spaced evenly, with a small burst allowed.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct RateLimiter {
    spacing: Duration,
    burst_tolerance: Duration,
    /// When the next request would be due if requests were perfectly spaced (GCRA).
    next_due: Mutex<Option<Instant>>,
}

/// The budget is spent: the next slot is later than the caller can wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the rate budget has no slot for {wait:?}")]
pub struct OverBudget {
    pub wait: Duration,
}

impl RateLimiter {
    /// `per_minute` requests a minute on average, up to `burst` of them back to back.
    pub fn per_minute(per_minute: u32, burst: u32) -> Self {
        let spacing = Duration::from_secs(60) / per_minute.max(1);
        Self {
            spacing,
            burst_tolerance: spacing * burst.saturating_sub(1),
            next_due: Mutex::new(None),
        }
    }

    /// Reserves a slot and waits for it, unless it would have to wait longer than `max_wait`.
    pub async fn admit(&self, max_wait: Duration) -> Result<(), OverBudget> {
        let wait = {
            let mut next_due = self
                .next_due
                .lock()
                .expect("the limiter never panics holding its lock");
            let now = Instant::now();
            let due = next_due.map_or(now, |due| due.max(now));
            let wait = due.saturating_duration_since(now + self.burst_tolerance);
            if wait > max_wait {
                return Err(OverBudget { wait });
            }
            *next_due = Some(due + self.spacing);
            wait
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_passes_at_once_and_the_rest_is_spaced_out() {
        let limiter = RateLimiter::per_minute(60, 3);
        let start = Instant::now();
        for _ in 0..3 {
            limiter.admit(Duration::from_secs(60)).await.unwrap();
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        limiter.admit(Duration::from_secs(60)).await.unwrap();
        limiter.admit(Duration::from_secs(60)).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn over_a_minute_no_more_than_the_budget_plus_the_burst_is_admitted() {
        let limiter = RateLimiter::per_minute(120, 5);
        let start = Instant::now();
        let mut admitted = 0;
        while limiter.admit(Duration::from_secs(60)).await.is_ok() {
            if start.elapsed() >= Duration::from_secs(60) {
                break;
            }
            admitted += 1;
        }
        assert_eq!(admitted, 120 + 5 - 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_cannot_wait_long_enough_is_refused_without_using_a_slot() {
        let limiter = RateLimiter::per_minute(1, 1);
        limiter.admit(Duration::ZERO).await.unwrap();
        let refused = limiter.admit(Duration::from_secs(10)).await.unwrap_err();
        assert_eq!(refused.wait, Duration::from_secs(60));
        // The refusal reserved nothing: the next slot is still 60 s out, not 120 s.
        let refused_again = limiter.admit(Duration::from_secs(10)).await.unwrap_err();
        assert_eq!(refused_again.wait, Duration::from_secs(60));
    }
}
