//! `App`: builds every stage from a validated config and runs them until shutdown.
//!
//! Order matters and is the contract: config is parsed before anything is bound; the store is
//! migrated before the scheduler starts; on shutdown the scheduler stops first, the recorder
//! drains the closed channel and commits the last batch, and the HTTP server stops last.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use parking_lot::RwLock;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tw_core::config::{self, Config};
use tw_core::Timestamp;
use tw_notify::{Channel, DispatchStats, Dispatcher};
use tw_probe::{Clients, Plan, ProbeMemory, Scheduler, SchedulerStats};
use tw_server::{ApiAuth, Health, Metrics, ServerState};
use tw_store::{RecordPolicy, Store};

use crate::alerts::AlertEngine;
use crate::pipeline::{error_chain, Recorder};
use crate::systemd;
use crate::{heartbeat, receivers};

/// The whole shutdown must fit in this budget (systemd's stop timeout is longer).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long in-flight probes may continue once shutdown begins, before reporting `shutdown`.
const PROBE_DRAIN: Duration = Duration::from_secs(2);
/// Per-request timeout of HTTP notification channels.
const HTTP_DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the outbox gauges are refreshed.
const OUTBOX_GAUGES_EVERY: Duration = Duration::from_secs(5);
/// How often old observations are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3_600);

pub(crate) struct App {
    config: Config,
    /// Where a reload re-reads the config from; `None` for the demo's generated config.
    config_path: Option<PathBuf>,
    store: Store,
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// Receivers' channels, credentials resolved.
    channels: HashMap<String, Channel>,
    /// Who may read and change state over HTTP, the API token resolved.
    auth: Arc<ApiAuth>,
}

impl App {
    /// Opens (and migrates) the store and binds the HTTP listener.
    pub(crate) async fn build(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<App> {
        // Credentials first: a missing secret must stop the start before anything is opened.
        let channels =
            receivers::channels(&config.alerting).context("resolving receiver credentials")?;
        let auth =
            Arc::new(ApiAuth::from_config(&config.server).context("resolving the HTTP API token")?);
        let health = Arc::new(Health::default());
        let metrics =
            Arc::new(Metrics::new(env!("CARGO_PKG_VERSION")).context("registering metrics")?);
        let store = Store::open(&config.store.path)
            .await
            .with_context(|| format!("opening the database {}", config.store.path.display()))?;
        health.set_migrated();
        // /readyz otherwise learns the store is unwritable only when the first batch fails,
        // which can be a whole interval after start.
        if let Err(err) = store.check_writable().await {
            tracing::error!(error = %error_chain(&err), "Database not writable at start; probing goes on and writes will be retried");
            health.set_store_error(Some(error_chain(&err)));
        }
        let listener = TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding the HTTP listener on {}", config.server.listen))?;
        Ok(App {
            config,
            config_path,
            store,
            listener,
            metrics,
            health,
            channels,
            auth,
        })
    }

    /// Runs until `shutdown` completes. `reloads` delivers SIGHUPs (or test triggers).
    pub(crate) async fn run(
        self,
        shutdown: impl Future<Output = ()>,
        mut reloads: mpsc::Receiver<()>,
    ) -> anyhow::Result<()> {
        let App {
            config,
            config_path,
            store,
            listener,
            metrics,
            health,
            channels,
            auth,
        } = self;
        let clients = Arc::new(Clients::from_config(&config).context("building probe clients")?);

        let tracker = TaskTracker::new();
        let stop_probes = CancellationToken::new();
        let stop_server = CancellationToken::new();
        let stop_background = CancellationToken::new();
        let stop_dispatch = CancellationToken::new();

        let stats = Arc::new(SchedulerStats::default());
        let dispatch_stats = Arc::new(DispatchStats::default());
        let server_state = ServerState {
            metrics: metrics.clone(),
            health: health.clone(),
            before_scrape: Some({
                let stats = stats.clone();
                let dispatch_stats = dispatch_stats.clone();
                Arc::new(move |metrics: &Metrics| {
                    metrics.set_scheduler(
                        stats.jobs.load(Ordering::Relaxed),
                        stats.started.load(Ordering::Relaxed),
                        stats.skipped.load(Ordering::Relaxed),
                    );
                    metrics.set_notifications(&dispatch_stats.snapshot());
                })
            }),
            store: store.clone(),
            auth,
        };
        let listen = listener
            .local_addr()
            .context("reading the listener address")?;
        tracker.spawn(tw_server::serve(
            listener,
            server_state,
            stop_server.clone(),
        ));
        tracing::info!(%listen, "Serving the status page, /api/v1, /metrics, /healthz and /readyz");

        let memory = Arc::new(ProbeMemory::default());
        match store.dns_snapshots().await {
            Ok(snapshots) => {
                for snapshot in snapshots {
                    memory.seed_dns(&snapshot.tenant, &snapshot.domain, snapshot.records);
                }
            }
            Err(err) => {
                tracing::warn!(error = %error_chain(&err), "Cannot load DNS snapshots; drift is measured from the first run")
            }
        }
        match store.learned_facts().await {
            Ok(learned) => {
                for row in learned {
                    memory.seed_facts(&row.tenant, row.check, &row.target, row.facts);
                }
            }
            Err(err) => {
                tracing::warn!(error = %error_chain(&err), "Cannot load learned object ids; identities are looked up by address until seen again")
            }
        }

        let alert_states = match store.alert_states().await {
            Ok(states) => states,
            Err(err) => {
                tracing::warn!(error = %error_chain(&err), "Cannot load alert states; alerts start fresh");
                Vec::new()
            }
        };
        let (alerting_tx, alerting_updates) = watch::channel(config.alerting.clone());
        let dispatcher_wake = Arc::new(Notify::new());
        let channels = Arc::new(RwLock::new(channels));
        let (observation_tx, observation_rx) = mpsc::channel(config.store.queue_capacity.get());
        let recorder = Recorder {
            store: store.clone(),
            metrics: metrics.clone(),
            health: health.clone(),
            policy: RecordPolicy {
                ok_sample_interval: config.store.ok_sample_interval,
            },
            retry_capacity: config.store.queue_capacity.get() * 4,
            alerts: AlertEngine::new(config.alerting.clone(), alert_states),
            alerting_updates,
            dispatcher_wake: dispatcher_wake.clone(),
        };
        let recorder = tracker.spawn(recorder.run(observation_rx));

        let http = tw_notify::http_client(HTTP_DELIVERY_TIMEOUT)
            .context("building the HTTP client for notifications")?;
        if let Some(heartbeat) = config.heartbeat.clone() {
            tracker.spawn(heartbeat::run(
                heartbeat,
                http.clone(),
                health.clone(),
                stop_background.clone(),
            ));
        }
        let dispatcher = Dispatcher {
            store: store.clone(),
            channels: channels.clone(),
            http,
            wake: dispatcher_wake,
            stats: dispatch_stats,
            attempt_timeout: tw_notify::SMTP_TIMEOUT + Duration::from_secs(5),
        };
        tracker.spawn(dispatcher.run(stop_dispatch.clone()));
        tracker.spawn(outbox_gauges(
            store.clone(),
            metrics.clone(),
            stop_background.clone(),
        ));

        let (plan_tx, plan_rx) = mpsc::channel::<Plan>(1);
        let scheduler = Scheduler {
            stats: stats.clone(),
            memory,
            max_concurrent: config.schedule.max_concurrent.get(),
            drain: PROBE_DRAIN,
        };
        let jobs = tw_probe::plan(&config);
        metrics.set_targets(configured_targets(&jobs));
        tracing::info!(
            tenants = config.tenants.len(),
            jobs = jobs.len(),
            "Starting the scheduler"
        );
        let scheduler = tracker.spawn(scheduler.run(
            Plan { jobs, clients },
            plan_rx,
            observation_tx,
            stop_probes.clone(),
        ));
        health.set_scheduling();

        tracker.spawn(prune_loop(
            store.clone(),
            config.store.clone(),
            stop_background.clone(),
        ));
        tracker.spawn(systemd::watchdog(stop_background.clone()));
        systemd::ready();

        let mut current = config;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(()) = reloads.recv() => {
                    systemd::reloading();
                    let targets = ReloadTargets { plan: &plan_tx, alerting: &alerting_tx, channels: &channels, metrics: &metrics };
                    reload(config_path.as_deref(), &mut current, targets).await;
                    systemd::ready();
                }
            }
        }

        tracing::info!("Shutting down");
        health.set_stopping();
        systemd::stopping();
        let started = tokio::time::Instant::now();
        let deadline = started + SHUTDOWN_GRACE;
        stop_probes.cancel();
        stop_background.cancel();
        drop(plan_tx);
        // Probes get PROBE_DRAIN, the recorder's final write its own budget; the last half
        // second is kept for the HTTP server and closing the database.
        let drained = tokio::time::timeout_at(deadline - Duration::from_millis(500), async {
            let _ = scheduler.await;
            let _ = recorder.await;
        })
        .await;
        // After the recorder: its last batch may have enqueued notifications. Sends still in
        // flight are abandoned and stay pending for the next start (at least once).
        stop_dispatch.cancel();
        stop_server.cancel();
        tracker.close();
        let stopped =
            tokio::time::timeout_at(deadline - Duration::from_millis(200), tracker.wait()).await;
        let closed = tokio::time::timeout_at(deadline, store.close()).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let mut unfinished = Vec::new();
        if drained.is_err() {
            unfinished.push("probes and recorder (observations may be lost)");
        }
        if stopped.is_err() {
            unfinished.push("HTTP server or background tasks");
        }
        if closed.is_err() {
            unfinished.push("closing the database");
        }
        if unfinished.is_empty() {
            tracing::info!(elapsed_ms, "Stopped cleanly");
            Ok(())
        } else {
            anyhow::bail!(
                "shutdown overran its {}s budget; still running: {}",
                SHUTDOWN_GRACE.as_secs(),
                unfinished.join(", ")
            )
        }
    }
}

/// Re-reads the config. An invalid one keeps the old config running and says why.
/// Where a reload's results go.
struct ReloadTargets<'a> {
    plan: &'a mpsc::Sender<Plan>,
    alerting: &'a watch::Sender<tw_core::config::AlertingConfig>,
    channels: &'a RwLock<HashMap<String, Channel>>,
    metrics: &'a Metrics,
}

async fn reload(path: Option<&std::path::Path>, current: &mut Config, targets: ReloadTargets<'_>) {
    let ReloadTargets {
        plan: plan_tx,
        alerting,
        channels,
        metrics,
    } = targets;
    let Some(path) = path else {
        tracing::info!("Reload requested, but this config was not read from a file; nothing to do");
        return;
    };
    let new_config = match read_config(path) {
        Ok(config) => config,
        Err(err) => {
            metrics.record_reload(false);
            tracing::error!(path = %path.display(), error = %format!("{err:#}"), "Config reload failed; keeping the running config");
            return;
        }
    };
    let new_channels = match receivers::channels(&new_config.alerting) {
        Ok(new_channels) => new_channels,
        Err(err) => {
            metrics.record_reload(false);
            tracing::error!(error = %format!("{err:#}"), "Config reload failed; keeping the running config");
            return;
        }
    };
    let clients = match Clients::from_config(&new_config) {
        Ok(clients) => Arc::new(clients),
        Err(err) => {
            metrics.record_reload(false);
            tracing::error!(error = %error_chain(&err), "Config reload failed; keeping the running config");
            return;
        }
    };
    if new_config.server != current.server || new_config.store.path != current.store.path {
        tracing::warn!("server.listen and store.path changes take effect only after a restart");
    }
    let jobs = tw_probe::plan(&new_config);
    metrics.set_targets(configured_targets(&jobs));
    let n_jobs = jobs.len();
    if plan_tx.send(Plan { jobs, clients }).await.is_err() {
        tracing::error!("Scheduler is gone; reload not applied");
        return;
    }
    *channels.write() = new_channels;
    // The recorder picks the new rules and routes up before its next batch.
    alerting.send_replace(new_config.alerting.clone());
    metrics.record_reload(true);
    tracing::info!(
        tenants = new_config.tenants.len(),
        jobs = n_jobs,
        "Config reloaded"
    );
    *current = new_config;
}

/// Every (tenant, check, target) the jobs report on.
fn configured_targets(jobs: &[tw_probe::Job]) -> Vec<tw_server::TargetKey> {
    jobs.iter()
        .flat_map(|job| {
            job.targets()
                .into_iter()
                .map(move |target| (job.tenant.to_string(), job.check.to_string(), target))
        })
        .collect()
}

/// Reads and validates a config file; every problem is in the error text.
pub(crate) fn read_config(path: &std::path::Path) -> anyhow::Result<Config> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    config::parse(&text).map_err(|errors| anyhow::anyhow!("{}", errors.to_string().trim_end()))
}

/// Outbox depth and the age of its oldest pending row, for the metrics.
async fn outbox_gauges(store: Store, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    loop {
        match store.outbox_stats().await {
            Ok(stats) => {
                let age = stats
                    .oldest_pending_created_at
                    .map(|created| Timestamp::now().millis_since(created) as f64 / 1000.0)
                    .unwrap_or(0.0);
                metrics.set_outbox(stats.pending, age);
            }
            Err(err) => tracing::debug!(error = %error_chain(&err), "Cannot read outbox figures"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(OUTBOX_GAUGES_EVERY) => {}
        }
    }
}

async fn prune_loop(
    store: Store,
    policy: tw_core::config::StoreConfig,
    shutdown: CancellationToken,
) {
    loop {
        let now = Timestamp::now();
        // Thinning first: the prune after it hands the space of both back to the file system.
        match store
            .thin_ok_samples(now.minus(policy.thin_ok_after), policy.thin_ok_interval)
            .await
        {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "Thinned old ok samples"),
            Err(err) => tracing::warn!(error = %error_chain(&err), "Thinning failed; will retry"),
        }
        let older_than = now.minus(policy.retention);
        match store.prune(older_than).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "Pruned observations past retention"),
            Err(err) => tracing::warn!(error = %error_chain(&err), "Pruning failed; will retry"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
        }
    }
}
