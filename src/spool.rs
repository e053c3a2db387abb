//! The receiver's local spool: where verified webhooks wait, durable, while the queue's server is unreachable.
//!
//! GoHighLevel pauses a receiver that answers too few 2xx (`shared/ghl/API.md` §13), so a Redis outage must
//! not turn into failed webhooks. A receiver that cannot reach Redis writes the webhook here (one redb
//! transaction, fsync'd, before the 202) and a forwarder (`intake/forward.rs`) replays it into the queue once
//! Redis answers. Entries are kept in arrival order under an increasing sequence number, and the receiver
//! spools every webhook while the spool is not empty, so a sender's order holds across the outage.
//!
//! What is stored is the raw body with its source and arrival time, not the parsed events: the parse is
//! repeated when forwarding (it is deterministic), and the contact memory and rule matching happen then, in
//! the queue's store, exactly as for a webhook that never waited. Memory steps are idempotent per event id, so
//! a forward interrupted after its enqueue and repeated after a crash does nothing twice (the queue answers
//! "duplicate").
//!
//! The spool is bounded by `spool.max_bytes` (bodies plus a small overhead per entry): a full spool, or one of
//! size 0, makes the receiver answer 429/503 as before. redb locks the file, so two processes never share one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::Notify;

use crate::domain::clock::Millis;

/// sequence → (arrival time in ms, source name, raw body).
const ENTRIES: TableDefinition<u64, (u64, &str, &[u8])> = TableDefinition::new("spool");
/// The file inside `spool.dir`.
const FILE_NAME: &str = "spool.redb";
/// redb's page cache for the spool.
const SPOOL_CACHE_BYTES: usize = 4 << 20;
/// Bytes counted per entry besides its body and source name (sequence, time, redb's own bookkeeping).
const ENTRY_OVERHEAD: u64 = 64;

/// Why the spool could not take or give an entry.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("cannot open the spool at {path}: {source}")]
    Open { path: PathBuf, source: Box<redb::Error> },
    #[error("the spool at {0} is in use by another process")]
    Locked(PathBuf),
    #[error("the spool is full ({max_bytes} bytes, spool.max_bytes)")]
    Full { max_bytes: u64 },
    #[error("the spool's store failed: {0}")]
    Store(#[from] Box<redb::Error>),
    #[error("a spool task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

fn store<E: Into<redb::Error>>(error: E) -> SpoolError {
    SpoolError::Store(Box::new(error.into()))
}

/// One spooled webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spooled {
    /// Its place in the spool; entries are forwarded in this order.
    pub seq: u64,
    /// The `[[source]]` it came through.
    pub source: String,
    /// When the receiver took it (ms since the epoch): the time its events are queued at.
    pub received_at: Millis,
    /// The verified raw body.
    pub body: Vec<u8>,
}

impl Spooled {
    fn size(source: &str, body: &[u8]) -> u64 {
        (source.len() + body.len()) as u64 + ENTRY_OVERHEAD
    }
}

/// The spool: a redb file of entries in arrival order, with its size and length kept in memory.
pub struct Spool {
    db: Arc<Database>,
    path: PathBuf,
    max_bytes: u64,
    /// Entries held now, and their size: read on every webhook, so never from disk.
    len: AtomicU64,
    bytes: AtomicU64,
    /// Poked when an entry is added, so the forwarder starts at once.
    pushed: Notify,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool").field("path", &self.path).field("len", &self.len()).finish_non_exhaustive()
    }
}

impl Spool {
    /// Opens (or creates) `dir/spool.redb`, taking its lock, and counts what a previous process left in it.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, SpoolError> {
        let path = dir.join(FILE_NAME);
        let open_error = |source: redb::Error| SpoolError::Open { path: path.clone(), source: Box::new(source) };
        std::fs::create_dir_all(dir).map_err(|e| open_error(redb::StorageError::Io(e).into()))?;
        // A small page cache: the spool is written and read once, in order (redb's default cache is 1 GiB).
        let db = match Database::builder().set_cache_size(SPOOL_CACHE_BYTES).create(&path) {
            Ok(db) => db,
            Err(DatabaseError::DatabaseAlreadyOpen) => return Err(SpoolError::Locked(path)),
            Err(e) => return Err(open_error(e.into())),
        };
        let tx = db.begin_write().map_err(store)?;
        tx.open_table(ENTRIES).map_err(store)?;
        tx.commit().map_err(store)?;
        let (mut len, mut bytes) = (0, 0);
        {
            let tx = db.begin_read().map_err(store)?;
            let table = tx.open_table(ENTRIES).map_err(store)?;
            for entry in table.iter().map_err(store)? {
                let (_, value) = entry.map_err(store)?;
                let (_, source, body) = value.value();
                len += 1;
                bytes += Spooled::size(source, body);
            }
        }
        metrics::gauge!("followd_spool_events").set(len as f64);
        Ok(Self {
            db: Arc::new(db),
            path,
            max_bytes,
            len: AtomicU64::new(len),
            bytes: AtomicU64::new(bytes),
            pushed: Notify::new(),
        })
    }

    /// The file, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Entries waiting to be forwarded.
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends a webhook after every entry already spooled; returns once it is on disk (fsync'd).
    pub async fn push(&self, source: &str, received_at: Millis, body: &[u8]) -> Result<u64, SpoolError> {
        let size = Spooled::size(source, body);
        // Reserve the room first, so concurrent pushes cannot together pass the bound.
        let reserved = self.bytes.fetch_add(size, Ordering::AcqRel) + size;
        if reserved > self.max_bytes {
            self.bytes.fetch_sub(size, Ordering::AcqRel);
            return Err(SpoolError::Full { max_bytes: self.max_bytes });
        }
        let (db, source, body) = (Arc::clone(&self.db), source.to_owned(), body.to_vec());
        let written = tokio::task::spawn_blocking(move || -> Result<u64, SpoolError> {
            let mut tx = db.begin_write().map_err(store)?;
            tx.set_durability(Durability::Immediate).map_err(store)?;
            let seq = {
                let mut table = tx.open_table(ENTRIES).map_err(store)?;
                let seq = table.last().map_err(store)?.map_or(0, |(k, _)| k.value() + 1);
                table.insert(seq, (received_at, source.as_str(), body.as_slice())).map_err(store)?;
                seq
            };
            tx.commit().map_err(store)?;
            Ok(seq)
        })
        .await
        .map_err(SpoolError::from)
        .and_then(|r| r);
        match written {
            Ok(seq) => {
                let len = self.len.fetch_add(1, Ordering::AcqRel) + 1;
                metrics::gauge!("followd_spool_events").set(len as f64);
                self.pushed.notify_one();
                Ok(seq)
            }
            Err(e) => {
                self.bytes.fetch_sub(size, Ordering::AcqRel);
                Err(e)
            }
        }
    }

    /// The oldest entry, if any.
    pub async fn oldest(&self) -> Result<Option<Spooled>, SpoolError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || -> Result<Option<Spooled>, SpoolError> {
            let tx = db.begin_read().map_err(store)?;
            let table = tx.open_table(ENTRIES).map_err(store)?;
            Ok(table.first().map_err(store)?.map(|(seq, value)| {
                let (received_at, source, body) = value.value();
                Spooled { seq: seq.value(), source: source.to_owned(), received_at, body: body.to_vec() }
            }))
        })
        .await?
    }

    /// Removes a forwarded entry (fsync'd: a crash after this never forwards it again, though doing so would
    /// be harmless).
    pub async fn remove(&self, entry: &Spooled) -> Result<(), SpoolError> {
        let (db, seq) = (Arc::clone(&self.db), entry.seq);
        let removed = tokio::task::spawn_blocking(move || -> Result<bool, SpoolError> {
            let mut tx = db.begin_write().map_err(store)?;
            tx.set_durability(Durability::Immediate).map_err(store)?;
            let removed = tx.open_table(ENTRIES).map_err(store)?.remove(seq).map_err(store)?.is_some();
            tx.commit().map_err(store)?;
            Ok(removed)
        })
        .await??;
        if removed {
            self.bytes.fetch_sub(Spooled::size(&entry.source, &entry.body), Ordering::AcqRel);
            let len = self.len.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
            metrics::gauge!("followd_spool_events").set(len as f64);
        }
        Ok(())
    }

    /// Waits until an entry is pushed (returns at once if one was pushed since the last wait).
    pub async fn pushed(&self) {
        self.pushed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_come_back_in_the_order_they_went_in_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let spool = Spool::open(dir.path(), 1 << 20).unwrap();
            assert!(spool.is_empty());
            for i in 0..3u64 {
                spool.push("generic", 100 + i, format!("body {i}").as_bytes()).await.unwrap();
            }
            assert_eq!(spool.len(), 3);
        }
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spool.len(), 3, "a reopened spool counts what it holds");
        for i in 0..3u64 {
            let entry = spool.oldest().await.unwrap().unwrap();
            assert_eq!((entry.source.as_str(), entry.received_at), ("generic", 100 + i));
            assert_eq!(entry.body, format!("body {i}").into_bytes());
            spool.remove(&entry).await.unwrap();
        }
        assert!(spool.oldest().await.unwrap().is_none());
        assert!(spool.is_empty());
    }

    #[tokio::test]
    async fn a_full_spool_refuses_and_takes_again_once_forwarded() {
        let dir = tempfile::tempdir().unwrap();
        let one = Spooled::size("generic", &[0; 100]);
        let spool = Spool::open(dir.path(), 2 * one).unwrap();
        spool.push("generic", 1, &[0; 100]).await.unwrap();
        spool.push("generic", 2, &[0; 100]).await.unwrap();
        assert!(matches!(spool.push("generic", 3, &[0; 100]).await, Err(SpoolError::Full { .. })));
        assert_eq!(spool.len(), 2, "a refused entry is not kept");
        let oldest = spool.oldest().await.unwrap().unwrap();
        spool.remove(&oldest).await.unwrap();
        spool.push("generic", 3, &[0; 100]).await.unwrap();
        let zero = Spool::open(&dir.path().join("none"), 0).unwrap();
        assert!(matches!(zero.push("generic", 1, b"{}").await, Err(SpoolError::Full { .. })));
    }

    #[tokio::test]
    async fn a_second_process_cannot_open_the_same_spool() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(matches!(Spool::open(dir.path(), 1 << 20), Err(SpoolError::Locked(_))));
    }
}
