//! What expires in the embedded queue, and the reap that deals with it: leases whose worker died go back to
//! the ready set, and event ids and remembered answers older than the de-duplication window are forgotten.

use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};

use super::tables::{CONTACTS, LEASES, MEMO, MEMO_EXPIRY, OrQueue, READY, SEEN, SEEN_EXPIRY, read_state, write_state};
use crate::domain::clock::Millis;
use crate::queue::QueueError;

/// Most expired event ids forgotten per reap, so one reap never holds the write lock for long.
const MAX_SWEEP: usize = 10_000;

/// Returns expired leases to the ready set and forgets expired event ids and answers, in one transaction.
/// Returns the leases reaped.
pub(super) fn reap(db: &Database, now: Millis) -> Result<usize, QueueError> {
    let tx = db.begin_write().q()?;
    let mut reaped = 0;
    {
        let mut leases = tx.open_table(LEASES).q()?;
        let mut contacts = tx.open_table(CONTACTS).q()?;
        let mut ready = tx.open_table(READY).q()?;
        for (deadline, key) in due(&leases, now, usize::MAX)? {
            leases.remove((deadline, key.as_str())).q()?;
            let mut state = read_state(&contacts, &key)?.unwrap_or_default();
            state.lease = None;
            state.ready_at = Some(now);
            ready.insert((now, key.as_str()), ()).q()?;
            write_state(&mut contacts, &key, &state)?;
            reaped += 1;
        }
    }
    sweep(&tx, SEEN, SEEN_EXPIRY, now)?;
    sweep(&tx, MEMO, MEMO_EXPIRY, now)?;
    tx.commit().q()?;
    Ok(reaped)
}

/// The first `most` entries of a `(time, key)` index whose time is at or before `now`, oldest first.
fn due(
    index: &impl ReadableTable<(u64, &'static str), ()>,
    now: Millis,
    most: usize,
) -> Result<Vec<(u64, String)>, QueueError> {
    index
        .range((0, "")..=(now, "\u{10ffff}"))
        .q()?
        .take(most)
        .map(|entry| entry.q().map(|(k, _)| (k.value().0, k.value().1.to_owned())))
        .collect()
}

/// Forgets the entries of `table` whose expiry in `expiry` (`(expiry, key)` → ()) has passed at `now`, at most
/// [`MAX_SWEEP`] of them.
fn sweep<V: redb::Value + 'static>(
    tx: &WriteTransaction,
    table: TableDefinition<&'static str, V>,
    expiry: TableDefinition<(u64, &'static str), ()>,
    now: Millis,
) -> Result<(), QueueError> {
    let mut table = tx.open_table(table).q()?;
    let mut expiry = tx.open_table(expiry).q()?;
    for (at, key) in due(&expiry, now, MAX_SWEEP)? {
        expiry.remove((at, key.as_str())).q()?;
        table.remove(key.as_str()).q()?;
    }
    Ok(())
}
