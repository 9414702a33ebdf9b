//! The README's first command: `tenantwatch demo` shows an identity going from ok to critical
//! on /metrics in two independent layers (SMTP and Graph) with the evidence stored, the
//! Entra/Graph/RDAP checks of the less healthy tenant, and its app secret nowhere in the logs
//! or the database.

use std::time::Duration;

use tw_core::{CheckKind, Direction, Evidence, Status};
use tw_store::Store;

use crate::support::{eventually, temp_dir, TestDaemon};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_shows_an_identity_going_from_ok_to_critical_with_its_transcript_stored() {
    let dir = temp_dir();
    let demo_dir = dir.path().join("demo");
    let args = vec![
        "demo".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--dir".into(),
        demo_dir.clone().into_os_string(),
        "--vanish-after".into(),
        "12s".into(),
        "--interval".into(),
        "10s".into(),
    ];
    let mut demo = TestDaemon::start(
        args,
        demo_dir.join("tenantwatch.toml"),
        demo_dir.join("tenantwatch.db"),
    )
    .await;
    let status = |check: &str, target: &str, tenant: &str| {
        format!(
            "tenantwatch_check_status{{check=\"{check}\",target=\"{target}\",tenant=\"{tenant}\"}}"
        )
    };
    let admin = status("smtp_rcpt", "admin@contoso.example", "contoso");
    let admin_identity = status("identity", "admin@contoso.example", "contoso");
    let fabrikam_dns = status("dns", "fabrikam.example", "fabrikam");
    // Every check of contoso is ok; fabrikam shows warnings (0 ok, 1 warning, 2 critical).
    let expected_before = [
        (admin.clone(), 0.0),
        (admin_identity.clone(), 0.0),
        (fabrikam_dns, 0.0),
        (status("tenant", "contoso.example", "contoso"), 0.0),
        (status("realm", "admin@contoso.example", "contoso"), 0.0),
        (status("signin", "contoso", "contoso"), 0.0),
        (status("licence", "contoso", "contoso"), 0.0),
        (status("admins", "contoso", "contoso"), 0.0),
        (status("health", "contoso", "contoso"), 0.0),
        (status("domain", "contoso.example", "contoso"), 0.0),
        (status("licence", "fabrikam", "fabrikam"), 1.0),
        (status("admins", "fabrikam", "fabrikam"), 1.0),
        (status("domain", "fabrikam.example", "fabrikam"), 1.0),
    ];
    eventually(
        Duration::from_secs(12),
        "the demo tenants' first verdicts",
        || async {
            for (series, want) in &expected_before {
                if demo.metric(series).await != Some(*want) {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(25),
        "admin@contoso.example to vanish and turn critical at RCPT and in Graph",
        || async {
            (demo.metric(&admin).await == Some(2.0)
                && demo.metric(&admin_identity).await == Some(2.0))
            .then_some(())
        },
    )
    .await;
    assert!(demo
        .logs()
        .iter()
        .any(|line| line.contains("Demo: the identity was deleted")));
    let (_, body) = demo.get("/metrics").await;
    assert!(
        body.contains("tenantwatch_global_admins{tenant=\"fabrikam\"} 1"),
        "{body}"
    );

    demo.signal("INT");
    assert!(demo.wait_exit(Duration::from_secs(6)).await.success());
    let store = Store::open(&demo.db_path).await.unwrap();
    let history = store
        .observations(
            Some("contoso"),
            Some(CheckKind::SmtpRcpt),
            Some("admin@contoso.example"),
            20,
        )
        .await
        .unwrap();
    let critical = history
        .iter()
        .find(|o| o.status == Status::Critical)
        .expect("critical stored");
    let Evidence::SmtpRcpt(evidence) = &critical.evidence else {
        panic!("SMTP evidence expected")
    };
    assert!(evidence
        .transcript
        .iter()
        .any(|l| l.direction == Direction::Server
            && l.line.starts_with("550 5.4.1 Recipient address rejected")));

    let identity = store
        .observations(
            Some("contoso"),
            Some(CheckKind::Identity),
            Some("admin@contoso.example"),
            20,
        )
        .await
        .unwrap();
    let deleted = identity
        .iter()
        .find(|o| o.status == Status::Critical)
        .expect("identity critical stored");
    assert_eq!(deleted.reason, tw_core::Reason::IdentityDeleted);
    let Evidence::Http(evidence) = &deleted.evidence else {
        panic!("HTTP evidence expected")
    };
    assert!(
        evidence.facts.contains_key("restorable_until"),
        "{evidence:?}"
    );
    assert!(evidence
        .exchanges
        .iter()
        .all(|e| e.client_request_id.is_some()));
    assert!(evidence.exchanges.iter().any(|e| e.request_id.is_some()));
    store.close().await;

    // The app secret the demo generated is in no log line and nowhere in the database.
    let secret = std::fs::read_to_string(demo_dir.join("app-secret")).unwrap();
    assert!(secret.len() > 20);
    assert!(!demo.logs().iter().any(|line| line.contains(&secret)));
    for file in ["tenantwatch.db", "tenantwatch.db-wal"] {
        if let Ok(bytes) = std::fs::read(demo_dir.join(file)) {
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "secret found in {file}");
        }
    }
}
