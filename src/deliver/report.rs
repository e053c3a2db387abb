//! Where a delivery's [`Outcome`] goes: the decisions ring of this process (the status page), the metrics,
//! and, when the store is shared, the store, for status pages of receivers running apart.
//!
//! Writes to the store go through a bounded channel to one background writer, a batch at a time (whatever
//! arrived while the last write ran, one write per location and outcome): a status line must never hold up
//! a delivery. When the channel is full, or the store is down, the line is dropped and counted; the durable
//! record is the audit trail, written with the ack.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::decisions::Decisions;
use crate::domain::outcome::Outcome;
use crate::event::{EventId, LocationId};
use crate::queue::{Lease, Outcomes};

/// Outcomes waiting for the writer; beyond this, new ones are dropped (and counted).
pub const OUTCOME_BUFFER: usize = 1024;
/// Most outcomes one write takes.
const BATCH: usize = 256;

type Note = (LocationId, Vec<EventId>, Outcome);

/// Reports outcomes; shared by every worker of a process.
pub struct Reporter {
    decisions: Arc<Decisions>,
    /// `None` when no other process reads the store's outcomes.
    shared: Option<mpsc::Sender<Note>>,
}

/// The background writer of shared outcomes, to be spawned (and stopped) by its owner.
pub struct OutcomeWriter {
    store: Arc<dyn Outcomes>,
    arriving: mpsc::Receiver<Note>,
}

impl Reporter {
    /// A reporter, and the writer it feeds when `store` is shared with other processes.
    pub fn new(decisions: Arc<Decisions>, store: Arc<dyn Outcomes>) -> (Self, Option<OutcomeWriter>) {
        if !store.is_shared() {
            return (Self { decisions, shared: None }, None);
        }
        let (sender, arriving) = mpsc::channel(OUTCOME_BUFFER);
        (Self { decisions, shared: Some(sender) }, Some(OutcomeWriter { store, arriving }))
    }

    /// Tells the status page and the metrics what became of the lease's events.
    pub fn report(&self, lease: &Lease, outcome: &Outcome) {
        metrics::counter!("followd_deliveries_total", "result" => outcome.label()).increment(1);
        let mut events: Vec<EventId> = lease.ops.iter().map(|op| op.event_id.clone()).collect();
        events.dedup();
        self.decisions.delivered(&events, outcome);
        if let Some(shared) = &self.shared
            && shared.try_send((lease.contact.location_id.clone(), events, outcome.clone())).is_err()
        {
            metrics::counter!("followd_outcomes_dropped_total").increment(1);
        }
    }
}

impl OutcomeWriter {
    /// Writes until `stop`, then writes what is already waiting and returns.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                received = self.arriving.recv_many(&mut batch, BATCH) => if received == 0 { return },
                () = stop.cancelled() => {
                    while batch.len() < BATCH && let Ok(note) = self.arriving.try_recv() {
                        batch.push(note);
                    }
                    self.write(&mut batch).await;
                    return;
                }
            }
            self.write(&mut batch).await;
        }
    }

    async fn write(&self, batch: &mut Vec<Note>) {
        let mut grouped: BTreeMap<(LocationId, String), (Outcome, Vec<EventId>)> = BTreeMap::new();
        for (location, events, outcome) in batch.drain(..) {
            grouped.entry((location, outcome.to_string())).or_insert_with(|| (outcome, Vec::new())).1.extend(events);
        }
        for ((location, _), (outcome, events)) in grouped {
            if let Err(e) = self.store.note_outcome(&location, &events, &outcome).await {
                tracing::debug!(error = %e, "cannot note delivery outcomes for status pages");
                metrics::counter!("followd_outcomes_dropped_total").increment(events.len() as u64);
            }
        }
    }
}
