//! Receivers from config to channels: resolving each credential reference (file or
//! environment) into a `Secret`, once, before anything starts.
//!
//! A missing or empty credential stops the start with an error naming the receiver and where
//! the secret was expected, never its value.

use std::collections::HashMap;

use anyhow::{bail, Context};
use tw_core::config::{self, AlertingConfig, ReceiverKind, SecretSource};
use tw_core::Secret;
use tw_notify::Channel;

/// Every configured receiver's channel, by name.
pub(crate) fn channels(alerting: &AlertingConfig) -> anyhow::Result<HashMap<String, Channel>> {
    let mut channels = HashMap::new();
    for receiver in &alerting.receivers {
        let secret = match &receiver.secret {
            Some(source) => {
                Some(read_secret(source).with_context(|| format!("receiver {:?}", receiver.name))?)
            }
            None => None,
        };
        channels.insert(receiver.name.clone(), channel(&receiver.kind, secret));
    }
    Ok(channels)
}

fn read_secret(source: &SecretSource) -> anyhow::Result<Secret> {
    let value = match source {
        SecretSource::File(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading its secret_file {}", path.display()))?,
        SecretSource::Env(name) => {
            std::env::var(name).with_context(|| format!("reading its secret_env {name}"))?
        }
    };
    // Files written by editors and `systemd-creds` often end in a newline that is no part of
    // the secret.
    let value = value.trim_end_matches(['\r', '\n']);
    if value.is_empty() {
        bail!("its secret is empty");
    }
    Ok(Secret::new(value))
}

fn channel(kind: &ReceiverKind, secret: Option<Secret>) -> Channel {
    // `need` is only reached for kinds whose config validation already required a secret.
    let need = |secret: Option<Secret>| secret.unwrap_or_else(|| Secret::new(""));
    match kind {
        ReceiverKind::Webhook { url } => Channel::Webhook {
            url: url.clone(),
            secret,
        },
        ReceiverKind::Ntfy { url } => Channel::Ntfy {
            url: url.clone(),
            token: secret,
        },
        ReceiverKind::Alertmanager { url } => Channel::Alertmanager { url: url.clone() },
        ReceiverKind::Signal {
            url,
            number,
            recipients,
        } => Channel::Signal {
            url: url.clone(),
            number: number.clone(),
            recipients: recipients.clone(),
        },
        ReceiverKind::TwilioSms {
            base_url,
            account_sid,
            from,
            to,
        } => Channel::TwilioSms {
            base_url: base_url.clone(),
            account_sid: account_sid.clone(),
            auth_token: need(secret),
            from: from.clone(),
            to: to.clone(),
        },
        ReceiverKind::HttpSms {
            url,
            method,
            content_type,
            body_template,
            to,
        } => Channel::HttpSms {
            url: url.clone(),
            method: method.clone(),
            content_type: content_type.clone(),
            body_template: body_template.clone(),
            to: to.clone(),
            token: secret,
        },
        ReceiverKind::Telegram { base_url, chat_id } => Channel::Telegram {
            base_url: base_url.clone(),
            bot_token: need(secret),
            chat_id: chat_id.clone(),
        },
        ReceiverKind::Matrix {
            homeserver,
            room_id,
        } => Channel::Matrix {
            homeserver: homeserver.clone(),
            access_token: need(secret),
            room_id: room_id.clone(),
        },
        ReceiverKind::Email {
            relay_host,
            relay_port,
            tls,
            username,
            from,
            to,
        } => Channel::Email {
            relay_host: relay_host.clone(),
            relay_port: *relay_port,
            tls: match tls {
                config::EmailTls::StartTls => tw_notify::EmailTls::StartTls,
                config::EmailTls::Implicit => tw_notify::EmailTls::Implicit,
            },
            username: username.clone(),
            password: secret,
            from: from.to_string(),
            to: to.iter().map(ToString::to_string).collect(),
            extra_ca_pem: None,
        },
    }
}
