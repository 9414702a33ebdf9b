//! The alert stage of the recorder: observations in, alert states and outbox rows out,
//! committed in the same transaction as the observations.
//!
//! Deciding is tw-alert's (`evaluate`, `render`) and routing is the config's
//! (`AlertingConfig::receivers_for`); this module only holds each key's state between
//! batches and turns events into one outbox row per receiver. States are evaluated on a copy
//! and adopted only after the commit, so a failed write leaves nothing half-applied and the
//! retried batch yields the same events with the same dedup keys.

use std::collections::HashMap;

use tw_alert::{evaluate, render, AlertEvent, AlertState, Rules};
use tw_core::config::AlertingConfig;
use tw_core::{CheckKind, Observation, Timestamp};
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
            let (next, new_events) =
                evaluate(&previous, observation, &self.rules, observation.started_at);
            for event in &new_events {
                self.enqueue(event, &mut writes.deliveries);
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

    /// Takes the states of a committed batch.
    pub(crate) fn adopt(&mut self, evaluated: Evaluated) {
        self.states.extend(evaluated.states);
    }

    fn enqueue(&self, event: &AlertEvent, deliveries: &mut Vec<NewDelivery>) {
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
        let message = message_for(event, self.config.status_page_url.as_deref());
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
