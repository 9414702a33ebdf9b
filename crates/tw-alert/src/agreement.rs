//! Two independent layers agreeing: the strongest signal there is, so it fires at once.
//!
//! `confirm` exists because one layer can be wrong for a while (a replica that 404s for a few
//! minutes, a greylisting MX). When two layers that share no infrastructure say the same thing
//! — Exchange Online's edge rejects the address at RCPT **and** Graph says the user is deleted,
//! or the MX rejects it **and** Entra ID no longer knows the tenant — waiting for a second run
//! only delays the page. The table below lists those pairs; [`agreement`] finds the other
//! layer's current verdict through a lookup the caller provides (the alert states it holds).

use std::time::Duration;

use tw_core::{CheckKind, Observation, Reason, Timestamp};

/// The other layer's verdict must be this recent to count: an old verdict of a check that
/// stopped running (removed from config, blind) is not agreement.
pub const AGREEMENT_WINDOW: Duration = Duration::from_secs(3_600);

/// Which targets of the other check can agree with an observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Partner {
    /// The same target (the same watched address).
    SameTarget,
    /// The domain of the observation's address (the tenant check of that domain).
    DomainOfAddress,
    /// An address on the observation's domain.
    AddressOnDomain,
    /// Any target of the same tenant.
    AnyTarget,
}

struct Pair {
    check: CheckKind,
    reasons: &'static [Reason],
    other: CheckKind,
    other_reasons: &'static [Reason],
    partner: Partner,
    headline: &'static str,
}

const GONE: &[Reason] = &[Reason::IdentityDeleted, Reason::IdentityNotFound];
const REJECTED: &[Reason] = &[Reason::RecipientNotFound];
const UNKNOWN_TENANT: &[Reason] = &[Reason::TenantUnknown];
const BOUNCED: &[Reason] = &[Reason::MailBounced];
const NO_MAILBOX: &[Reason] = &[Reason::MailboxPlanLost];

const PAIRS: &[Pair] = &[
    // The seed incident: Exchange accepted the message, then bounced it 5.1.10, and Graph
    // says the identity lost its mailbox plan (or is gone).
    Pair {
        check: CheckKind::Mailflow,
        reasons: BOUNCED,
        other: CheckKind::Licence,
        other_reasons: NO_MAILBOX,
        partner: Partner::SameTarget,
        headline: "Mailbox unreachable",
    },
    Pair {
        check: CheckKind::Licence,
        reasons: NO_MAILBOX,
        other: CheckKind::Mailflow,
        other_reasons: BOUNCED,
        partner: Partner::SameTarget,
        headline: "Mailbox unreachable",
    },
    Pair {
        check: CheckKind::Mailflow,
        reasons: BOUNCED,
        other: CheckKind::Identity,
        other_reasons: GONE,
        partner: Partner::SameTarget,
        headline: "Identity vanished",
    },
    Pair {
        check: CheckKind::Identity,
        reasons: GONE,
        other: CheckKind::Mailflow,
        other_reasons: BOUNCED,
        partner: Partner::SameTarget,
        headline: "Identity vanished",
    },
    Pair {
        check: CheckKind::SmtpRcpt,
        reasons: REJECTED,
        other: CheckKind::Identity,
        other_reasons: GONE,
        partner: Partner::SameTarget,
        headline: "Identity vanished",
    },
    Pair {
        check: CheckKind::Identity,
        reasons: GONE,
        other: CheckKind::SmtpRcpt,
        other_reasons: REJECTED,
        partner: Partner::SameTarget,
        headline: "Identity vanished",
    },
    Pair {
        check: CheckKind::SmtpRcpt,
        reasons: REJECTED,
        other: CheckKind::Tenant,
        other_reasons: UNKNOWN_TENANT,
        partner: Partner::DomainOfAddress,
        headline: "Tenant vanished",
    },
    Pair {
        check: CheckKind::Tenant,
        reasons: UNKNOWN_TENANT,
        other: CheckKind::SmtpRcpt,
        other_reasons: REJECTED,
        partner: Partner::AddressOnDomain,
        headline: "Tenant vanished",
    },
    Pair {
        check: CheckKind::Tenant,
        reasons: UNKNOWN_TENANT,
        other: CheckKind::Signin,
        other_reasons: UNKNOWN_TENANT,
        partner: Partner::AnyTarget,
        headline: "Tenant vanished",
    },
    Pair {
        check: CheckKind::Signin,
        reasons: UNKNOWN_TENANT,
        other: CheckKind::Tenant,
        other_reasons: UNKNOWN_TENANT,
        partner: Partner::AnyTarget,
        headline: "Tenant vanished",
    },
];

/// Another check's current verdict on one of the tenant's targets.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerVerdict {
    pub target: String,
    /// The reason label of its current problem (`AlertState::current_problem`).
    pub reason: String,
    /// When it last ran (`AlertState::last_seen`).
    pub seen: Timestamp,
}

/// Two layers agree on what `observation` says.
#[derive(Debug, Clone, PartialEq)]
pub struct Agreement {
    /// "Identity vanished" or "Tenant vanished".
    pub headline: &'static str,
    pub other_check: CheckKind,
    pub other_target: String,
    pub other_reason: String,
}

impl Agreement {
    /// One line for the message body.
    pub fn describe(&self, observation_check: CheckKind) -> String {
        format!(
            "{}: {observation_check} and {} agree ({} on {} says {}), so this fired without waiting for confirmation.",
            self.headline, self.other_check, self.other_check, self.other_target, self.other_reason
        )
    }
}

/// Whether another layer agrees with `observation`. `verdicts(check)` lists the current
/// problems of `check` for the observation's tenant (only non-ok ones need be listed).
pub fn agreement(
    observation: &Observation,
    verdicts: impl Fn(CheckKind) -> Vec<LayerVerdict>,
) -> Option<Agreement> {
    let oldest = observation.started_at.minus(AGREEMENT_WINDOW);
    PAIRS
        .iter()
        .filter(|pair| {
            pair.check == observation.check && pair.reasons.contains(&observation.reason)
        })
        .find_map(|pair| {
            verdicts(pair.other).into_iter().find_map(|verdict| {
                let reason_agrees = pair
                    .other_reasons
                    .iter()
                    .any(|reason| reason.as_str() == verdict.reason);
                let fresh = verdict.seen >= oldest;
                let target_fits = fits(pair.partner, &observation.target, &verdict.target);
                (reason_agrees && fresh && target_fits).then_some(Agreement {
                    headline: pair.headline,
                    other_check: pair.other,
                    other_target: verdict.target,
                    other_reason: verdict.reason,
                })
            })
        })
}

fn domain_of(address: &str) -> Option<&str> {
    address.rsplit_once('@').map(|(_, domain)| domain)
}

fn fits(partner: Partner, target: &str, other: &str) -> bool {
    match partner {
        Partner::SameTarget => target.eq_ignore_ascii_case(other),
        Partner::DomainOfAddress => {
            domain_of(target).is_some_and(|d| d.eq_ignore_ascii_case(other))
        }
        Partner::AddressOnDomain => {
            domain_of(other).is_some_and(|d| d.eq_ignore_ascii_case(target))
        }
        Partner::AnyTarget => true,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tw_core::{Evidence, TenantName};

    use super::*;

    const T: i64 = 1_795_000_000_000;

    fn obs(check: CheckKind, target: &str, reason: Reason) -> Observation {
        Observation {
            tenant: TenantName::parse("contoso").unwrap(),
            check,
            target: target.to_owned(),
            scheduled_for: Timestamp(T),
            started_at: Timestamp(T),
            elapsed: Duration::ZERO,
            status: reason.status(),
            reason,
            summary: String::new(),
            evidence: Evidence::None,
        }
    }

    fn verdict(target: &str, reason: Reason, seen: i64) -> LayerVerdict {
        LayerVerdict {
            target: target.to_owned(),
            reason: reason.as_str().to_owned(),
            seen: Timestamp(seen),
        }
    }

    /// Table: (observation, the other check's verdicts, expected headline).
    #[test]
    fn pairs_agree_only_on_matching_targets_reasons_and_fresh_verdicts() {
        let admin = "admin@contoso.com";
        let cases: Vec<(Observation, CheckKind, Vec<LayerVerdict>, Option<&str>)> = vec![
            (
                obs(CheckKind::SmtpRcpt, admin, Reason::RecipientNotFound),
                CheckKind::Identity,
                vec![verdict(admin, Reason::IdentityDeleted, T - 60_000)],
                Some("Identity vanished"),
            ),
            (
                obs(CheckKind::Identity, admin, Reason::IdentityNotFound),
                CheckKind::SmtpRcpt,
                vec![verdict(admin, Reason::RecipientNotFound, T)],
                Some("Identity vanished"),
            ),
            // Another address's deletion is not agreement.
            (
                obs(CheckKind::SmtpRcpt, admin, Reason::RecipientNotFound),
                CheckKind::Identity,
                vec![verdict("sales@contoso.com", Reason::IdentityDeleted, T)],
                None,
            ),
            // A disabled user still receives mail at RCPT: not the same claim.
            (
                obs(CheckKind::SmtpRcpt, admin, Reason::RecipientNotFound),
                CheckKind::Identity,
                vec![verdict(admin, Reason::IdentityDisabled, T)],
                None,
            ),
            // Stale: the identity check last ran two hours ago.
            (
                obs(CheckKind::SmtpRcpt, admin, Reason::RecipientNotFound),
                CheckKind::Identity,
                vec![verdict(admin, Reason::IdentityDeleted, T - 7_200_000)],
                None,
            ),
            (
                obs(CheckKind::SmtpRcpt, admin, Reason::RecipientNotFound),
                CheckKind::Tenant,
                vec![verdict("contoso.com", Reason::TenantUnknown, T)],
                Some("Tenant vanished"),
            ),
            (
                obs(CheckKind::Tenant, "contoso.com", Reason::TenantUnknown),
                CheckKind::SmtpRcpt,
                vec![
                    verdict("x@fabrikam.com", Reason::RecipientNotFound, T),
                    verdict(admin, Reason::RecipientNotFound, T),
                ],
                Some("Tenant vanished"),
            ),
            (
                obs(CheckKind::Signin, "contoso", Reason::TenantUnknown),
                CheckKind::Tenant,
                vec![verdict("contoso.com", Reason::TenantUnknown, T)],
                Some("Tenant vanished"),
            ),
            (
                obs(CheckKind::Mailflow, admin, Reason::MailBounced),
                CheckKind::Licence,
                vec![verdict(admin, Reason::MailboxPlanLost, T)],
                Some("Mailbox unreachable"),
            ),
            (
                obs(CheckKind::Licence, admin, Reason::MailboxPlanLost),
                CheckKind::Mailflow,
                vec![verdict(admin, Reason::MailBounced, T)],
                Some("Mailbox unreachable"),
            ),
            // An unknown verdict never takes part.
            (
                obs(CheckKind::SmtpRcpt, admin, Reason::Timeout),
                CheckKind::Identity,
                vec![verdict(admin, Reason::IdentityDeleted, T)],
                None,
            ),
        ];
        for (observation, other, verdicts, expected) in cases {
            let found = agreement(&observation, |check| {
                if check == other {
                    verdicts.clone()
                } else {
                    Vec::new()
                }
            });
            assert_eq!(
                found.as_ref().map(|a| a.headline),
                expected,
                "{} {} {:?} with {other}",
                observation.check,
                observation.target,
                observation.reason
            );
        }
    }
}
