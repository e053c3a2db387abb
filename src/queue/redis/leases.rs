//! The life of a lease: taking one (a contact and its pending operations, until a deadline), ending it
//! (acknowledged or dead-lettered), scheduling a retry, and reaping the leases of workers that died.

use std::sync::atomic::Ordering;

use redis::Value;

use super::RedisQueue;
use super::reply::{PartitionLease, parse_lease};
use crate::domain::clock::{Millis, millis};
use crate::domain::outcome::Outcome;
use crate::queue::keys::{PartitionKeys, contact_member};
use crate::queue::{AUDIT_PER_CONTACT, Applied, DeadLetter, Failure, Lease, LeaseOutcome, QueueError};

/// Most operations handed out in one lease.
const MAX_LEASE_OPS: usize = 1000;
/// Most leases one reap returns per partition.
const MAX_REAP: usize = 1000;

impl RedisQueue {
    /// Leases the first ready contact, looking through the partitions from where the last lease left off.
    pub(super) async fn lease_next(&self, now: Millis) -> Result<LeaseOutcome, QueueError> {
        let partitions = usize::from(self.keys.partitions());
        let start = self.next_partition.fetch_add(1, Ordering::Relaxed);
        let mut next_at: Option<Millis> = None;
        for step in 0..partitions {
            let partition = self.keys.partition(u16::try_from((start + step) % partitions).unwrap_or(0));
            // A stale entry (a contact with nothing pending) is dropped by the script; look again.
            for _ in 0..3 {
                let id = rand::random::<u64>();
                match parse_lease(self.lease_partition(&partition, now, id).await?, id)? {
                    PartitionLease::Leased(lease) => return Ok(LeaseOutcome::Leased(lease)),
                    PartitionLease::Empty(at) => {
                        next_at = match (next_at, at) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                        break;
                    }
                    PartitionLease::Stale => {}
                }
            }
        }
        Ok(LeaseOutcome::Empty { next_at })
    }

    async fn lease_partition(&self, partition: &PartitionKeys, now: Millis, id: u64) -> Result<Value, QueueError> {
        Ok(self
            .scripts
            .lease
            .key(partition.ready())
            .key(partition.leases())
            .arg(now)
            .arg(millis(self.lease_for))
            .arg(id.to_string())
            .arg(MAX_LEASE_OPS)
            .arg(partition.base())
            .invoke_async(&mut self.conn()?)
            .await?)
    }

    /// Ends a lease, acknowledged or, with a `failure`, dead-lettered: one script either way.
    pub(super) async fn end_lease(
        &self,
        lease: &Lease,
        applied: &Applied,
        failure: Option<&Failure>,
        now: Millis,
    ) -> Result<(), QueueError> {
        let partition_number = self.keys.partition_of(&lease.contact.location_id);
        let partition = self.keys.partition(partition_number);
        let member = contact_member(&lease.contact);
        let letter_id = format!("{partition_number}-{:016x}", rand::random::<u64>());
        let mut invocation = self.scripts.ack.prepare_invoke();
        invocation
            .key(partition.ready())
            .key(partition.leases())
            .key(partition.pending(&member))
            .key(partition.state(&member))
            .key(partition.owned(&member))
            .key(partition.pending_count())
            .key(partition.dead())
            .key(partition.dead_ops(&letter_id))
            .key(partition.audit(&member))
            .key(partition.known(&member))
            .arg(now)
            .arg(&member)
            .arg(lease.id.to_string())
            .arg(lease.ops.len());
        // A dry run sent nothing: the followers followd added stay as they were.
        let nothing = Applied::default();
        let changed = if applied.dry_run { &nothing } else { applied };
        invocation
            .arg(if changed.removed_all { "1" } else { "0" })
            .arg(serde_json::to_string(&changed.removed)?)
            .arg(serde_json::to_string(&changed.added)?);
        // The script appends each stored operation and the closing brace to this prefix.
        let result = match failure {
            Some(failure) => Outcome::DeadLettered(failure.reason.clone()),
            None => applied.outcome(),
        };
        let prefix_for = |result: &Outcome| {
            let prefix = serde_json::json!({
                "at": now,
                "location_id": lease.contact.location_id,
                "contact_id": lease.contact.contact_id,
                "result": result,
            })
            .to_string();
            format!("{},\"operation\":", prefix.trim_end_matches('}'))
        };
        invocation.arg(prefix_for(&result)).arg(AUDIT_PER_CONTACT);
        let seen = match &changed.seen {
            Some(seen) => serde_json::to_string(seen)?,
            None => String::new(),
        };
        invocation.arg(seen);
        if let Some(failure) = failure {
            let description = DeadLetter {
                id: letter_id.clone(),
                location_id: lease.contact.location_id.clone(),
                contact_id: lease.contact.contact_id.clone(),
                operations: Vec::new(),
                status: failure.status,
                reason: failure.reason.clone(),
                failed_at: now,
            };
            invocation.arg(&letter_id).arg(serde_json::to_string(&description)?);
        } else {
            invocation.arg("").arg("");
        }
        // Operations a rule's skip_if_following gave up are recorded as skipped.
        if failure.is_none() && !applied.skipped.is_empty() {
            let prefixes: Vec<String> = lease
                .ops
                .iter()
                .map(|op| match applied.outcome_of(op) {
                    skipped @ Outcome::Skipped(_) => prefix_for(&skipped),
                    _ => String::new(),
                })
                .collect();
            invocation.arg(serde_json::to_string(&prefixes)?);
        } else {
            invocation.arg("");
        }
        let result: i64 = invocation.invoke_async(&mut self.conn()?).await?;
        if result < 0 { Err(QueueError::LeaseLost) } else { Ok(()) }
    }

    /// Gives a leased contact back, ready again at `retry_at`.
    pub(super) async fn retry_at(&self, lease: &Lease, retry_at: Millis) -> Result<(), QueueError> {
        let partition = self.keys.for_location(&lease.contact.location_id);
        let member = contact_member(&lease.contact);
        let result: i64 = self
            .scripts
            .retry
            .key(partition.ready())
            .key(partition.leases())
            .key(partition.state(&member))
            .arg(&member)
            .arg(lease.id.to_string())
            .arg(retry_at)
            .invoke_async(&mut self.conn()?)
            .await?;
        if result < 0 { Err(QueueError::LeaseLost) } else { Ok(()) }
    }

    /// Makes the contacts of expired leases ready again, in every partition.
    pub(super) async fn reap_expired(&self, now: Millis) -> Result<usize, QueueError> {
        self.in_every_partition(&self.scripts.reap, now, |p| vec![p.ready(), p.leases()]).await
    }

    /// Queues the timed followers' removals that are due, in every partition.
    pub(super) async fn fire_due_timers(&self, now: Millis) -> Result<usize, QueueError> {
        self.in_every_partition(&self.scripts.timers, now, |p| vec![p.ready(), p.timers(), p.pending_count()]).await
    }

    /// Runs `script` (ARGV: now, the partition's key prefix, [`MAX_REAP`]) over each partition's `keys`; sums
    /// the counts it returns.
    async fn in_every_partition(
        &self,
        script: &redis::Script,
        now: Millis,
        keys: impl Fn(&PartitionKeys) -> Vec<String>,
    ) -> Result<usize, QueueError> {
        let mut total = 0;
        for n in 0..self.keys.partitions() {
            let partition = self.keys.partition(n);
            let mut invocation = script.prepare_invoke();
            for key in keys(&partition) {
                invocation.key(key);
            }
            let count: usize =
                invocation.arg(now).arg(partition.base()).arg(MAX_REAP).invoke_async(&mut self.conn()?).await?;
            total += count;
        }
        Ok(total)
    }
}
