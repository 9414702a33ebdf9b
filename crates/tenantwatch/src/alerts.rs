//! The alert stage of the recorder: observations in, alert states and outbox rows out,
//! committed in the same transaction as the observations.
//!
//! Deciding is tw-alert's (`evaluate`, `render`) and routing is the config's
//! (`AlertingConfig::receivers_for`); this module only holds each key's state between
//! batches and turns events into one outbox row per receiver. States are evaluated on a copy
//! and adopted only after the commit, so a failed write leaves nothing half-applied and the
//! retried batch yields the same events with the same dedup keys.
//!
//! What people decide at run time is applied here too, from what the recorder reads back
//! from the store every few seconds (the CLI and the API write from other processes):
//! silences hold messages back like the config's windows, an acknowledgement stops the
//! repeats and the escalation of its episode, and [`AlertEngine::escalations_due`] hands a
//! critical episode nobody acknowledged to the escalation receivers of its routes, once.
//!
//! Grouping: a Firing of a tenant whose other checks are still pending confirmation (they are
//! likely to fire too) opens a group held for `group_window`; every message of that tenant
//! enqueued while it is open joins it, and the dispatcher sends each receiver's share as one
//! message. A Firing with nothing else of its tenant pending is not held: it goes out at once,
//! together with whatever else of its tenant the same batch enqueued.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tw_alert::agreement::{agreement, Agreement, LayerVerdict};
use tw_alert::{evaluate, render, AlertEvent, AlertState, EventKind, Rules, Severity};
use tw_core::config::AlertingConfig;
use tw_core::{CheckKind, Observation, Reason, Status, Timestamp};
use tw_store::{
    AckRow, AlertCommit, AlertStateRow, Enqueue, Escalation, Fallback, NewDelivery, SilenceRow,
};

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
    /// Run-time silences in force or still to come, as last read from the store.
    silences: Vec<SilenceRow>,
    /// Acknowledged episodes, and who acknowledged them.
    acks: HashMap<(Key, u64), String>,
    /// The highest ack id read so far; only newer ones are read next time.
    last_ack_id: i64,
    /// Escalated episodes and the receivers they were escalated to (their resolution goes
    /// there too).
    escalated: HashMap<(Key, u64), Vec<String>>,
    /// Per tenant, the group its messages join while it is open.
    groups: HashMap<String, OpenGroup>,
}

/// A group of one tenant's messages being gathered.
#[derive(Debug, Clone, PartialEq)]
struct OpenGroup {
    key: String,
    /// When its rows fall due.
    not_before: Timestamp,
    /// Rows join it until then: a little before `not_before`, so a row committed as the
    /// dispatcher takes the group does not miss it (it would go out on its own, as a
    /// different message, not be lost).
    open_until: Timestamp,
}

/// How long before a held group falls due it stops taking new members.
const GROUP_CLOSE_MARGIN: Duration = Duration::from_secs(1);

/// The result of evaluating one batch, to be committed with it.
pub(crate) struct Evaluated {
    pub(crate) writes: AlertCommit,
    pub(crate) events: Vec<AlertEvent>,
    states: HashMap<Key, AlertState>,
    vantage: VantageChanges,
    held_blind: HashSet<Key>,
    released_blind: HashSet<Key>,
    groups: HashMap<String, OpenGroup>,
}

/// Escalations due now, to be committed together; [`AlertEngine::escalated`] takes them once
/// they are.
pub(crate) struct Escalating {
    pub(crate) escalations: Vec<Escalation>,
    pub(crate) deliveries: Vec<Enqueue>,
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
            silences: Vec::new(),
            acks: HashMap::new(),
            last_ack_id: 0,
            escalated: HashMap::new(),
            groups: HashMap::new(),
        }
    }

    /// Replaces the run-time silences (those not removed and not ended).
    pub(crate) fn set_silences(&mut self, silences: Vec<SilenceRow>) {
        self.silences = silences;
    }

    /// Takes acknowledgements read since the last call.
    pub(crate) fn add_acks(&mut self, acks: Vec<AckRow>) {
        for ack in acks {
            self.last_ack_id = self.last_ack_id.max(ack.id);
            self.acks.insert(
                ((ack.tenant, ack.check, ack.target), ack.episode),
                ack.acked_by,
            );
        }
    }

    /// The id after which acknowledgements are still to be read.
    pub(crate) fn last_ack_id(&self) -> i64 {
        self.last_ack_id
    }

    /// Takes escalations that are committed (at start: every one recorded).
    pub(crate) fn escalated(&mut self, escalations: Vec<Escalation>) {
        for escalation in escalations {
            self.escalated.insert(
                (
                    (escalation.tenant, escalation.check, escalation.target),
                    escalation.episode,
                ),
                escalation.receivers,
            );
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
        self.evaluate_at(batch, Timestamp::now())
    }

    /// [`AlertEngine::evaluate`] with the wall clock given: when rows are created and when
    /// groups fall due.
    pub(crate) fn evaluate_at(&self, batch: &[Observation], now: Timestamp) -> Evaluated {
        let mut changed: HashMap<Key, AlertState> = HashMap::new();
        let mut writes = AlertCommit::default();
        let mut groups: HashMap<String, OpenGroup> = self
            .groups
            .iter()
            .filter(|(_, group)| now < group.open_until)
            .map(|(tenant, group)| (tenant.clone(), group.clone()))
            .collect();
        let mut events = Vec::new();
        let mut held_blind: HashSet<Key> = HashSet::new();
        let mut released_blind: HashSet<Key> = HashSet::new();
        let mut to_send: Vec<(AlertEvent, Key, Option<Agreement>, Vec<String>)> = Vec::new();
        let (vantage, transition) = self.vantage.follow(
            batch,
            self.config.degraded_fraction,
            self.config.degraded_min_targets,
            &self.config.control_tenants,
        );
        if let Some(transition) = &transition {
            self.enqueue_vantage(transition, now, &mut writes.deliveries);
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
                // A check that cannot tell about a target whose problem another check already
                // pages about (the licence of a deleted user, say) adds nothing but noise.
                if event.kind == EventKind::Blind {
                    if let Some(other) = self.firing_elsewhere(&key, &changed) {
                        tracing::info!(tenant = %event.tenant, check = %event.check, target = %event.target, firing_check = %other, "Probe blind held back: another check of this target is firing");
                        held_blind.insert(key.clone());
                        continue;
                    }
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
                if !self.may_send(&key, event) {
                    continue;
                }
                let affected = if event.kind == EventKind::Firing
                    && is_tenant_level_incident(event.check, event.reason.as_str())
                {
                    self.identity_problems(&event.tenant, &changed)
                } else {
                    Vec::new()
                };
                to_send.push((event.clone(), key.clone(), agreed.clone(), affected));
            }
            events.extend(new_events);
            if next != previous {
                changed.insert(key, next);
            }
        }
        // Grouping looks at the states the whole batch leaves: a check that fires later in
        // the same batch is not "pending" for one that fired before it.
        for (event, key, agreed, affected) in &to_send {
            let group = self.place(event, key, &changed, &mut groups, now);
            let enqueue = Enqueuing {
                agreed: agreed.as_ref(),
                affected,
                group,
                now,
            };
            self.enqueue(event, key, enqueue, &mut writes.deliveries);
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
            groups,
        }
    }

    /// Whether a message for `event` may go out: not in a silence (the config's or one set at
    /// run time) and, for a repeat, not acknowledged. Logs why not.
    fn may_send(&self, key: &Key, event: &AlertEvent) -> bool {
        // Judged at the observation's time, so a retried batch decides the same way.
        if let Some(silence) =
            self.config
                .silenced(&event.tenant, event.check, &event.target, event.at)
        {
            tracing::info!(tenant = %event.tenant, check = %event.check, target = %event.target, kind = event.kind.as_str(), silence_reason = %silence.reason, until = %silence.end, "Alert silenced by a maintenance window; not sent");
            return false;
        }
        if let Some(silence) =
            self.runtime_silence(&event.tenant, event.check, &event.target, event.at)
        {
            tracing::info!(tenant = %event.tenant, check = %event.check, target = %event.target, kind = event.kind.as_str(), silence_id = silence.id, silence_reason = %silence.reason, silenced_by = %silence.created_by, until = %silence.ends_at, "Alert silenced by a run-time silence; not sent");
            return false;
        }
        if event.kind == EventKind::Repeat {
            if let Some(by) = self.acks.get(&(key.clone(), event.episode)) {
                tracing::info!(tenant = %event.tenant, check = %event.check, target = %event.target, episode = event.episode, acked_by = %by, "Repeat held back: the alert is acknowledged");
                return false;
            }
        }
        true
    }

    fn runtime_silence(
        &self,
        tenant: &str,
        check: CheckKind,
        target: &str,
        at: Timestamp,
    ) -> Option<&SilenceRow> {
        self.silences
            .iter()
            .find(|silence| silence.matches(tenant, check, target, at))
    }

    /// The group `event`'s rows join, and when they fall due: an open group of its tenant; or
    /// for a Firing, a new one, held for `group_window` while other checks of the tenant are
    /// pending confirmation, or due at once (gathering only the rest of this batch). None
    /// when grouping is off.
    fn place(
        &self,
        event: &AlertEvent,
        key: &Key,
        changed: &HashMap<Key, AlertState>,
        groups: &mut HashMap<String, OpenGroup>,
        now: Timestamp,
    ) -> Option<(String, Timestamp)> {
        let window = self.config.group_window;
        if window.is_zero() || event.tenant.is_empty() {
            return None;
        }
        if let Some(group) = groups.get(&event.tenant) {
            return Some((group.key.clone(), group.not_before));
        }
        if event.kind != EventKind::Firing {
            return None;
        }
        let group = if self.others_pending(&event.tenant, key, changed) {
            let not_before = now.plus(window);
            OpenGroup {
                key: format!("{}/group", event.dedup_key),
                not_before,
                open_until: not_before.minus(GROUP_CLOSE_MARGIN.min(window / 2)),
            }
        } else {
            OpenGroup {
                key: format!("{}/group", event.dedup_key),
                not_before: now,
                // Open for the rest of this evaluation only.
                open_until: now.plus(Duration::from_millis(1)),
            }
        };
        let placed = (group.key.clone(), group.not_before);
        groups.insert(event.tenant.clone(), group);
        Some(placed)
    }

    /// Whether another check of `tenant` has non-ok verdicts not yet confirmed.
    fn others_pending(&self, tenant: &str, key: &Key, changed: &HashMap<Key, AlertState>) -> bool {
        let pending = |(other, state): (&Key, &AlertState)| {
            other.0 == tenant && other != key && state.is_pending()
        };
        changed.iter().any(pending)
            || self
                .states
                .iter()
                .filter(|(other, _)| !changed.contains_key(*other))
                .any(pending)
    }

    /// Critical episodes nobody acknowledged within their routes' `escalate_after` of their
    /// page, not escalated yet and not silenced (neither when they paged nor now): one
    /// escalation each, with a message to every escalation receiver that was not sent the
    /// alert directly. `now` is the wall clock.
    pub(crate) fn escalations_due(&self, now: Timestamp) -> Escalating {
        let mut due = Escalating {
            escalations: Vec::new(),
            deliveries: Vec::new(),
        };
        for (key, state) in &self.states {
            let Some(page) = state.critical_page() else {
                continue;
            };
            let episode_key = (key.clone(), page.episode);
            if self.escalated.contains_key(&episode_key) {
                continue;
            }
            let (tenant, check, target) = key;
            let Some(rule) = self.config.escalation_for(tenant, *check) else {
                continue;
            };
            if now.millis_since(page.paged_at) < millis(rule.after) {
                continue;
            }
            if let Some(by) = self.acks.get(&episode_key) {
                tracing::debug!(tenant = %tenant, check = %check, target = %target, episode = page.episode, acked_by = %by, "Not escalated: acknowledged");
                continue;
            }
            let silenced = |at: Timestamp| {
                self.config.silenced(tenant, *check, target, at).is_some()
                    || self.runtime_silence(tenant, *check, target, at).is_some()
            };
            if silenced(page.paged_at) || silenced(now) {
                continue;
            }
            if is_identity_level(*check, target)
                && self.tenant_incident(tenant, &HashMap::new()).is_some()
            {
                continue;
            }
            let direct: Vec<&str> = self
                .config
                .targets_for(Severity::Critical.as_str(), tenant, *check)
                .into_iter()
                .map(|t| t.receiver)
                .collect();
            let receivers: Vec<String> = rule
                .to
                .iter()
                .filter(|name| !direct.contains(name))
                .map(|name| (*name).to_owned())
                .collect();
            let Some(message) = escalation_message(
                key,
                state,
                page,
                rule.after,
                now,
                self.config.status_page_url.as_deref(),
            ) else {
                continue;
            };
            tracing::warn!(tenant = %tenant, check = %check, target = %target, episode = page.episode, after = %humantime::format_duration(rule.after), receivers = %receivers.join(","), "Escalating: a critical alert was not acknowledged in time");
            match serde_json::to_string(&message) {
                Ok(message_json) => {
                    for receiver in &receivers {
                        due.deliveries.push(Enqueue::from(NewDelivery {
                            dedup_key: format!("{}/{receiver}", message.id),
                            receiver: receiver.clone(),
                            message_json: message_json.clone(),
                            created_at: now,
                            expires_at: now.plus(self.config.delivery_expiry),
                        }));
                    }
                }
                Err(err) => {
                    tracing::error!(error = %err, "Cannot encode an escalation message");
                    continue;
                }
            }
            due.escalations.push(Escalation {
                tenant: tenant.clone(),
                check: *check,
                target: target.clone(),
                episode: page.episode,
                escalated_at: now,
                receivers,
            });
        }
        due
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

    /// Another check of the same tenant and target whose alert is firing, if any.
    fn firing_elsewhere(&self, key: &Key, changed: &HashMap<Key, AlertState>) -> Option<CheckKind> {
        CheckKind::ALL
            .into_iter()
            .filter(|check| *check != key.1)
            .find(|check| {
                let other = (key.0.clone(), *check, key.2.clone());
                changed
                    .get(&other)
                    .or_else(|| self.states.get(&other))
                    .is_some_and(AlertState::is_firing)
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
        self.groups = evaluated.groups;
        self.states.extend(evaluated.states);
        self.vantage.adopt(evaluated.vantage);
        self.held_blind.extend(evaluated.held_blind);
        for key in evaluated.released_blind {
            self.held_blind.remove(&key);
        }
    }

    /// One message about the monitor's own network, to the receivers of monitor alerts.
    fn enqueue_vantage(
        &self,
        transition: &Transition,
        created_at: Timestamp,
        deliveries: &mut Vec<Enqueue>,
    ) {
        let receivers = self.config.receivers_for_monitor("blind");
        let (kind, since, at, title, body) = match *transition {
            Transition::Degraded {
                since,
                unknown,
                total,
                control_down,
            } => {
                tracing::error!(
                    unknown,
                    total,
                    control_down,
                    "Probe source degraded: many targets fail for network reasons at once"
                );
                let control = if control_down {
                    " The control tenants (your own mail domain) fail the same way."
                } else {
                    ""
                };
                (
                    "degraded",
                    since,
                    since,
                    "Probe source degraded: tenantwatch's own network is failing".to_owned(),
                    format!("{unknown} of {total} targets are unknown for network reasons (timeouts, refused or dropped connections, DNS failures, TLS failures) at once.{control} That points at the monitor's own network, resolver or outbound port 25, not at the tenants. Per-target \"probe blind\" alerts for network reasons are held back until it recovers."),
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
        for receiver in receivers {
            deliveries.push(Enqueue::from(NewDelivery {
                dedup_key: format!("{}/{receiver}", message.id),
                receiver: receiver.to_owned(),
                message_json: message_json.clone(),
                created_at,
                expires_at: created_at.plus(self.config.delivery_expiry),
            }));
        }
    }

    fn enqueue(
        &self,
        event: &AlertEvent,
        key: &Key,
        how: Enqueuing<'_>,
        deliveries: &mut Vec<Enqueue>,
    ) {
        let Enqueuing {
            agreed,
            affected,
            group,
            now: created_at,
        } = how;
        let mut targets: Vec<(String, Option<Fallback>)> = self
            .config
            .targets_for(event.severity.as_str(), &event.tenant, event.check)
            .into_iter()
            .map(|target| {
                let fallback = (!target.fallback.is_empty()).then(|| Fallback {
                    to: target.fallback.iter().map(|s| (*s).to_owned()).collect(),
                    after_attempts: target.fallback_attempts,
                    after: target.fallback_after,
                });
                (target.receiver.to_owned(), fallback)
            })
            .collect();
        // The people an episode was escalated to hear how it ends.
        if event.kind == EventKind::Resolved {
            if let Some(escalated) = self.escalated.get(&(key.clone(), event.episode)) {
                for receiver in escalated {
                    if !targets.iter().any(|(name, _)| name == receiver) {
                        targets.push((receiver.clone(), None));
                    }
                }
            }
        }
        if targets.is_empty() {
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
        for (receiver, fallback) in targets {
            deliveries.push(Enqueue {
                delivery: NewDelivery {
                    dedup_key: format!("{}/{receiver}", event.dedup_key),
                    receiver,
                    message_json: message_json.clone(),
                    created_at,
                    expires_at: created_at.plus(self.config.delivery_expiry),
                },
                not_before: group.as_ref().map(|(_, at)| *at),
                group_key: group.as_ref().map(|(key, _)| key.clone()),
                fallback,
            });
        }
    }
}

/// How one event's rows are enqueued.
struct Enqueuing<'a> {
    agreed: Option<&'a Agreement>,
    affected: &'a [String],
    /// The group they join and when it falls due.
    group: Option<(String, Timestamp)>,
    now: Timestamp,
}

/// The message that escalates a critical episode: the alert as it stands, said to be
/// unacknowledged. Its id is the episode's escalation, the same however often it is built.
fn escalation_message(
    key: &Key,
    state: &AlertState,
    page: tw_alert::Page,
    after: Duration,
    now: Timestamp,
    link: Option<&str>,
) -> Option<tw_notify::Message> {
    let (tenant, check, target) = key;
    let (_, reason, summary) = state.last_problem()?;
    let reason = Reason::parse(reason)?;
    let event = AlertEvent {
        kind: EventKind::Repeat,
        severity: Severity::Critical,
        tenant: tenant.clone(),
        check: *check,
        target: target.clone(),
        status: Status::Critical,
        reason,
        summary: summary.to_owned(),
        since: page.since,
        at: now,
        episode: page.episode,
        dedup_key: format!(
            "{}/{}/{}/{}/escalation",
            escape(tenant),
            escape(check.as_str()),
            escape(target),
            page.episode
        ),
    };
    let after = humantime::format_duration(after);
    let mut message = message_for(&event, link);
    message.kind = "escalation".to_owned();
    message.title = format!(
        "ESCALATED (not acknowledged within {after}): {}",
        message.title
    );
    message.short = format!("ESCALATED {}", message.short)
        .chars()
        .take(render::SHORT_MAX)
        .collect();
    message.body = format!(
        "Escalated: nobody acknowledged this critical alert within {after} of its first page at {}.\nAcknowledge it with `tenantwatch ack --tenant {tenant} --check {check} --target {target}` or POST /api/v1/acks.\n\n{}",
        page.paged_at, message.body
    );
    Some(message)
}

/// Percent-encodes the dedup key separator, as tw-alert does for its keys.
fn escape(part: &str) -> String {
    part.replace('%', "%25").replace('/', "%2F")
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
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
            .map(|row| {
                serde_json::from_str::<tw_notify::Message>(&row.delivery.message_json).unwrap()
            })
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
            .map(|row| {
                serde_json::from_str::<tw_notify::Message>(&row.delivery.message_json).unwrap()
            })
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

    /// An engine with `extra` appended to a config of two webhook receivers (`hook`, `sms`).
    fn engine_with(extra: &str) -> AlertEngine {
        let config = tw_core::config::parse(&format!(
            "[smtp]\nhelo_name = \"probe.msp.example\"\nmail_from = \"probe@msp.example\"\n\
             [alerting]\nconfirm = 2\n{extra}\n\
             [[receivers]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\n\
             [[receivers]]\nname = \"sms\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/sms\"\n"
        ))
        .unwrap();
        AlertEngine::new(config.alerting, Vec::new())
    }

    /// Evaluates and commits one batch at wall-clock `now`; returns its rows.
    fn step(engine: &mut AlertEngine, batch: &[Observation], now: i64) -> Vec<Enqueue> {
        let evaluated = engine.evaluate_at(batch, Timestamp(now));
        let rows = evaluated.writes.deliveries.clone();
        engine.adopt(evaluated);
        rows
    }

    fn kinds(rows: &[Enqueue]) -> Vec<(String, String)> {
        rows.iter()
            .map(|row| {
                let message: tw_notify::Message =
                    serde_json::from_str(&row.delivery.message_json).unwrap();
                (row.delivery.receiver.clone(), message.kind)
            })
            .collect()
    }

    fn silence(id: i64, tenant: &str, start: i64, end: i64, removed: bool) -> SilenceRow {
        SilenceRow {
            id,
            tenant: Some(tenant.to_owned()),
            check: None,
            target: None,
            starts_at: Timestamp(start),
            ends_at: Timestamp(end),
            reason: "migration".to_owned(),
            created_by: "alice".to_owned(),
            created_at: Timestamp(start),
            removed_at: removed.then_some(Timestamp(start)),
            removed_by: removed.then(|| "bob".to_owned()),
        }
    }

    fn ack(id: i64, target: &str, episode: u64) -> AckRow {
        AckRow {
            id,
            tenant: "contoso".to_owned(),
            check: CheckKind::SmtpRcpt,
            target: target.to_owned(),
            episode,
            acked_by: "alice".to_owned(),
            acked_at: Timestamp(T),
            comment: None,
        }
    }

    const MIN: i64 = 60_000;
    const HOUR: i64 = 60 * MIN;

    fn gone(target: &str, at: i64) -> Observation {
        obs(CheckKind::SmtpRcpt, target, Reason::RecipientNotFound, at)
    }

    fn back(target: &str, at: i64) -> Observation {
        obs(CheckKind::SmtpRcpt, target, Reason::RecipientAccepted, at)
    }

    #[test]
    fn a_run_time_silence_holds_messages_back_while_in_force_and_not_removed() {
        let mut engine = engine_with("group_window = \"0s\"");
        engine.set_silences(vec![
            silence(1, "fabrikam", T, T + HOUR, false),
            silence(2, "contoso", T, T + HOUR, true),
            silence(3, "contoso", T, T + HOUR, false),
        ]);
        assert!(step(&mut engine, &[gone(ADMIN, T)], T).is_empty());
        let evaluated = engine.evaluate_at(&[gone(ADMIN, T + MIN)], Timestamp(T + MIN));
        // Evaluated (the event exists), not sent.
        assert_eq!(evaluated.events.len(), 1);
        assert!(evaluated.writes.deliveries.is_empty());
        engine.adopt(evaluated);
        // Removed (or only the removed and the other tenant's left): the next message goes.
        engine.set_silences(vec![
            silence(1, "fabrikam", T, T + HOUR, false),
            silence(2, "contoso", T, T + HOUR, true),
        ]);
        let rows = step(&mut engine, &[back(ADMIN, T + 2 * MIN)], T + 2 * MIN);
        assert_eq!(
            kinds(&rows),
            [
                ("hook".into(), "resolved".into()),
                ("sms".into(), "resolved".into())
            ]
        );
    }

    #[test]
    fn an_acknowledged_episode_stops_repeating_until_it_resolves_and_the_next_one_pages() {
        let mut engine = engine_with("group_window = \"0s\"\nrepeat_interval = \"1h\"");
        step(&mut engine, &[gone(ADMIN, T)], T);
        let fired = step(&mut engine, &[gone(ADMIN, T + MIN)], T + MIN);
        assert_eq!(fired.len(), 2);
        // Not acknowledged: the repeat goes out.
        let mut unacked = engine_with("group_window = \"0s\"\nrepeat_interval = \"1h\"");
        step(&mut unacked, &[gone(ADMIN, T)], T);
        step(&mut unacked, &[gone(ADMIN, T + MIN)], T + MIN);
        let repeat = step(&mut unacked, &[gone(ADMIN, T + 2 * HOUR)], T + 2 * HOUR);
        assert_eq!(kinds(&repeat)[0].1, "repeat");

        engine.add_acks(vec![ack(7, ADMIN, 1), ack(8, "other@contoso.com", 1)]);
        assert_eq!(engine.last_ack_id(), 8);
        let evaluated = engine.evaluate_at(&[gone(ADMIN, T + 2 * HOUR)], Timestamp(T + 2 * HOUR));
        assert_eq!(evaluated.events[0].kind, EventKind::Repeat);
        assert!(evaluated.writes.deliveries.is_empty());
        engine.adopt(evaluated);
        assert!(step(&mut engine, &[gone(ADMIN, T + 4 * HOUR)], T + 4 * HOUR).is_empty());
        // The resolution is still sent.
        let resolved = step(&mut engine, &[back(ADMIN, T + 5 * HOUR)], T + 5 * HOUR);
        assert_eq!(kinds(&resolved)[0].1, "resolved");
        // A new episode pages and repeats again: the ack was for episode 1 only.
        step(&mut engine, &[gone(ADMIN, T + 7 * HOUR)], T + 7 * HOUR);
        let again = step(
            &mut engine,
            &[gone(ADMIN, T + 7 * HOUR + MIN)],
            T + 7 * HOUR + MIN,
        );
        assert_eq!(kinds(&again)[0].1, "firing");
        let repeat = step(&mut engine, &[gone(ADMIN, T + 9 * HOUR)], T + 9 * HOUR);
        assert_eq!(kinds(&repeat)[0].1, "repeat");
    }

    const ESCALATING: &str = "group_window = \"0s\"\n\
        [[routes]]\nreceivers = [\"hook\"]\nescalate_after = \"30m\"\nescalate_to = [\"sms\"]\n";

    #[test]
    fn an_unacknowledged_critical_escalates_once_after_escalate_after_and_hears_the_end() {
        let mut engine = engine_with(ESCALATING);
        step(&mut engine, &[gone(ADMIN, T)], T);
        let fired = step(&mut engine, &[gone(ADMIN, T + MIN)], T + MIN);
        assert_eq!(kinds(&fired), [("hook".into(), "firing".into())]);
        // The timer runs from the page (T + 1 min), on the wall clock given.
        assert!(engine
            .escalations_due(Timestamp(T + MIN + 30 * MIN - 1))
            .escalations
            .is_empty());
        let due = engine.escalations_due(Timestamp(T + 31 * MIN));
        assert_eq!(due.escalations.len(), 1);
        let escalation = &due.escalations[0];
        assert_eq!(
            (escalation.episode, escalation.receivers.clone()),
            (1, vec!["sms".to_owned()])
        );
        assert_eq!(
            kinds(&due.deliveries),
            [("sms".into(), "escalation".into())]
        );
        let message: tw_notify::Message =
            serde_json::from_str(&due.deliveries[0].delivery.message_json).unwrap();
        assert_eq!(
            message.id,
            "contoso/smtp_rcpt/admin@contoso.com/1/escalation"
        );
        assert!(
            message
                .title
                .starts_with("ESCALATED (not acknowledged within 30m): ")
                && message
                    .title
                    .contains("CRITICAL: contoso admin@contoso.com"),
            "{}",
            message.title
        );
        assert!(message.short.len() <= 159);
        assert_eq!(
            due.deliveries[0].delivery.dedup_key,
            format!("{}/sms", message.id)
        );
        // Once committed it is not due again.
        engine.escalated(due.escalations);
        assert!(engine
            .escalations_due(Timestamp(T + 3 * HOUR))
            .escalations
            .is_empty());
        // The resolution goes where the page and the escalation went.
        let resolved = step(&mut engine, &[back(ADMIN, T + 2 * HOUR)], T + 2 * HOUR);
        assert_eq!(
            kinds(&resolved),
            [
                ("hook".into(), "resolved".into()),
                ("sms".into(), "resolved".into())
            ]
        );
    }

    #[test]
    fn an_acknowledged_a_warning_or_a_silenced_alert_does_not_escalate() {
        let mut engine = engine_with(ESCALATING);
        step(&mut engine, &[gone(ADMIN, T)], T);
        step(&mut engine, &[gone(ADMIN, T + MIN)], T + MIN);
        engine.add_acks(vec![ack(1, ADMIN, 1)]);
        assert!(engine
            .escalations_due(Timestamp(T + 2 * HOUR))
            .escalations
            .is_empty());

        let mut silenced = engine_with(ESCALATING);
        step(&mut silenced, &[gone(ADMIN, T)], T);
        step(&mut silenced, &[gone(ADMIN, T + MIN)], T + MIN);
        silenced.set_silences(vec![silence(1, "contoso", T + HOUR, T + 3 * HOUR, false)]);
        assert!(silenced
            .escalations_due(Timestamp(T + 2 * HOUR))
            .escalations
            .is_empty());
        // The page itself went out before the silence: once the silence ends it escalates.
        assert_eq!(
            silenced
                .escalations_due(Timestamp(T + 4 * HOUR))
                .escalations
                .len(),
            1
        );

        let mut warning = engine_with(ESCALATING);
        let spf = |at| obs(CheckKind::Dns, "contoso.com", Reason::SpfMissing, at);
        step(&mut warning, &[spf(T)], T);
        assert_eq!(
            kinds(&step(&mut warning, &[spf(T + MIN)], T + MIN)).len(),
            1
        );
        assert!(warning
            .escalations_due(Timestamp(T + 2 * HOUR))
            .escalations
            .is_empty());
    }

    #[test]
    fn a_firing_with_other_checks_of_its_tenant_pending_is_held_and_they_join_it() {
        let mut engine = engine_with("group_window = \"30s\"");
        let (a, b) = ("a@contoso.com", "b@contoso.com");
        // Both turn bad; neither is confirmed yet.
        assert!(step(&mut engine, &[gone(a, T), gone(b, T + 5_000)], T + 5_000).is_empty());
        // a confirms while b is still pending: held for the window.
        let first = step(&mut engine, &[gone(a, T + MIN)], T + MIN);
        assert_eq!(first.len(), 2);
        let group = first[0].group_key.clone().unwrap();
        assert_eq!(group, "contoso/smtp_rcpt/a@contoso.com/1/firing/group");
        assert!(first
            .iter()
            .all(|row| row.not_before == Some(Timestamp(T + MIN + 30_000))));
        // b confirms 10 s later and joins the same group, due at the same time.
        let second = step(&mut engine, &[gone(b, T + MIN + 5_000)], T + MIN + 10_000);
        assert_eq!(second.len(), 2);
        assert!(second
            .iter()
            .all(|row| row.group_key.as_deref() == Some(group.as_str())
                && row.not_before == Some(Timestamp(T + MIN + 30_000))));
        // After the group closed, a message of the tenant is on its own again.
        let resolved = step(&mut engine, &[back(a, T + 2 * MIN)], T + 2 * MIN);
        assert!(resolved
            .iter()
            .all(|row| row.group_key.is_none() && row.not_before.is_none()));
    }

    #[test]
    fn a_lone_firing_goes_out_at_once_gathering_only_its_own_batch() {
        let mut engine = engine_with("group_window = \"30s\"");
        let (a, b) = ("a@contoso.com", "b@contoso.com");
        step(&mut engine, &[gone(a, T), gone(b, T)], T);
        let rows = step(&mut engine, &[gone(a, T + MIN), gone(b, T + MIN)], T + MIN);
        assert_eq!(rows.len(), 4);
        assert!(rows
            .iter()
            .all(|row| row.not_before == Some(Timestamp(T + MIN))));
        let keys: HashSet<_> = rows.iter().map(|row| row.group_key.clone()).collect();
        assert_eq!(keys.len(), 1, "{keys:?}");
        // Grouping off: no group at all.
        let mut off = engine_with("group_window = \"0s\"");
        step(&mut off, &[gone(a, T), gone(b, T)], T);
        let rows = step(&mut off, &[gone(a, T + MIN), gone(b, T + MIN)], T + MIN);
        assert!(rows
            .iter()
            .all(|row| row.group_key.is_none() && row.not_before.is_none()));
    }

    #[test]
    fn a_fallback_route_enqueues_to_its_first_receiver_with_the_rest_behind() {
        let mut engine = engine_with(
            "group_window = \"0s\"\n[[routes]]\nreceivers = [\"sms\", \"hook\"]\nfallback = true\nfallback_attempts = 2\nfallback_after = \"1m\"\n",
        );
        step(&mut engine, &[gone(ADMIN, T)], T);
        let rows = step(&mut engine, &[gone(ADMIN, T + MIN)], T + MIN);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].delivery.receiver, "sms");
        assert_eq!(
            rows[0].fallback,
            Some(Fallback {
                to: vec!["hook".to_owned()],
                after_attempts: 2,
                after: Duration::from_secs(60),
            })
        );
    }

    #[test]
    fn a_blind_check_of_a_target_another_check_pages_about_stays_quiet() {
        let mut engine = engine();
        // The identity is gone (confirmed), and the licence check of the same address can
        // no longer read it (unknown) for longer than blind_after.
        run_all(
            &mut engine,
            &[obs(CheckKind::Identity, ADMIN, Reason::IdentityDeleted, T)],
        );
        let fired = run_all(
            &mut engine,
            &[obs(
                CheckKind::Identity,
                ADMIN,
                Reason::IdentityDeleted,
                T + 60_000,
            )],
        );
        assert_eq!(fired.len(), 1, "{fired:?}");
        run_all(
            &mut engine,
            &[obs(
                CheckKind::Licence,
                ADMIN,
                Reason::HttpError,
                T + 60_001,
            )],
        );
        let evaluated = engine.evaluate(&[obs(
            CheckKind::Licence,
            ADMIN,
            Reason::HttpError,
            T + 40 * 60_000,
        )]);
        assert!(evaluated.events.iter().any(|e| e.kind == EventKind::Blind));
        assert!(evaluated.writes.deliveries.is_empty(), "blind held back");
        engine.adopt(evaluated);
        // A blind check of another address still speaks.
        run_all(
            &mut engine,
            &[obs(
                CheckKind::Licence,
                "sales@contoso.com",
                Reason::HttpError,
                T,
            )],
        );
        let other = run_all(
            &mut engine,
            &[obs(
                CheckKind::Licence,
                "sales@contoso.com",
                Reason::HttpError,
                T + 40 * 60_000,
            )],
        );
        assert_eq!(
            other.iter().filter(|m| m.0 == "blind").count(),
            1,
            "{other:?}"
        );
    }
}
