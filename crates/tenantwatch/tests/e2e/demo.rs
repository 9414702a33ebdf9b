//! The README's first command: `tenantwatch demo` shows an identity going from ok to critical
//! on /metrics with its SMTP transcript stored.

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
    let admin = "tenantwatch_check_status{check=\"smtp_rcpt\",target=\"admin@contoso.example\",tenant=\"contoso\"}";
    let fabrikam_dns =
        "tenantwatch_check_status{check=\"dns\",target=\"fabrikam.example\",tenant=\"fabrikam\"}";

    eventually(
        Duration::from_secs(12),
        "the demo tenants to be ok",
        || async {
            (demo.metric(admin).await == Some(0.0) && demo.metric(fabrikam_dns).await == Some(0.0))
                .then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(25),
        "admin@contoso.example to vanish and turn critical",
        || async { (demo.metric(admin).await == Some(2.0)).then_some(()) },
    )
    .await;
    assert!(demo
        .logs()
        .iter()
        .any(|line| line.contains("Demo: the identity vanished")));

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
    store.close().await;
}
