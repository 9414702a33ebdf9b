//! The per-target and per-tenant gauges, kept as plain values in one table and written
//! straight into the text exposition at scrape time.
//!
//! These families have a series per configured target: about eleven per tenant with every
//! check on, 120,000 at 10,000 tenants. As prometheus-crate `GaugeVec` children each series
//! held its own copies of the label names and values, a protobuf label list and a hash entry:
//! about 2 KB per target before a scrape, and as much again while `Registry::gather` built
//! the protobuf families (heaptrack at 1,000 tenants x 11 jobs; docs/benchmarks.md). Here a
//! target is one map entry (its three label values once, a few numbers), and a scrape writes
//! the lines directly. The registry keeps every family whose cardinality does not grow with
//! the fleet.
//!
//! The output is byte-for-byte what the prometheus crate's `TextEncoder` writes for the same
//! gauges: `# HELP` and `# TYPE` once per family, labels in name order, values escaped the same
//! way (backslash, double quote, newline) and numbers in Rust's shortest `f64` form. A family
//! with no series is left out, as the registry leaves out an empty `GaugeVec`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use tw_core::{Reason, Status};

/// (tenant, check, target) label values.
pub type TargetKey = (String, String, String);

/// The services whose health is exported: Exchange Online and Entra ID (Identity Service),
/// by their Graph service ids. Every service of every tenant would be 30 series per tenant.
pub(crate) const HEALTH_SERVICES: [&str; 2] = ["Exchange", "OrgLiveID"];

/// The last values of one configured target; `None` until an observation sets them.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct TargetSeries {
    /// The latest verdict: moves `since` only on a change, and feeds the status page's counts.
    pub(crate) verdict: Option<(Status, Reason)>,
    pub(crate) last_run: Option<f64>,
    pub(crate) since: Option<f64>,
    /// `smtp_rcpt` targets.
    pub(crate) smtp_reply_code: Option<i64>,
    /// `domain`, `signin`, `licence` targets.
    pub(crate) expiry_days: Option<i64>,
    /// The `admins` target (the tenant).
    pub(crate) global_admins: Option<i64>,
    /// The `health` target (the tenant), per [`HEALTH_SERVICES`].
    pub(crate) service_health: [Option<i64>; 2],
    /// `mailflow` targets.
    pub(crate) mailflow_last_latency: Option<f64>,
}

/// Every configured target, in (tenant, check, target) order.
pub(crate) type TargetTable = BTreeMap<TargetKey, TargetSeries>;

/// One exported family: its name, help text and how a row gives its series.
struct Family {
    name: &'static str,
    help: &'static str,
    /// Label names in the order they are written (by name, as the registry sorts them).
    write: fn(&TargetKey, &TargetSeries, &mut Lines<'_>),
}

const FAMILIES: [Family; 8] = [
    Family {
        name: "tenantwatch_check_last_run_timestamp_seconds",
        help: "When the target was last probed (Unix seconds)",
        write: |key, row, out| out.check_target_tenant(key, row.last_run),
    },
    Family {
        name: "tenantwatch_check_status",
        help: "Current verdict per target: 0 ok, 1 warning, 2 critical, 3 unknown",
        write: |key, row, out| {
            let code = row.verdict.map(|(status, _)| f64::from(status.code()));
            out.check_target_tenant(key, code);
        },
    },
    Family {
        name: "tenantwatch_check_status_since_timestamp_seconds",
        help: "When the current verdict began (Unix seconds)",
        write: |key, row, out| out.check_target_tenant(key, row.since),
    },
    Family {
        name: "tenantwatch_expiry_days",
        help: "Days until something the check watches runs out: domain registration (domain), app credential (signin), the nearest counted subscription end (licence)",
        write: |key, row, out| out.check_target_tenant(key, row.expiry_days.map(as_f64)),
    },
    Family {
        name: "tenantwatch_global_admins",
        help: "Enabled Global Administrators counted by the admins check",
        write: |key, row, out| {
            if let Some(count) = row.global_admins {
                out.series(&[("tenant", &key.0)], as_f64(count));
            }
        },
    },
    Family {
        name: "tenantwatch_mailflow_last_latency_seconds",
        help: "Latency of the latest mailflow probe message that arrived, per recipient",
        write: |key, row, out| {
            if let Some(seconds) = row.mailflow_last_latency {
                out.series(&[("target", &key.2), ("tenant", &key.0)], seconds);
            }
        },
    },
    Family {
        name: "tenantwatch_service_health",
        help: "Microsoft's service health per tenant: 0 operational, 1 an issue reported (Exchange, OrgLiveID)",
        write: |key, row, out| {
            for (service, value) in HEALTH_SERVICES.iter().zip(row.service_health) {
                if let Some(value) = value {
                    out.series(&[("service", service), ("tenant", &key.0)], as_f64(value));
                }
            }
        },
    },
    Family {
        name: "tenantwatch_smtp_rcpt_reply_code",
        help: "Last SMTP reply code to RCPT TO for a watched address (0: no reply)",
        write: |key, row, out| {
            if let Some(code) = row.smtp_reply_code {
                out.series(&[("target", &key.2), ("tenant", &key.0)], as_f64(code));
            }
        },
    },
];

/// Gauge values are `f64` in the exposition; these integers are small (reply codes, days,
/// counts), far inside the 2^53 that `f64` holds exactly.
#[allow(clippy::cast_precision_loss)]
fn as_f64(value: i64) -> f64 {
    value as f64
}

/// Appends every family with at least one series to `out`.
pub(crate) fn render(table: &TargetTable, out: &mut String) {
    for family in &FAMILIES {
        let mut lines = Lines {
            out,
            family,
            started: false,
        };
        for (key, row) in table {
            (family.write)(key, row, &mut lines);
        }
    }
}

/// Writes one family's lines, its header before the first.
struct Lines<'a> {
    out: &'a mut String,
    family: &'a Family,
    started: bool,
}

impl Lines<'_> {
    fn check_target_tenant(&mut self, key: &TargetKey, value: Option<f64>) {
        if let Some(value) = value {
            self.series(
                &[("check", &key.1), ("target", &key.2), ("tenant", &key.0)],
                value,
            );
        }
    }

    fn series(&mut self, labels: &[(&str, &str)], value: f64) {
        if !self.started {
            self.started = true;
            // Writing to a String cannot fail.
            let _ = writeln!(self.out, "# HELP {} {}", self.family.name, self.family.help);
            let _ = writeln!(self.out, "# TYPE {} gauge", self.family.name);
        }
        self.out.push_str(self.family.name);
        let mut separator = '{';
        for (name, value) in labels {
            self.out.push(separator);
            self.out.push_str(name);
            self.out.push_str("=\"");
            push_escaped(self.out, value);
            self.out.push('"');
            separator = ',';
        }
        if !labels.is_empty() {
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// A label value as the text format wants it: `\`, `"` and newline escaped.
fn push_escaped(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use prometheus::{Encoder, GaugeVec, Opts, Registry, TextEncoder};

    use super::*;

    fn key(tenant: &str, check: &str, target: &str) -> TargetKey {
        (tenant.to_owned(), check.to_owned(), target.to_owned())
    }

    /// The same values through prometheus-crate gauges and `TextEncoder`: the text must be
    /// identical, label escaping and number formatting included.
    #[test]
    fn output_is_what_the_prometheus_text_encoder_writes() {
        let mut table = TargetTable::new();
        let odd = "we\"ird\\na\nme@ex.example";
        table.insert(
            key("contoso", "smtp_rcpt", "admin@contoso.com"),
            TargetSeries {
                verdict: Some((Status::Critical, Reason::RecipientNotFound)),
                last_run: Some(1_763_900_000.125),
                since: Some(1_763_899_700.0),
                smtp_reply_code: Some(550),
                ..TargetSeries::default()
            },
        );
        table.insert(
            key("contoso", "smtp_rcpt", odd),
            TargetSeries {
                verdict: Some((Status::Ok, Reason::RecipientAccepted)),
                last_run: Some(0.5),
                since: Some(0.5),
                smtp_reply_code: Some(0),
                ..TargetSeries::default()
            },
        );
        table.insert(
            key("contoso", "admins", "contoso"),
            TargetSeries {
                verdict: Some((Status::Warning, Reason::RecipientAccepted)),
                last_run: Some(2.0),
                since: Some(1.0),
                global_admins: Some(1),
                ..TargetSeries::default()
            },
        );
        table.insert(
            key("fabrikam", "health", "fabrikam"),
            TargetSeries {
                verdict: Some((Status::Ok, Reason::RecipientAccepted)),
                last_run: Some(3.0),
                since: Some(3.0),
                service_health: [Some(0), Some(1)],
                ..TargetSeries::default()
            },
        );
        table.insert(
            key("fabrikam", "domain", "fabrikam.example"),
            TargetSeries {
                verdict: Some((Status::Warning, Reason::RecipientAccepted)),
                last_run: Some(4.0),
                since: Some(4.0),
                expiry_days: Some(-3),
                ..TargetSeries::default()
            },
        );
        table.insert(
            key("fabrikam", "mailflow", "it@fabrikam.example"),
            TargetSeries {
                verdict: Some((Status::Ok, Reason::RecipientAccepted)),
                last_run: Some(5.0),
                since: Some(5.0),
                mailflow_last_latency: Some(12.375),
                ..TargetSeries::default()
            },
        );
        // Configured, never observed: no series at all.
        table.insert(
            key("fabrikam", "dns", "fabrikam.example"),
            TargetSeries::default(),
        );

        let mut ours = String::new();
        render(&table, &mut ours);

        let registry = Registry::new();
        let gauge = |family: &Family, labels: &[&str]| {
            let vec = GaugeVec::new(Opts::new(family.name, family.help), labels).unwrap();
            registry.register(Box::new(vec.clone())).unwrap();
            vec
        };
        let [last_run, status, since, expiry, admins, latency, health, code] =
            FAMILIES.each_ref().map(|family| match family.name {
                "tenantwatch_global_admins" => gauge(family, &["tenant"]),
                "tenantwatch_service_health" => gauge(family, &["tenant", "service"]),
                "tenantwatch_smtp_rcpt_reply_code"
                | "tenantwatch_mailflow_last_latency_seconds" => {
                    gauge(family, &["tenant", "target"])
                }
                _ => gauge(family, &["tenant", "check", "target"]),
            });
        for ((tenant, check, target), row) in &table {
            let labels = [tenant.as_str(), check.as_str(), target.as_str()];
            let Some((verdict, _)) = row.verdict else {
                continue;
            };
            status
                .with_label_values(&labels)
                .set(f64::from(verdict.code()));
            last_run
                .with_label_values(&labels)
                .set(row.last_run.unwrap());
            since.with_label_values(&labels).set(row.since.unwrap());
            if let Some(days) = row.expiry_days {
                expiry.with_label_values(&labels).set(days as f64);
            }
            if let Some(count) = row.global_admins {
                admins.with_label_values(&[tenant]).set(count as f64);
            }
            for (service, value) in HEALTH_SERVICES.iter().zip(row.service_health) {
                if let Some(value) = value {
                    health
                        .with_label_values(&[tenant.as_str(), service])
                        .set(value as f64);
                }
            }
            if let Some(seconds) = row.mailflow_last_latency {
                latency.with_label_values(&[tenant, target]).set(seconds);
            }
            if let Some(reply) = row.smtp_reply_code {
                code.with_label_values(&[tenant, target]).set(reply as f64);
            }
        }
        let mut theirs = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut theirs)
            .unwrap();
        let theirs = String::from_utf8(theirs).unwrap();

        // The registry sorts series by label values, the table by (tenant, check, target):
        // compare each family's header and its set of lines.
        let lines = |text: &str| {
            let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
            lines.sort();
            lines
        };
        assert_eq!(
            lines(&ours),
            lines(&theirs),
            "ours:\n{ours}\ntheirs:\n{theirs}"
        );
        assert!(
            ours.contains(r#"target="we\"ird\\na\nme@ex.example""#),
            "{ours}"
        );
        assert!(ours.contains(
            "tenantwatch_check_status{check=\"smtp_rcpt\",target=\"admin@contoso.com\",tenant=\"contoso\"} 2\n"
        ));
        // Families come whole, header first, in name order.
        let headers: Vec<&str> = ours
            .lines()
            .filter(|line| line.starts_with("# TYPE"))
            .collect();
        assert_eq!(headers.len(), 8, "{ours}");
        let mut sorted = headers.clone();
        sorted.sort_unstable();
        assert_eq!(headers, sorted);
    }

    #[test]
    fn an_empty_table_writes_nothing() {
        let mut out = String::new();
        render(&TargetTable::new(), &mut out);
        assert_eq!(out, "");
        let mut table = TargetTable::new();
        table.insert(key("a", "dns", "a.example"), TargetSeries::default());
        render(&table, &mut out);
        assert_eq!(out, "");
    }
}
