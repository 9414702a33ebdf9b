//! The router driven in-process: what a scraper sees on /metrics, /healthz and /readyz.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;
use tw_core::{
    CheckKind, Evidence, HttpEvidence, Observation, RcptVerdict, Reason, SmtpEvidence, TenantName,
    Timestamp,
};
use tw_server::{router, ApiAuth, Health, Metrics, ServerState};
use tw_store::Store;

fn observation(target: &str, reason: Reason, code: u16) -> Observation {
    Observation {
        tenant: TenantName::parse("contoso").unwrap(),
        check: CheckKind::SmtpRcpt,
        target: target.to_owned(),
        scheduled_for: Timestamp(1_795_000_000_000),
        started_at: Timestamp(1_795_000_000_250),
        elapsed: Duration::from_millis(120),
        status: reason.status(),
        reason,
        summary: String::new(),
        evidence: Evidence::SmtpRcpt(SmtpEvidence {
            rcpt: vec![RcptVerdict {
                address: target.to_owned(),
                control: false,
                code: Some(code),
                enhanced: None,
                text: String::new(),
            }],
            ..SmtpEvidence::default()
        }),
    }
}

fn key(target: &str) -> (String, String, String) {
    ("contoso".into(), "smtp_rcpt".into(), target.into())
}

async fn get(state: &ServerState, path: &str) -> (StatusCode, String) {
    let response = router(state.clone())
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// A state on a fresh database; the directory lives as long as the returned guard.
async fn state() -> (ServerState, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("tenantwatch.db"))
        .await
        .unwrap();
    let state = ServerState {
        metrics: Arc::new(Metrics::new("0.0.0-test").unwrap()),
        health: Arc::new(Health::default()),
        before_scrape: None,
        store,
        auth: Arc::new(ApiAuth::open()),
    };
    (state, dir)
}

#[tokio::test]
async fn metrics_show_configured_targets_and_drop_removed_ones() {
    let (state, _dir) = state().await;
    state
        .metrics
        .set_targets([key("admin@contoso.example"), key("it@contoso.example")]);
    assert!(state.metrics.observe(&observation(
        "admin@contoso.example",
        Reason::RecipientAccepted,
        250
    )));
    assert!(!state.metrics.observe(&observation(
        "admin@contoso.example",
        Reason::RecipientAccepted,
        250
    )));
    assert!(state.metrics.observe(&observation(
        "admin@contoso.example",
        Reason::RecipientNotFound,
        550
    )));

    let (status, body) = get(&state, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("tenantwatch_check_status{check=\"smtp_rcpt\",target=\"admin@contoso.example\",tenant=\"contoso\"} 2\n"), "{body}");
    assert!(body.contains("tenantwatch_smtp_rcpt_reply_code{target=\"admin@contoso.example\",tenant=\"contoso\"} 550\n"));
    assert!(body.contains("tenantwatch_probe_runs_total{check=\"smtp_rcpt\",reason=\"recipient_not_found\",status=\"critical\"} 1\n"));
    assert!(body.contains("tenantwatch_probe_runs_total{check=\"dns\",reason=\"dns_records_ok\",status=\"ok\"} 0\n"), "run counters are pre-created");
    assert!(body.contains("tenantwatch_build_info{version=\"0.0.0-test\"} 1\n"));

    // A reload removes admin@: its series go, and a late run of it does not bring them back.
    state.metrics.set_targets([key("it@contoso.example")]);
    assert!(!state.metrics.observe(&observation(
        "admin@contoso.example",
        Reason::RecipientNotFound,
        550
    )));
    let (_, body) = get(&state, "/metrics").await;
    assert!(!body.contains("target=\"admin@contoso.example\""), "{body}");
    assert!(body.contains("tenantwatch_probe_runs_total{check=\"smtp_rcpt\",reason=\"recipient_not_found\",status=\"critical\"} 2\n"));
}

#[tokio::test]
async fn readyz_lists_every_reason_it_is_not_ready() {
    let (state, _dir) = state().await;
    assert_eq!(
        get(&state, "/healthz").await,
        (StatusCode::OK, "ok\n".into())
    );
    let (status, body) = get(&state, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.contains("database migrations not applied yet")
            && body.contains("scheduler not running yet"),
        "{body}"
    );

    state.health.set_migrated();
    state.health.set_scheduling();
    assert_eq!(
        get(&state, "/readyz").await,
        (StatusCode::OK, "ready\n".into())
    );

    state
        .health
        .set_store_error(Some("database unavailable: database is locked".into()));
    let (status, body) = get(&state, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.contains("store not writable: database unavailable: database is locked"),
        "{body}"
    );

    state.health.set_store_error(None);
    state.health.set_stopping();
    let (status, body) = get(&state, "/readyz").await;
    assert_eq!(
        (status, body.contains("shutting down")),
        (StatusCode::SERVICE_UNAVAILABLE, true)
    );
}

fn http_observation(
    check: CheckKind,
    target: &str,
    reason: Reason,
    facts: &[(&str, &str)],
) -> Observation {
    Observation {
        check,
        evidence: Evidence::Http(HttpEvidence {
            facts: facts
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..HttpEvidence::default()
        }),
        ..observation(target, reason, 0)
    }
}

#[tokio::test]
async fn http_check_facts_become_gauges_and_leave_with_their_target() {
    let (state, _dir) = state().await;
    let keys = [
        ("contoso".into(), "admins".into(), "contoso".into()),
        ("contoso".into(), "health".into(), "contoso".into()),
        ("contoso".into(), "domain".into(), "contoso.com".into()),
        ("contoso".into(), "licence".into(), "contoso".into()),
    ];
    state.metrics.set_targets(keys.clone());
    state.metrics.observe(&http_observation(
        CheckKind::Admins,
        "contoso",
        Reason::SingleAdmin,
        &[("admin_count", "1")],
    ));
    state.metrics.observe(&http_observation(
        CheckKind::Health,
        "contoso",
        Reason::ServiceIssueReported,
        &[
            ("service.Exchange", "ServiceDegradation"),
            ("service.OrgLiveID", "serviceOperational"),
            ("service.SharePoint", "serviceInterruption"),
        ],
    ));
    state.metrics.observe(&http_observation(
        CheckKind::Domain,
        "contoso.com",
        Reason::RegistrationExpiring,
        &[("days_left", "21"), ("registrar", "Example Registrar LLC")],
    ));
    state.metrics.observe(&http_observation(
        CheckKind::Licence,
        "contoso",
        Reason::RenewalDue,
        &[
            ("subscription.a.days_left", "40"),
            ("subscription.b.days_left", "6"),
        ],
    ));
    let (_, body) = get(&state, "/metrics").await;
    for line in [
        r#"tenantwatch_global_admins{tenant="contoso"} 1"#,
        r#"tenantwatch_service_health{service="Exchange",tenant="contoso"} 1"#,
        r#"tenantwatch_service_health{service="OrgLiveID",tenant="contoso"} 0"#,
        r#"tenantwatch_expiry_days{check="domain",target="contoso.com",tenant="contoso"} 21"#,
        r#"tenantwatch_expiry_days{check="licence",target="contoso",tenant="contoso"} 6"#,
    ] {
        assert!(body.contains(line), "missing {line} in\n{body}");
    }
    // Only the two services that matter are exported.
    assert!(!body.contains("SharePoint"), "{body}");

    state.metrics.set_targets(Vec::new());
    let (_, body) = get(&state, "/metrics").await;
    for family in [
        "tenantwatch_global_admins{",
        "tenantwatch_service_health{",
        "tenantwatch_expiry_days{",
    ] {
        assert!(!body.contains(family), "{family} left behind:\n{body}");
    }
}
