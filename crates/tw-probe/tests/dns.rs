//! The `dns` check against the authoritative DNS simulator on loopback: every verdict here
//! comes from real lookups (UDP, TCP fallback) by the probe's own resolver, built from a parsed
//! config and run through `tw_probe::run_job`.
//!
//! The resolver caches answers up to their TTL, so every run builds fresh `Clients`; the
//! `ProbeMemory` (what drift is measured against) is what carries over between runs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/sims.rs"]
mod support;

use std::time::Duration;

use tokio::time::Instant;
use tw_core::{CheckKind, DnsEvidence, Evidence, Observation, Reason, Status};
use tw_probe::ProbeMemory;
use tw_sim::dns::{DnsFault, SimRecord};

use support::{only, run_check, tenant, Sims};

const DOMAIN: &str = "contoso.com";
const MX: &str = "0 contoso-com.mail.protection.outlook.com.";
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

async fn contoso() -> Sims {
    let sims = Sims::start().await;
    sims.dns.add_microsoft_365_domain(DOMAIN);
    sims
}

/// Runs the `dns` job for contoso once, against `memory`.
async fn probe_with(sims: &Sims, memory: &ProbeMemory) -> Observation {
    let config = sims.config(&tenant("contoso", DOMAIN, &[]));
    let observation = only(run_check(&config, CheckKind::Dns, memory).await);
    assert_eq!(observation.check, CheckKind::Dns);
    assert_eq!(observation.tenant.as_str(), "contoso");
    assert_eq!(observation.target, DOMAIN);
    assert_eq!(observation.status, observation.reason.status());
    observation
}

async fn probe(sims: &Sims) -> Observation {
    probe_with(sims, &ProbeMemory::default()).await
}

fn evidence(observation: &Observation) -> &DnsEvidence {
    match &observation.evidence {
        Evidence::Dns(evidence) => evidence,
        other => panic!("expected DNS evidence, got {other:?}"),
    }
}

fn assert_verdict(observation: &Observation, status: Status, reason: Reason) {
    assert_eq!(
        (observation.status, observation.reason),
        (status, reason),
        "{}\n{:#?}",
        observation.summary,
        evidence(observation)
    );
}

/// `(status, message)` of the finding for `record`; panics when there is none.
fn finding<'a>(observation: &'a Observation, record: &str) -> (&'a str, &'a str) {
    evidence(observation)
        .findings
        .iter()
        .find(|f| f.record == record)
        .map(|f| (f.status.as_str(), f.message.as_str()))
        .unwrap_or_else(|| panic!("no finding for {record}: {:#?}", evidence(observation)))
}

fn records<'a>(observation: &'a Observation, label: &str) -> &'a [String] {
    evidence(observation)
        .records
        .get(label)
        .unwrap_or_else(|| panic!("no records for {label}: {:#?}", evidence(observation)))
}

#[tokio::test]
async fn healthy_microsoft_365_domain_is_ok_with_a_finding_per_record() {
    let sims = contoso().await;

    let observation = probe(&sims).await;

    assert_verdict(&observation, Status::Ok, Reason::DnsRecordsOk);
    assert!(
        observation.summary.contains(DOMAIN),
        "{}",
        observation.summary
    );
    let evidence = evidence(&observation);
    assert_eq!(evidence.domain, DOMAIN);
    assert!(
        evidence.lookup_errors.is_empty(),
        "{:?}",
        evidence.lookup_errors
    );
    assert!(evidence.drift.is_empty());
    assert_eq!(records(&observation, "mx"), [MX]);
    assert_eq!(
        records(&observation, "spf"),
        ["v=spf1 include:spf.protection.outlook.com -all"]
    );
    assert_eq!(records(&observation, "ms_verification"), ["MS=ms12345678"]);
    assert_eq!(
        records(&observation, "dkim_selector1"),
        ["selector1-contoso-com._domainkey.contoso.onmicrosoft.com."]
    );
    assert_eq!(
        records(&observation, "dkim_selector2"),
        ["selector2-contoso-com._domainkey.contoso.onmicrosoft.com."]
    );
    assert_eq!(
        records(&observation, "dmarc"),
        ["v=DMARC1; p=reject; rua=mailto:dmarc@contoso.com"]
    );
    assert_eq!(
        records(&observation, "autodiscover"),
        ["autodiscover.outlook.com."]
    );

    let findings: Vec<(&str, &str)> = evidence
        .findings
        .iter()
        .map(|f| (f.record.as_str(), f.status.as_str()))
        .collect();
    assert_eq!(
        findings,
        [
            ("mx", "ok"),
            ("spf", "ok"),
            ("dkim_selector1", "ok"),
            ("dkim_selector2", "ok"),
            ("dmarc", "ok"),
            ("autodiscover", "ok"),
            ("ms_verification", "ok"),
        ]
    );
    assert_eq!(
        finding(&observation, "mx").1,
        "MX points at Exchange Online: 0 contoso-com.mail.protection.outlook.com."
    );
    assert_eq!(finding(&observation, "dmarc").1, "DMARC policy p=reject");
}

#[tokio::test]
async fn removed_mx_is_critical_mx_missing() {
    let sims = contoso().await;
    sims.dns.remove(DOMAIN, "MX");

    let observation = probe(&sims).await;

    assert_verdict(&observation, Status::Critical, Reason::MxMissing);
    assert!(
        observation.summary.contains("has no MX record"),
        "{}",
        observation.summary
    );
    assert!(records(&observation, "mx").is_empty());
    assert_eq!(finding(&observation, "mx"), ("critical", "no MX record"));
    // The rest of the domain still answers.
    assert_eq!(finding(&observation, "spf").0, "ok");
}

#[tokio::test]
async fn mx_moved_away_from_microsoft_is_critical_mx_not_microsoft() {
    let sims = contoso().await;
    sims.dns.set(
        DOMAIN,
        vec![SimRecord::Mx {
            preference: 10,
            exchange: "mx.parking-provider.example".to_owned(),
        }],
    );

    let observation = probe(&sims).await;

    assert_verdict(&observation, Status::Critical, Reason::MxNotMicrosoft);
    assert!(
        observation
            .summary
            .contains("10 mx.parking-provider.example."),
        "{}",
        observation.summary
    );
    assert_eq!(
        records(&observation, "mx"),
        ["10 mx.parking-provider.example."]
    );
    assert_eq!(
        finding(&observation, "mx"),
        (
            "critical",
            "MX neither Microsoft's nor an accepted gateway: 10 mx.parking-provider.example."
        )
    );
}

#[tokio::test]
async fn deleted_domain_is_critical_domain_not_found() {
    let sims = contoso().await;
    for name in [
        DOMAIN,
        "autodiscover.contoso.com",
        "selector1._domainkey.contoso.com",
        "selector2._domainkey.contoso.com",
        "_dmarc.contoso.com",
    ] {
        sims.dns.remove_name(name);
    }

    let observation = probe(&sims).await;

    assert_verdict(&observation, Status::Critical, Reason::DomainNotFound);
    assert!(
        observation.summary.contains("NXDOMAIN"),
        "{}",
        observation.summary
    );
    assert_eq!(finding(&observation, "mx").0, "critical");
    // A domain that does not exist gets one finding, not a warning per missing record.
    assert_eq!(evidence(&observation).findings.len(), 1);
    assert!(evidence(&observation).lookup_errors.is_empty());
}

#[tokio::test]
async fn missing_dkim_selector2_is_warning_dkim_missing() {
    let sims = contoso().await;
    sims.dns.remove_name("selector2._domainkey.contoso.com");

    let observation = probe(&sims).await;

    assert_verdict(&observation, Status::Warning, Reason::DkimMissing);
    assert!(
        observation.summary.contains("selector2"),
        "{}",
        observation.summary
    );
    assert_eq!(
        finding(&observation, "dkim_selector2"),
        ("warning", "DKIM selector2._domainkey CNAME missing")
    );
    assert_eq!(finding(&observation, "dkim_selector1").0, "ok");
    assert_eq!(finding(&observation, "mx").0, "ok");
}

#[tokio::test]
async fn missing_dmarc_is_warning_dmarc_missing() {
    let sims = contoso().await;
    sims.dns.remove_name("_dmarc.contoso.com");

    let observation = probe(&sims).await;

    assert_verdict(&observation, Status::Warning, Reason::DmarcMissing);
    assert_eq!(
        finding(&observation, "dmarc"),
        ("warning", "no DMARC record at _dmarc")
    );
    assert!(records(&observation, "dmarc").is_empty());
}

#[tokio::test]
async fn changed_dmarc_policy_is_warning_dns_drift_against_the_previous_run() {
    let sims = contoso().await;
    let memory = ProbeMemory::default();
    let first = probe_with(&sims, &memory).await;
    assert_verdict(&first, Status::Ok, Reason::DnsRecordsOk);

    sims.dns.set(
        "_dmarc.contoso.com",
        vec![SimRecord::Txt("v=DMARC1; p=none".to_owned())],
    );
    let second = probe_with(&sims, &memory).await;

    assert_verdict(&second, Status::Warning, Reason::DnsDrift);
    assert_eq!(
        evidence(&second).drift,
        ["dmarc: [v=DMARC1; p=reject; rua=mailto:dmarc@contoso.com] -> [v=DMARC1; p=none]"]
    );
    assert!(second.summary.contains("dmarc:"), "{}", second.summary);
    assert_eq!(finding(&second, "dmarc"), ("ok", "DMARC policy p=none"));

    // The new set is remembered: a third run with no change is quiet again.
    let third = probe_with(&sims, &memory).await;
    assert_verdict(&third, Status::Ok, Reason::DnsRecordsOk);
    assert!(evidence(&third).drift.is_empty());
}

#[tokio::test]
async fn silent_dns_server_is_unknown_dns_unavailable_within_the_timeout() {
    let sims = contoso().await;
    sims.dns.set_fault(DnsFault::Drop);

    let start = Instant::now();
    let observation = probe(&sims).await;
    let took = start.elapsed();

    assert_verdict(&observation, Status::Unknown, Reason::DnsUnavailable);
    assert!(
        took < PROBE_TIMEOUT + Duration::from_secs(1),
        "took {took:?}"
    );
    assert!(observation.elapsed < PROBE_TIMEOUT + Duration::from_secs(1));
    let evidence = evidence(&observation);
    // Nothing answered, so nothing is claimed about any record.
    assert!(evidence.records.is_empty(), "{:?}", evidence.records);
    assert!(
        evidence.lookup_errors.contains_key("mx"),
        "{:?}",
        evidence.lookup_errors
    );
    assert_eq!(finding(&observation, "mx").0, "unknown");
    assert!(sims.dns.queries() > 0);
}

#[tokio::test]
async fn servfail_is_unknown_dns_unavailable_not_a_missing_record() {
    let sims = contoso().await;
    sims.dns.set_fault(DnsFault::ServFail);

    let observation = probe(&sims).await;

    assert_verdict(&observation, Status::Unknown, Reason::DnsUnavailable);
    let evidence = evidence(&observation);
    assert!(evidence.records.is_empty(), "{:?}", evidence.records);
    let error = evidence.lookup_errors.get("mx").expect("MX lookup error");
    assert!(error.to_ascii_lowercase().contains("servfail"), "{error}");
    assert!(
        observation.summary.contains("MX lookup"),
        "{}",
        observation.summary
    );
    assert!(
        evidence.findings.iter().all(|f| f.status == "unknown"),
        "{:#?}",
        evidence.findings
    );
}

#[tokio::test]
async fn failed_run_does_not_erase_the_remembered_records_or_report_drift() {
    let sims = contoso().await;
    let memory = ProbeMemory::default();
    assert_verdict(
        &probe_with(&sims, &memory).await,
        Status::Ok,
        Reason::DnsRecordsOk,
    );

    sims.dns.set_fault(DnsFault::ServFail);
    let failed = probe_with(&sims, &memory).await;
    assert_verdict(&failed, Status::Unknown, Reason::DnsUnavailable);
    assert!(evidence(&failed).drift.is_empty());

    sims.dns.set_fault(DnsFault::None);
    let recovered = probe_with(&sims, &memory).await;
    assert_verdict(&recovered, Status::Ok, Reason::DnsRecordsOk);
    assert!(evidence(&recovered).drift.is_empty());
}
