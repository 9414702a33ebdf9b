//! What an Entra ID error means for the monitor: AADSTS codes (and the HTTP status they came
//! with) mapped to a [`Reason`].
//!
//! Microsoft changes error descriptions without notice, so the classifier is a table keyed by
//! the numeric `error_codes` only (reference §2.5) and never reads `error_description`. A code
//! the table does not know is `unknown` (`http_error`), never critical: an unexplained refusal
//! is not evidence that the tenant or the app is gone.

use tw_core::Reason;

/// One row of the classifier: code, what it means for the monitor, why (for the summary).
struct Row {
    code: u32,
    reason: Reason,
    why: &'static str,
}

const fn row(code: u32, reason: Reason, why: &'static str) -> Row {
    Row { code, reason, why }
}

/// Reference §2.5, one row per code. Keep in step with the table test below.
const TABLE: &[Row] = &[
    row(
        90002,
        Reason::TenantUnknown,
        "the tenant or domain is not found in this cloud",
    ),
    // The monitor's own access to the tenant was removed.
    row(
        700016,
        Reason::MonitorAccessLost,
        "the app is not found in the tenant (never consented, or its service principal was deleted)",
    ),
    row(
        700011,
        Reason::MonitorAccessLost,
        "the app identifier is not found in the directory",
    ),
    row(70001, Reason::MonitorAccessLost, "the application is disabled"),
    row(
        7000112,
        Reason::MonitorAccessLost,
        "the app or its service principal is disabled in the tenant",
    ),
    row(
        65001,
        Reason::MonitorAccessLost,
        "consent for the app is missing in the tenant",
    ),
    row(
        90094,
        Reason::MonitorAccessLost,
        "admin consent is required for the app",
    ),
    row(
        90008,
        Reason::MonitorAccessLost,
        "admin consent is required for the app",
    ),
    // The credential itself was refused.
    row(
        7000215,
        Reason::CredentialInvalid,
        "the client secret is wrong (or its id was sent instead of its value)",
    ),
    row(
        700027,
        Reason::CredentialInvalid,
        "the client assertion failed signature validation (certificate not registered, or expired)",
    ),
    row(
        50012,
        Reason::CredentialInvalid,
        "authentication failed (certificate chain, signature or thumbprint refused)",
    ),
    row(
        700030,
        Reason::CredentialInvalid,
        "the certificate subject name is not authorised",
    ),
    row(
        7000222,
        Reason::CredentialExpired,
        "the client secret has expired",
    ),
    // Tenant policy.
    row(
        53003,
        Reason::BlockedByPolicy,
        "blocked by a conditional access policy",
    ),
    row(
        530032,
        Reason::BlockedByPolicy,
        "blocked by a tenant security policy",
    ),
    row(530035, Reason::BlockedByPolicy, "blocked by security defaults"),
    // A resource service is off (often a lapsed subscription).
    row(
        500014,
        Reason::ServiceDisabled,
        "the resource's service principal is disabled (a subscription may have lapsed)",
    ),
    row(
        650052,
        Reason::ServiceDisabled,
        "the app needs a service the organisation has not subscribed to or enabled",
    ),
    row(
        500011,
        Reason::ServiceDisabled,
        "the resource's service principal is not in the tenant",
    ),
    // Throttling and transient faults.
    row(
        90055,
        Reason::Throttled,
        "Entra ID throttles requests for this tenant",
    ),
    row(
        50196,
        Reason::Throttled,
        "the same request was sent too often (loop detected)",
    ),
    row(
        90033,
        Reason::ServiceUnavailable,
        "the directory service is unavailable",
    ),
    row(
        90024,
        Reason::ServiceUnavailable,
        "a transient request budget error",
    ),
    row(
        50000,
        Reason::ServiceUnavailable,
        "the sign-in service had a problem issuing the token",
    ),
    // Wrong on the monitor's side: config, cloud, clock, request shape.
    row(
        90038,
        Reason::MonitorMisconfigured,
        "the tenant lives in another national cloud (check entra.cloud)",
    ),
    row(
        1002016,
        Reason::MonitorMisconfigured,
        "TLS 1.2 or newer is required",
    ),
    row(
        7000218,
        Reason::MonitorMisconfigured,
        "the request carried neither a client secret nor a client assertion",
    ),
    row(
        700024,
        Reason::MonitorMisconfigured,
        "the client assertion is outside its valid time range (check the clock and NTP)",
    ),
    row(
        700023,
        Reason::MonitorMisconfigured,
        "the client assertion audience does not match (wrong cloud or login URL?)",
    ),
    row(
        70011,
        Reason::MonitorMisconfigured,
        "the requested scope is invalid",
    ),
    row(
        90014,
        Reason::MonitorMisconfigured,
        "a required field is missing from the request",
    ),
    row(
        900144,
        Reason::MonitorMisconfigured,
        "a required field is missing from the request",
    ),
    row(
        9001023,
        Reason::MonitorMisconfigured,
        "the grant is not supported on this endpoint (use the tenant-specific URL)",
    ),
    row(
        90124,
        Reason::MonitorMisconfigured,
        "the grant is not supported on this endpoint (use the tenant-specific URL)",
    ),
    row(
        90130,
        Reason::MonitorMisconfigured,
        "the app is not supported on this endpoint (use the tenant-specific URL)",
    ),
    // Reported for deprovisioned tenants, but too loosely to call it: the discovery check
    // confirms or refutes a vanished tenant.
    row(
        5000224,
        Reason::HttpError,
        "the resource is not available (reported for deprovisioned tenants; see the tenant check)",
    ),
];

const UNCLASSIFIED: &str = "an AADSTS code this monitor does not classify";

/// Classifies an Entra ID error answer by its `error_codes` (the first code the table knows
/// decides) and HTTP status, returning the reason and a short explanation for the summary.
///
/// HTTP 429 is `throttled` and 5xx `service_unavailable` whatever the codes say: a server that
/// is overloaded or failing must never page. An answer with no code the table knows is
/// `http_error` (`unknown`); the caller names the codes in its summary.
pub fn classify(status: u16, codes: &[u32]) -> (Reason, &'static str) {
    if status == 429 {
        return (Reason::Throttled, "HTTP 429 Too Many Requests");
    }
    if (500..600).contains(&status) {
        return (Reason::ServiceUnavailable, "a server error from Entra ID");
    }
    for code in codes {
        if let Some(row) = TABLE.iter().find(|row| row.code == *code) {
            return (row.reason, row.why);
        }
    }
    if codes.is_empty() {
        (Reason::HttpError, "an error answer without an AADSTS code")
    } else {
        (Reason::HttpError, UNCLASSIFIED)
    }
}

/// The reason for an HTTP answer that is not the one a check expected, when no code in the body
/// says more: 429 `throttled`, 5xx `service_unavailable`, anything else `http_error`.
/// Shared by the discovery, realm and RDAP checks.
pub fn reason_for_status(status: u16) -> Reason {
    match status {
        429 => Reason::Throttled,
        500..=599 => Reason::ServiceUnavailable,
        _ => Reason::HttpError,
    }
}

/// `AADSTS7000215, AADSTS90002` for a summary; empty when there are no codes.
pub fn codes_text(codes: &[u32]) -> String {
    codes
        .iter()
        .map(|code| format!("AADSTS{code}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row of reference §2.5 as the brief fixes it, checked against the classifier.
    #[test]
    fn every_documented_code_has_its_reason() {
        let expected: &[(&[u32], Reason)] = &[
            (&[90002], Reason::TenantUnknown),
            (
                &[700016, 700011, 70001, 7000112, 65001, 90094, 90008],
                Reason::MonitorAccessLost,
            ),
            (&[7000215, 700027, 50012, 700030], Reason::CredentialInvalid),
            (&[7000222], Reason::CredentialExpired),
            (&[53003, 530032, 530035], Reason::BlockedByPolicy),
            (&[500014, 650052, 500011], Reason::ServiceDisabled),
            (&[90055, 50196], Reason::Throttled),
            (&[90033, 90024, 50000], Reason::ServiceUnavailable),
            (
                &[
                    90038, 1002016, 7000218, 700024, 700023, 70011, 90014, 900144, 9001023, 90124,
                    90130,
                ],
                Reason::MonitorMisconfigured,
            ),
            (&[5000224], Reason::HttpError),
        ];
        let mut covered = 0;
        for (codes, reason) in expected {
            for code in *codes {
                let (got, why) = classify(400, &[*code]);
                assert_eq!(got, *reason, "AADSTS{code}");
                assert!(!why.is_empty());
                assert_ne!(why, UNCLASSIFIED, "AADSTS{code} should be in the table");
                covered += 1;
            }
        }
        // No row in the table that the expectations above do not name.
        assert_eq!(covered, TABLE.len());
    }

    #[test]
    fn unknown_codes_are_unknown_never_critical() {
        let (reason, why) = classify(400, &[123456]);
        assert_eq!(reason, Reason::HttpError);
        assert_eq!(why, UNCLASSIFIED);
        assert_eq!(classify(401, &[]).0, Reason::HttpError);
    }

    #[test]
    fn the_first_known_code_decides() {
        assert_eq!(
            classify(400, &[123456, 7000222, 90002]).0,
            Reason::CredentialExpired
        );
    }

    #[test]
    fn throttling_and_server_errors_win_over_codes() {
        assert_eq!(classify(429, &[]).0, Reason::Throttled);
        assert_eq!(classify(429, &[700016]).0, Reason::Throttled);
        assert_eq!(classify(503, &[]).0, Reason::ServiceUnavailable);
        assert_eq!(classify(500, &[90002]).0, Reason::ServiceUnavailable);
    }

    #[test]
    fn status_reasons() {
        assert_eq!(reason_for_status(429), Reason::Throttled);
        assert_eq!(reason_for_status(502), Reason::ServiceUnavailable);
        assert_eq!(reason_for_status(418), Reason::HttpError);
        assert_eq!(codes_text(&[1, 2]), "AADSTS1, AADSTS2");
    }
}
