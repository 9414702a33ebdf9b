//! The last step every error takes before it leaves `deliver`: remove anything secret.
//!
//! The channel modules already build their error text from safe parts (origins, status
//! codes), but some of that text is the receiver's own answer, and a receiver may echo what
//! it was sent (a bad-path page quoting `/bot<token>/sendMessage`, a gateway quoting the
//! `Authorization` header). So every secret value of the channel, and every URL that could
//! embed one, is cut out here as well — the model is vector's `sanitized_headers()`.

use crate::channel::{Channel, Sensitive};
use crate::error::DeliveryError;
use crate::sms::template_literals;
use crate::text::{encode_form_value, encode_path_segment, url_origin};

const REDACTED: &str = "[redacted]";
/// Shorter literal template parts (`&to=`, `","`) are syntax, not keys; cutting them would
/// only garble the receiver's explanation.
const MIN_TEMPLATE_LITERAL: usize = 6;

/// `error` with every sensitive value of `channel` replaced by `[redacted]`.
pub(crate) fn scrub(error: DeliveryError, channel: &Channel) -> DeliveryError {
    let mut needles: Vec<(String, String)> = Vec::new();
    for value in channel.sensitive_values() {
        match value {
            Sensitive::Url(url) => {
                // A URL is sensitive only beyond its origin: the origin is what errors show.
                if let Some(rest) = path_and_query(url) {
                    needles.push((rest.to_owned(), format!("/{REDACTED}")));
                    needles.push((url.to_owned(), format!("{}/{REDACTED}", url_origin(url))));
                }
            }
            Sensitive::Template(template) => {
                for literal in template_literals(template) {
                    if literal.len() >= MIN_TEMPLATE_LITERAL {
                        needles.push((literal.to_owned(), REDACTED.to_owned()));
                    }
                }
            }
            Sensitive::Value("") => {}
            Sensitive::Value(value) => {
                needles.push((encode_path_segment(value), REDACTED.to_owned()));
                needles.push((encode_form_value(value), REDACTED.to_owned()));
                needles.push((value.to_owned(), REDACTED.to_owned()));
            }
        }
    }
    // Longest first, so a URL is cut whole before the token inside it is.
    needles.sort_by_key(|(needle, _)| std::cmp::Reverse(needle.len()));
    error.map_detail(|mut detail| {
        for (needle, replacement) in &needles {
            if !needle.is_empty() && detail.contains(needle.as_str()) {
                detail = detail.replace(needle.as_str(), replacement);
            }
        }
        detail
    })
}

/// The part of a URL after its origin, when there is more than a bare `/`.
fn path_and_query(url: &str) -> Option<&str> {
    let after_scheme = url.split_once("://")?.1;
    let start = after_scheme.find(['/', '?'])?;
    let rest = after_scheme.get(start..)?;
    (rest.len() > 1).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tw_core::Secret;

    fn scrubbed(detail: &str, channel: &Channel) -> String {
        scrub(DeliveryError::Permanent(detail.to_owned()), channel)
            .detail()
            .to_owned()
    }

    #[test]
    fn removes_tokens_urls_and_their_encodings() {
        let telegram = Channel::Telegram {
            base_url: "https://api.telegram.org".into(),
            bot_token: Secret::new("123:canary"),
            chat_id: "1".into(),
        };
        assert_eq!(
            scrubbed("no route /bot123:canary/sendMessage", &telegram),
            "no route /bot[redacted]/sendMessage"
        );
        assert_eq!(
            scrubbed("no route /bot123%3Acanary/sendMessage", &telegram),
            "no route /bot[redacted]/sendMessage"
        );

        let webhook = Channel::Webhook {
            url: "https://hooks.example.com/services/canary".into(),
            secret: None,
        };
        assert_eq!(
            scrubbed(
                "posting to https://hooks.example.com/services/canary failed",
                &webhook
            ),
            "posting to https://hooks.example.com/[redacted] failed"
        );
        assert_eq!(
            scrubbed("404 for /services/canary", &webhook),
            "404 for /[redacted]"
        );
    }

    #[test]
    fn removes_keys_written_into_an_sms_template() {
        let sms = Channel::HttpSms {
            url: "https://sms.example.com/send".into(),
            method: "POST".into(),
            content_type: "json".into(),
            body_template: r#"{"apikey":"canary-key","to":"{to}","text":"{message}"}"#.into(),
            to: vec![],
            token: None,
        };
        let echoed = r#"400 bad request {"apikey":"canary-key","to":"+1555","text":"hi"}"#;
        let got = scrubbed(echoed, &sms);
        assert!(!got.contains("canary"), "{got}");
    }

    #[test]
    fn keeps_the_classification() {
        let channel = Channel::Alertmanager {
            url: "http://127.0.0.1:9093".into(),
        };
        let error = scrub(DeliveryError::Transient("x".into()), &channel);
        assert!(error.is_transient());
    }
}
