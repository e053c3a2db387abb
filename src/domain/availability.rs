//! Who is away when: the `[availability]` table of the rule files, per user: days away, and optionally working
//! hours on working days, in the user's time zone (UTC when none is given).
//!
//! A round robin skips a member who is away at the moment of the pick (see [`super::pick`]); when everyone is
//! away it picks anyway. Outside their working hours a member counts as away, so the pick goes to whoever is at
//! work, and to everyone (as the routers do) when nobody is.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Timelike};
use chrono_tz::Tz;

use super::clock::Millis;
use crate::event::UserId;

/// When a user works: from `start` to `end` (minutes after midnight, local; an `end` before the `start` runs
/// past midnight) on the weekdays marked in `days` (Monday first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hours {
    pub start: u32,
    pub end: u32,
    pub days: [bool; 7],
}

impl Hours {
    fn at_work(&self, local: NaiveDateTime) -> bool {
        let minute = local.hour() * 60 + local.minute();
        let weekday = local.weekday().num_days_from_monday() as usize;
        if self.start <= self.end {
            self.days[weekday] && self.start <= minute && minute < self.end
        } else {
            // A night shift belongs to the day it starts on.
            let yesterday = (weekday + 6) % 7;
            (self.days[weekday] && minute >= self.start) || (self.days[yesterday] && minute < self.end)
        }
    }
}

/// Why someone is away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Absence {
    /// A day listed in their `away`.
    DayAway,
    /// Outside their working `hours` or `days`.
    OffHours,
}

/// One user's availability.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Schedule {
    /// Inclusive ranges of local days since the epoch.
    away: Vec<(u64, u64)>,
    hours: Option<Hours>,
    zone: Option<Tz>,
}

/// Each user's absences and working hours.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Availability {
    people: BTreeMap<UserId, Schedule>,
}

impl Availability {
    /// Records that `user` is away from `first` to `last` (days since the epoch, in their time zone, inclusive).
    pub fn add(&mut self, user: UserId, (first, last): (u64, u64)) {
        self.people.entry(user).or_default().away.push((first, last));
    }

    /// Sets when `user` works; outside those hours they count as away.
    pub fn set_hours(&mut self, user: UserId, hours: Hours) {
        self.people.entry(user).or_default().hours = Some(hours);
    }

    /// Sets the time zone `user`'s days and hours are in.
    pub fn set_zone(&mut self, user: UserId, zone: Tz) {
        self.people.entry(user).or_default().zone = Some(zone);
    }

    /// Whether `user` is away at `now` (ms since the epoch): on a day away, or outside their working hours.
    pub fn is_away(&self, user: &UserId, now: Millis) -> bool {
        self.absence(user, now).is_some()
    }

    /// Why `user` is away at `now`, if they are.
    pub fn absence(&self, user: &UserId, now: Millis) -> Option<Absence> {
        let schedule = self.people.get(user)?;
        let utc = DateTime::from_timestamp_millis(i64::try_from(now).unwrap_or(i64::MAX)).unwrap_or_default();
        let local = match schedule.zone {
            Some(zone) => utc.with_timezone(&zone).naive_local(),
            None => utc.naive_utc(),
        };
        let day = u64::try_from(local.date().signed_duration_since(DateTime::UNIX_EPOCH.date_naive()).num_days())
            .unwrap_or(0);
        if schedule.away.iter().any(|&(first, last)| first <= day && day <= last) {
            Some(Absence::DayAway)
        } else if schedule.hours.is_some_and(|hours| !hours.at_work(local)) {
            Some(Absence::OffHours)
        } else {
            None
        }
    }
}

/// Reads working hours, `"09:00-17:00"` (an end before the start runs past midnight), on `days` (default
/// Monday to Friday).
pub fn parse_hours(text: &str, days: Option<&str>) -> Result<Hours, String> {
    let minute = |part: &str| -> Result<u32, String> {
        let time = chrono::NaiveTime::parse_from_str(part.trim(), "%H:%M")
            .map_err(|_| format!("`{}` is not a time of day; write HH:MM, e.g. 09:00-17:30", part.trim()))?;
        Ok(time.hour() * 60 + time.minute())
    };
    let Some((start, end)) = text.split_once('-') else {
        return Err(format!("`{text}` is not a span of hours; write START-END, e.g. 09:00-17:30"));
    };
    let (start, end) = (minute(start)?, minute(end)?);
    if start == end {
        return Err(format!("`{text}` is empty; working hours start and end at different times"));
    }
    let days = match days {
        Some(days) => parse_days(days)?,
        None => [true, true, true, true, true, false, false],
    };
    Ok(Hours { start, end, days })
}

/// Reads working days: `"mon-fri"`, `"mon,wed,fri"`, `"sat-sun"`, or a mix (`"mon-thu,sat"`).
pub fn parse_days(text: &str) -> Result<[bool; 7], String> {
    const SHORT: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    const LONG: [&str; 7] = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];
    let day = |name: &str| {
        let name = name.trim().to_ascii_lowercase();
        (0..7).find(|&i| name == SHORT[i] || name == LONG[i]).ok_or_else(|| {
            format!("`{name}` is not a day; write mon, tue, wed, thu, fri, sat or sun (or the whole name)")
        })
    };
    let mut days = [false; 7];
    for part in text.split(',') {
        match part.split_once('-') {
            Some((first, last)) => {
                let (first, last) = (day(first)?, day(last)?);
                // A range may wrap the week's end: fri-mon.
                let mut d = first;
                loop {
                    days[d] = true;
                    if d == last {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => days[day(part)?] = true,
        }
    }
    Ok(days)
}

/// Reads an IANA time zone name (`Europe/Berlin`, `America/New_York`, `UTC`).
pub fn parse_zone(text: &str) -> Result<Tz, String> {
    text.trim().parse::<Tz>().map_err(|_| {
        format!("`{}` is not a time zone; write an IANA name such as Europe/Berlin or America/New_York", text.trim())
    })
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

    const DAY_MS: u64 = 86_400_000;

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

    #[test]
    fn outside_working_hours_in_the_user_s_zone_counts_as_away() {
        let alice = UserId::parse("usr_alice").unwrap();
        let mut availability = Availability::default();
        availability.set_hours(alice.clone(), parse_hours("09:00-17:00", None).unwrap());
        availability.set_zone(alice.clone(), parse_zone("Europe/Berlin").unwrap());
        let at = |text: &str| u64::try_from(DateTime::parse_from_rfc3339(text).unwrap().timestamp_millis()).unwrap();
        // Tuesday 2026-12-01: Berlin is UTC+1 in winter.
        assert!(availability.is_away(&alice, at("2026-12-01T07:59:00Z")), "08:59 in Berlin");
        assert!(!availability.is_away(&alice, at("2026-12-01T08:00:00Z")), "09:00 in Berlin");
        assert!(!availability.is_away(&alice, at("2026-12-01T15:59:00Z")), "16:59 in Berlin");
        assert!(availability.is_away(&alice, at("2026-12-01T16:00:00Z")), "17:00 in Berlin");
        assert!(availability.is_away(&alice, at("2026-12-05T10:00:00Z")), "a Saturday");
        // Days away are the user's local days: 23:30 UTC on the 23rd is already the 24th in Berlin.
        availability.add(alice.clone(), parse_range("2026-12-24").unwrap());
        let mut all_day = availability.clone();
        all_day.set_hours(alice.clone(), parse_hours("00:00-23:59", Some("mon-sun")).unwrap());
        assert!(all_day.is_away(&alice, at("2026-12-23T23:30:00Z")));
        assert!(!all_day.is_away(&alice, at("2026-12-23T22:30:00Z")));
        // A night shift, Friday into Saturday.
        let night = parse_hours("22:00-06:00", Some("fri")).unwrap();
        let mut nights = Availability::default();
        nights.set_hours(alice.clone(), night);
        assert!(!nights.is_away(&alice, at("2026-12-04T23:00:00Z")), "Friday 23:00");
        assert!(!nights.is_away(&alice, at("2026-12-05T05:00:00Z")), "Saturday 05:00, the same shift");
        assert!(nights.is_away(&alice, at("2026-12-05T23:00:00Z")), "Saturday 23:00");
        assert_eq!(parse_days("mon-wed,sat").unwrap(), [true, true, true, false, false, true, false]);
        assert_eq!(parse_days("fri-mon").unwrap(), [true, false, false, false, true, true, true]);
        assert!(parse_days("funday").unwrap_err().contains("not a day"));
        assert!(parse_hours("9-5", None).unwrap_err().contains("HH:MM"));
        assert!(parse_hours("09:00-09:00", None).unwrap_err().contains("empty"));
        assert!(parse_zone("Mars/Olympus").unwrap_err().contains("IANA"));
    }
}
