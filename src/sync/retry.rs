//! In-process retries: backoff with full jitter, honouring `retry-after`, and never
//! sleeping into the end of the invocation.

use std::future::Future;
use std::time::Duration;

use tracing::warn;

use crate::backoff::Backoff;
use crate::deadline::Deadline;
use crate::failure::RetryHint;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub backoff: Backoff,
    /// Time that must be left after a sleep for one more attempt to finish:
    /// at least the HTTP request timeout.
    pub reserve: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            backoff: Backoff {
                base: Duration::from_millis(200),
                max: Duration::from_secs(5),
            },
            reserve: Duration::from_secs(6),
        }
    }
}

impl RetryPolicy {
    /// The sleep after failed attempt `attempt` (counting from 1); a server's
    /// `retry-after` is a floor.
    pub fn delay(&self, attempt: u32, hint: RetryHint) -> Duration {
        let jittered = self.backoff.full_jitter(attempt);
        hint.not_before
            .map_or(jittered, |floor| floor.max(jittered))
    }

    /// Runs `operation` until it succeeds, fails in a way `hint` says not to retry here,
    /// runs out of attempts, or the next attempt could not finish before `deadline`.
    pub async fn run<T, E, F, Fut>(
        &self,
        deadline: Deadline,
        hint: impl Fn(&E) -> Option<RetryHint>,
        mut operation: F,
    ) -> Result<T, E>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempt = 1;
        loop {
            let err = match operation().await {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            let Some(retry) = hint(&err) else {
                return Err(err);
            };
            if attempt >= self.max_attempts {
                return Err(err);
            }
            let delay = self.delay(attempt, retry);
            if deadline.remaining() < delay + self.reserve {
                warn!(error = %err, ?delay, "not retrying: the invocation deadline is too close");
                return Err(err);
            }
            warn!(error = %err, attempt, ?delay, "retrying after a transient failure");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    const NO_HINT: RetryHint = RetryHint { not_before: None };

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            backoff: Backoff {
                base: Duration::from_millis(1),
                max: Duration::from_millis(4),
            },
            reserve: Duration::from_millis(10),
        }
    }

    #[test]
    fn retry_after_is_a_floor_for_the_delay() {
        let policy = RetryPolicy::default();
        let hint = RetryHint {
            not_before: Some(Duration::from_secs(7)),
        };
        for _ in 0..50 {
            assert!(policy.delay(1, hint) >= Duration::from_secs(7));
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let result: Result<u32, String> = fast()
            .run(
                Deadline::after(Duration::from_secs(5)),
                |_| Some(NO_HINT),
                || async {
                    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                    if n < 3 {
                        Err(format!("fail {n}"))
                    } else {
                        Ok(n)
                    }
                },
            )
            .await;
        assert_eq!(result, Ok(3));
    }

    #[tokio::test]
    async fn attempts_are_bounded() {
        let calls = AtomicU32::new(0);
        let result: Result<(), String> = fast()
            .run(
                Deadline::after(Duration::from_secs(5)),
                |_| Some(NO_HINT),
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err("always".to_owned())
                },
            )
            .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn errors_without_a_hint_are_not_retried() {
        let calls = AtomicU32::new(0);
        let _: Result<(), String> = fast()
            .run(
                Deadline::after(Duration::from_secs(5)),
                |_| None,
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err("permanent".to_owned())
                },
            )
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn no_sleep_runs_into_the_deadline() {
        let calls = AtomicU32::new(0);
        let hint = RetryHint {
            not_before: Some(Duration::from_secs(60)),
        };
        let _: Result<(), String> = fast()
            .run(
                Deadline::after(Duration::from_secs(2)),
                |_| Some(hint),
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err("rate limited".to_owned())
                },
            )
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
