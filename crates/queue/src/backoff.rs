//! Retry delays: exponential backoff with full jitter.
//!
//! "Full jitter" (a uniform draw between zero and the exponential cap) spreads
//! the retries of jobs that failed together, for instance when a shared
//! dependency went down, instead of sending them back in one wave.

use std::time::Duration;

use rand::Rng;

/// The upper bound of the delay before retry `attempt` (1-based: the delay
/// after the first failed attempt is bounded by `base`).
pub fn backoff_cap(base: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(32);
    base.saturating_mul(1u32 << exp.min(31)).min(max)
}

/// A delay drawn uniformly from `[0, backoff_cap(base, max, attempt)]`.
pub fn backoff_delay(base: Duration, max: Duration, attempt: u32) -> Duration {
    let cap = backoff_cap(base, max, attempt).as_millis() as u64;
    Duration::from_millis(rand::rng().random_range(0..=cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_doubles_then_stops_at_max() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        assert_eq!(backoff_cap(base, max, 1), Duration::from_millis(100));
        assert_eq!(backoff_cap(base, max, 2), Duration::from_millis(200));
        assert_eq!(backoff_cap(base, max, 4), Duration::from_millis(800));
        assert_eq!(backoff_cap(base, max, 5), max);
        assert_eq!(backoff_cap(base, max, 500), max);
    }

    #[test]
    fn delay_stays_within_cap() {
        let base = Duration::from_millis(50);
        let max = Duration::from_secs(10);
        for attempt in 1..12 {
            let d = backoff_delay(base, max, attempt);
            assert!(d <= backoff_cap(base, max, attempt));
        }
    }
}
