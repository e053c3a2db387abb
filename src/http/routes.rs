//! The HTTP routes and the state each needs, and the server that serves them on the bound listener.
//!
//! The webhook route exists only where this process receives (`--role all|receiver`); health, readiness,
//! metrics and the status page are served in every role, for probes and operators.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::{App, HttpServer, web};
use metrics_exporter_prometheus::PrometheusHandle;

use super::app::StartupError;
use super::health::{self, HealthState};
use super::reconcile::ReconcileState;
use super::status::{self, StatusState};
use super::webhook::{self, WebhookState};
use crate::config::{Config, ConfigError};
use crate::decisions::Decisions;
use crate::domain::rate::Limits;
use crate::intake::Intake;
use crate::queue::Stores;
use crate::rules::LiveRules;

/// The state of every route, built once and shared by actix's workers.
pub struct Routes {
    health: web::Data<HealthState>,
    status: web::Data<StatusState>,
    /// `None` where this process does not receive webhooks.
    webhook: Option<web::Data<WebhookState>>,
    /// `None` where this process does not deliver, or runs dry.
    reconcile: Option<web::Data<ReconcileState>>,
}

impl Routes {
    pub fn new(
        config: &Config,
        stores: &Stores,
        rules: Arc<LiveRules>,
        decisions: Arc<Decisions>,
        intake: Option<Arc<Intake>>,
        reconcile: Option<ReconcileState>,
        metrics: PrometheusHandle,
    ) -> Result<Self, ConfigError> {
        let answers = Arc::new(super::answers::Answers::default());
        let admin_token = config
            .admin
            .token
            .as_ref()
            .map(|token| token.resolve_named("admin.token", &config.base_dir))
            .transpose()?;
        let status = web::Data::new(StatusState {
            stores: stores.clone(),
            rules: Arc::clone(&rules),
            decisions,
            admin_token,
            daily_budget: Limits::from(&config.rate_limit).daily,
            answers: Arc::clone(&answers),
        });
        let spool = intake.as_ref().and_then(|intake| intake.spool().map(Arc::clone));
        let webhook = intake.map(|intake| {
            web::Data::new(WebhookState {
                intake,
                answers,
                max_body_bytes: config.max_body_bytes.get(),
                retry_after: config.queue.retry_after,
            })
        });
        let health = web::Data::new(HealthState { queue: Arc::clone(&stores.queue), spool, rules, metrics });
        Ok(Self { health, status, webhook, reconcile: reconcile.map(web::Data::new) })
    }
}

/// Binds `config.listen` (port 0: a free port) and starts serving; returns the server and the bound address.
pub fn serve(routes: Routes, config: &Config) -> Result<(actix_web::dev::Server, SocketAddr), StartupError> {
    let listener =
        TcpListener::bind(config.listen).map_err(|source| StartupError::Bind { addr: config.listen, source })?;
    let addr = listener.local_addr().map_err(|source| StartupError::Bind { addr: config.listen, source })?;
    let Routes { health, status, webhook, reconcile } = routes;
    let mut server = HttpServer::new(move || {
        let app = App::new()
            .app_data(health.clone())
            .route("/healthz", web::get().to(health::healthz))
            .route("/readyz", web::get().to(health::readyz))
            .route("/metrics", web::get().to(health::metrics))
            .app_data(status.clone())
            .route("/", web::get().to(status::status))
            .route("/login", web::post().to(status::login))
            .default_service(web::to(super::error::not_found));
        let app = match &reconcile {
            Some(reconcile) => app
                .app_data(reconcile.clone())
                .route("/reconcile", web::get().to(super::reconcile::runs))
                .route("/reconcile/{location}", web::post().to(super::reconcile::start)),
            None => app,
        };
        match &webhook {
            Some(webhook) => {
                app.app_data(webhook.clone()).route("/webhooks/{source}", web::post().to(webhook::receive))
            }
            None => app,
        }
    })
    .disable_signals()
    .shutdown_timeout(config.shutdown_grace.as_secs().max(1));
    if config.http_workers > 0 {
        server = server.workers(config.http_workers);
    }
    let server = server.listen(listener).map_err(|source| StartupError::Bind { addr, source })?.run();
    Ok((server, addr))
}
