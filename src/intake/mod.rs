//! What a webhook becomes: verified, parsed into events, matched against the live rules and queued durably.
//!
//! This is the request path without HTTP: `http/webhook.rs` reads the body and maps [`IntakeError`] to a
//! status; `followd rules explain` and `rules test` run the same [`occurrences`] and [`plan`] without
//! queueing. A webhook is answered only after [`Intake::accept`] returns, i.e. after its operations are
//! committed. The steps, in order:
//! 1. verify the raw body and parse it into observations (`verify`, `event`);
//! 2. look up pipeline and stage names at the CRM, under their own bound (`names.rs`);
//! 3. under the store's bound: read and update the contact memory, normalize into events
//!    (`occurrences.rs`), match the rules ([`plan`]) and enqueue, all or nothing.
//!
//! With a spool ([`crate::spool`]), a webhook the queue cannot take after step 1 is written to the spool and
//! answered 202; `forward.rs` runs steps 2 and 3 for it once the queue answers. While the spool holds
//! anything, every new webhook goes there too, behind it, so the order webhooks arrived in holds.

mod forward;
mod names;
mod occurrences;
mod source;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use sha2::Digest;
use tokio::sync::Notify;

pub use self::forward::forward_spool;
pub use self::names::LOOKUP_TIMEOUT;
pub use self::occurrences::{Names, OccurrenceError, occurrences};
pub use self::source::Source;
use crate::decisions::{Decision, Decisions};
use crate::domain::clock::{Millis, now_ms};
use crate::domain::outcome::Outcome;
use crate::event::{EventId, EventKind, Observation, Occurrence, PayloadError, UserId, UserStatus};
use crate::queue::{ContactMemory, EventOps, Ownership, PlannedOp, Queue, QueueError};
use crate::roster::Roster;
use crate::rules::{LiveRules, RuleSet, Target};
use crate::spool::Spool;
use crate::upstream::pipelines::PipelineNames;
use crate::verify::{Headers, Request, VerifyError};

/// What an accepted webhook led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Newly accepted events (ids already seen are skipped) and the operations queued for them.
    Queued { event_ids: Vec<EventId>, operations: usize },
    /// Every event id was seen before: nothing was done.
    Duplicate,
    /// The payload carries the contact's whole state, older than the state already applied: nothing was done
    /// (it would undo newer changes).
    Stale,
    /// The queue could not be reached (or the spool already held webhooks): the verified webhook is in the
    /// local spool, on disk, and reaches the queue in order once the queue answers.
    Spooled { event_ids: Vec<EventId> },
    /// A payload type followd does not use (the CRM sends every subscribed type to one URL).
    Ignored { kind: String },
    /// A change to the CRM's users, recorded (`changed`: it changed what followd knows).
    User { user: UserId, status: UserStatus, changed: bool },
}

/// Why a webhook was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("no source named `{0}`")]
    UnknownSource(String),
    #[error("invalid signature")]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error("the queue is unavailable")]
    Queue(#[from] QueueError),
    #[error("the queue did not answer within {0:?}")]
    QueueTimeout(Duration),
    #[error(transparent)]
    Spool(#[from] crate::spool::SpoolError),
}

impl From<OccurrenceError> for IntakeError {
    fn from(error: OccurrenceError) -> Self {
        match error {
            OccurrenceError::Payload(e) => Self::Payload(e),
            OccurrenceError::Queue(e) => Self::Queue(e),
        }
    }
}

/// Longest the store may take with one webhook before the sender is told to retry (`DESIGN.md`: within 5 s).
pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// The receiving side of the pipeline, shared by every HTTP worker.
pub struct Intake {
    sources: HashMap<String, Source>,
    /// The rules in service, read once per webhook: a reload never splits one webhook's events.
    rules: Arc<LiveRules>,
    queue: Arc<dyn Queue>,
    /// Tags and stages remembered between events, to turn whole-state payloads into changes.
    memory: Arc<dyn ContactMemory>,
    /// `followers.ownership`: what a rule without its own `ownership` may remove.
    ownership: Ownership,
    /// Poked after each enqueue so idle workers of this process start at once.
    wake: Arc<Notify>,
    /// Bound on one enqueue, so a sender gets its retry answer quickly when the queue hangs.
    queue_timeout: Duration,
    /// Names for GoHighLevel's pipeline and stage ids; `None` without the CRM (dry run).
    pipeline_names: Option<Arc<PipelineNames>>,
    /// What the status page shows of recent webhooks.
    decisions: Arc<Decisions>,
    /// Where webhooks wait while the queue's server is unreachable (`redis_url` with `spool.max_bytes > 0`).
    spool: Option<Arc<Spool>>,
    /// The CRM's deleted users: round robins skip them.
    roster: Arc<Roster>,
}

impl Intake {
    pub fn new(
        sources: Vec<Source>,
        rules: Arc<LiveRules>,
        stores: &crate::queue::Stores,
        ownership: Ownership,
        wake: Arc<Notify>,
        pipeline_names: Option<Arc<PipelineNames>>,
        decisions: Arc<Decisions>,
    ) -> Self {
        let sources = sources.into_iter().map(|s| (s.name.clone(), s)).collect();
        Self {
            sources,
            rules,
            queue: Arc::clone(&stores.queue),
            memory: Arc::clone(&stores.memory),
            ownership,
            wake,
            queue_timeout: QUEUE_TIMEOUT,
            pipeline_names,
            decisions,
            spool: None,
            roster: Arc::new(Roster::new(Arc::clone(&stores.roster))),
        }
    }

    /// Spools webhooks the queue cannot take (see [`crate::spool`]).
    #[must_use]
    pub fn with_spool(mut self, spool: Arc<Spool>) -> Self {
        self.spool = Some(spool);
        self
    }

    /// Shares `roster` (the process's copy of the deleted users, refreshed elsewhere) instead of its own.
    #[must_use]
    pub fn with_roster(mut self, roster: Arc<Roster>) -> Self {
        self.roster = roster;
        self
    }

    pub fn spool(&self) -> Option<&Arc<Spool>> {
        self.spool.as_ref()
    }

    pub fn source(&self, name: &str) -> Option<&Source> {
        self.sources.get(name)
    }

    pub fn sources(&self) -> impl Iterator<Item = &Source> {
        self.sources.values()
    }

    /// Verifies the raw body, parses it, matches the rules and queues the operations.
    pub async fn accept(
        &self,
        source: &Source,
        headers: &dyn Headers,
        body: &[u8],
        peer: Option<IpAddr>,
    ) -> Result<Accepted, IntakeError> {
        let now = now_ms();
        let now_unix = i64::try_from(now / 1000).unwrap_or(i64::MAX);
        source.verifier.verify(&Request { headers, body, peer, now_unix })?;
        let parsed = source.format.parse(body)?;
        // Replay protection on top of de-duplication, where the scheme has a window and the payload a time.
        if let (Some(tolerance), Some(sent_at)) = (source.verifier.replay_tolerance(), parsed.sent_at) {
            crate::verify::check_timestamp(sent_at.timestamp(), now_unix, tolerance)?;
        }
        if let [Observation::Ignored { kind }] = parsed.observations.as_slice() {
            tracing::debug!(kind, "payload type not used by followd; acknowledged");
            metrics::counter!("followd_webhooks_ignored_total", "source" => source.name.clone()).increment(1);
            return Ok(Accepted::Ignored { kind: kind.clone() });
        }
        let Some(spool) = &self.spool else { return self.admit(source, parsed, now).await };
        let ids = event_ids(&parsed);
        if !spool.is_empty() {
            // Behind what waits already, so the order webhooks arrived in holds.
            return self.spool_webhook(spool, source, ids, body, now).await;
        }
        match self.admit(source, parsed, now).await {
            Err(error @ (IntakeError::Queue(_) | IntakeError::QueueTimeout(_))) => {
                tracing::warn!(%error, "the queue is unavailable; the webhook goes to the local spool");
                self.spool_webhook(spool, source, ids, body, now).await
            }
            other => other,
        }
    }

    /// Writes a verified webhook to the spool (on disk when this returns) and answers as the queue would have.
    async fn spool_webhook(
        &self,
        spool: &Spool,
        source: &Source,
        event_ids: Vec<EventId>,
        body: &[u8],
        now: Millis,
    ) -> Result<Accepted, IntakeError> {
        spool.push(&source.name, now, body).await?;
        metrics::counter!("followd_spool_spooled_total", "source" => source.name.clone()).increment(1);
        Ok(Accepted::Spooled { event_ids })
    }

    /// Steps 2 and 3 for a verified, parsed webhook received at `now`: names, memory, rules, enqueue.
    async fn admit(&self, source: &Source, parsed: crate::event::Parsed, now: Millis) -> Result<Accepted, IntakeError> {
        if let [Observation::User(change)] = parsed.observations.as_slice() {
            let recorded = tokio::time::timeout(self.queue_timeout, self.roster.apply(change, now));
            let changed = recorded.await.map_err(|_| IntakeError::QueueTimeout(self.queue_timeout))??;
            return Ok(Accepted::User { user: change.user_id.clone(), status: change.status, changed });
        }
        let rules = self.rules.current();
        let names = names::look_up(self.pipeline_names.as_deref(), &parsed.observations, &rules).await;
        let bounded = tokio::time::timeout(self.queue_timeout, async {
            let occurrences = occurrences(&*self.memory, parsed, now, &names).await?;
            let mut batch = plan(&occurrences, &rules, self.ownership);
            self.roster.spare_deleted(&mut batch);
            for event in occurrences.iter().flat_map(|o| &o.events) {
                metrics::counter!("followd_events_total", "kind" => event.kind.name()).increment(1);
            }
            let summaries = summaries(&occurrences, &batch, now);
            let stale: Vec<EventId> = occurrences.iter().filter(|o| o.stale).map(|o| o.id.clone()).collect();
            let ids: Vec<EventId> = occurrences.iter().map(|o| o.id.clone()).collect();
            Ok::<_, IntakeError>((self.queue.enqueue(batch, now).await?, summaries, stale, ids))
        });
        let (mut outcome, summaries, stale, ids) =
            bounded.await.map_err(|_| IntakeError::QueueTimeout(self.queue_timeout))??;
        // An opportunity's entry has an id of its own: the sender hears of its own ids only.
        outcome.accepted.retain(|id| ids.contains(id));
        if outcome.accepted.is_empty() {
            return Ok(Accepted::Duplicate);
        }
        let newly_stale = outcome.accepted.iter().filter(|id| stale.contains(id)).count();
        if newly_stale > 0 {
            tracing::info!(
                stale = newly_stale,
                "a whole-state payload older than the state applied; acknowledged, nothing done"
            );
            metrics::counter!("followd_events_stale_total", "source" => source.name.clone())
                .increment(newly_stale as u64);
        }
        if newly_stale == outcome.accepted.len() {
            return Ok(Accepted::Stale);
        }
        for summary in summaries.into_iter().filter(|d| outcome.accepted.contains(&d.event_id)) {
            self.decisions.record(Decision { source: source.name.clone(), ..summary });
        }
        if outcome.operations > 0 {
            self.wake.notify_waiters();
        }
        metrics::counter!("followd_operations_enqueued_total").increment(outcome.operations as u64);
        Ok(Accepted::Queued { event_ids: outcome.accepted, operations: outcome.operations })
    }
}

/// The event ids a parsed payload carries, in order, without repeats (what a 202 names).
fn event_ids(parsed: &crate::event::Parsed) -> Vec<EventId> {
    let mut ids: Vec<EventId> = Vec::new();
    for id in parsed.observations.iter().filter_map(occurrences::event_id) {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

/// The status page's decisions for a planned batch: one per occurrence, its opportunities' operations counted
/// with it (their entries follow the occurrences', under `<event id>@<opportunity id>`).
fn summaries(occurrences: &[Occurrence], batch: &[EventOps], now: Millis) -> Vec<Decision> {
    let mut decisions: Vec<Decision> = occurrences.iter().zip(batch).map(|(o, b)| summarize(o, b, now)).collect();
    for entry in batch.iter().skip(occurrences.len()) {
        let of = |d: &&mut Decision| {
            entry.event_id.as_str().strip_prefix(d.event_id.as_str()).is_some_and(|r| r.starts_with('@'))
        };
        if let Some(decision) = decisions.iter_mut().find(of) {
            decision.operations += entry.ops.len();
            for op in &entry.ops {
                if !decision.rules.iter().any(|rule| **rule == *op.rule) {
                    decision.rules.push(op.rule.to_string());
                }
            }
            if decision.operations > 0 {
                decision.delivery = Outcome::Queued;
            }
        }
    }
    decisions
}

/// A decision for the status page: the events, the rules that fired and the operations queued.
fn summarize(occurrence: &Occurrence, ops: &EventOps, now: Millis) -> Decision {
    let describe = |kind: &EventKind| match kind {
        EventKind::TagAdded { tag } => format!("tag_added {tag}"),
        EventKind::TagRemoved { tag } => format!("tag_removed {tag}"),
        EventKind::ContactCreated { source } => format!("contact_created {}", source.as_deref().unwrap_or("-")),
        EventKind::StageChanged { pipeline, stage, .. } => format!("stage_changed {pipeline} / {stage}"),
        EventKind::AssignedChanged { record, assigned_to, from, .. } => {
            let who =
                |user: &Option<crate::event::UserId>| user.as_ref().map_or("nobody".to_owned(), |u| u.to_string());
            format!("assigned_changed {} {} -> {}", record.name(), who(from), who(assigned_to))
        }
    };
    let mut rules: Vec<String> = ops.ops.iter().map(|op| op.rule.to_string()).collect();
    rules.dedup();
    Decision {
        at: now,
        source: String::new(),
        event_id: occurrence.id.clone(),
        location_id: occurrence.contact.location_id.clone(),
        contact_id: occurrence.contact.contact_id.clone(),
        events: occurrence.events.iter().map(|e| describe(&e.kind)).collect(),
        rules,
        operations: ops.ops.len(),
        delivery: if ops.ops.is_empty() { Outcome::NothingToDo } else { Outcome::Queued },
    }
}

/// Matches each occurrence's events against the rules: the operations to queue, per event id, in order.
/// A rule without its own `ownership` gets `ownership`, the configuration's `followers.ownership`.
///
/// The first entries are the occurrences' own, one each, in order (their contacts' operations); then, for
/// rules with `target = "opportunity"`, one entry per opportunity, queued under the opportunity's key with an
/// event id of its own (`<event id>@<opportunity id>`), so the queue de-duplicates it like the event. An event
/// that names no opportunity gives such a rule nothing to change.
pub fn plan(occurrences: &[Occurrence], rules: &RuleSet, ownership: Ownership) -> Vec<EventOps> {
    let mut planned: Vec<EventOps> = Vec::with_capacity(occurrences.len());
    let mut opportunities: Vec<EventOps> = Vec::new();
    for occurrence in occurrences {
        let mut ops = Vec::new();
        for event in &occurrence.events {
            for matched in rules.evaluate(event) {
                metrics::counter!("followd_rule_matches_total", "rule" => matched.rule.to_string()).increment(1);
                let (rule, ownership) = (&matched.rule, matched.ownership.unwrap_or(ownership));
                let planned = matched.actions.into_iter().map(|action| {
                    let adds = matches!(action, crate::rules::Action::Add(_) | crate::rules::Action::RoundRobin(_));
                    let lasts = matched.lasts.filter(|_| adds);
                    let unless = matched.skip_if_following.clone();
                    PlannedOp { rule: Arc::clone(rule), action, ownership, lasts, unless }
                });
                if matched.target == Target::Contact {
                    ops.extend(planned);
                } else if let Some(entry) = opportunity_entry(&mut opportunities, occurrence, event) {
                    entry.ops.extend(planned);
                }
            }
        }
        planned.push(EventOps {
            event_id: occurrence.id.clone(),
            contact: occurrence.contact.clone(),
            ops,
            background: false,
        });
    }
    planned.extend(opportunities);
    planned
}

/// The entry an opportunity's operations for `event` go to (made when first needed); `None` when the event
/// names no opportunity.
fn opportunity_entry<'a>(
    entries: &'a mut Vec<EventOps>,
    occurrence: &Occurrence,
    event: &crate::event::Event,
) -> Option<&'a mut EventOps> {
    let opportunity = event.kind.opportunity_id()?;
    let contact_id = crate::event::ContactId::opportunity(opportunity).ok()?;
    let contact = crate::event::ContactKey { location_id: occurrence.contact.location_id.clone(), contact_id };
    let at = match entries.iter().position(|e| e.contact == contact) {
        Some(at) => at,
        None => {
            let joined = format!("{}@{opportunity}", occurrence.id);
            // Over the id length bound: its hash, as stable as the joined text.
            let event_id = EventId::parse(&joined)
                .or_else(|_| EventId::parse(&hex::encode(sha2::Sha256::digest(joined.as_bytes()))))
                .ok()?;
            entries.push(EventOps { event_id, contact, ops: Vec::new(), background: false });
            entries.len() - 1
        }
    };
    entries.get_mut(at)
}
