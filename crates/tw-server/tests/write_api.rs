//! The state-changing API driven in-process against a real store: acknowledgements and
//! silences are written only with the token, their JSON shapes, and every refusal (bad
//! bodies, unknown tenants, impossible windows, nothing to acknowledge) in the API's error
//! shape.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;
use tw_core::{CheckKind, Evidence, Observation, Reason, Secret, TenantName, Timestamp};
use tw_server::{router, ApiAuth, Health, Metrics, ServerState};
use tw_store::{AlertStateRow, AlertWrites, RecordPolicy, Store};

const ADMIN: &str = "admin@contoso.example";
const SALES: &str = "sales@contoso.example";
const TOKEN: &str = "write-token-5d1e";
const BEARER: &str = "Bearer write-token-5d1e";

fn observation(target: &str, reason: Reason, at: Timestamp) -> Observation {
    Observation {
        tenant: TenantName::parse("contoso").unwrap(),
        check: CheckKind::SmtpRcpt,
        target: target.to_owned(),
        scheduled_for: at,
        started_at: at,
        elapsed: Duration::from_millis(40),
        status: reason.status(),
        reason,
        summary: reason.as_str().to_owned(),
        evidence: Evidence::None,
    }
}

struct Fixture {
    state: ServerState,
    _dir: tempfile::TempDir,
}

/// contoso, configured with two watched addresses: admin firing (critical, episode 1), sales
/// evaluated but ok.
async fn fixture(auth: ApiAuth) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("tenantwatch.db"))
        .await
        .unwrap();
    let metrics = Arc::new(Metrics::new("0.0.0-test").unwrap());
    metrics.set_targets([
        ("contoso".into(), "smtp_rcpt".into(), ADMIN.into()),
        ("contoso".into(), "smtp_rcpt".into(), SALES.into()),
    ]);
    let rules = tw_alert::Rules::defaults();
    let now = Timestamp::now();
    let mut admin = tw_alert::AlertState::default();
    let mut sales = tw_alert::AlertState::default();
    for (i, at) in [
        now.minus(Duration::from_secs(120)),
        now.minus(Duration::from_secs(60)),
    ]
    .into_iter()
    .enumerate()
    {
        let batch = [
            observation(ADMIN, Reason::RecipientNotFound, at),
            observation(SALES, Reason::RecipientAccepted, at),
        ];
        admin = tw_alert::evaluate(&admin, &batch[0], &rules, at).0;
        sales = tw_alert::evaluate(&sales, &batch[1], &rules, at).0;
        let mut writes = AlertWrites::default();
        for (target, state) in [(ADMIN, &admin), (SALES, &sales)] {
            writes.states.push(AlertStateRow {
                tenant: "contoso".into(),
                check: CheckKind::SmtpRcpt,
                target: target.into(),
                state_json: serde_json::to_string(state).unwrap(),
            });
        }
        store
            .record_with_alerts(
                &batch,
                RecordPolicy {
                    ok_sample_interval: Duration::from_secs(3_600),
                },
                &writes,
            )
            .await
            .unwrap();
        assert_eq!(admin.is_firing(), i == 1);
    }
    let state = ServerState {
        metrics,
        health: Arc::new(Health::default()),
        before_scrape: None,
        store,
        auth: Arc::new(auth),
    };
    Fixture { state, _dir: dir }
}

fn with_token() -> ApiAuth {
    ApiAuth::new(Some(&Secret::new(TOKEN)), false)
}

async fn call(
    state: &ServerState,
    method: Method,
    path: &str,
    authorization: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, HeaderMap, Value) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    let request = match body {
        Some(body) => request
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string())),
        None => request.body(Body::empty()),
    }
    .unwrap();
    let response = router(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, value)
}

fn silence_body() -> Value {
    json!({
        "tenant": "contoso",
        "check": "smtp_rcpt",
        "duration_seconds": 7200,
        "reason": "mailbox migration",
        "by": "alice"
    })
}

#[tokio::test]
async fn writes_need_the_token_and_are_refused_when_none_is_configured() {
    let fixture = fixture(with_token()).await;
    let state = &fixture.state;
    for authorization in [None, Some("Bearer not-the-token")] {
        let (status, headers, body) = call(
            state,
            Method::POST,
            "/api/v1/silences",
            authorization,
            Some(silence_body()),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(body["error"].is_string(), "{body}");
        assert!(headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
    }
    let (status, _, _) = call(
        state,
        Method::POST,
        "/api/v1/acks",
        None,
        Some(json!({"tenant": "contoso", "check": "smtp_rcpt", "target": ADMIN})),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = call(state, Method::DELETE, "/api/v1/silences/1", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Listing is a read: open here.
    let (status, _, body) = call(state, Method::GET, "/api/v1/silences", None, None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"silences": []})));
    // Nothing was written by the refused requests.
    assert!(state
        .store
        .silences(Timestamp::now(), true)
        .await
        .unwrap()
        .is_empty());
    assert!(state.store.acks_after(0).await.unwrap().is_empty());

    let open = fixture_open().await;
    let (status, _, body) = call(
        &open.state,
        Method::POST,
        "/api/v1/silences",
        Some(BEARER),
        Some(silence_body()),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

async fn fixture_open() -> Fixture {
    fixture(ApiAuth::open()).await
}

#[tokio::test]
async fn a_silence_is_added_listed_and_removed() {
    let fixture = fixture(with_token()).await;
    let state = &fixture.state;
    let (status, headers, created) = call(
        state,
        Method::POST,
        "/api/v1/silences",
        Some(BEARER),
        Some(silence_body()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_i64().unwrap();
    assert_eq!(
        headers[header::LOCATION].to_str().unwrap(),
        format!("/api/v1/silences/{id}")
    );
    assert_eq!(
        (
            created["tenant"].as_str(),
            created["check"].as_str(),
            created["target"].is_null(),
            created["state"].as_str(),
            created["created_by"].as_str(),
            created["reason"].as_str()
        ),
        (
            Some("contoso"),
            Some("smtp_rcpt"),
            true,
            Some("active"),
            Some("alice"),
            Some("mailbox migration")
        )
    );
    let start = Timestamp::parse_utc(created["start"].as_str().unwrap()).unwrap();
    let end = Timestamp::parse_utc(created["end"].as_str().unwrap()).unwrap();
    assert_eq!(end.millis_since(start), 7_200_000);
    // The store holds what the daemon will read.
    let stored = state.store.silences(Timestamp::now(), false).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert!(stored[0].matches("contoso", CheckKind::SmtpRcpt, ADMIN, Timestamp::now()));

    // An upcoming one by end time, without a check.
    let later = Timestamp::now().plus(Duration::from_secs(86_400));
    let (status, _, upcoming) = call(
        state,
        Method::POST,
        "/api/v1/silences",
        Some(BEARER),
        Some(json!({
            "tenant": "contoso",
            "target": SALES,
            "start": later.to_string(),
            "end": later.plus(Duration::from_secs(3_600)).to_string(),
            "reason": "planned maintenance"
        })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{upcoming}");
    assert_eq!(
        (upcoming["state"].as_str(), upcoming["created_by"].as_str()),
        (Some("upcoming"), Some("api"))
    );

    let (status, _, list) = call(state, Method::GET, "/api/v1/silences", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["silences"].as_array().unwrap().len(), 2);

    let (status, _, removed) = call(
        state,
        Method::DELETE,
        &format!("/api/v1/silences/{id}?by=bob"),
        Some(BEARER),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{removed}");
    assert_eq!(
        (removed["state"].as_str(), removed["removed_by"].as_str()),
        (Some("removed"), Some("bob"))
    );
    // Removing again answers with the earlier removal.
    let (status, _, again) = call(
        state,
        Method::DELETE,
        &format!("/api/v1/silences/{id}?by=carol"),
        Some(BEARER),
        None,
    )
    .await;
    assert_eq!(
        (status, again["removed_by"].as_str()),
        (StatusCode::OK, Some("bob"))
    );
    let (status, _, missing) = call(
        state,
        Method::DELETE,
        "/api/v1/silences/999",
        Some(BEARER),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");

    let (_, _, list) = call(state, Method::GET, "/api/v1/silences", None, None).await;
    assert_eq!(
        list["silences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["state"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["upcoming"]
    );
    let (_, _, all) = call(state, Method::GET, "/api/v1/silences?all=true", None, None).await;
    assert_eq!(all["silences"].as_array().unwrap().len(), 2);
    let (status, _, _) = call(state, Method::GET, "/api/v1/silences?al=true", None, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn impossible_silences_are_refused_with_the_reason() {
    let fixture = fixture(with_token()).await;
    let state = &fixture.state;
    let past = Timestamp::now().minus(Duration::from_secs(60)).to_string();
    let cases = [
        (
            json!({"tenant": "fabrikam", "duration_seconds": 60, "reason": "x"}),
            "no tenant named \"fabrikam\"",
        ),
        (
            json!({"tenant": "contoso", "check": "smtp", "duration_seconds": 60, "reason": "x"}),
            "check:",
        ),
        (
            json!({"tenant": "contoso", "reason": "x"}),
            "give end or duration_seconds",
        ),
        (
            json!({"tenant": "contoso", "end": past, "duration_seconds": 60, "reason": "x"}),
            "give end or duration_seconds",
        ),
        (
            json!({"tenant": "contoso", "end": past, "reason": "x"}),
            "must end after it starts and after now",
        ),
        (
            json!({"tenant": "contoso", "end": "tomorrow", "reason": "x"}),
            "end: \"tomorrow\" is not a UTC time",
        ),
        (
            json!({"tenant": "contoso", "duration_seconds": 100 * 86_400, "reason": "x"}),
            "at most 90 days",
        ),
        (
            json!({"tenant": "contoso", "duration_seconds": 60, "reason": " "}),
            "reason: say why",
        ),
        (
            json!({"tenant": "contoso", "duration_seconds": 60, "reason": "x", "until": "later"}),
            "unknown field `until`",
        ),
    ];
    for (body, expected) in cases {
        let (status, _, answer) = call(
            state,
            Method::POST,
            "/api/v1/silences",
            Some(BEARER),
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(expected), "{body}: {error}");
    }
    // A form post (what a cross-site page could send) is refused before it is read.
    let request = Request::post("/api/v1/silences")
        .header(header::AUTHORIZATION, BEARER)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("tenant=contoso&duration_seconds=60&reason=x"))
        .unwrap();
    let response = router(state.clone()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(state
        .store
        .silences(Timestamp::now(), true)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_firing_alert_is_acknowledged_once_per_episode() {
    let fixture = fixture(with_token()).await;
    let state = &fixture.state;
    let ack = |target: &str| json!({"tenant": "contoso", "check": "smtp_rcpt", "target": target, "comment": "ticket 4711", "by": "alice"});
    let (status, _, created) = call(
        state,
        Method::POST,
        "/api/v1/acks",
        Some(BEARER),
        Some(ack("Admin@Contoso.example")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        (
            created["target"].as_str(),
            created["episode"].as_u64(),
            created["acked_by"].as_str(),
            created["comment"].as_str(),
            created["already"].as_bool()
        ),
        (
            Some(ADMIN),
            Some(1),
            Some("alice"),
            Some("ticket 4711"),
            Some(false)
        )
    );
    let (status, _, again) = call(
        state,
        Method::POST,
        "/api/v1/acks",
        Some(BEARER),
        Some(ack(ADMIN)),
    )
    .await;
    assert_eq!(
        (
            status,
            again["already"].as_bool(),
            again["acked_by"].as_str()
        ),
        (StatusCode::OK, Some(true), Some("alice"))
    );
    let stored = state.store.acks_after(0).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!((stored[0].target.as_str(), stored[0].episode), (ADMIN, 1));

    // Evaluated but not firing: nothing to acknowledge.
    let (status, _, body) = call(
        state,
        Method::POST,
        "/api/v1/acks",
        Some(BEARER),
        Some(ack(SALES)),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["error"].as_str().unwrap().contains("not firing"));
    // Never evaluated.
    let (status, _, body) = call(
        state,
        Method::POST,
        "/api/v1/acks",
        Some(BEARER),
        Some(ack("nobody@contoso.example")),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _, body) = call(
        state,
        Method::POST,
        "/api/v1/acks",
        Some(BEARER),
        Some(json!({"tenant": "contoso", "check": "nope", "target": ADMIN})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(state.store.acks_after(0).await.unwrap().len(), 1);
}
