//! The worker pool: each worker leases one contact at a time, delivers its net change, and acknowledges.
//!
//! A failed delivery is never dropped: transient failures are retried a few times in place, then the contact
//! goes back to the queue for a later attempt with a growing delay; its operations stay in front, in order.
//! Workers wait on a [`Notify`] that the receiver pokes after each enqueue, with a bounded poll as the fallback
//! for work enqueued by other processes or scheduled for later. Shutdown is a [`CancellationToken`] passed in:
//! a worker finishes the delivery it holds, then stops; what it did not take stays queued.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::calls::{self, max_calls};
use super::emails;
use super::fold::{NetChange, fold};
use super::limit::{MAX_WAIT_IN_PLACE, Smoothing};
use super::report::{OutcomeWriter, Reporter};
use super::retry::{Backoff, Decision, Policy, decide};
use super::skip::{skip, skip_deleted};
use crate::decisions::Decisions;
use crate::domain::clock::{Millis, millis, now_ms};
use crate::domain::followers::{AtCap, FollowerOp, MAX_FOLLOWERS, Ownership};
use crate::domain::outcome::Outcome;
use crate::domain::rate::Limits;
use crate::event::{LocationId, UserId};
use crate::queue::{
    Applied, ContactKey, ContactMemory, Failure, Lease, LeaseOutcome, LocationState, Queue, QueueError, QueuedOp,
    Stores,
};
use crate::upstream::directory::{Lookup, UserDirectory};
use crate::upstream::{Upstream, UpstreamError};

/// Longest a worker sleeps with nothing to do before it looks again (work from other processes, retries).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Attempts of one delivery before the contact goes back to the queue.
const IN_PLACE_ATTEMPTS: u32 = 3;
/// Delay between attempts in place.
const IN_PLACE_BACKOFF: Backoff = Backoff { base: Duration::from_millis(200), cap: Duration::from_secs(2) };
/// Longest a worker waits after the queue itself failed: short, so work resumes within 2 s of the queue's
/// return (an attempt every 2 s per worker is nothing to a store that is down).
const MAX_QUEUE_ERROR_WAIT: Duration = Duration::from_secs(2);
/// The first wait after the queue failed.
const MIN_QUEUE_ERROR_WAIT: Duration = Duration::from_millis(100);
/// Longest wait between two tries of a call that ends a lease while the store fails.
const END_LEASE_MAX_WAIT: Duration = Duration::from_secs(2);
/// How soon a lease is given back after the queue failed mid-delivery.
const QUEUE_ERROR_RETRY: Duration = Duration::from_secs(5);

/// Why one delivery attempt failed.
#[derive(Debug, thiserror::Error)]
enum DeliverError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("{0}")]
    FollowerLimit(String),
}

/// Delivers leased contacts. Shared by every worker of a process.
pub struct Deliverer {
    queue: Arc<dyn Queue>,
    /// The followers followd added: what `remove_all` removes when the CRM does not list them.
    memory: Arc<dyn ContactMemory>,
    /// Rate budgets and pauses, shared by every process that uses the store.
    locations: Arc<dyn LocationState>,
    upstream: Arc<Upstream>,
    limits: Limits,
    smoothing: Smoothing,
    policy: Policy,
    /// `followers.at_cap`: what an add past the CRM's cap does.
    at_cap: AtCap,
    /// Told what became of each delivery: status page, metrics, other processes.
    reporter: Reporter,
    /// Locations this process paused because the CRM refused the token (or there is none): a configuration
    /// reload with new tokens lifts exactly these pauses.
    auth_paused: std::sync::Mutex<std::collections::HashSet<LocationId>>,
    /// The CRM's deleted users, whose adds are skipped; `None`: none known (tests).
    roster: Option<Arc<crate::roster::Roster>>,
    /// Each location's users by email, for users the rules name by email.
    directory: UserDirectory,
}

impl Deliverer {
    /// A deliverer over `stores`, and the writer of shared outcomes its owner must run (when the store is
    /// shared with other processes).
    pub fn new(
        stores: &Stores,
        upstream: Arc<Upstream>,
        limits: Limits,
        policy: Policy,
        at_cap: AtCap,
        decisions: Arc<Decisions>,
    ) -> (Self, Option<OutcomeWriter>) {
        let (reporter, writer) = Reporter::new(decisions, Arc::clone(&stores.outcomes));
        let directory = UserDirectory::new(Arc::clone(&upstream));
        let deliverer = Self {
            queue: Arc::clone(&stores.queue),
            memory: Arc::clone(&stores.memory),
            locations: Arc::clone(&stores.locations),
            upstream,
            limits,
            smoothing: Smoothing::new(limits),
            policy,
            at_cap,
            reporter,
            auth_paused: Default::default(),
            roster: None,
            directory,
        };
        (deliverer, writer)
    }

    /// Skips the adds of the users `roster` knows the CRM deleted.
    #[must_use]
    pub fn with_roster(mut self, roster: Arc<crate::roster::Roster>) -> Self {
        self.roster = Some(roster);
        self
    }

    /// Takes the tokens of a reloaded configuration. When any changed, the locations this process paused for a
    /// refused or missing token resume at once: their contacts go out at the next recheck
    /// (`delivery.pause_recheck`). Returns how many locations resumed.
    pub async fn reload_credentials(
        &self,
        upstream: &crate::config::UpstreamConfig,
        base_dir: &std::path::Path,
    ) -> Result<usize, crate::config::ConfigError> {
        if !self.upstream.reload_credentials(upstream, base_dir)? {
            return Ok(0);
        }
        let locations: Vec<LocationId> =
            self.auth_paused.lock().unwrap_or_else(std::sync::PoisonError::into_inner).drain().collect();
        let now = now_ms();
        for location in &locations {
            if let Err(e) = self.locations.pause(location, now, "resumed: the upstream tokens were reloaded", now).await
            {
                tracing::warn!(%location, error = %e, "cannot lift the pause; it ends by itself");
            }
        }
        Ok(locations.len())
    }

    /// Delivers one lease and acknowledges it, or gives it back for a later attempt, or dead-letters it.
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
        let location = &lease.contact.location_id;
        match self.locations.paused(location, now_ms()).await {
            Ok(Some(pause)) => {
                tracing::debug!(reason = pause.reason, "location paused; contact rescheduled");
                return self.give_back(&lease, self.recheck(pause.until)).await;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the location's pause");
                return self.give_back(&lease, now_ms() + millis(QUEUE_ERROR_RETRY)).await;
            }
        }
        let change = fold(lease.ops.iter().map(|queued| (&queued.op, queued.ownership)));
        // A rule with `skip_if_following` needs the contact read first: one more call at most.
        let conditional = lease.ops.iter().any(|q| !q.unless.is_empty());
        let calls =
            max_calls(&change, self.at_cap) + u64::from(conditional && !calls::needs_read(&change, self.at_cap));
        // A webhook's change may go a few slots ahead of the schedule; a reconcile's waits for its slot, so a
        // live webhook never queues behind a reconcile's reservations (see `domain::rate`).
        let background = lease.ops.iter().all(|q| q.event_id.is_reconcile());
        let limits = if background { self.limits } else { self.limits.for_live() };
        // Background work never waits in place: a worker asleep on a reconcile's slot is a worker a live
        // webhook cannot have.
        let wait_in_place = if background { Duration::ZERO } else { MAX_WAIT_IN_PLACE };
        let mut attempt = 0;
        // Smoothing is asked once per attempt: a worker it let through that Redis then told to wait has
        // already paid its in-process slot.
        let mut smoothed = false;
        let result = loop {
            // The rate budget is shared by every process: a throttled location gives its contact back and the
            // worker takes other work, unless the wait is short. Workers of this process first queue among
            // themselves (smoothing), so contention costs no Redis round trips.
            // Background work skips it: it never waits in place, and a cell it took and did not use (the shared
            // budget said no) would delay the live work behind it.
            let in_process_wait = if smoothed || background {
                None
            } else {
                self.smoothing.check(location, u32::try_from(calls).unwrap_or(u32::MAX))
            };
            let budget = match in_process_wait {
                Some(wait) => Ok(Some(now_ms() + millis(wait))),
                None => {
                    smoothed = true;
                    self.locations.throttle(location, limits, calls, now_ms()).await
                }
            };
            match budget {
                Ok(None) => {}
                Ok(Some(at)) if at.saturating_sub(now_ms()) <= millis(wait_in_place) => {
                    metrics::counter!("followd_rate_limit_waits_total", "where" => "in_place").increment(1);
                    tokio::time::sleep(Duration::from_millis(at.saturating_sub(now_ms()))).await;
                    continue;
                }
                Ok(Some(at)) => {
                    metrics::counter!("followd_rate_limit_waits_total", "where" => "rescheduled").increment(1);
                    return self.give_back(&lease, at).await;
                }
                Err(e) => break Err(DeliverError::Queue(e)),
            }
            match self.apply(&lease.contact, &lease.ops, &change).await {
                Err(DeliverError::Upstream(e))
                    if e.is_transient() && e.status() != Some(429) && attempt + 1 < IN_PLACE_ATTEMPTS =>
                {
                    smoothed = false;
                    let delay = IN_PLACE_BACKOFF.delay(attempt, rand::random());
                    tracing::debug!(error = %e, retry_in_ms = millis(delay), "upstream call failed; retrying");
                    metrics::counter!("followd_delivery_retries_total", "where" => "in_place").increment(1);
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => break other,
            }
        };
        if let Some(window) = self.upstream.take_exhausted(location) {
            self.pause(location, now_ms() + millis(window), "the CRM's rate-limit headers say the budget is spent")
                .await;
        }
        let now = now_ms();
        match result {
            Ok(applied) => {
                self.refund_skipped_turns(&lease, &applied).await;
                metrics::counter!("followd_operations_delivered_total").increment(lease.ops.len() as u64);
                let outcome = applied.outcome();
                self.reporter.report(&lease, &outcome);
                let acked = self.while_leased(&lease, || self.queue.ack(&lease, &applied, now_ms())).await;
                match acked {
                    Ok(()) => {
                        tracing::info!(added = applied.added.len(), removed = applied.removed.len(), %outcome, "delivered")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "delivered, but the acknowledgement failed; it will be redelivered")
                    }
                }
            }
            Err(DeliverError::FollowerLimit(reason)) => {
                self.dead_letter(&lease, Failure { status: None, reason }, now).await;
            }
            Err(DeliverError::Queue(e)) => {
                tracing::warn!(error = %e, "the queue failed during delivery; kept for later");
                self.give_back(&lease, now + millis(QUEUE_ERROR_RETRY)).await;
            }
            Err(DeliverError::Upstream(e)) => {
                let oldest = lease.ops.iter().map(|op| op.enqueued_at).min().unwrap_or(now);
                match decide(&e, lease.attempts, oldest, now, rand::random(), &self.policy) {
                    Decision::Retry { at } => {
                        self.reporter.report(&lease, &Outcome::Retrying(e.to_string()));
                        metrics::counter!("followd_delivery_retries_total", "where" => "requeued").increment(1);
                        tracing::warn!(error = %e, retry_in_s = at.saturating_sub(now) / 1000, "delivery failed; kept in the queue");
                        self.give_back(&lease, at).await;
                    }
                    Decision::Pause { until, reason } => {
                        if e.is_auth() {
                            self.auth_paused
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .insert(location.clone());
                        }
                        self.reporter.report(&lease, &Outcome::Paused(reason.clone()));
                        self.pause(location, until, &reason).await;
                        self.give_back(&lease, self.recheck(until)).await;
                    }
                    Decision::DeadLetter(failure) => self.dead_letter(&lease, failure, now).await,
                }
            }
        }
    }

    /// When a paused contact is looked at again: at the pause's end, or sooner, in case it is lifted.
    fn recheck(&self, until: Millis) -> Millis {
        until.min(now_ms().saturating_add(millis(self.policy.pause_recheck)))
    }

    /// Returns the lease to the queue, operations kept in front, ready again at `at`.
    async fn give_back(&self, lease: &Lease, at: Millis) {
        if let Err(e) = self.while_leased(lease, || self.queue.retry(lease, at)).await {
            tracing::warn!(error = %e, "cannot reschedule; the lease will expire and be retried");
        }
    }

    /// Runs a call that ends `lease` (ack, retry, dead letter), trying again while the store fails and the
    /// lease lasts: a store blip (a Redis restart) must not cost the contact a wait of `queue.lease` before
    /// someone delivers it again. Gives up at once when the lease is lost.
    async fn while_leased<F, Fut>(&self, lease: &Lease, mut call: F) -> Result<(), QueueError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), QueueError>>,
    {
        let mut wait = Duration::from_millis(100);
        loop {
            match call().await {
                Err(e) if e.is_unavailable() && now_ms().saturating_add(millis(wait)) < lease.deadline => {
                    if wait == Duration::from_millis(100) {
                        tracing::info!(error = %e, "the store failed; trying again while the lease lasts");
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(END_LEASE_MAX_WAIT);
                }
                other => return other,
            }
        }
    }

    /// Pauses a location for every process: logged as an alert and counted, once per decision.
    async fn pause(&self, location: &LocationId, until: Millis, reason: &str) {
        let seconds = until.saturating_sub(now_ms()) / 1000;
        tracing::warn!(%location, pause_s = seconds, reason, "sub-account paused");
        metrics::counter!("followd_location_pauses_total").increment(1);
        if let Err(e) = self.locations.pause(location, until, reason, now_ms()).await {
            tracing::warn!(error = %e, "cannot record the pause");
        }
    }

    async fn dead_letter(&self, lease: &Lease, failure: Failure, now: Millis) {
        self.reporter.report(lease, &Outcome::DeadLettered(failure.reason.clone()));
        tracing::error!(status = failure.status, reason = %failure.reason, "operations dead-lettered");
        metrics::counter!("followd_dead_letters_total").increment(1);
        if let Err(e) = self.while_leased(lease, || self.queue.dead_letter(lease, &failure, now)).await {
            tracing::warn!(error = %e, "cannot dead-letter; the lease will expire and be retried");
        }
    }

    /// A round robin's turn that was skipped at delivery (its rule's `skip_if_following`, a deleted user, an
    /// address nobody has) was not a lead for that member: it is given back, so skipped contacts do not count
    /// against anyone's share. Best effort: a failure is logged.
    async fn refund_skipped_turns(&self, lease: &Lease, applied: &Applied) {
        let turns = lease.ops.iter().filter(|op| op.turn && applied.skipped.iter().any(|(seq, _)| *seq == op.seq));
        for op in turns {
            let FollowerOp::Add(user) = &op.op else { continue };
            let location = &lease.contact.location_id;
            if let Err(error) = self.queue.refund_turn(location, &op.rule, user, op.enqueued_at).await {
                tracing::warn!(%error, rule = op.rule, "cannot give back a skipped round-robin turn");
            }
        }
        for (_, reason) in &applied.skipped {
            tracing::info!(reason, "operation skipped by its rule");
        }
        if !applied.skipped.is_empty() {
            metrics::counter!("followd_operations_skipped_total").increment(applied.skipped.len() as u64);
        }
    }

    /// The operations as they will be delivered, when that is not `ops` as leased, and those left out (by
    /// `seq`, with why): users named by email become the location's user with that address (one nobody has is
    /// left out), and adds of users the CRM deleted are never made, whatever queued them.
    async fn narrow(
        &self,
        contact: &ContactKey,
        ops: &[QueuedOp],
    ) -> Result<(Option<Vec<QueuedOp>>, Vec<(u64, String)>), DeliverError> {
        let mut skipped = Vec::new();
        // The operations as they will be delivered, when that is not `ops` as leased.
        let mut narrowed: Option<Vec<QueuedOp>> = None;
        let addresses = emails::addresses(ops);
        if !addresses.is_empty() {
            let mut found = HashMap::with_capacity(addresses.len());
            for email in addresses {
                let lookup = self.directory.find(&contact.location_id, email).await;
                if lookup == Lookup::Unreadable && !self.upstream.is_dry_run() {
                    return Err(DeliverError::Upstream(UpstreamError::Status {
                        status: 503,
                        message: "the location's users could not be read lately, so an email alias is unresolved"
                            .to_owned(),
                        retry_after: None,
                    }));
                }
                found.insert(email, lookup);
            }
            let split = emails::resolve(ops, &found, &contact.location_id);
            skipped.extend(split.skipped);
            narrowed = Some(split.kept);
        }
        // Split (a copy of the lease) only when an add of a deleted user is there: the common case copies nothing.
        let current = narrowed.as_deref().unwrap_or(ops);
        if let Some(roster) = &self.roster
            && current.iter().any(|op| matches!(&op.op, FollowerOp::Add(user) if roster.is_deleted(user)))
        {
            let split = skip_deleted(current, |user| roster.is_deleted(user));
            skipped.extend(split.skipped);
            narrowed = Some(split.kept);
        }
        Ok((narrowed, skipped))
    }

    /// Makes the upstream calls that reach the net change of `ops`: at most a search, a DELETE and a POST.
    /// Reads the contact and followd's memory only where [`calls`] (or a rule's `skip_if_following`, see
    /// [`skip`]) says they are needed.
    /// `change` is `ops` folded (the caller needed it for the budget); it is folded again only when some of
    /// them are left out ([`Deliverer::narrow`], or a rule's `skip_if_following`).
    async fn apply(&self, contact: &ContactKey, ops: &[QueuedOp], change: &NetChange) -> Result<Applied, DeliverError> {
        let mut read_first = None;
        let mut owned_read = None;
        let (narrowed, mut skipped) = self.narrow(contact, ops).await?;
        let ops = narrowed.as_deref().unwrap_or(ops);
        let mut kept = narrowed.as_ref().map(|ops| fold(ops.iter().map(|queued| (&queued.op, queued.ownership))));
        if ops.iter().any(|q| !q.unless.is_empty()) {
            // Without an answer (dry run, a contact the search does not list) nothing is skipped.
            if let Some(read) = self.upstream.contact(contact).await? {
                let owned = self.memory.known_followers(contact).await?;
                let split = skip(ops, &read.followers, &owned);
                if !split.skipped.is_empty() {
                    kept = Some(fold(split.kept.iter().map(|queued| (&queued.op, queued.ownership))));
                }
                skipped.extend(split.skipped);
                read_first = Some(read.followers);
                owned_read = Some(owned);
            }
        }
        let change = kept.as_ref().unwrap_or(change);
        let removed_all = change.remove_all == Some(Ownership::Any);
        // An opportunity's followers cannot be read: a `remove_all` that may touch anyone is the CRM's own
        // "remove every follower" call, and the rest of the change follows it on an empty list.
        let cleared;
        let (change, read_first) =
            if contact.contact_id.as_opportunity().is_some() && change.remove_all == Some(Ownership::Any) {
                self.upstream.remove_all_followers(contact).await?;
                cleared = NetChange { remove_all: None, ..change.clone() };
                (&cleared, Some(Vec::new()))
            } else {
                (change, read_first)
            };
        let owned = match owned_read {
            Some(owned) => owned,
            None if calls::needs_owned(change, self.at_cap) => self.memory.known_followers(contact).await?,
            None => Vec::new(),
        };
        let current = if read_first.is_some() {
            read_first
        } else if calls::needs_read(change, self.at_cap) {
            let read = self.upstream.contact(contact).await?;
            if read.is_none() && !self.upstream.is_dry_run() {
                tracing::info!(
                    known = owned.len(),
                    "the CRM's search does not list the contact; using what followd added"
                );
            }
            read.map(|c| c.followers)
        } else {
            None
        };
        let known = calls::Known { current: current.as_deref(), owned: &owned };
        let planned = calls::plan(change, known, self.at_cap).map_err(DeliverError::FollowerLimit)?;
        if !planned.evicted.is_empty() {
            let evicted: Vec<&str> = planned.evicted.iter().map(UserId::as_str).collect();
            tracing::info!(?evicted, "at the follower cap: followd's oldest followers make room");
        }
        if !planned.remove.is_empty() {
            self.upstream.remove_followers(contact, &planned.remove).await?;
        }
        let mut added = Vec::new();
        if !planned.add.is_empty() {
            let answer = self.upstream.add_followers(contact, &planned.add).await?;
            // followd's own: the CRM's `followersAdded`; without it, the ones that did not follow before.
            added = answer.changed.unwrap_or_else(|| {
                let before = current.as_deref().unwrap_or_default();
                planned.add.iter().filter(|u| !before.contains(u)).cloned().collect()
            });
            // Without a read, the POST's answer is the first count of the contact's followers. Should the CRM
            // have taken it past its cap (what it does there is unverified: `shared/ghl/API.md` §2), followd
            // takes back exactly what it just added and sets the operations aside, as `dead_letter` says.
            let after = answer.followers.as_ref().map_or(0, Vec::len);
            if after > MAX_FOLLOWERS && self.at_cap == AtCap::DeadLetter && !added.is_empty() {
                self.upstream.remove_followers(contact, &added).await?;
                let names: Vec<&str> = added.iter().map(UserId::as_str).collect();
                return Err(DeliverError::FollowerLimit(format!(
                    "adding {} took the contact to {after} followers; the CRM allows at most {MAX_FOLLOWERS}, so \
                     followd removed them again (followers.at_cap = \"dead_letter\")",
                    names.join(", ")
                )));
            }
        }
        Ok(Applied {
            removed_all,
            removed: planned.remove,
            added,
            seen: current,
            dry_run: self.upstream.is_dry_run(),
            skipped,
        })
    }
}

/// The running workers and reaper of one process.
pub struct Workers {
    tasks: JoinSet<()>,
    cancel: CancellationToken,
}

impl Workers {
    /// Starts `count` workers, one reaper that returns expired leases every `reap_every`, and the writer of
    /// shared outcomes, if any. All of them stop at [`Workers::shutdown`].
    pub fn spawn(
        deliverer: Arc<Deliverer>,
        writer: Option<OutcomeWriter>,
        count: usize,
        wake: Arc<Notify>,
        reap_every: Duration,
    ) -> Self {
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for _ in 0..count {
            tasks.spawn(work(Arc::clone(&deliverer), Arc::clone(&wake), cancel.clone()));
        }
        tasks.spawn(reap(Arc::clone(&deliverer.queue), reap_every, cancel.clone()));
        if let Some(writer) = writer {
            tasks.spawn(writer.run(cancel.clone()));
        }
        Self { tasks, cancel }
    }

    /// Stops taking work, lets deliveries in flight finish within `grace`, then abandons the rest: their
    /// leases expire and another worker (or this process, restarted) delivers them.
    pub async fn shutdown(mut self, grace: Duration) {
        self.cancel.cancel();
        let drained = tokio::time::timeout(grace, async { while self.tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(
                grace_s = grace.as_secs(),
                "deliveries still running at the end of the grace period; they stay queued"
            );
            self.tasks.abort_all();
        }
    }
}

async fn work(deliverer: Arc<Deliverer>, wake: Arc<Notify>, cancel: CancellationToken) {
    let mut error_wait = MIN_QUEUE_ERROR_WAIT;
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
                error_wait = MIN_QUEUE_ERROR_WAIT;
                deliverer.deliver(lease).await;
                continue;
            }
            Ok(LeaseOutcome::Empty { next_at }) => {
                error_wait = MIN_QUEUE_ERROR_WAIT;
                let until_next = next_at.map(|at| Duration::from_millis(at.saturating_sub(now_ms())));
                until_next.unwrap_or(IDLE_POLL).min(IDLE_POLL)
            }
            Err(e) => {
                // Once per outage at warn: the attempts every 2 s after the first say nothing new.
                if error_wait == MIN_QUEUE_ERROR_WAIT {
                    tracing::warn!(error = %e, "cannot lease from the queue; trying again every 2 s at most");
                } else {
                    tracing::debug!(error = %e, retry_in_ms = error_wait.as_millis() as u64, "cannot lease from the queue");
                }
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
        // Timed followers whose time is up: their removals join the queue.
        match queue.fire_timers(now_ms()).await {
            Ok(0) => {}
            Ok(fired) => {
                metrics::counter!("followd_timed_removals_total").increment(fired as u64);
                tracing::info!(fired, "timed followers' removals queued");
            }
            Err(e) => tracing::warn!(error = %e, "cannot queue the timed followers' removals"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ContactId, EventId};
    use crate::queue::{EmbeddedQueue, EventOps, PlannedOp};

    /// On the real clock: the embedded store commits on its own thread, which a paused Tokio clock does not
    /// wait for (it would jump to the next timer while the commit runs). The bounds leave room for a busy
    /// machine; broken backoff (none, or the queue's seconds-long one used in place) still fails them.
    #[tokio::test]
    async fn a_failing_delivery_is_retried_in_place_with_backoff_then_given_back_to_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let stores =
            Stores::of(EmbeddedQueue::open(dir.path(), Duration::from_secs(60), Duration::from_secs(60)).unwrap());
        // Nothing listens on the discard port: every call fails at once (refused, or its 10 ms timeout).
        let text = "[upstream]\nbase_url = \"http://127.0.0.1:9\"\ntoken = \"t\"\ntimeout = \"10ms\"";
        let config = crate::config::Config::from_toml(text, dir.path()).unwrap();
        let upstream = Upstream::from_config(&config.upstream, dir.path(), Arc::clone(&stores.tokens)).unwrap();
        let limits = Limits::strict(1, 1_000);
        let policy = Policy::from(&config.delivery);
        let (deliverer, _) =
            Deliverer::new(&stores, Arc::new(upstream), limits, policy, AtCap::default(), Arc::default());
        let contact =
            ContactKey { location_id: LocationId::parse("loc").unwrap(), contact_id: ContactId::parse("c").unwrap() };
        let user = UserId::parse("u").unwrap();
        let add = PlannedOp {
            rule: Arc::from("r"),
            action: crate::rules::Action::Add(user),
            ownership: Ownership::Any,
            lasts: None,
            unless: None,
        };
        let event = EventOps { event_id: EventId::parse("e").unwrap(), contact, ops: vec![add], background: false };
        stores.queue.enqueue(vec![event], now_ms()).await.unwrap();
        let LeaseOutcome::Leased(lease) = stores.queue.lease(now_ms()).await.unwrap() else { panic!("nothing leased") };

        let started = tokio::time::Instant::now();
        deliverer.deliver(lease).await;
        let waited = started.elapsed();
        // Three attempts, two waits between them: 200 ms and 400 ms, each half fixed and half jitter.
        assert!(waited >= Duration::from_millis(300), "no backoff between attempts: {waited:?}");
        assert!(waited <= Duration::from_secs(3), "{waited:?}");
        let stats = stores.queue.stats().await.unwrap();
        assert_eq!((stats.ready, stats.leased, stats.pending, stats.dead), (1, 0, 1, 0), "kept for a later attempt");
    }
}
