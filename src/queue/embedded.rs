//! The embedded queue: one redb file under `data_dir`, for a single process with no server to run.
//!
//! redb is an ACID key-value store: every method here is one write transaction, committed with fsync before it
//! returns, so a webhook acknowledged after `enqueue` survives a crash or power loss. redb takes an exclusive
//! lock on the file, so a second process on the same `data_dir` fails at start ([`QueueError::Locked`]).
//! redb's API is blocking; each call runs on Tokio's blocking pool so the async request path never blocks.
//!
//! Tables (contact keys are `location \x1f contact`; ids cannot hold control characters, so this is unambiguous):
//! - `pending`  (contact, seq) → operation: each contact's operations in enqueue order
//! - `contacts` contact → state: when it is ready, or which lease holds it, and its failed attempts
//! - `ready`    (ready_at, contact) → (): contacts waiting, oldest first; a retry is scheduled in the future
//! - `leases`   (deadline, contact) → (): held contacts, earliest deadline first, for the reaper
//! - `seen`     event id → expiry; `seen_expiry` (expiry, event id) → () to forget old ids in order
//! - `cursors`  rule \x1f location → round-robin position
//! - `known`    contact → followers followd added (the `remove_all` fallback)
//! - `meta`     "seq" → the last operation sequence number
//! - `tags`     contact → its last seen tags; `stages` location \x1f opportunity → its last seen stage
//! - `audit`    (contact, seq) → what a delivery did, the newest [`super::AUDIT_PER_CONTACT`] per contact
//! - `oauth`    location → its OAuth tokens (the refresh token rotates)
//! - `dead`     dead letter id → the dead letter, operations included
//! - `memo`     kind \x1f event id \x1f subject → the answer given (`memo_expiry` to forget it in time)

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use std::collections::BTreeSet;

use super::{
    AUDIT_PER_CONTACT, Applied, AuditEntry, ContactKey, DeadLetter, EnqueueOutcome, EventOps, Failure, Lease,
    LeaseOutcome, Millis, OAuthTokens, Queue, QueueError, QueueStats, QueuedOp, Selection, TagDiff, cursor_key,
    normalize_tag, resolve,
};
use crate::deliver::limit::{LimiterState, Limits, acquire};
use crate::event::{ContactId, EventId, LocationId, UserId};

const PENDING: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("pending");
const CONTACTS: TableDefinition<&str, &[u8]> = TableDefinition::new("contacts");
const READY: TableDefinition<(u64, &str), ()> = TableDefinition::new("ready");
const LEASES: TableDefinition<(u64, &str), ()> = TableDefinition::new("leases");
const SEEN: TableDefinition<&str, u64> = TableDefinition::new("seen");
const SEEN_EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("seen_expiry");
const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("cursors");
const KNOWN: TableDefinition<&str, &[u8]> = TableDefinition::new("known");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const TAGS: TableDefinition<&str, &[u8]> = TableDefinition::new("tags");
const STAGES: TableDefinition<&str, &str> = TableDefinition::new("stages");
const MEMO: TableDefinition<&str, &[u8]> = TableDefinition::new("memo");
const MEMO_EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("memo_expiry");
const DEAD: TableDefinition<&str, &[u8]> = TableDefinition::new("dead");
const OAUTH: TableDefinition<&str, &[u8]> = TableDefinition::new("oauth");
const AUDIT: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("audit");

/// Most operations handed out in one lease: bounds a worker's batch and the transaction that builds it.
const MAX_LEASE_OPS: usize = 1000;
/// Most expired event ids forgotten per reap, so one reap never holds the write lock for long.
const MAX_SWEEP: usize = 10_000;
/// Longest `close` waits for calls in flight.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// The file inside `data_dir`.
pub const FILE_NAME: &str = "followd.redb";

/// What the queue knows about a contact that has pending operations.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ContactState {
    /// Set while the contact waits in `ready`.
    ready_at: Option<Millis>,
    /// Set while a worker holds it.
    lease: Option<LeaseState>,
    attempts: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseState {
    id: u64,
    deadline: Millis,
}

/// The redb-backed [`Queue`]. Cheap to clone; clones share the database.
#[derive(Clone)]
pub struct EmbeddedQueue {
    /// `None` once closed: the database (and its file lock) is released when the last call in flight ends,
    /// even while clones of the queue live on.
    db: Arc<ArcSwapOption<Database>>,
    lease_for: Duration,
    dedup_ttl: Duration,
    /// Rate limiter state per location. One process owns the store, so the budget lives in memory; a restart
    /// starts a fresh window (at worst one window's calls early).
    limiter: Arc<Mutex<HashMap<LocationId, LimiterState>>>,
    /// Pauses per location (429, a rejected token); in memory for the same reason.
    pauses: Arc<Mutex<HashMap<LocationId, (Millis, String)>>>,
}

impl std::fmt::Debug for EmbeddedQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedQueue").field("lease_for", &self.lease_for).finish_non_exhaustive()
    }
}

fn contact_key(key: &ContactKey) -> String {
    format!("{}\u{1f}{}", key.location_id, key.contact_id)
}

fn parse_contact_key(raw: &str) -> Result<ContactKey, QueueError> {
    let corrupt = || QueueError::Corrupt(serde::de::Error::custom(format!("bad contact key {raw:?}")));
    let (location, contact) = raw.split_once('\u{1f}').ok_or_else(corrupt)?;
    Ok(ContactKey {
        location_id: LocationId::parse(location).map_err(|_| corrupt())?,
        contact_id: ContactId::parse(contact).map_err(|_| corrupt())?,
    })
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
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
        // Create every table up front so read transactions never meet a missing one.
        let tx = db.begin_write().map_err(redb::Error::from)?;
        {
            tx.open_table(PENDING).map_err(redb::Error::from)?;
            tx.open_table(CONTACTS).map_err(redb::Error::from)?;
            tx.open_table(READY).map_err(redb::Error::from)?;
            tx.open_table(LEASES).map_err(redb::Error::from)?;
            tx.open_table(SEEN).map_err(redb::Error::from)?;
            tx.open_table(SEEN_EXPIRY).map_err(redb::Error::from)?;
            tx.open_table(CURSORS).map_err(redb::Error::from)?;
            tx.open_table(KNOWN).map_err(redb::Error::from)?;
            tx.open_table(META).map_err(redb::Error::from)?;
            tx.open_table(TAGS).map_err(redb::Error::from)?;
            tx.open_table(STAGES).map_err(redb::Error::from)?;
            tx.open_table(MEMO).map_err(redb::Error::from)?;
            tx.open_table(MEMO_EXPIRY).map_err(redb::Error::from)?;
            tx.open_table(DEAD).map_err(redb::Error::from)?;
            tx.open_table(OAUTH).map_err(redb::Error::from)?;
            tx.open_table(AUDIT).map_err(redb::Error::from)?;
        }
        tx.commit().map_err(redb::Error::from)?;
        Ok(Self {
            db: Arc::new(ArcSwapOption::from_pointee(db)),
            lease_for,
            dedup_ttl,
            limiter: Arc::default(),
            pauses: Arc::default(),
        })
    }

    /// The file this queue lives in, for messages.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE_NAME)
    }

    /// Runs a blocking redb closure on the blocking pool.
    async fn blocking<T, F>(&self, f: F) -> Result<T, QueueError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, QueueError> + Send + 'static,
    {
        let db = self.db.load_full().ok_or(QueueError::Closed)?;
        tokio::task::spawn_blocking(move || f(&db)).await?
    }
}

/// Shorthand: every redb error type converts into `redb::Error`, and that into `QueueError`.
trait OrQueue<T> {
    fn q(self) -> Result<T, QueueError>;
}

impl<T, E: Into<redb::Error>> OrQueue<T> for Result<T, E> {
    fn q(self) -> Result<T, QueueError> {
        self.map_err(|e| QueueError::Embedded(e.into()))
    }
}

fn read_state(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<ContactState>, QueueError> {
    match table.get(key).q()? {
        Some(bytes) => Ok(Some(serde_json::from_slice(bytes.value())?)),
        None => Ok(None),
    }
}

fn write_state(table: &mut redb::Table<&str, &[u8]>, key: &str, state: &ContactState) -> Result<(), QueueError> {
    table.insert(key, serde_json::to_vec(state)?.as_slice()).q()?;
    Ok(())
}

/// Checks that `lease` still holds its contact; returns the contact's state.
fn held(contacts: &redb::Table<&str, &[u8]>, key: &str, lease: &Lease) -> Result<ContactState, QueueError> {
    match read_state(contacts, key)? {
        Some(state) if state.lease.as_ref().is_some_and(|l| l.id == lease.id) => Ok(state),
        _ => Err(QueueError::LeaseLost),
    }
}

/// Ends a lease: removes its operations, records them in the contact's audit trail with `result`, and makes
/// the contact ready again if more arrived meanwhile.
fn finish(tx: &redb::WriteTransaction, key: &str, lease: &Lease, now: Millis, result: &str) -> Result<(), QueueError> {
    let mut contacts = tx.open_table(CONTACTS).q()?;
    let state = held(&contacts, key, lease)?;
    record_audit(tx, key, lease, now, result)?;
    let mut pending = tx.open_table(PENDING).q()?;
    for op in &lease.ops {
        pending.remove((key, op.seq)).q()?;
    }
    if let Some(l) = &state.lease {
        tx.open_table(LEASES).q()?.remove((l.deadline, key)).q()?;
    }
    let more = pending.range((key, 0)..=(key, u64::MAX)).q()?.next().is_some();
    if more {
        tx.open_table(READY).q()?.insert((now, key), ()).q()?;
        write_state(&mut contacts, key, &ContactState { ready_at: Some(now), lease: None, attempts: 0 })?;
    } else {
        contacts.remove(key).q()?;
    }
    Ok(())
}

fn record_audit(
    tx: &redb::WriteTransaction,
    key: &str,
    lease: &Lease,
    now: Millis,
    result: &str,
) -> Result<(), QueueError> {
    let mut meta = tx.open_table(META).q()?;
    let mut seq = meta.get("audit_seq").q()?.map(|v| v.value()).unwrap_or(0);
    let mut audit = tx.open_table(AUDIT).q()?;
    for op in &lease.ops {
        seq += 1;
        let entry = AuditEntry {
            at: now,
            location_id: lease.contact.location_id.clone(),
            contact_id: lease.contact.contact_id.clone(),
            result: result.to_owned(),
            operation: op.clone(),
        };
        audit.insert((key, seq), serde_json::to_vec(&entry)?.as_slice()).q()?;
    }
    meta.insert("audit_seq", seq).q()?;
    let kept: Vec<u64> = audit
        .range((key, 0)..=(key, u64::MAX))
        .q()?
        .map(|entry| entry.q().map(|(k, _)| k.value().1))
        .collect::<Result<_, _>>()?;
    for old in kept.iter().take(kept.len().saturating_sub(AUDIT_PER_CONTACT)) {
        audit.remove((key, *old)).q()?;
    }
    Ok(())
}

/// The answer a state-changing call gave to one event, if still remembered at `now`.
fn recall<T: serde::de::DeserializeOwned>(
    memo: &redb::Table<&str, &[u8]>,
    key: &str,
    now: Millis,
) -> Result<Option<T>, QueueError> {
    match memo.get(key).q()? {
        Some(bytes) => {
            let (expires, answer): (Millis, T) = serde_json::from_slice(bytes.value())?;
            Ok((expires > now).then_some(answer))
        }
        None => Ok(None),
    }
}

fn remember<T: Serialize>(
    tx: &redb::WriteTransaction,
    key: &str,
    answer: &T,
    expires: Millis,
) -> Result<(), QueueError> {
    tx.open_table(MEMO).q()?.insert(key, serde_json::to_vec(&(expires, answer))?.as_slice()).q()?;
    tx.open_table(MEMO_EXPIRY).q()?.insert((expires, key), ()).q()?;
    Ok(())
}

#[async_trait]
impl Queue for EmbeddedQueue {
    async fn enqueue(&self, batch: Vec<EventOps>, now: Millis) -> Result<EnqueueOutcome, QueueError> {
        let expires = now.saturating_add(millis(self.dedup_ttl));
        self.blocking(move |db| {
            let tx = db.begin_write().q()?;
            let mut outcome = EnqueueOutcome::default();
            {
                let mut seen = tx.open_table(SEEN).q()?;
                let mut seen_expiry = tx.open_table(SEEN_EXPIRY).q()?;
                let mut pending = tx.open_table(PENDING).q()?;
                let mut contacts = tx.open_table(CONTACTS).q()?;
                let mut ready = tx.open_table(READY).q()?;
                let mut cursors = tx.open_table(CURSORS).q()?;
                let mut meta = tx.open_table(META).q()?;
                let mut seq = meta.get("seq").q()?.map(|v| v.value()).unwrap_or(0);
                for event in batch {
                    let id = event.event_id.as_str();
                    let previous = seen.get(id).q()?.map(|v| v.value());
                    if previous.is_some_and(|expiry| expiry > now) {
                        outcome.duplicates.push(event.event_id);
                        continue;
                    }
                    if let Some(old) = previous {
                        seen_expiry.remove((old, id)).q()?;
                    }
                    seen.insert(id, expires).q()?;
                    seen_expiry.insert((expires, id), ()).q()?;
                    let key = contact_key(&event.contact);
                    let mut stored = 0;
                    for planned in &event.ops {
                        let cursor_name = match &planned.action {
                            crate::rules::Action::RoundRobin { rule, .. } => {
                                Some(cursor_key(rule, &event.contact.location_id))
                            }
                            _ => None,
                        };
                        let cursor = match &cursor_name {
                            Some(name) => cursors.get(name.as_str()).q()?.map(|v| v.value()).unwrap_or(0),
                            None => 0,
                        };
                        let Some(op) = resolve(&planned.action, cursor) else { continue };
                        if let Some(name) = &cursor_name {
                            cursors.insert(name.as_str(), cursor.wrapping_add(1)).q()?;
                        }
                        seq += 1;
                        let queued = QueuedOp {
                            seq,
                            op,
                            rule: planned.rule.to_string(),
                            event_id: event.event_id.clone(),
                            enqueued_at: now,
                        };
                        pending.insert((key.as_str(), seq), serde_json::to_vec(&queued)?.as_slice()).q()?;
                        stored += 1;
                    }
                    if stored > 0 {
                        let mut state = read_state(&contacts, &key)?.unwrap_or_default();
                        // A leased contact becomes ready again at its ack; a ready one keeps its place.
                        if state.lease.is_none() && state.ready_at.is_none() {
                            state.ready_at = Some(now);
                            ready.insert((now, key.as_str()), ()).q()?;
                            write_state(&mut contacts, &key, &state)?;
                        }
                    }
                    outcome.operations += stored;
                    outcome.accepted.push(event.event_id);
                }
                meta.insert("seq", seq).q()?;
            }
            tx.commit().q()?;
            Ok(outcome)
        })
        .await
    }

    async fn lease(&self, now: Millis) -> Result<LeaseOutcome, QueueError> {
        let lease_for = millis(self.lease_for);
        let id = rand::random::<u64>();
        self.blocking(move |db| {
            let tx = db.begin_write().q()?;
            let leased = {
                let mut ready = tx.open_table(READY).q()?;
                let first = ready.first().q()?.map(|(k, _)| {
                    let (at, key) = k.value();
                    (at, key.to_owned())
                });
                let Some((ready_at, key)) = first else { return Ok(LeaseOutcome::Empty { next_at: None }) };
                if ready_at > now {
                    return Ok(LeaseOutcome::Empty { next_at: Some(ready_at) });
                }
                ready.remove((ready_at, key.as_str())).q()?;
                let mut contacts = tx.open_table(CONTACTS).q()?;
                let mut leases = tx.open_table(LEASES).q()?;
                let pending = tx.open_table(PENDING).q()?;
                let mut ops = Vec::new();
                for entry in pending.range((key.as_str(), 0)..=(key.as_str(), u64::MAX)).q()?.take(MAX_LEASE_OPS) {
                    let (_, value) = entry.q()?;
                    ops.push(serde_json::from_slice::<QueuedOp>(value.value())?);
                }
                let mut state = read_state(&contacts, &key)?.unwrap_or_default();
                if ops.is_empty() {
                    // Nothing left to deliver: the contact should not have been ready; forget it.
                    contacts.remove(key.as_str()).q()?;
                    None
                } else {
                    let deadline = now.saturating_add(lease_for);
                    state.ready_at = None;
                    state.lease = Some(LeaseState { id, deadline });
                    write_state(&mut contacts, &key, &state)?;
                    leases.insert((deadline, key.as_str()), ()).q()?;
                    Some(Lease { id, contact: parse_contact_key(&key)?, ops, attempts: state.attempts, deadline })
                }
            };
            tx.commit().q()?;
            Ok(match leased {
                Some(lease) => LeaseOutcome::Leased(lease),
                // The entry was stale; the caller asks again at once.
                None => LeaseOutcome::Empty { next_at: Some(now) },
            })
        })
        .await
    }

    async fn ack(&self, lease: &Lease, applied: &Applied, now: Millis) -> Result<(), QueueError> {
        let lease = lease.clone();
        let applied = applied.clone();
        self.blocking(move |db| {
            let key = contact_key(&lease.contact);
            let tx = db.begin_write().q()?;
            finish(&tx, &key, &lease, now, "delivered")?;
            {
                let mut known = tx.open_table(KNOWN).q()?;
                let mut followers: Vec<UserId> = match known.get(key.as_str()).q()? {
                    Some(bytes) => serde_json::from_slice(bytes.value())?,
                    None => Vec::new(),
                };
                if applied.removed_all {
                    followers.clear();
                }
                followers.retain(|u| !applied.removed.contains(u));
                for user in &applied.added {
                    if !followers.contains(user) {
                        followers.push(user.clone());
                    }
                }
                if followers.is_empty() {
                    known.remove(key.as_str()).q()?;
                } else {
                    known.insert(key.as_str(), serde_json::to_vec(&followers)?.as_slice()).q()?;
                }
            }
            tx.commit().q()?;
            Ok(())
        })
        .await
    }

    async fn dead_letter(&self, lease: &Lease, failure: &Failure, now: Millis) -> Result<(), QueueError> {
        let lease = lease.clone();
        let letter = DeadLetter {
            id: format!("0-{:016x}", rand::random::<u64>()),
            location_id: lease.contact.location_id.clone(),
            contact_id: lease.contact.contact_id.clone(),
            operations: lease.ops.clone(),
            status: failure.status,
            reason: failure.reason.clone(),
            failed_at: now,
        };
        self.blocking(move |db| {
            let key = contact_key(&lease.contact);
            let tx = db.begin_write().q()?;
            finish(&tx, &key, &lease, now, "dead-lettered")?;
            tx.open_table(DEAD).q()?.insert(letter.id.as_str(), serde_json::to_vec(&letter)?.as_slice()).q()?;
            tx.commit().q()?;
            Ok(())
        })
        .await
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        self.blocking(|db| {
            let tx = db.begin_read().q()?;
            let dead = tx.open_table(DEAD).q()?;
            let mut letters = dead
                .iter()
                .q()?
                .map(|entry| Ok(serde_json::from_slice::<DeadLetter>(entry.q()?.1.value())?))
                .collect::<Result<Vec<_>, QueueError>>()?;
            letters.sort_by(|a, b| (a.failed_at, &a.id).cmp(&(b.failed_at, &b.id)));
            Ok(letters)
        })
        .await
    }

    async fn replay(&self, which: &Selection, now: Millis) -> Result<usize, QueueError> {
        let letters = which.pick(self.dead_letters().await?);
        self.blocking(move |db| {
            let tx = db.begin_write().q()?;
            {
                let mut dead = tx.open_table(DEAD).q()?;
                let mut pending = tx.open_table(PENDING).q()?;
                let mut contacts = tx.open_table(CONTACTS).q()?;
                let mut ready = tx.open_table(READY).q()?;
                let mut meta = tx.open_table(META).q()?;
                let mut seq = meta.get("seq").q()?.map(|v| v.value()).unwrap_or(0);
                for letter in &letters {
                    dead.remove(letter.id.as_str()).q()?;
                    let key = contact_key(&ContactKey {
                        location_id: letter.location_id.clone(),
                        contact_id: letter.contact_id.clone(),
                    });
                    for op in &letter.operations {
                        seq += 1;
                        let op = QueuedOp { seq, ..op.clone() };
                        pending.insert((key.as_str(), seq), serde_json::to_vec(&op)?.as_slice()).q()?;
                    }
                    let mut state = read_state(&contacts, &key)?.unwrap_or_default();
                    if state.lease.is_none() && state.ready_at.is_none() {
                        state.ready_at = Some(now);
                        ready.insert((now, key.as_str()), ()).q()?;
                        write_state(&mut contacts, &key, &state)?;
                    }
                }
                meta.insert("seq", seq).q()?;
            }
            tx.commit().q()?;
            Ok(letters.len())
        })
        .await
    }

    async fn purge(&self, which: &Selection) -> Result<usize, QueueError> {
        let letters = which.pick(self.dead_letters().await?);
        self.blocking(move |db| {
            let tx = db.begin_write().q()?;
            {
                let mut dead = tx.open_table(DEAD).q()?;
                for letter in &letters {
                    dead.remove(letter.id.as_str()).q()?;
                }
            }
            tx.commit().q()?;
            Ok(letters.len())
        })
        .await
    }

    async fn retry(&self, lease: &Lease, retry_at: Millis) -> Result<(), QueueError> {
        let lease = lease.clone();
        self.blocking(move |db| {
            let key = contact_key(&lease.contact);
            let tx = db.begin_write().q()?;
            {
                let mut contacts = tx.open_table(CONTACTS).q()?;
                let mut state = held(&contacts, &key, &lease)?;
                if let Some(l) = state.lease.take() {
                    tx.open_table(LEASES).q()?.remove((l.deadline, key.as_str())).q()?;
                }
                state.ready_at = Some(retry_at);
                state.attempts = state.attempts.saturating_add(1);
                tx.open_table(READY).q()?.insert((retry_at, key.as_str()), ()).q()?;
                write_state(&mut contacts, &key, &state)?;
            }
            tx.commit().q()?;
            Ok(())
        })
        .await
    }

    async fn reap(&self, now: Millis) -> Result<usize, QueueError> {
        self.blocking(move |db| {
            let tx = db.begin_write().q()?;
            let mut reaped = 0;
            {
                let mut leases = tx.open_table(LEASES).q()?;
                let mut contacts = tx.open_table(CONTACTS).q()?;
                let mut ready = tx.open_table(READY).q()?;
                let expired: Vec<(u64, String)> = leases
                    .range((0, "")..=(now, "\u{10ffff}"))
                    .q()?
                    .map(|entry| entry.q().map(|(k, _)| (k.value().0, k.value().1.to_owned())))
                    .collect::<Result<_, _>>()?;
                for (deadline, key) in expired {
                    leases.remove((deadline, key.as_str())).q()?;
                    let mut state = read_state(&contacts, &key)?.unwrap_or_default();
                    state.lease = None;
                    state.ready_at = Some(now);
                    ready.insert((now, key.as_str()), ()).q()?;
                    write_state(&mut contacts, &key, &state)?;
                    reaped += 1;
                }
                let mut seen = tx.open_table(SEEN).q()?;
                let mut seen_expiry = tx.open_table(SEEN_EXPIRY).q()?;
                let old: Vec<(u64, String)> = seen_expiry
                    .range((0, "")..=(now, "\u{10ffff}"))
                    .q()?
                    .take(MAX_SWEEP)
                    .map(|entry| entry.q().map(|(k, _)| (k.value().0, k.value().1.to_owned())))
                    .collect::<Result<_, _>>()?;
                for (expiry, id) in old {
                    seen_expiry.remove((expiry, id.as_str())).q()?;
                    seen.remove(id.as_str()).q()?;
                }
                let mut memo = tx.open_table(MEMO).q()?;
                let mut memo_expiry = tx.open_table(MEMO_EXPIRY).q()?;
                let old: Vec<(u64, String)> = memo_expiry
                    .range((0, "")..=(now, "\u{10ffff}"))
                    .q()?
                    .take(MAX_SWEEP)
                    .map(|entry| entry.q().map(|(k, _)| (k.value().0, k.value().1.to_owned())))
                    .collect::<Result<_, _>>()?;
                for (expiry, key) in old {
                    memo_expiry.remove((expiry, key.as_str())).q()?;
                    memo.remove(key.as_str()).q()?;
                }
            }
            tx.commit().q()?;
            Ok(reaped)
        })
        .await
    }

    async fn diff_tags(
        &self,
        contact: &ContactKey,
        event_id: &EventId,
        tags: &[String],
        now: Millis,
    ) -> Result<TagDiff, QueueError> {
        let key = contact_key(contact);
        let memo_key = format!("tags\u{1f}{event_id}\u{1f}{key}");
        let current: BTreeSet<String> = tags.iter().map(|t| normalize_tag(t)).filter(|t| !t.is_empty()).collect();
        let expires = now.saturating_add(millis(self.dedup_ttl));
        self.blocking(move |db| {
            let tx = db.begin_write().q()?;
            let diff = {
                let memo = tx.open_table(MEMO).q()?;
                if let Some(diff) = recall::<TagDiff>(&memo, &memo_key, now)? {
                    return Ok(diff);
                }
                drop(memo);
                let mut stored = tx.open_table(TAGS).q()?;
                let before: BTreeSet<String> = match stored.get(key.as_str()).q()? {
                    Some(bytes) => serde_json::from_slice(bytes.value())?,
                    None => BTreeSet::new(),
                };
                let diff = TagDiff {
                    added: current.difference(&before).cloned().collect(),
                    removed: before.difference(&current).cloned().collect(),
                };
                stored.insert(key.as_str(), serde_json::to_vec(&current)?.as_slice()).q()?;
                diff
            };
            remember(&tx, &memo_key, &diff, expires)?;
            tx.commit().q()?;
            Ok(diff)
        })
        .await
    }

    async fn swap_stage(
        &self,
        location: &LocationId,
        opportunity: &str,
        event_id: &EventId,
        stage: &str,
        now: Millis,
    ) -> Result<Option<String>, QueueError> {
        let key = format!("{location}\u{1f}{opportunity}");
        let memo_key = format!("stage\u{1f}{event_id}\u{1f}{key}");
        let stage = stage.to_owned();
        let expires = now.saturating_add(millis(self.dedup_ttl));
        self.blocking(move |db| {
            let tx = db.begin_write().q()?;
            let previous = {
                let memo = tx.open_table(MEMO).q()?;
                if let Some(previous) = recall::<Option<String>>(&memo, &memo_key, now)? {
                    return Ok(previous);
                }
                drop(memo);
                let mut stages = tx.open_table(STAGES).q()?;
                let previous = stages.get(key.as_str()).q()?.map(|v| v.value().to_owned());
                stages.insert(key.as_str(), stage.as_str()).q()?;
                previous
            };
            remember(&tx, &memo_key, &previous, expires)?;
            tx.commit().q()?;
            Ok(previous)
        })
        .await
    }

    async fn forget_contact(&self, contact: &ContactKey) -> Result<(), QueueError> {
        let key = contact_key(contact);
        self.blocking(move |db| {
            let tx = db.begin_write().q()?;
            tx.open_table(TAGS).q()?.remove(key.as_str()).q()?;
            tx.commit().q()?;
            Ok(())
        })
        .await
    }

    async fn known_followers(&self, contact: &ContactKey) -> Result<Vec<UserId>, QueueError> {
        let key = contact_key(contact);
        self.blocking(move |db| {
            let tx = db.begin_read().q()?;
            let known = tx.open_table(KNOWN).q()?;
            let mut users: Vec<UserId> = match known.get(key.as_str()).q()? {
                Some(bytes) => serde_json::from_slice(bytes.value())?,
                None => Vec::new(),
            };
            users.sort();
            Ok(users)
        })
        .await
    }

    async fn throttle(
        &self,
        location: &LocationId,
        limits: Limits,
        cost: u64,
        now: Millis,
    ) -> Result<Option<Millis>, QueueError> {
        let mut states = self.limiter.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let state = states.entry(location.clone()).or_default();
        match acquire(*state, limits, cost, now) {
            Ok(next) => {
                *state = next;
                Ok(None)
            }
            Err(at) => Ok(Some(at)),
        }
    }

    async fn limiter_state(&self, location: &LocationId) -> Result<Option<LimiterState>, QueueError> {
        Ok(self.limiter.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(location).copied())
    }

    async fn pause(&self, location: &LocationId, until: Millis, reason: &str) -> Result<(), QueueError> {
        let mut pauses = self.pauses.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        pauses.insert(location.clone(), (until, reason.to_owned()));
        Ok(())
    }

    async fn paused_until(&self, location: &LocationId, now: Millis) -> Result<Option<(Millis, String)>, QueueError> {
        let mut pauses = self.pauses.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match pauses.get(location) {
            Some((until, reason)) if *until > now => Ok(Some((*until, reason.clone()))),
            Some(_) => {
                pauses.remove(location);
                Ok(None)
            }
            None => Ok(None),
        }
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

    async fn audit(&self, location: Option<&LocationId>, contact: &ContactId) -> Result<Vec<AuditEntry>, QueueError> {
        let location = location.cloned();
        let contact = contact.clone();
        self.blocking(move |db| {
            let tx = db.begin_read().q()?;
            let audit = tx.open_table(AUDIT).q()?;
            let mut entries = Vec::new();
            for entry in audit.iter().q()? {
                let (key, value) = entry.q()?;
                let (contact_part, seq) = key.value();
                let matches = match &location {
                    Some(location) => {
                        contact_part
                            == contact_key(&ContactKey { location_id: location.clone(), contact_id: contact.clone() })
                    }
                    None => contact_part.rsplit_once('\u{1f}').is_some_and(|(_, c)| c == contact.as_str()),
                };
                if matches {
                    entries.push((seq, serde_json::from_slice::<AuditEntry>(value.value())?));
                }
            }
            entries.sort_by_key(|entry| std::cmp::Reverse(entry.0));
            Ok(entries.into_iter().map(|(_, entry)| entry).collect())
        })
        .await
    }

    async fn oauth_tokens(&self, location: &LocationId) -> Result<Option<OAuthTokens>, QueueError> {
        let key = location.to_string();
        self.blocking(move |db| {
            let tx = db.begin_read().q()?;
            let table = tx.open_table(OAUTH).q()?;
            let stored = table.get(key.as_str()).q()?;
            Ok(stored.map(|bytes| serde_json::from_slice(bytes.value())).transpose()?)
        })
        .await
    }

    async fn store_oauth_tokens(&self, location: &LocationId, tokens: &OAuthTokens) -> Result<(), QueueError> {
        let key = location.to_string();
        let value = serde_json::to_vec(tokens)?;
        self.blocking(move |db| {
            let tx = db.begin_write().q()?;
            tx.open_table(OAUTH).q()?.insert(key.as_str(), value.as_slice()).q()?;
            tx.commit().q()?;
            Ok(())
        })
        .await
    }

    async fn ping(&self) -> Result<(), QueueError> {
        self.blocking(|db| db.begin_read().map(drop).q()).await
    }

    async fn close(&self) {
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
