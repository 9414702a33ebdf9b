//! `tenantwatch report`: an incident evidence report for one tenant over a time window, from
//! the database, as Markdown or JSON.
//!
//! It is written to go straight into a vendor support case or a NIS2 incident notification:
//! a summary (affected services, first and last seen, recovery, duration, notifications), the
//! state each check was in when the window opened, a timeline of first detections,
//! confirmations, changes and recoveries with the notifications sent, and the evidence behind
//! each entry (SMTP transcripts and reply codes, HTTP exchanges with AADSTS and Graph error
//! codes and Microsoft's request and correlation ids, DNS answers, bounces).
//!
//! The building ([`build`]) is a pure function of what the store returned, so the rules
//! (what counts as a detection, when an episode ends) are unit-tested here; the binary only
//! reads and prints. Everything in the evidence came from the outside world and may be
//! hostile, so Markdown output escapes inline text and fences transcripts with a fence
//! longer than any backtick run inside them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;
use tw_core::config::Config;
use tw_core::{CheckKind, Direction, Evidence, Status, Timestamp, TranscriptLine};
use tw_store::{NotificationRecord, StoredObservation, MAX_WINDOW};

/// Bumped when a field of the JSON report changes meaning or disappears.
const REPORT_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ReportFormat {
    /// Markdown, for a support case or an incident notification.
    Md,
    /// JSON, for tools (every field documented in docs/report.md).
    Json,
}

/// `--since` / `--until`: an RFC 3339 UTC time (`2026-11-23T08:00:00Z`), a date
/// (`2026-11-23`, midnight UTC), or a duration before now (`90m`, `24h`, `7d`).
pub(crate) fn parse_time(raw: &str) -> Result<Timestamp, String> {
    if let Some(at) = Timestamp::parse_utc(raw) {
        return Ok(at);
    }
    match humantime::parse_duration(raw.trim()) {
        Ok(ago) => Ok(Timestamp::now().minus(ago)),
        Err(_) => Err(format!(
            "{raw:?} is neither a UTC time such as 2026-11-23T08:00:00Z or 2026-11-23, nor a duration before now such as 24h or 7d"
        )),
    }
}

/// What the store returned for one report.
pub(crate) struct Input {
    pub(crate) tenant: String,
    pub(crate) tenant_id: Option<String>,
    pub(crate) domains: Vec<String>,
    pub(crate) configured: bool,
    pub(crate) since: Timestamp,
    pub(crate) until: Timestamp,
    pub(crate) generated_at: Timestamp,
    /// The state-changing observation each key was in at `since`.
    pub(crate) before: Vec<StoredObservation>,
    /// Observations in the window, oldest first.
    pub(crate) observations: Vec<StoredObservation>,
    pub(crate) truncated: bool,
    /// Notifications enqueued in the window, every tenant's; filtered here.
    pub(crate) notifications: Vec<NotificationRecord>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    report_version: u32,
    generated_at: String,
    generated_by: String,
    tenant: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant_id: Option<String>,
    domains: Vec<String>,
    /// False when the tenant is no longer in the config (the report is from stored history).
    configured: bool,
    window: Window,
    summary: Summary,
    state_at_start: Vec<StateAtStart>,
    timeline: Vec<Entry>,
    notifications: Vec<Notification>,
    /// Stored observations read for the window.
    observations_read: usize,
    /// True when the window held more than the report reads (50,000 observations).
    truncated: bool,
    notes: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Window {
    since: String,
    until: String,
}

#[derive(Debug, Serialize)]
struct Summary {
    /// `ongoing`, `resolved`, or `none` (no warning or critical verdict in the window).
    status: &'static str,
    affected: Vec<Affected>,
    /// Checks that could not tell (only `unknown` verdicts) for a while: the probe was blind,
    /// which says nothing about the service.
    blind: Vec<Affected>,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_seen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recovered_at: Option<String>,
    /// From first seen to recovery; while ongoing, to the last failing observation.
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_s: Option<u64>,
    notifications_sent: usize,
    notifications_failed: usize,
    notifications_pending: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_notification_at: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct Affected {
    service: &'static str,
    check: &'static str,
    target: String,
    /// The worst status seen.
    worst: &'static str,
    reasons: Vec<&'static str>,
    first_seen: String,
    last_seen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    recovered_at: Option<String>,
    ongoing: bool,
    duration_s: u64,
    /// Failing observations in the window.
    failing_observations: usize,
    #[serde(skip)]
    first_seen_at: Timestamp,
    #[serde(skip)]
    last_seen_at: Timestamp,
    #[serde(skip)]
    recovered: Option<Timestamp>,
}

#[derive(Debug, Serialize)]
struct StateAtStart {
    check: &'static str,
    target: String,
    status: &'static str,
    reason: &'static str,
    since: String,
    summary: String,
}

#[derive(Debug, Serialize)]
struct Entry {
    at: String,
    /// `detected` (first failing verdict after ok or at first sight), `confirmed` (the next
    /// run failed the same way), `changed` (a different failing verdict), `recovered` (ok
    /// again), `already_failing` (first failing verdict in the window of a problem that began
    /// before it) or `notified` (a notification enqueued).
    event: &'static str,
    check: String,
    target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    observation_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    elapsed_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    evidence: Option<Evidence>,
    /// For `notified`: the receiver and how delivery went.
    #[serde(skip_serializing_if = "Option::is_none")]
    receiver: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivery: Option<String>,
    #[serde(skip)]
    sort_at: Timestamp,
}

#[derive(Debug, Serialize)]
struct Notification {
    enqueued_at: String,
    receiver: String,
    kind: String,
    severity: String,
    check: String,
    target: String,
    title: String,
    /// `sent`, `pending`, `failed`, `expired`, or `fallback` (handed on to the next receiver
    /// of its route).
    state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivered_at: Option<String>,
    attempts: Vec<Attempt>,
}

#[derive(Debug, Serialize)]
struct Attempt {
    at: String,
    outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// What each check watches, in words a support engineer or a regulator reads.
fn service(check: CheckKind) -> &'static str {
    match check {
        CheckKind::Dns => "DNS records for mail and sign-in (MX, SPF, DKIM, DMARC, autodiscover)",
        CheckKind::SmtpRcpt => "Inbound mail: recipient accepted by the tenant's MX",
        CheckKind::Tenant => "Entra ID tenant discovery (OpenID configuration)",
        CheckKind::Realm => "Entra ID user realm (sign-in discovery)",
        CheckKind::Signin => "Monitoring app sign-in to the tenant (client credentials)",
        CheckKind::Identity => "Entra ID user account (Microsoft Graph)",
        CheckKind::Licence => "Licences and subscriptions (Microsoft Graph)",
        CheckKind::Admins => "Global Administrators (Microsoft Graph)",
        CheckKind::Health => "Microsoft service health (Exchange Online, Entra ID)",
        CheckKind::Mailflow => "Mail delivery end to end (message through a non-Microsoft relay)",
        CheckKind::Domain => "Domain registration (RDAP)",
    }
}

fn text(at: Timestamp) -> String {
    at.to_string()
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The episode of one key being in trouble, while the report walks its observations.
struct Episode {
    start: Timestamp,
    last: Timestamp,
    worst: Status,
    reasons: Vec<&'static str>,
    failing: usize,
    end: Option<Timestamp>,
}

impl Episode {
    fn affected(&self, check: CheckKind, target: &str) -> Affected {
        let end = self.end.unwrap_or(self.last);
        Affected {
            service: service(check),
            check: check.as_str(),
            target: target.to_owned(),
            worst: self.worst.as_str(),
            reasons: self.reasons.clone(),
            first_seen: text(self.start),
            last_seen: text(self.last),
            recovered_at: self.end.map(text),
            ongoing: self.end.is_none(),
            duration_s: end.millis_since(self.start) / 1000,
            failing_observations: self.failing,
            first_seen_at: self.start,
            last_seen_at: self.last,
            recovered: self.end,
        }
    }
}

/// Builds the report. Pure: the same input gives the same report.
pub(crate) fn build(input: Input) -> Report {
    type Key = (CheckKind, String);
    // The last verdict of each key, seeded with the state at the window's start.
    let mut last: BTreeMap<Key, Status> = BTreeMap::new();
    let mut episodes: BTreeMap<Key, Vec<Episode>> = BTreeMap::new();
    let mut state_at_start = Vec::new();
    for o in &input.before {
        let key = (o.check, o.target.clone());
        last.insert(key.clone(), o.status);
        if o.status != Status::Ok {
            episodes.entry(key).or_default().push(Episode {
                start: o.started_at,
                last: o.started_at,
                worst: o.status,
                reasons: vec![o.reason.as_str()],
                failing: 0,
                end: None,
            });
        }
        state_at_start.push(StateAtStart {
            check: o.check.as_str(),
            target: o.target.clone(),
            status: o.status.as_str(),
            reason: o.reason.as_str(),
            since: text(o.started_at),
            summary: o.summary.clone(),
        });
    }

    let mut timeline = Vec::new();
    // Whether the run after a detection was recorded as its confirmation yet.
    let mut awaiting_confirmation: BTreeMap<Key, bool> = BTreeMap::new();
    for o in &input.observations {
        let key = (o.check, o.target.clone());
        let previous = last.insert(key.clone(), o.status);
        let failing = o.status != Status::Ok;
        let event = match (previous, failing) {
            (None | Some(Status::Ok), true) if o.state_change => Some("detected"),
            (None, true) => Some("already_failing"),
            (Some(Status::Ok), true) => Some("detected"),
            (Some(_), true) if o.state_change => Some("changed"),
            (Some(_), true) => awaiting_confirmation
                .get(&key)
                .copied()
                .unwrap_or(false)
                .then_some("confirmed"),
            (Some(before), false) if before != Status::Ok => Some("recovered"),
            _ => None,
        };
        match event {
            Some("detected" | "changed" | "already_failing") => {
                awaiting_confirmation.insert(key.clone(), true);
            }
            Some(_) | None => {
                awaiting_confirmation.insert(key.clone(), false);
            }
        }

        if failing {
            let list = episodes.entry(key.clone()).or_default();
            match list.last_mut().filter(|episode| episode.end.is_none()) {
                Some(episode) => {
                    episode.last = o.started_at;
                    episode.worst = episode.worst.worst(o.status);
                    if !episode.reasons.contains(&o.reason.as_str()) {
                        episode.reasons.push(o.reason.as_str());
                    }
                    episode.failing += 1;
                }
                None => list.push(Episode {
                    start: o.started_at,
                    last: o.started_at,
                    worst: o.status,
                    reasons: vec![o.reason.as_str()],
                    failing: 1,
                    end: None,
                }),
            }
        } else if let Some(episode) = episodes
            .get_mut(&key)
            .and_then(|list| list.last_mut())
            .filter(|episode| episode.end.is_none())
        {
            episode.end = Some(o.started_at);
        }

        if let Some(event) = event {
            timeline.push(Entry {
                at: text(o.started_at),
                event,
                check: o.check.as_str().to_owned(),
                target: o.target.clone(),
                status: Some(o.status.as_str()),
                reason: Some(o.reason.as_str()),
                summary: o.summary.clone(),
                observation_id: Some(o.id),
                elapsed_ms: Some(millis(o.elapsed)),
                evidence: Some(o.evidence.clone()),
                receiver: None,
                delivery: None,
                sort_at: o.started_at,
            });
        }
    }

    let mut notifications = Vec::new();
    for record in &input.notifications {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&record.message_json) else {
            continue;
        };
        let field = |name: &str| message[name].as_str().unwrap_or_default().to_owned();
        if field("tenant") != input.tenant {
            continue;
        }
        let delivered = record
            .attempts
            .iter()
            .find(|attempt| attempt.outcome == "sent")
            .map(|attempt| attempt.attempted_at);
        let delivery = match (record.state.as_str(), delivered) {
            ("sent", Some(at)) => format!("delivered {at}"),
            ("pending", _) if record.attempts.is_empty() => "not attempted yet".to_owned(),
            ("pending", _) => format!("retrying after {} attempts", record.attempts.len()),
            // The route's next receiver got its own row, which is in the report too.
            ("fallback", _) => format!(
                "handed on to the next receiver of its route{}",
                record
                    .last_error
                    .as_deref()
                    .map(|error| format!(" after: {error}"))
                    .unwrap_or_default()
            ),
            (state, _) => format!(
                "{state}{}",
                record
                    .last_error
                    .as_deref()
                    .map(|error| format!(": {error}"))
                    .unwrap_or_default()
            ),
        };
        timeline.push(Entry {
            at: text(record.created_at),
            event: "notified",
            check: field("check"),
            target: field("target"),
            status: None,
            reason: None,
            summary: format!(
                "{} ({}, {}): {}",
                field("kind"),
                field("severity"),
                record.receiver,
                field("title")
            ),
            observation_id: None,
            elapsed_ms: None,
            evidence: None,
            receiver: Some(record.receiver.clone()),
            delivery: Some(delivery),
            sort_at: record.created_at,
        });
        notifications.push(Notification {
            enqueued_at: text(record.created_at),
            receiver: record.receiver.clone(),
            kind: field("kind"),
            severity: field("severity"),
            check: field("check"),
            target: field("target"),
            title: field("title"),
            state: record.state.clone(),
            delivered_at: delivered.map(text),
            attempts: record
                .attempts
                .iter()
                .map(|attempt| Attempt {
                    at: text(attempt.attempted_at),
                    outcome: attempt.outcome.clone(),
                    error: attempt.error.clone(),
                })
                .collect(),
        });
    }
    // Stable: an observation and the notification it caused keep their order.
    timeline.sort_by_key(|entry| entry.sort_at);

    let mut affected = Vec::new();
    let mut blind = Vec::new();
    for ((check, target), list) in &episodes {
        for episode in list {
            // An episode that ended before the window (recovered at its start) is not news.
            if episode.end.is_some_and(|end| end < input.since) {
                continue;
            }
            let row = episode.affected(*check, target);
            if episode.worst == Status::Unknown {
                blind.push(row);
            } else {
                affected.push(row);
            }
        }
    }
    affected.sort_by_key(|row| row.first_seen_at);
    blind.sort_by_key(|row| row.first_seen_at);
    let first_seen = affected.iter().map(|row| row.first_seen_at).min();
    let last_seen = affected.iter().map(|row| row.last_seen_at).max();
    let ongoing = affected.iter().any(|row| row.ongoing);
    let recovered_at = if ongoing {
        None
    } else {
        affected.iter().filter_map(|row| row.recovered).max()
    };
    let end = recovered_at.or(last_seen);
    let sent = notifications.iter().filter(|n| n.state == "sent").count();
    let failed = notifications
        .iter()
        .filter(|n| n.state == "failed" || n.state == "expired")
        .count();
    let pending = notifications
        .iter()
        .filter(|n| n.state == "pending")
        .count();
    let summary = Summary {
        status: if affected.is_empty() {
            "none"
        } else if ongoing {
            "ongoing"
        } else {
            "resolved"
        },
        first_seen: first_seen.map(text),
        last_seen: last_seen.map(text),
        recovered_at: recovered_at.map(text),
        duration_s: first_seen
            .zip(end)
            .map(|(first, end)| end.millis_since(first) / 1000),
        notifications_sent: sent,
        notifications_failed: failed,
        notifications_pending: pending,
        first_notification_at: notifications.first().map(|n| n.enqueued_at.clone()),
        affected,
        blind,
    };

    let mut notes = vec![
        "All times are UTC (RFC 3339).".to_owned(),
        "tenantwatch stores every state change and every failing verdict with its evidence; repeated ok verdicts are kept once per store.ok_sample_interval (verdict and summary, without evidence), so recoveries are exact and quiet periods are sampled.".to_owned(),
        "A verdict of unknown means the probe could not tell (timeout, throttling, its own IP blocked); it is never counted as an outage of the service.".to_owned(),
    ];
    if input.truncated {
        notes.push(format!(
            "The window held more than {MAX_WINDOW} stored observations; only the first {MAX_WINDOW} were read. Narrow the window with --since and --until."
        ));
    }
    if !input.configured {
        notes.push(
            "This tenant is not in the current configuration; the report is from stored history."
                .to_owned(),
        );
    }

    Report {
        report_version: REPORT_VERSION,
        generated_at: text(input.generated_at),
        generated_by: format!("tenantwatch {}", env!("CARGO_PKG_VERSION")),
        tenant: input.tenant,
        tenant_id: input.tenant_id,
        domains: input.domains,
        configured: input.configured,
        window: Window {
            since: text(input.since),
            until: text(input.until),
        },
        summary,
        state_at_start,
        timeline,
        notifications,
        observations_read: input.observations.len(),
        truncated: input.truncated,
        notes,
    }
}

/// Inline Markdown text: characters that would start markup are backslash-escaped and line
/// breaks become spaces, so a hostile reply cannot add a heading, a link, a table cell or
/// raw HTML.
fn md(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '#' | '~' | '!' | '&' => {
                out.push('\\');
                out.push(c);
            }
            '\r' | '\n' => out.push(' '),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// A fenced code block whose fence is longer than any backtick run in `body`.
fn fenced(out: &mut String, body: &str) {
    let longest = body.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    let _ = writeln!(out, "{fence}text");
    for line in body.lines() {
        let clean: String = line
            .chars()
            .map(|c| {
                if c.is_control() && c != '\t' {
                    '\u{fffd}'
                } else {
                    c
                }
            })
            .collect();
        let _ = writeln!(out, "{clean}");
    }
    let _ = writeln!(out, "{fence}");
}

fn transcript_text(lines: &[TranscriptLine]) -> String {
    let mut out = String::new();
    for line in lines {
        let who = match line.direction {
            Direction::Client => "C:",
            Direction::Server => "S:",
            Direction::Note => "* ",
        };
        let _ = writeln!(out, "{:>6}ms {who} {}", line.at_ms, line.line);
    }
    out
}

fn human(secs: u64) -> String {
    if secs == 0 {
        return "under a second".to_owned();
    }
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// The report as Markdown.
pub(crate) fn markdown(report: &Report) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "# Incident evidence report: {}\n", md(&report.tenant));
    let _ = writeln!(w, "| | |\n|---|---|");
    let _ = writeln!(w, "| Tenant | {} |", md(&report.tenant));
    if let Some(id) = &report.tenant_id {
        let _ = writeln!(w, "| Entra tenant id | {} |", md(id));
    }
    if !report.domains.is_empty() {
        let _ = writeln!(w, "| Domains | {} |", md(&report.domains.join(", ")));
    }
    let _ = writeln!(
        w,
        "| Window (UTC) | {} to {} |",
        report.window.since, report.window.until
    );
    let _ = writeln!(
        w,
        "| Generated | {} by {} |",
        report.generated_at,
        md(&report.generated_by)
    );
    let _ = writeln!(w, "| Source | outside-in probes from the MSP's own monitor; verdicts and evidence as stored |\n");

    let summary = &report.summary;
    let _ = writeln!(w, "## Summary\n");
    let status = match summary.status {
        "ongoing" => "**Ongoing**: not recovered by the end of the window",
        "resolved" => "**Resolved**: every affected check was ok again by the end of the window",
        _ => "**No incident**: no warning or critical verdict in this window",
    };
    let _ = writeln!(w, "- Status: {status}");
    if !summary.affected.is_empty() {
        let mut services: Vec<&str> = summary.affected.iter().map(|a| a.service).collect();
        services.dedup();
        let _ = writeln!(w, "- Affected services: {}", md(&services.join("; ")));
    }
    if let Some(first) = &summary.first_seen {
        let _ = writeln!(w, "- First seen: {first}");
    }
    if let Some(last) = &summary.last_seen {
        let _ = writeln!(w, "- Last seen failing: {last}");
    }
    if let Some(recovered) = &summary.recovered_at {
        let _ = writeln!(w, "- Recovered: {recovered}");
    }
    if let Some(duration) = summary.duration_s {
        let qualifier = if summary.status == "ongoing" {
            " so far (until the last failing verdict)"
        } else {
            ""
        };
        let _ = writeln!(w, "- Duration: {}{qualifier}", human(duration));
    }
    let _ = writeln!(
        w,
        "- Notifications: {} sent, {} failed or expired, {} pending{}",
        summary.notifications_sent,
        summary.notifications_failed,
        summary.notifications_pending,
        summary
            .first_notification_at
            .as_deref()
            .map(|at| format!("; first enqueued {at}"))
            .unwrap_or_default()
    );
    let _ = writeln!(w);

    let affected_table = |w: &mut String, rows: &[Affected]| {
        let _ = writeln!(w, "| Service | Check | Target | Worst | Reasons | First seen | Last seen | Recovered | Duration |");
        let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|");
        for row in rows {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                md(row.service),
                row.check,
                md(&row.target),
                row.worst,
                md(&row.reasons.join(", ")),
                row.first_seen,
                row.last_seen,
                row.recovered_at.as_deref().unwrap_or("not yet"),
                human(row.duration_s),
            );
        }
        let _ = writeln!(w);
    };
    if !summary.affected.is_empty() {
        let _ = writeln!(w, "### Affected services\n");
        affected_table(w, &summary.affected);
    }
    if !summary.blind.is_empty() {
        let _ = writeln!(
            w,
            "### Checks that could not tell (probe blind, not an outage)\n"
        );
        affected_table(w, &summary.blind);
    }

    if !report.state_at_start.is_empty() {
        let _ = writeln!(w, "## State when the window opened\n");
        let _ = writeln!(
            w,
            "| Check | Target | Status | Reason | Since | Summary |\n|---|---|---|---|---|---|"
        );
        for state in &report.state_at_start {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} |",
                state.check,
                md(&state.target),
                state.status,
                state.reason,
                state.since,
                md(&state.summary)
            );
        }
        let _ = writeln!(w);
    }

    let _ = writeln!(w, "## Timeline\n");
    if report.timeline.is_empty() {
        let _ = writeln!(w, "Nothing changed in this window.\n");
    } else {
        let _ = writeln!(w, "| # | Time (UTC) | Event | Check | Target | Status | Details |\n|---|---|---|---|---|---|---|");
        for (index, entry) in report.timeline.iter().enumerate() {
            let details = match (&entry.reason, &entry.delivery) {
                (Some(reason), _) => format!("`{reason}`: {}", md(&entry.summary)),
                (None, Some(delivery)) => format!("{}; {}", md(&entry.summary), md(delivery)),
                (None, None) => md(&entry.summary),
            };
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {details} |",
                index + 1,
                entry.at,
                entry.event,
                md(&entry.check),
                md(&entry.target),
                entry.status.unwrap_or(""),
            );
        }
        let _ = writeln!(w);
    }

    let with_evidence: Vec<(usize, &Entry)> = report
        .timeline
        .iter()
        .enumerate()
        .filter(|(_, entry)| entry.evidence.is_some())
        .collect();
    if !with_evidence.is_empty() {
        let _ = writeln!(w, "## Evidence\n");
        for (index, entry) in with_evidence {
            let _ = writeln!(
                w,
                "### {}. {} {}: {} {} is {} (`{}`)\n",
                index + 1,
                entry.at,
                entry.event,
                md(&entry.check),
                md(&entry.target),
                entry.status.unwrap_or(""),
                entry.reason.unwrap_or("")
            );
            let _ = writeln!(w, "{}\n", md(&entry.summary));
            if let (Some(id), Some(ms)) = (entry.observation_id, entry.elapsed_ms) {
                let _ = writeln!(w, "Observation {id}, probe took {ms} ms.\n");
            }
            if let Some(evidence) = &entry.evidence {
                evidence_md(w, evidence);
            }
        }
    }

    if !report.notifications.is_empty() {
        let _ = writeln!(w, "## Notifications sent\n");
        let _ = writeln!(w, "| Enqueued | Receiver | Kind | Severity | Check | Target | State | Delivered | Attempts |\n|---|---|---|---|---|---|---|---|---|");
        for n in &report.notifications {
            let attempts: Vec<String> = n
                .attempts
                .iter()
                .map(|a| {
                    format!(
                        "{} {}{}",
                        a.at,
                        a.outcome,
                        a.error
                            .as_deref()
                            .map(|e| format!(" ({e})"))
                            .unwrap_or_default()
                    )
                })
                .collect();
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                n.enqueued_at,
                md(&n.receiver),
                md(&n.kind),
                md(&n.severity),
                md(&n.check),
                md(&n.target),
                md(&n.state),
                n.delivered_at.as_deref().unwrap_or("no"),
                md(&attempts.join("; "))
            );
        }
        let _ = writeln!(w);
    }

    let _ = writeln!(w, "## Notes\n");
    for note in &report.notes {
        let _ = writeln!(w, "- {}", md(note));
    }
    out
}

fn evidence_md(w: &mut String, evidence: &Evidence) {
    match evidence {
        Evidence::None => {
            let _ = writeln!(w, "No evidence recorded.\n");
        }
        Evidence::SmtpRcpt(smtp) => {
            let mut facts = Vec::new();
            if let Some(mx) = &smtp.mx_host {
                facts.push(format!("MX host {}", md(mx)));
            }
            if let Some(peer) = &smtp.peer {
                facts.push(format!("connected to {}", md(peer)));
            }
            if let Some(tls) = &smtp.tls {
                facts.push(format!(
                    "TLS {}{}{}",
                    if tls.established {
                        "established"
                    } else {
                        "not established"
                    },
                    tls.protocol
                        .as_deref()
                        .map(|p| format!(" ({})", md(p)))
                        .unwrap_or_default(),
                    tls.error
                        .as_deref()
                        .map(|e| format!(": {}", md(e)))
                        .unwrap_or_default()
                ));
            }
            if !facts.is_empty() {
                let _ = writeln!(w, "SMTP: {}.\n", facts.join(", "));
            }
            if !smtp.rcpt.is_empty() {
                let _ = writeln!(
                    w,
                    "| RCPT TO | Code | Enhanced | Reply |\n|---|---|---|---|"
                );
                for rcpt in &smtp.rcpt {
                    let _ = writeln!(
                        w,
                        "| {}{} | {} | {} | {} |",
                        md(&rcpt.address),
                        if rcpt.control {
                            " (control, must not exist)"
                        } else {
                            ""
                        },
                        rcpt.code.map(|c| c.to_string()).unwrap_or_default(),
                        md(rcpt.enhanced.as_deref().unwrap_or("")),
                        md(&rcpt.text)
                    );
                }
                let _ = writeln!(w);
            }
            if !smtp.transcript.is_empty() {
                let _ = writeln!(w, "SMTP transcript:\n");
                fenced(w, &transcript_text(&smtp.transcript));
                let _ = writeln!(w);
            }
        }
        Evidence::Dns(dns) => {
            let _ = writeln!(w, "DNS answers for {}:\n", md(&dns.domain));
            if !dns.records.is_empty() {
                let _ = writeln!(w, "| Record | Values |\n|---|---|");
                for (label, values) in &dns.records {
                    let _ = writeln!(w, "| {} | {} |", md(label), md(&values.join(" ; ")));
                }
                let _ = writeln!(w);
            }
            for (label, error) in &dns.lookup_errors {
                let _ = writeln!(w, "- lookup of {} failed: {}", md(label), md(error));
            }
            for finding in &dns.findings {
                let _ = writeln!(
                    w,
                    "- {} ({}): {}",
                    md(&finding.record),
                    md(&finding.status),
                    md(&finding.message)
                );
            }
            for change in &dns.drift {
                let _ = writeln!(w, "- changed: {}", md(change));
            }
            let _ = writeln!(w);
        }
        Evidence::Http(http) => {
            if !http.exchanges.is_empty() {
                let _ = writeln!(w, "| Request | HTTP | ms | Error code | AADSTS | request-id | client-request-id | correlation-id | trace-id |\n|---|---|---|---|---|---|---|---|---|");
                for x in &http.exchanges {
                    let error = [x.error_code.as_deref(), x.error.as_deref()]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(": ");
                    let retry = x
                        .retry_after_s
                        .map(|s| format!(" (Retry-After {s}s)"))
                        .unwrap_or_default();
                    let aadsts: Vec<String> =
                        x.aadsts.iter().map(|c| format!("AADSTS{c}")).collect();
                    let _ = writeln!(
                        w,
                        "| {} {} | {} | {} | {}{} | {} | {} | {} | {} | {} |",
                        md(&x.method),
                        md(&x.url),
                        x.status
                            .map(|s| s.to_string())
                            .unwrap_or_else(|| "none".to_owned()),
                        x.elapsed_ms,
                        md(&error),
                        retry,
                        aadsts.join(" "),
                        md(x.request_id.as_deref().unwrap_or("")),
                        md(x.client_request_id.as_deref().unwrap_or("")),
                        md(x.correlation_id.as_deref().unwrap_or("")),
                        md(x.trace_id.as_deref().unwrap_or("")),
                    );
                }
                let _ = writeln!(w);
            }
            for (name, value) in &http.facts {
                let _ = writeln!(w, "- {}: {}", md(name), md(value));
            }
            for finding in &http.findings {
                let _ = writeln!(w, "- {}", md(finding));
            }
            let _ = writeln!(w);
        }
        Evidence::Mailflow(mailflow) => {
            let _ = writeln!(
                w,
                "Probe message {} (tag {}) from {} to {} through {}{}.\n",
                md(&mailflow.message_id),
                md(&mailflow.tag),
                md(&mailflow.mail_from),
                md(&mailflow.rcpt_to),
                md(&mailflow.relay),
                mailflow
                    .sent_at
                    .map(|at| format!(", accepted by the relay {at}"))
                    .unwrap_or_default()
            );
            if let Some(reply) = &mailflow.relay_reply {
                let _ = writeln!(w, "Relay reply: {}\n", md(reply));
            }
            if let Some(dsn) = &mailflow.dsn {
                let _ = writeln!(w, "| DSN field | Value |\n|---|---|");
                for (name, value) in [
                    ("Action", Some(dsn.action.as_str())),
                    ("Status", Some(dsn.status.as_str())),
                    ("Diagnostic-Code", dsn.diagnostic_code.as_deref()),
                    ("Reporting-MTA", dsn.reporting_mta.as_deref()),
                    ("Remote-MTA", dsn.remote_mta.as_deref()),
                    ("Final-Recipient", dsn.final_recipient.as_deref()),
                    ("Subject", dsn.subject.as_deref()),
                    ("Date", dsn.date.as_deref()),
                ] {
                    if let Some(value) = value {
                        let _ = writeln!(w, "| {name} | {} |", md(value));
                    }
                }
                let _ = writeln!(w);
            } else {
                let _ = writeln!(
                    w,
                    "No bounce within {} ms ({} mailbox searches).\n",
                    mailflow.waited_ms, mailflow.polls
                );
            }
            if !mailflow.relay_transcript.is_empty() {
                let _ = writeln!(w, "Relay transcript:\n");
                fenced(w, &transcript_text(&mailflow.relay_transcript));
                let _ = writeln!(w);
            }
            for finding in &mailflow.findings {
                let _ = writeln!(w, "- {}", md(finding));
            }
        }
    }
}

/// Reads the window from the database and prints the report. Exit 0 when written, 1 when the
/// database cannot be read, 2 for a window or tenant that makes no sense.
pub(crate) async fn run(
    config: &Config,
    tenant: &str,
    since: Timestamp,
    until: Option<Timestamp>,
    format: ReportFormat,
) -> ExitCode {
    let generated_at = Timestamp::now();
    let until = until.unwrap_or(generated_at);
    if since >= until {
        eprintln!("--since ({since}) must be before --until ({until})");
        return ExitCode::from(2);
    }
    let store = match tw_store::Store::open(&config.store.path).await {
        Ok(store) => store,
        Err(err) => {
            eprintln!(
                "cannot open {}: {}",
                config.store.path.display(),
                crate::pipeline::error_chain(&err)
            );
            return ExitCode::from(1);
        }
    };
    let read = async {
        let before = store.states_before(tenant, since).await?;
        let observations = store
            .observations_between(tenant, since, until, MAX_WINDOW)
            .await?;
        let notifications = store
            .notifications_between(since, until, MAX_WINDOW)
            .await?;
        let learned = store.learned_facts().await?;
        Ok::<_, tw_store::StoreError>((before, observations, notifications, learned))
    }
    .await;
    store.close().await;
    let (before, observations, notifications, learned) = match read {
        Ok(read) => read,
        Err(err) => {
            eprintln!(
                "cannot read the database: {}",
                crate::pipeline::error_chain(&err)
            );
            return ExitCode::from(1);
        }
    };
    let configured = config.tenants.iter().find(|t| t.name.as_str() == tenant);
    if configured.is_none() && before.is_empty() && observations.is_empty() {
        let known: Vec<&str> = config.tenants.iter().map(|t| t.name.as_str()).collect();
        eprintln!(
            "no tenant named {tenant:?} in the config or the database (configured: {})",
            known.join(", ")
        );
        return ExitCode::from(2);
    }
    let tenant_id = configured.and_then(|t| t.tenant_id.clone()).or_else(|| {
        learned
            .iter()
            .filter(|row| row.tenant == tenant)
            .find_map(|row| row.facts.get("tenant_id").cloned())
    });
    let truncated = observations.len() >= MAX_WINDOW as usize;
    let report = build(Input {
        tenant: tenant.to_owned(),
        tenant_id,
        domains: configured
            .map(|t| t.domains().map(ToString::to_string).collect())
            .unwrap_or_default(),
        configured: configured.is_some(),
        since,
        until,
        generated_at,
        before,
        observations,
        truncated,
        notifications,
    });
    let text = match format {
        ReportFormat::Md => markdown(&report),
        ReportFormat::Json => match serde_json::to_string_pretty(&report) {
            Ok(json) => json + "\n",
            Err(err) => {
                eprintln!("cannot encode the report as JSON: {err}");
                return ExitCode::from(1);
            }
        },
    };
    print!("{text}");
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use tw_core::{Reason, SmtpEvidence};
    use tw_store::DeliveryAttempt;

    use super::*;

    const T0: i64 = 1_795_000_000_000;
    const MINUTE: i64 = 60_000;

    fn obs(
        id: i64,
        check: CheckKind,
        target: &str,
        reason: Reason,
        minute: i64,
        change: bool,
    ) -> StoredObservation {
        StoredObservation {
            id,
            tenant: "contoso".into(),
            check,
            target: target.into(),
            scheduled_for: Timestamp(T0 + minute * MINUTE),
            started_at: Timestamp(T0 + minute * MINUTE),
            elapsed: Duration::from_millis(80),
            status: reason.status(),
            reason,
            summary: format!("{} at minute {minute}", reason.as_str()),
            state_change: change,
            evidence: Evidence::SmtpRcpt(SmtpEvidence {
                transcript: vec![TranscriptLine {
                    at_ms: 3,
                    direction: Direction::Server,
                    line: "550 5.1.10 RESOLVER.ADR.RecipientNotFound; ```\n# <script>x</script>"
                        .into(),
                }],
                ..SmtpEvidence::default()
            }),
        }
    }

    fn input(before: Vec<StoredObservation>, observations: Vec<StoredObservation>) -> Input {
        Input {
            tenant: "contoso".into(),
            tenant_id: Some("2f9a3c10-0000-4000-8000-00000000c0de".into()),
            domains: vec!["contoso.example".into()],
            configured: true,
            since: Timestamp(T0),
            until: Timestamp(T0 + 60 * MINUTE),
            generated_at: Timestamp(T0 + 61 * MINUTE),
            before,
            observations,
            truncated: false,
            notifications: Vec::new(),
        }
    }

    const ADMIN: &str = "admin@contoso.example";

    fn events(report: &Report) -> Vec<(&str, &str, i64)> {
        report
            .timeline
            .iter()
            .map(|e| {
                let minute = (Timestamp::parse_utc(&e.at).unwrap().as_millis() - T0) / MINUTE;
                (e.event, e.check.as_str(), minute)
            })
            .collect()
    }

    #[test]
    fn detection_confirmation_change_and_recovery_make_the_timeline() {
        let report = build(input(
            vec![obs(
                1,
                CheckKind::SmtpRcpt,
                ADMIN,
                Reason::RecipientAccepted,
                -30,
                true,
            )],
            vec![
                obs(
                    2,
                    CheckKind::SmtpRcpt,
                    ADMIN,
                    Reason::RecipientNotFound,
                    5,
                    true,
                ),
                obs(
                    3,
                    CheckKind::SmtpRcpt,
                    ADMIN,
                    Reason::RecipientNotFound,
                    10,
                    false,
                ),
                obs(
                    4,
                    CheckKind::SmtpRcpt,
                    ADMIN,
                    Reason::RecipientNotFound,
                    15,
                    false,
                ),
                obs(5, CheckKind::SmtpRcpt, ADMIN, Reason::Timeout, 20, true),
                obs(
                    6,
                    CheckKind::SmtpRcpt,
                    ADMIN,
                    Reason::RecipientNotFound,
                    25,
                    true,
                ),
                obs(
                    7,
                    CheckKind::SmtpRcpt,
                    ADMIN,
                    Reason::RecipientAccepted,
                    30,
                    true,
                ),
                obs(
                    8,
                    CheckKind::Identity,
                    ADMIN,
                    Reason::IdentityDeleted,
                    6,
                    true,
                ),
            ],
        ));
        assert_eq!(
            events(&report),
            [
                ("detected", "smtp_rcpt", 5),
                ("detected", "identity", 6),
                ("confirmed", "smtp_rcpt", 10),
                ("changed", "smtp_rcpt", 20),
                ("changed", "smtp_rcpt", 25),
                ("recovered", "smtp_rcpt", 30),
            ]
        );
        let summary = &report.summary;
        assert_eq!(summary.status, "ongoing", "the identity never recovered");
        assert_eq!(
            summary.first_seen.as_deref(),
            Some(Timestamp(T0 + 5 * MINUTE).to_string().as_str())
        );
        assert_eq!(
            summary.last_seen.as_deref(),
            Some(Timestamp(T0 + 25 * MINUTE).to_string().as_str())
        );
        assert_eq!(summary.recovered_at, None);
        assert_eq!(summary.duration_s, Some(20 * 60));
        let affected: Vec<(&str, &str, bool, u64, usize)> = summary
            .affected
            .iter()
            .map(|a| {
                (
                    a.check,
                    a.worst,
                    a.ongoing,
                    a.duration_s,
                    a.failing_observations,
                )
            })
            .collect();
        assert_eq!(
            affected,
            [
                ("smtp_rcpt", "critical", false, 25 * 60, 5),
                ("identity", "critical", true, 0, 1)
            ]
        );
        assert_eq!(
            summary.affected[0].reasons,
            ["recipient_not_found", "timeout"]
        );
        assert_eq!(report.state_at_start.len(), 1);
    }

    #[test]
    fn a_problem_open_at_the_start_counts_from_when_it_began_and_resolves() {
        let report = build(input(
            vec![obs(
                1,
                CheckKind::SmtpRcpt,
                ADMIN,
                Reason::RecipientNotFound,
                -10,
                true,
            )],
            vec![
                obs(
                    2,
                    CheckKind::SmtpRcpt,
                    ADMIN,
                    Reason::RecipientNotFound,
                    1,
                    false,
                ),
                obs(
                    3,
                    CheckKind::SmtpRcpt,
                    ADMIN,
                    Reason::RecipientAccepted,
                    2,
                    true,
                ),
            ],
        ));
        assert_eq!(events(&report), [("recovered", "smtp_rcpt", 2)]);
        assert_eq!(report.summary.status, "resolved");
        assert_eq!(report.summary.duration_s, Some(12 * 60));
        assert_eq!(
            report.summary.recovered_at.as_deref(),
            Some(Timestamp(T0 + 2 * MINUTE).to_string().as_str())
        );
    }

    #[test]
    fn unknown_alone_is_blind_not_an_outage_and_a_quiet_window_has_no_incident() {
        let report = build(input(
            Vec::new(),
            vec![
                obs(
                    1,
                    CheckKind::Dns,
                    "contoso.example",
                    Reason::DnsUnavailable,
                    1,
                    true,
                ),
                obs(
                    2,
                    CheckKind::Dns,
                    "contoso.example",
                    Reason::DnsRecordsOk,
                    2,
                    true,
                ),
            ],
        ));
        assert_eq!(report.summary.status, "none");
        assert!(report.summary.affected.is_empty());
        assert_eq!(report.summary.blind.len(), 1);
        assert_eq!(
            events(&report),
            [("detected", "dns", 1), ("recovered", "dns", 2)]
        );

        let quiet = build(input(Vec::new(), Vec::new()));
        assert_eq!(quiet.summary.status, "none");
        assert!(markdown(&quiet).contains("**No incident**"));
    }

    #[test]
    fn a_failing_key_first_seen_mid_problem_is_already_failing() {
        let report = build(input(
            Vec::new(),
            vec![
                obs(
                    1,
                    CheckKind::SmtpRcpt,
                    ADMIN,
                    Reason::RecipientNotFound,
                    1,
                    false,
                ),
                obs(
                    2,
                    CheckKind::SmtpRcpt,
                    ADMIN,
                    Reason::RecipientNotFound,
                    2,
                    false,
                ),
            ],
        ));
        assert_eq!(
            events(&report),
            [
                ("already_failing", "smtp_rcpt", 1),
                ("confirmed", "smtp_rcpt", 2)
            ]
        );
    }

    #[test]
    fn notifications_of_this_tenant_join_the_timeline_with_their_delivery() {
        let mut data = input(
            Vec::new(),
            vec![obs(
                1,
                CheckKind::SmtpRcpt,
                ADMIN,
                Reason::RecipientNotFound,
                1,
                true,
            )],
        );
        let record = |tenant: &str, receiver: &str, state: &str, attempts: Vec<DeliveryAttempt>| {
            NotificationRecord {
                id: 1,
                dedup_key: format!("k/{receiver}"),
                receiver: receiver.into(),
                message_json: serde_json::json!({
                    "tenant": tenant, "kind": "firing", "severity": "critical",
                    "check": "smtp_rcpt", "target": ADMIN, "title": "contoso: admin gone"
                })
                .to_string(),
                state: state.into(),
                created_at: Timestamp(T0 + 2 * MINUTE),
                finished_at: None,
                last_error: (state == "failed").then(|| "400 bad number".to_owned()),
                attempts,
            }
        };
        let attempt = |outcome: &str, second: i64| DeliveryAttempt {
            attempted_at: Timestamp(T0 + 2 * MINUTE + second * 1000),
            outcome: outcome.into(),
            error: (outcome != "sent").then(|| "503".to_owned()),
            duration: Duration::from_millis(20),
        };
        data.notifications = vec![
            record(
                "contoso",
                "hook",
                "sent",
                vec![attempt("transient", 1), attempt("sent", 3)],
            ),
            record("contoso", "sms", "failed", vec![attempt("permanent", 1)]),
            record("fabrikam", "hook", "sent", vec![attempt("sent", 1)]),
            record("contoso", "pager", "fallback", vec![attempt("fallback", 2)]),
        ];
        let report = build(data);
        assert_eq!(report.notifications.len(), 3, "fabrikam's is not ours");
        assert_eq!(
            report.timeline[3].delivery.as_deref(),
            Some("handed on to the next receiver of its route")
        );
        assert_eq!(
            events(&report),
            [
                ("detected", "smtp_rcpt", 1),
                ("notified", "smtp_rcpt", 2),
                ("notified", "smtp_rcpt", 2),
                ("notified", "smtp_rcpt", 2)
            ]
        );
        assert_eq!(
            report.timeline[1].delivery.as_deref(),
            Some(format!("delivered {}", Timestamp(T0 + 2 * MINUTE + 3000)).as_str())
        );
        assert_eq!(
            report.timeline[2].delivery.as_deref(),
            Some("failed: 400 bad number")
        );
        assert_eq!(
            (
                report.summary.notifications_sent,
                report.summary.notifications_failed
            ),
            (1, 1)
        );
        let text = markdown(&report);
        assert!(text.contains("## Notifications sent"), "{text}");
    }

    #[test]
    fn markdown_keeps_hostile_text_inert_and_evidence_fenced() {
        let report = build(input(
            Vec::new(),
            vec![obs(
                1,
                CheckKind::SmtpRcpt,
                ADMIN,
                Reason::RecipientNotFound,
                1,
                true,
            )],
        ));
        let text = markdown(&report);
        // The transcript holds ``` and a heading: the fence is longer, so both stay inside.
        assert!(text.contains("````text\n"), "{text}");
        assert!(text.contains("\n# <script>x</script>\n````\n"), "{text}");
        assert_eq!(
            md("a|b <i>c</i>\n# d [x](y)"),
            "a\\|b \\<i\\>c\\</i\\> \\# d \\[x\\](y)"
        );
        // Every line outside fences that mentions the transcript text is escaped.
        assert!(
            !text
                .replace("\n# <script>x</script>\n", "")
                .contains("<script>"),
            "{text}"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["report_version"], 1);
        assert_eq!(json["timeline"][0]["evidence"]["kind"], "smtp_rcpt");
        assert_eq!(
            json["summary"]["affected"][0]["service"],
            service(CheckKind::SmtpRcpt)
        );
    }

    #[test]
    fn times_are_absolute_dates_or_durations_before_now() {
        assert_eq!(
            parse_time("2026-11-23T08:00:00Z"),
            Ok(Timestamp(1_795_420_800_000))
        );
        assert_eq!(parse_time("2026-11-23"), Ok(Timestamp(1_795_392_000_000)));
        let ago = parse_time("2h").unwrap();
        let expected = Timestamp::now().minus(Duration::from_secs(7_200));
        assert!(ago.millis_since(expected) < 5_000 && expected.millis_since(ago) < 5_000);
        assert!(parse_time("yesterday").is_err());
    }
}
