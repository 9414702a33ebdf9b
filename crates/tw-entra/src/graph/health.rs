//! The health check: what Microsoft itself reports for Exchange Online and Entra ID
//! (reference §3.7). Context for the other alerts by default ("Microsoft reports an
//! issue"); a warning only when the operator enables `alert_on_service_health`.

use serde::Deserialize;
use tokio::time::Instant;
use tw_core::{HttpEvidence, Reason, Secret};

use super::{failed, Call, GraphClient};
use crate::Outcome;

/// The services whose health decides the verdict: Exchange Online and the identity service.
pub const WATCHED_SERVICES: [&str; 2] = ["Exchange", "OrgLiveID"];

/// `serviceHealthStatus` values meaning "working" (compared case-insensitively: the docs
/// print PascalCase, real answers are camelCase).
pub const OPERATIONAL_STATUSES: [&str; 8] = [
    "serviceOperational",
    "serviceRestored",
    "falsePositive",
    "resolved",
    "postIncidentReviewPublished",
    "mitigated",
    "mitigatedExternal",
    "resolvedExternal",
];

#[derive(Deserialize)]
struct HealthOverview {
    id: Option<String>,
    service: Option<String>,
    status: Option<String>,
}

fn operational(status: &str) -> bool {
    OPERATIONAL_STATUSES
        .iter()
        .any(|known| known.eq_ignore_ascii_case(status))
}

/// Reads the tenant's service health overviews; `alert` makes a reported issue a warning.
pub async fn health(
    graph: &GraphClient,
    token: &Secret,
    tenant: &str,
    target: &str,
    alert: bool,
    deadline: Instant,
) -> Outcome {
    let call = Call {
        token,
        tenant,
        deadline,
    };
    let mut evidence = HttpEvidence::default();
    let overviews = match graph
        .get_all::<HealthOverview>(
            call,
            "/admin/serviceAnnouncement/healthOverviews",
            &mut evidence,
        )
        .await
    {
        Ok(overviews) => overviews,
        Err(err) => {
            return failed(
                target,
                "reading the service health overviews",
                &err,
                evidence,
            )
        }
    };
    judge(target, alert, &overviews, evidence)
}

/// The verdict on the health overviews; records what was read in `evidence`.
fn judge(
    target: &str,
    alert: bool,
    overviews: &[HealthOverview],
    mut evidence: HttpEvidence,
) -> Outcome {
    for overview in overviews {
        if let (Some(id), Some(status)) = (&overview.id, &overview.status) {
            evidence
                .facts
                .insert(format!("service.{id}"), status.clone());
        }
    }
    let mut issues = Vec::new();
    let mut listed = Vec::new();
    for watched in WATCHED_SERVICES {
        let found = overviews.iter().find(|o| {
            o.id.as_deref()
                .is_some_and(|id| id.eq_ignore_ascii_case(watched))
        });
        let Some(overview) = found else {
            evidence
                .findings
                .push(format!("{watched} is not listed in the health overviews"));
            continue;
        };
        listed.push(watched);
        let status = overview.status.as_deref().unwrap_or("(no status)");
        let name = overview.service.as_deref().unwrap_or(watched);
        evidence
            .findings
            .push(format!("{watched} ({name}): {status}"));
        if !operational(status) {
            issues.push(format!("{watched} ({name}) is {status}"));
        }
    }
    let outcome = |reason, summary, evidence| Outcome {
        target: target.to_owned(),
        reason,
        summary,
        evidence,
    };
    if !issues.is_empty() {
        let reason = if alert {
            Reason::ServiceDegraded
        } else {
            Reason::ServiceIssueReported
        };
        return outcome(
            reason,
            format!("Microsoft reports {}", issues.join("; ")),
            evidence,
        );
    }
    if listed.is_empty() {
        return outcome(
            Reason::HttpError,
            format!(
                "the health overviews list neither {}: cannot tell",
                WATCHED_SERVICES.join(" nor ")
            ),
            evidence,
        );
    }
    outcome(
        Reason::ServiceOperational,
        format!("Microsoft reports {} operational", listed.join(" and ")),
        evidence,
    )
}

/// For [`crate::fuzzing`]: the health overviews of one answer judged as [`health`] judges
/// them, without the request.
pub(crate) fn judge_for_fuzzing(
    reply: &crate::http::Reply,
    target: &str,
) -> Result<Vec<Outcome>, super::GraphError> {
    let mut evidence = HttpEvidence::default();
    let overviews = super::decode_page::<HealthOverview>(reply, &mut evidence)?;
    Ok(vec![judge(target, true, &overviews, evidence)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_compare_case_insensitively() {
        assert!(operational("ServiceOperational"));
        assert!(operational("serviceoperational"));
        assert!(operational("mitigatedExternal"));
        assert!(!operational("serviceDegradation"));
        assert!(!operational("investigating"));
        assert!(!operational("unknownFutureValue"));
    }
}
