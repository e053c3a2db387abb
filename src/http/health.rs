//! `GET /healthz` (the process runs), `GET /readyz` (rules loaded and the queue answers) and `GET /metrics`.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::queue::Queue;

use crate::rules::LiveRules;
use crate::spool::Spool;

/// How long `/readyz` waits for the queue before calling it unavailable.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

pub struct HealthState {
    pub queue: Arc<dyn Queue>,
    /// A receiver's spool on Redis: while it takes webhooks, the receiver is ready even without Redis.
    pub spool: Option<Arc<Spool>>,
    pub rules: Arc<LiveRules>,
    pub metrics: PrometheusHandle,
}

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

pub async fn readyz(state: web::Data<HealthState>) -> HttpResponse {
    let rules = state.rules.current().summary().to_string();
    // A failed reload leaves the previous rules serving, so the process stays ready; the body says what failed.
    let reload = state.rules.status();
    let ready = |queue: &str| {
        HttpResponse::Ok().json(json!({ "status": "ready", "queue": queue, "rules": rules, "rules_reload": reload }))
    };
    let spooling = state.spool.as_ref().is_some_and(|spool| !spool.is_empty());
    let problem = match tokio::time::timeout(PING_TIMEOUT, state.queue.ping()).await {
        Ok(Ok(())) if !spooling => return ready("ok"),
        Ok(Ok(())) => return ready("spooling"),
        Ok(Err(e)) => format!("the queue is unavailable: {e}"),
        Err(_) => format!("the queue did not answer within {}s", PING_TIMEOUT.as_secs()),
    };
    // A receiver with a spool still takes webhooks: it stays in the load balancer.
    if state.spool.is_some() { ready("spooling") } else { not_ready(problem) }
}

fn not_ready(message: String) -> HttpResponse {
    HttpResponse::ServiceUnavailable().json(json!({ "error": "not_ready", "message": message }))
}

pub async fn metrics(state: web::Data<HealthState>) -> HttpResponse {
    if let Ok(stats) = state.queue.stats().await {
        metrics::gauge!("followd_queue_contacts", "state" => "ready").set(stats.ready as f64);
        metrics::gauge!("followd_queue_contacts", "state" => "leased").set(stats.leased as f64);
        metrics::gauge!("followd_queue_operations_pending").set(stats.pending as f64);
        metrics::gauge!("followd_queue_dead_letters").set(stats.dead as f64);
    }
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.metrics.render())
}
