//! Enqueueing a batch of events: one `enqueue.lua` call per partition, and that script's argument layout,
//! including the templates that let the script resolve round robin.

use std::collections::BTreeMap;

use super::RedisQueue;
use super::reply::corrupt;
use crate::domain::clock::{Millis, millis};
use crate::domain::followers::Action;
use crate::event::UserId;
use crate::queue::keys::{PartitionKeys, contact_member};
use crate::queue::{EnqueueOutcome, EventOps, FollowerOp, PlannedOp, QueueError, QueuedOp};
use QueuedOp as StoredOp;

/// Stands for the user in a round-robin operation's encoded template; an id no real user has.
const RR_PLACEHOLDER: &str = "__followd_round_robin_pick__";

impl RedisQueue {
    /// Enqueues `batch`, partition by partition.
    pub(super) async fn enqueue_batch(&self, batch: Vec<EventOps>, now: Millis) -> Result<EnqueueOutcome, QueueError> {
        // One script per partition: a batch spanning partitions is atomic per partition, and a retried
        // request finds the committed part as duplicates, so a retry completes it without doubling anything.
        let mut by_partition: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (i, event) in batch.iter().enumerate() {
            by_partition.entry(self.keys.partition_of(&event.contact.location_id)).or_default().push(i);
        }
        let mut results = vec![0i64; batch.len()];
        for (partition, indices) in by_partition {
            let events: Vec<&EventOps> = indices.iter().map(|&i| &batch[i]).collect();
            let stored = self.enqueue_partition(&self.keys.partition(partition), &events, now).await?;
            for (&i, result) in indices.iter().zip(stored) {
                results[i] = result;
            }
        }
        let mut outcome = EnqueueOutcome::default();
        for (event, result) in batch.into_iter().zip(results) {
            if result < 0 {
                outcome.duplicates.push(event.event_id);
            } else {
                outcome.operations += usize::try_from(result).unwrap_or(0);
                outcome.accepted.push(event.event_id);
            }
        }
        Ok(outcome)
    }

    /// One partition's part of a batch, as one script call (argument layout: the header of `enqueue.lua`).
    async fn enqueue_partition(
        &self,
        partition: &PartitionKeys,
        events: &[&EventOps],
        now: Millis,
    ) -> Result<Vec<i64>, QueueError> {
        let mut invocation = self.scripts.enqueue.prepare_invoke();
        invocation.key(partition.ready()).key(partition.pending_count());
        let mut args: Vec<String> = Vec::with_capacity(3 + events.len() * 4);
        let mut cursors: Vec<String> = Vec::new();
        // (position in `args`, index in `cursors`): cursor keys follow the per-event keys, so their KEYS index
        // is known only once every event is laid out.
        let mut cursor_args: Vec<(usize, usize)> = Vec::new();
        for event in events {
            let member = contact_member(&event.contact);
            invocation
                .key(partition.seen(&event.event_id))
                .key(partition.pending(&member))
                .key(partition.state(&member));
            // An empty round-robin team stores nothing (the rules reject one; this keeps the script simple).
            let ops: Vec<&PlannedOp> = event
                .ops
                .iter()
                .filter(|p| !matches!(&p.action, Action::RoundRobin { pool, .. } if pool.is_empty()))
                .collect();
            args.push(member);
            args.push(ops.len().to_string());
            args.push(if event.background { "1" } else { "0" }.to_owned());
            for planned in ops {
                let stored = |op: FollowerOp| StoredOp {
                    seq: 0,
                    op,
                    rule: planned.rule.to_string(),
                    event_id: event.event_id.clone(),
                    enqueued_at: now,
                    ownership: planned.ownership,
                };
                match (&planned.action, planned.action.cursor_key(&event.contact.location_id)) {
                    (Action::RoundRobin { pool, weights, catch_up, .. }, Some(cursor_key)) => {
                        let cursor = partition.rotation(&cursor_key);
                        let index = cursors.iter().position(|c| *c == cursor).unwrap_or_else(|| {
                            cursors.push(cursor);
                            cursors.len() - 1
                        });
                        // The script splices the picked user between the two halves of the encoded operation.
                        let placeholder = UserId::parse(RR_PLACEHOLDER).map_err(|e| corrupt(e.to_string()))?;
                        let template = serde_json::to_string(&stored(FollowerOp::Add(placeholder)))?;
                        let (before, after) = template
                            .split_once(RR_PLACEHOLDER)
                            .ok_or_else(|| corrupt("round-robin template".to_owned()))?;
                        args.push("rr".to_owned());
                        cursor_args.push((args.len(), index));
                        args.extend([String::new(), before.to_owned(), after.to_owned(), pool.len().to_string()]);
                        args.push(if *catch_up { "1" } else { "0" }.to_owned());
                        // Who is away is known here, at the time of the enqueue; the script skips them.
                        for (i, user) in pool.iter().enumerate() {
                            let quoted = serde_json::to_string(user.as_str())?;
                            args.push(quoted[1..quoted.len() - 1].to_owned());
                            args.push(weights.get(i).copied().unwrap_or(1).to_string());
                            args.push(if planned.action.is_away(user, now) { "1" } else { "0" }.to_owned());
                        }
                    }
                    (action, _) => {
                        if let Some(op) = action.resolve(0) {
                            args.push(serde_json::to_string(&stored(op))?);
                        }
                    }
                }
            }
        }
        let first_cursor = 3 + 3 * events.len();
        for (position, index) in cursor_args {
            args[position] = (first_cursor + index).to_string();
        }
        for cursor in &cursors {
            invocation.key(cursor);
        }
        invocation.arg(now).arg(millis(self.dedup_ttl)).arg(events.len());
        for arg in &args {
            invocation.arg(arg);
        }
        Ok(invocation.invoke_async(&mut self.conn()).await?)
    }
}
