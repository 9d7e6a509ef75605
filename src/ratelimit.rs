//! Rate limits for mutating actions (update, rollback): at most N accepted in any sliding
//! window, per key (a component, or a component and a writer). Pure: the caller passes the
//! clock.
//!
//! Checking and recording are separate, so a request that must pass several limits (its
//! component's total and its writer's share, for every component of a batch) uses none of
//! them unless it passes all.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::fairshare::Writer;

/// What the coordinator's hourly caps count: all update/rollback requests for a component,
/// or one writer's (its share of the component's cap).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub component: String,
    pub writer: Option<Writer>,
}

#[derive(Debug)]
pub struct RateLimiter<K> {
    window: Duration,
    accepted: HashMap<K, VecDeque<Instant>>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            accepted: HashMap::new(),
        }
    }

    /// Whether one more for `key` stays within `limit`; if not, how long until one slot frees
    /// up. `limit == 0` means unlimited.
    pub fn check(&mut self, key: &K, limit: u32, now: Instant) -> Result<(), Duration> {
        if limit == 0 {
            return Ok(());
        }
        let Some(times) = self.accepted.get_mut(key) else {
            return Ok(());
        };
        while times
            .front()
            .is_some_and(|&t| now.duration_since(t) >= self.window)
        {
            times.pop_front();
        }
        if times.is_empty() {
            // Keys come and go (one per writer): keep only those with something to remember.
            self.accepted.remove(key);
            return Ok(());
        }
        if times.len() >= limit as usize {
            return Err(self.window - now.duration_since(times[0]));
        }
        Ok(())
    }

    /// Records one for `key` (after [`RateLimiter::check`] said yes). Keys whose last record
    /// left the window are forgotten here too, so writers that never come back cost nothing.
    pub fn record(&mut self, key: K, now: Instant) {
        let window = self.window;
        self.accepted.retain(|_, times| {
            times
                .back()
                .is_some_and(|&t| now.duration_since(t) < window)
        });
        self.accepted.entry(key).or_default().push_back(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl<K: Hash + Eq + Clone> RateLimiter<K> {
        /// [`RateLimiter::check`], and [`RateLimiter::record`] if it passes (as the daemon
        /// does for each of a request's caps).
        fn try_acquire(&mut self, key: K, limit: u32, now: Instant) -> Result<(), Duration> {
            self.check(&key, limit, now)?;
            self.record(key, now);
            Ok(())
        }
    }

    #[test]
    fn the_limit_applies_per_key_within_a_sliding_window() {
        let hour = Duration::from_secs(3600);
        let mut limiter = RateLimiter::new(hour);
        let t0 = Instant::now();
        assert!(limiter.try_acquire("remote", 2, t0).is_ok());
        assert!(
            limiter
                .try_acquire("remote", 2, t0 + Duration::from_secs(10))
                .is_ok()
        );
        let wait = limiter
            .try_acquire("remote", 2, t0 + Duration::from_secs(20))
            .unwrap_err();
        assert_eq!(wait, hour - Duration::from_secs(20));
        assert!(
            limiter
                .try_acquire("core", 2, t0 + Duration::from_secs(20))
                .is_ok(),
            "other keys are separate"
        );
        assert!(
            limiter.try_acquire("remote", 2, t0 + hour).is_ok(),
            "the first one left the window"
        );
        assert!(
            limiter.try_acquire("remote", 0, t0).is_ok(),
            "0 is unlimited"
        );
    }

    #[test]
    fn a_check_records_nothing_and_expired_keys_are_forgotten() {
        let hour = Duration::from_secs(3600);
        let mut limiter = RateLimiter::new(hour);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check(&"remote", 1, t0).is_ok());
        }
        limiter.record("remote", t0);
        assert!(limiter.check(&"remote", 1, t0).is_err());
        assert!(limiter.check(&"remote", 1, t0 + hour).is_ok());
        assert!(limiter.accepted.is_empty(), "nothing left to remember");
        limiter.record("gone", t0);
        limiter.record("remote", t0 + hour);
        assert_eq!(
            limiter.accepted.len(),
            1,
            "a key never checked again is dropped"
        );
    }
}
