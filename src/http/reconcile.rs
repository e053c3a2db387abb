//! `POST /reconcile/{location}` starts a reconcile apply in this service, and `GET /reconcile` lists the runs.
//!
//! On the embedded store the running service holds the store's file, so `followd reconcile --location LOC` (an
//! apply) and `followd reconcile status` cannot open it: they ask the service through these routes instead
//! (`commands.rs`). A run started here is the same as a scheduled one: the service's store, its workers, its
//! budget share. The routes are protected like the status page (admin token, else loopback only) and exist only
//! where this process delivers and is not a dry run.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::status::{StatusState, refusal};
use crate::event::LocationId;
use crate::queue::RunLog;
use crate::reconcile::Reconciler;
use crate::reconcile::progress::Progress;
use crate::rules::{LiveRules, RuleSet};

/// Builds a reconciler over the rules live at the start of a run.
pub type MakeReconciler = Arc<dyn Fn(Arc<RuleSet>) -> Reconciler + Send + Sync>;

pub struct ReconcileState {
    pub make: MakeReconciler,
    pub rules: Arc<LiveRules>,
    pub runs: Arc<dyn RunLog>,
    /// Locations with a run started here and not finished: a second one for the same location is refused.
    pub running: Arc<Mutex<BTreeSet<LocationId>>>,
    pub tasks: TaskTracker,
    pub stop: CancellationToken,
}

/// `POST /reconcile/{location}`: 202 once the run has started; 409 while one started here runs.
pub async fn start(
    request: HttpRequest,
    location: web::Path<String>,
    status: web::Data<StatusState>,
    state: web::Data<ReconcileState>,
) -> HttpResponse {
    if let Some(refused) = refusal(&request, &status) {
        return refused;
    }
    let location = match LocationId::parse(&location) {
        Ok(location) => location,
        Err(e) => return HttpResponse::BadRequest().json(json!({ "error": "bad_location", "message": e.to_string() })),
    };
    if !state.running.lock().unwrap_or_else(|p| p.into_inner()).insert(location.clone()) {
        let message = format!("a reconcile of {location} started here is still running");
        return HttpResponse::Conflict().json(json!({ "error": "running", "message": message }));
    }
    let reconciler = (state.make)(state.rules.current());
    let (running, stop, started) = (Arc::clone(&state.running), state.stop.clone(), location.clone());
    state.tasks.spawn(async move {
        let mut progress = Progress::new(true);
        let run = tokio::select! {
            () = stop.cancelled() => None,
            run = reconciler.apply(&started, &mut progress) => Some(run),
        };
        match run {
            Some(Ok((run, _))) => tracing::info!(
                location = %started, run = run.id, read = run.contacts_read, changed = run.contacts_changed,
                "reconcile done"
            ),
            Some(Err(error)) => {
                tracing::warn!(location = %started, %error, "reconcile stopped; run it again to resume")
            }
            None => tracing::info!(location = %started, "reconcile stopped by the shutdown; run it again to resume"),
        }
        running.lock().unwrap_or_else(|p| p.into_inner()).remove(&started);
    });
    tracing::info!(%location, "reconcile started on request");
    HttpResponse::Accepted().json(json!({ "location": location.as_str(), "started": true }))
}

/// `GET /reconcile`: every run's record, as `followd reconcile status --json` prints them.
pub async fn runs(
    request: HttpRequest,
    status: web::Data<StatusState>,
    state: web::Data<ReconcileState>,
) -> HttpResponse {
    if let Some(refused) = refusal(&request, &status) {
        return refused;
    }
    match state.runs.runs().await {
        Ok(runs) => HttpResponse::Ok().json(runs),
        Err(e) => {
            HttpResponse::ServiceUnavailable().json(json!({ "error": "queue_unavailable", "message": e.to_string() }))
        }
    }
}
