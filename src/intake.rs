//! What a webhook becomes: verified, parsed into events, matched against the live rules and queued durably.
//!
//! This is the request path without HTTP: `http/webhook.rs` reads the body and maps [`IntakeError`] to a
//! status; `followd rules explain` runs the same [`plan`] without queueing. A webhook is answered only after
//! [`Intake::accept`] returns, i.e. after its operations are committed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use crate::config::{ConfigError, SourceConfig, VerifyConfig};
use crate::event::{Event, EventId, Format, PayloadError};
use crate::queue::{ContactKey, EventOps, PlannedOp, Queue, QueueError, now_ms};
use crate::rules::RuleSet;
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
        }
        .map_err(|e| invalid(&e))?;
        Ok(Self { name: config.name.clone(), format: config.format, verifier })
    }

    /// The sources offered when none is configured: `generic`, which with no secret accepts only requests
    /// from loopback (so a fresh install is not an open relay).
    pub fn defaults() -> Vec<Self> {
        vec![Self { name: "generic".to_owned(), format: Format::Generic, verifier: Verifier::loopback_only() }]
    }
}

/// What an accepted webhook led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Newly accepted events (ids already seen are skipped) and the operations queued for them.
    Queued { event_ids: Vec<EventId>, operations: usize },
    /// Every event id was seen before: nothing was done.
    Duplicate,
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
    rules: Arc<ArcSwap<RuleSet>>,
    queue: Arc<dyn Queue>,
    /// Poked after each enqueue so idle workers of this process start at once.
    wake: Arc<Notify>,
    /// Bound on one enqueue, so a sender gets its retry answer quickly when the queue hangs.
    queue_timeout: Duration,
}

impl Intake {
    pub fn new(sources: Vec<Source>, rules: Arc<ArcSwap<RuleSet>>, queue: Arc<dyn Queue>, wake: Arc<Notify>) -> Self {
        let sources = sources.into_iter().map(|s| (s.name.clone(), s)).collect();
        Self { sources, rules, queue, wake, queue_timeout: Duration::from_secs(5) }
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
        let events = source.format.parse(body)?;
        let rules = self.rules.load();
        let batch = plan(&events, &rules)?;
        for event in &events {
            metrics::counter!("followd_events_total", "kind" => event.kind.name()).increment(1);
        }
        let enqueue = self.queue.enqueue(batch, now);
        let outcome = tokio::time::timeout(self.queue_timeout, enqueue)
            .await
            .map_err(|_| IntakeError::QueueTimeout(self.queue_timeout))??;
        if outcome.accepted.is_empty() {
            return Ok(Accepted::Duplicate);
        }
        if outcome.operations > 0 {
            self.wake.notify_waiters();
        }
        metrics::counter!("followd_operations_enqueued_total").increment(outcome.operations as u64);
        Ok(Accepted::Queued { event_ids: outcome.accepted, operations: outcome.operations })
    }
}

/// Matches events against the rules and groups the resulting operations per event id, in event order.
/// Events from one payload entry share an id; one id used for two different contacts is a payload error.
pub fn plan(events: &[Event], rules: &RuleSet) -> Result<Vec<EventOps>, PayloadError> {
    let mut batch: Vec<EventOps> = Vec::new();
    for event in events {
        let contact = ContactKey { location_id: event.location_id.clone(), contact_id: event.contact_id.clone() };
        let index = match batch.iter().position(|e| e.event_id == event.id) {
            Some(index) if batch[index].contact != contact => {
                return Err(PayloadError::Invalid {
                    at: format!("event `{}`", event.id),
                    message: "the same id is used for two different contacts; ids must be unique".to_owned(),
                });
            }
            Some(index) => index,
            None => {
                batch.push(EventOps { event_id: event.id.clone(), contact, ops: Vec::new() });
                batch.len() - 1
            }
        };
        for matched in rules.evaluate(event) {
            metrics::counter!("followd_rule_matches_total", "rule" => matched.rule.to_string()).increment(1);
            let ops = matched.actions.into_iter().map(|action| PlannedOp { rule: Arc::clone(&matched.rule), action });
            batch[index].ops.extend(ops);
        }
    }
    Ok(batch)
}
