//! `serve`'s own reconcile runs, every `reconcile.every`, one location at a time, to repair drift: followers
//! people removed or added against the rules, webhooks that never came.
//!
//! The locations are those the configuration names (`upstream.tokens`, OAuth's `refresh_tokens`) and those
//! webhooks came from since this process started. A run uses the service's own store, so it works on the
//! embedded store too, and its record (`followd reconcile status`, the status page) is the same as a
//! command's. A failed run is logged and tried again at the next turn, resuming from its cursor.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Reconciler;
use super::progress::Progress;
use crate::decisions::Decisions;
use crate::event::LocationId;
use crate::rules::LiveRules;

/// Runs every `every` until `stop`. `make` builds a reconciler over the rules live at the start of each run.
pub async fn run_every(
    every: Duration,
    configured: Vec<LocationId>,
    decisions: Arc<Decisions>,
    rules: Arc<LiveRules>,
    make: impl Fn(Arc<crate::rules::RuleSet>) -> Reconciler + Send + Sync,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let locations: BTreeSet<LocationId> = configured.iter().cloned().chain(decisions.locations()).collect();
        for location in locations {
            let reconciler = make(rules.current());
            let mut progress = Progress::new(true);
            let run = tokio::select! {
                () = stop.cancelled() => return,
                run = reconciler.apply(&location, &mut progress) => run,
            };
            match run {
                Ok((run, _)) => tracing::info!(
                    %location,
                    run = run.id,
                    read = run.contacts_read,
                    changed = run.contacts_changed,
                    "scheduled reconcile done"
                ),
                Err(error) => tracing::warn!(%location, %error, "scheduled reconcile stopped; it resumes next time"),
            }
        }
    }
}
