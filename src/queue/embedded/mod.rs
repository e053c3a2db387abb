//! The embedded queue: one redb file under `data_dir`, and its journal beside it, for a single process with no
//! server to run.
//!
//! Every write here is durable before it returns (a lease aside, which a restart releases anyway), so a webhook
//! acknowledged after `enqueue` survives a crash or power loss. Writes go through one committer thread that
//! commits the writes waiting together in one redb transaction (`commit.rs`: group commit), made durable either
//! by that commit or, for plain enqueues, by a frame in the journal (`journal.rs`), with one fsync per batch
//! either way. redb takes an exclusive lock on the file, so a second process on the same `data_dir` fails at
//! start ([`QueueError::Locked`]). redb's API is blocking: writes run on the committer thread, reads on Tokio's
//! blocking pool, so the async request path never blocks.
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
//! - `journal`: where a batch of enqueues is made durable without a durable redb commit of its own
//!
//! [`super::Outcomes`] notes nothing here: one process owns this store, and its status page already knows.

mod audit;
mod commit;
mod covers;
mod expiry;
mod journal;
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

use self::journal::Journal;
use self::tables::{DEAD, LEASES, META, OrQueue, PENDING, READY};
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
/// The journal beside it (see `journal.rs`).
const JOURNAL_NAME: &str = "followd.journal";

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
    /// Opens (or creates) `data_dir/followd.redb`, taking the exclusive lock, and applies again what its journal
    /// holds (see `journal.rs`).
    pub fn open(data_dir: &Path, lease_for: Duration, dedup_ttl: Duration) -> Result<Self, QueueError> {
        Self::open_checkpointing(data_dir, lease_for, dedup_ttl, journal::CHECKPOINT_EVERY)
    }

    /// [`EmbeddedQueue::open`], checkpointing the journal at least every `checkpoint_every`.
    fn open_checkpointing(
        data_dir: &Path,
        lease_for: Duration,
        dedup_ttl: Duration,
        checkpoint_every: Duration,
    ) -> Result<Self, QueueError> {
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
        let journal = recover(&db, &data_dir.join(JOURNAL_NAME), &timers)?;
        let db = Arc::new(db);
        let committer = commit::Committer::start(Arc::clone(&db), Some(journal), checkpoint_every)?;
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
        self.committer()?.write(work).await
    }

    /// The committer, until the queue is closed.
    fn committer(&self) -> Result<Arc<commit::Committer>, QueueError> {
        self.committer.load_full().ok_or(QueueError::Closed)
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

/// Opens the journal at `path` and applies again, durably, the enqueues it holds since the last durable commit
/// (acknowledged, and lost from redb by a crash), moving it to its next epoch in the same commit.
fn recover(db: &Database, path: &Path, timers: &timers::TimerFlag) -> Result<Journal, QueueError> {
    let epoch = {
        let tx = db.begin_read().q()?;
        tx.open_table(META).q()?.get(commit::JOURNAL_EPOCH).q()?.map(|v| v.value()).unwrap_or(0)
    };
    let (journal, frames) = Journal::open(path, epoch)
        .map_err(|e| QueueError::Open { path: path.to_owned(), source: Box::new(redb::StorageError::Io(e).into()) })?;
    let tx = db.begin_write().q()?;
    for frame in &frames {
        let (batch, now, expires) = journal::replayed(frame)?;
        lifecycle::enqueue(&tx, &batch, now, expires, timers)?;
    }
    tx.open_table(META).q()?.insert(commit::JOURNAL_EPOCH, journal.epoch()).q()?;
    tx.commit().q()?;
    if !frames.is_empty() {
        tracing::info!(enqueues = frames.len(), "applied the enqueues the journal held since the last durable commit");
    }
    Ok(journal)
}

#[async_trait]
impl Queue for EmbeddedQueue {
    async fn enqueue(&self, batch: Vec<EventOps>, now: Millis) -> Result<EnqueueOutcome, QueueError> {
        let expires = now.saturating_add(millis(self.dedup_ttl));
        self.committer()?.enqueue(batch, now, expires, Arc::clone(&self.timers)).await
    }

    async fn lease(&self, now: Millis) -> Result<LeaseOutcome, QueueError> {
        let lease_for = millis(self.lease_for);
        let id = rand::random::<u64>();
        // A lease a crash undoes costs nothing: the restarted process releases every lease at once.
        self.committer()?.write_volatile(move |tx| lifecycle::lease(tx, now, lease_for, id)).await
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

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::domain::followers::{Action, FollowerOp, Ownership};
    use crate::event::{ContactId, ContactKey};
    use crate::queue::PlannedOp;

    /// Event `id` for `contact` of location `loc`: one operation of rule `r`, any ownership.
    pub(in crate::queue::embedded) fn event(id: &str, contact: &str, action: Action, lasts: Option<u64>) -> EventOps {
        EventOps {
            event_id: EventId::parse(id).unwrap(),
            contact: ContactKey {
                location_id: LocationId::parse("loc").unwrap(),
                contact_id: ContactId::parse(contact).unwrap(),
            },
            ops: vec![PlannedOp { rule: Arc::from("r"), action, ownership: Ownership::Any, lasts, unless: None }],
            background: false,
        }
    }

    /// Copies the store's files as a crash would leave them: what is on the disk now.
    fn crash_copy(from: &Path, files: &[&str]) -> tempfile::TempDir {
        let to = tempfile::tempdir().unwrap();
        for file in files {
            std::fs::copy(from.join(file), to.path().join(file)).unwrap();
        }
        to
    }

    #[tokio::test]
    async fn enqueues_acknowledged_since_the_last_durable_commit_are_applied_again_from_the_journal_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let (lease, ttl) = (Duration::from_secs(60), Duration::from_secs(3600));
        // No checkpoint during the test: every enqueue is durable through the journal alone.
        let queue = EmbeddedQueue::open_checkpointing(dir.path(), lease, ttl, Duration::from_secs(3600)).unwrap();
        let user = |u: &str| UserId::parse(u).unwrap();
        for batch in [
            vec![event("e1", "c-1", Action::Add(user("usr_a")), None)],
            vec![event("e2", "c-2", Action::Remove(user("usr_b")), None)],
            vec![event("e3", "c-1", Action::Add(user("usr_c")), Some(60_000))],
        ] {
            assert_eq!(queue.enqueue(batch, 1_000).await.unwrap().accepted.len(), 1);
        }

        // redb's file alone has none of them: they were committed without waiting.
        let without_journal = crash_copy(dir.path(), &[FILE_NAME]);
        let lost = EmbeddedQueue::open(without_journal.path(), lease, ttl).unwrap();
        assert_eq!(lost.stats().await.unwrap().pending, 0, "the commits were not durable");
        lost.close().await;

        // With the journal, all three are back, in order, their ids remembered and the timer set.
        let crashed = crash_copy(dir.path(), &[FILE_NAME, JOURNAL_NAME]);
        let recovered = EmbeddedQueue::open(crashed.path(), lease, ttl).unwrap();
        assert_eq!(recovered.stats().await.unwrap().pending, 3);
        let again = recovered.enqueue(vec![event("e1", "c-1", Action::RemoveAll, None)], 2_000).await.unwrap();
        assert_eq!(again.duplicates.len(), 1, "e1 is remembered");
        let LeaseOutcome::Leased(first) = recovered.lease(2_000).await.unwrap() else { panic!("nothing ready") };
        let ops: Vec<_> = first.ops.iter().map(|op| (op.event_id.as_str(), op.op.clone())).collect();
        assert_eq!(ops, [("e1", FollowerOp::Add(user("usr_a"))), ("e3", FollowerOp::Add(user("usr_c")))]);
        assert!(recovered.timers.is_set(), "e3's timed follower");
        recovered.close().await;

        // Opened again, the journal's next epoch holds nothing to apply twice.
        let reopened = EmbeddedQueue::open(crashed.path(), lease, ttl).unwrap();
        assert_eq!(reopened.stats().await.unwrap().pending, 3);
        reopened.close().await;
        queue.close().await;
    }
}
