//! One message standing for several: a tenant's alerts that fired within the group window,
//! delivered to one receiver at once.
//!
//! The outbox keeps one row per alert (so nothing is lost and each has its own delivery
//! log); only the send is shared. The summary's id is derived from the members' ids alone,
//! so every retry of the same members carries the same idempotency key, every receiver of the
//! same members sees the same key, and a group whose membership changed (a member expired, or
//! joined just as the group went out) is a different message with a different key, never
//! one a receiver would drop as already processed.

use sha2::{Digest, Sha256};

use crate::text::hex;
use crate::Message;

/// The most member lines a summary body lists before saying how many more there are; the
/// full texts follow anyway.
const LISTED: usize = 50;

/// The message sent in place of `members` (two or more, one tenant, oldest first).
///
/// `kind` is `group` and `check` is `group`; `severity` and `status` are the worst among the
/// members (a resolution counts by the severity it resolves); `since` is the earliest and
/// `at` the latest; the title counts the members, the short text names as many as fit in one
/// SMS, and the body lists each member's title, then each member's full text. Channels that
/// carry structure (webhook, Alertmanager) send the members themselves as well.
pub fn group_message(members: &[Message]) -> Message {
    let Some(first) = members.first() else {
        return Message {
            id: "group/empty".to_owned(),
            kind: "group".to_owned(),
            severity: "blind".to_owned(),
            tenant: String::new(),
            check: "group".to_owned(),
            target: String::new(),
            status: "unknown".to_owned(),
            reason: "group".to_owned(),
            title: "no alerts".to_owned(),
            short: "no alerts".to_owned(),
            body: String::new(),
            since: tw_core::Timestamp(0),
            at: tw_core::Timestamp(0),
            link: None,
        };
    };
    let severity = members
        .iter()
        .map(|m| m.severity.as_str())
        .max_by_key(|s| severity_rank(s))
        .unwrap_or("blind");
    let status = members
        .iter()
        .map(|m| m.status.as_str())
        .max_by_key(|s| status_rank(s))
        .unwrap_or("unknown");
    let open = members.iter().filter(|m| !m.is_resolved()).count();
    let resolved = members.len() - open;
    let counts = match (open, resolved) {
        (_, 0) => format!("{open} alerts"),
        (0, _) => format!("{resolved} resolved"),
        _ => format!("{open} alerts, {resolved} resolved"),
    };
    let label = if open == 0 {
        "RESOLVED".to_owned()
    } else {
        severity.to_ascii_uppercase()
    };
    let tenant = first.tenant.clone();
    let title = format!("{label}: {tenant}: {counts}");

    let mut lines = vec![title.clone(), String::new()];
    for member in members.iter().take(LISTED) {
        lines.push(format!("- {}", member.title));
    }
    if members.len() > LISTED {
        lines.push(format!("- … and {} more", members.len() - LISTED));
    }
    for member in members {
        lines.push(String::new());
        lines.push("---".to_owned());
        lines.push(member.body.trim_end().to_owned());
    }
    lines.push(String::new());

    Message {
        id: group_id(&tenant, members),
        kind: "group".to_owned(),
        severity: severity.to_owned(),
        tenant,
        check: "group".to_owned(),
        target: format!("{} alerts", members.len()),
        status: status.to_owned(),
        reason: "group".to_owned(),
        short: short_text(&label, &first.tenant, members),
        title,
        body: lines.join("\n"),
        since: members.iter().map(|m| m.since).min().unwrap_or(first.since),
        at: members.iter().map(|m| m.at).max().unwrap_or(first.at),
        link: members.iter().find_map(|m| m.link.clone()),
    }
}

/// `tenant/group/<n>/<hash of the member ids>`: the same members, the same id.
fn group_id(tenant: &str, members: &[Message]) -> String {
    let mut hasher = Sha256::new();
    for member in members {
        hasher.update(member.id.as_bytes());
        hasher.update(b"\n");
    }
    let digest = hasher.finalize();
    format!(
        "{}/group/{}/{}",
        tenant.replace('%', "%25").replace('/', "%2F"),
        members.len(),
        hex(digest.get(..12).unwrap_or(&digest))
    )
}

/// One SMS: `CRITICAL contoso 3 alerts: a@x recipient_not_found; b@x identity_deleted; ...`.
/// Plain ASCII (a subset of GSM-7), at most 159 characters; members that do not fit are
/// counted instead.
fn short_text(label: &str, tenant: &str, members: &[Message]) -> String {
    const MAX: usize = 159;
    let ascii = |text: &str| -> String {
        text.chars()
            .map(|c| {
                if c.is_ascii() && !c.is_ascii_control() {
                    c
                } else {
                    '?'
                }
            })
            .collect()
    };
    let head = ascii(&format!("{label} {tenant} {} alerts:", members.len()));
    let mut text = head.chars().take(MAX).collect::<String>();
    for (index, member) in members.iter().enumerate() {
        let item = ascii(&format!(" {} {}", member.target, member.reason));
        let sep = if index == 0 { "" } else { ";" };
        let rest = members.len() - index - 1;
        let more = if rest > 0 {
            format!("; +{rest} more")
        } else {
            String::new()
        };
        if text.len() + sep.len() + item.len() + more.len() <= MAX {
            text.push_str(sep);
            text.push_str(&item);
        } else {
            let left = members.len() - index;
            let tail = format!("{sep} +{left} more");
            if text.len() + tail.len() <= MAX {
                text.push_str(&tail);
            }
            break;
        }
    }
    text
}

fn severity_rank(severity: &str) -> u8 {
    match severity {
        "critical" => 3,
        "warning" => 2,
        "blind" => 1,
        _ => 0,
    }
}

fn status_rank(status: &str) -> u8 {
    match status {
        "critical" => 4,
        "warning" => 3,
        "unknown" => 2,
        "ok" => 1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use tw_core::Timestamp;

    use super::*;

    fn member(id: &str, target: &str, kind: &str, severity: &str, at: i64) -> Message {
        Message {
            id: id.to_owned(),
            kind: kind.to_owned(),
            severity: severity.to_owned(),
            tenant: "contoso".to_owned(),
            check: "smtp_rcpt".to_owned(),
            target: target.to_owned(),
            status: if kind == "resolved" { "ok" } else { severity }.to_owned(),
            reason: "recipient_not_found".to_owned(),
            title: format!(
                "{}: contoso {target} recipient_not_found",
                severity.to_uppercase()
            ),
            short: String::new(),
            body: format!("body of {target}\n"),
            since: Timestamp(at - 60_000),
            at: Timestamp(at),
            link: None,
        }
    }

    #[test]
    fn a_group_lists_every_member_and_takes_the_worst_severity() {
        let members = [
            member("k1", "a@contoso.com", "firing", "warning", 1_000_000),
            member("k2", "b@contoso.com", "firing", "critical", 1_000_500),
            member("k3", "c@contoso.com", "resolved", "warning", 999_000),
        ];
        let group = group_message(&members);
        assert_eq!(
            (
                group.kind.as_str(),
                group.severity.as_str(),
                group.status.as_str()
            ),
            ("group", "critical", "critical")
        );
        assert_eq!(group.title, "CRITICAL: contoso: 2 alerts, 1 resolved");
        for target in ["a@contoso.com", "b@contoso.com", "c@contoso.com"] {
            assert!(
                group.body.contains(&format!("body of {target}")),
                "{target}"
            );
            assert!(group.short.contains(target), "{}", group.short);
        }
        assert_eq!(
            (group.since, group.at),
            (Timestamp(939_000), Timestamp(1_000_500))
        );
    }

    #[test]
    fn the_id_depends_on_the_members_only() {
        let a = member("k1", "a@contoso.com", "firing", "critical", 1);
        let b = member("k2", "b@contoso.com", "firing", "critical", 2);
        let c = member("k3", "c@contoso.com", "firing", "critical", 3);
        let ab = group_message(&[a.clone(), b.clone()]);
        let mut later = b.clone();
        later.body = "rendered again".to_owned();
        assert_eq!(ab.id, group_message(&[a.clone(), later]).id);
        assert_ne!(ab.id, group_message(&[a.clone(), b.clone(), c]).id);
        assert_ne!(ab.id, group_message(&[b, a]).id);
        assert!(ab.id.starts_with("contoso/group/2/"), "{}", ab.id);
    }

    #[test]
    fn the_short_text_fits_one_sms_and_counts_what_does_not_fit() {
        let members: Vec<Message> = (0..20)
            .map(|i| {
                member(
                    &format!("k{i}"),
                    &format!("user{i}@contoso.com"),
                    "firing",
                    "critical",
                    i,
                )
            })
            .collect();
        let short = group_message(&members).short;
        assert!(short.len() <= 159, "{} {short}", short.len());
        assert!(
            short.starts_with("CRITICAL contoso 20 alerts: user0@contoso.com"),
            "{short}"
        );
        assert!(short.contains(" more"), "{short}");
        assert!(short.is_ascii());
    }

    #[test]
    fn only_resolutions_read_as_resolved() {
        let group = group_message(&[
            member("k1", "a@contoso.com", "resolved", "critical", 1),
            member("k2", "b@contoso.com", "resolved", "warning", 2),
        ]);
        assert_eq!(group.title, "RESOLVED: contoso: 2 resolved");
        assert_eq!(group.status, "ok");
    }
}
