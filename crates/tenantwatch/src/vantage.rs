//! Our own vantage: is the monitor's network the problem rather than the tenants?
//!
//! When the probe host loses its uplink, its resolver or its outbound port 25, every target
//! turns `unknown` for a network reason at once, and after `blind_after` every one of them
//! would raise its own "probe blind" alert: thousands of pages about one broken cable. The
//! tracker keeps, per target, whether its latest verdict was a network-level `unknown`; when
//! at least `degraded_fraction` of all targets (and `degraded_min_targets` of them) are, the
//! source is degraded: one alert says so, and blind alerts for network reasons are held back
//! until it recovers (below half the threshold, so it does not flap on the edge).
//!
//! Control tenants (`alerting.control_tenants`: tenants that watch the MSP's own mail domain
//! and MX) are the second opinion: when all their targets fail for network reasons while at
//! least `degraded_min_targets` tenant targets do too, the source is degraded even below
//! `degraded_fraction`; it recovers only once they answer again. A target removed
//! from the config keeps its last verdict in the count until the daemon restarts (a few
//! stale entries do not move a fleet-wide share).

use std::collections::HashMap;

use tw_core::{Observation, Reason, Status, TenantName, Timestamp};

use crate::alerts::Key;

/// Reasons that say "the network between us and them failed", as opposed to an answer.
pub(crate) fn is_network_unknown(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::Timeout
            | Reason::ConnectFailed
            | Reason::ConnectionDropped
            | Reason::TlsFailed
            | Reason::DnsUnavailable
            | Reason::MxUnresolvable
    )
}

/// Targets counted: all, and those whose latest verdict was a network-level unknown; the
/// control tenants' targets on their own.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Counts {
    total: usize,
    network_unknown: usize,
    control_total: usize,
    control_unknown: usize,
}

impl Counts {
    fn add(&mut self, control: bool, network: bool, sign: i8) {
        let step = |n: &mut usize| {
            *n = if sign > 0 {
                *n + 1
            } else {
                n.saturating_sub(1)
            };
        };
        if control {
            step(&mut self.control_total);
            if network {
                step(&mut self.control_unknown);
            }
        } else {
            step(&mut self.total);
            if network {
                step(&mut self.network_unknown);
            }
        }
    }

    /// Degraded: most targets fail for network reasons, or the control tenants' targets all
    /// do while at least `min_targets` others do too.
    fn degraded(&self, fraction: f64, min_targets: usize) -> bool {
        let share = self.network_unknown as f64 / self.total.max(1) as f64;
        let many = self.network_unknown >= min_targets;
        let control_down = self.control_total > 0 && self.control_unknown == self.control_total;
        many && (share >= fraction || control_down)
    }

    /// Recovered: under half the threshold, and the control tenants (if any) answer again.
    fn recovered(&self, fraction: f64) -> bool {
        let share = self.network_unknown as f64 / self.total.max(1) as f64;
        let control_down = self.control_total > 0 && self.control_unknown == self.control_total;
        share < fraction / 2.0 && !control_down
    }
}

#[derive(Debug, Default)]
pub(crate) struct Vantage {
    /// Latest verdict per target: was it a network-level unknown?
    latest: HashMap<Key, bool>,
    counts: Counts,
    degraded_since: Option<Timestamp>,
}

/// What one batch changes; applied by [`Vantage::adopt`] after the batch commits.
#[derive(Debug, Default)]
pub(crate) struct VantageChanges {
    latest: HashMap<Key, bool>,
    counts: Counts,
    degraded_since: Option<Timestamp>,
}

/// A change of the source's health in a batch.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Transition {
    Degraded {
        since: Timestamp,
        unknown: usize,
        total: usize,
        control_down: bool,
    },
    Recovered {
        since: Timestamp,
        at: Timestamp,
        unknown: usize,
        total: usize,
    },
}

impl Vantage {
    /// Follows a batch's verdicts and says whether the source turned degraded or recovered.
    /// Shutdown observations say nothing about the network and are skipped. Targets of
    /// `control` tenants are counted apart: they are the second opinion, not the fleet.
    pub(crate) fn follow(
        &self,
        batch: &[Observation],
        fraction: f64,
        min_targets: usize,
        control: &[TenantName],
    ) -> (VantageChanges, Option<Transition>) {
        let mut changes = VantageChanges {
            counts: self.counts,
            degraded_since: self.degraded_since,
            ..VantageChanges::default()
        };
        let mut last_at = None;
        for observation in batch.iter().filter(|o| o.reason != Reason::Shutdown) {
            let key = (
                observation.tenant.as_str().to_owned(),
                observation.check,
                observation.target.clone(),
            );
            let is_control = control.contains(&observation.tenant);
            let now_network =
                observation.status == Status::Unknown && is_network_unknown(observation.reason);
            let before = changes
                .latest
                .get(&key)
                .or_else(|| self.latest.get(&key))
                .copied();
            if let Some(was) = before {
                changes.counts.add(is_control, was, -1);
            }
            changes.counts.add(is_control, now_network, 1);
            changes.latest.insert(key, now_network);
            last_at = Some(observation.started_at);
        }
        let Some(at) = last_at else {
            return (changes, None);
        };
        let counts = changes.counts;
        let transition = match changes.degraded_since {
            None if counts.degraded(fraction, min_targets) => {
                changes.degraded_since = Some(at);
                Some(Transition::Degraded {
                    since: at,
                    unknown: counts.network_unknown,
                    total: counts.total,
                    control_down: counts.control_total > 0
                        && counts.control_unknown == counts.control_total,
                })
            }
            Some(since) if counts.recovered(fraction) => {
                changes.degraded_since = None;
                Some(Transition::Recovered {
                    since,
                    at,
                    unknown: counts.network_unknown,
                    total: counts.total,
                })
            }
            _ => None,
        };
        (changes, transition)
    }

    pub(crate) fn adopt(&mut self, changes: VantageChanges) {
        self.latest.extend(changes.latest);
        self.counts = changes.counts;
        self.degraded_since = changes.degraded_since;
    }
}

impl VantageChanges {
    /// Whether the source is degraded after this batch.
    pub(crate) fn is_degraded(&self) -> bool {
        self.degraded_since.is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tw_core::{CheckKind, Evidence, TenantName};

    use super::*;

    fn obs(tenant: usize, reason: Reason, at: i64) -> Observation {
        Observation {
            tenant: TenantName::parse(&format!("t{tenant}")).unwrap(),
            check: CheckKind::SmtpRcpt,
            target: format!("a@t{tenant}.example"),
            scheduled_for: Timestamp(at),
            started_at: Timestamp(at),
            elapsed: Duration::ZERO,
            status: reason.status(),
            reason,
            summary: String::new(),
            evidence: Evidence::None,
        }
    }

    fn step(vantage: &mut Vantage, batch: &[Observation]) -> Option<Transition> {
        let (changes, transition) = vantage.follow(batch, 0.5, 10, &[]);
        vantage.adopt(changes);
        transition
    }

    #[test]
    fn most_targets_failing_for_network_reasons_is_one_degraded_then_one_recovered() {
        let mut vantage = Vantage::default();
        let healthy: Vec<_> = (0..40)
            .map(|t| obs(t, Reason::RecipientAccepted, 1))
            .collect();
        assert_eq!(step(&mut vantage, &healthy), None);
        // 19 of 40 timing out is not yet half.
        let some: Vec<_> = (0..19).map(|t| obs(t, Reason::Timeout, 2)).collect();
        assert_eq!(step(&mut vantage, &some), None);
        let more: Vec<_> = (19..21).map(|t| obs(t, Reason::ConnectFailed, 3)).collect();
        assert_eq!(
            step(&mut vantage, &more),
            Some(Transition::Degraded {
                since: Timestamp(3),
                unknown: 21,
                total: 40,
                control_down: false,
            })
        );
        // Still degraded: no second message while it lasts.
        let still: Vec<_> = (21..30)
            .map(|t| obs(t, Reason::DnsUnavailable, 4))
            .collect();
        assert_eq!(step(&mut vantage, &still), None);
        // Back under a quarter (half the threshold): recovered, once.
        let back: Vec<_> = (0..25)
            .map(|t| obs(t, Reason::RecipientAccepted, 5))
            .collect();
        assert!(matches!(
            step(&mut vantage, &back),
            Some(Transition::Recovered {
                since: Timestamp(3),
                ..
            })
        ));
        assert_eq!(step(&mut vantage, &back), None);
    }

    #[test]
    fn answers_and_small_fleets_are_not_a_degraded_source() {
        let mut vantage = Vantage::default();
        // Every target critical or throttled: answers, not a network failure.
        let answers: Vec<_> = (0..40)
            .map(|t| {
                obs(
                    t,
                    if t % 2 == 0 {
                        Reason::RecipientNotFound
                    } else {
                        Reason::Throttled
                    },
                    1,
                )
            })
            .collect();
        assert_eq!(step(&mut vantage, &answers), None);
        // Five of five targets timing out is below the minimum count.
        let mut small = Vantage::default();
        let all: Vec<_> = (0..5).map(|t| obs(t, Reason::Timeout, 1)).collect();
        assert_eq!(step(&mut small, &all), None);
    }

    #[test]
    fn a_failing_control_tenant_makes_fewer_failures_enough_and_holds_recovery() {
        let control = [TenantName::parse("t99").unwrap()];
        let mut vantage = Vantage::default();
        let mut step = |batch: &[Observation]| {
            let (changes, transition) = vantage.follow(batch, 0.5, 10, &control);
            vantage.adopt(changes);
            transition
        };
        let healthy: Vec<_> = (0..40)
            .chain([99])
            .map(|t| obs(t, Reason::RecipientAccepted, 1))
            .collect();
        assert_eq!(step(&healthy), None);
        // 12 of 40 timing out is under half: not degraded while the control answers.
        let some: Vec<_> = (0..12).map(|t| obs(t, Reason::Timeout, 2)).collect();
        assert_eq!(step(&some), None);
        // The MSP's own MX times out too: degraded.
        let transition = step(&[obs(99, Reason::Timeout, 3)]);
        assert!(
            matches!(
                transition,
                Some(Transition::Degraded {
                    control_down: true,
                    unknown: 12,
                    total: 40,
                    ..
                })
            ),
            "{transition:?}"
        );
        // The fleet recovers but the control still fails: still degraded.
        let back: Vec<_> = (0..12)
            .map(|t| obs(t, Reason::RecipientAccepted, 4))
            .collect();
        assert_eq!(step(&back), None);
        assert!(matches!(
            step(&[obs(99, Reason::RecipientAccepted, 5)]),
            Some(Transition::Recovered { .. })
        ));
        // The control failing alone (its own mail server down) is not a degraded source.
        assert_eq!(step(&[obs(99, Reason::ConnectFailed, 6)]), None);
    }
}
