//! What the one-shot commands print: `probe` (a tenant's checks run once, as a table or
//! `--json`, exiting like a Nagios plugin; nothing stored or sent), `alerts` (the alert states
//! in the database), `notify test` (one message straight to a receiver), and the run-time
//! decisions `ack` and `silence add/list/remove`, written to the database the config names
//! (the running daemon reads them back within seconds).

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;
use tw_core::config::Config;
use tw_core::{CheckKind, Evidence, Observation, Status, Timestamp};
use tw_probe::{Clients, ProbeMemory};
use tw_store::{AckOutcome, NewAck, NewSilence, Removal, SilenceRow, Store};

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
    let acks: HashMap<(String, CheckKind, String, u64), String> = match store.acks_after(0).await {
        Ok(acks) => acks
            .into_iter()
            .map(|ack| {
                (
                    (ack.tenant, ack.check, ack.target, ack.episode),
                    ack.acked_by,
                )
            })
            .collect(),
        // Still worth listing the alerts without saying who acknowledged them.
        Err(_) => HashMap::new(),
    };
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
            let acked = state
                .notified_episode()
                .and_then(|episode| {
                    acks.get(&(row.tenant.clone(), row.check, row.target.clone(), episode))
                })
                .map(|by| format!(" (acknowledged by {by})"))
                .unwrap_or_default();
            Some(format!("FIRING    {severity:<8} since {since}{acked}"))
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

/// Parses a UTC time for `--until` and `--start`.
pub(crate) fn parse_utc(raw: &str) -> Result<Timestamp, String> {
    Timestamp::parse_utc(raw)
        .ok_or_else(|| format!("{raw:?} is not a UTC time such as 2026-11-24T06:00:00Z"))
}

/// A silence longer than this is a config change, not a run-time decision; a typo such as
/// `2y` for `2h` must not silence a tenant for good.
pub(crate) const MAX_SILENCE: Duration = Duration::from_secs(90 * 86_400);

/// Who runs the command, for `created_by` and `acked_by`.
fn who(by: Option<String>) -> String {
    by.filter(|by| !by.trim().is_empty())
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .or_else(|| std::env::var("LOGNAME").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "cli".to_owned())
}

async fn open_store(config: &Config) -> Result<Store, ExitCode> {
    Store::open(&config.store.path).await.map_err(|err| {
        eprintln!(
            "cannot open {}: {}",
            config.store.path.display(),
            crate::pipeline::error_chain(&err)
        );
        ExitCode::from(1)
    })
}

/// The tenant (as configured) and check named on the command line, or exit 2 saying why.
fn known_key(
    config: &Config,
    tenant: &str,
    check: Option<&str>,
) -> Result<Option<CheckKind>, ExitCode> {
    if !config.tenants.iter().any(|t| t.name.as_str() == tenant) {
        let known: Vec<&str> = config.tenants.iter().map(|t| t.name.as_str()).collect();
        eprintln!(
            "no tenant named {tenant:?} in the config (known: {})",
            known.join(", ")
        );
        return Err(ExitCode::from(2));
    }
    check
        .map(str::parse::<CheckKind>)
        .transpose()
        .map_err(|err| {
            eprintln!("{err}");
            ExitCode::from(2)
        })
}

/// The alert an `ack` names.
pub(crate) struct AlertKey<'a> {
    pub(crate) tenant: &'a str,
    pub(crate) check: &'a str,
    pub(crate) target: &'a str,
}

/// Acknowledges the firing episode receivers were last told about. Exit 0 when recorded (or
/// already acknowledged), 1 when nothing of that key is firing or the database fails, 2 for
/// an unknown tenant or check.
pub(crate) async fn ack(
    config: &Config,
    key: AlertKey<'_>,
    comment: Option<String>,
    by: Option<String>,
) -> ExitCode {
    let check = match known_key(config, key.tenant, Some(key.check)) {
        Ok(Some(check)) => check,
        Ok(None) => return ExitCode::from(2),
        Err(code) => return code,
    };
    let store = match open_store(config).await {
        Ok(store) => store,
        Err(code) => return code,
    };
    let code = ack_in(&store, key.tenant, check, key.target, comment, who(by)).await;
    store.close().await;
    code
}

async fn ack_in(
    store: &Store,
    tenant: &str,
    check: CheckKind,
    target: &str,
    comment: Option<String>,
    by: String,
) -> ExitCode {
    let rows = match store.alert_states().await {
        Ok(rows) => rows,
        Err(err) => {
            eprintln!(
                "cannot read alert states: {}",
                crate::pipeline::error_chain(&err)
            );
            return ExitCode::from(1);
        }
    };
    let Some(row) = rows.into_iter().find(|row| {
        row.tenant == tenant && row.check == check && row.target.eq_ignore_ascii_case(target)
    }) else {
        eprintln!("{tenant} {check} {target}: no alert state (never checked, or never failed)");
        return ExitCode::from(1);
    };
    let state = match serde_json::from_str::<tw_alert::AlertState>(&row.state_json) {
        Ok(state) => state,
        Err(err) => {
            eprintln!("{tenant} {check} {target}: stored alert state unreadable: {err}");
            return ExitCode::from(1);
        }
    };
    let Some(episode) = state.notified_episode() else {
        eprintln!(
            "{tenant} {check} {}: not firing; nothing to acknowledge",
            row.target
        );
        return ExitCode::from(1);
    };
    let new = NewAck {
        tenant: row.tenant.clone(),
        check,
        target: row.target.clone(),
        episode,
        acked_by: by,
        acked_at: Timestamp::now(),
        comment: comment.filter(|c| !c.trim().is_empty()),
    };
    match store.add_ack(&new).await {
        Ok(AckOutcome::Added(ack)) => {
            println!(
                "acknowledged {} {} {} (episode {}) as {}: its repeats and escalation stop until it resolves",
                ack.tenant, ack.check, ack.target, ack.episode, ack.acked_by
            );
            ExitCode::SUCCESS
        }
        Ok(AckOutcome::Already(ack)) => {
            println!(
                "{} {} {} (episode {}) was already acknowledged by {} at {}",
                ack.tenant, ack.check, ack.target, ack.episode, ack.acked_by, ack.acked_at
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!(
                "cannot record the acknowledgement: {}",
                crate::pipeline::error_chain(&err)
            );
            ExitCode::from(1)
        }
    }
}

/// What `silence add` was asked for.
pub(crate) struct SilenceRequest {
    pub(crate) tenant: String,
    pub(crate) check: Option<String>,
    pub(crate) target: Option<String>,
    pub(crate) duration: Option<Duration>,
    pub(crate) until: Option<Timestamp>,
    pub(crate) start: Option<Timestamp>,
    pub(crate) reason: String,
    pub(crate) by: Option<String>,
}

/// Adds a silence and prints its id. Exit 0 when added, 1 when the database fails, 2 for
/// arguments that make no silence (unknown tenant or check, an end not after the start, no
/// reason, longer than [`MAX_SILENCE`]).
pub(crate) async fn silence_add(config: &Config, request: SilenceRequest) -> ExitCode {
    let check = match known_key(config, &request.tenant, request.check.as_deref()) {
        Ok(check) => check,
        Err(code) => return code,
    };
    let now = Timestamp::now();
    let starts_at = request.start.unwrap_or(now);
    let ends_at = match (request.duration, request.until) {
        (Some(duration), _) => starts_at.plus(duration),
        (None, Some(until)) => until,
        (None, None) => {
            eprintln!("give --duration or --until");
            return ExitCode::from(2);
        }
    };
    if ends_at <= starts_at || ends_at <= now {
        eprintln!("the silence must end after it starts and after now (ends {ends_at})");
        return ExitCode::from(2);
    }
    if ends_at.millis_since(starts_at) > u64::try_from(MAX_SILENCE.as_millis()).unwrap_or(u64::MAX)
    {
        eprintln!("a run-time silence lasts at most 90 days; use a [[silences]] window in the config for longer");
        return ExitCode::from(2);
    }
    if request.reason.trim().is_empty() {
        eprintln!("say why (--reason): it is logged with every alert the silence holds back");
        return ExitCode::from(2);
    }
    let store = match open_store(config).await {
        Ok(store) => store,
        Err(code) => return code,
    };
    let silence = NewSilence {
        tenant: Some(request.tenant),
        check,
        target: request.target.filter(|t| !t.trim().is_empty()),
        starts_at,
        ends_at,
        reason: request.reason,
        created_by: who(request.by),
        created_at: now,
    };
    let added = store.add_silence(&silence).await;
    store.close().await;
    match added {
        Ok(id) => {
            println!(
                "silence {id} added: {} from {starts_at} until {ends_at}",
                describe_scope(
                    silence.tenant.as_deref(),
                    silence.check,
                    silence.target.as_deref()
                )
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!(
                "cannot add the silence: {}",
                crate::pipeline::error_chain(&err)
            );
            ExitCode::from(1)
        }
    }
}

fn describe_scope(tenant: Option<&str>, check: Option<CheckKind>, target: Option<&str>) -> String {
    format!(
        "{} {} {}",
        tenant.unwrap_or("*"),
        check.map(CheckKind::as_str).unwrap_or("*"),
        target.unwrap_or("*")
    )
}

/// Prints silences in force or to come (every one with `all`). Exit 0, or 1 when the
/// database cannot be read.
pub(crate) async fn silence_list(config: &Config, all: bool) -> ExitCode {
    let store = match open_store(config).await {
        Ok(store) => store,
        Err(code) => return code,
    };
    let now = Timestamp::now();
    let rows = store.silences(now, all).await;
    store.close().await;
    match rows {
        Ok(rows) if rows.is_empty() => {
            println!("no silences");
            ExitCode::SUCCESS
        }
        Ok(rows) => {
            for row in rows {
                println!("{}", silence_line(&row, now));
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!(
                "cannot read silences: {}",
                crate::pipeline::error_chain(&err)
            );
            ExitCode::from(1)
        }
    }
}

fn silence_line(row: &SilenceRow, now: Timestamp) -> String {
    let state = match row.removed_at {
        Some(at) => format!(
            "removed by {} at {at}",
            row.removed_by.as_deref().unwrap_or("?")
        ),
        None if row.ends_at <= now => "ended".to_owned(),
        None if row.starts_at > now => "upcoming".to_owned(),
        None => "active".to_owned(),
    };
    format!(
        "{:<5} {}  {} .. {}  by {}  [{state}]  {}",
        row.id,
        describe_scope(row.tenant.as_deref(), row.check, row.target.as_deref()),
        row.starts_at,
        row.ends_at,
        row.created_by,
        row.reason
    )
}

/// Ends a silence now. Exit 0 when removed (or removed before), 1 when there is no such
/// silence or the database fails.
pub(crate) async fn silence_remove(config: &Config, id: i64, by: Option<String>) -> ExitCode {
    let store = match open_store(config).await {
        Ok(store) => store,
        Err(code) => return code,
    };
    let removed = store.remove_silence(id, &who(by), Timestamp::now()).await;
    store.close().await;
    match removed {
        Ok(Removal::Removed(row)) => {
            println!("silence {} removed", row.id);
            ExitCode::SUCCESS
        }
        Ok(Removal::AlreadyRemoved(row)) => {
            println!(
                "silence {} was already removed by {} at {}",
                row.id,
                row.removed_by.as_deref().unwrap_or("?"),
                row.removed_at.map(|at| at.to_string()).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Ok(Removal::NotFound) => {
            eprintln!("no silence with id {id}");
            ExitCode::from(1)
        }
        Err(err) => {
            eprintln!(
                "cannot remove the silence: {}",
                crate::pipeline::error_chain(&err)
            );
            ExitCode::from(1)
        }
    }
}
