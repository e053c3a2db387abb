//! The per-location rate limit, as pure arithmetic: a GCRA (generic cell rate algorithm) without burst, plus a
//! daily count. The Redis queue runs the same arithmetic in `throttle.lua` (shared by every process); the
//! embedded queue runs this in process.
//!
//! Why no burst: "N calls per D" is a limit on *any* window of D as the CRM counts it, and a GCRA that allows
//! a burst of N lets N + 1 calls into some window of D. Spacing calls `D / N` apart never exceeds it and still
//! uses the whole budget. [`HEADROOM`] keeps a little of it unused, so network jitter between followd's clock
//! and the CRM's cannot push one window over.

use std::num::NonZeroU32;
use std::time::Duration;

use serde::Deserialize;

use super::clock::Millis;

/// The share of the CRM's budget followd uses.
pub const HEADROOM: f64 = 0.97;
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
/// use followd::domain::rate::{LimiterState, Limits, acquire};
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
    fn a_cost_reserves_that_many_slots() {
        let limits = limits(10, 1);
        let state = acquire(LimiterState::default(), limits, 3, 0).unwrap();
        assert_eq!(acquire(state, limits, 1, 1), Err(3 * limits.spacing_ms));
    }

    #[test]
    fn the_daily_budget_waits_for_the_next_utc_day() {
        let limits = Limits { spacing_ms: 1, daily: 2 };
        let state = acquire(LimiterState::default(), limits, 2, 10).unwrap();
        assert_eq!(acquire(state, limits, 1, 20), Err(DAY_MS));
        assert!(acquire(state, limits, 1, DAY_MS + 5).is_ok());
    }
}
