use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// When the current invocation is cut off by Lambda.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline(SystemTime);

impl Deadline {
    pub fn from_epoch_ms(ms: u64) -> Self {
        Self(UNIX_EPOCH + Duration::from_millis(ms))
    }

    pub fn after(timeout: Duration) -> Self {
        Self(SystemTime::now() + timeout)
    }

    pub fn remaining(&self) -> Duration {
        self.0
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    }

    pub fn epoch_ms(&self) -> u64 {
        crate::adapters::epoch_ms(self.0)
    }
}
