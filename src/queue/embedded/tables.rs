//! The embedded queue's storage layout: its redb tables, the records and keys stored in them, and the small
//! helpers every concern uses to read and write them.
//!
//! Tables (contact keys are `location \x1f contact`; ids cannot hold control characters, so this is unambiguous):
//! - `pending`  (contact, seq) → operation: each contact's operations in enqueue order
//! - `contacts` contact → state: when it is ready, or which lease holds it, and its failed attempts
//! - `ready`    (ready_at, contact) → (): contacts waiting, oldest first; a retry is scheduled in the future;
//!   background contacts (a reconcile's) wait at their time plus `BACKGROUND_OFFSET`, after every live one
//! - `leases`   (deadline, contact) → (): held contacts, earliest deadline first, for the reaper
//! - `seen`     event id → expiry; `seen_expiry` (expiry, event id) → () to forget old ids in order
//! - `rotations` rule \x1f location → a round robin's standings ([`crate::domain::pick::Standings`], JSON)
//! - `known`    contact → followers followd added (the `remove_all` fallback)
//! - `meta`     "seq" → the last operation sequence number
//! - `tags`     contact → its last seen tags; `stages` location \x1f opportunity → its last seen stage
//! - `state_times` contact → the time (ms) of the last whole-state payload applied, to refuse older ones
//! - `reconcile_runs` run id → the run's record (cursor, counts, state)
//! - `audit`    (contact, seq) → what a delivery did, the newest [`crate::queue::AUDIT_PER_CONTACT`] per contact
//! - `oauth`    location → its OAuth tokens (the refresh token rotates)
//! - `dead`     dead letter id → the dead letter, operations included
//! - `memo`     kind \x1f event id \x1f subject → the answer given (`memo_expiry` to forget it in time)
//! - `timers`   (due, contact \x1e user) → a timed follower's removal; `timer_of` contact \x1e user → due
//! - `covers`   user \x1e by → a running cover and the contacts it covers

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::domain::clock::Millis;
use crate::event::{ContactId, LocationId};
use crate::queue::{ContactKey, QueueError};

pub(super) const PENDING: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("pending");
pub(super) const CONTACTS: TableDefinition<&str, &[u8]> = TableDefinition::new("contacts");
pub(super) const READY: TableDefinition<(u64, &str), ()> = TableDefinition::new("ready");
pub(super) const LEASES: TableDefinition<(u64, &str), ()> = TableDefinition::new("leases");
pub(super) const SEEN: TableDefinition<&str, u64> = TableDefinition::new("seen");
pub(super) const SEEN_EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("seen_expiry");
pub(super) const ROTATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("rotations");
pub(super) const KNOWN: TableDefinition<&str, &[u8]> = TableDefinition::new("known");
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(super) const TAGS: TableDefinition<&str, &[u8]> = TableDefinition::new("tags");
pub(super) const STATE_TIMES: TableDefinition<&str, u64> = TableDefinition::new("state_times");
pub(super) const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("reconcile_runs");
pub(super) const STAGES: TableDefinition<&str, &str> = TableDefinition::new("stages");
pub(super) const MEMO: TableDefinition<&str, &[u8]> = TableDefinition::new("memo");
pub(super) const MEMO_EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("memo_expiry");
pub(super) const DEAD: TableDefinition<&str, &[u8]> = TableDefinition::new("dead");
pub(super) const OAUTH: TableDefinition<&str, &[u8]> = TableDefinition::new("oauth");
pub(super) const AUDIT: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("audit");
pub(super) const TIMERS: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("timers");
pub(super) const TIMER_OF: TableDefinition<&str, u64> = TableDefinition::new("timer_of");
pub(super) const COVERS: TableDefinition<&str, &[u8]> = TableDefinition::new("covers");
pub(super) const DELETED_USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("deleted_users");

/// Creates every table that does not exist yet, in one committed transaction.
pub(super) fn create_all(db: &Database) -> Result<(), QueueError> {
    // Create every table up front so read transactions never meet a missing one.
    let tx = db.begin_write().map_err(redb::Error::from)?;
    {
        tx.open_table(PENDING).map_err(redb::Error::from)?;
        tx.open_table(CONTACTS).map_err(redb::Error::from)?;
        tx.open_table(READY).map_err(redb::Error::from)?;
        tx.open_table(LEASES).map_err(redb::Error::from)?;
        tx.open_table(SEEN).map_err(redb::Error::from)?;
        tx.open_table(SEEN_EXPIRY).map_err(redb::Error::from)?;
        tx.open_table(ROTATIONS).map_err(redb::Error::from)?;
        tx.open_table(KNOWN).map_err(redb::Error::from)?;
        tx.open_table(META).map_err(redb::Error::from)?;
        tx.open_table(TAGS).map_err(redb::Error::from)?;
        tx.open_table(STATE_TIMES).map_err(redb::Error::from)?;
        tx.open_table(RUNS).map_err(redb::Error::from)?;
        tx.open_table(STAGES).map_err(redb::Error::from)?;
        tx.open_table(MEMO).map_err(redb::Error::from)?;
        tx.open_table(MEMO_EXPIRY).map_err(redb::Error::from)?;
        tx.open_table(DEAD).map_err(redb::Error::from)?;
        tx.open_table(OAUTH).map_err(redb::Error::from)?;
        tx.open_table(AUDIT).map_err(redb::Error::from)?;
        tx.open_table(TIMERS).map_err(redb::Error::from)?;
        tx.open_table(TIMER_OF).map_err(redb::Error::from)?;
        tx.open_table(COVERS).map_err(redb::Error::from)?;
        tx.open_table(DELETED_USERS).map_err(redb::Error::from)?;
    }
    tx.commit().map_err(redb::Error::from)?;
    Ok(())
}

/// What the queue knows about a contact that has pending operations.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct ContactState {
    /// Set while the contact waits in `ready`.
    pub(super) ready_at: Option<Millis>,
    /// Set while a worker holds it.
    pub(super) lease: Option<LeaseState>,
    pub(super) attempts: u32,
    /// Every pending operation is background work (a reconcile): the contact waits in the background lane
    /// (`ready_at` includes [`crate::queue::BACKGROUND_OFFSET`]).
    #[serde(default)]
    pub(super) background: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct LeaseState {
    pub(super) id: u64,
    pub(super) deadline: Millis,
}

pub(super) fn contact_key(key: &ContactKey) -> String {
    format!("{}\u{1f}{}", key.location_id, key.contact_id)
}

pub(super) fn parse_contact_key(raw: &str) -> Result<ContactKey, QueueError> {
    let corrupt = || QueueError::Corrupt(serde::de::Error::custom(format!("bad contact key {raw:?}")));
    let (location, contact) = raw.split_once('\u{1f}').ok_or_else(corrupt)?;
    Ok(ContactKey {
        location_id: LocationId::parse(location).map_err(|_| corrupt())?,
        contact_id: ContactId::parse(contact).map_err(|_| corrupt())?,
    })
}

/// Shorthand: every redb error type converts into `redb::Error`, and that into `QueueError`.
pub(super) trait OrQueue<T> {
    fn q(self) -> Result<T, QueueError>;
}

impl<T, E: Into<redb::Error>> OrQueue<T> for Result<T, E> {
    fn q(self) -> Result<T, QueueError> {
        self.map_err(|e| QueueError::Embedded(e.into()))
    }
}

pub(super) fn read_state(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<ContactState>, QueueError> {
    match table.get(key).q()? {
        Some(bytes) => Ok(Some(serde_json::from_slice(bytes.value())?)),
        None => Ok(None),
    }
}

pub(super) fn write_state(
    table: &mut redb::Table<&str, &[u8]>,
    key: &str,
    state: &ContactState,
) -> Result<(), QueueError> {
    table.insert(key, serde_json::to_vec(state)?.as_slice()).q()?;
    Ok(())
}
