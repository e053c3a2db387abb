//! Delivery results shared between processes, for status pages: a worker notes what became of a lease's
//! events, and a receiver running apart, which recorded the decisions, reads them back.

use async_trait::async_trait;

use super::QueueError;
use crate::domain::outcome::Outcome;
use crate::event::{EventId, LocationId};

/// How long a delivery outcome is kept for status pages.
pub const OUTCOME_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Outcomes noted per event, kept [`OUTCOME_TTL`]. The embedded store serves a single process, whose status
/// page already knows: there it notes and finds nothing.
#[async_trait]
pub trait Outcomes: Send + Sync + 'static {
    /// Whether other processes read what is noted here (Redis). Work only they need is skipped where not.
    fn is_shared(&self) -> bool;

    /// Notes what delivery made of a location's events.
    async fn note_outcome(
        &self,
        location: &LocationId,
        events: &[EventId],
        outcome: &Outcome,
    ) -> Result<(), QueueError>;

    /// What delivery made of these events, where a process noted it; `None` where nothing is known.
    async fn outcomes(&self, events: &[(LocationId, EventId)]) -> Result<Vec<Option<Outcome>>, QueueError>;
}
