//! What expires in the embedded queue, and the reap that deals with it: leases whose worker died go back to
//! the ready set, and event ids and remembered answers older than the de-duplication window are forgotten.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::tables::{CONTACTS, LEASES, MEMO, MEMO_EXPIRY, OrQueue, READY, SEEN, SEEN_EXPIRY, read_state, write_state};
use crate::domain::clock::Millis;
use crate::queue::QueueError;

/// Most expired event ids forgotten per reap, so one reap never holds the write lock for long.
const MAX_SWEEP: usize = 10_000;

/// Returns expired leases to the ready set and forgets expired event ids and answers, in one transaction.
/// Returns the leases reaped.
pub(super) fn reap(tx: &WriteTransaction, now: Millis) -> Result<usize, QueueError> {
    let reaped = return_leases(tx, now, now)?;
    sweep(tx, SEEN, SEEN_EXPIRY, now)?;
    sweep(tx, MEMO, MEMO_EXPIRY, now)?;
    Ok(reaped)
}

/// Returns every lease to the ready set at `now`, whatever its deadline. For the process that has just opened
/// the file: one process owns it, so a lease found there belonged to a predecessor that died, and its contact
/// must go out now rather than after `queue.lease`.
pub(super) fn release_all(tx: &WriteTransaction, now: Millis) -> Result<usize, QueueError> {
    let released = return_leases(tx, Millis::MAX, now)?;
    Ok(released)
}

/// Makes the contacts of leases whose deadline is at or before `up_to` ready at `now`; returns how many.
fn return_leases(tx: &WriteTransaction, up_to: Millis, now: Millis) -> Result<usize, QueueError> {
    let mut leases = tx.open_table(LEASES).q()?;
    let mut contacts = tx.open_table(CONTACTS).q()?;
    let mut ready = tx.open_table(READY).q()?;
    let mut returned = 0;
    for (deadline, key) in due(&leases, up_to, usize::MAX)? {
        leases.remove((deadline, key.as_str())).q()?;
        let mut state = read_state(&contacts, &key)?.unwrap_or_default();
        state.lease = None;
        let at = crate::queue::ready_score(now, state.background);
        state.ready_at = Some(at);
        ready.insert((at, key.as_str()), ()).q()?;
        write_state(&mut contacts, &key, &state)?;
        returned += 1;
    }
    Ok(returned)
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
