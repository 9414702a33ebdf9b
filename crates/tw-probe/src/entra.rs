//! The HTTP checks (tenant, realm, domain, signin, identity, licence, admins, health): picks
//! the right `tw_entra` probe for a job and gives it what it needs — the shared HTTP client,
//! the configured endpoints, the tenant's app and token, and what earlier runs learned.
//!
//! A Graph check first needs a token: when the token endpoint refuses, the check reports
//! `no_token` (unknown) with the token exchange as its evidence, and the signin check of the
//! same tenant carries the classified verdict. That way one revoked consent is one critical
//! alert, not five.

use tokio::time::Instant;
use tw_core::{CheckKind, HttpEvidence, Reason, Timestamp};
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
                    context.credential_expires,
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
            match (job.check, &job.subject) {
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
            }
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
