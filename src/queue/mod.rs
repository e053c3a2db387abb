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
//! The queue's store keeps more than the queue, because those things must live where every process finds
//! them and sometimes change in the queue's own atomic steps. Each concern is a small trait of its own, so a
//! part of the service asks only for what it uses, and a new stored concept adds one trait, its two
//! implementations and its contract cases:
//! - [`Queue`] (this file): enqueue, lease, ack, retry, dead letters, reap, stats;
//! - [`ContactMemory`]: what is remembered between events (tags, stages, followers followd added);
//! - [`LocationState`]: a location's rate budget and pause;
//! - [`AuditLog`]: each contact's audit trail (written by `ack` and `dead_letter`, in their transaction);
//! - [`Outcomes`]: delivery results shared with other processes' status pages;
//! - [`RunLog`]: reconcile runs and their cursors, so an interrupted run resumes;
//! - [`crate::upstream::TokenStore`]: OAuth tokens (the trait is the upstream client's, which needs it).
//!
//! Two backends implement every one of them and pass one behavioural suite (`tests/queue_contract.rs`):
//! [`EmbeddedQueue`] (redb, one process, the default) and [`RedisQueue`] (many processes). [`Stores`] holds
//! one backend as all of its traits; the composition root hands each part the ones it needs.

mod audit;
mod covers;
mod embedded;
pub mod keys;
mod locations;
mod memory;
mod outcomes;
mod redis;
mod roster;
mod runs;
mod stores;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use self::audit::{AUDIT_PER_CONTACT, AuditEntry, AuditLog};
pub use self::covers::{CoverLog, StoredCover};
pub use self::locations::{LocationState, Pause};
pub use self::memory::{ContactMemory, TagDiff};
pub use self::outcomes::{OUTCOME_TTL, Outcomes};
pub use self::roster::{DeletedUser, RosterLog};
pub use self::runs::{RunLog, RunRecord, RunState};
pub use self::stores::{StoreOptions, Stores};
use crate::domain::clock::Millis;
use crate::domain::followers::{Action, is_any};
pub use crate::domain::followers::{FollowerOp, Ownership};
pub use crate::event::ContactKey;
use crate::event::{ContactId, EventId, LocationId, UserId};
pub use embedded::EmbeddedQueue;
pub use redis::{RedisOptions, RedisQueue};

/// An operation the rules planned, before the queue resolves round robin to one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedOp {
    pub rule: Arc<str>,
    pub action: Action,
    /// Whose followers a removal may touch: the rule's `ownership`, else `followers.ownership`.
    pub ownership: Ownership,
    /// For an add: how long (ms) the follower stays. The queue schedules their removal (of followd's own
    /// follower only) that long after the enqueue; a later add or removal of that user on that contact
    /// cancels it, and a later timed add moves it.
    pub lasts: Option<u64>,
    /// The rule's `skip_if_following` team, carried to the stored operations (see [`QueuedOp::unless`]).
    pub unless: Option<Arc<[UserId]>>,
}

impl PlannedOp {
    /// The operation stored for it (as `op`, the round robin resolved) for event `event_id` at `now`, with the
    /// audit note of a round robin's turn and whether a turn picked it; `seq` 0 until the store numbers it.
    pub fn stored(
        &self,
        event_id: &EventId,
        op: FollowerOp,
        now: Millis,
        note: Option<String>,
        turn: bool,
    ) -> QueuedOp {
        QueuedOp {
            seq: 0,
            op,
            rule: self.rule.to_string(),
            event_id: event_id.clone(),
            enqueued_at: now,
            ownership: self.ownership,
            note,
            unless: self.unless.as_deref().map(<[UserId]>::to_vec).unwrap_or_default(),
            turn,
        }
    }
}

/// All that one event asks of one contact: enqueued (or recognised as a duplicate) as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventOps {
    pub event_id: EventId,
    pub contact: ContactKey,
    pub ops: Vec<PlannedOp>,
    /// Background work (a reconcile): its contact is leased only when no live contact is ready. A live event
    /// for the same contact brings it forward.
    pub background: bool,
}

/// Where background contacts wait in the ready order: their ready time plus this, so that every live contact
/// ready now is leased first, and a scan of the ready order up to `now` meets only live ones. 10^13 ms (about
/// 317 years) keeps every score below 10^14, exact in Lua's number formatting as in redb's integers.
pub(crate) const BACKGROUND_OFFSET: Millis = 10_000_000_000_000;

/// A contact's place in the ready order at `at`, in its lane.
pub(crate) fn ready_score(at: Millis, background: bool) -> Millis {
    if background { at.saturating_add(BACKGROUND_OFFSET) } else { at }
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
    /// For a removal: whose followers it may touch. Absent in what older versions stored: `any`.
    #[serde(default, skip_serializing_if = "is_any")]
    pub ownership: Ownership,
    /// What the audit trail should say about how this operation came to be (a round robin's turn taken while
    /// everyone was away, or given to the overflow); absent for most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The rule's `skip_if_following`: the worker drops this operation (and the rest of its rule's for this
    /// event) when one of these users follows the contact as it delivers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unless: Vec<UserId>,
    /// An add a round robin's turn picked: if its rule is skipped at delivery, the turn is given back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub turn: bool,
}

impl QueuedOp {
    /// The removal of `user` that a timed add (this operation, from a rule with `for = lasts` ms) schedules:
    /// of followd's own follower only (a person's stays), with a note for the audit trail.
    pub fn timed_removal(&self, user: UserId, lasts: u64) -> QueuedOp {
        let minutes = lasts / 60_000;
        let shown = match minutes {
            m if m % 1440 == 0 => format!("{}d", m / 1440),
            m if m % 60 == 0 => format!("{}h", m / 60),
            m => format!("{m}m"),
        };
        QueuedOp {
            seq: 0,
            op: FollowerOp::Remove(user),
            ownership: Ownership::Managed,
            note: Some(format!("rule `{}`: added for {shown}, now over", self.rule)),
            unless: Vec::new(),
            turn: false,
            ..self.clone()
        }
    }
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

/// The follower changes a delivery made. The ack that ends the lease records them in the audit trail and in
/// the contact's memory of the followers followd added, in the same atomic step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Every follower was removed (a `remove_all` that may touch anyone).
    pub removed_all: bool,
    pub removed: Vec<UserId>,
    /// The users this delivery made followers (the CRM's `followersAdded`): followd's from now on. A user who
    /// already followed is not among them.
    pub added: Vec<UserId>,
    /// The followers the CRM listed when this delivery read the contact, if it did: followd forgets having
    /// added the ones a person has removed since.
    pub seen: Option<Vec<UserId>>,
    /// Nothing was sent (dry run): the audit trail says so, and the followers followd added stay as they were.
    pub dry_run: bool,
    /// Operations (by `seq` in the lease) their rule's `skip_if_following` gave up, with why: the audit trail
    /// records them as skipped.
    pub skipped: Vec<(u64, String)>,
}

impl Applied {
    /// What the audit trail records for operations ended by this delivery.
    pub fn outcome(&self) -> crate::domain::outcome::Outcome {
        use crate::domain::outcome::Outcome;
        if self.dry_run { Outcome::DryRun } else { Outcome::Delivered }
    }

    /// What the audit trail records for one of them: skipped, or the delivery's outcome.
    pub fn outcome_of(&self, op: &QueuedOp) -> crate::domain::outcome::Outcome {
        match self.skipped.iter().find(|(seq, _)| *seq == op.seq) {
            Some((_, reason)) => crate::domain::outcome::Outcome::Skipped(reason.clone()),
            None => self.outcome(),
        }
    }
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

/// Why the store could not do what was asked. Lower layers never know about HTTP: the receiver maps
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
    #[error("not connected to Redis at {0} yet: it did not answer when this process started; retrying")]
    NotConnected(String),
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

    /// Removes the leased operations, recording what was `applied` (audit trail, followers followd added);
    /// the contact is ready again if more arrived meanwhile.
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

    /// Queues, for their contacts, the removals of timed followers (a rule's `for`) due at `now`, as live
    /// work after what is pending. Returns how many.
    async fn fire_timers(&self, now: Millis) -> Result<usize, QueueError>;

    /// Gives back the turn `rule`'s round robin in `location` gave `user` at `picked_at` (see
    /// [`crate::domain::pick::refund`]): the rule was skipped at delivery, so they did not get the contact.
    async fn refund_turn(
        &self,
        location: &LocationId,
        rule: &str,
        user: &UserId,
        picked_at: Millis,
    ) -> Result<(), QueueError>;

    async fn stats(&self) -> Result<QueueStats, QueueError>;

    /// Answers when the store is reachable: for `/readyz`.
    async fn ping(&self) -> Result<(), QueueError>;

    /// Releases the store at shutdown (the embedded store's file lock), once calls in flight end; later calls
    /// fail with [`QueueError::Closed`].
    async fn close(&self) {}
}
