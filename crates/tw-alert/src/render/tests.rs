//! Tests for the message texts: the SMS limit above all, then what each text must name.

use tw_core::{CheckKind, Reason, Status, Timestamp};

use super::{body, short, title, SHORT_MAX};
use crate::{AlertEvent, EventKind, Severity};

/// 2026-11-23T03:12:00Z.
const SINCE: Timestamp = Timestamp(1_795_403_520_000);

fn event(kind: EventKind, severity: Severity) -> AlertEvent {
    let (status, reason, summary) = match kind {
        EventKind::Firing | EventKind::Repeat => (
            Status::Critical,
            Reason::RecipientNotFound,
            "RCPT 550 5.1.10 RESOLVER.ADR.RecipientNotFound",
        ),
        EventKind::Resolved | EventKind::BlindResolved => (
            Status::Ok,
            Reason::RecipientAccepted,
            "RCPT 250 2.1.5 Recipient OK",
        ),
        EventKind::Blind => (
            Status::Unknown,
            Reason::Timeout,
            "no reply to RCPT within 30s",
        ),
    };
    let transition = match kind {
        EventKind::Firing => "firing",
        EventKind::Repeat => "repeat/2",
        EventKind::Resolved => "resolved",
        EventKind::Blind => "blind",
        EventKind::BlindResolved => "blind_resolved",
    };
    AlertEvent {
        kind,
        severity,
        tenant: "contoso".to_owned(),
        check: CheckKind::SmtpRcpt,
        target: "admin@contoso.com".to_owned(),
        status,
        reason,
        summary: summary.to_owned(),
        since: SINCE,
        at: SINCE.plus(std::time::Duration::from_secs(4 * 3600 + 5 * 60)),
        episode: 7,
        dedup_key: format!("contoso/smtp_rcpt/admin@contoso.com/7/{transition}"),
    }
}

fn all_events() -> Vec<AlertEvent> {
    vec![
        event(EventKind::Firing, Severity::Critical),
        event(EventKind::Firing, Severity::Warning),
        event(EventKind::Repeat, Severity::Critical),
        event(EventKind::Repeat, Severity::Warning),
        event(EventKind::Resolved, Severity::Critical),
        event(EventKind::Blind, Severity::Blind),
        event(EventKind::BlindResolved, Severity::Blind),
    ]
}

/// The GSM 03.38 basic character set's printable ASCII part.
fn is_gsm_basic(c: char) -> bool {
    matches!(c, ' '..='~') && !"[]{}\\^`|~".contains(c)
}

fn check_short(event: &AlertEvent, expect: &str) {
    assert_eq!(short(event), expect);
}

#[test]
fn short_names_verdict_tenant_target_and_since() {
    check_short(
        &event(EventKind::Firing, Severity::Critical),
        "CRITICAL contoso admin@contoso.com recipient_not_found since 2026-11-23 03:12Z: RCPT 550 5.1.10 RESOLVER.ADR.RecipientNotFound",
    );
    check_short(
        &event(EventKind::Repeat, Severity::Warning),
        "STILL WARNING contoso admin@contoso.com recipient_not_found since 2026-11-23 03:12Z: RCPT 550 5.1.10 RESOLVER.ADR.RecipientNotFound",
    );
    check_short(
        &event(EventKind::Resolved, Severity::Critical),
        "RESOLVED contoso admin@contoso.com ok, was critical since 2026-11-23 03:12Z: RCPT 250 2.1.5 Recipient OK",
    );
    check_short(
        &event(EventKind::Blind, Severity::Blind),
        "PROBE BLIND contoso admin@contoso.com timeout since 2026-11-23 03:12Z: no reply to RCPT within 30s",
    );
    check_short(
        &event(EventKind::BlindResolved, Severity::Blind),
        "PROBE BACK contoso admin@contoso.com ok, blind since 2026-11-23 03:12Z: RCPT 250 2.1.5 Recipient OK",
    );
    let mut escalated = event(EventKind::Firing, Severity::Critical);
    escalated.dedup_key = "contoso/smtp_rcpt/admin@contoso.com/7/escalated".to_owned();
    escalated.summary = "RCPT 550 5.1.10".to_owned();
    check_short(
        &escalated,
        "NOW CRITICAL contoso admin@contoso.com recipient_not_found since 2026-11-23 03:12Z: RCPT 550 5.1.10",
    );
}

#[test]
fn short_always_fits_one_sms_and_keeps_tenant_and_target_whole_when_it_can() {
    let tenant = "t".repeat(60) + "-x.y";
    assert_eq!(tenant.len(), 64);
    let long_summary = "550 5.1.10 RESOLVER.ADR.RecipientNotFound; ".repeat(10);
    for mut event in all_events() {
        event.tenant = tenant.clone();
        event.summary = long_summary.clone();
        let text = short(&event);
        assert!(text.len() <= SHORT_MAX, "{} chars: {text}", text.len());
        assert!(text.contains(&tenant), "{text}");
        assert!(text.contains("admin@contoso.com"), "{text}");
        assert!(text.contains("since 2026-11-23 03:12Z"), "{text}");
        assert!(text.ends_with("..."), "summary cut: {text}");

        // A long address is cut in the middle; the tenant stays whole.
        event.target = format!(
            "{}@{}",
            "first.last.department".repeat(3),
            "subsidiary.contoso.co.uk"
        );
        let text = short(&event);
        assert!(text.len() <= SHORT_MAX, "{} chars: {text}", text.len());
        assert!(text.contains(&tenant), "{text}");
        assert!(text.contains("first.las"), "{text}");
        assert!(
            text.contains("...") && text.contains("contoso.co.uk"),
            "{text}"
        );

        // A tenant longer than config allows is cut too, rather than breaking the limit.
        event.tenant = "t".repeat(300);
        let text = short(&event);
        assert!(text.len() <= SHORT_MAX, "{} chars: {text}", text.len());
    }
}

#[test]
fn short_is_plain_gsm_text() {
    let mut event = event(EventKind::Firing, Severity::Critical);
    event.summary = "550 5.1.1 <admin@contoso.com> “user unknown” {x} [y] | ~ ^ \\ `\r\n  next line — ünïcödé 🚨".to_owned();
    let text = short(&event);
    assert!(text.chars().all(is_gsm_basic), "{text}");
    assert!(text.len() <= SHORT_MAX);
    assert!(!text.contains("  "), "whitespace collapsed: {text}");
    assert!(
        text.contains("<admin@contoso.com> ?user unknown? (x) (y) - - - / - next line"),
        "{text}"
    );
}

#[test]
fn title_is_one_line_naming_the_alert() {
    let titles: Vec<String> = all_events().iter().map(title).collect();
    assert_eq!(
        titles,
        [
            "CRITICAL: contoso admin@contoso.com recipient_not_found",
            "WARNING: contoso admin@contoso.com recipient_not_found",
            "STILL CRITICAL: contoso admin@contoso.com recipient_not_found",
            "STILL WARNING: contoso admin@contoso.com recipient_not_found",
            "RESOLVED: contoso admin@contoso.com ok (was critical)",
            "PROBE BLIND: contoso admin@contoso.com timeout",
            "PROBE BACK: contoso admin@contoso.com ok (probe was blind)",
        ]
    );
    let mut event = event(EventKind::Firing, Severity::Critical);
    event.target = "a\nb".to_owned();
    assert!(!title(&event).contains('\n'));
}

#[test]
fn body_explains_reason_summary_since_and_what_changed() {
    let text = body(&event(EventKind::Firing, Severity::Critical));
    assert_eq!(
        text,
        "CRITICAL: contoso admin@contoso.com recipient_not_found

Verdict: critical (recipient_not_found): the MX rejected the recipient as unknown while rejecting the control address too
Detail: RCPT 550 5.1.10 RESOLVER.ADR.RecipientNotFound
What changed: Became critical: failing since 2026-11-23T03:12:00.000Z (4h 05m before this check), confirmed by consecutive checks.
Since: 2026-11-23T03:12:00.000Z
Checked at: 2026-11-23T07:17:00.000Z
Tenant: contoso
Check: smtp_rcpt
Target: admin@contoso.com
Episode: 7
Reference: contoso/smtp_rcpt/admin@contoso.com/7/firing
"
    );
    let changed = |event: &AlertEvent| {
        body(event)
            .lines()
            .find_map(|line| line.strip_prefix("What changed: ").map(str::to_owned))
            .unwrap()
    };
    assert_eq!(
        changed(&event(EventKind::Repeat, Severity::Critical)),
        "Still critical after 4h 05m (reminder 2); it has not recovered since 2026-11-23T03:12:00.000Z."
    );
    assert_eq!(
        changed(&event(EventKind::Resolved, Severity::Warning)),
        "Recovered: it was warning from 2026-11-23T03:12:00.000Z until this check (4h 05m)."
    );
    assert_eq!(
        changed(&event(EventKind::Blind, Severity::Blind)),
        "The probe has not been able to tell for 4h 05m (since 2026-11-23T03:12:00.000Z); alerts already firing stay firing."
    );
    assert_eq!(
        changed(&event(EventKind::BlindResolved, Severity::Blind)),
        "The probe can tell again after 4h 05m without a verdict; its verdict now: ok."
    );
    let mut escalated = event(EventKind::Firing, Severity::Critical);
    escalated.dedup_key = "contoso/smtp_rcpt/admin@contoso.com/7/escalated".to_owned();
    assert_eq!(
        changed(&escalated),
        "Escalated from warning to critical; the problem began at 2026-11-23T03:12:00.000Z (4h 05m before this check)."
    );
}

#[test]
fn events_from_the_evaluator_render_within_limits() {
    use crate::{evaluate, AlertState, Rules};
    use tw_core::{Evidence, Observation, TenantName};

    let mut state = AlertState::default();
    let mut rendered = 0;
    for (index, status) in "CCUUUUUUUOC".chars().enumerate() {
        let at = SINCE.plus(std::time::Duration::from_secs(300 * index as u64));
        let (status, reason) = match status {
            'C' => (Status::Critical, Reason::RecipientNotFound),
            'U' => (Status::Unknown, Reason::Timeout),
            _ => (Status::Ok, Reason::RecipientAccepted),
        };
        let observation = Observation {
            tenant: TenantName::parse(&"a".repeat(64)).unwrap(),
            check: CheckKind::SmtpRcpt,
            target: format!("{}@{}.example.com", "x".repeat(64), "y".repeat(60)),
            scheduled_for: at,
            started_at: at,
            elapsed: std::time::Duration::ZERO,
            status,
            reason,
            summary: "z".repeat(500),
            evidence: Evidence::None,
        };
        let (next, events) = evaluate(&state, &observation, &Rules::defaults(), at);
        for event in &events {
            let text = short(event);
            assert!(text.len() <= SHORT_MAX, "{text}");
            assert!(text.contains(&"a".repeat(64)), "{text}");
            assert!(!body(event).is_empty());
            rendered += 1;
        }
        state = next;
    }
    assert_eq!(rendered, 4, "F B BR+R");
}

#[test]
fn timestamps_outside_rfc3339_years_still_render() {
    let mut event = event(EventKind::Firing, Severity::Critical);
    event.since = Timestamp(i64::MAX);
    let text = short(&event);
    assert!(text.len() <= SHORT_MAX);
    assert!(text.contains("ms-after-epoch"), "{text}");
}

#[test]
fn short_cuts_the_summary_first_then_the_target_in_the_middle() {
    let mut event = event(EventKind::Firing, Severity::Critical);
    event.summary = "RCPT 550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup".to_owned();
    check_short(&event, "CRITICAL contoso admin@contoso.com recipient_not_found since 2026-11-23 03:12Z: RCPT 550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP ...");
    event.tenant = "northwind-traders-international-holdings-emea-subsidiary-gmbh-01".to_owned();
    event.target = "first.last.department.office.building@subsidiary.northwind.co.uk".to_owned();
    // No room left for a useful summary: it is dropped, and the target keeps both ends.
    check_short(&event, "CRITICAL northwind-traders-international-holdings-emea-subsidiary-gmbh-01 first.last.departme...ary.northwind.co.uk recipient_not_found since 2026-11-23 03:12Z");
}
