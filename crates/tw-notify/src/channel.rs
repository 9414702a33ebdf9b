//! `Channel`: the closed set of receivers tenantwatch can deliver to, and how each is shown.
//!
//! The enum is closed on purpose (style 2.1): adding a channel means adding a module, a test
//! against a local fake of its real service, and a config key, together.
//!
//! `Debug` is written by hand because URLs are credentials too: webhook, ntfy and SMS gateway
//! URLs often carry a token in their path or query, so only scheme, host and port are shown.

use std::fmt;

use tw_core::Secret;

use crate::text::url_origin;

/// How the e-mail channel protects its session with the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailTls {
    /// Plain connection upgraded with STARTTLS (port 587); a relay that does not offer
    /// STARTTLS is refused.
    StartTls,
    /// TLS from the first byte (port 465).
    Implicit,
    /// No TLS at all; accepted only for a relay on a loopback address.
    None,
}

/// One configured receiver.
#[derive(Clone)]
pub enum Channel {
    /// POST of the JSON document described in the `webhook` module, signed when a secret is
    /// set.
    Webhook { url: String, secret: Option<Secret> },
    /// ntfy publish; `url` is the server followed by `/` and the topic.
    Ntfy { url: String, token: Option<Secret> },
    /// Alertmanager API v2; `url` is the base, e.g. `http://127.0.0.1:9093`.
    Alertmanager { url: String },
    /// signal-cli-rest-api; `url` is its base, `number` the registered sender.
    Signal {
        url: String,
        number: String,
        recipients: Vec<String>,
    },
    /// Twilio's Messages API or anything speaking it; `base_url` is normally
    /// `https://api.twilio.com`.
    TwilioSms {
        base_url: String,
        account_sid: String,
        auth_token: Secret,
        from: String,
        to: Vec<String>,
    },
    /// Any HTTP SMS gateway: `method` is `POST` or `GET`, `content_type` is `form` or `json`,
    /// and `body_template` holds the placeholders `{message}`, `{tenant}`, `{target}`,
    /// `{severity}` and `{to}`.
    HttpSms {
        url: String,
        method: String,
        content_type: String,
        body_template: String,
        to: Vec<String>,
        token: Option<Secret>,
    },
    /// Telegram Bot API; `base_url` is normally `https://api.telegram.org`.
    Telegram {
        base_url: String,
        bot_token: Secret,
        chat_id: String,
    },
    /// Matrix client-server API: one `m.room.message` event per message.
    Matrix {
        homeserver: String,
        access_token: Secret,
        room_id: String,
    },
    /// E-mail through an SMTP relay that is not Microsoft's.
    Email {
        relay_host: String,
        relay_port: u16,
        tls: EmailTls,
        username: Option<String>,
        password: Option<Secret>,
        from: String,
        to: Vec<String>,
        /// PEM text of extra CA certificates trusted for the relay (a private CA).
        extra_ca_pem: Option<String>,
    },
}

impl Channel {
    /// The channel's name as used in config, metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Channel::Webhook { .. } => "webhook",
            Channel::Ntfy { .. } => "ntfy",
            Channel::Alertmanager { .. } => "alertmanager",
            Channel::Signal { .. } => "signal",
            Channel::TwilioSms { .. } => "twilio_sms",
            Channel::HttpSms { .. } => "http_sms",
            Channel::Telegram { .. } => "telegram",
            Channel::Matrix { .. } => "matrix",
            Channel::Email { .. } => "email",
        }
    }

    /// Every value of this channel that must not appear in error text: its credentials, and
    /// its URLs, which may embed one beyond their origin.
    pub(crate) fn sensitive_values(&self) -> Vec<Sensitive<'_>> {
        use Sensitive::{Template, Url, Value};
        let mut values = Vec::new();
        match self {
            Channel::Webhook { url, secret } => {
                values.push(Url(url));
                values.extend(secret.as_ref().map(|s| Value(s.expose())));
            }
            Channel::Ntfy { url, token } => {
                values.push(Url(url));
                values.extend(token.as_ref().map(|s| Value(s.expose())));
            }
            Channel::Alertmanager { url } => values.push(Url(url)),
            Channel::Signal { url, .. } => values.push(Url(url)),
            Channel::TwilioSms {
                base_url,
                auth_token,
                ..
            } => {
                values.push(Url(base_url));
                values.push(Value(auth_token.expose()));
            }
            Channel::HttpSms {
                url,
                body_template,
                token,
                ..
            } => {
                values.push(Url(url));
                values.push(Template(body_template));
                values.extend(token.as_ref().map(|s| Value(s.expose())));
            }
            Channel::Telegram {
                base_url,
                bot_token,
                ..
            } => {
                values.push(Url(base_url));
                values.push(Value(bot_token.expose()));
            }
            Channel::Matrix {
                homeserver,
                access_token,
                ..
            } => {
                values.push(Url(homeserver));
                values.push(Value(access_token.expose()));
            }
            Channel::Email { password, .. } => {
                values.extend(password.as_ref().map(|s| Value(s.expose())));
            }
        }
        values
    }
}

/// A value the redaction step removes from error text.
pub(crate) enum Sensitive<'a> {
    /// A URL: everything after its origin is cut.
    Url(&'a str),
    /// A credential: cut wherever it appears.
    Value(&'a str),
    /// An SMS body template, which may hold a gateway's API key among its literal text: each
    /// longer literal part is cut wherever it appears (the rendered whole never recurs).
    Template(&'a str),
}

/// A URL shown as its origin followed by `/…` when something was cut.
struct Shown<'a>(&'a str);

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin = url_origin(self.0);
        if origin.len() < self.0.trim_end_matches('/').len() {
            write!(f, "\"{origin}/…\"")
        } else {
            write!(f, "\"{origin}\"")
        }
    }
}

/// A template shown only by its size: an SMS gateway's API key often sits inside it.
struct TemplateSize<'a>(&'a str);

impl fmt::Debug for TemplateSize<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[template, {} bytes]", self.0.len())
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Channel::Webhook { url, secret } => f
                .debug_struct("Webhook")
                .field("url", &Shown(url))
                .field("secret", secret)
                .finish(),
            Channel::Ntfy { url, token } => f
                .debug_struct("Ntfy")
                .field("url", &Shown(url))
                .field("token", token)
                .finish(),
            Channel::Alertmanager { url } => f
                .debug_struct("Alertmanager")
                .field("url", &Shown(url))
                .finish(),
            Channel::Signal {
                url,
                number,
                recipients,
            } => f
                .debug_struct("Signal")
                .field("url", &Shown(url))
                .field("number", number)
                .field("recipients", recipients)
                .finish(),
            Channel::TwilioSms {
                base_url,
                account_sid,
                auth_token,
                from,
                to,
            } => f
                .debug_struct("TwilioSms")
                .field("base_url", &Shown(base_url))
                .field("account_sid", account_sid)
                .field("auth_token", auth_token)
                .field("from", from)
                .field("to", to)
                .finish(),
            Channel::HttpSms {
                url,
                method,
                content_type,
                body_template,
                to,
                token,
            } => f
                .debug_struct("HttpSms")
                .field("url", &Shown(url))
                .field("method", method)
                .field("content_type", content_type)
                .field("body_template", &TemplateSize(body_template))
                .field("to", to)
                .field("token", token)
                .finish(),
            Channel::Telegram {
                base_url,
                bot_token,
                chat_id,
            } => f
                .debug_struct("Telegram")
                .field("base_url", &Shown(base_url))
                .field("bot_token", bot_token)
                .field("chat_id", chat_id)
                .finish(),
            Channel::Matrix {
                homeserver,
                access_token,
                room_id,
            } => f
                .debug_struct("Matrix")
                .field("homeserver", &Shown(homeserver))
                .field("access_token", access_token)
                .field("room_id", room_id)
                .finish(),
            Channel::Email {
                relay_host,
                relay_port,
                tls,
                username,
                password,
                from,
                to,
                extra_ca_pem,
            } => f
                .debug_struct("Email")
                .field("relay_host", relay_host)
                .field("relay_port", relay_port)
                .field("tls", tls)
                .field("username", username)
                .field("password", password)
                .field("from", from)
                .field("to", to)
                .field("extra_ca_pem", &extra_ca_pem.as_ref().map(|pem| pem.len()))
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_secret_and_no_url_path() {
        let channels = [
            Channel::Webhook {
                url: "https://hooks.example.com/services/T0/B0/canary-path".into(),
                secret: Some(Secret::new("canary-secret")),
            },
            Channel::HttpSms {
                url: "https://sms.example.com/send?apikey=canary-key".into(),
                method: "GET".into(),
                content_type: "form".into(),
                body_template: "key=canary-key&to={to}".into(),
                to: vec![],
                token: None,
            },
            Channel::Telegram {
                base_url: "https://api.telegram.org".into(),
                bot_token: Secret::new("123:canary-token"),
                chat_id: "42".into(),
            },
        ];
        for channel in &channels {
            let shown = format!("{channel:?}");
            assert!(!shown.contains("canary"), "{shown}");
        }
        assert_eq!(
            format!("{:?}", channels[0]),
            "Webhook { url: \"https://hooks.example.com/…\", secret: Some(Secret([redacted])) }"
        );
    }
}
