//! Deleted users in the embedded store: the `deleted_users` table, keyed by user id.

use async_trait::async_trait;
use redb::{ReadableDatabase, ReadableTable};

use super::EmbeddedQueue;
use super::tables::{DELETED_USERS, OrQueue};
use crate::domain::clock::Millis;
use crate::event::UserId;
use crate::queue::{DeletedUser, QueueError, RosterLog};

#[async_trait]
impl RosterLog for EmbeddedQueue {
    async fn deleted_users(&self) -> Result<Vec<DeletedUser>, QueueError> {
        self.blocking(|db| {
            let tx = db.begin_read().q()?;
            let table = tx.open_table(DELETED_USERS).q()?;
            table.iter().q()?.map(|entry| Ok(serde_json::from_slice(entry.q()?.1.value())?)).collect()
        })
        .await
    }

    async fn mark_deleted(&self, user: &DeletedUser) -> Result<bool, QueueError> {
        let (key, value) = (user.user.to_string(), serde_json::to_vec(user)?);
        self.write(move |tx| {
            let mut table = tx.open_table(DELETED_USERS).q()?;
            if table.get(key.as_str()).q()?.is_some() {
                return Ok(false);
            }
            table.insert(key.as_str(), value.as_slice()).q()?;
            Ok(true)
        })
        .await
    }

    async fn unmark_deleted(&self, user: &UserId, at: Millis) -> Result<bool, QueueError> {
        let key = user.to_string();
        self.write(move |tx| {
            let mut table = tx.open_table(DELETED_USERS).q()?;
            let recorded = match table.get(key.as_str()).q()? {
                Some(value) => serde_json::from_slice::<DeletedUser>(value.value())?.at,
                None => return Ok(false),
            };
            if recorded >= at {
                return Ok(false);
            }
            table.remove(key.as_str()).q()?;
            Ok(true)
        })
        .await
    }
}
