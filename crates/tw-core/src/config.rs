//! Config: TOML text in, a validated [`Config`] or every problem with its key path out.
//!
//! Two layers: `raw` is what serde reads (unknown keys rejected), [`validate`] turns it into
//! typed values and collects every error instead of stopping at the first, so an operator
//! fixes a config in one pass. Syntax and type errors come from serde, which stops at the
//! first one; those are reported alone, with their path and line.

mod alerting;
mod entra;
mod mailflow;
mod raw;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use crate::{CheckKind, DomainName, EmailAddress, TenantName};
use raw::{RawCheck, RawConfig, RawTenant};

pub use alerting::{
    AlertingConfig, EmailTls, Receiver, ReceiverKind, Route, SecretSource, Silence,
};
pub use entra::{
    AppConfig, AppCredential, Cloud, EntraConfig, LicenceSettings, IANA_RDAP_BOOTSTRAP,
};
pub use mailflow::MailflowConfig;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9317";
pub const DEFAULT_DATABASE: &str = "/var/lib/tenantwatch/tenantwatch.db";
const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_DNS_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 86_400);
const DEFAULT_OK_SAMPLE: Duration = Duration::from_secs(3_600);
const DEFAULT_THIN_OK_AFTER: Duration = Duration::from_secs(7 * 86_400);
const DEFAULT_THIN_OK_INTERVAL: Duration = Duration::from_secs(86_400);
const DEFAULT_QUEUE: usize = 4_096;
const DEFAULT_MAX_CONCURRENT: usize = 256;
const DEFAULT_MAX_PER_DESTINATION: usize = 2;
/// The longest duration any key accepts.
const MAX_DURATION: Duration = Duration::from_secs(3_650 * 86_400);
/// Probing more often than this looks like directory harvesting to the receiving MX.
const MIN_INTERVAL: Duration = Duration::from_secs(10);

/// A validated configuration. Constructed only by [`parse`].
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub schedule: ScheduleConfig,
    pub smtp: SmtpConfig,
    pub dns: DnsConfig,
    pub tenants: Vec<Tenant>,
    pub alerting: AlertingConfig,
    pub heartbeat: Option<HeartbeatConfig>,
    pub entra: EntraConfig,
    /// The mailflow check's relay and bounce mailbox; the check runs only where this is set.
    pub mailflow: Option<MailflowConfig>,
}

/// A dead man's switch: the daemon pings `url` (healthchecks.io style: `/start` once,
/// the URL itself while healthy, `/fail` while not) so someone learns when the monitor
/// itself is dead.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatConfig {
    pub url: String,
    pub interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Where the bearer token of the HTTP API is read from. Without one, every request that
    /// would change state is refused, and reads are open.
    pub api_token: Option<SecretSource>,
    /// Reads (status page, `/api/v1/`, `/metrics`) need the token too; `/healthz` and
    /// `/readyz` never do.
    pub read_requires_token: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    pub path: PathBuf,
    /// Observations older than this are pruned (state changes included).
    pub retention: Duration,
    /// An unchanged `ok` observation is stored at most once per this interval.
    pub ok_sample_interval: Duration,
    /// Ok samples older than this are thinned to one per `thin_ok_interval` per target.
    pub thin_ok_after: Duration,
    pub thin_ok_interval: Duration,
    /// Capacity of the probe → recorder queue.
    pub queue_capacity: NonZeroUsize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleConfig {
    pub interval: Duration,
    pub timeout: Duration,
    pub max_concurrent: NonZeroUsize,
    /// Concurrent probes against one destination (one MX host).
    pub max_per_destination: NonZeroUsize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SmtpConfig {
    pub helo_name: DomainName,
    pub mail_from: EmailAddress,
    /// Port used for every MX connection (25 in production; tests point it at a simulator).
    pub port: u16,
    /// PEM file with extra certificate authorities trusted for STARTTLS.
    pub extra_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DnsConfig {
    /// Empty: use the system resolver configuration.
    pub nameservers: Vec<SocketAddr>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub name: TenantName,
    pub domain: DomainName,
    pub extra_domains: Vec<DomainName>,
    pub tenant_id: Option<String>,
    /// MX host suffixes that count as expected besides Exchange Online's, for tenants
    /// behind a mail gateway (e.g. `mimecast.com`).
    pub accepted_mx: Vec<String>,
    pub watch: Vec<EmailAddress>,
    /// Every check kind, enabled or not, with its effective interval and timeout.
    pub checks: BTreeMap<CheckKind, CheckSettings>,
    /// The app the Graph checks sign in with: the tenant's own `app`, else the global one.
    pub app: Option<AppConfig>,
    pub licence: LicenceSettings,
    /// Watched addresses the mailflow check sends to (each is also in `watch`).
    pub mailflow_to: Vec<EmailAddress>,
}

impl Tenant {
    /// The primary domain first, then the extra ones.
    pub fn domains(&self) -> impl Iterator<Item = &DomainName> {
        std::iter::once(&self.domain).chain(self.extra_domains.iter())
    }

    /// The check's settings if it is enabled for this tenant.
    pub fn enabled_check(&self, kind: CheckKind) -> Option<&CheckSettings> {
        self.checks.get(&kind).filter(|settings| settings.enabled)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckSettings {
    pub enabled: bool,
    pub interval: Duration,
    pub timeout: Duration,
}

/// One problem in a config, with where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// Key path such as `tenants[3].watch[0]`; empty for the document itself.
    pub path: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(top level)"
        } else {
            &self.path
        };
        match self.line {
            Some(line) => write!(f, "{path} (line {line}): {}", self.message),
            None => write!(f, "{path}: {}", self.message),
        }
    }
}

/// Every problem found in a config.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(f, "{n} problem{} in config:", if n == 1 { "" } else { "s" })?;
        for error in &self.0 {
            writeln!(f, "  {error}")?;
        }
        Ok(())
    }
}

/// Parse and validate config text. Pure: does not touch the file system or network.
pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
    let deserializer = toml::Deserializer::new(text);
    let raw: RawConfig = serde_path_to_error::deserialize(deserializer).map_err(|err| {
        // Spanned values add a private segment to the path; the operator wants the key.
        let path = err
            .path()
            .to_string()
            .replace(".$__serde_spanned_private_value", "");
        let inner = err.into_inner();
        let line = inner.span().map(|span| line_of(text, span.start));
        ConfigErrors(vec![ConfigError {
            path: if path == "." { String::new() } else { path },
            line,
            message: inner.message().trim().to_owned(),
        }])
    })?;
    Validator {
        text,
        errors: Vec::new(),
    }
    .validate(raw)
}

struct Validator<'a> {
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Validator<'_> {
    fn error(
        &mut self,
        path: impl Into<String>,
        span_start: Option<usize>,
        message: impl Into<String>,
    ) {
        let line = span_start.map(|start| line_of(self.text, start));
        self.errors.push(ConfigError {
            path: path.into(),
            line,
            message: message.into(),
        });
    }

    fn duration(
        &mut self,
        path: &str,
        value: Option<&Spanned<String>>,
        default: Duration,
    ) -> Duration {
        let Some(value) = value else { return default };
        match parse_duration(value.get_ref()) {
            Ok(duration) => duration,
            Err(message) => {
                self.error(path, Some(value.span().start), message);
                default
            }
        }
    }

    fn count(&mut self, path: &str, value: Option<&Spanned<i64>>, default: usize) -> NonZeroUsize {
        let fallback = NonZeroUsize::new(default).unwrap_or(NonZeroUsize::MIN);
        let Some(value) = value else { return fallback };
        match usize::try_from(*value.get_ref())
            .ok()
            .and_then(NonZeroUsize::new)
        {
            Some(n) => n,
            None => {
                self.error(
                    path,
                    Some(value.span().start),
                    format!("must be a positive whole number, got {}", value.get_ref()),
                );
                fallback
            }
        }
    }

    fn domain(&mut self, path: &str, value: &Spanned<String>) -> Option<DomainName> {
        match DomainName::parse(value.get_ref()) {
            Ok(domain) => Some(domain),
            Err(err) => {
                self.error(path, Some(value.span().start), err.to_string());
                None
            }
        }
    }

    fn address(&mut self, path: &str, value: &Spanned<String>) -> Option<EmailAddress> {
        match EmailAddress::parse(value.get_ref()) {
            Ok(address) => Some(address),
            Err(err) => {
                self.error(path, Some(value.span().start), err.to_string());
                None
            }
        }
    }

    fn validate(mut self, raw: RawConfig) -> Result<Config, ConfigErrors> {
        let server = {
            let (listen, api_token, read_requires_token) = match raw.server {
                Some(server) => (
                    server.listen,
                    self.api_token(server.api_token_file, server.api_token_env),
                    server.read_requires_token,
                ),
                None => (None, None, None),
            };
            let read_requires_token = match read_requires_token {
                Some(value) if *value.get_ref() && api_token.is_none() => {
                    self.error(
                        "server.read_requires_token",
                        Some(value.span().start),
                        "needs the token itself: set server.api_token_file or server.api_token_env",
                    );
                    true
                }
                Some(value) => *value.get_ref(),
                None => false,
            };
            let listen = match &listen {
                None => SocketAddr::from(([127, 0, 0, 1], 9317)),
                Some(value) => match value.get_ref().parse::<SocketAddr>() {
                    Ok(addr) => addr,
                    Err(_) => {
                        self.error(
                            "server.listen",
                            Some(value.span().start),
                            format!(
                                "{:?} is not an address:port such as {DEFAULT_LISTEN}",
                                value.get_ref()
                            ),
                        );
                        SocketAddr::from(([127, 0, 0, 1], 9317))
                    }
                },
            };
            ServerConfig {
                listen,
                api_token,
                read_requires_token,
            }
        };

        let store = {
            let raw_store = raw.store;
            let raw_store = raw_store.as_ref();
            let path = match raw_store.and_then(|s| s.path.as_ref()) {
                None => PathBuf::from(DEFAULT_DATABASE),
                Some(value) if value.get_ref().trim().is_empty() => {
                    self.error("store.path", Some(value.span().start), "must not be empty");
                    PathBuf::from(DEFAULT_DATABASE)
                }
                Some(value) => PathBuf::from(value.get_ref()),
            };
            StoreConfig {
                path,
                retention: self.duration(
                    "store.retention",
                    raw_store.and_then(|s| s.retention.as_ref()),
                    DEFAULT_RETENTION,
                ),
                ok_sample_interval: self.duration(
                    "store.ok_sample_interval",
                    raw_store.and_then(|s| s.ok_sample_interval.as_ref()),
                    DEFAULT_OK_SAMPLE,
                ),
                thin_ok_after: self.duration(
                    "store.thin_ok_after",
                    raw_store.and_then(|s| s.thin_ok_after.as_ref()),
                    DEFAULT_THIN_OK_AFTER,
                ),
                thin_ok_interval: self.duration(
                    "store.thin_ok_interval",
                    raw_store.and_then(|s| s.thin_ok_interval.as_ref()),
                    DEFAULT_THIN_OK_INTERVAL,
                ),
                queue_capacity: self.count(
                    "store.queue_capacity",
                    raw_store.and_then(|s| s.queue_capacity.as_ref()),
                    DEFAULT_QUEUE,
                ),
            }
        };

        let schedule = {
            let raw_schedule = raw.schedule;
            let raw_schedule = raw_schedule.as_ref();
            let interval_value = raw_schedule.and_then(|s| s.interval.as_ref());
            let interval = self.duration("schedule.interval", interval_value, DEFAULT_INTERVAL);
            let timeout_value = raw_schedule.and_then(|s| s.timeout.as_ref());
            let timeout = self.duration(
                "schedule.timeout",
                timeout_value,
                DEFAULT_TIMEOUT.min(interval / 2),
            );
            self.check_interval_and_timeout(
                "schedule",
                interval_value,
                interval,
                timeout_value,
                timeout,
            );
            ScheduleConfig {
                interval,
                timeout,
                max_concurrent: self.count(
                    "schedule.max_concurrent",
                    raw_schedule.and_then(|s| s.max_concurrent.as_ref()),
                    DEFAULT_MAX_CONCURRENT,
                ),
                max_per_destination: self.count(
                    "schedule.max_per_destination",
                    raw_schedule.and_then(|s| s.max_per_destination.as_ref()),
                    DEFAULT_MAX_PER_DESTINATION,
                ),
            }
        };

        let smtp = {
            let raw_smtp = raw.smtp;
            let raw_smtp = raw_smtp.as_ref();
            let helo_name = match raw_smtp.and_then(|s| s.helo_name.as_ref()) {
                Some(value) => self.domain("smtp.helo_name", value),
                None => {
                    self.error("smtp.helo_name", None, "required: the probe's own host name, sent in EHLO (not the target's, which EOP rejects with 5.7.506)");
                    None
                }
            };
            let mail_from = match raw_smtp.and_then(|s| s.mail_from.as_ref()) {
                Some(value) => self.address("smtp.mail_from", value),
                None => {
                    self.error(
                        "smtp.mail_from",
                        None,
                        "required: the envelope sender of probe sessions, on a domain of your own",
                    );
                    None
                }
            };
            let port = match raw_smtp.and_then(|s| s.port.as_ref()) {
                None => 25,
                Some(value) => match u16::try_from(*value.get_ref()) {
                    Ok(port) if port > 0 => port,
                    _ => {
                        self.error(
                            "smtp.port",
                            Some(value.span().start),
                            format!("must be a TCP port 1-65535, got {}", value.get_ref()),
                        );
                        25
                    }
                },
            };
            let extra_ca_file = raw_smtp
                .and_then(|s| s.extra_ca_file.as_ref())
                .map(|value| PathBuf::from(value.get_ref()));
            (helo_name, mail_from, port, extra_ca_file)
        };

        let dns = {
            let raw_dns = raw.dns;
            let raw_dns = raw_dns.as_ref();
            let mut nameservers = Vec::new();
            for (idx, value) in raw_dns
                .map(|d| d.nameservers.as_slice())
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                match parse_nameserver(value.get_ref()) {
                    Some(addr) => nameservers.push(addr),
                    None => self.error(
                        format!("dns.nameservers[{idx}]"),
                        Some(value.span().start),
                        format!("{:?} is not an IP address or ip:port", value.get_ref()),
                    ),
                }
            }
            let timeout = self.duration(
                "dns.timeout",
                raw_dns.and_then(|d| d.timeout.as_ref()),
                DEFAULT_DNS_TIMEOUT,
            );
            DnsConfig {
                nameservers,
                timeout,
            }
        };

        let entra = self.entra(raw.entra.as_ref());
        let app = raw
            .app
            .as_ref()
            .and_then(|raw_app| self.app("app", raw_app));
        let mailflow = raw
            .mailflow
            .as_ref()
            .and_then(|raw_mailflow| self.mailflow(raw_mailflow));
        let check_defaults = self.check_defaults(&raw.checks, &schedule, mailflow.as_ref());

        let mut tenants = Vec::new();
        let mut seen_names: BTreeSet<String> = BTreeSet::new();
        let mut domain_owner: BTreeMap<DomainName, String> = BTreeMap::new();
        for (idx, raw_tenant) in raw.tenants.iter().enumerate() {
            if let Some(tenant) = self.tenant(
                idx,
                raw_tenant,
                &check_defaults,
                app.as_ref(),
                mailflow.as_ref(),
                &mut seen_names,
                &mut domain_owner,
            ) {
                tenants.push(tenant);
            }
        }

        if raw.mailflow.is_none() {
            for (idx, raw_tenant) in raw.tenants.iter().enumerate() {
                if let Some(first) = raw_tenant.mailflow_to.first() {
                    self.error(
                        format!("tenants[{idx}].mailflow_to"),
                        Some(first.span().start),
                        "needs a [mailflow] section: the relay that sends the probe and the mailbox its bounces come back to",
                    );
                }
            }
        }
        if let Some(from) = mailflow.as_ref().map(|m| &m.mail_from) {
            if let Some(owner) = domain_owner.get(from.domain()) {
                self.error(
                    "mailflow.mail_from",
                    raw.mailflow.as_ref().map(|m| m.mail_from_span()),
                    format!("{from} is on tenant {owner:?}'s domain; bounces must come back to a mailbox of your own, outside the tenants watched"),
                );
            }
        }

        let alerting = self.alerting(
            raw.alerting.as_ref(),
            &raw.receivers,
            &raw.routes,
            &raw.silences,
        );
        for (i, name) in alerting.control_tenants.iter().enumerate() {
            if !raw
                .tenants
                .iter()
                .any(|tenant| tenant.name.get_ref() == name.as_str())
            {
                self.error(
                    format!("alerting.control_tenants[{i}]"),
                    None,
                    format!("no tenant named {:?}: a control tenant is a [[tenants]] entry that watches your own mail domain", name.as_str()),
                );
            }
        }
        let heartbeat = raw.heartbeat.as_ref().and_then(|raw_heartbeat| {
            let interval = self.duration(
                "heartbeat.interval",
                raw_heartbeat.interval.as_ref(),
                Duration::from_secs(60),
            );
            if interval < Duration::from_secs(10) {
                self.error(
                    "heartbeat.interval",
                    raw_heartbeat.interval.as_ref().map(|v| v.span().start),
                    "must be at least 10s",
                );
            }
            let url = self.url("heartbeat.url", &raw_heartbeat.url)?;
            Some(HeartbeatConfig { url, interval })
        });

        if !self.errors.is_empty() {
            return Err(ConfigErrors(self.errors));
        }
        let (Some(helo_name), Some(mail_from), port, extra_ca_file) = smtp else {
            // Unreachable in practice: a missing value has recorded an error above.
            return Err(ConfigErrors(self.errors));
        };
        Ok(Config {
            server,
            store,
            schedule,
            smtp: SmtpConfig {
                helo_name,
                mail_from,
                port,
                extra_ca_file,
            },
            dns,
            tenants,
            alerting,
            heartbeat,
            entra,
            mailflow,
        })
    }

    fn check_interval_and_timeout(
        &mut self,
        path: &str,
        interval_value: Option<&Spanned<String>>,
        interval: Duration,
        timeout_value: Option<&Spanned<String>>,
        timeout: Duration,
    ) {
        if interval < MIN_INTERVAL {
            self.error(
                format!("{path}.interval"),
                interval_value.map(|v| v.span().start),
                format!(
                    "must be at least {}",
                    humantime::format_duration(MIN_INTERVAL)
                ),
            );
        }
        if timeout.is_zero() || timeout >= interval {
            self.error(
                format!("{path}.timeout"),
                timeout_value.or(interval_value).map(|v| v.span().start),
                format!(
                    "must be above zero and shorter than the interval ({} >= {})",
                    humantime::format_duration(timeout),
                    humantime::format_duration(interval)
                ),
            );
        }
    }

    // Each argument is a different piece of already-validated context; bundling them in a
    // struct only for this one call would hide that.
    #[allow(clippy::too_many_arguments)]
    fn tenant(
        &mut self,
        idx: usize,
        raw: &RawTenant,
        check_defaults: &CheckDefaults,
        global_app: Option<&AppConfig>,
        mailflow: Option<&MailflowConfig>,
        seen_names: &mut BTreeSet<String>,
        domain_owner: &mut BTreeMap<DomainName, String>,
    ) -> Option<Tenant> {
        let base = format!("tenants[{idx}]");
        let errors_before = self.errors.len();

        let name = match TenantName::parse(raw.name.get_ref()) {
            Ok(name) => Some(name),
            Err(err) => {
                self.error(
                    format!("{base}.name"),
                    Some(raw.name.span().start),
                    err.to_string(),
                );
                None
            }
        };
        if !seen_names.insert(raw.name.get_ref().clone()) {
            self.error(
                format!("{base}.name"),
                Some(raw.name.span().start),
                format!("duplicate tenant name {:?}", raw.name.get_ref()),
            );
        }

        let mut domains = Vec::new();
        let spanned_domains = std::iter::once((format!("{base}.domain"), &raw.domain)).chain(
            raw.extra_domains
                .iter()
                .enumerate()
                .map(|(i, d)| (format!("{base}.extra_domains[{i}]"), d)),
        );
        for (path, value) in spanned_domains {
            let Some(domain) = self.domain(&path, value) else {
                continue;
            };
            if domains.contains(&domain) {
                self.error(
                    path,
                    Some(value.span().start),
                    format!("domain {domain} is listed twice"),
                );
                continue;
            }
            if let Some(owner) = domain_owner.get(&domain) {
                self.error(path, Some(value.span().start), format!("domain {domain} already belongs to tenant {owner:?}; a domain is verified in one tenant only"));
                continue;
            }
            domain_owner.insert(domain.clone(), raw.name.get_ref().clone());
            domains.push(domain);
        }

        let tenant_id = raw.tenant_id.as_ref().and_then(|value| {
            if is_guid(value.get_ref()) {
                Some(value.get_ref().to_ascii_lowercase())
            } else {
                self.error(
                    format!("{base}.tenant_id"),
                    Some(value.span().start),
                    format!(
                        "{:?} is not a tenant id GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
                        value.get_ref()
                    ),
                );
                None
            }
        });

        let mut accepted_mx = Vec::new();
        for (i, value) in raw.accepted_mx.iter().enumerate() {
            let path = format!("{base}.accepted_mx[{i}]");
            let suffix = value.get_ref().trim_start_matches('.');
            match DomainName::parse(suffix) {
                Ok(suffix) => accepted_mx.push(suffix.to_string()),
                Err(_) => self.error(
                    path,
                    Some(value.span().start),
                    format!(
                        "{:?} is not a host name suffix such as \"mimecast.com\"",
                        value.get_ref()
                    ),
                ),
            }
        }

        let mut watch: Vec<EmailAddress> = Vec::new();
        for (i, value) in raw.watch.iter().enumerate() {
            let path = format!("{base}.watch[{i}]");
            let Some(address) = self.address(&path, value) else {
                continue;
            };
            if !domains.contains(address.domain()) {
                self.error(path, Some(value.span().start), format!("{address} is not on one of this tenant's domains (add {} to extra_domains)", address.domain()));
            } else if watch.contains(&address) {
                self.error(
                    path,
                    Some(value.span().start),
                    format!("{address} is watched twice"),
                );
            } else {
                watch.push(address);
            }
        }

        let app = match &raw.app {
            Some(raw_app) => self.app(&format!("{base}.app"), raw_app),
            None => global_app.cloned(),
        };
        let licence = self.licence(&base, raw.licence.as_ref());

        let mut mailflow_to: Vec<EmailAddress> = Vec::new();
        for (i, value) in raw.mailflow_to.iter().enumerate() {
            let path = format!("{base}.mailflow_to[{i}]");
            let Some(address) = self.address(&path, value) else {
                continue;
            };
            if !watch.contains(&address) {
                self.error(
                    path,
                    Some(value.span().start),
                    format!("{address} is not in this tenant's watch list; add it there too"),
                );
            } else if mailflow_to.contains(&address) {
                self.error(
                    path,
                    Some(value.span().start),
                    format!("{address} is listed twice"),
                );
            } else {
                mailflow_to.push(address);
            }
        }
        let mailflow_possible = mailflow.is_some() && !mailflow_to.is_empty();

        let mut checks = BTreeMap::new();
        for kind in CheckKind::ALL {
            let mut settings = check_defaults.settings(kind);
            if kind.needs_app() {
                settings.enabled = settings.enabled && app.is_some();
            }
            if kind == CheckKind::Mailflow {
                settings.enabled = settings.enabled && mailflow_possible;
            }
            checks.insert(kind, settings);
        }
        for (key, raw_check) in &raw.checks {
            let path = format!("{base}.checks.{key}");
            match key.parse::<CheckKind>() {
                Ok(kind) => {
                    let mut settings = self.check_settings(&path, raw_check, checks[&kind]);
                    if kind.needs_app() && app.is_none() {
                        if raw_check.enabled == Some(true) {
                            self.error(
                                format!("{path}.enabled"),
                                None,
                                format!("the {kind} check needs app credentials: add [app] or this tenant's app"),
                            );
                        }
                        settings.enabled = false;
                    }
                    if kind == CheckKind::Mailflow {
                        if !mailflow_possible {
                            if raw_check.enabled == Some(true) {
                                self.error(
                                    format!("{path}.enabled"),
                                    None,
                                    "the mailflow check needs [mailflow] and this tenant's mailflow_to",
                                );
                            }
                            settings.enabled = false;
                        }
                        if let Some(mailflow) = mailflow.filter(|_| settings.enabled) {
                            self.mailflow_timeout(&path, raw_check, settings.timeout, mailflow);
                        }
                    }
                    checks.insert(kind, settings);
                }
                Err(err) => self.error(path, None, err.to_string()),
            }
        }

        if self.errors.len() > errors_before {
            return None;
        }
        let mut domains = domains.into_iter();
        Some(Tenant {
            name: name?,
            domain: domains.next()?,
            extra_domains: domains.collect(),
            tenant_id,
            accepted_mx,
            watch,
            checks,
            app,
            licence,
            mailflow_to,
        })
    }

    /// Built-in defaults per check kind, then `[checks.<kind>]` on top.
    fn check_defaults(
        &mut self,
        raw: &BTreeMap<String, RawCheck>,
        schedule: &ScheduleConfig,
        mailflow: Option<&MailflowConfig>,
    ) -> CheckDefaults {
        let mut settings = BTreeMap::new();
        for kind in CheckKind::ALL {
            let interval = default_interval(kind).unwrap_or(schedule.interval);
            let mut timeout = schedule.timeout.min(interval / 2);
            if let (CheckKind::Mailflow, Some(mailflow)) = (kind, mailflow) {
                // The probe waits bounce_wait for a DSN, so its timeout must cover that wait.
                timeout = timeout.max(mailflow.bounce_wait + mailflow::MAILFLOW_TIMEOUT_MARGIN);
            }
            settings.insert(
                kind,
                CheckSettings {
                    enabled: true,
                    interval,
                    timeout,
                },
            );
        }
        for (key, raw_check) in raw {
            let path = format!("checks.{key}");
            match key.parse::<CheckKind>() {
                Ok(kind) => {
                    let merged = self.check_settings(&path, raw_check, settings[&kind]);
                    if let (CheckKind::Mailflow, Some(mailflow)) = (kind, mailflow) {
                        self.mailflow_timeout(&path, raw_check, merged.timeout, mailflow);
                    }
                    settings.insert(kind, merged);
                }
                Err(err) => self.error(path, None, err.to_string()),
            }
        }
        if let (Some(mailflow), Some(check)) = (mailflow, settings.get(&CheckKind::Mailflow)) {
            let own = raw
                .get(CheckKind::Mailflow.as_str())
                .is_some_and(|c| c.interval.is_some() || c.timeout.is_some());
            if !own && check.timeout >= check.interval {
                self.error(
                    "mailflow.bounce_wait",
                    None,
                    format!(
                        "{} leaves no room in the mailflow check's interval of {}: shorten it or set [checks.mailflow] interval",
                        humantime::format_duration(mailflow.bounce_wait),
                        humantime::format_duration(check.interval)
                    ),
                );
            }
        }
        CheckDefaults(settings)
    }

    fn check_settings(&mut self, path: &str, raw: &RawCheck, base: CheckSettings) -> CheckSettings {
        let interval = self.duration(
            &format!("{path}.interval"),
            raw.interval.as_ref(),
            base.interval,
        );
        let default_timeout = if raw.interval.is_some() {
            base.timeout.min(interval / 2)
        } else {
            base.timeout
        };
        let timeout = self.duration(
            &format!("{path}.timeout"),
            raw.timeout.as_ref(),
            default_timeout,
        );
        if raw.interval.is_some() || raw.timeout.is_some() {
            self.check_interval_and_timeout(
                path,
                raw.interval.as_ref(),
                interval,
                raw.timeout.as_ref(),
                timeout,
            );
        }
        CheckSettings {
            enabled: raw.enabled.unwrap_or(base.enabled),
            interval,
            timeout,
        }
    }
}

impl Validator<'_> {
    /// `[server] api_token_file` / `api_token_env`: one or the other, and not empty. The value
    /// is read by the binary at start, so a missing file stops the start, not a request.
    fn api_token(
        &mut self,
        file: Option<Spanned<String>>,
        env: Option<Spanned<String>>,
    ) -> Option<SecretSource> {
        match (file, env) {
            (Some(_), Some(env)) => {
                self.error(
                    "server.api_token_env",
                    Some(env.span().start),
                    "give api_token_file or api_token_env, not both",
                );
                None
            }
            (Some(file), None) if file.get_ref().trim().is_empty() => {
                self.error(
                    "server.api_token_file",
                    Some(file.span().start),
                    "must not be empty",
                );
                None
            }
            (None, Some(env)) if env.get_ref().trim().is_empty() => {
                self.error(
                    "server.api_token_env",
                    Some(env.span().start),
                    "must not be empty",
                );
                None
            }
            (Some(file), None) => Some(SecretSource::File(PathBuf::from(file.into_inner()))),
            (None, Some(env)) => Some(SecretSource::Env(env.into_inner())),
            (None, None) => None,
        }
    }

    /// A mailflow timeout must outlast `bounce_wait`: a probe stopped before the wait ends
    /// cannot see the bounce it is waiting for.
    fn mailflow_timeout(
        &mut self,
        path: &str,
        raw: &RawCheck,
        timeout: Duration,
        mailflow: &MailflowConfig,
    ) {
        // Without its own interval or timeout an entry inherits settings checked already.
        let own = raw.interval.is_some() || raw.timeout.is_some();
        if own && timeout <= mailflow.bounce_wait {
            self.error(
                format!("{path}.timeout"),
                raw.timeout
                    .as_ref()
                    .or(raw.interval.as_ref())
                    .map(|v| v.span().start),
                format!(
                    "{} must be longer than mailflow.bounce_wait ({}), or the probe stops before a bounce can arrive; allow about a minute more for the relay and the mailbox",
                    humantime::format_duration(timeout),
                    humantime::format_duration(mailflow.bounce_wait)
                ),
            );
        }
    }
}

/// Each check kind's settings before a tenant's own `checks` apply.
struct CheckDefaults(BTreeMap<CheckKind, CheckSettings>);

impl CheckDefaults {
    fn settings(&self, kind: CheckKind) -> CheckSettings {
        self.0.get(&kind).copied().unwrap_or(CheckSettings {
            enabled: false,
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
        })
    }
}

/// Checks whose subject changes slowly or whose service limits requests get their own
/// default interval; the others follow `schedule.interval`.
fn default_interval(kind: CheckKind) -> Option<Duration> {
    match kind {
        // RDAP servers rate-limit, and a registration date moves once a year.
        CheckKind::Domain => Some(Duration::from_secs(12 * 3_600)),
        CheckKind::Licence | CheckKind::Admins => Some(Duration::from_secs(3_600)),
        // Service communications allow 240 requests a minute and 800 an hour per tenant.
        CheckKind::Health => Some(Duration::from_secs(900)),
        // Each run sends a real message into a watched mailbox.
        CheckKind::Mailflow => Some(Duration::from_secs(1_800)),
        CheckKind::Dns
        | CheckKind::SmtpRcpt
        | CheckKind::Tenant
        | CheckKind::Realm
        | CheckKind::Signin
        | CheckKind::Identity => None,
    }
}

/// Durations are strings with a unit (`"30s"`, `"5m"`, `"90d"`); bare numbers are refused
/// because "300" could mean seconds or milliseconds.
fn parse_duration(raw: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(raw.trim()).map_err(|err| {
        format!("{raw:?} is not a duration such as \"30s\", \"5m\" or \"90d\" ({err})")
    })?;
    // Far beyond any sensible setting, and far below what would overflow a deadline.
    if duration > MAX_DURATION {
        return Err(format!("{raw:?} is longer than the maximum of 3650 days"));
    }
    Ok(duration)
}

fn parse_nameserver(raw: &str) -> Option<SocketAddr> {
    raw.parse::<SocketAddr>()
        .ok()
        .or_else(|| raw.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
}

fn is_guid(raw: &str) -> bool {
    let groups: Vec<&str> = raw.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn line_of(text: &str, byte_offset: usize) -> usize {
    let end = byte_offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests;
