//! The `realm` check: user realm discovery, which tells without credentials whether Entra ID
//! resolves an identity's domain and whether sign-in for it is Managed (Entra ID itself) or
//! Federated (an external IdP) (reference §1.2).
//!
//! The endpoint is unofficial and answers about the domain, not the user. `Unknown` means Entra
//! ID no longer resolves the domain; a flip between Managed and Federated sends sign-in
//! somewhere else (an intended change or a hijack) and `IsViral` puts the domain in an
//! unmanaged self-service tenant: both are worth a human's look, so they are warnings.

use reqwest::Client;
use serde::Deserialize;
use tokio::time::Instant;
use tw_core::{EmailAddress, HttpEvidence, Reason};

use crate::aadsts::reason_for_status;
use crate::{http, Outcome};

/// The v2.x answer, leniently: only `NameSpaceType` is required.
#[derive(Deserialize)]
struct UserRealm {
    #[serde(rename = "NameSpaceType")]
    namespace_type: String,
    #[serde(rename = "FederationBrandName")]
    federation_brand_name: Option<String>,
    #[serde(rename = "AuthURL")]
    auth_url: Option<String>,
    #[serde(rename = "IsViral")]
    is_viral: Option<bool>,
    #[serde(alias = "CloudInstanceName")]
    cloud_instance_name: Option<String>,
}

/// Asks `GET {login_url}/common/userrealm/{address}?api-version=2.1` how Entra ID resolves the
/// domain of `address`.
///
/// `NameSpaceType` Managed or Federated → `realm_ok`; Unknown → `realm_unknown`; Managed ↔
/// Federated against `previous_namespace_type` → `realm_changed` (the summary says from → to);
/// `IsViral: true` → `realm_changed` (the domain sits in an unmanaged tenant). Facts:
/// `namespace_type`, `cloud_instance_name`, `federation_brand_name`, `auth_url_host` (host only,
/// for Federated), `is_viral`. Non-200 answers and bodies that are not the realm JSON are
/// `unknown` (429 `throttled`, 5xx `service_unavailable`, else `http_error` /
/// `malformed_response`).
pub async fn realm(
    client: &Client,
    login_url: &str,
    address: &EmailAddress,
    previous_namespace_type: Option<&str>,
    deadline: Instant,
) -> Outcome {
    let url = format!(
        "{}/common/userrealm/{}?api-version=2.1",
        login_url.trim_end_matches('/'),
        encode_path_segment(&address.to_string())
    );
    let (mut exchange, reply) = http::exchange(client.get(&url), "GET", &url, deadline).await;
    let mut evidence = HttpEvidence::default();
    let outcome = |reason: Reason, summary: String, evidence: HttpEvidence| Outcome {
        target: address.to_string(),
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
                format!("user realm lookup for {address} failed: {why}"),
                evidence,
            );
        }
    };
    if reply.status != 200 {
        let status = reply.status;
        evidence.exchanges.push(exchange);
        return outcome(
            reason_for_status(status),
            format!("user realm lookup for {address} answered HTTP {status}"),
            evidence,
        );
    }
    let realm = match reply.json::<UserRealm>() {
        Ok(realm) => realm,
        Err(why) => {
            exchange.error = Some(why.clone());
            evidence.exchanges.push(exchange);
            return outcome(
                Reason::MalformedResponse,
                format!("user realm lookup for {address}: {why}"),
                evidence,
            );
        }
    };
    evidence.exchanges.push(exchange);
    let (reason, summary) = judge(&realm, address, previous_namespace_type, &mut evidence);
    outcome(reason, summary, evidence)
}

/// The verdict on a parsed realm answer; records the facts in `evidence`.
fn judge(
    realm: &UserRealm,
    address: &EmailAddress,
    previous_namespace_type: Option<&str>,
    evidence: &mut HttpEvidence,
) -> (Reason, String) {
    let domain = address.domain();
    let namespace = realm.namespace_type.trim().to_owned();
    let facts = &mut evidence.facts;
    facts.insert("namespace_type".to_owned(), namespace.clone());
    if let Some(cloud) = &realm.cloud_instance_name {
        facts.insert("cloud_instance_name".to_owned(), cloud.clone());
    }
    if let Some(brand) = &realm.federation_brand_name {
        facts.insert("federation_brand_name".to_owned(), brand.clone());
    }
    if let Some(viral) = realm.is_viral {
        facts.insert("is_viral".to_owned(), viral.to_string());
    }
    let kind = Namespace::parse(&namespace);
    if kind == Some(Namespace::Federated) {
        if let Some(host) = realm.auth_url.as_deref().and_then(url_host) {
            facts.insert("auth_url_host".to_owned(), host);
        }
    }
    let current = match kind {
        None => {
            let shown: String = namespace.chars().take(60).collect();
            return (
                Reason::MalformedResponse,
                format!("user realm lookup for {address}: unexpected NameSpaceType {shown:?}"),
            );
        }
        Some(Namespace::Unknown) => {
            return (
                Reason::RealmUnknown,
                format!(
                "Entra ID reports {domain} as Unknown (the domain no longer resolves to a tenant)"
            ),
            )
        }
        Some(current) => current,
    };
    if realm.is_viral == Some(true) {
        return (
            Reason::RealmChanged,
            format!(
                "domain sits in an unmanaged (viral) tenant: {domain} is {namespace}, IsViral true"
            ),
        );
    }
    match previous_namespace_type.and_then(Namespace::parse) {
        Some(before) if before != current && before != Namespace::Unknown => {
            facts.insert(
                "previous_namespace_type".to_owned(),
                before.as_str().to_owned(),
            );
            let goes = if current == Namespace::Federated {
                "to an external identity provider"
            } else {
                "to Entra ID itself"
            };
            (
                Reason::RealmChanged,
                format!(
                    "{domain} changed from {} to {} (sign-in now goes {goes})",
                    before.as_str(),
                    current.as_str()
                ),
            )
        }
        _ => (
            Reason::RealmOk,
            format!("{domain} is {} in Entra ID", current.as_str()),
        ),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Namespace {
    Managed,
    Federated,
    Unknown,
}

impl Namespace {
    fn parse(text: &str) -> Option<Namespace> {
        match text.trim().to_ascii_lowercase().as_str() {
            "managed" => Some(Namespace::Managed),
            "federated" => Some(Namespace::Federated),
            "unknown" => Some(Namespace::Unknown),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Namespace::Managed => "Managed",
            Namespace::Federated => "Federated",
            Namespace::Unknown => "Unknown",
        }
    }
}

/// The host of an absolute URL (the federated IdP's sign-in page); the query, which carries the
/// user name, is not kept.
fn url_host(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    parsed.host_str().map(str::to_ascii_lowercase)
}

/// Percent-encodes everything but RFC 3986 unreserved characters and `@`, so an address with
/// `+`, `/`, `?` or `#` in its local part stays one path segment.
fn encode_path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~@".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// For [`crate::fuzzing`]: the realm answer judged as [`realm`] judges it (against a domain
/// that was Managed), without the request.
pub(crate) fn judge_for_fuzzing(
    reply: &http::Reply,
    address: &EmailAddress,
) -> Result<Vec<Outcome>, String> {
    let realm = reply.json::<UserRealm>()?;
    let mut evidence = HttpEvidence::default();
    let (reason, summary) = judge(&realm, address, Some("Managed"), &mut evidence);
    Ok(vec![Outcome {
        target: address.to_string(),
        reason,
        summary,
        evidence,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(json: &str, previous: Option<&str>) -> (Reason, String, HttpEvidence) {
        let realm: UserRealm = serde_json::from_str(json).unwrap();
        let address = EmailAddress::parse("probe@contoso.com").unwrap();
        let mut evidence = HttpEvidence::default();
        let (reason, summary) = judge(&realm, &address, previous, &mut evidence);
        (reason, summary, evidence)
    }

    #[test]
    fn a_viral_domain_is_a_change_whatever_came_before() {
        let (reason, summary, evidence) = judged(
            r#"{"NameSpaceType":"Managed","Login":"probe@contoso.com","IsViral":true,"cloud_instance_name":"microsoftonline.com"}"#,
            Some("Managed"),
        );
        assert_eq!(reason, Reason::RealmChanged);
        assert!(summary.contains("unmanaged (viral) tenant"), "{summary}");
        assert_eq!(evidence.facts["is_viral"], "true");
        let (reason, _, evidence) = judged(
            r#"{"NameSpaceType":"Managed","IsViral":false}"#,
            Some("Managed"),
        );
        assert_eq!(reason, Reason::RealmOk);
        assert_eq!(evidence.facts["is_viral"], "false");
    }

    #[test]
    fn recovering_from_unknown_is_not_drift_and_odd_types_are_malformed() {
        let (reason, _, _) = judged(r#"{"NameSpaceType":"Managed"}"#, Some("Unknown"));
        assert_eq!(reason, Reason::RealmOk);
        let (reason, _, _) = judged(r#"{"NameSpaceType":"Cloudy"}"#, None);
        assert_eq!(reason, Reason::MalformedResponse);
        let (reason, _, evidence) = judged(
            r#"{"NameSpaceType":"Federated","AuthURL":"https://sts.contoso.com/adfs/ls/?username=probe%40contoso.com","FederationBrandName":"Contoso"}"#,
            None,
        );
        assert_eq!(reason, Reason::RealmOk);
        assert_eq!(evidence.facts["auth_url_host"], "sts.contoso.com");
        assert_eq!(evidence.facts["federation_brand_name"], "Contoso");
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(
            encode_path_segment("probe@contoso.com"),
            "probe@contoso.com"
        );
        assert_eq!(
            encode_path_segment("a+b/c?d#e@contoso.com"),
            "a%2Bb%2Fc%3Fd%23e@contoso.com"
        );
    }

    #[test]
    fn auth_url_host_drops_the_query() {
        assert_eq!(
            url_host("https://STS.fabrikam.com/adfs/ls/?username=probe%40fabrikam.com").as_deref(),
            Some("sts.fabrikam.com")
        );
        assert_eq!(url_host("not a url"), None);
    }

    #[test]
    fn namespace_types_parse_case_insensitively() {
        assert_eq!(Namespace::parse("managed"), Some(Namespace::Managed));
        assert_eq!(Namespace::parse("Federated"), Some(Namespace::Federated));
        assert_eq!(Namespace::parse("Unknown"), Some(Namespace::Unknown));
        assert_eq!(Namespace::parse("Cloud"), None);
    }
}
