//! Time, read in one place: the wall clock (token expiry, entry ids,
//! latency) and a monotonic "last seen" mark for the node's liveness checks.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// Now, in unix seconds (0 if the clock is before 1970).
pub fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Now, in unix milliseconds (0 if the clock is before 1970).
pub fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// RFC 3339, for events and fields that carry a time (`heartbeat`,
/// `token_expiring`, a demo session's expiry).
pub fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

/// When something last happened (a tick, a PING answered), readable from any
/// thread without a lock. Monotonic: a wall-clock step cannot fake an age.
pub struct LastSeen {
    started: Instant,
    /// Milliseconds after `started`.
    last_ms: AtomicU64,
}

impl LastSeen {
    /// Counts from now, as if it had just been seen.
    pub fn new() -> Self {
        Self { started: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    pub fn mark(&self) {
        self.last_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Release);
    }

    /// How long ago it was last marked (or made). Never negative, even if a
    /// mark lands between the two reads.
    pub fn age(&self) -> Duration {
        let now = self.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Acquire)))
    }
}

impl Default for LastSeen {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_counts_from_the_last_mark() {
        let seen = LastSeen::new();
        std::thread::sleep(Duration::from_millis(200));
        let before = seen.age();
        assert!(before >= Duration::from_millis(200), "before any mark it counts from its making: {before:?}");
        seen.mark();
        let after = seen.age();
        assert!(after < Duration::from_millis(100), "a mark resets it: {after:?}");
    }
}
