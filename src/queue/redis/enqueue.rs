//! Enqueueing a batch of events: one `enqueue.lua` call per partition, and that script's argument layout,
//! including the templates that let the script resolve round robin.

use std::collections::BTreeMap;

use super::RedisQueue;
use super::reply::corrupt;
use crate::domain::clock::{Millis, millis};
use crate::domain::pick::When;
use crate::domain::rotation::Turn;
use crate::event::UserId;
use crate::queue::keys::contact_member;
use crate::queue::{DeadLetter, EnqueueOutcome, EventOps, FollowerOp, PlannedOp, QueueError, QueuedOp};

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
            let stored = self.enqueue_partition(partition, &events, now).await?;
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
        partition_number: u16,
        events: &[&EventOps],
        now: Millis,
    ) -> Result<Vec<i64>, QueueError> {
        let partition = &self.keys.partition(partition_number);
        let mut invocation = self.scripts.enqueue.prepare_invoke();
        invocation.key(partition.ready()).key(partition.pending_count()).key(partition.timers());
        let mut args: Vec<String> = Vec::with_capacity(3 + events.len() * 4);
        // Keys a round robin may touch (its standings; a dead letter's hash and list) follow the per-event keys,
        // so their KEYS index is known only once every event is laid out: (position in `args`, index in
        // `extra`), filled in at the end.
        let mut extra: Vec<String> = Vec::new();
        let mut extra_args: Vec<(usize, usize)> = Vec::new();
        for event in events {
            let member = contact_member(&event.contact);
            invocation
                .key(partition.seen(&event.event_id))
                .key(partition.pending(&member))
                .key(partition.state(&member))
                .key(partition.contact_timers(&member));
            // An empty round-robin team stores nothing (the rules reject one; this keeps the script simple).
            let ops: Vec<&PlannedOp> =
                event.ops.iter().filter(|p| p.action.rotation().is_none_or(|r| !r.members.is_empty())).collect();
            args.push(member);
            args.push(ops.len().to_string());
            args.push(if event.background { "1" } else { "0" }.to_owned());
            for planned in ops {
                let stored = |op: FollowerOp, note: Option<String>, turn: bool| {
                    planned.stored(&event.event_id, op, now, note, turn)
                };
                // What the operation does to the contact's timers (see the script's header).
                let timer = |args: &mut Vec<String>, user: Option<&UserId>| -> Result<(), QueueError> {
                    let user = user.map(escaped).transpose()?.unwrap_or_default();
                    match planned.lasts {
                        Some(lasts) => {
                            let add = stored(FollowerOp::Add(placeholder()?), None, false);
                            let (before, after) = halves_around_user(&add.timed_removal(placeholder()?, lasts))?;
                            let due = now.saturating_add(lasts).to_string();
                            args.extend(["s".to_owned(), user, due, before, after]);
                        }
                        None if user.is_empty() => args.extend(["C".to_owned(), String::new()]),
                        None => args.extend(["c".to_owned(), user]),
                    }
                    Ok(())
                };
                let Some(rotation) = planned.action.rotation() else {
                    if let Some(op) = planned.action.resolve() {
                        args.push(serde_json::to_string(&stored(op.clone(), None, false))?);
                        match &op {
                            FollowerOp::Add(user) | FollowerOp::Remove(user) => timer(&mut args, Some(user))?,
                            FollowerOp::RemoveAll => timer(&mut args, None)?,
                        }
                    }
                    continue;
                };
                let mut reference = |args: &mut Vec<String>, key: String| {
                    let index = extra.iter().position(|k| *k == key).unwrap_or_else(|| {
                        extra.push(key);
                        extra.len() - 1
                    });
                    extra_args.push((args.len(), index));
                    args.push(String::new());
                };
                // The script splices the picked user between the two halves of the encoded operation; the
                // second half differs with the note the turn leaves in the audit trail.
                let halves = |turn: &Turn| {
                    let picked = matches!(turn, Turn::Picked { .. });
                    halves_around_user(&stored(FollowerOp::Add(placeholder()?), turn.note(rotation), picked))
                };
                let anybody = rotation.members[0].user.clone();
                let (before, after) = halves(&Turn::Picked { user: anybody.clone(), everyone_away: false })?;
                let (_, after_away) = halves(&Turn::Picked { user: anybody.clone(), everyone_away: true })?;
                let (_, after_overflow) = halves(&Turn::Overflow(anybody.clone()))?;
                let (_, after_anyway) = halves(&Turn::Refused { anyway: anybody })?;
                let when = When::at(now);
                let cap = |cap: Option<u32>| cap.map_or_else(|| "0".to_owned(), |n| n.to_string());
                args.push("rr".to_owned());
                reference(&mut args, partition.rotation(&rotation.key(&event.contact.location_id)));
                args.extend([before, after, rotation.members.len().to_string()]);
                args.push(if rotation.catch_up { "1" } else { "0" }.to_owned());
                args.extend([cap(rotation.caps.per_day), cap(rotation.caps.per_week)]);
                args.extend([when.day.to_string(), when.week.to_string(), after_away]);
                args.push(rotation.overflow.as_ref().map(escaped).transpose()?.unwrap_or_default());
                args.push(after_overflow);
                let capped = rotation.caps.per_day.is_some() || rotation.caps.per_week.is_some();
                if capped && rotation.overflow.is_none() {
                    // Every member may be at their cap: the script then stores this dead letter instead.
                    let letter_id = format!("{partition_number}-{:016x}", rand::random::<u64>());
                    reference(&mut args, partition.dead());
                    reference(&mut args, partition.dead_ops(&letter_id));
                    let description = DeadLetter {
                        id: letter_id.clone(),
                        location_id: event.contact.location_id.clone(),
                        contact_id: event.contact.contact_id.clone(),
                        operations: Vec::new(),
                        status: None,
                        reason: rotation.refusal(),
                        failed_at: now,
                    };
                    args.extend([letter_id, serde_json::to_string(&description)?]);
                } else {
                    args.extend([String::new(), String::new(), String::new(), String::new()]);
                }
                args.push(after_anyway);
                // Who is away is known here, at the time of the enqueue; the script skips them.
                for member in &rotation.members {
                    args.push(escaped(&member.user)?);
                    args.push(member.weight.to_string());
                    args.push(if rotation.is_away(&member.user, now) { "1" } else { "0" }.to_owned());
                }
                if planned.lasts.is_some() {
                    timer(&mut args, None)?;
                } else {
                    // Cancel the timer of whoever is picked ("" stands for the pick).
                    args.extend(["c".to_owned(), String::new()]);
                }
            }
        }
        let first_extra = 4 + 4 * events.len();
        for (position, index) in extra_args {
            args[position] = (first_extra + index).to_string();
        }
        for key in &extra {
            invocation.key(key);
        }
        invocation.arg(now).arg(millis(self.dedup_ttl)).arg(events.len());
        for arg in &args {
            invocation.arg(arg);
        }
        Ok(invocation.invoke_async(&mut self.conn()?).await?)
    }
}

/// The stand-in user of a template the script completes.
fn placeholder() -> Result<UserId, QueueError> {
    UserId::parse(RR_PLACEHOLDER).map_err(|e| corrupt(e.to_string()))
}

/// `op` (whose user is [`placeholder`]) encoded, split where the script splices the real user in.
fn halves_around_user(op: &QueuedOp) -> Result<(String, String), QueueError> {
    let template = serde_json::to_string(op)?;
    let (before, after) =
        template.split_once(RR_PLACEHOLDER).ok_or_else(|| corrupt("operation template".to_owned()))?;
    Ok((before.to_owned(), after.to_owned()))
}

/// A user id as it sits inside a JSON string (the script compares and splices it there).
pub(super) fn escaped(user: &UserId) -> Result<String, QueueError> {
    let quoted = serde_json::to_string(user.as_str())?;
    Ok(quoted[1..quoted.len() - 1].to_owned())
}
