//! When to try a failed delivery again: exponential backoff with jitter, capped.
//!
//! Pure: the attempt number and a jitter value in `[0, 1)` come in as arguments, so the schedule is tested
//! without clocks or dice.

use std::time::Duration;

/// The retry schedule of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    /// How long to wait after `attempt` failures (0 = after the first). "Equal jitter": half the exponential
    /// delay is fixed and half is random, so retries spread out but never come back at once.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let exponential = self.base.saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX));
        let capped = exponential.min(self.cap);
        let jitter = jitter.clamp(0.0, 1.0);
        capped.mul_f64(0.5 + jitter / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_and_stops_at_the_cap() {
        let backoff = Backoff { base: Duration::from_secs(1), cap: Duration::from_secs(60) };
        assert_eq!(backoff.delay(0, 1.0), Duration::from_secs(1));
        assert_eq!(backoff.delay(3, 1.0), Duration::from_secs(8));
        assert_eq!(backoff.delay(30, 1.0), Duration::from_secs(60));
        assert_eq!(backoff.delay(u32::MAX, 1.0), Duration::from_secs(60));
        assert_eq!(backoff.delay(3, 0.0), Duration::from_secs(4));
    }
}
