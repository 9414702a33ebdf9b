//! `[entra]`, `[app]` and each tenant's `app` and `licence`: where Microsoft's endpoints are
//! and which app identity the Graph checks sign in with.
//!
//! Like receivers, app credentials are named by reference (`client_secret_file`,
//! `client_secret_env`, `private_key_file`, `private_key_env`), never inline; the binary reads
//! them before it starts. The endpoint overrides exist for national clouds that move and for
//! tests, which point every URL at the loopback simulator.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{SecretSource, Validator};
use crate::Timestamp;

pub const IANA_RDAP_BOOTSTRAP: &str = "https://data.iana.org/rdap/dns.json";
const DEFAULT_RENEWAL_WARN_DAYS: [u32; 4] = [30, 14, 7, 1];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEntra {
    cloud: Option<Spanned<String>>,
    login_url: Option<Spanned<String>>,
    graph_url: Option<Spanned<String>>,
    rdap_bootstrap_url: Option<Spanned<String>>,
    rdap_base_url: Option<Spanned<String>>,
    extra_ca_file: Option<String>,
    max_concurrent_per_tenant: Option<Spanned<i64>>,
    max_retries: Option<Spanned<i64>>,
    max_retry_wait: Option<Spanned<String>>,
    alert_on_service_health: Option<bool>,
    domain_warn_days: Option<Spanned<i64>>,
    domain_critical_days: Option<Spanned<i64>>,
    credential_warn_days: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApp {
    client_id: Spanned<String>,
    client_secret_file: Option<String>,
    client_secret_env: Option<String>,
    certificate_file: Option<String>,
    private_key_file: Option<String>,
    private_key_env: Option<String>,
    credential_expires: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLicence {
    renewal_warn_days: Option<Vec<Spanned<i64>>>,
    #[serde(default)]
    manual_renewal: Vec<String>,
}

/// The Microsoft cloud a deployment talks to (reference §2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    /// Commercial, GCC included.
    Global,
    UsGovHigh,
    UsGovDod,
    /// Operated by 21Vianet.
    China,
}

impl Cloud {
    const ALL: [(&'static str, Cloud); 4] = [
        ("global", Cloud::Global),
        ("us_gov_high", Cloud::UsGovHigh),
        ("us_gov_dod", Cloud::UsGovDod),
        ("china", Cloud::China),
    ];

    pub fn login_url(self) -> &'static str {
        match self {
            Cloud::Global => "https://login.microsoftonline.com",
            Cloud::UsGovHigh | Cloud::UsGovDod => "https://login.microsoftonline.us",
            Cloud::China => "https://login.partner.microsoftonline.cn",
        }
    }

    pub fn graph_url(self) -> &'static str {
        match self {
            Cloud::Global => "https://graph.microsoft.com",
            Cloud::UsGovHigh => "https://graph.microsoft.us",
            Cloud::UsGovDod => "https://dod-graph.microsoft.us",
            Cloud::China => "https://microsoftgraph.chinacloudapi.cn",
        }
    }
}

/// Endpoints and limits of the Entra ID, Graph and RDAP checks.
#[derive(Debug, Clone, PartialEq)]
pub struct EntraConfig {
    pub cloud: Cloud,
    /// Login host root without a trailing slash (discovery, realm, token).
    pub login_url: String,
    /// Graph host root without `/v1.0`.
    pub graph_url: String,
    /// IANA's RDAP bootstrap file (RFC 9224).
    pub rdap_bootstrap_url: String,
    /// When set, every domain is asked here (`{base}/domain/{name}`) and the bootstrap file
    /// is not fetched.
    pub rdap_base_url: Option<String>,
    /// PEM file with extra certificate authorities trusted for these HTTPS endpoints.
    pub extra_ca_file: Option<PathBuf>,
    /// Graph requests in flight per tenant at once.
    pub max_concurrent_per_tenant: NonZeroUsize,
    /// Retries of a throttled (429) or unavailable (503, 504) request.
    pub max_retries: u32,
    /// A `Retry-After` longer than this ends the run as `throttled` instead of waiting.
    pub max_retry_wait: Duration,
    /// Whether a degraded Exchange Online or Entra ID service health is a warning (it is
    /// context only otherwise).
    pub alert_on_service_health: bool,
    pub domain_warn_days: u32,
    pub domain_critical_days: u32,
    /// Days before `credential_expires` that the signin check warns.
    pub credential_warn_days: u32,
}

impl Default for EntraConfig {
    fn default() -> EntraConfig {
        EntraConfig {
            cloud: Cloud::Global,
            login_url: Cloud::Global.login_url().to_owned(),
            graph_url: Cloud::Global.graph_url().to_owned(),
            rdap_bootstrap_url: IANA_RDAP_BOOTSTRAP.to_owned(),
            rdap_base_url: None,
            extra_ca_file: None,
            max_concurrent_per_tenant: NonZeroUsize::MIN.saturating_add(3),
            max_retries: 3,
            max_retry_wait: Duration::from_secs(60),
            alert_on_service_health: false,
            domain_warn_days: 30,
            domain_critical_days: 7,
            credential_warn_days: 30,
        }
    }
}

/// The MSP's multi-tenant app, admin-consented in each customer tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct AppConfig {
    /// Application (client) id, lower-case GUID.
    pub client_id: String,
    pub credential: AppCredential,
    /// When the secret or certificate expires, if known; the signin check warns ahead.
    pub credential_expires: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AppCredential {
    Secret(SecretSource),
    /// A client assertion signed with `private_key`; `certificate_file` (PEM) gives the
    /// thumbprint Entra matches the key by.
    Certificate {
        certificate_file: PathBuf,
        private_key: SecretSource,
    },
}

/// How the licence check treats renewal dates.
#[derive(Debug, Clone, PartialEq)]
pub struct LicenceSettings {
    /// Warn this many days before a trial or hand-renewed subscription ends; descending.
    pub renewal_warn_days: Vec<u32>,
    /// Subscriptions renewed by hand, by `skuPartNumber` or subscription id. Graph does not
    /// say whether a subscription renews itself, so only these (and trials) count down.
    pub manual_renewal: Vec<String>,
}

impl Default for LicenceSettings {
    fn default() -> LicenceSettings {
        LicenceSettings {
            renewal_warn_days: DEFAULT_RENEWAL_WARN_DAYS.to_vec(),
            manual_renewal: Vec::new(),
        }
    }
}

impl Validator<'_> {
    fn days(&mut self, path: &str, value: Option<&Spanned<i64>>, default: u32) -> u32 {
        let Some(value) = value else { return default };
        match u32::try_from(*value.get_ref()) {
            Ok(days) if days <= 3_650 => days,
            _ => {
                self.error(
                    path,
                    Some(value.span().start),
                    format!("must be a number of days 0-3650, got {}", value.get_ref()),
                );
                default
            }
        }
    }

    pub(super) fn entra(&mut self, raw: Option<&RawEntra>) -> EntraConfig {
        let defaults = EntraConfig::default();
        let Some(raw) = raw else { return defaults };
        let cloud = match &raw.cloud {
            None => Cloud::Global,
            Some(value) => match Cloud::ALL.iter().find(|(name, _)| name == value.get_ref()) {
                Some((_, cloud)) => *cloud,
                None => {
                    self.error(
                        "entra.cloud",
                        Some(value.span().start),
                        format!(
                            "unknown cloud {:?} (known: global, us_gov_high, us_gov_dod, china)",
                            value.get_ref()
                        ),
                    );
                    Cloud::Global
                }
            },
        };
        let url = |v: &mut Validator<'_>, key: &str, value: Option<&Spanned<String>>| {
            value.and_then(|value| v.url(&format!("entra.{key}"), value))
        };
        let login_url = url(self, "login_url", raw.login_url.as_ref())
            .unwrap_or_else(|| cloud.login_url().to_owned());
        let graph_url = url(self, "graph_url", raw.graph_url.as_ref())
            .unwrap_or_else(|| cloud.graph_url().to_owned());
        let rdap_bootstrap_url = url(self, "rdap_bootstrap_url", raw.rdap_bootstrap_url.as_ref())
            .unwrap_or_else(|| IANA_RDAP_BOOTSTRAP.to_owned());
        let rdap_base_url = url(self, "rdap_base_url", raw.rdap_base_url.as_ref());
        let max_concurrent_per_tenant = self.count(
            "entra.max_concurrent_per_tenant",
            raw.max_concurrent_per_tenant.as_ref(),
            defaults.max_concurrent_per_tenant.get(),
        );
        let max_retries = self.days(
            "entra.max_retries",
            raw.max_retries.as_ref(),
            defaults.max_retries,
        );
        if max_retries > 10 {
            self.error(
                "entra.max_retries",
                raw.max_retries.as_ref().map(|v| v.span().start),
                "must be 10 or fewer (each retry waits out a Retry-After)",
            );
        }
        let max_retry_wait = self.duration(
            "entra.max_retry_wait",
            raw.max_retry_wait.as_ref(),
            defaults.max_retry_wait,
        );
        let domain_warn_days = self.days(
            "entra.domain_warn_days",
            raw.domain_warn_days.as_ref(),
            defaults.domain_warn_days,
        );
        let domain_critical_days = self.days(
            "entra.domain_critical_days",
            raw.domain_critical_days.as_ref(),
            defaults.domain_critical_days,
        );
        if domain_critical_days > domain_warn_days {
            self.error(
                "entra.domain_critical_days",
                raw.domain_critical_days.as_ref().map(|v| v.span().start),
                format!("must not exceed domain_warn_days ({domain_warn_days})"),
            );
        }
        EntraConfig {
            cloud,
            login_url,
            graph_url,
            rdap_bootstrap_url,
            rdap_base_url,
            extra_ca_file: raw.extra_ca_file.as_ref().map(PathBuf::from),
            max_concurrent_per_tenant,
            max_retries,
            max_retry_wait,
            alert_on_service_health: raw.alert_on_service_health.unwrap_or(false),
            domain_warn_days,
            domain_critical_days,
            credential_warn_days: self.days(
                "entra.credential_warn_days",
                raw.credential_warn_days.as_ref(),
                defaults.credential_warn_days,
            ),
        }
    }

    pub(super) fn app(&mut self, base: &str, raw: &RawApp) -> Option<AppConfig> {
        let errors_before = self.errors.len();
        let client_id = raw.client_id.get_ref().trim().to_ascii_lowercase();
        if !super::is_guid(&client_id) {
            self.error(
                format!("{base}.client_id"),
                Some(raw.client_id.span().start),
                format!(
                    "{:?} is not an application (client) id GUID",
                    raw.client_id.get_ref()
                ),
            );
        }
        let source = |v: &mut Validator<'_>,
                      file: &Option<String>,
                      env: &Option<String>,
                      what: &str| {
            match (file, env) {
                (Some(_), Some(_)) => {
                    v.error(
                        format!("{base}.{what}_env"),
                        None,
                        format!("give {what}_file or {what}_env, not both"),
                    );
                    None
                }
                (Some(file), None) if !file.trim().is_empty() => {
                    Some(SecretSource::File(PathBuf::from(file)))
                }
                (None, Some(env)) if !env.trim().is_empty() => Some(SecretSource::Env(env.clone())),
                (None, None) => None,
                _ => {
                    v.error(format!("{base}.{what}_file"), None, "must not be empty");
                    None
                }
            }
        };
        let secret = source(
            self,
            &raw.client_secret_file,
            &raw.client_secret_env,
            "client_secret",
        );
        let key = source(
            self,
            &raw.private_key_file,
            &raw.private_key_env,
            "private_key",
        );
        let credential = match (secret, &raw.certificate_file, key) {
            (Some(secret), None, None) => Some(AppCredential::Secret(secret)),
            (None, Some(certificate_file), Some(private_key)) => Some(AppCredential::Certificate {
                certificate_file: PathBuf::from(certificate_file),
                private_key,
            }),
            (Some(_), _, _) => {
                self.error(
                    format!("{base}.client_secret_file"),
                    None,
                    "give a client secret or a certificate with its private key, not both",
                );
                None
            }
            (None, Some(_), None) => {
                self.error(
                    format!("{base}.private_key_file"),
                    None,
                    "a certificate needs its private key in private_key_file or private_key_env",
                );
                None
            }
            (None, None, Some(_)) => {
                self.error(
                    format!("{base}.certificate_file"),
                    None,
                    "a private key needs its certificate (PEM) in certificate_file",
                );
                None
            }
            (None, None, None) => {
                self.error(
                    base.to_owned(),
                    Some(raw.client_id.span().start),
                    "needs a credential: client_secret_file or client_secret_env, or certificate_file with private_key_file or private_key_env",
                );
                None
            }
        };
        let credential_expires = raw.credential_expires.as_ref().and_then(|value| {
            let parsed = Timestamp::parse_utc(value.get_ref());
            if parsed.is_none() {
                self.error(
                    format!("{base}.credential_expires"),
                    Some(value.span().start),
                    format!(
                        "{:?} is not a date such as \"2027-03-01\" or \"2027-03-01T12:00:00Z\"",
                        value.get_ref()
                    ),
                );
            }
            parsed
        });
        if self.errors.len() > errors_before {
            return None;
        }
        Some(AppConfig {
            client_id,
            credential: credential?,
            credential_expires,
        })
    }

    pub(super) fn licence(&mut self, base: &str, raw: Option<&RawLicence>) -> LicenceSettings {
        let Some(raw) = raw else {
            return LicenceSettings::default();
        };
        let renewal_warn_days = match &raw.renewal_warn_days {
            None => DEFAULT_RENEWAL_WARN_DAYS.to_vec(),
            Some(values) => {
                let mut days: Vec<u32> = values
                    .iter()
                    .enumerate()
                    .map(|(i, value)| {
                        self.days(
                            &format!("{base}.licence.renewal_warn_days[{i}]"),
                            Some(value),
                            0,
                        )
                    })
                    .collect();
                days.sort_unstable_by(|a, b| b.cmp(a));
                days.dedup();
                days
            }
        };
        let manual_renewal = raw
            .manual_renewal
            .iter()
            .map(|entry| entry.trim().to_owned())
            .filter(|entry| !entry.is_empty())
            .collect();
        LicenceSettings {
            renewal_warn_days,
            manual_renewal,
        }
    }
}
