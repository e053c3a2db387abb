//! Cover for absences on Redis: the contacts followd made a user follow are found by scanning every
//! partition's `owned:*` sets (covers start and end rarely); running covers live in one hash, `covers`, in
//! partition 0.

use async_trait::async_trait;

use super::RedisQueue;
use super::reply::parse_member;
use crate::domain::cover::{Cover, Covering};
use crate::event::{ContactKey, UserId};
use crate::queue::{CoverLog, QueueError, StoredCover};

impl RedisQueue {
    fn covers_key(&self) -> String {
        format!("{}covers", self.keys.partition(0).base())
    }
}

#[async_trait]
impl CoverLog for RedisQueue {
    async fn followed_by(&self, user: &UserId) -> Result<Vec<ContactKey>, QueueError> {
        let mut contacts = Vec::new();
        for n in 0..self.keys.partitions() {
            let prefix = self.keys.partition(n).owned("");
            let pattern = format!("{prefix}*");
            let mut cursor = 0u64;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000);
                let (next, keys): (u64, Vec<String>) = self.conn()?.on_partition_node(&pattern, scan).await?;
                for key in keys {
                    let score: Option<f64> =
                        redis::cmd("ZSCORE").arg(&key).arg(user.as_str()).query_async(&mut self.conn()?).await?;
                    if score.is_some() {
                        contacts.push(parse_member(&key[prefix.len()..])?);
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(contacts)
    }

    async fn coverings(&self) -> Result<Vec<StoredCover>, QueueError> {
        let values: Vec<String> = redis::cmd("HVALS").arg(self.covers_key()).query_async(&mut self.conn()?).await?;
        values.iter().map(|value| Ok(serde_json::from_str(value)?)).collect()
    }

    async fn set_covering(&self, cover: &Cover, covering: Option<Covering>) -> Result<(), QueueError> {
        let field = StoredCover::key(cover);
        match covering {
            Some(covering) => {
                let value =
                    serde_json::to_string(&StoredCover { user: cover.user.clone(), by: cover.by.clone(), covering })?;
                let _: () = redis::cmd("HSET")
                    .arg(self.covers_key())
                    .arg(field)
                    .arg(value)
                    .query_async(&mut self.conn()?)
                    .await?;
            }
            None => {
                let _: () = redis::cmd("HDEL").arg(self.covers_key()).arg(field).query_async(&mut self.conn()?).await?;
            }
        }
        Ok(())
    }
}
