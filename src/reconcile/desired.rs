//! One contact's desired followers, from its present state and the rules, and the change that reaches them
//! from its actual followers. Pure: the caller reads the contact (search) and followd's memory first.
//!
//! The order is `DESIGN.md`'s ("Reconcile"): first, for each `tag_removed` rule whose tag the contact lacks,
//! that rule's removals; then `contact_created` with its source; then `tag_added` for each tag it has, in name
//! order. Per user the last word wins, so a follower that any present tag or the source asks for stays,
//! whatever an absent tag's rule would remove. A round robin is satisfied by any member of its team already
//! following (no new pick). Removals obey ownership: `--ownership` for the run, else the rule's own, else
//! `managed` for `remove_all` and absent-tag removals (a reconcile never clears a person's followers unless
//! told) and the configuration's `followers.ownership` for the rest.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::domain::followers::{Action, Ownership};
use crate::event::{ContactId, Event, EventId, EventKind, LocationId, UserId};
use crate::rules::RuleSet;

/// How removals are judged in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judgement {
    /// `--ownership`: wins over every rule's own.
    pub run: Option<Ownership>,
    /// `followers.ownership`: for a present state's removals when the rule says nothing.
    pub config: Ownership,
}

/// What a contact is now, as the CRM's search lists it, and which of its followers followd added.
#[derive(Debug, Clone, Copy)]
pub struct Present<'a> {
    /// The id the events derived from this state carry (rules never look at it).
    pub event: &'a EventId,
    pub location: &'a LocationId,
    pub contact: &'a ContactId,
    pub tags: &'a [String],
    pub source: Option<&'a str>,
    pub followers: &'a [UserId],
    pub owned: &'a [UserId],
}

/// The change one contact needs; empty when it is already right.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needed {
    /// Users to add, and the rule that asks for each.
    pub add: BTreeMap<UserId, Arc<str>>,
    /// Users to remove, the rule that asks, and whose followers that removal may touch.
    pub remove: BTreeMap<UserId, (Arc<str>, Ownership)>,
    /// Round robins no team member satisfies yet: the queue picks, as for a live event.
    pub round_robin: Vec<(Arc<str>, Action)>,
}

impl Needed {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty() && self.round_robin.is_empty()
    }

    /// The rules behind this change.
    pub fn rules(&self) -> BTreeSet<Arc<str>> {
        self.add
            .values()
            .chain(self.remove.values().map(|(rule, _)| rule))
            .chain(self.round_robin.iter().map(|(rule, _)| rule))
            .cloned()
            .collect()
    }
}

/// Where a user stands after the rules have had their say, and who said it.
enum Word {
    Add(Arc<str>),
    Remove(Arc<str>, Ownership),
}

/// The change that brings `present` in line with `rules`.
pub fn needed(present: Present<'_>, rules: &RuleSet, judgement: Judgement) -> Needed {
    let following: BTreeSet<&UserId> = present.followers.iter().collect();
    let owned: BTreeSet<&UserId> = present.owned.iter().filter(|u| following.contains(u)).collect();
    let tags: BTreeSet<String> = present.tags.iter().map(|t| crate::event::normalize(t).into_owned()).collect();
    let event = |kind| Event {
        id: present.event.clone(),
        location_id: present.location.clone(),
        contact_id: present.contact.clone(),
        occurred_at: None,
        kind,
    };
    // (event, whether its removals default to managed)
    let mut asked: Vec<(Event, bool)> = Vec::new();
    for tag in rules.removal_tags(present.location).into_iter().filter(|t| !tags.contains(t)) {
        asked.push((event(EventKind::TagRemoved { tag }), true));
    }
    asked.push((event(EventKind::ContactCreated { source: present.source.map(str::to_owned) }), false));
    for tag in &tags {
        asked.push((event(EventKind::TagAdded { tag: tag.clone() }), false));
    }
    let mut words: BTreeMap<UserId, Word> = BTreeMap::new();
    let mut round_robins: Vec<(Arc<str>, Action)> = Vec::new();
    for (event, absent_tag) in &asked {
        for matched in rules.evaluate(event) {
            let rule = matched.rule;
            for action in matched.actions {
                // A rule with `for` adds for a while after its event, not for as long as a state holds: its
                // adds are not a state to converge to (the timed removal would be undone at every run).
                if matched.lasts.is_some() && matches!(action, Action::Add(_) | Action::RoundRobin(_)) {
                    continue;
                }
                let ownership = |default| judgement.run.or(matched.ownership).unwrap_or(default);
                match action {
                    Action::RemoveAll => {
                        let ownership = ownership(Ownership::Managed);
                        round_robins.clear();
                        // What came before is cleared, but removals, which this one may not cover.
                        words.retain(|_, word| matches!(word, Word::Remove(..)));
                        for user in present.followers {
                            if ownership == Ownership::Any || owned.contains(user) {
                                words.insert(user.clone(), Word::Remove(Arc::clone(&rule), ownership));
                            }
                        }
                    }
                    Action::Remove(user) => {
                        let default = if *absent_tag { Ownership::Managed } else { judgement.config };
                        words.insert(user, Word::Remove(Arc::clone(&rule), ownership(default)));
                    }
                    Action::Add(user) => {
                        words.insert(user, Word::Add(Arc::clone(&rule)));
                    }
                    round_robin @ Action::RoundRobin { .. } => round_robins.push((Arc::clone(&rule), round_robin)),
                }
            }
        }
    }
    let mut needed = Needed::default();
    for (user, word) in words {
        match word {
            Word::Add(rule) if !following.contains(&user) => {
                needed.add.insert(user, rule);
            }
            Word::Remove(rule, ownership)
                if following.contains(&user) && (ownership == Ownership::Any || owned.contains(&user)) =>
            {
                needed.remove.insert(user, (rule, ownership));
            }
            _ => {}
        }
    }
    // A round robin is satisfied by any member of its team following, or about to.
    for (rule, action) in round_robins {
        let Some(rotation) = action.rotation() else { continue };
        let stays =
            |u: &UserId| (following.contains(u) && !needed.remove.contains_key(u)) || needed.add.contains_key(u);
        if !rotation.members.iter().any(|m| stays(&m.user)) && !needed.round_robin.iter().any(|(r, _)| *r == rule) {
            needed.round_robin.push((rule, action));
        }
    }
    needed
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use proptest::prelude::*;

    use super::*;

    const TAGS: [&str; 4] = ["vip", "lead", "hot", "cold"];
    const USERS: usize = 6;

    fn user(n: usize) -> UserId {
        UserId::parse(&format!("u{n}")).unwrap()
    }

    /// A rule: when `tag` is added, add these users; when it is removed, remove those; a lead source adds.
    #[derive(Debug, Clone)]
    enum Spec {
        Added(usize, Vec<usize>),
        Removed(usize, Vec<usize>),
        Source(Vec<usize>),
    }

    fn spec() -> impl Strategy<Value = Spec> {
        let users = || proptest::collection::vec(0..USERS, 1..3);
        prop_oneof![
            (0..TAGS.len(), users()).prop_map(|(t, u)| Spec::Added(t, u)),
            (0..TAGS.len(), users()).prop_map(|(t, u)| Spec::Removed(t, u)),
            users().prop_map(Spec::Source),
        ]
    }

    fn rule_set(specs: &[Spec]) -> RuleSet {
        let mut text = String::from("[users]\n");
        for n in 0..USERS {
            text.push_str(&format!("p{n} = \"u{n}\"\n"));
        }
        let names = |users: &[usize]| users.iter().map(|u| format!("\"p{u}\"")).collect::<Vec<_>>().join(", ");
        for (i, spec) in specs.iter().enumerate() {
            let (when, then) = match spec {
                Spec::Added(t, u) => {
                    (format!("event = \"tag_added\", tag = \"{}\"", TAGS[*t]), format!("add = [{}]", names(u)))
                }
                Spec::Removed(t, u) => {
                    (format!("event = \"tag_removed\", tag = \"{}\"", TAGS[*t]), format!("remove = [{}]", names(u)))
                }
                Spec::Source(u) => {
                    ("event = \"contact_created\", source = \"ads\"".to_owned(), format!("add = [{}]", names(u)))
                }
            };
            text.push_str(&format!("[[rule]]\nname = \"r{i}\"\nwhen = {{ {when} }}\nthen = {{ {then} }}\n"));
        }
        RuleSet::compile(&[(PathBuf::from("rules.toml"), text)]).expect("generated rules compile")
    }

    proptest! {
        /// Random rules, a random contact with followers some of which followd added (the rest a person's): the
        /// change reconcile works out ends exactly at the model's desired set, a second reconcile finds nothing
        /// to do, and under `managed` a person's followers are untouched.
        #[test]
        fn reconcile_ends_at_the_desired_set_and_leaves_a_person_s_followers(
            specs in proptest::collection::vec(spec(), 0..8),
            tags in proptest::collection::btree_set(0..TAGS.len(), 0..4),
            from_ads in any::<bool>(),
            followers in proptest::collection::btree_set(0..USERS, 0..USERS),
            owned_mask in proptest::collection::vec(any::<bool>(), USERS),
        ) {
            let rules = rule_set(&specs);
            let followers: Vec<UserId> = followers.into_iter().map(user).collect();
            let owned: Vec<UserId> = followers.iter().enumerate().filter(|(i, _)| owned_mask[*i]).map(|(_, u)| u.clone()).collect();
            let tags: Vec<String> = tags.iter().map(|t| TAGS[*t].to_owned()).collect();
            let (location, contact) = (LocationId::parse("loc").unwrap(), ContactId::parse("c").unwrap());
            let id = EventId::parse("reconcile").unwrap();
            let present = Present {
                event: &id,
                location: &location, contact: &contact, tags: &tags,
                source: from_ads.then_some("ads"), followers: &followers, owned: &owned,
            };
            let judgement = Judgement { run: None, config: Ownership::Any };
            let needed = needed(present, &rules, judgement);

            // The model: what present tags and the source ask for stays or comes; what absent tags' rules remove
            // goes, where followd added it.
            let mut wanted = BTreeSet::new();
            let mut unwanted = BTreeSet::new();
            for spec in &specs {
                match spec {
                    Spec::Added(t, u) if tags.contains(&TAGS[*t].to_owned()) => wanted.extend(u.iter().map(|n| user(*n))),
                    Spec::Removed(t, u) if !tags.contains(&TAGS[*t].to_owned()) => unwanted.extend(u.iter().map(|n| user(*n))),
                    Spec::Source(u) if from_ads => wanted.extend(u.iter().map(|n| user(*n))),
                    _ => {}
                }
            }
            let mut desired: BTreeSet<UserId> = followers.iter().cloned().collect();
            desired.retain(|u| !(unwanted.contains(u) && !wanted.contains(u) && owned.contains(u)));
            desired.extend(wanted);

            let mut after: BTreeSet<UserId> = followers.iter().cloned().collect();
            after.retain(|u| !needed.remove.contains_key(u));
            after.extend(needed.add.keys().cloned());
            prop_assert_eq!(&after, &desired);
            let persons: BTreeSet<&UserId> = followers.iter().filter(|u| !owned.contains(u)).collect();
            prop_assert!(persons.iter().all(|u| after.contains(*u)), "a person's follower was removed");

            let after: Vec<UserId> = after.into_iter().collect();
            let mut owned_after: Vec<UserId> = owned.iter().filter(|u| after.contains(u)).cloned().collect();
            owned_after.extend(needed.add.keys().cloned());
            let again = Present { followers: &after, owned: &owned_after, ..present };
            prop_assert!(super::needed(again, &rules, judgement).is_empty(), "a second reconcile changed more");
        }
    }
}
