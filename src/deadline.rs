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

    /// This deadline moved `by` earlier: time kept back for what must follow.
    pub fn earlier_by(self, by: Duration) -> Self {
        Self(self.0 - by)
    }

    pub fn epoch_ms(&self) -> u64 {
        epoch_ms(self.0)
    }
}

/// Milliseconds since the Unix epoch, as stored in lease expiries.
pub fn epoch_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
