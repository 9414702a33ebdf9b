//! The HTTP checks (tenant, realm, domain, signin, identity, licence, admins, health): picks
//! the right `tw_entra` probe for a job and gives it what it needs — the shared HTTP client,
//! the configured endpoints, the tenant's app and token, and what earlier runs learned.
//!
//! A Graph check first needs a token: when the token endpoint refuses, the check reports
//! `no_token` (unknown) with the token exchange as its evidence, and the signin check of the
//! same tenant carries the classified verdict. That way one revoked consent is one critical
//! alert, not five.

use std::time::Duration;

use tokio::time::Instant;
use tw_core::{ArrivalEvidence, CheckKind, EmailAddress, HttpEvidence, Reason, Timestamp};
use tw_entra::graph::{Call, GraphError};
use tw_entra::token::AccessToken;
use tw_entra::{discovery, graph, realm, signin, Outcome};

use crate::clients::Clients;
use crate::job::{Job, ProbeMemory, Subject};

/// Runs the job's HTTP check; one outcome per target (see `Job::targets`).
pub(crate) async fn run(
    job: &Job,
    clients: &Clients,
    memory: &ProbeMemory,
    deadline: Instant,
) -> Vec<Outcome> {
    let http = &clients.entra.http;
    let config = &clients.entra.config;
    let login_url = config.login_url.as_str();
    let tenant = job.tenant.as_str();
    let context = &job.context;
    let now = Timestamp::now();
    match (job.check, &job.subject) {
        (CheckKind::Tenant, Subject::Domain(domain)) => {
            // A configured id is the expectation; otherwise the id seen before is, so a
            // domain moving to another tenant is noticed either way.
            let learned = memory.fact(tenant, CheckKind::Tenant, domain.as_str(), "tenant_id");
            let expected = context.tenant_id.clone().or(learned);
            vec![discovery::tenant(http, login_url, domain, expected.as_deref(), deadline).await]
        }
        (CheckKind::Realm, Subject::Address(address)) => {
            let previous = memory.fact(
                tenant,
                CheckKind::Realm,
                &address.to_string(),
                "namespace_type",
            );
            vec![realm::realm(http, login_url, address, previous.as_deref(), deadline).await]
        }
        (CheckKind::Domain, Subject::Domain(domain)) => vec![
            clients
                .entra
                .rdap
                .domain(
                    http,
                    domain,
                    config.domain_warn_days,
                    config.domain_critical_days,
                    now,
                    deadline,
                )
                .await,
        ],
        (CheckKind::Signin, Subject::Tenant) => {
            let Some(app) = clients.entra.app(&job.tenant) else {
                return vec![no_app(job, tenant)];
            };
            vec![
                signin::signin(
                    &clients.entra.tokens,
                    http,
                    login_url,
                    context.login_name(),
                    tenant,
                    app,
                    app.credential_expires(),
                    config.credential_warn_days,
                    now,
                    deadline,
                )
                .await,
            ]
        }
        (CheckKind::Identity | CheckKind::Licence | CheckKind::Admins | CheckKind::Health, _) => {
            let token = match token(job, clients, deadline).await {
                Ok(token) => token,
                Err(outcomes) => return outcomes,
            };
            let graph_client = &clients.entra.graph;
            let tenant_key = context.login_name();
            let outcomes = match (job.check, &job.subject) {
                (CheckKind::Identity, Subject::Address(address)) => {
                    let known = memory.fact(
                        tenant,
                        CheckKind::Identity,
                        &address.to_string(),
                        "object_id",
                    );
                    vec![
                        graph::identity(
                            graph_client,
                            &token.value,
                            tenant_key,
                            address,
                            known.as_deref(),
                            now,
                            deadline,
                        )
                        .await,
                    ]
                }
                (CheckKind::Licence, Subject::Tenant) => {
                    let identities: Vec<_> = context
                        .watch
                        .iter()
                        .map(|address| {
                            let id = memory.fact(
                                tenant,
                                CheckKind::Identity,
                                &address.to_string(),
                                "object_id",
                            );
                            (address.clone(), id)
                        })
                        .collect();
                    graph::licence(
                        graph_client,
                        &token.value,
                        tenant_key,
                        tenant,
                        &identities,
                        &context.licence,
                        now,
                        deadline,
                    )
                    .await
                }
                (CheckKind::Admins, Subject::Tenant) => {
                    vec![
                        graph::admins(graph_client, &token.value, tenant_key, tenant, deadline)
                            .await,
                    ]
                }
                (CheckKind::Health, Subject::Tenant) => vec![
                    graph::health(
                        graph_client,
                        &token.value,
                        tenant_key,
                        tenant,
                        config.alert_on_service_health,
                        deadline,
                    )
                    .await,
                ],
                _ => mismatched(job),
            };
            // Graph refused the cached token (revoked, or the tenant's policy changed): the
            // next run asks the token endpoint again instead of waiting out its lifetime.
            let refused = outcomes
                .iter()
                .flat_map(|outcome| &outcome.evidence.exchanges)
                .any(|exchange| exchange.status == Some(401));
            if refused {
                clients.entra.tokens.invalidate(tenant_key);
            }
            outcomes
        }
        _ => mismatched(job),
    }
}

/// The tenant's token, or for every target of the job a `no_token` outcome carrying the
/// token endpoint's answer.
async fn token(
    job: &Job,
    clients: &Clients,
    deadline: Instant,
) -> Result<AccessToken, Vec<Outcome>> {
    let Some(app) = clients.entra.app(&job.tenant) else {
        return Err(job
            .targets()
            .into_iter()
            .map(|target| no_app(job, &target))
            .collect());
    };
    let attempt = clients
        .entra
        .tokens
        .get(
            &clients.entra.http,
            &clients.entra.config.login_url,
            job.context.login_name(),
            app,
            deadline,
        )
        .await;
    match attempt.result {
        Ok(token) => Ok(token),
        Err((reason, summary)) => {
            let evidence = HttpEvidence {
                exchanges: attempt.exchanges,
                ..HttpEvidence::default()
            };
            Err(job
                .targets()
                .into_iter()
                .map(|target| Outcome {
                    target,
                    reason: Reason::NoToken,
                    summary: format!("no Graph token ({reason}): {summary}; see the signin check"),
                    evidence: evidence.clone(),
                })
                .collect())
        }
    }
}

fn no_app(job: &Job, target: &str) -> Outcome {
    Outcome {
        target: target.to_owned(),
        reason: Reason::NoToken,
        summary: format!("no app credentials loaded for tenant {}", job.tenant),
        evidence: HttpEvidence::default(),
    }
}

/// `plan` never builds these pairings; reporting nothing is safer than guessing a verdict.
fn mismatched(job: &Job) -> Vec<Outcome> {
    tracing::error!(check = %job.check, subject = ?job.subject, "No HTTP probe for this check and subject");
    Vec::new()
}

/// How often the mailbox is asked for the probe message while it has not arrived.
const ARRIVAL_POLL: Duration = Duration::from_secs(2);

/// The mailflow check's second way to learn a message's fate: with the tenant's app, look
/// for the probe message in the recipient's mailbox through Graph, measure the end-to-end
/// latency and delete it. Only when no DSN decided already (`no_bounce`); without an app the
/// check stays in bounce-only mode. A Graph failure leaves `no_bounce` standing, with a
/// finding: the bounce mailbox said nothing, and Graph could not tell.
pub(crate) async fn confirm_arrival(
    job: &Job,
    clients: &Clients,
    memory: &ProbeMemory,
    to: &EmailAddress,
    outcome: &mut tw_mailflow::Outcome,
    deadline: Instant,
) {
    if outcome.reason != Reason::NoBounce || clients.entra.app(&job.tenant).is_none() {
        return;
    }
    let mut arrival = ArrivalEvidence::default();
    let token = match token(job, clients, deadline).await {
        Ok(token) => token,
        Err(outcomes) => {
            if let Some(failed) = outcomes.into_iter().next() {
                arrival.exchanges = failed.evidence.exchanges;
                outcome
                    .evidence
                    .findings
                    .push(format!("arrival not checked: {}", failed.summary));
            }
            outcome.evidence.arrival = Some(arrival);
            return;
        }
    };
    let target = to.to_string();
    let user = memory
        .fact(
            job.tenant.as_str(),
            CheckKind::Identity,
            &target,
            "object_id",
        )
        .unwrap_or_else(|| target.clone());
    let call = Call {
        token: &token.value,
        tenant: job.context.login_name(),
        deadline,
    };
    let message_id = outcome.evidence.message_id.clone();
    let mut evidence = HttpEvidence::default();
    let found = loop {
        match graph::find_message(
            &clients.entra.graph,
            call,
            &user,
            &message_id,
            &mut evidence,
        )
        .await
        {
            Ok(Some(found)) => break Some(found),
            Ok(None) if Instant::now() + ARRIVAL_POLL + Duration::from_secs(1) < deadline => {
                tokio::time::sleep(ARRIVAL_POLL).await;
            }
            Ok(None) => break None,
            Err(GraphError::NotFound { code: Some(code) })
                if code == "MailboxNotEnabledForRESTAPI" =>
            {
                arrival.exchanges = evidence.exchanges;
                outcome.evidence.arrival = Some(arrival);
                outcome.reason = Reason::MailNotArrived;
                outcome.summary = format!(
                    "no DSN came back, and Graph says {target} has no active Exchange Online mailbox (MailboxNotEnabledForRESTAPI: inactive, soft-deleted or on-premises)"
                );
                return;
            }
            Err(err) => {
                arrival.exchanges = evidence.exchanges;
                outcome.evidence.arrival = Some(arrival);
                outcome
                    .evidence
                    .findings
                    .push(format!("arrival not confirmed through Graph: {err}"));
                return;
            }
        }
    };
    match found {
        Some(found) => {
            let sent = outcome.evidence.sent_at;
            arrival.found = true;
            arrival.received_at = found.received;
            arrival.latency_ms = match (sent, found.received) {
                (Some(sent), Some(received)) => Some(received.millis_since(sent)),
                _ => None,
            };
            match graph::delete_message(&clients.entra.graph, call, &user, &found.id, &mut evidence)
                .await
            {
                Ok(()) => arrival.deleted = true,
                Err(err) => outcome
                    .evidence
                    .findings
                    .push(format!("the probe message could not be deleted: {err}")),
            }
            let latency = arrival
                .latency_ms
                .map(|ms| format!(" after {:.1} s", ms as f64 / 1000.0))
                .unwrap_or_default();
            outcome.reason = Reason::MailArrived;
            outcome.summary = format!(
                "no DSN, and the probe message arrived in {target}'s mailbox{latency}{}",
                if arrival.deleted { "; deleted" } else { "" }
            );
        }
        None => {
            outcome.reason = Reason::MailNotArrived;
            outcome.summary = format!(
                "no DSN came back, but the probe message ({message_id}) is not in {target}'s mailbox"
            );
        }
    }
    arrival.exchanges = evidence.exchanges;
    outcome.evidence.arrival = Some(arrival);
}
