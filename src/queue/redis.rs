//! The Redis queue: any number of `followd` processes share one Redis (or Redis Cluster).
//!
//! Data structures, per partition (see `keys.rs` for names and the hash-tag rule):
//! - `ready`   sorted set, contact → when it is ready (ms); a retry is scheduled in the future
//! - `leases`  sorted set, contact → lease deadline (ms), for the reaper
//! - `pending:<contact>` list of JSON operations, oldest first; only an ack removes from its front
//! - `state:<contact>`   hash: lease id, deadline, failed attempts
//! - `seen:<event id>`   a string with a TTL: the de-duplication window
//! - `cursor:<rule \x1f location>`, `known:<contact>`, `pending_count`
//!
//! Every state change is one Lua script (`lua/*.lua`, each with a header naming its KEYS and ARGV), so a crash
//! between two commands cannot leave a contact half-leased. Scripts are hashed once, loaded at connect (so a
//! Redis that cannot run them fails at start) and run with EVALSHA; `redis::Script` reloads them on NOSCRIPT,
//! e.g. after a Redis restart. Time comes in as an argument, never from Redis's clock, like the embedded queue.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisFuture, Script, Value};

use super::keys::{Keys, PartitionKeys, contact_member};
use super::{AUDIT_PER_CONTACT, AuditEntry};
use super::{
    Applied, ContactKey, EnqueueOutcome, EventOps, Lease, LeaseOutcome, Millis, Queue, QueueError, QueueStats,
    QueuedOp, cursor_key, now_ms,
};
use super::{DeadLetter, Failure, FollowerOp, OAuthTokens, PlannedOp, Selection, TagDiff, normalize_tag};
use crate::config::RedisUrl;
use crate::deliver::limit::{LimiterState, Limits};
use crate::event::{ContactId, EventId, LocationId, UserId};
use crate::rules::Action;
use QueuedOp as StoredOp;

/// Stands for the user in a round-robin operation's encoded template; an id no real user has.
const RR_PLACEHOLDER: &str = "__followd_round_robin_pick__";
/// Most operations handed out in one lease.
const MAX_LEASE_OPS: usize = 1000;
/// Most leases one reap returns per partition.
const MAX_REAP: usize = 1000;
/// How long connecting may take before Redis counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one command may take; the receiver answers within 5 s either way.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

/// The queue's Lua scripts, hashed once.
struct Scripts {
    enqueue: Script,
    lease: Script,
    ack: Script,
    retry: Script,
    reap: Script,
    diff_tags: Script,
    swap_stage: Script,
    replay: Script,
    throttle: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            enqueue: Script::new(include_str!("lua/enqueue.lua")),
            lease: Script::new(include_str!("lua/lease.lua")),
            ack: Script::new(include_str!("lua/ack.lua")),
            retry: Script::new(include_str!("lua/retry.lua")),
            reap: Script::new(include_str!("lua/reap.lua")),
            diff_tags: Script::new(include_str!("lua/diff_tags.lua")),
            swap_stage: Script::new(include_str!("lua/swap_stage.lua")),
            replay: Script::new(include_str!("lua/replay.lua")),
            throttle: Script::new(include_str!("lua/throttle.lua")),
        }
    }

    fn all(&self) -> [&Script; 9] {
        [
            &self.enqueue,
            &self.lease,
            &self.ack,
            &self.retry,
            &self.reap,
            &self.diff_tags,
            &self.swap_stage,
            &self.replay,
            &self.throttle,
        ]
    }
}

/// A standalone Redis (reconnecting manager) or a Cluster: both multiplexed and cheap to clone.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// How the Redis queue is laid out and timed.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    pub prefix: String,
    pub partitions: u16,
    pub lease_for: Duration,
    pub dedup_ttl: Duration,
}

/// The Redis-backed [`super::Queue`].
pub struct RedisQueue {
    conn: Conn,
    keys: Keys,
    scripts: Scripts,
    lease_for: Duration,
    dedup_ttl: Duration,
    /// Where the next lease starts looking, so workers spread over the partitions.
    next_partition: AtomicUsize,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue").field("keys", &self.keys).finish_non_exhaustive()
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn corrupt(what: String) -> QueueError {
    QueueError::Corrupt(serde::de::Error::custom(what))
}

fn parse_member(member: &str) -> Result<ContactKey, QueueError> {
    let (location, contact) = member.split_once('\u{1f}').ok_or_else(|| corrupt(format!("bad contact {member:?}")))?;
    Ok(ContactKey {
        location_id: LocationId::parse(location).map_err(|e| corrupt(format!("bad location: {e}")))?,
        contact_id: ContactId::parse(contact).map_err(|e| corrupt(format!("bad contact: {e}")))?,
    })
}

fn int(value: &Value) -> Result<i64, QueueError> {
    match value {
        Value::Int(n) => Ok(*n),
        Value::BulkString(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| corrupt("expected an integer".to_owned())),
        other => Err(corrupt(format!("expected an integer, got {other:?}"))),
    }
}

fn text(value: &Value) -> Result<&str, QueueError> {
    match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).map_err(|_| corrupt("not UTF-8".to_owned())),
        Value::SimpleString(s) => Ok(s),
        other => Err(corrupt(format!("expected a string, got {other:?}"))),
    }
}

impl RedisQueue {
    /// Connects (standalone or Cluster, detected from the server), then loads every script.
    pub async fn connect(url: &RedisUrl, options: RedisOptions) -> Result<Self, QueueError> {
        let unreachable = |source: redis::RedisError| QueueError::Unreachable { url: url.to_string(), source };
        let client = redis::Client::open(url.expose()).map_err(unreachable)?;
        let mut probe = tokio::time::timeout(CONNECT_TIMEOUT, client.get_multiplexed_async_connection())
            .await
            .map_err(|_| unreachable(redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))))?
            .map_err(unreachable)?;
        let info: String = redis::cmd("INFO").arg("cluster").query_async(&mut probe).await.map_err(unreachable)?;
        let mut conn = if info.contains("cluster_enabled:1") {
            let cluster = redis::cluster::ClusterClient::builder(vec![url.expose()])
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
                .build()
                .map_err(unreachable)?;
            Conn::Cluster(cluster.get_async_connection().await.map_err(unreachable)?)
        } else {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(RESPONSE_TIMEOUT))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_secs(2));
            Conn::Single(ConnectionManager::new_with_config(client, config).await.map_err(unreachable)?)
        };
        let scripts = Scripts::new();
        for script in scripts.all() {
            script.prepare_invoke().load_async(&mut conn).await.map_err(unreachable)?;
        }
        Ok(Self {
            conn,
            keys: Keys::new(&options.prefix, options.partitions),
            scripts,
            lease_for: options.lease_for,
            dedup_ttl: options.dedup_ttl,
            next_partition: AtomicUsize::new(rand::random::<u16>() as usize),
        })
    }

    fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// Runs a keyless command (SCAN) where `key`'s partition lives: on a Cluster, the node owning its slot;
    /// on a standalone Redis, the server.
    async fn on_partition_node<T: redis::FromRedisValue>(&self, key: &str, command: Cmd) -> Result<T, QueueError> {
        match self.conn() {
            Conn::Single(mut conn) => Ok(command.query_async(&mut conn).await?),
            Conn::Cluster(mut conn) => {
                use ::redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = Route::with_key(key, SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                let value = conn.route_command(command, routing).await?;
                redis::from_redis_value(value).map_err(|e| corrupt(format!("unexpected reply: {e}")))
            }
        }
    }

    /// The partition a dead letter id names (`<partition>-<hex>`).
    fn partition_of_letter(&self, id: &str) -> PartitionKeys {
        let n = id.split_once('-').and_then(|(n, _)| n.parse::<u16>().ok()).unwrap_or(0);
        self.keys.partition(n % self.keys.partitions())
    }

    /// Ends a lease, acknowledged or, with a `failure`, dead-lettered: one script either way.
    async fn end_lease(
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
            .key(partition.known(&member))
            .key(partition.pending_count())
            .key(partition.dead())
            .key(partition.dead_ops(&letter_id))
            .key(partition.audit(&member))
            .arg(now)
            .arg(&member)
            .arg(lease.id.to_string())
            .arg(lease.ops.len())
            .arg(if applied.removed_all { "1" } else { "0" })
            .arg(serde_json::to_string(&applied.removed)?)
            .arg(serde_json::to_string(&applied.added)?);
        // The script appends each stored operation and the closing brace to this prefix.
        let result = if failure.is_some() { "dead-lettered" } else { "delivered" };
        let prefix = serde_json::json!({
            "at": now,
            "location_id": lease.contact.location_id,
            "contact_id": lease.contact.contact_id,
            "result": result,
        })
        .to_string();
        let prefix = format!("{},\"operation\":", prefix.trim_end_matches('}'));
        invocation.arg(prefix).arg(AUDIT_PER_CONTACT);
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
        }
        let result: i64 = invocation.invoke_async(&mut self.conn()).await?;
        if result < 0 { Err(QueueError::LeaseLost) } else { Ok(()) }
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
            for planned in ops {
                let stored = |op: FollowerOp| StoredOp {
                    seq: 0,
                    op,
                    rule: planned.rule.to_string(),
                    event_id: event.event_id.clone(),
                    enqueued_at: now,
                };
                match &planned.action {
                    Action::RoundRobin { rule, pool } => {
                        let cursor = partition.cursor(&cursor_key(rule, &event.contact.location_id));
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
                        for user in pool.iter() {
                            let quoted = serde_json::to_string(user.as_str())?;
                            args.push(quoted[1..quoted.len() - 1].to_owned());
                        }
                    }
                    action => {
                        if let Some(op) = super::resolve(action, 0) {
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
            .invoke_async(&mut self.conn())
            .await?)
    }
}

/// What one partition's lease script answered.
enum PartitionLease {
    Leased(Lease),
    Empty(Option<Millis>),
    Stale,
}

fn parse_lease(reply: Value, id: u64) -> Result<PartitionLease, QueueError> {
    let Value::Array(items) = reply else { return Err(corrupt(format!("lease reply {reply:?}"))) };
    match items.first().map(int).transpose()? {
        Some(1) if items.len() >= 4 => {
            let contact = parse_member(text(&items[1])?)?;
            let deadline = u64::try_from(int(&items[2])?).unwrap_or(0);
            let attempts = u32::try_from(int(&items[3])?).unwrap_or(u32::MAX);
            // Stored operations carry no sequence number (it would cost a counter per write); within a lease,
            // their position in the list is their order.
            let ops = items[4..]
                .iter()
                .enumerate()
                .map(|(i, op)| Ok(QueuedOp { seq: i as u64 + 1, ..serde_json::from_str::<QueuedOp>(text(op)?)? }))
                .collect::<Result<Vec<_>, QueueError>>()?;
            Ok(PartitionLease::Leased(Lease { id, contact, ops, attempts, deadline }))
        }
        Some(0) => Ok(PartitionLease::Empty(items.get(1).map(int).transpose()?.and_then(|n| u64::try_from(n).ok()))),
        Some(2) => Ok(PartitionLease::Stale),
        _ => Err(corrupt(format!("lease reply {items:?}"))),
    }
}

#[async_trait]
impl Queue for RedisQueue {
    async fn enqueue(&self, batch: Vec<EventOps>, now: Millis) -> Result<EnqueueOutcome, QueueError> {
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

    async fn lease(&self, now: Millis) -> Result<LeaseOutcome, QueueError> {
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

    async fn ack(&self, lease: &Lease, applied: &Applied, now: Millis) -> Result<(), QueueError> {
        self.end_lease(lease, applied, None, now).await
    }

    async fn dead_letter(&self, lease: &Lease, failure: &Failure, now: Millis) -> Result<(), QueueError> {
        self.end_lease(lease, &Applied::default(), Some(failure), now).await
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        let mut letters = Vec::new();
        for n in 0..self.keys.partitions() {
            let partition = self.keys.partition(n);
            let described: Vec<(String, String)> =
                redis::cmd("HGETALL").arg(partition.dead()).query_async(&mut self.conn()).await?;
            for (id, description) in described {
                let ops: Vec<String> = redis::cmd("LRANGE")
                    .arg(partition.dead_ops(&id))
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut self.conn())
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

    async fn replay(&self, which: &Selection, now: Millis) -> Result<usize, QueueError> {
        let mut replayed = 0;
        for letter in which.pick(self.dead_letters().await?) {
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
                .invoke_async(&mut self.conn())
                .await?;
            if result >= 0 {
                replayed += 1;
            }
        }
        Ok(replayed)
    }

    async fn purge(&self, which: &Selection) -> Result<usize, QueueError> {
        let mut purged = 0;
        for letter in which.pick(self.dead_letters().await?) {
            let partition = self.partition_of_letter(&letter.id);
            let (removed, _): (i64, i64) = redis::pipe()
                .atomic()
                .cmd("HDEL")
                .arg(partition.dead())
                .arg(&letter.id)
                .cmd("DEL")
                .arg(partition.dead_ops(&letter.id))
                .query_async(&mut self.conn())
                .await?;
            purged += usize::from(removed > 0);
        }
        Ok(purged)
    }

    async fn retry(&self, lease: &Lease, retry_at: Millis) -> Result<(), QueueError> {
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
            .invoke_async(&mut self.conn())
            .await?;
        if result < 0 { Err(QueueError::LeaseLost) } else { Ok(()) }
    }

    async fn reap(&self, now: Millis) -> Result<usize, QueueError> {
        let mut reaped = 0;
        for n in 0..self.keys.partitions() {
            let partition = self.keys.partition(n);
            let count: usize = self
                .scripts
                .reap
                .key(partition.ready())
                .key(partition.leases())
                .arg(now)
                .arg(partition.base())
                .arg(MAX_REAP)
                .invoke_async(&mut self.conn())
                .await?;
            reaped += count;
        }
        Ok(reaped)
    }

    async fn diff_tags(
        &self,
        contact: &ContactKey,
        event_id: &EventId,
        tags: &[String],
        _now: Millis,
    ) -> Result<TagDiff, QueueError> {
        let partition = self.keys.for_location(&contact.location_id);
        let member = contact_member(contact);
        let mut tags: Vec<String> = tags.iter().map(|t| normalize_tag(t)).filter(|t| !t.is_empty()).collect();
        tags.sort();
        tags.dedup();
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

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let mut stats = QueueStats::default();
        for n in 0..self.keys.partitions() {
            let partition = self.keys.partition(n);
            let (ready, leased, pending, dead): (u64, u64, Option<i64>, u64) = redis::pipe()
                .cmd("ZCARD")
                .arg(partition.ready())
                .cmd("ZCARD")
                .arg(partition.leases())
                .cmd("GET")
                .arg(partition.pending_count())
                .cmd("HLEN")
                .arg(partition.dead())
                .query_async(&mut self.conn())
                .await?;
            stats.dead += dead;
            stats.ready += ready;
            stats.leased += leased;
            stats.pending += u64::try_from(pending.unwrap_or(0)).unwrap_or(0);
        }
        Ok(stats)
    }

    async fn throttle(
        &self,
        location: &LocationId,
        limits: Limits,
        cost: u64,
        now: Millis,
    ) -> Result<Option<Millis>, QueueError> {
        let partition = self.keys.for_location(location);
        let wait: u64 = self
            .scripts
            .throttle
            .key(partition.limiter(location))
            .arg(now)
            .arg(limits.spacing_ms)
            .arg(limits.daily)
            .arg(cost)
            .invoke_async(&mut self.conn())
            .await?;
        Ok((wait > 0).then_some(wait))
    }

    async fn limiter_state(&self, location: &LocationId) -> Result<Option<LimiterState>, QueueError> {
        let key = self.keys.for_location(location).limiter(location);
        let (tat, day, count): (Option<u64>, Option<u64>, Option<u64>) =
            redis::cmd("HMGET").arg(key).arg("tat").arg("day").arg("count").query_async(&mut self.conn()).await?;
        Ok(tat.map(|tat| LimiterState { tat, day: day.unwrap_or(0), count: count.unwrap_or(0) }))
    }

    async fn pause(&self, location: &LocationId, until: Millis, reason: &str) -> Result<(), QueueError> {
        let partition = self.keys.for_location(location);
        let ttl = until.saturating_sub(now_ms()).max(1);
        let _: () = redis::cmd("SET")
            .arg(partition.pause(location))
            .arg(format!("{until} {reason}"))
            .arg("PX")
            .arg(ttl)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn paused_until(&self, location: &LocationId, now: Millis) -> Result<Option<(Millis, String)>, QueueError> {
        let partition = self.keys.for_location(location);
        let value: Option<String> =
            redis::cmd("GET").arg(partition.pause(location)).query_async(&mut self.conn()).await?;
        Ok(value.and_then(|v| {
            let (until, reason) = v.split_once(' ').unwrap_or((v.as_str(), ""));
            let until = until.parse::<Millis>().ok()?;
            (until > now).then(|| (until, reason.to_owned()))
        }))
    }

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
                        let (next, batch): (u64, Vec<String>) = self.on_partition_node(&pattern, scan).await?;
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
                redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).query_async(&mut self.conn()).await?;
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

    async fn oauth_tokens(&self, location: &LocationId) -> Result<Option<OAuthTokens>, QueueError> {
        let key = self.keys.for_location(location).oauth(location);
        let stored: Option<String> = redis::cmd("GET").arg(key).query_async(&mut self.conn()).await?;
        Ok(stored.map(|json| serde_json::from_str(&json)).transpose()?)
    }

    async fn store_oauth_tokens(&self, location: &LocationId, tokens: &OAuthTokens) -> Result<(), QueueError> {
        let key = self.keys.for_location(location).oauth(location);
        let _: () =
            redis::cmd("SET").arg(key).arg(serde_json::to_string(tokens)?).query_async(&mut self.conn()).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), QueueError> {
        let _: String = redis::cmd("PING").query_async(&mut self.conn()).await?;
        Ok(())
    }
}
