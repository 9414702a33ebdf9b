//! The licence check: the tenant's SKUs and subscriptions (grace, suspension, seats, trial
//! and hand-renewal dates), and each watched identity's Exchange mailbox plan (reference
//! §3.4–3.6).
//!
//! Only trials and subscriptions the operator lists as renewed by hand count down to their
//! `nextLifecycleDateTime`: Graph does not say whether a subscription renews itself, and a
//! monthly auto-renewing subscription must not warn every month.

use std::collections::BTreeSet;

use serde::Deserialize;
use tokio::time::Instant;
use tw_core::config::LicenceSettings;
use tw_core::{EmailAddress, HttpEvidence, Reason, Secret, Timestamp};

use super::{count, encode_segment, failed, Call, Findings, GraphClient, GraphError};
use crate::Outcome;

/// Exchange Online service plans that give a user a mailbox (servicePlanName,
/// servicePlanId; commercial cloud). `EXCHANGE_S_FOUNDATION` is deliberately absent: it
/// applies to the company and gives no mailbox.
pub const MAILBOX_PLANS: [(&str, &str); 5] = [
    (
        "EXCHANGE_S_STANDARD",
        "9aaf7827-d63c-4b61-89c3-182f06f82e5c",
    ),
    (
        "EXCHANGE_S_ENTERPRISE",
        "efb87545-963c-4e0d-99df-69c6916d9eb0",
    ),
    (
        "EXCHANGE_S_DESKLESS",
        "4a82b400-a79f-41a4-b4e2-e94f5787b113",
    ),
    (
        "EXCHANGE_S_ESSENTIALS",
        "1126bef5-da20-4f07-b45e-ad25d2581aa8",
    ),
    (
        "EXCHANGE_S_STANDARD_MIDMARKET",
        "fc52cc4b-ed7d-472d-bbe7-b081c23ecc56",
    ),
];

const EXCHANGE_FOUNDATION_ID: &str = "113feb6c-3fe4-4440-bddc-54d774bf0318";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Sku {
    sku_id: Option<String>,
    sku_part_number: Option<String>,
    capability_status: Option<String>,
    consumed_units: Option<i64>,
    prepaid_units: Option<PrepaidUnits>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PrepaidUnits {
    enabled: Option<i64>,
    suspended: Option<i64>,
    warning: Option<i64>,
    locked_out: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Subscription {
    id: Option<String>,
    commerce_subscription_id: Option<String>,
    sku_part_number: Option<String>,
    status: Option<String>,
    is_trial: Option<bool>,
    next_lifecycle_date_time: Option<String>,
    total_licenses: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LicenseDetail {
    sku_part_number: Option<String>,
    sku_id: Option<String>,
    service_plans: Option<Vec<ServicePlan>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServicePlan {
    service_plan_id: Option<String>,
    service_plan_name: Option<String>,
    provisioning_status: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserPlans {
    assigned_plans: Option<Vec<AssignedPlan>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AssignedPlan {
    capability_status: Option<String>,
    service: Option<String>,
    service_plan_id: Option<String>,
}

/// One outcome for the tenant (target `target`) and one per watched identity whose object id
/// is known (target = the address); identities without an id are left to the identity check.
#[allow(clippy::too_many_arguments)] // the check's inputs, each distinct; a struct would only rename them
pub async fn licence(
    graph: &GraphClient,
    token: &Secret,
    tenant: &str,
    target: &str,
    identities: &[(EmailAddress, Option<String>)],
    settings: &LicenceSettings,
    now: Timestamp,
    deadline: Instant,
) -> Vec<Outcome> {
    let call = Call {
        token,
        tenant,
        deadline,
    };
    let mut outcomes = vec![tenant_licences(graph, call, target, settings, now).await];
    for (address, id) in identities {
        if let Some(id) = id {
            outcomes.push(mailbox_plan(graph, call, &address.to_string(), id).await);
        }
    }
    outcomes
}

async fn tenant_licences(
    graph: &GraphClient,
    call: Call<'_>,
    target: &str,
    settings: &LicenceSettings,
    now: Timestamp,
) -> Outcome {
    let mut evidence = HttpEvidence::default();
    let mut findings = Findings::default();
    let skus = graph
        .get_all::<Sku>(call, "/subscribedSkus", &mut evidence)
        .await;
    let subscriptions = graph
        .get_all::<Subscription>(call, "/directory/subscriptions", &mut evidence)
        .await;
    let (sku_count, subscription_count) = (
        skus.as_ref().map_or(0, Vec::len),
        subscriptions.as_ref().map_or(0, Vec::len),
    );
    match skus {
        Ok(skus) => {
            for sku in &skus {
                judge_sku(sku, &mut findings, &mut evidence);
            }
        }
        Err(err) => findings.add(err.reason(), format!("reading /subscribedSkus: {err}")),
    }
    match subscriptions {
        Ok(subscriptions) => {
            for subscription in &subscriptions {
                judge_subscription(subscription, settings, now, &mut findings, &mut evidence);
            }
        }
        Err(err) => findings.add(
            err.reason(),
            format!("reading /directory/subscriptions: {err}"),
        ),
    }
    let ok = (
        Reason::LicencesOk,
        format!(
            "{} and {} without a finding; no trial or hand-renewed subscription ends soon",
            count(sku_count, "SKU", "SKUs"),
            count(subscription_count, "subscription", "subscriptions")
        ),
    );
    findings.decide(target, ok, evidence)
}

fn judge_sku(sku: &Sku, findings: &mut Findings, evidence: &mut HttpEvidence) {
    let name = sku
        .sku_part_number
        .as_deref()
        .or(sku.sku_id.as_deref())
        .unwrap_or("?");
    let status = sku.capability_status.as_deref().unwrap_or("?");
    let units = sku.prepaid_units.as_ref();
    let enabled = units.and_then(|u| u.enabled).unwrap_or(0);
    let consumed = sku.consumed_units.unwrap_or(0);
    let facts = &mut evidence.facts;
    facts.insert(format!("sku.{name}.status"), status.to_owned());
    facts.insert(format!("sku.{name}.consumed"), consumed.to_string());
    facts.insert(format!("sku.{name}.enabled"), enabled.to_string());
    if let Some(units) = units {
        for (what, count) in [
            ("warning", units.warning),
            ("suspended", units.suspended),
            ("locked_out", units.locked_out),
        ] {
            if let Some(count) = count.filter(|c| *c > 0) {
                facts.insert(format!("sku.{name}.{what}"), count.to_string());
            }
        }
    }
    match status.to_ascii_lowercase().as_str() {
        "enabled" => {
            // Seats are compared only while the SKU is Enabled: in the later states the seats
            // move to the warning/suspended buckets and the status finding says more.
            if consumed > enabled {
                findings.add(
                    Reason::SeatsOverConsumed,
                    format!(
                        "SKU {name}: {consumed} licences assigned but only {enabled} enabled seats; new assignments fail (CountViolation)"
                    ),
                );
            }
        }
        "warning" => findings.add(
            Reason::LicenceGrace,
            format!("SKU {name} is in its grace period (Warning): renew it"),
        ),
        "suspended" | "lockedout" => findings.add(
            Reason::LicenceSuspended,
            format!("SKU {name} is {status}: its users lose service"),
        ),
        // A Deleted SKU nobody uses is a leftover (an old trial); one still assigned is not.
        "deleted" if consumed > 0 => findings.add(
            Reason::LicenceSuspended,
            format!("SKU {name} is Deleted but {consumed} licences are still assigned"),
        ),
        "deleted" => {}
        _ => findings.add(
            Reason::MalformedResponse,
            format!("SKU {name} has an unknown capabilityStatus {status:?}"),
        ),
    }
}

fn judge_subscription(
    subscription: &Subscription,
    settings: &LicenceSettings,
    now: Timestamp,
    findings: &mut Findings,
    evidence: &mut HttpEvidence,
) {
    let id = subscription.id.as_deref().unwrap_or("?");
    let sku = subscription.sku_part_number.as_deref().unwrap_or("?");
    let status = subscription.status.as_deref().unwrap_or("?");
    let trial = subscription.is_trial == Some(true);
    let manual = settings.manual_renewal.iter().any(|listed| {
        [
            subscription.sku_part_number.as_deref(),
            subscription.id.as_deref(),
            subscription.commerce_subscription_id.as_deref(),
        ]
        .into_iter()
        .flatten()
        .any(|key| key.eq_ignore_ascii_case(listed.trim()))
    });
    let next = subscription
        .next_lifecycle_date_time
        .as_deref()
        .and_then(Timestamp::parse_utc);
    let facts = &mut evidence.facts;
    let key = |what: &str| format!("subscription.{id}.{what}");
    facts.insert(key("sku"), sku.to_owned());
    facts.insert(key("status"), status.to_owned());
    facts.insert(key("trial"), trial.to_string());
    if let Some(total) = subscription.total_licenses {
        facts.insert(key("total_licenses"), total.to_string());
    }
    if let Some(next) = next {
        facts.insert(key("next_lifecycle"), next.to_string());
        // `days_left` only for what counts down (the daemon exports it as the renewal
        // countdown); a subscription that may renew itself gets the figure under another name.
        let days = now.days_until(next).to_string();
        if trial || manual {
            facts.insert(key("days_left"), days);
        } else {
            facts.insert(key("days_to_next_lifecycle"), days);
        }
    }
    let renewal = if trial {
        "counted down (trial)"
    } else if manual {
        "counted down (renewed by hand)"
    } else {
        "not counted down (may renew itself)"
    };
    facts.insert(key("renewal"), renewal.to_owned());

    match status.to_ascii_lowercase().as_str() {
        "enabled" | "deleted" => {}
        "warning" => findings.add(
            Reason::LicenceGrace,
            format!("subscription {sku} ({id}) is in its grace period (Warning)"),
        ),
        "suspended" | "lockedout" => findings.add(
            Reason::LicenceSuspended,
            format!("subscription {sku} ({id}) is {status}"),
        ),
        _ => findings.add(
            Reason::MalformedResponse,
            format!("subscription {sku} ({id}) has an unknown status {status:?}"),
        ),
    }
    if !(trial || manual) || status.eq_ignore_ascii_case("deleted") {
        return;
    }
    let what = if trial {
        format!("{sku} trial")
    } else {
        format!("{sku} subscription (renewed by hand)")
    };
    let Some(next) = next else {
        findings.add(
            Reason::LicencesOk,
            format!("{what} ({id}) gives no nextLifecycleDateTime"),
        );
        return;
    };
    let days = now.days_until(next);
    let date = next.to_string().chars().take(10).collect::<String>();
    let warn_from = settings.renewal_warn_days.iter().copied().max();
    if days < 0 {
        findings.add(
            Reason::LicenceLapsed,
            format!(
                "{what} ended {} ago on {date}",
                count((-days).unsigned_abs() as usize, "day", "days")
            ),
        );
    } else if warn_from.is_some_and(|limit| days <= i64::from(limit)) {
        let when = match days {
            0 => "today".to_owned(),
            1 => "in 1 day".to_owned(),
            n => format!("in {n} days"),
        };
        findings.add(Reason::RenewalDue, format!("{what} ends {when} on {date}"));
    }
}

/// The watched identity's mailbox plan, from `licenseDetails` or, when that is refused,
/// from the user's `assignedPlans` (reference §3.4).
async fn mailbox_plan(graph: &GraphClient, call: Call<'_>, target: &str, id: &str) -> Outcome {
    let mut evidence = HttpEvidence::default();
    evidence.facts.insert("object_id".into(), id.to_owned());
    let path = format!("/users/{}/licenseDetails", encode_segment(id));
    match graph
        .get_all::<LicenseDetail>(call, &path, &mut evidence)
        .await
    {
        Ok(details) => judge_licence_details(target, &details, evidence),
        Err(GraphError::PermissionDenied { .. }) => {
            evidence.findings.push(
                "licenseDetails refused (403); reading the user's assignedPlans instead".into(),
            );
            let path = format!("/users/{}?$select=assignedPlans", encode_segment(id));
            match graph
                .get_json::<UserPlans>(call, &path, &mut evidence)
                .await
            {
                Ok(user) => judge_assigned_plans(target, &user, evidence),
                Err(err) => failed(target, "reading the user's assignedPlans", &err, evidence),
            }
        }
        Err(err @ GraphError::NotFound { .. }) => failed(
            target,
            &format!(
                "reading the licences of user {id} (the identity check judges a missing user)"
            ),
            &err,
            evidence,
        ),
        Err(err) => failed(target, "reading the user's licenseDetails", &err, evidence),
    }
}

fn mailbox_plan_name(id: Option<&str>, name: Option<&str>) -> Option<&'static str> {
    let by_id = id.and_then(|id| {
        MAILBOX_PLANS
            .iter()
            .find(|(_, known)| known.eq_ignore_ascii_case(id))
    });
    // Names only as a fallback: other clouds publish other ids for the same plans.
    let by_name = || {
        name.and_then(|name| {
            MAILBOX_PLANS
                .iter()
                .find(|(known, _)| known.eq_ignore_ascii_case(name))
        })
    };
    by_id.or_else(by_name).map(|(name, _)| *name)
}

fn judge_licence_details(
    target: &str,
    details: &[LicenseDetail],
    mut evidence: HttpEvidence,
) -> Outcome {
    let skus: Vec<&str> = details
        .iter()
        .map(|d| {
            d.sku_part_number
                .as_deref()
                .or(d.sku_id.as_deref())
                .unwrap_or("?")
        })
        .collect();
    evidence.facts.insert("skus".into(), skus.join(", "));
    // (plan, sku, provisioningStatus) of every mailbox plan the user has.
    let mut plans = Vec::new();
    for (detail, sku) in details.iter().zip(&skus) {
        for plan in detail.service_plans.iter().flatten() {
            let Some(name) = mailbox_plan_name(
                plan.service_plan_id.as_deref(),
                plan.service_plan_name.as_deref(),
            ) else {
                continue;
            };
            let status = plan.provisioning_status.as_deref().unwrap_or("?");
            evidence
                .facts
                .insert(format!("plan.{name}.{sku}"), status.to_owned());
            plans.push((name, *sku, status));
        }
    }
    let outcome = |reason, summary, evidence| Outcome {
        target: target.to_owned(),
        reason,
        summary,
        evidence,
    };
    if let Some((name, sku, _)) = plans
        .iter()
        .find(|(_, _, status)| status.eq_ignore_ascii_case("success"))
    {
        return outcome(
            Reason::LicencesOk,
            format!("mailbox plan {name} ({sku}) is provisioned"),
            evidence,
        );
    }
    let why = if plans.is_empty() {
        if skus.is_empty() {
            "no licence assigned, so no Exchange mailbox plan".to_owned()
        } else {
            format!(
                "no Exchange mailbox plan in its licences ({})",
                skus.join(", ")
            )
        }
    } else {
        plans
            .iter()
            .map(|(name, sku, status)| {
                if status.eq_ignore_ascii_case("disabled") {
                    format!("{name} ({sku}) is Disabled")
                } else {
                    format!("{name} ({sku}) failed provisioning ({status})")
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    outcome(
        Reason::MailboxPlanLost,
        format!("{why}: the mailbox will be disconnected"),
        evidence,
    )
}

fn judge_assigned_plans(target: &str, user: &UserPlans, mut evidence: HttpEvidence) -> Outcome {
    let mut exchange = Vec::new();
    for plan in user.assigned_plans.iter().flatten() {
        let is_exchange = plan
            .service
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("exchange"));
        let id = plan.service_plan_id.as_deref().unwrap_or("?");
        if !is_exchange || id.eq_ignore_ascii_case(EXCHANGE_FOUNDATION_ID) {
            continue;
        }
        let status = plan.capability_status.as_deref().unwrap_or("?");
        let name = mailbox_plan_name(Some(id), None).unwrap_or(id);
        evidence
            .facts
            .insert(format!("assigned_plan.{name}"), status.to_owned());
        exchange.push((name, status));
    }
    if let Some((name, _)) = exchange
        .iter()
        .find(|(_, status)| status.eq_ignore_ascii_case("enabled"))
    {
        return Outcome {
            target: target.to_owned(),
            reason: Reason::LicencesOk,
            summary: format!("Exchange plan {name} is Enabled (from assignedPlans)"),
            evidence,
        };
    }
    let why = if exchange.is_empty() {
        "no Exchange plan among the user's assignedPlans".to_owned()
    } else {
        let list: BTreeSet<String> = exchange
            .iter()
            .map(|(name, status)| format!("{name} is {status}"))
            .collect();
        list.into_iter().collect::<Vec<_>>().join("; ")
    };
    Outcome {
        target: target.to_owned(),
        reason: Reason::MailboxPlanLost,
        summary: format!("{why}: the mailbox will be disconnected"),
        evidence,
    }
}

/// For [`crate::fuzzing`]: what the check makes of one answer, without the request.
pub(crate) fn judge_for_fuzzing(
    answer: crate::fuzzing::Answer,
    reply: &crate::http::Reply,
    target: &str,
    settings: &LicenceSettings,
    now: Timestamp,
) -> Result<Vec<Outcome>, GraphError> {
    use crate::fuzzing::Answer;
    let mut evidence = HttpEvidence::default();
    let mut findings = Findings::default();
    let ok = (Reason::LicencesOk, "no finding".to_owned());
    Ok(match answer {
        Answer::SkuPage => {
            for sku in super::decode_page::<Sku>(reply, &mut evidence)? {
                judge_sku(&sku, &mut findings, &mut evidence);
            }
            vec![findings.decide(target, ok, evidence)]
        }
        Answer::SubscriptionPage => {
            for subscription in super::decode_page::<Subscription>(reply, &mut evidence)? {
                judge_subscription(&subscription, settings, now, &mut findings, &mut evidence);
            }
            vec![findings.decide(target, ok, evidence)]
        }
        Answer::LicenseDetailPage => {
            let details = super::decode_page::<LicenseDetail>(reply, &mut evidence)?;
            vec![judge_licence_details(target, &details, evidence)]
        }
        Answer::UserPlans => {
            let user = super::decode::<UserPlans>(reply, &mut evidence)?;
            vec![judge_assigned_plans(target, &user, evidence)]
        }
        _ => Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_match_by_id_first_then_by_name() {
        assert_eq!(
            mailbox_plan_name(
                Some("EFB87545-963C-4E0D-99DF-69C6916D9EB0"),
                Some("whatever")
            ),
            Some("EXCHANGE_S_ENTERPRISE")
        );
        assert_eq!(
            mailbox_plan_name(
                Some("00000000-0000-0000-0000-000000000000"),
                Some("exchange_s_standard")
            ),
            Some("EXCHANGE_S_STANDARD")
        );
        assert_eq!(
            mailbox_plan_name(Some(EXCHANGE_FOUNDATION_ID), Some("EXCHANGE_S_FOUNDATION")),
            None
        );
    }
}
