//! Time as the store and the delivery logic see it: milliseconds since the Unix epoch, always passed in.
//!
//! Nothing below the edges reads the clock: the queue, the limiter maths and the retry policy take `now` as an
//! argument, so tests choose it instead of waiting. Only the drivers (workers, handlers, commands) call
//! [`now_ms`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type Millis = u64;

/// The current time in [`Millis`], for callers at the edge (workers, handlers, commands).
pub fn now_ms() -> Millis {
    millis(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default())
}

/// A duration in milliseconds, saturating (a configured "forever" must not wrap).
pub fn millis(duration: Duration) -> Millis {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A payload's time in [`Millis`] (none before 1970).
pub fn epoch_ms(at: chrono::DateTime<chrono::Utc>) -> Millis {
    millis(at.signed_duration_since(chrono::DateTime::UNIX_EPOCH).to_std().unwrap_or_default())
}
