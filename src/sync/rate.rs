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

/// The budget for all of an organization's Polar requests, split between the containers
/// that may send them: the scheduled reconciliation gets a small share of its own, and
/// the queue's containers split the rest (the template reserves one more concurrent
/// execution than the queue's `MaximumConcurrency`, for the reconciliation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateShares {
    pub batches: RateShare,
    pub reconciliation: RateShare,
}

impl RateShares {
    /// The reconciliation's share: a twentieth of the budget (20 a minute of the default
    /// 400: 10 journals a minute), with no burst; the queue's `containers` split the rest
    /// of the budget and of Polar's headroom over it, less what each container, and the
    /// reconciliation, may send as soon as it starts ([`START_ALLOWANCE`]).
    pub fn of(limit: u32, budget_per_minute: u32, containers: u32) -> Self {
        let reconciliation = (budget_per_minute / 20).max(1);
        let start_allowances = START_ALLOWANCE * (containers.max(1) + 1);
        Self {
            batches: RateShare::of(
                limit.saturating_sub(reconciliation + start_allowances),
                budget_per_minute.saturating_sub(reconciliation),
                containers,
            ),
            reconciliation: RateShare {
                per_minute: reconciliation,
                burst: 1,
            },
        }
    }
}

/// What a new container may send as soon as it starts: one step, a read and its write.
/// The rest of its burst it earns by staying quiet: the container it replaces may have
/// spent its own within the last minute, and Polar counts both. The split pays for it.
pub const START_ALLOWANCE: u32 = 2;

/// After a 429 the share is halved, down to this fraction of the configured one at most.
const MAX_SLOWDOWN: u32 = 8;
/// A halved share grows back by this fraction of the configured one a minute, up to 9/10
/// of the share the 429 came at, where it stays for [`CEILING_HOLD`], then creeps up by
/// [`PROBE_PER_MINUTE`]. Containers that together spend more than Polar allows (a
/// `MAXIMUM_CONCURRENCY` that drifted from the trigger's, another tool on the same
/// organization) so lower their ceilings by a tenth on each halving until they fit, and
/// probe above them slowly; 429s from a passing cause cost a tenth of the share for a
/// while.
const RECOVERY_PER_MINUTE: f64 = 0.1;
const CEILING_AFTER_429: f64 = 0.9;
const CEILING_HOLD: Duration = Duration::from_secs(30 * 60);
const PROBE_PER_MINUTE: f64 = 0.01;
/// 429s this close together are one signal: requests in flight together are refused
/// together.
const ONE_SIGNAL: Duration = Duration::from_secs(5);
/// A share is halved on a second signal within this long: a lone 429 (a passing cause) only
/// pauses, 429s that keep coming mean the shares add up to too much. Long enough to see a
/// container whose pauses make it meet Polar's refusal once a minute or so.
const SUSTAINED: Duration = Duration::from_secs(5 * 60);

#[derive(Debug)]
pub struct RateLimiter {
    spacing: Duration,
    burst_tolerance: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When the next request would be due if requests were perfectly spaced (GCRA).
    next_due: Option<Instant>,
    /// Set by a 429: the spacing then, from which the share grows back.
    slowed: Option<Slowdown>,
    /// The last 429 that counted as a signal of its own.
    last_signal: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Slowdown {
    since: Instant,
    /// The share (requests a minute) just after the 429, and the one it came at, less a tenth.
    halved: f64,
    ceiling: f64,
}

/// The budget is spent: the next slot is later than the caller can wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the rate budget has no slot for {wait:?}")]
pub struct OverBudget {
    pub wait: Duration,
}

impl RateLimiter {
    /// A container's limiter as it starts: with [`START_ALLOWANCE`] of its burst.
    pub fn new(share: RateShare) -> Self {
        let limiter = Self::per_minute(share.per_minute, share.burst);
        let spent = limiter
            .burst_tolerance
            .saturating_sub(limiter.spacing * (START_ALLOWANCE - 1));
        limiter.lock().next_due = Some(Instant::now() + spent);
        limiter
    }

    /// `per_minute` requests a minute on average, up to `burst` of them back to back, the
    /// burst available at once.
    pub fn per_minute(per_minute: u32, burst: u32) -> Self {
        let spacing = Duration::from_secs(60) / per_minute.max(1);
        Self {
            spacing,
            burst_tolerance: spacing * burst.saturating_sub(1),
            state: Mutex::default(),
        }
    }

    /// Polar answered 429. Its limit is the organization's, so no request of this container
    /// goes out before `retry_after` has passed, and none in a burst right after. And since
    /// the containers' shares add up to more than Polar allows, this one's is halved; it
    /// grows back slowly. Returns the share now, in requests a minute.
    pub fn pause_for(&self, retry_after: Duration) -> f64 {
        let mut state = self.lock();
        let now = Instant::now();
        let resume = now + retry_after + self.burst_tolerance;
        state.next_due = Some(state.next_due.map_or(resume, |due| due.max(resume)));
        let since_last = state
            .last_signal
            .map(|at| now.saturating_duration_since(at));
        if since_last.is_some_and(|since| since < ONE_SIGNAL) {
            return per_minute(self.spacing_at(&state, now));
        }
        state.last_signal = Some(now);
        if since_last.is_some_and(|since| since < SUSTAINED) {
            let at = per_minute(self.spacing_at(&state, now));
            let floor = per_minute(self.spacing) / f64::from(MAX_SLOWDOWN);
            state.slowed = Some(Slowdown {
                since: now,
                halved: (at / 2.0).max(floor),
                ceiling: (at * CEILING_AFTER_429).max(floor),
            });
        }
        per_minute(self.spacing_at(&state, now))
    }

    /// The share now, in requests a minute.
    pub fn share_per_minute(&self) -> f64 {
        per_minute(self.spacing_at(&self.lock(), Instant::now()))
    }

    /// The spacing at `now`: the configured one, or a halved share growing back.
    fn spacing_at(&self, state: &State, now: Instant) -> Duration {
        let Some(slowed) = state.slowed else {
            return self.spacing;
        };
        let minutes = now.saturating_duration_since(slowed.since).as_secs_f64() / 60.0;
        let configured = per_minute(self.spacing);
        let probing = now.saturating_duration_since(slowed.since + CEILING_HOLD);
        let ceiling = slowed.ceiling + configured * PROBE_PER_MINUTE * probing.as_secs_f64() / 60.0;
        let grown = (slowed.halved + configured * RECOVERY_PER_MINUTE * minutes).min(ceiling);
        if grown >= configured {
            self.spacing
        } else {
            Duration::from_secs_f64(60.0 / grown)
        }
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
        let state = self.lock();
        let now = Instant::now();
        let spacing = self.spacing_at(&state, now);
        let due = Self::due(state.next_due, now);
        self.start_of(due, now, spacing, slots.saturating_sub(1)) - now
    }

    /// Reserves `slots` consecutive slots, all or none (GCRA); gives when the first and the
    /// last may start.
    fn reserve(&self, slots: u32, max_wait: Duration) -> Result<(Instant, Instant), OverBudget> {
        let mut state = self.lock();
        let now = Instant::now();
        let spacing = self.spacing_at(&state, now);
        let due = Self::due(state.next_due, now);
        let last = self.start_of(due, now, spacing, slots - 1);
        let wait = last - now;
        if wait > max_wait {
            return Err(OverBudget { wait });
        }
        state.next_due = Some(due + spacing * slots);
        Ok((self.start_of(due, now, spacing, 0), last))
    }

    /// When the next slot is due if requests were perfectly spaced (never in the past).
    fn due(next_due: Option<Instant>, now: Instant) -> Instant {
        next_due.map_or(now, |due| due.max(now))
    }

    /// When the `slot`-th slot from `due` (0: `due`'s own) may start, the burst allowed.
    fn start_of(&self, due: Instant, now: Instant, spacing: Duration, slot: u32) -> Instant {
        now + (due + spacing * slot).saturating_duration_since(now + self.burst_tolerance)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("the limiter never panics holding its lock")
    }
}

fn per_minute(spacing: Duration) -> f64 {
    60.0 / spacing.as_secs_f64()
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

    /// Sends flat out on `limiter` until `until`, recording when.
    async fn flat_out(limiter: &RateLimiter, start: Instant, until: Duration) -> Vec<Duration> {
        let mut sent = Vec::new();
        while let Some(left) = until.checked_sub(start.elapsed()) {
            if limiter.admit(left).await.is_err() || start.elapsed() >= until {
                break;
            }
            sent.push(start.elapsed());
        }
        tokio::time::sleep_until(start + until).await;
        sent
    }

    #[tokio::test(start_paused = true)]
    async fn containers_spending_flat_out_never_send_polar_more_than_its_limit_in_any_minute() {
        const PRODUCTION: u32 = POLAR_LIMIT_PER_MINUTE;
        const SANDBOX: u32 = POLAR_SANDBOX_LIMIT_PER_MINUTE;
        const RUN: Duration = Duration::from_secs(240);
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
            let shares = RateShares::of(limit, budget, containers);
            let start = Instant::now();
            // Each of the queue's containers is replaced every 61 s (a crash, a scale-in and
            // out) by one that starts at once; the first of each was quiet before, with its
            // whole burst. The reconciliation runs flat out beside them, as after an outage,
            // in a container of its own, replaced every 100 s.
            let queue_slots = (0..containers).map(|_| async move {
                let mut sent = Vec::new();
                let mut limiter =
                    RateLimiter::per_minute(shares.batches.per_minute, shares.batches.burst);
                let mut until = Duration::ZERO;
                while until < RUN {
                    until = (until + Duration::from_secs(61)).min(RUN);
                    sent.extend(flat_out(&limiter, start, until).await);
                    limiter = RateLimiter::new(shares.batches);
                }
                sent
            });
            let reconciliation = async move {
                let mut sent = Vec::new();
                let mut until = Duration::ZERO;
                while until < RUN {
                    until = (until + Duration::from_secs(100)).min(RUN);
                    let limiter = RateLimiter::new(shares.reconciliation);
                    sent.extend(flat_out(&limiter, start, until).await);
                }
                sent
            };
            let (slots, reconciled) = futures_util::future::join(
                futures_util::future::join_all(queue_slots),
                reconciliation,
            )
            .await;
            let mut all: Vec<Duration> = slots.into_iter().flatten().chain(reconciled).collect();
            all.sort();
            let most = most_in_any(Duration::from_secs(60), &all);
            assert!(
                most <= limit as usize,
                "L = {limit}, R = {budget}, N = {containers}: {most} requests in 60 s"
            );
            assert!(
                most as f64 >= 0.9 * budget as f64,
                "L = {limit}, R = {budget}, N = {containers}: only {most} requests in 60 s"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_container_starts_with_one_step_of_its_burst() {
        let limiter = RateLimiter::new(RateShare {
            per_minute: 60,
            burst: 10,
        });
        let start = Instant::now();
        for _ in 0..START_ALLOWANCE {
            limiter.admit(Duration::from_secs(60)).await.unwrap();
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "one step at once");
        limiter.admit(Duration::from_secs(60)).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(1), "then spaced");
        // Quiet for as long as the burst takes to earn, it has it.
        tokio::time::sleep(Duration::from_secs(20)).await;
        let quiet = Instant::now();
        for _ in 0..10 {
            limiter.admit(Duration::from_secs(60)).await.unwrap();
        }
        assert_eq!(quiet.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn sustained_429s_halve_the_share_down_to_an_eighth_and_it_grows_back_to_a_lower_ceiling_for_a_while(
    ) {
        let limiter = RateLimiter::per_minute(200, 1);
        assert_eq!(
            limiter.pause_for(Duration::ZERO),
            200.0,
            "a lone 429 only pauses"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            limiter.pause_for(Duration::ZERO),
            200.0,
            "429s together are one signal"
        );
        for expected in [100.0, 50.0, 25.0, 25.0] {
            tokio::time::sleep(ONE_SIGNAL).await;
            let share = limiter.pause_for(Duration::ZERO);
            assert!((share - expected).abs() < 2.0, "{share}, not {expected}");
        }
        // An eighth at least; then 10% of 200 a minute up to 9/10 of the share the last
        // 429 came at (about 25), where it stays for half an hour.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let share = limiter.share_per_minute();
        assert!((share - 24.4).abs() < 1.5, "{share}");
        tokio::time::sleep(Duration::from_secs(20 * 60)).await;
        let share = limiter.share_per_minute();
        assert!((share - 24.4).abs() < 1.5, "{share}");
        // Then 1% of 200 a minute: two hours to the configured share.
        tokio::time::sleep(Duration::from_secs(2 * 60 * 60)).await;
        assert_eq!(
            limiter.share_per_minute(),
            200.0,
            "back to the configured share"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn containers_whose_shares_add_up_to_more_than_polar_allows_settle_below_it() {
        // Four containers, each configured as one of two: 4 x (190 + 50) a minute against
        // Polar's 500, which answers 429 with the time until its window has room.
        let shares = RateShares::of(POLAR_LIMIT_PER_MINUTE, 400, 2);
        let start = Instant::now();
        let accepted = std::sync::Mutex::new(std::collections::VecDeque::<Instant>::new());
        let refused = std::sync::Mutex::new(Vec::<Duration>::new());
        let window = Duration::from_secs(60);
        let polar = |now: Instant| -> Result<(), Duration> {
            let mut accepted = accepted.lock().unwrap();
            while accepted.front().is_some_and(|t| *t + window <= now) {
                accepted.pop_front();
            }
            if accepted.len() < POLAR_LIMIT_PER_MINUTE as usize {
                accepted.push_back(now);
                Ok(())
            } else {
                refused.lock().unwrap().push(now - start);
                Err(*accepted.front().unwrap() + window - now)
            }
        };
        let containers = (0..4).map(|_| async {
            let limiter = RateLimiter::new(shares.batches);
            while start.elapsed() < Duration::from_secs(40 * 60) {
                limiter.admit(Duration::from_secs(3600)).await.unwrap();
                if let Err(retry_after) = polar(Instant::now()) {
                    limiter.pause_for(retry_after);
                }
            }
        });
        futures_util::future::join_all(containers).await;
        let refused = refused.into_inner().unwrap();
        let in_minutes = |from: u64, to: u64| {
            refused
                .iter()
                .filter(|t| (from * 60..to * 60).contains(&t.as_secs()))
                .count()
        };
        let first = in_minutes(0, 10);
        let last = in_minutes(30, 40);
        eprintln!(
            "429s in minutes 0-10: {first}, 10-20: {}, 20-30: {}, 30-40: {last}",
            in_minutes(10, 20),
            in_minutes(20, 30)
        );
        // Settled within minutes, and quiet until the ceilings are tried again half an hour
        // after the last 429, which costs no more than the first settling did.
        let settled = in_minutes(10, 30);
        assert!(
            settled == 0 && last <= first && first < 20,
            "429s in minutes 0-10: {first}, 10-30: {settled}, 30-40: {last}"
        );
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
