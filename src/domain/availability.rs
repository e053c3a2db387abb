//! Who is away when: the `[availability]` table of the rule files, as whole UTC days per user.
//!
//! A round robin skips a member who is away at the moment of the pick (see [`super::pick`]); when everyone is
//! away it picks anyway. Dates are UTC days for now (working hours and time zones are a next step).

use std::collections::BTreeMap;

use chrono::NaiveDate;

use super::clock::Millis;
use crate::event::UserId;

const DAY_MS: u64 = 86_400_000;

/// Each user's absences, as inclusive ranges of days since the epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Availability {
    away: BTreeMap<UserId, Vec<(u64, u64)>>,
}

impl Availability {
    /// Records that `user` is away from `first` to `last` (days since the epoch, inclusive).
    pub fn add(&mut self, user: UserId, (first, last): (u64, u64)) {
        self.away.entry(user).or_default().push((first, last));
    }

    /// Whether `user` is away at `now` (ms since the epoch).
    pub fn is_away(&self, user: &UserId, now: Millis) -> bool {
        let day = now / DAY_MS;
        self.away.get(user).is_some_and(|ranges| ranges.iter().any(|&(first, last)| first <= day && day <= last))
    }
}

/// Reads `"2026-12-20/2026-12-31"` (inclusive) or `"2026-12-24"` as days since the epoch.
pub fn parse_range(text: &str) -> Result<(u64, u64), String> {
    let day = |part: &str| -> Result<u64, String> {
        let date = NaiveDate::parse_from_str(part.trim(), "%Y-%m-%d")
            .map_err(|_| format!("`{}` is not a date; write YYYY-MM-DD", part.trim()))?;
        let days = date.signed_duration_since(chrono::DateTime::UNIX_EPOCH.date_naive()).num_days();
        u64::try_from(days).map_err(|_| format!("`{}` is before 1970", part.trim()))
    };
    let (first, last) = match text.split_once('/') {
        Some((first, last)) => (day(first)?, day(last)?),
        None => (day(text)?, day(text)?),
    };
    if last < first {
        return Err(format!("`{text}` ends before it starts; write FIRST/LAST, both days included"));
    }
    Ok((first, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_whole_utc_days_both_included() {
        let (first, last) = parse_range("2026-12-20/2026-12-31").unwrap();
        assert_eq!(last - first, 11);
        let mut availability = Availability::default();
        let alice = UserId::parse("usr_alice").unwrap();
        availability.add(alice.clone(), (first, last));
        assert!(availability.is_away(&alice, first * DAY_MS));
        assert!(availability.is_away(&alice, (last + 1) * DAY_MS - 1));
        assert!(!availability.is_away(&alice, (last + 1) * DAY_MS));
        assert!(!availability.is_away(&alice, first * DAY_MS - 1));
        assert_eq!(parse_range("2026-12-24").map(|(a, b)| b - a), Ok(0));
        assert!(parse_range("2026-12-31/2026-12-20").unwrap_err().contains("ends before it starts"));
        assert!(parse_range("next week").unwrap_err().contains("YYYY-MM-DD"));
    }
}
