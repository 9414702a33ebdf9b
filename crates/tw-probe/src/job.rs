//! Jobs: what to probe, planned from config, and how one run turns into observations.
//!
//! A job is one (tenant, check, subject) at one interval. `smtp_rcpt` has one job per domain
//! with watched addresses (one SMTP session asks about all of them) and yields one
//! observation per address; `dns`, `tenant` and `domain` have one job per domain; `realm` and
//! `identity` one per watched address; `signin`, `licence`, `admins` and `health` one per
//! tenant (`licence` also reports on each watched identity's mailbox plan).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use tracing::Instrument;
use tw_core::config::{Config, LicenceSettings, Tenant};
use tw_core::{
    CheckKind, DomainName, EmailAddress, Evidence, Observation, Reason, RecordSet, TenantName,
    Timestamp, REMEMBERED_FACTS,
};

use crate::clients::Clients;
use crate::{dns, entra, smtp_rcpt};

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub tenant: TenantName,
    pub check: CheckKind,
    pub subject: Subject,
    pub interval: Duration,
    pub timeout: Duration,
    /// MX host suffixes accepted besides Exchange Online's (a mail gateway in front).
    pub accepted_mx: Vec<String>,
    /// What the Entra ID and Graph checks need to know about the tenant.
    pub context: Arc<TenantContext>,
}

/// The tenant facts from config that the HTTP checks use.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantContext {
    /// The tenant id from config: the expected issuer of discovery and the token endpoint's
    /// tenant. Without it the primary domain stands in.
    pub tenant_id: Option<String>,
    pub primary_domain: DomainName,
    pub watch: Vec<EmailAddress>,
    pub licence: LicenceSettings,
}

impl TenantContext {
    fn of(tenant: &Tenant) -> TenantContext {
        TenantContext {
            tenant_id: tenant.tenant_id.clone(),
            primary_domain: tenant.domain.clone(),
            watch: tenant.watch.clone(),
            licence: tenant.licence.clone(),
        }
    }

    /// How the login endpoints name the tenant: its id when known, else its primary domain.
    pub fn login_name(&self) -> &str {
        self.tenant_id
            .as_deref()
            .unwrap_or_else(|| self.primary_domain.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Subject {
    /// `dns`, `tenant`, `domain`.
    Domain(DomainName),
    /// `smtp_rcpt`: every watched address of one domain in one session.
    Mailboxes {
        domain: DomainName,
        addresses: Vec<EmailAddress>,
    },
    /// `realm`, `identity`.
    Address(EmailAddress),
    /// `signin`, `licence`, `admins`, `health`: the tenant as a whole.
    Tenant,
}

impl Job {
    /// Stable identity across reloads: `tenant/check/subject`.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.tenant, self.check, self.subject_label())
    }

    /// The domain, address or tenant name the job is about (the span's `target`).
    pub fn subject_label(&self) -> String {
        match &self.subject {
            Subject::Domain(domain) | Subject::Mailboxes { domain, .. } => domain.to_string(),
            Subject::Address(address) => address.to_string(),
            Subject::Tenant => self.tenant.to_string(),
        }
    }

    /// The targets this job reports on (observation `target` values).
    pub fn targets(&self) -> Vec<String> {
        match &self.subject {
            Subject::Domain(domain) => vec![domain.to_string()],
            Subject::Mailboxes { addresses, .. } => {
                addresses.iter().map(ToString::to_string).collect()
            }
            Subject::Address(address) => vec![address.to_string()],
            Subject::Tenant if self.check == CheckKind::Licence => {
                std::iter::once(self.tenant.to_string())
                    .chain(self.context.watch.iter().map(ToString::to_string))
                    .collect()
            }
            Subject::Tenant => vec![self.tenant.to_string()],
        }
    }
}

/// Every job the config asks for, in config order.
pub fn plan(config: &Config) -> Vec<Job> {
    let mut jobs = Vec::new();
    for tenant in &config.tenants {
        let context = Arc::new(TenantContext::of(tenant));
        for kind in CheckKind::ALL {
            let Some(settings) = tenant.enabled_check(kind) else {
                continue;
            };
            let job = |subject: Subject| Job {
                tenant: tenant.name.clone(),
                check: kind,
                subject,
                interval: settings.interval,
                timeout: settings.timeout,
                accepted_mx: tenant.accepted_mx.clone(),
                context: Arc::clone(&context),
            };
            match kind {
                CheckKind::Dns | CheckKind::Tenant | CheckKind::Domain => {
                    jobs.extend(
                        tenant
                            .domains()
                            .map(|domain| job(Subject::Domain(domain.clone()))),
                    );
                }
                CheckKind::SmtpRcpt => {
                    for domain in tenant.domains() {
                        let addresses: Vec<EmailAddress> = tenant
                            .watch
                            .iter()
                            .filter(|a| a.domain() == domain)
                            .cloned()
                            .collect();
                        if !addresses.is_empty() {
                            jobs.push(job(Subject::Mailboxes {
                                domain: domain.clone(),
                                addresses,
                            }));
                        }
                    }
                }
                CheckKind::Realm | CheckKind::Identity => {
                    jobs.extend(
                        tenant
                            .watch
                            .iter()
                            .map(|address| job(Subject::Address(address.clone()))),
                    );
                }
                CheckKind::Signin | CheckKind::Licence | CheckKind::Admins | CheckKind::Health => {
                    jobs.push(job(Subject::Tenant));
                }
                CheckKind::Mailflow => {
                    jobs.extend(
                        tenant
                            .mailflow_to
                            .iter()
                            .map(|address| job(Subject::Address(address.clone()))),
                    );
                }
            }
        }
    }
    jobs
}

/// (tenant, check, target).
type FactKey = (String, CheckKind, String);

/// What probes remember between runs: the last DNS record set per (tenant, domain), the
/// "previous" a drift is measured against, and the facts HTTP checks learned per (tenant,
/// check, target) (`REMEMBERED_FACTS`: object ids, namespace types, tenant ids). Seeded from
/// the store at start, updated after every run.
#[derive(Default)]
pub struct ProbeMemory {
    sets: Mutex<HashMap<(String, String), RecordSet>>,
    facts: Mutex<HashMap<FactKey, BTreeMap<String, String>>>,
}

impl ProbeMemory {
    pub fn seed_dns(&self, tenant: &str, domain: &str, records: RecordSet) {
        self.sets
            .lock()
            .insert((tenant.to_owned(), domain.to_owned()), records);
    }

    pub fn seed_facts(
        &self,
        tenant: &str,
        check: CheckKind,
        target: &str,
        facts: BTreeMap<String, String>,
    ) {
        self.facts
            .lock()
            .insert((tenant.to_owned(), check, target.to_owned()), facts);
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

    /// A fact learned earlier about this target, if any.
    pub fn fact(&self, tenant: &str, check: CheckKind, target: &str, name: &str) -> Option<String> {
        self.facts
            .lock()
            .get(&(tenant.to_owned(), check, target.to_owned()))
            .and_then(|facts| facts.get(name).cloned())
    }

    /// Keeps the remembered facts an outcome carries; a run that learned nothing keeps the
    /// earlier values.
    fn learn(
        &self,
        tenant: &str,
        check: CheckKind,
        target: &str,
        facts: &BTreeMap<String, String>,
    ) {
        let learned: Vec<(String, String)> = REMEMBERED_FACTS
            .iter()
            .filter_map(|key| {
                facts
                    .get(*key)
                    .map(|value| ((*key).to_owned(), value.clone()))
            })
            .collect();
        if learned.is_empty() {
            return;
        }
        self.facts
            .lock()
            .entry((tenant.to_owned(), check, target.to_owned()))
            .or_default()
            .extend(learned);
    }
}

/// Runs one job once, within its timeout, and returns its observations.
pub async fn run_job(
    job: &Job,
    clients: &Clients,
    memory: &ProbeMemory,
    scheduled_for: Timestamp,
) -> Vec<Observation> {
    let span = tracing::info_span!("probe", tenant = %job.tenant, check = %job.check, target = %job.subject_label());
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
        let observations: Vec<Observation> = match (job.check, &job.subject) {
            (CheckKind::Dns, Subject::Domain(domain)) => {
                let previous = memory.get(job.tenant.as_str(), domain.as_str());
                let outcome = dns::run(domain, previous.as_ref(), &job.accepted_mx, &clients.resolver, deadline).await;
                memory.update(job.tenant.as_str(), domain.as_str(), &outcome.evidence.records);
                vec![observation(domain.to_string(), outcome.reason, outcome.summary, Evidence::Dns(outcome.evidence))]
            }
            (CheckKind::Mailflow, Subject::Address(to)) => match &clients.mailflow {
                Some(mailflow) => {
                    // Each run holds an IMAP session on the bounce mailbox for its whole wait;
                    // IMAP servers cap sessions per user (Dovecot: 10), so runs share it in turn.
                    let permit = clients
                        .destinations
                        .acquire(&format!("imap:{}", mailflow.config.imap_host))
                        .await;
                    let mut outcome = tw_mailflow::run(&mailflow.config, &mailflow.clients, &job.tenant, to, deadline).await;
                    // The Graph lookup needs no IMAP session.
                    drop(permit);
                    entra::confirm_arrival(job, clients, memory, to, &mut outcome, deadline).await;
                    vec![observation(outcome.target, outcome.reason, outcome.summary, Evidence::Mailflow(Box::new(outcome.evidence)))]
                }
                // `plan` only makes mailflow jobs when [mailflow] exists, and Clients is
                // built from the same config; an error log beats a made-up verdict.
                None => {
                    tracing::error!("mailflow job without [mailflow] clients");
                    Vec::new()
                }
            },
            (CheckKind::SmtpRcpt, Subject::Mailboxes { domain, addresses }) => {
                let outcome = smtp_rcpt::run(domain, addresses, clients, deadline).await;
                let evidence = Evidence::SmtpRcpt(outcome.evidence);
                outcome
                    .verdicts
                    .into_iter()
                    .map(|verdict| observation(verdict.address.to_string(), verdict.reason, verdict.summary, evidence.clone()))
                    .collect()
            }
            // `plan` pairs Dns with Domain and SmtpRcpt with Mailboxes; the HTTP checks take
            // every other pairing.
            _ => entra::run(job, clients, memory, deadline)
                .await
                .into_iter()
                .map(|outcome| {
                    memory.learn(job.tenant.as_str(), job.check, &outcome.target, &outcome.evidence.facts);
                    observation(outcome.target, outcome.reason, outcome.summary, Evidence::Http(outcome.evidence))
                })
                .collect(),
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
