//! The container's share of Polar's rate limit (500 requests/min per organization, shared
//! by every token and container): requests are spaced evenly, with a burst allowed, and
//! a 429 pauses them all until its `retry-after`.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Polar's own limit: requests per minute per organization, whatever the token.
pub const POLAR_LIMIT_PER_MINUTE: u32 = 500;
/// The sandbox's (`sandbox-api.polar.sh`), lower than production's.
pub const POLAR_SANDBOX_LIMIT_PER_MINUTE: u32 = 100;

/// One container's share of the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateShare {
    /// Evenly spaced requests a minute.
    pub per_minute: u32,
    /// Requests that may go out back to back while the container has been quiet.
    pub burst: u32,
}

impl RateShare {
    /// The share of one of `containers` that together spend `budget` requests a minute of
    /// an organization's `limit` (L = 500 in production): R/N a minute, and a burst of
    /// (L − R)/N, the headroom over the budget split between the containers. The limiter
    /// admits at most `per_minute + burst` requests in any 60 s, so all N containers
    /// together stay within N·(R/N + (L − R)/N) ≤ L. With the defaults (L = 500, R = 400,
    /// N = 2): 200 a minute and bursts of 50.
    pub fn of(limit: u32, budget_per_minute: u32, containers: u32) -> Self {
        let containers = containers.max(1);
        let burst = (limit.saturating_sub(budget_per_minute) / containers).max(1);
        // A budget of the whole limit leaves no headroom: the burst of one comes out of
        // the even share.
        let per_minute = (budget_per_minute / containers)
            .min((limit / containers).saturating_sub(burst))
            .max(1);
        Self { per_minute, burst }
    }
}

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
    pub fn new(share: RateShare) -> Self {
        Self::per_minute(share.per_minute, share.burst)
    }

    /// `per_minute` requests a minute on average, up to `burst` of them back to back.
    pub fn per_minute(per_minute: u32, burst: u32) -> Self {
        let spacing = Duration::from_secs(60) / per_minute.max(1);
        Self {
            spacing,
            burst_tolerance: spacing * burst.saturating_sub(1),
            next_due: Mutex::new(None),
        }
    }

    /// Polar answered 429. Its limit is the organization's, so no request of this container
    /// goes out before `retry_after` has passed, and none in a burst right after.
    pub fn pause_for(&self, retry_after: Duration) {
        let mut next_due = self.lock();
        let resume = Instant::now() + retry_after + self.burst_tolerance;
        *next_due = Some(next_due.map_or(resume, |due| due.max(resume)));
    }

    /// Reserves a slot and waits for it, unless it would have to wait longer than `max_wait`.
    pub async fn admit(&self, max_wait: Duration) -> Result<(), OverBudget> {
        let (starts, _) = self.reserve(1, max_wait)?;
        tokio::time::sleep_until(starts).await;
        Ok(())
    }

    /// Reserves two consecutive slots at once, waits for the first and hands back the
    /// second: a write that follows a read then has its slot from the start, and a read
    /// never goes out to be wasted because the budget had nothing left for its write.
    /// Refused unless both slots come within `max_wait`.
    pub async fn admit_with_next(&self, max_wait: Duration) -> Result<ReservedSlot, OverBudget> {
        let (starts, next_starts) = self.reserve(2, max_wait)?;
        tokio::time::sleep_until(starts).await;
        Ok(ReservedSlot {
            starts: next_starts,
        })
    }

    /// How long until `slots` consecutive slots could all have started, reserving nothing.
    pub fn ready_in(&self, slots: u32) -> Duration {
        let now = Instant::now();
        let due = Self::due(*self.lock(), now);
        self.start_of(due, now, slots.saturating_sub(1)) - now
    }

    /// Reserves `slots` consecutive slots, all or none (GCRA); gives when the first and the
    /// last may start.
    fn reserve(&self, slots: u32, max_wait: Duration) -> Result<(Instant, Instant), OverBudget> {
        let mut next_due = self.lock();
        let now = Instant::now();
        let due = Self::due(*next_due, now);
        let last = self.start_of(due, now, slots - 1);
        let wait = last - now;
        if wait > max_wait {
            return Err(OverBudget { wait });
        }
        *next_due = Some(due + self.spacing * slots);
        Ok((self.start_of(due, now, 0), last))
    }

    /// When the next slot is due if requests were perfectly spaced (never in the past).
    fn due(next_due: Option<Instant>, now: Instant) -> Instant {
        next_due.map_or(now, |due| due.max(now))
    }

    /// When the `slot`-th slot from `due` (0: `due`'s own) may start, the burst allowed.
    fn start_of(&self, due: Instant, now: Instant, slot: u32) -> Instant {
        now + (due + self.spacing * slot).saturating_duration_since(now + self.burst_tolerance)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.next_due
            .lock()
            .expect("the limiter never panics holding its lock")
    }
}

/// A slot reserved ahead by [`RateLimiter::admit_with_next`]. Unused, it is simply spent:
/// the container sends less than its share, never more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReservedSlot {
    starts: Instant,
}

impl ReservedSlot {
    pub async fn wait(self) {
        tokio::time::sleep_until(self.starts).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The most requests in any window of `window` (closed at both ends).
    fn most_in_any(window: Duration, times: &[Duration]) -> usize {
        (0..times.len())
            .map(|i| {
                times[i..]
                    .iter()
                    .take_while(|t| **t <= times[i] + window)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn the_burst_is_polars_headroom_over_the_budget_split_between_the_containers() {
        assert_eq!(
            RateShare::of(POLAR_LIMIT_PER_MINUTE, 400, 2),
            RateShare {
                per_minute: 200,
                burst: 50
            }
        );
        assert_eq!(
            RateShare::of(POLAR_LIMIT_PER_MINUTE, 300, 4),
            RateShare {
                per_minute: 75,
                burst: 50
            }
        );
        assert_eq!(
            RateShare::of(POLAR_LIMIT_PER_MINUTE, 500, 2),
            RateShare {
                per_minute: 249,
                burst: 1
            }
        );
        assert_eq!(
            RateShare::of(POLAR_SANDBOX_LIMIT_PER_MINUTE, 80, 2),
            RateShare {
                per_minute: 40,
                burst: 10
            },
            "the sandbox's headroom is its own"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn containers_spending_flat_out_never_send_polar_more_than_its_limit_in_any_minute() {
        const PRODUCTION: u32 = POLAR_LIMIT_PER_MINUTE;
        const SANDBOX: u32 = POLAR_SANDBOX_LIMIT_PER_MINUTE;
        for (limit, budget, containers) in [
            (PRODUCTION, 400, 2),
            (PRODUCTION, 400, 3),
            (PRODUCTION, 300, 4),
            (PRODUCTION, 500, 2),
            (PRODUCTION, 450, 7),
            (PRODUCTION, 1, 1),
            (SANDBOX, 80, 2),
            (SANDBOX, 80, 4),
            (SANDBOX, 100, 3),
        ] {
            let share = RateShare::of(limit, budget, containers);
            let start = Instant::now();
            // Each container starts quiet, with its whole burst, and then spends its share.
            let flat_out = (0..containers).map(|_| async move {
                let limiter = RateLimiter::new(share);
                let mut sent = Vec::new();
                while start.elapsed() < Duration::from_secs(180) {
                    limiter.admit(Duration::from_secs(3600)).await.unwrap();
                    sent.push(start.elapsed());
                }
                sent
            });
            let mut all: Vec<Duration> = futures_util::future::join_all(flat_out)
                .await
                .into_iter()
                .flatten()
                .collect();
            all.sort();
            let most = most_in_any(Duration::from_secs(60), &all);
            assert!(
                most <= limit as usize,
                "L = {limit}, R = {budget}, N = {containers}: {most} requests in 60 s"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_every_request_until_its_retry_after_and_spends_no_burst() {
        let limiter = RateLimiter::per_minute(600, 10);
        let start = Instant::now();
        limiter.admit(Duration::from_secs(60)).await.unwrap();
        limiter.pause_for(Duration::from_secs(3));
        limiter.admit(Duration::from_secs(60)).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        limiter.admit(Duration::from_secs(60)).await.unwrap();
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(3100),
            "spaced, no burst"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_shorter_than_the_queue_of_reserved_slots_changes_nothing() {
        let limiter = RateLimiter::per_minute(60, 1);
        let start = Instant::now();
        limiter.admit(Duration::from_secs(60)).await.unwrap();
        limiter.pause_for(Duration::from_millis(10));
        limiter.admit(Duration::from_secs(60)).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

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

    #[tokio::test(start_paused = true)]
    async fn a_read_and_its_write_get_consecutive_slots_or_neither() {
        let limiter = RateLimiter::per_minute(60, 1);
        let start = Instant::now();
        let write_slot = limiter
            .admit_with_next(Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO);
        // Another request takes the slot after the reserved one, not before it.
        let refused = limiter.admit(Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(refused.wait, Duration::from_secs(2));
        write_slot.wait().await;
        assert_eq!(start.elapsed(), Duration::from_secs(1));

        // 1 s to the next slot, 2 s to the one after: a 1.5 s wait fits a read, not a pair.
        let refused = limiter
            .admit_with_next(Duration::from_millis(1500))
            .await
            .unwrap_err();
        assert_eq!(refused.wait, Duration::from_secs(2));
        limiter.admit(Duration::from_millis(1500)).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn asking_when_slots_are_free_reserves_nothing() {
        let limiter = RateLimiter::per_minute(60, 1);
        assert_eq!(limiter.ready_in(2), Duration::from_secs(1));
        limiter.admit(Duration::ZERO).await.unwrap();
        assert_eq!(limiter.ready_in(1), Duration::from_secs(1));
        assert_eq!(limiter.ready_in(2), Duration::from_secs(2));
        assert_eq!(limiter.ready_in(2), Duration::from_secs(2), "still");
    }
}
