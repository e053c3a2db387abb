//! What the store remembers between events: a contact's last seen tags (to turn a whole tag list into what
//! was added and removed), an opportunity's last stage (to know the stage it came from), and the followers
//! followd itself added to a contact, oldest first (written by [`super::Queue::ack`], in the same atomic step
//! that ends the delivery: see `README.md`, "Who owns a follower").

use async_trait::async_trait;

use super::QueueError;
use crate::domain::clock::Millis;
pub use crate::event::TagDiff;
use crate::event::{ContactKey, EventId, LocationId, UserId};

/// Contact and opportunity state kept between events. Each method is one atomic step.
#[async_trait]
pub trait ContactMemory: Send + Sync + 'static {
    /// Applies a whole-state payload, atomically: when `at` (the payload's time) is older than the last one
    /// applied for the contact, changes nothing and answers `stale`; otherwise remembers `at` (when given) and,
    /// when the payload lists `tags`, replaces the stored tag set and returns what was added and removed. A
    /// contact seen for the first time has all its tags added. Idempotent per event id: the same event asked
    /// again (a sender's retry after a failed enqueue) gets the answer it got the first time, not an empty one.
    async fn diff_tags(
        &self,
        contact: &ContactKey,
        event_id: &EventId,
        tags: Option<&[String]>,
        at: Option<Millis>,
        now: Millis,
    ) -> Result<TagDiff, QueueError>;

    /// Stores an opportunity's current stage and returns the previous one, if any. Idempotent per event id,
    /// like [`ContactMemory::diff_tags`].
    async fn swap_stage(
        &self,
        location: &LocationId,
        opportunity: &str,
        event_id: &EventId,
        stage: &str,
        now: Millis,
    ) -> Result<Option<String>, QueueError>;

    /// Stores whom a contact or opportunity (`subject`: `contact\x1f<id>` or `opportunity\x1f<id>`) is assigned
    /// to now (`""`: nobody) and returns the value stored before (`None`: never seen). Kept beside the stages,
    /// under a name no opportunity id can take (ids hold no control character); idempotent per event id.
    async fn swap_assignee(
        &self,
        location: &LocationId,
        subject: &str,
        event_id: &EventId,
        assignee: &str,
        now: Millis,
    ) -> Result<Option<String>, QueueError> {
        self.swap_stage(location, &format!("\u{1f}assigned\u{1f}{subject}"), event_id, assignee, now).await
    }

    /// Forgets the contact's stored tag set (it was deleted in the CRM).
    async fn forget_contact(&self, contact: &ContactKey) -> Result<(), QueueError>;

    /// Followers that followd itself added to the contact and has not removed since (nor seen removed by a
    /// person), oldest first: the order in which `followers.at_cap = "evict_managed"` makes room.
    async fn known_followers(&self, contact: &ContactKey) -> Result<Vec<UserId>, QueueError>;
}

/// The tags of a whole-list payload as they are stored and compared: normalized, without empty ones, sorted
/// and without repeats.
pub(crate) fn tag_set(tags: &[String]) -> std::collections::BTreeSet<String> {
    tags.iter().map(|t| crate::event::normalize(t).into_owned()).filter(|t| !t.is_empty()).collect()
}
