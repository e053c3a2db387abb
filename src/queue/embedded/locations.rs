//! What the embedded store keeps per location (sub-account): its rate budget and pause, in memory
//! ([`LocationState`]), and its OAuth tokens, in the file ([`TokenStore`]).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, WriteTransaction};

use super::EmbeddedQueue;
use super::tables::{OAUTH, OrQueue};
use crate::domain::clock::Millis;
use crate::domain::rate::{LimiterState, Limits, acquire};
use crate::event::LocationId;
use crate::queue::{LocationState, Pause, QueueError};
use crate::upstream::{OAuthTokens, TokenStore, TokenStoreError};

/// Rate limiter state per location.
pub(super) type Limiters = Mutex<HashMap<LocationId, LimiterState>>;
/// Pauses per location.
pub(super) type Pauses = Mutex<HashMap<LocationId, Pause>>;

#[async_trait]
impl LocationState for EmbeddedQueue {
    async fn throttle(
        &self,
        location: &LocationId,
        limits: Limits,
        cost: u64,
        now: Millis,
    ) -> Result<Option<Millis>, QueueError> {
        Ok(throttle(&self.limiter, location, limits, cost, now))
    }

    async fn limiter_state(&self, location: &LocationId) -> Result<Option<LimiterState>, QueueError> {
        Ok(self.limiter.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(location).copied())
    }

    async fn pause(&self, location: &LocationId, until: Millis, reason: &str, now: Millis) -> Result<(), QueueError> {
        let mut pauses = self.pauses.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if until > now {
            pauses.insert(location.clone(), Pause { until, reason: reason.to_owned() });
        } else {
            pauses.remove(location);
        }
        Ok(())
    }

    async fn paused(&self, location: &LocationId, now: Millis) -> Result<Option<Pause>, QueueError> {
        Ok(paused(&self.pauses, location, now))
    }
}

#[async_trait]
impl TokenStore for EmbeddedQueue {
    async fn load_tokens(&self, location: &LocationId) -> Result<Option<OAuthTokens>, TokenStoreError> {
        let key = location.to_string();
        self.blocking(move |db| oauth_tokens(db, &key)).await.map_err(|e| TokenStoreError(Box::new(e)))
    }

    async fn save_tokens(&self, location: &LocationId, tokens: &OAuthTokens) -> Result<(), TokenStoreError> {
        let key = location.to_string();
        let value = serde_json::to_vec(tokens).map_err(|e| TokenStoreError(Box::new(e)))?;
        self.write(move |tx| store_oauth_tokens(tx, &key, &value)).await.map_err(|e| TokenStoreError(Box::new(e)))
    }
}

/// Takes `cost` calls from the location's budget: `None` when they may go now, else when to ask again.
fn throttle(limiters: &Limiters, location: &LocationId, limits: Limits, cost: u64, now: Millis) -> Option<Millis> {
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

/// The location's pause at `now`; `None` (and the pause forgotten) once it has ended.
fn paused(pauses: &Pauses, location: &LocationId, now: Millis) -> Option<Pause> {
    let mut pauses = pauses.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match pauses.get(location) {
        Some(pause) if pause.until > now => Some(pause.clone()),
        Some(_) => {
            pauses.remove(location);
            None
        }
        None => None,
    }
}

/// The location's (`key`) stored OAuth tokens, if any.
fn oauth_tokens(db: &Database, key: &str) -> Result<Option<OAuthTokens>, QueueError> {
    let tx = db.begin_read().q()?;
    let table = tx.open_table(OAUTH).q()?;
    let stored = table.get(key).q()?;
    Ok(stored.map(|bytes| serde_json::from_slice(bytes.value())).transpose()?)
}

/// Stores the location's (`key`) OAuth tokens, already encoded.
fn store_oauth_tokens(tx: &WriteTransaction, key: &str, value: &[u8]) -> Result<(), QueueError> {
    tx.open_table(OAUTH).q()?.insert(key, value).q()?;
    Ok(())
}
