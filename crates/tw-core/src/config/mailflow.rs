//! `[mailflow]` and each tenant's `mailflow_to`: the relay that sends the tagged probe
//! message and the mailbox its bounces come back to.
//!
//! Both must be outside Microsoft: the check exists to see a tenant's inbound mail fail from
//! where Microsoft's own failure cannot hide it, so a relay or bounce mailbox on Exchange
//! Online is refused, and so is an envelope sender on a monitored tenant's domain (its bounces
//! would land in the tenant under watch). Credentials are named by reference
//! (`relay_password_file`, `imap_password_env`, …), never inline, like receivers' and apps'.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{EmailTls, SecretSource, Validator};
use crate::{DomainName, EmailAddress};

const DEFAULT_BOUNCE_WAIT: Duration = Duration::from_secs(120);
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
const MIN_BOUNCE_WAIT: Duration = Duration::from_secs(5);
const MAX_BOUNCE_WAIT: Duration = Duration::from_secs(3_600);
/// What the check needs beyond `bounce_wait`: the relay session before it and the last search
/// and clean-up after it. The default timeout is `bounce_wait` plus this.
pub(super) const MAILFLOW_TIMEOUT_MARGIN: Duration = Duration::from_secs(60);

/// Host name suffixes of Microsoft's mail and login services.
const MICROSOFT_SUFFIXES: [&str; 10] = [
    "outlook.com",
    "office365.com",
    "office.com",
    "office.net",
    "microsoft.com",
    "microsoft",
    "onmicrosoft.com",
    "microsoftonline.com",
    "office365.us",
    "outlook.cn",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMailflow {
    relay_host: Spanned<String>,
    relay_port: Option<Spanned<i64>>,
    relay_tls: Option<Spanned<String>>,
    relay_username: Option<String>,
    relay_password_file: Option<String>,
    relay_password_env: Option<String>,
    helo_name: Option<Spanned<String>>,
    mail_from: Spanned<String>,
    imap_host: Spanned<String>,
    imap_port: Option<Spanned<i64>>,
    imap_tls: Option<Spanned<String>>,
    imap_username: Spanned<String>,
    imap_password_file: Option<String>,
    imap_password_env: Option<String>,
    imap_folder: Option<Spanned<String>>,
    bounce_wait: Option<Spanned<String>>,
    poll_interval: Option<Spanned<String>>,
    extra_ca_file: Option<String>,
}

/// The mailflow check's relay and bounce mailbox.
#[derive(Debug, Clone, PartialEq)]
pub struct MailflowConfig {
    /// The SMTP submission relay (not Microsoft's).
    pub relay_host: String,
    pub relay_port: u16,
    /// STARTTLS (default port 587) or TLS from the first byte (default port 465).
    pub relay_tls: EmailTls,
    /// AUTH credentials; both or neither.
    pub relay_username: Option<String>,
    pub relay_password: Option<SecretSource>,
    /// The EHLO name; the domain of `mail_from` unless given.
    pub helo_name: DomainName,
    /// The envelope sender: a mailbox on the MSP's own, non-Microsoft mail system, which
    /// receives the bounces.
    pub mail_from: EmailAddress,
    pub imap_host: String,
    pub imap_port: u16,
    /// TLS from the first byte (default port 993) or STARTTLS (default port 143).
    pub imap_tls: EmailTls,
    pub imap_username: String,
    pub imap_password: SecretSource,
    /// The folder bounces arrive in.
    pub imap_folder: String,
    /// How long to wait for a bounce after the relay took the message.
    pub bounce_wait: Duration,
    /// How often the bounce mailbox is searched while waiting.
    pub poll_interval: Duration,
    /// PEM file with extra certificate authorities trusted for the relay and IMAP.
    pub extra_ca_file: Option<PathBuf>,
}

/// Whether `host` is one of Microsoft's (a name under one of its mail or login domains).
pub(super) fn is_microsoft_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    MICROSOFT_SUFFIXES
        .iter()
        .any(|suffix| host == *suffix || host.ends_with(&format!(".{suffix}")))
}

impl RawMailflow {
    pub(super) fn mail_from_span(&self) -> usize {
        self.mail_from.span().start
    }
}

impl Validator<'_> {
    pub(super) fn mailflow(&mut self, raw: &RawMailflow) -> Option<MailflowConfig> {
        let errors_before = self.errors.len();
        let relay_host = self.mail_host("mailflow.relay_host", &raw.relay_host);
        let relay_tls = self.mail_tls(
            "mailflow.relay_tls",
            raw.relay_tls.as_ref(),
            EmailTls::StartTls,
        );
        let relay_port = self.mail_port(
            "mailflow.relay_port",
            raw.relay_port.as_ref(),
            if relay_tls == EmailTls::Implicit {
                465
            } else {
                587
            },
        );
        let relay_password = self.password(
            "mailflow.relay_password",
            &raw.relay_password_file,
            &raw.relay_password_env,
        );
        let relay_username = raw
            .relay_username
            .as_ref()
            .map(|user| user.trim().to_owned());
        match (&relay_username, &relay_password) {
            (Some(user), _) if user.is_empty() => {
                self.error("mailflow.relay_username", None, "must not be empty")
            }
            (Some(_), None) => self.error(
                "mailflow.relay_password_file",
                None,
                "relay_username needs relay_password_file or relay_password_env",
            ),
            (None, Some(_)) => self.error(
                "mailflow.relay_username",
                None,
                "a relay password needs relay_username",
            ),
            _ => {}
        }
        let mail_from = self.address("mailflow.mail_from", &raw.mail_from);
        if let Some(from) = &mail_from {
            if is_microsoft_host(from.domain().as_str()) {
                self.error(
                    "mailflow.mail_from",
                    Some(raw.mail_from.span().start),
                    format!("{from} is on a Microsoft domain; bounces must come back to a mailbox outside Microsoft"),
                );
            }
        }
        let helo_name = match &raw.helo_name {
            Some(value) => self.domain("mailflow.helo_name", value),
            None => mail_from.as_ref().map(|from| from.domain().clone()),
        };
        let imap_host = self.mail_host("mailflow.imap_host", &raw.imap_host);
        let imap_tls = self.mail_tls(
            "mailflow.imap_tls",
            raw.imap_tls.as_ref(),
            EmailTls::Implicit,
        );
        let imap_port = self.mail_port(
            "mailflow.imap_port",
            raw.imap_port.as_ref(),
            if imap_tls == EmailTls::Implicit {
                993
            } else {
                143
            },
        );
        let imap_username = raw.imap_username.get_ref().trim().to_owned();
        if imap_username.is_empty() {
            self.error(
                "mailflow.imap_username",
                Some(raw.imap_username.span().start),
                "must not be empty",
            );
        }
        let imap_password = self.password(
            "mailflow.imap_password",
            &raw.imap_password_file,
            &raw.imap_password_env,
        );
        if imap_password.is_none() && self.errors.len() == errors_before {
            self.error(
                "mailflow.imap_password_file",
                None,
                "required: imap_password_file or imap_password_env",
            );
        }
        let imap_folder = match &raw.imap_folder {
            None => "INBOX".to_owned(),
            Some(value) => {
                let folder = value.get_ref().trim();
                if folder.is_empty() || folder.contains(['\r', '\n', '"', '\\']) {
                    self.error(
                        "mailflow.imap_folder",
                        Some(value.span().start),
                        format!(
                            "{:?} is not a folder name (no quotes, backslashes or line breaks)",
                            value.get_ref()
                        ),
                    );
                }
                folder.to_owned()
            }
        };
        let bounce_wait = self.duration(
            "mailflow.bounce_wait",
            raw.bounce_wait.as_ref(),
            DEFAULT_BOUNCE_WAIT,
        );
        if !(MIN_BOUNCE_WAIT..=MAX_BOUNCE_WAIT).contains(&bounce_wait) {
            self.error(
                "mailflow.bounce_wait",
                raw.bounce_wait.as_ref().map(|v| v.span().start),
                "must be between 5s and 1h",
            );
        }
        let poll_interval = self.duration(
            "mailflow.poll_interval",
            raw.poll_interval.as_ref(),
            DEFAULT_POLL_INTERVAL.min(bounce_wait),
        );
        if poll_interval < Duration::from_secs(1) || poll_interval > bounce_wait {
            self.error(
                "mailflow.poll_interval",
                raw.poll_interval.as_ref().map(|v| v.span().start),
                "must be at least 1s and no longer than bounce_wait",
            );
        }
        if self.errors.len() > errors_before {
            return None;
        }
        Some(MailflowConfig {
            relay_host: relay_host?,
            relay_port,
            relay_tls,
            relay_username,
            relay_password,
            helo_name: helo_name?,
            mail_from: mail_from?,
            imap_host: imap_host?,
            imap_port,
            imap_tls,
            imap_username,
            imap_password: imap_password?,
            imap_folder,
            bounce_wait,
            poll_interval,
            extra_ca_file: raw.extra_ca_file.as_ref().map(PathBuf::from),
        })
    }

    /// A host name or IP address that is not Microsoft's.
    fn mail_host(&mut self, path: &str, value: &Spanned<String>) -> Option<String> {
        let host = value.get_ref().trim();
        let well_formed = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:_".contains(&b));
        if !well_formed {
            self.error(
                path,
                Some(value.span().start),
                format!("{:?} is not a host name or IP address", value.get_ref()),
            );
            return None;
        }
        if is_microsoft_host(host) {
            self.error(
                path,
                Some(value.span().start),
                format!("{host} is Microsoft's; the mailflow check must send and read bounces outside Microsoft, or it fails together with what it watches"),
            );
            return None;
        }
        Some(host.to_ascii_lowercase())
    }

    fn mail_tls(
        &mut self,
        path: &str,
        value: Option<&Spanned<String>>,
        default: EmailTls,
    ) -> EmailTls {
        match value.map(|v| v.get_ref().as_str()) {
            None => default,
            Some("starttls") => EmailTls::StartTls,
            Some("implicit") => EmailTls::Implicit,
            Some(other) => {
                self.error(
                    path,
                    value.map(|v| v.span().start),
                    format!("{other:?} is not \"starttls\" or \"implicit\" (plaintext is not supported)"),
                );
                default
            }
        }
    }

    fn mail_port(&mut self, path: &str, value: Option<&Spanned<i64>>, default: u16) -> u16 {
        let Some(value) = value else { return default };
        match u16::try_from(*value.get_ref()) {
            Ok(port) if port > 0 => port,
            _ => {
                self.error(
                    path,
                    Some(value.span().start),
                    format!("must be a TCP port 1-65535, got {}", value.get_ref()),
                );
                default
            }
        }
    }

    fn password(
        &mut self,
        what: &str,
        file: &Option<String>,
        env: &Option<String>,
    ) -> Option<SecretSource> {
        match (file, env) {
            (Some(_), Some(_)) => {
                self.error(
                    format!("{what}_env"),
                    None,
                    "give the file or the environment variable, not both",
                );
                None
            }
            (Some(file), None) if !file.trim().is_empty() => {
                Some(SecretSource::File(PathBuf::from(file)))
            }
            (None, Some(env)) if !env.trim().is_empty() => Some(SecretSource::Env(env.clone())),
            (None, None) => None,
            (Some(_), None) => {
                self.error(format!("{what}_file"), None, "must not be empty");
                None
            }
            (None, Some(_)) => {
                self.error(format!("{what}_env"), None, "must not be empty");
                None
            }
        }
    }
}
