//! Validated names: tenants, domains, e-mail addresses and check kinds.
//!
//! Each is parsed once at the config boundary so the rest of the code never re-checks a
//! string. The check kind has one spelling everywhere: config key, module, metric label, CLI.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("tenant name {0:?} must be 1-64 characters of a-z, 0-9, '-', '_' or '.'")]
    Tenant(String),
    #[error("{0:?} is not a valid domain name (letters, digits and '-' in dot-separated labels, at least two labels)")]
    Domain(String),
    #[error("{0:?} is not a valid e-mail address (expected local-part@domain)")]
    Address(String),
    #[error("unknown check kind {0:?} (known: {known})", known = CheckKind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", "))]
    CheckKind(String),
}

/// A tenant's name as the operator wrote it in config; used in metric labels, so it is
/// restricted to characters that need no escaping anywhere.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TenantName(String);

impl TenantName {
    pub fn parse(raw: &str) -> Result<TenantName, NameError> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
        if ok {
            Ok(TenantName(raw.to_owned()))
        } else {
            Err(NameError::Tenant(raw.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A DNS domain name, lower-cased, without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainName(String);

impl DomainName {
    pub fn parse(raw: &str) -> Result<DomainName, NameError> {
        let lowered = raw.trim_end_matches('.').to_ascii_lowercase();
        let labels: Vec<&str> = lowered.split('.').collect();
        let label_ok = |label: &&str| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        };
        if lowered.len() <= 253 && labels.len() >= 2 && labels.iter().all(label_ok) {
            Ok(DomainName(lowered))
        } else {
            Err(NameError::Domain(raw.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name with every dot replaced by a dash, as Microsoft builds MX and DKIM targets
    /// (`contoso.com` → `contoso-com`).
    pub fn dashed(&self) -> String {
        self.0.replace('.', "-")
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An SMTP mailbox address `local@domain`; the domain part is normalised to lower case, the
/// local part kept as written (it is case-sensitive in principle, though Exchange ignores case).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EmailAddress {
    local: String,
    domain: DomainName,
}

impl EmailAddress {
    pub fn parse(raw: &str) -> Result<EmailAddress, NameError> {
        let err = || NameError::Address(raw.to_owned());
        let (local, domain) = raw.rsplit_once('@').ok_or_else(err)?;
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b));
        if !local_ok {
            return Err(err());
        }
        let domain = DomainName::parse(domain).map_err(|_| err())?;
        Ok(EmailAddress {
            local: local.to_owned(),
            domain,
        })
    }

    pub fn local_part(&self) -> &str {
        &self.local
    }

    pub fn domain(&self) -> &DomainName {
        &self.domain
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// The kinds of check tenantwatch runs. A closed set: every variant is matched explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CheckKind {
    Dns,
    SmtpRcpt,
    /// OpenID discovery for each tenant domain (no credentials).
    Tenant,
    /// User realm discovery per watched identity (no credentials).
    Realm,
    /// RDAP registration expiry of each tenant domain (no credentials).
    Domain,
    /// A client-credentials token for the MSP's app in the tenant.
    Signin,
    /// Graph user lookup per watched identity.
    Identity,
    /// Subscribed SKUs, subscriptions and each watched identity's mailbox plan.
    Licence,
    /// Number of enabled Global Administrators.
    Admins,
    /// Microsoft's service health for Exchange Online and Entra ID.
    Health,
    /// A tagged message through a non-Microsoft relay to a watched mailbox, and the bounces
    /// for it read back over IMAP (needs `[mailflow]`, not the app).
    Mailflow,
}

impl CheckKind {
    pub const ALL: [CheckKind; 11] = [
        CheckKind::Dns,
        CheckKind::SmtpRcpt,
        CheckKind::Tenant,
        CheckKind::Realm,
        CheckKind::Domain,
        CheckKind::Signin,
        CheckKind::Identity,
        CheckKind::Licence,
        CheckKind::Admins,
        CheckKind::Health,
        CheckKind::Mailflow,
    ];

    /// Checks that call Microsoft Graph or the token endpoint with the MSP's app; they run
    /// only for tenants with app credentials.
    pub fn needs_app(self) -> bool {
        matches!(
            self,
            CheckKind::Signin
                | CheckKind::Identity
                | CheckKind::Licence
                | CheckKind::Admins
                | CheckKind::Health
        )
    }

    /// The one spelling used in config, metrics, the CLI and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Dns => "dns",
            CheckKind::SmtpRcpt => "smtp_rcpt",
            CheckKind::Tenant => "tenant",
            CheckKind::Realm => "realm",
            CheckKind::Domain => "domain",
            CheckKind::Signin => "signin",
            CheckKind::Identity => "identity",
            CheckKind::Licence => "licence",
            CheckKind::Admins => "admins",
            CheckKind::Health => "health",
            CheckKind::Mailflow => "mailflow",
        }
    }
}

impl FromStr for CheckKind {
    type Err = NameError;

    fn from_str(raw: &str) -> Result<CheckKind, NameError> {
        CheckKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == raw)
            .ok_or_else(|| NameError::CheckKind(raw.to_owned()))
    }
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_domain(raw: &str, expect: Option<&str>) {
        assert_eq!(
            DomainName::parse(raw).ok().as_ref().map(DomainName::as_str),
            expect,
            "{raw}"
        );
    }

    fn check_address(raw: &str, valid: bool) {
        assert_eq!(EmailAddress::parse(raw).is_ok(), valid, "{raw}");
    }

    #[test]
    fn domains_are_lowercased_and_validated() {
        check_domain("Contoso.COM", Some("contoso.com"));
        check_domain("contoso.com.", Some("contoso.com"));
        check_domain("contoso.onmicrosoft.com", Some("contoso.onmicrosoft.com"));
        check_domain("localhost", None);
        check_domain("-bad.com", None);
        check_domain("bad-.com", None);
        check_domain("a..com", None);
        check_domain("exa mple.com", None);
        check_domain("", None);
    }

    #[test]
    fn addresses_need_a_plain_local_part_and_a_domain() {
        check_address("admin@contoso.com", true);
        check_address("first.last+tag@contoso.com", true);
        check_address("admin@localhost", false);
        check_address("@contoso.com", false);
        check_address("admin", false);
        check_address("ad min@contoso.com", false);
        check_address("<admin@contoso.com>", false);
        check_address(".admin@contoso.com", false);
    }

    #[test]
    fn check_kinds_round_trip_through_their_one_spelling() {
        for kind in CheckKind::ALL {
            assert_eq!(kind.as_str().parse::<CheckKind>(), Ok(kind));
        }
        assert!("smtp".parse::<CheckKind>().is_err());
    }

    #[test]
    fn dashed_domain_matches_microsoft_mx_naming() {
        assert_eq!(
            DomainName::parse("contoso.co.uk").unwrap().dashed(),
            "contoso-co-uk"
        );
    }
}
