//! The admins check: how many independent, enabled people hold Global Administrator
//! (reference §3.8). The motivating incident is an MSP whose only admin identity vanished;
//! a second enabled admin (a break-glass account) is what makes that recoverable.
//!
//! Counted: enabled users assigned directly or through a group (expanded transitively),
//! each person once. Service principals hold the role but cannot sign in to recover a
//! tenant, so they are listed, not counted. Guests are counted but noted: they depend on
//! another tenant.

use std::collections::BTreeMap;

use serde::Deserialize;
use tokio::time::Instant;
use tw_core::{HttpEvidence, Reason, Secret};

use super::{count, encode_query_value, encode_segment, failed, Call, GraphClient, GraphError};
use crate::Outcome;

/// The Global Administrator role template and definition id.
pub const GLOBAL_ADMINISTRATOR_ROLE: &str = "62e90394-69f5-4237-9190-012177145e10";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Assignment {
    principal_id: Option<String>,
    principal: Option<Principal>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Principal {
    #[serde(rename = "@odata.type")]
    odata_type: Option<String>,
    id: Option<String>,
    display_name: Option<String>,
    user_principal_name: Option<String>,
    account_enabled: Option<bool>,
    user_type: Option<String>,
}

#[derive(PartialEq)]
enum Kind {
    User,
    Group,
    ServicePrincipal,
    Other,
}

impl Principal {
    fn kind(&self) -> Kind {
        let odata_type = self
            .odata_type
            .as_deref()
            .unwrap_or("")
            .to_ascii_lowercase();
        match odata_type.trim_start_matches('#') {
            "microsoft.graph.user" => Kind::User,
            "microsoft.graph.group" => Kind::Group,
            "microsoft.graph.serviceprincipal" => Kind::ServicePrincipal,
            _ => Kind::Other,
        }
    }

    fn name(&self) -> String {
        let id = self.id.as_deref().unwrap_or("?");
        match (
            self.display_name.as_deref(),
            self.user_principal_name.as_deref(),
        ) {
            (_, Some(upn)) => format!("{upn} ({id})"),
            (Some(name), None) => format!("{name} ({id})"),
            (None, None) => id.to_owned(),
        }
    }

    fn is_guest(&self) -> bool {
        self.user_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("guest"))
    }
}

/// Counts the tenant's enabled Global Administrators.
pub async fn admins(
    graph: &GraphClient,
    token: &Secret,
    tenant: &str,
    target: &str,
    deadline: Instant,
) -> Outcome {
    let call = Call {
        token,
        tenant,
        deadline,
    };
    let mut evidence = HttpEvidence::default();
    let filter = format!("roleDefinitionId eq '{GLOBAL_ADMINISTRATOR_ROLE}'");
    let path = format!(
        "/roleManagement/directory/roleAssignments?$filter={}&$expand=principal",
        encode_query_value(&filter)
    );
    let assignments = match graph
        .get_all::<Assignment>(call, &path, &mut evidence)
        .await
    {
        Ok(assignments) => assignments,
        Err(err) => {
            return failed(
                target,
                "reading the Global Administrator role assignments",
                &err,
                evidence,
            )
        }
    };
    // Enabled people by object id (so a user assigned directly and through a group counts
    // once), with whether they are guests.
    let mut counted: BTreeMap<String, (String, bool)> = BTreeMap::new();
    let mut unexpanded: Vec<(String, GraphError)> = Vec::new();
    for assignment in &assignments {
        let Some(principal) = &assignment.principal else {
            let id = assignment.principal_id.as_deref().unwrap_or("?");
            evidence.findings.push(format!(
                "assignment to principal {id} came without the principal; not counted"
            ));
            continue;
        };
        match principal.kind() {
            Kind::User => consider_user(principal, "assigned directly", &mut counted, &mut evidence),
            Kind::ServicePrincipal => evidence.findings.push(format!(
                "service principal {} holds the role; not counted (it cannot sign in to recover the tenant)",
                principal.name()
            )),
            Kind::Group => {
                let group = principal.name();
                let Some(id) = principal.id.as_deref() else {
                    evidence
                        .findings
                        .push(format!("group {group} came without an id; not expanded"));
                    continue;
                };
                let path = format!(
                    "/groups/{}/transitiveMembers?$select=id,displayName,userPrincipalName,accountEnabled,userType",
                    encode_segment(id)
                );
                match graph.get_all::<Principal>(call, &path, &mut evidence).await {
                    Ok(members) => {
                        let via = format!("through group {group}");
                        let users: Vec<&Principal> =
                            members.iter().filter(|m| m.kind() == Kind::User).collect();
                        evidence.findings.push(format!(
                            "group {group} holds the role: {}",
                            count(users.len(), "user member", "user members")
                        ));
                        for member in users {
                            consider_user(member, &via, &mut counted, &mut evidence);
                        }
                    }
                    Err(err) => {
                        evidence
                            .findings
                            .push(format!("group {group} could not be expanded: {err}"));
                        unexpanded.push((group, err));
                    }
                }
            }
            Kind::Other => evidence.findings.push(format!(
                "principal {} of type {} holds the role; not counted",
                principal.name(),
                principal.odata_type.as_deref().unwrap_or("?")
            )),
        }
    }
    let admins = counted.len();
    let guests = counted.values().filter(|(_, guest)| *guest).count();
    evidence
        .facts
        .insert("admin_count".into(), admins.to_string());
    evidence
        .facts
        .insert("guest_admins".into(), guests.to_string());
    let names: Vec<&str> = counted.values().map(|(name, _)| name.as_str()).collect();
    let guest_note = match (admins, guests) {
        (_, 0) => String::new(),
        (1, _) => ", a guest".to_owned(),
        (_, 1) => " (1 of them a guest)".to_owned(),
        (_, n) => format!(" ({n} of them guests)"),
    };
    let outcome = |reason, summary, evidence| Outcome {
        target: target.to_owned(),
        reason,
        summary,
        evidence,
    };
    if admins >= 2 {
        return outcome(
            Reason::AdminsOk,
            format!("{admins} enabled Global Administrators{guest_note}"),
            evidence,
        );
    }
    // Too few counted, but a group we could not read may hold more: that is not a finding.
    if let Some((group, err)) = unexpanded.first() {
        return failed(
            target,
            &format!(
                "{} counted, but group {group} could not be expanded",
                count(
                    admins,
                    "enabled Global Administrator",
                    "enabled Global Administrators"
                )
            ),
            err,
            evidence,
        );
    }
    if admins == 1 {
        return outcome(
            Reason::SingleAdmin,
            format!(
                "only one enabled Global Administrator ({}{guest_note}): no independent second admin identity",
                names.join("")
            ),
            evidence,
        );
    }
    outcome(
        Reason::NoAdmin,
        format!(
            "no enabled Global Administrator among {}",
            count(assignments.len(), "role assignment", "role assignments")
        ),
        evidence,
    )
}

fn consider_user(
    user: &Principal,
    via: &str,
    counted: &mut BTreeMap<String, (String, bool)>,
    evidence: &mut HttpEvidence,
) {
    let name = user.name();
    let guest = if user.is_guest() { ", guest" } else { "" };
    match (user.account_enabled, user.id.as_deref()) {
        (Some(true), Some(id)) => {
            evidence
                .findings
                .push(format!("admin {name}{guest}, enabled, {via}"));
            counted.insert(id.to_ascii_lowercase(), (name, user.is_guest()));
        }
        (Some(false), _) => evidence.findings.push(format!(
            "admin {name}{guest} is disabled ({via}); not counted"
        )),
        (None, _) | (_, None) => evidence.findings.push(format!(
            "admin {name}{guest} ({via}) came without accountEnabled or id; not counted"
        )),
    }
}
/// For [`crate::fuzzing`]: the role assignments (or a group's members) of one answer read as
/// the check reads them, without the requests; groups are not expanded.
pub(crate) fn judge_for_fuzzing(
    reply: &crate::http::Reply,
    target: &str,
) -> Result<Vec<Outcome>, GraphError> {
    let mut evidence = HttpEvidence::default();
    let mut counted: BTreeMap<String, (String, bool)> = BTreeMap::new();
    for assignment in super::decode_page::<Assignment>(reply, &mut evidence)? {
        let Some(principal) = &assignment.principal else {
            continue;
        };
        match principal.kind() {
            Kind::User => {
                consider_user(principal, "assigned directly", &mut counted, &mut evidence)
            }
            _ => evidence.findings.push(principal.name()),
        }
    }
    let reason = match counted.len() {
        0 => Reason::NoAdmin,
        1 => Reason::SingleAdmin,
        _ => Reason::AdminsOk,
    };
    let summary = count(
        counted.len(),
        "enabled Global Administrator",
        "enabled Global Administrators",
    );
    Ok(vec![Outcome {
        target: target.to_owned(),
        reason,
        summary,
        evidence,
    }])
}
