//! SMS: Twilio's Messages API (and the many gateways that copy it), and a generic HTTP
//! template so any other SMS gateway fits without code.
//!
//! Both send the short text, one request per recipient, and try every recipient before
//! reporting: one bad number must not keep the others from being paged. Neither API has an
//! idempotency key that spans recipients, so a retry after a partial failure sends again to
//! the recipients that already got the message (at least once, as everywhere).

use std::fmt::Write as _;

use tw_core::Secret;

use crate::error::DeliveryError;
use crate::http::{self, describe};
use crate::text::{encode_form_value, encode_path_segment, trim_base};
use crate::Message;

/// `POST <base>/2010-04-01/Accounts/<sid>/Messages.json` with form fields `To`, `From`,
/// `Body`, authenticated with HTTP basic auth `sid:token`.
pub(crate) struct Twilio<'a> {
    pub(crate) base_url: &'a str,
    pub(crate) account_sid: &'a str,
    pub(crate) auth_token: &'a Secret,
    pub(crate) from: &'a str,
    pub(crate) to: &'a [String],
}

impl Twilio<'_> {
    pub(crate) async fn send(
        &self,
        http: &reqwest::Client,
        message: &Message,
    ) -> Result<(), DeliveryError> {
        let what = describe("twilio_sms", self.base_url);
        if self.to.is_empty() {
            return Err(DeliveryError::Permanent(format!(
                "{what}: no recipients configured"
            )));
        }
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            trim_base(self.base_url),
            encode_path_segment(self.account_sid)
        );
        let mut failures = Vec::new();
        for (index, to) in self.to.iter().enumerate() {
            let form = [
                ("To", to.as_str()),
                ("From", self.from),
                ("Body", message.short.as_str()),
            ];
            let request = http
                .post(&url)
                .basic_auth(self.account_sid, Some(self.auth_token.expose()))
                .form(&form);
            if let Err(err) = http::send(request, &what).await {
                failures.push((index, err));
            }
        }
        combine(failures, self.to.len())
    }
}

/// A gateway described by URL, method, body encoding and a template with the placeholders
/// `{message}` (the short text), `{tenant}`, `{target}`, `{severity}` and `{to}`.
///
/// - `POST` + `form`: the rendered template is the `application/x-www-form-urlencoded` body;
///   values are form-encoded (`to={to}&text={message}`).
/// - `POST` + `json`: the rendered template is the `application/json` body; values are
///   escaped as JSON string contents, so placeholders go inside quotes
///   (`{"to":"{to}","text":"{message}"}`), and the result must parse as JSON.
/// - `GET` (`form` only): the rendered template is appended to the URL as its query.
///
/// One request per entry of `to`; with no entries, one request with `{to}` empty (for
/// gateways whose recipient is fixed in the URL). Each request carries an `Idempotency-Key`
/// of the message id and the recipient's position, and `Authorization: Bearer` when a token
/// is set.
pub(crate) struct HttpSms<'a> {
    pub(crate) url: &'a str,
    pub(crate) method: &'a str,
    pub(crate) content_type: &'a str,
    pub(crate) body_template: &'a str,
    pub(crate) to: &'a [String],
    pub(crate) token: Option<&'a Secret>,
}

#[derive(Clone, Copy)]
enum Method {
    Post,
    Get,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Encoding {
    Form,
    Json,
}

impl HttpSms<'_> {
    pub(crate) async fn send(
        &self,
        http: &reqwest::Client,
        message: &Message,
    ) -> Result<(), DeliveryError> {
        let what = describe("http_sms", self.url);
        let (method, encoding) = self
            .shape()
            .map_err(|problem| DeliveryError::Permanent(format!("{what}: {problem}")))?;
        let no_recipient = [String::new()];
        let recipients = if self.to.is_empty() {
            &no_recipient[..]
        } else {
            self.to
        };
        let mut failures = Vec::new();
        for (index, to) in recipients.iter().enumerate() {
            let values = Values { message, to };
            let rendered = render(self.body_template, encoding, &values);
            let mut request = match method {
                Method::Get => http.get(with_query(self.url, &rendered)),
                Method::Post if encoding == Encoding::Json => {
                    if serde_json::from_str::<serde_json::Value>(&rendered).is_err() {
                        return Err(DeliveryError::Permanent(format!(
                            "{what}: body_template does not render to valid JSON"
                        )));
                    }
                    http.post(self.url)
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(rendered)
                }
                Method::Post => http
                    .post(self.url)
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(rendered),
            };
            request = request.header("Idempotency-Key", format!("{}-{index}", message.id));
            if let Some(token) = self.token {
                request = request.bearer_auth(token.expose());
            }
            if let Err(err) = http::send(request, &what).await {
                failures.push((index, err));
            }
        }
        combine(failures, recipients.len())
    }

    fn shape(&self) -> Result<(Method, Encoding), String> {
        let method = if self.method.eq_ignore_ascii_case("POST") {
            Method::Post
        } else if self.method.eq_ignore_ascii_case("GET") {
            Method::Get
        } else {
            return Err(format!("method {:?} is neither POST nor GET", self.method));
        };
        let encoding = match self.content_type.to_ascii_lowercase().as_str() {
            "form" => Encoding::Form,
            "json" => Encoding::Json,
            other => return Err(format!("content_type {other:?} is neither form nor json")),
        };
        if matches!((method, encoding), (Method::Get, Encoding::Json)) {
            return Err(
                "GET sends the template as a query string; content_type must be form".into(),
            );
        }
        Ok((method, encoding))
    }
}

/// The placeholders a template may use.
const PLACEHOLDERS: [&str; 5] = ["{message}", "{tenant}", "{target}", "{severity}", "{to}"];

/// The literal text of a template between its placeholders (for redaction: an API key
/// written into the template is among these parts).
pub(crate) fn template_literals(template: &str) -> Vec<&str> {
    let mut parts = vec![template];
    for placeholder in PLACEHOLDERS {
        parts = parts
            .into_iter()
            .flat_map(|part| part.split(placeholder))
            .collect();
    }
    parts.retain(|part| !part.is_empty());
    parts
}

/// The placeholder values for one recipient.
struct Values<'a> {
    message: &'a Message,
    to: &'a str,
}

impl Values<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        match name {
            "message" => Some(&self.message.short),
            "tenant" => Some(&self.message.tenant),
            "target" => Some(&self.message.target),
            "severity" => Some(&self.message.severity),
            "to" => Some(self.to),
            _ => None,
        }
    }
}

/// Replaces each known `{name}` in one pass (a value containing `{to}` is not expanded
/// again) and leaves every other brace alone, since JSON templates are full of them.
fn render(template: &str, encoding: Encoding, values: &Values<'_>) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let (before, from_brace) = rest.split_at(open);
        out.push_str(before);
        let placeholder = from_brace
            .get(1..)
            .and_then(|after| after.find('}').map(|close| (after, close)))
            .and_then(|(after, close)| {
                let name = after.get(..close)?;
                values.get(name).map(|value| (value, close + 2))
            });
        match placeholder {
            Some((value, consumed)) => {
                out.push_str(&encode(value, encoding));
                rest = from_brace.get(consumed..).unwrap_or_default();
            }
            None => {
                out.push('{');
                rest = from_brace.get(1..).unwrap_or_default();
            }
        }
    }
    out.push_str(rest);
    out
}

fn encode(value: &str, encoding: Encoding) -> String {
    match encoding {
        Encoding::Form => encode_form_value(value),
        Encoding::Json => {
            let quoted = serde_json::Value::String(value.to_owned()).to_string();
            quoted
                .strip_prefix('"')
                .and_then(|inner| inner.strip_suffix('"'))
                .unwrap_or_default()
                .to_owned()
        }
    }
}

/// `url` with `query` appended after `?`, or after `&` when it already has a query.
fn with_query(url: &str, query: &str) -> String {
    if query.is_empty() {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&{query}")
    } else {
        format!("{url}?{query}")
    }
}

/// One result for several per-recipient requests: delivered when all were; otherwise
/// transient if any failure was (a retry may get it through), else permanent.
fn combine(mut failures: Vec<(usize, DeliveryError)>, total: usize) -> Result<(), DeliveryError> {
    if failures.is_empty() {
        return Ok(());
    }
    let transient = failures.iter().any(|(_, err)| err.is_transient());
    if total == 1 {
        if let Some((_, err)) = failures.pop() {
            return Err(err);
        }
    }
    let mut detail = format!("{} of {total} recipients failed", failures.len());
    for (index, err) in &failures {
        let _ = write!(detail, "; recipient {}: {err}", index + 1);
    }
    if transient {
        Err(DeliveryError::Transient(detail))
    } else {
        Err(DeliveryError::Permanent(detail))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tw_core::Timestamp;

    fn message() -> Message {
        Message {
            id: "e1".into(),
            kind: "firing".into(),
            severity: "critical".into(),
            tenant: "contoso".into(),
            check: "smtp_rcpt".into(),
            target: "ceo@contoso.com".into(),
            status: "critical".into(),
            reason: "recipient_rejected".into(),
            title: "t".into(),
            short: "CRIT contoso: \"ceo\" gone {to}\n& more".into(),
            body: "b".into(),
            since: Timestamp(0),
            at: Timestamp(0),
            link: None,
        }
    }

    fn check(template: &str, encoding: Encoding, expect: &str) {
        let message = message();
        let values = Values {
            message: &message,
            to: "+15550001111",
        };
        assert_eq!(render(template, encoding, &values), expect, "{template}");
    }

    #[test]
    fn templates() {
        check(
            "to={to}&text={message}",
            Encoding::Form,
            "to=%2B15550001111&text=CRIT+contoso%3A+%22ceo%22+gone+%7Bto%7D%0A%26+more",
        );
        check(
            r#"{"to":"{to}","text":"{message}","sev":"{severity}"}"#,
            Encoding::Json,
            r#"{"to":"+15550001111","text":"CRIT contoso: \"ceo\" gone {to}\n& more","sev":"critical"}"#,
        );
        check("{unknown} {tenant}{", Encoding::Form, "{unknown} contoso{");
        check("{target}}", Encoding::Form, "ceo%40contoso.com}");
        check("", Encoding::Form, "");
    }

    #[test]
    fn literals() {
        assert_eq!(
            template_literals("key=abc&to={to}&text={message}"),
            vec!["key=abc&to=", "&text="]
        );
        assert_eq!(template_literals("{to}"), Vec::<&str>::new());
    }

    #[test]
    fn queries() {
        assert_eq!(with_query("http://h/send", "a=1"), "http://h/send?a=1");
        assert_eq!(
            with_query("http://h/send?k=2", "a=1"),
            "http://h/send?k=2&a=1"
        );
        assert_eq!(with_query("http://h/send", ""), "http://h/send");
    }

    #[test]
    fn combining_keeps_the_worst_retryable_class() {
        assert!(combine(vec![], 2).is_ok());
        let mixed = combine(
            vec![
                (0, DeliveryError::Permanent("bad number".into())),
                (1, DeliveryError::Transient("503".into())),
            ],
            3,
        )
        .unwrap_err();
        assert!(mixed.is_transient());
        assert_eq!(
            mixed.detail(),
            "2 of 3 recipients failed; recipient 1: permanent: bad number; recipient 2: transient: 503"
        );
        let single = combine(vec![(0, DeliveryError::Permanent("x".into()))], 1).unwrap_err();
        assert_eq!(single.to_string(), "permanent: x");
    }
}
