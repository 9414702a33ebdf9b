//! The alert stage of the recorder: observations in, alert states and outbox rows out,
//! committed in the same transaction as the observations.
//!
//! Deciding is tw-alert's (`evaluate`, `render`) and routing is the config's
//! (`AlertingConfig::receivers_for`); this module only holds each key's state between
//! batches and turns events into one outbox row per receiver. States are evaluated on a copy
//! and adopted only after the commit, so a failed write leaves nothing half-applied and the
//! retried batch yields the same events with the same dedup keys.

use std::collections::{HashMap, HashSet};

use tw_alert::agreement::{agreement, Agreement, LayerVerdict};
use tw_alert::{evaluate, render, AlertEvent, AlertState, EventKind, Rules};
use tw_core::config::AlertingConfig;
use tw_core::{CheckKind, Observation, Reason, Status, Timestamp};
use tw_store::{AlertStateRow, AlertWrites, NewDelivery};

use crate::vantage::{is_network_unknown, Transition, Vantage, VantageChanges};

/// (tenant, check, target).
pub(crate) type Key = (String, CheckKind, String);

pub(crate) struct AlertEngine {
    states: HashMap<Key, AlertState>,
    rules: Rules,
    config: AlertingConfig,
    vantage: Vantage,
    /// Keys whose Blind alert was held back (degraded source): their BlindResolved is too.
    held_blind: HashSet<Key>,
}

/// The result of evaluating one batch, to be committed with it.
pub(crate) struct Evaluated {
    pub(crate) writes: AlertWrites,
    pub(crate) events: Vec<AlertEvent>,
    states: HashMap<Key, AlertState>,
    vantage: VantageChanges,
    held_blind: HashSet<Key>,
    released_blind: HashSet<Key>,
}

impl AlertEngine {
    /// Seeds the engine from stored states; a state that no longer parses starts fresh (and
    /// says so) rather than stopping the daemon.
    pub(crate) fn new(config: AlertingConfig, stored: Vec<AlertStateRow>) -> AlertEngine {
        let rules = Rules {
            confirm: config.confirm,
            recover: config.recover,
            repeat_interval: config.repeat_interval,
            blind_after: config.blind_after,
        };
        let mut states = HashMap::with_capacity(stored.len());
        for row in stored {
            match serde_json::from_str::<AlertState>(&row.state_json) {
                Ok(state) => {
                    states.insert((row.tenant, row.check, row.target), state);
                }
                Err(err) => {
                    tracing::warn!(tenant = %row.tenant, check = %row.check, target = %row.target, error = %err, "Stored alert state unreadable; starting it fresh")
                }
            }
        }
        AlertEngine {
            states,
            rules,
            config,
            vantage: Vantage::default(),
            held_blind: HashSet::new(),
        }
    }

    /// A reload may change rules, receivers and routes; states carry over.
    pub(crate) fn reconfigure(&mut self, config: AlertingConfig) {
        self.rules = Rules {
            confirm: config.confirm,
            recover: config.recover,
            repeat_interval: config.repeat_interval,
            blind_after: config.blind_after,
        };
        self.config = config;
    }

    pub(crate) fn evaluate(&self, batch: &[Observation]) -> Evaluated {
        let mut changed: HashMap<Key, AlertState> = HashMap::new();
        let mut writes = AlertWrites::default();
        let mut events = Vec::new();
        let mut held_blind: HashSet<Key> = HashSet::new();
        let mut released_blind: HashSet<Key> = HashSet::new();
        let (vantage, transition) = self.vantage.follow(
            batch,
            self.config.degraded_fraction,
            self.config.degraded_min_targets,
        );
        if let Some(transition) = &transition {
            self.enqueue_vantage(transition, &mut writes.deliveries);
        }
        for observation in batch {
            let key = (
                observation.tenant.as_str().to_owned(),
                observation.check,
                observation.target.clone(),
            );
            let previous = changed
                .get(&key)
                .or_else(|| self.states.get(&key))
                .cloned()
                .unwrap_or_default();
            // Two independent layers saying the same thing need no second run to confirm.
            let agreed = self.agreement(observation, &changed);
            let rules = match &agreed {
                Some(_) => Rules {
                    confirm: 1,
                    ..self.rules.clone()
                },
                None => self.rules.clone(),
            };
            let (next, new_events) =
                evaluate(&previous, observation, &rules, observation.started_at);
            for event in &new_events {
                if let (Some(agreed), EventKind::Firing) = (&agreed, event.kind) {
                    tracing::warn!(tenant = %event.tenant, check = %event.check, target = %event.target, other_check = %agreed.other_check, other_target = %agreed.other_target, "{}: two layers agree; firing at once", agreed.headline);
                }
                if event.kind == EventKind::Blind
                    && vantage.is_degraded()
                    && is_network_unknown(event.reason)
                {
                    tracing::info!(tenant = %event.tenant, check = %event.check, target = %event.target, "Probe blind held back: the probe source itself is degraded");
                    held_blind.insert(key.clone());
                    continue;
                }
                if event.kind == EventKind::BlindResolved
                    && (held_blind.remove(&key) || self.held_blind.contains(&key))
                {
                    released_blind.insert(key.clone());
                    continue;
                }
                if matches!(event.kind, EventKind::Firing | EventKind::Repeat)
                    && is_identity_level(event.check, &event.target)
                {
                    if let Some((check, target, reason)) =
                        self.tenant_incident(&event.tenant, &changed)
                    {
                        tracing::info!(tenant = %event.tenant, check = %event.check, target = %event.target, incident_check = %check, incident_target = %target, incident_reason = %reason, "Alert held back: its tenant has a tenant-level incident, whose message lists it");
                        continue;
                    }
                }
                let affected = if event.kind == EventKind::Firing
                    && is_tenant_level_incident(event.check, event.reason.as_str())
                {
                    self.identity_problems(&event.tenant, &changed)
                } else {
                    Vec::new()
                };
                self.enqueue(event, agreed.as_ref(), &affected, &mut writes.deliveries);
            }
            events.extend(new_events);
            if next != previous {
                changed.insert(key, next);
            }
        }
        for ((tenant, check, target), state) in &changed {
            match serde_json::to_string(state) {
                Ok(state_json) => writes.states.push(AlertStateRow {
                    tenant: tenant.clone(),
                    check: *check,
                    target: target.clone(),
                    state_json,
                }),
                Err(err) => {
                    tracing::error!(error = %err, "Cannot encode an alert state; it stays in memory only")
                }
            }
        }
        Evaluated {
            writes,
            events,
            states: changed,
            vantage,
            held_blind,
            released_blind,
        }
    }

    /// A firing tenant-level incident of `tenant` (tenant unknown to Entra, MX gone or not
    /// Microsoft's, domain gone or its registration expired), if any.
    fn tenant_incident(
        &self,
        tenant: &str,
        changed: &HashMap<Key, AlertState>,
    ) -> Option<(CheckKind, String, String)> {
        let firing = |key: &Key, state: &AlertState| {
            let reason = state.current_problem()?;
            (key.0 == tenant && state.is_firing() && is_tenant_level_incident(key.1, reason))
                .then(|| (key.1, key.2.clone(), reason.to_owned()))
        };
        changed
            .iter()
            .find_map(|(key, state)| firing(key, state))
            .or_else(|| {
                self.states
                    .iter()
                    .filter(|(key, _)| !changed.contains_key(*key))
                    .find_map(|(key, state)| firing(key, state))
            })
    }

    /// The identity-level problems of `tenant` right now, for the tenant-level message.
    fn identity_problems(&self, tenant: &str, changed: &HashMap<Key, AlertState>) -> Vec<String> {
        let mut lines: Vec<String> = changed
            .iter()
            .chain(
                self.states
                    .iter()
                    .filter(|(key, _)| !changed.contains_key(*key)),
            )
            .filter(|(key, _)| key.0 == tenant && is_identity_level(key.1, &key.2))
            .filter_map(|(key, state)| {
                state
                    .current_problem()
                    .map(|reason| format!("{} {}: {reason}", key.1, key.2))
            })
            .collect();
        lines.sort();
        lines
    }

    /// The other layer that agrees with `observation`, judged on the states as they stand
    /// within this batch (`changed` first).
    fn agreement(
        &self,
        observation: &Observation,
        changed: &HashMap<Key, AlertState>,
    ) -> Option<Agreement> {
        if !matches!(observation.status, Status::Warning | Status::Critical) {
            return None;
        }
        let tenant = observation.tenant.as_str();
        agreement(observation, |check| {
            // Rare (a critical of a paired reason), so a scan of the states is affordable.
            let mut verdicts = Vec::new();
            let mut push = |key: &Key, state: &AlertState| {
                if key.0 == tenant && key.1 == check {
                    if let (Some(reason), Some(seen)) = (state.current_problem(), state.last_seen())
                    {
                        verdicts.push(LayerVerdict {
                            target: key.2.clone(),
                            reason: reason.to_owned(),
                            seen,
                        });
                    }
                }
            };
            for (key, state) in changed {
                push(key, state);
            }
            for (key, state) in &self.states {
                if !changed.contains_key(key) {
                    push(key, state);
                }
            }
            verdicts
        })
    }

    /// Takes the states of a committed batch.
    pub(crate) fn adopt(&mut self, evaluated: Evaluated) {
        self.states.extend(evaluated.states);
        self.vantage.adopt(evaluated.vantage);
        self.held_blind.extend(evaluated.held_blind);
        for key in evaluated.released_blind {
            self.held_blind.remove(&key);
        }
    }

    /// One message about the monitor's own network, to the receivers of monitor alerts.
    fn enqueue_vantage(&self, transition: &Transition, deliveries: &mut Vec<NewDelivery>) {
        let receivers = self.config.receivers_for_monitor("blind");
        let (kind, since, at, title, body) = match *transition {
            Transition::Degraded {
                since,
                unknown,
                total,
            } => {
                tracing::error!(
                    unknown,
                    total,
                    "Probe source degraded: most targets fail for network reasons at once"
                );
                (
                    "degraded",
                    since,
                    since,
                    "Probe source degraded: tenantwatch's own network is failing".to_owned(),
                    format!("{unknown} of {total} targets are unknown for network reasons (timeouts, refused or dropped connections, DNS failures, TLS failures) at once. That points at the monitor's own network, resolver or outbound port 25, not at the tenants. Per-target \"probe blind\" alerts for network reasons are held back until it recovers."),
                )
            }
            Transition::Recovered {
                since,
                at,
                unknown,
                total,
            } => {
                tracing::warn!(unknown, total, "Probe source recovered");
                (
                    "degraded_resolved",
                    since,
                    at,
                    "Probe source recovered".to_owned(),
                    format!("Only {unknown} of {total} targets are unknown for network reasons now; per-target blind alerts apply again."),
                )
            }
        };
        let message = tw_notify::Message {
            id: format!("tenantwatch/vantage/{}/{kind}", since.as_millis()),
            kind: kind.to_owned(),
            severity: "blind".to_owned(),
            tenant: String::new(),
            check: "vantage".to_owned(),
            target: "probe source".to_owned(),
            status: "unknown".to_owned(),
            reason: "probe_source_degraded".to_owned(),
            short: title.chars().take(159).collect(),
            title,
            body,
            since,
            at,
            link: self.config.status_page_url.clone(),
        };
        let Ok(message_json) = serde_json::to_string(&message) else {
            tracing::error!("Cannot encode the probe source message");
            return;
        };
        let created_at = Timestamp::now();
        for receiver in receivers {
            deliveries.push(NewDelivery {
                dedup_key: format!("{}/{receiver}", message.id),
                receiver: receiver.to_owned(),
                message_json: message_json.clone(),
                created_at,
                expires_at: created_at.plus(self.config.delivery_expiry),
            });
        }
    }

    fn enqueue(
        &self,
        event: &AlertEvent,
        agreed: Option<&Agreement>,
        affected: &[String],
        deliveries: &mut Vec<NewDelivery>,
    ) {
        // Judged at the observation's time, so a retried batch decides the same way.
        if let Some(silence) =
            self.config
                .silenced(&event.tenant, event.check, &event.target, event.at)
        {
            tracing::info!(tenant = %event.tenant, check = %event.check, target = %event.target, kind = event.kind.as_str(), silence_reason = %silence.reason, until = %silence.end, "Alert silenced by a maintenance window; not sent");
            return;
        }
        let receivers =
            self.config
                .receivers_for(event.severity.as_str(), &event.tenant, event.check);
        if receivers.is_empty() {
            return;
        }
        let mut message = message_for(event, self.config.status_page_url.as_deref());
        if let (Some(agreed), EventKind::Firing) = (agreed, event.kind) {
            message.title = format!("{}: {}", agreed.headline, message.title);
            message.body = format!("{}\n\n{}", agreed.describe(event.check), message.body);
        }
        if !affected.is_empty() {
            message.body = format!(
                "{}\n\nAlso affected (their own alerts are held back while this lasts):\n{}",
                message.body,
                affected
                    .iter()
                    .map(|line| format!("- {line}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        let message_json = match serde_json::to_string(&message) {
            Ok(json) => json,
            Err(err) => {
                tracing::error!(error = %err, dedup_key = %event.dedup_key, "Cannot encode a notification");
                return;
            }
        };
        let created_at = Timestamp::now();
        for receiver in receivers {
            deliveries.push(NewDelivery {
                dedup_key: format!("{}/{receiver}", event.dedup_key),
                receiver: receiver.to_owned(),
                message_json: message_json.clone(),
                created_at,
                expires_at: created_at.plus(self.config.delivery_expiry),
            });
        }
    }
}

/// Checks whose targets are one identity (a watched address).
fn is_identity_level(check: CheckKind, target: &str) -> bool {
    match check {
        CheckKind::SmtpRcpt | CheckKind::Identity | CheckKind::Realm | CheckKind::Mailflow => true,
        // The licence check reports on the tenant and on each identity's mailbox plan.
        CheckKind::Licence => target.contains('@'),
        CheckKind::Dns
        | CheckKind::Tenant
        | CheckKind::Domain
        | CheckKind::Signin
        | CheckKind::Admins
        | CheckKind::Health => false,
    }
}

/// A problem of the whole tenant that explains its identities' problems.
fn is_tenant_level_incident(check: CheckKind, reason: &str) -> bool {
    let reasons: &[Reason] = match check {
        CheckKind::Tenant | CheckKind::Signin => &[Reason::TenantUnknown],
        CheckKind::Dns => &[
            Reason::MxMissing,
            Reason::MxNotMicrosoft,
            Reason::DomainNotFound,
        ],
        CheckKind::Domain => &[Reason::RegistrationExpired],
        _ => &[],
    };
    reasons.iter().any(|r| r.as_str() == reason)
}

/// The notification as every channel gets it; the idempotency key is the event's dedup key,
/// the same for every receiver.
pub(crate) fn message_for(event: &AlertEvent, link: Option<&str>) -> tw_notify::Message {
    tw_notify::Message {
        id: event.dedup_key.clone(),
        kind: event.kind.as_str().to_owned(),
        severity: event.severity.as_str().to_owned(),
        tenant: event.tenant.clone(),
        check: event.check.as_str().to_owned(),
        target: event.target.clone(),
        status: event.status.as_str().to_owned(),
        reason: event.reason.as_str().to_owned(),
        title: render::title(event),
        short: render::short(event),
        body: render::body(event),
        since: event.since,
        at: event.at,
        link: link.map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tw_core::{Evidence, Reason, TenantName};

    use super::*;

    const T: i64 = 1_795_000_000_000;
    const ADMIN: &str = "admin@contoso.com";

    fn engine() -> AlertEngine {
        let config = tw_core::config::parse(
            "[smtp]\nhelo_name = \"probe.msp.example\"\nmail_from = \"probe@msp.example\"\n\
             [alerting]\nconfirm = 2\n\
             [[receivers]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\n",
        )
        .unwrap();
        AlertEngine::new(config.alerting, Vec::new())
    }

    fn obs(check: CheckKind, target: &str, reason: Reason, at: i64) -> Observation {
        Observation {
            tenant: TenantName::parse("contoso").unwrap(),
            check,
            target: target.to_owned(),
            scheduled_for: Timestamp(at),
            started_at: Timestamp(at),
            elapsed: Duration::ZERO,
            status: reason.status(),
            reason,
            summary: format!("{reason}"),
            evidence: Evidence::None,
        }
    }

    /// Runs one batch, commits it, and returns the firing messages' titles and bodies.
    fn run(engine: &mut AlertEngine, batch: &[Observation]) -> Vec<(String, String)> {
        let evaluated = engine.evaluate(batch);
        let fired = evaluated
            .writes
            .deliveries
            .iter()
            .map(|row| serde_json::from_str::<tw_notify::Message>(&row.message_json).unwrap())
            .filter(|message| message.kind == "firing")
            .map(|message| (message.title, message.body))
            .collect();
        engine.adopt(evaluated);
        fired
    }

    #[test]
    fn smtp_and_graph_agreeing_fire_at_once_and_say_so() {
        let mut engine = engine();
        // Graph says deleted first: one verdict is not enough under confirm = 2.
        assert!(run(
            &mut engine,
            &[obs(CheckKind::Identity, ADMIN, Reason::IdentityDeleted, T)]
        )
        .is_empty());
        // The MX rejecting the same address is the second, independent layer.
        let fired = run(
            &mut engine,
            &[obs(
                CheckKind::SmtpRcpt,
                ADMIN,
                Reason::RecipientNotFound,
                T + 60_000,
            )],
        );
        assert_eq!(fired.len(), 1, "{fired:?}");
        assert!(fired[0].0.starts_with("Identity vanished: "), "{fired:?}");
        assert!(
            fired[0].1.contains("smtp_rcpt and identity agree"),
            "{fired:?}"
        );
    }

    #[test]
    fn one_layer_alone_still_waits_for_confirmation() {
        let mut engine = engine();
        assert!(run(
            &mut engine,
            &[obs(
                CheckKind::SmtpRcpt,
                ADMIN,
                Reason::RecipientNotFound,
                T
            )]
        )
        .is_empty());
        // Another address gone in Graph does not count for this one.
        assert!(run(
            &mut engine,
            &[obs(
                CheckKind::Identity,
                "sales@contoso.com",
                Reason::IdentityDeleted,
                T + 1
            )]
        )
        .is_empty());
        // The second SMTP verdict confirms the usual way, without the headline.
        let fired = run(
            &mut engine,
            &[obs(
                CheckKind::SmtpRcpt,
                ADMIN,
                Reason::RecipientNotFound,
                T + 60_000,
            )],
        );
        assert_eq!(fired.len(), 1);
        assert!(!fired[0].0.contains("vanished"), "{fired:?}");
    }

    #[test]
    fn agreement_within_one_batch_counts() {
        let mut engine = engine();
        let fired = run(
            &mut engine,
            &[
                obs(CheckKind::Tenant, "contoso.com", Reason::TenantUnknown, T),
                obs(CheckKind::Signin, "contoso", Reason::TenantUnknown, T + 5),
            ],
        );
        assert_eq!(fired.len(), 1, "{fired:?}");
        assert!(fired[0].0.starts_with("Tenant vanished: "), "{fired:?}");
    }

    /// Every message of a batch: (kind, title, body).
    fn run_all(engine: &mut AlertEngine, batch: &[Observation]) -> Vec<(String, String, String)> {
        let evaluated = engine.evaluate(batch);
        let messages = evaluated
            .writes
            .deliveries
            .iter()
            .map(|row| serde_json::from_str::<tw_notify::Message>(&row.message_json).unwrap())
            .map(|message| (message.kind, message.title, message.body))
            .collect();
        engine.adopt(evaluated);
        messages
    }

    #[test]
    fn a_tenant_level_incident_holds_back_identity_alerts_and_lists_them() {
        let mut engine = engine();
        // The MX starts rejecting an address: pending (confirm = 2).
        assert!(run_all(
            &mut engine,
            &[obs(
                CheckKind::SmtpRcpt,
                ADMIN,
                Reason::RecipientNotFound,
                T
            )]
        )
        .is_empty());
        // Entra no longer knows the tenant's domain: agrees with the MX, fires at once, and
        // its message lists the identity.
        let fired = run_all(
            &mut engine,
            &[obs(
                CheckKind::Tenant,
                "contoso.com",
                Reason::TenantUnknown,
                T + 1,
            )],
        );
        assert_eq!(fired.len(), 1, "{fired:?}");
        assert!(fired[0].1.starts_with("Tenant vanished: "), "{fired:?}");
        assert!(fired[0].2.contains("Also affected"), "{fired:?}");
        assert!(
            fired[0]
                .2
                .contains("smtp_rcpt admin@contoso.com: recipient_not_found"),
            "{fired:?}"
        );
        // The identity's own confirmation is held back while the tenant-level alert fires.
        let held = run_all(
            &mut engine,
            &[obs(
                CheckKind::SmtpRcpt,
                ADMIN,
                Reason::RecipientNotFound,
                T + 60_000,
            )],
        );
        assert!(held.is_empty(), "{held:?}");
        // A check of the tenant as a whole (admins) is not held back.
        run_all(
            &mut engine,
            &[obs(CheckKind::Admins, "contoso", Reason::NoAdmin, T + 2)],
        );
        let admins = run_all(
            &mut engine,
            &[obs(
                CheckKind::Admins,
                "contoso",
                Reason::NoAdmin,
                T + 60_001,
            )],
        );
        assert_eq!(admins.len(), 1, "{admins:?}");
    }

    #[test]
    fn a_degraded_probe_source_is_one_message_instead_of_a_blind_alert_per_target() {
        let mut engine = engine();
        let targets: Vec<String> = (0..20).map(|i| format!("user{i}@contoso.com")).collect();
        let batch = |reason: Reason, at: i64| -> Vec<Observation> {
            targets
                .iter()
                .map(|t| obs(CheckKind::SmtpRcpt, t, reason, at))
                .collect()
        };
        assert!(run_all(&mut engine, &batch(Reason::RecipientAccepted, T)).is_empty());
        let degraded = run_all(&mut engine, &batch(Reason::Timeout, T + 60_000));
        assert_eq!(degraded.len(), 1, "{degraded:?}");
        assert_eq!(degraded[0].0, "degraded");
        assert!(degraded[0].2.contains("20 of 20 targets"), "{degraded:?}");
        // 40 minutes later every target is past blind_after (30 min): the evaluator raises
        // blind events, and none of them goes out.
        let evaluated = engine.evaluate(&batch(Reason::Timeout, T + 40 * 60_000));
        let blind_events = evaluated
            .events
            .iter()
            .filter(|e| e.kind == EventKind::Blind)
            .count();
        assert_eq!(blind_events, 20);
        assert!(evaluated.writes.deliveries.is_empty());
        engine.adopt(evaluated);
        // The network comes back: one recovery message.
        let back = run_all(
            &mut engine,
            &batch(Reason::RecipientAccepted, T + 41 * 60_000),
        );
        assert_eq!(
            back.iter().filter(|m| m.0 == "degraded_resolved").count(),
            1,
            "{back:?}"
        );
        // Blind alerts that were never sent are not resolved either.
        assert_eq!(back.len(), 1, "{back:?}");
    }
}
