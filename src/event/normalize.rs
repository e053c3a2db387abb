//! The one normalisation step: a parsed payload's [`Observation`]s, plus what the store remembers about their
//! contacts, plus (optionally) the names of pipeline and stage ids, become [`Event`]s.
//!
//! Pure: the caller reads the stored state ([`Stored`]) and looks the names up ([`NameLookup`]) before
//! calling, so this is the only place events are built from observations, whatever the format, and it can
//! be tested without a store or a CRM. Format adapters build an [`Event`] directly only where the payload
//! already says everything (`Observation::Event`).

use super::{ContactKey, Event, EventId, EventKind, LocationId, Observation, PayloadError, Record, StageNames, UserId};

/// What changed in a contact's tag set, from its stored last-seen set. Tags are compared as the CRM treats
/// them ([`super::normalize`]) and reported in their normalized (lower-case) form, sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TagDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// The payload's time is older than the last whole-state payload applied for the contact: nothing was
    /// changed, and the payload yields no event (it would undo newer changes).
    #[serde(default)]
    pub stale: bool,
}

/// What the store said about one observation, read before normalising it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Nothing stored is needed (an event complete as it is, a deletion, an ignored type).
    Nothing,
    /// A whole tag list, compared with the last seen one.
    Tags(TagDiff),
    /// An opportunity's stage: the one it had before, if known.
    PreviousStage(Option<String>),
    /// Whom it was assigned to before, as stored: `None` never seen, `Some("")` nobody.
    PreviousAssignee(Option<String>),
}

/// Names for a location's pipeline and stage ids (the CRM's pipelines API), so rules may use either.
pub trait NameLookup {
    fn names(&self, pipeline: &str, stage: &str, from_stage: Option<&str>) -> StageNames;
}

/// One payload entry's events: one id, one contact. An entry may yield no event (a tag list that did not
/// change, a deletion) and is still remembered for de-duplication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occurrence {
    pub id: EventId,
    pub contact: ContactKey,
    pub events: Vec<Event>,
    /// A whole-state payload older than what was applied: acknowledged, and nothing else.
    pub stale: bool,
}

/// The contact an observation is about, and the location whose names it may need; `None` for an ignored
/// payload type.
pub fn subject(observation: &Observation) -> Option<ContactKey> {
    let key = |location_id: &LocationId, contact_id: &super::ContactId| ContactKey {
        location_id: location_id.clone(),
        contact_id: contact_id.clone(),
    };
    match observation {
        Observation::Event(event) => Some(key(&event.location_id, &event.contact_id)),
        Observation::Tags { location_id, contact_id, .. }
        | Observation::Stage { location_id, contact_id, .. }
        | Observation::Assigned { location_id, contact_id, .. }
        | Observation::ContactDeleted { location_id, contact_id, .. } => Some(key(location_id, contact_id)),
        Observation::Ignored { .. } | Observation::User(_) => None,
    }
}

/// Turns one observation and what the store said about it into its occurrence; `None` for an ignored type.
/// A `Stored` value that does not fit the observation (a caller's mistake) reads as nothing stored.
pub fn occurrence(observation: Observation, stored: Stored, names: Option<&dyn NameLookup>) -> Option<Occurrence> {
    let contact = subject(&observation)?;
    Some(match observation {
        Observation::Event(event) => Occurrence { id: event.id.clone(), contact, events: vec![event], stale: false },
        Observation::Tags { id, location_id, contact_id, occurred_at, created, source, .. } => {
            let diff = match stored {
                Stored::Tags(diff) => diff,
                _ => TagDiff::default(),
            };
            if diff.stale {
                return Some(Occurrence { id, contact, events: Vec::new(), stale: true });
            }
            let event = |kind| Event {
                id: id.clone(),
                location_id: location_id.clone(),
                contact_id: contact_id.clone(),
                occurred_at,
                kind,
            };
            // A new contact's source comes first, then what left, then what arrived: removals before additions
            // keep a rule that swaps one tag's team for another's from removing what it just added.
            let created = created.then(|| event(EventKind::ContactCreated { source }));
            let removed = diff.removed.into_iter().map(|tag| event(EventKind::TagRemoved { tag }));
            let added = diff.added.into_iter().map(|tag| event(EventKind::TagAdded { tag }));
            let events = created.into_iter().chain(removed).chain(added).collect();
            Occurrence { id, contact, events, stale: false }
        }
        Observation::Stage {
            id,
            location_id,
            contact_id,
            occurred_at,
            pipeline,
            stage,
            opportunity_id,
            assigned_to,
        } => {
            let from_stage = match stored {
                Stored::PreviousStage(previous) => previous,
                _ => None,
            };
            // App webhooks carry ids: the names are added, so rules written with names match too.
            let names = names.map(|lookup| Box::new(lookup.names(&pipeline, &stage, from_stage.as_deref())));
            let opportunity_id = Some(opportunity_id);
            let kind = EventKind::StageChanged { pipeline, stage, from_stage, names, opportunity_id, assigned_to };
            let events = vec![Event { id: id.clone(), location_id, contact_id, occurred_at, kind }];
            Occurrence { id, contact, events, stale: false }
        }
        Observation::Assigned { id, location_id, contact_id, occurred_at, opportunity_id, assigned_to, announces } => {
            let previous = match stored {
                Stored::PreviousAssignee(previous) => previous,
                // Older than the contact's state applied: nothing happened.
                Stored::Tags(TagDiff { stale: true, .. }) => {
                    return Some(Occurrence { id, contact, events: Vec::new(), stale: true });
                }
                _ => None,
            };
            let now = assigned_to.as_ref().map_or("", UserId::as_str);
            // Never seen before: a change only when someone is assigned and the payload announces it (a first
            // payload of an unassigned contact, or a stage update, says nothing happened to the assignment).
            let changed = previous.as_deref().map_or(announces && assigned_to.is_some(), |before| before != now);
            let from = previous.as_deref().and_then(|before| UserId::parse(before).ok());
            let record = Record::of(opportunity_id.as_deref());
            let kind = EventKind::AssignedChanged { record, assigned_to, from, opportunity_id };
            let events = if changed {
                vec![Event { id: id.clone(), location_id, contact_id, occurred_at, kind }]
            } else {
                Vec::new()
            };
            Occurrence { id, contact, events, stale: false }
        }
        Observation::ContactDeleted { id, .. } => Occurrence { id, contact, events: Vec::new(), stale: false },
        Observation::Ignored { .. } | Observation::User(_) => return None,
    })
}

/// Adds an occurrence to a payload's list: events sharing an id (one generic entry) form one occurrence; one
/// id used for two contacts is a payload error.
pub fn merge(occurrences: &mut Vec<Occurrence>, next: Occurrence) -> Result<(), PayloadError> {
    match occurrences.iter_mut().find(|o| o.id == next.id) {
        Some(existing) if existing.contact != next.contact => Err(PayloadError::Invalid {
            at: format!("event `{}`", next.id),
            message: "the same id is used for two different contacts; ids must be unique".to_owned(),
        }),
        Some(existing) => {
            existing.events.extend(next.events);
            existing.stale |= next.stale;
            Ok(())
        }
        None => {
            occurrences.push(next);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ContactId;

    fn tags_observation(created: bool) -> Observation {
        Observation::Tags {
            id: EventId::parse("e1").unwrap(),
            location_id: LocationId::parse("loc").unwrap(),
            contact_id: ContactId::parse("c1").unwrap(),
            occurred_at: None,
            tags: vec!["VIP".into()],
            created,
            source: Some("Facebook Ads".into()),
        }
    }

    fn kinds(occurrence: &Occurrence) -> Vec<EventKind> {
        occurrence.events.iter().map(|e| e.kind.clone()).collect()
    }

    #[test]
    fn a_tag_list_becomes_the_source_then_removals_then_additions() {
        let diff = TagDiff { added: vec!["vip".into()], removed: vec!["lead".into()], stale: false };
        let occurrence = occurrence(tags_observation(true), Stored::Tags(diff), None).unwrap();
        assert_eq!(
            kinds(&occurrence),
            vec![
                EventKind::ContactCreated { source: Some("Facebook Ads".into()) },
                EventKind::TagRemoved { tag: "lead".into() },
                EventKind::TagAdded { tag: "vip".into() },
            ]
        );
        let unchanged = super::occurrence(tags_observation(false), Stored::Tags(TagDiff::default()), None).unwrap();
        assert!(unchanged.events.is_empty(), "an unchanged list is remembered but yields no event");
    }

    struct Names;
    impl NameLookup for Names {
        fn names(&self, _: &str, stage: &str, from: Option<&str>) -> StageNames {
            StageNames {
                pipeline: Some("Sales".into()),
                stage: Some(format!("name of {stage}")),
                from_stage: from.map(|f| format!("name of {f}")),
            }
        }
    }

    #[test]
    fn a_stage_gets_its_previous_stage_from_the_store_and_names_from_the_lookup() {
        let observation = Observation::Stage {
            id: EventId::parse("e2").unwrap(),
            location_id: LocationId::parse("loc").unwrap(),
            contact_id: ContactId::parse("c1").unwrap(),
            occurred_at: None,
            opportunity_id: "opp".into(),
            pipeline: "pip1".into(),
            stage: "st2".into(),
            assigned_to: None,
        };
        let stored = Stored::PreviousStage(Some("st1".into()));
        let occurrence = occurrence(observation, stored, Some(&Names)).unwrap();
        let EventKind::StageChanged { from_stage, names, .. } = &occurrence.events[0].kind else { panic!() };
        assert_eq!(from_stage.as_deref(), Some("st1"));
        assert_eq!(names.as_ref().and_then(|n| n.from_stage.as_deref()), Some("name of st1"));
    }

    #[test]
    fn an_assignment_is_an_event_only_when_it_changes_and_names_the_previous_assignee() {
        let observation = |to: Option<&str>| Observation::Assigned {
            id: EventId::parse("e3").unwrap(),
            location_id: LocationId::parse("loc").unwrap(),
            contact_id: ContactId::parse("c1").unwrap(),
            occurred_at: None,
            opportunity_id: Some("opp".into()),
            assigned_to: to.map(|u| UserId::parse(u).unwrap()),
            announces: true,
        };
        let kinds = |to: Option<&str>, before: Option<&str>| {
            kinds(&occurrence(observation(to), Stored::PreviousAssignee(before.map(str::to_owned)), None).unwrap())
        };
        let user = |u: &str| Some(UserId::parse(u).unwrap());
        let changed = |to: Option<&str>, from: Option<&str>| EventKind::AssignedChanged {
            record: Record::Opportunity,
            assigned_to: to.and_then(user),
            from: from.and_then(user),
            opportunity_id: Some("opp".into()),
        };
        assert_eq!(kinds(Some("usr_a"), None), [changed(Some("usr_a"), None)], "first seen, assigned");
        assert!(kinds(None, None).is_empty(), "first seen, nobody: nothing happened");
        assert!(kinds(Some("usr_a"), Some("usr_a")).is_empty(), "unchanged");
        assert_eq!(kinds(Some("usr_b"), Some("usr_a")), [changed(Some("usr_b"), Some("usr_a"))]);
        assert_eq!(kinds(None, Some("usr_b")), [changed(None, Some("usr_b"))], "unassigned");
        assert_eq!(kinds(Some("usr_a"), Some("")), [changed(Some("usr_a"), None)], "from nobody");
        let mut quiet = observation(Some("usr_a"));
        if let Observation::Assigned { announces, .. } = &mut quiet {
            *announces = false;
        }
        let stage_update = |before: Option<&str>| {
            occurrence(quiet.clone(), Stored::PreviousAssignee(before.map(str::to_owned)), None).unwrap().events.len()
        };
        assert_eq!(stage_update(None), 0, "a stage update only says who has it");
        assert_eq!(stage_update(Some("usr_b")), 1, "but a known assignee that differs is a change");
    }

    #[test]
    fn one_id_for_two_contacts_is_refused_and_one_contact_s_events_join() {
        let mut list = Vec::new();
        let first = occurrence(tags_observation(false), Stored::Tags(TagDiff::default()), None).unwrap();
        merge(&mut list, first.clone()).unwrap();
        merge(&mut list, first.clone()).unwrap();
        assert_eq!(list.len(), 1);
        let other = Occurrence {
            contact: ContactKey { contact_id: ContactId::parse("c2").unwrap(), ..first.contact.clone() },
            ..first
        };
        assert!(merge(&mut list, other).is_err());
    }
}
