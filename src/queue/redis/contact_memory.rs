//! What the queue remembers about contacts and opportunities between events: a contact's tags and known
//! followers, an opportunity's stage.

use super::RedisQueue;
use super::reply::corrupt;
use crate::event::{EventId, LocationId, UserId};
use crate::queue::keys::contact_member;
use crate::queue::millis;
use crate::queue::{ContactKey, QueueError, TagDiff, normalize_tag};

impl RedisQueue {
    pub(super) async fn diff_contact_tags(
        &self,
        contact: &ContactKey,
        event_id: &EventId,
        tags: &[String],
    ) -> Result<TagDiff, QueueError> {
        let partition = self.keys.for_location(&contact.location_id);
        let member = contact_member(contact);
        let mut tags: Vec<String> = tags.iter().map(|t| normalize_tag(t)).filter(|t| !t.is_empty()).collect();
        tags.sort();
        tags.dedup();
        let mut invocation = self.scripts.diff_tags.prepare_invoke();
        invocation.key(partition.tags(&member)).key(partition.memo("tags", event_id, &member));
        invocation.arg(millis(self.dedup_ttl));
        for tag in &tags {
            invocation.arg(tag);
        }
        let answer: String = invocation.invoke_async(&mut self.conn()).await?;
        let mut diff: TagDiff = serde_json::from_str(&answer)?;
        diff.added.sort();
        diff.removed.sort();
        Ok(diff)
    }

    pub(super) async fn swap_opportunity_stage(
        &self,
        location: &LocationId,
        opportunity: &str,
        event_id: &EventId,
        stage: &str,
    ) -> Result<Option<String>, QueueError> {
        let partition = self.keys.for_location(location);
        let answer: String = self
            .scripts
            .swap_stage
            .key(partition.stage(location, opportunity))
            .key(partition.memo("stage", event_id, opportunity))
            .arg(millis(self.dedup_ttl))
            .arg(stage)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(answer.strip_prefix('=').map(str::to_owned))
    }

    pub(super) async fn forget_contact_tags(&self, contact: &ContactKey) -> Result<(), QueueError> {
        let partition = self.keys.for_location(&contact.location_id);
        let _: () =
            redis::cmd("DEL").arg(partition.tags(&contact_member(contact))).query_async(&mut self.conn()).await?;
        Ok(())
    }

    pub(super) async fn known_followers_of(&self, contact: &ContactKey) -> Result<Vec<UserId>, QueueError> {
        let partition = self.keys.for_location(&contact.location_id);
        let members: Vec<String> =
            redis::cmd("SMEMBERS").arg(partition.known(&contact_member(contact))).query_async(&mut self.conn()).await?;
        let mut users = members
            .iter()
            .map(|m| UserId::parse(m).map_err(|e| corrupt(format!("bad user id: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        users.sort();
        Ok(users)
    }
}
