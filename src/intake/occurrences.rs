//! A payload's observations become occurrences: for each, the store's memory is read and updated (a tag list
//! against the last seen one, a stage against the previous one, a deletion forgotten), then the one
//! normalisation step ([`crate::event::normalize`]) builds the events.
//!
//! The only I/O here is the store; names of pipeline and stage ids were looked up before (see `names.rs`), so
//! a slow CRM never counts against the store's time bound.

use std::collections::HashMap;
use std::sync::Arc;

use crate::domain::clock::Millis;
use crate::event::normalize::{merge, occurrence};
use crate::event::{LocationId, NameLookup, Observation, Occurrence, PayloadError, Stored};
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
pub async fn occurrences(
    memory: &dyn ContactMemory,
    observations: Vec<Observation>,
    now: Millis,
    names: &Names,
) -> Result<Vec<Occurrence>, OccurrenceError> {
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

/// What the store remembers about one observation, updated with it in the same atomic step.
async fn recall(memory: &dyn ContactMemory, observation: &Observation, now: Millis) -> Result<Stored, QueueError> {
    Ok(match observation {
        Observation::Tags { id, location_id, contact_id, tags, .. } => {
            let contact = ContactKey { location_id: location_id.clone(), contact_id: contact_id.clone() };
            Stored::Tags(memory.diff_tags(&contact, id, tags, now).await?)
        }
        Observation::Stage { id, location_id, opportunity_id, stage, .. } => {
            Stored::PreviousStage(memory.swap_stage(location_id, opportunity_id, id, stage, now).await?)
        }
        Observation::ContactDeleted { location_id, contact_id, .. } => {
            let contact = ContactKey { location_id: location_id.clone(), contact_id: contact_id.clone() };
            memory.forget_contact(&contact).await?;
            Stored::Nothing
        }
        Observation::Event(_) | Observation::Ignored { .. } => Stored::Nothing,
    })
}
