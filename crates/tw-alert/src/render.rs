//! Alert events as text for people: [`short`] for SMS and Signal, [`title`] and [`body`] for
//! the rich channels (e-mail, Matrix, ntfy, Telegram, webhooks).
//!
//! Rendering lives next to the evaluator because it reads the event's dedup key to tell an
//! escalation from a first Firing, and that key's format is owned here. Like the evaluator it
//! is pure: the same event always renders the same text.

use std::time::Duration;

use tw_core::Timestamp;

use crate::{transition, AlertEvent, EventKind, Severity};

/// The longest [`short`] message. An SMS segment holds 160 GSM-7 characters; staying below
/// keeps one alert in one segment (multi-part SMS arrive split or out of order on some phones).
pub const SHORT_MAX: usize = 159;

/// A target is never cut below this many characters while the tenant still fits whole: half
/// of a long address still identifies it, a few characters do not.
const MIN_TARGET: usize = 16;

/// A summary shorter than this after truncation says nothing; it is left out instead.
const MIN_SUMMARY: usize = 8;

/// One line under [`SHORT_MAX`] characters: verdict, tenant, target, reason and since when,
/// then as much of the summary as fits, e.g.
/// `CRITICAL contoso admin@contoso.com recipient_not_found since 2026-11-23 03:12Z: 550 5.1.10 …`.
///
/// The text is plain GSM-7 (the SMS default alphabet): characters outside it are replaced, and
/// cuts are marked with `...`, not `…`, because a single non-GSM character makes the whole SMS
/// UCS-2, which holds only 70 characters. When it does not fit, the summary is cut first, then
/// the target in the middle (its start and its domain both stay), and the tenant only when a
/// tenant name longer than config allows leaves no other way.
pub fn short(event: &AlertEvent) -> String {
    let label = label(event);
    // Our own ASCII (a reason label, a status, a time): nothing to make GSM-safe.
    let tail = match event.kind {
        EventKind::Firing | EventKind::Repeat | EventKind::Blind => {
            format!(" {} since {}", event.reason, minutes(event.since))
        }
        EventKind::Resolved => format!(
            " {}, was {} since {}",
            event.status,
            event.severity.as_str(),
            minutes(event.since)
        ),
        EventKind::BlindResolved => {
            format!(" {}, blind since {}", event.status, minutes(event.since))
        }
    };
    let mut tenant = gsm_safe(&event.tenant);
    let mut target = gsm_safe(&event.target);
    let summary = gsm_safe(&event.summary);

    // Room for tenant and target once the label, the two spaces before them and the tail are in.
    let room = SHORT_MAX.saturating_sub(label.len() + 2 + tail.len());
    if tenant.len() + target.len() > room {
        let target_room = room
            .saturating_sub(tenant.len())
            .max(MIN_TARGET.min(target.len()));
        target = cut_middle(&target, target_room);
        if tenant.len() + target.len() > room {
            tenant = cut_middle(&tenant, room.saturating_sub(target.len()));
        }
    }
    let mut text = format!("{label} {tenant} {target}{tail}");
    let left = SHORT_MAX.saturating_sub(text.len());
    if !summary.is_empty() && left >= 2 + MIN_SUMMARY {
        text.push_str(": ");
        text.push_str(&cut_end(&summary, left - 2));
    }
    // Only reachable with a label or tail longer than any this module writes; the limit holds
    // regardless.
    cut_end(&text, SHORT_MAX)
}

/// One line for a subject or notification title, e.g.
/// `CRITICAL: contoso admin@contoso.com recipient_not_found`.
pub fn title(event: &AlertEvent) -> String {
    let what = match event.kind {
        EventKind::Firing | EventKind::Repeat | EventKind::Blind => event.reason.to_string(),
        EventKind::Resolved => format!("{} (was {})", event.status, event.severity.as_str()),
        EventKind::BlindResolved => format!("{} (probe was blind)", event.status),
    };
    one_line(&format!(
        "{}: {} {} {what}",
        label(event),
        event.tenant,
        event.target
    ))
}

/// The rich message: title, the verdict with its reason explained, the specifics, what changed
/// and since when, and the identifiers a support case or an incident report needs.
pub fn body(event: &AlertEvent) -> String {
    let lasted = human(event.at.millis_since(event.since));
    let severity = event.severity.as_str();
    let changed = match event.kind {
        EventKind::Firing if is_escalation(event) => format!(
            "Escalated from warning to critical; the problem began at {} ({lasted} before this check).",
            event.since
        ),
        EventKind::Firing => format!(
            "Became {severity}: failing since {} ({lasted} before this check), confirmed by consecutive checks.",
            event.since
        ),
        EventKind::Repeat => format!(
            "Still {severity} after {lasted}{}; it has not recovered since {}.",
            repeat_number(event)
                .map(|n| format!(" (reminder {n})"))
                .unwrap_or_default(),
            event.since
        ),
        EventKind::Resolved => format!(
            "Recovered: it was {severity} from {} until this check ({lasted}).",
            event.since
        ),
        EventKind::Blind => format!(
            "The probe has not been able to tell for {lasted} (since {}); alerts already firing stay firing.",
            event.since
        ),
        EventKind::BlindResolved => format!(
            "The probe can tell again after {lasted} without a verdict; its verdict now: {}.",
            event.status
        ),
    };
    let mut lines = vec![
        title(event),
        String::new(),
        format!(
            "Verdict: {} ({}): {}",
            event.status,
            event.reason,
            event.reason.describe()
        ),
        format!("Detail: {}", event.summary),
        format!("What changed: {changed}"),
        format!("Since: {}", event.since),
        format!("Checked at: {}", event.at),
        format!("Tenant: {}", event.tenant),
        format!("Check: {}", event.check),
        format!("Target: {}", event.target),
        format!("Episode: {}", event.episode),
        format!("Reference: {}", event.dedup_key),
    ];
    lines.push(String::new());
    lines.join("\n")
}

fn label(event: &AlertEvent) -> &'static str {
    match (event.kind, event.severity) {
        (EventKind::Firing, Severity::Critical) if is_escalation(event) => "NOW CRITICAL",
        (EventKind::Firing, Severity::Critical) => "CRITICAL",
        (EventKind::Firing, Severity::Warning) => "WARNING",
        (EventKind::Repeat, Severity::Critical) => "STILL CRITICAL",
        (EventKind::Repeat, Severity::Warning) => "STILL WARNING",
        (EventKind::Resolved, _) => "RESOLVED",
        (EventKind::Blind, _) | (EventKind::Firing | EventKind::Repeat, Severity::Blind) => {
            "PROBE BLIND"
        }
        (EventKind::BlindResolved, _) => "PROBE BACK",
    }
}

fn is_escalation(event: &AlertEvent) -> bool {
    event.kind == EventKind::Firing
        && event
            .dedup_key
            .rsplit('/')
            .next()
            .is_some_and(|last| last == transition::ESCALATED)
}

fn repeat_number(event: &AlertEvent) -> Option<u32> {
    let mut parts = event.dedup_key.rsplit('/');
    let n = parts.next()?.parse().ok()?;
    (parts.next()? == transition::REPEAT).then_some(n)
}

/// `2026-11-23 03:12Z`: minutes are enough to match an alert with a log, and short.
fn minutes(at: Timestamp) -> String {
    let full = at.to_string();
    match (full.get(..10), full.get(11..16)) {
        (Some(date), Some(time)) if full.as_bytes().get(10) == Some(&b'T') => {
            format!("{date} {time}Z")
        }
        // Outside years 0000-9999 Display writes raw milliseconds; show them as they are.
        _ => full,
    }
}

/// `35m`, `4h 05m`, `3d 2h`: how long, to the minute.
fn human(millis: u64) -> String {
    let duration = Duration::from_millis(millis);
    let mins = duration.as_secs() / 60;
    let (days, hours, mins) = (mins / 1440, mins % 1440 / 60, mins % 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {mins:02}m")
    } else if mins > 0 {
        format!("{mins}m")
    } else {
        format!("{}s", duration.as_secs())
    }
}

/// Map to characters of the GSM 03.38 basic set (printable ASCII minus the nine that are
/// missing or cost two septets) and collapse whitespace, so [`short`] counts what the SMS
/// network counts.
fn gsm_safe(text: &str) -> String {
    let mapped: String = text
        .chars()
        .map(|c| match c {
            '[' | '{' => '(',
            ']' | '}' => ')',
            '\\' => '/',
            '^' | '`' | '|' | '~' => '-',
            ' '..='~' => c,
            c if c.is_whitespace() => ' ',
            _ => '?',
        })
        .collect();
    mapped.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// At most `max` characters, ending in `...` when cut.
fn cut_end(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    if max <= 3 {
        return text.chars().take(max).collect();
    }
    let mut cut: String = text.chars().take(max - 3).collect();
    cut.push_str("...");
    cut
}

/// At most `max` characters, the middle replaced by `...`: an address keeps its local part's
/// start and its domain.
fn cut_middle(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_owned();
    }
    if max <= 3 {
        return text.chars().take(max).collect();
    }
    let keep = max - 3;
    let tail = keep / 2;
    let head = keep - tail;
    let mut cut: String = text.chars().take(head).collect();
    cut.push_str("...");
    cut.extend(text.chars().skip(count - tail));
    cut
}

#[cfg(test)]
mod tests;
