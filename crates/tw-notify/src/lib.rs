//! Notification channels: one rendered alert [`Message`], delivered to one [`Channel`].
//!
//! This crate knows how each receiver wants its request shaped (a signed webhook, ntfy,
//! Alertmanager, Signal through signal-cli-rest-api, Twilio or any HTTP SMS gateway,
//! Telegram, Matrix, e-mail through an SMTP relay) and how to read its answer: a
//! [`DeliveryError::Transient`] is worth retrying, a [`DeliveryError::Permanent`] is not.
//! Retrying, ordering and expiry belong to the outbox dispatcher; [`deliver`] makes exactly
//! one attempt, so a retry is always a fresh, complete request carrying the same
//! idempotency key ([`Message::id`]).
//!
//! Every credential is a [`tw_core::Secret`], and every error passes through one redaction
//! step before it leaves [`deliver`], because error text ends up in logs and in the
//! deliveries table.

mod alertmanager;
mod channel;
mod dispatcher;
mod email;
mod error;
mod group;
mod http;
mod matrix;
mod ntfy;
mod redact;
mod signal;
mod sms;
mod telegram;
mod text;
mod webhook;

use std::time::Duration;

pub use alertmanager::ALERTMANAGER_VALIDITY;
pub use channel::{Channel, EmailTls};
pub use dispatcher::{DispatchStats, Dispatcher};
pub use email::SMTP_TIMEOUT;
pub use error::{ClientBuildError, DeliveryError};
pub use group::group_message;
pub use http::http_client;

/// One alert event, rendered once by the evaluator and delivered unchanged to every receiver.
///
/// Text channels without a title field (Telegram, Matrix) show `title`, a blank line, then
/// `body`, unless `body` already opens with the title (as tw-alert renders it); ntfy shows
/// `body` without that opening title under its own title. `link` is appended where the
/// channel has no field of its own for it, unless `body` already contains it.
///
/// It is also the outbox's stored form (JSON), so fields are only ever added, with defaults.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    /// Idempotency key, stable across retries of the same (event, receiver) delivery.
    pub id: String,
    /// `firing`, `repeat`, `resolved`, `blind` or `blind_resolved`.
    pub kind: String,
    /// `critical`, `warning` or `blind`. A resolved message carries the severity of the alert
    /// it resolves (Alertmanager matches the two by their labels).
    pub severity: String,
    pub tenant: String,
    pub check: String,
    pub target: String,
    pub status: String,
    pub reason: String,
    /// One line.
    pub title: String,
    /// Under 160 characters, for SMS and Signal.
    pub short: String,
    /// Rich text, several lines.
    pub body: String,
    /// When the condition began.
    pub since: tw_core::Timestamp,
    /// When this event happened (for a resolved message: when it resolved).
    pub at: tw_core::Timestamp,
    /// The status page, if one is configured.
    pub link: Option<String>,
}

impl Message {
    /// Whether this message ends an alert rather than raising or repeating one.
    pub fn is_resolved(&self) -> bool {
        matches!(self.kind.as_str(), "resolved" | "blind_resolved")
    }
}

/// Makes one delivery attempt of `message` to `channel`.
///
/// HTTP channels use `http` (and so its timeout); e-mail runs under [`SMTP_TIMEOUT`]. The
/// error never contains a secret of `channel` nor a URL beyond its scheme, host and port.
pub async fn deliver(
    channel: &Channel,
    message: &Message,
    http: &reqwest::Client,
) -> Result<(), DeliveryError> {
    deliver_with_smtp_timeout(channel, message, http, SMTP_TIMEOUT).await
}

/// [`deliver`], with the deadline for a whole SMTP session given explicitly.
pub async fn deliver_with_smtp_timeout(
    channel: &Channel,
    message: &Message,
    http: &reqwest::Client,
    smtp_timeout: Duration,
) -> Result<(), DeliveryError> {
    deliver_inner(channel, message, &[], http, smtp_timeout).await
}

/// Makes one delivery attempt of a group: `summary` (from [`group_message`]) standing for
/// `members`. Text channels send the summary; the webhook adds the members as `alerts`, and
/// Alertmanager receives the members themselves (it groups on its own). With no members this
/// is [`deliver`].
pub async fn deliver_group(
    channel: &Channel,
    summary: &Message,
    members: &[Message],
    http: &reqwest::Client,
) -> Result<(), DeliveryError> {
    deliver_inner(channel, summary, members, http, SMTP_TIMEOUT).await
}

async fn deliver_inner(
    channel: &Channel,
    message: &Message,
    members: &[Message],
    http: &reqwest::Client,
    smtp_timeout: Duration,
) -> Result<(), DeliveryError> {
    let result = match channel {
        Channel::Webhook { url, secret } => {
            webhook::send(http, url, secret.as_ref(), message, members).await
        }
        Channel::Ntfy { url, token } => ntfy::send(http, url, token.as_ref(), message).await,
        Channel::Alertmanager { url } => alertmanager::send(http, url, message, members).await,
        Channel::Signal {
            url,
            number,
            recipients,
        } => signal::send(http, url, number, recipients, message).await,
        Channel::TwilioSms {
            base_url,
            account_sid,
            auth_token,
            from,
            to,
        } => {
            let twilio = sms::Twilio {
                base_url,
                account_sid,
                auth_token,
                from,
                to,
            };
            twilio.send(http, message).await
        }
        Channel::HttpSms {
            url,
            method,
            content_type,
            body_template,
            to,
            token,
        } => {
            let gateway = sms::HttpSms {
                url,
                method,
                content_type,
                body_template,
                to,
                token: token.as_ref(),
            };
            gateway.send(http, message).await
        }
        Channel::Telegram {
            base_url,
            bot_token,
            chat_id,
        } => telegram::send(http, base_url, bot_token, chat_id, message).await,
        Channel::Matrix {
            homeserver,
            access_token,
            room_id,
        } => matrix::send(http, homeserver, access_token, room_id, message).await,
        Channel::Email {
            relay_host,
            relay_port,
            tls,
            username,
            password,
            from,
            to,
            extra_ca_pem,
        } => {
            let relay = email::Relay {
                host: relay_host,
                port: *relay_port,
                tls: *tls,
                username: username.as_deref(),
                password: password.as_ref(),
                from,
                to,
                extra_ca_pem: extra_ca_pem.as_deref(),
            };
            relay.send(message, smtp_timeout).await
        }
    };
    match result {
        Ok(()) => {
            tracing::debug!(
                channel = channel.kind(),
                id = %message.id,
                kind = %message.kind,
                "Notification delivered"
            );
            Ok(())
        }
        Err(error) => {
            let error = redact::scrub(error, channel);
            tracing::debug!(channel = channel.kind(), id = %message.id, %error, "Notification failed");
            Err(error)
        }
    }
}
