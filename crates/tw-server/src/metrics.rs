//! Every Prometheus metric family tenantwatch exports, in one place.
//!
//! Metrics are derived from observations and from stage results, never measured inside
//! probes. Labels come only from config (tenant, check, target) or closed enums (status,
//! reason); reply texts and errors never become labels. docs/metrics.md lists each family and
//! its series count at 10,000 tenants.

use std::collections::BTreeMap;

use parking_lot::Mutex;
use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use tw_core::{CheckKind, Evidence, Observation, Reason, Status};

pub use crate::target_series::TargetKey;
use crate::target_series::{self, TargetSeries, TargetTable, HEALTH_SERVICES};

/// The outcome of one recorder batch, as the metrics see it.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreResult {
    pub stored: u64,
    pub sampled_out: u64,
    pub failed: bool,
    /// Observations waiting for a retry after a failed write.
    pub pending: u64,
    /// Observations given up on because the retry buffer was full.
    pub dropped: u64,
}

pub struct Metrics {
    registry: Registry,
    mailflow_latency: prometheus::Histogram,
    probe_duration: HistogramVec,
    probe_runs: IntCounterVec,
    lateness: HistogramVec,
    store_writes: IntCounter,
    store_sampled_out: IntCounter,
    store_errors: IntCounter,
    store_pending: IntGauge,
    store_dropped: IntCounter,
    scheduler_jobs: IntGauge,
    scheduler_started: IntCounter,
    scheduler_skipped: IntCounter,
    config_reloads: IntCounterVec,
    last_store_success: Gauge,
    alert_events: IntCounterVec,
    notifications: IntCounterVec,
    outbox_pending: IntGauge,
    outbox_oldest_age: Gauge,
    /// The configured targets with their per-target gauges (`target_series`), written into
    /// the exposition at scrape time. Only configured targets have a row: a run of a target
    /// removed by a reload that lands after the reload must not bring its series back.
    targets: Mutex<TargetTable>,
    /// Makes the read-then-add of `set_scheduler` atomic across concurrent scrapes.
    scheduler_sync: Mutex<()>,
}

/// Graph's serviceHealthStatus values that mean "working" (compared case-insensitively: the
/// documentation prints PascalCase, real answers are camelCase).
fn is_operational(status: &str) -> bool {
    [
        "serviceOperational",
        "serviceRestored",
        "falsePositive",
        "resolved",
        "resolvedExternal",
        "mitigated",
        "mitigatedExternal",
        "postIncidentReviewPublished",
    ]
    .iter()
    .any(|ok| ok.eq_ignore_ascii_case(status))
}

/// Gauges read from what an HTTP check found. A fact missing this time (the check could not
/// tell) leaves the last value standing, like the status gauge's last verdict.
fn observe_http_facts(row: &mut TargetSeries, check: CheckKind, facts: &BTreeMap<String, String>) {
    match check {
        CheckKind::Admins => {
            if let Some(count) = facts.get("admin_count").and_then(|v| v.parse::<i64>().ok()) {
                row.global_admins = Some(count);
            }
        }
        CheckKind::Health => {
            for (service, slot) in HEALTH_SERVICES.iter().zip(&mut row.service_health) {
                if let Some(status) = facts.get(&format!("service.{service}")) {
                    *slot = Some(i64::from(!is_operational(status)));
                }
            }
        }
        CheckKind::Domain | CheckKind::Signin | CheckKind::Licence => {
            // The licence check reports one figure per counted subscription; the nearest end
            // is the one a dashboard sorts by.
            let days = facts
                .iter()
                .filter(|(key, _)| key.ends_with("days_left"))
                .filter_map(|(_, value)| value.parse::<i64>().ok())
                .min();
            if days.is_some() {
                row.expiry_days = days;
            }
        }
        _ => {}
    }
}

/// Building the families cannot fail for these fixed names and label sets (the prometheus
/// crate rejects only invalid names and duplicate registration); any error is our own bug
/// and is reported by `Metrics::new`'s caller at startup.
impl Metrics {
    pub fn new(version: &str) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let mailflow_latency = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "tenantwatch_mailflow_latency_seconds",
                "End-to-end latency of mailflow probe messages: relay acceptance to receivedDateTime in the recipient's mailbox (Graph)",
            )
            .buckets(vec![1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0]),
        )?;
        let probe_duration = HistogramVec::new(
            HistogramOpts::new(
                "tenantwatch_probe_duration_seconds",
                "Duration of probe runs by check kind",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            &["check"],
        )?;
        let probe_runs = IntCounterVec::new(
            Opts::new(
                "tenantwatch_probe_runs_total",
                "Observations by check kind, status and reason",
            ),
            &["check", "status", "reason"],
        )?;
        let lateness = HistogramVec::new(
            HistogramOpts::new(
                "tenantwatch_scheduling_lateness_seconds",
                "Delay between a run's due time and its start",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["check"],
        )?;
        let store_writes = IntCounter::new(
            "tenantwatch_store_observations_written_total",
            "Observations written to SQLite",
        )?;
        let store_sampled_out = IntCounter::new(
            "tenantwatch_store_observations_sampled_out_total",
            "Repeated ok observations not stored (downsampling)",
        )?;
        let store_errors = IntCounter::new(
            "tenantwatch_store_errors_total",
            "Failed store write batches",
        )?;
        let store_pending = IntGauge::new(
            "tenantwatch_store_pending_observations",
            "Observations waiting to be retried after a failed write",
        )?;
        let store_dropped = IntCounter::new(
            "tenantwatch_store_dropped_observations_total",
            "Observations dropped because the retry buffer was full",
        )?;
        let scheduler_jobs = IntGauge::new(
            "tenantwatch_scheduler_jobs",
            "Scheduled jobs (tenant, check, domain)",
        )?;
        let scheduler_started = IntCounter::new(
            "tenantwatch_scheduler_runs_started_total",
            "Probe runs started",
        )?;
        let scheduler_skipped = IntCounter::new(
            "tenantwatch_scheduler_runs_skipped_total",
            "Runs skipped because the previous run was still going or the scheduler fell behind",
        )?;
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "tenantwatch_config_reloads_total",
                "Config reloads by result",
            ),
            &["result"],
        )?;
        let last_store_success = Gauge::new(
            "tenantwatch_store_last_success_timestamp_seconds",
            "When a store write last succeeded (Unix seconds)",
        )?;
        let alert_events = IntCounterVec::new(
            Opts::new(
                "tenantwatch_alert_events_total",
                "Alert events committed to the outbox (escalations included), by kind and severity",
            ),
            &["kind", "severity"],
        )?;
        let notifications = IntCounterVec::new(
            Opts::new(
                "tenantwatch_notifications_total",
                "Notifications by receiver and result (sent, transient, permanent, expired, fallback)",
            ),
            &["receiver", "result"],
        )?;
        let outbox_pending = IntGauge::new(
            "tenantwatch_outbox_pending",
            "Notifications waiting to be delivered",
        )?;
        let outbox_oldest_age = Gauge::new(
            "tenantwatch_outbox_oldest_pending_age_seconds",
            "Age of the oldest notification still waiting to be delivered (0 when none)",
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new("tenantwatch_build_info", "Build information"),
            &["version"],
        )?;
        build_info.with_label_values(&[version]).set(1);

        registry.register(Box::new(mailflow_latency.clone()))?;
        registry.register(Box::new(probe_duration.clone()))?;
        registry.register(Box::new(probe_runs.clone()))?;
        registry.register(Box::new(lateness.clone()))?;
        registry.register(Box::new(store_writes.clone()))?;
        registry.register(Box::new(store_sampled_out.clone()))?;
        registry.register(Box::new(store_errors.clone()))?;
        registry.register(Box::new(store_pending.clone()))?;
        registry.register(Box::new(store_dropped.clone()))?;
        registry.register(Box::new(scheduler_jobs.clone()))?;
        registry.register(Box::new(scheduler_started.clone()))?;
        registry.register(Box::new(scheduler_skipped.clone()))?;
        registry.register(Box::new(config_reloads.clone()))?;
        registry.register(Box::new(last_store_success.clone()))?;
        registry.register(Box::new(alert_events.clone()))?;
        registry.register(Box::new(notifications.clone()))?;
        registry.register(Box::new(outbox_pending.clone()))?;
        registry.register(Box::new(outbox_oldest_age.clone()))?;
        registry.register(Box::new(build_info))?;

        // Pre-create the run counters so dashboards see zeros, not gaps.
        for check in CheckKind::ALL {
            for status in Status::ALL {
                for reason in Reason::ALL.iter().filter(|r| r.status() == status) {
                    probe_runs.with_label_values(&[
                        check.as_str(),
                        status.as_str(),
                        reason.as_str(),
                    ]);
                }
            }
        }
        for result in ["success", "failure"] {
            config_reloads.with_label_values(&[result]);
        }

        Ok(Metrics {
            registry,
            mailflow_latency,
            probe_duration,
            probe_runs,
            lateness,
            store_writes,
            store_sampled_out,
            store_errors,
            store_pending,
            store_dropped,
            scheduler_jobs,
            scheduler_started,
            scheduler_skipped,
            config_reloads,
            last_store_success,
            alert_events,
            notifications,
            outbox_pending,
            outbox_oldest_age,
            targets: Mutex::new(TargetTable::new()),
            scheduler_sync: Mutex::new(()),
        })
    }

    /// Updates every family an observation feeds. Returns true when the target's status or
    /// reason changed (or the target is new), so the caller can log the change.
    pub fn observe(&self, observation: &Observation) -> bool {
        let check = observation.check.as_str();
        self.probe_duration
            .with_label_values(&[check])
            .observe(observation.elapsed.as_secs_f64());
        self.probe_runs
            .with_label_values(&[
                check,
                observation.status.as_str(),
                observation.reason.as_str(),
            ])
            .inc();
        self.lateness
            .with_label_values(&[check])
            .observe(observation.lateness().as_secs_f64());
        let latency = match &observation.evidence {
            Evidence::Mailflow(evidence) => evidence
                .arrival
                .as_ref()
                .and_then(|arrival| arrival.latency_ms)
                .map(|ms| ms as f64 / 1000.0),
            _ => None,
        };

        // The table is keyed by owned strings; a lookup by borrowed ones would need a key
        // newtype, and three small allocations per observation are cheap next to a probe.
        let key = (
            observation.tenant.as_str().to_owned(),
            check.to_owned(),
            observation.target.clone(),
        );
        let mut targets = self.targets.lock();
        let Some(row) = targets.get_mut(&key) else {
            return false;
        };
        let verdict = (observation.status, observation.reason);
        let changed = row.verdict.replace(verdict) != Some(verdict);
        let started = observation.started_at.as_secs_f64();
        row.last_run = Some(started);
        if changed {
            row.since = Some(started);
        }
        match &observation.evidence {
            Evidence::Http(evidence) => observe_http_facts(row, observation.check, &evidence.facts),
            Evidence::Mailflow(_) => {
                if let Some(seconds) = latency {
                    self.mailflow_latency.observe(seconds);
                    row.mailflow_last_latency = Some(seconds);
                }
            }
            Evidence::SmtpRcpt(evidence) => {
                let code = evidence
                    .rcpt
                    .iter()
                    .find(|rcpt| !rcpt.control && rcpt.address == observation.target)
                    .and_then(|rcpt| rcpt.code)
                    .unwrap_or(0);
                row.smtp_reply_code = Some(i64::from(code));
            }
            Evidence::Dns(_) | Evidence::None => {}
        }
        changed
    }

    pub fn record_store_result(&self, result: StoreResult, now_secs: f64) {
        self.store_writes.inc_by(result.stored);
        self.store_sampled_out.inc_by(result.sampled_out);
        self.store_dropped.inc_by(result.dropped);
        self.store_pending
            .set(i64::try_from(result.pending).unwrap_or(i64::MAX));
        if result.failed {
            self.store_errors.inc();
        } else {
            self.last_store_success.set(now_secs);
        }
    }

    /// Mirrors the scheduler's own counters (read at scrape time).
    pub fn set_scheduler(&self, jobs: u64, started: u64, skipped: u64) {
        let _sync = self.scheduler_sync.lock();
        self.scheduler_jobs
            .set(i64::try_from(jobs).unwrap_or(i64::MAX));
        // Counters only move forward; the scheduler's atomics are monotonic too.
        self.scheduler_started
            .inc_by(started.saturating_sub(self.scheduler_started.get()));
        self.scheduler_skipped
            .inc_by(skipped.saturating_sub(self.scheduler_skipped.get()));
    }

    pub fn record_alert_event(&self, kind: &str, severity: &str) {
        self.alert_events.with_label_values(&[kind, severity]).inc();
    }

    /// Mirrors the dispatcher's per-receiver counts (read at scrape time); receivers come
    /// from config, results from a closed set.
    pub fn set_notifications(&self, counts: &[(String, &'static str, u64)]) {
        let _sync = self.scheduler_sync.lock();
        for (receiver, result, count) in counts {
            let counter = self
                .notifications
                .with_label_values(&[receiver.as_str(), result]);
            counter.inc_by(count.saturating_sub(counter.get()));
        }
    }

    pub fn set_outbox(&self, pending: u64, oldest_age_secs: f64) {
        self.outbox_pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        self.outbox_oldest_age.set(oldest_age_secs);
    }

    pub fn record_reload(&self, success: bool) {
        self.config_reloads
            .with_label_values(&[if success { "success" } else { "failure" }])
            .inc();
    }

    /// Sets the configured targets (at start and on every reload). Series of targets no
    /// longer configured are removed, so a removed tenant does not stay "critical" on
    /// dashboards forever; observations of unknown targets feed only the per-check families.
    pub fn set_targets(&self, configured: impl IntoIterator<Item = TargetKey>) {
        let configured: std::collections::HashSet<TargetKey> = configured.into_iter().collect();
        let mut targets = self.targets.lock();
        targets.retain(|key, _| configured.contains(key));
        for key in configured {
            targets.entry(key).or_default();
        }
    }

    /// The configured tenants (as last given to [`Metrics::set_targets`]), each with its
    /// configured check kinds and how many targets each has: the rows and columns of the
    /// status page and the API's tenant list. Kept here because this is where the daemon
    /// already hands over the configured targets at start and on every reload.
    pub(crate) fn configured_checks(&self) -> BTreeMap<String, BTreeMap<String, usize>> {
        let mut catalog: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
        for (tenant, check, _) in self.targets.lock().keys() {
            *catalog
                .entry(tenant.clone())
                .or_default()
                .entry(check.clone())
                .or_default() += 1;
        }
        catalog
    }

    /// How many configured targets had each verdict at their latest run since the daemon
    /// started, by `Status::code` (ok, warning, critical, unknown), and how many have not run
    /// yet: the status page's summary, counted in memory.
    pub(crate) fn verdict_counts(&self) -> ([usize; 4], usize) {
        let mut counts = [0; 4];
        let mut pending = 0;
        for row in self.targets.lock().values() {
            match row.verdict {
                Some((status, _)) => counts[usize::from(status.code())] += 1,
                None => pending += 1,
            }
        }
        (counts, pending)
    }

    /// Whether (tenant, check, target) is configured now.
    pub(crate) fn is_configured(&self, tenant: &str, check: CheckKind, target: &str) -> bool {
        let key = (
            tenant.to_owned(),
            check.as_str().to_owned(),
            target.to_owned(),
        );
        self.targets.lock().contains_key(&key)
    }

    /// The text exposition format: the registry's families, then the per-target ones.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::with_capacity(64 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        let mut text =
            String::from_utf8(buffer).map_err(|err| prometheus::Error::Msg(err.to_string()))?;
        let targets = self.targets.lock();
        // About 400 bytes per target across its families; one allocation instead of doubling.
        text.reserve(targets.len().saturating_mul(400));
        target_series::render(&targets, &mut text);
        Ok(text)
    }
}
