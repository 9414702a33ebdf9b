//! The end-to-end test against a real MTA: Postfix's own replies, not our simulator's.
//!
//! `scripts/test.sh` installs Postfix and starts a private instance on a loopback port
//! (`scripts/postfix-test-instance.sh`), passing its address and directory in
//! `TW_POSTFIX_ADDR` and `TW_POSTFIX_DIR`. The instance relays for postfix-test.example to
//! alice@, bob@ and tempfail@ only; tempfail@ is answered `450 4.2.1`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;
use tw_core::{CheckKind, Direction, Evidence, Reason, Status};
use tw_sim::dns::{DnsSim, SimRecord};
use tw_store::Store;

use crate::support::{eventually, temp_dir, TestDaemon};

const ALICE: &str = "alice@postfix-test.example";
const BOB: &str = "bob@postfix-test.example";
const TEMPFAIL: &str = "tempfail@postfix-test.example";

fn postfix_instance() -> (SocketAddr, PathBuf) {
    let missing = |name: &str| -> ! {
        panic!(
            "{name} is not set: this test needs a real Postfix on loopback. Run the tests with \
             scripts/test.sh, which installs Postfix (Debian package postfix) and starts a private \
             instance with scripts/postfix-test-instance.sh"
        )
    };
    let addr = std::env::var("TW_POSTFIX_ADDR").unwrap_or_else(|_| missing("TW_POSTFIX_ADDR"));
    let dir = std::env::var("TW_POSTFIX_DIR").unwrap_or_else(|_| missing("TW_POSTFIX_DIR"));
    (
        addr.parse().expect("TW_POSTFIX_ADDR is ip:port"),
        PathBuf::from(dir),
    )
}

fn series(name: &str, target: &str) -> String {
    format!("{name}{{check=\"smtp_rcpt\",target=\"{target}\",tenant=\"postfixco\"}}")
}

/// Removes `address` from Postfix's relay recipient table, as deleting a mailbox would.
fn remove_recipient(dir: &std::path::Path, address: &str) {
    let config = dir.join("config");
    let table = config.join("relay_recipients");
    let kept: String = std::fs::read_to_string(&table)
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with(address))
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(&table, kept).unwrap();
    let status = std::process::Command::new("postmap")
        .arg("-c")
        .arg(&config)
        .arg(format!("hash:{}", table.display()))
        .status()
        .expect("postmap runs");
    assert!(status.success(), "postmap failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_postfix_replies_are_classified_and_a_removed_recipient_turns_critical() {
    let (postfix, postfix_dir) = postfix_instance();
    let dir = temp_dir();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let _stop_dns = shutdown.clone().drop_guard();
    let dns = DnsSim::start(shutdown).await.unwrap();
    dns.set(
        "postfix-test.example",
        vec![SimRecord::Mx {
            preference: 0,
            exchange: "mx.postfix-test.example".into(),
        }],
    );
    dns.set(
        "mx.postfix-test.example",
        vec![SimRecord::A(std::net::Ipv4Addr::LOCALHOST)],
    );

    let body = format!(
        "[schedule]\ninterval = \"10s\"\ntimeout = \"4s\"\n\n[smtp]\nhelo_name = \"probe.msp.example\"\nmail_from = \"probe@msp.example\"\nport = {}\n\n[dns]\nnameservers = [\"{}\"]\n\n[checks.tenant]\nenabled = false\n[checks.realm]\nenabled = false\n[checks.domain]\nenabled = false\n\n[[tenants]]\nname = \"postfixco\"\ndomain = \"postfix-test.example\"\nwatch = [\"{ALICE}\", \"{BOB}\", \"{TEMPFAIL}\"]\n[tenants.checks.dns]\nenabled = false\n",
        postfix.port(),
        dns.local_addr()
    );
    let mut daemon = TestDaemon::spawn(dir.path(), &body).await;
    let status = |target: &str| series("tenantwatch_check_status", target);

    eventually(
        Duration::from_secs(15),
        "the first session with Postfix",
        || async {
            let alice = daemon.metric(&status(ALICE)).await?;
            let tempfail = daemon.metric(&status(TEMPFAIL)).await?;
            (alice == 0.0 && tempfail == 3.0).then_some(())
        },
    )
    .await;
    assert_eq!(daemon.metric(&status(BOB)).await, Some(0.0));
    let code = |target: &str| {
        format!("tenantwatch_smtp_rcpt_reply_code{{target=\"{target}\",tenant=\"postfixco\"}}")
    };
    assert_eq!(daemon.metric(&code(ALICE)).await, Some(250.0));
    assert_eq!(daemon.metric(&code(TEMPFAIL)).await, Some(450.0));

    remove_recipient(&postfix_dir, BOB);
    let removed = Instant::now();
    // Postfix's smtpd notices the changed table after its current session, so allow a
    // second interval.
    eventually(Duration::from_secs(25), "bob to turn critical", || async {
        (daemon.metric(&status(BOB)).await == Some(2.0)).then_some(())
    })
    .await;
    assert!(
        removed.elapsed() < Duration::from_secs(21),
        "took {:?}",
        removed.elapsed()
    );
    assert_eq!(
        daemon.metric(&status(ALICE)).await,
        Some(0.0),
        "alice is unaffected"
    );
    assert_eq!(daemon.metric(&code(BOB)).await, Some(550.0));

    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(5)).await.success());

    let store = Store::open(&daemon.db_path).await.unwrap();
    let bob = store
        .observations(Some("postfixco"), Some(CheckKind::SmtpRcpt), Some(BOB), 20)
        .await
        .unwrap();
    let critical = bob
        .iter()
        .find(|o| o.status == Status::Critical)
        .expect("critical observation stored");
    assert_eq!(critical.reason, Reason::RecipientNotFound);
    let Evidence::SmtpRcpt(evidence) = &critical.evidence else {
        panic!("SMTP evidence expected")
    };
    let server_said = |prefix: &str| {
        evidence
            .transcript
            .iter()
            .any(|l| l.direction == Direction::Server && l.line.starts_with(prefix))
    };
    assert!(
        server_said("220 mx.postfix-test.example ESMTP"),
        "{:#?}",
        evidence.transcript
    );
    assert!(server_said(&format!(
        "550 5.1.1 <{BOB}>: Recipient address rejected: User unknown in relay recipient table"
    )));
    let control = evidence
        .rcpt
        .iter()
        .find(|r| r.control)
        .expect("control address asked");
    assert_eq!(
        (control.code, control.enhanced.as_deref()),
        (Some(550), Some("5.1.1"))
    );

    let tempfail = store
        .observations(
            Some("postfixco"),
            Some(CheckKind::SmtpRcpt),
            Some(TEMPFAIL),
            1,
        )
        .await
        .unwrap();
    assert_eq!(tempfail[0].reason, Reason::TemporaryFailure);
    assert!(
        tempfail[0].summary.contains("450 4.2.1"),
        "{}",
        tempfail[0].summary
    );
    store.close().await;
}
