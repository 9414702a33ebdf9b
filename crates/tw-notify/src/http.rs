//! The HTTP side every web channel shares: one client built at startup, and one way of
//! sending a request and reading its answer into `Ok` or a classified, URL-free error.

use std::time::Duration;

use crate::error::{status_is_transient, ClientBuildError, DeliveryError};
use crate::text::{one_line, truncate_chars, truncate_words, url_origin};

const USER_AGENT: &str = concat!("tenantwatch/", env!("CARGO_PKG_VERSION"));
/// Longest a TCP and TLS connect may take, within the overall request timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a failed response's body is read to explain the failure.
const MAX_ERROR_BODY: usize = 4_096;
/// How much of that is kept in the error text.
const MAX_ERROR_TEXT: usize = 300;
/// How much of a successful response's body is drained so the connection can be reused.
const MAX_DRAIN: usize = 64 * 1024;

/// Builds the HTTP client once: the overall `timeout` per request, rustls with ring and the
/// public web PKI roots, pooled connections, and no redirects — a receiver that redirects a
/// POST is misconfigured, and following it would turn the POST into a GET.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, ClientBuildError> {
    reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(timeout)
        .connect_timeout(timeout.min(CONNECT_TIMEOUT))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(USER_AGENT)
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .map_err(|err| ClientBuildError(error_chain(&err.without_url())))
}

/// How a channel names its receiver in errors: its kind and the URL's origin only.
pub(crate) fn describe(kind: &str, url: &str) -> String {
    format!("{kind} at {}", url_origin(url))
}

/// Sends `request` and classifies the outcome: any 2xx is delivered; 408, 425, 429, 5xx and
/// network failures are transient; anything else is permanent.
pub(crate) async fn send(
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<(), DeliveryError> {
    send_classified(request, what, |_, _| false).await
}

/// [`send`], where `also_transient(status, body)` may declare a rejection transient that the
/// status alone would call permanent (signal-cli-rest-api reports Signal's rate limit as 400).
pub(crate) async fn send_classified(
    request: reqwest::RequestBuilder,
    what: &str,
    also_transient: impl Fn(u16, &str) -> bool,
) -> Result<(), DeliveryError> {
    let mut response = request
        .send()
        .await
        .map_err(|err| request_error(err, what))?;
    let status = response.status();
    if status.is_success() {
        drain(&mut response).await;
        return Ok(());
    }
    let code = status.as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .map(|value| truncate_chars(&one_line(value), 40));
    let body = error_body(&mut response).await;
    let mut detail = format!("{what} answered HTTP {code}");
    if status.is_redirection() {
        detail.push_str(" (a redirect; check the configured URL)");
    }
    if let Some(retry_after) = retry_after {
        detail.push_str(&format!(" (retry after {retry_after})"));
    }
    if !body.is_empty() {
        detail.push_str(": ");
        detail.push_str(&body);
    }
    if status_is_transient(code) || also_transient(code, &body) {
        Err(DeliveryError::Transient(detail))
    } else {
        Err(DeliveryError::Permanent(detail))
    }
}

/// A request that got no HTTP answer. The URL is stripped from the error (Telegram's carries
/// the bot token); a request that could not even be built is permanent, anything on the wire
/// (refused, reset, timed out, TLS) is transient.
pub(crate) fn request_error(err: reqwest::Error, what: &str) -> DeliveryError {
    let err = err.without_url();
    if err.is_builder() {
        DeliveryError::Permanent(format!("{what}: invalid request: {}", error_chain(&err)))
    } else if err.is_timeout() {
        DeliveryError::Transient(format!("{what}: timed out"))
    } else if err.is_connect() {
        DeliveryError::Transient(format!("{what}: connection failed: {}", error_chain(&err)))
    } else {
        DeliveryError::Transient(format!("{what}: {}", error_chain(&err)))
    }
}

/// `err` and its sources, joined with `: `.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        source = inner.source();
    }
    text
}

/// The start of a rejection's body on one line: receivers explain themselves there
/// (`{"ok":false,"description":"Unauthorized"}`, `{"errcode":"M_UNKNOWN_TOKEN"}`).
async fn error_body(response: &mut reqwest::Response) -> String {
    let mut bytes = Vec::new();
    let mut complete = false;
    while bytes.len() < MAX_ERROR_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) => {
                complete = true;
                break;
            }
            Err(_) => break,
        }
    }
    bytes.truncate(MAX_ERROR_BODY);
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if !complete {
        // The last word may be cut (maybe inside an echoed token, which redaction would then
        // not recognise): drop it.
        let end = text.rfind(char::is_whitespace).unwrap_or(0);
        text.truncate(end);
    }
    truncate_words(&text, MAX_ERROR_TEXT)
}

/// Reads what is left of a successful response (up to a bound) so the pooled connection can
/// be reused. A failure here changes nothing: the receiver already said yes.
async fn drain(response: &mut reqwest::Response) {
    let mut read = 0;
    while read < MAX_DRAIN {
        match response.chunk().await {
            Ok(Some(chunk)) => read += chunk.len(),
            Ok(None) | Err(_) => break,
        }
    }
}
