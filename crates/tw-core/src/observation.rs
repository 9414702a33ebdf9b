//! What a probe saw: status, reason, evidence and timings.
//!
//! `Status::Unknown` is the only way to say "could not tell". Only classifiers that saw
//! positive evidence produce `Critical`; their table tests enforce it. `Evidence` is the one
//! serialisable type here on purpose: it is stored as JSON (with [`EVIDENCE_VERSION`]) and
//! shown in reports, so its shape is a compatibility boundary.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{CheckKind, TenantName, Timestamp};

/// Bumped whenever a stored `Evidence` field changes meaning or disappears.
pub const EVIDENCE_VERSION: u32 = 1;

/// The verdict of one observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::Ok,
        Status::Warning,
        Status::Critical,
        Status::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Critical => "critical",
            Status::Unknown => "unknown",
        }
    }

    /// The Nagios plugin convention, also used as the value of the status gauge:
    /// 0 ok, 1 warning, 2 critical, 3 unknown.
    pub fn code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Warning => 1,
            Status::Critical => 2,
            Status::Unknown => 3,
        }
    }

    pub fn from_code(code: i64) -> Option<Status> {
        Status::ALL
            .into_iter()
            .find(|s| i64::from(s.code()) == code)
    }

    /// How bad a status is when several findings are folded into one verdict:
    /// critical > warning > unknown > ok. Unknown ranks below warning because a positive
    /// finding of degradation says more than a failed look.
    pub fn severity(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Unknown => 1,
            Status::Warning => 2,
            Status::Critical => 3,
        }
    }

    pub fn worst(self, other: Status) -> Status {
        if other.severity() > self.severity() {
            other
        } else {
            self
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! reasons {
    ($( $variant:ident => $label:literal, $status:ident, $doc:literal; )*) => {
        /// Why a verdict was reached. A closed set: `as_str()` is the metric label (bounded
        /// cardinality), the observation's `summary` carries the specifics.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $( #[doc = $doc] $variant, )*
        }

        impl Reason {
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self { $(Reason::$variant => $label,)* }
            }

            /// The status this reason implies. Classifiers pick a reason; the status
            /// follows from it, so a reason can never be paired with the wrong verdict.
            pub fn status(self) -> Status {
                match self { $(Reason::$variant => Status::$status,)* }
            }

            pub fn describe(self) -> &'static str {
                match self { $(Reason::$variant => $doc,)* }
            }

            pub fn parse(label: &str) -> Option<Reason> {
                Reason::ALL.iter().copied().find(|r| r.as_str() == label)
            }
        }
    };
}

reasons! {
    RecipientAccepted => "recipient_accepted", Ok, "the MX accepted the recipient at RCPT (the address is in the directory)";
    DnsRecordsOk => "dns_records_ok", Ok, "MX, SPF, DKIM, DMARC and autodiscover records are as expected";
    RecipientNotFound => "recipient_not_found", Critical, "the MX rejected the recipient as unknown while rejecting the control address too";
    DomainNotAccepted => "domain_not_accepted", Critical, "the MX no longer accepts mail for the domain (relay access denied)";
    MxMissing => "mx_missing", Critical, "the domain has no MX record";
    MxNotMicrosoft => "mx_not_microsoft", Critical, "the MX no longer points at Exchange Online Protection";
    DomainNotFound => "domain_not_found", Critical, "the domain does not exist in DNS (NXDOMAIN)";
    DnsDrift => "dns_drift", Warning, "DNS records changed since the last run";
    SpfMissing => "spf_missing", Warning, "SPF does not include spf.protection.outlook.com";
    DkimMissing => "dkim_missing", Warning, "a DKIM selector CNAME is missing";
    DmarcMissing => "dmarc_missing", Warning, "no DMARC record";
    AutodiscoverMissing => "autodiscover_missing", Warning, "no autodiscover CNAME";
    AcceptsAllRecipients => "accepts_all_recipients", Unknown, "the domain accepts every recipient (the control address was accepted), so RCPT cannot tell";
    ProbeSourceBlocked => "probe_source_blocked", Unknown, "the receiving side blocks the probe's own IP or sender";
    TemporaryFailure => "temporary_failure", Unknown, "the server answered with a temporary (4xx) failure";
    UnexpectedReply => "unexpected_reply", Unknown, "a permanent reply that does not say the recipient is gone";
    ProtocolError => "protocol_error", Unknown, "the server's reply could not be parsed";
    MxUnresolvable => "mx_unresolvable", Unknown, "the MX host could not be resolved";
    ConnectFailed => "connect_failed", Unknown, "the TCP connection could not be made";
    Timeout => "timeout", Unknown, "no answer within the probe timeout";
    ConnectionDropped => "connection_dropped", Unknown, "the server closed the connection mid-dialogue";
    TlsFailed => "tls_failed", Unknown, "STARTTLS failed (handshake or certificate)";
    DnsUnavailable => "dns_unavailable", Unknown, "DNS lookups failed (timeout or server failure)";
    Shutdown => "shutdown", Unknown, "the daemon shut down before the probe finished";
    // tenant (OpenID discovery)
    TenantKnown => "tenant_known", Ok, "Entra ID knows the domain and it belongs to the expected tenant";
    TenantUnknown => "tenant_unknown", Critical, "Entra ID does not know the tenant or domain (AADSTS90002)";
    TenantMoved => "tenant_moved", Critical, "the domain now resolves to another tenant id";
    // realm (user realm discovery)
    RealmOk => "realm_ok", Ok, "the identity's domain is Managed or Federated in Entra ID";
    RealmUnknown => "realm_unknown", Critical, "Entra ID reports the identity's domain as Unknown";
    RealmChanged => "realm_changed", Warning, "the domain's namespace type changed (Managed <-> Federated) or it sits in an unmanaged tenant";
    // domain (RDAP)
    RegistrationOk => "registration_ok", Ok, "the domain registration is not close to expiry";
    RegistrationExpiring => "registration_expiring", Warning, "the domain registration expires within the warning threshold";
    RegistrationExpiringSoon => "registration_expiring_soon", Critical, "the domain registration expires within the critical threshold";
    RegistrationExpired => "registration_expired", Critical, "the domain registration has expired or is on hold, in redemption or pending delete";
    RdapUnavailable => "rdap_unavailable", Unknown, "no RDAP service covers the domain, or it did not answer usefully";
    // signin (client-credentials token)
    TokenIssued => "token_issued", Ok, "Entra ID issued an app-only token for the tenant";
    MonitorAccessLost => "monitor_access_lost", Critical, "the app is gone from the tenant, disabled, or its consent was revoked";
    CredentialInvalid => "credential_invalid", Critical, "the app's client secret or certificate was refused";
    CredentialExpired => "credential_expired", Critical, "the app's client secret or certificate has expired";
    CredentialExpiring => "credential_expiring", Warning, "the app's client secret or certificate expires soon";
    BlockedByPolicy => "blocked_by_policy", Critical, "a tenant policy (conditional access, security defaults) blocks the app";
    ServiceDisabled => "service_disabled", Warning, "a resource service principal is disabled or not subscribed (often a lapsed subscription)";
    MonitorMisconfigured => "monitor_misconfigured", Unknown, "the request was refused for a reason on the monitor's side (config, wrong cloud, clock)";
    // identity (Graph user)
    IdentityOk => "identity_ok", Ok, "the user exists, is enabled and still carries the watched address";
    IdentityDeleted => "identity_deleted", Critical, "the user was deleted and sits in deleted items (restorable for 30 days)";
    IdentityNotFound => "identity_not_found", Critical, "the user does not exist and is not in deleted items";
    IdentityDisabled => "identity_disabled", Critical, "the user account is disabled";
    AddressRemoved => "address_removed", Critical, "the watched address is no longer among the user's addresses";
    // licence (SKUs, subscriptions, mailbox plan)
    LicencesOk => "licences_ok", Ok, "SKUs and subscriptions are enabled and watched identities keep their mailbox plan";
    LicenceGrace => "licence_grace", Warning, "a SKU or subscription is in its grace period (Warning)";
    LicenceSuspended => "licence_suspended", Critical, "a SKU or subscription is Suspended or LockedOut";
    LicenceLapsed => "licence_lapsed", Critical, "a trial or hand-renewed subscription passed its end date";
    RenewalDue => "renewal_due", Warning, "a trial or hand-renewed subscription ends within a warning threshold";
    SeatsOverConsumed => "seats_over_consumed", Warning, "more licences are assigned than the SKU has enabled seats";
    MailboxPlanLost => "mailbox_plan_lost", Warning, "a watched identity lost its Exchange mailbox plan (the mailbox will be disconnected)";
    // admins (Global Administrators)
    AdminsOk => "admins_ok", Ok, "two or more enabled Global Administrators";
    SingleAdmin => "single_admin", Warning, "only one enabled Global Administrator (no independent second admin identity)";
    NoAdmin => "no_admin", Critical, "no enabled Global Administrator";
    // health (Microsoft service health)
    ServiceOperational => "service_operational", Ok, "Microsoft reports Exchange Online and Entra ID operational";
    ServiceIssueReported => "service_issue_reported", Ok, "Microsoft reports an issue (kept as context; not alerting by default)";
    ServiceDegraded => "service_degraded", Warning, "Microsoft reports Exchange Online or Entra ID degraded or interrupted (alerting enabled)";
    // HTTP faults shared by the Entra, Graph and RDAP checks
    Throttled => "throttled", Unknown, "the service throttled the monitor (429 or a throttling code)";
    ServiceUnavailable => "service_unavailable", Unknown, "the service answered with a server error or a transient code";
    PermissionDenied => "permission_denied", Unknown, "the app lacks the permission to read this (403)";
    NoToken => "no_token", Unknown, "no app token for the tenant, so Graph could not be asked";
    HttpError => "http_error", Unknown, "an HTTP answer the check does not recognise";
    MalformedResponse => "malformed_response", Unknown, "the response body was not the expected JSON";
    // mailflow (a tagged message through a non-Microsoft relay, bounces read over IMAP)
    NoBounce => "no_bounce", Ok, "the relay took the probe message and no delivery status notification (DSN) came back within the wait";
    MailBounced => "mail_bounced", Critical, "a DSN says the recipient is unknown or unresolvable (5.1.x such as 5.1.1 or 5.1.10, or 5.4.1)";
    MailDelayed => "mail_delayed", Warning, "a DSN says delivery to the recipient is delayed (action delayed, a 4.x.x status)";
    MailFailed => "mail_failed", Warning, "a DSN reports a permanent failure on the recipient's side that does not say the recipient is gone (mailbox full or disabled, routing loop, message expired in the queue)";
    BounceInconclusive => "bounce_inconclusive", Unknown, "a DSN reports a failure for a reason on the sending side or in policy (5.7.x, 5.5.x, 5.6.x, a sender or syntax status): it does not tell whether the mailbox works";
    RelayFailed => "relay_failed", Unknown, "the submission relay could not be reached or did not take the probe message (connect, TLS, AUTH, MAIL, RCPT or DATA)";
    MailArrived => "mail_arrived", Ok, "no DSN came back and Graph found the probe message in the recipient's mailbox";
    MailNotArrived => "mail_not_arrived", Critical, "no DSN came back, but Graph did not find the probe message in the recipient's mailbox within the wait";
    MailboxUnreadable => "mailbox_unreadable", Unknown, "the bounce mailbox could not be read over IMAP (connect, TLS, login or folder)";
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// DNS record values by label (`mx`, `spf`, …), each list sorted.
pub type RecordSet = BTreeMap<String, Vec<String>>;

/// One probe result about one target (a watched address, a domain).
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub tenant: TenantName,
    pub check: CheckKind,
    /// What was judged: the watched address for `smtp_rcpt`, the domain for `dns`.
    pub target: String,
    pub scheduled_for: Timestamp,
    pub started_at: Timestamp,
    pub elapsed: Duration,
    pub status: Status,
    pub reason: Reason,
    /// One human line with the specifics, e.g. the reply that decided it.
    pub summary: String,
    pub evidence: Evidence,
}

impl Observation {
    /// Scheduling lateness: how long after its due time the probe started.
    pub fn lateness(&self) -> Duration {
        Duration::from_millis(self.started_at.millis_since(self.scheduled_for))
    }
}

/// What was seen, per check kind. Stored as JSON; never contains a credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Evidence {
    None,
    Dns(DnsEvidence),
    SmtpRcpt(SmtpEvidence),
    /// Entra ID, Graph and RDAP checks: the HTTP exchanges and what was read from them.
    Http(HttpEvidence),
    /// The mailflow check: the probe message, the relay dialogue and any bounce for it.
    /// Boxed: it is by far the largest variant, and most evidence is of the other kinds.
    Mailflow(Box<MailflowEvidence>),
}

/// The facts an HTTP check needs again on its next run (and after a restart): the object id
/// of a watched identity, the namespace type of its domain, the tenant id a domain resolved
/// to. The store keeps these and nothing else of `HttpEvidence::facts` beyond the evidence.
pub const REMEMBERED_FACTS: [&str; 3] = ["object_id", "namespace_type", "tenant_id"];

/// What an HTTP-based check saw. Never holds a token, secret or assertion.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HttpEvidence {
    /// Every request made, in order, retries included.
    pub exchanges: Vec<HttpExchange>,
    /// What the check read, by name (`tenant_id`, `namespace_type`, `object_id`,
    /// `deleted_at`, `restorable_until`, `expires_at`, …).
    pub facts: BTreeMap<String, String>,
    /// One human line per finding (`SKU ENTERPRISEPREMIUM is Suspended`).
    pub findings: Vec<String>,
}

/// One request and its answer, with the identifiers Microsoft support asks for.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HttpExchange {
    pub method: String,
    /// Scheme, host and path with the query; never carries a credential.
    pub url: String,
    pub status: Option<u16>,
    pub elapsed_ms: u64,
    /// The `client-request-id` the probe sent.
    pub client_request_id: Option<String>,
    /// `request-id` (Graph) or `x-ms-request-id` (login) of the answer.
    pub request_id: Option<String>,
    /// Graph `error.code` or OAuth `error`.
    pub error_code: Option<String>,
    /// AADSTS numbers from `error_codes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aadsts: Vec<u32>,
    pub trace_id: Option<String>,
    pub correlation_id: Option<String>,
    /// Seconds the server asked to wait (`Retry-After`).
    pub retry_after_s: Option<u64>,
    /// Transport failure or decoding problem, when there was one.
    pub error: Option<String>,
}

/// What the mailflow check saw. The relay's AUTH exchange appears only as `[redacted]`; no
/// password, in clear or base64, is ever part of it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MailflowEvidence {
    /// The unique tag of this probe message (in its Message-ID, subject and
    /// `X-Tenantwatch-Probe` header); a DSN is matched to the probe by it.
    pub tag: String,
    /// The probe message's Message-ID, angle brackets included.
    pub message_id: String,
    pub mail_from: String,
    pub rcpt_to: String,
    /// The relay as `host:port`.
    pub relay: String,
    /// When the relay accepted the message (its reply to the end of DATA).
    pub sent_at: Option<Timestamp>,
    /// The relay's reply to the message, which usually names its queue id.
    pub relay_reply: Option<String>,
    /// The SMTP dialogue with the relay; AUTH lines redacted.
    pub relay_transcript: Vec<TranscriptLine>,
    /// The bounce mailbox as `user@host:port/folder`.
    pub mailbox: String,
    /// The IMAP dialogue (login redacted, message contents left out), shortened when long.
    pub imap_transcript: Vec<TranscriptLine>,
    /// How often the bounce mailbox was searched for a DSN.
    pub polls: u32,
    /// How long the check waited for a DSN after the relay accepted the message.
    pub waited_ms: u64,
    /// The DSN for this probe, when one came back.
    pub dsn: Option<DsnEvidence>,
    /// Messages deleted from the bounce mailbox: this probe's DSN and stale probe DSNs.
    pub deleted: Vec<String>,
    /// One human line per noteworthy thing (a DSN for another probe, a clean-up failure).
    pub findings: Vec<String>,
    /// Arrival confirmed through Graph, for tenants with the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrival: Option<ArrivalEvidence>,
}

/// What Graph said about the probe message in the recipient's mailbox.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ArrivalEvidence {
    /// Whether the message was found.
    pub found: bool,
    /// Its `receivedDateTime`.
    pub received_at: Option<Timestamp>,
    /// From the relay's acceptance to `receivedDateTime`: the end-to-end latency.
    pub latency_ms: Option<u64>,
    /// Whether the probe message was deleted afterwards.
    pub deleted: bool,
    /// The Graph requests (lookups and the delete), with their request ids.
    pub exchanges: Vec<HttpExchange>,
}

/// The per-recipient fields of a delivery status notification (RFC 3464), as written.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DsnEvidence {
    /// `Action:` (failed, delayed, delivered, relayed, expanded).
    pub action: String,
    /// `Status:`, the enhanced status code such as `5.1.10`.
    pub status: String,
    /// `Diagnostic-Code:` such as `smtp; 550 5.1.10 RESOLVER.ADR.RecipientNotFound; …`.
    pub diagnostic_code: Option<String>,
    /// `Reporting-MTA:` such as `dns; AM0PR01MB1234.eurprd01.prod.outlook.com`.
    pub reporting_mta: Option<String>,
    /// `Remote-MTA:`, the server that gave the diagnostic, when named.
    pub remote_mta: Option<String>,
    /// `Final-Recipient:` such as `rfc822; admin@contoso.com`.
    pub final_recipient: Option<String>,
    /// The DSN's own `Subject:` and `Date:` headers.
    pub subject: Option<String>,
    pub date: Option<String>,
    /// Milliseconds from the relay's acceptance to the DSN being found.
    pub found_after_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DnsEvidence {
    pub domain: String,
    /// Record set by label (`mx`, `spf`, `ms_verification`, `dkim_selector1`,
    /// `dkim_selector2`, `dmarc`, `autodiscover`), each value list sorted.
    pub records: RecordSet,
    /// Lookups that failed, by label, with the error; these labels are absent from `records`.
    pub lookup_errors: BTreeMap<String, String>,
    pub findings: Vec<DnsFinding>,
    /// Human-readable changes against the previous record set (`mx: [a] -> [b]`).
    pub drift: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsFinding {
    pub record: String,
    pub status: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SmtpEvidence {
    pub mx_host: Option<String>,
    /// The address and port actually connected to.
    pub peer: Option<String>,
    pub tls: Option<TlsEvidence>,
    pub transcript: Vec<TranscriptLine>,
    /// One entry per RCPT sent, the control address included.
    pub rcpt: Vec<RcptVerdict>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TlsEvidence {
    pub established: bool,
    pub protocol: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Sent by the probe.
    Client,
    /// Received from the server.
    Server,
    /// Something the probe noted (connect, TLS, timeout, close).
    Note,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptLine {
    /// Milliseconds since the session started.
    pub at_ms: u64,
    pub direction: Direction,
    pub line: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RcptVerdict {
    pub address: String,
    /// True for the random address that must not exist.
    pub control: bool,
    pub code: Option<u16>,
    /// Enhanced status code (RFC 3463) such as `5.4.1`, when the reply carried one.
    pub enhanced: Option<String>,
    pub text: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reasons_with_positive_evidence_are_critical() {
        let critical: Vec<&str> = Reason::ALL
            .iter()
            .filter(|r| r.status() == Status::Critical)
            .map(|r| r.as_str())
            .collect();
        assert_eq!(
            critical,
            [
                "recipient_not_found",
                "domain_not_accepted",
                "mx_missing",
                "mx_not_microsoft",
                "domain_not_found",
                "tenant_unknown",
                "tenant_moved",
                "realm_unknown",
                "registration_expiring_soon",
                "registration_expired",
                "monitor_access_lost",
                "credential_invalid",
                "credential_expired",
                "blocked_by_policy",
                "identity_deleted",
                "identity_not_found",
                "identity_disabled",
                "address_removed",
                "licence_suspended",
                "licence_lapsed",
                "no_admin",
                "mail_bounced",
                "mail_not_arrived",
            ]
        );
    }

    #[test]
    fn transport_faults_are_unknown_never_critical() {
        for reason in [
            Reason::Timeout,
            Reason::ConnectFailed,
            Reason::ConnectionDropped,
            Reason::TemporaryFailure,
            Reason::ProbeSourceBlocked,
            Reason::TlsFailed,
            Reason::DnsUnavailable,
            Reason::Shutdown,
            Reason::Throttled,
            Reason::ServiceUnavailable,
            Reason::PermissionDenied,
            Reason::NoToken,
            Reason::HttpError,
            Reason::MalformedResponse,
            Reason::RdapUnavailable,
            Reason::MonitorMisconfigured,
        ] {
            assert_eq!(reason.status(), Status::Unknown, "{reason}");
        }
    }

    #[test]
    fn reason_labels_are_unique_and_round_trip() {
        for reason in Reason::ALL {
            assert_eq!(Reason::parse(reason.as_str()), Some(*reason));
        }
    }

    #[test]
    fn worst_prefers_positive_findings_over_unknown() {
        assert_eq!(Status::Ok.worst(Status::Unknown), Status::Unknown);
        assert_eq!(Status::Unknown.worst(Status::Warning), Status::Warning);
        assert_eq!(Status::Critical.worst(Status::Warning), Status::Critical);
    }

    #[test]
    fn evidence_is_tagged_json() {
        let evidence = Evidence::SmtpRcpt(SmtpEvidence {
            mx_host: Some("contoso-com.mail.protection.outlook.com".into()),
            ..Default::default()
        });
        let json = serde_json::to_string(&evidence).unwrap();
        assert!(
            json.starts_with(r#"{"kind":"smtp_rcpt","mx_host":"contoso-com"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Evidence>(&json).unwrap(), evidence);
    }

    #[test]
    fn mailflow_evidence_round_trips_with_its_dsn() {
        let evidence = Evidence::Mailflow(Box::new(MailflowEvidence {
            tag: "twp-1-abc".into(),
            dsn: Some(DsnEvidence {
                action: "failed".into(),
                status: "5.1.10".into(),
                ..Default::default()
            }),
            ..Default::default()
        }));
        let json = serde_json::to_string(&evidence).unwrap();
        assert!(
            json.starts_with(r#"{"kind":"mailflow","tag":"twp-1-abc""#),
            "{json}"
        );
        assert!(json.contains(r#""status":"5.1.10""#), "{json}");
        assert_eq!(serde_json::from_str::<Evidence>(&json).unwrap(), evidence);
    }
}
