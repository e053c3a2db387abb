//! The compiled rules and the index that finds the ones an event fires, at a cost that does not grow with
//! the number of rules.
//!
//! Each enabled rule sits in exactly one bucket of its event kind: the bucket of its key when it has one (the
//! tag for tag events, the source for `contact_created`, the stage for `stage_changed`), otherwise the kind's
//! "any" bucket. Both hold rule positions in rule order, so evaluating is: look up one key bucket, merge it
//! with the "any" bucket, and check what the key does not cover (location scope, pipeline, previous stage).
//! Strings are normalized once at compile time; evaluation normalizes the event's few strings and, in the
//! usual case where they are already trimmed lower case, allocates nothing but its answer.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use super::model::Kind;
use super::{Action, Match};
use crate::event::{Event, EventKind, LocationId};

/// How the CRM compares tags, and how followd compares sources, pipelines and stages: surrounding white
/// space ignored, case ignored (Unicode lower case).
pub(super) fn normalize(text: &str) -> Cow<'_, str> {
    let trimmed = text.trim();
    let changes = trimmed.chars().any(|c| {
        let mut lower = c.to_lowercase();
        lower.next() != Some(c) || lower.next().is_some()
    });
    if changes { Cow::Owned(trimmed.to_lowercase()) } else { Cow::Borrowed(trimmed) }
}

/// One valid rule, ready to match.
pub(super) struct CompiledRule {
    pub name: Arc<str>,
    pub enabled: bool,
    pub kind: Kind,
    /// Normalized tag, source or stage (by kind): the index key.
    pub key: Option<Box<str>>,
    /// Normalized; only for `stage_changed`.
    pub pipeline: Option<Box<str>>,
    /// Normalized; only for `stage_changed`. An event that does not know its previous stage does not match.
    pub from_stage: Option<Box<str>>,
    /// Sorted, so a scope is checked by binary search. `None` is every location.
    pub locations: Option<Box<[LocationId]>>,
    /// In application order: remove_all, remove, add, round_robin.
    pub actions: Vec<Action>,
}

impl CompiledRule {
    /// The conditions the index key does not cover.
    fn applies(&self, location: &LocationId, pipeline: Option<&str>, from_stage: Option<&str>) -> bool {
        self.locations.as_ref().is_none_or(|scope| scope.binary_search(location).is_ok())
            && self.pipeline.as_deref().is_none_or(|wanted| pipeline == Some(wanted))
            && self.from_stage.as_deref().is_none_or(|wanted| from_stage == Some(wanted))
    }
}

/// The enabled rules, bucketed by event kind and key.
pub(super) struct Index {
    rules: Vec<CompiledRule>,
    keyed: [HashMap<Box<str>, Vec<usize>>; Kind::COUNT],
    any: [Vec<usize>; Kind::COUNT],
}

impl Index {
    /// Indexes `rules` (in rule order); disabled ones are dropped here, so they can never fire.
    pub fn build(rules: Vec<CompiledRule>) -> Self {
        let rules: Vec<CompiledRule> = rules.into_iter().filter(|rule| rule.enabled).collect();
        let mut keyed: [HashMap<Box<str>, Vec<usize>>; Kind::COUNT] = Default::default();
        let mut any: [Vec<usize>; Kind::COUNT] = Default::default();
        for (position, rule) in rules.iter().enumerate() {
            let kind = rule.kind.index();
            match &rule.key {
                Some(key) => keyed[kind].entry(key.clone()).or_default().push(position),
                None => any[kind].push(position),
            }
        }
        Self { rules, keyed, any }
    }

    /// The rules `event` fires, in rule order.
    pub fn evaluate(&self, event: &Event) -> Vec<Match> {
        let (key, pipeline, from_stage) = match &event.kind {
            EventKind::TagAdded { tag } | EventKind::TagRemoved { tag } => (Some(tag.as_str()), None, None),
            EventKind::ContactCreated { source } => (source.as_deref(), None, None),
            EventKind::StageChanged { pipeline, stage, from_stage } => {
                (Some(stage.as_str()), Some(pipeline.as_str()), from_stage.as_deref())
            }
        };
        let pipeline = pipeline.map(normalize);
        let from_stage = from_stage.map(normalize);
        self.candidates(Kind::of(&event.kind), key)
            .map(|position| &self.rules[position])
            .filter(|rule| rule.applies(&event.location_id, pipeline.as_deref(), from_stage.as_deref()))
            .map(|rule| Match { rule: rule.name.clone(), actions: rule.actions.clone() })
            .collect()
    }

    /// Positions of the rules that may fire for this kind and (raw) key: the key's bucket merged with the
    /// kind's "any" bucket, in rule order. Nothing else is looked at, whatever the number of rules.
    pub fn candidates(&self, kind: Kind, key: Option<&str>) -> Merged<'_> {
        let keyed = key.and_then(|key| self.keyed[kind.index()].get(normalize(key).as_ref()));
        Merged { left: keyed.map_or(&[], Vec::as_slice), right: &self.any[kind.index()] }
    }
}

/// Two ascending lists of rule positions, walked as one ascending list.
pub(super) struct Merged<'a> {
    left: &'a [usize],
    right: &'a [usize],
}

impl<'a> Iterator for Merged<'a> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let take_left = match (self.left.first(), self.right.first()) {
            (Some(left), Some(right)) => left < right,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return None,
        };
        let side = if take_left { &mut self.left } else { &mut self.right };
        let list: &'a [usize] = side;
        let (&first, rest) = list.split_first()?;
        *side = rest;
        Some(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizing_trims_and_lowercases_and_borrows_when_it_can() {
        assert_eq!(normalize("  VIP Client "), "vip client");
        assert_eq!(normalize("ÉTÉ"), "été");
        assert!(matches!(normalize("vip"), Cow::Borrowed("vip")));
    }

    #[test]
    fn merged_buckets_come_out_in_rule_order() {
        let merged = Merged { left: &[1, 4, 9], right: &[0, 2, 3, 10] };
        assert_eq!(merged.collect::<Vec<_>>(), [0, 1, 2, 3, 4, 9, 10]);
    }
}
