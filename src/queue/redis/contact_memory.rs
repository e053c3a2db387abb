//! What the queue remembers about contacts and opportunities between events: a contact's tags and known
//! followers, an opportunity's stage.

use async_trait::async_trait;

use super::RedisQueue;
use super::reply::corrupt;
use crate::domain::clock::{Millis, millis};
use crate::event::{ContactKey, EventId, LocationId, UserId};
use crate::queue::keys::contact_member;
use crate::queue::memory::tag_set;
use crate::queue::{ContactMemory, QueueError, TagDiff};

#[async_trait]
impl ContactMemory for RedisQueue {
    async fn diff_tags(
        &self,
        contact: &ContactKey,
        event_id: &EventId,
        tags: &[String],
        _now: Millis,
    ) -> Result<TagDiff, QueueError> {
        let partition = self.keys.for_location(&contact.location_id);
        let member = contact_member(contact);
        let tags = tag_set(tags);
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

    async fn swap_stage(
        &self,
        location: &LocationId,
        opportunity: &str,
        event_id: &EventId,
        stage: &str,
        _now: Millis,
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

    async fn forget_contact(&self, contact: &ContactKey) -> Result<(), QueueError> {
        let partition = self.keys.for_location(&contact.location_id);
        let _: () =
            redis::cmd("DEL").arg(partition.tags(&contact_member(contact))).query_async(&mut self.conn()).await?;
        Ok(())
    }

    async fn known_followers(&self, contact: &ContactKey) -> Result<Vec<UserId>, QueueError> {
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
