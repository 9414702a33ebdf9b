//! `tenantwatch probe`: run a tenant's checks once and print them for a person (a table) or a
//! machine (`--json`), exiting like a Nagios plugin. Nothing is stored or sent.

use std::process::ExitCode;

use serde::Serialize;
use tw_core::config::Config;
use tw_core::{CheckKind, Evidence, Observation, Status, Timestamp};
use tw_probe::{Clients, DnsMemory};

pub(crate) async fn probe(
    config: &Config,
    tenant: &str,
    check: Option<&str>,
    json: bool,
) -> ExitCode {
    let Some(tenant_config) = config.tenants.iter().find(|t| t.name.as_str() == tenant) else {
        let known: Vec<&str> = config.tenants.iter().map(|t| t.name.as_str()).collect();
        eprintln!(
            "no tenant named {tenant:?} in the config (known: {})",
            known.join(", ")
        );
        return ExitCode::from(3);
    };
    let check = match check.map(str::parse::<CheckKind>).transpose() {
        Ok(check) => check,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(3);
        }
    };
    let clients = match Clients::from_config(config) {
        Ok(clients) => clients,
        Err(err) => {
            eprintln!(
                "cannot build probe clients: {}",
                crate::pipeline::error_chain(&err)
            );
            return ExitCode::from(3);
        }
    };
    let jobs: Vec<_> = tw_probe::plan(config)
        .into_iter()
        .filter(|job| {
            job.tenant == tenant_config.name && check.is_none_or(|kind| job.check == kind)
        })
        .collect();
    if jobs.is_empty() {
        eprintln!(
            "tenant {tenant} has no enabled check{}",
            check.map(|c| format!(" of kind {c}")).unwrap_or_default()
        );
        return ExitCode::from(3);
    }

    let memory = DnsMemory::default();
    let mut observations = Vec::new();
    for job in &jobs {
        observations.extend(tw_probe::run_job(job, &clients, &memory, Timestamp::now()).await);
    }

    if json {
        let rows: Vec<JsonRow<'_>> = observations.iter().map(JsonRow::from).collect();
        match serde_json::to_string_pretty(&rows) {
            Ok(text) => println!("{text}"),
            Err(err) => {
                eprintln!("cannot encode JSON: {err}");
                return ExitCode::from(3);
            }
        }
    } else {
        print_table(&observations);
    }
    let worst = observations
        .iter()
        .map(|o| o.status)
        .fold(Status::Ok, Status::worst);
    ExitCode::from(worst.code())
}

#[derive(Serialize)]
struct JsonRow<'a> {
    tenant: &'a str,
    check: &'a str,
    target: &'a str,
    status: &'a str,
    reason: &'a str,
    summary: &'a str,
    started_at: String,
    elapsed_ms: u64,
    evidence: &'a Evidence,
}

impl<'a> From<&'a Observation> for JsonRow<'a> {
    fn from(o: &'a Observation) -> JsonRow<'a> {
        JsonRow {
            tenant: o.tenant.as_str(),
            check: o.check.as_str(),
            target: &o.target,
            status: o.status.as_str(),
            reason: o.reason.as_str(),
            summary: &o.summary,
            started_at: o.started_at.to_string(),
            elapsed_ms: u64::try_from(o.elapsed.as_millis()).unwrap_or(u64::MAX),
            evidence: &o.evidence,
        }
    }
}

fn print_table(observations: &[Observation]) {
    let headers = ["CHECK", "TARGET", "STATUS", "REASON", "TIME", "SUMMARY"];
    let rows: Vec<[String; 6]> = observations
        .iter()
        .map(|o| {
            [
                o.check.to_string(),
                o.target.clone(),
                o.status.as_str().to_uppercase(),
                o.reason.to_string(),
                format!("{}ms", o.elapsed.as_millis()),
                o.summary.clone(),
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row.iter()).take(5) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        let mut text = String::new();
        for (idx, cell) in cells.iter().enumerate() {
            if idx < 5 {
                text.push_str(&format!("{cell:<width$}  ", width = widths[idx]));
            } else {
                text.push_str(cell);
            }
        }
        text
    };
    println!("{}", line(headers));
    for row in &rows {
        println!(
            "{}",
            line([&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]].map(String::as_str))
        );
    }
}
