//! `[alerting]`, `[[receivers]]` and `[[routes]]`: when to alert and where to send it.
//!
//! Receivers name their credential by reference (`secret_file` or `secret_env`), never
//! inline; the binary resolves the reference before it starts, so a missing secret is a
//! startup error, not a failed page at 3 a.m.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::Validator;
use crate::{CheckKind, EmailAddress, TenantName, Timestamp};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlerting {
    confirm: Option<Spanned<i64>>,
    recover: Option<Spanned<i64>>,
    repeat_interval: Option<Spanned<String>>,
    blind_after: Option<Spanned<String>>,
    delivery_expiry: Option<Spanned<String>>,
    status_page_url: Option<Spanned<String>>,
    degraded_fraction: Option<Spanned<f64>>,
    degraded_min_targets: Option<Spanned<i64>>,
    #[serde(default)]
    control_tenants: Vec<Spanned<String>>,
    group_window: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReceiver {
    name: Spanned<String>,
    kind: Spanned<String>,
    url: Option<Spanned<String>>,
    secret_file: Option<String>,
    secret_env: Option<String>,
    number: Option<String>,
    #[serde(default)]
    recipients: Vec<String>,
    account_sid: Option<String>,
    from: Option<Spanned<String>>,
    #[serde(default)]
    to: Vec<Spanned<String>>,
    method: Option<Spanned<String>>,
    content_type: Option<Spanned<String>>,
    body_template: Option<String>,
    chat_id: Option<String>,
    room_id: Option<String>,
    relay_host: Option<String>,
    relay_port: Option<Spanned<i64>>,
    tls: Option<Spanned<String>>,
    username: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSilence {
    tenant: Option<Spanned<String>>,
    check: Option<Spanned<String>>,
    target: Option<String>,
    start: Spanned<String>,
    end: Spanned<String>,
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    receivers: Vec<Spanned<String>>,
    #[serde(default)]
    severities: Vec<Spanned<String>>,
    #[serde(default)]
    tenants: Vec<Spanned<String>>,
    #[serde(default)]
    checks: Vec<Spanned<String>>,
    fallback: Option<Spanned<bool>>,
    fallback_after: Option<Spanned<String>>,
    fallback_attempts: Option<Spanned<i64>>,
    escalate_after: Option<Spanned<String>>,
    #[serde(default)]
    escalate_to: Vec<Spanned<String>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AlertingConfig {
    /// Consecutive non-ok verdicts before an alert fires.
    pub confirm: u32,
    /// Consecutive ok verdicts before it resolves.
    pub recover: u32,
    pub repeat_interval: Duration,
    /// How long `unknown` may last before a "probe blind" alert.
    pub blind_after: Duration,
    /// How long a notification is retried before it is parked as expired.
    pub delivery_expiry: Duration,
    /// Linked from rich messages.
    pub status_page_url: Option<String>,
    /// When at least this share of all targets is `unknown` for a network reason, the
    /// monitor's own network is the likely cause: one "probe source degraded" alert instead
    /// of a blind alert per target.
    pub degraded_fraction: f64,
    /// … and at least this many targets are.
    pub degraded_min_targets: usize,
    /// Tenants that watch the MSP's own infrastructure (its own mail domain and MX): when all
    /// their targets fail for network reasons while at least `degraded_min_targets` others
    /// do too, the probe source is degraded even below `degraded_fraction`.
    pub control_tenants: Vec<TenantName>,
    /// Alerts of one tenant that fire within this window go out as one message per
    /// receiver; zero turns grouping off.
    pub group_window: Duration,
    pub receivers: Vec<Receiver>,
    /// Empty: every receiver gets every alert.
    pub routes: Vec<Route>,
    /// Maintenance windows: matching alerts are evaluated and logged but not sent.
    pub silences: Vec<Silence>,
}

/// A maintenance window. An absent tenant, check or target matches any.
#[derive(Debug, Clone, PartialEq)]
pub struct Silence {
    pub tenant: Option<TenantName>,
    pub check: Option<CheckKind>,
    pub target: Option<String>,
    pub start: Timestamp,
    pub end: Timestamp,
    pub reason: String,
}

impl Silence {
    pub fn matches(&self, tenant: &str, check: CheckKind, target: &str, at: Timestamp) -> bool {
        self.start <= at
            && at < self.end
            && self.tenant.as_ref().is_none_or(|t| t.as_str() == tenant)
            && self.check.is_none_or(|c| c == check)
            && self
                .target
                .as_deref()
                .is_none_or(|t| t.eq_ignore_ascii_case(target))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Receiver {
    pub name: String,
    pub kind: ReceiverKind,
    pub secret: Option<SecretSource>,
}

/// Where a receiver's credential comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailTls {
    StartTls,
    Implicit,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReceiverKind {
    Webhook {
        url: String,
    },
    Ntfy {
        url: String,
    },
    Alertmanager {
        url: String,
    },
    Signal {
        url: String,
        number: String,
        recipients: Vec<String>,
    },
    TwilioSms {
        base_url: String,
        account_sid: String,
        from: String,
        to: Vec<String>,
    },
    HttpSms {
        url: String,
        method: String,
        content_type: String,
        body_template: String,
        to: Vec<String>,
    },
    Telegram {
        base_url: String,
        chat_id: String,
    },
    Matrix {
        homeserver: String,
        room_id: String,
    },
    Email {
        relay_host: String,
        relay_port: u16,
        tls: EmailTls,
        username: Option<String>,
        from: EmailAddress,
        to: Vec<EmailAddress>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// With `fallback`, in order of preference.
    pub receivers: Vec<String>,
    /// Empty: any. Values: `critical`, `warning`, `blind`.
    pub severities: Vec<String>,
    pub tenants: Vec<TenantName>,
    pub checks: Vec<CheckKind>,
    /// Send to the first receiver only, and hand a message on to the next one when a
    /// delivery keeps failing (see [`Route::fallback_attempts`], [`Route::fallback_after`]).
    pub fallback: bool,
    /// With `fallback`: a delivery is handed on after this many failed attempts …
    pub fallback_attempts: u32,
    /// … or once this long has passed since its first attempt without success, whichever
    /// comes first (a permanent refusal hands it on at once).
    pub fallback_after: Duration,
    /// A critical alert of this route not acknowledged this long after it paged is sent to
    /// `escalate_to` too.
    pub escalate_after: Option<Duration>,
    pub escalate_to: Vec<String>,
}

/// Where one alert message goes: a receiver, and the receivers to fall back to, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryTarget<'a> {
    pub receiver: &'a str,
    /// Empty without a fallback route.
    pub fallback: Vec<&'a str>,
    pub fallback_attempts: u32,
    pub fallback_after: Duration,
}

/// When and to whom a critical alert escalates.
#[derive(Debug, Clone, PartialEq)]
pub struct EscalationRule<'a> {
    /// The shortest `escalate_after` of the routes the alert matches.
    pub after: Duration,
    /// Every `escalate_to` receiver of those routes, each once.
    pub to: Vec<&'a str>,
}

impl Route {
    pub fn matches(&self, severity: &str, tenant: &str, check: CheckKind) -> bool {
        (self.severities.is_empty() || self.severities.iter().any(|s| s == severity))
            && (self.tenants.is_empty() || self.tenants.iter().any(|t| t.as_str() == tenant))
            && (self.checks.is_empty() || self.checks.contains(&check))
    }
}

impl AlertingConfig {
    /// The silence in force for this alert at `at`, if any.
    pub fn silenced(
        &self,
        tenant: &str,
        check: CheckKind,
        target: &str,
        at: Timestamp,
    ) -> Option<&Silence> {
        self.silences
            .iter()
            .find(|silence| silence.matches(tenant, check, target, at))
    }

    /// The receivers an alert of this severity, tenant and check goes to, each once, in the
    /// order the routes name them.
    /// Receivers of an alert about the monitor itself (no tenant, no check): every receiver
    /// when there are no routes, else those of the routes that match the severity and name
    /// no tenant or check.
    pub fn receivers_for_monitor(&self, severity: &str) -> Vec<&str> {
        if self.routes.is_empty() {
            return self.receivers.iter().map(|r| r.name.as_str()).collect();
        }
        let mut names: Vec<&str> = Vec::new();
        for route in self.routes.iter().filter(|route| {
            route.tenants.is_empty()
                && route.checks.is_empty()
                && (route.severities.is_empty() || route.severities.iter().any(|s| s == severity))
        }) {
            for name in &route.receivers {
                if !names.contains(&name.as_str()) {
                    names.push(name);
                }
            }
        }
        names
    }

    /// Where an alert of this severity, tenant and check is sent: every receiver of a
    /// matching plain route, and the first receiver of a matching fallback route with the
    /// rest behind it. Each receiver once, the first route naming it deciding how; without
    /// routes, every receiver.
    pub fn targets_for(
        &self,
        severity: &str,
        tenant: &str,
        check: CheckKind,
    ) -> Vec<DeliveryTarget<'_>> {
        let mut targets: Vec<DeliveryTarget<'_>> = Vec::new();
        fn direct(receiver: &str) -> DeliveryTarget<'_> {
            DeliveryTarget {
                receiver,
                fallback: Vec::new(),
                fallback_attempts: DEFAULT_FALLBACK_ATTEMPTS,
                fallback_after: DEFAULT_FALLBACK_AFTER,
            }
        }
        if self.routes.is_empty() {
            targets.extend(self.receivers.iter().map(|r| direct(r.name.as_str())));
        }
        for route in self
            .routes
            .iter()
            .filter(|route| route.matches(severity, tenant, check))
        {
            let mut names = route.receivers.iter().map(String::as_str);
            if route.fallback {
                let Some(first) = names.next() else { continue };
                if !targets.iter().any(|t| t.receiver == first) {
                    targets.push(DeliveryTarget {
                        receiver: first,
                        fallback: names.collect(),
                        fallback_attempts: route.fallback_attempts,
                        fallback_after: route.fallback_after,
                    });
                }
            } else {
                for name in names {
                    if !targets.iter().any(|t| t.receiver == name) {
                        targets.push(direct(name));
                    }
                }
            }
        }
        targets
    }

    /// How a critical alert of this tenant and check escalates, if a matching route says.
    pub fn escalation_for(&self, tenant: &str, check: CheckKind) -> Option<EscalationRule<'_>> {
        let mut rule: Option<EscalationRule<'_>> = None;
        for route in self
            .routes
            .iter()
            .filter(|route| route.matches("critical", tenant, check))
        {
            let Some(after) = route.escalate_after else {
                continue;
            };
            let rule = rule.get_or_insert(EscalationRule {
                after,
                to: Vec::new(),
            });
            rule.after = rule.after.min(after);
            for name in &route.escalate_to {
                if !rule.to.contains(&name.as_str()) {
                    rule.to.push(name);
                }
            }
        }
        rule
    }

    /// Every receiver that may get an alert of this severity, tenant and check, fallback
    /// receivers included.
    pub fn receivers_for(&self, severity: &str, tenant: &str, check: CheckKind) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        if self.routes.is_empty() {
            names.extend(self.receivers.iter().map(|r| r.name.as_str()));
        }
        for route in self
            .routes
            .iter()
            .filter(|route| route.matches(severity, tenant, check))
        {
            for name in &route.receivers {
                if !names.contains(&name.as_str()) {
                    names.push(name);
                }
            }
        }
        names
    }
}

const KINDS: &str =
    "webhook, ntfy, alertmanager, signal, twilio_sms, http_sms, telegram, matrix, email";
const DEFAULT_FALLBACK_ATTEMPTS: u32 = 3;
const DEFAULT_FALLBACK_AFTER: Duration = Duration::from_secs(5 * 60);
const SEVERITIES: [&str; 3] = ["critical", "warning", "blind"];
const MAX_GROUP_WINDOW: Duration = Duration::from_secs(10 * 60);

impl Validator<'_> {
    pub(super) fn alerting(
        &mut self,
        raw: Option<&RawAlerting>,
        receivers: &[RawReceiver],
        routes: &[RawRoute],
        silences: &[RawSilence],
    ) -> AlertingConfig {
        let small = |v: &mut Validator<'_>,
                     path: &str,
                     value: Option<&Spanned<i64>>,
                     default: u32|
         -> u32 {
            let Some(value) = value else { return default };
            match u32::try_from(*value.get_ref()) {
                Ok(n) if (1..=100).contains(&n) => n,
                _ => {
                    v.error(
                        path,
                        Some(value.span().start),
                        format!(
                            "must be a whole number from 1 to 100, got {}",
                            value.get_ref()
                        ),
                    );
                    default
                }
            }
        };
        let confirm = small(
            self,
            "alerting.confirm",
            raw.and_then(|a| a.confirm.as_ref()),
            2,
        );
        let recover = small(
            self,
            "alerting.recover",
            raw.and_then(|a| a.recover.as_ref()),
            1,
        );
        let repeat_interval = self.duration(
            "alerting.repeat_interval",
            raw.and_then(|a| a.repeat_interval.as_ref()),
            Duration::from_secs(4 * 3_600),
        );
        let blind_after = self.duration(
            "alerting.blind_after",
            raw.and_then(|a| a.blind_after.as_ref()),
            Duration::from_secs(30 * 60),
        );
        let delivery_expiry = self.duration(
            "alerting.delivery_expiry",
            raw.and_then(|a| a.delivery_expiry.as_ref()),
            Duration::from_secs(24 * 3_600),
        );
        let status_page_url = raw
            .and_then(|a| a.status_page_url.as_ref())
            .and_then(|url| self.url("alerting.status_page_url", url));
        let degraded_fraction = match raw.and_then(|a| a.degraded_fraction.as_ref()) {
            None => 0.5,
            Some(value) if (0.05..=1.0).contains(value.get_ref()) => *value.get_ref(),
            Some(value) => {
                self.error(
                    "alerting.degraded_fraction",
                    Some(value.span().start),
                    format!(
                        "must be a share between 0.05 and 1.0, got {}",
                        value.get_ref()
                    ),
                );
                0.5
            }
        };
        let degraded_min_targets = self
            .count(
                "alerting.degraded_min_targets",
                raw.and_then(|a| a.degraded_min_targets.as_ref()),
                10,
            )
            .get();
        let mut control_tenants = Vec::new();
        for (i, value) in raw
            .map(|a| a.control_tenants.as_slice())
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            match TenantName::parse(value.get_ref()) {
                Ok(name) => control_tenants.push(name),
                Err(err) => self.error(
                    format!("alerting.control_tenants[{i}]"),
                    Some(value.span().start),
                    err.to_string(),
                ),
            }
        }
        let group_window_raw = raw.and_then(|a| a.group_window.as_ref());
        let group_window = self.duration(
            "alerting.group_window",
            group_window_raw,
            Duration::from_secs(30),
        );
        // Held messages delay every later message of their receivers too (order per
        // receiver), so the window must stay short.
        if group_window > MAX_GROUP_WINDOW {
            self.error(
                "alerting.group_window",
                group_window_raw.map(|v| v.span().start),
                format!(
                    "{} is too long: a group holds its receivers' later messages back too; at most 10m (0s turns grouping off)",
                    humantime::format_duration(group_window)
                ),
            );
        }

        let mut parsed_receivers: Vec<Receiver> = Vec::new();
        for (idx, raw_receiver) in receivers.iter().enumerate() {
            let base = format!("receivers[{idx}]");
            if parsed_receivers
                .iter()
                .any(|r| &r.name == raw_receiver.name.get_ref())
            {
                self.error(
                    format!("{base}.name"),
                    Some(raw_receiver.name.span().start),
                    format!("duplicate receiver name {:?}", raw_receiver.name.get_ref()),
                );
                continue;
            }
            if let Some(receiver) = self.receiver(&base, raw_receiver) {
                parsed_receivers.push(receiver);
            }
        }

        let mut parsed_routes = Vec::new();
        for (idx, raw_route) in routes.iter().enumerate() {
            let base = format!("routes[{idx}]");
            let mut route = Route {
                receivers: Vec::new(),
                severities: Vec::new(),
                tenants: Vec::new(),
                checks: Vec::new(),
                fallback: false,
                fallback_attempts: DEFAULT_FALLBACK_ATTEMPTS,
                fallback_after: DEFAULT_FALLBACK_AFTER,
                escalate_after: None,
                escalate_to: Vec::new(),
            };
            if raw_route.receivers.is_empty() {
                self.error(
                    format!("{base}.receivers"),
                    None,
                    "a route needs at least one receiver",
                );
            }
            for (i, name) in raw_route.receivers.iter().enumerate() {
                if receivers.iter().any(|r| r.name.get_ref() == name.get_ref()) {
                    route.receivers.push(name.get_ref().clone());
                } else {
                    self.error(
                        format!("{base}.receivers[{i}]"),
                        Some(name.span().start),
                        format!("no receiver named {:?}", name.get_ref()),
                    );
                }
            }
            for (i, severity) in raw_route.severities.iter().enumerate() {
                if SEVERITIES.contains(&severity.get_ref().as_str()) {
                    route.severities.push(severity.get_ref().clone());
                } else {
                    self.error(
                        format!("{base}.severities[{i}]"),
                        Some(severity.span().start),
                        format!(
                            "unknown severity {:?} (known: critical, warning, blind)",
                            severity.get_ref()
                        ),
                    );
                }
            }
            for (i, tenant) in raw_route.tenants.iter().enumerate() {
                match TenantName::parse(tenant.get_ref()) {
                    Ok(name) => route.tenants.push(name),
                    Err(err) => self.error(
                        format!("{base}.tenants[{i}]"),
                        Some(tenant.span().start),
                        err.to_string(),
                    ),
                }
            }
            for (i, check) in raw_route.checks.iter().enumerate() {
                match check.get_ref().parse::<CheckKind>() {
                    Ok(kind) => route.checks.push(kind),
                    Err(err) => self.error(
                        format!("{base}.checks[{i}]"),
                        Some(check.span().start),
                        err.to_string(),
                    ),
                }
            }
            self.fallback(&base, raw_route, &mut route);
            self.escalation(&base, raw_route, receivers, &mut route);
            parsed_routes.push(route);
        }

        // Alertmanager drops an alert whose endsAt passed; tenantwatch sets it 24 h ahead and
        // renews it with every repeat, so repeats must come more often than that.
        let has_alertmanager = parsed_receivers
            .iter()
            .any(|r| matches!(r.kind, ReceiverKind::Alertmanager { .. }));
        if has_alertmanager && repeat_interval >= Duration::from_secs(24 * 3_600) {
            self.error(
                "alerting.repeat_interval",
                raw.and_then(|a| a.repeat_interval.as_ref()).map(|v| v.span().start),
                "must be under 24h with an alertmanager receiver (its alerts would lapse between repeats)",
            );
        }

        let mut parsed_silences = Vec::new();
        for (idx, raw_silence) in silences.iter().enumerate() {
            let base = format!("silences[{idx}]");
            let time =
                |v: &mut Validator<'_>, key: &str, value: &Spanned<String>| -> Option<Timestamp> {
                    match humantime::parse_rfc3339_weak(value.get_ref().trim()) {
                        Ok(at) => at
                            .duration_since(std::time::UNIX_EPOCH)
                            .ok()
                            .and_then(|d| i64::try_from(d.as_millis()).ok())
                            .map(Timestamp),
                        Err(_) => {
                            v.error(
                                format!("{base}.{key}"),
                                Some(value.span().start),
                                format!(
                                    "{:?} is not a UTC time such as \"2026-11-24T22:00:00Z\"",
                                    value.get_ref()
                                ),
                            );
                            None
                        }
                    }
                };
            let start = time(self, "start", &raw_silence.start);
            let end = time(self, "end", &raw_silence.end);
            let tenant = raw_silence.tenant.as_ref().and_then(|value| {
                match TenantName::parse(value.get_ref()) {
                    Ok(name) => Some(name),
                    Err(err) => {
                        self.error(
                            format!("{base}.tenant"),
                            Some(value.span().start),
                            err.to_string(),
                        );
                        None
                    }
                }
            });
            let check = raw_silence.check.as_ref().and_then(|value| {
                match value.get_ref().parse::<CheckKind>() {
                    Ok(kind) => Some(kind),
                    Err(err) => {
                        self.error(
                            format!("{base}.check"),
                            Some(value.span().start),
                            err.to_string(),
                        );
                        None
                    }
                }
            });
            if raw_silence.reason.trim().is_empty() {
                self.error(
                    format!("{base}.reason"),
                    None,
                    "say why (it is logged with every alert it holds back)",
                );
            }
            if let (Some(start), Some(end)) = (start, end) {
                if start >= end {
                    self.error(
                        format!("{base}.end"),
                        Some(raw_silence.end.span().start),
                        "must be after start",
                    );
                }
                parsed_silences.push(Silence {
                    tenant,
                    check,
                    target: raw_silence.target.clone(),
                    start,
                    end,
                    reason: raw_silence.reason.clone(),
                });
            }
        }

        AlertingConfig {
            confirm,
            recover,
            repeat_interval,
            blind_after,
            delivery_expiry,
            status_page_url,
            degraded_fraction,
            degraded_min_targets,
            control_tenants,
            group_window,
            receivers: parsed_receivers,
            routes: parsed_routes,
            silences: parsed_silences,
        }
    }

    /// `fallback`, `fallback_attempts` and `fallback_after` of one route.
    fn fallback(&mut self, base: &str, raw: &RawRoute, route: &mut Route) {
        route.fallback = raw.fallback.as_ref().is_some_and(|f| *f.get_ref());
        if let Some(attempts) = &raw.fallback_attempts {
            match u32::try_from(*attempts.get_ref()) {
                Ok(n) if (1..=100).contains(&n) => route.fallback_attempts = n,
                _ => self.error(
                    format!("{base}.fallback_attempts"),
                    Some(attempts.span().start),
                    format!(
                        "must be a whole number from 1 to 100, got {}",
                        attempts.get_ref()
                    ),
                ),
            }
        }
        if let Some(after) = &raw.fallback_after {
            let parsed = self.duration(
                &format!("{base}.fallback_after"),
                Some(after),
                DEFAULT_FALLBACK_AFTER,
            );
            if parsed.is_zero() {
                self.error(
                    format!("{base}.fallback_after"),
                    Some(after.span().start),
                    "must be longer than 0s (a permanent refusal falls back at once anyway)",
                );
            } else {
                route.fallback_after = parsed;
            }
        }
        if route.fallback {
            if raw.receivers.len() < 2 {
                self.error(
                    format!("{base}.fallback"),
                    raw.fallback.as_ref().map(|f| f.span().start),
                    "a fallback route needs at least two receivers, in order of preference",
                );
            }
        } else if let Some(span) = raw
            .fallback_attempts
            .as_ref()
            .map(|v| v.span().start)
            .or_else(|| raw.fallback_after.as_ref().map(|v| v.span().start))
        {
            let key = if raw.fallback_attempts.is_some() {
                "fallback_attempts"
            } else {
                "fallback_after"
            };
            self.error(
                format!("{base}.{key}"),
                Some(span),
                "only applies with fallback = true",
            );
        }
    }

    /// `escalate_after` and `escalate_to` of one route.
    fn escalation(
        &mut self,
        base: &str,
        raw: &RawRoute,
        receivers: &[RawReceiver],
        route: &mut Route,
    ) {
        for (i, name) in raw.escalate_to.iter().enumerate() {
            if receivers.iter().any(|r| r.name.get_ref() == name.get_ref()) {
                if !route.escalate_to.contains(name.get_ref()) {
                    route.escalate_to.push(name.get_ref().clone());
                }
            } else {
                self.error(
                    format!("{base}.escalate_to[{i}]"),
                    Some(name.span().start),
                    format!("no receiver named {:?}", name.get_ref()),
                );
            }
        }
        match (&raw.escalate_after, raw.escalate_to.is_empty()) {
            (None, true) => {}
            (None, false) => self.error(
                format!("{base}.escalate_after"),
                raw.escalate_to.first().map(|v| v.span().start),
                "escalate_to needs escalate_after (how long an unacknowledged critical alert waits)",
            ),
            (Some(after), true) => self.error(
                format!("{base}.escalate_to"),
                Some(after.span().start),
                "escalate_after needs escalate_to (the receivers to escalate to)",
            ),
            (Some(after), false) => {
                let parsed =
                    self.duration(&format!("{base}.escalate_after"), Some(after), Duration::ZERO);
                if parsed.is_zero() {
                    self.error(
                        format!("{base}.escalate_after"),
                        Some(after.span().start),
                        "must be longer than 0s (route the receivers directly instead)",
                    );
                } else {
                    route.escalate_after = Some(parsed);
                }
                if !route.severities.is_empty() && !route.severities.iter().any(|s| s == "critical")
                {
                    self.error(
                        format!("{base}.escalate_after"),
                        Some(after.span().start),
                        "only critical alerts escalate, and this route's severities leave critical out",
                    );
                }
            }
        }
    }

    pub(super) fn url(&mut self, path: &str, value: &Spanned<String>) -> Option<String> {
        let url = value.get_ref().trim();
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        match rest {
            Some(rest)
                if !rest.is_empty()
                    && !rest.starts_with('/')
                    && !url.contains(char::is_whitespace) =>
            {
                Some(url.trim_end_matches('/').to_owned())
            }
            _ => {
                self.error(
                    path,
                    Some(value.span().start),
                    format!("{:?} is not an http:// or https:// URL", value.get_ref()),
                );
                None
            }
        }
    }

    fn receiver(&mut self, base: &str, raw: &RawReceiver) -> Option<Receiver> {
        let errors_before = self.errors.len();
        let name = raw.name.get_ref().clone();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            self.error(
                format!("{base}.name"),
                Some(raw.name.span().start),
                format!("receiver name {name:?} must be letters, digits, '-', '_' or '.'"),
            );
        }
        let secret = match (&raw.secret_file, &raw.secret_env) {
            (Some(_), Some(_)) => {
                self.error(
                    format!("{base}.secret_env"),
                    None,
                    "give secret_file or secret_env, not both",
                );
                None
            }
            (Some(file), None) => Some(SecretSource::File(PathBuf::from(file))),
            (None, Some(env)) => Some(SecretSource::Env(env.clone())),
            (None, None) => None,
        };
        let kind_name = raw.kind.get_ref().as_str();
        let url =
            |v: &mut Validator<'_>, required: bool, default: Option<&str>| -> Option<String> {
                match (&raw.url, default) {
                    (Some(value), _) => v.url(&format!("{base}.url"), value),
                    (None, Some(default)) => Some(default.to_owned()),
                    (None, None) => {
                        if required {
                            v.error(
                                format!("{base}.url"),
                                None,
                                format!("required for a {kind_name} receiver"),
                            );
                        }
                        None
                    }
                }
            };
        let need = |v: &mut Validator<'_>, key: &str, value: &Option<String>| -> String {
            match value {
                Some(value) if !value.trim().is_empty() => value.clone(),
                _ => {
                    v.error(
                        format!("{base}.{key}"),
                        None,
                        format!("required for a {kind_name} receiver"),
                    );
                    String::new()
                }
            }
        };
        let need_secret = |v: &mut Validator<'_>, what: &str| {
            if secret.is_none() {
                v.error(
                    format!("{base}.secret_file"),
                    None,
                    format!("a {kind_name} receiver needs its {what} in secret_file or secret_env"),
                );
            }
        };
        let plain_list =
            |v: &mut Validator<'_>, key: &str, values: &[Spanned<String>]| -> Vec<String> {
                if values.is_empty() {
                    v.error(
                        format!("{base}.{key}"),
                        None,
                        format!("required for a {kind_name} receiver (at least one)"),
                    );
                }
                values.iter().map(|value| value.get_ref().clone()).collect()
            };
        let kind = match kind_name {
            "webhook" => ReceiverKind::Webhook {
                url: url(self, true, None).unwrap_or_default(),
            },
            "ntfy" => ReceiverKind::Ntfy {
                url: url(self, true, None).unwrap_or_default(),
            },
            "alertmanager" => ReceiverKind::Alertmanager {
                url: url(self, true, None).unwrap_or_default(),
            },
            "signal" => {
                let url = url(self, true, None).unwrap_or_default();
                let number = need(self, "number", &raw.number);
                if raw.recipients.is_empty() {
                    self.error(
                        format!("{base}.recipients"),
                        None,
                        "required for a signal receiver (at least one)",
                    );
                }
                ReceiverKind::Signal {
                    url,
                    number,
                    recipients: raw.recipients.clone(),
                }
            }
            "twilio_sms" => {
                need_secret(self, "auth token");
                let base_url = url(self, false, Some("https://api.twilio.com")).unwrap_or_default();
                let account_sid = need(self, "account_sid", &raw.account_sid);
                let from = need(
                    self,
                    "from",
                    &raw.from.as_ref().map(|f| f.get_ref().clone()),
                );
                ReceiverKind::TwilioSms {
                    base_url,
                    account_sid,
                    from,
                    to: plain_list(self, "to", &raw.to),
                }
            }
            "http_sms" => {
                let url = url(self, true, None).unwrap_or_default();
                let method = raw
                    .method
                    .as_ref()
                    .map(|m| m.get_ref().to_ascii_uppercase())
                    .unwrap_or_else(|| "POST".to_owned());
                if method != "POST" && method != "GET" {
                    self.error(
                        format!("{base}.method"),
                        raw.method.as_ref().map(|m| m.span().start),
                        "must be POST or GET",
                    );
                }
                let content_type = raw
                    .content_type
                    .as_ref()
                    .map(|c| c.get_ref().clone())
                    .unwrap_or_else(|| "form".to_owned());
                if content_type != "form" && content_type != "json" {
                    self.error(
                        format!("{base}.content_type"),
                        raw.content_type.as_ref().map(|c| c.span().start),
                        "must be \"form\" or \"json\"",
                    );
                }
                let body_template = need(self, "body_template", &raw.body_template);
                ReceiverKind::HttpSms {
                    url,
                    method,
                    content_type,
                    body_template,
                    to: plain_list(self, "to", &raw.to),
                }
            }
            "telegram" => {
                need_secret(self, "bot token");
                let base_url =
                    url(self, false, Some("https://api.telegram.org")).unwrap_or_default();
                ReceiverKind::Telegram {
                    base_url,
                    chat_id: need(self, "chat_id", &raw.chat_id),
                }
            }
            "matrix" => {
                need_secret(self, "access token");
                let homeserver = url(self, true, None).unwrap_or_default();
                ReceiverKind::Matrix {
                    homeserver,
                    room_id: need(self, "room_id", &raw.room_id),
                }
            }
            "email" => {
                let relay_host = need(self, "relay_host", &raw.relay_host);
                let tls = match raw.tls.as_ref().map(|t| t.get_ref().as_str()) {
                    None | Some("starttls") => EmailTls::StartTls,
                    Some("implicit") => EmailTls::Implicit,
                    Some(other) => {
                        self.error(format!("{base}.tls"), raw.tls.as_ref().map(|t| t.span().start), format!("{other:?} is not \"starttls\" or \"implicit\" (plaintext relays are not supported)"));
                        EmailTls::StartTls
                    }
                };
                let default_port = if tls == EmailTls::Implicit { 465 } else { 587 };
                let relay_port = match &raw.relay_port {
                    None => default_port,
                    Some(value) => match u16::try_from(*value.get_ref()) {
                        Ok(port) if port > 0 => port,
                        _ => {
                            self.error(
                                format!("{base}.relay_port"),
                                Some(value.span().start),
                                format!("must be a TCP port 1-65535, got {}", value.get_ref()),
                            );
                            default_port
                        }
                    },
                };
                let from = match &raw.from {
                    Some(value) => self.address(&format!("{base}.from"), value),
                    None => {
                        self.error(
                            format!("{base}.from"),
                            None,
                            "required for an email receiver",
                        );
                        None
                    }
                };
                if raw.to.is_empty() {
                    self.error(
                        format!("{base}.to"),
                        None,
                        "required for an email receiver (at least one)",
                    );
                }
                let to: Vec<EmailAddress> = raw
                    .to
                    .iter()
                    .enumerate()
                    .filter_map(|(i, value)| self.address(&format!("{base}.to[{i}]"), value))
                    .collect();
                ReceiverKind::Email {
                    relay_host,
                    relay_port,
                    tls,
                    username: raw.username.clone(),
                    from: from?,
                    to,
                }
            }
            other => {
                self.error(
                    format!("{base}.kind"),
                    Some(raw.kind.span().start),
                    format!("unknown receiver kind {other:?} (known: {KINDS})"),
                );
                return None;
            }
        };
        (self.errors.len() == errors_before).then_some(Receiver { name, kind, secret })
    }
}
