//! Group commit: every write of the embedded store goes through one committer thread, which runs the writes
//! waiting at that moment in one redb transaction and commits them with one fsync.
//!
//! A commit with fsync costs about 200 µs here whatever it holds, so one transaction per webhook, lease and ack
//! capped the default at about 2,000 webhooks per second. Batching changes nothing a caller sees: each write
//! runs alone, in arrival order, against everything committed before it and every earlier write of its batch,
//! and its caller is answered only once the batch that holds it is durable. A write that fails (a lost lease,
//! a corrupt record) must not take its batch with it, and may have written half its changes: the batch is
//! then rolled back and each of its writes run again in a transaction of its own, so the failure is that
//! write's alone. That is why a write is a `Fn`, not a `FnOnce`: it may run twice, and only the committed run
//! counts.
//!
//! Enqueues, the webhook path's write, come as their own kind of job so that a run of them in one batch opens
//! the tables they write once.
//!
//! A batch needs no durable redb commit of its own when every write in it is an enqueue the journal can hold
//! or a write a crash may undo (a lease): it is committed without waiting, its enqueues are appended to the
//! journal with one `fdatasync`, and its callers are answered then (see `journal.rs`). Any other write makes
//! its batch durable, and so does the checkpoint every [`journal::CHECKPOINT_EVERY`]; a durable commit that covers
//! journaled frames moves the journal to its next epoch, recorded in the same transaction.
//!
//! Reads do not come here: redb's read transactions see the last commit and never wait for a writer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use redb::{Database, Durability, WriteTransaction};
use tokio::sync::oneshot;

use super::journal::{self, Journal};
use super::lifecycle::{self, EnqueueTables};
use super::tables::{META, OrQueue};
use super::timers::TimerFlag;
use crate::domain::clock::Millis;
use crate::queue::{EnqueueOutcome, EventOps, QueueError};

/// Most writes in one transaction: bounds the work lost to a failing write's rollback.
const MAX_BATCH: usize = 512;

/// The key in `meta` under which a durable commit records the journal's epoch.
pub(super) const JOURNAL_EPOCH: &str = "journal_epoch";

/// What a write needs before its caller may be answered.
enum Needs<'a> {
    /// A durable commit.
    Durable,
    /// Its frame in the journal (an enqueue).
    Journal(&'a [u8]),
    /// Nothing: a crash may undo it without harm.
    Nothing,
}

/// One write waiting for the committer, with the way back to its caller.
trait Job: Send {
    /// What must hold before the caller is answered.
    fn needs(&self) -> Needs<'_>;
    /// Runs the write against `tx`, keeping its result; false when it failed.
    fn run(&mut self, tx: &WriteTransaction) -> bool;
    /// For an enqueue: runs it with the enqueue tables the batch already opened (`None` for other writes,
    /// which open their own and must not meet those open).
    fn run_enqueue<'t>(&mut self, _: &'t WriteTransaction, _: &mut EnqueueTables<'t>) -> Option<bool> {
        None
    }
    /// Whether [`Job::run_enqueue`] applies.
    fn is_enqueue(&self) -> bool {
        false
    }
    /// Answers the caller: the write's own result once `committed` is `Ok`, else the commit's error.
    fn finish(self: Box<Self>, committed: Result<(), QueueError>);
}

struct Write<T, F> {
    work: F,
    /// A crash may undo it without harm (see [`Committer::write_volatile`]).
    volatile: bool,
    result: Option<Result<T, QueueError>>,
    reply: oneshot::Sender<Result<T, QueueError>>,
}

impl<T, F> Job for Write<T, F>
where
    T: Send,
    F: Fn(&WriteTransaction) -> Result<T, QueueError> + Send,
{
    fn needs(&self) -> Needs<'_> {
        if self.volatile { Needs::Nothing } else { Needs::Durable }
    }

    fn run(&mut self, tx: &WriteTransaction) -> bool {
        let result = (self.work)(tx);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, committed: Result<(), QueueError>) {
        answer(self.reply, committed, self.result);
    }
}

/// Answers a caller: its write's own result once `committed` is `Ok`, else the commit's error.
fn answer<T>(
    reply: oneshot::Sender<Result<T, QueueError>>,
    committed: Result<(), QueueError>,
    result: Option<Result<T, QueueError>>,
) {
    let answer = match (committed, result) {
        (Ok(()), Some(result)) => result,
        (Ok(()), None) => Err(QueueError::Closed),
        (Err(e), _) => Err(e),
    };
    // The caller may have gone (its request was cancelled); the write stands either way.
    let _ = reply.send(answer);
}

/// An enqueue: the webhook path's write, by far the most frequent, so a run of them in one batch shares its
/// open tables.
struct Enqueue {
    batch: Vec<EventOps>,
    now: Millis,
    expires: Millis,
    timers: Arc<TimerFlag>,
    /// Its frame, when the journal can hold it.
    frame: Option<Vec<u8>>,
    result: Option<Result<EnqueueOutcome, QueueError>>,
    reply: oneshot::Sender<Result<EnqueueOutcome, QueueError>>,
}

impl Enqueue {
    fn keep(&mut self, result: Result<EnqueueOutcome, QueueError>) -> bool {
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }
}

impl Job for Enqueue {
    fn needs(&self) -> Needs<'_> {
        match &self.frame {
            Some(frame) => Needs::Journal(frame),
            None => Needs::Durable,
        }
    }

    fn run(&mut self, tx: &WriteTransaction) -> bool {
        let result = lifecycle::enqueue(tx, &self.batch, self.now, self.expires, &self.timers);
        self.keep(result)
    }

    fn run_enqueue<'t>(&mut self, tx: &'t WriteTransaction, tables: &mut EnqueueTables<'t>) -> Option<bool> {
        let result = lifecycle::enqueue_into(tx, tables, &self.batch, self.now, self.expires, &self.timers);
        Some(self.keep(result))
    }

    fn is_enqueue(&self) -> bool {
        true
    }

    fn finish(self: Box<Self>, committed: Result<(), QueueError>) {
        answer(self.reply, committed, self.result);
    }
}

/// The sending side of the committer; the thread ends when the last one is dropped.
#[derive(Clone)]
pub(super) struct Committer {
    jobs: mpsc::Sender<Box<dyn Job>>,
}

impl Committer {
    /// Starts the committer thread over `db`, journaling into `journal` (none: every batch commits durably)
    /// with a checkpoint at least every `checkpoint_every`. The thread holds `db` until every [`Committer`] is
    /// dropped, and checkpoints before it lets it go.
    pub(super) fn start(
        db: Arc<Database>,
        journal: Option<Journal>,
        checkpoint_every: Duration,
    ) -> Result<Self, QueueError> {
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("followd-commit".into())
            .spawn(move || Committing::new(&db, journal, checkpoint_every).run(&queue))
            .map_err(|e| QueueError::Embedded(redb::StorageError::Io(e).into()))?;
        Ok(Self { jobs })
    }

    /// Runs `work` in the next batch; answers once that batch is committed (with fsync).
    pub(super) async fn write<T, F>(&self, work: F) -> Result<T, QueueError>
    where
        T: Send + 'static,
        F: Fn(&WriteTransaction) -> Result<T, QueueError> + Send + 'static,
    {
        self.send(work, false).await
    }

    /// [`Committer::write`] for a write a crash may undo without harm, such as a lease (a restarted process
    /// releases every lease): it never waits for the disk.
    pub(super) async fn write_volatile<T, F>(&self, work: F) -> Result<T, QueueError>
    where
        T: Send + 'static,
        F: Fn(&WriteTransaction) -> Result<T, QueueError> + Send + 'static,
    {
        self.send(work, true).await
    }

    async fn send<T, F>(&self, work: F, volatile: bool) -> Result<T, QueueError>
    where
        T: Send + 'static,
        F: Fn(&WriteTransaction) -> Result<T, QueueError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Write { work, volatile, result: None, reply };
        self.jobs.send(Box::new(job)).map_err(|_| QueueError::Closed)?;
        answer.await.map_err(|_| QueueError::Closed)?
    }
}

impl Committer {
    /// Enqueues `batch` in the next batch of writes; answers once it is committed.
    pub(super) async fn enqueue(
        &self,
        batch: Vec<EventOps>,
        now: Millis,
        expires: Millis,
        timers: Arc<TimerFlag>,
    ) -> Result<EnqueueOutcome, QueueError> {
        let (reply, answer) = oneshot::channel();
        // Serialised here, on the caller's thread, so the committer's only work on it is one write.
        let frame = journal::entry(&batch, now, expires);
        let job = Enqueue { batch, now, expires, timers, frame, result: None, reply };
        self.jobs.send(Box::new(job)).map_err(|_| QueueError::Closed)?;
        answer.await.map_err(|_| QueueError::Closed)?
    }
}

/// The committer thread's state: where the journal stands, and whether redb holds commits not durable yet.
struct Committing<'d> {
    db: &'d Database,
    /// `None`: every batch commits durably.
    writer: Option<JournalWriter>,
    checkpoint_every: Duration,
    /// The journal's epoch, as the last durable commit recorded it (see `journal.rs`).
    epoch: u64,
    /// Bytes of frames handed to the writer in this epoch.
    written: u64,
    /// The last durable commit that moved the journal to a new epoch.
    checkpointed: Instant,
    /// Commits since then that are not durable (their enqueues are in the journal).
    pending: bool,
    /// The last checkpoint tried on its own failed (warned once).
    failing: bool,
}

impl<'d> Committing<'d> {
    fn new(db: &'d Database, journal: Option<Journal>, checkpoint_every: Duration) -> Self {
        let epoch = journal.as_ref().map_or(0, Journal::epoch);
        let writer = journal.and_then(|journal| match JournalWriter::start(journal) {
            Ok(writer) => Some(writer),
            Err(error) => {
                tracing::warn!(%error, "cannot start the journal's writer; every batch commits durably");
                None
            }
        });
        let checkpointed = Instant::now();
        Self { db, writer, checkpoint_every, epoch, written: 0, checkpointed, pending: false, failing: false }
    }

    fn run(mut self, queue: &mpsc::Receiver<Box<dyn Job>>) {
        loop {
            let first = if self.pending {
                match queue.recv_timeout(self.checkpoint_every) {
                    Ok(job) => job,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.checkpoint_or_warn();
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match queue.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            metrics::histogram!("followd_embedded_commit_batch").record(batch.len() as f64);
            self.commit(batch);
        }
        // Closing: what the journal holds is made durable, so the next open has nothing to apply again; then
        // the writer answers what it still holds and ends.
        self.checkpoint_or_warn();
        if let Some(writer) = self.writer.take() {
            writer.finish();
        }
    }

    /// Commits `batch` and answers its callers (or has the journal's writer answer them): together when it
    /// can, else each write alone, durably.
    fn commit(&mut self, mut batch: Vec<Box<dyn Job>>) {
        let started = Instant::now();
        let durable = !self.may_defer(&batch);
        if (batch.len() > 1 || !durable) && self.together(&mut batch, durable) {
            if durable {
                batch.into_iter().for_each(|job| job.finish(Ok(())));
            } else {
                self.hand_to_writer(batch);
            }
            let kind = if durable { "durable" } else { "journal" };
            metrics::histogram!("followd_embedded_commit_seconds", "kind" => kind).record(started.elapsed());
            return;
        }
        for mut job in batch {
            let committed = alone(self.db, &mut *job);
            job.finish(committed);
        }
        metrics::histogram!("followd_embedded_commit_seconds", "kind" => "durable").record(started.elapsed());
    }

    /// Whether `batch` may commit without a durable redb commit of its own.
    fn may_defer(&self, batch: &[Box<dyn Job>]) -> bool {
        let Some(writer) = &self.writer else { return false };
        !writer.broken.load(Ordering::Acquire)
            && self.checkpointed.elapsed() < self.checkpoint_every
            && self.written < journal::MAX_BYTES
            && batch.iter().all(|job| !matches!(job.needs(), Needs::Durable))
    }

    /// Runs the whole batch in one transaction and commits it, durably or not; false (rolled back) if any
    /// write or the commit failed.
    fn together(&mut self, batch: &mut [Box<dyn Job>], durable: bool) -> bool {
        let Ok(mut tx) = self.db.begin_write() else { return false };
        if !durable && tx.set_durability(Durability::None).is_err() {
            return false;
        }
        if !run_all(&tx, batch) {
            if let Err(error) = tx.abort() {
                tracing::warn!(%error, "rolling back a batch of writes failed");
            }
            return false;
        }
        if durable {
            return self.commit_checkpoint(tx).is_ok();
        }
        if tx.commit().is_err() {
            return false;
        }
        self.pending = true;
        true
    }

    /// Hands a batch committed without waiting to the journal's writer, which answers its callers once its
    /// frames are on the disk; meanwhile the next batch runs. Without a writer, a durable commit answers.
    fn hand_to_writer(&mut self, batch: Vec<Box<dyn Job>>) {
        self.written += batch.iter().filter_map(|job| job.needs().frame()).map(|frame| frame.len() as u64).sum::<u64>();
        let returned = match &self.writer {
            Some(writer) => match writer.frames.send(ToWriter::Batch(batch)) {
                Ok(()) => return,
                Err(mpsc::SendError(message)) => message,
            },
            None => ToWriter::Batch(batch),
        };
        let ToWriter::Batch(batch) = returned else { return };
        tracing::warn!("the journal's writer has stopped; committing durably instead");
        self.writer = None;
        let committed = self.checkpoint().map_err(|e| e.to_string());
        for job in batch {
            job.finish(committed.clone().map_err(io_error));
        }
    }

    /// Commits `tx` durably. When the journal may hold frames, or redb commits not yet durable, it records the
    /// journal's next epoch in the same commit and moves the journal there: this commit covers them all.
    fn commit_checkpoint(&mut self, tx: WriteTransaction) -> Result<(), QueueError> {
        // Frames are only written for commits not yet durable, so `pending` says whether any are there.
        let next = (self.writer.is_some() && self.pending).then(|| self.epoch + 1);
        if let Some(epoch) = next {
            tx.open_table(META).q()?.insert(JOURNAL_EPOCH, epoch).q()?;
        }
        tx.commit().q()?;
        if let Some(writer) = &self.writer {
            // This commit covers every batch before it, one whose frames could not be written too.
            writer.broken.store(false, Ordering::Release);
            if let Some(epoch) = next {
                self.epoch = epoch;
                self.written = 0;
                // A writer that has stopped is found out at the next batch.
                let _ = writer.frames.send(ToWriter::Restart(epoch));
            }
        }
        self.pending = false;
        self.checkpointed = Instant::now();
        Ok(())
    }

    /// A durable commit of nothing: makes every commit before it durable.
    fn checkpoint(&mut self) -> Result<(), QueueError> {
        let tx = self.db.begin_write().q()?;
        self.commit_checkpoint(tx)
    }

    fn checkpoint_or_warn(&mut self) {
        if !self.pending {
            return;
        }
        match self.checkpoint() {
            Ok(()) => self.failing = false,
            // Tried again every `checkpoint_every` while writes wait: one warning per failing streak.
            Err(error) if !self.failing => {
                self.failing = true;
                tracing::warn!(%error, "cannot checkpoint the embedded queue; the journal keeps its writes");
            }
            Err(error) => tracing::debug!(%error, "cannot checkpoint the embedded queue"),
        }
    }
}

impl<'a> Needs<'a> {
    /// The frame the journal must hold, for an enqueue it can.
    fn frame(&self) -> Option<&'a [u8]> {
        match self {
            Needs::Journal(frame) => Some(frame),
            _ => None,
        }
    }
}

/// An I/O error for each caller of a batch: redb's errors cannot be cloned.
fn io_error(message: String) -> QueueError {
    QueueError::Embedded(redb::StorageError::Io(std::io::Error::other(message)).into())
}

/// What the committer hands the journal's writer, in commit order.
enum ToWriter {
    /// A batch committed without waiting: its frames go to the journal, then its callers are answered.
    Batch(Vec<Box<dyn Job>>),
    /// A durable commit recorded this epoch: the frames written so far are covered.
    Restart(u64),
}

/// The journal's writer thread: it appends each batch's frames with one `fdatasync` while the committer runs
/// the next batch, and answers the batch's callers in commit order, so no caller (not even one told its
/// event is a duplicate, nor a worker's lease) hears back before every batch before its own is durable.
struct JournalWriter {
    frames: mpsc::Sender<ToWriter>,
    /// Set when an append failed: the committer's next batch commits durably, which covers the failed one.
    broken: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl JournalWriter {
    fn start(mut journal: Journal) -> std::io::Result<Self> {
        let (frames, batches) = mpsc::channel();
        let broken = Arc::new(AtomicBool::new(false));
        let failed = Arc::clone(&broken);
        let thread = std::thread::Builder::new().name("followd-journal".into()).spawn(move || {
            let mut next = None;
            while let Some(message) = next.take().or_else(|| batches.recv().ok()) {
                let first = match message {
                    ToWriter::Restart(epoch) => {
                        journal.restart(epoch);
                        continue;
                    }
                    ToWriter::Batch(batch) => batch,
                };
                // Every batch waiting now goes out with this one, in one write and one fdatasync; a restart
                // waits for the frames before it.
                let mut waiting = vec![first];
                while let Ok(message) = batches.try_recv() {
                    match message {
                        ToWriter::Batch(batch) => waiting.push(batch),
                        restart @ ToWriter::Restart(_) => {
                            next = Some(restart);
                            break;
                        }
                    }
                }
                let frames = waiting.iter().flatten().filter_map(|job| job.needs().frame());
                let written = journal.append(frames).map_err(|error| {
                    // The callers hear so, and retry; the next batch commits durably.
                    tracing::warn!(%error, "cannot write the journal; answering 503 and committing durably");
                    failed.store(true, Ordering::Release);
                    error.to_string()
                });
                for job in waiting.into_iter().flatten() {
                    job.finish(written.clone().map_err(io_error));
                }
            }
        })?;
        Ok(Self { frames, broken, thread })
    }

    /// Lets the writer answer what it holds, and waits for it to end.
    fn finish(self) {
        drop(self.frames);
        if self.thread.join().is_err() {
            tracing::warn!("the journal's writer panicked");
        }
    }
}

/// Runs every write of the batch in order; consecutive enqueues share their open tables, which are closed
/// before any other write opens its own. False at the first write that fails.
fn run_all(tx: &WriteTransaction, batch: &mut [Box<dyn Job>]) -> bool {
    let mut tables: Option<EnqueueTables<'_>> = None;
    for job in batch.iter_mut() {
        let ok = if job.is_enqueue() {
            let open = match &mut tables {
                Some(open) => open,
                None => match EnqueueTables::open(tx) {
                    Ok(open) => tables.insert(open),
                    Err(_) => return false,
                },
            };
            job.run_enqueue(tx, open).unwrap_or(false)
        } else {
            tables = None;
            job.run(tx)
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Runs one write in its own transaction: committed when it succeeded, rolled back when it failed.
fn alone(db: &Database, job: &mut dyn Job) -> Result<(), QueueError> {
    let tx = db.begin_write().q()?;
    if job.run(&tx) { tx.commit().q() } else { tx.abort().q() }
}

#[cfg(test)]
mod tests {
    use redb::{ReadableDatabase, ReadableTable, TableDefinition};

    use super::*;

    const T: TableDefinition<u64, u64> = TableDefinition::new("t");

    #[tokio::test]
    async fn a_failing_write_fails_alone_and_leaves_nothing_while_the_rest_of_its_batch_commits() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::create(dir.path().join("t.redb")).unwrap());
        let committer = Committer::start(Arc::clone(&db), None, Duration::ZERO).unwrap();
        // Many writes at once, so they meet in batches; every tenth writes a row and then fails.
        let writes = (0..200u64).map(|i| {
            committer.write(move |tx| {
                tx.open_table(T).q()?.insert(i, i * 10).q()?;
                if i % 10 == 3 { Err(QueueError::Closed) } else { Ok(i) }
            })
        });
        let results = futures_util::future::join_all(writes).await;
        for (i, result) in results.into_iter().enumerate() {
            assert_eq!(result.is_ok(), i % 10 != 3, "write {i}: {result:?}");
        }
        let tx = db.begin_read().unwrap();
        let table = tx.open_table(T).unwrap();
        for i in 0..200u64 {
            let stored = table.get(i).unwrap().map(|v| v.value());
            assert_eq!(stored, (i % 10 != 3).then_some(i * 10), "row {i}");
        }
    }

    #[tokio::test]
    async fn the_thread_lets_the_database_go_once_the_committer_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::create(dir.path().join("t.redb")).unwrap());
        let committer = Committer::start(Arc::clone(&db), None, Duration::ZERO).unwrap();
        committer.write(|tx| tx.open_table(T).q()?.insert(1, 1).q().map(drop)).await.unwrap();
        drop(committer);
        let mut db = db;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match Arc::try_unwrap(db) {
                Ok(_) => break,
                Err(shared) => {
                    assert!(std::time::Instant::now() < deadline, "the committer thread still holds the database");
                    db = shared;
                    tokio::task::yield_now().await;
                }
            }
        }
    }

    #[tokio::test]
    async fn enqueues_sharing_their_tables_interleave_with_other_writes_and_each_is_answered() {
        use crate::domain::followers::Action;
        use crate::event::UserId;
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::create(dir.path().join("t.redb")).unwrap());
        super::super::tables::create_all(&db).unwrap();
        let committer = Committer::start(Arc::clone(&db), None, Duration::ZERO).unwrap();
        let timers = Arc::new(TimerFlag::default());
        let event = |i: u64| {
            super::super::tests::event(
                &format!("e{i}"),
                &format!("c{i}"),
                Action::Add(UserId::parse("u").unwrap()),
                None,
            )
        };
        // Enqueues (one a duplicate of another) meeting writes that open an enqueue table themselves: every
        // caller gets its own answer, and the store holds exactly what the accepted enqueues wrote.
        let enqueues = (0..100u64).map(|i| committer.enqueue(vec![event(i % 99)], 1, 1_000, Arc::clone(&timers)));
        let writes = (0..20u64).map(|i| {
            committer.write(move |tx| {
                let seq = tx.open_table(super::super::tables::META).q()?.get("seq").q()?.map(|v| v.value());
                tx.open_table(T).q()?.insert(i, seq.unwrap_or(0)).q()?;
                Ok(())
            })
        });
        let (enqueued, written) = futures_util::future::join(
            futures_util::future::join_all(enqueues),
            futures_util::future::join_all(writes),
        )
        .await;
        let accepted: usize = enqueued.iter().map(|r| r.as_ref().unwrap().accepted.len()).sum();
        assert_eq!(accepted, 99, "e0 came twice: one of them is a duplicate");
        assert!(written.iter().all(Result::is_ok), "{written:?}");
        let tx = db.begin_read().unwrap();
        let seq = tx.open_table(super::super::tables::META).unwrap().get("seq").unwrap().unwrap().value();
        assert_eq!(seq, 99, "one operation per accepted event");
    }
}
