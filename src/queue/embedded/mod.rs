//! The embedded queue: one redb file under `data_dir`, for a single process with no server to run.
//!
//! redb is an ACID key-value store: every write here is committed with fsync before it returns, so a webhook
//! acknowledged after `enqueue` survives a crash or power loss. Writes go through one committer thread that
//! commits the writes waiting together in one transaction (`commit.rs`: group commit, one fsync per batch). redb takes an exclusive
//! lock on the file, so a second process on the same `data_dir` fails at start ([`QueueError::Locked`]).
//! redb's API is blocking: writes run on the committer thread, reads on Tokio's blocking pool, so the async
//! request path never blocks.
//!
//! This file holds the store itself and its [`Queue`] implementation, which delegates each call to the module
//! that owns its concern; each other trait is implemented in its own module:
//! - `tables`: the tables (and what each holds), the records stored in them, shared read and write helpers
//! - `lifecycle`: the life of a contact: enqueue, lease, ack, retry
//! - `expiry`: the reap: expired leases back to ready, expired event ids and answers forgotten
//! - `letters`: dead letters: set aside, listed, replayed, purged
//! - `memory`: [`super::ContactMemory`]: tags, stages, followers followd added, answers given
//! - `locations`: [`super::LocationState`] (budget and pause, in memory) and the OAuth [`TokenStore`]
//! - `audit`: [`super::AuditLog`], each contact's audit trail
//! - `runs`: [`super::RunLog`], reconcile runs
//! - `covers`: [`super::CoverLog`], cover for absences
//! - `timers`: timed followers' removals, set at enqueue and queued when due
//!
//! [`super::Outcomes`] notes nothing here: one process owns this store, and its status page already knows.

mod audit;
mod commit;
mod covers;
mod expiry;
mod letters;
mod lifecycle;
mod locations;
mod memory;
mod roster;
mod runs;
mod tables;
mod timers;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use redb::{Database, DatabaseError, ReadableDatabase, ReadableTableMetadata};

use self::tables::{DEAD, LEASES, OrQueue, PENDING, READY};
use super::{
    Applied, DeadLetter, EnqueueOutcome, EventOps, Failure, Lease, LeaseOutcome, Outcomes, Queue, QueueError,
    QueueStats, Selection,
};
use crate::domain::clock::{Millis, millis};
use crate::domain::outcome::Outcome;
use crate::event::{EventId, LocationId, UserId};

/// Longest `close` waits for calls in flight.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// The file inside `data_dir`.
const FILE_NAME: &str = "followd.redb";

/// The redb-backed store: [`Queue`] and every other store trait. Cheap to clone; clones share the database.
#[derive(Clone)]
pub struct EmbeddedQueue {
    /// `None` once closed: the database (and its file lock) is released when the last call in flight ends,
    /// even while clones of the queue live on.
    db: Arc<ArcSwapOption<Database>>,
    /// Every write goes through it; `None` once closed (its thread then ends and lets the database go).
    committer: Arc<ArcSwapOption<commit::Committer>>,
    lease_for: Duration,
    dedup_ttl: Duration,
    /// Rate limiter state per location. One process owns the store, so the budget lives in memory; a restart
    /// starts a fresh window (at worst one window's calls early).
    limiter: Arc<locations::Limiters>,
    /// Pauses per location (429, a rejected token); in memory for the same reason.
    pauses: Arc<locations::Pauses>,
    /// Whether any timed follower may be stored (see `timers.rs`).
    timers: Arc<timers::TimerFlag>,
}

impl std::fmt::Debug for EmbeddedQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedQueue").field("lease_for", &self.lease_for).finish_non_exhaustive()
    }
}

impl EmbeddedQueue {
    /// Opens (or creates) `data_dir/followd.redb`, taking the exclusive lock.
    pub fn open(data_dir: &Path, lease_for: Duration, dedup_ttl: Duration) -> Result<Self, QueueError> {
        let path = data_dir.join(FILE_NAME);
        let open_error = |source: redb::Error| QueueError::Open { path: path.clone(), source: Box::new(source) };
        std::fs::create_dir_all(data_dir).map_err(|e| open_error(redb::StorageError::Io(e).into()))?;
        let db = match Database::create(&path) {
            Ok(db) => db,
            Err(DatabaseError::DatabaseAlreadyOpen) => return Err(QueueError::Locked(data_dir.to_owned())),
            Err(e) => return Err(open_error(e.into())),
        };
        tables::create_all(&db)?;
        let timers = Arc::new(timers::TimerFlag::default());
        if timers::any(&db)? {
            timers.set();
        }
        let db = Arc::new(db);
        let committer = commit::Committer::start(Arc::clone(&db))?;
        Ok(Self {
            db: Arc::new(ArcSwapOption::new(Some(db))),
            committer: Arc::new(ArcSwapOption::from_pointee(committer)),
            lease_for,
            dedup_ttl,
            limiter: Arc::default(),
            pauses: Arc::default(),
            timers,
        })
    }

    /// Returns every lease in the file to the ready set at `now`: the process that opened it owns it, so
    /// those leases belonged to a predecessor that died; their contacts go out at once instead of after
    /// `queue.lease`. Returns how many.
    pub async fn release_predecessor_leases(&self, now: Millis) -> Result<usize, QueueError> {
        self.write(move |tx| expiry::release_all(tx, now)).await
    }

    /// The file this queue lives in, for messages.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE_NAME)
    }

    /// Runs a write in the committer's next batch; answers once it is committed. It may run twice (see
    /// `commit.rs`), so it is a `Fn`.
    async fn write<T, F>(&self, work: F) -> Result<T, QueueError>
    where
        T: Send + 'static,
        F: Fn(&redb::WriteTransaction) -> Result<T, QueueError> + Send + 'static,
    {
        let committer = self.committer.load_full().ok_or(QueueError::Closed)?;
        committer.write(work).await
    }

    /// Runs a blocking redb read on the blocking pool.
    async fn blocking<T, F>(&self, f: F) -> Result<T, QueueError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, QueueError> + Send + 'static,
    {
        let db = self.db.load_full().ok_or(QueueError::Closed)?;
        tokio::task::spawn_blocking(move || f(&db)).await?
    }
}

#[async_trait]
impl Queue for EmbeddedQueue {
    async fn enqueue(&self, batch: Vec<EventOps>, now: Millis) -> Result<EnqueueOutcome, QueueError> {
        let expires = now.saturating_add(millis(self.dedup_ttl));
        let committer = self.committer.load_full().ok_or(QueueError::Closed)?;
        committer.enqueue(batch, now, expires, Arc::clone(&self.timers)).await
    }

    async fn lease(&self, now: Millis) -> Result<LeaseOutcome, QueueError> {
        let lease_for = millis(self.lease_for);
        let id = rand::random::<u64>();
        self.write(move |tx| lifecycle::lease(tx, now, lease_for, id)).await
    }

    async fn ack(&self, lease: &Lease, applied: &Applied, now: Millis) -> Result<(), QueueError> {
        let lease = lease.clone();
        let applied = applied.clone();
        self.write(move |tx| lifecycle::ack(tx, &lease, &applied, now)).await
    }

    async fn dead_letter(&self, lease: &Lease, failure: &Failure, now: Millis) -> Result<(), QueueError> {
        let lease = lease.clone();
        let letter = letters::letter_for(&lease, failure, now);
        self.write(move |tx| letters::dead_letter(tx, &lease, &letter, now)).await
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        self.blocking(letters::dead_letters).await
    }

    async fn replay(&self, which: &Selection, now: Millis) -> Result<usize, QueueError> {
        let picked = which.pick(self.dead_letters().await?);
        self.write(move |tx| letters::replay(tx, &picked, now)).await
    }

    async fn purge(&self, which: &Selection) -> Result<usize, QueueError> {
        let picked = which.pick(self.dead_letters().await?);
        self.write(move |tx| letters::purge(tx, &picked)).await
    }

    async fn retry(&self, lease: &Lease, retry_at: Millis) -> Result<(), QueueError> {
        let lease = lease.clone();
        self.write(move |tx| lifecycle::retry(tx, &lease, retry_at)).await
    }

    async fn reap(&self, now: Millis) -> Result<usize, QueueError> {
        self.write(move |tx| expiry::reap(tx, now)).await
    }

    async fn fire_timers(&self, now: Millis) -> Result<usize, QueueError> {
        if !self.timers.is_set() {
            return Ok(0);
        }
        let timers = Arc::clone(&self.timers);
        self.write(move |tx| timers::fire(tx, &timers, now)).await
    }

    async fn refund_turn(
        &self,
        location: &LocationId,
        rule: &str,
        user: &UserId,
        picked_at: Millis,
    ) -> Result<(), QueueError> {
        let key = crate::domain::rotation::key(rule, location);
        let user = user.clone();
        self.write(move |tx| lifecycle::refund_turn(tx, &key, &user, picked_at)).await
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        self.blocking(|db| {
            let tx = db.begin_read().q()?;
            Ok(QueueStats {
                ready: tx.open_table(READY).q()?.len().q()?,
                leased: tx.open_table(LEASES).q()?.len().q()?,
                pending: tx.open_table(PENDING).q()?.len().q()?,
                dead: tx.open_table(DEAD).q()?.len().q()?,
            })
        })
        .await
    }

    async fn ping(&self) -> Result<(), QueueError> {
        self.blocking(|db| db.begin_read().map(drop).q()).await
    }

    async fn close(&self) {
        // Writes in flight keep the committer until they are answered; its thread then ends and drops its
        // handle on the database.
        drop(self.committer.swap(None));
        let Some(mut db) = self.db.swap(None) else { return };
        // Calls in flight hold the database until they finish (they run on the blocking pool and are short).
        let deadline = tokio::time::Instant::now() + CLOSE_TIMEOUT;
        loop {
            match Arc::try_unwrap(db) {
                Ok(db) => {
                    drop(db);
                    return;
                }
                Err(shared) if tokio::time::Instant::now() < deadline => {
                    db = shared;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(_) => {
                    tracing::warn!("the embedded queue is still in use; its file is released when that call ends");
                    return;
                }
            }
        }
    }
}

#[async_trait]
impl Outcomes for EmbeddedQueue {
    fn is_shared(&self) -> bool {
        false
    }

    async fn note_outcome(&self, _: &LocationId, _: &[EventId], _: &Outcome) -> Result<(), QueueError> {
        Ok(())
    }

    async fn outcomes(&self, events: &[(LocationId, EventId)]) -> Result<Vec<Option<Outcome>>, QueueError> {
        Ok(vec![None; events.len()])
    }
}
