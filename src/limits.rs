//! Per-publisher publish rate limit (SPEC §9): recipients per second, per
//! node, keyed by the publisher token's `sub`. A publisher over it gets
//! `429` with `Retry-After`; nothing of that request is stored.

use std::{num::NonZeroU32, time::Duration};

use governor::{
    DefaultKeyedRateLimiter, Quota,
    clock::{Clock, DefaultClock},
};

use crate::domain::UserId;

pub struct PublishLimiter {
    /// `None` when `limits.publish_per_second` is 0 (no limit).
    limiter: Option<DefaultKeyedRateLimiter<UserId>>,
    clock: DefaultClock,
}

impl PublishLimiter {
    /// `per_second` recipients per publisher, with a burst of one second's worth.
    pub fn new(per_second: u32) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|n| DefaultKeyedRateLimiter::keyed(Quota::per_second(n)));
        Self { limiter, clock: DefaultClock::default() }
    }

    /// Takes `recipients` from the publisher's budget, or says how long to wait.
    pub fn check(&self, publisher: &UserId, recipients: usize) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        let n = NonZeroU32::new(u32::try_from(recipients).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        match limiter.check_key_n(publisher, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(self.clock.now())),
            // More recipients than one second's budget: it can never pass as one request.
            Err(_) => Err(Duration::from_secs(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publisher_over_its_budget_waits_and_others_do_not() {
        let limiter = PublishLimiter::new(10);
        let (a, b) = (UserId::parse("a").unwrap(), UserId::parse("b").unwrap());
        assert!(limiter.check(&a, 6).is_ok());
        assert!(limiter.check(&a, 4).is_ok());
        // Ten more need a whole second of refill: a slow test machine cannot
        // earn them back between these lines (one would take only 100 ms).
        let wait = limiter.check(&a, 10).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limiter.check(&b, 10).is_ok(), "budgets are per publisher");
        assert!(PublishLimiter::new(0).check(&a, 1_000_000).is_ok(), "0 means no limit");
    }
}
