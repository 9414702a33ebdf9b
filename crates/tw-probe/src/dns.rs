//! The `dns` check: are the records that route mail and sign-in to Microsoft 365 in place,
//! and did they change since the last run?
//!
//! Lookups run concurrently under the probe deadline; `classify_dns` folds what came back
//! (and the previous record set) into one verdict with a finding per record.

use std::collections::BTreeMap;

use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::proto::{ProtoError, ProtoErrorKind};
use hickory_resolver::{ResolveError, TokioResolver};
use tokio::time::Instant;
use tw_core::{DnsEvidence, DnsFinding, DomainName, Reason, RecordSet, Status};

/// Record labels, in the order findings are reported.
pub const LABELS: [&str; 7] = [
    "mx",
    "spf",
    "ms_verification",
    "dkim_selector1",
    "dkim_selector2",
    "dmarc",
    "autodiscover",
];

/// MX targets that are Exchange Online Protection, per cloud (reference §4.1).
const MICROSOFT_MX_SUFFIXES: [&str; 4] = [
    ".mail.protection.outlook.com",
    ".mx.microsoft",
    ".mail.protection.office365.us",
    ".mail.protection.partner.outlook.cn",
];
const SPF_INCLUDES: [&str; 3] = [
    "spf.protection.outlook.com",
    "spf.protection.office365.us",
    "spf.protection.partner.outlook.cn",
];

/// The result of one lookup.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Records(Vec<String>),
    /// The name exists but has no record of this type (NODATA).
    NoRecords,
    NxDomain,
    Failed(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct DnsOutcome {
    pub reason: Reason,
    pub summary: String,
    pub evidence: DnsEvidence,
}

/// Runs every lookup for `domain` and classifies the answers against `previous`.
pub async fn run(
    domain: &DomainName,
    previous: Option<&RecordSet>,
    accepted_mx: &[String],
    resolver: &TokioResolver,
    deadline: Instant,
) -> DnsOutcome {
    let fqdn = |prefix: &str| {
        if prefix.is_empty() {
            format!("{domain}.")
        } else {
            format!("{prefix}.{domain}.")
        }
    };
    // Each lookup has the deadline on its own, so one slow label (a lame `_dmarc`) does not
    // throw away an MX answer that already arrived.
    let (mx, apex_txt, dkim1, dkim2, dmarc, autodiscover) = tokio::join!(
        lookup(resolver, fqdn(""), RecordType::MX, deadline),
        lookup(resolver, fqdn(""), RecordType::TXT, deadline),
        lookup(
            resolver,
            fqdn("selector1._domainkey"),
            RecordType::CNAME,
            deadline
        ),
        lookup(
            resolver,
            fqdn("selector2._domainkey"),
            RecordType::CNAME,
            deadline
        ),
        lookup(resolver, fqdn("_dmarc"), RecordType::TXT, deadline),
        lookup(resolver, fqdn("autodiscover"), RecordType::CNAME, deadline),
    );
    let (spf, ms) = split_apex_txt(&apex_txt);
    let dmarc = filter_txt(&dmarc, |txt| {
        txt.to_ascii_lowercase().starts_with("v=dmarc1")
    });
    let answers = BTreeMap::from([
        ("mx", mx),
        ("spf", spf),
        ("ms_verification", ms),
        ("dkim_selector1", dkim1),
        ("dkim_selector2", dkim2),
        ("dmarc", dmarc),
        ("autodiscover", autodiscover),
    ]);
    classify_dns(domain, &answers, previous, accepted_mx)
}

async fn lookup(
    resolver: &TokioResolver,
    name: String,
    record_type: RecordType,
    deadline: Instant,
) -> Answer {
    let Ok(result) = tokio::time::timeout_at(deadline, resolver.lookup(name, record_type)).await
    else {
        return Answer::Failed("no answer within the probe timeout".into());
    };
    match result {
        Ok(lookup) => {
            let mut values: Vec<String> = lookup
                .record_iter()
                .filter(|record| record.record_type() == record_type)
                .filter_map(|record| render(record.data()))
                .collect();
            values.sort();
            values.dedup();
            if values.is_empty() {
                Answer::NoRecords
            } else {
                Answer::Records(values)
            }
        }
        Err(err) => classify_error(&err),
    }
}

/// What a failed lookup says about the name. Absence only when the server said so: NXDOMAIN,
/// or NOERROR with no records (NODATA). hickory reports SERVFAIL, REFUSED and the other error
/// codes as "no records found" too; those are a failure to look, never a missing record.
pub(crate) fn classify_error(err: &ResolveError) -> Answer {
    match err.proto().map(ProtoError::kind) {
        Some(ProtoErrorKind::NoRecordsFound { response_code, .. }) => match *response_code {
            ResponseCode::NXDomain => Answer::NxDomain,
            ResponseCode::NoError => Answer::NoRecords,
            code => Answer::Failed(format!("the server answered {code:?} ({code})")),
        },
        _ => Answer::Failed(err.to_string()),
    }
}

fn render(data: &RData) -> Option<String> {
    match data {
        RData::MX(mx) => Some(format!(
            "{} {}",
            mx.preference(),
            mx.exchange().to_utf8().to_ascii_lowercase()
        )),
        RData::CNAME(cname) => Some(cname.0.to_utf8().to_ascii_lowercase()),
        RData::TXT(txt) => Some(
            txt.txt_data()
                .iter()
                .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
                .collect::<String>(),
        ),
        _ => None,
    }
}

fn filter_txt(answer: &Answer, keep: impl Fn(&str) -> bool) -> Answer {
    match answer {
        Answer::Records(values) => {
            let kept: Vec<String> = values.iter().filter(|v| keep(v)).cloned().collect();
            if kept.is_empty() {
                Answer::NoRecords
            } else {
                Answer::Records(kept)
            }
        }
        other => other.clone(),
    }
}

fn split_apex_txt(apex: &Answer) -> (Answer, Answer) {
    (
        filter_txt(apex, |txt| txt.to_ascii_lowercase().starts_with("v=spf1")),
        filter_txt(apex, |txt| txt.starts_with("MS=")),
    )
}

/// Folds the answers into one verdict. Pure: the whole decision table lives here.
pub fn classify_dns(
    domain: &DomainName,
    answers: &BTreeMap<&str, Answer>,
    previous: Option<&RecordSet>,
    accepted_mx: &[String],
) -> DnsOutcome {
    let mut evidence = DnsEvidence {
        domain: domain.to_string(),
        ..DnsEvidence::default()
    };
    for (label, answer) in answers {
        match answer {
            Answer::Records(values) => {
                evidence.records.insert((*label).to_owned(), values.clone());
            }
            Answer::NoRecords | Answer::NxDomain => {
                evidence.records.insert((*label).to_owned(), Vec::new());
            }
            Answer::Failed(error) => {
                evidence
                    .lookup_errors
                    .insert((*label).to_owned(), error.clone());
            }
        }
    }

    // Candidate verdicts, most important first; the first of the worst status wins.
    let mut verdicts: Vec<(Reason, String)> = Vec::new();
    let finding = |evidence: &mut DnsEvidence, record: &str, status: Status, message: String| {
        evidence.findings.push(DnsFinding {
            record: record.to_owned(),
            status: status.as_str().to_owned(),
            message,
        });
    };

    match answers.get("mx") {
        Some(Answer::NxDomain) => {
            finding(
                &mut evidence,
                "mx",
                Status::Critical,
                format!("{domain} does not exist (NXDOMAIN)"),
            );
            verdicts.push((
                Reason::DomainNotFound,
                format!("{domain} does not exist in DNS (NXDOMAIN)"),
            ));
        }
        Some(Answer::NoRecords) => {
            finding(&mut evidence, "mx", Status::Critical, "no MX record".into());
            verdicts.push((
                Reason::MxMissing,
                format!("{domain} has no MX record: inbound mail cannot be delivered"),
            ));
        }
        Some(Answer::Records(values)) => {
            let foreign: Vec<&String> = values
                .iter()
                .filter(|mx| !is_expected_mx(mx, accepted_mx))
                .collect();
            if foreign.is_empty() {
                finding(
                    &mut evidence,
                    "mx",
                    Status::Ok,
                    format!("MX points at Exchange Online: {}", values.join(", ")),
                );
            } else {
                let list = foreign
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                finding(
                    &mut evidence,
                    "mx",
                    Status::Critical,
                    format!("MX neither Microsoft's nor an accepted gateway: {list}"),
                );
                verdicts.push((
                    Reason::MxNotMicrosoft,
                    format!("MX of {domain} points neither at Exchange Online nor at an accepted gateway: {list}"),
                ));
            }
            if values.len() > 1 {
                finding(
                    &mut evidence,
                    "mx",
                    Status::Ok,
                    format!(
                        "{} MX records; Exchange Online supports one per domain",
                        values.len()
                    ),
                );
            }
        }
        Some(Answer::Failed(_)) | None => {
            let error = match answers.get("mx") {
                Some(Answer::Failed(error)) => error.clone(),
                _ => "not looked up".to_owned(),
            };
            finding(
                &mut evidence,
                "mx",
                Status::Unknown,
                format!("MX lookup failed: {error}"),
            );
            verdicts.push((
                Reason::DnsUnavailable,
                format!("MX lookup for {domain} failed: {error}"),
            ));
        }
    }

    let drift = drift(&evidence.records, previous);
    if !drift.is_empty() {
        verdicts.push((
            Reason::DnsDrift,
            format!("DNS changed: {}", drift.join("; ")),
        ));
    }
    evidence.drift = drift;

    let domain_exists = !matches!(answers.get("mx"), Some(Answer::NxDomain));
    if domain_exists {
        let checks: [Expectation; 5] = [
            (
                "spf",
                Reason::SpfMissing,
                "SPF does not include Exchange Online (spf.protection.outlook.com)",
                spf_includes_microsoft,
            ),
            (
                "dkim_selector1",
                Reason::DkimMissing,
                "DKIM selector1._domainkey CNAME missing",
                |_| true,
            ),
            (
                "dkim_selector2",
                Reason::DkimMissing,
                "DKIM selector2._domainkey CNAME missing",
                |_| true,
            ),
            (
                "dmarc",
                Reason::DmarcMissing,
                "no DMARC record at _dmarc",
                |_| true,
            ),
            (
                "autodiscover",
                Reason::AutodiscoverMissing,
                "autodiscover CNAME missing",
                |_| true,
            ),
        ];
        for (label, reason, missing, acceptable) in checks {
            match answers.get(label) {
                Some(Answer::Records(values)) if values.iter().any(|v| acceptable(v)) => {
                    let detail = if label == "dmarc" {
                        dmarc_policy(values)
                    } else {
                        values.join(", ")
                    };
                    finding(&mut evidence, label, Status::Ok, detail);
                }
                Some(Answer::Failed(error)) => {
                    finding(
                        &mut evidence,
                        label,
                        Status::Unknown,
                        format!("lookup failed: {error}"),
                    );
                    verdicts.push((
                        Reason::DnsUnavailable,
                        format!("{label} lookup for {domain} failed: {error}"),
                    ));
                }
                _ => {
                    finding(&mut evidence, label, Status::Warning, missing.to_owned());
                    verdicts.push((reason, format!("{domain}: {missing}")));
                }
            }
        }
        if let Some(Answer::Records(values)) = answers.get("ms_verification") {
            finding(
                &mut evidence,
                "ms_verification",
                Status::Ok,
                values.join(", "),
            );
        }
    }

    let worst = verdicts
        .iter()
        .map(|(reason, _)| reason.status())
        .fold(Status::Ok, Status::worst);
    let (reason, summary) = verdicts
        .into_iter()
        .find(|(reason, _)| reason.status() == worst)
        .unwrap_or_else(|| {
            (
                Reason::DnsRecordsOk,
                format!("{domain}: MX, SPF, DKIM, DMARC and autodiscover as expected"),
            )
        });
    DnsOutcome {
        reason,
        summary,
        evidence,
    }
}

/// A record that should exist: its label, the reason if it does not, the finding text, and
/// which values count as present.
type Expectation = (&'static str, Reason, &'static str, fn(&str) -> bool);

/// An MX value (`pref host.`) is expected when its host is Exchange Online's or under one of
/// the tenant's accepted gateway suffixes.
fn is_expected_mx(mx: &str, accepted_mx: &[String]) -> bool {
    let host = mx
        .split_whitespace()
        .last()
        .unwrap_or_default()
        .trim_end_matches('.');
    is_exchange_online_host(host)
        || accepted_mx.iter().any(|suffix| {
            let suffix = suffix.trim_start_matches('.');
            host == suffix
                || host
                    .strip_suffix(suffix)
                    .is_some_and(|rest| rest.ends_with('.'))
        })
}

/// True for MX hosts of Exchange Online Protection in every cloud (reference §4.1).
pub(crate) fn is_exchange_online_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    MICROSOFT_MX_SUFFIXES
        .iter()
        .any(|suffix| host.ends_with(suffix))
}

fn spf_includes_microsoft(spf: &str) -> bool {
    // Microsoft's own docs once showed a stray space after `include:`; accept it.
    let normalised = spf.to_ascii_lowercase().replace("include: ", "include:");
    normalised.split_whitespace().any(|term| {
        let term = term.trim_start_matches(['+', '~', '?']);
        SPF_INCLUDES
            .iter()
            .any(|include| term == format!("include:{include}"))
    })
}

fn dmarc_policy(values: &[String]) -> String {
    let policy = values
        .iter()
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .find_map(|tag| tag.strip_prefix("p="))
        .unwrap_or("(none given)");
    format!("DMARC policy p={policy}")
}

/// Labels whose values changed against the previous set. Labels missing on either side
/// (a failed lookup) are not compared: a timeout is not a change.
fn drift(current: &RecordSet, previous: Option<&RecordSet>) -> Vec<String> {
    let Some(previous) = previous else {
        return Vec::new();
    };
    LABELS
        .iter()
        .filter_map(|label| {
            let now = current.get(*label)?;
            let before = previous.get(*label)?;
            (now != before)
                .then(|| format!("{label}: [{}] -> [{}]", before.join(", "), now.join(", ")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(values: &[&str]) -> Answer {
        Answer::Records(values.iter().map(|v| v.to_string()).collect())
    }

    fn healthy() -> BTreeMap<&'static str, Answer> {
        BTreeMap::from([
            (
                "mx",
                records(&["0 contoso-com.mail.protection.outlook.com."]),
            ),
            (
                "spf",
                records(&["v=spf1 include:spf.protection.outlook.com -all"]),
            ),
            ("ms_verification", records(&["MS=ms12345678"])),
            (
                "dkim_selector1",
                records(&["selector1-contoso-com._domainkey.contoso.onmicrosoft.com."]),
            ),
            (
                "dkim_selector2",
                records(&["selector2-contoso-com._domainkey.contoso.onmicrosoft.com."]),
            ),
            (
                "dmarc",
                records(&["v=DMARC1; p=reject; rua=mailto:d@contoso.com"]),
            ),
            ("autodiscover", records(&["autodiscover.outlook.com."])),
        ])
    }

    fn check(change: impl FnOnce(&mut BTreeMap<&'static str, Answer>), expect: &str) {
        let mut answers = healthy();
        change(&mut answers);
        let domain = DomainName::parse("contoso.com").unwrap();
        let outcome = classify_dns(&domain, &answers, None, &[]);
        assert_eq!(outcome.reason.as_str(), expect, "{}", outcome.summary);
    }

    #[test]
    fn answers_classify_into_one_verdict() {
        check(|_| {}, "dns_records_ok");
        check(
            |a| {
                a.insert("mx", Answer::NoRecords);
            },
            "mx_missing",
        );
        check(
            |a| {
                a.insert("mx", Answer::NxDomain);
            },
            "domain_not_found",
        );
        check(
            |a| {
                a.insert("mx", records(&["10 mx.parking-provider.example."]));
            },
            "mx_not_microsoft",
        );
        check(
            |a| {
                a.insert("mx", records(&["0 contoso-com.o-v1.mx.microsoft."]));
            },
            "dns_records_ok",
        );
        check(
            |a| {
                a.insert("mx", Answer::Failed("timeout".into()));
            },
            "dns_unavailable",
        );
        check(
            |a| {
                a.insert("spf", records(&["v=spf1 include:_spf.google.com -all"]));
            },
            "spf_missing",
        );
        check(
            |a| {
                a.insert(
                    "spf",
                    records(&["v=spf1 include: spf.protection.outlook.com ~all"]),
                );
            },
            "dns_records_ok",
        );
        check(
            |a| {
                a.insert("dkim_selector2", Answer::NoRecords);
            },
            "dkim_missing",
        );
        check(
            |a| {
                a.insert("dmarc", Answer::NxDomain);
            },
            "dmarc_missing",
        );
        check(
            |a| {
                a.insert("autodiscover", Answer::NoRecords);
            },
            "autodiscover_missing",
        );
        check(
            |a| {
                a.insert("ms_verification", Answer::NoRecords);
            },
            "dns_records_ok",
        );
        // A failed side lookup is unknown only when nothing positive is wrong.
        check(
            |a| {
                a.insert("dmarc", Answer::Failed("SERVFAIL".into()));
            },
            "dns_unavailable",
        );
        check(
            |a| {
                a.insert("dmarc", Answer::Failed("SERVFAIL".into()));
                a.insert("spf", Answer::NoRecords);
            },
            "spf_missing",
        );
        check(
            |a| {
                a.insert("mx", Answer::NoRecords);
                a.insert("dkim_selector1", Answer::NoRecords);
            },
            "mx_missing",
        );
    }

    #[test]
    fn an_accepted_gateway_mx_is_expected_but_only_under_its_suffix() {
        let domain = DomainName::parse("contoso.com").unwrap();
        let mut answers = healthy();
        answers.insert("mx", records(&["10 eu-smtp-inbound-1.mimecast.com."]));
        let gateway = ["mimecast.com".to_owned()];
        assert_eq!(
            classify_dns(&domain, &answers, None, &gateway).reason,
            Reason::DnsRecordsOk
        );
        assert_eq!(
            classify_dns(&domain, &answers, None, &[]).reason,
            Reason::MxNotMicrosoft
        );
        answers.insert("mx", records(&["10 evilmimecast.com."]));
        assert_eq!(
            classify_dns(&domain, &answers, None, &gateway).reason,
            Reason::MxNotMicrosoft
        );
    }

    #[test]
    fn drift_is_reported_against_the_previous_set_but_not_for_failed_lookups() {
        let domain = DomainName::parse("contoso.com").unwrap();
        let first = classify_dns(&domain, &healthy(), None, &[]);
        let mut changed = healthy();
        changed.insert("dmarc", records(&["v=DMARC1; p=none"]));
        changed.insert("spf", Answer::Failed("timeout".into()));
        let second = classify_dns(&domain, &changed, Some(&first.evidence.records), &[]);
        assert_eq!(second.reason, Reason::DnsDrift, "{}", second.summary);
        assert_eq!(
            second.evidence.drift,
            ["dmarc: [v=DMARC1; p=reject; rua=mailto:d@contoso.com] -> [v=DMARC1; p=none]"]
        );
        let same = classify_dns(&domain, &healthy(), Some(&first.evidence.records), &[]);
        assert_eq!(same.reason, Reason::DnsRecordsOk);
    }
}
