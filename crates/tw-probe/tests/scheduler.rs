//! The scheduler running real probes against the loopback simulators: first runs at their
//! phase offset with small lateness, and a prompt, complete shutdown (the observation channel
//! closes; a probe still in flight reports `shutdown` rather than nothing).
//!
//! Tenant names are chosen (by searching, through the public `phase_offset`) so every job's
//! first run falls early in its 10 s interval, which keeps the file fast without a shorter
//! interval than config allows.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/sims.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tw_core::config::Config;
use tw_core::{CheckKind, Evidence, Observation, Reason, Status, Timestamp};
use tw_probe::scheduler::{first_run_delay, phase_offset};
use tw_probe::{plan, Clients, Plan, ProbeMemory, Scheduler, SchedulerStats};
use tw_sim::smtp::{RcptBehaviour, SmtpFault};

use support::{tenant, Sims};

const INTERVAL: &str = "10s";

/// Tenant blocks for `count` tenants `t<i>` on `t<i>.example`, each watching `admin@`, picked
/// so that every job of each has its first run within `within` of the scheduler's start.
/// `extra` is appended to every block (per-check overrides).
fn early_tenants(
    sims: &Sims,
    timeout: &str,
    count: usize,
    within: Duration,
    extra: &str,
) -> Vec<(String, String)> {
    let mut picked = Vec::new();
    for i in 0.. {
        let name = format!("t{i}");
        let domain = format!("{name}.example");
        let block = format!(
            "{}{extra}",
            tenant(&name, &domain, &[&format!("admin@{domain}")])
        );
        let config = sims.config_with(INTERVAL, timeout, &block);
        let now = Timestamp::now();
        let delays: Vec<Duration> = plan(&config)
            .iter()
            .map(|job| first_run_delay(&job.key(), job.interval, now))
            .collect();
        // Not too close to zero either: a slot that passes before the scheduler starts
        // would wrap to the next interval.
        if delays
            .iter()
            .all(|d| *d < within && *d > Duration::from_millis(200))
        {
            picked.push((domain, block));
            if picked.len() == count {
                return picked;
            }
        }
        assert!(i < 10_000, "no tenant names with early phase offsets");
    }
    unreachable!()
}

struct Running {
    stats: Arc<SchedulerStats>,
    observations: mpsc::Receiver<Observation>,
    shutdown: CancellationToken,
    run: JoinHandle<()>,
    /// Kept open so the scheduler's reload branch stays live, as in the daemon.
    _reloads: mpsc::Sender<Plan>,
    started: Instant,
}

fn start(config: &Config, drain: Duration) -> Running {
    let stats = Arc::new(SchedulerStats::default());
    let scheduler = Scheduler {
        stats: Arc::clone(&stats),
        memory: Arc::new(ProbeMemory::default()),
        max_concurrent: 8,
        drain,
    };
    let plan = Plan {
        jobs: plan(config),
        clients: Arc::new(Clients::from_config(config).unwrap()),
    };
    let (reloads_tx, reloads_rx) = mpsc::channel(1);
    let (observations_tx, observations) = mpsc::channel(16);
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let run = tokio::spawn(scheduler.run(plan, reloads_rx, observations_tx, shutdown.clone()));
    Running {
        stats,
        observations,
        shutdown,
        run,
        _reloads: reloads_tx,
        started,
    }
}

impl Running {
    /// Cancels, then requires `run` to return within `budget` and the channel to close after
    /// the observations still queued, which are returned.
    async fn stop(mut self, budget: Duration) -> Vec<Observation> {
        let cancelled = Instant::now();
        self.shutdown.cancel();
        tokio::time::timeout(budget, self.run)
            .await
            .unwrap_or_else(|_| panic!("scheduler still running {budget:?} after shutdown"))
            .unwrap();
        assert!(cancelled.elapsed() < budget);
        let mut rest = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_millis(500), self.observations.recv()).await {
                Ok(Some(observation)) => rest.push(observation),
                Ok(None) => return rest,
                Err(_) => panic!("observation channel still open after the scheduler returned"),
            }
        }
    }
}

#[tokio::test]
async fn every_job_reports_once_on_time_and_shutdown_closes_the_channel() {
    let sims = Sims::start().await;
    let tenants = early_tenants(&sims, "3s", 2, Duration::from_secs(2), "");
    for (domain, _) in &tenants {
        sims.dns.add_microsoft_365_domain(domain);
        sims.smtp
            .set_recipient(&format!("admin@{domain}"), RcptBehaviour::Accept);
    }
    let blocks: Vec<&str> = tenants.iter().map(|(_, block)| block.as_str()).collect();
    let config = sims.config_with(INTERVAL, "3s", &blocks.join("\n"));
    let jobs = plan(&config);
    assert_eq!(jobs.len(), 4, "{jobs:#?}");
    let offsets: BTreeMap<(String, CheckKind), Duration> = jobs
        .iter()
        .map(|job| {
            (
                (job.tenant.as_str().to_owned(), job.check),
                phase_offset(&job.key(), job.interval),
            )
        })
        .collect();

    let mut running = start(&config, Duration::from_secs(1));
    let deadline = running.started + Duration::from_secs(2 + 3);
    let mut seen: BTreeMap<(String, CheckKind), Observation> = BTreeMap::new();
    while seen.len() < offsets.len() {
        let observation = tokio::time::timeout_at(deadline, running.observations.recv())
            .await
            .unwrap_or_else(|_| panic!("only {:?} reported in time", seen.keys()))
            .expect("channel closed while running");
        let key = (observation.tenant.as_str().to_owned(), observation.check);
        assert!(offsets.contains_key(&key), "unplanned {key:?}");
        assert!(
            seen.insert(key.clone(), observation).is_none(),
            "{key:?} reported twice within one interval"
        );
    }

    for (key, observation) in &seen {
        let expected = match key.1 {
            CheckKind::Dns => Reason::DnsRecordsOk,
            _ => Reason::RecipientAccepted,
        };
        assert_eq!(
            (observation.status, observation.reason),
            (Status::Ok, expected),
            "{key:?}: {}",
            observation.summary
        );
        assert!(
            observation.lateness() < Duration::from_millis(250),
            "{key:?} started {:?} late",
            observation.lateness()
        );
        // The first run is due at the job's phase offset within the interval, counted on the
        // wall clock: no herd at start, and the same slot after a restart.
        let offset = i64::try_from(offsets[key].as_millis()).unwrap();
        let slot = observation.scheduled_for.as_millis() % 10_000;
        assert!(
            (slot - offset).abs() <= 20,
            "{key:?} scheduled at {slot} ms into the interval, offset {offset} ms"
        );
    }
    assert_eq!(running.stats.jobs.load(Ordering::Relaxed), 4);
    assert_eq!(running.stats.started.load(Ordering::Relaxed), 4);
    assert_eq!(running.stats.skipped.load(Ordering::Relaxed), 0);
    // Both smtp_rcpt jobs went through the one simulator, one session each.
    assert_eq!(sims.smtp.sessions(), 2);

    let rest = running.stop(Duration::from_secs(1)).await;
    assert!(rest.is_empty(), "{rest:#?}");
}

#[tokio::test]
async fn probe_in_flight_at_shutdown_reports_shutdown_after_the_drain() {
    let sims = Sims::start().await;
    let drain = Duration::from_millis(300);
    // Only smtp_rcpt, with a timeout far beyond the drain, against a tarpit.
    let tenants = early_tenants(
        &sims,
        "8s",
        1,
        Duration::from_millis(1500),
        "[tenants.checks.dns]\nenabled = false\n",
    );
    let (domain, block) = &tenants[0];
    sims.dns.add_microsoft_365_domain(domain);
    sims.smtp.set_fault(SmtpFault::Tarpit);
    let config = sims.config_with(INTERVAL, "8s", block);
    assert_eq!(plan(&config).len(), 1);

    let mut running = start(&config, drain);
    let wait_until = running.started + Duration::from_secs(3);
    while sims.smtp.sessions() == 0 {
        assert!(Instant::now() < wait_until, "probe never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Connected and tarpitted: nothing can have been reported yet.
    assert!(running.observations.try_recv().is_err());

    let stopping = Instant::now();
    let rest = running.stop(drain + Duration::from_secs(1)).await;
    let took = stopping.elapsed();

    assert!(took >= drain, "returned before the drain: {took:?}");
    let [observation] = rest.as_slice() else {
        panic!("expected one shutdown observation: {rest:#?}");
    };
    assert_eq!(observation.target, format!("admin@{domain}"));
    assert_eq!(observation.check, CheckKind::SmtpRcpt);
    assert_eq!(
        (observation.status, observation.reason),
        (Status::Unknown, Reason::Shutdown)
    );
    assert_eq!(observation.evidence, Evidence::None);
    assert!(observation.elapsed >= drain, "{:?}", observation.elapsed);
}
