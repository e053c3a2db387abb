//! The last decisions this process made, for the status page: a webhook's events, the rules that fired, the
//! operations queued, and what delivery made of them. Bounded ([`KEEP`]), in memory, per process: the durable
//! record is the audit trail in the queue's store.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::domain::clock::Millis;
use crate::domain::outcome::Outcome;
use crate::event::{ContactId, EventId, LocationId};

/// How many decisions are kept.
pub const KEEP: usize = 50;

/// One webhook event and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub at: Millis,
    pub source: String,
    pub event_id: EventId,
    pub location_id: LocationId,
    pub contact_id: ContactId,
    /// The events, as `tag_added vip`.
    pub events: Vec<String>,
    pub rules: Vec<String>,
    pub operations: usize,
    /// [`Outcome::Queued`] until a worker reports (this process's, or another's through the store, see
    /// [`crate::queue::Outcomes`]).
    pub delivery: Outcome,
}

/// Most locations remembered as seen (a scheduled reconcile visits each).
pub const MAX_LOCATIONS: usize = 10_000;

/// The ring of recent decisions, newest first, and the locations webhooks came from.
#[derive(Debug, Default)]
pub struct Decisions {
    recent: Mutex<VecDeque<Decision>>,
    /// Every location a webhook came from since this process started (at most [`MAX_LOCATIONS`]).
    locations: Mutex<std::collections::BTreeSet<LocationId>>,
}

impl Decisions {
    pub fn record(&self, decision: Decision) {
        {
            let mut locations = self.locations.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if locations.len() < MAX_LOCATIONS {
                locations.insert(decision.location_id.clone());
            }
        }
        let mut recent = self.recent.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        recent.push_front(decision);
        recent.truncate(KEEP);
    }

    /// Sets the delivery result of the decisions behind these events.
    pub fn delivered(&self, events: &[EventId], outcome: &Outcome) {
        let mut recent = self.recent.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for decision in recent.iter_mut().filter(|d| events.contains(&d.event_id)) {
            decision.delivery = outcome.clone();
        }
    }

    /// The locations webhooks came from since start.
    pub fn locations(&self) -> Vec<LocationId> {
        self.locations.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter().cloned().collect()
    }

    pub fn snapshot(&self) -> Vec<Decision> {
        self.recent.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(id: &str) -> Decision {
        Decision {
            at: 0,
            source: "s".into(),
            event_id: EventId::parse(id).unwrap(),
            location_id: LocationId::parse("l").unwrap(),
            contact_id: ContactId::parse("c").unwrap(),
            events: vec![],
            rules: vec![],
            operations: 1,
            delivery: Outcome::Queued,
        }
    }

    #[test]
    fn the_newest_come_first_and_only_the_last_ones_are_kept() {
        let decisions = Decisions::default();
        for i in 0..KEEP + 3 {
            decisions.record(decision(&format!("e{i}")));
        }
        let snapshot = decisions.snapshot();
        assert_eq!(snapshot.len(), KEEP);
        assert_eq!(snapshot[0].event_id.as_str(), format!("e{}", KEEP + 2));
        decisions.delivered(std::slice::from_ref(&snapshot[0].event_id), &Outcome::Delivered);
        assert_eq!(decisions.snapshot()[0].delivery, Outcome::Delivered);
    }
}
