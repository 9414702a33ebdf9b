//! The figures of one run, as JSON and as a markdown table row.
//!
//! Every figure is derived here from raw deltas taken over the measurement window; the raw
//! deltas are in the JSON too, so a reader can recompute them.

use std::time::Duration;

use serde_json::json;

use crate::blackbox::Counts;
use crate::procfs::Machine;

/// One measured process over the window.
#[derive(Debug, Clone, Default)]
pub(crate) struct Side {
    pub(crate) cpu_seconds: f64,
    pub(crate) cpu_user_seconds: f64,
    pub(crate) cpu_system_seconds: f64,
    /// Probes completed in the window (tenantwatch: observations; blackbox: /probe answers).
    pub(crate) probes: f64,
    /// Of which not ok (tenantwatch: status other than ok; blackbox: probe_success 0 or an
    /// HTTP failure).
    pub(crate) failed: f64,
    /// VmHWM at the end of the window: the peak since the process started.
    pub(crate) peak_rss_kib: u64,
    pub(crate) end_rss_kib: u64,
    pub(crate) window_rss_start_kib: u64,
    pub(crate) window_rss_max_kib: u64,
}

impl Side {
    pub(crate) fn cpu_per_1000(&self) -> Option<f64> {
        (self.probes > 0.0).then(|| self.cpu_seconds / self.probes * 1000.0)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Report {
    pub(crate) label: String,
    pub(crate) machine: Machine,
    pub(crate) tenants: usize,
    /// Configured targets: observations per interval.
    pub(crate) targets: usize,
    pub(crate) interval: Duration,
    pub(crate) warmup: Duration,
    pub(crate) window_seconds: f64,
    pub(crate) expected_rate: f64,
    pub(crate) ok_sample_interval: Option<Duration>,
    pub(crate) tw: Side,
    pub(crate) smtp_runs: f64,
    pub(crate) dns_runs: f64,
    pub(crate) lateness_p50: Option<f64>,
    pub(crate) lateness_p99: Option<f64>,
    pub(crate) written: f64,
    pub(crate) sampled_out: f64,
    pub(crate) dropped: f64,
    pub(crate) store_errors: f64,
    pub(crate) started: f64,
    pub(crate) skipped: f64,
    pub(crate) db_start_bytes: u64,
    pub(crate) db_end_bytes: u64,
    pub(crate) sims_cpu_seconds: f64,
    pub(crate) bench_cpu_seconds: f64,
    pub(crate) scrape_cpu_seconds: f64,
    pub(crate) scrape_wall_seconds: f64,
    pub(crate) scrape_bytes: usize,
    pub(crate) load_start: Option<f64>,
    pub(crate) load_end: Option<f64>,
    pub(crate) blackbox: Option<(Side, Counts)>,
    pub(crate) blackbox_exit: Option<String>,
    pub(crate) tenantwatch_exit: String,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn round(value: f64, places: i32) -> f64 {
    let factor = 10f64.powi(places);
    (value * factor).round() / factor
}

/// A bucket bound for display: `≤ 0.005 s`, or `> 10 s` for the +Inf bucket.
fn bound(value: Option<f64>) -> String {
    match value {
        None => "n/a".to_owned(),
        Some(v) if v.is_infinite() => "> 10 s".to_owned(),
        Some(v) => format!("≤ {v} s"),
    }
}

fn bound_json(value: Option<f64>) -> serde_json::Value {
    match value {
        None => serde_json::Value::Null,
        Some(v) if v.is_infinite() => json!("+Inf"),
        Some(v) => json!(v),
    }
}

impl Report {
    fn probes_per_second(&self) -> f64 {
        self.tw.probes / self.window_seconds
    }

    fn core_percent(&self, cpu_seconds: f64) -> f64 {
        cpu_seconds / self.window_seconds * 100.0
    }

    fn db_growth(&self) -> i64 {
        self.db_end_bytes as i64 - self.db_start_bytes as i64
    }

    fn db_growth_per_day(&self) -> f64 {
        self.db_growth() as f64 * 86_400.0 / self.window_seconds
    }

    fn ratio(&self) -> Option<f64> {
        let (bb, _) = self.blackbox.as_ref()?;
        Some(self.tw.cpu_per_1000()? / bb.cpu_per_1000()?)
    }

    pub(crate) fn to_json(&self) -> serde_json::Value {
        let blackbox = self.blackbox.as_ref().map(|(side, counts)| {
            json!({
                "mode": "concurrent with tenantwatch, same window, same simulators",
                "probes": side.probes,
                "probes_per_second": round(side.probes / self.window_seconds, 2),
                "smtp_ok": counts.smtp_ok,
                "smtp_failed": counts.smtp_failed,
                "dns_ok": counts.dns_ok,
                "dns_failed": counts.dns_failed,
                "http_errors": counts.http_errors,
                "ticks_skipped_in_flight_limit": counts.skipped,
                "cpu_seconds": round(side.cpu_seconds, 2),
                "cpu_user_seconds": round(side.cpu_user_seconds, 2),
                "cpu_system_seconds": round(side.cpu_system_seconds, 2),
                "cpu_percent_of_one_core": round(self.core_percent(side.cpu_seconds), 2),
                "cpu_seconds_per_1000_probes": side.cpu_per_1000().map(|v| round(v, 3)),
                "peak_rss_mib": round(mib(side.peak_rss_kib), 1),
                "end_rss_mib": round(mib(side.end_rss_kib), 1),
                "window_max_rss_mib": round(mib(side.window_rss_max_kib), 1),
                "exit": self.blackbox_exit,
            })
        });
        json!({
            "label": self.label,
            "machine": {
                "cpus": self.machine.cpus,
                "model": self.machine.model,
                "mem_total_mib": self.machine.mem_total_mib,
                "load1_at_window_start": self.load_start,
                "load1_at_window_end": self.load_end,
            },
            "config": {
                "tenants": self.tenants,
                "checks_per_tenant": 2,
                "targets": self.targets,
                "interval": humantime::format_duration(self.interval).to_string(),
                "warmup": humantime::format_duration(self.warmup).to_string(),
                "window_seconds": round(self.window_seconds, 1),
                "expected_probes_per_second": round(self.expected_rate, 2),
                "ok_sample_interval": self.ok_sample_interval
                    .map(|d| humantime::format_duration(d).to_string())
                    .unwrap_or_else(|| "1h (default)".to_owned()),
            },
            "tenantwatch": {
                "probes": self.tw.probes,
                "dns_probes": self.dns_runs,
                "smtp_rcpt_probes": self.smtp_runs,
                "not_ok_probes": self.tw.failed,
                "probes_per_second": round(self.probes_per_second(), 2),
                "runs_started": self.started,
                "runs_skipped": self.skipped,
                "cpu_seconds": round(self.tw.cpu_seconds, 2),
                "cpu_user_seconds": round(self.tw.cpu_user_seconds, 2),
                "cpu_system_seconds": round(self.tw.cpu_system_seconds, 2),
                "cpu_percent_of_one_core": round(self.core_percent(self.tw.cpu_seconds), 2),
                "cpu_seconds_per_1000_probes": self.tw.cpu_per_1000().map(|v| round(v, 3)),
                "peak_rss_mib": round(mib(self.tw.peak_rss_kib), 1),
                "end_rss_mib": round(mib(self.tw.end_rss_kib), 1),
                "window_start_rss_mib": round(mib(self.tw.window_rss_start_kib), 1),
                "window_max_rss_mib": round(mib(self.tw.window_rss_max_kib), 1),
                "lateness_p50_bucket_upper_bound_seconds": bound_json(self.lateness_p50),
                "lateness_p99_bucket_upper_bound_seconds": bound_json(self.lateness_p99),
                "store_observations_written": self.written,
                "store_writes_per_second": round(self.written / self.window_seconds, 3),
                "store_sampled_out": self.sampled_out,
                "store_dropped": self.dropped,
                "store_errors": self.store_errors,
                "db_plus_wal_bytes_at_window_start": self.db_start_bytes,
                "db_plus_wal_bytes_at_window_end": self.db_end_bytes,
                "db_growth_bytes": self.db_growth(),
                "db_growth_extrapolated_mib_per_day": round(self.db_growth_per_day() / 1_048_576.0, 2),
                "metrics_scrape_cpu_seconds": round(self.scrape_cpu_seconds, 3),
                "metrics_scrape_wall_seconds": round(self.scrape_wall_seconds, 3),
                "metrics_scrape_bytes": self.scrape_bytes,
                "exit": self.tenantwatch_exit,
            },
            "simulators": {
                "cpu_seconds": round(self.sims_cpu_seconds, 2),
                "cpu_percent_of_one_core": round(self.core_percent(self.sims_cpu_seconds), 2),
            },
            "bench_scraper": {
                "cpu_seconds": round(self.bench_cpu_seconds, 2),
            },
            "blackbox_exporter": blackbox,
            "ratio_tenantwatch_to_blackbox_cpu_per_probe": self.ratio().map(|v| round(v, 3)),
        })
    }

    pub(crate) fn markdown_header() -> String {
        [
            "| run | tenants × checks | interval | window | probes/s | daemon CPU % of 1 core | CPU s / 1,000 probes | peak RSS MiB | end RSS MiB | lateness p50 | lateness p99 | store writes/s | db+wal growth (window) | extrapolated / day | skipped | not ok | sims CPU % | blackbox CPU s / 1,000 | blackbox peak RSS MiB | tw / bb CPU per probe |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        .join("\n")
    }

    pub(crate) fn markdown_row(&self) -> String {
        let opt = |value: Option<f64>, places: usize| {
            value
                .map(|v| format!("{v:.places$}"))
                .unwrap_or_else(|| "n/a".to_owned())
        };
        let (bb_cpu, bb_rss) = match &self.blackbox {
            Some((side, _)) => (
                opt(side.cpu_per_1000(), 3),
                format!("{:.1}", mib(side.peak_rss_kib)),
            ),
            None => ("—".to_owned(), "—".to_owned()),
        };
        format!(
            "| {label} | {tenants} × {per_tenant} | {interval} | {window:.0} s | {pps:.2} | {core:.2} | {per:} | {peak:.1} | {end:.1} | {p50} | {p99} | {writes:.2} | {growth:.2} MiB | {day:.1} MiB | {skipped} | {failed} | {sims:.1} | {bb_cpu} | {bb_rss} | {ratio} |",
            label = self.label,
            tenants = self.tenants,
            per_tenant = self.targets / self.tenants.max(1),
            interval = humantime::format_duration(self.interval),
            window = self.window_seconds,
            pps = self.probes_per_second(),
            core = self.core_percent(self.tw.cpu_seconds),
            per = opt(self.tw.cpu_per_1000(), 3),
            peak = mib(self.tw.peak_rss_kib),
            end = mib(self.tw.end_rss_kib),
            p50 = bound(self.lateness_p50),
            p99 = bound(self.lateness_p99),
            writes = self.written / self.window_seconds,
            growth = self.db_growth() as f64 / 1_048_576.0,
            day = self.db_growth_per_day() / 1_048_576.0,
            skipped = self.skipped,
            failed = self.tw.failed,
            sims = self.core_percent(self.sims_cpu_seconds),
            ratio = opt(self.ratio(), 2),
        )
    }
}
