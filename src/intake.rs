//! What a webhook becomes: verified, parsed into events, matched against the live rules and queued durably.
//!
//! This is the request path without HTTP: `http/webhook.rs` reads the body and maps [`IntakeError`] to a
//! status; `followd rules explain` runs the same [`plan`] without queueing. A webhook is answered only after
//! [`Intake::accept`] returns, i.e. after its operations are committed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::sync::Notify;

use crate::config::{ConfigError, SourceConfig, VerifyConfig};
use crate::decisions::{Decision, Decisions};
use crate::event::{Event, EventId, EventKind, Format, Observation, PayloadError};
use crate::queue::{ContactKey, EventOps, Millis, PlannedOp, Queue, QueueError, now_ms};
use crate::rules::{LiveRules, RuleSet};
use crate::upstream::pipelines::PipelineNames;
use crate::verify::{Headers, Request, Verifier, VerifyError};

/// A webhook source: `POST /webhooks/{name}`, its payload format and how its requests are verified.
#[derive(Debug)]
pub struct Source {
    pub name: String,
    pub format: Format,
    pub verifier: Verifier,
}

impl Source {
    /// Builds a source from its configuration, resolving its secrets.
    pub fn from_config(config: &SourceConfig, base_dir: &std::path::Path) -> Result<Self, ConfigError> {
        let invalid = |e: &dyn std::fmt::Display| ConfigError::Invalid(format!("source `{}`: {e}", config.name));
        let resolve = |secrets: &[crate::config::SecretRef]| {
            secrets.iter().map(|s| s.resolve(base_dir).map_err(|e| invalid(&e))).collect::<Result<Vec<_>, _>>()
        };
        let verifier = match &config.verify {
            VerifyConfig::HmacSha256 { header, secrets } => Verifier::hmac_sha256(header, resolve(secrets)?),
            VerifyConfig::Token { header, tokens } => Verifier::token(header, resolve(tokens)?),
            VerifyConfig::StandardWebhooks { secrets, tolerance } => {
                Verifier::standard_webhooks(resolve(secrets)?, *tolerance)
            }
            VerifyConfig::Ghl { public_keys: None, tolerance } => Ok(Verifier::ghl_builtin(*tolerance)),
            VerifyConfig::Ghl { public_keys: Some(keys), tolerance } => {
                let pems = resolve(keys)?.iter().map(|k| k.expose_secret().to_owned()).collect();
                Verifier::ghl(pems, *tolerance)
            }
        }
        .map_err(|e| invalid(&e))?;
        Ok(Self { name: config.name.clone(), format: config.format, verifier })
    }

    /// The sources offered when none is configured: `ghl`, verified with GoHighLevel's published keys, and
    /// `generic`, which with no secret accepts only requests from loopback (so a fresh install is not an open
    /// relay).
    pub fn defaults() -> Vec<Self> {
        vec![
            Self {
                name: "ghl".to_owned(),
                format: Format::Ghl,
                verifier: Verifier::ghl_builtin(Duration::from_secs(300)),
            },
            Self { name: "generic".to_owned(), format: Format::Generic, verifier: Verifier::loopback_only() },
        ]
    }
}

/// What an accepted webhook led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Newly accepted events (ids already seen are skipped) and the operations queued for them.
    Queued { event_ids: Vec<EventId>, operations: usize },
    /// Every event id was seen before: nothing was done.
    Duplicate,
    /// A payload type followd does not use (the CRM sends every subscribed type to one URL).
    Ignored { kind: String },
}

/// One payload entry's events: one id, one contact. An entry may yield no event (a tag list that did not
/// change) and is still remembered for de-duplication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occurrence {
    pub id: EventId,
    pub contact: ContactKey,
    pub events: Vec<Event>,
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
}

/// The receiving side of the pipeline, shared by every HTTP worker.
pub struct Intake {
    sources: HashMap<String, Source>,
    /// The rules in service, read once per webhook: a reload never splits one webhook's events.
    rules: Arc<LiveRules>,
    queue: Arc<dyn Queue>,
    /// Poked after each enqueue so idle workers of this process start at once.
    wake: Arc<Notify>,
    /// Bound on one enqueue, so a sender gets its retry answer quickly when the queue hangs.
    queue_timeout: Duration,
    /// Names for GoHighLevel's pipeline and stage ids; `None` without the CRM (dry run).
    pipeline_names: Option<Arc<PipelineNames>>,
    /// What the status page shows of recent webhooks.
    decisions: Arc<Decisions>,
}

impl Intake {
    pub fn new(
        sources: Vec<Source>,
        rules: Arc<LiveRules>,
        queue: Arc<dyn Queue>,
        wake: Arc<Notify>,
        pipeline_names: Option<Arc<PipelineNames>>,
        decisions: Arc<Decisions>,
    ) -> Self {
        let sources = sources.into_iter().map(|s| (s.name.clone(), s)).collect();
        Self { sources, rules, queue, wake, queue_timeout: Duration::from_secs(5), pipeline_names, decisions }
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
        let bounded = tokio::time::timeout(self.queue_timeout, async {
            let rules = self.rules.current();
            let names = self.pipeline_names.as_deref().map(|resolver| (resolver, &*rules));
            let occurrences = resolve(&*self.queue, parsed.observations, now, names).await?;
            let batch = plan(&occurrences, &rules);
            for event in occurrences.iter().flat_map(|o| &o.events) {
                metrics::counter!("followd_events_total", "kind" => event.kind.name()).increment(1);
            }
            let summaries: Vec<_> = occurrences.iter().zip(&batch).map(|(o, b)| summarize(o, b, now)).collect();
            Ok::<_, IntakeError>((self.queue.enqueue(batch, now).await?, summaries))
        });
        let (outcome, summaries) = bounded.await.map_err(|_| IntakeError::QueueTimeout(self.queue_timeout))??;
        if outcome.accepted.is_empty() {
            return Ok(Accepted::Duplicate);
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

/// A decision for the status page: the events, the rules that fired and the operations queued.
fn summarize(occurrence: &Occurrence, ops: &EventOps, now: Millis) -> Decision {
    let describe = |kind: &EventKind| match kind {
        EventKind::TagAdded { tag } => format!("tag_added {tag}"),
        EventKind::TagRemoved { tag } => format!("tag_removed {tag}"),
        EventKind::ContactCreated { source } => format!("contact_created {}", source.as_deref().unwrap_or("-")),
        EventKind::StageChanged { pipeline, stage, .. } => format!("stage_changed {pipeline} / {stage}"),
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
        delivery: if ops.ops.is_empty() { "nothing to do".to_owned() } else { crate::decisions::QUEUED.to_owned() },
    }
}

/// Turns observations into occurrences, reading and updating the queue's stored state where a payload
/// carries a whole tag list or a stage without its predecessor. Events sharing an id (one generic entry)
/// form one occurrence; one id used for two contacts is a payload error.
pub async fn resolve(
    queue: &dyn Queue,
    observations: Vec<Observation>,
    now: Millis,
    names: Option<(&PipelineNames, &RuleSet)>,
) -> Result<Vec<Occurrence>, IntakeError> {
    let mut occurrences: Vec<Occurrence> = Vec::new();
    for observation in observations {
        let (id, contact, events) = match observation {
            Observation::Event(event) => {
                let contact =
                    ContactKey { location_id: event.location_id.clone(), contact_id: event.contact_id.clone() };
                (event.id.clone(), contact, vec![event])
            }
            Observation::Tags { id, location_id, contact_id, occurred_at, tags, created, source } => {
                let contact = ContactKey { location_id: location_id.clone(), contact_id: contact_id.clone() };
                let diff = queue.diff_tags(&contact, &id, &tags, now).await?;
                let event = |kind| Event {
                    id: id.clone(),
                    location_id: location_id.clone(),
                    contact_id: contact_id.clone(),
                    occurred_at,
                    kind,
                };
                let created = created.then(|| event(EventKind::ContactCreated { source }));
                let removed = diff.removed.into_iter().map(|tag| event(EventKind::TagRemoved { tag }));
                let added = diff.added.into_iter().map(|tag| event(EventKind::TagAdded { tag }));
                let events = created.into_iter().chain(removed).chain(added).collect();
                (id, contact, events)
            }
            Observation::Stage { id, location_id, contact_id, occurred_at, opportunity_id, pipeline, stage } => {
                let previous = queue.swap_stage(&location_id, &opportunity_id, &id, &stage, now).await?;
                let contact = ContactKey { location_id: location_id.clone(), contact_id: contact_id.clone() };
                // App webhooks carry ids: add the names, so rules written with names match too.
                let names = match names {
                    Some((resolver, rules)) => resolver
                        .map(&location_id, rules)
                        .await
                        .map(|map| Box::new(map.names(&pipeline, &stage, previous.as_deref()))),
                    None => None,
                };
                let kind = EventKind::StageChanged { pipeline, stage, from_stage: previous, names };
                (id.clone(), contact, vec![Event { id, location_id, contact_id, occurred_at, kind }])
            }
            Observation::ContactDeleted { id, location_id, contact_id } => {
                let contact = ContactKey { location_id, contact_id };
                queue.forget_contact(&contact).await?;
                (id, contact, Vec::new())
            }
            Observation::Ignored { .. } => continue,
        };
        match occurrences.iter_mut().find(|o| o.id == id) {
            Some(existing) if existing.contact != contact => {
                return Err(IntakeError::Payload(PayloadError::Invalid {
                    at: format!("event `{id}`"),
                    message: "the same id is used for two different contacts; ids must be unique".to_owned(),
                }));
            }
            Some(existing) => existing.events.extend(events),
            None => occurrences.push(Occurrence { id, contact, events }),
        }
    }
    Ok(occurrences)
}

/// Matches each occurrence's events against the rules: the operations to queue, per event id, in order.
pub fn plan(occurrences: &[Occurrence], rules: &RuleSet) -> Vec<EventOps> {
    occurrences
        .iter()
        .map(|occurrence| {
            let mut ops = Vec::new();
            for event in &occurrence.events {
                for matched in rules.evaluate(event) {
                    metrics::counter!("followd_rule_matches_total", "rule" => matched.rule.to_string()).increment(1);
                    let rule = &matched.rule;
                    ops.extend(matched.actions.into_iter().map(|action| PlannedOp { rule: Arc::clone(rule), action }));
                }
            }
            EventOps { event_id: occurrence.id.clone(), contact: occurrence.contact.clone(), ops }
        })
        .collect()
}
