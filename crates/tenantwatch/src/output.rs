//! What the one-shot commands print: `probe` (a tenant's checks run once, as a table or
//! `--json`, exiting like a Nagios plugin; nothing stored or sent), `alerts` (the alert states
//! in the database) and `notify test` (one message straight to a receiver).

use std::process::ExitCode;

use serde::Serialize;
use tw_core::config::Config;
use tw_core::{CheckKind, Evidence, Observation, Status, Timestamp};
use tw_probe::{Clients, ProbeMemory};

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

    let memory = ProbeMemory::default();
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

/// Prints every alert that is firing, pending confirmation or blind. Exit 0 when none is
/// firing, 2 when one is, 3 when the database cannot be read.
pub(crate) async fn alerts(config: &Config) -> ExitCode {
    let store = match tw_store::Store::open(&config.store.path).await {
        Ok(store) => store,
        Err(err) => {
            eprintln!(
                "cannot open {}: {}",
                config.store.path.display(),
                crate::pipeline::error_chain(&err)
            );
            return ExitCode::from(3);
        }
    };
    let rows = store.alert_states().await;
    store.close().await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(err) => {
            eprintln!(
                "cannot read alert states: {}",
                crate::pipeline::error_chain(&err)
            );
            return ExitCode::from(3);
        }
    };
    let mut lines = Vec::new();
    let mut firing = false;
    for row in rows {
        let Ok(state) = serde_json::from_str::<tw_alert::AlertState>(&row.state_json) else {
            lines.push(format!(
                "?         {} {} {}: stored state unreadable",
                row.tenant, row.check, row.target
            ));
            continue;
        };
        let what = if let Some(since) = state.firing_since() {
            firing = true;
            let severity = state.severity().map(|s| s.as_str()).unwrap_or("?");
            Some(format!("FIRING    {severity:<8} since {since}"))
        } else {
            state
                .pending_since()
                .map(|since| format!("PENDING   {:<8} since {since}", ""))
        };
        let blind = state
            .blind_since()
            .map(|since| format!("BLIND     {:<8} since {since}", ""));
        for text in what.into_iter().chain(blind) {
            lines.push(format!(
                "{text}  {} {} {}",
                row.tenant, row.check, row.target
            ));
        }
    }
    if lines.is_empty() {
        println!("no alerts");
    } else {
        for line in lines {
            println!("{line}");
        }
    }
    ExitCode::from(if firing { 2 } else { 0 })
}

/// Sends one test message to `receiver` through its channel, now. Exit 0 when delivered.
pub(crate) async fn notify_test(config: &Config, receiver: &str) -> ExitCode {
    let channels = match crate::receivers::channels(&config.alerting) {
        Ok(channels) => channels,
        Err(err) => {
            eprintln!("{err:#}");
            return ExitCode::from(2);
        }
    };
    let Some(channel) = channels.get(receiver) else {
        let mut known: Vec<&str> = channels.keys().map(String::as_str).collect();
        known.sort_unstable();
        eprintln!(
            "no receiver named {receiver:?} (configured: {})",
            known.join(", ")
        );
        return ExitCode::from(2);
    };
    let now = Timestamp::now();
    let message = tw_notify::Message {
        id: format!("tenantwatch-test/{receiver}/{}", now.as_millis()),
        kind: "test".to_owned(),
        severity: "warning".to_owned(),
        tenant: "tenantwatch".to_owned(),
        check: "test".to_owned(),
        target: receiver.to_owned(),
        status: "ok".to_owned(),
        reason: "test".to_owned(),
        title: format!("tenantwatch test message for {receiver}"),
        short: format!("tenantwatch test: receiver {receiver} works"),
        body: format!("tenantwatch test message for {receiver}\n\nIf you read this, alerts sent to {receiver} reach you. Sent {now}."),
        since: now,
        at: now,
        link: config.alerting.status_page_url.clone(),
    };
    let http = match tw_notify::http_client(std::time::Duration::from_secs(10)) {
        Ok(http) => http,
        Err(err) => {
            eprintln!("cannot build the HTTP client: {err}");
            return ExitCode::from(1);
        }
    };
    match tw_notify::deliver(channel, &message, &http).await {
        Ok(()) => {
            println!("sent to {receiver} ({})", channel.kind());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("not delivered to {receiver} ({}): {err}", channel.kind());
            ExitCode::from(1)
        }
    }
}
