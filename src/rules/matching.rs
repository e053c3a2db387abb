//! The compiled rules and the index that finds the ones an event fires, at a cost that does not grow with
//! the number of rules.
//!
//! Each enabled rule sits in exactly one bucket of its event kind: the bucket of its key when it has one (the
//! tag for tag events, the source for `contact_created`, the stage for `stage_changed`), otherwise the kind's
//! "any" bucket. Both hold rule positions in rule order, so evaluating is: look up one key bucket, merge it
//! with the "any" bucket, and check the rule's conditions. Strings are normalized once at compile time;
//! evaluation normalizes the event's few strings and, in the usual case where they are already trimmed lower
//! case, allocates nothing but its answer.
//!
//! Disabled rules are kept (in rule order, outside every bucket) so that `explain` can show them. Whether a
//! rule's conditions hold is decided in one place, [`CompiledRule::unmet`], which both `evaluate` and
//! `explain` use: the two cannot disagree about a rule they both look at.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use super::model::Kind;
use super::{Action, Match};
use crate::domain::followers::{ASSIGNED, PREVIOUSLY_ASSIGNED, is_stand_in};
use crate::event::{Event, EventKind, LocationId, UserId};

pub(super) use crate::event::normalize;

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
    /// The rule's own `ownership`, if it says one.
    pub ownership: Option<crate::domain::followers::Ownership>,
    /// `for`: how long (ms) the followers it adds stay.
    pub lasts: Option<u64>,
    /// `skip_if_following`: the rule does nothing where one of these already follows.
    pub skip_if_following: Option<Arc<[crate::event::UserId]>>,
    /// Whose followers it changes: the contact's, or the event's opportunity's.
    pub target: super::model::Target,
}

/// A condition a rule may put on an event, besides its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Condition {
    Location,
    Pipeline,
    /// The tag, source or stage, by kind: the index key.
    Key,
    FromStage,
}

/// An event's values as rules compare them, normalized once. A stage event may also carry the names of its
/// ids (`*_name`): a rule written with either matches.
pub(super) struct Facts<'e> {
    pub kind: Kind,
    pub location: &'e LocationId,
    pub key: Option<Cow<'e, str>>,
    pub key_name: Option<Cow<'e, str>>,
    pub pipeline: Option<Cow<'e, str>>,
    pub pipeline_name: Option<Cow<'e, str>>,
    pub from_stage: Option<Cow<'e, str>>,
    pub from_stage_name: Option<Cow<'e, str>>,
}

impl<'e> Facts<'e> {
    pub fn of(event: &'e Event) -> Self {
        let mut facts = Self {
            kind: Kind::of(&event.kind),
            location: &event.location_id,
            key: None,
            key_name: None,
            pipeline: None,
            pipeline_name: None,
            from_stage: None,
            from_stage_name: None,
        };
        match &event.kind {
            EventKind::TagAdded { tag } | EventKind::TagRemoved { tag } => facts.key = Some(normalize(tag)),
            EventKind::ContactCreated { source } => facts.key = source.as_deref().map(normalize),
            EventKind::AssignedChanged { record, .. } => facts.key = Some(Cow::Borrowed(record.name())),
            EventKind::StageChanged { pipeline, stage, from_stage, names, .. } => {
                facts.key = Some(normalize(stage));
                facts.pipeline = Some(normalize(pipeline));
                facts.from_stage = from_stage.as_deref().map(normalize);
                if let Some(names) = names {
                    facts.key_name = names.stage.as_deref().map(normalize);
                    facts.pipeline_name = names.pipeline.as_deref().map(normalize);
                    facts.from_stage_name = names.from_stage.as_deref().map(normalize);
                }
            }
        }
        facts
    }
}

impl CompiledRule {
    /// Its actions for one event: `@assigned` and `@previously_assigned` become the event's users, and an
    /// action for one the event does not name (nobody assigned) is left out.
    pub fn actions_for(&self, event: &EventKind) -> Vec<Action> {
        if !self.actions.iter().any(|a| matches!(a, Action::Add(u) | Action::Remove(u) if is_stand_in(u))) {
            return self.actions.clone();
        }
        let resolve = |user: &UserId| match user.as_str() {
            ASSIGNED => event.assignee().cloned(),
            PREVIOUSLY_ASSIGNED => event.previous_assignee().cloned(),
            _ => Some(user.clone()),
        };
        let mut actions: Vec<Action> = Vec::with_capacity(self.actions.len());
        for action in &self.actions {
            let resolved = match action {
                Action::Add(user) => resolve(user).map(Action::Add),
                Action::Remove(user) => resolve(user).map(Action::Remove),
                other => Some(other.clone()),
            };
            // `add = ["alice", "@assigned"]` where alice is the assignee: once.
            if let Some(action) = resolved.filter(|a| !actions.contains(a)) {
                actions.push(action);
            }
        }
        actions
    }

    /// The conditions of this rule that the event does not meet, in a fixed order; none means it fires (if
    /// enabled and of the event's kind). The key is checked too, though the index already did: rules from
    /// the "any" bucket have no key, and `explain` looks at rules outside the bucket.
    pub fn unmet(&self, facts: &Facts<'_>) -> impl Iterator<Item = Condition> + use<> {
        let equal = |wanted: &Option<Box<str>>, actual: &Option<Cow<'_, str>>, name: &Option<Cow<'_, str>>| {
            wanted.as_deref().is_none_or(|wanted| actual.as_deref() == Some(wanted) || name.as_deref() == Some(wanted))
        };
        let checks = [
            (
                Condition::Location,
                self.locations.as_ref().is_none_or(|scope| scope.binary_search(facts.location).is_ok()),
            ),
            (Condition::Pipeline, equal(&self.pipeline, &facts.pipeline, &facts.pipeline_name)),
            (Condition::Key, equal(&self.key, &facts.key, &facts.key_name)),
            (Condition::FromStage, equal(&self.from_stage, &facts.from_stage, &facts.from_stage_name)),
        ];
        checks.into_iter().filter_map(|(condition, met)| (!met).then_some(condition))
    }
}

/// Every rule, and the enabled ones bucketed by event kind and key.
pub(super) struct Index {
    /// Every rule, enabled or not, in rule order; buckets hold positions in it.
    rules: Vec<CompiledRule>,
    keyed: [HashMap<Box<str>, Vec<usize>>; Kind::COUNT],
    any: [Vec<usize>; Kind::COUNT],
}

impl Index {
    /// Indexes `rules` (in rule order); disabled ones stay out of every bucket, so they can never fire.
    pub fn build(rules: Vec<CompiledRule>) -> Self {
        let mut keyed: [HashMap<Box<str>, Vec<usize>>; Kind::COUNT] = Default::default();
        let mut any: [Vec<usize>; Kind::COUNT] = Default::default();
        for (position, rule) in rules.iter().enumerate().filter(|(_, rule)| rule.enabled) {
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
        let facts = Facts::of(event);
        let fires = |position: &usize| self.rules[*position].unmet(&facts).next().is_none();
        let mut positions: Vec<usize> = self.bucket(facts.kind, facts.key.as_deref()).filter(fires).collect();
        // A stage event whose stage also has a name: rules keyed by the name are in another bucket.
        if let Some(name) = facts.key_name.as_deref().filter(|name| Some(*name) != facts.key.as_deref()) {
            let keyed = self.keyed[facts.kind.index()].get(name).map_or(&[][..], Vec::as_slice);
            positions.extend(keyed.iter().filter(|p| fires(p)));
            positions.sort_unstable();
            positions.dedup();
        }
        positions
            .into_iter()
            .map(|position| &self.rules[position])
            .map(|rule| Match {
                rule: rule.name.clone(),
                actions: rule.actions_for(&event.kind),
                target: rule.target,
                ownership: rule.ownership,
                lasts: rule.lasts,
                skip_if_following: rule.skip_if_following.clone(),
            })
            .collect()
    }

    /// The enabled `stage_changed` rules, for checking their pipeline and stage values against what a
    /// location really has: (rule, locations, pipeline, stage, from_stage), normalized.
    pub fn stage_rules(&self) -> impl Iterator<Item = &CompiledRule> {
        self.rules.iter().filter(|rule| rule.enabled && rule.kind == Kind::StageChanged)
    }

    /// Every rule, enabled or not, in rule order.
    pub fn all(&self) -> &[CompiledRule] {
        &self.rules
    }

    /// Positions of the rules that may fire for this kind and (raw) key: the key's bucket merged with the
    /// kind's "any" bucket, in rule order. Nothing else is looked at, whatever the number of rules.
    #[cfg(test)]
    pub fn candidates(&self, kind: Kind, key: Option<&str>) -> Merged<'_> {
        self.bucket(kind, key.map(normalize).as_deref())
    }

    /// Like `candidates`, for a key already normalized.
    fn bucket(&self, kind: Kind, key: Option<&str>) -> Merged<'_> {
        let keyed = key.and_then(|key| self.keyed[kind.index()].get(key));
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
