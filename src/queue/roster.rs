//! The CRM's users that were deleted, as the store keeps them (from `UserDelete` webhooks), so every process
//! that picks or delivers knows them after a restart too. What they change is decided in `crate::roster`.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::QueueError;
use crate::domain::clock::Millis;
use crate::event::{LocationId, UserId};

/// A user the CRM said was deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedUser {
    pub user: UserId,
    /// The location the webhook came from (a user id is the CRM's across locations).
    #[serde(default)]
    pub location: Option<LocationId>,
    /// When the deletion was recorded (the payload's time, else when followd received it).
    pub at: Millis,
    /// The user's name as the webhook gave it, for the status page.
    #[serde(default)]
    pub name: Option<String>,
    /// Their email address (lower case), as the webhook gave it: rules may name them by it.
    #[serde(default)]
    pub email: Option<String>,
}

#[async_trait]
pub trait RosterLog: Send + Sync + 'static {
    /// Every user recorded as deleted.
    async fn deleted_users(&self) -> Result<Vec<DeletedUser>, QueueError>;
    /// Records a deletion; `false` when the user was recorded already (the first record stays).
    async fn mark_deleted(&self, user: &DeletedUser) -> Result<bool, QueueError>;
    /// Forgets a deletion recorded before `at` (the user was restored later); `false` when there was none, or
    /// it is newer.
    async fn unmark_deleted(&self, user: &UserId, at: Millis) -> Result<bool, QueueError>;
}
