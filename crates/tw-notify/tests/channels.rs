//! Every channel against a local fake of its real service, on loopback only.
//!
//! Each fake records the exact request (method, path, headers, body) and the test asserts it
//! is what the real API expects: that is the only proof a channel works that does not need
//! the internet. The same fakes answer with chosen statuses, hang, or echo the request back,
//! to check classification (transient or permanent) and that no error ever shows a secret.
// Test helpers (not only #[test] functions) may fail loudly; that is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tw_core::{Secret, Timestamp};
use tw_notify::{
    deliver, deliver_with_smtp_timeout, http_client, Channel, DeliveryError, EmailTls, Message,
};

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

const SINCE: Timestamp = Timestamp(1_795_000_000_000); // 2026-11-18T11:06:40Z
const AT: Timestamp = Timestamp(1_795_000_300_000); // 2026-11-18T11:11:40Z
const LINK: &str = "https://status.msp.example/t/contoso";

fn message() -> Message {
    Message {
        id: "evt-42-r1".into(),
        kind: "firing".into(),
        severity: "critical".into(),
        tenant: "contoso".into(),
        check: "smtp_rcpt".into(),
        target: "ceo@contoso.com".into(),
        status: "critical".into(),
        reason: "recipient_rejected".into(),
        title: "CRITICAL contoso: ceo@contoso.com is no longer accepted".into(),
        short: "CRIT contoso ceo@contoso.com rejected since 11:06Z".into(),
        body: "EOP rejects ceo@contoso.com.\nReply: 550 5.4.1 Recipient address rejected: Access denied\nSince: 2026-11-18T11:06:40Z".into(),
        since: SINCE,
        at: AT,
        link: Some(LINK.into()),
    }
}

fn resolved() -> Message {
    Message {
        id: "evt-43-r1".into(),
        kind: "resolved".into(),
        status: "ok".into(),
        reason: "accepted".into(),
        title: "RESOLVED contoso: ceo@contoso.com is accepted again".into(),
        short: "OK contoso ceo@contoso.com accepted again".into(),
        body: "EOP accepts ceo@contoso.com again.".into(),
        link: None,
        ..message()
    }
}

/// A message whose body opens with its title, the way tw-alert's renderer writes it.
fn rendered() -> Message {
    let base = message();
    Message {
        body: format!(
            "{}\n\nVerdict: critical (recipient_rejected)\nTenant: contoso\n",
            base.title
        ),
        ..base
    }
}

fn client() -> reqwest::Client {
    http_client(Duration::from_secs(5)).unwrap()
}

/// The text Telegram and Matrix get: title, blank line, body, blank line, link.
fn titled(message: &Message) -> String {
    let mut text = format!("{}\n\n{}", message.title, message.body);
    if let Some(link) = &message.link {
        text.push_str("\n\n");
        text.push_str(link);
    }
    text
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("header {name} missing in {headers:?}"))
        .to_str()
        .unwrap()
}

fn json_body(request: &Recorded) -> Value {
    assert_eq!(header(&request.headers, "content-type"), "application/json");
    serde_json::from_slice(&request.body).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The HTTP sink: an axum server on 127.0.0.1:0 that records every request
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Recorded {
    method: String,
    /// Path and query exactly as sent (still percent-encoded).
    uri: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Recorded {
    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
}

/// How the sink answers.
#[derive(Clone)]
enum Reply {
    Status(u16, &'static str),
    /// The status, with the whole request (path, headers, body) echoed in the response body,
    /// as a careless receiver might do.
    Echo(u16),
    /// Never answers.
    Hang,
}

struct Sink {
    base: String,
    requests: mpsc::UnboundedReceiver<Recorded>,
}

impl Sink {
    async fn start(reply: Reply) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, requests) = mpsc::unbounded_channel();
        let app = Router::new().fallback(move |request: Request| {
            let tx = tx.clone();
            let reply = reply.clone();
            async move { record(request, tx, reply).await }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Sink { base, requests }
    }

    async fn next(&mut self) -> Recorded {
        tokio::time::timeout(Duration::from_secs(5), self.requests.recv())
            .await
            .expect("no request reached the sink")
            .unwrap()
    }

    fn assert_idle(&mut self) {
        assert!(
            self.requests.try_recv().is_err(),
            "unexpected extra request"
        );
    }
}

async fn record(request: Request, tx: mpsc::UnboundedSender<Recorded>, reply: Reply) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap()
        .to_vec();
    let recorded = Recorded {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers,
        body,
    };
    let echo = format!(
        "{} {} {:?} {}",
        recorded.method,
        recorded.uri,
        recorded.headers,
        String::from_utf8_lossy(&recorded.body)
    );
    let _ = tx.send(recorded);
    match reply {
        Reply::Status(status, body) => {
            (StatusCode::from_u16(status).unwrap(), body).into_response()
        }
        Reply::Echo(status) => (StatusCode::from_u16(status).unwrap(), echo).into_response(),
        Reply::Hang => {
            std::future::pending::<()>().await;
            Body::empty().into_response()
        }
    }
}

/// One of every HTTP channel, all pointed at `base`.
fn http_channels(base: &str) -> Vec<Channel> {
    vec![
        Channel::Webhook {
            url: format!("{base}/hooks/tw"),
            secret: Some(Secret::new("whsec-test")),
        },
        Channel::Ntfy {
            url: format!("{base}/alerts"),
            token: Some(Secret::new("tk_test")),
        },
        Channel::Alertmanager { url: base.into() },
        Channel::Signal {
            url: base.into(),
            number: "+4915100000000".into(),
            recipients: vec!["+4915200000000".into()],
        },
        Channel::TwilioSms {
            base_url: base.into(),
            account_sid: "AC123".into(),
            auth_token: Secret::new("twilio-token"),
            from: "+15550000000".into(),
            to: vec!["+15551111111".into()],
        },
        Channel::HttpSms {
            url: format!("{base}/sms"),
            method: "POST".into(),
            content_type: "form".into(),
            body_template: "to={to}&text={message}".into(),
            to: vec!["+15551111111".into()],
            token: Some(Secret::new("sms-token")),
        },
        Channel::Telegram {
            base_url: base.into(),
            bot_token: Secret::new("123456:tg-token"),
            chat_id: "-1001234".into(),
        },
        Channel::Matrix {
            homeserver: base.into(),
            access_token: Secret::new("syt_matrix"),
            room_id: "!ops:msp.example".into(),
        },
    ]
}

// ---------------------------------------------------------------------------------------------
// Request shapes, one test per channel
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn webhook_posts_signed_json() {
    let mut sink = Sink::start(Reply::Status(204, "")).await;
    let channel = Channel::Webhook {
        url: format!("{}/hooks/tw", sink.base),
        secret: Some(Secret::new("whsec-test")),
    };
    deliver(&channel, &message(), &client()).await.unwrap();
    let request = sink.next().await;

    assert_eq!(request.method, "POST");
    assert_eq!(request.uri, "/hooks/tw");
    assert_eq!(header(&request.headers, "idempotency-key"), "evt-42-r1");
    let timestamp: i64 = header(&request.headers, "x-tenantwatch-timestamp")
        .parse()
        .unwrap();
    let now = Timestamp::now().as_millis() / 1000;
    assert!(
        (now - timestamp).abs() <= 60,
        "timestamp {timestamp} vs now {now}"
    );

    let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec-test").unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(&request.body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        header(&request.headers, "x-tenantwatch-signature"),
        format!("sha256={expected}")
    );

    assert_eq!(
        json_body(&request),
        json!({
            "version": 1,
            "id": "evt-42-r1",
            "kind": "firing",
            "severity": "critical",
            "tenant": "contoso",
            "check": "smtp_rcpt",
            "target": "ceo@contoso.com",
            "status": "critical",
            "reason": "recipient_rejected",
            "title": "CRITICAL contoso: ceo@contoso.com is no longer accepted",
            "short": "CRIT contoso ceo@contoso.com rejected since 11:06Z",
            "body": message().body,
            "since": "2026-11-18T11:06:40.000Z",
            "at": "2026-11-18T11:11:40.000Z",
            "link": LINK,
        })
    );
    sink.assert_idle();

    // Without a secret: the same body, a timestamp, and no signature.
    let unsigned = Channel::Webhook {
        url: format!("{}/hooks/tw", sink.base),
        secret: None,
    };
    deliver(&unsigned, &resolved(), &client()).await.unwrap();
    let request = sink.next().await;
    assert!(request.headers.get("x-tenantwatch-signature").is_none());
    assert!(request.headers.get("x-tenantwatch-timestamp").is_some());
    let body = json_body(&request);
    assert_eq!(body["kind"], "resolved");
    assert_eq!(body["link"], Value::Null);
}

#[tokio::test]
async fn ntfy_publishes_text_with_title_priority_and_tags() {
    let mut sink = Sink::start(Reply::Status(200, r#"{"id":"x"}"#)).await;
    let channel = Channel::Ntfy {
        url: format!("{}/msp-alerts", sink.base),
        token: Some(Secret::new("tk_test")),
    };
    deliver(&channel, &message(), &client()).await.unwrap();
    let request = sink.next().await;
    assert_eq!(request.method, "POST");
    assert_eq!(request.uri, "/msp-alerts");
    let h = &request.headers;
    assert_eq!(header(h, "content-type"), "text/plain; charset=utf-8");
    assert_eq!(header(h, "authorization"), "Bearer tk_test");
    assert_eq!(header(h, "title"), message().title);
    assert_eq!(header(h, "priority"), "5");
    assert_eq!(header(h, "tags"), "rotating_light,contoso");
    assert_eq!(header(h, "click"), LINK);
    assert_eq!(header(h, "x-sequence-id"), "evt-42-r1");
    assert_eq!(request.text(), format!("{}\n\n{LINK}", message().body));

    // The title is the notification's title; a body opening with it loses that line.
    deliver(&channel, &rendered(), &client()).await.unwrap();
    let request = sink.next().await;
    assert_eq!(
        request.text(),
        format!("Verdict: critical (recipient_rejected)\nTenant: contoso\n\n{LINK}")
    );

    // Priority follows severity, and a resolution is low priority whatever its severity.
    let warning = Message {
        severity: "warning".into(),
        ..message()
    };
    let blind = Message {
        kind: "blind".into(),
        severity: "blind".into(),
        ..message()
    };
    for (message, priority, tags) in [
        (warning, "4", "warning,contoso"),
        (blind, "3", "see_no_evil,contoso"),
        (resolved(), "2", "white_check_mark,contoso"),
    ] {
        deliver(&channel, &message, &client()).await.unwrap();
        let request = sink.next().await;
        assert_eq!(header(&request.headers, "priority"), priority);
        assert_eq!(header(&request.headers, "tags"), tags);
        assert_eq!(
            request.headers.contains_key("click"),
            message.link.is_some()
        );
    }
    sink.assert_idle();
}

#[tokio::test]
async fn ntfy_sends_a_non_ascii_title_as_rfc2047_words() {
    let mut sink = Sink::start(Reply::Status(200, "{}")).await;
    let channel = Channel::Ntfy {
        url: format!("{}/t", sink.base),
        token: None,
    };
    let message = Message {
        title: "KRITISCH: Müller GmbH".into(),
        id: "evt:42/ntfy".into(),
        ..message()
    };
    deliver(&channel, &message, &client()).await.unwrap();
    let request = sink.next().await;
    assert_eq!(
        header(&request.headers, "title"),
        "=?UTF-8?Q?KRITISCH=3A_M=C3=BCller_GmbH?="
    );
    assert!(request.headers.get("authorization").is_none());
    // An id ntfy would not accept as a sequence id is hashed into one it does.
    let sequence = header(&request.headers, "x-sequence-id");
    assert!(sequence.len() <= 64);
    assert!(sequence
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
}

#[tokio::test]
async fn alertmanager_posts_v2_alerts() {
    let mut sink = Sink::start(Reply::Status(200, "")).await;
    let channel = Channel::Alertmanager {
        url: format!("{}/", sink.base),
    };
    deliver(&channel, &message(), &client()).await.unwrap();
    let request = sink.next().await;
    assert_eq!(request.method, "POST");
    assert_eq!(request.uri, "/api/v2/alerts");
    let labels = json!({
        "alertname": "TenantwatchCheck",
        "tenant": "contoso",
        "check": "smtp_rcpt",
        "target": "ceo@contoso.com",
        "severity": "critical",
    });
    assert_eq!(
        json_body(&request),
        json!([{
            "labels": labels,
            "annotations": {
                "summary": message().title,
                "description": message().body,
                "reason": "recipient_rejected",
                "status": "critical",
                "kind": "firing",
                "tenantwatch_id": "evt-42-r1",
            },
            "startsAt": "2026-11-18T11:06:40.000Z",
            // Firing: valid for 24 h past the event, longer than any repeat interval.
            "endsAt": "2026-11-19T11:11:40.000Z",
            "generatorURL": LINK,
        }])
    );

    // Resolved: the same labels (so Alertmanager ends the same alert), endsAt = resolution.
    deliver(&channel, &resolved(), &client()).await.unwrap();
    let body = json_body(&sink.next().await);
    assert_eq!(body[0]["labels"], labels);
    assert_eq!(body[0]["startsAt"], "2026-11-18T11:06:40.000Z");
    assert_eq!(body[0]["endsAt"], "2026-11-18T11:11:40.000Z");
    assert!(body[0].get("generatorURL").is_none());
    sink.assert_idle();
}

#[tokio::test]
async fn signal_sends_the_short_text_through_v2_send() {
    let mut sink = Sink::start(Reply::Status(201, r#"{"timestamp":"1"}"#)).await;
    let channel = Channel::Signal {
        url: sink.base.clone(),
        number: "+4915100000000".into(),
        recipients: vec!["+4915200000000".into(), "group.b3BzCg==".into()],
    };
    deliver(&channel, &message(), &client()).await.unwrap();
    let request = sink.next().await;
    assert_eq!(request.method, "POST");
    assert_eq!(request.uri, "/v2/send");
    assert_eq!(
        json_body(&request),
        json!({
            "message": "CRIT contoso ceo@contoso.com rejected since 11:06Z",
            "number": "+4915100000000",
            "recipients": ["+4915200000000", "group.b3BzCg=="],
        })
    );
    sink.assert_idle();
}

#[tokio::test]
async fn signal_rate_limits_are_transient_other_400s_permanent() {
    let sink = Sink::start(Reply::Status(
        400,
        r#"{"error":"Failed to send message due to rate limiting"}"#,
    ))
    .await;
    let channel = Channel::Signal {
        url: sink.base.clone(),
        number: "+4915100000000".into(),
        recipients: vec!["+4915200000000".into()],
    };
    let err = deliver(&channel, &message(), &client()).await.unwrap_err();
    assert!(err.is_transient(), "{err}");

    let sink = Sink::start(Reply::Status(
        400,
        r#"{"error":"User +49 is not registered"}"#,
    ))
    .await;
    let channel = Channel::Signal {
        url: sink.base.clone(),
        number: "+4915100000000".into(),
        recipients: vec!["+4915200000000".into()],
    };
    let err = deliver(&channel, &message(), &client()).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("not registered"), "{err}");
}

#[tokio::test]
async fn twilio_posts_one_form_per_recipient_with_basic_auth() {
    let mut sink = Sink::start(Reply::Status(201, r#"{"sid":"SM1"}"#)).await;
    let channel = Channel::TwilioSms {
        base_url: sink.base.clone(),
        account_sid: "AC123".into(),
        auth_token: Secret::new("twilio-token"),
        from: "+15550000000".into(),
        to: vec!["+15551111111".into(), "+15552222222".into()],
    };
    deliver(&channel, &message(), &client()).await.unwrap();
    for to in ["%2B15551111111", "%2B15552222222"] {
        let request = sink.next().await;
        assert_eq!(request.method, "POST");
        assert_eq!(request.uri, "/2010-04-01/Accounts/AC123/Messages.json");
        assert_eq!(
            header(&request.headers, "content-type"),
            "application/x-www-form-urlencoded"
        );
        // base64("AC123:twilio-token")
        assert_eq!(
            header(&request.headers, "authorization"),
            "Basic QUMxMjM6dHdpbGlvLXRva2Vu"
        );
        assert_eq!(
            request.text(),
            format!(
                "To={to}&From=%2B15550000000&Body=CRIT+contoso+ceo%40contoso.com+rejected+since+11%3A06Z"
            )
        );
    }
    sink.assert_idle();
}

#[tokio::test]
async fn http_sms_renders_form_json_and_get_templates() {
    let mut sink = Sink::start(Reply::Status(200, "OK")).await;
    let message = Message {
        short: "CRIT \"contoso\" & co".into(),
        ..message()
    };

    let form = Channel::HttpSms {
        url: format!("{}/api/send?account=7", sink.base),
        method: "POST".into(),
        content_type: "form".into(),
        body_template: "to={to}&text={message}&sev={severity}".into(),
        to: vec!["+15551111111".into(), "+15552222222".into()],
        token: Some(Secret::new("sms-token")),
    };
    deliver(&form, &message, &client()).await.unwrap();
    for (index, to) in ["%2B15551111111", "%2B15552222222"].iter().enumerate() {
        let request = sink.next().await;
        assert_eq!(request.method, "POST");
        assert_eq!(request.uri, "/api/send?account=7");
        assert_eq!(
            header(&request.headers, "content-type"),
            "application/x-www-form-urlencoded"
        );
        assert_eq!(
            header(&request.headers, "authorization"),
            "Bearer sms-token"
        );
        assert_eq!(
            header(&request.headers, "idempotency-key"),
            format!("evt-42-r1-{index}")
        );
        assert_eq!(
            request.text(),
            format!("to={to}&text=CRIT+%22contoso%22+%26+co&sev=critical")
        );
    }

    let json = Channel::HttpSms {
        url: format!("{}/api/json", sink.base),
        method: "post".into(),
        content_type: "json".into(),
        body_template:
            r#"{"to":["{to}"],"text":"{message}","meta":{"tenant":"{tenant}","target":"{target}"}}"#
                .into(),
        to: vec!["+15551111111".into()],
        token: None,
    };
    deliver(&json, &message, &client()).await.unwrap();
    let request = sink.next().await;
    assert_eq!(request.uri, "/api/json");
    assert!(request.headers.get("authorization").is_none());
    assert_eq!(
        json_body(&request),
        json!({
            "to": ["+15551111111"],
            "text": "CRIT \"contoso\" & co",
            "meta": {"tenant": "contoso", "target": "ceo@contoso.com"},
        })
    );

    let get = Channel::HttpSms {
        url: format!("{}/cgi/send", sink.base),
        method: "GET".into(),
        content_type: "form".into(),
        body_template: "user=msp&to={to}&msg={message}".into(),
        to: vec!["+15551111111".into()],
        token: None,
    };
    deliver(&get, &message, &client()).await.unwrap();
    let request = sink.next().await;
    assert_eq!(request.method, "GET");
    assert_eq!(
        request.uri,
        "/cgi/send?user=msp&to=%2B15551111111&msg=CRIT+%22contoso%22+%26+co"
    );
    assert!(request.body.is_empty());
    sink.assert_idle();
}

#[tokio::test]
async fn http_sms_misconfiguration_is_permanent_and_sends_nothing() {
    let mut sink = Sink::start(Reply::Status(200, "OK")).await;
    let cases = [
        ("PUT", "form", "to={to}", "neither POST nor GET"),
        ("POST", "xml", "to={to}", "neither form nor json"),
        ("GET", "json", "to={to}", "content_type must be form"),
        ("POST", "json", r#"{"to": {to}}"#, "valid JSON"),
    ];
    for (method, content_type, template, expect) in cases {
        let channel = Channel::HttpSms {
            url: format!("{}/sms", sink.base),
            method: method.into(),
            content_type: content_type.into(),
            body_template: template.into(),
            to: vec!["+15551111111".into()],
            token: None,
        };
        let err = deliver(&channel, &message(), &client()).await.unwrap_err();
        assert!(!err.is_transient(), "{err}");
        assert!(err.to_string().contains(expect), "{err}");
    }
    sink.assert_idle();
}

#[tokio::test]
async fn telegram_sends_message_with_chat_id_and_text() {
    let mut sink = Sink::start(Reply::Status(200, r#"{"ok":true,"result":{}}"#)).await;
    let channel = Channel::Telegram {
        base_url: format!("{}/", sink.base),
        bot_token: Secret::new("123456:ABC-tg-token"),
        chat_id: "-1001234".into(),
    };
    deliver(&channel, &message(), &client()).await.unwrap();
    let request = sink.next().await;
    assert_eq!(request.method, "POST");
    assert_eq!(request.uri, "/bot123456:ABC-tg-token/sendMessage");
    assert_eq!(
        json_body(&request),
        json!({ "chat_id": "-1001234", "text": titled(&message()) })
    );

    // A body that opens with the title, as tw-alert renders it, does not get a second one.
    deliver(&channel, &rendered(), &client()).await.unwrap();
    let request = sink.next().await;
    assert_eq!(
        json_body(&request)["text"],
        format!("{}\n\n{LINK}", rendered().body.trim_end())
    );
    sink.assert_idle();
}

#[tokio::test]
async fn matrix_puts_a_room_message_keyed_by_the_message_id() {
    let mut sink = Sink::start(Reply::Status(200, r#"{"event_id":"$e"}"#)).await;
    let channel = Channel::Matrix {
        homeserver: sink.base.clone(),
        access_token: Secret::new("syt_matrix"),
        room_id: "!ops:msp.example".into(),
    };
    deliver(&channel, &message(), &client()).await.unwrap();
    // A retry is the same transaction: same path, same body.
    deliver(&channel, &message(), &client()).await.unwrap();
    let first = sink.next().await;
    let second = sink.next().await;
    for request in [&first, &second] {
        assert_eq!(request.method, "PUT");
        assert_eq!(
            request.uri,
            "/_matrix/client/v3/rooms/%21ops%3Amsp.example/send/m.room.message/evt-42-r1"
        );
        assert_eq!(
            header(&request.headers, "authorization"),
            "Bearer syt_matrix"
        );
        assert_eq!(
            json_body(request),
            json!({ "msgtype": "m.text", "body": titled(&message()) })
        );
    }
    sink.assert_idle();
}

// ---------------------------------------------------------------------------------------------
// Classification: every HTTP channel, every interesting status
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn statuses_are_classified_the_same_on_every_http_channel() {
    let cases: [(u16, bool); 8] = [
        (503, true),
        (500, true),
        (429, true),
        (408, true),
        (425, true),
        (401, false),
        (400, false),
        (404, false),
    ];
    for (status, transient) in cases {
        let mut sink = Sink::start(Reply::Status(status, "nope")).await;
        for channel in http_channels(&sink.base) {
            let err = deliver(&channel, &message(), &client())
                .await
                .expect_err(channel.kind());
            assert_eq!(
                err.is_transient(),
                transient,
                "{} answered {status}: {err}",
                channel.kind()
            );
            assert!(err.to_string().contains(&status.to_string()), "{err}");
            let _ = sink.next().await;
        }
    }
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_is_permanent() {
    let mut sink = Sink::start(Reply::Status(301, "")).await;
    let channel = Channel::Webhook {
        url: format!("{}/hooks/tw", sink.base),
        secret: None,
    };
    let err = deliver(&channel, &message(), &client()).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    let _ = sink.next().await;
    sink.assert_idle();
}

#[tokio::test]
async fn a_hanging_receiver_is_transient_within_the_client_timeout() {
    let mut sink = Sink::start(Reply::Hang).await;
    let http = http_client(Duration::from_millis(300)).unwrap();
    for channel in http_channels(&sink.base) {
        let started = tokio::time::Instant::now();
        let err = deliver(&channel, &message(), &http).await.unwrap_err();
        let took = started.elapsed();
        assert!(err.is_transient(), "{}: {err}", channel.kind());
        assert!(err.to_string().contains("timed out"), "{err}");
        assert!(
            took < Duration::from_secs(2),
            "{} took {took:?}",
            channel.kind()
        );
        let _ = sink.next().await;
    }
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    for channel in http_channels(&base) {
        let err = deliver(&channel, &message(), &client()).await.unwrap_err();
        assert!(err.is_transient(), "{}: {err}", channel.kind());
    }
}

// ---------------------------------------------------------------------------------------------
// Redaction: a canary secret never appears in any error
// ---------------------------------------------------------------------------------------------

const CANARY: &str = "CANARY-7f3a9c51";

fn canary_channels(base: &str) -> Vec<Channel> {
    vec![
        // Webhook URLs of chat tools carry their token in the path.
        Channel::Webhook {
            url: format!("{base}/services/{CANARY}"),
            secret: Some(Secret::new(CANARY)),
        },
        // An ntfy topic is a password too.
        Channel::Ntfy {
            url: format!("{base}/{CANARY}"),
            token: Some(Secret::new(format!("tk_{CANARY}"))),
        },
        Channel::Alertmanager {
            url: format!("{base}/proxy/{CANARY}"),
        },
        Channel::Signal {
            url: format!("{base}/{CANARY}"),
            number: "+4915100000000".into(),
            recipients: vec!["+4915200000000".into()],
        },
        Channel::TwilioSms {
            base_url: base.into(),
            account_sid: "AC123".into(),
            auth_token: Secret::new(CANARY),
            from: "+15550000000".into(),
            to: vec!["+15551111111".into(), "+15552222222".into()],
        },
        Channel::HttpSms {
            url: format!("{base}/sms?apikey={CANARY}"),
            method: "POST".into(),
            content_type: "json".into(),
            body_template: format!(r#"{{"key":"{CANARY}","to":"{{to}}","text":"{{message}}"}}"#),
            to: vec!["+15551111111".into()],
            token: Some(Secret::new(CANARY)),
        },
        Channel::HttpSms {
            url: format!("{base}/sms?apikey={CANARY}"),
            method: "GET".into(),
            content_type: "form".into(),
            body_template: format!("key={CANARY}&to={{to}}&text={{message}}"),
            to: vec![],
            token: None,
        },
        // The bot token is in the URL path.
        Channel::Telegram {
            base_url: base.into(),
            bot_token: Secret::new(format!("123456:{CANARY}")),
            chat_id: "-1001234".into(),
        },
        Channel::Matrix {
            homeserver: base.into(),
            access_token: Secret::new(CANARY),
            room_id: "!ops:msp.example".into(),
        },
    ]
}

fn assert_no_canary(err: &DeliveryError, context: &str) {
    let shown = err.to_string();
    let debugged = format!("{err:?}");
    assert!(
        !shown.contains("CANARY"),
        "{context}: Display leaks: {shown}"
    );
    assert!(
        !debugged.contains("CANARY"),
        "{context}: Debug leaks: {debugged}"
    );
}

#[tokio::test]
async fn no_error_shows_a_secret_or_a_tokenized_url() {
    // Receivers that echo the request back, including its path and Authorization header.
    for status in [401, 500] {
        let mut sink = Sink::start(Reply::Echo(status)).await;
        for channel in canary_channels(&sink.base) {
            assert!(!format!("{channel:?}").contains("CANARY"), "{channel:?}");
            let err = deliver(&channel, &message(), &client()).await.unwrap_err();
            let context = format!("{} echoing {status}", channel.kind());
            assert_no_canary(&err, &context);
            assert!(err.to_string().contains(&status.to_string()), "{err}");
            // The canary really was on the wire (except inside Twilio's base64 basic auth),
            // so the echo did carry it and redaction is what removed it.
            let request = sink.next().await;
            if channel.kind() != "twilio_sms" {
                let wire = format!(
                    "{} {:?} {}",
                    request.uri,
                    request.headers,
                    String::from_utf8_lossy(&request.body)
                );
                assert!(wire.contains(CANARY), "{context}: {wire}");
            }
            while sink.requests.try_recv().is_ok() {}
        }
    }

    // Nobody listening.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    for channel in canary_channels(&closed) {
        let err = deliver(&channel, &message(), &client()).await.unwrap_err();
        assert_no_canary(&err, &format!("{} refused", channel.kind()));
    }

    // A receiver that never answers.
    let sink = Sink::start(Reply::Hang).await;
    let http = http_client(Duration::from_millis(200)).unwrap();
    for channel in canary_channels(&sink.base) {
        let err = deliver(&channel, &message(), &http).await.unwrap_err();
        assert_no_canary(&err, &format!("{} hanging", channel.kind()));
    }

    // An e-mail relay that quotes the password back in its rejection.
    let mut relay = SmtpSink::start(SmtpScript {
        auth_reply: format!("535 5.7.8 password {CANARY} rejected"),
        ..SmtpScript::default()
    })
    .await;
    let email = email_channel(relay.port, Some(Secret::new(CANARY)));
    assert!(!format!("{email:?}").contains("CANARY"));
    let err = deliver(&email, &message(), &client()).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("535"), "{err}");
    assert_no_canary(&err, "email");
    let session = relay.next().await;
    assert!(session
        .commands
        .iter()
        .any(|c| c.starts_with("AUTH PLAIN ")));
}

// ---------------------------------------------------------------------------------------------
// E-mail: a loopback SMTP sink
// ---------------------------------------------------------------------------------------------

/// What one SMTP client did.
#[derive(Debug, Default)]
struct SmtpSession {
    /// Every command line, CRLF removed.
    commands: Vec<String>,
    /// The DATA payload with dot-stuffing undone, CRLFs kept.
    data: Option<String>,
    /// Whether STARTTLS was completed.
    tls: bool,
}

struct SmtpScript {
    /// Offer STARTTLS with this server config.
    tls: Option<Arc<rustls::ServerConfig>>,
    auth_reply: String,
    rcpt_reply: String,
}

impl Default for SmtpScript {
    fn default() -> Self {
        SmtpScript {
            tls: None,
            auth_reply: "235 2.7.0 Authentication successful".into(),
            rcpt_reply: "250 2.1.5 Ok".into(),
        }
    }
}

struct SmtpSink {
    port: u16,
    sessions: mpsc::UnboundedReceiver<SmtpSession>,
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

impl SmtpSink {
    async fn start(script: SmtpScript) -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, sessions) = mpsc::unbounded_channel();
        let script = Arc::new(script);
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                let tx = tx.clone();
                let script = script.clone();
                tokio::spawn(async move {
                    let session = smtp_session(socket, &script).await;
                    let _ = tx.send(session);
                });
            }
        });
        SmtpSink { port, sessions }
    }

    async fn next(&mut self) -> SmtpSession {
        tokio::time::timeout(Duration::from_secs(5), self.sessions.recv())
            .await
            .expect("no SMTP session ended")
            .unwrap()
    }
}

async fn smtp_session(socket: TcpStream, script: &SmtpScript) -> SmtpSession {
    let mut session = SmtpSession::default();
    let mut stream: BufReader<Box<dyn Stream>> = BufReader::new(Box::new(socket));
    write(&mut stream, "220 sink.test ESMTP\r\n").await;
    loop {
        let Some(line) = read_line(&mut stream).await else {
            break;
        };
        let command = line.trim_end_matches(['\r', '\n']).to_owned();
        session.commands.push(command.clone());
        let upper = command.to_ascii_uppercase();
        if upper.starts_with("EHLO ") {
            let mut reply =
                String::from("250-sink.test\r\n250-8BITMIME\r\n250-AUTH PLAIN LOGIN\r\n");
            if script.tls.is_some() && !session.tls {
                reply.push_str("250-STARTTLS\r\n");
            }
            reply.push_str("250 SMTPUTF8\r\n");
            write(&mut stream, &reply).await;
        } else if upper == "STARTTLS" {
            write(&mut stream, "220 2.0.0 Ready to start TLS\r\n").await;
            let Some(config) = script.tls.clone() else {
                break;
            };
            let plain = stream.into_inner();
            let Ok(tls) = tokio_rustls::TlsAcceptor::from(config).accept(plain).await else {
                return session;
            };
            stream = BufReader::new(Box::new(tls));
            session.tls = true;
        } else if upper.starts_with("AUTH ") {
            write(&mut stream, &format!("{}\r\n", script.auth_reply)).await;
        } else if upper.starts_with("MAIL FROM:") {
            write(&mut stream, "250 2.1.0 Ok\r\n").await;
        } else if upper.starts_with("RCPT TO:") {
            write(&mut stream, &format!("{}\r\n", script.rcpt_reply)).await;
        } else if upper == "DATA" {
            write(&mut stream, "354 End data with <CR><LF>.<CR><LF>\r\n").await;
            let mut data = String::new();
            while let Some(line) = read_line(&mut stream).await {
                if line == ".\r\n" {
                    break;
                }
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
            }
            session.data = Some(data);
            write(&mut stream, "250 2.0.0 Ok: queued as 1\r\n").await;
        } else if upper == "QUIT" {
            write(&mut stream, "221 2.0.0 Bye\r\n").await;
            break;
        } else {
            write(&mut stream, "500 5.5.2 unrecognized\r\n").await;
        }
    }
    session
}

async fn read_line(stream: &mut BufReader<Box<dyn Stream>>) -> Option<String> {
    let mut line = Vec::new();
    match stream.read_until(b'\n', &mut line).await {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(String::from_utf8(line).unwrap()),
    }
}

async fn write(stream: &mut BufReader<Box<dyn Stream>>, text: &str) {
    let inner = stream.get_mut();
    let _ = inner.write_all(text.as_bytes()).await;
    let _ = inner.flush().await;
}

fn email_channel(port: u16, password: Option<Secret>) -> Channel {
    Channel::Email {
        relay_host: "127.0.0.1".into(),
        relay_port: port,
        tls: EmailTls::None,
        username: password.as_ref().map(|_| "alerts@msp.example".to_owned()),
        password,
        from: "alerts@msp.example".into(),
        to: vec!["oncall@msp.example".into(), "noc@msp.example".into()],
        extra_ca_pem: None,
    }
}

#[tokio::test]
async fn email_goes_through_a_loopback_relay_with_auth_plain() {
    let mut relay = SmtpSink::start(SmtpScript::default()).await;
    let channel = email_channel(relay.port, Some(Secret::new("hunter2-canary")));
    let message = Message {
        // A line starting with a dot must survive dot-stuffing.
        body: "EOP rejects ceo@contoso.com.\n.hidden line\nend".into(),
        ..message()
    };
    deliver(&channel, &message, &client()).await.unwrap();
    let session = relay.next().await;
    assert!(!session.tls);
    assert_eq!(
        session.commands,
        [
            "EHLO [127.0.0.1]",
            // base64("\0alerts@msp.example\0hunter2-canary")
            "AUTH PLAIN AGFsZXJ0c0Btc3AuZXhhbXBsZQBodW50ZXIyLWNhbmFyeQ==",
            "MAIL FROM:<alerts@msp.example>",
            "RCPT TO:<oncall@msp.example>",
            "RCPT TO:<noc@msp.example>",
            "DATA",
            "QUIT",
        ]
    );
    let expected = [
        "Date: Wed, 18 Nov 2026 11:11:40 +0000",
        "From: alerts@msp.example",
        "To: oncall@msp.example, noc@msp.example",
        "Subject: CRITICAL contoso: ceo@contoso.com is no longer accepted",
        "Message-ID: <tw.evt-42-r1@msp.example>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 7bit",
        "Auto-Submitted: auto-generated",
        "X-Tenantwatch-Kind: firing",
        "X-Tenantwatch-Severity: critical",
        "X-Tenantwatch-Tenant: contoso",
        "",
        "EOP rejects ceo@contoso.com.",
        ".hidden line",
        "end",
        "",
        LINK,
        "",
    ]
    .join("\r\n");
    assert_eq!(session.data.as_deref(), Some(expected.as_str()));
}

#[tokio::test]
async fn email_without_credentials_skips_auth() {
    let mut relay = SmtpSink::start(SmtpScript::default()).await;
    deliver(&email_channel(relay.port, None), &resolved(), &client())
        .await
        .unwrap();
    let session = relay.next().await;
    assert!(!session.commands.iter().any(|c| c.starts_with("AUTH")));
    let data = session.data.unwrap();
    assert!(data.contains("Subject: RESOLVED contoso: ceo@contoso.com is accepted again\r\n"));
    assert!(data.contains("Message-ID: <tw.evt-43-r1@msp.example>\r\n"));
    assert!(data.ends_with("\r\n\r\nEOP accepts ceo@contoso.com again.\r\n"));
}

#[tokio::test]
async fn email_upgrades_with_starttls_and_trusts_the_extra_ca() {
    let (ca_pem, server_config) = test_ca_and_server("127.0.0.1");
    let mut relay = SmtpSink::start(SmtpScript {
        tls: Some(server_config),
        ..SmtpScript::default()
    })
    .await;
    let channel = Channel::Email {
        relay_host: "127.0.0.1".into(),
        relay_port: relay.port,
        tls: EmailTls::StartTls,
        username: Some("alerts@msp.example".into()),
        password: Some(Secret::new("hunter2-canary")),
        from: "alerts@msp.example".into(),
        to: vec!["oncall@msp.example".into()],
        extra_ca_pem: Some(ca_pem),
    };
    let message = Message {
        title: "KRITISCH: Müller GmbH – ceo@müller.example".into(),
        body: "Grüße aus dem Monitor".into(),
        link: None,
        ..message()
    };
    deliver(&channel, &message, &client()).await.unwrap();
    let session = relay.next().await;
    assert!(session.tls, "the session was not upgraded");
    assert_eq!(session.commands[0], "EHLO [127.0.0.1]");
    assert_eq!(session.commands[1], "STARTTLS");
    assert_eq!(session.commands[2], "EHLO [127.0.0.1]");
    assert!(session.commands[3].starts_with("AUTH PLAIN "));
    // Non-ASCII body: 8BITMIME announced because the relay offers it.
    assert_eq!(
        session.commands[4],
        "MAIL FROM:<alerts@msp.example> BODY=8BITMIME"
    );
    let data = session.data.unwrap();
    assert!(
        data.contains("Content-Transfer-Encoding: 8bit\r\n"),
        "{data}"
    );
    // RFC 2047 words of at most 75 characters, folded onto a continuation line.
    assert!(
        data.contains(concat!(
            "Subject: =?UTF-8?Q?KRITISCH=3A_M=C3=BCller_GmbH_=E2=80=93_ceo=40m=C3=BCller=2Eexam?=\r\n",
            " =?UTF-8?Q?ple?=\r\n",
        )),
        "{data}"
    );
    assert!(
        data.ends_with("\r\n\r\nGrüße aus dem Monitor\r\n"),
        "{data}"
    );
}

#[tokio::test]
async fn email_refuses_a_relay_without_starttls_or_with_an_unknown_certificate() {
    // No STARTTLS offered while it is required: permanent, and no credentials were sent.
    let mut relay = SmtpSink::start(SmtpScript::default()).await;
    let mut channel = Channel::Email {
        relay_host: "127.0.0.1".into(),
        relay_port: relay.port,
        tls: EmailTls::StartTls,
        username: Some("alerts@msp.example".into()),
        password: Some(Secret::new("hunter2-canary")),
        from: "alerts@msp.example".into(),
        to: vec!["oncall@msp.example".into()],
        extra_ca_pem: None,
    };
    let err = deliver(&channel, &message(), &client()).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("STARTTLS"), "{err}");
    drop(relay.sessions.recv().await);

    // STARTTLS with a certificate from a CA nobody configured: permanent.
    let (_, server_config) = test_ca_and_server("127.0.0.1");
    let (other_ca_pem, _) = test_ca_and_server("127.0.0.1");
    relay = SmtpSink::start(SmtpScript {
        tls: Some(server_config),
        ..SmtpScript::default()
    })
    .await;
    if let Channel::Email {
        relay_port,
        extra_ca_pem,
        ..
    } = &mut channel
    {
        *relay_port = relay.port;
        *extra_ca_pem = Some(other_ca_pem);
    }
    let err = deliver(&channel, &message(), &client()).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("TLS handshake"), "{err}");
    let session = relay.next().await;
    assert!(!session.commands.iter().any(|c| c.starts_with("AUTH")));
}

#[tokio::test]
async fn email_replies_4xx_are_transient_5xx_permanent() {
    for (reply, transient) in [
        ("450 4.2.1 Mailbox busy", true),
        ("451 4.3.0 Try later", true),
        ("550 5.1.1 No such user", false),
        ("554 5.7.1 Relay access denied", false),
    ] {
        let mut relay = SmtpSink::start(SmtpScript {
            rcpt_reply: reply.into(),
            ..SmtpScript::default()
        })
        .await;
        let err = deliver(&email_channel(relay.port, None), &message(), &client())
            .await
            .unwrap_err();
        assert_eq!(err.is_transient(), transient, "{reply}: {err}");
        assert!(err.to_string().contains(&reply[..3]), "{err}");
        let session = relay.next().await;
        assert!(session.data.is_none());
    }
}

#[tokio::test]
async fn email_to_a_closed_port_or_a_silent_relay_is_transient() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let err = deliver(&email_channel(port, None), &message(), &client())
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");

    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let _socket = silent.accept().await.unwrap();
        std::future::pending::<()>().await;
    });
    let started = tokio::time::Instant::now();
    let err = deliver_with_smtp_timeout(
        &email_channel(port, None),
        &message(),
        &client(),
        Duration::from_millis(300),
    )
    .await
    .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// A throwaway CA (its PEM, for `extra_ca_pem`) and a server config whose leaf it signed.
fn test_ca_and_server(name: &str) -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tw-notify test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_params = CertificateParams::new(vec![name.to_owned()]).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)
    .unwrap();
    (ca_cert.pem(), Arc::new(config))
}
