//! Per-component rate limit for mutating actions (update, rollback): at most N accepted in
//! any sliding window. Pure: the caller passes the clock.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RateLimiter {
    window: Duration,
    accepted: HashMap<String, VecDeque<Instant>>,
}

impl RateLimiter {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            accepted: HashMap::new(),
        }
    }

    /// Records one more for `key` if fewer than `limit` were recorded within the window;
    /// otherwise returns how long until one slot frees up. `limit == 0` means unlimited.
    pub fn try_acquire(&mut self, key: &str, limit: u32, now: Instant) -> Result<(), Duration> {
        if limit == 0 {
            return Ok(());
        }
        let times = self.accepted.entry(key.to_owned()).or_default();
        while times
            .front()
            .is_some_and(|&t| now.duration_since(t) >= self.window)
        {
            times.pop_front();
        }
        if times.len() >= limit as usize {
            let oldest = times[0];
            return Err(self.window - now.duration_since(oldest));
        }
        times.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
