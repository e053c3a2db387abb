//! The durable queue of follower operations: ordered per contact, coalesced, crash-safe.
//!
//! The unit of work is the **contact**, not the single call (see `DESIGN.md`, "Queue"): enqueue appends an
//! event's operations to the contact's pending list and marks the contact ready, in one transaction together
//! with the event-id de-duplication; a worker leases a ready contact (with a deadline), takes all its pending
//! operations, and acknowledges them once delivered. Operations that arrive during a lease wait for the ack,
//! which makes the contact ready again, so two workers never deliver one contact at once and its operations
//! apply in the order their events happened. A lease that expires (its worker died) is reaped: the contact
//! becomes ready again with its operations still in front, in order, because they were never removed.
//!
//! Invariant: an operation is in exactly one place — pending (possibly under a lease) or gone (acknowledged).
//!
//! Two implementations share the [`Queue`] trait and one behavioural test suite: [`EmbeddedQueue`] (redb, one
//! process, the default) and the Redis one (many processes).

mod embedded;
pub mod keys;
mod redis;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::deliver::limit::{LimiterState, Limits};
use crate::event::{ContactId, EventId, LocationId, UserId};
use crate::rules::Action;
pub use embedded::EmbeddedQueue;
pub use redis::{RedisOptions, RedisQueue};

/// Milliseconds since the Unix epoch. Time is always passed in, never read inside the queue, so tests control it.
pub type Millis = u64;

/// The current time in [`Millis`], for callers at the edge (workers, handlers).
pub fn now_ms() -> Millis {
    millis(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default())
}

/// A duration in milliseconds, saturating (a configured "forever" must not wrap).
pub fn millis(duration: std::time::Duration) -> Millis {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// One change to a contact's followers, as stored and delivered.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "op", content = "user", rename_all = "snake_case")]
pub enum FollowerOp {
    /// Remove every current follower.
    RemoveAll,
    Remove(UserId),
    Add(UserId),
}

/// The contact a queue entry is about. A contact id is only unique within its sub-account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContactKey {
    pub location_id: LocationId,
    pub contact_id: ContactId,
}

/// An operation the rules planned, before the queue resolves round robin to one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedOp {
    pub rule: Arc<str>,
    pub action: Action,
}

/// All that one event asks of one contact: enqueued (or recognised as a duplicate) as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventOps {
    pub event_id: EventId,
    pub contact: ContactKey,
    pub ops: Vec<PlannedOp>,
}

/// A stored operation: what to do, and which rule and event asked for it (for logs and the audit trail).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedOp {
    /// Position in the contact's pending list; increases with enqueue order.
    pub seq: u64,
    #[serde(flatten)]
    pub op: FollowerOp,
    pub rule: String,
    pub event_id: EventId,
    pub enqueued_at: Millis,
}

/// What an enqueue did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnqueueOutcome {
    /// Ids newly accepted, in batch order.
    pub accepted: Vec<EventId>,
    /// Ids already seen within the de-duplication window: nothing was stored for them.
    pub duplicates: Vec<EventId>,
    /// Follower operations stored.
    pub operations: usize,
}

/// A contact held by one worker until `deadline`, with every operation pending for it when it was leased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Identifies this lease; an ack or retry with a stale id is refused ([`QueueError::LeaseLost`]).
    pub id: u64,
    pub contact: ContactKey,
    /// In enqueue order.
    pub ops: Vec<QueuedOp>,
    /// Failed delivery attempts of these operations so far (0 on the first try).
    pub attempts: u32,
    pub deadline: Millis,
}

/// The result of asking for work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    Leased(Lease),
    /// Nothing ready now; `next_at` is when the earliest scheduled contact becomes ready, if any.
    Empty {
        next_at: Option<Millis>,
    },
}

/// The follower changes a delivery made, so the queue can remember which followers followd itself added
/// (the fallback for `remove_all` when the CRM does not say who follows a contact).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub removed_all: bool,
    pub removed: Vec<UserId>,
    pub added: Vec<UserId>,
}

/// What changed in a contact's tag set, from its stored last-seen set. Tags are compared as the CRM treats
/// them: trimmed and case-insensitively; they are reported in their normalized (lower-case) form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

/// The normalized form a tag is stored and compared in.
pub fn normalize_tag(tag: &str) -> String {
    tag.trim().to_lowercase()
}

/// Why a contact's operations were given up on: what the CRM answered, and followd's reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub status: Option<u16>,
    pub reason: String,
}

/// Operations set aside after a permanent failure, until an operator replays or purges them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// `<partition>-<hex>`: the partition tells the Redis queue where it lives.
    pub id: String,
    pub location_id: LocationId,
    pub contact_id: ContactId,
    pub operations: Vec<QueuedOp>,
    pub status: Option<u16>,
    pub reason: String,
    pub failed_at: Millis,
}

/// A location's OAuth tokens (GoHighLevel marketplace apps). The refresh token rotates on every refresh, so
/// the newest one must be kept where every process finds it: the queue's store.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthTokens {
    pub access_token: String,
    pub refresh_token: String,
    /// When the access token stops working (ms).
    pub expires_at: Millis,
}

impl std::fmt::Debug for OAuthTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthTokens").field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

/// One line of a contact's audit trail: a follower change followd made (or gave up on), when, and the rule
/// and event that caused it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When the delivery ended (ms).
    pub at: Millis,
    pub location_id: LocationId,
    pub contact_id: ContactId,
    /// `delivered` or `dead-lettered`.
    pub result: String,
    pub operation: QueuedOp,
}

/// Most audit entries kept per contact; older ones are dropped.
pub const AUDIT_PER_CONTACT: usize = 100;

/// How long a delivery outcome is kept for status pages (see [`Queue::note_outcome`]).
pub const OUTCOME_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Which dead letters a command acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    One(String),
    All,
}

impl Selection {
    /// The dead letters this selection names (none when the id is unknown).
    pub fn pick(&self, letters: Vec<DeadLetter>) -> Vec<DeadLetter> {
        match self {
            Self::All => letters,
            Self::One(id) => letters.into_iter().filter(|l| l.id == *id).collect(),
        }
    }
}

/// Counts for `followd queue stats`, `/metrics` and the status page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// Contacts waiting for a worker (now or at a scheduled retry time).
    pub ready: u64,
    /// Contacts held by a worker.
    pub leased: u64,
    /// Operations not yet acknowledged.
    pub pending: u64,
    pub dead: u64,
}

/// Why the queue could not do what was asked. Lower layers never know about HTTP: the receiver maps
/// [`QueueError::is_unavailable`] to a retry answer.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("the data directory {0} is in use by another followd process; stop it, or give this one another data_dir")]
    Locked(std::path::PathBuf),
    #[error("cannot open the embedded queue at {path}: {source}")]
    Open { path: std::path::PathBuf, source: Box<redb::Error> },
    #[error("embedded queue: {0}")]
    Embedded(#[from] redb::Error),
    #[error("a queue entry cannot be decoded: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("cannot reach Redis at {url}: {source}; start it, or unset FOLLOWD_REDIS_URL to use the embedded queue")]
    Unreachable { url: String, source: ::redis::RedisError },
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("the queue is closed: the service is shutting down")]
    Closed,
    #[error("the lease was lost: it expired and the contact went back to the queue")]
    LeaseLost,
    #[error("the queue's worker thread failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl QueueError {
    /// True when the failure is the store being unreachable or failing, as opposed to a caller's mistake.
    pub fn is_unavailable(&self) -> bool {
        !matches!(self, Self::LeaseLost)
    }
}

/// The queue contract. Every method is one atomic step; see the module doc for the life of a contact.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Stores each event's operations (resolving round robin) and marks its contact ready, unless the event id
    /// was seen within the de-duplication window. All of the batch or none of it is stored.
    async fn enqueue(&self, batch: Vec<EventOps>, now: Millis) -> Result<EnqueueOutcome, QueueError>;

    /// Leases the contact that has been ready longest, if any is ready at `now`.
    async fn lease(&self, now: Millis) -> Result<LeaseOutcome, QueueError>;

    /// Removes the leased operations; the contact is ready again if more arrived meanwhile.
    async fn ack(&self, lease: &Lease, applied: &Applied, now: Millis) -> Result<(), QueueError>;

    /// Moves the lease's operations to the dead letters, with `failure`; the contact goes on with any
    /// operations that arrived meanwhile.
    async fn dead_letter(&self, lease: &Lease, failure: &Failure, now: Millis) -> Result<(), QueueError>;

    /// Every dead letter, oldest first.
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError>;

    /// Puts dead letters' operations back in their contacts' queues, in their order; returns how many letters.
    async fn replay(&self, which: &Selection, now: Millis) -> Result<usize, QueueError>;

    /// Deletes dead letters; returns how many.
    async fn purge(&self, which: &Selection) -> Result<usize, QueueError>;

    /// Gives the lease back with its operations kept in front, ready again at `retry_at`.
    async fn retry(&self, lease: &Lease, retry_at: Millis) -> Result<(), QueueError>;

    /// Returns expired leases to the ready set and forgets expired event ids. Returns the leases reaped.
    async fn reap(&self, now: Millis) -> Result<usize, QueueError>;

    /// Replaces the contact's stored tag set with `tags` and returns what was added and removed, atomically.
    /// A contact seen for the first time has all its tags added. Idempotent per event id: the same event asked
    /// again (a sender's retry after a failed enqueue) gets the diff it got the first time, not an empty one.
    async fn diff_tags(
        &self,
        contact: &ContactKey,
        event_id: &EventId,
        tags: &[String],
        now: Millis,
    ) -> Result<TagDiff, QueueError>;

    /// Stores an opportunity's current stage and returns the previous one, if any. Idempotent per event id,
    /// like [`Queue::diff_tags`].
    async fn swap_stage(
        &self,
        location: &LocationId,
        opportunity: &str,
        event_id: &EventId,
        stage: &str,
        now: Millis,
    ) -> Result<Option<String>, QueueError>;

    /// Forgets the contact's stored tag set (it was deleted in the CRM).
    async fn forget_contact(&self, contact: &ContactKey) -> Result<(), QueueError>;

    /// Followers that followd itself added to the contact and has not removed since, sorted.
    async fn known_followers(&self, contact: &ContactKey) -> Result<Vec<UserId>, QueueError>;

    async fn stats(&self) -> Result<QueueStats, QueueError>;

    /// Takes `cost` calls from the location's rate budget: `None` when they may go now (they are reserved),
    /// else when to ask again. Redis shares one budget among every process; the embedded store keeps it in
    /// process.
    async fn throttle(
        &self,
        location: &LocationId,
        limits: Limits,
        cost: u64,
        now: Millis,
    ) -> Result<Option<Millis>, QueueError>;

    /// The location's rate budget as it stands (for the status page); `None` before its first call.
    async fn limiter_state(&self, location: &LocationId) -> Result<Option<LimiterState>, QueueError>;

    /// Stops calls for a location until `until` (a 429, a rejected token), for every process.
    async fn pause(&self, location: &LocationId, until: Millis, reason: &str) -> Result<(), QueueError>;

    /// When a paused location may be called again, and why it was paused; `None` when it is not paused.
    async fn paused_until(&self, location: &LocationId, now: Millis) -> Result<Option<(Millis, String)>, QueueError>;

    /// The contact's audit trail, newest first. `location: None` searches every location (a command-line
    /// convenience; CRM contact ids are unique in practice).
    async fn audit(&self, location: Option<&LocationId>, contact: &ContactId) -> Result<Vec<AuditEntry>, QueueError>;

    /// The location's stored OAuth tokens, if any.
    async fn oauth_tokens(&self, location: &LocationId) -> Result<Option<OAuthTokens>, QueueError>;

    /// Stores a location's OAuth tokens after a refresh (the old refresh token is spent).
    async fn store_oauth_tokens(&self, location: &LocationId, tokens: &OAuthTokens) -> Result<(), QueueError>;

    /// Whether other processes use this store too (Redis). Work only they need, such as
    /// [`Queue::note_outcome`], is skipped where it is not.
    fn is_shared(&self) -> bool {
        false
    }

    /// Notes what delivery made of a location's events, kept [`OUTCOME_TTL`], so that a status page served by
    /// another process (a receiver, when workers run apart) can show it. The embedded store serves a single
    /// process, whose page already knows: there it does nothing.
    async fn note_outcome(&self, _location: &LocationId, _events: &[EventId], _result: &str) -> Result<(), QueueError> {
        Ok(())
    }

    /// What delivery made of these events, where a process noted it; `None` where nothing is known.
    async fn outcomes(&self, events: &[(LocationId, EventId)]) -> Result<Vec<Option<String>>, QueueError> {
        Ok(vec![None; events.len()])
    }

    /// Answers when the store is reachable: for `/readyz`.
    async fn ping(&self) -> Result<(), QueueError>;

    /// Releases the store at shutdown (the embedded store's file lock), once calls in flight end; later calls
    /// fail with [`QueueError::Closed`].
    async fn close(&self) {}
}

/// Opens the queue the configuration names: Redis when `redis_url` is set, else the embedded store.
pub async fn open(config: &crate::config::Config) -> Result<Arc<dyn Queue>, QueueError> {
    let queue: Arc<dyn Queue> = match &config.redis_url {
        Some(url) => {
            let options = RedisOptions {
                prefix: config.queue.prefix.clone(),
                partitions: config.queue.partitions.get(),
                lease_for: config.queue.lease,
                dedup_ttl: config.queue.dedup_ttl,
            };
            let queue = RedisQueue::connect(url, options).await?;
            tracing::info!(%url, partitions = config.queue.partitions.get(), "queue: Redis (shared by every process)");
            Arc::new(queue)
        }
        None => {
            let queue = EmbeddedQueue::open(&config.data_dir, config.queue.lease, config.queue.dedup_ttl)?;
            tracing::info!(path = %EmbeddedQueue::path(&config.data_dir).display(), "queue: embedded store (one process)");
            Arc::new(queue)
        }
    };
    Ok(queue)
}

/// Resolves a planned operation to a stored one; `cursor` is the round-robin position for its rule and
/// location, advanced by the caller only when the pick is stored. `None` only for an empty pool, which the
/// rules already reject.
pub(crate) fn resolve(action: &Action, cursor: u64) -> Option<FollowerOp> {
    Some(match action {
        Action::RemoveAll => FollowerOp::RemoveAll,
        Action::Remove(user) => FollowerOp::Remove(user.clone()),
        Action::Add(user) => FollowerOp::Add(user.clone()),
        Action::RoundRobin { pool, .. } => {
            let index = usize::try_from(cursor % u64::try_from(pool.len()).ok().filter(|&n| n > 0)?).ok()?;
            FollowerOp::Add(pool.get(index)?.clone())
        }
    })
}

/// The key of a round-robin cursor: one per rule and location, so each sub-account rotates on its own.
pub(crate) fn cursor_key(rule: &str, location: &LocationId) -> String {
    format!("{rule}\u{1f}{location}")
}
