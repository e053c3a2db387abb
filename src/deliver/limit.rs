//! The per-location rate limit, as pure arithmetic: a GCRA (generic cell rate algorithm) without burst, plus a
//! daily count. The Redis queue runs the same arithmetic in `throttle.lua` (shared by every process); the
//! embedded queue runs this in process.
//!
//! Why no burst: "N calls per D" is a limit on *any* window of D as the CRM counts it, and a GCRA that allows
//! a burst of N lets N + 1 calls into some window of D. Spacing calls `D / N` apart never exceeds it and still
//! uses the whole budget. [`HEADROOM`] keeps a little of it unused, so network jitter between followd's clock
//! and the CRM's cannot push one window over.

use std::time::Duration;

use crate::config::Rate;
use crate::queue::Millis;

/// The share of the CRM's budget followd uses.
pub const HEADROOM: f64 = 0.97;
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// A location's limits, in the units the limiter computes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Milliseconds between two calls.
    pub spacing_ms: u64,
    /// Calls per UTC day.
    pub daily: u64,
}

impl Limits {
    pub fn new(rate: Rate, daily: u64) -> Self {
        let per = rate.per.as_secs_f64() * 1000.0 / HEADROOM;
        let spacing_ms = (per / f64::from(rate.calls.get())).ceil() as u64;
        Self { spacing_ms: spacing_ms.max(1), daily: ((daily as f64) * HEADROOM).floor() as u64 }
    }
}

/// A location's limiter state: the theoretical arrival time of the next call and today's count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimiterState {
    pub tat: Millis,
    pub day: u64,
    pub count: u64,
}

/// Whether `cost` calls may go now. `Ok(next state)`, or `Err(when to ask again)`.
///
/// ```
/// use followd::deliver::limit::{LimiterState, Limits, acquire};
///
/// let limits = Limits { spacing_ms: 100, daily: 1000 };
/// let state = acquire(LimiterState::default(), limits, 1, 0).unwrap();
/// // The next call waits for its slot, 100 ms later.
/// assert_eq!(acquire(state, limits, 1, 10), Err(100));
/// ```
pub fn acquire(state: LimiterState, limits: Limits, cost: u64, now: Millis) -> Result<LimiterState, Millis> {
    let day = now / DAY_MS;
    let count = if state.day == day { state.count } else { 0 };
    if count + cost > limits.daily {
        return Err((day + 1) * DAY_MS);
    }
    let tat = state.tat.max(now);
    // Without burst, a call may start only once the previous reservation has passed.
    if tat > now {
        return Err(tat);
    }
    Ok(LimiterState { tat: tat + limits.spacing_ms * cost, day, count: count + cost })
}

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
    use std::num::NonZeroU32;

    use super::*;

    fn limits(calls: u32, per_s: u64) -> Limits {
        Limits::new(Rate { calls: NonZeroU32::new(calls).unwrap(), per: Duration::from_secs(per_s) }, 1_000_000)
    }

    #[test]
    fn no_window_of_the_period_holds_more_than_the_limit() {
        let limits = limits(10, 1);
        let mut state = LimiterState::default();
        let mut calls = Vec::new();
        let mut now = 0;
        while calls.len() < 200 {
            match acquire(state, limits, 1, now) {
                Ok(next) => {
                    calls.push(now);
                    state = next;
                }
                Err(at) => now = at,
            }
        }
        for (i, start) in calls.iter().enumerate() {
            let in_window = calls[i..].iter().take_while(|&&t| t < start + 1000).count();
            assert!(in_window <= 10, "{in_window} calls in the second from {start}");
        }
        // And the budget is used: 200 calls take about 20 s (3% headroom).
        assert!(calls[199] < 21_000, "{}", calls[199]);
    }

    #[test]
    fn a_cost_reserves_that_many_slots() {
        let limits = limits(10, 1);
        let state = acquire(LimiterState::default(), limits, 3, 0).unwrap();
        assert_eq!(acquire(state, limits, 1, 1), Err(3 * limits.spacing_ms));
    }

    #[test]
    fn smoothing_spaces_a_location_s_calls_in_process_and_leaves_others_alone() {
        let smoothing = Smoothing::new(Limits { spacing_ms: 60_000, daily: 100 });
        let (a, b) = (crate::event::LocationId::parse("a").unwrap(), crate::event::LocationId::parse("b").unwrap());
        assert_eq!(smoothing.check(&a, 3), None);
        assert!(smoothing.check(&a, 1).is_some_and(|wait| wait > Duration::from_secs(1)));
        assert_eq!(smoothing.check(&b, 1), None);
    }

    #[test]
    fn the_daily_budget_waits_for_the_next_utc_day() {
        let limits = Limits { spacing_ms: 1, daily: 2 };
        let state = acquire(LimiterState::default(), limits, 2, 10).unwrap();
        assert_eq!(acquire(state, limits, 1, 20), Err(DAY_MS));
        assert!(acquire(state, limits, 1, DAY_MS + 5).is_ok());
    }
}
