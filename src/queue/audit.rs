//! Each contact's audit trail: what every ended lease did to its followers, when, and the rule and event that
//! asked. Written by [`super::Queue::ack`] and [`super::Queue::dead_letter`] in the same atomic step that ends
//! the lease, so the trail cannot disagree with the queue; read here.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{QueueError, QueuedOp};
use crate::domain::clock::Millis;
use crate::domain::outcome::Outcome;
use crate::event::{ContactId, LocationId};

/// Most audit entries kept per contact; older ones are dropped.
pub const AUDIT_PER_CONTACT: usize = 100;

/// One line of a contact's audit trail: a follower change followd made (or gave up on), when, and the rule
/// and event that caused it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When the delivery ended (ms).
    pub at: Millis,
    pub location_id: LocationId,
    pub contact_id: ContactId,
    /// Delivered, dry run or dead-lettered.
    pub result: Outcome,
    pub operation: QueuedOp,
}

/// Reads the audit trail.
#[async_trait]
pub trait AuditLog: Send + Sync + 'static {
    /// The contact's audit trail, newest first. `location: None` searches every location (a command-line
    /// convenience; CRM contact ids are unique in practice).
    async fn audit(&self, location: Option<&LocationId>, contact: &ContactId) -> Result<Vec<AuditEntry>, QueueError>;
}
