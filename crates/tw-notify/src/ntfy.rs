//! ntfy: a plain-text publish to `<server>/<topic>`, with title, priority and tags in headers.
//!
//! The body is the rich text without its opening title line, which ntfy already shows as the
//! notification title (ntfy turns bodies over 4 KiB into attachments, so it is cut below
//! that). `X-Sequence-ID` carries the idempotency key: ntfy 2.16 and later replace a
//! notification with the same sequence id instead of showing a second one, older servers
//! ignore the header. Header values are ASCII; a non-ASCII title travels as RFC 2047 words,
//! which ntfy decodes.

use tw_core::Secret;

use crate::error::DeliveryError;
use crate::http::{self, describe};
use crate::text::{
    append_link, body_after_title, header_words, one_line, safe_token, truncate_bytes,
};
use crate::Message;

/// Below ntfy's default `message-size-limit` of 4096 bytes.
const MAX_BODY: usize = 4_000;

pub(crate) async fn send(
    http: &reqwest::Client,
    url: &str,
    token: Option<&Secret>,
    message: &Message,
) -> Result<(), DeliveryError> {
    let what = describe("ntfy", url);
    let mut request = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header("Title", header_words(&one_line(&message.title)).join(" "))
        .header("Priority", priority(message))
        .header("Tags", tags(message))
        .header("X-Sequence-ID", safe_token(&message.id));
    if let Some(link) = &message.link {
        let link = one_line(link);
        if link.is_ascii() {
            request = request.header("Click", link);
        }
    }
    if let Some(token) = token {
        request = request.bearer_auth(token.expose());
    }
    let mut body = body_after_title(message).to_owned();
    append_link(&mut body, message);
    http::send(request.body(truncate_bytes(&body, MAX_BODY)), &what).await
}

/// ntfy priorities: 5 max (critical), 4 high (warning), 3 default, 2 low (resolved, which
/// should not wake anybody).
fn priority(message: &Message) -> &'static str {
    if message.is_resolved() {
        return "2";
    }
    match message.severity.as_str() {
        "critical" => "5",
        "warning" => "4",
        _ => "3",
    }
}

/// An emoji tag (ntfy shows known short codes as emoji) and the tenant.
fn tags(message: &Message) -> String {
    let emoji = if message.is_resolved() {
        "white_check_mark"
    } else {
        match message.severity.as_str() {
            "critical" => "rotating_light",
            "warning" => "warning",
            "blind" => "see_no_evil",
            _ => "bell",
        }
    };
    let tenant: String = message
        .tenant
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != ',')
        .collect();
    if tenant.is_empty() {
        emoji.to_owned()
    } else {
        format!("{emoji},{tenant}")
    }
}
