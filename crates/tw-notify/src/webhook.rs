//! Generic webhook: a signed JSON POST that any receiver can verify and deduplicate.
//!
//! # Request
//!
//! `POST <url>` with these headers:
//!
//! | Header | Value |
//! | --- | --- |
//! | `Content-Type` | `application/json` |
//! | `Idempotency-Key` | the message `id`; the same on every retry of one delivery |
//! | `X-Tenantwatch-Timestamp` | when this attempt was sent, in Unix seconds |
//! | `X-Tenantwatch-Signature` | `sha256=` + lower-case hex of HMAC-SHA256(secret, timestamp + `.` + raw body); only when a secret is configured |
//!
//! The body is one JSON object, schema version 1:
//!
//! | Field | Type | Meaning |
//! | --- | --- | --- |
//! | `version` | integer | Schema version, `1`. Fields are only ever added within a version. |
//! | `id` | string | Idempotency key (equals the `Idempotency-Key` header). |
//! | `kind` | string | `firing`, `repeat`, `resolved`, `blind` or `blind_resolved`. |
//! | `severity` | string | `critical`, `warning` or `blind`. |
//! | `tenant` | string | Tenant name from the config. |
//! | `check` | string | Check kind, e.g. `smtp_rcpt`, `dns`. |
//! | `target` | string | What was checked, e.g. an address or a domain. |
//! | `status` | string | Verdict: `ok`, `warning`, `critical` or `unknown`. |
//! | `reason` | string | Machine-readable reason, e.g. `recipient_rejected`. |
//! | `title` | string | One line. |
//! | `short` | string | Under 160 characters (what SMS and Signal get). |
//! | `body` | string | Rich multi-line text. |
//! | `since` | string | RFC 3339 UTC time the condition began. |
//! | `at` | string | RFC 3339 UTC time of this event (for `resolved`: when it resolved). |
//! | `link` | string or null | Status page URL, when configured. |
//! | `alerts` | array | Only when `kind` is `group`: one object per alert of the group, each with the fields above except `version` and `alerts`. |
//!
//! A group (several alerts of one tenant within the group window) has `kind` `group`,
//! `check` `group`, the worst `severity` and `status` of its alerts, and its own `id`, which
//! is the same on every retry of the same alerts.
//!
//! # Verifying
//!
//! Read the raw body before parsing it. Recompute the HMAC over the timestamp header, a `.`,
//! and the raw body with the shared secret; compare it in constant time with the signature
//! header; reject the request when the timestamp is more than 5 minutes from your clock (a
//! captured request cannot be replayed later); and drop a second request with an `id` you
//! have already processed (tenantwatch delivers at least once).
//!
//! Any 2xx answer counts as delivered. 408, 425, 429 and 5xx are retried with backoff; any
//! other status stops retries for that delivery. Redirects are not followed.

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use tw_core::{Secret, Timestamp};

use crate::error::DeliveryError;
use crate::http::{self, describe};
use crate::text::hex;
use crate::Message;

/// The version written into every payload.
const SCHEMA_VERSION: u32 = 1;

/// The webhook body. A wire format (style 2.1): fields are added, never renamed or removed,
/// within one `version`.
#[derive(Serialize)]
struct Payload<'a> {
    version: u32,
    id: &'a str,
    kind: &'a str,
    severity: &'a str,
    tenant: &'a str,
    check: &'a str,
    target: &'a str,
    status: &'a str,
    reason: &'a str,
    title: &'a str,
    short: &'a str,
    body: &'a str,
    since: String,
    at: String,
    link: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    alerts: Vec<Member<'a>>,
}

/// One alert of a group: the fields of [`Payload`] but `version` and `alerts`.
#[derive(Serialize)]
struct Member<'a> {
    id: &'a str,
    kind: &'a str,
    severity: &'a str,
    tenant: &'a str,
    check: &'a str,
    target: &'a str,
    status: &'a str,
    reason: &'a str,
    title: &'a str,
    short: &'a str,
    body: &'a str,
    since: String,
    at: String,
    link: Option<&'a str>,
}

impl<'a> Member<'a> {
    fn of(message: &'a Message) -> Member<'a> {
        Member {
            id: &message.id,
            kind: &message.kind,
            severity: &message.severity,
            tenant: &message.tenant,
            check: &message.check,
            target: &message.target,
            status: &message.status,
            reason: &message.reason,
            title: &message.title,
            short: &message.short,
            body: &message.body,
            since: message.since.to_string(),
            at: message.at.to_string(),
            link: message.link.as_deref(),
        }
    }
}

pub(crate) async fn send(
    http: &reqwest::Client,
    url: &str,
    secret: Option<&Secret>,
    message: &Message,
    members: &[Message],
) -> Result<(), DeliveryError> {
    let what = describe("webhook", url);
    let body = payload(message, members)?;
    // The send time, not the event time: a retry hours later must still pass a receiver's
    // freshness check, and the signature binds the two together.
    let timestamp = Timestamp::now().as_millis().div_euclid(1000);
    let mut request = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("Idempotency-Key", message.id.as_str())
        .header("X-Tenantwatch-Timestamp", timestamp.to_string());
    if let Some(secret) = secret {
        request = request.header(
            "X-Tenantwatch-Signature",
            signature(secret.expose().as_bytes(), timestamp, &body)?,
        );
    }
    http::send(request.body(body), &what).await
}

/// The serialized body, exactly the bytes that are signed and sent.
fn payload(message: &Message, members: &[Message]) -> Result<Vec<u8>, DeliveryError> {
    let payload = Payload {
        version: SCHEMA_VERSION,
        id: &message.id,
        kind: &message.kind,
        severity: &message.severity,
        tenant: &message.tenant,
        check: &message.check,
        target: &message.target,
        status: &message.status,
        reason: &message.reason,
        title: &message.title,
        short: &message.short,
        body: &message.body,
        since: message.since.to_string(),
        at: message.at.to_string(),
        link: message.link.as_deref(),
        alerts: members.iter().map(Member::of).collect(),
    };
    serde_json::to_vec(&payload)
        .map_err(|err| DeliveryError::Permanent(format!("webhook payload: {err}")))
}

/// `sha256=` + hex(HMAC-SHA256(secret, "<timestamp>.<body>")).
fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> Result<String, DeliveryError> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret)
        .map_err(|_| DeliveryError::Permanent("webhook secret unusable as HMAC key".into()))?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!("sha256={}", hex(&mac.finalize().into_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // Computed independently:
        // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac 'shh'
        let got = signature(b"shh", 1_700_000_000, br#"{"a":1}"#).unwrap();
        assert_eq!(got, format!("sha256={KNOWN_HMAC}"));
    }

    const KNOWN_HMAC: &str = "be310eac0f84daf469d630347a950258de768b365563ab68f29f2f783473d547";
}
