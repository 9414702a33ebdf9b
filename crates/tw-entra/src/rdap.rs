//! The `domain` check: when a customer's domain registration expires, read from the
//! registry's RDAP server (reference §5; RFC 9224 bootstrap, RFC 9082 query, RFC 9083 answer).
//!
//! A lapsed domain takes mail and sign-in for every address on it down at once, and the date is
//! public weeks ahead. The server for a domain comes from IANA's bootstrap file (cached for a
//! day, one fetch shared by concurrent checks) or a fixed base URL. Redirects are followed here,
//! not by the HTTP client, so every hop is evidence. Only a date or a status from the registry
//! can make the check critical; a domain the bootstrap does not cover, a 404 or an answer
//! without an expiration date is `rdap_unavailable` (unknown).

use std::time::Duration;

use reqwest::Client;
use serde::Deserialize;
use tokio::time::Instant;
use tw_core::config::EntraConfig;
use tw_core::{DomainName, HttpEvidence, HttpExchange, Reason, Timestamp};

use crate::aadsts::reason_for_status;
use crate::{http, Outcome};

/// How long a fetched bootstrap file is used before it is fetched again. IANA updates it
/// rarely; a day keeps new TLD servers from being missed for long.
pub const BOOTSTRAP_MAX_AGE: Duration = Duration::from_secs(24 * 3_600);

/// Redirect hops followed per query (a redirector such as rdap.org needs one).
pub const MAX_REDIRECTS: usize = 3;

/// Registry statuses that mean the domain is out of DNS or on its way out, compared with
/// spaces, hyphens and case removed (RDAP writes `client hold`, EPP `clientHold`).
const LAPSED_STATUSES: [&str; 4] = [
    "clienthold",
    "serverhold",
    "redemptionperiod",
    "pendingdelete",
];

/// RFC 7480 §4.2: ask for RDAP's media type; plain JSON is accepted too.
const RDAP_ACCEPT: &str = "application/rdap+json, application/json;q=0.9";

enum Source {
    Bootstrap(String),
    Fixed(String),
}

struct Service {
    /// Lower-case domain suffixes (`com`, `co.uk`).
    entries: Vec<String>,
    /// Base URLs, https first.
    urls: Vec<String>,
}

struct Bootstrap {
    fetched: Instant,
    services: Vec<Service>,
}

/// Finds and asks the RDAP server of a domain. One per process; share it behind an `Arc`.
pub struct RdapClient {
    source: Source,
    max_age: Duration,
    bootstrap: tokio::sync::Mutex<Option<Bootstrap>>,
}

impl std::fmt::Debug for RdapClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, url) = match &self.source {
            Source::Bootstrap(url) => ("bootstrap", url),
            Source::Fixed(url) => ("fixed", url),
        };
        f.debug_struct("RdapClient")
            .field(kind, url)
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct BootstrapFile {
    services: Vec<Vec<Vec<String>>>,
}

#[derive(Deserialize)]
struct RdapDomain {
    #[serde(rename = "objectClassName")]
    object_class_name: Option<String>,
    #[serde(default)]
    status: Vec<String>,
    #[serde(default)]
    events: Vec<RdapEvent>,
    #[serde(default)]
    entities: Vec<RdapEntity>,
}

#[derive(Deserialize)]
struct RdapEvent {
    #[serde(rename = "eventAction")]
    action: String,
    #[serde(rename = "eventDate")]
    date: Option<String>,
}

#[derive(Deserialize)]
struct RdapEntity {
    #[serde(default)]
    roles: Vec<String>,
    #[serde(rename = "vcardArray")]
    vcard: Option<serde_json::Value>,
}

impl RdapClient {
    /// Finds each domain's server in the RFC 9224 bootstrap file at `bootstrap_url` (IANA's
    /// `https://data.iana.org/rdap/dns.json` in production).
    pub fn bootstrap(bootstrap_url: impl Into<String>) -> RdapClient {
        RdapClient {
            source: Source::Bootstrap(bootstrap_url.into()),
            max_age: BOOTSTRAP_MAX_AGE,
            bootstrap: tokio::sync::Mutex::new(None),
        }
    }

    /// Asks every domain at `{base_url}/domain/{name}`, without a bootstrap file.
    pub fn fixed(base_url: impl Into<String>) -> RdapClient {
        RdapClient {
            source: Source::Fixed(base_url.into()),
            max_age: BOOTSTRAP_MAX_AGE,
            bootstrap: tokio::sync::Mutex::new(None),
        }
    }

    /// `[entra] rdap_base_url` when set, else `rdap_bootstrap_url`.
    pub fn from_config(config: &EntraConfig) -> RdapClient {
        match &config.rdap_base_url {
            Some(base) => RdapClient::fixed(base.clone()),
            None => RdapClient::bootstrap(config.rdap_bootstrap_url.clone()),
        }
    }

    /// Refetches the bootstrap file once it is older than `max_age` (default
    /// [`BOOTSTRAP_MAX_AGE`]).
    pub fn with_bootstrap_max_age(mut self, max_age: Duration) -> RdapClient {
        self.max_age = max_age;
        self
    }

    /// Looks up `domain`'s registration and judges its expiry against `now`.
    ///
    /// The server is the bootstrap service with the longest matching suffix of the domain
    /// (RFC 9224), queried at `{base}/domain/{name}`; up to [`MAX_REDIRECTS`] redirects (301,
    /// 302, 303, 307, 308 with `Location`) are followed, each recorded. The `expiration` event
    /// (else `registrar expiration`) gives the days left: below zero, or a status `client hold`,
    /// `server hold`, `redemption period` or `pending delete` → `registration_expired`; at most
    /// `critical_days` → `registration_expiring_soon`; at most `warn_days` →
    /// `registration_expiring`; else `registration_ok`. Facts: `expires_at`, `days_left`,
    /// `registrar`, `status`; a finding per status. No bootstrap entry, 404, or no expiration
    /// event → `rdap_unavailable`; 429 → `throttled`; 5xx → `service_unavailable`; an
    /// unreadable answer → `malformed_response`.
    pub async fn domain(
        &self,
        client: &Client,
        domain: &DomainName,
        warn_days: u32,
        critical_days: u32,
        now: Timestamp,
        deadline: Instant,
    ) -> Outcome {
        let mut evidence = HttpEvidence::default();
        let outcome = |reason: Reason, summary: String, evidence: HttpEvidence| Outcome {
            target: domain.to_string(),
            reason,
            summary,
            evidence,
        };
        let base = match &self.source {
            Source::Fixed(base) => base.clone(),
            Source::Bootstrap(url) => {
                match self
                    .base_from_bootstrap(client, url, domain, deadline, &mut evidence)
                    .await
                {
                    Ok(base) => base,
                    Err((reason, summary)) => return outcome(reason, summary, evidence),
                }
            }
        };
        let mut url = format!("{}/domain/{}", base.trim_end_matches('/'), domain);
        let mut redirects = 0;
        let reply = loop {
            let request = client.get(&url).header("accept", RDAP_ACCEPT);
            let (exchange, reply) = http::exchange(request, "GET", &url, deadline).await;
            let reply = match reply {
                Ok(reply) => reply,
                Err(reason) => {
                    let why = exchange.error.clone().unwrap_or_default();
                    evidence.exchanges.push(exchange);
                    return outcome(
                        reason,
                        format!("RDAP query for {domain} failed: {why}"),
                        evidence,
                    );
                }
            };
            evidence.exchanges.push(exchange);
            if !matches!(reply.status, 301 | 302 | 303 | 307 | 308) {
                break reply;
            }
            let status = reply.status;
            let next = match redirect_target(&url, &reply) {
                Ok(next) => next,
                Err(why) => {
                    note_error(&mut evidence, why.clone());
                    return outcome(
                        Reason::HttpError,
                        format!("RDAP query for {domain}: HTTP {status} {why}"),
                        evidence,
                    );
                }
            };
            if redirects == MAX_REDIRECTS {
                return outcome(
                    Reason::HttpError,
                    format!("RDAP query for {domain}: more than {MAX_REDIRECTS} redirects"),
                    evidence,
                );
            }
            redirects += 1;
            evidence
                .findings
                .push(format!("HTTP {status} redirect to {next}"));
            url = next;
        };
        if reply.status == 404 {
            return outcome(
                Reason::RdapUnavailable,
                format!(
                    "the RDAP server {} has no record of {domain} (404)",
                    host_of(&url)
                ),
                evidence,
            );
        }
        if reply.status != 200 {
            return outcome(
                reason_for_status(reply.status),
                format!("RDAP query for {domain} answered HTTP {}", reply.status),
                evidence,
            );
        }
        let record = match reply.json::<RdapDomain>() {
            Ok(record) => record,
            Err(why) => {
                note_error(&mut evidence, why.clone());
                return outcome(
                    Reason::MalformedResponse,
                    format!("RDAP answer for {domain}: {why}"),
                    evidence,
                );
            }
        };
        if let Some(class) = &record.object_class_name {
            if !class.eq_ignore_ascii_case("domain") {
                let why = format!("objectClassName is {class:?}, not \"domain\"");
                note_error(&mut evidence, why.clone());
                return outcome(
                    Reason::MalformedResponse,
                    format!("RDAP answer for {domain}: {why}"),
                    evidence,
                );
            }
        }
        let (reason, summary) = judge(
            &record,
            domain,
            warn_days,
            critical_days,
            now,
            &mut evidence,
        );
        outcome(reason, summary, evidence)
    }

    /// The base URL the bootstrap file gives for `domain`, fetching the file when there is no
    /// copy or it is older than `max_age`. A failed refetch falls back to the old copy.
    async fn base_from_bootstrap(
        &self,
        client: &Client,
        bootstrap_url: &str,
        domain: &DomainName,
        deadline: Instant,
        evidence: &mut HttpEvidence,
    ) -> Result<String, (Reason, String)> {
        // Held across the fetch on purpose: concurrent checks wait for the one fetch.
        let Ok(mut cached) = tokio::time::timeout_at(deadline, self.bootstrap.lock()).await else {
            return Err((
                Reason::Timeout,
                "waited for the RDAP bootstrap file until the deadline".to_owned(),
            ));
        };
        let fresh = cached
            .as_ref()
            .is_some_and(|bootstrap| bootstrap.fetched.elapsed() < self.max_age);
        if !fresh {
            match fetch_bootstrap(client, bootstrap_url, deadline, evidence).await {
                Ok(services) => {
                    *cached = Some(Bootstrap {
                        fetched: Instant::now(),
                        services,
                    });
                }
                Err((reason, summary)) => {
                    if cached.is_none() {
                        return Err((reason, summary));
                    }
                    evidence
                        .findings
                        .push(format!("{summary}; using the previously fetched copy"));
                }
            }
        }
        let services = cached
            .as_ref()
            .map(|b| b.services.as_slice())
            .unwrap_or(&[]);
        match service_for(services, domain) {
            Some(base) => Ok(base.to_owned()),
            None => {
                let tld = domain.as_str().rsplit('.').next().unwrap_or_default();
                Err((
                    Reason::RdapUnavailable,
                    format!("no RDAP service for .{tld} in the bootstrap file"),
                ))
            }
        }
    }
}

async fn fetch_bootstrap(
    client: &Client,
    url: &str,
    deadline: Instant,
    evidence: &mut HttpEvidence,
) -> Result<Vec<Service>, (Reason, String)> {
    let (exchange, reply) = http::exchange(client.get(url), "GET", url, deadline).await;
    evidence.exchanges.push(exchange);
    let reply = match reply {
        Ok(reply) => reply,
        Err(reason) => {
            let why = evidence
                .exchanges
                .last()
                .and_then(|e| e.error.clone())
                .unwrap_or_default();
            return Err((
                reason,
                format!("fetching the RDAP bootstrap file failed: {why}"),
            ));
        }
    };
    if reply.status != 200 {
        return Err((
            reason_for_status(reply.status),
            format!("the RDAP bootstrap file answered HTTP {}", reply.status),
        ));
    }
    let file = match reply.json::<BootstrapFile>() {
        Ok(file) => file,
        Err(why) => {
            note_error(evidence, why.clone());
            return Err((
                Reason::MalformedResponse,
                format!("the RDAP bootstrap file: {why}"),
            ));
        }
    };
    let mut services = Vec::with_capacity(file.services.len());
    for entry in file.services {
        let mut parts = entry.into_iter();
        let (Some(entries), Some(mut urls)) = (parts.next(), parts.next()) else {
            let why = "a service entry without suffixes and URLs".to_owned();
            note_error(evidence, why.clone());
            return Err((
                Reason::MalformedResponse,
                format!("the RDAP bootstrap file: {why}"),
            ));
        };
        // RFC 9224 lets a service list several URLs; https is preferred.
        urls.sort_by_key(|url| !url.to_ascii_lowercase().starts_with("https://"));
        services.push(Service {
            entries: entries
                .iter()
                .map(|e| e.trim_matches('.').to_ascii_lowercase())
                .collect(),
            urls,
        });
    }
    Ok(services)
}

/// The base URL of the service with the longest suffix of `domain` (RFC 9224 §4).
fn service_for<'a>(services: &'a [Service], domain: &DomainName) -> Option<&'a str> {
    let labels: Vec<&str> = domain.as_str().split('.').collect();
    (0..labels.len()).find_map(|start| {
        let suffix = labels[start..].join(".");
        services
            .iter()
            .find(|service| service.entries.contains(&suffix))
            .and_then(|service| service.urls.first())
            .map(String::as_str)
    })
}

fn redirect_target(current: &str, reply: &http::Reply) -> Result<String, String> {
    let location = reply
        .headers
        .get("location")
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| "redirect without a Location header".to_owned())?;
    let base = reqwest::Url::parse(current).map_err(|err| format!("bad URL {current}: {err}"))?;
    let next = base
        .join(location.trim())
        .map_err(|err| format!("unreadable Location {location:?}: {err}"))?;
    if !matches!(next.scheme(), "https" | "http") {
        return Err(format!("redirect to a non-HTTP URL {next}"));
    }
    Ok(next.to_string())
}

fn judge(
    record: &RdapDomain,
    domain: &DomainName,
    warn_days: u32,
    critical_days: u32,
    now: Timestamp,
    evidence: &mut HttpEvidence,
) -> (Reason, String) {
    if let Some(registrar) = registrar(record) {
        evidence.facts.insert("registrar".to_owned(), registrar);
    }
    if !record.status.is_empty() {
        evidence
            .facts
            .insert("status".to_owned(), record.status.join(", "));
    }
    let mut lapsed_status = None;
    for status in &record.status {
        let lapsed = is_lapsed_status(status);
        if lapsed && lapsed_status.is_none() {
            lapsed_status = Some(status.clone());
        }
        evidence.findings.push(if lapsed {
            format!("status {status}: the domain is out of DNS or being deleted")
        } else {
            format!("status {status}")
        });
    }
    let event = ["expiration", "registrar expiration"]
        .iter()
        .find_map(|action| {
            record
                .events
                .iter()
                .find(|event| event.action.trim().eq_ignore_ascii_case(action))
        });
    let raw_date = event.and_then(|event| event.date.clone());
    let expires = raw_date.as_deref().and_then(Timestamp::parse_utc);
    if let Some(expires) = expires {
        evidence
            .facts
            .insert("expires_at".to_owned(), expires.to_string());
        evidence
            .facts
            .insert("days_left".to_owned(), now.days_until(expires).to_string());
    }
    if let Some(status) = lapsed_status {
        let date = expires
            .map(|at| format!(" (expiry {})", date_of(at)))
            .unwrap_or_default();
        return (
            Reason::RegistrationExpired,
            format!("{domain} has registry status {status:?}{date}"),
        );
    }
    let Some(expires) = expires else {
        return match raw_date {
            Some(raw) => {
                let shown: String = raw.chars().take(60).collect();
                note_error(evidence, format!("unreadable expiration date {shown:?}"));
                (
                    Reason::MalformedResponse,
                    format!("RDAP answer for {domain}: unreadable expiration date {shown:?}"),
                )
            }
            None => (
                Reason::RdapUnavailable,
                format!("the RDAP answer for {domain} has no expiration date"),
            ),
        };
    };
    let days = now.days_until(expires);
    let date = date_of(expires);
    if days < 0 {
        (
            Reason::RegistrationExpired,
            format!(
                "{domain} registration expired on {date} ({} days ago)",
                days.unsigned_abs()
            ),
        )
    } else if days <= i64::from(critical_days) {
        (
            Reason::RegistrationExpiringSoon,
            format!("{domain} registration expires in {days} days on {date}"),
        )
    } else if days <= i64::from(warn_days) {
        (
            Reason::RegistrationExpiring,
            format!("{domain} registration expires in {days} days on {date}"),
        )
    } else {
        (
            Reason::RegistrationOk,
            format!("{domain} is registered until {date} ({days} days)"),
        )
    }
}

fn is_lapsed_status(status: &str) -> bool {
    let squashed: String = status
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    LAPSED_STATUSES
        .iter()
        .any(|lapsed| squashed.contains(lapsed))
}

/// The `fn` (formatted name) of the vCard of the entity with role `registrar`.
fn registrar(record: &RdapDomain) -> Option<String> {
    let entity = record.entities.iter().find(|entity| {
        entity
            .roles
            .iter()
            .any(|role| role.eq_ignore_ascii_case("registrar"))
    })?;
    // ["vcard", [["version", {}, "text", "4.0"], ["fn", {}, "text", "Example Registrar"]]]
    let properties = entity.vcard.as_ref()?.get(1)?.as_array()?;
    properties.iter().find_map(|property| {
        let property = property.as_array()?;
        if property.first()?.as_str()? != "fn" {
            return None;
        }
        let name = property.get(3)?.as_str()?.trim();
        (!name.is_empty()).then(|| name.chars().take(200).collect())
    })
}

fn note_error(evidence: &mut HttpEvidence, why: String) {
    if let Some(last) = evidence.exchanges.last_mut() {
        set_error(last, why);
    }
}

fn set_error(exchange: &mut HttpExchange, why: String) {
    exchange.error = Some(why);
}

fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.host_str().map(|host| match u.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_owned(),
            })
        })
        .unwrap_or_else(|| url.to_owned())
}

/// `2027-03-01` from a timestamp.
fn date_of(at: Timestamp) -> String {
    at.to_string().chars().take(10).collect()
}

/// For [`crate::fuzzing`]: the RDAP domain answer judged as the domain check judges it
/// (warning at 30 days, critical at 7), without the request.
pub(crate) fn judge_for_fuzzing(
    reply: &http::Reply,
    domain: &DomainName,
    now: Timestamp,
) -> Result<Vec<Outcome>, String> {
    let record = reply.json::<RdapDomain>()?;
    let mut evidence = HttpEvidence::default();
    let (reason, summary) = judge(&record, domain, 30, 7, now, &mut evidence);
    Ok(vec![Outcome {
        target: domain.to_string(),
        reason,
        summary,
        evidence,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(entries: &[&str], url: &str) -> Service {
        Service {
            entries: entries.iter().map(|e| (*e).to_owned()).collect(),
            urls: vec![url.to_owned()],
        }
    }

    #[test]
    fn the_longest_suffix_wins() {
        let services = [
            service(&["uk", "com"], "https://generic/"),
            service(&["co.uk"], "https://nominet/"),
        ];
        let pick = |name: &str| service_for(&services, &DomainName::parse(name).unwrap());
        assert_eq!(pick("contoso.co.uk"), Some("https://nominet/"));
        assert_eq!(pick("contoso.org.uk"), Some("https://generic/"));
        assert_eq!(pick("contoso.com"), Some("https://generic/"));
        assert_eq!(pick("contoso.de"), None);
    }

    #[test]
    fn lapsed_statuses_in_rdap_and_epp_spelling() {
        for status in [
            "client hold",
            "serverHold",
            "redemption period",
            "pending delete",
            "pendingDelete",
        ] {
            assert!(is_lapsed_status(status), "{status}");
        }
        for status in [
            "active",
            "client transfer prohibited",
            "auto renew period",
            "pending renew",
        ] {
            assert!(!is_lapsed_status(status), "{status}");
        }
    }

    fn judged(json: &str) -> (Reason, String, HttpEvidence) {
        let record: RdapDomain = serde_json::from_str(json).unwrap();
        let mut evidence = HttpEvidence::default();
        let now = Timestamp::parse_utc("2026-11-23T12:00:00Z").unwrap();
        let domain = DomainName::parse("contoso.com").unwrap();
        let (reason, summary) = judge(&record, &domain, 30, 7, now, &mut evidence);
        (reason, summary, evidence)
    }

    #[test]
    fn registrar_expiration_is_the_fallback_date() {
        let (reason, _, evidence) = judged(
            r#"{"events":[{"eventAction":"registration","eventDate":"2000-01-01T00:00:00Z"},
                {"eventAction":"registrar expiration","eventDate":"2026-12-03T12:00:00"}]}"#,
        );
        assert_eq!(reason, Reason::RegistrationExpiring);
        assert_eq!(evidence.facts["days_left"], "10");
        // The registry's own date wins over the registrar's.
        let (reason, _, _) = judged(
            r#"{"events":[{"eventAction":"registrar expiration","eventDate":"2026-12-03T12:00:00Z"},
                {"eventAction":"expiration","eventDate":"2027-12-03T12:00:00Z"}]}"#,
        );
        assert_eq!(reason, Reason::RegistrationOk);
    }

    #[test]
    fn an_unreadable_date_is_malformed_not_critical() {
        let (reason, summary, _) =
            judged(r#"{"events":[{"eventAction":"expiration","eventDate":"next tuesday"}]}"#);
        assert_eq!(reason, Reason::MalformedResponse, "{summary}");
        // A hold is still a hold without a readable date.
        let (reason, _, _) = judged(
            r#"{"status":["serverHold"],"events":[{"eventAction":"expiration","eventDate":"?"}]}"#,
        );
        assert_eq!(reason, Reason::RegistrationExpired);
    }

    #[test]
    fn redirect_targets_resolve_relative_locations() {
        let reply = |location: Option<&str>| {
            let mut headers = reqwest::header::HeaderMap::new();
            if let Some(location) = location {
                headers.insert("location", location.parse().unwrap());
            }
            http::Reply {
                status: 302,
                headers,
                body: Vec::new(),
                retry_after: None,
            }
        };
        let from = "https://rdap.example/domain/contoso.com";
        assert_eq!(
            redirect_target(from, &reply(Some("/v1/domain/contoso.com"))).unwrap(),
            "https://rdap.example/v1/domain/contoso.com"
        );
        assert_eq!(
            redirect_target(
                from,
                &reply(Some("https://other.example/rdap/domain/contoso.com"))
            )
            .unwrap(),
            "https://other.example/rdap/domain/contoso.com"
        );
        assert!(redirect_target(from, &reply(None)).is_err());
        assert!(redirect_target(from, &reply(Some("ftp://x/domain/contoso.com"))).is_err());
    }

    #[test]
    fn registrar_name_from_the_vcard() {
        let record: RdapDomain = serde_json::from_str(
            r#"{"entities":[{"roles":["technical"],"vcardArray":["vcard",[["fn",{},"text","Not me"]]]},
                {"roles":["registrar"],"vcardArray":["vcard",[["version",{},"text","4.0"],["fn",{},"text","Example Registrar LLC"]]]}]}"#,
        )
        .unwrap();
        assert_eq!(registrar(&record).as_deref(), Some("Example Registrar LLC"));
    }
}
