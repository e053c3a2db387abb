//! [`Application`]: builds every part from the configuration, binds the listener, and runs until told to stop.
//!
//! `build` makes the embedded-default choices and says so at start: no `redis_url` → the redb queue in
//! `data_dir`; no upstream token → the dry run; `--role` decides whether the webhook route, the workers or
//! both run (health and metrics are served in every role, for probes). Port 0 picks a free port: tests read it
//! back with [`Application::port`]. Two applications in one process share nothing but the metrics registry.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer, web};
use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::health::{self, HealthState};
use super::status::{self, StatusState};
use super::webhook::{self, WebhookState};
use crate::config::{Config, ConfigError};
use crate::decisions::Decisions;
use crate::deliver::limit::Limits;
use crate::deliver::retry::{Backoff, Policy};
use crate::deliver::{Deliverer, Workers};
use crate::intake::{Intake, Source};
use crate::queue::{Queue, QueueError};
use crate::rules::{LiveRules, RulesError};
use crate::upstream::Upstream;
use crate::upstream::pipelines::PipelineNames;

/// Which parts of the pipeline this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Role {
    /// Receiver and workers.
    #[default]
    All,
    /// Takes webhooks and queues them; delivers nothing.
    Receiver,
    /// Delivers from the queue; takes no webhooks.
    Worker,
}

/// Why the service could not start. Each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the rules in {dir} do not compile:\n{source}")]
    Rules { dir: std::path::PathBuf, source: RulesError },
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// A built service, bound and ready to run.
pub struct Application {
    addr: SocketAddr,
    server: actix_web::dev::Server,
    workers: Option<Workers>,
    queue: Arc<dyn Queue>,
    shutdown_grace: Duration,
    /// Stops the rules watcher and the SIGHUP handler when the application ends (or is dropped unstarted).
    _stop_reloading: DropGuard,
}

impl Application {
    /// Loads the rules, opens the queue, binds the listener and starts the workers (per `role`).
    pub async fn build(config: Config, role: Role) -> Result<Self, StartupError> {
        let metrics = crate::telemetry::metrics();
        let rules = LiveRules::load(&config.rules_dir)
            .map_err(|source| StartupError::Rules { dir: config.rules_dir.clone(), source })?;
        let reloading = CancellationToken::new();
        // Dropped with the application, or by an early return below: either way the watcher and SIGHUP stop.
        let stop_reloading = reloading.clone().drop_guard();
        if let Err(error) = rules.watch(reloading.clone()) {
            tracing::warn!(%error, "rule files are not watched; send SIGHUP to reload them");
        }
        #[cfg(unix)]
        tokio::spawn(Arc::clone(&rules).reload_on_sighup(reloading.clone()));

        let queue = crate::queue::open(&config).await?;

        let upstream = Arc::new(Upstream::from_config(&config.upstream, &config.base_dir, Arc::clone(&queue))?);
        if upstream.is_dry_run() {
            tracing::warn!(
                "no upstream token configured: dry run, follower calls are logged and counted, none is sent"
            );
        } else {
            tracing::info!(base_url = %config.upstream.base_url, "upstream: live");
        }

        let sources = if config.source.is_empty() {
            tracing::warn!(
                "no [[source]] configured: POST /webhooks/ghl (GoHighLevel's signatures) and /webhooks/generic, \
                 which accepts unsigned requests from loopback only"
            );
            Source::defaults()
        } else {
            config.source.iter().map(|s| Source::from_config(s, &config.base_dir)).collect::<Result<_, _>>()?
        };
        for source in &sources {
            tracing::info!(source = %source.name, format = ?source.format, scheme = source.verifier.scheme(), "webhook source");
        }

        let wake = Arc::new(Notify::new());
        let decisions = Arc::new(Decisions::default());
        let admin_token = match &config.admin.token {
            Some(token) => Some(
                token
                    .resolve(&config.base_dir)
                    .map_err(|e| ConfigError::Invalid(format!("admin.token ({token:?}): {e}")))?,
            ),
            None => None,
        };
        let status_state = web::Data::new(StatusState {
            queue: Arc::clone(&queue),
            rules: Arc::clone(&rules),
            decisions: Arc::clone(&decisions),
            admin_token,
            daily_budget: crate::deliver::limit::Limits::new(
                config.rate_limit.per_location,
                config.rate_limit.daily_per_location,
            )
            .daily,
        });
        let pipeline_names = (!upstream.is_dry_run()).then(|| Arc::new(PipelineNames::new(Arc::clone(&upstream))));
        let webhook_state = web::Data::new(WebhookState {
            intake: Intake::new(
                sources,
                Arc::clone(&rules),
                Arc::clone(&queue),
                Arc::clone(&wake),
                pipeline_names,
                Arc::clone(&decisions),
            ),
            max_body_bytes: config.max_body_bytes.get(),
            retry_after: config.queue.retry_after,
        });
        let health_state =
            web::Data::new(HealthState { queue: Arc::clone(&queue), rules: Arc::clone(&rules), metrics });

        let listener =
            TcpListener::bind(config.listen).map_err(|source| StartupError::Bind { addr: config.listen, source })?;
        let addr = listener.local_addr().map_err(|source| StartupError::Bind { addr: config.listen, source })?;
        let receive = role != Role::Worker;
        let mut server = HttpServer::new(move || {
            let app = App::new()
                .app_data(health_state.clone())
                .route("/healthz", web::get().to(health::healthz))
                .route("/readyz", web::get().to(health::readyz))
                .route("/metrics", web::get().to(health::metrics))
                .app_data(status_state.clone())
                .route("/", web::get().to(status::status))
                .route("/login", web::post().to(status::login))
                .default_service(web::to(super::error::not_found));
            if receive {
                app.app_data(webhook_state.clone()).route("/webhooks/{source}", web::post().to(webhook::receive))
            } else {
                app
            }
        })
        .disable_signals()
        .shutdown_timeout(config.shutdown_grace.as_secs().max(1));
        if config.http_workers > 0 {
            server = server.workers(config.http_workers);
        }
        let server = server.listen(listener).map_err(|source| StartupError::Bind { addr, source })?.run();
        tracing::info!(%addr, ?role, "listening");

        let workers = (role != Role::Receiver).then(|| {
            let limits = Limits::new(config.rate_limit.per_location, config.rate_limit.daily_per_location);
            let delivery = &config.delivery;
            let policy = Policy {
                backoff: Backoff { base: delivery.retry_base, cap: delivery.retry_max_delay },
                give_up_after: delivery.give_up_after,
                auth_pause: delivery.auth_pause,
                throttle_pause: delivery.throttle_pause,
                pause_recheck: delivery.pause_recheck,
            };
            let deliverer = Arc::new(Deliverer::new(Arc::clone(&queue), upstream, limits, policy, decisions));
            #[cfg(unix)]
            if let crate::config::Origin::Layers { file } = &config.origin {
                tokio::spawn(crate::deliver::credentials::reload_on_sighup(
                    Arc::clone(&deliverer),
                    file.clone(),
                    reloading.clone(),
                ));
            }
            let reap_every = (config.queue.lease / 4).max(Duration::from_millis(250));
            Workers::spawn(deliverer, config.workers.get(), wake, reap_every)
        });
        Ok(Self {
            addr,
            server,
            workers,
            queue,
            shutdown_grace: config.shutdown_grace,
            _stop_reloading: stop_reloading,
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The queue this application uses, for tools and tests (e.g. waiting until it is idle).
    pub fn queue(&self) -> Arc<dyn Queue> {
        Arc::clone(&self.queue)
    }

    /// Serves until `shutdown` completes; then stops taking webhooks, lets requests and deliveries in flight
    /// finish within `shutdown_grace`, and returns. Work not finished stays in the queue.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let handle = self.server.handle();
        let mut server = tokio::spawn(self.server);
        let stopped_by_itself = tokio::select! {
            result = &mut server => Some(result),
            () = shutdown => None,
        };
        if let Some(result) = stopped_by_itself {
            if let Some(workers) = self.workers {
                workers.shutdown(self.shutdown_grace).await;
            }
            self.queue.close().await;
            return result.unwrap_or_else(|e| Err(std::io::Error::other(e)));
        }
        tracing::info!(
            grace_s = self.shutdown_grace.as_secs(),
            "shutting down: no new webhooks, finishing work in flight"
        );
        let (_, ()) = tokio::join!(handle.stop(true), async {
            if let Some(workers) = self.workers {
                workers.shutdown(self.shutdown_grace).await;
            }
        });
        let result = server.await.unwrap_or_else(|e| Err(std::io::Error::other(e)));
        self.queue.close().await;
        tracing::info!("stopped");
        result
    }
}
