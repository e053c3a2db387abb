//! What the embedded queue remembers between events: each contact's last seen tags, each opportunity's last
//! seen stage, the followers followd itself added, and the answer each state-changing call gave to an event
//! (so a sender's retry of that event gets the same answer).

use std::collections::BTreeSet;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};
use serde::Serialize;

use super::EmbeddedQueue;
use super::tables::{KNOWN, MEMO, MEMO_EXPIRY, OrQueue, STAGES, STATE_TIMES, TAGS, contact_key};
use crate::domain::clock::{Millis, millis};
use crate::event::{ContactKey, EventId, LocationId, UserId};
use crate::queue::memory::tag_set;
use crate::queue::{Applied, ContactMemory, QueueError, TagDiff};

#[async_trait]
impl ContactMemory for EmbeddedQueue {
    async fn diff_tags(
        &self,
        contact: &ContactKey,
        event_id: &EventId,
        tags: Option<&[String]>,
        at: Option<Millis>,
        now: Millis,
    ) -> Result<TagDiff, QueueError> {
        let key = contact_key(contact);
        let memo_key = format!("tags\u{1f}{event_id}\u{1f}{key}");
        let current = tags.map(tag_set);
        let expires = now.saturating_add(millis(self.dedup_ttl));
        self.write(move |tx| diff_tags(tx, &key, &memo_key, current.as_ref(), at, now, expires)).await
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
        self.write(move |tx| swap_stage(tx, &key, &memo_key, &stage, now, expires)).await
    }

    async fn forget_contact(&self, contact: &ContactKey) -> Result<(), QueueError> {
        let key = contact_key(contact);
        self.write(move |tx| forget_contact(tx, &key)).await
    }

    async fn known_followers(&self, contact: &ContactKey) -> Result<Vec<UserId>, QueueError> {
        let key = contact_key(contact);
        self.blocking(move |db| known_followers(db, &key)).await
    }
}

/// Applies a whole-state payload to the contact (`key`), as [`ContactMemory::diff_tags`] says: stale when `at`
/// is older than the time stored, else the time stored and (with `current`) the tags replaced and the
/// difference returned. The answer given to the same event (`memo_key`) is remembered until `expires`.
fn diff_tags(
    tx: &WriteTransaction,
    key: &str,
    memo_key: &str,
    current: Option<&BTreeSet<String>>,
    at: Option<Millis>,
    now: Millis,
    expires: Millis,
) -> Result<TagDiff, QueueError> {
    let diff = {
        let memo = tx.open_table(MEMO).q()?;
        if let Some(diff) = recall::<TagDiff>(&memo, memo_key, now)? {
            return Ok(diff);
        }
        drop(memo);
        let mut times = tx.open_table(STATE_TIMES).q()?;
        let last = times.get(key).q()?.map(|v| v.value());
        if let (Some(at), Some(last)) = (at, last)
            && at < last
        {
            TagDiff { stale: true, ..TagDiff::default() }
        } else {
            if let Some(at) = at {
                times.insert(key, at).q()?;
            }
            match current {
                None => TagDiff::default(),
                Some(current) => {
                    let mut stored = tx.open_table(TAGS).q()?;
                    let before: BTreeSet<String> = match stored.get(key).q()? {
                        Some(bytes) => serde_json::from_slice(bytes.value())?,
                        None => BTreeSet::new(),
                    };
                    stored.insert(key, serde_json::to_vec(current)?.as_slice()).q()?;
                    TagDiff {
                        added: current.difference(&before).cloned().collect(),
                        removed: before.difference(current).cloned().collect(),
                        stale: false,
                    }
                }
            }
        }
    };
    remember(tx, memo_key, &diff, expires)?;
    Ok(diff)
}

/// Stores `stage` as the opportunity's (`key`) stage and returns the previous one, or the answer already given
/// to the same event (`memo_key`); that answer is remembered until `expires`.
fn swap_stage(
    tx: &WriteTransaction,
    key: &str,
    memo_key: &str,
    stage: &str,
    now: Millis,
    expires: Millis,
) -> Result<Option<String>, QueueError> {
    let previous = {
        let memo = tx.open_table(MEMO).q()?;
        if let Some(previous) = recall::<Option<String>>(&memo, memo_key, now)? {
            return Ok(previous);
        }
        drop(memo);
        let mut stages = tx.open_table(STAGES).q()?;
        let previous = stages.get(key).q()?.map(|v| v.value().to_owned());
        stages.insert(key, stage).q()?;
        previous
    };
    remember(tx, memo_key, &previous, expires)?;
    Ok(previous)
}

/// Forgets the contact's stored tags and the time of its last whole-state payload.
fn forget_contact(tx: &WriteTransaction, key: &str) -> Result<(), QueueError> {
    tx.open_table(TAGS).q()?.remove(key).q()?;
    tx.open_table(STATE_TIMES).q()?.remove(key).q()?;
    Ok(())
}

/// The followers followd added to the contact and has not removed since, oldest first.
fn known_followers(db: &Database, key: &str) -> Result<Vec<UserId>, QueueError> {
    let tx = db.begin_read().q()?;
    let known = tx.open_table(KNOWN).q()?;
    // Stored oldest first, in the order the acks added them.
    Ok(match known.get(key).q()? {
        Some(bytes) => serde_json::from_slice(bytes.value())?,
        None => Vec::new(),
    })
}

/// Updates the contact's known followers with what a delivery `applied` (nothing, in a dry run).
pub(super) fn note_followers(tx: &WriteTransaction, key: &str, applied: &Applied) -> Result<(), QueueError> {
    if applied.dry_run {
        return Ok(());
    }
    let mut known = tx.open_table(KNOWN).q()?;
    let mut followers: Vec<UserId> = match known.get(key).q()? {
        Some(bytes) => serde_json::from_slice(bytes.value())?,
        None => Vec::new(),
    };
    if applied.removed_all {
        followers.clear();
    }
    if let Some(seen) = &applied.seen {
        followers.retain(|u| seen.contains(u));
    }
    followers.retain(|u| !applied.removed.contains(u));
    for user in &applied.added {
        if !followers.contains(user) {
            followers.push(user.clone());
        }
    }
    if followers.is_empty() {
        known.remove(key).q()?;
    } else {
        known.insert(key, serde_json::to_vec(&followers)?.as_slice()).q()?;
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

fn remember<T: Serialize>(tx: &WriteTransaction, key: &str, answer: &T, expires: Millis) -> Result<(), QueueError> {
    tx.open_table(MEMO).q()?.insert(key, serde_json::to_vec(&(expires, answer))?.as_slice()).q()?;
    tx.open_table(MEMO_EXPIRY).q()?.insert((expires, key), ()).q()?;
    Ok(())
}
