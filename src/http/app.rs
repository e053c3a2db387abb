//! [`Application`]: the composition root. Builds every part from its section of the configuration, binds the
//! listener, and runs until told to stop.
//!
//! `build` makes the embedded-default choices and says so at start: no `redis_url` → the redb store in
//! `data_dir`; no upstream token → the dry run; `--role` decides whether the webhook route, the workers or
//! both run (health and metrics are served in every role, for probes). Port 0 picks a free port: tests read it
//! back with [`Application::port`]. Two applications in one process share nothing but the metrics registry.
//!
//! Every background task (rules watcher, SIGHUP listeners, workers, the reaper, the outcome writer) is owned
//! here and stopped at shutdown; none outlives the application.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use super::reconcile::{MakeReconciler, ReconcileState};
use super::routes::{self, Routes};
use crate::config::{Config, ConfigError, Origin};
use crate::decisions::Decisions;
use crate::deliver::retry::Policy;
use crate::deliver::{Deliverer, Workers};
use crate::domain::rate::Limits;
use crate::intake::{Intake, Source};
use crate::queue::{QueueError, StoreOptions, Stores};
use crate::reconcile::Reconciler;
use crate::reconcile::desired::Judgement;
use crate::reconcile::schedule::run_every;
use crate::roster::Roster;
use crate::rules::{LiveRules, RulesError};
use crate::spool::Spool;
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
    #[error(transparent)]
    Spool(#[from] crate::spool::SpoolError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// A built service, bound and ready to run.
pub struct Application {
    addr: SocketAddr,
    server: actix_web::dev::Server,
    workers: Option<Workers>,
    stores: Stores,
    /// The rules watcher and the SIGHUP listeners.
    background: TaskTracker,
    shutdown_grace: Duration,
    /// Stops the background tasks when the application ends (or is dropped unstarted).
    _stop_background: DropGuard,
}

impl Application {
    /// Loads the rules, opens the store, starts the workers (per `role`) and binds the listener.
    pub async fn build(config: Config, role: Role) -> Result<Self, StartupError> {
        let metrics = crate::telemetry::metrics();
        let (background, stop) = (TaskTracker::new(), CancellationToken::new());
        let rules = load_rules(&config, &background, &stop)?;
        // A receiver with a spool starts while Redis is down: the spool takes the webhooks meanwhile.
        let spooled = role != Role::Worker && config.spool.max_bytes > 0;
        let stores = Stores::open(&StoreOptions { connect_later: spooled, ..store_options(&config) }).await?;
        let upstream = Arc::new(open_upstream(&config, &stores)?);
        let decisions = Arc::new(Decisions::default());
        let roster = Arc::new(Roster::new(Arc::clone(&stores.roster)));
        background.spawn(Arc::clone(&roster).run(stop.clone()));
        let wake = Arc::new(Notify::new());
        let workers = (role != Role::Receiver).then(|| {
            let parts = (Arc::clone(&upstream), Arc::clone(&decisions), Arc::clone(&roster));
            start_workers(&config, &stores, parts, &wake, &background, &stop)
        });
        let reconcile = (role != Role::Receiver && !upstream.is_dry_run()).then(|| {
            let make = reconciler_factory(&config, &stores, &upstream);
            schedule_reconcile(&config, &make, &decisions, &rules, &background, &stop);
            ReconcileState {
                make,
                rules: Arc::clone(&rules),
                runs: Arc::clone(&stores.runs),
                running: Arc::default(),
                tasks: background.clone(),
                stop: stop.clone(),
            }
        });
        if role != Role::Receiver && upstream.is_dry_run() && config.reconcile.every.is_some() {
            tracing::warn!("reconcile.every is set, but a dry run cannot read the CRM: no scheduled reconcile");
        }
        let intake = (role != Role::Worker)
            .then(|| open_intake(&config, &stores, &rules, &upstream, &decisions, &roster, wake))
            .transpose()?
            .map(Arc::new);
        if role != Role::Receiver {
            // Cover for absences, in the processes that deliver.
            let every = (config.queue.lease / 4).max(Duration::from_millis(250));
            background.spawn(crate::covering::run(Arc::clone(&rules), stores.clone(), every, stop.clone()));
        }
        if let Some(intake) = &intake {
            background.spawn(crate::intake::forward_spool(Arc::clone(intake), stop.clone()));
        }
        let routes = Routes::new(&config, &stores, rules, decisions, intake, reconcile, metrics)?;
        let (server, addr) = routes::serve(routes, &config)?;
        tracing::info!(%addr, ?role, "listening");
        background.close();
        Ok(Self {
            addr,
            server,
            workers,
            stores,
            background,
            shutdown_grace: config.shutdown_grace,
            _stop_background: stop.drop_guard(),
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The stores this application uses, for tools and tests (e.g. waiting until the queue is idle).
    pub fn stores(&self) -> Stores {
        self.stores.clone()
    }

    /// Serves until `shutdown` completes; then stops taking webhooks, lets requests and deliveries in flight
    /// finish within `shutdown_grace`, stops every background task, and returns. Work not finished stays in
    /// the queue.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let Self { server, workers, stores, background, shutdown_grace, _stop_background: stop, .. } = self;
        let handle = server.handle();
        let mut server = tokio::spawn(server);
        let stopped_by_itself = tokio::select! {
            result = &mut server => Some(result),
            () = shutdown => None,
        };
        if stopped_by_itself.is_none() {
            tracing::info!(
                grace_s = shutdown_grace.as_secs(),
                "shutting down: no new webhooks, finishing work in flight"
            );
        }
        let stop_workers = async {
            if let Some(workers) = workers {
                workers.shutdown(shutdown_grace).await;
            }
        };
        let result = match stopped_by_itself {
            Some(result) => {
                stop_workers.await;
                result
            }
            None => {
                let ((), ()) = tokio::join!(handle.stop(true), stop_workers);
                server.await
            }
        };
        drop(stop);
        if tokio::time::timeout(shutdown_grace, background.wait()).await.is_err() {
            tracing::warn!("background tasks still running at the end of the grace period");
        }
        stores.queue.close().await;
        tracing::info!("stopped");
        result.unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

/// Where the store lives, from `redis_url`, `data_dir` and `[queue]`.
pub fn store_options(config: &Config) -> StoreOptions {
    StoreOptions {
        redis_url: config.redis_url.clone(),
        data_dir: config.data_dir.clone(),
        prefix: config.queue.prefix.clone(),
        partitions: config.queue.partitions.get(),
        lease_for: config.queue.lease,
        dedup_ttl: config.queue.dedup_ttl,
        connect_later: false,
    }
}

/// Loads the rules and keeps them current: a file watcher and SIGHUP, both stopped by `stop`.
fn load_rules(config: &Config, tasks: &TaskTracker, stop: &CancellationToken) -> Result<Arc<LiveRules>, StartupError> {
    let rules = LiveRules::load(&config.rules_dir)
        .map_err(|source| StartupError::Rules { dir: config.rules_dir.clone(), source })?;
    if let Err(error) = rules.watch(tasks, stop.clone()) {
        tracing::warn!(%error, "rule files are not watched; send SIGHUP to reload them");
    }
    #[cfg(unix)]
    tasks.spawn(Arc::clone(&rules).reload_on_sighup(stop.clone()));
    Ok(rules)
}

/// The live CRM client, or the dry run without a token; says which at start.
fn open_upstream(config: &Config, stores: &Stores) -> Result<Upstream, ConfigError> {
    let upstream = Upstream::from_config(&config.upstream, &config.base_dir, Arc::clone(&stores.tokens))?;
    if upstream.is_dry_run() {
        tracing::warn!("no upstream token configured: dry run, follower calls are logged and counted, none is sent");
    } else {
        tracing::info!(base_url = %config.upstream.base_url, "upstream: live");
    }
    Ok(upstream)
}

/// The workers, the reaper, the outcome writer and, with a configuration file, the SIGHUP token reload.
fn start_workers(
    config: &Config,
    stores: &Stores,
    (upstream, decisions, roster): (Arc<Upstream>, Arc<Decisions>, Arc<Roster>),
    wake: &Arc<Notify>,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) -> Workers {
    let limits = Limits::from(&config.rate_limit);
    let policy = Policy::from(&config.delivery);
    let (deliverer, writer) = Deliverer::new(stores, upstream, limits, policy, config.followers.at_cap, decisions);
    let deliverer = deliverer.with_roster(roster);
    let deliverer = Arc::new(deliverer);
    #[cfg(unix)]
    if let Origin::Layers { file } = &config.origin {
        let file = file.clone();
        let load: Arc<crate::deliver::credentials::LoadUpstream> = Arc::new(move || {
            let config = Config::load(file.as_deref())?;
            Ok((config.upstream, config.base_dir))
        });
        tasks.spawn(crate::deliver::credentials::reload_on_sighup(Arc::clone(&deliverer), load, stop.clone()));
    }
    let reap_every = (config.queue.lease / 4).max(Duration::from_millis(250));
    Workers::spawn(deliverer, writer, config.workers.get(), Arc::clone(wake), reap_every)
}

/// How this service builds a reconciler for a run (scheduled, or asked for through `POST /reconcile/{location}`).
fn reconciler_factory(config: &Config, stores: &Stores, upstream: &Arc<Upstream>) -> MakeReconciler {
    let (stores, upstream) = (stores.clone(), Arc::clone(upstream));
    let judgement = Judgement { run: None, config: config.followers.ownership };
    let (limits, max_share, page_limit) =
        (Limits::from(&config.rate_limit), config.reconcile.max_share, config.reconcile.page_size);
    Arc::new(move |rules| Reconciler {
        upstream: Arc::clone(&upstream),
        stores: Some(stores.clone()),
        rules,
        judgement,
        limits,
        max_share,
        page_limit,
        next_call: Default::default(),
        email_names: Default::default(),
    })
}

/// `reconcile.every`: the service reconciles its locations on a schedule (workers' processes only).
fn schedule_reconcile(
    config: &Config,
    make: &MakeReconciler,
    decisions: &Arc<Decisions>,
    rules: &Arc<LiveRules>,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) {
    let Some(every) = config.reconcile.every else { return };
    let configured = config.upstream.locations();
    let make = Arc::clone(make);
    tracing::info!(every_s = every.as_secs(), "reconciling every location on a schedule");
    tasks.spawn(run_every(every, configured, Arc::clone(decisions), Arc::clone(rules), move |r| make(r), stop.clone()));
}

/// The receiving side: the configured sources (or the defaults, said at start), the name lookups and, on
/// Redis, the spool.
fn open_intake(
    config: &Config,
    stores: &Stores,
    rules: &Arc<LiveRules>,
    upstream: &Arc<Upstream>,
    decisions: &Arc<Decisions>,
    roster: &Arc<Roster>,
    wake: Arc<Notify>,
) -> Result<Intake, StartupError> {
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
    let pipeline_names = (!upstream.is_dry_run()).then(|| Arc::new(PipelineNames::new(Arc::clone(upstream))));
    let ownership = config.followers.ownership;
    let intake =
        Intake::new(sources, Arc::clone(rules), stores, ownership, wake, pipeline_names, Arc::clone(decisions))
            .with_roster(Arc::clone(roster));
    // The embedded store is on this machine's disk already: a spool would add nothing.
    if config.redis_url.is_none() || config.spool.max_bytes == 0 {
        return Ok(intake);
    }
    let spool = Spool::open(&config.spool_dir(), config.spool.max_bytes)?;
    tracing::info!(path = %spool.path().display(), max_bytes = config.spool.max_bytes, waiting = spool.len(), "spool");
    Ok(intake.with_spool(Arc::new(spool)))
}
