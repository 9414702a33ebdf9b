//! Telegram Bot API: `POST <base>/bot<token>/sendMessage` with `chat_id` and plain `text`.
//!
//! The bot token is part of the URL path, so this URL is never shown anywhere: errors name
//! the base URL's origin only (and reqwest's own errors are stripped of their URL). The text
//! is sent without `parse_mode`, so nothing in an alert needs Markdown escaping.

use serde::Serialize;
use tw_core::Secret;

use crate::error::DeliveryError;
use crate::http::{self, describe};
use crate::text::{titled_text, trim_base, truncate_chars};
use crate::Message;

/// Telegram's limit for one message's text.
const MAX_TEXT_CHARS: usize = 4_096;

#[derive(Serialize)]
struct SendMessage<'a> {
    chat_id: &'a str,
    text: &'a str,
}

pub(crate) async fn send(
    http: &reqwest::Client,
    base: &str,
    bot_token: &Secret,
    chat_id: &str,
    message: &Message,
) -> Result<(), DeliveryError> {
    let what = describe("telegram", base);
    let text = truncate_chars(&titled_text(message), MAX_TEXT_CHARS);
    let url = format!("{}/bot{}/sendMessage", trim_base(base), bot_token.expose());
    let request = http.post(url).json(&SendMessage {
        chat_id,
        text: &text,
    });
    http::send(request, &what).await
}
