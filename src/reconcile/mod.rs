//! Reconcile: bring every existing contact of a location in line with the rules, or show what that would
//! change (`--plan`), also for a rule set that is not live yet (`--rules DIR`).
//!
//! A run reads the location page by page through the CRM's search ([`crate::upstream::Upstream::contacts_page`]),
//! works out each contact's change ([`desired`]), and either counts it ([`report`]) or queues it as an event of
//! its own (`reconcile:<run>:<contact>`) that the workers deliver like any other. Memory stays flat: one page
//! at a time. Every read and every queued call is paced to at most `reconcile.max_share` of the location's
//! budget, so live webhooks keep the rest. The run's cursor and counts are saved in the store after each page
//! ([`crate::queue::RunLog`]): an interrupted run resumes where it stopped, and a page read twice queues
//! nothing twice (the event ids are the same, and the store de-duplicates them).

pub mod desired;
pub mod progress;
pub mod report;
pub mod schedule;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use self::desired::{Judgement, Needed, Present};
use self::progress::Progress;
use self::report::Report;
use crate::domain::clock::{Millis, now_ms};
use crate::domain::followers::{Action, Ownership};
use crate::domain::rate::Limits;
use crate::event::{ContactKey, EventId, LocationId, RECONCILE_EVENT_PREFIX, UserId};
use crate::queue::{EventOps, PlannedOp, QueueError, RunLog, RunRecord, RunState, Stores};
use crate::rules::RuleSet;
use crate::upstream::directory::{Lookup, UserDirectory};
use crate::upstream::{ContactPage, MAX_PAGE, Upstream, UpstreamError};

/// Attempts of one page read after it failed for now (429, 5xx, network), before the run stops.
const READ_ATTEMPTS: u32 = 5;
/// The first wait after a failed read; it doubles.
const READ_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait before a read is tried again.
const MAX_READ_WAIT: Duration = Duration::from_secs(60);

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("contact {contact}: no event id can be made for it ({source})")]
    EventId { contact: String, source: crate::event::IdError },
    #[error("no upstream token is configured: a reconcile must read the CRM (set upstream.token)")]
    DryRun,
    #[error("applying a reconcile needs followd's store, which another process holds; stop it, or use Redis")]
    NoStore,
}

/// What a run works with.
pub struct Reconciler {
    pub upstream: Arc<Upstream>,
    /// `None`: plan without followd's memory (the embedded store is held by a running service): removals that
    /// only followd's own followers allow are then not planned.
    pub stores: Option<Stores>,
    pub rules: Arc<RuleSet>,
    pub judgement: Judgement,
    pub limits: Limits,
    /// `reconcile.max_share`: the part of the location's budget a run may use.
    pub max_share: f64,
    /// Contacts per search page (at most 500).
    pub page_limit: u32,
    /// When this run may make its next call (its own pacing, under `max_share`).
    pub next_call: Mutex<Option<Instant>>,
    /// The users the rules name by email and the location's users by email, made at first use (once per run,
    /// not per contact).
    pub email_names: std::sync::OnceLock<(Vec<UserId>, UserDirectory)>,
}

impl Reconciler {
    /// Reads the whole location and reports what an apply would change; changes nothing.
    pub async fn plan(&self, location: &LocationId, progress: &mut Progress) -> Result<Report, ReconcileError> {
        let mut report = Report::new(location);
        let mut cursor = None;
        loop {
            let page = self.read_page(location, cursor.as_ref()).await?;
            report.page(page.contacts.len());
            for contact in &page.contacts {
                let key = ContactKey { location_id: location.clone(), contact_id: contact.id.clone() };
                let needed = self.needed(&key, contact).await?;
                report.change(&contact.id, &needed);
            }
            progress.update(report.contacts_read, page.total, report.contacts_changed);
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        progress.finish();
        report.finish(self.limits.spacing_ms, self.max_share);
        Ok(report)
    }

    /// Queues every change the location needs, as low-priority events; resumes the location's unfinished run
    /// if there is one. Returns the run's record and its report.
    pub async fn apply(
        &self,
        location: &LocationId,
        progress: &mut Progress,
    ) -> Result<(RunRecord, Report), ReconcileError> {
        let stores = self.stores.as_ref().ok_or(ReconcileError::NoStore)?;
        let mut run = match self.unfinished(&*stores.runs, location).await? {
            Some(run) => {
                tracing::info!(run = run.id, read = run.contacts_read, "resuming an interrupted reconcile");
                run
            }
            None => {
                let now = now_ms();
                RunRecord {
                    id: format!("r{now:x}{:04x}", rand::random::<u16>()),
                    location_id: location.clone(),
                    started_at: now,
                    updated_at: now,
                    cursor: None,
                    contacts_read: 0,
                    contacts_changed: 0,
                    adds: 0,
                    removes: 0,
                    state: RunState::Running,
                    ownership: self.judgement.run,
                }
            }
        };
        run.state = RunState::Running;
        stores.runs.save_run(&run).await?;
        let mut report = Report::new(location);
        let result = self.apply_pages(stores, &mut run, &mut report, progress).await;
        run.updated_at = now_ms();
        run.state = match &result {
            Ok(()) => RunState::Done,
            Err(e) => RunState::Failed(e.to_string()),
        };
        stores.runs.save_run(&run).await?;
        progress.finish();
        result?;
        report.finish(self.limits.spacing_ms, self.max_share);
        Ok((run, report))
    }

    async fn apply_pages(
        &self,
        stores: &Stores,
        run: &mut RunRecord,
        report: &mut Report,
        progress: &mut Progress,
    ) -> Result<(), ReconcileError> {
        loop {
            let page = self.read_page(&run.location_id, run.cursor.as_ref()).await?;
            report.page(page.contacts.len());
            for contact in &page.contacts {
                let key = ContactKey { location_id: run.location_id.clone(), contact_id: contact.id.clone() };
                let needed = self.needed(&key, contact).await?;
                report.change(&contact.id, &needed);
                if needed.is_empty() {
                    continue;
                }
                run.contacts_changed += 1;
                run.adds += (needed.add.len() + needed.round_robin.len()) as u64;
                run.removes += needed.remove.len() as u64;
                metrics::counter!("followd_reconcile_changes_total", "kind" => "add")
                    .increment((needed.add.len() + needed.round_robin.len()) as u64);
                metrics::counter!("followd_reconcile_changes_total", "kind" => "remove")
                    .increment(needed.remove.len() as u64);
                let calls = u64::from(!needed.remove.is_empty())
                    + u64::from(!needed.add.is_empty() || !needed.round_robin.is_empty());
                // Queued one by one as the pace allows, never a page at once: the queue never holds more of
                // this run than the budget share delivers, so a live webhook waits behind a slot, not a page.
                self.pace(&run.location_id, calls, None).await?;
                stores.queue.enqueue(vec![event_ops(&run.id, key, needed)?], now_ms()).await?;
            }
            run.contacts_read += page.contacts.len() as u64;
            run.cursor = page.next.clone();
            run.updated_at = now_ms();
            stores.runs.save_run(run).await?;
            progress.update(run.contacts_read, page.total, run.contacts_changed);
            if page.next.is_none() {
                return Ok(());
            }
        }
    }

    /// The location's run that did not finish, if any (the newest).
    async fn unfinished(&self, runs: &dyn RunLog, location: &LocationId) -> Result<Option<RunRecord>, QueueError> {
        Ok(runs.runs().await?.into_iter().rev().find(|r| r.location_id == *location && r.state != RunState::Done))
    }

    /// One page, after its call is paced and taken from the location's budget. A throttled or failing read
    /// (429, 5xx, a network error) is tried again after the CRM's `Retry-After` or a growing wait, a few times,
    /// before the run stops (it resumes from this page).
    async fn read_page(
        &self,
        location: &LocationId,
        cursor: Option<&serde_json::Value>,
    ) -> Result<ContactPage, ReconcileError> {
        let mut attempt = 0;
        loop {
            self.pace(location, 1, self.stores.as_ref()).await?;
            match self.upstream.contacts_page(location, self.page_limit.clamp(1, MAX_PAGE), cursor).await {
                Ok(page) => {
                    let page = page.ok_or(ReconcileError::DryRun)?;
                    metrics::counter!("followd_reconcile_contacts_read_total").increment(page.contacts.len() as u64);
                    return Ok(page);
                }
                Err(error) if error.is_transient() && attempt < READ_ATTEMPTS => {
                    let wait = error.retry_after().unwrap_or(READ_BACKOFF * 2u32.pow(attempt)).min(MAX_READ_WAIT);
                    tracing::warn!(%location, %error, wait_s = wait.as_secs(), "a reconcile read failed; trying again");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// The change one contact needs, with followd's memory of the followers it added.
    async fn needed(&self, key: &ContactKey, contact: &crate::upstream::CrmContact) -> Result<Needed, ReconcileError> {
        let owned: Vec<UserId> = match &self.stores {
            Some(stores) => stores.memory.known_followers(key).await?,
            None => Vec::new(),
        };
        // The run id is not needed to ask the rules: "plan" names the events of a plan and an apply alike.
        let event = event_id("plan", key)?;
        let (followers, owned) = self.with_email_names(&key.location_id, &contact.followers, owned).await;
        let present = Present {
            event: &event,
            location: &key.location_id,
            contact: &key.contact_id,
            tags: &contact.tags,
            source: contact.source.as_deref(),
            followers: &followers,
            owned: &owned,
        };
        Ok(desired::needed(present, &self.rules, self.judgement))
    }

    /// The followers (and followd's own) with, beside each user the rules name by email, that name
    /// (`email:<address>`), so the rules' wishes compare with what the CRM holds; delivery turns the name back
    /// into the user. An address that cannot be looked up adds nothing (its adds are then queued, and
    /// delivery finds them done).
    async fn with_email_names(
        &self,
        location: &LocationId,
        followers: &[UserId],
        mut owned: Vec<UserId>,
    ) -> (Vec<UserId>, Vec<UserId>) {
        let mut followers = followers.to_vec();
        let (named, directory) = self
            .email_names
            .get_or_init(|| (self.rules.users_by_email(), UserDirectory::new(Arc::clone(&self.upstream))));
        for name in named {
            let Some(email) = name.email() else { continue };
            if let Lookup::Found(user) = directory.find(location, email).await {
                if followers.contains(&user) {
                    followers.push(name.clone());
                }
                if owned.contains(&user) {
                    owned.push(name.clone());
                }
            }
        }
        (followers, owned)
    }

    /// Waits until `calls` more fit in this run's share of the location's budget; with `budget`, also takes
    /// them from the budget every process shares (reads go to the CRM now; queued changes are taken by the
    /// worker that delivers them).
    async fn pace(&self, location: &LocationId, calls: u64, budget: Option<&Stores>) -> Result<(), ReconcileError> {
        if calls == 0 {
            return Ok(());
        }
        let share = if self.max_share > 0.0 { self.max_share.min(1.0) } else { 1.0 };
        let step = Duration::from_secs_f64(self.limits.spacing_ms as f64 * calls as f64 / share / 1000.0);
        let at = {
            let mut next = self.next_call.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let now = Instant::now();
            let at = next.map_or(now, |next| next.max(now));
            *next = Some(at + step);
            at
        };
        tokio::time::sleep_until(at).await;
        if let Some(stores) = budget {
            while let Some(at) = stores.locations.throttle(location, self.limits, calls, now_ms()).await? {
                tokio::time::sleep(Duration::from_millis(at.saturating_sub(now_ms()).max(1))).await;
            }
        }
        Ok(())
    }
}

/// A contact's change as one event of the run: `reconcile:<run>:<contact>`, so a page read twice queues it once.
fn event_ops(run: &str, contact: ContactKey, needed: Needed) -> Result<EventOps, ReconcileError> {
    let id = event_id(run, &contact)?;
    let mut ops = Vec::new();
    for (user, (rule, ownership)) in needed.remove {
        ops.push(PlannedOp { rule, action: Action::Remove(user), ownership, lasts: None, unless: None });
    }
    for (user, rule) in needed.add {
        ops.push(PlannedOp { rule, action: Action::Add(user), ownership: Ownership::Any, lasts: None, unless: None });
    }
    for (rule, action) in needed.round_robin {
        ops.push(PlannedOp { rule, action, ownership: Ownership::Any, lasts: None, unless: None });
    }
    // Background: the workers take it only when no webhook's contact is ready.
    Ok(EventOps { event_id: id, contact, ops, background: true })
}

/// `reconcile:<run>:<contact>`, or with a hash of the contact id when the whole one would make the id too long.
fn event_id(run: &str, contact: &ContactKey) -> Result<EventId, ReconcileError> {
    EventId::parse(&format!("{RECONCILE_EVENT_PREFIX}{run}:{}", contact.contact_id))
        .or_else(|_| EventId::parse(&format!("{RECONCILE_EVENT_PREFIX}{run}:{:x}", fnv(contact.contact_id.as_str()))))
        .map_err(|source| ReconcileError::EventId { contact: contact.contact_id.to_string(), source })
}

/// A short stable hash, for a contact id too long to fit in an event id whole.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, b| (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// When a run's record was last touched, for `reconcile status`.
pub fn age(run: &RunRecord, now: Millis) -> Duration {
    Duration::from_millis(now.saturating_sub(run.updated_at))
}
