//! The per-location rate limit, as pure arithmetic: a GCRA (generic cell rate algorithm) without burst, plus a
//! daily count. The Redis queue runs the same arithmetic in `throttle.lua` (shared by every process); the
//! embedded queue runs this in process.
//!
//! Why no burst of N: "N calls per D" is a limit on *any* window of D as the CRM counts it, and a GCRA that
//! allows a burst of N lets up to 2N calls into some window of D. Spacing calls evenly never exceeds it.
//! [`HEADROOM`] keeps a little of the budget unused, so network jitter between followd's clock and the CRM's
//! cannot push one window over.
//!
//! One exception, for latency: a live webhook's delivery may take up to [`LIVE_SLOTS`] slots ahead of the
//! schedule (a GCRA tolerance of that many spacings), so it does not wait behind a reconcile's reservations;
//! background work never may. A tolerance of k slots lets k more calls into a window, so the spacing is
//! computed for `HEADROOM × N − k` calls per D: no window of D ever holds more than `HEADROOM × N`, burst or
//! not, and the sustained rate gives up k slots per window (3 of 100 by default).

use std::num::NonZeroU32;
use std::time::Duration;

use serde::Deserialize;

use super::clock::Millis;

/// The share of the CRM's budget followd uses at most in any window.
pub const HEADROOM: f64 = 0.97;
/// Most slots a live delivery may take ahead of the schedule (one delivery makes at most three calls). Fewer
/// for small budgets: one per 33 calls per window.
pub const LIVE_SLOTS: u64 = 3;
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// A rate written `"N/Ds"`: at most N calls in any window of D, as the CRM counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub calls: NonZeroU32,
    pub per: Duration,
}

impl std::str::FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a rate; write it as calls/duration, e.g. \"100/10s\"");
        let (calls, per) = s.split_once('/').ok_or_else(bad)?;
        let calls = calls.trim().parse::<NonZeroU32>().map_err(|_| bad())?;
        let per = humantime::parse_duration(per.trim()).map_err(|_| bad())?;
        if per.is_zero() {
            return Err(bad());
        }
        Ok(Self { calls, per })
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// A location's limits, in the units the limiter computes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Milliseconds between two calls.
    pub spacing_ms: u64,
    /// Calls per UTC day.
    pub daily: u64,
    /// How far ahead of the schedule (ms) a call asked with these limits may go: 0, or, from
    /// [`Limits::for_live`], the live tolerance.
    pub tolerance_ms: u64,
    /// The tolerance [`Limits::for_live`] grants: [`LIVE_SLOTS`] spacings (fewer for small budgets).
    pub live_tolerance_ms: u64,
}

impl Limits {
    pub fn new(rate: Rate, daily: u64) -> Self {
        let calls = f64::from(rate.calls.get()) * HEADROOM;
        let slots = LIVE_SLOTS.min((f64::from(rate.calls.get()) / 33.0).floor() as u64);
        let spacing_ms = ((rate.per.as_secs_f64() * 1000.0) / (calls - slots as f64)).ceil() as u64;
        let spacing_ms = spacing_ms.max(1);
        Self {
            spacing_ms,
            daily: ((daily as f64) * HEADROOM).floor() as u64,
            tolerance_ms: 0,
            live_tolerance_ms: slots * spacing_ms,
        }
    }

    /// Without any tolerance: every call waits for its slot.
    pub fn strict(spacing_ms: u64, daily: u64) -> Self {
        Self { spacing_ms, daily, tolerance_ms: 0, live_tolerance_ms: 0 }
    }

    /// The limits for a live webhook's delivery: it may take the live tolerance's slots ahead of the schedule.
    #[must_use]
    pub fn for_live(self) -> Self {
        Self { tolerance_ms: self.live_tolerance_ms, ..self }
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
/// use followd::domain::rate::{LimiterState, Limits, acquire};
///
/// let limits = Limits::strict(100, 1000);
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
    // A call may start once the previous reservation has passed, less its tolerance (live deliveries only).
    if tat > now.saturating_add(limits.tolerance_ms) {
        return Err(tat - limits.tolerance_ms);
    }
    Ok(LimiterState { tat: tat + limits.spacing_ms * cost, day, count: count + cost })
}

#[cfg(test)]
mod tests {
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
    fn live_calls_may_go_a_few_slots_early_and_no_window_holds_more_than_before() {
        let limits = limits(100, 10);
        assert_eq!(limits.live_tolerance_ms, 3 * limits.spacing_ms);
        // Background work keeps the budget busy; every fourth call is live and goes as soon as it may.
        let mut state = LimiterState::default();
        let (mut calls, mut now, mut i) = (Vec::new(), 0, 0u64);
        while calls.len() < 2000 {
            let asked = if i % 4 == 0 { limits.for_live() } else { limits };
            match acquire(state, asked, 1, now) {
                Ok(next) => {
                    calls.push(now);
                    state = next;
                    i += 1;
                }
                Err(at) => now = at,
            }
        }
        for (i, start) in calls.iter().enumerate() {
            let in_window = calls[i..].iter().take_while(|&&t| t < start + 10_000).count();
            assert!(in_window <= 97, "{in_window} calls in the 10 s from {start}");
        }
        // A live call right after a background one does not wait for its slot.
        let busy = acquire(LimiterState::default(), limits, 2, 0).unwrap();
        assert_eq!(acquire(busy, limits, 1, 1), Err(2 * limits.spacing_ms));
        assert!(acquire(busy, limits.for_live(), 1, 1).is_ok());
        // Small budgets get no tolerance.
        assert_eq!(self::limits(10, 1).live_tolerance_ms, 0);
    }

    #[test]
    fn a_cost_reserves_that_many_slots() {
        let limits = limits(10, 1);
        let state = acquire(LimiterState::default(), limits, 3, 0).unwrap();
        assert_eq!(acquire(state, limits, 1, 1), Err(3 * limits.spacing_ms));
    }

    #[test]
    fn the_daily_budget_waits_for_the_next_utc_day() {
        let limits = Limits::strict(1, 2);
        let state = acquire(LimiterState::default(), limits, 2, 10).unwrap();
        assert_eq!(acquire(state, limits, 1, 20), Err(DAY_MS));
        assert!(acquire(state, limits, 1, DAY_MS + 5).is_ok());
    }
}
