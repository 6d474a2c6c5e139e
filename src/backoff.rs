//! Exponential backoff with jitter: the one schedule behind in-process retries and SQS
//! redelivery delays.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling after the first failure; it doubles with each further one.
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The longest delay after failure number `failures` (counting from 1).
    pub fn ceiling(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(20));
        self.base.saturating_mul(factor).min(self.max)
    }

    /// Uniform in [0, ceiling]: spreads retries that started together.
    pub fn full_jitter(&self, failures: u32) -> Duration {
        self.ceiling(failures).mul_f64(fastrand::f64())
    }

    /// Uniform in [ceiling/2, ceiling]: spread out, but never much earlier than planned.
    pub fn equal_jitter(&self, failures: u32) -> Duration {
        let half = self.ceiling(failures) / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const BACKOFF: Backoff = Backoff {
        base: Duration::from_millis(200),
        max: Duration::from_secs(5),
    };

    #[test]
    fn the_ceiling_doubles_per_failure_up_to_the_cap() {
        let ceilings: Vec<_> = (1..=7).map(|n| BACKOFF.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(BACKOFF.ceiling(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn full_jitter_spreads_delays_from_zero_to_the_ceiling() {
        let delays: Vec<_> = (0..200).map(|_| BACKOFF.full_jitter(3)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(800)));
        assert!(delays.iter().any(|d| *d < Duration::from_millis(400)));
        assert!(delays.iter().collect::<HashSet<_>>().len() > 100);
    }

    #[test]
    fn equal_jitter_stays_between_half_and_all_of_the_ceiling() {
        let delays: Vec<_> = (0..200).map(|_| BACKOFF.equal_jitter(3)).collect();
        assert!(delays
            .iter()
            .all(|d| *d >= Duration::from_millis(400) && *d <= Duration::from_millis(800)));
        assert!(delays.iter().collect::<HashSet<_>>().len() > 100);
    }
}
