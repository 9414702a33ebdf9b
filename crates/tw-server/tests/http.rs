//! The status page and the JSON API driven in-process against a real store: status codes,
//! JSON shapes, paging, the API token, security headers, and HTML escaping of what a hostile
//! MX put into its replies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;
use tw_core::Secret;
use tw_core::{
    CheckKind, Direction, DnsEvidence, Evidence, HttpEvidence, HttpExchange, Observation,
    RcptVerdict, Reason, SmtpEvidence, TenantName, Timestamp, TranscriptLine,
};
use tw_server::{router, ApiAuth, Health, Metrics, ServerState};
use tw_store::{AlertStateRow, AlertWrites, RecordPolicy, Store};

const T0: i64 = 1_795_000_000_000;
const MINUTE: i64 = 60_000;
const ADMIN: &str = "admin@contoso.example";
const HOSTILE: &str =
    "550 5.1.1 <script>alert('pwned')</script> \"><img src=x onerror=alert(1)> User unknown";
const TOKEN: &str = "api-token-3b9f1c";
const POLICY: RecordPolicy = RecordPolicy {
    ok_sample_interval: Duration::from_secs(3_600),
};

fn observation(
    tenant: &str,
    check: CheckKind,
    target: &str,
    reason: Reason,
    at: i64,
) -> Observation {
    let evidence = match check {
        CheckKind::SmtpRcpt => Evidence::SmtpRcpt(SmtpEvidence {
            mx_host: Some("contoso-example.mail.protection.outlook.com".into()),
            peer: Some("127.0.0.1:2525".into()),
            tls: None,
            transcript: vec![
                TranscriptLine {
                    at_ms: 0,
                    direction: Direction::Server,
                    line: "220 <b>evil</b> banner".into(),
                },
                TranscriptLine {
                    at_ms: 12,
                    direction: Direction::Client,
                    line: format!("RCPT TO:<{target}>"),
                },
                TranscriptLine {
                    at_ms: 30,
                    direction: Direction::Server,
                    line: HOSTILE.into(),
                },
            ],
            rcpt: vec![RcptVerdict {
                address: target.to_owned(),
                control: false,
                code: Some(550),
                enhanced: Some("5.1.1".into()),
                text: HOSTILE.into(),
            }],
        }),
        CheckKind::Identity => Evidence::Http(HttpEvidence {
            exchanges: vec![HttpExchange {
                method: "GET".into(),
                url: "https://graph.microsoft.com/v1.0/users/87d349ed".into(),
                status: Some(404),
                elapsed_ms: 41,
                client_request_id: Some("c1d2-client".into()),
                request_id: Some("r-9a8b-graph".into()),
                error_code: Some("Request_ResourceNotFound".into()),
                ..HttpExchange::default()
            }],
            ..HttpEvidence::default()
        }),
        _ => Evidence::Dns(DnsEvidence {
            domain: target.to_owned(),
            records: BTreeMap::from([(
                "mx".to_owned(),
                vec!["0 contoso-example.mail.protection.outlook.com".to_owned()],
            )]),
            ..DnsEvidence::default()
        }),
    };
    Observation {
        tenant: TenantName::parse(tenant).unwrap(),
        check,
        target: target.to_owned(),
        scheduled_for: Timestamp(at),
        started_at: Timestamp(at),
        elapsed: Duration::from_millis(42),
        status: reason.status(),
        reason,
        summary: format!("{} for {target}", reason.as_str()),
        evidence,
    }
}

struct Fixture {
    state: ServerState,
    _dir: tempfile::TempDir,
}

/// contoso: admin critical at RCPT (firing alert) and in Graph, DNS ok, and a removed target
/// still critical in the store; fabrikam: DNS warning, one watched address never probed;
/// northwind: configured, never probed.
async fn fixture(auth: ApiAuth) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("tenantwatch.db"))
        .await
        .unwrap();
    let metrics = Arc::new(Metrics::new("0.0.0-test").unwrap());
    let key = |tenant: &str, check: CheckKind, target: &str| {
        (
            tenant.to_owned(),
            check.as_str().to_owned(),
            target.to_owned(),
        )
    };
    metrics.set_targets([
        key("contoso", CheckKind::SmtpRcpt, ADMIN),
        key("contoso", CheckKind::Dns, "contoso.example"),
        key("contoso", CheckKind::Identity, ADMIN),
        key("fabrikam", CheckKind::Dns, "fabrikam.example"),
        key("fabrikam", CheckKind::SmtpRcpt, "it@fabrikam.example"),
        key("northwind", CheckKind::Dns, "northwind.example"),
    ]);
    let mut batches = vec![vec![
        observation(
            "contoso",
            CheckKind::SmtpRcpt,
            ADMIN,
            Reason::RecipientAccepted,
            T0,
        ),
        observation(
            "contoso",
            CheckKind::Dns,
            "contoso.example",
            Reason::DnsRecordsOk,
            T0,
        ),
        observation(
            "contoso",
            CheckKind::Identity,
            ADMIN,
            Reason::IdentityOk,
            T0,
        ),
        observation(
            "contoso",
            CheckKind::SmtpRcpt,
            "old@contoso.example",
            Reason::RecipientNotFound,
            T0,
        ),
        observation(
            "fabrikam",
            CheckKind::Dns,
            "fabrikam.example",
            Reason::DmarcMissing,
            T0,
        ),
    ]];
    for minute in 1..=3 {
        batches.push(vec![
            observation(
                "contoso",
                CheckKind::SmtpRcpt,
                ADMIN,
                Reason::RecipientNotFound,
                T0 + minute * MINUTE,
            ),
            observation(
                "contoso",
                CheckKind::Identity,
                ADMIN,
                Reason::IdentityDeleted,
                T0 + minute * MINUTE,
            ),
        ]);
    }
    let rules = tw_alert::Rules::defaults();
    let mut alert = tw_alert::AlertState::default();
    for batch in batches {
        for o in &batch {
            metrics.observe(o);
        }
        let mut writes = AlertWrites::default();
        for o in batch
            .iter()
            .filter(|o| o.target == ADMIN && o.check == CheckKind::SmtpRcpt)
        {
            alert = tw_alert::evaluate(&alert, o, &rules, o.started_at).0;
            writes.states.push(AlertStateRow {
                tenant: "contoso".into(),
                check: CheckKind::SmtpRcpt,
                target: ADMIN.into(),
                state_json: serde_json::to_string(&alert).unwrap(),
            });
        }
        store
            .record_with_alerts(&batch, POLICY, &writes)
            .await
            .unwrap();
    }
    assert!(alert.is_firing(), "the fixture's alert should be firing");
    let state = ServerState {
        metrics,
        health: Arc::new(Health::default()),
        before_scrape: None,
        store,
        auth: Arc::new(auth),
    };
    Fixture { state, _dir: dir }
}

async fn send(
    state: &ServerState,
    path: &str,
    authorization: Option<&str>,
) -> (StatusCode, HeaderMap, String) {
    let mut request = Request::get(path);
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    let response = router(state.clone())
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 16 << 20)
        .await
        .unwrap();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

async fn get(state: &ServerState, path: &str) -> (StatusCode, HeaderMap, String) {
    send(state, path, None).await
}

async fn json(state: &ServerState, path: &str) -> Value {
    let (status, headers, body) = get(state, path).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    assert_eq!(headers[header::CONTENT_TYPE], "application/json", "{path}");
    serde_json::from_str(&body).unwrap()
}

/// Every tag that opens with `<{tag} `, as attribute name → value (values unescaped only for
/// the entities the page writes).
fn tags(html: &str, tag: &str) -> Vec<BTreeMap<String, String>> {
    let open = format!("<{tag} ");
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let end = after.find('>').unwrap();
        let mut attrs = BTreeMap::new();
        let mut text = &after[..end];
        while let Some(eq) = text.find("=\"") {
            let name = text[..eq].trim().to_owned();
            let value_start = eq + 2;
            let close = text[value_start..].find('"').unwrap();
            let value = text[value_start..value_start + close]
                .replace("&quot;", "\"")
                .replace("&#39;", "'")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&");
            attrs.insert(name, value);
            text = &text[value_start + close + 1..];
        }
        found.push(attrs);
        rest = &after[end..];
    }
    found
}

fn grid_cells(html: &str) -> BTreeMap<(String, String), String> {
    tags(html, "td")
        .into_iter()
        .filter(|attrs| attrs.contains_key("data-check") && attrs.contains_key("data-tenant"))
        .map(|attrs| {
            (
                (attrs["data-tenant"].clone(), attrs["data-check"].clone()),
                attrs["data-status"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_grid_shows_each_configured_tenant_and_check_in_its_colour() {
    let fixture = fixture(ApiAuth::open()).await;
    let (status, headers, body) = get(&fixture.state, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("style-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(
        !csp.contains("script-src"),
        "scripts fall back to default-src 'none': {csp}"
    );
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert!(!body.contains("<script"), "no script on the page");
    assert!(
        !body.contains("style=\""),
        "no inline style, the CSP forbids it"
    );

    let cells = grid_cells(&body);
    let expected: BTreeMap<(String, String), String> = [
        ("contoso", "dns", "ok"),
        ("contoso", "smtp_rcpt", "critical"),
        ("contoso", "identity", "critical"),
        ("fabrikam", "dns", "warning"),
        // Configured, never probed.
        ("fabrikam", "smtp_rcpt", "pending"),
        ("fabrikam", "identity", "none"),
        ("northwind", "dns", "pending"),
        ("northwind", "smtp_rcpt", "none"),
        ("northwind", "identity", "none"),
    ]
    .into_iter()
    .map(|(t, c, s)| ((t.to_owned(), c.to_owned()), s.to_owned()))
    .collect();
    assert_eq!(cells, expected);
    // Columns follow CheckKind::ALL order.
    let dns = body.find("<th>dns</th>").unwrap();
    let smtp = body.find("<th>smtp_rcpt</th>").unwrap();
    let identity = body.find("<th>identity</th>").unwrap();
    assert!(dns < smtp && smtp < identity);
    // The cell names its reason and the row links to the tenant page.
    assert!(
        body.contains("<span class=\"why\">recipient_not_found</span>"),
        "{body}"
    );
    assert!(body.contains("href=\"/tenants/contoso\""));

    // The summary counts configured targets only: the removed old@ is not among the critical.
    let summary: BTreeMap<String, String> = tags(&body, "span")
        .into_iter()
        .filter(|attrs| attrs.contains_key("data-count"))
        .map(|attrs| (attrs["data-status"].clone(), attrs["data-count"].clone()))
        .collect();
    assert_eq!(
        summary,
        BTreeMap::from([
            ("critical".into(), "2".into()),
            ("warning".into(), "1".into()),
            ("unknown".into(), "0".into()),
            ("ok".into(), "1".into()),
            ("pending".into(), "2".into()),
        ])
    );
    // The problems list, worst first, leaves out the removed target too.
    let problems: Vec<(String, String, String)> = tags(&body, "tr")
        .into_iter()
        .filter(|attrs| attrs.contains_key("data-target"))
        .map(|attrs| {
            (
                attrs["data-check"].clone(),
                attrs["data-target"].clone(),
                attrs["data-status"].clone(),
            )
        })
        .collect();
    assert_eq!(
        problems,
        [
            ("identity".into(), ADMIN.into(), "critical".into()),
            ("smtp_rcpt".into(), ADMIN.into(), "critical".into()),
            ("dns".into(), "fabrikam.example".into(), "warning".into()),
        ]
    );
}

#[tokio::test]
async fn the_grid_pages_by_tenant_and_refuses_bad_parameters() {
    let fixture = fixture(ApiAuth::open()).await;
    let (status, _, first) = get(&fixture.state, "/?limit=2").await;
    assert_eq!(status, StatusCode::OK);
    let tenants: Vec<String> = tags(&first, "tr")
        .into_iter()
        .filter(|attrs| attrs.len() == 2 && attrs.contains_key("data-tenant"))
        .map(|attrs| attrs["data-tenant"].clone())
        .collect();
    assert_eq!(tenants, ["contoso", "fabrikam"]);
    assert!(
        first.contains("href=\"/?after=fabrikam&amp;limit=2\""),
        "{first}"
    );
    let (_, _, second) = get(&fixture.state, "/?after=fabrikam&limit=2").await;
    let cells = grid_cells(&second);
    assert!(
        cells.keys().all(|(tenant, _)| tenant == "northwind"),
        "{cells:?}"
    );
    assert!(!second.contains("after="), "no next link on the last page");

    for bad in ["/?limit=0", "/?limit=x", "/?page=2", "/?after=a&after=b"] {
        let (status, headers, body) = get(&fixture.state, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    }
}

#[tokio::test]
async fn the_tenant_page_shows_states_alerts_and_escaped_evidence() {
    let fixture = fixture(ApiAuth::open()).await;
    let (status, headers, body) = get(&fixture.state, "/tenants/contoso").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));

    // The hostile reply is shown as text, never as markup.
    assert!(!body.contains("<script"), "{body}");
    assert!(!body.contains("<img"), "{body}");
    assert!(!body.contains("<b>evil"), "{body}");
    assert!(
        body.contains("&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt; &quot;&gt;&lt;img src=x onerror=alert(1)&gt;"),
        "{body}"
    );
    assert!(body.contains("&lt;b&gt;evil&lt;/b&gt; banner"));
    // Reply codes and Graph ids are there for a support case.
    assert!(body.contains("<td>550</td><td>5.1.1</td>"), "{body}");
    assert!(body.contains("r-9a8b-graph") && body.contains("c1d2-client"));
    assert!(body.contains("Request_ResourceNotFound"));

    let rows: Vec<(String, String, String)> = tags(&body, "tr")
        .into_iter()
        .filter(|attrs| attrs.contains_key("data-target"))
        .map(|attrs| {
            (
                attrs["data-check"].clone(),
                attrs["data-target"].clone(),
                attrs["data-status"].clone(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("dns".into(), "contoso.example".into(), "ok".into()),
            ("identity".into(), ADMIN.into(), "critical".into()),
            ("smtp_rcpt".into(), ADMIN.into(), "critical".into()),
            (
                "smtp_rcpt".into(),
                "old@contoso.example".into(),
                "critical".into()
            ),
        ]
    );
    assert!(body.contains("(no longer configured)"));
    assert!(
        body.contains("<span class=\"alert\""),
        "the firing alert is shown: {body}"
    );
    assert!(body.contains(">firing (critical)</span>"), "{body}");

    // 4 + 4 + 1 + 1 stored observations, newest first, each with its evidence.
    let observations = tags(&body, "article");
    assert_eq!(observations.len(), 10, "{body}");
    let ids: Vec<i64> = observations
        .iter()
        .map(|attrs| attrs["data-observation"].parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|pair| pair[0] > pair[1]), "{ids:?}");
}

#[tokio::test]
async fn the_tenant_page_pages_filters_and_answers_404_for_strangers() {
    let fixture = fixture(ApiAuth::open()).await;
    let (_, _, first) = get(&fixture.state, "/tenants/contoso?check=smtp_rcpt&limit=3").await;
    let first_ids: Vec<String> = tags(&first, "article")
        .into_iter()
        .map(|attrs| {
            assert_eq!(attrs["data-check"], "smtp_rcpt");
            attrs["data-observation"].clone()
        })
        .collect();
    assert_eq!(first_ids.len(), 3);
    let next = tags(&first, "a")
        .into_iter()
        .find_map(|attrs| {
            attrs
                .get("href")
                .filter(|href| href.contains("before="))
                .cloned()
        })
        .expect("an older-observations link");
    assert!(next.contains("check=smtp_rcpt"), "{next}");
    let (_, _, second) = get(&fixture.state, &next).await;
    let second_ids: Vec<String> = tags(&second, "article")
        .into_iter()
        .map(|attrs| attrs["data-observation"].clone())
        .collect();
    assert_eq!(second_ids.len(), 2, "5 smtp_rcpt observations in all");
    assert!(second_ids.iter().all(|id| !first_ids.contains(id)));

    let (_, _, changes) = get(&fixture.state, "/tenants/contoso?changes_only=true").await;
    assert_eq!(
        tags(&changes, "article").len(),
        6,
        "first sightings and changes only"
    );

    let (status, _, body) = get(&fixture.state, "/tenants/nobody").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    // A configured tenant with no data yet has a page.
    let (status, _, body) = get(&fixture.state, "/tenants/northwind").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("No verdict yet: dns"), "{body}");
    let (status, _, _) = get(&fixture.state, "/tenants/contoso?before=garbage").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_stylesheet_is_served_and_unknown_paths_are_404() {
    let fixture = fixture(ApiAuth::open()).await;
    let (status, headers, body) = get(&fixture.state, "/static/tenantwatch.css").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/css; charset=utf-8");
    assert!(body.contains(".s-critical"));
    let (status, _, _) = get(&fixture.state, "/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = get(&fixture.state, "/api/v1/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn api_tenants_summarise_each_tenant_and_page() {
    let fixture = fixture(ApiAuth::open()).await;
    let page = json(&fixture.state, "/api/v1/tenants").await;
    let names: Vec<&str> = page["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["contoso", "fabrikam", "northwind"]);
    assert!(page.get("next").is_none());
    let contoso = &page["tenants"][0];
    assert_eq!(contoso["status"], "critical");
    assert_eq!(
        contoso["counts"],
        serde_json::json!({"ok": 1, "warning": 0, "critical": 2, "unknown": 0, "pending": 0})
    );
    assert_eq!(contoso["checks"]["smtp_rcpt"]["status"], "critical");
    assert_eq!(contoso["checks"]["smtp_rcpt"]["worst"]["target"], ADMIN);
    assert_eq!(
        contoso["checks"]["smtp_rcpt"]["worst"]["reason"],
        "recipient_not_found"
    );
    assert_eq!(
        contoso["checks"]["smtp_rcpt"]["worst"]["since"],
        Timestamp(T0 + MINUTE).to_string()
    );
    assert_eq!(
        page["tenants"][1]["checks"]["smtp_rcpt"]["status"],
        "pending"
    );
    assert_eq!(page["tenants"][1]["counts"]["pending"], 1);
    assert_eq!(page["tenants"][2]["status"], "pending");

    let first = json(&fixture.state, "/api/v1/tenants?limit=1").await;
    assert_eq!(first["tenants"].as_array().unwrap().len(), 1);
    assert_eq!(first["next"], "contoso");
    let second = json(&fixture.state, "/api/v1/tenants?limit=1&after=contoso").await;
    assert_eq!(second["tenants"][0]["name"], "fabrikam");
    assert_eq!(second["next"], "fabrikam");
}

#[tokio::test]
async fn api_tenant_detail_has_checks_and_alerts() {
    let fixture = fixture(ApiAuth::open()).await;
    let detail = json(&fixture.state, "/api/v1/tenants/contoso").await;
    assert_eq!(detail["tenant"]["name"], "contoso");
    let checks = detail["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 4);
    let smtp = checks
        .iter()
        .find(|c| c["check"] == "smtp_rcpt" && c["target"] == ADMIN)
        .unwrap();
    assert_eq!(smtp["status"], "critical");
    assert_eq!(smtp["reason"], "recipient_not_found");
    assert_eq!(smtp["consecutive"], 3);
    assert_eq!(smtp["since"], Timestamp(T0 + MINUTE).to_string());
    assert_eq!(smtp["last_run"], Timestamp(T0 + 3 * MINUTE).to_string());
    assert_eq!(smtp["configured"], true);
    assert!(smtp["reason_text"].as_str().unwrap().contains("rejected"));
    let old = checks
        .iter()
        .find(|c| c["target"] == "old@contoso.example")
        .unwrap();
    assert_eq!(old["configured"], false);
    assert_eq!(
        detail["alerts"],
        serde_json::json!([{
            "tenant": "contoso", "check": "smtp_rcpt", "target": ADMIN,
            "state": "firing", "severity": "critical",
            "since": Timestamp(T0 + MINUTE).to_string()
        }])
    );
    let (status, _, body) = get(&fixture.state, "/api/v1/tenants/nobody").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"],
        "no tenant named \"nobody\""
    );
}

#[tokio::test]
async fn api_checks_filter_and_page_with_a_cursor() {
    let fixture = fixture(ApiAuth::open()).await;
    let all = json(&fixture.state, "/api/v1/checks").await;
    assert_eq!(all["checks"].as_array().unwrap().len(), 5);
    let critical = json(
        &fixture.state,
        "/api/v1/checks?status=critical&tenant=contoso",
    )
    .await;
    let targets: Vec<(&str, &str)> = critical["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["check"].as_str().unwrap(), c["target"].as_str().unwrap()))
        .collect();
    assert_eq!(
        targets,
        [
            ("identity", ADMIN),
            ("smtp_rcpt", ADMIN),
            ("smtp_rcpt", "old@contoso.example")
        ]
    );
    let dns = json(&fixture.state, "/api/v1/checks?check=dns").await;
    assert_eq!(dns["checks"].as_array().unwrap().len(), 2);

    let mut seen = Vec::new();
    let mut path = "/api/v1/checks?limit=2".to_owned();
    loop {
        let page = json(&fixture.state, &path).await;
        let rows = page["checks"].as_array().unwrap();
        assert!(rows.len() <= 2);
        seen.extend(rows.iter().map(|c| {
            format!(
                "{}/{}/{}",
                c["tenant"].as_str().unwrap(),
                c["check"].as_str().unwrap(),
                c["target"].as_str().unwrap()
            )
        }));
        match page["next"].as_str() {
            Some(next) => {
                path = format!("/api/v1/checks?limit=2&after={}", next.replace('@', "%40"))
            }
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted, "each key once, in key order");
    assert_eq!(seen.len(), 5);

    for bad in [
        "/api/v1/checks?status=bad",
        "/api/v1/checks?check=nope",
        "/api/v1/checks?after=nonsense",
        "/api/v1/checks?limit=-1",
        "/api/v1/checks?tennant=contoso",
    ] {
        let (status, headers, body) = get(&fixture.state, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].is_string());
    }
}

#[tokio::test]
async fn api_observations_page_newest_first_with_evidence() {
    let fixture = fixture(ApiAuth::open()).await;
    let mut path = format!(
        "/api/v1/observations?tenant=contoso&check=smtp_rcpt&target={}&limit=2",
        ADMIN.replace('@', "%40")
    );
    let mut started = Vec::new();
    let mut pages = 0;
    loop {
        let page = json(&fixture.state, &path).await;
        pages += 1;
        for o in page["observations"].as_array().unwrap() {
            assert_eq!(
                (o["tenant"].as_str(), o["target"].as_str()),
                (Some("contoso"), Some(ADMIN))
            );
            assert_eq!(o["evidence"]["kind"], "smtp_rcpt");
            assert_eq!(o["evidence"]["rcpt"][0]["code"], 550);
            assert_eq!(o["elapsed_ms"], 42.0);
            started.push(o["started_at"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => {
                path = format!("/api/v1/observations?tenant=contoso&check=smtp_rcpt&target={}&limit=2&before={next}", ADMIN.replace('@', "%40"));
            }
            None => break,
        }
    }
    assert_eq!(pages, 2);
    assert_eq!(
        started,
        (0..4)
            .rev()
            .map(|m| Timestamp(T0 + m * MINUTE).to_string())
            .collect::<Vec<_>>()
    );
    // The hostile text travels as JSON data, intact.
    let page = json(
        &fixture.state,
        "/api/v1/observations?check=smtp_rcpt&limit=1",
    )
    .await;
    assert_eq!(
        page["observations"][0]["evidence"]["rcpt"][0]["text"],
        HOSTILE
    );

    let changes = json(
        &fixture.state,
        "/api/v1/observations?tenant=contoso&changes_only=true",
    )
    .await;
    let flags: Vec<bool> = changes["observations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["state_change"].as_bool().unwrap())
        .collect();
    assert_eq!(flags, [true; 6]);
    // Pages are capped, not refused.
    let capped = json(&fixture.state, "/api/v1/observations?limit=100000").await;
    assert_eq!(capped["observations"].as_array().unwrap().len(), 11);
    let (status, _, _) = get(&fixture.state, "/api/v1/observations?before=12_x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = get(&fixture.state, "/api/v1/observations?changes_only=maybe").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn api_alerts_list_firing_alerts() {
    let fixture = fixture(ApiAuth::open()).await;
    let alerts = json(&fixture.state, "/api/v1/alerts").await;
    assert_eq!(alerts["alerts"].as_array().unwrap().len(), 1);
    assert_eq!(alerts["alerts"][0]["state"], "firing");
    let none = json(&fixture.state, "/api/v1/alerts?tenant=fabrikam").await;
    assert_eq!(none, serde_json::json!({"alerts": []}));
}

#[tokio::test]
async fn with_read_requires_token_every_read_needs_the_token() {
    let fixture = fixture(ApiAuth::new(Some(&Secret::new(TOKEN)), true)).await;
    let reads = [
        "/",
        "/tenants/contoso",
        "/api/v1/tenants",
        "/api/v1/tenants/contoso",
        "/api/v1/checks",
        "/api/v1/observations",
        "/api/v1/alerts",
        "/metrics",
    ];
    for path in reads {
        let (status, headers, body) = get(&fixture.state, path).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        let challenges: Vec<&str> = headers
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert!(
            challenges.contains(&"Bearer realm=\"tenantwatch\""),
            "{path}: {challenges:?}"
        );
        let browser = !path.starts_with("/api/") && path != "/metrics";
        assert_eq!(
            challenges.iter().any(|c| c.starts_with("Basic")),
            browser,
            "{path}"
        );
        assert!(!body.contains("contoso"), "{path} leaked data: {body}");
        if path.starts_with("/api/") {
            assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].is_string());
        }

        let (status, headers, _) = send(&fixture.state, path, Some("Bearer not-the-token")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(
            headers
                .get_all(header::WWW_AUTHENTICATE)
                .iter()
                .any(|v| v.to_str().unwrap().contains("error=\"invalid_token\"")),
            "{path}"
        );

        let (status, _, body) = send(&fixture.state, path, Some(&format!("Bearer {TOKEN}"))).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert!(!body.contains(TOKEN), "{path} echoed the token");
    }
    // A browser's Basic credentials (any user, the token as password) work for the page.
    let basic = format!("Basic {}", base64("ops:".to_owned() + TOKEN));
    let (status, _, _) = send(&fixture.state, "/", Some(&basic)).await;
    assert_eq!(status, StatusCode::OK);
    // Health stays open for systemd and load balancers.
    let (status, _, _) = get(&fixture.state, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = get(&fixture.state, "/readyz").await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "not ready: nothing set the flags"
    );
}

#[tokio::test]
async fn a_token_with_open_reads_leaves_reads_open() {
    let fixture = fixture(ApiAuth::new(Some(&Secret::new(TOKEN)), false)).await;
    let (status, _, _) = get(&fixture.state, "/api/v1/tenants").await;
    assert_eq!(status, StatusCode::OK);
    // Nothing changes state over HTTP yet: writes are not routed at all.
    let response = router(fixture.state.clone())
        .oneshot(
            Request::post("/api/v1/tenants")
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

fn base64(text: String) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let group = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for index in 0..4 {
            if index <= chunk.len() {
                out.push(char::from(
                    ALPHABET[(group >> (18 - 6 * index) & 63) as usize],
                ));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test]
async fn every_path_in_the_openapi_file_is_served() {
    let spec = include_str!("../../../docs/openapi.yaml");
    // Every path with a GET operation and no parameter but {tenant}; the write endpoints
    // (acks, silences) are exercised in tests/write_api.rs.
    let mut paths: Vec<&str> = Vec::new();
    let mut current = None;
    for line in spec.lines() {
        if let Some(path) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
            current = Some(path);
        } else if line == "    get:" {
            paths.extend(current.filter(|path| !path.contains("{id}")));
        }
    }
    assert_eq!(paths.len(), 6, "{paths:?}");
    let fixture = fixture(ApiAuth::open()).await;
    for path in paths {
        let path = format!("/{}", path.replace("{tenant}", "contoso"));
        let (status, headers, body) = get(&fixture.state, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json", "{path}");
    }
}
