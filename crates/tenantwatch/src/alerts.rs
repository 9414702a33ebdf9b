//! The alert stage of the recorder: observations in, alert states and outbox rows out,
//! committed in the same transaction as the observations.
//!
//! Deciding is tw-alert's (`evaluate`, `render`) and routing is the config's
//! (`AlertingConfig::receivers_for`); this module only holds each key's state between
//! batches and turns events into one outbox row per receiver. States are evaluated on a copy
//! and adopted only after the commit, so a failed write leaves nothing half-applied and the
//! retried batch yields the same events with the same dedup keys.

use std::collections::HashMap;

use tw_alert::agreement::{agreement, Agreement, LayerVerdict};
use tw_alert::{evaluate, render, AlertEvent, AlertState, EventKind, Rules};
use tw_core::config::AlertingConfig;
use tw_core::{CheckKind, Observation, Status, Timestamp};
use tw_store::{AlertStateRow, AlertWrites, NewDelivery};

type Key = (String, CheckKind, String);

pub(crate) struct AlertEngine {
    states: HashMap<Key, AlertState>,
    rules: Rules,
    config: AlertingConfig,
}

/// The result of evaluating one batch, to be committed with it.
pub(crate) struct Evaluated {
    pub(crate) writes: AlertWrites,
    pub(crate) events: Vec<AlertEvent>,
    states: HashMap<Key, AlertState>,
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
                self.enqueue(event, agreed.as_ref(), &mut writes.deliveries);
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
        }
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
    }

    fn enqueue(
        &self,
        event: &AlertEvent,
        agreed: Option<&Agreement>,
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
}
