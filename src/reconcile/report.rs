//! What a reconcile found and did, as `--plan --json` prints it (`DESIGN.md`, "Reconcile") and as people read
//! it: per rule and in total, the contacts affected, the followers to add and remove, the calls and the time
//! they take at the location's budget, and the changes themselves (the first [`MAX_CHANGES`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::desired::Needed;
use crate::event::{ContactId, LocationId};

/// Most changes listed one by one; the totals count them all.
pub const MAX_CHANGES: usize = 1000;

/// A plan's (or a run's) totals. Field names are the contract's.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    pub location: String,
    pub contacts_read: u64,
    pub contacts_changed: u64,
    pub add: u64,
    pub remove: u64,
    /// Upstream calls an apply makes: the pages it reads and, per changed contact, a DELETE and/or a POST.
    pub calls: u64,
    /// How long those calls take at the location's budget, at `reconcile.max_share` of it.
    pub eta_seconds: u64,
    pub rules: Vec<RuleReport>,
    pub changes: Vec<Change>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub changes_truncated: bool,
    /// Pages read (in `calls`).
    #[serde(skip)]
    pub pages: u64,
    #[serde(skip)]
    by_rule: BTreeMap<Arc<str>, RuleReport>,
}

/// One rule's share of the plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RuleReport {
    pub rule: String,
    pub contacts: u64,
    pub add: u64,
    pub remove: u64,
}

/// One contact's change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub contact_id: String,
    pub add: Vec<String>,
    pub remove: Vec<String>,
    /// Teams whose round robin picks one member (the queue picks when the change is applied).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub round_robin: Vec<String>,
}

impl Report {
    pub fn new(location: &LocationId) -> Self {
        Self { location: location.to_string(), ..Self::default() }
    }

    /// Counts a page read.
    pub fn page(&mut self, contacts: usize) {
        self.pages += 1;
        self.calls += 1;
        self.contacts_read += contacts as u64;
    }

    /// Counts one contact's change.
    pub fn change(&mut self, contact: &ContactId, needed: &Needed) {
        if needed.is_empty() {
            return;
        }
        self.contacts_changed += 1;
        let adds = needed.add.len() + needed.round_robin.len();
        self.add += adds as u64;
        self.remove += needed.remove.len() as u64;
        self.calls += u64::from(!needed.remove.is_empty()) + u64::from(adds > 0);
        for rule in needed.rules() {
            let entry = self
                .by_rule
                .entry(Arc::clone(&rule))
                .or_insert_with(|| RuleReport { rule: rule.to_string(), ..RuleReport::default() });
            entry.contacts += 1;
            entry.add += needed.add.values().filter(|r| **r == rule).count() as u64
                + needed.round_robin.iter().filter(|(r, _)| *r == rule).count() as u64;
            entry.remove += needed.remove.values().filter(|(r, _)| *r == rule).count() as u64;
        }
        if self.changes.len() < MAX_CHANGES {
            self.changes.push(Change {
                contact_id: contact.to_string(),
                add: needed.add.keys().map(ToString::to_string).collect(),
                remove: needed.remove.keys().map(ToString::to_string).collect(),
                round_robin: needed.round_robin.iter().map(|(rule, _)| rule.to_string()).collect(),
            });
        } else {
            self.changes_truncated = true;
        }
    }

    /// Closes the report: per-rule lines in rule-name order, and the time the calls take.
    pub fn finish(&mut self, spacing_ms: u64, max_share: f64) {
        self.rules = std::mem::take(&mut self.by_rule).into_values().collect();
        let share = if max_share > 0.0 { max_share.min(1.0) } else { 1.0 };
        self.eta_seconds = ((self.calls as f64) * (spacing_ms as f64) / share / 1000.0).ceil() as u64;
    }

    /// The plan as people read it.
    pub fn text(&self) -> String {
        let mut out = format!(
            "location {}: {} contacts read, {} to change: +{} followers, -{} followers\n\
             {} upstream calls ({} pages read, {} follower calls), about {} at the location's budget\n",
            self.location,
            self.contacts_read,
            self.contacts_changed,
            self.add,
            self.remove,
            self.calls,
            self.pages,
            self.calls - self.pages,
            humantime::format_duration(std::time::Duration::from_secs(self.eta_seconds)),
        );
        for rule in &self.rules {
            out.push_str(&format!(
                "  rule {:<40} {:>6} contacts  +{:<6} -{}\n",
                format!("`{}`", rule.rule),
                rule.contacts,
                rule.add,
                rule.remove
            ));
        }
        for change in &self.changes {
            let mut line = format!("  {}:", change.contact_id);
            for user in &change.add {
                line.push_str(&format!(" +{user}"));
            }
            for user in &change.remove {
                line.push_str(&format!(" -{user}"));
            }
            for team in &change.round_robin {
                line.push_str(&format!(" +round robin of `{team}`"));
            }
            out.push_str(&line);
            out.push('\n');
        }
        if self.changes_truncated {
            out.push_str(&format!("  (the first {MAX_CHANGES} changes are listed; the totals count all)\n"));
        }
        out
    }
}
