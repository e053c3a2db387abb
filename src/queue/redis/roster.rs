//! Deleted users on Redis: one hash, `deleted_users`, in partition 0, field = user id, value = the JSON record.

use async_trait::async_trait;

use super::RedisQueue;
use crate::domain::clock::Millis;
use crate::event::UserId;
use crate::queue::{DeletedUser, QueueError, RosterLog};

impl RedisQueue {
    fn deleted_users_key(&self) -> String {
        format!("{}deleted_users", self.keys.partition(0).base())
    }
}

#[async_trait]
impl RosterLog for RedisQueue {
    async fn deleted_users(&self) -> Result<Vec<DeletedUser>, QueueError> {
        let values: Vec<String> =
            redis::cmd("HVALS").arg(self.deleted_users_key()).query_async(&mut self.conn()?).await?;
        values.iter().map(|value| Ok(serde_json::from_str(value)?)).collect()
    }

    async fn mark_deleted(&self, user: &DeletedUser) -> Result<bool, QueueError> {
        let value = serde_json::to_string(user)?;
        let added: bool = redis::cmd("HSETNX")
            .arg(self.deleted_users_key())
            .arg(user.user.as_str())
            .arg(value)
            .query_async(&mut self.conn()?)
            .await?;
        Ok(added)
    }

    async fn unmark_deleted(&self, user: &UserId, at: Millis) -> Result<bool, QueueError> {
        // Read, compare, delete: a restore racing a new deletion of the same user is not a case worth a script
        // (the CRM does not reuse user ids, and a restore is done by hand).
        let key = self.deleted_users_key();
        let value: Option<String> =
            redis::cmd("HGET").arg(&key).arg(user.as_str()).query_async(&mut self.conn()?).await?;
        let Some(value) = value else { return Ok(false) };
        let recorded: DeletedUser = serde_json::from_str(&value)?;
        if recorded.at >= at {
            return Ok(false);
        }
        let removed: bool = redis::cmd("HDEL").arg(&key).arg(user.as_str()).query_async(&mut self.conn()?).await?;
        Ok(removed)
    }
}
