//! What this process answered each webhook source over the last hour, per minute: the sender's view.
//!
//! GoHighLevel checks each webhook URL's share of 2xx answers and may pause a receiver that answers too few
//! (`shared/ghl/API.md` §13), so the status page shows each source's share and warns under [`WARN_UNDER`].
//! Bounded: one bucket per minute for an hour, per configured source (unknown names are not counted here).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use crate::domain::clock::Millis;

/// Minutes kept.
const MINUTES: u64 = 60;
/// The share of 2xx answers under which the status page warns.
pub const WARN_UNDER: f64 = 0.95;

/// One minute of one source's answers: (minute since the epoch, answered, of which 2xx).
type Minute = (u64, u64, u64);

/// Per source, its minutes, oldest first.
#[derive(Debug, Default)]
pub struct Answers {
    by_source: Mutex<BTreeMap<String, VecDeque<Minute>>>,
}

/// One source's last hour.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceShare {
    pub source: String,
    pub answered: u64,
    pub ok: u64,
}

impl SourceShare {
    /// The share of 2xx answers; 1 when nothing was answered.
    pub fn share(&self) -> f64 {
        if self.answered == 0 { 1.0 } else { self.ok as f64 / self.answered as f64 }
    }

    pub fn warn(&self) -> bool {
        self.share() < WARN_UNDER
    }
}

impl Answers {
    /// Counts one answer to `source` at `now`.
    pub fn record(&self, source: &str, success: bool, now: Millis) {
        let minute = now / 60_000;
        let mut by_source = self.by_source.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let buckets = by_source.entry(source.to_owned()).or_default();
        match buckets.back_mut() {
            Some((at, answered, ok)) if *at == minute => {
                *answered += 1;
                *ok += u64::from(success);
            }
            _ => buckets.push_back((minute, 1, u64::from(success))),
        }
        while buckets.front().is_some_and(|(at, _, _)| *at + MINUTES <= minute) {
            buckets.pop_front();
        }
    }

    /// Each source's answers over the hour before `now`.
    pub fn last_hour(&self, now: Millis) -> Vec<SourceShare> {
        let minute = now / 60_000;
        let by_source = self.by_source.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        by_source
            .iter()
            .map(|(source, buckets)| {
                let recent = buckets.iter().filter(|(at, _, _)| at + MINUTES > minute);
                let (answered, ok) = recent.fold((0, 0), |(a, o), (_, answered, ok)| (a + answered, o + ok));
                SourceShare { source: source.clone(), answered, ok }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_counts_the_last_hour_only_and_warns_under_95_percent() {
        let answers = Answers::default();
        let t0 = 1_800_000_000_000;
        for i in 0..100 {
            answers.record("ghl", i >= 10, t0);
        }
        answers.record("generic", true, t0);
        let now = answers.last_hour(t0);
        assert_eq!(now[1], SourceShare { source: "ghl".into(), answered: 100, ok: 90 });
        assert!(now[1].warn() && !now[0].warn());
        // An hour later the failures have aged out.
        answers.record("ghl", true, t0 + 61 * 60_000);
        let later = answers.last_hour(t0 + 61 * 60_000);
        assert_eq!((later[1].answered, later[1].ok, later[1].warn()), (1, 1, false));
    }
}
