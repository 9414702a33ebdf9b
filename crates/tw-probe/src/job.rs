//! Jobs: what to probe, planned from config, and how one run turns into observations.
//!
//! A job is one (tenant, check, subject) at one interval. `smtp_rcpt` has one job per domain
//! with watched addresses (one SMTP session asks about all of them) and yields one
//! observation per address; `dns` has one job per domain.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use tracing::Instrument;
use tw_core::config::Config;
use tw_core::{
    CheckKind, DomainName, EmailAddress, Evidence, Observation, Reason, RecordSet, TenantName,
    Timestamp,
};

use crate::clients::Clients;
use crate::{dns, smtp_rcpt};

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub tenant: TenantName,
    pub check: CheckKind,
    pub subject: Subject,
    pub interval: Duration,
    pub timeout: Duration,
    /// MX host suffixes accepted besides Exchange Online's (a mail gateway in front).
    pub accepted_mx: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Subject {
    Domain(DomainName),
    Mailboxes {
        domain: DomainName,
        addresses: Vec<EmailAddress>,
    },
}

impl Subject {
    pub fn domain(&self) -> &DomainName {
        match self {
            Subject::Domain(domain) | Subject::Mailboxes { domain, .. } => domain,
        }
    }
}

impl Job {
    /// Stable identity across reloads: `tenant/check/domain`.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.tenant, self.check, self.subject.domain())
    }

    /// The targets this job reports on (observation `target` values).
    pub fn targets(&self) -> Vec<String> {
        match &self.subject {
            Subject::Domain(domain) => vec![domain.to_string()],
            Subject::Mailboxes { addresses, .. } => {
                addresses.iter().map(ToString::to_string).collect()
            }
        }
    }
}

/// Every job the config asks for, in config order.
pub fn plan(config: &Config) -> Vec<Job> {
    let mut jobs = Vec::new();
    for tenant in &config.tenants {
        if let Some(settings) = tenant.enabled_check(CheckKind::Dns) {
            for domain in tenant.domains() {
                jobs.push(Job {
                    tenant: tenant.name.clone(),
                    check: CheckKind::Dns,
                    subject: Subject::Domain(domain.clone()),
                    interval: settings.interval,
                    timeout: settings.timeout,
                    accepted_mx: tenant.accepted_mx.clone(),
                });
            }
        }
        if let Some(settings) = tenant.enabled_check(CheckKind::SmtpRcpt) {
            for domain in tenant.domains() {
                let addresses: Vec<EmailAddress> = tenant
                    .watch
                    .iter()
                    .filter(|a| a.domain() == domain)
                    .cloned()
                    .collect();
                if addresses.is_empty() {
                    continue;
                }
                jobs.push(Job {
                    tenant: tenant.name.clone(),
                    check: CheckKind::SmtpRcpt,
                    subject: Subject::Mailboxes {
                        domain: domain.clone(),
                        addresses,
                    },
                    interval: settings.interval,
                    timeout: settings.timeout,
                    accepted_mx: tenant.accepted_mx.clone(),
                });
            }
        }
    }
    jobs
}

/// Last-seen DNS record sets by (tenant, domain): the "previous" a drift is measured against.
/// Seeded from the store at start, updated after every run.
#[derive(Default)]
pub struct DnsMemory {
    sets: Mutex<HashMap<(String, String), RecordSet>>,
}

impl DnsMemory {
    pub fn seed(&self, tenant: &str, domain: &str, records: RecordSet) {
        self.sets
            .lock()
            .insert((tenant.to_owned(), domain.to_owned()), records);
    }

    fn get(&self, tenant: &str, domain: &str) -> Option<RecordSet> {
        self.sets
            .lock()
            .get(&(tenant.to_owned(), domain.to_owned()))
            .cloned()
    }

    /// Labels that failed this time keep their previous value, so one timeout does not
    /// erase what we know.
    fn update(&self, tenant: &str, domain: &str, records: &RecordSet) {
        let mut sets = self.sets.lock();
        let entry = sets
            .entry((tenant.to_owned(), domain.to_owned()))
            .or_default();
        entry.extend(records.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
}

/// Runs one job once, within its timeout, and returns its observations.
pub async fn run_job(
    job: &Job,
    clients: &Clients,
    memory: &DnsMemory,
    scheduled_for: Timestamp,
) -> Vec<Observation> {
    let span = tracing::info_span!("probe", tenant = %job.tenant, check = %job.check, target = %job.subject.domain());
    async {
        let started_at = Timestamp::now();
        let start = Instant::now();
        let deadline = start + job.timeout;
        let observation = |target: String, reason: Reason, summary: String, evidence: Evidence| Observation {
            tenant: job.tenant.clone(),
            check: job.check,
            target,
            scheduled_for,
            started_at,
            elapsed: start.elapsed(),
            status: reason.status(),
            reason,
            summary,
            evidence,
        };
        let observations: Vec<Observation> = match &job.subject {
            Subject::Domain(domain) => {
                let previous = memory.get(job.tenant.as_str(), domain.as_str());
                let outcome = dns::run(domain, previous.as_ref(), &job.accepted_mx, &clients.resolver, deadline).await;
                memory.update(job.tenant.as_str(), domain.as_str(), &outcome.evidence.records);
                vec![observation(domain.to_string(), outcome.reason, outcome.summary, Evidence::Dns(outcome.evidence))]
            }
            Subject::Mailboxes { domain, addresses } => {
                let outcome = smtp_rcpt::run(domain, addresses, clients, deadline).await;
                let evidence = Evidence::SmtpRcpt(outcome.evidence);
                outcome
                    .verdicts
                    .into_iter()
                    .map(|verdict| observation(verdict.address.to_string(), verdict.reason, verdict.summary, evidence.clone()))
                    .collect()
            }
        };
        for observation in &observations {
            tracing::debug!(target_name = %observation.target, status = %observation.status, reason = %observation.reason, elapsed_ms = observation.elapsed.as_millis() as u64, "Probe finished");
        }
        observations
    }
    .instrument(span)
    .await
}

/// What a job reports when the daemon stops before the probe finished: `unknown`, never
/// silence, so the history shows the gap for what it is.
pub fn shutdown_observations(
    job: &Job,
    scheduled_for: Timestamp,
    started_at: Timestamp,
    elapsed: Duration,
) -> Vec<Observation> {
    job.targets()
        .into_iter()
        .map(|target| Observation {
            tenant: job.tenant.clone(),
            check: job.check,
            target,
            scheduled_for,
            started_at,
            elapsed,
            status: Reason::Shutdown.status(),
            reason: Reason::Shutdown,
            summary: "the daemon shut down before the probe finished".to_owned(),
            evidence: Evidence::None,
        })
        .collect()
}
