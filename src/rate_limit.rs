//! Rate limits, per node, keyed by the token's `sub`; a caller over one gets
//! `429` with `Retry-After`, and nothing of that request is done.
//!
//! * [`PublishRateLimiter`]: recipients per second per publisher.
//! * [`UserRateLimiter`]: requests and stream opens per second per user, so one
//!   user cannot stall the engine every user shares.

use std::{future::Future, num::NonZeroU32, sync::Arc, time::Duration};

use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    middleware::NoOpMiddleware,
    state::keyed::DashMapStateStore,
};

use crate::domain::UserId;

pub struct PublishRateLimiter {
    /// `None` when `limits.publish_per_second` is 0 (no limit).
    limiter: Option<DefaultKeyedRateLimiter<UserId>>,
    clock: DefaultClock,
}

impl PublishRateLimiter {
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

type KeyedLimiter<C> = RateLimiter<UserId, DashMapStateStore<UserId>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// Requests per user: `limits.user_requests_per_second`, with a burst of
/// `limits.user_burst`. Generic over the clock so its tests can move time.
pub struct UserRateLimiter<C: Clock = DefaultClock> {
    /// `None` when `limits.user_requests_per_second` is 0 (no limit). One
    /// entry per user seen recently: a lookup per request is one hash and a
    /// shard lock, and [`UserRateLimiter::retain_recent`] drops idle users.
    limiter: Option<KeyedLimiter<C>>,
    clock: C,
}

impl UserRateLimiter {
    /// `burst` 0 with a rate set is refused by `Settings::validate`; here it
    /// means a burst of one.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self::with_clock(per_second, burst, DefaultClock::default())
    }
}

impl<C: Clock + Clone> UserRateLimiter<C> {
    fn with_clock(per_second: u32, burst: u32, clock: C) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let quota = Quota::per_second(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
            RateLimiter::dashmap_with_clock(quota, clock.clone())
        });
        Self { limiter, clock }
    }

    /// Takes one request from the user's budget, or says how long to wait.
    pub fn check(&self, user: &UserId) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        limiter.check_key(user).map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets users whose budget is full again (they would start afresh
    /// anyway). Without it the map keeps one entry per user ever seen, and
    /// a node that served a million users holds a million entries.
    pub fn retain_recent(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    #[cfg(test)]
    fn users_tracked(&self) -> usize {
        self.limiter.as_ref().map_or(0, |l| l.len())
    }
}

/// How often [`UserRateLimiter::forget_idle_users`] sweeps. Seconds apart:
/// each pass locks every shard of the map in turn.
const FORGET_IDLE_USERS: Duration = Duration::from_secs(5);

impl UserRateLimiter {
    /// The node task that calls [`UserRateLimiter::retain_recent`] every few
    /// seconds, until the limiter is gone.
    pub fn forget_idle_users(self: &Arc<Self>) -> impl Future<Output = ()> + Send + 'static {
        let limiter = Arc::downgrade(self);
        async move {
            let mut every = tokio::time::interval(FORGET_IDLE_USERS);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(limiter) = limiter.upgrade() else { return };
                limiter.retain_recent();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    #[test]
    fn a_user_over_the_burst_waits_for_the_rate_and_others_do_not() {
        let clock = FakeRelativeClock::default();
        let limiter = UserRateLimiter::with_clock(2, 3, clock.clone());
        let (a, b) = (UserId::parse("a").unwrap(), UserId::parse("b").unwrap());
        for _ in 0..3 {
            assert!(limiter.check(&a).is_ok());
        }
        assert_eq!(limiter.check(&a), Err(Duration::from_millis(500)), "one more every half second");
        assert!(limiter.check(&b).is_ok(), "budgets are per user");
        clock.advance(Duration::from_millis(500));
        assert!(limiter.check(&a).is_ok());
        assert!(limiter.check(&a).is_err());
    }

    #[test]
    fn idle_users_are_forgotten() {
        let clock = FakeRelativeClock::default();
        let limiter = UserRateLimiter::with_clock(2, 3, clock.clone());
        let (a, b) = (UserId::parse("a").unwrap(), UserId::parse("b").unwrap());
        limiter.check(&a).unwrap();
        clock.advance(Duration::from_secs(1));
        limiter.check(&b).unwrap();
        limiter.retain_recent();
        assert_eq!(limiter.users_tracked(), 1, "a's budget is full again, b's is not");
        clock.advance(Duration::from_secs(1));
        limiter.retain_recent();
        assert_eq!(limiter.users_tracked(), 0);
    }

    #[test]
    fn zero_means_no_limit() {
        let limiter = UserRateLimiter::new(0, 1);
        let a = UserId::parse("a").unwrap();
        assert!((0..1000).all(|_| limiter.check(&a).is_ok()));
        assert_eq!(limiter.users_tracked(), 0);
    }

    #[test]
    fn a_publisher_over_its_budget_waits_and_others_do_not() {
        let limiter = PublishRateLimiter::new(10);
        let (a, b) = (UserId::parse("a").unwrap(), UserId::parse("b").unwrap());
        assert!(limiter.check(&a, 6).is_ok());
        assert!(limiter.check(&a, 4).is_ok());
        // Ten more need a whole second of refill: a slow test machine cannot
        // earn them back between these lines (one would take only 100 ms).
        let wait = limiter.check(&a, 10).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limiter.check(&b, 10).is_ok(), "budgets are per publisher");
        assert!(PublishRateLimiter::new(0).check(&a, 1_000_000).is_ok(), "0 means no limit");
    }
}
