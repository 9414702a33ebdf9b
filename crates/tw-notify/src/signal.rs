//! Signal through signal-cli-rest-api: `POST <base>/v2/send` with the short text.
//!
//! signal-cli-rest-api has no idempotency key, so a retry after a lost answer can repeat the
//! message. Signal's rate limit and captcha challenge come back as 429 from recent versions
//! but as 400 "Failed to send message due to rate limiting" from older ones; both are
//! transient, so the dispatcher retries and then falls back to the next receiver instead of
//! declaring the channel broken.

use serde::Serialize;

use crate::error::DeliveryError;
use crate::http::{self, describe};
use crate::text::trim_base;
use crate::Message;

#[derive(Serialize)]
struct SendRequest<'a> {
    message: &'a str,
    number: &'a str,
    recipients: &'a [String],
}

pub(crate) async fn send(
    http: &reqwest::Client,
    base: &str,
    number: &str,
    recipients: &[String],
    message: &Message,
) -> Result<(), DeliveryError> {
    let what = describe("signal", base);
    if recipients.is_empty() {
        return Err(DeliveryError::Permanent(format!(
            "{what}: no recipients configured"
        )));
    }
    let body = SendRequest {
        message: &message.short,
        number,
        recipients,
    };
    let request = http
        .post(format!("{}/v2/send", trim_base(base)))
        .json(&body);
    http::send_classified(request, &what, is_rate_limit).await
}

/// A 400 whose text names Signal's rate limit or its captcha challenge.
fn is_rate_limit(status: u16, body: &str) -> bool {
    let body = body.to_ascii_lowercase();
    status == 400 && (body.contains("rate limit") || body.contains("captcha"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_are_recognised() {
        assert!(is_rate_limit(
            400,
            r#"{"error":"Failed to send message due to rate limiting"}"#
        ));
        assert!(is_rate_limit(
            400,
            "CAPTCHA proof required for sending to +49…"
        ));
        assert!(!is_rate_limit(400, r#"{"error":"Invalid account"}"#));
        assert!(!is_rate_limit(401, "rate limit"));
    }
}
