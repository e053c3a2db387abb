//! The spool's forwarder: replays spooled webhooks into the queue, oldest first, once the queue answers.
//!
//! One task per receiver. It takes the oldest entry, runs the rest of the intake for it ([`Intake::forward`]:
//! parse, names, memory, rules, enqueue, at the time the webhook arrived), and removes it only after the queue
//! took it, so a crash in between forwards it again and the queue answers "duplicate". While the queue is
//! unreachable it waits, doubling from 100 ms to 2 s, so it notices the queue's return within 2 s. An entry
//! that can no longer be admitted (its source was removed from the configuration, or a new version cannot
//! parse it) is logged with its body's size and dropped, counted in `followd_spool_dropped_total`: holding
//! it would stop every webhook behind it.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Accepted, Intake, IntakeError};
use crate::spool::Spooled;

/// The first wait after the queue refused an entry, doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl Intake {
    /// The rest of the intake for a spooled webhook, as if it had just arrived at `entry.received_at`.
    pub async fn forward(&self, entry: &Spooled) -> Result<Accepted, IntakeError> {
        let source = self.source(&entry.source).ok_or_else(|| IntakeError::UnknownSource(entry.source.clone()))?;
        let parsed = source.format.parse(&entry.body)?;
        self.admit(source, parsed, entry.received_at).await
    }
}

/// Forwards the intake's spool until `stop`; returns at once without a spool. What is left stays on disk for
/// the next start.
pub async fn forward_spool(intake: Arc<Intake>, stop: CancellationToken) {
    let Some(spool) = intake.spool().map(Arc::clone) else { return };
    if !spool.is_empty() {
        tracing::info!(waiting = spool.len(), path = %spool.path().display(), "forwarding the spool to the queue");
    }
    let mut backoff = MIN_BACKOFF;
    let mut refused_since_forwarded = 0u64;
    loop {
        let entry = match spool.oldest().await {
            Ok(Some(entry)) => entry,
            Ok(None) => {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = spool.pushed() => continue,
                }
            }
            Err(error) => {
                tracing::error!(%error, "cannot read the spool");
                if wait(&stop, &mut backoff).await { continue } else { return }
            }
        };
        match intake.forward(&entry).await {
            Ok(accepted) => {
                tracing::debug!(seq = entry.seq, ?accepted, "forwarded a spooled webhook");
                metrics::counter!("followd_spool_forwarded_total").increment(1);
            }
            Err(error @ (IntakeError::Queue(_) | IntakeError::QueueTimeout(_))) => {
                if refused_since_forwarded == 0 {
                    tracing::warn!(%error, waiting = spool.len(), "the queue is still unavailable; the spool waits");
                }
                refused_since_forwarded += 1;
                if wait(&stop, &mut backoff).await { continue } else { return }
            }
            Err(error) => {
                tracing::error!(
                    %error, seq = entry.seq, source = %entry.source, bytes = entry.body.len(),
                    "a spooled webhook can no longer be admitted; dropped"
                );
                metrics::counter!("followd_spool_dropped_total").increment(1);
            }
        }
        if refused_since_forwarded > 0 {
            tracing::info!(waiting = spool.len(), "the queue answers again; forwarding the spool");
            refused_since_forwarded = 0;
        }
        backoff = MIN_BACKOFF;
        if let Err(error) = spool.remove(&entry).await {
            tracing::error!(%error, "cannot remove a forwarded webhook from the spool; it is forwarded again");
            if !wait(&stop, &mut backoff).await {
                return;
            }
        }
    }
}

/// Sleeps `backoff` (doubling it) unless stopped first; false when stopped.
async fn wait(stop: &CancellationToken, backoff: &mut Duration) -> bool {
    let pause = *backoff;
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    tokio::select! {
        () = stop.cancelled() => false,
        () = tokio::time::sleep(pause) => true,
    }
}
