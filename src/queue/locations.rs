//! What the store keeps per location (sub-account) for delivery: its rate budget, shared by every process
//! that uses the store, and whether it is paused (a 429, a refused token).

use async_trait::async_trait;

use super::QueueError;
use crate::domain::clock::Millis;
use crate::domain::rate::{LimiterState, Limits};
use crate::event::LocationId;

/// A location's pause: until when, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    pub until: Millis,
    pub reason: String,
}

/// A location's budget and pause. Redis shares them among every process; the embedded store keeps them in
/// process (one process owns it; a restart starts a fresh window, at worst one window's calls early).
#[async_trait]
pub trait LocationState: Send + Sync + 'static {
    /// Takes `cost` calls from the location's rate budget: `None` when they may go now (they are reserved),
    /// else when to ask again.
    async fn throttle(
        &self,
        location: &LocationId,
        limits: Limits,
        cost: u64,
        now: Millis,
    ) -> Result<Option<Millis>, QueueError>;

    /// The location's rate budget as it stands (for the status page); `None` before its first call.
    async fn limiter_state(&self, location: &LocationId) -> Result<Option<LimiterState>, QueueError>;

    /// Stops calls for a location until `until`, for every process. A pause that ends at or before `now`
    /// lifts one.
    async fn pause(&self, location: &LocationId, until: Millis, reason: &str, now: Millis) -> Result<(), QueueError>;

    /// The location's pause, when it is paused at `now`.
    async fn paused(&self, location: &LocationId, now: Millis) -> Result<Option<Pause>, QueueError>;
}
