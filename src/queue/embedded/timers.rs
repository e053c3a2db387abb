//! Timed followers in the embedded queue: the removal a rule with `for` schedules when it adds someone, kept
//! until it is due and then queued for its contact like any operation.
//!
//! Two tables: `timers` (due, contact \x1e user) → the removal to queue, in due order for the firing, and
//! `timer_of` contact \x1e user → due, to find a contact's timer when a later operation cancels or moves it.
//! Most installations have no timed rule; `enqueue` looks for timers only once one was ever set
//! ([`TimerFlag`]), so they cost nothing to those who do not use them.

use std::sync::atomic::{AtomicBool, Ordering};

use redb::{ReadableTable, WriteTransaction};

use super::lifecycle::append_live;
use super::tables::{META, OrQueue, TIMER_OF, TIMERS};
use crate::domain::clock::Millis;
use crate::domain::followers::FollowerOp;
use crate::queue::{QueueError, QueuedOp};

/// Most timers fired in one call: bounds the transaction.
const MAX_FIRED: usize = 1000;

/// Whether this store may hold a timer: true once one is set (or found at open), never false again in this
/// process. Read inside the committer, so a write that sets the first timer is seen by every write after it.
#[derive(Debug, Default)]
pub(super) struct TimerFlag(AtomicBool);

impl TimerFlag {
    pub(super) fn set(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub(super) fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

fn timer_key(contact: &str, user: &str) -> String {
    format!("{contact}\u{1e}{user}")
}

/// What an operation stored for `contact` does to its timers: a timed add sets (or moves) the user's, any
/// other add or removal of that user cancels theirs, `remove_all` cancels them all.
pub(super) fn follow_up(
    tx: &WriteTransaction,
    flag: &TimerFlag,
    contact: &str,
    op: &QueuedOp,
    lasts: Option<u64>,
) -> Result<(), QueueError> {
    if lasts.is_none() && !flag.is_set() {
        return Ok(());
    }
    let mut timers = tx.open_table(TIMERS).q()?;
    let mut timer_of = tx.open_table(TIMER_OF).q()?;
    let users: Vec<String> = match &op.op {
        FollowerOp::Add(user) | FollowerOp::Remove(user) => vec![user.to_string()],
        FollowerOp::RemoveAll => {
            let prefix = timer_key(contact, "");
            timer_of
                .range(prefix.as_str()..)
                .q()?
                .map(|entry| entry.q().map(|(k, _)| k.value().to_owned()))
                .take_while(|k| k.as_ref().map_or(true, |k| k.starts_with(&prefix)))
                .map(|k| k.map(|k| k[prefix.len()..].to_owned()))
                .collect::<Result<_, _>>()?
        }
    };
    for user in &users {
        let key = timer_key(contact, user);
        if let Some(due) = timer_of.remove(key.as_str()).q()?.map(|v| v.value()) {
            timers.remove((due, key.as_str())).q()?;
        }
    }
    if let (FollowerOp::Add(user), Some(lasts)) = (&op.op, lasts) {
        flag.set();
        let key = timer_key(contact, user.as_str());
        let due = op.enqueued_at.saturating_add(lasts);
        let removal = op.timed_removal(user.clone(), lasts);
        timer_of.insert(key.as_str(), due).q()?;
        timers.insert((due, key.as_str()), serde_json::to_vec(&removal)?.as_slice()).q()?;
    }
    Ok(())
}

/// Queues every removal due at `now` for its contact (live work, after what is pending); returns how many.
pub(super) fn fire(tx: &WriteTransaction, flag: &TimerFlag, now: Millis) -> Result<usize, QueueError> {
    if !flag.is_set() {
        return Ok(0);
    }
    let due: Vec<(u64, String, Vec<u8>)> = {
        let timers = tx.open_table(TIMERS).q()?;
        timers
            .range((0, "")..=(now, "\u{10ffff}"))
            .q()?
            .take(MAX_FIRED)
            .map(|entry| entry.q().map(|(k, v)| (k.value().0, k.value().1.to_owned(), v.value().to_vec())))
            .collect::<Result<_, _>>()?
    };
    if due.is_empty() {
        return Ok(0);
    }
    let mut timers = tx.open_table(TIMERS).q()?;
    let mut timer_of = tx.open_table(TIMER_OF).q()?;
    let mut meta = tx.open_table(META).q()?;
    let mut seq = meta.get("seq").q()?.map(|v| v.value()).unwrap_or(0);
    for (at, key, removal) in &due {
        timers.remove((*at, key.as_str())).q()?;
        timer_of.remove(key.as_str()).q()?;
        let contact = key.split_once('\u{1e}').map_or(key.as_str(), |(contact, _)| contact);
        seq += 1;
        let op = QueuedOp { seq, ..serde_json::from_slice::<QueuedOp>(removal)? };
        append_live(tx, contact, &[op], now)?;
    }
    meta.insert("seq", seq).q()?;
    Ok(due.len())
}

/// Whether the file holds any timer (read at open, to set the flag).
pub(super) fn any(db: &redb::Database) -> Result<bool, QueueError> {
    use redb::{ReadableDatabase, ReadableTableMetadata};
    Ok(!db.begin_read().q()?.open_table(TIMERS).q()?.is_empty().q()?)
}
