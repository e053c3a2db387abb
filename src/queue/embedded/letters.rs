//! Dead letters in the embedded queue: operations set aside after a permanent failure, kept until an operator
//! replays them into their contacts' queues or purges them.

use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};

use super::lifecycle::{append_live, finish};
use super::tables::{DEAD, META, OrQueue, contact_key};
use crate::domain::clock::Millis;
use crate::domain::outcome::Outcome;
use crate::queue::{ContactKey, DeadLetter, Failure, Lease, QueueError, QueuedOp};

/// The dead letter that holds the lease's operations, failed with `failure` at `now`.
pub(super) fn letter_for(lease: &Lease, failure: &Failure, now: Millis) -> DeadLetter {
    DeadLetter {
        id: format!("0-{:016x}", rand::random::<u64>()),
        location_id: lease.contact.location_id.clone(),
        contact_id: lease.contact.contact_id.clone(),
        operations: lease.ops.clone(),
        status: failure.status,
        reason: failure.reason.clone(),
        failed_at: now,
    }
}

/// Ends the lease as dead-lettered and stores `letter`.
pub(super) fn dead_letter(
    tx: &WriteTransaction,
    lease: &Lease,
    letter: &DeadLetter,
    now: Millis,
) -> Result<(), QueueError> {
    finish(tx, lease, now, &|_| Outcome::DeadLettered(letter.reason.clone()))?;
    tx.open_table(DEAD).q()?.insert(letter.id.as_str(), serde_json::to_vec(letter)?.as_slice()).q()?;
    Ok(())
}

/// Every dead letter, oldest first.
pub(super) fn dead_letters(db: &Database) -> Result<Vec<DeadLetter>, QueueError> {
    let tx = db.begin_read().q()?;
    let dead = tx.open_table(DEAD).q()?;
    let mut letters = dead
        .iter()
        .q()?
        .map(|entry| Ok(serde_json::from_slice::<DeadLetter>(entry.q()?.1.value())?))
        .collect::<Result<Vec<_>, QueueError>>()?;
    letters.sort_by(|a, b| (a.failed_at, &a.id).cmp(&(b.failed_at, &b.id)));
    Ok(letters)
}

/// Puts the letters' operations back at the end of their contacts' queues, in their order, and deletes the
/// letters; returns how many.
pub(super) fn replay(tx: &WriteTransaction, letters: &[DeadLetter], now: Millis) -> Result<usize, QueueError> {
    let mut dead = tx.open_table(DEAD).q()?;
    let mut meta = tx.open_table(META).q()?;
    let mut seq = meta.get("seq").q()?.map(|v| v.value()).unwrap_or(0);
    for letter in letters {
        dead.remove(letter.id.as_str()).q()?;
        let key =
            contact_key(&ContactKey { location_id: letter.location_id.clone(), contact_id: letter.contact_id.clone() });
        let ops: Vec<QueuedOp> = letter
            .operations
            .iter()
            .map(|op| {
                seq += 1;
                QueuedOp { seq, ..op.clone() }
            })
            .collect();
        // Replayed operations are live work.
        append_live(tx, &key, &ops, now)?;
    }
    meta.insert("seq", seq).q()?;
    Ok(letters.len())
}

/// Deletes the letters; returns how many.
pub(super) fn purge(tx: &WriteTransaction, letters: &[DeadLetter]) -> Result<usize, QueueError> {
    {
        let mut dead = tx.open_table(DEAD).q()?;
        for letter in letters {
            dead.remove(letter.id.as_str()).q()?;
        }
    }
    Ok(letters.len())
}
