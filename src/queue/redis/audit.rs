//! The audit trail: what happened to a contact's operations, newest first, read back from each contact's
//! capped list (written by `ack.lua` as a lease ends).

use async_trait::async_trait;

use super::RedisQueue;
use crate::event::{ContactId, ContactKey, LocationId};
use crate::queue::keys::contact_member;
use crate::queue::{AuditEntry, AuditLog, QueueError};

#[async_trait]
impl AuditLog for RedisQueue {
    async fn audit(&self, location: Option<&LocationId>, contact: &ContactId) -> Result<Vec<AuditEntry>, QueueError> {
        let keys: Vec<String> = match location {
            Some(location) => {
                let member = contact_member(&ContactKey { location_id: location.clone(), contact_id: contact.clone() });
                vec![self.keys.for_location(location).audit(&member)]
            }
            None => {
                // A command-line search: SCAN every partition's audit keys for this contact.
                let mut found = Vec::new();
                let suffix = format!("\u{1f}{contact}");
                for n in 0..self.keys.partitions() {
                    let pattern = format!("{}*", self.keys.partition(n).audit(""));
                    let mut cursor = 0u64;
                    loop {
                        let mut scan = redis::cmd("SCAN");
                        scan.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000);
                        let (next, batch): (u64, Vec<String>) = self.conn()?.on_partition_node(&pattern, scan).await?;
                        found.extend(batch.into_iter().filter(|k| k.ends_with(&suffix)));
                        if next == 0 {
                            break;
                        }
                        cursor = next;
                    }
                }
                found
            }
        };
        let mut entries = Vec::new();
        for key in keys {
            let lines: Vec<String> =
                redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).query_async(&mut self.conn()?).await?;
            for line in lines {
                let mut entry: AuditEntry = serde_json::from_str(&line)?;
                entry.operation.seq = 0;
                entries.push(entry);
            }
        }
        // Stable: entries of one contact keep the list's newest-first order within one timestamp.
        entries.sort_by_key(|entry| std::cmp::Reverse(entry.at));
        Ok(entries)
    }
}
