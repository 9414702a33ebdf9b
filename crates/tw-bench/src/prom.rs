//! The few tenantwatch metrics the benchmark reads, parsed from the Prometheus text format,
//! and quantiles estimated from histogram bucket deltas.
//!
//! Only counters and histogram buckets are read, and always as a difference between two
//! scrapes, so whatever happened before the measurement window (start-up, warm-up) is
//! excluded.

use std::collections::BTreeMap;

/// The counters of one /metrics scrape that the benchmark uses.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    /// `tenantwatch_probe_runs_total` by (check, status).
    pub(crate) runs: BTreeMap<(String, String), f64>,
    /// `tenantwatch_scheduling_lateness_seconds_bucket`, summed over checks, by `le`
    /// (cumulative counts; `+Inf` is `f64::INFINITY`).
    pub(crate) lateness: Vec<(f64, f64)>,
    pub(crate) written: f64,
    pub(crate) sampled_out: f64,
    pub(crate) dropped: f64,
    pub(crate) store_errors: f64,
    pub(crate) started: f64,
    pub(crate) skipped: f64,
}

impl Snapshot {
    pub(crate) fn parse(text: &str) -> Snapshot {
        let mut snapshot = Snapshot::default();
        let mut lateness: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            match name {
                "tenantwatch_probe_runs_total" => {
                    let check = label(labels, "check").unwrap_or_default();
                    let status = label(labels, "status").unwrap_or_default();
                    *snapshot.runs.entry((check, status)).or_default() += value;
                }
                "tenantwatch_scheduling_lateness_seconds_bucket" => {
                    let le = match label(labels, "le").as_deref() {
                        Some("+Inf") => f64::INFINITY,
                        Some(le) => match le.parse::<f64>() {
                            Ok(le) => le,
                            Err(_) => continue,
                        },
                        None => continue,
                    };
                    // Keyed by the bits of a non-negative float, which sort like the floats.
                    lateness.entry(le.to_bits()).or_insert((le, 0.0)).1 += value;
                }
                "tenantwatch_store_observations_written_total" => snapshot.written = value,
                "tenantwatch_store_observations_sampled_out_total" => snapshot.sampled_out = value,
                "tenantwatch_store_dropped_observations_total" => snapshot.dropped = value,
                "tenantwatch_store_errors_total" => snapshot.store_errors = value,
                "tenantwatch_scheduler_runs_started_total" => snapshot.started = value,
                "tenantwatch_scheduler_runs_skipped_total" => snapshot.skipped = value,
                _ => {}
            }
        }
        snapshot.lateness = lateness.into_values().collect();
        snapshot
    }

    pub(crate) fn total_runs(&self) -> f64 {
        self.runs.values().sum()
    }

    /// Observations whose status is not `ok`.
    pub(crate) fn not_ok_runs(&self) -> f64 {
        self.runs
            .iter()
            .filter(|((_, status), _)| status != "ok")
            .map(|(_, count)| count)
            .sum()
    }

    pub(crate) fn runs_of_check(&self, check: &str) -> f64 {
        self.runs
            .iter()
            .filter(|((kind, _), _)| kind == check)
            .map(|(_, count)| count)
            .sum()
    }
}

/// The value of `key="value"` in a label list. Label values here come from closed sets
/// (check kinds, statuses, reasons, bucket bounds): no escaped quotes to handle.
fn label(labels: &str, key: &str) -> Option<String> {
    labels.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// Quantile `q` of the observations between two scrapes of a histogram, as the upper bound
/// of the bucket it falls in: the true value is at most this (and above the previous bound).
/// `None` when no observation fell in the window.
pub(crate) fn bucket_quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let deltas: Vec<(f64, f64)> = after
        .iter()
        .map(|&(le, count)| {
            let earlier = before
                .iter()
                .find(|(b, _)| *b == le)
                .map(|&(_, c)| c)
                .unwrap_or(0.0);
            (le, count - earlier)
        })
        .collect();
    let total = deltas.last().map(|&(_, count)| count)?;
    if total <= 0.0 {
        return None;
    }
    deltas
        .iter()
        .find(|&&(_, count)| count >= q * total)
        .map(|&(le, _)| le)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP tenantwatch_probe_runs_total Observations
# TYPE tenantwatch_probe_runs_total counter
tenantwatch_probe_runs_total{check="dns",reason="dns_records_ok",status="ok"} 10
tenantwatch_probe_runs_total{check="dns",reason="dns_drift",status="warning"} 1
tenantwatch_probe_runs_total{check="smtp_rcpt",reason="recipient_accepted",status="ok"} 9
tenantwatch_scheduling_lateness_seconds_bucket{check="dns",le="0.001"} 5
tenantwatch_scheduling_lateness_seconds_bucket{check="dns",le="0.005"} 10
tenantwatch_scheduling_lateness_seconds_bucket{check="dns",le="+Inf"} 11
tenantwatch_scheduling_lateness_seconds_bucket{check="smtp_rcpt",le="0.001"} 9
tenantwatch_scheduling_lateness_seconds_bucket{check="smtp_rcpt",le="0.005"} 9
tenantwatch_scheduling_lateness_seconds_bucket{check="smtp_rcpt",le="+Inf"} 9
tenantwatch_store_observations_written_total 7
tenantwatch_scheduler_runs_skipped_total 2
"#;

    #[test]
    fn parses_the_counters_it_needs() {
        let snapshot = Snapshot::parse(TEXT);
        assert_eq!(snapshot.total_runs(), 20.0);
        assert_eq!(snapshot.not_ok_runs(), 1.0);
        assert_eq!(snapshot.runs_of_check("smtp_rcpt"), 9.0);
        assert_eq!(snapshot.written, 7.0);
        assert_eq!(snapshot.skipped, 2.0);
        assert_eq!(
            snapshot.lateness,
            vec![(0.001, 14.0), (0.005, 19.0), (f64::INFINITY, 20.0)]
        );
    }

    #[test]
    fn quantiles_come_from_bucket_deltas() {
        let before = vec![(0.001, 100.0), (0.01, 100.0), (f64::INFINITY, 100.0)];
        let after = vec![(0.001, 150.0), (0.01, 199.0), (f64::INFINITY, 200.0)];
        // 100 new observations: 50 ≤ 1 ms, 49 in (1 ms, 10 ms], 1 above 10 ms.
        assert_eq!(bucket_quantile(&before, &after, 0.5), Some(0.001));
        assert_eq!(bucket_quantile(&before, &after, 0.99), Some(0.01));
        assert_eq!(bucket_quantile(&before, &after, 0.999), Some(f64::INFINITY));
        assert_eq!(bucket_quantile(&after, &after, 0.5), None);
    }
}
