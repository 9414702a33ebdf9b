//! `tw-bench --history-from DB`: how big `--days` of history for N tenants gets under the
//! store's default policy, measured by writing it through the real store.
//!
//! A benchmark run cannot last 30 days, so this replays what the daemon would store in them
//! for a healthy fleet, with the daemon's own code doing the storing and the thinning:
//!
//! * the first sight of every target of the first N tenants is copied from the database of
//!   a real `tw-bench --checks all --keep` run (real summaries and evidence, as probes wrote
//!   them), re-dated to the start of the period;
//! * then, hour by hour, the ok sample of every target that `store.ok_sample_interval` (1h)
//!   lets through: the same observation again, passed to `Store::record` with its evidence,
//!   which the store drops for a repeated ok (the runs in between would be sampled out and
//!   write nothing but the target's check_state row);
//! * once per simulated day, `Store::thin_ok_samples` with the default `thin_ok_after` (7d)
//!   and `thin_ok_interval` (1d), as the daemon's retention loop does, and at the end
//!   `Store::prune` (nothing is past the 90-day retention, but it returns freed pages to the
//!   file system and truncates the WAL, as the hourly prune does).
//!
//! What it leaves out: state changes after the first sight (each adds one row with its
//! evidence; the real run measured their size) and notifications.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::time::Instant;
use tw_core::{Observation, TenantName, Timestamp};
use tw_store::{RecordPolicy, Store};

use crate::sims::tenant;

const HOUR: Duration = Duration::from_secs(3_600);
const DAY: Duration = Duration::from_secs(86_400);
/// The daemon's defaults (`docs/configuration.md`, `[store]`).
const POLICY: RecordPolicy = RecordPolicy {
    ok_sample_interval: HOUR,
};
const THIN_OK_AFTER: Duration = Duration::from_secs(7 * 86_400);
const THIN_OK_INTERVAL: Duration = DAY;

/// What one replay wrote, and what it came to.
pub(crate) struct History {
    pub(crate) tenants: usize,
    pub(crate) targets: usize,
    pub(crate) days: u32,
    pub(crate) recorded: usize,
    pub(crate) thinned: u64,
    pub(crate) rows_left: usize,
    pub(crate) first_sight_bytes_of_evidence: usize,
    pub(crate) db_bytes: u64,
    pub(crate) record_seconds: f64,
    pub(crate) thin_seconds: f64,
}

impl History {
    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "tenants": self.tenants,
            "targets": self.targets,
            "days": self.days,
            "policy": {
                "ok_sample_interval_s": POLICY.ok_sample_interval.as_secs(),
                "thin_ok_after_s": THIN_OK_AFTER.as_secs(),
                "thin_ok_interval_s": THIN_OK_INTERVAL.as_secs(),
            },
            "observations_recorded": self.recorded,
            "observations_thinned": self.thinned,
            "observations_left": self.rows_left,
            "first_sight_evidence_bytes": self.first_sight_bytes_of_evidence,
            "db_plus_wal_bytes": self.db_bytes,
            "db_plus_wal_mib": self.db_bytes as f64 / 1_048_576.0,
            "bytes_per_observation_left": self.db_bytes as f64 / self.rows_left.max(1) as f64,
            "record_seconds": self.record_seconds,
            "thin_seconds": self.thin_seconds,
        })
    }
}

pub(crate) async fn replay(
    source: &Path,
    tenants: usize,
    days: u32,
    work: &Path,
) -> anyhow::Result<History> {
    let source = Store::open(source)
        .await
        .with_context(|| format!("opening {}", source.display()))?;
    // Each target's first sight: its oldest stored observation (a state change).
    let mut first_sights: Vec<Observation> = Vec::new();
    for index in 0..tenants {
        let (name, _, _) = tenant(index);
        let mut rows = source
            .observations(Some(&name), None, None, 10_000)
            .await
            .with_context(|| format!("reading {name}'s observations"))?;
        rows.sort_by_key(|row| (row.check, row.target.clone(), row.started_at));
        rows.dedup_by(|later, first| later.check == first.check && later.target == first.target);
        if rows.is_empty() {
            bail!("{name} has no observations in the source database: it must come from a tw-bench run with at least --tenants {tenants}");
        }
        for row in rows {
            first_sights.push(Observation {
                tenant: TenantName::parse(&row.tenant)
                    .with_context(|| format!("tenant name {:?}", row.tenant))?,
                check: row.check,
                target: row.target,
                scheduled_for: row.scheduled_for,
                started_at: row.started_at,
                elapsed: row.elapsed,
                status: row.status,
                reason: row.reason,
                summary: row.summary,
                evidence: row.evidence,
            });
        }
    }
    source.close().await;
    let first_sight_bytes_of_evidence = first_sights
        .iter()
        .map(|observation| {
            serde_json::to_string(&observation.evidence).map_or(0, |json| json.len())
        })
        .sum();

    let path = work.join("history.db");
    let store = Store::open(&path)
        .await
        .with_context(|| format!("creating {}", path.display()))?;
    let start = Timestamp::now().minus(DAY * days);
    let at = |offset: Duration, observation: &Observation| {
        let mut copy = observation.clone();
        copy.scheduled_for = start.plus(offset);
        copy.started_at = start.plus(offset);
        copy
    };
    let mut recorded = 0;
    let mut thinned = 0;
    let mut record_time = Duration::ZERO;
    let mut thin_time = Duration::ZERO;
    let hours = days * 24;
    for hour in 0..=hours {
        let offset = HOUR * hour;
        let batch: Vec<Observation> = first_sights
            .iter()
            .map(|observation| at(offset, observation))
            .collect();
        let started = Instant::now();
        let outcome = store.record(&batch, POLICY).await.context("recording")?;
        record_time += started.elapsed();
        recorded += outcome.stored;
        if hour > 0 && hour % 24 == 0 {
            let now = start.plus(offset);
            let started = Instant::now();
            thinned += store
                .thin_ok_samples(now.minus(THIN_OK_AFTER), THIN_OK_INTERVAL)
                .await
                .context("thinning")?;
            thin_time += started.elapsed();
            eprintln!(
                "tw-bench: day {} of {days}: {recorded} observations recorded, {thinned} thinned",
                hour / 24
            );
        }
    }
    // Nothing is past retention; this is the vacuum and WAL truncation the hourly prune does.
    let pruned = store
        .prune(start.minus(DAY))
        .await
        .context("pruning (vacuum and checkpoint)")?;
    let rows_left =
        recorded.saturating_sub(usize::try_from(thinned + pruned).unwrap_or(usize::MAX));
    store.close().await;
    let size = |suffix: &str| {
        std::fs::metadata(format!("{}{suffix}", path.display())).map_or(0, |meta| meta.len())
    };
    Ok(History {
        tenants,
        targets: first_sights.len(),
        days,
        recorded,
        thinned,
        rows_left,
        first_sight_bytes_of_evidence,
        db_bytes: size("") + size("-wal"),
        record_seconds: record_time.as_secs_f64(),
        thin_seconds: thin_time.as_secs_f64(),
    })
}
