//! What the embedded queue keeps per location (sub-account): its rate budget and pause, in memory, and its
//! OAuth tokens, in the file.

use std::collections::HashMap;
use std::sync::Mutex;

use redb::{Database, ReadableDatabase};

use super::tables::{OAUTH, OrQueue};
use crate::deliver::limit::{LimiterState, Limits, acquire};
use crate::event::LocationId;
use crate::queue::{Millis, OAuthTokens, QueueError};

/// Rate limiter state per location.
pub(super) type Limiters = Mutex<HashMap<LocationId, LimiterState>>;
/// Pauses per location: until when, and why.
pub(super) type Pauses = Mutex<HashMap<LocationId, (Millis, String)>>;

/// Takes `cost` calls from the location's budget: `None` when they may go now, else when to ask again.
pub(super) fn throttle(
    limiters: &Limiters,
    location: &LocationId,
    limits: Limits,
    cost: u64,
    now: Millis,
) -> Option<Millis> {
    let mut states = limiters.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let state = states.entry(location.clone()).or_default();
    match acquire(*state, limits, cost, now) {
        Ok(next) => {
            *state = next;
            None
        }
        Err(at) => Some(at),
    }
}

/// The location's rate budget as it stands; `None` before its first call.
pub(super) fn limiter_state(limiters: &Limiters, location: &LocationId) -> Option<LimiterState> {
    limiters.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(location).copied()
}

/// Stops calls for the location until `until`.
pub(super) fn pause(pauses: &Pauses, location: &LocationId, until: Millis, reason: &str) {
    let mut pauses = pauses.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    pauses.insert(location.clone(), (until, reason.to_owned()));
}

/// When the location may be called again, and why it was paused; `None` (and the pause forgotten) once it
/// has ended.
pub(super) fn paused_until(pauses: &Pauses, location: &LocationId, now: Millis) -> Option<(Millis, String)> {
    let mut pauses = pauses.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match pauses.get(location) {
        Some((until, reason)) if *until > now => Some((*until, reason.clone())),
        Some(_) => {
            pauses.remove(location);
            None
        }
        None => None,
    }
}

/// The location's (`key`) stored OAuth tokens, if any.
pub(super) fn oauth_tokens(db: &Database, key: &str) -> Result<Option<OAuthTokens>, QueueError> {
    let tx = db.begin_read().q()?;
    let table = tx.open_table(OAUTH).q()?;
    let stored = table.get(key).q()?;
    Ok(stored.map(|bytes| serde_json::from_slice(bytes.value())).transpose()?)
}

/// Stores the location's (`key`) OAuth tokens, already encoded.
pub(super) fn store_oauth_tokens(db: &Database, key: &str, value: &[u8]) -> Result<(), QueueError> {
    let tx = db.begin_write().q()?;
    tx.open_table(OAUTH).q()?.insert(key, value).q()?;
    tx.commit().q()?;
    Ok(())
}
