//! The `tenant` check: OpenID discovery by domain, which tells without credentials whether
//! Entra ID still knows a customer's domain and which tenant owns it (reference §1.1).
//!
//! The owning tenant id is the path segment after the host in `issuer`; a different id than the
//! one recorded means the domain moved to another tenant, and AADSTS90002 means Entra ID no
//! longer knows it. Anything else (5xx, 429, transport faults, bodies that are not the document)
//! says nothing about the tenant and is `unknown`.

use reqwest::Client;
use serde::Deserialize;
use tokio::time::Instant;
use tw_core::{DomainName, HttpEvidence, Reason};

use crate::aadsts::{codes_text, reason_for_status};
use crate::{http, Outcome};

/// AADSTS90002: tenant or domain not found in this cloud.
const TENANT_NOT_FOUND: u32 = 90002;

/// The fields of the discovery document the check reads; the rest is ignored.
#[derive(Deserialize)]
struct OpenIdConfiguration {
    issuer: String,
    tenant_region_scope: Option<String>,
    tenant_region_sub_scope: Option<String>,
    cloud_instance_name: Option<String>,
    msgraph_host: Option<String>,
}

/// Asks `GET {login_url}/{domain}/v2.0/.well-known/openid-configuration` which tenant owns
/// `domain`.
///
/// 200 → `tenant_known` with facts `tenant_id`, `tenant_region_scope`,
/// `tenant_region_sub_scope` (when present), `cloud_instance_name`, `msgraph_host`; or
/// `tenant_moved` when `expected_tenant_id` is given and differs (compared case-insensitively).
/// 400 with AADSTS90002 → `tenant_unknown`. 429 → `throttled`, 5xx → `service_unavailable`,
/// other statuses → `http_error`, a body that is not the document or an unreadable `issuer` →
/// `malformed_response`, transport faults → the reason [`http::exchange`] gives.
pub async fn tenant(
    client: &Client,
    login_url: &str,
    domain: &DomainName,
    expected_tenant_id: Option<&str>,
    deadline: Instant,
) -> Outcome {
    let url = format!(
        "{}/{}/v2.0/.well-known/openid-configuration",
        login_url.trim_end_matches('/'),
        domain
    );
    let (mut exchange, reply) = http::exchange(client.get(&url), "GET", &url, deadline).await;
    let mut evidence = HttpEvidence::default();
    let outcome = |reason: Reason, summary: String, evidence: HttpEvidence| Outcome {
        target: domain.to_string(),
        reason,
        summary,
        evidence,
    };
    let reply = match reply {
        Ok(reply) => reply,
        Err(reason) => {
            let why = exchange.error.clone().unwrap_or_default();
            evidence.exchanges.push(exchange);
            return outcome(
                reason,
                format!("OpenID discovery for {domain} failed: {why}"),
                evidence,
            );
        }
    };
    if !reply.is_success() {
        let status = reply.status;
        let codes = exchange.aadsts.clone();
        evidence.exchanges.push(exchange);
        if status == 400 && codes.contains(&TENANT_NOT_FOUND) {
            evidence
                .facts
                .insert("aadsts".to_owned(), TENANT_NOT_FOUND.to_string());
            return outcome(
                Reason::TenantUnknown,
                format!("Entra ID does not know {domain} (AADSTS90002: tenant not found)"),
                evidence,
            );
        }
        let codes = if codes.is_empty() {
            String::new()
        } else {
            format!(" ({})", codes_text(&codes))
        };
        return outcome(
            reason_for_status(status),
            format!("OpenID discovery for {domain} answered HTTP {status}{codes}"),
            evidence,
        );
    }
    let document = match reply.json::<OpenIdConfiguration>() {
        Ok(document) => document,
        Err(why) => {
            exchange.error = Some(why.clone());
            evidence.exchanges.push(exchange);
            return outcome(
                Reason::MalformedResponse,
                format!("OpenID discovery for {domain}: {why}"),
                evidence,
            );
        }
    };
    evidence.exchanges.push(exchange);
    let Some(tenant_id) = tenant_id_from_issuer(&document.issuer) else {
        let shown: String = document.issuer.chars().take(120).collect();
        if let Some(last) = evidence.exchanges.last_mut() {
            last.error = Some(format!("unreadable issuer {shown:?}"));
        }
        return outcome(
            Reason::MalformedResponse,
            format!("OpenID discovery for {domain}: no tenant id in issuer {shown:?}"),
            evidence,
        );
    };
    let facts = &mut evidence.facts;
    facts.insert("tenant_id".to_owned(), tenant_id.clone());
    for (name, value) in [
        ("tenant_region_scope", &document.tenant_region_scope),
        ("tenant_region_sub_scope", &document.tenant_region_sub_scope),
        ("cloud_instance_name", &document.cloud_instance_name),
        ("msgraph_host", &document.msgraph_host),
    ] {
        if let Some(value) = value {
            facts.insert(name.to_owned(), value.clone());
        }
    }
    match expected_tenant_id {
        Some(expected) if !expected.trim().eq_ignore_ascii_case(&tenant_id) => {
            let expected = expected.trim().to_ascii_lowercase();
            evidence
                .facts
                .insert("expected_tenant_id".to_owned(), expected.clone());
            outcome(
                Reason::TenantMoved,
                format!("domain moved to another tenant: expected {expected}, now {tenant_id}"),
                evidence,
            )
        }
        _ => {
            let region = document
                .tenant_region_scope
                .as_deref()
                .map(|scope| format!(" (region {scope})"))
                .unwrap_or_default();
            outcome(
                Reason::TenantKnown,
                format!("{domain} belongs to tenant {tenant_id}{region}"),
                evidence,
            )
        }
    }
}

/// The tenant id in an issuer such as `https://login.microsoftonline.com/{tid}/v2.0` (v2) or
/// `https://sts.windows.net/{tid}/` (v1): the first path segment after the host, which must be
/// a GUID. Returned lower-case.
pub fn tenant_id_from_issuer(issuer: &str) -> Option<String> {
    let rest = issuer
        .strip_prefix("https://")
        .or_else(|| issuer.strip_prefix("http://"))?;
    let (_host, path) = rest.split_once('/')?;
    let segment = path.split('/').next()?;
    is_guid(segment).then(|| segment.to_ascii_lowercase())
}

fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// For [`crate::fuzzing`]: the discovery document read as [`tenant`] reads it, without the
/// request.
pub(crate) fn judge_for_fuzzing(reply: &http::Reply, domain: &str) -> Result<Vec<Outcome>, String> {
    let document = reply.json::<OpenIdConfiguration>()?;
    let mut evidence = HttpEvidence::default();
    let (reason, summary) = match tenant_id_from_issuer(&document.issuer) {
        Some(tenant_id) => {
            evidence
                .facts
                .insert("tenant_id".to_owned(), tenant_id.clone());
            (
                Reason::TenantKnown,
                format!("{domain} belongs to tenant {tenant_id}"),
            )
        }
        None => {
            let shown: String = document.issuer.chars().take(120).collect();
            (
                Reason::MalformedResponse,
                format!("no tenant id in issuer {shown:?}"),
            )
        }
    };
    Ok(vec![Outcome {
        target: domain.to_owned(),
        reason,
        summary,
        evidence,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_gives_the_tenant_id() {
        assert_eq!(
            tenant_id_from_issuer(
                "https://login.microsoftonline.com/2F9A3C10-0000-4000-8000-00000000C0DE/v2.0"
            )
            .as_deref(),
            Some("2f9a3c10-0000-4000-8000-00000000c0de")
        );
        assert_eq!(
            tenant_id_from_issuer("https://sts.windows.net/2f9a3c10-0000-4000-8000-00000000c0de/")
                .as_deref(),
            Some("2f9a3c10-0000-4000-8000-00000000c0de")
        );
        assert_eq!(
            tenant_id_from_issuer(
                "https://127.0.0.1:4443/2f9a3c10-0000-4000-8000-00000000c0de/v2.0"
            )
            .as_deref(),
            Some("2f9a3c10-0000-4000-8000-00000000c0de")
        );
    }

    #[test]
    fn unreadable_issuers_are_refused() {
        for issuer in [
            "",
            "login.microsoftonline.com/2f9a3c10-0000-4000-8000-00000000c0de/v2.0",
            "https://login.microsoftonline.com",
            "https://login.microsoftonline.com/{tenantid}/v2.0",
            "https://login.microsoftonline.com/common/v2.0",
            "https://login.microsoftonline.com/2f9a3c10-0000-4000-8000-00000000c0dz/v2.0",
        ] {
            assert_eq!(tenant_id_from_issuer(issuer), None, "{issuer}");
        }
    }
}
