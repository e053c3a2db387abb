//! The worker pool: each worker leases one contact at a time, delivers its net change, and acknowledges.
//!
//! A failed delivery is never dropped: transient failures are retried a few times in place, then the contact
//! goes back to the queue for a later attempt with a growing delay; its operations stay in front, in order.
//! Workers wait on a [`Notify`] that the receiver pokes after each enqueue, with a bounded poll as the fallback
//! for work enqueued by other processes or scheduled for later. Shutdown is a [`CancellationToken`] passed in:
//! a worker finishes the delivery it holds, then stops; what it did not take stays queued.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::fold::{NetChange, fold};
use super::retry::Backoff;
use crate::event::UserId;
use crate::queue::{Applied, ContactKey, Lease, LeaseOutcome, Queue, QueueError, now_ms};
use crate::upstream::{Upstream, UpstreamError};

/// Longest a worker sleeps with nothing to do before it looks again (work from other processes, retries).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Attempts of one delivery before the contact goes back to the queue.
const IN_PLACE_ATTEMPTS: u32 = 3;
/// Delay between attempts in place.
const IN_PLACE_BACKOFF: Backoff = Backoff { base: Duration::from_millis(200), cap: Duration::from_secs(2) };
/// Delay before a contact that failed in place is tried again; grows with each failed lease.
const REQUEUE_BACKOFF: Backoff = Backoff { base: Duration::from_secs(5), cap: Duration::from_secs(600) };
/// Longest a worker waits after the queue itself failed.
const MAX_QUEUE_ERROR_WAIT: Duration = Duration::from_secs(30);

/// Why one delivery attempt failed.
#[derive(Debug, thiserror::Error)]
enum DeliverError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Delivers leased contacts. Shared by every worker of a process.
pub struct Deliverer {
    queue: Arc<dyn Queue>,
    upstream: Arc<Upstream>,
}

impl Deliverer {
    pub fn new(queue: Arc<dyn Queue>, upstream: Arc<Upstream>) -> Self {
        Self { queue, upstream }
    }

    /// Delivers one lease and acknowledges it, or gives it back for a later attempt.
    pub async fn deliver(&self, lease: Lease) {
        let span = tracing::info_span!(
            "deliver",
            location_id = %lease.contact.location_id,
            contact_id = %lease.contact.contact_id,
            operations = lease.ops.len(),
            attempts = lease.attempts,
        );
        self.deliver_in(lease).instrument(span).await;
    }

    async fn deliver_in(&self, lease: Lease) {
        let change = fold(lease.ops.iter().map(|queued| &queued.op));
        let mut attempt = 0;
        let result = loop {
            match self.apply(&lease.contact, &change).await {
                Err(DeliverError::Upstream(e)) if e.is_transient() && attempt + 1 < IN_PLACE_ATTEMPTS => {
                    let delay = IN_PLACE_BACKOFF.delay(attempt, rand::random());
                    tracing::debug!(error = %e, retry_in_ms = delay.as_millis() as u64, "upstream call failed; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => break other,
            }
        };
        match result {
            Ok(applied) => {
                metrics::counter!("followd_deliveries_total", "result" => "delivered").increment(1);
                metrics::counter!("followd_operations_delivered_total").increment(lease.ops.len() as u64);
                match self.queue.ack(&lease, &applied, now_ms()).await {
                    Ok(()) => tracing::info!(added = applied.added.len(), removed = applied.removed.len(), "delivered"),
                    Err(e) => tracing::warn!(error = %e, "delivered, but the acknowledgement failed; it will be redelivered"),
                }
            }
            Err(e) => {
                metrics::counter!("followd_deliveries_total", "result" => "requeued").increment(1);
                let delay = REQUEUE_BACKOFF.delay(lease.attempts, rand::random());
                let retry_at = now_ms().saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
                tracing::warn!(error = %e, retry_in_s = delay.as_secs(), "delivery failed; kept in the queue");
                if let Err(e) = self.queue.retry(&lease, retry_at).await {
                    tracing::warn!(error = %e, "cannot reschedule; the lease will expire and be retried");
                }
            }
        }
    }

    /// Makes the upstream calls that reach the net change: at most a GET, a DELETE and a POST.
    async fn apply(&self, contact: &ContactKey, change: &NetChange) -> Result<Applied, DeliverError> {
        let mut remove: Vec<UserId> = change.remove.iter().cloned().collect();
        if change.remove_all {
            let current = match self.upstream.followers(contact).await? {
                Some(current) => current,
                None => {
                    let known = self.queue.known_followers(contact).await?;
                    tracing::info!(
                        known = known.len(),
                        "the CRM did not list the contact's followers; remove_all removes those followd added"
                    );
                    known
                }
            };
            remove.extend(current.into_iter().filter(|u| !change.add.contains(u) && !change.remove.contains(u)));
        }
        if !remove.is_empty() {
            self.upstream.remove_followers(contact, &remove).await?;
        }
        let add: Vec<UserId> = change.add.iter().cloned().collect();
        if !add.is_empty() {
            self.upstream.add_followers(contact, &add).await?;
        }
        Ok(Applied { removed_all: change.remove_all, removed: remove, added: add })
    }
}

/// The running workers and reaper of one process.
pub struct Workers {
    tasks: JoinSet<()>,
    cancel: CancellationToken,
}

impl Workers {
    /// Starts `count` workers and one reaper that returns expired leases every `reap_every`.
    pub fn spawn(deliverer: Arc<Deliverer>, count: usize, wake: Arc<Notify>, reap_every: Duration) -> Self {
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for _ in 0..count {
            tasks.spawn(work(Arc::clone(&deliverer), Arc::clone(&wake), cancel.clone()));
        }
        tasks.spawn(reap(Arc::clone(&deliverer.queue), reap_every, cancel.clone()));
        Self { tasks, cancel }
    }

    /// Stops taking work, lets deliveries in flight finish within `grace`, then abandons the rest: their
    /// leases expire and another worker (or this process, restarted) delivers them.
    pub async fn shutdown(mut self, grace: Duration) {
        self.cancel.cancel();
        let drained = tokio::time::timeout(grace, async { while self.tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(grace_s = grace.as_secs(), "deliveries still running at the end of the grace period; they stay queued");
            self.tasks.abort_all();
        }
    }
}

async fn work(deliverer: Arc<Deliverer>, wake: Arc<Notify>, cancel: CancellationToken) {
    let mut error_wait = Duration::from_millis(100);
    loop {
        // Register for a wake-up before looking, so an enqueue between the look and the wait is not missed.
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if cancel.is_cancelled() {
            return;
        }
        let wait = match deliverer.queue.lease(now_ms()).await {
            Ok(LeaseOutcome::Leased(lease)) => {
                error_wait = Duration::from_millis(100);
                deliverer.deliver(lease).await;
                continue;
            }
            Ok(LeaseOutcome::Empty { next_at }) => {
                let until_next = next_at.map(|at| Duration::from_millis(at.saturating_sub(now_ms())));
                until_next.unwrap_or(IDLE_POLL).min(IDLE_POLL)
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = error_wait.as_millis() as u64, "cannot lease from the queue");
                let wait = error_wait;
                error_wait = (error_wait * 2).min(MAX_QUEUE_ERROR_WAIT);
                wait
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = &mut notified => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

async fn reap(queue: Arc<dyn Queue>, every: Duration, cancel: CancellationToken) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match queue.reap(now_ms()).await {
            Ok(0) => {}
            Ok(reaped) => tracing::warn!(reaped, "expired leases returned to the queue"),
            Err(e) => tracing::warn!(error = %e, "cannot reap expired leases"),
        }
    }
}
