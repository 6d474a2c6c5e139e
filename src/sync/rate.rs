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
    /// 400: 10 journals a minute), with no burst. The queue's `containers` split the rest
    /// of the budget, and Polar's headroom over it into bursts for twice as many: a
    /// container starts with its whole burst (a cold container's first batch goes out at
    /// once), and the one it replaced (a crash, a scale-in and out) may have spent its own
    /// within the same minute. So each of the N slots sends at most R'/N + 2b in any 60 s,
    /// and all of them with the reconciliation N·(R'/N + 2b) + r + 1 ≤ L.
    pub fn of(limit: u32, budget_per_minute: u32, containers: u32) -> Self {
        let containers = containers.max(1);
        let reconciliation = (budget_per_minute / 20).max(1);
        let headroom = limit.saturating_sub(budget_per_minute + 1);
        let burst = (headroom / (2 * containers)).max(1);
        // A budget of the whole limit leaves no headroom: the bursts of one come out of the
        // even share.
        let per_minute = (budget_per_minute.saturating_sub(reconciliation) / containers)
            .min((limit.saturating_sub(reconciliation + 1) / containers).saturating_sub(2 * burst))
            .max(1);
        Self {
            batches: RateShare { per_minute, burst },
            reconciliation: RateShare {
                per_minute: reconciliation,
                burst: 1,
            },
        }
    }
}

/// On 429s that keep coming the share is cut by a quarter, down to half the configured one
/// at most: enough for twice as many containers as configured, while 429s from elsewhere
/// (another tool's burst) cost at most half the share, for a while.
const CUT: f64 = 0.75;
const FLOOR: f64 = 0.5;
/// A cut share grows back by this fraction of the configured one a minute, up to 9/10 of
/// the share it was cut from, where it stays for [`CEILING_HOLD`], then creeps up by
/// [`PROBE_PER_MINUTE`]. Containers that together spend more than Polar allows (a
/// `MAXIMUM_CONCURRENCY` that drifted from the trigger's, another tool on the same
/// organization) so lower their ceilings by a tenth on each cut until they fit, and probe
/// above them slowly; 429s from elsewhere cost a tenth of the share for a while.
const RECOVERY_PER_MINUTE: f64 = 0.1;
const CEILING_AFTER_429: f64 = 0.9;
const CEILING_HOLD: Duration = Duration::from_secs(30 * 60);
const PROBE_PER_MINUTE: f64 = 0.01;
/// 429s this close together are one signal: requests in flight together are refused
/// together.
const ONE_SIGNAL: Duration = Duration::from_secs(5);
/// A share is cut on a second signal within this long: a lone 429 (a passing cause) only
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
    cut: f64,
    ceiling: f64,
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
    /// goes out before `retry_after` has passed, and none in a burst right after. And when
    /// 429s keep coming although this container keeps to its share, the shares add up to
    /// more than Polar allows: this one's is cut. Returns the share when it was cut, in
    /// requests a minute.
    pub fn pause_for(&self, retry_after: Duration) -> Option<f64> {
        let mut state = self.lock();
        let now = Instant::now();
        let resume = now + retry_after + self.burst_tolerance;
        state.next_due = Some(state.next_due.map_or(resume, |due| due.max(resume)));
        let since_last = state
            .last_signal
            .map(|at| now.saturating_duration_since(at));
        if since_last.is_some_and(|since| since < ONE_SIGNAL) {
            return None;
        }
        state.last_signal = Some(now);
        if since_last.is_none_or(|since| since >= SUSTAINED) {
            return None;
        }
        let at = per_minute(self.spacing_at(&state, now));
        let floor = per_minute(self.spacing) * FLOOR;
        state.slowed = Some(Slowdown {
            since: now,
            cut: (at * CUT).max(floor),
            ceiling: (at * CEILING_AFTER_429).max(floor),
        });
        Some(per_minute(self.spacing_at(&state, now)))
    }

    /// The share now, in requests a minute.
    pub fn share_per_minute(&self) -> f64 {
        per_minute(self.spacing_at(&self.lock(), Instant::now()))
    }

    /// The spacing at `now`: the configured one, or a cut share growing back.
    fn spacing_at(&self, state: &State, now: Instant) -> Duration {
        let Some(slowed) = state.slowed else {
            return self.spacing;
        };
        let minutes = now.saturating_duration_since(slowed.since).as_secs_f64() / 60.0;
        let configured = per_minute(self.spacing);
        let probing = now.saturating_duration_since(slowed.since + CEILING_HOLD);
        let ceiling = slowed.ceiling + configured * PROBE_PER_MINUTE * probing.as_secs_f64() / 60.0;
        let grown = (slowed.cut + configured * RECOVERY_PER_MINUTE * minutes).min(ceiling);
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
    fn the_reconciliation_has_a_twentieth_and_the_headroom_pays_two_bursts_a_slot() {
        let share = |per_minute, burst| RateShare { per_minute, burst };
        let reconciliation = |per_minute| RateShare {
            per_minute,
            burst: 1,
        };
        assert_eq!(
            RateShares::of(POLAR_LIMIT_PER_MINUTE, 400, 2),
            RateShares {
                batches: share(190, 24),
                reconciliation: reconciliation(20)
            }
        );
        assert_eq!(
            RateShares::of(POLAR_LIMIT_PER_MINUTE, 300, 4).batches,
            share(71, 24)
        );
        assert_eq!(
            RateShares::of(POLAR_LIMIT_PER_MINUTE, 500, 2),
            RateShares {
                batches: share(235, 1),
                reconciliation: reconciliation(25)
            },
            "no headroom: the bursts of one come out of the even share"
        );
        assert_eq!(
            RateShares::of(POLAR_SANDBOX_LIMIT_PER_MINUTE, 80, 2).batches,
            share(38, 4),
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
    async fn sustained_429s_cut_the_share_down_to_half_and_it_grows_back_to_a_lower_ceiling_for_a_while(
    ) {
        let limiter = RateLimiter::per_minute(200, 1);
        assert_eq!(
            limiter.pause_for(Duration::ZERO),
            None,
            "a lone 429 only pauses"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            limiter.pause_for(Duration::ZERO),
            None,
            "429s together are one signal"
        );
        for expected in [150.0, 112.5, 100.0, 100.0] {
            tokio::time::sleep(ONE_SIGNAL).await;
            let share = limiter.pause_for(Duration::ZERO).expect("cut");
            // Within the 5 s since the last cut the share grew back a little.
            assert!((share - expected).abs() < 2.0, "{share}, not {expected}");
        }
        // Half at least, its ceiling too, for half an hour.
        tokio::time::sleep(Duration::from_secs(20 * 60)).await;
        assert!((limiter.share_per_minute() - 100.0).abs() < 0.5);
        // Then 1% of 200 a minute: under an hour to the configured share.
        tokio::time::sleep(Duration::from_secs(60 * 60)).await;
        assert_eq!(
            limiter.share_per_minute(),
            200.0,
            "back to the configured share"
        );
        // Cut from 200 by a quarter, it grows back by 10% of it a minute to 9/10 of 200.
        tokio::time::sleep(Duration::from_secs(10 * 60)).await;
        limiter.pause_for(Duration::ZERO);
        tokio::time::sleep(Duration::from_secs(60)).await;
        let share = limiter.pause_for(Duration::ZERO).expect("cut");
        assert!((share - 150.0).abs() < 0.5, "{share}");
        tokio::time::sleep(Duration::from_secs(60)).await;
        let share = limiter.share_per_minute();
        assert!((share - 170.0).abs() < 0.5, "{share}");
        tokio::time::sleep(Duration::from_secs(5 * 60)).await;
        let share = limiter.share_per_minute();
        assert!((share - 180.0).abs() < 0.5, "{share}");
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
            settled == 0 && last <= first && first <= 30,
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
