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
        tags: Option<&[String]>,
        at: Option<Millis>,
        _now: Millis,
    ) -> Result<TagDiff, QueueError> {
        let partition = self.keys.for_location(&contact.location_id);
        let member = contact_member(contact);
        let mut invocation = self.scripts.diff_tags.prepare_invoke();
        invocation
            .key(partition.tags(&member))
            .key(partition.memo("tags", event_id, &member))
            .key(partition.state_time(&member));
        invocation.arg(millis(self.dedup_ttl));
        invocation.arg(at.map(|at| at.to_string()).unwrap_or_default());
        invocation.arg(if tags.is_some() { "1" } else { "0" });
        for tag in tags.map(tag_set).unwrap_or_default() {
            invocation.arg(tag);
        }
        let answer: String = invocation.invoke_async(&mut self.conn()?).await?;
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
            .invoke_async(&mut self.conn()?)
            .await?;
        Ok(answer.strip_prefix('=').map(str::to_owned))
    }

    async fn forget_contact(&self, contact: &ContactKey) -> Result<(), QueueError> {
        let partition = self.keys.for_location(&contact.location_id);
        let member = contact_member(contact);
        let _: () = redis::cmd("DEL")
            .arg(partition.tags(&member))
            .arg(partition.state_time(&member))
            .query_async(&mut self.conn()?)
            .await?;
        Ok(())
    }

    async fn known_followers(&self, contact: &ContactKey) -> Result<Vec<UserId>, QueueError> {
        let partition = self.keys.for_location(&contact.location_id);
        let member = contact_member(contact);
        // Oldest first; what an older version recorded (a set, moved at the next ack) counts as oldest.
        let (mut older, owned): (Vec<String>, Vec<String>) = redis::pipe()
            .cmd("SMEMBERS")
            .arg(partition.known(&member))
            .cmd("ZRANGE")
            .arg(partition.owned(&member))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn()?)
            .await?;
        older.sort();
        older.retain(|u| !owned.contains(u));
        older.iter().chain(&owned).map(|m| UserId::parse(m).map_err(|e| corrupt(format!("bad user id: {e}")))).collect()
    }
}
