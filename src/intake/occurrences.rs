//! A payload's observations become occurrences: for each, the store's memory is read and updated (a tag list
//! against the last seen one, a stage against the previous one, a deletion forgotten), then the one
//! normalisation step ([`crate::event::normalize`]) builds the events.
//!
//! The only I/O here is the store; names of pipeline and stage ids were looked up before (see `names.rs`), so
//! a slow CRM never counts against the store's time bound.

use std::collections::HashMap;
use std::sync::Arc;

use crate::domain::clock::{Millis, epoch_ms};
use crate::event::normalize::{merge, occurrence, subject};
use crate::event::{LocationId, NameLookup, Observation, Occurrence, Parsed, PayloadError, Stored};
use crate::queue::{ContactKey, ContactMemory, QueueError};
use crate::upstream::pipelines::PipelineMap;

/// Why observations could not become occurrences.
#[derive(Debug, thiserror::Error)]
pub enum OccurrenceError {
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Names looked up per location (empty without the CRM: dry run, explain, rule tests).
pub type Names = HashMap<LocationId, Arc<PipelineMap>>;

/// Reads and updates the store's memory for each observation and normalizes it; ignored types are dropped.
/// A payload that carries the contact's whole state older than what was applied yields stale occurrences
/// without events.
pub async fn occurrences(
    memory: &dyn ContactMemory,
    parsed: Parsed,
    now: Millis,
    names: &Names,
) -> Result<Vec<Occurrence>, OccurrenceError> {
    let Parsed { observations, state_at, .. } = parsed;
    if let Some(at) = state_at
        && let Some((id, contact)) = observations.iter().find_map(|o| Some((event_id(o)?, subject(o)?)))
    {
        let at = epoch_ms(at);
        if memory.diff_tags(&contact, &id, None, Some(at), now).await?.stale {
            let stale = |o: &Observation| {
                Some(Occurrence { id: event_id(o)?, contact: subject(o)?, events: Vec::new(), stale: true })
            };
            let mut occurrences = Vec::new();
            for next in observations.iter().filter_map(stale) {
                merge(&mut occurrences, next)?;
            }
            return Ok(occurrences);
        }
    }
    let mut occurrences: Vec<Occurrence> = Vec::new();
    for observation in observations {
        let stored = recall(memory, &observation, now).await?;
        let lookup = match &observation {
            Observation::Stage { location_id, .. } => names.get(location_id).map(|map| &**map as &dyn NameLookup),
            _ => None,
        };
        if let Some(next) = occurrence(observation, stored, lookup) {
            merge(&mut occurrences, next)?;
        }
    }
    Ok(occurrences)
}

/// The id an observation's events carry.
pub(super) fn event_id(observation: &Observation) -> Option<crate::event::EventId> {
    match observation {
        Observation::Event(event) => Some(event.id.clone()),
        Observation::Tags { id, .. }
        | Observation::Stage { id, .. }
        | Observation::Assigned { id, .. }
        | Observation::ContactDeleted { id, .. } => Some(id.clone()),
        Observation::Ignored { .. } | Observation::User(_) => None,
    }
}

/// What the store remembers about one observation, updated with it in the same atomic step.
async fn recall(memory: &dyn ContactMemory, observation: &Observation, now: Millis) -> Result<Stored, QueueError> {
    Ok(match observation {
        Observation::Tags { id, location_id, contact_id, tags, occurred_at, .. } => {
            let contact = ContactKey { location_id: location_id.clone(), contact_id: contact_id.clone() };
            Stored::Tags(memory.diff_tags(&contact, id, Some(tags), occurred_at.map(epoch_ms), now).await?)
        }
        Observation::Stage { id, location_id, opportunity_id, stage, .. } => {
            Stored::PreviousStage(memory.swap_stage(location_id, opportunity_id, id, stage, now).await?)
        }
        Observation::Assigned { id, location_id, contact_id, opportunity_id, assigned_to, occurred_at, .. } => {
            // A contact's assignee is part of its whole state: a payload older than the state applied (a
            // reordered or late `ContactUpdate`) must not turn the assignment back. Same check, same memo as a
            // tag list of the payload (whose answer it then shares).
            if let (None, Some(at)) = (opportunity_id, occurred_at) {
                let contact = ContactKey { location_id: location_id.clone(), contact_id: contact_id.clone() };
                if memory.diff_tags(&contact, id, None, Some(epoch_ms(*at)), now).await?.stale {
                    return Ok(Stored::Tags(crate::event::TagDiff { stale: true, ..Default::default() }));
                }
            }
            let subject = match opportunity_id {
                Some(opportunity) => format!("opportunity\u{1f}{opportunity}"),
                None => format!("contact\u{1f}{contact_id}"),
            };
            let assignee = assigned_to.as_ref().map_or("", crate::event::UserId::as_str);
            Stored::PreviousAssignee(memory.swap_assignee(location_id, &subject, id, assignee, now).await?)
        }
        Observation::ContactDeleted { location_id, contact_id, .. } => {
            let contact = ContactKey { location_id: location_id.clone(), contact_id: contact_id.clone() };
            memory.forget_contact(&contact).await?;
            Stored::Nothing
        }
        Observation::Event(_) | Observation::Ignored { .. } | Observation::User(_) => Stored::Nothing,
    })
}
