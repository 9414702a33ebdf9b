//! Microsoft Graph: the client every Graph check shares, and the checks themselves
//! (identity, licence, admins, health).
//!
//! The client ([`GraphClient`]) owns what must be the same for every request: one pooled
//! `reqwest::Client`, the per-tenant concurrency limit, the retry policy for 429/503/504,
//! the request budget of a probe run, and the rule that the bearer token only ever goes to
//! the configured Graph origin. The checks only decide what the answers mean; they branch on
//! HTTP status and Graph `error.code`, never on message text (reference §3.0).

pub(crate) mod admins;
mod client;
pub(crate) mod health;
pub(crate) mod identity;
pub(crate) mod licence;
mod mail;

pub use admins::{admins, GLOBAL_ADMINISTRATOR_ROLE};
pub(crate) use client::{decode, decode_page};
pub use client::{Call, GraphClient, GraphError, DEFAULT_REQUEST_BUDGET};
pub use health::{health, OPERATIONAL_STATUSES, WATCHED_SERVICES};
pub use identity::{identity, USER_SELECT};
pub use licence::{licence, MAILBOX_PLANS};
pub use mail::{delete_message, find_message, FoundMessage};

use tw_core::{HttpEvidence, Reason, Status};

use crate::Outcome;

/// Percent-encodes one path segment (an object id, a UPN). `@` and the RFC 3986 sub-delims
/// stay as they are, as Graph's own examples write them (`/users/alice@contoso.com`);
/// `#`, `/`, `?`, `%`, `+`, spaces and non-ASCII are encoded (a guest UPN's `#` must be `%23`).
pub fn encode_segment(value: &str) -> String {
    encode(value, b"-._~@!$'()*,;=:")
}

/// Percent-encodes one query value (an OData `$filter` expression): spaces become `%20`,
/// never `+`, and `&`, `=`, `#`, `+` are encoded so the value cannot end the parameter.
pub fn encode_query_value(value: &str) -> String {
    encode(value, b"-._~@!$'()*,:/")
}

fn encode(value: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || keep.contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `1 SKU`, `2 SKUs`: summaries are read by people at 3 a.m.
pub(crate) fn count(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// An OData string literal: single quotes inside are doubled.
pub(crate) fn odata_string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The outcome of a check that could not tell: the error's own `unknown` reason.
pub(crate) fn failed(
    target: &str,
    doing: &str,
    err: &GraphError,
    evidence: HttpEvidence,
) -> Outcome {
    Outcome {
        target: target.to_owned(),
        reason: err.reason(),
        summary: format!("{doing}: {err}"),
        evidence,
    }
}

/// The findings of a check with several rules: every finding is a line of evidence, the
/// worst one (critical > warning > unknown > ok, [`Status::severity`]) decides.
#[derive(Default)]
pub(crate) struct Findings {
    items: Vec<(Reason, String)>,
}

impl Findings {
    pub(crate) fn add(&mut self, reason: Reason, line: impl Into<String>) {
        self.items.push((reason, line.into()));
    }

    /// Folds the findings into a verdict; `ok` is used when nothing but `ok` notes was found. Every
    /// finding becomes a line in `evidence.findings`, prefixed with its status.
    pub(crate) fn decide(
        self,
        target: &str,
        ok: (Reason, String),
        mut evidence: HttpEvidence,
    ) -> Outcome {
        let mut worst: Option<&(Reason, String)> = None;
        for item in self.items.iter().filter(|(r, _)| r.status() != Status::Ok) {
            let worse = match worst {
                None => true,
                Some((reason, _)) => item.0.status().severity() > reason.status().severity(),
            };
            if worse {
                worst = Some(item);
            }
        }
        let (reason, summary) = match worst {
            None => ok,
            Some((reason, line)) => {
                let others = self
                    .items
                    .iter()
                    .filter(|(r, l)| r.status() != Status::Ok && !(r == reason && l == line))
                    .count();
                let summary = match others {
                    0 => line.clone(),
                    1 => format!("{line} (and 1 more finding)"),
                    n => format!("{line} (and {n} more findings)"),
                };
                (*reason, summary)
            }
        };
        for (reason, line) in self.items {
            evidence
                .findings
                .push(format!("{}: {line}", reason.status()));
        }
        Outcome {
            target: target.to_owned(),
            reason,
            summary,
            evidence,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_keep_the_at_sign_and_encode_the_rest() {
        assert_eq!(encode_segment("alice@contoso.com"), "alice@contoso.com");
        assert_eq!(
            encode_segment("bob_fabrikam.com#EXT#@contoso.onmicrosoft.com"),
            "bob_fabrikam.com%23EXT%23@contoso.onmicrosoft.com"
        );
        assert_eq!(encode_segment("a+b/c?d e"), "a%2Bb%2Fc%3Fd%20e");
    }

    #[test]
    fn query_values_encode_spaces_and_separators() {
        assert_eq!(
            encode_query_value("roleDefinitionId eq '62e9'"),
            "roleDefinitionId%20eq%20'62e9'"
        );
        assert_eq!(encode_query_value("a&b=c+d#e"), "a%26b%3Dc%2Bd%23e");
        assert_eq!(encode_query_value("ü"), "%C3%BC");
    }

    #[test]
    fn odata_strings_double_quotes() {
        assert_eq!(odata_string("o'brien@x.com"), "'o''brien@x.com'");
    }

    #[test]
    fn the_worst_finding_decides() {
        let mut findings = Findings::default();
        findings.add(Reason::LicenceGrace, "grace");
        findings.add(Reason::Throttled, "could not read");
        findings.add(Reason::LicenceSuspended, "suspended");
        findings.add(Reason::LicencesOk, "fine");
        let outcome = findings.decide(
            "t",
            (Reason::LicencesOk, "ok".to_owned()),
            HttpEvidence::default(),
        );
        assert_eq!(outcome.reason, Reason::LicenceSuspended);
        assert_eq!(outcome.summary, "suspended (and 2 more findings)");
        assert_eq!(outcome.evidence.findings.len(), 4);
        assert_eq!(outcome.evidence.findings[0], "warning: grace");

        let none = Findings::default().decide(
            "t",
            (Reason::LicencesOk, "ok".to_owned()),
            HttpEvidence::default(),
        );
        assert_eq!(
            (none.reason, none.summary.as_str()),
            (Reason::LicencesOk, "ok")
        );
    }
}
