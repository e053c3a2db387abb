//! Dead letters: listing them, replaying them into their contact's pending operations, and purging them.
//! (A lease becomes a dead letter in `leases.rs`, where every lease ends.)

use super::RedisQueue;
use crate::domain::clock::Millis;
use crate::queue::keys::{PartitionKeys, contact_member};
use crate::queue::{ContactKey, DeadLetter, QueueError, QueuedOp, Selection};

impl RedisQueue {
    /// The partition a dead letter id names (`<partition>-<hex>`).
    fn partition_of_letter(&self, id: &str) -> PartitionKeys {
        let n = id.split_once('-').and_then(|(n, _)| n.parse::<u16>().ok()).unwrap_or(0);
        self.keys.partition(n % self.keys.partitions())
    }

    /// Every partition's dead letters, oldest first.
    pub(super) async fn all_dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        let mut letters = Vec::new();
        for n in 0..self.keys.partitions() {
            let partition = self.keys.partition(n);
            let described: Vec<(String, String)> =
                redis::cmd("HGETALL").arg(partition.dead()).query_async(&mut self.conn()?).await?;
            for (id, description) in described {
                let ops: Vec<String> = redis::cmd("LRANGE")
                    .arg(partition.dead_ops(&id))
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut self.conn()?)
                    .await?;
                let mut letter: DeadLetter = serde_json::from_str(&description)?;
                letter.operations = ops
                    .iter()
                    .enumerate()
                    .map(|(i, op)| Ok(QueuedOp { seq: i as u64 + 1, ..serde_json::from_str::<QueuedOp>(op)? }))
                    .collect::<Result<_, QueueError>>()?;
                letters.push(letter);
            }
        }
        letters.sort_by(|a, b| (a.failed_at, &a.id).cmp(&(b.failed_at, &b.id)));
        Ok(letters)
    }

    /// Puts the selected letters' operations back at the end of their contacts' queues, in their order.
    pub(super) async fn replay_letters(&self, which: &Selection, now: Millis) -> Result<usize, QueueError> {
        let mut replayed = 0;
        for letter in which.pick(self.all_dead_letters().await?) {
            let partition = self.partition_of_letter(&letter.id);
            let member = contact_member(&ContactKey {
                location_id: letter.location_id.clone(),
                contact_id: letter.contact_id.clone(),
            });
            let result: i64 = self
                .scripts
                .replay
                .key(partition.dead())
                .key(partition.dead_ops(&letter.id))
                .key(partition.ready())
                .key(partition.pending(&member))
                .key(partition.state(&member))
                .key(partition.pending_count())
                .arg(&letter.id)
                .arg(&member)
                .arg(now)
                .invoke_async(&mut self.conn()?)
                .await?;
            if result >= 0 {
                replayed += 1;
            }
        }
        Ok(replayed)
    }

    /// Deletes the selected letters.
    pub(super) async fn purge_letters(&self, which: &Selection) -> Result<usize, QueueError> {
        let mut purged = 0;
        for letter in which.pick(self.all_dead_letters().await?) {
            let partition = self.partition_of_letter(&letter.id);
            let (removed, _): (i64, i64) = redis::pipe()
                .atomic()
                .cmd("HDEL")
                .arg(partition.dead())
                .arg(&letter.id)
                .cmd("DEL")
                .arg(partition.dead_ops(&letter.id))
                .query_async(&mut self.conn()?)
                .await?;
            purged += usize::from(removed > 0);
        }
        Ok(purged)
    }
}
