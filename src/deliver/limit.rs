//! In-process smoothing in front of the shared rate limiter, and how long a worker waits for it in place.
//!
//! The limiter's arithmetic (GCRA without burst, daily count) is in [`crate::domain::rate`], below both the
//! queue (which keeps its state) and delivery (which asks it).

use std::time::Duration;

use crate::domain::rate::Limits;

/// Most calls one delivery reserves at once (a GET, a DELETE and a POST): the in-process smoothing's burst.
const MAX_CALLS_PER_DELIVERY: u32 = 3;

/// In-process smoothing in front of the shared limiter (`governor`, keyed by location, same spacing): this
/// process's workers wait for a location's next slot among themselves, instead of each asking Redis and being
/// told to wait. The shared budget stays the authority; this only saves round trips under contention.
pub struct Smoothing {
    limiter: governor::DefaultKeyedRateLimiter<crate::event::LocationId>,
    clock: governor::clock::DefaultClock,
}

impl std::fmt::Debug for Smoothing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Smoothing").finish_non_exhaustive()
    }
}

impl Smoothing {
    pub fn new(limits: Limits) -> Self {
        let burst = std::num::NonZeroU32::new(MAX_CALLS_PER_DELIVERY).unwrap_or(std::num::NonZeroU32::MIN);
        let quota = governor::Quota::with_period(Duration::from_millis(limits.spacing_ms.max(1)))
            .unwrap_or_else(|| governor::Quota::per_second(std::num::NonZeroU32::MAX))
            .allow_burst(burst);
        Self { limiter: governor::RateLimiter::keyed(quota), clock: governor::clock::DefaultClock::default() }
    }

    /// `None` when `cost` calls may go on to the shared limiter now, else how long to wait first.
    pub fn check(&self, location: &crate::event::LocationId, cost: u32) -> Option<Duration> {
        use governor::clock::Clock;
        let cost = std::num::NonZeroU32::new(cost.clamp(1, MAX_CALLS_PER_DELIVERY))?;
        match self.limiter.check_key_n(location, cost) {
            Ok(Ok(())) | Err(_) => None,
            Ok(Err(not_until)) => Some(not_until.wait_time_from(self.clock.now())),
        }
    }
}

/// How long a worker may wait in place for the limiter before it gives the contact back and takes other work.
pub const MAX_WAIT_IN_PLACE: Duration = Duration::from_millis(250);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoothing_spaces_a_location_s_calls_in_process_and_leaves_others_alone() {
        let smoothing = Smoothing::new(Limits::strict(60_000, 100));
        let (a, b) = (crate::event::LocationId::parse("a").unwrap(), crate::event::LocationId::parse("b").unwrap());
        assert_eq!(smoothing.check(&a, 3), None);
        assert!(smoothing.check(&a, 1).is_some_and(|wait| wait > Duration::from_secs(1)));
        assert_eq!(smoothing.check(&b, 1), None);
    }
}
