//! Alertmanager: `POST <base>/api/v2/alerts`, so an existing Alertmanager can route, group,
//! silence and deduplicate alerts from several tenantwatch instances.
//!
//! Alertmanager identifies an alert by its label set, and that is its idempotency: the same
//! labels sent twice are one alert. So the labels hold only what names the alert —
//! `alertname`, `tenant`, `check`, `target`, `severity` — and everything that changes over
//! its life (reason, status, texts, the message id) goes into annotations; a `reason` label
//! would make the resolved message a different alert from the firing one, and the firing one
//! would never end.
//!
//! A firing alert is sent with `endsAt` = its event time + [`ALERTMANAGER_VALIDITY`]:
//! Alertmanager resolves an alert whose `endsAt` has passed, and tenantwatch re-sends only
//! every `repeat_interval`, so the validity must outlast it. A resolved alert is sent with
//! `endsAt` = the time it resolved.
//!
//! A group (several alerts of one tenant sent together) is posted as the array of its
//! alerts, one element each: Alertmanager does its own grouping.

use std::time::Duration;

use serde::Serialize;

use crate::error::DeliveryError;
use crate::http::{self, describe};
use crate::text::trim_base;
use crate::Message;

/// How long Alertmanager keeps a firing alert active without hearing from tenantwatch again.
/// `repeat_interval` must stay below it (the default 4 h does).
pub const ALERTMANAGER_VALIDITY: Duration = Duration::from_secs(24 * 3600);

const ALERTNAME: &str = "TenantwatchCheck";

/// One element of the `postableAlerts` array (Alertmanager OpenAPI v2).
#[derive(Serialize)]
struct PostableAlert<'a> {
    labels: Labels<'a>,
    annotations: Annotations<'a>,
    #[serde(rename = "startsAt")]
    starts_at: String,
    #[serde(rename = "endsAt")]
    ends_at: String,
    #[serde(rename = "generatorURL", skip_serializing_if = "Option::is_none")]
    generator_url: Option<&'a str>,
}

#[derive(Serialize)]
struct Labels<'a> {
    alertname: &'a str,
    tenant: &'a str,
    check: &'a str,
    target: &'a str,
    severity: &'a str,
}

#[derive(Serialize)]
struct Annotations<'a> {
    summary: &'a str,
    description: &'a str,
    reason: &'a str,
    status: &'a str,
    kind: &'a str,
    tenantwatch_id: &'a str,
}

pub(crate) async fn send(
    http: &reqwest::Client,
    base: &str,
    message: &Message,
    members: &[Message],
) -> Result<(), DeliveryError> {
    let what = describe("alertmanager", base);
    let alerts: Vec<PostableAlert<'_>> = if members.is_empty() {
        vec![postable(message)]
    } else {
        members.iter().map(postable).collect()
    };
    let request = http
        .post(format!("{}/api/v2/alerts", trim_base(base)))
        .json(&alerts);
    http::send(request, &what).await
}

fn postable(message: &Message) -> PostableAlert<'_> {
    let ends_at = if message.is_resolved() {
        message.at
    } else {
        message.at.plus(ALERTMANAGER_VALIDITY)
    };
    PostableAlert {
        labels: Labels {
            alertname: ALERTNAME,
            tenant: &message.tenant,
            check: &message.check,
            target: &message.target,
            severity: &message.severity,
        },
        annotations: Annotations {
            summary: &message.title,
            description: &message.body,
            reason: &message.reason,
            status: &message.status,
            kind: &message.kind,
            tenantwatch_id: &message.id,
        },
        starts_at: message.since.to_string(),
        ends_at: ends_at.to_string(),
        generator_url: message.link.as_deref(),
    }
}
