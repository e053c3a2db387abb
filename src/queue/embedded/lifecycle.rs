//! The life of a contact in the embedded queue: its operations are enqueued (once per event id), it is leased
//! by one worker, and the lease ends in an ack, a retry or (see `letters.rs`) a dead letter. Expired leases are
//! reaped in `expiry.rs`. Each function runs inside a write transaction it is given (the committer's batch, see
//! `commit.rs`); one that fails may have written part of its changes, and the committer rolls them back.

use redb::{ReadableTable, WriteTransaction};

use super::audit::record_audit;
use super::memory::note_followers;
use super::tables::{
    CONTACTS, ContactState, DEAD, LEASES, LeaseState, META, OrQueue, PENDING, READY, ROTATIONS, SEEN, SEEN_EXPIRY,
    contact_key, parse_contact_key, read_state, write_state,
};
use super::timers::{TimerFlag, follow_up};
use crate::domain::clock::Millis;
use crate::domain::followers::FollowerOp;
use crate::domain::outcome::Outcome;
use crate::domain::pick::Standings;
use crate::domain::rotation::Turn;
use crate::event::UserId;
use crate::queue::{
    Applied, BACKGROUND_OFFSET, DeadLetter, EnqueueOutcome, EventOps, Lease, LeaseOutcome, QueueError, QueuedOp,
    ready_score,
};

/// Most operations handed out in one lease: bounds a worker's batch and the transaction that builds it.
const MAX_LEASE_OPS: usize = 1000;

/// The tables an enqueue writes, opened once for a run of enqueues in one batch (see `commit.rs`): opening
/// them was a fifth of a plain enqueue's time.
pub(super) struct EnqueueTables<'t> {
    seen: redb::Table<'t, &'static str, u64>,
    seen_expiry: redb::Table<'t, (u64, &'static str), ()>,
    pending: redb::Table<'t, (&'static str, u64), &'static [u8]>,
    contacts: redb::Table<'t, &'static str, &'static [u8]>,
    ready: redb::Table<'t, (u64, &'static str), ()>,
    meta: redb::Table<'t, &'static str, u64>,
    /// Opened only for a round robin.
    rotations: Option<redb::Table<'t, &'static str, &'static [u8]>>,
}

impl<'t> EnqueueTables<'t> {
    pub(super) fn open(tx: &'t WriteTransaction) -> Result<Self, QueueError> {
        Ok(Self {
            seen: tx.open_table(SEEN).q()?,
            seen_expiry: tx.open_table(SEEN_EXPIRY).q()?,
            pending: tx.open_table(PENDING).q()?,
            contacts: tx.open_table(CONTACTS).q()?,
            ready: tx.open_table(READY).q()?,
            meta: tx.open_table(META).q()?,
            rotations: None,
        })
    }
}

/// Stores the operations of each event whose id is not remembered at `now`, as
/// [`crate::queue::Queue::enqueue`] describes; the ids accepted are remembered until `expires`.
pub(super) fn enqueue(
    tx: &WriteTransaction,
    batch: &[EventOps],
    now: Millis,
    expires: Millis,
    timers: &TimerFlag,
) -> Result<EnqueueOutcome, QueueError> {
    enqueue_into(tx, &mut EnqueueTables::open(tx)?, batch, now, expires, timers)
}

/// [`enqueue`] with the tables already open.
pub(super) fn enqueue_into<'t>(
    tx: &'t WriteTransaction,
    tables: &mut EnqueueTables<'t>,
    batch: &[EventOps],
    now: Millis,
    expires: Millis,
    timers: &TimerFlag,
) -> Result<EnqueueOutcome, QueueError> {
    let mut outcome = EnqueueOutcome::default();
    {
        let EnqueueTables { seen, seen_expiry, pending, contacts, ready, meta, rotations } = tables;
        let mut seq = meta.get("seq").q()?.map(|v| v.value()).unwrap_or(0);
        for event in batch {
            let id = event.event_id.as_str();
            let previous = seen.get(id).q()?.map(|v| v.value());
            if previous.is_some_and(|expiry| expiry > now) {
                outcome.duplicates.push(event.event_id.clone());
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
                let (op, note, turn) = match planned.action.rotation() {
                    // A round robin takes its turn from its standings, kept per rule and location, in this
                    // transaction.
                    Some(rotation) => {
                        let name = rotation.key(&event.contact.location_id);
                        let rotations = match rotations {
                            Some(table) => table,
                            None => rotations.insert(tx.open_table(ROTATIONS).q()?),
                        };
                        let mut standings: Standings = match rotations.get(name.as_str()).q()? {
                            Some(bytes) => serde_json::from_slice(bytes.value())?,
                            None => Standings::default(),
                        };
                        let Some(turn) = rotation.turn(&mut standings, now) else { continue };
                        let note = turn.note(rotation);
                        match turn {
                            Turn::Picked { user, .. } => {
                                rotations.insert(name.as_str(), serde_json::to_vec(&standings)?.as_slice()).q()?;
                                (FollowerOp::Add(user), note, true)
                            }
                            Turn::Overflow(user) => (FollowerOp::Add(user), note, false),
                            Turn::Refused { anyway } => {
                                let op = QueuedOp {
                                    seq: 1,
                                    ..planned.stored(&event.event_id, FollowerOp::Add(anyway), now, note, false)
                                };
                                let letter = refused_letter(&event.contact, op, rotation.refusal(), now);
                                tx.open_table(DEAD)
                                    .q()?
                                    .insert(letter.id.as_str(), serde_json::to_vec(&letter)?.as_slice())
                                    .q()?;
                                continue;
                            }
                        }
                    }
                    None => match planned.action.resolve() {
                        Some(op) => (op, None, false),
                        None => continue,
                    },
                };
                seq += 1;
                let queued = QueuedOp { seq, ..planned.stored(&event.event_id, op, now, note, turn) };
                pending.insert((key.as_str(), seq), serde_json::to_vec(&queued)?.as_slice()).q()?;
                follow_up(tx, timers, &key, &queued, planned.lasts)?;
                stored += 1;
            }
            if stored > 0 {
                let existing = read_state(contacts, &key)?;
                let new_contact = existing.is_none();
                let mut state = existing.unwrap_or_default();
                let mut changed = false;
                if event.background {
                    // Background only while every pending operation is.
                    if new_contact {
                        state.background = true;
                        changed = true;
                    }
                } else {
                    changed |= make_live(ready, &mut state, &key)?;
                }
                // A leased contact becomes ready again at its ack; a ready one keeps its place.
                if state.lease.is_none() && state.ready_at.is_none() {
                    let at = ready_score(now, state.background);
                    state.ready_at = Some(at);
                    ready.insert((at, key.as_str()), ()).q()?;
                    changed = true;
                }
                if changed {
                    write_state(contacts, &key, &state)?;
                }
            }
            outcome.operations += stored;
            outcome.accepted.push(event.event_id.clone());
        }
        meta.insert("seq", seq).q()?;
    }
    Ok(outcome)
}

/// The dead letter for a round robin's turn refused at `now` because every member was at their cap: it holds
/// the operation a replay performs (over the cap, by an operator's choice).
fn refused_letter(contact: &crate::queue::ContactKey, op: QueuedOp, reason: String, now: Millis) -> DeadLetter {
    DeadLetter {
        id: format!("0-{:016x}", rand::random::<u64>()),
        location_id: contact.location_id.clone(),
        contact_id: contact.contact_id.clone(),
        operations: vec![op],
        status: None,
        reason,
        failed_at: now,
    }
}

/// Gives back a round robin's turn (see [`crate::domain::pick::refund`]) in the standings stored under `key`.
pub(super) fn refund_turn(
    tx: &WriteTransaction,
    key: &str,
    user: &UserId,
    picked_at: Millis,
) -> Result<(), QueueError> {
    let mut rotations = tx.open_table(ROTATIONS).q()?;
    let Some(mut standings) =
        rotations.get(key).q()?.map(|bytes| serde_json::from_slice::<Standings>(bytes.value())).transpose()?
    else {
        return Ok(());
    };
    crate::domain::pick::refund(&mut standings, user, crate::domain::pick::When::at(picked_at));
    rotations.insert(key, serde_json::to_vec(&standings)?.as_slice()).q()?;
    Ok(())
}

/// Appends `ops` (their seqs already given) to `contact`'s pending operations as live work, making the contact
/// ready at `now` unless it is leased or already waiting (a replay, a timer coming due).
pub(super) fn append_live(tx: &WriteTransaction, key: &str, ops: &[QueuedOp], now: Millis) -> Result<(), QueueError> {
    let mut pending = tx.open_table(PENDING).q()?;
    let mut contacts = tx.open_table(CONTACTS).q()?;
    let mut ready = tx.open_table(READY).q()?;
    for op in ops {
        pending.insert((key, op.seq), serde_json::to_vec(op)?.as_slice()).q()?;
    }
    let mut state = read_state(&contacts, key)?.unwrap_or_default();
    let mut changed = make_live(&mut ready, &mut state, key)?;
    if state.lease.is_none() && state.ready_at.is_none() {
        state.ready_at = Some(now);
        ready.insert((now, key), ()).q()?;
        changed = true;
    }
    if changed {
        write_state(&mut contacts, key, &state)?;
    }
    Ok(())
}

/// Live work arrived for a contact that only had background work: it moves to the live lane, keeping its time.
/// Returns whether the state changed.
pub(super) fn make_live(
    ready: &mut redb::Table<(u64, &str), ()>,
    state: &mut ContactState,
    key: &str,
) -> Result<bool, QueueError> {
    if !state.background {
        return Ok(false);
    }
    state.background = false;
    if let Some(at) = state.ready_at.filter(|at| *at >= BACKGROUND_OFFSET) {
        ready.remove((at, key)).q()?;
        ready.insert((at - BACKGROUND_OFFSET, key), ()).q()?;
        state.ready_at = Some(at - BACKGROUND_OFFSET);
    }
    Ok(true)
}

/// Leases the contact ready longest, if it is ready at `now`, as lease `id` for `lease_for` milliseconds.
pub(super) fn lease(tx: &WriteTransaction, now: Millis, lease_for: u64, id: u64) -> Result<LeaseOutcome, QueueError> {
    let leased = {
        let mut ready = tx.open_table(READY).q()?;
        let entry = |k: redb::AccessGuard<'_, (u64, &str)>| {
            let (at, key) = k.value();
            (at, key.to_owned())
        };
        // Live contacts first: a background one is leased only when no live one is ready now.
        let live = ready.first().q()?.map(|(k, _)| entry(k)).filter(|(at, _)| *at < BACKGROUND_OFFSET);
        let background = ready.range((BACKGROUND_OFFSET, "")..).q()?.next().transpose().q()?.map(|(k, _)| entry(k));
        let due = match (&live, &background) {
            (Some((at, _)), _) if *at <= now => live.clone(),
            (_, Some((at, _))) if at - BACKGROUND_OFFSET <= now => background.clone(),
            _ => None,
        };
        let Some((ready_at, key)) = due else {
            let next_at =
                [live.map(|(at, _)| at), background.map(|(at, _)| at - BACKGROUND_OFFSET)].into_iter().flatten().min();
            return Ok(LeaseOutcome::Empty { next_at });
        };
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
    Ok(match leased {
        Some(lease) => LeaseOutcome::Leased(lease),
        // The entry was stale; the caller asks again at once.
        None => LeaseOutcome::Empty { next_at: Some(now) },
    })
}

/// Ends the lease as delivered and remembers the followers the delivery changed.
pub(super) fn ack(tx: &WriteTransaction, lease: &Lease, applied: &Applied, now: Millis) -> Result<(), QueueError> {
    finish(tx, lease, now, &|op| applied.outcome_of(op))?;
    note_followers(tx, &contact_key(&lease.contact), applied)?;
    Ok(())
}

/// Gives the lease back: its operations stay in front, and the contact is ready again at `retry_at`.
pub(super) fn retry(tx: &WriteTransaction, lease: &Lease, retry_at: Millis) -> Result<(), QueueError> {
    let key = contact_key(&lease.contact);
    {
        let mut contacts = tx.open_table(CONTACTS).q()?;
        let mut state = held(&contacts, &key, lease)?;
        if let Some(l) = state.lease.take() {
            tx.open_table(LEASES).q()?.remove((l.deadline, key.as_str())).q()?;
        }
        let at = ready_score(retry_at, state.background);
        state.ready_at = Some(at);
        state.attempts = state.attempts.saturating_add(1);
        tx.open_table(READY).q()?.insert((at, key.as_str()), ()).q()?;
        write_state(&mut contacts, &key, &state)?;
    }
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
pub(super) fn finish(
    tx: &WriteTransaction,
    lease: &Lease,
    now: Millis,
    result: &dyn Fn(&QueuedOp) -> Outcome,
) -> Result<(), QueueError> {
    let key = contact_key(&lease.contact);
    let key = key.as_str();
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
        let at = ready_score(now, state.background);
        tx.open_table(READY).q()?.insert((at, key), ()).q()?;
        let next = ContactState { ready_at: Some(at), lease: None, attempts: 0, background: state.background };
        write_state(&mut contacts, key, &next)?;
    } else {
        contacts.remove(key).q()?;
    }
    Ok(())
}
